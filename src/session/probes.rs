//! Latency probes for `ping`: a PING and its PONG, or a message and its echo, timed; the
//! pauses between them, and the end.

use super::*;

impl Session {
    /// Client side, for a latency probe after the handshake: sends PING and waits at most
    /// `limit` for the PONG. Returns the round trip, from just before the PING's write to the
    /// arrival of the PONG's bytes. PINGs from the server are answered meanwhile.
    pub fn ping(&mut self, limit: Duration) -> Result<Duration, Ending> {
        let probe = self.send(&Frame::Ping).and_then(|sent_at| {
            self.answer(limit, Awaited::Pong, |frame| matches!(frame, Frame::Pong))?;
            Ok(self.last_heard.saturating_duration_since(sent_at))
        });
        probe.map_err(|fault| self.fail(fault))
    }

    /// Client side, for a latency probe after the handshake, against a server that echoes
    /// (`server --echo`): sends `message`, waits at most `limit` for its ACK and then for the
    /// echo, which it acknowledges. Returns the message's round trip, as [`Event::Acked`] has it.
    pub fn echo_probe(&mut self, message: Vec<u8>, limit: Duration) -> Result<Duration, Ending> {
        let refusal = self.outbox.lock().refusal(&message);
        if let Err(Unsaid::TooLong { len, max }) = refusal {
            let reason = format!("a probe of {len} bytes is over the server's limit of {max}");
            return Err(self.fail(Fault::Done(Ending::Violation(reason))));
        }
        let probe = self.send(&Frame::Message(message)).and_then(|sent_at| {
            self.answer(limit, Awaited::Ack, |frame| matches!(frame, Frame::Ack))?;
            let rtt = self.last_heard.saturating_duration_since(sent_at);
            self.answer(limit, Awaited::Echo, |frame| {
                matches!(frame, Frame::Message(_))
            })?;
            self.send(&Frame::Ack)?;
            Ok(rtt)
        });
        probe.map_err(|fault| self.fail(fault))
    }

    /// Client side, between probes: listens for `pause` (answering PINGs, noticing a goodbye or
    /// a stop at once) without sending anything.
    pub fn pause(&mut self, pause: Duration) -> Result<(), Ending> {
        let until = Instant::now() + pause;
        match self.answer(pause, Awaited::Nothing, |_| false) {
            // The only way out of an answer that accepts nothing: the time is up, and not in
            // the middle of a frame (a stalled frame is the peer's fault).
            Err(Fault::Timeout { .. })
                if Instant::now() >= until && !self.reader.has_buffered() =>
            {
                Ok(())
            }
            Err(fault) => Err(self.fail(fault)),
            Ok(()) => Ok(()),
        }
    }

    /// Client side: ends the chat with END, as `end` typed by the user would.
    pub fn end(&mut self) -> Ending {
        match self.send(&Frame::End) {
            Ok(_) => self.fail(Fault::Done(Ending::EndedByMe)),
            Err(fault) => self.fail(fault),
        }
    }

    /// Reads frames for at most `limit` until one is `wanted`; PINGs are answered, goodbyes and
    /// anything else end the wait as they would end a turn.
    pub(super) fn answer(
        &mut self,
        limit: Duration,
        awaited: Awaited,
        wanted: impl Fn(&Frame) -> bool,
    ) -> Result<(), Fault> {
        let until = Instant::now() + limit;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            let frame = match self.recv(Some(left), awaited) {
                // Named with the whole limit, not what was left of it after a PING.
                Err(Fault::Timeout { .. }) if !self.reader.has_buffered() => {
                    return Err(awaited.timed_out(limit.as_secs_f64()));
                }
                frame => frame?,
            };
            if wanted(&frame) {
                return Ok(());
            }
            match frame {
                Frame::Ping => {
                    self.send(&Frame::Pong)?;
                }
                other => return Err(self.terminal_or_unexpected(other)),
            }
        }
    }
}
