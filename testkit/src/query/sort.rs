//! Sort specifications (`sort` of `find`, `$sort`, `$push` `$sort`), as mongod orders results.
//!
//! Keys compare in the server's total order ([`super::compare`]); an array field sorts by its
//! smallest element ascending and its largest element descending (an empty array sorts as
//! `undefined`, a missing field as `null`), as mongod's `SortKeyGenerator` does.

use std::cmp::Ordering;

use bson::{Bson, Document, RawDocument};

use super::compare::{as_number, cmp_val};
use super::keystring::append_val;
use super::numeric::{Number, cmp_numbers};
use super::path::index_values_split;
use super::value::{DocRef, Val};
use super::{Direction, QueryError};

/// One component of a sort specification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SortKey {
    /// The dotted field path.
    pub path: String,
    /// `1` or `-1`.
    pub direction: Direction,
}

/// A parsed sort specification.
#[derive(Debug, Clone, Default)]
pub struct SortSpec {
    keys: Vec<SortKey>,
    /// The key paths split into components once, for evaluation.
    split: Vec<Vec<String>>,
    natural: Option<Direction>,
}

impl SortSpec {
    /// Parses a sort document such as `{a: 1, "b.c": -1}`. Errors as mongod: 15975 for an
    /// ordering that is not 1/-1, 15974 for a non-numeric, non-`$meta` value, 17312 for an
    /// unknown `$meta`, 40352 for an empty field name; `{$meta: "textScore"}` needs a `$text`
    /// query (not supported) and fails.
    pub fn parse(spec: &RawDocument) -> Result<Self, QueryError> {
        Self::parse_ref(DocRef::Raw(spec))
    }

    /// Parses a decoded sort document.
    pub fn parse_bson(spec: &Document) -> Result<Self, QueryError> {
        Self::parse_ref(DocRef::Owned(spec))
    }

    pub(crate) fn parse_ref(spec: DocRef<'_>) -> Result<Self, QueryError> {
        let mut out = SortSpec::default();
        for (path, value) in spec.iter() {
            if let Some(d) = value.as_doc() {
                return Err(match d.get("$meta").and_then(Val::as_str) {
                    Some("textScore") => QueryError::new(
                        17311,
                        "Location17311",
                        "query requires text score metadata, but it is not available",
                    ),
                    Some(other) => QueryError::location(
                        17312,
                        format!("Unsupported $meta sort for the testkit: {other}"),
                    ),
                    None => QueryError::location(
                        17312,
                        "$meta is the only expression supported by $sort right now",
                    ),
                });
            }
            let direction = match as_number(value.view()) {
                Some(n) if cmp_numbers(n, Number::Int(1)).is_eq() => Direction::Ascending,
                Some(n) if cmp_numbers(n, Number::Int(-1)).is_eq() => Direction::Descending,
                Some(_) => {
                    return Err(QueryError::location(
                        15975,
                        "$sort key ordering must be 1 (for ascending) or -1 (for descending)",
                    ));
                }
                None => {
                    return Err(QueryError::location(
                        15974,
                        format!(
                            "Illegal key in $sort specification: {path}: {}",
                            value.to_bson()
                        ),
                    ));
                }
            };
            if path == "$natural" {
                out.natural = Some(direction);
                continue;
            }
            if path.is_empty() || path.split('.').any(str::is_empty) {
                return Err(QueryError::location(
                    40352,
                    "FieldPath cannot be constructed with empty string",
                ));
            }
            if path.starts_with('$') {
                return Err(QueryError::location(
                    16410,
                    "FieldPath field names may not start with '$'. Consider using $getField or $setField.",
                ));
            }
            out.split.push(path.split('.').map(str::to_owned).collect());
            out.keys.push(SortKey {
                path: path.to_owned(),
                direction,
            });
        }
        Ok(out)
    }

    /// The sort keys in order (without `$natural`).
    pub fn keys(&self) -> &[SortKey] {
        &self.keys
    }

    /// True when there is nothing to sort by.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// `Some(direction)` when the specification contains `$natural: 1|-1` (storage order).
    pub fn natural(&self) -> Option<Direction> {
        self.natural
    }

    /// Compares two stored documents under this specification.
    pub fn compare(&self, a: &RawDocument, b: &RawDocument) -> Ordering {
        self.compare_ref(DocRef::Raw(a), DocRef::Raw(b))
    }

