//! Writing to a sharded destination: what a mongos requires of the migration's writes, and the
//! presplit of ranged shard keys before the copy.
//!
//! Server rules followed (MongoDB 6.0/7.0 through mongos):
//! - an upsert must name the whole shard key by equality in its filter (until 7.1), so every
//!   replace-upsert carries the document's key values next to `_id` (a missing field is
//!   `null`, as the server extracts shard keys); the values come from the full document, which
//!   holds the destination's key whatever the source's key is (a replica-set source's
//!   `documentKey` is only `_id`, a sharded source's has its own key);
//! - a delete by `_id` with `limit: 1` is routed by the mongos (6.0: a single delete must name
//!   `_id` or the shard key; 7.0 routes any), so deletes stay by `_id`: always correct, even
//!   when the destination's copy of the document has another key value than the event says;
//! - changing a document's shard key with an update needs the full old key in the filter and a
//!   retryable write or transaction (7.0). mongoshift instead deletes the document by `_id` and
//!   upserts it with its new key: the destination is not in use before the cutover, and both
//!   writes are idempotent, so repeating them after a crash converges. Updates applied as
//!   deltas that touch a key field are turned into whole-document writes for the same reason.
//! - `split` with `middle` and `moveRange` (6.0+) shape an empty collection's chunks.

use std::collections::HashMap;

use bson::{Bson, Document, RawArrayBuf, RawBsonRef, RawDocumentBuf, doc};
use futures_util::TryStreamExt;

use super::changes::DestinationOp;
use crate::cluster::retry::{Backoff, retry};
use crate::cluster::{Cluster, ClusterError, Reply};
use crate::namespace::Namespace;
use crate::shard_key::{ShardKey, value_at};

/// The destination's shard keys, by namespace (empty for a replica set).
pub type ShardKeys = HashMap<Namespace, ShardKey>;

/// Reads the shard keys of every sharded user collection of a destination reached through a
/// mongos (`config.collections`), retrying transient failures; a replica set has none.
pub async fn destination_shard_keys(
    destination: &Cluster,
    backoff: Backoff,
) -> Result<ShardKeys, ClusterError> {
    retry("reading the destination's shard keys", backoff, || {
        read_shard_keys(destination)
    })
    .await
}

async fn read_shard_keys(destination: &Cluster) -> Result<ShardKeys, ClusterError> {
    let hello = destination.command("admin", doc! { "hello": 1 }).await?;
    if hello.get_str("msg").ok() != Some("isdbgrid") {
        return Ok(ShardKeys::new());
    }
    let command = "find config.collections";
    let docs: Vec<Document> = destination
        .client()
        .database("config")
        .collection::<Document>("collections")
        .find(doc! {})
        .await
        .map_err(|e| destination.error(command, &e))?
        .try_collect()
        .await
        .map_err(|e| destination.error(command, &e))?;
    let mut keys = ShardKeys::new();
    for d in docs {
        let r = Reply::new(destination.side(), command, &d);
        let (name, key) = (r.str("_id")?, r.doc("key")?);
        let Ok(ns) = Namespace::parse(name) else {
            return Err(
                destination.invalid_reply(command, format!("`_id` {name:?} is not a namespace"))
            );
        };
        if matches!(ns.db(), "config" | "admin" | "local") {
            continue;
        }
        match ShardKey::new(key) {
            Some(key) => {
                keys.insert(ns, key);
            }
            // Writes to it then go without its key in their filters; mongos says so if it
            // needs one.
            None => {
                tracing::warn!(namespace = %ns, key = %key, "a destination shard key mongoshift does not understand")
            }
        }
    }
    Ok(keys)
}

/// The equality filter of a replace-upsert: `_id`, then every shard-key field's value in the
/// document (`null` when missing). `None` when a value cannot be written as a filter field.
pub fn upsert_filter(
    key: Option<&ShardKey>,
    id: &Bson,
    document: &bson::RawDocument,
) -> Option<RawDocumentBuf> {
    let mut filter = RawDocumentBuf::new();
    filter.append(
        bson::cstr!("_id"),
        bson::RawBson::try_from(id.clone()).ok()?,
    );
    if let Some(key) = key {
        for (path, value) in key.values(document) {
            if path == "_id" {
                continue;
            }
            let name = <&bson::raw::CStr>::try_from(path).ok()?;
            filter.append(name, bson::RawBson::from(value));
        }
    }
    Some(filter)
}

