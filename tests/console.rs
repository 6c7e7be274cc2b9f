//! The operator console, end to end: the real binary, real TCP on 127.0.0.1 (servers on port 0),
//! piped stdio, and every expectation a specific line awaited with a deadline.
//!
//! With stdout piped, a prompt such as `Send to #1 alice: ` is printed without a newline and
//! ended with "\n" before any other line; with stdin piped, the operator's line is echoed right
//! after the prompt, so `Send to #1 alice: hello` is the line that shows where `hello` went.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{Proc, TIMEOUT, expect_ack, start_server};

const SHUTDOWN_LINE: &str = "The server is shutting down. The chat has ended.";

/// Starts `client 127.0.0.1 PORT --name NAME`.
fn named_client(name: &str, port: u16) -> Proc {
    Proc::spawn(
        name,
        &["client", "127.0.0.1", &port.to_string(), "--name", name],
    )
}

/// Connects client `name`, which must become session `id`: waits for its `Connected!` and for
/// the operator's `[#id name ADDR] Connected.` line, and returns the client with its address as
/// the server shows it.
fn join(server: &mut Proc, port: u16, name: &str, id: u32) -> (Proc, SocketAddr) {
    let mut client = named_client(name, port);
    client.expect_line("Connected!");
    let head = format!("[#{id} {name} ");
    let line = server.expect_line(&head);
    let addr = line
        .strip_prefix(&head)
        .and_then(|rest| rest.strip_suffix("] Connected."))
        .and_then(|addr| addr.parse::<SocketAddr>().ok())
        .unwrap_or_else(|| panic!("bad connect line {line:?}\n{}", server.dump()));
    assert_eq!(
        addr.ip().to_string(),
        "127.0.0.1",
        "connect line {line:?} names the wrong address"
    );
    (client, addr)
}

/// The client sends `text` on its turn; the operator sees it under the session's label and the
/// prompt then shows `prompt` (the session the next plain line goes to, and how many wait).
fn client_says(server: &mut Proc, client: &mut Proc, label: &str, text: &str, prompt: &str) {
    client.expect_text("Send: ");
    client.send_line(text);
    assert_eq!(
        server.expect_line(&format!("[{label}] Received:")),
        format!("[{label}] Received: {text}"),
        "{}",
        server.dump()
    );
    server.expect_text(prompt);
}

/// Alice joins and speaks, so she waits for the operator.
fn alice_waiting_for_the_operator(server: &mut Proc, port: u16) -> Proc {
    let (mut alice, _) = join(server, port, "alice", 1);
    client_says(server, &mut alice, "#1 alice", "a1", "Send to #1 alice: ");
    alice
}

/// Alice, Bob and Carol join and speak in that order, so all three wait for the operator.
fn three_waiting_for_the_operator(server: &mut Proc, port: u16) -> [Proc; 3] {
    let mut clients =
        [("alice", 1), ("bob", 2), ("carol", 3)].map(|(name, id)| join(server, port, name, id).0);
    let prompts = [
        "Send to #1 alice: ",
        "Send to #1 alice (+1 more to answer): ",
        "Send to #1 alice (+2 more to answer): ",
    ];
    for ((client, (label, text)), prompt) in clients
        .iter_mut()
        .zip([("#1 alice", "a1"), ("#2 bob", "b1"), ("#3 carol", "c1")])
        .zip(prompts)
    {
        client_says(server, client, label, text, prompt);
    }
    clients
}

/// Alice, Bob and Carol join; Alice and then Carol speak, so they wait for the operator while
/// Bob, silent, has his own turn.
fn alice_and_carol_waiting_bob_silent(server: &mut Proc, port: u16) -> [Proc; 3] {
    let [(mut alice, _), (bob, _), (mut carol, _)] =
        [("alice", 1), ("bob", 2), ("carol", 3)].map(|(name, id)| join(server, port, name, id));
    client_says(server, &mut alice, "#1 alice", "a1", "Send to #1 alice: ");
    client_says(
        server,
        &mut carol,
        "#3 carol",
        "c1",
        "Send to #1 alice (+1 more to answer): ",
    );
    [alice, bob, carol]
}

