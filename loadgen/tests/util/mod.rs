//! Misbehaving echo servers for loadgen's tests: each is a tiny blocking server with one flaw,
//! bound to 127.0.0.1:0, stopped when dropped.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What the test server does wrong.
#[derive(Debug, Clone, Copy)]
pub enum Flaw {
    /// Flips one bit of the byte at this offset of the first connection's stream (once).
    CorruptOnce(u64),
    /// Closes every connection after echoing this many bytes.
    CloseAfter(u64),
    /// Echoes normally, but from `after` (since start) stalls for `stall` once.
    StallOnce { after: Duration, stall: Duration },
    /// Reads but never echoes.
    Silent,
}

/// What a test chat room does wrong, to the member that joined second, once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChatFlaw {
    /// Never delivers the line that would be its `n`th.
    DropNth(u64),
    /// Delivers its `n`th line twice.
    DuplicateNth(u64),
}

/// A chat room with a flaw: each line a member sends goes to every other member, except that
/// the second member to join misses (or gets twice) one line. One thread per member, a lock
/// around the room: simple, not fast.
pub struct FlawedRoom {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl FlawedRoom {
    pub fn start(flaw: ChatFlaw) -> FlawedRoom {
        use std::io::BufRead;
        use std::sync::Mutex;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = Arc::clone(&stop);
        // (member number, its stream, lines delivered to it)
        let room: Arc<Mutex<Vec<(usize, TcpStream, u64)>>> = Arc::new(Mutex::new(Vec::new()));
        std::thread::spawn(move || {
            let mut joined = 0;
            while !stop2.load(Ordering::Relaxed) {
                let Ok((stream, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(2));
                    continue;
                };
                stream.set_nonblocking(false).unwrap();
                let me = joined;
                joined += 1;
                room.lock().unwrap().push((me, stream.try_clone().unwrap(), 0));
                let room = Arc::clone(&room);
                std::thread::spawn(move || {
                    let mut reader = std::io::BufReader::new(stream);
                    let mut line = Vec::new();
                    while reader.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) {
                        let mut room = room.lock().unwrap();
                        for (member, out, delivered) in room.iter_mut() {
                            if *member == me {
                                continue;
                            }
                            *delivered += 1;
                            let copies = match flaw {
                                ChatFlaw::DropNth(n) if *member == 1 && *delivered == n => 0,
                                ChatFlaw::DuplicateNth(n) if *member == 1 && *delivered == n => 2,
                                _ => 1,
                            };
                            for _ in 0..copies {
                                let _ = out.write_all(&line);
                            }
                        }
                        line.clear();
                    }
                    room.lock().unwrap().retain(|(member, ..)| *member != me);
                });
            }
        });
        FlawedRoom { addr, stop }
    }

    pub fn target(&self) -> String {
        format!("chat://{}", self.addr)
    }
}

impl Drop for FlawedRoom {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// A TCP server with a flaw.
pub struct FlawedServer {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl FlawedServer {
    pub fn start(flaw: Flaw) -> FlawedServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = Arc::clone(&stop);
        let corrupted = Arc::new(AtomicBool::new(false));
        let start = Instant::now();
        std::thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let corrupted = Arc::clone(&corrupted);
                        let stop = Arc::clone(&stop2);
                        std::thread::spawn(move || serve(stream, flaw, &corrupted, start, &stop));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        FlawedServer { addr, stop }
    }

    pub fn target(&self) -> String {
        format!("tcp://{}", self.addr)
    }
}

impl Drop for FlawedServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn serve(
    mut stream: TcpStream,
    flaw: Flaw,
    corrupted: &AtomicBool,
    start: Instant,
    stop: &AtomicBool,
) {
    let _ = stream.set_nodelay(true);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(100)));
    let mut buf = vec![0u8; 64 * 1024];
    let mut echoed = 0u64;
    let mut stalled = false;
    while !stop.load(Ordering::Relaxed) {
        let n = match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(_) => return,
        };
        let data = &mut buf[..n];
        match flaw {
            Flaw::CorruptOnce(at) => {
                if at >= echoed && at < echoed + n as u64 && !corrupted.swap(true, Ordering::SeqCst)
                {
                    data[(at - echoed) as usize] ^= 0x01;
                }
            }
            Flaw::CloseAfter(limit) => {
                if echoed + n as u64 >= limit {
                    let _ = stream.write_all(&data[..(limit - echoed) as usize]);
                    return;
                }
            }
            Flaw::StallOnce { after, stall } => {
                if !stalled && start.elapsed() >= after {
                    stalled = true;
                    std::thread::sleep(stall);
                }
            }
            Flaw::Silent => continue,
        }
        if stream.write_all(data).is_err() {
            return;
        }
        echoed += n as u64;
    }
}

/// A UDP echo server that drops every `nth` datagram (counted over all senders), or, made with
/// [`LossyUdp::swapping`], answers datagrams in swapped pairs (the second before the first),
/// except the first datagram from each address, answered at once (loadgen's preflight sends one).
pub struct LossyUdp {
    pub addr: SocketAddr,
    pub dropped: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl LossyUdp {
    pub fn start(nth: u64) -> LossyUdp {
        Self::with(nth, false)
    }

    pub fn swapping() -> LossyUdp {
        Self::with(u64::MAX, true)
    }

    fn with(nth: u64, swap: bool) -> LossyUdp {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let addr = socket.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let dropped = Arc::new(AtomicU64::new(0));
        let (stop2, dropped2) = (Arc::clone(&stop), Arc::clone(&dropped));
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            let mut count = 0u64;
            let mut held: Option<(Vec<u8>, SocketAddr)> = None;
            let mut seen = std::collections::HashSet::new();
            while !stop2.load(Ordering::Relaxed) {
                let Ok((n, from)) = socket.recv_from(&mut buf) else { continue };
                count += 1;
                if count.is_multiple_of(nth) {
                    dropped2.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                if swap && seen.insert(from) {
                    let _ = socket.send_to(&buf[..n], from);
                    continue;
                }
                if swap {
                    match held.take() {
                        None => held = Some((buf[..n].to_vec(), from)),
                        Some((first, first_from)) => {
                            let _ = socket.send_to(&buf[..n], from);
                            let _ = socket.send_to(&first, first_from);
                        }
                    }
                    continue;
                }
                let _ = socket.send_to(&buf[..n], from);
            }
        });
        LossyUdp { addr, dropped, stop }
    }
}

impl Drop for LossyUdp {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Runs the loadgen binary to completion (bounded by its own flags) and returns its output.
pub fn loadgen(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run loadgen")
}

/// Parses the one JSON object loadgen printed.
pub fn json(out: &Output) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.lines().count(), 1, "exactly one line on stdout: {stdout:?}");
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{stdout:?}: {e}"))
}
