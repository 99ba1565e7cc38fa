//! Every BSON type, odd values, deep nesting, field names with dots and `$`, and a document
//! near the 16 MiB limit: copied and then changed during the sync, they must arrive byte for
//! byte.

mod common;

use std::time::Duration;

use bson::spec::BinarySubtype;
use bson::{
    Binary, Bson, DateTime, Decimal128, Document, JavaScriptCodeWithScope, Timestamp, doc,
    oid::ObjectId,
};
use common::{Pair, assert_same_clusters, block_on, client, output};
use mongoshift::state::Phase;

/// One value of every type the server stores, with edge cases.
fn every_value() -> Vec<(&'static str, Bson)> {
    let binary = |subtype, bytes: &[u8]| {
        Bson::Binary(Binary {
            subtype,
            bytes: bytes.to_vec(),
        })
    };
    let decimal = |s: &str| Bson::Decimal128(s.parse::<Decimal128>().unwrap());
    vec![
        ("double", Bson::Double(1.5)),
        ("double_nan", Bson::Double(f64::NAN)),
        ("double_neg_zero", Bson::Double(-0.0)),
        ("double_inf", Bson::Double(f64::NEG_INFINITY)),
        ("string", Bson::String("héllo wörld ✓ 𝄞".to_owned())),
        ("empty_string", Bson::String(String::new())),
        ("document", Bson::Document(doc! { "b": 1, "a": 2 })),
        (
            "array",
            Bson::Array(vec![Bson::Int32(1), Bson::Null, Bson::Array(vec![])]),
        ),
        (
            "bin_generic",
            binary(BinarySubtype::Generic, b"\x00\x01\xff"),
        ),
        ("bin_function", binary(BinarySubtype::Function, b"fn")),
        (
            "bin_old",
            binary(BinarySubtype::BinaryOld, b"\x02\x00\x00\x00ab"),
        ),
        ("bin_uuid_old", binary(BinarySubtype::UuidOld, &[3; 16])),
        ("bin_uuid", binary(BinarySubtype::Uuid, &[4; 16])),
        ("bin_md5", binary(BinarySubtype::Md5, &[5; 16])),
        ("bin_encrypted", binary(BinarySubtype::Encrypted, b"\x06x")),
        ("bin_column", binary(BinarySubtype::Column, b"\x07")),
        ("bin_sensitive", binary(BinarySubtype::Sensitive, b"\x08")),
        (
            "bin_user",
            binary(BinarySubtype::UserDefined(0x80), b"user"),
        ),
        ("undefined", Bson::Undefined),
        (
            "object_id",
            Bson::ObjectId(ObjectId::parse_str("65f0c0ffee0000000000beef").unwrap()),
        ),
        ("bool", Bson::Boolean(false)),
        (
            "date",
            Bson::DateTime(DateTime::from_millis(-62_135_596_800_000)),
        ),
        (
            "date_far",
            Bson::DateTime(DateTime::from_millis(253_402_300_799_999)),
        ),
        ("null", Bson::Null),
        (
            "regex",
            extjson(
                serde_json::json!({ "$regularExpression": { "pattern": "^a.*[b]$", "options": "imsx" } }),
            ),
        ),
        (
            "db_pointer",
            extjson(
                serde_json::json!({ "$dbPointer": { "$ref": "db.coll", "$id": { "$oid": "65f0c0ffee0000000000beef" } } }),
            ),
        ),
        (
            "code",
            Bson::JavaScriptCode("function () { return 1; }".to_owned()),
        ),
        ("symbol", Bson::Symbol("sym".to_owned())),
        (
            "code_with_scope",
            Bson::JavaScriptCodeWithScope(JavaScriptCodeWithScope {
                code: "x + 1".to_owned(),
                scope: doc! { "x": 1 },
            }),
        ),
        ("int32", Bson::Int32(i32::MIN)),
        (
            "timestamp",
            Bson::Timestamp(Timestamp {
                time: 4_000_000_000,
                increment: 7,
            }),
        ),
        ("int64", Bson::Int64(i64::MAX)),
        ("decimal", decimal("1234567890.123456789012345678901234")),
        ("decimal_nan", decimal("NaN")),
        ("decimal_inf", decimal("-Infinity")),
        ("decimal_neg_zero", decimal("-0.00")),
        ("min_key", Bson::MinKey),
        ("max_key", Bson::MaxKey),
    ]
}

