//! Find projections (`projection` of `find`/`findAndModify`), as mongod 7.0 applies them.
//!
//! Inclusion (`{a: 1}`), exclusion (`{a: 0}`), `_id` included by default unless excluded,
//! dotted paths (through arrays of documents), `$slice`, `$elemMatch`, the positional
//! `field.$`, `$literal` and other aggregation expressions (4.4+). Mixing inclusion and
//! exclusion other than for `_id` fails as mongod does (31254 "Cannot do exclusion on field b
//! in inclusion projection", 31253 "Cannot do inclusion on field b in exclusion projection").

use bson::{RawDocument, RawDocumentBuf};

use super::QueryError;
use super::expr::Variables;
use super::filter::MatchDetails;

/// A parsed find projection.
#[derive(Debug, Clone)]
pub struct Projection {
    _private: (),
}

impl Projection {
    /// Parses a projection document.
    pub fn parse(spec: &RawDocument) -> Result<Self, QueryError> {
        Self::parse_with(spec, &Variables::new())
    }

    /// Parses a projection whose expressions may use the given variables.
    pub fn parse_with(spec: &RawDocument, vars: &Variables) -> Result<Self, QueryError> {
        let _ = (spec, vars);
        Err(QueryError::not_implemented("projections"))
    }

    /// True when the projection uses the positional `field.$` form, which needs the
    /// [`MatchDetails`] of the query's filter.
    pub fn needs_match_details(&self) -> bool {
        false
    }

    /// Projects one document. `details` are the filter's match details for positional
    /// projections (error 51246 "positional operator '.$' couldn't find a matching element in
    /// the array" when absent or without an array position, as mongod).
    pub fn apply(
        &self,
        doc: &RawDocument,
        details: Option<&MatchDetails>,
    ) -> Result<RawDocumentBuf, QueryError> {
        let _ = (doc, details);
        Err(QueryError::not_implemented("projections"))
    }
}
