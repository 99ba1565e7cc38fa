//! A snapshot of a migration's progress, built from its state: what `apply` displays while it
//! runs, and what `status` shows from the lockfile.

use serde::Serialize;

use crate::state::{CopyStatus, MigrationState, Phase};

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
