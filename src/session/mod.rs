//! One chat connection's state machine: handshake, alternating turns, immediate acks, the end.
//!
//! A [`Session`] drives a `TcpStream` with blocking I/O on the thread that runs it, which reads.
//! This side's messages come from a [`Responder`] that answers at once (the echo), or from a
//! front-end (the terminal, the operator console) that says them through the session's
//! [`Outbox`] when it is this side's turn, from any thread: the session's thread meanwhile waits
//! in `read`, woken by what the peer sends. Everything that happens is reported as an [`Event`]
//! to the caller, and the way the chat ended is returned as an [`Ending`]. Nothing here prints.
//! Other threads end a session through its [`Stopper`].

use std::borrow::Cow;
use std::io;
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

mod duplex;
mod endings;
mod handshake;
mod outbox;
mod probes;
mod transport;
mod turns;

use endings::Fault;
pub use endings::Stopper;
pub use handshake::{Hello, STRANGER_NOTICE, Welcome};
use transport::Awaited;

pub use crate::ending::{Ending, StopReason};
use crate::protocol::{DEFAULT_MAX_IN_FLIGHT, DUPLEX_VERSION, Frame, ProtocolError, VERSION};
use crate::wire::{Dialect, FrameReader, Opening};
use outbox::Floor;
pub use outbox::{Outbox, Speech, Unsaid};
// Reasons come from the peer and end up on a terminal: they are shown defused.
use crate::text::sanitize;

/// Whose turn it is to send a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Turn {
    /// This side sends next.
    Mine,
    /// The peer sends next.
    Peer,
}

/// What a session does with each message it receives before that message's ACK goes out (a
/// transcript that must have it on disk first).
pub struct Journal(pub Box<JournalFn>);

/// The function a [`Journal`] calls with each message.
pub type JournalFn = dyn FnMut(&[u8]) + Send;

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Journal")
    }
}

/// Answers the peer's messages without a person: the answer to each goes out in the same write
/// as its ACK, so the peer is woken once for both (with two writes, the second would land inside
/// the peer's measured round trip).
pub trait Responder {
    /// The answer to `message`, known the moment it arrives. An answer that cannot be sent (too
    /// long for the peer) ends the chat: a responder has nothing else to say.
    fn answer<'m>(&mut self, message: &'m [u8]) -> Cow<'m, [u8]>;
}

/// Answers every message with the same bytes, as `server --echo` does.
#[derive(Debug, Default)]
pub struct EchoResponder;

impl Responder for EchoResponder {
    fn answer<'m>(&mut self, message: &'m [u8]) -> Cow<'m, [u8]> {
        Cow::Borrowed(message)
    }
}

