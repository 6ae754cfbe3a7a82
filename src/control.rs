//! Changing a running server: a [`Controller`] sets or removes a listener's fault plan while the
//! server runs (behind [`crate::Handle::set_faults`]), and a [`ControlSocket`] serves the same
//! over a Unix socket with a line protocol, for scripts (`ricochet --control PATH`):
//!
//! ```text
//! faults INDEX PLAN     -> ok | error: ...     (INDEX: the listener's place in the ready line)
//! faults INDEX off      -> ok | error: ...
//! stats                 -> {"event":"stats",...}
//! ```
//!
//! One reply line per command, several commands per connection; a blank line is ignored, and a
//! line that is not a command (unknown, longer than 64 KiB, not UTF-8) is answered `error: ...`
//! and the connection goes on. A command that fails changes nothing. A change has taken effect,
//! for existing and new connections, when its `ok` arrives: the controller waits for the reactor
//! to apply it.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::{Arc, Mutex};

use mio::Waker;

use crate::error::{Error, Result};
use crate::faults::Faults;
use crate::listener::SocketFile;
use crate::stats::{SharedStats, Stats};

/// Control connections served at once; more are told so and closed.
const MAX_CLIENTS: usize = 16;
/// The longest command line taken.
pub(crate) const MAX_LINE: u64 = 64 * 1024;

/// A change for the reactor, with where to say how it went.
#[derive(Debug)]
pub(crate) struct Command {
    pub listener: usize,
    pub plan: Option<Faults>,
    pub done: SyncSender<Result<(), String>>,
}

/// The reactor's inbox: `None` once the reactor has stopped (a command would wait forever).
pub(crate) type Inbox = Arc<Mutex<Option<Vec<Command>>>>;

/// Changes a running server's fault plans; cheap to clone, usable from any thread.
#[derive(Debug, Clone)]
pub struct Controller {
    /// Each reactor's inbox and waker: a change goes to all of them.
    inboxes: Arc<[Inbox]>,
    wakers: Arc<[Arc<Waker>]>,
    /// Each listener's protocol, in the ready line's order.
    protos: Arc<[&'static str]>,
    shared: Arc<[Arc<SharedStats>]>,
}

impl Controller {
    pub(crate) fn new(
        inboxes: Vec<Inbox>,
        wakers: Vec<Arc<Waker>>,
        protos: Vec<&'static str>,
        shared: Vec<Arc<SharedStats>>,
    ) -> Self {
        Controller {
            inboxes: inboxes.into(),
            wakers: wakers.into(),
            protos: protos.into(),
            shared: shared.into(),
        }
    }

    /// Sets (`Some`) or removes (`None`) the fault plan of listener `index` (its place in the
    /// ready line's `listeners`), for its existing and new connections; returns once the reactor
    /// has applied it. Byte counts of `*-after` faults run from each connection's start; a
    /// stalled connection that the new plan does not stall resumes. Errors (nothing changed): no
    /// such listener, a plan that does not suit it, a chat room, or a server that has stopped.
    pub fn set_faults(&self, index: usize, plan: Option<Faults>) -> Result<()> {
        let fail = |msg: String| Error::Control(msg);
        let Some(proto) = self.protos.get(index) else {
            return Err(fail(format!(
                "there is no listener {index} (the ready line lists {}, counted from 0)",
                self.protos.len()
            )));
        };
        if let Some(plan) = &plan {
            plan.check_for(proto).map_err(fail)?;
        }
        let (done, reply) = sync_channel(self.inboxes.len());
        for (inbox, waker) in self.inboxes.iter().zip(self.wakers.iter()) {
            {
                let mut inbox = inbox.lock().unwrap_or_else(|e| e.into_inner());
                let Some(commands) = inbox.as_mut() else {
                    return Err(fail("the server has stopped".into()));
                };
                let plan = plan.clone();
                commands.push(Command { listener: index, plan, done: done.clone() });
            }
            let _ = waker.wake();
        }
        drop(done);
        // Every reactor answers (the same way: they hold the same listeners).
        let mut result = Ok(());
        for _ in 0..self.inboxes.len() {
            match reply.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => result = Err(fail(e)),
                Err(_) => return Err(fail("the server stopped before applying the change".into())),
            }
        }
        result
    }

    /// The counters as of the server's last completed turn (every reactor's, summed).
    pub fn stats(&self) -> Stats {
        Stats::total(&self.reactor_stats())
    }

    /// Each reactor's counters, in order.
    pub fn reactor_stats(&self) -> Vec<Stats> {
        self.shared.iter().map(|s| s.load()).collect()
    }

