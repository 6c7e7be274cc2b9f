//! The command line: getopts flags turned into a checked configuration, and errors into exit codes.

use std::ffi::OsString;
use std::io::{self, Write};
use std::path::PathBuf;
use std::time::Duration;

use getopts::{Matches, Options};

use crate::access::{self, Block, Rules};
use crate::client::{self, ClientConfig, Target};
use crate::console::ConsoleConfig;
use crate::error::Error;
use crate::ping::PingConfig;
use crate::protocol::{DEFAULT_MAX_MESSAGE, MAX_NAME};
use crate::server::ServerConfig;
use crate::session::{DEFAULT_HEARTBEAT, Timeouts};
use crate::term::EditorUse;

/// Host used when none is given.
pub const DEFAULT_HOST: &str = "127.0.0.1";
/// Port used when none is given.
pub const DEFAULT_PORT: u16 = 1234;
/// The largest `--max-message` accepted: a bound on what one session may buffer.
pub const MAX_MAX_MESSAGE: usize = 16 * 1024 * 1024;
/// Probes `ping` sends when not told.
pub const DEFAULT_PING_COUNT: u64 = 10;
/// Bytes in a MESSAGE probe when not told: a short chat line.
pub const DEFAULT_PROBE_SIZE: usize = 16;
/// How long `ping` waits for an answer when not told.
pub const DEFAULT_PING_TIMEOUT: Duration = Duration::from_secs(10);
/// Default idle limit on a client's turn at the server: long enough for any human reply,
/// short enough that a vanished client does not hold a worker for the rest of the day.
pub const DEFAULT_SERVER_IDLE_SECS: u64 = 600;

/// What the command line asks for.
#[derive(Debug, Clone)]
pub enum Command {
    /// Run the server.
    Server(ConsoleConfig),
    /// Run the client.
    Client(ClientConfig),
    /// Probe a server's round-trip time.
    Ping(PingConfig),
    /// Print this text to stdout and exit 0 (help, version).
    Print(String),
}

/// Runs the program on `args` (without the program name) and returns the exit code.
///
/// This is the one place where errors become messages and exit codes.
pub fn main(args: Vec<OsString>) -> i32 {
    let result = parse(&args).and_then(|(command, notice)| {
        if let Some(notice) = notice {
            say_to(&mut io::stderr(), &notice);
        }
        run(command)
    });
    // Whatever ended the run, the terminal gets back the mode it had.
    crate::term::restore_terminal();
    match result {
        Ok(()) => 0,
        Err(Error::Usage(message)) => {
            say_to(&mut io::stderr(), &format!("error: {message}\n{}", usage()));
            2
        }
        Err(e) => {
            say_to(&mut io::stderr(), &e.to_string());
            e.exit_code()
        }
    }
}

/// Writes `text` and a newline; a closed stream (`--help | head -1`) is nobody's error, and
/// must not become a panic as `println!` would.
fn say_to(stream: &mut impl Write, text: &str) {
    let _ = writeln!(stream, "{text}").and_then(|()| stream.flush());
}

/// Carries out a parsed command.
fn run(command: Command) -> Result<(), Error> {
    match command {
        Command::Server(config) => crate::console::run(config),
        Command::Client(config) => crate::client::run(&config),
        Command::Ping(config) => crate::ping::run(&config),
        Command::Print(text) => {
            say_to(&mut io::stdout(), &text);
            Ok(())
        }
    }
}

fn options() -> Options {
    let mut o = Options::new();
    common_options(&mut o);
    server_options(&mut o);
    client_options(&mut o);
    ping_options(&mut o);
    o
}

