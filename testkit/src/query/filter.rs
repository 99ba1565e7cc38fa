//! Query filters (`find`, `update`, `delete`, `$match`, ...), as mongod 7.0's
//! `MatchExpression` parses and evaluates them.
//!
//! Supported: comparison (`$eq $ne $gt $gte $lt $lte $in $nin`), logical (`$and $or $nor
//! $not`), element (`$exists $type`), evaluation (`$regex`/`$options`, `$mod`, `$expr`,
//! `$comment`), array (`$all $elemMatch $size`), bitwise (`$bitsAllSet $bitsAnySet
//! $bitsAllClear $bitsAnyClear`), `$alwaysTrue`/`$alwaysFalse`, with mongod's implicit array
//! matching and null/missing rules:
//! - a predicate on `a.b` is tested against every value the path reaches: through documents,
//!   through arrays of documents, and at the end against each element of an array and the
//!   array itself; `{a: 1}` matches `{a: [1, 2]}` and `{a: [1, 2]}` matches it too;
//! - comparisons are type-bracketed: `{a: {$gt: 5}}` only considers numbers;
//! - `{a: null}` matches `null`, `undefined` and missing values (also a missing `b` in some
//!   element of `a` for `{"a.b": null}`);
//! - `$ne`, `$nin` and `$not` negate the whole path predicate.
//!
//! `$where`, `$text`, the geo operators and `$jsonSchema` answer with an error: the testkit has
//! no script engine, no text or geo index and no schema validator.

use bson::spec::ElementType;
use bson::{Bson, Document, RawDocument};
use regex::Regex;

use super::QueryError;
use super::compare::{as_number, cmp_val};
use super::expr::{Expression, Variables, truthy};
use super::numeric::{Number, f64_to_i64_exact};
use super::path::{Candidate, any_candidate};
use super::value::{DocRef, Val, View, canonical_rank, check_nesting};

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
    root: Node,
    vars: Variables,
}

/// Nesting limit for filters (mongod rejects BSON nested deeper than 100 levels in storage and
/// deeper than 200 in commands; parse recursion stops here).
const MAX_FILTER_DEPTH: usize = 200;

