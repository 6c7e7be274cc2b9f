//! Binary-level tests: the real `client_server_chat` binary, real TCP on 127.0.0.1, servers on
//! port 0 (the port is read back from the server's first line), output awaited line by line with
//! a deadline.

mod common;

use std::net::TcpListener;
use std::time::Duration;

use common::{
    Proc, TIMEOUT, assert_hi_then_end_transcript, expect_ack, free_port, run, start_client,
    start_server,
};

const USAGE_HEAD: &str = "Usage:";
const SHUTDOWN_LINE: &str = "The server is shutting down. The chat has ended.";
const OFFLINE: &str = "The requested server is offline/The chat has ended.";

#[test]
fn echo_server_chat_prints_the_classic_transcript_and_exits_0() {
    let (mut server, port) = start_server(&["--echo"]);
    let client = run(&["client", "127.0.0.1", &port.to_string()], b"hi\nend\n");
    assert_eq!(client.code(), 0, "{client:#?}");
    assert_hi_then_end_transcript(&client, port, "Connected!", "Received: hi");

    let connected = server.expect_line("] Connected.");
    assert!(
        connected.starts_with("[#1 127.0.0.1:"),
        "connected line: {connected:?}"
    );
    assert_eq!(server.expect_line("Received:"), "[#1] Received: hi");
    assert_eq!(
        server.expect_line("left the chat"),
        "[#1] The other side left the chat."
    );
}

/// Waits until the operator's prompt names session `id`, then types `text` as the answer.
fn operator_answers(server: &mut Proc, id: u32, text: &str) {
    server.expect_text(&format!("Send to #{id}: "));
    server.send_line(text);
    // With stdin piped, the typed line is echoed right after the prompt.
    assert_eq!(server.expect_line(text), text, "{}", server.dump());
}

#[test]
fn operator_replies_and_ends_the_chat_then_serves_the_next_client() {
    let (mut server, port) = start_server(&[]);

    let mut alice = start_client("alice", port);
    alice.expect_line("Connected!");
    server.expect_line("[#1 127.0.0.1:");
    alice.send_line("hi");
    assert_eq!(server.expect_line("Received:"), "[#1] Received: hi");
    operator_answers(&mut server, 1, "hello");
    expect_ack(&mut server, "[#1] ");

    expect_ack(&mut alice, "");
    assert_eq!(alice.expect_line("Received:"), "Received: hello");

    // The operator may only end the chat on its own turn: Alice speaks once more.
    alice.send_line("bye");
    assert_eq!(server.expect_line("Received:"), "[#1] Received: bye");
    operator_answers(&mut server, 1, "end");
    assert_eq!(
        alice.expect_line("left the chat"),
        "The other side left the chat."
    );
    alice.expect_exit(0);
    server.expect_line("[#1] You ended the chat.");

    // The server goes on: a second client is served by the operator.
    let mut bob = start_client("bob", port);
    bob.expect_line("Connected!");
    let connected = server.expect_line("] Connected.");
    assert!(
        connected.starts_with("[#2 127.0.0.1:"),
        "connected line: {connected:?}"
    );
    bob.send_line("again");
    assert_eq!(server.expect_line("Received:"), "[#2] Received: again");
    operator_answers(&mut server, 2, "ok");
    assert_eq!(bob.expect_line("Received:"), "Received: ok");
    bob.expect_exit(0);
    assert_eq!(
        server.expect_line("left the chat"),
        "[#2] The other side left the chat."
    );

    // End of the operator's input shuts the server down gracefully.
    let server_done = server.expect_exit(0);
    assert!(
        server_done.stdout.contains("End of input: shutting down."),
        "{server_done:#?}"
    );
}

#[test]
fn end_of_client_input_ends_the_chat_like_end() {
    let (mut server, port) = start_server(&["--echo"]);
    let client = run(&["client", "127.0.0.1", &port.to_string()], b"hi\n");
    assert_eq!(client.code(), 0, "{client:#?}");
    let lines = client.lines();
    assert!(lines.contains(&"Received: hi"), "{client:#?}");
    assert_eq!(
        lines.last().copied(),
        Some("The chat has ended."),
        "{client:#?}"
    );
    assert_eq!(server.expect_line("Received:"), "[#1] Received: hi");
    assert_eq!(
        server.expect_line("left the chat"),
        "[#1] The other side left the chat."
    );
}

