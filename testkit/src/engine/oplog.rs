//! The logical clock and the in-memory oplog: the single commit path of every write.
//!
//! Every mutation (document writes and DDL) is committed through [`Oplog::append`], which
//! takes the next cluster time from the one logical clock and appends an entry. Change streams,
//! `local.oplog.rs`, `operationTime` and `$clusterTime` all read from here, so they can never
//! disagree. The clock and the entries live under one mutex: an entry with time T is visible
//! exactly when the clock has reached T, so a reader that saw clock value T has seen every entry
//! up to T (no holes). Retention is a count (`oplog_max_events`); dropping old entries is what
//! makes a resume fail with `ChangeStreamHistoryLost`.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bson::{DateTime, Document, RawDocumentBuf, Timestamp};
use tokio::sync::watch;

use crate::engine::namespace::Namespace;

/// Packs a timestamp into a `u64` that orders like the timestamp (seconds, then increment).
pub fn ts_to_u64(ts: Timestamp) -> u64 {
    (u64::from(ts.time) << 32) | u64::from(ts.increment)
}

/// The inverse of [`ts_to_u64`].
pub fn u64_to_ts(v: u64) -> Timestamp {
    Timestamp {
        time: (v >> 32) as u32,
        increment: (v & 0xFFFF_FFFF) as u32,
    }
}

/// The transaction a committed entry belongs to (its change events carry these).
#[derive(Debug, Clone, PartialEq)]
pub struct TxnInfo {
    /// The session id document `{id: UUID}`.
    pub lsid: Document,
    /// The transaction number within the session.
    pub txn_number: i64,
}

/// One data or catalog change inside an oplog entry.
#[derive(Debug, Clone)]
pub enum OplogOp {
    /// A document was inserted.
    Insert {
        /// Where.
        ns: Namespace,
        /// The collection incarnation.
        uuid: bson::Uuid,
        /// The document as stored.
        doc: Arc<RawDocumentBuf>,
    },
    /// A document was updated (operator update) or replaced.
    Update {
        /// Where.
        ns: Namespace,
        /// The collection incarnation.
        uuid: bson::Uuid,
        /// The document before the write (pre-image; also the input of `updateDescription`).
        before: Arc<RawDocumentBuf>,
        /// The document after the write (post-image).
        after: Arc<RawDocumentBuf>,
        /// True for a replacement (`replace` event), false for an operator/pipeline update.
        replacement: bool,
        /// Whether the collection had `changeStreamPreAndPostImages` enabled at write time
        /// (mongod only records images then).
        images: bool,
        /// The `updateDescription` the update operators logged (`None` for replacements and
        /// when it must be computed from the two documents).
        description: Option<crate::query::diff::UpdateDescription>,
    },
    /// A document was deleted.
    Delete {
        /// Where.
        ns: Namespace,
        /// The collection incarnation.
        uuid: bson::Uuid,
        /// The document before the delete.
        before: Arc<RawDocumentBuf>,
        /// Whether the collection had pre-images enabled at write time.
        images: bool,
    },
    /// A catalog change.
    Ddl(DdlOp),
    /// A no-op (mongod's periodic "noop" that keeps the oplog moving while idle).
    Noop,
}

/// Catalog changes, with what change streams need to describe them.
#[derive(Debug, Clone)]
pub enum DdlOp {
    /// A collection or view was created.
    Create {
        /// Where.
        ns: Namespace,
        /// The new incarnation (views have one too).
        uuid: bson::Uuid,
        /// The creation options (what `listCollections` returns as `options`).
        options: Document,
        /// The `_id` index spec for collections; `None` for views.
        id_index: Option<Document>,
        /// "collection", "view" or "timeseries".
        kind: &'static str,
    },
    /// A collection or view was dropped.
    Drop {
        /// Where.
        ns: Namespace,
        /// The dropped incarnation.
        uuid: bson::Uuid,
        /// True when a view was dropped.
        view: bool,
    },
    /// A collection was renamed.
    Rename {
        /// The old name.
        from: Namespace,
        /// The new name.
        to: Namespace,
        /// The renamed collection's incarnation (before the rename).
        uuid: bson::Uuid,
        /// The incarnation of a target that `dropTarget` dropped.
        drop_target: Option<bson::Uuid>,
    },
    /// A database was dropped (its collections' `Drop`s are committed before it).
    DropDatabase {
        /// The database.
        db: String,
    },
    /// Indexes were created.
    CreateIndexes {
        /// Where.
        ns: Namespace,
        /// The collection incarnation.
        uuid: bson::Uuid,
        /// The created index specs (`{v, key, name, ...}`).
        indexes: Vec<Document>,
    },
    /// Indexes were dropped.
    DropIndexes {
        /// Where.
        ns: Namespace,
        /// The collection incarnation.
        uuid: bson::Uuid,
        /// The dropped index specs.
        indexes: Vec<Document>,
    },
    /// A collection was sharded (mongos mode): mongod logs a no-op whose `o2` describes it.
    ShardCollection {
        /// Where.
        ns: Namespace,
        /// The collection incarnation.
        uuid: bson::Uuid,
        /// `{shardKey, unique, numInitialChunks, presplitHashedZones}` (the
        /// `operationDescription` of the `shardCollection` event).
        description: Document,
    },
    /// `collMod` changed options.
    Modify {
        /// Where.
        ns: Namespace,
        /// The collection incarnation.
        uuid: bson::Uuid,
        /// What changed (the `operationDescription` of the `modify` event).
        description: Document,
        /// The options before the change (`stateBeforeChange`).
        state_before: Document,
    },
}

