//! The `$merge` stage: writes a pipeline's results into a collection.
//!
//! Supported: `into` (a name or `{db, coll}`), `on` (`_id` or fields with a unique index),
//! `whenMatched` (`merge`, `replace`, `keepExisting`, `fail`) and `whenNotMatched` (`insert`,
//! `discard`, `fail`). A pipeline for `whenMatched` is refused with an error naming it. Every
//! change commits through the oplog.

use std::sync::Arc;

use bson::{Bson, Document, RawBsonRef, RawDocument, RawDocumentBuf};

use crate::command::Ctx;
use crate::command::args::Fields;
use crate::engine::collection::prepare_for_insert;
use crate::engine::index::duplicate_key_error;
use crate::engine::namespace::{Namespace, validate_coll_name};
use crate::engine::oplog::OplogOp;
use crate::error::{CommandError, to_bson, to_document, to_raw};

/// Runs `$merge` with the documents the rest of the pipeline produced.
pub fn run(
    ctx: &mut Ctx<'_>,
    db: &str,
    stage: &RawDocument,
    docs: Vec<RawDocumentBuf>,
) -> Result<(), CommandError> {
    let spec = match stage.get("$merge") {
        Ok(Some(RawBsonRef::Document(d))) => d.to_owned(),
        Ok(Some(RawBsonRef::String(coll))) => {
            let mut d = RawDocumentBuf::new();
            d.append(bson::cstr!("into"), coll);
            d
        }
        _ => {
            return Err(CommandError::new(
                51182,
                "$merge only supports a string or object argument",
            ));
        }
    };
    let fields = Fields::new("$merge", &spec);
    let target = match fields.get("into") {
        Some(RawBsonRef::String(coll)) => Namespace::new(db, coll),
        Some(RawBsonRef::Document(d)) => {
            let f = Fields::new("$merge.into", d);
            Namespace::new(
                f.str("db")?.unwrap_or(db),
                f.str("coll")?.ok_or_else(|| {
                    CommandError::failed_to_parse("$merge.into requires a 'coll' field")
                })?,
            )
        }
        _ => {
            return Err(CommandError::new(
                40414,
                "BSON field '$merge.into' is missing but a required field",
            ));
        }
    };
    validate_coll_name(&target.db, &target.coll)?;
    let on: Vec<String> = match fields.get("on") {
        None => vec!["_id".to_string()],
        Some(RawBsonRef::String(f)) => vec![f.to_string()],
        Some(RawBsonRef::Array(a)) => a
            .into_iter()
            .map(|v| match v {
                Ok(RawBsonRef::String(s)) => Ok(s.to_string()),
                _ => Err(CommandError::new(
                    51134,
                    "$merge 'on' array elements must be strings",
                )),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => {
            return Err(CommandError::new(
                51186,
                "$merge 'on' must be a string or an array",
            ));
        }
    };
    let when_matched = match fields.get("whenMatched") {
        None => "merge",
        Some(RawBsonRef::String(s @ ("merge" | "replace" | "keepExisting" | "fail"))) => s,
        Some(RawBsonRef::Array(_)) => {
            return Err(CommandError::bad_value(
                "$merge with a whenMatched pipeline is not supported by this test server",
            ));
        }
        Some(other) => {
            return Err(CommandError::bad_value(format!(
                "Enumeration value '{other:?}' for field '$merge.whenMatched' is not a valid value."
            )));
        }
    };
    let when_not_matched = match fields.str("whenNotMatched")? {
        None => "insert",
        Some(s @ ("insert" | "discard" | "fail")) => s,
        Some(other) => {
            return Err(CommandError::bad_value(format!(
                "Enumeration value '{other}' for field '$merge.whenNotMatched' is not a valid value."
            )));
        }
    };
    let store = ctx.store();
    let coll = store.get_or_create(&target)?;
    let mut data = coll.write();
    if on != ["_id"] {
        let key: Document = on.iter().map(|f| (f.clone(), Bson::Int32(1))).collect();
        let unique = data.indexes.iter().any(|i| {
            i.spec.unique && i.spec.key.keys().collect::<Vec<_>>() == key.keys().collect::<Vec<_>>()
        });
        if !unique {
            return Err(CommandError::new(
                51183,
                "Cannot find index to verify that join fields will be unique",
            ));
        }
    }
    let ns = target.to_string();
    let images = data.options.pre_and_post_images;
    let mut last = None;
    for doc in docs {
        let doc = prepare_for_insert(doc)?;
        let mut key = Document::new();
        for f in &on {
            let v = crate::query::path::get_path(&doc, f)
                .map(to_bson)
                .transpose()?
                .unwrap_or(Bson::Null);
            key.insert(f.clone(), v);
        }
        let filter = crate::query::filter::Filter::parse(&to_raw(&key)?)?;
        let existing = crate::engine::scan::matching(&data, &filter, Some(1))?
            .into_iter()
            .next();
        match existing {
            Some(m) => {
                let new = match when_matched {
                    "keepExisting" => continue,
                    "fail" => {
                        let pattern: Document =
                            on.iter().map(|f| (f.clone(), Bson::Int32(1))).collect();
                        let name = if on == ["_id"] {
                            "_id_".to_string()
                        } else {
                            on.join("_1_") + "_1"
                        };
                        return Err(duplicate_key_error(&ns, &name, &pattern, &key));
                    }
                    "replace" => {
                        let mut replacement = to_document(&doc)?;
                        if let Some(id) = m.doc.get("_id").ok().flatten() {
                            replacement.insert("_id", to_bson(id)?);
                        }
                        replacement
                    }
                    _ => {
                        let mut merged = to_document(&m.doc)?;
                        for (k, v) in to_document(&doc)? {
                            if k != "_id" {
                                merged.insert(k, v);
                            }
                        }
                        merged
                    }
                };
                let after = data.replace(&ns, m.rid, to_raw(&new)?)?;
                last = Some(store.log(OplogOp::Update {
                    ns: target.clone(),
                    uuid: coll.uuid,
                    before: Arc::clone(&m.doc),
                    after,
                    replacement: true,
                    images,
                    description: None,
                }));
            }
            None => match when_not_matched {
                "discard" => {}
                "fail" => {
                    return Err(CommandError::new(
                        13113,
                        "$merge could not find a matching document in the target collection for at least one document in the source collection",
                    ));
                }
                _ => {
                    let stored = data.insert(&ns, doc)?;
                    last = Some(store.log(OplogOp::Insert {
                        ns: target.clone(),
                        uuid: coll.uuid,
                        doc: stored,
                    }));
                }
            },
        }
    }
    drop(data);
    ctx.op_time = last.or(ctx.op_time);
    Ok(())
}
