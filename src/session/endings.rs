//! How a session ends: what a close, an error or an unexpected frame means, the goodbye told to
//! the peer, and the close that does not lose it.

use super::*;

/// How long a closing side keeps reading after its last frame, so the peer's last bytes do not
/// turn the close into a reset that could destroy that frame before the peer reads it.
const LINGER: Duration = Duration::from_millis(200);

/// Lets other threads end a session that may be blocked in a read.
#[derive(Debug)]
pub struct Stopper {
    reason: Mutex<Option<StopReason>>,
    stream: TcpStream,
}

impl Stopper {
    /// A stopper for the session that will run over `stream`.
    pub fn new(stream: &TcpStream) -> io::Result<Arc<Stopper>> {
        Ok(Arc::new(Stopper {
            reason: Mutex::new(None),
            stream: stream.try_clone()?,
        }))
    }

    /// Asks the session to end; the first reason given wins.
    ///
    /// Shutting the read half makes a blocked `read` return at once, while the write half stays
    /// open for the session's last frame.
    pub fn stop(&self, reason: StopReason) {
        self.reason.lock().get_or_insert(reason);
        let _ = self.stream.shutdown(Shutdown::Read);
    }

    /// Closes both halves at once: for a session that does not finish on its own in time.
    pub fn force_close(&self) {
        let _ = self.stream.shutdown(Shutdown::Both);
    }

    /// The reason given to [`Stopper::stop`], if any.
    pub fn reason(&self) -> Option<StopReason> {
        self.reason.lock().clone()
    }
}

/// Why a turn could not go on; [`Session::fail`] turns it into an [`Ending`].
#[derive(Debug)]
pub(super) enum Fault {
    /// The chat is over and the peer needs no more frames.
    Done(Ending),
    /// Another thread stopped the session.
    Stop(StopReason),
    /// The peer broke the protocol.
    Violation(String),
    /// The peer was too slow: the reason as the peer is told it, and as this side reports it.
    Timeout {
        /// For the ERROR frame, in the peer's words ("your turn").
        to_peer: String,
        /// For this side's [`Ending`].
        here: String,
    },
    /// The socket failed.
    Io(io::Error),
}

impl Session {
    /// The fault for a connection that reached end of stream.
    pub(super) fn closed(&self, mid_frame: bool) -> Fault {
        match self.stopper.reason() {
            Some(reason) => Fault::Stop(reason),
            // The front-end said END, which woke this read.
            None if self.outbox.lock().floor == Floor::Closed => Fault::Done(Ending::EndedByMe),
            None if mid_frame => Fault::Violation(ProtocolError::Truncated.to_string()),
            // The original program ends a chat by closing the connection.
            None if self.reader.dialect() == Dialect::Legacy => Fault::Done(Ending::PeerEnded),
            None => Fault::Done(Ending::PeerVanished),
        }
    }

    /// An I/O error is the stop's doing when a stop was asked for.
    pub(super) fn io_fault(&self, e: io::Error) -> Fault {
        match self.stopper.reason() {
            Some(reason) => Fault::Stop(reason),
            None => Fault::Io(e),
        }
    }

    /// What a frame that is not the expected one means: a goodbye, or a protocol violation.
    pub(super) fn terminal_or_unexpected(&mut self, frame: Frame) -> Fault {
        match frame {
            Frame::End => {
                // To a legacy peer `end` is a message like any other, so it is owed its ACK.
                if self.reader.dialect() == Dialect::Legacy {
                    let _ = self.send(&Frame::Ack);
                }
                Fault::Done(Ending::PeerEnded)
            }
            Frame::Error(reason) => Fault::Done(Ending::PeerError(reason)),
            Frame::Shutdown if !self.is_server => Fault::Done(Ending::ServerShutdown),
            Frame::Kicked(reason) if !self.is_server => Fault::Done(Ending::Kicked(reason)),
            Frame::Full if !self.is_server => Fault::Done(Ending::ServerFull),
            Frame::Message(_) => Fault::Violation("MESSAGE out of turn".into()),
            Frame::Ack => Fault::Violation("ACK with no MESSAGE to acknowledge".into()),
            other => Fault::Violation(format!("unexpected {} frame", other.name())),
        }
    }

    /// Ends the session: tells the peer why where there is something to tell, closes the
    /// connection, and turns the fault into the [`Ending`] the caller sees.
    pub(super) fn fail(&mut self, fault: Fault) -> Ending {
        // Nothing a front-end says from now on is sent.
        self.outbox.lock().floor = Floor::Closed;
        let (goodbye, ending) = match fault {
            Fault::Done(ending) => (None, ending),
            Fault::Stop(reason) => {
                let frame = match &reason {
                    StopReason::Shutdown => Frame::Shutdown,
                    StopReason::Kick(why) => Frame::Kicked(why.clone()),
                    StopReason::Interrupt => Frame::End,
                };
                (Some(frame), Ending::Stopped(reason))
            }
            Fault::Violation(reason) => (
                Some(Frame::Error(reason.clone())),
                Ending::Violation(reason),
            ),
            Fault::Timeout { to_peer, here } => {
                (Some(Frame::Error(to_peer)), Ending::TimedOut(here))
            }
            Fault::Io(e) => (None, Ending::Io(e)),
        };
        if let Some(frame) = goodbye {
            // The peer may already be gone; its absence is the ending we report anyway.
            let _ = self.send(&frame);
        }
        self.close();
        ending
    }

    /// Sends FIN, then reads briefly until the peer closes too, so that unread bytes do not
    /// make the kernel answer with a reset that could destroy our last frame in flight.
    pub(super) fn close(&mut self) {
        let _ = self.stream.shutdown(Shutdown::Write);
        let deadline = Instant::now() + LINGER;
        let mut scratch = [0u8; 1024];
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            if left.is_zero() || self.stream.set_read_timeout(Some(left)).is_err() {
                break;
            }
            match io::Read::read(&mut self.stream, &mut scratch) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    }
}
