//! The server: binds, accepts, keeps the waiting line and the registry of live sessions, runs each
//! session on the worker pool, and shuts everything down on request.
//!
//! What the server shows and who answers the clients is the [`Frontend`]'s business: the
//! operator console, the echo responder, or a benchmark's silent responder.

use std::collections::{BTreeMap, VecDeque};
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crossbeam_channel::{Sender, TrySendError};
use parking_lot::Mutex;

use crate::error::Error;
use crate::pool::WorkerPool;
use crate::protocol::Frame;
use crate::session::{Ending, Event, Hello, Session, Speaker, StopReason, Stopper, Timeouts, Turn};
use crate::wire::{Dialect, Opening, identify};

/// How long shutdown waits for sessions to say goodbye before it closes their sockets outright.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(500);

/// How long a notice to a waiting client may block the server.
const NOTICE_TIMEOUT: Duration = Duration::from_secs(1);

/// How long the acceptor waits for the first byte of a client that will have to wait in line,
/// to learn whether it may be sent WAITING notices. Our client sends HELLO the moment it is
/// connected, so its first byte is here at once; only a silent or legacy client costs the wait.
const FIRST_BYTE_WAIT: Duration = Duration::from_millis(100);

/// Everything the server needs besides its address.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Worker threads: how many chats run at once.
    pub workers: usize,
    /// Accepted connections that may wait for a worker; one more is told the server is full.
    pub backlog: usize,
    /// Largest message accepted from a client.
    pub max_message: usize,
    /// The name sent to clients in WELCOME.
    pub name: String,
    /// Limits on slow clients.
    pub timeouts: Timeouts,
}

impl Default for ServerConfig {
    fn default() -> ServerConfig {
        ServerConfig {
            workers: 4,
            backlog: 64,
            max_message: crate::protocol::DEFAULT_MAX_MESSAGE,
            name: String::new(),
            timeouts: Timeouts::default(),
        }
    }
}

/// What the server reports to its front-end. Session numbers (`id`) are given at accept time.
#[derive(Debug)]
pub enum ServerEvent<'a> {
    /// Every worker is busy: the client waits in line at `position`.
    Waiting {
        /// Session number.
        id: u32,
        /// Client address.
        peer: SocketAddr,
        /// Place in line, 1 being next.
        position: u32,
    },
    /// The waiting line was full: the client was told so and disconnected.
    Refused {
        /// Client address.
        peer: SocketAddr,
    },
    /// A worker took the client and the handshake succeeded.
    Connected {
        /// Session number.
        id: u32,
        /// Client address.
        peer: SocketAddr,
        /// The name the client gave (may be empty).
        name: &'a str,
        /// The protocol the client speaks.
        dialect: Dialect,
    },
    /// Something happened in a running chat.
    Session {
        /// Session number.
        id: u32,
        /// What happened.
        event: Event<'a>,
    },
    /// A chat ended (or its handshake failed, when `connected` is false).
    Ended {
        /// Session number.
        id: u32,
        /// Client address.
        peer: SocketAddr,
        /// Whether the handshake had succeeded.
        connected: bool,
        /// How it ended.
        ending: &'a Ending,
    },
}

/// The server's two faces: who answers each client, and who hears what happens.
pub trait Frontend: Send + Sync + 'static {
    /// The speaker that will answer session `id`.
    fn speaker(&self, id: u32) -> Box<dyn Speaker + Send>;
    /// Called for everything that happens; must not block for long (it runs on the workers).
    fn event(&self, event: ServerEvent<'_>);
}

/// A live session as the registry keeps it.
#[derive(Debug)]
struct Live {
    peer: SocketAddr,
    /// The client's HELLO, once the handshake is done.
    hello: OnceLock<Hello>,
    since: Instant,
    stopper: Arc<Stopper>,
    sent: AtomicU64,
    received: AtomicU64,
    my_turn: AtomicBool,
}

