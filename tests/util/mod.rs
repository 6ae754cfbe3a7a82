//! Helpers shared by the integration tests: clients with timeouts on every blocking call, a
//! deterministic payload, the built binary as a child process with its ready line, and readings
//! from /proc (fd count, RSS, CPU time) for the process-level checks.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

/// Every blocking call in the tests gives up after this long: a bug shows as a failure, not a hang.
pub const TIMEOUT: Duration = Duration::from_secs(20);

/// A TCP client with read/write timeouts.
pub fn connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect_timeout(&addr, TIMEOUT).expect("connect");
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(TIMEOUT)).unwrap();
    stream
}

/// `len` bytes of a pattern that differs per `seed` and never repeats with a short period.
pub fn payload(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Writes `data` on one thread while reading the echo on this one; returns what came back
/// (everything up to `data.len()` bytes). Concurrent, so a server that does not buffer more than
/// its cap still works.
pub fn echo_concurrently(stream: &TcpStream, data: &[u8], write_chunk: usize) -> Vec<u8> {
    let mut writer = stream.try_clone().unwrap();
    let mut got = Vec::with_capacity(data.len());
    std::thread::scope(|s| {
        s.spawn(move || {
            for chunk in data.chunks(write_chunk.max(1)) {
                writer.write_all(chunk).expect("write");
            }
        });
        let mut reader = stream;
        let mut buf = vec![0; 256 * 1024];
        while got.len() < data.len() {
            let n = reader.read(&mut buf).expect("read");
            assert!(n > 0, "EOF after {} of {} bytes", got.len(), data.len());
            got.extend_from_slice(&buf[..n]);
        }
    });
    got
}

/// Reads until EOF; panics on a reset or timeout.
pub fn read_to_eof(mut stream: &TcpStream) -> Vec<u8> {
    let mut all = Vec::new();
    stream.read_to_end(&mut all).expect("read to EOF (not a reset)");
    all
}

/// One small round trip.
pub fn ping(stream: &mut TcpStream, msg: &[u8]) {
    stream.write_all(msg).unwrap();
    let mut back = vec![0; msg.len()];
    stream.read_exact(&mut back).unwrap();
    assert_eq!(back, msg);
}

/// Waits (polling, bounded) until `cond` holds; panics with `what` otherwise. For conditions no
/// event announces (a counter in another process, a stalled writer).
pub fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < TIMEOUT, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The built `ricochet` binary running as a child, with its ready line read.
pub struct ServerProcess {
    pub child: Child,
    pub ready: serde_json::Value,
    pub stdout: BufReader<ChildStdout>,
}

impl ServerProcess {
    /// Starts the binary with `args` and waits for its ready line.
    pub fn start(args: &[&str]) -> ServerProcess {
        Self::start_with(Command::new(env!("CARGO_BIN_EXE_ricochet")).args(args))
    }

    /// Starts a prepared command (env, rlimits) and waits for its ready line.
    pub fn start_with(cmd: &mut Command) -> ServerProcess {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start ricochet");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).expect("ready line");
        let ready: serde_json::Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("ready line {line:?} is not JSON: {e}"));
        assert_eq!(ready["event"], "ready");
        ServerProcess { child, ready, stdout }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Address of listener `i` from the ready line.
    pub fn addr(&self, i: usize) -> SocketAddr {
        self.ready["listeners"][i]["addr"].as_str().unwrap().parse().unwrap()
    }

    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid.
        assert_eq!(unsafe { libc::kill(self.pid(), signal) }, 0);
    }

    /// Next JSON line on stdout.
    pub fn next_line(&mut self) -> serde_json::Value {
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("stdout line");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?} is not JSON: {e}"))
    }

    /// Waits for exit (bounded); returns the exit code, the rest of stdout and stderr.
    pub fn wait(mut self) -> (i32, String, String) {
        let start = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(start.elapsed() < TIMEOUT, "ricochet did not exit");
            std::thread::sleep(Duration::from_millis(5));
        };
        let mut out = String::new();
        self.stdout.read_to_string(&mut out).unwrap();
        let mut err = String::new();
        self.child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
        (status.code().unwrap_or(-1), out, err)
    }

    pub fn fd_count(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid())).unwrap().count()
    }

    /// Resident set size in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS")
    }

    /// User + system CPU time in clock ticks.
    pub fn cpu_ticks(&self) -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap();
        let after_comm = &stat[stat.rfind(')').unwrap() + 2..];
        let fields: Vec<&str> = after_comm.split(' ').collect();
        // Fields 14 and 15 of stat(5) (utime, stime); after_comm starts at field 3.
        fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
    }
}

impl Drop for ServerProcess {
    /// SIGTERM first, so the server cleans up after itself (a generated certificate's file, a
    /// Unix socket); SIGKILL if it has not gone within two seconds.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: kill(2) on our own child's pid.
            unsafe { libc::kill(self.pid(), libc::SIGTERM) };
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(2) {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the binary with `args` to completion (for usage errors); returns code and stderr. A
/// binary still running after [`TIMEOUT`] (it accepted what it should have refused) is killed,
/// and the test fails.
pub fn run_to_exit(args: &[&str]) -> (i32, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ricochet"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run ricochet");
    let mut stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut err = String::new();
        let _ = stderr.read_to_string(&mut err);
        err
    });
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("ricochet {args:?} was still running after {TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    (status.code().unwrap_or(-1), reader.join().unwrap())
}

/// Half-closes and returns everything until EOF.
pub fn finish(stream: &TcpStream) -> Vec<u8> {
    stream.shutdown(Shutdown::Write).unwrap();
    read_to_eof(stream)
}

/// Raises this process's soft RLIMIT_NOFILE to at least `want` (bounded by the hard limit).
pub fn raise_nofile(want: u64) {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit with a valid struct.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        if lim.rlim_cur < want {
            lim.rlim_cur = want.min(lim.rlim_max);
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
        }
    }
}

/// A rustls client over a blocking TCP stream.
pub type TlsClient = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// A rustls client of `addr` (connected with [`connect`]'s timeouts) that trusts exactly the
/// certificate in the PEM file `cert`, for the name `localhost`.
pub fn rustls_client_trusting(cert: &std::path::Path, addr: SocketAddr) -> TlsClient {
    rustls_over(cert, connect(addr))
}

/// As [`rustls_client_trusting`], over a socket already connected.
pub fn rustls_over(cert: &std::path::Path, sock: TcpStream) -> TlsClient {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_file_iter(cert).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = "localhost".try_into().unwrap();
    let conn = rustls::ClientConnection::new(std::sync::Arc::new(config), name).unwrap();
    rustls::StreamOwned::new(conn, sock)
}
