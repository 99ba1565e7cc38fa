//! The verification report: per namespace, counts, document differences (totals and a bounded
//! list of `_id`s) and metadata differences; rendered for people or as JSON.

use std::fmt::Write;

use serde::{Deserialize, Serialize};

use crate::cluster::CollectionKind;
use crate::plan::model::plural;

/// The version of the report's JSON.
pub const VERIFY_FORMAT_VERSION: &str = "1";

/// How many `_id`s of each kind a report lists per namespace.
pub const MAX_EXAMPLES: usize = 10;

/// What was verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VerifyMode {
    /// Counts, every document's bytes, indexes and options.
    Full,
    /// Counts (and indexes and options).
    Counts,
}

/// Differences of one kind: how many, and the first few `_id`s.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DifferenceList {
    /// How many.
    pub count: u64,
    /// Up to [`MAX_EXAMPLES`] `_id`s (relaxed Extended JSON).
    pub ids: Vec<String>,
}

impl DifferenceList {
    /// Adds differences, keeping at most [`MAX_EXAMPLES`] ids.
    pub fn add(&mut self, ids: impl IntoIterator<Item = String>) {
        for id in ids {
            self.count += 1;
            if self.ids.len() < MAX_EXAMPLES {
                self.ids.push(id);
            }
        }
    }
}

/// One namespace's result.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamespaceReport {
    /// Source namespace.
    pub source: String,
    /// Destination namespace.
    pub destination: String,
    /// What the source namespace is (views and time-series collections are compared by
    /// definition only).
    #[serde(default)]
    pub kind: CollectionKind,
    /// Documents on the source (exact count when verified).
    pub source_count: u64,
    /// Documents on the destination.
    pub destination_count: u64,
    /// Documents compared by content.
    pub documents_compared: u64,
    /// On the source only.
    pub missing: DifferenceList,
    /// On the destination only.
    pub extra: DifferenceList,
    /// With different content.
    pub different: DifferenceList,
    /// Index differences.
    pub indexes: Vec<String>,
    /// Collection-option differences.
    pub options: Vec<String>,
    /// Differences seen at first that went away when rechecked (changes in flight).
    pub resolved_on_recheck: u64,
}

impl NamespaceReport {
    /// Differences that remain.
    pub fn differences(&self) -> u64 {
        self.missing.count
            + self.extra.count
            + self.different.count
            + self.indexes.len() as u64
            + self.options.len() as u64
            + u64::from(self.source_count != self.destination_count && self.documents_compared == 0)
    }
}

/// The whole report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyReport {
    /// [`VERIFY_FORMAT_VERSION`].
    pub format_version: String,
    /// What was verified.
    pub mode: VerifyMode,
    /// Per namespace, in destination order.
    pub namespaces: Vec<NamespaceReport>,
}

impl VerifyReport {
    /// Differences in all namespaces.
    pub fn differences(&self) -> u64 {
        self.namespaces
            .iter()
            .map(NamespaceReport::differences)
            .sum()
    }

    /// True when source and destination agree.
    pub fn passed(&self) -> bool {
        self.differences() == 0
    }

    /// A summary for people: one line per namespace with differences, then totals.
    pub fn human(&self) -> String {
        let mut out = String::new();
        let compared: u64 = self.namespaces.iter().map(|n| n.documents_compared).sum();
        for n in &self.namespaces {
            let name = if n.source == n.destination {
                n.destination.clone()
            } else {
                format!("{} → {}", n.source, n.destination)
            };
            if n.differences() == 0 {
                match n.kind {
                    CollectionKind::Collection => {
                        let _ = writeln!(
                            out,
                            "  ok        {name}: {}",
                            plural(n.source_count, "document")
                        );
                    }
                    CollectionKind::View => {
                        let _ = writeln!(out, "  ok        {name}: view definition");
                    }
                    CollectionKind::Timeseries => {
                        let _ = writeln!(out, "  ok        {name}: time-series options");
                    }
                }
                continue;
            }
            let _ = writeln!(
                out,
                "  differs   {name}: {} on the source, {} on the destination",
                plural(n.source_count, "document"),
                n.destination_count
            );
            for (label, list) in [
                ("missing", &n.missing),
                ("extra", &n.extra),
                ("different", &n.different),
            ] {
                if list.count > 0 {
                    let more = list.count.saturating_sub(list.ids.len() as u64);
                    let tail = if more > 0 {
                        format!(" and {more} more")
                    } else {
                        String::new()
                    };
                    let _ = writeln!(
                        out,
                        "            {label}: {} _id {}{tail}",
                        list.count,
                        list.ids.join(", ")
                    );
                }
            }
            for d in n.indexes.iter().chain(&n.options) {
                let _ = writeln!(out, "            {d}");
            }
        }
        let _ = writeln!(
            out,
            "Verification ({}): {}, {} compared, {}{}",
            match self.mode {
                VerifyMode::Full => "full",
                VerifyMode::Counts => "counts",
            },
            plural(self.namespaces.len() as u64, "namespace"),
            plural(compared, "document"),
            plural(self.differences(), "difference"),
            if self.passed() {
                ": source and destination agree"
            } else {
                ""
            }
        );
        out
    }
}
