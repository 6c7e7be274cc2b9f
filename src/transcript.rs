//! The transcript: one JSON object a line for every event worth finding later, appended to a file.
//!
//! Records go to one writer thread through a bounded channel, so that the log never blocks a
//! session; it writes each to the file as it comes (no buffer of its own to lose). With `sync`,
//! where a received message must be on disk before its ACK goes out, every record is written by
//! its caller instead, under the writer's lock, so that records keep their order, and a message
//! is `sync_data`'d before the call returns. Trouble (a full disk, a file that became unwritable)
//! is told once through `trouble`; when writing works again, a `gap` record says where the log
//! has a hole and how many records it misses. A write cut short is cut back, so that a torn line
//! can only be the last one (after a crash).

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use parking_lot::Mutex;

/// How many records may wait for the writer thread; beyond, they are counted as missed.
const QUEUE: usize = 4096;

/// An open transcript.
pub struct Transcript {
    records: Mutex<Option<Sender<String>>>,
    writer: Arc<Mutex<Writer>>,
    /// Records dropped for a full queue, for the writer thread to put in its next gap record
    /// (counted here so that a session never waits on the writer's lock).
    missed: Arc<AtomicU64>,
    thread: Mutex<Option<JoinHandle<()>>>,
    sync: bool,
}

impl std::fmt::Debug for Transcript {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transcript")
            .field("sync", &self.sync)
            .finish()
    }
}

/// The file and what went wrong with it.
struct Writer {
    file: File,
    /// The file's length after the last whole write: a write cut short is cut back to it, so
    /// that a torn line can only ever be the last one.
    good_len: u64,
    /// Since when records are missing, and how many (writes failed, or the queue was full).
    gap: Option<(String, u64)>,
    /// Writing fails now (told once through `trouble`).
    failing: bool,
    trouble: Box<dyn Fn(String) + Send>,
}

impl Writer {
    /// Appends `records`, a line each, in one write. On failure they are counted as missed
    /// (`trouble` hears of it the first time); once a write works again, the `gap` record goes
    /// first, and `trouble` hears that too.
    fn append(&mut self, records: &[String]) -> bool {
        let mut batch = String::new();
        if let Some((since, missed)) = &self.gap {
            batch.push_str(&format!(
                r#"{{"time":"{}","event":"gap","since":"{since}","missed":{missed}}}"#,
                now()
            ));
            batch.push('\n');
        }
        for record in records {
            batch.push_str(record);
            batch.push('\n');
        }
        if batch.is_empty() {
            return true;
        }
        match self.file.write_all(batch.as_bytes()) {
            Ok(()) => {
                self.good_len += batch.len() as u64;
                self.gap = None;
                if self.failing {
                    self.failing = false;
                    (self.trouble)(
                        "Transcript: writing works again; the log records the gap.".into(),
                    );
                }
                true
            }
            Err(e) => {
                let _ = self.file.set_len(self.good_len);
                if !self.failing {
                    self.failing = true;
                    (self.trouble)(format!(
                        "Transcript: cannot write ({e}); the server goes on, and the log will say what it missed."
                    ));
                }
                self.count_missed(records.len() as u64);
                false
            }
        }
    }

    fn count_missed(&mut self, count: u64) {
        if count > 0 {
            self.gap.get_or_insert_with(|| (now(), 0)).1 += count;
        }
    }
}

