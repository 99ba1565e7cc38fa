//! Comparing what is not documents: indexes (key, unique, partial filter, TTL, collation,
//! hidden, sparse, ...), collection options (capped, validator, collation, clustered index,
//! view definitions) and, on a sharded destination, shard keys, with the migration's renames
//! applied.
//!
//! Unlike Atlas Live Migration and mongosync, which skip these, every option the server reports
//! is compared, except what a server owns and sets itself (index version `v`, `ns`, the
//! `clusteredIndex.v` it adds, and `uuid`).

use bson::{Bson, Document};

use crate::cluster::{CollectionInfo, IndexSpec};
use crate::shard_key::ShardKey;

/// Index fields that belong to the server, not to the index's definition.
const SERVER_OWNED_INDEX_FIELDS: &[&str] = &["v", "ns", "background"];

/// One difference in metadata, described for a person.
pub type MetadataDifference = String;

/// Compares the indexes of a collection (source first). `expect_secondary` is false when the
/// index policy skipped secondary indexes, so only `_id_` must match.
pub fn compare_indexes(
    source: &[IndexSpec],
    destination: &[IndexSpec],
    expect_secondary: bool,
) -> Vec<MetadataDifference> {
    let mut out = Vec::new();
    for s in source
        .iter()
        .filter(|s| expect_secondary || s.is_id_index())
    {
        match destination.iter().find(|d| d.name == s.name) {
            None => out.push(format!("index {} {} is missing", s.name, compact(&s.key))),
            Some(d) => {
                if d.key != s.key {
                    out.push(format!(
                        "index {}: key is {} instead of {}",
                        s.name,
                        compact(&d.key),
                        compact(&s.key)
                    ));
                }
                let (so, dopt) = (definition(&s.options), definition(&d.options));
                if so != dopt {
                    out.push(format!(
                        "index {}: options are {} instead of {}",
                        s.name,
                        compact(&dopt),
                        compact(&so)
                    ));
                }
            }
        }
    }
    for d in destination {
        let expected = source
            .iter()
            .any(|s| s.name == d.name && (expect_secondary || s.is_id_index()));
        if !expected {
            out.push(format!(
                "index {} {} exists only on the destination",
                d.name,
                compact(&d.key)
            ));
        }
    }
    out
}

/// The destination's indexes without those that exist only there because they support its
/// shard key (`shardCollection` creates one on an empty collection when no migrated index
/// supports the key): they are the sharding's, not a difference.
pub fn without_shard_key_indexes(
    source: &CollectionInfo,
    destination: &CollectionInfo,
) -> Vec<IndexSpec> {
    let key = destination.shard_key.as_ref().and_then(ShardKey::new);
    destination
        .indexes
        .iter()
        .filter(|d| {
            source.indexes.iter().any(|s| s.name == d.name)
                || !key.as_ref().is_some_and(|k| k.is_supported_by(d))
        })
        .cloned()
        .collect()
}

/// Compares a sharded destination collection's shard key with the expected one (`None`: it
/// should not be sharded). Nothing is compared on a destination that is not sharded.
pub fn compare_shard_keys(
    expected: Option<(&Document, bool)>,
    destination: &CollectionInfo,
    destination_sharded: bool,
) -> Vec<MetadataDifference> {
    if !destination_sharded {
        return Vec::new();
    }
    let same = |a: &Document, b: &Document| match (ShardKey::new(a), ShardKey::new(b)) {
        (Some(a), Some(b)) => a.fields == b.fields && a.is_prefix_of(&b.pattern),
        _ => a == b,
    };
    match (expected, &destination.shard_key) {
        (None, None) => Vec::new(),
        (Some((key, _)), None) => vec![format!(
            "the collection is not sharded; its shard key should be {}",
            compact(key)
        )],
        (None, Some(actual)) => vec![format!(
            "the collection is sharded on {} on the destination only",
            compact(actual)
        )],
        (Some((key, unique)), Some(actual)) => {
            let mut out = Vec::new();
            if !same(key, actual) {
                out.push(format!(
                    "shard key is {} instead of {}",
                    compact(actual),
                    compact(key)
                ));
            } else if unique != destination.shard_key_unique {
                out.push(format!(
                    "shard key unique is {} instead of {unique}",
                    destination.shard_key_unique
                ));
            }
            out
        }
    }
}

