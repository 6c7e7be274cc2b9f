//! The line editor: keystrokes in, a draft and what to draw for it out. It knows nothing of
//! sockets or of the terminal device (the caller reads the bytes and writes the drawing), so
//! tests drive it with byte sequences.

use crate::text::{char_width, is_harmless};

/// How Enter behaves.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Keys {
    /// Enter adds a line; Enter on an empty last line sends (the original program's way).
    pub multiline: bool,
    /// With `multiline`: a draft of one line beginning with `/` (a console command, not `//`)
    /// is taken at the first Enter.
    pub commands: bool,
}

/// What a keystroke asks of the front-end, beyond redrawing the draft.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// The first character of a draft was typed (or recalled): the draft is open.
    Opened,
    /// The draft was emptied without being sent.
    Closed,
    /// Enter: the draft, taken out of the editor. Give it back with [`Editor::restore`] if it
    /// cannot be sent.
    Submit(String),
    /// Ctrl-D on an empty draft: the user has nothing more to say.
    EndOfInput,
}

/// Where an escape sequence is in its reading.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Escape {
    None,
    /// After ESC.
    Started,
    /// After `ESC [`: the parameter bytes so far.
    Csi(String),
    /// After `ESC O`.
    Ss3,
}

/// The draft being typed, the lines sent before it, and the half-read keystroke.
#[derive(Debug)]
pub struct Editor {
    keys: Keys,
    draft: Vec<char>,
    /// Where the cursor is: an index into `draft`, never between a character and the
    /// combining marks that follow it.
    cursor: usize,
    /// Drafts sent in this run, oldest first.
    history: Vec<Vec<char>>,
    /// While Up/Down walk the history: which entry is shown, and the draft that was there.
    browsing: Option<(usize, Vec<char>)>,
    /// The bytes of a UTF-8 character not yet complete.
    partial: Vec<u8>,
    escape: Escape,
    /// Inside a bracketed paste: every byte is text, newlines included.
    pasting: bool,
    /// The last pasted byte was a CR, whose LF (if one follows) is the same line break.
    after_cr: bool,
}

/// A drawing of the prompt and the draft, made to be written at the start of the prompt's line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drawing {
    /// Text and cursor moves; after it, the terminal's cursor is where the editor's is.
    pub text: String,
    /// How many rows below the prompt's first row the cursor is left, so the caller can go
    /// back up to erase the drawing.
    pub cursor_row: usize,
}

/// True for an operator line that is a console command: `/` first, but not `//` (which sends a
/// line that begins with `/`).
pub fn is_command(line: &[u8]) -> bool {
    line.starts_with(b"/") && !line.starts_with(b"//")
}

/// How many history entries are kept.
const HISTORY: usize = 500;

impl Editor {
    /// An empty editor.
    pub fn new(keys: Keys) -> Editor {
        Editor {
            keys,
            draft: Vec::new(),
            cursor: 0,
            history: Vec::new(),
            browsing: None,
            partial: Vec::new(),
            escape: Escape::None,
            pasting: false,
            after_cr: false,
        }
    }

    /// True when nothing is typed.
    pub fn is_empty(&self) -> bool {
        self.draft.is_empty()
    }

    /// Takes one byte of input; returns what the front-end must do about it, if anything.
    pub fn byte(&mut self, b: u8) -> Option<Action> {
        let was_empty = self.draft.is_empty();
        let action = self.key(b);
        match action {
            None if was_empty && !self.draft.is_empty() => Some(Action::Opened),
            None if !was_empty && self.draft.is_empty() => Some(Action::Closed),
            action => action,
        }
    }

    /// A draft Enter took out that could not be sent: it comes back, cursor at its end.
    pub fn restore(&mut self, text: &str) {
        self.draft = text.chars().collect();
        self.cursor = self.draft.len();
    }

