//! Update specifications: replacement documents, update-operator documents and aggregation
//! pipelines, applied to one document as mongod 7.0's `UpdateDriver` does.
//!
//! Operators: `$set $unset $inc $mul $min $max $rename $currentDate $setOnInsert $push`
//! (with `$each $slice $sort $position`) `$addToSet` (with `$each`) `$pop $pull $pullAll $bit`;
//! positional `$`, `$[]` and `$[<identifier>]` with `arrayFilters`. Pipelines: `$set`/
//! `$addFields`, `$unset`, `$project`, `$replaceRoot`/`$replaceWith`. Errors are the server's:
//! 66 `ImmutableField` for changing `_id`, 40 `ConflictingUpdateOperators` for overlapping
//! paths, 14 `TypeMismatch` for `$inc` on a non-number, 2 `BadValue` when the positional
//! operator finds no array match, 9 `FailedToParse` for malformed operators, 28
//! `PathNotViable` when a path runs into a scalar.
//!
//! As in mongod 5.0+, the operators of one update are applied in the order of their paths
//! (field names lexicographically, numeric field names numerically), so new fields are added
//! in that order.

use std::cmp::Ordering;

use bson::oid::ObjectId;
use bson::{Bson, Document, RawArray, RawBsonRef, RawDocument, RawDocumentBuf, Timestamp};

use super::QueryError;
use super::compare::{cmp_val, compare_bson};
use super::diff::{UpdateDescription, describe_diff, diff_documents};
use super::expr::Variables;
use super::filter::{Filter, MatchDetails, compile_regex, parse_value_condition};
use super::numeric::{ArithOp, Num, arith};
use super::path::array_index;
use super::pipeline::Pipeline;
use super::sort::SortSpec;
use super::value::{DocRef, Val, check_nesting, raw_doc_to_document};

/// A parsed update.
#[derive(Debug, Clone)]
pub struct Update {
    kind: Kind,
    vars: Variables,
}

#[derive(Debug, Clone)]
enum Kind {
    Replacement(Document),
    Operators {
        ops: Vec<Op>,
        array_filters: Vec<(String, Filter)>,
    },
    Pipeline(Box<Pipeline>),
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OpKind {
    Set,
    Unset,
    Inc,
    Mul,
    Min,
    Max,
    Rename,
    CurrentDate,
    SetOnInsert,
    Push,
    AddToSet,
    Pop,
    Pull,
    PullAll,
    Bit,
}

impl OpKind {
    fn from_name(name: &str) -> Option<OpKind> {
        Some(match name {
            "$set" => OpKind::Set,
            "$unset" => OpKind::Unset,
            "$inc" => OpKind::Inc,
            "$mul" => OpKind::Mul,
            "$min" => OpKind::Min,
            "$max" => OpKind::Max,
            "$rename" => OpKind::Rename,
            "$currentDate" => OpKind::CurrentDate,
            "$setOnInsert" => OpKind::SetOnInsert,
            "$push" => OpKind::Push,
            "$addToSet" => OpKind::AddToSet,
            "$pop" => OpKind::Pop,
            "$pull" => OpKind::Pull,
            "$pullAll" => OpKind::PullAll,
            "$bit" => OpKind::Bit,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            OpKind::Set => "$set",
            OpKind::Unset => "$unset",
            OpKind::Inc => "$inc",
            OpKind::Mul => "$mul",
            OpKind::Min => "$min",
            OpKind::Max => "$max",
            OpKind::Rename => "$rename",
            OpKind::CurrentDate => "$currentDate",
            OpKind::SetOnInsert => "$setOnInsert",
            OpKind::Push => "$push",
            OpKind::AddToSet => "$addToSet",
            OpKind::Pop => "$pop",
            OpKind::Pull => "$pull",
            OpKind::PullAll => "$pullAll",
            OpKind::Bit => "$bit",
        }
    }

    /// Operators that create missing fields (and intermediate documents).
    fn creates(self) -> bool {
        !matches!(
            self,
            OpKind::Unset | OpKind::Pop | OpKind::Pull | OpKind::PullAll | OpKind::Rename
        )
    }
}

/// One path component of an update target.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Comp {
    Field(String),
    /// `$`
    Positional,
    /// `$[]`
    All,
    /// `$[identifier]`
    Filtered(String),
}

impl Comp {
    fn text(&self) -> String {
        match self {
            Comp::Field(f) => f.clone(),
            Comp::Positional => "$".into(),
            Comp::All => "$[]".into(),
            Comp::Filtered(id) => format!("$[{id}]"),
        }
    }
}

#[derive(Debug, Clone)]
enum OpArg {
    Value(Bson),
    Push {
        each: Vec<Bson>,
        position: Option<i64>,
        slice: Option<i64>,
        sort: Option<PushSort>,
    },
    AddToSet(Vec<Bson>),
    Pull(PullCond),
    Pop(bool),
    Bit(Vec<(BitOp, Num)>),
    CurrentDate(bool),
    /// `$rename` destination path.
    RenameTo(String),
}

#[derive(Debug, Clone)]
enum PushSort {
    Whole(super::Direction),
    Fields(SortSpec),
}

#[derive(Debug, Clone)]
enum PullCond {
    Equal(Bson),
    Regex(super::filter::RegexPred),
    Values(Box<Filter>),
    Documents(Box<Filter>),
}

#[derive(Debug, Clone, Copy)]
enum BitOp {
    And,
    Or,
    Xor,
}

#[derive(Debug, Clone)]
struct Op {
    kind: OpKind,
    path: String,
    comps: Vec<Comp>,
    arg: OpArg,
}

/// What happened at one updated path, for the change-stream log.
#[derive(Debug, Clone)]
enum LogKind {
    /// The value at the path was set (created or replaced).
    Set,
    /// The field was removed.
    Unset,
    /// Elements were appended to the array at the path, starting at this index.
    Append(usize),
}

#[derive(Debug, Clone)]
struct LogEntry {
    path: Vec<String>,
    kind: LogKind,
}

struct ApplyCtx<'a> {
    positional: Option<usize>,
    array_filters: &'a [(String, Filter)],
    vars: &'a Variables,
    is_insert: bool,
    log: Vec<LogEntry>,
    /// `_id` of the document, for error messages.
    id_text: String,
}

fn fail_parse(msg: impl Into<String>) -> QueryError {
    QueryError::failed_to_parse(msg)
}

fn bad(msg: impl Into<String>) -> QueryError {
    QueryError::bad_value(msg)
}

fn path_not_viable(msg: impl Into<String>) -> QueryError {
    QueryError::new(28, "PathNotViable", msg)
}

/// mongod's one-line rendering of a value in error messages (close to its `toString()`).
fn show(b: &Bson) -> String {
    match b {
        Bson::String(s) => format!("\"{s}\""),
        Bson::Document(d) => show_doc(d),
        Bson::Array(a) => format!("[ {} ]", a.iter().map(show).collect::<Vec<_>>().join(", ")),
        Bson::Int64(i) => i.to_string(),
        other => other.to_string(),
    }
}

fn show_doc(d: &Document) -> String {
    if d.is_empty() {
        return "{}".into();
    }
    format!(
        "{{ {} }}",
        d.iter()
            .map(|(k, v)| format!("{k}: {}", show(v)))
            .collect::<Vec<_>>()
            .join(", ")
    )
}

fn type_name(b: &Bson) -> &'static str {
    super::value::type_alias(b.element_type())
}

