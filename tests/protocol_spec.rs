//! PROTOCOL.md's finer points, checked against the real binary over real sockets (127.0.0.1,
//! port 0): the points where someone writing a peer from the spec alone had to guess.
//!
//! Raw peers here speak hand-made bytes, as the spec lays them out, so that these tests hold the
//! spec to the code and not the crate's own decoder to itself. Every read has a timeout and
//! every loop a bound.

mod common;

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::thread;

use common::{Proc, TIMEOUT, accept_one, run, start_client, start_server};

/// Frame type bytes (PROTOCOL.md §2).
const HELLO: u8 = 0x01;
const WELCOME: u8 = 0x02;
const WAITING: u8 = 0x03;
const MESSAGE: u8 = 0x04;
const ACK: u8 = 0x05;
const END: u8 = 0x06;
const SHUTDOWN: u8 = 0x08;
const ERROR: u8 = 0x09;
const PING: u8 = 0x0B;

/// The largest payload a raw peer accepts from the binary.
const RAW_MAX_PAYLOAD: usize = 1 << 20;

/// A whole frame: type, big-endian length, payload.
fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut bytes = vec![kind];
    bytes.extend_from_slice(&u32::try_from(payload.len()).unwrap().to_be_bytes());
    bytes.extend_from_slice(payload);
    bytes
}

/// HELLO: magic, version 1, max message 65536, `name`.
fn hello(name: &str) -> Vec<u8> {
    let mut payload = b"CSCP\x01".to_vec();
    payload.extend_from_slice(&65536u32.to_be_bytes());
    payload.extend_from_slice(name.as_bytes());
    frame(HELLO, &payload)
}

/// A peer of our own making, reading and writing bytes as PROTOCOL.md lays them out.
struct Raw {
    stream: TcpStream,
}

impl Raw {
    fn connect(port: u16) -> Raw {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let stream = TcpStream::connect_timeout(&addr, TIMEOUT)
            .unwrap_or_else(|e| panic!("cannot connect to port {port}: {e}"));
        Raw::over(stream)
    }

    fn over(stream: TcpStream) -> Raw {
        stream.set_nodelay(true).expect("nodelay");
        stream
            .set_read_timeout(Some(TIMEOUT))
            .expect("read timeout");
        stream
            .set_write_timeout(Some(TIMEOUT))
            .expect("write timeout");
        Raw { stream }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.stream
            .write_all(bytes)
            .unwrap_or_else(|e| panic!("cannot write {bytes:02x?}: {e}"));
    }

    /// The next frame as (type, payload); each read is bounded by [`TIMEOUT`].
    fn try_frame(&mut self) -> io::Result<(u8, Vec<u8>)> {
        let mut header = [0u8; 5];
        self.stream.read_exact(&mut header)?;
        let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
        assert!(
            len <= RAW_MAX_PAYLOAD,
            "a frame of {len} bytes: {header:02x?}"
        );
        let mut payload = vec![0u8; len];
        self.stream.read_exact(&mut payload)?;
        Ok((header[0], payload))
    }

    fn frame(&mut self, what: &str) -> (u8, Vec<u8>) {
        self.try_frame()
            .unwrap_or_else(|e| panic!("waiting for {what}: {e}"))
    }

    /// HELLO, then past any WAITING to WELCOME; returns WELCOME's payload.
    fn handshake(&mut self, name: &str) -> Vec<u8> {
        self.send(&hello(name));
        self.welcome()
    }

    /// Reads past WAITING frames to WELCOME; returns its payload.
    fn welcome(&mut self) -> Vec<u8> {
        for _ in 0..100 {
            match self.frame("WELCOME") {
                (WAITING, _) => {}
                (WELCOME, payload) => return payload,
                other => panic!("expected WELCOME, got {other:02x?}"),
            }
        }
        panic!("100 WAITING frames and no WELCOME");
    }

    /// ERROR(`reason`) must come next, and then the close.
    fn expect_error(&mut self, reason: &str) {
        let (kind, payload) = self.frame(&format!("ERROR({reason:?})"));
        assert_eq!(
            (kind, String::from_utf8_lossy(&payload).as_ref()),
            (ERROR, reason),
            "expected ERROR({reason:?})"
        );
        self.expect_closed(&format!("after ERROR({reason:?})"));
    }

    fn expect_closed(&mut self, when: &str) {
        let mut byte = [0u8; 1];
        match self.stream.read(&mut byte) {
            Ok(0) => {}
            other => panic!("expected the connection to close {when}, got {other:?} {byte:02x?}"),
        }
    }

