//! Free order (`client --duplex`, protocol version 2) end to end: the real binary and raw peers
//! over real TCP on 127.0.0.1 (servers on port 0), beside turn-by-turn clients on the same
//! server.

mod common;

use std::io::Write;
use std::net::TcpStream;

use client_server_chat::protocol::{DUPLEX_VERSION, Frame};
use client_server_chat::wire::FrameReader;

use common::{Proc, TIMEOUT, echo_server_with_a_good_client, good_turn, run, start_server};

/// Starts `client 127.0.0.1 PORT --name NAME EXTRA...`.
fn client(name: &str, port: u16, extra: &[&str]) -> Proc {
    let port = port.to_string();
    let mut args = vec!["client", "127.0.0.1", &port, "--name", name];
    args.extend_from_slice(extra);
    Proc::spawn(name, &args)
}

/// A raw peer that asked for free order and was welcomed.
struct DuplexPeer {
    stream: TcpStream,
    reader: FrameReader,
}

impl DuplexPeer {
    /// A raw peer over `stream`, every read bounded.
    fn over(stream: TcpStream) -> DuplexPeer {
        stream.set_read_timeout(Some(TIMEOUT)).expect("timeout");
        DuplexPeer {
            stream,
            reader: FrameReader::new(1 << 20),
        }
    }

    fn connect(port: u16) -> DuplexPeer {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        let mut peer = DuplexPeer::over(stream);
        peer.send(&Frame::Hello {
            version: DUPLEX_VERSION,
            max_message: 1 << 20,
            name: "raw".into(),
        });
        match peer.recv() {
            Frame::Welcome { .. } => peer,
            other => panic!("expected WELCOME, got {other:?}"),
        }
    }

    fn send(&mut self, frame: &Frame) {
        self.send_bytes(&frame.encode());
    }

    fn send_bytes(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write");
    }

    fn recv(&mut self) -> Frame {
        self.reader
            .read_frame(&mut self.stream)
            .unwrap_or_else(|e| panic!("reading a frame: {e:?}"))
    }
}

#[test]
fn duplex_and_turn_clients_share_a_two_worker_server_with_a_waiting_line() {
    let (mut server, port) = start_server(&["-w", "2"]);
    let mut alice = client("alice", port, &["--duplex"]);
    alice.expect_line("Connected!");
    server.expect_line("[#1 alice 127.0.0.1:");
    let mut bob = client("bob", port, &["--duplex"]);
    bob.expect_line("Connected!");
    server.expect_line("[#2 bob 127.0.0.1:");
    let mut carol = client("carol", port, &[]);
    carol.expect_line("waiting in line (position 1)");

    // Alice sends three at once, without waiting for an answer: each is acknowledged, by number.
    alice.send_bytes(b"a1\na2\na3\n");
    for n in 1..=3 {
        server.expect_line(&format!("[#1 alice] Received: a{n}"));
        alice.expect_line(&format!("Message Received (#{n})"));
    }
    // The operator writes to either at any time; nobody waits for a turn.
    server.send_line("@2 hi bob");
    assert_eq!(bob.expect_line("Received: "), "Received: hi bob");
    server.expect_line("[#2 bob] Message Received (#1)");
    server.send_line("@1 hi alice");
    alice.expect_line("Received: hi alice");
    server.send_line("again, alice");
    alice.expect_line("Received: again, alice");
    server.send_line("/list");
    server.expect_line("#1 alice 127.0.0.1:");
    let line = server.expect_line("#2 bob 127.0.0.1:");
    assert!(line.contains("turn=free (duplex)"), "{line}");

    // Bob leaves; carol, turn by turn, gets his worker and chats as ever.
    bob.send_line("end");
    server.expect_line("[#2 bob] The other side left the chat.");
    carol.expect_line("Connected!");
    carol.send_line("hi, carol here");
    server.expect_line("[#3 carol] Received: hi, carol here");
    server.send_line("hello carol");
    carol.expect_line("Received: hello carol");
    alice.send_line("end");
    alice.expect_exit(0);
}

