//! The sync engine: copy the data, follow the changes.
//!
//! - [`apply`]: the entry of `mongoshift apply`; `engine` is the single owner of the state
//!   through copy, change application and cutover.
//! - [`changes`] and [`applier`]: change events interpreted, then applied in batches.
//! - [`report`]: the final report.
//! - [`copy`]: partitions and parallel raw-BSON copy; [`shard_ranges`]: the partitions of a
//!   sharded source collection (runs of chunks on one shard).
//! - [`stream`]: the cluster-wide change stream from T0, into the [`spool`].
//! - [`writer`]: batched destination writes; [`ddl`]: destination catalog changes;
//!   [`sharded`]: what a sharded destination requires (shard-key filters, key changes,
//!   presplit) and the chunks of a sharded collection.
//! - [`progress`]: snapshots for display and `status`.

pub mod applier;
pub mod apply;
pub mod changes;
pub mod copy;
pub mod ddl;
mod engine;
pub mod progress;
pub mod report;
pub mod shard_ranges;
pub mod sharded;
pub mod spool;
pub mod stream;
pub mod writer;

pub use apply::{ApplyError, ApplyOutcome, ApplyRequest, apply, defining_fingerprint};
pub use progress::{NamespaceProgress, Progress, ShardProgress};
