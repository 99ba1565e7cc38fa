//! A plan: the preflight checks and the ordered changes `apply` will make to the destination.
//!
//! Terraform's vocabulary: each [`Action`] has one symbol (`+` create, `-` drop, `~` change an
//! existing namespace: shard it or fill it with data), and human and JSON views render the same
//! plan. Documents inside actions keep every BSON type (canonical Extended JSON in files).

use std::fmt;

use bson::Document;
use serde::{Deserialize, Serialize};

pub use super::sharding::KeyOrigin;
use crate::cluster::{CollectionKind, IndexSpec, document_serde, option_document_serde};
use crate::namespace::Namespace;

/// The version of the plan format (JSON output and plan files).
pub const PLAN_FORMAT_VERSION: u32 = 1;

/// How serious a check outcome is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckStatus {
    /// The migration cannot run.
    Error,
    /// The migration can run, but read this.
    Warning,
    /// Verified.
    Passed,
}

/// The outcome of one preflight check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    /// Stable identifier, e.g. `source.topology`.
    pub id: String,
    /// Outcome.
    pub status: CheckStatus,
    /// What was found.
    pub message: String,
    /// How to fix it (for errors and warnings).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

impl Check {
    /// A passed check.
    pub fn passed(id: &str, message: impl Into<String>) -> Self {
        Self {
            id: id.to_owned(),
            status: CheckStatus::Passed,
            message: message.into(),
            hint: None,
        }
    }

    /// A failed check.
    pub fn error(id: &str, message: impl Into<String>, hint: impl Into<String>) -> Self {
        Self {
            id: id.to_owned(),
            status: CheckStatus::Error,
            message: message.into(),
            hint: Some(hint.into()),
        }
    }

    /// A warning.
    pub fn warning(id: &str, message: impl Into<String>, hint: impl Into<String>) -> Self {
        Self {
            id: id.to_owned(),
            status: CheckStatus::Warning,
            message: message.into(),
            hint: Some(hint.into()),
        }
    }
}

/// One change to the destination.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Action {
    /// The destination namespace it applies to.
    pub namespace: Namespace,
    /// What it does.
    #[serde(flatten)]
    pub change: Change,
}

/// When indexes are built relative to the copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IndexPhase {
    /// Before any document is copied.
    BeforeCopy,
    /// After the copy, before the migration can be ready for cutover.
    AfterCopy,
}

/// What an action does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Change {
    /// Drop an existing destination namespace (`clear_destination`).
    Drop {
        /// What is there now.
        kind: CollectionKind,
        /// Documents it holds now (estimate).
        documents: u64,
    },
    /// Create a collection with the source's options.
    CreateCollection {
        /// The source namespace.
        source: Namespace,
        /// `create` options (capped, validator, collation, clusteredIndex, ...).
        #[serde(with = "document_serde")]
        options: Document,
    },
    /// Create a view with the source's definition.
    CreateView {
        /// The source namespace.
        source: Namespace,
        /// The collection or view it reads (in the same database), after renaming.
        view_on: String,
        /// `create` options, `viewOn` and `pipeline` included.
        #[serde(with = "document_serde")]
        options: Document,
    },
    /// Shard the (new, empty) collection.
    ShardCollection {
        /// The shard key.
        #[serde(with = "document_serde")]
        key: Document,
        /// Unique shard key.
        unique: bool,
        /// Where the key comes from: a configuration entry or the source's key.
        #[serde(default)]
        origin: KeyOrigin,
        /// The index `shardCollection` creates because no migrated index supports the key
        /// (`create_supporting_indexes`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        creates_index: Option<String>,
        /// Sharded with `collation: {locale: "simple"}` (the collection's default collation is
        /// not simple).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        simple_collation: bool,
        /// A ranged key split before the copy from a sample of the source's key values.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        presplit: Option<Presplit>,
    },
    /// Build an index.
    CreateIndex {
        /// The index, as on the source.
        index: IndexSpec,
        /// Before or after the copy.
        phase: IndexPhase,
    },
    /// Copy the documents.
    Copy {
        /// The source namespace.
        source: Namespace,
        /// Documents to copy (estimate).
        documents: u64,
        /// Bytes to copy (estimate).
        bytes: u64,
        /// The source's shard key, when the source collection is sharded.
        #[serde(
            default,
            with = "option_document_serde",
            skip_serializing_if = "Option::is_none"
        )]
        source_shard_key: Option<Document>,
        /// Documents and bytes per source shard (estimates), when the source is sharded.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        shards: Vec<ShardShare>,
    },
}

/// How a ranged shard key is split before the copy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Presplit {
    /// The source namespace whose key values are sampled for split points.
    pub source: Namespace,
    /// Chunks wanted (two per destination shard).
    pub chunks: u32,
}

