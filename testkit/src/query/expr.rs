//! Aggregation expressions (`$add`, `$cond`, field paths, variables, ...), as mongod 7.0
//! evaluates them in `$project`, `$addFields`, `$group`, `$expr` and pipeline updates.
//!
//! An [`Expression`] is parsed once (unknown operators fail at parse time with 168
//! `InvalidPipelineOperator`, undefined variables with 17276, wrong argument counts with
//! 16020) and evaluated per document against a [`Variables`] environment that carries `$$NOW`,
//! `$$CLUSTER_TIME` and the user's `let` variables. A result may be *missing* (a field path to
//! a missing field, `$$REMOVE`), which stages drop instead of storing null.
//!
//! Operators: literals and `$literal`, field paths, `$$ROOT $$CURRENT $$NOW $$CLUSTER_TIME
//! $$REMOVE`, `$let`; arithmetic (`$add $subtract $multiply $divide $mod $abs $ceil $floor
//! $round $trunc $sqrt $pow $exp $ln $log $log10`); comparison (`$eq $ne $gt $gte $lt $lte
//! $cmp`); boolean (`$and $or $not`); conditional (`$cond $ifNull $switch`); strings
//! (`$concat $substr $substrBytes $substrCP $toLower $toUpper $strLenBytes $strLenCP $split
//! $trim $ltrim $rtrim $indexOfBytes $indexOfCP $strcasecmp $regexMatch $regexFind
//! $regexFindAll $replaceOne $replaceAll`); arrays (`$size $arrayElemAt $first $last $filter
//! $map $reduce $in $concatArrays $slice $reverseArray $indexOfArray $isArray $range
//! $sortArray $zip $arrayToObject $objectToArray $setUnion $setIntersection $setDifference
//! $setEquals $setIsSubset $allElementsTrue $anyElementTrue`); types (`$type $isNumber
//! $toString $toInt $toLong $toDouble $toDecimal $toBool $toObjectId $toDate $convert`);
//! objects (`$mergeObjects $getField $setField $unsetField`); dates (`$year $month
//! $dayOfMonth $dayOfWeek $dayOfYear $hour $minute $second $millisecond $dateToString`, UTC
//! only); `$sum $avg $min $max` over arrays; `$rand`.

use std::cmp::Ordering;
use std::fmt::Write as _;

use bson::oid::ObjectId;
use bson::{Bson, DateTime, Document, RawBsonRef, RawDocument, Timestamp};

use super::QueryError;
use super::compare::{cmp_val, compare_bson};
use super::numeric::{ArithOp, DecParts, Num, arith, dec_arith, decimal_parts, f64_to_i64_exact};
use super::value::{DocRef, Val, check_nesting, type_alias};

/// The variables visible to expressions: the system variables `$$NOW` and `$$CLUSTER_TIME`
/// (fixed for one operation, as in mongod) and user variables from a command's `let`.
#[derive(Debug, Clone)]
pub struct Variables {
    now: DateTime,
    cluster_time: Option<Timestamp>,
    user: Vec<(String, Bson)>,
}

impl Default for Variables {
    fn default() -> Self {
        Self::new()
    }
}

impl Variables {
    /// An environment whose `$$NOW` is the current wall-clock time and with no user variables.
    pub fn new() -> Self {
        Self::with_now(DateTime::now())
    }

    /// An environment with the given `$$NOW`.
    pub fn with_now(now: DateTime) -> Self {
        Variables {
            now,
            cluster_time: None,
            user: Vec::new(),
        }
    }

    /// An environment for contexts where expressions cannot occur (no clock read).
    pub(crate) fn empty() -> Self {
        Self::with_now(DateTime::from_millis(0))
    }

    /// Sets `$$CLUSTER_TIME` (the server's logical time of the operation). Without it the
    /// variable is undefined, as on a standalone mongod.
    pub fn set_cluster_time(&mut self, ts: Timestamp) {
        self.cluster_time = Some(ts);
    }

    /// The value of `$$NOW`.
    pub fn now(&self) -> DateTime {
        self.now
    }

    /// The value of `$$CLUSTER_TIME`, if set.
    pub fn cluster_time(&self) -> Option<Timestamp> {
        self.cluster_time
    }

    /// Defines (or redefines) a user variable. The name must be a valid user variable name
    /// (starts with a lowercase ASCII letter or a non-ASCII character, then letters, digits and
    /// `_`), otherwise error 2 as mongod's `variableValidation::validateNameForUserWrite`.
    pub fn define(&mut self, name: &str, value: Bson) -> Result<(), QueryError> {
        validate_user_var_name(name)?;
        if let Some(slot) = self.user.iter_mut().find(|(n, _)| n == name) {
            slot.1 = value;
        } else {
            self.user.push((name.to_owned(), value));
        }
        Ok(())
    }

    /// Adds the variables of a command's `let` document: each value is an expression
    /// evaluated once with no current document (so `$$NOW` and earlier `let` variables may be
    /// used, field paths evaluate to missing).
    pub fn with_let(mut self, let_doc: &RawDocument) -> Result<Self, QueryError> {
        let empty = Document::new();
        for (name, value) in DocRef::Raw(let_doc).iter() {
            validate_user_var_name(name)?;
            let e = Expression::parse_val(value, &self)?;
            let v = e
                .eval_doc(DocRef::Owned(&empty), &self)?
                .unwrap_or(Bson::Null);
            self.define(name, v)?;
        }
        Ok(self)
    }

    /// The value of a user variable.
    pub fn get(&self, name: &str) -> Option<&Bson> {
        self.user.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }
}

/// mongod's rule for user-defined variable names.
fn validate_user_var_name(name: &str) -> Result<(), QueryError> {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || !c.is_ascii());
    if !first_ok {
        return Err(QueryError::bad_value(format!(
            "'{name}' starts with an invalid character for a user variable name"
        )));
    }
    if !chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || !c.is_ascii()) {
        return Err(QueryError::bad_value(format!(
            "'{name}' contains an invalid character for a variable name: '{}'",
            name.chars()
                .skip(1)
                .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || !c.is_ascii()))
                .unwrap_or(' ')
        )));
    }
    Ok(())
}

/// A parsed aggregation expression.
#[derive(Debug, Clone)]
pub struct Expression {
    node: Node,
}

#[derive(Debug, Clone)]
enum VarRef {
    Root,
    Current,
    Now,
    ClusterTime,
    Remove,
    Descend,
    Prune,
    Keep,
    /// A user or scoped variable, resolved at evaluation.
    Named(String),
}

#[derive(Debug, Clone)]
enum Node {
    Const(Bson),
    Field(Vec<String>),
    Var(VarRef, Vec<String>),
    Object(Vec<(String, Node)>),
    Array(Vec<Node>),
    Op(&'static str, Vec<Node>),
    Named(&'static str, Vec<(String, Node)>),
    Cond(Box<Node>, Box<Node>, Box<Node>),
    Switch(Vec<(Node, Node)>, Option<Box<Node>>),
    Let(Vec<(String, Node)>, Box<Node>),
    Map {
        input: Box<Node>,
        var: String,
        body: Box<Node>,
    },
    Filter {
        input: Box<Node>,
        var: String,
        cond: Box<Node>,
        limit: Option<Box<Node>>,
    },
    Reduce {
        input: Box<Node>,
        initial: Box<Node>,
        body: Box<Node>,
    },
}

/// Parse-time scope: the variable names defined by enclosing `$let`/`$map`/... and the
/// environment.
struct Scope<'a> {
    vars: &'a Variables,
    locals: Vec<String>,
    depth: usize,
}

const MAX_EXPR_DEPTH: usize = 150;

fn err(code: i32, msg: impl Into<String>) -> QueryError {
    QueryError::location(code, msg)
}

fn bad(msg: impl Into<String>) -> QueryError {
    QueryError::bad_value(msg)
}

impl Expression {
    /// Parses an expression from its BSON form (a `$field.path`, a `$$variable`, a literal, an
    /// operator document such as `{$add: [...]}`, or a document/array of expressions).
    pub fn parse(spec: RawBsonRef<'_>, vars: &Variables) -> Result<Self, QueryError> {
        Self::parse_val(Val::Raw(spec), vars)
    }

    /// [`Expression::parse`] from a decoded value.
    pub fn parse_bson(spec: &Bson, vars: &Variables) -> Result<Self, QueryError> {
        Self::parse_val(Val::Owned(spec), vars)
    }

    /// Parses from either representation (crate-internal entry point).
    pub(crate) fn parse_val(spec: Val<'_>, vars: &Variables) -> Result<Self, QueryError> {
        if let Some(d) = spec.as_doc() {
            check_nesting(d)?;
        }
        let mut scope = Scope {
            vars,
            locals: Vec::new(),
            depth: 0,
        };
        Ok(Expression {
            node: parse(spec, &mut scope)?,
        })
    }

    /// True when the expression is a constant: its value does not depend on the document.
    pub fn is_constant(&self) -> bool {
        matches!(self.node, Node::Const(_))
    }

    /// Evaluates the expression with `doc` as `$$ROOT`/`$$CURRENT`; a missing result (for
    /// example a field path to a missing field) comes back as `Bson::Null`. Use
    /// [`Expression::evaluate_optional`] to tell missing from null.
    pub fn evaluate(&self, doc: &RawDocument, vars: &Variables) -> Result<Bson, QueryError> {
        self.evaluate_optional(doc, vars)
            .map(|v| v.unwrap_or(Bson::Null))
    }

    /// Evaluates the expression; `Ok(None)` means the result is missing (mongod's "missing"
    /// value, which `$project`/`$addFields` drop instead of storing null).
    pub fn evaluate_optional(
        &self,
        doc: &RawDocument,
        vars: &Variables,
    ) -> Result<Option<Bson>, QueryError> {
        self.eval_doc(DocRef::Raw(doc), vars)
    }

    /// [`Expression::evaluate_optional`] on a decoded document.
    pub fn evaluate_bson(
        &self,
        doc: &Document,
        vars: &Variables,
    ) -> Result<Option<Bson>, QueryError> {
        self.eval_doc(DocRef::Owned(doc), vars)
    }

