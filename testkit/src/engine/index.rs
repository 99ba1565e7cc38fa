//! Secondary indexes: specifications as `createIndexes` accepts them, and their entries.
//!
//! Entries are `(key bytes, record id)` pairs in a `BTreeSet`, with keys from
//! [`query::keystring::index_keys`](crate::query::keystring::index_keys), so byte order is the
//! server's order and multikey documents have one entry per array element. Unique indexes are
//! enforced at write time with mongod's duplicate-key error. Hashed indexes are keyed on the
//! hash of their hashed field, as mongod's, so `hint` + `min`/`max` ranges on them match a real
//! server's. Other special index types (`text`, `2dsphere`, ...) are stored and listed, and
//! keyed on the raw field values, which is enough for uniqueness but not for text or geo
//! queries (which this server does not run).

use std::collections::BTreeSet;

use bson::{Bson, Document, RawDocument};

use crate::engine::collection::RecordId;
use crate::error::{CommandError, to_raw};
use crate::query::Direction;
use crate::query::filter::Filter;
use crate::query::keystring;

/// The options `createIndexes` accepts in an index specification (besides `key` and `name`).
const KNOWN_OPTIONS: &[&str] = &[
    "v",
    "key",
    "name",
    "unique",
    "sparse",
    "partialFilterExpression",
    "expireAfterSeconds",
    "hidden",
    "collation",
    "background",
    "weights",
    "default_language",
    "language_override",
    "textIndexVersion",
    "2dsphereIndexVersion",
    "bits",
    "min",
    "max",
    "wildcardProjection",
    "storageEngine",
    "prepareUnique",
    "clustered",
    "ns",
];

/// A parsed index specification.
#[derive(Debug, Clone)]
pub struct IndexSpec {
    /// The index name.
    pub name: String,
    /// The key pattern as given (`{a: 1, b: -1}`).
    pub key: Document,
    /// The key pattern as paths and directions.
    pub pattern: Vec<(String, Direction)>,
    /// Unique constraint.
    pub unique: bool,
    /// Skip documents missing every indexed field.
    pub sparse: bool,
    /// `prepareUnique`: new duplicates are refused while existing ones stay (the first step
    /// of converting an index to unique with `collMod`).
    pub prepare_unique: bool,
    /// Only documents matching this filter are indexed.
    pub partial: Option<Filter>,
    /// The specification as `listIndexes` returns it (`v: 2` first, then `key`, `name`, options).
    pub spec: Document,
}

impl IndexSpec {
    /// Parses one element of `createIndexes.indexes`, validating what mongod validates.
    pub fn parse(doc: &Document) -> Result<IndexSpec, CommandError> {
        let key = match doc.get("key") {
            Some(Bson::Document(k)) if !k.is_empty() => k.clone(),
            Some(Bson::Document(_)) => {
                return Err(CommandError::new(67, "Index keys cannot be empty."));
            }
            _ => {
                return Err(CommandError::failed_to_parse(
                    "The 'key' field is a required property of an index specification",
                ));
            }
        };
        let name = match doc.get("name") {
            Some(Bson::String(n)) if !n.is_empty() => n.clone(),
            Some(Bson::String(_)) => {
                return Err(CommandError::new(67, "index name cannot be empty"));
            }
            _ => {
                return Err(CommandError::failed_to_parse(
                    "The 'name' field is a required property of an index specification",
                ));
            }
        };
        for (option, _) in doc {
            if !KNOWN_OPTIONS.contains(&option.as_str()) {
                return Err(CommandError::new(
                    197,
                    format!(
                        "The field '{option}' is not valid for an index specification. Specification: {doc}"
                    ),
                ));
            }
        }
        let mut pattern = Vec::with_capacity(key.len());
        for (field, value) in &key {
            let direction = match value {
                Bson::Int32(n) if *n < 0 => Direction::Descending,
                Bson::Int64(n) if *n < 0 => Direction::Descending,
                Bson::Double(d) if *d < 0.0 => Direction::Descending,
                Bson::Int32(0) | Bson::Int64(0) => {
                    return Err(CommandError::new(
                        67,
                        format!("Values in the index key pattern can't be 0. Key pattern: {key}"),
                    ));
                }
                Bson::Int32(_) | Bson::Int64(_) | Bson::Double(_) | Bson::Decimal128(_) => {
                    Direction::Ascending
                }
                Bson::String(kind)
                    if matches!(
                        kind.as_str(),
                        "text" | "2d" | "2dsphere" | "hashed" | "geoHaystack"
                    ) =>
                {
                    Direction::Ascending
                }
                other => {
                    return Err(CommandError::new(
                        67,
                        format!("Unknown index plugin '{other}'"),
                    ));
                }
            };
            pattern.push((field.clone(), direction));
        }
        let flag = |k: &str| matches!(doc.get(k), Some(Bson::Boolean(true)));
        let unique = flag("unique");
        let sparse = flag("sparse");
        let prepare_unique = flag("prepareUnique");
        let partial = match doc.get("partialFilterExpression") {
            Some(Bson::Document(f)) => Some(Filter::parse(&to_raw(f)?)?),
            Some(_) => {
                return Err(CommandError::type_mismatch(
                    "partialFilterExpression must be a document",
                ));
            }
            None => None,
        };
        if let Some(v) = doc.get("expireAfterSeconds")
            && !matches!(v, Bson::Int32(_) | Bson::Int64(_) | Bson::Double(_))
        {
            return Err(CommandError::type_mismatch(
                "TTL index 'expireAfterSeconds' option must be numeric",
            ));
        }
        let mut spec = Document::new();
        spec.insert("v", 2);
        spec.insert("key", key.clone());
        spec.insert("name", name.clone());
        for (k, v) in doc {
            if !matches!(k.as_str(), "v" | "key" | "name" | "ns" | "background") {
                spec.insert(k.clone(), v.clone());
            }
        }
        Ok(IndexSpec {
            name,
            key,
            pattern,
            unique,
            sparse,
            prepare_unique,
            partial,
            spec,
        })
    }

