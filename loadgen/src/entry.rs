//! The `loadgen` command: parse, dispatch to the benchmark or a subcommand (`commands.rs`), map
//! the outcome to an exit code. Exit codes: 0 no errors and no mismatches (chat: and no lost
//! deliveries); 1 otherwise (or the run failed); 2 usage. In the library so that one binary can
//! be both commands (the image's, see `src/bin/multicall.rs`).

use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use clap::{CommandFactory, Parser};

use crate::cli::{Args, Command};
use crate::commands;
use crate::settings::Settings;

/// Runs `loadgen` with this process's arguments.
pub fn main() -> ExitCode {
    // `loadgen sweep TARGET ...` takes every load option, so it is the main command in sweep
    // mode rather than a subcommand of its own.
    let mut argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let sweeping = argv.get(1).is_some_and(|a| a == "sweep");
    if sweeping {
        argv.remove(1);
    }
    let args = Args::parse_from(argv);
    let usage = |msg: String| -> ! {
        Args::command().error(clap::error::ErrorKind::ValueValidation, msg).exit()
    };
    match &args.command {
        Some(Command::Probe { target, message, timeout, trust, proxy_header }) => {
            return commands::probe(target, message.as_bytes(), *timeout, trust, *proxy_header)
                .unwrap_or_else(|e| usage(e));
        }
        Some(Command::Completions { shell }) => return commands::completions(*shell),
        Some(Command::ManPage) => return commands::man_page(),
        Some(Command::Plot { files, out }) => return commands::plot(files, out),
        Some(Command::Merge { files, json, out, force }) => {
            return commands::merge(files, *json, out.as_deref(), *force)
        }
        Some(Command::Compare { files, plot: svg }) => {
            return commands::compare(files, svg.as_deref())
        }
        _ => {}
    }
    let settings = Settings::try_from(&args).unwrap_or_else(|e| usage(e));
    let sweep_flags = !args.slo.is_empty() || args.start_rate.is_some();
    if sweep_flags && !sweeping {
        usage("--slo and --start-rate are for `loadgen sweep`".into());
    }
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        if let Err(e) = signal_hook::flag::register(signal, Arc::clone(&stop)) {
            eprintln!("loadgen: cannot handle signal {signal}: {e}");
        }
    }
    if sweeping {
        return commands::sweep(&args, &settings, stop).unwrap_or_else(|e| usage(e));
    }
    commands::bench(&args, &settings, stop)
}
