//! Aggregation pipelines: parsing and running the stages that need no server state.
//!
//! Implemented stages: `$match $project $addFields $set $unset $sort $limit $skip $group
//! $count $unwind $replaceRoot $replaceWith $sample $sortByCount $bucket $facet $redact
//! $documents`, plus `$lookup` (equality and pipeline forms) and `$unionWith`, which read other
//! collections through [`PipelineContext`]. Stages that need the server itself (see
//! [`SERVER_STAGES`]) are parsed as [`Stage`]s the server can find and intercept; running a
//! pipeline that still contains one fails. An unknown stage fails to parse with 40324
//! "Unrecognized pipeline stage name: '$foo'".
//!
//! Documents flow through the stages decoded (`bson::Document`), except that a leading
//! `$match` tests the stored raw documents before decoding them, and leading per-document
//! stages (`$match $project $addFields $set $unset $replaceRoot $replaceWith $redact $skip
//! $limit`) pull input lazily, so `$limit` stops reading early.

use std::ops::Range;

use bson::{Bson, Document, RawArray, RawBsonRef, RawDocument, RawDocumentBuf};

use super::QueryError;
use super::compare::compare_bson;
use super::expr::{Expression, Variables, avg_values, sum_values};
use super::filter::Filter;
use super::keystring::encode_bson;
use super::numeric::{Num, f64_to_i64_exact};
use super::path::index_values;
use super::projection::Projection;
use super::sort::SortSpec;
use super::value::{DocRef, Val, check_nesting, raw_doc_to_document, type_alias};

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
    kind: Kind,
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
        matches!(self.kind, Kind::Server)
    }
}

#[derive(Debug, Clone)]
enum Accumulator {
    Sum(Expression),
    Avg(Expression),
    Min(Expression),
    Max(Expression),
    First(Expression),
    Last(Expression),
    Push(Expression),
    AddToSet(Expression),
    MergeObjects(Expression),
    StdDev(Expression, bool),
    Count,
}

#[derive(Debug, Clone)]
enum AddField {
    Value(Box<Expression>),
    Nested(Vec<(String, AddField)>),
}

#[derive(Debug, Clone)]
struct Lookup {
    db: Option<String>,
    from: Option<String>,
    local: Option<String>,
    foreign: Option<String>,
    lets: Vec<(String, Expression)>,
    pipeline: Option<Box<Pipeline>>,
    as_field: String,
}

#[derive(Debug, Clone)]
enum Kind {
    Match(Box<Filter>),
    Project(Box<Projection>),
    AddFields(Vec<(String, AddField)>),
    Sort(SortSpec),
    Limit(u64),
    Skip(u64),
    Group(Box<Expression>, Vec<(String, Accumulator)>),
    Count(String),
    Unwind {
        path: String,
        index_field: Option<String>,
        preserve: bool,
    },
    ReplaceRoot(Box<Expression>),
    Sample(u64),
    Bucket {
        group_by: Box<Expression>,
        boundaries: Vec<Bson>,
        default: Option<Bson>,
        output: Vec<(String, Accumulator)>,
    },
    Facet(Vec<(String, Pipeline)>),
    Redact(Box<Expression>),
    Documents(Box<Expression>),
    Lookup(Box<Lookup>),
    UnionWith {
        db: Option<String>,
        coll: Option<String>,
        pipeline: Option<Box<Pipeline>>,
    },
    Server,
}

/// A parsed pipeline.
#[derive(Debug, Clone)]
pub struct Pipeline {
    stages: Vec<Stage>,
    vars: Variables,
}

fn loc(code: i32, msg: impl Into<String>) -> QueryError {
    QueryError::location(code, msg)
}

fn type_name(v: Val<'_>) -> &'static str {
    type_alias(v.element_type())
}

impl Pipeline {
    /// Parses a pipeline (an array of single-field stage documents). Errors as mongod: 40323
    /// "A pipeline stage specification object must contain exactly one field.", 40324 unknown
    /// stage, 14 for a non-document stage, and each stage's own parse errors.
    pub fn parse(stages: &RawArray, vars: &Variables) -> Result<Self, QueryError> {
        let mut out = Vec::new();
        for s in stages {
            let s = s.map_err(|e| QueryError::bad_value(e.to_string()))?;
            let RawBsonRef::Document(d) = s else {
                return Err(QueryError::type_mismatch(
                    "Each element of the 'pipeline' array must be an object",
                ));
            };
            check_nesting(DocRef::Raw(d))?;
            out.push(parse_stage(d, vars)?);
        }
        let n = out.len();
        for (i, s) in out.iter().enumerate() {
            match s.name.as_str() {
                "$out" | "$merge" if i + 1 != n => {
                    return Err(loc(
                        40601,
                        format!("{} can only be the final stage in the pipeline", s.name),
                    ));
                }
                "$changeStream" | "$documents" | "$collStats" | "$indexStats" | "$currentOp"
                | "$listSessions" | "$listLocalSessions"
                    if i != 0 =>
                {
                    return Err(loc(
                        40602,
                        format!("{} is only valid as the first stage in a pipeline", s.name),
                    ));
                }
                _ => {}
            }
        }
        Ok(Pipeline {
            stages: out,
            vars: vars.clone(),
        })
    }

    /// Parses the pipeline of a pipeline-style update (only `$addFields`/`$set`, `$project`/
    /// `$unset`, `$replaceRoot`/`$replaceWith` are allowed there; others fail with 72
    /// `InvalidOptions` as in mongod).
    pub(crate) fn parse_update(stages: &RawArray, vars: &Variables) -> Result<Self, QueryError> {
        let p = Self::parse(stages, vars)?;
        for s in &p.stages {
            if !matches!(
                s.name.as_str(),
                "$addFields" | "$set" | "$project" | "$unset" | "$replaceRoot" | "$replaceWith"
            ) {
                return Err(QueryError::new(
                    72,
                    "InvalidOptions",
                    format!("{} is not allowed to be used within an update", s.name),
                ));
            }
        }
        Ok(p)
    }

    /// Runs a pipeline-style update over one document.
    pub(crate) fn run_update(
        &self,
        doc: &Document,
        _vars: &Variables,
    ) -> Result<Document, QueryError> {
        let mut cur = doc.clone();
        for s in &self.stages {
            match stream_one(s, cur, &self.vars)? {
                Some(d) => cur = d,
                None => return Ok(Document::new()),
            }
        }
        Ok(cur)
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
        let docs = self.run_documents(input, ctx)?;
        docs.iter()
            .map(|d| {
                RawDocumentBuf::try_from(d).map_err(|e| {
                    QueryError::bad_value(format!("cannot encode a pipeline result: {e}"))
                })
            })
            .collect()
    }

    /// [`Pipeline::run`] with decoded results.
    pub fn run_documents<I, D>(
        &self,
        input: I,
        ctx: &mut dyn PipelineContext,
    ) -> Result<Vec<Document>, QueryError>
    where
        I: IntoIterator<Item = D>,
        D: AsRef<RawDocument>,
    {
        if let Some(s) = self.stages.iter().find(|s| s.is_server_stage()) {
            return Err(QueryError::bad_value(format!(
                "{} must be run by the server, not by the query module",
                s.name
            )));
        }
        // Leading streaming stages process input lazily.
        let prefix = self
            .stages
            .iter()
            .take_while(|s| is_streaming(&s.kind))
            .count();
        let mut counters: Vec<u64> = vec![0; prefix];
        // A `$count`, or a `$group` of constants (`{_id: null, n: {$sum: 1}}`, how drivers
        // count), reads no field: the documents reaching it are not decoded.
        let contents_unused = match self.stages.get(prefix).map(|s| &s.kind) {
            Some(Kind::Count(_)) => true,
            Some(Kind::Group(id, accs)) => {
                id.is_constant()
                    && accs
                        .iter()
                        .all(|(_, a)| acc_expr(a).is_none_or(Expression::is_constant))
            }
            _ => false,
        };
        let mut docs = Vec::new();
        let mut exhausted = false;
        if matches!(
            self.stages.first().map(|s| &s.kind),
            Some(Kind::Documents(_))
        ) {
            exhausted = true;
        }
        if !exhausted {
            'input: for d in input {
                let raw = d.as_ref();
                let mut cur: Option<Document> = None;
                for (i, s) in self.stages.iter().take(prefix).enumerate() {
                    match &s.kind {
                        Kind::Limit(n) => {
                            if counters[i] >= *n {
                                break 'input;
                            }
                            counters[i] += 1;
                        }
                        Kind::Skip(n) => {
                            if counters[i] < *n {
                                counters[i] += 1;
                                continue 'input;
                            }
                        }
                        Kind::Match(f) if cur.is_none() => {
                            if !f.matches(raw)? {
                                continue 'input;
                            }
                        }
                        _ => {
                            let d = cur.take().unwrap_or_else(|| raw_doc_to_document(raw));
                            match stream_one(s, d, &self.vars)? {
                                Some(d) => cur = Some(d),
                                None => continue 'input,
                            }
                        }
                    }
                }
                docs.push(cur.unwrap_or_else(|| {
                    if contents_unused {
                        Document::new()
                    } else {
                        raw_doc_to_document(raw)
                    }
                }));
            }
        }
        let mut docs = docs;
        for s in self.stages.iter().skip(prefix) {
            docs = run_stage(s, docs, ctx, &self.vars)?;
        }
        Ok(docs)
    }

    /// Runs over decoded documents (sub-pipelines of `$facet`, `$lookup`, `$unionWith`).
    fn run_decoded(
        &self,
        docs: Vec<Document>,
        ctx: &mut dyn PipelineContext,
        vars: &Variables,
    ) -> Result<Vec<Document>, QueryError> {
        if let Some(s) = self.stages.iter().find(|s| s.is_server_stage()) {
            return Err(QueryError::bad_value(format!(
                "{} is not allowed in this context",
                s.name
            )));
        }
        let mut docs = docs;
        for s in &self.stages {
            docs = run_stage(s, docs, ctx, vars)?;
        }
        Ok(docs)
    }
}

