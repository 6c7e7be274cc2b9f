//! The terminal: a line printer that keeps the prompt (and, with the line editor, the draft) in
//! view below what is printed; the terminal's mode while the editor runs; how figures are shown.

use std::io::{self, BufRead, IsTerminal, Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::editor::{Action, Editor, Keys, is_command};
use crate::text::{sanitize_lines_into, width};

use parking_lot::Mutex;

/// Prints whole lines to stdout around a prompt that may be waiting for input.
///
/// When something happens while a prompt is shown, the prompt is taken away, the line printed,
/// and the prompt shown again, so the user never types after a line that is no longer the
/// prompt. With the line editor ([`Terminal::editing`]) the prompt, the draft and any queued
/// lines are erased and drawn again, the cursor back where it was; without it, on a terminal the
/// prompt line is erased and redrawn, and in a pipe the prompt's line is ended first, so each
/// line in a log stays whole.
#[derive(Debug)]
pub struct Terminal {
    screen: Mutex<Screen>,
    stdout_is_tty: bool,
    echo_input: bool,
    /// The line editor reads the keys and this side draws what is typed.
    editing: bool,
    /// How keys (or lines) make messages.
    keys: Keys,
}

/// When the front-ends run the line editor (`--editor`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum EditorUse {
    /// When stdin and stdout are a terminal.
    #[default]
    Auto,
    /// Always, even with stdin a pipe.
    Always,
    /// Never: one line is one message, as the terminal's own line mode gives them.
    Never,
}

/// What is drawn below the printed lines.
#[derive(Debug)]
struct Screen {
    /// The prompt, if one is shown.
    prompt: Option<String>,
    editor: Editor,
    /// Lines drawn above the prompt that are not final (messages queued to be sent).
    queued: Vec<String>,
    /// With the editor: how many rows below the drawing's first the cursor is, while something
    /// is drawn.
    drawn: Option<usize>,
    /// The terminal's width in columns.
    width: usize,
    /// The chat is over: nothing more is drawn.
    closed: bool,
}

/// What a front-end does with what the editor's user types.
pub trait Typing: Sync {
    /// A message the user finished, multi-line or not. Handing it back keeps it as the draft
    /// (it could not be sent, and the front-end has said why).
    fn submit(&self, text: String) -> Result<(), String>;
    /// A draft was opened (its first character typed) or closed (emptied without sending).
    fn draft(&self, open: bool);
    /// The user has nothing more to say (Ctrl-D on an empty draft, or stdin closed).
    fn end_of_input(&self);
}

impl Terminal {
    /// A printer for this process's stdout; typed input is echoed after the prompt when stdin is
    /// not a terminal (nobody else would show it, and the transcript should read the same).
    pub fn stdout() -> Terminal {
        Terminal::new(false, Keys::default())
    }

    /// Like [`Terminal::stdout`], with the line editor when `when` says so. With
    /// [`EditorUse::Auto`] that is when stdin and stdout are a terminal whose mode `stty` can
    /// tell; if it cannot, the user is told so and lines are read as the terminal gives them.
    /// [`EditorUse::Always`] runs the editor on any stdin (a script that types keys). The mode
    /// itself is set only when [`Terminal::edit`] begins, after the front-end has set up Ctrl-C,
    /// which restores it.
    pub fn editing(keys: Keys, when: EditorUse) -> Terminal {
        let tty = io::stdin().is_terminal() && io::stdout().is_terminal();
        let editing = match when {
            EditorUse::Never => false,
            EditorUse::Always if !io::stdin().is_terminal() => true,
            EditorUse::Auto if !tty => false,
            EditorUse::Always | EditorUse::Auto => match stty(&["-g"]) {
                Ok(_) => true,
                Err(why) => {
                    write_out(&format!(
                        "Line editing is off ({why}): lines are read as the terminal gives them.\n"
                    ));
                    false
                }
            },
        };
        Terminal::new(editing, keys)
    }

