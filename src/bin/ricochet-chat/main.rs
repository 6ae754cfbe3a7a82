//! `ricochet-chat`: the chat room's client. It types and reads at the same time (a line editor
//! on the terminal, the room's lines printed above the line being typed), takes its name back
//! and catches up on everything it missed after a dropped connection or a server restart, and
//! never loses a line typed (see `session.rs`). Without a terminal it is a filter: lines from
//! stdin, the room's lines on stdout.
//!
//! Two threads: the input (the line editor, or stdin) sends lines over a channel and wakes the
//! driver; the driver owns the connection (mio, non-blocking) and the session.

mod link;
mod session;

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use mio::{Events, Poll, Token, Waker};
use ricochet::client::tls::{parse_pin, TlsClient, TrustSpec};

use link::{Link, Target};
use session::{Action, Failure, Session, Settings};

const WAKE: Token = Token(0);
const SOCKET: Token = Token(1);

/// Exit codes (also in `--help` and the README).
mod exit {
    /// Gave up reconnecting (`--give-up`), or the terminal failed.
    pub const GAVE_UP: i32 = 1;
    /// Bad flags or URL, or a TLS file that cannot be used.
    pub const USAGE: i32 = 2;
    /// The name is taken.
    pub const NAME_TAKEN: i32 = 3;
    /// The first connection failed (refused, TLS, not a chat room).
    pub const CONNECT: i32 = 4;
}

/// The chat room's client: talk in a ricochet chat room, and never miss a line.
#[derive(Debug, Parser)]
#[command(
    name = "ricochet-chat",
    version,
    after_help = "On a terminal: type lines, they go to the room; the room's lines appear above the \
line you are typing. /who, /whoami, /history N, /since N, /nick NAME, /token and /quit go to the \
room (Ctrl-D or Ctrl-C leaves too).

Without a terminal (stdin a pipe or file): each line of stdin is sent, the room's lines are \
printed on stdout (--json: the server's JSON lines), the client's own news on stderr; at the \
end of stdin it leaves once every line has reached the room, and exits 0.

A dropped connection is reconnected (exponential backoff with jitter, up to --max-backoff); the \
name is taken back and every line said meanwhile is shown; lines typed meanwhile are sent, in \
order.

Exit codes: 0 left the room (every line typed reached it); 1 gave up reconnecting (--give-up); \
2 bad flags, URL or TLS file; 3 the name is taken; 4 the first connection failed (refused, \
TLS, WebSocket, not a chat room)."
)]
struct Args {
    /// The room: chat://HOST:PORT (or just HOST:PORT), chat+tls://HOST:PORT,
    /// chat+unix:PATH, chat+ws://HOST:PORT[/PATH], chat+wss://HOST:PORT[/PATH].
    #[arg(value_name = "URL", value_parser = Target::parse)]
    target: Target,
    /// The name to take (1-32 of A-Z a-z 0-9 _ -). Default: $USER, if it is such a name.
    #[arg(short, long, value_name = "NAME")]
    nick: Option<String>,
    /// Lines of the room's history to show on joining.
    #[arg(long, value_name = "N", default_value_t = 10)]
    history: u64,
    /// Without a terminal: print the server's JSON lines instead of text.
    #[arg(long)]
    json: bool,
    /// TLS: trust the certificates in this PEM file (CAs, or the server's own certificate).
    #[arg(long, value_name = "FILE")]
    tls_ca: Option<PathBuf>,
    /// TLS: trust exactly the certificate with this SHA-256 (as ricochet's ready line prints it
    /// in `sha256`). Repeatable.
    #[arg(long, value_name = "SHA256", value_parser = parse_pin)]
    tls_pin: Vec<String>,
    /// TLS: trust any certificate (the session is encrypted, not authenticated).
    #[arg(long)]
    insecure: bool,
    /// The longest wait between reconnect attempts.
    #[arg(long, value_name = "DUR", default_value = "5s", value_parser = ricochet::units::parse_duration)]
    max_backoff: Duration,
    /// Stop reconnecting after this long without the room, and exit 1 (default: never).
    #[arg(long, value_name = "DUR", value_parser = ricochet::units::parse_duration)]
    give_up: Option<Duration>,
    /// After this long without a word from the server, ask it for one; no answer within
    /// --connect-timeout means the connection is gone (a drop neither side was told of, as
    /// after a network change), and the client reconnects. 0: never ask.
    #[arg(long, value_name = "DUR", default_value = "30s", value_parser = ricochet::units::parse_duration)]
    keepalive: Duration,
    /// How long a connection and joining the room may take.
    #[arg(long, value_name = "DUR", default_value = "5s", value_parser = ricochet::units::parse_duration)]
    connect_timeout: Duration,
}