/// The options every mode takes.
fn common_options(o: &mut Options) {
    o.optflag("h", "help", "print this help and exit");
    o.optflag("V", "version", "print the version and exit");
    o.optopt(
        "n",
        "name",
        &format!("name shown to the other side (at most {MAX_NAME} bytes)"),
        "NAME",
    );
    o.optopt(
        "",
        "max-message",
        &format!("largest message accepted, in bytes (default {DEFAULT_MAX_MESSAGE}, at most {MAX_MAX_MESSAGE})"),
        "BYTES",
    );
    o.optopt(
        "",
        "handshake-timeout",
        &format!(
            "seconds a peer has for the handshake and for any frame once begun; fractions allowed (default {})",
            Timeouts::default().handshake.as_secs_f64()
        ),
        "SECS",
    );
    o.optopt(
        "",
        "idle-timeout",
        &format!("seconds the peer may take on its turn; fractions allowed, 0 = no limit (default: server {DEFAULT_SERVER_IDLE_SECS}, client 0)"),
        "SECS",
    );
    o.optopt(
        "",
        "heartbeat",
        &format!("seconds of silence before the peer is sent PING; as long again without an answer ends the chat; fractions allowed, 0 = off (default {})", DEFAULT_HEARTBEAT.as_secs_f64()),
        "SECS",
    );
    o.optflag(
        "",
        "multiline",
        "server and client: a message is the lines typed up to an empty line (the original program's way)",
    );
    o.optopt(
        "",
        "editor",
        "server and client: the line editor: auto (with a terminal; the default), always (keys from any stdin), never",
        "WHEN",
    );
}

fn server_options(o: &mut Options) {
    o.optopt(
        "w",
        "workers",
        &format!(
            "server: chats served at once (default {})",
            ServerConfig::default().workers
        ),
        "N",
    );
    o.optopt(
        "",
        "backlog",
        &format!(
            "server: clients that may wait for a worker (default {}); one more is told the server is full",
            ServerConfig::default().backlog
        ),
        "N",
    );
    o.optflag(
        "",
        "echo",
        "server: answer every message with itself, without an operator",
    );
    o.optmulti(
        "",
        "allow",
        "server: let this address or CIDR block in (repeatable); with any, everyone else is kept out",
        "SPEC",
    );
    o.optmulti(
        "",
        "deny",
        "server: keep this address or CIDR block out (repeatable; wins over --allow)",
        "SPEC",
    );
    o.optmulti(
        "",
        "allow-file",
        "server: --allow each SPEC of FILE (one a line, # comments)",
        "FILE",
    );
    o.optmulti(
        "",
        "deny-file",
        "server: --deny each SPEC of FILE (one a line, # comments)",
        "FILE",
    );
    o.optopt(
        "",
        "log",
        "server: append a JSON line per event (connections, messages, ACKs, endings) to FILE",
        "FILE",
    );
    o.optflag(
        "",
        "log-sync",
        "server: with --log, have each received message on disk before its ACK goes out",
    );
    o.optopt(
        "",
        "max-per-host",
        "server: most connections, live and waiting, from one address (default: no limit)",
        "N",
    );
    o.optflag(
        "",
        "turns-only",
        "server: refuse clients that ask for free order (client --duplex)",
    );
    o.optopt(
        "",
        "max-in-flight",
        &format!(
            "server: most messages a duplex client may have unacknowledged, at least the default that clients hold to; more arriving at once end its chat (default {})",
            crate::protocol::DEFAULT_MAX_IN_FLIGHT
        ),
        "N",
    );
}

fn client_options(o: &mut Options) {
    o.optflag(
        "",
        "duplex",
        "client and ping: free order: send at any time, several messages in flight, each acknowledged",
    );
    o.optflag(
        "",
        "legacy",
        "client: speak the original OCaml program's line protocol, to an original server",
    );
}

fn ping_options(o: &mut Options) {
    o.optopt(
        "c",
        "count",
        &format!("ping: probes to send; 0 = until Ctrl-C (default {DEFAULT_PING_COUNT})"),
        "N",
    );
    o.optopt(
        "i",
        "interval",
        "ping: seconds between an answer and the next probe; fractions allowed, 0 = back to back (default 1)",
        "SECS",
    );
    o.optflag(
        "",
        "messages",
        "ping: probe with MESSAGEs echoed by a `server --echo` instead of PING frames",
    );
    o.optopt(
        "s",
        "size",
        &format!("ping: bytes in each MESSAGE probe (default {DEFAULT_PROBE_SIZE})"),
        "BYTES",
    );
    o.optopt(
        "W",
        "timeout",
        &format!(
            "ping: seconds to wait for each answer: the PONG, or the ACK and then the echo (default {})",
            DEFAULT_PING_TIMEOUT.as_secs()
        ),
        "SECS",
    );
    o.optflag(
        "q",
        "quiet",
        "ping: print only the summary; server with --echo: no line per message",
    );
}

