//! The original program's line protocol ("legacy"): detection, server, waiting line, client, library.

mod common;

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use client_server_chat::session::{
    Ending, Event, STRANGER_NOTICE, Session, Stopper, Timeouts, Turn, Unsaid,
};

use common::{
    Proc, SERVER_READY, Script, accept_one, assert_hi_then_end_transcript,
    echo_server_with_a_good_client, expect_ack, good_turn, is_roundtrip_line, run, start_client,
    start_server,
};

/// The longest a raw peer waits to connect, to be accepted, or for any read or write.
const PEER_TIMEOUT: Duration = Duration::from_secs(10);

/// Most bytes a raw peer takes before it gives up waiting for the other side to close.
const MAX_REST: usize = 64 * 1024;

/// The receiver's answer to every legacy message.
const ACK: &[u8] = b"ack: Message Received\n";

const LEFT: &str = "The other side left the chat.";

/// How both our server and our client report a line that breaks the legacy format.
const BAD_LINE: &str =
    "Protocol error: a line that is neither `msg: ` text nor `ack: Message Received`";

const LEGACY_CONNECTED: &str = "] Connected, speaking the original line protocol.";

/// A legacy message on the wire.
fn msg(text: &str) -> Vec<u8> {
    format!("msg: {text}\n\n").into_bytes()
}