/// What the input thread sends.
enum Input {
    Line(String),
    End,
}

/// Where the room's lines and the client's news go.
enum Screen {
    /// Printed above the line being edited.
    Terminal(Box<dyn rustyline::ExternalPrinter + Send>),
    /// stdout (the room) and stderr (news).
    Pipe { json: bool },
}

impl Screen {
    fn show(&mut self, text: &str, json: &str) {
        match self {
            Screen::Terminal(printer) => {
                let _ = printer.print(format!("{text}\n"));
            }
            Screen::Pipe { json: as_json } => {
                let line = if *as_json { json } else { text };
                let mut out = std::io::stdout().lock();
                // The reader went away (`| head -n1`): nothing more to do.
                if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
                    std::process::exit(0);
                }
            }
        }
    }

    fn status(&mut self, text: &str) {
        match self {
            Screen::Terminal(printer) => {
                let _ = printer.print(format!("~ {text}\n"));
            }
            Screen::Pipe { .. } => ricochet::output::stderr_line(&format!("ricochet-chat: {text}")),
        }
    }
}

fn main() {
    let args = Args::parse();
    let nick = match args.nick.clone().or_else(|| std::env::var("USER").ok()) {
        Some(nick) if valid_name(&nick) => nick,
        Some(nick) => fail(
            exit::USAGE,
            &format!("`{nick}` is not a name (1-32 of A-Z a-z 0-9 _ -): give --nick NAME"),
        ),
        None => fail(exit::USAGE, "give --nick NAME"),
    };
    let tls = args.target.tls.then(|| {
        let spec =
            TrustSpec { ca: args.tls_ca.as_deref(), pins: &args.tls_pin, insecure: args.insecure };
        TlsClient::new(&spec, args.target.host().unwrap_or("localhost"), true)
            .unwrap_or_else(|e| fail(exit::USAGE, &e))
    });
    let mut poll = Poll::new().unwrap_or_else(|e| fail(exit::GAVE_UP, &format!("poll: {e}")));
    let waker = Arc::new(
        Waker::new(poll.registry(), WAKE).unwrap_or_else(|e| fail(exit::GAVE_UP, &format!("{e}"))),
    );
    let (tx, rx) = mpsc::channel();
    let terminal = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    let settings = Settings { nick: nick.clone(), history: args.history, patient: !terminal };
    let session = Session::new(settings);
    if !terminal {
        // The driver's own handle keeps the waker open after the input thread ends (closing
        // its eventfd would take a wake not yet seen with it).
        let keep = Arc::clone(&waker);
        std::thread::spawn(move || read_stdin(tx, keep));
        let json = args.json;
        let mut driver = Driver::new(args, tls, session, Screen::Pipe { json }, rx);
        let code = driver.run(&mut poll);
        std::process::exit(code);
    }
    // The terminal's settings, restored whichever thread ends the program.
    let saved = terminal_settings();
    let config = rustyline::Config::builder().auto_add_history(true).build();
    let mut editor = rustyline::DefaultEditor::with_config(config)
        .unwrap_or_else(|e| fail(exit::GAVE_UP, &format!("terminal: {e}")));
    let printer = editor
        .create_external_printer()
        .unwrap_or_else(|e| fail(exit::GAVE_UP, &format!("terminal: {e}")));
    let prompt = Arc::new(Mutex::new(nick));
    let shared = Arc::clone(&prompt);
    std::thread::spawn(move || {
        let mut driver = Driver::new(args, tls, session, Screen::Terminal(Box::new(printer)), rx);
        driver.prompt = Some(shared);
        let code = driver.run(&mut poll);
        restore_terminal(saved.as_ref());
        std::process::exit(code);
    });
    loop {
        let name = prompt.lock().map(|p| p.clone()).unwrap_or_default();
        match editor.readline(&format!("{name}> ")) {
            Ok(line) if line.trim().is_empty() => {}
            Ok(line) => {
                let _ = tx.send(Input::Line(line));
            }
            Err(_) => {
                let _ = tx.send(Input::End); // Ctrl-D, Ctrl-C
                waker.wake().ok();
                break;
            }
        }
        waker.wake().ok();
    }
    // The driver ends the program once the room has every line.
    loop {
        std::thread::park();
    }
}

/// Lines of stdin (any bytes; invalid UTF-8 shown as U+FFFD), then its end.
fn read_stdin(tx: mpsc::Sender<Input>, waker: Arc<Waker>) {
    use std::io::BufRead;
    let mut stdin = std::io::stdin().lock();
    let mut line = Vec::new();
    loop {
        line.clear();
        match stdin.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                let text = line.strip_suffix(b"\n").unwrap_or(&line);
                let _ = tx.send(Input::Line(String::from_utf8_lossy(text).into_owned()));
                waker.wake().ok();
            }
        }
    }
    let _ = tx.send(Input::End);
    waker.wake().ok();
}

