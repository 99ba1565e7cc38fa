//! Saved plans (`plan --out FILE`, `apply FILE`).
//!
//! A plan file holds the plan and the fingerprints of what it was made from: the configuration
//! (without credentials), the structure of the source and destination catalogs (namespaces,
//! kinds, UUIDs, options, indexes, shard keys; never sizes, which change constantly on a live
//! source) and the tool version. `apply FILE` recomputes them and refuses a plan whose inputs
//! changed. Format (`format_version` 1, JSON):
//!
//! ```text
//! { "format_version": 1, "tool_version": "0.1.0", "created_at": "2026-11-22T10:00:00Z",
//!   "fingerprints": { "config": "<sha256>", "source_catalog": "<sha256>",
//!                     "destination_catalog": "<sha256>" },
//!   "plan": { ...the same document `plan --json` prints... } }
//! ```
//! Documents inside the plan are canonical Extended JSON, so every BSON type survives.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::model::Plan;
use crate::cluster::ClusterSnapshot;
use crate::config::Config;
use crate::namespace::Namespace;

/// The version of the plan-file format this build writes and reads.
pub const PLAN_FILE_FORMAT_VERSION: u32 = 1;

/// The tool version recorded in plan files.
pub const TOOL_VERSION: &str = env!("CARGO_PKG_VERSION");

/// A saved plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanFile {
    /// [`PLAN_FILE_FORMAT_VERSION`].
    pub format_version: u32,
    /// The mongoshift version that made it.
    pub tool_version: String,
    /// When it was made (RFC 3339).
    pub created_at: String,
    /// What it was made from.
    pub fingerprints: Fingerprints,
    /// The plan.
    pub plan: Plan,
}

/// Fingerprints of a plan's inputs (SHA-256, hex).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fingerprints {
    /// The configuration, credentials excluded.
    pub config: String,
    /// The structure of the migrated source namespaces.
    pub source_catalog: String,
    /// The structure of the destination namespaces the plan touches.
    pub destination_catalog: String,
}

/// Why a plan file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PlanFileError {
    /// Not readable.
    #[error("cannot read plan file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Not a plan file, or damaged.
    #[error("{} is not a valid mongoshift plan file: {detail}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// Written by a newer mongoshift.
    #[error("{} has plan format {found}; this mongoshift reads format {PLAN_FILE_FORMAT_VERSION}: upgrade mongoshift", path.display())]
    NewerFormat {
        /// The file.
        path: PathBuf,
        /// Its format version.
        found: u64,
    },
    /// Cannot be written.
    #[error("cannot write plan file {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// One input that changed since the plan was made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Staleness {
    /// The configuration changed.
    Config,
    /// The source's namespaces, options or indexes changed.
    SourceCatalog,
    /// The destination's namespaces changed.
    DestinationCatalog,
    /// Another mongoshift version made the plan.
    ToolVersion(String),
}

impl std::fmt::Display for Staleness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Config => f.write_str("migration.toml changed"),
            Self::SourceCatalog => {
                f.write_str("the source's namespaces, options or indexes changed")
            }
            Self::DestinationCatalog => f.write_str("the destination's namespaces changed"),
            Self::ToolVersion(v) => write!(
                f,
                "the plan was made by mongoshift {v}, this is {TOOL_VERSION}"
            ),
        }
    }
}

impl PlanFile {
    /// Wraps a plan with its fingerprints.
    pub fn new(plan: Plan, fingerprints: Fingerprints) -> Self {
        Self {
            format_version: PLAN_FILE_FORMAT_VERSION,
            tool_version: TOOL_VERSION.to_owned(),
            created_at: jiff::Timestamp::now().to_string(),
            fingerprints,
            plan,
        }
    }

    /// What changed since the plan was made (empty: the plan is current).
    pub fn staleness(&self, current: &Fingerprints) -> Vec<Staleness> {
        let mut out = Vec::new();
        if self.tool_version != TOOL_VERSION {
            out.push(Staleness::ToolVersion(self.tool_version.clone()));
        }
        if self.fingerprints.config != current.config {
            out.push(Staleness::Config);
        }
        if self.fingerprints.source_catalog != current.source_catalog {
            out.push(Staleness::SourceCatalog);
        }
        if self.fingerprints.destination_catalog != current.destination_catalog {
            out.push(Staleness::DestinationCatalog);
        }
        out
    }