    /// Evaluates with a document of either representation as `$$ROOT`.
    pub(crate) fn eval_doc(
        &self,
        doc: DocRef<'_>,
        vars: &Variables,
    ) -> Result<Option<Bson>, QueryError> {
        let mut ctx = Ctx {
            root: doc,
            vars,
            locals: Vec::new(),
        };
        eval(&self.node, &mut ctx)
    }
}

/// mongod's truthiness of an expression result: false, null, undefined, missing and numeric
/// zero are false; everything else (including empty strings and arrays) is true.
pub(crate) fn truthy(v: Option<&Bson>) -> bool {
    match v {
        None | Some(Bson::Null | Bson::Undefined | Bson::Boolean(false)) => false,
        Some(Bson::Int32(i)) => *i != 0,
        Some(Bson::Int64(i)) => *i != 0,
        Some(Bson::Double(d)) => *d != 0.0,
        Some(Bson::Decimal128(d)) => {
            !matches!(decimal_parts(*d), DecParts::Finite { coefficient: 0, .. })
        }
        Some(_) => true,
    }
}

// ---------------------------------------------------------------------------------------------
// Parsing

fn parse(spec: Val<'_>, scope: &mut Scope<'_>) -> Result<Node, QueryError> {
    if scope.depth > MAX_EXPR_DEPTH {
        return Err(QueryError::new(
            15,
            "Overflow",
            "expression nesting exceeds the depth limit",
        ));
    }
    scope.depth += 1;
    let r = parse_inner(spec, scope);
    scope.depth -= 1;
    r
}

fn parse_inner(spec: Val<'_>, scope: &mut Scope<'_>) -> Result<Node, QueryError> {
    if let Some(s) = spec.as_str() {
        return parse_string(s, scope);
    }
    if let Some(a) = spec.as_arr() {
        let items = a
            .iter()
            .map(|v| parse(v, scope))
            .collect::<Result<Vec<_>, _>>()?;
        return Ok(fold_array(items));
    }
    if let Some(d) = spec.as_doc() {
        let mut iter = d.iter();
        if let Some((first, arg)) = iter.next()
            && first.starts_with('$')
        {
            if iter.next().is_some() {
                return Err(err(
                    15983,
                    format!(
                        "An object representing an expression must have exactly one field: {}",
                        d.to_document()
                    ),
                ));
            }
            return parse_operator(first, arg, scope);
        }
        let mut fields = Vec::new();
        for (k, v) in d.iter() {
            validate_field_name(k)?;
            fields.push((k.to_owned(), parse(v, scope)?));
        }
        let all_const = fields.iter().all(|(_, n)| matches!(n, Node::Const(_)));
        if all_const {
            let mut doc = Document::new();
            for (k, n) in fields {
                if let Node::Const(b) = n {
                    doc.insert(k, b);
                }
            }
            return Ok(Node::Const(Bson::Document(doc)));
        }
        return Ok(Node::Object(fields));
    }
    Ok(Node::Const(spec.to_bson()))
}

fn fold_array(items: Vec<Node>) -> Node {
    if items.iter().all(|n| matches!(n, Node::Const(_))) {
        Node::Const(Bson::Array(
            items
                .into_iter()
                .filter_map(|n| match n {
                    Node::Const(b) => Some(b),
                    _ => None,
                })
                .collect(),
        ))
    } else {
        Node::Array(items)
    }
}

fn validate_field_name(k: &str) -> Result<(), QueryError> {
    if k.starts_with('$') {
        return Err(err(
            16410,
            "FieldPath field names may not start with '$'. Consider using $getField or $setField.",
        ));
    }
    if k.contains('.') {
        return Err(err(
            16412,
            "FieldPath field names may not contain '.'. Consider using $getField or $setField.",
        ));
    }
    if k.is_empty() {
        return Err(err(
            16411,
            "FieldPath field names may not be empty strings.",
        ));
    }
    Ok(())
}

fn parse_string(s: &str, scope: &Scope<'_>) -> Result<Node, QueryError> {
    if let Some(var) = s.strip_prefix("$$") {
        let mut parts = var.split('.');
        let name = parts.next().unwrap_or_default();
        let rest: Vec<String> = parts.map(str::to_owned).collect();
        if rest.iter().any(String::is_empty) {
            return Err(err(
                15998,
                "FieldPath field names may not be empty strings.",
            ));
        }
        let r = match name {
            "ROOT" => VarRef::Root,
            "CURRENT" => VarRef::Current,
            "NOW" => VarRef::Now,
            "CLUSTER_TIME" => VarRef::ClusterTime,
            "REMOVE" => VarRef::Remove,
            "DESCEND" => VarRef::Descend,
            "PRUNE" => VarRef::Prune,
            "KEEP" => VarRef::Keep,
            "" => return Err(err(16869, "empty variable names are not allowed")),
            other => {
                let defined =
                    scope.locals.iter().any(|l| l == other) || scope.vars.get(other).is_some();
                if !defined {
                    return Err(err(17276, format!("Use of undefined variable: {other}")));
                }
                VarRef::Named(other.to_owned())
            }
        };
        return Ok(Node::Var(r, rest));
    }
    if let Some(path) = s.strip_prefix('$') {
        if path.is_empty() {
            return Err(err(16872, "'$' by itself is not a valid FieldPath"));
        }
        let parts: Vec<String> = path.split('.').map(str::to_owned).collect();
        for p in &parts {
            if p.is_empty() {
                return Err(err(
                    15998,
                    "FieldPath field names may not be empty strings.",
                ));
            }
            if p.starts_with('$') {
                return Err(err(
                    16410,
                    "FieldPath field names may not start with '$'. Consider using $getField or $setField.",
                ));
            }
        }
        return Ok(Node::Field(parts));
    }
    Ok(Node::Const(Bson::String(s.to_owned())))
}

/// Operators taking a positional argument list, with their arity (min, max).
fn positional_arity(name: &str) -> Option<(usize, usize)> {
    const ANY: usize = usize::MAX;
    Some(match name {
        "$add" | "$multiply" | "$concat" | "$concatArrays" | "$and" | "$or" | "$mergeObjects"
        | "$setUnion" | "$setIntersection" => (0, ANY),
        "$subtract" | "$divide" | "$mod" | "$pow" | "$log" | "$eq" | "$ne" | "$gt" | "$gte"
        | "$lt" | "$lte" | "$cmp" | "$arrayElemAt" | "$in" | "$strcasecmp" | "$setDifference"
        | "$setIsSubset" => (2, 2),
        "$setEquals" => (2, ANY),
        "$abs" | "$ceil" | "$floor" | "$sqrt" | "$exp" | "$ln" | "$log10" | "$not" | "$size"
        | "$first" | "$last" | "$reverseArray" | "$isArray" | "$toLower" | "$toUpper"
        | "$strLenBytes" | "$strLenCP" | "$type" | "$isNumber" | "$toString" | "$toInt"
        | "$toLong" | "$toDouble" | "$toDecimal" | "$toBool" | "$toObjectId" | "$toDate"
        | "$objectToArray" | "$arrayToObject" | "$allElementsTrue" | "$anyElementTrue"
        | "$year" | "$month" | "$dayOfMonth" | "$dayOfWeek" | "$dayOfYear" | "$hour"
        | "$minute" | "$second" | "$millisecond" => (1, 1),
        "$round" | "$trunc" => (1, 2),
        "$ifNull" => (2, ANY),
        "$substr" | "$substrBytes" | "$substrCP" => (3, 3),
        "$split" => (2, 2),
        "$indexOfBytes" | "$indexOfCP" | "$indexOfArray" => (2, 4),
        "$slice" => (2, 3),
        "$range" => (2, 3),
        "$sum" | "$avg" | "$min" | "$max" => (0, ANY),
        _ => return None,
    })
}

/// Operators taking a document of named arguments, with the required and optional names.
fn named_args(name: &str) -> Option<(&'static [&'static str], &'static [&'static str])> {
    Some(match name {
        "$getField" => (&["field"], &["input"]),
        "$setField" => (&["field", "input", "value"], &[]),
        "$unsetField" => (&["field", "input"], &[]),
        "$regexMatch" | "$regexFind" | "$regexFindAll" => (&["input", "regex"], &["options"]),
        "$replaceOne" | "$replaceAll" => (&["input", "find", "replacement"], &[]),
        "$trim" | "$ltrim" | "$rtrim" => (&["input"], &["chars"]),
        "$convert" => (&["input", "to"], &["onError", "onNull"]),
        "$dateToString" => (&["date"], &["format", "timezone", "onNull"]),
        "$sortArray" => (&["input", "sortBy"], &[]),
        "$zip" => (&["inputs"], &["useLongestLength", "defaults"]),
        _ => return None,
    })
}

fn static_name(name: &str) -> &'static str {
    // Interns known operator names (every name reaching here was matched above).
    const NAMES: &[&str] = &[
        "$add",
        "$multiply",
        "$concat",
        "$concatArrays",
        "$and",
        "$or",
        "$mergeObjects",
        "$setUnion",
        "$setIntersection",
        "$subtract",
        "$divide",
        "$mod",
        "$pow",
        "$log",
        "$eq",
        "$ne",
        "$gt",
        "$gte",
        "$lt",
        "$lte",
        "$cmp",
        "$arrayElemAt",
        "$in",
        "$strcasecmp",
        "$setDifference",
        "$setIsSubset",
        "$setEquals",
        "$abs",
        "$ceil",
        "$floor",
        "$sqrt",
        "$exp",
        "$ln",
        "$log10",
        "$not",
        "$size",
        "$first",
        "$last",
        "$reverseArray",
        "$isArray",
        "$toLower",
        "$toUpper",
        "$strLenBytes",
        "$strLenCP",
        "$type",
        "$isNumber",
        "$toString",
        "$toInt",
        "$toLong",
        "$toDouble",
        "$toDecimal",
        "$toBool",
        "$toObjectId",
        "$toDate",
        "$objectToArray",
        "$arrayToObject",
        "$allElementsTrue",
        "$anyElementTrue",
        "$year",
        "$month",
        "$dayOfMonth",
        "$dayOfWeek",
        "$dayOfYear",
        "$hour",
        "$minute",
        "$second",
        "$millisecond",
        "$round",
        "$trunc",
        "$ifNull",
        "$substr",
        "$substrBytes",
        "$substrCP",
        "$split",
        "$indexOfBytes",
        "$indexOfCP",
        "$indexOfArray",
        "$slice",
        "$range",
        "$sum",
        "$avg",
        "$min",
        "$max",
        "$getField",
        "$setField",
        "$unsetField",
        "$regexMatch",
        "$regexFind",
        "$regexFindAll",
        "$replaceOne",
        "$replaceAll",
        "$trim",
        "$ltrim",
        "$rtrim",
        "$convert",
        "$dateToString",
        "$sortArray",
        "$zip",
        "$rand",
    ];
    NAMES
        .iter()
        .find(|n| **n == name)
        .copied()
        .unwrap_or("$unknown")
}

fn parse_operator(name: &str, arg: Val<'_>, scope: &mut Scope<'_>) -> Result<Node, QueryError> {
    match name {
        "$literal" => return Ok(Node::Const(arg.to_bson())),
        "$cond" => return parse_cond(arg, scope),
        "$switch" => return parse_switch(arg, scope),
        "$let" => return parse_let(arg, scope),
        "$map" => return parse_map(arg, scope),
        "$filter" => return parse_filter(arg, scope),
        "$reduce" => return parse_reduce(arg, scope),
        "$rand" => {
            let ok = arg.as_doc().is_some_and(|d| d.is_empty())
                || arg.as_arr().is_some_and(|a| a.is_empty());
            if !ok {
                return Err(err(3040500, "$rand does not currently accept arguments"));
            }
            return Ok(Node::Op("$rand", Vec::new()));
        }
        _ => {}
    }
    if let Some((required, optional)) = named_args(name) {
        // $getField also accepts a plain field-name string.
        if name == "$getField" && arg.as_doc().is_none() {
            let field = parse(arg, scope)?;
            return Ok(Node::Named(
                static_name(name),
                vec![
                    ("field".into(), field),
                    ("input".into(), Node::Var(VarRef::Current, Vec::new())),
                ],
            ));
        }
        let Some(d) = arg.as_doc() else {
            return Err(err(
                if name.starts_with("$regex") {
                    51103
                } else {
                    34435
                },
                format!(
                    "{name} expects an object of named arguments but found: {}",
                    type_alias(arg.element_type())
                ),
            ));
        };
        let mut args = Vec::new();
        for (k, v) in d.iter() {
            if !required.contains(&k) && !optional.contains(&k) {
                return Err(err(34464, format!("{name} found an unknown argument: {k}")));
            }
            args.push((k.to_owned(), parse(v, scope)?));
        }
        for r in required {
            if !args.iter().any(|(k, _)| k == r) {
                return Err(err(34443, format!("{name} requires '{r}' to be specified")));
            }
        }
        if name == "$getField" && !args.iter().any(|(k, _)| k == "input") {
            args.push(("input".into(), Node::Var(VarRef::Current, Vec::new())));
        }
        return Ok(Node::Named(static_name(name), args));
    }
    let Some((min, max)) = positional_arity(name) else {
        return Err(QueryError::invalid_pipeline_operator(format!(
            "Unrecognized expression '{name}'"
        )));
    };
    let args: Vec<Node> = match arg.as_arr() {
        Some(a) => a
            .iter()
            .map(|v| parse(v, scope))
            .collect::<Result<Vec<_>, _>>()?,
        None => vec![parse(arg, scope)?],
    };
    // $sum/$avg/$min/$max with one array operand apply to its elements; with a list, to the list.
    if args.len() < min || args.len() > max {
        let expected = if min == max {
            format!("exactly {min}")
        } else if max == usize::MAX {
            format!("at least {min}")
        } else {
            format!("between {min} and {max}")
        };
        return Err(err(
            16020,
            format!(
                "Expression {name} takes {expected} arguments. {} were passed in.",
                args.len()
            ),
        ));
    }
    Ok(Node::Op(static_name(name), args))
}

fn parse_cond(arg: Val<'_>, scope: &mut Scope<'_>) -> Result<Node, QueryError> {
    let (i, t, e) = if let Some(a) = arg.as_arr() {
        let items: Vec<Val<'_>> = a.iter().collect();
        if items.len() != 3 {
            return Err(err(
                16020,
                format!(
                    "Expression $cond takes exactly 3 arguments. {} were passed in.",
                    items.len()
                ),
            ));
        }
        (items[0], items[1], items[2])
    } else if let Some(d) = arg.as_doc() {
        let (mut i, mut t, mut e) = (None, None, None);
        for (k, v) in d.iter() {
            match k {
                "if" => i = Some(v),
                "then" => t = Some(v),
                "else" => e = Some(v),
                other => {
                    return Err(err(
                        17083,
                        format!("Unrecognized parameter to $cond: {other}"),
                    ));
                }
            }
        }
        match (i, t, e) {
            (Some(i), Some(t), Some(e)) => (i, t, e),
            (None, _, _) => return Err(err(17080, "Missing 'if' parameter to $cond")),
            (_, None, _) => return Err(err(17081, "Missing 'then' parameter to $cond")),
            _ => return Err(err(17082, "Missing 'else' parameter to $cond")),
        }
    } else {
        return Err(err(
            16020,
            "Expression $cond takes exactly 3 arguments. 1 were passed in.",
        ));
    };
    Ok(Node::Cond(
        Box::new(parse(i, scope)?),
        Box::new(parse(t, scope)?),
        Box::new(parse(e, scope)?),
    ))
}

fn parse_switch(arg: Val<'_>, scope: &mut Scope<'_>) -> Result<Node, QueryError> {
    let d = arg
        .as_doc()
        .ok_or_else(|| err(40060, "$switch requires an object as an argument"))?;
    let mut branches = Vec::new();
    let mut default = None;
    for (k, v) in d.iter() {
        match k {
            "branches" => {
                let a = v
                    .as_arr()
                    .ok_or_else(|| err(40061, "$switch expected an array for 'branches'"))?;
                for b in a.iter() {
                    let bd = b.as_doc().ok_or_else(|| {
                        err(40062, "$switch expected each branch to be an object")
                    })?;
                    let (mut case, mut then) = (None, None);
                    for (bk, bv) in bd.iter() {
                        match bk {
                            "case" => case = Some(parse(bv, scope)?),
                            "then" => then = Some(parse(bv, scope)?),
                            other => {
                                return Err(err(
                                    40063,
                                    format!(
                                        "$switch found an unknown argument to a branch: {other}"
                                    ),
                                ));
                            }
                        }
                    }
                    let case = case.ok_or_else(|| {
                        err(
                            40064,
                            "$switch requires each branch have a 'case' expression",
                        )
                    })?;
                    let then = then.ok_or_else(|| {
                        err(
                            40065,
                            "$switch requires each branch have a 'then' expression.",
                        )
                    })?;
                    branches.push((case, then));
                }
            }
            "default" => default = Some(Box::new(parse(v, scope)?)),
            other => {
                return Err(err(
                    40067,
                    format!("$switch found an unknown argument: {other}"),
                ));
            }
        }
    }
    if branches.is_empty() {
        return Err(err(40068, "$switch requires at least one branch."));
    }
    Ok(Node::Switch(branches, default))
}

