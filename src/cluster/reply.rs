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

    /// An error about this reply that no single field accessor covers.
    pub fn invalid(&self, detail: impl Into<String>) -> ClusterError {
        self.error(detail.into())
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

    /// An optional document field.
    pub fn opt_doc(&self, key: &str) -> Result<Option<&'a Document>, ClusterError> {
        match self.doc.get(key) {
            None | Some(Bson::Null) => Ok(None),
            Some(Bson::Document(d)) => Ok(Some(d)),
            Some(other) => Err(self.error(format!(
                "`{key}` is {:?}, expected a document",
                other.element_type()
            ))),
        }
    }

    /// An optional array field.
    pub fn opt_array(&self, key: &str) -> Result<Option<&'a Vec<Bson>>, ClusterError> {
        match self.doc.get(key) {
            None | Some(Bson::Null) => Ok(None),
            Some(Bson::Array(a)) => Ok(Some(a)),
            Some(other) => Err(self.error(format!(
                "`{key}` is {:?}, expected an array",
                other.element_type()
            ))),
        }
    }

    /// An optional 32-bit integer field, such as a server error code (any numeric type holding
    /// an integer in range).
    pub fn opt_i32(&self, key: &str) -> Result<Option<i32>, ClusterError> {
        let value = match self.doc.get(key) {
            None | Some(Bson::Null) => return Ok(None),
            Some(value) => value,
        };
        let n = match value {
            Bson::Int32(n) => Some(*n),
            Bson::Int64(n) => i32::try_from(*n).ok(),
            Bson::Double(f) if f.fract() == 0.0 && f.abs() <= f64::from(i32::MAX) => {
                Some(*f as i32)
            }
            _ => None,
        };
        n.map(Some).ok_or_else(|| {
            self.error(format!(
                "`{key}` is {}, expected a 32-bit integer",
                shown(value)
            ))
        })
    }

    /// A non-negative integer field of any numeric type (servers mix int32, int64 and double
    /// for sizes and counts); absent is `None`.
    pub fn opt_u64(&self, key: &str) -> Result<Option<u64>, ClusterError> {
        match self.doc.get(key) {
            None | Some(Bson::Null) => Ok(None),
            Some(value) => as_u64(value).map(Some).ok_or_else(|| {
                self.error(format!(
                    "`{key}` is {}, expected a non-negative number",
                    shown(value)
                ))
            }),
        }
    }

    /// A boolean field (absent is `None`). Servers answer some flags as numbers.
    pub fn opt_bool(&self, key: &str) -> Result<Option<bool>, ClusterError> {
        match self.doc.get(key) {
            None | Some(Bson::Null) => Ok(None),
            Some(Bson::Boolean(b)) => Ok(Some(*b)),
            Some(value) => as_u64(value).map(|n| Some(n != 0)).ok_or_else(|| {
                self.error(format!("`{key}` is {}, expected a boolean", shown(value)))
            }),
        }
    }

    /// A nested document as another reply (for error messages that name the path).
    pub fn nested(&self, doc: &'a Document) -> Reply<'a> {
        Reply::new(self.side, self.command, doc)
    }
}

/// A value for an error message: its text up to 60 characters (a hostile reply may hold
/// megabytes where a number belongs).
fn shown(value: &Bson) -> String {
    let text = value.to_string();
    match text.char_indices().nth(60) {
        Some((cut, _)) => format!("{}… ({:?})", &text[..cut], value.element_type()),
        None => text,
    }
}

/// A non-negative whole number of any BSON numeric type (a fractional double is refused, not
/// truncated: a count or a position of 2.7 is not 2).
pub fn as_u64(value: &Bson) -> Option<u64> {
    match value {
        Bson::Int32(n) => u64::try_from(*n).ok(),
        Bson::Int64(n) => u64::try_from(*n).ok(),
        Bson::Double(f) if f.is_finite() && *f >= 0.0 && f.fract() == 0.0 => Some(*f as u64),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Any BSON value a hostile or broken server could put where a field is expected.
    fn any_value() -> impl Strategy<Value = Bson> {
        let leaf = prop_oneof![
            Just(Bson::Null),
            any::<bool>().prop_map(Bson::Boolean),
            any::<i32>().prop_map(Bson::Int32),
            any::<i64>().prop_map(Bson::Int64),
            any::<f64>().prop_map(Bson::Double),
            ".{0,20}".prop_map(Bson::String),
            (0usize..200_000).prop_map(|n| Bson::String("9".repeat(n))),
            Just(Bson::MinKey),
            Just(Bson::Decimal128(
                "-1".parse()
                    .unwrap_or(bson::Decimal128::from_bytes([0; 16]))
            )),
        ];
        leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Bson::Array),
                prop::collection::vec(("[a-c]{1,2}", inner), 0..4)
                    .prop_map(|kv| Bson::Document(kv.into_iter().collect())),
            ]
        })
    }

    #[test]
    fn error_codes_are_read_from_any_integral_number() {
        let doc = bson::doc! {"a": 11000, "b": 11000_i64, "c": 11000.0, "d": 1.5, "e": 1_i64 << 40};
        let r = Reply::new(Side::Destination, "insert db.c", &doc);
        assert_eq!(r.opt_i32("a").unwrap(), Some(11000));
        assert_eq!(r.opt_i32("b").unwrap(), Some(11000));
        assert_eq!(r.opt_i32("c").unwrap(), Some(11000));
        assert_eq!(r.opt_i32("missing").unwrap(), None);
        assert_eq!(r.opt_u64("c").unwrap(), Some(11000));
        let e = r.opt_u64("d").unwrap_err().to_string();
        assert!(e.contains("`d`") && e.contains("non-negative"), "{e}");
        for bad in ["d", "e"] {
            let e = r.opt_i32(bad).unwrap_err().to_string();
            assert!(
                e.contains("insert db.c") && e.contains("32-bit integer"),
                "{e}"
            );
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Every accessor answers any reply with a value or an error that names the command
        /// and the field, in a bounded message; never a panic.
        #[test]
        fn any_reply_gives_a_value_or_a_named_error(
            fields in prop::collection::vec(("[a-c]{1,2}", any_value()), 0..6),
            key in "[a-c]{1,2}",
        ) {
            let doc: Document = fields.into_iter().collect();
            let r = Reply::new(Side::Source, "listCollections", &doc);
            let errors = [
                r.str(&key).err(),
                r.opt_str(&key).err(),
                r.doc(&key).err(),
                r.array(&key).err(),
                r.opt_u64(&key).err(),
                r.opt_bool(&key).err(),
                r.opt_doc(&key).err(),
                r.opt_array(&key).err(),
                r.opt_i32(&key).err(),
            ];
            for e in errors.into_iter().flatten() {
                let message = e.to_string();
                prop_assert!(message.contains("listCollections"), "{message}");
                prop_assert!(message.contains(&format!("`{key}`")), "{message}");
                prop_assert!(message.len() < 400, "{} bytes", message.len());
            }
        }
    }
}