#[derive(Debug, Clone)]
enum Node {
    And(Vec<Node>),
    Or(Vec<Node>),
    Nor(Vec<Node>),
    Not(Box<Node>),
    Path {
        path: String,
        comps: Vec<String>,
        pred: Pred,
    },
    Expr(Box<Expression>),
    Const(bool),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cmp {
    Eq,
    Gt,
    Gte,
    Lt,
    Lte,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bits {
    AllSet,
    AnySet,
    AllClear,
    AnyClear,
}

#[derive(Debug, Clone)]
enum TypeSel {
    Number,
    Type(ElementType),
}

#[derive(Debug, Clone)]
pub(crate) struct RegexPred {
    regex: Regex,
    pattern: String,
    options: String,
}

#[derive(Debug, Clone)]
enum Pred {
    Cmp(Cmp, Bson),
    In(Vec<Bson>, Vec<RegexPred>),
    Exists(bool),
    Type(Vec<TypeSel>),
    Regex(RegexPred),
    Mod(i64, i64),
    Size(Option<usize>),
    ElemMatchObject(Box<Node>),
    ElemMatchValue(Vec<Pred>),
    Bits(Bits, BitMask),
    /// `$all: []` and other predicates that can never match.
    Never,
}

#[derive(Debug, Clone)]
enum BitMask {
    Positions(Vec<u32>),
}

impl Filter {
    /// Parses a filter document. Errors are the server's (2 `BadValue` "unknown operator:
    /// $foo", 2 "$in needs an array", 51091 for an invalid regular expression, ...).
    pub fn parse(filter: &RawDocument) -> Result<Self, QueryError> {
        Self::parse_with(filter, &Variables::new())
    }

    /// Parses a filter whose `$expr` parts may use the given variables (`let`, `$$NOW`).
    pub fn parse_with(filter: &RawDocument, vars: &Variables) -> Result<Self, QueryError> {
        check_nesting(DocRef::Raw(filter))?;
        let root = parse_doc(DocRef::Raw(filter), vars, 0, true)?;
        Ok(Filter {
            root,
            vars: vars.clone(),
        })
    }

    /// Parses a decoded filter document (for example a `$match` computed in a pipeline).
    pub fn parse_bson(filter: &Document, vars: &Variables) -> Result<Self, QueryError> {
        let root = parse_doc(DocRef::Owned(filter), vars, 0, true)?;
        Ok(Filter {
            root,
            vars: vars.clone(),
        })
    }

    /// Crate-internal: parses from either representation, without `$expr` at the top level
    /// when `allow_expr` is false (`$pull` conditions, `$elemMatch`).
    pub(crate) fn parse_doc_ref(
        filter: DocRef<'_>,
        vars: &Variables,
        allow_expr: bool,
    ) -> Result<Self, QueryError> {
        let root = parse_doc(filter, vars, 0, allow_expr)?;
        Ok(Filter {
            root,
            vars: vars.clone(),
        })
    }

    /// The filter `{}`, which matches every document.
    pub fn match_all() -> Self {
        Filter {
            root: Node::And(Vec::new()),
            vars: Variables::new(),
        }
    }

    /// True when the filter matches every document (`{}`, or only `$comment`).
    pub fn is_match_all(&self) -> bool {
        match &self.root {
            Node::And(children) => children.is_empty(),
            Node::Const(true) => true,
            _ => false,
        }
    }

    /// Tests a stored document. Fails only when an `$expr` evaluation fails (as the server's
    /// query would).
    pub fn matches(&self, doc: &RawDocument) -> Result<bool, QueryError> {
        let mut details = MatchDetails::default();
        eval(&self.root, DocRef::Raw(doc), &self.vars, &mut details)
    }

    /// Tests a stored document and, on a match, reports where it matched inside arrays.
    pub fn matches_details(&self, doc: &RawDocument) -> Result<Option<MatchDetails>, QueryError> {
        let mut details = MatchDetails::default();
        Ok(eval(&self.root, DocRef::Raw(doc), &self.vars, &mut details)?.then_some(details))
    }

    /// Tests a decoded document (pipeline stages after the first produce these).
    pub fn matches_bson(&self, doc: &Document) -> Result<bool, QueryError> {
        let mut details = MatchDetails::default();
        eval(&self.root, DocRef::Owned(doc), &self.vars, &mut details)
    }

    /// Crate-internal: tests a decoded document with runtime variables (sub-pipelines of
    /// `$lookup` bind their `let` variables per document).
    pub(crate) fn matches_bson_with(
        &self,
        doc: &Document,
        vars: &Variables,
    ) -> Result<bool, QueryError> {
        let mut details = MatchDetails::default();
        eval(&self.root, DocRef::Owned(doc), vars, &mut details)
    }

    /// Crate-internal: tests a single value (not a document) against a filter whose paths are
    /// all empty, as `$pull` with a non-document condition does. Returns `None` when the filter
    /// is not such a value filter.
    pub(crate) fn matches_value(&self, v: Val<'_>) -> bool {
        match_value_node(&self.root, v)
    }

    /// The single `_id` value the filter pins when it is `{_id: v}`, `{_id: {$eq: v}}` or such a
    /// clause inside a top-level `$and` (v not a regex, not an operator document), so the
    /// server can use its `_id` index; `None` otherwise.
    pub fn id_value(&self) -> Option<Bson> {
        fn find(node: &Node) -> Option<&Bson> {
            match node {
                Node::Path {
                    path,
                    pred: Pred::Cmp(Cmp::Eq, v),
                    ..
                } if path == "_id" => Some(v),
                Node::And(children) => children.iter().find_map(find),
                _ => None,
            }
        }
        find(&self.root).cloned()
    }

    /// The equality fields of the filter, in filter order, as mongod seeds an upserted
    /// document: top-level `{path: v}` and `{path: {$eq: v}}` clauses, also inside `$and` (and a
    /// single-clause `$or`); paths as written (dotted paths are expanded into nested documents
    /// by the update module). Regexes and operator documents other than `$eq` do not seed.
    pub fn equality_fields(&self) -> Vec<(String, Bson)> {
        fn walk(node: &Node, out: &mut Vec<(String, Bson)>) {
            match node {
                Node::Path {
                    path,
                    pred: Pred::Cmp(Cmp::Eq, v),
                    ..
                } => out.push((path.clone(), v.clone())),
                Node::And(children) => children.iter().for_each(|c| walk(c, out)),
                Node::Or(children) if children.len() == 1 => {
                    children.iter().for_each(|c| walk(c, out));
                }
                _ => {}
            }
        }
        let mut out = Vec::new();
        walk(&self.root, &mut out);
        out
    }
}

fn bad(msg: impl Into<String>) -> QueryError {
    QueryError::bad_value(msg)
}

/// Parses a filter document: an implicit AND of its clauses.
fn parse_doc(
    doc: DocRef<'_>,
    vars: &Variables,
    depth: usize,
    allow_expr: bool,
) -> Result<Node, QueryError> {
    if depth > MAX_FILTER_DEPTH {
        return Err(QueryError::new(
            15,
            "Overflow",
            "exceeded depth limit of 200 when parsing the filter",
        ));
    }
    let mut children = Vec::new();
    for (key, value) in doc.iter() {
        if let Some(op) = key.strip_prefix('$') {
            match op {
                "and" | "or" | "nor" => {
                    let arr = value
                        .as_arr()
                        .ok_or_else(|| bad(format!("${op} must be an array")))?;
                    if arr.is_empty() {
                        return Err(bad("$and/$or/$nor must be a nonempty array"));
                    }
                    let mut subs = Vec::new();
                    for elem in arr.iter() {
                        let d = elem
                            .as_doc()
                            .ok_or_else(|| bad("$or/$and/$nor entries need to be full objects"))?;
                        subs.push(parse_doc(d, vars, depth + 1, allow_expr)?);
                    }
                    children.push(match op {
                        "and" => Node::And(subs),
                        "or" => Node::Or(subs),
                        _ => Node::Nor(subs),
                    });
                }
                "expr" => {
                    if !allow_expr {
                        return Err(bad("$expr can only be applied to the top-level document"));
                    }
                    children.push(Node::Expr(Box::new(Expression::parse_val(value, vars)?)));
                }
                "comment" => {}
                "alwaysTrue" | "alwaysFalse" => {
                    let is_one = as_number(value.view()).is_some_and(|n| {
                        matches!(n, Number::Int(1)) || matches!(n, Number::Double(d) if d == 1.0)
                    });
                    if !is_one {
                        return Err(QueryError::failed_to_parse(format!(
                            "${op} must be an integer value of 1"
                        )));
                    }
                    children.push(Node::Const(op == "alwaysTrue"));
                }
                "where" => {
                    return Err(bad("no globalScriptEngine in $where parsing"));
                }
                "text" => {
                    return Err(QueryError::new(
                        27,
                        "IndexNotFound",
                        "text index required for $text query",
                    ));
                }
                "jsonSchema" => {
                    return Err(QueryError::not_implemented("$jsonSchema"));
                }
                _ => return Err(bad(format!("unknown top level operator: ${op}"))),
            }
            continue;
        }
        children.push(parse_path_clause(key, value, vars, depth)?);
    }
    Ok(if children.len() == 1 {
        children.pop().unwrap_or(Node::And(Vec::new()))
    } else {
        Node::And(children)
    })
}

fn path_node(path: &str, pred: Pred) -> Node {
    Node::Path {
        path: path.to_owned(),
        comps: path.split('.').map(str::to_owned).collect(),
        pred,
    }
}

/// True when a value is an operator document (`{$gt: 1, ...}`): its first field starts with
/// `$`, as mongod's `isExpressionDocument` decides.
fn is_operator_doc(v: Val<'_>) -> bool {
    v.as_doc()
        .and_then(|d| d.iter().next())
        .is_some_and(|(k, _)| k.starts_with('$'))
}

/// Parses `path: value`: an equality, a regex match, or an operator document.
fn parse_path_clause(
    path: &str,
    value: Val<'_>,
    vars: &Variables,
    depth: usize,
) -> Result<Node, QueryError> {
    if let View::Regex(p, o) = value.view() {
        return Ok(path_node(path, Pred::Regex(compile_regex(p, o)?)));
    }
    if let Some(d) = value.as_doc().filter(|_| is_operator_doc(value)) {
        return parse_operators(path, d, vars, depth);
    }
    Ok(path_node(path, Pred::Cmp(Cmp::Eq, eq_operand(value)?)))
}

/// Validates an equality operand (mongod refuses `undefined`).
fn eq_operand(v: Val<'_>) -> Result<Bson, QueryError> {
    if matches!(v.view(), View::Undefined) {
        return Err(bad("cannot compare to undefined"));
    }
    Ok(v.to_bson())
}

/// Parses the operator document of one path (`{$gt: 1, $lt: 5}`), an implicit AND.
fn parse_operators(
    path: &str,
    ops: DocRef<'_>,
    vars: &Variables,
    depth: usize,
) -> Result<Node, QueryError> {
    let mut nodes = Vec::new();
    let mut regex_options: Option<&str> = None;
    let mut regex_pattern: Option<(String, Option<String>)> = None;
    for (op, arg) in ops.iter() {
        match op {
            "$regex" => match arg.view() {
                View::Str(s) => regex_pattern = Some((s.to_owned(), None)),
                View::Regex(p, o) => regex_pattern = Some((p.to_owned(), Some(o.to_owned()))),
                _ => return Err(bad("$regex has to be a string")),
            },
            "$options" => {
                regex_options = Some(
                    arg.as_str()
                        .ok_or_else(|| bad("$options has to be a string"))?,
                );
            }
            "$not" => {
                let inner = match arg.view() {
                    View::Regex(p, o) => path_node(path, Pred::Regex(compile_regex(p, o)?)),
                    View::Doc(d) => {
                        if d.is_empty() {
                            return Err(bad("$not cannot be empty"));
                        }
                        if !is_operator_doc(arg) {
                            return Err(bad("$not needs a regex or a document"));
                        }
                        parse_operators(path, d, vars, depth + 1)?
                    }
                    _ => return Err(bad("$not needs a regex or a document")),
                };
                nodes.push(Node::Not(Box::new(inner)));
            }
            _ => nodes.push(parse_operator(path, op, arg, vars, depth)?),
        }
    }
    match (regex_pattern, regex_options) {
        (Some((pattern, inline)), options) => {
            let opts = match (inline, options) {
                (Some(i), Some(o)) if !i.is_empty() => {
                    let _ = o;
                    return Err(QueryError::location(
                        51075,
                        "options set in both $regex and $options",
                    ));
                }
                (Some(i), None) => i,
                (_, Some(o)) => o.to_owned(),
                (None, None) => String::new(),
            };
            nodes.push(path_node(
                path,
                Pred::Regex(compile_regex(&pattern, &opts)?),
            ));
        }
        (None, Some(_)) => return Err(bad("$options needs a $regex")),
        (None, None) => {}
    }
    Ok(if nodes.len() == 1 {
        nodes.pop().unwrap_or(Node::And(Vec::new()))
    } else {
        Node::And(nodes)
    })
}

/// Parses one field-level operator other than `$not`, `$regex` and `$options`.
fn parse_operator(
    path: &str,
    op: &str,
    arg: Val<'_>,
    vars: &Variables,
    depth: usize,
) -> Result<Node, QueryError> {
    let pred = match op {
        "$eq" => Pred::Cmp(Cmp::Eq, eq_operand(arg)?),
        "$ne" => {
            return Ok(Node::Not(Box::new(path_node(
                path,
                Pred::Cmp(Cmp::Eq, eq_operand(arg)?),
            ))));
        }
        "$gt" | "$gte" | "$lt" | "$lte" => {
            if matches!(arg.view(), View::Undefined) {
                return Err(bad("cannot compare to undefined"));
            }
            if matches!(arg.view(), View::Regex(..)) {
                return Err(bad(format!(
                    "Can't have RegEx as arg to predicate over field '{path}'."
                )));
            }
            let cmp = match op {
                "$gt" => Cmp::Gt,
                "$gte" => Cmp::Gte,
                "$lt" => Cmp::Lt,
                _ => Cmp::Lte,
            };
            Pred::Cmp(cmp, arg.to_bson())
        }
        "$in" => parse_in(arg, "$in")?,
        "$nin" => return Ok(Node::Not(Box::new(path_node(path, parse_in(arg, "$nin")?)))),
        // mongod parses `$exists: false` as NOT(exists), which matters under arrays.
        "$exists" => {
            if truthy(Some(&arg.to_bson())) {
                Pred::Exists(true)
            } else {
                return Ok(Node::Not(Box::new(path_node(path, Pred::Exists(true)))));
            }
        }
        "$type" => Pred::Type(parse_types(arg)?),
        "$mod" => parse_mod(arg)?,
        "$size" => parse_size(arg)?,
        "$all" => return parse_all(path, arg, vars, depth),
        "$elemMatch" => parse_elem_match(arg, vars, depth)?,
        "$bitsAllSet" => Pred::Bits(Bits::AllSet, parse_bitmask(op, arg)?),
        "$bitsAnySet" => Pred::Bits(Bits::AnySet, parse_bitmask(op, arg)?),
        "$bitsAllClear" => Pred::Bits(Bits::AllClear, parse_bitmask(op, arg)?),
        "$bitsAnyClear" => Pred::Bits(Bits::AnyClear, parse_bitmask(op, arg)?),
        "$comment" => return Ok(Node::And(Vec::new())),
        "$near" | "$nearSphere" | "$geoNear" => {
            return Err(QueryError::new(
                291,
                "NoQueryExecutionPlans",
                "error processing query: unable to find index for $geoNear query",
            ));
        }
        "$geoWithin" | "$geoIntersects" | "$within" => {
            return Err(QueryError::not_implemented(op));
        }
        "$where" => return Err(bad("$where cannot be applied to a field")),
        "$expr" => return Err(bad("$expr cannot be applied to a field")),
        _ => return Err(bad(format!("unknown operator: {op}"))),
    };
    Ok(path_node(path, pred))
}

fn parse_in(arg: Val<'_>, op: &str) -> Result<Pred, QueryError> {
    let arr = arg
        .as_arr()
        .ok_or_else(|| bad(format!("{op} needs an array")))?;
    let mut values = Vec::new();
    let mut regexes = Vec::new();
    for v in arr.iter() {
        match v.view() {
            View::Regex(p, o) => regexes.push(compile_regex(p, o)?),
            View::Undefined => return Err(bad("InMatchExpression equality cannot be undefined")),
            _ => {
                if is_operator_doc(v) {
                    return Err(bad("cannot nest $ under $in"));
                }
                values.push(v.to_bson());
            }
        }
    }
    Ok(Pred::In(values, regexes))
}

/// `$type` argument: a number, an alias string, or an array of them.
fn parse_types(arg: Val<'_>) -> Result<Vec<TypeSel>, QueryError> {
    fn one(v: Val<'_>) -> Result<TypeSel, QueryError> {
        if let Some(s) = v.as_str() {
            if s == "number" {
                return Ok(TypeSel::Number);
            }
            return type_from_alias(s)
                .map(TypeSel::Type)
                .ok_or_else(|| bad(format!("Unknown type name alias: {s}")));
        }
        match as_number(v.view()) {
            Some(n) => {
                let code = match n {
                    Number::Int(i) => Some(i),
                    Number::Double(d) => f64_to_i64_exact(d),
                    Number::Decimal(_) => None,
                };
                code.and_then(type_from_code)
                    .map(TypeSel::Type)
                    .ok_or_else(|| bad(format!("Invalid numerical type code: {}", v.to_bson())))
            }
            None => Err(bad("type must be represented as a number or a string")),
        }
    }
    match arg.as_arr() {
        Some(a) => a.iter().map(one).collect(),
        None => Ok(vec![one(arg)?]),
    }
}

/// The element type of a `$type` number (mongod's BSON type codes).
pub(crate) fn type_from_code(code: i64) -> Option<ElementType> {
    Some(match code {
        1 => ElementType::Double,
        2 => ElementType::String,
        3 => ElementType::EmbeddedDocument,
        4 => ElementType::Array,
        5 => ElementType::Binary,
        6 => ElementType::Undefined,
        7 => ElementType::ObjectId,
        8 => ElementType::Boolean,
        9 => ElementType::DateTime,
        10 => ElementType::Null,
        11 => ElementType::RegularExpression,
        12 => ElementType::DbPointer,
        13 => ElementType::JavaScriptCode,
        14 => ElementType::Symbol,
        15 => ElementType::JavaScriptCodeWithScope,
        16 => ElementType::Int32,
        17 => ElementType::Timestamp,
        18 => ElementType::Int64,
        19 => ElementType::Decimal128,
        -1 => ElementType::MinKey,
        127 => ElementType::MaxKey,
        _ => return None,
    })
}

/// The element type of a `$type` alias string.
pub(crate) fn type_from_alias(alias: &str) -> Option<ElementType> {
    (-1..=127)
        .filter_map(type_from_code)
        .find(|t| super::value::type_alias(*t) == alias)
}

fn parse_mod(arg: Val<'_>) -> Result<Pred, QueryError> {
    let arr = arg
        .as_arr()
        .ok_or_else(|| bad("malformed mod, needs to be an array"))?;
    let items: Vec<Val<'_>> = arr.iter().collect();
    if items.len() < 2 {
        return Err(bad("malformed mod, not enough elements"));
    }
    if items.len() > 2 {
        return Err(bad("malformed mod, too many elements"));
    }
    let num = |v: Val<'_>, what: &str| -> Result<i64, QueryError> {
        match as_number(v.view()) {
            Some(Number::Int(i)) => Ok(i),
            Some(Number::Double(d)) if d.is_finite() => Ok(d.trunc() as i64),
            Some(Number::Decimal(d)) => {
                let f = super::numeric::decimal_to_f64(d);
                if f.is_finite() {
                    Ok(f.trunc() as i64)
                } else {
                    Err(bad(format!(
                        "malformed mod, {what} value is invalid :: caused by :: Unable to coerce NaN/Inf to integral type"
                    )))
                }
            }
            Some(Number::Double(_)) => Err(bad(format!(
                "malformed mod, {what} value is invalid :: caused by :: Unable to coerce NaN/Inf to integral type"
            ))),
            None => Err(bad(format!("malformed mod, {what} not a number"))),
        }
    };
    let divisor = num(items[0], "divisor")?;
    let remainder = num(items[1], "remainder")?;
    if divisor == 0 {
        return Err(bad("divisor cannot be 0"));
    }
    Ok(Pred::Mod(divisor, remainder))
}

fn parse_size(arg: Val<'_>) -> Result<Pred, QueryError> {
    match as_number(arg.view()) {
        Some(Number::Int(i)) => {
            if i < 0 {
                return Err(bad(format!(
                    "Failed to parse $size. Expected a non-negative number in: $size: {i}"
                )));
            }
            Ok(Pred::Size(usize::try_from(i).ok()))
        }
        Some(Number::Double(d)) => match f64_to_i64_exact(d) {
            Some(i) if i >= 0 => Ok(Pred::Size(usize::try_from(i).ok())),
            Some(i) => Err(bad(format!(
                "Failed to parse $size. Expected a non-negative number in: $size: {i}"
            ))),
            None => Err(bad(format!(
                "Failed to parse $size. Expected an integer in: $size: {d:?}"
            ))),
        },
        Some(Number::Decimal(_)) | None => Err(bad(format!(
            "Failed to parse $size. Expected a number in: $size: {}",
            arg.to_bson()
        ))),
    }
}

fn parse_all(path: &str, arg: Val<'_>, vars: &Variables, depth: usize) -> Result<Node, QueryError> {
    let arr = arg.as_arr().ok_or_else(|| bad("$all needs an array"))?;
    if arr.is_empty() {
        return Ok(path_node(path, Pred::Never));
    }
    let items: Vec<Val<'_>> = arr.iter().collect();
    let first_is_elem_match = items.first().is_some_and(|v| {
        v.as_doc()
            .and_then(|d| d.iter().next())
            .is_some_and(|(k, _)| k == "$elemMatch")
    });
    let mut nodes = Vec::new();
    for v in items {
        let elem_match = v
            .as_doc()
            .and_then(|d| d.iter().next().filter(|(k, _)| *k == "$elemMatch"));
        match (first_is_elem_match, elem_match) {
            (true, Some((_, inner))) => {
                nodes.push(path_node(path, parse_elem_match(inner, vars, depth)?));
            }
            (true, None) => return Err(bad("$all/$elemMatch has to be consistent")),
            (false, Some(_)) => return Err(bad("$all/$elemMatch has to be consistent")),
            (false, None) => match v.view() {
                View::Regex(p, o) => nodes.push(path_node(path, Pred::Regex(compile_regex(p, o)?))),
                _ => {
                    if is_operator_doc(v) {
                        return Err(bad("no $ expressions in $all"));
                    }
                    nodes.push(path_node(path, Pred::Cmp(Cmp::Eq, eq_operand(v)?)));
                }
            },
        }
    }
    Ok(Node::And(nodes))
}

fn parse_elem_match(arg: Val<'_>, vars: &Variables, depth: usize) -> Result<Pred, QueryError> {
    let d = arg
        .as_doc()
        .ok_or_else(|| bad("$elemMatch needs an Object"))?;
    // Value form when the first field is an operator other than the logical ones.
    let value_form = d.iter().next().is_some_and(|(k, _)| {
        k.starts_with('$')
            && !matches!(
                k,
                "$and"
                    | "$or"
                    | "$nor"
                    | "$where"
                    | "$expr"
                    | "$text"
                    | "$comment"
                    | "$alwaysTrue"
                    | "$alwaysFalse"
            )
    });
    if value_form {
        let node = parse_operators("", d, vars, depth + 1)?;
        let preds = flatten_value_preds(node)?;
        return Ok(Pred::ElemMatchValue(preds));
    }
    let node = parse_doc(d, vars, depth + 1, false)?;
    Ok(Pred::ElemMatchObject(Box::new(node)))
}

/// Flattens the operator node of an `$elemMatch` value form into single-value predicates.
fn flatten_value_preds(node: Node) -> Result<Vec<Pred>, QueryError> {
    match node {
        Node::Path { pred, .. } => Ok(vec![pred]),
        Node::And(children) => {
            let mut out = Vec::new();
            for c in children {
                out.extend(flatten_value_preds(c)?);
            }
            Ok(out)
        }
        Node::Not(inner) => Ok(vec![Pred::ElemMatchObject(Box::new(Node::Not(inner)))]),
        other => Ok(vec![Pred::ElemMatchObject(Box::new(other))]),
    }
}

fn parse_bitmask(op: &str, arg: Val<'_>) -> Result<BitMask, QueryError> {
    match arg.view() {
        View::Arr(a) => {
            let mut positions = Vec::new();
            for v in a.iter() {
                let p = match as_number(v.view()) {
                    Some(Number::Int(i)) => Some(i),
                    Some(Number::Double(d)) => f64_to_i64_exact(d),
                    _ => None,
                };
                match p {
                    Some(p) if p >= 0 => positions.push(u32::try_from(p).unwrap_or(u32::MAX)),
                    Some(p) => {
                        return Err(bad(format!("bit positions must be >= 0 but got: {p}")));
                    }
                    None => {
                        return Err(bad(format!(
                            "bit positions must be an integer but got: {}",
                            v.to_bson()
                        )));
                    }
                }
            }
            Ok(BitMask::Positions(positions))
        }
        View::Binary(_, bytes) => {
            let mut positions = Vec::new();
            for (i, b) in bytes.iter().enumerate() {
                for bit in 0..8 {
                    if b & (1 << bit) != 0 {
                        positions.push(u32::try_from(i * 8 + bit).unwrap_or(u32::MAX));
                    }
                }
            }
            Ok(BitMask::Positions(positions))
        }
        other => {
            let n = match as_number(other) {
                Some(Number::Int(i)) => Some(i),
                Some(Number::Double(d)) => f64_to_i64_exact(d),
                Some(Number::Decimal(d)) => f64_to_i64_exact(super::numeric::decimal_to_f64(d)),
                None => {
                    return Err(bad(format!(
                        "{op} takes an Array, a number, or a BinData but received: {}",
                        arg.to_bson()
                    )));
                }
            };
            match n {
                Some(n) if n >= 0 => Ok(BitMask::Positions(
                    (0..64).filter(|b| n & (1i64 << b) != 0).collect(),
                )),
                Some(n) => Err(bad(format!("{op} cannot take a negative number: {n}"))),
                None => Err(bad(format!(
                    "{op} cannot represent as a 64-bit integer: {}",
                    arg.to_bson()
                ))),
            }
        }
    }
}

/// Compiles a BSON regex with mongod's option letters (`i m s x`; `u` is always on in Rust's
/// engine). Patterns the engine cannot compile fail with 51091 like an invalid PCRE pattern.
pub(crate) fn compile_regex(pattern: &str, options: &str) -> Result<RegexPred, QueryError> {
    let mut builder = regex::RegexBuilder::new(pattern);
    for c in options.chars() {
        match c {
            'i' => {
                builder.case_insensitive(true);
            }
            'm' => {
                builder.multi_line(true);
            }
            's' => {
                builder.dot_matches_new_line(true);
            }
            'x' => {
                builder.ignore_whitespace(true);
            }
            'u' | 'l' => {}
            other => {
                return Err(QueryError::location(
                    51108,
                    format!("invalid flag in regex options: {other}"),
                ));
            }
        }
    }
    builder.size_limit(1 << 22);
    let regex = builder.build().map_err(|e| {
        QueryError::location(
            51091,
            format!(
                "Regular expression is invalid: {}",
                first_line(&e.to_string())
            ),
        )
    })?;
    Ok(RegexPred {
        regex,
        pattern: pattern.to_owned(),
        options: options.to_owned(),
    })
}

fn first_line(s: &str) -> &str {
    s.lines().last().unwrap_or(s).trim()
}

impl RegexPred {
    /// The compiled pattern.
    pub(crate) fn regex(&self) -> &Regex {
        &self.regex
    }