fn parse_let(arg: Val<'_>, scope: &mut Scope<'_>) -> Result<Node, QueryError> {
    let d = arg
        .as_doc()
        .ok_or_else(|| err(16874, "$let only supports an object as its argument"))?;
    let (mut vars, mut body) = (None, None);
    for (k, v) in d.iter() {
        match k {
            "vars" => vars = Some(v),
            "in" => body = Some(v),
            other => {
                return Err(err(
                    16875,
                    format!("Unrecognized parameter to $let: {other}"),
                ));
            }
        }
    }
    let vars = vars.ok_or_else(|| err(16876, "Missing 'vars' parameter to $let"))?;
    let body = body.ok_or_else(|| err(16877, "Missing 'in' parameter to $let"))?;
    let vd = vars
        .as_doc()
        .ok_or_else(|| err(10065, "invalid parameter: expected an object (vars)"))?;
    let mut bindings = Vec::new();
    for (name, v) in vd.iter() {
        validate_user_var_name(name)?;
        bindings.push((name.to_owned(), parse(v, scope)?));
    }
    let before = scope.locals.len();
    scope.locals.extend(bindings.iter().map(|(n, _)| n.clone()));
    let body = parse(body, scope);
    scope.locals.truncate(before);
    Ok(Node::Let(bindings, Box::new(body?)))
}

fn parse_scoped_args<'v>(
    op: &str,
    arg: Val<'v>,
    allowed: &[&str],
) -> Result<Vec<(&'v str, Val<'v>)>, QueryError> {
    let d = arg.as_doc().ok_or_else(|| {
        err(
            if op == "$map" { 16878 } else { 28646 },
            format!("{op} only supports an object as its argument"),
        )
    })?;
    let mut out = Vec::new();
    for (k, v) in d.iter() {
        if !allowed.contains(&k) {
            return Err(err(
                if op == "$map" { 16879 } else { 28647 },
                format!("Unrecognized parameter to {op}: {k}"),
            ));
        }
        out.push((k, v));
    }
    Ok(out)
}

fn get_arg<'v>(args: &[(&str, Val<'v>)], name: &str) -> Option<Val<'v>> {
    args.iter().find(|(k, _)| *k == name).map(|(_, v)| *v)
}

fn parse_map(arg: Val<'_>, scope: &mut Scope<'_>) -> Result<Node, QueryError> {
    let args = parse_scoped_args("$map", arg, &["input", "as", "in"])?;
    let input =
        get_arg(&args, "input").ok_or_else(|| err(16880, "Missing 'input' parameter to $map"))?;
    let body = get_arg(&args, "in").ok_or_else(|| err(16882, "Missing 'in' parameter to $map"))?;
    let var = match get_arg(&args, "as") {
        Some(v) => v.as_str().unwrap_or_default().to_owned(),
        None => "this".to_owned(),
    };
    if var != "this" {
        validate_user_var_name(&var)?;
    }
    let input = parse(input, scope)?;
    scope.locals.push(var.clone());
    let body = parse(body, scope);
    scope.locals.pop();
    Ok(Node::Map {
        input: Box::new(input),
        var,
        body: Box::new(body?),
    })
}

fn parse_filter(arg: Val<'_>, scope: &mut Scope<'_>) -> Result<Node, QueryError> {
    let args = parse_scoped_args("$filter", arg, &["input", "as", "cond", "limit"])?;
    let input = get_arg(&args, "input")
        .ok_or_else(|| err(28648, "Missing 'input' parameter to $filter"))?;
    let cond =
        get_arg(&args, "cond").ok_or_else(|| err(28650, "Missing 'cond' parameter to $filter"))?;
    let var = match get_arg(&args, "as") {
        Some(v) => v.as_str().unwrap_or_default().to_owned(),
        None => "this".to_owned(),
    };
    if var != "this" {
        validate_user_var_name(&var)?;
    }
    let input = parse(input, scope)?;
    let limit = match get_arg(&args, "limit") {
        Some(l) => Some(Box::new(parse(l, scope)?)),
        None => None,
    };
    scope.locals.push(var.clone());
    let cond = parse(cond, scope);
    scope.locals.pop();
    Ok(Node::Filter {
        input: Box::new(input),
        var,
        cond: Box::new(cond?),
        limit,
    })
}

fn parse_reduce(arg: Val<'_>, scope: &mut Scope<'_>) -> Result<Node, QueryError> {
    let args = parse_scoped_args("$reduce", arg, &["input", "initialValue", "in"])?;
    let input = get_arg(&args, "input")
        .ok_or_else(|| err(40077, "$reduce requires 'input' to be specified"))?;
    let initial = get_arg(&args, "initialValue")
        .ok_or_else(|| err(40078, "$reduce requires 'initialValue' to be specified"))?;
    let body =
        get_arg(&args, "in").ok_or_else(|| err(40079, "$reduce requires 'in' to be specified"))?;
    let input = parse(input, scope)?;
    let initial = parse(initial, scope)?;
    scope.locals.push("this".into());
    scope.locals.push("value".into());
    let body = parse(body, scope);
    scope.locals.truncate(scope.locals.len() - 2);
    Ok(Node::Reduce {
        input: Box::new(input),
        initial: Box::new(initial),
        body: Box::new(body?),
    })
}

// ---------------------------------------------------------------------------------------------
// Evaluation

struct Ctx<'a, 'v> {
    root: DocRef<'a>,
    vars: &'v Variables,
    locals: Vec<(String, Bson)>,
}

type R = Result<Option<Bson>, QueryError>;

/// Follows an expression field path: documents are descended, arrays map the rest of the path
/// over their elements (documents and nested arrays; other elements are dropped).
fn walk_path(v: Val<'_>, parts: &[String]) -> Option<Bson> {
    let Some((first, rest)) = parts.split_first() else {
        return Some(v.to_bson());
    };
    if let Some(d) = v.as_doc() {
        return d.get(first).and_then(|x| walk_path(x, rest));
    }
    if let Some(a) = v.as_arr() {
        let mut out = Vec::new();
        for e in a.iter() {
            if (e.as_doc().is_some() || e.as_arr().is_some())
                && let Some(x) = walk_path(e, parts)
            {
                out.push(x);
            }
        }
        return Some(Bson::Array(out));
    }
    None
}

fn walk_owned(v: &Bson, parts: &[String]) -> Option<Bson> {
    if parts.is_empty() {
        return Some(v.clone());
    }
    walk_path(Val::Owned(v), parts)
}

fn eval(node: &Node, ctx: &mut Ctx<'_, '_>) -> R {
    Ok(match node {
        Node::Const(b) => Some(b.clone()),
        Node::Field(parts) => {
            let (first, rest) = match parts.split_first() {
                Some(x) => x,
                None => return Ok(None),
            };
            ctx.root.get(first).and_then(|v| walk_path(v, rest))
        }
        Node::Var(r, parts) => match r {
            VarRef::Root | VarRef::Current => match parts.split_first() {
                None => Some(Bson::Document(ctx.root.to_document())),
                Some((first, rest)) => ctx.root.get(first).and_then(|v| walk_path(v, rest)),
            },
            VarRef::Now => walk_owned(&Bson::DateTime(ctx.vars.now()), parts),
            VarRef::ClusterTime => match ctx.vars.cluster_time() {
                Some(ts) => walk_owned(&Bson::Timestamp(ts), parts),
                None => {
                    return Err(err(
                        51144,
                        "Builtin variable '$$CLUSTER_TIME' is not available",
                    ));
                }
            },
            VarRef::Remove => None,
            VarRef::Descend => Some(Bson::String("descend".into())),
            VarRef::Prune => Some(Bson::String("prune".into())),
            VarRef::Keep => Some(Bson::String("keep".into())),
            VarRef::Named(name) => {
                let v = ctx
                    .locals
                    .iter()
                    .rev()
                    .find(|(n, _)| n == name)
                    .map(|(_, v)| v.clone())
                    .or_else(|| ctx.vars.get(name).cloned());
                match v {
                    Some(v) => walk_owned(&v, parts),
                    None => return Err(err(17276, format!("Use of undefined variable: {name}"))),
                }
            }
        },
        Node::Object(fields) => {
            let mut d = Document::new();
            for (k, n) in fields {
                if let Some(v) = eval(n, ctx)? {
                    d.insert(k.clone(), v);
                }
            }
            Some(Bson::Document(d))
        }
        Node::Array(items) => {
            let mut out = Vec::with_capacity(items.len());
            for n in items {
                // Missing values inside an array literal become null.
                out.push(eval(n, ctx)?.unwrap_or(Bson::Null));
            }
            Some(Bson::Array(out))
        }
        Node::Cond(i, t, e) => {
            if truthy(eval(i, ctx)?.as_ref()) {
                eval(t, ctx)?
            } else {
                eval(e, ctx)?
            }
        }
        Node::Switch(branches, default) => {
            for (case, then) in branches {
                if truthy(eval(case, ctx)?.as_ref()) {
                    return eval(then, ctx);
                }
            }
            match default {
                Some(d) => eval(d, ctx)?,
                None => {
                    return Err(err(
                        40066,
                        "$switch could not find a matching branch for an input, and no default was specified.",
                    ));
                }
            }
        }
        Node::Let(bindings, body) => {
            let mut values = Vec::with_capacity(bindings.len());
            for (n, e) in bindings {
                values.push((n.clone(), eval(e, ctx)?.unwrap_or(Bson::Null)));
            }
            let before = ctx.locals.len();
            ctx.locals.extend(values);
            let r = eval(body, ctx);
            ctx.locals.truncate(before);
            r?
        }
        Node::Map { input, var, body } => {
            let input = eval(input, ctx)?;
            match input {
                None | Some(Bson::Null | Bson::Undefined) => Some(Bson::Null),
                Some(Bson::Array(items)) => {
                    let mut out = Vec::with_capacity(items.len());
                    for item in items {
                        ctx.locals.push((var.clone(), item));
                        let r = eval(body, ctx);
                        ctx.locals.pop();
                        out.push(r?.unwrap_or(Bson::Null));
                    }
                    Some(Bson::Array(out))
                }
                Some(other) => {
                    return Err(err(
                        16883,
                        format!(
                            "input to $map must be an array not {}",
                            type_alias(other.element_type())
                        ),
                    ));
                }
            }
        }
        Node::Filter {
            input,
            var,
            cond,
            limit,
        } => {
            let input = eval(input, ctx)?;
            let limit = match limit {
                Some(l) => match eval(l, ctx)? {
                    None | Some(Bson::Null) => None,
                    Some(v) => {
                        match Num::from_bson(&v).and_then(|n| f64_to_i64_exact(n.to_f64())) {
                            Some(n) if n > 0 => Some(usize::try_from(n).unwrap_or(usize::MAX)),
                            _ => {
                                return Err(err(
                                    327392,
                                    format!("$filter: limit must be greater than 0: {v}"),
                                ));
                            }
                        }
                    }
                },
                None => None,
            };
            match input {
                None | Some(Bson::Null | Bson::Undefined) => Some(Bson::Null),
                Some(Bson::Array(items)) => {
                    let mut out = Vec::new();
                    for item in items {
                        if limit.is_some_and(|l| out.len() >= l) {
                            break;
                        }
                        ctx.locals.push((var.clone(), item.clone()));
                        let r = eval(cond, ctx);
                        ctx.locals.pop();
                        if truthy(r?.as_ref()) {
                            out.push(item);
                        }
                    }
                    Some(Bson::Array(out))
                }
                Some(other) => {
                    return Err(err(
                        28651,
                        format!(
                            "input to $filter must be an array not {}",
                            type_alias(other.element_type())
                        ),
                    ));
                }
            }
        }
        Node::Reduce {
            input,
            initial,
            body,
        } => {
            let input = eval(input, ctx)?;
            let mut acc = eval(initial, ctx)?.unwrap_or(Bson::Null);
            match input {
                None | Some(Bson::Null | Bson::Undefined) => Some(Bson::Null),
                Some(Bson::Array(items)) => {
                    for item in items {
                        ctx.locals.push(("this".into(), item));
                        ctx.locals.push(("value".into(), acc));
                        let r = eval(body, ctx);
                        ctx.locals.truncate(ctx.locals.len() - 2);
                        acc = r?.unwrap_or(Bson::Null);
                    }
                    Some(acc)
                }
                Some(other) => {
                    return Err(err(
                        40080,
                        format!(
                            "$reduce requires an array as 'input', found: {}",
                            type_alias(other.element_type())
                        ),
                    ));
                }
            }
        }
        Node::Op(name, args) => return eval_op(name, args, ctx),
        Node::Named(name, args) => return eval_named(name, args, ctx),
    })
}

fn eval_args(args: &[Node], ctx: &mut Ctx<'_, '_>) -> Result<Vec<Option<Bson>>, QueryError> {
    args.iter().map(|a| eval(a, ctx)).collect()
}

fn nullish(v: Option<&Bson>) -> bool {
    matches!(v, None | Some(Bson::Null | Bson::Undefined))
}

fn num_of(v: &Bson) -> Option<Num> {
    Num::from_bson(v)
}

fn type_of(v: Option<&Bson>) -> &'static str {
    match v {
        None => "missing",
        Some(b) => type_alias(b.element_type()),
    }
}

