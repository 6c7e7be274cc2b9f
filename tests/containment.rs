//! Failures stay contained: a session that panics, a client that leaves the waiting line, a
//! hand-off that fails for want of descriptors, a shutdown behind a flood of silent
//! connections, and errors that say what was being done. Real sockets on 127.0.0.1, port 0.

mod common;

use std::io::Write;
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use client_server_chat::error::Error;
use client_server_chat::protocol::{Frame, VERSION};
use client_server_chat::server::{Frontend, Server, ServerConfig, ServerEvent, ServerHandle};
use client_server_chat::session::{EchoResponder, Responder};
use client_server_chat::wire::{FrameReader, ReadError};
use crossbeam_channel::{Receiver, Sender};

use common::{TIMEOUT, start_client, start_server};

/// A raw client: hand-made frames out, frames decoded by the crate's own reader in.
struct Peer {
    stream: TcpStream,
    reader: FrameReader,
}

impl Peer {
    fn connect(addr: SocketAddr) -> Peer {
        let stream = TcpStream::connect_timeout(&addr, TIMEOUT)
            .unwrap_or_else(|e| panic!("cannot connect to {addr}: {e}"));
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(TIMEOUT)).unwrap();
        Peer {
            stream,
            reader: FrameReader::new(1 << 16),
        }
    }

    fn local_addr(&self) -> SocketAddr {
        self.stream.local_addr().unwrap()
    }

    fn send(&mut self, frame: &Frame) {
        self.stream.write_all(&frame.encode()).unwrap();
    }

    fn hello(&mut self, name: &str) {
        self.send(&Frame::Hello {
            version: VERSION,
            max_message: 1 << 16,
            name: name.to_string(),
        });
    }

    fn recv(&mut self) -> Result<Frame, ReadError> {
        self.reader.read_frame(&mut self.stream)
    }

    /// A client that has said HELLO and been welcomed.
    fn welcomed(addr: SocketAddr, name: &str) -> Peer {
        let mut peer = Peer::connect(addr);
        peer.hello(name);
        peer.expect_welcome();
        peer
    }

    /// Reads past WAITING notices until WELCOME.
    fn expect_welcome(&mut self) {
        for _ in 0..100 {
            match self.recv() {
                Ok(Frame::Waiting { .. }) => {}
                Ok(Frame::Welcome { .. }) => return,
                other => panic!("expected WELCOME, got {other:?}"),
            }
        }
        panic!("no WELCOME after 100 WAITING frames");
    }

    /// Reads the close of a session that failed.
    fn expect_closed(&mut self) {
        match self.recv() {
            Err(ReadError::Closed | ReadError::Io(_)) => {}
            other => panic!("the failed session's connection stayed open: {other:?}"),
        }
    }

    /// One exchange with an echo server.
    fn echo_turn(&mut self, text: &[u8]) {
        self.send(&Frame::Message(text.to_vec()));
        assert_eq!(self.recv().unwrap(), Frame::Ack);
        assert_eq!(self.recv().unwrap(), Frame::Message(text.to_vec()));
        self.send(&Frame::Ack);
    }
}

// ---------------------------------------------------------------------------------------------
// A session that panics.

/// Echoes and reports every event to the test; a fragile one panics on the message `boom`.
struct Recorder {
    events: Sender<String>,
    fragile: bool,
}

impl Recorder {
    /// A recorder, and what the test hears from it.
    fn new(fragile: bool) -> (Recorder, Receiver<String>) {
        let (events, heard) = crossbeam_channel::unbounded();
        (Recorder { events, fragile }, heard)
    }
}

/// Waits for an event that starts with `prefix`, reading past others.
fn hears(heard: &Receiver<String>, prefix: &str) -> bool {
    let deadline = Instant::now() + TIMEOUT;
    std::iter::from_fn(|| heard.recv_deadline(deadline).ok()).any(|event| event.starts_with(prefix))
}

impl Frontend for Recorder {
    fn responder(&self, _id: u32) -> Option<Box<dyn Responder + Send>> {
        Some(Box::new(EchoResponder))
    }

    fn event(&self, event: ServerEvent<'_>) {
        let _ = self.events.send(format!("{event:?}"));
        if self.fragile
            && let ServerEvent::Session {
                event: client_server_chat::session::Event::Received(b"boom"),
                ..
            } = event
        {
            panic!("the front-end fails on purpose");
        }
    }
}

