//! The bodies of loadgen's commands: the benchmark, `sweep`, `probe`, `merge`, `plot`,
//! `compare`, completions and the man page. Each prints its own output and returns the exit
//! code; a usage error comes back as `Err` (exit 2, said by clap in `main.rs`).

use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use crate::cli::{Args, TlsArgs};
use crate::run;
use crate::settings::{Settings, Trust};
use crate::target::Target;
use clap::CommandFactory;
use ricochet::output;

/// The benchmark: run, save what was asked for, print the report; exit 0 only without errors,
/// mismatches (and, for chat, lost deliveries).
pub fn bench(args: &Args, settings: &Settings, stop: Arc<AtomicBool>) -> ExitCode {
    match run::run(settings, stop) {
        Ok(merged) => {
            if let Err(e) = save(args, &merged) {
                eprintln!("loadgen: {e}");
                return ExitCode::from(1);
            }
            // A reader that went away (`loadgen ... | head -n1`) is not a failure of the run.
            if args.json {
                output::stdout_line(&merged.json());
                for (cause, n) in &merged.errors {
                    output::stderr_line(&format!("loadgen: {n} error(s): {}", cause.describe()));
                }
            } else {
                output::stdout_line(merged.text().trim_end());
            }
            let r = &merged.report;
            let chat_loss = r.deliveries.is_some() && r.lost > 0;
            if r.errors == 0 && r.mismatches == 0 && !chat_loss {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("loadgen: {e}");
            ExitCode::from(1)
        }
    }
}

/// `loadgen completions SHELL`.
pub fn completions(shell: clap_complete::Shell) -> ExitCode {
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut Args::command(), "loadgen", &mut out);
    let _ = std::io::Write::write_all(&mut std::io::stdout(), &out);
    ExitCode::SUCCESS
}

/// The man page (roff), for scripts/man.sh.
pub fn man_page() -> ExitCode {
    let mut out = Vec::new();
    if clap_mangen::Man::new(Args::command()).render(&mut out).is_err() {
        return ExitCode::from(1);
    }
    let _ = std::io::Write::write_all(&mut std::io::stdout(), &out);
    ExitCode::SUCCESS
}

/// `loadgen probe`: a bad target is a usage error (`Err`); a TLS trust that cannot be set up
/// exits 1.
pub fn probe(
    target: &str,
    message: &[u8],
    timeout: std::time::Duration,
    trust: &TlsArgs,
    proxy: Option<ricochet::proxy::Proxy>,
) -> Result<ExitCode, String> {
    let target = Target::parse(target)?;
    let tls = match target.is_tls() {
        true => match Trust::from(trust).client(target.host().unwrap_or("localhost"), false) {
            Ok(tls) => Some(tls),
            Err(e) => {
                eprintln!("loadgen probe: {e}");
                return Ok(ExitCode::from(1));
            }
        },
        false => None,
    };
    Ok(probe_target(&target, message, timeout, tls.as_ref(), proxy))
}