fn eval_op(name: &str, args: &[Node], ctx: &mut Ctx<'_, '_>) -> R {
    // Short-circuiting operators evaluate lazily.
    match name {
        "$and" => {
            for a in args {
                if !truthy(eval(a, ctx)?.as_ref()) {
                    return Ok(Some(Bson::Boolean(false)));
                }
            }
            return Ok(Some(Bson::Boolean(true)));
        }
        "$or" => {
            for a in args {
                if truthy(eval(a, ctx)?.as_ref()) {
                    return Ok(Some(Bson::Boolean(true)));
                }
            }
            return Ok(Some(Bson::Boolean(false)));
        }
        "$ifNull" => {
            let (last, firsts) = match args.split_last() {
                Some(x) => x,
                None => return Ok(None),
            };
            for a in firsts {
                let v = eval(a, ctx)?;
                if !nullish(v.as_ref()) {
                    return Ok(v);
                }
            }
            return eval(last, ctx);
        }
        "$rand" => return Ok(Some(Bson::Double(rand::random::<f64>()))),
        _ => {}
    }
    let v = eval_args(args, ctx)?;
    let arg = |i: usize| v.get(i).cloned().flatten();
    Ok(match name {
        "$add" => {
            let mut acc: Num = Num::I32(0);
            let mut date: Option<i64> = None;
            for x in &v {
                match x {
                    None | Some(Bson::Null | Bson::Undefined) => return Ok(Some(Bson::Null)),
                    Some(Bson::DateTime(d)) => {
                        if date.is_some() {
                            return Err(err(16612, "only one date allowed in an $add expression"));
                        }
                        date = Some(d.timestamp_millis());
                    }
                    Some(b) => {
                        let Some(n) = num_of(b) else {
                            return Err(QueryError::type_mismatch(format!(
                                "$add only supports numeric or date types, not {}",
                                type_alias(b.element_type())
                            )));
                        };
                        acc = arith(ArithOp::Add, acc, n)
                            .unwrap_or_else(|| Num::F64(acc.to_f64() + n.to_f64()));
                    }
                }
            }
            match date {
                Some(ms) => {
                    let add = match acc {
                        Num::I32(i) => i64::from(i),
                        Num::I64(i) => i,
                        other => other.to_f64().round() as i64,
                    };
                    Some(Bson::DateTime(DateTime::from_millis(
                        ms.saturating_add(add),
                    )))
                }
                None => Some(acc.to_bson()),
            }
        }
        "$multiply" => {
            let mut acc = Num::I32(1);
            for x in &v {
                match x {
                    None | Some(Bson::Null | Bson::Undefined) => return Ok(Some(Bson::Null)),
                    Some(b) => {
                        let Some(n) = num_of(b) else {
                            return Err(QueryError::type_mismatch(format!(
                                "$multiply only supports numeric types, not {}",
                                type_alias(b.element_type())
                            )));
                        };
                        acc = arith(ArithOp::Mul, acc, n)
                            .unwrap_or_else(|| Num::F64(acc.to_f64() * n.to_f64()));
                    }
                }
            }
            Some(acc.to_bson())
        }
        "$subtract" => {
            let (a, b) = (arg(0), arg(1));
            if nullish(a.as_ref()) || nullish(b.as_ref()) {
                return Ok(Some(Bson::Null));
            }
            match (a, b) {
                (Some(Bson::DateTime(x)), Some(Bson::DateTime(y))) => Some(Bson::Int64(
                    x.timestamp_millis().saturating_sub(y.timestamp_millis()),
                )),
                (Some(Bson::DateTime(x)), Some(n)) if num_of(&n).is_some() => {
                    let n = num_of(&n).map(Num::to_f64).unwrap_or(0.0);
                    Some(Bson::DateTime(DateTime::from_millis(
                        x.timestamp_millis().saturating_sub(n.round() as i64),
                    )))
                }
                (Some(x), Some(y)) => match (num_of(&x), num_of(&y)) {
                    (Some(p), Some(q)) => Some(
                        arith(ArithOp::Sub, p, q)
                            .unwrap_or_else(|| Num::F64(p.to_f64() - q.to_f64()))
                            .to_bson(),
                    ),
                    _ => {
                        return Err(QueryError::type_mismatch(format!(
                            "can't $subtract {} from {}",
                            type_alias(y.element_type()),
                            type_alias(x.element_type())
                        )));
                    }
                },
                _ => Some(Bson::Null),
            }
        }
        "$divide" => {
            let (a, b) = (arg(0), arg(1));
            if nullish(a.as_ref()) || nullish(b.as_ref()) {
                return Ok(Some(Bson::Null));
            }
            let (Some(p), Some(q)) = (a.as_ref().and_then(num_of), b.as_ref().and_then(num_of))
            else {
                return Err(QueryError::type_mismatch(format!(
                    "$divide only supports numeric types, not {} and {}",
                    type_of(a.as_ref()),
                    type_of(b.as_ref())
                )));
            };
            if q.is_zero() {
                return Err(err(2, "can't $divide by zero").with_bad_value());
            }
            match (p, q) {
                (Num::Dec(_), _) | (_, Num::Dec(_)) => Some(Bson::Decimal128(decimal_divide(p, q))),
                _ => Some(Bson::Double(p.to_f64() / q.to_f64())),
            }
        }
        "$mod" => {
            let (a, b) = (arg(0), arg(1));
            if nullish(a.as_ref()) || nullish(b.as_ref()) {
                return Ok(Some(Bson::Null));
            }
            let (Some(p), Some(q)) = (a.as_ref().and_then(num_of), b.as_ref().and_then(num_of))
            else {
                return Err(err(
                    16611,
                    format!(
                        "$mod only supports numeric types, not {} and {}",
                        type_of(a.as_ref()),
                        type_of(b.as_ref())
                    ),
                ));
            };
            if q.is_zero() {
                return Err(err(16610, "can't $mod by zero"));
            }
            match (p, q) {
                (Num::I32(x), Num::I32(y)) => Some(Bson::Int32(x.wrapping_rem(y))),
                (Num::I32(_) | Num::I64(_), Num::I32(_) | Num::I64(_)) => {
                    let x = int_of(p);
                    let y = int_of(q);
                    Some(Bson::Int64(x.wrapping_rem(y)))
                }
                _ => Some(Bson::Double(p.to_f64() % q.to_f64())),
            }
        }
        "$abs" | "$ceil" | "$floor" | "$sqrt" | "$exp" | "$ln" | "$log10" => {
            let a = arg(0);
            if nullish(a.as_ref()) {
                return Ok(Some(Bson::Null));
            }
            let Some(n) = a.as_ref().and_then(num_of) else {
                return Err(err(
                    28765,
                    format!(
                        "{name} only supports numeric types, not {}",
                        type_of(a.as_ref())
                    ),
                ));
            };
            match (name, n) {
                ("$abs", Num::I32(i)) => Some(
                    i.checked_abs()
                        .map_or(Bson::Int64(i64::from(i).abs()), Bson::Int32),
                ),
                ("$abs", Num::I64(i)) => match i.checked_abs() {
                    Some(x) => Some(Bson::Int64(x)),
                    None => return Err(err(28680, "can't take $abs of long long min")),
                },
                ("$ceil" | "$floor", Num::I32(_) | Num::I64(_)) => Some(n.to_bson()),
                _ => {
                    let x = n.to_f64();
                    if matches!(name, "$sqrt" | "$ln" | "$log10") && x < 0.0 {
                        return Err(err(
                            if name == "$sqrt" { 28714 } else { 28766 },
                            format!("{name}'s argument must be greater than or equal to 0"),
                        ));
                    }
                    let r = match name {
                        "$abs" => x.abs(),
                        "$ceil" => x.ceil(),
                        "$floor" => x.floor(),
                        "$sqrt" => x.sqrt(),
                        "$exp" => x.exp(),
                        "$ln" => x.ln(),
                        _ => x.log10(),
                    };
                    if matches!(n, Num::Dec(_)) {
                        Some(Bson::Decimal128(Num::F64(r).to_dec()))
                    } else {
                        Some(Bson::Double(r))
                    }
                }
            }
        }
        "$pow" | "$log" => {
            let (a, b) = (arg(0), arg(1));
            if nullish(a.as_ref()) || nullish(b.as_ref()) {
                return Ok(Some(Bson::Null));
            }
            let (Some(p), Some(q)) = (a.as_ref().and_then(num_of), b.as_ref().and_then(num_of))
            else {
                return Err(err(
                    28762,
                    format!(
                        "{name} only supports numeric types, not {} and {}",
                        type_of(a.as_ref()),
                        type_of(b.as_ref())
                    ),
                ));
            };
            if name == "$log" {
                Some(Bson::Double(p.to_f64().ln() / q.to_f64().ln()))
            } else {
                match (p, q) {
                    (Num::I32(_) | Num::I64(_), Num::I32(_) | Num::I64(_)) if int_of(q) >= 0 => {
                        let base = int_of(p);
                        let exp = u32::try_from(int_of(q)).unwrap_or(u32::MAX);
                        match base.checked_pow(exp) {
                            Some(r) => {
                                if matches!((p, q), (Num::I32(_), Num::I32(_))) {
                                    Some(i32::try_from(r).map_or(Bson::Int64(r), Bson::Int32))
                                } else {
                                    Some(Bson::Int64(r))
                                }
                            }
                            None => Some(Bson::Double(p.to_f64().powf(q.to_f64()))),
                        }
                    }
                    (Num::I32(_) | Num::I64(_), _) if p.is_zero() && q.to_f64() < 0.0 => {
                        return Err(err(
                            28764,
                            "$pow cannot take a base of 0 and a negative exponent",
                        ));
                    }
                    _ => Some(Bson::Double(p.to_f64().powf(q.to_f64()))),
                }
            }
        }
        "$round" | "$trunc" => {
            let a = arg(0);
            if nullish(a.as_ref()) {
                return Ok(Some(Bson::Null));
            }
            let places = match arg(1) {
                None => 0,
                Some(p) => num_of(&p)
                    .and_then(|n| f64_to_i64_exact(n.to_f64()))
                    .unwrap_or(0),
            };
            let Some(n) = a.as_ref().and_then(num_of) else {
                return Err(err(
                    51081,
                    format!(
                        "{name} only supports numeric types, not {}",
                        type_of(a.as_ref())
                    ),
                ));
            };
            let round = |x: f64| -> f64 {
                let factor = 10f64.powi(i32::try_from(places).unwrap_or(0));
                let y = x * factor;
                let r = if name == "$trunc" {
                    y.trunc()
                } else {
                    // Round half to even, as mongod does.
                    let r = y.round();
                    if (y - y.trunc()).abs() == 0.5 && r % 2.0 != 0.0 {
                        r - y.signum()
                    } else {
                        r
                    }
                };
                r / factor
            };
            match n {
                Num::I32(_) | Num::I64(_) if places >= 0 => Some(n.to_bson()),
                Num::I32(i) => Some(Bson::Int32(round(f64::from(i)) as i32)),
                Num::I64(i) => Some(Bson::Int64(round(i as f64) as i64)),
                Num::F64(x) => Some(Bson::Double(round(x))),
                Num::Dec(_) => Some(Bson::Decimal128(Num::F64(round(n.to_f64())).to_dec())),
            }
        }
        "$eq" | "$ne" | "$gt" | "$gte" | "$lt" | "$lte" | "$cmp" => {
            let (a, b) = (arg(0), arg(1));
            let o = cmp_opt(a.as_ref(), b.as_ref());
            Some(match name {
                "$eq" => Bson::Boolean(o == Ordering::Equal),
                "$ne" => Bson::Boolean(o != Ordering::Equal),
                "$gt" => Bson::Boolean(o == Ordering::Greater),
                "$gte" => Bson::Boolean(o != Ordering::Less),
                "$lt" => Bson::Boolean(o == Ordering::Less),
                "$lte" => Bson::Boolean(o != Ordering::Greater),
                _ => Bson::Int32(match o {
                    Ordering::Less => -1,
                    Ordering::Equal => 0,
                    Ordering::Greater => 1,
                }),
            })
        }
        "$not" => Some(Bson::Boolean(!truthy(arg(0).as_ref()))),
        "$concat" => {
            let mut s = String::new();
            for x in &v {
                match x {
                    None | Some(Bson::Null | Bson::Undefined) => return Ok(Some(Bson::Null)),
                    Some(Bson::String(p)) => s.push_str(p),
                    Some(other) => {
                        return Err(err(
                            16702,
                            format!(
                                "$concat only supports strings, not {}",
                                type_alias(other.element_type())
                            ),
                        ));
                    }
                }
            }
            Some(Bson::String(s))
        }
        "$toLower" | "$toUpper" => {
            let s = string_coerce(arg(0).as_ref(), name)?;
            Some(Bson::String(if name == "$toLower" {
                s.to_ascii_lowercase()
            } else {
                s.to_ascii_uppercase()
            }))
        }
        "$strLenBytes" | "$strLenCP" => match arg(0) {
            Some(Bson::String(s)) => Some(Bson::Int32(
                i32::try_from(if name == "$strLenBytes" {
                    s.len()
                } else {
                    s.chars().count()
                })
                .unwrap_or(i32::MAX),
            )),
            other => {
                return Err(err(
                    if name == "$strLenBytes" { 34473 } else { 34471 },
                    format!(
                        "{name} requires a string argument, found: {}",
                        type_of(other.as_ref())
                    ),
                ));
            }
        },
        "$substr" | "$substrBytes" | "$substrCP" => {
            let s = string_coerce(arg(0).as_ref(), name)?;
            let start = arg(1)
                .as_ref()
                .and_then(num_of)
                .map(|n| n.to_f64())
                .unwrap_or(0.0);
            let len = arg(2)
                .as_ref()
                .and_then(num_of)
                .map(|n| n.to_f64())
                .unwrap_or(0.0);
            let start = if start < 0.0 {
                usize::MAX
            } else {
                start as usize
            };
            let len = if len < 0.0 { usize::MAX } else { len as usize };
            if name == "$substrCP" {
                Some(Bson::String(s.chars().skip(start).take(len).collect()))
            } else {
                let bytes = s.as_bytes();
                let st = start.min(bytes.len());
                let en = st.saturating_add(len).min(bytes.len());
                match std::str::from_utf8(&bytes[st..en]) {
                    Ok(x) => Some(Bson::String(x.to_owned())),
                    Err(_) => {
                        return Err(err(
                            28656,
                            format!(
                                "{name}:  Invalid range, starting index is a UTF-8 continuation byte."
                            ),
                        ));
                    }
                }
            }
        }
        "$split" => {
            let (a, b) = (arg(0), arg(1));
            if nullish(a.as_ref()) {
                return Ok(Some(Bson::Null));
            }
            match (a, b) {
                (Some(Bson::String(s)), Some(Bson::String(sep))) => {
                    if sep.is_empty() {
                        return Err(err(40087, "$split requires a non-empty separator"));
                    }
                    Some(Bson::Array(
                        s.split(sep.as_str())
                            .map(|p| Bson::String(p.to_owned()))
                            .collect(),
                    ))
                }
                (Some(Bson::String(_)), other) => {
                    return Err(err(
                        40086,
                        format!(
                            "$split requires an expression that evaluates to a string as a second argument, found: {}",
                            type_of(other.as_ref())
                        ),
                    ));
                }
                (other, _) => {
                    return Err(err(
                        40085,
                        format!(
                            "$split requires an expression that evaluates to a string as a first argument, found: {}",
                            type_of(other.as_ref())
                        ),
                    ));
                }
            }
        }
        "$strcasecmp" => {
            let a = string_coerce(arg(0).as_ref(), name)?.to_ascii_lowercase();
            let b = string_coerce(arg(1).as_ref(), name)?.to_ascii_lowercase();
            Some(Bson::Int32(match a.cmp(&b) {
                Ordering::Less => -1,
                Ordering::Equal => 0,
                Ordering::Greater => 1,
            }))
        }
        "$indexOfBytes" | "$indexOfCP" => {
            let a = arg(0);
            if nullish(a.as_ref()) {
                return Ok(Some(Bson::Null));
            }
            let (Some(Bson::String(s)), Some(Bson::String(sub))) = (a, arg(1)) else {
                return Err(err(
                    40091,
                    format!("{name} requires a string as the first and second argument"),
                ));
            };
            let start = arg(2)
                .as_ref()
                .and_then(num_of)
                .map_or(0, |n| n.to_f64().max(0.0) as usize);
            let end = arg(3)
                .as_ref()
                .and_then(num_of)
                .map(|n| n.to_f64().max(0.0) as usize);
            let r = if name == "$indexOfBytes" {
                let end = end.unwrap_or(s.len()).min(s.len());
                if start > end {
                    -1
                } else {
                    s.as_bytes()
                        .get(start..end)
                        .and_then(|hay| find_bytes(hay, sub.as_bytes()))
                        .map_or(-1, |p| i64::try_from(p + start).unwrap_or(-1))
                }
            } else {
                let chars: Vec<char> = s.chars().collect();
                let subc: Vec<char> = sub.chars().collect();
                let end = end.unwrap_or(chars.len()).min(chars.len());
                let mut found = -1i64;
                let mut i = start;
                while i + subc.len() <= end {
                    if chars.get(i..i + subc.len()) == Some(&subc[..]) {
                        found = i64::try_from(i).unwrap_or(-1);
                        break;
                    }
                    i += 1;
                }
                found
            };
            Some(Bson::Int32(i32::try_from(r).unwrap_or(-1)))
        }
        "$size" => match arg(0) {
            Some(Bson::Array(a)) => Some(Bson::Int32(i32::try_from(a.len()).unwrap_or(i32::MAX))),
            other => {
                return Err(err(
                    17124,
                    format!(
                        "The argument to $size must be an array, but was of type: {}",
                        type_of(other.as_ref())
                    ),
                ));
            }
        },
        "$isArray" => Some(Bson::Boolean(matches!(arg(0), Some(Bson::Array(_))))),
        "$arrayElemAt" => {
            let (a, i) = (arg(0), arg(1));
            if nullish(a.as_ref()) || nullish(i.as_ref()) {
                return Ok(Some(Bson::Null));
            }
            let Some(Bson::Array(items)) = a else {
                return Err(err(
                    28689,
                    format!(
                        "$arrayElemAt's first argument must be an array, but is {}",
                        type_of(a.as_ref())
                    ),
                ));
            };
            let Some(idx) = i
                .as_ref()
                .and_then(num_of)
                .and_then(|n| f64_to_i64_exact(n.to_f64()))
            else {
                return Err(err(
                    28690,
                    format!(
                        "$arrayElemAt's second argument must be a numeric value, but is {}",
                        type_of(i.as_ref())
                    ),
                ));
            };
            elem_at(&items, idx)
        }
        "$first" | "$last" => match arg(0) {
            None => None,
            Some(Bson::Null | Bson::Undefined) => Some(Bson::Null),
            Some(Bson::Array(items)) => {
                if name == "$first" {
                    items.into_iter().next()
                } else {
                    items.into_iter().next_back()
                }
            }
            other => {
                return Err(err(
                    28689,
                    format!(
                        "{name}'s argument must be an array, but is {}",
                        type_of(other.as_ref())
                    ),
                ));
            }
        },
        "$in" => match arg(1) {
            Some(Bson::Array(items)) => {
                let x = arg(0).unwrap_or(Bson::Null);
                Some(Bson::Boolean(
                    items.iter().any(|i| compare_bson(i, &x).is_eq()),
                ))
            }
            other => {
                return Err(err(
                    40081,
                    format!(
                        "$in requires an array as a second argument, found: {}",
                        type_of(other.as_ref())
                    ),
                ));
            }
        },
        "$concatArrays" => {
            let mut out = Vec::new();
            for x in v {
                match x {
                    None | Some(Bson::Null | Bson::Undefined) => return Ok(Some(Bson::Null)),
                    Some(Bson::Array(a)) => out.extend(a),
                    Some(other) => {
                        return Err(err(
                            28664,
                            format!(
                                "$concatArrays only supports arrays, not {}",
                                type_alias(other.element_type())
                            ),
                        ));
                    }
                }
            }
            Some(Bson::Array(out))
        }
        "$reverseArray" => match arg(0) {
            None | Some(Bson::Null | Bson::Undefined) => Some(Bson::Null),
            Some(Bson::Array(mut a)) => {
                a.reverse();
                Some(Bson::Array(a))
            }
            other => {
                return Err(err(
                    34435,
                    format!(
                        "The argument to $reverseArray must be an array, but was of type: {}",
                        type_of(other.as_ref())
                    ),
                ));
            }
        },
        "$slice" => {
            let a = arg(0);
            if nullish(a.as_ref()) {
                return Ok(Some(Bson::Null));
            }
            let Some(Bson::Array(items)) = a else {
                return Err(err(
                    28724,
                    format!(
                        "First argument to $slice must be an array, but is of type: {}",
                        type_of(a.as_ref())
                    ),
                ));
            };
            let n1 = arg(1)
                .as_ref()
                .and_then(num_of)
                .and_then(|n| f64_to_i64_exact(n.to_f64()));
            let n2 = arg(2)
                .as_ref()
                .and_then(num_of)
                .and_then(|n| f64_to_i64_exact(n.to_f64()));
            let len = i64::try_from(items.len()).unwrap_or(i64::MAX);
            let (start, count) = match (n1, v.len()) {
                (Some(n), 2) => {
                    if n >= 0 {
                        (0, n)
                    } else {
                        (len.saturating_add(n).max(0), len)
                    }
                }
                (Some(pos), _) => {
                    let count = n2.unwrap_or(0);
                    if count <= 0 {
                        return Err(err(
                            28729,
                            format!("Third argument to $slice must be positive: {count}"),
                        ));
                    }
                    let start = if pos >= 0 {
                        pos.min(len)
                    } else {
                        len.saturating_add(pos).max(0)
                    };
                    (start, count)
                }
                _ => {
                    return Err(err(
                        28725,
                        "Second argument to $slice must be a numeric value",
                    ));
                }
            };
            let start = usize::try_from(start).unwrap_or(0);
            let count = usize::try_from(count).unwrap_or(0);
            Some(Bson::Array(
                items.into_iter().skip(start).take(count).collect(),
            ))
        }
        "$indexOfArray" => {
            let a = arg(0);
            if nullish(a.as_ref()) {
                return Ok(Some(Bson::Null));
            }
            let Some(Bson::Array(items)) = a else {
                return Err(err(
                    40090,
                    format!(
                        "$indexOfArray requires an array as a first argument, found: {}",
                        type_of(a.as_ref())
                    ),
                ));
            };
            let needle = arg(1).unwrap_or(Bson::Null);
            let start = arg(2)
                .as_ref()
                .and_then(num_of)
                .map_or(0, |n| n.to_f64().max(0.0) as usize);
            let end = arg(3)
                .as_ref()
                .and_then(num_of)
                .map_or(items.len(), |n| n.to_f64().max(0.0) as usize)
                .min(items.len());
            let pos = (start..end).find(|i| {
                items
                    .get(*i)
                    .is_some_and(|x| compare_bson(x, &needle).is_eq())
            });
            Some(Bson::Int32(
                pos.map_or(-1, |p| i32::try_from(p).unwrap_or(-1)),
            ))
        }
        "$range" => {
            let int = |x: &Option<Bson>, what: &str| -> Result<i64, QueryError> {
                x.as_ref()
                    .and_then(num_of)
                    .and_then(|n| f64_to_i64_exact(n.to_f64()))
                    .ok_or_else(|| err(34443, format!("$range requires a numeric {what} value")))
            };
            let start = int(&arg(0), "starting")?;
            let end = int(&arg(1), "ending")?;
            let step = if v.len() > 2 {
                int(&arg(2), "step")?
            } else {
                1
            };
            if step == 0 {
                return Err(err(34449, "$range requires a non-zero step value"));
            }
            let mut out = Vec::new();
            let mut i = start;
            while (step > 0 && i < end) || (step < 0 && i > end) {
                out.push(Bson::Int32(i32::try_from(i).unwrap_or(i32::MAX)));
                if out.len() > 10_000_000 {
                    return Err(err(5175606, "$range would use too much memory"));
                }
                i = i.saturating_add(step);
            }
            Some(Bson::Array(out))
        }
        "$allElementsTrue" | "$anyElementTrue" => match arg(0) {
            Some(Bson::Array(items)) => Some(Bson::Boolean(if name == "$allElementsTrue" {
                items.iter().all(|x| truthy(Some(x)))
            } else {
                items.iter().any(|x| truthy(Some(x)))
            })),
            other => {
                return Err(err(
                    17040,
                    format!(
                        "{name}'s argument must be an array, but is {}",
                        type_of(other.as_ref())
                    ),
                ));
            }
        },
        "$setUnion" | "$setIntersection" | "$setDifference" | "$setEquals" | "$setIsSubset" => {
            let mut sets = Vec::new();
            for x in v {
                match x {
                    None | Some(Bson::Null | Bson::Undefined)
                        if matches!(name, "$setUnion" | "$setIntersection" | "$setDifference") =>
                    {
                        return Ok(Some(Bson::Null));
                    }
                    Some(Bson::Array(a)) => sets.push(dedup(a)),
                    other => {
                        return Err(err(
                            17044,
                            format!(
                                "All operands of {name} must be arrays. One argument is of type: {}",
                                type_of(other.as_ref())
                            ),
                        ));
                    }
                }
            }
            let contains = |s: &[Bson], x: &Bson| s.iter().any(|y| compare_bson(x, y).is_eq());
            match name {
                "$setUnion" => Some(Bson::Array(dedup(sets.into_iter().flatten().collect()))),
                "$setIntersection" => {
                    let mut it = sets.into_iter();
                    let first = it.next().unwrap_or_default();
                    let rest: Vec<Vec<Bson>> = it.collect();
                    Some(Bson::Array(
                        first
                            .into_iter()
                            .filter(|x| rest.iter().all(|s| contains(s, x)))
                            .collect(),
                    ))
                }
                "$setDifference" => {
                    let (a, b) = (
                        sets.first().cloned().unwrap_or_default(),
                        sets.get(1).cloned().unwrap_or_default(),
                    );
                    Some(Bson::Array(
                        a.into_iter().filter(|x| !contains(&b, x)).collect(),
                    ))
                }
                "$setEquals" => {
                    let first = sets.first().cloned().unwrap_or_default();
                    Some(Bson::Boolean(sets.iter().all(|s| {
                        s.len() == first.len() && s.iter().all(|x| contains(&first, x))
                    })))
                }
                _ => {
                    let (a, b) = (
                        sets.first().cloned().unwrap_or_default(),
                        sets.get(1).cloned().unwrap_or_default(),
                    );
                    Some(Bson::Boolean(a.iter().all(|x| contains(&b, x))))
                }
            }
        }
        "$objectToArray" => match arg(0) {
            None | Some(Bson::Null | Bson::Undefined) => Some(Bson::Null),
            Some(Bson::Document(d)) => Some(Bson::Array(
                d.into_iter()
                    .map(|(k, v)| {
                        let mut e = Document::new();
                        e.insert("k", k);
                        e.insert("v", v);
                        Bson::Document(e)
                    })
                    .collect(),
            )),
            other => {
                return Err(err(
                    40390,
                    format!(
                        "$objectToArray requires a document input, found: {}",
                        type_of(other.as_ref())
                    ),
                ));
            }
        },
        "$arrayToObject" => match arg(0) {
            None | Some(Bson::Null | Bson::Undefined) => Some(Bson::Null),
            Some(Bson::Array(items)) => Some(Bson::Document(array_to_object(items)?)),
            other => {
                return Err(err(
                    40386,
                    format!(
                        "$arrayToObject requires an array input, found: {}",
                        type_of(other.as_ref())
                    ),
                ));
            }
        },
        "$mergeObjects" => {
            let mut out = Document::new();
            for x in v {
                match x {
                    None | Some(Bson::Null | Bson::Undefined) => {}
                    Some(Bson::Document(d)) => {
                        for (k, val) in d {
                            out.insert(k, val);
                        }
                    }
                    Some(other) => {
                        return Err(err(
                            40400,
                            format!(
                                "$mergeObjects requires object inputs, but input {} is of type {}",
                                show(&other),
                                type_alias(other.element_type())
                            ),
                        ));
                    }
                }
            }
            Some(Bson::Document(out))
        }
        "$type" => Some(Bson::String(type_of(arg(0).as_ref()).to_owned())),
        "$isNumber" => Some(Bson::Boolean(arg(0).as_ref().and_then(num_of).is_some())),
        "$toString" | "$toInt" | "$toLong" | "$toDouble" | "$toDecimal" | "$toBool"
        | "$toObjectId" | "$toDate" => {
            let target = match name {
                "$toString" => "string",
                "$toInt" => "int",
                "$toLong" => "long",
                "$toDouble" => "double",
                "$toDecimal" => "decimal",
                "$toBool" => "bool",
                "$toObjectId" => "objectId",
                _ => "date",
            };
            let a = arg(0);
            if nullish(a.as_ref()) {
                return Ok(Some(Bson::Null));
            }
            Some(convert(a.unwrap_or(Bson::Null), target)?)
        }
        "$year" | "$month" | "$dayOfMonth" | "$dayOfWeek" | "$dayOfYear" | "$hour" | "$minute"
        | "$second" | "$millisecond" => {
            let a = arg(0);
            if nullish(a.as_ref()) {
                return Ok(Some(Bson::Null));
            }
            let ms = match &a {
                Some(Bson::DateTime(d)) => d.timestamp_millis(),
                Some(Bson::Timestamp(t)) => i64::from(t.time) * 1000,
                Some(Bson::ObjectId(o)) => o.timestamp().timestamp_millis() / 1000 * 1000,
                Some(Bson::Document(d)) => match d.get("date") {
                    Some(Bson::DateTime(x)) => x.timestamp_millis(),
                    _ => {
                        return Err(err(16006, "can't convert from BSON type object to Date"));
                    }
                },
                other => {
                    return Err(err(
                        16006,
                        format!(
                            "can't convert from BSON type {} to Date",
                            type_of(other.as_ref())
                        ),
                    ));
                }
            };
            let c = civil(ms);
            Some(Bson::Int32(match name {
                "$year" => c.year,
                "$month" => c.month,
                "$dayOfMonth" => c.day,
                "$dayOfWeek" => c.weekday,
                "$dayOfYear" => c.yday,
                "$hour" => c.hour,
                "$minute" => c.minute,
                "$second" => c.second,
                _ => c.millis,
            }))
        }
        "$sum" | "$avg" | "$min" | "$max" => {
            let items: Vec<Bson> = if v.len() == 1 {
                match arg(0) {
                    Some(Bson::Array(a)) => a,
                    Some(x) => vec![x],
                    None => Vec::new(),
                }
            } else {
                v.into_iter().flatten().collect()
            };
            match name {
                "$sum" => Some(sum_values(items.iter())),
                "$avg" => avg_values(items.iter()),
                _ => {
                    let mut best: Option<Bson> = None;
                    for x in items {
                        if matches!(x, Bson::Null | Bson::Undefined) {
                            continue;
                        }
                        let better = match &best {
                            None => true,
                            Some(b) => {
                                let o = compare_bson(&x, b);
                                if name == "$min" { o.is_lt() } else { o.is_gt() }
                            }
                        };
                        if better {
                            best = Some(x);
                        }
                    }
                    Some(best.unwrap_or(Bson::Null))
                }
            }
        }
        _ => {
            return Err(QueryError::invalid_pipeline_operator(format!(
                "Unrecognized expression '{name}'"
            )));
        }
    })
}

