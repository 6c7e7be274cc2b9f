//! The client's terminal front-end: connect, chat from stdin, print what happens.

use std::collections::VecDeque;
use std::io::{self, BufRead};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use crate::editor::Keys;
use crate::error::Error;
use crate::session::{
    Ending, Event, Outbox, Session, Speech, StopReason, Stopper, Timeouts, Turn, Unsaid,
};
use crate::term::{EditorUse, Terminal, Typing, seconds};
use crate::text::{sanitize, sanitize_lines_into, width};

/// Where to connect and what to say of oneself: what `client` and `ping` share.
#[derive(Debug, Clone)]
pub struct Target {
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
}

impl Target {
    /// Connects, and sets up the session over the connection, which Ctrl-C ends politely (the
    /// peer is sent END).
    pub fn open_session(&self) -> Result<Session, Error> {
        let (host, port) = (&self.host, self.port);
        let stream = connect(host, port)?;
        let setting_up = || Error::io(format!("setting up the connection to {host}:{port}"));
        let stopper = Stopper::new(&stream).map_err(setting_up())?;
        let on_signal = Arc::clone(&stopper);
        ctrlc::set_handler(move || on_signal.stop(StopReason::Interrupt))
            .map_err(|e| Error::io("setting up Ctrl-C")(io::Error::other(e)))?;
        Session::new(stream, self.max_message, self.timeouts, stopper).map_err(setting_up())
    }
}

/// What `client` needs.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The server, and this side's name and limits.
    pub target: Target,
    /// Speak the original program's line protocol (no handshake, no name, no notices).
    pub legacy: bool,
    /// A message is the lines typed up to an empty line, as in the original program.
    pub multiline: bool,
    /// When to run the line editor.
    pub editor: EditorUse,
    /// Ask for free order: send at any time, several messages in flight.
    pub duplex: bool,
}

/// Connects, chats with stdin as the user's voice, and returns when the chat ends.
///
/// An orderly end (either side's `end`, Ctrl-C, the server shutting down or removing this
/// client) is `Ok`; everything else is an [`Error`].
pub fn run(config: &ClientConfig) -> Result<(), Error> {
    let keys = Keys {
        multiline: config.multiline,
        commands: false,
    };
    let out = Arc::new(Terminal::editing(keys, config.editor));
    // The seed's words; an IPv6 address in brackets, so that its last colon is not the port's.
    let host = &config.target.host;
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.clone()
    };
    out.line(&format!(
        "Trying to connect to server: {host}: {}",
        config.target.port
    ));
    let session = config.target.open_session()?;
    chat(session, config, io::BufReader::new(io::stdin()), out)
}