/// The operator types `text`; asserts that the console took it under `prompt` (the session it
/// names is the one the line goes to). With stdin piped the line is echoed right after the
/// prompt, so the echo is either `{prompt}{text}` or, when the caller has just awaited
/// `prompt` itself (which consumes it), `text` alone.
fn operator_types(server: &mut Proc, prompt: &str, text: &str) {
    server.send_line(text);
    let echoed = server.expect_line(text);
    assert!(
        echoed == text || echoed == format!("{prompt}{text}"),
        "{text:?} was not taken under the prompt {prompt:?}: {echoed:?}\n{}",
        server.dump()
    );
}

/// The operator types `text` under `prompt`; the console delivers it to session `label`, whose
/// client shows `received`.
fn operator_answers(
    server: &mut Proc,
    prompt: &str,
    text: &str,
    label: &str,
    client: &mut Proc,
    received: &str,
) {
    operator_types(server, prompt, text);
    delivered(server, label);
    assert_eq!(next_received(client), received);
}

/// The operator types `text` under `prompt`, and the console refuses it with `error`.
fn operator_is_refused(server: &mut Proc, prompt: &str, text: &str, error: &str) {
    operator_types(server, prompt, text);
    assert_eq!(server.expect_line("Error:"), error);
}

/// The session `label` got the operator's message (the client acknowledged it).
fn delivered(server: &mut Proc, label: &str) {
    assert_eq!(
        server.expect_line(&format!("[{label}] Message Received")),
        format!("[{label}] Message Received")
    );
    server.expect_line(&format!("[{label}] Roundtrip time: "));
}

/// The client's next `Received:` line (anything received before it would have been seen here).
fn next_received(client: &mut Proc) -> String {
    client.expect_line("Received: ")
}

/// `0m00s`-style duration, as `/list` shows it.
fn is_list_duration(text: &str) -> bool {
    let Some((minutes, seconds)) = text.split_once('m') else {
        return false;
    };
    let Some(seconds) = seconds.strip_suffix('s') else {
        return false;
    };
    !minutes.is_empty()
        && minutes.bytes().all(|b| b.is_ascii_digit())
        && seconds.len() == 2
        && seconds.bytes().all(|b| b.is_ascii_digit())
}

/// Asserts the `/list` line of one session; returns nothing, fails with the whole line.
fn assert_list_session(line: &str, id: u32, name: &str, addr: SocketAddr, rest: &str) {
    let head = format!("  #{id} {name} {addr} {rest} connected=");
    let duration = line
        .strip_prefix(&head)
        .unwrap_or_else(|| panic!("/list line {line:?} is not {head:?}..."));
    assert!(is_list_duration(duration), "bad connected time in {line:?}");
}

/// Waits for a client to exit and returns its exit code and output.
fn finished(mut client: Proc) -> common::Finished {
    client.wait_exit(TIMEOUT);
    client.finish()
}

#[test]
fn plain_lines_answer_the_longest_waiting_session_first() {
    let (mut server, port) = start_server(&[]);
    let [mut alice, mut bob, mut carol] = three_waiting_for_the_operator(&mut server, port);

    operator_types(
        &mut server,
        "Send to #1 alice (+2 more to answer): ",
        "to alice",
    );
    delivered(&mut server, "#1 alice");
    operator_types(
        &mut server,
        "Send to #2 bob (+1 more to answer): ",
        "to bob",
    );
    delivered(&mut server, "#2 bob");
    operator_types(&mut server, "Send to #3 carol: ", "to carol");
    delivered(&mut server, "#3 carol");

    assert_eq!(next_received(&mut alice), "Received: to alice");
    assert_eq!(next_received(&mut bob), "Received: to bob");
    assert_eq!(next_received(&mut carol), "Received: to carol");

    // Nobody waits any more: a piped line is held for the next client owed an answer.
    server.send_line("to the next one");
    server.expect_line("Held: nobody is owed an answer yet; it goes to the next client who is.");
    for client in [alice, bob, carol] {
        let done = client.expect_exit(0);
        assert!(!done.stdout.contains("to the next one"), "{done:#?}");
    }
    let mut dave = common::start_client("dave", port);
    dave.expect_line("Connected!");
    dave.send_line("hi, dave here");
    assert_eq!(next_received(&mut dave), "Received: to the next one");
}

