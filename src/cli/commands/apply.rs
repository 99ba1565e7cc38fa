//! `mongoshift apply [PLANFILE]`: run the migration (resumes from the lockfile).

use std::path::PathBuf;

use clap::Args;
use mongoshift::config::HumanDuration;
use mongoshift::exit;
use mongoshift::plan::PlanFile;
use mongoshift::state::LockError;
use mongoshift::state::lockfile;
use mongoshift::sync::{self, ApplyError, ApplyOutcome, ApplyRequest, Progress};
use tokio_util::sync::CancellationToken;

use super::plan::load_config;
use crate::cli::args::Cli;
use crate::cli::output::Output;
use crate::cli::progress::{self, ProgressMode};

/// `apply` arguments.
#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// A plan saved with `mongoshift plan --out FILE`, applied exactly; refused (exit 5) when the
    /// configuration or either cluster changed since.
    pub plan_file: Option<PathBuf>,

    /// The lockfile (default: migration.lock next to the config file).
    #[arg(long, value_name = "PATH")]
    pub lockfile: Option<PathBuf>,

    /// How long to wait for another `apply` to release the lock, e.g. "30s".
    #[arg(long, value_name = "DURATION", default_value = "0s")]
    pub lock_timeout: HumanDuration,

    /// Approve the cutover (for `approval = "flag"`); given before the migration is ready, the
    /// approval is remembered and acted on once it is.
    #[arg(long)]
    pub approve_cutover: bool,

    /// Print progress and the result as JSON, one event per line, on stdout.
    #[arg(long)]
    pub json: bool,
}

/// The lockfile path for these arguments.
pub fn lockfile_path(cli: &Cli, explicit: Option<&PathBuf>) -> PathBuf {
    explicit
        .cloned()
        .unwrap_or_else(|| lockfile::default_path(&cli.config))
}

/// Runs `apply`.
pub fn run(cli: &Cli, args: &ApplyArgs, out: &Output) -> u8 {
    let Some(config) = load_config(cli, out) else {
        return exit::ERROR;
    };
    let plan_file = match &args.plan_file {
        Some(path) => match PlanFile::load(path) {
            Ok(f) => Some(f),
            Err(e) => {
                out.error(&e.to_string());
                return exit::ERROR;
            }
        },
        None => None,
    };
    let runtime = match crate::cli::app::runtime() {
        Ok(rt) => rt,
        Err(e) => {
            out.error(&format!("cannot start the async runtime: {e}"));
            return exit::ERROR;
        }
    };
    let request = ApplyRequest {
        lockfile: lockfile_path(cli, args.lockfile.as_ref()),
        plan_file,
        lock_timeout: args.lock_timeout.get(),
        approve_cutover: args.approve_cutover,
    };
    let mode = ProgressMode::choose(args.json);
    let result = runtime.block_on(async {
        let cancel = CancellationToken::new();
        tokio::spawn(crate::cli::signals::handle(cancel.clone(), *out));
        let (progress_tx, progress_rx) = tokio::sync::watch::channel(Progress::empty(&config.name));
        let renderer = tokio::spawn(progress::render(mode, progress_rx));
        let result = sync::apply(&config, request, progress_tx, cancel).await;
        let _ = renderer.await;
        result
    });
    report(result, args.json, out)
}

fn report(result: Result<ApplyOutcome, ApplyError>, json: bool, out: &Output) -> u8 {
    use mongoshift::sync::report::MigrationReport;
    let (code, status, message, report): (u8, &str, String, Option<&MigrationReport>) = match &result {
        Ok(ApplyOutcome::Committed(r)) => (
            exit::SUCCESS,
            "committed",
            "the migration is committed: point the applications at the destination".to_owned(),
            Some(r),
        ),
        Ok(ApplyOutcome::AlreadyCommitted(r)) => (
            exit::SUCCESS,
            "committed",
            "this migration is already committed; nothing to do".to_owned(),
            Some(r),
        ),
        Ok(ApplyOutcome::Interrupted(p)) => (
            exit::INTERRUPTED,
            "interrupted",
            format!(
                "interrupted in phase {}: state saved; run `mongoshift apply` again to resume",
                p.phase
            ),
            None,
        ),
        Ok(ApplyOutcome::Aborted(_)) => (
            exit::ERROR,
            "aborted",
            "aborted by `mongoshift abort`: syncing stopped, the copied data is kept; `mongoshift destroy` removes it".to_owned(),
            None,
        ),
        Ok(ApplyOutcome::Expired(p)) => (
            exit::WINDOW_EXPIRED,
            "expired",
            format!(
                "the cutover window ended{} without a cutover, and syncing stopped (on_window_expiry = \"stop\"); `mongoshift extend DURATION` then `apply` resumes",
                p.deadline.as_deref().map(|d| format!(" at {d}")).unwrap_or_default()
            ),
            None,
        ),
        Ok(ApplyOutcome::VerificationFailed(r)) => (
            exit::VERIFICATION_FAILED,
            "verification_failed",
            "the cutover's verification found differences: nothing was committed, and source writes are unblocked; fix the cause, then approve the cutover again".to_owned(),
            Some(r),
        ),
        Err(e) => (exit_code(e), "failed", e.to_string(), None),
    };
    if json {
        let mut event = serde_json::json!({ "event": "result", "status": status, "exit_code": code, "message": message });
        if let Some(r) = report {
            event["report"] = serde_json::to_value(r).unwrap_or_default();
        }
        if let Err(ApplyError::PlanRefused(plan)) = &result {
            event["checks"] = serde_json::to_value(&plan.checks).unwrap_or_default();
        }
        out.out_line(&event.to_string());
        return code;
    }
    if let Err(ApplyError::PlanRefused(plan)) = &result {
        out.err(&mongoshift::plan::render::human(plan, out.color()));
    }
    if let Some(r) = report {
        out.out(&r.human());
        if let Some(v) = &r.verification
            && !v.passed()
        {
            out.out(&v.human());
        }
    }
    match code {
        exit::SUCCESS => out.out_line(&message),
        exit::INTERRUPTED => out.err(&format!("{message}\n")),
        _ => {
            out.error(&message);
            if let Err(ApplyError::Lock(LockError::Held {
                other_host: true,
                holder,
                ..
            })) = &result
                && let Some(h) = holder.as_ref()
            {
                out.err(&format!(
                    "hint: if that process is gone, clear its lock with `mongoshift unlock {}`\n",
                    h.id
                ));
            }
            if let Err(
                ApplyError::Cluster(_)
                | ApplyError::Stream(_)
                | ApplyError::Copy(_)
                | ApplyError::Changes(_)
                | ApplyError::Verify(_)
                | ApplyError::EarlierRun(_),
            ) = &result
            {
                out.err("hint: the migration's state is saved; once the cause is fixed, `mongoshift apply` resumes where it stopped\n");
            }
        }
    }
    code
}

fn exit_code(e: &ApplyError) -> u8 {
    match e {
        ApplyError::Lock(LockError::Held { .. }) => exit::LOCKED,
        ApplyError::StalePlan(_) | ApplyError::PlanForStartedMigration { .. } => exit::STALE_PLAN,
        _ => exit::ERROR,
    }
}
