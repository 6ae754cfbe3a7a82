//! State machines under random schedules: the echo connection, a chat member, the output buffer,
//! a member's outbox and the deadline heap, each driven by random sequences of operations (reads
//! of random sizes, `EAGAIN`, `EINTR`, partial writes, EOF, reset, time steps) through the
//! [`Scripted`] transport, and checked after every step against a simple model: what must have
//! been echoed or delivered, what must be pending, when a deadline must fire.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::harness::*;
use proptest::prelude::*;

use crate::behaviour::chat::history::Posted;
use crate::behaviour::chat::outbox::Outbox;
use crate::behaviour::chat::{ChatCtx, Member, Renderings, Room};
use crate::behaviour::echo::{Echo, State};
use crate::behaviour::{CloseReason, Ctx, Life, Outcome};
use crate::buffer::{BufferPool, OutBuf};
use crate::stats::Stats;
use crate::timer::{Clock, Deadline, Kind, Tick, Timers};
use crate::transport::scripted::{End, Scripted, INTERRUPT};

/// The reactor's resources for one connection under test.
fn ctx(buf: usize, cap: usize, budget: usize, max_line: usize) -> Ctx {
    Ctx {
        buf: crate::buffer::Aligned::zeroed(buf),
        pool: BufferPool::new(4),
        stats: Stats::default(),
        cap,
        budget,
        now: Instant::now(),
        tick: Tick::default(),
        clock: Clock::new(Instant::now()),
        chat: ChatCtx { rooms: vec![Room::default()], max_line, ..ChatCtx::default() },
    }
}

fn end() -> impl Strategy<Value = End> {
    prop_oneof![Just(End::Eof), Just(End::Reset), Just(End::Silent)]
}

/// Read sizes: mostly small, some refusals and interruptions; never only those.
fn reads() -> impl Strategy<Value = Vec<usize>> {
    let size =
        prop_oneof![6 => 1usize..300, 1 => Just(0), 1 => Just(INTERRUPT), 1 => 300usize..5000];
    proptest::collection::vec(size, 1..8).prop_map(|mut v| {
        v.push(64 + v[0] % 300);
        v
    })
}

/// Write sizes: partial, refused (0) and whole; never only refusals.
fn writes() -> impl Strategy<Value = Vec<usize>> {
    let size = prop_oneof![4 => 1usize..300, 2 => Just(0), 2 => Just(usize::MAX)];
    proptest::collection::vec(size, 1..8).prop_map(|mut v| {
        v.push(64 + v[0] % 300);
        v
    })
}

/// Turns with no change before a schedule counts as stuck (every few turns both edges come and
/// the scripts always let some bytes through, so a connection that can move moves).
const STUCK: usize = 100;

/// Readiness events as the reactor passes them: (readable, writable, read_closed).
fn events() -> impl Strategy<Value = Vec<(bool, bool, bool)>> {
    proptest::collection::vec(any::<(bool, bool, bool)>(), 1..12)
}

#[derive(Debug, Clone)]
struct EchoRun {
    data: Vec<u8>,
    reads: Vec<usize>,
    writes: Vec<usize>,
    end: End,
    events: Vec<(bool, bool, bool)>,
    buf: usize,
    cap: usize,
    budget: usize,
}