    fn new(editing: bool, keys: Keys) -> Terminal {
        Terminal {
            screen: Mutex::new(Screen {
                prompt: None,
                editor: Editor::new(keys),
                queued: Vec::new(),
                drawn: None,
                width: 80,
                closed: false,
            }),
            stdout_is_tty: io::stdout().is_terminal(),
            echo_input: editing || !io::stdin().is_terminal(),
            editing,
            keys,
        }
    }

    /// True when the line editor reads the keys: the front-end gives its input to
    /// [`Terminal::edit`] instead of reading lines.
    pub fn is_editing(&self) -> bool {
        self.editing
    }

    /// What takes a shown prompt away: erasing its line on a terminal, ending it in a pipe.
    fn leave_prompt(&self) -> &'static str {
        if self.stdout_is_tty {
            "\r\x1b[2K"
        } else {
            "\n"
        }
    }

    /// Prints one line of the program's own (it may hold several), keeping any prompt below it.
    pub fn line(&self, text: &str) {
        let mut screen = self.screen.lock();
        let mut out = String::with_capacity(text.len() + 16);
        if self.editing {
            screen.redraw(&mut out, |_, out| {
                out.push_str(text);
                out.push('\n');
            });
        } else {
            if screen.prompt.is_some() {
                out.push_str(self.leave_prompt());
            }
            out.push_str(text);
            out.push('\n');
            if let Some(prompt) = screen.prompt.as_deref() {
                out.push_str(prompt);
            }
        }
        write_out(&out);
    }

    /// Shows `prompt` (replacing any prompt shown now) and keeps it until input is taken.
    pub fn prompt(&self, prompt: &str) {
        self.set_prompt(Some(prompt));
    }

    /// Takes the prompt away without printing anything (a draft being typed stays).
    pub fn clear_prompt(&self) {
        self.set_prompt(None);
    }

    fn set_prompt(&self, prompt: Option<&str>) {
        // The lock is held while writing, so that no other line comes between.
        let mut screen = self.screen.lock();
        if screen.prompt.as_deref() == prompt {
            return;
        }
        let mut out = String::new();
        if self.editing {
            screen.redraw(&mut out, |screen, _| {
                screen.prompt = prompt.map(str::to_string)
            });
        } else {
            if screen.prompt.is_some() {
                out.push_str(self.leave_prompt());
            }
            out.push_str(prompt.unwrap_or(""));
            screen.prompt = prompt.map(str::to_string);
        }
        write_out(&out);
    }

    /// With the editor: the lines drawn above the prompt for messages typed but not yet sent.
    /// Nothing to draw without it (the lines are shown as they are sent).
    pub fn queued(&self, lines: Vec<String>) {
        if !self.editing {
            return;
        }
        let mut out = String::new();
        self.screen
            .lock()
            .redraw(&mut out, |screen, _| screen.queued = lines);
        write_out(&out);
    }

    /// Ctrl-C: without the editor, the terminal echoed `^C` where the cursor was; that line is
    /// taken away (and the prompt that was on it redrawn), so that what is printed next does not
    /// share a line with `^C`. With it, nothing was echoed. Nothing to do in a pipe.
    pub fn after_interrupt(&self) {
        if !self.stdout_is_tty || self.editing {
            return;
        }
        let screen = self.screen.lock();
        write_out(&format!(
            "\r\x1b[2K{}",
            screen.prompt.as_deref().unwrap_or("")
        ));
    }

    /// The user's `line` was taken (to be sent, or as a command): the prompt is done. Echoes it
    /// after the prompt, each further line of it under the first, unless the terminal already
    /// shows it (stdin a terminal without the editor).
    pub fn input_taken(&self, line: &[u8]) {
        let echo = |screen: &mut Screen, out: &mut String| {
            if let Some(prompt) = screen.prompt.take()
                && self.echo_input
            {
                if self.editing {
                    out.push_str(&prompt);
                }
                sanitize_lines_into(out, line, width(&prompt));
                out.push('\n');
            }
        };
        let mut screen = self.screen.lock();
        let mut out = String::new();
        if self.editing {
            screen.redraw(&mut out, echo);
        } else {
            echo(&mut screen, &mut out);
        }
        write_out(&out);
    }

    /// The chat is over: the drawing is taken away (a draft not sent is printed as such, so
    /// nothing typed is lost from sight), nothing more is drawn, and the terminal's mode is
    /// restored.
    pub fn close(&self) {
        if !self.editing {
            return;
        }
        let mut screen = self.screen.lock();
        let mut out = String::new();
        screen.erase(&mut out);
        screen.closed = true;
        for queued in std::mem::take(&mut screen.queued) {
            out.push_str("Not sent: ");
            out.push_str(&queued);
            out.push('\n');
        }
        if !screen.editor.is_empty() {
            const LABEL: &str = "Draft not sent: ";
            out.push_str(LABEL);
            sanitize_lines_into(&mut out, screen.editor.draft().as_bytes(), LABEL.len());
            out.push('\n');
        }
        write_out(&out);
        restore_terminal();
    }

    /// Reads keys from `input` (stdin, in non-canonical mode) through the editor until the end
    /// of input, telling `typing` what the user does, and redrawing the draft after each read.
    pub fn edit(&self, mut input: impl Read, typing: &dyn Typing) {
        let tty = io::stdin().is_terminal();
        if tty && let Err(why) = enter_raw_mode() {
            write_out(&format!("Line editing may show keys twice ({why}).\n"));
        }
        let mut buf = [0u8; 4096];
        let mut width_asked: Option<Instant> = None;
        loop {
            // Asked now and then, since a terminal window can be resized; never under the
            // screen's lock, which every printing thread needs.
            if tty && width_asked.is_none_or(|at| at.elapsed() > Duration::from_secs(1)) {
                width_asked = Some(Instant::now());
                if let Some(columns) = terminal_width() {
                    self.screen.lock().width = columns;
                }
            }
            let n = match input.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            };
            for &b in &buf[..n] {
                let action = self.screen.lock().editor.byte(b);
                match action {
                    None => {}
                    Some(Action::Opened) => typing.draft(true),
                    Some(Action::Closed) => typing.draft(false),
                    Some(Action::Submit(text)) => {
                        if let Err(kept) = typing.submit(text) {
                            self.screen.lock().editor.restore(&kept);
                        }
                    }
                    Some(Action::EndOfInput) => return typing.end_of_input(),
                }
            }
            let mut out = String::new();
            self.screen.lock().redraw(&mut out, |_, _| {});
            write_out(&out);
        }
        typing.end_of_input();
    }

    /// Without the editor: reads messages from `input` a line at a time until its end, giving
    /// each to `each`: one line one message; or with [`Keys::multiline`], lines gathered until
    /// an empty line (and, with [`Keys::commands`], a first line starting with `/` but not `//`
    /// at once). The lines gathered when the input ends are the last message. An empty line
    /// typed at a terminal is no message (the prompt is shown again); piped, it is one.
    pub fn read_messages(&self, mut input: impl BufRead, mut each: impl FnMut(Vec<u8>)) {
        let keys = self.keys;
        let mut gathered: Option<Vec<u8>> = None;
        loop {
            let mut line = Vec::new();
            match input.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => trim_line_end(&mut line),
            }
            if !keys.multiline {
                if line.is_empty() && !self.echo_input {
                    self.reshow_prompt();
                } else {
                    each(line);
                }
                continue;
            }
            match gathered.as_mut() {
                None if line.is_empty() && !self.echo_input => self.reshow_prompt(),
                None if line.is_empty() => {}
                None if keys.commands && is_command(&line) => each(line),
                None => gathered = Some(line),
                Some(_) if line.is_empty() => each(gathered.take().unwrap_or_default()),
                Some(text) => {
                    text.push(b'\n');
                    text.extend_from_slice(&line);
                }
            }
        }
        if let Some(text) = gathered {
            each(text);
        }
    }

    /// The user pressed Enter on nothing at a terminal in line mode: the prompt is shown again
    /// on the new line.
    fn reshow_prompt(&self) {
        let screen = self.screen.lock();
        write_out(screen.prompt.as_deref().unwrap_or(""));
    }
}

