//! `Close`: how a WebSocket connection closes, and `CloseReason`, the close codes of the
//! native fronts (raw and JSON mode) and of the WebSocket framing itself. Each front has
//! its own codes (the Pusher front's are in `crate::pusher::close`).

use crate::frame::Violation;
use crate::model::Disconnect;

/// How a connection closes: a close frame with `code` and `text`, or (code `None`) TCP
/// dropped with no frame. `fail`: the peer broke the protocol, so the server closes TCP
/// right after its close frame instead of waiting for the peer's answer (RFC 6455
/// "fail the connection").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Close {
    /// The close code; `None` drops the connection without a frame.
    pub code: Option<u16>,
    /// The short human-readable reason.
    pub text: &'static str,
    /// Close TCP at once after the frame.
    pub fail: bool,
}

/// Why the server closes a native (raw or JSON mode) connection, or any connection whose
/// framing is broken. Each variant maps to exactly one close code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// 1000: the session ended normally.
    Normal,
    /// 1001: the server is shutting down.
    GoingAway,
    /// 1002: the peer broke the framing rules (bad opcode, RSV bits, unmasked frame,
    /// fragmented control frame, bad close payload...).
    Protocol,
    /// 1007: a text message or close reason that is not valid UTF-8.
    InvalidPayload,
    /// 1008: the peer broke a policy (too many protocol errors, rate limit).
    Policy,
    /// 1008: disconnected by an operator (HTTP API `DELETE /api/clients/{id}`).
    Kicked,
    /// 1009: a message larger than the configured maximum.
    TooBig,
    /// 1011: an internal error on our side.
    Internal,
    /// 1012: the channel's offsets restarted (a new epoch, e.g. the cluster's Redis
    /// restarted empty): reconnect and recover (`history_gone` tells what was lost).
    Resync,
    /// 1013: the client does not read fast enough; its send queue overflowed.
    SlowConsumer,
    /// 4001: the client's token expired and was not refreshed.
    TokenExpired,
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
            CloseReason::Resync => 1012,
            CloseReason::SlowConsumer => 1013,
            CloseReason::TokenExpired => 4001,
            CloseReason::Abort => return None,
        })
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
            CloseReason::Abort => "",
        }
    }

    /// The native close of a hub disconnect reason.
    pub fn of(reason: Disconnect) -> CloseReason {
        match reason {
            Disconnect::ShuttingDown => CloseReason::GoingAway,
            Disconnect::SlowConsumer => CloseReason::SlowConsumer,
            Disconnect::Kicked | Disconnect::Terminated | Disconnect::Unauthorized => {
                CloseReason::Kicked
            }
            Disconnect::TokenExpired => CloseReason::TokenExpired,
            Disconnect::PongTimeout => CloseReason::Abort,
            Disconnect::Resync => CloseReason::Resync,
            Disconnect::Policy => CloseReason::Policy,
            Disconnect::Ended => CloseReason::Normal,
        }
    }
}

impl From<CloseReason> for Close {
    fn from(reason: CloseReason) -> Close {
        Close {
            code: reason.code(),
            text: reason.text(),
            fail: matches!(
                reason,
                CloseReason::Protocol | CloseReason::InvalidPayload | CloseReason::TooBig
            ),
        }
    }
}

impl Close {
    /// The slow-consumer close: the frame in progress is finished, the rest dropped.
    pub fn is_slow_consumer(self) -> bool {
        self.code == Some(1013)
    }
}

impl From<Violation> for Close {
    fn from(violation: Violation) -> Close {
        match violation {
            Violation::Protocol => CloseReason::Protocol,
            Violation::InvalidUtf8 => CloseReason::InvalidPayload,
            Violation::TooBig => CloseReason::TooBig,
        }
        .into()
    }
}
