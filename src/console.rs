//! The server's terminal front-end: the operator's view of every session and the routing of the
//! operator's replies (or the echo responder, with `--echo`).

use std::collections::{HashMap, VecDeque};
use std::io::{self, BufRead, IsTerminal};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::editor::Keys;
use crate::error::Error;
use crate::server::{Frontend, Server, ServerConfig, ServerEvent, ServerHandle};
use crate::session::{EchoResponder, Ending, Event, Journal, Outbox, Responder, Speech, Unsaid};
use crate::term::{EditorUse, Terminal, Typing, seconds};
use crate::text::{sanitize, sanitize_lines_into, width};
use crate::transcript::{self, Transcript};
use crate::wire::Dialect;

/// What `server` needs besides the server's own settings.
#[derive(Debug, Clone)]
pub struct ConsoleConfig {
    /// Where to listen (the first address that binds is used).
    pub addrs: Vec<SocketAddr>,
    /// Answer every message with itself instead of asking the operator.
    pub echo: bool,
    /// With `echo`: print no line per message, only arrivals, endings and trouble (for load
    /// tests, where printing would cost more than the chat).
    pub quiet: bool,
    /// Where to keep the transcript, if anywhere.
    pub log: Option<PathBuf>,
    /// Have each received message on disk before its ACK goes out.
    pub log_sync: bool,
    /// The operator's message is the lines typed up to an empty line.
    pub multiline: bool,
    /// When to run the line editor.
    pub editor: EditorUse,
    /// The server's settings.
    pub server: ServerConfig,
}

/// Runs the server with the operator console until Ctrl-C, `/quit` or the end of stdin.
pub fn run(config: ConsoleConfig) -> Result<(), Error> {
    let server = Server::bind(&config.addrs, config.server.clone())?;
    let handle = server.handle();
    let keys = Keys {
        multiline: config.multiline,
        commands: true,
    };
    // With --echo nobody types: the terminal stays as it is.
    let out = if config.echo {
        Terminal::stdout()
    } else {
        Terminal::editing(keys, config.editor)
    };
    let console = Arc::new(Console::new(
        out,
        handle.clone(),
        config.echo,
        config.quiet,
        !io::stdin().is_terminal(),
    ));
    let on_signal = Arc::clone(&console);
    ctrlc::set_handler(move || {
        on_signal.out.after_interrupt();
        on_signal.server.shutdown();
    })
    .map_err(|e| Error::io("setting up Ctrl-C")(io::Error::other(e)))?;
    console.out.line(&format!(
        "The server is waiting for clients to connect on {} ({} worker{}{}).",
        server.local_addr(),
        config.server.workers,
        if config.server.workers == 1 { "" } else { "s" },
        match (config.echo, config.quiet) {
            (true, true) => ", echo, quiet",
            (true, false) => ", echo",
            _ => "",
        }
    ));
    if !config.echo {
        let console = Arc::clone(&console);
        // This thread may stay blocked on stdin after shutdown; the process exits without it.
        std::thread::Builder::new()
            .name("console".into())
            .spawn(move || {
                if console.out.is_editing() {
                    console.out.edit(io::stdin().lock(), &*console);
                } else {
                    console.read_commands(io::stdin().lock());
                }
            })
            .map_err(Error::io("starting the console thread"))?;
    }
    match &config.log {
        None => server.serve(Arc::new(Arc::clone(&console)))?,
        Some(path) => {
            let trouble = Arc::clone(&console);
            let transcript = Transcript::open(
                path,
                config.log_sync,
                Box::new(move |problem| trouble.out.line(&problem)),
            )
            .map_err(Error::io(format!("opening the log {}", path.display())))?;
            let transcript = Arc::new(transcript);
            let logged = Logged {
                console: Arc::clone(&console),
                transcript: Arc::clone(&transcript),
                who: Mutex::new(HashMap::new()),
            };
            let served = server.serve(Arc::new(logged));
            transcript.record(format!(
                r#"{{"time":"{}","event":"shutdown"}}"#,
                transcript::now()
            ));
            transcript.close();
            served?;
        }
    }
    console.out.clear_prompt();
    console.out.close();
    console.out.line("The server has shut down.");
    Ok(())
}

