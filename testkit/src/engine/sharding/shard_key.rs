//! Shard keys: parsing a key pattern, extracting a document's shard key, and the query and
//! index rules that depend on it, as mongod's `ShardKeyPattern` implements them.
//!
//! A shard key value is a document with the pattern's field names (dotted paths stay dotted)
//! and, for the hashed field, `NumberLong(hash64(value))`. Values compare in the server's
//! order; [`ShardKey::encode`] turns one into KeyString-like bytes so chunk lookups are byte
//! comparisons.

use bson::{Bson, Document, RawBsonRef, RawDocument, doc};

use crate::engine::index::shell_format_document;
use crate::error::{CommandError, to_bson};
use crate::query::compare::compare_bson;
use crate::query::hashed::{DEFAULT_SEED, hash64};
use crate::query::keystring;

/// One field of a shard key pattern.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyField {
    /// The (possibly dotted) path.
    pub path: String,
    /// True for the `"hashed"` field.
    pub hashed: bool,
}

/// A parsed shard key pattern.
#[derive(Debug, Clone, PartialEq)]
pub struct ShardKey {
    /// The pattern as given (`{a: 1, b: "hashed"}`).
    pub pattern: Document,
    /// Its fields in order.
    pub fields: Vec<KeyField>,
}

/// The error of a document whose shard key path meets an array.
pub fn array_in_shard_key() -> CommandError {
    CommandError::new(
        61,
        "Shard key cannot contain array values or array descendants.",
    )
}

impl ShardKey {
    /// Parses a key pattern with `ShardKeyPattern`'s rules: non-empty; every field a path without
    /// empty parts whose value is the number 1, or `"hashed"` for at most one field.
    pub fn parse(pattern: &Document) -> Result<ShardKey, CommandError> {
        if pattern.is_empty() {
            return Err(CommandError::bad_value("Shard key is empty"));
        }
        let mut fields = Vec::with_capacity(pattern.len());
        let mut hashed_seen = false;
        for (name, value) in pattern {
            if name.is_empty() {
                return Err(CommandError::bad_value(format!("Field {name} is empty")));
            }
            if name.split('.').any(str::is_empty) {
                return Err(CommandError::bad_value(format!(
                    "Field {name} contains empty parts"
                )));
            }
            let hashed = matches!(value, Bson::String(s) if s == "hashed");
            let one = match value {
                Bson::Int32(n) => *n == 1,
                Bson::Int64(n) => *n == 1,
                // `safeNumberInt` truncates, so 1.5 counts as 1.
                Bson::Double(d) => d.is_finite() && d.trunc() == 1.0,
                Bson::Decimal128(d) => d.to_string().parse::<f64>().is_ok_and(|f| f.trunc() == 1.0),
                _ => false,
            };
            if !(one || (hashed && !hashed_seen)) {
                return Err(CommandError::bad_value(format!(
                    "Shard key {} can contain at most one 'hashed' field, and/or multiple numerical fields set to a value of 1. Failed to parse field {name}",
                    shell_format_document(pattern)
                )));
            }
            hashed_seen |= hashed;
            fields.push(KeyField {
                path: name.clone(),
                hashed,
            });
        }
        Ok(ShardKey {
            pattern: pattern.clone(),
            fields,
        })
    }

    /// True when one field is hashed.
    pub fn is_hashed(&self) -> bool {
        self.fields.iter().any(|f| f.hashed)
    }

    /// True when the first field is the hashed one.
    pub fn has_hashed_prefix(&self) -> bool {
        self.fields.first().is_some_and(|f| f.hashed)
    }

    /// `{f: MinKey, ...}`: the lower bound of the first chunk.
    pub fn global_min(&self) -> Document {
        self.fields
            .iter()
            .map(|f| (f.path.clone(), Bson::MinKey))
            .collect()
    }

    /// `{f: MaxKey, ...}`: the upper bound of the last chunk.
    pub fn global_max(&self) -> Document {
        self.fields
            .iter()
            .map(|f| (f.path.clone(), Bson::MaxKey))
            .collect()
    }