impl Screen {
    /// Takes what is drawn away: back to the drawing's first row, and clear to the end of the
    /// screen.
    fn erase(&mut self, out: &mut String) {
        if let Some(rows) = self.drawn.take() {
            out.push('\r');
            if rows > 0 {
                out.push_str(&format!("\x1b[{rows}A"));
            }
            out.push_str("\x1b[J");
        }
    }

    /// Takes the drawing away, lets `change` print above it (into `out`) or change what is
    /// drawn, and draws it again: all in `out`, for one write.
    fn redraw(&mut self, out: &mut String, change: impl FnOnce(&mut Screen, &mut String)) {
        self.erase(out);
        change(self, out);
        self.draw(out);
    }

    /// Draws the queued lines, the prompt and the draft, if there is anything to draw.
    fn draw(&mut self, out: &mut String) {
        if self.closed
            || (self.prompt.is_none() && self.editor.is_empty() && self.queued.is_empty())
        {
            return;
        }
        let drawing = self.editor.draw(
            &self.queued,
            self.prompt.as_deref().unwrap_or(""),
            self.width,
        );
        out.push_str(&drawing.text);
        self.drawn = Some(drawing.cursor_row);
    }
}

/// The terminal mode saved when the editor took over: `stty -g`'s words, to give back to `stty`.
static SAVED_MODE: Mutex<Option<String>> = Mutex::new(None);

