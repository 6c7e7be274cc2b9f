//! Text made fit to print: peer text defused (control characters and escape sequences lose their
//! power, valid UTF-8 stays as it is), and how many columns a text takes. A leaf: it knows nothing
//! of sockets or terminals.

use std::fmt::Write as _;

/// Renders bytes from a peer so that they cannot drive the terminal.
///
/// Valid UTF-8 is kept as it is, accents, CJK and emoji included. Control characters become
/// caret notation (`^[` for ESC, `^G` for BEL, `^J` for a newline), so an escape sequence loses
/// its ESC and shows as plain text; C1 controls and the Unicode direction overrides become
/// `\u{..}`; bytes that are not UTF-8 become `\xNN`. Tab is kept.
pub fn sanitize(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    sanitize_into(&mut out, bytes);
    out
}

/// [`sanitize`], appending to `out`.
pub fn sanitize_into(out: &mut String, bytes: &[u8]) {
    // Most chat lines are plain printable ASCII, which needs no look at characters.
    if bytes
        .iter()
        .all(|&b| b == b'\t' || (b' '..=b'~').contains(&b))
    {
        out.extend(bytes.iter().map(|&b| char::from(b)));
        return;
    }
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                c if is_harmless(c) => out.push(c),
                '\0'..='\x1f' => {
                    out.push('^');
                    out.push(char::from(c as u8 + 0x40));
                }
                '\x7f' => out.push_str("^?"),
                _ => {
                    let _ = write!(out, "\\u{{{:x}}}", c as u32);
                }
            }
        }
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
}

/// True for a character that may go to a terminal as it is: tab, and anything but the control
/// characters and the Unicode direction marks and overrides (which would reorder what follows).
pub fn is_harmless(c: char) -> bool {
    c == '\t'
        || !(c.is_control()
            || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{200e}' | '\u{200f}'))
}

/// [`sanitize`] for a text of several lines, appending to `out`: each line after the first starts
/// on a line of its own, `indent` columns in, so a multi-line message reads as one block under
/// the label before it instead of a run of `^J`.
pub fn sanitize_lines_into(out: &mut String, bytes: &[u8], indent: usize) {
    for (n, line) in bytes.split(|&b| b == b'\n').enumerate() {
        if n > 0 {
            out.push('\n');
            out.extend(std::iter::repeat_n(' ', indent));
        }
        sanitize_into(out, line);
    }
}

/// How many terminal columns `c` takes: 0 for combining marks and zero-width characters, 2 for
/// East Asian wide and fullwidth characters and most emoji, 1 for the rest.
///
/// Compiled from the Unicode tables' main ranges, not all of them (std has no such table and the
/// dependencies are fixed): a rare character may be measured one column off, which moves the
/// cursor, never the text.
pub fn char_width(c: char) -> usize {
    let c = c as u32;
    const ZERO: &[(u32, u32)] = &[
        (0x0300, 0x036F),
        (0x0483, 0x0489),
        (0x0591, 0x05BD),
        (0x0610, 0x061A),
        (0x064B, 0x065F),
        (0x0E31, 0x0E31),
        (0x0E34, 0x0E3A),
        (0x0E47, 0x0E4E),
        (0x1AB0, 0x1AFF),
        (0x1DC0, 0x1DFF),
        (0x200B, 0x200F),
        (0x20D0, 0x20FF),
        (0xFE00, 0xFE0F),
        (0xFE20, 0xFE2F),
        (0x1F3FB, 0x1F3FF),
        (0xE0100, 0xE01EF),
    ];
    const WIDE: &[(u32, u32)] = &[
        (0x1100, 0x115F),
        (0x231A, 0x231B),
        (0x2329, 0x232A),
        (0x23E9, 0x23EC),
        (0x25FD, 0x25FE),
        (0x2614, 0x2615),
        (0x2648, 0x2653),
        (0x26AA, 0x26AB),
        (0x26BD, 0x26BE),
        (0x26F2, 0x26F5),
        (0x2705, 0x2705),
        (0x270A, 0x270B),
        (0x2728, 0x2728),
        (0x274C, 0x274C),
        (0x2753, 0x2757),
        (0x2795, 0x2797),
        (0x2B1B, 0x2B1C),
        (0x2E80, 0x303E),
        (0x3041, 0x33FF),
        (0x3400, 0x4DBF),
        (0x4E00, 0x9FFF),
        (0xA000, 0xA4CF),
        (0xA960, 0xA97F),
        (0xAC00, 0xD7A3),
        (0xF900, 0xFAFF),
        (0xFE10, 0xFE19),
        (0xFE30, 0xFE6F),
        (0xFF00, 0xFF60),
        (0xFFE0, 0xFFE6),
        (0x1F004, 0x1F004),
        (0x1F0CF, 0x1F0CF),
        (0x1F18E, 0x1F18E),
        (0x1F191, 0x1F19A),
        (0x1F200, 0x1F251),
        (0x1F300, 0x1F64F),
        (0x1F680, 0x1F6FF),
        (0x1F7E0, 0x1F7EB),
        (0x1F90C, 0x1F9FF),
        (0x1FA70, 0x1FAFF),
        (0x20000, 0x3FFFD),
    ];
    let within = |ranges: &[(u32, u32)]| {
        ranges
            .binary_search_by(|&(lo, hi)| {
                if hi < c {
                    std::cmp::Ordering::Less
                } else if lo > c {
                    std::cmp::Ordering::Greater
                } else {
                    std::cmp::Ordering::Equal
                }
            })
            .is_ok()
    };
    if c < 0x300 {
        1
    } else if within(ZERO) {
        0
    } else if within(WIDE) {
        2
    } else {
        1
    }
}

/// How many terminal columns `text` takes on one line.
pub fn width(text: &str) -> usize {
    text.chars().map(char_width).sum()
}

#[cfg(test)]
mod tests {
    use super::{char_width, sanitize, sanitize_lines_into, width};

    #[test]
    fn escape_sequences_and_controls_lose_their_power_but_unicode_stays() {
        let shown = sanitize("\x1b]0;pwned\x07\x1b[2Jcafé 日本 🎉\u{9b}31m\x08\r\n".as_bytes());
        assert_eq!(shown, "^[]0;pwned^G^[[2Jcafé 日本 🎉\\u{9b}31m^H^M^J");
        assert!(!shown.chars().any(|c| c.is_control()));
    }

    #[test]
    fn invalid_utf8_and_nul_are_shown_visibly() {
        assert_eq!(sanitize(b"a\0b\xff\xfe"), "a^@b\\xff\\xfe");
    }

    #[test]
    fn a_message_of_several_lines_reads_as_an_indented_block_still_defused() {
        let mut out = String::from("Received: ");
        sanitize_lines_into(&mut out, b"one\ntwo \x1b[2J\n\nfour", 10);
        assert_eq!(
            out,
            "Received: one\n          two ^[[2J\n          \n          four"
        );
    }

    #[test]
    fn wide_characters_take_two_columns_and_combining_marks_none() {
        assert_eq!(width("abc"), 3);
        assert_eq!(width("日本"), 4);
        assert_eq!(width("e\u{301}"), 1);
        assert_eq!(width("🎉"), 2);
        assert_eq!(width("한"), 2);
        assert_eq!(char_width('\u{200b}'), 0);
        assert_eq!(char_width('é'), 1);
    }
}
