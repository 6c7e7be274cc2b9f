//! The transcript (`server --log FILE`): every line a JSON object a strict parser accepts, any
//! bytes kept exactly, every message ACKed under `--log-sync` on disk even after `kill -9`, and a
//! log that cannot be written never stopping the server.

mod common;

use std::path::PathBuf;

use serde_json::Value;

use common::{TIMEOUT, expect_ack, run, start_client, start_server};

/// A fresh path for a log, removed when dropped.
struct LogFile(PathBuf);

impl LogFile {
    fn new(what: &str) -> LogFile {
        let path = std::env::temp_dir().join(format!(
            "client_server_chat-{what}-{}-{:?}.log",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_file(&path);
        LogFile(path)
    }

    fn arg(&self) -> &str {
        self.0.to_str().expect("a UTF-8 temp path")
    }

    /// Every complete line, parsed; a torn last line (no newline yet) is left out, as readers
    /// are told to.
    fn records(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(&self.0).expect("read the log");
        let complete = match text.rfind('\n') {
            Some(end) => &text[..=end],
            None => "",
        };
        complete
            .lines()
            .map(|line| {
                serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}"))
            })
            .collect()
    }
}

impl Drop for LogFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Standard base64 of `bytes`, to compare with the log's field.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits = String::new();
    for b in bytes {
        bits.push_str(&format!("{b:08b}"));
    }
    let mut out: String = bits
        .as_bytes()
        .chunks(6)
        .map(|six| {
            let mut v = 0usize;
            for (i, &bit) in six.iter().enumerate() {
                v |= usize::from(bit == b'1') << (5 - i);
            }
            char::from(ALPHABET[v])
        })
        .collect();
    while !out.len().is_multiple_of(4) {
        out.push('=');
    }
    out
}

fn field<'a>(record: &'a Value, name: &str) -> &'a Value {
    record.get(name).unwrap_or(&Value::Null)
}

#[test]
fn every_event_is_a_json_line_and_any_bytes_come_back_exactly() {
    let log = LogFile::new("events");
    let (mut server, port) = start_server(&["--echo", "--log", log.arg()]);
    let odd: &[u8] = b"caf\xe9 \x1b[2J \"quoted\" \\ end";
    let mut input = b"hello\n".to_vec();
    input.extend_from_slice(odd);
    input.extend_from_slice(b"\nend\n");
    let client = run(
        &["client", "127.0.0.1", &port.to_string(), "--name", "ann"],
        &input,
    );
    assert_eq!(client.code(), 0, "{client:#?}");
    server.expect_line("left the chat");
    server.interrupt();
    assert!(server.wait_exit(TIMEOUT).success(), "{}", server.dump());

    let records = log.records();
    let events: Vec<&str> = records
        .iter()
        .map(|r| field(r, "event").as_str().unwrap_or("?"))
        .collect();
    assert_eq!(
        events,
        [
            "connected",
            "message",
            "message",
            "ack",
            "message",
            "message",
            "ack",
            "ended",
            "shutdown"
        ],
        "{records:#?}"
    );
    for record in &records {
        let time = field(record, "time").as_str().expect("a time");
        // RFC 3339, UTC, microseconds: 2026-12-02T04:11:33.123456Z
        assert_eq!(time.len(), 27, "{time}");
        assert!(
            time.ends_with('Z') && &time[10..11] == "T" && &time[19..20] == ".",
            "{time}"
        );
    }
    let connected = &records[0];
    assert_eq!(field(connected, "name"), "ann");
    assert_eq!(field(connected, "session"), 1);
    assert_eq!(field(&records[1], "direction"), "in");
    assert_eq!(field(&records[1], "text"), "hello");
    assert_eq!(field(&records[2], "direction"), "out");
    assert!(
        field(&records[3], "rtt_us")
            .as_u64()
            .is_some_and(|us| us > 0)
    );
    // Not UTF-8: kept exactly, as base64, both ways.
    assert_eq!(field(&records[4], "base64"), base64(odd).as_str());
    assert_eq!(field(&records[5], "base64"), base64(odd).as_str());
    assert_eq!(field(&records[7], "how"), "The other side left the chat.");
}

#[test]
fn under_log_sync_a_kill_9_loses_no_acknowledged_message() {
    let log = LogFile::new("kill9");
    let (mut server, port) = start_server(&["--echo", "--log", log.arg(), "--log-sync"]);
    let mut client = start_client("writer", port);
    client.expect_line("Connected!");
    let mut acked = Vec::new();
    for n in 0..20 {
        let text = format!("durable {n}");
        client.send_line(&text);
        expect_ack(&mut client, "");
        acked.push(text);
    }
    // The next one may or may not be acknowledged when the server dies; no matter.
    client.send_line("in flight");
    server.signal("-KILL");
    server.wait_exit(TIMEOUT);

    let received: Vec<String> = log
        .records()
        .iter()
        .filter(|r| field(r, "event") == "message" && field(r, "direction") == "in")
        .filter_map(|r| field(r, "text").as_str().map(str::to_string))
        .collect();
    for text in &acked {
        assert!(
            received.contains(text),
            "{text:?} was ACKed but is not in the log"
        );
    }
}

#[test]
fn a_log_that_cannot_be_written_is_reported_once_and_the_server_serves_on() {
    // Every write to /dev/full fails: the disk is full.
    let (mut server, port) = start_server(&["--echo", "--log", "/dev/full"]);
    for name in ["first", "second"] {
        let client = run(
            &["client", "127.0.0.1", &port.to_string(), "--name", name],
            b"still chatting\nend\n",
        );
        assert_eq!(client.code(), 0, "{client:#?}");
        assert!(
            client.stdout.contains("Received: still chatting"),
            "{client:#?}"
        );
    }
    server.expect_line("Transcript: cannot write");
    let done = server.kill_and_collect();
    assert_eq!(
        done.stdout.matches("Transcript: cannot write").count(),
        1,
        "{done:#?}"
    );
}

#[test]
fn log_sync_without_a_log_is_a_usage_error() {
    let done = run(&["server", "127.0.0.1", "0", "--log-sync"], b"");
    assert_eq!(done.code(), 2, "{done:#?}");
    assert!(
        done.stderr.contains("--log-sync goes with --log FILE"),
        "{done:#?}"
    );
}
