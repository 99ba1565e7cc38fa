//! The `migration.toml` file format, exactly as written by users.
//!
//! These types are the serde and JSON Schema view of the file: their doc comments are the
//! reference users see in their editor (through `schemas/migration.schema.json`) and in
//! `mongoshift schema`. They are deliberately lenient about *presence* (required tables are
//! `Option`s marked required only in the schema) so that loading can report every problem at
//! once; [`super::validate`] turns them into the checked [`super::Config`].

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use schemars::JsonSchema;
use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::units::{ByteSize, HumanDuration};

/// The current version of the `migration.toml` format.
pub const FORMAT_VERSION: u32 = 1;

/// A mongoshift migration: where data comes from, where it goes, how it is copied and how the
/// cutover is approved.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "mongoshift migration.toml")]
pub struct MigrationFile {
    /// Version of the `migration.toml` format. Always `1`.
    #[schemars(required, range(min = 1, max = 1))]
    pub version: Option<u32>,

    /// A short name for this migration, used in reports, notifications and logs. Letters,
    /// digits, `-`, `_` and `.`; defaults to `migration`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,

    /// The cluster data is copied from: a replica set or a sharded cluster (through `mongos`).
    /// It is only read, except for the optional write block during cutover.
    #[schemars(required)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<EndpointSpec>,

    /// The cluster data is copied to.
    #[schemars(required)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination: Option<EndpointSpec>,

    /// What is copied and how.
    #[serde(default)]
    pub options: OptionsSpec,

    /// When and how the switch to the destination happens.
    #[serde(default)]
    pub cutover: CutoverSpec,
}

/// How to reach one cluster. Give exactly one of `uri`, `uri_env` and `uri_file`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EndpointSpec {
    /// The connection string (`mongodb://...` or `mongodb+srv://...`). Keep passwords out of the
    /// file: write `${env:NAME}` or `${file:PATH}` where the secret goes, or use `uri_env` /
    /// `uri_file`. Credentials are redacted (`****`) in every output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,

    /// Name of an environment variable that holds the whole connection string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri_env: Option<String>,

    /// Path of a file that holds the connection string (relative to this file; surrounding
    /// whitespace is ignored), e.g. a mounted secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri_file: Option<PathBuf>,

    /// PEM file of the certificate authorities that sign the cluster's TLS certificates
    /// (relative to this file). Setting it turns TLS on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_ca_file: Option<PathBuf>,

    /// PEM file with the client certificate and its private key, for clusters that require
    /// client certificates (x.509 authentication). Relative to this file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_certificate_key_file: Option<PathBuf>,

    /// Accept TLS certificates that do not verify. Only for test clusters: it disables the
    /// protection TLS gives against someone in the middle.
    #[serde(default)]
    pub tls_allow_invalid_certificates: bool,
}

/// What is copied and how.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OptionsSpec {
    /// Namespaces to migrate, as globs on `database.collection` (`"shop.*"`, `"*.orders"`,
    /// `"analytics.events"`); a name without a dot means a whole database. `*` matches any run
    /// of characters (dots included, in the collection part), `?` one character; there is no
    /// escape, so a `*` or `?` in a name is matched by a wildcard. Empty: every user namespace.
    /// System databases (`admin`, `local`, `config`) and `system.*` collections are never
    /// migrated.
    #[serde(default)]
    pub include: Vec<String>,

    /// Namespaces to leave out, as globs like `include`. Applied after `include`.
    #[serde(default)]
    pub exclude: Vec<String>,

    /// Renames from the source name to the destination name: databases (`"shop" =
    /// "shop_v2"`) or single namespaces (`"shop.orders" = "sales.orders"`). A namespace rule wins
    /// over a database rule. Change events are renamed the same way.
    #[serde(default)]
    pub rename: BTreeMap<String, String>,

    /// Drop destination namespaces that conflict with migrated ones before copying. Off by
    /// default: a conflict is an error. `plan` lists every namespace that would be dropped.
    #[serde(default)]
    pub clear_destination: bool,

    /// When to build secondary indexes on the destination.
    #[serde(default)]
    pub indexes: IndexPolicy,

    /// What the cutover verifies before the migration is committed.
    #[serde(default)]
    pub verify: VerifyPolicy,

    /// What to do when a DDL operation (create, drop, rename, index changes, collMod) happens on
    /// the source during the migration.
    #[serde(default)]
    pub ddl: DdlPolicy,

    /// How source updates are applied to the destination.
    #[serde(default)]
    pub update_mode: UpdateMode,

    /// Write concern of every write to the destination: `"majority"` (default), a number of
    /// nodes (at least 1: unacknowledged writes are refused), or a table
    /// `{ w = "majority", journal = true, timeout = "30s" }`.
    #[serde(default)]
    pub write_concern: WriteConcernSpec,

    /// Tuning of the initial copy.
    #[serde(default)]
    pub copy: CopySpec,

    /// How long a failing operation is retried (elections, dropped connections, time limits,
    /// write conflicts) before `apply` or `verify` stops with the error and a resumable state.
    /// The default, one minute, outlasts a replica-set election.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = "1m"))]
    pub retry_for: Option<HumanDuration>,

    /// Sharding of destination collections.
    #[serde(default)]
    pub sharding: ShardingSpec,
}

