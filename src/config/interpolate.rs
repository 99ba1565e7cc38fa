//! `${env:NAME}` and `${file:PATH}` in string values, so secrets stay out of `migration.toml`.
//!
//! Only these two forms are recognised; `$${` writes a literal `${`, and a `$` not followed by
//! `{` is kept as it is (passwords often contain `$`). Anything else that starts with `${` is an
//! error rather than a silent literal, so a typo such as `${ENV:X}` cannot leak into a URI.

use std::path::Path;

/// Where interpolated values come from. Tests supply their own; the CLI uses the process.
pub trait Environment {
    /// The value of an environment variable, if set.
    fn var(&self, name: &str) -> Option<String>;
}

/// The process environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnvironment;

impl Environment for ProcessEnvironment {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl<const N: usize> Environment for [(&str, &str); N] {
    fn var(&self, name: &str) -> Option<String> {
        self.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| (*v).to_owned())
    }
}

/// Files read by `${file:...}` larger than this are refused: a secret is small, and reading a
/// multi-gigabyte file by mistake should not hang `validate`.
const MAX_SECRET_FILE_BYTES: u64 = 1024 * 1024;

/// Why a value could not be interpolated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InterpolationError {
    /// `${env:NAME}` names an unset variable.
    UnsetVariable(String),
    /// `${file:PATH}` cannot be read.
    UnreadableFile {
        /// The path as written.
        path: String,
        /// Why.
        reason: String,
    },
    /// `${` without a closing `}`.
    Unterminated,
    /// `${something}` that is neither `env:` nor `file:`.
    UnknownForm(String),
    /// `${env:}` with an empty or malformed name.
    BadVariableName(String),
}

impl std::fmt::Display for InterpolationError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::UnsetVariable(name) => write!(f, "environment variable `{name}` is not set"),
            Self::UnreadableFile { path, reason } => write!(f, "cannot read `{path}`: {reason}"),
            Self::Unterminated => f.write_str("`${` has no closing `}`"),
            Self::UnknownForm(form) => write!(f, "unknown substitution `${{{form}}}`"),
            Self::BadVariableName(name) => {
                write!(f, "`{name}` is not a valid environment variable name")
            }
        }
    }
}

impl InterpolationError {
    /// How to fix it.
    pub fn help(&self) -> &'static str {
        match self {
            Self::UnsetVariable(_) => {
                "export the variable before running mongoshift, or use another way to pass the value"
            }
            Self::UnreadableFile { .. } => {
                "paths are relative to migration.toml; check that the file exists and is readable"
            }
            Self::Unterminated | Self::UnknownForm(_) | Self::BadVariableName(_) => {
                "write `${env:NAME}` or `${file:PATH}`; write `$${` for a literal `${`"
            }
        }
    }
}

/// Expands the substitutions in `text`. Returns `Ok(None)` when the text has none, so callers
/// can tell a literal value from an interpolated one.
pub fn interpolate(
    text: &str,
    env: &dyn Environment,
    base_dir: &Path,
) -> Result<Option<String>, InterpolationError> {
    if !text.contains("${") {
        return Ok(None);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find("${") {
        // `$${` is an escaped `${`.
        if pos > 0 && rest.as_bytes()[pos - 1] == b'$' {
            out.push_str(&rest[..pos - 1]);
            out.push_str("${");
            rest = &rest[pos + 2..];
            continue;
        }
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 2..];
        let end = after.find('}').ok_or(InterpolationError::Unterminated)?;
        let form = &after[..end];
        if let Some(name) = form.strip_prefix("env:") {
            if !is_variable_name(name) {
                return Err(InterpolationError::BadVariableName(name.to_owned()));
            }
            let value = env
                .var(name)
                .ok_or_else(|| InterpolationError::UnsetVariable(name.to_owned()))?;
            out.push_str(&value);
        } else if let Some(path) = form.strip_prefix("file:") {
            out.push_str(&read_secret_file(path, base_dir)?);
        } else {
            return Err(InterpolationError::UnknownForm(form.to_owned()));
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(Some(out))
}

fn is_variable_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Reads a secret file, trimming the trailing newline editors and `echo` add.
pub(crate) fn read_secret_file(path: &str, base_dir: &Path) -> Result<String, InterpolationError> {
    let full = base_dir.join(path);
    let unreadable = |reason: String| InterpolationError::UnreadableFile {
        path: path.to_owned(),
        reason,
    };
    let meta = std::fs::metadata(&full).map_err(|e| unreadable(e.to_string()))?;
    if meta.len() > MAX_SECRET_FILE_BYTES {
        return Err(unreadable(format!(
            "the file is {} bytes; secrets files are limited to 1 MiB",
            meta.len()
        )));
    }
    let text = std::fs::read_to_string(&full).map_err(|e| unreadable(e.to_string()))?;
    Ok(text.trim_end_matches(['\n', '\r']).to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(text: &str) -> Result<Option<String>, InterpolationError> {
        let env = [("USER", "alice"), ("PASS", "p$ss")];
        interpolate(text, &env, Path::new("."))
    }

    #[test]
    fn expands_env_and_keeps_literal_dollars() {
        assert_eq!(run("plain $5 text").unwrap(), None);
        assert_eq!(
            run("mongodb://${env:USER}:${env:PASS}@h/")
                .unwrap()
                .as_deref(),
            Some("mongodb://alice:p$ss@h/")
        );
        assert_eq!(
            run("a $${env:USER} b").unwrap().as_deref(),
            Some("a ${env:USER} b")
        );
    }

    #[test]
    fn rejects_unset_unknown_and_unterminated() {
        assert_eq!(
            run("${env:NOPE}"),
            Err(InterpolationError::UnsetVariable("NOPE".into()))
        );
        assert_eq!(
            run("${ENV:USER}"),
            Err(InterpolationError::UnknownForm("ENV:USER".into()))
        );
        assert_eq!(run("${env:USER"), Err(InterpolationError::Unterminated));
        assert_eq!(
            run("${env:1X}"),
            Err(InterpolationError::BadVariableName("1X".into()))
        );
    }

    #[test]
    fn reads_files_relative_to_the_config() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pw"), "s3cret\n").unwrap();
        let env: [(&str, &str); 0] = [];
        assert_eq!(
            interpolate("x${file:pw}y", &env, dir.path())
                .unwrap()
                .as_deref(),
            Some("xs3crety")
        );
        assert!(matches!(
            interpolate("${file:missing}", &env, dir.path()),
            Err(InterpolationError::UnreadableFile { .. })
        ));
    }
}
