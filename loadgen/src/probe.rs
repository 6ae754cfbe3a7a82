//! `loadgen probe`: one message, its echo and its round-trip time. A health check: success only
//! on an exact echo.

use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use crate::target::{Address, Endpoint, Target, Workload};
use crate::tls::TlsClient;
use crate::websocket::{WsClient, WsTarget};
use crate::Error;

/// What a probe saw.
#[derive(Debug)]
pub struct Probe {
    /// Where the message went.
    pub endpoint: Endpoint,
    /// What came back (up to the message's length).
    pub echo: Vec<u8>,
    /// From the write to the last byte of the echo.
    pub rtt: Duration,
}

/// Sends `message` to the first endpoint of `target` that answers and reads its echo, waiting at
/// most `timeout` for each step (`tls`: how a `tls://` target is trusted).
pub fn probe(
    target: &Target,
    message: &[u8],
    timeout: Duration,
    tls: Option<&TlsClient>,
    proxy: Option<ricochet::proxy::Proxy>,
) -> Result<Probe, Error> {
    let endpoints = target.resolve().map_err(Error::new)?;
    let mut last = None;
    for mut endpoint in endpoints {
        endpoint.proxy = proxy;
        match probe_one(&endpoint, message, timeout, tls) {
            Ok(p) => return Ok(p),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| Error::new("no endpoint to probe")))
}

/// The WebSocket upgrade over a blocking stream, checked; returns the client for the frames.
pub fn upgrade<S: Read + Write>(s: &mut S, target: &WsTarget) -> std::io::Result<WsClient> {
    let mut client = WsClient::new(target.clone(), std::process::id() as u64);
    client.start();
    s.write_all(client.pending())?;
    client.wrote(client.pending().len());
    let mut buf = [0u8; 4096];
    loop {
        let n = s.read(&mut buf)?;
        if n == 0 {
            return Err(std::io::Error::other("the server closed during the WebSocket upgrade"));
        }
        if client.on_response(&buf[..n])? {
            return Ok(client);
        }
    }
}

/// One message over WebSocket: framed and masked, the reply decoded.
fn ws_round_trip<S: Read + Write>(
    endpoint: &Endpoint,
    target: &WsTarget,
    mut s: S,
    message: &[u8],
) -> std::io::Result<Probe> {
    let mut target = target.clone();
    target.message = message.len();
    let mut client = upgrade(&mut s, &target)?;
    let start = Instant::now();
    let mut sent = 0;
    while sent < message.len() {
        sent += client.frame(&message[sent..]);
        s.write_all(client.pending())?;
        client.wrote(client.pending().len());
    }
    let mut echo = vec![0; message.len()];
    let mut got = client.take_early(&mut echo);
    echo.truncate(got);
    let mut buf = vec![0u8; 64 * 1024];
    while got < message.len() && !client.is_closed() {
        let n = s.read(&mut buf[1..])?;
        if n == 0 {
            break; // closed early: the comparison shows what is missing
        }
        let m = client.decode_range(&mut buf, 0, 1, n + 1)?;
        echo.extend_from_slice(&buf[..m]);
        got += m;
        if !client.pending().is_empty() {
            s.write_all(client.pending())?; // a pong
            client.wrote(client.pending().len());
        }
    }
    let rtt = start.elapsed();
    // The polite end: our close, then the server's close and end of stream read (a socket
    // dropped with the server's close unread would reset the connection).
    client.close();
    if s.write_all(client.pending()).is_ok() {
        let mut rest = [0u8; 256];
        while matches!(s.read(&mut rest), Ok(1..)) {}
    }
    Ok(Probe { endpoint: endpoint.clone(), echo, rtt })
}

/// A blocking TCP connection to `addr` (within `timeout`), its PROXY protocol header sent first
/// if `proxy` names a version.
pub fn connect(
    addr: std::net::SocketAddr,
    timeout: Duration,
    proxy: Option<ricochet::proxy::Proxy>,
) -> std::io::Result<TcpStream> {
    let mut s = TcpStream::connect_timeout(&addr, timeout)?;
    if let Some(version) = proxy {
        s.set_write_timeout(Some(timeout))?;
        s.write_all(&ricochet::proxy::encode(version, s.local_addr().ok(), Some(addr)))?;
    }
    Ok(s)
}

/// A blocking connection to the Unix socket at `path`, its PROXY protocol header (v1 `UNKNOWN` /
/// v2 `LOCAL`: no addresses to name) sent first if `proxy` names a version.
pub fn connect_unix(
    path: &std::path::Path,
    proxy: Option<ricochet::proxy::Proxy>,
) -> std::io::Result<UnixStream> {
    let mut s = UnixStream::connect(path)?;
    if let Some(version) = proxy {
        s.write_all(&ricochet::proxy::encode(version, None, None))?;
    }
    Ok(s)
}

