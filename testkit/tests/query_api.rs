//! End-to-end use of the query module's public API the way the server drives it: a find
//! (filter, sort, projection), an update with upsert and change-stream description, index
//! keys, and an aggregation that reads another collection.

use bson::{Bson, RawBsonRef, RawDocumentBuf, doc, rawdoc};
use mongoshift_testkit::query::Direction;
use mongoshift_testkit::query::compare::compare_values;
use mongoshift_testkit::query::expr::Variables;
use mongoshift_testkit::query::filter::Filter;
use mongoshift_testkit::query::keystring::{encode_value, index_keys};
use mongoshift_testkit::query::pipeline::{Pipeline, PipelineContext};
use mongoshift_testkit::query::projection::Projection;
use mongoshift_testkit::query::sort::SortSpec;
use mongoshift_testkit::query::update::Update;
use mongoshift_testkit::query::{QueryError, diff};

fn collection() -> Vec<RawDocumentBuf> {
    vec![
        rawdoc! {"_id": 1, "name": "ann", "age": 31, "tags": ["a", "b"], "addr": {"city": "Oslo"}},
        rawdoc! {"_id": 2, "name": "bob", "age": 25_i64, "tags": ["b"]},
        rawdoc! {"_id": 3, "name": "cid", "age": 40.0, "addr": {"city": "Rome"}},
        rawdoc! {"_id": 4, "name": "dee", "tags": []},
    ]
}

#[test]
fn find_with_filter_sort_and_projection() {
    let filter = Filter::parse(&rawdoc! {"$or": [{"age": {"$gte": 30}}, {"tags": "b"}]})
        .expect("valid filter");
    let sort = SortSpec::parse(&rawdoc! {"age": -1}).expect("valid sort");
    let projection =
        Projection::parse(&rawdoc! {"name": 1, "_id": 0, "city": "$addr.city"}).expect("valid");
    let mut hits: Vec<RawDocumentBuf> = collection()
        .into_iter()
        .filter(|d| filter.matches(d).expect("no evaluation error"))
        .collect();
    hits.sort_by_cached_key(|d| sort.sort_key(d));
    let names: Vec<bson::Document> = hits
        .iter()
        .map(|d| {
            let p = projection.apply(d, None).expect("projects");
            bson::Document::try_from(p.as_ref()).expect("valid BSON")
        })
        .collect();
    assert_eq!(
        names,
        vec![
            doc! {"name": "cid", "city": "Rome"},
            doc! {"name": "ann", "city": "Oslo"},
            doc! {"name": "bob"},
        ]
    );
}

#[test]
fn update_upsert_and_describe() {
    let filter = Filter::parse(&rawdoc! {"_id": 9, "kind": "new"}).expect("filter");
    assert_eq!(filter.id_value(), Some(Bson::Int32(9)));
    let update = Update::parse(
        RawBsonRef::Document(&rawdoc! {"$inc": {"n": 1}, "$setOnInsert": {"created": true}}),
        None,
    )
    .expect("update");
    let inserted = update.upsert_document(&filter).expect("upsert document");
    assert_eq!(
        bson::Document::try_from(inserted.as_ref()).expect("valid BSON"),
        doc! {"_id": 9, "kind": "new", "n": 1, "created": true}
    );
    let applied = update
        .apply_logged(&inserted, None)
        .expect("applies")
        .expect("changes");
    let description = applied.description.expect("operator updates are described");
    assert_eq!(
        description.to_document(false),
        doc! {"updatedFields": {"n": 2}, "removedFields": [], "truncatedArrays": []}
    );
    let after = diff::update_description(&inserted, &applied.document);
    assert_eq!(after.updated_fields, doc! {"n": 2});
}

#[test]
fn errors_carry_server_codes() {
    let e: QueryError = Update::parse(RawBsonRef::Document(&rawdoc! {"$set": {"_id": 5}}), None)
        .expect("parses")
        .apply(&rawdoc! {"_id": 1}, None)
        .expect_err("immutable _id");
    assert_eq!((e.code, e.code_name), (66, "ImmutableField"));
    let e = Filter::parse(&rawdoc! {"a": {"$bogus": 1}}).expect_err("unknown operator");
    assert_eq!((e.code, e.code_name), (2, "BadValue"));
    let stages = rawdoc! {"p": [{"$bogus": {}}]};
    let e = Pipeline::parse(stages.get_array("p").expect("array"), &Variables::new())
        .expect_err("unknown stage");
    assert_eq!((e.code, e.code_name), (40324, "Location40324"));
}

#[test]
fn index_keys_follow_the_total_order() {
    let pattern = vec![("age".to_owned(), Direction::Ascending)];
    let mut keyed: Vec<(Vec<u8>, i32)> = Vec::new();
    for d in collection() {
        let id = d.get_i32("_id").expect("int _id");
        for k in index_keys(&d, &pattern).expect("keys") {
            keyed.push((k, id));
        }
    }
    keyed.sort();
    // Missing age keys as null and sorts first; 25 (long) < 31 (int) < 40.0 (double).
    let order: Vec<i32> = keyed.iter().map(|(_, id)| *id).collect();
    assert_eq!(order, vec![4, 2, 1, 3]);
    let one = rawdoc! {"v": 1};
    let one_double = rawdoc! {"v": 1.0};
    let a = one.get("v").expect("valid").expect("present");
    let b = one_double.get("v").expect("valid").expect("present");
    assert!(compare_values(a, b).is_eq());
    assert_eq!(encode_value(a), encode_value(b));
}

struct People;

impl PipelineContext for People {
    fn collection(
        &mut self,
        _db: Option<&str>,
        coll: &str,
    ) -> Result<Vec<RawDocumentBuf>, QueryError> {
        Ok(if coll == "cities" {
            vec![
                rawdoc! {"_id": "Oslo", "country": "NO"},
                rawdoc! {"_id": "Rome", "country": "IT"},
            ]
        } else {
            Vec::new()
        })
    }
}

#[test]
fn aggregation_with_lookup_and_group() {
    let stages = rawdoc! {"p": [
        {"$match": {"addr.city": {"$exists": true}}},
        {"$lookup": {"from": "cities", "localField": "addr.city", "foreignField": "_id", "as": "city"}},
        {"$unwind": "$city"},
        {"$group": {"_id": "$city.country", "people": {"$push": "$name"}}},
        {"$sort": {"_id": 1}},
    ]};
    let pipeline =
        Pipeline::parse(stages.get_array("p").expect("array"), &Variables::new()).expect("parses");
    let out = pipeline
        .run(collection().iter(), &mut People)
        .expect("runs");
    let out: Vec<bson::Document> = out
        .iter()
        .map(|d| bson::Document::try_from(d.as_ref()).expect("valid BSON"))
        .collect();
    assert_eq!(
        out,
        vec![
            doc! {"_id": "IT", "people": ["cid"]},
            doc! {"_id": "NO", "people": ["ann"]},
        ]
    );
}
