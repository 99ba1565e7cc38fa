//! The routing table of one sharded collection: contiguous chunks `[min, max)` covering the
//! whole shard key space, each owned by one shard, with the versions and history mongod keeps in
//! `config.chunks`.
//!
//! Initial chunks follow `InitialSplitPolicy` of MongoDB 7.0: an empty collection with a hashed
//! prefix gets `numInitialChunks` chunks (2 per shard by default) with split points spread
//! symmetrically over the 64-bit hash space, placed in contiguous runs per shard in shard-id
//! order; every other collection gets one chunk on the database's primary shard. Splits and
//! migrations (`split`, `moveChunk`, `moveRange`) change only this table: documents are stored
//! once, and a document belongs to the shard that owns the chunk its shard key falls in.

use bson::oid::ObjectId;
use bson::{Bson, Document, Timestamp};

use super::shard_key::ShardKey;
use crate::error::CommandError;

/// One chunk.
#[derive(Debug, Clone)]
pub struct Chunk {
    /// `_id` in `config.chunks` (an ObjectId since 5.0).
    pub id: ObjectId,
    /// Inclusive lower bound (a full shard key value).
    pub min: Document,
    /// Exclusive upper bound.
    pub max: Document,
    /// The encoded `min`, for lookups.
    pub min_key: Vec<u8>,
    /// The owning shard.
    pub shard: String,
    /// Chunk version `(major, minor)`; `config.chunks.lastmod` is `Timestamp(major, minor)`.
    pub version: (u32, u32),
    /// When the chunk arrived on its shard (`onCurrentShardSince`).
    pub on_current_shard_since: Timestamp,
    /// `history`: `(validAfter, shard)`, newest first.
    pub history: Vec<(Timestamp, String)>,
}

/// The chunks of one collection, sorted by `min`.
#[derive(Debug, Clone)]
pub struct ChunkMap {
    chunks: Vec<Chunk>,
}

/// `calculateHashedSplitPoints`: split points of the hashed field that cut the signed 64-bit
/// hash space into `n` intervals symmetric around 0.
pub fn hashed_split_points(n: i64) -> Vec<i64> {
    if n <= 1 {
        return Vec::new();
    }
    let interval = (i64::MAX / n) * 2;
    let mut points = Vec::new();
    let mut current: i64 = 0;
    if n % 2 == 0 {
        points.push(current);
        current = current.saturating_add(interval);
    } else {
        current = current.saturating_add(interval / 2);
    }
    for _ in 0..(n - 1) / 2 {
        points.push(current);
        points.push(-current);
        current = current.saturating_add(interval);
    }
    points.sort_unstable();
    points.dedup();
    points
}

impl ChunkMap {
    /// `SingleChunkOnPrimarySplitPolicy`: one chunk `[MinKey, MaxKey)` on `primary`.
    pub fn single(key: &ShardKey, primary: &str, now: Timestamp) -> ChunkMap {
        ChunkMap {
            chunks: vec![new_chunk(
                key,
                key.global_min(),
                key.global_max(),
                primary,
                (1, 0),
                now,
            )],
        }
    }

