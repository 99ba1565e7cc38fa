//! Update specifications: replacement documents, update-operator documents and aggregation
//! pipelines, applied to one document as mongod 7.0's `UpdateDriver` does.
//!
//! Operators: `$set $unset $inc $mul $min $max $rename $currentDate $setOnInsert $push`
//! (with `$each $slice $sort $position`) `$addToSet` (with `$each`) `$pop $pull $pullAll $bit`;
//! positional `$`, `$[]` and `$[<identifier>]` with `arrayFilters`. Pipelines: `$set`/
//! `$addFields`, `$unset`, `$project`, `$replaceRoot`/`$replaceWith`. Errors are the server's:
//! 66 `ImmutableField` for changing `_id`, 40 `ConflictingUpdateOperators` for overlapping
//! paths, 14 `TypeMismatch` for `$inc` on a non-number, 2 `BadValue` when the positional
//! operator finds no array match, 9 `FailedToParse` for malformed operators, ...

use bson::{RawArray, RawBsonRef, RawDocument, RawDocumentBuf};

use super::QueryError;
use super::diff::UpdateDescription;
use super::expr::Variables;
use super::filter::{Filter, MatchDetails};

/// A parsed update.
#[derive(Debug, Clone)]
pub struct Update {
    _private: (),
}

/// The result of applying an update that changed the document.
#[derive(Debug, Clone)]
pub struct AppliedUpdate {
    /// The new document.
    pub document: RawDocumentBuf,
    /// The change-stream `updateDescription` of the change as mongod logs it: from the
    /// operators' own log for operator updates, from a diff for pipeline updates; `None` for
    /// replacements (whose change event is a `replace`).
    pub description: Option<UpdateDescription>,
}

impl Update {
    /// Parses the `u` of an update statement: a document (replacement when its first field does
    /// not start with `$`, operators otherwise) or an array (pipeline). `array_filters` are the
    /// statement's `arrayFilters` (error 2 when given for a replacement or pipeline, 9 when an
    /// identifier is unused or defined twice).
    pub fn parse(
        update: RawBsonRef<'_>,
        array_filters: Option<&RawArray>,
    ) -> Result<Self, QueryError> {
        Self::parse_with(update, array_filters, &Variables::new())
    }

    /// [`Update::parse`] with variables for pipeline expressions (`let`, `$$NOW`).
    pub fn parse_with(
        update: RawBsonRef<'_>,
        array_filters: Option<&RawArray>,
        vars: &Variables,
    ) -> Result<Self, QueryError> {
        let _ = (update, array_filters, vars);
        Err(QueryError::not_implemented("updates"))
    }

    /// True for a replacement document.
    pub fn is_replacement(&self) -> bool {
        false
    }

    /// True for an aggregation-pipeline update.
    pub fn is_pipeline(&self) -> bool {
        false
    }

    /// Applies the update to a matched document. `details` are the filter's match details (for
    /// the positional `$`). `Ok(None)` when the document is unchanged (so `nModified` is 0).
    pub fn apply(
        &self,
        doc: &RawDocument,
        details: Option<&MatchDetails>,
    ) -> Result<Option<RawDocumentBuf>, QueryError> {
        Ok(self.apply_logged(doc, details)?.map(|a| a.document))
    }

    /// [`Update::apply`], also returning the change's `updateDescription`.
    pub fn apply_logged(
        &self,
        doc: &RawDocument,
        details: Option<&MatchDetails>,
    ) -> Result<Option<AppliedUpdate>, QueryError> {
        let _ = (doc, details);
        Err(QueryError::not_implemented("updates"))
    }

    /// Builds the document an upsert inserts when `filter` matched nothing: the filter's
    /// equality fields (dotted paths expanded, `_id` first), then the update applied with
    /// `$setOnInsert` active (or, for a replacement, the replacement with the filter's `_id`).
    /// When the result has no `_id`, a new ObjectId is generated and placed first.
    pub fn upsert_document(&self, filter: &Filter) -> Result<RawDocumentBuf, QueryError> {
        let _ = filter;
        Err(QueryError::not_implemented("upserts"))
    }
}