/// A client in the waiting line.
#[derive(Debug)]
struct Queued {
    id: u32,
    peer: SocketAddr,
    since: Instant,
    /// A clone of the stream, for WAITING and SHUTDOWN notices.
    notices: TcpStream,
    /// The position the client was last told (0: none yet).
    told_position: u32,
    /// Whether the client has shown that it speaks our frames; unknown until its first byte.
    /// Only such a client is sent notices: to a legacy client they would be noise in its lines.
    speaks_frames: Option<bool>,
}

impl Queued {
    /// True once the client is known to speak our frames; looks again, without waiting, while
    /// that is unknown.
    fn speaks_frames(&mut self) -> bool {
        if self.speaks_frames.is_none() {
            self.speaks_frames = first_byte_is_a_frame(&self.notices, None);
        }
        self.speaks_frames == Some(true)
    }
}

/// A connection on its way to a worker.
#[derive(Debug)]
struct Job {
    id: u32,
    peer: SocketAddr,
    stream: TcpStream,
}

#[derive(Debug, Default)]
struct State {
    waiting: VecDeque<Queued>,
    live: BTreeMap<u32, Arc<Live>>,
    shutting_down: bool,
}

#[derive(Debug)]
struct Shared {
    config: ServerConfig,
    local_addr: SocketAddr,
    state: Mutex<State>,
    next_id: AtomicU32,
}

/// One live session, as `/list` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionSummary {
    /// Session number.
    pub id: u32,
    /// The client's name (may be empty).
    pub name: String,
    /// The client's address.
    pub peer: SocketAddr,
    /// The protocol the client speaks.
    pub dialect: Dialect,
    /// True when it is the server's turn to answer.
    pub servers_turn: bool,
    /// Messages sent to the client.
    pub sent: u64,
    /// Messages received from the client.
    pub received: u64,
    /// Time since the connection was accepted.
    pub connected_for: Duration,
}

/// One client in the waiting line, as `/list` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaitingSummary {
    /// Session number it will have.
    pub id: u32,
    /// The client's address.
    pub peer: SocketAddr,
    /// Time since it was accepted.
    pub waited: Duration,
}

/// A bound server, ready to [`Server::serve`].
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    shared: Arc<Shared>,
}

/// Controls a running server from other threads: shutdown, the session list, kicks.
#[derive(Debug, Clone)]
pub struct ServerHandle {
    shared: Arc<Shared>,
}

impl Server {
    /// Binds to the first of `addrs` that works.
    pub fn bind(addrs: &[SocketAddr], config: ServerConfig) -> Result<Server, Error> {
        let mut last_error = None;
        for addr in addrs {
            match TcpListener::bind(addr) {
                Ok(listener) => {
                    let local_addr = listener.local_addr().map_err(Error::Io)?;
                    let shared = Arc::new(Shared {
                        config,
                        local_addr,
                        state: Mutex::new(State::default()),
                        next_id: AtomicU32::new(1),
                    });
                    return Ok(Server { listener, shared });
                }
                Err(e) => last_error = Some((*addr, e)),
            }
        }
        Err(match last_error {
            Some((addr, source)) => Error::Bind { addr, source },
            None => Error::Usage("no address to listen on".into()),
        })
    }