    fn key(&mut self, b: u8) -> Option<Action> {
        if self.escape != Escape::None {
            return self.escape_byte(b);
        }
        if !self.partial.is_empty() || b >= 0x80 {
            self.partial.push(b);
            match std::str::from_utf8(&self.partial) {
                Ok(text) => {
                    let c = text.chars().next();
                    self.partial.clear();
                    if let Some(c) = c {
                        self.insert(c);
                    }
                }
                // Not UTF-8, and will not become it: dropped; the byte that showed it is a key of
                // its own (an Enter after a stray lead byte is still Enter).
                Err(e) if e.error_len().is_some() || self.partial.len() >= 4 => {
                    let alone = self.partial.len() == 1;
                    self.partial.clear();
                    if !alone {
                        return self.key(b);
                    }
                }
                Err(_) => {}
            }
            return None;
        }
        if self.pasting {
            let after_cr = std::mem::replace(&mut self.after_cr, b == b'\r');
            match b {
                0x1b => self.escape = Escape::Started,
                // A CR LF pair is one line break: the CR makes it, the LF is dropped.
                b'\r' => self.insert('\n'),
                b'\n' if after_cr => {}
                b'\n' | b'\t' | b' '..=b'~' => self.insert(char::from(b)),
                _ => {}
            }
            return None;
        }
        match b {
            b'\r' | b'\n' => return self.enter(),
            0x04 if self.draft.is_empty() => return Some(Action::EndOfInput),
            0x04 => self.delete_forward(),
            0x7f | 0x08 => self.backspace(),
            0x01 => self.cursor = 0,
            0x05 => self.cursor = self.draft.len(),
            0x02 => self.left(),
            0x06 => self.right(),
            0x15 => self.clear(),
            0x17 => self.delete_word(),
            0x1b => self.escape = Escape::Started,
            b'\t' | b' '..=b'~' => self.insert(char::from(b)),
            _ => {}
        }
        None
    }

    fn escape_byte(&mut self, b: u8) -> Option<Action> {
        match &mut self.escape {
            Escape::Started => {
                self.escape = match b {
                    b'[' => Escape::Csi(String::new()),
                    b'O' => Escape::Ss3,
                    // A lone Escape, then a key (or Alt and a key): the key counts.
                    _ => {
                        self.escape = Escape::None;
                        return self.key(b);
                    }
                }
            }
            Escape::Ss3 => {
                self.escape = Escape::None;
                self.csi_final("", b);
            }
            Escape::Csi(_) if b < 0x20 => {
                // Not part of a sequence: the sequence is dropped, the key counts.
                self.escape = Escape::None;
                return self.key(b);
            }
            Escape::Csi(params) => {
                if (0x40..=0x7e).contains(&b) {
                    let params = std::mem::take(params);
                    self.escape = Escape::None;
                    self.csi_final(&params, b);
                } else if params.len() < 16 {
                    params.push(char::from(b));
                } else {
                    // Too long to be a key: it is dropped, and so is the rest of it.
                    self.escape = Escape::None;
                }
            }
            Escape::None => {}
        }
        None
    }

    /// A whole escape sequence: the parameters between `ESC [` and the final byte.
    fn csi_final(&mut self, params: &str, last: u8) {
        if self.pasting {
            if (params, last) == ("201", b'~') {
                self.pasting = false;
            }
            return;
        }
        match (params, last) {
            ("200", b'~') => self.pasting = true,
            (_, b'D') => self.left(),
            (_, b'C') => self.right(),
            (_, b'A') => self.history_back(),
            (_, b'B') => self.history_forward(),
            (_, b'H') | ("1" | "7", b'~') => self.cursor = 0,
            (_, b'F') | ("4" | "8", b'~') => self.cursor = self.draft.len(),
            ("3", b'~') => self.delete_forward(),
            _ => {}
        }
    }