impl Transcript {
    /// Opens `path` for appending and starts the writer thread; `trouble` hears of write errors.
    pub fn open(
        path: &Path,
        sync: bool,
        trouble: Box<dyn Fn(String) + Send>,
    ) -> io::Result<Transcript> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let good_len = file.metadata()?.len();
        let writer = Arc::new(Mutex::new(Writer {
            file,
            good_len,
            gap: None,
            failing: false,
            trouble,
        }));
        let (records, queue) = crossbeam_channel::bounded(QUEUE);
        let missed = Arc::new(AtomicU64::new(0));
        let (thread_writer, thread_missed) = (Arc::clone(&writer), Arc::clone(&missed));
        let thread = std::thread::Builder::new()
            .name("transcript".into())
            .spawn(move || write_records(&queue, &thread_writer, &thread_missed))?;
        Ok(Transcript {
            records: Mutex::new(Some(records)),
            writer,
            missed,
            thread: Mutex::new(Some(thread)),
            sync,
        })
    }

    /// True when received messages are on disk before their ACK goes out.
    pub fn is_sync(&self) -> bool {
        self.sync
    }

    /// Records `record`. Without `sync` it is queued for the writer thread, never waiting; one
    /// that finds the queue full is counted as missed. With `sync` (where a received message
    /// waits for the disk anyway) it is written at once, so that every record keeps its order.
    pub fn record(&self, record: String) {
        if self.sync {
            self.writer.lock().append(&[record]);
            return;
        }
        let sent = match self.records.lock().as_ref() {
            Some(records) => records.try_send(record),
            None => return,
        };
        if let Err(TrySendError::Full(_)) = sent {
            self.missed.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Writes a record and makes it durable (`sync_data`) before returning.
    pub fn record_durably(&self, record: &str) {
        let mut writer = self.writer.lock();
        if writer.append(&[record.to_string()])
            && let Err(e) = writer.file.sync_data()
        {
            // As a failed write: told once, and the gap shows in the log.
            if !writer.failing {
                writer.failing = true;
                (writer.trouble)(format!("Transcript: cannot make the log durable ({e})."));
            }
        }
    }

    /// Writes what is queued, and the record of any gap still open; the transcript records
    /// nothing more.
    pub fn close(&self) {
        self.records.lock().take();
        if let Some(thread) = self.thread.lock().take() {
            let _ = thread.join();
        }
        let mut writer = self.writer.lock();
        writer.count_missed(self.missed.swap(0, Ordering::Relaxed));
        writer.append(&[]);
    }
}

/// The writer thread: each record goes to the file as soon as it comes, with whatever else is
/// queued by then in the same write (so the log is never more than a write behind, well within
/// the second promised).
fn write_records(queue: &Receiver<String>, writer: &Mutex<Writer>, missed: &AtomicU64) {
    while let Ok(record) = queue.recv() {
        let mut batch = vec![record];
        batch.extend(queue.try_iter());
        let mut writer = writer.lock();
        writer.count_missed(missed.swap(0, Ordering::Relaxed));
        writer.append(&batch);
    }
}

/// Now, as RFC 3339 UTC with microseconds: `2026-12-02T04:11:33.123456Z`.
pub fn now() -> String {
    rfc3339(SystemTime::now())
}

/// `at` as RFC 3339 UTC with microseconds.
pub fn rfc3339(at: SystemTime) -> String {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rest / 3600,
        rest / 60 % 60,
        rest % 60,
        since.subsec_micros()
    )
}

/// The calendar date of `days` since 1970-01-01 (the proleptic Gregorian calendar).
fn civil(days: u64) -> (u64, u64, u64) {
    // Counted from 0000-03-01, so that the leap day ends each 4-year cycle.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// `text` as a JSON string literal, every control character escaped.
pub fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\u{7f}' || ('\u{80}'..='\u{9f}').contains(&c) => {
                out.push_str(&format!("\\u{:04x}", c as u32));
            }
            // Line and paragraph separators break some JavaScript readers of JSON.
            '\u{2028}' | '\u{2029}' => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A message's bytes as a JSON field: `"text":"..."` when they are UTF-8, else
/// `"base64":"..."`, so that any bytes come back exactly.
pub fn bytes_field(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(text) => format!(r#""text":{}"#, json_string(text)),
        Err(_) => format!(r#""base64":"{}""#, base64(bytes)),
    }
}

/// Standard base64 with padding.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn times_are_rfc3339_utc_with_microseconds() {
        let at = UNIX_EPOCH + Duration::new(1_795_000_000, 123_456_789);
        assert_eq!(rfc3339(at), "2026-11-18T11:06:40.123456Z");
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000000Z");
        // A leap day.
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00.000000Z");
    }

    #[test]
    fn after_a_failure_the_next_write_first_records_the_gap() {
        let path = std::env::temp_dir().join(format!("transcript-gap-{}", std::process::id()));
        let heard = Arc::new(Mutex::new(Vec::new()));
        let told = Arc::clone(&heard);
        let mut writer = Writer {
            file: File::create(&path).unwrap(),
            good_len: 0,
            gap: Some(("2026-12-02T00:00:00.000000Z".into(), 3)),
            failing: true,
            trouble: Box::new(move |line| told.lock().push(line)),
        };
        assert!(writer.append(&[r#"{"event":"shutdown"}"#.to_string()]));
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(
            lines[0]
                .ends_with(r#""event":"gap","since":"2026-12-02T00:00:00.000000Z","missed":3}"#),
            "{text}"
        );
        assert_eq!(lines[1], r#"{"event":"shutdown"}"#);
        assert_eq!(heard.lock().len(), 1);
        assert!(writer.gap.is_none());
    }

    #[test]
    fn a_durable_record_is_in_the_file_when_the_call_returns() {
        let path = std::env::temp_dir().join(format!("transcript-sync-{}", std::process::id()));
        let transcript = Transcript::open(&path, true, Box::new(|_| {})).unwrap();
        transcript.record(r#"{"event":"connected"}"#.into());
        transcript.record_durably(r#"{"event":"message"}"#);
        let text = std::fs::read_to_string(&path).unwrap();
        transcript.close();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(text, "{\"event\":\"connected\"}\n{\"event\":\"message\"}\n");
    }

    #[test]
    fn strings_are_escaped_and_other_bytes_go_as_base64() {
        assert_eq!(
            json_string("a\"b\\c\n\u{1b}[2J\u{7}é\u{2028}"),
            r#""a\"b\\c\n\u001b[2J\u0007é\u2028""#
        );
        assert_eq!(bytes_field(b"hi"), r#""text":"hi""#);
        assert_eq!(bytes_field(b"\xff\x00a"), r#""base64":"/wBh""#);
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b""), "");
    }
}
