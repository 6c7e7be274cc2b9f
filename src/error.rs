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
    /// The host resolved to no address to listen on.
    NoAddress,
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
    /// Any other I/O failure, with what was being done.
    Io {
        /// What was being done, and to what (`setting up the connection to 127.0.0.1:1234`).
        doing: String,
        /// Why it failed.
        source: io::Error,
    },
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
            Error::NoAddress => write!(
                f,
                "cannot listen: the host resolved to no address; give an address such as 127.0.0.1"
            ),
            Error::Chat(ending) => write!(f, "{ending}"),
            Error::Io { doing, source } => write!(f, "{doing}: {source}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Resolve { source, .. }
            | Error::Bind { source, .. }
            | Error::Offline { source, .. }
            | Error::Io { source, .. } => Some(source),
            Error::Chat(Ending::Io(source)) => Some(source),
            Error::Usage(_) | Error::NoAddress | Error::Chat(_) => None,
        }
    }
}

impl Error {
    /// An I/O failure while `doing` something, for `map_err`.
    pub fn io(doing: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
        let doing = doing.into();
        move |source| Error::Io { doing, source }
    }
}
