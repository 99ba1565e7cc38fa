//! Problems found in `migration.toml`, positioned in the file and rendered for people (source
//! excerpts with the offending key underlined) or machines (JSON).

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use annotate_snippets::{AnnotationKind, Group, Level, Renderer, Snippet};
use serde::Serialize;

use crate::redact::{RedactedText, redact_uris_in_text};

/// The version of the JSON diagnostics format (`validate --json`).
pub const DIAGNOSTICS_FORMAT_VERSION: &str = "1";

/// How bad a problem is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The file cannot be used.
    Error,
    /// The file works, but probably not as intended, or unsafely.
    Warning,
}

/// A path to a key in the file: `cutover.max_lag`, `options.sharding.collections[1].key`.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyPath(pub Vec<KeySegment>);

/// One step of a [`KeyPath`].
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum KeySegment {
    /// A table key.
    Key(String),
    /// An array index.
    Index(usize),
}

impl KeyPath {
    /// The path of a top-level key.
    pub fn root(key: &str) -> Self {
        Self(vec![KeySegment::Key(key.to_owned())])
    }

    /// This path extended by a key.
    pub fn key(&self, key: &str) -> Self {
        let mut p = self.clone();
        p.0.push(KeySegment::Key(key.to_owned()));
        p
    }

    /// This path extended by an array index.
    pub fn index(&self, i: usize) -> Self {
        let mut p = self.clone();
        p.0.push(KeySegment::Index(i));
        p
    }

    /// True when `self` is `other` or lies inside it, or `other` lies inside `self`.
    pub fn overlaps(&self, other: &KeyPath) -> bool {
        let n = self.0.len().min(other.0.len());
        self.0[..n] == other.0[..n]
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                KeySegment::Key(k) if i == 0 => write!(f, "{k}")?,
                KeySegment::Key(k) => write!(f, ".{k}")?,
                KeySegment::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// One problem in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// A stable identifier of the kind of problem (`config.unknown_key`), for automation.
    pub code: &'static str,
    /// The key the problem is about, when there is one.
    pub key: Option<KeyPath>,
    /// Byte range in the file to underline, when known.
    pub span: Option<Range<usize>>,
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    pub help: Option<String>,
    /// The text under the underline; defaults to the key.
    pub label: Option<String>,
}

impl Diagnostic {
    /// An error.
    pub fn error(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Error,
            code,
            key: None,
            span: None,
            message: message.into(),
            help: None,
            label: None,
        }
    }

    /// A warning.
    pub fn warning(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Warning,
            ..Self::error(code, message)
        }
    }

    /// Attaches the key the problem is about.
    pub fn at(mut self, key: KeyPath, span: Option<Range<usize>>) -> Self {
        self.key = Some(key);
        self.span = span;
        self
    }

    /// Attaches a position without a key.
    pub fn with_span(mut self, span: Option<Range<usize>>) -> Self {
        self.span = span;
        self
    }

    /// Sets the text shown under the underline.
    pub fn label(mut self, label: impl Into<String>) -> Self {
        self.label = Some(label.into());
        self
    }

    /// Attaches a fix hint.
    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }
}

/// A file's text, kept to render excerpts.
#[derive(Debug, Clone)]
pub struct SourceFile {
    /// The path as the user gave it.
    pub path: PathBuf,
    /// The text.
    pub text: String,
}

impl SourceFile {
    /// 1-based line and column (in characters) of a byte offset.
    pub fn line_column(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let before = self.text.get(..offset).unwrap_or(&self.text);
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before[line_start..].chars().count() + 1;
        (line, column)
    }
}

/// Every problem found in one file.
#[derive(Debug, Clone)]
pub struct Report {
    /// The file.
    pub file: SourceFile,
    /// The problems, in file order (errors first when positions tie).
    pub diagnostics: Vec<Diagnostic>,
}

impl Report {
    /// Builds a report, sorting problems by position so the output reads top to bottom.
    pub fn new(file: SourceFile, mut diagnostics: Vec<Diagnostic>) -> Self {
        diagnostics.sort_by(|a, b| {
            let pos = |d: &Diagnostic| d.span.as_ref().map_or(usize::MAX, |s| s.start);
            pos(a).cmp(&pos(b)).then(a.severity.cmp(&b.severity))
        });
        Self { file, diagnostics }
    }

    /// True when any problem is an error.
    pub fn has_errors(&self) -> bool {
        self.diagnostics
            .iter()
            .any(|d| d.severity == Severity::Error)
    }

    /// The number of errors.
    pub fn error_count(&self) -> usize {
        self.diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .count()
    }

