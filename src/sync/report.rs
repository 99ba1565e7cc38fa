//! The final report of a committed migration: printed, in `--json`, and saved as
//! `migration-report.json` next to the lockfile.

use std::fmt::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::plan::model::{approx_bytes, approx_count, plural};
use crate::state::{Approval, ChangeCounts, ClusterIdentity, CollectionKindCount, MigrationState};
use crate::verify::VerifyReport;

/// The report's format version.
pub const REPORT_FORMAT_VERSION: &str = "1";

/// The report file's name, next to the lockfile.
pub const REPORT_FILE: &str = "migration-report.json";

/// One namespace in the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamespaceSummary {
    /// Source name.
    pub source: String,
    /// Destination name.
    pub destination: String,
    /// Documents copied by the initial copy.
    pub documents_copied: u64,
    /// Documents on the source at verification (when counted).
    pub source_count: Option<u64>,
    /// Documents on the destination at verification (when counted).
    pub destination_count: Option<u64>,
}

/// The final report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MigrationReport {
    /// [`REPORT_FORMAT_VERSION`].
    pub format_version: String,
    /// The migration's name.
    pub migration: String,
    /// Its lineage.
    pub lineage: String,
    /// `committed`.
    pub outcome: String,
    /// The source.
    pub source: ClusterIdentity,
    /// The destination.
    pub destination: ClusterIdentity,
    /// When the first apply started.
    pub started_at: Option<String>,
    /// When the destination first caught up.
    pub ready_at: Option<String>,
    /// Who approved the cutover.
    pub approval: Option<Approval>,
    /// When writes stopped.
    pub writes_stopped_at: Option<String>,
    /// When the migration committed.
    pub committed_at: Option<String>,
    /// Application downtime: writes stopped → committed, in seconds.
    pub downtime_secs: Option<f64>,
    /// Started → committed, in seconds.
    pub duration_secs: Option<f64>,
    /// Documents copied.
    pub documents_copied: u64,
    /// Bytes copied.
    pub bytes_copied: u64,
    /// Changes applied since T0, by kind.
    pub changes_applied: ChangeCounts,
    /// Collections and views created.
    pub created: CollectionKindCount,
    /// Indexes built.
    pub indexes_created: u64,
    /// The verification, when one ran.
    pub verification: Option<VerifyReport>,
    /// Per namespace.
    pub namespaces: Vec<NamespaceSummary>,
}

fn seconds_between(from: Option<&str>, to: Option<&str>) -> Option<f64> {
    let from: jiff::Timestamp = from?.parse().ok()?;
    let to: jiff::Timestamp = to?.parse().ok()?;
    Some((to - from).total(jiff::Unit::Second).ok()?.max(0.0))
}

impl MigrationReport {
    /// Builds the report from the final state and the verification.
    pub fn new(state: &MigrationState, verification: Option<VerifyReport>) -> Self {
        let c = &state.cutover;
        let namespaces = state
            .namespaces
            .iter()
            .map(|n| {
                let verified = verification.as_ref().and_then(|v| {
                    v.namespaces
                        .iter()
                        .find(|r| r.destination == n.destination.to_string())
                });
                NamespaceSummary {
                    source: n.source.to_string(),
                    destination: n.destination.to_string(),
                    documents_copied: n.documents_copied(),
                    source_count: verified.map(|r| r.source_count),
                    destination_count: verified.map(|r| r.destination_count),
                }
            })
            .collect();
        Self {
            format_version: REPORT_FORMAT_VERSION.to_owned(),
            migration: state.migration.clone(),
            lineage: state.lineage.clone(),
            outcome: state.phase.to_string(),
            source: state.source.clone(),
            destination: state.destination.clone(),
            started_at: state.timestamps.started.clone(),
            ready_at: c.ready_at.clone(),
            approval: c.approval.clone(),
            writes_stopped_at: c.writes_stopped_at.clone(),
            committed_at: c.committed_at.clone(),
            downtime_secs: seconds_between(
                c.writes_stopped_at.as_deref(),
                c.committed_at.as_deref(),
            ),
            duration_secs: seconds_between(
                state.timestamps.started.as_deref(),
                c.committed_at.as_deref(),
            ),
            documents_copied: state.documents_copied(),
            bytes_copied: state.bytes_copied(),
            changes_applied: state.sync.counts.clone(),
            created: state.created_counts(),
            indexes_created: state.indexes_created,
            verification,
            namespaces,
        }
    }

    /// The report file for a lockfile.
    pub fn path_for(lockfile: &Path) -> PathBuf {
        lockfile.with_file_name(REPORT_FILE)
    }

    /// Saves the report (atomically).
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let mut text = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        text.push(b'\n');
        crate::atomic_file::write_atomic(path, &text)
    }

    /// The report for people.
    pub fn human(&self) -> String {
        let mut out = String::new();
        let secs = |s: Option<f64>| s.map_or_else(|| "-".to_owned(), |s| format!("{s:.1}s"));
        let _ = writeln!(out, "Migration {:?} {}", self.migration, self.outcome);
        let _ = writeln!(
            out,
            "  source        {}, MongoDB {}",
            self.source.topology, self.source.version
        );
        let _ = writeln!(
            out,
            "  destination   {}, MongoDB {}",
            self.destination.topology, self.destination.version
        );
        if let Some(a) = &self.approval {
            let _ = writeln!(out, "  approved      by {} ({}) at {}", a.by, a.via, a.at);
        }
        let _ = writeln!(
            out,
            "  downtime      {} (writes stopped → committed)",
            secs(self.downtime_secs)
        );
        let _ = writeln!(out, "  duration      {}", secs(self.duration_secs));
        let _ = writeln!(
            out,
            "  copied        {} documents, {}",
            approx_count(self.documents_copied),
            approx_bytes(self.bytes_copied)
        );
        let c = &self.changes_applied;
        let _ = writeln!(
            out,
            "  changes       {} applied ({} inserts, {} updates, {} replaces, {} deletes, {} DDL)",
            c.total(),
            c.inserts,
            c.updates,
            c.replaces,
            c.deletes,
            c.ddl
        );
        let _ = writeln!(
            out,
            "  created       {}, {}, {}",
            plural(self.created.collections, "collection"),
            plural(self.created.views, "view"),
            plural(self.indexes_created, "index")
        );
        match &self.verification {
            Some(v) => {
                let _ = writeln!(
                    out,
                    "  verification  {}",
                    v.human().lines().last().unwrap_or_default()
                );
            }
            None => {
                let _ = writeln!(out, "  verification  not run (options.verify = \"none\")");
            }
        }
        out
    }
}
