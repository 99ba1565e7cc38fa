//! Copy partitions of a sharded source collection: each partition is a run of consecutive
//! chunks owned by one shard, so that the copy's progress is known per source shard and every
//! partition reads from a single shard.
//!
//! The chunks come from `config.chunks` (in shard-key order) and the partition reads its range
//! through mongos with `hint` on the index that supports the shard key and `min`/`max` in that
//! index's key space. Server behaviours relied on: a mongos routes `find` with `hint` +
//! `min`/`max` to the shards and each shard filters out documents it does not own (orphans);
//! for a hashed field the index keys, the chunk bounds and `min`/`max` are all the 64-bit hash;
//! `min` is inclusive and `max` exclusive; an index longer than the shard key is bounded by
//! padding the extra fields with `MinKey`. The balancer must be stopped (a `plan` check), so
//! the chunk ranges stay put while they are read.
//!
//! Such a range cannot resume from a document: its order is the shard-key index's, where many
//! documents may share a key. A range interrupted by a crash is read again from its start
//! (documents already copied come back as expected duplicates), so at most one partition per
//! parallel slot is copied twice. Sizes per chunk are estimated from the shard's share of the
//! collection divided by its chunks.

use bson::{Bson, Document};

use super::sharded::{Chunk, collection_chunks};
use crate::cluster::{Cluster, ClusterError, list_indexes};
use crate::namespace::Namespace;
use crate::shard_key::ShardKey;
use crate::state::{KeyRange, PartitionState, ShardEstimate};

/// At most this many partitions per collection (as for `_id` partitions).
const MAX_PARTITIONS: usize = 4096;

/// The partitions of a sharded source collection, or `None` when it is not sharded or no index
/// supports its key (then it is copied in `_id` ranges like any collection).
pub async fn key_range_partitions(
    source: &Cluster,
    ns: &Namespace,
    key: &Document,
    partition_bytes: u64,
    estimates: &[ShardEstimate],
) -> Result<Option<Vec<PartitionState>>, ClusterError> {
    let Some(key) = ShardKey::new(key) else {
        return Ok(None);
    };
    let chunks = collection_chunks(source, ns).await?;
    if chunks.is_empty() {
        return Ok(None);
    }
    let indexes = list_indexes(source, ns).await?;
    let Some(index) = indexes
        .iter()
        .filter(|i| key.is_supported_by(i))
        .min_by_key(|i| (i.key.len(), i.name.clone()))
    else {
        tracing::warn!(namespace = %ns, "no index supports the source's shard key; copying in _id ranges");
        return Ok(None);
    };
    Ok(Some(plan_ranges(
        &key,
        &index.key,
        &chunks,
        partition_bytes,
        estimates,
    )))
}

/// Groups chunks (in key order) into runs on one shard of about `partition_bytes` each.
fn plan_ranges(
    key: &ShardKey,
    index: &Document,
    chunks: &[Chunk],
    partition_bytes: u64,
    estimates: &[ShardEstimate],
) -> Vec<PartitionState> {
    let chunk_bytes = |shard: &str| -> u64 {
        let on_shard = chunks.iter().filter(|c| c.shard == shard).count() as u64;
        estimates
            .iter()
            .find(|e| e.shard == shard)
            .map_or(0, |e| e.bytes.checked_div(on_shard).unwrap_or(0))
    };
    // Never more than MAX_PARTITIONS runs, whatever the estimates say.
    let min_chunks = chunks.len().div_ceil(MAX_PARTITIONS);
    let mut runs: Vec<(usize, usize)> = Vec::new(); // [start, end) indexes into `chunks`
    let mut start = 0;
    let mut bytes = 0u64;
    for (i, chunk) in chunks.iter().enumerate() {
        let size = chunk_bytes(&chunk.shard);
        let same_shard = chunks[start].shard == chunk.shard;
        let fits = bytes.saturating_add(size) <= partition_bytes.max(1) || i - start < min_chunks;
        if i > start && !(same_shard && fits) {
            runs.push((start, i));
            start = i;
            bytes = 0;
        }
        bytes = bytes.saturating_add(size);
    }
    runs.push((start, chunks.len()));
    runs.into_iter()
        .enumerate()
        .map(|(id, (from, to))| {
            let first = &chunks[from];
            let last = &chunks[to - 1];
            let is_global_min = first.min.values().all(|v| matches!(v, Bson::MinKey));
            let is_global_max = last.max.values().all(|v| matches!(v, Bson::MaxKey));
            PartitionState::key_range(
                id as u32,
                KeyRange {
                    shard: first.shard.clone(),
                    index: index.clone(),
                    min: (!is_global_min).then(|| index_bound(key, index, &first.min)),
                    max: (!is_global_max).then(|| index_bound(key, index, &last.max)),
                    chunks: (to - from) as u32,
                },
            )
        })
        .collect()
}

