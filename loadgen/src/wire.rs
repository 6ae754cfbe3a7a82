//! A load connection's stream transport: the socket (TCP or Unix), and the bytes over it in the
//! clear or through a TLS session. Every stream workload (echo, chat) reads, writes, connects and
//! closes through it, so a workload never asks which transport it runs on, and a transport is
//! added here once for all of them.
//!
//! Contract, the edge-triggered one of `ricochet::tls_records`:
//! - [`Wire::read`] returns fewer bytes than asked only when the socket is drained, or at the
//!   peer's end of stream, which [`Wire::saw_end`] then reports (read again rather than wait for
//!   an edge); `WouldBlock` when there was nothing.
//! - [`Wire::write`] takes what it can and says whether the socket refused the rest (a writable
//!   edge follows, then [`Wire::on_writable`]). Over TLS "taken" means encrypted by the
//!   session, which holds at most [`tls::BUFFER_LIMIT`] of records the socket refused.
//! - Connecting includes the TLS handshake ([`Wire::handshake`]): no message is issued or timed
//!   before it completes.

use std::io;
use std::net::{IpAddr, Shutdown, SocketAddr};
use std::os::fd::{AsRawFd, RawFd};
use std::path::Path;

use mio::net::{TcpStream, UnixStream};
use ricochet::sys;

use crate::target::{Address, Endpoint};
use crate::tls::{self, TlsClient};
use crate::websocket::WsClient;

/// A connected (or connecting) stream socket.
#[derive(Debug)]
pub enum Socket {
    /// TCP.
    Tcp(TcpStream),
    /// A Unix-domain stream.
    Unix(UnixStream),
}

impl Socket {
    /// Starts a non-blocking TCP connect.
    pub fn tcp(addr: SocketAddr) -> io::Result<Socket> {
        TcpStream::connect(addr).map(Socket::Tcp)
    }

    /// Starts a TCP connect from the local address `source` (its port chosen at connect, with
    /// `IP_BIND_ADDRESS_NO_PORT`, so every source address has the whole ephemeral port range
    /// towards each target, not towards all of them at once).
    pub fn tcp_from(addr: SocketAddr, source: IpAddr) -> io::Result<Socket> {
        use socket2::{Domain, Protocol, SockAddr, Socket as Raw, Type};
        let sock =
            Raw::new(Domain::for_address(addr), Type::STREAM.nonblocking(), Some(Protocol::TCP))?;
        let on: libc::c_int = 1;
        // SAFETY: setsockopt on our own socket with a c_int option of the right size.
        let rc = unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_IP,
                libc::IP_BIND_ADDRESS_NO_PORT,
                (&on as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        sock.bind(&SockAddr::from(SocketAddr::new(source, 0)))
            .map_err(|e| io::Error::new(e.kind(), format!("cannot use --source {source}: {e}")))?;
        match sock.connect(&SockAddr::from(addr)) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
            Err(e) => return Err(e),
        }
        Ok(Socket::Tcp(TcpStream::from_std(sock.into())))
    }

    /// Connects to a Unix-domain stream socket.
    pub fn unix(path: &Path) -> io::Result<Socket> {
        UnixStream::connect(path).map(Socket::Unix)
    }

    /// The socket, for registration with the poll.
    pub fn source(&mut self) -> &mut dyn mio::event::Source {
        match self {
            Socket::Tcp(s) => s,
            Socket::Unix(s) => s,
        }
    }

    /// Its descriptor, for the direct syscalls.
    pub fn fd(&self) -> RawFd {
        match self {
            Socket::Tcp(s) => s.as_raw_fd(),
            Socket::Unix(s) => s.as_raw_fd(),
        }
    }

