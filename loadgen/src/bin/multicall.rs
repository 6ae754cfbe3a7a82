//! ricochet and loadgen in one binary, for the container image: what it runs is the name it is
//! called by (`/loadgen` → loadgen, anything else → ricochet), as busybox does. The two share
//! most of their code (rustls, mio, clap, serde), so one file holds it once: the image is about
//! half the size of the two binaries side by side. Built only with `--features multicall`
//! (`scripts/image.sh`).

/// Large blocks on a cache line (see [`ricochet::alloc`]).
#[global_allocator]
static ALLOCATOR: ricochet::alloc::LineAligned = ricochet::alloc::LineAligned;

fn main() -> std::process::ExitCode {
    let argv0 = std::env::args_os().next().unwrap_or_default();
    let name = std::path::Path::new(&argv0).file_name().unwrap_or_default();
    match name.to_str() {
        Some("loadgen") => ricochet_loadgen::main(),
        _ => ricochet::cli::main(),
    }
}
