//! Peer text made harmless to print: control characters and escape sequences lose their power,
//! valid UTF-8 stays as it is. A leaf: it knows nothing of sockets or terminals.

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
                '\t' => out.push('\t'),
                '\0'..='\x1f' => {
                    out.push('^');
                    out.push(char::from(c as u8 + 0x40));
                }
                '\x7f' => out.push_str("^?"),
                '\u{80}'..='\u{9f}'
                | '\u{202a}'..='\u{202e}'
                | '\u{2066}'..='\u{2069}'
                | '\u{200e}'
                | '\u{200f}' => {
                    let _ = write!(out, "\\u{{{:x}}}", c as u32);
                }
                c => out.push(c),
            }
        }
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::sanitize;

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
}