    /// Runs one line of the control protocol; returns the reply line (without its newline), or
    /// `None` for a blank line.
    pub fn command(&self, line: &str) -> Option<String> {
        let reply = match Request::parse(line)? {
            Ok(Request::Stats) => {
                return Some(crate::stats::event_json("stats", &self.reactor_stats()))
            }
            Ok(Request::Faults { index, plan }) => self.set_faults(index, plan),
            Err(e) => return Some(format!("error: {e}")),
        };
        Some(match reply {
            Ok(()) => "ok".into(),
            Err(e) => format!("error: {e}"),
        })
    }
}

/// One line of the control protocol, read (made once per command line: its size is no cost).
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Request {
    /// `stats`
    Stats,
    /// `faults INDEX PLAN` (`Some`) or `faults INDEX off` (`None`).
    Faults { index: usize, plan: Option<Faults> },
}

impl Request {
    /// Reads a command line: `None` for a blank line, else the request or what is wrong with
    /// it (one line, without the `error: ` the reply puts first).
    pub(crate) fn parse(line: &str) -> Option<Result<Request, String>> {
        let words: Vec<&str> = line.split_whitespace().collect();
        Some(match words.as_slice() {
            [] => return None,
            ["stats"] => Ok(Request::Stats),
            ["faults", index, plan] => match index.parse::<usize>() {
                Err(_) => Err(format!("`{index}` is not a listener index")),
                Ok(index) => match *plan {
                    "off" => Ok(Request::Faults { index, plan: None }),
                    text => {
                        Faults::parse(text).map(|plan| Request::Faults { index, plan: Some(plan) })
                    }
                },
            },
            _ => Err(format!(
                "unknown command `{}` (commands: faults INDEX PLAN, faults INDEX off, stats)",
                line.trim()
            )),
        })
    }
}

impl std::fmt::Display for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Request::Stats => f.write_str("stats"),
            Request::Faults { index, plan: None } => write!(f, "faults {index} off"),
            Request::Faults { index, plan: Some(plan) } => write!(f, "faults {index} {plan}"),
        }
    }
}

/// The `--control` socket: a Unix socket served by a thread of its own (one more per client),
/// speaking [`Controller::command`]'s protocol. Dropping it stops accepting and removes the file.
#[derive(Debug)]
pub struct ControlSocket {
    path: PathBuf,
    file: SocketFile,
    stop: Arc<AtomicBool>,
}

impl ControlSocket {
    /// Binds `path` (a stale socket file is replaced; another file, or a socket someone
    /// accepts on, is an error) and serves it until dropped. The socket exists when this returns.
    pub fn bind(path: &Path, controller: Controller) -> Result<ControlSocket> {
        let (listener, file) = crate::listener::bind_unix(path, 16)?;
        let listener = UnixListener::from(std::os::fd::OwnedFd::from(listener));
        listener.set_nonblocking(false).map_err(Error::io("setting up the control socket"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        std::thread::Builder::new()
            .name("ricochet-control".into())
            .spawn(move || accept_loop(listener, controller, flag))
            .map_err(Error::io("starting the control thread"))?;
        Ok(ControlSocket { path: path.to_owned(), file, stop })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        let _ = UnixStream::connect(&self.path); // wakes the accept so the thread sees the flag
        self.file.remove();
    }
}

fn accept_loop(listener: UnixListener, controller: Controller, stop: Arc<AtomicBool>) {
    let busy = |mut stream: UnixStream| {
        let _ = writeln!(stream, "error: {MAX_CLIENTS} control connections are open already");
    };
    let serve = move |stream| {
        let _ = serve_client(stream, &controller);
    };
    let name = "ricochet-control-client";
    crate::side::serve_clients(listener.incoming(), &stop, MAX_CLIENTS, name, busy, serve);
}

/// Answers each line of one control connection until it closes.
fn serve_client(stream: UnixStream, controller: &Controller) -> io::Result<()> {
    let writer = stream.try_clone()?;
    session(stream, writer, |line| controller.command(line))
}

/// One control session over any reader and writer: one reply per line but a blank one, and a
/// line that is not a command (too long, not UTF-8) gets its `error: ...` like any other, so the
/// lines after it are still answered. A last line without its newline is answered too.
pub(crate) fn session(
    reader: impl Read,
    mut writer: impl Write,
    mut answer: impl FnMut(&str) -> Option<String>,
) -> io::Result<()> {
    let mut reader = BufReader::new(reader);
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = (&mut reader).take(MAX_LINE).read_until(b'\n', &mut line)?;
        if n == 0 {
            return Ok(());
        }
        let reply = if line.last() != Some(&b'\n') && n as u64 == MAX_LINE {
            reader.skip_until(b'\n')?; // the rest of the line, unread and unkept
            Some(format!("error: a command line longer than {MAX_LINE} bytes"))
        } else {
            match std::str::from_utf8(&line) {
                Ok(text) => answer(text),
                Err(_) => Some("error: a command line must be UTF-8 text".into()),
            }
        };
        if let Some(reply) = reply {
            writer.write_all(format!("{reply}\n").as_bytes())?;
        }
    }
}