impl Update {
    /// Parses the `u` of an update statement: a document (replacement when its first field does
    /// not start with `$`, operators otherwise) or an array (pipeline). `array_filters` are the
    /// statement's `arrayFilters` (error 9 when an identifier is unused or defined twice).
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
        let kind = match update {
            RawBsonRef::Array(stages) => {
                if array_filters.is_some_and(|a| !a.is_empty()) {
                    return Err(QueryError::new(
                        72,
                        "InvalidOptions",
                        "arrayFilters may not be specified for pipeline-style updates",
                    ));
                }
                Kind::Pipeline(Box::new(Pipeline::parse_update(stages, vars)?))
            }
            RawBsonRef::Document(d) => {
                let first_is_op = d
                    .iter_elements()
                    .next()
                    .and_then(Result::ok)
                    .is_some_and(|e| e.key().as_str().starts_with('$'));
                if first_is_op {
                    let ops = parse_operators(d, vars)?;
                    let filters = parse_array_filters(array_filters, vars)?;
                    check_identifiers(&ops, &filters, d)?;
                    Kind::Operators {
                        ops,
                        array_filters: filters,
                    }
                } else {
                    if array_filters.is_some_and(|a| !a.is_empty()) {
                        return Err(bad(
                            "Cannot use array filters with a replacement-style update",
                        ));
                    }
                    check_nesting(DocRef::Raw(d))?;
                    let doc = raw_doc_to_document(d);
                    for k in doc.keys() {
                        if k.starts_with('$') {
                            return Err(QueryError::new(
                                52,
                                "DollarPrefixedFieldName",
                                format!(
                                    "The dollar ($) prefixed field '{k}' in '{k}' is not allowed in the context of an update's replacement document. Consider using an aggregation pipeline with $replaceWith."
                                ),
                            ));
                        }
                    }
                    Kind::Replacement(doc)
                }
            }
            other => {
                return Err(QueryError::failed_to_parse(format!(
                    "Update argument must be either an object or an array, found {}",
                    super::value::type_alias(other.element_type())
                )));
            }
        };
        Ok(Update {
            kind,
            vars: vars.clone(),
        })
    }

    /// True for a replacement document.
    pub fn is_replacement(&self) -> bool {
        matches!(self.kind, Kind::Replacement(_))
    }

    /// True for an aggregation-pipeline update.
    pub fn is_pipeline(&self) -> bool {
        matches!(self.kind, Kind::Pipeline(_))
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
        check_nesting(DocRef::Raw(doc))?;
        let original = raw_doc_to_document(doc);
        let (new_doc, log) = self.apply_document(&original, details, false)?;
        let encoded = encode(&new_doc)?;
        if encoded.as_bytes() == doc.as_bytes() {
            return Ok(None);
        }
        let description = match &self.kind {
            Kind::Replacement(_) => None,
            Kind::Pipeline(_) => Some(describe_diff(&diff_documents(&original, &new_doc))),
            Kind::Operators { .. } => Some(describe_log(&original, &new_doc, log)),
        };
        Ok(Some(AppliedUpdate {
            document: encoded,
            description,
        }))
    }

    /// Builds the document an upsert inserts when `filter` matched nothing: the filter's
    /// equality fields (dotted paths expanded, `_id` first), then the update applied with
    /// `$setOnInsert` active (or, for a replacement, the replacement with the filter's `_id`).
    /// When the result has no `_id`, a new ObjectId is generated and placed first.
    pub fn upsert_document(&self, filter: &Filter) -> Result<RawDocumentBuf, QueryError> {
        let seed = upsert_seed(filter)?;
        let mut result = match &self.kind {
            Kind::Replacement(r) => {
                let mut d = Document::new();
                if !r.contains_key("_id")
                    && let Some(id) = seed.get("_id")
                {
                    d.insert("_id", id.clone());
                }
                for (k, v) in r {
                    d.insert(k.clone(), v.clone());
                }
                d
            }
            _ => self.apply_document(&seed, None, true)?.0,
        };
        if !result.contains_key("_id") {
            result.insert("_id", ObjectId::new());
        }
        let result = id_first(result);
        validate_id(&result)?;
        encode(&result)
    }

    /// Applies to a decoded document; returns the new document and the operator log.
    fn apply_document(
        &self,
        original: &Document,
        details: Option<&MatchDetails>,
        is_insert: bool,
    ) -> Result<(Document, Vec<LogEntry>), QueryError> {
        match &self.kind {
            Kind::Replacement(r) => {
                let mut d = Document::new();
                match (original.get("_id"), r.get("_id")) {
                    (Some(old), Some(new)) if !same_value(old, new) => {
                        return Err(immutable_altered(new));
                    }
                    (Some(old), None) => {
                        d.insert("_id", old.clone());
                    }
                    _ => {}
                }
                for (k, v) in r {
                    d.insert(k.clone(), v.clone());
                }
                validate_id(&d)?;
                Ok((d, Vec::new()))
            }
            Kind::Pipeline(p) => {
                let mut out = p.run_update(original, &self.vars)?;
                // mongod puts the original `_id` back (first) when the pipeline dropped it.
                if !out.contains_key("_id")
                    && let Some(id) = original.get("_id")
                {
                    out.insert("_id", id.clone());
                    out = id_first(out);
                }
                check_id_unchanged(original, &out, is_insert)?;
                validate_id(&out)?;
                Ok((out, Vec::new()))
            }
            Kind::Operators { ops, array_filters } => {
                let mut doc = original.clone();
                let mut ctx = ApplyCtx {
                    positional: details.and_then(MatchDetails::positional_index),
                    array_filters,
                    vars: &self.vars,
                    is_insert,
                    log: Vec::new(),
                    id_text: original
                        .get("_id")
                        .map(|id| format!("{{_id: {}}}", show(id)))
                        .unwrap_or_else(|| "{}".into()),
                };
                let mut ordered: Vec<&Op> = ops.iter().collect();
                ordered.sort_by(|a, b| cmp_paths(&effective_path(a), &effective_path(b)));
                for op in ordered {
                    apply_op(&mut doc, op, &mut ctx)?;
                }
                check_id_unchanged(original, &doc, is_insert)?;
                validate_id(&doc)?;
                Ok((doc, ctx.log))
            }
        }
    }
}

/// The path an operator is ordered by (the destination for `$rename`).
fn effective_path(op: &Op) -> Vec<String> {
    match &op.arg {
        OpArg::RenameTo(to) => to.split('.').map(str::to_owned).collect(),
        _ => op.comps.iter().map(Comp::text).collect(),
    }
}

/// mongod's field order for update application: numeric names numerically, others by bytes.
fn cmp_paths(a: &[String], b: &[String]) -> Ordering {
    for (x, y) in a.iter().zip(b) {
        let o = match (x.parse::<u64>(), y.parse::<u64>()) {
            (Ok(i), Ok(j)) => i.cmp(&j).then_with(|| x.cmp(y)),
            _ => x.as_bytes().cmp(y.as_bytes()),
        };
        if o != Ordering::Equal {
            return o;
        }
    }
    a.len().cmp(&b.len())
}

/// Binary equality of two values (type and bytes), as mongod checks `_id` changes.
fn same_value(a: &Bson, b: &Bson) -> bool {
    compare_bson(a, b).is_eq() && a.element_type() == b.element_type() && a == b
}

fn immutable_altered(new: &Bson) -> QueryError {
    QueryError::immutable_field(format!(
        "After applying the update, the (immutable) field '_id' was found to have been altered to _id: {}",
        show(new)
    ))
}

fn check_id_unchanged(
    before: &Document,
    after: &Document,
    is_insert: bool,
) -> Result<(), QueryError> {
    match (before.get("_id"), after.get("_id")) {
        (Some(old), Some(new)) if !same_value(old, new) => Err(QueryError::immutable_field(
            "Performing an update on the path '_id' would modify the immutable field '_id'",
        )),
        (Some(_), None) if !is_insert => Err(QueryError::immutable_field(
            "Performing an update on the path '_id' would modify the immutable field '_id'",
        )),
        _ => Ok(()),
    }
}

/// `_id` may not be an array, a regex or undefined (mongod's storage validation).
fn validate_id(d: &Document) -> Result<(), QueryError> {
    match d.get("_id") {
        Some(Bson::Array(_)) => Err(QueryError::new(
            53,
            "InvalidIdField",
            "The '_id' value cannot be of type array",
        )),
        Some(Bson::RegularExpression(_)) => Err(QueryError::new(
            53,
            "InvalidIdField",
            "The '_id' value cannot be of type regex",
        )),
        Some(Bson::Undefined) => Err(QueryError::new(
            53,
            "InvalidIdField",
            "The '_id' value cannot be of type undefined",
        )),
        _ => Ok(()),
    }
}

fn id_first(d: Document) -> Document {
    if d.keys().next().is_some_and(|k| k == "_id") {
        return d;
    }
    let mut out = Document::new();
    if let Some(id) = d.get("_id") {
        out.insert("_id", id.clone());
    }
    for (k, v) in d {
        if k != "_id" {
            out.insert(k, v);
        }
    }
    out
}

fn encode(d: &Document) -> Result<RawDocumentBuf, QueryError> {
    RawDocumentBuf::try_from(d).map_err(|e| bad(format!("cannot encode the updated document: {e}")))
}

// ---------------------------------------------------------------------------------------------
// Parsing

fn parse_operators(d: &RawDocument, vars: &Variables) -> Result<Vec<Op>, QueryError> {
    check_nesting(DocRef::Raw(d))?;
    let mut ops: Vec<Op> = Vec::new();
    for (name, arg) in DocRef::Raw(d).iter() {
        let Some(kind) = OpKind::from_name(name) else {
            return Err(fail_parse(format!(
                "Unknown modifier: {name}. Expected a valid update modifier or pipeline-style update specified as an array"
            )));
        };
        let Some(fields) = arg.as_doc() else {
            return Err(fail_parse(format!(
                "Modifiers operate on fields but we found type {} instead. For example: {{$mod: {{<field>: ...}}}} not {{{name}: {}}}",
                super::value::type_alias(arg.element_type()),
                show(&arg.to_bson())
            )));
        };
        for (path, value) in fields.iter() {
            let comps = parse_update_path(path, kind)?;
            let op_arg = parse_arg(kind, path, value, vars)?;
            let op = Op {
                kind,
                path: path.to_owned(),
                comps,
                arg: op_arg,
            };
            check_conflicts(&ops, &op)?;
            ops.push(op);
        }
    }
    Ok(ops)
}

fn parse_update_path(path: &str, kind: OpKind) -> Result<Vec<Comp>, QueryError> {
    if path.is_empty() {
        return Err(QueryError::new(
            56,
            "EmptyFieldName",
            "An empty update path is not valid.",
        ));
    }
    let mut comps = Vec::new();
    let mut positional = 0;
    for part in path.split('.') {
        if part.is_empty() {
            return Err(QueryError::new(
                56,
                "EmptyFieldName",
                format!(
                    "The update path '{path}' contains an empty field name, which is not allowed."
                ),
            ));
        }
        let comp = if part == "$" {
            positional += 1;
            Comp::Positional
        } else if part == "$[]" {
            Comp::All
        } else if let Some(id) = part.strip_prefix("$[").and_then(|r| r.strip_suffix(']')) {
            Comp::Filtered(id.to_owned())
        } else {
            if part.starts_with('$') && comps.is_empty() {
                return Err(QueryError::new(
                    52,
                    "DollarPrefixedFieldName",
                    format!(
                        "The dollar ($) prefixed field '{part}' in '{path}' is not allowed in the context of an update's replacement document. Consider using an aggregation pipeline with $replaceWith."
                    ),
                ));
            }
            Comp::Field(part.to_owned())
        };
        if comps.is_empty() && comp != Comp::Field(part.to_owned()) {
            return Err(bad(format!(
                "Cannot have array filter identifier (i.e. '$[<id>]') element in the first position in path '{path}'"
            ))
            .with_positional_first(part, path));
        }
        comps.push(comp);
    }
    if positional > 1 {
        return Err(bad(format!(
            "Too many positional (i.e. '$') elements found in path '{path}'"
        )));
    }
    if kind == OpKind::Rename && comps.iter().any(|c| !matches!(c, Comp::Field(_))) {
        return Err(bad(format!(
            "The source field for $rename may not be dynamic: {path}"
        )));
    }
    Ok(comps)
}

trait PositionalFirst {
    fn with_positional_first(self, part: &str, path: &str) -> Self;
}