/// The connection, its reconnects, and the session.
struct Driver {
    args: Args,
    tls: Option<TlsClient>,
    session: Session,
    screen: Screen,
    input: Receiver<Input>,
    /// The name shown in the terminal's prompt.
    prompt: Option<Arc<Mutex<String>>>,
    link: Option<Link>,
    /// Reconnect attempts since the room was last joined.
    attempt: u32,
    /// When to try connecting next.
    next_try: Instant,
    /// Connected, not yet in the room, until then.
    join_by: Option<Instant>,
    /// Without the room since then.
    offline_since: Instant,
    /// The server's last word (any bytes).
    heard: Instant,
    /// A keepalive question is out since then.
    asked: Option<Instant>,
    rng: u64,
}

impl Driver {
    fn new(
        args: Args,
        tls: Option<TlsClient>,
        session: Session,
        screen: Screen,
        input: Receiver<Input>,
    ) -> Driver {
        let now = Instant::now();
        let rng = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
            ^ u64::from(std::process::id());
        Driver {
            args,
            tls,
            session,
            screen,
            input,
            prompt: None,
            link: None,
            attempt: 0,
            next_try: now,
            join_by: None,
            offline_since: now,
            heard: now,
            asked: None,
            rng: rng | 1,
        }
    }

    /// Runs until the client is done; returns the exit code.
    fn run(&mut self, poll: &mut Poll) -> i32 {
        let mut events = Events::with_capacity(64);
        loop {
            if self.link.is_none() && Instant::now() >= self.next_try {
                self.connect(poll);
            }
            if let Some(why) = self.keepalive(Instant::now()) {
                self.drop_link(&why);
            }
            if let Some(code) = self.act() {
                return code;
            }
            let now = Instant::now();
            if let Some(by) = self.join_by {
                if self.session.is_live() {
                    self.join_by = None;
                } else if now >= by {
                    let why = format!(
                        "no answer from a chat room within {:?}",
                        self.args.connect_timeout
                    );
                    self.drop_link(&why);
                    continue;
                }
            }
            if self.link.is_none() {
                if let Some(limit) = self.args.give_up {
                    if now.duration_since(self.offline_since) >= limit {
                        self.screen.status(&format!(
                            "gave up: no room for {} (--give-up); {} line(s) typed were not sent",
                            humantime::format_duration(limit),
                            self.session.unsent()
                        ));
                        return exit::GAVE_UP;
                    }
                }
            }
            let timeout = match (&self.link, self.join_by) {
                (None, _) => Some(self.next_try.saturating_duration_since(now)),
                (Some(_), Some(by)) => Some(by.saturating_duration_since(now)),
                (Some(_), None) => self.keepalive_due().map(|at| at.saturating_duration_since(now)),
            };
            if let Err(e) = poll.poll(&mut events, timeout) {
                if e.kind() != std::io::ErrorKind::Interrupted {
                    self.screen.status(&format!("poll: {e}"));
                    return exit::GAVE_UP;
                }
            }
            for event in events.iter() {
                match event.token() {
                    WAKE => self.drain_input(),
                    _ => self.socket_ready(),
                }
            }
            self.flush();
        }
    }

    /// When the keepalive next has something to do (in the room, with `--keepalive`).
    fn keepalive_due(&self) -> Option<Instant> {
        if self.args.keepalive.is_zero() || !self.session.is_live() {
            return None;
        }
        Some(match self.asked {
            Some(at) => at + self.args.connect_timeout,
            None => self.heard + self.args.keepalive,
        })
    }

    /// Asks a quiet server for a word; `Some(why)` when it did not answer in time.
    fn keepalive(&mut self, now: Instant) -> Option<String> {
        let due = self.keepalive_due()?;
        if now < due {
            return None;
        }
        match self.asked {
            Some(_) => Some(format!(
                "no answer from the server for {}",
                humantime::format_duration(Duration::from_millis(
                    (self.args.keepalive + self.args.connect_timeout).as_millis() as u64
                ))
            )),
            None => {
                self.asked = Some(now);
                self.session.ping();
                None
            }
        }
    }

    /// Tries to connect; a failure is the session's to judge (fatal the first time).
    fn connect(&mut self, poll: &mut Poll) {
        match Link::connect(&self.args.target, self.tls.as_ref(), self.args.connect_timeout) {
            Ok(mut link) => match link.register(poll.registry(), SOCKET) {
                Ok(()) => {
                    self.link = Some(link);
                    (self.heard, self.asked) = (Instant::now(), None);
                    self.join_by = Some(Instant::now() + self.args.connect_timeout);
                    self.session.connected();
                }
                Err(e) => self.failed(&e.to_string()),
            },
            Err(e) => self.failed(&format!("cannot connect: {}", describe(&e))),
        }
    }

