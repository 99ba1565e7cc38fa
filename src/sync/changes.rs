//! What a change event means for the destination: a pure translation of the source's change
//! events into idempotent operations, with the migration's namespace mapping applied.
//!
//! Rules (each safe to repeat after a crash):
//! - insert and replace: replace-upsert of the full document by `_id`;
//! - update: in `full_document` mode, replace-upsert of the document looked up when the event
//!   was read (a later state converges: later events repeat it); a `null` lookup means the
//!   document is gone by then and its delete event follows, so nothing is written; in `delta`
//!   mode, the `updateDescription` as `$set`/`$unset`/array truncation;
//! - delete: delete by `_id`; on a sharded source (a `documentKey` with the shard key), the
//!   document is looked up on the source first, because a shard-key change that moves a
//!   document between shards shows as a delete and an insert in either order;
//! - DDL: one operation per event, applied alone, in order (a barrier).

use bson::{Bson, Document, RawDocument, RawDocumentBuf, Timestamp};

use crate::config::model::UpdateMode;
use crate::namespace::{Namespace, NamespaceFilter, NamespaceMapping};

/// A change event that cannot be understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a change event at {time} cannot be applied: {detail}")]
pub struct EventError {
    /// The event's cluster time, when readable.
    pub time: String,
    /// What is wrong.
    pub detail: String,
}

/// What kind of source operation an event was (for counters and the report).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ChangeKind {
    /// An insert.
    Insert,
    /// An update.
    Update,
    /// A replacement.
    Replace,
    /// A delete.
    Delete,
    /// A DDL operation.
    Ddl,
}

/// One interpreted event.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceChange {
    /// Its kind.
    pub kind: ChangeKind,
    /// Its cluster time.
    pub time: Timestamp,
    /// What to do on the destination.
    pub op: DestinationOp,
}

/// What to do on the destination.
#[derive(Debug, Clone, PartialEq)]
pub enum DestinationOp {
    /// Replace (or insert) the document with this `_id`.
    Upsert {
        /// Destination namespace.
        ns: Namespace,
        /// The `_id`.
        id: Bson,
        /// The whole document.
        document: RawDocumentBuf,
    },
    /// Delete the document with this `_id`.
    Delete {
        /// Destination namespace.
        ns: Namespace,
        /// The `_id`.
        id: Bson,
    },
    /// Apply an update description (`update_mode = "delta"`).
    Delta {
        /// Destination namespace.
        ns: Namespace,
        /// The `_id`.
        id: Bson,
        /// Source namespace (to look the document up if the destination lacks it).
        source: Namespace,
        /// `$set` of updated fields.
        set: Document,
        /// Removed fields.
        unset: Vec<String>,
        /// Arrays truncated to a size.
        truncate: Vec<(String, i32)>,
    },
    /// Replace the document with the source's current version (or delete it when the source
    /// no longer has it): for changes update operators cannot express, and for documents a
    /// unique index refused earlier.
    Refetch {
        /// Destination namespace.
        ns: Namespace,
        /// The `_id`.
        id: Bson,
        /// Source namespace.
        source: Namespace,
    },
    /// A catalog change, applied alone and in order.
    Ddl(DdlChange),
    /// Nothing to do, and why.
    Skip(&'static str),
}

/// An event's `{db, coll}` field: the database, and the collection unless the event is about
/// a whole database.
type EventNamespace = (String, Option<String>);

impl DestinationOp {
    /// The destination namespace and `_id` a document operation concerns.
    pub fn document(&self) -> Option<(&Namespace, &Bson)> {
        match self {
            Self::Upsert { ns, id, .. }
            | Self::Delete { ns, id }
            | Self::Delta { ns, id, .. }
            | Self::Refetch { ns, id, .. } => Some((ns, id)),
            Self::Ddl(_) | Self::Skip(_) => None,
        }
    }
}

/// A catalog change on the destination.
#[derive(Debug, Clone, PartialEq)]
pub enum DdlChange {
    /// Create a collection or view with these options.
    Create {
        /// Destination namespace.
        ns: Namespace,
        /// `create` options (`viewOn` already renamed for views).
        options: Document,
    },
    /// Drop a collection or view.
    Drop {
        /// Destination namespace.
        ns: Namespace,
    },
    /// Rename within the migration.
    Rename {
        /// Old destination name.
        from: Namespace,
        /// New destination name.
        to: Namespace,
        /// The rename replaced an existing target.
        drop_target: bool,
    },
    /// A collection was renamed into the migration from a namespace outside it: its documents
    /// were never copied, so the migration cannot follow it.
    RenamedIn {
        /// The source name it came from.
        from: Namespace,
        /// The source name it now has.
        to: Namespace,
    },
    /// Build indexes.
    CreateIndexes {
        /// Destination namespace.
        ns: Namespace,
        /// Specs (`{key, name, ...}`, without `v`).
        indexes: Vec<Document>,
    },
    /// Drop indexes by name.
    DropIndexes {
        /// Destination namespace.
        ns: Namespace,
        /// Names.
        names: Vec<String>,
    },
    /// `collMod` with these fields.
    Modify {
        /// Destination namespace.
        ns: Namespace,
        /// The changed options.
        changes: Document,
    },
    /// A database was dropped (its collections' drop events came first).
    DropDatabase {
        /// Source database.
        db: String,
    },
    /// A DDL operation mongoshift does not replicate (e.g. `shardCollection`).
    Unsupported {
        /// The operation type.
        operation: String,
        /// The source namespace, as text.
        ns: String,
    },
}

impl DdlChange {
    /// A short description for messages.
    pub fn describe(&self) -> String {
        match self {
            Self::Create { ns, .. } => format!("create {ns}"),
            Self::Drop { ns } => format!("drop {ns}"),
            Self::Rename { from, to, .. } => format!("rename {from} to {to}"),
            Self::RenamedIn { from, to } => format!("rename {from} (not migrated) to {to}"),
            Self::CreateIndexes { ns, indexes } => {
                let names: Vec<&str> = indexes
                    .iter()
                    .filter_map(|i| i.get_str("name").ok())
                    .collect();
                format!("createIndexes {} on {ns}", names.join(", "))
            }
            Self::DropIndexes { ns, names } => format!("dropIndexes {} on {ns}", names.join(", ")),
            Self::Modify { ns, .. } => format!("collMod {ns}"),
            Self::DropDatabase { db } => format!("dropDatabase {db}"),
            Self::Unsupported { operation, ns } => format!("{operation} {ns}"),
        }
    }
}

/// How events are interpreted.
#[derive(Debug, Clone, Copy)]
pub struct Interpreter<'a> {
    /// Which source namespaces are migrated.
    pub filter: &'a NamespaceFilter,
    /// Source → destination names.
    pub mapping: &'a NamespaceMapping,
    /// How updates are applied.
    pub update_mode: UpdateMode,
}