/// One committed oplog entry. A transaction commits several ops in one entry, sharing its
/// cluster time (their change events differ by `txnOpIndex`).
#[derive(Debug, Clone)]
pub struct OplogEntry {
    /// The entry's unique cluster time.
    pub ts: Timestamp,
    /// Wall-clock time of the commit (`wall` in the oplog, `wallTime` in events).
    pub wall: DateTime,
    /// What changed, in order.
    pub ops: Vec<OplogOp>,
    /// Set when the entry is a committed multi-document transaction.
    pub txn: Option<TxnInfo>,
}

/// The mutable part of the oplog, guarded by one mutex.
#[derive(Debug)]
struct OplogState {
    /// The last cluster time handed out.
    last: Timestamp,
    /// Retained entries in cluster-time order.
    entries: VecDeque<Arc<OplogEntry>>,
    /// The cluster time of the newest entry dropped by retention, if any: history up to and
    /// including it is gone.
    truncated_through: Option<Timestamp>,
}

/// The logical clock plus the retained oplog entries.
#[derive(Debug)]
pub struct Oplog {
    /// Clock and entries; a std mutex because it is never held across an `.await`.
    state: Mutex<OplogState>,
    /// The last cluster time, readable without the lock (every reply reads it).
    last: AtomicU64,
    /// How many entries to keep.
    max_events: usize,
    /// Publishes the newest cluster time; awaitData getMores wait on it.
    notify: watch::Sender<u64>,
}

impl Oplog {
    /// A fresh oplog whose clock starts at the current wall-clock second.
    pub fn new(max_events: usize) -> Oplog {
        let now = now_secs();
        let last = Timestamp {
            time: now,
            increment: 0,
        };
        let (notify, _) = watch::channel(ts_to_u64(last));
        Oplog {
            state: Mutex::new(OplogState {
                last,
                entries: VecDeque::new(),
                truncated_through: None,
            }),
            last: AtomicU64::new(ts_to_u64(last)),
            max_events: max_events.max(1),
            notify,
        }
    }

    fn lock(&self) -> MutexGuard<'_, OplogState> {
        // A panic while holding this lock cannot leave the state half-updated in a way that
        // matters more than losing the server, so recover the guard instead of propagating.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The current cluster time (the time of the last commit).
    pub fn cluster_time(&self) -> Timestamp {
        u64_to_ts(self.last.load(Ordering::Acquire))
    }

    /// Commits `ops` as one entry with a fresh, unique cluster time and returns that time.
    ///
    /// Callers hold the write lock of the collection they changed, so the entry order matches
    /// the order in which readers of that collection see the changes.
    pub fn append(&self, ops: Vec<OplogOp>, txn: Option<TxnInfo>) -> Timestamp {
        let mut state = self.lock();
        let now = now_secs();
        let ts = if now > state.last.time {
            Timestamp {
                time: now,
                increment: 1,
            }
        } else {
            Timestamp {
                time: state.last.time,
                increment: state.last.increment.saturating_add(1),
            }
        };
        state.last = ts;
        state.entries.push_back(Arc::new(OplogEntry {
            ts,
            wall: DateTime::now(),
            ops,
            txn,
        }));
        while state.entries.len() > self.max_events {
            if let Some(old) = state.entries.pop_front() {
                state.truncated_through = Some(old.ts);
            }
        }
        self.last.store(ts_to_u64(ts), Ordering::Release);
        drop(state);
        // Waking waiters takes the channel's locks even when nobody waits, and a destination
        // written at full speed has no awaitData reader. Skipping is safe: a getMore subscribes
        // before it reads the entries under the lock above, so one that subscribed after this
        // check reads this entry itself.
        if self.notify.receiver_count() > 0 {
            self.notify.send_replace(ts_to_u64(ts));
        }
        ts
    }

