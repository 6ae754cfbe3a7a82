//! tokio's chat example (examples/chat.rs in tokio's repository) adapted to raw lines: the
//! baseline of scripts/compare.sh's fan-out section. As in the example, a shared map of peers
//! behind a tokio Mutex, one task per peer selecting between its socket and its unbounded
//! channel, and each line sent to every other peer's channel; but lines are raw bytes (no
//! LinesCodec, no UTF-8 check, no name prompt) so that loadgen's load-test lines go through
//! unchanged. Prints its port, runs until SIGTERM/SIGINT.
//!
//!     tokio-chat PORT

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, Mutex};

type Line = Arc<[u8]>;
type Tx = mpsc::UnboundedSender<Line>;

#[derive(Default)]
struct Shared {
    peers: HashMap<SocketAddr, Tx>,
}

impl Shared {
    fn broadcast(&self, sender: SocketAddr, line: &Line) {
        for (addr, tx) in &self.peers {
            if *addr != sender {
                let _ = tx.send(Arc::clone(line));
            }
        }
    }
}

async fn process(state: Arc<Mutex<Shared>>, stream: TcpStream, addr: SocketAddr) {
    let (tx, mut rx) = mpsc::unbounded_channel::<Line>();
    state.lock().await.peers.insert(addr, tx);
    let (reader, mut writer) = stream.into_split();
    let mut reader = BufReader::with_capacity(64 * 1024, reader);
    let mut line = Vec::new();
    loop {
        tokio::select! {
            Some(msg) = rx.recv() => {
                if writer.write_all(&msg).await.is_err() {
                    break;
                }
            }
            read = reader.read_until(b'\n', &mut line) => {
                match read {
                    Ok(n) if n > 0 && line.ends_with(b"\n") => {
                        let msg: Line = Arc::from(&line[..]);
                        state.lock().await.broadcast(addr, &msg);
                        line.clear();
                    }
                    _ => break, // EOF (an unterminated tail is dropped, as LinesCodec would) or error
                }
            }
        }
    }
    state.lock().await.peers.remove(&addr);
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let port: u16 = std::env::args().nth(1).and_then(|p| p.parse().ok()).unwrap_or(0);
    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    println!("{}", listener.local_addr()?.port());
    let state = Arc::new(Mutex::new(Shared::default()));
    let mut term = signal(SignalKind::terminate())?;
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, addr)) = accepted else { continue };
                let _ = stream.set_nodelay(true);
                tokio::spawn(process(Arc::clone(&state), stream, addr));
            }
            _ = term.recv() => return Ok(()),
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}
