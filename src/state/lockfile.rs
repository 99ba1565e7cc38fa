//! Reading and writing `migration.lock`.
//!
//! Every write is atomic (temporary file, fsync, rename, directory fsync) and keeps the previous
//! version as `migration.lock.backup`. A file that is damaged, truncated, not a lockfile, or
//! written by a newer mongoshift is refused with a clear error and never overwritten.

use std::path::{Path, PathBuf};

use super::model::{LOCKFILE_FORMAT_VERSION, MigrationState};
use crate::atomic_file::write_atomic;

/// The lockfile's default name, next to `migration.toml`.
pub const LOCKFILE_NAME: &str = "migration.lock";

/// Why the lockfile cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// It cannot be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// It is damaged or not a lockfile; it was left untouched.
    #[error("{} is not a valid mongoshift lockfile ({detail}); it was left untouched. Restore {}.backup if it is intact, or move both away to start the migration over", path.display(), path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// A newer mongoshift wrote it.
    #[error("{} has lockfile format {found}; this mongoshift reads format {LOCKFILE_FORMAT_VERSION}. Use the mongoshift version that wrote it (or a newer one); the file was left untouched", path.display())]
    NewerFormat {
        /// The file.
        path: PathBuf,
        /// Its format.
        found: u64,
    },
    /// It cannot be written.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// The lockfile path for a config file: next to it.
pub fn default_path(config_path: &Path) -> PathBuf {
    match config_path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.join(LOCKFILE_NAME),
        _ => PathBuf::from(LOCKFILE_NAME),
    }
}

/// The backup of a lockfile.
pub fn backup_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".backup");
    path.with_file_name(name)
}

/// Reads the lockfile; `Ok(None)` when there is none.
pub fn load(path: &Path) -> Result<Option<MigrationState>, StateError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(StateError::Read {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    parse(path, &bytes).map(Some)
}

fn parse(path: &Path, bytes: &[u8]) -> Result<MigrationState, StateError> {
    let corrupt = |detail: String| StateError::Corrupt {
        path: path.to_path_buf(),
        detail,
    };
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| {
        if e.is_eof() {
            corrupt(format!(
                "it ends early, at line {}: it was truncated",
                e.line()
            ))
        } else {
            corrupt(e.to_string())
        }
    })?;
    let version = value
        .get("format_version")
        .and_then(serde_json::Value::as_u64)
        .ok_or_else(|| {
            corrupt("it has no `format_version`; it is not a mongoshift lockfile".to_owned())
        })?;
    if version > u64::from(LOCKFILE_FORMAT_VERSION) {
        return Err(StateError::NewerFormat {
            path: path.to_path_buf(),
            found: version,
        });
    }
    serde_json::from_value(value).map_err(|e| corrupt(e.to_string()))
}

/// Writes the state: increments `serial`, keeps the previous file as the backup, replaces the
/// lockfile atomically.
pub fn save(path: &Path, state: &mut MigrationState) -> Result<(), StateError> {
    let write_err = |source: std::io::Error| StateError::Write {
        path: path.to_path_buf(),
        source,
    };
    state.serial += 1;
    state.format_version = LOCKFILE_FORMAT_VERSION;
    state.tool_version = crate::plan::file::TOOL_VERSION.to_owned();
    let mut text =
        serde_json::to_vec_pretty(state).map_err(|e| write_err(std::io::Error::other(e)))?;
    text.push(b'\n');
    match std::fs::read(path) {
        Ok(previous) => write_atomic(&backup_path(path), &previous).map_err(write_err)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(write_err(e)),
    }
    write_atomic(path, &text).map_err(write_err)
}
