//! Helpers for the binary-level tests: run `client_server_chat` with piped stdio, read its
//! output on threads, and wait for specific lines with a bounded deadline.
//!
//! Every child is killed when its [`Proc`] is dropped, so a failing test leaves nothing behind.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// How long any expected output may take to appear.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// The prefix of the server's first stdout line; the bound address follows it.
pub const SERVER_READY: &str = "The server is waiting for clients to connect on 127.0.0.1:";

/// One output stream of a child, read on its own thread.
struct Stream {
    label: &'static str,
    chunks: Receiver<Vec<u8>>,
    /// Everything read so far.
    buf: Vec<u8>,
    /// Bytes before this index have been consumed by an expectation.
    cursor: usize,
    eof: bool,
}

impl Stream {
    fn new(label: &'static str, mut source: impl Read + Send + 'static) -> Stream {
        let (tx, chunks) = mpsc::channel();
        std::thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            loop {
                match source.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if tx.send(chunk[..n].to_vec()).is_err() {
                            break;
                        }
                    }
                }
            }
        });
        Stream {
            label,
            chunks,
            buf: Vec::new(),
            cursor: 0,
            eof: false,
        }
    }

    /// Waits at most until `deadline` for more bytes; false when none came (timeout or EOF).
    fn pump(&mut self, deadline: Instant) -> bool {
        if self.eof {
            return false;
        }
        let wait = deadline.saturating_duration_since(Instant::now());
        match self.chunks.recv_timeout(wait) {
            Ok(chunk) => {
                self.buf.extend_from_slice(&chunk);
                // Take whatever else is already there without waiting.
                while let Ok(chunk) = self.chunks.try_recv() {
                    self.buf.extend_from_slice(&chunk);
                }
                true
            }
            Err(RecvTimeoutError::Timeout) => false,
            Err(RecvTimeoutError::Disconnected) => {
                self.eof = true;
                false
            }
        }
    }

    /// Reads until EOF or `deadline`.
    fn drain(&mut self, deadline: Instant) {
        while !self.eof && Instant::now() < deadline {
            self.pump(deadline);
        }
    }

    /// The first complete line after the cursor that contains `needle`; consumes through it.
    fn take_line(&mut self, needle: &str) -> Option<String> {
        let mut start = self.cursor;
        while let Some(nl) = self.buf[start..].iter().position(|&b| b == b'\n') {
            let end = start + nl;
            let line = String::from_utf8_lossy(&self.buf[start..end]).into_owned();
            if line.contains(needle) {
                self.cursor = end + 1;
                return Some(line);
            }
            start = end + 1;
        }
        None
    }

    /// Whether the unconsumed output (a trailing partial line included) contains `needle`;
    /// consumes through it.
    fn take_text(&mut self, needle: &str) -> bool {
        let rest = &self.buf[self.cursor..];
        let needle = needle.as_bytes();
        match rest.windows(needle.len()).position(|w| w == needle) {
            Some(at) => {
                self.cursor += at + needle.len();
                true
            }
            None => false,
        }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.buf).into_owned()
    }
}

/// What a finished child left behind.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub raw_stdout: Vec<u8>,
}

impl Finished {
    /// The exit code; fails the test when the child died from a signal.
    pub fn code(&self) -> i32 {
        self.status
            .code()
            .unwrap_or_else(|| panic!("killed by a signal: {self:#?}"))
    }

    /// stdout split into lines.
    pub fn lines(&self) -> Vec<&str> {
        self.stdout.lines().collect()
    }
}

/// A running `client_server_chat` with piped stdio; killed on drop.
pub struct Proc {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    out: Stream,
    err: Stream,
    status: Option<ExitStatus>,
}

