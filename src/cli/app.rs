//! Entry point: parse, set up output and logging, run one command, map its outcome to an exit
//! code.

use std::process::ExitCode;

use clap::Parser;

use super::args::{Cli, Command};
use super::commands;
use super::logging;
use super::output::Output;

/// Runs the command line and returns the process exit code.
pub fn run() -> ExitCode {
    let cli = Cli::parse();
    let out = Output::new(cli.no_color);
    logging::init(cli.log_format, cli.verbose, cli.quiet, out.color());
    let code = match &cli.command {
        Command::Init(args) => commands::init::run(&cli, args, &out),
        Command::Validate(args) => commands::validate::run(&cli, args, &out),
        Command::Plan(args) => commands::plan::run(&cli, args, &out),
        Command::Apply(args) => commands::apply::run(&cli, args, &out),
        Command::Status(args) => commands::status::run(&cli, args, &out),
        Command::Cutover(args) => commands::control::cutover(&cli, args, &out),
        Command::Extend(args) => commands::control::extend(&cli, args, &out),
        Command::Abort(args) => commands::control::abort(&cli, args, &out),
        Command::Destroy(args) => commands::control::destroy(&cli, args, &out),
        Command::Unlock(args) => commands::unlock::run(&cli, args, &out),
        Command::Verify(args) => commands::verify::run(&cli, args, &out),
        Command::Schema(args) => commands::schema::run(args, &out),
        Command::Completions(args) => commands::docs::completions(args, &out),
        Command::Man(args) => commands::docs::man(args, &out),
    };
    ExitCode::from(code)
}

/// The runtime for commands that talk to clusters.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("mongoshift")
        .build()
}