/// The usage text.
pub fn usage() -> String {
    options().usage(
        "Usage: client_server_chat server [HOST] [PORT] [OPTIONS]\n       \
         client_server_chat client [HOST] [PORT] [OPTIONS]\n       \
         client_server_chat ping [HOST] [PORT] [OPTIONS]\n\n\
         HOST defaults to 127.0.0.1 and PORT to 1234. Type a line to send it (a line ending\n\
         in `\\` goes on to the next; a paste is one message); `end` or Ctrl-D ends the chat.\n\
         The server operator answers with TEXT or @N TEXT; /help lists the console commands.\n\
         `ping` times round trips to any server: PING frames, or with\n\
         --messages MESSAGEs echoed by `server --echo`.",
    )
}

/// Turns the arguments into a [`Command`], with the notice to print when HOST or PORT was left
/// out, or a usage error.
pub fn parse(args: &[OsString]) -> Result<(Command, Option<String>), Error> {
    let matches = options()
        .parse(args)
        .map_err(|e| Error::Usage(e.to_string()))?;
    if matches.opt_present("help") {
        return Ok((Command::Print(usage()), None));
    }
    if matches.opt_present("version") {
        let version = format!(
            "client_server_chat {} (protocol version {})",
            env!("CARGO_PKG_VERSION"),
            crate::protocol::VERSION
        );
        return Ok((Command::Print(version), None));
    }
    let (mode, host, port) = mode_and_place(&matches.free)?;
    check_flags_fit(&matches, mode)?;
    let notice = match (host.is_some(), matches.free.len()) {
        (false, _) => Some(format!(
            "Arguments missing: using default host {DEFAULT_HOST} and port {DEFAULT_PORT}"
        )),
        (true, 2) => Some(format!(
            "Arguments missing: using default port {DEFAULT_PORT}"
        )),
        _ => None,
    };
    let name = matches.opt_str("name").unwrap_or_default();
    if name.len() > MAX_NAME {
        return Err(Error::Usage(format!(
            "--name is {} bytes; give at most {MAX_NAME}",
            name.len()
        )));
    }
    let target = Target {
        host: host.unwrap_or_else(|| DEFAULT_HOST.to_string()),
        port,
        name,
        max_message: number(&matches, "max-message", 1, MAX_MAX_MESSAGE as u64)?
            .map_or(DEFAULT_MAX_MESSAGE, |n| n as usize),
        timeouts: timeouts(&matches, mode)?,
    };
    let command = match mode {
        Mode::Server => Command::Server(server_config(&matches, target)?),
        Mode::Client => Command::Client(ClientConfig {
            target,
            legacy: matches.opt_present("legacy"),
            multiline: matches.opt_present("multiline"),
            editor: editor_use(&matches)?,
            duplex: matches.opt_present("duplex"),
        }),
        Mode::Ping => Command::Ping(ping_config(&matches, target)?),
    };
    Ok((command, notice))
}

/// The mode and, when given, the host and port, from the free arguments.
fn mode_and_place(free: &[String]) -> Result<(Mode, Option<String>, u16), Error> {
    let mut free = free.iter();
    let mode = match free.next().map(String::as_str) {
        Some("server") => Mode::Server,
        Some("client") => Mode::Client,
        Some("ping") => Mode::Ping,
        Some(other) => {
            return Err(Error::Usage(format!(
                "unknown mode '{other}': say `server`, `client` or `ping`"
            )));
        }
        None => return Err(Error::Usage("say `server`, `client` or `ping`".into())),
    };
    let host = free.next().cloned();
    let port = match free.next() {
        Some(p) => p.parse::<u16>().map_err(|_| {
            Error::Usage(format!("invalid port '{p}': give a number from 0 to 65535"))
        })?,
        None => DEFAULT_PORT,
    };
    if let Some(extra) = free.next() {
        return Err(Error::Usage(format!("unexpected argument '{extra}'")));
    }
    Ok((mode, host, port))
}

