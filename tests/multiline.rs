//! `--multiline`, end to end: the real binary, real TCP on 127.0.0.1 (servers on port 0), piped
//! stdio, and every expectation a specific line awaited with a deadline.
//!
//! With `--multiline` and stdin a pipe, lines gather until an empty line and go as one message;
//! a message of several lines is shown as its first line after the label and each further line
//! under it, indented to the column where the text began.

mod common;

use common::{
    Finished, Proc, expect_ack, free_port, is_roundtrip_line, run, start_client, start_server,
};

/// `[#1] Received: `, whose width the server indents a received message's further lines by.
const SERVER_INDENT: &str = "               ";
/// `Received: `, on the client.
const CLIENT_INDENT: &str = "          ";
/// `Send: `, the client's echo of what it sent.
const SEND_INDENT: &str = "      ";
/// `Send to #1: `, the operator's prompt for session #1.
const PROMPT_1: &str = "Send to #1: ";

/// The very next complete stdout line, whatever it holds: for lines that must follow at once.
fn next_line(proc: &mut Proc) -> String {
    proc.expect_line("")
}

/// `client 127.0.0.1 PORT --multiline`.
fn multiline_client_args(port: &str) -> [&str; 4] {
    ["client", "127.0.0.1", port, "--multiline"]
}

/// The lines of a finished client's stdout that show a received message (its first line).
fn received_lines(done: &Finished) -> Vec<&str> {
    done.lines()
        .into_iter()
        .filter(|l| l.starts_with("Received: "))
        .collect()
}

/// The line right after `line` in a finished process's stdout; fails if `line` is not there.
fn line_after<'a>(done: &'a Finished, line: &str) -> &'a str {
    let lines = done.lines();
    let at = lines
        .iter()
        .position(|l| *l == line)
        .unwrap_or_else(|| panic!("no line {line:?}: {done:#?}"));
    lines
        .get(at + 1)
        .copied()
        .unwrap_or_else(|| panic!("nothing after {line:?}: {done:#?}"))
}

/// Starts `server --multiline` (the operator's stdin piped) and a plain client that has
/// connected and said `hi`, so that session #1 is owed an answer and the prompt is up.
fn operator_owes_an_answer() -> (Proc, Proc) {
    let (mut server, port) = start_server(&["--multiline"]);
    let mut client = start_client("client", port);
    client.expect_line("Connected!");
    server.expect_line("] Connected.");
    client.send_line("hi");
    assert_eq!(server.expect_line("Received:"), "[#1] Received: hi");
    server.expect_text(PROMPT_1);
    // The client's `hi` was acknowledged before the operator's turn began.
    expect_ack(&mut client, "");
    (server, client)
}

#[test]
fn multiline_client_sends_the_lines_up_to_an_empty_line_as_one_message() {
    let (mut server, port) = start_server(&["--echo"]);
    let port_text = port.to_string();
    let client = run(
        &multiline_client_args(&port_text),
        b"roses\nare red\n\nend\n\n",
    );
    assert_eq!(client.code(), 0, "{client:#?}");
    let lines = client.lines();
    assert_eq!(lines.len(), 10, "unexpected transcript: {client:#?}");
    assert_eq!(
        lines[0],
        format!("Trying to connect to server: 127.0.0.1: {port}")
    );
    assert_eq!(lines[1], "Connected!");
    // The echo of what was sent: the second line under the text after `Send: `.
    assert_eq!(lines[2], "Send: roses");
    assert_eq!(lines[3], format!("{SEND_INDENT}are red"));
    // One message, so one ACK.
    assert_eq!(lines[4], "Message Received");
    assert!(is_roundtrip_line(lines[5], ""), "bad RTT line: {client:#?}");
    // The echo came back as one message of two lines.
    assert_eq!(lines[6], "Received: roses");
    assert_eq!(lines[7], format!("{CLIENT_INDENT}are red"));
    // `end` alone, up to the next empty line, ends the chat; the empty line after it is not sent.
    assert_eq!(lines[8], "Send: end");
    assert_eq!(lines[9], "The chat has ended.");

    assert_eq!(server.expect_line("Received:"), "[#1] Received: roses");
    assert_eq!(next_line(&mut server), format!("{SERVER_INDENT}are red"));
    expect_ack(&mut server, "[#1] ");
    // Nothing else came: no empty message, no `end` as text.
    assert_eq!(
        next_line(&mut server),
        "[#1] The other side left the chat.",
        "{}",
        server.dump()
    );
}