fn is_streaming(kind: &Kind) -> bool {
    matches!(
        kind,
        Kind::Match(_)
            | Kind::Project(_)
            | Kind::AddFields(_)
            | Kind::ReplaceRoot(_)
            | Kind::Redact(_)
            | Kind::Limit(_)
            | Kind::Skip(_)
    )
}

// ---------------------------------------------------------------------------------------------
// Parsing

fn parse_stage(d: &RawDocument, vars: &Variables) -> Result<Stage, QueryError> {
    let mut it = DocRef::Raw(d).iter();
    let (Some((name, arg)), None) = (it.next(), it.next()) else {
        return Err(loc(
            40323,
            "A pipeline stage specification object must contain exactly one field.",
        ));
    };
    let kind = if SERVER_STAGES.contains(&name) {
        Kind::Server
    } else {
        parse_kind(name, arg, vars)?
    };
    Ok(Stage {
        name: name.to_owned(),
        spec: d.to_owned(),
        kind,
    })
}

fn expect_doc<'a>(name: &str, arg: Val<'a>, code: i32) -> Result<DocRef<'a>, QueryError> {
    arg.as_doc().ok_or_else(|| {
        loc(
            code,
            format!(
                "{name} specification must be an object, but found: {}",
                type_name(arg)
            ),
        )
    })
}

