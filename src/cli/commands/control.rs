//! `cutover`, `extend`, `abort` and `destroy`: acting on a migration from outside `apply`.

use std::fmt::Write as _;
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

use clap::Args;
use mongoshift::config::HumanDuration;
use mongoshift::config::model::ApprovalPolicy;
use mongoshift::control::{self, AbortOutcome, ControlError};
use mongoshift::exit;
use mongoshift::state::LockError;

use super::apply::lockfile_path;
use super::plan::load_config;
use crate::cli::args::Cli;
use crate::cli::output::Output;

/// `extend` arguments.
#[derive(Debug, Args)]
pub struct ExtendArgs {
    /// How much longer the cutover window stays open, e.g. "24h".
    pub by: HumanDuration,
    /// The lockfile (default: migration.lock next to the config file).
    #[arg(long, value_name = "PATH")]
    pub lockfile: Option<PathBuf>,
}

/// `abort` and `cutover` arguments.
#[derive(Debug, Args)]
pub struct LockfileArgs {
    /// The lockfile (default: migration.lock next to the config file).
    #[arg(long, value_name = "PATH")]
    pub lockfile: Option<PathBuf>,
}

/// `destroy` arguments.
#[derive(Debug, Args)]
pub struct DestroyArgs {
    /// Do not ask for confirmation (for automation).
    #[arg(long)]
    pub yes: bool,
    /// The lockfile (default: migration.lock next to the config file).
    #[arg(long, value_name = "PATH")]
    pub lockfile: Option<PathBuf>,
}

fn fail(out: &Output, e: &ControlError) -> u8 {
    out.error(&e.to_string());
    match e {
        ControlError::Lock(LockError::Held { .. }) => exit::LOCKED,
        _ => exit::ERROR,
    }
}

fn runtime(out: &Output) -> Option<tokio::runtime::Runtime> {
    match crate::cli::app::runtime() {
        Ok(rt) => Some(rt),
        Err(e) => {
            out.error(&format!("cannot start the async runtime: {e}"));
            None
        }
    }
}

/// `mongoshift cutover`: approves the cutover by writing the approval file.
pub fn cutover(cli: &Cli, args: &LockfileArgs, out: &Output) -> u8 {
    let Some(config) = load_config(cli, out) else {
        return exit::ERROR;
    };
    match config.cutover.approval {
        ApprovalPolicy::Flag => {
            out.error("this migration is approved with `mongoshift apply --approve-cutover` (cutover.approval = \"flag\")");
            return exit::ERROR;
        }
        ApprovalPolicy::Auto => {
            out.out_line("cutover.approval = \"auto\": the cutover starts by itself once the migration is ready");
            return exit::SUCCESS;
        }
        ApprovalPolicy::File => {}
    }
    match control::approve(&config) {
        Ok(record) => {
            out.out_line(&format!(
                "cutover approved by {} (wrote {})",
                record.approved_by,
                config.cutover.approval_file.display()
            ));
            let lockfile = lockfile_path(cli, args.lockfile.as_ref());
            if control::apply_running(&lockfile) {
                out.out_line("the running apply acts on it once the destination lags by less than cutover.max_lag");
            } else {
                out.out_line("no apply is running: the next `mongoshift apply` acts on it once the migration is ready");
            }
            exit::SUCCESS
        }
        Err(e) => fail(out, &e),
    }
}

/// `mongoshift extend DURATION`.
pub fn extend(cli: &Cli, args: &ExtendArgs, out: &Output) -> u8 {
    let lockfile = lockfile_path(cli, args.lockfile.as_ref());
    match control::extend(&lockfile, args.by.get()) {
        Ok(deadline) => {
            out.out_line(&format!("the cutover window now ends at {deadline}"));
            exit::SUCCESS
        }
        Err(e) => fail(out, &e),
    }
}

/// `mongoshift abort`.
pub fn abort(cli: &Cli, args: &LockfileArgs, out: &Output) -> u8 {
    let Some(config) = load_config(cli, out) else {
        return exit::ERROR;
    };
    let Some(rt) = runtime(out) else {
        return exit::ERROR;
    };
    let lockfile = lockfile_path(cli, args.lockfile.as_ref());
    match rt.block_on(control::abort(&config, &lockfile)) {
        Ok(AbortOutcome::RunningApplyStopped) => {
            out.out_line("aborted: the running apply stopped syncing and released any write block; the copied data is kept");
            exit::SUCCESS
        }
        Ok(AbortOutcome::Aborted {
            released_write_block,
        }) => {
            let block = if released_write_block {
                " and the source write block was released"
            } else {
                ""
            };
            out.out_line(&format!(
                "aborted{block}; the copied data is kept (`mongoshift destroy` removes it)"
            ));
            exit::SUCCESS
        }
        Err(e) => fail(out, &e),
    }
}

/// `mongoshift destroy`.
pub fn destroy(cli: &Cli, args: &DestroyArgs, out: &Output) -> u8 {
    let Some(config) = load_config(cli, out) else {
        return exit::ERROR;
    };
    let lockfile = lockfile_path(cli, args.lockfile.as_ref());
    let plan = match control::destroy_plan(&lockfile) {
        Ok(p) => p,
        Err(e) => return fail(out, &e),
    };
    let mut text = format!(
        "destroy drops {} namespace(s) this migration created on the destination:\n",
        plan.namespaces.len()
    );
    for ns in &plan.namespaces {
        let _ = writeln!(text, "  - {ns}");
    }
    out.out(&text);
    if !args.yes {
        if !std::io::stdin().is_terminal() {
            out.error("destroy needs confirmation: run it in a terminal, or pass --yes");
            return exit::ERROR;
        }
        out.out("Type 'yes' to drop them: ");
        let _ = std::io::stdout().flush();
        let mut answer = String::new();
        if std::io::stdin().lock().read_line(&mut answer).is_err() || answer.trim() != "yes" {
            out.out_line("nothing was dropped");
            return exit::ERROR;
        }
    }
    let Some(rt) = runtime(out) else {
        return exit::ERROR;
    };
    match rt.block_on(control::destroy(&config, &lockfile)) {
        Ok(done) => {
            out.out_line(&format!(
                "dropped {} namespace(s); the lockfile is kept as {}; the next apply starts afresh",
                done.namespaces.len(),
                done.archived_lockfile.display()
            ));
            exit::SUCCESS
        }
        Err(e) => fail(out, &e),
    }
}