impl Proc {
    /// Starts the binary with `args`; `name` labels it in failure messages.
    pub fn spawn(name: &str, args: &[&str]) -> Proc {
        let mut child = Command::new(env!("CARGO_BIN_EXE_client_server_chat"))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} {args:?}: {e}"));
        let stdin = child.stdin.take();
        let out = Stream::new("stdout", child.stdout.take().expect("piped stdout"));
        let err = Stream::new("stderr", child.stderr.take().expect("piped stderr"));
        Proc {
            name: format!("{name} {args:?}"),
            child,
            stdin,
            out,
            err,
            status: None,
        }
    }

    /// The process id, for signals.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything read so far from both streams, for failure messages.
    pub fn dump(&self) -> String {
        format!(
            "--- {} ---\n[{}]\n{}\n[{}]\n{}\n--- end ---",
            self.name,
            self.out.label,
            self.out.text(),
            self.err.label,
            self.err.text()
        )
    }

    fn fail(&self, what: &str) -> ! {
        panic!("{what}\n{}", self.dump())
    }

    /// Waits for a complete stdout line containing `needle` (after the last one expected) and
    /// returns it; fails the test with everything read so far if it does not come in time.
    pub fn expect_line(&mut self, needle: &str) -> String {
        expect_line_in(self, needle, false)
    }

    /// As [`Proc::expect_line`], on stderr.
    pub fn expect_err_line(&mut self, needle: &str) -> String {
        expect_line_in(self, needle, true)
    }

    /// Waits until stdout shows `text`, even on a line not yet ended (a prompt).
    pub fn expect_text(&mut self, text: &str) {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if self.out.take_text(text) {
                return;
            }
            if !self.out.pump(deadline) && (self.out.eof || Instant::now() >= deadline) {
                if self.out.take_text(text) {
                    return;
                }
                self.fail(&format!("no {text:?} on stdout within {TIMEOUT:?}"));
            }
        }
    }

    /// Writes `line` and a newline to stdin.
    pub fn send_line(&mut self, line: &str) {
        self.send_bytes(format!("{line}\n").as_bytes());
    }

    /// Writes raw bytes to stdin.
    pub fn send_bytes(&mut self, bytes: &[u8]) {
        let Some(stdin) = self.stdin.as_mut() else {
            self.fail("stdin is already closed");
        };
        if let Err(e) = stdin.write_all(bytes).and_then(|()| stdin.flush()) {
            self.fail(&format!("cannot write to stdin: {e}"));
        }
    }

    /// Closes stdin (end of input).
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Sends SIGINT, as Ctrl-C would.
    pub fn interrupt(&mut self) {
        self.signal("-INT");
    }

    /// Sends `signal` (`-INT`, `-KILL`, ...) with `kill`.
    pub fn signal(&mut self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal} failed: {status}");
    }

    /// Waits at most `timeout` for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        if let Some(status) = self.status {
            return status;
        }
        let deadline = Instant::now() + timeout;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => {
                    self.status = Some(status);
                    return status;
                }
                Ok(None) if Instant::now() < deadline => {
                    // Poll the exit status; output keeps flowing into the readers meanwhile.
                    std::thread::sleep(Duration::from_millis(10));
                }
                Ok(None) => self.fail(&format!("did not exit within {timeout:?}")),
                Err(e) => self.fail(&format!("cannot wait: {e}")),
            }
        }
    }

    /// Closes stdin, waits for the exit and for the end of both streams.
    pub fn finish(mut self) -> Finished {
        self.close_stdin();
        let status = self.wait_exit(TIMEOUT);
        let deadline = Instant::now() + TIMEOUT;
        self.out.drain(deadline);
        self.err.drain(deadline);
        Finished {
            status,
            stdout: self.out.text(),
            stderr: self.err.text(),
            raw_stdout: self.out.buf.clone(),
        }
    }

    /// [`Proc::finish`], asserting the exit code.
    pub fn expect_exit(self, code: i32) -> Finished {
        let done = self.finish();
        assert_eq!(done.code(), code, "{done:#?}");
        done
    }

    /// Kills the process if it still runs, then collects what it printed.
    pub fn kill_and_collect(mut self) -> Finished {
        if self.status.is_none() {
            let _ = self.child.kill();
        }
        self.finish()
    }
}

