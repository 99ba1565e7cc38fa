//! `mongoshift-testd`: the testkit server as a process, for tests that drive subprocesses and for
//! trying clients (mongosh, pymongo) by hand.
//!
//! `mongoshift-testd --port 0 --mode replset|standalone|mongos --replset rs0 [--shards N]
//! [--oplog-max-events N] [--noop-interval-ms MS] [--user NAME[@DB]:PASSWORD[:ROLE[@DB],...]]...
//! [--tls-cert PEM --tls-key PEM]` prints
//! `listening on 127.0.0.1:PORT` as its first stdout line, serves until SIGINT/SIGTERM, then
//! exits 0.

#![forbid(unsafe_code)]

use std::io::Write;
use std::process::ExitCode;

use clap::{Parser, ValueEnum};
use mongoshift_testkit::{Mode, TestServer, UserSpec};

// Every command allocates and frees its request, reply and documents; under a benchmark's load
// glibc's malloc and free took a fifth of the server's CPU. jemalloc, on the targets where
// mongoshift itself uses it (see its src/main.rs: x86_64, not MSVC).
#[cfg(all(target_arch = "x86_64", not(target_env = "msvc")))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Command-line options.
#[derive(Debug, Parser)]
#[command(
    name = "mongoshift-testd",
    version,
    about = "A MongoDB wire-protocol test server"
)]
struct Args {
    /// Port to listen on (127.0.0.1 only); 0 picks a free port.
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Deployment to impersonate.
    #[arg(long, value_enum, default_value_t = CliMode::Replset)]
    mode: CliMode,
    /// Replica-set name (replset mode).
    #[arg(long, default_value = "rs0")]
    replset: String,
    /// Internal shards behind the mongos (mongos mode).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=64))]
    shards: u16,
    /// Oplog entries to retain before history is lost.
    #[arg(long, default_value_t = 100_000)]
    oplog_max_events: usize,
    /// How often an idle server writes a no-op, in milliseconds (mongod: 10 s), so that
    /// change-stream high-water marks advance.
    #[arg(long, default_value_t = 10_000)]
    noop_interval_ms: u64,
    /// A user, repeatable; with at least one, clients must authenticate (SCRAM-SHA-256 or
    /// SCRAM-SHA-1). NAME[@DB]:PASSWORD[:ROLE,...]: the user lives in admin unless @DB is given;
    /// a ROLE is a built-in role on the user's database or ROLE@DB; without a role list the user
    /// is root, with an empty one (NAME:PASSWORD:) it has no roles. The password cannot
    /// contain ':'.
    #[arg(long = "user", value_name = "NAME:PASSWORD[:ROLES]", value_parser = parse_user)]
    users: Vec<UserSpec>,
    /// PEM file with the server certificate (and chain); the server then accepts only TLS.
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    tls_cert: Option<std::path::PathBuf>,
    /// PEM file with the private key of --tls-cert.
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,
}

fn parse_user(value: &str) -> Result<UserSpec, String> {
    UserSpec::parse_cli(value).map_err(|e| e.to_string())
}

/// The `--mode` values.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum CliMode {
    /// A single-member replica-set primary.
    Replset,
    /// A standalone mongod.
    Standalone,
    /// A mongos in front of `--shards` internal shards.
    Mongos,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let mode = match args.mode {
        CliMode::Replset => Mode::ReplicaSet,
        CliMode::Standalone => Mode::Standalone,
        CliMode::Mongos => Mode::Mongos,
    };
    let mut builder = TestServer::builder()
        .mode(mode)
        .replica_set_name(args.replset)
        .shards(usize::from(args.shards))
        .port(args.port)
        .oplog_max_events(args.oplog_max_events)
        .noop_interval(std::time::Duration::from_millis(args.noop_interval_ms))
        .argv(std::env::args().collect());
    for user in args.users {
        builder = builder.user_spec(user);
    }
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        let read = |path: &std::path::Path| {
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
        };
        match read(cert).and_then(|c| read(key).map(|k| (c, k))) {
            Ok((cert, key)) => builder = builder.tls(cert, key),
            Err(e) => {
                eprintln!("mongoshift-testd: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    let server = match builder.start_blocking() {
        Ok(server) => server,
        Err(e) => {
            eprintln!("mongoshift-testd: {e}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mongoshift-testd: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Registered before the address is printed: whoever starts the server may signal it as
    // soon as it answers, and an unregistered SIGTERM would kill it without a shutdown.
    let signalled = {
        let _context = runtime.enter();
        match shutdown_signals() {
            Ok(signalled) => signalled,
            Err(e) => {
                eprintln!("mongoshift-testd: cannot listen for signals: {e}");
                return ExitCode::FAILURE;
            }
        }
    };
    let mut stdout = std::io::stdout();
    if writeln!(stdout, "listening on {}", server.addr())
        .and_then(|()| stdout.flush())
        .is_err()
    {
        return ExitCode::FAILURE;
    }
    runtime.block_on(async {
        signalled.await;
        server.shutdown().await;
    });
    ExitCode::SUCCESS
}

/// Listens for SIGINT and SIGTERM; the future resolves on the first.
#[cfg(unix)]
fn shutdown_signals() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
    })
}

/// Listens for Ctrl-C, Ctrl-Break (all a parent can send to another process group) and the
/// console closing; the future resolves on the first.
#[cfg(windows)]
fn shutdown_signals() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::windows::{ctrl_break, ctrl_c, ctrl_close};
    let (mut c, mut brk, mut close) = (ctrl_c()?, ctrl_break()?, ctrl_close()?);
    Ok(async move {
        tokio::select! {
            _ = c.recv() => {}
            _ = brk.recv() => {}
            _ = close.recv() => {}
        }
    })
}

/// No signals on other targets: the server runs until its process is killed.
#[cfg(not(any(unix, windows)))]
fn shutdown_signals() -> std::io::Result<impl std::future::Future<Output = ()>> {
    Ok(std::future::pending())
}