    fn enter(&mut self) -> Option<Action> {
        if self.draft.is_empty() {
            return None;
        }
        let command = self.keys.commands
            && !self.draft.contains(&'\n')
            && is_command(self.draft().as_bytes());
        let sends = if self.keys.multiline {
            command || self.draft.last() == Some(&'\n')
        } else {
            self.draft.last() != Some(&'\\')
        };
        if !sends {
            // Multi-line: the line ends here. Otherwise a trailing `\` continues the message.
            if !self.keys.multiline {
                self.draft.pop();
            }
            self.cursor = self.draft.len();
            self.insert('\n');
            return None;
        }
        while self.draft.last() == Some(&'\n') {
            self.draft.pop();
        }
        if self.draft.is_empty() {
            // Nothing but line breaks: nothing to send.
            self.cursor = 0;
            return Some(Action::Closed);
        }
        let text: String = self.draft.drain(..).collect();
        self.cursor = 0;
        self.browsing = None;
        if self
            .history
            .last()
            .is_none_or(|last| !last.iter().copied().eq(text.chars()))
        {
            if self.history.len() == HISTORY {
                self.history.remove(0);
            }
            self.history.push(text.chars().collect());
        }
        Some(Action::Submit(text))
    }

    fn insert(&mut self, c: char) {
        // Controls and direction overrides would drive the terminal as the draft is drawn.
        if c != '\n' && !is_harmless(c) {
            return;
        }
        self.draft.insert(self.cursor, c);
        self.cursor += 1;
        // A combining mark typed before other marks of the same character stays with them.
        while self.cursor < self.draft.len() && char_width(self.draft[self.cursor]) == 0 {
            self.cursor += 1;
        }
    }

    /// Where the character before the cursor (with its combining marks) begins.
    fn previous_start(&self) -> usize {
        let mut at = self.cursor.saturating_sub(1);
        while at > 0 && char_width(self.draft[at]) == 0 {
            at -= 1;
        }
        at
    }

    /// Where the character after the cursor (with its combining marks) ends.
    fn next_end(&self) -> usize {
        let mut at = (self.cursor + 1).min(self.draft.len());
        while at < self.draft.len() && char_width(self.draft[at]) == 0 {
            at += 1;
        }
        at
    }

    fn left(&mut self) {
        self.cursor = self.previous_start();
    }

    fn right(&mut self) {
        self.cursor = self.next_end();
    }

    fn backspace(&mut self) {
        let from = self.previous_start();
        self.draft.drain(from..self.cursor);
        self.cursor = from;
    }

    fn delete_forward(&mut self) {
        let to = self.next_end();
        self.draft.drain(self.cursor..to);
    }

    fn clear(&mut self) {
        self.draft.clear();
        self.cursor = 0;
        self.browsing = None;
    }

    /// Ctrl-W: the word before the cursor, and the spaces after it.
    fn delete_word(&mut self) {
        let mut from = self.cursor;
        while from > 0 && self.draft[from - 1] == ' ' {
            from -= 1;
        }
        while from > 0 && !matches!(self.draft[from - 1], ' ' | '\n') {
            from -= 1;
        }
        self.draft.drain(from..self.cursor);
        self.cursor = from;
    }

    fn history_back(&mut self) {
        let shown = match &self.browsing {
            None if self.history.is_empty() => return,
            None => {
                self.browsing = Some((self.history.len() - 1, self.draft.clone()));
                self.history.len() - 1
            }
            Some((0, _)) => return,
            Some((at, _)) => at - 1,
        };
        if let Some((at, _)) = &mut self.browsing {
            *at = shown;
        }
        self.draft = self.history[shown].clone();
        self.cursor = self.draft.len();
    }

    fn history_forward(&mut self) {
        let Some((at, saved)) = self.browsing.take() else {
            return;
        };
        if at + 1 < self.history.len() {
            self.draft = self.history[at + 1].clone();
            self.browsing = Some((at + 1, saved));
        } else {
            self.draft = saved;
        }
        self.cursor = self.draft.len();
    }

    /// The draft as it stands.
    pub fn draft(&self) -> String {
        self.draft.iter().collect()
    }

