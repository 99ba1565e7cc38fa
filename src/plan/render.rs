//! Views of a plan: for people (checks, one line per action with its symbol, a unified diff of
//! the destination catalog, a summary line) and for machines (JSON with `format_version`).
//! Both render the same [`Plan`]; neither ever contains a credential.

use std::fmt::Write;

use anstyle::{AnsiColor, Style};
use similar::TextDiff;

use super::model::{
    Change, CheckStatus, IndexPhase, KeyOrigin, Plan, ShardShare, approx_bytes, approx_documents,
};
use super::planner::compact_json;

/// Renders the plan for a terminal. `styled` adds colours.
pub fn human(plan: &Plan, styled: bool) -> String {
    let paint = |style: Style, text: &str| -> String {
        if styled {
            format!("{style}{text}{style:#}")
        } else {
            text.to_owned()
        }
    };
    let red = Style::new().fg_color(Some(AnsiColor::Red.into()));
    let green = Style::new().fg_color(Some(AnsiColor::Green.into()));
    let yellow = Style::new().fg_color(Some(AnsiColor::Yellow.into()));
    let bold = Style::new().bold();

    let mut out = String::new();
    let _ = writeln!(
        out,
        "{}",
        paint(bold, &format!("Migration {:?}", plan.migration))
    );
    for (label, cluster) in [("source", &plan.source), ("destination", &plan.destination)] {
        match cluster {
            Some(c) => {
                let _ = writeln!(
                    out,
                    "  {label:<12} {}, MongoDB {}  {}",
                    c.topology, c.version, c.uri
                );
            }
            None => {
                let _ = writeln!(out, "  {label:<12} not inspected (see the checks)");
            }
        }
    }

    let _ = writeln!(out, "\n{}", paint(bold, "Checks"));
    let id_width = plan.checks.iter().map(|c| c.id.len()).max().unwrap_or(0);
    for check in &plan.checks {
        let (word, style) = match check.status {
            CheckStatus::Error => ("error", red),
            CheckStatus::Warning => ("warning", yellow),
            CheckStatus::Passed => ("ok", green),
        };
        let _ = writeln!(
            out,
            "  {}{} {:<id_width$}  {}",
            paint(style, word),
            " ".repeat(7 - word.len()),
            check.id,
            check.message
        );
        if let Some(hint) = &check.hint {
            let _ = writeln!(out, "  {:7} {:<id_width$}  fix: {hint}", "", "");
        }
    }

    let _ = writeln!(
        out,
        "\n{}",
        paint(bold, "Actions, in the order apply performs them")
    );
    if plan.actions.is_empty() {
        let _ = writeln!(out, "  (none)");
    }
    for action in &plan.actions {
        let symbol = action.change.symbol();
        let style = match symbol {
            '+' => green,
            '-' => red,
            _ => yellow,
        };
        let ns = &action.namespace;
        let text = match &action.change {
            Change::Drop { kind, documents } => {
                let count = approx_documents(*documents);
                format!(
                    "drop {} {ns} ({})",
                    kind_name(*kind),
                    count.trim_start_matches('~')
                )
            }
            Change::CreateCollection { source, options } => {
                let opts = if options.is_empty() {
                    String::new()
                } else {
                    format!(" {}", compact_json(options))
                };
                format!("create collection {ns}{opts}{}", from(source, ns))
            }
            Change::CreateView {
                source, view_on, ..
            } => {
                format!("create view {ns} on {view_on}{}", from(source, ns))
            }
            Change::ShardCollection {
                key,
                unique,
                origin,
                creates_index,
                simple_collation,
                presplit,
            } => {
                let mut notes = Vec::new();
                if *unique {
                    notes.push("unique".to_owned());
                }
                if *origin == KeyOrigin::Source {
                    notes.push("the source's key".to_owned());
                }
                if let Some(index) = creates_index {
                    notes.push(format!("creates index {index}"));
                }
                if *simple_collation {
                    notes.push("simple collation".to_owned());
                }
                if let Some(p) = presplit {
                    notes.push(format!(
                        "split into {} chunks at key values sampled from {}",
                        p.chunks, p.source
                    ));
                } else if key.values().any(|v| v.as_str() == Some("hashed")) {
                    notes.push("the server's initial chunks".to_owned());
                }
                let notes = if notes.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", notes.join("; "))
                };
                format!("shard collection {ns} on {}{notes}", compact_json(key))
            }
            Change::CreateIndex { index, phase } => {
                let opts = if index.options.is_empty() {
                    String::new()
                } else {
                    format!(" {}", compact_json(&index.options))
                };
                let when = match phase {
                    IndexPhase::BeforeCopy => "before copy",
                    IndexPhase::AfterCopy => "after copy",
                };
                format!(
                    "create index {ns} {} {}{opts} ({when})",
                    index.name,
                    compact_json(&index.key)
                )
            }
            Change::Copy {
                source,
                documents,
                bytes,
                source_shard_key,
                shards,
            } => {
                let mut text = format!(
                    "copy {source} → {ns} ({}, {})",
                    approx_documents(*documents),
                    approx_bytes(*bytes)
                );
                if let Some(line) = source_shards_line(source_shard_key.as_ref(), shards) {
                    text.push_str("\n      ");
                    text.push_str(&line);
                }
                text
            }
        };
        let _ = writeln!(out, "  {} {text}", paint(style, &symbol.to_string()));
    }

    if !plan.catalog_before.is_empty() || !plan.catalog_after.is_empty() {
        let _ = writeln!(out, "\n{}", paint(bold, "Destination catalog"));
        let diff = catalog_diff(plan);
        if diff.is_empty() {
            let _ = writeln!(out, "  (unchanged)");
        }
        for line in diff.lines() {
            let style = if line.starts_with('+') && !line.starts_with("+++") {
                Some(green)
            } else if line.starts_with('-') && !line.starts_with("---") {
                Some(red)
            } else {
                None
            };
            let _ = match style {
                Some(s) => writeln!(out, "{}", paint(s, line)),
                None => writeln!(out, "{line}"),
            };
        }
    }

    let _ = writeln!(out, "\n{}", paint(bold, &plan.summary.to_string()));
    if plan.summary.errors > 0 {
        let n = plan.summary.errors;
        let _ = writeln!(
            out,
            "{}",
            paint(
                red,
                &format!(
                    "{n} check{} failed: apply would refuse this plan",
                    if n == 1 { "" } else { "s" }
                )
            )
        );
    }
    out
}