fn joined(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

fn localhost(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A raw peer speaking the line protocol by hand, byte for byte.
struct LegacyPeer {
    stream: TcpStream,
}

impl LegacyPeer {
    fn connect(port: u16) -> LegacyPeer {
        let stream = TcpStream::connect_timeout(&localhost(port), PEER_TIMEOUT)
            .unwrap_or_else(|e| panic!("cannot connect to port {port}: {e}"));
        LegacyPeer::over(stream)
    }

    fn over(stream: TcpStream) -> LegacyPeer {
        stream.set_nodelay(true).expect("nodelay");
        stream
            .set_read_timeout(Some(PEER_TIMEOUT))
            .expect("read timeout");
        stream
            .set_write_timeout(Some(PEER_TIMEOUT))
            .expect("write timeout");
        LegacyPeer { stream }
    }

    fn local_addr(&self) -> SocketAddr {
        self.stream.local_addr().expect("local address")
    }

    fn send(&mut self, bytes: &[u8]) {
        self.stream
            .write_all(bytes)
            .unwrap_or_else(|e| panic!("cannot write {:?}: {e}", String::from_utf8_lossy(bytes)));
    }

    fn say(&mut self, text: &str) {
        self.send(&msg(text));
    }

    /// The next bytes must be exactly `expected`: anything else in front of them (a binary
    /// notice, say) shows up as a mismatch.
    fn expect(&mut self, expected: &[u8]) {
        let deadline = Instant::now() + PEER_TIMEOUT;
        let mut got = vec![0u8; expected.len()];
        let mut filled = 0;
        while filled < got.len() {
            assert!(
                Instant::now() < deadline,
                "expected {:?}, got only {:?} in time",
                String::from_utf8_lossy(expected),
                String::from_utf8_lossy(&got[..filled])
            );
            match self.stream.read(&mut got[filled..]) {
                Ok(0) => panic!(
                    "expected {:?}, the connection closed after {:?}",
                    String::from_utf8_lossy(expected),
                    String::from_utf8_lossy(&got[..filled])
                ),
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => panic!(
                    "expected {:?}, got {:?} and then {e}",
                    String::from_utf8_lossy(expected),
                    String::from_utf8_lossy(&got[..filled])
                ),
            }
        }
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(expected)
        );
    }

    /// Everything the other side sends until it closes the connection in an orderly way
    /// (a reset or a timeout fails the test).
    fn rest(&mut self) -> Vec<u8> {
        let deadline = Instant::now() + PEER_TIMEOUT;
        let mut got = Vec::new();
        let mut chunk = [0u8; 4096];
        while got.len() <= MAX_REST && Instant::now() < deadline {
            match self.stream.read(&mut chunk) {
                Ok(0) => return got,
                Ok(n) => got.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => panic!(
                    "waiting for the close after {:?}: {e}",
                    String::from_utf8_lossy(&got)
                ),
            }
        }
        panic!(
            "the other side did not close; it sent {:?}",
            String::from_utf8_lossy(&got)
        );
    }

    /// The other side must close without sending anything more.
    fn expect_closed(&mut self, when: &str) {
        let rest = self.rest();
        assert!(
            rest.is_empty(),
            "{when}: expected a close and nothing else, got {rest:02x?} ({:?})",
            String::from_utf8_lossy(&rest)
        );
    }
}

/// An original (OCaml) server played by a script: accepts one client, runs `script`, then checks
/// the client sent nothing more before it closed.
fn original_server(
    script: impl FnOnce(&mut LegacyPeer) + Send + 'static,
) -> (u16, thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    let port = listener.local_addr().expect("local address").port();
    let handle = thread::spawn(move || {
        let stream = accept_one(&listener, "the original server");
        let mut peer = LegacyPeer::over(stream);
        script(&mut peer);
        let _ = peer.stream.shutdown(Shutdown::Write);
        peer.expect_closed("after the script");
    });
    (port, handle)
}

// ---------------------------------------------------------------------------------------------
// The server: telling the protocols apart.

#[test]
fn a_stranger_gets_one_line_saying_what_the_server_speaks_and_others_chat_on() {
    let (mut server, port, mut good) = echo_server_with_a_good_client(&[]);

    let strangers: [(&[u8], &str); 2] = [
        (b"hello there\n", "hello th"),
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "GET / HT"),
    ];
    // The good client is #1; each stranger gets the next number.
    for (turn, (id, (bytes, shown))) in (2u32..).zip(strangers).enumerate() {
        let mut stranger = LegacyPeer::connect(port);
        let addr = stranger.local_addr();
        stranger.send(bytes);
        let answer = stranger.rest();
        // What the stranger's user reads: one line of text that names the program, and nothing
        // else (no binary frame, no control character).
        let text = String::from_utf8_lossy(&answer);
        assert!(
            text.contains("client_server_chat")
                && text.ends_with('\n')
                && text.matches('\n').count() == 1
                && !text.chars().any(|c| c.is_control() && c != '\n'),
            "{shown:?}: the answer should be one human-readable line, got {text:?}"
        );
        assert_eq!(
            text, STRANGER_NOTICE,
            "{shown:?}: the answer should be the notice alone"
        );
        assert_eq!(
            server.expect_line("Not connected:"),
            format!(
                "[#{id} {addr}] Not connected: Protocol error: speaks neither protocol \
                 (it began with \"{shown}\"); it was told what this server speaks"
            )
        );
        good_turn(&mut good, turn + 1);
    }

    good.send_line("end");
    good.expect_exit(0);
    server.expect_line(&format!("[#1] {LEFT}"));
}

#[test]
fn a_legacy_client_chats_with_the_echo_server_and_its_lines_show_as_one_indented_block() {
    let (mut server, port) = start_server(&["--echo"]);
    let mut peer = LegacyPeer::connect(port);
    let addr = peer.local_addr();

    peer.say("two\nlines");
    peer.expect(&joined(&[ACK, &msg("two\nlines")]));
    peer.send(ACK);
    // An empty text is a message like any other: the prefix, then the empty line at once.
    peer.say("");
    peer.expect(&joined(&[ACK, &msg("")]));
    peer.send(ACK);
    // `end` is still owed its ACK, and then the server closes.
    peer.say("end");
    peer.expect(ACK);
    peer.expect_closed("after `end`");

    assert_eq!(
        server.expect_line(LEGACY_CONNECTED),
        format!("[#1 (legacy) {addr}{LEGACY_CONNECTED}")
    );
    assert_eq!(
        server.expect_line("Received:"),
        "[#1 (legacy)] Received: two"
    );
    // The next line goes on under the first, not as a line of the console's own.
    assert_eq!(server.expect_line("lines"), "                        lines");
    expect_ack(&mut server, "[#1 (legacy)] ");
    assert_eq!(server.expect_line("Received:"), "[#1 (legacy)] Received: ");
    assert_eq!(
        server.expect_line("left the chat"),
        format!("[#1 (legacy)] {LEFT}")
    );
}

