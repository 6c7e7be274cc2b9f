//! The writing half of a session: every frame this side sends goes through it, from the thread
//! that runs the session or from a front-end that speaks on this side's turn.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::net::{Shutdown, TcpStream};
use std::time::Instant;

use parking_lot::{Mutex, MutexGuard};

use crate::legacy;
use crate::protocol::{self, DEFAULT_MAX_IN_FLIGHT, Frame};
use crate::wire::Dialect;

/// What this side may say now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Floor {
    /// Not this side's turn (the handshake, the peer's turn, or no front-end speaks here).
    Peer,
    /// This side's turn: one message, or END, may be said.
    Open,
    /// This side's message went out at this instant; its ACK is awaited.
    Sent(Instant),
    /// This side said END, or the chat is over.
    Closed,
    /// A duplex chat: this side may say something at any time.
    Free,
}

/// Why [`Outbox::say`] sent nothing.
#[derive(Debug)]
pub enum Unsaid {
    /// It is not this side's turn (or its message is already out).
    NotYourTurn,
    /// The message is longer than the peer accepts.
    TooLong {
        /// Its length in bytes.
        len: usize,
        /// The peer's limit.
        max: usize,
    },
    /// The message cannot travel in the peer's protocol, for this reason.
    Unsendable(&'static str),
    /// A duplex chat's peer has not yet acknowledged as many messages as it takes in flight;
    /// the message may be said once an ACK comes.
    Busy {
        /// The peer's limit on messages in flight.
        max: usize,
    },
    /// The chat is over.
    Closed,
    /// Writing failed; the connection was closed, and the session reports how it ended.
    Failed(io::Error),
}

/// What a front-end says on its turn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Speech {
    /// Send these bytes as a message.
    Message(Vec<u8>),
    /// End the chat.
    End,
}

impl Speech {
    /// What a line a person typed says: `end` ends the chat, anything else is a message.
    pub fn from_line(line: Vec<u8>) -> Speech {
        if line == b"end" {
            Speech::End
        } else {
            Speech::Message(line)
        }
    }
}

/// The session's writing half, shared with the front-end that speaks for this side.
///
/// A front-end calls [`Outbox::say`] when the session reports [`super::Event::MyTurn`], from any
/// thread, while the session's own thread waits in `read` for what the peer sends: the ACK of
/// that message, a goodbye or a PING all wake it, so nobody polls. One lock orders every write,
/// and is held only while the frame is written to this session's socket.
#[derive(Debug)]
pub struct Outbox {
    writer: Mutex<Writer>,
}

#[derive(Debug)]
pub(super) struct Writer {
    stream: TcpStream,
    buf: Vec<u8>,
    pub(super) dialect: Dialect,
    /// The largest message the peer accepts.
    pub(super) peer_max: usize,
    pub(super) floor: Floor,
    /// The front-end's message out now, reported with its ACK.
    pub(super) said: Vec<u8>,
    /// In a duplex chat, this side's messages not yet acknowledged, oldest first: when each went
    /// out, and what a front-end said (reported with the ACK; a responder's answer, reported as
    /// it went out, has none).
    pub(super) in_flight: VecDeque<(Instant, Option<Vec<u8>>)>,
    /// The bytes of the messages in `in_flight`.
    pub(super) in_flight_bytes: usize,
    /// In a duplex chat, when this side said END: the session waits a while for the last ACKs.
    pub(super) end_said: Option<Instant>,
}

/// In a duplex chat, most bytes of messages a side keeps unacknowledged (a longer message goes
/// alone): little enough to sit in the peer's receive buffer, so that a write never waits for a
/// peer that is itself waiting to write, whose reading thread would then be stuck too.
pub const MAX_BYTES_IN_FLIGHT: usize = 64 * 1024;

impl Outbox {
    /// An outbox writing to `stream` (a clone of the session's socket).
    pub(super) fn new(stream: TcpStream, peer_max: usize) -> Outbox {
        Outbox {
            writer: Mutex::new(Writer {
                stream,
                buf: Vec::with_capacity(4096),
                dialect: Dialect::Frames,
                peer_max,
                floor: Floor::Peer,
                said: Vec::new(),
                in_flight: VecDeque::new(),
                in_flight_bytes: 0,
                end_said: None,
            }),
        }
    }