/// The library's server with one worker and `backlog`, serving `frontend` on a thread.
fn serve_one_worker(
    backlog: usize,
    frontend: impl Frontend,
) -> (SocketAddr, ServerHandle, JoinHandle<Result<(), Error>>) {
    let config = ServerConfig {
        workers: 1,
        backlog,
        ..ServerConfig::default()
    };
    let server = Server::bind(&["127.0.0.1:0".parse().unwrap()], config).unwrap();
    let (addr, handle) = (server.local_addr(), server.handle());
    let serving = std::thread::spawn(move || server.serve(Arc::new(frontend)));
    (addr, handle, serving)
}

#[test]
fn a_panicking_session_is_closed_and_reported_and_its_worker_serves_the_next_client() {
    let (fragile, heard) = Recorder::new(true);
    let (addr, handle, serving) = serve_one_worker(1, fragile);

    let mut doomed = Peer::welcomed(addr, "doomed");
    // Its ACK and echo went out before the front-end heard of the message (which it does once
    // the echo is acknowledged); then the connection closes.
    doomed.echo_turn(b"boom");
    doomed.expect_closed();
    assert!(
        hears(&heard, "Failed"),
        "the front-end never heard of the failure"
    );

    // The only worker lives on, and the registry forgot the failed session: the server is
    // neither full nor short of a worker.
    for name in ["next", "after"] {
        let mut next = Peer::welcomed(addr, name);
        next.echo_turn(b"still here");
        next.send(&Frame::End);
    }
    assert!(handle.sessions().len() <= 1, "{:?}", handle.sessions());
    handle.shutdown();
    serving.join().unwrap().unwrap();
}

// ---------------------------------------------------------------------------------------------
// The waiting line.

#[test]
fn a_client_that_leaves_the_line_is_dropped_from_it_and_those_behind_move_up() {
    let (mut server, port) = start_server(&["--echo", "-w", "1"]);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut live = Peer::welcomed(addr, "live");

    let mut leaver = Peer::connect(addr);
    leaver.hello("leaver");
    assert_eq!(leaver.recv().unwrap(), Frame::Waiting { position: 1 });
    let leaver_addr = leaver.local_addr();
    let mut behind = start_client("behind", port);
    behind.expect_line("waiting in line (position 2).");

    // The leaver closes its window: no END, no FIN of a chat, just gone.
    leaver.stream.shutdown(Shutdown::Both).unwrap();
    drop(leaver);
    assert_eq!(
        server.expect_line("Left the line"),
        format!("[#2 {leaver_addr}] Left the line before a worker was free.")
    );
    behind.expect_line("waiting in line (position 1).");

    // When the worker frees up, the client behind is served, and the leaver never is.
    live.send(&Frame::End);
    behind.expect_line("Connected!");
    behind.send_line("end");
    behind.expect_exit(0);
    let server = server.kill_and_collect();
    assert!(
        !server.stdout.contains(&format!("{leaver_addr}] Connected")),
        "{server:#?}"
    );
}

#[test]
fn a_waiting_client_whose_hand_off_fails_is_told_and_the_line_moves_on() {
    let (mut server, port) = start_server(&["--echo", "-w", "1"]);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let pid = server.pid();
    // Every descriptor from here on belongs to the clients below.
    let first_client_fd = common::lowest_free_fd(pid);
    let mut live = Peer::welcomed(addr, "live");
    let mut waiting = Peer::connect(addr);
    waiting.hello("waiting");
    assert_eq!(waiting.recv().unwrap(), Frame::Waiting { position: 1 });

    // No new descriptor from now on, not even those the live session frees: the worker cannot
    // clone the waiting client's socket when it takes it.
    let limit = first_client_fd;
    common::limit_descriptors(pid, limit);
    live.send(&Frame::End);

    // The waiting client is told, not left hanging, and the server says so.
    assert_eq!(waiting.recv().unwrap(), Frame::Full);
    server.expect_line("Refused: the server is full.");
    server.interrupt();
    assert!(server.wait_exit(TIMEOUT).success(), "{}", server.dump());
}

#[test]
fn a_client_whose_hello_comes_late_is_still_told_its_place_in_line() {
    let (_server, port) = start_server(&["--echo", "-w", "1"]);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut live = Peer::welcomed(addr, "live");
    let mut late = Peer::connect(addr);
    // Long after the acceptor has queued it: only someone who watches the line can tell it.
    std::thread::sleep(Duration::from_millis(300));
    late.hello("late");
    assert_eq!(late.recv().unwrap(), Frame::Waiting { position: 1 });
    live.send(&Frame::End);
    late.expect_welcome();
}

