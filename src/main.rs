//! The `mongoshift` command-line tool.
//!
//! All behaviour lives in the `mongoshift` library; the `cli` module parses arguments, renders
//! results and maps outcomes to the documented exit codes.

mod cli;

fn main() -> std::process::ExitCode {
    cli::run()
}