/// When secondary indexes are built on the destination.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum IndexPolicy {
    /// Build them before copying (slower copy). A document a unique index refuses because
    /// another document held its key when the copy read it is written by change application,
    /// once that document's change is applied.
    BeforeCopy,
    /// Build them after the copy and before cutover is possible (fastest; the default).
    #[default]
    AfterCopy,
    /// Do not build secondary indexes (you manage them yourself).
    Skip,
}

/// What the cutover verifies.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum VerifyPolicy {
    /// Counts, a hash of every document, indexes and collection options (the default).
    #[default]
    Full,
    /// Document counts only.
    Counts,
    /// No verification (not recommended).
    None,
}

/// What happens to source DDL during the migration.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DdlPolicy {
    /// Replicate it to the destination, in order with the data changes (the default).
    #[default]
    Replicate,
    /// Stop the migration with an error that names the operation.
    Fail,
}

/// How updates are applied.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum UpdateMode {
    /// Replace the destination document with the full document looked up on the source when the
    /// change is read. Always converges (the default).
    #[default]
    FullDocument,
    /// Apply the change's update description (`$set`, `$unset`, array truncation). Less data
    /// read from the source; needs the document to exist on the destination.
    Delta,
}

/// The write concern of destination writes.
#[derive(Debug, Clone, PartialEq, Eq, JsonSchema)]
#[schemars(untagged)]
pub enum WriteConcernSpec {
    /// `"majority"` or the name of a custom write-concern tag.
    Tag(String),
    /// A number of nodes that must acknowledge each write.
    Nodes(u32),
    /// The full form.
    Full(WriteConcernTable),
}

impl Default for WriteConcernSpec {
    fn default() -> Self {
        Self::Tag("majority".to_owned())
    }
}

/// The table form of `write_concern`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WriteConcernTable {
    /// `"majority"`, a tag name, or (as a number) how many nodes acknowledge.
    pub w: WriteConcernW,
    /// Wait for the journal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub journal: Option<bool>,
    /// Give up waiting for acknowledgement after this long (the write itself may still apply).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<HumanDuration>,
}

/// The `w` of a write concern.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum WriteConcernW {
    /// A number of nodes.
    Nodes(u32),
    /// `"majority"` or a tag name.
    Tag(String),
}

impl<'de> Deserialize<'de> for WriteConcernSpec {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct WcVisitor;
        impl<'de> Visitor<'de> for WcVisitor {
            type Value = WriteConcernSpec;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("\"majority\", a tag name, a number of nodes, or a table { w, journal, timeout }")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                if v.is_empty() {
                    return Err(E::custom("write_concern cannot be empty; use \"majority\""));
                }
                Ok(WriteConcernSpec::Tag(v.to_owned()))
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                u32::try_from(v)
                    .map(WriteConcernSpec::Nodes)
                    .map_err(|_| E::custom(format!("a write concern of {v} nodes is not possible")))
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                u32::try_from(v)
                    .map(WriteConcernSpec::Nodes)
                    .map_err(|_| E::custom(format!("a write concern of {v} nodes is not possible")))
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                WriteConcernTable::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(WriteConcernSpec::Full)
            }
        }
        deserializer.deserialize_any(WcVisitor)
    }
}