#[test]
fn piped_answers_wait_for_their_client_and_the_end_of_input_waits_for_them() {
    // The original program's way: `printf 'pong1\npong2\n' | server`, then a client.
    let (mut server, port) = start_server(&[]);
    server.send_line("pong1");
    server.send_line("pong2");
    server.close_stdin();
    server.expect_line("End of input: shutting down once the 2 held answer(s) are delivered.");
    let client = common::run(
        &["client", "127.0.0.1", &port.to_string()],
        b"ping1\nping2\n",
    );
    assert_eq!(client.code(), 0, "{client:#?}");
    let received: Vec<&str> = client
        .lines()
        .into_iter()
        .filter(|l| l.starts_with("Received: "))
        .collect();
    assert_eq!(
        received,
        ["Received: pong1", "Received: pong2"],
        "{client:#?}"
    );
    // The last answer's ACK came before the shutdown.
    expect_ack(&mut server, "[#1] ");
    expect_ack(&mut server, "[#1] ");
    server.expect_line("every held answer delivered; shutting down.");
    assert!(server.wait_exit(TIMEOUT).success(), "{}", server.dump());
    assert!(
        !server.dump().contains("Not delivered"),
        "{}",
        server.dump()
    );
}

#[test]
fn at_n_answers_out_of_order_and_refuses_a_session_whose_turn_it_is_not() {
    let (mut server, port) = start_server(&[]);
    let [mut alice, mut bob, mut carol] = three_waiting_for_the_operator(&mut server, port);

    // Carol is answered first, out of order.
    operator_answers(
        &mut server,
        "Send to #1 alice (+2 more to answer): ",
        "@3 to carol",
        "#3 carol",
        &mut carol,
        "Received: to carol",
    );

    // Carol's turn now: the operator may not speak to her again, nor to a session that does not
    // exist, nor with a malformed @.
    operator_is_refused(
        &mut server,
        "Send to #1 alice (+1 more to answer): ",
        "@3 again",
        "Error: it is not your turn with #3 carol; nothing was sent.",
    );
    operator_is_refused(
        &mut server,
        "Send to #1 alice (+1 more to answer): ",
        "@9 ghost",
        "Error: there is no session #9; nothing was sent.",
    );
    operator_is_refused(
        &mut server,
        "Send to #1 alice (+1 more to answer): ",
        "@x nobody",
        "Error: write @N TEXT, where N is a session number.",
    );

    // None of that reached anyone: each client's next message is the next legitimate one, and
    // Alice is still first in line.
    client_says(
        &mut server,
        &mut carol,
        "#3 carol",
        "c2",
        "Send to #1 alice (+2 more to answer): ",
    );
    operator_answers(
        &mut server,
        "Send to #1 alice (+2 more to answer): ",
        "@3 second",
        "#3 carol",
        &mut carol,
        "Received: second",
    );
    operator_answers(
        &mut server,
        "Send to #1 alice (+1 more to answer): ",
        "to alice",
        "#1 alice",
        &mut alice,
        "Received: to alice",
    );
    operator_answers(
        &mut server,
        "Send to #2 bob: ",
        "@2 to bob",
        "#2 bob",
        &mut bob,
        "Received: to bob",
    );

    for client in [alice, bob, carol] {
        let done = client.expect_exit(0);
        for stray in ["again", "ghost", "nobody"] {
            assert!(!done.stdout.contains(stray), "{stray:?} arrived: {done:#?}");
        }
    }
}