    /// An event while connecting: `Ok(true)` once connected (TCP_NODELAY then set), `Ok(false)`
    /// while the connect is in progress.
    pub fn connected(&self) -> io::Result<bool> {
        match self {
            Socket::Tcp(s) => match s.take_error() {
                Ok(Some(e)) | Err(e) => Err(e),
                Ok(None) => match s.peer_addr() {
                    Ok(_) => {
                        let _ = s.set_nodelay(true);
                        Ok(true)
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
                    Err(e) => Err(e),
                },
            },
            Socket::Unix(s) => match s.take_error() {
                Ok(Some(e)) | Err(e) => Err(e),
                Ok(None) => Ok(true),
            },
        }
    }

    /// Sends our end of stream (FIN); false if the socket is already gone.
    pub fn shutdown_write(&self) -> bool {
        match self {
            Socket::Tcp(s) => s.shutdown(Shutdown::Write).is_ok(),
            Socket::Unix(s) => s.shutdown(Shutdown::Write).is_ok(),
        }
    }
}

/// The bytes over a stream socket: in the clear, or through a TLS session; and WebSocket
/// framing over either (`ws://`, `wss://`).
#[derive(Debug, Default)]
pub struct Wire {
    link: Link,
    /// The WebSocket framing (boxed: most runs have none).
    ws: Option<Box<WsClient>>,
}

/// The byte stream under any framing: in the clear, or through a TLS session.
#[derive(Debug, Default)]
struct Link {
    /// The TLS session (boxed: large, and most runs have none).
    tls: Option<Box<tls::Session>>,
    /// The PROXY protocol header still to write, before anything else (`--proxy-header`).
    preface: Vec<u8>,
}

impl Wire {
    /// Bytes in the clear.
    pub fn plain() -> Wire {
        Wire::default()
    }

    /// A new TLS session from `client` on the socket `fd` (its ClientHello waiting to be
    /// written).
    pub fn tls(client: &TlsClient, fd: RawFd) -> io::Result<Wire> {
        let session = Box::new(tls::Session::new(client.unbuffered()?, fd, tls::BUFFER_LIMIT));
        let link = Link { tls: Some(session), ..Link::default() };
        Ok(Wire { link, ws: None })
    }

    /// The same wire with WebSocket framing on it (its handshake after the link's).
    pub fn with_websocket(mut self, ws: WsClient) -> Wire {
        self.ws = Some(Box::new(ws));
        self
    }

    /// Whether messages go as WebSocket text (payloads must then be UTF-8).
    pub fn is_text(&self) -> bool {
        self.ws.as_ref().is_some_and(|ws| ws.is_text())
    }