/// The three things the program can be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Server,
    Client,
    Ping,
}

impl Mode {
    /// The word that selects it.
    fn name(self) -> &'static str {
        match self {
            Mode::Server => "server",
            Mode::Client => "client",
            Mode::Ping => "ping",
        }
    }
}

/// Options that only some modes take, and which.
const MODE_FLAGS: &[(&str, &[Mode])] = &[
    ("workers", &[Mode::Server]),
    ("allow", &[Mode::Server]),
    ("deny", &[Mode::Server]),
    ("allow-file", &[Mode::Server]),
    ("deny-file", &[Mode::Server]),
    ("max-per-host", &[Mode::Server]),
    ("log", &[Mode::Server]),
    ("log-sync", &[Mode::Server]),
    ("backlog", &[Mode::Server]),
    ("echo", &[Mode::Server]),
    ("legacy", &[Mode::Client]),
    ("duplex", &[Mode::Client, Mode::Ping]),
    ("turns-only", &[Mode::Server]),
    ("max-in-flight", &[Mode::Server]),
    ("count", &[Mode::Ping]),
    ("interval", &[Mode::Ping]),
    ("size", &[Mode::Ping]),
    ("messages", &[Mode::Ping]),
    ("quiet", &[Mode::Ping, Mode::Server]),
    ("timeout", &[Mode::Ping]),
    // A probe is its own heartbeat, and has its own limit (-W).
    ("idle-timeout", &[Mode::Server, Mode::Client]),
    ("heartbeat", &[Mode::Server, Mode::Client]),
    ("multiline", &[Mode::Server, Mode::Client]),
    ("editor", &[Mode::Server, Mode::Client]),
];

/// A usage error for an option given to a mode that does not take it, or a bad pairing.
fn check_flags_fit(matches: &Matches, mode: Mode) -> Result<(), Error> {
    for (flag, modes) in MODE_FLAGS {
        if matches.opt_present(flag) && !modes.contains(&mode) {
            return Err(Error::Usage(match *flag {
                "legacy" if mode == Mode::Server => "--legacy is a client option: the server \
                    tells the two protocols apart by itself"
                    .to_string(),
                _ => format!("--{flag} is not a {} option", mode.name()),
            }));
        }
    }
    if matches.opt_present("legacy") && matches.opt_present("duplex") {
        return Err(Error::Usage(
            "--duplex cannot go with --legacy: the original protocol takes turns".into(),
        ));
    }
    if matches.opt_present("legacy") && matches.opt_present("name") {
        return Err(Error::Usage(
            "--name cannot go with --legacy: the original protocol carries no names".into(),
        ));
    }
    if mode == Mode::Server && matches.opt_present("quiet") && !matches.opt_present("echo") {
        return Err(Error::Usage(
            "--quiet goes with --echo: an operator must see the messages".into(),
        ));
    }
    if matches.opt_present("log-sync") && !matches.opt_present("log") {
        return Err(Error::Usage("--log-sync goes with --log FILE".into()));
    }
    if matches.opt_present("size") && !matches.opt_present("messages") {
        return Err(Error::Usage(
            "--size is the size of a MESSAGE probe: add --messages (PING frames carry no bytes)"
                .into(),
        ));
    }
    Ok(())
}

