//! A transport for tests that plays a script instead of a socket: the peer's bytes come out in
//! the scripted read sizes, output is taken in the scripted write sizes, and the stream ends as
//! scripted. Used by the property tests of the WebSocket framing and the fuzz module's state
//! machine schedules.

use std::io::IoSlice;

use super::Transport;
use crate::sys::Errno;

/// How the peer's stream ends once its bytes are all read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum End {
    /// EOF (`Ok(0)`).
    Eof,
    /// A reset (`ECONNRESET`).
    Reset,
    /// Nothing more, not yet: `EAGAIN` for ever.
    Silent,
}

/// Input given out in pieces of the scripted sizes (cycled; 0: `EAGAIN`, `usize::MAX - 1`:
/// `EINTR`); output taken in the scripted amounts (cycled; 0: refused, `EAGAIN`).
#[derive(Debug)]
pub(crate) struct Scripted {
    pub input: Vec<u8>,
    pub at: usize,
    pub reads: Vec<usize>,
    read_turn: usize,
    pub writes: Vec<usize>,
    write_turn: usize,
    /// Everything the transport took, in order.
    pub output: Vec<u8>,
    /// `shutdown_write` was called.
    pub shut: bool,
    pub end: End,
    /// A send came after `shutdown_write` (a bug in the caller; checked by the tests).
    pub wrote_after_shut: bool,
}

/// A read size that means `EINTR`.
pub(crate) const INTERRUPT: usize = usize::MAX - 1;

impl Scripted {
    pub(crate) fn new(input: Vec<u8>, reads: Vec<usize>, writes: Vec<usize>) -> Scripted {
        Scripted {
            input,
            at: 0,
            reads,
            read_turn: 0,
            writes,
            write_turn: 0,
            output: Vec::new(),
            shut: false,
            end: End::Eof,
            wrote_after_shut: false,
        }
    }

    /// Bytes of input not read yet.
    pub(crate) fn unread(&self) -> usize {
        self.input.len() - self.at
    }
}

impl Transport for Scripted {
    fn recv(&mut self, buf: &mut [u8]) -> Result<usize, Errno> {
        if self.at == self.input.len() {
            return match self.end {
                End::Eof => Ok(0),
                End::Reset => Err(libc::ECONNRESET),
                End::Silent => Err(libc::EAGAIN),
            };
        }
        let want = self.reads[self.read_turn % self.reads.len()];
        self.read_turn += 1;
        match want {
            0 => return Err(libc::EAGAIN),
            INTERRUPT => return Err(libc::EINTR),
            _ => {}
        }
        let n = want.min(buf.len()).min(self.input.len() - self.at);
        buf[..n].copy_from_slice(&self.input[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }

    fn send(&mut self, buf: &[u8]) -> Result<usize, Errno> {
        self.send_vectored(&[IoSlice::new(buf)])
    }

    fn send2(&mut self, first: &[u8], second: &[u8]) -> Result<usize, Errno> {
        self.send_vectored(&[IoSlice::new(first), IoSlice::new(second)])
    }

    fn send_vectored(&mut self, bufs: &[IoSlice<'_>]) -> Result<usize, Errno> {
        self.wrote_after_shut |= self.shut;
        let mut budget = self.writes[self.write_turn % self.writes.len()];
        self.write_turn += 1;
        if budget == 0 {
            return Err(libc::EAGAIN);
        }
        let mut n = 0;
        for b in bufs {
            let take = budget.min(b.len());
            self.output.extend_from_slice(&b[..take]);
            n += take;
            budget -= take;
        }
        Ok(n)
    }

    fn shutdown_write(&mut self) {
        self.shut = true;
    }

    fn unacked(&self) -> usize {
        0
    }

    fn reset_on_close(&mut self) {}

    fn source(&mut self) -> &mut dyn mio::event::Source {
        unreachable!("never registered")
    }
}
