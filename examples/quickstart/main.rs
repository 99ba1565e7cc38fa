//! The quickstart: a real migration between two testkit servers while an application keeps
//! writing, through the same library code as `mongoshift plan`, `apply` and `cutover`.
//!
//! ```sh
//! cargo run --release --example quickstart
//! ```
//!
//! The migration's files (`migration.toml`, `migration.lock`, `migration-report.json`) stay in
//! `target/quickstart/` afterwards.

mod scenario;

use std::path::PathBuf;
use std::process::ExitCode;

use mongoshift::sync::ApplyOutcome;
use scenario::{BoxError, Scale};
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("MONGOSHIFT_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match run().await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("quickstart failed: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<ExitCode, BoxError> {
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(
            || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"),
            PathBuf::from,
        )
        .join("quickstart");
    // A previous run's lockfile belongs to servers that no longer exist.
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir_all(&dir)?;

    let cancel = CancellationToken::new();
    let on_interrupt = cancel.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            on_interrupt.cancel();
        }
    });
    let say = |line: &str| println!("{line}");
    let finished = scenario::run(&dir, Scale::FULL, cancel, &say).await?;

    let writer = &finished.writer;
    println!(
        "\nThe writer made {} changes; it stopped at: {}",
        writer.writes,
        writer
            .stopped_by
            .as_deref()
            .unwrap_or("(still running when asked to stop)")
    );
    let code = match &finished.outcome {
        Ok(ApplyOutcome::Committed(report)) => {
            println!("\n{}", report.human());
            if let Some(v) = &report.verification {
                println!("Verification, per namespace:\n{}", v.human());
            }
            println!(
                "The destination now holds everything the source held when its writes stopped. \
                 The files are in {}.",
                dir.display()
            );
            ExitCode::SUCCESS
        }
        Ok(other) => {
            println!("\nThe migration ended without committing: {other:?}");
            ExitCode::FAILURE
        }
        Err(e) => {
            println!("\nThe migration failed: {e}");
            ExitCode::FAILURE
        }
    };
    Ok(code)
}
