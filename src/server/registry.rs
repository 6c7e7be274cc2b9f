//! The registry of live sessions: a worker's whole handling of one connection, the session
//! list, kicks, and shutdown.

use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use super::admission::{self, Job, Taken};
use super::{Frontend, ServerEvent, ServerHandle, SessionSummary, Shared, State};
use crate::access::{Block, Rules};
use crate::ending::{Ending, StopReason};
use crate::protocol::Frame;
use crate::session::{Event, Hello, Session, Stopper, Turn};
use crate::wire::Dialect;

/// How long shutdown waits for sessions to say goodbye before it closes their sockets outright.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(500);

/// A live session as the registry keeps it.
#[derive(Debug)]
pub(super) struct Live {
    peer: SocketAddr,
    /// The client's HELLO, once the handshake is done.
    hello: OnceLock<Hello>,
    since: Instant,
    stopper: Arc<Stopper>,
    sent: AtomicU64,
    received: AtomicU64,
    my_turn: AtomicBool,
}

/// A session's place in the registry, for as long as its worker holds it: dropping it, on any
/// path out of the job (a panic included), takes the entry out and moves the line up.
struct Registered<'a> {
    shared: &'a Shared,
    frontend: &'a dyn Frontend,
    id: u32,
    live: Arc<Live>,
}

impl Live {
    /// The client's address.
    pub(super) fn peer(&self) -> SocketAddr {
        self.peer
    }

    pub(super) fn new(peer: SocketAddr, stopper: Arc<Stopper>) -> Live {
        Live {
            peer,
            hello: OnceLock::new(),
            since: Instant::now(),
            stopper,
            sent: AtomicU64::new(0),
            received: AtomicU64::new(0),
            my_turn: AtomicBool::new(false),
        }
    }
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.shared.state.lock().live.remove(&self.id);
        admission::tell_positions(self.shared);
        if std::thread::panicking() {
            // A front-end may still hold the session's outbox, a copy of its socket: close the
            // connection itself, so that the client hears of the end.
            self.live.stopper.force_close();
            // The worker pool survives the panic; the front-end must hear of the session.
            self.frontend.event(ServerEvent::Failed {
                id: self.id,
                peer: self.live.peer,
            });
        }
    }
}

/// A worker's whole handling of one connection: from the waiting line to the end of the chat.
pub(super) fn run_job(shared: &Shared, frontend: &dyn Frontend, _wake_up: Job) {
    let (taken, left) = admission::take(shared);
    admission::report_left(&left, frontend);
    // None: whoever this wake-up was for left the line, or shutdown already told them.
    let Some(Taken {
        id,
        peer,
        stream,
        early,
        live,
    }) = taken
    else {
        return;
    };
    let Some(live) = live else {
        // Out of descriptors: the client is told, as when the line is full.
        admission::turn_away(&stream, &Frame::Full);
        frontend.event(ServerEvent::Refused { peer });
        admission::tell_positions(shared);
        return;
    };
    let registered = Registered {
        shared,
        frontend,
        id,
        live,
    };
    let stopper = Arc::clone(&registered.live.stopper);
    let (connected, ending) = match stream.set_nonblocking(false) {
        Ok(()) => chat(
            shared,
            frontend,
            id,
            &registered.live,
            stream,
            stopper,
            &early,
        ),
        Err(e) => (false, Ending::Io(e)),
    };
    drop(registered);
    frontend.event(ServerEvent::Ended {
        id,
        peer,
        connected,
        ending: &ending,
    });
}

/// Runs the handshake and the chat; returns whether the handshake succeeded and how it ended.
fn chat(
    shared: &Shared,
    frontend: &dyn Frontend,
    id: u32,
    live: &Live,
    stream: TcpStream,
    stopper: Arc<Stopper>,
    early: &[u8],
) -> (bool, Ending) {
    let config = &shared.config;
    let mut session = match Session::new(stream, config.max_message, config.timeouts, stopper) {
        Ok(session) => session,
        Err(e) => return (false, Ending::Io(e)),
    };
    session.preload(early);
    session.set_max_in_flight(config.max_in_flight);
    let hello = match session.server_handshake(id, &config.name, config.turns_only) {
        Ok(hello) => hello,
        Err(ending) => return (false, ending),
    };
    let hello = live.hello.get_or_init(|| hello);
    if let Some(journal) = frontend.journal(id, live.peer, &hello.name) {
        session.set_journal(journal);
    }
    let outbox = session.outbox();
    frontend.event(ServerEvent::Connected {
        id,
        peer: live.peer,
        name: &hello.name,
        dialect: hello.dialect,
        duplex: hello.duplex,
        outbox: &outbox,
    });
    let mut responder = frontend.responder(id);
    let responder = responder
        .as_deref_mut()
        .map(|r| r as &mut dyn crate::session::Responder);
    let ending = session.run(Turn::Peer, responder, &mut |event| {
        match event {
            Event::MyTurn => live.my_turn.store(true, Ordering::Relaxed),
            Event::Acked { .. } => {
                live.sent.fetch_add(1, Ordering::Relaxed);
                live.my_turn.store(false, Ordering::Relaxed);
            }
            Event::Received(_) => {
                live.received.fetch_add(1, Ordering::Relaxed);
            }
            Event::TooLong { .. }
            | Event::Unsendable(_)
            | Event::Unacknowledged
            | Event::Sent(_) => {}
        }
        frontend.event(ServerEvent::Session { id, event });
    });
    (true, ending)
}

