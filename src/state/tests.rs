//! Lockfile round trips and refusals.

use bson::Bson;

use super::lockfile::{backup_path, load, save};
use super::*;
use crate::namespace::Namespace;

pub(crate) fn sample_state() -> MigrationState {
    MigrationState {
        format_version: LOCKFILE_FORMAT_VERSION,
        tool_version: String::new(),
        lineage: "lineage-1".to_owned(),
        serial: 0,
        migration: "m".to_owned(),
        config_fingerprint: "f".to_owned(),
        source: ClusterIdentity {
            uri: "mongodb://u:****@s/".to_owned(),
            topology: "replica set rs0".to_owned(),
            version: "7.0.14".to_owned(),
        },
        destination: ClusterIdentity {
            uri: "mongodb://d/".to_owned(),
            topology: "replica set rs1".to_owned(),
            version: "7.0.14".to_owned(),
        },
        phase: Phase::Copying,
        start_time: None,
        stream: StreamState::default(),
        sync: SyncState::default(),
        cutover: CutoverState::default(),
        indexes_created: 0,
        dropped: vec![],
        namespaces: vec![
            NamespaceState {
                source: Namespace::new("a", "b"),
                destination: Namespace::new("a", "b"),
                kind: crate::cluster::CollectionKind::Collection,
                created: true,
                indexes_built: false,
                copy: CopyStatus::Copying,
                documents_estimate: 10,
                bytes_estimate: 100,
                partitions: vec![PartitionState {
                    id: 0,
                    min: None,
                    max: Some(IdBound::new(bson::Bson::Int64(5))),
                    resume_from: Some(IdBound::new(bson::Bson::Decimal128("1.5".parse().unwrap()))),
                    done: false,
                    documents: 3,
                    bytes: 30,
                    range: None,
                }],
                duplicates: 0,
                source_shard_key: None,
                source_shards: vec![],
                shard_key: None,
            },
            NamespaceState {
                source: Namespace::new("a", "sharded"),
                destination: Namespace::new("a", "sharded"),
                kind: crate::cluster::CollectionKind::Collection,
                created: true,
                indexes_built: false,
                copy: CopyStatus::Copying,
                documents_estimate: 10,
                bytes_estimate: 100,
                partitions: vec![PartitionState {
                    id: 0,
                    min: None,
                    max: None,
                    resume_from: None,
                    done: false,
                    documents: 3,
                    bytes: 30,
                    // Bounds of a hashed key keep their Int64 type and MinKey through the file.
                    range: Some(crate::state::KeyRange {
                        shard: "shard0".to_owned(),
                        index: bson::doc! { "c": "hashed", "d": 1 },
                        min: Some(
                            bson::doc! { "c": -4_611_686_018_427_387_902_i64, "d": bson::Bson::MinKey },
                        ),
                        max: None,
                        chunks: 2,
                    }),
                }],
                duplicates: 0,
                source_shard_key: Some(bson::doc! { "c": "hashed" }),
                source_shards: vec![crate::state::ShardEstimate {
                    shard: "shard0".to_owned(),
                    documents: 10,
                    bytes: 100,
                }],
                shard_key: Some(bson::doc! { "c": 1 }),
            },
        ],
        timestamps: Timestamps::default(),
    }
}

#[test]
fn saves_atomically_with_backup_and_serial() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("migration.lock");
    let mut state = sample_state();
    save(&path, &mut state).unwrap();
    assert_eq!(state.serial, 1);
    assert!(!backup_path(&path).exists());
    state.phase = Phase::Copied;
    save(&path, &mut state).unwrap();
    let loaded = load(&path).unwrap().unwrap();
    assert_eq!(loaded, state);
    assert_eq!(loaded.serial, 2);
    let backup = load(&backup_path(&path)).unwrap().unwrap();
    assert_eq!((backup.serial, backup.phase), (1, Phase::Copying));
    // Exact BSON types of bounds survive.
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(
        text.contains("$numberLong") && text.contains("$numberDecimal"),
        "{text}"
    );
}

