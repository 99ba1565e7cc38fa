//! Command-line arguments (clap).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Declarative live migration of MongoDB clusters.
///
/// Describe the migration in migration.toml, check it with `validate`, review it with `plan`,
/// run it with `apply`.
#[derive(Debug, Parser)]
#[command(name = "mongoshift", version, propagate_version = true)]
pub struct Cli {
    /// The migration file.
    #[arg(
        short = 'c',
        long = "config",
        global = true,
        default_value = "migration.toml",
        value_name = "PATH"
    )]
    pub config: PathBuf,

    /// More log output (-v debug, -vv trace). `MONGOSHIFT_LOG` (a tracing filter) overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count, conflicts_with = "quiet")]
    pub verbose: u8,

    /// Less log output (-q errors only, -qq none).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub quiet: u8,

    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// No colours (also when the `NO_COLOR` environment variable is set).
    #[arg(long, global = true)]
    pub no_color: bool,

    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Log formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write a commented migration.toml to start from.
    Init(InitArgs),
    /// Check migration.toml offline (syntax, keys, values, secrets); no cluster is contacted.
    Validate(ValidateArgs),
    /// Connect to both clusters, run the preflight checks and show what apply will do.
    Plan(crate::cli::commands::plan::PlanArgs),
    /// Run the migration: create namespaces, copy, apply changes, wait for the cutover
    /// approval, drain, verify, commit. Resumes from the lockfile when run again.
    Apply(crate::cli::commands::apply::ApplyArgs),
    /// Approve the cutover: writes the approval file a running (or the next) apply acts on.
    Cutover(crate::cli::commands::control::LockfileArgs),
    /// Keep the cutover window open longer.
    Extend(crate::cli::commands::control::ExtendArgs),
    /// Stop syncing and release any source write block; the copied data stays.
    Abort(crate::cli::commands::control::LockfileArgs),
    /// Drop on the destination exactly what this migration created (asks; --yes for automation).
    Destroy(crate::cli::commands::control::DestroyArgs),
    /// Show a migration's phase and progress from its lockfile.
    Status(crate::cli::commands::status::StatusArgs),
    /// Compare source and destination now: counts, documents, indexes, options (exit 3 when
    /// they differ).
    Verify(crate::cli::commands::verify::VerifyArgs),
    /// Clear the lock of an apply that is gone (shown by `status` and refused `apply`).
    Unlock(crate::cli::commands::unlock::UnlockArgs),
    /// Print the JSON Schema of migration.toml (for editors and CI), or with --markdown its
    /// reference.
    Schema(crate::cli::commands::schema::SchemaArgs),
    /// Print a shell completion script: `mongoshift completions bash > /etc/bash_completion.d/mongoshift`.
    Completions(crate::cli::commands::docs::CompletionsArgs),
    /// Print the man page, or write one page per command into a directory.
    Man(crate::cli::commands::docs::ManArgs),
}

/// `init` arguments.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// The source cluster's connection string (a password in it is replaced by an
    /// environment-variable substitution, never written).
    #[arg(long, value_name = "URI")]
    pub source: Option<String>,

    /// The destination cluster's connection string (passwords as for --source).
    #[arg(long, value_name = "URI")]
    pub destination: Option<String>,

    /// Overwrite an existing file.
    #[arg(long)]
    pub force: bool,
}

/// `validate` arguments.
#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Print the result as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}
