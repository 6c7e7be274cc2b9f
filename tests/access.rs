//! Who may connect: `--allow`, `--deny`, their files, `--max-per-host`, and `/allow`, `/deny` at
//! run time, against the real binary over loopback (IPv4 and IPv6), port 0.

mod common;

use std::net::{SocketAddr, TcpStream};

use common::{Proc, TIMEOUT, run, start_client, start_server};

const NOT_WELCOMED: &str = "The server closed the connection without welcoming this client: it may not let this address in.";

/// Starts `server HOST 0 EXTRA...` and returns it with its port, read from its first line.
fn server_on(host: &str, extra: &[&str]) -> (Proc, u16) {
    let mut args = vec!["server", host, "0"];
    args.extend_from_slice(extra);
    let mut server = Proc::spawn("server", &args);
    let line = server.expect_line("The server is waiting for clients to connect on ");
    let port = line
        .rsplit_once("]:")
        .or_else(|| line.split(" on ").nth(1).and_then(|l| l.rsplit_once(':')))
        .and_then(|(_, rest)| rest.split(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no port in {line:?}"));
    (server, port)
}

/// A client from `host` that says `hi`, then ends: its outcome.
fn chat_from(host: &str, port: u16) -> common::Finished {
    run(&["client", host, &port.to_string()], b"hi\nend\n")
}

fn assert_served(client: &common::Finished) {
    assert_eq!(client.code(), 0, "{client:#?}");
    assert!(client.stdout.contains("Received: hi"), "{client:#?}");
}

fn assert_kept_out(client: &common::Finished) {
    assert_eq!(client.code(), 1, "{client:#?}");
    assert!(client.stderr.contains(NOT_WELCOMED), "{client:#?}");
    assert!(!client.stdout.contains("Connected!"), "{client:#?}");
}

#[test]
fn ipv4_addresses_and_blocks_are_allowed_or_denied_and_deny_wins() {
    let (mut server, port) = start_server(&["--echo", "--deny", "127.0.0.1"]);
    assert_kept_out(&chat_from("127.0.0.1", port));
    assert_eq!(
        server.expect_line("Refused"),
        "[127.0.0.1] Refused: not allowed."
    );

    // With an allow rule, everyone else is kept out.
    let (_server, port) = start_server(&["--echo", "--allow", "10.0.0.0/8"]);
    assert_kept_out(&chat_from("127.0.0.1", port));
    let (_server, port) = start_server(&["--echo", "--allow", "127.0.0.0/8"]);
    assert_served(&chat_from("127.0.0.1", port));
    // Deny wins over allow.
    let (_server, port) =
        start_server(&["--echo", "--allow", "127.0.0.0/8", "--deny", "127.0.0.1"]);
    assert_kept_out(&chat_from("127.0.0.1", port));
}

#[test]
fn ipv6_rules_apply_and_ipv4_clients_of_a_dual_stack_server_follow_the_ipv4_rules() {
    let (_server, port) = server_on("::1", &["--echo", "--deny", "::1"]);
    assert_kept_out(&chat_from("::1", port));
    let (_server, port) = server_on("::1", &["--echo", "--allow", "::1/128"]);
    assert_served(&chat_from("::1", port));
    // On `::`, an IPv4 client arrives as ::ffff:127.0.0.1 and is judged as 127.0.0.1.
    let (_server, port) = server_on("::", &["--echo", "--allow", "127.0.0.1"]);
    assert_served(&chat_from("127.0.0.1", port));
    assert_kept_out(&chat_from("::1", port));
    let (_server, port) = server_on("::", &["--echo", "--deny", "127.0.0.0/8"]);
    assert_kept_out(&chat_from("127.0.0.1", port));
    assert_served(&chat_from("::1", port));
}

#[test]
fn one_address_gets_at_most_max_per_host_connections() {
    let (mut server, port) = start_server(&["--echo", "-w", "4", "--max-per-host", "1"]);
    let mut first = start_client("first", port);
    first.expect_line("Connected!");
    let second = chat_from("127.0.0.1", port);
    assert_kept_out(&second);
    assert_eq!(
        server.expect_line("Refused"),
        "[127.0.0.1] Refused: too many connections from this address."
    );
    first.send_line("end");
    first.expect_exit(0);
    // Its connection over, the address may come again.
    server.expect_line("left the chat");
    assert_served(&chat_from("127.0.0.1", port));
}

#[test]
fn rules_files_are_read_and_a_bad_line_is_a_usage_error_naming_it() {
    let dir = std::env::temp_dir().join(format!("access-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = dir.join("deny.txt");
    std::fs::write(
        &good,
        "# scanners\n203.0.113.0/24\n127.0.0.1  # this machine\n",
    )
    .unwrap();
    let (_server, port) = start_server(&["--echo", "--deny-file", good.to_str().unwrap()]);
    assert_kept_out(&chat_from("127.0.0.1", port));

    let bad = dir.join("allow.txt");
    std::fs::write(&bad, "10.0.0.0/8\n\n10.0.0.0/40\n").unwrap();
    let refused = run(
        &[
            "server",
            "127.0.0.1",
            "0",
            "--allow-file",
            bad.to_str().unwrap(),
        ],
        b"",
    );
    assert_eq!(refused.code(), 2, "{refused:#?}");
    assert!(
        refused.stderr.contains("line 3: '10.0.0.0/40'"),
        "{refused:#?}"
    );
    let refused = run(&["server", "127.0.0.1", "0", "--deny", "10.0.0.300"], b"");
    assert_eq!(refused.code(), 2, "{refused:#?}");
    assert!(
        refused.stderr.contains("--deny: '10.0.0.300'"),
        "{refused:#?}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_scan_of_200_connections_is_reported_in_a_bounded_number_of_lines() {
    let (mut server, port) = start_server(&["--echo", "--deny", "127.0.0.1"]);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    for _ in 0..200 {
        if let Ok(stream) = TcpStream::connect_timeout(&addr, TIMEOUT) {
            stream.set_read_timeout(Some(TIMEOUT)).unwrap();
            // Closed by the server before anything is read: the read sees the end (or a reset).
            let mut byte = [0u8; 1];
            let _ = std::io::Read::read(&mut &stream, &mut byte);
        }
    }
    // Every connection has been closed by now; a client shows the server is still serving.
    server.interrupt();
    let done = server.finish();
    let refused = done
        .stdout
        .lines()
        .filter(|l| l.contains("Refused"))
        .count();
    // One line, and one more if the scan crossed a minute's mark.
    assert!(
        (1..=2).contains(&refused),
        "{refused} lines:\n{}",
        done.stdout
    );
    assert!(done.stdout.contains("[127.0.0.1] Refused: not allowed."));
}

#[test]
fn the_operator_allows_and_denies_at_run_time_and_list_shows_the_rules() {
    let (mut server, port) = start_server(&["--deny", "127.0.0.1"]);
    assert_kept_out(&chat_from("127.0.0.1", port));
    server.send_line("/allow 127.0.0.1");
    assert_eq!(
        server.expect_line("Access:"),
        "Access: everyone may connect. (sessions already connected stay; /kick N to end one)"
    );
    let mut alice = start_client("alice", port);
    alice.expect_line("Connected!");
    server.send_line("/deny 127.0.0.0/8");
    server.expect_line("Access: everyone but 127.0.0.0/8.");
    assert_kept_out(&chat_from("127.0.0.1", port));
    server.send_line("/list");
    assert_eq!(
        server.expect_line("Access:"),
        "Access: everyone but 127.0.0.0/8."
    );
    // A narrower allow cannot undo a broader deny, and says so.
    server.send_line("/allow 127.0.0.1");
    server.expect_line("127.0.0.1 is still kept out, in part or whole, by a deny rule.");
    server.send_line("/deny nonsense");
    server.expect_line(
        "Error: 'nonsense' is not an IPv4 or IPv6 address or CIDR block; nothing changed.",
    );
    // Alice, connected before, chats on.
    alice.send_line("still here");
    server.expect_line("Received: still here");
}

#[test]
fn denying_the_only_allowed_block_does_not_open_the_server_to_everyone() {
    let (mut server, port) = start_server(&["--allow", "10.0.0.0/8"]);
    assert_kept_out(&chat_from("127.0.0.1", port));
    server.send_line("/deny 10.0.0.0/8");
    server.expect_line("Access: only 10.0.0.0/8, but never 10.0.0.0/8.");
    assert_kept_out(&chat_from("127.0.0.1", port));
}
