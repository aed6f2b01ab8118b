//! The config loader: TOML text merged the way `--config FILE` is (`Config::merge_file`
//! under the defaults of an empty command line), then `validate()` and `to_toml()`.
//!
//! Input: the file's text. Options that name files (`tls_cert`, `tls_key`,
//! `jwt_public_key`) are cleared before `validate()`, which would read them: the fuzzer
//! must not read arbitrary files (`/dev/zero`).
//!
//! Invariants: nothing panics; a configuration that validates serializes (as
//! `--print-config` does, less the redaction) to TOML that loads back and validates.
#![no_main]

use clap::{Args, Command, FromArgMatches};
use libfuzzer_sys::fuzz_target;
use wspush::config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let matches = Config::augment_args(Command::new("wspush"))
        .try_get_matches_from(["wspush"])
        .expect("an empty command line parses");
    let flags = Config::from_arg_matches(&matches).expect("defaults");
    let Ok(mut config) = flags.merge_file("fuzz.toml".into(), text, &matches) else {
        return;
    };
    config.tls_cert = None;
    config.tls_key = None;
    config.jwt_public_key = None;
    if config.validate().is_err() {
        return;
    }
    let _ = config.command_size_limit();
    let _ = config.to_toml(); // --print-config (secrets redacted)
    let shown = toml::to_string(&config).expect("a loaded config serializes");
    let again: Config = toml::from_str(&shown)
        .unwrap_or_else(|e| panic!("a serialized config does not load: {e}\n{shown}"));
    again
        .validate()
        .expect("a serialized valid config validates");
});