#[test]
fn document_bounds_keep_their_field_order() {
    // `{tenant, seq}` and `{seq, tenant}` are different `_id`s that sort far apart: a bound
    // whose fields were reordered would select another range (and skip documents).
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("migration.lock");
    let mut state = sample_state();
    let id = bson::doc! { "tenant": 7, "seq": "a", "z": { "b": 1, "a": 2 } };
    state.namespaces[0].partitions[0].max = Some(IdBound::new(bson::Bson::Document(id.clone())));
    save(&path, &mut state).unwrap();
    let loaded = load(&path).unwrap().unwrap();
    let bound = loaded.namespaces[0].partitions[0].max.clone().unwrap();
    // Document equality ignores field order, so compare the encoded bytes.
    let bytes = |d: &bson::Document| bson::RawDocumentBuf::try_from(d).unwrap().into_bytes();
    assert_eq!(
        bytes(bound.as_document()),
        bytes(&bson::doc! { "_id": id }),
        "{:?}",
        bound
    );
}

#[test]
fn missing_lockfile_is_none() {
    let dir = tempfile::tempdir().unwrap();
    assert!(load(&dir.path().join("migration.lock")).unwrap().is_none());
}

#[test]
fn damaged_foreign_and_newer_lockfiles_are_refused_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("migration.lock");
    let mut state = sample_state();
    save(&path, &mut state).unwrap();
    let good = std::fs::read(&path).unwrap();

    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("truncated", good[..good.len() / 2].to_vec()),
        ("not json", b"\x00\x01garbage".to_vec()),
        ("foreign", br#"{"name": "some other tool"}"#.to_vec()),
        (
            "wrong shape",
            br#"{"format_version": 1, "lineage": 3}"#.to_vec(),
        ),
        ("newer", br#"{"format_version": 99}"#.to_vec()),
    ];
    for (what, bytes) in cases {
        std::fs::write(&path, &bytes).unwrap();
        let err = load(&path).unwrap_err();
        let message = err.to_string();
        match what {
            "newer" => assert!(
                matches!(err, StateError::NewerFormat { found: 99, .. }),
                "{what}: {message}"
            ),
            _ => assert!(
                matches!(err, StateError::Corrupt { .. }),
                "{what}: {message}"
            ),
        }
        if what == "truncated" {
            assert!(message.contains("truncated"), "{message}");
        }
        assert_eq!(
            std::fs::read(&path).unwrap(),
            bytes,
            "{what}: the file is left untouched"
        );
    }
}

#[test]
fn namespaces_a_ddl_event_may_have_created_are_owned_until_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("migration.lock");
    let mut state = sample_state();
    let before = state.owned();
    assert!(!before.contains(&Namespace::new("a", "renamed")));
    // Recorded before a rename is applied; a crash then leaves it in the lockfile.
    state.sync.ddl_targets.push(Namespace::new("a", "renamed"));
    save(&path, &mut state).unwrap();
    let loaded = load(&path).unwrap().unwrap();
    let owned = loaded.owned();
    assert!(owned.contains(&Namespace::new("a", "renamed")));
    assert!(before.is_subset(&owned));
    // An older lockfile without the field still loads.
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("ddl_targets"), "{text}");
    let mut old = sample_state();
    save(&path, &mut old).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(!text.contains("ddl_targets"), "{text}");
    assert!(load(&path).unwrap().unwrap().sync.ddl_targets.is_empty());
}

#[test]
fn pending_documents_merge_once_per_namespace_and_id() {
    let doc = |ns: &str, id: Bson, reason: &str| PendingDocument {
        namespace: Namespace::parse(ns).unwrap(),
        source: Namespace::parse("src.c").unwrap(),
        id: IdBound::new(id),
        reason: reason.to_owned(),
    };
    let mut pending = vec![doc("a.c", Bson::Int32(1), "first")];
    PendingDocument::merge(
        &mut pending,
        [
            // Already there: the first entry and its reason stay.
            doc("a.c", Bson::Int32(1), "again"),
            // Another namespace, another type of the same number, another value: all new.
            doc("a.d", Bson::Int32(1), "x"),
            doc("a.c", Bson::Int64(1), "x"),
            doc("a.c", Bson::String("1".into()), "x"),
            // Twice in one merge: once.
            doc("a.c", Bson::Int32(2), "x"),
            doc("a.c", Bson::Int32(2), "y"),
        ],
    );
    let got: Vec<(String, String, &str)> = pending
        .iter()
        .map(|p| (p.namespace.to_string(), p.id.to_string(), p.reason.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            ("a.c".to_owned(), "1".to_owned(), "first"),
            ("a.d".to_owned(), "1".to_owned(), "x"),
            ("a.c".to_owned(), "1".to_owned(), "x"),
            ("a.c".to_owned(), "\"1\"".to_owned(), "x"),
            ("a.c".to_owned(), "2".to_owned(), "x"),
        ]
    );
}