#[test]
fn a_legacy_client_closing_between_messages_has_left_the_chat() {
    let (mut server, port) = start_server(&["--echo"]);
    let mut peer = LegacyPeer::connect(port);
    peer.say("hi");
    peer.expect(&joined(&[ACK, &msg("hi")]));
    peer.send(ACK);
    // The original program ends a chat by closing, without `end`.
    peer.stream.shutdown(Shutdown::Write).expect("half-close");
    peer.expect_closed("after our close");
    assert_eq!(
        server.expect_line("left the chat"),
        format!("[#1 (legacy)] {LEFT}")
    );
    let server = server.kill_and_collect();
    assert!(
        !server.stdout.contains("Protocol error") && !server.stdout.contains("Not delivered"),
        "{server:#?}"
    );
}

#[test]
fn the_operator_answers_a_legacy_client_and_ending_sends_it_msg_end() {
    let (mut server, port) = start_server(&[]);
    let mut peer = LegacyPeer::connect(port);
    peer.say("hi");
    peer.expect(ACK);
    server.expect_line(LEGACY_CONNECTED);
    assert_eq!(
        server.expect_line("Received:"),
        "[#1 (legacy)] Received: hi"
    );

    server.expect_text("Send to #1 (legacy): ");
    server.send_line("hello");
    // With stdin piped, the typed line is echoed right after the prompt.
    assert_eq!(server.expect_line("hello"), "hello");
    peer.expect(&msg("hello"));
    peer.send(ACK);
    assert_eq!(
        server.expect_line("Message Received"),
        "[#1 (legacy)] Message Received"
    );

    peer.say("bye");
    peer.expect(ACK);
    assert_eq!(
        server.expect_line("Received:"),
        "[#1 (legacy)] Received: bye"
    );
    server.expect_text("Send to #1 (legacy): ");
    server.send_line("end");
    // The original knows no END frame: the goodbye is the message `end`, then the close.
    peer.expect(&msg("end"));
    peer.expect_closed("after the operator's `end`");
    server.expect_line("[#1 (legacy)] You ended the chat.");
}

#[test]
fn a_kick_or_a_shutdown_reaches_a_legacy_client_as_msg_end() {
    let (mut server, port) = start_server(&[]);
    let mut kicked = LegacyPeer::connect(port);
    kicked.say("hi");
    kicked.expect(ACK);
    let mut stayed = LegacyPeer::connect(port);
    stayed.say("hi");
    stayed.expect(ACK);

    // The original has no KICKED or SHUTDOWN, and no way to carry the reason: only `end`.
    server.send_line("/kick 1 go away");
    kicked.expect(&msg("end"));
    kicked.expect_closed("after the kick");
    server.expect_line("[#1 (legacy)] Kicked: go away");

    // The end of the operator's input shuts the server down.
    server.close_stdin();
    stayed.expect(&msg("end"));
    stayed.expect_closed("after the shutdown");
    server.expect_line("[#2 (legacy)] Closed: the server is shutting down.");
    server.expect_exit(0);
}