/// The console, with every event worth finding later written to the transcript.
struct Logged {
    console: Arc<Console>,
    transcript: Arc<Transcript>,
    /// Each live session's client name and address, for its records.
    who: Mutex<HashMap<u32, (String, SocketAddr)>>,
}

/// The transcript fields that name a session.
fn session_fields(id: u32, name: &str, peer: SocketAddr) -> String {
    format!(
        r#""session":{id},"name":{},"address":"{peer}""#,
        transcript::json_string(name)
    )
}

impl Logged {
    /// The fields that name session `id`.
    fn session(&self, id: u32) -> String {
        match self.who.lock().get(&id) {
            Some((name, peer)) => session_fields(id, name, *peer),
            None => format!(r#""session":{id}"#),
        }
    }

    /// The record of `event`, if it is worth one.
    fn record(&self, event: &ServerEvent<'_>) -> Option<String> {
        let time = transcript::now();
        let fields = match event {
            ServerEvent::Connected {
                id,
                peer,
                name,
                dialect,
                ..
            } => {
                self.who.lock().insert(*id, (name.to_string(), *peer));
                let protocol = match dialect {
                    Dialect::Frames => "frames",
                    Dialect::Legacy => "original",
                };
                format!(
                    r#""event":"connected",{},"protocol":"{protocol}""#,
                    self.session(*id)
                )
            }
            ServerEvent::Refused { peer } => {
                format!(r#""event":"refused","address":"{peer}","why":"server full""#)
            }
            ServerEvent::Kept {
                peer,
                why,
                unreported,
            } => {
                let more = unreported.map_or(0, |(count, _)| count);
                format!(
                    r#""event":"refused","address":"{}","why":"{}","unreported_before":{more}"#,
                    peer.ip(),
                    why.reason()
                )
            }
            ServerEvent::Session { id, event } => match event {
                // Under `--log-sync` the journal wrote it before its ACK.
                Event::Received(text) if !self.transcript.is_sync() => format!(
                    r#""event":"message","direction":"in",{},{}"#,
                    self.session(*id),
                    transcript::bytes_field(text)
                ),
                Event::Sent(text) => format!(
                    r#""event":"message","direction":"out",{},{}"#,
                    self.session(*id),
                    transcript::bytes_field(text)
                ),
                Event::Acked { rtt, .. } => format!(
                    r#""event":"ack",{},"rtt_us":{}"#,
                    self.session(*id),
                    rtt.as_nanos().div_ceil(1000)
                ),
                _ => return None,
            },
            ServerEvent::Ended {
                id,
                connected,
                ending,
                ..
            } => {
                let fields = format!(
                    r#""event":"ended",{},"connected":{connected},"how":{}"#,
                    self.session(*id),
                    transcript::json_string(&describe(ending))
                );
                self.who.lock().remove(id);
                fields
            }
            ServerEvent::Failed { id, .. } => {
                let fields = format!(
                    r#""event":"ended",{},"connected":true,"how":"internal error""#,
                    self.session(*id)
                );
                self.who.lock().remove(id);
                fields
            }
            ServerEvent::Waiting { .. } | ServerEvent::LeftLine { .. } => return None,
        };
        Some(format!(r#"{{"time":"{time}",{fields}}}"#))
    }
}

impl Frontend for Logged {
    fn responder(&self, id: u32) -> Option<Box<dyn Responder + Send>> {
        self.console.responder(id)
    }

    fn event(&self, event: ServerEvent<'_>) {
        if let Some(record) = self.record(&event) {
            self.transcript.record(record);
        }
        self.console.event(event);
    }

    fn journal(&self, id: u32, peer: SocketAddr, name: &str) -> Option<Journal> {
        if !self.transcript.is_sync() {
            return None;
        }
        let transcript = Arc::clone(&self.transcript);
        let who = session_fields(id, name, peer);
        Some(Journal(Box::new(move |message: &[u8]| {
            transcript.record_durably(&format!(
                r#"{{"time":"{}","event":"message","direction":"in",{who},{}}}"#,
                transcript::now(),
                transcript::bytes_field(message)
            ));
        })))
    }
}

/// The operator's side of every session.
#[derive(Debug)]
pub struct Console {
    out: Terminal,
    server: ServerHandle,
    echo: bool,
    /// No line per message.
    quiet: bool,
    /// The operator's lines come from a pipe (a script): an answer with nobody to take it waits
    /// for the next session that is owed one.
    piped: bool,
    routes: Mutex<Routes>,
    /// When each duplex session whose printing lagged was last said to lag.
    lagging: Mutex<HashMap<u32, Instant>>,
}

/// A message that takes longer than this to print means the terminal cannot keep up.
const LAG: Duration = Duration::from_millis(500);
/// A lagging session is told to the operator at most once in this time.
const LAG_NOTICE_EVERY: Duration = Duration::from_secs(10);

/// Who is waiting for the operator, and how to reach each session's speaker.
#[derive(Debug, Default)]
struct Routes {
    /// Sessions waiting for an answer, the longest-waiting first.
    waiting: VecDeque<u32>,
    /// Piped answers read while nobody was owed one, oldest first: each goes to the next
    /// session that is.
    held: VecDeque<Vec<u8>>,
    /// The operator's input has ended: the server shuts down once `held` is delivered.
    input_ended: bool,
    /// The session sent the last held answer after the input ended: the server shuts down when
    /// that answer is acknowledged (or the session ends).
    last_delivery: Option<u32>,
    /// Each live session's label (`#N name`) and outbox.
    sessions: HashMap<u32, Route>,
    /// With the line editor: the draft being typed, if one is open.
    draft: Option<Draft>,
    /// The duplex session a plain line goes to when no session is waiting for an answer.
    addressed: Option<u32>,
}

/// Where the operator's open draft goes: fixed when its first character is typed, so that
/// nothing that happens meanwhile sends it to somebody else.
#[derive(Debug)]
struct Draft {
    /// The session the draft answers (the one waiting longest when it was begun), if any was.
    to: Option<(u32, Arc<str>)>,
    /// That session has ended since.
    gone: bool,
}

#[derive(Debug)]
struct Route {
    label: Arc<str>,
    /// Where the operator's answer is said.
    outbox: Arc<Outbox>,
    /// Free order: the operator may write to it at any time.
    duplex: bool,
}

impl Routes {
    /// Whom a plain line answers: the session waiting longest for an answer, else the duplex
    /// session the operator last wrote to (or, before any, the first that wrote).
    fn current(&self) -> Option<u32> {
        self.waiting.front().copied().or(self.addressed)
    }

    /// Session `id`'s label (`#N name`), shared rather than copied; `#N` once it is gone.
    fn label(&self, id: u32) -> Arc<str> {
        match self.sessions.get(&id) {
            Some(route) => Arc::clone(&route.label),
            None => format!("#{id}").into(),
        }
    }

    /// True, once, when session `id` had the last held answer after the input ended, now
    /// acknowledged (or never to be): the server may shut down.
    fn last_delivered(&mut self, id: u32) -> bool {
        self.last_delivery.take_if(|&mut last| last == id).is_some()
    }
}

const HELP: &str = "\
Commands:
  TEXT           answer the session named in the prompt (the one waiting longest)
  @N TEXT        answer session N
  end, @N end    end that chat
  //TEXT         send a line that starts with '/'
  /list          sessions, whose turn it is, and the clients waiting in line
  /kick N [WHY]  remove session N, telling it why
  /allow SPEC    let an address or CIDR block in (/deny SPEC: keep it out)
  /quit          shut the server down (as Ctrl-C)
  /help          this list";

impl Console {
    /// A console printing to `out` for the server behind `server`.
    pub fn new(
        out: Terminal,
        server: ServerHandle,
        echo: bool,
        quiet: bool,
        piped: bool,
    ) -> Console {
        Console {
            out,
            server,
            echo,
            quiet,
            piped,
            routes: Mutex::new(Routes::default()),
            lagging: Mutex::new(HashMap::new()),
        }
    }

    /// Reads operator lines (or, with `--multiline`, messages of several lines) until end of
    /// input, which shuts the server down like `/quit` once held answers are delivered.
    pub fn read_commands(&self, input: impl BufRead) {
        self.out.read_messages(input, |line| {
            // After shutdown the lines are read, and left.
            if !self.server.is_shutting_down() {
                self.out.input_taken(&line);
                self.command(&line);
                self.refresh_prompt();
            }
        });
        self.input_ended();
    }

    /// The operator has nothing more to say.
    fn input_ended(&self) {
        let held = {
            let mut routes = self.routes.lock();
            routes.input_ended = true;
            routes.held.len()
        };
        if self.server.is_shutting_down() {
            return;
        }
        if held == 0 {
            self.out.line("End of input: shutting down.");
            self.server.shutdown();
        } else {
            self.out.line(&format!(
                "End of input: shutting down once the {held} held answer(s) are delivered."
            ));
        }
    }

    /// Why the operator's finished draft, `line`, cannot go where it was begun for, if it
    /// cannot: its session has gone, or nobody was owed an answer. (`@N`, `/` and `//` name
    /// their own way.)
    fn unaddressed(line: &[u8], draft: &Draft) -> Option<String> {
        if names_its_way(line) {
            return None;
        }
        let why = match &draft.to {
            Some(_) if !draft.gone => return None,
            Some((_, label)) => format!("{label} has left"),
            None => "nobody was owed an answer when you began it".to_string(),
        };
        Some(format!(
            "Not sent: {why}. Start the draft with @N to send it to session N, or clear it with Ctrl-U."
        ))
    }

    /// Carries out one operator line; false when it sent nothing for want of a right target
    /// or a sendable text (a command is always carried out, or its error said).
    fn command(&self, line: &[u8]) -> bool {
        if let Some(rest) = line.strip_prefix(b"//") {
            let mut text = b"/".to_vec();
            text.extend_from_slice(rest);
            return self.answer(None, text);
        }
        if let Some(command) = line.strip_prefix(b"/") {
            self.slash_command(&String::from_utf8_lossy(command));
            return true;
        }
        if let Some(rest) = line.strip_prefix(b"@") {
            let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
            let id = std::str::from_utf8(&rest[..digits])
                .ok()
                .and_then(|d| d.parse::<u32>().ok());
            let text = rest[digits..].strip_prefix(b" ").unwrap_or(&rest[digits..]);
            return match id {
                Some(id) => self.answer(Some(id), text.to_vec()),
                None => {
                    self.out
                        .line("Error: write @N TEXT, where N is a session number.");
                    false
                }
            };
        }
        self.answer(None, line.to_vec())
    }

    fn slash_command(&self, command: &str) {
        let (name, args) = command.split_once(' ').unwrap_or((command, ""));
        let args = args.trim();
        match name {
            "help" | "list" | "quit" if !args.is_empty() => self
                .out
                .line(&format!("Error: /{name} takes no arguments; nothing was done.")),
            "help" => self.out.line(HELP),
            "list" => self.print_list(),
            "quit" => {
                self.out.line("Shutting down.");
                self.server.shutdown();
            }
            "allow" | "deny" if args.is_empty() => self
                .out
                .line(&format!("Error: write /{name} SPEC (an address or a CIDR block).")),
            "allow" | "deny" => {
                let changed = if name == "allow" {
                    self.server.allow(args)
                } else {
                    self.server.deny(args)
                };
                match changed {
                    Ok(rules) => self.out.line(&format!(
                        "{rules} (sessions already connected stay; /kick N to end one)"
                    )),
                    Err(why) => self.out.line(&format!("Error: {why}; nothing changed.")),
                }
            }
            "kick" => {
                let (id, reason) = args.split_once(' ').unwrap_or((args, ""));
                let reason = match reason.trim() {
                    "" => "kicked by the operator",
                    given => given,
                };
                match id.parse::<u32>() {
                    Ok(id) if self.server.kick(id, reason) => {}
                    Ok(id) => self.out.line(&format!("Error: there is no session #{id}.")),
                    Err(_) => self.out.line("Error: write /kick N [REASON]."),
                }
            }
            _ => self.out.line(&format!(
                "Error: unknown command '/{}'; nothing was sent. /help lists the commands, //TEXT sends '/TEXT'.",
                sanitize(name.as_bytes())
            )),
        }
    }

    /// Sends the operator's `text` to session `to`, or to the longest-waiting session; false
    /// when it was not sent (and not held for later), which it says.
    fn answer(&self, to: Option<u32>, text: Vec<u8>) -> bool {
        // Decided under the routes lock; said, and printed, after it.
        let target = {
            let mut routes = self.routes.lock();
            let id = to.or_else(|| routes.current());
            match id.map(|id| (id, routes.sessions.get(&id))) {
                None if self.piped && to.is_none() => {
                    routes.held.push_back(text.clone());
                    Err((
                        true,
                        "Held: nobody is owed an answer yet; it goes to the next client who is."
                            .to_string(),
                    ))
                }
                None => Err((
                    false,
                    "Nobody is waiting for an answer; nothing was sent.".to_string(),
                )),
                Some((id, None)) => Err((
                    false,
                    format!("Error: there is no session #{id}; nothing was sent."),
                )),
                Some((id, Some(route))) if route.duplex => {
                    let target = (id, Arc::clone(&route.label), Arc::clone(&route.outbox));
                    routes.addressed = Some(id);
                    Ok(target)
                }
                Some((id, Some(route))) if !routes.waiting.contains(&id) => Err((
                    false,
                    format!(
                        "Error: it is not your turn with {}; nothing was sent.",
                        route.label
                    ),
                )),
                Some((id, Some(route))) => {
                    let target = (id, Arc::clone(&route.label), Arc::clone(&route.outbox));
                    routes.waiting.retain(|&w| w != id);
                    Ok(target)
                }
            }
        };
        let (id, label, outbox) = match target {
            Ok(target) => target,
            Err((held, message)) => {
                self.out.line(&message);
                return held;
            }
        };
        let problem = match outbox.say(Speech::from_line(text)) {
            Ok(()) => return true,
            Err(Unsaid::TooLong { len, max }) => format!(
                "[{label}] Not sent: the message is {len} bytes, over the client's limit of {max}."
            ),
            Err(Unsaid::Unsendable(why)) => format!("[{label}] Not sent: {why}."),
            Err(Unsaid::NotYourTurn) => {
                format!("Error: it is not your turn with {label}; nothing was sent.")
            }
            Err(Unsaid::Busy { max }) => format!(
                "[{label}] Not sent: {max} messages to it are not yet acknowledged; try again after their ACKs."
            ),
            Err(Unsaid::Closed) => {
                self.report_undelivered(&label);
                return false;
            }
            Err(Unsaid::Failed(e)) => {
                format!("[{label}] Not delivered: writing the answer to the client failed: {e}")
            }
        };
        // Still this session's turn: it waits first in line again. (A duplex session never
        // waits for the operator: it may be written to at any time.)
        if outbox.is_open() {
            let mut routes = self.routes.lock();
            let turns = routes.sessions.get(&id).is_some_and(|r| !r.duplex);
            if turns && !routes.waiting.contains(&id) {
                routes.waiting.push_front(id);
            }
        }
        self.out.line(&problem);
        false
    }

    fn report_undelivered(&self, label: &str) {
        self.out
            .line(&format!("[{label}] Not delivered: the chat has ended."));
    }

    fn print_list(&self) {
        let sessions = self.server.sessions();
        let waiting = self.server.waiting();
        let mut text = format!("{} session(s):", sessions.len());
        for s in &sessions {
            text.push_str(&format!(
                "\n  {} {} turn={} sent={} received={} connected={}",
                session_label(s.id, &s.name, s.dialect),
                s.peer,
                match (s.duplex, s.servers_turn) {
                    (true, _) => "free (duplex)",
                    (false, true) => "yours",
                    (false, false) => "theirs",
                },
                s.sent,
                s.received,
                format_duration(s.connected_for)
            ));
        }
        text.push_str(&format!("\n{} waiting in line:", waiting.len()));
        for (place, w) in waiting.iter().enumerate() {
            text.push_str(&format!(
                "\n  {}. #{} {} waited={}",
                place + 1,
                w.id,
                w.peer,
                format_duration(w.waited)
            ));
        }
        text.push('\n');
        text.push_str(&self.server.access().describe());
        self.out.line(&text);
    }

    /// The prompt: for the open draft's session, or the longest-waiting session, if any.
    fn prompt_text(&self, routes: &Routes) -> Option<String> {
        let (id, label) = match &routes.draft {
            Some(Draft { to: None, .. }) => {
                return Some("Send (nobody to answer; @N picks a session): ".into());
            }
            Some(Draft {
                to: Some((_, label)),
                gone: true,
            }) => return Some(format!("Send to {label} (gone): ")),
            Some(Draft {
                to: Some((id, label)),
                ..
            }) => (*id, &**label),
            None => {
                let id = routes.current()?;
                (id, &*routes.label(id))
            }
        };
        let others = routes.waiting.iter().filter(|&&w| w != id).count();
        Some(if others > 0 {
            format!("Send to {label} (+{others} more to answer): ")
        } else {
            format!("Send to {label}: ")
        })
    }

    /// Shows the prompt for the session waiting longest, or none.
    fn refresh_prompt(&self) {
        let prompt = self.prompt_text(&self.routes.lock());
        match prompt {
            Some(prompt) => self.out.prompt(&prompt),
            None => self.out.clear_prompt(),
        }
    }

    /// Session `id`'s label (`#N name`), shared rather than copied.
    fn label(&self, id: u32) -> Arc<str> {
        self.routes.lock().label(id)
    }
}

impl Frontend for Arc<Console> {
    fn responder(&self, _id: u32) -> Option<Box<dyn Responder + Send>> {
        self.echo
            .then(|| Box::new(EchoResponder) as Box<dyn Responder + Send>)
    }

    fn event(&self, event: ServerEvent<'_>) {
        match event {
            ServerEvent::Waiting { id, peer, position } => self.out.line(&format!(
                "[#{id} {peer}] Waiting in line (position {position})."
            )),
            ServerEvent::LeftLine { id, peer } => self.out.line(&format!(
                "[#{id} {peer}] Left the line before a worker was free."
            )),
            ServerEvent::Refused { peer } => self
                .out
                .line(&format!("[{peer}] Refused: the server is full.")),
            ServerEvent::Kept {
                peer,
                why,
                unreported,
            } => {
                let why = why.reason();
                let more = unreported.map_or(String::new(), |(count, since)| {
                    format!(" ({count} more since {})", clock(since))
                });
                self.out
                    .line(&format!("[{}] Refused: {why}{more}.", peer.ip()))
            }
            ServerEvent::Connected {
                id,
                peer,
                name,
                dialect,
                duplex,
                outbox,
            } => {
                let label = session_label(id, name, dialect);
                self.connected(id, peer, label, dialect, duplex, outbox)
            }
            ServerEvent::Session { id, event } => self.session_event(id, event),
            ServerEvent::Ended {
                id,
                connected: true,
                ending,
                ..
            } => self.ended(id, ending),
            ServerEvent::Ended {
                id, peer, ending, ..
            } => self.out.line(&format!(
                "[#{id} {peer}] Not connected: {}",
                describe(ending)
            )),
            ServerEvent::Failed { id, peer } => self.gone(
                id,
                &format!(
                    "[#{id} {peer}] Internal error: this chat failed and its connection was closed \
                     (details on stderr); the server goes on."
                ),
            ),
        }
    }
}

impl Console {
    fn connected(
        &self,
        id: u32,
        peer: SocketAddr,
        label: String,
        dialect: Dialect,
        duplex: bool,
        outbox: &Arc<Outbox>,
    ) {
        let line = match dialect {
            Dialect::Frames if duplex => {
                format!("[{label} {peer}] Connected, in free order (duplex).")
            }
            Dialect::Frames => format!("[{label} {peer}] Connected."),
            Dialect::Legacy => {
                format!("[{label} {peer}] Connected, speaking the original line protocol.")
            }
        };
        self.routes.lock().sessions.insert(
            id,
            Route {
                label: label.into(),
                outbox: Arc::clone(outbox),
                duplex,
            },
        );
        self.out.line(&line);
    }

    fn session_event(&self, id: u32, event: Event<'_>) {
        let is_duplex = |routes: &Routes| routes.sessions.get(&id).is_some_and(|r| r.duplex);
        if event == Event::MyTurn {
            // A duplex chat's floor is always open: nobody waits for the operator.
            if !self.echo && !is_duplex(&self.routes.lock()) {
                self.owed(id);
            }
            return;
        }
        let routine = matches!(event, Event::Received(_) | Event::Acked { .. });
        if matches!(event, Event::Sent(_)) || (self.quiet && routine) {
            return;
        }
        // One look at the routes for all the event needs.
        let (label, duplex, last) = {
            let mut routes = self.routes.lock();
            let duplex = is_duplex(&routes);
            if duplex && matches!(event, Event::Received(_)) && routes.addressed.is_none() {
                routes.addressed = Some(id);
            }
            let last = matches!(event, Event::Acked { .. }) && routes.last_delivered(id);
            (routes.label(id), duplex, last)
        };
        self.print_session_event(id, &label, event, duplex);
        if last {
            self.all_delivered();
        }
    }

    /// Formats `event` of session `id`, `label`, (the peer's text defused) after the routes
    /// lock is released, and prints it.
    fn print_session_event(&self, id: u32, label: &str, event: Event<'_>, duplex: bool) {
        let line = match event {
            Event::MyTurn | Event::Sent(_) => String::new(),
            Event::Unacknowledged => format!(
                "[{label}] Not delivered: the chat ended before the client acknowledged your last message."
            ),
            Event::Received(text) => {
                let mut line = String::with_capacity(label.len() + text.len() + 16);
                line.push('[');
                line.push_str(label);
                line.push_str("] Received: ");
                let indent = width(&line);
                sanitize_lines_into(&mut line, text, indent);
                line
            }
            Event::Acked { rtt, number } if duplex => format!(
                "[{label}] Message Received (#{number})\n[{label}] Roundtrip time: {}s",
                seconds(rtt)
            ),
            Event::Acked { rtt, .. } => format!(
                "[{label}] Message Received\n[{label}] Roundtrip time: {}s",
                seconds(rtt)
            ),
            Event::TooLong { len, max } => format!(
                "[{label}] Not sent: the message is {len} bytes, over the client's limit of {max}."
            ),
            Event::Unsendable(why) => format!("[{label}] Not sent: {why}."),
        };
        let started = duplex.then(Instant::now);
        self.out.line(&line);
        if started.is_some_and(|at| at.elapsed() > LAG) {
            self.lags(id, label);
        }
    }

    /// Printing session `id`'s messages is slower than it sends them: nothing is dropped, it is
    /// held back instead (the next message is read, and acknowledged, once this one is shown),
    /// and the operator is told, now and then.
    fn lags(&self, id: u32, label: &str) {
        let now = Instant::now();
        let due = {
            let mut lagging = self.lagging.lock();
            let due = lagging
                .get(&id)
                .is_none_or(|&told| now.duration_since(told) > LAG_NOTICE_EVERY);
            if due {
                lagging.insert(id, now);
            }
            due
        };
        if due {
            self.out.line(&format!(
                "[{label}] Output lags: the terminal is slow to take this session's messages; \
                 none is dropped, and the client is held back until they are shown."
            ));
        }
    }

    /// Session `id` is owed an answer: a held one goes to it at once; otherwise it waits in the
    /// operator's queue.
    fn owed(&self, id: u32) {
        let delivery = {
            let mut routes = self.routes.lock();
            match routes.held.pop_front() {
                Some(text) => {
                    let outbox = routes.sessions.get(&id).map(|r| Arc::clone(&r.outbox));
                    Some((text, outbox))
                }
                None => {
                    if !routes.waiting.contains(&id) {
                        routes.waiting.push_back(id);
                    }
                    None
                }
            }
        };
        let Some((text, outbox)) = delivery else {
            return self.refresh_prompt();
        };
        let speech = Speech::from_line(text.clone());
        if outbox.is_none_or(|outbox| outbox.say(speech).is_err()) {
            // It ended meanwhile: the answer waits for the next one.
            self.routes.lock().held.push_front(text);
            return;
        }
        let mut routes = self.routes.lock();
        if routes.input_ended && routes.held.is_empty() {
            routes.last_delivery = Some(id);
        }
    }

    /// The last held answer is acknowledged (or never to be), after the end of input.
    fn all_delivered(&self) {
        self.out
            .line("End of input: every held answer delivered; shutting down.");
        self.server.shutdown();
    }

    /// A chat that was connected ended.
    fn ended(&self, id: u32, ending: &Ending) {
        let line = format!("[{}] {}", self.label(id), describe(ending));
        self.gone(id, &line);
    }

    /// Session `id` is over: it leaves the routes and the queue, and `line` says so. A draft
    /// begun for it stays, marked, and goes to nobody else unless the operator says so.
    fn gone(&self, id: u32, line: &str) {
        self.lagging.lock().remove(&id);
        let (kept, last) = {
            let mut routes = self.routes.lock();
            routes.sessions.remove(&id);
            routes.waiting.retain(|&w| w != id);
            routes.addressed.take_if(|&mut a| a == id);
            let kept = match &mut routes.draft {
                Some(Draft {
                    to: Some((to, label)),
                    gone,
                }) if *to == id => {
                    *gone = true;
                    Some(Arc::clone(label))
                }
                _ => None,
            };
            (kept, routes.last_delivered(id))
        };
        self.out.line(line);
        if last {
            self.all_delivered();
        }
        if let Some(label) = kept {
            self.out.line(&format!(
                "[{label}] Your draft for them is kept, and goes to nobody else unless you start it with @N."
            ));
        }
        self.refresh_prompt();
    }
}

/// True for an operator line that is a command or says whom it answers (`/`, `//`, `@N`).
fn names_its_way(line: &[u8]) -> bool {
    line.starts_with(b"/") || line.starts_with(b"@")
}

/// How the operator sees a session named: `#N`, `#N name`, and `#N (legacy)` for a client of the
/// original protocol, which has no name.
fn session_label(id: u32, name: &str, dialect: Dialect) -> String {
    match dialect {
        Dialect::Legacy => format!("#{id} (legacy)"),
        Dialect::Frames if name.is_empty() => format!("#{id}"),
        Dialect::Frames => format!("#{id} {}", sanitize(name.as_bytes())),
    }
}

/// How an ending reads from the operator's side.
fn describe(ending: &Ending) -> String {
    match ending {
        Ending::EndedByMe => "You ended the chat.".into(),
        Ending::PeerError(reason) => format!(
            "The client reported an error: {}",
            sanitize(reason.as_bytes())
        ),
        other => other.to_string(),
    }
}

/// A wall-clock time as `HH:MM:SS UTC`.
fn clock(at: std::time::SystemTime) -> String {
    // The time of day out of `2026-12-02T04:11:33.123456Z`.
    format!("{} UTC", &transcript::rfc3339(at)[11..19])
}

fn format_duration(d: Duration) -> String {
    let secs = d.as_secs();
    if secs >= 3600 {
        format!("{}h{:02}m", secs / 3600, secs % 3600 / 60)
    } else {
        format!("{}m{:02}s", secs / 60, secs % 60)
    }
}

/// The operator typing into the line editor.
impl Typing for Console {
    fn submit(&self, text: String) -> Result<(), String> {
        let draft = self.routes.lock().draft.take();
        let draft = draft.unwrap_or(Draft {
            to: None,
            gone: false,
        });
        let line = text.as_bytes();
        let done = match Console::unaddressed(line, &draft) {
            Some(why) => {
                self.out.line(&why);
                false
            }
            None if self.server.is_shutting_down() => true,
            None => {
                self.out.input_taken(line);
                match &draft.to {
                    Some((id, _)) if !names_its_way(line) => self.answer(Some(*id), line.to_vec()),
                    _ => self.command(line),
                }
            }
        };
        if !done {
            // Its session may have ended meanwhile, while the draft was out for sending.
            let mut routes = self.routes.lock();
            let gone = draft
                .to
                .as_ref()
                .is_some_and(|(id, _)| !routes.sessions.contains_key(id));
            routes.draft = Some(Draft {
                gone: draft.gone || gone,
                ..draft
            });
        }
        self.refresh_prompt();
        if done { Ok(()) } else { Err(text) }
    }

    fn draft(&self, open: bool) {
        {
            let mut routes = self.routes.lock();
            routes.draft = open.then(|| Draft {
                to: routes.current().map(|id| (id, routes.label(id))),
                gone: false,
            });
        }
        self.refresh_prompt();
    }

    fn end_of_input(&self) {
        self.input_ended();
    }
}
