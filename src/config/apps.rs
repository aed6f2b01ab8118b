//! `[[apps]]` and `--pusher-app ID:KEY:SECRET`: the Pusher apps' settings, their limits
//! and webhooks, and the checks of their fields. The apps at run time (their channels and
//! connections) are `crate::pusher::Apps`.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use super::{ConfigError, Millis, Secs};

fn yes() -> bool {
    true
}

fn default_auth_timeout() -> Secs {
    Secs::from_units(30)
}

fn default_webhook_delay_ms() -> Millis {
    Millis::from_units(3000)
}

/// One Pusher app (`[[apps]]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct App {
    /// App id, as the server SDKs send it in `/apps/{id}` (numeric suits every SDK).
    pub id: String,
    /// App key, as clients send it in `/app/{key}` and requests in `auth_key`.
    pub key: String,
    /// App secret: signs channel auth, user sign-in, API requests and webhooks.
    pub secret: String,
    /// A disabled app refuses connections (4003) and API calls.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Allow `client-*` events on private and presence channels.
    #[serde(default)]
    pub client_events: bool,
    /// Close connections that have not signed in (`pusher:signin`) within
    /// `user_authentication_timeout` (4009).
    #[serde(default)]
    pub user_authentication: bool,
    /// How long a connection has to sign in when `user_authentication` is on (`30s`,
    /// `1500ms`; a plain number is seconds).
    #[serde(default = "default_auth_timeout")]
    pub user_authentication_timeout: Secs,
    /// Most connections of this app at once (0 = no app limit); over it: 4004.
    #[serde(default)]
    pub max_connections: usize,
    /// Origins allowed to connect from browsers (empty = any).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_origins: Vec<String>,
    /// Where to send webhooks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub webhooks: Vec<Webhook>,
    /// Limits (Pusher's defaults).
    #[serde(default)]
    pub limits: AppLimits,
    /// Send `pusher_internal:subscription_count` events (Pusher's "subscription
    /// counting") to every channel's subscribers when its cluster-wide count changes.
    #[serde(default)]
    pub subscription_count: bool,
    /// How long `channel_vacated` and `member_removed` webhooks wait before they are
    /// sent (`3s`; a plain number is milliseconds); a re-join within the wait (on any
    /// node) cancels the pair, so a page reload sends neither the leave nor the join
    /// again (Pusher waits a few seconds too).
    #[serde(default = "default_webhook_delay_ms")]
    pub webhook_delay_ms: Millis,
}

/// Per-app limits; the defaults are Pusher's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AppLimits {
    /// Channels one `POST /events` may name.
    pub max_event_channels: usize,
    /// Events one `POST /batch_events` may hold.
    pub max_batch_size: usize,
    /// Longest channel name.
    pub max_channel_name_length: usize,
    /// Longest event name.
    pub max_event_name_length: usize,
    /// Largest event `data`, in bytes (API and client events).
    pub max_payload_size: usize,
    /// Most members of one presence channel.
    pub max_presence_members: usize,
    /// Largest presence `user_info`, in bytes.
    pub max_presence_user_info_size: usize,
    /// Client events one connection may send per second (over it: `pusher:error` 4301).
    pub client_events_per_second: u32,
}

impl Default for AppLimits {
    fn default() -> Self {
        AppLimits {
            max_event_channels: 100,
            max_batch_size: 10,
            max_channel_name_length: 164,
            max_event_name_length: 200,
            max_payload_size: 10 * 1024,
            max_presence_members: 100,
            max_presence_user_info_size: 1024,
            client_events_per_second: 10,
        }
    }
}

/// The webhook events an app can subscribe to.
pub const WEBHOOK_EVENTS: [&str; 6] = [
    "channel_occupied",
    "channel_vacated",
    "member_added",
    "member_removed",
    "client_event",
    "cache_miss",
];

/// A webhook endpoint of an app.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Webhook {
    /// `http://` or `https://` URL receiving `POST`s.
    pub url: String,
    /// Which events to send (empty = all of [`WEBHOOK_EVENTS`]).
    #[serde(default, alias = "event_types")]
    pub events: Vec<String>,
    /// Collect events this long into one request (`500ms`, `2s`; a plain number is
    /// milliseconds; 0 = one request per event, as soon as possible).
    #[serde(default)]
    pub batch_ms: Millis,
}