    /// Everything the other side sends until it closes (bounded: each read by [`TIMEOUT`],
    /// the total by [`RAW_MAX_PAYLOAD`]).
    fn read_to_end(&mut self) -> Vec<u8> {
        let mut all = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return all,
                Ok(n) => all.extend_from_slice(&chunk[..n]),
                Err(e) => panic!("reading to the close, after {all:02x?}: {e}"),
            }
            assert!(
                all.len() <= RAW_MAX_PAYLOAD,
                "no close after {} bytes",
                all.len()
            );
        }
    }

    /// Leaves as the spec says: END, FIN, then read to the other side's close.
    fn end(mut self) {
        self.send(&frame(END, &[]));
        let _ = self.stream.shutdown(Shutdown::Write);
        let _ = self.read_to_end();
    }
}

/// A one-connection scripted server on port 0: runs `script` on the connection it accepts.
fn fake_server(script: impl FnOnce(&mut Raw) + Send + 'static) -> (u16, thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    let port = listener.local_addr().expect("local address").port();
    let handle = thread::spawn(move || {
        let mut peer = Raw::over(accept_one(&listener, "the fake server"));
        script(&mut peer);
    });
    (port, handle)
}

// ---------------------------------------------------------------------------------------------
// §3.3, §3.7, §7.8: input that ends while the client waits in line.

#[test]
fn input_that_ends_while_waiting_in_line_is_delivered_after_welcome_then_the_chat_ends() {
    let (mut server, port) = start_server(&["--echo", "--workers", "1"]);
    let mut holder = start_client("holder", port);
    holder.expect_line("Connected!");
    let mut queued = start_client("queued", port);
    queued.expect_line("you are waiting in line (position 1)");
    server.expect_line("Waiting in line (position 1).");
    // Everything piped, and then the end of input, while the only worker is taken.
    queued.send_line("typed while waiting");
    queued.close_stdin();
    // The holder's chat goes on meanwhile; nothing came from #2.
    holder.send_line("still mine");
    assert_eq!(holder.expect_line("Received:"), "Received: still mine");
    assert_eq!(server.expect_line("Received:"), "[#1] Received: still mine");
    holder.send_line("end");
    holder.expect_exit(0);
    server.expect_line("[#1] The other side left the chat.");

    // The worker takes #2: its line goes out after WELCOME, then its END.
    assert_eq!(
        server.expect_line("Received:"),
        "[#2] Received: typed while waiting"
    );
    server.expect_line("[#2] The other side left the chat.");
    let queued = queued.expect_exit(0);
    let lines = queued.lines();
    let connected = lines.iter().position(|l| *l == "Connected!");
    let sent = lines.iter().position(|l| *l == "Send: typed while waiting");
    assert!(
        connected.is_some() && connected < sent,
        "the line must go out after WELCOME: {queued:#?}"
    );
    assert!(
        lines.contains(&"Received: typed while waiting"),
        "{queued:#?}"
    );
    assert_eq!(
        &lines[lines.len() - 2..],
        ["Send: end", "The chat has ended."],
        "{queued:#?}"
    );
}

// ---------------------------------------------------------------------------------------------
// §3.6: durations in fractions of a second.

#[test]
fn fractional_timeouts_are_taken_from_the_command_line_and_named_in_the_reasons() {
    let (mut server, port) = start_server(&[
        "--handshake-timeout",
        "0.5",
        "--idle-timeout",
        "0.5",
        "--heartbeat",
        "0",
    ]);

    // Connects and never says HELLO.
    let mut silent = Raw::connect(port);
    silent.expect_error("no handshake within 0.5 s");
    server.expect_line("Not connected: Timed out: no handshake within 0.5 s");

    // A real client whose user never types: its turn runs out.
    let mut client = start_client("client", port);
    client.expect_line("Connected!");
    assert_eq!(
        client.expect_err_line("reported an error"),
        "The other side reported an error: no message on your turn within 0.5 s"
    );
    assert_eq!(client.wait_exit(TIMEOUT).code(), Some(1));
    assert_eq!(
        server.expect_line("Timed out"),
        "[#2] Timed out: the other side sent no message on its turn within 0.5 s"
    );

    // Out of range: the handshake needs some time, and the other two stop at their bounds.
    for (flag, value, range) in [
        ("--handshake-timeout", "0", "from 0.001 to 86400"),
        ("--idle-timeout", "-0.5", "from 0 to 31536000"),
        ("--heartbeat", "1e9", "from 0 to 86400"),
    ] {
        let refused = run(&["server", "127.0.0.1", "0", flag, value], b"");
        assert_eq!(refused.code(), 2, "{refused:#?}");
        assert!(
            refused.stderr.starts_with(&format!(
                "error: invalid value '{value}' for {flag}: give seconds {range} (fractions allowed"
            )),
            "{refused:#?}"
        );
    }
}

