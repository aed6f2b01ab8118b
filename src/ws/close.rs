//! `CloseReason`: the one place WebSocket close codes are chosen.

/// Why the server closes a WebSocket connection. Each variant maps to exactly one
/// RFC 6455 close code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// 1000: the peer asked to close, or the session ended normally.
    Normal,
    /// 1001: the server is shutting down.
    GoingAway,
    /// 1002: the peer broke the framing rules (bad opcode, RSV bits, unmasked frame,
    /// fragmented control frame, bad close payload...).
    Protocol,
    /// 1007: a text message or close reason that is not valid UTF-8.
    InvalidPayload,
    /// 1008: the peer broke a policy (too many protocol errors, rate limit, kicked by the API).
    Policy,
    /// 1008: disconnected by an operator (HTTP API `DELETE /api/clients/{id}`).
    Kicked,
    /// 1012: the channel's offsets restarted (a new epoch, e.g. the cluster's Redis
    /// restarted empty): reconnect and recover (`history_gone` tells what was lost).
    Resync,
    /// 4001: the client's token expired and was not refreshed.
    TokenExpired,
    /// 1009: a message larger than the configured maximum.
    TooBig,
    /// 1011: an internal error on our side.
    Internal,
    /// 1013: the client does not read fast enough; its send queue overflowed.
    SlowConsumer,
    /// 4001 (Pusher): no app has the key in `/app/{key}`.
    PusherUnknownApp,
    /// 4003 (Pusher): the app is disabled.
    PusherAppDisabled,
    /// 4004 (Pusher): the app is over its connection quota (`max_connections`).
    PusherOverQuota,
    /// 4007 (Pusher): a protocol version we do not speak (`?protocol=` not 5 to 7).
    PusherUnsupportedProtocol,
    /// 4008 (Pusher): no `?protocol=` version given.
    PusherNoProtocol,
    /// 4009 (Pusher): the app requires user authentication and the connection did not
    /// sign in in time.
    PusherUnauthorized,
    /// 4009 (Pusher): the user's connections were terminated through the HTTP API.
    PusherTerminated,
    /// 4100 (Pusher): the server is over capacity; reconnect after a back-off.
    PusherOverCapacity,
    /// 4200 (Pusher): the server is shutting down; reconnect (elsewhere) now.
    PusherGoingAway,
    /// 4201 (Pusher): the connection did not answer `pusher:ping` in time.
    PusherPongTimeout,
    /// No close frame can be sent (the peer vanished or stopped answering pings):
    /// the TCP connection is dropped.
    Abort,
}

impl CloseReason {
    /// The close code sent on the wire (None for `Abort`).
    pub fn code(self) -> Option<u16> {
        Some(match self {
            CloseReason::Normal => 1000,
            CloseReason::GoingAway => 1001,
            CloseReason::Protocol => 1002,
            CloseReason::InvalidPayload => 1007,
            CloseReason::Policy | CloseReason::Kicked => 1008,
            CloseReason::TooBig => 1009,
            CloseReason::Internal => 1011,
            CloseReason::SlowConsumer => 1013,
            CloseReason::Resync => 1012,
            CloseReason::TokenExpired => 4001,
            CloseReason::PusherUnknownApp => 4001,
            CloseReason::PusherAppDisabled => 4003,
            CloseReason::PusherOverQuota => 4004,
            CloseReason::PusherUnsupportedProtocol => 4007,
            CloseReason::PusherNoProtocol => 4008,
            CloseReason::PusherUnauthorized | CloseReason::PusherTerminated => 4009,
            CloseReason::PusherOverCapacity => 4100,
            CloseReason::PusherGoingAway => 4200,
            CloseReason::PusherPongTimeout => 4201,
            CloseReason::Abort => return None,
        })
    }

    /// True when the peer broke the protocol: the server closes TCP right after its close
    /// frame instead of waiting for the peer's answer (RFC 6455 "fail the connection").
    pub fn fails_connection(self) -> bool {
        matches!(
            self,
            CloseReason::Protocol | CloseReason::InvalidPayload | CloseReason::TooBig
        )
    }

    /// A short human-readable reason sent in the close frame.
    pub fn text(self) -> &'static str {
        match self {
            CloseReason::Normal => "",
            CloseReason::GoingAway => "server shutting down",
            CloseReason::Protocol => "protocol error",
            CloseReason::InvalidPayload => "invalid utf-8",
            CloseReason::Policy => "policy violation",
            CloseReason::Kicked => "disconnected by the server",
            CloseReason::TooBig => "message too big",
            CloseReason::Internal => "internal error",
            CloseReason::SlowConsumer => "send queue overflow: client too slow",
            CloseReason::Resync => "channel offsets restarted; reconnect",
            CloseReason::TokenExpired => "token expired",
            CloseReason::PusherUnknownApp => "App key not in this cluster",
            CloseReason::PusherAppDisabled => "App disabled",
            CloseReason::PusherOverQuota => "App over connection quota",
            CloseReason::PusherUnsupportedProtocol => "Unsupported protocol version",
            CloseReason::PusherNoProtocol => "No protocol version supplied",
            CloseReason::PusherUnauthorized => "Connection not authorized within timeout",
            CloseReason::PusherTerminated => "Connections of this user were terminated",
            CloseReason::PusherOverCapacity => "Over capacity",
            CloseReason::PusherGoingAway => "Server shutting down; reconnect",
            CloseReason::PusherPongTimeout => "Pong reply not received",
            CloseReason::Abort => "",
        }
    }
}