fn expect_line_in(proc: &mut Proc, needle: &str, stderr: bool) -> String {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let stream = if stderr { &mut proc.err } else { &mut proc.out };
        if let Some(line) = stream.take_line(needle) {
            return line;
        }
        if !stream.pump(deadline) && (stream.eof || Instant::now() >= deadline) {
            if let Some(line) = stream.take_line(needle) {
                return line;
            }
            let label = stream.label;
            let why = if stream.eof {
                "before the stream ended"
            } else {
                "in time"
            };
            proc.fail(&format!(
                "no {label} line containing {needle:?} {why} (waited at most {TIMEOUT:?})"
            ));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Starts `server 127.0.0.1 0 EXTRA...` and returns it with the port it reports.
pub fn start_server(extra: &[&str]) -> (Proc, u16) {
    let mut args = vec!["server", "127.0.0.1", "0"];
    args.extend_from_slice(extra);
    let mut server = Proc::spawn("server", &args);
    let line = server.expect_line(SERVER_READY);
    let port = line
        .strip_prefix(SERVER_READY)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|port| port.parse::<u16>().ok())
        .unwrap_or_else(|| panic!("no port in the server's first line: {line:?}"));
    assert!(port != 0, "the server reported port 0: {line:?}");
    (server, port)
}

/// Starts `client 127.0.0.1 PORT`.
pub fn start_client(name: &str, port: u16) -> Proc {
    Proc::spawn(name, &["client", "127.0.0.1", &port.to_string()])
}

/// Runs the binary with `args` and `input` as the whole of stdin, to its end.
pub fn run(args: &[&str], input: &[u8]) -> Finished {
    let mut proc = Proc::spawn("run", args);
    if let Some(stdin) = proc.stdin.as_mut() {
        // A child that exits without reading its input (offline, usage error) closes the pipe:
        // that is its business, so a broken pipe here is not a failure.
        let _ = stdin.write_all(input).and_then(|()| stdin.flush());
    }
    proc.finish()
}

/// Expects the two lines that report an ACK: `Message Received`, then the round-trip time, each
/// after `prefix`.
pub fn expect_ack(proc: &mut Proc, prefix: &str) {
    assert_eq!(
        proc.expect_line("Message Received"),
        format!("{prefix}Message Received")
    );
    let rtt = proc.expect_line("Roundtrip time");
    assert!(is_roundtrip_line(&rtt, prefix), "bad RTT line: {rtt:?}");
}

/// True for `Roundtrip time: <digits>.<six digits>s`.
pub fn is_roundtrip_line(line: &str, prefix: &str) -> bool {
    let Some(number) = line
        .strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix("Roundtrip time: "))
        .and_then(|rest| rest.strip_suffix('s'))
    else {
        return false;
    };
    let Some((whole, fraction)) = number.split_once('.') else {
        return false;
    };
    !whole.is_empty()
        && whole.bytes().all(|b| b.is_ascii_digit())
        && fraction.len() == 6
        && fraction.bytes().all(|b| b.is_ascii_digit())
}

/// A port on 127.0.0.1 that nothing listens on right now.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    listener.local_addr().expect("local addr").port()
}

/// Waits, at most [`TIMEOUT`], for one client to connect to a scripted server on `listener`.
pub fn accept_one(listener: &std::net::TcpListener, who: &str) -> std::net::TcpStream {
    listener
        .set_nonblocking(true)
        .expect("nonblocking listener");
    let deadline = Instant::now() + TIMEOUT;
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                stream.set_nonblocking(false).expect("blocking stream");
                return stream;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("no client came to {who}: {e}"),
        }
    }
}