fn parse_kind(name: &str, arg: Val<'_>, vars: &Variables) -> Result<Kind, QueryError> {
    Ok(match name {
        "$match" => {
            let d = arg
                .as_doc()
                .ok_or_else(|| loc(15959, "the match filter must be an expression in an object"))?;
            Kind::Match(Box::new(Filter::parse_doc_ref(d, vars, true)?))
        }
        "$project" => {
            let d = arg
                .as_doc()
                .ok_or_else(|| loc(15969, "$project specification must be an object"))?;
            Kind::Project(Box::new(Projection::parse_aggregation(d, vars)?))
        }
        "$addFields" | "$set" => {
            let d = arg.as_doc().ok_or_else(|| {
                loc(
                    40272,
                    format!(
                        "{name} specification stage must be an object, got {}",
                        type_name(arg)
                    ),
                )
            })?;
            Kind::AddFields(parse_add_fields(d, vars)?)
        }
        "$unset" => {
            let fields: Vec<String> = match (arg.as_str(), arg.as_arr()) {
                (Some(s), _) => vec![s.to_owned()],
                (_, Some(a)) => {
                    let mut v = Vec::new();
                    for x in a.iter() {
                        v.push(
                            x.as_str()
                                .ok_or_else(|| {
                                    loc(31120, "$unset specification must be a string or an array containing only string values")
                                })?
                                .to_owned(),
                        );
                    }
                    if v.is_empty() {
                        return Err(loc(
                            31119,
                            "$unset specification must be a string or an array with at least one field",
                        ));
                    }
                    v
                }
                _ => {
                    return Err(loc(
                        31002,
                        "$unset specification must be a string or an array",
                    ));
                }
            };
            let mut spec = Document::new();
            for f in fields {
                spec.insert(f, 0);
            }
            Kind::Project(Box::new(Projection::parse_aggregation(
                DocRef::Owned(&spec),
                vars,
            )?))
        }
        "$sort" => {
            let d = arg
                .as_doc()
                .ok_or_else(|| loc(15973, "the $sort key specification must be an object"))?;
            let spec = SortSpec::parse_ref(d)?;
            if spec.is_empty() {
                return Err(loc(15976, "$sort stage must have at least one sort key"));
            }
            Kind::Sort(spec)
        }
        "$limit" => {
            let n =
                as_i64(arg).ok_or_else(|| loc(15957, "the limit must be specified as a number"))?;
            if n <= 0 {
                return Err(loc(15958, "the limit must be positive"));
            }
            Kind::Limit(u64::try_from(n).unwrap_or(u64::MAX))
        }
        "$skip" => {
            let n = as_i64(arg).ok_or_else(|| loc(15972, "Argument to $skip must be a number."))?;
            if n < 0 {
                return Err(loc(15956, "Argument to $skip cannot be negative"));
            }
            Kind::Skip(u64::try_from(n).unwrap_or(0))
        }
        "$group" => {
            let d = expect_doc(name, arg, 15947)?;
            let mut id = None;
            let mut accs = Vec::new();
            for (k, v) in d.iter() {
                if k == "_id" {
                    id = Some(Expression::parse_val(v, vars)?);
                    continue;
                }
                if k.contains('.') {
                    return Err(loc(
                        40235,
                        format!("The field name '{k}' cannot contain '.'"),
                    ));
                }
                if k.starts_with('$') {
                    return Err(loc(
                        40236,
                        format!("The field name '{k}' cannot be an operator name"),
                    ));
                }
                accs.push((k.to_owned(), parse_accumulator(k, v, vars)?));
            }
            let id = id.ok_or_else(|| loc(15955, "a group specification must include an _id"))?;
            Kind::Group(Box::new(id), accs)
        }
        "$count" => {
            let f = arg
                .as_str()
                .ok_or_else(|| loc(40156, "the count field must be a non-empty string"))?;
            if f.is_empty() {
                return Err(loc(40157, "the count field must be a non-empty string"));
            }
            if f.starts_with('$') {
                return Err(loc(40158, "the count field cannot be a $-prefixed path"));
            }
            if f.contains('.') {
                return Err(loc(40160, "the count field cannot contain '.'"));
            }
            Kind::Count(f.to_owned())
        }
        "$unwind" => {
            let (path, index_field, preserve) = if let Some(s) = arg.as_str() {
                (s.to_owned(), None, false)
            } else if let Some(d) = arg.as_doc() {
                let mut path = None;
                let mut index = None;
                let mut preserve = false;
                for (k, v) in d.iter() {
                    match k {
                        "path" => {
                            path = Some(
                                v.as_str()
                                    .ok_or_else(|| loc(28808, format!("expected a string as the path for $unwind stage, got {}", type_name(v))))?
                                    .to_owned(),
                            );
                        }
                        "includeArrayIndex" => {
                            let s = v.as_str().ok_or_else(|| {
                                loc(28810, format!("expected a non-empty string for the includeArrayIndex option to $unwind stage, got {}", type_name(v)))
                            })?;
                            if s.is_empty() {
                                return Err(loc(
                                    28810,
                                    "expected a non-empty string for the includeArrayIndex option to $unwind stage, got string",
                                ));
                            }
                            if s.starts_with('$') {
                                return Err(loc(
                                    28822,
                                    format!(
                                        "includeArrayIndex option to $unwind stage should not be prefixed with a '$': {s}"
                                    ),
                                ));
                            }
                            index = Some(s.to_owned());
                        }
                        "preserveNullAndEmptyArrays" => {
                            preserve = match v.view() {
                                super::value::View::Bool(b) => b,
                                _ => {
                                    return Err(loc(
                                        28809,
                                        format!(
                                            "expected a boolean for the preserveNullAndEmptyArrays option to $unwind stage, got {}",
                                            type_name(v)
                                        ),
                                    ));
                                }
                            };
                        }
                        other => {
                            return Err(loc(
                                28811,
                                format!("unrecognized option to $unwind stage: {other}"),
                            ));
                        }
                    }
                }
                (
                    path.ok_or_else(|| loc(28812, "no path specified to $unwind stage"))?,
                    index,
                    preserve,
                )
            } else {
                return Err(loc(
                    15981,
                    format!(
                        "expected either a string or an object as specification for $unwind stage, got {}",
                        type_name(arg)
                    ),
                ));
            };
            let Some(p) = path.strip_prefix('$') else {
                return Err(loc(
                    28818,
                    format!("path option to $unwind stage should be prefixed with a '$': {path}"),
                ));
            };
            if p.is_empty() || p.split('.').any(str::is_empty) {
                return Err(loc(
                    40352,
                    "FieldPath cannot be constructed with empty string",
                ));
            }
            Kind::Unwind {
                path: p.to_owned(),
                index_field,
                preserve,
            }
        }
        "$replaceRoot" => {
            let d = expect_doc(name, arg, 40228)?;
            let root = d
                .get("newRoot")
                .ok_or_else(|| loc(40231, "no newRoot specified for the $replaceRoot stage"))?;
            for (k, _) in d.iter() {
                if k != "newRoot" {
                    return Err(loc(
                        40415,
                        format!("BSON field '$replaceRoot.{k}' is an unknown field."),
                    ));
                }
            }
            Kind::ReplaceRoot(Box::new(Expression::parse_val(root, vars)?))
        }
        "$replaceWith" => Kind::ReplaceRoot(Box::new(Expression::parse_val(arg, vars)?)),
        "$sample" => {
            let d = expect_doc(name, arg, 28745)?;
            let size = d
                .get("size")
                .ok_or_else(|| loc(28749, "$sample stage must specify a size"))?;
            let n = as_i64(size)
                .ok_or_else(|| loc(28746, "size argument to $sample must be a number"))?;
            if n < 0 {
                return Err(loc(28747, "size argument to $sample must not be negative"));
            }
            Kind::Sample(u64::try_from(n).unwrap_or(0))
        }
        "$sortByCount" => {
            let e = Expression::parse_val(arg, vars)?;
            let is_expr = arg.as_str().is_some_and(|s| s.starts_with('$'))
                || arg
                    .as_doc()
                    .is_some_and(|d| d.iter().next().is_some_and(|(k, _)| k.starts_with('$')));
            if !is_expr {
                return Err(loc(
                    40148,
                    "the sortByCount field must be defined as a $-prefixed path or an expression",
                ));
            }
            Kind::Group(
                Box::new(e),
                vec![(
                    "count".into(),
                    Accumulator::Sum(Expression::parse_bson(&Bson::Int32(1), vars)?),
                )],
            )
        }
        "$bucket" => parse_bucket(arg, vars)?,
        "$facet" => {
            let d = expect_doc(name, arg, 15947)?;
            let mut facets = Vec::new();
            for (k, v) in d.iter() {
                let Some(a) = v.as_arr() else {
                    return Err(loc(
                        40170,
                        format!(
                            "arguments to $facet must be arrays, {k} is type {}",
                            type_name(v)
                        ),
                    ));
                };
                let raw = RawDocumentBuf::try_from(&bson::doc! {"p": Bson::Array(a.to_vec())})
                    .map_err(|e| QueryError::bad_value(e.to_string()))?;
                let arr = raw
                    .get_array("p")
                    .map_err(|e| QueryError::bad_value(e.to_string()))?;
                let p = Pipeline::parse(arr, vars)?;
                for s in &p.stages {
                    if matches!(
                        s.name.as_str(),
                        "$facet"
                            | "$out"
                            | "$merge"
                            | "$changeStream"
                            | "$collStats"
                            | "$indexStats"
                    ) {
                        return Err(loc(
                            40600,
                            format!("{} is not allowed to be used within a $facet stage", s.name),
                        ));
                    }
                }
                facets.push((k.to_owned(), p));
            }
            if facets.is_empty() {
                return Err(loc(
                    40169,
                    "the $facet specification must be a non-empty object",
                ));
            }
            Kind::Facet(facets)
        }
        "$redact" => Kind::Redact(Box::new(Expression::parse_val(arg, vars)?)),
        "$documents" => Kind::Documents(Box::new(Expression::parse_val(arg, vars)?)),
        "$lookup" => parse_lookup(arg, vars)?,
        "$unionWith" => {
            if let Some(c) = arg.as_str() {
                Kind::UnionWith {
                    db: None,
                    coll: Some(c.to_owned()),
                    pipeline: None,
                }
            } else {
                let d = expect_doc(name, arg, 40240)?;
                let mut coll = None;
                let mut db = None;
                let mut pipeline = None;
                for (k, v) in d.iter() {
                    match k {
                        "coll" => match (v.as_str(), v.as_doc()) {
                            (Some(c), _) => coll = Some(c.to_owned()),
                            (_, Some(ns)) => {
                                db = ns.get("db").and_then(Val::as_str).map(str::to_owned);
                                coll = ns.get("coll").and_then(Val::as_str).map(str::to_owned);
                            }
                            _ => {
                                return Err(QueryError::type_mismatch(
                                    "BSON field '$unionWith.coll' is the wrong type",
                                ));
                            }
                        },
                        "pipeline" => pipeline = Some(Box::new(parse_sub_pipeline(v, vars)?)),
                        other => {
                            return Err(QueryError::new(
                                40415,
                                "Location40415",
                                format!("BSON field '$unionWith.{other}' is an unknown field."),
                            ));
                        }
                    }
                }
                if coll.is_none()
                    && pipeline.as_ref().is_none_or(|p| {
                        !matches!(p.stages.first().map(|s| &s.kind), Some(Kind::Documents(_)))
                    })
                {
                    return Err(QueryError::failed_to_parse(
                        "$unionWith stage without explicit collection must have a pipeline with $documents as first stage",
                    ));
                }
                Kind::UnionWith { db, coll, pipeline }
            }
        }
        _ => {
            return Err(loc(
                40324,
                format!("Unrecognized pipeline stage name: '{name}'"),
            ));
        }
    })
}

fn as_i64(v: Val<'_>) -> Option<i64> {
    match v.view() {
        super::value::View::Int32(i) => Some(i64::from(i)),
        super::value::View::Int64(i) => Some(i),
        super::value::View::Double(d) => f64_to_i64_exact(d),
        super::value::View::Decimal(d) => f64_to_i64_exact(super::numeric::decimal_to_f64(d)),
        _ => None,
    }
}

fn parse_sub_pipeline(v: Val<'_>, vars: &Variables) -> Result<Pipeline, QueryError> {
    let Some(a) = v.as_arr() else {
        return Err(QueryError::type_mismatch(
            "'pipeline' option must be specified as an array",
        ));
    };
    let raw = RawDocumentBuf::try_from(&bson::doc! {"p": Bson::Array(a.to_vec())})
        .map_err(|e| QueryError::bad_value(e.to_string()))?;
    let arr = raw
        .get_array("p")
        .map_err(|e| QueryError::bad_value(e.to_string()))?;
    Pipeline::parse(arr, vars)
}

fn parse_add_fields(
    d: DocRef<'_>,
    vars: &Variables,
) -> Result<Vec<(String, AddField)>, QueryError> {
    let mut out: Vec<(String, AddField)> = Vec::new();
    for (k, v) in d.iter() {
        if k.is_empty() || k.split('.').any(str::is_empty) {
            return Err(loc(
                40352,
                "FieldPath cannot be constructed with empty string",
            ));
        }
        if k.starts_with('$') {
            return Err(loc(
                16410,
                "FieldPath field names may not start with '$'. Consider using $getField or $setField.",
            ));
        }
        let value = match v.as_doc() {
            Some(sub)
                if !sub.is_empty()
                    && !sub.iter().next().is_some_and(|(n, _)| n.starts_with('$')) =>
            {
                AddField::Nested(parse_add_fields(sub, vars)?)
            }
            _ => AddField::Value(Box::new(Expression::parse_val(v, vars)?)),
        };
        // Dotted names become nested specs.
        let parts: Vec<&str> = k.split('.').collect();
        let mut item = value;
        for p in parts.iter().skip(1).rev() {
            item = AddField::Nested(vec![((*p).to_owned(), item)]);
        }
        let first = parts.first().copied().unwrap_or_default().to_owned();
        match out.iter_mut().find(|(n, _)| *n == first) {
            Some((_, AddField::Nested(existing))) => {
                if let AddField::Nested(more) = item {
                    existing.extend(more);
                } else {
                    return Err(loc(
                        40176,
                        format!("Invalid $addFields :: caused by :: Path collision at {k}"),
                    ));
                }
            }
            Some(_) => {
                return Err(loc(
                    40176,
                    format!("Invalid $addFields :: caused by :: Path collision at {k}"),
                ));
            }
            None => out.push((first, item)),
        }
    }
    Ok(out)
}