    /// The address actually bound (with the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local_addr
    }

    /// A handle for shutting down and inspecting the server from other threads.
    pub fn handle(&self) -> ServerHandle {
        ServerHandle {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Accepts and serves clients until [`ServerHandle::shutdown`]; returns once every worker
    /// has finished.
    pub fn serve(self, frontend: Arc<dyn Frontend>) -> Result<(), Error> {
        let config = &self.shared.config;
        let (jobs, queue) = crossbeam_channel::bounded(config.workers + config.backlog);
        let shared = Arc::clone(&self.shared);
        let worker_frontend = Arc::clone(&frontend);
        let pool = WorkerPool::spawn(config.workers, queue, move |job| {
            run_job(&shared, worker_frontend.as_ref(), job)
        })
        .map_err(Error::Io)?;
        self.accept_loop(&jobs, frontend.as_ref());
        drop(jobs);
        self.finish_sessions();
        pool.join();
        Ok(())
    }

    fn accept_loop(&self, jobs: &Sender<Job>, frontend: &dyn Frontend) {
        for conn in self.listener.incoming() {
            let stream = match conn {
                Ok(stream) => stream,
                // A connection that failed before we took it (reset, aborted) harms no one else;
                // running out of descriptors deserves a pause rather than a busy loop.
                Err(_) => {
                    if self.shared.state.lock().shutting_down {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
            };
            if !self.admit(stream, jobs, frontend) {
                return;
            }
        }
    }

    /// Queues one accepted connection, or turns it away; false once the server is shutting down.
    fn admit(&self, stream: TcpStream, jobs: &Sender<Job>, frontend: &dyn Frontend) -> bool {
        let Ok(peer) = stream.peer_addr() else {
            return true;
        };
        let _ = stream.set_nodelay(true);
        let _ = stream.set_write_timeout(Some(NOTICE_TIMEOUT));
        let config = &self.shared.config;
        // Only a client that will wait in line is waited for: one that will be refused is turned
        // away at once, the line being full.
        let must_wait = {
            let state = self.shared.state.lock();
            let occupied = state.live.len() + state.waiting.len();
            (config.workers..config.workers + config.backlog).contains(&occupied)
        };
        let speaks_frames = if must_wait {
            first_byte_is_a_frame(&stream, Some(FIRST_BYTE_WAIT))
        } else {
            None
        };
        let mut state = self.shared.state.lock();
        if state.shutting_down {
            turn_away(&stream, &Frame::Shutdown);
            return false;
        }
        let occupied = state.live.len() + state.waiting.len();
        // Out of descriptors, the clone fails: the client is told, as when the line is full.
        let refuse = |stream: &TcpStream| {
            turn_away(stream, &Frame::Full);
            frontend.event(ServerEvent::Refused { peer });
            true
        };
        let notices = match stream.try_clone() {
            Ok(notices) if occupied < config.workers + config.backlog => notices,
            _ => {
                drop(state);
                return refuse(&stream);
            }
        };
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        if let Err(TrySendError::Full(job) | TrySendError::Disconnected(job)) =
            jobs.try_send(Job { id, peer, stream })
        {
            drop(state);
            return refuse(&job.stream);
        }
        state.waiting.push_back(Queued {
            id,
            peer,
            since: Instant::now(),
            notices,
            told_position: 0,
            speaks_frames,
        });
        let position = update_positions(&mut state, config.workers);
        drop(state);
        if let Some(position) = position {
            frontend.event(ServerEvent::Waiting { id, peer, position });
        }
        true
    }

    /// After the acceptor stops: gives the sessions a moment to say goodbye, then cuts them off.
    fn finish_sessions(&self) {
        let deadline = Instant::now() + SHUTDOWN_GRACE;
        while Instant::now() < deadline {
            if self.shared.state.lock().live.is_empty() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        for live in self.shared.state.lock().live.values() {
            live.stopper.force_close();
        }
    }
}

impl ServerHandle {
    /// Stops accepting, tells every waiting and live client that the server is shutting down,
    /// and wakes every blocked thread. [`Server::serve`] returns soon after.
    pub fn shutdown(&self) {
        let mut state = self.shared.state.lock();
        if state.shutting_down {
            return;
        }
        state.shutting_down = true;
        for queued in state.waiting.drain(..) {
            turn_away(&queued.notices, &Frame::Shutdown);
        }
        for live in state.live.values() {
            live.stopper.stop(StopReason::Shutdown);
        }
        drop(state);
        // `accept` does not wake when another thread closes the listener: connect to it instead.
        let _ = TcpStream::connect_timeout(&wake_address(self.shared.local_addr), NOTICE_TIMEOUT);
    }

    /// True once [`ServerHandle::shutdown`] has been called.
    pub fn is_shutting_down(&self) -> bool {
        self.shared.state.lock().shutting_down
    }

    /// The live sessions, by number.
    pub fn sessions(&self) -> Vec<SessionSummary> {
        let state = self.shared.state.lock();
        state
            .live
            .iter()
            .map(|(&id, live)| SessionSummary {
                id,
                name: live.hello.get().map(|h| h.name.clone()).unwrap_or_default(),
                peer: live.peer,
                dialect: live.hello.get().map_or(Dialect::Frames, |h| h.dialect),
                servers_turn: live.my_turn.load(Ordering::Relaxed),
                sent: live.sent.load(Ordering::Relaxed),
                received: live.received.load(Ordering::Relaxed),
                connected_for: live.since.elapsed(),
            })
            .collect()
    }

    /// The clients waiting for a worker, first in line first.
    pub fn waiting(&self) -> Vec<WaitingSummary> {
        let state = self.shared.state.lock();
        let busy = state.live.len();
        let workers = self.shared.config.workers;
        state
            .waiting
            .iter()
            .enumerate()
            .filter(|&(index, _)| position(busy, index, workers) > 0)
            .map(|(_, q)| WaitingSummary {
                id: q.id,
                peer: q.peer,
                waited: q.since.elapsed(),
            })
            .collect()
    }

    /// Ends session `id`, telling the client `reason`; false if there is no such session.
    pub fn kick(&self, id: u32, reason: &str) -> bool {
        match self.shared.state.lock().live.get(&id) {
            Some(live) => {
                live.stopper.stop(StopReason::Kick(reason.to_string()));
                true
            }
            None => false,
        }
    }
}

/// Where to connect to wake our own `accept`: the bound address, or loopback for a wildcard.
fn wake_address(local: SocketAddr) -> SocketAddr {
    let ip = match local.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, local.port())
}

/// Sends a notice that needs no answer; a client that has gone loses nothing by missing it.
fn notify(mut stream: &TcpStream, frame: &Frame) {
    let _ = stream.write_all(&frame.encode());
}

/// Sends a last notice and closes without blocking the caller. A client whose first byte shows
/// that it speaks no frames (a legacy client, a stranger) is closed without the notice.
fn turn_away(stream: &TcpStream, frame: &Frame) {
    if first_byte_is_a_frame(stream, None) != Some(false) {
        notify(stream, frame);
    }
    close_quietly(stream);
}

/// Ends our side of a connection that was sent its last notice.
///
/// The client's HELLO is usually already here, unread; closing over unread bytes makes the kernel
/// send a reset, which can destroy the notice before the client reads it. So read what is there,
/// without waiting for more.
fn close_quietly(stream: &TcpStream) {
    let _ = stream.shutdown(std::net::Shutdown::Write);
    if stream.set_nonblocking(true).is_ok() {
        let mut scratch = [0u8; 1024];
        let _ = (&mut &*stream).read(&mut scratch);
    }
}

/// Whether the client's first byte (already here, or within `wait`) opens a frame; `None` while
/// nothing has come. Peeking leaves the byte for the session that will read it.
fn first_byte_is_a_frame(stream: &TcpStream, wait: Option<Duration>) -> Option<bool> {
    let mut first = [0u8; 1];
    let peeked = match wait {
        Some(wait) => stream
            .set_read_timeout(Some(wait))
            .and_then(|()| stream.peek(&mut first)),
        None => stream.set_nonblocking(true).and_then(|()| {
            let peeked = stream.peek(&mut first);
            stream.set_nonblocking(false)?;
            peeked
        }),
    };
    match peeked {
        // A client that has already closed needs no notices.
        Ok(0) => Some(false),
        Ok(_) => Some(matches!(identify(&first), Opening::Speaks(Dialect::Frames))),
        Err(_) => None,
    }
}

/// Tells each waiting client its place in line when it changed; returns the place of the last
/// one (the newest), if it has to wait at all.
fn update_positions(state: &mut State, workers: usize) -> Option<u32> {
    let busy = state.live.len();
    let mut newest = None;
    for (index, queued) in state.waiting.iter_mut().enumerate() {
        let position = position(busy, index, workers);
        newest = (position > 0).then_some(position);
        if position > 0 && position != queued.told_position && queued.speaks_frames() {
            notify(&queued.notices, &Frame::Waiting { position });
            queued.told_position = position;
        }
    }
    newest
}

/// The place in line (0: a worker is free for it) of the client at `index` in the waiting line,
/// with `busy` sessions live.
fn position(busy: usize, index: usize, workers: usize) -> u32 {
    u32::try_from((busy + index + 1).saturating_sub(workers)).unwrap_or(u32::MAX)
}

/// A worker's whole handling of one connection: from the waiting line to the end of the chat.
fn run_job(shared: &Shared, frontend: &dyn Frontend, job: Job) {
    let Job { id, peer, stream } = job;
    let Ok(stopper) = Stopper::new(&stream) else {
        return;
    };
    let live = Arc::new(Live {
        peer,
        hello: OnceLock::new(),
        since: Instant::now(),
        stopper: Arc::clone(&stopper),
        sent: AtomicU64::new(0),
        received: AtomicU64::new(0),
        my_turn: AtomicBool::new(false),
    });
    {
        let mut state = shared.state.lock();
        state.waiting.retain(|q| q.id != id);
        if state.shutting_down {
            // Everyone waiting was told at shutdown; this one is done.
            close_quietly(&stream);
            return;
        }
        state.live.insert(id, Arc::clone(&live));
        update_positions(&mut state, shared.config.workers);
    }
    let ending = chat(shared, frontend, id, &live, stream, stopper);
    let mut state = shared.state.lock();
    state.live.remove(&id);
    update_positions(&mut state, shared.config.workers);
    drop(state);
    if let Some((connected, ending)) = ending {
        frontend.event(ServerEvent::Ended {
            id,
            peer,
            connected,
            ending: &ending,
        });
    }
}

/// Runs the handshake and the chat; returns whether the handshake succeeded and how it ended.
fn chat(
    shared: &Shared,
    frontend: &dyn Frontend,
    id: u32,
    live: &Live,
    stream: TcpStream,
    stopper: Arc<Stopper>,
) -> Option<(bool, Ending)> {
    let config = &shared.config;
    let mut session = Session::new(stream, config.max_message, config.timeouts, stopper).ok()?;
    let hello = match session.server_handshake(id, &config.name) {
        Ok(hello) => hello,
        Err(ending) => return Some((false, ending)),
    };
    let hello = live.hello.get_or_init(|| hello);
    frontend.event(ServerEvent::Connected {
        id,
        peer: live.peer,
        name: &hello.name,
        dialect: hello.dialect,
    });
    let mut speaker = frontend.speaker(id);
    let ending = session.run(Turn::Peer, speaker.as_mut(), &mut |event| {
        match event {
            Event::MyTurn => live.my_turn.store(true, Ordering::Relaxed),
            Event::Acked { .. } => {
                live.sent.fetch_add(1, Ordering::Relaxed);
                live.my_turn.store(false, Ordering::Relaxed);
            }
            Event::Received(_) => {
                live.received.fetch_add(1, Ordering::Relaxed);
            }
            Event::TooLong { .. } | Event::Unsendable(_) | Event::Unacknowledged => {}
        }
        frontend.event(ServerEvent::Session { id, event });
    });
    Some((true, ending))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// The server's and the client's ends of a connection whose client has sent `first`, which
    /// has arrived.
    fn connection_that_said(first: &[u8]) -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        client.write_all(first).unwrap();
        let (server, _) = listener.accept().unwrap();
        let arrived = first_byte_is_a_frame(&server, Some(Duration::from_secs(5)));
        assert!(arrived.is_some(), "the client's first bytes never came");
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        (server, client)
    }

    fn everything_sent_to(mut client: TcpStream) -> Vec<u8> {
        let mut got = Vec::new();
        client.read_to_end(&mut got).unwrap();
        got
    }

    #[test]
    fn a_refused_client_is_told_in_its_own_protocol_or_not_at_all() {
        let hello = Frame::Hello {
            version: 1,
            max_message: 10,
            name: String::new(),
        };
        let (server, client) = connection_that_said(&hello.encode());
        turn_away(&server, &Frame::Full);
        assert_eq!(everything_sent_to(client), Frame::Full.encode());

        // A legacy client's lines must not be followed by a binary frame.
        let (server, client) = connection_that_said(b"msg: hi\n\n");
        turn_away(&server, &Frame::Full);
        assert_eq!(everything_sent_to(client), b"");
    }
}