#[test]
fn clients_beyond_the_workers_wait_in_line_and_are_served_in_turn() {
    let (mut server, port) = start_server(&["--workers", "2", "--echo"]);

    let mut first = start_client("first", port);
    first.expect_line("Connected!");
    let mut second = start_client("second", port);
    second.expect_line("Connected!");

    let mut third = start_client("third", port);
    third.expect_line("All workers are busy: you are waiting in line (position 1).");
    server.expect_line("] Waiting in line (position 1).");
    let mut fourth = start_client("fourth", port);
    fourth.expect_line("All workers are busy: you are waiting in line (position 2).");
    let waiting = server.expect_line("] Waiting in line (position 2).");
    assert!(waiting.starts_with("[#4 127.0.0.1:"), "{waiting:?}");

    // Nobody waiting got in early.
    first.close_stdin();
    third.expect_line("Connected!");
    fourth.expect_line("All workers are busy: you are waiting in line (position 1).");
    first.expect_exit(0);

    second.close_stdin();
    fourth.expect_line("Connected!");
    second.expect_exit(0);

    for mut client in [third, fourth] {
        client.send_line("hi");
        client.expect_line("Received: hi");
        let done = client.expect_exit(0);
        assert!(done.stdout.contains("The chat has ended."), "{done:#?}");
    }
}

/// With one worker: `live` holds it, and `waiting` is first in line, as the operator has seen.
fn live_and_waiting(server: &mut Proc, port: u16) -> (Proc, Proc) {
    let mut live = start_client("live", port);
    live.expect_line("Connected!");
    let waiting = start_client("waiting", port);
    // The server's own line, not the client's notice: when the WAITING notice goes out depends
    // on when the client's first byte reaches the server, which is not what this is about.
    let queued = server.expect_line("] Waiting in line (position 1).");
    assert!(queued.starts_with("[#2 127.0.0.1:"), "{queued:?}");
    (live, waiting)
}

/// Ctrl-C on a server with one live and one waiting client: both are told, both exit 0, and so
/// does the server.
#[test]
fn sigint_on_server_tells_the_live_and_the_waiting_client_and_all_exit_0() {
    let (mut server, port) = start_server(&["--workers", "1", "--echo"]);
    let (mut live, mut waiting) = live_and_waiting(&mut server, port);
    live.expect_text("Send: ");

    server.interrupt();
    assert_eq!(live.expect_line("shutting down"), SHUTDOWN_LINE);
    live.expect_exit(0);
    // Stdin stays open until it has exited: the end must come from the server, not our input.
    waiting.wait_exit(TIMEOUT);
    let waiting = waiting.expect_exit(0);
    assert!(
        waiting.lines().contains(&SHUTDOWN_LINE),
        "the waiting client has no shutdown line on stdout: {waiting:#?}"
    );

    let status = server.wait_exit(Duration::from_secs(5));
    assert_eq!(status.code(), Some(0), "server: {}", server.dump());
}

#[test]
fn client_without_a_server_says_offline_and_exits_1() {
    let port = free_port();
    let client = run(&["client", "127.0.0.1", &port.to_string()], b"hi\n");
    assert_eq!(client.code(), 1, "{client:#?}");
    assert!(client.stderr.contains(OFFLINE), "{client:#?}");
    assert!(!client.stdout.contains("Connected!"), "{client:#?}");
}

#[test]
fn server_on_a_port_in_use_says_so_and_exits_1() {
    let holder = TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    let port = holder.local_addr().expect("local addr").port();
    let server = run(&["server", "127.0.0.1", &port.to_string(), "--echo"], b"");
    assert_eq!(server.code(), 1, "{server:#?}");
    assert!(server.stderr.contains("already in use"), "{server:#?}");
    drop(holder);
}

