//! The public face of the reactor: [`Server`] (bind, then run on this thread) and [`spawn`]
//! (run on a thread of its own, controlled through a [`Handle`]).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use mio::Waker;

use crate::certificate::Identity;
use crate::config::{Config, ListenSpec};
use crate::control::Controller;
use crate::error::{Error, Result};
use crate::faults::Faults;
use crate::http::HttpServer;
use crate::metrics::ServerPages;
use crate::reactor::peers::Peers;
use crate::reactor::{Reactor, CMD_DRAIN, CMD_STOP};
use crate::stats::{SharedStats, Stats};

/// A bound server, not yet running. Every listener is bound and listening once this exists, so
/// clients may connect (they wait in the backlog until [`Server::run`]).
#[derive(Debug)]
pub struct Server {
    /// The reactors: the first accepts every stream connection and hands them out.
    reactors: Vec<Reactor>,
    addrs: Vec<ListenSpec>,
    /// Each listener's fault plan as given.
    plans: Vec<Option<String>>,
    seed: u64,
    wakers: Vec<Arc<Waker>>,
    /// The TLS listeners' certificate (a generated one's file goes with the server).
    identity: Option<Identity>,
    /// The `/metrics` and `/healthz` listener, served until the server stops.
    metrics: Option<HttpServer>,
}

impl Server {
    /// Checks `config` and binds every listener.
    pub fn bind(mut config: Config) -> Result<Server> {
        let seed = *config.seed.get_or_insert_with(crate::faults::random_seed);
        let plans = (0..config.listeners.len())
            .map(|i| config.plan(i).map(|p| p.text().to_owned()))
            .collect();
        config.check()?;
        let identity = match config.listeners.iter().any(ListenSpec::is_tls) {
            true => Some(Identity::new(&config.tls)?),
            false => None,
        };
        let tls = identity.as_ref().map(|i| Arc::clone(&i.config));
        let count = config.reactors();
        let (first, addrs, waker) = Reactor::bind(config.clone(), tls.clone())?;
        let (mut reactors, mut wakers) = (vec![first], vec![waker]);
        for index in 1..count {
            let (reactor, waker) = Reactor::follower(config.clone(), tls.clone(), &addrs, index)?;
            reactors.push(reactor);
            wakers.push(waker);
        }
        if count > 1 {
            let peers = Arc::new(Peers::new(
                wakers.clone(),
                reactors.iter().map(Reactor::control).collect(),
                reactors.iter().map(Reactor::shared_stats).collect(),
            ));
            let rooms = reactors[0].room_directories();
            for reactor in &mut reactors {
                reactor.join(Arc::clone(&peers), &rooms);
            }
        }
        let metrics = match config.metrics {
            Some(at) => {
                let sources = reactors.iter().map(Reactor::shared_stats).collect();
                let pages = Arc::new(ServerPages::new(sources, &addrs));
                Some(HttpServer::bind(at, pages, "metrics")?)
            }
            None => None,
        };
        Ok(Server { reactors, addrs, plans, seed, wakers, identity, metrics })
    }

    /// How many reactors (threads) serve.
    pub fn reactor_count(&self) -> usize {
        self.reactors.len()
    }

    /// The certificate file TLS clients can trust and its SHA-256 fingerprint (lowercase hex of
    /// the leaf's DER), if the server has TLS listeners.
    pub fn tls_cert(&self) -> Option<(&Path, &str)> {
        self.identity.as_ref().map(|i| (i.cert_path.as_path(), i.sha256.as_str()))
    }