/// The echo connection: after every event, what went out is exactly a prefix of what came in,
/// everything read is either out or pending (nothing lost, nothing twice), pending never passes
/// the cap, the counters say the same; and the run ends as the stream does: EOF → everything
/// echoed, then our FIN; reset → closed as a reset; silence → open and owing nothing.
#[test]
fn echo_schedules() {
    let strategy = (
        super::bytes(6000),
        reads(),
        writes(),
        end(),
        events(),
        (1usize..2048, 1usize..3000, 1usize..6000),
    )
        .prop_map(|(data, reads, writes, end, events, (buf, cap, budget))| EchoRun {
            data,
            reads,
            writes,
            end,
            events,
            buf,
            cap,
            budget,
        });
    run("echo-schedule", strategy, |r| {
        let mut io = Scripted::new(r.data.clone(), r.reads.clone(), r.writes.clone());
        io.end = r.end;
        let mut ctx = ctx(r.buf, r.cap, r.budget, 0);
        let mut echo = Echo::new(io, Life::new(0, ctx.tick, 0));
        let mut outcome = Outcome::Idle;
        let (mut step, mut last, mut still) = (0usize, (0, 0, 0), 0);
        while still < STUCK {
            let (mut readable, mut writable, rdhup) = r.events[step % r.events.len()];
            // Every few turns both edges come (a real socket's edges would: the script's
            // refusals end and input is there), so a schedule always gets somewhere.
            if step % 5 == 4 {
                (readable, writable) = (true, true);
            }
            let read_closed = rdhup && r.end == End::Eof;
            outcome = if outcome == Outcome::MoreToRead {
                echo.on_readable(&mut ctx, 0)
            } else {
                echo.on_event(&mut ctx, readable, writable, read_closed).expect("open")
            };
            step += 1;
            let (input, out) = (&echo.io.input, &echo.io.output);
            prop_assert!(out.len() <= input.len() && out[..] == input[..out.len()], "out of order");
            prop_assert_eq!(echo.io.at, out.len() + echo.pending(), "read = echoed + pending");
            prop_assert!(
                echo.pending() <= r.cap,
                "pending {} over the cap {}",
                echo.pending(),
                r.cap
            );
            prop_assert_eq!(ctx.stats.bytes_in, echo.io.at as u64);
            prop_assert_eq!(ctx.stats.bytes_out, out.len() as u64);
            prop_assert!(!echo.io.wrote_after_shut);
            match outcome {
                Outcome::Close(CloseReason::Eof) => {
                    prop_assert_eq!(r.end, End::Eof);
                    prop_assert!(echo.io.output == r.data, "closed before echoing everything");
                    break;
                }
                Outcome::Close(CloseReason::Reset) => {
                    prop_assert_eq!(r.end, End::Reset);
                    prop_assert_eq!(echo.io.unread(), 0, "a reset before the input ended");
                    break;
                }
                Outcome::Close(other) => prop_assert!(false, "closed as {:?}", other),
                _ => {}
            }
            if r.end == End::Silent && echo.io.unread() == 0 && echo.pending() == 0 {
                break;
            }
            let now = (echo.io.at, echo.io.output.len(), echo.pending());
            still = if now == last { still + 1 } else { 0 };
            last = now;
        }
        match r.end {
            End::Eof => prop_assert_eq!(outcome, Outcome::Close(CloseReason::Eof)),
            End::Reset => prop_assert_eq!(outcome, Outcome::Close(CloseReason::Reset)),
            End::Silent => {
                prop_assert!(
                    echo.io.output == r.data && echo.state() == State::Open,
                    "stuck: {} of {} echoed, {} pending, {} unread, {}, cap {}, buf {}",
                    echo.io.output.len(),
                    r.data.len(),
                    echo.pending(),
                    echo.io.unread(),
                    echo.state(),
                    r.cap,
                    r.buf
                );
            }
        }
        echo.close(&mut ctx.pool);
        prop_assert!(echo.io.shut && echo.pending() == 0);
        Ok(())
    });
}

/// An operation on an output buffer or an outbox.
#[derive(Debug, Clone)]
enum BufOp {
    Push(Vec<u8>),
    /// Consume this share (per 256) of what is pending.
    Consume(u8),
}

fn buf_ops() -> impl Strategy<Value = Vec<BufOp>> {
    let op = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..700).prop_map(BufOp::Push),
        any::<u8>().prop_map(BufOp::Consume),
    ];
    proptest::collection::vec(op, 0..40)
}

