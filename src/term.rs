//! The terminal: a line printer that keeps the prompt in view, and how figures are shown.

use std::io::{self, IsTerminal, Write};
use std::time::Duration;

use crate::text::sanitize;

use parking_lot::Mutex;

/// Prints whole lines to stdout around a prompt that may be waiting for input.
///
/// When something happens while a prompt is shown, the prompt is taken away, the line printed,
/// and the prompt shown again, so the user never types after a line that is no longer the
/// prompt. On a terminal the prompt line is erased and redrawn; in a pipe the prompt's line is
/// ended first, so each line in a log stays whole.
#[derive(Debug)]
pub struct Terminal {
    /// The prompt on screen now, if any.
    prompt: Mutex<Option<String>>,
    stdout_is_tty: bool,
    echo_input: bool,
}

impl Terminal {
    /// A printer for this process's stdout; typed input is echoed after the prompt when stdin is
    /// not a terminal (nobody else would show it, and the transcript should read the same).
    pub fn stdout() -> Terminal {
        Terminal {
            prompt: Mutex::new(None),
            stdout_is_tty: io::stdout().is_terminal(),
            echo_input: !io::stdin().is_terminal(),
        }
    }

    /// What takes a shown prompt away: erasing its line on a terminal, ending it in a pipe.
    fn leave_prompt(&self) -> &'static str {
        if self.stdout_is_tty {
            "\r\x1b[2K"
        } else {
            "\n"
        }
    }

    /// Prints one line of the program's own, keeping any prompt below it.
    pub fn line(&self, text: &str) {
        let shown = self.prompt.lock();
        let mut out = String::with_capacity(text.len() + 16);
        if shown.is_some() {
            out.push_str(self.leave_prompt());
        }
        out.push_str(text);
        out.push('\n');
        if let Some(prompt) = shown.as_deref() {
            out.push_str(prompt);
        }
        write_out(&out);
    }

    /// Shows `prompt` (replacing any prompt shown now) and keeps it until input is taken.
    pub fn prompt(&self, prompt: &str) {
        let mut shown = self.prompt.lock();
        if shown.as_deref() == Some(prompt) {
            return;
        }
        let mut out = String::new();
        if shown.is_some() {
            out.push_str(self.leave_prompt());
        }
        out.push_str(prompt);
        write_out(&out);
        *shown = Some(prompt.to_string());
    }

    /// The terminal echoed `^C` where the cursor was: takes that line away (and redraws the
    /// prompt that was on it), so that what is printed next does not share a line with `^C`.
    /// Nothing to do when stdout is not a terminal.
    pub fn after_interrupt(&self) {
        if !self.stdout_is_tty {
            return;
        }
        let shown = self.prompt.lock();
        write_out(&format!("\r\x1b[2K{}", shown.as_deref().unwrap_or("")));
    }

    /// Takes the prompt away without printing anything.
    pub fn clear_prompt(&self) {
        // The lock is held while writing, so that no other line comes between.
        let mut shown = self.prompt.lock();
        if shown.take().is_some() {
            write_out(self.leave_prompt());
        }
    }

    /// The user's line was taken: the prompt is done. Echoes the line when stdin is not a
    /// terminal; on a terminal the user's own typing and Enter are already on screen.
    pub fn input_taken(&self, line: &[u8]) {
        let mut shown = self.prompt.lock();
        if shown.take().is_some() && self.echo_input {
            write_out(&format!("{}\n", sanitize(line)));
        }
    }
}

/// Writes to stdout; a closed stdout (a pipe whose reader left) is not worth failing a chat for.
fn write_out(text: &str) {
    let mut stdout = io::stdout().lock();
    let _ = stdout.write_all(text.as_bytes());
    let _ = stdout.flush();
}

/// A round-trip time as the original program showed it, in seconds with six decimals
/// (`0.000071`, the caller adds the unit), rounded up to the microsecond: a round trip takes
/// time, so it never shows as `0.000000`.
pub fn seconds(rtt: Duration) -> String {
    // In u64 and u32, which print far faster than the u128 of `as_micros`.
    let micros = rtt.subsec_nanos().div_ceil(1000);
    let whole = rtt.as_secs() + u64::from(micros / 1_000_000);
    let micros = match micros % 1_000_000 {
        0 if whole == 0 => 1,
        micros => micros,
    };
    format!("{whole}.{micros:06}")
}

/// Strips one `\n` and one `\r` before it: the line as typed, without its ending.
pub fn trim_line_end(line: &mut Vec<u8>) {
    if line.last() == Some(&b'\n') {
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn round_trips_show_in_seconds_rounded_up_to_the_microsecond() {
        use std::time::Duration;
        assert_eq!(super::seconds(Duration::from_nanos(71_000)), "0.000071");
        assert_eq!(super::seconds(Duration::from_nanos(70_001)), "0.000071");
        assert_eq!(super::seconds(Duration::from_nanos(1)), "0.000001");
        assert_eq!(super::seconds(Duration::ZERO), "0.000001");
        assert_eq!(super::seconds(Duration::from_millis(2500)), "2.500000");
        assert_eq!(super::seconds(Duration::from_secs(1)), "1.000000");
        assert_eq!(
            super::seconds(Duration::from_nanos(999_999_999)),
            "1.000000"
        );
    }
}