    /// `extractShardKeyFromDoc`: the document's shard key value, a missing field counting as
    /// `null`; an array along a path is error 61.
    pub fn extract(&self, doc: &RawDocument) -> Result<Document, CommandError> {
        let mut key = Document::new();
        for field in &self.fields {
            let value = match value_at(doc, &field.path)? {
                Some(v) => v,
                None => RawBsonRef::Null,
            };
            if field.hashed {
                key.insert(field.path.clone(), hash64(value, DEFAULT_SEED));
            } else {
                key.insert(field.path.clone(), to_bson(value)?);
            }
        }
        Ok(key)
    }

    /// The order-preserving bytes of a shard key value (or chunk bound) for this pattern.
    pub fn encode(&self, key: &Document) -> Vec<u8> {
        let mut out = Vec::with_capacity(32);
        for field in &self.fields {
            let value = key.get(&field.path).cloned().unwrap_or(Bson::Null);
            out.extend_from_slice(&keystring::encode_bson(&value));
        }
        out
    }

    /// True when the path of one shard key field meets an array in `doc`.
    pub fn extract_field_is_array(&self, doc: &RawDocument, path: &str) -> bool {
        value_at(doc, path).is_err()
    }

    /// The bytes of a document's shard key ([`extract`](Self::extract) then
    /// [`encode`](Self::encode)).
    pub fn encode_document(&self, doc: &RawDocument) -> Result<Vec<u8>, CommandError> {
        Ok(self.encode(&self.extract(doc)?))
    }

    /// True when `key` has exactly this pattern's fields, none of them an array (mongod's
    /// `isShardKey`, for split points and chunk bounds given by users).
    pub fn is_shard_key(&self, key: &Document) -> bool {
        key.len() == self.fields.len()
            && self.fields.iter().all(|f| {
                key.get(&f.path)
                    .is_some_and(|v| !matches!(v, Bson::Array(_)))
            })
    }

    /// `normalizeShardKey`: the key's fields in pattern order.
    pub fn normalize(&self, key: &Document) -> Document {
        self.fields
            .iter()
            .filter_map(|f| key.get(&f.path).map(|v| (f.path.clone(), v.clone())))
            .collect()
    }

    /// The `documentKey` of a change event (and the `o2` of the oplog entry it comes from):
    /// the shard key fields the document has, by their dotted names and raw (unhashed) values,
    /// then `_id` unless the key already names it.
    pub fn document_key(&self, doc: &RawDocument) -> Result<Document, CommandError> {
        let mut out = Document::new();
        for field in &self.fields {
            if let Some(v) = crate::query::path::get_path(doc, &field.path) {
                out.insert(field.path.clone(), to_bson(v)?);
            }
        }
        if !out.contains_key("_id")
            && let Ok(Some(id)) = doc.get("_id")
        {
            out.insert("_id", to_bson(id)?);
        }
        Ok(out)
    }

    /// `extractShardKeyFromQuery`: the shard key value when the filter has an equality on every
    /// shard key field (directly, via `$eq`, inside `$and`, or through an equality on a parent
    /// document); `None` otherwise. The hashed field's value is hashed.
    pub fn equality_key(&self, filter: &RawDocument) -> Option<Document> {
        let mut equalities = Vec::new();
        collect_equalities(filter, &mut equalities, 0);
        let mut key = Document::new();
        for field in &self.fields {
            let value = equality_for(&equalities, &field.path)?;
            if matches!(
                value,
                RawBsonRef::Array(_) | RawBsonRef::RegularExpression(_) | RawBsonRef::Undefined
            ) {
                return None;
            }
            if field.hashed {
                key.insert(field.path.clone(), hash64(value, DEFAULT_SEED));
            } else {
                key.insert(field.path.clone(), to_bson(value).ok()?);
            }
        }
        Some(key)
    }

    /// `isUniqueIndexCompatible`: a unique index is allowed on a sharded collection when it
    /// starts with `_id` or the shard key's field names are a prefix of its own.
    pub fn is_unique_index_compatible(&self, index_key: &Document) -> bool {
        if index_key.keys().next().is_some_and(|k| k == "_id") {
            return true;
        }
        let names: Vec<&String> = index_key.keys().collect();
        self.fields.len() <= names.len()
            && self
                .fields
                .iter()
                .zip(names)
                .all(|(field, name)| &field.path == name)
    }