    /// Renders every problem for a terminal: `error: ...`, `--> file:line:col`, the source
    /// line with the span underlined, and the fix hint. `styled` adds ANSI colours (the caller
    /// decides from `NO_COLOR`, `--no-color` and the terminal).
    pub fn render(&self, styled: bool) -> String {
        let renderer = if styled {
            Renderer::styled()
        } else {
            Renderer::plain()
        };
        let path = display_path(&self.file.path);
        // The excerpts show the file, which may hold a literal password: render a redacted
        // copy, with spans moved to match.
        let source = RedactedText::new(&self.file.text);
        let mut out = String::new();
        for d in &self.diagnostics {
            let level = match d.severity {
                Severity::Error => Level::ERROR,
                Severity::Warning => Level::WARNING,
            };
            let message = redact_uris_in_text(&d.message);
            let title = level.primary_title(message).id(d.code);
            let label = d
                .label
                .clone()
                .or_else(|| d.key.as_ref().map(|k| format!("`{k}`")));
            let mut groups: Vec<Group<'_>> = Vec::new();
            match &d.span {
                Some(span) => {
                    // An empty span (a missing key) still needs one character to point at.
                    let span = source.map_offset(span.start)..source.map_offset(span.end);
                    let span = clamp_span(&source.text, span);
                    groups.push(
                        title.element(
                            Snippet::source(source.text.as_str())
                                .path(path.clone())
                                .fold(true)
                                .annotation(AnnotationKind::Primary.span(span).label(label)),
                        ),
                    );
                }
                None => {
                    groups.push(Group::with_title(title));
                    groups.push(Group::with_title(
                        Level::NOTE.secondary_title(format!("in {path}")),
                    ));
                }
            }
            if let Some(help) = &d.help {
                groups.push(Group::with_title(
                    Level::HELP.secondary_title(redact_uris_in_text(help)),
                ));
            }
            out.push_str(&renderer.render(&groups));
            out.push_str("\n\n");
        }
        out
    }

    /// The problems as JSON: `{format_version, file, valid, errors, warnings, diagnostics: [...]}`
    /// with 1-based `line` and `column` for positioned problems.
    pub fn to_json(&self) -> serde_json::Value {
        let diagnostics: Vec<_> = self
            .diagnostics
            .iter()
            .map(|d| {
                let (line, column) = d
                    .span
                    .as_ref()
                    .map(|s| self.file.line_column(s.start))
                    .unzip();
                serde_json::json!({
                    "severity": d.severity,
                    "code": d.code,
                    "key": d.key.as_ref().map(ToString::to_string),
                    "line": line,
                    "column": column,
                    "message": redact_uris_in_text(&d.message),
                    "help": d.help.as_deref().map(redact_uris_in_text),
                })
            })
            .collect();
        serde_json::json!({
            "format_version": DIAGNOSTICS_FORMAT_VERSION,
            "file": display_path(&self.file.path),
            "valid": !self.has_errors(),
            "errors": self.error_count(),
            "warnings": self.diagnostics.len() - self.error_count(),
            "diagnostics": diagnostics,
        })
    }
}

fn display_path(path: &Path) -> String {
    path.display().to_string()
}

/// Makes a span safe to render: inside the text, on character boundaries, at least one
/// character wide when the text allows it.
fn clamp_span(text: &str, span: Range<usize>) -> Range<usize> {
    let mut start = span.start.min(text.len());
    while !text.is_char_boundary(start) {
        start -= 1;
    }
    let mut end = span.end.clamp(start, text.len());
    while !text.is_char_boundary(end) {
        end += 1;
    }
    if end == start && start < text.len() {
        end = start + text[start..].chars().next().map_or(0, char::len_utf8);
    }
    start..end
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> SourceFile {
        SourceFile {
            path: "migration.toml".into(),
            text: text.to_owned(),
        }
    }

    #[test]
    fn positions_are_one_based_lines_and_character_columns() {
        let f = file("a = 1\nbé = \"x\"\n");
        assert_eq!(f.line_column(0), (1, 1));
        assert_eq!(f.line_column(6), (2, 1));
        assert_eq!(f.line_column(f.text.find('=').unwrap()), (1, 3));
        let second_eq = f.text.rfind('=').unwrap();
        assert_eq!(f.line_column(second_eq), (2, 4));
    }

    #[test]
    fn render_shows_file_line_and_help() {
        let text = "version = 1\n[cutover]\nmax_lag = \"5 parsecs\"\n";
        let start = text.find("\"5").unwrap();
        let report = Report::new(
            file(text),
            vec![
                Diagnostic::error("config.invalid_value", "invalid duration")
                    .at(
                        KeyPath::root("cutover").key("max_lag"),
                        Some(start..start + 11),
                    )
                    .help("write \"5s\""),
            ],
        );
        let out = report.render(false);
        assert!(
            out.contains("error[config.invalid_value]: invalid duration"),
            "{out}"
        );
        assert!(out.contains("^^^^^^^^^^^ `cutover.max_lag`"), "{out}");
        assert!(out.contains("--> migration.toml:3:11"), "{out}");
        assert!(out.contains("max_lag = \"5 parsecs\""), "{out}");
        assert!(out.contains("help: write \"5s\""), "{out}");
        let json = report.to_json();
        assert_eq!(json["diagnostics"][0]["line"], 3);
        assert_eq!(json["diagnostics"][0]["column"], 11);
        assert_eq!(json["valid"], false);
    }

    #[test]
    fn clamp_keeps_spans_on_character_boundaries() {
        let t = "é=1";
        assert_eq!(clamp_span(t, 1..1), 0..2);
        assert_eq!(clamp_span(t, 0..0), 0..2);
        assert_eq!(clamp_span(t, 10..20), 4..4);
    }
}