#[test]
fn shutdown_is_not_held_up_by_a_flood_of_silent_connections() {
    let (mut server, port) = start_server(&["--echo", "-w", "1"]);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut live = Peer::welcomed(addr, "live");
    // Silent clients the acceptor must not wait on (it once waited 100 ms for each one's first
    // byte, while the kernel's accept queue filled behind them).
    let silent: Vec<TcpStream> = (0..300)
        .filter_map(|_| TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok())
        .collect();
    assert!(!silent.is_empty());
    server.interrupt();
    let status = server.wait_exit(TIMEOUT);
    assert!(status.success(), "{}", server.dump());
    // The live client was told.
    assert_eq!(live.recv().unwrap(), Frame::Shutdown);
}

// ---------------------------------------------------------------------------------------------
// Errors.

#[test]
fn a_server_with_no_address_is_a_runtime_failure_not_a_usage_error() {
    let error = Server::bind(&[], ServerConfig::default()).unwrap_err();
    assert!(matches!(error, Error::NoAddress), "{error:?}");
    assert_eq!(error.exit_code(), 1);
    assert!(error.to_string().contains("no address"), "{error}");
}

#[test]
fn an_io_error_says_what_was_being_done_and_keeps_its_cause() {
    let cause = std::io::Error::from(std::io::ErrorKind::WouldBlock);
    let error = Error::io("accepting a connection on 127.0.0.1:1234")(cause);
    let shown = error.to_string();
    assert!(
        shown.starts_with("accepting a connection on 127.0.0.1:1234: "),
        "{shown}"
    );
    let source = std::error::Error::source(&error).expect("a source");
    assert!(
        source.to_string().contains("operation would block"),
        "{source}"
    );
}

#[test]
fn clients_who_left_the_line_leave_no_trace_that_refuses_a_newcomer() {
    let (recorder, heard) = Recorder::new(false);
    let (addr, handle, serving) = serve_one_worker(2, recorder);
    let mut live = Peer::welcomed(addr, "live");
    // More clients come and go than the line has room for.
    for _ in 0..3 {
        let mut leaver = Peer::connect(addr);
        leaver.hello("leaver");
        assert_eq!(leaver.recv().unwrap(), Frame::Waiting { position: 1 });
        leaver.stream.shutdown(Shutdown::Both).unwrap();
        assert!(
            hears(&heard, "LeftLine"),
            "the server never saw the client leave the line"
        );
    }
    assert!(handle.waiting().is_empty(), "{:?}", handle.waiting());
    // The line is empty: there is room for two.
    let mut first = Peer::connect(addr);
    first.hello("first");
    assert_eq!(first.recv().unwrap(), Frame::Waiting { position: 1 });
    let mut second = Peer::connect(addr);
    second.hello("second");
    assert_eq!(second.recv().unwrap(), Frame::Waiting { position: 2 });
    // And the line is served in order.
    live.send(&Frame::End);
    first.expect_welcome();
    handle.shutdown();
    serving.join().unwrap().unwrap();
}

/// Keeps each session's outbox, as a front-end routing replies would, and panics on `boom`.
struct Hoarder(parking_lot::Mutex<Vec<Arc<client_server_chat::session::Outbox>>>);

impl Frontend for Hoarder {
    fn responder(&self, _id: u32) -> Option<Box<dyn Responder + Send>> {
        Some(Box::new(EchoResponder))
    }

    fn event(&self, event: ServerEvent<'_>) {
        match event {
            ServerEvent::Connected { outbox, .. } => self.0.lock().push(Arc::clone(outbox)),
            ServerEvent::Session {
                event: client_server_chat::session::Event::Received(b"boom"),
                ..
            } => panic!("the front-end fails on purpose"),
            _ => {}
        }
    }
}

#[test]
fn a_panicked_session_is_closed_even_while_its_front_end_holds_its_outbox() {
    let (addr, handle, serving) = serve_one_worker(1, Hoarder(Default::default()));
    let mut doomed = Peer::welcomed(addr, "doomed");
    doomed.echo_turn(b"boom");
    doomed.expect_closed();
    handle.shutdown();
    serving.join().unwrap().unwrap();
}
