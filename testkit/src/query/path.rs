//! Dotted field paths with the server's array-traversal semantics.
//!
//! Three flavours of lookup exist in mongod and all are here:
//! - [`get_path`]: "getFieldDotted" — documents only, a numeric component indexes an array;
//!   no implicit traversal (used by `_id` extraction, `$` update targets, upsert seeding).
//! - [`distinct_values`] / the index-key lookup behind [`super::keystring::index_keys`]: arrays
//!   met along the path are traversed element by element and a leaf array is expanded one level
//!   (`distinct` and multikey index keys).
//! - the filter traversal (crate-internal, used by [`super::filter`]): every candidate value a
//!   predicate is tested against, including missing values and whole leaf arrays.

use bson::{Bson, Document, RawBsonRef, RawDocument};

use super::value::{ArrRef, DocRef, Val};

/// Parses an array index path component the way mongod's `FieldRef` does: ASCII digits only,
/// no leading zero (except "0" itself).
pub(crate) fn array_index(component: &str) -> Option<usize> {
    let bytes = component.as_bytes();
    if bytes.is_empty() || !bytes.iter().all(u8::is_ascii_digit) {
        return None;
    }
    if bytes.len() > 1 && bytes[0] == b'0' {
        return None;
    }
    component.parse().ok()
}

/// Looks up a dotted path without implicit array traversal: each component selects a field of
/// a document or, when it is a non-negative integer, an element of an array.
pub fn get_path<'a>(doc: &'a RawDocument, path: &str) -> Option<RawBsonRef<'a>> {
    match get_val(DocRef::Raw(doc), path)? {
        Val::Raw(r) => Some(r),
        Val::Owned(_) => None,
    }
}

/// [`get_path`] on a decoded document.
pub fn get_path_bson<'a>(doc: &'a Document, path: &str) -> Option<&'a Bson> {
    match get_val(DocRef::Owned(doc), path)? {
        Val::Owned(b) => Some(b),
        Val::Raw(_) => None,
    }
}

/// [`get_path`] over either representation.
pub(crate) fn get_val<'a>(doc: DocRef<'a>, path: &str) -> Option<Val<'a>> {
    let mut parts = path.split('.');
    let first = parts.next()?;
    let mut cur = doc.get(first)?;
    for part in parts {
        cur = match (cur.as_doc(), cur.as_arr()) {
            (Some(d), _) => d.get(part)?,
            (_, Some(a)) => a.get(array_index(part)?)?,
            _ => return None,
        };
    }
    Some(cur)
}

/// The values `distinct` reports for a path: arrays along the path are traversed, a leaf array
/// contributes its elements (one level), missing values contribute nothing.
pub fn distinct_values<'a>(doc: &'a RawDocument, path: &str) -> Vec<RawBsonRef<'a>> {
    let comps: Vec<&str> = path.split('.').collect();
    let mut out = Vec::new();
    let mut multikey = false;
    collect_index_values(
        Some(Val::Raw(RawBsonRef::Document(doc))),
        &comps,
        &mut out,
        &mut multikey,
        false,
    );
    out.into_iter()
        .filter_map(|v| match v {
            Some(Val::Raw(r)) => Some(r),
            _ => None,
        })
        .collect()
}

/// Index-key values for one field of a key pattern and whether an array was met (multikey).
/// Missing values key as `null`; an empty leaf array keys as `undefined`, as in mongod.
pub(crate) fn index_values<'a>(doc: DocRef<'a>, path: &str) -> (Vec<Val<'a>>, bool) {
    let comps: Vec<&str> = path.split('.').collect();
    index_values_split(doc, &comps)
}