#[test]
fn legacy_peers_breaking_the_format_or_the_limit_are_closed_while_another_client_chats_on() {
    let (mut server, port, mut good) = echo_server_with_a_good_client(&["--max-message", "8"]);

    type Misbehave = fn(&mut LegacyPeer);
    let cases: [(&str, Misbehave, &str, &str); 4] = [
        (
            "a line where the ACK belongs",
            |peer| {
                peer.say("hi");
                peer.expect(&joined(&[ACK, &msg("hi")]));
                peer.send(b"hello there\n");
            },
            BAD_LINE,
            "",
        ),
        (
            "a line where `msg: ` belongs",
            |peer| {
                peer.say("hi");
                peer.expect(&joined(&[ACK, &msg("hi")]));
                peer.send(ACK);
                peer.send(b"hello there\n");
            },
            BAD_LINE,
            "",
        ),
        (
            "a message one byte over --max-message, after one exactly at it",
            |peer| {
                peer.say("12345678");
                peer.expect(&joined(&[ACK, &msg("12345678")]));
                peer.send(ACK);
                peer.say("123456789");
            },
            "Protocol error: a message of 9 bytes is over the limit of 8 bytes",
            "",
        ),
        (
            "a text that never ends, refused before its empty line",
            |peer| peer.send(format!("msg: {}", "x".repeat(100)).as_bytes()),
            // How much had arrived when it was refused depends on how the reads fell.
            "Protocol error: a message of ",
            " bytes is over the limit of 8 bytes",
        ),
    ];
    // The good client is #1; each legacy peer gets the next number.
    for (turn, (id, (what, misbehave, head, tail))) in (2u32..).zip(cases).enumerate() {
        let mut peer = LegacyPeer::connect(port);
        misbehave(&mut peer);
        // No ERROR frame, nor anything else: the original has no way to say why.
        peer.expect_closed(what);
        let line = server.expect_line("Protocol error:");
        let prefix = format!("[#{id} (legacy)] {head}");
        assert!(
            line.starts_with(&prefix) && line.ends_with(tail),
            "{what}: expected {prefix:?}..{tail:?}, got {line:?}"
        );
        if tail.is_empty() {
            assert_eq!(line, prefix, "{what}");
        }
        good_turn(&mut good, turn + 1);
    }

    good.send_line("end");
    good.expect_exit(0);
    server.expect_line(&format!("[#1] {LEFT}"));
}

#[test]
fn a_legacy_client_that_waits_in_line_gets_no_binary_notices() {
    let (mut server, port) = start_server(&["--echo", "-w", "1"]);
    let mut holder = start_client("holder", port);
    holder.expect_line("Connected!");
    let mut normal = start_client("normal", port);
    // The server's line shows it is first in line, whenever its WAITING notice goes out.
    let first = server.expect_line("] Waiting in line (position 1).");
    assert!(first.starts_with("[#2 127.0.0.1:"), "{first:?}");

    // Second in line, so that its place changes (2, then 1) before it is served: each change
    // is a moment a WAITING notice could wrongly go out to it.
    let mut legacy = LegacyPeer::connect(port);
    let addr = legacy.local_addr();
    legacy.say("queued");
    server.expect_line(&format!("[#3 {addr}] Waiting in line (position 2)."));

    holder.send_line("end");
    holder.expect_exit(0);
    normal.expect_line("Connected!");
    good_turn(&mut normal, 1);
    normal.send_line("end");
    normal.expect_exit(0);

    // Whatever came before the ACK (a WAITING frame) would show up here as a mismatch.
    legacy.expect(&joined(&[ACK, &msg("queued")]));
    legacy.send(ACK);
    legacy.say("end");
    legacy.expect(ACK);
    legacy.expect_closed("after `end`");

    assert_eq!(
        server.expect_line(LEGACY_CONNECTED),
        format!("[#3 (legacy) {addr}{LEGACY_CONNECTED}")
    );
    assert_eq!(
        server.expect_line("[#3 (legacy)] Received:"),
        "[#3 (legacy)] Received: queued"
    );
    server.expect_line(&format!("[#3 (legacy)] {LEFT}"));
}

// ---------------------------------------------------------------------------------------------
// `client --legacy` against an original server.

fn legacy_client(port: u16) -> Proc {
    Proc::spawn(
        "client",
        &["client", "127.0.0.1", &port.to_string(), "--legacy"],
    )
}