/// True when the event's `documentKey` holds fields besides `_id`: the shard key of a
/// collection sharded on the source.
fn sharded_document_key(event: &RawDocument) -> bool {
    event.get_document("documentKey").is_ok_and(|k| {
        k.iter()
            .filter_map(Result::ok)
            .any(|(name, _)| name != "_id")
    })
}

fn err(time: Option<Timestamp>, detail: impl Into<String>) -> EventError {
    EventError {
        time: time.map_or_else(
            || "an unknown time".to_owned(),
            |t| format!("{}.{}", t.time, t.increment),
        ),
        detail: detail.into(),
    }
}

impl Interpreter<'_> {
    /// Interprets one raw change event.
    pub fn interpret(&self, event: &RawDocument) -> Result<SourceChange, EventError> {
        let time = event.get_timestamp("clusterTime").ok();
        let Some(time) = time else {
            return Err(err(None, "`clusterTime` is missing"));
        };
        let e = |detail: &str| err(Some(time), detail.to_owned());
        let operation = event
            .get_str("operationType")
            .map_err(|_| e("`operationType` is missing"))?;
        let ns_of = |field: &str| -> Option<EventNamespace> {
            let d = event.get_document(field).ok()?;
            Some((
                d.get_str("db").ok()?.to_owned(),
                d.get_str("coll").ok().map(str::to_owned),
            ))
        };
        let source_ns = || -> Result<Namespace, EventError> {
            match ns_of("ns") {
                Some((db, Some(coll))) => Ok(Namespace::new(db, coll)),
                _ => Err(e("`ns` has no collection")),
            }
        };
        let id = || -> Result<Bson, EventError> {
            let key = event
                .get_document("documentKey")
                .map_err(|_| e("`documentKey` is missing"))?;
            let id = key
                .get("_id")
                .ok()
                .flatten()
                .ok_or_else(|| e("`documentKey` has no `_id`"))?;
            Bson::try_from(id).map_err(|x| e(&format!("unreadable `_id`: {x}")))
        };
        let full_document = || -> Result<Option<RawDocumentBuf>, EventError> {
            match event
                .get("fullDocument")
                .map_err(|x| e(&format!("unreadable `fullDocument`: {x}")))?
            {
                Some(bson::RawBsonRef::Document(d)) => Ok(Some(d.to_owned())),
                Some(bson::RawBsonRef::Null) | None => Ok(None),
                Some(_) => Err(e("`fullDocument` is not a document")),
            }
        };
        let change = |kind, op| SourceChange { kind, time, op };
        let document_change = |kind: ChangeKind| -> Result<SourceChange, EventError> {
            let ns = source_ns()?;
            let dest = self.mapping.map(&ns);
            let op = match kind {
                // A `documentKey` with more than `_id` comes from a collection sharded on the
                // source. There, an update that changes a document's shard key so that it
                // moves to another shard shows as a delete and an insert, in either order
                // (SERVER-95461): this delete may remove a document that still exists. The
                // source decides: the document is written again as it is now, or deleted.
                ChangeKind::Delete if sharded_document_key(event) => DestinationOp::Refetch {
                    ns: dest,
                    id: id()?,
                    source: ns,
                },
                ChangeKind::Delete => DestinationOp::Delete {
                    ns: dest,
                    id: id()?,
                },
                ChangeKind::Insert | ChangeKind::Replace => match full_document()? {
                    Some(document) => DestinationOp::Upsert {
                        ns: dest,
                        id: id()?,
                        document,
                    },
                    None => return Err(e("an insert or replace event without `fullDocument`")),
                },
                _ => match self.update_mode {
                    UpdateMode::FullDocument => match full_document()? {
                        Some(document) => DestinationOp::Upsert {
                            ns: dest,
                            id: id()?,
                            document,
                        },
                        None => DestinationOp::Skip(
                            "the document was deleted after this update; its delete follows",
                        ),
                    },
                    UpdateMode::Delta => self.delta(event, dest, ns, id()?, &e)?,
                },
            };
            Ok(change(kind, op))
        };
        match operation {
            "insert" => document_change(ChangeKind::Insert),
            "update" => document_change(ChangeKind::Update),
            "replace" => document_change(ChangeKind::Replace),
            "delete" => document_change(ChangeKind::Delete),
            _ => Ok(change(
                ChangeKind::Ddl,
                DestinationOp::Ddl(self.ddl(operation, event, &ns_of, &e)?),
            )),
        }
    }

    fn delta(
        &self,
        event: &RawDocument,
        ns: Namespace,
        source: Namespace,
        id: Bson,
        e: &dyn Fn(&str) -> EventError,
    ) -> Result<DestinationOp, EventError> {
        let description = event
            .get_document("updateDescription")
            .map_err(|_| e("an update event without `updateDescription`"))?;
        let to_doc = |raw: &RawDocument| {
            Document::try_from(raw).map_err(|x| e(&format!("unreadable update description: {x}")))
        };
        let set = match description.get_document("updatedFields") {
            Ok(d) => to_doc(d)?,
            Err(_) => Document::new(),
        };
        let mut unset = Vec::new();
        if let Ok(removed) = description.get_array("removedFields") {
            for f in removed {
                let f = f.map_err(|x| e(&format!("unreadable removedFields: {x}")))?;
                unset.push(
                    f.as_str()
                        .ok_or_else(|| e("a removed field is not a string"))?
                        .to_owned(),
                );
            }
        }
        let mut truncate = Vec::new();
        if let Ok(truncated) = description.get_array("truncatedArrays") {
            for t in truncated {
                let t = t.map_err(|x| e(&format!("unreadable truncatedArrays: {x}")))?;
                let t = t
                    .as_document()
                    .ok_or_else(|| e("a truncated array entry is not a document"))?;
                let field = t
                    .get_str("field")
                    .map_err(|_| e("a truncated array has no `field`"))?;
                let size = t
                    .get_i32("newSize")
                    .map_err(|_| e("a truncated array has no `newSize`"))?;
                truncate.push((field.to_owned(), size));
            }
        }
        // Paths whose components contain a dot or start with `$` cannot be written with update
        // operators; the whole document is looked up instead.
        if let Ok(ambiguous) = description.get_document("disambiguatedPaths") {
            let awkward = ambiguous.iter().filter_map(Result::ok).any(|(_, parts)| {
                parts.as_array().is_some_and(|a| {
                    a.into_iter().filter_map(Result::ok).any(|p| {
                        p.as_str()
                            .is_some_and(|s| s.contains('.') || s.starts_with('$'))
                    })
                })
            });
            if awkward {
                return Ok(DestinationOp::Refetch { ns, id, source });
            }
        }
        Ok(DestinationOp::Delta {
            ns,
            id,
            source,
            set,
            unset,
            truncate,
        })
    }

    fn ddl(
        &self,
        operation: &str,
        event: &RawDocument,
        ns_of: &dyn Fn(&str) -> Option<EventNamespace>,
        e: &dyn Fn(&str) -> EventError,
    ) -> Result<DdlChange, EventError> {
        let namespace = |field: &str| -> Result<Namespace, EventError> {
            match ns_of(field) {
                Some((db, Some(coll))) => Ok(Namespace::new(db, coll)),
                _ => Err(e(&format!("`{field}` has no collection"))),
            }
        };
        let description = || -> Result<Document, EventError> {
            match event.get_document("operationDescription") {
                Ok(d) => Document::try_from(d)
                    .map_err(|x| e(&format!("unreadable operationDescription: {x}"))),
                Err(_) => Ok(Document::new()),
            }
        };
        Ok(match operation {
            "create" => {
                let source = namespace("ns")?;
                let mut options = description()?;
                options.remove("idIndex");
                if let Ok(view_on) = options.get_str("viewOn") {
                    let base = self.mapping.map(&Namespace::new(source.db(), view_on));
                    options.insert("viewOn", base.coll());
                }
                DdlChange::Create {
                    ns: self.mapping.map(&source),
                    options,
                }
            }
            "drop" => DdlChange::Drop {
                ns: self.mapping.map(&namespace("ns")?),
            },
            "rename" => {
                let from = namespace("ns")?;
                let to = namespace("to")?;
                match (self.filter.includes(&from), self.filter.includes(&to)) {
                    (true, true) => DdlChange::Rename {
                        from: self.mapping.map(&from),
                        to: self.mapping.map(&to),
                        drop_target: description()?.contains_key("dropTarget"),
                    },
                    // Leaving the migration: it no longer exists under a migrated name.
                    (true, false) => DdlChange::Drop {
                        ns: self.mapping.map(&from),
                    },
                    (false, _) => DdlChange::RenamedIn { from, to },
                }
            }
            "dropDatabase" => DdlChange::DropDatabase {
                db: ns_of("ns").map(|(db, _)| db).unwrap_or_default(),
            },
            "createIndexes" | "dropIndexes" => {
                let ns = self.mapping.map(&namespace("ns")?);
                let desc = description()?;
                let indexes: Vec<Document> = desc
                    .get_array("indexes")
                    .map_err(|_| e("an index event without `operationDescription.indexes`"))?
                    .iter()
                    .filter_map(|i| i.as_document().cloned())
                    .map(|mut i| {
                        i.remove("v");
                        i
                    })
                    .collect();
                if operation == "createIndexes" {
                    DdlChange::CreateIndexes { ns, indexes }
                } else {
                    let names = indexes
                        .iter()
                        .filter_map(|i| i.get_str("name").ok().map(str::to_owned))
                        .collect();
                    DdlChange::DropIndexes { ns, names }
                }
            }
            "modify" => DdlChange::Modify {
                ns: self.mapping.map(&namespace("ns")?),
                changes: description()?,
            },
            other => DdlChange::Unsupported {
                operation: other.to_owned(),
                ns: ns_of("ns").map_or_else(String::new, |(db, coll)| match coll {
                    Some(c) => format!("{db}.{c}"),
                    None => db,
                }),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use bson::{doc, rawdoc};

    use super::*;
    use crate::namespace::RenameRule;

    fn ts() -> Timestamp {
        Timestamp {
            time: 100,
            increment: 3,
        }
    }

    fn interpret(event: RawDocumentBuf, mode: UpdateMode) -> Result<SourceChange, EventError> {
        let filter = NamespaceFilter::new(
            vec![crate::namespace::NamespacePattern::parse("shop").unwrap()],
            vec![],
        );
        let mapping = NamespaceMapping::new(vec![RenameRule::parse("shop", "shop_v2").unwrap()]);
        Interpreter {
            filter: &filter,
            mapping: &mapping,
            update_mode: mode,
        }
        .interpret(&event)
    }

    fn ns(s: &str) -> Namespace {
        Namespace::parse(s).unwrap()
    }

    #[test]
    fn document_events_become_idempotent_writes_under_the_destination_name() {
        let insert = rawdoc! { "operationType": "insert", "clusterTime": ts(), "ns": { "db": "shop", "coll": "o" },
        "documentKey": { "_id": 1 }, "fullDocument": { "_id": 1, "x": 1 } };
        let c = interpret(insert, UpdateMode::FullDocument).unwrap();
        assert_eq!(c.kind, ChangeKind::Insert);
        assert_eq!(c.time, ts());
        assert!(
            matches!(c.op, DestinationOp::Upsert { ref ns, id: Bson::Int32(1), .. } if ns == &self::ns("shop_v2.o"))
        );

        let delete = rawdoc! { "operationType": "delete", "clusterTime": ts(), "ns": { "db": "shop", "coll": "o" }, "documentKey": { "_id": "k" } };
        assert_eq!(
            interpret(delete, UpdateMode::FullDocument).unwrap().op,
            DestinationOp::Delete {
                ns: ns("shop_v2.o"),
                id: Bson::String("k".into())
            }
        );

        // A sharded source's delete may be half of a move between shards: the source decides.
        let sharded_delete = rawdoc! { "operationType": "delete", "clusterTime": ts(), "ns": { "db": "shop", "coll": "o" }, "documentKey": { "c": 4, "_id": "k" } };
        assert_eq!(
            interpret(sharded_delete, UpdateMode::FullDocument)
                .unwrap()
                .op,
            DestinationOp::Refetch {
                ns: ns("shop_v2.o"),
                id: Bson::String("k".into()),
                source: ns("shop.o"),
            }
        );

        let gone = rawdoc! { "operationType": "update", "clusterTime": ts(), "ns": { "db": "shop", "coll": "o" },
        "documentKey": { "_id": 1 }, "updateDescription": { "updatedFields": {}, "removedFields": [] }, "fullDocument": null };
        assert!(matches!(
            interpret(gone, UpdateMode::FullDocument).unwrap().op,
            DestinationOp::Skip(_)
        ));
    }

    #[test]
    fn delta_mode_keeps_the_update_description() {
        let update = rawdoc! { "operationType": "update", "clusterTime": ts(), "ns": { "db": "shop", "coll": "o" },
        "documentKey": { "_id": 1 },
        "updateDescription": { "updatedFields": { "a.b": 2, "arr.3": "x" }, "removedFields": ["old"],
                               "truncatedArrays": [{ "field": "arr", "newSize": 4 }] } };
        match interpret(update, UpdateMode::Delta).unwrap().op {
            DestinationOp::Delta {
                ns: n,
                set,
                unset,
                truncate,
                source,
                ..
            } => {
                assert_eq!(n, ns("shop_v2.o"));
                assert_eq!(source, ns("shop.o"));
                assert_eq!(set, doc! { "a.b": 2, "arr.3": "x" });
                assert_eq!(unset, vec!["old"]);
                assert_eq!(truncate, vec![("arr".to_owned(), 4)]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn ddl_events_are_mapped() {
        let create_view = rawdoc! { "operationType": "create", "clusterTime": ts(), "ns": { "db": "shop", "coll": "v" },
        "operationDescription": { "viewOn": "o", "pipeline": [] } };
        assert_eq!(
            interpret(create_view, UpdateMode::FullDocument).unwrap().op,
            DestinationOp::Ddl(DdlChange::Create {
                ns: ns("shop_v2.v"),
                options: doc! { "viewOn": "o", "pipeline": [] }
            })
        );
        let rename = rawdoc! { "operationType": "rename", "clusterTime": ts(), "ns": { "db": "shop", "coll": "a" },
        "to": { "db": "shop", "coll": "b" }, "operationDescription": { "to": { "db": "shop", "coll": "b" } } };
        assert_eq!(
            interpret(rename, UpdateMode::FullDocument).unwrap().op,
            DestinationOp::Ddl(DdlChange::Rename {
                from: ns("shop_v2.a"),
                to: ns("shop_v2.b"),
                drop_target: false
            })
        );
        let out = rawdoc! { "operationType": "rename", "clusterTime": ts(), "ns": { "db": "shop", "coll": "a" }, "to": { "db": "other", "coll": "b" } };
        assert_eq!(
            interpret(out, UpdateMode::FullDocument).unwrap().op,
            DestinationOp::Ddl(DdlChange::Drop {
                ns: ns("shop_v2.a")
            })
        );
        let into = rawdoc! { "operationType": "rename", "clusterTime": ts(), "ns": { "db": "other", "coll": "b" }, "to": { "db": "shop", "coll": "a" } };
        assert!(matches!(
            interpret(into, UpdateMode::FullDocument).unwrap().op,
            DestinationOp::Ddl(DdlChange::RenamedIn { .. })
        ));
        let index = rawdoc! { "operationType": "createIndexes", "clusterTime": ts(), "ns": { "db": "shop", "coll": "o" },
        "operationDescription": { "indexes": [{ "v": 2, "key": { "x": 1 }, "name": "x_1", "unique": true }] } };
        assert_eq!(
            interpret(index, UpdateMode::FullDocument).unwrap().op,
            DestinationOp::Ddl(DdlChange::CreateIndexes {
                ns: ns("shop_v2.o"),
                indexes: vec![doc! { "key": { "x": 1 }, "name": "x_1", "unique": true }]
            })
        );
    }

    #[test]
    fn malformed_events_are_errors_that_say_what_is_missing() {
        let no_time = rawdoc! { "operationType": "insert" };
        assert!(
            interpret(no_time, UpdateMode::FullDocument)
                .unwrap_err()
                .detail
                .contains("clusterTime")
        );
        let no_key = rawdoc! { "operationType": "delete", "clusterTime": ts(), "ns": { "db": "shop", "coll": "o" } };
        let error = interpret(no_key, UpdateMode::FullDocument).unwrap_err();
        assert!(
            error.detail.contains("documentKey") && error.time == "100.3",
            "{error}"
        );
        let no_doc = rawdoc! { "operationType": "insert", "clusterTime": ts(), "ns": { "db": "shop", "coll": "o" }, "documentKey": { "_id": 1 } };
        assert!(interpret(no_doc, UpdateMode::FullDocument).is_err());
    }

    mod hostile {
        use proptest::prelude::*;

        use super::*;

        fn value() -> impl Strategy<Value = Bson> {
            let leaf = prop_oneof![
                Just(Bson::Null),
                any::<i32>().prop_map(Bson::Int32),
                ".{0,8}".prop_map(Bson::String),
                Just(Bson::Timestamp(ts())),
                Just(Bson::MaxKey),
            ];
            leaf.prop_recursive(3, 12, 3, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..3).prop_map(Bson::Array),
                    prop::collection::vec((field(), inner), 0..3)
                        .prop_map(|kv| Bson::Document(kv.into_iter().collect())),
                ]
            })
        }

        /// Field names of change events, and a few others.
        fn field() -> impl Strategy<Value = String> {
            prop::sample::select(vec![
                "_id",
                "db",
                "coll",
                "to",
                "ns",
                "updatedFields",
                "removedFields",
                "truncatedArrays",
                "field",
                "newSize",
                "operationDescription",
                "x",
            ])
            .prop_map(str::to_owned)
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(1024))]

            /// Events with any operation type and any shape or type in their fields are
            /// interpreted or refused with an error; never a panic.
            #[test]
            fn any_event_is_interpreted_or_refused(
                op in prop::sample::select(vec![
                    "insert", "update", "replace", "delete", "drop", "rename", "dropDatabase",
                    "create", "createIndexes", "dropIndexes", "modify", "invalidate", "shardCollection", "bogus",
                ]),
                ns in value(),
                key in value(),
                full in value(),
                description in value(),
                extra in prop::collection::vec((field(), value()), 0..3),
                with_time in any::<bool>(),
            ) {
                let mut event = doc! { "operationType": op, "ns": ns, "documentKey": key,
                    "fullDocument": full, "updateDescription": description.clone(),
                    "operationDescription": description };
                if with_time {
                    event.insert("clusterTime", ts());
                }
                event.extend(extra);
                let raw = RawDocumentBuf::try_from(&event).unwrap();
                for mode in [UpdateMode::FullDocument, UpdateMode::Delta] {
                    // An error says when (the event's time, or that it has none) and what.
                    if let Err(e) = interpret(raw.clone(), mode) {
                        let when = if with_time { "100.3" } else { "an unknown time" };
                        prop_assert!(e.time == when || e.time == "an unknown time", "{e}");
                        prop_assert!(!e.detail.is_empty(), "{e}");
                    }
                }
            }
        }
    }
}