    /// Sends this side's message, or END, on this side's turn (at any time in a duplex chat,
    /// while the peer takes more messages in flight).
    ///
    /// The round-trip clock of a message starts just before its bytes are written. END also
    /// wakes the session, which then ends without waiting for the peer to close.
    pub fn say(&self, speech: Speech) -> Result<(), Unsaid> {
        let mut writer = self.writer.lock();
        match writer.floor {
            Floor::Open | Floor::Free => {}
            Floor::Closed => return Err(Unsaid::Closed),
            Floor::Peer | Floor::Sent(_) => return Err(Unsaid::NotYourTurn),
        }
        // In a duplex chat with messages in flight the session keeps reading after END: their
        // ACKs are still to come. Otherwise END wakes the session's read at once.
        let wake =
            speech == Speech::End && (writer.floor != Floor::Free || writer.in_flight.is_empty());
        let result = match speech {
            Speech::Message(message) => {
                writer.refusal(&message)?;
                if writer.floor == Floor::Free && !writer.has_room(message.len()) {
                    return Err(Unsaid::Busy {
                        max: DEFAULT_MAX_IN_FLIGHT,
                    });
                }
                writer.buf.clear();
                writer.encode_message(&message);
                // Set before the write: the ACK may be read on the session's thread before the
                // write returns here, and it must find the message out.
                let writer = &mut *writer;
                let now = Instant::now();
                if writer.floor == Floor::Free {
                    writer.in_flight_bytes += message.len();
                    writer.in_flight.push_back((now, Some(message)));
                } else {
                    writer.floor = Floor::Sent(now);
                    writer.said = message;
                }
                writer.stream.write_all(&writer.buf)
            }
            Speech::End => {
                if writer.floor == Floor::Free {
                    writer.end_said = Some(Instant::now());
                }
                writer.floor = Floor::Closed;
                writer.send(&Frame::End).map(|_| ())
            }
        };
        match result {
            Ok(()) => {
                if wake {
                    let _ = writer.stream.shutdown(Shutdown::Read);
                }
                Ok(())
            }
            Err(e) => {
                // A frame cut short leaves the stream unusable: close it, which wakes the
                // session to report how the chat ended.
                let _ = writer.stream.shutdown(Shutdown::Both);
                Err(Unsaid::Failed(e))
            }
        }
    }

    /// False while a duplex chat's peer has as many of this side's messages (or bytes)
    /// unacknowledged as it takes: a message of `len` bytes would be refused as
    /// [`Unsaid::Busy`].
    pub fn has_room(&self, len: usize) -> bool {
        self.writer.lock().has_room(len)
    }

    /// True while this side may say something.
    pub fn is_open(&self) -> bool {
        matches!(self.writer.lock().floor, Floor::Open | Floor::Free)
    }

    /// The writer, for the session's own frames.
    pub(super) fn lock(&self) -> MutexGuard<'_, Writer> {
        self.writer.lock()
    }
}

impl Writer {
    /// Whether a message of `len` bytes may go out now in a duplex chat: fewer than
    /// [`DEFAULT_MAX_IN_FLIGHT`] messages and [`MAX_BYTES_IN_FLIGHT`] bytes are out, or none.
    pub(super) fn has_room(&self, len: usize) -> bool {
        self.in_flight.is_empty()
            || (self.in_flight.len() < DEFAULT_MAX_IN_FLIGHT
                && self.in_flight_bytes + len <= MAX_BYTES_IN_FLIGHT)
    }

    /// The oldest message in flight, acknowledged.
    pub(super) fn acknowledged(&mut self) -> Option<(Instant, Option<Vec<u8>>)> {
        let oldest = self.in_flight.pop_front()?;
        let len = oldest.1.as_ref().map_or(0, Vec::len);
        self.in_flight_bytes = self.in_flight_bytes.saturating_sub(len);
        Some(oldest)
    }

    /// Why `message` cannot be sent to this peer.
    pub(super) fn refusal(&self, message: &[u8]) -> Result<(), Unsaid> {
        if message.len() > self.peer_max {
            return Err(Unsaid::TooLong {
                len: message.len(),
                max: self.peer_max,
            });
        }
        match self.dialect {
            Dialect::Frames => Ok(()),
            Dialect::Legacy => {
                legacy::cannot_carry(message).map_or(Ok(()), |why| Err(Unsaid::Unsendable(why)))
            }
        }
    }

    /// Writes one frame with a single write; returns the instant taken just before the write,
    /// where a round trip starts.
    pub(super) fn send(&mut self, frame: &Frame) -> io::Result<Instant> {
        self.buf.clear();
        self.encode(frame);
        self.write_buf()
    }

    /// Adds `frame` to the next write, in the peer's protocol; a frame that protocol has no
    /// form for is left out.
    pub(super) fn encode(&mut self, frame: &Frame) {
        match self.dialect {
            Dialect::Frames => frame.encode_into(&mut self.buf),
            Dialect::Legacy => {
                legacy::encode_into(frame, &mut self.buf);
            }
        }
    }

    /// Adds a message carrying `payload` to the next write, without copying it into a frame.
    pub(super) fn encode_message(&mut self, payload: &[u8]) {
        match self.dialect {
            Dialect::Frames => protocol::encode_message_into(payload, &mut self.buf),
            Dialect::Legacy => legacy::encode_message_into(payload, &mut self.buf),
        }
    }

    /// Starts the next write afresh.
    pub(super) fn clear(&mut self) {
        self.buf.clear();
    }

    /// Writes what was gathered, in one write; returns the instant taken just before it.
    /// Everything that formats or prints happens before this call or after it, so a round trip
    /// timed from that instant holds only the bytes' journey and the peer's answer.
    pub(super) fn write_buf(&mut self) -> io::Result<Instant> {
        let start = Instant::now();
        if !self.buf.is_empty() {
            self.stream.write_all(&self.buf)?;
        }
        Ok(start)
    }

    /// Writes raw bytes (the notice to a connection that speaks neither protocol).
    pub(super) fn write_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }
}