    /// Compares two decoded documents under this specification.
    pub fn compare_bson(&self, a: &Document, b: &Document) -> Ordering {
        self.compare_ref(DocRef::Owned(a), DocRef::Owned(b))
    }

    pub(crate) fn compare_ref(&self, a: DocRef<'_>, b: DocRef<'_>) -> Ordering {
        for (key, comps) in self.keys.iter().zip(&self.split) {
            let va = key_value(a, key.direction, comps);
            let vb = key_value(b, key.direction, comps);
            let o = key.direction.apply(cmp_val(va, vb));
            if o != Ordering::Equal {
                return o;
            }
        }
        Ordering::Equal
    }

    /// A byte string whose order equals [`SortSpec::compare`]'s: sort many documents by
    /// computing this once per document.
    pub fn sort_key(&self, doc: &RawDocument) -> Vec<u8> {
        self.sort_key_ref(DocRef::Raw(doc))
    }

    /// [`SortSpec::sort_key`] of a decoded document.
    pub fn sort_key_bson(&self, doc: &Document) -> Vec<u8> {
        self.sort_key_ref(DocRef::Owned(doc))
    }

    pub(crate) fn sort_key_ref(&self, doc: DocRef<'_>) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 * self.keys.len());
        for (key, comps) in self.keys.iter().zip(&self.split) {
            append_val(
                &mut out,
                key_value(doc, key.direction, comps),
                key.direction,
            );
        }
        out
    }
}

/// The value a document sorts by for one key: the smallest of the values the path reaches
/// (arrays expanded) for ascending order, the largest for descending.
fn key_value<'a>(doc: DocRef<'a>, direction: Direction, comps: &[String]) -> Val<'a> {
    let (values, _) = index_values_split(doc, comps);
    let pick = values.into_iter().reduce(|best, v| {
        let o = cmp_val(v, best);
        let better = match direction {
            Direction::Ascending => o.is_lt(),
            Direction::Descending => o.is_gt(),
        };
        if better { v } else { best }
    });
    pick.unwrap_or(Val::Owned(&NULL))
}

static NULL: Bson = Bson::Null;

#[cfg(test)]
mod tests {
    use super::*;
    use bson::rawdoc;

    fn spec(d: bson::RawDocumentBuf) -> SortSpec {
        SortSpec::parse(&d).expect("valid sort")
    }

    #[test]
    fn arrays_sort_by_min_ascending_and_max_descending() {
        let a = rawdoc! {"x": [1, 10]};
        let b = rawdoc! {"x": 5};
        let asc = spec(rawdoc! {"x": 1});
        let desc = spec(rawdoc! {"x": -1});
        assert_eq!(asc.compare(&a, &b), Ordering::Less);
        assert_eq!(desc.compare(&a, &b), Ordering::Less);
        assert_eq!(asc.sort_key(&a).cmp(&asc.sort_key(&b)), Ordering::Less);
        assert_eq!(desc.sort_key(&a).cmp(&desc.sort_key(&b)), Ordering::Less);
    }

    #[test]
    fn missing_sorts_as_null_and_empty_array_before_it() {
        let asc = spec(rawdoc! {"x": 1, "y": -1});
        let missing = rawdoc! {"y": 1};
        let null = rawdoc! {"x": null, "y": 2};
        let empty = rawdoc! {"x": []};
        let num = rawdoc! {"x": 0};
        assert_eq!(asc.compare(&empty, &missing), Ordering::Less);
        assert_eq!(asc.compare(&null, &missing), Ordering::Less); // tie on x, y descending
        assert_eq!(asc.compare(&missing, &num), Ordering::Less);
    }

    #[test]
    fn parse_errors_match_the_server() {
        let err = SortSpec::parse(&rawdoc! {"a": 2}).expect_err("bad ordering");
        assert_eq!(err.code, 15975);
        let err = SortSpec::parse(&rawdoc! {"a": "x"}).expect_err("bad value");
        assert_eq!(err.code, 15974);
        let s = spec(rawdoc! {"$natural": -1});
        assert_eq!(s.natural(), Some(Direction::Descending));
        assert!(s.is_empty());
        let s = spec(rawdoc! {"a": 1.0, "b": -1_i64});
        assert_eq!(s.keys().len(), 2);
    }
}
