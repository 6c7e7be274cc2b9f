//! The `ping` front-end: a latency probe that times PINGs (or MESSAGEs echoed by `server --echo`)
//! and prints each round trip and a summary, in the style of `ping`.

use std::time::Duration;

use crate::client::Target;
use crate::error::Error;
use crate::session::{Ending, Session, Welcome};
use crate::term::{Terminal, seconds};
use crate::text::sanitize;

/// What `ping` needs.
#[derive(Debug, Clone)]
pub struct PingConfig {
    /// The server, and this side's name and limits.
    pub target: Target,
    /// Probes to send; `None` sends until Ctrl-C.
    pub count: Option<u64>,
    /// Time between one answer and the next probe.
    pub interval: Duration,
    /// `Some(bytes)`: probe with MESSAGEs of that size, which the server must echo; `None`:
    /// probe with PINGs, which any of our servers answers.
    pub message_size: Option<usize>,
    /// Print only the summary.
    pub quiet: bool,
    /// How long to wait for each answer before the run counts the probe lost and stops.
    pub timeout: Duration,
    /// Probe over a free-order session (`--duplex`), as a duplex client's chat would run.
    pub duplex: bool,
}

/// What a run measured, in memory that does not grow with the run: exact count, minimum,
/// maximum and mean, and percentiles from a histogram (to the microsecond below 1 ms, to three
/// significant digits above).
#[derive(Debug, Default)]
pub struct Tally {
    /// Probes sent (a probe cut short by a goodbye, the user's or the server's, is not counted).
    pub sent: u64,
    answered: u64,
    min: Option<Duration>,
    max: Duration,
    total: Duration,
    /// Answers per bucket (see [`bucket`]).
    buckets: Vec<u64>,
}

impl Tally {
    /// Counts an answer that took `rtt`.
    pub fn answered(&mut self, rtt: Duration) {
        self.answered += 1;
        self.min = Some(self.min.map_or(rtt, |min| min.min(rtt)));
        self.max = self.max.max(rtt);
        self.total += rtt;
        let index = bucket(rtt);
        if self.buckets.len() <= index {
            self.buckets.resize(index + 1, 0);
        }
        self.buckets[index] += 1;
    }

    /// Probes sent and never answered.
    pub fn lost(&self) -> u64 {
        self.sent - self.answered
    }

    /// `N sent, N answered, N lost`, then, when something was answered, the `rtt
    /// min/p50/avg/p99/max = ... s` line.
    pub fn summary(&self) -> String {
        let mut text = format!(
            "{} sent, {} answered, {} lost",
            self.sent,
            self.answered,
            self.lost()
        );
        if let Some(min) = self.min {
            let avg = self.total / u32::try_from(self.answered).unwrap_or(u32::MAX);
            let figures = [min, self.percentile(50), avg, self.percentile(99), self.max];
            let figures: Vec<String> = figures.into_iter().map(seconds).collect();
            text.push_str(&format!(
                "\nrtt min/p50/avg/p99/max = {} s",
                figures.join("/")
            ));
        }
        text
    }

    /// The nearest-rank percentile `p`, as the upper bound of its bucket (never above the
    /// maximum); there is at least one answer.
    fn percentile(&self, p: u64) -> Duration {
        let rank = (self.answered * p).div_ceil(100).max(1);
        let mut seen = 0;
        for (index, count) in self.buckets.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return bucket_top(index).min(self.max);
            }
        }
        self.max
    }
}

/// Microseconds below which every microsecond has a bucket of its own.
const FINE: u64 = 1000;
/// Buckets per decade above [`FINE`]: three significant digits.
const PER_DECADE: u64 = 900;

/// The histogram bucket of `rtt`.
fn bucket(rtt: Duration) -> usize {
    let micros = u64::try_from(rtt.as_micros()).unwrap_or(u64::MAX);
    if micros < FINE {
        return micros as usize;
    }
    let decade = micros.ilog10() - 2;
    let leading = micros / 10u64.pow(decade);
    (FINE + u64::from(decade - 1) * PER_DECADE + (leading - 100)) as usize
}

/// The largest round trip that falls in bucket `index` (a nanosecond short of the next one).
fn bucket_top(index: usize) -> Duration {
    let index = index as u64;
    let next_micros = if index < FINE {
        index + 1
    } else {
        let decade = (index - FINE) / PER_DECADE + 1;
        let leading = (index - FINE) % PER_DECADE + 100;
        (leading + 1).saturating_mul(10u64.pow(decade as u32))
    };
    Duration::from_nanos(next_micros.saturating_mul(1000) - 1)
}

/// Connects, probes until the count is reached or Ctrl-C, and prints the summary.
///
/// `Ok` when the run ended as asked (count reached, or Ctrl-C) with every probe answered.
pub fn run(config: &PingConfig) -> Result<(), Error> {
    let out = Terminal::stdout();
    let session = config.target.open_session()?;
    probe(session, config, &out)
}

