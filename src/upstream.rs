//! Upstream: what happens to messages raw clients send (shown on the console, then
//! none | echo | publish:CHANNEL | webhook:URL). Never dropped silently.

use std::str::FromStr;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use base64::Engine;
use serde::Deserialize;

use crate::console::{Console, Escaped};
use crate::hub::{ClientId, Hub, Kind, Payload};

/// The configured upstream handler.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, Deserialize)]
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
                Err(format!(
                    "unknown upstream '{s}' (none | echo | publish:CHANNEL | webhook:URL)"
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
        }
    }
}

/// Answer a webhook backend may give.
#[derive(Deserialize)]
struct WebhookReply {
    reply: Option<serde_json::Value>,
}

/// The upstream handler, shared by every raw session.
pub struct Upstream {
    spec: Spec,
    hub: Hub,
    console: Console,
    http: reqwest::Client,
}

impl Upstream {
    /// A handler for `spec`.
    pub fn new(spec: Spec, hub: Hub, console: Console) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .expect("HTTP client builds");
        Upstream {
            spec,
            hub,
            console,
            http,
        }
    }

    /// True when messages go straight back to their sender (handled by the session,
    /// which owns the socket).
    pub fn echoes(&self) -> bool {
        self.spec == Spec::Echo
    }

    /// True when each message makes work for others (a publish, a webhook call), so it
    /// is charged to the sender's command budget.
    pub fn costs_budget(&self) -> bool {
        matches!(self.spec, Spec::Publish(_) | Spec::Webhook(_))
    }

    /// Shows a client's message on the console and hands it to the handler; a reply for
    /// the client (webhook answers) is returned.
    pub async fn handle(&self, client: ClientId, payload: &Payload) -> Option<Payload> {
        let stats = &self.hub.stats();
        stats.upstream_messages.fetch_add(1, Relaxed);
        self.console.upstream(client, payload);
        match &self.spec {
            Spec::None | Spec::Echo => None,
            Spec::Publish(channel) => {
                if let Err(e) = self.hub.publish(channel, payload.clone()).await {
                    stats.upstream_failures.fetch_add(1, Relaxed);
                    tracing::warn!(%client, %channel, error = %e, "upstream publish failed");
                }
                None
            }
            Spec::Webhook(url) => match self.webhook(url, client, payload).await {
                Ok(reply) => reply,
                Err(e) => {
                    stats.upstream_failures.fetch_add(1, Relaxed);
                    // The error may quote the backend's answer: escaped and cut.
                    let error = Escaped(&e);
                    tracing::warn!(%client, %url, %error, "upstream webhook failed");
                    None
                }
            },
        }
    }

    async fn webhook(
        &self,
        url: &str,
        client: ClientId,
        payload: &Payload,
    ) -> Result<Option<Payload>, String> {
        let mut body =
            serde_json::json!({ "client": client.to_string(), "data": payload.to_json() });
        if payload.kind == Kind::Binary {
            body["encoding"] = "base64".into();
        }
        let resp = self
            .http
            .post(url)
            .json(&body)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = resp.status();
        if !status.is_success() {
            return Err(format!("backend answered {status}"));
        }
        let bytes = resp.bytes().await.map_err(|e| e.to_string())?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(None);
        }
        let answer: WebhookReply =
            serde_json::from_slice(&bytes).map_err(|e| format!("bad JSON answer: {e}"))?;
        Ok(answer.reply.as_ref().map(Payload::from_json))
    }
}

/// Decodes base64 text (for binary data in JSON bodies).
pub fn decode_base64(s: &str) -> Result<Vec<u8>, base64::DecodeError> {
    base64::engine::general_purpose::STANDARD.decode(s)
}
