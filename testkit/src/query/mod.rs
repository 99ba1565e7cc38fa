//! The MongoDB query language, as pure functions over BSON.
//!
//! Everything here is independent of the server: comparison in the server's total order across
//! types, filter matching, update operators, projections, sort specifications, aggregation
//! stages and expressions, and the `updateDescription` of change events. The engine calls these
//! with documents it stores as raw BSON; nothing here performs I/O or holds server state.

use std::fmt;

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
}

impl fmt::Display for QueryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}): {}", self.code_name, self.code, self.message)
    }
}

impl std::error::Error for QueryError {}