/// A chunk bound in the index's key space: the shard-key fields' values, then `MinKey` for the
/// index's further fields.
fn index_bound(key: &ShardKey, index: &Document, bound: &Document) -> Document {
    index
        .keys()
        .map(|field| {
            let value = if key.paths().any(|p| p == field) {
                bound.get(field).cloned().unwrap_or(Bson::MinKey)
            } else {
                Bson::MinKey
            };
            (field.clone(), value)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;

    fn chunk(min: Bson, max: Bson, shard: &str) -> Chunk {
        Chunk {
            min: doc! { "a": min },
            max: doc! { "a": max },
            shard: shard.to_owned(),
        }
    }

    fn estimate(shard: &str, bytes: u64) -> ShardEstimate {
        ShardEstimate {
            shard: shard.to_owned(),
            documents: bytes / 100,
            bytes,
        }
    }

    #[test]
    fn runs_stay_on_one_shard_and_near_the_partition_size() {
        let key = ShardKey::new(&doc! { "a": 1 }).unwrap();
        let chunks = vec![
            chunk(Bson::MinKey, Bson::Int32(10), "s0"),
            chunk(Bson::Int32(10), Bson::Int32(20), "s0"),
            chunk(Bson::Int32(20), Bson::Int32(30), "s0"),
            chunk(Bson::Int32(30), Bson::Int32(40), "s1"),
            chunk(Bson::Int32(40), Bson::MaxKey, "s0"),
        ];
        // s0: 400 bytes over 4 chunks (100 each); s1: 50 in one.
        let estimates = [estimate("s0", 400), estimate("s1", 50)];
        let parts = plan_ranges(&key, &doc! { "a": 1, "b": 1 }, &chunks, 200, &estimates);
        let ranges: Vec<&KeyRange> = parts.iter().map(|p| p.range.as_ref().unwrap()).collect();
        assert_eq!(ranges.len(), 4);
        assert_eq!(
            (ranges[0].shard.as_str(), ranges[0].chunks),
            ("s0", 2),
            "two 100-byte chunks fill 200 bytes"
        );
        assert_eq!(ranges[0].min, None, "the first range is open below");
        assert_eq!(
            ranges[0].max,
            Some(doc! { "a": 20, "b": Bson::MinKey }),
            "bounds are padded to the index"
        );
        assert_eq!((ranges[1].shard.as_str(), ranges[1].chunks), ("s0", 1));
        assert_eq!((ranges[2].shard.as_str(), ranges[2].chunks), ("s1", 1));
        assert_eq!(ranges[3].max, None, "the last range is open above");
        assert!(parts.iter().enumerate().all(|(i, p)| p.id == i as u32));
    }

    #[test]
    fn many_chunks_are_grouped_into_at_most_the_partition_limit() {
        let key = ShardKey::new(&doc! { "a": 1 }).unwrap();
        let chunks: Vec<Chunk> = (0..10_000)
            .map(|i| {
                let min = if i == 0 { Bson::MinKey } else { Bson::Int32(i) };
                let max = if i == 9_999 {
                    Bson::MaxKey
                } else {
                    Bson::Int32(i + 1)
                };
                chunk(min, max, "s0")
            })
            .collect();
        let parts = plan_ranges(&key, &doc! { "a": 1 }, &chunks, 1, &[]);
        assert!(parts.len() <= MAX_PARTITIONS, "{}", parts.len());
        let covered: u32 = parts.iter().map(|p| p.range.as_ref().unwrap().chunks).sum();
        assert_eq!(covered, 10_000);
    }
}