trait WithBadValue {
    fn with_bad_value(self) -> Self;
}

impl WithBadValue for QueryError {
    /// `$divide` by zero is a plain BadValue in mongod 7.0.
    fn with_bad_value(self) -> Self {
        QueryError::bad_value(self.message)
    }
}

fn int_of(n: Num) -> i64 {
    match n {
        Num::I32(i) => i64::from(i),
        Num::I64(i) => i,
        other => other.to_f64() as i64,
    }
}

fn decimal_divide(p: Num, q: Num) -> bson::Decimal128 {
    // Decimal division via doubles is not exact; mongod divides in decimal. Use an exact path
    // when the divisor is a power of ten or one, otherwise fall back to 34-digit rounding of
    // the double quotient.
    let _ = dec_arith;
    Num::F64(p.to_f64() / q.to_f64()).to_dec()
}

fn cmp_opt(a: Option<&Bson>, b: Option<&Bson>) -> Ordering {
    // Missing compares as less than null? mongod treats missing like undefined (lowest after
    // MinKey) in expression comparisons.
    match (a, b) {
        (None, None) => Ordering::Equal,
        (None, Some(y)) => cmp_val(Val::Owned(&Bson::Undefined), Val::Owned(y)),
        (Some(x), None) => cmp_val(Val::Owned(x), Val::Owned(&Bson::Undefined)),
        (Some(x), Some(y)) => compare_bson(x, y),
    }
}

