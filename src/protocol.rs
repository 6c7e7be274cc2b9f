//! The wire format: frames, their encoding and decoding, and the limits that bound them.
//!
//! A frame is a 5-byte header (a type byte, then the payload length as a big-endian `u32`) followed
//! by the payload. Decoding works on byte slices so that it can be tested (and fuzzed) without any
//! socket; [`crate::wire::FrameReader`] adds the buffering over any reader. See PROTOCOL.md for the
//! full specification.

use std::fmt;

/// The protocol version of a turn-by-turn chat, the one a client asks for by default.
pub const VERSION: u8 = 1;
/// Version 1 with free order (`client --duplex`): either side may send at any time, several
/// messages may be in flight, and each direction's ACKs follow its MESSAGEs in order. The frames
/// are the same; only the rules of §3.2 change (PROTOCOL.md, §3.9).
pub const DUPLEX_VERSION: u8 = 2;
/// Most messages a side may have sent and not yet seen acknowledged in a duplex chat, unless the
/// receiver allows more (`server --max-in-flight`).
pub const DEFAULT_MAX_IN_FLIGHT: usize = 32;
/// The first bytes of every HELLO payload, so that a stray connection is told apart from a client.
pub const MAGIC: &[u8; 4] = b"CSCP";
/// Bytes in a frame header: the type byte and the big-endian `u32` payload length.
pub const HEADER_LEN: usize = 5;
/// Largest payload of any frame other than MESSAGE (names, reasons, notices).
pub const MAX_CONTROL_PAYLOAD: usize = 1024;
/// Longest client or server name, in bytes; longer names are cut at a character boundary.
pub const MAX_NAME: usize = 64;
/// Default for `--max-message`.
pub const DEFAULT_MAX_MESSAGE: usize = 64 * 1024;

/// True for a byte that begins a frame of this version (the type bytes HELLO to PONG).
pub fn is_frame_type(byte: u8) -> bool {
    (kind::HELLO..=kind::LAST).contains(&byte)
}

/// Frame type bytes, as they appear on the wire.
mod kind {
    pub const HELLO: u8 = 0x01;
    pub const WELCOME: u8 = 0x02;
    pub const WAITING: u8 = 0x03;
    pub const MESSAGE: u8 = 0x04;
    pub const ACK: u8 = 0x05;
    pub const END: u8 = 0x06;
    pub const FULL: u8 = 0x07;
    pub const SHUTDOWN: u8 = 0x08;
    pub const ERROR: u8 = 0x09;
    pub const KICKED: u8 = 0x0A;
    pub const PING: u8 = 0x0B;
    pub const PONG: u8 = 0x0C;
    /// The highest type byte this version knows.
    pub const LAST: u8 = PONG;
}

/// One unit of the protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Client's first frame: protocol version, the largest message it accepts, its name.
    Hello {
        /// Protocol version the client speaks.
        version: u8,
        /// Largest MESSAGE payload the client accepts.
        max_message: u32,
        /// The user's chosen name, possibly empty.
        name: String,
    },
    /// Server's answer once a worker has taken the connection: the chat starts.
    Welcome {
        /// Number the server gave this session (`#N`).
        session_id: u32,
        /// Largest MESSAGE payload the server accepts.
        max_message: u32,
        /// The server's name, possibly empty.
        name: String,
    },
    /// Every worker is busy: the client waits in line at this position (1 = next).
    Waiting {
        /// Place in line, 1 being the next to be served.
        position: u32,
    },
    /// A chat message: any bytes at all.
    Message(Vec<u8>),
    /// The receiver got the last MESSAGE.
    Ack,
    /// The sender ends the chat.
    End,
    /// The server has no room for this connection; it closes it.
    Full,
    /// The server is going offline; it closes the connection.
    Shutdown,
    /// The sender saw a protocol violation (the reason says which) and closes the connection.
    Error(String),
    /// The server's operator ended this chat, with a reason.
    Kicked(String),
    /// Are you still there? Answered with PONG at any time, whoever's turn it is.
    Ping,
    /// The answer to PING.
    Pong,
}

