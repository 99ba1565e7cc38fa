//! `mongoshift unlock ID`: clear the lock record of an `apply` that is gone (after a crash on
//! another host sharing the lockfile's storage).

use std::path::PathBuf;

use clap::Args;
use mongoshift::exit;
use mongoshift::state::lock;

use super::apply::lockfile_path;
use crate::cli::args::Cli;
use crate::cli::output::Output;

/// `unlock` arguments.
#[derive(Debug, Args)]
pub struct UnlockArgs {
    /// The lock id, as `status` and the refused `apply` show it.
    pub id: String,

    /// The lockfile (default: migration.lock next to the config file).
    #[arg(long, value_name = "PATH")]
    pub lockfile: Option<PathBuf>,
}

/// Runs `unlock`.
pub fn run(cli: &Cli, args: &UnlockArgs, out: &Output) -> u8 {
    let path = lockfile_path(cli, args.lockfile.as_ref());
    match lock::unlock(&path, &args.id) {
        Ok(holder) => {
            out.out_line(&format!("cleared the lock of {holder}"));
            exit::SUCCESS
        }
        Err(e) => {
            out.error(&e.to_string());
            exit::ERROR
        }
    }
}
