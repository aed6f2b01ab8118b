//! Upstream: what happens to messages raw clients send (shown on the console, then
//! none | echo | publish:CHANNEL | webhook:URL). Never dropped silently.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use base64::Engine;
use serde::Deserialize;

pub use crate::config::Spec;
use crate::console::{Console, Escaped};
use crate::hub::{ClientId, Hub, Kind, Payload};

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