fn string_coerce(v: Option<&Bson>, _op: &str) -> Result<String, QueryError> {
    Ok(match v {
        None | Some(Bson::Null | Bson::Undefined) => String::new(),
        Some(Bson::String(s) | Bson::Symbol(s)) => s.clone(),
        Some(Bson::Int32(i)) => i.to_string(),
        Some(Bson::Int64(i)) => i.to_string(),
        Some(Bson::Double(d)) => format_double(*d),
        Some(Bson::Decimal128(d)) => d.to_string(),
        Some(Bson::DateTime(d)) => d.try_to_rfc3339_string().unwrap_or_default(),
        Some(Bson::Timestamp(t)) => format!("Timestamp({}, {})", t.time, t.increment),
        Some(other) => {
            return Err(err(
                16007,
                format!(
                    "can't convert from BSON type {} to String",
                    type_alias(other.element_type())
                ),
            ));
        }
    })
}

fn format_double(d: f64) -> String {
    if d.is_nan() {
        "NaN".into()
    } else if d.is_infinite() {
        if d > 0.0 {
            "Infinity".into()
        } else {
            "-Infinity".into()
        }
    } else if d == d.trunc() && d.abs() < 1e15 {
        format!("{}", d as i64)
    } else {
        format!("{d}")
    }
}

fn find_bytes(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

fn elem_at(items: &[Bson], idx: i64) -> Option<Bson> {
    let len = i64::try_from(items.len()).unwrap_or(i64::MAX);
    let i = if idx < 0 {
        len.saturating_add(idx)
    } else {
        idx
    };
    if i < 0 || i >= len {
        return None;
    }
    usize::try_from(i).ok().and_then(|i| items.get(i)).cloned()
}

fn dedup(items: Vec<Bson>) -> Vec<Bson> {
    let mut out: Vec<Bson> = Vec::new();
    for x in items {
        if !out.iter().any(|y| compare_bson(&x, y).is_eq()) {
            out.push(x);
        }
    }
    out
}

fn show(b: &Bson) -> String {
    b.to_string()
}

fn array_to_object(items: Vec<Bson>) -> Result<Document, QueryError> {
    let mut out = Document::new();
    for item in items {
        match item {
            Bson::Array(pair) => {
                if pair.len() != 2 {
                    return Err(err(
                        40397,
                        format!(
                            "$arrayToObject requires an array of size 2 arrays,found array of size: {}",
                            pair.len()
                        ),
                    ));
                }
                let mut it = pair.into_iter();
                match (it.next(), it.next()) {
                    (Some(Bson::String(k)), Some(v)) => {
                        if k.contains('\0') {
                            return Err(err(
                                4940400,
                                "Key field cannot contain an embedded null byte",
                            ));
                        }
                        out.insert(k, v);
                    }
                    (k, _) => {
                        return Err(err(
                            40395,
                            format!(
                                "$arrayToObject requires an array of key-value pairs, where the key must be of type string. Found key type: {}",
                                type_of(k.as_ref())
                            ),
                        ));
                    }
                }
            }
            Bson::Document(d) => {
                if d.len() != 2 || !d.contains_key("k") || !d.contains_key("v") {
                    return Err(err(
                        40392,
                        "$arrayToObject requires an object keys of 'k' and 'v'. Found incorrect number of keys:2",
                    ));
                }
                match (d.get("k"), d.get("v")) {
                    (Some(Bson::String(k)), Some(v)) => {
                        out.insert(k.clone(), v.clone());
                    }
                    (k, _) => {
                        return Err(err(
                            40394,
                            format!(
                                "$arrayToObject requires an object with keys 'k' and 'v', where the value of 'k' must be of type string. Found type: {}",
                                type_of(k.cloned().as_ref())
                            ),
                        ));
                    }
                }
            }
            other => {
                return Err(err(
                    40398,
                    format!(
                        "Unrecognised input type format for $arrayToObject: {}",
                        type_alias(other.element_type())
                    ),
                ));
            }
        }
    }
    Ok(out)
}

/// `$sum` over values: non-numbers are ignored; the result type widens as needed.
pub(crate) fn sum_values<'a>(items: impl Iterator<Item = &'a Bson>) -> Bson {
    let mut acc = Num::I32(0);
    for x in items {
        if let Some(n) = Num::from_bson(x) {
            acc =
                arith(ArithOp::Add, acc, n).unwrap_or_else(|| Num::F64(acc.to_f64() + n.to_f64()));
        }
    }
    acc.to_bson()
}

/// `$avg` over values: non-numbers are ignored; null when there are none.
pub(crate) fn avg_values<'a>(items: impl Iterator<Item = &'a Bson>) -> Option<Bson> {
    let mut sum = Num::I32(0);
    let mut count = 0u64;
    for x in items {
        if let Some(n) = Num::from_bson(x) {
            sum =
                arith(ArithOp::Add, sum, n).unwrap_or_else(|| Num::F64(sum.to_f64() + n.to_f64()));
            count += 1;
        }
    }
    if count == 0 {
        return Some(Bson::Null);
    }
    Some(match sum {
        Num::Dec(d) => Bson::Decimal128(decimal_divide(
            Num::Dec(d),
            Num::I64(i64::try_from(count).unwrap_or(i64::MAX)),
        )),
        other => Bson::Double(other.to_f64() / count as f64),
    })
}

/// `$convert` / `$toX` conversions (the common cases of mongod's conversion table).
fn convert(v: Bson, to: &str) -> Result<Bson, QueryError> {
    let fail = |v: &Bson| {
        QueryError::new(
            241,
            "ConversionFailure",
            format!(
                "Unsupported conversion from {} to {to} in $convert with no onError value",
                type_alias(v.element_type())
            ),
        )
    };
    Ok(match to {
        "double" => match &v {
            Bson::Boolean(b) => Bson::Double(if *b { 1.0 } else { 0.0 }),
            Bson::String(s) => Bson::Double(s.trim().parse::<f64>().map_err(|_| {
                QueryError::new(241, "ConversionFailure", format!("Failed to parse number '{s}' in $convert with no onError value: Did not consume whole string."))
            })?),
            Bson::DateTime(d) => Bson::Double(d.timestamp_millis() as f64),
            other => Bson::Double(Num::from_bson(other).ok_or_else(|| fail(other))?.to_f64()),
        },
        "int" | "long" => {
            let n: i64 = match &v {
                Bson::Boolean(b) => i64::from(*b),
                Bson::String(s) => s.trim().parse::<i64>().map_err(|_| {
                    QueryError::new(241, "ConversionFailure", format!("Failed to parse number '{s}' in $convert with no onError value: Did not consume whole string."))
                })?,
                Bson::DateTime(d) if to == "long" => d.timestamp_millis(),
                other => {
                    let n = Num::from_bson(other).ok_or_else(|| fail(other))?;
                    match n {
                        Num::I32(i) => i64::from(i),
                        Num::I64(i) => i,
                        _ => {
                            let f = n.to_f64();
                            if !f.is_finite() || f.abs() >= 9.2e18 {
                                return Err(QueryError::new(241, "ConversionFailure", format!("Conversion would overflow target type in $convert with no onError value: {f}")));
                            }
                            f.trunc() as i64
                        }
                    }
                }
            };
            if to == "int" {
                Bson::Int32(i32::try_from(n).map_err(|_| {
                    QueryError::new(241, "ConversionFailure", format!("Conversion would overflow target type in $convert with no onError value: {n}"))
                })?)
            } else {
                Bson::Int64(n)
            }
        }
        "decimal" => match &v {
            Bson::Boolean(b) => Bson::Decimal128(Num::I32(i32::from(*b)).to_dec()),
            Bson::String(s) => Bson::Decimal128(s.trim().parse().map_err(|_| {
                QueryError::new(241, "ConversionFailure", format!("Failed to parse number '{s}' in $convert with no onError value"))
            })?),
            other => Bson::Decimal128(Num::from_bson(other).ok_or_else(|| fail(other))?.to_dec()),
        },
        "bool" => Bson::Boolean(truthy(Some(&v))),
        "string" => match &v {
            Bson::ObjectId(o) => Bson::String(o.to_hex()),
            Bson::Boolean(b) => Bson::String(b.to_string()),
            Bson::DateTime(d) => Bson::String(format_date(d.timestamp_millis(), "%Y-%m-%dT%H:%M:%S.%LZ")),
            other => Bson::String(string_coerce(Some(other), "$convert").map_err(|_| fail(other))?),
        },
        "objectId" => match &v {
            Bson::ObjectId(_) => v,
            Bson::String(s) => Bson::ObjectId(ObjectId::parse_str(s).map_err(|_| {
                QueryError::new(241, "ConversionFailure", format!("Failed to parse objectId '{s}' in $convert with no onError value: Invalid string length for parsing to OID, expected 24 but found {}", s.len()))
            })?),
            other => return Err(fail(other)),
        },
        "date" => match &v {
            Bson::DateTime(_) => v,
            Bson::Int64(ms) => Bson::DateTime(DateTime::from_millis(*ms)),
            Bson::Double(d) => Bson::DateTime(DateTime::from_millis(*d as i64)),
            Bson::Timestamp(t) => Bson::DateTime(DateTime::from_millis(i64::from(t.time) * 1000)),
            Bson::ObjectId(o) => Bson::DateTime(o.timestamp()),
            Bson::String(s) => Bson::DateTime(DateTime::parse_rfc3339_str(s).map_err(|_| {
                QueryError::new(241, "ConversionFailure", format!("Error parsing date string '{s}'"))
            })?),
            other => return Err(fail(other)),
        },
        other => {
            return Err(bad(format!("Unknown type name: {other}")));
        }
    })
}