/// The limits on a slow peer, in seconds with fractions allowed; the idle limit's default
/// depends on the side. The handshake needs some time; 0 turns the other two off.
fn timeouts(matches: &Matches, mode: Mode) -> Result<Timeouts, Error> {
    let defaults = Timeouts::default();
    let handshake = seconds_within(matches, "handshake-timeout", 0.001, 86_400.0)?
        .unwrap_or(defaults.handshake);
    let idle_default = if mode == Mode::Server {
        Duration::from_secs(DEFAULT_SERVER_IDLE_SECS)
    } else {
        Duration::ZERO
    };
    let idle =
        seconds_within(matches, "idle-timeout", 0.0, 86_400.0 * 365.0)?.unwrap_or(idle_default);
    let heartbeat =
        seconds_within(matches, "heartbeat", 0.0, 86_400.0)?.unwrap_or(DEFAULT_HEARTBEAT);
    Ok(Timeouts {
        handshake,
        idle: (!idle.is_zero()).then_some(idle),
        heartbeat: (!heartbeat.is_zero()).then_some(heartbeat),
    })
}

fn server_config(matches: &Matches, target: Target) -> Result<ConsoleConfig, Error> {
    let defaults = ServerConfig::default();
    let workers = number(matches, "workers", 1, 1024)?.map_or(defaults.workers, |n| n as usize);
    let backlog = number(matches, "backlog", 0, 100_000)?.map_or(defaults.backlog, |n| n as usize);
    Ok(ConsoleConfig {
        addrs: client::resolve(&target.host, target.port)?,
        echo: matches.opt_present("echo"),
        quiet: matches.opt_present("quiet"),
        log: matches.opt_str("log").map(PathBuf::from),
        log_sync: matches.opt_present("log-sync"),
        multiline: matches.opt_present("multiline"),
        editor: editor_use(matches)?,
        server: ServerConfig {
            workers,
            backlog,
            max_message: target.max_message,
            name: target.name,
            timeouts: target.timeouts,
            access: Rules {
                allow: blocks(matches, "allow", "allow-file")?,
                deny: blocks(matches, "deny", "deny-file")?,
            },
            max_per_host: number(matches, "max-per-host", 1, 100_000)?.map(|n| n as usize),
            turns_only: matches.opt_present("turns-only"),
            // Clients hold to the protocol's 32: a server may only allow more.
            max_in_flight: number(
                matches,
                "max-in-flight",
                crate::protocol::DEFAULT_MAX_IN_FLIGHT as u64,
                1_000_000,
            )?
            .map_or(defaults.max_in_flight, |n| n as usize),
        },
    })
}

/// `--editor WHEN`.
fn editor_use(matches: &Matches) -> Result<EditorUse, Error> {
    match matches.opt_str("editor").as_deref() {
        None | Some("auto") => Ok(EditorUse::Auto),
        Some("always") => Ok(EditorUse::Always),
        Some("never") => Ok(EditorUse::Never),
        Some(other) => Err(Error::Usage(format!(
            "--editor takes auto, always or never, not '{other}'"
        ))),
    }
}

/// The blocks given with `--FLAG SPEC` and in `--FILE_FLAG FILE`s.
fn blocks(matches: &Matches, flag: &str, file_flag: &str) -> Result<Vec<Block>, Error> {
    let mut blocks = Vec::new();
    for spec in matches.opt_strs(flag) {
        blocks.push(Block::parse(&spec).map_err(|why| Error::Usage(format!("--{flag}: {why}")))?);
    }
    for file in matches.opt_strs(file_flag) {
        let text = std::fs::read_to_string(&file)
            .map_err(|e| Error::Usage(format!("cannot read --{file_flag} {file}: {e}")))?;
        let specs = access::parse_file(&text)
            .map_err(|why| Error::Usage(format!("--{file_flag} {file}, {why}")))?;
        blocks.extend(specs);
    }
    Ok(blocks)
}

fn ping_config(matches: &Matches, target: Target) -> Result<PingConfig, Error> {
    let count = number(matches, "count", 0, u64::MAX)?.unwrap_or(DEFAULT_PING_COUNT);
    let message_size = matches.opt_present("messages").then_some(
        number(matches, "size", 0, target.max_message as u64)?
            .map_or(DEFAULT_PROBE_SIZE, |n| n as usize),
    );
    Ok(PingConfig {
        count: (count > 0).then_some(count),
        interval: seconds(matches, "interval", 0.0)?.unwrap_or(Duration::from_secs(1)),
        message_size,
        quiet: matches.opt_present("quiet"),
        timeout: seconds(matches, "timeout", 0.001)?.unwrap_or(DEFAULT_PING_TIMEOUT),
        duplex: matches.opt_present("duplex"),
        target,
    })
}