    /// True when `other` has the same options (ignoring the name), as mongod compares specs to
    /// decide between "already exists" and a conflict.
    pub fn same_options(&self, other: &IndexSpec) -> bool {
        let strip = |d: &Document| {
            let mut d = d.clone();
            d.remove("name");
            d.remove("v");
            d
        };
        strip(&self.spec) == strip(&other.spec)
    }

    /// The index keys of a document (empty when the document is not indexed: sparse with every
    /// field missing, or not matching the partial filter).
    pub fn keys(&self, doc: &RawDocument) -> Result<Vec<Vec<u8>>, CommandError> {
        if let Some(filter) = &self.partial
            && !filter.matches(doc)?
        {
            return Ok(Vec::new());
        }
        if self.sparse
            && self
                .pattern
                .iter()
                .all(|(path, _)| crate::query::path::distinct_values(doc, path).is_empty())
        {
            return Ok(Vec::new());
        }
        if self.hashed_field().is_some() {
            return self.hashed_keys(doc);
        }
        Ok(keystring::index_keys(doc, &self.pattern)?)
    }

    /// The path of the `"hashed"` field, if the index has one.
    pub fn hashed_field(&self) -> Option<&str> {
        self.key
            .iter()
            .find(|(_, v)| matches!(v, Bson::String(s) if s == "hashed"))
            .map(|(k, _)| k.as_str())
    }

    /// Keys of an index with a hashed field: as mongod's `ExpressionKeysPrivate::getHashKeys`,
    /// the hashed field's key is `NumberLong(hash64(value))` (`null` when missing; an array is
    /// error 16766), so `min`/`max` bounds and chunk ranges of hashed shard keys compare
    /// against hashes. The other fields are keyed as in any index.
    fn hashed_keys(&self, doc: &RawDocument) -> Result<Vec<Vec<u8>>, CommandError> {
        use crate::query::hashed::{DEFAULT_SEED, hash64};
        let hashed = self.hashed_field().unwrap_or_default();
        let mut keys: Vec<Vec<u8>> = vec![Vec::new()];
        for (path, direction) in &self.pattern {
            let components: Vec<Vec<u8>> = if path == hashed {
                let value =
                    crate::query::path::get_path(doc, path).unwrap_or(bson::RawBsonRef::Null);
                if matches!(value, bson::RawBsonRef::Array(_)) {
                    return Err(CommandError::new(
                        16766,
                        "Error: hashed indexes do not currently support array values",
                    ));
                }
                let mut k = Vec::new();
                keystring::append_component(
                    &mut k,
                    bson::RawBsonRef::Int64(hash64(value, DEFAULT_SEED)),
                    *direction,
                );
                vec![k]
            } else {
                keystring::index_keys(doc, &[(path.clone(), *direction)])?
            };
            let mut next = Vec::with_capacity(keys.len() * components.len());
            for prefix in &keys {
                for c in &components {
                    let mut k = prefix.clone();
                    k.extend_from_slice(c);
                    next.push(k);
                }
            }
            keys = next;
        }
        keys.sort();
        keys.dedup();
        Ok(keys)
    }
}

/// An index: its specification and its entries.
#[derive(Debug, Clone)]
pub struct Index {
    /// The specification.
    pub spec: IndexSpec,
    /// `(key, record)` pairs in key order.
    pub entries: BTreeSet<(Vec<u8>, RecordId)>,
}

impl Index {
    /// An empty index.
    pub fn new(spec: IndexSpec) -> Index {
        Index {
            spec,
            entries: BTreeSet::new(),
        }
    }

    /// True when new duplicate keys are refused.
    pub fn enforces_uniqueness(&self) -> bool {
        self.spec.unique || self.spec.prepare_unique
    }

