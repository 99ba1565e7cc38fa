//! A migration's durable state: the lockfile `migration.lock` (progress, resume positions,
//! never secrets) and the OS lock that lets one `apply` run at a time.

pub mod lock;
pub mod lockfile;
pub mod model;

pub use lock::{Holder, LockError, LockGuard};
pub use lockfile::StateError;
pub use model::{
    Approval, ChangeCounts, ClusterIdentity, ClusterTime, CollectionKindCount, CopyStatus,
    CutoverState, IdBound, KeyRange, LOCKFILE_FORMAT_VERSION, MigrationState, NamespaceState,
    PartitionState, PendingDocument, Phase, ResumeToken, ShardEstimate, SpoolPosition, StreamState,
    SyncState, Timestamps, VerificationSummary, WriteBlock,
};

#[cfg(test)]
mod tests;
