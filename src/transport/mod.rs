//! The transport layer: what a behaviour (echo, chat) reads from and writes to, so that the byte
//! logic never touches a file descriptor. A TLS session or a fault shaper wraps a stream by
//! implementing [`Transport`]; the behaviours stay as they are.
//!
//! Results are byte counts or raw errnos, as in [`crate::sys`]: `EAGAIN` means "would block"
//! (a readiness edge follows), `EINTR` "try again", anything else a dead connection. A transport
//! that holds bytes of its own (TLS records not yet written, delayed fault output) says so in
//! [`Transport::has_buffered`], so that a close or a drain waits for them.
//!
//! [`Plain`] is the accepted socket itself: its calls are the raw syscalls, inlined, so the echo
//! fast path costs what it cost before the layer existed. [`faulty::Faulty`] wraps a transport
//! with a stream fault plan.

/// The three write methods of a transport that writes a list of parts at once, through its
/// method `$write(&mut self, &[&[u8]])`.
macro_rules! write_by_parts {
    ($write:ident) => {
        fn send(&mut self, buf: &[u8]) -> Result<usize, Errno> {
            self.$write(&[buf])
        }

        fn send2(&mut self, first: &[u8], second: &[u8]) -> Result<usize, Errno> {
            self.$write(&[first, second])
        }

        fn send_vectored(&mut self, bufs: &[IoSlice<'_>]) -> Result<usize, Errno> {
            let parts: Vec<&[u8]> = bufs.iter().map(|b| &**b).collect();
            self.$write(&parts)
        }
    };
}
pub(crate) use write_by_parts;

#[cfg(test)]
pub(crate) mod scripted;
pub(crate) mod tls_session;
pub(crate) mod ws;

use std::io::IoSlice;
use std::net::Shutdown;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};

use mio::unix::SourceFd;

use socket2::SockRef;

use crate::sys::{self, Errno};

/// An accepted stream socket.
#[derive(Debug)]
pub(crate) enum Stream {
    Tcp(mio::net::TcpStream),
    Unix(mio::net::UnixStream),
}

impl Stream {
    pub(crate) fn sock(&self) -> SockRef<'_> {
        match self {
            Stream::Tcp(s) => SockRef::from(s),
            Stream::Unix(s) => SockRef::from(s),
        }
    }

    /// Sends our FIN (used for connections refused at accept, which never get a transport).
    pub(crate) fn shutdown_write(&self) {
        let _ = self.sock().shutdown(Shutdown::Write);
    }
}

