//! From text to the file model, collecting every problem instead of stopping at the first.
//!
//! Three passes over the spanned TOML tree (`toml::de::DeTable`, which keeps byte ranges):
//! 1. syntax: the parser recovers and reports every syntax error it finds;
//! 2. interpolation: `${env:..}`/`${file:..}` in every string value, each failure positioned;
//! 3. typing: serde deserializes the tree into [`MigrationFile`]; when a key is rejected
//!    (unknown key, wrong type, bad duration), the problem is recorded, that key is removed from
//!    the tree, and deserialization runs again, until it succeeds. One serde model (the one the
//!    JSON Schema is generated from) therefore yields every typing error in one run.
//!
//! Keys removed in pass 3 or left uninterpolated in pass 2 are *tainted*: later checks stay
//! silent about them, so one mistake gives one message.

use std::ops::Range;
use std::path::Path;

use serde::Deserialize;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::diagnostic::{Diagnostic, KeyPath, KeySegment};
use super::interpolate::{Environment, interpolate};
use super::model::MigrationFile;

/// The typed file plus what the checks after it need to position their messages.
pub(crate) struct ParsedFile<'a> {
    /// The file, with every rejected key left out.
    pub model: MigrationFile,
    /// The tree as written (after interpolation), to find the span of any key.
    pub tree: Spanned<DeTable<'a>>,
    /// Keys already reported, about which later checks stay silent.
    pub tainted: Vec<KeyPath>,
    /// Keys whose values came (at least partly) from an interpolation.
    pub interpolated: Vec<KeyPath>,
}

impl ParsedFile<'_> {
    /// True when a problem with this key was already reported.
    pub fn is_tainted(&self, path: &KeyPath) -> bool {
        self.tainted.iter().any(|t| t.overlaps(path))
    }

    /// The span of a key's value, falling back to its nearest present ancestor, then the start
    /// of the file (so every message has a position).
    pub fn value_span(&self, path: &KeyPath) -> Range<usize> {
        find_entry(&self.tree, path)
            .map(|(_, value)| value)
            .or_else(|| self.nearest_ancestor_key(path))
            .unwrap_or(0..0)
    }

    /// The span of a key's name (for "this key is not allowed here"), else its value's.
    pub fn key_span(&self, path: &KeyPath) -> Range<usize> {
        find_entry(&self.tree, path)
            .and_then(|(key, _)| key)
            .or_else(|| self.nearest_ancestor_key(path))
            .unwrap_or(0..0)
    }

    fn nearest_ancestor_key(&self, path: &KeyPath) -> Option<Range<usize>> {
        (1..path.0.len()).rev().find_map(|n| {
            let ancestor = KeyPath(path.0[..n].to_vec());
            find_entry(&self.tree, &ancestor).map(|(key, value)| key.unwrap_or(value))
        })
    }
}

/// Runs the three passes. `Err` carries the diagnostics when the file cannot be typed at all
/// (syntax errors); otherwise the diagnostics found so far come with the parsed file.
pub(crate) fn parse<'a>(
    text: &'a str,
    env: &dyn Environment,
    base_dir: &Path,
) -> Result<(ParsedFile<'a>, Vec<Diagnostic>), Vec<Diagnostic>> {
    let (mut tree, syntax_errors) = DeTable::parse_recoverable(text);
    if !syntax_errors.is_empty() {
        return Err(syntax_errors
            .into_iter()
            .map(|e| {
                Diagnostic::error("config.syntax", first_line(e.message()))
                    .with_span(e.span())
                    .help("see https://toml.io for the TOML syntax")
            })
            .collect());
    }

    let mut pass = Interpolator {
        env,
        base_dir,
        diagnostics: Vec::new(),
        tainted: Vec::new(),
        interpolated: Vec::new(),
    };
    pass.table(tree.get_mut(), &KeyPath::default());
    let Interpolator {
        mut diagnostics,
        mut tainted,
        interpolated,
        ..
    } = pass;

    // Pass 3. Each failed round removes at least one key, so the loop ends; the bound is a
    // guard against a serde error that points at nothing removable.
    let mut working = tree.clone();
    let max_rounds = count_entries(working.get_ref()) + 2;
    for _ in 0..max_rounds {
        let attempt = MigrationFile::deserialize(toml::de::Deserializer::from(working.clone()));
        match attempt {
            Ok(model) => {
                let parsed = ParsedFile {
                    model,
                    tree,
                    tainted,
                    interpolated,
                };
                return Ok((parsed, diagnostics));
            }
            Err(e) => {
                let span = e.span();
                let located = span.as_ref().and_then(|s| locate(working.get_ref(), s));
                let message = first_line(e.message());
                let (code, help) = classify(&message);
                let mut d = Diagnostic::error(code, message.clone()).with_span(span);
                if let Some(help) = help.or_else(|| suggest_key(&message)) {
                    d = d.help(help);
                }
                match located {
                    Some(path) => {
                        remove_entry(working.get_mut(), &path);
                        d.key = Some(path.clone());
                        diagnostics.push(d);
                        tainted.push(path);
                    }
                    None => {
                        diagnostics.push(d);
                        return Err(diagnostics);
                    }
                }
            }
        }
    }
    Err(diagnostics)
}

