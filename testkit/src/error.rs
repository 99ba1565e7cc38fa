//! Command errors: what a failed command answers, in mongod's shape.
//!
//! Every failure that reaches a client becomes `{ok: 0, errmsg, code, codeName, [errorLabels],
//! [extra fields]}`. The code is present unless a real server omits it: the Rust driver cannot
//! parse an error reply without one (it reports an invalid response, and a change stream would
//! resume), so only the few legacy "errmsg" commands whose real replies lack it do the same
//! (see [`CommandError::without_code`]).

use std::borrow::Cow;

use bson::{Document, RawDocumentBuf};

use crate::query::QueryError;

/// A command failure with the code and name a real mongod would use for the same input.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{code_name} ({code}): {message}")]
pub struct CommandError {
    /// The numeric server error code.
    pub code: i32,
    /// mongod's name for the code (`codeName`).
    pub code_name: Cow<'static, str>,
    /// The human-readable message (`errmsg`).
    pub message: String,
    /// Error labels (`RetryableWriteError`, `ResumableChangeStreamError`, ...).
    pub labels: Vec<String>,
    /// Extra top-level reply fields, e.g. `keyPattern`/`keyValue` of a duplicate key.
    pub extra: Box<Document>,
}

impl CommandError {
    /// An error with the given code; the name comes from [`code_name`].
    pub fn new(code: i32, message: impl Into<String>) -> Self {
        CommandError {
            code,
            code_name: Cow::Borrowed(code_name(code)),
            message: message.into(),
            labels: Vec::new(),
            extra: Box::default(),
        }
    }

    /// A failure that a real server reports without `code`/`codeName`: the legacy commands that
    /// set only `errmsg` (mongos' `replSetGetStatus` stub, `split`'s argument checks). Code 0
    /// (`OK`) marks it; the reply is `{ok: 0, errmsg}` plus any extra fields.
    pub fn without_code(message: impl Into<String>) -> Self {
        CommandError {
            code: 0,
            code_name: Cow::Borrowed("OK"),
            message: message.into(),
            labels: Vec::new(),
            extra: Box::default(),
        }
    }

    /// 2 `BadValue`.
    pub fn bad_value(message: impl Into<String>) -> Self {
        Self::new(2, message)
    }

    /// 9 `FailedToParse`.
    pub fn failed_to_parse(message: impl Into<String>) -> Self {
        Self::new(9, message)
    }

    /// 14 `TypeMismatch`.
    pub fn type_mismatch(message: impl Into<String>) -> Self {
        Self::new(14, message)
    }

    /// 26 `NamespaceNotFound`.
    pub fn namespace_not_found(message: impl Into<String>) -> Self {
        Self::new(26, message)
    }

    /// 40415 `Location40415`: an unknown field in a command, as mongod's IDL parser reports it.
    pub fn unknown_field(command: &str, field: &str) -> Self {
        Self::new(
            40415,
            format!("BSON field '{command}.{field}' is an unknown field."),
        )
    }

    /// 73 `InvalidNamespace`.
    pub fn invalid_namespace(message: impl Into<String>) -> Self {
        Self::new(73, message)
    }

    /// Overrides the code name (for codes whose name depends on context).
    pub fn with_code_name(mut self, name: &'static str) -> Self {
        self.code_name = Cow::Borrowed(name);
        self
    }

    /// Adds an error label.
    pub fn with_label(mut self, label: &str) -> Self {
        if !self.labels.iter().any(|l| l == label) {
            self.labels.push(label.to_string());
        }
        self
    }

    /// Adds an extra top-level field to the reply.
    pub fn with_extra(mut self, key: &str, value: impl Into<bson::Bson>) -> Self {
        self.extra.insert(key, value.into());
        self
    }