fn definition(options: &Document) -> Document {
    let mut d: Document = options
        .iter()
        .filter(|(k, _)| !SERVER_OWNED_INDEX_FIELDS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    // `unique: false` is how some servers spell the absence of `unique`.
    if matches!(d.get_bool("unique"), Ok(false)) {
        d.remove("unique");
    }
    d
}

/// Compares collection options. `view_on` is the expected `viewOn` after renaming, for views.
pub fn compare_options(
    source: &CollectionInfo,
    destination: &CollectionInfo,
    view_on: Option<&str>,
) -> Vec<MetadataDifference> {
    let mut out = Vec::new();
    if source.kind != destination.kind {
        out.push(
            format!(
                "it is a {:?} on the destination, a {:?} on the source",
                destination.kind, source.kind
            )
            .to_lowercase(),
        );
        return out;
    }
    let mut expected = normalized_options(&source.options);
    if let Some(view_on) = view_on {
        expected.insert("viewOn", view_on);
    }
    let actual = normalized_options(&destination.options);
    for (k, v) in &expected {
        match actual.get(k) {
            None => out.push(format!("option {k} = {} is missing", compact_value(v))),
            Some(a) if !numbers_equal(a, v) => out.push(format!(
                "option {k} is {} instead of {}",
                compact_value(a),
                compact_value(v)
            )),
            Some(_) => {}
        }
    }
    for (k, v) in &actual {
        if !expected.contains_key(k) {
            out.push(format!(
                "option {k} = {} exists only on the destination",
                compact_value(v)
            ));
        }
    }
    out
}

fn normalized_options(options: &Document) -> Document {
    let mut o = options.clone();
    if let Ok(clustered) = o.get_document_mut("clusteredIndex") {
        clustered.remove("v");
    }
    o.remove("uuid");
    o
}

/// Sizes of capped collections may come back as int32, int64 or double for the same value.
fn numbers_equal(a: &Bson, b: &Bson) -> bool {
    let num = |x: &Bson| match x {
        Bson::Int32(n) => Some(f64::from(*n)),
        Bson::Int64(n) => Some(*n as f64),
        Bson::Double(f) => Some(*f),
        _ => None,
    };
    match (num(a), num(b)) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

fn compact(doc: &Document) -> String {
    compact_value(&Bson::Document(doc.clone()))
}

fn compact_value(v: &Bson) -> String {
    v.clone().into_relaxed_extjson().to_string()
}

#[cfg(test)]
mod tests {
    use bson::doc;

    use super::*;
    use crate::cluster::{CollectionKind, CollectionStats};

    fn index(name: &str, key: Document, options: Document) -> IndexSpec {
        IndexSpec {
            name: name.to_owned(),
            key,
            options,
        }
    }

    fn info(kind: CollectionKind, options: Document) -> CollectionInfo {
        CollectionInfo {
            kind,
            uuid: Some("u".into()),
            options,
            indexes: vec![],
            stats: CollectionStats::default(),
            shard_key: None,
            shard_key_unique: false,
            shard_stats: Default::default(),
        }
    }

    #[test]
    fn index_differences_are_named() {
        let source = vec![
            index("_id_", doc! {"_id": 1}, doc! {}),
            index("email_1", doc! {"email": 1}, doc! {"unique": true}),
            index("ttl", doc! {"at": 1}, doc! {"expireAfterSeconds": 3600}),
            index(
                "p",
                doc! {"x": 1},
                doc! {"partialFilterExpression": {"x": {"$gt": 1}}},
            ),
        ];
        let destination = vec![
            index("_id_", doc! {"_id": 1}, doc! {"v": 2}),
            index("email_1", doc! {"email": 1}, doc! {"v": 2}),
            index(
                "ttl",
                doc! {"at": 1},
                doc! {"expireAfterSeconds": 3600, "v": 2},
            ),
            index("extra_1", doc! {"extra": 1}, doc! {}),
        ];
        let diffs = compare_indexes(&source, &destination, true);
        assert_eq!(
            diffs,
            vec![
                r#"index email_1: options are {} instead of {"unique":true}"#,
                r#"index p {"x":1} is missing"#,
                r#"index extra_1 {"extra":1} exists only on the destination"#,
            ]
        );
        assert_eq!(
            compare_indexes(&source[..1], &destination[..1], false),
            Vec::<String>::new()
        );
    }

    #[test]
    fn option_differences_are_named_and_numbers_compare_by_value() {
        let s = info(
            CollectionKind::Collection,
            doc! {"capped": true, "size": 1_048_576_i64, "validator": {"a": {"$type": "string"}}},
        );
        let same = info(
            CollectionKind::Collection,
            doc! {"capped": true, "size": 1_048_576_i32, "validator": {"a": {"$type": "string"}}},
        );
        assert!(compare_options(&s, &same, None).is_empty());
        let other = info(
            CollectionKind::Collection,
            doc! {"capped": true, "size": 1_048_576, "validator": {"a": {"$type": "int"}}},
        );
        assert_eq!(
            compare_options(&s, &other, None),
            vec![
                r#"option validator is {"a":{"$type":"int"}} instead of {"a":{"$type":"string"}}"#
            ]
        );
        let view = info(
            CollectionKind::View,
            doc! {"viewOn": "orders", "pipeline": []},
        );
        let renamed = info(
            CollectionKind::View,
            doc! {"viewOn": "purchases", "pipeline": []},
        );
        assert!(compare_options(&view, &renamed, Some("purchases")).is_empty());
        assert_eq!(compare_options(&view, &renamed, None).len(), 1);
        assert_eq!(
            compare_options(&s, &view, None),
            vec!["it is a view on the destination, a collection on the source"]
        );
    }
}
