//! One benchmark run: choose the target (or start an embedded ricochet), check it answers, start
//! the load threads, show progress, collect the hlog intervals, merge the results.

pub use crate::settings::Settings;
use std::collections::BTreeMap;

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant, SystemTime};

use hdrhistogram::Histogram;

use crate::datagram::DatagramConn;
use crate::echo::EchoLoad;
use crate::engine::{self, Interval, Plan, Progress, Report};
use crate::live::Live;
use crate::probe;
use crate::report::{self, HlogWriter, Merged, RunInfo};
use crate::stream::StreamConn;
use crate::tally::new_histogram;
use crate::target::{Address, Endpoint, Target, Workload};
use crate::Error;

/// One load thread: its workload, driven by the engine to the end of the run.
fn load_thread(plan: Plan) -> std::io::Result<crate::tally::Tally> {
    let reports = plan.reports.clone();
    let result = match plan.endpoint.workload {
        Workload::Chat => engine::drive(plan, crate::chat::ChatLoad::new),
        Workload::Echo => match plan.endpoint.address {
            Address::Udp(_) => engine::drive(plan, EchoLoad::<DatagramConn>::new),
            _ => engine::drive(plan, EchoLoad::<StreamConn>::new),
        },
    };
    let _ = reports.send(Report::Finished);
    result
}

