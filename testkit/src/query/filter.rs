//! Query filters (`find`, `update`, `delete`, `$match`, ...), as mongod 7.0's
//! `MatchExpression` parses and evaluates them.
//!
//! Supported: comparison (`$eq $ne $gt $gte $lt $lte $in $nin`), logical (`$and $or $nor
//! $not`), element (`$exists $type`), evaluation (`$regex`/`$options`, `$mod`, `$expr`,
//! `$comment`, `$jsonSchema` is rejected), array (`$all $elemMatch $size`), bitwise
//! (`$bitsAllSet $bitsAnySet $bitsAllClear $bitsAnyClear`), with mongod's implicit array
//! matching and null/missing rules. `$where`, `$text` and the geo operators answer with the
//! error a server without a script engine / the required index gives.

use bson::{Bson, Document, RawDocument};

use super::QueryError;
use super::expr::Variables;

/// Where a filter matched inside arrays, for the positional `$` update and projection
/// operators (mongod's "elemMatchKey").
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MatchDetails {
    positional: Option<usize>,
}

impl MatchDetails {
    /// The index, within the first array traversed by the predicate that matched, of the
    /// element that made the document match; `None` when no array was involved.
    pub fn positional_index(&self) -> Option<usize> {
        self.positional
    }
}

/// A parsed query filter.
#[derive(Debug, Clone)]
pub struct Filter {
    _private: (),
}

impl Filter {
    /// Parses a filter document. Errors are the server's (2 `BadValue` "unknown operator:
    /// $foo", 2 "$in needs an array", 51024 / 2 for malformed `$regex`, ...).
    pub fn parse(filter: &RawDocument) -> Result<Self, QueryError> {
        Self::parse_with(filter, &Variables::new())
    }

    /// Parses a filter whose `$expr` parts may use the given variables (`let`, `$$NOW`).
    pub fn parse_with(filter: &RawDocument, vars: &Variables) -> Result<Self, QueryError> {
        let _ = (filter, vars);
        Err(QueryError::not_implemented("filters"))
    }

    /// The filter `{}`, which matches every document.
    pub fn match_all() -> Self {
        Filter { _private: () }
    }

    /// True when the filter matches every document (`{}`, or only `$comment`).
    pub fn is_match_all(&self) -> bool {
        false
    }

    /// Tests a stored document. Fails only when an `$expr` evaluation fails (as the server's
    /// query would).
    pub fn matches(&self, doc: &RawDocument) -> Result<bool, QueryError> {
        Ok(self.matches_details(doc)?.is_some())
    }

    /// Tests a stored document and, on a match, reports where it matched inside arrays.
    pub fn matches_details(&self, doc: &RawDocument) -> Result<Option<MatchDetails>, QueryError> {
        let _ = doc;
        Err(QueryError::not_implemented("filters"))
    }

    /// Tests a decoded document (pipeline stages after the first produce these).
    pub fn matches_bson(&self, doc: &Document) -> Result<bool, QueryError> {
        let _ = doc;
        Err(QueryError::not_implemented("filters"))
    }

    /// The single `_id` value the filter pins when it is `{_id: v}`, `{_id: {$eq: v}}` or such a
    /// clause inside a top-level `$and` (v not a regex, not an operator document, not an
    /// array), so the server can use its `_id` index; `None` otherwise.
    pub fn id_value(&self) -> Option<Bson> {
        None
    }

    /// The equality fields of the filter, in filter order, as mongod seeds an upserted
    /// document: top-level `{path: v}` and `{path: {$eq: v}}` clauses, also inside `$and`;
    /// paths as written (dotted paths are expanded into nested documents by the update
    /// module). Regexes and operator documents other than `$eq` do not seed.
    pub fn equality_fields(&self) -> Vec<(String, Bson)> {
        Vec::new()
    }
}