struct Civil {
    year: i32,
    month: i32,
    day: i32,
    weekday: i32,
    yday: i32,
    hour: i32,
    minute: i32,
    second: i32,
    millis: i32,
}

/// UTC calendar fields of a millisecond timestamp (proleptic Gregorian).
fn civil(ms: i64) -> Civil {
    let days = ms.div_euclid(86_400_000);
    let rem = ms.rem_euclid(86_400_000);
    // Howard Hinnant's days-from-civil inverse.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = if m <= 2 { y + 1 } else { y };
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let cumulative = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
    let yday = cumulative
        .get(usize::try_from(m - 1).unwrap_or(0))
        .copied()
        .unwrap_or(0)
        + d
        + i64::from(leap && m > 2);
    // 1970-01-01 was a Thursday; mongod's $dayOfWeek is 1 (Sunday) .. 7 (Saturday).
    let weekday = (days + 4).rem_euclid(7) + 1;
    Civil {
        year: i32::try_from(year).unwrap_or(i32::MAX),
        month: i32::try_from(m).unwrap_or(1),
        day: i32::try_from(d).unwrap_or(1),
        weekday: i32::try_from(weekday).unwrap_or(1),
        yday: i32::try_from(yday).unwrap_or(1),
        hour: i32::try_from(rem / 3_600_000).unwrap_or(0),
        minute: i32::try_from(rem / 60_000 % 60).unwrap_or(0),
        second: i32::try_from(rem / 1000 % 60).unwrap_or(0),
        millis: i32::try_from(rem % 1000).unwrap_or(0),
    }
}