    /// The `/metrics` listener's address, if it has one.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().map(HttpServer::local_addr)
    }

    /// The seed of every random fault decision (given, or chosen at random).
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The listeners with their concrete addresses (port 0 resolved), in the config's order.
    pub fn local_addrs(&self) -> &[ListenSpec] {
        &self.addrs
    }

    /// The `{"event":"ready",...}` line: pid, the fault seed, and every listener's concrete
    /// address (with its fault plan, if it has one).
    pub fn ready_json(&self) -> String {
        ready_json(&self.addrs, &self.plans, self.seed, self.tls_cert(), self.metrics_addr())
    }

    /// A handle that stops this server from another thread once it runs.
    pub fn stopper(&self) -> Stopper {
        let controls = self.reactors.iter().map(Reactor::control);
        Stopper { reactors: controls.zip(self.wakers.iter().cloned()).collect() }
    }

    /// Live counters of the first reactor, readable while the server runs (with several
    /// reactors, see [`Server::stats_sources`]).
    pub fn stats_source(&self) -> Arc<SharedStats> {
        self.reactors[0].shared_stats()
    }

    /// Live counters of every reactor, in order; their sum is the server's.
    pub fn stats_sources(&self) -> Vec<Arc<SharedStats>> {
        self.reactors.iter().map(Reactor::shared_stats).collect()
    }

    /// A controller that changes this server's fault plans from another thread once it runs
    /// (a change sent before [`Server::run`] is applied when it starts).
    pub fn controller(&self) -> Controller {
        Controller::new(
            self.reactors.iter().map(Reactor::inbox).collect(),
            self.wakers.clone(),
            self.addrs.iter().map(ListenSpec::proto).collect(),
            self.stats_sources(),
        )
    }

    /// Serves until a graceful shutdown completes (a signal, if the config handles them, or a
    /// [`Stopper`]); returns the final counters.
    /// With several reactors, the others run on threads of their own and the returned counters
    /// are their sum (each reactor's final counters stay readable in [`Server::stats_sources`]).
    pub fn run(self) -> Result<Stats> {
        // The metrics listener is dropped (stops) when this returns, after the reactors.
        let Server { mut reactors, wakers, identity, metrics: _metrics, .. } = self;
        let mut first = reactors.remove(0);
        let mut threads = Vec::with_capacity(reactors.len());
        for (i, mut reactor) in reactors.into_iter().enumerate() {
            let spawned = std::thread::Builder::new()
                .name(format!("ricochet-{}", i + 1))
                .spawn(move || reactor.run());
            match spawned {
                Ok(thread) => threads.push(thread),
                Err(e) => {
                    stop_all(&wakers, &first);
                    return Err(Error::Io { context: "starting a reactor thread", cause: e });
                }
            }
        }
        let mut result = first.run();
        for thread in threads {
            let outcome = thread.join().unwrap_or_else(|_| {
                Err(Error::Io {
                    context: "a reactor thread",
                    cause: std::io::Error::other("panicked"),
                })
            });
            match (&mut result, outcome) {
                (Ok(total), Ok(stats)) => total.add(&stats),
                (Ok(_), Err(e)) => result = Err(e),
                (Err(_), _) => {}
            }
        }
        drop(identity); // a generated certificate's temp file goes with the server
        result
    }
}

/// Stops every reactor of a server whose first reactor failed to get the others going.
fn stop_all(wakers: &[Arc<Waker>], first: &Reactor) {
    first.control().fetch_max(CMD_STOP, Ordering::AcqRel);
    for waker in wakers {
        let _ = waker.wake();
    }
}

/// Asks a running server to stop, from any thread.
#[derive(Debug, Clone)]
pub struct Stopper {
    /// Each reactor's command word and waker.
    reactors: Vec<(Arc<AtomicU8>, Arc<Waker>)>,
}

impl Stopper {
    /// Graceful: stop accepting, close connections as they go quiet, give up at the drain timeout.
    pub fn drain(&self) {
        self.send(CMD_DRAIN);
    }

    /// Immediate: close every connection now.
    pub fn stop_now(&self) {
        self.send(CMD_STOP);
    }

    fn send(&self, command: u8) {
        for (control, waker) in &self.reactors {
            control.fetch_max(command, Ordering::AcqRel);
            let _ = waker.wake();
        }
    }
}