/// Runs one chat over a connected stream, with `input` as the user's voice: keys for the line
/// editor if `out` runs it, lines otherwise, as `out` says.
pub fn chat(
    mut session: Session,
    config: &ClientConfig,
    input: impl BufRead + Send + 'static,
    out: Arc<Terminal>,
) -> Result<(), Error> {
    let typist = Arc::new(Typist {
        outbox: session.outbox(),
        out: Arc::clone(&out),
        // Named as the server names itself once it has welcomed this client.
        typed: Mutex::new(Typed {
            server: "the server".into(),
            ..Typed::default()
        }),
    });
    read_input(input, Arc::clone(&typist)).map_err(Error::io("starting the input thread"))?;
    let ending = if config.legacy {
        session.speak_legacy();
        out.line("Connected! (speaking the original line protocol)");
        converse(&mut session, "", &typist, &out)
    } else {
        let handshake =
            session.client_handshake(&config.target.name, config.duplex, &mut |position| {
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
                converse(&mut session, &server, &typist, &out)
            }
            Err(ending) => ending,
        }
    };
    if matches!(ending, Ending::Stopped(StopReason::Interrupt)) {
        out.after_interrupt();
    }
    out.clear_prompt();
    out.close();
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
fn converse(session: &mut Session, server: &str, typist: &Typist, out: &Terminal) -> Ending {
    let received_prefix = if server.is_empty() {
        "Received: ".to_string()
    } else {
        format!("[{server}] Received: ")
    };
    // Further lines of a message go under its first.
    let indent = width(&received_prefix);
    let duplex = session.is_duplex();
    {
        let mut typed = typist.typed.lock();
        typed.duplex = duplex;
        if !server.is_empty() {
            typed.server = server.to_string();
        }
    }
    session.run(Turn::Mine, None, &mut |event| match event {
        Event::MyTurn => {
            out.prompt(PROMPT);
            typist.my_turn();
        }
        // With several in flight, the ACK names its message; it may free room for a line
        // typed ahead.
        Event::Acked { rtt, number } if duplex => {
            out.line(&format!(
                "Message Received (#{number})\nRoundtrip time: {}s",
                seconds(rtt)
            ));
            typist.my_turn();
        }
        Event::Acked { rtt, .. } => out.line(&format!(
            "Message Received\nRoundtrip time: {}s",
            seconds(rtt)
        )),
        Event::Received(text) => {
            let mut line = received_prefix.clone();
            sanitize_lines_into(&mut line, text, indent);
            out.line(&line)
        }
        Event::TooLong { len, max } => out.line(&format!(
            "Not sent: the message is {len} bytes, over the server's limit of {max}."
        )),
        Event::Unsendable(why) => out.line(&format!("Not sent: {why}.")),
        Event::Unacknowledged if duplex => {
            out.line("Not delivered: the server did not acknowledge a message you sent.")
        }
        Event::Unacknowledged => {
            out.line("Not delivered: the server did not acknowledge your last message.")
        }
        Event::Sent(_) => {}
    })
}

/// The prompt on this side's turn.
const PROMPT: &str = "Send: ";

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

/// Reads the user's input on a thread of their own and offers each message to `typist`; the
/// end of input is offered as `end`. The thread blocks on stdin, never on the chat.
fn read_input(input: impl BufRead + Send + 'static, typist: Arc<Typist>) -> io::Result<()> {
    std::thread::Builder::new()
        .name("stdin".into())
        .spawn(move || {
            let out = Arc::clone(&typist.out);
            if out.is_editing() {
                out.edit(input, &*typist);
            } else {
                out.read_messages(input, |text| typist.offer(text));
                typist.end_of_input();
            }
        })
        .map(drop)
}

/// The user's voice: lines typed (or piped) ahead wait their turn, and each is said through the
/// session's outbox on this side's turn, from whichever thread sees the turn and the line meet.
struct Typist {
    outbox: Arc<Outbox>,
    out: Arc<Terminal>,
    typed: Mutex<Typed>,
}

#[derive(Default)]
struct Typed {
    /// Lines not yet said, oldest first.
    lines: VecDeque<Vec<u8>>,
    /// True while it is this side's turn and nothing has been said.
    my_turn: bool,
    /// The line editor holds a draft.
    drafting: bool,
    /// Free order: once begun, it is always this side's turn.
    duplex: bool,
    /// Who answers, as the prompts name it.
    server: String,
}

impl Typist {
    /// A line typed (or the end of input, as `end`).
    fn offer(&self, line: Vec<u8>) {
        let mut typed = self.typed.lock();
        typed.lines.push_back(line);
        if typed.my_turn {
            self.speak(&mut typed);
        } else {
            self.show(&typed);
        }
    }

    /// This side's turn began.
    fn my_turn(&self) {
        let mut typed = self.typed.lock();
        typed.my_turn = true;
        self.speak(&mut typed);
    }

    /// With the line editor: the prompt, and the lines typed ahead, as they stand. On this
    /// side's turn the prompt is the one the session asked for; otherwise a draft is marked as
    /// waiting for the server, and so is each line typed ahead, so neither looks sent.
    fn show(&self, typed: &Typed) {
        if !self.out.is_editing() {
            return;
        }
        let server = &typed.server;
        if typed.my_turn {
            self.out.prompt(PROMPT);
        } else if typed.drafting {
            self.out.prompt(&format!("Send (after {server} answers): "));
        } else {
            self.out.clear_prompt();
        }
        let label = if typed.duplex {
            "Queued until an ACK makes room: ".to_string()
        } else {
            format!("Queued until {server} answers: ")
        };
        let queued = typed.lines.iter().map(|line| {
            let mut shown = label.clone();
            sanitize_lines_into(&mut shown, line, width(&label));
            shown
        });
        self.out.queued(queued.collect());
    }

    /// Says what waits to be said, then shows what is left.
    fn speak(&self, typed: &mut Typed) {
        self.say_first(typed);
        self.show(typed);
    }

    /// Says the oldest line waiting (in a duplex chat, every line there is room for); one the
    /// server cannot take is reported and the next one tried.
    fn say_first(&self, typed: &mut Typed) {
        while let Some(line) = typed.lines.pop_front() {
            if typed.duplex {
                if !self.outbox.is_open() {
                    // Ended: what is left is not said (the terminal shows it as not sent), and
                    // the session says how the chat ended.
                    typed.lines.push_front(line);
                    return;
                }
                if !self.outbox.has_room(line.len()) {
                    // An ACK makes room, and tries again.
                    typed.lines.push_front(line);
                    return;
                }
                self.out.prompt(PROMPT);
            }
            self.out.input_taken(&line);
            let refusal = match self.outbox.say(Speech::from_line(line.clone())) {
                Ok(()) if typed.duplex => continue,
                Ok(()) | Err(Unsaid::Closed | Unsaid::Failed(_)) => {
                    // Said; or the chat is over, which the session reports.
                    typed.my_turn = false;
                    return;
                }
                Err(Unsaid::Busy { .. }) => {
                    // No room after all: an ACK makes some, and tries again.
                    typed.lines.push_front(line);
                    return;
                }
                Err(Unsaid::NotYourTurn) => {
                    // Not this side's turn after all: the line waits for it.
                    typed.lines.push_front(line);
                    typed.my_turn = false;
                    return;
                }
                Err(Unsaid::TooLong { len, max }) => format!(
                    "Not sent: the message is {len} bytes, over the server's limit of {max}."
                ),
                Err(Unsaid::Unsendable(why)) => format!("Not sent: {why}."),
            };
            self.out.line(&refusal);
            self.out.prompt(PROMPT);
        }
    }
}

impl Typing for Typist {
    fn submit(&self, text: String) -> Result<(), String> {
        // Enter took the draft out of the editor.
        self.typed.lock().drafting = false;
        self.offer(text.into_bytes());
        Ok(())
    }

    fn draft(&self, open: bool) {
        let mut typed = self.typed.lock();
        typed.drafting = open;
        self.show(&typed);
    }

    fn end_of_input(&self) {
        self.offer(b"end".to_vec());
    }
}
