//! `Config`: every `serve` option, validated before anything binds.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;

use crate::upstream::Spec;

/// Why a configuration is rejected (exit code 64).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
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
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "WSPUSH_LISTEN", default_value = "127.0.0.1:8083")]
    pub listen: SocketAddr,
    /// API key required by the HTTP API (`Authorization: apikey KEY`); without one the
    /// API answers loopback peers only.
    #[arg(long, env = "WSPUSH_API_KEY")]
    pub api_key: Option<String>,
    /// What to do with messages raw clients send: none | echo | publish:CHANNEL | webhook:URL.
    #[arg(long, env = "WSPUSH_UPSTREAM", default_value = "none")]
    pub upstream: Spec,
    /// Largest WebSocket message accepted, in bytes (larger: close 1009).
    #[arg(long, env = "WSPUSH_MAX_MESSAGE_SIZE", default_value_t = 1 << 20)]
    pub max_message_size: usize,
    /// Largest HTTP API request body, in bytes (larger: 413).
    #[arg(long, env = "WSPUSH_MAX_BODY_SIZE", default_value_t = 2 << 20)]
    pub max_body_size: usize,
    /// Seconds of client silence before the server pings it.
    #[arg(long, env = "WSPUSH_PING_INTERVAL", default_value_t = 25)]
    pub ping_interval: u32,
    /// Seconds a pinged client has to answer before it is dropped.
    #[arg(long, env = "WSPUSH_PING_TIMEOUT", default_value_t = 20)]
    pub ping_timeout: u32,
    /// Most frames queued for one client before it is disconnected as too slow (1013).
    #[arg(long, env = "WSPUSH_QUEUE_MAX_FRAMES", default_value_t = 8192)]
    pub queue_max_frames: u32,
    /// Most bytes queued for one client before it is disconnected as too slow (1013).
    #[arg(long, env = "WSPUSH_QUEUE_MAX_BYTES", default_value_t = 8 << 20)]
    pub queue_max_bytes: u32,
    /// Seconds a new connection has to send its HTTP request head.
    #[arg(long, env = "WSPUSH_HANDSHAKE_TIMEOUT", default_value_t = 10)]
    pub handshake_timeout: u64,
    /// Most WebSocket connections at once (over it: 503).
    #[arg(long, env = "WSPUSH_MAX_CONNECTIONS", default_value_t = 200_000)]
    pub max_connections: usize,
    /// Seconds to wait for clients to take their close frames at shutdown.
    #[arg(long, env = "WSPUSH_SHUTDOWN_GRACE", default_value_t = 5)]
    pub shutdown_grace: u64,
    /// Do not read operator commands from stdin.
    #[arg(long, env = "WSPUSH_NO_CONSOLE")]
    pub no_console: bool,
    /// Do not print upstream messages (`[client] text`) on stdout.
    #[arg(long, env = "WSPUSH_QUIET")]
    pub quiet: bool,
}

impl Config {
    /// Checks ranges; names the offending option.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key, reason: &str| {
            Err(ConfigError::Invalid {
                key,
                reason: reason.to_string(),
            })
        };
        if self.max_message_size == 0 || self.max_message_size > 64 << 20 {
            return bad("max-message-size", "must be between 1 and 67108864");
        }
        if self.ping_interval == 0 || self.ping_timeout == 0 {
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
        if self.handshake_timeout == 0 {
            return bad("handshake-timeout", "must be at least 1 second");
        }
        if matches!(&self.api_key, Some(k) if k.is_empty()) {
            return bad("api-key", "must not be empty");
        }
        Ok(())
    }

    /// Handshake timeout as a duration.
    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_secs(self.handshake_timeout)
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