/// Waits until `at` (a countdown on the progress line when there is one); Ctrl-C ends the wait.
fn wait_until(at: SystemTime, progress: bool, stop: &AtomicBool) -> Result<(), Error> {
    let bar = progress.then(|| {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
        bar
    });
    while let Ok(left) = at.duration_since(SystemTime::now()) {
        if stop.load(Ordering::Relaxed) {
            return Err(Error::new("interrupted while waiting for --start-at"));
        }
        if let Some(bar) = &bar {
            bar.set_message(format!("starting in {:.1} s (--start-at)", left.as_secs_f64()));
            bar.tick();
        }
        std::thread::sleep(left.min(Duration::from_millis(100)));
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    Ok(())
}

/// Runs the benchmark; `stop` ends it early (the report still covers what was measured).
pub fn run(settings: &Settings, stop: Arc<AtomicBool>) -> Result<Merged, Error> {
    let (endpoint, server, tls) = target(settings)?;
    let mut info = RunInfo {
        target: endpoint.to_string(),
        embedded: server.is_some(),
        proto: endpoint.proto(),
        connections: settings.connections,
        size: settings.size,
        depth: settings.depth,
        rate: settings.rate,
        threads: settings.threads,
        warmup: settings.warmup,
        publishers: settings.chat.then_some(settings.publishers),
        insecure: tls.as_ref().is_some_and(|t| t.insecure),
        start_unix: 0.0,
    };
    if let Some(at) = settings.start_at {
        wait_until(at, settings.progress, &stop)?;
    }
    let start = Instant::now();
    let measured_from = SystemTime::now() + settings.warmup;
    info.start_unix =
        measured_from.duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs_f64();
    let warmup_end = start + settings.warmup;
    let hlog = match &settings.hlog {
        Some(path) => Some(create_hlog(path, measured_from, &info.target)?),
        None => None,
    };
    let (reports_tx, reports) = mpsc::channel::<Report>();
    let template = Plan {
        endpoint,
        size: settings.size,
        depth: settings.depth,
        rate: settings.rate,
        start,
        warmup_end,
        end: settings.duration.map(|d| warmup_end + d),
        tickets: settings.messages.map(|n| Arc::new(AtomicI64::new(n as i64))),
        timeout: settings.timeout,
        stop: Arc::clone(&stop),
        progress: Arc::default(),
        hlog: true, // per-second intervals, for the JSON and the hlog
        reports: reports_tx,
        conn_ids: Vec::new(),
        publishers: settings.publishers,
        tls,
        reconnect_every: settings.reconnect_every,
        connect_rate: settings.connect_rate,
        profile: settings.profile.clone(),
    };
    // Each thread's progress, made first so that `--metrics` is bound before any load starts (an
    // address in use stops the run with nothing sent).
    let progress: Vec<Arc<Progress>> = (0..settings.threads).map(|_| Arc::default()).collect();
    let info_labels = [("target", info.target.clone()), ("proto", info.proto.to_string())];
    let seconds = settings.duration.map(whole_seconds);
    let live = Live::new(
        settings.live,
        settings.metrics,
        seconds,
        progress.clone(),
        warmup_end,
        info_labels,
    )?;
    if let Some(addr) = live.metrics_addr() {
        ricochet::output::stderr_line(&format!("loadgen: serving /metrics on http://{addr}"));
    }
    if let Some(warning) =
        crate::engine::port_search_warning(&template.endpoint, settings.connections as usize)
    {
        ricochet::output::stderr_line(&warning);
    }
    let threads = spawn_threads(settings, template, &progress)?;
    let mut collector = Collector { pending: BTreeMap::new(), intervals: Vec::new(), hlog, live };
    watch(settings, &reports, threads.len(), &progress, warmup_end, &mut collector)?;
    let mut tallies = Vec::with_capacity(threads.len());
    for thread in threads {
        let tally = thread
            .join()
            .map_err(|_| Error::new("a load thread panicked"))?
            .map_err(Error::io("a load thread failed"))?;
        tallies.push(tally);
    }
    while let Ok(report) = reports.try_recv() {
        if let Report::Interval(interval) = report {
            collector.add(interval, settings.threads)?;
        }
    }
    let interrupted = stop.load(Ordering::Relaxed);
    let never: u64 = tallies.iter().map(|t| t.never_up).sum();
    if never > 0 && !interrupted {
        ricochet::output::stderr_line(&format!(
            "loadgen: {never} of {} connection(s) never came up during the run: the figures are \
             the others'. Many connections at once can overflow the server's listen queue \
             (dropped SYNs are retried after 1 s, 3 s, ...): open them with --connect-rate, or \
             give a longer --warmup",
            settings.connections
        ));
    }
    let measured = match (settings.duration, interrupted) {
        (Some(d), false) => d,
        (Some(_), true) => Instant::now().saturating_duration_since(warmup_end),
        (None, _) => {
            // Completion times are nanoseconds since `start`, the clock base of every thread.
            let last = tallies
                .iter()
                .filter_map(|t| t.last_completion)
                .max()
                .map_or(Instant::now(), |ns| start + Duration::from_nanos(ns));
            last.saturating_duration_since(warmup_end)
        }
    };
    let intervals = collector.finish(measured)?;
    Ok(report::merge(&info, tallies, measured, interrupted, &intervals))
}

/// What to load: the given target, checked to answer (with its TLS client), or an embedded
/// ricochet started for the run (kept alive by the returned handle).
type Chosen = (Endpoint, Option<ricochet::Handle>, Option<Arc<crate::tls::TlsClient>>);

fn target(settings: &Settings) -> Result<Chosen, Error> {
    let Some(target) = &settings.target else { return embedded(settings) };
    let tls = target
        .is_tls()
        .then(|| settings.trust.client(target.host().unwrap_or("localhost"), settings.tls_resume));
    let tls = tls.transpose().map_err(Error::new)?;
    let mut endpoint = reachable(target, settings.timeout, tls.as_ref(), settings.proxy_header)?;
    endpoint_settings(&mut endpoint, settings)?;
    Ok((endpoint, None, tls.map(Arc::new)))
}

/// What the settings add to an endpoint: a WebSocket target's message shape (`--size` bytes
/// each, chat: a line; text with `--ws-text`), the PROXY protocol header if asked for, and the
/// source addresses (`--source`), which must be of the address's family.
fn endpoint_settings(endpoint: &mut Endpoint, settings: &Settings) -> Result<(), Error> {
    endpoint.proxy = settings.proxy_header;
    if let Some(addr) = endpoint.socket_addr() {
        if let Some(wrong) = settings.sources.iter().find(|s| s.is_ipv6() != addr.is_ipv6()) {
            return Err(Error::new(format!(
                "--source {wrong} cannot reach {addr}: give addresses of the target's family \
                 (a name that resolves to both: give the target's address)"
            )));
        }
    }
    endpoint.sources = Arc::new(settings.sources.clone());
    if let Some(ws) = &mut endpoint.websocket {
        ws.message = settings.size;
        ws.text = settings.ws_text;
    }
    Ok(())
}

/// An embedded ricochet on 127.0.0.1:0: echo, a chat room (`--chat`), over TLS (`--tls`, its
/// generated certificate trusted).
fn embedded(settings: &Settings) -> Result<Chosen, Error> {
    let mut config = ricochet::Config::ephemeral();
    let localhost = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    config.listeners = match (settings.chat, settings.tls, settings.ws) {
        (true, true, true) => vec![ricochet::ListenSpec::wss_chat(localhost)],
        (true, false, true) => vec![ricochet::ListenSpec::ws_chat(localhost)],
        (false, true, true) => vec![ricochet::ListenSpec::wss(localhost)],
        (false, false, true) => vec![ricochet::ListenSpec::ws(localhost)],
        (true, true, false) => vec![ricochet::ListenSpec::tls_chat(localhost)],
        (true, false, false) => vec![ricochet::ListenSpec::chat(localhost)],
        (false, true, false) => vec![ricochet::ListenSpec::tls(localhost)],
        (false, false, false) => config.listeners,
    };
    if settings.proxy_header.is_some() {
        // It takes the header loadgen is asked to send.
        config.listeners = config
            .listeners
            .into_iter()
            .map(|spec| spec.with_proxy(ricochet::proxy::Proxy::Any))
            .collect();
    }
    let server = ricochet::spawn(config)
        .map_err(|e| Error::new(format!("starting the embedded ricochet: {e}")))?;
    let spec = &server.local_addrs()[0];
    let addr = spec.addr().expect("the embedded listener is on TCP");
    let address = if spec.is_tls() { Address::Tls(addr) } else { Address::Tcp(addr) };
    let workload = if spec.is_chat() { Workload::Chat } else { Workload::Echo };
    let tls = match spec.is_tls() {
        true => {
            let mut trust = settings.trust.clone();
            trust.ca = server.tls_cert().map(|(path, _)| path.to_owned());
            Some(Arc::new(trust.client("localhost", settings.tls_resume).map_err(Error::new)?))
        }
        false => None,
    };
    let websocket = spec.is_websocket().then(|| crate::websocket::WsTarget {
        host: addr.to_string(),
        path: "/".into(),
        text: false,
        message: 0,
        lines: spec.is_chat(),
    });
    let mut endpoint =
        Endpoint { workload, address, websocket, proxy: None, sources: Arc::default() };
    endpoint_settings(&mut endpoint, settings)?;
    Ok((endpoint, Some(server), tls))
}

fn create_hlog(
    path: &std::path::Path,
    start: SystemTime,
    target: &str,
) -> Result<HlogWriter<std::io::BufWriter<std::fs::File>>, Error> {
    let file = std::fs::File::create(path)
        .map_err(|e| Error::new(format!("cannot create {}: {e}", path.display())))?;
    HlogWriter::new(std::io::BufWriter::new(file), start, target)
        .map_err(Error::io("writing the hlog"))
}

type Threads = Vec<std::thread::JoinHandle<std::io::Result<crate::tally::Tally>>>;

/// Starts the load threads, each with its share of the connections (and of the rate), from
/// `template`; thread `t` reports its progress in `progress[t]`.
fn spawn_threads(
    settings: &Settings,
    template: Plan,
    progress: &[Arc<Progress>],
) -> Result<Threads, Error> {
    let mut threads = Vec::with_capacity(settings.threads);
    for (t, done) in progress.iter().enumerate() {
        let conn_ids: Vec<u32> =
            (t as u32..settings.connections).step_by(settings.threads).collect();
        let share = conn_ids.len() as f64 / settings.connections as f64;
        let plan = Plan {
            endpoint: template.endpoint.clone(),
            rate: template.rate.map(|r| (r * share).max(crate::schedule::MIN_RATE)),
            connect_rate: template.connect_rate.map(|r| r * share),
            profile: template.profile.as_ref().map(|p| p.scaled(share)),
            tickets: template.tickets.clone(),
            stop: Arc::clone(&template.stop),
            progress: Arc::clone(done),
            reports: template.reports.clone(),
            conn_ids,
            tls: template.tls.clone(),
            ..template
        };
        let thread = std::thread::Builder::new()
            .name(format!("loadgen-{t}"))
            .spawn(move || load_thread(plan))
            .map_err(Error::io("starting a load thread"))?;
        threads.push(thread);
    }
    Ok(threads)
}

/// The seconds a measured period of `d` spans (its last one may be partial), at least one.
fn whole_seconds(d: Duration) -> u64 {
    d.as_secs_f64().ceil().max(1.0) as u64
}

/// Until every thread has finished: collects their intervals, and shows progress when asked
/// (sleeping until a thread reports, or 200 ms pass for the progress line).
fn watch(
    settings: &Settings,
    reports: &mpsc::Receiver<Report>,
    mut running: usize,
    progress: &[Arc<Progress>],
    warmup_end: Instant,
    collector: &mut Collector,
) -> Result<(), Error> {
    let bar = settings.progress.then(|| progress_bar(settings));
    let mut last = (Instant::now(), 0u64);
    while running > 0 {
        match reports.recv_timeout(Duration::from_millis(200)) {
            Ok(Report::Interval(interval)) => collector.add(interval, settings.threads)?,
            Ok(Report::Finished) => running -= 1,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        let (Some(bar), now) = (&bar, Instant::now()) else { continue };
        // With --connect-rate, how far the opening has come.
        let opened = settings.connect_rate.map(|_| {
            let n: u64 = progress.iter().map(|p| p.opened.load(Ordering::Relaxed)).sum();
            format!(", {} of {} connected", crate::report::group(n), settings.connections)
        });
        let opened = opened.unwrap_or_default();
        if now < warmup_end && !opened.is_empty() {
            let left = humantime::format_duration(Duration::from_secs(
                warmup_end.saturating_duration_since(now).as_secs_f64().ceil() as u64,
            ));
            bar.set_message(format!("warm-up, {left} left (not recorded){opened}"));
        }
        if now >= warmup_end {
            let done: u64 = progress.iter().map(|p| p.messages.load(Ordering::Relaxed)).sum();
            let dt = now.duration_since(last.0).as_secs_f64();
            // The rate is said once half a second of the measured period has passed.
            let since = now.duration_since(warmup_end);
            let rate = (dt >= 0.5 && last.0 >= warmup_end).then(|| (done - last.1) as f64 / dt);
            if dt >= 0.5 || last.0 < warmup_end {
                last = (now.max(warmup_end), done);
            }
            bar.set_message(progress_message(settings, since, done, rate) + &opened);
        }
        bar.tick();
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    Ok(())
}

/// Per-second intervals as the threads report them: merged once every thread has reported a
/// second (written to the hlog in order then).
struct Collector {
    pending: BTreeMap<u64, (Histogram<u64>, usize)>,
    intervals: Vec<(u64, Histogram<u64>)>,
    hlog: Option<HlogWriter<std::io::BufWriter<std::fs::File>>>,
    /// `--live` and `--metrics`: each second as it completes.
    live: Live,
}

impl Collector {
    /// One thread's interval: every second that all `threads` have reported is merged, and
    /// written to the hlog, in order.
    fn add(&mut self, interval: Interval, threads: usize) -> Result<(), Error> {
        let entry = self.pending.entry(interval.index).or_insert_with(|| (new_histogram(), 0));
        entry.0.add(&interval.hist).expect("same bounds");
        entry.1 += 1;
        while let Some((&index, (_, count))) = self.pending.first_key_value() {
            if *count < threads {
                break;
            }
            let (hist, _) = self.pending.remove(&index).expect("present");
            if let Some(writer) = self.hlog.as_mut() {
                write_interval(writer, index, &hist)?;
            }
            self.live.second(index, &hist, false);
            self.intervals.push((index, hist));
        }
        Ok(())
    }

    /// The intervals of the measured period: those not every thread reported (the last,
    /// partial one) taken as they are, the hlog closed.
    fn finish(mut self, measured: Duration) -> Result<Vec<(u64, Histogram<u64>)>, Error> {
        for (index, (hist, _)) in std::mem::take(&mut self.pending) {
            if let Some(writer) = self.hlog.as_mut() {
                write_interval(writer, index, &hist)?;
            }
            self.intervals.push((index, hist));
        }
        if let Some(writer) = self.hlog.take() {
            writer.finish().map_err(Error::io("writing the hlog"))?;
        }
        // Only the measured period's seconds (a message-count run ends inside its last second).
        // Messages sent in the period and echoed after it count in its last second, so that the
        // seconds add up to the run's messages.
        let seconds = whole_seconds(measured);
        let mut late = new_histogram();
        self.intervals.retain(|(index, hist)| {
            let keep = *index < seconds;
            if !keep {
                late.add(hist).expect("same bounds");
            }
            keep
        });
        if !late.is_empty() {
            match self.intervals.iter_mut().find(|(index, _)| *index == seconds - 1) {
                Some((_, last)) => last.add(&late).expect("same bounds"),
                None => self.intervals.push((seconds - 1, late)),
            }
        }
        for (index, hist) in &self.intervals {
            self.live.second(*index, hist, true);
        }
        Ok(self.intervals)
    }
}

/// The first endpoint of `target` that is there: one that accepts a connection (streams: a
/// server that accepts but never echoes is for the run to measure; TLS: one that completes a
/// handshake, so an untrusted certificate is said once, up front), or that echoes a datagram
/// (UDP has no handshake). Fails quickly, saying why, when none is.
fn reachable(
    target: &Target,
    timeout: Duration,
    tls: Option<&crate::tls::TlsClient>,
    proxy: Option<ricochet::proxy::Proxy>,
) -> Result<Endpoint, Error> {
    // On a path that loses packets a first datagram or SYN may be lost: the checks retry until
    // `--timeout` has passed (the kernel resends SYNs itself), and give up at once only on a
    // refusal (nothing listens).
    let deadline = Instant::now() + timeout;
    let left = || deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
    let mut last = String::from("no address");
    if target.is_udp() {
        for endpoint in target.resolve().map_err(Error::new)? {
            match udp_preflight(&endpoint, deadline) {
                Ok(()) => return Ok(endpoint),
                Err(e) => last = format!("no echo from {endpoint}: {e}"),
            }
        }
        return Err(Error::new(last));
    }
    for endpoint in target.resolve().map_err(Error::new)? {
        let result = match (&endpoint.address, &endpoint.websocket) {
            (Address::Tcp(addr), Some(ws)) => {
                probe::connect(*addr, left(), proxy).and_then(|mut s| {
                    s.set_read_timeout(Some(left()))?;
                    probe::upgrade(&mut s, ws).map(drop)
                })
            }
            (Address::Tls(addr), Some(ws)) => match tls {
                Some(tls) => probe::handshake(*addr, tls, left(), proxy).and_then(|mut s| {
                    probe::upgrade(&mut s, ws)?;
                    probe::close_politely(s);
                    Ok(())
                }),
                None => Err(std::io::Error::other("no TLS settings")),
            },
            (address, _) => match address {
                Address::Tcp(addr) => probe::connect(*addr, left(), proxy).map(drop),
                Address::Unix(path) => probe::connect_unix(path, proxy).map(drop),
                Address::Tls(addr) => match tls {
                    Some(tls) => {
                        probe::handshake(*addr, tls, left(), proxy).map(probe::close_politely)
                    }
                    None => Err(std::io::Error::other("no TLS settings")),
                },
                Address::Udp(_) => unreachable!("handled above"),
            },
        };
        match result {
            Ok(()) => return Ok(endpoint),
            Err(e) => {
                // An untrusted certificate is what a new user of a self-signed server meets.
                let hint = match e.to_string().contains("UnknownIssuer") {
                    true => {
                        " (trust the server's certificate with --tls-ca PEM: ricochet's ready \
                             line names its file; or --insecure)"
                    }
                    false => "",
                };
                last = format!("cannot connect to {endpoint}: {e}{hint}");
            }
        }
    }
    Err(Error::new(last))
}

/// Sends a datagram every half second until one comes back (`Ok`), nothing listens (an ICMP
/// refusal), or `deadline` passes.
fn udp_preflight(endpoint: &Endpoint, deadline: Instant) -> std::io::Result<()> {
    let Address::Udp(addr) = &endpoint.address else { return Ok(()) };
    let local = if addr.is_ipv6() { "[::]:0" } else { "0.0.0.0:0" };
    let sock = std::net::UdpSocket::bind(local)?;
    sock.connect(addr)?;
    let mut buf = [0u8; 64];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out"));
        }
        sock.set_read_timeout(Some(left.min(Duration::from_millis(500))))?;
        sock.send(b"loadgen preflight")?;
        match sock.recv(&mut buf) {
            Ok(_) => return Ok(()),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(e), // refused: nothing listens
        }
    }
}

fn write_interval<W: std::io::Write>(
    writer: &mut HlogWriter<W>,
    index: u64,
    hist: &Histogram<u64>,
) -> Result<(), Error> {
    let second = Duration::from_secs(1);
    writer.interval(hist, second * index as u32, second).map_err(Error::io("writing the hlog"))
}

fn progress_bar(settings: &Settings) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
    let style = indicatif::ProgressStyle::with_template("{spinner} {msg}")
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner());
    bar.set_style(style);
    bar.set_message(match settings.warmup.is_zero() {
        true => "connecting".to_owned(),
        false => {
            format!("warm-up of {} (not recorded)", humantime::format_duration(settings.warmup))
        }
    });
    bar
}

/// The progress line in the measured period: its own clock (the warm-up is not in it), the
/// messages so far, and the rate over the last half second (said once there is one).
fn progress_message(
    settings: &Settings,
    elapsed: Duration,
    done: u64,
    rate: Option<f64>,
) -> String {
    let secs = elapsed.as_secs_f64();
    let of = match (settings.duration, settings.messages) {
        (Some(d), _) => format!("{secs:.1} s of {:.1} s", d.as_secs_f64()),
        (None, Some(n)) => format!(
            "{secs:.1} s, {} of {} messages",
            crate::report::group(done),
            crate::report::group(n)
        ),
        _ => format!("{secs:.1} s"),
    };
    let counted = match settings.messages {
        Some(_) => String::new(),
        None => format!(", {} messages", crate::report::group(done)),
    };
    match rate {
        Some(rate) => format!(
            "measuring: {of}{counted}, {} msgs/s",
            crate::report::group(rate.round() as u64)
        ),
        None => format!("measuring: {of}{counted}"),
    }
}