impl PositionalFirst for QueryError {
    /// A leading `$` gets mongod's positional message instead of the array-filter one.
    fn with_positional_first(self, part: &str, path: &str) -> Self {
        if part == "$" {
            bad(format!(
                "Cannot have positional (i.e. '$') element in the first position in path '{path}'"
            ))
        } else {
            self
        }
    }
}

/// mongod's conflict rule: no path may equal or be a prefix of another (positional parts taken
/// literally).
fn check_conflicts(existing: &[Op], new: &Op) -> Result<(), QueryError> {
    let new_paths = op_paths(new);
    for op in existing {
        for p in op_paths(op) {
            for q in &new_paths {
                let common = p.iter().zip(q.iter()).take_while(|(a, b)| a == b).count();
                if common == p.len().min(q.len()) {
                    let at = q.get(..common).unwrap_or(&[]).join(".");
                    return Err(QueryError::conflicting_update(format!(
                        "Updating the path '{}' would create a conflict at '{at}'",
                        q.join(".")
                    )));
                }
            }
        }
    }
    Ok(())
}

fn op_paths(op: &Op) -> Vec<Vec<String>> {
    let mut out = vec![op.comps.iter().map(Comp::text).collect::<Vec<_>>()];
    if let OpArg::RenameTo(to) = &op.arg {
        out.push(to.split('.').map(str::to_owned).collect());
    }
    out
}

fn parse_arg(
    kind: OpKind,
    path: &str,
    value: Val<'_>,
    vars: &Variables,
) -> Result<OpArg, QueryError> {
    let v = value.to_bson();
    Ok(match kind {
        OpKind::Set | OpKind::SetOnInsert | OpKind::Unset | OpKind::Min | OpKind::Max => {
            OpArg::Value(v)
        }
        OpKind::Inc | OpKind::Mul => {
            if Num::from_bson(&v).is_none() {
                let verb = if kind == OpKind::Inc {
                    "increment"
                } else {
                    "multiply"
                };
                return Err(QueryError::type_mismatch(format!(
                    "Cannot {verb} with non-numeric argument: {{{path}: {}}}",
                    show(&v)
                )));
            }
            OpArg::Value(v)
        }
        OpKind::Rename => {
            let Bson::String(to) = v else {
                return Err(bad(format!(
                    "The 'to' field for $rename must be a string: {path}: {}",
                    show(&v)
                )));
            };
            if to == path {
                return Err(bad(format!(
                    "The source and target field for $rename must differ: {path}: \"{to}\""
                )));
            }
            if to.is_empty() || to.split('.').any(str::is_empty) {
                return Err(bad(
                    "The update path contains an empty field name. It is not allowed.",
                ));
            }
            if to.split('.').any(|p| p.starts_with('$')) {
                return Err(bad(format!(
                    "The destination field for $rename may not be dynamic: {to}"
                )));
            }
            let (src, dst) = (format!("{path}."), format!("{to}."));
            if dst.starts_with(&src) || src.starts_with(&dst) {
                return Err(bad(format!(
                    "The source and target field for $rename must not be on the same path: {path}: \"{to}\""
                )));
            }
            OpArg::RenameTo(to)
        }
        OpKind::CurrentDate => match &v {
            Bson::Boolean(_) => OpArg::CurrentDate(false),
            Bson::Document(d) => {
                let ty = d.get("$type");
                if d.len() != 1 || ty.is_none() {
                    return Err(bad(
                        "The only valid field of the option is '$type': {$currentDate: {field : {$type: 'date/timestamp'}}}",
                    ));
                }
                match ty {
                    Some(Bson::String(s)) if s == "date" => OpArg::CurrentDate(false),
                    Some(Bson::String(s)) if s == "timestamp" => OpArg::CurrentDate(true),
                    _ => {
                        return Err(bad(
                            "The '$type' string field is required to be 'date' or 'timestamp': {$currentDate: {field : {$type: 'date'}}}",
                        ));
                    }
                }
            }
            other => {
                return Err(bad(format!(
                    "{} is not valid type for $currentDate. Please use a boolean ('true') or a $type expression ({{$type: 'timestamp/date'}}).",
                    type_name(other)
                )));
            }
        },
        OpKind::Push => parse_push(v)?,
        OpKind::AddToSet => match v {
            Bson::Document(d) if d.keys().next().is_some_and(|k| k == "$each") => {
                if d.len() > 1 {
                    let extra = d.keys().nth(1).cloned().unwrap_or_default();
                    return Err(bad(format!(
                        "Found unexpected fields after $each in $addToSet: {}",
                        show_doc(&d)
                    ))
                    .with_field(&extra));
                }
                match d.get("$each") {
                    Some(Bson::Array(a)) => OpArg::AddToSet(a.clone()),
                    Some(other) => {
                        return Err(bad(format!(
                            "The argument to $each in $addToSet must be an array but it was of type {}",
                            type_name(other)
                        )));
                    }
                    None => OpArg::AddToSet(Vec::new()),
                }
            }
            other => OpArg::AddToSet(vec![other]),
        },
        OpKind::Pop => {
            let n = Num::from_bson(&v).map(Num::to_f64);
            match n {
                Some(1.0) => OpArg::Pop(true),
                Some(-1.0) => OpArg::Pop(false),
                _ => {
                    return Err(
                        fail_parse(format!("Expected a number in: {path}: {}", show(&v)))
                            .if_number(&v, path),
                    );
                }
            }
        }
        OpKind::Pull => OpArg::Pull(parse_pull(value, vars)?),
        OpKind::PullAll => match v {
            Bson::Array(a) => OpArg::AddToSet(a),
            other => {
                return Err(bad(format!(
                    "$pullAll requires an array argument but was given a {}",
                    type_name(&other)
                )));
            }
        },
        OpKind::Bit => {
            let Bson::Document(d) = &v else {
                return Err(bad(format!(
                    "The $bit modifier is not compatible with a {}. You must pass in an embedded document: {{$bit: {{field: {{and/or/xor: #}}}}",
                    type_name(&v)
                )));
            };
            let mut ops = Vec::new();
            for (k, x) in d {
                let op = match k.as_str() {
                    "and" => BitOp::And,
                    "or" => BitOp::Or,
                    "xor" => BitOp::Xor,
                    _ => {
                        return Err(bad(format!(
                            "The $bit modifier only supports 'and', 'or', and 'xor', not '{k}' which is an unknown operator: {{{k}: {}}}",
                            show(x)
                        )));
                    }
                };
                let n = match x {
                    Bson::Int32(i) => Num::I32(*i),
                    Bson::Int64(i) => Num::I64(*i),
                    other => {
                        return Err(bad(format!(
                            "The $bit modifier field must be an Integer(32/64 bit); a '{}' is not supported here: {{{k}: {}}}",
                            type_name(other),
                            show(other)
                        )));
                    }
                };
                ops.push((op, n));
            }
            if ops.is_empty() {
                return Err(bad("You must pass in at least one bitwise operation. The format is: {$bit: {field: {and/or/xor: #}}".to_string()));
            }
            OpArg::Bit(ops)
        }
    })
}

trait ErrorTweaks {
    fn with_field(self, field: &str) -> Self;
    fn if_number(self, v: &Bson, path: &str) -> Self;
}

impl ErrorTweaks for QueryError {
    fn with_field(self, _field: &str) -> Self {
        self
    }

    /// `$pop` with a number other than 1/-1 has its own message.
    fn if_number(self, v: &Bson, _path: &str) -> Self {
        if Num::from_bson(v).is_some() {
            fail_parse(format!("$pop expects 1 or -1, found: {}", show(v)))
        } else {
            self
        }
    }
}

fn parse_push(v: Bson) -> Result<OpArg, QueryError> {
    let Bson::Document(d) = &v else {
        return Ok(OpArg::Push {
            each: vec![v],
            position: None,
            slice: None,
            sort: None,
        });
    };
    if !d.contains_key("$each") {
        return Ok(OpArg::Push {
            each: vec![v.clone()],
            position: None,
            slice: None,
            sort: None,
        });
    }
    let mut each = Vec::new();
    let mut position = None;
    let mut slice = None;
    let mut sort = None;
    for (k, x) in d {
        match k.as_str() {
            "$each" => match x {
                Bson::Array(a) => each = a.clone(),
                other => {
                    return Err(bad(format!(
                        "The argument to $each in $push must be an array but it was of type: {}",
                        type_name(other)
                    )));
                }
            },
            "$slice" => {
                slice = Some(integral(x).ok_or_else(|| {
                    bad(format!(
                        "The value for $slice must be an integer value but was given type: {}",
                        type_name(x)
                    ))
                })?);
            }
            "$position" => {
                position = Some(integral(x).ok_or_else(|| {
                    bad(format!(
                        "The value for $position must be an integer value, not of type: {}",
                        type_name(x)
                    ))
                })?);
            }
            "$sort" => {
                let invalid = || {
                    bad(
                        "The $sort is invalid: use 1/-1 to sort the whole element, or {field:1/-1} to sort embedded fields",
                    )
                };
                sort = Some(match x {
                    Bson::Document(spec) => {
                        if spec.is_empty() {
                            return Err(bad(
                                "The $sort pattern is empty when it should be a set of fields.",
                            ));
                        }
                        for (f, dir) in spec {
                            if f.is_empty() || f.split('.').any(str::is_empty) || f.starts_with('$')
                            {
                                return Err(bad(format!(
                                    "The $sort field is a dotted field but has an empty part: {f}"
                                )));
                            }
                            match Num::from_bson(dir).map(Num::to_f64) {
                                Some(n) if n == 1.0 || n == -1.0 => {}
                                _ => return Err(invalid()),
                            }
                        }
                        let raw = encode(spec)?;
                        PushSort::Fields(SortSpec::parse(&raw)?)
                    }
                    other => match Num::from_bson(other).map(Num::to_f64) {
                        Some(1.0) => PushSort::Whole(super::Direction::Ascending),
                        Some(-1.0) => PushSort::Whole(super::Direction::Descending),
                        _ => return Err(invalid()),
                    },
                });
            }
            other => {
                return Err(bad(format!("Unrecognized clause in $push: {other}")));
            }
        }
    }
    Ok(OpArg::Push {
        each,
        position,
        slice,
        sort,
    })
}