/// One source shard's part of a collection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardShare {
    /// The shard id.
    pub shard: String,
    /// Documents (estimate).
    pub documents: u64,
    /// Bytes (estimate).
    pub bytes: u64,
}

impl Change {
    /// The plan symbol.
    pub fn symbol(&self) -> char {
        match self {
            Self::Drop { .. } => '-',
            Self::CreateCollection { .. } | Self::CreateView { .. } | Self::CreateIndex { .. } => {
                '+'
            }
            Self::ShardCollection { .. } | Self::Copy { .. } => '~',
        }
    }

    /// The command it runs, for logs.
    pub fn verb(&self) -> &'static str {
        match self {
            Self::Drop { .. } => "drop",
            Self::CreateCollection { .. } | Self::CreateView { .. } => "create",
            Self::ShardCollection { .. } => "shardCollection",
            Self::CreateIndex { .. } => "createIndexes",
            Self::Copy { .. } => "copy",
        }
    }
}

/// A short description of a cluster for the plan header (never with credentials).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterSummary {
    /// The connection string, redacted.
    pub uri: String,
    /// Topology, e.g. `replica set rs0`.
    pub topology: String,
    /// Server version.
    pub version: String,
}

/// Totals of a plan.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// Collections to create.
    pub collections_to_create: u64,
    /// Views to create.
    pub views_to_create: u64,
    /// Indexes to create.
    pub indexes_to_create: u64,
    /// Collections to shard.
    pub collections_to_shard: u64,
    /// Namespaces to drop.
    pub namespaces_to_drop: u64,
    /// Documents to copy (estimate).
    pub documents_to_copy: u64,
    /// Bytes to copy (estimate).
    pub bytes_to_copy: u64,
    /// Errors among the checks.
    pub errors: u64,
    /// Warnings among the checks.
    pub warnings: u64,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let views = match self.views_to_create {
            0 => String::new(),
            1 => ", 1 view".to_owned(),
            n => format!(", {n} views"),
        };
        let shard = if self.collections_to_shard > 0 {
            format!(", {} to shard", self.collections_to_shard)
        } else {
            String::new()
        };
        write!(
            f,
            "Plan: {} collections{views} and {} indexes to create{shard}, {} to drop; ~{} documents, {} to copy",
            self.collections_to_create,
            self.indexes_to_create,
            self.namespaces_to_drop,
            approx_count(self.documents_to_copy),
            approx_bytes(self.bytes_to_copy),
        )
    }
}

/// `1 view`, `2 views`, `3 indexes`.
pub fn plural(n: u64, noun: &str) -> String {
    match (n, noun) {
        (1, _) => format!("1 {noun}"),
        (_, "index") => format!("{n} indexes"),
        _ => format!("{n} {noun}s"),
    }
}

/// `4.1M`, `12.3k`, `17`.
pub fn approx_count(n: u64) -> String {
    match n {
        0..1_000 => n.to_string(),
        1_000..1_000_000 => format!("{:.1}k", n as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.1}M", n as f64 / 1e6),
        _ => format!("{:.1}B", n as f64 / 1e9),
    }
}

/// `~1 document`, `~4.1M documents`.
pub fn approx_documents(n: u64) -> String {
    format!(
        "~{} document{}",
        approx_count(n),
        if n == 1 { "" } else { "s" }
    )
}

/// `3.2 GiB`, `540.0 MiB`, `12 B`.
pub fn approx_bytes(n: u64) -> String {
    const UNITS: [(u64, &str); 4] = [
        (1 << 40, "TiB"),
        (1 << 30, "GiB"),
        (1 << 20, "MiB"),
        (1 << 10, "KiB"),
    ];
    for (factor, unit) in UNITS {
        if n >= factor {
            return format!("{:.1} {unit}", n as f64 / factor as f64);
        }
    }
    format!("{n} B")
}

/// A complete plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// [`PLAN_FORMAT_VERSION`].
    pub format_version: u32,
    /// The migration's name.
    pub migration: String,
    /// The source, when it could be inspected.
    pub source: Option<ClusterSummary>,
    /// The destination, when it could be inspected.
    pub destination: Option<ClusterSummary>,
    /// Every check, errors first.
    pub checks: Vec<Check>,
    /// The changes, in the order `apply` makes them.
    pub actions: Vec<Action>,
    /// The destination catalog now and after apply, one line per namespace and index.
    pub catalog_before: Vec<String>,
    /// See `catalog_before`.
    pub catalog_after: Vec<String>,
    /// Totals.
    pub summary: Summary,
}

impl Plan {
    /// True when no check failed with an error.
    pub fn is_valid(&self) -> bool {
        self.summary.errors == 0
    }

    /// True when apply would change the destination.
    pub fn has_changes(&self) -> bool {
        !self.actions.is_empty()
    }
}
