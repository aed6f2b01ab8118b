//! Wire protocols spoken on WebSocket connections besides raw bytes.

pub mod compact;
pub mod json;
