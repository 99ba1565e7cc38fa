//! The `updateDescription` of change-stream update events.
//!
//! [`update_description`] computes it from the documents before and after an update the way
//! mongod's `doc_diff` computes a v2 delta for pipeline-style updates (and the change stream
//! then renders it): fields set or changed go to `updatedFields` under their dotted paths
//! (array elements as `arr.N`), removed fields to `removedFields`, arrays that became shorter
//! to `truncatedArrays`. Operator-style updates log their own delta instead (see
//! [`super::update::Update::apply_logged`]). `disambiguatedPaths` (7.0, shown with
//! `showExpandedEvents`) lists every reported path that contains a numeric field name or an
//! array index, or a field name with a dot, as its components (array indexes as integers).

use bson::{Bson, Document, RawDocument};

use super::path::array_index;
use super::value::raw_doc_to_document;

/// One array that became shorter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TruncatedArray {
    /// Dotted path of the array.
    pub field: String,
    /// Its new length.
    pub new_size: u32,
}

/// One component of a disambiguated path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathComponent {
    /// A field name (possibly numeric-looking or containing dots).
    Field(String),
    /// An array index.
    Index(u32),
}

/// A change event's `updateDescription`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UpdateDescription {
    /// `updatedFields`: dotted path -> new value, in document order.
    pub updated_fields: Document,
    /// `removedFields`: dotted paths.
    pub removed_fields: Vec<String>,
    /// `truncatedArrays`.
    pub truncated_arrays: Vec<TruncatedArray>,
    /// `disambiguatedPaths`: dotted path -> components, for ambiguous paths only.
    pub disambiguated_paths: Vec<(String, Vec<PathComponent>)>,
}

impl UpdateDescription {
    /// True when nothing changed.
    pub fn is_empty(&self) -> bool {
        self.updated_fields.is_empty()
            && self.removed_fields.is_empty()
            && self.truncated_arrays.is_empty()
    }

    /// The `updateDescription` document of a change event. `disambiguatedPaths` is included
    /// (possibly empty) only when `show_expanded_events` is set, as mongod 7.0 does.
    pub fn to_document(&self, show_expanded_events: bool) -> Document {
        let mut d = Document::new();
        d.insert("updatedFields", self.updated_fields.clone());
        d.insert(
            "removedFields",
            self.removed_fields
                .iter()
                .map(|f| Bson::String(f.clone()))
                .collect::<Vec<_>>(),
        );
        d.insert(
            "truncatedArrays",
            self.truncated_arrays
                .iter()
                .map(|t| {
                    let mut e = Document::new();
                    e.insert("field", t.field.clone());
                    e.insert("newSize", i32::try_from(t.new_size).unwrap_or(i32::MAX));
                    Bson::Document(e)
                })
                .collect::<Vec<_>>(),
        );
        if show_expanded_events {
            let mut paths = Document::new();
            for (path, comps) in &self.disambiguated_paths {
                paths.insert(
                    path.clone(),
                    comps
                        .iter()
                        .map(|c| match c {
                            PathComponent::Field(f) => Bson::String(f.clone()),
                            PathComponent::Index(i) => {
                                Bson::Int32(i32::try_from(*i).unwrap_or(i32::MAX))
                            }
                        })
                        .collect::<Vec<_>>(),
                );
            }
            d.insert("disambiguatedPaths", paths);
        }
        d
    }
}

/// Computes the update description between two versions of a document (doc_diff semantics).
pub fn update_description(before: &RawDocument, after: &RawDocument) -> UpdateDescription {
    let b = raw_doc_to_document(before);
    let a = raw_doc_to_document(after);
    describe_diff(&diff_documents(&b, &a))
}

/// One modification in a v2 delta.
#[derive(Debug, Clone)]
pub(crate) enum Mod {
    /// A new value; `true` when the field existed before (mongod's `u`), `false` for an
    /// insertion (`i`).
    Set(Bson, bool),
    /// A removed field (`d`).
    Delete,
}

/// A v2 delta of a document or an array.
#[derive(Debug, Clone)]
pub(crate) enum Diff {
    Doc(DocDiff),
    Arr(ArrayDiff),
}

/// The delta of a document: modifications and nested deltas by field name, in the order they
/// were recorded.
#[derive(Debug, Clone, Default)]
pub(crate) struct DocDiff {
    pub(crate) entries: Vec<(String, Mod)>,
    pub(crate) subs: Vec<(String, Diff)>,
}

/// The delta of an array: an optional new (smaller) size, element modifications and nested
/// deltas by index.
#[derive(Debug, Clone, Default)]
pub(crate) struct ArrayDiff {
    pub(crate) new_size: Option<u32>,
    pub(crate) mods: Vec<(usize, Mod)>,
    pub(crate) subs: Vec<(usize, Diff)>,
}

