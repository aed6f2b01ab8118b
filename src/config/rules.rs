//! The shapes of option values: origin rules and extra raw-mode paths (checked by
//! `Config::validate`), and the compression switch.

use serde::{Deserialize, Serialize};

/// True when `rule` is an `allowed_origins` entry: `*`, `null`, or
/// `SCHEME://HOST[:PORT]` (no path), where HOST may start with `*.` and PORT may be `*`.
pub fn valid_origin_rule(rule: &str) -> bool {
    let rule = rule.trim().trim_end_matches('/');
    if rule == "*" || rule.eq_ignore_ascii_case("null") {
        return true;
    }
    let Some((scheme, rest)) = rule.split_once("://") else {
        return false;
    };
    let host = match rest.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(']') || rest.starts_with('[') => {
            if port != "*" && port.parse::<u16>().is_err() {
                return false;
            }
            host
        }
        _ => rest,
    };
    let host = host.strip_prefix("*.").unwrap_or(host);
    !scheme.is_empty()
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        && !host.is_empty()
        && !host.contains(['/', '*', ' ', '?', '#', '@'])
}

/// Why `path` cannot be an extra raw-mode path (`ws_paths`): it must start with `/`,
/// hold only URL path characters, and not be a path the server already serves.
pub fn valid_ws_path(path: &str) -> Result<(), &'static str> {
    const TAKEN: [&str; 8] = [
        "/",
        "/ws",
        "/sse",
        "/stream",
        "/healthz",
        "/metrics",
        "/wspush.js",
        "/wspush.mjs",
    ];
    if !path.starts_with('/') || path.len() > 256 {
        return Err("must start with / (at most 256 characters)");
    }
    if !path
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"/-._~!$&'()+,;=:@".contains(&b))
    {
        return Err("only letters, digits and -._~!$&'()+,;=:@/ may appear in it");
    }
    if TAKEN.contains(&path) || path.starts_with("/api/") || path.starts_with("/app/") {
        return Err("the server serves that path already");
    }
    Ok(())
}

/// Whether WebSocket connections may negotiate permessage-deflate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// No compression (no extension is negotiated).
    #[default]
    Off,
    /// Accept a client's permessage-deflate offer.
    On,
}
