//! The `ricochet` binary (see [`ricochet::cli::main`]).

/// Large blocks on a cache line (see [`ricochet::alloc`]).
#[global_allocator]
static ALLOCATOR: ricochet::alloc::LineAligned = ricochet::alloc::LineAligned;

fn main() -> std::process::ExitCode {
    ricochet::cli::main()
}
