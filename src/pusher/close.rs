//! The Pusher protocol's close codes: the one place they are chosen. Each is sent as a
//! `pusher:error` with the same code, then a close frame.

use crate::model::Disconnect;
use crate::ws::{Close, CloseReason};

/// Why the Pusher front closes a connection (4xxx codes as Pusher documents them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PusherClose {
    /// 4001: no app has the key in `/app/{key}`.
    UnknownApp,
    /// 4003: the app is disabled.
    AppDisabled,
    /// 4004: the app is over its connection quota (`max_connections`).
    OverQuota,
    /// 4007: a protocol version we do not speak (`?protocol=` not 5 to 7).
    UnsupportedProtocol,
    /// 4008: no `?protocol=` version given.
    NoProtocol,
    /// 4009: the app requires user authentication and the connection did not sign in
    /// in time.
    Unauthorized,
    /// 4009: the user's connections were terminated through the HTTP API.
    Terminated,
    /// 4100: the server is over capacity; reconnect after a back-off.
    OverCapacity,
    /// 4200: the server is shutting down; reconnect (elsewhere) now.
    GoingAway,
    /// 4201: the connection did not answer `pusher:ping` in time.
    PongTimeout,
}

impl PusherClose {
    /// The close code.
    pub fn code(self) -> u16 {
        match self {
            PusherClose::UnknownApp => 4001,
            PusherClose::AppDisabled => 4003,
            PusherClose::OverQuota => 4004,
            PusherClose::UnsupportedProtocol => 4007,
            PusherClose::NoProtocol => 4008,
            PusherClose::Unauthorized | PusherClose::Terminated => 4009,
            PusherClose::OverCapacity => 4100,
            PusherClose::GoingAway => 4200,
            PusherClose::PongTimeout => 4201,
        }
    }

    /// The message of the `pusher:error` and the close frame.
    pub fn text(self) -> &'static str {
        match self {
            PusherClose::UnknownApp => "App key not in this cluster",
            PusherClose::AppDisabled => "App disabled",
            PusherClose::OverQuota => "App over connection quota",
            PusherClose::UnsupportedProtocol => "Unsupported protocol version",
            PusherClose::NoProtocol => "No protocol version supplied",
            PusherClose::Unauthorized => "Connection not authorized within timeout",
            PusherClose::Terminated => "Connections of this user were terminated",
            PusherClose::OverCapacity => "Over capacity",
            PusherClose::GoingAway => "Server shutting down; reconnect",
            PusherClose::PongTimeout => "Pong reply not received",
        }
    }

    /// The close of a hub disconnect reason for a Pusher connection: Pusher's own code
    /// where Pusher has one, the native one (1008, 1012, 1013) otherwise.
    pub fn of(reason: Disconnect) -> Close {
        let pusher = match reason {
            Disconnect::ShuttingDown => PusherClose::GoingAway,
            Disconnect::PongTimeout => PusherClose::PongTimeout,
            Disconnect::Terminated => PusherClose::Terminated,
            Disconnect::Unauthorized => PusherClose::Unauthorized,
            other => return CloseReason::of(other).into(),
        };
        pusher.into()
    }
}

impl From<PusherClose> for Close {
    fn from(close: PusherClose) -> Close {
        Close {
            code: Some(close.code()),
            text: close.text(),
            fail: false,
        }
    }
}