/// Reads option `name` as a number of seconds, fractions allowed, from `min` to a day.
fn seconds(matches: &Matches, name: &str, min: f64) -> Result<Option<Duration>, Error> {
    seconds_within(matches, name, min, 86_400.0)
}

/// Reads option `name` as a number of seconds, fractions allowed, in `min..=max`.
fn seconds_within(
    matches: &Matches,
    name: &str,
    min: f64,
    max: f64,
) -> Result<Option<Duration>, Error> {
    let Some(text) = matches.opt_str(name) else {
        return Ok(None);
    };
    match text.parse::<f64>() {
        Ok(secs) if (min..=max).contains(&secs) => Ok(Some(Duration::from_secs_f64(secs))),
        _ => Err(Error::Usage(format!(
            "invalid value '{text}' for --{name}: give seconds from {min} to {max} (fractions allowed, as 0.2)"
        ))),
    }
}

/// Reads option `name` as a whole number in `min..=max`, if it is given.
fn number(matches: &Matches, name: &str, min: u64, max: u64) -> Result<Option<u64>, Error> {
    let Some(text) = matches.opt_str(name) else {
        return Ok(None);
    };
    match text.parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(Some(n)),
        _ => Err(Error::Usage(format!(
            "invalid value '{text}' for --{name}: give a whole number from {min} to {max}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_words(words: &[&str]) -> Result<(Command, Option<String>), Error> {
        parse(&words.iter().map(OsString::from).collect::<Vec<_>>())
    }

    #[test]
    fn left_out_host_and_port_are_named_in_one_notice() {
        let (command, notice) = parse_words(&["client"]).unwrap();
        assert_eq!(
            notice.as_deref(),
            Some("Arguments missing: using default host 127.0.0.1 and port 1234")
        );
        let Command::Client(config) = command else {
            panic!("not a client")
        };
        assert_eq!(
            (config.target.host.as_str(), config.target.port),
            ("127.0.0.1", 1234)
        );
        let (_, notice) = parse_words(&["client", "::1"]).unwrap();
        assert_eq!(
            notice.as_deref(),
            Some("Arguments missing: using default port 1234")
        );
        let (_, notice) = parse_words(&["client", "localhost", "99"]).unwrap();
        assert_eq!(notice, None);
    }

    #[test]
    fn timeouts_take_fractions_of_a_second_and_zero_turns_two_off() {
        let words = [
            "server",
            "--handshake-timeout",
            "0.5",
            "--idle-timeout",
            "2.5",
            "--heartbeat",
            "0.25",
        ];
        let Command::Server(config) = parse_words(&words).unwrap().0 else {
            panic!("not a server")
        };
        let timeouts = config.server.timeouts;
        assert_eq!(timeouts.handshake, Duration::from_millis(500));
        assert_eq!(timeouts.idle, Some(Duration::from_millis(2500)));
        assert_eq!(timeouts.heartbeat, Some(Duration::from_millis(250)));
        let words = ["client", "--idle-timeout", "0", "--heartbeat", "0.0"];
        let Command::Client(config) = parse_words(&words).unwrap().0 else {
            panic!("not a client")
        };
        assert_eq!(
            (
                config.target.timeouts.idle,
                config.target.timeouts.heartbeat
            ),
            (None, None)
        );
    }

    #[test]
    fn bad_values_are_usage_errors() {
        for words in [
            &["server", "--workers", "0"][..],
            &["client", "--workers", "2"],
            &["client", "h", "70000"],
            &["client", "a", "1", "extra"],
            &["talk"],
            &["server", "--max-message", "0"],
            &["server", "--handshake-timeout", "0"],
            &["server", "--idle-timeout", "-1"],
            &["client", "--heartbeat", "86401"],
            &["client", "--idle-timeout", "NaN"],
        ] {
            assert!(
                matches!(parse_words(words), Err(Error::Usage(_))),
                "{words:?}"
            );
        }
    }
}