/// `source sharded on {"c":"hashed"}: shard0 ~1.0k documents, 50.0 KiB; shard1 ...`, for a
/// collection of a sharded source.
fn source_shards_line(key: Option<&bson::Document>, shards: &[ShardShare]) -> Option<String> {
    if key.is_none() && shards.is_empty() {
        return None;
    }
    let head = match key {
        Some(k) => format!("source sharded on {}", compact_json(k)),
        None => "unsharded on the source".to_owned(),
    };
    let parts: Vec<String> = shards
        .iter()
        .map(|s| {
            format!(
                "{} {}, {}",
                s.shard,
                approx_documents(s.documents),
                approx_bytes(s.bytes)
            )
        })
        .collect();
    Some(if parts.is_empty() {
        head
    } else {
        format!("{head}: {}", parts.join("; "))
    })
}

fn kind_name(kind: crate::cluster::CollectionKind) -> &'static str {
    match kind {
        crate::cluster::CollectionKind::Collection => "collection",
        crate::cluster::CollectionKind::View => "view",
        crate::cluster::CollectionKind::Timeseries => "time-series collection",
    }
}

fn from(source: &crate::namespace::Namespace, ns: &crate::namespace::Namespace) -> String {
    if source == ns {
        String::new()
    } else {
        format!(" (from {source})")
    }
}

/// The unified diff of the destination catalog before and after apply (empty when equal).
pub fn catalog_diff(plan: &Plan) -> String {
    let before = join_lines(&plan.catalog_before);
    let after = join_lines(&plan.catalog_after);
    if before == after {
        return String::new();
    }
    TextDiff::from_lines(&before, &after)
        .unified_diff()
        .context_radius(2)
        .header("destination now", "destination after apply")
        .to_string()
}

fn join_lines(lines: &[String]) -> String {
    let mut s = String::new();
    for l in lines {
        s.push_str(l);
        s.push('\n');
    }
    s
}

/// The plan as pretty JSON (one document, `format_version` first).
pub fn json(plan: &Plan) -> String {
    serde_json::to_string_pretty(plan)
        .unwrap_or_else(|e| format!("{{\"error\": \"cannot serialize the plan: {e}\"}}"))
}