fn assert_usage_error(args: &[&str]) {
    let done = run(args, b"");
    assert_eq!(done.code(), 2, "{args:?}: {done:#?}");
    assert!(done.stderr.starts_with("error: "), "{args:?}: {done:#?}");
    assert!(done.stderr.contains(USAGE_HEAD), "{args:?}: {done:#?}");
    assert!(
        !done.stdout.contains("Trying to connect") && !done.stdout.contains("waiting for clients"),
        "{args:?} started anyway: {done:#?}"
    );
}

#[test]
fn usage_errors_exit_2_with_the_error_and_the_usage_on_stderr() {
    for args in [
        &["bogus"][..],
        &["client", "--frobnicate"],
        &["client", "127.0.0.1", "notaport"],
        &["client", "--echo"],
        &["server", "127.0.0.1", "0", "--workers", "0"],
    ] {
        assert_usage_error(args);
    }
}

#[test]
fn usage_error_without_host_says_only_the_error() {
    assert_usage_error(&["server", "--workers", "0"]);
}

#[test]
fn help_and_version_print_to_stdout_and_exit_0() {
    let help = run(&["--help"], b"");
    assert_eq!(help.code(), 0, "{help:#?}");
    assert!(help.stdout.starts_with(USAGE_HEAD), "{help:#?}");
    assert!(help.stdout.contains("--workers"), "{help:#?}");
    assert!(help.stderr.is_empty(), "{help:#?}");

    let version = run(&["-V"], b"");
    assert_eq!(version.code(), 0, "{version:#?}");
    assert!(
        version
            .stdout
            .starts_with(&format!("client_server_chat {}", env!("CARGO_PKG_VERSION"))),
        "{version:#?}"
    );
}

#[test]
fn utf8_survives_and_escape_sequences_are_defused_on_the_server() {
    let (server, port) = start_server(&["--echo"]);
    let client = run(
        &["client", "127.0.0.1", &port.to_string()],
        "café 日本 🎉\n\x1b[31mred\nend\n".as_bytes(),
    );
    assert_eq!(client.code(), 0, "{client:#?}");
    assert!(
        client.lines().contains(&"Received: café 日本 🎉"),
        "{client:#?}"
    );
    assert!(!client.raw_stdout.contains(&0x1b), "{client:#?}");

    let mut server = server;
    assert_eq!(
        server.expect_line("Received: caf"),
        "[#1] Received: café 日本 🎉"
    );
    let red = server.expect_line("[31mred");
    assert_eq!(red, "[#1] Received: ^[[31mred");
    server.expect_line("left the chat");
    let server = server.kill_and_collect();
    assert!(
        !server.raw_stdout.contains(&0x1b),
        "ESC reached the server's stdout: {server:#?}"
    );
}

/// The round-trip times printed in `text` (lines `PREFIX Roundtrip time: S.SSSSSSs`), in
/// nanoseconds.
fn printed_rtts(text: &str) -> Vec<u64> {
    text.lines()
        .filter_map(|line| line.split_once("Roundtrip time: ").map(|(_, t)| t))
        .map(|t| {
            let (whole, fraction) = t
                .strip_suffix('s')
                .and_then(|t| t.split_once('.'))
                .unwrap_or_else(|| panic!("bad RTT: {t:?}"));
            let whole: u64 = whole.parse().expect("seconds");
            let micros: u64 = fraction.parse().expect("microseconds");
            (whole * 1_000_000 + micros) * 1000
        })
        .collect()
}

/// The fastest of many `write` + `read` pairs of `len` bytes over a loopback connection, in
/// nanoseconds: a round trip holds at least one write and one read of at least that size, so no
/// honest RTT can be shorter, on any machine.
fn fastest_write_read_pair(len: usize) -> u64 {
    use std::io::{Read, Write};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut a = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (mut b, _) = listener.accept().unwrap();
    a.set_nodelay(true).unwrap();
    b.set_read_timeout(Some(TIMEOUT)).unwrap();
    let (out, mut back) = (vec![7u8; len], vec![0u8; len]);
    (0..300)
        .map(|_| {
            let start = std::time::Instant::now();
            a.write_all(&out).unwrap();
            b.read_exact(&mut back).unwrap();
            start.elapsed().as_nanos() as u64
        })
        .min()
        .unwrap()
}

