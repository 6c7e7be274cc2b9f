//! Reading frames under the time limits (idle, a frame begun, the heartbeat), and writing the
//! session's own frames.

use super::*;

/// How far the read timeout already set on the socket may be from the one wanted and still be
/// kept: resetting it costs a system call per read, while a read that wakes a little early only
/// loops once more, and one that wakes a millisecond late harms nobody.
const TIMEOUT_SLACK: Duration = Duration::from_millis(1);

/// How long a duplex chat's read waits at most before it looks whether this side said END.
const DUPLEX_GLANCE: Duration = Duration::from_secs(1);

/// What [`Session::recv`] waits for, which its timeout names.
#[derive(Debug, Clone, Copy)]
pub(super) enum Awaited {
    /// The other side's part of the handshake: the client's first bytes, or WELCOME.
    Handshake,
    /// The peer's message, on its turn.
    Message,
    /// The ACK of this side's message.
    Ack,
    /// The PONG of a probe.
    Pong,
    /// The echo of a probe.
    Echo,
    /// Nothing: a pause between probes, whose timeout is its normal end.
    Nothing,
    /// Anything the peer of a duplex chat sends.
    Anything,
}

impl Awaited {
    /// The timeout after `secs` seconds, told to the peer in its words and reported here in ours.
    pub(super) fn timed_out(self, secs: f64) -> Fault {
        let (to_peer, here) = match self {
            Awaited::Handshake => {
                let reason = format!("no handshake within {secs} s");
                (reason.clone(), reason)
            }
            Awaited::Message => (
                format!("no message on your turn within {secs} s"),
                format!("the other side sent no message on its turn within {secs} s"),
            ),
            Awaited::Anything => (
                format!("nothing sent within {secs} s"),
                format!("the other side sent nothing within {secs} s"),
            ),
            Awaited::Ack => (
                format!("no ACK within {secs} s"),
                format!("the other side sent no ACK within {secs} s"),
            ),
            Awaited::Pong | Awaited::Nothing => (
                format!("no PONG within {secs} s"),
                format!("the server sent no PONG within {secs} s"),
            ),
            Awaited::Echo => (
                format!("no echo within {secs} s"),
                format!(
                    "the server sent no echo within {secs} s (probing with messages needs a server started with --echo)"
                ),
            ),
        };
        Fault::Timeout { to_peer, here }
    }
}

impl Session {
    /// Reads the next frame of the chat. `idle` bounds the wait for it (PINGs do not count);
    /// once a frame has begun, it must be complete within the handshake timeout (a deadline, not
    /// a per-read limit), so a peer cannot hold a worker by sending half a frame, or a frame one
    /// byte at a time. `awaited` names what is read, for the timeout's message.
    pub(super) fn recv(
        &mut self,
        idle: Option<Duration>,
        awaited: Awaited,
    ) -> Result<Frame, Fault> {
        // Set at the first wait: a frame already read (an ACK that came with the answer) needs
        // no clock.
        let mut deadline = None;
        loop {
            if let Some(frame) = self.ready_frame()? {
                return Ok(frame);
            }
            let idle =
                *deadline.get_or_insert_with(|| idle.map(|limit| (limit, Instant::now() + limit)));
            self.read_more(idle, awaited)?;
        }
    }

    /// The next whole frame already read that is not part of the heartbeat, if any; reads
    /// nothing.
    pub(super) fn ready_frame(&mut self) -> Result<Option<Frame>, Fault> {
        while let Some(frame) = self.next_frame()? {
            if let Some(frame) = self.keep_alive(frame)? {
                return Ok(Some(frame));
            }
        }
        Ok(None)
    }

    /// The next whole frame already read, if any.
    pub(super) fn next_frame(&mut self) -> Result<Option<Frame>, Fault> {
        match self.reader.next_buffered() {
            Ok(Some(frame)) => {
                self.frame_started = None;
                Ok(Some(frame))
            }
            Ok(None) => Ok(None),
            Err(e) => Err(Fault::Violation(e.to_string())),
        }
    }

    /// Answers a PING and swallows a PONG while the chat runs; any other frame is handed back.
    pub(super) fn keep_alive(&mut self, frame: Frame) -> Result<Option<Frame>, Fault> {
        match frame {
            Frame::Ping if self.chatting => self.send(&Frame::Pong).map(|_| None),
            Frame::Pong if self.chatting => Ok(None),
            frame => Ok(Some(frame)),
        }
    }

    /// In a duplex chat after this side's END: when waiting for the last ACKs stops. (Turn
    /// by turn, END wakes the read at once: no lock is taken to ask.)
    fn closing_due(&self) -> Option<Instant> {
        if !self.duplex {
            return None;
        }
        let said = self.outbox.lock().end_said?;
        Some(said + self.timeouts.handshake)
    }

