//! The session's state machine against a scripted peer over a loopback socket pair.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use super::*;

const LIMIT: Duration = Duration::from_secs(10);

/// A session already past its handshake (it speaks frames to `peer`), and the peer's end.
fn session_and_peer() -> (Session, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let ours = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (peer, _) = listener.accept().unwrap();
    peer.set_read_timeout(Some(LIMIT)).unwrap();
    let stopper = Stopper::new(&ours).unwrap();
    let timeouts = Timeouts {
        handshake: LIMIT,
        idle: Some(LIMIT),
        heartbeat: None,
    };
    (Session::new(ours, 1024, timeouts, stopper).unwrap(), peer)
}

/// The raw peer's reader: one per peer, since one read may bring two frames.
fn reader() -> FrameReader {
    FrameReader::new(1024)
}

#[test]
fn an_ack_that_comes_with_the_next_message_is_reported_after_that_message_is_acknowledged() {
    let (mut session, mut peer) = session_and_peer();
    let mut frames = reader();
    let outbox = session.outbox();
    let watch = peer.try_clone().unwrap();
    let (acked_tx, acked) = crossbeam_channel::bounded(1);
    let running = std::thread::spawn(move || {
        let mut order = Vec::new();
        let ending = session.run(Turn::Mine, None, &mut |event| match event {
            Event::MyTurn if order.is_empty() => {
                outbox.say(Speech::Message(b"hello".to_vec())).unwrap()
            }
            Event::MyTurn => outbox.say(Speech::End).unwrap(),
            Event::Acked { rtt, .. } => {
                assert!(rtt > Duration::ZERO);
                // The peer's answer is acknowledged already: its ACK is on the wire.
                let mut ack = [0u8; 5];
                watch.set_read_timeout(Some(LIMIT)).unwrap();
                assert_eq!(watch.peek(&mut ack).unwrap(), 5);
                assert_eq!(&ack, &Frame::Ack.encode()[..]);
                order.push("acked");
                let _ = acked_tx.send(());
            }
            Event::Received(text) => {
                assert_eq!(text, b"hi back");
                order.push("received");
            }
            _ => {}
        });
        (order, ending)
    });
    assert_eq!(
        frames.read_frame(&mut peer).unwrap(),
        Frame::Message(b"hello".to_vec())
    );
    let mut answer = Frame::Ack.encode();
    Frame::Message(b"hi back".to_vec()).encode_into(&mut answer);
    peer.write_all(&answer).unwrap();
    // Read only once the session has looked: it must find the ACK there.
    acked.recv_timeout(LIMIT).unwrap();
    assert_eq!(frames.read_frame(&mut peer).unwrap(), Frame::Ack);
    assert_eq!(frames.read_frame(&mut peer).unwrap(), Frame::End);
    let (order, ending) = running.join().unwrap();
    assert_eq!(order, ["acked", "received"]);
    assert!(matches!(ending, Ending::EndedByMe), "{ending}");
}

#[test]
fn end_said_from_another_thread_wakes_the_session_on_its_own_turn() {
    let (mut session, mut peer) = session_and_peer();
    let mut frames = reader();
    let outbox = session.outbox();
    assert!(matches!(outbox.say(Speech::End), Err(Unsaid::NotYourTurn)));
    let (turn_tx, turn_rx) = crossbeam_channel::bounded(1);
    let running = std::thread::spawn(move || {
        session.run(Turn::Mine, None, &mut |event| {
            if event == Event::MyTurn {
                let _ = turn_tx.send(());
            }
        })
    });
    turn_rx.recv_timeout(LIMIT).unwrap();
    // The session's thread is waiting in read; the peer says nothing.
    outbox.say(Speech::End).unwrap();
    let ending = running.join().unwrap();
    assert!(matches!(ending, Ending::EndedByMe), "{ending}");
    assert_eq!(frames.read_frame(&mut peer).unwrap(), Frame::End);
    assert!(matches!(
        outbox.say(Speech::Message(b"late".to_vec())),
        Err(Unsaid::Closed)
    ));
}

#[test]
fn out_of_turn_frames_are_violations_told_to_the_peer() {
    for (sent, reason) in [
        (Frame::Ack, "ACK with no MESSAGE to acknowledge"),
        (Frame::Message(b"me first".to_vec()), "MESSAGE out of turn"),
    ] {
        let (mut session, mut peer) = session_and_peer();
        let mut frames = reader();
        peer.write_all(&sent.encode()).unwrap();
        // Nothing is said on this side's turn: the frame comes while it is still open.
        let ending = session.run(Turn::Mine, None, &mut |_| {});
        assert!(
            matches!(&ending, Ending::Violation(why) if why == reason),
            "{ending}"
        );
        assert_eq!(
            frames.read_frame(&mut peer).unwrap(),
            Frame::Error(reason.to_string())
        );
        let mut rest = Vec::new();
        peer.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty(), "more after the ERROR: {rest:?}");
    }
}

#[test]
fn a_responder_answers_in_the_same_write_as_the_ack_and_the_front_end_cannot_speak_meanwhile() {
    let (mut session, mut peer) = session_and_peer();
    let outbox = session.outbox();
    let running = std::thread::spawn(move || {
        let mut echo = EchoResponder;
        session.run(Turn::Peer, Some(&mut echo), &mut |_| {})
    });
    peer.write_all(&Frame::Message(b"ping me".to_vec()).encode())
        .unwrap();
    // ACK and echo in one read: they went out in one write.
    let mut both = [0u8; 64];
    let n = peer.read(&mut both).unwrap();
    let mut expected = Frame::Ack.encode();
    Frame::Message(b"ping me".to_vec()).encode_into(&mut expected);
    assert_eq!(&both[..n], &expected[..]);
    // A front-end cannot speak while the answer's ACK is awaited.
    assert!(matches!(
        outbox.say(Speech::Message(b"x".to_vec())),
        Err(Unsaid::NotYourTurn)
    ));
    let mut bye = Frame::Ack.encode();
    Frame::End.encode_into(&mut bye);
    peer.write_all(&bye).unwrap();
    assert!(matches!(running.join().unwrap(), Ending::PeerEnded));
}
