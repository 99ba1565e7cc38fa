//! Catalog changes on the destination: the drop, create, shard and index actions of a plan.
//!
//! Each is safe to repeat after a crash: dropping a missing namespace, creating one this
//! migration already created, or building an index that exists with the same spec all succeed
//! (the drivers' idempotency rule: "namespace not found" on drop is success).

use bson::{Bson, Document, doc};

use crate::cluster::{Cluster, ClusterError, IndexSpec, codes};
use crate::namespace::Namespace;
use crate::plan::Change;

/// Drops a destination namespace.
pub async fn drop_namespace(cluster: &Cluster, ns: &Namespace) -> Result<(), ClusterError> {
    match cluster.command(ns.db(), doc! { "drop": ns.coll() }).await {
        Ok(_) => Ok(()),
        Err(e) if e.code() == Some(codes::NAMESPACE_NOT_FOUND) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Creates a collection or view with the given `create` options. `ours` says the migration
/// recorded this namespace as its own before: then an existing one is the result of an earlier
/// attempt and is kept.
pub async fn create_namespace(
    cluster: &Cluster,
    ns: &Namespace,
    options: &Document,
    ours: bool,
) -> Result<(), ClusterError> {
    let mut command = doc! { "create": ns.coll() };
    for (k, v) in options {
        command.insert(k.clone(), v.clone());
    }
    match cluster.command(ns.db(), command).await {
        Ok(_) => Ok(()),
        Err(e) if ours && e.code() == Some(codes::NAMESPACE_EXISTS) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Builds one index.
pub async fn create_index(
    cluster: &Cluster,
    ns: &Namespace,
    index: &IndexSpec,
) -> Result<(), ClusterError> {
    let mut spec = doc! { "key": index.key.clone(), "name": index.name.clone() };
    for (k, v) in &index.options {
        spec.insert(k.clone(), v.clone());
    }
    cluster
        .command(
            ns.db(),
            doc! { "createIndexes": ns.coll(), "indexes": [spec] },
        )
        .await
        .map(|_| ())
}

/// Shards a destination collection (through mongos). Sharding again with the same options
/// succeeds (the server's idempotent `shardCollection`), so a crash in between is harmless.
/// `simple_collation`: the collection has another default collation, and the server then
/// requires `collation: {locale: "simple"}` (the shard key always uses the simple one).
pub async fn shard_collection(
    cluster: &Cluster,
    ns: &Namespace,
    key: &Document,
    unique: bool,
    simple_collation: bool,
) -> Result<(), ClusterError> {
    let mut command =
        doc! { "shardCollection": ns.to_string(), "key": key.clone(), "unique": unique };
    if simple_collation {
        command.insert("collation", doc! { "locale": "simple" });
    }
    cluster.command("admin", command).await.map(|_| ())
}

/// Applies one catalog change (not `Copy`, which the copy engine performs).
pub async fn apply_change(
    cluster: &Cluster,
    ns: &Namespace,
    change: &Change,
    ours: bool,
) -> Result<(), ClusterError> {
    match change {
        Change::Drop { .. } => drop_namespace(cluster, ns).await,
        Change::CreateCollection { options, .. } | Change::CreateView { options, .. } => {
            create_namespace(cluster, ns, options, ours).await
        }
        Change::ShardCollection {
            key,
            unique,
            simple_collation,
            ..
        } => shard_collection(cluster, ns, key, *unique, *simple_collation).await,
        Change::CreateIndex { index, .. } => create_index(cluster, ns, index).await,
        Change::Copy { .. } => Ok(()),
    }
}

/// The `_id` of a raw document as an owned value.
pub fn raw_id(doc: &bson::RawDocument) -> Option<Bson> {
    Bson::try_from(doc.get("_id").ok().flatten()?).ok()
}