/// Deltas (`update_mode = "delta"`) that change a shard-key field become whole-document writes
/// of the source's current version (see the module notes).
pub fn key_changing_deltas_refetched(
    key: Option<&ShardKey>,
    ops: Vec<DestinationOp>,
) -> Vec<DestinationOp> {
    let Some(key) = key.filter(|k| !k.is_id_only()) else {
        return ops;
    };
    ops.into_iter()
        .map(|op| match op {
            DestinationOp::Delta {
                ns,
                id,
                source,
                set,
                unset,
                truncate,
            } => {
                let touches = set.keys().any(|p| key.touches(p))
                    || unset.iter().any(|p| key.touches(p))
                    || truncate.iter().any(|(p, _)| key.touches(p));
                if touches {
                    DestinationOp::Refetch { ns, id, source }
                } else {
                    DestinationOp::Delta {
                        ns,
                        id,
                        source,
                        set,
                        unset,
                        truncate,
                    }
                }
            }
            other => other,
        })
        .collect()
}

/// Deletes the destination's copies of upserted documents whose shard-key value changed, so
/// the upserts that follow insert them with their new key (an upsert whose filter names the
/// new value would not match the old document, and would insert a second document with the
/// same `_id`, possibly on another shard). Returns how many were deleted.
pub async fn delete_moved_documents(
    destination: &Cluster,
    key: Option<&ShardKey>,
    ns: &Namespace,
    ops: &[DestinationOp],
    write_concern: &bson::RawDocument,
) -> Result<u64, ClusterError> {
    let Some(key) = key.filter(|k| !k.is_id_only()) else {
        return Ok(0);
    };
    let upserts: Vec<(&Bson, &RawDocumentBuf)> = ops
        .iter()
        .filter_map(|op| match op {
            DestinationOp::Upsert { id, document, .. } => Some((id, document)),
            _ => None,
        })
        .collect();
    if upserts.is_empty() {
        return Ok(0);
    }
    let ids: Vec<Bson> = upserts.iter().map(|(id, _)| (*id).clone()).collect();
    let mut projection = doc! { "_id": 1 };
    for path in key.paths() {
        projection.insert(path, 1);
    }
    let command = format!("find {ns}");
    let current: Vec<RawDocumentBuf> = destination
        .client()
        .database(ns.db())
        .collection::<RawDocumentBuf>(ns.coll())
        .find(doc! { "_id": { "$in": ids } })
        .projection(projection)
        .await
        .map_err(|e| destination.error(&command, &e))?
        .try_collect()
        .await
        .map_err(|e| destination.error(&command, &e))?;
    let new_keys: HashMap<Vec<u8>, Vec<u8>> = upserts
        .iter()
        .map(|(id, document)| (id_bytes(id), key_bytes(key, document)))
        .collect();
    // Every stored version whose key differs goes, by `_id` and its own key values (the copy of
    // a sharded source may have stored two versions of a document that moved between shards
    // while it was read: a destination sharded on another key enforces `_id` per shard only).
    let mut deletes = RawArrayBuf::new();
    let mut moved = 0;
    for d in &current {
        let id = super::ddl::raw_id(d)
            .ok_or_else(|| destination.invalid_reply(&command, "a document has no _id"))?;
        if new_keys.get(&id_bytes(&id)) == Some(&key_bytes(key, d)) {
            continue;
        }
        let filter = upsert_filter(Some(key), &id, d).ok_or_else(|| {
            destination.invalid_reply(
                &command,
                format!(
                    "the shard-key values of _id {} cannot be written as a filter",
                    id.clone().into_relaxed_extjson()
                ),
            )
        })?;
        let mut statement = RawDocumentBuf::new();
        statement.append(bson::cstr!("q"), filter);
        statement.append(bson::cstr!("limit"), 1);
        deletes.push(statement);
        moved += 1;
    }
    if moved == 0 {
        return Ok(0);
    }
    let mut delete = RawDocumentBuf::new();
    delete.append(bson::cstr!("delete"), ns.coll());
    delete.append(bson::cstr!("deletes"), deletes);
    delete.append(bson::cstr!("ordered"), false);
    delete.append(bson::cstr!("writeConcern"), write_concern);
    let name = format!("delete {ns}");
    let reply = super::writer::write_command(destination, ns.db(), &name, delete).await?;
    let refusal = reply
        .get_array("writeErrors")
        .ok()
        .and_then(|errors| errors.iter().find_map(Bson::as_document));
    if let Some(e) = refusal {
        return Err(ClusterError::Command {
            side: destination.side(),
            command: name,
            code: e.get_i32("code").ok(),
            labels: Vec::new(),
            message: e.get_str("errmsg").unwrap_or_default().to_owned(),
        });
    }
    tracing::debug!(namespace = %ns, documents = moved, "shard key values changed");
    Ok(moved as u64)
}

fn id_bytes(id: &Bson) -> Vec<u8> {
    let mut d = RawDocumentBuf::new();
    if let Ok(raw) = bson::RawBson::try_from(id.clone()) {
        d.append(bson::cstr!("_id"), raw);
    }
    d.into_bytes()
}

