//! The WebSocket transport and its native fronts: the frame codec, one `Session` per
//! connection (generic over its `Front`), the one upgrade path every WebSocket front uses,
//! and raw and JSON mode at `GET /ws`.

mod admit;
pub mod close;
pub(crate) mod commands;
pub mod formats;
pub mod front;
pub mod json;
pub mod raw;
mod session;
#[cfg(test)]
mod sizes;
mod tls;
mod transport;
mod upgrade;

use serde::Deserialize;

pub use crate::frame;
pub use crate::model::valid_channel;
pub(crate) use admit::{admit, Admission};
pub use close::{Close, CloseReason};
pub use commands::{members_json, messages_json, PRESENCE_COST};
pub use front::Front;
pub use session::Session;
pub(crate) use upgrade::handshake_channels;
pub use upgrade::{
    accept_key, answer_deflate, negotiate_deflate, origin_listed, start_session,
    switching_protocols, upgrade,
};

/// The JSON-mode subprotocol.
pub const SUBPROTOCOL: &str = "wspush.v1";

/// Query parameters of `GET /ws`.
#[derive(Debug, Default, Deserialize)]
pub struct WsParams {
    /// Comma-separated channels to subscribe on connect.
    pub channels: Option<String>,
    /// `json` selects JSON mode.
    pub protocol: Option<String>,
    /// A JWT authenticating the connection.
    pub token: Option<String>,
}