/// The echo's output buffer against a `Vec<u8>`: same bytes in the same order, storage never
/// past the cap when pushes respect `room`, and all of it back to the pool when drained.
#[test]
fn out_buffer_schedules() {
    run("out-buffer", (buf_ops(), 1usize..4000), |(ops, cap)| {
        let mut pool = BufferPool::new(4);
        let mut buf = OutBuf::new();
        let mut model: Vec<u8> = Vec::new();
        for op in ops {
            match op {
                BufOp::Push(bytes) => {
                    let take = bytes.len().min(buf.room(cap));
                    buf.push(&bytes[..take], cap, &mut pool);
                    model.extend_from_slice(&bytes[..take]);
                }
                BufOp::Consume(share) => {
                    let n = model.len() * share as usize / 256;
                    buf.consume(n, &mut pool);
                    model.drain(..n);
                }
            }
            prop_assert_eq!(buf.pending(), &model[..]);
            prop_assert!(buf.len() <= cap && buf.capacity() <= cap.max(crate::buffer::MIN_BLOCK));
        }
        let n = buf.len();
        buf.consume(n, &mut pool);
        prop_assert_eq!(buf.capacity(), 0, "drained storage goes back to the pool");
        Ok(())
    });
}

/// A member's outbox against a `Vec<u8>`: what the slices offer is the pending bytes in order
/// (up to the iovec limit), `single` agrees, `len` counts them, and a direct send's rest is kept.
#[test]
fn outbox_schedules() {
    run("outbox", (buf_ops(), any::<bool>()), |(ops, rest_first)| {
        let mut out = Outbox::default();
        let mut model: Vec<u8> = Vec::new();
        for (i, op) in ops.into_iter().enumerate() {
            match op {
                BufOp::Push(bytes) if i == 0 && rest_first => {
                    let sent = bytes.len() / 3;
                    out.push_rest(Arc::from(&bytes[..]), sent);
                    model.extend_from_slice(&bytes[sent..]);
                }
                BufOp::Push(bytes) => {
                    out.push(Arc::from(&bytes[..]));
                    model.extend_from_slice(&bytes);
                }
                BufOp::Consume(share) => {
                    let mut iov = [std::io::IoSlice::new(&[]); crate::sys::MAX_IOV];
                    let k = out.slices(&mut iov);
                    let offered: Vec<u8> =
                        iov[..k].iter().flat_map(|s| s.iter().copied()).collect();
                    prop_assert!(
                        model.starts_with(&offered)
                            && (k < crate::sys::MAX_IOV || !offered.is_empty())
                    );
                    prop_assert!(k == crate::sys::MAX_IOV || offered.len() == model.len());
                    let n = offered.len() * share as usize / 256;
                    out.consume(n);
                    model.drain(..n);
                }
            }
            prop_assert_eq!(out.len(), model.len());
            if let Some(single) = out.single() {
                prop_assert_eq!(single, &model[..]);
            }
        }
        Ok(())
    });
}

/// The deadline heap against a sorted list: at every time step, exactly the deadlines due come
/// out, earliest first, and `next_at` names the earliest still armed.
#[test]
fn timer_schedules() {
    let op = prop_oneof![
        (0u64..5000, 0usize..50).prop_map(|(ms, key)| (true, ms, key)),
        (0u64..800).prop_map(|ms| (false, ms, 0)),
    ];
    run("timers", proptest::collection::vec(op, 0..60), |ops| {
        let start = Instant::now();
        let mut now = start;
        let mut timers = Timers::new(start);
        let mut model: Vec<Deadline> = Vec::new();
        for (seq, (arm, ms, key)) in ops.into_iter().enumerate() {
            if arm {
                let d = Deadline {
                    at: now + Duration::from_millis(ms),
                    key,
                    id: key as u32,
                    seq: seq as u32,
                    kind: Kind::Idle,
                };
                timers.arm(d);
                model.push(d);
                continue;
            }
            now += Duration::from_millis(ms);
            model.sort();
            let due: Vec<Deadline> = model.iter().copied().filter(|d| d.at <= now).collect();
            model.retain(|d| d.at > now);
            let mut popped = Vec::new();
            while let Some(d) = timers.pop_due(now) {
                popped.push(d);
            }
            prop_assert_eq!(popped, due);
            prop_assert_eq!(timers.next_at(), model.iter().map(|d| d.at).min());
        }
        Ok(())
    });
}

#[derive(Debug, Clone)]
struct ChatRun {
    lines: Vec<String>,
    reads: Vec<usize>,
    writes: Vec<usize>,
    end: End,
    events: Vec<(bool, bool, bool)>,
    /// Per turn: deliver the next segment from another member, straight to the socket if it may.
    deliveries: Vec<(bool, bool)>,
    cap: usize,
    max_line: usize,
}

