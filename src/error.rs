//! The crate's error type and the exit code each error maps to.

use std::fmt;
use std::io;
use std::net::SocketAddr;

use crate::ending::Ending;

/// Everything that can stop the program before or instead of a normal end.
#[derive(Debug)]
pub enum Error {
    /// The command line is wrong; the message says how.
    Usage(String),
    /// The host name did not resolve.
    Resolve {
        /// What was asked for, as `host:port`.
        target: String,
        /// Why it failed.
        source: io::Error,
    },
    /// The server could not listen.
    Bind {
        /// The address it tried.
        addr: SocketAddr,
        /// Why it failed.
        source: io::Error,
    },
    /// No server answered at any address of the target.
    Offline {
        /// What was asked for, as `host:port`.
        target: String,
        /// The last connection error.
        source: io::Error,
    },
    /// The chat ended badly (refused, protocol error, connection lost).
    Chat(Ending),
    /// Any other I/O failure.
    Io(io::Error),
}

impl Error {
    /// The process exit code: 2 for usage errors, 1 for every runtime failure.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Usage(_) => 2,
            _ => 1,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Usage(message) => write!(f, "{message}"),
            Error::Resolve { target, source } => {
                write!(f, "cannot resolve {target}: {source}; check the host name")
            }
            Error::Bind { addr, source } if source.kind() == io::ErrorKind::AddrInUse => write!(
                f,
                "cannot listen on {addr}: the port is already in use; stop the other program or choose another port"
            ),
            Error::Bind { addr, source } => write!(
                f,
                "cannot listen on {addr}: {source}; check the address and your permissions"
            ),
            Error::Offline { target, source } => write!(
                f,
                "The requested server is offline/The chat has ended. ({target}: {source})"
            ),
            Error::Chat(ending) => write!(f, "{ending}"),
            Error::Io(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Error {
        Error::Io(e)
    }
}