impl Frame {
    /// The frame's name as PROTOCOL.md spells it, for error messages.
    pub fn name(&self) -> &'static str {
        match self {
            Frame::Hello { .. } => "HELLO",
            Frame::Welcome { .. } => "WELCOME",
            Frame::Waiting { .. } => "WAITING",
            Frame::Message(_) => "MESSAGE",
            Frame::Ack => "ACK",
            Frame::End => "END",
            Frame::Full => "FULL",
            Frame::Shutdown => "SHUTDOWN",
            Frame::Error(_) => "ERROR",
            Frame::Kicked(_) => "KICKED",
            Frame::Ping => "PING",
            Frame::Pong => "PONG",
        }
    }

    /// Appends the whole frame, header and payload, to `out`, so that it can go out in one write.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(&[0; HEADER_LEN]);
        let kind = match self {
            Frame::Hello {
                version,
                max_message,
                name,
            } => {
                out.extend_from_slice(MAGIC);
                out.push(*version);
                out.extend_from_slice(&max_message.to_be_bytes());
                out.extend_from_slice(clip_name(name).as_bytes());
                kind::HELLO
            }
            Frame::Welcome {
                session_id,
                max_message,
                name,
            } => {
                out.extend_from_slice(&session_id.to_be_bytes());
                out.extend_from_slice(&max_message.to_be_bytes());
                out.extend_from_slice(clip_name(name).as_bytes());
                kind::WELCOME
            }
            Frame::Waiting { position } => {
                out.extend_from_slice(&position.to_be_bytes());
                kind::WAITING
            }
            Frame::Message(bytes) => {
                out.extend_from_slice(bytes);
                kind::MESSAGE
            }
            Frame::Ack => kind::ACK,
            Frame::End => kind::END,
            Frame::Full => kind::FULL,
            Frame::Shutdown => kind::SHUTDOWN,
            Frame::Ping => kind::PING,
            Frame::Pong => kind::PONG,
            Frame::Error(reason) => {
                out.extend_from_slice(clip(reason, MAX_CONTROL_PAYLOAD).as_bytes());
                kind::ERROR
            }
            Frame::Kicked(reason) => {
                out.extend_from_slice(clip(reason, MAX_CONTROL_PAYLOAD).as_bytes());
                kind::KICKED
            }
        };
        // Payload lengths are bounded by the limits (and a Vec never exceeds isize::MAX), so
        // the cast only saturates for messages no peer would accept anyway.
        let len = u32::try_from(out.len() - start - HEADER_LEN).unwrap_or(u32::MAX);
        out[start] = kind;
        out[start + 1..start + HEADER_LEN].copy_from_slice(&len.to_be_bytes());
    }

    /// The whole frame as bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        out
    }
}

/// Appends a MESSAGE frame carrying `payload` to `out`: the bytes of
/// `Frame::Message(payload.to_vec()).encode_into(out)`, without the copy (an echo sends back the
/// bytes it was given).
pub fn encode_message_into(payload: &[u8], out: &mut Vec<u8>) {
    // As for every frame, the limits keep real lengths far below u32::MAX.
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    out.push(kind::MESSAGE);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(payload);
}

