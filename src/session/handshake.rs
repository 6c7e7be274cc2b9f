//! The handshake: HELLO and WELCOME, the waiting line as the client sees it, and how a server
//! tells which protocol a new connection speaks.

use super::*;

/// The client's HELLO, once the server has read and accepted it (for a legacy client, which sends
/// none, what stands for it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// The client's name (may be empty; a legacy client has none).
    pub name: String,
    /// Largest message the client accepts.
    pub max_message: usize,
    /// The protocol the client speaks.
    pub dialect: Dialect,
    /// The client asked for free order, and has it.
    pub duplex: bool,
}

/// The line a connection that speaks neither protocol is sent before it is closed.
pub const STRANGER_NOTICE: &str = "This is a client_server_chat server. It speaks the \
client_server_chat protocol (see its PROTOCOL.md) and the original line protocol \
(\"msg: <text>\" and an empty line). Connect with: client_server_chat client HOST PORT\n";

/// The server's WELCOME, as the client sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Welcome {
    /// The server's number for this session.
    pub session_id: u32,
    /// The server's name (may be empty).
    pub server_name: String,
    /// Largest message the server accepts.
    pub max_message: usize,
}

impl Session {
    /// Client side: says HELLO (asking for free order when `duplex`), then waits (reporting each
    /// place in line to `on_wait`) until the server welcomes it or turns it away.
    pub fn client_handshake(
        &mut self,
        name: &str,
        duplex: bool,
        on_wait: &mut dyn FnMut(u32),
    ) -> Result<Welcome, Ending> {
        self.duplex = duplex;
        let hello = Frame::Hello {
            version: if duplex { DUPLEX_VERSION } else { VERSION },
            max_message: self.wire_limit(),
            name: name.to_string(),
        };
        self.send(&hello).map_err(|e| not_welcomed(self.fail(e)))?;
        loop {
            // Waiting in line may take any time; only a stalled frame is cut off.
            let frame = self
                .recv(None, Awaited::Handshake)
                .map_err(|e| not_welcomed(self.fail(e)))?;
            match frame {
                Frame::Waiting { position } => on_wait(position),
                Frame::Welcome {
                    session_id,
                    max_message,
                    name,
                } => {
                    {
                        let mut writer = self.outbox.lock();
                        writer.peer_max = max_message as usize;
                        if self.duplex {
                            writer.floor = Floor::Free;
                        }
                    }
                    return Ok(Welcome {
                        session_id,
                        server_name: name,
                        max_message: max_message as usize,
                    });
                }
                other => {
                    let fault = self.terminal_or_unexpected(other);
                    return Err(self.fail(fault));
                }
            }
        }
    }

    /// Client side, instead of the handshake: speaks the original line protocol from now on, to
    /// an original server (which has no handshake; the client's first message opens the chat).
    pub fn speak_legacy(&mut self) {
        self.set_dialect(Dialect::Legacy);
    }

    /// Server side: tells from the first bytes which protocol the client speaks, all within the
    /// handshake timeout. A client of ours must send HELLO, whose version is checked and which is
    /// answered with WELCOME and this session's number; a legacy client's first message is left
    /// for [`Session::run`]. A connection that speaks neither is sent [`STRANGER_NOTICE`]. A
    /// client that asks for free order has it unless `turns_only`, when it is sent an ERROR
    /// naming that option.
    pub fn server_handshake(
        &mut self,
        session_id: u32,
        server_name: &str,
        turns_only: bool,
    ) -> Result<Hello, Ending> {
        self.is_server = true;
        match self.identify().map_err(|e| self.fail(e))? {
            Dialect::Frames => {}
            Dialect::Legacy => {
                self.set_dialect(Dialect::Legacy);
                return Ok(Hello {
                    name: String::new(),
                    max_message: self.max_message,
                    dialect: Dialect::Legacy,
                    duplex: false,
                });
            }
        }
        let frame = self.recv(Some(self.timeouts.handshake), Awaited::Handshake);
        let hello = match frame.map_err(|e| self.fail(e))? {
            Frame::Hello {
                version,
                max_message,
                name,
            } => {
                let refusal = match version {
                    VERSION => None,
                    DUPLEX_VERSION if turns_only => Some(
                        "this server takes turns only (it was started with --turns-only): \
                         connect without --duplex"
                            .to_string(),
                    ),
                    DUPLEX_VERSION => None,
                    _ => Some(format!(
                        "unsupported protocol version {version} (this server speaks \
                         {VERSION} and {DUPLEX_VERSION})"
                    )),
                };
                if let Some(refusal) = refusal {
                    return Err(self.fail(Fault::Violation(refusal)));
                }
                self.duplex = version == DUPLEX_VERSION;
                if self.duplex {
                    // Open before anyone hears of the session, so that a front-end may speak
                    // at once.
                    self.outbox.lock().floor = Floor::Free;
                }
                Hello {
                    name,
                    max_message: max_message as usize,
                    dialect: Dialect::Frames,
                    duplex: self.duplex,
                }
            }
            other => {
                return Err(self.fail(Fault::Violation(format!(
                    "expected HELLO, got {}",
                    other.name()
                ))));
            }
        };
        self.outbox.lock().peer_max = hello.max_message;
        let welcome = Frame::Welcome {
            session_id,
            max_message: self.wire_limit(),
            name: server_name.to_string(),
        };
        self.send(&welcome).map_err(|e| self.fail(e))?;
        Ok(hello)
    }

    /// Waits for enough of the client's first bytes to tell its protocol.
    pub(super) fn identify(&mut self) -> Result<Dialect, Fault> {
        let handshake = self.timeouts.handshake;
        let limit = (handshake, Instant::now() + handshake);
        loop {
            match crate::wire::identify(self.reader.buffered()) {
                Opening::Speaks(dialect) => return Ok(dialect),
                Opening::Stranger => {
                    let buffered = self.reader.buffered();
                    let first = sanitize(&buffered[..buffered.len().min(8)]);
                    let _ = self.outbox.lock().write_raw(STRANGER_NOTICE.as_bytes());
                    return Err(Fault::Done(Ending::Violation(format!(
                        "speaks neither protocol (it began with \"{first}\"); it was told what this server speaks"
                    ))));
                }
                Opening::Undecided => {
                    match self.read_more(Some(limit), Awaited::Handshake) {
                        Ok(()) => {}
                        // The start of `msg: `: most likely an original client, which must not
                        // be sent a binary ERROR.
                        Err(Fault::Timeout { here, .. }) if self.reader.has_buffered() => {
                            return Err(Fault::Done(Ending::TimedOut(here)));
                        }
                        Err(fault) => return Err(fault),
                    }
                }
            }
        }
    }

    /// This side's message limit as HELLO and WELCOME carry it.
    pub(super) fn wire_limit(&self) -> u32 {
        u32::try_from(self.max_message).unwrap_or(u32::MAX)
    }
}

/// A connection closed (or reset) without a word before WELCOME is not a chat that ended but a
/// door that stayed shut.
fn not_welcomed(ending: Ending) -> Ending {
    match ending {
        Ending::PeerVanished => Ending::NotWelcomed,
        Ending::Io(e)
            if matches!(
                e.kind(),
                io::ErrorKind::ConnectionReset
                    | io::ErrorKind::ConnectionAborted
                    | io::ErrorKind::BrokenPipe
            ) =>
        {
            Ending::NotWelcomed
        }
        ending => ending,
    }
}
