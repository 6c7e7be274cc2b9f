//! How a chat ends, and why another thread may end it: the words both front-ends show, and what
//! the exit code is made of. A leaf below the session and the error type.

use std::fmt;
use std::io;

use crate::text::sanitize;

/// Why another thread ends a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    /// The server goes offline: the peer is sent SHUTDOWN.
    Shutdown,
    /// The operator removes the client: it is sent KICKED with this reason.
    Kick(String),
    /// The local user interrupted (Ctrl-C): the peer is sent END.
    Interrupt,
}

/// How a session ended. Each variant's `Display` is a sentence for the user.
#[derive(Debug)]
pub enum Ending {
    /// This side ended the chat (`end`, end of input).
    EndedByMe,
    /// The peer sent END.
    PeerEnded,
    /// The connection closed without an END.
    PeerVanished,
    /// The server closed the connection before it welcomed this client, without a word (its
    /// access rules keep this address out, or it is out of resources).
    NotWelcomed,
    /// Another thread stopped the session; the peer was told.
    Stopped(StopReason),
    /// The server said it is shutting down.
    ServerShutdown,
    /// The server's operator removed this client.
    Kicked(String),
    /// Every worker busy and the waiting line full.
    ServerFull,
    /// The peer reported a protocol error and closed.
    PeerError(String),
    /// The peer broke the protocol; it was sent an ERROR with this reason.
    Violation(String),
    /// The peer took too long; it was sent an ERROR saying so.
    TimedOut(String),
    /// The connection failed.
    Io(io::Error),
}

impl Ending {
    /// True when the chat ended the way a chat should: by one side's choice, told to the other.
    pub fn is_orderly(&self) -> bool {
        matches!(
            self,
            Ending::EndedByMe
                | Ending::PeerEnded
                | Ending::Stopped(_)
                | Ending::ServerShutdown
                | Ending::Kicked(_)
        )
    }
}

impl fmt::Display for Ending {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ending::EndedByMe => write!(f, "The chat has ended."),
            Ending::PeerEnded => write!(f, "The other side left the chat."),
            Ending::PeerVanished => write!(f, "The other side left the chat (connection closed)."),
            Ending::NotWelcomed => write!(
                f,
                "The server closed the connection without welcoming this client: it may not let this address in."
            ),
            Ending::Stopped(StopReason::Shutdown) => {
                write!(f, "Closed: the server is shutting down.")
            }
            Ending::Stopped(StopReason::Kick(reason)) => write!(f, "Kicked: {reason}"),
            Ending::Stopped(StopReason::Interrupt) => write!(f, "Interrupted: the chat has ended."),
            Ending::ServerShutdown => write!(f, "The server is shutting down. The chat has ended."),
            Ending::Kicked(reason) => write!(
                f,
                "The server removed you from the chat: {}",
                sanitize(reason.as_bytes())
            ),
            Ending::ServerFull => write!(f, "The server is full; try again later."),
            Ending::PeerError(reason) => write!(
                f,
                "The other side reported an error: {}",
                sanitize(reason.as_bytes())
            ),
            Ending::Violation(reason) => write!(f, "Protocol error: {reason}"),
            Ending::TimedOut(reason) => write!(f, "Timed out: {reason}"),
            Ending::Io(e) => write!(f, "Connection error: {e}"),
        }
    }
}