#[test]
fn a_fractional_heartbeat_pings_and_gives_up_after_as_long_again() {
    let (mut server, port) = start_server(&["--echo", "--heartbeat", "0.5", "--idle-timeout", "0"]);
    let mut gone = Raw::connect(port);
    gone.handshake("gone");
    assert_eq!(gone.frame("PING"), (PING, Vec::new()));
    gone.expect_error("no answer to PING within 0.5 s");
    assert_eq!(
        server.expect_line("Timed out"),
        "[#1 gone] Timed out: the other side stopped answering (no answer to PING within 0.5 s)"
    );
}

// ---------------------------------------------------------------------------------------------
// §3.3, §3.5: an ERROR whose reason is not UTF-8 is a malformed frame, and is answered.

#[test]
fn an_error_whose_reason_is_not_utf8_is_malformed_and_answered_on_both_sides() {
    let malformed = "malformed ERROR frame: text field is not UTF-8";
    let bad_error = frame(ERROR, b"\xff\xfe");

    let (mut server, port) = start_server(&["--echo"]);
    let mut peer = Raw::connect(port);
    peer.handshake("raw");
    peer.send(&bad_error);
    peer.expect_error(malformed);
    assert_eq!(
        server.expect_line("Protocol error"),
        format!("[#1 raw] Protocol error: {malformed}")
    );

    let (port, fake) = fake_server(move |peer| {
        let (kind, _) = peer.frame("HELLO");
        assert_eq!(kind, HELLO);
        peer.send(&frame(WELCOME, b"\0\0\0\x01\0\x01\0\0"));
        peer.send(&bad_error);
        peer.expect_error(malformed);
    });
    let mut client = start_client("client", port);
    client.expect_line("Connected!");
    assert_eq!(
        client.expect_err_line("Protocol error"),
        format!("Protocol error: {malformed}")
    );
    assert_eq!(client.wait_exit(TIMEOUT).code(), Some(1));
    fake.join().expect("the fake server's script");
}

// ---------------------------------------------------------------------------------------------
// §3.4, §3.5: a frame is checked whole (type, length, payload) before its place in the chat.

#[test]
fn a_frames_own_validity_is_checked_before_whether_it_is_allowed_now() {
    let (_server, port) = start_server(&["--echo"]);
    let short_waiting = frame(WAITING, &[0, 0, 1]);
    let cases: [(&str, bool, Vec<u8>, &str); 6] = [
        // After WELCOME: a 3-byte WAITING is malformed before it is out of place.
        (
            "short WAITING",
            true,
            short_waiting.clone(),
            "malformed WAITING frame: position must be 4 bytes",
        ),
        (
            "WAITING",
            true,
            frame(WAITING, &[0, 0, 0, 1]),
            "unexpected WAITING frame",
        ),
        (
            "ACK with a byte",
            true,
            frame(ACK, &[0]),
            "ACK frame of 1 bytes is over the limit of 0 bytes",
        ),
        (
            "ACK",
            true,
            frame(ACK, &[]),
            "ACK with no MESSAGE to acknowledge",
        ),
        // Before HELLO, the same order.
        (
            "short WAITING first",
            false,
            short_waiting,
            "malformed WAITING frame: position must be 4 bytes",
        ),
        (
            "WAITING first",
            false,
            frame(WAITING, &[0, 0, 0, 1]),
            "expected HELLO, got WAITING",
        ),
    ];
    for (what, welcomed, bytes, reason) in cases {
        let mut peer = Raw::connect(port);
        if welcomed {
            peer.handshake(what);
        }
        peer.send(&bytes);
        peer.expect_error(reason);
    }
}

// ---------------------------------------------------------------------------------------------
// §3.1 step 3: the line for a connection that speaks neither protocol.

#[test]
fn a_stranger_gets_one_line_ending_in_a_single_lf_and_then_the_close() {
    let (_server, port) = start_server(&["--echo"]);
    let mut stranger = Raw::connect(port);
    stranger.send(b"GET / HTTP/1.0\r\n\r\n");
    let _ = stranger.stream.shutdown(Shutdown::Write);
    let got = stranger.read_to_end();
    let expected = "This is a client_server_chat server. It speaks the client_server_chat \
        protocol (see its PROTOCOL.md) and the original line protocol (\"msg: <text>\" and an \
        empty line). Connect with: client_server_chat client HOST PORT\n";
    assert_eq!(String::from_utf8_lossy(&got), expected);
}