/// After the acceptor stops: gives the sessions a moment to say goodbye, then cuts them off.
pub(super) fn finish_sessions(shared: &Shared) {
    let deadline = Instant::now() + SHUTDOWN_GRACE;
    while Instant::now() < deadline {
        if shared.state.lock().live.is_empty() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let stoppers = stoppers(&shared.state.lock());
    for stopper in stoppers {
        stopper.force_close();
    }
}

/// Every live session's stopper, to use after the lock is released.
fn stoppers(state: &State) -> Vec<Arc<Stopper>> {
    state
        .live
        .values()
        .map(|live| Arc::clone(&live.stopper))
        .collect()
}

impl ServerHandle {
    /// Stops accepting, tells every waiting and live client that the server is shutting down,
    /// and wakes every blocked thread. [`super::Server::serve`] returns soon after.
    pub fn shutdown(&self) {
        let (line, stoppers) = {
            let mut state = self.shared.state.lock();
            if state.shutting_down {
                return;
            }
            state.shutting_down = true;
            let line: Vec<_> = state.waiting.drain(..).collect();
            (line, stoppers(&state))
        };
        self.shared.line_changed.notify_all();
        admission::say_shutdown(&line);
        for stopper in stoppers {
            stopper.stop(StopReason::Shutdown);
        }
        self.wake_acceptor();
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
                duplex: live.hello.get().is_some_and(|h| h.duplex),
                sent: live.sent.load(Ordering::Relaxed),
                received: live.received.load(Ordering::Relaxed),
                connected_for: live.since.elapsed(),
            })
            .collect()
    }

    /// Lets the addresses of `spec` in from now on: takes back a deny rule for exactly that
    /// block, and adds it to the allow rules when there are any (with none, everyone not denied
    /// is let in already). Returns the rules as they now stand, and says when a broader deny rule
    /// still keeps the block out. Sessions already live are not touched.
    pub fn allow(&self, spec: &str) -> Result<String, String> {
        let block = Block::parse(spec)?;
        let mut state = self.shared.state.lock();
        let access = &mut state.access;
        access.deny.retain(|denied| *denied != block);
        if !access.allow.is_empty() && !access.allow.contains(&block) {
            access.allow.push(block);
        }
        let mut rules = access.describe();
        if access.deny.iter().any(|denied| denied.overlaps(&block)) {
            rules.push_str(&format!(
                " ({block} is still kept out, in part or whole, by a deny rule.)"
            ));
        }
        Ok(rules)
    }

    /// Keeps the addresses of `spec` out from now on (deny wins, so the allow rules need no
    /// change: taking one back could empty them, which would let everyone in); returns the rules
    /// as they now stand. Sessions already live are not touched.
    pub fn deny(&self, spec: &str) -> Result<String, String> {
        let block = Block::parse(spec)?;
        let mut state = self.shared.state.lock();
        if !state.access.deny.contains(&block) {
            state.access.deny.push(block);
        }
        Ok(state.access.describe())
    }

    /// The access rules as they stand.
    pub fn access(&self) -> Rules {
        self.shared.state.lock().access.clone()
    }

    /// Ends session `id`, telling the client `reason`; false if there is no such session.
    pub fn kick(&self, id: u32, reason: &str) -> bool {
        let stopper = self
            .shared
            .state
            .lock()
            .live
            .get(&id)
            .map(|live| Arc::clone(&live.stopper));
        match stopper {
            Some(stopper) => {
                stopper.stop(StopReason::Kick(reason.to_string()));
                true
            }
            None => false,
        }
    }
}
