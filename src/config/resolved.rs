//! The checked configuration every later stage works from: required parts present, names
//! valid, secrets resolved (and redacted in every output), paths resolved against the
//! directory of `migration.toml`.

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use super::endpoint::Endpoint;
use super::model::{
    ApprovalPolicy, CopySpec, DdlPolicy, IndexPolicy, NotifyCommand, ShardKeySpec, UpdateMode,
    VerifyPolicy, WindowExpiry, WriteConcernSpec,
};
use crate::namespace::{Namespace, NamespaceFilter, NamespaceMapping};

/// A checked `migration.toml`.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    /// The file it was read from.
    pub path: PathBuf,
    /// The migration's name.
    pub name: String,
    /// Where data comes from.
    pub source: Endpoint,
    /// Where data goes.
    pub destination: Endpoint,
    /// What is copied and how.
    pub options: Options,
    /// How the cutover happens.
    pub cutover: Cutover,
}

impl Config {
    /// The directory relative paths in the file are resolved against.
    pub fn base_dir(&self) -> PathBuf {
        self.path
            .parent()
            .map(PathBuf::from)
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or_else(|| PathBuf::from("."))
    }
}

/// Checked `[options]`.
#[derive(Debug, Clone, Serialize)]
pub struct Options {
    /// Which source namespaces are migrated.
    #[serde(serialize_with = "serialize_filter")]
    pub filter: NamespaceFilter,
    /// Source → destination names.
    #[serde(serialize_with = "serialize_mapping")]
    pub mapping: NamespaceMapping,
    /// Drop conflicting destination namespaces.
    pub clear_destination: bool,
    /// When indexes are built.
    pub indexes: IndexPolicy,
    /// What the cutover verifies.
    pub verify: VerifyPolicy,
    /// What happens to source DDL.
    pub ddl: DdlPolicy,
    /// How updates are applied.
    pub update_mode: UpdateMode,
    /// Destination write concern.
    pub write_concern: WriteConcernSpec,
    /// Copy tuning.
    pub copy: CopySpec,
    /// How long transient failures are retried.
    #[serde(serialize_with = "serialize_duration")]
    pub retry_for: Duration,
    /// Destination collections to shard.
    pub sharding: Vec<ShardCollection>,
    /// Shard collections that are sharded on the source and have no entry alike on a sharded
    /// destination.
    pub shard_like_source: bool,
}

/// One destination collection to shard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ShardCollection {
    /// The destination namespace.
    pub namespace: Namespace,
    /// The shard key in order.
    pub key: ShardKeySpec,
    /// Unique shard key.
    pub unique: bool,
    /// Create the supporting index if missing.
    pub create_supporting_indexes: bool,
}

/// How long transient failures are retried when `options.retry_for` is not set.
pub const DEFAULT_RETRY_FOR: Duration = Duration::from_secs(60);

/// Checked `[cutover]`.
#[derive(Debug, Clone, Serialize)]
pub struct Cutover {
    /// How approval is given.
    pub approval: ApprovalPolicy,
    /// The approval file, resolved against the config's directory.
    pub approval_file: PathBuf,
    /// Largest lag at which the cutover may proceed.
    #[serde(serialize_with = "serialize_duration")]
    pub max_lag: Duration,
    /// How long the migration waits for approval once ready.
    #[serde(serialize_with = "serialize_duration")]
    pub window: Duration,
    /// What happens when the window ends.
    pub on_window_expiry: WindowExpiry,
    /// Block source writes during cutover.
    pub block_source_writes: bool,
    /// Notification command.
    pub notify_command: Option<NotifyCommand>,
}

fn serialize_duration<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&super::units::HumanDuration(*d))
}

fn serialize_filter<S: serde::Serializer>(f: &NamespaceFilter, s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeStruct;
    let strings = |ps: &[crate::namespace::NamespacePattern]| {
        ps.iter().map(ToString::to_string).collect::<Vec<_>>()
    };
    let mut st = s.serialize_struct("NamespaceFilter", 2)?;
    st.serialize_field("include", &strings(f.include()))?;
    st.serialize_field("exclude", &strings(f.exclude()))?;
    st.end()
}

fn serialize_mapping<S: serde::Serializer>(m: &NamespaceMapping, s: S) -> Result<S::Ok, S::Error> {
    use crate::namespace::RenameRule;
    use serde::ser::SerializeMap;
    let mut map = s.serialize_map(Some(m.rules().len()))?;
    for rule in m.rules() {
        match rule {
            RenameRule::Database { from, to } => map.serialize_entry(from, to)?,
            RenameRule::Namespace { from, to } => {
                map.serialize_entry(&from.to_string(), &to.to_string())?;
            }
        }
    }
    map.end()
}
