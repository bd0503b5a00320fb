//! Why the server ends a connection, as one typed value: the WebSocket close code and the
//! reason sent with it. Every transport ends for these reasons; WebSocket sends the code and
//! reason in its close frame, SSE simply ends its stream (EventSource then reconnects and
//! resumes), socket.io will map them to its own disconnect.
//!
//! The reasons are fixed, short and free of anything a client sent or holds: a close frame is
//! read by proxies and logged by clients, so it never names a room, a member or a token.

use tokio_util::sync::CancellationToken;

use crate::hub::{Closed, Inbox};

/// Why the server closes a connection (the codes are RFC 6455's, 7.4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Close {
    /// 1002: a frame RFC 6455 forbids a client to send (unmasked, a reserved bit or opcode).
    Protocol,
    /// 1007: a text frame that is not UTF-8.
    NotUtf8,
    /// 1008: far more client events than the rate limit allows (hammering).
    Hammering,
    /// 1009: a frame over 64 KiB.
    TooBig,
    /// 1012: the server is shutting down.
    Restarting,
    /// 1012: the connection reached `WS_MAX_LIFETIME_SECS`, before the platform's timeout.
    LifetimeReached,
    /// 1012: events of a room this connection holds were lost before they could be
    /// delivered; resuming tells the client (`complete: false`).
    Gap,
    /// 1013: the client does not read fast enough and its queue overflowed.
    TooSlow,
}

impl Close {
    /// The WebSocket close code.
    pub fn code(self) -> u16 {
        match self {
            Close::Protocol => 1002,
            Close::NotUtf8 => 1007,
            Close::Hammering => 1008,
            Close::TooBig => 1009,
            Close::Restarting | Close::LifetimeReached | Close::Gap => 1012,
            Close::TooSlow => 1013,
        }
    }

    /// The close frame's reason (at most 123 bytes, as a close frame allows).
    pub fn reason(self) -> &'static str {
        match self {
            Close::Protocol => "WebSocket protocol error",
            Close::NotUtf8 => "text frame is not valid UTF-8",
            Close::Hammering => "too many events, slow down",
            Close::TooBig => "frame larger than 64 KiB",
            Close::Restarting => "server restarting, reconnect and resume",
            Close::LifetimeReached => "connection lifetime reached, reconnect and resume",
            Close::Gap => "events were lost; resume to be told",
            Close::TooSlow => "too slow, reconnect and resume",
        }
    }

    /// Why a connection's inbox closed: the server is stopping (its token is the parent of
    /// every inbox's), the room's log lost events the client had not received, or the hub
    /// found the client too slow. The one place that reads an inbox's close.
    pub fn of_inbox(inbox: &Inbox, stopping: &CancellationToken) -> Close {
        if stopping.is_cancelled() {
            Close::Restarting
        } else if inbox.closed_because() == Some(Closed::Gap) {
            Close::Gap
        } else {
            Close::TooSlow
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_fits_a_close_frame_and_keeps_its_code() {
        let all = [
            (Close::Protocol, 1002),
            (Close::NotUtf8, 1007),
            (Close::Hammering, 1008),
            (Close::TooBig, 1009),
            (Close::Restarting, 1012),
            (Close::LifetimeReached, 1012),
            (Close::Gap, 1012),
            (Close::TooSlow, 1013),
        ];
        for (close, code) in all {
            assert_eq!(close.code(), code, "{close:?}");
            assert!(close.reason().len() <= 123, "{close:?}");
        }
    }
}