    /// A connection attempt failed or a connection was lost: the session says what that means.
    fn failed(&mut self, why: &str) {
        self.session.lost(why);
        self.attempt += 1;
        let cap = self.args.max_backoff.as_secs_f64();
        let full = (0.1 * 2f64.powi(self.attempt.min(30) as i32 - 1)).min(cap);
        // Equal jitter: half the delay fixed, half random, so reconnecting clients spread out.
        let delay = Duration::from_secs_f64(full / 2.0 + full / 2.0 * self.random());
        self.next_try = Instant::now() + delay;
        if self.session.was_live() && !self.session.is_ending() {
            let why = if self.attempt > 1 { format!("{why}; ") } else { String::new() };
            self.session.note(format!(
                "{why}reconnecting in {:.1} s (attempt {})",
                delay.as_secs_f64(),
                self.attempt
            ));
        }
    }

    fn drop_link(&mut self, why: &str) {
        if self.link.take().is_some() {
            self.join_by = None;
            if self.session.is_live() {
                self.offline_since = Instant::now();
            }
            self.failed(why);
        }
    }

    fn drain_input(&mut self) {
        while let Ok(input) = self.input.try_recv() {
            match input {
                Input::Line(line) => self.session.typed(line),
                Input::End => self.session.end(),
            }
        }
    }

    fn socket_ready(&mut self) {
        let Some(link) = &mut self.link else { return };
        let mut lines = Vec::new();
        let result = link.readable(&mut lines);
        if !lines.is_empty() {
            self.heard = Instant::now();
            self.asked = None;
        }
        for line in &lines {
            self.session.line(line);
        }
        match result {
            Ok(true) => {}
            Ok(false) => self.drop_link("closed by the server"),
            Err(e) => self.drop_link(&describe(&e)),
        }
    }

    fn flush(&mut self) {
        if let Some(link) = &mut self.link {
            if let Err(e) = link.flush() {
                self.drop_link(&describe(&e));
            }
        }
    }

    /// Carries out what the session asked; `Some(code)` ends the program.
    fn act(&mut self) -> Option<i32> {
        loop {
            let actions = self.session.take();
            if actions.is_empty() {
                return None;
            }
            for action in actions {
                match action {
                    Action::Send(line) => {
                        if let Some(link) = &mut self.link {
                            link.send(&line);
                        }
                    }
                    Action::Show { text, json } => self.screen.show(&text, &json),
                    Action::Status(text) => self.screen.status(&text),
                    Action::Joined => {
                        self.attempt = 0;
                        self.join_by = None;
                        if let Some(prompt) = &self.prompt {
                            if let Ok(mut p) = prompt.lock() {
                                *p = self.session.nick().to_owned();
                            }
                        }
                    }
                    Action::Fatal(failure) => {
                        let (code, text) = match failure {
                            Failure::NameTaken(text) => (exit::NAME_TAKEN, text),
                            Failure::Connect(text) => (exit::CONNECT, text),
                        };
                        self.screen.status(&text);
                        return Some(code);
                    }
                    Action::Done => return Some(0),
                }
            }
            self.flush();
        }
    }

    /// A number in [0, 1) (xorshift: the jitter only has to differ between clients).
    fn random(&mut self) -> f64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        (self.rng >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// An error as a person reads it: `connection refused`, not `Connection refused (os error 111)`.
fn describe(e: &std::io::Error) -> String {
    let text = e.to_string();
    let text = match text.find(" (os error") {
        Some(i) => &text[..i],
        None => &text,
    };
    let mut chars = text.chars();
    match chars.next() {
        Some(first) if chars.clone().next().is_some_and(char::is_lowercase) => {
            first.to_lowercase().chain(chars).collect()
        }
        _ => text.to_string(),
    }
}

/// A chat name: 1-32 of A-Z a-z 0-9 _ - (the server's rule).
fn valid_name(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn fail(code: i32, text: &str) -> ! {
    ricochet::output::stderr_line(&format!("ricochet-chat: {text}"));
    std::process::exit(code);
}

/// The terminal's settings now (to restore them if the program ends mid-edit).
fn terminal_settings() -> Option<libc::termios> {
    // SAFETY: `termios` is plain data, filled in by tcgetattr on success.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: fd 0 and a valid pointer to a termios.
    (unsafe { libc::tcgetattr(0, &mut t) } == 0).then_some(t)
}

fn restore_terminal(saved: Option<&libc::termios>) {
    if let Some(t) = saved {
        // SAFETY: fd 0 and a termios read from it by tcgetattr.
        unsafe { libc::tcsetattr(0, libc::TCSANOW, t) };
    }
}