impl Webhook {
    /// True when the webhook wants events named `name`.
    pub fn wants(&self, name: &str) -> bool {
        self.events.is_empty() || self.events.iter().any(|e| e == name)
    }
}

fn invalid(reason: String) -> ConfigError {
    ConfigError::Invalid {
        key: "apps",
        reason,
    }
}

/// Parses `--pusher-app ID:KEY:SECRET`.
pub fn parse_flag(spec: &str) -> Result<App, ConfigError> {
    let mut parts = spec.splitn(3, ':');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(id), Some(key), Some(secret)) => Ok(App {
            id: id.into(),
            key: key.into(),
            secret: secret.into(),
            enabled: true,
            client_events: true,
            user_authentication: false,
            user_authentication_timeout: default_auth_timeout(),
            max_connections: 0,
            allowed_origins: Vec::new(),
            webhooks: Vec::new(),
            limits: AppLimits::default(),
            subscription_count: false,
            webhook_delay_ms: default_webhook_delay_ms(),
        }),
        _ => Err(ConfigError::Invalid {
            key: "pusher-app",
            reason: format!("{spec:?} is not ID:KEY:SECRET"),
        }),
    }
}

/// Checks the apps' fields: ids and keys (1-100 of `A-Za-z0-9-_`, each once), secrets,
/// webhook URLs and events, limits above 0.
pub fn validate(all: &[App]) -> Result<(), ConfigError> {
    let (mut ids, mut keys) = (HashSet::new(), HashSet::new());
    for app in all {
        let token = |s: &str| {
            !s.is_empty()
                && s.len() <= 100
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        if !token(&app.id) {
            return Err(invalid(format!(
                "app id {:?}: use 1-100 letters, digits, '-' or '_'",
                app.id
            )));
        }
        if !token(&app.key) {
            return Err(invalid(format!(
                "app key {:?}: use 1-100 letters, digits, '-' or '_'",
                app.key
            )));
        }
        if app.secret.is_empty() {
            return Err(invalid(format!("app {}: the secret is empty", app.id)));
        }
        if !ids.insert(app.id.as_str()) {
            return Err(invalid(format!("app id {:?} is configured twice", app.id)));
        }
        if !keys.insert(app.key.as_str()) {
            return Err(invalid(format!(
                "app key {:?} is configured twice",
                app.key
            )));
        }
        for hook in &app.webhooks {
            if !(hook.url.starts_with("http://") || hook.url.starts_with("https://")) {
                return Err(invalid(format!(
                    "app {}: webhook url {:?} is not http(s)",
                    app.id, hook.url
                )));
            }
            if let Some(bad) = hook
                .events
                .iter()
                .find(|e| !WEBHOOK_EVENTS.contains(&e.as_str()))
            {
                return Err(invalid(format!(
                    "app {}: unknown webhook event {bad:?} (known: {})",
                    app.id,
                    WEBHOOK_EVENTS.join(", ")
                )));
            }
        }
        let l = &app.limits;
        if l.max_event_channels == 0
            || l.max_batch_size == 0
            || l.max_channel_name_length == 0
            || l.max_event_name_length == 0
            || l.max_payload_size == 0
            || l.client_events_per_second == 0
        {
            return Err(invalid(format!("app {}: limits must be above 0", app.id)));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    #[test]
    fn flags_in_order_and_checked() {
        let mut config = Config {
            pusher_app: vec!["1:k1:s1".into(), "2:k2:s:with:colons".into()],
            ..Config::default()
        };
        let apps = config.pusher_apps().unwrap();
        assert_eq!(apps[0].id, "1");
        assert_eq!(apps[1].secret, "s:with:colons");
        config.pusher_app.push("3:k1:s".into());
        assert!(config.pusher_apps().is_err());
        assert!(config.validate().is_err());
        config.pusher_app = vec!["nope".into()];
        assert!(config.pusher_apps().is_err());
    }
}