fn parse_accumulator(field: &str, v: Val<'_>, vars: &Variables) -> Result<Accumulator, QueryError> {
    let Some(d) = v.as_doc() else {
        return Err(loc(
            40234,
            format!("The field '{field}' must be an accumulator object"),
        ));
    };
    let mut it = d.iter();
    let (Some((op, arg)), None) = (it.next(), it.next()) else {
        return Err(loc(
            40238,
            format!("The field '{field}' must specify one accumulator"),
        ));
    };
    let e = || Expression::parse_val(arg, vars);
    Ok(match op {
        "$sum" => Accumulator::Sum(e()?),
        "$avg" => Accumulator::Avg(e()?),
        "$min" => Accumulator::Min(e()?),
        "$max" => Accumulator::Max(e()?),
        "$first" => Accumulator::First(e()?),
        "$last" => Accumulator::Last(e()?),
        "$push" => Accumulator::Push(e()?),
        "$addToSet" => Accumulator::AddToSet(e()?),
        "$mergeObjects" => Accumulator::MergeObjects(e()?),
        "$stdDevPop" => Accumulator::StdDev(e()?, true),
        "$stdDevSamp" => Accumulator::StdDev(e()?, false),
        "$count" => {
            if !arg.as_doc().is_some_and(|d| d.is_empty()) {
                return Err(loc(5424000, "$count takes no arguments, i.e. $count:{}"));
            }
            Accumulator::Count
        }
        other => {
            return Err(loc(15952, format!("unknown group operator '{other}'")));
        }
    })
}

fn parse_bucket(arg: Val<'_>, vars: &Variables) -> Result<Kind, QueryError> {
    let d = expect_doc("$bucket", arg, 40201)?;
    let mut group_by = None;
    let mut boundaries = None;
    let mut default = None;
    let mut output = Vec::new();
    for (k, v) in d.iter() {
        match k {
            "groupBy" => group_by = Some(Expression::parse_val(v, vars)?),
            "boundaries" => {
                let a = v.as_arr().ok_or_else(|| {
                    loc(
                        40200,
                        format!(
                            "The $bucket 'boundaries' field must be an array, but found type: {}",
                            type_name(v)
                        ),
                    )
                })?;
                boundaries = Some(a.to_vec());
            }
            "default" => default = Some(v.to_bson()),
            "output" => {
                let o = v.as_doc().ok_or_else(|| {
                    loc(
                        40196,
                        format!(
                            "The $bucket 'output' field must be an object, but found type: {}",
                            type_name(v)
                        ),
                    )
                })?;
                for (name, spec) in o.iter() {
                    output.push((name.to_owned(), parse_accumulator(name, spec, vars)?));
                }
            }
            other => {
                return Err(loc(
                    40197,
                    format!("Unrecognized option to $bucket: {other}."),
                ));
            }
        }
    }
    let (Some(group_by), Some(boundaries)) = (group_by, boundaries) else {
        return Err(loc(
            40198,
            "$bucket requires 'groupBy' and 'boundaries' to be specified.",
        ));
    };
    if boundaries.len() < 2 {
        return Err(loc(
            40192,
            format!(
                "The $bucket 'boundaries' field must have at least 2 values, but found {} value(s).",
                boundaries.len()
            ),
        ));
    }
    for w in boundaries.windows(2) {
        if super::value::canonical_rank(w[0].element_type())
            != super::value::canonical_rank(w[1].element_type())
        {
            return Err(loc(
                40193,
                "All values in the the 'boundaries' option to $bucket must have the same type.",
            ));
        }
        if !compare_bson(&w[0], &w[1]).is_lt() {
            return Err(loc(
                40194,
                "The 'boundaries' option to $bucket must be sorted in ascending order",
            ));
        }
    }
    if let (Some(dflt), Some(first), Some(last)) = (&default, boundaries.first(), boundaries.last())
    {
        let same_rank = super::value::canonical_rank(dflt.element_type())
            == super::value::canonical_rank(first.element_type());
        if same_rank && !compare_bson(dflt, first).is_lt() && compare_bson(dflt, last).is_lt() {
            return Err(loc(
                40199,
                "The $bucket 'default' field must be less than the lowest boundary or greater than or equal to the highest boundary.",
            ));
        }
    }
    if output.is_empty() {
        output.push((
            "count".into(),
            Accumulator::Sum(Expression::parse_bson(&Bson::Int32(1), vars)?),
        ));
    }
    Ok(Kind::Bucket {
        group_by: Box::new(group_by),
        boundaries,
        default,
        output,
    })
}