    /// Draws the lines `above`, then `prompt` and the draft, for a terminal `width` columns
    /// wide, wrapping long lines itself (so the drawing never depends on how a terminal wraps)
    /// and starting each line of a multi-line draft under the draft's first character.
    pub fn draw(&self, above: &[String], prompt: &str, width: usize) -> Drawing {
        let mut layout = Layout {
            text: String::with_capacity(prompt.len() + self.draft.len() * 2 + 16),
            width: width.max(8),
            row: 0,
            col: 0,
        };
        for line in above {
            for c in line.chars() {
                if c == '\n' {
                    layout.new_row(0);
                } else {
                    layout.put(c);
                }
            }
            layout.new_row(0);
        }
        prompt.chars().for_each(|c| layout.put(c));
        let prompt_width = crate::text::width(prompt);
        let indent = if prompt_width <= layout.width / 2 {
            prompt_width
        } else {
            2
        };
        let mut cursor_at = None;
        for (at, &c) in self.draft.iter().enumerate() {
            if c != '\n' {
                // A character that goes to the next row takes the cursor with it.
                layout.fit(c);
            }
            if at == self.cursor {
                cursor_at = Some(layout.position());
            }
            if c == '\n' {
                layout.new_row(indent);
            } else {
                layout.put(c);
            }
        }
        if layout.col >= layout.width {
            // The last row is full: the cursor goes to the next, as the next character would.
            layout.new_row(0);
        }
        let (cursor_row, cursor_col) = cursor_at.unwrap_or_else(|| layout.position());
        let Layout {
            mut text, row, col, ..
        } = layout;
        if row > cursor_row {
            text.push_str(&format!("\x1b[{}A", row - cursor_row));
        }
        if (row, col) != (cursor_row, cursor_col) {
            text.push('\r');
            if cursor_col > 0 {
                text.push_str(&format!("\x1b[{cursor_col}C"));
            }
        }
        Drawing { text, cursor_row }
    }
}

/// Text laid out in rows of a terminal's width, and where the next character goes.
struct Layout {
    text: String,
    width: usize,
    row: usize,
    col: usize,
}

impl Layout {
    /// How many columns `c` takes: a tab shows as four spaces.
    fn columns(c: char) -> usize {
        if c == '\t' { 4 } else { char_width(c) }
    }

    /// Goes to the next row if `c` does not fit on this one.
    fn fit(&mut self, c: char) {
        if self.col + Layout::columns(c) > self.width {
            self.new_row(0);
        }
    }

    /// Puts `c` at the end, on the next row if it does not fit on this one.
    fn put(&mut self, c: char) {
        let w = Layout::columns(c);
        self.fit(c);
        if c == '\t' {
            self.text.push_str("    ");
        } else {
            self.text.push(c);
        }
        self.col += w;
    }

    /// Ends the row here; the next begins `indent` columns in.
    fn new_row(&mut self, indent: usize) {
        self.text.push_str("\r\n");
        self.text.extend(std::iter::repeat_n(' ', indent));
        self.row += 1;
        self.col = indent;
    }