    /// Tests one value (crate-internal).
    pub(crate) fn matches_value(&self, v: Val<'_>) -> bool {
        self.matches(v)
    }

    /// Strings and symbols are searched; a stored regex matches when identical.
    fn matches(&self, v: Val<'_>) -> bool {
        match v.view() {
            View::Str(s) | View::Symbol(s) => self.regex.is_match(s),
            View::Regex(p, o) => p == self.pattern && o == self.options,
            _ => false,
        }
    }
}

/// Evaluates a node against a document, recording the positional match.
fn eval(
    node: &Node,
    doc: DocRef<'_>,
    vars: &Variables,
    details: &mut MatchDetails,
) -> Result<bool, QueryError> {
    Ok(match node {
        Node::And(children) => {
            for c in children {
                if !eval(c, doc, vars, details)? {
                    return Ok(false);
                }
            }
            true
        }
        Node::Or(children) => {
            for c in children {
                if eval(c, doc, vars, details)? {
                    return Ok(true);
                }
            }
            false
        }
        Node::Nor(children) => {
            for c in children {
                let mut scratch = MatchDetails::default();
                if eval(c, doc, vars, &mut scratch)? {
                    return Ok(false);
                }
            }
            true
        }
        Node::Not(inner) => {
            let mut scratch = MatchDetails::default();
            !eval(inner, doc, vars, &mut scratch)?
        }
        Node::Const(b) => *b,
        Node::Expr(e) => truthy(e.eval_doc(doc, vars)?.as_ref()),
        Node::Path { comps, pred, .. } => {
            let mut hit: Option<Option<usize>> = None;
            any_candidate(doc, comps, &mut |c| {
                if pred_matches(pred, c) {
                    hit = Some(c.array_index);
                    true
                } else {
                    false
                }
            });
            match hit {
                Some(index) => {
                    let is_elem_match =
                        matches!(pred, Pred::ElemMatchObject(_) | Pred::ElemMatchValue(_));
                    // A top-level array matched by $elemMatch records the matching element.
                    let index = match (index, is_elem_match) {
                        (None, true) => elem_match_index(doc, comps, pred),
                        (index, _) => index,
                    };
                    if index.is_some() {
                        details.positional = index;
                    }
                    true
                }
                None => false,
            }
        }
    })
}

/// The index of the element an `$elemMatch` matched in the array at `comps` (for the
/// positional operator when the array is not nested in another array).
fn elem_match_index(doc: DocRef<'_>, comps: &[String], pred: &Pred) -> Option<usize> {
    let mut found = None;
    any_candidate(doc, comps, &mut |c| {
        if c.from_leaf_array {
            return false;
        }
        if let Some(a) = c.value.and_then(Val::as_arr) {
            for (i, e) in a.iter().enumerate() {
                if elem_matches(pred, e) {
                    found = Some(i);
                    return true;
                }
            }
        }
        false
    });
    found
}

fn elem_matches(pred: &Pred, e: Val<'_>) -> bool {
    match pred {
        Pred::ElemMatchObject(node) => match e.as_doc() {
            Some(d) => {
                let mut scratch = MatchDetails::default();
                eval(node, d, &Variables::empty(), &mut scratch).unwrap_or(false)
            }
            None => e.is_array() && match_array_as_doc(node, e),
        },
        Pred::ElemMatchValue(preds) => preds.iter().all(|p| single_matches(p, e)),
        _ => false,
    }
}

/// `$elemMatch` object form against an element that is itself an array: mongod treats the
/// array as a document with fields "0", "1", ...
fn match_array_as_doc(node: &Node, e: Val<'_>) -> bool {
    let Some(a) = e.as_arr() else {
        return false;
    };
    let mut d = Document::new();
    for (i, v) in a.iter().enumerate() {
        d.insert(i.to_string(), v.to_bson());
    }
    let mut scratch = MatchDetails::default();
    eval(node, DocRef::Owned(&d), &Variables::empty(), &mut scratch).unwrap_or(false)
}

/// Tests a predicate against one candidate produced by path traversal.
fn pred_matches(pred: &Pred, c: Candidate<'_>) -> bool {
    match pred {
        // Array predicates look at arrays reached by the path, not at elements of a leaf
        // array (mongod does not expand leaf arrays for them).
        Pred::Size(_) | Pred::ElemMatchObject(_) | Pred::ElemMatchValue(_) => {
            if c.from_leaf_array {
                return false;
            }
            match c.value {
                Some(v) => single_matches(pred, v) || array_pred_matches(pred, v),
                None => false,
            }
        }
        Pred::Exists(want) => c.value.is_some() == *want,
        Pred::Cmp(cmp, rhs) => match c.value {
            Some(v) => compare_matches(*cmp, v, rhs),
            // A missing value equals null for $eq/$gte/$lte.
            None => matches!(rhs, Bson::Null) && matches!(cmp, Cmp::Eq | Cmp::Gte | Cmp::Lte),
        },
        Pred::In(values, regexes) => match c.value {
            Some(v) => {
                values.iter().any(|rhs| compare_matches(Cmp::Eq, v, rhs))
                    || regexes.iter().any(|r| r.matches(v))
            }
            None => values.iter().any(|rhs| matches!(rhs, Bson::Null)),
        },
        _ => c.value.is_some_and(|v| single_matches(pred, v)),
    }
}

fn array_pred_matches(pred: &Pred, v: Val<'_>) -> bool {
    let Some(a) = v.as_arr() else {
        return false;
    };
    match pred {
        Pred::Size(n) => n.is_some_and(|n| a.len() == n),
        Pred::ElemMatchObject(_) | Pred::ElemMatchValue(_) => {
            a.iter().any(|e| elem_matches(pred, e))
        }
        _ => false,
    }
}

/// Tests a predicate against a single value, without array expansion.
fn single_matches(pred: &Pred, v: Val<'_>) -> bool {
    match pred {
        Pred::Cmp(cmp, rhs) => compare_matches(*cmp, v, rhs),
        Pred::In(values, regexes) => {
            values.iter().any(|rhs| compare_matches(Cmp::Eq, v, rhs))
                || regexes.iter().any(|r| r.matches(v))
        }
        Pred::Exists(want) => *want,
        Pred::Type(types) => types.iter().any(|t| match t {
            TypeSel::Number => v.is_number(),
            TypeSel::Type(t) => v.element_type() == *t,
        }),
        Pred::Regex(r) => r.matches(v),
        Pred::Mod(divisor, remainder) => {
            let x = match as_number(v.view()) {
                Some(Number::Int(i)) => Some(i),
                Some(Number::Double(d)) if d.is_finite() => Some(d.trunc() as i64),
                Some(Number::Decimal(d)) => {
                    let f = super::numeric::decimal_to_f64(d);
                    f.is_finite().then(|| f.trunc() as i64)
                }
                _ => None,
            };
            x.is_some_and(|x| x.wrapping_rem(*divisor) == *remainder)
        }
        Pred::Size(_) | Pred::ElemMatchObject(_) | Pred::ElemMatchValue(_) => {
            array_pred_matches(pred, v)
        }
        Pred::Bits(kind, mask) => bits_match(*kind, mask, v),
        Pred::Never => false,
    }
}

/// Type-bracketed comparison as mongod's `ComparisonMatchExpressionBase::compareElements`:
/// values of different canonical types never match, except that null and undefined are
/// interchangeable for `$eq`/`$gte`/`$lte` and MinKey/MaxKey bound everything; NaN only equals
/// NaN.
fn compare_matches(cmp: Cmp, v: Val<'_>, rhs: &Bson) -> bool {
    let rhs_val = Val::Owned(rhs);
    let lt = canonical_rank(v.element_type());
    let rt = canonical_rank(rhs_val.element_type());
    if lt != rt {
        if matches!((lt, rt), (0, 5) | (5, 0)) {
            // null vs undefined
            return matches!(cmp, Cmp::Eq | Cmp::Gte | Cmp::Lte);
        }
        return match rhs {
            Bson::MaxKey => matches!(cmp, Cmp::Lt | Cmp::Lte),
            Bson::MinKey => matches!(cmp, Cmp::Gt | Cmp::Gte),
            _ => false,
        };
    }
    let nan = |x: Val<'_>| match x.view() {
        View::Double(d) => d.is_nan(),
        View::Decimal(d) => matches!(
            super::numeric::decimal_parts(d),
            super::numeric::DecParts::NaN
        ),
        _ => false,
    };
    let (ln, rn) = (nan(v), nan(rhs_val));
    if ln || rn {
        let both = ln && rn;
        return match cmp {
            Cmp::Eq | Cmp::Gte | Cmp::Lte => both,
            Cmp::Gt | Cmp::Lt => false,
        };
    }
    let o = cmp_val(v, rhs_val);
    match cmp {
        Cmp::Eq => o.is_eq(),
        Cmp::Gt => o.is_gt(),
        Cmp::Gte => o.is_ge(),
        Cmp::Lt => o.is_lt(),
        Cmp::Lte => o.is_le(),
    }
}