/// What the room must see from the member's lines, up to where it stops reading: the lines it
/// posts (named once it has a name), the notices, and how many answers it gets.
#[derive(Debug, Default, PartialEq)]
struct ChatModel {
    posted: Vec<u8>,
    notices: Vec<String>,
    replies: usize,
    /// It quit or sent a line too long: nothing after is read.
    stopped: bool,
}

fn chat_model(lines: &[String], max_line: usize) -> ChatModel {
    let mut m = ChatModel::default();
    let mut name: Option<&str> = None;
    for line in lines {
        if line.len() > max_line {
            m.replies += 1; // * error: line too long
            m.stopped = true;
            break;
        }
        match line.split_once(' ').unwrap_or((line, "")) {
            ("/quit", _) => {
                m.stopped = true;
                break;
            }
            ("/nick", new) if crate::behaviour::chat::valid_name(new) => {
                if name != Some(new) {
                    m.notices.push(match name {
                        None => format!("* {new} joined\n"),
                        Some(old) => format!("* {old} is now {new}\n"),
                    });
                    name = Some(new);
                }
            }
            (c, _) if c.starts_with('/') => m.replies += 1,
            _ => {
                if let Some(name) = name {
                    m.posted.extend_from_slice(format!("{name}: ").as_bytes());
                }
                m.posted.extend_from_slice(line.as_bytes());
                m.posted.push(b'\n');
            }
        }
    }
    if let Some(name) = name {
        m.notices.push(format!("* {name} left\n"));
    }
    m
}

/// What a member received, without its own answers (lines that start with `*`): only what
/// other members sent.
fn from_others(output: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    for line in output.split_inclusive(|&b| b == b'\n') {
        if !line.starts_with(b"*") {
            v.extend_from_slice(line);
        }
    }
    v
}

