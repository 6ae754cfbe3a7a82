//! SIGTERM and SIGINT as a poll source (signal-hook-mio), for the binary's graceful shutdown.
//! signal-hook's handler only writes to a pipe; everything else happens in the reactor.

use std::io;

use mio::{Interest, Registry, Token};
use signal_hook::consts::{SIGINT, SIGTERM};

/// The shutdown signals, registered with the reactor.
pub(crate) struct Signals(signal_hook_mio::v1_0::Signals);

impl std::fmt::Debug for Signals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signals([SIGTERM, SIGINT])")
    }
}

impl Signals {
    pub(crate) fn register(registry: &Registry, token: Token) -> io::Result<Self> {
        let mut signals = signal_hook_mio::v1_0::Signals::new([SIGTERM, SIGINT])?;
        registry.register(&mut signals, token, Interest::READABLE)?;
        Ok(Signals(signals))
    }

    /// Signals delivered since the last call.
    pub(crate) fn pending(&mut self) -> Vec<i32> {
        self.0.pending().collect()
    }
}

/// A signal's conventional name, for log lines.
pub(crate) fn name(signal: i32) -> &'static str {
    match signal {
        SIGTERM => "SIGTERM",
        SIGINT => "SIGINT",
        _ => "signal",
    }
}
