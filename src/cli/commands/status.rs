//! `mongoshift status`: a migration's phase and progress, read from its lockfile (no cluster is
//! contacted, and a running `apply` is not disturbed).

use std::fmt::Write;
use std::path::PathBuf;

use clap::Args;
use mongoshift::exit;
use mongoshift::plan::model::{approx_bytes, approx_count};
use mongoshift::state::{lock, lockfile};
use mongoshift::sync::Progress;
use mongoshift::sync::progress::now_secs;

use super::apply::lockfile_path;
use crate::cli::args::Cli;
use crate::cli::output::Output;

/// The version of `status --json`.
const STATUS_FORMAT_VERSION: &str = "1";

/// `status` arguments.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The lockfile (default: migration.lock next to the config file).
    #[arg(long, value_name = "PATH")]
    pub lockfile: Option<PathBuf>,

    /// Print the status as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Runs `status`.
pub fn run(cli: &Cli, args: &StatusArgs, out: &Output) -> u8 {
    let path = lockfile_path(cli, args.lockfile.as_ref());
    let state = match lockfile::load(&path) {
        Ok(Some(s)) => s,
        Ok(None) => {
            out.error(&format!(
                "no migration has started here: {} does not exist (run `mongoshift apply`)",
                path.display()
            ));
            return exit::ERROR;
        }
        Err(e) => {
            out.error(&e.to_string());
            return exit::ERROR;
        }
    };
    let holder = lock::read_holder(&path);
    let activity = if holder.is_some() {
        "running"
    } else {
        "not running"
    };
    let progress = Progress::from_state(&state, activity, now_secs());
    if args.json {
        let json = serde_json::json!({
            "format_version": STATUS_FORMAT_VERSION,
            "lockfile": path.display().to_string(),
            "lineage": state.lineage,
            "serial": state.serial,
            "holder": holder,
            "source": state.source,
            "destination": state.destination,
            "progress": progress,
        });
        out.out_line(&json.to_string());
        return exit::SUCCESS;
    }
    let mut text = format!(
        "Migration {:?} (lineage {}, serial {})\n",
        state.migration, state.lineage, state.serial
    );
    let line = |label: &str, value: String| format!("  {label:<12} {value}\n");
    text.push_str(&line("phase", state.phase.to_string()));
    if let Some(started) = &state.timestamps.started {
        text.push_str(&line("started", started.clone()));
    }
    text.push_str(&line(
        "source",
        format!(
            "{}, MongoDB {}  {}",
            state.source.topology, state.source.version, state.source.uri
        ),
    ));
    text.push_str(&line(
        "destination",
        format!(
            "{}, MongoDB {}  {}",
            state.destination.topology, state.destination.version, state.destination.uri
        ),
    ));
    text.push_str(&line(
        "held by",
        holder.map_or_else(
            || "nobody (no apply is running)".to_owned(),
            |h| h.to_string(),
        ),
    ));
    text.push_str(&line(
        "copied",
        format!(
            "{} of ~{} documents, {} of ~{}",
            approx_count(progress.documents),
            approx_count(progress.documents_estimate),
            approx_bytes(progress.bytes),
            approx_bytes(progress.bytes_estimate)
        ),
    ));
    text.push_str(&line(
        "changes",
        format!(
            "{} events spooled since T0{}",
            approx_count(progress.events_spooled),
            progress
                .reader_lag_secs
                .map(|s| format!("; newest seen {s}s ago"))
                .unwrap_or_default()
        ),
    ));
    text.push_str("Namespaces\n");
    for n in &progress.namespaces {
        let arrow = if n.source == n.destination {
            n.destination.clone()
        } else {
            format!("{} → {}", n.source, n.destination)
        };
        let status = serde_json::to_value(n.status)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        let _ = writeln!(
            text,
            "  {arrow:<40} {status:<14} {}/~{} docs, {}/{} partitions{}",
            approx_count(n.documents),
            approx_count(n.documents_estimate),
            n.partitions_done,
            n.partitions,
            if n.duplicates > 0 {
                format!(", {} already present after resume", n.duplicates)
            } else {
                String::new()
            }
        );
        let mut sharding = Vec::new();
        if let Some(key) = &n.source_shard_key {
            sharding.push(format!("source sharded on {key}"));
        }
        if let Some(key) = &n.shard_key {
            sharding.push(format!("destination sharded on {key}"));
        }
        if !sharding.is_empty() {
            let _ = writeln!(text, "  {:<40} {}", "", sharding.join("; "));
        }
    }
    if !progress.shards.is_empty() {
        text.push_str("Source shards (copy)\n");
        for s in &progress.shards {
            let _ = writeln!(
                text,
                "  {:<40} {}/~{} docs, {} of ~{}, {}/{} partitions",
                s.shard,
                approx_count(s.documents),
                approx_count(s.documents_estimate),
                approx_bytes(s.bytes),
                approx_bytes(s.bytes_estimate),
                s.partitions_done,
                s.partitions
            );
        }
    }
    out.out(&text);
    exit::SUCCESS
}
