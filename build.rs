//! Build script: records the git commit for `wspush --version` as `WSPUSH_GIT_COMMIT`.
//!
//! From a git checkout (a clone, `cargo install --path .` or `--git URL`) it is
//! `git rev-parse --short HEAD`; from a packaged crate it is the commit cargo wrote into
//! `.cargo_vcs_info.json`, cut to 7 digits; otherwise (a tarball, no git) it is "unknown".
//! A non-empty `WSPUSH_GIT_COMMIT` in the build environment wins (the Dockerfile's build
//! argument: its build context has no `.git`).

use std::path::Path;
use std::process::Command;

fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".into());
    let dir = Path::new(&dir);
    println!("cargo:rerun-if-env-changed=WSPUSH_GIT_COMMIT");
    let given = std::env::var("WSPUSH_GIT_COMMIT")
        .ok()
        .filter(|c| !c.trim().is_empty());
    let commit = given
        .map(|c| c.trim().to_string())
        .or_else(|| from_git(dir))
        .or_else(|| from_vcs_info(dir))
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=WSPUSH_GIT_COMMIT={commit}");
    println!("cargo:rerun-if-changed=build.rs");
}

/// `git` stdout for `args` run in `dir`, trimmed; None on any failure.
fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .ok()?;
    let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && !s.is_empty()).then_some(s)
}

/// The short HEAD commit when `dir` is the top of a git work tree (not a crate unpacked
/// somewhere inside an unrelated repository), with rebuild triggers on HEAD and its branch.
fn from_git(dir: &Path) -> Option<String> {
    let top = git(dir, &["rev-parse", "--show-toplevel"])?;
    if Path::new(&top).canonicalize().ok()? != dir.canonicalize().ok()? {
        return None;
    }
    let commit = git(dir, &["rev-parse", "--short", "HEAD"])?;
    // logs/HEAD (the reflog) grows with every commit, checkout and reset, even when the
    // branch's own ref is packed.
    for path in ["HEAD", "logs/HEAD", "packed-refs"] {
        rerun_if_changed(dir, path);
    }
    if let Some(branch) = git(dir, &["symbolic-ref", "-q", "HEAD"]) {
        rerun_if_changed(dir, &branch);
    }
    Some(commit)
}

fn rerun_if_changed(dir: &Path, git_path: &str) {
    if let Some(p) = git(
        dir,
        &[
            "rev-parse",
            "--path-format=absolute",
            "--git-path",
            git_path,
        ],
    ) {
        if Path::new(&p).exists() {
            println!("cargo:rerun-if-changed={p}");
        }
    }
}

/// The commit in `.cargo_vcs_info.json` (`{"git": {"sha1": "..."}}`), which `cargo package`
/// writes into every crate published from a git checkout.
fn from_vcs_info(dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(dir.join(".cargo_vcs_info.json")).ok()?;
    let rest = &text[text.find("\"sha1\"")? + 6..];
    let rest = &rest[rest.find('"')? + 1..];
    let sha = &rest[..rest.find('"')?];
    (sha.len() >= 7 && sha.bytes().all(|b| b.is_ascii_hexdigit())).then(|| sha[..7].to_string())
}