#[test]
fn multiline_operator_answers_a_plain_client_with_one_message_of_several_lines() {
    let (mut server, port) = start_server(&["--multiline"]);
    let mut client = start_client("client", port);
    client.expect_line("Connected!");
    server.expect_line("] Connected.");
    client.send_line("ping");
    assert_eq!(server.expect_line("Received:"), "[#1] Received: ping");

    server.expect_text(PROMPT_1);
    server.send_bytes(b"pong line 1\npong line 2\n\n");
    // Echoed after the prompt, the second line under the first.
    assert_eq!(next_line(&mut server), "pong line 1");
    assert_eq!(
        next_line(&mut server),
        format!("{}pong line 2", " ".repeat(PROMPT_1.len()))
    );
    expect_ack(&mut server, "[#1] ");

    expect_ack(&mut client, "");
    assert_eq!(client.expect_line("Received:"), "Received: pong line 1");
    assert_eq!(
        next_line(&mut client),
        format!("{CLIENT_INDENT}pong line 2")
    );

    // The client's turn: its end of input ends the chat.
    let client = client.expect_exit(0);
    assert_eq!(
        received_lines(&client),
        ["Received: pong line 1"],
        "{client:#?}"
    );
    assert_eq!(
        server.expect_line("left the chat"),
        "[#1] The other side left the chat."
    );
    server.close_stdin();
    let server = server.expect_exit(0);
    assert_eq!(
        server.stdout.matches("[#1] Message Received").count(),
        1,
        "the answer went as more than one message: {server:#?}"
    );
    assert!(
        server.stdout.contains("End of input: shutting down."),
        "{server:#?}"
    );
}

#[test]
fn multiline_operator_command_on_the_first_line_runs_without_an_empty_line() {
    let (mut server, mut client) = operator_owes_an_answer();

    // No empty line after it: a command does not wait for one.
    server.send_line("/list");
    assert_eq!(next_line(&mut server), "/list");
    assert_eq!(server.expect_line("session(s):"), "1 session(s):");
    let session = server.expect_line("  #1 ");
    assert!(
        session.contains(" turn=yours sent=0 received=1 connected="),
        "bad /list line {session:?}\n{}",
        server.dump()
    );

    // The session is still owed its answer, which begins after the command.
    server.expect_text(PROMPT_1);
    server.send_bytes(b"after\nthe list\n\n");
    assert_eq!(next_line(&mut server), "after");
    expect_ack(&mut server, "[#1] ");
    assert_eq!(client.expect_line("Received:"), "Received: after");
    assert_eq!(next_line(&mut client), format!("{CLIENT_INDENT}the list"));

    let client = client.expect_exit(0);
    assert_eq!(received_lines(&client), ["Received: after"], "{client:#?}");
}

#[test]
fn multiline_operator_double_slash_and_slash_on_a_later_line_are_text() {
    let (mut server, mut client) = operator_owes_an_answer();

    // `//` escapes a first line's slash; a later line's `/` is text, whatever follows.
    server.send_bytes(b"//not a command\n/list\n\n");
    expect_ack(&mut server, "[#1] ");
    assert_eq!(client.expect_line("Received:"), "Received: /not a command");
    assert_eq!(next_line(&mut client), format!("{CLIENT_INDENT}/list"));

    let client = client.expect_exit(0);
    assert_eq!(
        received_lines(&client),
        ["Received: /not a command"],
        "{client:#?}"
    );
    server.expect_line("left the chat");
    server.close_stdin();
    let server = server.expect_exit(0);
    assert!(
        !server.stdout.contains("session(s):"),
        "/list was carried out: {server:#?}"
    );
    assert!(
        !server.stdout.contains("Error:"),
        "the answer was refused: {server:#?}"
    );
}

