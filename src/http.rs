//! A small HTTP/1.1 server for scrapes and probes (`/metrics`, `/healthz`), on threads of its own
//! so that it never touches the data path: one thread accepts, one serves each client (at most
//! [`MAX_CLIENTS`] at once; the next is answered 503 and closed). Its connections are not the
//! echo's: they appear in no counter.
//!
//! Bounded like any listener: a request head over [`MAX_HEAD`] is answered 431, a head that
//! takes longer than [`HEAD_TIMEOUT`] to arrive (or a keep-alive connection idle that long) is
//! closed, and a request with a body is answered and then closed (the body is never read).
//! `GET` and `HEAD` only (others: 405). Keep-alive as HTTP/1.1 says (`Connection: close`, or
//! HTTP/1.0 without keep-alive, closes after the answer).

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// Clients served at once.
pub const MAX_CLIENTS: usize = 16;
/// The longest request head read (431 past it), here and by the WebSocket opening handshake.
pub const MAX_HEAD: usize = 8 * 1024;
/// How long a request head may take to arrive, and how long a kept-alive connection may idle.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// An answer to a `GET`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status code (200, 404, 503, ...).
    pub status: u16,
    /// The `Content-Type` header's value.
    pub content_type: &'static str,
    /// The body (a `HEAD` gets its length only).
    pub body: String,
}

impl Response {
    /// A plain-text answer.
    pub fn text(status: u16, body: impl Into<String>) -> Response {
        Response { status, content_type: "text/plain; charset=utf-8", body: body.into() }
    }

    /// 404 for a path that is not served.
    pub fn not_found(path: &str) -> Response {
        Response::text(404, format!("not found: {path}\n"))
    }
}

/// What a server serves: the answer to a `GET` of `path` (the query string removed).
pub trait Pages: Send + Sync + 'static {
    /// The answer to `GET path`.
    fn get(&self, path: &str) -> Response;
}

/// The HTTP server, serving until dropped.
#[derive(Debug)]
pub struct HttpServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    /// The accepting thread (its clients' threads end with their connections).
    thread: Option<std::thread::JoinHandle<()>>,
}