/// The document's key values as bytes (type and value exactly: a conservative comparison that
/// may see `1` and `1.0` as different, which only costs a delete and an insert).
fn key_bytes(key: &ShardKey, doc: &bson::RawDocument) -> Vec<u8> {
    let mut out = RawDocumentBuf::new();
    for (i, (_, value)) in key.values(doc).into_iter().enumerate() {
        let name = i.to_string();
        if let Ok(name) = <&bson::raw::CStr>::try_from(name.as_str()) {
            out.append(name, bson::RawBson::from(value));
        }
    }
    out.into_bytes()
}

/// Splits an empty, just-sharded collection with a ranged key into about `chunks` chunks at
/// key values sampled from the source collection, and spreads them over the destination's
/// shards in contiguous runs (as the server spreads a hashed key's initial chunks). The copy
/// then writes to every shard at once instead of filling the primary shard first. A failure
/// only costs balance, so it is logged and the migration goes on.
pub async fn presplit(
    source: &Cluster,
    destination: &Cluster,
    source_ns: &Namespace,
    ns: &Namespace,
    key: &Document,
    chunks: u32,
) {
    if let Err(e) = try_presplit(source, destination, source_ns, ns, key, chunks).await {
        tracing::warn!(namespace = %ns, error = %e, "the presplit of the shard key failed; the balancer can even out the chunks after the migration");
    }
}

async fn try_presplit(
    source: &Cluster,
    destination: &Cluster,
    source_ns: &Namespace,
    ns: &Namespace,
    key: &Document,
    chunks: u32,
) -> Result<(), ClusterError> {
    let Some(key) = ShardKey::new(key).filter(|k| !k.is_hashed()) else {
        return Ok(());
    };
    let points = split_points(source, source_ns, &key, chunks).await?;
    for middle in &points {
        match destination
            .command(
                "admin",
                doc! { "split": ns.to_string(), "middle": middle.clone() },
            )
            .await
        {
            Ok(_) => {}
            // A point that already is a chunk bound (a resumed presplit) is not an error.
            Err(e) => tracing::debug!(namespace = %ns, error = %e, "split point skipped"),
        }
    }
    spread_chunks(destination, ns).await
}

/// Evenly spaced key values of a sample of the source, in the server's order: `$sample`, then
/// `$sort` on the key fields (documents missing a field sort as `null`, as their key is).
async fn split_points(
    source: &Cluster,
    source_ns: &Namespace,
    key: &ShardKey,
    chunks: u32,
) -> Result<Vec<Document>, ClusterError> {
    let size = (i64::from(chunks) * 50).clamp(100, 10_000);
    let mut project = doc! { "_id": 0 };
    let mut sort = Document::new();
    for path in key.paths() {
        project.insert(path, 1);
        sort.insert(path, 1);
    }
    if key.paths().any(|p| p == "_id") {
        project.remove("_id");
    }
    let command = format!("$sample {source_ns}");
    let sample: Vec<RawDocumentBuf> = source
        .client()
        .database(source_ns.db())
        .collection::<RawDocumentBuf>(source_ns.coll())
        .aggregate([
            doc! { "$sample": { "size": size } },
            doc! { "$project": project },
            doc! { "$sort": sort },
        ])
        .with_type::<RawDocumentBuf>()
        .await
        .map_err(|e| source.error(&command, &e))?
        .try_collect()
        .await
        .map_err(|e| source.error(&command, &e))?;
    let mut points: Vec<Document> = Vec::new();
    let mut last: Option<Vec<u8>> = None;
    for i in 1..chunks as usize {
        let Some(d) = sample.get(i * sample.len() / chunks as usize) else {
            continue;
        };
        let bytes = key_bytes(key, d);
        if last.as_ref() == Some(&bytes) {
            continue;
        }
        let mut middle = Document::new();
        for path in key.paths() {
            let value = value_at(d, path).unwrap_or(RawBsonRef::Null);
            let Ok(value) = Bson::try_from(value) else {
                continue;
            };
            middle.insert(path, value);
        }
        // The smallest value cannot split: the first chunk starts there already.
        if middle.values().all(|v| matches!(v, Bson::MinKey)) {
            continue;
        }
        last = Some(bytes);
        points.push(middle);
    }
    Ok(points)
}

/// Moves the collection's chunks (in key order) so that shard `i` of `n` owns the `i`-th
/// contiguous run.
async fn spread_chunks(destination: &Cluster, ns: &Namespace) -> Result<(), ClusterError> {
    let reply = destination
        .command("admin", doc! { "listShards": 1 })
        .await?;
    let r = Reply::new(destination.side(), "listShards", &reply);
    let mut shards: Vec<String> = r
        .array("shards")?
        .iter()
        .filter_map(Bson::as_document)
        .filter_map(|s| s.get_str("_id").ok().map(str::to_owned))
        .collect();
    shards.sort();
    if shards.len() < 2 {
        return Ok(());
    }
    let chunks = collection_chunks(destination, ns).await?;
    let n = chunks.len();
    for (i, chunk) in chunks.iter().enumerate() {
        let target = &shards[i * shards.len() / n.max(1)];
        if &chunk.shard == target {
            continue;
        }
        destination
            .command(
                "admin",
                doc! { "moveRange": ns.to_string(), "min": chunk.min.clone(), "toShard": target.clone() },
            )
            .await?;
    }
    Ok(())
}

