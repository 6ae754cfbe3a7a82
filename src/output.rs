//! The server's lines on stdout (ready, stats, stopped) and stderr (what a person watching wants
//! to know), written so that a reader that went away (`ricochet | head -n1`, a closed stderr)
//! never stops the server: a failed write is dropped, never a panic.

use std::io::Write;

/// Writes one line to stdout and flushes it; failure is ignored.
pub fn stdout_line(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Writes one line to stderr; failure is ignored.
pub fn stderr_line(line: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}
