//! `upstream`: what to do with messages raw clients send (the option's value; the
//! handler itself is `crate::upstream::Upstream`).

use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The configured upstream handler.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Spec {
    /// Only shown on the console and counted.
    None,
    /// Sent back to the client that sent it.
    Echo,
    /// Republished to a channel.
    Publish(String),
    /// POSTed to a backend URL as `{"client":..,"data":..}`; a JSON answer with `reply`
    /// is sent back to the client.
    Webhook(String),
    /// Runs a program per raw client (`exec:COMMAND ARGS`, split like a shell would,
    /// without a shell): its stdin gets the client's messages, one per line; each line
    /// it prints is sent to the client. The words of the command line.
    Exec(Vec<String>),
}

impl FromStr for Spec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "none" => Ok(Spec::None),
            "echo" => Ok(Spec::Echo),
            _ => {
                if let Some(ch) = s.strip_prefix("publish:") {
                    if ch.is_empty() {
                        return Err("publish: needs a channel name".into());
                    }
                    return Ok(Spec::Publish(ch.to_string()));
                }
                if let Some(url) = s.strip_prefix("webhook:") {
                    if !(url.starts_with("http://") || url.starts_with("https://")) {
                        return Err("webhook: needs an http:// or https:// URL".into());
                    }
                    return Ok(Spec::Webhook(url.to_string()));
                }
                if let Some(cmd) = s.strip_prefix("exec:") {
                    return match shlex::split(cmd) {
                        Some(words) if !words.is_empty() => Ok(Spec::Exec(words)),
                        _ => Err("exec: needs a command (quoted like a shell would)".into()),
                    };
                }
                Err(format!(
                    "unknown upstream '{s}' (none | echo | publish:CHANNEL | webhook:URL | \
                     exec:COMMAND)"
                ))
            }
        }
    }
}

impl TryFrom<String> for Spec {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<Spec> for String {
    fn from(spec: Spec) -> String {
        match spec {
            Spec::None => "none".into(),
            Spec::Echo => "echo".into(),
            Spec::Publish(c) => format!("publish:{c}"),
            Spec::Webhook(u) => format!("webhook:{u}"),
            Spec::Exec(words) => format!(
                "exec:{}",
                shlex::try_join(words.iter().map(String::as_str))
                    .unwrap_or_else(|_| words.join(" "))
            ),
        }
    }
}