    /// Where the next character goes: on the next row when this one is full.
    fn position(&self) -> (usize, usize) {
        if self.col >= self.width {
            (self.row + 1, 0)
        } else {
            (self.row, self.col)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Action, Editor, Keys};

    /// Feeds `bytes` and returns the actions they caused, in order.
    fn type_in(editor: &mut Editor, bytes: &[u8]) -> Vec<Action> {
        bytes.iter().filter_map(|&b| editor.byte(b)).collect()
    }

    fn submit(text: &str) -> Action {
        Action::Submit(text.to_string())
    }

    #[test]
    fn typing_opens_a_draft_and_enter_sends_it() {
        let mut e = Editor::new(Keys::default());
        assert_eq!(
            type_in(&mut e, b"hi there\r"),
            [Action::Opened, submit("hi there")]
        );
        assert!(e.is_empty());
        assert_eq!(type_in(&mut e, b"\r"), [], "an empty line is not sent");
    }

    #[test]
    fn backspace_ctrl_u_and_ctrl_w_edit_and_close_the_draft() {
        let mut e = Editor::new(Keys::default());
        type_in(&mut e, b"hello  big world\x17");
        assert_eq!(e.draft(), "hello  big ");
        type_in(&mut e, b"\x17\x7f\x7f");
        assert_eq!(e.draft(), "hello");
        assert_eq!(type_in(&mut e, b"\x15"), [Action::Closed]);
        assert_eq!(type_in(&mut e, b"x\x7f"), [Action::Opened, Action::Closed]);
    }

    #[test]
    fn arrows_home_and_end_move_the_cursor_for_insertion() {
        let mut e = Editor::new(Keys::default());
        type_in(&mut e, b"bd\x1b[Dc\x1b[Ha\x1b[Fe\x1b[D\x1b[D\x1b[C\x1b[3~");
        assert_eq!(e.draft(), "abcd");
        type_in(&mut e, b"\x1b[1~>\x1b[4~<\x1bOH[\x1bOF]");
        assert_eq!(e.draft(), "[>abcd<]");
    }

    #[test]
    fn up_and_down_walk_the_lines_sent_and_come_back_to_the_draft() {
        let mut e = Editor::new(Keys::default());
        type_in(&mut e, b"one\rtwo\rdraft");
        type_in(&mut e, b"\x1b[A");
        assert_eq!(e.draft(), "two");
        type_in(&mut e, b"\x1b[A\x1b[A");
        assert_eq!(e.draft(), "one");
        type_in(&mut e, b"\x1b[B");
        assert_eq!(e.draft(), "two");
        type_in(&mut e, b"\x1b[B");
        assert_eq!(e.draft(), "draft");
        assert_eq!(
            type_in(&mut e, b"\x15\x1b[A\r"),
            [Action::Closed, Action::Opened, submit("two")]
        );
    }

    #[test]
    fn ctrl_d_ends_input_only_on_an_empty_draft() {
        let mut e = Editor::new(Keys::default());
        assert_eq!(type_in(&mut e, b"ab\x1b[D\x04"), [Action::Opened]);
        assert_eq!(e.draft(), "a");
        assert_eq!(
            type_in(&mut e, b"\x15\x04"),
            [Action::Closed, Action::EndOfInput]
        );
    }

    #[test]
    fn utf8_split_across_reads_wide_characters_and_combining_marks_edit_whole() {
        let mut e = Editor::new(Keys::default());
        let bytes = "日本e\u{301}".as_bytes();
        for &b in bytes {
            e.byte(b);
        }
        assert_eq!(e.draft(), "日本e\u{301}");
        // One Backspace takes the accented e whole; Left steps over a wide character.
        type_in(&mut e, b"\x7f\x1b[Dx");
        assert_eq!(e.draft(), "日x本");
        type_in(&mut e, b"\xff\xfe!");
        assert_eq!(e.draft(), "日x!本", "bytes that are not UTF-8 are dropped");
    }

    #[test]
    fn a_bracketed_paste_is_one_multi_line_draft_and_a_trailing_backslash_continues() {
        let mut e = Editor::new(Keys::default());
        let actions = type_in(&mut e, b"\x1b[200~first\r\nsecond\rthird\n\n5th\n\x1b[201~");
        assert_eq!(actions, [Action::Opened]);
        assert_eq!(e.draft(), "first\nsecond\nthird\n\n5th\n");
        assert_eq!(
            type_in(&mut e, b"\r"),
            [submit("first\nsecond\nthird\n\n5th")]
        );
        assert_eq!(
            type_in(&mut e, b"a\\\rb\r"),
            [Action::Opened, submit("a\nb")]
        );
    }

    #[test]
    fn multiline_keys_send_on_an_empty_line_and_take_commands_at_once() {
        let keys = Keys {
            multiline: true,
            commands: true,
        };
        let mut e = Editor::new(keys);
        assert_eq!(type_in(&mut e, b"roses\rare red\r"), [Action::Opened]);
        assert_eq!(type_in(&mut e, b"\r"), [submit("roses\nare red")]);
        assert_eq!(
            type_in(&mut e, b"/list\r"),
            [Action::Opened, submit("/list")]
        );
        assert_eq!(type_in(&mut e, b"//x\r"), [Action::Opened]);
    }

    #[test]
    fn a_refused_draft_comes_back_whole() {
        let mut e = Editor::new(Keys::default());
        let actions = type_in(&mut e, b"for alice\r");
        assert_eq!(actions, [Action::Opened, submit("for alice")]);
        e.restore("for alice");
        type_in(&mut e, b"!");
        assert_eq!(e.draft(), "for alice!");
    }

    #[test]
    fn the_drawing_leaves_the_cursor_where_it_is_in_the_draft() {
        let mut e = Editor::new(Keys::default());
        type_in(&mut e, b"abc\x1b[D");
        let d = e.draw(&[], "Send: ", 80);
        assert_eq!(d.text, "Send: abc\r\x1b[8C");
        assert_eq!(d.cursor_row, 0);
    }

    #[test]
    fn long_drafts_wrap_by_columns_wide_characters_never_split() {
        let mut e = Editor::new(Keys::default());
        type_in(&mut e, "ab日本".as_bytes());
        // Prompt 4 columns + "ab" leaves 2 of 8: 日 fits, 本 goes to the next row.
        let d = e.draw(&[], "> : ", 8);
        assert_eq!(d.text, "> : ab日\r\n本");
        assert_eq!(d.cursor_row, 1);
        // A full last row puts the cursor on the next one.
        let mut e = Editor::new(Keys::default());
        type_in(&mut e, b"abcd");
        let d = e.draw(&[], "> : ", 8);
        assert_eq!(d.text, "> : abcd\r\n");
        assert_eq!(d.cursor_row, 1);
    }

    #[test]
    fn a_multi_line_draft_is_drawn_under_its_first_character() {
        let mut e = Editor::new(Keys::default());
        type_in(&mut e, b"\x1b[200~one\ntwo\x1b[201~\x1b[A");
        type_in(&mut e, b"\x1b[H");
        let d = e.draw(&[], "Send: ", 80);
        assert_eq!(d.text, "Send: one\r\n      two\x1b[1A\r\x1b[6C");
        assert_eq!(d.cursor_row, 0);
    }

    #[test]
    fn lines_above_the_prompt_count_in_the_rows_to_go_back_up() {
        let mut e = Editor::new(Keys::default());
        type_in(&mut e, b"x");
        let d = e.draw(
            &["Queued: a".to_string(), "0123456789".to_string()],
            "> ",
            8,
        );
        assert_eq!(d.text, "Queued: \r\na\r\n01234567\r\n89\r\n> x");
        assert_eq!(d.cursor_row, 4);
    }

    #[test]
    fn a_broken_or_lone_prefix_never_eats_the_key_after_it() {
        let mut e = Editor::new(Keys::default());
        assert_eq!(type_in(&mut e, b"hi\xc3\r"), [Action::Opened, submit("hi")]);
        assert_eq!(
            type_in(&mut e, b"a\x1bb\x1b[\r"),
            [Action::Opened, submit("ab")]
        );
        // A paste of nothing but line breaks, and controls in a paste, send nothing.
        let actions = type_in(&mut e, b"\x1b[200~\r\n\x07\r\x1b[201~\r");
        assert_eq!(actions, [Action::Opened, Action::Closed]);
        type_in(&mut e, "x\u{202e}\u{9b}y".as_bytes());
        assert_eq!(e.draft(), "xy");
    }

    #[test]
    fn the_cursor_moves_with_a_wide_character_that_wraps_and_lines_above_may_hold_breaks() {
        let mut e = Editor::new(Keys::default());
        type_in(&mut e, "abc日".as_bytes());
        type_in(&mut e, b"\x1b[D");
        // `> : abc` fills 7 of 8 columns: 日 and the cursor on it go to the next row.
        let d = e.draw(&[], "> : ", 8);
        assert_eq!(d.text, "> : abc\r\n日\r");
        assert_eq!(d.cursor_row, 1);
        let d = e.draw(&["one\n  two".to_string()], "> ", 80);
        assert!(d.text.starts_with("one\r\n  two\r\n> "), "{:?}", d.text);
        assert_eq!(d.cursor_row, 2);
    }
}