fn first_line(message: &str) -> String {
    message.lines().next().unwrap_or_default().trim().to_owned()
}

fn classify(message: &str) -> (&'static str, Option<String>) {
    if message.starts_with("unknown field") {
        ("config.unknown_key", None)
    } else if message.starts_with("unknown variant") {
        ("config.invalid_value", None)
    } else if message.starts_with("invalid type") {
        ("config.invalid_type", None)
    } else {
        ("config.invalid_value", None)
    }
}

/// For "unknown field `x`, expected one of `a`, `b`": the closest allowed key.
fn suggest_key(message: &str) -> Option<String> {
    let unknown = message.strip_prefix("unknown field `")?.split('`').next()?;
    let expected = message.split("expected").nth(1)?;
    let candidates = expected.split('`').skip(1).step_by(2);
    let (best, score) = candidates
        .map(|c| (c, strsim::normalized_damerau_levenshtein(unknown, c)))
        .max_by(|a, b| a.1.total_cmp(&b.1))?;
    (score >= 0.6).then(|| format!("did you mean `{best}`?"))
}

fn count_entries(table: &DeTable<'_>) -> usize {
    table
        .iter()
        .map(|(_, v)| 1 + count_value_entries(v.get_ref()))
        .sum()
}

fn count_value_entries(value: &DeValue<'_>) -> usize {
    match value {
        DeValue::Table(t) => count_entries(t),
        DeValue::Array(a) => a.iter().map(|v| 1 + count_value_entries(v.get_ref())).sum(),
        _ => 0,
    }
}

fn contains(outer: &Range<usize>, inner: &Range<usize>) -> bool {
    outer.start <= inner.start && inner.end <= outer.end && outer.start < outer.end
}

/// The deepest key whose name or value contains the span.
fn locate(table: &DeTable<'_>, span: &Range<usize>) -> Option<KeyPath> {
    locate_in_table(table, span, &KeyPath::default())
}

fn locate_in_table(table: &DeTable<'_>, span: &Range<usize>, at: &KeyPath) -> Option<KeyPath> {
    for (key, value) in table.iter() {
        let path = at.key(key.get_ref());
        if contains(&key.span(), span) {
            return Some(path);
        }
        if contains(&value.span(), span) || value_contains(value.get_ref(), span) {
            return Some(locate_in_value(value.get_ref(), span, &path).unwrap_or(path));
        }
    }
    None
}

/// Tables opened with a `[header]` have a value span that covers only the header, so the
/// children are searched too.
fn value_contains(value: &DeValue<'_>, span: &Range<usize>) -> bool {
    match value {
        DeValue::Table(t) => t.iter().any(|(k, v)| {
            contains(&k.span(), span)
                || contains(&v.span(), span)
                || value_contains(v.get_ref(), span)
        }),
        DeValue::Array(a) => a
            .iter()
            .any(|v| contains(&v.span(), span) || value_contains(v.get_ref(), span)),
        _ => false,
    }
}

fn locate_in_value(value: &DeValue<'_>, span: &Range<usize>, at: &KeyPath) -> Option<KeyPath> {
    match value {
        DeValue::Table(t) => locate_in_table(t, span, at),
        DeValue::Array(a) => a.iter().enumerate().find_map(|(i, v)| {
            (contains(&v.span(), span) || value_contains(v.get_ref(), span))
                .then(|| locate_in_value(v.get_ref(), span, &at.index(i)).unwrap_or(at.index(i)))
        }),
        _ => None,
    }
}

