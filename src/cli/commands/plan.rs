//! `mongoshift plan`: connect to both clusters, run the preflight checks and show what apply
//! will do. `--out FILE` saves the plan for `apply FILE`.

use std::path::PathBuf;

use clap::Args;
use mongoshift::config::{self, ConfigError};
use mongoshift::exit;
use mongoshift::plan::{self, PlanFile, render};

use crate::cli::args::Cli;
use crate::cli::output::Output;

/// `plan` arguments.
#[derive(Debug, Args)]
pub struct PlanArgs {
    /// Save the plan to this file, for `mongoshift apply FILE`.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,

    /// Print the plan as JSON on stdout.
    #[arg(long)]
    pub json: bool,

    /// Exit 0 when there is nothing to do, 2 when there are changes, 1 on errors.
    #[arg(long)]
    pub detailed_exitcode: bool,
}

/// Loads the config, prints its problems, and returns it when it is usable.
pub fn load_config(cli: &Cli, out: &Output) -> Option<config::Config> {
    match config::load(&cli.config) {
        Ok(loaded) => {
            if !loaded.report.diagnostics.is_empty() {
                out.err(&loaded.report.render(out.color()));
            }
            Some(loaded.config)
        }
        Err(ConfigError::Invalid(report)) => {
            out.err(&report.render(out.color()));
            out.error(&format!(
                "{} is not valid; run `mongoshift validate` after fixing it",
                cli.config.display()
            ));
            None
        }
        Err(e) => {
            out.error(&e.to_string());
            None
        }
    }
}

/// Runs `plan`.
pub fn run(cli: &Cli, args: &PlanArgs, out: &Output) -> u8 {
    let Some(config) = load_config(cli, out) else {
        return exit::ERROR;
    };
    let runtime = match crate::cli::app::runtime() {
        Ok(rt) => rt,
        Err(e) => {
            out.error(&format!("cannot start the async runtime: {e}"));
            return exit::ERROR;
        }
    };
    let refreshed = runtime.block_on(plan::refresh(&config, &Default::default()));
    let plan = &refreshed.plan;
    if args.json {
        out.out_line(&render::json(plan));
    } else {
        out.out(&render::human(plan, out.color()));
    }
    if !plan.is_valid() {
        return exit::ERROR;
    }
    if let Some(path) = &args.out {
        let Some(fingerprints) = refreshed.fingerprints(&config) else {
            out.error("the plan cannot be saved: a cluster could not be inspected");
            return exit::ERROR;
        };
        if let Err(e) = PlanFile::new(plan.clone(), fingerprints).save(path) {
            out.error(&e.to_string());
            return exit::ERROR;
        }
        if !args.json {
            out.out_line(&format!(
                "\nSaved the plan to {}. Apply exactly this plan with: mongoshift apply {}",
                path.display(),
                path.display()
            ));
        }
    }
    match (args.detailed_exitcode, plan.has_changes()) {
        (true, true) => exit::CHANGES_PENDING,
        _ => exit::SUCCESS,
    }
}