#[test]
fn list_shows_each_session_and_the_clients_waiting_in_line() {
    let (mut server, port) = start_server(&["--workers", "3"]);
    let (mut alice, alice_addr) = join(&mut server, port, "alice", 1);
    let (mut bob, bob_addr) = join(&mut server, port, "bob", 2);
    let (carol, carol_addr) = join(&mut server, port, "carol", 3);

    // Alice has had an answer (1 each way, her turn), Bob waits for one (the operator's turn),
    // Carol has said nothing.
    client_says(
        &mut server,
        &mut alice,
        "#1 alice",
        "a1",
        "Send to #1 alice: ",
    );
    operator_types(&mut server, "Send to #1 alice: ", "hello alice");
    delivered(&mut server, "#1 alice");
    client_says(&mut server, &mut bob, "#2 bob", "b1", "Send to #2 bob: ");

    // A fourth client waits for a worker.
    let mut dave = named_client("dave", port);
    dave.expect_line("All workers are busy: you are waiting in line (position 1).");
    let waiting = server.expect_line("] Waiting in line (position 1).");
    let dave_addr = waiting
        .strip_prefix("[#4 ")
        .and_then(|rest| rest.strip_suffix("] Waiting in line (position 1)."))
        .and_then(|addr| addr.parse::<SocketAddr>().ok())
        .unwrap_or_else(|| panic!("bad waiting line {waiting:?}"));

    operator_types(&mut server, "Send to #2 bob: ", "/list");
    assert_eq!(server.expect_line("session(s):"), "3 session(s):");
    assert_list_session(
        &server.expect_line("  #1 "),
        1,
        "alice",
        alice_addr,
        "turn=theirs sent=1 received=1",
    );
    assert_list_session(
        &server.expect_line("  #2 "),
        2,
        "bob",
        bob_addr,
        "turn=yours sent=0 received=1",
    );
    assert_list_session(
        &server.expect_line("  #3 "),
        3,
        "carol",
        carol_addr,
        "turn=theirs sent=0 received=0",
    );
    assert_eq!(server.expect_line("waiting in line:"), "1 waiting in line:");
    let line = server.expect_line("  1. #4 ");
    let waited = line
        .strip_prefix(&format!("  1. #4 {dave_addr} waited="))
        .unwrap_or_else(|| panic!("bad waiting entry {line:?}"));
    assert!(is_list_duration(waited), "bad waiting entry {line:?}");

    // The list is shown without sending anything, and the prompt comes back.
    operator_types(&mut server, "Send to #2 bob: ", "hello bob");
    assert_eq!(next_received(&mut bob), "Received: hello bob");

    // Nobody was sent "/list".
    for client in [alice, bob, carol] {
        let done = client.expect_exit(0);
        assert!(!done.stdout.contains("list"), "{done:#?}");
    }
    dave.expect_line("Connected!");
}

#[test]
fn kick_tells_the_client_why_and_frees_its_worker_for_the_next_in_line() {
    let (mut server, port) = start_server(&["--workers", "3"]);
    let [mut alice, bob, carol] = alice_and_carol_waiting_bob_silent(&mut server, port);

    let mut dave = named_client("dave", port);
    dave.expect_line("waiting in line (position 1).");
    server.expect_line("[#4 127.0.0.1:");
    let mut erin = named_client("erin", port);
    erin.expect_line("waiting in line (position 2).");
    server.expect_line("[#5 127.0.0.1:");

    // A kick of nobody is an error.
    operator_is_refused(
        &mut server,
        "Send to #1 alice (+1 more to answer): ",
        "/kick 9 why",
        "Error: there is no session #9.",
    );

    // Bob, on his own turn, is kicked with a reason.
    operator_types(
        &mut server,
        "Send to #1 alice (+1 more to answer): ",
        "/kick 2 too chatty",
    );
    assert_eq!(
        server.expect_line("[#2 bob]"),
        "[#2 bob] Kicked: too chatty"
    );
    let bob = finished(bob);
    assert_eq!(bob.code(), 0, "{bob:#?}");
    assert!(
        bob.lines()
            .contains(&"The server removed you from the chat: too chatty"),
        "{bob:#?}"
    );

    // His worker takes Dave; Erin moves up.
    dave.expect_line("Connected!");
    assert!(
        server.expect_line("[#4 dave ").ends_with("] Connected."),
        "{}",
        server.dump()
    );
    erin.expect_line("All workers are busy: you are waiting in line (position 1).");

    // Carol, waiting for the operator's answer, is kicked: she leaves the queue.
    operator_types(
        &mut server,
        "Send to #1 alice (+1 more to answer): ",
        "/kick 3",
    );
    assert_eq!(
        server.expect_line("[#3 carol]"),
        "[#3 carol] Kicked: kicked by the operator"
    );
    let carol = finished(carol);
    assert_eq!(carol.code(), 0, "{carol:#?}");
    assert!(
        carol
            .lines()
            .contains(&"The server removed you from the chat: kicked by the operator"),
        "{carol:#?}"
    );
    erin.expect_line("Connected!");
    server.expect_line("[#5 erin ");

    // Only Alice waits now, and she gets the next plain line.
    operator_answers(
        &mut server,
        "Send to #1 alice: ",
        "still here",
        "#1 alice",
        &mut alice,
        "Received: still here",
    );
}

