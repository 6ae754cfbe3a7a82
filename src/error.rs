//! The library's error type. Peer behaviour (resets, EOF, `WouldBlock`) is never an error here:
//! only what stops the server from starting or running is.

use std::io;
use std::path::PathBuf;

/// Why the server could not start or keep running.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration was rejected before anything was bound.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A listener could not be set up (address in use, permission denied, ...).
    #[error("cannot listen on {proto} {addr}: {source}")]
    Bind {
        /// `tcp`, `udp` or `unix`.
        proto: &'static str,
        /// The address as given.
        addr: String,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
    /// A Unix socket path cannot be used, for a reason that is not an OS error.
    #[error("cannot listen on unix {}: {reason}", path.display())]
    UnixPath {
        /// The path as given.
        path: PathBuf,
        /// Why it was refused.
        reason: String,
    },
    /// Any other OS failure, with what was being done.
    #[error("{context}: {source}")]
    Io {
        /// What the server was doing.
        context: &'static str,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
}

impl Error {
    pub(crate) fn io(context: &'static str) -> impl FnOnce(io::Error) -> Error {
        move |source| Error::Io { context, source }
    }
}

/// The library's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