#[test]
fn messages_that_cross_are_all_acknowledged_in_order() {
    let (mut server, port) = start_server(&[]);
    let mut peer = DuplexPeer::connect(port);
    server.expect_line("Connected, in free order (duplex).");
    server.send_line("@1 from the server");
    // The peer writes before reading anything: its messages and the server's cross.
    peer.send(&Frame::Message(b"c1".to_vec()));
    peer.send(&Frame::Message(b"c2".to_vec()));
    let mut acks = 0;
    let mut messages = Vec::new();
    while acks < 2 || messages.is_empty() {
        match peer.recv() {
            Frame::Ack => acks += 1,
            Frame::Message(text) => messages.push(text),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(messages, [b"from the server".to_vec()]);
    peer.send(&Frame::Ack);
    server.expect_line("[#1 raw] Received: c1");
    server.expect_line("[#1 raw] Received: c2");
    server.expect_line("[#1 raw] Message Received (#1)");
    peer.send(&Frame::End);
    server.expect_line("[#1 raw] The other side left the chat.");
}

#[test]
fn a_peer_flooding_past_the_in_flight_limit_is_closed_and_others_chat_on() {
    let (mut server, port, mut good) = echo_server_with_a_good_client(&["--max-in-flight", "40"]);
    let mut peer = DuplexPeer::connect(port);
    let flood: Vec<u8> = (0..200)
        .flat_map(|n| Frame::Message(format!("flood {n}").into_bytes()).encode())
        .collect();
    peer.send_bytes(&flood);
    let reason = loop {
        match peer.recv() {
            Frame::Ack | Frame::Message(_) => {}
            Frame::Error(reason) => break reason,
            other => panic!("unexpected {other:?}"),
        }
    };
    assert!(
        reason.ends_with("messages in flight, over the limit of 40"),
        "{reason}"
    );
    server.expect_line("over the limit of 40");
    good_turn(&mut good, 1);
}

#[test]
fn end_with_messages_in_flight_loses_none_that_were_acknowledged() {
    let (mut server, port) = start_server(&[]);
    let client = run(
        &["client", "127.0.0.1", &port.to_string(), "--duplex"],
        b"m1\nm2\nm3\nm4\nend\n",
    );
    assert_eq!(client.code(), 0, "{client:#?}");
    server.expect_line("The other side left the chat.");
    let printed = server.kill_and_collect().stdout;
    // END went out right behind the four, before any ACK: the client still read every ACK,
    // and every message acknowledged was printed by the server.
    for n in 1..=4 {
        assert!(
            client
                .stdout
                .contains(&format!("Message Received (#{n})\n")),
            "#{n}: {client:#?}"
        );
        assert!(
            printed.contains(&format!("Received: m{n}\n")),
            "m{n}: {printed}"
        );
    }
    assert!(!client.stdout.contains("Not delivered"), "{client:#?}");
}

#[test]
fn a_turns_only_server_refuses_a_duplex_client_with_a_clear_error() {
    let (_server, port) = start_server(&["--turns-only"]);
    let client = run(
        &["client", "127.0.0.1", &port.to_string(), "--duplex"],
        b"hi\n",
    );
    assert_eq!(client.code(), 1, "{client:#?}");
    assert!(client.stderr.contains("--turns-only"), "{client:#?}");
    // A turn client is welcome as ever.
    let client = run(&["client", "127.0.0.1", &port.to_string()], b"end\n");
    assert_eq!(client.code(), 0, "{client:#?}");
}

#[test]
fn ping_probes_a_duplex_session_with_pings_and_echoed_messages() {
    let (mut server, port) = start_server(&["--echo"]);
    let port = port.to_string();
    for extra in [&[][..], &["--messages"][..]] {
        let mut args = vec!["ping", "127.0.0.1", &port, "--duplex", "-c", "3", "-i", "0"];
        args.extend_from_slice(extra);
        let ping = run(&args, b"");
        assert_eq!(ping.code(), 0, "{ping:#?}");
        assert!(ping.stdout.contains(", free order\n"), "{ping:#?}");
        assert!(
            ping.stdout.contains("3 sent, 3 answered, 0 lost"),
            "{ping:#?}"
        );
        server.expect_line("Connected, in free order (duplex).");
    }
}

#[test]
fn the_operators_end_still_delivers_the_message_in_flight_before_it() {
    let (mut server, port) = start_server(&[]);
    let mut peer = DuplexPeer::connect(port);
    server.expect_line("Connected, in free order (duplex).");
    server.send_line("@1 one last thing");
    server.send_line("@1 end");
    assert_eq!(peer.recv(), Frame::Message(b"one last thing".to_vec()));
    // The server went on reading after its END: the ACK, sent after it, still counts.
    assert_eq!(peer.recv(), Frame::End);
    peer.send(&Frame::Ack);
    // As the receiver of END does once its own messages are acknowledged (none here).
    drop(peer);
    server.expect_line("[#1 raw] Message Received (#1)");
    server.expect_line("[#1 raw] You ended the chat.");
    assert!(
        !server.dump().contains("Not delivered"),
        "{}",
        server.dump()
    );
}

#[test]
fn each_ack_is_matched_to_the_oldest_message_in_flight() {
    use client_server_chat::session::{Event, Session, Speech, Stopper, Timeouts, Turn};
    use std::net::TcpListener;
    use std::time::Duration;

    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("address").port();
    // A raw server that grants free order, reads three messages, then acknowledges all three in
    // one write: the first was out longest, so its round trip must be the longest.
    let server = std::thread::spawn(move || {
        let (stream, _) = listener.accept().expect("accept");
        let mut peer = DuplexPeer::over(stream);
        assert!(matches!(
            peer.recv(),
            Frame::Hello {
                version: DUPLEX_VERSION,
                ..
            }
        ));
        peer.send(&Frame::Welcome {
            session_id: 1,
            max_message: 1 << 20,
            name: String::new(),
        });
        for n in 1..=3 {
            assert_eq!(peer.recv(), Frame::Message(format!("m{n}").into_bytes()));
        }
        let acks: Vec<u8> = (0..3).flat_map(|_| Frame::Ack.encode()).collect();
        peer.send_bytes(&acks);
        assert_eq!(peer.recv(), Frame::End);
    });
    let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let stopper = Stopper::new(&stream).expect("stopper");
    let timeouts = Timeouts {
        idle: Some(Duration::from_secs(10)),
        ..Timeouts::default()
    };
    let mut session = Session::new(stream, 1 << 20, timeouts, stopper).expect("session");
    session
        .client_handshake("", true, &mut |_| {})
        .expect("welcomed");
    assert!(session.is_duplex());
    let outbox = session.outbox();
    let mut acked = Vec::new();
    session.run(Turn::Mine, None, &mut |event| match event {
        Event::MyTurn => {
            for n in 1..=3 {
                outbox
                    .say(Speech::Message(format!("m{n}").into_bytes()))
                    .expect("said");
            }
        }
        Event::Acked { rtt, number } => {
            acked.push((number, rtt));
            if number == 3 {
                outbox.say(Speech::End).expect("end");
            }
        }
        _ => {}
    });
    server.join().expect("the raw server");
    assert_eq!(acked.iter().map(|&(n, _)| n).collect::<Vec<_>>(), [1, 2, 3]);
    assert!(
        acked[0].1 > acked[1].1 && acked[1].1 > acked[2].1,
        "round trips not in sending order: {acked:?}"
    );
}

#[test]
fn a_client_with_more_to_say_than_may_be_in_flight_holds_back_and_loses_nothing() {
    let (mut server, port) = start_server(&["--echo", "--quiet", "--max-message", "2000000"]);
    let port = port.to_string();
    // Many small lines (over 32 in flight at once), then large ones both ways (over what a
    // socket buffer holds): all acknowledged, none refused, nobody stuck.
    let mut input = String::new();
    for n in 0..300 {
        input.push_str(&format!("line {n}\n"));
    }
    for _ in 0..12 {
        input.push_str(&"x".repeat(400_000));
        input.push('\n');
    }
    input.push_str("end\n");
    let client = run(
        &[
            "client",
            "127.0.0.1",
            &port,
            "--duplex",
            "--max-message",
            "2000000",
        ],
        input.as_bytes(),
    );
    assert_eq!(client.code(), 0, "{}", &client.stderr);
    assert_eq!(client.stdout.matches("Message Received (#").count(), 312);
    assert!(client.stdout.contains("Message Received (#312)\n"));
    assert!(
        !client.stdout.contains("Not "),
        "a line was not sent or not delivered"
    );
    server.expect_line("The other side left the chat.");
}
