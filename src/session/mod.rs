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

mod outbox;

pub use crate::ending::{Ending, StopReason};
use crate::protocol::{Frame, ProtocolError, VERSION};
use crate::wire::{Dialect, FrameReader, Opening};
use outbox::Floor;
pub use outbox::{Outbox, Speech, Unsaid};
// Reasons come from the peer and end up on a terminal: they are shown defused.
use crate::text::sanitize;

/// How long a closing side keeps reading after its last frame, so the peer's last bytes do not
/// turn the close into a reset that could destroy that frame before the peer reads it.
const LINGER: Duration = Duration::from_millis(200);

/// Whose turn it is to send a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Turn {
    /// This side sends next.
    Mine,
    /// The peer sends next.
    Peer,
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
    /// This side's turn began: its front-end may say something through the [`Outbox`].
    MyTurn,
    /// The peer acknowledged the last message; `rtt` runs from its write to the ACK's arrival.
    Acked {
        /// Round-trip time of the message and its ACK.
        rtt: Duration,
    },
    /// The chat ended before the peer acknowledged the last message: it may never have been
    /// read.
    Unacknowledged,
    /// A message arrived (its ACK has already been sent).
    Received(&'a [u8]),
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

/// Lets other threads end a session that may be blocked in a read.
#[derive(Debug)]
pub struct Stopper {
    reason: Mutex<Option<StopReason>>,
    stream: TcpStream,
}

impl Stopper {
    /// A stopper for the session that will run over `stream`.
    pub fn new(stream: &TcpStream) -> io::Result<Arc<Stopper>> {
        Ok(Arc::new(Stopper {
            reason: Mutex::new(None),
            stream: stream.try_clone()?,
        }))
    }

    /// Asks the session to end; the first reason given wins.
    ///
    /// Shutting the read half makes a blocked `read` return at once, while the write half stays
    /// open for the session's last frame.
    pub fn stop(&self, reason: StopReason) {
        self.reason.lock().get_or_insert(reason);
        let _ = self.stream.shutdown(Shutdown::Read);
    }

    /// Closes both halves at once: for a session that does not finish on its own in time.
    pub fn force_close(&self) {
        let _ = self.stream.shutdown(Shutdown::Both);
    }

    /// The reason given to [`Stopper::stop`], if any.
    pub fn reason(&self) -> Option<StopReason> {
        self.reason.lock().clone()
    }
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

/// How far the read timeout already set on the socket may be from the one wanted and still be
/// kept: resetting it costs a system call per read, while a read that wakes a little early only
/// loops once more, and one that wakes a millisecond late harms nobody.
const TIMEOUT_SLACK: Duration = Duration::from_millis(1);

/// The client's HELLO, once the server has read and accepted it (for a legacy client, which sends
/// none, what stands for it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// The client's name (may be empty; a legacy client has none).
    pub name: String,
    /// Largest message the client accepts.
    pub max_message: usize,
    /// The protocol the client speaks.
    pub dialect: Dialect,
}

/// The line a connection that speaks neither protocol is sent before it is closed.
pub const STRANGER_NOTICE: &str = "This is a client_server_chat server. It speaks the \
client_server_chat protocol (see its PROTOCOL.md) and the original line protocol \
(\"msg: <text>\" and an empty line). Connect with: client_server_chat client HOST PORT\n";

/// The server's WELCOME, as the client sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Welcome {
    /// The server's number for this session.
    pub session_id: u32,
    /// The server's name (may be empty).
    pub server_name: String,
    /// Largest message the server accepts.
    pub max_message: usize,
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
    stopper: Arc<Stopper>,
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
            stopper,
        })
    }

    /// Takes `bytes` the peer sent before the session began (read while it waited in line) as
    /// the first bytes read.
    pub fn preload(&mut self, bytes: &[u8]) {
        self.reader.push(bytes);
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

    /// Client side: says HELLO, then waits (reporting each place in line to `on_wait`) until the
    /// server welcomes it or turns it away.
    pub fn client_handshake(
        &mut self,
        name: &str,
        on_wait: &mut dyn FnMut(u32),
    ) -> Result<Welcome, Ending> {
        let hello = Frame::Hello {
            version: VERSION,
            max_message: self.wire_limit(),
            name: name.to_string(),
        };
        self.send(&hello).map_err(|e| self.fail(e))?;
        loop {
            // Waiting in line may take any time; only a stalled frame is cut off.
            match self
                .recv(None, Awaited::Handshake)
                .map_err(|e| self.fail(e))?
            {
                Frame::Waiting { position } => on_wait(position),
                Frame::Welcome {
                    session_id,
                    max_message,
                    name,
                } => {
                    self.outbox.lock().peer_max = max_message as usize;
                    return Ok(Welcome {
                        session_id,
                        server_name: name,
                        max_message: max_message as usize,
                    });
                }
                other => {
                    let fault = self.terminal_or_unexpected(other);
                    return Err(self.fail(fault));
                }
            }
        }
    }

    /// Client side, instead of the handshake: speaks the original line protocol from now on, to
    /// an original server (which has no handshake; the client's first message opens the chat).
    pub fn speak_legacy(&mut self) {
        self.set_dialect(Dialect::Legacy);
    }

    /// Server side: tells from the first bytes which protocol the client speaks, all within the
    /// handshake timeout. A client of ours must send HELLO, whose version is checked and which is
    /// answered with WELCOME and this session's number; a legacy client's first message is left
    /// for [`Session::run`]. A connection that speaks neither is sent [`STRANGER_NOTICE`].
    pub fn server_handshake(
        &mut self,
        session_id: u32,
        server_name: &str,
    ) -> Result<Hello, Ending> {
        self.is_server = true;
        match self.identify().map_err(|e| self.fail(e))? {
            Dialect::Frames => {}
            Dialect::Legacy => {
                self.set_dialect(Dialect::Legacy);
                return Ok(Hello {
                    name: String::new(),
                    max_message: self.max_message,
                    dialect: Dialect::Legacy,
                });
            }
        }
        let frame = self.recv(Some(self.timeouts.handshake), Awaited::Handshake);
        let hello = match frame.map_err(|e| self.fail(e))? {
            Frame::Hello {
                version,
                max_message,
                name,
            } => {
                if version != VERSION {
                    return Err(self.fail(Fault::Violation(format!(
                        "unsupported protocol version {version} (this server speaks {VERSION})"
                    ))));
                }
                Hello {
                    name,
                    max_message: max_message as usize,
                    dialect: Dialect::Frames,
                }
            }
            other => {
                return Err(self.fail(Fault::Violation(format!(
                    "expected HELLO, got {}",
                    other.name()
                ))));
            }
        };
        self.outbox.lock().peer_max = hello.max_message;
        let welcome = Frame::Welcome {
            session_id,
            max_message: self.wire_limit(),
            name: server_name.to_string(),
        };
        self.send(&welcome).map_err(|e| self.fail(e))?;
        Ok(hello)
    }

    /// Runs the chat from the given turn until it ends, and says how it ended.
    ///
    /// The peer's messages are acknowledged before `events` hears of them, so the time a
    /// front-end takes to print never counts in the peer's round trip.
    ///
    /// With a `responder`, this side answers each message at once and never waits for a
    /// front-end; without one, [`Event::MyTurn`] tells the front-end to speak through the
    /// [`Outbox`].
    pub fn run(
        &mut self,
        first: Turn,
        mut responder: Option<&mut dyn Responder>,
        events: &mut dyn FnMut(Event<'_>),
    ) -> Ending {
        self.chatting = true;
        let mut turn = first;
        loop {
            let next = match turn {
                Turn::Mine => self.my_turn(events),
                Turn::Peer => self.peer_turn(responder.as_mut().map(|r| &mut **r as _), events),
            };
            match next {
                Ok(t) => turn = t,
                Err(fault) => {
                    self.report_held_ack(events);
                    if matches!(self.outbox.lock().floor, Floor::Sent(_)) {
                        events(Event::Unacknowledged);
                    }
                    return self.fail(fault);
                }
            }
        }
    }

    /// Client side, for a latency probe after the handshake: sends PING and waits at most
    /// `limit` for the PONG. Returns the round trip, from just before the PING's write to the
    /// arrival of the PONG's bytes. PINGs from the server are answered meanwhile.
    pub fn ping(&mut self, limit: Duration) -> Result<Duration, Ending> {
        let probe = self.send(&Frame::Ping).and_then(|sent_at| {
            self.answer(limit, Awaited::Pong, |frame| {
                matches!(frame, Frame::Pong).then_some(())
            })?;
            Ok(self.last_heard.saturating_duration_since(sent_at))
        });
        probe.map_err(|fault| self.fail(fault))
    }

    /// Client side, for a latency probe after the handshake, against a server that echoes
    /// (`server --echo`): sends `message`, waits at most `limit` for its ACK and then for the
    /// echo, which it acknowledges. Returns the message's round trip, as [`Event::Acked`] has it.
    pub fn echo_probe(&mut self, message: Vec<u8>, limit: Duration) -> Result<Duration, Ending> {
        let refusal = self.outbox.lock().refusal(&message);
        if let Err(Unsaid::TooLong { len, max }) = refusal {
            let reason = format!("a probe of {len} bytes is over the server's limit of {max}");
            return Err(self.fail(Fault::Done(Ending::Violation(reason))));
        }
        let probe = self.send(&Frame::Message(message)).and_then(|sent_at| {
            self.answer(limit, Awaited::Ack, |frame| {
                matches!(frame, Frame::Ack).then_some(())
            })?;
            let rtt = self.last_heard.saturating_duration_since(sent_at);
            self.answer(limit, Awaited::Echo, |frame| {
                matches!(frame, Frame::Message(_)).then_some(())
            })?;
            self.send(&Frame::Ack)?;
            Ok(rtt)
        });
        probe.map_err(|fault| self.fail(fault))
    }

    /// Client side, between probes: listens for `pause` (answering PINGs, noticing a goodbye or
    /// a stop at once) without sending anything.
    pub fn pause(&mut self, pause: Duration) -> Result<(), Ending> {
        let until = Instant::now() + pause;
        match self.answer(pause, Awaited::Nothing, |_| None::<()>) {
            // The only way out of an answer that accepts nothing: the time is up, and not in
            // the middle of a frame (a stalled frame is the peer's fault).
            Err(Fault::Timeout { .. })
                if Instant::now() >= until && !self.reader.has_buffered() =>
            {
                Ok(())
            }
            Err(fault) => Err(self.fail(fault)),
            Ok(()) => Ok(()),
        }
    }

    /// Client side: ends the chat with END, as `end` typed by the user would.
    pub fn end(&mut self) -> Ending {
        match self.send(&Frame::End) {
            Ok(_) => self.fail(Fault::Done(Ending::EndedByMe)),
            Err(fault) => self.fail(fault),
        }
    }

    /// Reads frames for at most `limit` until `wanted` accepts one; PINGs are answered, goodbyes
    /// and anything else end the wait as they would end a turn.
    fn answer<T>(
        &mut self,
        limit: Duration,
        awaited: Awaited,
        wanted: impl Fn(&Frame) -> Option<T>,
    ) -> Result<T, Fault> {
        let until = Instant::now() + limit;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            let frame = match self.recv(Some(left), awaited) {
                // Named with the whole limit, not what was left of it after a PING.
                Err(Fault::Timeout { .. }) if !self.reader.has_buffered() => {
                    return Err(awaited.timed_out(limit.as_secs_f64()));
                }
                frame => frame?,
            };
            if let Some(found) = wanted(&frame) {
                return Ok(found);
            }
            match frame {
                Frame::Ping => {
                    self.send(&Frame::Pong)?;
                }
                other => return Err(self.terminal_or_unexpected(other)),
            }
        }
    }

    /// Waits for enough of the client's first bytes to tell its protocol.
    fn identify(&mut self) -> Result<Dialect, Fault> {
        let handshake = self.timeouts.handshake;
        let limit = (handshake, Instant::now() + handshake);
        loop {
            match crate::wire::identify(self.reader.buffered()) {
                Opening::Speaks(dialect) => return Ok(dialect),
                Opening::Stranger => {
                    let first =
                        sanitize(&self.reader.buffered()[..8.min(self.reader.buffered().len())]);
                    let _ = self.outbox.lock().write_raw(STRANGER_NOTICE.as_bytes());
                    return Err(Fault::Done(Ending::Violation(format!(
                        "speaks neither protocol (it began with \"{first}\"); it was told what this server speaks"
                    ))));
                }
                Opening::Undecided => {
                    match self.read_more(Some(limit), Awaited::Handshake) {
                        Ok(()) => {}
                        // The start of `msg: `: most likely an original client, which must not
                        // be sent a binary ERROR.
                        Err(Fault::Timeout { here, .. }) if self.reader.has_buffered() => {
                            return Err(Fault::Done(Ending::TimedOut(here)));
                        }
                        Err(fault) => return Err(fault),
                    }
                }
            }
        }
    }

    /// This side's message limit as HELLO and WELCOME carry it.
    fn wire_limit(&self) -> u32 {
        u32::try_from(self.max_message).unwrap_or(u32::MAX)
    }

    /// This side's turn: the front-end says something through the outbox, from this thread (in
    /// the event) or another, while this thread waits for what the peer sends. The ACK of the
    /// message ends the turn; a goodbye, a PING, the front-end's END or a stop wake the wait too.
    /// There is no limit on this side's own turn (the heartbeat keeps the peer known alive).
    fn my_turn(&mut self, events: &mut dyn FnMut(Event<'_>)) -> Result<Turn, Fault> {
        self.outbox.lock().floor = Floor::Open;
        events(Event::MyTurn);
        let rtt = self.await_ack(None)?;
        self.report_ack(rtt, events);
        Ok(Turn::Peer)
    }

    fn peer_turn(
        &mut self,
        responder: Option<&mut dyn Responder>,
        events: &mut dyn FnMut(Event<'_>),
    ) -> Result<Turn, Fault> {
        self.outbox.lock().floor = Floor::Peer;
        // A message that came with the last ACK is answered before that ACK is reported; with
        // nothing here yet, the report goes out before the wait.
        let frame = match self.ready_frame()? {
            Some(frame) => frame,
            None => {
                self.report_held_ack(events);
                self.recv(self.timeouts.idle, Awaited::Message)?
            }
        };
        let Frame::Message(message) = frame else {
            return Err(self.terminal_or_unexpected(frame));
        };
        let mut writer = self.outbox.lock();
        writer.clear();
        writer.encode(&Frame::Ack);
        let answer = responder.map(|responder| responder.answer(&message));
        let refusal = match answer.as_deref().map(|answer| writer.refusal(answer)) {
            Some(Ok(())) => {
                writer.encode_message(answer.as_deref().unwrap_or_default());
                None
            }
            Some(Err(unsaid)) => Some(unsaid),
            None => None,
        };
        let sent_at = writer.write_buf();
        if answer.is_some() && refusal.is_none() {
            writer.floor = sent_at.as_ref().map_or(Floor::Peer, |&at| Floor::Sent(at));
        }
        drop(writer);
        let sent = sent_at.map_err(|e| self.io_fault(e));
        if answer.is_some() && refusal.is_none() {
            // The answer is out: its ACK is awaited before anything is reported, so that the
            // time this side takes to report is in neither round trip it measures.
            let acked = sent.and_then(|_| self.await_ack(self.timeouts.idle));
            self.report_held_ack(events);
            events(Event::Received(&message));
            events(Event::MyTurn);
            self.report_ack(acked?, events);
            return Ok(Turn::Peer);
        }
        // These reports run after the ACK went out: a slow front-end never delays it.
        self.report_held_ack(events);
        sent?;
        events(Event::Received(&message));
        match refusal {
            None => Ok(Turn::Mine),
            Some(unsaid) => {
                match unsaid {
                    Unsaid::TooLong { len, max } => events(Event::TooLong { len, max }),
                    Unsaid::Unsendable(why) => events(Event::Unsendable(why)),
                    _ => {}
                }
                self.send(&Frame::End)?;
                Err(Fault::Done(Ending::EndedByMe))
            }
        }
    }

    /// Reports the ACK whose report [`Session::report_ack`] held back, if any.
    fn report_held_ack(&mut self, events: &mut dyn FnMut(Event<'_>)) {
        if let Some(rtt) = self.held_ack.take() {
            events(Event::Acked { rtt });
        }
    }

    /// Waits at most `idle` for the ACK of this side's message, which is out or about to go out
    /// (an ACK before it is out is the peer's violation); returns its round trip, from just
    /// before the message's write to the arrival of the ACK's bytes.
    fn await_ack(&mut self, idle: Option<Duration>) -> Result<Duration, Fault> {
        let frame = self.recv(idle, Awaited::Ack)?;
        let mut writer = self.outbox.lock();
        match (frame, writer.floor) {
            // The front-end said END; whatever the peer sent since (an original server ACKs the
            // `end` it was sent) comes too late to matter.
            (_, Floor::Closed) => Err(Fault::Done(Ending::EndedByMe)),
            (Frame::Ack, Floor::Sent(sent_at)) => {
                writer.floor = Floor::Peer;
                Ok(self.last_heard.saturating_duration_since(sent_at))
            }
            (other, _) => {
                drop(writer);
                Err(self.terminal_or_unexpected(other))
            }
        }
    }

    /// Reports an ACK's round trip, or holds the report when the peer's next message came with
    /// the ACK (an echo, a quick answer): that message is acknowledged first, so that printing
    /// this report never delays it.
    fn report_ack(&mut self, rtt: Duration, events: &mut dyn FnMut(Event<'_>)) {
        if self.reader.has_buffered() {
            self.held_ack = Some(rtt);
        } else {
            events(Event::Acked { rtt });
        }
    }

    /// Reads the next frame of the chat. `idle` bounds the wait for it (PINGs do not count);
    /// once a frame has begun, it must be complete within the handshake timeout (a deadline, not
    /// a per-read limit), so a peer cannot hold a worker by sending half a frame, or a frame one
    /// byte at a time. `awaited` names what is read, for the timeout's message.
    fn recv(&mut self, idle: Option<Duration>, awaited: Awaited) -> Result<Frame, Fault> {
        // Set at the first wait: a frame already read (an ACK that came with the answer) needs
        // no clock.
        let mut deadline = None;
        loop {
            if let Some(frame) = self.ready_frame()? {
                return Ok(frame);
            }
            let idle =
                *deadline.get_or_insert_with(|| idle.map(|limit| (limit, Instant::now() + limit)));
            self.read_more(idle, awaited)?;
        }
    }

    /// The next whole frame already read that is not part of the heartbeat, if any; reads
    /// nothing.
    fn ready_frame(&mut self) -> Result<Option<Frame>, Fault> {
        while let Some(frame) = self.next_frame()? {
            if let Some(frame) = self.keep_alive(frame)? {
                return Ok(Some(frame));
            }
        }
        Ok(None)
    }

    /// The next whole frame already read, if any.
    fn next_frame(&mut self) -> Result<Option<Frame>, Fault> {
        match self.reader.next_buffered() {
            Ok(Some(frame)) => {
                self.frame_started = None;
                Ok(Some(frame))
            }
            Ok(None) => Ok(None),
            Err(e) => Err(Fault::Violation(e.to_string())),
        }
    }

    /// Answers a PING and swallows a PONG while the chat runs; any other frame is handed back.
    fn keep_alive(&mut self, frame: Frame) -> Result<Option<Frame>, Fault> {
        match frame {
            Frame::Ping if self.chatting => self.send(&Frame::Pong).map(|_| None),
            Frame::Pong if self.chatting => Ok(None),
            frame => Ok(Some(frame)),
        }
    }

    /// Notes that the peer is alive.
    fn heard(&mut self) {
        self.last_heard = Instant::now();
        self.ping_sent = None;
    }

    /// When the heartbeat must act next: send PING, or give up on the peer if one is unanswered.
    fn heartbeat_due(&self) -> Option<Instant> {
        let interval = self.timeouts.heartbeat.filter(|_| self.chatting)?;
        if self.reader.dialect() == Dialect::Legacy {
            return None;
        }
        Some(self.ping_sent.unwrap_or(self.last_heard) + interval)
    }

    /// Sends PING, or, when the last one went unanswered, ends the chat: the peer (or the
    /// network to it) is gone without a word, which TCP alone would not notice for hours.
    fn beat(&mut self) -> Result<(), Fault> {
        if self.ping_sent.is_some() {
            let interval = self.timeouts.heartbeat.unwrap_or_default().as_secs_f64();
            return Err(Fault::Timeout {
                to_peer: format!("no answer to PING within {interval} s"),
                here: format!(
                    "the other side stopped answering (no answer to PING within {interval} s)"
                ),
            });
        }
        self.ping_sent = Some(self.send(&Frame::Ping)?);
        Ok(())
    }

    /// True when the frame begun in the buffer has been arriving for too long.
    fn frame_overdue(&mut self) -> bool {
        let started = *self.frame_started.get_or_insert_with(Instant::now);
        started.elapsed() >= self.timeouts.handshake
    }

    /// Reads once more for [`Session::recv`], under its time limits: `idle` is the limit on the
    /// whole wait and the deadline it gives; a frame begun has its own. Sends PINGs while it
    /// waits.
    fn read_more(
        &mut self,
        idle: Option<(Duration, Instant)>,
        awaited: Awaited,
    ) -> Result<(), Fault> {
        loop {
            let partial = self.reader.has_buffered();
            let now = Instant::now();
            let deadline = if partial {
                if self.frame_overdue() {
                    return Err(self.stalled());
                }
                self.frame_started
                    .map(|started| started + self.timeouts.handshake)
            } else {
                let beat = self.heartbeat_due();
                if beat.is_some_and(|due| due <= now) {
                    self.beat()?;
                    continue;
                }
                if let Some((limit, due)) = idle
                    && due <= now
                {
                    return Err(awaited.timed_out(limit.as_secs_f64()));
                }
                beat.into_iter().chain(idle.map(|(_, due)| due)).min()
            };
            self.set_read_timeout(deadline.map(|due| due.saturating_duration_since(now)))?;
            match self.reader.fill(&mut self.stream) {
                Ok(0) => return Err(self.closed(partial)),
                Ok(_) => {
                    self.heard();
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // The deadlines above decide what a timeout means.
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    if let Some(reason) = self.stopper.reason() {
                        return Err(Fault::Stop(reason));
                    }
                }
                Err(e) => return Err(self.io_fault(e)),
            }
        }
    }

    /// Bounds the next read by `limit`, keeping the timeout already set when it is close enough
    /// (see [`TIMEOUT_SLACK`]).
    fn set_read_timeout(&mut self, limit: Option<Duration>) -> Result<(), Fault> {
        let close_enough = match (self.read_timeout, limit) {
            (Some(None), None) => true,
            (Some(Some(set)), Some(limit)) => set.abs_diff(limit) <= TIMEOUT_SLACK,
            _ => false,
        };
        if close_enough {
            return Ok(());
        }
        // A zero timeout means "none" to the socket; the deadline has passed anyway.
        let limit = limit.map(|limit| limit.max(Duration::from_micros(1)));
        self.stream.set_read_timeout(limit).map_err(Fault::Io)?;
        self.read_timeout = Some(limit);
        Ok(())
    }

    fn stalled(&self) -> Fault {
        let reason = format!(
            "a frame took more than {} s to arrive",
            self.timeouts.handshake.as_secs_f64()
        );
        Fault::Timeout {
            to_peer: reason.clone(),
            here: reason,
        }
    }

    /// The fault for a connection that reached end of stream.
    fn closed(&self, mid_frame: bool) -> Fault {
        match self.stopper.reason() {
            Some(reason) => Fault::Stop(reason),
            // The front-end said END, which woke this read.
            None if self.outbox.lock().floor == Floor::Closed => Fault::Done(Ending::EndedByMe),
            None if mid_frame => Fault::Violation(ProtocolError::Truncated.to_string()),
            // The original program ends a chat by closing the connection.
            None if self.reader.dialect() == Dialect::Legacy => Fault::Done(Ending::PeerEnded),
            None => Fault::Done(Ending::PeerVanished),
        }
    }

    /// An I/O error is the stop's doing when a stop was asked for.
    fn io_fault(&self, e: io::Error) -> Fault {
        match self.stopper.reason() {
            Some(reason) => Fault::Stop(reason),
            None => Fault::Io(e),
        }
    }

    /// What a frame that is not the expected one means: a goodbye, or a protocol violation.
    fn terminal_or_unexpected(&mut self, frame: Frame) -> Fault {
        match frame {
            Frame::End => {
                // To a legacy peer `end` is a message like any other, so it is owed its ACK.
                if self.reader.dialect() == Dialect::Legacy {
                    let _ = self.send(&Frame::Ack);
                }
                Fault::Done(Ending::PeerEnded)
            }
            Frame::Error(reason) => Fault::Done(Ending::PeerError(reason)),
            Frame::Shutdown if !self.is_server => Fault::Done(Ending::ServerShutdown),
            Frame::Kicked(reason) if !self.is_server => Fault::Done(Ending::Kicked(reason)),
            Frame::Full if !self.is_server => Fault::Done(Ending::ServerFull),
            Frame::Message(_) => Fault::Violation("MESSAGE out of turn".into()),
            Frame::Ack => Fault::Violation("ACK with no MESSAGE to acknowledge".into()),
            other => Fault::Violation(format!("unexpected {} frame", other.name())),
        }
    }

    /// Writes one frame with a single write; returns the instant taken just before the write,
    /// where a round trip starts.
    fn send(&mut self, frame: &Frame) -> Result<Instant, Fault> {
        let sent = self.outbox.lock().send(frame);
        sent.map_err(|e| self.io_fault(e))
    }

    /// Ends the session: tells the peer why where there is something to tell, closes the
    /// connection, and turns the fault into the [`Ending`] the caller sees.
    fn fail(&mut self, fault: Fault) -> Ending {
        // Nothing a front-end says from now on is sent.
        self.outbox.lock().floor = Floor::Closed;
        let (goodbye, ending) = match fault {
            Fault::Done(ending) => (None, ending),
            Fault::Stop(reason) => {
                let frame = match &reason {
                    StopReason::Shutdown => Frame::Shutdown,
                    StopReason::Kick(why) => Frame::Kicked(why.clone()),
                    StopReason::Interrupt => Frame::End,
                };
                (Some(frame), Ending::Stopped(reason))
            }
            Fault::Violation(reason) => (
                Some(Frame::Error(reason.clone())),
                Ending::Violation(reason),
            ),
            Fault::Timeout { to_peer, here } => {
                (Some(Frame::Error(to_peer)), Ending::TimedOut(here))
            }
            Fault::Io(e) => (None, Ending::Io(e)),
        };
        if let Some(frame) = goodbye {
            // The peer may already be gone; its absence is the ending we report anyway.
            let _ = self.send(&frame);
        }
        self.close();
        ending
    }

    /// Sends FIN, then reads briefly until the peer closes too, so that unread bytes do not
    /// make the kernel answer with a reset that could destroy our last frame in flight.
    fn close(&mut self) {
        let _ = self.stream.shutdown(Shutdown::Write);
        let deadline = Instant::now() + LINGER;
        let mut scratch = [0u8; 1024];
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            if left.is_zero() || self.stream.set_read_timeout(Some(left)).is_err() {
                break;
            }
            match io::Read::read(&mut self.stream, &mut scratch) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    }
}

/// What [`Session::recv`] waits for, which its timeout names.
#[derive(Debug, Clone, Copy)]
enum Awaited {
    /// The other side's part of the handshake: the client's first bytes, or WELCOME.
    Handshake,
    /// The peer's message, on its turn.
    Message,
    /// The ACK of this side's message.
    Ack,
    /// The PONG of a probe.
    Pong,
    /// The echo of a probe.
    Echo,
    /// Nothing: a pause between probes, whose timeout is its normal end.
    Nothing,
}

impl Awaited {
    /// The timeout after `secs` seconds, told to the peer in its words and reported here in ours.
    fn timed_out(self, secs: f64) -> Fault {
        let (to_peer, here) = match self {
            Awaited::Handshake => {
                let reason = format!("no handshake within {secs} s");
                (reason.clone(), reason)
            }
            Awaited::Message => (
                format!("no message on your turn within {secs} s"),
                format!("the other side sent no message on its turn within {secs} s"),
            ),
            Awaited::Ack => (
                format!("no ACK within {secs} s"),
                format!("the other side sent no ACK within {secs} s"),
            ),
            Awaited::Pong | Awaited::Nothing => (
                format!("no PONG within {secs} s"),
                format!("the server sent no PONG within {secs} s"),
            ),
            Awaited::Echo => (
                format!("no echo within {secs} s"),
                format!(
                    "the server sent no echo within {secs} s (probing with messages needs a server started with --echo)"
                ),
            ),
        };
        Fault::Timeout { to_peer, here }
    }
}

/// Why a turn could not go on; [`Session::fail`] turns it into an [`Ending`].
#[derive(Debug)]
enum Fault {
    /// The chat is over and the peer needs no more frames.
    Done(Ending),
    /// Another thread stopped the session.
    Stop(StopReason),
    /// The peer broke the protocol.
    Violation(String),
    /// The peer was too slow: the reason as the peer is told it, and as this side reports it.
    Timeout {
        /// For the ERROR frame, in the peer's words ("your turn").
        to_peer: String,
        /// For this side's [`Ending`].
        here: String,
    },
    /// The socket failed.
    Io(io::Error),
}

#[cfg(test)]
mod tests;