/// Types the bson crate only builds from Extended JSON.
fn extjson(value: serde_json::Value) -> Bson {
    Bson::try_from(value).expect("valid canonical Extended JSON")
}

/// A document nested `depth` levels deep.
fn nested(depth: usize) -> Document {
    let mut d = doc! { "leaf": true };
    for i in 0..depth {
        d = doc! { format!("l{i}"): d };
    }
    d
}

fn documents(base: i64) -> Vec<Document> {
    let mut all = doc! { "_id": base };
    for (name, value) in every_value() {
        all.insert(name, value);
    }
    // Field order, dotted and `$`-prefixed names (allowed below the top level since 5.0).
    let names = doc! {
        "_id": base + 1,
        "z": 1, "a": 2,
        "with.dots": { "a.b": 1 },
        "nested": { "$price": 3, "$currency": "EUR" },
        "empty": {},
    };
    let deep = doc! { "_id": base + 2, "deep": nested(95) };
    // Close to the 16 MiB limit (16,777,216 bytes including the command overhead).
    let big = doc! { "_id": base + 3, "blob": Binary { subtype: BinarySubtype::Generic, bytes: vec![7u8; 16 * 1024 * 1024 - 1024] } };
    let mut by_type = Vec::new();
    for (i, (name, value)) in every_value().into_iter().enumerate() {
        by_type.push(doc! { "_id": base + 10 + i as i64, "type": name, "v": value });
    }
    let mut out = vec![all, names, deep, big];
    out.extend(by_type);
    out
}

#[test]
fn every_bson_type_arrives_byte_identical_by_copy_and_by_change() {
    let pair = Pair::new();
    block_on(async {
        let c = client(&pair.source).await;
        let coll = c.database("types").collection::<Document>("values");
        for d in documents(0) {
            coll.insert_one(d).await.expect("insert");
        }
    });
    pair.write_config("[cutover]\nblock_source_writes = true\nmax_lag = \"2s\"\n");
    let mut apply = pair.spawn_apply(&[]);
    pair.wait_for_state(&mut apply, "ready", Duration::from_secs(120), |s| {
        s.phase >= Phase::Ready
    });
    // The same values through change application: inserts, replacements and updates.
    block_on(async {
        let c = client(&pair.source).await;
        let coll = c.database("types").collection::<Document>("values");
        for d in documents(1000) {
            coll.insert_one(d).await.expect("insert during the sync");
        }
        for (i, (name, value)) in every_value().into_iter().enumerate() {
            let id = 10 + i as i64;
            coll.update_one(
                doc! { "_id": id },
                doc! { "$set": { "again": value.clone(), format!("k_{name}"): value } },
            )
            .await
            .expect("update during the sync");
        }
        coll.replace_one(
            doc! { "_id": 1 },
            doc! { "replaced": { "$weird": 1, "a.b": [Bson::MinKey, Bson::Undefined] } },
        )
        .await
        .expect("replace during the sync");
    });
    // No pause needed: with the write block, the drain applies every change made before it.
    assert_eq!(pair.run(&["cutover"]).code, 0);
    let (code, stdout, stderr) = output(apply);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert_same_clusters(&pair.source, &pair.destination);
    let documents = common::contents(&pair.destination)["types.values"].2.len();
    eprintln!(
        "bson types: {} values of {} kinds, {documents} documents, byte-identical",
        every_value().len() * 4,
        every_value().len()
    );
}