/// Builds the ready line for these listeners (`tls`: the certificate file and fingerprint that
/// TLS listeners name; `metrics`: the metrics listener, named last).
pub(crate) fn ready_json(
    addrs: &[ListenSpec],
    plans: &[Option<String>],
    seed: u64,
    tls: Option<(&Path, &str)>,
    metrics: Option<SocketAddr>,
) -> String {
    #[derive(serde::Serialize)]
    struct Ready {
        event: &'static str,
        pid: u32,
        seed: u64,
        listeners: Vec<Listening>,
    }
    #[derive(serde::Serialize)]
    struct Listening {
        proto: &'static str,
        addr: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        cert: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        sha256: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        faults: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        proxy: Option<&'static str>,
    }
    let mut listeners: Vec<Listening> = addrs
        .iter()
        .enumerate()
        .map(|(i, spec)| {
            let tls = tls.filter(|_| spec.is_tls());
            Listening {
                proto: spec.proto(),
                addr: spec.display_addr(),
                cert: tls.map(|(path, _)| path.display().to_string()),
                sha256: tls.map(|(_, sha)| sha.to_owned()),
                faults: plans.get(i).cloned().flatten(),
                proxy: spec.proxy.map(crate::proxy::Proxy::as_str),
            }
        })
        .collect();
    if let Some(addr) = metrics {
        let (cert, sha256, faults, proxy) = (None, None, None, None);
        let addr = addr.to_string();
        listeners.push(Listening { proto: "metrics", addr, cert, sha256, faults, proxy });
    }
    let ready = Ready { event: "ready", pid: std::process::id(), seed, listeners };
    serde_json::to_string(&ready).expect("strings and integers serialize")
}

/// Binds a server and runs it on a thread of its own. The handle knows the bound addresses,
/// reads live counters, and shuts the server down gracefully when asked or when dropped.
pub fn spawn(config: Config) -> Result<Handle> {
    let server = Server::bind(config)?;
    let addrs = server.addrs.clone();
    let shared = server.stats_sources();
    let stopper = server.stopper();
    let controller = server.controller();
    let tls_cert = server.tls_cert().map(|(path, sha)| (path.to_owned(), sha.to_owned()));
    let metrics = server.metrics_addr();
    let thread = std::thread::Builder::new()
        .name("ricochet".into())
        .spawn(move || server.run())
        .map_err(Error::io("starting the server thread"))?;
    Ok(Handle { addrs, shared, stopper, controller, tls_cert, metrics, thread: Some(thread) })
}

/// A server running on its own thread (see [`spawn`]).
#[derive(Debug)]
pub struct Handle {
    addrs: Vec<ListenSpec>,
    /// Each reactor's published counters.
    shared: Vec<Arc<SharedStats>>,
    stopper: Stopper,
    controller: Controller,
    tls_cert: Option<(std::path::PathBuf, String)>,
    metrics: Option<SocketAddr>,
    thread: Option<JoinHandle<Result<Stats>>>,
}

impl Handle {
    /// Every listener with its concrete address.
    pub fn local_addrs(&self) -> &[ListenSpec] {
        &self.addrs
    }

    /// The address of the first listener whose `proto` (the ready line's) is `proto`.
    pub fn first(&self, proto: &str) -> Option<SocketAddr> {
        self.addrs.iter().find(|a| a.proto() == proto).and_then(ListenSpec::addr)
    }

