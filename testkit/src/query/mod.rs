//! The MongoDB query language, as pure functions over BSON.
//!
//! Everything here is independent of the server: comparison in the server's total order across
//! types, filter matching, update operators, projections, sort specifications, aggregation
//! stages and expressions, and the `updateDescription` of change events. The engine calls these
//! with documents it stores as raw BSON; nothing here performs I/O or holds server state.

use std::fmt;

pub mod compare;
pub mod diff;
pub mod expr;
pub mod filter;
pub mod hashed;
pub mod keystring;
pub mod path;
pub mod pipeline;
pub mod projection;
pub mod sort;
pub mod update;

// Shared internals: the value view and exact numerics.
mod numeric;
mod value;

/// Sort or index-key direction of one field (`1` or `-1` in a sort or key pattern).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// `1`: smallest first.
    Ascending,
    /// `-1`: largest first.
    Descending,
}

impl Direction {
    /// Applies this direction to an ascending comparison result.
    pub fn apply(self, ordering: std::cmp::Ordering) -> std::cmp::Ordering {
        match self {
            Direction::Ascending => ordering,
            Direction::Descending => ordering.reverse(),
        }
    }
}

/// A query-language error, carrying the server error code a real `mongod` would answer with.
///
/// The engine turns it into an `{ok: 0, code, codeName, errmsg}` reply unchanged, so the code
/// and name must be the ones the real server uses for the same input (for example 2 `BadValue`
/// for an unknown operator, 9 `FailedToParse`, 40324 for an unrecognized pipeline stage).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryError {
    /// The numeric server error code (`code` in the reply).
    pub code: i32,
    /// The server's name for the code (`codeName` in the reply).
    pub code_name: &'static str,
    /// The human-readable message (`errmsg` in the reply).
    pub message: String,
}

impl QueryError {
    /// Builds an error with the given code, code name and message.
    pub fn new(code: i32, code_name: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            code_name,
            message: message.into(),
        }
    }

    /// Error 2 `BadValue`, the server's answer to most malformed arguments.
    pub fn bad_value(message: impl Into<String>) -> Self {
        Self::new(2, "BadValue", message)
    }

    /// Error 9 `FailedToParse`.
    pub fn failed_to_parse(message: impl Into<String>) -> Self {
        Self::new(9, "FailedToParse", message)
    }

    /// Error 14 `TypeMismatch`.
    pub fn type_mismatch(message: impl Into<String>) -> Self {
        Self::new(14, "TypeMismatch", message)
    }

    /// Error 40 `ConflictingUpdateOperators`.
    pub fn conflicting_update(message: impl Into<String>) -> Self {
        Self::new(40, "ConflictingUpdateOperators", message)
    }

    /// Error 66 `ImmutableField`.
    pub fn immutable_field(message: impl Into<String>) -> Self {
        Self::new(66, "ImmutableField", message)
    }

    /// Error 168 `InvalidPipelineOperator` (unknown aggregation expression operator).
    pub fn invalid_pipeline_operator(message: impl Into<String>) -> Self {
        Self::new(168, "InvalidPipelineOperator", message)
    }

    /// A numbered assertion of mongod (`uassert(<code>, ...)`), whose `codeName` is
    /// `Location<code>`.
    pub fn location(code: i32, message: impl Into<String>) -> Self {
        Self::new(code, location_name(code), message)
    }

    /// Placeholder error for a part of the query language this module does not implement
    /// (yet); error 2 `BadValue` with a message naming the part.
    pub fn not_implemented(what: &str) -> Self {
        Self::bad_value(format!("{what} is not implemented by the testkit"))
    }
}

/// The `codeName` the server reports for a numbered assertion (`Location<code>`).
///
/// mongod's `uassert` with a bare number produces `codeName: "Location<N>"`. The names are
/// interned once per code (the codes are constants of this module, so the set is small and
/// bounded) so that `QueryError::code_name` stays `&'static str`.
fn location_name(code: i32) -> &'static str {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    static NAMES: OnceLock<Mutex<HashMap<i32, &'static str>>> = OnceLock::new();
    let names = NAMES.get_or_init(|| Mutex::new(HashMap::new()));
    let mut names = names
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    names
        .entry(code)
        .or_insert_with(|| Box::leak(format!("Location{code}").into_boxed_str()))
}

impl fmt::Display for QueryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}): {}", self.code_name, self.code, self.message)
    }
}

impl std::error::Error for QueryError {}
