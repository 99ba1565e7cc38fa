//! `mongoshift schema`: the JSON Schema of migration.toml on stdout.

use mongoshift::config::schema_json;
use mongoshift::exit;

use crate::cli::output::Output;

/// Prints the schema.
pub fn run(out: &Output) -> u8 {
    out.out(&schema_json());
    exit::SUCCESS
}
