//! wspush: a real-time WebSocket push server.
//!
//! # Layout
//!
//! Layers, bottom to top (a module imports only from below; `scripts/layers.py` checks
//! it, and `docs/architecture.md` walks a publish and a client message through them):
//!
//! - Plain data and tools: [`model`] (client ids, payloads, messages with a frame slot per
//!   wire `Format`, the hub's `Disconnect` reasons, channel-name rules), [`deflate`]
//!   (permessage-deflate: negotiation, shared and per-connection compression, bounded
//!   inflation), [`frame`] (the RFC 6455 codec, inflating through `deflate`), [`error`] (`ApiError`, the one place HTTP errors are made),
//!   [`config`], [`namespace`], [`net`] (client address behind trusted proxies, Host
//!   names), [`limits`] (connection permits, token buckets), [`auth`] (JWT grants),
//!   [`tls`], [`shutdown`], [`protocol`] (`wspush.v1` commands, compact raw JSON).
//! - [`access`]: the one channel access decision every front asks.
//! - [`broker`]: offsets, history, presence and cross-node delivery (`Memory`, `Redis`),
//!   delivering through the `Sink` trait.
//! - [`hub`]: clients, subscriptions, fan-out into bounded outboxes written by flusher
//!   tasks; knows wire formats only through each client's `Format`.
//! - [`metrics`], [`console`], [`refusal`] (refusals logged with their fix, rate-limited),
//!   [`upstream`] (incl. `exec:` processes), [`state`] (`AppState`, what fronts share).
//! - Fronts: [`ws`] (the WebSocket session and upgrade path, the `Front` trait, raw and
//!   JSON mode), [`pusher`] (Pusher protocol 7, its signed HTTP API, webhooks) and
//!   [`sse`] (Server-Sent Events and NDJSON streaming, receive-only, with resume).
//! - [`http`]: the native HTTP surface (`router`), merged with the fronts' routes.
//! - [`setup`]: `build(config)` validates the configuration and builds, once, what the
//!   server runs with (token verifier, Pusher apps, TLS acceptor, proxies, namespaces).
//! - [`server`]: `run(listener, runtime, console, shutdown)`: accepts connections, shuts
//!   down gracefully.
//! - Commands: [`client`], [`publish`], [`bench`] (the load generator); [`banner`] (the
//!   startup lines on stderr).

pub mod access;
pub mod auth;
pub mod banner;
pub mod bench;
pub mod broker;
pub mod client;
pub mod config;
pub mod console;
pub mod deflate;
pub mod error;
pub mod frame;
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
pub mod refusal;
pub mod server;
pub mod setup;
mod shard;
pub mod shutdown;
pub mod sse;
pub mod state;
pub mod tls;
pub mod upstream;
pub mod ws;