    /// Moves the handshake on (TLS, then the WebSocket upgrade); `Ok(true)` once it is complete
    /// (at once in the clear).
    pub fn handshake(&mut self, fd: RawFd) -> io::Result<bool> {
        if !self.link.handshake(fd)? {
            return Ok(false);
        }
        let Some(ws) = self.ws.as_deref_mut() else { return Ok(true) };
        if ws.is_open() {
            return Ok(true);
        }
        ws.start();
        if !flush_ws(&mut self.link, ws, fd)? {
            return Ok(false);
        }
        let mut buf = [0u8; 4096];
        loop {
            match self.link.read(fd, &mut buf) {
                Ok(0) => {
                    return Err(io::Error::other("the server closed during the WebSocket upgrade"))
                }
                Ok(n) => {
                    if ws.on_response(&buf[..n])? {
                        return Ok(true);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads into `buf` (see the module's contract).
    #[inline]
    pub fn read(&mut self, fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
        match self.ws.as_deref_mut() {
            None => self.link.read(fd, buf),
            Some(ws) => read_ws(&mut self.link, ws, fd, buf),
        }
    }

    /// The peer's end of stream came with what was read: read again, no edge will come.
    #[inline]
    pub fn saw_end(&self) -> bool {
        self.link.saw_end() || self.ws.as_ref().is_some_and(|ws| ws.is_closed())
    }

    /// Writes `bytes` as far as the socket (or the session, or the framing) takes them: how
    /// many were taken, and whether the socket refused the rest (a writable edge follows).
    #[inline]
    pub fn write(&mut self, fd: RawFd, bytes: &[u8]) -> io::Result<(usize, bool)> {
        match self.ws.as_deref_mut() {
            None => self.link.write(fd, bytes),
            Some(ws) => write_ws(&mut self.link, ws, fd, bytes),
        }
    }

    /// A writable edge: writes what the wire holds (TLS records, framed WebSocket output);
    /// false if the socket refuses again.
    pub fn on_writable(&mut self, fd: RawFd) -> io::Result<bool> {
        if !self.link.on_writable()? {
            return Ok(false);
        }
        match self.ws.as_deref_mut() {
            Some(ws) => flush_ws(&mut self.link, ws, fd),
            None => Ok(true),
        }
    }

    /// The polite end: a WebSocket close frame, then close_notify over TLS, written as far as
    /// the socket takes them (the FIN follows from the socket).
    pub fn close_notify(&mut self, fd: RawFd) {
        if let Some(ws) = self.ws.as_deref_mut() {
            ws.close();
            let _ = flush_ws(&mut self.link, ws, fd);
        }
        self.link.close_notify();
    }
}

/// Frames `bytes` and writes them through the link (out of line: the plain path stays small
/// enough to inline).
#[inline(never)]
fn write_ws(
    link: &mut Link,
    ws: &mut WsClient,
    fd: RawFd,
    bytes: &[u8],
) -> io::Result<(usize, bool)> {
    if !flush_ws(link, ws, fd)? {
        return Ok((0, true));
    }
    let mut taken = 0;
    while taken < bytes.len() {
        taken += ws.frame(&bytes[taken..]);
        if !flush_ws(link, ws, fd)? {
            return Ok((taken, true));
        }
    }
    Ok((taken, false))
}

/// Writes the framing's pending output through the link; true once all of it went.
fn flush_ws(link: &mut Link, ws: &mut WsClient, fd: RawFd) -> io::Result<bool> {
    while !ws.pending().is_empty() {
        let (n, blocked) = link.write(fd, ws.pending())?;
        ws.wrote(n);
        if blocked {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Reads through the WebSocket framing: raw reads decoded in place until the socket is
/// drained or `buf` is full, so a short return still means "drained".
#[inline(never)]
fn read_ws(link: &mut Link, ws: &mut WsClient, fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = ws.take_early(buf);
    // Lines: a byte of room before the raw bytes, for a line's `\n` (a short return then may
    // not mean "drained", which the chat workload never assumes: it reads to `WouldBlock`).
    let room = ws.is_lines() as usize;
    while filled + room < buf.len() && !ws.is_closed() {
        let asked = buf.len() - filled - room;
        let n = match link.read(fd, &mut buf[filled + room..]) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && filled > 0 => break,
            Err(e) => return Err(e),
        };
        filled += ws.decode_range(buf, filled, filled + room, filled + room + n)?;
        if !ws.pending().is_empty() {
            let _ = flush_ws(link, ws, fd)?; // a pong
        }
        if n < asked && !link.saw_end() {
            if filled == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            break;
        }
    }
    Ok(filled)
}

impl Link {
    /// Moves the handshake on (the PROXY header first, if there is one); `Ok(true)` once it is
    /// complete (at once in the clear).
    fn handshake(&mut self, fd: RawFd) -> io::Result<bool> {
        while !self.preface.is_empty() {
            match sys::send(fd, &self.preface) {
                Ok(n) => drop(self.preface.drain(..n)),
                Err(libc::EAGAIN) => return Ok(false),
                Err(libc::EINTR) => {}
                Err(e) => return Err(io::Error::from_raw_os_error(e)),
            }
        }
        match self.tls.as_deref_mut() {
            Some(session) => session.handshake().map_err(|e| tls::error(session, e)),
            None => Ok(true),
        }
    }

    /// The peer's end of stream came with what was read.
    #[inline]
    fn saw_end(&self) -> bool {
        self.tls.as_deref().is_some_and(|session| session.eof())
    }

    #[inline]
    fn read(&mut self, fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
        match self.tls.as_deref_mut() {
            None => sys::recv(fd, buf).map_err(io::Error::from_raw_os_error),
            Some(session) => session.read_plain(buf).map_err(|e| tls::error(session, e)),
        }
    }

    #[inline]
    fn write(&mut self, fd: RawFd, bytes: &[u8]) -> io::Result<(usize, bool)> {
        let Some(session) = self.tls.as_deref_mut() else {
            return loop {
                match sys::send(fd, bytes) {
                    Ok(n) => break Ok((n, n < bytes.len())),
                    Err(libc::EAGAIN) => break Ok((0, true)),
                    Err(libc::EINTR) => continue,
                    Err(e) => break Err(io::Error::from_raw_os_error(e)),
                }
            };
        };
        match session.write(&[bytes]) {
            Ok(n) => Ok((n, n < bytes.len() || session.has_buffered())),
            Err(libc::EAGAIN) => Ok((0, true)),
            Err(e) => Err(tls::error(session, e)),
        }
    }

    fn on_writable(&mut self) -> io::Result<bool> {
        match self.tls.as_deref_mut() {
            Some(session) => session.flush().map_err(|e| tls::error(session, e)),
            None => Ok(true),
        }
    }

    fn close_notify(&mut self) {
        if let Some(session) = self.tls.as_deref_mut() {
            session.close_notify();
        }
    }
}

/// Starts a stream connection to `endpoint`: the socket, and its wire (a TLS session from
/// `tls` on a TLS address; WebSocket framing on a WebSocket target, its masking keys seeded by
/// `seed`). The one place a stream transport is chosen: a new transport is a case here (and its
/// scheme in `target.rs`).
pub fn connect(
    endpoint: &Endpoint,
    tls: Option<&TlsClient>,
    seed: u64,
) -> io::Result<(Socket, Wire)> {
    // Connection `seed` (its id) from the seed-th source address, round robin.
    let source = match endpoint.sources.len() {
        0 => None,
        n => Some(endpoint.sources[seed as usize % n]),
    };
    let tcp = |addr: SocketAddr| match source {
        Some(source) => Socket::tcp_from(addr, source),
        None => Socket::tcp(addr),
    };
    let (socket, mut wire, peer) = match &endpoint.address {
        Address::Tcp(addr) => (tcp(*addr)?, Wire::plain(), Some(*addr)),
        Address::Tls(addr) => {
            let tls = tls.ok_or_else(|| io::Error::other("a TLS target without TLS settings"))?;
            let socket = tcp(*addr)?;
            let wire = Wire::tls(tls, socket.fd())?;
            (socket, wire, Some(*addr))
        }
        Address::Unix(path) => (Socket::unix(path)?, Wire::plain(), None),
        Address::Udp(_) => return Err(io::Error::other("UDP is not a stream transport")),
    };
    if let Some(version) = endpoint.proxy {
        // The connecting socket is bound already: its address is the header's source.
        let local = match &socket {
            Socket::Tcp(s) => s.local_addr().ok(),
            Socket::Unix(_) => None,
        };
        wire.link.preface = ricochet::proxy::encode(version, local, peer);
    }
    let wire = match &endpoint.websocket {
        Some(target) => wire.with_websocket(WsClient::new(target.clone(), seed)),
        None => wire,
    };
    Ok((socket, wire))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// In the clear: a write that the socket takes whole is not blocked; reads return the bytes.
    #[test]
    fn plain_bytes_both_ways() {
        let (ours, mut theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        let mut wire = Wire::plain();
        assert!(wire.handshake(ours.as_raw_fd()).unwrap());
        assert_eq!(wire.write(ours.as_raw_fd(), b"hello").unwrap(), (5, false));
        let mut got = [0u8; 5];
        theirs.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"hello");
        theirs.write_all(b"back").unwrap();
        let mut buf = [0u8; 16];
        assert_eq!(wire.read(ours.as_raw_fd(), &mut buf).unwrap(), 4);
        let e = wire.read(ours.as_raw_fd(), &mut buf).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        assert!(!wire.saw_end());
    }

    /// A full socket refuses: the write says so (taken short, blocked).
    #[test]
    fn a_full_socket_blocks_the_write() {
        let (ours, _theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        let mut wire = Wire::plain();
        let big = vec![7u8; 8 << 20];
        let (taken, blocked) = wire.write(ours.as_raw_fd(), &big).unwrap();
        assert!(taken < big.len() && blocked, "{taken}");
        assert_eq!(wire.write(ours.as_raw_fd(), &big).unwrap(), (0, true));
    }
}
