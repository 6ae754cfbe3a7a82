//! One connection to a chat room: the URL, the socket (TCP or Unix), TLS on it (rustls,
//! trusting what `--tls-ca`/`--tls-pin`/`--insecure` say, as loadgen does) and WebSocket framing
//! (one text message per line), with lines in and out. Non-blocking, driven by the client's poll.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use mio::{Interest, Registry, Token};
use ricochet::client::tls::TlsClient;
use ricochet::client::websocket::{WsClient, WsTarget};
use rustls::ClientConnection;

/// The longest line taken from the server (its `--max-line` is 64 KiB by default; a JSON
/// rendering is longer).
const MAX_LINE: usize = 1 << 20;

/// Where the room is, from the URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The URL as given (for messages).
    pub url: String,
    /// `HOST:PORT`, or the Unix socket's path.
    pub place: Place,
    /// `chat+tls://` and `chat+wss://`.
    pub tls: bool,
    /// `chat+ws://` and `chat+wss://`: the request path.
    pub ws_path: Option<String>,
}

/// A host and port (resolved at each connect: a restarted server may have moved), or a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Place {
    /// `HOST:PORT` (`[V6]:PORT` for an IPv6 literal).
    Host(String),
    /// A Unix socket.
    Unix(PathBuf),
}

/// The URLs the client takes, for messages.
pub const SCHEMES: &str =
    "chat://HOST:PORT, chat+tls://HOST:PORT, chat+unix:PATH, chat+ws://HOST:PORT[/PATH], chat+wss://HOST:PORT[/PATH]";

impl Target {
    /// Reads a chat URL; a bare `HOST:PORT` is `chat://HOST:PORT`.
    pub fn parse(url: &str) -> Result<Target, String> {
        let bad = |why: &str| format!("`{url}`: {why} (expected one of {SCHEMES})");
        if let Some(path) = url.strip_prefix("chat+unix:") {
            if path.is_empty() {
                return Err(bad("no socket path"));
            }
            let place = Place::Unix(path.into());
            return Ok(Target { url: url.into(), place, tls: false, ws_path: None });
        }
        let (scheme, rest) = url.split_once("://").unwrap_or(("chat", url));
        let (tls, ws) = match scheme {
            "chat" => (false, false),
            "chat+tls" => (true, false),
            "chat+ws" => (false, true),
            "chat+wss" => (true, true),
            _ => return Err(bad(&format!("`{scheme}://` is not a chat scheme"))),
        };
        let (host, path) = match rest.find('/') {
            Some(i) if ws => (&rest[..i], &rest[i..]),
            Some(_) => return Err(bad("a path is for chat+ws:// and chat+wss:// only")),
            None => (rest, "/"),
        };
        let port = host.rsplit_once(':').map(|(h, p)| (h, p.parse::<u16>()));
        match port {
            Some((h, Ok(p))) if !h.is_empty() && p != 0 => {}
            _ => return Err(bad("give the room's HOST:PORT")),
        }
        let ws_path = ws.then(|| path.to_string());
        Ok(Target { url: url.into(), place: Place::Host(host.into()), tls, ws_path })
    }

    /// The host to ask TLS for (brackets of an IPv6 literal removed).
    pub fn host(&self) -> Option<&str> {
        match &self.place {
            Place::Host(hp) => hp.rsplit_once(':').map(|(h, _)| h),
            Place::Unix(_) => None,
        }
    }
}

/// The socket under a link.
#[derive(Debug)]
enum Socket {
    Tcp(mio::net::TcpStream),
    Unix(mio::net::UnixStream),
}

