//! `mongoshift verify`: compare source and destination now; exit 3 when they differ.

use std::path::PathBuf;

use clap::Args;
use mongoshift::cluster::{Cluster, Side};
use mongoshift::exit;
use mongoshift::state::lock;
use mongoshift::sync::defining_fingerprint;
use mongoshift::verify::{self, VerifyError, VerifyMode, VerifyRequest};
use tokio_util::sync::CancellationToken;

use super::apply::lockfile_path;
use super::plan::load_config;
use crate::cli::args::Cli;
use crate::cli::output::Output;

/// `verify` arguments.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Compare counts (and indexes and options) only, not every document.
    #[arg(long)]
    pub counts: bool,

    /// Recheck differences until they agree or persist. On by default while an `apply` holds
    /// the migration's lock (changes may be in flight).
    #[arg(long)]
    pub recheck: bool,

    /// The lockfile, next to which the verification keeps its checkpoint.
    #[arg(long, value_name = "PATH")]
    pub lockfile: Option<PathBuf>,

    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Runs `verify`.
pub fn run(cli: &Cli, args: &VerifyArgs, out: &Output) -> u8 {
    let Some(config) = load_config(cli, out) else {
        return exit::ERROR;
    };
    let lockfile = lockfile_path(cli, args.lockfile.as_ref());
    let syncing = lock::read_holder(&lockfile).is_some();
    let request = VerifyRequest {
        mode: if args.counts {
            VerifyMode::Counts
        } else {
            VerifyMode::Full
        },
        recheck: args.recheck || syncing,
        checkpoint: Some(verify::checkpoint_path(&lockfile)),
    };
    let runtime = match crate::cli::app::runtime() {
        Ok(rt) => rt,
        Err(e) => {
            out.error(&format!("cannot start the async runtime: {e}"));
            return exit::ERROR;
        }
    };
    let result = runtime.block_on(async {
        let cancel = CancellationToken::new();
        tokio::spawn(crate::cli::signals::handle(cancel.clone(), *out));
        let source = Cluster::connect(Side::Source, &config.source).await?;
        let destination = Cluster::connect(Side::Destination, &config.destination).await?;
        verify::verify(
            &config,
            &source,
            &destination,
            &request,
            &defining_fingerprint(&config),
            &cancel,
        )
        .await
    });
    match result {
        Ok(report) => {
            if args.json {
                out.out_line(&serde_json::to_string(&report).unwrap_or_default());
            } else {
                out.out(&report.human());
            }
            if report.passed() {
                exit::SUCCESS
            } else {
                exit::VERIFICATION_FAILED
            }
        }
        Err(VerifyError::Interrupted) => {
            out.err("verification interrupted; run it again to continue from its checkpoint\n");
            exit::INTERRUPTED
        }
        Err(e) => {
            out.error(&e.to_string());
            exit::ERROR
        }
    }
}
