//! Moving TLS records between a non-blocking socket and a buffered rustls session, for loadgen's
//! TLS client (public but hidden, like [`crate::sys`]). The server's transport runs rustls's
//! unbuffered API and its own TLS 1.3 records instead (`transport/tls_session.rs`).
//!
//! rustls's own `read_tls` reads at most 4 KiB per call, so a 64 KiB message would cost sixteen
//! `recv`s. Here the socket is read in gulps of [`GULP`] bytes into a per-thread scratch buffer
//! and fed to rustls from memory; what rustls cannot take yet (its plaintext buffer is full
//! because the caller's buffer is) waits in the connection's [`Inbound`] for the next read.
//!
//! Edge-triggered contract: [`read_plain`] returns fewer bytes than asked only when the socket is
//! drained (or at the peer's end of stream, which [`Inbound::eof`] reports), and `EAGAIN` only
//! when the socket had nothing at all.

use std::cell::RefCell;
use std::io::{self, IoSlice, Read, Write};
use std::os::fd::RawFd;

use libc::{EAGAIN, EINTR, EIO};
use rustls::ConnectionCommon;

use crate::sys::{self, Errno};

/// Bytes read from the socket per `recv`.
pub const GULP: usize = 64 * 1024;

/// The errno a TLS protocol failure (a bad record, a failed handshake) is reported as; rustls
/// has queued an alert, which [`read_plain`] already tried to send.
pub const TLS_FAILED: Errno = libc::EPROTO;

thread_local! {
    static SCRATCH: RefCell<crate::buffer::Aligned> = RefCell::new(crate::buffer::Aligned::zeroed(GULP));
}

/// Ciphertext read from the socket that rustls has not taken yet, and whether the socket's end
/// of stream (or the peer's close_notify) was seen.
#[derive(Debug, Default)]
pub struct Inbound {
    pending: Vec<u8>,
    /// The peer's end of stream: `read_plain` returns 0 once what came before it is read.
    pub eof: bool,
    /// The poll reported the peer's end: a short read is not the socket drained (the end may
    /// wait behind it, and no new edge would announce it), so read on until it shows.
    pub end_reported: bool,
}

/// The socket as `io::Write` for rustls's `write_tls`, through the direct syscalls.
#[derive(Debug)]
pub struct Fd(pub RawFd);

impl Read for Fd {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        sys::recv(self.0, buf).map_err(io::Error::from_raw_os_error)
    }
}

impl Write for Fd {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        sys::send(self.0, buf).map_err(io::Error::from_raw_os_error)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        sys::send_vectored(self.0, bufs).map_err(io::Error::from_raw_os_error)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn errno(e: &io::Error) -> Errno {
    e.raw_os_error().unwrap_or(EIO)
}

/// Writes records until none is left (`Ok(true)`) or the socket refuses (`Ok(false)`: a
/// writable edge will follow).
pub fn write_records<D>(conn: &mut ConnectionCommon<D>, fd: RawFd) -> Result<bool, Errno> {
    while conn.wants_write() {
        match conn.write_tls(&mut Fd(fd)) {
            Ok(_) => {}
            Err(e) if errno(&e) == EAGAIN => return Ok(false),
            Err(e) if errno(&e) == EINTR => {}
            Err(e) => return Err(errno(&e)),
        }
    }
    Ok(true)
}

/// Feeds `bytes` to the session until it has taken them all or cannot take more now; returns
/// how many it took. Records it produces (handshake messages, alerts) are written out.
fn feed<D>(conn: &mut ConnectionCommon<D>, fd: RawFd, bytes: &[u8]) -> Result<usize, Errno> {
    let mut rest = bytes;
    while !rest.is_empty() {
        match conn.read_tls(&mut rest) {
            Ok(0) => break, // after close_notify nothing more is taken
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Other => break, // its plaintext buffer is full
            Err(_) => return Err(fail(conn, fd)),
        }
        if conn.process_new_packets().is_err() {
            return Err(fail(conn, fd));
        }
    }
    write_records(conn, fd)?;
    Ok(bytes.len() - rest.len())
}

/// The session failed: send the alert rustls queued, report [`TLS_FAILED`].
fn fail<D>(conn: &mut ConnectionCommon<D>, fd: RawFd) -> Errno {
    let _ = write_records(conn, fd);
    TLS_FAILED
}

/// Moves decrypted bytes into `buf[*filled..]`; sets `eof` at the peer's close_notify or an
/// unclean end.
fn drain<D>(
    conn: &mut ConnectionCommon<D>,
    buf: &mut [u8],
    filled: &mut usize,
    eof: &mut bool,
) -> Result<(), Errno> {
    while *filled < buf.len() {
        match conn.reader().read(&mut buf[*filled..]) {
            Ok(0) => {
                *eof = true; // close_notify
                break;
            }
            Ok(n) => *filled += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                *eof = true; // a FIN without close_notify
                break;
            }
            Err(e) => return Err(errno(&e)),
        }
    }
    Ok(())
}

/// Reads plaintext into `buf`, as much as the socket's records allow (see the module's
/// contract). The handshake moves on as records arrive; its replies are written at once.
pub fn read_plain<D>(
    conn: &mut ConnectionCommon<D>,
    fd: RawFd,
    buf: &mut [u8],
    inbound: &mut Inbound,
) -> Result<usize, Errno> {
    let mut filled = 0;
    loop {
        drain(conn, buf, &mut filled, &mut inbound.eof)?;
        if filled == buf.len() || inbound.eof {
            return Ok(filled);
        }
        if !inbound.pending.is_empty() {
            let taken = feed(conn, fd, &inbound.pending)?;
            inbound.pending.drain(..taken);
            if inbound.pending.is_empty() {
                inbound.pending = Vec::new(); // idle connections keep no buffer
            }
            if taken > 0 {
                continue;
            }
            // rustls took nothing although its plaintext was drained: it has what it needs.
        }
        let gulp = SCRATCH.with(|scratch| -> Result<Gulp, Errno> {
            let mut scratch = scratch.borrow_mut();
            let n = loop {
                match sys::recv(fd, &mut scratch[..]) {
                    Ok(n) => break n,
                    Err(EINTR) => continue,
                    Err(EAGAIN) => return Ok(Gulp::Empty),
                    Err(e) => return Err(e),
                }
            };
            if n == 0 {
                // The socket's end: rustls learns of it from an empty read, and its reader
                // reports it (close_notify or not) at the top of the loop.
                let _ = conn.read_tls(&mut &[][..]);
                let _ = conn.process_new_packets();
                return Ok(Gulp::More);
            }
            let mut at = 0;
            while at < n && filled < buf.len() && !inbound.eof {
                let taken = feed(conn, fd, &scratch[at..n])?;
                at += taken;
                drain(conn, buf, &mut filled, &mut inbound.eof)?;
                if taken == 0 {
                    break;
                }
            }
            inbound.pending.extend_from_slice(&scratch[at..n]);
            Ok(if n == scratch.len() { Gulp::More } else { Gulp::Drained })
        })?;
        match gulp {
            Gulp::More => {}
            Gulp::Drained if inbound.end_reported => {}
            // A short read (the socket is drained), or nothing at all.
            Gulp::Drained | Gulp::Empty if filled > 0 || inbound.eof => return Ok(filled),
            Gulp::Drained | Gulp::Empty => return Err(EAGAIN),
        }
    }
}

/// What one `recv` into the scratch buffer gave.
enum Gulp {
    /// Nothing: the socket would block.
    Empty,
    /// Less than a full gulp: the socket is drained.
    Drained,
    /// A full gulp (there may be more), or the end of stream.
    More,
}