#[test]
fn a_killed_client_owed_an_answer_is_reported_and_the_prompt_moves_on() {
    let (mut server, port) = start_server(&[]);
    let [alice, mut bob, mut carol] = three_waiting_for_the_operator(&mut server, port);

    // SIGKILL: no END, just a closed connection. The operator types nothing.
    let killed_at = Instant::now();
    let alice = alice.kill_and_collect();
    assert!(alice.status.code().is_none(), "not killed: {alice:#?}");
    let left = server.expect_line("[#1 alice] ");
    let noticed = killed_at.elapsed();
    assert!(
        left == "[#1 alice] The other side left the chat (connection closed)."
            || left.starts_with("[#1 alice] Connection error: "),
        "unexpected report {left:?}\n{}",
        server.dump()
    );
    assert!(
        noticed < Duration::from_secs(1),
        "the departure took {noticed:?} to be reported"
    );

    // The prompt names the next in line at once, and a plain line goes to Bob.
    operator_answers(
        &mut server,
        "Send to #2 bob (+1 more to answer): ",
        "to bob",
        "#2 bob",
        &mut bob,
        "Received: to bob",
    );
    operator_answers(
        &mut server,
        "Send to #3 carol: ",
        "to carol",
        "#3 carol",
        &mut carol,
        "Received: to carol",
    );
}

#[test]
fn a_reply_to_a_departed_session_is_refused_not_lost() {
    let (mut server, port) = start_server(&[]);
    let [alice, mut bob, mut carol] = alice_and_carol_waiting_bob_silent(&mut server, port);

    // Alice vanishes while owed an answer; Bob ends his chat on his own turn.
    let _ = alice.kill_and_collect();
    server.expect_line("[#1 alice] ");
    bob.expect_text("Send: ");
    bob.send_line("end");
    assert_eq!(
        server.expect_line("[#2 bob] "),
        "[#2 bob] The other side left the chat."
    );
    let bob = finished(bob);
    assert_eq!(bob.code(), 0, "{bob:#?}");

    // Replies to either are refused, visibly, and Carol is still the one waiting.
    operator_is_refused(
        &mut server,
        "Send to #3 carol: ",
        "@1 too late",
        "Error: there is no session #1; nothing was sent.",
    );
    operator_is_refused(
        &mut server,
        "Send to #3 carol: ",
        "@2 bye bob",
        "Error: there is no session #2; nothing was sent.",
    );
    operator_answers(
        &mut server,
        "Send to #3 carol: ",
        "to carol",
        "#3 carol",
        &mut carol,
        "Received: to carol",
    );
}

#[test]
fn unknown_commands_send_nothing_and_double_slash_sends_a_slash() {
    let (mut server, port) = start_server(&[]);
    let mut alice = alice_waiting_for_the_operator(&mut server, port);

    operator_types(&mut server, "Send to #1 alice: ", "/frobnicate now");
    let error = server.expect_line("Error:");
    assert!(
        error.starts_with("Error: unknown command '/frobnicate'; nothing was sent."),
        "{error:?}"
    );
    // Alice still waits, and `//` sends a line that starts with one slash.
    operator_answers(
        &mut server,
        "Send to #1 alice: ",
        "//shrug",
        "#1 alice",
        &mut alice,
        "Received: /shrug",
    );

    let done = alice.expect_exit(0);
    assert!(!done.stdout.contains("frobnicate"), "{done:#?}");
}