// ---------------------------------------------------------------------------------------------
// §2, §5.1: a server started without --name.

#[test]
fn a_server_without_a_name_welcomes_with_an_empty_name() {
    let (_server, port) = start_server(&["--echo"]);
    let mut peer = Raw::connect(port);
    peer.send(&hello("raw"));
    let mut welcome = Vec::new();
    welcome.extend_from_slice(&frame(WELCOME, &peer.welcome()));
    // Session 1, max message 65536, no name: L = 8.
    assert_eq!(welcome, [0x02, 0, 0, 0, 0x08, 0, 0, 0, 0x01, 0, 0x01, 0, 0]);
    peer.end();

    // The real client then names nobody.
    let client = run(&["client", "127.0.0.1", &port.to_string()], b"end\n");
    assert_eq!(client.code(), 0, "{client:#?}");
    assert_eq!(
        &client.lines()[1..],
        ["Connected!", "Send: end", "The chat has ended."],
        "{client:#?}"
    );
}

// ---------------------------------------------------------------------------------------------
// §3.2: `server --echo` and an echo over the client's maximum.

#[test]
fn an_echo_over_the_clients_maximum_is_not_sent_and_the_server_ends_the_chat() {
    let (mut server, port) = start_server(&["--echo"]);
    let client = run(
        &[
            "client",
            "127.0.0.1",
            &port.to_string(),
            "--max-message",
            "4",
        ],
        b"too long\nnever sent\n",
    );
    assert_eq!(client.code(), 0, "{client:#?}");
    let lines = client.lines();
    assert_eq!(lines[2], "Send: too long", "{client:#?}");
    assert_eq!(lines[3], "Message Received", "{client:#?}");
    assert!(common::is_roundtrip_line(lines[4], ""), "{client:#?}");
    assert_eq!(
        &lines[5..],
        ["The other side left the chat."],
        "{client:#?}"
    );
    assert_eq!(server.expect_line("Received:"), "[#1] Received: too long");
    assert_eq!(
        server.expect_line("Not sent"),
        "[#1] Not sent: the message is 8 bytes, over the client's limit of 4."
    );
    server.expect_line("[#1] You ended the chat.");
    let server = server.kill_and_collect();
    assert!(!server.stdout.contains("never sent"), "{server:#?}");
}

// ---------------------------------------------------------------------------------------------
// §3.1 step 2: a client whose first byte comes after it has joined the line.

/// An echo server whose one worker a client holds, and a connection that has said nothing yet,
/// which the server has put in line.
fn a_held_worker_and_a_silent_waiter() -> (Proc, Raw, Raw) {
    let (mut server, port) = start_server(&["--echo", "--workers", "1", "--heartbeat", "0"]);
    let mut holder = Raw::connect(port);
    holder.handshake("holder");
    let silent = Raw::connect(port);
    server.expect_line("Waiting in line (position 1).");
    (server, holder, silent)
}

#[test]
fn a_first_byte_that_comes_after_joining_the_line_still_gets_its_waiting() {
    // Connects and says nothing until the server has put it in line (and looked at it).
    let (mut server, holder, mut late) = a_held_worker_and_a_silent_waiter();
    late.send(&hello("late"));
    // Nothing else changes in the line, and the notice comes all the same.
    assert_eq!(late.frame("WAITING"), (WAITING, vec![0, 0, 0, 1]));

    // From then on it is served like any other.
    holder.end();
    assert_eq!(late.welcome()[..4], [0, 0, 0, 2]);
    late.send(&frame(MESSAGE, b"hi"));
    assert_eq!(late.frame("ACK"), (ACK, Vec::new()));
    assert_eq!(late.frame("the echo"), (MESSAGE, b"hi".to_vec()));
    late.send(&frame(ACK, &[]));
    late.end();
    server.expect_line("[#2 late] The other side left the chat.");
}

#[test]
fn a_waiting_connection_that_has_said_nothing_yet_is_still_told_of_the_shutdown() {
    let (mut server, mut holder, mut silent) = a_held_worker_and_a_silent_waiter();
    // Ctrl-C.
    server.interrupt();
    assert_eq!(silent.frame("SHUTDOWN"), (SHUTDOWN, Vec::new()));
    silent.expect_closed("after SHUTDOWN");
    assert_eq!(holder.frame("SHUTDOWN"), (SHUTDOWN, Vec::new()));
    holder.expect_closed("after SHUTDOWN");
    server.expect_exit(0);
}