/// A front-end for library tests: on each of its turns it says the next message through the
/// session's outbox, skipping (and keeping) the ones the outbox refuses, then ends the chat.
pub struct Script {
    lines: std::collections::VecDeque<Vec<u8>>,
    outbox: std::sync::Arc<client_server_chat::session::Outbox>,
    /// What the outbox refused, in order.
    pub refused: Vec<client_server_chat::session::Unsaid>,
}

impl Script {
    /// Says `lines` through `outbox`, one a turn.
    pub fn new(
        outbox: std::sync::Arc<client_server_chat::session::Outbox>,
        lines: Vec<Vec<u8>>,
    ) -> Script {
        Script {
            lines: lines.into(),
            outbox,
            refused: Vec::new(),
        }
    }

    /// Call on `Event::MyTurn`.
    pub fn my_turn(&mut self) {
        use client_server_chat::session::Speech;
        loop {
            let speech = match self.lines.pop_front() {
                Some(line) => Speech::Message(line),
                None => Speech::End,
            };
            match self.outbox.say(speech) {
                Ok(()) => return,
                Err(unsaid) => self.refused.push(unsaid),
            }
        }
    }
}

/// A client of an echo server says `turn N` and sees it come back: it chats on, untouched.
pub fn good_turn(good: &mut Proc, turn: usize) {
    let text = format!("turn {turn}");
    good.send_line(&text);
    assert_eq!(good.expect_line("Received:"), format!("Received: {text}"));
}

/// Starts `server --echo EXTRA...` and a client that chats once through it; the test shows later,
/// with [`good_turn`], that this client went on untouched.
pub fn echo_server_with_a_good_client(extra: &[&str]) -> (Proc, u16, Proc) {
    let mut args = vec!["--echo"];
    args.extend_from_slice(extra);
    let (server, port) = start_server(&args);
    let mut good = start_client("good", port);
    good.expect_line("Connected!");
    good_turn(&mut good, 0);
    (server, port, good)
}

/// Asserts the whole stdout of a client whose input was `hi`, then `end`: `connected` is its
/// second line, and `received` the answer it was sent, as shown (a line each of its lines).
pub fn assert_hi_then_end_transcript(
    client: &Finished,
    port: u16,
    connected: &str,
    received: &str,
) {
    let lines = client.lines();
    let shown: Vec<&str> = received.split('\n').collect();
    let more = shown.len() - 1;
    assert_eq!(lines.len(), 8 + more, "unexpected transcript: {client:#?}");
    assert_eq!(
        lines[0],
        format!("Trying to connect to server: 127.0.0.1: {port}")
    );
    assert_eq!(lines[1], connected);
    assert_eq!(lines[2], "Send: hi");
    assert_eq!(lines[3], "Message Received");
    assert!(
        is_roundtrip_line(lines[4], ""),
        "bad RTT line: {:?}",
        lines[4]
    );
    assert_eq!(lines[5..6 + more], shown);
    assert_eq!(lines[6 + more], "Send: end");
    assert_eq!(lines[7 + more], "The chat has ended.");
}

/// Limits process `pid` to descriptors numbered below `limit` with `prlimit` (util-linux, on
/// every machine this runs on); a test that needs it fails, rather than passing having tested
/// nothing, when it cannot be run.
pub fn limit_descriptors(pid: u32, limit: usize) {
    let limited = Command::new("prlimit")
        .args([
            "--pid",
            &pid.to_string(),
            &format!("--nofile={limit}:{limit}"),
        ])
        .status()
        .unwrap_or_else(|e| {
            panic!("cannot run prlimit (util-linux), needed to limit the server's descriptors: {e}")
        });
    assert!(
        limited.success(),
        "prlimit could not limit the server's descriptors to {limit}: {limited}"
    );
}

/// The lowest descriptor number process `pid` does not use: the next one it will get.
pub fn lowest_free_fd(pid: u32) -> usize {
    let used: std::collections::HashSet<usize> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap_or_else(|e| panic!("cannot list /proc/{pid}/fd: {e}"))
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    (0..).find(|n| !used.contains(n)).expect("a free number")
}