    /// The `{ok: 0, errmsg, code, codeName, ...}` reply body (without cluster time fields).
    pub fn to_reply(&self) -> Document {
        let mut doc = Document::new();
        doc.insert("ok", 0.0);
        doc.insert("errmsg", self.message.clone());
        if self.code != 0 {
            doc.insert("code", self.code);
            doc.insert("codeName", self.code_name.as_ref());
        }
        for (k, v) in self.extra.iter() {
            doc.insert(k.clone(), v.clone());
        }
        if !self.labels.is_empty() {
            doc.insert("errorLabels", self.labels.clone());
        }
        doc
    }
}

impl From<QueryError> for CommandError {
    fn from(e: QueryError) -> Self {
        CommandError {
            code: e.code,
            code_name: Cow::Borrowed(e.code_name),
            message: e.message,
            labels: Vec::new(),
            extra: Box::default(),
        }
    }
}

impl From<bson::error::Error> for CommandError {
    fn from(e: bson::error::Error) -> Self {
        // Malformed BSON is caught by the wire layer; what remains here are values that cannot
        // be represented (e.g. a field name with a NUL), which mongod reports as InvalidBSON.
        CommandError::new(22, format!("invalid BSON: {e}"))
    }
}

/// A document-level write error (`writeErrors[i]` in an insert/update/delete reply).
#[derive(Debug, Clone, PartialEq)]
pub struct WriteError {
    /// The index of the failed operation in the batch.
    pub index: usize,
    /// The error itself.
    pub error: CommandError,
}

impl WriteError {
    /// The `{index, code, errmsg, [keyPattern, keyValue, errInfo]}` element.
    pub fn to_document(&self) -> Document {
        let mut doc = Document::new();
        doc.insert("index", i32::try_from(self.index).unwrap_or(i32::MAX));
        doc.insert("code", self.error.code);
        for (k, v) in self.error.extra.iter() {
            doc.insert(k.clone(), v.clone());
        }
        doc.insert("errmsg", self.error.message.clone());
        doc
    }
}

/// Turns a raw document into an owned `Document` for reply building, mapping failures to
/// `InvalidBSON` (the wire layer has already validated it, so this is not expected to fail).
pub fn to_document(raw: &bson::RawDocument) -> Result<Document, CommandError> {
    Document::try_from(raw).map_err(|e| CommandError::new(22, format!("invalid BSON: {e}")))
}

/// Turns a raw value into an owned `Bson`.
pub fn to_bson(v: bson::RawBsonRef<'_>) -> Result<bson::Bson, CommandError> {
    bson::Bson::try_from(bson::RawBson::from(v))
        .map_err(|e| CommandError::new(22, format!("invalid BSON: {e}")))
}

/// Turns a `Document` into raw BSON for storage or replies.
pub fn to_raw(doc: &Document) -> Result<RawDocumentBuf, CommandError> {
    RawDocumentBuf::try_from(doc).map_err(CommandError::from)
}

