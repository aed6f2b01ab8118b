//! Upstream: what happens to messages raw clients send (shown on the console, then
//! none | echo | publish:CHANNEL | webhook:URL | exec:COMMAND). Never dropped silently.

pub mod exec;

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use base64::Engine;
use serde::Deserialize;

pub use crate::config::Spec;
use crate::console::{Console, Escaped};
use crate::hub::{Client, ClientId, Hub, Kind, Payload};

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
    exec: Option<exec::Exec>,
}

impl Upstream {
    /// A handler for `spec`.
    pub fn new(spec: Spec, hub: Hub, console: Console) -> Self {
        Self::with_exec_limit(spec, hub, console, 0)
    }

    /// A handler for `spec`; `exec:` runs at most `max_exec` processes at once.
    pub fn with_exec_limit(spec: Spec, hub: Hub, console: Console, max_exec: usize) -> Self {
        let exec = match &spec {
            Spec::Exec(words) => Some(exec::Exec::new(words.clone(), max_exec)),
            _ => None,
        };
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .expect("HTTP client builds");
        Upstream {
            spec,
            hub,
            console,
            http,
            exec,
        }
    }

    /// The `exec:` handler, when that is the upstream.
    pub fn exec(&self) -> Option<&exec::Exec> {
        self.exec.as_ref()
    }

    /// The console the upstream shows client messages on.
    pub fn console(&self) -> &Console {
        &self.console
    }

    /// True when messages go straight back to their sender (handled by the session,
    /// which owns the socket).
    pub fn echoes(&self) -> bool {
        self.spec == Spec::Echo
    }

    /// True when each message makes work for others (a publish, a webhook call), so it
    /// is charged to the sender's command budget.
    pub fn costs_budget(&self) -> bool {
        matches!(
            self.spec,
            Spec::Publish(_) | Spec::Webhook(_) | Spec::Exec(_)
        )
    }

    /// Shows a client's message on the console and counts it.
    pub fn show(&self, client: &Client, payload: &Payload) {
        self.hub.stats().upstream_messages.fetch_add(1, Relaxed);
        self.console.upstream(client, payload);
    }

    /// Shows a client's message on the console and hands it to the handler; a reply for
    /// the client (webhook answers) is returned. (`exec:` messages go to the client's
    /// process, which the session holds.)
    pub async fn handle(&self, from: &Client, payload: &Payload) -> Option<Payload> {
        let stats = &self.hub.stats();
        self.show(from, payload);
        let client = from.id;
        match &self.spec {
            Spec::None | Spec::Echo | Spec::Exec(_) => None,
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
