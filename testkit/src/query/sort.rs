//! Sort specifications (`sort` of `find`, `$sort`, `$push` `$sort`), as mongod orders results.
//!
//! Keys compare in the server's total order ([`super::compare`]); an array field sorts by its
//! smallest element ascending and its largest element descending (an empty array sorts as
//! `undefined`, a missing field as `null`), as mongod's `SortKeyGenerator` does.

use std::cmp::Ordering;

use bson::{Document, RawDocument};

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
    natural: Option<Direction>,
}

impl SortSpec {
    /// Parses a sort document such as `{a: 1, "b.c": -1}`. Errors as mongod: 15975 for an
    /// ordering that is not 1/-1 (or a number that rounds to neither), 17312 / 31138 for bad
    /// `$meta` forms, 15974 for a non-numeric, non-`$meta` value.
    pub fn parse(spec: &RawDocument) -> Result<Self, QueryError> {
        let _ = spec;
        Err(QueryError::not_implemented("sort"))
    }

    /// The sort keys in order (without `$natural`).
    pub fn keys(&self) -> &[SortKey] {
        &self.keys
    }

    /// True when there is nothing to sort by.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// `Some(direction)` when the specification is `{$natural: 1|-1}` (storage order).
    pub fn natural(&self) -> Option<Direction> {
        self.natural
    }

    /// Compares two stored documents under this specification.
    pub fn compare(&self, a: &RawDocument, b: &RawDocument) -> Ordering {
        let _ = (a, b);
        Ordering::Equal
    }

    /// Compares two decoded documents under this specification.
    pub fn compare_bson(&self, a: &Document, b: &Document) -> Ordering {
        let _ = (a, b);
        Ordering::Equal
    }

    /// A byte string whose order equals [`SortSpec::compare`]'s: sort many documents by
    /// computing this once per document.
    pub fn sort_key(&self, doc: &RawDocument) -> Vec<u8> {
        let _ = doc;
        Vec::new()
    }
}
