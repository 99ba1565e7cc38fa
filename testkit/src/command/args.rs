//! Reading command arguments: generic arguments and typed field access with mongod's errors.

use bson::{RawBsonRef, RawDocument, RawDocumentBuf};

use crate::command::Request;
use crate::error::{CommandError, to_document};
use crate::wire::DocumentSequence;

/// Builds a [`Request`] from an OP_MSG body and its sequences.
pub fn parse_request(
    body: RawDocumentBuf,
    sequences: Vec<DocumentSequence>,
) -> Result<Request, CommandError> {
    let name = match body.iter().next() {
        Some(Ok((k, _))) => k.as_str().to_string(),
        _ => return Err(CommandError::failed_to_parse("Empty command object")),
    };
    let db = match body.get("$db") {
        Ok(Some(RawBsonRef::String(s))) => s.to_string(),
        Ok(Some(_)) => return Err(CommandError::type_mismatch("$db must be a string")),
        _ => {
            return Err(CommandError::new(
                40571,
                "OP_MSG requests require a $db argument",
            ));
        }
    };
    let (lsid, lsid_bytes) = match body.get("lsid") {
        Ok(Some(RawBsonRef::Document(d))) => {
            let bytes = match d.get("id") {
                Ok(Some(RawBsonRef::Binary(b))) => Some(b.bytes.to_vec()),
                _ => {
                    return Err(CommandError::new(
                        40414,
                        "BSON field 'OperationSessionInfo.lsid.id' is missing but a required field",
                    ));
                }
            };
            (Some(to_document(d)?), bytes)
        }
        Ok(Some(_)) => return Err(CommandError::type_mismatch("lsid must be a document")),
        _ => (None, None),
    };
    let txn_number = match body.get("txnNumber") {
        Ok(Some(RawBsonRef::Int64(n))) => Some(n),
        Ok(Some(RawBsonRef::Int32(n))) => Some(i64::from(n)),
        Ok(Some(_)) => return Err(CommandError::type_mismatch("txnNumber must be a number")),
        _ => None,
    };
    let max_time_ms = match body.get("maxTimeMS") {
        Ok(Some(v)) => {
            let n =
                as_i64(v).ok_or_else(|| CommandError::bad_value("maxTimeMS must be a number"))?;
            // mongod's IDL takes maxTimeMS as a non-negative 32-bit value.
            if n < 0 || n > i64::from(i32::MAX) {
                return Err(CommandError::bad_value(format!(
                    "{n} value for maxTimeMS is out of range [0, {}]",
                    i32::MAX
                )));
            }
            (n > 0).then_some(n as u64)
        }
        _ => None,
    };
    let autocommit = match body.get("autocommit") {
        Ok(Some(RawBsonRef::Boolean(b))) => Some(b),
        _ => None,
    };
    Ok(Request {
        name,
        db,
        body,
        sequences,
        lsid,
        lsid_bytes,
        txn_number,
        max_time_ms,
        autocommit,
    })
}

/// A number as i64 (int32, int64, or an integral double), as mongod's `safeNumberLong`.
pub fn as_i64(v: RawBsonRef<'_>) -> Option<i64> {
    match v {
        RawBsonRef::Int32(n) => Some(i64::from(n)),
        RawBsonRef::Int64(n) => Some(n),
        RawBsonRef::Double(d) if d.is_finite() => Some(d as i64),
        RawBsonRef::Decimal128(d) => d.to_string().parse::<f64>().ok().map(|f| f as i64),
        _ => None,
    }
}

/// A truthy value as mongod's `trueValue()` sees it (numbers ≠ 0, `true`).
pub fn truthy(v: RawBsonRef<'_>) -> bool {
    match v {
        RawBsonRef::Boolean(b) => b,
        RawBsonRef::Int32(n) => n != 0,
        RawBsonRef::Int64(n) => n != 0,
        RawBsonRef::Double(d) => d != 0.0,
        RawBsonRef::Null | RawBsonRef::Undefined => false,
        _ => true,
    }
}

/// Typed access to the fields of a command document.
pub struct Fields<'a> {
    /// The command name, for error messages (`BSON field 'find.limit' ...`).
    pub command: &'a str,
    /// The document.
    pub doc: &'a RawDocument,
}