#[test]
fn multiline_client_skips_empty_lines_and_sends_what_is_gathered_when_input_ends() {
    let (mut server, port) = start_server(&["--echo"]);
    let port_text = port.to_string();
    // No empty line (nor even a newline) after the last message.
    let client = run(
        &multiline_client_args(&port_text),
        b"\n\n\nfirst\n\n\n\nsecond\nthird",
    );
    assert_eq!(client.code(), 0, "{client:#?}");
    assert_eq!(
        received_lines(&client),
        ["Received: first", "Received: second"],
        "{client:#?}"
    );
    assert_eq!(
        line_after(&client, "Received: second"),
        format!("{CLIENT_INDENT}third")
    );
    assert_eq!(
        client.lines().last().copied(),
        Some("The chat has ended."),
        "{client:#?}"
    );

    // Exactly two messages reached the server, one after the other; no empty ones.
    assert_eq!(server.expect_line("Received:"), "[#1] Received: first");
    expect_ack(&mut server, "[#1] ");
    assert_eq!(next_line(&mut server), "[#1] Received: second");
    assert_eq!(next_line(&mut server), format!("{SERVER_INDENT}third"));
    expect_ack(&mut server, "[#1] ");
    assert_eq!(
        next_line(&mut server),
        "[#1] The other side left the chat.",
        "{}",
        server.dump()
    );
}

#[test]
fn multiline_client_takes_crlf_lines_and_blank_crlf_lines_as_the_ends_of_messages() {
    let (mut server, port) = start_server(&["--echo"]);
    let port_text = port.to_string();
    let client = run(
        &multiline_client_args(&port_text),
        b"roses\r\nare red\r\n\r\nend\r\n",
    );
    assert_eq!(client.code(), 0, "{client:#?}");
    assert_eq!(received_lines(&client), ["Received: roses"], "{client:#?}");
    assert_eq!(
        line_after(&client, "Received: roses"),
        format!("{CLIENT_INDENT}are red")
    );
    assert_eq!(line_after(&client, "Send: end"), "The chat has ended.");

    assert_eq!(server.expect_line("Received:"), "[#1] Received: roses");
    assert_eq!(next_line(&mut server), format!("{SERVER_INDENT}are red"));
    expect_ack(&mut server, "[#1] ");
    assert_eq!(next_line(&mut server), "[#1] The other side left the chat.");
}

#[test]
fn multiline_client_end_as_the_first_of_several_lines_is_text_not_the_end() {
    let (mut server, port) = start_server(&["--echo"]);
    let port_text = port.to_string();
    let client = run(
        &multiline_client_args(&port_text),
        b"end\nof the story\n\nend\n",
    );
    assert_eq!(client.code(), 0, "{client:#?}");
    assert_eq!(received_lines(&client), ["Received: end"], "{client:#?}");
    assert_eq!(
        line_after(&client, "Received: end"),
        format!("{CLIENT_INDENT}of the story")
    );
    // Echoed as sent: one message of two lines, then the `end` that ended the chat.
    assert_eq!(
        line_after(&client, "Send: end"),
        format!("{SEND_INDENT}of the story")
    );
    assert_eq!(
        client.lines()[client.lines().len() - 2..],
        ["Send: end", "The chat has ended."],
        "{client:#?}"
    );

    assert_eq!(server.expect_line("Received:"), "[#1] Received: end");
    assert_eq!(
        next_line(&mut server),
        format!("{SERVER_INDENT}of the story")
    );
    expect_ack(&mut server, "[#1] ");
    assert_eq!(next_line(&mut server), "[#1] The other side left the chat.");
}

