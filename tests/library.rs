//! The library API over real sockets: a server with an echo front-end and client sessions.

mod common;

use common::Script;

use std::net::TcpStream;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use client_server_chat::server::{Frontend, Server, ServerConfig, ServerEvent, ServerHandle};
use client_server_chat::session::{
    EchoResponder, Ending, Event, Responder, Session, Stopper, Timeouts, Turn, Unsaid,
};
use crossbeam_channel::{Receiver, Sender};

/// Echoes every message and forwards what each session received to the test.
struct Recorder(Sender<Vec<u8>>);

impl Frontend for Recorder {
    fn responder(&self, _id: u32) -> Option<Box<dyn Responder + Send>> {
        Some(Box::new(EchoResponder))
    }

    fn event(&self, event: ServerEvent<'_>) {
        if let ServerEvent::Session {
            event: Event::Received(bytes),
            ..
        } = event
        {
            let _ = self.0.send(bytes.to_vec());
        }
    }
}

fn start(config: ServerConfig) -> (ServerHandle, Receiver<Vec<u8>>, String, JoinHandle<()>) {
    let server = Server::bind(&["127.0.0.1:0".parse().unwrap()], config).unwrap();
    let addr = server.local_addr().to_string();
    let handle = server.handle();
    let (tx, rx) = crossbeam_channel::unbounded();
    let thread = std::thread::spawn(move || server.serve(Arc::new(Recorder(tx))).unwrap());
    (handle, rx, addr, thread)
}

fn client(addr: &str, max_message: usize) -> Session {
    let stream = TcpStream::connect(addr).unwrap();
    let stopper = Stopper::new(&stream).unwrap();
    Session::new(stream, max_message, Timeouts::default(), stopper).unwrap()
}

#[test]
fn any_bytes_survive_a_round_trip_and_every_message_is_acked() {
    let (handle, server_saw, addr, thread) = start(ServerConfig::default());
    let mut session = client(&addr, 1024);
    let welcome = session
        .client_handshake("tester", false, &mut |_| {})
        .unwrap();
    assert_eq!(welcome.session_id, 1);
    let message = b"nul\0 invalid\xff\xfe newline\n end".to_vec();
    let mut script = Script::new(session.outbox(), vec![message.clone(), Vec::new()]);
    let (mut acks, mut echoes) = (0, Vec::new());
    let ending = session.run(Turn::Mine, None, &mut |event| match event {
        Event::MyTurn => script.my_turn(),
        Event::Acked { rtt, .. } => {
            assert!(rtt > Duration::ZERO);
            acks += 1;
        }
        Event::Received(bytes) => echoes.push(bytes.to_vec()),
        _ => {}
    });
    assert!(matches!(ending, Ending::EndedByMe), "{ending}");
    assert_eq!(acks, 2);
    assert!(script.refused.is_empty());
    assert_eq!(echoes, vec![message.clone(), Vec::new()]);
    assert_eq!(
        server_saw.recv_timeout(Duration::from_secs(5)).unwrap(),
        message
    );
    handle.shutdown();
    thread.join().unwrap();
}

#[test]
fn a_message_over_the_servers_limit_is_refused_before_sending() {
    let config = ServerConfig {
        max_message: 8,
        ..ServerConfig::default()
    };
    let (handle, server_saw, addr, thread) = start(config);
    let mut session = client(&addr, 1024);
    let welcome = session.client_handshake("", false, &mut |_| {}).unwrap();
    assert_eq!(welcome.max_message, 8);
    let mut script = Script::new(session.outbox(), vec![vec![b'x'; 9], b"fits".to_vec()]);
    let ending = session.run(Turn::Mine, None, &mut |event| {
        if event == Event::MyTurn {
            script.my_turn();
        }
    });
    assert!(matches!(ending, Ending::EndedByMe), "{ending}");
    assert!(
        matches!(script.refused[..], [Unsaid::TooLong { len: 9, max: 8 }]),
        "{:?}",
        script.refused
    );
    // The chat went on: the next message arrived, the refused one never did.
    assert_eq!(
        server_saw.recv_timeout(Duration::from_secs(5)).unwrap(),
        b"fits"
    );
    handle.shutdown();
    thread.join().unwrap();
}

#[test]
fn shutdown_wakes_a_session_blocked_on_the_peer_and_tells_the_client() {
    let (handle, _saw, addr, thread) = start(ServerConfig::default());
    let mut session = client(&addr, 1024);
    session.client_handshake("", false, &mut |_| {}).unwrap();
    // The server's worker now blocks reading our first message. The pause makes that the likely
    // state when the shutdown comes; the outcome must be the same if it comes earlier.
    let stopper = handle.clone();
    let trigger = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        stopper.shutdown();
    });
    let ending = session.run(Turn::Peer, None, &mut |_| {});
    assert!(matches!(ending, Ending::ServerShutdown), "{ending}");
    trigger.join().unwrap();
    thread.join().unwrap();
}
