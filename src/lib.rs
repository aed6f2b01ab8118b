//! wspush: a real-time WebSocket push server.
//!
//! # Layout
//!
//! - [`server`]: `run(listener, runtime, console, shutdown)`: builds the hub, accepts
//!   connections (hyper HTTP/1 with upgrades), shuts down gracefully.
//! - [`setup`]: `build(config)`: validates the configuration and builds, once, what the
//!   server runs with (token verifier, Pusher apps, TLS acceptor, proxies, namespaces).
//! - [`hub`]: clients, channel subscriptions and fan-out into bounded per-client outboxes,
//!   which flusher tasks (one per runtime worker) write straight to the sockets; every
//!   publish goes through the broker. Knows sockets only as a `Writer` (a non-blocking
//!   vectored write), and no JSON.
//! - [`broker`]: the `Broker` trait (offsets, cross-node delivery) and `Memory`.
//! - [`ws`]: the WebSocket front: upgrade, per-connection `Session`, frame codec, close codes.
//! - [`protocol`]: the `wspush.v1` JSON commands and replies (parsing and encoding).
//! - [`http`]: the HTTP surface (`router`), the `/api` handlers and `ApiError`.
//! - [`upstream`]: what happens to messages clients send (echo, publish, webhook).
//! - [`console`]: the operator console on stdin/stdout (output bounded in bytes, every
//!   line escaped and cut at 1 KiB; `Escaped` for client text in logs).
//! - [`access`]: the one channel access decision every front asks (namespaces, token
//!   grants, Pusher auth, Pusher's reserved prefixes).
//! - [`auth`]: JWT verification into grants (user id, expiry, channel patterns).
//! - [`config`]: `serve` options (flags, env, TOML file, `[[apps]]`) as plain data, and
//!   the checks of their fields; imports no runtime module.
//! - [`limits`]: connection permits (total and per IP).
//! - [`metrics`]: `/metrics` exposition from the hub's atomic counters.
//! - [`namespace`]: per-prefix channel settings (history, presence, anonymous access).
//! - [`net`]: the client address behind trusted proxies, CIDR blocks, what a Host names.
//! - [`shutdown`]: signals and the task tracker.
//! - [`tls`]: the rustls acceptor for https:// and wss://.
//! - [`client`], [`publish`]: the `wspush client` and `wspush publish` commands.
//! - [`pusher`]: the Pusher Channels front: apps, protocol 7 at `/app/{key}`, the signed
//!   HTTP API under `/apps/{id}`, presence, cache channels, webhooks. Calls the hub.
//! - [`bench`]: the `wspush bench` load generator (idle, fanout, echo); its own lean client.
//!
//! Fronts call the hub; the hub calls the broker; the broker delivers into the hub's
//! registry. Nothing below `http`/`ws` knows about wire formats beyond pre-encoded frames.

pub mod access;
pub mod auth;
pub mod bench;
pub mod broker;
pub mod client;
pub mod config;
pub mod console;
pub mod http;
pub mod hub;
pub mod limits;
pub mod metrics;
pub mod model;
pub mod namespace;
pub mod net;
pub mod protocol;
pub mod publish;
pub mod pusher;
pub mod server;
pub mod setup;
mod shard;
pub mod shutdown;
pub mod state;
pub mod tls;
pub mod upstream;
pub mod ws;