/// Runs the probes over a connected stream and prints what they measured.
pub fn probe(mut session: Session, config: &PingConfig, out: &Terminal) -> Result<(), Error> {
    let handshake = session.client_handshake(&config.target.name, config.duplex, &mut |position| {
        out.line(&format!(
            "All workers are busy: waiting in line (position {position})."
        ))
    });
    let (tally, ending) = match handshake {
        Ok(welcome) => match too_long(config, &welcome) {
            Some(problem) => {
                session.end();
                return Err(Error::Chat(Ending::Violation(problem)));
            }
            None => {
                if !config.quiet {
                    out.line(&header(config, &welcome));
                }
                probe_until_done(&mut session, config, out)
            }
        },
        // Interrupted while waiting in line: nothing was sent, nothing is owed.
        Err(ending @ Ending::Stopped(_)) => (Tally::default(), ending),
        Err(ending) => return Err(Error::Chat(ending)),
    };
    // The blank line keeps the summary off the `^C` a terminal echoes, as ping's does.
    out.line(&format!(
        "\n--- {}:{} ping statistics ---\n{}",
        config.target.host,
        config.target.port,
        tally.summary()
    ));
    match ending {
        // Every probe sent was answered: however the run ended, it measured what it sent.
        _ if tally.lost() == 0 => {
            if !matches!(ending, Ending::EndedByMe | Ending::Stopped(_)) {
                out.line(&ending.to_string());
            }
            Ok(())
        }
        ending => Err(Error::Chat(ending)),
    }
}

/// Why probes of the configured size cannot be sent to this server, if they cannot.
fn too_long(config: &PingConfig, welcome: &Welcome) -> Option<String> {
    let size = config.message_size?;
    (size > welcome.max_message).then(|| {
        format!(
            "probes of {size} bytes are over the server's limit of {} bytes; give a smaller -s",
            welcome.max_message
        )
    })
}

/// The first line: where, which session, what kind of probe.
fn header(config: &PingConfig, welcome: &Welcome) -> String {
    let server = sanitize(welcome.server_name.as_bytes());
    let on = if server.is_empty() {
        String::new()
    } else {
        format!(" on {server}")
    };
    let what = match config.message_size {
        Some(size) => format!("{size}-byte messages, echoed"),
        None => "PING frames".to_string(),
    };
    let order = if config.duplex { ", free order" } else { "" };
    format!(
        "PING {}:{} (#{}{on}): {what}{order}",
        config.target.host, config.target.port, welcome.session_id
    )
}

/// Sends the probes, printing each answer, until the count is reached or the chat ends; returns
/// the tally and how the chat ended.
fn probe_until_done(session: &mut Session, config: &PingConfig, out: &Terminal) -> (Tally, Ending) {
    let payload = config.message_size.map(probe_payload);
    let mut tally = Tally::default();
    let ending = loop {
        if config.count.is_some_and(|count| tally.sent >= count) {
            break session.end();
        }
        if tally.sent > 0
            && !config.interval.is_zero()
            && let Err(ending) = session.pause(config.interval)
        {
            break ending;
        }
        tally.sent += 1;
        let answer = match &payload {
            Some(payload) => session.echo_probe(payload.clone(), config.timeout),
            None => session.ping(config.timeout),
        };
        match answer {
            Ok(rtt) => {
                tally.answered(rtt);
                if !config.quiet {
                    out.line(&format!("seq={} time={}s", tally.sent, seconds(rtt)));
                }
            }
            Err(ending) => {
                // A probe cut short by a goodbye (the user's Ctrl-C, the server shutting down or
                // removing this client) was not lost: it was interrupted, and is not counted.
                if ending.is_orderly() {
                    tally.sent -= 1;
                }
                break ending;
            }
        }
    };
    (tally, ending)
}

/// A probe message of `size` bytes: printable, so that an echo server's log stays readable.
fn probe_payload(size: usize) -> Vec<u8> {
    (0..size).map(|i| b'a' + (i % 26) as u8).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_counts_and_orders_the_round_trips() {
        let mut tally = Tally {
            sent: 4,
            ..Tally::default()
        };
        for nanos in [40_400, 10_200, 30_300] {
            tally.answered(Duration::from_nanos(nanos));
        }
        assert_eq!(
            tally.summary(),
            "4 sent, 3 answered, 1 lost\n\
             rtt min/p50/avg/p99/max = 0.000011/0.000031/0.000027/0.000041/0.000041 s"
        );
        assert_eq!(Tally::default().summary(), "0 sent, 0 answered, 0 lost");
    }

    #[test]
    fn buckets_keep_microseconds_below_a_millisecond_and_three_digits_above() {
        for micros in [0, 1, 999, 1000, 1234, 9999, 10_000, 123_456, 5_000_000] {
            let rtt = Duration::from_micros(micros);
            let index = bucket(rtt);
            let top = bucket_top(index);
            assert!(top >= rtt, "{micros} µs: top {top:?}");
            assert!(
                top.as_micros() as f64 <= micros as f64 * 1.01 + 1.0,
                "{micros} µs: top {top:?} too far"
            );
            if index > 0 {
                assert!(bucket_top(index - 1) < rtt, "{micros} µs");
            }
        }
        let mut tally = Tally::default();
        for micros in 1..=1000 {
            tally.sent += 1;
            tally.answered(Duration::from_micros(micros * 10));
        }
        // p50 is the 500th answer (5000 µs), p99 the 990th (9900 µs), each to three digits.
        assert_eq!(seconds(tally.percentile(50)), "0.005010");
        assert_eq!(seconds(tally.percentile(99)), "0.009910");
    }
}
