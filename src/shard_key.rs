//! Shard keys as the server defines them (`ShardKeyPattern`), for the decisions mongoshift
//! makes about them: which index supports a key, which unique indexes a sharded collection
//! allows, the name of the index `shardCollection` creates, and a document's shard-key values.
//!
//! Server rules followed (MongoDB 6.0/7.0): a key is a list of paths with `1` (ranged) or
//! `"hashed"` (at most one field); an index supports it when the key is a prefix of the index's
//! key pattern (names and values), and the index is neither sparse nor partial, has the simple
//! collation and is not hidden; a unique index on a sharded collection must start with `_id` or
//! with the shard key's fields; a document's missing shard-key field counts as `null`.

use bson::{Bson, Document, RawBsonRef, RawDocument};

use crate::cluster::IndexSpec;

/// One field of a shard key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyField {
    /// The (possibly dotted) path.
    pub path: String,
    /// `"hashed"` rather than `1`.
    pub hashed: bool,
}

/// A shard key pattern.
#[derive(Debug, Clone, PartialEq)]
pub struct ShardKey {
    /// The pattern as the server reports it (`{customer: "hashed"}`, `{region: 1, _id: 1}`).
    pub pattern: Document,
    /// Its fields, in order.
    pub fields: Vec<KeyField>,
}

impl ShardKey {
    /// Reads a pattern; `None` when a value is neither a number nor `"hashed"`.
    pub fn new(pattern: &Document) -> Option<Self> {
        let mut fields = Vec::with_capacity(pattern.len());
        for (path, value) in pattern {
            let hashed = match value {
                Bson::String(s) if s == "hashed" => true,
                v if number(v).is_some() => false,
                _ => return None,
            };
            fields.push(KeyField {
                path: path.clone(),
                hashed,
            });
        }
        (!fields.is_empty()).then(|| Self {
            pattern: pattern.clone(),
            fields,
        })
    }

    /// True when a field is hashed.
    pub fn is_hashed(&self) -> bool {
        self.fields.iter().any(|f| f.hashed)
    }

    /// True when the key is `_id` alone (ranged or hashed): a document's key never changes.
    pub fn is_id_only(&self) -> bool {
        self.fields.len() == 1 && self.fields[0].path == "_id"
    }

    /// The paths, in order.
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.fields.iter().map(|f| f.path.as_str())
    }

    /// True when the key pattern is a prefix of `index_key` (names and values; `1` and `1.0`
    /// are the same value).
    pub fn is_prefix_of(&self, index_key: &Document) -> bool {
        self.pattern.len() <= index_key.len()
            && self
                .pattern
                .iter()
                .zip(index_key.iter())
                .all(|((a, av), (b, bv))| a == b && same_key_value(av, bv))
    }

    /// True when `index` can support this key: a prefix match on an index that is not sparse,
    /// partial or hidden and uses the simple collation.
    pub fn is_supported_by(&self, index: &IndexSpec) -> bool {
        let o = &index.options;
        let collation_simple = match o.get_document("collation") {
            Ok(c) => c.get_str("locale").is_ok_and(|l| l == "simple"),
            Err(_) => true,
        };
        self.is_prefix_of(&index.key)
            && !o.get_bool("sparse").unwrap_or(false)
            && !o.get_bool("hidden").unwrap_or(false)
            && !o.contains_key("partialFilterExpression")
            && collation_simple
    }

    /// `isUniqueIndexCompatible`: a unique index is allowed on a collection sharded on this key
    /// when it starts with `_id` or with the key's field names, in order.
    pub fn allows_unique_index(&self, index_key: &Document) -> bool {
        if index_key.keys().next().is_some_and(|k| k == "_id") {
            return true;
        }
        self.fields.len() <= index_key.len()
            && self
                .fields
                .iter()
                .zip(index_key.keys())
                .all(|(f, name)| &f.path == name)
    }

    /// The name the server gives the index it creates for the key (`a_1`, `x_hashed`,
    /// `region_1__id_1`): each field and its value, joined by `_`.
    pub fn index_name(&self) -> String {
        let parts: Vec<String> = self
            .pattern
            .iter()
            .map(|(k, v)| match v {
                Bson::String(s) => format!("{k}_{s}"),
                other => format!("{k}_{}", number(other).unwrap_or(1.0) as i64),
            })
            .collect();
        parts.join("_")
    }

    /// True when changing `path` may change the document's shard key: the path is a key field,
    /// lies inside one, or contains one.
    pub fn touches(&self, path: &str) -> bool {
        self.paths().any(|k| {
            k == path
                || k.strip_prefix(path).is_some_and(|r| r.starts_with('.'))
                || path.strip_prefix(k).is_some_and(|r| r.starts_with('.'))
        })
    }

    /// The document's value for each key field (`null` when missing, as the server extracts
    /// shard keys), as `(path, value)`; the raw, unhashed values.
    pub fn values<'a>(&'a self, doc: &'a RawDocument) -> Vec<(&'a str, RawBsonRef<'a>)> {
        self.fields
            .iter()
            .map(|f| {
                let value = value_at(doc, &f.path).unwrap_or(RawBsonRef::Null);
                (f.path.as_str(), value)
            })
            .collect()
    }
}

