//! Robustness tests against the real `client_server_chat` binary on 127.0.0.1, port 0:
//! misbehaving peers, timeouts, size limits, a burst of connections, a soak of sequential
//! sessions, terminal safety, and shutdown under load.
//!
//! Misbehaving peers are raw `TcpStream`s writing hand-made bytes. Every read has a timeout and
//! every loop a bound on its count and its time, so a regression fails a test instead of hanging
//! it. Resource figures (descriptors, VmRSS) are printed with `eprintln!`: run with
//! `cargo test --test robustness -- --nocapture` to see them.

mod common;

use std::collections::HashSet;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{Condvar, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use client_server_chat::protocol::{Frame, HEADER_LEN, VERSION};
use client_server_chat::wire::{FrameReader, ReadError};

use common::{
    Proc, TIMEOUT, accept_one, echo_server_with_a_good_client, good_turn, run, start_server,
};

/// The longest a raw peer waits to connect, for any one frame, or for a write to go out.
const PEER_TIMEOUT: Duration = Duration::from_secs(10);

/// What raw peers announce, and accept, as their largest message.
const PEER_MAX: usize = 1 << 20;

/// The server's line when a client ended its chat with END.
const LEFT: &str = "The other side left the chat.";

fn hello(name: &str) -> Frame {
    Frame::Hello {
        version: VERSION,
        max_message: PEER_MAX as u32,
        name: name.to_string(),
    }
}

fn localhost(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// A raw TCP peer: hand-made bytes out, frames decoded with the crate's own reader in.
struct Peer {
    stream: TcpStream,
    reader: FrameReader,
}

impl Peer {
    fn try_connect(port: u16) -> io::Result<Peer> {
        let stream = TcpStream::connect_timeout(&localhost(port), PEER_TIMEOUT)?;
        Peer::over(stream)
    }

    fn connect(port: u16) -> Peer {
        Peer::try_connect(port).unwrap_or_else(|e| panic!("cannot connect to port {port}: {e}"))
    }

    fn over(stream: TcpStream) -> io::Result<Peer> {
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(PEER_TIMEOUT))?;
        stream.set_write_timeout(Some(PEER_TIMEOUT))?;
        Ok(Peer {
            stream,
            reader: FrameReader::new(PEER_MAX),
        })
    }

    fn local_addr(&self) -> SocketAddr {
        self.stream.local_addr().expect("local address")
    }

    fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    fn send_bytes(&mut self, bytes: &[u8]) {
        self.write(bytes)
            .unwrap_or_else(|e| panic!("cannot write {bytes:02x?}: {e}"));
    }

    fn send(&mut self, frame: &Frame) {
        self.send_bytes(&frame.encode());
    }

    fn recv(&mut self) -> Result<Frame, ReadError> {
        self.reader.read_frame(&mut self.stream)
    }

    /// The next frame, whatever it is; fails the test on a close, an error or a timeout.
    fn expect(&mut self, what: &str) -> Frame {
        self.recv()
            .unwrap_or_else(|e| panic!("waiting for {what}: {e:?}"))
    }

    /// Reads past any WAITING until WELCOME; returns the session id.
    fn expect_welcome(&mut self) -> u32 {
        for _ in 0..1000 {
            match self.expect("WELCOME") {
                Frame::Waiting { .. } => {}
                Frame::Welcome { session_id, .. } => return session_id,
                other => panic!("expected WELCOME, got {other:?}"),
            }
        }
        panic!("more than 1000 WAITING frames and no WELCOME");
    }

    /// HELLO, then WELCOME; returns the session id.
    fn handshake(&mut self, name: &str) -> u32 {
        self.send(&hello(name));
        self.expect_welcome()
    }

    /// One exchange with an echo server: our MESSAGE, its ACK, the echo, our ACK.
    fn echo_turn(&mut self, text: &[u8]) {
        self.send(&Frame::Message(text.to_vec()));
        assert_eq!(self.expect("the ACK"), Frame::Ack);
        assert_eq!(self.expect("the echo"), Frame::Message(text.to_vec()));
        self.send(&Frame::Ack);
    }

    /// ERROR(`reason`) must be the next frame, and then the server must close the connection.
    fn expect_error(&mut self, reason: &str) {
        match self.recv() {
            Ok(Frame::Error(got)) => assert_eq!(got, reason, "wrong ERROR reason"),
            other => panic!("expected ERROR({reason:?}), got {other:?}"),
        }
        self.expect_closed(&format!("after ERROR({reason:?})"));
    }

    fn expect_closed(&mut self, when: &str) {
        match self.recv() {
            Err(ReadError::Closed) => {}
            other => panic!("expected the connection to close {when}, got {other:?}"),
        }
    }

    /// Leaves as the protocol says: END, then [`Peer::close`].
    fn end(mut self) {
        self.send(&Frame::End);
        self.close();
    }

    /// FIN, then discards until the other side closes (each read bounded by the timeout).
    fn close(mut self) {
        let _ = self.stream.shutdown(Shutdown::Write);
        let mut scratch = [0u8; 4096];
        for _ in 0..1000 {
            match self.stream.read(&mut scratch) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    }
}

/// A whole chat with an echo server; returns the session id.
fn chat_once(port: u16, name: &str, text: &[u8]) -> u32 {
    let mut peer = Peer::connect(port);
    let id = peer.handshake(name);
    peer.echo_turn(text);
    peer.end();
    id
}

/// The terminal-driving bytes found in `bytes`: ESC, BEL, BS, CR, and C1 controls as UTF-8.
fn terminal_controls(bytes: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    for (at, &b) in bytes.iter().enumerate() {
        match b {
            0x1b | 0x07 | 0x08 | 0x0d => found.push(format!("{b:#04x} at {at}")),
            0xc2 if matches!(bytes.get(at + 1), Some(0x80..=0x9f)) => {
                found.push(format!("C1 c2 {:02x} at {at}", bytes[at + 1]));
            }
            _ => {}
        }
    }
    found
}

fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap_or_else(|e| panic!("cannot list /proc/{pid}/fd: {e}"))
        .count()
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("cannot read /proc/{pid}/status: {e}"));
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status"))
}