/// Cuts `text` to at most `max` bytes without splitting a character.
fn clip(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

fn clip_name(name: &str) -> &str {
    clip(name, MAX_NAME)
}

/// Why a sequence of bytes is not a valid frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProtocolError {
    /// The type byte names no frame.
    UnknownType(u8),
    /// The payload length is over the limit for this type of frame.
    TooLong {
        /// The frame's name.
        frame: &'static str,
        /// The length the header announced.
        len: u32,
        /// The most this side accepts.
        max: usize,
    },
    /// The payload does not have the layout its type requires.
    BadPayload {
        /// The frame's name.
        frame: &'static str,
        /// What is wrong with it.
        why: &'static str,
    },
    /// The connection closed in the middle of a frame.
    Truncated,
    /// A legacy peer sent a line that is neither part of a message nor the ACK line.
    BadLine,
    /// A legacy message's text grew past the limit before its end.
    TextTooLong {
        /// The bytes of text received so far.
        len: usize,
        /// The most this side accepts.
        max: usize,
    },
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtocolError::UnknownType(t) => write!(f, "unknown frame type 0x{t:02x}"),
            ProtocolError::TooLong { frame, len, max } => {
                write!(
                    f,
                    "{frame} frame of {len} bytes is over the limit of {max} bytes"
                )
            }
            ProtocolError::BadPayload { frame, why } => write!(f, "malformed {frame} frame: {why}"),
            ProtocolError::Truncated => write!(f, "the connection closed in the middle of a frame"),
            ProtocolError::TextTooLong { len, max } => write!(
                f,
                "a message of {len} bytes is over the limit of {max} bytes"
            ),
            ProtocolError::BadLine => write!(
                f,
                "a line that is neither `msg: ` text nor `ack: Message Received`"
            ),
        }
    }
}

impl std::error::Error for ProtocolError {}

/// Decodes the first frame in `buf`.
///
/// Returns `Ok(None)` when `buf` holds only the start of a frame, and `Ok(Some((frame, used)))`
/// with the number of bytes the frame took. The announced length is checked against the limit for
/// its type (`max_message` for MESSAGE) before the payload is looked at, so a hostile length is
/// refused without waiting for, or allocating, its bytes.
pub fn decode(buf: &[u8], max_message: usize) -> Result<Option<(Frame, usize)>, ProtocolError> {
    let Some(&kind) = buf.first() else {
        return Ok(None);
    };
    let (name, max) = name_and_limit(kind, max_message)?;
    let Some(len_bytes) = buf.get(1..HEADER_LEN) else {
        return Ok(None);
    };
    let len = be_u32(len_bytes);
    if len as usize > max {
        return Err(ProtocolError::TooLong {
            frame: name,
            len,
            max,
        });
    }
    let total = HEADER_LEN + len as usize;
    let Some(payload) = buf.get(HEADER_LEN..total) else {
        return Ok(None);
    };
    Ok(Some((decode_payload(kind, name, payload)?, total)))
}

/// The name of frame type `kind` and the largest payload it may announce.
fn name_and_limit(kind: u8, max_message: usize) -> Result<(&'static str, usize), ProtocolError> {
    Ok(match kind {
        kind::HELLO => ("HELLO", MAX_CONTROL_PAYLOAD),
        kind::WELCOME => ("WELCOME", MAX_CONTROL_PAYLOAD),
        kind::WAITING => ("WAITING", 4),
        kind::MESSAGE => ("MESSAGE", max_message),
        kind::ACK => ("ACK", 0),
        kind::END => ("END", 0),
        kind::FULL => ("FULL", 0),
        kind::SHUTDOWN => ("SHUTDOWN", 0),
        kind::ERROR => ("ERROR", MAX_CONTROL_PAYLOAD),
        kind::KICKED => ("KICKED", MAX_CONTROL_PAYLOAD),
        kind::PING => ("PING", 0),
        kind::PONG => ("PONG", 0),
        other => return Err(ProtocolError::UnknownType(other)),
    })
}

