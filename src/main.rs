//! The `ricochet` binary (see [`ricochet::cli::main`]).

fn main() -> std::process::ExitCode {
    ricochet::cli::main()
}
