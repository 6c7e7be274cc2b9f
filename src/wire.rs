//! The wire as a session reads it: which protocol a connection speaks, and a buffered reader
//! that hands out [`Frame`]s in that protocol, from this crate's frames or the original line
//! protocol.

use std::fmt;
use std::io::{self, Read};

use crate::legacy;
use crate::protocol::{Frame, HEADER_LEN, ProtocolError, be_u32, decode, is_frame_type};

/// The two protocols a connection may speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// This crate's frames, opened by HELLO.
    Frames,
    /// The original OCaml program's lines (see [`crate::legacy`]).
    Legacy,
}

/// What a server makes of a connection's first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opening {
    /// Too few bytes yet to tell.
    Undecided,
    /// The client speaks this protocol.
    Speaks(Dialect),
    /// Neither protocol begins this way (someone typing into netcat, a browser).
    Stranger,
}

/// Tells the protocol of a new connection from its first bytes: a frame type byte means ours
/// (a frame other than HELLO then gets the usual ERROR), `msg: ` means the original's.
pub fn identify(first: &[u8]) -> Opening {
    match first.first() {
        None => Opening::Undecided,
        Some(&first) if is_frame_type(first) => Opening::Speaks(Dialect::Frames),
        Some(_) if first.starts_with(legacy::MESSAGE_PREFIX) => Opening::Speaks(Dialect::Legacy),
        Some(_) if legacy::MESSAGE_PREFIX.starts_with(first) => Opening::Undecided,
        Some(_) => Opening::Stranger,
    }
}

/// What went wrong while reading a frame.
#[derive(Debug)]
pub enum ReadError {
    /// The peer closed the connection cleanly, between frames.
    Closed,
    /// The bytes received are not a valid frame.
    Protocol(ProtocolError),
    /// The underlying reader failed (including a read timeout).
    Io(io::Error),
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadError::Closed => write!(f, "the connection was closed"),
            ReadError::Protocol(e) => e.fmt(f),
            ReadError::Io(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for ReadError {}

/// Buffers bytes from a reader and hands them out as frames.
///
/// One `read` call usually brings a whole frame (often more than one: an ACK and the reply that
/// follows it), so the buffer saves system calls as well as handling frames split across reads.
#[derive(Debug)]
pub struct FrameReader {
    /// Bytes `start..end` are read and not yet handed out; the rest is room for the next read,
    /// kept between reads so that it is not cleared again each time.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    max_message: usize,
    dialect: Dialect,
    /// For a legacy message: how much of it has been searched for its end already.
    searched: usize,
}

/// The least a read asks for: a 4 KiB message and the frame after it come in one `read`.
const READ_CHUNK: usize = 16 * 1024;

impl FrameReader {
    /// A reader that accepts MESSAGE payloads of at most `max_message` bytes.
    pub fn new(max_message: usize) -> FrameReader {
        FrameReader {
            buf: Vec::new(),
            start: 0,
            end: 0,
            max_message,
            dialect: Dialect::Frames,
            searched: 0,
        }
    }

    /// Reads `dialect` from now on (a server learns it from the first bytes).
    pub fn set_dialect(&mut self, dialect: Dialect) {
        self.dialect = dialect;
    }

    /// Takes `bytes` as if they had just been read.
    pub fn push(&mut self, bytes: &[u8]) {
        self.compact();
        self.buf.truncate(self.end);
        self.buf.extend_from_slice(bytes);
        self.end = self.buf.len();
    }

    /// Moves the unread bytes to the front of the buffer.
    fn compact(&mut self) {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
    }

    /// The protocol being read.
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// The bytes read and not yet handed out as frames.
    pub fn buffered(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// True when part of a frame (or a whole one) has been read but not yet returned.
    pub fn has_buffered(&self) -> bool {
        self.start < self.end
    }

    /// How many whole MESSAGE frames are read and not yet handed out (none in the line
    /// protocol, which is never duplex).
    pub fn buffered_messages(&self) -> usize {
        match self.dialect {
            Dialect::Frames => crate::protocol::whole_messages(self.buffered()),
            Dialect::Legacy => 0,
        }
    }

    /// Returns the next frame already in the buffer, if there is a whole one.
    pub fn next_buffered(&mut self) -> Result<Option<Frame>, ProtocolError> {
        let pending = &self.buf[self.start..self.end];
        let decoded = match self.dialect {
            Dialect::Frames => decode(pending, self.max_message),
            Dialect::Legacy => legacy::decode(pending, self.max_message, &mut self.searched),
        };
        match decoded? {
            Some((frame, used)) => {
                self.start += used;
                if self.start == self.end {
                    self.start = 0;
                    self.end = 0;
                }
                Ok(Some(frame))
            }
            None => Ok(None),
        }
    }

    /// Reads once from `source` into the buffer; returns how many bytes came (0 at end of stream).
    ///
    /// The buffer grows only as far as the frame being read needs: at most a header plus the
    /// payload limit, and one read beyond it, since [`decode`] refuses longer lengths first
    /// (and the legacy decoder a longer text).
    pub fn fill(&mut self, source: &mut impl Read) -> io::Result<usize> {
        self.compact();
        let want = match self.dialect {
            Dialect::Frames => self
                .bytes_wanted()
                .max(READ_CHUNK)
                .min(HEADER_LEN + self.max_message),
            // A legacy message says nothing of its length: read in chunks, bounded all the
            // same, since the decoder refuses a text that grows past the limit.
            Dialect::Legacy => READ_CHUNK.min(legacy::OVERHEAD + self.max_message),
        };
        if self.buf.len() < self.end + want {
            self.buf.resize(self.end + want, 0);
        }
        let got = source.read(&mut self.buf[self.end..self.end + want])?;
        self.end += got;
        Ok(got)
    }

    /// How many more bytes complete the frame at the front of the buffer (the rest of the header
    /// when that is not complete yet).
    fn bytes_wanted(&self) -> usize {
        let pending = self.buffered();
        match pending.get(1..HEADER_LEN) {
            Some(l) => {
                let len = be_u32(l) as usize;
                (HEADER_LEN + len).saturating_sub(pending.len())
            }
            None => HEADER_LEN - pending.len(),
        }
    }

    /// Reads until a whole frame is available and returns it.
    pub fn read_frame(&mut self, source: &mut impl Read) -> Result<Frame, ReadError> {
        loop {
            if let Some(frame) = self.next_buffered().map_err(ReadError::Protocol)? {
                return Ok(frame);
            }
            match self.fill(source) {
                Ok(0) if self.has_buffered() => {
                    return Err(ReadError::Protocol(ProtocolError::Truncated));
                }
                Ok(0) => return Err(ReadError::Closed),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(ReadError::Io(e)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_truncated_frame_is_an_error_and_a_clean_close_is_not() {
        let wire = Frame::Message(b"abcdef".to_vec()).encode();
        let mut cut = &wire[..wire.len() - 2];
        let mut reader = FrameReader::new(100);
        assert!(matches!(
            reader.read_frame(&mut cut),
            Err(ReadError::Protocol(ProtocolError::Truncated))
        ));
        let mut whole = &wire[..];
        let mut reader = FrameReader::new(100);
        assert_eq!(
            reader.read_frame(&mut whole).unwrap(),
            Frame::Message(b"abcdef".to_vec())
        );
        assert!(matches!(
            reader.read_frame(&mut whole),
            Err(ReadError::Closed)
        ));
    }
}