fn integral(x: &Bson) -> Option<i64> {
    match x {
        Bson::Int32(i) => Some(i64::from(*i)),
        Bson::Int64(i) => Some(*i),
        Bson::Double(d) => super::numeric::f64_to_i64_exact(*d),
        Bson::Decimal128(d) => super::numeric::f64_to_i64_exact(super::numeric::decimal_to_f64(*d)),
        _ => None,
    }
}

fn parse_pull(value: Val<'_>, vars: &Variables) -> Result<PullCond, QueryError> {
    if let super::value::View::Regex(p, o) = value.view() {
        return Ok(PullCond::Regex(compile_regex(p, o)?));
    }
    match value.as_doc() {
        Some(d) => {
            let operator_form = d.iter().next().is_some_and(|(k, _)| {
                k.starts_with('$') && !matches!(k, "$and" | "$or" | "$nor" | "$expr" | "$comment")
            });
            if operator_form {
                Ok(PullCond::Values(Box::new(parse_value_condition(d, vars)?)))
            } else {
                Ok(PullCond::Documents(Box::new(Filter::parse_doc_ref(
                    d, vars, false,
                )?)))
            }
        }
        None => Ok(PullCond::Equal(value.to_bson())),
    }
}

fn parse_array_filters(
    filters: Option<&RawArray>,
    vars: &Variables,
) -> Result<Vec<(String, Filter)>, QueryError> {
    let mut out: Vec<(String, Filter)> = Vec::new();
    let Some(filters) = filters else {
        return Ok(out);
    };
    for f in filters {
        let f = f.map_err(|e| bad(e.to_string()))?;
        let RawBsonRef::Document(d) = f else {
            return Err(fail_parse("Expected array filter to be an object"));
        };
        let mut id: Option<String> = None;
        for (k, _) in DocRef::Raw(d).iter() {
            if k.starts_with('$') {
                continue;
            }
            let first = k.split('.').next().unwrap_or_default().to_owned();
            match &id {
                Some(existing) if *existing != first => {
                    return Err(fail_parse(format!(
                        "Error parsing array filter :: caused by :: Expected a single top-level field name, found '{existing}' and '{first}'"
                    )));
                }
                _ => id = Some(first),
            }
        }
        let Some(id) = id else {
            return Err(fail_parse(
                "Cannot use an expression without a top-level field name in arrayFilters",
            ));
        };
        let valid = id.chars().next().is_some_and(|c| c.is_ascii_lowercase())
            && id.chars().all(|c| c.is_ascii_alphanumeric());
        if !valid {
            return Err(bad(format!(
                "Error parsing array filter :: caused by :: The top-level field name must be an alphanumeric string beginning with a lowercase letter, found '{id}'"
            )));
        }
        if out.iter().any(|(x, _)| *x == id) {
            return Err(fail_parse(format!(
                "Found multiple array filters with the same top-level field name {id}"
            )));
        }
        out.push((id, Filter::parse_doc_ref(DocRef::Raw(d), vars, false)?));
    }
    Ok(out)
}