    /// Writes the file atomically (a partial plan file is never left behind).
    pub fn save(&self, path: &Path) -> Result<(), PlanFileError> {
        let text = serde_json::to_string_pretty(self).map_err(|e| PlanFileError::Write {
            path: path.to_path_buf(),
            source: std::io::Error::other(e),
        })?;
        crate::atomic_file::write_atomic(path, format!("{text}\n").as_bytes()).map_err(|source| {
            PlanFileError::Write {
                path: path.to_path_buf(),
                source,
            }
        })
    }

    /// Reads a plan file, refusing damaged files and newer formats.
    pub fn load(path: &Path) -> Result<Self, PlanFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| PlanFileError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let corrupt = |detail: String| PlanFileError::Corrupt {
            path: path.to_path_buf(),
            detail,
        };
        let value: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| corrupt(e.to_string()))?;
        match value
            .get("format_version")
            .and_then(serde_json::Value::as_u64)
        {
            None => return Err(corrupt("`format_version` is missing".to_owned())),
            Some(v) if v > u64::from(PLAN_FILE_FORMAT_VERSION) => {
                return Err(PlanFileError::NewerFormat {
                    path: path.to_path_buf(),
                    found: v,
                });
            }
            Some(_) => {}
        }
        serde_json::from_value(value).map_err(|e| corrupt(e.to_string()))
    }
}

/// Computes the fingerprints of a plan's inputs.
pub fn fingerprints(
    config: &Config,
    source: &ClusterSnapshot,
    destination: &ClusterSnapshot,
    plan: &Plan,
) -> Fingerprints {
    let touched: BTreeSet<Namespace> = plan.actions.iter().map(|a| a.namespace.clone()).collect();
    Fingerprints {
        config: config_fingerprint(config),
        source_catalog: catalog_fingerprint(source, |_| true),
        destination_catalog: catalog_fingerprint(destination, |ns| touched.contains(ns)),
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The redacted configuration, with paths made relative to its directory so the same file
/// read from another working directory fingerprints the same.
fn config_fingerprint(config: &Config) -> String {
    let mut value = serde_json::to_value(config).unwrap_or(serde_json::Value::Null);
    if let Some(obj) = value.as_object_mut() {
        obj.remove("path");
    }
    let base = format!("{}/", config.base_dir().display());
    relativize(&mut value, &base);
    sha256_hex(value.to_string().as_bytes())
}

fn relativize(value: &mut serde_json::Value, base: &str) {
    match value {
        serde_json::Value::String(s) => {
            if let Some(rest) = s.strip_prefix(base) {
                *s = rest.to_owned();
            }
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(|v| relativize(v, base)),
        serde_json::Value::Object(o) => o.values_mut().for_each(|v| relativize(v, base)),
        _ => {}
    }
}

#[derive(Serialize)]
struct StructuralEntry<'a> {
    namespace: String,
    kind: crate::cluster::CollectionKind,
    uuid: &'a Option<String>,
    options: serde_json::Value,
    indexes: &'a [crate::cluster::IndexSpec],
    shard_key: Option<serde_json::Value>,
}

fn canonical(doc: &bson::Document) -> serde_json::Value {
    bson::Bson::Document(doc.clone()).into_canonical_extjson()
}

fn catalog_fingerprint(snapshot: &ClusterSnapshot, keep: impl Fn(&Namespace) -> bool) -> String {
    let entries: Vec<StructuralEntry<'_>> = snapshot
        .catalog
        .namespaces()
        .filter(|(ns, _)| keep(ns))
        .map(|(ns, info)| StructuralEntry {
            namespace: ns.to_string(),
            kind: info.kind,
            uuid: &info.uuid,
            options: canonical(&info.options),
            indexes: &info.indexes,
            shard_key: info.shard_key.as_ref().map(canonical),
        })
        .collect();
    sha256_hex(
        serde_json::to_string(&entries)
            .unwrap_or_default()
            .as_bytes(),
    )
}
