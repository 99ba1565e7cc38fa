//! `mongoshift schema`: the JSON Schema of migration.toml on stdout, or with `--markdown` the
//! configuration reference generated from it.

use clap::Args;
use mongoshift::config::{reference_markdown, schema_json};
use mongoshift::exit;

use crate::cli::output::Output;

/// `schema` arguments.
#[derive(Debug, Args)]
pub struct SchemaArgs {
    /// Print the reference of every key in Markdown (as committed in docs/configuration.md).
    #[arg(long)]
    pub markdown: bool,
}

/// Prints the schema or the reference.
pub fn run(args: &SchemaArgs, out: &Output) -> u8 {
    if args.markdown {
        out.out(&reference_markdown());
    } else {
        out.out(&schema_json());
    }
    exit::SUCCESS
}