#[test]
fn multiline_operator_input_held_before_any_client_is_sent_message_by_message() {
    let (mut server, port) = start_server(&["--multiline"]);
    // The last answer ends with the input, with no empty line (nor newline) after it.
    server.send_bytes(b"\nfirst answer\nits line two\n\n\n\nsecond answer\nits line two");
    server.close_stdin();
    server.expect_line("End of input: shutting down once the 2 held answer(s) are delivered.");

    let client = run(
        &["client", "127.0.0.1", &port.to_string()],
        b"ping1\nping2\n",
    );
    assert_eq!(client.code(), 0, "{client:#?}");
    assert_eq!(
        received_lines(&client),
        ["Received: first answer", "Received: second answer"],
        "{client:#?}"
    );
    for first in ["Received: first answer", "Received: second answer"] {
        assert_eq!(
            line_after(&client, first),
            format!("{CLIENT_INDENT}its line two"),
            "{client:#?}"
        );
    }
    server.expect_line("every held answer delivered; shutting down.");
    let server = server.expect_exit(0);
    // Two messages were held, not a line each, and both were acknowledged before the server
    // shut down.
    assert_eq!(
        server.stdout.matches("[#1] Message Received").count(),
        2,
        "{server:#?}"
    );
    assert!(!server.stdout.contains("Not delivered"), "{server:#?}");
    assert_eq!(
        server
            .stdout
            .matches("Held: nobody is owed an answer yet")
            .count(),
        2,
        "{server:#?}"
    );
}

#[test]
fn without_multiline_an_empty_piped_line_is_still_an_empty_message() {
    let (mut server, port) = start_server(&["--echo"]);
    let client = run(&["client", "127.0.0.1", &port.to_string()], b"\nend\n");
    assert_eq!(client.code(), 0, "{client:#?}");
    let lines = client.lines();
    assert_eq!(lines.len(), 8, "unexpected transcript: {client:#?}");
    assert_eq!(lines[2], "Send: ");
    assert_eq!(lines[3], "Message Received");
    assert!(is_roundtrip_line(lines[4], ""), "bad RTT line: {client:#?}");
    assert_eq!(lines[5], "Received: ");
    assert_eq!(lines[6], "Send: end");
    assert_eq!(lines[7], "The chat has ended.");

    assert_eq!(server.expect_line("Received:"), "[#1] Received: ");
    expect_ack(&mut server, "[#1] ");
    assert_eq!(next_line(&mut server), "[#1] The other side left the chat.");
}

#[test]
fn without_multiline_each_piped_line_is_its_own_message() {
    let (mut server, port) = start_server(&["--echo"]);
    let client = run(
        &["client", "127.0.0.1", &port.to_string()],
        b"roses\nare red\n",
    );
    assert_eq!(client.code(), 0, "{client:#?}");
    assert_eq!(
        received_lines(&client),
        ["Received: roses", "Received: are red"],
        "{client:#?}"
    );
    assert_eq!(server.expect_line("Received:"), "[#1] Received: roses");
    expect_ack(&mut server, "[#1] ");
    assert_eq!(next_line(&mut server), "[#1] Received: are red");
}

#[test]
fn multiline_is_not_a_ping_option() {
    let port = free_port().to_string();
    let done = run(&["ping", "127.0.0.1", &port, "--multiline"], b"");
    assert_eq!(done.code(), 2, "{done:#?}");
    assert!(done.stderr.starts_with("error: "), "{done:#?}");
    assert!(done.stderr.contains("--multiline"), "{done:#?}");
    assert!(done.stderr.contains("Usage:"), "{done:#?}");
    assert!(done.stdout.is_empty(), "ping ran anyway: {done:#?}");
}
