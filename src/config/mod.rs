//! `Config`: every `serve` option, as plain data, and the checks of its fields. Sources,
//! highest first: command-line flag > `WSPUSH_*` environment variable > `--config` TOML
//! file > default. `crate::setup::build` validates it and builds, once, what the server
//! runs with (token verifier, Pusher apps, TLS acceptor, proxies, namespaces); this
//! module imports none of those, only plain data modules.

pub mod apps;
pub mod duration;
pub mod reference;
mod rules;
mod upstream;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{ArgMatches, Args};
use serde::{Deserialize, Serialize};

use crate::broker::{RedisMode, RedisOptions};
use crate::namespace::Namespace;
pub use duration::{Millis, Secs};
pub use rules::{valid_origin_rule, valid_ws_path, Compression};
pub use upstream::Spec;

/// Why a configuration is rejected (exit code 64).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file cannot be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The config file is not valid TOML, has an unknown key, or a value of the wrong type.
    #[error("config file {path}: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// The parser's message (names the key, line and column).
        message: String,
    },
    /// A key holds a value out of its range.
    #[error("invalid value for {key}: {reason}")]
    Invalid {
        /// The option's name.
        key: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

/// Options of `wspush serve` (each also a `WSPUSH_*` environment variable).
#[derive(Debug, Clone, Args, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// TOML file with options (same names as the flags, with underscores) and
    /// `[[namespaces]]`.
    #[arg(long, env = "WSPUSH_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Print the effective configuration as TOML and exit.
    #[arg(long)]
    #[serde(skip)]
    pub print_config: bool,
    /// Address to listen on.
    #[arg(long, env = "WSPUSH_LISTEN", default_value = "127.0.0.1:8083")]
    pub listen: SocketAddr,
    /// API key required by the HTTP API (`Authorization: apikey KEY`); without one the
    /// API answers only local requests: a loopback client, a loopback Host (or one of
    /// `server_names`), no forwarding headers from an untrusted peer.
    #[arg(long, env = "WSPUSH_API_KEY")]
    pub api_key: Option<String>,
    /// What to do with messages raw clients send: none | echo | publish:CHANNEL |
    /// webhook:URL | exec:COMMAND (one process per raw client: its stdin gets the
    /// client's messages, one per line; each line it prints goes back to that client).
    #[arg(long, env = "WSPUSH_UPSTREAM", default_value = "none")]
    pub upstream: Spec,
    /// Largest WebSocket message accepted, in bytes (larger: close 1009).
    #[arg(long, env = "WSPUSH_MAX_MESSAGE_SIZE", default_value_t = 1 << 20)]
    pub max_message_size: usize,
    /// Largest HTTP API request body, in bytes (larger: 413).
    #[arg(long, env = "WSPUSH_MAX_BODY_SIZE", default_value_t = 2 << 20)]
    pub max_body_size: usize,
    /// Client silence before the server pings it (`25s`, `1m`; a plain number is
    /// seconds; counted in whole seconds, rounded up).
    #[arg(long, env = "WSPUSH_PING_INTERVAL", default_value_t = Secs::from_units(25))]
    pub ping_interval: Secs,
    /// How long a pinged client has to answer before it is dropped (`20s`; a plain
    /// number is seconds; counted in whole seconds, rounded up).
    #[arg(long, env = "WSPUSH_PING_TIMEOUT", default_value_t = Secs::from_units(20))]
    pub ping_timeout: Secs,
    /// Most frames queued for one client before it is disconnected as too slow (1013).
    #[arg(long, env = "WSPUSH_QUEUE_MAX_FRAMES", default_value_t = 8192)]
    pub queue_max_frames: u32,
    /// Most bytes queued for one client before it is disconnected as too slow (1013).
    #[arg(long, env = "WSPUSH_QUEUE_MAX_BYTES", default_value_t = 8 << 20)]
    pub queue_max_bytes: u32,
    /// How long a new connection has to send its HTTP request head (`10s`, `500ms`; a
    /// plain number is seconds).
    #[arg(long, env = "WSPUSH_HANDSHAKE_TIMEOUT", default_value_t = Secs::from_units(10))]
    pub handshake_timeout: Secs,
    /// Most WebSocket connections at once (over it: 503).
    #[arg(long, env = "WSPUSH_MAX_CONNECTIONS", default_value_t = 200_000)]
    pub max_connections: usize,
    /// How long to wait for clients to take their close frames at shutdown (`5s`; a
    /// plain number is seconds).
    #[arg(long, env = "WSPUSH_SHUTDOWN_GRACE", default_value_t = Secs::from_units(5))]
    pub shutdown_grace: Secs,
    /// Do not read operator commands from stdin. Upstream messages are still printed on
    /// stdout (`--quiet` stops them); stdout is safe whatever the flags: at most 1 MiB
    /// of lines waits for a slow stdout (then lines are skipped and counted), each line
    /// is cut at 1 KiB and control characters are escaped (one message, one line).
    #[arg(long, env = "WSPUSH_NO_CONSOLE")]
    pub no_console: bool,
    /// Do not print upstream messages (`[client] text`, escaped and cut at 1 KiB) on
    /// stdout.
    #[arg(long, env = "WSPUSH_QUIET")]
    pub quiet: bool,
    /// Largest `data` a JSON-mode client may publish, in bytes (larger: error `too_large`).
    #[arg(long, env = "WSPUSH_MAX_PUBLISH_SIZE", default_value_t = 64 * 1024)]
    pub max_publish_size: usize,
    /// JSON-mode protocol errors tolerated per connection before it is closed (1008).
    #[arg(long, env = "WSPUSH_MAX_PROTOCOL_ERRORS", default_value_t = 10)]
    pub max_protocol_errors: u32,
    /// HS256 shared secret for client tokens (JWT).
    #[arg(long, env = "WSPUSH_JWT_SECRET")]
    pub jwt_secret: Option<String>,
    /// PEM public key file for RS256/ES256 client tokens.
    #[arg(long, env = "WSPUSH_JWT_PUBLIC_KEY")]
    pub jwt_public_key: Option<PathBuf>,
    /// Algorithm of `jwt_public_key`: RS256 or ES256.
    #[arg(long, env = "WSPUSH_JWT_ALGORITHM", default_value = "RS256")]
    pub jwt_algorithm: String,
    /// Origins allowed to open WebSockets from browsers (comma-separated, e.g.
    /// `https://app.example.com`; `*` = any; `null` = pages opened from a file;
    /// `http://localhost:*` = any port, `https://*.example.com` = any subdomain). Empty:
    /// same origin as the Host header only. Requests without an Origin header
    /// (non-browser clients) are always allowed.
    #[arg(long, env = "WSPUSH_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,
    /// Most WebSocket connections from one IP address, IPv6 counted per /64 (0 = no
    /// limit; behind a proxy list it in `trusted_proxies`, or every client counts as it).
    #[arg(long, env = "WSPUSH_MAX_CONNECTIONS_PER_IP", default_value_t = 0)]
    pub max_connections_per_ip: usize,
    /// Publishes per second one JSON-mode client may make (token bucket refill rate).
    #[arg(long, env = "WSPUSH_PUBLISH_RATE", default_value_t = 50.0)]
    pub publish_rate: f64,
    /// Burst size of the per-client publish rate limit.
    #[arg(long, env = "WSPUSH_PUBLISH_BURST", default_value_t = 100)]
    pub publish_burst: u32,
    /// PEM certificate chain: serve https:// and wss:// (needs `tls_key`).
    #[arg(long, env = "WSPUSH_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    #[arg(long, env = "WSPUSH_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// `memory` (one node) or `redis://HOST:PORT[/DB]` — several comma-separated Redis URLs
    /// shard channels across them (list them in the same order on every node).
    #[arg(long, env = "WSPUSH_BROKER", default_value = "memory")]
    pub broker: String,
    /// A Pusher app `ID:KEY:SECRET` (repeatable; the first app given is the default app,
    /// whose channels are the native ones). More settings: `[[apps]]` in the config file.
    #[arg(long = "pusher-app", env = "WSPUSH_PUSHER_APP", value_delimiter = ' ')]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pusher_app: Vec<String>,
    /// Pusher apps (config file only: `[[apps]]`); see `pusher_app`.
    #[arg(skip)]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub apps: Vec<apps::App>,
    /// Fan-out write coalescing window (`20ms`; a plain number is milliseconds): while
    /// its flusher is busy, a client written to a moment ago waits a quarter of it (up to
    /// three quarters when the flusher would need several cores to write every message
    /// apart) so one write carries several messages; with the core idle, or for a client
    /// whose messages come further apart, every message is written at once (0 = off).
    #[arg(long, env = "WSPUSH_WRITE_COALESCE_MS", default_value_t = Millis::from_units(20))]
    pub write_coalesce_ms: Millis,
    /// Most channels one connection may be subscribed to (handshake `?channels=` and
    /// every subscribe; over it: 400 on the handshake, error `too_many_channels` or
    /// `pusher:subscription_error` after). 0 = no limit.
    #[arg(
        long,
        env = "WSPUSH_MAX_CHANNELS_PER_CONNECTION",
        default_value_t = 128
    )]
    pub max_channels_per_connection: usize,
    /// Commands per second one JSON-mode or Pusher connection may send (every command
    /// counts; presence joins and leaves count 10). Over it: error `rate_limited` (JSON;
    /// repeated, close 1008) or `pusher:error` 4301.
    #[arg(long, env = "WSPUSH_COMMAND_RATE", default_value_t = 100.0)]
    pub command_rate: f64,
    /// Burst size of the per-connection command budget.
    #[arg(long, env = "WSPUSH_COMMAND_BURST", default_value_t = 200)]
    pub command_burst: u32,
    /// Per-namespace channel settings (config file only: `[[namespaces]]`).
    #[arg(skip)]
    #[serde(default)]
    pub namespaces: Vec<Namespace>,
    /// How long a client cut off as too slow (its send queue overflowed) has to read the
    /// rest of the frame in progress and the close frame 1013, and answer it, before its
    /// TCP connection is dropped (`5s`, `500ms`; a plain number is seconds; 0: drop at
    /// once after one write attempt).
    #[arg(long, env = "WSPUSH_SLOW_CLOSE_GRACE", default_value_t = Secs::from_units(5))]
    pub slow_close_grace: Secs,
    /// Reverse proxies whose `Forwarded` / `X-Forwarded-For` / `X-Real-IP` are believed
    /// (comma-separated CIDR blocks or addresses, e.g. `127.0.0.1,10.0.0.0/8`): behind them
    /// the client address (logs, per-IP limits, the API's local-only rule) is the rightmost
    /// untrusted hop.
    #[arg(long, env = "WSPUSH_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<String>,
    /// Host names this server is reached by, besides `localhost`, `*.localhost` and IP
    /// addresses (comma-separated; `*.example.com` for subdomains). A WebSocket from a page
    /// under such a name counts as same-origin, and without an API key the API answers
    /// loopback requests that name it. Any other name could be a DNS-rebinding page.
    #[arg(long, env = "WSPUSH_SERVER_NAMES", value_delimiter = ',')]
    pub server_names: Vec<String>,
    /// How long an HTTP API client has to send its whole request body (`10s`; a plain
    /// number is seconds; slower: 408).
    #[arg(long, env = "WSPUSH_BODY_TIMEOUT", default_value_t = Secs::from_units(10))]
    pub body_timeout: Secs,
    /// How long a channel keeps its history after its last message when its namespace
    /// sets no `history_ttl` (`24h`, `7d`; a plain number is seconds; its Redis keys
    /// expire then too).
    #[arg(long, env = "WSPUSH_HISTORY_MAX_AGE", default_value_t = Secs::from_units(86_400))]
    pub history_max_age: Secs,
    /// Largest JSON-mode command or Pusher client message, in bytes, checked before it is
    /// parsed (larger: error `too_large`, or `pusher:error` 4301). Default: the larger of
    /// `max_publish_size` and the Pusher apps' `max_payload_size`, plus 4096.
    #[arg(long, env = "WSPUSH_MAX_COMMAND_SIZE")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_command_size: Option<usize>,
    /// Extra paths serving raw mode like `/ws` (repeatable: `--ws-path /websocket/demo.php`),
    /// so a page written for another server connects unchanged.
    #[arg(long = "ws-path", env = "WSPUSH_WS_PATHS", value_delimiter = ',')]
    pub ws_paths: Vec<String>,
    /// Most `--upstream exec:` processes running at once (one per raw client; a raw
    /// client over it is refused with 503).
    #[arg(long, env = "WSPUSH_MAX_EXEC_PROCESSES", default_value_t = 64)]
    pub max_exec_processes: usize,
    /// How long a node's heartbeat in Redis lives (`30s`; a plain number is
    /// milliseconds; refreshed every third of it): a node silent that long is dead, and a
    /// live node removes its presence members and occupancy, sending `member_removed` /
    /// `channel_vacated` once cluster-wide.
    #[arg(long, env = "WSPUSH_NODE_TTL_MS", default_value_t = Millis::from_units(30_000))]
    pub node_ttl_ms: Millis,
    /// Origins whose pages may read the HTTP answers (CORS; comma-separated, `*` = any;
    /// empty: no CORS headers). `*` covers `/`, `/healthz`, the assets and the signed
    /// Pusher API; the native API and `/metrics` (which trust loopback callers) answer
    /// only origins listed by name. Preflights get 204.
    #[arg(
        long,
        env = "WSPUSH_CORS_ALLOWED_ORIGINS",
        value_delimiter = ',',
        default_value = "*"
    )]
    pub cors_allowed_origins: Vec<String>,
    /// How the `broker` Redis URLs are read: `standalone` (each URL one Redis; channels
    /// are sharded over them), `cluster` (nodes of one Redis Cluster; list several) or
    /// `sentinel` (Sentinels watching `redis_sentinel_master`; a failover is followed).
    #[arg(long, env = "WSPUSH_REDIS_MODE", default_value_t = RedisMode::Standalone)]
    pub redis_mode: RedisMode,
    /// Prefix of every Redis key and pub/sub topic: servers sharing one Redis with
    /// different prefixes do not see each other's channels, clients or history.
    #[arg(long, env = "WSPUSH_REDIS_PREFIX", default_value = "wspush:")]
    pub redis_prefix: String,
    /// PEM CA certificate(s) trusted for `rediss://` URLs instead of the system store.
    #[arg(long, env = "WSPUSH_REDIS_CA_FILE")]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis_ca_file: Option<PathBuf>,
    /// The master name the Sentinels know (`redis_mode = "sentinel"`).
    #[arg(long, env = "WSPUSH_REDIS_SENTINEL_MASTER", default_value = "mymaster")]
    pub redis_sentinel_master: String,
    /// permessage-deflate (RFC 7692) on WebSocket connections: `off`, or `on` to accept
    /// the compression a client offers (browsers offer it by default).
    #[arg(long, env = "WSPUSH_COMPRESSION", value_enum, default_value_t = Compression::Off)]
    pub compression: Compression,
    /// The LZ77 window of the server's compressor, in bits (9..15: 512 B to 32 KiB); a
    /// client's smaller `server_max_window_bits` is honoured.
    #[arg(long, env = "WSPUSH_SERVER_MAX_WINDOW_BITS", default_value_t = 15)]
    pub server_max_window_bits: u8,
    /// Let clients that do not offer `*_no_context_takeover` keep compression contexts
    /// across messages: a compressor per connection (about 2^(bits+2) + 192 KiB each) and
    /// a deflate per delivery. Off: the server answers `server_no_context_takeover` and
    /// `client_no_context_takeover`, and each message is deflated once for all clients.
    #[arg(long, env = "WSPUSH_COMPRESSION_CONTEXT_TAKEOVER")]
    pub compression_context_takeover: bool,
}