/// A byte stream under a behaviour.
pub(crate) trait Transport {
    /// Reads into `buf`; `Ok(0)` is the peer's EOF.
    fn recv(&mut self, buf: &mut [u8]) -> Result<usize, Errno>;
    /// Writes from `buf`; returns how many bytes were taken.
    fn send(&mut self, buf: &[u8]) -> Result<usize, Errno>;
    /// Writes `first` then `second` in one go (the batched sendall of pending + new).
    fn send2(&mut self, first: &[u8], second: &[u8]) -> Result<usize, Errno>;
    /// Writes the slices in order, in one go where the transport can.
    fn send_vectored(&mut self, bufs: &[IoSlice<'_>]) -> Result<usize, Errno>;
    /// Sends our end-of-stream (TCP: FIN). Idempotent.
    fn shutdown_write(&mut self);
    /// Whether the transport still holds output of its own that must go out before a close.
    fn has_buffered(&self) -> bool {
        false
    }
    /// Whether a handshake (TLS) is still going on: until it ends the transport takes no output
    /// (a send is `EAGAIN`, and no writable edge announces the end: the behaviour looks again
    /// after its reads), and a fault plan waits before it acts.
    #[inline(always)]
    fn is_handshaking(&self) -> bool {
        false
    }
    /// Whether a read shorter than asked means the socket is drained (a new edge will come). A
    /// transport that read the peer's end of stream along with data says no: read again.
    #[inline(always)]
    fn short_read_drains(&self) -> bool {
        true
    }
    /// Whether the transport takes whole WebSocket frames (a chat member over WebSocket): the
    /// behaviour writes its lines framed ([`crate::websocket::frame_lines`]), not as they are.
    fn frames_lines(&self) -> bool {
        false
    }
    /// Bytes of its own the transport may hold unsent (TLS records): the behaviour keeps that
    /// much of its cap free for them.
    #[inline(always)]
    fn reserve(&self) -> usize {
        0
    }
    /// The cap on an echo's pending output over this transport, given the configured one
    /// (WebSocket echo: at least one whole message, so a client that writes a message whole
    /// before reading gets it back).
    #[inline(always)]
    fn cap(&self, cap: usize) -> usize {
        cap
    }
    /// The WebSocket upgrade above this transport is done (its answer written): a fault plan
    /// here starts shaping and counting now.
    #[inline(always)]
    fn upgraded(&mut self) {}
    /// Bytes written but not yet acknowledged by the peer (the kernel's send queue).
    fn unacked(&self) -> usize;
    /// Makes the coming close a reset (TCP: RST instead of FIN).
    fn reset_on_close(&mut self);
    /// The poll reported the peer's end of stream (EPOLLRDHUP). A transport that reads ahead of
    /// what it returns (TLS) must from now on read until the end shows instead of taking a short
    /// read as drained: no new edge announces an end that came with the last bytes.
    #[inline(always)]
    fn note_read_closed(&mut self) {}
    /// The socket, for registration with the poll.
    fn source(&mut self) -> &mut dyn mio::event::Source;
}

/// The socket under a behaviour other than the plain echo: the plain socket, TLS on it, or
/// WebSocket framing on either (boxed: a session is large, and idle plain connections must stay
/// small).
#[derive(Debug)]
pub(crate) enum Wire {
    Plain(Plain),
    Tls(Box<tls_session::Tls>),
    Ws(Box<ws::Ws<Wire>>),
}

impl Wire {
    /// The TLS session, if this wire has one.
    pub(crate) fn tls_mut(&mut self) -> Option<&mut tls_session::Tls> {
        match self {
            Wire::Tls(tls) => Some(tls),
            Wire::Plain(_) => None,
            Wire::Ws(ws) => ws.inner_mut().tls_mut(),
        }
    }

    /// The WebSocket framing, if this wire has it.
    pub(crate) fn ws_mut(&mut self) -> Option<&mut dyn ws::WsState> {
        match self {
            Wire::Ws(ws) => Some(&mut **ws),
            _ => None,
        }
    }
}

/// What a writable edge asks of a transport before its behaviour writes: the output it holds
/// itself (TLS records, WebSocket control frames), lowest layer first.
pub(crate) trait OwnOutput {
    fn write_own(&mut self) -> Result<(), Errno>;
}

impl OwnOutput for Wire {
    fn write_own(&mut self) -> Result<(), Errno> {
        match self {
            Wire::Tls(tls) => tls.on_writable_edge(),
            Wire::Plain(_) => Ok(()),
            Wire::Ws(ws) => ws.write_own(),
        }
    }
}

impl OwnOutput for ws::Ws<Wire> {
    #[inline]
    fn write_own(&mut self) -> Result<(), Errno> {
        self.inner_mut().write_own()?;
        ws::WsState::on_writable_edge(self)
    }
}

macro_rules! wire {
    ($self:ident, $io:ident => $e:expr) => {
        match $self {
            Wire::Plain($io) => $e,
            Wire::Tls($io) => $e,
            Wire::Ws($io) => $e,
        }
    };
}

impl Transport for Wire {
    fn recv(&mut self, buf: &mut [u8]) -> Result<usize, Errno> {
        wire!(self, io => io.recv(buf))
    }

    fn send(&mut self, buf: &[u8]) -> Result<usize, Errno> {
        wire!(self, io => io.send(buf))
    }

    fn send2(&mut self, first: &[u8], second: &[u8]) -> Result<usize, Errno> {
        wire!(self, io => io.send2(first, second))
    }

    fn send_vectored(&mut self, bufs: &[IoSlice<'_>]) -> Result<usize, Errno> {
        wire!(self, io => io.send_vectored(bufs))
    }

    fn shutdown_write(&mut self) {
        wire!(self, io => io.shutdown_write())
    }

    fn has_buffered(&self) -> bool {
        wire!(self, io => io.has_buffered())
    }

    #[inline]
    fn is_handshaking(&self) -> bool {
        match self {
            Wire::Plain(_) => false,
            Wire::Tls(tls) => tls.is_handshaking(),
            Wire::Ws(ws) => ws.is_handshaking(),
        }
    }

    fn short_read_drains(&self) -> bool {
        wire!(self, io => io.short_read_drains())
    }

    fn frames_lines(&self) -> bool {
        matches!(self, Wire::Ws(ws) if ws.frames_lines())
    }

    fn reserve(&self) -> usize {
        wire!(self, io => io.reserve())
    }

    fn cap(&self, cap: usize) -> usize {
        wire!(self, io => io.cap(cap))
    }

    fn unacked(&self) -> usize {
        wire!(self, io => io.unacked())
    }

    fn reset_on_close(&mut self) {
        wire!(self, io => io.reset_on_close())
    }

    fn note_read_closed(&mut self) {
        wire!(self, io => io.note_read_closed())
    }

    fn source(&mut self) -> &mut dyn mio::event::Source {
        wire!(self, io => io.source())
    }
}

/// The accepted socket, with direct syscalls: its descriptor and two flags, 8 bytes (a mio
/// stream would be 8 bytes in a release build but 16 in a debug one, and its descriptor would be
/// read through the enum's match on the hot path). It owns the descriptor: dropping it closes
/// the socket.
#[derive(Debug)]
pub(crate) struct Plain {
    /// The socket; -1 only in a husk left for a moment where a connection is rebuilt around its
    /// socket.
    pub(super) fd: RawFd,
    /// A Unix stream socket (no peer address).
    unix: bool,
    shut: bool,
}

impl Plain {
    pub(crate) fn new(stream: Stream) -> Self {
        let unix = matches!(stream, Stream::Unix(_));
        let fd = match stream {
            Stream::Tcp(s) => s.into_raw_fd(),
            Stream::Unix(s) => s.into_raw_fd(),
        };
        Plain { fd, unix, shut: false }
    }

    /// The client's address (TCP; `None` for a Unix socket's unnamed peer).
    pub(crate) fn peer_addr(&self) -> Option<std::net::SocketAddr> {
        if self.unix || self.fd < 0 {
            return None;
        }
        SockRef::from(self).peer_addr().ok()?.as_socket()
    }

    /// A transport with no socket, standing in for a moment while a connection is rebuilt
    /// around its socket (`std::mem::replace`); never served or registered.
    pub(crate) fn husk() -> Self {
        Plain { fd: -1, unix: false, shut: true }
    }
}

impl Drop for Plain {
    fn drop(&mut self) {
        if self.fd >= 0 {
            // SAFETY: the descriptor is this transport's own (taken from the stream in `new`),
            // open until now, and closed nowhere else.
            drop(unsafe { OwnedFd::from_raw_fd(self.fd) });
        }
    }
}

impl AsFd for Plain {
    fn as_fd(&self) -> BorrowedFd<'_> {
        assert!(self.fd >= 0, "a husk has no socket");
        // SAFETY: the descriptor is open for as long as `self` lives (closed only by its drop).
        unsafe { BorrowedFd::borrow_raw(self.fd) }
    }
}

/// Registration by the descriptor (epoll registers descriptors, whatever the socket's kind).
impl mio::event::Source for Plain {
    fn register(
        &mut self,
        registry: &mio::Registry,
        token: mio::Token,
        interests: mio::Interest,
    ) -> std::io::Result<()> {
        SourceFd(&self.as_fd().as_raw_fd()).register(registry, token, interests)
    }

    fn reregister(
        &mut self,
        registry: &mio::Registry,
        token: mio::Token,
        interests: mio::Interest,
    ) -> std::io::Result<()> {
        SourceFd(&self.as_fd().as_raw_fd()).reregister(registry, token, interests)
    }

    fn deregister(&mut self, registry: &mio::Registry) -> std::io::Result<()> {
        SourceFd(&self.as_fd().as_raw_fd()).deregister(registry)
    }
}

impl Transport for Plain {
    #[inline]
    fn recv(&mut self, buf: &mut [u8]) -> Result<usize, Errno> {
        sys::recv(self.fd, buf)
    }

    #[inline]
    fn send(&mut self, buf: &[u8]) -> Result<usize, Errno> {
        sys::send(self.fd, buf)
    }

    #[inline]
    fn send2(&mut self, first: &[u8], second: &[u8]) -> Result<usize, Errno> {
        sys::send2(self.fd, first, second)
    }

    fn send_vectored(&mut self, bufs: &[IoSlice<'_>]) -> Result<usize, Errno> {
        sys::send_vectored(self.fd, bufs)
    }

    fn shutdown_write(&mut self) {
        if !self.shut {
            self.shut = true;
            let _ = SockRef::from(&*self).shutdown(Shutdown::Write);
        }
    }

    fn unacked(&self) -> usize {
        let mut queued: libc::c_int = 0;
        // SAFETY: SIOCOUTQ (= TIOCOUTQ) writes one int through the pointer, which is valid.
        let ret = unsafe { libc::ioctl(self.fd, libc::TIOCOUTQ, &mut queued) };
        if ret == 0 {
            queued.max(0) as usize
        } else {
            0
        }
    }

    fn reset_on_close(&mut self) {
        if self.fd >= 0 {
            let _ = SockRef::from(&*self).set_linger(Some(std::time::Duration::ZERO));
        }
        self.shut = true; // no FIN: it would reach the peer before the reset
    }

    fn source(&mut self) -> &mut dyn mio::event::Source {
        self
    }
}