    /// `SplitPointsBasedSplitPolicy` for an empty collection with a hashed prefix:
    /// `num_chunks` chunks (0 means 2 per shard); chunk `i` goes to
    /// `shards[(i / max(num_chunks / shards, 1)) % shards]`, except that the first chunk goes to
    /// the primary shard when there are fewer chunks than shards.
    pub fn hashed(
        key: &ShardKey,
        shards: &[String],
        primary: &str,
        num_chunks: i64,
        now: Timestamp,
    ) -> ChunkMap {
        let n_shards = shards.len().max(1) as i64;
        let n = if num_chunks > 0 {
            num_chunks
        } else {
            2 * n_shards
        };
        let per_shard = (n / n_shards).max(1);
        let points = hashed_split_points(n);
        let bound = |v: i64| -> Document {
            // The hashed field takes the split value; fields after it are MinKey.
            let mut d = Document::new();
            let mut after = false;
            for f in &key.fields {
                if f.hashed {
                    d.insert(f.path.clone(), v);
                    after = true;
                } else if after {
                    d.insert(f.path.clone(), Bson::MinKey);
                }
            }
            d
        };
        let mut chunks = Vec::with_capacity(points.len() + 1);
        let count = points.len() + 1;
        for i in 0..count {
            let min = if i == 0 {
                key.global_min()
            } else {
                bound(points[i - 1])
            };
            let max = if i + 1 == count {
                key.global_max()
            } else {
                bound(points[i])
            };
            let shard = if i == 0 && count < shards.len() {
                primary.to_string()
            } else {
                let idx = ((i as i64 / per_shard) % n_shards) as usize;
                shards
                    .get(idx)
                    .cloned()
                    .unwrap_or_else(|| primary.to_string())
            };
            chunks.push(new_chunk(key, min, max, &shard, (1, i as u32), now));
        }
        ChunkMap { chunks }
    }

    /// All chunks in key order.
    pub fn chunks(&self) -> &[Chunk] {
        &self.chunks
    }

    /// The index of the chunk containing an encoded shard key.
    pub fn index_of(&self, key: &[u8]) -> usize {
        // Chunks are contiguous from MinKey, so the last chunk whose min <= key contains it.
        self.chunks
            .partition_point(|c| c.min_key.as_slice() <= key)
            .saturating_sub(1)
    }

    /// The chunk containing an encoded shard key.
    pub fn find(&self, key: &[u8]) -> &Chunk {
        &self.chunks[self.index_of(key)]
    }

    /// The collection version: the highest chunk version.
    pub fn version(&self) -> (u32, u32) {
        self.chunks
            .iter()
            .map(|c| c.version)
            .max()
            .unwrap_or((1, 0))
    }

    /// Shards that own at least one chunk, in shard-id order.
    pub fn shards(&self) -> Vec<String> {
        let mut shards: Vec<String> = self.chunks.iter().map(|c| c.shard.clone()).collect();
        shards.sort();
        shards.dedup();
        shards
    }

    /// Splits the chunk containing `at` at that point (a normalized full shard key that is not
    /// already a chunk bound). The two halves get the next minor versions.
    pub fn split(&mut self, key: &ShardKey, at: &Document) -> Result<(), CommandError> {
        let encoded = key.encode(at);
        let index = self.index_of(&encoded);
        let chunk = &self.chunks[index];
        if chunk.min_key == encoded || key.encode(&chunk.max) == encoded {
            return Err(CommandError::without_code(format!(
                "new split key {} is a boundary key of existing chunk [{},{})",
                shell(at),
                shell(&chunk.min),
                shell(&chunk.max)
            )));
        }
        let (major, minor) = self.version();
        let mut left = chunk.clone();
        let mut right = chunk.clone();
        left.max = at.clone();
        left.version = (major, minor + 1);
        right.id = ObjectId::new();
        right.min = at.clone();
        right.min_key = encoded;
        right.version = (major, minor + 2);
        self.chunks.splice(index..=index, [left, right]);
        Ok(())
    }

    /// Moves chunk `index` to `to` as a committed migration does: the chunk gets a new major
    /// version, the donor's first remaining chunk (if any) is bumped with it, and the history
    /// records the move at `now`.
    pub fn migrate(&mut self, index: usize, to: &str, now: Timestamp) {
        let Some(chunk) = self.chunks.get(index) else {
            return;
        };
        if chunk.shard == to {
            return;
        }
        let donor = chunk.shard.clone();
        let (major, _) = self.version();
        let chunk = &mut self.chunks[index];
        chunk.shard = to.to_string();
        chunk.version = (major + 1, 0);
        chunk.on_current_shard_since = now;
        chunk.history.insert(0, (now, to.to_string()));
        if let Some(control) = self.chunks.iter_mut().find(|c| c.shard == donor) {
            control.version = (major + 1, 1);
        }
    }

