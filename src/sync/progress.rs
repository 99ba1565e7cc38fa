//! A snapshot of a migration's progress, built from its state: what `apply` displays while it
//! runs, and what `status` shows from the lockfile.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::plan::model::{approx_bytes, approx_count};

use crate::state::{CopyStatus, MigrationState, NamespaceState, Phase};

fn compact(doc: &bson::Document) -> String {
    crate::plan::planner::compact_json(doc)
}

/// Progress of one namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NamespaceProgress {
    /// Source namespace.
    pub source: String,
    /// Destination namespace.
    pub destination: String,
    /// Copy status.
    pub status: CopyStatus,
    /// Documents copied.
    pub documents: u64,
    /// Documents estimated at the start.
    pub documents_estimate: u64,
    /// Bytes copied.
    pub bytes: u64,
    /// Bytes estimated at the start.
    pub bytes_estimate: u64,
    /// Partitions complete.
    pub partitions_done: usize,
    /// Partitions in all.
    pub partitions: usize,
    /// Documents found already copied after a resume.
    pub duplicates: u64,
    /// The source's shard key, for a sharded source collection.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_shard_key: Option<String>,
    /// The shard key this migration gave the destination collection.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shard_key: Option<String>,
    /// The copy per source shard (sharded source only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub shards: Vec<ShardProgress>,
}

/// The copy of one source shard's data (of one namespace, or of all of them).
///
/// A sharded collection's partitions are runs of chunks on one shard, so what they copied is
/// that shard's; an unsharded collection lives on one shard (its database's primary), to which
/// all of it is counted. Estimates are the shards' `$collStats` when the migration started.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ShardProgress {
    /// The source shard.
    pub shard: String,
    /// Documents copied.
    pub documents: u64,
    /// Documents estimated.
    pub documents_estimate: u64,
    /// Bytes copied.
    pub bytes: u64,
    /// Bytes estimated.
    pub bytes_estimate: u64,
    /// Partitions complete.
    pub partitions_done: usize,
    /// Partitions in all.
    pub partitions: usize,
}

impl ShardProgress {
    fn add(&mut self, other: &ShardProgress) {
        self.documents += other.documents;
        self.documents_estimate += other.documents_estimate;
        self.bytes += other.bytes;
        self.bytes_estimate += other.bytes_estimate;
        self.partitions_done += other.partitions_done;
        self.partitions += other.partitions;
    }
}

/// Per-shard progress of one namespace.
fn shard_progress(n: &NamespaceState) -> Vec<ShardProgress> {
    let mut shards: BTreeMap<String, ShardProgress> = BTreeMap::new();
    for e in &n.source_shards {
        let s = shards.entry(e.shard.clone()).or_default();
        s.documents_estimate += e.documents;
        s.bytes_estimate += e.bytes;
    }
    let single = (n.source_shards.len() == 1).then(|| n.source_shards[0].shard.clone());
    for p in &n.partitions {
        let shard = match (&p.range, &single) {
            (Some(r), _) => r.shard.clone(),
            (None, Some(s)) => s.clone(),
            (None, None) => continue,
        };
        let s = shards.entry(shard).or_default();
        s.documents += p.documents;
        s.bytes += p.bytes;
        s.partitions += 1;
        s.partitions_done += usize::from(p.done);
    }
    shards
        .into_iter()
        .map(|(shard, mut s)| {
            s.shard = shard;
            s
        })
        .collect()
}

