//! Free order (protocol version 2, `client --duplex`): either side says something whenever it
//! likes, each message is acknowledged the moment it arrives, and each ACK is matched to this
//! side's oldest message in flight, since each direction's ACKs keep its messages' order.

use super::*;

impl Session {
    /// Runs a duplex chat until it ends, and says how it ended. [`Event::MyTurn`], reported
    /// once at the start, lets the front-end speak through the [`Outbox`] at any time from its
    /// own thread; a responder answers each message at once.
    pub(super) fn run_duplex(
        &mut self,
        mut responder: Option<&mut dyn Responder>,
        events: &mut dyn FnMut(Event<'_>),
    ) -> Ending {
        // Once, for good: this side may speak from now on (the handshake opened the floor).
        events(Event::MyTurn);
        // When the peer's END came: its END came after whatever it sent, and this side's
        // messages still in flight may yet be acknowledged, for a little while.
        let mut peer_ended: Option<Instant> = None;
        let fault = loop {
            let settled = {
                let writer = self.outbox.lock();
                writer
                    .in_flight
                    .is_empty()
                    .then_some(writer.end_said.is_some())
            };
            match (peer_ended, settled) {
                (Some(_), Some(_)) => break Fault::Done(Ending::PeerEnded),
                // This side said END and every ACK is in: nothing is left to wait for but what
                // came with the last of them (an echo), acknowledged and shown first.
                (None, Some(true)) if !self.reader.has_buffered() => {
                    break Fault::Done(Ending::EndedByMe);
                }
                _ => {}
            }
            let responder = responder.as_mut().map(|r| &mut **r as _);
            match self.duplex_step(responder, peer_ended, events) {
                Ok(Step::Going) => {}
                Ok(Step::PeerEnded) => {
                    self.outbox.lock().floor = Floor::Closed;
                    peer_ended = Some(Instant::now());
                }
                Err(Fault::Stop(reason)) => break Fault::Stop(reason),
                Err(_) if peer_ended.is_some() => break Fault::Done(Ending::PeerEnded),
                Err(fault) => break fault,
            }
        };
        // Closed in the same step as the count, so that a message said meanwhile is either
        // counted here or refused.
        let unacknowledged = {
            let mut writer = self.outbox.lock();
            writer.floor = Floor::Closed;
            std::mem::take(&mut writer.in_flight)
        };
        for (_, said) in unacknowledged {
            if let Some(said) = said {
                events(Event::Sent(&said));
            }
            events(Event::Unacknowledged);
        }
        self.fail(fault)
    }

    /// Takes the peer's next frame: a message (acknowledged, answered by a responder, then
    /// reported), the ACK of this side's oldest message in flight, or the peer's END.
    fn duplex_step(
        &mut self,
        responder: Option<&mut dyn Responder>,
        peer_ended: Option<Instant>,
        events: &mut dyn FnMut(Event<'_>),
    ) -> Result<Step, Fault> {
        // Once the peer has ended, only the last ACKs are awaited, within the handshake timeout
        // in all. (Once this side has, the reads watch its own deadline: see `closing_due`.)
        let idle = match peer_ended {
            Some(at) => {
                Some((at + self.timeouts.handshake).saturating_duration_since(Instant::now()))
            }
            None => self.timeouts.idle,
        };
        let frame = match self.ready_frame()? {
            Some(frame) => frame,
            None => self.recv(idle, Awaited::Anything)?,
        };
        let end_said = |session: &Session| session.outbox.lock().end_said.is_some();
        match frame {
            Frame::Message(_) if peer_ended.is_some() => {
                Err(Fault::Violation("MESSAGE after END".into()))
            }
            Frame::Message(message) => {
                // This one and those read behind it: none is acknowledged yet, so the peer had
                // them all in flight at once.
                let unacknowledged = self.reader.buffered_messages() + 1;
                if unacknowledged > self.max_in_flight {
                    return Err(Fault::Violation(format!(
                        "{unacknowledged} messages in flight, over the limit of {}",
                        self.max_in_flight
                    )));
                }
                if let Some(Journal(journal)) = self.journal.as_mut() {
                    journal(&message);
                }
                // A message that crossed this side's END is acknowledged and shown, not answered.
                let answer = responder
                    .filter(|_| !end_said(self))
                    .map(|responder| responder.answer(&message));
                let (sent, refusal) = self.acknowledge(answer.as_deref());
                sent?;
                events(Event::Received(&message));
                match (answer, refusal) {
                    (Some(answer), None) => events(Event::Sent(&answer)),
                    (_, Some(unsaid)) => {
                        match unsaid {
                            Unsaid::TooLong { len, max } => events(Event::TooLong { len, max }),
                            Unsaid::Unsendable(why) => events(Event::Unsendable(why)),
                            _ => {}
                        }
                        self.send(&Frame::End)?;
                        return Err(Fault::Done(Ending::EndedByMe));
                    }
                    (None, None) => {}
                }
                Ok(Step::Going)
            }
            Frame::Ack => {
                let Some((sent_at, said)) = self.outbox.lock().acknowledged() else {
                    return Err(Fault::Violation("ACK with no MESSAGE in flight".into()));
                };
                if let Some(said) = said {
                    events(Event::Sent(&said));
                }
                self.acks += 1;
                events(Event::Acked {
                    rtt: self.last_heard.saturating_duration_since(sent_at),
                    number: self.acks,
                });
                Ok(Step::Going)
            }
            // The two ENDs crossed: this side ended the chat as much as the peer did.
            Frame::End if end_said(self) => Err(Fault::Done(Ending::EndedByMe)),
            Frame::End => Ok(Step::PeerEnded),
            other => Err(self.terminal_or_unexpected(other)),
        }
    }
}

/// What one frame of a duplex chat did.
enum Step {
    /// The chat goes on.
    Going,
    /// The peer said END.
    PeerEnded,
}
