//! Reading fields of server replies with errors that say which field of which reply was wrong.
//!
//! A reply from a misbehaving server (or a proxy in between) must give a clear error, never a
//! panic or a silently wrong value.

use bson::{Bson, Document};

use super::error::{ClusterError, Side};

/// A reply to one command, with its context for error messages.
pub struct Reply<'a> {
    side: Side,
    command: &'a str,
    doc: &'a Document,
}

impl<'a> Reply<'a> {
    /// Wraps a reply.
    pub fn new(side: Side, command: &'a str, doc: &'a Document) -> Self {
        Self { side, command, doc }
    }

    fn error(&self, detail: String) -> ClusterError {
        ClusterError::InvalidReply {
            side: self.side,
            command: self.command.to_owned(),
            detail,
        }
    }

    /// A required string field.
    pub fn str(&self, key: &str) -> Result<&'a str, ClusterError> {
        match self.doc.get(key) {
            Some(Bson::String(s)) => Ok(s),
            Some(other) => Err(self.error(format!(
                "`{key}` is {:?}, expected a string",
                other.element_type()
            ))),
            None => Err(self.error(format!("`{key}` is missing"))),
        }
    }

    /// An optional string field (absent is `None`; present with another type is an error).
    pub fn opt_str(&self, key: &str) -> Result<Option<&'a str>, ClusterError> {
        match self.doc.get(key) {
            None | Some(Bson::Null) => Ok(None),
            Some(Bson::String(s)) => Ok(Some(s)),
            Some(other) => Err(self.error(format!(
                "`{key}` is {:?}, expected a string",
                other.element_type()
            ))),
        }
    }

    /// A required document field.
    pub fn doc(&self, key: &str) -> Result<&'a Document, ClusterError> {
        match self.doc.get(key) {
            Some(Bson::Document(d)) => Ok(d),
            Some(other) => Err(self.error(format!(
                "`{key}` is {:?}, expected a document",
                other.element_type()
            ))),
            None => Err(self.error(format!("`{key}` is missing"))),
        }
    }

    /// A required array field.
    pub fn array(&self, key: &str) -> Result<&'a Vec<Bson>, ClusterError> {
        match self.doc.get(key) {
            Some(Bson::Array(a)) => Ok(a),
            Some(other) => Err(self.error(format!(
                "`{key}` is {:?}, expected an array",
                other.element_type()
            ))),
            None => Err(self.error(format!("`{key}` is missing"))),
        }
    }

    /// A non-negative integer field of any numeric type (servers mix int32, int64 and double
    /// for sizes and counts); absent is `None`.
    pub fn opt_u64(&self, key: &str) -> Result<Option<u64>, ClusterError> {
        match self.doc.get(key) {
            None | Some(Bson::Null) => Ok(None),
            Some(value) => as_u64(value).map(Some).ok_or_else(|| {
                self.error(format!(
                    "`{key}` is {value}, expected a non-negative number"
                ))
            }),
        }
    }

    /// A boolean field (absent is `None`). Servers answer some flags as numbers.
    pub fn opt_bool(&self, key: &str) -> Result<Option<bool>, ClusterError> {
        match self.doc.get(key) {
            None | Some(Bson::Null) => Ok(None),
            Some(Bson::Boolean(b)) => Ok(Some(*b)),
            Some(value) => as_u64(value)
                .map(|n| Some(n != 0))
                .ok_or_else(|| self.error(format!("`{key}` is {value}, expected a boolean"))),
        }
    }

    /// A nested document as another reply (for error messages that name the path).
    pub fn nested(&self, doc: &'a Document) -> Reply<'a> {
        Reply::new(self.side, self.command, doc)
    }
}

/// A non-negative numeric value of any BSON numeric type.
pub fn as_u64(value: &Bson) -> Option<u64> {
    match value {
        Bson::Int32(n) => u64::try_from(*n).ok(),
        Bson::Int64(n) => u64::try_from(*n).ok(),
        Bson::Double(f) if f.is_finite() && *f >= 0.0 => Some(*f as u64),
        _ => None,
    }
}
