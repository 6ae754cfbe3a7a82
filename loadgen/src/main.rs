//! The `loadgen` binary (see `entry.rs`).

/// Large blocks on a cache line (see [`ricochet::alloc`]).
#[global_allocator]
static ALLOCATOR: ricochet::alloc::LineAligned = ricochet::alloc::LineAligned;

fn main() -> std::process::ExitCode {
    ricochet_loadgen::main()
}