#[test]
fn kick_without_a_number_explains_its_usage() {
    let (mut server, port) = start_server(&[]);
    let mut alice = alice_waiting_for_the_operator(&mut server, port);
    operator_is_refused(
        &mut server,
        "Send to #1 alice: ",
        "/kick",
        "Error: write /kick N [REASON].",
    );
    // Nothing was sent and nobody was kicked: Alice still waits and gets the next line.
    operator_types(&mut server, "Send to #1 alice: ", "still served");
    assert_eq!(next_received(&mut alice), "Received: still served");
}

/// Three clients in three states (Alice owed an answer, Bob silent on his own turn, Carol on her
/// turn after an answer) are each told that the server is shutting down, and exit 0; so does
/// the server, after `shutdown` (a `/quit`, or the end of its input).
fn three_clients_then_shutdown(shutdown: impl FnOnce(&mut Proc), announcement: &str) {
    let (mut server, port) = start_server(&[]);
    let (mut alice, _) = join(&mut server, port, "alice", 1);
    let (bob, _) = join(&mut server, port, "bob", 2);
    let (mut carol, _) = join(&mut server, port, "carol", 3);
    client_says(
        &mut server,
        &mut carol,
        "#3 carol",
        "c1",
        "Send to #3 carol: ",
    );
    client_says(
        &mut server,
        &mut alice,
        "#1 alice",
        "a1",
        "Send to #3 carol (+1 more to answer): ",
    );
    operator_types(
        &mut server,
        "Send to #3 carol (+1 more to answer): ",
        "to carol",
    );
    delivered(&mut server, "#3 carol");

    shutdown(&mut server);
    server.expect_line(announcement);
    for client in [alice, bob, carol] {
        let done = finished(client);
        assert_eq!(done.code(), 0, "{done:#?}");
        assert!(done.lines().contains(&SHUTDOWN_LINE), "{done:#?}");
    }
    let status = server.wait_exit(TIMEOUT);
    assert_eq!(status.code(), Some(0), "{}", server.dump());
    let server = server.finish();
    for label in ["#1 alice", "#2 bob", "#3 carol"] {
        assert!(
            server
                .stdout
                .contains(&format!("[{label}] Closed: the server is shutting down.")),
            "{label} not reported: {server:#?}"
        );
    }
    assert!(
        server.lines().contains(&"The server has shut down."),
        "{server:#?}"
    );
}

#[test]
fn quit_tells_every_client_and_exits_0() {
    three_clients_then_shutdown(
        |server| operator_types(server, "Send to #1 alice: ", "/quit"),
        "Shutting down.",
    );
}

#[test]
fn end_of_operator_input_tells_every_client_and_exits_0() {
    three_clients_then_shutdown(
        |server| server.close_stdin(),
        "End of input: shutting down.",
    );
}

#[test]
fn server_name_reaches_the_client_and_help_lists_the_commands() {
    let (mut server, port) = start_server(&["--name", "hub"]);
    let (mut alice, _) = join(&mut server, port, "alice", 1);
    alice.expect_line("You are #1 on hub.");
    client_says(
        &mut server,
        &mut alice,
        "#1 alice",
        "a1",
        "Send to #1 alice: ",
    );

    operator_types(&mut server, "Send to #1 alice: ", "/help");
    assert_eq!(server.expect_line("Commands:"), "Commands:");
    for command in [
        "@N TEXT",
        "end, @N end",
        "//TEXT",
        "/list",
        "/kick N",
        "/quit",
        "/help",
    ] {
        server.expect_line(command);
    }
    operator_answers(
        &mut server,
        "Send to #1 alice: ",
        "hello from hub",
        "#1 alice",
        &mut alice,
        "[hub] Received: hello from hub",
    );
    let done = alice.expect_exit(0);
    assert!(!done.stdout.contains("Commands"), "{done:#?}");
}