    /// True when the pattern is a prefix of an index key pattern, field names and values alike
    /// (`{a: 1}` of `{a: 1, b: 1}`, `{a: "hashed"}` of itself): the index can support the key.
    pub fn is_prefix_of(&self, index_key: &Document) -> bool {
        self.pattern.len() <= index_key.len()
            && self
                .pattern
                .iter()
                .zip(index_key.iter())
                .all(|((a, av), (b, bv))| {
                    a == b && compare_bson(av, bv) == std::cmp::Ordering::Equal
                })
    }

    /// The index name mongod gives the shard key index it creates (`a_1`, `x_hashed`).
    pub fn index_name(&self) -> String {
        let mut name = String::new();
        for (i, (k, v)) in self.pattern.iter().enumerate() {
            if i > 0 {
                name.push('_');
            }
            name.push_str(k);
            name.push('_');
            match v {
                Bson::String(s) => name.push_str(s),
                Bson::Int32(n) => name.push_str(&n.to_string()),
                Bson::Int64(n) => name.push_str(&n.to_string()),
                Bson::Double(d) => name.push_str(&(d.trunc() as i64).to_string()),
                other => name.push_str(&other.to_string()),
            }
        }
        name
    }

    /// The shard key pattern as mongod prints it in messages (`{ a: 1 }`).
    pub fn display(&self) -> String {
        shell_format_document(&self.pattern)
    }
}

/// `getFieldDottedOrArray`: the value at a dotted path, `None` when a component is missing or a
/// non-document is met before the end; an array anywhere along the path is error 61.
fn value_at<'a>(doc: &'a RawDocument, path: &str) -> Result<Option<RawBsonRef<'a>>, CommandError> {
    let mut current = doc;
    let mut parts = path.split('.').peekable();
    while let Some(part) = parts.next() {
        let value = match current.get(part) {
            Ok(Some(v)) => v,
            _ => return Ok(None),
        };
        if matches!(value, RawBsonRef::Array(_)) {
            return Err(array_in_shard_key());
        }
        if parts.peek().is_none() {
            return Ok(Some(value));
        }
        match value {
            RawBsonRef::Document(d) => current = d,
            _ => return Ok(None),
        }
    }
    Ok(None)
}

/// Collects `(path, value)` equality predicates of a filter's top level and its `$and`s.
fn collect_equalities<'a>(
    filter: &'a RawDocument,
    out: &mut Vec<(&'a str, RawBsonRef<'a>)>,
    depth: usize,
) {
    if depth > 20 {
        return;
    }
    for element in filter.iter().flatten() {
        let (key, value) = element;
        let key = key.as_str();
        if key == "$and" {
            if let RawBsonRef::Array(items) = value {
                for item in items.into_iter().flatten() {
                    if let RawBsonRef::Document(d) = item {
                        collect_equalities(d, out, depth + 1);
                    }
                }
            }
            continue;
        }
        if key.starts_with('$') {
            continue;
        }
        match value {
            RawBsonRef::Document(d) if is_operator_document(d) => {
                if let Ok(Some(eq)) = d.get("$eq") {
                    out.push((key, eq));
                }
            }
            other => out.push((key, other)),
        }
    }
}

fn is_operator_document(d: &RawDocument) -> bool {
    d.iter()
        .flatten()
        .next()
        .is_some_and(|(k, _)| k.as_str().starts_with('$'))
}

/// The equality value for `path`: a direct one, or a sub-value of an equality on a parent
/// document (`{a: {b: 1}}` gives `a.b`).
fn equality_for<'a>(
    equalities: &[(&'a str, RawBsonRef<'a>)],
    path: &str,
) -> Option<RawBsonRef<'a>> {
    if let Some((_, v)) = equalities.iter().find(|(p, _)| *p == path) {
        return Some(*v);
    }
    for (parent, value) in equalities {
        if let Some(rest) = path.strip_prefix(parent).and_then(|r| r.strip_prefix('.'))
            && let RawBsonRef::Document(d) = value
        {
            return crate::query::path::get_path(d, rest);
        }
    }
    None
}

