//! The Pusher front as a WebSocket front: its per-connection state (`Conn`), its
//! message handling (`protocol`, `channels`) and its close codes (`close`).

use std::sync::Arc;

use bytes::Bytes;

use super::close::PusherClose;
use super::protocol::{self, error_event};
use super::{Pusher, Tenant, UserId};
use crate::hub::Client;
use crate::limits::Bucket;
use crate::model::{Disconnect, Payload};
use crate::state::{AppState, Shared};
use crate::ws::{Close, Front};

/// The Pusher front: the shared state and the Pusher state (apps, rooms, webhooks). It
/// is the state of the Pusher routes too.
#[derive(Clone)]
pub struct PusherFront {
    /// What every front shares.
    pub app: AppState,
    /// The Pusher state.
    pub pusher: Arc<Pusher>,
}

impl std::ops::Deref for PusherFront {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.app
    }
}

/// One Pusher connection's state, owned by its session.
#[derive(Debug)]
pub struct Conn {
    /// Its app.
    pub tenant: Arc<Tenant>,
    /// The user it signed in as.
    pub user: Option<UserId>,
    /// The app's channel names it is subscribed to.
    pub channels: Vec<Arc<str>>,
    /// Its user id in each presence channel it joined (app channel name, user id).
    pub presence: Vec<(Arc<str>, UserId)>,
    /// The client-event rate limit's bucket, made on the first client event.
    pub events: Option<Box<Bucket>>,
    /// The command budget's bucket (every message), made on the first message.
    pub budget: Option<Box<Bucket>>,
    /// The user ids of its watchlist (issue #14 item 12).
    pub watching: Vec<Arc<str>>,
}

impl Conn {
    /// A new connection of `tenant`.
    pub fn new(tenant: Arc<Tenant>) -> Self {
        Conn {
            tenant,
            user: None,
            channels: Vec::new(),
            presence: Vec::new(),
            events: None,
            budget: None,
            watching: Vec::new(),
        }
    }
}

impl Front for PusherFront {
    type Conn = Conn;

    fn app(&self) -> &AppState {
        &self.app
    }

    async fn message<'a>(
        &'a self,
        conn: &'a mut Conn,
        client: &'a Arc<Client>,
        payload: Payload,
    ) -> Option<Close> {
        protocol::handle(self, conn, client, payload).await
    }

    fn close(&self, reason: Disconnect) -> Close {
        PusherClose::of(reason)
    }

    /// Pusher clients learn why from a `pusher:error` before the close frame.
    fn farewell(&self, close: Close) -> Option<Bytes> {
        close
            .code
            .filter(|code| *code >= 4000)
            .map(|code| error_event(Some(code), close.text))
    }

    async fn closed(&self, conn: &mut Conn, client: &Arc<Client>) {
        protocol::closed(self, conn, client).await
    }
}
