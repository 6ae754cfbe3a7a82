//! The `loadgen` binary: parse, run the benchmark (or the probe), print the report.
//! Exit codes: 0 no errors and no mismatches (chat: and no lost deliveries); 1 otherwise (or the
//! run failed); 2 usage.

use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use clap::{CommandFactory, Parser};
use ricochet::output;
use ricochet_loadgen::cli::{Args, Command};
use ricochet_loadgen::run::{self, Settings};
use ricochet_loadgen::target::Target;

fn main() -> ExitCode {
    let args = Args::parse();
    let usage = |msg: String| -> ! {
        Args::command().error(clap::error::ErrorKind::ValueValidation, msg).exit()
    };
    if let Some(Command::Probe { target, message, timeout, trust }) = &args.command {
        let target = Target::parse(target).unwrap_or_else(|e| usage(e));
        let tls = match &target {
            Target::Tls(_) => match trust.client(target.host().unwrap_or("localhost"), false) {
                Ok(tls) => Some(tls),
                Err(e) => {
                    eprintln!("loadgen probe: {e}");
                    return ExitCode::from(1);
                }
            },
            _ => None,
        };
        return probe(&target, message.as_bytes(), *timeout, tls.as_ref());
    }
    let settings = Settings::try_from(&args).unwrap_or_else(|e| usage(e));
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        if let Err(e) = signal_hook::flag::register(signal, Arc::clone(&stop)) {
            eprintln!("loadgen: cannot handle signal {signal}: {e}");
        }
    }
    match run::run(&settings, stop) {
        Ok(merged) => {
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

fn probe(
    target: &Target,
    message: &[u8],
    timeout: std::time::Duration,
    tls: Option<&ricochet_loadgen::tls::TlsClient>,
) -> ExitCode {
    match ricochet_loadgen::probe::probe(target, message, timeout, tls) {
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