#[test]
fn legacy_client_chats_with_an_original_server_and_end_sends_msg_end() {
    let (port, original) = original_server(|peer| {
        peer.expect(&msg("hi"));
        peer.send(ACK);
        peer.send(&msg("two\nlines"));
        peer.expect(ACK);
        peer.expect(&msg("end"));
        // The original acknowledges `end` like any message; the client may be gone by then.
        let _ = peer.stream.write_all(ACK);
    });
    let client = run(
        &["client", "127.0.0.1", &port.to_string(), "--legacy"],
        b"hi\nend\n",
    );
    original.join().expect("the original server's script");
    assert_eq!(client.code(), 0, "{client:#?}");
    assert_hi_then_end_transcript(
        &client,
        port,
        "Connected! (speaking the original line protocol)",
        "Received: two\n          lines",
    );
    assert!(client.stderr.is_empty(), "{client:#?}");
}

#[test]
fn legacy_client_acks_the_servers_msg_end_and_exits_0() {
    let (port, original) = original_server(|peer| {
        peer.expect(&msg("hi"));
        peer.send(ACK);
        peer.send(&msg("end"));
        peer.expect(ACK);
    });
    let mut client = legacy_client(port);
    client.expect_line("Connected!");
    client.send_line("hi");
    // Stdin stays open: the end must come from the server's `end`, not from our input.
    client.expect_line("Message Received");
    assert_eq!(client.expect_line("left the chat"), LEFT);
    let done = client.expect_exit(0);
    original.join().expect("the original server's script");
    assert!(!done.stdout.contains("Received: end"), "{done:#?}");
    assert!(done.stderr.is_empty(), "{done:#?}");
}

#[test]
fn legacy_client_whose_server_closes_on_its_turn_exits_0() {
    let (port, original) = original_server(|peer| {
        peer.expect(&msg("hi"));
        peer.send(ACK);
        peer.send(&msg("bye"));
        peer.expect(ACK);
    });
    let mut client = legacy_client(port);
    client.send_line("hi");
    assert_eq!(client.expect_line("Received:"), "Received: bye");
    // The script is over: the original server closes while the client's user has the turn.
    client.expect_line("left the chat");
    let done = client.expect_exit(0);
    original.join().expect("the original server's script");
    assert!(done.stderr.is_empty(), "{done:#?}");
}

#[test]
fn legacy_client_closes_on_a_bad_line_from_the_server_and_exits_1() {
    type Misbehave = fn(&mut LegacyPeer);
    let cases: [(&str, Misbehave, &str); 2] = [
        (
            "a line where the ACK belongs",
            |peer| {
                peer.expect(&msg("hi"));
                peer.send(b"OK\n");
            },
            "Not delivered: the server did not acknowledge your last message.",
        ),
        (
            "a line where `msg: ` belongs",
            |peer| {
                peer.expect(&msg("hi"));
                peer.send(ACK);
                peer.send(b"hello there\n");
            },
            "Message Received",
        ),
    ];
    for (what, misbehave, shown) in cases {
        // The original server's check that nothing follows `msg: hi` is the proof that the
        // client sent no binary ERROR frame.
        let (port, original) = original_server(misbehave);
        let client = run(
            &["client", "127.0.0.1", &port.to_string(), "--legacy"],
            b"hi\n",
        );
        original
            .join()
            .unwrap_or_else(|_| panic!("{what}: the original server failed: {client:#?}"));
        assert_eq!(client.code(), 1, "{what}: {client:#?}");
        assert!(client.lines().contains(&shown), "{what}: {client:#?}");
        assert!(
            client.stderr.lines().any(|l| l == BAD_LINE),
            "{what}: no {BAD_LINE:?} on stderr: {client:#?}"
        );
    }
}

