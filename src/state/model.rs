//! The content of `migration.lock`: everything a killed `apply` needs to resume, and everything
//! `status` shows. Never a secret: clusters are identified by redacted connection strings.

use std::collections::HashSet;

use bson::{Bson, Document, Timestamp};
use serde::{Deserialize, Serialize};

use crate::cluster::{CollectionKind, document_serde, option_document_serde, timestamp_serde};
use crate::namespace::Namespace;

/// The lockfile format this build writes and reads. Bump it when adding a field whose absence
/// would change what an older file means.
pub const LOCKFILE_FORMAT_VERSION: u32 = 1;

/// Where a migration is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Creating destination namespaces and opening the change stream.
    Preparing,
    /// Copying documents (changes are spooled meanwhile).
    Copying,
    /// The initial copy is complete; change application comes next.
    Copied,
    /// Applying the spooled and live changes until the lag is small.
    CatchingUp,
    /// Lag under `max_lag`: waiting for the cutover approval within the window.
    Ready,
    /// Writes stopped; draining the last changes.
    CuttingOver,
    /// Verifying the destination.
    Verifying,
    /// Done: the destination is the new primary copy.
    Committed,
    /// Stopped by `mongoshift abort`.
    Aborted,
    /// The cutover window ended without a cutover.
    Expired,
}

