//! The original OCaml program's line protocol, read and written as our [`Frame`]s.
//!
//! A message is `msg: ` and the text's lines, each ending in `\n`, then an empty line; the
//! receiver answers `ack: Message Received\n`. There is no handshake, no END (`end` travels as an
//! ordinary message) and no notices. Like [`crate::protocol`], this module only turns bytes into
//! frames and back. PROTOCOL.md, "The original line protocol", has the details.

use crate::protocol::{Frame, ProtocolError};

/// How every legacy message begins, and so how a server tells a legacy client from ours.
pub const MESSAGE_PREFIX: &[u8] = b"msg: ";
/// The receiver's answer to every message.
pub const ACK_LINE: &[u8] = b"ack: Message Received\n";
/// The message text that ends a chat.
const END_TEXT: &[u8] = b"end";
/// What the format adds to a text: the prefix, the newline ending its last line, the empty line.
pub const OVERHEAD: usize = MESSAGE_PREFIX.len() + 2;

/// Decodes the message or ACK at the front of `buf`, with the same contract as
/// [`crate::protocol::decode`].
///
/// `searched` is how many bytes of the front message earlier calls already looked through for
/// its end; the caller keeps it between calls (and zeroes it after each frame), so a message that
/// arrives a byte at a time is not scanned again from its start on every byte.
pub fn decode(
    buf: &[u8],
    max_message: usize,
    searched: &mut usize,
) -> Result<Option<(Frame, usize)>, ProtocolError> {
    let Some(body) = buf.strip_prefix(MESSAGE_PREFIX) else {
        return if buf.starts_with(ACK_LINE) {
            Ok(Some((Frame::Ack, ACK_LINE.len())))
        } else if MESSAGE_PREFIX.starts_with(buf) || ACK_LINE.starts_with(buf) {
            Ok(None)
        } else {
            Err(ProtocolError::BadLine)
        };
    };
    // The text ends where a line ending is followed by the empty line. An empty text is the
    // one case where that first line ending comes straight after the prefix.
    let from = searched.saturating_sub(1);
    let Some(at) = body[from..]
        .windows(2)
        .position(|pair| pair == b"\n\n")
        .map(|at| from + at)
    else {
        let text_so_far = body.len().saturating_sub(1);
        if text_so_far > max_message {
            return Err(ProtocolError::TextTooLong {
                len: text_so_far,
                max: max_message,
            });
        }
        *searched = body.len();
        return Ok(None);
    };
    *searched = 0;
    let text = &body[..at];
    if text.len() > max_message {
        return Err(ProtocolError::TextTooLong {
            len: text.len(),
            max: max_message,
        });
    }
    let frame = if text == END_TEXT {
        Frame::End
    } else {
        Frame::Message(text.to_vec())
    };
    Ok(Some((frame, MESSAGE_PREFIX.len() + at + 2)))
}

/// Why a text cannot travel as a legacy message, if it cannot: an empty line inside it, or a
/// newline at its end, would end it early. (A newline at its start is an empty first line, which
/// [`decode`] reads back whole, so an echo can return whatever it was sent.)
pub fn cannot_carry(text: &[u8]) -> Option<&'static str> {
    let breaks_early = text.windows(2).any(|pair| pair == b"\n\n") || text.ends_with(b"\n");
    breaks_early.then_some("the original line protocol cannot carry a message with an empty line")
}

/// Appends the legacy form of `frame` to `out`; false (nothing appended) for frames the format
/// has no form for, which a legacy peer is simply not sent.
///
/// Every way this side ends a chat (END, and the server's SHUTDOWN and KICKED) becomes the
/// message `end`, the only goodbye the original knows.
pub fn encode_into(frame: &Frame, out: &mut Vec<u8>) -> bool {
    match frame {
        Frame::Ack => out.extend_from_slice(ACK_LINE),
        Frame::Message(text) => encode_message_into(text, out),
        Frame::End | Frame::Shutdown | Frame::Kicked(_) => encode_message_into(END_TEXT, out),
        _ => return false,
    }
    true
}

/// Appends the legacy form of a message carrying `text` to `out`.
pub fn encode_message_into(text: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(MESSAGE_PREFIX);
    out.extend_from_slice(text);
    out.extend_from_slice(b"\n\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(mut wire: &[u8], max: usize) -> Result<Vec<Frame>, ProtocolError> {
        let mut frames = Vec::new();
        let mut searched = 0;
        while !wire.is_empty() {
            let Some((frame, used)) = decode(wire, max, &mut searched)? else {
                break;
            };
            frames.push(frame);
            wire = &wire[used..];
        }
        Ok(frames)
    }

    #[test]
    fn messages_acks_and_end_round_trip() {
        let frames = [
            Frame::Message(b"hello".to_vec()),
            Frame::Ack,
            Frame::Message(b"two\nlines".to_vec()),
            Frame::Message(Vec::new()),
            Frame::Message(b"bytes \0\xff stay".to_vec()),
            Frame::End,
        ];
        let mut wire = Vec::new();
        for frame in &frames {
            assert!(encode_into(frame, &mut wire));
        }
        assert!(wire.starts_with(b"msg: hello\n\nack: Message Received\nmsg: two\nlines\n\n"));
        assert!(wire.ends_with(b"msg: \n\nmsg: bytes \0\xff stay\n\nmsg: end\n\n"));
        assert_eq!(decode_all(&wire, 100).unwrap(), frames);
    }

    #[test]
    fn a_message_arriving_a_byte_at_a_time_is_decoded_once_whole() {
        let wire = b"msg: a\nb\n\nack: Message Received\n";
        let mut searched = 0;
        for end in 0..9 {
            assert_eq!(decode(&wire[..end], 100, &mut searched), Ok(None), "{end}");
        }
        assert_eq!(
            decode(&wire[..10], 100, &mut searched),
            Ok(Some((Frame::Message(b"a\nb".to_vec()), 10)))
        );
        assert_eq!(searched, 0);
        assert_eq!(decode(&wire[10..30], 100, &mut searched), Ok(None));
    }

    #[test]
    fn lines_that_break_the_format_and_long_texts_are_errors() {
        for bad in [
            &b"hello\n"[..],
            b"GET / HTTP/1.1\r\n",
            b"ack: ok\n",
            b"msg:x",
        ] {
            assert_eq!(
                decode(bad, 100, &mut 0),
                Err(ProtocolError::BadLine),
                "{bad:?}"
            );
        }
        let mut searched = 0;
        assert_eq!(decode(b"msg: 12345", 5, &mut searched), Ok(None));
        assert!(matches!(
            decode(b"msg: 123456\n", 5, &mut searched),
            Err(ProtocolError::TextTooLong { len: 6, max: 5 })
        ));
        assert!(matches!(
            decode(b"msg: 123456\n\n", 5, &mut 0),
            Err(ProtocolError::TextTooLong { len: 6, max: 5 })
        ));
    }

    #[test]
    fn texts_with_an_empty_line_cannot_be_carried() {
        for ok in [&b""[..], b"one", b"two\nlines", b"\r", b"\nb"] {
            assert_eq!(cannot_carry(ok), None, "{ok:?}");
            let mut wire = Vec::new();
            encode_into(&Frame::Message(ok.to_vec()), &mut wire);
            assert_eq!(
                decode_all(&wire, 100),
                Ok(vec![Frame::Message(ok.to_vec())])
            );
        }
        for bad in [&b"a\n\nb"[..], b"\n", b"a\n"] {
            assert!(cannot_carry(bad).is_some(), "{bad:?}");
        }
    }
}