impl Serialize for WriteConcernSpec {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Tag(t) => serializer.serialize_str(t),
            Self::Nodes(n) => serializer.serialize_u32(*n),
            Self::Full(t) => t.serialize(serializer),
        }
    }
}

/// Tuning of the initial copy.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CopySpec {
    /// How many collections are copied at the same time.
    #[serde(default = "default_parallel_collections")]
    #[schemars(range(min = 1, max = 256))]
    pub parallel_collections: u32,

    /// How many partitions (ranges of `_id`) are copied at the same time, across all
    /// collections.
    #[serde(default = "default_parallel_partitions")]
    #[schemars(range(min = 1, max = 1024))]
    pub parallel_partitions: u32,

    /// Large collections are split into partitions of about this size, copied in parallel and
    /// checkpointed separately. A smaller collection of at least 8 MiB is still split into up
    /// to `parallel_partitions` partitions of at least 4 MiB, so that it is copied in parallel.
    #[serde(default = "default_partition_size")]
    pub partition_size: ByteSize,

    /// How much data each read of the source asks for (as a number of documents of the
    /// collection's average size; the server returns at most 16 MiB); each batch read is
    /// inserted as one batch, while the next one is read. The memory of a copy follows
    /// `parallel_partitions` and this size, never the size of the data. The default is half
    /// the smallest partition, so that every partition is read in at least two batches.
    #[serde(default = "default_batch_size")]
    pub batch_size: ByteSize,
}

fn default_parallel_collections() -> u32 {
    4
}
fn default_parallel_partitions() -> u32 {
    8
}
fn default_partition_size() -> ByteSize {
    ByteSize::mib(64)
}
fn default_batch_size() -> ByteSize {
    ByteSize::mib(2)
}

impl Default for CopySpec {
    fn default() -> Self {
        Self {
            parallel_collections: default_parallel_collections(),
            parallel_partitions: default_parallel_partitions(),
            partition_size: default_partition_size(),
            batch_size: default_batch_size(),
        }
    }
}

/// Sharding of destination collections.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ShardingSpec {
    /// Collections to shard on the destination before copying. `namespace` is the destination
    /// name (after `rename`). An entry wins over the source's shard key.
    #[serde(default)]
    pub collections: Vec<ShardingEntry>,

    /// When the destination is a sharded cluster, shard each collection that is sharded on the
    /// source and has no entry in `collections` with the source's shard key (and `unique`
    /// flag), before copying; the source's index that supports the key is built first. Set it
    /// to `false` to leave such collections unsharded on the destination. Has no effect when
    /// the source or the destination is a replica set.
    #[serde(default = "default_true")]
    pub shard_like_source: bool,
}

impl Default for ShardingSpec {
    fn default() -> Self {
        Self {
            collections: Vec::new(),
            shard_like_source: true,
        }
    }
}

/// One collection to shard on the destination.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ShardingEntry {
    /// The destination namespace, `database.collection`.
    pub namespace: String,

    /// The shard key, in order: `{ customer_id = "hashed" }` or `{ region = 1, _id = 1 }`.
    pub key: ShardKeySpec,

    /// Enforce uniqueness of the shard key (ranged keys only).
    #[serde(default)]
    pub unique: bool,

    /// Create the index the shard key needs when it does not exist yet.
    #[serde(default = "default_true")]
    pub create_supporting_indexes: bool,
}

fn default_true() -> bool {
    true
}

/// A shard key: field names with `1` (ranged) or `"hashed"`, in the order written.
#[derive(Debug, Clone, PartialEq, Eq, JsonSchema)]
#[schemars(with = "BTreeMap<String, ShardKeyKind>")]
pub struct ShardKeySpec(pub Vec<(String, ShardKeyKind)>);

/// How a shard-key field distributes documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShardKeyKind {
    /// `1`: ranged on the field's value.
    Ranged,
    /// `"hashed"`: ranged on a hash of the value.
    Hashed,
}

impl JsonSchema for ShardKeyKind {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ShardKeyKind".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "`1` for a ranged field, `\"hashed\"` for a hashed one.",
            "enum": [1, "hashed"]
        })
    }
}

