//! The `loadgen` binary (see `entry.rs`).

fn main() -> std::process::ExitCode {
    ricochet_loadgen::main()
}