/// A progress snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Progress {
    /// The migration's name.
    pub migration: String,
    /// Phase.
    pub phase: Phase,
    /// What is happening right now, in words.
    pub activity: String,
    /// When the migration started (RFC 3339).
    pub started: Option<String>,
    /// Documents copied, all namespaces.
    pub documents: u64,
    /// Documents estimated, all namespaces.
    pub documents_estimate: u64,
    /// Bytes copied.
    pub bytes: u64,
    /// Bytes estimated.
    pub bytes_estimate: u64,
    /// Change events spooled since T0.
    pub events_spooled: u64,
    /// How far the change reader is behind the source's clock, in seconds (from the newest
    /// cluster time it has seen; `None` before the first checkpoint).
    pub reader_lag_secs: Option<u64>,
    /// T0 (seconds since the epoch).
    pub start_time: Option<u32>,
    /// How far the destination is behind the source, in seconds: the newest source cluster
    /// time seen minus the last applied one (`None` before change application starts).
    pub lag_secs: Option<u64>,
    /// Changes applied since T0.
    pub changes_applied: u64,
    /// Documents waiting for a unique-index conflict to clear.
    pub pending_documents: usize,
    /// When the cutover window ends (RFC 3339), once ready.
    pub deadline: Option<String>,
    /// Who approved the cutover, once approved.
    pub approved_by: Option<String>,
    /// Per namespace.
    pub namespaces: Vec<NamespaceProgress>,
    /// The copy per source shard, all namespaces (sharded source only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub shards: Vec<ShardProgress>,
}

impl Progress {
    /// The snapshot before anything is known.
    pub fn empty(migration: &str) -> Self {
        Self {
            migration: migration.to_owned(),
            phase: Phase::Preparing,
            activity: "starting".to_owned(),
            started: None,
            documents: 0,
            documents_estimate: 0,
            bytes: 0,
            bytes_estimate: 0,
            events_spooled: 0,
            reader_lag_secs: None,
            start_time: None,
            lag_secs: None,
            changes_applied: 0,
            pending_documents: 0,
            deadline: None,
            approved_by: None,
            namespaces: Vec::new(),
            shards: Vec::new(),
        }
    }

    /// Builds a snapshot from the state. `now_secs` is the current time (seconds since the
    /// epoch) used for the reader's lag.
    pub fn from_state(state: &MigrationState, activity: &str, now_secs: u64) -> Self {
        let namespaces: Vec<NamespaceProgress> = state
            .namespaces
            .iter()
            .map(|n| NamespaceProgress {
                source: n.source.to_string(),
                destination: n.destination.to_string(),
                status: n.copy,
                documents: n.documents_copied(),
                documents_estimate: n.documents_estimate,
                bytes: n.bytes_copied(),
                bytes_estimate: n.bytes_estimate,
                partitions_done: n.partitions.iter().filter(|p| p.done).count(),
                partitions: n.partitions.len(),
                duplicates: n.duplicates,
                source_shard_key: n.source_shard_key.as_ref().map(compact),
                shard_key: n.shard_key.as_ref().map(compact),
                shards: shard_progress(n),
            })
            .collect();
        let mut shards: BTreeMap<String, ShardProgress> = BTreeMap::new();
        for s in namespaces.iter().flat_map(|n| &n.shards) {
            shards.entry(s.shard.clone()).or_default().add(s);
        }
        let shards = shards
            .into_iter()
            .map(|(shard, mut s)| {
                s.shard = shard;
                s
            })
            .collect();
        Self {
            migration: state.migration.clone(),
            phase: state.phase,
            activity: activity.to_owned(),
            started: state.timestamps.started.clone(),
            documents: namespaces.iter().map(|n| n.documents).sum(),
            documents_estimate: namespaces.iter().map(|n| n.documents_estimate).sum(),
            bytes: namespaces.iter().map(|n| n.bytes).sum(),
            bytes_estimate: namespaces.iter().map(|n| n.bytes_estimate).sum(),
            events_spooled: state.stream.events_spooled,
            reader_lag_secs: state
                .stream
                .high_water
                .map(|hw| now_secs.saturating_sub(u64::from(hw.secs()))),
            start_time: state.start_time.map(|t| t.secs()),
            lag_secs: lag_secs(state),
            changes_applied: state.sync.counts.total(),
            pending_documents: state.sync.pending.len(),
            deadline: state.cutover.deadline.clone(),
            approved_by: state.cutover.approval.as_ref().map(|a| a.by.clone()),
            namespaces,
            shards,
        }
    }
}

/// Seconds since the epoch, now.
pub fn now_secs() -> u64 {
    jiff::Timestamp::now().as_second().max(0).unsigned_abs()
}

/// The destination's lag behind the source, in seconds, once changes are being applied.
pub fn lag_secs(state: &MigrationState) -> Option<u64> {
    if state.phase < Phase::CatchingUp || state.phase == Phase::Committed {
        return None;
    }
    let newest = state.stream.high_water?;
    let applied = state.sync.applied_time.or(state.start_time)?;
    Some(u64::from(newest.secs().saturating_sub(applied.secs())))
}