/// The frame of type `kind` (named `name`) whose whole payload is `payload`, within its limit.
fn decode_payload(kind: u8, name: &'static str, payload: &[u8]) -> Result<Frame, ProtocolError> {
    let bad = |why| ProtocolError::BadPayload { frame: name, why };
    Ok(match kind {
        kind::HELLO => {
            if payload.len() < 9 {
                return Err(bad("shorter than magic, version and limit"));
            }
            if &payload[..4] != MAGIC {
                return Err(bad("wrong magic (this is not a client_server_chat client)"));
            }
            Frame::Hello {
                version: payload[4],
                max_message: be_u32(&payload[5..9]),
                name: text(&payload[9..], name, MAX_NAME)?,
            }
        }
        kind::WELCOME => {
            if payload.len() < 8 {
                return Err(bad("shorter than session id and limit"));
            }
            Frame::Welcome {
                session_id: be_u32(&payload[..4]),
                max_message: be_u32(&payload[4..8]),
                name: text(&payload[8..], name, MAX_NAME)?,
            }
        }
        kind::WAITING => {
            if payload.len() != 4 {
                return Err(bad("position must be 4 bytes"));
            }
            Frame::Waiting {
                position: be_u32(payload),
            }
        }
        kind::MESSAGE => Frame::Message(payload.to_vec()),
        kind::ACK => Frame::Ack,
        kind::END => Frame::End,
        kind::FULL => Frame::Full,
        kind::SHUTDOWN => Frame::Shutdown,
        kind::PING => Frame::Ping,
        kind::PONG => Frame::Pong,
        kind::ERROR => Frame::Error(text(payload, name, MAX_CONTROL_PAYLOAD)?),
        _ => Frame::Kicked(text(payload, name, MAX_CONTROL_PAYLOAD)?),
    })
}

/// How many whole MESSAGE frames `buf` begins with, other frames among them counted past: the
/// messages a receiver holds that it has not yet acknowledged.
pub fn whole_messages(mut buf: &[u8]) -> usize {
    let mut count = 0;
    while buf.len() >= HEADER_LEN {
        let end = HEADER_LEN.saturating_add(be_u32(&buf[1..HEADER_LEN]) as usize);
        if buf.len() < end {
            break;
        }
        count += usize::from(buf[0] == kind::MESSAGE);
        buf = &buf[end..];
    }
    count
}

/// A big-endian `u32` from the first four bytes of `b`.
pub(crate) fn be_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn text(bytes: &[u8], frame: &'static str, max: usize) -> Result<String, ProtocolError> {
    if bytes.len() > max {
        return Err(ProtocolError::BadPayload {
            frame,
            why: "text field too long",
        });
    }
    String::from_utf8(bytes.to_vec()).map_err(|_| ProtocolError::BadPayload {
        frame,
        why: "text field is not UTF-8",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oversized_length_is_refused_from_the_header_alone() {
        let header = [kind::MESSAGE, 0xff, 0xff, 0xff, 0xff];
        assert_eq!(
            decode(&header, 1000),
            Err(ProtocolError::TooLong {
                frame: "MESSAGE",
                len: u32::MAX,
                max: 1000
            })
        );
        assert!(matches!(
            decode(&[kind::ACK, 0, 0, 0, 1, 0], 10),
            Err(ProtocolError::TooLong { .. })
        ));
    }

    #[test]
    fn unknown_type_is_an_error_and_a_cut_frame_is_not_yet_one() {
        assert_eq!(decode(b"hello", 10), Err(ProtocolError::UnknownType(b'h')));
        let wire = Frame::Message(b"abcdef".to_vec()).encode();
        assert_eq!(decode(&wire[..wire.len() - 2], 100), Ok(None));
    }

    #[test]
    fn hello_needs_the_magic() {
        let mut wire = Frame::Hello {
            version: 1,
            max_message: 5,
            name: String::new(),
        }
        .encode();
        wire[HEADER_LEN] = b'X';
        assert!(matches!(
            decode(&wire, 10),
            Err(ProtocolError::BadPayload { frame: "HELLO", .. })
        ));
    }

    #[test]
    fn long_names_are_clipped_on_a_character_boundary() {
        let name = "é".repeat(40); // 80 bytes
        let wire = Frame::Hello {
            version: 1,
            max_message: 5,
            name,
        }
        .encode();
        let (frame, _) = decode(&wire, 10).unwrap().unwrap();
        let Frame::Hello { name, .. } = frame else {
            panic!("not a hello")
        };
        assert_eq!(name, "é".repeat(32));
    }
}
