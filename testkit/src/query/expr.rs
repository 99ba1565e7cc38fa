//! Aggregation expressions (`$add`, `$cond`, field paths, variables, ...), as mongod 7.0
//! evaluates them in `$project`, `$addFields`, `$group`, `$expr` and pipeline updates.
//!
//! An [`Expression`] is parsed once (unknown operators fail at parse time with the server's
//! codes, e.g. 168 `InvalidPipelineOperator`; undefined variables with 17276) and evaluated
//! per document against a [`Variables`] environment that carries `$$NOW`, `$$CLUSTER_TIME`
//! and the user's `let` variables.

use bson::{Bson, DateTime, Document, RawBsonRef, RawDocument, Timestamp};

use super::QueryError;

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

    /// Sets `$$CLUSTER_TIME` (the server's logical time of the operation). Without it the
    /// variable is undefined, as on a standalone mongod.
    pub fn set_cluster_time(&mut self, ts: Timestamp) {
        self.cluster_time = Some(ts);
    }

    /// An environment for contexts where expressions cannot occur (no clock read).
    pub(crate) fn empty() -> Self {
        Self::with_now(DateTime::from_millis(0))
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
        let _ = (name, value);
        Err(QueryError::not_implemented("user variables"))
    }

    /// Adds the variables of a command's `let` document: each value is an expression
    /// evaluated once with no current document (so `$$NOW` and earlier `let` variables may be
    /// used, field paths evaluate to missing).
    pub fn with_let(self, let_doc: &RawDocument) -> Result<Self, QueryError> {
        let _ = let_doc;
        Err(QueryError::not_implemented("let"))
    }

    /// The value of a user variable.
    pub fn get(&self, name: &str) -> Option<&Bson> {
        self.user.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }
}

/// A parsed aggregation expression.
#[derive(Debug, Clone)]
pub struct Expression {
    _private: (),
}

impl Expression {
    /// Parses an expression from its BSON form (a `$field.path`, a `$$variable`, a literal, an
    /// operator document such as `{$add: [...]}`, or a document/array of expressions).
    pub fn parse(spec: RawBsonRef<'_>, vars: &Variables) -> Result<Self, QueryError> {
        let _ = (spec, vars);
        Err(QueryError::not_implemented("aggregation expressions"))
    }

    /// [`Expression::parse`] from a decoded value.
    pub fn parse_bson(spec: &Bson, vars: &Variables) -> Result<Self, QueryError> {
        let _ = (spec, vars);
        Err(QueryError::not_implemented("aggregation expressions"))
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
        let _ = (doc, vars);
        Err(QueryError::not_implemented("aggregation expressions"))
    }

    /// [`Expression::evaluate_optional`] on a decoded document.
    pub fn evaluate_bson(
        &self,
        doc: &Document,
        vars: &Variables,
    ) -> Result<Option<Bson>, QueryError> {
        let _ = (doc, vars);
        Err(QueryError::not_implemented("aggregation expressions"))
    }
}

impl Expression {
    /// Parses from either representation (crate-internal entry point).
    pub(crate) fn parse_val(
        spec: crate::query::value::Val<'_>,
        vars: &Variables,
    ) -> Result<Self, QueryError> {
        let _ = (spec, vars);
        Err(QueryError::not_implemented("aggregation expressions"))
    }

    /// Evaluates with a document of either representation as `$$ROOT`.
    pub(crate) fn eval_doc(
        &self,
        doc: crate::query::value::DocRef<'_>,
        vars: &Variables,
    ) -> Result<Option<Bson>, QueryError> {
        let _ = (doc, vars);
        Err(QueryError::not_implemented("aggregation expressions"))
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
        Some(Bson::Decimal128(d)) => !matches!(
            crate::query::numeric::decimal_parts(*d),
            crate::query::numeric::DecParts::Finite { coefficient: 0, .. }
        ),
        Some(_) => true,
    }
}