/// mongod's `codeName` for the codes this server produces or failpoints inject.
pub fn code_name(code: i32) -> &'static str {
    match code {
        1 => "InternalError",
        2 => "BadValue",
        4 => "NoSuchKey",
        6 => "HostUnreachable",
        7 => "HostNotFound",
        8 => "UnknownError",
        9 => "FailedToParse",
        11 => "UserNotFound",
        13 => "Unauthorized",
        14 => "TypeMismatch",
        16 => "InvalidLength",
        17 => "ProtocolError",
        18 => "AuthenticationFailed",
        20 => "IllegalOperation",
        22 => "InvalidBSON",
        23 => "AlreadyInitialized",
        24 => "LockTimeout",
        26 => "NamespaceNotFound",
        27 => "IndexNotFound",
        28 => "PathNotViable",
        40 => "ConflictingUpdateOperators",
        43 => "CursorNotFound",
        48 => "NamespaceExists",
        50 => "MaxTimeMSExpired",
        52 => "DollarPrefixedFieldName",
        53 => "InvalidIdField",
        59 => "CommandNotFound",
        61 => "ShardKeyNotFound",
        63 => "OBSOLETE_StaleShardVersion",
        64 => "WriteConcernFailed",
        66 => "ImmutableField",
        67 => "CannotCreateIndex",
        68 => "IndexAlreadyExists",
        70 => "ShardNotFound",
        72 => "InvalidOptions",
        73 => "InvalidNamespace",
        79 => "UnknownReplWriteConcern",
        85 => "IndexOptionsConflict",
        86 => "IndexKeySpecsConflict",
        89 => "NetworkTimeout",
        91 => "ShutdownInProgress",
        96 => "OperationFailed",
        100 => "UnsatisfiableWriteConcern",
        106 => "CannotSplit",
        112 => "WriteConflict",
        115 => "CommandNotSupported",
        118 => "NamespaceNotSharded",
        121 => "DocumentValidationFailure",
        133 => "FailedToSatisfyReadPreference",
        134 => "ReadConcernMajorityNotAvailableYet",
        136 => "CappedPositionLost",
        150 => "StaleEpoch",
        166 => "CommandNotSupportedOnView",
        167 => "OptionNotSupportedOnView",
        168 => "InvalidPipelineOperator",
        175 => "QueryPlanKilled",
        189 => "PrimarySteppedDown",
        197 => "InvalidIndexSpecificationOption",
        202 => "NetworkInterfaceExceededTimeLimit",
        206 => "NoSuchSession",
        217 => "IncompleteTransactionHistory",
        225 => "TransactionTooOld",
        234 => "RetryChangeStream",
        237 => "CursorKilled",
        244 => "TransactionAborted",
        251 => "NoSuchTransaction",
        256 => "TransactionCommitted",
        260 => "InvalidResumeToken",
        262 => "ExceededTimeLimit",
        263 => "OperationNotSupportedInTransaction",
        280 => "ChangeStreamFatalError",
        286 => "ChangeStreamHistoryLost",
        358 => "InternalTransactionNotSupported",
        371 => "UserWritesBlocked",
        9001 => "SocketException",
        10107 => "NotWritablePrimary",
        11000 => "DuplicateKey",
        11600 => "InterruptedAtShutdown",
        11601 => "Interrupted",
        11602 => "InterruptedDueToReplStateChange",
        13297 => "DatabaseDifferCase",
        13435 => "NotPrimaryNoSecondaryOk",
        13436 => "NotPrimaryOrSecondary",
        5 => "GraphContainsCycle",
        10 => "CannotMutateObject",
        21 => "EmptyArrayOperation",
        47 => "NoMatchingDocument",
        56 => "EmptyFieldName",
        57 => "DottedFieldName",
        74 => "NodeNotFound",
        76 => "NoReplicationEnabled",
        117 => "ConflictingOperationInProgress",
        123 => "NotAReplicaSet",
        143 => "CursorInUse",
        165 => "ViewDepthLimitExceeded",
        171 => "CannotIndexParallelArrays",
        216 => "ElectionInProgress",
        352 => "UnsupportedOpQueryCommand",
        359 => "CannotConvertIndexToUnique",
        10058 => "LegacyNotPrimary",
        10334 => "BSONObjectTooLarge",
        50768 => "Location50768",
        other => location_name(other),
    }
}

/// `Location<code>` names: mongod names assertion codes that have no entry in
/// `error_codes.yml` after the code. A fixed table keeps them `'static`.
fn location_name(code: i32) -> &'static str {
    match code {
        15974 => "Location15974",
        15975 => "Location15975",
        16410 => "Location16410",
        17419 => "Location17419",
        31025 => "Location31025",
        31254 => "Location31254",
        31387 => "Location31387",
        40324 => "Location40324",
        40414 => "Location40414",
        40415 => "Location40415",
        40573 => "Location40573",
        50692 => "Location50692",
        51024 => "Location51024",
        _ => "UnknownError",
    }
}