/// A blocking TLS session with `addr`, its handshake done (within `timeout`), after a PROXY
/// protocol header if `proxy` names a version.
pub fn handshake(
    addr: std::net::SocketAddr,
    tls: &TlsClient,
    timeout: Duration,
    proxy: Option<ricochet::proxy::Proxy>,
) -> std::io::Result<rustls::StreamOwned<rustls::ClientConnection, TcpStream>> {
    let s = connect(addr, timeout, proxy)?;
    let _ = s.set_nodelay(true);
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    let mut stream = rustls::StreamOwned::new(tls.session()?, s);
    while stream.conn.is_handshaking() {
        stream.conn.complete_io(&mut stream.sock)?;
    }
    Ok(stream)
}

/// Ends a TLS session the way a polite client does: close_notify, FIN, then read to the
/// server's end (within the socket's timeout). Dropping it with the server's session tickets
/// unread would make the kernel reset it.
pub fn close_politely(mut stream: rustls::StreamOwned<rustls::ClientConnection, TcpStream>) {
    stream.conn.send_close_notify();
    let _ = stream.conn.complete_io(&mut stream.sock);
    let _ = stream.sock.shutdown(std::net::Shutdown::Write);
    let mut sink = [0u8; 4096];
    while matches!(stream.read(&mut sink), Ok(n) if n > 0) {}
}

fn probe_one(
    endpoint: &Endpoint,
    message: &[u8],
    timeout: Duration,
    tls: Option<&TlsClient>,
) -> Result<Probe, Error> {
    let fail = |what: &str, e: std::io::Error| {
        let e = if e.kind() == std::io::ErrorKind::WouldBlock {
            "timed out".to_string()
        } else {
            e.to_string()
        };
        Error::new(format!("{what} {endpoint}: {e}"))
    };
    if endpoint.workload == Workload::Chat {
        return Err(Error::new(format!(
            "{endpoint}: a chat room sends nothing back to the sender, so there is no echo to \
             probe; measure it with `loadgen {endpoint}`"
        )));
    }
    match &endpoint.address {
        Address::Tcp(addr) => {
            let s = connect(*addr, timeout, endpoint.proxy)
                .map_err(|e| fail("cannot connect to", e))?;
            let _ = s.set_nodelay(true);
            s.set_read_timeout(Some(timeout)).map_err(|e| fail("socket", e))?;
            s.set_write_timeout(Some(timeout)).map_err(|e| fail("socket", e))?;
            stream_round_trip(endpoint, s, message).map_err(|e| fail("no echo from", e))
        }
        Address::Tls(addr) => {
            let tls = tls.ok_or_else(|| Error::new("a tls:// probe needs its TLS settings"))?;
            let mut s = handshake(*addr, tls, timeout, endpoint.proxy)
                .map_err(|e| fail("no TLS session with", e))?;
            let probe =
                stream_round_trip(endpoint, &mut s, message).map_err(|e| fail("no echo from", e));
            close_politely(s);
            probe
        }
        Address::Unix(path) => {
            let s = connect_unix(path, endpoint.proxy).map_err(|e| fail("cannot connect to", e))?;
            s.set_read_timeout(Some(timeout)).map_err(|e| fail("socket", e))?;
            s.set_write_timeout(Some(timeout)).map_err(|e| fail("socket", e))?;
            stream_round_trip(endpoint, s, message).map_err(|e| fail("no echo from", e))
        }
        Address::Udp(addr) => {
            let local = if addr.is_ipv6() { "[::]:0" } else { "0.0.0.0:0" };
            let s = UdpSocket::bind(local).map_err(|e| fail("socket for", e))?;
            s.connect(addr).map_err(|e| fail("cannot connect to", e))?;
            s.set_read_timeout(Some(timeout)).map_err(|e| fail("socket", e))?;
            let start = Instant::now();
            s.send(message).map_err(|e| fail("cannot send to", e))?;
            let mut buf = vec![0; 65536];
            let n = s.recv(&mut buf).map_err(|e| fail("no echo from", e))?;
            buf.truncate(n);
            Ok(Probe { endpoint: endpoint.clone(), echo: buf, rtt: start.elapsed() })
        }
    }
}

fn stream_round_trip<S: Read + Write>(
    endpoint: &Endpoint,
    mut s: S,
    message: &[u8],
) -> std::io::Result<Probe> {
    if let Some(target) = &endpoint.websocket {
        return ws_round_trip(endpoint, target, s, message);
    }
    let start = Instant::now();
    s.write_all(message)?;
    let mut echo = Vec::with_capacity(message.len());
    let mut buf = [0u8; 4096];
    while echo.len() < message.len() {
        let n = s.read(&mut buf)?;
        if n == 0 {
            break; // closed early: the comparison shows what is missing
        }
        echo.extend_from_slice(&buf[..n]);
    }
    Ok(Probe { endpoint: endpoint.clone(), echo, rtt: start.elapsed() })
}