    /// The first TCP listener's address.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.first("tcp")
    }

    /// The first UDP socket's address.
    pub fn udp_addr(&self) -> Option<SocketAddr> {
        self.first("udp")
    }

    /// The first chat room's address.
    pub fn chat_addr(&self) -> Option<SocketAddr> {
        self.first("chat")
    }

    /// The first TLS echo listener's address.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.first("tls")
    }

    /// The certificate file TLS clients can trust, and its SHA-256 fingerprint (lowercase hex of
    /// the leaf's DER); a generated one lasts as long as the server.
    pub fn tls_cert(&self) -> Option<(&Path, &str)> {
        self.tls_cert.as_ref().map(|(path, sha)| (path.as_path(), sha.as_str()))
    }

    /// The `/metrics` and `/healthz` listener's address (see [`Config::metrics`]).
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics
    }

    /// The first Unix listener's path.
    pub fn unix_path(&self) -> Option<&Path> {
        self.addrs.iter().find(|a| a.proto() == "unix").and_then(ListenSpec::path)
    }

    /// The counters as of the server's last completed reactor turn. They are published at the
    /// end of each turn, so a client may see an effect (an echo, an EOF) a moment before the
    /// counters show it: in tests, wait for the expected value rather than reading it once.
    pub fn stats(&self) -> Stats {
        Stats::total(&self.reactor_stats())
    }

    /// Each reactor's counters, in order (one entry with one reactor).
    pub fn reactor_stats(&self) -> Vec<Stats> {
        self.shared.iter().map(|s| s.load()).collect()
    }

    /// Sets (`Some`) or removes (`None`) the fault plan of listener `index` (its place in
    /// [`Handle::local_addrs`] and in the ready line), for its existing and new connections, and
    /// returns once it applies: see [`Controller::set_faults`].
    ///
    /// ```no_run
    /// let server = ricochet::spawn(ricochet::Config::ephemeral())?;
    /// server.set_faults(0, Some("stall-after=0".parse()?))?; // every connection goes silent
    /// server.set_faults(0, None)?; // and resumes
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn set_faults(&self, index: usize, plan: Option<Faults>) -> Result<()> {
        self.controller.set_faults(index, plan)
    }

    /// A controller for this server (usable from other threads).
    pub fn controller(&self) -> Controller {
        self.controller.clone()
    }

    /// A stopper for this server (usable from other threads).
    pub fn stopper(&self) -> Stopper {
        self.stopper.clone()
    }

    /// Graceful shutdown; waits for the server to finish and returns its final counters.
    pub fn shutdown(mut self) -> Result<Stats> {
        self.finish()
    }

    fn finish(&mut self) -> Result<Stats> {
        let Some(thread) = self.thread.take() else { return Ok(self.stats()) };
        self.stopper.drain();
        match thread.join() {
            Ok(result) => result,
            Err(_) => Err(Error::Io {
                context: "the server thread",
                cause: std::io::Error::other("panicked"),
            }),
        }
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        let _ = self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_line_lists_listeners_with_event_first() {
        let line = ready_json(
            &[ListenSpec::tcp("127.0.0.1:4000".parse().unwrap()), ListenSpec::unix("/tmp/x.sock")],
            &[None, Some("close-after=10".into())],
            42,
            Some((Path::new("/tmp/c.pem"), "ab")),
            Some("127.0.0.1:9100".parse().unwrap()),
        );
        assert!(line.starts_with(r#"{"event":"ready","#), "{line}");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["pid"], std::process::id());
        assert_eq!(v["listeners"][0]["proto"], "tcp");
        assert_eq!(v["listeners"][0]["addr"], "127.0.0.1:4000");
        assert_eq!(v["listeners"][1]["addr"], "/tmp/x.sock");
        assert_eq!(v["seed"], 42);
        assert!(v["listeners"][0].get("faults").is_none(), "no plan, no key");
        assert_eq!(v["listeners"][1]["faults"], "close-after=10");
        assert_eq!(
            v["listeners"][2],
            serde_json::json!({"proto":"metrics","addr":"127.0.0.1:9100"})
        );
        assert!(v["listeners"][0].get("cert").is_none(), "not a TLS listener");
        let tls = ready_json(
            &[ListenSpec::tls("127.0.0.1:4001".parse().unwrap())],
            &[None],
            1,
            Some((Path::new("/tmp/c.pem"), "ab")),
            None,
        );
        let v: serde_json::Value = serde_json::from_str(&tls).unwrap();
        let expected =
            r#"{"proto":"tls","addr":"127.0.0.1:4001","cert":"/tmp/c.pem","sha256":"ab"}"#;
        assert_eq!(v["listeners"][0], serde_json::from_str::<serde_json::Value>(expected).unwrap());
    }
}
