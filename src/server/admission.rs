//! Admission: the acceptor, the waiting line and its notices, and the refusals (server full,
//! shutting down). The acceptor never waits on a peer, and no socket is written under the
//! server's lock.

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{Sender, TrySendError};
use parking_lot::Mutex;

use super::{
    Frontend, KeptOut, Live, ServerConfig, ServerEvent, ServerHandle, Shared, State, WaitingSummary,
};
use crate::protocol::Frame;
use crate::session::Stopper;
use crate::wire::{Dialect, Opening, identify};

/// How often the line keeper looks at the clients waiting in line, while there are any: how
/// soon a client that left is noticed and the others move up, and how soon a client whose first
/// bytes came late is told its place.
const KEEPER_TICK: Duration = Duration::from_millis(200);

/// The most a waiting client's early bytes are kept (a HELLO, or an original client's first
/// message); beyond it they stay in the socket for the session, and the keeper stops looking.
const EARLY_LIMIT: usize = 4096;

/// How often a refused address is reported at most.
const REPORT_EVERY: Duration = Duration::from_secs(60);

/// Addresses whose refusals are counted at most; beyond, the oldest counts are forgotten (a scan
/// from many addresses must not grow the server's memory).
const REPORTS_KEPT: usize = 4096;

/// An address's refusals since it was last reported.
#[derive(Debug, Clone, Copy)]
pub(super) struct KeptOutReport {
    reported: Instant,
    unreported: u64,
    first_unreported: SystemTime,
}

/// A wake-up for a worker: one is sent for each client admitted to the line, which is the queue
/// itself, so the worker takes whoever is first in it. A client that leaves the line leaves its
/// wake-up behind, which is harmless (the worker finds the line shorter, or empty), and so the
/// channel never holds fewer wake-ups than the line holds clients.
#[derive(Debug)]
pub(super) struct Job;

/// A client a worker took from the line, registered as live.
#[derive(Debug)]
pub(super) struct Taken {
    pub(super) id: u32,
    pub(super) peer: SocketAddr,
    pub(super) stream: TcpStream,
    /// Bytes read while it waited, for its session.
    pub(super) early: Vec<u8>,
    /// Its registry entry; `None` when its stopper could not be made (out of descriptors).
    pub(super) live: Option<Arc<Live>>,
}

/// A client in the waiting line.
#[derive(Debug)]
pub(super) struct Queued {
    pub(super) id: u32,
    pub(super) peer: SocketAddr,
    since: Instant,
    /// A clone of the connection, non-blocking while it waits: for notices, and for the keeper's
    /// reads.
    stream: TcpStream,
    /// What is known of it. Held while its socket is read or written, so that a worker taking
    /// the client never races the keeper.
    watch: Mutex<Watch>,
}

#[derive(Debug, Default)]
struct Watch {
    /// The connection itself, until a worker takes it.
    stream: Option<TcpStream>,
    /// Bytes read while it waited, handed to its session.
    early: Vec<u8>,
    /// Whether it speaks our frames (only such a client is sent notices: to an original client
    /// they would be noise in its lines); unknown until its first byte.
    speaks_frames: Option<bool>,
    /// The place it was last told (0: none yet).
    told: u32,
    /// The line's generation when that place was worked out: an older reckoning, told late,
    /// never overwrites a newer one.
    told_generation: u64,
    /// A worker took it: nobody else touches its socket.
    taken: bool,
    /// It closed its end (or its connection failed).
    gone: bool,
}