    /// Entries with cluster time `>= from`, at most `limit` of them, plus the cluster time up to
    /// which the scan is complete (see [`Oplog::entries_after`]).
    pub fn entries_from(&self, from: Timestamp, limit: usize) -> (Vec<Arc<OplogEntry>>, Timestamp) {
        let state = self.lock();
        let start = state.entries.partition_point(|e| e.ts < from);
        let out: Vec<_> = state
            .entries
            .iter()
            .skip(start)
            .take(limit)
            .cloned()
            .collect();
        let scanned_through = if out.len() < limit {
            state.last
        } else {
            out.last().map(|e| e.ts).unwrap_or(state.last)
        };
        (out, scanned_through)
    }

    /// Subscribes to clock advances (for awaitData waits).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.notify.subscribe()
    }

    /// Entries with cluster time strictly greater than `after`, at most `limit` of them, plus
    /// the cluster time up to which the scan is complete (the clock at the time of the scan
    /// when fewer than `limit` entries were returned).
    pub fn entries_after(
        &self,
        after: Timestamp,
        limit: usize,
    ) -> (Vec<Arc<OplogEntry>>, Timestamp) {
        let state = self.lock();
        let start = state.entries.partition_point(|e| e.ts <= after);
        let out: Vec<_> = state
            .entries
            .iter()
            .skip(start)
            .take(limit)
            .cloned()
            .collect();
        let scanned_through = if out.len() < limit {
            state.last
        } else {
            out.last().map(|e| e.ts).unwrap_or(state.last)
        };
        (out, scanned_through)
    }

    /// True when entries with cluster time `>= from` may have been dropped by retention.
    pub fn history_lost_from(&self, from: Timestamp) -> bool {
        let state = self.lock();
        matches!(state.truncated_through, Some(t) if t >= from)
    }

    /// True when retention dropped entries a cursor positioned at `ts` has not read yet:
    /// anything newer than `ts`, or the entry at `ts` itself when the cursor stopped inside it
    /// (`entry_fully_read` false). A live change stream that falls this far behind has lost
    /// history, as a mongod cursor whose oplog position was deleted has.
    pub fn history_lost_after(&self, ts: Timestamp, entry_fully_read: bool) -> bool {
        let state = self.lock();
        matches!(state.truncated_through, Some(t) if t > ts || (t == ts && !entry_fully_read))
    }

    /// The oldest and newest retained entries (for `local.oplog.rs` and replication info).
    pub fn bounds(&self) -> (Option<Arc<OplogEntry>>, Option<Arc<OplogEntry>>) {
        let state = self.lock();
        (
            state.entries.front().cloned(),
            state.entries.back().cloned(),
        )
    }

    /// The newest entries with cluster time before `before` (any when `None`), at most `limit`
    /// of them, oldest first.
    pub fn entries_before(&self, before: Option<Timestamp>, limit: usize) -> Vec<Arc<OplogEntry>> {
        let state = self.lock();
        let end = before.map_or(state.entries.len(), |b| {
            state.entries.partition_point(|e| e.ts < b)
        });
        let start = end.saturating_sub(limit);
        state.entries.range(start..end).cloned().collect()
    }

    /// How many entries are retained.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// True when no entry is retained.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Seconds since the Unix epoch, saturating into `u32` as BSON timestamps require.
fn now_secs() -> u32 {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    u32::try_from(secs).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_times_are_unique_and_increasing() {
        let oplog = Oplog::new(1000);
        let mut last = oplog.cluster_time();
        for _ in 0..500 {
            let ts = oplog.append(vec![OplogOp::Noop], None);
            assert!(ts > last);
            assert_eq!(oplog.cluster_time(), ts);
            last = ts;
        }
    }

    #[test]
    fn retention_drops_the_oldest_and_reports_history_loss() {
        let oplog = Oplog::new(3);
        let first = oplog.append(vec![OplogOp::Noop], None);
        let second = oplog.append(vec![OplogOp::Noop], None);
        assert!(!oplog.history_lost_from(first));
        oplog.append(vec![OplogOp::Noop], None);
        oplog.append(vec![OplogOp::Noop], None);
        assert_eq!(oplog.len(), 3);
        assert!(oplog.history_lost_from(first));
        assert!(!oplog.history_lost_from(second));
        let (entries, through) = oplog.entries_after(first, 10);
        assert_eq!(entries.len(), 3);
        assert_eq!(through, oplog.cluster_time());
        let (entries, through) = oplog.entries_after(first, 2);
        assert_eq!(entries.len(), 2);
        assert_eq!(through, entries[1].ts);
    }
}
