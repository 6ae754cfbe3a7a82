//! The `ricochet` binary: parse the command line, bind, announce readiness, run, report.
//! Exit codes: 0 clean stop, 1 runtime failure, 2 usage error.

use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use ricochet::cli::{Args, Settings};
use ricochet::{output, ControlSocket, Server};

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(text) = args.generated() {
        use std::io::Write;
        // A reader that goes away early is not an error here either.
        let _ = std::io::stdout().write_all(&text);
        return ExitCode::SUCCESS;
    }
    let settings = match Settings::try_from(args) {
        Ok(settings) => settings,
        Err(msg) => {
            Args::command().error(clap::error::ErrorKind::ValueValidation, msg).exit();
        }
    };
    match run(settings) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            output::stderr_line(&format!("ricochet: {e:#}"));
            ExitCode::from(1)
        }
    }
}

fn run(settings: Settings) -> anyhow::Result<()> {
    use anyhow::Context;
    let server = Server::bind(settings.config)?;
    // Bound before the ready line, so a script may use it as soon as it reads that line; the
    // socket file goes when this is dropped, at exit.
    let _control = match &settings.control {
        Some(path) => Some(
            ControlSocket::bind(path, server.controller()).context("opening the control socket")?,
        ),
        None => None,
    };
    let ready = server.ready_json();
    if let Some(path) = &settings.ready_file {
        ricochet::ready::write_atomic(path, &ready)
            .with_context(|| format!("writing the ready file {}", path.display()))?;
    }
    output::stdout_line(&ready);
    for spec in server.local_addrs() {
        output::stderr_line(&format!(
            "ricochet: listening on {} {}",
            spec.proto(),
            spec.display_addr()
        ));
    }
    if let Some(addr) = server.metrics_addr() {
        output::stderr_line(&format!("ricochet: serving /metrics and /healthz on http://{addr}"));
    }
    let reactors = server.stats_sources();
    server.run()?;
    let each: Vec<_> = reactors.iter().map(|r| r.load()).collect();
    output::stdout_line(&ricochet::stats::event_json("stopped", &each));
    Ok(())
}