fn check_identifiers(
    ops: &[Op],
    filters: &[(String, Filter)],
    update: &RawDocument,
) -> Result<(), QueryError> {
    for op in ops {
        for c in &op.comps {
            if let Comp::Filtered(id) = c
                && !filters.iter().any(|(x, _)| x == id)
            {
                return Err(bad(format!(
                    "No array filter found for identifier '{id}' in path '{}'",
                    op.path
                )));
            }
        }
    }
    for (id, _) in filters {
        let used = ops.iter().any(|op| {
            op.comps
                .iter()
                .any(|c| matches!(c, Comp::Filtered(x) if x == id))
        });
        if !used {
            return Err(fail_parse(format!(
                "The array filter for identifier '{id}' was not used in the update {}",
                show_doc(&raw_doc_to_document(update))
            )));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Application

/// A slot an operator acts on: a field of a document or an element of an array.
enum Parent<'a> {
    Doc(&'a mut Document),
    Arr(&'a mut Vec<Bson>),
}

fn apply_op(doc: &mut Document, op: &Op, ctx: &mut ApplyCtx<'_>) -> Result<(), QueryError> {
    if op.kind == OpKind::SetOnInsert && !ctx.is_insert {
        return Ok(());
    }
    if let OpArg::RenameTo(to) = &op.arg {
        return apply_rename(doc, op, to, ctx);
    }
    let mut concrete = Vec::new();
    walk(Parent::Doc(doc), &op.comps, op, ctx, &mut concrete)
}

/// Walks `comps` from `parent`, expanding positional components, and applies the leaf
/// operator. `concrete` accumulates the resolved path for logging and messages.
fn walk(
    parent: Parent<'_>,
    comps: &[Comp],
    op: &Op,
    ctx: &mut ApplyCtx<'_>,
    concrete: &mut Vec<String>,
) -> Result<(), QueryError> {
    let Some((first, rest)) = comps.split_first() else {
        return Ok(());
    };
    match first {
        Comp::Field(name) => {
            if rest.is_empty() {
                return apply_leaf(parent, name, op, ctx, concrete);
            }
            match parent {
                Parent::Doc(d) => {
                    if !d.contains_key(name) {
                        if !op.kind.creates() {
                            return Ok(());
                        }
                        if rest.iter().any(|c| !matches!(c, Comp::Field(_))) {
                            return Err(positional_missing(op, name, rest));
                        }
                        d.insert(name.clone(), Document::new());
                        ctx.log.push(LogEntry {
                            path: extend(concrete, name),
                            kind: LogKind::Set,
                        });
                        // Children created below are covered by this log entry.
                        let mark = ctx.log.len();
                        concrete.push(name.clone());
                        let r = descend(d.get_mut(name), rest, op, ctx, concrete);
                        concrete.pop();
                        ctx.log.truncate(mark);
                        return r;
                    }
                    concrete.push(name.clone());
                    let r = descend(d.get_mut(name), rest, op, ctx, concrete);
                    concrete.pop();
                    r
                }
                Parent::Arr(a) => {
                    let Some(i) = array_index(name) else {
                        if op.kind.creates() {
                            return Err(path_not_viable(format!(
                                "Cannot create field '{name}' in element {{{}: {}}}",
                                concrete.last().cloned().unwrap_or_default(),
                                show(&Bson::Array(a.clone()))
                            )));
                        }
                        return Ok(());
                    };
                    if i >= a.len() {
                        if !op.kind.creates() {
                            return Ok(());
                        }
                        pad_array(a, i)?;
                        a[i] = Bson::Document(Document::new());
                        ctx.log.push(LogEntry {
                            path: extend(concrete, name),
                            kind: LogKind::Set,
                        });
                        let mark = ctx.log.len();
                        concrete.push(name.clone());
                        let r = descend(a.get_mut(i), rest, op, ctx, concrete);
                        concrete.pop();
                        ctx.log.truncate(mark);
                        return r;
                    }
                    concrete.push(name.clone());
                    let r = descend(a.get_mut(i), rest, op, ctx, concrete);
                    concrete.pop();
                    r
                }
            }
        }
        Comp::Positional => {
            let Parent::Arr(a) = parent else {
                return Err(positional_not_found());
            };
            let Some(i) = ctx.positional else {
                return Err(positional_not_found());
            };
            if i >= a.len() {
                return Err(positional_not_found());
            }
            let name = i.to_string();
            if rest.is_empty() {
                return apply_leaf(Parent::Arr(a), &name, op, ctx, concrete);
            }
            concrete.push(name);
            let r = descend(a.get_mut(i), rest, op, ctx, concrete);
            concrete.pop();
            r
        }
        Comp::All | Comp::Filtered(_) => {
            let Parent::Arr(a) = parent else {
                return Err(bad(format!(
                    "The path '{}' must exist in the document in order to apply array updates.",
                    concrete.join(".")
                )));
            };
            let filter = match first {
                Comp::Filtered(id) => ctx
                    .array_filters
                    .iter()
                    .find(|(x, _)| x == id)
                    .map(|(x, f)| (x.clone(), f.clone())),
                _ => None,
            };
            for i in 0..a.len() {
                if let Some((id, f)) = &filter {
                    let mut probe = Document::new();
                    probe.insert(id.clone(), a[i].clone());
                    if !f.matches_bson(&probe)? {
                        continue;
                    }
                }
                let name = i.to_string();
                if rest.is_empty() {
                    apply_leaf(Parent::Arr(a), &name, op, ctx, concrete)?;
                } else {
                    concrete.push(name);
                    let r = descend(a.get_mut(i), rest, op, ctx, concrete);
                    concrete.pop();
                    r?;
                }
            }
            Ok(())
        }
    }
}

fn extend(concrete: &[String], name: &str) -> Vec<String> {
    let mut p = concrete.to_vec();
    p.push(name.to_owned());
    p
}

fn positional_not_found() -> QueryError {
    bad("The positional operator did not find the match needed from the query.")
}

fn positional_missing(op: &Op, name: &str, _rest: &[Comp]) -> QueryError {
    let _ = name;
    if op.comps.contains(&Comp::Positional) {
        positional_not_found()
    } else {
        bad(format!(
            "The path '{}' must exist in the document in order to apply array updates.",
            op.comps
                .iter()
                .take_while(|c| matches!(c, Comp::Field(_)))
                .map(Comp::text)
                .collect::<Vec<_>>()
                .join(".")
        ))
    }
}

/// Continues the walk below an existing value.
fn descend(
    v: Option<&mut Bson>,
    rest: &[Comp],
    op: &Op,
    ctx: &mut ApplyCtx<'_>,
    concrete: &mut Vec<String>,
) -> Result<(), QueryError> {
    match v {
        Some(Bson::Document(d)) => walk(Parent::Doc(d), rest, op, ctx, concrete),
        Some(Bson::Array(a)) => walk(Parent::Arr(a), rest, op, ctx, concrete),
        Some(other) => {
            if !op.kind.creates() {
                return Ok(());
            }
            if matches!(rest.first(), Some(Comp::Positional)) {
                return Err(positional_not_found());
            }
            if matches!(rest.first(), Some(Comp::All | Comp::Filtered(_))) {
                return Err(bad(format!(
                    "The path '{}' must exist in the document in order to apply array updates.",
                    concrete.join(".")
                )));
            }
            let next = rest.first().map(Comp::text).unwrap_or_default();
            Err(path_not_viable(format!(
                "Cannot create field '{next}' in element {{{}: {}}}",
                concrete.last().cloned().unwrap_or_default(),
                show(other)
            )))
        }
        None => Ok(()),
    }
}

/// mongod pads an array with nulls up to a written index, but refuses to pad by more than
/// 1,500,000 elements (34 `CannotBackfillArray`).
fn pad_array(a: &mut Vec<Bson>, i: usize) -> Result<(), QueryError> {
    const MAX_PADDING: usize = 1_500_000;
    if i.saturating_sub(a.len()) > MAX_PADDING {
        return Err(QueryError::new(
            34,
            "CannotBackfillArray",
            format!("can't backfill more than {MAX_PADDING} elements"),
        ));
    }
    while a.len() <= i {
        a.push(Bson::Null);
    }
    Ok(())
}

/// Reads the current value of the slot.
fn slot_get<'a>(parent: &'a Parent<'_>, name: &str) -> Option<&'a Bson> {
    match parent {
        Parent::Doc(d) => d.get(name),
        Parent::Arr(a) => array_index(name).and_then(|i| a.get(i)),
    }
}

/// Writes the slot (creating the field or padding the array).
fn slot_set(parent: &mut Parent<'_>, name: &str, v: Bson) -> Result<(), QueryError> {
    match parent {
        Parent::Doc(d) => {
            d.insert(name.to_owned(), v);
            Ok(())
        }
        Parent::Arr(a) => {
            let Some(i) = array_index(name) else {
                return Err(path_not_viable(format!(
                    "Cannot create field '{name}' in element {{{}}}",
                    show(&Bson::Array(a.to_vec()))
                )));
            };
            pad_array(a, i)?;
            a[i] = v;
            Ok(())
        }
    }
}

fn apply_leaf(
    mut parent: Parent<'_>,
    name: &str,
    op: &Op,
    ctx: &mut ApplyCtx<'_>,
    concrete: &[String],
) -> Result<(), QueryError> {
    let path = extend(concrete, name);
    let path_text = path.join(".");
    let current = slot_get(&parent, name).cloned();
    let log_set = |ctx: &mut ApplyCtx<'_>| {
        ctx.log.push(LogEntry {
            path: path.clone(),
            kind: LogKind::Set,
        });
    };
    match (&op.arg, op.kind) {
        (OpArg::Value(v), OpKind::Set | OpKind::SetOnInsert) if current.as_ref() != Some(v) => {
            slot_set(&mut parent, name, v.clone())?;
            log_set(ctx);
        }
        (OpArg::Value(_), OpKind::Unset) => match &mut parent {
            Parent::Doc(d) => {
                if d.remove(name).is_some() {
                    ctx.log.push(LogEntry {
                        path,
                        kind: LogKind::Unset,
                    });
                }
            }
            // $unset of an array element sets it to null (the array keeps its length).
            Parent::Arr(a) => {
                if let Some(slot) = array_index(name).and_then(|i| a.get_mut(i))
                    && *slot != Bson::Null
                {
                    *slot = Bson::Null;
                    log_set(ctx);
                }
            }
        },
        (OpArg::Value(v), OpKind::Inc | OpKind::Mul) => {
            let Some(rhs) = Num::from_bson(v) else {
                return Ok(());
            };
            let new = match &current {
                None => match op.kind {
                    OpKind::Inc => v.clone(),
                    // $mul on a missing field sets 0 of the multiplier's type.
                    _ => arith(ArithOp::Mul, rhs, Num::I32(0))
                        .unwrap_or(Num::I32(0))
                        .to_bson(),
                },
                Some(cur) => {
                    let Some(lhs) = Num::from_bson(cur) else {
                        return Err(QueryError::type_mismatch(format!(
                            "Cannot apply {} to a value of non-numeric type. {} has the field '{name}' of non-numeric type {}",
                            op.kind.name(),
                            ctx.id_text,
                            type_name(cur)
                        )));
                    };
                    let kind = if op.kind == OpKind::Inc {
                        ArithOp::Add
                    } else {
                        ArithOp::Mul
                    };
                    match arith(kind, lhs, rhs) {
                        Some(n) => n.to_bson(),
                        None => {
                            return Err(bad(format!(
                                "Failed to apply {} operations to current value ({}) for document {}",
                                op.kind.name(),
                                show_typed(cur),
                                ctx.id_text
                            )));
                        }
                    }
                }
            };
            if current.as_ref() != Some(&new) {
                slot_set(&mut parent, name, new)?;
                log_set(ctx);
            }
        }
        (OpArg::Value(v), OpKind::Min | OpKind::Max) => {
            let replace = match &current {
                None => true,
                Some(cur) => {
                    let o = cmp_val(Val::Owned(v), Val::Owned(cur));
                    if op.kind == OpKind::Min {
                        o.is_lt()
                    } else {
                        o.is_gt()
                    }
                }
            };
            if replace {
                slot_set(&mut parent, name, v.clone())?;
                log_set(ctx);
            }
        }
        (OpArg::CurrentDate(ts), _) => {
            let now = ctx.vars.now();
            let value = if *ts {
                let time = u32::try_from(now.timestamp_millis() / 1000).unwrap_or(0);
                Bson::Timestamp(
                    ctx.vars
                        .cluster_time()
                        .unwrap_or(Timestamp { time, increment: 1 }),
                )
            } else {
                Bson::DateTime(now)
            };
            slot_set(&mut parent, name, value)?;
            log_set(ctx);
        }
        (
            OpArg::Push {
                each,
                position,
                slice,
                sort,
            },
            _,
        ) => {
            let mut arr = match &current {
                None => Vec::new(),
                Some(Bson::Array(a)) => a.clone(),
                Some(other) => {
                    return Err(bad(format!(
                        "The field '{path_text}' must be an array but is of type {} in document {}",
                        type_name(other),
                        ctx.id_text
                    )));
                }
            };
            let old_len = arr.len();
            let at = match position {
                None => arr.len(),
                Some(p) if *p < 0 => arr
                    .len()
                    .saturating_sub(usize::try_from(p.unsigned_abs()).unwrap_or(usize::MAX)),
                Some(p) => usize::try_from(*p).unwrap_or(usize::MAX).min(arr.len()),
            };
            let tail = arr.split_off(at);
            arr.extend(each.iter().cloned());
            arr.extend(tail);
            if let Some(s) = sort {
                match s {
                    PushSort::Whole(dir) => arr.sort_by(|a, b| dir.apply(compare_bson(a, b))),
                    PushSort::Fields(spec) => arr.sort_by(|a, b| match (a, b) {
                        (Bson::Document(x), Bson::Document(y)) => spec.compare_bson(x, y),
                        _ => compare_bson(a, b),
                    }),
                }
            }
            if let Some(n) = slice {
                let len = arr.len();
                if *n >= 0 {
                    arr.truncate(usize::try_from(*n).unwrap_or(usize::MAX));
                } else {
                    let keep = usize::try_from(n.unsigned_abs()).unwrap_or(usize::MAX);
                    if keep < len {
                        arr.drain(..len - keep);
                    }
                }
            }
            let appended_only = current.is_some()
                && position.is_none_or(|p| usize::try_from(p).is_ok_and(|p| p >= old_len))
                && sort.is_none()
                && slice.is_none();
            if current.as_ref() != Some(&Bson::Array(arr.clone())) {
                slot_set(&mut parent, name, Bson::Array(arr))?;
                ctx.log.push(LogEntry {
                    path,
                    kind: if appended_only {
                        LogKind::Append(old_len)
                    } else {
                        LogKind::Set
                    },
                });
            }
        }
        (OpArg::AddToSet(values), OpKind::AddToSet) => {
            let mut arr = match &current {
                None => Vec::new(),
                Some(Bson::Array(a)) => a.clone(),
                Some(other) => {
                    return Err(bad(format!(
                        "Cannot apply $addToSet to non-array field. Field named '{name}' has non-array type {}",
                        type_name(other)
                    )));
                }
            };
            let old_len = arr.len();
            for v in values {
                if !arr.iter().any(|x| compare_bson(x, v).is_eq()) {
                    arr.push(v.clone());
                }
            }
            if current.is_none() || arr.len() != old_len {
                let existed = current.is_some();
                slot_set(&mut parent, name, Bson::Array(arr))?;
                ctx.log.push(LogEntry {
                    path,
                    kind: if existed {
                        LogKind::Append(old_len)
                    } else {
                        LogKind::Set
                    },
                });
            }
        }
        (OpArg::Pop(last), _) => match &current {
            None => {}
            Some(Bson::Array(a)) if !a.is_empty() => {
                let mut a = a.clone();
                if *last {
                    a.pop();
                } else {
                    a.remove(0);
                }
                slot_set(&mut parent, name, Bson::Array(a))?;
                log_set(ctx);
            }
            Some(other) => {
                return Err(QueryError::type_mismatch(format!(
                    "Path '{path_text}' contains an element of non-array type '{}'",
                    type_name(other)
                )));
            }
        },
        (OpArg::Pull(cond), _) => match &current {
            None => {}
            Some(Bson::Array(a)) => {
                let mut kept = Vec::with_capacity(a.len());
                for e in a {
                    if !pull_matches(cond, e)? {
                        kept.push(e.clone());
                    }
                }
                if kept.len() != a.len() {
                    slot_set(&mut parent, name, Bson::Array(kept))?;
                    log_set(ctx);
                }
            }
            Some(_) => return Err(bad("Cannot apply $pull to a non-array value")),
        },
        (OpArg::AddToSet(values), OpKind::PullAll) => match &current {
            None => {}
            Some(Bson::Array(a)) => {
                let kept: Vec<Bson> = a
                    .iter()
                    .filter(|e| !values.iter().any(|v| compare_bson(e, v).is_eq()))
                    .cloned()
                    .collect();
                if kept.len() != a.len() {
                    slot_set(&mut parent, name, Bson::Array(kept))?;
                    log_set(ctx);
                }
            }
            Some(_) => return Err(bad("Cannot apply $pullAll to a non-array value")),
        },
        (OpArg::Bit(ops), _) => {
            let mut acc = match &current {
                None => Num::I32(0),
                Some(Bson::Int32(i)) => Num::I32(*i),
                Some(Bson::Int64(i)) => Num::I64(*i),
                Some(other) => {
                    return Err(bad(format!(
                        "Cannot apply $bit to a value of non-integral type.{} has the field {name} of non-integer type {}",
                        ctx.id_text,
                        type_name(other)
                    )));
                }
            };
            for (bop, n) in ops {
                acc = bit_apply(*bop, acc, *n);
            }
            let new = acc.to_bson();
            if current.as_ref() != Some(&new) {
                slot_set(&mut parent, name, new)?;
                log_set(ctx);
            }
        }
        _ => {}
    }
    Ok(())
}

fn show_typed(v: &Bson) -> String {
    match v {
        Bson::Int64(i) => format!("(NumberLong){i}"),
        Bson::Int32(i) => format!("(NumberInt){i}"),
        Bson::Double(d) => format!("(NumberDouble){d}"),
        other => show(other),
    }
}

fn bit_apply(op: BitOp, a: Num, b: Num) -> Num {
    let (x, y, wide) = match (a, b) {
        (Num::I32(x), Num::I32(y)) => (i64::from(x), i64::from(y), false),
        (Num::I32(x), Num::I64(y)) => (i64::from(x), y, true),
        (Num::I64(x), Num::I32(y)) => (x, i64::from(y), true),
        (Num::I64(x), Num::I64(y)) => (x, y, true),
        _ => (0, 0, true),
    };
    let r = match op {
        BitOp::And => x & y,
        BitOp::Or => x | y,
        BitOp::Xor => x ^ y,
    };
    if wide {
        Num::I64(r)
    } else {
        Num::I32(r as i32)
    }
}

fn pull_matches(cond: &PullCond, e: &Bson) -> Result<bool, QueryError> {
    Ok(match cond {
        PullCond::Equal(v) => compare_bson(e, v).is_eq(),
        PullCond::Regex(r) => r.matches_value(Val::Owned(e)),
        PullCond::Values(f) => f.matches_value(Val::Owned(e)),
        PullCond::Documents(f) => match e {
            Bson::Document(d) => f.matches_bson(d)?,
            _ => false,
        },
    })
}

fn apply_rename(
    doc: &mut Document,
    op: &Op,
    to: &str,
    ctx: &mut ApplyCtx<'_>,
) -> Result<(), QueryError> {
    let from: Vec<&str> = op.path.split('.').collect();
    // The source may not be inside an array.
    let mut cur: Option<&Bson> = None;
    let mut container: &Document = doc;
    for (i, part) in from.iter().enumerate() {
        match container.get(*part) {
            None => return Ok(()),
            Some(v) if i + 1 == from.len() => cur = Some(v),
            Some(Bson::Document(d)) => container = d,
            Some(Bson::Array(_)) => {
                return Err(bad(format!(
                    "The source field cannot be an array element, '{}' in doc with {} has an array field called '{part}'",
                    op.path, ctx.id_text
                )));
            }
            Some(_) => return Ok(()),
        }
    }
    let Some(value) = cur.cloned() else {
        return Ok(());
    };
    // Destination: may not traverse arrays.
    let to_parts: Vec<&str> = to.split('.').collect();
    {
        let mut c: &Document = doc;
        for part in to_parts.iter().take(to_parts.len().saturating_sub(1)) {
            match c.get(*part) {
                Some(Bson::Document(d)) => c = d,
                Some(Bson::Array(_)) => {
                    return Err(bad(format!(
                        "The destination field cannot be an array element, '{to}' in doc with {} has an array field called '{part}'",
                        ctx.id_text
                    )));
                }
                _ => break,
            }
        }
    }
    // Remove the source, then set the destination.
    let unset = Op {
        kind: OpKind::Unset,
        path: op.path.clone(),
        comps: op
            .path
            .split('.')
            .map(|s| Comp::Field(s.to_owned()))
            .collect(),
        arg: OpArg::Value(Bson::Int32(1)),
    };
    let mut concrete = Vec::new();
    walk(Parent::Doc(doc), &unset.comps, &unset, ctx, &mut concrete)?;
    let set = Op {
        kind: OpKind::Set,
        path: to.to_owned(),
        comps: to_parts
            .iter()
            .map(|s| Comp::Field((*s).to_owned()))
            .collect(),
        arg: OpArg::Value(value),
    };
    walk(Parent::Doc(doc), &set.comps, &set, ctx, &mut concrete)
}

// ---------------------------------------------------------------------------------------------
// Upsert seeding

/// The document an upsert starts from: the filter's equality fields with dotted paths expanded
/// (mongod errors 54 `NotSingleValueField` when a path is set twice or paths overlap).
fn upsert_seed(filter: &Filter) -> Result<Document, QueryError> {
    let fields = filter.equality_fields();
    let mut seen: Vec<Vec<String>> = Vec::new();
    let mut doc = Document::new();
    for (path, value) in fields {
        let parts: Vec<String> = path.split('.').map(str::to_owned).collect();
        if parts.iter().any(|p| p.starts_with('$')) {
            continue;
        }
        for other in &seen {
            let common = other.iter().zip(&parts).take_while(|(a, b)| a == b).count();
            if common == other.len() && common == parts.len() {
                return Err(QueryError::new(
                    54,
                    "NotSingleValueField",
                    format!("cannot infer query fields to set, path '{path}' is matched twice"),
                ));
            }
            if common == other.len().min(parts.len()) {
                return Err(QueryError::new(
                    54,
                    "NotSingleValueField",
                    format!(
                        "cannot infer query fields to set, both paths '{}' and '{path}' are matched",
                        other.join(".")
                    ),
                ));
            }
        }
        seen.push(parts.clone());
        set_path_creating(&mut doc, &parts, value);
    }
    Ok(id_first(doc))
}

/// Sets a dotted path in a document, creating intermediate documents (no array traversal).
fn set_path_creating(doc: &mut Document, parts: &[String], value: Bson) {
    let Some((first, rest)) = parts.split_first() else {
        return;
    };
    if rest.is_empty() {
        doc.insert(first.clone(), value);
        return;
    }
    let entry = doc
        .entry(first.clone())
        .or_insert_with(|| Bson::Document(Document::new()));
    if !matches!(entry, Bson::Document(_)) {
        *entry = Bson::Document(Document::new());
    }
    if let Bson::Document(d) = entry {
        set_path_creating(d, rest, value);
    }
}

// ---------------------------------------------------------------------------------------------
// Change-stream log

/// Builds the update description of an operator update from its log, as mongod's v2 log
/// builder records it: created or replaced values under `updatedFields`, removed fields under
/// `removedFields`, array appends as `arr.N` entries.
fn describe_log(before: &Document, after: &Document, log: Vec<LogEntry>) -> UpdateDescription {
    use super::diff::{ArrayDiff, Diff, DocDiff, Mod};
    let mut root = DocDiff::default();
    for entry in log {
        let Some((last, prefix)) = entry.path.split_last() else {
            continue;
        };
        // Walk the after-document alongside the diff tree.
        let mut node = Diff::Doc(std::mem::take(&mut root));
        {
            let mut cur_node: &mut Diff = &mut node;
            let mut cur_after: Option<&Bson> = None;
            let mut cur_before: Option<&Bson> = None;
            let mut after_doc: Option<&Document> = Some(after);
            let mut before_doc: Option<&Document> = Some(before);
            for (depth, part) in prefix.iter().enumerate() {
                let (a, b) = if depth == 0 {
                    (
                        after_doc.and_then(|d| d.get(part)),
                        before_doc.and_then(|d| d.get(part)),
                    )
                } else {
                    (child(cur_after, part), child(cur_before, part))
                };
                cur_after = a;
                cur_before = b;
                after_doc = None;
                before_doc = None;
                let is_array = matches!(a, Some(Bson::Array(_)));
                cur_node = cur_node.sub(part, is_array);
            }
            let (value_after, value_before) = if prefix.is_empty() {
                (after.get(last), before.get(last))
            } else {
                (child(cur_after, last), child(cur_before, last))
            };
            match entry.kind {
                LogKind::Set => {
                    if let Some(v) = value_after {
                        cur_node.put(last, Mod::Set(v.clone(), value_before.is_some()));
                    }
                }
                LogKind::Unset => cur_node.put(last, Mod::Delete),
                LogKind::Append(from) => {
                    if let Some(Bson::Array(items)) = value_after {
                        let sub = cur_node.sub(last, true);
                        if let Diff::Arr(ArrayDiff { mods, .. }) = sub {
                            for (i, item) in items.iter().enumerate().skip(from) {
                                mods.push((i, Mod::Set(item.clone(), false)));
                            }
                        }
                    }
                }
            }
        }
        if let Diff::Doc(d) = node {
            root = d;
        }
    }
    describe_diff(&Diff::Doc(root))
}

fn child<'a>(v: Option<&'a Bson>, part: &str) -> Option<&'a Bson> {
    match v? {
        Bson::Document(d) => d.get(part),
        Bson::Array(a) => array_index(part).and_then(|i| a.get(i)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::{doc, rawdoc};

    fn upd(u: RawDocumentBuf) -> Update {
        Update::parse(RawBsonRef::Document(&u), None).expect("valid update")
    }

    fn apply(u: RawDocumentBuf, d: RawDocumentBuf) -> Result<Option<Document>, QueryError> {
        let r = upd(u).apply(&d, None)?;
        Ok(r.map(|r| raw_doc_to_document(&r)))
    }

    fn applied(u: RawDocumentBuf, d: RawDocumentBuf) -> Document {
        apply(u, d)
            .expect("update applies")
            .expect("document changes")
    }

    fn err(u: RawDocumentBuf, d: RawDocumentBuf) -> QueryError {
        apply(u, d).expect_err("update fails")
    }

    #[test]
    fn set_appends_new_fields_in_path_order() {
        assert_eq!(
            applied(
                rawdoc! {"$set": {"z": 1, "b.c": 2, "a": 3}},
                rawdoc! {"_id": 1, "y": 0}
            ),
            doc! {"_id": 1, "y": 0, "a": 3, "b": {"c": 2}, "z": 1}
        );
        assert_eq!(
            applied(
                rawdoc! {"$set": {"y": 5}},
                rawdoc! {"_id": 1, "y": 0, "x": 1}
            ),
            doc! {"_id": 1, "y": 5, "x": 1}
        );
        assert_eq!(
            apply(rawdoc! {"$set": {"y": 0}}, rawdoc! {"_id": 1, "y": 0}).expect("ok"),
            None
        );
        // 1 and 1.0 differ in type: a modification.
        assert!(
            apply(rawdoc! {"$set": {"y": 1.0}}, rawdoc! {"_id": 1, "y": 1})
                .expect("ok")
                .is_some()
        );
    }

    #[test]
    fn set_into_arrays_and_scalars() {
        assert_eq!(
            applied(rawdoc! {"$set": {"a.3": 9}}, rawdoc! {"_id": 1, "a": [1]}),
            doc! {"_id": 1, "a": [1, null, null, 9]}
        );
        let e = err(rawdoc! {"$set": {"a.b": 1}}, rawdoc! {"_id": 1, "a": 5});
        assert_eq!(e.code, 28);
        assert_eq!(e.message, "Cannot create field 'b' in element {a: 5}");
    }

    #[test]
    fn id_is_immutable() {
        let e = err(rawdoc! {"$set": {"_id": 2}}, rawdoc! {"_id": 1});
        assert_eq!(e.code, 66);
        assert_eq!(
            e.message,
            "Performing an update on the path '_id' would modify the immutable field '_id'"
        );
        let r = upd(rawdoc! {"_id": 2, "x": 1});
        let e = r.apply(&rawdoc! {"_id": 1}, None).expect_err("immutable");
        assert_eq!(e.code, 66);
        assert_eq!(
            e.message,
            "After applying the update, the (immutable) field '_id' was found to have been altered to _id: 2"
        );
        assert!(
            apply(rawdoc! {"$set": {"_id": 1}}, rawdoc! {"_id": 1})
                .expect("ok")
                .is_none()
        );
    }

    #[test]
    fn conflicting_paths() {
        let e = Update::parse(
            RawBsonRef::Document(&rawdoc! {"$set": {"a": 1}, "$inc": {"a.b": 1}}),
            None,
        )
        .expect_err("conflict");
        assert_eq!(e.code, 40);
        assert_eq!(
            e.message,
            "Updating the path 'a.b' would create a conflict at 'a'"
        );
        let e = Update::parse(
            RawBsonRef::Document(&rawdoc! {"$set": {"a": 1}, "$unset": {"a": 1}}),
            None,
        )
        .expect_err("conflict");
        assert_eq!(
            e.message,
            "Updating the path 'a' would create a conflict at 'a'"
        );
    }

    #[test]
    fn inc_and_mul_promote_types() {
        assert_eq!(
            applied(
                rawdoc! {"$inc": {"a": 1}},
                rawdoc! {"_id": 1, "a": i32::MAX}
            ),
            doc! {"_id": 1, "a": i64::from(i32::MAX) + 1}
        );
        assert_eq!(
            applied(rawdoc! {"$inc": {"a": 1.5}}, rawdoc! {"_id": 1, "a": 1}),
            doc! {"_id": 1, "a": 2.5}
        );
        assert_eq!(
            applied(rawdoc! {"$inc": {"n": 2}}, rawdoc! {"_id": 1}),
            doc! {"_id": 1, "n": 2}
        );
        assert_eq!(
            applied(rawdoc! {"$mul": {"n": 2_i64}}, rawdoc! {"_id": 1}),
            doc! {"_id": 1, "n": 0_i64}
        );
        let e = err(rawdoc! {"$inc": {"a": 1}}, rawdoc! {"_id": 1, "a": "x"});
        assert_eq!(e.code, 14);
        assert_eq!(
            e.message,
            "Cannot apply $inc to a value of non-numeric type. {_id: 1} has the field 'a' of non-numeric type string"
        );
        let e = Update::parse(RawBsonRef::Document(&rawdoc! {"$inc": {"a": "x"}}), None)
            .expect_err("bad arg");
        assert_eq!(e.code, 14);
        let e = err(
            rawdoc! {"$inc": {"a": 1}},
            rawdoc! {"_id": 1, "a": i64::MAX},
        );
        assert_eq!(e.code, 2);
    }

    #[test]
    fn min_max_unset_rename_current_date() {
        assert_eq!(
            applied(rawdoc! {"$min": {"a": 1}}, rawdoc! {"_id": 1, "a": 5}),
            doc! {"_id": 1, "a": 1}
        );
        assert!(
            apply(rawdoc! {"$max": {"a": 1}}, rawdoc! {"_id": 1, "a": 5})
                .expect("ok")
                .is_none()
        );
        // Total order: any string is greater than any number.
        assert_eq!(
            applied(rawdoc! {"$max": {"a": "x"}}, rawdoc! {"_id": 1, "a": 5}),
            doc! {"_id": 1, "a": "x"}
        );
        assert_eq!(
            applied(
                rawdoc! {"$unset": {"a": ""}},
                rawdoc! {"_id": 1, "a": 5, "b": 1}
            ),
            doc! {"_id": 1, "b": 1}
        );
        assert_eq!(
            applied(
                rawdoc! {"$unset": {"a.1": ""}},
                rawdoc! {"_id": 1, "a": [1, 2]}
            ),
            doc! {"_id": 1, "a": [1, null]}
        );
        assert_eq!(
            applied(
                rawdoc! {"$rename": {"a": "c.d"}},
                rawdoc! {"_id": 1, "a": 5, "b": 1}
            ),
            doc! {"_id": 1, "b": 1, "c": {"d": 5}}
        );
        assert!(
            apply(rawdoc! {"$rename": {"zz": "y"}}, rawdoc! {"_id": 1})
                .expect("ok")
                .is_none()
        );
        let d = applied(
            rawdoc! {"$currentDate": {"t": true, "ts": {"$type": "timestamp"}}},
            rawdoc! {"_id": 1},
        );
        assert!(matches!(d.get("t"), Some(Bson::DateTime(_))));
        assert!(matches!(d.get("ts"), Some(Bson::Timestamp(_))));
    }

    #[test]
    fn push_modifiers() {
        assert_eq!(
            applied(rawdoc! {"$push": {"a": 3}}, rawdoc! {"_id": 1, "a": [1]}),
            doc! {"_id": 1, "a": [1, 3]}
        );
        assert_eq!(
            applied(rawdoc! {"$push": {"a": 3}}, rawdoc! {"_id": 1}),
            doc! {"_id": 1, "a": [3]}
        );
        assert_eq!(
            applied(
                rawdoc! {"$push": {"a": {"$each": [5, 0], "$position": 1, "$sort": -1, "$slice": 3}}},
                rawdoc! {"_id": 1, "a": [1, 9]}
            ),
            doc! {"_id": 1, "a": [9, 5, 1]}
        );
        assert_eq!(
            applied(
                rawdoc! {"$push": {"a": {"$each": [{"s": 2}], "$sort": {"s": 1}}}},
                rawdoc! {"_id": 1, "a": [{"s": 3}, {"s": 1}]}
            ),
            doc! {"_id": 1, "a": [{"s": 1}, {"s": 2}, {"s": 3}]}
        );
        assert_eq!(
            applied(
                rawdoc! {"$push": {"a": {"$each": [1, 2, 3], "$slice": -2}}},
                rawdoc! {"_id": 1}
            ),
            doc! {"_id": 1, "a": [2, 3]}
        );
        let e = err(rawdoc! {"$push": {"a": 1}}, rawdoc! {"_id": 1, "a": 1});
        assert_eq!(
            e.message,
            "The field 'a' must be an array but is of type int in document {_id: 1}"
        );
    }

    #[test]
    fn add_to_set_pop_pull() {
        assert_eq!(
            applied(
                rawdoc! {"$addToSet": {"a": {"$each": [1, 4, 4]}}},
                rawdoc! {"_id": 1, "a": [1.0, 2]}
            ),
            doc! {"_id": 1, "a": [1.0, 2, 4]}
        );
        assert!(
            apply(
                rawdoc! {"$addToSet": {"a": 2}},
                rawdoc! {"_id": 1, "a": [2]}
            )
            .expect("ok")
            .is_none()
        );
        assert_eq!(
            applied(rawdoc! {"$pop": {"a": -1}}, rawdoc! {"_id": 1, "a": [1, 2]}),
            doc! {"_id": 1, "a": [2]}
        );
        assert_eq!(
            applied(
                rawdoc! {"$pull": {"a": {"$gte": 6}}},
                rawdoc! {"_id": 1, "a": [1, 6, 9, 3]}
            ),
            doc! {"_id": 1, "a": [1, 3]}
        );
        assert_eq!(
            applied(
                rawdoc! {"$pull": {"a": {"x": 1}}},
                rawdoc! {"_id": 1, "a": [{"x": 1, "y": 2}, {"x": 2}, 1]}
            ),
            doc! {"_id": 1, "a": [{"x": 2}, 1]}
        );
        assert_eq!(
            applied(
                rawdoc! {"$pullAll": {"a": [1, 3]}},
                rawdoc! {"_id": 1, "a": [1, 2, 3, 1]}
            ),
            doc! {"_id": 1, "a": [2]}
        );
        let e = Update::parse(RawBsonRef::Document(&rawdoc! {"$pop": {"a": 2}}), None)
            .expect_err("bad pop");
        assert_eq!(e.code, 9);
    }

    #[test]
    fn bit_operator() {
        assert_eq!(
            applied(
                rawdoc! {"$bit": {"a": {"and": 6, "or": 1}}},
                rawdoc! {"_id": 1, "a": 13}
            ),
            doc! {"_id": 1, "a": 5}
        );
        assert_eq!(
            applied(
                rawdoc! {"$bit": {"a": {"xor": 1_i64}}},
                rawdoc! {"_id": 1, "a": 3}
            ),
            doc! {"_id": 1, "a": 2_i64}
        );
    }

    #[test]
    fn positional_operators() {
        let u = upd(rawdoc! {"$set": {"a.$.b": 7}});
        let f = Filter::parse(&rawdoc! {"a.b": 2}).expect("filter");
        let d = rawdoc! {"_id": 1, "a": [{"b": 1}, {"b": 2}]};
        let details = f.matches_details(&d).expect("eval").expect("match");
        let r = u
            .apply(&d, Some(&details))
            .expect("applies")
            .expect("changes");
        assert_eq!(
            raw_doc_to_document(&r),
            doc! {"_id": 1, "a": [{"b": 1}, {"b": 7}]}
        );
        let e = u.apply(&d, None).expect_err("no positional match");
        assert_eq!(e.code, 2);
        assert_eq!(
            e.message,
            "The positional operator did not find the match needed from the query."
        );

        assert_eq!(
            applied(
                rawdoc! {"$inc": {"a.$[]": 1}},
                rawdoc! {"_id": 1, "a": [1, 2]}
            ),
            doc! {"_id": 1, "a": [2, 3]}
        );
        let filters = rawdoc! {"f": [{"x.v": {"$gt": 1}}]};
        let u = Update::parse(
            RawBsonRef::Document(&rawdoc! {"$set": {"a.$[x].w": true}}),
            Some(filters.get_array("f").expect("array")),
        )
        .expect("valid");
        let r = u
            .apply(&rawdoc! {"_id": 1, "a": [{"v": 1}, {"v": 2}]}, None)
            .expect("applies")
            .expect("changes");
        assert_eq!(
            raw_doc_to_document(&r),
            doc! {"_id": 1, "a": [{"v": 1}, {"v": 2, "w": true}]}
        );
        let e = Update::parse(RawBsonRef::Document(&rawdoc! {"$set": {"a.$[y]": 1}}), None)
            .expect_err("unknown id");
        assert_eq!(
            e.message,
            "No array filter found for identifier 'y' in path 'a.$[y]'"
        );
        let unused = rawdoc! {"f": [{"z": 1}]};
        let e = Update::parse(
            RawBsonRef::Document(&rawdoc! {"$set": {"a": 1}}),
            Some(unused.get_array("f").expect("array")),
        )
        .expect_err("unused filter");
        assert_eq!(e.code, 9);
    }

    #[test]
    fn parse_errors() {
        let e = Update::parse(RawBsonRef::Document(&rawdoc! {"$foo": {"a": 1}}), None)
            .expect_err("unknown");
        assert_eq!(e.code, 9);
        assert_eq!(
            e.message,
            "Unknown modifier: $foo. Expected a valid update modifier or pipeline-style update specified as an array"
        );
        let e =
            Update::parse(RawBsonRef::Document(&rawdoc! {"$set": 1}), None).expect_err("not a doc");
        assert_eq!(e.code, 9);
        let e = Update::parse(RawBsonRef::Document(&rawdoc! {"$set": {"": 1}}), None)
            .expect_err("empty path");
        assert_eq!(e.code, 56);
    }

    #[test]
    fn upsert_documents() {
        let f = Filter::parse(&rawdoc! {"x": 1, "a.b": "c", "n": {"$gt": 1}, "_id": 7})
            .expect("filter");
        let u = upd(rawdoc! {"$set": {"y": 2}, "$setOnInsert": {"z": 3}});
        let d = raw_doc_to_document(&u.upsert_document(&f).expect("upsert"));
        assert_eq!(d, doc! {"_id": 7, "x": 1, "a": {"b": "c"}, "y": 2, "z": 3});
        // $setOnInsert is ignored on updates.
        assert!(
            u.apply(&rawdoc! {"_id": 7, "y": 2}, None)
                .expect("ok")
                .is_none()
        );
        let r = upd(rawdoc! {"v": 1});
        let d = raw_doc_to_document(&r.upsert_document(&f).expect("upsert"));
        assert_eq!(d, doc! {"_id": 7, "v": 1});
        let f = Filter::parse(&rawdoc! {"q": 1}).expect("filter");
        let d = raw_doc_to_document(&r.upsert_document(&f).expect("upsert"));
        assert!(matches!(d.iter().next(), Some((k, Bson::ObjectId(_))) if k == "_id"));
        let f = Filter::parse(&rawdoc! {"a": 1, "a.b": 1}).expect("filter");
        assert_eq!(u.upsert_document(&f).expect_err("conflict").code, 54);
    }

    #[test]
    fn pipeline_updates_and_their_descriptions() {
        let stages = rawdoc! {"u": [{"$replaceWith": {"$setField": {"field": {"$literal": "$a"}, "value": 1, "input": "$$ROOT"}}}]};
        let u = Update::parse(
            RawBsonRef::Array(stages.get_array("u").expect("array")),
            None,
        )
        .expect("valid pipeline update");
        assert!(u.is_pipeline());
        let r = u
            .apply(&rawdoc! {"_id": 1, "foo": {}}, None)
            .expect("applies")
            .expect("changes");
        assert_eq!(raw_doc_to_document(&r), doc! {"_id": 1, "foo": {}, "$a": 1});
        let stages = rawdoc! {"u": [{"$set": {"array": ["foo", {"a": "bar"}]}}]};
        let u = Update::parse(
            RawBsonRef::Array(stages.get_array("u").expect("array")),
            None,
        )
        .expect("valid pipeline update");
        let a = u
            .apply_logged(
                &rawdoc! {"_id": 1, "a": 1, "array": ["foo", {"a": "bar"}, 1, 2, 3]},
                None,
            )
            .expect("applies")
            .expect("changes");
        let d = a.description.expect("described");
        assert!(d.updated_fields.is_empty());
        assert_eq!(d.truncated_arrays.len(), 1);
        let stages =
            rawdoc! {"u": [{"$replaceRoot": {"newRoot": "$t"}}, {"$addFields": {"foo": 1}}]};
        let u = Update::parse(
            RawBsonRef::Array(stages.get_array("u").expect("array")),
            None,
        )
        .expect("valid pipeline update");
        let r = u
            .apply(&rawdoc! {"_id": 1, "x": 1, "t": {"u": {"v": 1}}}, None)
            .expect("applies")
            .expect("changes");
        assert_eq!(
            raw_doc_to_document(&r),
            doc! {"_id": 1, "u": {"v": 1}, "foo": 1}
        );
        let stages = rawdoc! {"u": [{"$set": {"_id": 2}}]};
        let u = Update::parse(
            RawBsonRef::Array(stages.get_array("u").expect("array")),
            None,
        )
        .expect("valid pipeline update");
        assert_eq!(
            u.apply(&rawdoc! {"_id": 1}, None)
                .expect_err("immutable")
                .code,
            66
        );
        let f = Filter::parse(&rawdoc! {"k": 5}).expect("filter");
        let stages = rawdoc! {"u": [{"$set": {"n": {"$add": ["$k", 1]}}}]};
        let u = Update::parse(
            RawBsonRef::Array(stages.get_array("u").expect("array")),
            None,
        )
        .expect("valid pipeline update");
        let d = raw_doc_to_document(&u.upsert_document(&f).expect("upsert"));
        assert_eq!(d.get("n"), Some(&Bson::Int32(6)));
    }

    #[test]
    fn operator_log_describes_changes() {
        let u =
            upd(rawdoc! {"$set": {"x": 2, "n.new": 1}, "$unset": {"gone": 1}, "$push": {"arr": 4}});
        let a = u
            .apply_logged(
                &rawdoc! {"_id": 1, "x": 1, "gone": 1, "arr": [1, 2, 3], "n": {}},
                None,
            )
            .expect("applies")
            .expect("changes");
        let desc = a.description.expect("operator updates describe themselves");
        assert_eq!(desc.updated_fields, doc! {"x": 2, "arr.3": 4, "n.new": 1});
        assert_eq!(desc.removed_fields, vec!["gone".to_owned()]);
        // Change-stream disambiguation (7.0): numeric field names are ambiguous, array indexes
        // are reported as integers.
        let u = upd(rawdoc! {"$set": {"a.1": 2}});
        let a = u
            .apply_logged(&rawdoc! {"_id": 1, "a": {"1": 1}}, None)
            .expect("applies")
            .expect("changes");
        let d = a.description.expect("described").to_document(true);
        assert_eq!(d.get_document("updatedFields").ok(), Some(&doc! {"a.1": 2}));
        assert_eq!(
            d.get_document("disambiguatedPaths").ok(),
            Some(&doc! {"a.1": ["a", "1"]})
        );
        let u = upd(rawdoc! {"$set": {"a.0.1": 2}});
        let a = u
            .apply_logged(&rawdoc! {"_id": 1, "a": [{"1": 1}]}, None)
            .expect("applies")
            .expect("changes");
        let d = a.description.expect("described").to_document(true);
        assert_eq!(
            d.get_document("disambiguatedPaths").ok(),
            Some(&doc! {"a.0.1": ["a", 0, "1"]})
        );
        let u = upd(rawdoc! {"$set": {"a.b.c": 1}});
        let a = u
            .apply_logged(&rawdoc! {"_id": 1}, None)
            .expect("applies")
            .expect("changes");
        assert_eq!(
            a.description.expect("described").updated_fields,
            doc! {"a": {"b": {"c": 1}}}
        );
    }
}