/// Runs `stty` on this process's stdin with `args`; its output, or why it failed.
fn stty(args: &[&str]) -> Result<String, String> {
    let output = Command::new("stty")
        .args(args)
        .stdin(Stdio::inherit())
        .stderr(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run stty: {e}"))?;
    if !output.status.success() {
        return Err(format!("stty {} failed", args.join(" ")));
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
}

/// The terminal's width in columns, if `stty` can tell it.
fn terminal_width() -> Option<usize> {
    let size = stty(&["size"]).ok()?;
    let columns = size.split_whitespace().nth(1)?.parse().ok()?;
    (columns > 0).then_some(columns)
}

/// Puts the terminal on stdin in non-canonical, no-echo mode with bracketed paste, saving the
/// mode to restore; a panic on the main or input thread restores it before it is reported.
/// Enter comes as CR (so a pasted CR LF is one line break), and Ctrl-Z and Ctrl-\ do nothing:
/// a stopped or dumped process would leave the terminal in this mode.
fn enter_raw_mode() -> Result<(), String> {
    let saved = stty(&["-g"])?;
    stty(&[
        "-icanon", "-echo", "-icrnl", "min", "1", "time", "0", "susp", "undef", "quit", "undef",
    ])?;
    *SAVED_MODE.lock() = Some(saved);
    write_out("\x1b[?2004h");
    let reported = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        // A worker's panic is caught and its session closed; the console goes on in its mode.
        let thread = std::thread::current();
        if matches!(thread.name(), Some("main" | "stdin" | "console")) {
            restore_terminal();
        }
        reported(info);
    }));
    Ok(())
}

/// Gives the terminal back the mode it had before the line editor; nothing to do if the editor
/// never ran (or the mode was restored already). Every way out of the program comes here.
pub fn restore_terminal() {
    if let Some(saved) = SAVED_MODE.lock().take() {
        write_out("\x1b[?2004l");
        let _ = stty(&[&saved]);
    }
}

/// Writes to stdout; a closed stdout (a pipe whose reader left) is not worth failing a chat for.
fn write_out(text: &str) {
    if text.is_empty() {
        return;
    }
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
