//! The line editor, end to end: the real binary with `--editor always`, so that the keys a
//! person would type come from a pipe (CI has no terminal), over real TCP on 127.0.0.1.
//!
//! With the editor, every line the program prints is preceded by the erasing of the drawing
//! (`ESC [J`), and the drawing (queued lines, prompt, draft) follows it. [`expect_printed`] looks
//! at what was printed; [`Proc::expect_text`] at what is drawn.

mod common;

use common::{Proc, start_server};

/// Starts `client 127.0.0.1 PORT --name NAME EXTRA...`.
fn client(name: &str, port: u16, extra: &[&str]) -> Proc {
    let port = port.to_string();
    let mut args = vec!["client", "127.0.0.1", &port, "--name", name];
    args.extend_from_slice(extra);
    let mut client = Proc::spawn(name, &args);
    client.expect_line("Connected!");
    client
}

/// Waits for a line printed (not merely drawn) that begins with `start`, and returns it.
fn expect_printed(proc: &mut Proc, start: &str) -> String {
    loop {
        let line = proc.expect_line(start);
        // What was printed comes after the last erasing of the drawing on its line.
        let printed = line.rsplit("\x1b[J").next().unwrap_or(&line);
        if printed.starts_with(start) {
            return printed.to_string();
        }
    }
}

/// Client `name` says `text` (typed on a plain, piped client) and the server shows it.
fn says(server: &mut Proc, client: &mut Proc, label: &str, text: &str) {
    client.send_line(text);
    expect_printed(server, &format!("[{label}] Received: {text}"));
}

#[test]
fn a_draft_for_a_client_who_leaves_is_kept_and_sent_to_nobody_else() {
    let (mut server, port) = start_server(&["-w", "2", "--editor", "always"]);
    let mut alice = client("alice", port, &[]);
    says(&mut server, &mut alice, "#1 alice", "hi from alice");
    let mut bob = client("bob", port, &[]);
    says(&mut server, &mut bob, "#2 bob", "hi from bob");

    // Half typed, no Enter: the draft is for alice, the longest waiting.
    server.send_bytes(b"alice, your hint is: blue");
    server.expect_text("Send to #1 alice (+1 more to answer): alice, your hint is: blue");
    drop(alice);
    expect_printed(&mut server, "[#1 alice] The other side left the chat");
    expect_printed(&mut server, "[#1 alice] Your draft for them is kept");
    server.expect_text("Send to #1 alice (gone): alice, your hint is: blue");

    // Enter sends nothing, says so, and keeps the draft.
    server.send_bytes(b"\r");
    expect_printed(&mut server, "Not sent: #1 alice has left.");
    server.expect_text("Send to #1 alice (gone): alice, your hint is: blue");

    // Cleared, and a new draft addressed to bob: the first message bob receives is this one.
    server.send_bytes(b"\x15@2 hello bob\r");
    assert_eq!(bob.expect_line("Received: "), "Received: hello bob");
    expect_printed(&mut server, "[#2 bob] Message Received");
}

#[test]
fn a_draft_begun_when_nobody_waits_does_not_go_to_who_comes_next() {
    let (mut server, port) = start_server(&["--editor", "always"]);
    server.send_bytes(b"welcome!");
    server.expect_text("Send (nobody to answer; @N picks a session): welcome!");
    let mut alice = client("alice", port, &[]);
    says(&mut server, &mut alice, "#1 alice", "hi");
    // Alice's message came in above the draft, which kept its (lack of) target.
    server.expect_text("Send (nobody to answer; @N picks a session): welcome!");
    server.send_bytes(b"\r");
    expect_printed(
        &mut server,
        "Not sent: nobody was owed an answer when you began it.",
    );
    // Retargeted by hand at its start (Home, then `@1 `).
    server.send_bytes(b"\x1b[H@1 \r");
    assert_eq!(alice.expect_line("Received: "), "Received: welcome!");
    expect_printed(
        &mut server,
        "Send (nobody to answer; @N picks a session): @1 welcome!",
    );
}

#[test]
fn a_clients_lines_typed_ahead_are_queued_and_its_draft_survives_a_message() {
    let (mut server, port) = start_server(&[]);
    let mut alice = client("alice", port, &["--editor", "always"]);
    // An empty Enter sends nothing; then a line edited with Backspace, Left, End and Ctrl-W.
    alice.send_bytes(b"\rfirx\x7ft\x1b[Ds\x1b[F and last\x17\x17\x7f\r");
    expect_printed(&mut alice, "Send: first");
    let line = server.expect_line("[#1 alice] Received:");
    assert!(line.ends_with("[#1 alice] Received: first"), "{line:?}");

    // Typed while the server has the turn: shown as queued, not as sent.
    alice.send_bytes(b"second\r");
    alice.expect_text("Queued until the server answers: second");
    alice.send_bytes(b"draft");
    alice.expect_text("Send (after the server answers): draft");

    server.send_line("ok");
    expect_printed(&mut alice, "Received: ok");
    expect_printed(&mut alice, "Send: second");
    assert!(
        server
            .expect_line("[#1 alice] Received:")
            .ends_with("Received: second")
    );
    // The draft is still there, waiting for the next turn.
    alice.expect_text("Send (after the server answers): draft");
    server.send_line("ok again");
    expect_printed(&mut alice, "Received: ok again");
    alice.expect_text("Send: draft");

    // Ctrl-U clears it; Ctrl-D on the empty draft ends the chat.
    alice.send_bytes(b"\x15\x04");
    expect_printed(&mut alice, "Send: end");
    expect_printed(&mut server, "[#1 alice] The other side left the chat.");
    let finished = alice.expect_exit(0);
    assert!(!finished.stdout.contains("Draft not sent"), "{finished:#?}");
}

#[test]
fn a_paste_is_one_message_and_a_trailing_backslash_goes_on_to_the_next_line() {
    let (mut server, port) = start_server(&["--echo"]);
    let mut alice = client("alice", port, &["--editor", "always"]);
    alice.send_bytes(b"\x1b[200~roses are red\r\nviolets are blue\x1b[201~\r");
    expect_printed(&mut server, "[#1 alice] Received: roses are red");
    let next = server.expect_line("violets");
    assert_eq!(next, format!("{}violets are blue", " ".repeat(21)));
    expect_printed(&mut alice, "Received: roses are red");
    assert_eq!(
        alice.expect_line("violets"),
        format!("{}violets are blue", " ".repeat(10))
    );

    alice.send_bytes(b"one\\\rtwo\r");
    expect_printed(&mut server, "[#1 alice] Received: one");
    assert_eq!(server.expect_line("two"), format!("{}two", " ".repeat(21)));
}

#[test]
fn the_interrupted_client_says_which_draft_it_did_not_send() {
    let (mut server, port) = start_server(&[]);
    let mut alice = client("alice", port, &["--editor", "always"]);
    alice.send_bytes("half a thought, 日本".as_bytes());
    alice.expect_text("Send: half a thought, 日本");
    alice.interrupt();
    expect_printed(&mut alice, "Draft not sent: half a thought, 日本");
    expect_printed(&mut alice, "The chat has ended.");
    alice.expect_exit(0);
    expect_printed(&mut server, "[#1 alice] The other side left the chat.");
}