impl Read for Socket {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Socket::Tcp(s) => s.read(buf),
            Socket::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Socket {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Socket::Tcp(s) => s.write(buf),
            Socket::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// An open connection to the room.
#[derive(Debug)]
pub struct Link {
    socket: Socket,
    tls: Option<Box<ClientConnection>>,
    ws: Option<WsClient>,
    /// Lines waiting for the WebSocket handshake to end.
    held: Vec<u8>,
    /// Bytes for the socket (TLS: for the session) not yet taken.
    out: Vec<u8>,
    /// The start of a line not yet whole.
    partial: Vec<u8>,
}

impl Link {
    /// Connects (blocking, within `timeout` per address) and starts the TLS and WebSocket
    /// handshakes; they go on in [`Link::readable`] and [`Link::flush`].
    pub fn connect(
        target: &Target,
        tls: Option<&TlsClient>,
        timeout: Duration,
    ) -> io::Result<Link> {
        let socket = match &target.place {
            Place::Unix(path) => {
                let s = std::os::unix::net::UnixStream::connect(path)?;
                s.set_nonblocking(true)?;
                Socket::Unix(mio::net::UnixStream::from_std(s))
            }
            Place::Host(hp) => {
                let addrs: Vec<SocketAddr> = hp.to_socket_addrs()?.collect();
                let mut last = io::Error::other(format!("{hp} has no address"));
                let mut connected = None;
                for addr in addrs {
                    match std::net::TcpStream::connect_timeout(&addr, timeout) {
                        Ok(s) => {
                            connected = Some(s);
                            break;
                        }
                        Err(e) => last = e,
                    }
                }
                let s = connected.ok_or(last)?;
                s.set_nodelay(true)?;
                s.set_nonblocking(true)?;
                Socket::Tcp(mio::net::TcpStream::from_std(s))
            }
        };
        let tls = match tls {
            Some(client) => Some(Box::new(client.session()?)),
            None => None,
        };
        let ws = target.ws_path.as_ref().map(|path| {
            let Place::Host(host) = &target.place else { unreachable!("WebSocket is over TCP") };
            let seed = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            let target = WsTarget {
                host: host.clone(),
                path: path.clone(),
                text: true,
                message: 0,
                lines: true,
            };
            let mut ws = WsClient::new(target, seed);
            ws.start();
            ws
        });
        let mut link =
            Link { socket, tls, ws, held: Vec::new(), out: Vec::new(), partial: Vec::new() };
        link.take_framed();
        Ok(link)
    }

    /// Registers the socket for reading and writing (edge-triggered).
    pub fn register(&mut self, registry: &Registry, token: Token) -> io::Result<()> {
        let interest = Interest::READABLE | Interest::WRITABLE;
        match &mut self.socket {
            Socket::Tcp(s) => registry.register(s, token, interest),
            Socket::Unix(s) => registry.register(s, token, interest),
        }
    }

    /// Queues a line (its `\n` added); [`Link::flush`] sends it.
    pub fn send(&mut self, line: &str) {
        let mut bytes = Vec::with_capacity(line.len() + 1);
        bytes.extend_from_slice(line.as_bytes());
        bytes.push(b'\n');
        match &self.ws {
            Some(ws) if ws.is_open() => self.frame(&bytes),
            Some(_) => self.held.extend_from_slice(&bytes),
            None => self.out.extend_from_slice(&bytes),
        }
    }

    /// Frames lines as WebSocket messages into the output.
    fn frame(&mut self, bytes: &[u8]) {
        let mut at = 0;
        while let Some(ws) = &mut self.ws {
            at += ws.frame(&bytes[at..]);
            self.take_framed();
            if at == bytes.len() {
                break;
            }
        }
    }

    /// Moves what the WebSocket layer framed into the output.
    fn take_framed(&mut self) {
        if let Some(ws) = &mut self.ws {
            let n = ws.pending().len();
            self.out.extend_from_slice(ws.pending());
            ws.wrote(n);
        }
    }

    /// Writes what is queued, as far as the socket takes it.
    pub fn flush(&mut self) -> io::Result<()> {
        match &mut self.tls {
            None => {
                let mut at = 0;
                while at < self.out.len() {
                    match self.socket.write(&self.out[at..]) {
                        Ok(n) => at += n,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
                self.out.drain(..at);
            }
            Some(tls) => {
                if !self.out.is_empty() {
                    tls.writer().write_all(&self.out)?;
                    self.out.clear();
                }
                while tls.wants_write() {
                    match tls.write_tls(&mut self.socket) {
                        Ok(_) => {}
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        Ok(())
    }

    /// Reads what has arrived; whole lines go to `lines`. `Ok(false)`: the server closed.
    pub fn readable(&mut self, lines: &mut Vec<String>) -> io::Result<bool> {
        let mut bytes = Vec::new();
        let mut open = self.read_plain(&mut bytes)?;
        if let Some(ws) = &mut self.ws {
            let mut payload = Vec::new();
            if !ws.is_open() {
                // The answer to the upgrade, and any frames that came with it.
                if ws.on_response(&bytes)? {
                    let mut early = vec![0; 64 * 1024];
                    loop {
                        let n = ws.take_early(&mut early);
                        if n == 0 {
                            break;
                        }
                        payload.extend_from_slice(&early[..n]);
                    }
                }
            } else if !bytes.is_empty() {
                // A byte in front: room for the `\n` after the first message.
                let mut buf = Vec::with_capacity(bytes.len() + 1);
                buf.push(0);
                buf.extend_from_slice(&bytes);
                let n = buf.len();
                let m = ws.decode_range(&mut buf, 0, 1, n)?;
                payload.extend_from_slice(&buf[..m]);
            }
            open &= !ws.is_closed();
            bytes = payload;
            // Pongs; and once the handshake is done, the lines held for it.
            self.take_framed();
            if self.ws.as_ref().is_some_and(WsClient::is_open) && !self.held.is_empty() {
                let held = std::mem::take(&mut self.held);
                self.frame(&held);
            }
        }
        self.split_lines(&bytes, lines)?;
        Ok(open)
    }

    fn split_lines(&mut self, bytes: &[u8], lines: &mut Vec<String>) -> io::Result<()> {
        let mut rest = bytes;
        while let Some(i) = memchr::memchr(b'\n', rest) {
            self.partial.extend_from_slice(&rest[..i]);
            lines.push(String::from_utf8_lossy(&self.partial).into_owned());
            self.partial.clear();
            rest = &rest[i + 1..];
        }
        self.partial.extend_from_slice(rest);
        if self.partial.len() > MAX_LINE {
            return Err(io::Error::other("the server sent a line longer than 1 MiB"));
        }
        Ok(())
    }

    /// Reads the socket dry (through TLS when there is TLS); `Ok(false)` at its end.
    fn read_plain(&mut self, into: &mut Vec<u8>) -> io::Result<bool> {
        let mut buf = [0u8; 16 * 1024];
        let Some(tls) = &mut self.tls else {
            loop {
                match self.socket.read(&mut buf) {
                    Ok(0) => return Ok(false),
                    Ok(n) => into.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
        };
        let mut open = true;
        loop {
            match tls.read_tls(&mut self.socket) {
                Ok(0) => {
                    open = false;
                    break;
                }
                Ok(_) => {
                    if let Err(e) = tls.process_new_packets() {
                        let _ = tls.write_tls(&mut self.socket); // the alert, if it goes
                        return Err(io::Error::other(format!("TLS: {e}")));
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        loop {
            match tls.reader().read(&mut buf) {
                Ok(0) => return Ok(false), // the server's close_notify
                Ok(n) => into.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(open),
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(false),
                Err(e) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let t = Target::parse("chat://127.0.0.1:7008").unwrap();
        assert_eq!(
            (t.place, t.tls, t.ws_path),
            (Place::Host("127.0.0.1:7008".into()), false, None)
        );
        let t = Target::parse("localhost:7008").unwrap();
        assert_eq!(t.place, Place::Host("localhost:7008".into()));
        let t = Target::parse("chat+wss://[::1]:9/room/a").unwrap();
        assert_eq!((t.tls, t.ws_path.as_deref(), t.host()), (true, Some("/room/a"), Some("[::1]")));
        let t = Target::parse("chat+ws://h:1").unwrap();
        assert_eq!(t.ws_path.as_deref(), Some("/"));
        let t = Target::parse("chat+unix:/tmp/room.sock").unwrap();
        assert_eq!(t.place, Place::Unix("/tmp/room.sock".into()));
        for bad in
            ["tcp://h:1", "chat://h", "chat://h:0", "chat://:1", "chat://h:1/x", "chat+unix:"]
        {
            let e = Target::parse(bad).unwrap_err();
            assert!(e.contains(bad) && e.contains("chat+tls://"), "{e}");
        }
    }
}