#[test]
fn every_printed_round_trip_holds_at_least_a_write_and_a_read_and_none_is_zero() {
    let (server, port) = start_server(&["--echo"]);
    let lines: String = (0..300).map(|i| format!("message {i:03}\n")).collect();
    let port = port.to_string();
    let client = run(&["client", "127.0.0.1", &port], lines.as_bytes());
    assert_eq!(client.code(), 0, "{client:#?}");
    // The original line protocol, on both ends of the wire, takes the same clock.
    let legacy = run(
        &["client", "127.0.0.1", &port, "--legacy"],
        lines.as_bytes(),
    );
    assert_eq!(legacy.code(), 0, "{legacy:#?}");
    let server = server.kill_and_collect();
    // Measured after the chats, so that a machine that slows down meanwhile cannot raise it.
    let floor = fastest_write_read_pair("message 000".len());

    for (who, text, expected) in [
        ("client", &client.stdout, 300),
        ("legacy client", &legacy.stdout, 300),
        ("echo server", &server.stdout, 600),
    ] {
        let rtts = printed_rtts(text);
        assert_eq!(rtts.len(), expected, "{who} printed {} RTTs", rtts.len());
        let short = rtts.iter().filter(|&&rtt| rtt < floor).count();
        assert_eq!(
            short,
            0,
            "{who}: {short} of {} RTTs shorter than one write + read ({floor} ns): {:?}",
            rtts.len(),
            rtts.iter().min()
        );
        assert!(!text.contains("Roundtrip time: 0.000000s"), "{who}");
    }
}

#[test]
fn a_quiet_echo_server_prints_arrivals_and_endings_but_no_line_per_message() {
    let (mut server, port) = start_server(&["--echo", "--quiet"]);
    let client = run(&["client", "127.0.0.1", &port.to_string()], b"hi\nend\n");
    assert_eq!(client.code(), 0, "{client:#?}");
    assert_hi_then_end_transcript(&client, port, "Connected!", "Received: hi");
    server.expect_line("] Connected.");
    assert_eq!(
        server.expect_line("left the chat"),
        "[#1] The other side left the chat."
    );
    let server = server.kill_and_collect();
    for routine in ["Received", "Message Received", "Roundtrip"] {
        assert!(!server.stdout.contains(routine), "{server:#?}");
    }
    // An operator must see what is said: --quiet needs --echo.
    let refused = run(&["server", "127.0.0.1", "0", "--quiet"], b"");
    assert_eq!(refused.code(), 2, "{refused:#?}");
    assert!(
        refused.stderr.contains("--quiet goes with --echo"),
        "{refused:#?}"
    );
}

#[test]
fn a_closed_stdout_is_a_quiet_exit_not_a_panic() {
    // `client_server_chat --help | head -1`, with the reader already gone.
    let (reader, writer) = std::io::pipe().expect("a pipe");
    drop(reader);
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_client_server_chat"))
        .arg("--help")
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .expect("run --help");
    assert_eq!(status.status.code(), Some(0), "{status:?}");
    assert!(
        !String::from_utf8_lossy(&status.stderr).contains("panicked"),
        "{status:?}"
    );
}

#[test]
fn small_words_are_right_one_worker_a_bracketed_ipv6_and_a_name_too_long_refused() {
    let (server, _port) = start_server(&["--echo", "-w", "1"]);
    assert!(
        server.dump().contains("(1 worker, echo)."),
        "{}",
        server.dump()
    );
    let port = free_port().to_string();
    let client = run(&["client", "::1", &port], b"");
    assert_eq!(
        client.lines().first().copied(),
        Some(format!("Trying to connect to server: [::1]: {port}").as_str()),
        "{client:#?}"
    );
    let long = "n".repeat(65);
    let refused = run(&["client", "127.0.0.1", &port, "--name", &long], b"");
    assert_eq!(refused.code(), 2, "{refused:#?}");
    assert!(
        refused
            .stderr
            .contains("--name is 65 bytes; give at most 64"),
        "{refused:#?}"
    );
}
