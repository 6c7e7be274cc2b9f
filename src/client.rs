//! The client's terminal front-end: connect, chat from stdin, print what happens.

use std::io::{self, BufRead};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError};

use crate::error::Error;
use crate::session::{
    Ending, Event, Session, Speaker, Speech, StopReason, Stopper, Timeouts, Turn,
};
use crate::term::{Terminal, seconds, trim_line_end};
use crate::text::sanitize;

/// What `client` needs.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Server host: an address or a name.
    pub host: String,
    /// Server port.
    pub port: u16,
    /// The name sent to the server (may be empty).
    pub name: String,
    /// Largest message accepted from the server.
    pub max_message: usize,
    /// Limits on a slow server.
    pub timeouts: Timeouts,
    /// Speak the original program's line protocol (no handshake, no name, no notices).
    pub legacy: bool,
}

/// One line of the user's input, or its end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// A line without its line ending.
    Line(Vec<u8>),
    /// End of input (Ctrl-D, or the end of a pipe).
    End,
}

/// Connects, chats with stdin as the user's voice, and returns when the chat ends.
///
/// An orderly end (either side's `end`, Ctrl-C, the server shutting down or removing this
/// client) is `Ok`; everything else is an [`Error`].
pub fn run(config: &ClientConfig) -> Result<(), Error> {
    let out = Terminal::stdout();
    out.line(&format!(
        "Trying to connect to server: {}: {}",
        config.host, config.port
    ));
    let stream = connect(&config.host, config.port)?;
    let stopper = Stopper::new(&stream)?;
    let on_signal = std::sync::Arc::clone(&stopper);
    ctrlc::set_handler(move || on_signal.stop(StopReason::Interrupt))
        .map_err(|e| Error::Io(io::Error::other(e)))?;
    let inbox = read_lines(io::BufReader::new(io::stdin()));
    chat(stream, config, stopper, &inbox, &out)
}

/// Runs one chat over a connected stream, with `inbox` as the user's lines.
pub fn chat(
    stream: TcpStream,
    config: &ClientConfig,
    stopper: std::sync::Arc<Stopper>,
    inbox: &Receiver<Input>,
    out: &Terminal,
) -> Result<(), Error> {
    let mut session = Session::new(stream, config.max_message, config.timeouts, stopper)?;
    let ending = if config.legacy {
        session.speak_legacy();
        out.line("Connected! (speaking the original line protocol)");
        converse(&mut session, "", inbox, out)
    } else {
        let handshake = session.client_handshake(&config.name, &mut |position| {
            out.line(&format!(
                "All workers are busy: you are waiting in line (position {position})."
            ))
        });
        // A server that shuts down (or an operator who kicks) while we wait in line ends the
        // chat as politely as it would end a running one.
        match handshake {
            Ok(welcome) => {
                out.line("Connected!");
                let server = sanitize(welcome.server_name.as_bytes());
                if !server.is_empty() {
                    out.line(&format!("You are #{} on {server}.", welcome.session_id));
                }
                converse(&mut session, &server, inbox, out)
            }
            Err(ending) => ending,
        }
    };
    out.clear_prompt();
    match ending {
        Ending::Stopped(_) => {
            out.line("The chat has ended.");
            Ok(())
        }
        ending if ending.is_orderly() => {
            out.line(&ending.to_string());
            Ok(())
        }
        ending => Err(Error::Chat(ending)),
    }
}

/// The chat itself, once connected; `server` is the server's name, made safe to print.
fn converse(
    session: &mut Session,
    server: &str,
    inbox: &Receiver<Input>,
    out: &Terminal,
) -> Ending {
    let received_prefix = if server.is_empty() {
        "Received: ".to_string()
    } else {
        format!("[{server}] Received: ")
    };
    let mut speaker = LineSpeaker { inbox, out };
    session.run(Turn::Mine, &mut speaker, &mut |event| match event {
        Event::MyTurn => out.prompt("Send: "),
        Event::Acked { rtt } => out.line(&format!(
            "Message Received\nRoundtrip time: {}s",
            seconds(rtt)
        )),
        Event::Received(text) => out.line(&format!("{received_prefix}{}", sanitize(text))),
        Event::TooLong { len, max } => out.line(&format!(
            "Not sent: the message is {len} bytes, over the server's limit of {max}."
        )),
        Event::Unsendable(why) => out.line(&format!("Not sent: {why}.")),
        Event::Unacknowledged => {
            out.line("Not delivered: the server did not acknowledge your last message.")
        }
    })
}

/// The addresses `host` resolves to.
pub fn resolve(host: &str, port: u16) -> Result<Vec<SocketAddr>, Error> {
    Ok((host, port)
        .to_socket_addrs()
        .map_err(|source| Error::Resolve {
            target: format!("{host}:{port}"),
            source,
        })?
        .collect())
}

/// Resolves `host` and connects to the first address that answers.
pub fn connect(host: &str, port: u16) -> Result<TcpStream, Error> {
    let addrs = resolve(host, port)?;
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no address found");
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(10)) {
            Ok(stream) => return Ok(stream),
            Err(e) => last = e,
        }
    }
    Err(Error::Offline {
        target: format!("{host}:{port}"),
        source: last,
    })
}

/// Reads lines on a thread of their own, so that the chat can notice the server while the user
/// is typing. Lines typed ahead wait their turn.
pub fn read_lines(input: impl BufRead + Send + 'static) -> Receiver<Input> {
    let (lines, inbox) = crossbeam_channel::unbounded();
    let spawned = std::thread::Builder::new()
        .name("stdin".into())
        .spawn(move || {
            let mut input = input;
            loop {
                let mut line = Vec::new();
                match input.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        trim_line_end(&mut line);
                        if lines.send(Input::Line(line)).is_err() {
                            return;
                        }
                    }
                }
            }
            let _ = lines.send(Input::End);
        });
    // Without a reader thread the inbox is closed at once, which reads as end of input.
    drop(spawned);
    inbox
}

/// The user's voice: each line is a message, `end` or end of input ends the chat.
struct LineSpeaker<'a> {
    inbox: &'a Receiver<Input>,
    out: &'a Terminal,
}

impl Speaker for LineSpeaker<'_> {
    fn next(&mut self, wait: Duration) -> Speech {
        match self.inbox.recv_timeout(wait) {
            Ok(Input::Line(line)) => {
                self.out.input_taken(&line);
                if line == b"end" {
                    Speech::End
                } else {
                    Speech::Message(line)
                }
            }
            Ok(Input::End) | Err(RecvTimeoutError::Disconnected) => {
                self.out.input_taken(b"end");
                Speech::End
            }
            Err(RecvTimeoutError::Timeout) => Speech::Pending,
        }
    }
}
