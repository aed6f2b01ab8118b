//! The front seam: what a protocol spoken over WebSocket implements to get connections.
//! The session (`Session`) owns the socket, frames, pings and the close handshake; the
//! front owns its per-connection state, what a client's message means, and which close
//! code each of the hub's disconnect reasons becomes. Its wire format for what the hub
//! pushes is its `Format` (see `crate::model`), given when the client is registered.

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;

use super::close::Close;
use crate::hub::Client;
use crate::model::{Disconnect, Payload};
use crate::state::AppState;

/// A protocol over WebSocket. A value is cheap to clone (a handle on shared state) and is
/// held by every session of the front.
pub trait Front: Clone + Send + Sync + 'static {
    /// What the front keeps per connection (moved into the session, handed back at the
    /// end).
    type Conn: Send + 'static;

    /// The shared state.
    fn app(&self) -> &AppState;

    /// Acts on one text or binary message from the client; a close ends the connection.
    fn message<'a>(
        &'a self,
        conn: &'a mut Self::Conn,
        client: &'a Arc<Client>,
        payload: Payload,
    ) -> impl Future<Output = Option<Close>> + Send + 'a;

    /// The close a hub disconnect reason becomes for this front's clients.
    fn close(&self, reason: Disconnect) -> Close;

    /// A frame to send before the close frame (Pusher: `pusher:error` with the code).
    fn farewell(&self, _close: Close) -> Option<Bytes> {
        None
    }

    /// When the connection ends, after the hub took the client out of its channels and
    /// before the close frame is sent: the front forgets it too (leaves its channels), so
    /// the client sees the close only once it has left.
    fn closed(
        &self,
        conn: &mut Self::Conn,
        client: &Arc<Client>,
    ) -> impl Future<Output = ()> + Send;
}
