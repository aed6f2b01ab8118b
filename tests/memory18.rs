//! Issue #18 item 4 (memory per connection): the allocator options the binary runs with.
//! mimalloc prints its options as the process starts when `MIMALLOC_VERBOSE=1`; by then
//! wspush's defaults must be in place (set before `main`, before the first arena), and
//! whatever the environment says must win. The struct and task sizes are bounded in
//! `src/ws/sizes.rs`; the memory itself is measured by `bench/run.sh` case traffic10k.

mod support;

use tokio::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_wspush");

/// mimalloc's printed options of `wspush --version` run with `env` (plus
/// `MIMALLOC_VERBOSE=1`, and no other `MIMALLOC_*` from the test's environment).
async fn options(env: &[(&str, &str)]) -> String {
    let mut cmd = Command::new(BIN);
    cmd.arg("--version").kill_on_drop(true);
    for (key, _) in std::env::vars() {
        if key.starts_with("MIMALLOC_") {
            cmd.env_remove(key);
        }
    }
    cmd.env("MIMALLOC_VERBOSE", "1").envs(env.iter().copied());
    let out = support::within("wspush --version", cmd.output())
        .await
        .expect("wspush runs");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

// issue #18 item 4: arena memory committed as used (no huge pages behind an eagerly
// committed arena); mimalloc's own purge delay.
#[tokio::test]
async fn allocator_runs_with_lazy_commit() {
    let printed = options(&[]).await;
    assert!(
        printed.contains("option 'arena_eager_commit': 0 \n"),
        "{printed}"
    );
    assert!(
        printed.contains("option 'purge_delay': 1000 \n"),
        "{printed}"
    );
}

// issue #18 item 4: MIMALLOC_* set by the user override wspush's defaults.
#[tokio::test]
async fn allocator_options_from_the_environment_win() {
    let printed = options(&[
        ("MIMALLOC_ARENA_EAGER_COMMIT", "1"),
        ("MIMALLOC_PURGE_DELAY", "0"),
    ])
    .await;
    assert!(
        printed.contains("option 'arena_eager_commit': 1 \n"),
        "{printed}"
    );
    assert!(printed.contains("option 'purge_delay': 0 \n"), "{printed}");
}