impl Phase {
    /// The name used in files and output.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Preparing => "preparing",
            Self::Copying => "copying",
            Self::Copied => "copied",
            Self::CatchingUp => "catching_up",
            Self::Ready => "ready",
            Self::CuttingOver => "cutting_over",
            Self::Verifying => "verifying",
            Self::Committed => "committed",
            Self::Aborted => "aborted",
            Self::Expired => "expired",
        }
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A cluster time, `{t, i}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ClusterTime(#[serde(with = "timestamp_serde")] pub Timestamp);

impl ClusterTime {
    /// Seconds since the epoch.
    pub fn secs(self) -> u32 {
        self.0.time
    }
}

/// How a cluster was identified when the migration started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterIdentity {
    /// The connection string, redacted.
    pub uri: String,
    /// Topology, e.g. `replica set rs0`.
    pub topology: String,
    /// Server version.
    pub version: String,
}

/// A change-stream resume token (`{_data: ...}`), kept exactly as the server gave it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResumeToken(#[serde(with = "document_serde")] pub Document);

impl ResumeToken {
    /// The cluster time the token points at, decoded from its KeyString prefix (`82` + 4 bytes
    /// of seconds + 4 bytes of increment, big-endian), as MongoDB's resume-token decoders do.
    pub fn cluster_time(&self) -> Option<ClusterTime> {
        let hex = self.0.get_str("_data").ok()?;
        if hex.len() < 18 || !hex[..2].eq_ignore_ascii_case("82") {
            return None;
        }
        let time = u32::from_str_radix(hex.get(2..10)?, 16).ok()?;
        let increment = u32::from_str_radix(hex.get(10..18)?, 16).ok()?;
        Some(ClusterTime(Timestamp { time, increment }))
    }
}

/// A position in the spool: segment number and byte offset.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SpoolPosition {
    /// Segment number (file `segment-NNNNNN.bson`).
    pub segment: u64,
    /// Byte offset inside it.
    pub offset: u64,
}

/// The change stream and its on-disk spool.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StreamState {
    /// Resume after this token: everything before it is durably in the spool.
    pub resume_token: Option<ResumeToken>,
    /// The newest source cluster time seen, events and idle high-water marks alike.
    pub high_water: Option<ClusterTime>,
    /// Everything up to here is durably written (fsynced) to the spool.
    pub spooled: SpoolPosition,
    /// Events spooled in total.
    pub events_spooled: u64,
    /// Bytes spooled in total.
    pub bytes_spooled: u64,
    /// Cluster time of the newest spooled event.
    pub last_event: Option<ClusterTime>,
}

/// One `_id` range of a collection, copied and checkpointed separately.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartitionState {
    /// Position in the collection, from 0.
    pub id: u32,
    /// Inclusive lower `_id` bound (`None`: from the smallest `_id`).
    pub min: Option<IdBound>,
    /// Exclusive upper `_id` bound (`None`: to the largest `_id`).
    pub max: Option<IdBound>,
    /// The last `_id` copied and acknowledged; a resume restarts from it (inclusive in the
    /// query, and that first document is skipped).
    pub resume_from: Option<IdBound>,
    /// Copied completely.
    pub done: bool,
    /// Documents copied.
    pub documents: u64,
    /// Bytes copied.
    pub bytes: u64,
    /// For a sharded source collection: the run of chunks this partition reads (then `min`,
    /// `max` and `resume_from` are unused, and a resumed partition is read again from its
    /// start).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub range: Option<KeyRange>,
}

impl PartitionState {
    /// An `_id` range with nothing copied yet.
    pub fn id_range(id: u32, min: Option<IdBound>, max: Option<IdBound>) -> Self {
        Self {
            id,
            min,
            max,
            resume_from: None,
            done: false,
            documents: 0,
            bytes: 0,
            range: None,
        }
    }

    /// A run of chunks of a sharded source with nothing copied yet.
    pub fn key_range(id: u32, range: KeyRange) -> Self {
        Self {
            range: Some(range),
            ..Self::id_range(id, None, None)
        }
    }
}

/// A run of consecutive chunks of a sharded source collection, all owned by one shard, read
/// through the index that supports the shard key (`hint` with `min`/`max` in that index's key
/// space: hashed fields as their hashes).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyRange {
    /// The source shard that owns the chunks.
    pub shard: String,
    /// The key pattern of the index the range is read through.
    #[serde(with = "document_serde")]
    pub index: Document,
    /// Inclusive lower bound in that index's key space (`None`: from its start).
    #[serde(default, with = "option_document_serde")]
    pub min: Option<Document>,
    /// Exclusive upper bound (`None`: to its end).
    #[serde(default, with = "option_document_serde")]
    pub max: Option<Document>,
    /// How many chunks the range covers.
    pub chunks: u32,
}

/// A source shard's part of a collection, estimated when the migration started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardEstimate {
    /// The shard id.
    pub shard: String,
    /// Documents.
    pub documents: u64,
    /// Bytes.
    pub bytes: u64,
}

/// An `_id` value, stored as `{_id: value}` in canonical Extended JSON so every BSON type keeps
/// its exact type and order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IdBound(#[serde(with = "document_serde")] pub Document);

impl IdBound {
    /// Wraps an `_id` value.
    pub fn new(id: Bson) -> Self {
        let mut doc = Document::new();
        doc.insert("_id", id);
        Self(doc)
    }

    /// The `{_id: value}` document used as `min`/`max` of a `find`.
    pub fn as_document(&self) -> &Document {
        &self.0
    }

    /// The `_id` value (absent only from a hand-edited lockfile).
    pub fn id(&self) -> Option<&Bson> {
        self.0.get("_id")
    }

    /// The `_id` as [`id_key`] bytes.
    pub fn key(&self) -> Vec<u8> {
        self.id().map_or_else(Vec::new, id_key)
    }
}

/// An `_id`'s identity as bytes, for sets and maps (`Bson` has no `Hash`): the BSON of
/// `{_id: value}`, so values of different types differ; an `_id` that does not encode (not
/// one a server sends) falls back to its debug text.
pub fn id_key(id: &Bson) -> Vec<u8> {
    let mut d = bson::RawDocumentBuf::new();
    match bson::RawBson::try_from(id.clone()) {
        Ok(raw) => {
            d.append(bson::cstr!("_id"), raw);
            d.into_bytes()
        }
        Err(_) => format!("{id:?}").into_bytes(),
    }
}

/// The `_id` value in relaxed Extended JSON, for messages.
impl std::fmt::Display for IdBound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.id() {
            Some(id) => write!(f, "{}", id.clone().into_relaxed_extjson()),
            None => f.write_str("(no _id)"),
        }
    }
}

/// Progress of one collection's copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CopyStatus {
    /// Not started.
    Pending,
    /// Partitions decided; copying.
    Copying,
    /// Every partition done.
    Done,
    /// Nothing to copy (views).
    NotApplicable,
}

/// One migrated namespace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NamespaceState {
    /// Source name.
    pub source: Namespace,
    /// Destination name.
    pub destination: Namespace,
    /// Collection or view.
    pub kind: CollectionKind,
    /// This migration created the destination namespace (so `destroy` may drop it). Set before
    /// the `create` command is sent, so a crash in between still counts it as ours.
    pub created: bool,
    /// Secondary indexes built.
    pub indexes_built: bool,
    /// Copy status.
    pub copy: CopyStatus,
    /// Estimated documents at the start.
    pub documents_estimate: u64,
    /// Estimated bytes at the start.
    pub bytes_estimate: u64,
    /// Partitions (empty until decided).
    pub partitions: Vec<PartitionState>,
    /// Documents found already on the destination after a crash (sent again because the crash
    /// came between their insert and its checkpoint).
    pub duplicates: u64,
    /// The source's shard key, when the source collection is sharded.
    #[serde(
        default,
        with = "option_document_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub source_shard_key: Option<Document>,
    /// The source's documents and bytes per shard when the migration started (sharded source).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub source_shards: Vec<ShardEstimate>,
    /// The shard key this migration gave the destination collection. Recorded before the
    /// `shardCollection` command, so a resume knows it was requested.
    #[serde(
        default,
        with = "option_document_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub shard_key: Option<Document>,
}

impl NamespaceState {
    /// Documents copied so far.
    pub fn documents_copied(&self) -> u64 {
        self.partitions.iter().map(|p| p.documents).sum()
    }

    /// Bytes copied so far.
    pub fn bytes_copied(&self) -> u64 {
        self.partitions.iter().map(|p| p.bytes).sum()
    }
}

/// When things happened (RFC 3339).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timestamps {
    /// The first apply started.
    pub started: Option<String>,
    /// The copy started.
    pub copy_started: Option<String>,
    /// The copy finished.
    pub copy_finished: Option<String>,
}

/// Changes applied, by kind.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeCounts {
    /// Inserts.
    pub inserts: u64,
    /// Updates.
    pub updates: u64,
    /// Replacements.
    pub replaces: u64,
    /// Deletes.
    pub deletes: u64,
    /// DDL operations.
    pub ddl: u64,
}

impl ChangeCounts {
    /// All changes.
    pub fn total(&self) -> u64 {
        self.inserts + self.updates + self.replaces + self.deletes + self.ddl
    }

    /// Adds another count.
    pub fn add(&mut self, other: &ChangeCounts) {
        self.inserts += other.inserts;
        self.updates += other.updates;
        self.replaces += other.replaces;
        self.deletes += other.deletes;
        self.ddl += other.ddl;
    }
}

/// A document a unique index refused to write for now (a change still in flight elsewhere);
/// it is written again from the source's current version until it goes through.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingDocument {
    /// Destination namespace.
    pub namespace: Namespace,
    /// Source namespace.
    pub source: Namespace,
    /// The document's `_id`.
    pub id: IdBound,
    /// The server's message (names the index and key).
    pub reason: String,
}

impl PendingDocument {
    /// Adds each of `documents` to `pending` unless that document (namespace and `_id`) is
    /// there, in one pass: the list is rebuilt after every retry round, so a scan of it per
    /// document would be quadratic in the documents waiting.
    ///
    /// Documents are the same when their namespace and the BSON bytes of their `_id` are (so
    /// `0.0` and `-0.0`, one `_id` to the server, are two entries; each is written again from
    /// the source's current version, which is harmless).
    pub fn merge(
        pending: &mut Vec<PendingDocument>,
        documents: impl IntoIterator<Item = PendingDocument>,
    ) {
        let mut documents = documents.into_iter().peekable();
        if documents.peek().is_none() {
            return;
        }
        let key = |d: &PendingDocument| (d.namespace.clone(), d.id.key());
        let mut seen: HashSet<(Namespace, Vec<u8>)> = pending.iter().map(key).collect();
        for document in documents {
            if seen.insert(key(&document)) {
                pending.push(document);
            }
        }
    }
}

/// Change application.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SyncState {
    /// Everything in the spool before here is applied.
    pub applied: SpoolPosition,
    /// The source cluster time the destination reflects (the last applied event, or the
    /// reader's high-water mark once every spooled event is applied).
    pub applied_time: Option<ClusterTime>,
    /// Changes applied, by kind.
    pub counts: ChangeCounts,
    /// Documents waiting to be written again.
    pub pending: Vec<PendingDocument>,
    /// Destination namespaces that a replicated DDL event being applied may have created
    /// (a create, or a rename's target): recorded before the event is applied and cleared once
    /// its effect is, so that a crash in between leaves them owned by the migration rather
    /// than conflicts on resume.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ddl_targets: Vec<Namespace>,
}

/// The source write block of the cutover.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WriteBlock {
    /// Not enabled (or released).
    #[default]
    Off,
    /// Being enabled: it may be on; release it on any way out.
    Requested,
    /// Enabled.
    On,
}

/// Who approved the cutover, how and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    /// `file`, `flag` or `auto`.
    pub via: String,
    /// Who (from the approval file, or the user running apply).
    pub by: String,
    /// When (RFC 3339).
    pub at: String,
}

/// The outcome of the cutover's verification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerificationSummary {
    /// `full`, `counts` or `none`.
    pub mode: String,
    /// True when source and destination agreed.
    pub passed: bool,
    /// Differences found.
    pub differences: u64,
    /// When it ran (RFC 3339).
    pub at: String,
}

/// The cutover: readiness, window, approval, write stop, commit.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CutoverState {
    /// When the destination first caught up (the window starts).
    pub ready_at: Option<String>,
    /// When the window ends.
    pub deadline: Option<String>,
    /// Extensions granted (`mongoshift extend`), in seconds.
    pub extensions: Vec<u64>,
    /// The approval.
    pub approval: Option<Approval>,
    /// When writes stopped.
    pub writes_stopped_at: Option<String>,
    /// The source write block.
    pub write_block: WriteBlock,
    /// Every change up to this source time must be applied before the commit.
    pub final_time: Option<ClusterTime>,
    /// The verification.
    pub verification: Option<VerificationSummary>,
    /// When the migration committed.
    pub committed_at: Option<String>,
    /// Notification events already sent (each is sent once).
    pub notified: Vec<String>,
    /// Why the last attempt failed, if it did.
    pub failure: Option<String>,
}

/// Collections and views, counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CollectionKindCount {
    /// Collections.
    pub collections: u64,
    /// Views.
    pub views: u64,
}

/// The whole lockfile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MigrationState {
    /// [`LOCKFILE_FORMAT_VERSION`].
    pub format_version: u32,
    /// The mongoshift version that last wrote it.
    pub tool_version: String,
    /// A random id fixed at the first apply: a lockfile from another migration is refused.
    pub lineage: String,
    /// Incremented on every write.
    pub serial: u64,
    /// The migration's name.
    pub migration: String,
    /// Fingerprint of the configuration the migration started with.
    pub config_fingerprint: String,
    /// The source.
    pub source: ClusterIdentity,
    /// The destination.
    pub destination: ClusterIdentity,
    /// Where the migration is.
    pub phase: Phase,
    /// T0: the source cluster time the change stream starts at; the copy starts after it.
    pub start_time: Option<ClusterTime>,
    /// The change stream and spool.
    pub stream: StreamState,
    /// Destination namespaces dropped by `clear_destination` (done once).
    pub dropped: Vec<Namespace>,
    /// Every migrated namespace.
    pub namespaces: Vec<NamespaceState>,
    /// Timestamps.
    pub timestamps: Timestamps,
    /// Change application.
    #[serde(default)]
    pub sync: SyncState,
    /// The cutover.
    #[serde(default)]
    pub cutover: CutoverState,
    /// Indexes this migration built on the destination.
    #[serde(default)]
    pub indexes_created: u64,
}

impl MigrationState {
    /// The namespace entry for a destination name.
    pub fn namespace_mut(&mut self, destination: &Namespace) -> Option<&mut NamespaceState> {
        self.namespaces
            .iter_mut()
            .find(|n| &n.destination == destination)
    }

    /// Destination namespaces this migration created.
    pub fn owned(&self) -> std::collections::BTreeSet<Namespace> {
        self.namespaces
            .iter()
            .filter(|n| n.created)
            .map(|n| n.destination.clone())
            .chain(self.sync.ddl_targets.iter().cloned())
            .collect()
    }

    /// Collections and views this migration created.
    pub fn created_counts(&self) -> CollectionKindCount {
        let created = self.namespaces.iter().filter(|n| n.created);
        let (views, collections): (Vec<_>, Vec<_>) =
            created.partition(|n| n.kind == CollectionKind::View);
        CollectionKindCount {
            collections: collections.len() as u64,
            views: views.len() as u64,
        }
    }

    /// Documents copied so far, all namespaces.
    pub fn documents_copied(&self) -> u64 {
        self.namespaces
            .iter()
            .map(NamespaceState::documents_copied)
            .sum()
    }

    /// Bytes copied so far, all namespaces.
    pub fn bytes_copied(&self) -> u64 {
        self.namespaces
            .iter()
            .map(NamespaceState::bytes_copied)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_time_is_decoded_from_the_keystring_prefix() {
        // The high-water-mark token from MongoDB's resume-token decoder tests.
        let token = ResumeToken(bson::doc! { "_data": "82612F653E000000022B0229296E04" });
        assert_eq!(
            token.cluster_time(),
            Some(ClusterTime(Timestamp {
                time: 1_630_496_062,
                increment: 2
            }))
        );
        assert_eq!(
            ResumeToken(bson::doc! { "_data": "zz" }).cluster_time(),
            None
        );
        assert_eq!(ResumeToken(bson::doc! {}).cluster_time(), None);
    }
}