/// The spans of a key's name (absent for array elements) and value.
fn find_entry(
    tree: &Spanned<DeTable<'_>>,
    path: &KeyPath,
) -> Option<(Option<Range<usize>>, Range<usize>)> {
    let mut current: &DeValue<'_>;
    let mut found: Option<(Option<Range<usize>>, Range<usize>)> = None;
    let (first, rest) = path.0.split_first()?;
    let KeySegment::Key(first) = first else {
        return None;
    };
    let (k, v) = tree.get_ref().get_key_value(first.as_str())?;
    found = found.or(Some((Some(k.span()), v.span())));
    current = v.get_ref();
    for seg in rest {
        match (seg, current) {
            (KeySegment::Key(name), DeValue::Table(t)) => {
                let (k, v) = t.get_key_value(name.as_str())?;
                found = Some((Some(k.span()), v.span()));
                current = v.get_ref();
            }
            (KeySegment::Index(i), DeValue::Array(a)) => {
                let v = a.get(*i)?;
                found = Some((None, v.span()));
                current = v.get_ref();
            }
            _ => return None,
        }
    }
    found.map(|(key, value)| {
        // A `[table]` value's span is its header; prefer it over an empty range.
        let value = if value.is_empty() {
            key.clone().unwrap_or(value)
        } else {
            value
        };
        (key, value)
    })
}

fn remove_entry(table: &mut DeTable<'_>, path: &KeyPath) {
    let mut root = DeValue::Table(std::mem::take(table));
    remove_in_value(&mut root, &path.0);
    if let DeValue::Table(t) = root {
        *table = t;
    }
}

fn remove_in_value(value: &mut DeValue<'_>, segments: &[KeySegment]) {
    let Some((segment, rest)) = segments.split_first() else {
        return;
    };
    match (segment, value) {
        (KeySegment::Key(name), DeValue::Table(t)) => {
            if rest.is_empty() {
                t.remove(name.as_str());
            } else if let Some(v) = t.get_mut(name.as_str()) {
                remove_in_value(v.get_mut(), rest);
            }
        }
        (KeySegment::Index(i), DeValue::Array(a)) => {
            if let Some(v) = a.get_mut(*i) {
                if rest.is_empty() {
                    // An array cannot drop an element in place; an empty table keeps the
                    // indices (and so the paths in messages) of the later elements.
                    *v.get_mut() = DeValue::Table(DeTable::new());
                } else {
                    remove_in_value(v.get_mut(), rest);
                }
            }
        }
        _ => {}
    }
}

/// Pass 2: expands substitutions in every string value, recording which keys were expanded
/// and positioning every failure.
struct Interpolator<'e> {
    env: &'e dyn Environment,
    base_dir: &'e Path,
    diagnostics: Vec<Diagnostic>,
    tainted: Vec<KeyPath>,
    interpolated: Vec<KeyPath>,
}

impl Interpolator<'_> {
    fn table(&mut self, table: &mut DeTable<'_>, at: &KeyPath) {
        for (key, value) in table.iter_mut() {
            let path = at.key(key.get_ref());
            self.value(value, &path);
        }
    }

    fn value(&mut self, value: &mut Spanned<DeValue<'_>>, path: &KeyPath) {
        let span = value.span();
        match value.get_mut() {
            DeValue::String(s) => match interpolate(s, self.env, self.base_dir) {
                Ok(Some(expanded)) => {
                    *s = expanded.into();
                    self.interpolated.push(path.clone());
                }
                Ok(None) => {}
                Err(e) => {
                    self.diagnostics.push(
                        Diagnostic::error("config.interpolation", e.to_string())
                            .at(path.clone(), Some(span))
                            .help(e.help()),
                    );
                    self.tainted.push(path.clone());
                }
            },
            DeValue::Table(t) => self.table(t, path),
            DeValue::Array(a) => {
                for (i, v) in a.iter_mut().enumerate() {
                    self.value(v, &path.index(i));
                }
            }
            _ => {}
        }
    }
}
