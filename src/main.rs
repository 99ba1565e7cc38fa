//! The `mongoshift` command-line tool.
//!
//! All behaviour lives in the `mongoshift` library; the `cli` module parses arguments, renders
//! results and maps outcomes to the documented exit codes.

mod cli;

fn main() -> std::process::ExitCode {
    cli::run()
}

// A copy allocates and frees multi-megabyte batch buffers on every worker thread. glibc's
// malloc keeps such freed buffers in per-thread arenas, so a long copy's memory crept up well
// past its working set (the benchmark's 10x copy peaked at 1.5-1.9 times the 1x copy);
// jemalloc reuses them and keeps the peak at the working set.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