fn bits_match(kind: Bits, mask: &BitMask, v: Val<'_>) -> bool {
    let BitMask::Positions(positions) = mask;
    let test: Box<dyn Fn(u32) -> bool> = match v.view() {
        View::Binary(_, bytes) => {
            let bytes = bytes.to_vec();
            Box::new(move |p: u32| {
                let byte = (p / 8) as usize;
                bytes.get(byte).is_some_and(|b| b & (1 << (p % 8)) != 0)
            })
        }
        other => {
            let n = match as_number(other) {
                Some(Number::Int(i)) => Some(i),
                Some(Number::Double(d)) => f64_to_i64_exact(d),
                Some(Number::Decimal(_)) | None => None,
            };
            let Some(n) = n else {
                return false;
            };
            // Negative numbers are sign-extended two's complement beyond bit 63.
            Box::new(move |p: u32| if p >= 64 { n < 0 } else { n & (1i64 << p) != 0 })
        }
    };
    match kind {
        Bits::AllSet => positions.iter().all(|p| test(*p)),
        Bits::AnySet => positions.iter().any(|p| test(*p)),
        Bits::AllClear => positions.iter().all(|p| !test(*p)),
        Bits::AnyClear => positions.iter().any(|p| !test(*p)),
    }
}

/// Matches a value against a filter whose predicates have empty paths (`$pull` with an
/// operator condition, e.g. `{$pull: {a: {$gte: 6}}}`).
fn match_value_node(node: &Node, v: Val<'_>) -> bool {
    match node {
        Node::And(children) => children.iter().all(|c| match_value_node(c, v)),
        Node::Or(children) => children.iter().any(|c| match_value_node(c, v)),
        Node::Nor(children) => !children.iter().any(|c| match_value_node(c, v)),
        Node::Not(inner) => !match_value_node(inner, v),
        Node::Const(b) => *b,
        Node::Expr(_) => false,
        Node::Path { pred, .. } => single_matches(pred, v),
    }
}