#[test]
fn legacy_with_name_or_on_the_server_is_a_usage_error() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    let port = listener.local_addr().expect("local address").port();
    let client = run(
        &[
            "client",
            "127.0.0.1",
            &port.to_string(),
            "--legacy",
            "--name",
            "x",
        ],
        b"hi\n",
    );
    assert_eq!(client.code(), 2, "{client:#?}");
    assert_eq!(
        client.stderr.lines().next(),
        Some("error: --name cannot go with --legacy: the original protocol carries no names"),
        "{client:#?}"
    );
    // The client has exited: a connection it had made would be waiting to be accepted.
    listener.set_nonblocking(true).expect("nonblocking");
    match listener.accept() {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
        other => panic!("the client connected despite the usage error: {other:?}"),
    }

    let server = run(&["server", "127.0.0.1", "0", "--legacy"], b"");
    assert_eq!(server.code(), 2, "{server:#?}");
    assert_eq!(
        server.stderr.lines().next(),
        Some(
            "error: --legacy is a client option: the server tells the two protocols apart by itself"
        ),
        "{server:#?}"
    );
    assert!(!server.stdout.contains(SERVER_READY), "{server:#?}");
}

#[test]
fn legacy_client_chats_with_our_echo_server_end_to_end() {
    let (mut server, port) = start_server(&["--echo"]);
    let client = run(
        &["client", "127.0.0.1", &port.to_string(), "--legacy"],
        b"hi\ntwo words\nend\n",
    );
    assert_eq!(client.code(), 0, "{client:#?}");
    let lines = client.lines();
    let received: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.starts_with("Received:"))
        .collect();
    assert_eq!(
        received,
        ["Received: hi", "Received: two words"],
        "{client:#?}"
    );
    assert_eq!(
        lines.iter().filter(|l| is_roundtrip_line(l, "")).count(),
        2,
        "{client:#?}"
    );
    assert_eq!(
        lines.last().copied(),
        Some("The chat has ended."),
        "{client:#?}"
    );

    let connected = server.expect_line(LEGACY_CONNECTED);
    assert!(
        connected.starts_with("[#1 (legacy) 127.0.0.1:"),
        "connected line: {connected:?}"
    );
    assert_eq!(
        server.expect_line("Received:"),
        "[#1 (legacy)] Received: hi"
    );
    assert_eq!(
        server.expect_line("Received:"),
        "[#1 (legacy)] Received: two words"
    );
    assert_eq!(
        server.expect_line("left the chat"),
        format!("[#1 (legacy)] {LEFT}")
    );
}

// ---------------------------------------------------------------------------------------------
// The library.

#[test]
fn a_legacy_session_refuses_a_message_with_an_empty_line_and_sends_nothing_for_it() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    let stream = TcpStream::connect(listener.local_addr().expect("local address"))
        .expect("connect to the scripted peer");
    // The connection is already established: accept returns at once.
    let (peer, _) = listener.accept().expect("accept");
    let mut peer = LegacyPeer::over(peer);

    let stopper = Stopper::new(&stream).expect("stopper");
    // Bounded, so that a session that sent the message after all and now waits for its ACK
    // fails the test instead of hanging it.
    let timeouts = Timeouts {
        idle: Some(PEER_TIMEOUT),
        ..Timeouts::default()
    };
    let mut session = Session::new(stream, 1024, timeouts, stopper).expect("session");
    session.speak_legacy();
    let mut script = Script::new(session.outbox(), vec![b"a\n\nb".to_vec()]);
    let mut others = Vec::new();
    let ending = session.run(Turn::Mine, None, &mut |event| match event {
        Event::MyTurn => script.my_turn(),
        other => others.push(format!("{other:?}")),
    });
    assert!(matches!(ending, Ending::EndedByMe), "{ending}");
    assert!(
        matches!(
            script.refused[..],
            [Unsaid::Unsendable(
                "the original line protocol cannot carry a message with an empty line"
            )]
        ),
        "{:?}",
        script.refused
    );
    assert!(others.is_empty(), "unexpected events: {others:?}");
    assert_eq!(
        String::from_utf8_lossy(&peer.rest()),
        String::from_utf8_lossy(&msg("end"))
    );
}