impl Diff {
    /// The nested delta for `name`, created (as an array or document delta) if absent.
    pub(crate) fn sub(&mut self, name: &str, is_array: bool) -> &mut Diff {
        let fresh = || {
            if is_array {
                Diff::Arr(ArrayDiff::default())
            } else {
                Diff::Doc(DocDiff::default())
            }
        };
        match self {
            Diff::Doc(d) => {
                let pos = match d.subs.iter().position(|(k, _)| k == name) {
                    Some(p) => p,
                    None => {
                        d.subs.push((name.to_owned(), fresh()));
                        d.subs.len() - 1
                    }
                };
                &mut d.subs[pos].1
            }
            Diff::Arr(a) => {
                let idx = name.parse::<usize>().unwrap_or(usize::MAX);
                let pos = match a.subs.iter().position(|(i, _)| *i == idx) {
                    Some(p) => p,
                    None => {
                        a.subs.push((idx, fresh()));
                        a.subs.len() - 1
                    }
                };
                &mut a.subs[pos].1
            }
        }
    }

    /// Records a modification of `name` (replacing an earlier one for the same name).
    pub(crate) fn put(&mut self, name: &str, m: Mod) {
        match self {
            Diff::Doc(d) => {
                d.entries.retain(|(k, _)| k != name);
                d.entries.push((name.to_owned(), m));
            }
            Diff::Arr(a) => {
                if let Ok(i) = name.parse::<usize>() {
                    a.mods.retain(|(j, _)| *j != i);
                    a.mods.push((i, m));
                }
            }
        }
    }
}

/// Computes a v2 delta between two documents as mongod's `doc_diff::computeOplogDiff` does
/// for pipeline updates: changed fields of the same document/array type become nested
/// deltas, other changes are replacements, new fields insertions, missing fields deletions;
/// arrays that shrank are truncated.
pub(crate) fn diff_documents(before: &Document, after: &Document) -> Diff {
    Diff::Doc(diff_doc(before, after))
}

fn diff_doc(before: &Document, after: &Document) -> DocDiff {
    let mut out = DocDiff::default();
    for (k, av) in after {
        match before.get(k) {
            None => out.entries.push((k.clone(), Mod::Set(av.clone(), false))),
            Some(bv) if bv == av && bv.element_type() == av.element_type() => {}
            Some(Bson::Document(bd)) if matches!(av, Bson::Document(_)) => {
                if let Bson::Document(ad) = av {
                    out.subs.push((k.clone(), Diff::Doc(diff_doc(bd, ad))));
                }
            }
            Some(Bson::Array(ba)) if matches!(av, Bson::Array(_)) => {
                if let Bson::Array(aa) = av {
                    out.subs.push((k.clone(), Diff::Arr(diff_arr(ba, aa))));
                }
            }
            Some(_) => out.entries.push((k.clone(), Mod::Set(av.clone(), true))),
        }
    }
    for k in before.keys() {
        if !after.contains_key(k) {
            out.entries.push((k.clone(), Mod::Delete));
        }
    }
    out
}

fn diff_arr(before: &[Bson], after: &[Bson]) -> ArrayDiff {
    let mut out = ArrayDiff::default();
    for (i, (bv, av)) in before.iter().zip(after).enumerate() {
        if bv == av && bv.element_type() == av.element_type() {
            continue;
        }
        match (bv, av) {
            (Bson::Document(bd), Bson::Document(ad)) => {
                out.subs.push((i, Diff::Doc(diff_doc(bd, ad))));
            }
            (Bson::Array(ba), Bson::Array(aa)) => out.subs.push((i, Diff::Arr(diff_arr(ba, aa)))),
            _ => out.mods.push((i, Mod::Set(av.clone(), true))),
        }
    }
    if after.len() < before.len() {
        out.new_size = Some(u32::try_from(after.len()).unwrap_or(u32::MAX));
    }
    for (i, av) in after.iter().enumerate().skip(before.len()) {
        out.mods.push((i, Mod::Set(av.clone(), false)));
    }
    out
}

/// Renders a delta as a change event's update description, as mongod's
/// `change_stream_document_diff_parser` does: per document level, replaced then inserted
/// fields, then removals, then nested deltas; per array, the truncation, then element changes
/// by index.
pub(crate) fn describe_diff(diff: &Diff) -> UpdateDescription {
    let mut out = UpdateDescription::default();
    let mut path: Vec<(String, bool, bool)> = Vec::new();
    describe(diff, &mut path, &mut out);
    out
}

/// Path component: (text, is array index, path ambiguous up to here).
type PathPart = (String, bool, bool);

fn push_part(path: &mut Vec<PathPart>, text: String, is_index: bool) {
    let was_ambiguous = path.last().is_some_and(|p| p.2);
    // A numeric field name (not first) or a field name with a dot makes the path ambiguous;
    // an array index alone does not.
    let numeric = !is_index && !path.is_empty() && array_index(&text).is_some();
    let dotted = !is_index && text.contains('.');
    path.push((text, is_index, was_ambiguous || numeric || dotted));
}