/// The change side in words: lag and changes applied, or what the reader has spooled; plus
/// pending documents, the window and the approval.
pub fn sync_summary(p: &Progress) -> String {
    let mut parts = Vec::new();
    let finished = matches!(p.phase, Phase::Committed | Phase::Aborted);
    match (p.lag_secs, p.reader_lag_secs) {
        // Once the migration is over the reader is stopped: its lag would only grow.
        _ if finished => parts.push(format!(
            "{} changes applied",
            approx_count(p.changes_applied)
        )),
        (Some(lag), _) => parts.push(format!(
            "lag {lag}s, {} changes applied",
            approx_count(p.changes_applied)
        )),
        (None, Some(s)) => parts.push(format!(
            "{} changes spooled, reader lag {s}s",
            approx_count(p.events_spooled)
        )),
        (None, None) => parts.push("change reader starting".to_owned()),
    }
    if p.pending_documents > 0 {
        parts.push(format!(
            "{} documents waiting on a unique index",
            p.pending_documents
        ));
    }
    if let Some(d) = &p.deadline {
        parts.push(format!("window until {d}"));
    }
    if let Some(by) = &p.approved_by {
        parts.push(format!("approved by {by}"));
    }
    parts.join(", ")
}

/// One line: `copying: 45% (120.3k/266.0k docs, 30.0 MiB of 66.0 MiB) 12.0k docs/s, ...`.
pub fn summary_line(p: &Progress, rate: (f64, f64)) -> String {
    let percent = if p.documents_estimate > 0 {
        format!(
            "{:.0}%",
            100.0 * p.documents as f64 / p.documents_estimate as f64
        )
    } else {
        "-".to_owned()
    };
    let eta = if rate.0 > 0.0 && p.documents_estimate > p.documents {
        let secs = (p.documents_estimate - p.documents) as f64 / rate.0;
        format!(", ETA {}", crate::plan::checks::human_secs(secs as u64))
    } else {
        String::new()
    };
    format!(
        "[{}] {}: {percent} ({}/{} docs, {} of {}) {} docs/s, {}/s{eta}{}; {}",
        p.phase,
        p.activity,
        approx_count(p.documents),
        approx_count(p.documents_estimate),
        approx_bytes(p.bytes),
        approx_bytes(p.bytes_estimate),
        approx_count(rate.0 as u64),
        approx_bytes(rate.1 as u64),
        shards_summary(p),
        sync_summary(p),
    )
}

/// ` [shard0 45%, shard1 52%]` while a sharded source is copied; empty otherwise.
pub fn shards_summary(p: &Progress) -> String {
    if p.shards.is_empty() || p.phase > Phase::Copying {
        return String::new();
    }
    let parts: Vec<String> = p
        .shards
        .iter()
        .map(|s| {
            let percent = if s.documents_estimate > 0 {
                format!(
                    "{:.0}%",
                    100.0 * s.documents as f64 / s.documents_estimate as f64
                )
            } else {
                approx_count(s.documents)
            };
            format!("{} {percent}", s.shard)
        })
        .collect();
    format!(" [{}]", parts.join(", "))
}

/// Documents and bytes per second over the last few seconds.
#[derive(Debug, Default)]
pub struct Rate {
    samples: Vec<(Instant, u64, u64)>,
}

impl Rate {
    /// Adds a sample of the running totals; returns (documents/s, bytes/s).
    pub fn update(&mut self, documents: u64, bytes: u64) -> (f64, f64) {
        let now = Instant::now();
        self.samples.push((now, documents, bytes));
        self.samples
            .retain(|(t, _, _)| now.duration_since(*t) <= Duration::from_secs(10));
        let Some(&(t0, d0, b0)) = self.samples.first() else {
            return (0.0, 0.0);
        };
        let secs = now.duration_since(t0).as_secs_f64();
        if secs < 0.5 {
            return (0.0, 0.0);
        }
        (
            documents.saturating_sub(d0) as f64 / secs,
            bytes.saturating_sub(b0) as f64 / secs,
        )
    }
}