/// `{_id: 1}`: the `_id` index key, compatible with every shard key.
pub fn id_key() -> Document {
    doc! { "_id": 1 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::rawdoc;

    #[test]
    fn parses_patterns_like_mongod() {
        assert!(ShardKey::parse(&doc! {"a": 1, "b.c": 1}).is_ok());
        assert!(ShardKey::parse(&doc! {"a": "hashed", "b": 1}).is_ok());
        assert!(ShardKey::parse(&doc! {"a": 1.0}).is_ok());
        for bad in [
            doc! {},
            doc! {"a": -1},
            doc! {"a": "hashed", "b": "hashed"},
            doc! {"a": "text"},
            doc! {"a..b": 1},
            doc! {"": 1},
        ] {
            assert_eq!(ShardKey::parse(&bad).unwrap_err().code, 2, "{bad}");
        }
        let err = ShardKey::parse(&doc! {"a": -1}).unwrap_err();
        assert!(
            err.message.contains("Failed to parse field a"),
            "{}",
            err.message
        );
    }

    #[test]
    fn extracts_keys_with_nulls_hashes_and_array_errors() {
        let key = ShardKey::parse(&doc! {"a.b": 1, "c": "hashed"}).unwrap();
        let k = key.extract(&rawdoc! {"a": {"b": 5}, "c": 42}).unwrap();
        assert_eq!(k.get("a.b"), Some(&Bson::Int32(5)));
        let check = rawdoc! {"check": 42};
        assert_eq!(
            k.get("c"),
            Some(&Bson::Int64(hash64(
                check.get("check").unwrap().unwrap(),
                0
            )))
        );
        let missing = key.extract(&rawdoc! {"c": 1}).unwrap();
        assert_eq!(missing.get("a.b"), Some(&Bson::Null));
        assert_eq!(
            key.extract(&rawdoc! {"a": [{"b": 1}], "c": 1})
                .unwrap_err()
                .code,
            61
        );
    }

    #[test]
    fn document_key_puts_the_shard_key_first() {
        let key = ShardKey::parse(&doc! {"user": 1}).unwrap();
        let dk = key
            .document_key(&rawdoc! {"_id": 7, "x": 1, "user": "u"})
            .unwrap();
        assert_eq!(dk, doc! {"user": "u", "_id": 7});
        let id_key = ShardKey::parse(&doc! {"_id": "hashed"}).unwrap();
        assert_eq!(
            id_key.document_key(&rawdoc! {"_id": 7, "x": 1}).unwrap(),
            doc! {"_id": 7}
        );
    }

    #[test]
    fn finds_full_equalities_in_filters() {
        let key = ShardKey::parse(&doc! {"a": 1, "b.c": 1}).unwrap();
        assert_eq!(
            key.equality_key(&rawdoc! {"a": 1, "b.c": {"$eq": 2}}),
            Some(doc! {"a": 1, "b.c": 2})
        );
        assert_eq!(
            key.equality_key(&rawdoc! {"$and": [{"a": 1}, {"b": {"c": 3}}]}),
            Some(doc! {"a": 1, "b.c": 3})
        );
        assert_eq!(key.equality_key(&rawdoc! {"a": 1}), None);
        assert_eq!(key.equality_key(&rawdoc! {"a": {"$gt": 1}, "b.c": 1}), None);
        assert_eq!(key.equality_key(&rawdoc! {"a": [1], "b.c": 1}), None);
    }

    #[test]
    fn unique_index_and_prefix_rules() {
        let key = ShardKey::parse(&doc! {"a": 1}).unwrap();
        assert!(key.is_unique_index_compatible(&doc! {"a": 1, "b": 1}));
        assert!(key.is_unique_index_compatible(&doc! {"_id": 1, "b": 1}));
        assert!(!key.is_unique_index_compatible(&doc! {"b": 1}));
        assert!(key.is_prefix_of(&doc! {"a": 1, "b": -1}));
        assert!(!key.is_prefix_of(&doc! {"a": -1}));
        assert!(!key.is_prefix_of(&doc! {"b": 1, "a": 1}));
        assert_eq!(key.index_name(), "a_1");
        assert_eq!(
            ShardKey::parse(&doc! {"x": "hashed"}).unwrap().index_name(),
            "x_hashed"
        );
    }
}
