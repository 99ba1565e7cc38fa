//! Reading `migration.toml` from disk into a checked [`Config`], with every problem in one
//! [`Report`].

use std::path::{Path, PathBuf};

use super::diagnostic::{Report, SourceFile};
use super::document;
use super::interpolate::{Environment, ProcessEnvironment};
use super::resolved::Config;
use super::validate;

/// A config that passed validation, with its warnings.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The checked config.
    pub config: Config,
    /// Warnings (never errors).
    pub report: Report,
}

/// Why a config could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file has errors; the report lists every one.
    #[error("{} has {} error(s)", .0.file.path.display(), .0.error_count())]
    Invalid(Box<Report>),
}

/// Loads and checks a config file, reading substitutions from the process environment.
pub fn load(path: &Path) -> Result<Loaded, ConfigError> {
    load_with(path, &ProcessEnvironment)
}

/// Loads and checks a config file with the given environment.
pub fn load_with(path: &Path, env: &dyn Environment) -> Result<Loaded, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    check_text(path, text, env)
}

/// Checks config text as if read from `path` (relative paths resolve against its directory).
pub fn check_text(path: &Path, text: String, env: &dyn Environment) -> Result<Loaded, ConfigError> {
    let base_dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let (config, diagnostics) = match document::parse(&text, env, &base_dir) {
        Err(diagnostics) => (None, diagnostics),
        Ok((parsed, mut diagnostics)) => {
            let (config, more) = validate::check(&parsed, path, env);
            diagnostics.extend(more);
            (config, diagnostics)
        }
    };
    let report = Report::new(
        SourceFile {
            path: path.to_path_buf(),
            text,
        },
        diagnostics,
    );
    match config {
        Some(config) if !report.has_errors() => {
            // Debug formatting redacts credentials, so the config is safe to log whole.
            tracing::debug!(?config, "configuration loaded");
            Ok(Loaded { config, report })
        }
        _ => Err(ConfigError::Invalid(Box::new(report))),
    }
}
