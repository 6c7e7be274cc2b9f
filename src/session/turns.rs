//! The chat's turns: this side's (the front-end speaks through the outbox), the peer's (each
//! message acknowledged at once, answered at once by a responder), and the reports of ACKs.

use super::*;

impl Session {
    /// Runs the chat from the given turn until it ends, and says how it ended.
    ///
    /// The peer's messages are acknowledged before `events` hears of them, so the time a
    /// front-end takes to print never counts in the peer's round trip.
    ///
    /// With a `responder`, this side answers each message at once and never waits for a
    /// front-end; without one, [`Event::MyTurn`] tells the front-end to speak through the
    /// [`Outbox`].
    pub fn run(
        &mut self,
        first: Turn,
        mut responder: Option<&mut dyn Responder>,
        events: &mut dyn FnMut(Event<'_>),
    ) -> Ending {
        self.chatting = true;
        if self.duplex {
            return self.run_duplex(responder, events);
        }
        let mut turn = first;
        loop {
            let next = match turn {
                Turn::Mine => self.my_turn(events),
                Turn::Peer => self.peer_turn(responder.as_mut().map(|r| &mut **r as _), events),
            };
            match next {
                Ok(t) => turn = t,
                Err(fault) => {
                    self.report_held_ack(events);
                    // Closed in the same step as the check, so that a message said meanwhile
                    // is either counted here or refused.
                    let unacknowledged = {
                        let mut writer = self.outbox.lock();
                        let sent = matches!(writer.floor, Floor::Sent(_));
                        writer.floor = Floor::Closed;
                        sent.then(|| std::mem::take(&mut writer.said))
                    };
                    if let Some(said) = unacknowledged {
                        // It went out, whether or not it arrived.
                        events(Event::Sent(&said));
                        events(Event::Unacknowledged);
                    }
                    return self.fail(fault);
                }
            }
        }
    }

    /// This side's turn: the front-end says something through the outbox, from this thread (in
    /// the event) or another, while this thread waits for what the peer sends. The ACK of the
    /// message ends the turn; a goodbye, a PING, the front-end's END or a stop wake the wait too.
    /// There is no limit on this side's own turn (the heartbeat keeps the peer known alive).
    pub(super) fn my_turn(&mut self, events: &mut dyn FnMut(Event<'_>)) -> Result<Turn, Fault> {
        self.outbox.lock().floor = Floor::Open;
        events(Event::MyTurn);
        let (rtt, said) = self.await_ack(None)?;
        events(Event::Sent(&said));
        self.report_ack(rtt, events);
        Ok(Turn::Peer)
    }

    pub(super) fn peer_turn(
        &mut self,
        responder: Option<&mut dyn Responder>,
        events: &mut dyn FnMut(Event<'_>),
    ) -> Result<Turn, Fault> {
        // The floor is the peer's already: no turn of this side's ends without its ACK.
        // A message that came with the last ACK is answered before that ACK is reported; with
        // nothing here yet, the report goes out before the wait.
        let frame = match self.ready_frame()? {
            Some(frame) => frame,
            None => {
                self.report_held_ack(events);
                self.recv(self.timeouts.idle, Awaited::Message)?
            }
        };
        let Frame::Message(message) = frame else {
            return Err(self.terminal_or_unexpected(frame));
        };
        if let Some(Journal(journal)) = self.journal.as_mut() {
            journal(&message);
        }
        let answer = responder.map(|responder| responder.answer(&message));
        let (sent, refusal) = self.acknowledge(answer.as_deref());
        if let Some(answer) = answer.filter(|_| refusal.is_none()) {
            // The answer is out: its ACK is awaited before anything is reported, so that the
            // time this side takes to report is in neither round trip it measures.
            let acked = sent.and_then(|_| self.await_ack(self.timeouts.idle));
            self.report_held_ack(events);
            events(Event::Received(&message));
            events(Event::Sent(&answer));
            events(Event::MyTurn);
            self.report_ack(acked?.0, events);
            return Ok(Turn::Peer);
        }
        // These reports run after the ACK went out: a slow front-end never delays it.
        self.report_held_ack(events);
        sent?;
        events(Event::Received(&message));
        match refusal {
            None => Ok(Turn::Mine),
            Some(unsaid) => {
                match unsaid {
                    Unsaid::TooLong { len, max } => events(Event::TooLong { len, max }),
                    Unsaid::Unsendable(why) => events(Event::Unsendable(why)),
                    _ => {}
                }
                self.send(&Frame::End)?;
                Err(Fault::Done(Ending::EndedByMe))
            }
        }
    }

    /// Writes the ACK of the peer's message, with `answer` in the same write when there is one
    /// and the peer can take it; returns how the write went and why the answer was refused.
    pub(super) fn acknowledge(
        &mut self,
        answer: Option<&[u8]>,
    ) -> (Result<Instant, Fault>, Option<Unsaid>) {
        let mut writer = self.outbox.lock();
        writer.clear();
        writer.encode(&Frame::Ack);
        let refusal = answer.and_then(|answer| match writer.refusal(answer) {
            Ok(()) => {
                writer.encode_message(answer);
                None
            }
            Err(unsaid) => Some(unsaid),
        });
        let sent_at = writer.write_buf();
        if answer.is_some() && refusal.is_none() {
            match (writer.floor, &sent_at) {
                // Said by this thread, whose next read finds its ACK: nobody can look sooner.
                (Floor::Free, Ok(at)) => writer.in_flight.push_back((*at, None)),
                (Floor::Free, Err(_)) => {}
                (_, sent_at) => {
                    writer.floor = sent_at.as_ref().map_or(Floor::Peer, |&at| Floor::Sent(at));
                }
            }
        }
        drop(writer);
        (sent_at.map_err(|e| self.io_fault(e)), refusal)
    }

    /// Reports the ACK whose report [`Session::report_ack`] held back, if any.
    pub(super) fn report_held_ack(&mut self, events: &mut dyn FnMut(Event<'_>)) {
        if let Some(rtt) = self.held_ack.take() {
            self.acks += 1;
            events(Event::Acked {
                rtt,
                number: self.acks,
            });
        }
    }

    /// Waits at most `idle` for the ACK of this side's message, which is out or about to go out
    /// (an ACK before it is out is the peer's violation); returns its round trip, from just
    /// before the message's write to the arrival of the ACK's bytes, and what the front-end said.
    pub(super) fn await_ack(
        &mut self,
        idle: Option<Duration>,
    ) -> Result<(Duration, Vec<u8>), Fault> {
        let frame = self.recv(idle, Awaited::Ack)?;
        let mut writer = self.outbox.lock();
        match (frame, writer.floor) {
            // The front-end said END; whatever the peer sent since (an original server ACKs the
            // `end` it was sent) comes too late to matter.
            (_, Floor::Closed) => Err(Fault::Done(Ending::EndedByMe)),
            (Frame::Ack, Floor::Sent(sent_at)) => {
                writer.floor = Floor::Peer;
                let said = std::mem::take(&mut writer.said);
                Ok((self.last_heard.saturating_duration_since(sent_at), said))
            }
            (other, _) => {
                drop(writer);
                Err(self.terminal_or_unexpected(other))
            }
        }
    }

    /// Reports an ACK's round trip, or holds the report when the peer's next message came with
    /// the ACK (an echo, a quick answer): that message is acknowledged first, so that printing
    /// this report never delays it.
    pub(super) fn report_ack(&mut self, rtt: Duration, events: &mut dyn FnMut(Event<'_>)) {
        self.held_ack = Some(rtt);
        if !self.reader.has_buffered() {
            self.report_held_ack(events);
        }
    }
}
