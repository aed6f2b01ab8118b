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
    /// 4001: the client's token expired and was not refreshed.
    TokenExpired,
    /// 1009: a message larger than the configured maximum.
    TooBig,
    /// 1011: an internal error on our side.
    Internal,
    /// 1013: the client does not read fast enough; its send queue overflowed.
    SlowConsumer,
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
            CloseReason::TokenExpired => 4001,
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
            CloseReason::TokenExpired => "token expired",
            CloseReason::Abort => "",
        }
    }
}