fn record_ambiguity(path: &[PathPart], out: &mut UpdateDescription) {
    if path.last().is_some_and(|p| p.2) {
        let dotted = path
            .iter()
            .map(|p| p.0.as_str())
            .collect::<Vec<_>>()
            .join(".");
        let comps = path
            .iter()
            .map(|(t, idx, _)| {
                if *idx {
                    PathComponent::Index(t.parse().unwrap_or(0))
                } else {
                    PathComponent::Field(t.clone())
                }
            })
            .collect();
        out.disambiguated_paths.push((dotted, comps));
    }
}

fn dotted(path: &[PathPart]) -> String {
    path.iter()
        .map(|p| p.0.as_str())
        .collect::<Vec<_>>()
        .join(".")
}

fn describe(diff: &Diff, path: &mut Vec<PathPart>, out: &mut UpdateDescription) {
    match diff {
        Diff::Doc(d) => {
            for want_existing in [true, false] {
                for (k, m) in &d.entries {
                    if let Mod::Set(v, existed) = m
                        && *existed == want_existing
                    {
                        push_part(path, k.clone(), false);
                        out.updated_fields.insert(dotted(path), v.clone());
                        record_ambiguity(path, out);
                        path.pop();
                    }
                }
            }
            for (k, m) in &d.entries {
                if let Mod::Delete = m {
                    push_part(path, k.clone(), false);
                    out.removed_fields.push(dotted(path));
                    record_ambiguity(path, out);
                    path.pop();
                }
            }
            for (k, sub) in &d.subs {
                push_part(path, k.clone(), false);
                describe(sub, path, out);
                path.pop();
            }
        }
        Diff::Arr(a) => {
            if let Some(n) = a.new_size {
                out.truncated_arrays.push(TruncatedArray {
                    field: dotted(path),
                    new_size: n,
                });
                record_ambiguity(path, out);
            }
            let mut items: Vec<(usize, Result<&Mod, &Diff>)> = a
                .mods
                .iter()
                .map(|(i, m)| (*i, Ok(m)))
                .chain(a.subs.iter().map(|(i, d)| (*i, Err(d))))
                .collect();
            items.sort_by_key(|(i, _)| *i);
            for (i, item) in items {
                push_part(path, i.to_string(), true);
                match item {
                    Ok(Mod::Set(v, _)) => {
                        out.updated_fields.insert(dotted(path), v.clone());
                        record_ambiguity(path, out);
                    }
                    Ok(Mod::Delete) => {}
                    Err(sub) => describe(sub, path, out),
                }
                path.pop();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::{doc, rawdoc};

    #[test]
    fn array_truncation_and_element_updates() {
        let d = update_description(
            &rawdoc! {"_id": 1, "a": 1, "array": ["foo", {"a": "bar"}, 1, 2, 3]},
            &rawdoc! {"_id": 1, "a": 1, "array": ["foo", {"a": "bar"}]},
        );
        assert!(d.updated_fields.is_empty());
        assert!(d.removed_fields.is_empty());
        assert_eq!(
            d.truncated_arrays,
            vec![TruncatedArray {
                field: "array".into(),
                new_size: 2
            }]
        );
        let d = update_description(
            &rawdoc! {"_id": 1, "arr": [1, {"x": 1}], "s": {"t": 1, "u": 2}, "gone": 1},
            &rawdoc! {"_id": 1, "arr": [5, {"x": 2}, 7], "s": {"t": 1}, "new": true},
        );
        assert_eq!(
            d.updated_fields,
            doc! {"new": true, "arr.0": 5, "arr.1.x": 2, "arr.2": 7}
        );
        assert_eq!(d.removed_fields, vec!["gone".to_owned(), "s.u".to_owned()]);
    }

    #[test]
    fn disambiguated_paths_follow_mongod() {
        let d = update_description(
            &rawdoc! {"_id": 1, "a": {"1": 1}},
            &rawdoc! {"_id": 1, "a": {"1": 2}},
        );
        assert_eq!(d.updated_fields, doc! {"a.1": 2});
        assert_eq!(
            d.to_document(true)
                .get_document("disambiguatedPaths")
                .ok()
                .cloned(),
            Some(doc! {"a.1": ["a", "1"]})
        );
        assert!(!d.to_document(false).contains_key("disambiguatedPaths"));
        let d = update_description(
            &rawdoc! {"_id": 1, "a": [{"1": 1}]},
            &rawdoc! {"_id": 1, "a": [{"1": 2}]},
        );
        assert_eq!(
            d.to_document(true)
                .get_document("disambiguatedPaths")
                .ok()
                .cloned(),
            Some(doc! {"a.0.1": ["a", 0, "1"]})
        );
        // An array index alone is not ambiguous.
        let d = update_description(&rawdoc! {"a": [1]}, &rawdoc! {"a": [2]});
        assert!(d.disambiguated_paths.is_empty());
    }
}
