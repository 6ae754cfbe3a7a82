//! The library's error type. Peer behaviour (resets, EOF, `WouldBlock`) is never an error here:
//! only what stops the server from starting or running is.
//!
//! Each message is whole on its own line: the OS error is part of the message, and so it is not
//! also offered as the error's `source()` (a chain printer would say it twice).

use std::io;
use std::path::PathBuf;

/// Why the server could not start or keep running.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration was rejected before anything was bound.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A listener could not be set up (address in use, permission denied, ...).
    #[error("cannot listen on {proto} {addr}: {cause}")]
    Bind {
        /// The listener's protocol (`tcp`, `udp`, `unix`, `chat`, ..., or `metrics`).
        proto: &'static str,
        /// The address as given.
        addr: String,
        /// What the OS said.
        cause: io::Error,
    },
    /// A Unix socket path cannot be used, for a reason that is not an OS error.
    #[error("cannot listen on unix {}: {reason}", path.display())]
    UnixPath {
        /// The path as given.
        path: PathBuf,
        /// Why it was refused.
        reason: String,
    },
    /// The TLS identity could not be loaded or made (a missing or bad PEM file, a key that does
    /// not fit the certificate).
    #[error("{0}")]
    Tls(String),
    /// A change to a running server was refused (see [`crate::Controller`]); nothing changed.
    #[error("{0}")]
    Control(String),
    /// Any other OS failure, with what was being done.
    #[error("{context}: {cause}")]
    Io {
        /// What the server was doing.
        context: &'static str,
        /// What the OS said.
        cause: io::Error,
    },
}

impl Error {
    pub(crate) fn io(context: &'static str) -> impl FnOnce(io::Error) -> Error {
        move |cause| Error::Io { context, cause }
    }
}

/// The library's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