fn parse_lookup(arg: Val<'_>, vars: &Variables) -> Result<Kind, QueryError> {
    let d = expect_doc("$lookup", arg, 15960)?;
    let mut l = Lookup {
        db: None,
        from: None,
        local: None,
        foreign: None,
        lets: Vec::new(),
        pipeline: None,
        as_field: String::new(),
    };
    let mut let_names: Vec<(String, Val<'_>)> = Vec::new();
    let mut pipeline_spec = None;
    let mut has_as = false;
    for (k, v) in d.iter() {
        let string = |what: &str| -> Result<String, QueryError> {
            v.as_str().map(str::to_owned).ok_or_else(|| {
                QueryError::failed_to_parse(format!(
                    "$lookup argument '{what}: {}' must be a string, is type {}",
                    v.to_bson(),
                    type_name(v)
                ))
            })
        };
        match k {
            "from" => match (v.as_str(), v.as_doc()) {
                (Some(s), _) => l.from = Some(s.to_owned()),
                (_, Some(ns)) => {
                    l.db = ns.get("db").and_then(Val::as_str).map(str::to_owned);
                    l.from = ns.get("coll").and_then(Val::as_str).map(str::to_owned);
                }
                _ => {
                    return Err(QueryError::failed_to_parse(format!(
                        "$lookup 'from' field must be a string or an object, but found {}",
                        type_name(v)
                    )));
                }
            },
            "localField" => l.local = Some(string(k)?),
            "foreignField" => l.foreign = Some(string(k)?),
            "as" => {
                l.as_field = string(k)?;
                has_as = true;
            }
            "let" => {
                let ld = v.as_doc().ok_or_else(|| {
                    QueryError::failed_to_parse("$lookup argument 'let' must be an object")
                })?;
                for (name, e) in ld.iter() {
                    let_names.push((name.to_owned(), e));
                }
            }
            "pipeline" => pipeline_spec = Some(v),
            other => {
                return Err(QueryError::failed_to_parse(format!(
                    "unknown argument to $lookup: {other}"
                )));
            }
        }
    }
    if !has_as {
        return Err(QueryError::failed_to_parse(
            "must specify 'as' field for a $lookup",
        ));
    }
    if l.local.is_some() != l.foreign.is_some() {
        return Err(QueryError::failed_to_parse(
            "$lookup requires both or neither of 'localField' and 'foreignField' to be specified",
        ));
    }
    if pipeline_spec.is_none() && l.local.is_none() {
        return Err(QueryError::failed_to_parse(
            "$lookup requires either 'pipeline' or both 'localField' and 'foreignField' to be specified",
        ));
    }
    if l.from.is_none() && pipeline_spec.is_none() {
        return Err(QueryError::failed_to_parse(
            "must specify 'from' field for a $lookup",
        ));
    }
    for (name, e) in &let_names {
        l.lets
            .push((name.clone(), Expression::parse_val(*e, vars)?));
    }
    if let Some(p) = pipeline_spec {
        // The sub-pipeline sees the let variables (values bound per input document).
        let mut inner = vars.clone();
        for (name, _) in &let_names {
            inner.define(name, Bson::Null)?;
        }
        l.pipeline = Some(Box::new(parse_sub_pipeline(p, &inner)?));
    }
    Ok(Kind::Lookup(Box::new(l)))
}

// ---------------------------------------------------------------------------------------------
// Execution

/// Applies a per-document stage; `None` drops the document.
fn stream_one(s: &Stage, doc: Document, vars: &Variables) -> Result<Option<Document>, QueryError> {
    Ok(match &s.kind {
        Kind::Match(f) => f.matches_bson_with(&doc, vars)?.then_some(doc),
        Kind::Project(p) => Some(p.apply_bson(&doc, vars)?),
        Kind::AddFields(fields) => {
            let mut out = doc.clone();
            add_fields(&mut out, fields, DocRef::Owned(&doc), vars)?;
            Some(out)
        }
        Kind::ReplaceRoot(e) => match e.eval_doc(DocRef::Owned(&doc), vars)? {
            Some(Bson::Document(d)) => Some(d),
            other => {
                return Err(loc(
                    40228,
                    format!(
                        "'replacement document' must evaluate to an object, but resulting value was: {}. Type of resulting value: '{}'. Input document: {}",
                        other
                            .as_ref()
                            .map_or("MISSING".to_owned(), ToString::to_string),
                        other
                            .as_ref()
                            .map_or("missing", |b| type_alias(b.element_type())),
                        Bson::Document(doc.clone())
                    ),
                ));
            }
        },
        Kind::Redact(e) => redact(&doc, e, vars)?,
        _ => Some(doc),
    })
}

/// `$addFields` on one document: values computed against the original document, set at their
/// paths (through arrays of documents, as mongod does); a missing result removes the field.
fn add_fields(
    target: &mut Document,
    fields: &[(String, AddField)],
    root: DocRef<'_>,
    vars: &Variables,
) -> Result<(), QueryError> {
    for (name, f) in fields {
        match f {
            AddField::Value(e) => match e.eval_doc(root, vars)? {
                Some(v) => {
                    target.insert(name.clone(), v);
                }
                None => {
                    target.remove(name);
                }
            },
            AddField::Nested(sub) => match target.get_mut(name) {
                Some(Bson::Document(d)) => add_fields(d, sub, root, vars)?,
                Some(Bson::Array(items)) => {
                    for item in items.iter_mut() {
                        if let Bson::Document(d) = item {
                            add_fields(d, sub, root, vars)?;
                        } else {
                            let mut d = Document::new();
                            add_fields(&mut d, sub, root, vars)?;
                            *item = Bson::Document(d);
                        }
                    }
                }
                _ => {
                    let mut d = Document::new();
                    add_fields(&mut d, sub, root, vars)?;
                    target.insert(name.clone(), d);
                }
            },
        }
    }
    Ok(())
}

/// `$redact`: `$$KEEP` keeps the (sub)document as is, `$$PRUNE` removes it, `$$DESCEND` keeps
/// its scalar fields and applies the expression to embedded documents (also inside arrays).
/// The expression sees the current subdocument as its document.
fn redact(
    doc: &Document,
    e: &Expression,
    vars: &Variables,
) -> Result<Option<Document>, QueryError> {
    let decision = e.eval_doc(DocRef::Owned(doc), vars)?;
    match decision {
        Some(Bson::String(s)) if s == "keep" => Ok(Some(doc.clone())),
        Some(Bson::String(s)) if s == "prune" => Ok(None),
        Some(Bson::String(s)) if s == "descend" => {
            let mut out = Document::new();
            for (k, v) in doc {
                match v {
                    Bson::Document(d) => {
                        if let Some(x) = redact(d, e, vars)? {
                            out.insert(k.clone(), x);
                        }
                    }
                    Bson::Array(items) => {
                        let mut kept = Vec::new();
                        for item in items {
                            match item {
                                Bson::Document(d) => {
                                    if let Some(x) = redact(d, e, vars)? {
                                        kept.push(Bson::Document(x));
                                    }
                                }
                                other => kept.push(other.clone()),
                            }
                        }
                        out.insert(k.clone(), kept);
                    }
                    other => {
                        out.insert(k.clone(), other.clone());
                    }
                }
            }
            Ok(Some(out))
        }
        other => Err(loc(
            17053,
            format!(
                "$redact's expression should not return anything aside from the variables $$KEEP, $$DESCEND, and $$PRUNE, but returned {}",
                other.map_or("MISSING".to_owned(), |b| b.to_string())
            ),
        )),
    }
}

fn run_stage(
    s: &Stage,
    docs: Vec<Document>,
    ctx: &mut dyn PipelineContext,
    vars: &Variables,
) -> Result<Vec<Document>, QueryError> {
    Ok(match &s.kind {
        Kind::Match(_)
        | Kind::Project(_)
        | Kind::AddFields(_)
        | Kind::ReplaceRoot(_)
        | Kind::Redact(_) => {
            let mut out = Vec::with_capacity(docs.len());
            for d in docs {
                if let Some(x) = stream_one(s, d, vars)? {
                    out.push(x);
                }
            }
            out
        }
        Kind::Limit(n) => docs
            .into_iter()
            .take(usize::try_from(*n).unwrap_or(usize::MAX))
            .collect(),
        Kind::Skip(n) => docs
            .into_iter()
            .skip(usize::try_from(*n).unwrap_or(usize::MAX))
            .collect(),
        Kind::Sort(spec) => {
            let mut keyed: Vec<(Vec<u8>, Document)> = docs
                .into_iter()
                .map(|d| (spec.sort_key_bson(&d), d))
                .collect();
            keyed.sort_by(|a, b| a.0.cmp(&b.0));
            keyed.into_iter().map(|(_, d)| d).collect()
        }
        Kind::Group(id, accs) => {
            let sort_by_count = s.name == "$sortByCount";
            let mut out = group(docs, id, accs, vars)?;
            if sort_by_count {
                out.sort_by(|a, b| {
                    compare_bson(
                        b.get("count").unwrap_or(&Bson::Null),
                        a.get("count").unwrap_or(&Bson::Null),
                    )
                });
            }
            out
        }
        Kind::Count(field) => {
            if docs.is_empty() {
                Vec::new()
            } else {
                let n = docs.len();
                let mut d = Document::new();
                d.insert(
                    field.clone(),
                    i32::try_from(n).map_or(
                        Bson::Int64(i64::try_from(n).unwrap_or(i64::MAX)),
                        Bson::Int32,
                    ),
                );
                vec![d]
            }
        }
        Kind::Unwind {
            path,
            index_field,
            preserve,
        } => unwind(docs, path, index_field.as_deref(), *preserve),
        Kind::Sample(n) => {
            use rand::seq::SliceRandom;
            let mut docs = docs;
            docs.shuffle(&mut rand::rng());
            docs.truncate(usize::try_from(*n).unwrap_or(usize::MAX));
            docs
        }
        Kind::Bucket {
            group_by,
            boundaries,
            default,
            output,
        } => bucket(docs, group_by, boundaries, default.as_ref(), output, vars)?,
        Kind::Facet(facets) => {
            let mut d = Document::new();
            for (name, p) in facets {
                let r = p.run_decoded(docs.clone(), ctx, vars)?;
                d.insert(
                    name.clone(),
                    r.into_iter().map(Bson::Document).collect::<Vec<_>>(),
                );
            }
            vec![d]
        }
        Kind::Documents(e) => {
            let empty = Document::new();
            match e.eval_doc(DocRef::Owned(&empty), vars)? {
                Some(Bson::Array(items)) => {
                    let mut out = Vec::with_capacity(items.len());
                    for item in items {
                        match item {
                            Bson::Document(d) => out.push(d),
                            other => {
                                return Err(QueryError::type_mismatch(format!(
                                    "$documents must evaluate to an array of objects, found {}",
                                    type_alias(other.element_type())
                                )));
                            }
                        }
                    }
                    out
                }
                other => {
                    return Err(loc(
                        5858203,
                        format!(
                            "an array is expected, found {}",
                            other
                                .as_ref()
                                .map_or("missing", |b| type_alias(b.element_type()))
                        ),
                    ));
                }
            }
        }
        Kind::Lookup(l) => lookup(docs, l, ctx, vars)?,
        Kind::UnionWith { db, coll, pipeline } => {
            let mut docs = docs;
            let foreign: Vec<Document> = match coll {
                Some(c) => ctx
                    .collection(db.as_deref(), c)?
                    .iter()
                    .map(|d| raw_doc_to_document(d))
                    .collect(),
                None => Vec::new(),
            };
            let extra = match pipeline {
                Some(p) => p.run_decoded(foreign, ctx, vars)?,
                None => foreign,
            };
            docs.extend(extra);
            docs
        }
        Kind::Server => {
            return Err(QueryError::bad_value(format!(
                "{} must be run by the server",
                s.name
            )));
        }
    })
}

#[derive(Debug)]
enum AccState {
    Sum(Vec<Bson>),
    Avg(Vec<Bson>),
    Best(Option<Bson>, bool),
    First(Option<Bson>),
    Last(Option<Bson>),
    Push(Vec<Bson>),
    Set(Vec<Bson>, Vec<Vec<u8>>),
    Merge(Document),
    StdDev(Vec<f64>, bool),
    Count(u64),
}

fn new_state(acc: &Accumulator) -> AccState {
    match acc {
        Accumulator::Sum(_) => AccState::Sum(Vec::new()),
        Accumulator::Avg(_) => AccState::Avg(Vec::new()),
        Accumulator::Min(_) => AccState::Best(None, false),
        Accumulator::Max(_) => AccState::Best(None, true),
        Accumulator::First(_) => AccState::First(None),
        Accumulator::Last(_) => AccState::Last(None),
        Accumulator::Push(_) => AccState::Push(Vec::new()),
        Accumulator::AddToSet(_) => AccState::Set(Vec::new(), Vec::new()),
        Accumulator::MergeObjects(_) => AccState::Merge(Document::new()),
        Accumulator::StdDev(_, pop) => AccState::StdDev(Vec::new(), *pop),
        Accumulator::Count => AccState::Count(0),
    }
}

fn acc_expr(acc: &Accumulator) -> Option<&Expression> {
    match acc {
        Accumulator::Sum(e)
        | Accumulator::Avg(e)
        | Accumulator::Min(e)
        | Accumulator::Max(e)
        | Accumulator::First(e)
        | Accumulator::Last(e)
        | Accumulator::Push(e)
        | Accumulator::AddToSet(e)
        | Accumulator::MergeObjects(e)
        | Accumulator::StdDev(e, _) => Some(e),
        Accumulator::Count => None,
    }
}

fn accumulate(state: &mut AccState, v: Option<Bson>) -> Result<(), QueryError> {
    match state {
        AccState::Sum(items) | AccState::Avg(items) => {
            if let Some(x) = v {
                // $sum of an array value in $group ignores it (non-numeric).
                items.push(x);
            }
        }
        AccState::Best(best, max) => {
            if let Some(x) = v
                && !matches!(x, Bson::Null | Bson::Undefined)
            {
                let better = match best {
                    None => true,
                    Some(b) => {
                        let o = compare_bson(&x, b);
                        if *max { o.is_gt() } else { o.is_lt() }
                    }
                };
                if better {
                    *best = Some(x);
                }
            }
        }
        AccState::First(first) => {
            if first.is_none() {
                *first = Some(v.unwrap_or(Bson::Null));
            }
        }
        AccState::Last(last) => *last = Some(v.unwrap_or(Bson::Null)),
        AccState::Push(items) => {
            if let Some(x) = v {
                items.push(x);
            }
        }
        AccState::Set(items, keys) => {
            if let Some(x) = v {
                let k = encode_bson(&x);
                if !keys.contains(&k) {
                    keys.push(k);
                    items.push(x);
                }
            }
        }
        AccState::Merge(d) => match v {
            None | Some(Bson::Null | Bson::Undefined) => {}
            Some(Bson::Document(x)) => {
                for (k, val) in x {
                    d.insert(k, val);
                }
            }
            Some(other) => {
                return Err(loc(
                    40400,
                    format!(
                        "$mergeObjects requires object inputs, but input {other} is of type {}",
                        type_alias(other.element_type())
                    ),
                ));
            }
        },
        AccState::StdDev(items, _) => {
            if let Some(n) = v.as_ref().and_then(Num::from_bson) {
                items.push(n.to_f64());
            }
        }
        AccState::Count(n) => *n += 1,
    }
    Ok(())
}

fn finish(state: AccState) -> Bson {
    match state {
        AccState::Sum(items) => sum_values(items.iter()),
        AccState::Avg(items) => avg_values(items.iter()).unwrap_or(Bson::Null),
        AccState::Best(b, _) => b.unwrap_or(Bson::Null),
        AccState::First(v) | AccState::Last(v) => v.unwrap_or(Bson::Null),
        AccState::Push(items) | AccState::Set(items, _) => Bson::Array(items),
        AccState::Merge(d) => Bson::Document(d),
        AccState::StdDev(items, pop) => {
            let n = items.len();
            if n == 0 || (!pop && n < 2) {
                return Bson::Null;
            }
            let mean = items.iter().sum::<f64>() / n as f64;
            let ss = items.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>();
            Bson::Double((ss / if pop { n as f64 } else { (n - 1) as f64 }).sqrt())
        }
        AccState::Count(n) => i32::try_from(n).map_or(
            Bson::Int64(i64::try_from(n).unwrap_or(i64::MAX)),
            Bson::Int32,
        ),
    }
}

/// `$group`: groups keyed by the `_id` value in the total order (1 and 1.0 group together), in
/// order of first appearance.
fn group(
    docs: Vec<Document>,
    id: &Expression,
    accs: &[(String, Accumulator)],
    vars: &Variables,
) -> Result<Vec<Document>, QueryError> {
    let mut index: std::collections::HashMap<Vec<u8>, usize> = std::collections::HashMap::new();
    let mut groups: Vec<(Bson, Vec<AccState>)> = Vec::new();
    for d in &docs {
        let key = id.eval_doc(DocRef::Owned(d), vars)?.unwrap_or(Bson::Null);
        let k = encode_bson(&key);
        let slot = match index.get(&k) {
            Some(i) => *i,
            None => {
                groups.push((key, accs.iter().map(|(_, a)| new_state(a)).collect()));
                index.insert(k, groups.len() - 1);
                groups.len() - 1
            }
        };
        for (i, (_, acc)) in accs.iter().enumerate() {
            let v = match acc_expr(acc) {
                Some(e) => e.eval_doc(DocRef::Owned(d), vars)?,
                None => None,
            };
            if let Some(state) = groups.get_mut(slot).and_then(|g| g.1.get_mut(i)) {
                accumulate(state, v)?;
            }
        }
    }
    let mut out = Vec::with_capacity(groups.len());
    for (key, states) in groups {
        let mut d = Document::new();
        d.insert("_id", key);
        for ((name, _), st) in accs.iter().zip(states) {
            d.insert(name.clone(), finish(st));
        }
        out.push(d);
    }
    Ok(out)
}

fn bucket(
    docs: Vec<Document>,
    group_by: &Expression,
    boundaries: &[Bson],
    default: Option<&Bson>,
    output: &[(String, Accumulator)],
    vars: &Variables,
) -> Result<Vec<Document>, QueryError> {
    let mut buckets: Vec<(Bson, Vec<AccState>)> = boundaries
        .iter()
        .take(boundaries.len().saturating_sub(1))
        .map(|b| {
            (
                b.clone(),
                output.iter().map(|(_, a)| new_state(a)).collect(),
            )
        })
        .collect();
    let mut default_bucket: Option<(Bson, Vec<AccState>)> = None;
    for d in &docs {
        let v = group_by
            .eval_doc(DocRef::Owned(d), vars)?
            .unwrap_or(Bson::Null);
        let pos = boundaries.windows(2).position(|w| {
            super::value::canonical_rank(v.element_type())
                == super::value::canonical_rank(w[0].element_type())
                && !compare_bson(&v, &w[0]).is_lt()
                && compare_bson(&v, &w[1]).is_lt()
        });
        let states = match pos {
            Some(i) => match buckets.get_mut(i) {
                Some(b) => &mut b.1,
                None => continue,
            },
            None => {
                let Some(dflt) = default else {
                    return Err(loc(
                        40066,
                        format!(
                            "$switch could not find a matching branch for an input, and no default was specified. (input value {v} does not fall into any $bucket boundary and no 'default' was given)"
                        ),
                    ));
                };
                &mut default_bucket
                    .get_or_insert_with(|| {
                        (
                            dflt.clone(),
                            output.iter().map(|(_, a)| new_state(a)).collect(),
                        )
                    })
                    .1
            }
        };
        for (i, (_, acc)) in output.iter().enumerate() {
            let v = match acc_expr(acc) {
                Some(e) => e.eval_doc(DocRef::Owned(d), vars)?,
                None => None,
            };
            if let Some(st) = states.get_mut(i) {
                accumulate(st, v)?;
            }
        }
    }
    let mut out = Vec::new();
    let counts_nonempty = |states: &Vec<AccState>| !states.is_empty();
    for (key, states) in buckets.into_iter().chain(default_bucket) {
        // Buckets without documents are omitted, as in mongod.
        let empty = states.iter().all(|s| match s {
            AccState::Sum(v) | AccState::Avg(v) | AccState::Push(v) => v.is_empty(),
            AccState::Count(n) => *n == 0,
            AccState::First(v) | AccState::Last(v) => v.is_none(),
            _ => false,
        }) && counts_nonempty(&states);
        if empty {
            continue;
        }
        let mut d = Document::new();
        d.insert("_id", key);
        for ((name, _), st) in output.iter().zip(states) {
            d.insert(name.clone(), finish(st));
        }
        out.push(d);
    }
    Ok(out)
}

fn unwind(
    docs: Vec<Document>,
    path: &str,
    index_field: Option<&str>,
    preserve: bool,
) -> Vec<Document> {
    let parts: Vec<&str> = path.split('.').collect();
    let mut out = Vec::new();
    for d in docs {
        let value = super::path::get_path_bson(&d, path).cloned();
        match value {
            Some(Bson::Array(items)) if !items.is_empty() => {
                for (i, item) in items.into_iter().enumerate() {
                    let mut nd = d.clone();
                    set_path(&mut nd, &parts, Some(item));
                    if let Some(f) = index_field {
                        set_path(
                            &mut nd,
                            &f.split('.').collect::<Vec<_>>(),
                            Some(Bson::Int64(i64::try_from(i).unwrap_or(i64::MAX))),
                        );
                    }
                    out.push(nd);
                }
            }
            Some(Bson::Array(_)) => {
                if preserve {
                    let mut nd = d.clone();
                    set_path(&mut nd, &parts, None);
                    if let Some(f) = index_field {
                        set_path(&mut nd, &f.split('.').collect::<Vec<_>>(), Some(Bson::Null));
                    }
                    out.push(nd);
                }
            }
            None | Some(Bson::Null) => {
                if preserve {
                    let mut nd = d.clone();
                    if let Some(f) = index_field {
                        set_path(&mut nd, &f.split('.').collect::<Vec<_>>(), Some(Bson::Null));
                    }
                    out.push(nd);
                }
            }
            Some(_) => {
                let mut nd = d.clone();
                if let Some(f) = index_field {
                    set_path(&mut nd, &f.split('.').collect::<Vec<_>>(), Some(Bson::Null));
                }
                out.push(nd);
            }
        }
    }
    out
}

/// Sets (or with `None` removes) a dotted path of documents, creating documents as needed.
fn set_path(d: &mut Document, parts: &[&str], v: Option<Bson>) {
    let Some((first, rest)) = parts.split_first() else {
        return;
    };
    if rest.is_empty() {
        match v {
            Some(v) => {
                d.insert(*first, v);
            }
            None => {
                d.remove(*first);
            }
        }
        return;
    }
    if !matches!(d.get(*first), Some(Bson::Document(_))) {
        if v.is_none() {
            return;
        }
        d.insert(*first, Document::new());
    }
    if let Some(Bson::Document(sub)) = d.get_mut(*first) {
        set_path(sub, rest, v);
    }
}

fn lookup(
    docs: Vec<Document>,
    l: &Lookup,
    ctx: &mut dyn PipelineContext,
    vars: &Variables,
) -> Result<Vec<Document>, QueryError> {
    let foreign: Vec<Document> = match &l.from {
        Some(c) => ctx
            .collection(l.db.as_deref(), c)?
            .iter()
            .map(|d| raw_doc_to_document(d))
            .collect(),
        None => Vec::new(),
    };
    let mut out = Vec::with_capacity(docs.len());
    for d in docs {
        let mut matched: Vec<Document> = match (&l.local, &l.foreign) {
            (Some(local), Some(foreign_field)) => {
                // mongod: {foreignField: {$in: [local values]}} (missing local matches null).
                let (values, _) = index_values(DocRef::Owned(&d), local);
                let values: Vec<Bson> = values.into_iter().map(Val::to_bson).collect();
                let mut fspec = Document::new();
                let mut inner = Document::new();
                inner.insert("$in", values);
                fspec.insert(foreign_field.clone(), inner);
                let f = Filter::parse_bson(&fspec, vars)?;
                let mut m = Vec::new();
                for fd in &foreign {
                    if f.matches_bson(fd)? {
                        m.push(fd.clone());
                    }
                }
                m
            }
            _ => foreign.clone(),
        };
        if let Some(p) = &l.pipeline {
            let mut inner = vars.clone();
            for (name, e) in &l.lets {
                let v = e.eval_doc(DocRef::Owned(&d), vars)?.unwrap_or(Bson::Null);
                inner.define(name, v)?;
            }
            let input = if l.from.is_some() {
                matched
            } else {
                Vec::new()
            };
            matched = p.run_decoded(input, ctx, &inner)?;
        }
        let mut nd = d;
        let parts: Vec<&str> = l.as_field.split('.').collect();
        set_path(
            &mut nd,
            &parts,
            Some(Bson::Array(
                matched.into_iter().map(Bson::Document).collect(),
            )),
        );
        out.push(nd);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::{doc, rawdoc};

    struct Colls(Vec<(String, Vec<RawDocumentBuf>)>);

    impl PipelineContext for Colls {
        fn collection(
            &mut self,
            _db: Option<&str>,
            coll: &str,
        ) -> Result<Vec<RawDocumentBuf>, QueryError> {
            Ok(self
                .0
                .iter()
                .find(|(n, _)| n == coll)
                .map(|(_, d)| d.clone())
                .unwrap_or_default())
        }
    }

    fn pipeline(stages: Vec<Document>) -> Pipeline {
        let raw = RawDocumentBuf::try_from(&doc! {"p": stages}).expect("encodable");
        Pipeline::parse(raw.get_array("p").expect("array"), &Variables::new())
            .expect("valid pipeline")
    }

    fn parse_err(stages: Vec<Document>) -> QueryError {
        let raw = RawDocumentBuf::try_from(&doc! {"p": stages}).expect("encodable");
        Pipeline::parse(raw.get_array("p").expect("array"), &Variables::new()).expect_err("invalid")
    }

    fn run(stages: Vec<Document>, input: Vec<RawDocumentBuf>) -> Vec<Document> {
        pipeline(stages)
            .run_documents(input.iter(), &mut NoCollections)
            .expect("runs")
    }

    fn data() -> Vec<RawDocumentBuf> {
        vec![
            rawdoc! {"_id": 1, "k": "a", "n": 5, "tags": ["x", "y"]},
            rawdoc! {"_id": 2, "k": "b", "n": 2, "tags": []},
            rawdoc! {"_id": 3, "k": "a", "n": 1.5},
            rawdoc! {"_id": 4, "k": "c", "n": 10, "tags": "z"},
        ]
    }

    #[test]
    fn match_sort_skip_limit_project() {
        let out = run(
            vec![
                doc! {"$match": {"n": {"$gt": 1}}},
                doc! {"$sort": {"n": -1}},
                doc! {"$skip": 1},
                doc! {"$limit": 2},
                doc! {"$project": {"n": 1, "_id": 0, "double": {"$multiply": ["$n", 2]}}},
            ],
            data(),
        );
        assert_eq!(
            out,
            vec![doc! {"n": 5, "double": 10}, doc! {"n": 2, "double": 4}]
        );
    }

    #[test]
    fn counting_groups_do_not_need_the_documents_but_count_them_all() {
        let count = vec![
            doc! {"$match": {}},
            doc! {"$group": {"_id": 1, "n": {"$sum": 1}, "c": {"$count": {}}, "f": {"$first": "x"}}},
        ];
        assert_eq!(
            run(count, data()),
            vec![doc! {"_id": 1, "n": 4, "c": 4, "f": "x"}]
        );
        // A field anywhere in the group still reads the documents.
        let by_field = vec![doc! {"$group": {"_id": null, "total": {"$sum": "$n"}}}];
        assert_eq!(
            run(by_field, data()),
            vec![doc! {"_id": null, "total": 18.5}]
        );
    }

    #[test]
    fn group_and_count() {
        let out = run(
            vec![
                doc! {"$group": {"_id": "$k", "total": {"$sum": "$n"}, "cnt": {"$count": {}}, "avg": {"$avg": "$n"}, "ids": {"$push": "$_id"}, "mx": {"$max": "$n"}}},
                doc! {"$sort": {"_id": 1}},
            ],
            data(),
        );
        assert_eq!(
            out[0],
            doc! {"_id": "a", "total": 6.5, "cnt": 2, "avg": 3.25, "ids": [1, 3], "mx": 5}
        );
        assert_eq!(out.len(), 3);
        assert_eq!(run(vec![doc! {"$count": "n"}], data()), vec![doc! {"n": 4}]);
        assert!(
            run(
                vec![doc! {"$match": {"zz": 1}}, doc! {"$count": "n"}],
                data()
            )
            .is_empty()
        );
        let out = run(
            vec![doc! {"$group": {"_id": null, "s": {"$sum": 1}}}],
            data(),
        );
        assert_eq!(out, vec![doc! {"_id": null, "s": 4}]);
    }

    #[test]
    fn unwind_forms() {
        let out = run(vec![doc! {"$unwind": "$tags"}], data());
        let ids: Vec<_> = out.iter().map(|d| d.get("tags").cloned()).collect();
        assert_eq!(
            ids,
            vec![
                Some(Bson::String("x".into())),
                Some(Bson::String("y".into())),
                Some(Bson::String("z".into()))
            ]
        );
        let out = run(
            vec![
                doc! {"$unwind": {"path": "$tags", "includeArrayIndex": "i", "preserveNullAndEmptyArrays": true}},
            ],
            data(),
        );
        assert_eq!(out.len(), 5);
        assert_eq!(
            out[1],
            doc! {"_id": 1, "k": "a", "n": 5, "tags": "y", "i": 1_i64}
        );
        assert_eq!(out[2], doc! {"_id": 2, "k": "b", "n": 2, "i": null});
    }

    #[test]
    fn add_fields_replace_root_unset() {
        let out = run(
            vec![
                doc! {"$match": {"_id": 1}},
                doc! {"$set": {"sub": {"x": 1}, "tags": "$$REMOVE", "m.n": "$n"}},
                doc! {"$unset": ["k"]},
            ],
            data(),
        );
        assert_eq!(
            out,
            vec![doc! {"_id": 1, "n": 5, "sub": {"x": 1}, "m": {"n": 5}}]
        );
        let out = run(
            vec![
                doc! {"$match": {"_id": 1}},
                doc! {"$replaceWith": {"v": "$n"}},
            ],
            data(),
        );
        assert_eq!(out, vec![doc! {"v": 5}]);
        let raw = RawDocumentBuf::try_from(&doc! {"p": [{"$replaceRoot": {"newRoot": "$nope"}}]})
            .expect("encodable");
        let p =
            Pipeline::parse(raw.get_array("p").expect("array"), &Variables::new()).expect("parses");
        let e = p
            .run(data().iter(), &mut NoCollections)
            .expect_err("not an object");
        assert_eq!(e.code, 40228);
    }

    #[test]
    fn facet_bucket_sort_by_count_sample() {
        let out = run(
            vec![
                doc! {"$facet": {"all": [{"$count": "c"}], "as": [{"$match": {"k": "a"}}, {"$project": {"_id": 1}}]}},
            ],
            data(),
        );
        assert_eq!(
            out,
            vec![doc! {"all": [{"c": 4}], "as": [{"_id": 1}, {"_id": 3}]}]
        );
        let out = run(
            vec![doc! {"$bucket": {"groupBy": "$n", "boundaries": [0, 3, 6], "default": "other"}}],
            data(),
        );
        assert_eq!(
            out,
            vec![
                doc! {"_id": 0, "count": 2},
                doc! {"_id": 3, "count": 1},
                doc! {"_id": "other", "count": 1}
            ]
        );
        let out = run(vec![doc! {"$sortByCount": "$k"}], data());
        assert_eq!(out[0], doc! {"_id": "a", "count": 2});
        assert_eq!(run(vec![doc! {"$sample": {"size": 2}}], data()).len(), 2);
    }

    #[test]
    fn lookup_and_union_with() {
        let mut colls = Colls(vec![(
            "other".into(),
            vec![
                rawdoc! {"_id": 10, "ref": "a"},
                rawdoc! {"_id": 11, "ref": "b"},
                rawdoc! {"_id": 12},
            ],
        )]);
        let p = pipeline(vec![
            doc! {"$match": {"_id": {"$lte": 2}}},
            doc! {"$lookup": {"from": "other", "localField": "k", "foreignField": "ref", "as": "j"}},
            doc! {"$project": {"j._id": 1}},
        ]);
        let out = p.run_documents(data().iter(), &mut colls).expect("runs");
        assert_eq!(
            out,
            vec![
                doc! {"_id": 1, "j": [{"_id": 10}]},
                doc! {"_id": 2, "j": [{"_id": 11}]}
            ]
        );
        let p = pipeline(vec![
            doc! {"$match": {"_id": 1}},
            doc! {"$lookup": {"from": "other", "let": {"key": "$k"}, "pipeline": [{"$match": {"$expr": {"$ne": ["$ref", "$$key"]}}}], "as": "j"}},
            doc! {"$project": {"n": {"$size": "$j"}}},
        ]);
        let out = p.run_documents(data().iter(), &mut colls).expect("runs");
        assert_eq!(out, vec![doc! {"_id": 1, "n": 2}]);
        let p = pipeline(vec![
            doc! {"$match": {"_id": 1}},
            doc! {"$project": {"_id": 1}},
            doc! {"$unionWith": {"coll": "other", "pipeline": [{"$project": {"_id": 1}}]}},
        ]);
        let out = p.run_documents(data().iter(), &mut colls).expect("runs");
        assert_eq!(
            out,
            vec![
                doc! {"_id": 1},
                doc! {"_id": 10},
                doc! {"_id": 11},
                doc! {"_id": 12}
            ]
        );
    }

    #[test]
    fn documents_and_redact() {
        let out = run(
            vec![
                doc! {"$documents": [{"a": 1}, {"a": 2}]},
                doc! {"$match": {"a": 2}},
            ],
            data(),
        );
        assert_eq!(out, vec![doc! {"a": 2}]);
        let out = run(
            vec![
                doc! {"$match": {"_id": 1}},
                doc! {"$replaceWith": {"_id": "$_id", "sub": {"secret": true, "v": 1}, "pub": {"v": 2}}},
                doc! {"$redact": {"$cond": [{"$eq": ["$secret", true]}, "$$PRUNE", "$$DESCEND"]}},
            ],
            data(),
        );
        assert_eq!(out, vec![doc! {"_id": 1, "pub": {"v": 2}}]);
    }

    #[test]
    fn server_stages_are_exposed_and_parse_errors_match() {
        let p = pipeline(vec![
            doc! {"$changeStream": {}},
            doc! {"$match": {"operationType": "insert"}},
        ]);
        assert!(p.stages()[0].is_server_stage());
        assert_eq!(p.stages()[0].name(), "$changeStream");
        assert!(p.run(data().iter(), &mut NoCollections).is_err());
        let rest = p.slice(1..2);
        assert_eq!(rest.len(), 1);
        let e = parse_err(vec![doc! {"$foo": 1}]);
        assert_eq!(e.code, 40324);
        assert_eq!(e.message, "Unrecognized pipeline stage name: '$foo'");
        assert_eq!(
            parse_err(vec![doc! {"$match": {}, "$sort": {"a": 1}}]).code,
            40323
        );
        assert_eq!(parse_err(vec![doc! {"$limit": 0}]).code, 15958);
        assert_eq!(parse_err(vec![doc! {"$skip": -1}]).code, 15956);
        assert_eq!(
            parse_err(vec![doc! {"$group": {"a": {"$sum": 1}}}]).code,
            15955
        );
        assert_eq!(
            parse_err(vec![doc! {"$group": {"_id": 1, "a": {"$foo": 1}}}]).code,
            15952
        );
        assert_eq!(
            parse_err(vec![doc! {"$out": "x"}, doc! {"$match": {}}]).code,
            40601
        );
        assert_eq!(parse_err(vec![doc! {"$unwind": "tags"}]).code, 28818);
    }

    #[test]
    fn limit_stops_reading_input_early() {
        let p = pipeline(vec![
            doc! {"$match": {"n": {"$gte": 0}}},
            doc! {"$limit": 1},
        ]);
        let mut pulled = 0;
        let input = data();
        let iter = input.iter().inspect(|_| pulled += 1);
        let out = p.run_documents(iter, &mut NoCollections).expect("runs");
        assert_eq!(out.len(), 1);
        assert_eq!(pulled, 2);
    }

    #[test]
    fn pipeline_updates() {
        let raw = RawDocumentBuf::try_from(
            &doc! {"p": [{"$set": {"a": {"$add": ["$a", 1]}}}, {"$unset": "b"}]},
        )
        .expect("encodable");
        let p = Pipeline::parse_update(raw.get_array("p").expect("array"), &Variables::new())
            .expect("valid");
        let out = p
            .run_update(&doc! {"_id": 1, "a": 1, "b": 2}, &Variables::new())
            .expect("runs");
        assert_eq!(out, doc! {"_id": 1, "a": 2});
        let raw = RawDocumentBuf::try_from(&doc! {"p": [{"$match": {}}]}).expect("encodable");
        let e = Pipeline::parse_update(raw.get_array("p").expect("array"), &Variables::new())
            .expect_err("not allowed");
        assert_eq!(e.code, 72);
    }
}
