//! The server: binds, runs the acceptor and the waiting line ([`admission`]), runs each session
//! on the worker pool and keeps the live ones ([`registry`]), and shuts everything down on
//! request.
//!
//! What the server shows and who answers the clients is the [`Frontend`]'s business: the
//! operator console, the echo responder, or a test's recorder.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32};
use std::time::{Duration, SystemTime};

use parking_lot::{Condvar, Mutex};

use crate::access::Rules;
use crate::ending::Ending;
use crate::error::Error;
use crate::pool::WorkerPool;
use crate::session::{Event, Journal, Outbox, Responder, Timeouts};
use crate::wire::Dialect;

mod admission;
mod registry;

use admission::{KeptOutReport, Queued};
use registry::Live;

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
    /// Who may connect (changed at run time with [`ServerHandle::allow`] and
    /// [`ServerHandle::deny`]).
    pub access: Rules,
    /// Most connections, live and waiting, from one address; `None`: no limit.
    pub max_per_host: Option<usize>,
    /// Refuse clients that ask for free order (`--turns-only`).
    pub turns_only: bool,
    /// Most messages a duplex client may have unacknowledged (`--max-in-flight`).
    pub max_in_flight: usize,
}

impl Default for ServerConfig {
    fn default() -> ServerConfig {
        ServerConfig {
            workers: 4,
            backlog: 64,
            max_message: crate::protocol::DEFAULT_MAX_MESSAGE,
            name: String::new(),
            timeouts: Timeouts::default(),
            access: Rules::default(),
            max_per_host: None,
            turns_only: false,
            max_in_flight: crate::protocol::DEFAULT_MAX_IN_FLIGHT,
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
    /// A client left while it waited in line; those behind it moved up.
    LeftLine {
        /// Session number it would have had.
        id: u32,
        /// Client address.
        peer: SocketAddr,
    },
    /// The waiting line was full (or the server out of descriptors): the client was told so
    /// and disconnected.
    Refused {
        /// Client address.
        peer: SocketAddr,
    },
    /// A connection from an address the access rules keep out (or one with too many
    /// connections already) was closed at once. Reported once per address per minute.
    Kept {
        /// Client address.
        peer: SocketAddr,
        /// Why.
        why: KeptOut,
        /// Earlier refusals of the same address not reported, and when the first of them came.
        unreported: Option<(u64, SystemTime)>,
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
        /// Free order: the front-end may say something at any time, not only on
        /// [`Event::MyTurn`].
        duplex: bool,
        /// Where the front-end says the server's side of this chat, on [`Event::MyTurn`].
        outbox: &'a Arc<Outbox>,
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
    /// The session's code panicked: its connection was closed and its worker kept.
    Failed {
        /// Session number.
        id: u32,
        /// Client address.
        peer: SocketAddr,
    },
}

/// Why a connection was kept out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeptOut {
    /// The access rules do not let its address in.
    NotAllowed,
    /// Its address already has `--max-per-host` connections, live or waiting.
    TooManyFromHost,
}

impl KeptOut {
    /// Why, in a few words (`not allowed`).
    pub fn reason(self) -> &'static str {
        match self {
            KeptOut::NotAllowed => "not allowed",
            KeptOut::TooManyFromHost => "too many connections from this address",
        }
    }
}

/// The server's two faces: who answers each client, and who hears what happens.
pub trait Frontend: Send + Sync + 'static {
    /// What answers session `id` at once (the echo), or `None` when the front-end speaks
    /// through the session's outbox on [`Event::MyTurn`].
    fn responder(&self, id: u32) -> Option<Box<dyn Responder + Send>>;
    /// Called for everything that happens; must not block for long (it runs on the workers and
    /// the acceptor).
    fn event(&self, event: ServerEvent<'_>);

    /// What session `id` (client `name` at `peer`) must do with each message it receives
    /// before that message's ACK goes out (make it durable); `None` (the default): nothing.
    fn journal(&self, _id: u32, _peer: SocketAddr, _name: &str) -> Option<Journal> {
        None
    }
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
    /// A free-order chat (no turns).
    pub duplex: bool,
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

/// The waiting line and the live sessions, under one lock. Nothing that can block (a socket
/// write, a front-end event) happens while it is held: callers decide under it and act after.
#[derive(Debug, Default)]
struct State {
    waiting: VecDeque<Arc<Queued>>,
    live: BTreeMap<u32, Arc<Live>>,
    shutting_down: bool,
    /// Counts the reckonings of places in line, so that a late notice never undoes a newer one.
    generation: u64,
    /// Who may connect, now.
    access: Rules,
    /// Refusals by address, so that a scan is reported once a minute per address.
    kept_out: HashMap<IpAddr, KeptOutReport>,
}

#[derive(Debug)]
struct Shared {
    config: ServerConfig,
    local_addr: SocketAddr,
    state: Mutex<State>,
    /// Wakes the line keeper when the line gets someone, or at shutdown.
    line_changed: Condvar,
    next_id: AtomicU32,
    /// Set when the acceptor has stopped, so that shutdown knows its wake-up got through.
    acceptor_done: AtomicBool,
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
                    let local_addr = listener.local_addr().map_err(|source| Error::Bind {
                        addr: *addr,
                        source,
                    })?;
                    let state = State {
                        access: config.access.clone(),
                        ..State::default()
                    };
                    let shared = Arc::new(Shared {
                        config,
                        local_addr,
                        state: Mutex::new(state),
                        line_changed: Condvar::new(),
                        next_id: AtomicU32::new(1),
                        acceptor_done: AtomicBool::new(false),
                    });
                    return Ok(Server { listener, shared });
                }
                Err(e) => last_error = Some((*addr, e)),
            }
        }
        Err(match last_error {
            Some((addr, source)) => Error::Bind { addr, source },
            None => Error::NoAddress,
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
            registry::run_job(&shared, worker_frontend.as_ref(), job)
        })
        .map_err(|source| Error::Io {
            doing: format!("starting {} worker threads", config.workers),
            source,
        })?;
        let keeper =
            admission::spawn_line_keeper(&self.shared, &frontend).map_err(|source| Error::Io {
                doing: "starting the waiting line's keeper thread".into(),
                source,
            })?;
        admission::accept_loop(&self.listener, &self.shared, &jobs, frontend.as_ref());
        drop(jobs);
        registry::finish_sessions(&self.shared);
        pool.join();
        let _ = keeper.join();
        Ok(())
    }
}
