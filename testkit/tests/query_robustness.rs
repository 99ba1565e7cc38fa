//! The query module must never panic, whatever a client sends: random filters, updates,
//! projections, sorts and pipelines built from operator names and values of every type are
//! parsed and applied to random documents; each step must return `Ok` or a `QueryError`.

use bson::{Bson, Document, RawBsonRef, RawDocumentBuf};
use mongoshift_testkit::query::expr::{Expression, Variables};
use mongoshift_testkit::query::filter::Filter;
use mongoshift_testkit::query::pipeline::{NoCollections, Pipeline};
use mongoshift_testkit::query::projection::Projection;
use mongoshift_testkit::query::sort::SortSpec;
use mongoshift_testkit::query::update::Update;
use proptest::prelude::*;

const KEYS: &[&str] = &[
    "a",
    "b",
    "a.b",
    "a.0",
    "a.$",
    "a.$[]",
    "a.$[x]",
    "x",
    "0",
    "_id",
    "$set",
    "$unset",
    "$inc",
    "$push",
    "$each",
    "$slice",
    "$sort",
    "$position",
    "$pull",
    "$addToSet",
    "$rename",
    "$min",
    "$max",
    "$mul",
    "$bit",
    "and",
    "$pop",
    "$currentDate",
    "$gt",
    "$lt",
    "$in",
    "$nin",
    "$eq",
    "$ne",
    "$exists",
    "$type",
    "$regex",
    "$options",
    "$not",
    "$and",
    "$or",
    "$nor",
    "$all",
    "$elemMatch",
    "$size",
    "$mod",
    "$expr",
    "$add",
    "$cond",
    "$map",
    "$filter",
    "input",
    "as",
    "in",
    "cond",
    "$match",
    "$group",
    "$project",
    "$unwind",
    "$lookup",
    "$facet",
    "$count",
    "$limit",
    "$skip",
    "$addFields",
    "$replaceWith",
    "$bucket",
    "groupBy",
    "boundaries",
    "$sum",
    "$literal",
    "$let",
    "vars",
    "$$x",
    "$bitsAllSet",
    "$setOnInsert",
    "$concat",
    "$arrayElemAt",
    "$slice",
    "path",
    "preserveNullAndEmptyArrays",
    "newRoot",
    "$replaceRoot",
];

fn arb_value() -> impl Strategy<Value = Bson> {
    let leaf = prop_oneof![
        any::<i32>().prop_map(Bson::Int32),
        prop_oneof![
            Just(i64::MIN),
            Just(i64::MAX),
            Just(2_000_000_i64),
            Just(-1_i64)
        ]
        .prop_map(Bson::Int64),
        (-3i64..3).prop_map(Bson::Int64),
        prop_oneof![Just(0.5), Just(-1.0), Just(f64::NAN), Just(1e300)].prop_map(Bson::Double),
        prop_oneof![
            Just("$a"),
            Just("$$x"),
            Just("a"),
            Just("$"),
            Just("^a("),
            Just("")
        ]
        .prop_map(|s| Bson::String(s.to_owned())),
        any::<bool>().prop_map(Bson::Boolean),
        Just(Bson::Null),
        Just(Bson::MinKey),
    ];
    leaf.prop_recursive(4, 40, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Bson::Array),
            prop::collection::vec((prop::sample::select(KEYS), inner), 0..4).prop_map(|fields| {
                let mut d = Document::new();
                for (k, v) in fields {
                    d.insert(k, v);
                }
                Bson::Document(d)
            }),
        ]
    })
}

fn arb_doc() -> impl Strategy<Value = Document> {
    prop::collection::vec((prop::sample::select(KEYS), arb_value()), 0..5).prop_map(|fields| {
        let mut d = Document::new();
        for (k, v) in fields {
            d.insert(k, v);
        }
        d
    })
}

fn raw(d: &Document) -> Option<RawDocumentBuf> {
    RawDocumentBuf::try_from(d).ok()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn nothing_panics(spec in arb_doc(), target in arb_doc(), stages in prop::collection::vec(arb_doc(), 0..3)) {
        let (Some(spec_raw), Some(target_raw)) = (raw(&spec), raw(&target)) else {
            return Ok(());
        };
        let vars = Variables::new();
        if let Ok(f) = Filter::parse(&spec_raw) {
            let _ = f.matches_details(&target_raw);
            let _ = f.equality_fields();
            let _ = f.id_value();
            if let Ok(u) = Update::parse(RawBsonRef::Document(&spec_raw), None) {
                let _ = u.upsert_document(&f);
            }
        }
        if let Ok(u) = Update::parse(RawBsonRef::Document(&spec_raw), None) {
            let _ = u.apply_logged(&target_raw, None);
        }
        if let Ok(p) = Projection::parse(&spec_raw) {
            let _ = p.apply(&target_raw, None);
        }
        if let Ok(s) = SortSpec::parse(&spec_raw) {
            let _ = s.compare(&spec_raw, &target_raw);
            let _ = s.sort_key(&target_raw);
        }
        if let Ok(e) = Expression::parse_bson(&Bson::Document(spec.clone()), &vars) {
            let _ = e.evaluate(&target_raw, &vars);
        }
        let holder = bson::doc! {"p": stages.into_iter().map(Bson::Document).collect::<Vec<_>>()};
        if let Some(holder) = raw(&holder)
            && let Ok(stages) = holder.get_array("p")
        {
            if let Ok(p) = Pipeline::parse(stages, &vars) {
                let input = [target_raw.clone(), spec_raw.clone()];
                let _ = p.run(input.iter(), &mut NoCollections);
            }
            let _ = Update::parse(RawBsonRef::Array(stages), None)
                .map(|u| u.apply(&target_raw, None));
        }
    }
}