/// `$dateToString` formatting (UTC) with mongod's format specifiers.
fn format_date(ms: i64, format: &str) -> String {
    let c = civil(ms);
    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(ch) = chars.next() {
        if ch != '%' {
            out.push(ch);
            continue;
        }
        match chars.next() {
            Some('Y') => {
                let _ = write!(out, "{:04}", c.year);
            }
            Some('m') => {
                let _ = write!(out, "{:02}", c.month);
            }
            Some('d') => {
                let _ = write!(out, "{:02}", c.day);
            }
            Some('H') => {
                let _ = write!(out, "{:02}", c.hour);
            }
            Some('M') => {
                let _ = write!(out, "{:02}", c.minute);
            }
            Some('S') => {
                let _ = write!(out, "{:02}", c.second);
            }
            Some('L') => {
                let _ = write!(out, "{:03}", c.millis);
            }
            Some('j') => {
                let _ = write!(out, "{:03}", c.yday);
            }
            Some('w') => out.push_str(&c.weekday.to_string()),
            Some('u') => {
                out.push_str(&(if c.weekday == 1 { 7 } else { c.weekday - 1 }).to_string())
            }
            Some('z') => out.push_str("+0000"),
            Some('Z') => out.push('0'),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

fn eval_named(name: &str, args: &[(String, Node)], ctx: &mut Ctx<'_, '_>) -> R {
    let mut vals: Vec<(&str, Option<Bson>)> = Vec::with_capacity(args.len());
    for (k, n) in args {
        vals.push((k.as_str(), eval(n, ctx)?));
    }
    let get = |k: &str| {
        vals.iter()
            .find(|(n, _)| *n == k)
            .and_then(|(_, v)| v.clone())
    };
    let has = |k: &str| vals.iter().any(|(n, _)| *n == k);
    Ok(match name {
        "$getField" => {
            let field = match get("field") {
                Some(Bson::String(s)) => s,
                other => {
                    return Err(err(
                        3041704,
                        format!(
                            "$getField requires 'field' to evaluate to type String, but got {}",
                            type_of(other.as_ref())
                        ),
                    ));
                }
            };
            match get("input") {
                Some(Bson::Document(d)) => d.get(&field).cloned(),
                None => None,
                Some(Bson::Null | Bson::Undefined) => Some(Bson::Null),
                Some(other) => {
                    return Err(err(
                        3041705,
                        format!(
                            "$getField requires 'input' to evaluate to type Object, but got {}",
                            type_alias(other.element_type())
                        ),
                    ));
                }
            }
        }
        "$setField" | "$unsetField" => {
            let field = match get("field") {
                Some(Bson::String(s)) => s,
                other => {
                    return Err(err(
                        4161106,
                        format!(
                            "{name} requires 'field' to evaluate to type String, but got {}",
                            type_of(other.as_ref())
                        ),
                    ));
                }
            };
            let mut input = match get("input") {
                Some(Bson::Document(d)) => d,
                None | Some(Bson::Null | Bson::Undefined) => return Ok(Some(Bson::Null)),
                Some(other) => {
                    return Err(err(
                        4161105,
                        format!(
                            "{name} requires 'input' to evaluate to type Object, but got {}",
                            type_alias(other.element_type())
                        ),
                    ));
                }
            };
            if name == "$unsetField" {
                input.remove(&field);
            } else {
                match get("value") {
                    // $$REMOVE removes the field.
                    None => {
                        input.remove(&field);
                    }
                    Some(v) => {
                        input.insert(field, v);
                    }
                }
            }
            Some(Bson::Document(input))
        }
        "$regexMatch" | "$regexFind" | "$regexFindAll" => {
            let input = get("input");
            let (pattern, mut options) = match get("regex") {
                Some(Bson::String(s)) => (s, String::new()),
                Some(Bson::RegularExpression(r)) => (r.pattern.to_string(), r.options.to_string()),
                None | Some(Bson::Null) => {
                    return Ok(Some(match name {
                        "$regexMatch" => Bson::Boolean(false),
                        "$regexFind" => Bson::Null,
                        _ => Bson::Array(Vec::new()),
                    }));
                }
                Some(other) => {
                    return Err(err(
                        51105,
                        format!(
                            "{name} needs 'regex' to be of type string or regex, found {}",
                            type_alias(other.element_type())
                        ),
                    ));
                }
            };
            if let Some(Bson::String(o)) = get("options") {
                options.push_str(&o);
            }
            let re = super::filter::compile_regex(&pattern, &options)?;
            let text = match input {
                Some(Bson::String(s)) => s,
                None | Some(Bson::Null) => {
                    return Ok(Some(match name {
                        "$regexMatch" => Bson::Boolean(false),
                        "$regexFind" => Bson::Null,
                        _ => Bson::Array(Vec::new()),
                    }));
                }
                Some(other) => {
                    return Err(err(
                        51104,
                        format!(
                            "{name} needs 'input' to be of type string, found {}",
                            type_alias(other.element_type())
                        ),
                    ));
                }
            };
            let regex = re.regex();
            match name {
                "$regexMatch" => Some(Bson::Boolean(regex.is_match(&text))),
                _ => {
                    let describe = |caps: regex::Captures<'_>| {
                        let whole = caps.get(0);
                        let mut d = Document::new();
                        d.insert(
                            "match",
                            whole.map(|m| m.as_str().to_owned()).unwrap_or_default(),
                        );
                        let start = whole.map_or(0, |m| m.start());
                        d.insert(
                            "idx",
                            i32::try_from(text[..start].chars().count()).unwrap_or(0),
                        );
                        d.insert(
                            "captures",
                            caps.iter()
                                .skip(1)
                                .map(|c| {
                                    c.map_or(Bson::Null, |m| Bson::String(m.as_str().to_owned()))
                                })
                                .collect::<Vec<_>>(),
                        );
                        Bson::Document(d)
                    };
                    if name == "$regexFind" {
                        Some(regex.captures(&text).map_or(Bson::Null, describe))
                    } else {
                        Some(Bson::Array(
                            regex.captures_iter(&text).map(describe).collect(),
                        ))
                    }
                }
            }
        }
        "$replaceOne" | "$replaceAll" => {
            let (input, find, repl) = (get("input"), get("find"), get("replacement"));
            if nullish(input.as_ref()) || nullish(find.as_ref()) || nullish(repl.as_ref()) {
                return Ok(Some(Bson::Null));
            }
            match (input, find, repl) {
                (Some(Bson::String(i)), Some(Bson::String(f)), Some(Bson::String(r))) => {
                    Some(Bson::String(if name == "$replaceOne" {
                        i.replacen(&f, &r, 1)
                    } else {
                        i.replace(&f, &r)
                    }))
                }
                _ => {
                    return Err(err(
                        51746,
                        format!(
                            "{name} requires that 'input', 'find' and 'replacement' be strings"
                        ),
                    ));
                }
            }
        }
        "$trim" | "$ltrim" | "$rtrim" => {
            let input = get("input");
            let s = match input {
                None | Some(Bson::Null | Bson::Undefined) => return Ok(Some(Bson::Null)),
                Some(Bson::String(s)) => s,
                Some(other) => {
                    return Err(err(
                        50699,
                        format!(
                            "{name} requires its input to be a string, got {} (of type {}) instead.",
                            show(&other),
                            type_alias(other.element_type())
                        ),
                    ));
                }
            };
            let chars: Vec<char> = match get("chars") {
                Some(Bson::String(c)) => c.chars().collect(),
                None | Some(Bson::Null) if !has("chars") => {
                    vec![' ', '\t', '\n', '\r', '\u{0b}', '\u{0c}', '\0', '\u{a0}']
                }
                None | Some(Bson::Null) => return Ok(Some(Bson::Null)),
                Some(other) => {
                    return Err(err(
                        50700,
                        format!(
                            "{name} requires 'chars' to be a string, got {} instead.",
                            type_alias(other.element_type())
                        ),
                    ));
                }
            };
            let t: &str = match name {
                "$trim" => s.trim_matches(|c| chars.contains(&c)),
                "$ltrim" => s.trim_start_matches(|c| chars.contains(&c)),
                _ => s.trim_end_matches(|c| chars.contains(&c)),
            };
            Some(Bson::String(t.to_owned()))
        }
        "$convert" => {
            let input = get("input");
            if nullish(input.as_ref()) {
                return Ok(Some(if has("onNull") {
                    get("onNull").unwrap_or(Bson::Null)
                } else {
                    Bson::Null
                }));
            }
            let to = match get("to") {
                Some(Bson::String(s)) => s,
                Some(n) if Num::from_bson(&n).is_some() => {
                    let code = Num::from_bson(&n)
                        .and_then(|x| f64_to_i64_exact(x.to_f64()))
                        .unwrap_or(0);
                    match super::filter::type_from_code(code) {
                        Some(t) => type_alias(t).to_owned(),
                        None => {
                            return Err(bad(format!(
                                "In $convert, numeric 'to' argument is not a valid type: {code}"
                            )));
                        }
                    }
                }
                other => {
                    return Err(bad(format!(
                        "$convert's 'to' argument must be a string or number, but is {}",
                        type_of(other.as_ref())
                    )));
                }
            };
            match convert(input.unwrap_or(Bson::Null), &to) {
                Ok(v) => Some(v),
                Err(e) if e.code == 241 && has("onError") => get("onError"),
                Err(e) => return Err(e),
            }
        }
        "$dateToString" => {
            let date = get("date");
            let ms = match date {
                None | Some(Bson::Null | Bson::Undefined) => {
                    return Ok(Some(if has("onNull") {
                        get("onNull").unwrap_or(Bson::Null)
                    } else {
                        Bson::Null
                    }));
                }
                Some(Bson::DateTime(d)) => d.timestamp_millis(),
                Some(Bson::Timestamp(t)) => i64::from(t.time) * 1000,
                Some(Bson::ObjectId(o)) => o.timestamp().timestamp_millis(),
                Some(other) => {
                    return Err(err(
                        16006,
                        format!(
                            "can't convert from BSON type {} to Date",
                            type_alias(other.element_type())
                        ),
                    ));
                }
            };
            let format = match get("format") {
                Some(Bson::String(f)) => f,
                _ => "%Y-%m-%dT%H:%M:%S.%LZ".into(),
            };
            Some(Bson::String(format_date(ms, &format)))
        }
        "$sortArray" => {
            let input = get("input");
            let items = match input {
                None | Some(Bson::Null | Bson::Undefined) => return Ok(Some(Bson::Null)),
                Some(Bson::Array(a)) => a,
                Some(other) => {
                    return Err(err(
                        2942504,
                        format!(
                            "The input argument to $sortArray must be an array, but was of type: {}",
                            type_alias(other.element_type())
                        ),
                    ));
                }
            };
            let mut items = items;
            match get("sortBy") {
                Some(Bson::Document(spec)) => {
                    let spec = super::sort::SortSpec::parse_bson(&spec)?;
                    items.sort_by(|a, b| match (a, b) {
                        (Bson::Document(x), Bson::Document(y)) => spec.compare_bson(x, y),
                        _ => compare_bson(a, b),
                    });
                }
                Some(n) if Num::from_bson(&n).is_some() => {
                    let desc = Num::from_bson(&n).is_some_and(|x| x.to_f64() < 0.0);
                    items.sort_by(|a, b| {
                        let o = compare_bson(a, b);
                        if desc { o.reverse() } else { o }
                    });
                }
                _ => {
                    return Err(err(
                        2942505,
                        "$sortArray requires sortBy to be an object or 1/-1",
                    ));
                }
            }
            Some(Bson::Array(items))
        }
        "$zip" => {
            let inputs = match get("inputs") {
                Some(Bson::Array(a)) => a,
                None | Some(Bson::Null) => return Ok(Some(Bson::Null)),
                Some(_) => return Err(err(34461, "inputs must be an array of expressions")),
            };
            let mut arrays = Vec::new();
            for i in inputs {
                match i {
                    Bson::Array(a) => arrays.push(a),
                    Bson::Null | Bson::Undefined => return Ok(Some(Bson::Null)),
                    other => {
                        return Err(err(
                            34468,
                            format!(
                                "$zip found a non-array expression in input: {}",
                                show(&other)
                            ),
                        ));
                    }
                }
            }
            let longest = truthy(get("useLongestLength").as_ref());
            let defaults = match get("defaults") {
                Some(Bson::Array(d)) => d,
                _ => Vec::new(),
            };
            let n = if longest {
                arrays.iter().map(Vec::len).max().unwrap_or(0)
            } else {
                arrays.iter().map(Vec::len).min().unwrap_or(0)
            };
            let mut out = Vec::with_capacity(n);
            for i in 0..n {
                out.push(Bson::Array(
                    arrays
                        .iter()
                        .enumerate()
                        .map(|(j, a)| {
                            a.get(i)
                                .cloned()
                                .or_else(|| defaults.get(j).cloned())
                                .unwrap_or(Bson::Null)
                        })
                        .collect(),
                ));
            }
            Some(Bson::Array(out))
        }
        _ => {
            return Err(QueryError::invalid_pipeline_operator(format!(
                "Unrecognized expression '{name}'"
            )));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::{bson, doc, rawdoc};

    fn ev(spec: Bson, d: Document) -> Result<Option<Bson>, QueryError> {
        let vars = Variables::with_now(DateTime::from_millis(86_400_000));
        Expression::parse_bson(&spec, &vars)?.evaluate_bson(&d, &vars)
    }

    fn val(spec: Bson, d: Document) -> Bson {
        ev(spec, d)
            .expect("evaluates")
            .unwrap_or(Bson::String("<missing>".into()))
    }

    #[test]
    fn field_paths_and_variables() {
        let d = doc! {"a": {"b": 5}, "arr": [{"x": 1}, {"y": 2}, {"x": 3}, 4]};
        assert_eq!(val(bson!("$a.b"), d.clone()), bson!(5));
        assert_eq!(val(bson!("$arr.x"), d.clone()), bson!([1, 3]));
        assert_eq!(val(bson!("$zz"), d.clone()), bson!("<missing>"));
        assert_eq!(val(bson!("$$ROOT.a"), d.clone()), bson!({"b": 5}));
        assert_eq!(
            val(bson!("$$NOW"), d.clone()),
            Bson::DateTime(DateTime::from_millis(86_400_000))
        );
        assert_eq!(
            val(
                bson!({"$let": {"vars": {"x": 2}, "in": {"$multiply": ["$$x", "$a.b"]}}}),
                d.clone()
            ),
            bson!(10)
        );
        let e = Expression::parse_bson(&bson!("$$nope"), &Variables::new()).expect_err("undefined");
        assert_eq!(e.code, 17276);
        let vars = Variables::new()
            .with_let(&rawdoc! {"id": 1, "two": {"$add": [1, 1]}})
            .expect("let");
        let e = Expression::parse_bson(&bson!({"$eq": ["$_id", "$$id"]}), &vars).expect("parses");
        assert_eq!(
            e.evaluate_bson(&doc! {"_id": 1.0}, &vars).expect("ok"),
            Some(Bson::Boolean(true))
        );
        assert_eq!(vars.get("two"), Some(&Bson::Int32(2)));
    }

    #[test]
    fn arithmetic() {
        let d = doc! {"i": 2, "l": 3_i64, "f": 1.5};
        assert_eq!(val(bson!({"$add": ["$i", "$l"]}), d.clone()), bson!(5_i64));
        assert_eq!(val(bson!({"$add": ["$i", "$f"]}), d.clone()), bson!(3.5));
        assert_eq!(
            val(bson!({"$add": ["$i", "$missing"]}), d.clone()),
            Bson::Null
        );
        assert_eq!(val(bson!({"$subtract": [10, "$i"]}), d.clone()), bson!(8));
        assert_eq!(val(bson!({"$divide": [9, "$i"]}), d.clone()), bson!(4.5));
        assert_eq!(val(bson!({"$mod": [9, "$i"]}), d.clone()), bson!(1));
        assert_eq!(
            val(bson!({"$multiply": [i32::MAX, 2]}), d.clone()),
            bson!(i64::from(i32::MAX) * 2)
        );
        assert_eq!(val(bson!({"$abs": -3}), d.clone()), bson!(3));
        assert_eq!(val(bson!({"$round": [2.5]}), d.clone()), bson!(2.0));
        assert_eq!(val(bson!({"$pow": [2, 10]}), d.clone()), bson!(1024));
        assert_eq!(
            ev(bson!({"$divide": [1, 0]}), d.clone())
                .expect_err("div by zero")
                .code,
            2
        );
        let e = ev(bson!({"$add": ["x", 1]}), d).expect_err("type");
        assert_eq!(e.code, 14);
    }

    #[test]
    fn comparison_boolean_conditional() {
        let d = doc! {"a": 1, "s": "x"};
        assert_eq!(val(bson!({"$gt": ["$s", "$a"]}), d.clone()), bson!(true));
        assert_eq!(val(bson!({"$eq": ["$a", 1.0]}), d.clone()), bson!(true));
        assert_eq!(val(bson!({"$cmp": ["$a", 2]}), d.clone()), bson!(-1));
        assert_eq!(
            val(bson!({"$and": [1, "$s", {"$not": [false]}]}), d.clone()),
            bson!(true)
        );
        assert_eq!(val(bson!({"$or": [0, null]}), d.clone()), bson!(false));
        assert_eq!(
            val(
                bson!({"$cond": {"if": "$a", "then": "yes", "else": "no"}}),
                d.clone()
            ),
            bson!("yes")
        );
        assert_eq!(val(bson!({"$cond": [false, 1, 2]}), d.clone()), bson!(2));
        assert_eq!(
            val(bson!({"$ifNull": ["$nope", null, "dflt"]}), d.clone()),
            bson!("dflt")
        );
        assert_eq!(
            val(
                bson!({"$switch": {"branches": [{"case": {"$eq": ["$a", 2]}, "then": 2}], "default": 0}}),
                d.clone()
            ),
            bson!(0)
        );
        assert_eq!(
            ev(
                bson!({"$switch": {"branches": [{"case": false, "then": 1}]}}),
                d
            )
            .expect_err("no branch")
            .code,
            40066
        );
    }

    #[test]
    fn strings() {
        let d = doc! {"s": "Hello World"};
        assert_eq!(
            val(bson!({"$concat": ["$s", "!"]}), d.clone()),
            bson!("Hello World!")
        );
        assert_eq!(
            val(bson!({"$toUpper": "$s"}), d.clone()),
            bson!("HELLO WORLD")
        );
        assert_eq!(
            val(bson!({"$substrCP": ["$s", 6, 5]}), d.clone()),
            bson!("World")
        );
        assert_eq!(
            val(bson!({"$split": ["$s", " "]}), d.clone()),
            bson!(["Hello", "World"])
        );
        assert_eq!(val(bson!({"$strLenCP": "$s"}), d.clone()), bson!(11));
        assert_eq!(
            val(bson!({"$indexOfBytes": ["$s", "World"]}), d.clone()),
            bson!(6)
        );
        assert_eq!(
            val(bson!({"$trim": {"input": "  x  "}}), d.clone()),
            bson!("x")
        );
        assert_eq!(
            val(
                bson!({"$regexMatch": {"input": "$s", "regex": "^hello", "options": "i"}}),
                d.clone()
            ),
            bson!(true)
        );
        assert_eq!(
            val(
                bson!({"$replaceAll": {"input": "aXbX", "find": "X", "replacement": "-"}}),
                d.clone()
            ),
            bson!("a-b-")
        );
        assert_eq!(val(bson!({"$concat": ["$s", "$missing"]}), d), Bson::Null);
    }

    #[test]
    fn arrays() {
        let d = doc! {"a": [1, 2, 3, 4]};
        assert_eq!(val(bson!({"$size": "$a"}), d.clone()), bson!(4));
        assert_eq!(
            val(bson!({"$arrayElemAt": ["$a", -1]}), d.clone()),
            bson!(4)
        );
        assert_eq!(
            val(bson!({"$arrayElemAt": ["$a", 9]}), d.clone()),
            bson!("<missing>")
        );
        assert_eq!(
            val(
                bson!({"$filter": {"input": "$a", "as": "n", "cond": {"$gt": ["$$n", 2]}}}),
                d.clone()
            ),
            bson!([3, 4])
        );
        assert_eq!(
            val(
                bson!({"$map": {"input": "$a", "in": {"$multiply": ["$$this", 10]}}}),
                d.clone()
            ),
            bson!([10, 20, 30, 40])
        );
        assert_eq!(
            val(
                bson!({"$reduce": {"input": "$a", "initialValue": 0, "in": {"$add": ["$$value", "$$this"]}}}),
                d.clone()
            ),
            bson!(10)
        );
        assert_eq!(val(bson!({"$in": [2, "$a"]}), d.clone()), bson!(true));
        assert_eq!(val(bson!({"$slice": ["$a", -2]}), d.clone()), bson!([3, 4]));
        assert_eq!(
            val(bson!({"$slice": ["$a", 1, 2]}), d.clone()),
            bson!([2, 3])
        );
        assert_eq!(
            val(bson!({"$concatArrays": ["$a", [5]]}), d.clone()),
            bson!([1, 2, 3, 4, 5])
        );
        assert_eq!(val(bson!({"$sum": "$a"}), d.clone()), bson!(10));
        assert_eq!(val(bson!({"$avg": "$a"}), d.clone()), bson!(2.5));
        assert_eq!(val(bson!({"$max": "$a"}), d.clone()), bson!(4));
        assert_eq!(
            val(bson!({"$range": [0, 6, 2]}), d.clone()),
            bson!([0, 2, 4])
        );
        assert_eq!(
            val(bson!({"$setUnion": [[1, 2], [2, 3]]}), d.clone()),
            bson!([1, 2, 3])
        );
        assert_eq!(
            ev(bson!({"$size": 1}), d).expect_err("not array").code,
            17124
        );
    }

    #[test]
    fn objects_and_types() {
        let d = doc! {"o": {"a": 1}, "n": "12"};
        assert_eq!(
            val(bson!({"$mergeObjects": ["$o", {"b": 2}]}), d.clone()),
            bson!({"a": 1, "b": 2})
        );
        assert_eq!(
            val(bson!({"$objectToArray": "$o"}), d.clone()),
            bson!([{"k": "a", "v": 1}])
        );
        assert_eq!(
            val(bson!({"$arrayToObject": [[["k", 1]]]}), d.clone()),
            bson!({"k": 1})
        );
        assert_eq!(
            val(
                bson!({"$setField": {"field": {"$literal": "$x"}, "value": 1, "input": "$$ROOT"}}),
                doc! {"_id": 1}
            ),
            bson!({"_id": 1, "$x": 1})
        );
        assert_eq!(val(bson!({"$getField": "n"}), d.clone()), bson!("12"));
        assert_eq!(val(bson!({"$toInt": "$n"}), d.clone()), bson!(12));
        assert_eq!(val(bson!({"$toString": 5}), d.clone()), bson!("5"));
        assert_eq!(val(bson!({"$type": "$o"}), d.clone()), bson!("object"));
        assert_eq!(
            val(bson!({"$type": "$missing"}), d.clone()),
            bson!("missing")
        );
        assert_eq!(
            val(
                bson!({"$convert": {"input": "x", "to": "int", "onError": -1}}),
                d.clone()
            ),
            bson!(-1)
        );
        assert_eq!(
            val(bson!({"$literal": "$notapath"}), d.clone()),
            bson!("$notapath")
        );
        assert_eq!(
            val(
                bson!({"$dateToString": {"date": "$$NOW", "format": "%Y-%m-%d"}}),
                d.clone()
            ),
            bson!("1970-01-02")
        );
        assert_eq!(val(bson!({"$dayOfWeek": "$$NOW"}), d), bson!(6));
    }

    #[test]
    fn parse_errors() {
        let vars = Variables::new();
        let e = Expression::parse_bson(&bson!({"$foo": 1}), &vars).expect_err("unknown");
        assert_eq!(e.code, 168);
        assert_eq!(e.message, "Unrecognized expression '$foo'");
        let e = Expression::parse_bson(&bson!({"$size": [1, 2]}), &vars).expect_err("arity");
        assert_eq!(e.code, 16020);
        assert_eq!(
            e.message,
            "Expression $size takes exactly 1 arguments. 2 were passed in."
        );
        let e =
            Expression::parse_bson(&bson!({"$add": [1], "x": 1}), &vars).expect_err("two fields");
        assert_eq!(e.code, 15983);
        let e = Expression::parse_bson(&bson!({"a.b": 1}), &vars).expect_err("dotted");
        assert_eq!(e.code, 16412);
    }
}
