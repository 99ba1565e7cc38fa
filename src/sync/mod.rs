//! The sync engine: copy the data, follow the changes.
//!
//! - [`apply`]: the orchestration of `mongoshift apply` and the single owner of the state.
//! - [`copy`]: partitions and parallel raw-BSON copy.
//! - [`stream`]: the cluster-wide change stream from T0, into the [`spool`].
//! - [`writer`]: batched destination writes; [`ddl`]: destination catalog changes.
//! - [`progress`]: snapshots for display and `status`.

pub mod apply;
pub mod copy;
pub mod ddl;
pub mod progress;
pub mod spool;
pub mod stream;
pub mod writer;

pub use apply::{ApplyError, ApplyOutcome, ApplyRequest, apply, defining_fingerprint};
pub use progress::{NamespaceProgress, Progress};