/// `loadgen sweep`: a row per step as it completes, then the answer (exit 0), or exit 1 when
/// even the first step failed. A usage error comes back as `Err`.
pub fn sweep(args: &Args, settings: &Settings, stop: Arc<AtomicBool>) -> Result<ExitCode, String> {
    use crate::sweep::{Slo, SweepSettings};
    if args.slo.is_empty() {
        return Err("sweep needs at least one --slo (p50=DUR, p99=DUR, p999=DUR or max=DUR)".into());
    }
    if args.rate.is_some() || args.messages.is_some() || args.duration.is_some() {
        return Err("sweep chooses its rates and step times: drop -r, -n and -t".into());
    }
    if !(args.precision > 0.0 && args.precision < 1.0) {
        return Err(format!("--precision {} must be between 0 and 1", args.precision));
    }
    if args.step_time.is_zero() {
        return Err("--step-time must be longer than 0".into());
    }
    if let Some(rate) = args.start_rate {
        if !(rate.is_finite() && (crate::schedule::MIN_RATE..=1e9).contains(&rate)) {
            return Err(format!("--start-rate {rate} must be between 0.001 and 1e9"));
        }
    }
    let slos = args.slo.iter().map(|s| Slo::parse(s)).collect::<Result<Vec<_>, _>>()?;
    let plan = SweepSettings {
        slos: slos.clone(),
        step_time: args.step_time,
        start_rate: args.start_rate,
        precision: args.precision,
    };
    if !args.json {
        output::stdout_line(&format!(
            "{:>14} {:>14} {:>10} {:>10} {:>10} {:>10}  result",
            "requested/s", "achieved/s", "p50 µs", "p99 µs", "p99.9 µs", "max µs"
        ));
    }
    let json = args.json;
    let outcome = crate::sweep::sweep(settings, &plan, stop, |step| {
        if !json {
            output::stdout_line(&format!(
                "{:>14.0} {:>14.0} {:>10.1} {:>10.1} {:>10.1} {:>10.1}  {}",
                step.requested,
                step.achieved,
                step.p50_us,
                step.p99_us,
                step.p999_us,
                step.max_us,
                if step.pass { "pass" } else { "FAIL" }
            ));
        }
    });
    let outcome = match outcome {
        Ok(outcome) => outcome,
        Err(e) => {
            eprintln!("loadgen sweep: {e}");
            return Ok(ExitCode::from(1));
        }
    };
    let objectives: Vec<String> = slos.iter().map(Slo::describe).collect();
    if json {
        output::stdout_line(&serde_json::to_string(&outcome).expect("plain values serialize"));
    } else {
        match outcome.answer {
            Some(rate) => output::stdout_line(&format!(
                "max rate meeting {}: {} msgs/s",
                objectives.join(" and "),
                crate::report::group(rate.round() as u64)
            )),
            None => output::stdout_line(&format!(
                "no step met {} (the first, at {:.0} msgs/s, failed)",
                objectives.join(" and "),
                outcome.steps.first().map_or(0.0, |s| s.requested)
            )),
        }
    }
    if let Some(path) = &args.plot {
        if let Err(e) = crate::plot::draw_knee(&outcome.steps, path) {
            eprintln!("loadgen sweep: {e}");
            return Ok(ExitCode::from(1));
        }
    }
    Ok(if outcome.answer.is_some() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// `loadgen merge`: one report from many results.
pub fn merge(
    files: &[std::path::PathBuf],
    json: bool,
    out: Option<&std::path::Path>,
    force: bool,
) -> ExitCode {
    use crate::merge;
    let run = || -> Result<serde_json::Value, String> {
        let inputs: Vec<_> =
            files.iter().map(|f| merge::Input::load(f)).collect::<Result<_, _>>()?;
        let merged = merge::merge(&inputs, force)?;
        if let Some(path) = out {
            std::fs::write(path, merged.to_string() + "\n")
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        }
        Ok(merged)
    };
    match run() {
        Ok(merged) => {
            match json {
                true => output::stdout_line(&merged.to_string()),
                false => output::stdout_line(merge::text(&merged).trim_end()),
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("loadgen merge: {e}");
            ExitCode::from(1)
        }
    }
}

/// `loadgen plot`: every file drawn into one SVG.
pub fn plot(files: &[std::path::PathBuf], out: &std::path::Path) -> ExitCode {
    let series: Result<Vec<_>, String> =
        files.iter().map(|f| crate::plot::Series::load(f)).collect();
    match series.and_then(|s| crate::plot::draw(&s, out)) {
        Ok(()) => {
            println!("wrote {}", out.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("loadgen plot: {e}");
            ExitCode::from(1)
        }
    }
}

/// `loadgen compare`: the table, and the picture if asked.
pub fn compare(files: &[std::path::PathBuf], svg: Option<&std::path::Path>) -> ExitCode {
    let run = || -> Result<String, String> {
        let mut results = Vec::new();
        for file in files {
            let bytes = crate::results::read_file(file)?;
            let value: serde_json::Value = serde_json::from_slice(&bytes)
                .map_err(|e| format!("{}: not a JSON result: {e}", file.display()))?;
            results.push((file.display().to_string(), value));
        }
        let table = crate::report::compare_table(&results)?;
        if let Some(svg) = svg {
            let series: Result<Vec<_>, String> =
                files.iter().map(|f| crate::plot::Series::load(f)).collect();
            crate::plot::draw(&series?, svg)?;
        }
        Ok(table)
    };
    match run() {
        Ok(table) => {
            output::stdout_line(table.trim_end());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("loadgen compare: {e}");
            ExitCode::from(1)
        }
    }
}

/// `--out` and `--plot`: the result kept as JSON, and drawn.
fn save(args: &Args, merged: &crate::report::Merged) -> Result<(), String> {
    if let Some(path) = &args.out {
        std::fs::write(path, merged.json() + "\n")
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    if let Some(path) = &args.plot {
        let value: serde_json::Value =
            serde_json::from_str(&merged.json()).expect("our own JSON reads back");
        let label = merged.report.target.clone();
        let series = crate::plot::Series::from_json(label, &value)?;
        crate::plot::draw(&[series], path)?;
    }
    Ok(())
}

fn probe_target(
    target: &Target,
    message: &[u8],
    timeout: std::time::Duration,
    tls: Option<&crate::tls::TlsClient>,
    proxy: Option<ricochet::proxy::Proxy>,
) -> ExitCode {
    match crate::probe::probe(target, message, timeout, tls, proxy) {
        Ok(p) if p.echo == message => {
            println!(
                "echo from {}: {:?} ({} bytes) in {:.1} µs",
                p.endpoint,
                String::from_utf8_lossy(&p.echo),
                p.echo.len(),
                p.rtt.as_secs_f64() * 1e6
            );
            ExitCode::SUCCESS
        }
        Ok(p) => {
            eprintln!(
                "loadgen probe: {}: echo differs: sent {:?}, got {:?}",
                p.endpoint,
                String::from_utf8_lossy(message),
                String::from_utf8_lossy(&p.echo)
            );
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("loadgen probe: {e}");
            ExitCode::from(1)
        }
    }
}