/// [`index_values`] with the path already split into components.
pub(crate) fn index_values_split<'a, S: AsRef<str>>(
    doc: DocRef<'a>,
    comps: &[S],
) -> (Vec<Val<'a>>, bool) {
    static NULL_REF: Bson = Bson::Null;
    static UNDEFINED_REF: Bson = Bson::Undefined;
    let mut found = Vec::new();
    let mut multikey = false;
    collect_index_values_doc(doc, comps, &mut found, &mut multikey, true);
    let mut out: Vec<Val<'a>> = found
        .into_iter()
        .map(|v| v.unwrap_or(Val::Owned(&NULL_REF)))
        .collect();
    if out.is_empty() {
        // Only an empty leaf array produces no value at all.
        out.push(Val::Owned(if multikey {
            &UNDEFINED_REF
        } else {
            &NULL_REF
        }));
    }
    (out, multikey)
}

/// Collects index-key values; `None` entries stand for a missing value (null key). With
/// `missing_as_null` false (distinct), missing values are not recorded.
fn collect_index_values<'a, S: AsRef<str>>(
    cur: Option<Val<'a>>,
    comps: &[S],
    out: &mut Vec<Option<Val<'a>>>,
    multikey: &mut bool,
    missing_as_null: bool,
) {
    match cur.and_then(Val::as_doc) {
        Some(d) => collect_index_values_doc(d, comps, out, multikey, missing_as_null),
        None => {
            if missing_as_null {
                out.push(None);
            }
        }
    }
}

fn collect_index_values_doc<'a, S: AsRef<str>>(
    doc: DocRef<'a>,
    comps: &[S],
    out: &mut Vec<Option<Val<'a>>>,
    multikey: &mut bool,
    missing_as_null: bool,
) {
    let Some((first, rest)) = comps.split_first() else {
        return;
    };
    let Some(v) = doc.get(first.as_ref()) else {
        if missing_as_null {
            out.push(None);
        }
        return;
    };
    if rest.is_empty() {
        match v.as_arr() {
            Some(a) => {
                *multikey = true;
                out.extend(a.iter().map(Some));
            }
            None => out.push(Some(v)),
        }
        return;
    }
    match (v.as_doc(), v.as_arr()) {
        (Some(d), _) => collect_index_values_doc(d, rest, out, multikey, missing_as_null),
        (_, Some(a)) => {
            // A numeric component right after an array selects that element.
            if let Some(i) = rest.first().and_then(|c| array_index(c.as_ref())) {
                if let Some(elem) = a.get(i) {
                    let after = rest.get(1..).unwrap_or_default();
                    if after.is_empty() {
                        out.push(Some(elem));
                    } else {
                        collect_index_values(Some(elem), after, out, multikey, missing_as_null);
                    }
                } else if missing_as_null {
                    out.push(None);
                }
                return;
            }
            *multikey = true;
            let before = out.len();
            for elem in a.iter() {
                match elem.as_doc() {
                    Some(d) => collect_index_values_doc(d, rest, out, multikey, missing_as_null),
                    None => {
                        if missing_as_null {
                            out.push(None);
                        }
                    }
                }
            }
            if out.len() == before && missing_as_null {
                out.push(None);
            }
        }
        _ => {
            if missing_as_null {
                out.push(None);
            }
        }
    }
}

/// One value a filter predicate is tested against.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Candidate<'a> {
    /// The value, or `None` when the path is missing (mongod's EOO element).
    pub(crate) value: Option<Val<'a>>,
    /// Index into the first array traversed on the way, for the positional `$` operator.
    pub(crate) array_index: Option<usize>,
    /// True when the value is an element produced by expanding a leaf array (as opposed to
    /// the array itself or a plain value).
    pub(crate) from_leaf_array: bool,
}

/// Visits every candidate value for `comps` under `doc`, as mongod's `BSONElementIterator`
/// does for a leaf predicate: documents are descended; an array met before the end of the path
/// is traversed element by element (documents among its elements are descended; a numeric
/// component also selects the element at that index); at the end of the path, an array yields
/// each of its elements and then itself. A missing field yields one `None`. Stops early and
/// returns true as soon as `f` returns true.
pub(crate) fn any_candidate<'a>(
    doc: DocRef<'a>,
    comps: &[String],
    f: &mut dyn FnMut(Candidate<'a>) -> bool,
) -> bool {
    visit_doc(doc, comps, None, f)
}