impl<'a> Fields<'a> {
    /// Wraps a document.
    pub fn new(command: &'a str, doc: &'a RawDocument) -> Fields<'a> {
        Fields { command, doc }
    }

    /// A field's raw value, if present.
    pub fn get(&self, key: &str) -> Option<RawBsonRef<'a>> {
        self.doc.get(key).ok().flatten()
    }

    fn wrong_type(&self, key: &str, expected: &str, v: RawBsonRef<'_>) -> CommandError {
        CommandError::type_mismatch(format!(
            "BSON field '{}.{key}' is the wrong type '{}', expected type '{expected}'",
            self.command,
            type_name(v)
        ))
    }

    /// An optional string.
    pub fn str(&self, key: &str) -> Result<Option<&'a str>, CommandError> {
        match self.get(key) {
            None => Ok(None),
            Some(RawBsonRef::String(s)) => Ok(Some(s)),
            Some(v) => Err(self.wrong_type(key, "string", v)),
        }
    }

    /// An optional boolean (numbers are accepted as mongod's IDL does for `bool` fields).
    pub fn bool(&self, key: &str) -> Result<Option<bool>, CommandError> {
        match self.get(key) {
            None | Some(RawBsonRef::Null) => Ok(None),
            Some(RawBsonRef::Boolean(b)) => Ok(Some(b)),
            Some(v @ (RawBsonRef::Int32(_) | RawBsonRef::Int64(_) | RawBsonRef::Double(_))) => {
                Ok(Some(truthy(v)))
            }
            Some(v) => Err(self.wrong_type(key, "bool", v)),
        }
    }

    /// An optional integer.
    pub fn i64(&self, key: &str) -> Result<Option<i64>, CommandError> {
        match self.get(key) {
            None | Some(RawBsonRef::Null) => Ok(None),
            Some(v) => as_i64(v)
                .map(Some)
                .ok_or_else(|| self.wrong_type(key, "long", v)),
        }
    }

    /// An optional document.
    pub fn doc(&self, key: &str) -> Result<Option<&'a RawDocument>, CommandError> {
        match self.get(key) {
            None | Some(RawBsonRef::Null) => Ok(None),
            Some(RawBsonRef::Document(d)) => Ok(Some(d)),
            Some(v) => Err(self.wrong_type(key, "object", v)),
        }
    }

    /// An optional array.
    pub fn array(&self, key: &str) -> Result<Option<&'a bson::RawArray>, CommandError> {
        match self.get(key) {
            None => Ok(None),
            Some(RawBsonRef::Array(a)) => Ok(Some(a)),
            Some(v) => Err(self.wrong_type(key, "array", v)),
        }
    }

    /// The command's collection name (the value of the first field).
    pub fn collection(&self) -> Result<&'a str, CommandError> {
        match self.get(self.command) {
            Some(RawBsonRef::String(s)) if !s.is_empty() => Ok(s),
            Some(RawBsonRef::String(_)) => Err(CommandError::invalid_namespace(format!(
                "Invalid namespace specified for {}",
                self.command
            ))),
            Some(v) => Err(CommandError::new(
                73,
                format!("collection name has invalid type {}", type_name(v)),
            )),
            None => Err(CommandError::failed_to_parse("missing collection name")),
        }
    }
}

/// mongod's name of a BSON type, as in `$type` and error messages.
pub fn type_name(v: RawBsonRef<'_>) -> &'static str {
    match v {
        RawBsonRef::Double(_) => "double",
        RawBsonRef::String(_) => "string",
        RawBsonRef::Document(_) => "object",
        RawBsonRef::Array(_) => "array",
        RawBsonRef::Binary(_) => "binData",
        RawBsonRef::Undefined => "undefined",
        RawBsonRef::ObjectId(_) => "objectId",
        RawBsonRef::Boolean(_) => "bool",
        RawBsonRef::DateTime(_) => "date",
        RawBsonRef::Null => "null",
        RawBsonRef::RegularExpression(_) => "regex",
        RawBsonRef::DbPointer(_) => "dbPointer",
        RawBsonRef::JavaScriptCode(_) => "javascript",
        RawBsonRef::Symbol(_) => "symbol",
        RawBsonRef::JavaScriptCodeWithScope(_) => "javascriptWithScope",
        RawBsonRef::Int32(_) => "int",
        RawBsonRef::Timestamp(_) => "timestamp",
        RawBsonRef::Int64(_) => "long",
        RawBsonRef::Decimal128(_) => "decimal",
        RawBsonRef::MaxKey => "maxKey",
        RawBsonRef::MinKey => "minKey",
    }
}

/// The documents of an array argument that may also arrive as a kind-1 sequence
/// (`documents`, `updates`, `deletes`).
pub fn array_or_sequence(
    request: &Request,
    key: &str,
) -> Result<Vec<RawDocumentBuf>, CommandError> {
    if let Some(seq) = request.sequences.iter().find(|s| s.identifier == key) {
        return Ok(seq.documents.clone());
    }
    let fields = Fields::new(&request.name, &request.body);
    let Some(array) = fields.array(key)? else {
        return Err(CommandError::new(
            40414,
            format!(
                "BSON field '{}.{key}' is missing but a required field",
                request.name
            ),
        ));
    };
    let mut out = Vec::new();
    for item in array {
        match item {
            Ok(RawBsonRef::Document(d)) => out.push(d.to_owned()),
            Ok(v) => {
                return Err(CommandError::type_mismatch(format!(
                    "BSON field '{}.{key}' is the wrong type '{}', expected type 'object'",
                    request.name,
                    type_name(v)
                )));
            }
            Err(e) => return Err(CommandError::new(22, e.to_string())),
        }
    }
    Ok(out)
}

/// Refuses fields a command does not know, as mongod's IDL parser does (40415 "BSON field
/// 'find.x' is an unknown field."). Generic arguments (`$db`, `lsid`, `readConcern`, ...) are
/// always accepted.
pub fn check_fields(request: &Request, known: &[&str]) -> Result<(), CommandError> {
    for element in request.body.iter() {
        let (key, _) = element?;
        let key = key.as_str();
        if key == request.name
            || known.contains(&key)
            || crate::command::catalog::is_generic_argument(key)
        {
            continue;
        }
        return Err(CommandError::unknown_field(&request.name, key));
    }
    Ok(())
}

/// Refuses what this server would otherwise answer wrongly: a non-simple `collation` (string
/// comparison here is always binary).
pub fn refuse_collation(
    command: &str,
    collation: Option<&RawDocument>,
) -> Result<(), CommandError> {
    if let Some(c) = collation
        && !matches!(c.get("locale"), Ok(Some(RawBsonRef::String("simple"))))
    {
        return Err(CommandError::bad_value(format!(
            "{command}: collations other than 'simple' are not supported by this test server (strings compare by bytes)"
        )));
    }
    Ok(())
}