    /// Notes that the peer is alive.
    pub(super) fn heard(&mut self) {
        self.last_heard = Instant::now();
        self.ping_sent = None;
    }

    /// When the heartbeat must act next: send PING, or give up on the peer if one is unanswered.
    pub(super) fn heartbeat_due(&self) -> Option<Instant> {
        let interval = self.timeouts.heartbeat.filter(|_| self.chatting)?;
        if self.reader.dialect() == Dialect::Legacy {
            return None;
        }
        Some(self.ping_sent.unwrap_or(self.last_heard) + interval)
    }

    /// Sends PING, or, when the last one went unanswered, ends the chat: the peer (or the
    /// network to it) is gone without a word, which TCP alone would not notice for hours.
    pub(super) fn beat(&mut self) -> Result<(), Fault> {
        if self.ping_sent.is_some() {
            let interval = self.timeouts.heartbeat.unwrap_or_default().as_secs_f64();
            return Err(Fault::Timeout {
                to_peer: format!("no answer to PING within {interval} s"),
                here: format!(
                    "the other side stopped answering (no answer to PING within {interval} s)"
                ),
            });
        }
        self.ping_sent = Some(self.send(&Frame::Ping)?);
        Ok(())
    }

    /// When the frame begun in the buffer must have arrived whole.
    fn frame_due(&mut self) -> Instant {
        *self.frame_started.get_or_insert_with(Instant::now) + self.timeouts.handshake
    }

    /// Reads once more for [`Session::recv`], under its time limits: `idle` is the limit on the
    /// whole wait and the deadline it gives; a frame begun has its own. Sends PINGs while it
    /// waits.
    pub(super) fn read_more(
        &mut self,
        idle: Option<(Duration, Instant)>,
        awaited: Awaited,
    ) -> Result<(), Fault> {
        loop {
            let partial = self.reader.has_buffered();
            let now = Instant::now();
            let deadline = if partial {
                let due = self.frame_due();
                if due <= now {
                    return Err(self.stalled());
                }
                Some(due)
            } else {
                let beat = self.heartbeat_due();
                if beat.is_some_and(|due| due <= now) {
                    self.beat()?;
                    continue;
                }
                if let Some((limit, due)) = idle
                    && due <= now
                {
                    return Err(awaited.timed_out(limit.as_secs_f64()));
                }
                let closing = self.closing_due();
                if closing.is_some_and(|due| due <= now) {
                    // The ACKs of what this side said before its END did not all come.
                    return Err(Fault::Done(Ending::EndedByMe));
                }
                // A duplex chat's front-end may say END while this read waits: the read wakes
                // now and then to look.
                let glance = self.duplex.then(|| now + DUPLEX_GLANCE);
                beat.into_iter()
                    .chain(idle.map(|(_, due)| due))
                    .chain(closing)
                    .chain(glance)
                    .min()
            };
            self.set_read_timeout(deadline.map(|due| due.saturating_duration_since(now)))?;
            match self.reader.fill(&mut self.stream) {
                Ok(0) => return Err(self.closed(partial)),
                Ok(_) => {
                    self.heard();
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // The deadlines above decide what a timeout means.
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    if let Some(reason) = self.stopper.reason() {
                        return Err(Fault::Stop(reason));
                    }
                }
                Err(e) => return Err(self.io_fault(e)),
            }
        }
    }

    /// Bounds the next read by `limit`, keeping the timeout already set when it is close enough
    /// (see [`TIMEOUT_SLACK`]).
    pub(super) fn set_read_timeout(&mut self, limit: Option<Duration>) -> Result<(), Fault> {
        let close_enough = match (self.read_timeout, limit) {
            (Some(None), None) => true,
            (Some(Some(set)), Some(limit)) => set.abs_diff(limit) <= TIMEOUT_SLACK,
            _ => false,
        };
        if close_enough {
            return Ok(());
        }
        // A zero timeout means "none" to the socket; the deadline has passed anyway.
        let limit = limit.map(|limit| limit.max(Duration::from_micros(1)));
        self.stream.set_read_timeout(limit).map_err(Fault::Io)?;
        self.read_timeout = Some(limit);
        Ok(())
    }

    pub(super) fn stalled(&self) -> Fault {
        let reason = format!(
            "a frame took more than {} s to arrive",
            self.timeouts.handshake.as_secs_f64()
        );
        Fault::Timeout {
            to_peer: reason.clone(),
            here: reason,
        }
    }

    /// Writes one frame with a single write; returns the instant taken just before the write,
    /// where a round trip starts.
    pub(super) fn send(&mut self, frame: &Frame) -> Result<Instant, Fault> {
        let sent = self.outbox.lock().send(frame);
        sent.map_err(|e| self.io_fault(e))
    }
}