impl<'de> Deserialize<'de> for ShardKeyKind {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KindVisitor;
        impl Visitor<'_> for KindVisitor {
            type Value = ShardKeyKind;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("1 (ranged) or \"hashed\"")
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                match v {
                    1 => Ok(ShardKeyKind::Ranged),
                    _ => Err(E::custom(format!(
                        "shard key fields are 1 (ranged) or \"hashed\", not {v}"
                    ))),
                }
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                self.visit_i64(i64::try_from(v).unwrap_or(i64::MAX))
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                match v {
                    "hashed" => Ok(ShardKeyKind::Hashed),
                    _ => Err(E::custom(format!(
                        "shard key fields are 1 (ranged) or \"hashed\", not {v:?}"
                    ))),
                }
            }
        }
        deserializer.deserialize_any(KindVisitor)
    }
}

impl Serialize for ShardKeyKind {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Ranged => serializer.serialize_i32(1),
            Self::Hashed => serializer.serialize_str("hashed"),
        }
    }
}

impl<'de> Deserialize<'de> for ShardKeySpec {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = ShardKeySpec;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a table of field names, e.g. { customer_id = \"hashed\" }")
            }

            // The order of the fields is the order of the key, so it is kept as written (the
            // TOML parser preserves insertion order).
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut fields = Vec::new();
                while let Some((name, kind)) = map.next_entry::<String, ShardKeyKind>()? {
                    fields.push((name, kind));
                }
                Ok(ShardKeySpec(fields))
            }
        }
        deserializer.deserialize_map(KeyVisitor)
    }
}

impl Serialize for ShardKeySpec {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (name, kind) in &self.0 {
            map.serialize_entry(name, kind)?;
        }
        map.end()
    }
}

/// When and how the switch to the destination happens.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CutoverSpec {
    /// How the cutover is approved once the destination has caught up.
    #[serde(default)]
    pub approval: ApprovalPolicy,

    /// The file whose appearance approves the cutover (`approval = "file"`), relative to this
    /// file. `mongoshift cutover` writes it.
    #[serde(default = "default_approval_file")]
    pub approval_file: PathBuf,

    /// The cutover is ready, and an approval is acted on, only while the destination lags the
    /// source by less than this.
    #[serde(default = "default_max_lag")]
    pub max_lag: HumanDuration,

    /// How long the migration keeps syncing once ready, waiting for approval. `mongoshift
    /// extend` adds time.
    #[serde(default = "default_window")]
    pub window: HumanDuration,

    /// What happens when the window ends without a cutover.
    #[serde(default)]
    pub on_window_expiry: WindowExpiry,

    /// Block user writes on the source during cutover (`setUserWriteBlockMode`, MongoDB 6.0+),
    /// so no write can be lost; the block is released on abort or failure. Without it, the
    /// approval states that the applications have stopped writing, and mongoshift waits for the
    /// source to be quiet.
    #[serde(default)]
    pub block_source_writes: bool,

    /// Command run on events (`ready`, `window_expiring`, `committed`, `failed`): a string run
    /// by `sh -c`, or an array `["program", "arg", ...]`. It receives `MONGOSHIFT_EVENT` and
    /// `MONGOSHIFT_MIGRATION` in its environment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify_command: Option<NotifyCommand>,
}

fn default_approval_file() -> PathBuf {
    PathBuf::from("cutover.approved")
}
fn default_max_lag() -> HumanDuration {
    HumanDuration::from_secs(5)
}
fn default_window() -> HumanDuration {
    HumanDuration::from_secs(120 * 3600)
}

impl Default for CutoverSpec {
    fn default() -> Self {
        Self {
            approval: ApprovalPolicy::default(),
            approval_file: default_approval_file(),
            max_lag: default_max_lag(),
            window: default_window(),
            on_window_expiry: WindowExpiry::default(),
            block_source_writes: false,
            notify_command: None,
        }
    }
}

/// How the cutover is approved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalPolicy {
    /// The approval file appears (written by `mongoshift cutover` or your automation).
    #[default]
    File,
    /// `mongoshift apply --approve-cutover` was given.
    Flag,
    /// Cut over as soon as the destination is ready (unattended runs).
    Auto,
}

/// What happens when the cutover window ends.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum WindowExpiry {
    /// Stop syncing; `apply` exits with code 6.
    #[default]
    Stop,
    /// Keep syncing and keep waiting for approval.
    KeepSyncing,
}

/// A notification command.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum NotifyCommand {
    /// Run by `sh -c`.
    Shell(String),
    /// A program and its arguments, run directly.
    Argv(Vec<String>),
}
