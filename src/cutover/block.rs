//! The source write block: `setUserWriteBlockMode` (MongoDB 6.0+), which makes the source refuse
//! user writes (code 371 `UserWritesBlocked`) while the last changes are drained.

use bson::{Timestamp, doc};

use crate::cluster::{Cluster, ClusterError};

/// Blocks user writes and returns the source cluster time at which they stopped: every
/// accepted write has a time at or before it.
pub async fn block(source: &Cluster) -> Result<Option<Timestamp>, ClusterError> {
    let reply = source
        .command("admin", doc! { "setUserWriteBlockMode": 1, "global": true })
        .await?;
    Ok(match reply.get_timestamp("operationTime") {
        Ok(t) => Some(t),
        Err(_) => source.cluster_time().await?,
    })
}

/// Releases the block (harmless when it is not on).
pub async fn release(source: &Cluster) -> Result<(), ClusterError> {
    source
        .command(
            "admin",
            doc! { "setUserWriteBlockMode": 1, "global": false },
        )
        .await
        .map(|_| ())
}