/// Waits (at most `within`) until the process holds at most `target` descriptors; returns the
/// last count seen. Sockets close a little after the client sees the end (the server lingers).
fn settle_fds(pid: u32, target: usize, within: Duration) -> usize {
    let deadline = Instant::now() + within;
    loop {
        let count = fd_count(pid);
        if count <= target || Instant::now() >= deadline {
            return count;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// The server's descriptors as `fd -> target`, for a failure message or the report.
fn fd_list(pid: u32) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    dir.filter_map(Result::ok)
        .map(|e| {
            let target = std::fs::read_link(e.path()).unwrap_or_default();
            format!(
                "{} -> {}",
                e.file_name().to_string_lossy(),
                target.display()
            )
        })
        .collect()
}

/// Allowed growth of the server's descriptors over a run.
const FD_SLACK: usize = 2;
/// Allowed growth of the server's resident memory over a run.
const RSS_SLACK_KIB: u64 = 8 * 1024;

/// Measures the server after one warm-up chat: (descriptors, VmRSS KiB).
fn baseline(server: &Proc, port: u16) -> (usize, u64) {
    let pid = server.pid();
    let fds = fd_count(pid);
    chat_once(port, "warm-up", b"warm-up");
    let after = settle_fds(pid, fds, TIMEOUT);
    assert!(
        after <= fds,
        "one chat left descriptors open: {fds} -> {after}"
    );
    (fds, rss_kib(pid))
}

// ---------------------------------------------------------------------------------------------
// 1. Bad frames.

/// One misbehaving peer: what it sends, and what the server must answer.
struct BadPeer {
    what: &'static str,
    /// Whether the peer is welcomed before it misbehaves.
    welcomed: bool,
    bytes: Vec<u8>,
    /// Shut down the write half after `bytes` (a frame cut short by the close).
    half_close: bool,
    /// Frames the server rightly sends before its ERROR.
    first: Vec<Frame>,
    reason: &'static str,
}

fn bad_peers() -> Vec<BadPeer> {
    let header = |kind: u8, len: u32| {
        let mut h = vec![kind];
        h.extend_from_slice(&len.to_be_bytes());
        h
    };
    let mut two_messages = Frame::Message(b"one".to_vec()).encode();
    two_messages.extend_from_slice(&Frame::Message(b"two".to_vec()).encode());
    let mut cut_message = Frame::Message(b"0123456789".to_vec()).encode();
    cut_message.truncate(HEADER_LEN + 4);
    let mut cut_hello = hello("mallory").encode();
    cut_hello.truncate(cut_hello.len() / 2);
    let mut wrong_magic = hello("mallory").encode();
    wrong_magic[HEADER_LEN..HEADER_LEN + 4].copy_from_slice(b"HTTP");
    let mut not_utf8 = hello("ab").encode();
    let len = not_utf8.len();
    not_utf8[len - 2..].copy_from_slice(&[0xff, 0xfe]);
    let mut short_hello = header(0x01, 3);
    short_hello.extend_from_slice(b"CSC");
    let version_3 = Frame::Hello {
        version: 3,
        max_message: 100,
        name: "future".into(),
    }
    .encode();
    let case = |what, welcomed, bytes, reason| BadPeer {
        what,
        welcomed,
        bytes,
        half_close: false,
        first: Vec::new(),
        reason,
    };
    vec![
        case(
            "an unknown frame type in the chat",
            true,
            header(0x0d, 0),
            "unknown frame type 0x0d",
        ),
        case(
            "a MESSAGE header announcing 1000000 bytes, no payload",
            true,
            header(0x04, 1_000_000),
            "MESSAGE frame of 1000000 bytes is over the limit of 16 bytes",
        ),
        case(
            "a HELLO header announcing 2000 bytes",
            false,
            header(0x01, 2000),
            "HELLO frame of 2000 bytes is over the limit of 1024 bytes",
        ),
        BadPeer {
            half_close: true,
            ..case(
                "half a MESSAGE, then FIN",
                true,
                cut_message,
                "the connection closed in the middle of a frame",
            )
        },
        BadPeer {
            half_close: true,
            ..case(
                "half a HELLO, then FIN",
                false,
                cut_hello,
                "the connection closed in the middle of a frame",
            )
        },
        BadPeer {
            first: vec![Frame::Ack, Frame::Message(b"one".to_vec())],
            ..case(
                "two MESSAGEs in a row (the second instead of the echo's ACK)",
                true,
                two_messages,
                "MESSAGE out of turn",
            )
        },
        case(
            "an ACK with nothing to acknowledge",
            true,
            Frame::Ack.encode(),
            "ACK with no MESSAGE to acknowledge",
        ),
        case(
            "a second HELLO",
            true,
            hello("again").encode(),
            "unexpected HELLO frame",
        ),
        case(
            "HELLO version 3",
            false,
            version_3,
            "unsupported protocol version 3 (this server speaks 1 and 2)",
        ),
        case(
            "HELLO with a wrong magic",
            false,
            wrong_magic,
            "malformed HELLO frame: wrong magic (this is not a client_server_chat client)",
        ),
        case(
            "HELLO shorter than magic, version and limit",
            false,
            short_hello,
            "malformed HELLO frame: shorter than magic, version and limit",
        ),
        case(
            "HELLO with a name that is not UTF-8",
            false,
            not_utf8,
            "malformed HELLO frame: text field is not UTF-8",
        ),
        case(
            "MESSAGE before HELLO",
            false,
            Frame::Message(b"hi".to_vec()).encode(),
            "expected HELLO, got MESSAGE",
        ),
    ]
}

#[test]
fn bad_frames_get_an_error_and_a_close_while_another_client_chats_on() {
    let (mut server, port, mut good) = echo_server_with_a_good_client(&["--max-message", "16"]);

    // The good client is #1; each bad peer gets the next number.
    for (turn, (id, bad)) in (2u32..).zip(bad_peers()).enumerate() {
        let what = bad.what;
        let mut peer = Peer::connect(port);
        let addr = peer.local_addr();
        if bad.welcomed {
            assert_eq!(peer.handshake("mallory"), id, "{what}");
        }
        peer.send_bytes(&bad.bytes);
        if bad.half_close {
            peer.stream.shutdown(Shutdown::Write).expect("half-close");
        }
        for frame in &bad.first {
            assert_eq!(&peer.expect(what), frame, "{what}");
        }
        match peer.recv() {
            Ok(Frame::Error(reason)) => assert_eq!(reason, bad.reason, "{what}"),
            other => panic!("{what}: expected ERROR({:?}), got {other:?}", bad.reason),
        }
        peer.expect_closed(&format!("after the ERROR for {what}"));

        // The operator sees the problem on the session's own line.
        let expected = if bad.welcomed {
            format!("[#{id} mallory] Protocol error: {}", bad.reason)
        } else {
            format!(
                "[#{id} {addr}] Not connected: Protocol error: {}",
                bad.reason
            )
        };
        assert_eq!(server.expect_line(bad.reason), expected, "{what}");

        // Meanwhile the good client chats on, untouched.
        good_turn(&mut good, turn + 1);
    }

    good.send_line("end");
    let good = good.expect_exit(0);
    assert!(good.stderr.is_empty(), "{good:#?}");
    server.expect_line(&format!("[#1] {LEFT}"));
    let server = server.kill_and_collect();
    assert!(
        !server.stdout.contains("panicked") && !server.stderr.contains("panicked"),
        "{server:#?}"
    );
}

// ---------------------------------------------------------------------------------------------
// 2. Timeouts.

/// Connects a well-behaved peer, session `id`, that must wait in line, first and alone.
///
/// The server's own line shows that it waits: whether a WAITING frame reaches the peer before
/// its WELCOME depends on when its first byte reached the server, which is not what the callers
/// test ([`Peer::expect_welcome`] reads past it).
fn queue_behind(server: &mut Proc, port: u16, id: u32) -> Peer {
    let mut waiter = Peer::connect(port);
    waiter.send(&hello("waiter"));
    let addr = waiter.local_addr();
    assert_eq!(
        server.expect_line(&format!(" {addr}] ")),
        format!("[#{id} {addr}] Waiting in line (position 1)."),
        "the slow peer should hold the only worker"
    );
    waiter
}

/// The waiter gets the worker once the slow peer is cut off, and chats normally.
fn serve_waiter(mut waiter: Peer, id: u32, server: &mut Proc) {
    assert_eq!(waiter.expect_welcome(), id);
    waiter.echo_turn(b"my turn at last");
    waiter.end();
    assert_eq!(
        server.expect_line(&format!("[#{id} waiter] Received:")),
        format!("[#{id} waiter] Received: my turn at last")
    );
    server.expect_line(&format!("[#{id} waiter] {LEFT}"));
}

/// `peer` holds the only worker and a waiter queues behind it; the server cuts `peer` off with
/// ERROR(`told`) and shows the operator the line `shown`; then the waiter, session `waiter_id`,
/// gets the worker and chats.
fn cut_off_and_replaced(
    server: &mut Proc,
    port: u16,
    peer: &mut Peer,
    told: &str,
    shown: &str,
    waiter_id: u32,
) {
    let waiter = queue_behind(server, port, waiter_id);
    peer.expect_error(told);
    assert_eq!(server.expect_line(" Timed out: "), shown);
    serve_waiter(waiter, waiter_id, server);
}

#[test]
fn silent_stalling_and_idle_peers_are_cut_off_and_free_the_only_worker() {
    let (mut server, port) = start_server(&[
        "--echo",
        "--workers",
        "1",
        "--handshake-timeout",
        "1",
        "--idle-timeout",
        "1",
    ]);
    let stalled = "a frame took more than 1 s to arrive";

    // A peer that connects and says nothing.
    let mut silent = Peer::connect(port);
    let addr = silent.local_addr();
    cut_off_and_replaced(
        &mut server,
        port,
        &mut silent,
        "no handshake within 1 s",
        &format!("[#1 {addr}] Not connected: Timed out: no handshake within 1 s"),
        2,
    );

    // Three bytes of a HELLO header, then nothing.
    let mut stub = Peer::connect(port);
    let addr = stub.local_addr();
    stub.send_bytes(&hello("stub").encode()[..3]);
    cut_off_and_replaced(
        &mut server,
        port,
        &mut stub,
        stalled,
        &format!("[#3 {addr}] Not connected: Timed out: {stalled}"),
        4,
    );

    // A long HELLO dripped one byte every 300 ms: the frame's deadline is not reset by each
    // byte, so the server cuts it off long before the 78 bytes are in.
    let drip = hello(&"d".repeat(64)).encode();
    assert_eq!(drip.len(), 78);
    let mut dripper = Peer::connect(port);
    let addr = dripper.local_addr();
    dripper.send_bytes(&drip[..1]);
    let waiter = queue_behind(&mut server, port, 6);
    dripper
        .stream
        .set_read_timeout(Some(Duration::from_millis(300)))
        .expect("read timeout");
    let mut sent = 1;
    let reason = loop {
        match dripper.recv() {
            Ok(Frame::Error(reason)) => break reason,
            Ok(other) => panic!("the dripping peer got {other:?} after {sent} bytes"),
            Err(ReadError::Io(e)) if is_timeout(&e) => {}
            Err(e) => panic!("the dripping peer got {e:?} after {sent} bytes"),
        }
        assert!(
            sent < drip.len(),
            "the whole HELLO dripped in and the server did not cut it off"
        );
        // A failed write means the server is gone: its ERROR is read on the next round.
        let _ = dripper.write(&drip[sent..=sent]);
        sent += 1;
    };
    assert_eq!(reason, stalled);
    eprintln!(
        "dripping peer: cut off after {sent} of {} bytes",
        drip.len()
    );
    dripper.stream.set_read_timeout(Some(PEER_TIMEOUT)).unwrap();
    dripper.expect_closed("after the ERROR for the dripping peer");
    assert_eq!(
        server.expect_line(stalled),
        format!("[#5 {addr}] Not connected: Timed out: {stalled}")
    );
    serve_waiter(waiter, 6, &mut server);

    // Welcomed, then a MESSAGE header and part of its payload.
    let mut half = Peer::connect(port);
    assert_eq!(half.handshake("half"), 7);
    let mut message = Frame::Message(b"0123456789".to_vec()).encode();
    message.truncate(HEADER_LEN + 4);
    half.send_bytes(&message);
    cut_off_and_replaced(
        &mut server,
        port,
        &mut half,
        stalled,
        &format!("[#7 half] Timed out: {stalled}"),
        8,
    );

    // Welcomed, and never says anything.
    let mut idle = Peer::connect(port);
    assert_eq!(idle.handshake("idle"), 9);
    // The client is told in its words, the operator in the server's.
    cut_off_and_replaced(
        &mut server,
        port,
        &mut idle,
        "no message on your turn within 1 s",
        "[#9 idle] Timed out: the other side sent no message on its turn within 1 s",
        10,
    );

    // Sends a message, takes the echo, and never acknowledges it.
    let mut mute = Peer::connect(port);
    assert_eq!(mute.handshake("mute"), 11);
    mute.send(&Frame::Message(b"ping".to_vec()));
    assert_eq!(mute.expect("the ACK"), Frame::Ack);
    assert_eq!(mute.expect("the echo"), Frame::Message(b"ping".to_vec()));
    assert_eq!(
        server.expect_line("[#11 mute] Received:"),
        "[#11 mute] Received: ping"
    );
    cut_off_and_replaced(
        &mut server,
        port,
        &mut mute,
        "no ACK within 1 s",
        "[#11 mute] Timed out: the other side sent no ACK within 1 s",
        12,
    );

    // And the real client still gets served by the only worker.
    let client = run(
        &["client", "127.0.0.1", &port.to_string()],
        b"still here\nend\n",
    );
    assert_eq!(client.code(), 0, "{client:#?}");
    assert!(
        client.lines().contains(&"Received: still here"),
        "{client:#?}"
    );
    server.expect_line(&format!("[#13] {LEFT}"));
}

// ---------------------------------------------------------------------------------------------
// 3. A message over the server's limit.

#[test]
fn client_refuses_a_message_over_the_servers_limit_and_the_next_one_goes_through() {
    let (mut server, port) = start_server(&["--echo", "--max-message", "8"]);
    let client = run(
        &["client", "127.0.0.1", &port.to_string()],
        b"123456789\nok\nend\n",
    );
    assert_eq!(client.code(), 0, "{client:#?}");
    let lines = client.lines();
    let refused = lines
        .iter()
        .position(|l| l.starts_with("Not sent") && l.contains("limit"))
        .unwrap_or_else(|| panic!("no 'Not sent ... limit' line: {client:#?}"));
    assert_eq!(
        lines[refused],
        "Not sent: the message is 9 bytes, over the server's limit of 8."
    );
    let received = lines
        .iter()
        .position(|l| *l == "Received: ok")
        .unwrap_or_else(|| panic!("'ok' did not go through: {client:#?}"));
    assert!(refused < received, "{client:#?}");
    assert_eq!(lines.last(), Some(&"The chat has ended."), "{client:#?}");

    assert_eq!(server.expect_line("Received:"), "[#1] Received: ok");
    server.expect_line(&format!("[#1] {LEFT}"));
    let server = server.kill_and_collect();
    assert!(!server.stdout.contains("123456789"), "{server:#?}");
    assert!(!server.stdout.contains("error"), "{server:#?}");
}

// ---------------------------------------------------------------------------------------------
// 4. The client and a server's ERROR.

/// Reads past the server's PINGs, answering each, to the next other frame.
fn expect_past_pings(peer: &mut Peer, what: &str) -> Frame {
    for _ in 0..100 {
        match peer.expect(what) {
            Frame::Ping => peer.send(&Frame::Pong),
            other => return other,
        }
    }
    panic!("100 PINGs and no {what}");
}

#[test]
fn the_server_keeps_a_quiet_client_that_answers_pings_and_cuts_off_one_that_stops() {
    let (mut server, port) = start_server(&[
        "--echo",
        "--workers",
        "1",
        "--heartbeat",
        "1",
        "--idle-timeout",
        "0",
    ]);
    let mut quiet = Peer::connect(port);
    quiet.handshake("quiet");
    // Three intervals of silence on the client's turn, each bridged by an answered PING.
    for _ in 0..3 {
        assert_eq!(quiet.expect("PING"), Frame::Ping);
        quiet.send(&Frame::Pong);
    }
    // Either side may ask, whoever's turn it is.
    quiet.send(&Frame::Ping);
    assert_eq!(expect_past_pings(&mut quiet, "PONG"), Frame::Pong);
    quiet.send(&Frame::Message(b"still here".to_vec()));
    assert_eq!(expect_past_pings(&mut quiet, "the ACK"), Frame::Ack);
    assert_eq!(
        expect_past_pings(&mut quiet, "the echo"),
        Frame::Message(b"still here".to_vec())
    );
    quiet.send(&Frame::Ack);
    quiet.end();
    server.expect_line("[#1 quiet] Received: still here");
    server.expect_line(&format!("[#1 quiet] {LEFT}"));

    // A client whose machine or network died answers nothing, and closes nothing.
    let mut gone = Peer::connect(port);
    gone.handshake("gone");
    let waiter = queue_behind(&mut server, port, 3);
    assert_eq!(gone.expect("PING"), Frame::Ping);
    gone.expect_error("no answer to PING within 1 s");
    assert_eq!(
        server.expect_line("[#2 gone] Timed out"),
        "[#2 gone] Timed out: the other side stopped answering (no answer to PING within 1 s)"
    );
    serve_waiter(waiter, 3, &mut server);
}

#[test]
fn the_client_answers_pings_and_gives_up_on_a_server_that_stops_answering() {
    let (port, fake) = fake_server(|peer| {
        expect_hello(peer);
        welcome(peer);
        // Answered while the user has not typed anything yet.
        peer.send(&Frame::Ping);
        assert_eq!(peer.expect("PONG"), Frame::Pong);
        // Then this server falls silent.
        assert_eq!(peer.expect("the client's PING"), Frame::Ping);
        assert_eq!(
            peer.expect("ERROR"),
            Frame::Error("no answer to PING within 1 s".into())
        );
    });
    let mut client = Proc::spawn(
        "client",
        &["client", "127.0.0.1", &port.to_string(), "--heartbeat", "1"],
    );
    client.expect_line("Connected!");
    assert_eq!(
        client.expect_err_line("Timed out"),
        "Timed out: the other side stopped answering (no answer to PING within 1 s)"
    );
    assert_eq!(client.wait_exit(TIMEOUT).code(), Some(1));
    fake.join().expect("fake server");
}

/// A one-connection fake server: runs `script` on the connection it accepts, then closes it
/// politely. The accept is bounded: the thread fails if no client comes in time.
fn fake_server(script: impl FnOnce(&mut Peer) + Send + 'static) -> (u16, thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    let port = listener.local_addr().expect("local address").port();
    let handle = thread::spawn(move || {
        let stream = accept_one(&listener, "the fake server");
        let mut peer = Peer::over(stream).expect("socket options");
        script(&mut peer);
        peer.close();
    });
    (port, handle)
}

fn expect_hello(peer: &mut Peer) {
    match peer.expect("HELLO") {
        Frame::Hello { version: 1, .. } => {}
        other => panic!("the client's first frame is {other:?}"),
    }
}

fn welcome(peer: &mut Peer) {
    peer.send(&Frame::Welcome {
        session_id: 7,
        max_message: 100,
        name: String::new(),
    });
}

#[test]
fn client_prints_the_servers_error_reason_and_exits_1() {
    // Refused at the handshake.
    let (port, fake) = fake_server(|peer| {
        expect_hello(peer);
        peer.send(&Frame::Error("nope".into()));
    });
    let client = run(&["client", "127.0.0.1", &port.to_string()], b"hi\n");
    fake.join().expect("fake server");
    assert_eq!(client.code(), 1, "{client:#?}");
    assert!(
        client
            .stderr
            .lines()
            .any(|l| l == "The other side reported an error: nope"),
        "{client:#?}"
    );
    assert!(!client.stdout.contains("Connected!"), "{client:#?}");

    // Refused in the middle of the chat, after acknowledging the client's message.
    let (port, fake) = fake_server(|peer| {
        expect_hello(peer);
        welcome(peer);
        assert_eq!(peer.expect("MESSAGE"), Frame::Message(b"hi".to_vec()));
        peer.send(&Frame::Ack);
        peer.send(&Frame::Error("nope".into()));
    });
    let client = run(&["client", "127.0.0.1", &port.to_string()], b"hi\n");
    fake.join().expect("fake server");
    assert_eq!(client.code(), 1, "{client:#?}");
    assert!(client.lines().contains(&"Message Received"), "{client:#?}");
    assert!(
        client
            .stderr
            .lines()
            .any(|l| l == "The other side reported an error: nope"),
        "{client:#?}"
    );
}

/// Reads what the client sends until its ERROR; returns the reason.
fn expect_client_error(peer: &mut Peer) -> String {
    for _ in 0..100 {
        match peer.expect("the client's ERROR") {
            Frame::Error(reason) => return reason,
            // The client may have said its line before it saw the violation.
            Frame::Message(_) => {}
            other => panic!("the client sent {other:?} instead of ERROR"),
        }
    }
    panic!("no ERROR from the client");
}

#[test]
fn client_cuts_off_a_misbehaving_server_with_an_error_and_exits_1() {
    type Misbehave = fn(&mut Peer);
    let cases: [(&str, &[&str], Misbehave, &str); 3] = [
        (
            "a WELCOME that stalls after 7 bytes",
            &["--handshake-timeout", "1"],
            |peer| {
                expect_hello(peer);
                let mut welcome = Frame::Welcome {
                    session_id: 1,
                    max_message: 100,
                    name: "slow".into(),
                }
                .encode();
                welcome.truncate(HEADER_LEN + 2);
                peer.send_bytes(&welcome);
            },
            "Timed out: a frame took more than 1 s to arrive",
        ),
        (
            "a MESSAGE header over the client's limit",
            &["--max-message", "8"],
            |peer| {
                expect_hello(peer);
                welcome(peer);
                assert_eq!(peer.expect("MESSAGE"), Frame::Message(b"hi".to_vec()));
                peer.send(&Frame::Ack);
                peer.send_bytes(&[0x04, 0, 0, 0x03, 0xe8]);
            },
            "Protocol error: MESSAGE frame of 1000 bytes is over the limit of 8 bytes",
        ),
        (
            "a MESSAGE on the client's turn",
            &[],
            |peer| {
                expect_hello(peer);
                welcome(peer);
                peer.send(&Frame::Message(b"boo".to_vec()));
            },
            "Protocol error: MESSAGE out of turn",
        ),
    ];
    for (what, flags, misbehave, line) in cases {
        let reason = line.split_once(": ").expect("a reason").1;
        let (port, fake) = fake_server(move |peer| {
            misbehave(peer);
            assert_eq!(expect_client_error(peer), reason, "{what}");
        });
        let port = port.to_string();
        let mut args = vec!["client", "127.0.0.1", &port];
        args.extend_from_slice(flags);
        let client = run(&args, b"hi\n");
        fake.join()
            .unwrap_or_else(|_| panic!("{what}: the fake server failed: {client:#?}"));
        assert_eq!(client.code(), 1, "{what}: {client:#?}");
        assert!(
            client.stderr.lines().any(|l| l == line),
            "{what}: no {line:?} on stderr: {client:#?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 4b. The operator's turn: a client that vanishes, a client that speaks twice.

#[test]
fn a_client_that_vanishes_on_the_operators_turn_is_noticed_at_once() {
    let (mut server, port) = start_server(&[]);
    let mut ghost = Peer::connect(port);
    assert_eq!(ghost.handshake("ghost"), 1);
    ghost.send(&Frame::Message(b"bye soon".to_vec()));
    assert_eq!(ghost.expect("the ACK"), Frame::Ack);
    server.expect_text("Send to #1 ghost: ");
    // Gone between frames, on the operator's turn: nothing unread, a plain FIN.
    drop(ghost);
    assert_eq!(
        server.expect_line("left the chat"),
        "[#1 ghost] The other side left the chat (connection closed)."
    );
    // The operator's late answer is not sent to the departed client; piped, it is held for the
    // next client owed one, and says so.
    server.send_line("too late");
    server.expect_line("Held: nobody is owed an answer yet");
    server.interrupt();
    assert!(server.wait_exit(TIMEOUT).success(), "{}", server.dump());
}

#[test]
fn a_goodbye_that_arrives_with_its_fin_is_read_before_the_close() {
    let (mut server, port) = start_server(&[]);
    let mut brief = Peer::connect(port);
    assert_eq!(brief.handshake("brief"), 1);
    // A last message and END in one write, then FIN: all three may come in one read.
    let mut last_words = Frame::Message(b"bye now".to_vec()).encode();
    Frame::End.encode_into(&mut last_words);
    brief.send_bytes(&last_words);
    brief.stream.shutdown(Shutdown::Write).expect("half-close");
    assert_eq!(brief.expect("the ACK"), Frame::Ack);
    server.expect_line("[#1 brief] Received: bye now");
    assert_eq!(
        server.expect_line("[#1 brief] "),
        format!("[#1 brief] {LEFT}"),
        "the END before the FIN decides how the chat ended"
    );
    brief.expect_closed("after END");
    server.expect_exit(0);
}

#[test]
fn an_echo_too_long_for_its_client_ends_the_chat_instead_of_holding_the_worker() {
    let (mut server, port) = start_server(&["--echo", "--workers", "1"]);
    let mut small = Peer::connect(port);
    small.send(&Frame::Hello {
        version: VERSION,
        max_message: 4,
        name: "small".into(),
    });
    small.expect_welcome();
    small.send(&Frame::Message(b"too long to echo".to_vec()));
    assert_eq!(small.expect("the ACK"), Frame::Ack);
    assert_eq!(small.expect("END"), Frame::End);
    small.expect_closed("after END");
    assert_eq!(
        server.expect_line("[#1 small] Not sent"),
        "[#1 small] Not sent: the message is 16 bytes, over the client's limit of 4."
    );
    // The only worker is free again.
    assert_eq!(chat_once(port, "next", b"hi"), 2);
}

#[test]
fn a_second_message_on_the_operators_turn_is_out_of_turn() {
    let (mut server, port) = start_server(&[]);
    let mut eager = Peer::connect(port);
    assert_eq!(eager.handshake("eager"), 1);
    let mut two = Frame::Message(b"one".to_vec()).encode();
    Frame::Message(b"two".to_vec()).encode_into(&mut two);
    eager.send_bytes(&two);
    assert_eq!(eager.expect("the ACK"), Frame::Ack);
    eager.expect_error("MESSAGE out of turn");
    assert_eq!(server.expect_line("Received:"), "[#1 eager] Received: one");
    assert_eq!(
        server.expect_line("out of turn"),
        "[#1 eager] Protocol error: MESSAGE out of turn"
    );
    // The session is over: the operator has nobody to answer (the piped line is held).
    server.send_line("anyone?");
    server.expect_line("Held: nobody is owed an answer yet");
    server.interrupt();
    let done = server.kill_and_collect();
    assert!(!done.stdout.contains("Received: two"), "{done:#?}");
}

// ---------------------------------------------------------------------------------------------
// 4c. Out of descriptors.

#[test]
fn out_of_descriptors_a_new_client_is_still_told_something() {
    let (mut server, port) = start_server(&["--echo", "--workers", "1"]);
    let pid = server.pid();
    let mut live = Peer::connect(port);
    assert_eq!(live.handshake("live"), 1);
    let mut waiting = Peer::connect(port);
    waiting.send(&hello("waiting"));
    // The server has queued it, and so holds its descriptors, once it says so.
    let addr = waiting.local_addr();
    server.expect_line(&format!("[#2 {addr}] Waiting in line (position 1)."));
    // Room for one more accepted socket, none for the clone a waiting client needs: a new
    // descriptor takes the lowest free number, and must be under the limit.
    let lowest_free = common::lowest_free_fd(pid);
    let limit = lowest_free + 1;
    common::limit_descriptors(pid, limit);
    for n in 0..3 {
        let mut late = Peer::connect(port);
        late.send(&hello("late"));
        match late.recv() {
            Ok(Frame::Full | Frame::Waiting { .. }) => {}
            other => panic!(
                "connection {n} past the descriptor limit got {other:?}, not a word\n{}",
                server.dump()
            ),
        }
    }
    live.end();
    waiting.close();
}

// ---------------------------------------------------------------------------------------------
// 5. A burst of connections.

/// How a burst connection ended.
#[derive(Debug)]
enum Outcome {
    /// WELCOME, ACK and the echo.
    Served,
    /// Told FULL.
    Full,
    /// Anything else: a hang, a silent close, a wrong frame.
    Failed(String),
}

/// A one-shot barrier whose wait is bounded.
struct Gate {
    arrived: Mutex<usize>,
    all_in: Condvar,
    size: usize,
}

impl Gate {
    fn new(size: usize) -> Gate {
        Gate {
            arrived: Mutex::new(0),
            all_in: Condvar::new(),
            size,
        }
    }

    /// Counts this thread in, then waits (at most `PEER_TIMEOUT`) for the others.
    fn arrive_and_wait(&self) {
        let deadline = Instant::now() + PEER_TIMEOUT;
        let mut arrived = self.arrived.lock().expect("gate lock");
        *arrived += 1;
        self.all_in.notify_all();
        while *arrived < self.size {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            arrived = self
                .all_in
                .wait_timeout(arrived, left)
                .expect("gate lock")
                .0;
        }
    }
}

/// The burst connection `n` reports its address once connected, or `None` if it could not.
type Connected = mpsc::Sender<(usize, Option<SocketAddr>)>;

/// One burst connection: connect and HELLO in one go, report the address, the gate, then the
/// rest of the chat or FULL.
fn burst_connection(port: u16, n: usize, connected: &Connected, gate: &Gate) -> Outcome {
    let peer = Peer::try_connect(port).and_then(|mut peer| {
        peer.write(&hello(&format!("burst{n}")).encode())?;
        Ok(peer)
    });
    let _ = connected.send((n, peer.as_ref().ok().map(Peer::local_addr)));
    // The server has admitted or refused every connection of the wave before any goes on: it
    // cannot free a worker meanwhile, so each wave overflows the line.
    gate.arrive_and_wait();
    let mut peer = match peer {
        Ok(peer) => peer,
        Err(e) => return Outcome::Failed(format!("connect or HELLO: {e}")),
    };
    let mut frame = peer.recv();
    let text = format!("burst message {n}");
    let outcome = (|| {
        for _ in 0..100 {
            match frame.map_err(|e| format!("{e:?}"))? {
                Frame::Waiting { .. } => frame = peer.recv(),
                Frame::Full => return Ok(Outcome::Full),
                Frame::Welcome { .. } => {
                    peer.write(&Frame::Message(text.clone().into_bytes()).encode())
                        .map_err(|e| e.to_string())?;
                    match peer.recv() {
                        Ok(Frame::Ack) => {}
                        other => return Err(format!("{other:?} instead of ACK")),
                    }
                    match peer.recv() {
                        Ok(Frame::Message(echo)) if echo == text.as_bytes() => {}
                        other => return Err(format!("{other:?} instead of the echo")),
                    }
                    let mut bye = Frame::Ack.encode();
                    Frame::End.encode_into(&mut bye);
                    peer.write(&bye).map_err(|e| e.to_string())?;
                    return Ok(Outcome::Served);
                }
                other => return Err(format!("unexpected {other:?}")),
            }
        }
        Err("more than 100 WAITING frames".to_string())
    })();
    peer.close();
    outcome.unwrap_or_else(Outcome::Failed)
}

/// Whether `line` is the server's word on burst connection `n` from `addr` as it arrives:
/// served at once, waiting in line, or refused.
fn admits(line: &str, n: usize, addr: SocketAddr) -> bool {
    line == format!("[{addr}] Refused: the server is full.")
        || line.ends_with(&format!(" burst{n} {addr}] Connected."))
        || (line.starts_with("[#")
            && line.contains(&format!(" {addr}] Waiting in line (position ")))
}

/// Waits until the server has said, for each of the `count` connections reported on
/// `connected`, that it serves it, queues it or refuses it. The server's lines, not the frames a
/// client receives: when a waiting client is sent WAITING depends on when its first byte
/// reached the server.
fn await_admissions(
    server: &mut Proc,
    connected: &mpsc::Receiver<(usize, Option<SocketAddr>)>,
    count: usize,
) {
    let mut pending = Vec::with_capacity(count);
    for _ in 0..count {
        match connected.recv_timeout(PEER_TIMEOUT) {
            Ok((n, Some(addr))) => pending.push((n, addr)),
            // It reports its own failure.
            Ok((_, None)) => {}
            Err(e) => panic!("a burst connection neither connected nor failed in time: {e}"),
        }
    }
    while !pending.is_empty() {
        let line = server.expect_line("127.0.0.1:");
        pending.retain(|&(n, addr)| !admits(&line, n, addr));
    }
}

#[test]
fn a_burst_of_300_connections_is_served_or_told_full_and_leaks_nothing() {
    const WAVES: usize = 10;
    const WAVE: usize = 30;
    let (mut server, port) = start_server(&["--workers", "2", "--backlog", "16", "--echo"]);
    let pid = server.pid();
    let (fds_before, rss_before) = baseline(&server, port);

    let (mut served, mut full) = (0, 0);
    let mut failed = Vec::new();
    for wave in 0..WAVES {
        // The wave's connections, and this thread once the server has had its say on each.
        let gate = Gate::new(WAVE + 1);
        let (connected_tx, connected) = mpsc::channel();
        let outcomes: Vec<Outcome> = thread::scope(|s| {
            let gate = &gate;
            let threads: Vec<_> = (0..WAVE)
                .map(|i| {
                    let connected = connected_tx.clone();
                    s.spawn(move || burst_connection(port, wave * WAVE + i, &connected, gate))
                })
                .collect();
            await_admissions(&mut server, &connected, WAVE);
            gate.arrive_and_wait();
            threads
                .into_iter()
                .map(|t| {
                    t.join()
                        .unwrap_or_else(|_| Outcome::Failed("thread panicked".into()))
                })
                .collect()
        });
        for (i, outcome) in outcomes.into_iter().enumerate() {
            match outcome {
                Outcome::Served => served += 1,
                Outcome::Full => full += 1,
                Outcome::Failed(why) => failed.push(format!("#{}: {why}", wave * WAVE + i)),
            }
        }
    }

    // Back to the baseline, normally; a socket still closing may stay a little longer.
    let fds_after = settle_fds(pid, fds_before, Duration::from_secs(3));
    if fds_after > fds_before {
        eprintln!("server descriptors now: {:#?}", fd_list(pid));
    }
    let rss_after = rss_kib(pid);
    eprintln!(
        "burst: {} connections: {served} served, {full} told FULL, {} failed; \
         server fds {fds_before} -> {fds_after}, VmRSS {rss_before} KiB -> {rss_after} KiB",
        WAVES * WAVE,
        failed.len()
    );
    assert!(failed.is_empty(), "{failed:#?}\n{}", server.dump());
    assert_eq!(served + full, WAVES * WAVE);
    // A wave cannot get more than workers + backlog = 18 places: at least 12 are refused.
    assert!(full >= WAVES * 12, "only {full} FULL");
    assert!(served >= 18, "only {served} served");
    // Refused connections get no session number: the next one follows the warm-up and the served.
    assert_eq!(
        chat_once(port, "after", b"after the burst"),
        2 + served as u32
    );
    assert!(
        fds_after <= fds_before + FD_SLACK,
        "descriptors leaked: {fds_before} -> {fds_after}"
    );
    assert!(
        rss_after < rss_before + RSS_SLACK_KIB,
        "memory grew: {rss_before} KiB -> {rss_after} KiB"
    );
}

// ---------------------------------------------------------------------------------------------
// 6. Soak.

#[test]
fn soak_of_2000_sequential_sessions_leaks_no_descriptors_or_memory() {
    const SESSIONS: u32 = 2000;
    let (mut server, port) = start_server(&["--workers", "4", "--echo"]);
    let pid = server.pid();
    let (fds_before, rss_before) = baseline(&server, port);

    let started = Instant::now();
    let mut last = 0;
    for n in 0..SESSIONS {
        last = chat_once(port, "soak", format!("soak {n}").as_bytes());
    }
    let took = started.elapsed();
    assert_eq!(
        last,
        SESSIONS + 1,
        "session ids must count up with each accept"
    );
    server.expect_line(&format!("[#{last} soak] {LEFT}"));

    // Back to the baseline, normally; a socket still closing may stay a little longer.
    let fds_after = settle_fds(pid, fds_before, Duration::from_secs(3));
    if fds_after > fds_before {
        eprintln!("server descriptors now: {:#?}", fd_list(pid));
    }
    let rss_after = rss_kib(pid);
    eprintln!(
        "soak: {SESSIONS} sessions in {:.1} s; server fds {fds_before} -> {fds_after}, \
         VmRSS {rss_before} KiB -> {rss_after} KiB",
        took.as_secs_f64()
    );
    assert!(
        fds_after <= fds_before + FD_SLACK,
        "descriptors leaked: {fds_before} -> {fds_after}"
    );
    assert!(
        rss_after < rss_before + RSS_SLACK_KIB,
        "memory grew: {rss_before} KiB -> {rss_after} KiB"
    );
}

// ---------------------------------------------------------------------------------------------
// 7. Terminal safety.

/// A typed line of escape sequences (CSI, OSC), BEL, backspace, CR, a C1 control, good UTF-8 and
/// a bad byte.
fn hostile_line(prefix: &str) -> Vec<u8> {
    let mut bytes = prefix.as_bytes().to_vec();
    bytes.extend_from_slice(b"\x1b[2J\x1b]0;title\x07 bel\x07 bs\x08 cr\r c1\xc2\x9b ");
    bytes.extend_from_slice("café 日本 🎉".as_bytes());
    bytes.extend_from_slice(b" bad\xff.\n");
    bytes
}

/// How [`hostile_line`] must read once defused.
fn defused(prefix: &str) -> String {
    format!("{prefix}^[[2J^[]0;title^G bel^G bs^H cr^M c1\\u{{9b}} café 日本 🎉 bad\\xff.")
}

fn assert_harmless(who: &str, out: &[u8]) {
    let found = terminal_controls(out);
    assert!(
        found.is_empty(),
        "{who} printed terminal controls {found:?}: {:?}",
        String::from_utf8_lossy(out)
    );
}

#[test]
fn peer_text_cannot_drive_either_terminal_but_unicode_survives() {
    let (mut server, port) = start_server(&["--name", "hub\x1b[31m"]);
    let mut client = Proc::spawn(
        "client",
        &[
            "client",
            "127.0.0.1",
            &port.to_string(),
            "--name",
            "eve\x1b]0;t\x07",
        ],
    );
    client.expect_line("Connected!");
    assert_eq!(client.expect_line("You are #1"), "You are #1 on hub^[[31m.");
    let label = "#1 eve^[]0;t^G";
    server.expect_line(&format!("[{label} 127.0.0.1:"));

    // Client -> server console.
    client.send_bytes(&hostile_line("from client "));
    assert_eq!(
        server.expect_line("Received:"),
        format!("[{label}] Received: {}", defused("from client "))
    );

    // Operator -> client.
    server.expect_text(&format!("Send to {label}: "));
    server.send_bytes(&hostile_line("from operator "));
    assert_eq!(
        client.expect_line("Received:"),
        format!("[hub^[[31m] Received: {}", defused("from operator "))
    );

    // A raw client's name and its ERROR reason reach the console defused too.
    let mut raw = Peer::connect(port);
    assert_eq!(raw.handshake("\x1b[5mraw\u{9b}"), 2);
    raw.send(&Frame::Error("\x1b]52;c;aGk=\x07clipboard\u{85}".into()));
    raw.close();
    assert_eq!(
        server.expect_line("reported an error"),
        "[#2 ^[[5mraw\\u{9b}] The client reported an error: ^[]52;c;aGk=^Gclipboard\\u{85}"
    );

    client.send_line("end");
    let client = client.expect_exit(0);
    server.expect_line(&format!("[{label}] {LEFT}"));
    let server = server.expect_exit(0);

    for (who, done) in [("the client", &client), ("the server", &server)] {
        assert_harmless(&format!("{who} (stdout)"), &done.raw_stdout);
        assert_harmless(&format!("{who} (stderr)"), done.stderr.as_bytes());
        assert!(done.stdout.contains("café 日本 🎉"), "{who}: {done:#?}");
        assert!(done.stdout.contains("bad\\xff."), "{who}: {done:#?}");
    }
}

#[test]
fn reasons_from_a_server_cannot_drive_the_clients_terminal() {
    let evil = "\x1b]0;pwned\x07\x1b[2J\u{9b}nope";
    let (port, fake) = fake_server(move |peer| {
        expect_hello(peer);
        peer.send(&Frame::Error(evil.into()));
    });
    let refused = run(&["client", "127.0.0.1", &port.to_string()], b"hi\n");
    fake.join().expect("fake server");

    let (port, fake) = fake_server(move |peer| {
        expect_hello(peer);
        welcome(peer);
        assert_eq!(peer.expect("MESSAGE"), Frame::Message(b"hi".to_vec()));
        peer.send(&Frame::Ack);
        peer.send(&Frame::Kicked(evil.into()));
    });
    let kicked = run(&["client", "127.0.0.1", &port.to_string()], b"hi\n");
    fake.join().expect("fake server");

    assert_eq!(refused.code(), 1, "{refused:#?}");
    assert!(refused.stderr.contains("nope"), "{refused:#?}");
    assert_eq!(kicked.code(), 0, "{kicked:#?}");
    assert!(kicked.stdout.contains("nope"), "{kicked:#?}");
    let mut found = Vec::new();
    for (who, done) in [("refused", &refused), ("kicked", &kicked)] {
        for (stream, out) in [
            ("stdout", &done.raw_stdout[..]),
            ("stderr", done.stderr.as_bytes()),
        ] {
            let controls = terminal_controls(out);
            if !controls.is_empty() {
                found.push(format!(
                    "{who} client's {stream} has {controls:?}: {:?}",
                    String::from_utf8_lossy(out)
                ));
            }
        }
    }
    assert!(found.is_empty(), "{found:#?}");
}

// ---------------------------------------------------------------------------------------------
// 8. Shutdown under load.

/// A live client that chats with the echo server until it is told SHUTDOWN. Reports on
/// `progress` once 20 of its messages were acknowledged; returns the acknowledged messages and
/// whether SHUTDOWN came.
fn chat_until_shutdown(
    mut peer: Peer,
    k: u32,
    progress: mpsc::Sender<u32>,
) -> (Vec<String>, Result<(), String>) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut acked = Vec::new();
    let mut gone = false;
    for i in 0..1_000_000 {
        if Instant::now() >= deadline {
            return (acked, Err("no SHUTDOWN within 20 s".into()));
        }
        let text = format!("live{k}-{i}");
        // Once a write fails the server has closed: its last frames are still to be read.
        if !gone {
            gone = peer
                .write(&Frame::Message(text.clone().into_bytes()).encode())
                .is_err();
        }
        match peer.recv() {
            Ok(Frame::Ack) => {
                acked.push(text.clone());
                if acked.len() == 20 {
                    let _ = progress.send(k);
                }
            }
            Ok(Frame::Shutdown) => return (acked, Ok(())),
            other => return (acked, Err(format!("{other:?} after {text}"))),
        }
        match peer.recv() {
            Ok(Frame::Message(echo)) if echo == text.as_bytes() => {
                if !gone {
                    gone = peer.write(&Frame::Ack.encode()).is_err();
                }
            }
            Ok(Frame::Shutdown) => return (acked, Ok(())),
            other => {
                return (
                    acked,
                    Err(format!("{other:?} instead of the echo of {text}")),
                );
            }
        }
    }
    (acked, Err("a million messages and no SHUTDOWN".into()))
}

#[test]
fn sigint_under_load_tells_every_client_and_keeps_every_acknowledged_message() {
    let (mut server, port) = start_server(&["--workers", "2", "--backlog", "4", "--echo"]);

    let (progress_tx, progress) = mpsc::channel();
    let live: Vec<_> = (1..=2)
        .map(|k| {
            let mut peer = Peer::connect(port);
            assert_eq!(peer.handshake(&format!("live{k}")), k);
            let progress = progress_tx.clone();
            thread::spawn(move || chat_until_shutdown(peer, k, progress))
        })
        .collect();
    for _ in 0..2 {
        progress
            .recv_timeout(TIMEOUT)
            .expect("both live clients chatting");
    }

    // Each in line, as the server says, before the next comes: sessions 3 to 6, positions 1 to 4.
    let mut waiting: Vec<Peer> = (1..=4)
        .map(|position| {
            let mut peer = Peer::connect(port);
            peer.send(&hello("waiting"));
            let addr = peer.local_addr();
            let id = position + 2;
            server.expect_line(&format!(
                "[#{id} {addr}] Waiting in line (position {position})."
            ));
            peer
        })
        .collect();
    let mut extra = Peer::connect(port);
    extra.send(&hello("extra"));
    assert_eq!(extra.expect("FULL"), Frame::Full);
    extra.close();

    server.interrupt();

    for (i, peer) in waiting.iter_mut().enumerate() {
        let mut told = false;
        for _ in 0..100 {
            match peer.recv() {
                Ok(Frame::Waiting { .. }) => {}
                Ok(Frame::Shutdown) => {
                    told = true;
                    break;
                }
                other => panic!("waiting client {}: {other:?} instead of SHUTDOWN", i + 1),
            }
        }
        assert!(told, "waiting client {}: no SHUTDOWN", i + 1);
    }
    for peer in waiting {
        peer.close();
    }
    let mut acked = Vec::new();
    for (k, thread) in (1..=2).zip(live) {
        let (messages, told) = thread.join().expect("live client thread");
        told.unwrap_or_else(|why| panic!("live client {k}: {why}"));
        acked.extend(messages.into_iter().map(|m| (k, m)));
    }

    let status = server.wait_exit(Duration::from_secs(5));
    assert_eq!(status.code(), Some(0), "{}", server.dump());
    let server = server.finish();
    assert!(
        server.lines().contains(&"The server has shut down."),
        "{server:#?}"
    );
    let lines: HashSet<&str> = server.stdout.lines().collect();
    let missing: Vec<String> = acked
        .iter()
        .map(|(k, m)| format!("[#{k} live{k}] Received: {m}"))
        .filter(|line| !lines.contains(line.as_str()))
        .collect();
    eprintln!(
        "shutdown under load: {} acknowledged messages, {} missing from the server's stdout",
        acked.len(),
        missing.len()
    );
    assert!(
        missing.is_empty(),
        "acknowledged but not shown: {missing:#?}"
    );
}
