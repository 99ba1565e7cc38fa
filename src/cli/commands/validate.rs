//! `mongoshift validate`: offline check of migration.toml; exit 0 when valid, 1 otherwise.

use mongoshift::config::{self, ConfigError, DIAGNOSTICS_FORMAT_VERSION};
use mongoshift::exit;

use crate::cli::args::{Cli, ValidateArgs};
use crate::cli::output::Output;

/// Checks the file and renders every problem.
pub fn run(cli: &Cli, args: &ValidateArgs, out: &Output) -> u8 {
    let path = &cli.config;
    match config::load(path) {
        Ok(loaded) => {
            if args.json {
                out.out_line(&loaded.report.to_json().to_string());
            } else {
                out.err(&loaded.report.render(out.color()));
                out.out_line(&format!("{} is valid", path.display()));
            }
            exit::SUCCESS
        }
        Err(ConfigError::Invalid(report)) => {
            if args.json {
                out.out_line(&report.to_json().to_string());
            } else {
                out.err(&report.render(out.color()));
                let n = report.error_count();
                out.error(&format!(
                    "{} is not valid: {n} error{}",
                    path.display(),
                    if n == 1 { "" } else { "s" }
                ));
            }
            exit::ERROR
        }
        Err(e @ ConfigError::Read { .. }) => {
            if args.json {
                let json = serde_json::json!({
                    "format_version": DIAGNOSTICS_FORMAT_VERSION,
                    "file": path.display().to_string(),
                    "valid": false,
                    "error": e.to_string(),
                });
                out.out_line(&json.to_string());
            } else {
                out.error(&e.to_string());
                if !path.exists() {
                    out.err(
                        "hint: create one with `mongoshift init`, or pass another with -c PATH\n",
                    );
                }
            }
            exit::ERROR
        }
    }
}