    /// The index of the chunk whose bounds are exactly `[min, max)`, if any.
    pub fn exact(&self, key: &ShardKey, min: &Document, max: &Document) -> Option<usize> {
        let min_key = key.encode(min);
        let max_key = key.encode(max);
        let index = self.index_of(&min_key);
        let chunk = self.chunks.get(index)?;
        (chunk.min_key == min_key && key.encode(&chunk.max) == max_key).then_some(index)
    }
}

fn new_chunk(
    key: &ShardKey,
    min: Document,
    max: Document,
    shard: &str,
    version: (u32, u32),
    now: Timestamp,
) -> Chunk {
    Chunk {
        id: ObjectId::new(),
        min_key: key.encode(&min),
        min,
        max,
        shard: shard.to_string(),
        version,
        on_current_shard_since: now,
        history: vec![(now, shard.to_string())],
    }
}

fn shell(d: &Document) -> String {
    crate::engine::index::shell_format_document(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;

    fn ts() -> Timestamp {
        Timestamp {
            time: 100,
            increment: 1,
        }
    }

    #[test]
    fn hashed_split_points_match_the_server() {
        // 4 chunks: 0 and ±(i64::MAX / 4) * 2.
        assert_eq!(
            hashed_split_points(4),
            vec![-4_611_686_018_427_387_902, 0, 4_611_686_018_427_387_902]
        );
        assert_eq!(hashed_split_points(1), Vec::<i64>::new());
        assert_eq!(hashed_split_points(2), vec![0]);
        // Odd counts start half an interval from 0.
        let three = hashed_split_points(3);
        assert_eq!(three.len(), 2);
        assert_eq!(three[0], -three[1]);
    }

    #[test]
    fn hashed_chunks_are_contiguous_per_shard() {
        let key = ShardKey::parse(&doc! {"x": "hashed"}).unwrap();
        let shards = vec!["shard0".to_string(), "shard1".to_string()];
        let map = ChunkMap::hashed(&key, &shards, "shard0", 0, ts());
        let owners: Vec<&str> = map.chunks().iter().map(|c| c.shard.as_str()).collect();
        assert_eq!(owners, ["shard0", "shard0", "shard1", "shard1"]);
        assert_eq!(map.chunks()[0].min, doc! {"x": Bson::MinKey});
        assert_eq!(
            map.chunks()[1].min,
            doc! {"x": -4_611_686_018_427_387_902i64}
        );
        assert_eq!(map.chunks()[3].max, doc! {"x": Bson::MaxKey});
        let versions: Vec<(u32, u32)> = map.chunks().iter().map(|c| c.version).collect();
        assert_eq!(versions, [(1, 0), (1, 1), (1, 2), (1, 3)]);
    }

    #[test]
    fn split_and_migrate() {
        let key = ShardKey::parse(&doc! {"a": 1}).unwrap();
        let mut map = ChunkMap::single(&key, "shard0", ts());
        map.split(&key, &doc! {"a": 10}).unwrap();
        assert_eq!(map.chunks().len(), 2);
        assert_eq!(map.split(&key, &doc! {"a": 10}).unwrap_err().code, 0);
        let k = key.encode(&doc! {"a": 50});
        assert_eq!(map.index_of(&k), 1);
        map.migrate(1, "shard1", ts());
        assert_eq!(map.find(&k).shard, "shard1");
        assert_eq!(map.find(&key.encode(&doc! {"a": 5})).shard, "shard0");
        assert_eq!(map.version(), (2, 1));
        assert_eq!(map.shards(), ["shard0", "shard1"]);
        assert!(
            map.exact(&key, &doc! {"a": 10}, &doc! {"a": Bson::MaxKey})
                .is_some()
        );
    }
}