fn visit_doc<'a>(
    doc: DocRef<'a>,
    comps: &[String],
    array_index: Option<usize>,
    f: &mut dyn FnMut(Candidate<'a>) -> bool,
) -> bool {
    let Some((first, rest)) = comps.split_first() else {
        return false;
    };
    match doc.get(first.as_str()) {
        None => f(Candidate {
            value: None,
            array_index,
            from_leaf_array: false,
        }),
        Some(v) => visit_value(v, rest, array_index, f),
    }
}

fn visit_value<'a>(
    v: Val<'a>,
    rest: &[String],
    array_index: Option<usize>,
    f: &mut dyn FnMut(Candidate<'a>) -> bool,
) -> bool {
    if rest.is_empty() {
        if let Some(a) = v.as_arr() {
            for (i, elem) in a.iter().enumerate() {
                if f(Candidate {
                    value: Some(elem),
                    array_index: array_index.or(Some(i)),
                    from_leaf_array: true,
                }) {
                    return true;
                }
            }
        }
        return f(Candidate {
            value: Some(v),
            array_index,
            from_leaf_array: false,
        });
    }
    match (v.as_doc(), v.as_arr()) {
        (Some(d), _) => visit_doc(d, rest, array_index, f),
        (_, Some(a)) => visit_array(a, rest, array_index, f),
        // A scalar where the path continues: the rest of the path is missing.
        _ => f(Candidate {
            value: None,
            array_index,
            from_leaf_array: false,
        }),
    }
}

fn visit_array<'a>(
    a: ArrRef<'a>,
    rest: &[String],
    array_index: Option<usize>,
    f: &mut dyn FnMut(Candidate<'a>) -> bool,
) -> bool {
    let Some((next, after)) = rest.split_first() else {
        return false;
    };
    let positional = self::array_index(next);
    for (i, elem) in a.iter().enumerate() {
        let idx = array_index.or(Some(i));
        if positional == Some(i) && visit_value(elem, after, idx, f) {
            return true;
        }
        if let Some(d) = elem.as_doc()
            && visit_doc(d, rest, idx, f)
        {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::rawdoc;

    #[test]
    fn get_path_follows_documents_and_indexes() {
        let d = rawdoc! {"a": {"b": [10, {"c": 5}]}};
        assert_eq!(get_path(&d, "a.b.0"), Some(RawBsonRef::Int32(10)));
        assert_eq!(get_path(&d, "a.b.1.c"), Some(RawBsonRef::Int32(5)));
        assert_eq!(get_path(&d, "a.b.c"), None);
        assert_eq!(get_path(&d, "a.x"), None);
        assert_eq!(get_path(&d, "a.b.01"), None);
    }

    #[test]
    fn distinct_values_unwind_arrays() {
        let d = rawdoc! {"a": [{"b": 1}, {"b": [2, 3]}, {"c": 1}, 7]};
        assert_eq!(
            distinct_values(&d, "a.b"),
            vec![
                RawBsonRef::Int32(1),
                RawBsonRef::Int32(2),
                RawBsonRef::Int32(3)
            ]
        );
    }

    #[test]
    fn filter_candidates_include_missing_and_whole_arrays() {
        let d = rawdoc! {"a": [{"b": [1, 2]}, {"c": 3}]};
        let mut seen = Vec::new();
        any_candidate(
            DocRef::Raw(&d),
            &["a".to_owned(), "b".to_owned()],
            &mut |c| {
                seen.push((c.value.map(|v| v.to_bson()), c.array_index));
                false
            },
        );
        assert_eq!(
            seen,
            vec![
                (Some(Bson::Int32(1)), Some(0)),
                (Some(Bson::Int32(2)), Some(0)),
                (
                    Some(Bson::Array(vec![Bson::Int32(1), Bson::Int32(2)])),
                    Some(0)
                ),
                (None, Some(1)),
            ]
        );
    }
}
