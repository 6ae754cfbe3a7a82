//! `loadgen sweep`: the highest rate a server sustains within latency objectives.
//!
//! Open-loop steps of `--step-time` (each after a one-second warm-up) start at `--start-rate`
//! (default: a tenth of what a two-second closed-loop probe achieves) and double until a step
//! fails; then the rate is bisected between the last passing and the first failing step until
//! their gap is within `--precision`. A step passes when it meets every `--slo`, achieves at least
//! 95 % of its requested rate, and has no errors and no mismatches. The answer is the highest
//! passing step's achieved rate.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::report::Report;
use crate::run::{self, Settings};
use crate::Error;

/// Which latency figure an objective bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Figure {
    /// Median.
    P50,
    /// 99th percentile.
    P99,
    /// 99.9th percentile.
    P999,
    /// Slowest.
    Max,
}

/// A latency objective: `p99=1ms`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Slo {
    /// The figure.
    pub figure: Figure,
    /// Its limit, µs.
    pub limit_us: f64,
}

impl Slo {
    /// Parses `p50=DUR`, `p99=DUR`, `p999=DUR` or `max=DUR`.
    pub fn parse(text: &str) -> Result<Slo, String> {
        let usage = || format!("--slo `{text}`: expected p50=DUR, p99=DUR, p999=DUR or max=DUR");
        let (name, value) = text.split_once('=').ok_or_else(usage)?;
        let figure = match name {
            "p50" => Figure::P50,
            "p99" => Figure::P99,
            "p999" => Figure::P999,
            "max" => Figure::Max,
            _ => return Err(usage()),
        };
        let limit =
            ricochet::units::parse_duration(value).map_err(|e| format!("--slo {text}: {e}"))?;
        if limit.is_zero() {
            return Err(format!("--slo {text}: the limit must be more than 0"));
        }
        Ok(Slo { figure, limit_us: limit.as_secs_f64() * 1e6 })
    }

    fn value(&self, report: &Report) -> f64 {
        let l = &report.latency_us;
        match self.figure {
            Figure::P50 => l.p50,
            Figure::P99 => l.p99,
            Figure::P999 => l.p999,
            Figure::Max => l.max,
        }
    }

    /// `p99 ≤ 1 ms`.
    pub fn describe(&self) -> String {
        let name = match self.figure {
            Figure::P50 => "p50",
            Figure::P99 => "p99",
            Figure::P999 => "p99.9",
            Figure::Max => "max",
        };
        let limit = if self.limit_us >= 1000.0 {
            format!("{} ms", self.limit_us / 1000.0)
        } else {
            format!("{} µs", self.limit_us)
        };
        format!("{name} ≤ {limit}")
    }
}

/// How to sweep.
#[derive(Debug, Clone)]
pub struct SweepSettings {
    /// Every step must meet all of these.
    pub slos: Vec<Slo>,
    /// Measured time per step.
    pub step_time: Duration,
    /// The first step's rate; `None`: a tenth of a closed-loop probe's throughput.
    pub start_rate: Option<f64>,
    /// Stop bisecting when the passing and failing rates are this close (a fraction).
    pub precision: f64,
}

/// One step's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    /// Messages per second asked for.
    pub requested: f64,
    /// Messages per second achieved.
    pub achieved: f64,
    /// Latency figures, µs.
    pub p50_us: f64,
    /// 99th percentile, µs.
    pub p99_us: f64,
    /// 99.9th percentile, µs.
    pub p999_us: f64,
    /// Slowest, µs.
    pub max_us: f64,
    /// Errors and mismatches in the step.
    pub errors: u64,
    /// Met every objective, reached 95 % of its rate, no errors.
    pub pass: bool,
}

/// The sweep's result.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// Every step, in the order run.
    pub steps: Vec<Step>,
    /// The highest passing step's achieved rate; `None` when no step passed.
    pub answer: Option<f64>,
}

/// The highest rate the target sustains within `sweep`'s objectives; `on_step` sees each step as
/// it completes.
pub fn sweep(
    base: &Settings,
    sweep: &SweepSettings,
    stop: Arc<AtomicBool>,
    mut on_step: impl FnMut(&Step),
) -> Result<Outcome, Error> {
    let mut steps = Vec::new();
    let start = match sweep.start_rate {
        Some(rate) => rate,
        None => {
            let mut probe = base.clone();
            probe.rate = None;
            probe.messages = None;
            probe.duration = Some(Duration::from_secs(2));
            probe.warmup = Duration::from_millis(500);
            let r = run::run(&probe, Arc::clone(&stop))?.report;
            (r.msgs_per_sec / 10.0).max(crate::schedule::MIN_RATE)
        }
    };
    let mut run_step = |rate: f64, steps: &mut Vec<Step>| -> Result<bool, Error> {
        let mut s = base.clone();
        s.rate = Some(rate);
        s.messages = None;
        s.duration = Some(sweep.step_time);
        s.warmup = Duration::from_secs(1);
        let r = run::run(&s, Arc::clone(&stop))?.report;
        let errors = r.errors + r.mismatches;
        let pass = errors == 0
            && r.msgs_per_sec >= 0.95 * rate
            && sweep.slos.iter().all(|slo| slo.value(&r) <= slo.limit_us);
        let step = Step {
            requested: rate,
            achieved: r.msgs_per_sec,
            p50_us: r.latency_us.p50,
            p99_us: r.latency_us.p99,
            p999_us: r.latency_us.p999,
            max_us: r.latency_us.max,
            errors,
            pass,
        };
        on_step(&step);
        steps.push(step);
        Ok(pass)
    };
    // Double until a step fails.
    let mut low = None;
    let mut rate = start;
    let high = loop {
        if stop.load(Ordering::Relaxed) {
            break None;
        }
        if !run_step(rate, &mut steps)? {
            break Some(rate);
        }
        low = Some(rate);
        if rate * 2.0 > 1e9 {
            break None;
        }
        rate *= 2.0;
    };
    // Bisect between the last pass and the first failure.
    if let (Some(mut lo), Some(mut hi)) = (low, high) {
        while (hi - lo) / lo > sweep.precision && !stop.load(Ordering::Relaxed) {
            let mid = (lo + hi) / 2.0;
            if run_step(mid, &mut steps)? {
                lo = mid;
            } else {
                hi = mid;
            }
        }
    }
    let answer = steps
        .iter()
        .filter(|s| s.pass)
        .max_by(|a, b| a.requested.total_cmp(&b.requested))
        .map(|s| s.achieved);
    Ok(Outcome { steps, answer })
}
