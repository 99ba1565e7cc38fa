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
// jemalloc reuses them and keeps the peak at the working set. Only on x86_64, where pages are
// always 4 KiB: jemalloc fixes its page size when it is built, so an aarch64 binary built on a
// 4 KiB host would abort on a 16 or 64 KiB kernel. It does not build for MSVC.
#[cfg(all(target_arch = "x86_64", not(target_env = "msvc")))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