    /// Groups of records sharing a key (what blocks a conversion to unique).
    pub fn duplicate_groups(&self) -> Vec<Vec<RecordId>> {
        let mut groups = Vec::new();
        let mut current: Option<(&[u8], Vec<RecordId>)> = None;
        for (key, rid) in &self.entries {
            match &mut current {
                Some((k, rids)) if *k == key.as_slice() => rids.push(*rid),
                _ => {
                    if let Some((_, rids)) = current.take()
                        && rids.len() > 1
                    {
                        groups.push(rids);
                    }
                    current = Some((key.as_slice(), vec![*rid]));
                }
            }
        }
        if let Some((_, rids)) = current
            && rids.len() > 1
        {
            groups.push(rids);
        }
        groups
    }

    /// The record other than `except` holding `key`, if any (a unique-index conflict).
    pub fn conflict(&self, key: &[u8], except: Option<RecordId>) -> Option<RecordId> {
        self.entries
            .range((key.to_vec(), 0)..=(key.to_vec(), RecordId::MAX))
            .map(|(_, rid)| *rid)
            .find(|rid| Some(*rid) != except)
    }
}

/// `keyValue` of a duplicate-key error: the document's values for the key pattern fields
/// (`null` for missing ones).
pub fn key_value(pattern: &[(String, Direction)], doc: &RawDocument) -> Document {
    let mut out = Document::new();
    for (path, _) in pattern {
        let value = crate::query::path::get_path(doc, path)
            .and_then(|v| crate::error::to_bson(v).ok())
            .unwrap_or(Bson::Null);
        out.insert(path.clone(), value);
    }
    out
}

/// The E11000 error for a conflict on index `name` of `ns`, with `keyPattern` and `keyValue`.
pub fn duplicate_key_error(
    ns: &str,
    name: &str,
    key_pattern: &Document,
    key_value: &Document,
) -> CommandError {
    CommandError::new(
        11000,
        format!(
            "E11000 duplicate key error collection: {ns} index: {name} dup key: {}",
            shell_format_document(key_value)
        ),
    )
    .with_extra("keyPattern", key_pattern.clone())
    .with_extra("keyValue", key_value.clone())
}

/// Formats a document the way mongod prints values in messages (`{ _id: 1, s: "x" }`).
pub fn shell_format_document(doc: &Document) -> String {
    if doc.is_empty() {
        return "{}".to_string();
    }
    let parts: Vec<String> = doc
        .iter()
        .map(|(k, v)| format!("{k}: {}", shell_format(v)))
        .collect();
    format!("{{ {} }}", parts.join(", "))
}

fn shell_format(v: &Bson) -> String {
    match v {
        Bson::String(s) => format!("\"{s}\""),
        Bson::Int32(n) => n.to_string(),
        Bson::Int64(n) => n.to_string(),
        Bson::Double(d) => {
            if d.fract() == 0.0 && d.is_finite() && d.abs() < 1e15 {
                format!("{d:.1}")
            } else {
                d.to_string()
            }
        }
        Bson::Document(d) => shell_format_document(d),
        Bson::Array(a) => {
            let items: Vec<String> = a.iter().map(shell_format).collect();
            format!("[ {} ]", items.join(", "))
        }
        Bson::ObjectId(o) => format!("ObjectId('{o}')"),
        Bson::Boolean(b) => b.to_string(),
        Bson::Null => "null".to_string(),
        Bson::DateTime(d) => format!("new Date({})", d.timestamp_millis()),
        Bson::Timestamp(t) => format!("Timestamp({}, {})", t.time, t.increment),
        Bson::Decimal128(d) => format!("{d}"),
        Bson::Binary(b) => format!("BinData({}, {})", u8::from(b.subtype), hex_upper(&b.bytes)),
        Bson::MinKey => "MinKey".to_string(),
        Bson::MaxKey => "MaxKey".to_string(),
        Bson::Undefined => "undefined".to_string(),
        other => other.to_string(),
    }
}

fn hex_upper(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::doc;

    #[test]
    fn spec_parsing_validates_like_mongod() {
        let spec =
            IndexSpec::parse(&doc! {"key": {"a": 1, "b": -1}, "name": "a_1_b_-1", "unique": true})
                .unwrap();
        assert!(spec.unique);
        assert_eq!(
            spec.pattern,
            vec![
                ("a".to_string(), Direction::Ascending),
                ("b".to_string(), Direction::Descending)
            ]
        );
        assert_eq!(spec.spec.get_i32("v").unwrap(), 2);
        assert_eq!(
            IndexSpec::parse(&doc! {"key": {"a": 1}, "name": "x", "bogus": 1})
                .unwrap_err()
                .code,
            197
        );
        assert_eq!(
            IndexSpec::parse(&doc! {"key": {"a": 0}, "name": "x"})
                .unwrap_err()
                .code,
            67
        );
    }

    #[test]
    fn duplicate_key_message_matches_mongod() {
        let e = duplicate_key_error("db.c", "x_1", &doc! {"x": 1}, &doc! {"x": "foo"});
        assert_eq!(
            e.message,
            "E11000 duplicate key error collection: db.c index: x_1 dup key: { x: \"foo\" }"
        );
        assert_eq!(
            e.extra.get_document("keyValue").unwrap(),
            &doc! {"x": "foo"}
        );
        assert_eq!(e.code_name, "DuplicateKey");
    }
}
