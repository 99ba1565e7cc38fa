//! `mongoshift completions SHELL` and `mongoshift man`: shell completions and man pages
//! generated from the command-line definition, so they never drift from it.

use std::path::PathBuf;

use clap::{Args, CommandFactory};
use clap_complete::Shell;
use mongoshift::exit;

use crate::cli::args::Cli;
use crate::cli::output::Output;

/// `completions` arguments.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell.
    #[arg(value_enum)]
    pub shell: Shell,
}

/// `man` arguments.
#[derive(Debug, Args)]
pub struct ManArgs {
    /// Write `mongoshift.1` and one `mongoshift-COMMAND.1` per command into this directory
    /// instead of printing the main page.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

/// Prints the completion script.
pub fn completions(args: &CompletionsArgs, out: &Output) -> u8 {
    let mut command = Cli::command();
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut command, "mongoshift", &mut script);
    out.out(&String::from_utf8_lossy(&script));
    exit::SUCCESS
}

/// Prints the main man page or writes all of them.
pub fn man(args: &ManArgs, out: &Output) -> u8 {
    let command = Cli::command();
    match &args.dir {
        None => {
            let mut page = Vec::new();
            if let Err(e) = clap_mangen::Man::new(command).render(&mut page) {
                out.error(&format!("cannot render the man page: {e}"));
                return exit::ERROR;
            }
            out.out(&String::from_utf8_lossy(&page));
            exit::SUCCESS
        }
        Some(dir) => match std::fs::create_dir_all(dir)
            .and_then(|()| clap_mangen::generate_to(command, dir))
        {
            Ok(()) => {
                out.out_line(&format!("wrote the man pages to {}", dir.display()));
                exit::SUCCESS
            }
            Err(e) => {
                out.error(&format!(
                    "cannot write the man pages to {}: {e}",
                    dir.display()
                ));
                exit::ERROR
            }
        },
    }
}