/// Parses the `$pull` condition of a non-document form: an operator document applied to
/// each element as a value (paths empty).
pub(crate) fn parse_value_condition(
    ops: DocRef<'_>,
    vars: &Variables,
) -> Result<Filter, QueryError> {
    Ok(Filter {
        root: parse_operators("", ops, vars, 0)?,
        vars: vars.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::{RawDocumentBuf, doc, rawdoc};

    fn matches(filter: RawDocumentBuf, doc: RawDocumentBuf) -> bool {
        Filter::parse(&filter)
            .expect("valid filter")
            .matches(&doc)
            .expect("no evaluation error")
    }

    fn parse_err(filter: RawDocumentBuf) -> QueryError {
        Filter::parse(&filter).expect_err("invalid filter")
    }

    #[test]
    fn equality_and_implicit_array_matching() {
        assert!(matches(rawdoc! {"a": 1}, rawdoc! {"a": 1.0}));
        assert!(matches(rawdoc! {"a": 1}, rawdoc! {"a": [3, 1]}));
        assert!(matches(rawdoc! {"a": [3, 1]}, rawdoc! {"a": [3, 1]}));
        assert!(!matches(rawdoc! {"a": [1, 3]}, rawdoc! {"a": [3, 1]}));
        assert!(matches(
            rawdoc! {"a.b": 2},
            rawdoc! {"a": [{"b": 1}, {"b": 2}]}
        ));
        assert!(matches(rawdoc! {"a.1": 5}, rawdoc! {"a": [4, 5]}));
        assert!(matches(rawdoc! {"a.1.b": 5}, rawdoc! {"a": [{}, {"b": 5}]}));
        assert!(matches(
            rawdoc! {"a.b": {"c": 1}},
            rawdoc! {"a": {"b": {"c": 1}}}
        ));
        assert!(!matches(
            rawdoc! {"a.b": {"c": 1}},
            rawdoc! {"a": {"b": {"c": 1, "d": 1}}}
        ));
    }

    #[test]
    fn null_matches_missing_null_and_undefined() {
        assert!(matches(rawdoc! {"a": null}, rawdoc! {"b": 1}));
        assert!(matches(rawdoc! {"a": null}, rawdoc! {"a": null}));
        assert!(matches(
            rawdoc! {"a": null},
            rawdoc! {"a": bson::RawBson::Undefined}
        ));
        assert!(!matches(rawdoc! {"a": null}, rawdoc! {"a": 0}));
        assert!(!matches(rawdoc! {"a": null}, rawdoc! {"a": []}));
        assert!(matches(
            rawdoc! {"a.b": null},
            rawdoc! {"a": [{"b": 1}, {"c": 1}]}
        ));
        assert!(matches(rawdoc! {"a.b": null}, rawdoc! {"a": 5}));
        assert!(!matches(rawdoc! {"a": {"$ne": null}}, rawdoc! {"b": 1}));
        assert!(matches(rawdoc! {"a": {"$gte": null}}, rawdoc! {"b": 1}));
        assert!(!matches(rawdoc! {"a": {"$gt": null}}, rawdoc! {"b": 1}));
        assert!(matches(rawdoc! {"a": {"$in": [1, null]}}, rawdoc! {}));
    }

    #[test]
    fn comparisons_are_type_bracketed() {
        assert!(matches(rawdoc! {"a": {"$gt": 5}}, rawdoc! {"a": 6_i64}));
        assert!(!matches(rawdoc! {"a": {"$gt": 5}}, rawdoc! {"a": "6"}));
        assert!(matches(rawdoc! {"a": {"$gt": 5}}, rawdoc! {"a": [1, 7]}));
        assert!(matches(
            rawdoc! {"a": {"$lt": bson::RawBson::MaxKey}},
            rawdoc! {"a": "x"}
        ));
        assert!(!matches(rawdoc! {"a": {"$gt": f64::NAN}}, rawdoc! {"a": 1}));
        assert!(matches(rawdoc! {"a": f64::NAN}, rawdoc! {"a": f64::NAN}));
        assert!(!matches(rawdoc! {"a": {"$lt": 1}}, rawdoc! {"a": f64::NAN}));
        // Range over an array: each bound may be satisfied by a different element.
        assert!(matches(
            rawdoc! {"a": {"$gt": 5, "$lt": 3}},
            rawdoc! {"a": [1, 7]}
        ));
        assert!(!matches(
            rawdoc! {"a": {"$elemMatch": {"$gt": 5, "$lt": 3}}},
            rawdoc! {"a": [1, 7]}
        ));
    }

    #[test]
    fn logical_operators() {
        let d = rawdoc! {"a": 1, "b": 2};
        assert!(matches(rawdoc! {"$and": [{"a": 1}, {"b": 2}]}, d.clone()));
        assert!(matches(rawdoc! {"$or": [{"a": 2}, {"b": 2}]}, d.clone()));
        assert!(!matches(rawdoc! {"$nor": [{"a": 2}, {"b": 2}]}, d.clone()));
        assert!(matches(rawdoc! {"a": {"$not": {"$gt": 5}}}, d.clone()));
        assert!(matches(rawdoc! {"c": {"$not": {"$gt": 5}}}, d.clone()));
        assert!(matches(rawdoc! {"a": {"$nin": [2, 3]}}, d));
        assert_eq!(
            parse_err(rawdoc! {"$and": []}).message,
            "$and/$or/$nor must be a nonempty array"
        );
        assert_eq!(
            parse_err(rawdoc! {"$or": [1]}).message,
            "$or/$and/$nor entries need to be full objects"
        );
        assert_eq!(
            parse_err(rawdoc! {"$foo": 1}).message,
            "unknown top level operator: $foo"
        );
        assert_eq!(
            parse_err(rawdoc! {"a": {"$foo": 1}}).message,
            "unknown operator: $foo"
        );
        assert_eq!(
            parse_err(rawdoc! {"a": {"$not": 1}}).message,
            "$not needs a regex or a document"
        );
    }

    #[test]
    fn element_operators() {
        assert!(matches(
            rawdoc! {"a": {"$exists": true}},
            rawdoc! {"a": null}
        ));
        assert!(matches(rawdoc! {"a": {"$exists": false}}, rawdoc! {"b": 1}));
        assert!(matches(
            rawdoc! {"a.b": {"$exists": false}},
            rawdoc! {"a": [1]}
        ));
        assert!(matches(
            rawdoc! {"a": {"$type": "number"}},
            rawdoc! {"a": 1.5}
        ));
        assert!(matches(rawdoc! {"a": {"$type": 2}}, rawdoc! {"a": "s"}));
        assert!(matches(
            rawdoc! {"a": {"$type": "array"}},
            rawdoc! {"a": [1]}
        ));
        assert!(matches(rawdoc! {"a": {"$type": "int"}}, rawdoc! {"a": [1]}));
        assert!(matches(
            rawdoc! {"a": {"$type": ["string", "long"]}},
            rawdoc! {"a": 5_i64}
        ));
        assert_eq!(
            parse_err(rawdoc! {"a": {"$type": "foo"}}).message,
            "Unknown type name alias: foo"
        );
    }

    #[test]
    fn regex_operators() {
        assert!(matches(
            rawdoc! {"a": {"$regex": "^ab", "$options": "i"}},
            rawdoc! {"a": "ABc"}
        ));
        assert!(matches(
            rawdoc! {"a": bson::Regex { pattern: bson::raw::CString::try_from("b").expect("cstr"), options: bson::raw::CString::try_from("").expect("cstr") }},
            rawdoc! {"a": ["x", "abc"]}
        ));
        assert!(matches(
            rawdoc! {"a": {"$in": [bson::Regex { pattern: bson::raw::CString::try_from("^x").expect("cstr"), options: bson::raw::CString::try_from("").expect("cstr") }, 5]}},
            rawdoc! {"a": "xyz"}
        ));
        assert!(matches(
            rawdoc! {"a": {"$not": bson::Regex { pattern: bson::raw::CString::try_from("^x").expect("cstr"), options: bson::raw::CString::try_from("").expect("cstr") }}},
            rawdoc! {"a": "abc"}
        ));
        assert_eq!(
            parse_err(rawdoc! {"a": {"$options": "i"}}).message,
            "$options needs a $regex"
        );
        assert_eq!(parse_err(rawdoc! {"a": {"$regex": "("}}).code, 51091);
    }

    #[test]
    fn array_operators() {
        let d = rawdoc! {"a": [1, 2, 3], "b": [{"x": 1, "y": 2}, {"x": 2, "y": 1}]};
        assert!(matches(rawdoc! {"a": {"$size": 3}}, d.clone()));
        assert!(!matches(rawdoc! {"a": {"$size": 2}}, d.clone()));
        assert!(matches(rawdoc! {"a": {"$all": [3, 1]}}, d.clone()));
        assert!(!matches(rawdoc! {"a": {"$all": [3, 4]}}, d.clone()));
        assert!(!matches(rawdoc! {"a": {"$all": []}}, d.clone()));
        assert!(matches(
            rawdoc! {"b": {"$elemMatch": {"x": 1, "y": 2}}},
            d.clone()
        ));
        assert!(!matches(
            rawdoc! {"b": {"$elemMatch": {"x": 1, "y": 1}}},
            d.clone()
        ));
        assert!(matches(rawdoc! {"b.x": 1, "b.y": 1}, d.clone()));
        assert!(matches(
            rawdoc! {"b": {"$all": [{"$elemMatch": {"x": 1}}, {"$elemMatch": {"y": 1}}]}},
            d.clone()
        ));
        assert!(matches(rawdoc! {"a": {"$elemMatch": {"$gt": 2}}}, d));
        // $size does not look into the elements of a leaf array.
        assert!(matches(
            rawdoc! {"a": {"$size": 1}},
            rawdoc! {"a": [[1, 2]]}
        ));
        assert!(!matches(
            rawdoc! {"a": {"$size": 2}},
            rawdoc! {"a": [[1, 2]]}
        ));
    }

    #[test]
    fn mod_and_bits() {
        assert!(matches(rawdoc! {"a": {"$mod": [4, 1]}}, rawdoc! {"a": 5.7}));
        assert!(matches(rawdoc! {"a": {"$mod": [4, -1]}}, rawdoc! {"a": -5}));
        assert_eq!(
            parse_err(rawdoc! {"a": {"$mod": [0, 1]}}).message,
            "divisor cannot be 0"
        );
        assert_eq!(
            parse_err(rawdoc! {"a": {"$mod": [1]}}).message,
            "malformed mod, not enough elements"
        );
        assert!(matches(
            rawdoc! {"a": {"$bitsAllSet": [0, 2]}},
            rawdoc! {"a": 5}
        ));
        assert!(matches(
            rawdoc! {"a": {"$bitsAnyClear": 5}},
            rawdoc! {"a": 4}
        ));
        assert!(matches(
            rawdoc! {"a": {"$bitsAllSet": [70]}},
            rawdoc! {"a": -1}
        ));
        assert!(!matches(
            rawdoc! {"a": {"$bitsAllSet": 1}},
            rawdoc! {"a": 1.5}
        ));
    }

    #[test]
    fn positional_details_and_helpers() {
        let f = Filter::parse(&rawdoc! {"a.b": 2}).expect("filter");
        let d = f
            .matches_details(&rawdoc! {"a": [{"b": 1}, {"b": 2}]})
            .expect("eval")
            .expect("match");
        assert_eq!(d.positional_index(), Some(1));
        let f = Filter::parse(&rawdoc! {"a": {"$elemMatch": {"$gt": 2}}}).expect("filter");
        let d = f
            .matches_details(&rawdoc! {"a": [1, 5]})
            .expect("eval")
            .expect("match");
        assert_eq!(d.positional_index(), Some(1));

        let f = Filter::parse(&rawdoc! {"$and": [{"_id": {"$eq": 5}}, {"x": 1}]}).expect("filter");
        assert_eq!(f.id_value(), Some(bson::Bson::Int32(5)));
        assert_eq!(
            f.equality_fields(),
            vec![
                ("_id".to_owned(), bson::Bson::Int32(5)),
                ("x".to_owned(), bson::Bson::Int32(1))
            ]
        );
        assert!(
            Filter::parse(&rawdoc! {"_id": {"$gt": 5}})
                .expect("filter")
                .id_value()
                .is_none()
        );
        assert!(
            Filter::parse(&rawdoc! {"$comment": "x"})
                .expect("filter")
                .is_match_all()
        );
        assert!(
            Filter::parse(&rawdoc! {})
                .expect("filter")
                .matches_bson(&doc! {"a": 1})
                .expect("eval")
        );
    }

    #[test]
    fn expr_uses_aggregation_semantics_and_let_variables() {
        let vars = Variables::new().with_let(&rawdoc! {"id": 1}).expect("let");
        let f = Filter::parse_with(&rawdoc! {"$expr": {"$eq": ["$_id", "$$id"]}}, &vars)
            .expect("filter");
        assert!(f.matches(&rawdoc! {"_id": 1}).expect("eval"));
        assert!(!f.matches(&rawdoc! {"_id": 2}).expect("eval"));
        // No type bracketing inside $expr: a string is greater than a number.
        let f = Filter::parse(&rawdoc! {"$expr": {"$gt": ["$a", 5]}}).expect("filter");
        assert!(f.matches(&rawdoc! {"a": "x"}).expect("eval"));
        let f = Filter::parse(&rawdoc! {"$expr": {"$divide": [1, "$z"]}}).expect("filter");
        assert!(f.matches(&rawdoc! {"z": 0}).is_err());
        let e = Filter::parse(&rawdoc! {"a": {"$elemMatch": {"$expr": {"$eq": [1, 1]}}}})
            .expect_err("$expr in $elemMatch");
        assert_eq!(e.code, 2);
    }

    #[test]
    fn unsupported_operators_give_server_errors() {
        assert_eq!(parse_err(rawdoc! {"$where": "true"}).code, 2);
        assert_eq!(parse_err(rawdoc! {"$text": {"$search": "x"}}).code, 27);
        assert_eq!(parse_err(rawdoc! {"a": {"$near": [0, 0]}}).code, 291);
    }

    #[test]
    fn deep_filters_are_rejected_not_overflowing() {
        let mut f = doc! {"a": 1};
        for _ in 0..300 {
            f = doc! {"$and": [f]};
        }
        let raw = RawDocumentBuf::try_from(&f).expect("encodable");
        assert_eq!(Filter::parse(&raw).expect_err("too deep").code, 15);
    }
}
