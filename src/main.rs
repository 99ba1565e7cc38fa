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

// The driver reads every reply into a zeroed buffer (`vec![0; len]`), and jemalloc zeroes a
// reused allocation too large for its thread cache (32 KiB by default) by handing its pages back
// to the kernel: every page of every source batch faulted in again (about 180,000 faults per
// million documents copied). From the thread cache, which this lets hold allocations of up to
// 4 MiB (the replies of the default 2 MiB batches), it is zeroed with a memset instead: a fifth
// less CPU per document. Four of each size per thread, not twenty, bound what the caches hold.
#[cfg(all(target_arch = "x86_64", not(target_env = "msvc")))]
#[allow(unsafe_code)]
// SAFETY: jemalloc reads this symbol (`malloc_conf`, which tikv-jemalloc-sys prefixes `_rjem_`)
// once, when it initializes, as a `const char *` to a NUL-terminated string; a reference to a
// byte array is such a pointer, and the string is static and never written.
#[unsafe(export_name = "_rjem_malloc_conf")]
static MALLOC_CONF: &[u8; 41] = b"tcache_max:4194304,tcache_nslots_large:4\0";