impl Config {
    /// Merges the `--config` file (if any) under what the command line and environment
    /// set: a file value replaces only a value that came from a default.
    pub fn resolve(self, matches: &ArgMatches) -> Result<Config, ConfigError> {
        let Some(path) = self.config.clone() else {
            return Ok(self);
        };
        let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
            path: path.clone(),
            source,
        })?;
        self.merge_file(path, &text, matches)
    }

    /// [`Config::resolve`] once the file at `path` is read: merges its `text` under what
    /// the command line and environment set.
    pub fn merge_file(
        self,
        path: PathBuf,
        text: &str,
        matches: &ArgMatches,
    ) -> Result<Config, ConfigError> {
        let file_err = |message: String| ConfigError::File {
            path: path.clone(),
            message,
        };
        // Parse the file as a whole first: unknown keys and bad types are reported with
        // their line and column.
        let from_file: Config = toml::from_str(text).map_err(|e| file_err(e.to_string()))?;
        let file_table: toml::Table = toml::from_str(text).map_err(|e| file_err(e.to_string()))?;
        let mut merged = toml::Table::try_from(&self).map_err(|e| file_err(e.to_string()))?;
        let from_file = toml::Table::try_from(&from_file).map_err(|e| file_err(e.to_string()))?;
        for key in file_table.keys() {
            let is_arg = matches.ids().any(|id| id.as_str() == key);
            let from_default = !is_arg
                || !matches!(
                    matches.value_source(key),
                    Some(ValueSource::CommandLine | ValueSource::EnvVariable)
                );
            if from_default {
                if let Some(v) = from_file.get(key) {
                    merged.insert(key.clone(), v.clone());
                }
            }
        }
        let mut config: Config = merged
            .try_into()
            .map_err(|e: toml::de::Error| file_err(e.to_string()))?;
        config.config = Some(path);
        config.print_config = self.print_config;
        Ok(config)
    }

    /// The effective configuration as TOML (secrets redacted).
    pub fn to_toml(&self) -> String {
        let mut shown = self.clone();
        for secret in [&mut shown.api_key, &mut shown.jwt_secret] {
            if secret.is_some() {
                *secret = Some("<redacted>".into());
            }
        }
        for app in &mut shown.apps {
            app.secret = "<redacted>".into();
        }
        for spec in &mut shown.pusher_app {
            let mut parts = spec.splitn(3, ':');
            if let (Some(id), Some(key)) = (parts.next(), parts.next()) {
                *spec = format!("{id}:{key}:<redacted>");
            }
        }
        toml::to_string(&shown).expect("config serializes")
    }

    /// Checks the fields' ranges and combinations, and the apps' fields; names the
    /// offending option. Pure: what needs reading files or building (JWT key, TLS
    /// certificate, trusted proxies) is checked by `crate::setup::build`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key, reason: &str| {
            Err(ConfigError::Invalid {
                key,
                reason: reason.to_string(),
            })
        };
        if *self.node_ttl_ms < Duration::from_millis(300) {
            return bad("node-ttl-ms", "must be at least 300 ms");
        }
        if self.max_message_size == 0 || self.max_message_size > 64 << 20 {
            return bad("max-message-size", "must be between 1 and 67108864");
        }
        if self.ping_interval.is_zero() || self.ping_timeout.is_zero() {
            return bad("ping-interval/ping-timeout", "must be at least 1 second");
        }
        if self.queue_max_frames == 0 || self.queue_max_bytes < 1024 {
            return bad(
                "queue-max-frames/queue-max-bytes",
                "too small (frames >= 1, bytes >= 1024)",
            );
        }
        if (self.queue_max_bytes as usize) < self.max_message_size.min(u32::MAX as usize) {
            return bad("queue-max-bytes", "must be at least max-message-size");
        }
        if self.handshake_timeout.is_zero() {
            return bad("handshake-timeout", "must be longer than 0");
        }
        let mut prefixes = std::collections::HashSet::new();
        for ns in &self.namespaces {
            if !prefixes.insert(ns.prefix.as_str()) {
                return bad(
                    "namespaces",
                    &format!("prefix {:?} is configured twice", ns.prefix),
                );
            }
            if ns.history_ttl == Some(Duration::ZERO) {
                return bad("namespaces.history_ttl", "must be longer than 0");
            }
        }
        if self.publish_rate.is_nan() || self.publish_rate <= 0.0 || self.publish_burst == 0 {
            return bad("publish_rate/publish_burst", "must be greater than 0");
        }
        if self.command_rate.is_nan() || self.command_rate <= 0.0 || self.command_burst == 0 {
            return bad("command_rate/command_burst", "must be greater than 0");
        }
        if f64::from(self.command_burst) < crate::limits::PRESENCE_COST {
            return bad(
                "command_burst",
                "must be at least 10 (the cost of a presence join or leave)",
            );
        }
        if self.jwt_secret.is_some() && self.jwt_public_key.is_some() {
            return bad("jwt_secret/jwt_public_key", "configure one, not both");
        }
        self.pusher_apps()?;
        if self.broker != "memory" {
            let urls = self.redis_urls();
            if urls.is_empty()
                || urls
                    .iter()
                    .any(|u| !(u.starts_with("redis://") || u.starts_with("rediss://")))
            {
                return bad(
                    "broker",
                    "must be `memory` or comma-separated redis:// URLs",
                );
            }
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return bad("tls_cert/tls_key", "set both or neither");
        }
        if matches!(&self.api_key, Some(k) if k.is_empty()) {
            return bad("api-key", "must not be empty");
        }
        if *self.slow_close_grace > Duration::from_secs(600) {
            return bad("slow-close-grace", "must be at most 600 seconds");
        }
        if let Some(n) = self.server_names.iter().find(|n| {
            let n = n.trim();
            n.is_empty() || n.contains([':', '/', ' ']) || n.parse::<std::net::IpAddr>().is_ok()
        }) {
            return bad(
                "server-names",
                &format!("{n:?} is not a host name (no scheme, port or IP address)"),
            );
        }
        if self.body_timeout.is_zero() {
            return bad("body-timeout", "must be longer than 0");
        }
        if *self.history_max_age < Duration::from_secs(1)
            || *self.history_max_age > Duration::from_secs(365 * 86_400)
        {
            return bad("history-max-age", "must be between 1 and 31536000 seconds");
        }
        if self.max_command_size.is_some_and(|n| n < 256) {
            return bad("max-command-size", "must be at least 256");
        }
        if let Some(o) = self.allowed_origins.iter().find(|o| !valid_origin_rule(o)) {
            return bad(
                "allowed-origins",
                &format!(
                    "{o:?} is not an origin rule (*, null, or SCHEME://HOST[:PORT], where HOST \
                     may start with *. and PORT may be *)"
                ),
            );
        }
        let mut paths = std::collections::HashSet::new();
        for path in &self.ws_paths {
            if let Err(why) = valid_ws_path(path) {
                return bad("ws-path", &format!("{path:?}: {why}"));
            }
            if !paths.insert(path.as_str()) {
                return bad("ws-path", &format!("{path:?} is given twice"));
            }
        }
        if matches!(self.upstream, Spec::Exec(_)) && self.max_exec_processes == 0 {
            return bad(
                "max-exec-processes",
                "must be at least 1 with --upstream exec:",
            );
        }
        if self.redis_prefix.is_empty()
            || self.redis_prefix.len() > 64
            || !self.redis_prefix.chars().all(|c| c.is_ascii_graphic())
            || self.redis_prefix.contains(['{', '}'])
        {
            return bad(
                "redis-prefix",
                "must be 1 to 64 printable ASCII characters without `{` or `}` (hash tags are wspush's)",
            );
        }
        if self.redis_sentinel_master.is_empty() {
            return bad("redis-sentinel-master", "must not be empty");
        }
        if !(9..=15).contains(&self.server_max_window_bits) {
            return bad(
                "server-max-window-bits",
                "must be between 9 and 15 (raw deflate has no 8-bit window)",
            );
        }
        Ok(())
    }

    /// The Pusher apps, `--pusher-app` ones first (the first is the default app), with
    /// their fields checked.
    pub fn pusher_apps(&self) -> Result<Vec<apps::App>, ConfigError> {
        let mut all = Vec::new();
        for spec in &self.pusher_app {
            all.push(apps::parse_flag(spec)?);
        }
        all.extend(self.apps.iter().cloned());
        apps::validate(&all)?;
        Ok(all)
    }

    /// The largest JSON-mode command or Pusher client message (`max_command_size`, or
    /// room for the largest data a client may send plus 4 KiB for the rest).
    pub fn command_size_limit(&self) -> usize {
        self.max_command_size.unwrap_or_else(|| {
            let flag_apps =
                (!self.pusher_app.is_empty()).then(|| apps::AppLimits::default().max_payload_size);
            let apps = self.apps.iter().map(|a| a.limits.max_payload_size);
            let data = apps
                .chain(flag_apps)
                .fold(self.max_publish_size, usize::max);
            data.saturating_add(4096)
        })
    }

    /// How to reach Redis, or `None` for the in-memory broker.
    pub fn redis_options(&self) -> Option<RedisOptions> {
        let urls = self.redis_urls();
        (!urls.is_empty()).then(|| RedisOptions {
            urls,
            mode: self.redis_mode,
            prefix: self.redis_prefix.clone(),
            ca_file: self.redis_ca_file.clone(),
            sentinel_master: self.redis_sentinel_master.clone(),
        })
    }

    /// The Redis URLs of `broker` (empty for the in-memory broker).
    pub fn redis_urls(&self) -> Vec<String> {
        if self.broker == "memory" {
            return Vec::new();
        }
        self.broker
            .split(',')
            .map(|u| u.trim().to_string())
            .filter(|u| !u.is_empty())
            .collect()
    }

    /// The command budget: refill rate per second and burst.
    pub fn command_budget(&self) -> (f64, f64) {
        (self.command_rate, f64::from(self.command_burst))
    }

    /// The namespace table, with `history_max_age` for history namespaces without a TTL.
    pub fn namespaces(&self) -> crate::namespace::Namespaces {
        crate::namespace::Namespaces::new(self.namespaces.clone())
            .with_history_max_age(self.history_max_age.get())
    }

    /// Handshake timeout as a duration.
    pub fn handshake_timeout(&self) -> Duration {
        self.handshake_timeout.get()
    }

    /// Body timeout as a duration.
    pub fn body_timeout(&self) -> Duration {
        self.body_timeout.get()
    }
}

impl Default for Config {
    fn default() -> Self {
        use clap::Parser;
        #[derive(Parser)]
        struct Wrap {
            #[command(flatten)]
            config: Config,
        }
        Wrap::parse_from(["wspush"]).config
    }
}