/// The value at a dotted path of a document; `None` when a component is missing or is not a
/// document (shard-key paths cannot go through arrays).
pub fn value_at<'a>(doc: &'a RawDocument, path: &str) -> Option<RawBsonRef<'a>> {
    let mut current = doc;
    let mut parts = path.split('.').peekable();
    while let Some(part) = parts.next() {
        let value = current.get(part).ok().flatten()?;
        if parts.peek().is_none() {
            return Some(value);
        }
        match value {
            RawBsonRef::Document(d) => current = d,
            _ => return None,
        }
    }
    None
}

fn number(v: &Bson) -> Option<f64> {
    match v {
        Bson::Int32(n) => Some(f64::from(*n)),
        Bson::Int64(n) => Some(*n as f64),
        Bson::Double(d) => Some(*d),
        Bson::Decimal128(d) => d.to_string().parse().ok(),
        _ => None,
    }
}

/// Index and shard key values compare as numbers or as plugin names.
fn same_key_value(a: &Bson, b: &Bson) -> bool {
    match (number(a), number(b)) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use bson::{doc, rawdoc};

    use super::*;

    fn index(key: Document, options: Document) -> IndexSpec {
        IndexSpec {
            name: "i".to_owned(),
            key,
            options,
        }
    }

    #[test]
    fn supporting_indexes_follow_the_server_rules() {
        let key = ShardKey::new(&doc! { "a": 1 }).unwrap();
        assert!(key.is_supported_by(&index(doc! { "a": 1.0, "b": 1 }, doc! {})));
        assert!(!key.is_supported_by(&index(doc! { "a": -1 }, doc! {})));
        assert!(!key.is_supported_by(&index(doc! { "b": 1, "a": 1 }, doc! {})));
        assert!(!key.is_supported_by(&index(doc! { "a": 1 }, doc! { "sparse": true })));
        assert!(!key.is_supported_by(&index(
            doc! { "a": 1 },
            doc! { "partialFilterExpression": { "a": 1 } }
        )));
        assert!(!key.is_supported_by(&index(
            doc! { "a": 1 },
            doc! { "collation": { "locale": "fr" } }
        )));
        assert!(key.is_supported_by(&index(
            doc! { "a": 1 },
            doc! { "collation": { "locale": "simple" } }
        )));
        let hashed = ShardKey::new(&doc! { "a": "hashed" }).unwrap();
        assert!(hashed.is_hashed());
        assert!(!hashed.is_supported_by(&index(doc! { "a": 1 }, doc! {})));
        assert!(hashed.is_supported_by(&index(doc! { "a": "hashed" }, doc! {})));
        assert!(ShardKey::new(&doc! { "a": "text" }).is_none());
        assert!(ShardKey::new(&doc! {}).is_none());
    }

    #[test]
    fn unique_indexes_must_start_with_the_key_or_id() {
        let key = ShardKey::new(&doc! { "a": 1, "b": 1 }).unwrap();
        assert!(key.allows_unique_index(&doc! { "a": 1, "b": -1, "c": 1 }));
        assert!(key.allows_unique_index(&doc! { "_id": 1, "x": 1 }));
        assert!(!key.allows_unique_index(&doc! { "a": 1 }));
        assert!(!key.allows_unique_index(&doc! { "email": 1 }));
    }

    #[test]
    fn names_paths_and_values_match_the_server() {
        let key = ShardKey::new(&doc! { "region": 1, "c.id": "hashed" }).unwrap();
        assert_eq!(key.index_name(), "region_1_c.id_hashed");
        assert!(key.touches("region"));
        assert!(key.touches("c"));
        assert!(key.touches("c.id.x"));
        assert!(!key.touches("regions"));
        assert!(!key.touches("c.other"));
        let doc = rawdoc! { "c": { "id": 7 }, "x": 1 };
        let values = key.values(&doc);
        assert_eq!(values[0], ("region", RawBsonRef::Null));
        assert_eq!(values[1], ("c.id", RawBsonRef::Int32(7)));
        assert!(
            ShardKey::new(&doc! { "_id": "hashed" })
                .unwrap()
                .is_id_only()
        );
    }
}