impl HttpServer {
    /// Binds `addr` and serves `pages` there from a thread of its own. `proto` names it in
    /// errors (e.g. `metrics`).
    pub fn bind(
        addr: SocketAddr,
        pages: Arc<dyn Pages>,
        proto: &'static str,
    ) -> Result<HttpServer> {
        let listener = TcpListener::bind(addr).map_err(|cause| Error::Bind {
            proto,
            addr: addr.to_string(),
            cause,
        })?;
        let addr = listener.local_addr().map_err(Error::io("reading the bound address"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("ricochet-http".into())
            .spawn(move || accept_loop(listener, pages, flag))
            .map_err(Error::io("starting the HTTP thread"))?;
        Ok(HttpServer { addr, stop, thread: Some(thread) })
    }

    /// The bound address (port 0 resolved).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        // Wakes the accept so the thread sees the flag (a wildcard address is reached over
        // loopback).
        let mut wake = self.addr;
        if wake.ip().is_unspecified() {
            wake.set_ip(match wake {
                SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        if TcpStream::connect_timeout(&wake, Duration::from_secs(1)).is_ok() {
            // The listener is closed once this returns.
            if let Some(thread) = self.thread.take() {
                let _ = thread.join();
            }
        }
    }
}

fn accept_loop(listener: TcpListener, pages: Arc<dyn Pages>, stop: Arc<AtomicBool>) {
    let busy = |mut stream: TcpStream| {
        let busy = Response::text(503, "too many clients\n");
        let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
        let _ = write_response(&mut stream, &busy, false, true);
        let _ = stream.shutdown(Shutdown::Write);
        // What the client sent already is read (not waited for): closing with it unread would
        // reset the connection, and the client might lose the answer.
        let _ = stream.set_nonblocking(true);
        let _ = stream.read(&mut [0u8; MAX_HEAD]);
    };
    let serve = move |stream| {
        let _ = serve_client(stream, &*pages);
    };
    crate::side::serve_clients(
        listener.incoming(),
        &stop,
        MAX_CLIENTS,
        "ricochet-http-client",
        busy,
        serve,
    );
}

/// Answers one client's requests until it closes, asks to close, times out or errs.
fn serve_client(mut stream: TcpStream, pages: &dyn Pages) -> io::Result<()> {
    stream.set_write_timeout(Some(HEAD_TIMEOUT))?;
    let mut buf = vec![0u8; MAX_HEAD];
    let mut filled = 0;
    loop {
        let deadline = Instant::now() + HEAD_TIMEOUT;
        let (response, head_len, keep_alive, head_only) = loop {
            match parse(&buf[..filled]) {
                Parsed::Partial if filled == buf.len() => {
                    let big =
                        Response::text(431, format!("a request head over {MAX_HEAD} bytes\n"));
                    break (big, filled, false, false);
                }
                Parsed::Partial => {}
                Parsed::Bad => {
                    break (Response::text(400, "a malformed request\n"), filled, false, false)
                }
                Parsed::Request { len, method, path, keep_alive } => {
                    let head_only = method == Method::Head;
                    let response = match method {
                        Method::Other => Response::text(405, "only GET and HEAD are served\n"),
                        _ => pages.get(&path),
                    };
                    break (response, len, keep_alive, head_only);
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(()); // a head that never ends: closed
            }
            stream.set_read_timeout(Some(left))?;
            match stream.read(&mut buf[filled..]) {
                Ok(0) => return Ok(()),
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        };
        write_response(&mut stream, &response, head_only, !keep_alive)?;
        if !keep_alive {
            let _ = stream.shutdown(Shutdown::Write);
            return Ok(());
        }
        buf.copy_within(head_len..filled, 0);
        filled -= head_len;
    }
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Method {
    Get,
    Head,
    Other,
}

#[derive(Debug)]
pub(crate) enum Parsed {
    Partial,
    Bad,
    Request { len: usize, method: Method, path: String, keep_alive: bool },
}

/// The value of a request head's header `name` (any case), if it has one. Shared with the
/// WebSocket upgrade's head (`transport/ws.rs`).
pub(crate) fn header<'h>(headers: &[httparse::Header<'h>], name: &str) -> Option<&'h [u8]> {
    headers.iter().find(|h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value)
}

/// Whether header `name` lists `token` among its comma-separated values (any case).
pub(crate) fn has_token(headers: &[httparse::Header<'_>], name: &str, token: &str) -> bool {
    header(headers, name).is_some_and(|v| {
        String::from_utf8_lossy(v).split(',').any(|t| t.trim().eq_ignore_ascii_case(token))
    })
}

/// Parses a request head from the start of `data`.
pub(crate) fn parse(data: &[u8]) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut request = httparse::Request::new(&mut headers);
    let len = match request.parse(data) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::Bad,
    };
    let method = match request.method {
        Some("GET") => Method::Get,
        Some("HEAD") => Method::Head,
        _ => Method::Other,
    };
    let target = request.path.unwrap_or("/");
    let path = target.split(['?', '#']).next().unwrap_or("/").to_owned();
    let headers = &*request.headers;
    let has_body = header(headers, "transfer-encoding").is_some()
        || header(headers, "content-length").is_some_and(|v| v.trim_ascii() != b"0");
    let keep_alive = !has_body
        && match request.version {
            Some(1) => !has_token(headers, "connection", "close"),
            _ => has_token(headers, "connection", "keep-alive"),
        };
    Parsed::Request { len, method, path, keep_alive }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "",
    }
}

fn write_response(
    stream: &mut TcpStream,
    response: &Response,
    head_only: bool,
    close: bool,
) -> io::Result<()> {
    let mut out = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\n",
        response.status,
        reason(response.status),
        response.content_type,
        response.body.len()
    );
    if response.status == 405 {
        out.push_str("Allow: GET, HEAD\r\n");
    }
    if close {
        out.push_str("Connection: close\r\n");
    }
    out.push_str("\r\n");
    if !head_only {
        out.push_str(&response.body);
    }
    stream.write_all(out.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_parse_with_keep_alive_as_http_says() {
        let req = |text: &str| parse(text.as_bytes());
        match req("GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\n\r\nGET") {
            Parsed::Request { len, method, path, keep_alive } => {
                assert_eq!(
                    (len, method, path.as_str(), keep_alive),
                    (38, Method::Get, "/metrics", true)
                );
            }
            other => panic!("{other:?}"),
        }
        let keep = |text: &str| match req(text) {
            Parsed::Request { keep_alive, .. } => keep_alive,
            other => panic!("{other:?}"),
        };
        assert!(!keep("GET / HTTP/1.1\r\nConnection: Close\r\n\r\n"));
        assert!(!keep("GET / HTTP/1.0\r\n\r\n"));
        assert!(keep("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"));
        assert!(!keep("GET / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello"), "a body closes");
        assert!(matches!(req("GET / HTTP/1.1\r\nHost: a\r\n"), Parsed::Partial));
        assert!(matches!(req("GET / HTTP/1.1\r\nHo st: a\r\n\r\n"), Parsed::Bad));
        assert!(matches!(req("\x16\x03\x01\x02\x00"), Parsed::Bad));
        match req("POST /metrics HTTP/1.1\r\n\r\n") {
            Parsed::Request { method, .. } => assert_eq!(method, Method::Other),
            other => panic!("{other:?}"),
        }
    }
}