impl Queued {
    /// Reads what the client sent, without waiting: its first bytes say which protocol it
    /// speaks, and an end of stream that it left.
    fn look(&self) {
        let mut watch = self.watch.lock();
        if watch.taken || watch.gone || watch.early.len() >= EARLY_LIMIT {
            return;
        }
        let mut chunk = [0u8; 1024];
        let room = (EARLY_LIMIT - watch.early.len()).min(chunk.len());
        match (&self.stream).read(&mut chunk[..room]) {
            Ok(0) => watch.gone = true,
            Ok(n) => {
                watch.early.extend_from_slice(&chunk[..n]);
                if watch.speaks_frames.is_none() {
                    watch.speaks_frames = Some(matches!(
                        identify(&watch.early),
                        Opening::Speaks(Dialect::Frames)
                    ));
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) => {}
            Err(_) => watch.gone = true,
        }
    }

    /// Tells the client its place in line, as worked out at `generation`, if it speaks frames
    /// and was told another since.
    fn tell(&self, position: u32, generation: u64) {
        let mut watch = self.watch.lock();
        if watch.taken
            || watch.gone
            || watch.speaks_frames != Some(true)
            || watch.told == position
            || watch.told_generation > generation
        {
            return;
        }
        watch.told = position;
        watch.told_generation = generation;
        if !notify(&self.stream, &Frame::Waiting { position }) {
            watch.gone = true;
        }
    }

    /// Sends a last notice (in its protocol, or none) and closes. Its first bytes may have been
    /// read already: what they said is in the watch, not in the socket.
    fn turn_away(&self, frame: &Frame) {
        let mut watch = self.watch.lock();
        if !watch.taken && !watch.gone {
            last_notice(&self.stream, watch.speaks_frames, frame);
        }
        watch.gone = true;
    }
}

/// Accepts until shutdown; each connection is queued for a worker or turned away, at once.
pub(super) fn accept_loop(
    listener: &TcpListener,
    shared: &Shared,
    jobs: &Sender<Job>,
    frontend: &dyn Frontend,
) {
    for conn in listener.incoming() {
        let stream = match conn {
            Ok(stream) => stream,
            // A connection that failed before we took it (reset, aborted) harms no one else;
            // running out of descriptors deserves a pause rather than a busy loop.
            Err(_) => {
                if shared.state.lock().shutting_down {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        if !admit(shared, stream, jobs, frontend) {
            break;
        }
    }
    shared.acceptor_done.store(true, Ordering::Release);
}

/// Queues one accepted connection, or turns it away; false once the server is shutting down.
fn admit(shared: &Shared, stream: TcpStream, jobs: &Sender<Job>, frontend: &dyn Frontend) -> bool {
    let Ok(peer) = stream.peer_addr() else {
        return true;
    };
    let _ = stream.set_nodelay(true);
    // Until a worker takes it, nothing may block on this client: notices are written, and its
    // first bytes read, only as far as they go at once.
    if stream.set_nonblocking(true).is_err() {
        return true;
    }
    let config = &shared.config;
    let mut state = shared.state.lock();
    if state.shutting_down {
        drop(state);
        turn_away(&stream, &Frame::Shutdown);
        return false;
    }
    if let Some(why) = kept_out(&state, config, peer.ip()) {
        // Closed before anything is read or kept for it: no worker, no place in line.
        let report = count_refusal(&mut state, peer.ip());
        drop(state);
        drop(stream);
        if let Some(unreported) = report {
            frontend.event(ServerEvent::Kept {
                peer,
                why,
                unreported,
            });
        }
        return true;
    }
    let occupied = state.live.len() + state.waiting.len();
    // Out of descriptors, the clone fails: the client is told, as when the line is full.
    let notices = match stream.try_clone() {
        Ok(notices) if occupied < config.workers + config.backlog => notices,
        _ => {
            drop(state);
            return refuse(&stream, peer, frontend);
        }
    };
    // A full channel holds at least as many wake-ups as the line has clients (those of clients
    // who left stay behind): the newcomer needs none of its own.
    if let Err(TrySendError::Disconnected(_)) = jobs.try_send(Job) {
        drop(state);
        return refuse(&stream, peer, frontend);
    }
    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
    let queued = Arc::new(Queued {
        id,
        peer,
        since: Instant::now(),
        stream: notices,
        watch: Mutex::new(Watch {
            stream: Some(stream),
            ..Watch::default()
        }),
    });
    state.waiting.push_back(Arc::clone(&queued));
    let position = position(state.live.len(), state.waiting.len() - 1, config.workers);
    drop(state);
    shared.line_changed.notify_all();
    if position > 0 {
        queued.look();
        tell_positions(shared);
        frontend.event(ServerEvent::Waiting { id, peer, position });
    }
    true
}

/// Why the access rules or the per-host limit keep `ip` out, if they do.
fn kept_out(state: &State, config: &ServerConfig, ip: IpAddr) -> Option<KeptOut> {
    if !state.access.permits(ip) {
        return Some(KeptOut::NotAllowed);
    }
    let limit = config.max_per_host?;
    let live = state.live.values().filter(|live| live.peer().ip() == ip);
    let waiting = state.waiting.iter().filter(|queued| queued.peer.ip() == ip);
    (live.count() + waiting.count() >= limit).then_some(KeptOut::TooManyFromHost)
}

/// Counts a refusal of `ip`; `Some` when it is to be reported now, with the refusals since the
/// last report that were not.
fn count_refusal(state: &mut State, ip: IpAddr) -> Option<Option<(u64, SystemTime)>> {
    let now = Instant::now();
    if state.kept_out.len() >= REPORTS_KEPT {
        state
            .kept_out
            .retain(|_, report| now.duration_since(report.reported) < REPORT_EVERY);
        if state.kept_out.len() >= REPORTS_KEPT {
            state.kept_out.clear();
        }
    }
    match state.kept_out.get_mut(&ip) {
        Some(report) if now.duration_since(report.reported) < REPORT_EVERY => {
            if report.unreported == 0 {
                report.first_unreported = SystemTime::now();
            }
            report.unreported += 1;
            None
        }
        found => {
            let unreported = found
                .filter(|report| report.unreported > 0)
                .map(|report| (report.unreported, report.first_unreported));
            state.kept_out.insert(
                ip,
                KeptOutReport {
                    reported: now,
                    unreported: 0,
                    first_unreported: SystemTime::now(),
                },
            );
            Some(unreported)
        }
    }
}

fn refuse(stream: &TcpStream, peer: SocketAddr, frontend: &dyn Frontend) -> bool {
    turn_away(stream, &Frame::Full);
    frontend.event(ServerEvent::Refused { peer });
    true
}

/// Starts the thread that keeps the line: it notices clients that leave while they wait, moves
/// the others up, and tells a client whose first bytes came late its place. It sleeps while
/// nobody waits, and ends at shutdown.
pub(super) fn spawn_line_keeper(
    shared: &Arc<Shared>,
    frontend: &Arc<dyn Frontend>,
) -> io::Result<JoinHandle<()>> {
    let shared = Arc::clone(shared);
    let frontend = Arc::clone(frontend);
    std::thread::Builder::new()
        .name("line-keeper".into())
        .spawn(move || keep_line(&shared, frontend.as_ref()))
}

fn keep_line(shared: &Shared, frontend: &dyn Frontend) {
    loop {
        let mut state = shared.state.lock();
        if state.waiting.is_empty() && !state.shutting_down {
            shared.line_changed.wait(&mut state);
        } else if !state.shutting_down {
            shared.line_changed.wait_for(&mut state, KEEPER_TICK);
        }
        if state.shutting_down {
            return;
        }
        let line: Vec<Arc<Queued>> = state.waiting.iter().cloned().collect();
        drop(state);
        for queued in &line {
            queued.look();
        }
        let left: Vec<Arc<Queued>> = {
            let mut state = shared.state.lock();
            let (gone, staying) = state
                .waiting
                .drain(..)
                .partition(|queued| queued.watch.lock().gone);
            state.waiting = staying;
            gone.into_iter().collect()
        };
        report_left(&left, frontend);
        tell_positions(shared);
    }
}

/// Takes the first client in line for a worker, registering it as live in the same step (so
/// that nobody counts it in neither, and tells another client it is served at once); `None` when
/// the line is empty. Clients seen leaving and not yet dropped by the keeper are passed over, and
/// returned for the keeper's report.
pub(super) fn take(shared: &Shared) -> (Option<Taken>, Vec<Arc<Queued>>) {
    let mut left = Vec::new();
    let mut state = shared.state.lock();
    while let Some(queued) = state.waiting.pop_front() {
        let mut watch = queued.watch.lock();
        let Some(stream) = watch.stream.take().filter(|_| !watch.gone) else {
            drop(watch);
            left.push(queued);
            continue;
        };
        watch.taken = true;
        // A `dup`, which does not wait on anything: fine under the lock.
        let live = Stopper::new(&stream)
            .ok()
            .map(|stopper| Arc::new(Live::new(queued.peer, stopper)));
        if let Some(live) = &live {
            state.live.insert(queued.id, Arc::clone(live));
        }
        let taken = Taken {
            id: queued.id,
            peer: queued.peer,
            stream,
            early: std::mem::take(&mut watch.early),
            live,
        };
        return (Some(taken), left);
    }
    (None, left)
}

/// Reports clients that left the line, and closes our end of each.
pub(super) fn report_left(left: &[Arc<Queued>], frontend: &dyn Frontend) {
    for queued in left {
        close_quietly(&queued.stream);
        frontend.event(ServerEvent::LeftLine {
            id: queued.id,
            peer: queued.peer,
        });
    }
}

/// Tells every waiting client its place, where it changed.
pub(super) fn tell_positions(shared: &Shared) {
    let (places, generation) = {
        let mut state = shared.state.lock();
        state.generation += 1;
        (places(&state, shared.config.workers), state.generation)
    };
    for (queued, position) in places {
        queued.tell(position, generation);
    }
}

/// Each waiting client that has to wait, with its place.
fn places(state: &State, workers: usize) -> Vec<(Arc<Queued>, u32)> {
    let busy = state.live.len();
    state
        .waiting
        .iter()
        .enumerate()
        .map(|(index, queued)| (Arc::clone(queued), position(busy, index, workers)))
        .filter(|&(_, position)| position > 0)
        .collect()
}

/// Tells each of `line` that the server is shutting down, and closes it.
pub(super) fn say_shutdown(line: &[Arc<Queued>]) {
    for queued in line {
        queued.turn_away(&Frame::Shutdown);
    }
}

impl ServerHandle {
    /// The clients waiting for a worker, first in line first.
    pub fn waiting(&self) -> Vec<WaitingSummary> {
        let state = self.shared.state.lock();
        places(&state, self.shared.config.workers)
            .into_iter()
            .map(|(queued, _)| WaitingSummary {
                id: queued.id,
                peer: queued.peer,
                waited: queued.since.elapsed(),
            })
            .collect()
    }

    /// Wakes the acceptor, blocked in `accept`, which does not wake when another thread closes
    /// the listener: connects to it, again until the acceptor has seen the flag (a connection
    /// can fail, or wait behind a full accept queue), for at most about ten seconds.
    pub(super) fn wake_acceptor(&self) {
        let address = wake_address(self.shared.local_addr);
        for _ in 0..50 {
            if self.shared.acceptor_done.load(Ordering::Acquire) {
                return;
            }
            let _ = TcpStream::connect_timeout(&address, Duration::from_millis(100));
            for _ in 0..10 {
                if self.shared.acceptor_done.load(Ordering::Acquire) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

/// The place in line (0: a worker is free for it) of the client at `index` in the waiting line,
/// with `busy` sessions live.
fn position(busy: usize, index: usize, workers: usize) -> u32 {
    u32::try_from((busy + index + 1).saturating_sub(workers)).unwrap_or(u32::MAX)
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

/// Sends a notice that needs no answer, without waiting: false when it did not go out whole
/// (a client that reads nothing loses nothing by missing it, but its stream is then unusable).
fn notify(mut stream: &TcpStream, frame: &Frame) -> bool {
    let bytes = frame.encode();
    matches!(stream.write(&bytes), Ok(n) if n == bytes.len())
}

/// Sends a last notice and closes, without waiting. A client whose first byte shows that it
/// speaks no frames (an original client, a stranger) is closed without the notice.
pub(super) fn turn_away(stream: &TcpStream, frame: &Frame) {
    last_notice(stream, first_byte_is_a_frame(stream), frame);
}

/// Sends `frame` unless the client is known to speak no frames, then closes.
fn last_notice(stream: &TcpStream, speaks_frames: Option<bool>, frame: &Frame) {
    if speaks_frames != Some(false) {
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
    let _ = stream.shutdown(Shutdown::Write);
    if stream.set_nonblocking(true).is_ok() {
        let mut scratch = [0u8; 1024];
        let _ = (&mut &*stream).read(&mut scratch);
    }
}

/// Whether the client's first byte, if it is here already, opens a frame; `None` while nothing
/// has come. Peeking leaves the byte for the session that will read it.
fn first_byte_is_a_frame(stream: &TcpStream) -> Option<bool> {
    let mut first = [0u8; 1];
    let peeked = stream
        .set_nonblocking(true)
        .and_then(|()| stream.peek(&mut first));
    match peeked {
        // A client that has already closed needs no notices.
        Ok(0) => Some(false),
        Ok(_) => Some(matches!(identify(&first), Opening::Speaks(Dialect::Frames))),
        Err(_) => None,
    }
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
        server
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut byte = [0u8; 1];
        assert_eq!(
            server.peek(&mut byte).unwrap(),
            1,
            "the first bytes never came"
        );
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
