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
}

/// What a run measured.
#[derive(Debug, Default)]
pub struct Tally {
    /// Probes sent.
    pub sent: u64,
    /// Round trips of the probes answered, in order.
    pub rtts: Vec<Duration>,
}

impl Tally {
    /// Probes sent and never answered.
    pub fn lost(&self) -> u64 {
        self.sent - self.rtts.len() as u64
    }

    /// `N sent, N answered, N lost`, then, when something was answered, the `rtt
    /// min/p50/avg/p99/max = ... s` line.
    pub fn summary(&self) -> String {
        let mut text = format!(
            "{} sent, {} answered, {} lost",
            self.sent,
            self.rtts.len(),
            self.lost()
        );
        let mut sorted = self.rtts.clone();
        sorted.sort_unstable();
        if let (Some(&min), Some(&max)) = (sorted.first(), sorted.last()) {
            let total: Duration = sorted.iter().sum();
            let avg = total / u32::try_from(sorted.len()).unwrap_or(u32::MAX);
            let figures = [
                min,
                percentile(&sorted, 50),
                avg,
                percentile(&sorted, 99),
                max,
            ];
            let figures: Vec<String> = figures.into_iter().map(seconds).collect();
            text.push_str(&format!(
                "\nrtt min/p50/avg/p99/max = {} s",
                figures.join("/")
            ));
        }
        text
    }
}

/// The nearest-rank percentile `p` of `sorted`, which is not empty.
fn percentile(sorted: &[Duration], p: usize) -> Duration {
    let rank = (sorted.len() * p).div_ceil(100).max(1);
    sorted[rank.min(sorted.len()) - 1]
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
    let welcome = match session.client_handshake(&config.target.name, &mut |position| {
        out.line(&format!(
            "All workers are busy: waiting in line (position {position})."
        ))
    }) {
        Ok(welcome) => welcome,
        // Interrupted while waiting in line: nothing was sent, nothing is owed.
        Err(Ending::Stopped(_)) => return Ok(()),
        Err(ending) => return Err(Error::Chat(ending)),
    };
    if !config.quiet {
        out.line(&header(config, &welcome));
    }
    let (tally, ending) = probe_until_done(&mut session, config, out);
    // The blank line keeps the summary off the `^C` a terminal echoes, as ping's does.
    out.line(&format!(
        "\n--- {}:{} ping statistics ---\n{}",
        config.target.host,
        config.target.port,
        tally.summary()
    ));
    match ending {
        Ending::EndedByMe | Ending::Stopped(_) if tally.lost() == 0 => Ok(()),
        ending => Err(Error::Chat(ending)),
    }
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
    format!(
        "PING {}:{} (#{}{on}): {what}",
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
        let answered = match &payload {
            Some(payload) => session.echo_probe(payload.clone(), config.timeout),
            None => session.ping(config.timeout),
        };
        match answered {
            Ok(rtt) => {
                tally.rtts.push(rtt);
                if !config.quiet {
                    out.line(&format!("seq={} time={}s", tally.sent, seconds(rtt)));
                }
            }
            Err(ending) => {
                // A probe cut short by the user's own Ctrl-C was not lost.
                if matches!(ending, Ending::Stopped(_)) {
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
        let tally = Tally {
            sent: 4,
            rtts: [40, 10, 30].map(Duration::from_micros).to_vec(),
        };
        assert_eq!(
            tally.summary(),
            "4 sent, 3 answered, 1 lost\n\
             rtt min/p50/avg/p99/max = 0.000010/0.000030/0.000027/0.000040/0.000040 s"
        );
        assert_eq!(Tally::default().summary(), "0 sent, 0 answered, 0 lost");
    }
}