#[test]
fn a_client_beyond_workers_and_backlog_is_refused_and_the_operator_sees_it() {
    let (mut server, port) = start_server(&["--workers", "1", "--backlog", "0"]);
    let (mut alice, _) = join(&mut server, port, "alice", 1);

    let bob = named_client("bob", port);
    let bob = finished(bob);
    assert_eq!(bob.code(), 1, "{bob:#?}");
    assert!(
        bob.stderr.contains("The server is full; try again later."),
        "{bob:#?}"
    );
    assert!(!bob.stdout.contains("Connected!"), "{bob:#?}");
    let refused = server.expect_line("Refused");
    let addr = refused
        .strip_prefix('[')
        .and_then(|rest| rest.strip_suffix("] Refused: the server is full."))
        .and_then(|addr| addr.parse::<SocketAddr>().ok());
    assert!(addr.is_some(), "bad refused line {refused:?}");

    // Alice's chat is untouched.
    client_says(
        &mut server,
        &mut alice,
        "#1 alice",
        "a1",
        "Send to #1 alice: ",
    );
    operator_types(&mut server, "Send to #1 alice: ", "still served");
    assert_eq!(next_received(&mut alice), "Received: still served");
}

#[test]
fn a_reply_typed_just_after_the_client_died_is_reported_as_not_delivered() {
    let (mut server, port) = start_server(&[]);
    let alice = alice_waiting_for_the_operator(&mut server, port);

    // Alice is gone before the operator's line is typed; the server may not have noticed yet.
    let alice = alice.kill_and_collect();
    assert!(alice.status.code().is_none(), "not killed: {alice:#?}");
    server.send_line("for alice");
    // Either the console already knew she had left (the piped line is then held for the next
    // client) or the reply went out and was never acknowledged (not delivered): both must be
    // said. Anything else is a silent loss.
    let said = (0..10).map(|_| server.expect_line("")).find(|line| {
        line.contains("Not delivered") || line.starts_with("Held: nobody is owed an answer yet")
    });
    assert!(
        said.is_some(),
        "the reply to the departed Alice vanished without a word: {}",
        server.dump()
    );
    server.interrupt();
    assert_eq!(server.finish().code(), 0);
}

#[test]
fn end_as_an_answer_ends_only_that_chat() {
    let (mut server, port) = start_server(&[]);
    let [alice, mut bob, carol] = three_waiting_for_the_operator(&mut server, port);

    // A plain `end` ends the chat with the longest-waiting, `@N end` the one named.
    operator_types(&mut server, "Send to #1 alice (+2 more to answer): ", "end");
    assert_eq!(
        server.expect_line("[#1 alice] "),
        "[#1 alice] You ended the chat."
    );
    operator_types(
        &mut server,
        "Send to #2 bob (+1 more to answer): ",
        "@3 end",
    );
    assert_eq!(
        server.expect_line("[#3 carol] "),
        "[#3 carol] You ended the chat."
    );
    for client in [alice, carol] {
        let done = finished(client);
        assert_eq!(done.code(), 0, "{done:#?}");
        assert!(
            done.lines().contains(&"The other side left the chat."),
            "{done:#?}"
        );
    }

    // Bob's chat goes on.
    operator_answers(
        &mut server,
        "Send to #2 bob: ",
        "still on",
        "#2 bob",
        &mut bob,
        "Received: still on",
    );
    client_says(&mut server, &mut bob, "#2 bob", "b2", "Send to #2 bob: ");
}

#[test]
fn a_client_interrupted_while_owed_an_answer_leaves_the_queue() {
    let (mut server, port) = start_server(&[]);
    let (mut alice, _) = join(&mut server, port, "alice", 1);
    let (mut bob, _) = join(&mut server, port, "bob", 2);
    client_says(
        &mut server,
        &mut alice,
        "#1 alice",
        "a1",
        "Send to #1 alice: ",
    );
    client_says(
        &mut server,
        &mut bob,
        "#2 bob",
        "b1",
        "Send to #1 alice (+1 more to answer): ",
    );

    // Ctrl-C on Alice's side while the operator owes her an answer: she says goodbye.
    alice.interrupt();
    assert_eq!(
        server.expect_line("[#1 alice] "),
        "[#1 alice] The other side left the chat."
    );
    let alice = finished(alice);
    assert_eq!(alice.code(), 0, "{alice:#?}");

    operator_answers(
        &mut server,
        "Send to #2 bob: ",
        "to bob",
        "#2 bob",
        &mut bob,
        "Received: to bob",
    );
}