/// Something that happened in a session, for the front-end to show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event<'a> {
    /// This side's turn began: its front-end may say something through the [`Outbox`]. With a
    /// responder, the answer is already out when this is reported, and nothing more may be said.
    MyTurn,
    /// The peer acknowledged a message; `rtt` runs from its write to the ACK's arrival.
    Acked {
        /// Round-trip time of the message and its ACK.
        rtt: Duration,
        /// Which of this side's messages it was, counting from 1 (in a duplex chat, several may
        /// be in flight, and a front-end names the one acknowledged).
        number: u64,
    },
    /// The chat ended before the peer acknowledged the last message: it may never have been
    /// read.
    Unacknowledged,
    /// A message arrived (its ACK has already been sent).
    Received(&'a [u8]),
    /// This side's message went out: reported with its ACK for a front-end's message, and right
    /// after the message it answers for a responder's answer (which went out with that ACK).
    Sent(&'a [u8]),
    /// The responder's answer is longer than the peer accepts; it was not sent, and the chat
    /// ends.
    TooLong {
        /// Its length in bytes.
        len: usize,
        /// The peer's limit.
        max: usize,
    },
    /// The responder's answer cannot travel in the peer's protocol (why); it was not sent, and
    /// the chat ends.
    Unsendable(&'static str),
}

/// Time limits on the peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Bound on the handshake and on any frame once its first byte has arrived.
    pub handshake: Duration,
    /// Bound on the peer's turn (and on waiting for an ACK); `None` waits forever.
    pub idle: Option<Duration>,
    /// Once a chat runs: after this long without a byte from the peer, it is sent PING; after as
    /// long again without one, it is taken for dead. `None` sends no PING (PINGs are still
    /// answered).
    pub heartbeat: Option<Duration>,
}

/// Default for [`Timeouts::heartbeat`]: a dead peer is noticed within a minute, for the cost of
/// a 5-byte frame each way per half-minute of silence.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(30);

impl Default for Timeouts {
    fn default() -> Timeouts {
        Timeouts {
            handshake: Duration::from_secs(10),
            idle: None,
            heartbeat: Some(DEFAULT_HEARTBEAT),
        }
    }
}

/// One chat connection, from handshake to end.
#[derive(Debug)]
pub struct Session {
    /// The socket, read by this session's thread only; every write goes through `outbox`.
    stream: TcpStream,
    reader: FrameReader,
    outbox: Arc<Outbox>,
    timeouts: Timeouts,
    /// The read timeout the socket has now, so it is only changed when it must be.
    read_timeout: Option<Option<Duration>>,
    /// When the first byte of a frame not yet complete arrived.
    frame_started: Option<Instant>,
    max_message: usize,
    /// True once this is known to be the server's end, which may not receive server notices.
    is_server: bool,
    /// True once [`Session::run`] started: PING and PONG are only part of a running chat.
    chatting: bool,
    /// When the peer last sent a byte.
    last_heard: Instant,
    /// When the PING not yet answered went out.
    ping_sent: Option<Instant>,
    /// The round trip of an ACK whose report waits until the message that came with it has
    /// been acknowledged.
    held_ack: Option<Duration>,
    /// Called with each message received, before its ACK.
    journal: Option<Journal>,
    stopper: Arc<Stopper>,
    /// Free order: either side sends at any time (protocol version 2).
    duplex: bool,
    /// In a duplex chat, most messages the peer may have unacknowledged by this side.
    max_in_flight: usize,
    /// How many of this side's messages the peer has acknowledged.
    acks: u64,
}

impl Session {
    /// Wraps a connected stream; `max_message` is the largest message this side accepts.
    ///
    /// Sets `TCP_NODELAY`: each frame goes out in one write, so there is nothing for Nagle's
    /// algorithm to coalesce, only a delayed-ACK stall to suffer.
    pub fn new(
        stream: TcpStream,
        max_message: usize,
        timeouts: Timeouts,
        stopper: Arc<Stopper>,
    ) -> io::Result<Session> {
        stream.set_nodelay(true)?;
        stream.set_write_timeout(Some(timeouts.handshake))?;
        let outbox = Arc::new(Outbox::new(stream.try_clone()?, max_message));
        Ok(Session {
            stream,
            reader: FrameReader::new(max_message),
            outbox,
            timeouts,
            read_timeout: None,
            frame_started: None,
            max_message,
            is_server: false,
            chatting: false,
            last_heard: Instant::now(),
            ping_sent: None,
            held_ack: None,
            journal: None,
            stopper,
            duplex: false,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            acks: 0,
        })
    }

    /// True when the handshake set up a free-order chat.
    pub fn is_duplex(&self) -> bool {
        self.duplex
    }

    /// In a duplex chat, the most messages the peer may have sent that this side has not yet
    /// acknowledged; one more is a violation (the peer is flooding).
    pub fn set_max_in_flight(&mut self, max: usize) {
        self.max_in_flight = max;
    }

    /// Takes `bytes` the peer sent before the session began (read while it waited in line) as
    /// the first bytes read.
    pub fn preload(&mut self, bytes: &[u8]) {
        self.reader.push(bytes);
    }

    /// Has `journal` called with each message received, before its ACK goes out.
    pub fn set_journal(&mut self, journal: Journal) {
        self.journal = Some(journal);
    }

    /// The outbox through which a front-end speaks for this side (see [`Event::MyTurn`]).
    pub fn outbox(&self) -> Arc<Outbox> {
        Arc::clone(&self.outbox)
    }

    /// Reads and writes `dialect` from now on.
    fn set_dialect(&mut self, dialect: Dialect) {
        self.reader.set_dialect(dialect);
        self.outbox.lock().dialect = dialect;
    }
}

#[cfg(test)]
mod tests;