/// A chat member: its lines and commands read in any pieces, its writes taken in any amounts,
/// other members' lines delivered to it at any turn (directly or through its outbox, as the
/// reactor does). After every turn: what it received from others is, in order, a prefix of
/// what was delivered, its pending output within the cap; what it posted is the model's lines
/// in order. At a clean end: everything delivered arrived, with one answer per command.
#[test]
fn chat_member_schedules() {
    let line = prop_oneof![
        6 => "[a-z ]{0,40}",
        1 => Just("/who".to_string()),
        1 => Just("/whoami".to_string()),
        1 => "/nick (alice|bob|b@d|)",
        1 => Just("/frob".to_string()),
        1 => Just("/quit".to_string()),
    ];
    let strategy = (
        proptest::collection::vec(line, 0..30),
        (reads(), writes(), end(), events()),
        proptest::collection::vec(any::<(bool, bool)>(), 1..10),
        (1usize..600, 8usize..60),
    )
        .prop_map(|(lines, (reads, writes, end, events), deliveries, (cap, max_line))| ChatRun {
            lines,
            reads,
            writes,
            end,
            events,
            deliveries,
            cap,
            max_line,
        });
    run("chat-schedule", strategy, |r| {
        let input: Vec<u8> = r.lines.iter().flat_map(|l| format!("{l}\n").into_bytes()).collect();
        let mut io = Scripted::new(input, r.reads.clone(), r.writes.clone());
        io.end = r.end;
        let mut ctx = ctx(512, r.cap, 4096, r.max_line);
        let mut member = Member::join(io, Life::new(0, ctx.tick, 0), 0, 0, None, &mut ctx);
        let model = chat_model(&r.lines, r.max_line);
        let (mut delivered, mut posted, mut notices) = (Vec::new(), Vec::new(), Vec::new());
        let mut outcome = Outcome::Idle;
        let mut next = 0usize;
        let (mut last, mut still) = ((0, 0, 0, 0), 0);
        for step in 0.. {
            if still == STUCK {
                break;
            }
            let (mut readable, mut writable, rdhup) = r.events[step % r.events.len()];
            if step % 5 == 4 {
                (readable, writable) = (true, true);
            }
            let read_closed = rdhup && r.end == End::Eof;
            if outcome == Outcome::Idle || outcome == Outcome::MoreToRead {
                outcome = if outcome == Outcome::MoreToRead {
                    member.on_readable(&mut ctx, 0)
                } else {
                    member.on_event(&mut ctx, readable, writable, read_closed)
                };
            }
            while let Some(mail) = ctx.chat.mail.pop_front() {
                if mail.lines == 0 {
                    notices.push(String::from_utf8_lossy(&mail.post.text).into_owned());
                } else {
                    posted.extend_from_slice(&mail.post.text);
                }
            }
            // Another member's line, as the reactor's fan-out hands it over.
            let (deliver, direct) = r.deliveries[step % r.deliveries.len()];
            if deliver
                && !member.is_closed()
                && matches!(outcome, Outcome::Idle | Outcome::MoreToRead)
                && next < 200
            {
                let post = Posted::loose(format!("other {next}\n").as_bytes());
                let seg = &post.text;
                let mut renderings = Renderings::new(&post);
                next += 1;
                if direct && member.can_send_now() {
                    match member.send_now(&mut renderings, &mut ctx.stats, ctx.tick) {
                        Ok(()) => delivered.extend_from_slice(seg),
                        Err(reason) => outcome = Outcome::Close(reason),
                    }
                } else if member.deliver(&mut renderings, r.cap, &mut ctx.chat.dirty) {
                    delivered.extend_from_slice(seg);
                } else {
                    let before = member.pending();
                    prop_assert!(before + seg.len() > r.cap);
                    if let Outcome::Close(reason) = member.flush(&mut ctx.stats, ctx.tick) {
                        outcome = Outcome::Close(reason);
                    } else if member.deliver(&mut renderings, r.cap, &mut ctx.chat.dirty) {
                        delivered.extend_from_slice(seg);
                    } else {
                        outcome = Outcome::Close(CloseReason::Slow);
                    }
                }
            }
            // The end of the turn: every member listed is flushed.
            for _ in std::mem::take(&mut ctx.chat.dirty) {
                member.unlist();
                if matches!(outcome, Outcome::Idle | Outcome::MoreToRead) {
                    outcome = member.flush(&mut ctx.stats, ctx.tick);
                }
            }
            let got = from_others(&member.io.output);
            let whole = got.len() - got.iter().rev().position(|&b| b == b'\n').unwrap_or(got.len());
            prop_assert!(delivered.starts_with(&got[..whole]), "received out of order");
            prop_assert!(
                model.posted.starts_with(&posted),
                "posted {:?}",
                String::from_utf8_lossy(&posted)
            );
            prop_assert!(!member.io.wrote_after_shut);
            if let Outcome::Close(reason) = outcome {
                member.close(&mut ctx, reason);
                while let Some(mail) = ctx.chat.mail.pop_front() {
                    notices.push(String::from_utf8_lossy(&mail.post.text).into_owned());
                }
                match reason {
                    CloseReason::Eof | CloseReason::LineTooLong => {
                        prop_assert!(model.stopped || r.end == End::Eof, "closed as {:?}", reason);
                        prop_assert_eq!(&got, &delivered, "left before delivering everything");
                        prop_assert_eq!(&posted, &model.posted);
                        prop_assert_eq!(&notices, &model.notices);
                        let answers = member
                            .io
                            .output
                            .split(|&b| b == b'\n')
                            .filter(|l| l.starts_with(b"* "))
                            .count();
                        prop_assert_eq!(answers, model.replies);
                    }
                    CloseReason::Reset => {
                        prop_assert!(r.end == End::Reset && member.io.unread() == 0)
                    }
                    CloseReason::Slow => prop_assert!(member.pending() == 0),
                    other => prop_assert!(false, "closed as {:?}", other),
                }
                return Ok(());
            }
            if member.io.unread() == 0
                && r.end == End::Silent
                && member.pending() == 0
                && next >= 200
            {
                break;
            }
            let now = (member.io.at, member.io.output.len(), member.pending(), next);
            still = if now == last { still + 1 } else { 0 };
            last = now;
        }
        prop_assert_eq!(r.end, End::Silent, "a member that never ended: {:?}", outcome);
        prop_assert!(!model.stopped, "it quit, yet it is still open");
        prop_assert_eq!(&posted, &model.posted);
        Ok(())
    });
}