/// One chunk of a sharded collection, from `config.chunks`.
#[derive(Debug, Clone, PartialEq)]
pub struct Chunk {
    /// Inclusive lower bound (shard-key values; hashed fields as their hashes).
    pub min: Document,
    /// Exclusive upper bound.
    pub max: Document,
    /// The owning shard.
    pub shard: String,
}

/// A sharded collection's chunks in key order, from `config.chunks` (found by the collection's
/// UUID in `config.collections`, as 5.0+ records them). Empty when the collection is not
/// sharded.
pub async fn collection_chunks(
    cluster: &Cluster,
    ns: &Namespace,
) -> Result<Vec<Chunk>, ClusterError> {
    let config = cluster.client().database("config");
    let command = "find config.collections";
    let entry = config
        .collection::<Document>("collections")
        .find_one(doc! { "_id": ns.to_string() })
        .await
        .map_err(|e| cluster.error(command, &e))?;
    let Some(uuid) = entry.as_ref().and_then(|e| e.get("uuid")).cloned() else {
        return Ok(Vec::new());
    };
    let command = "find config.chunks";
    let docs: Vec<Document> = config
        .collection::<Document>("chunks")
        .find(doc! { "uuid": uuid })
        .sort(doc! { "min": 1 })
        .projection(doc! { "min": 1, "max": 1, "shard": 1 })
        .await
        .map_err(|e| cluster.error(command, &e))?
        .try_collect()
        .await
        .map_err(|e| cluster.error(command, &e))?;
    let mut chunks = Vec::with_capacity(docs.len());
    for d in &docs {
        let r = Reply::new(cluster.side(), command, d);
        chunks.push(Chunk {
            min: r.doc("min")?.clone(),
            max: r.doc("max")?.clone(),
            shard: r.str("shard")?.to_owned(),
        });
    }
    Ok(chunks)
}

#[cfg(test)]
mod tests {
    use bson::rawdoc;

    use super::*;

    fn key(pattern: Document) -> ShardKey {
        ShardKey::new(&pattern).unwrap()
    }

    #[test]
    fn upsert_filters_name_the_whole_key_with_nulls_for_missing_fields() {
        let k = key(doc! { "region": 1, "c.id": "hashed" });
        let d = rawdoc! { "_id": 5, "region": "eu", "x": 1 };
        let f = upsert_filter(Some(&k), &Bson::Int32(5), &d).unwrap();
        assert_eq!(f, rawdoc! { "_id": 5, "region": "eu", "c.id": null });
        let f = upsert_filter(None, &Bson::Int32(5), &d).unwrap();
        assert_eq!(f, rawdoc! { "_id": 5 });
        let id_key = key(doc! { "_id": "hashed" });
        let f = upsert_filter(Some(&id_key), &Bson::Int32(5), &d).unwrap();
        assert_eq!(f, rawdoc! { "_id": 5 });
    }

    #[test]
    fn deltas_that_touch_the_key_are_written_whole() {
        let ns = Namespace::new("d", "c");
        let delta = |field: &str| DestinationOp::Delta {
            ns: ns.clone(),
            id: Bson::Int32(1),
            source: ns.clone(),
            set: doc! { field: 1 },
            unset: vec![],
            truncate: vec![],
        };
        let k = key(doc! { "a.b": 1 });
        let out = key_changing_deltas_refetched(Some(&k), vec![delta("a"), delta("x")]);
        assert!(matches!(out[0], DestinationOp::Refetch { .. }));
        assert!(matches!(out[1], DestinationOp::Delta { .. }));
        let unchanged = key_changing_deltas_refetched(None, vec![delta("a")]);
        assert!(matches!(unchanged[0], DestinationOp::Delta { .. }));
    }

    #[test]
    fn key_bytes_see_types_and_missing_fields() {
        let k = key(doc! { "a": 1 });
        assert_eq!(
            key_bytes(&k, &rawdoc! { "a": 1 }),
            key_bytes(&k, &rawdoc! { "a": 1, "b": 2 })
        );
        assert_ne!(
            key_bytes(&k, &rawdoc! { "a": 1 }),
            key_bytes(&k, &rawdoc! { "a": 2 })
        );
        assert_eq!(
            key_bytes(&k, &rawdoc! {}),
            key_bytes(&k, &rawdoc! { "a": null })
        );
    }
}
