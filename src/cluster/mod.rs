//! Talking to clusters: connecting from a checked endpoint, and reading what the plan needs to
//! know about them (identity, topology, privileges, oplog window, catalog).

mod connect;
mod error;
pub mod inflight;
mod inspect;
mod privileges;
mod reply;
pub mod retry;
mod snapshot;

pub use connect::Cluster;
pub use error::{ClusterError, Side, codes, driver_message, error_code};
pub use inspect::{InspectRequest, inspect, list_indexes};
pub use privileges::{Grant, Privileges, Resource, Target};
pub use reply::{Reply, as_u64};
pub use snapshot::{
    Catalog, ClusterSnapshot, CollectionInfo, CollectionKind, CollectionStats, DatabaseInfo,
    IndexSpec, OplogInfo, ServerInfo, Shard, ShardingInfo, Topology, document_serde,
    option_document_serde, timestamp_serde,
};
