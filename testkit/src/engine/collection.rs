//! One collection: its options, documents and indexes.
//!
//! Documents are stored as the raw BSON the client sent (`Arc<RawDocumentBuf>`), never
//! re-encoded, in insertion (natural) order keyed by a record id. The `_id` index maps the
//! KeyString encoding of `_id` to the record, so `_id` order, `hint({_id: 1})` with `min`/`max`
//! and point lookups follow the server's total order across BSON types. Secondary indexes live
//! in [`super::index`]. Each collection has its own `RwLock`, held only for in-memory work.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use bson::{Bson, Document, RawBsonRef, RawDocument, RawDocumentBuf, cstr};

use crate::engine::index::{Index, IndexSpec, duplicate_key_error, key_value};
use crate::error::{CommandError, to_raw};
use crate::query::filter::Filter;
use crate::query::keystring;
use crate::wire::MAX_BSON_OBJECT_SIZE;

/// A record's position in natural order.
pub type RecordId = u64;

/// Parsed collection options (what `create` accepted and `listCollections` returns).
#[derive(Debug, Clone, Default)]
pub struct CollectionOptions {
    /// The options document as `listCollections` reports it.
    pub options: Document,
    /// `capped: true` with `size` (bytes) and optional `max` (documents).
    pub capped: Option<(u64, Option<u64>)>,
    /// The document validator.
    pub validator: Option<Filter>,
    /// `validationLevel`: "strict" (default), "moderate" or "off".
    pub validation_level: String,
    /// `validationAction`: "error" (default) or "warn".
    pub validation_action: String,
    /// `changeStreamPreAndPostImages.enabled`.
    pub pre_and_post_images: bool,
    /// `clusteredIndex` given (the collection is clustered by `_id`).
    pub clustered: bool,
    /// `timeseries` given.
    pub timeseries: bool,
}

impl CollectionOptions {
    /// Re-derives the parsed fields from `options`.
    pub fn from_document(options: Document) -> Result<CollectionOptions, CommandError> {
        let capped = if matches!(options.get("capped"), Some(Bson::Boolean(true))) {
            let num = |k: &str| match options.get(k) {
                Some(Bson::Int32(n)) => Some(i64::from(*n)),
                Some(Bson::Int64(n)) => Some(*n),
                Some(Bson::Double(d)) => Some(*d as i64),
                _ => None,
            };
            let size = num("size").ok_or_else(|| {
                CommandError::bad_value("the 'size' field is required when 'capped' is true")
            })?;
            let max = num("max").filter(|m| *m > 0).map(|m| m as u64);
            Some((size.max(1) as u64, max))
        } else {
            None
        };
        let validator = match options.get("validator") {
            Some(Bson::Document(v)) if !v.is_empty() => Some(Filter::parse(&to_raw(v)?)?),
            Some(Bson::Document(_)) | None => None,
            Some(_) => {
                return Err(CommandError::type_mismatch(
                    "'validator' must be a document",
                ));
            }
        };
        let level = match options.get("validationLevel") {
            Some(Bson::String(s)) if matches!(s.as_str(), "off" | "strict" | "moderate") => {
                s.clone()
            }
            Some(other) => {
                return Err(CommandError::bad_value(format!(
                    "Enumeration value '{other}' for field 'validationLevel' is not a valid value."
                )));
            }
            None => "strict".to_string(),
        };
        let action = match options.get("validationAction") {
            Some(Bson::String(s)) if matches!(s.as_str(), "error" | "warn") => s.clone(),
            Some(other) => {
                return Err(CommandError::bad_value(format!(
                    "Enumeration value '{other}' for field 'validationAction' is not a valid value."
                )));
            }
            None => "error".to_string(),
        };
        let pre_and_post_images = matches!(
            options.get("changeStreamPreAndPostImages"),
            Some(Bson::Document(d)) if matches!(d.get("enabled"), Some(Bson::Boolean(true)))
        );
        Ok(CollectionOptions {
            capped,
            validator,
            validation_level: level,
            validation_action: action,
            pre_and_post_images,
            clustered: options.contains_key("clusteredIndex"),
            timeseries: options.contains_key("timeseries"),
            options,
        })
    }
}

/// The mutable state of a collection.
#[derive(Debug, Default, Clone)]
pub struct CollectionData {
    /// Set when the collection was dropped or renamed away; a writer that fetched the
    /// collection before that must look it up again.
    pub dropped: bool,
    /// Options.
    pub options: CollectionOptions,
    /// Documents in natural order.
    records: BTreeMap<RecordId, Arc<RawDocumentBuf>>,
    /// The next record id.
    next_record: RecordId,
    /// The `_id` index: KeyString of `_id` → record.
    id_index: BTreeMap<Vec<u8>, RecordId>,
    /// Secondary indexes, in creation order.
    pub indexes: Vec<Index>,
    /// Sum of the document sizes (`size` in collStats).
    data_size: u64,
    /// Incremented by every change; transactions use it to detect concurrent writers.
    version: u64,
    /// Incremented when the collection is renamed within its database or its contents are
    /// replaced by `$out`: a find reading it a batch at a time then ends with 175, as on
    /// mongod.
    pub epoch: u64,
}

/// A collection incarnation.
#[derive(Debug)]
pub struct Collection {
    /// The collection UUID (`info.uuid`), stable for this incarnation.
    pub uuid: bson::Uuid,
    /// Options, documents and indexes.
    data: RwLock<CollectionData>,
}

impl Collection {
    /// A new, empty collection with a fresh UUID.
    pub fn new(options: CollectionOptions) -> Collection {
        Self::with_uuid(bson::Uuid::new(), options)
    }

    /// A new, empty collection with a given UUID (a rename within a database keeps it).
    pub fn with_uuid(uuid: bson::Uuid, options: CollectionOptions) -> Collection {
        Collection {
            uuid,
            data: RwLock::new(CollectionData {
                options,
                next_record: 1,
                ..CollectionData::default()
            }),
        }
    }

    /// Shared access.
    pub fn read(&self) -> RwLockReadGuard<'_, CollectionData> {
        self.data.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Exclusive access.
    pub fn write(&self) -> RwLockWriteGuard<'_, CollectionData> {
        self.data.write().unwrap_or_else(|p| p.into_inner())
    }

    /// True for a time-series collection.
    pub fn is_timeseries(&self) -> bool {
        self.read().options.timeseries
    }
}

/// The KeyString of a document's `_id` (documents always have one once stored).
pub fn id_key(doc: &RawDocument) -> Vec<u8> {
    match doc.get("_id") {
        Ok(Some(v)) => keystring::encode_value(v),
        _ => keystring::encode_value(RawBsonRef::Null),
    }
}

/// Prepares a document for insertion as mongod does: `_id` generated when absent and moved to
/// the front when present elsewhere; `_id` types mongod refuses are refused; the 16 MiB limit
/// is enforced. A document that already starts with an acceptable `_id` is returned unchanged
/// (no copy, no re-encoding).
pub fn prepare_for_insert(doc: RawDocumentBuf) -> Result<RawDocumentBuf, CommandError> {
    if doc.as_bytes().len() > MAX_BSON_OBJECT_SIZE {
        return Err(CommandError::new(
            10334,
            format!(
                "object to insert too large. size in bytes: {}, max size: {MAX_BSON_OBJECT_SIZE}",
                doc.as_bytes().len()
            ),
        )
        .with_code_name("BSONObjectTooLarge"));
    }
    let mut first = true;
    let mut id_first = false;
    let mut id: Option<RawBsonRef<'_>> = None;
    for element in doc.iter() {
        let (key, value) = element?;
        if key.as_str() == "_id" {
            id_first = first;
            id = Some(value);
            break;
        }
        first = false;
    }
    if let Some(v) = id {
        match v {
            RawBsonRef::Array(_) => {
                return Err(CommandError::new(
                    53,
                    "The '_id' value cannot be of type array",
                ));
            }
            RawBsonRef::RegularExpression(_) => {
                return Err(CommandError::new(
                    53,
                    "The '_id' value cannot be of type regex",
                ));
            }
            RawBsonRef::Undefined => {
                return Err(CommandError::new(
                    53,
                    "The '_id' value cannot be of type undefined",
                ));
            }
            RawBsonRef::Document(d) => {
                for element in d.iter() {
                    let (key, _) = element?;
                    if key.as_str().starts_with('$') {
                        return Err(CommandError::new(
                            52,
                            format!(
                                "_id fields may not contain '$'-prefixed fields: {} is not valid for storage.",
                                key.as_str()
                            ),
                        ));
                    }
                }
            }
            _ => {}
        }
        if id_first {
            return Ok(doc);
        }
    }
    // Rebuild with `_id` first, copying the other elements' bytes as they are.
    let mut out = RawDocumentBuf::new();
    match id {
        Some(v) => out.append(cstr!("_id"), v),
        None => out.append(cstr!("_id"), bson::oid::ObjectId::new()),
    }
    for element in doc.iter() {
        let (key, value) = element?;
        if key.as_str() != "_id" {
            out.append(key, value);
        }
    }
    Ok(out)
}

impl CollectionData {
    /// The change counter (see the field).
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Marks a change made outside the document methods (options, indexes).
    pub fn touch(&mut self) {
        self.version += 1;
    }

    /// Number of documents.
    pub fn count(&self) -> usize {
        self.records.len()
    }

    /// Total size of the documents in bytes.
    pub fn data_size(&self) -> u64 {
        self.data_size
    }

    /// Documents in natural order.
    pub fn documents(&self) -> impl DoubleEndedIterator<Item = (&RecordId, &Arc<RawDocumentBuf>)> {
        self.records.iter()
    }

    /// The record with the given `_id` KeyString.
    pub fn find_by_id_key(&self, key: &[u8]) -> Option<(RecordId, &Arc<RawDocumentBuf>)> {
        let rid = *self.id_index.get(key)?;
        self.records.get(&rid).map(|d| (rid, d))
    }

    /// Documents in `_id` order between two `_id` KeyStrings (`min` inclusive, `max`
    /// exclusive, as `find` with `min`/`max` bounds them).
    pub fn id_range(
        &self,
        min: Option<&[u8]>,
        max: Option<&[u8]>,
    ) -> impl DoubleEndedIterator<Item = (RecordId, &Arc<RawDocumentBuf>)> {
        let lo = min.map_or(Bound::Unbounded, Bound::Included);
        self.id_keys(lo, max)
            .filter_map(|(_, rid)| self.records.get(rid).map(|d| (*rid, d)))
    }

    /// Documents in `_id` order with their `_id` KeyStrings, from `lower` to `max`
    /// (exclusive).
    pub fn id_entries<'a>(
        &'a self,
        lower: Bound<&[u8]>,
        max: Option<&[u8]>,
    ) -> impl Iterator<Item = (&'a [u8], &'a Arc<RawDocumentBuf>)> {
        self.id_keys(lower, max)
            .filter_map(|(key, rid)| self.records.get(rid).map(|d| (key.as_slice(), d)))
    }

    /// The `_id` index between `lower` and `max` (exclusive); empty when the bounds cross
    /// (`BTreeMap::range` panics on them).
    fn id_keys(
        &self,
        lower: Bound<&[u8]>,
        max: Option<&[u8]>,
    ) -> std::collections::btree_map::Range<'_, Vec<u8>, RecordId> {
        let upper = max.map_or(Bound::Unbounded, Bound::Excluded);
        let crossed = match (lower, upper) {
            (Bound::Included(a), Bound::Excluded(b)) => a > b,
            (Bound::Excluded(a), Bound::Excluded(b)) => a >= b,
            _ => false,
        };
        if crossed {
            // Start == end with one bound included is an empty range that does not panic.
            return self
                .id_index
                .range::<[u8], _>((Bound::Included(&[][..]), Bound::Excluded(&[][..])));
        }
        self.id_index.range::<[u8], _>((lower, upper))
    }

    /// Documents in natural order from `lower`.
    pub fn records_from(
        &self,
        lower: Bound<RecordId>,
    ) -> impl Iterator<Item = (&RecordId, &Arc<RawDocumentBuf>)> {
        self.records.range((lower, Bound::Unbounded))
    }

    /// The record ids of a secondary index between two keys (inclusive min, exclusive max).
    pub fn index_range(
        &self,
        index: usize,
        min: Option<&[u8]>,
        max: Option<&[u8]>,
    ) -> Vec<RecordId> {
        let Some(index) = self.indexes.get(index) else {
            return Vec::new();
        };
        let mut seen = std::collections::HashSet::new();
        index
            .entries
            .iter()
            .filter(|(k, _)| {
                min.is_none_or(|m| k.as_slice() >= m) && max.is_none_or(|m| k.as_slice() < m)
            })
            .filter(|(_, rid)| seen.insert(*rid))
            .map(|(_, rid)| *rid)
            .collect()
    }

    /// The document of a record.
    pub fn get(&self, rid: RecordId) -> Option<&Arc<RawDocumentBuf>> {
        self.records.get(&rid)
    }

    /// Checks the validator (121 `DocumentValidationFailure` when it fails and the action is
    /// "error").
    pub fn validate(
        &self,
        doc: &RawDocument,
        previous: Option<&RawDocument>,
    ) -> Result<(), CommandError> {
        let opts = &self.options;
        let Some(validator) = &opts.validator else {
            return Ok(());
        };
        if opts.validation_level == "off" || opts.validation_action == "warn" {
            return Ok(());
        }
        // "moderate": updates to documents that already failed validation are allowed.
        if opts.validation_level == "moderate"
            && let Some(prev) = previous
            && !validator.matches(prev)?
        {
            return Ok(());
        }
        if validator.matches(doc)? {
            return Ok(());
        }
        let id = doc
            .get("_id")
            .ok()
            .flatten()
            .and_then(|v| crate::error::to_bson(v).ok())
            .unwrap_or(Bson::Null);
        let mut info = Document::new();
        info.insert("failingDocumentId", id);
        info.insert("details", Document::new());
        Err(CommandError::new(121, "Document failed validation").with_extra("errInfo", info))
    }

    /// Index keys of `doc` for every secondary index, checking unique constraints against
    /// records other than `except`.
    fn index_keys(
        &self,
        ns: &str,
        doc: &RawDocument,
        except: Option<RecordId>,
    ) -> Result<Vec<Vec<Vec<u8>>>, CommandError> {
        let mut all = Vec::with_capacity(self.indexes.len());
        for index in &self.indexes {
            let keys = index.spec.keys(doc)?;
            if index.enforces_uniqueness() {
                for key in &keys {
                    if index.conflict(key, except).is_some() {
                        return Err(duplicate_key_error(
                            ns,
                            &index.spec.name,
                            &index.spec.key,
                            &key_value(&index.spec.pattern, doc),
                        ));
                    }
                }
            }
            all.push(keys);
        }
        Ok(all)
    }

    fn id_duplicate(ns: &str, doc: &RawDocument) -> CommandError {
        let id = doc
            .get("_id")
            .ok()
            .flatten()
            .and_then(|v| crate::error::to_bson(v).ok())
            .unwrap_or(Bson::Null);
        let mut key_value = Document::new();
        key_value.insert("_id", id);
        let mut pattern = Document::new();
        pattern.insert("_id", 1);
        duplicate_key_error(ns, "_id_", &pattern, &key_value)
    }

    /// Inserts a prepared document (see [`prepare_for_insert`]), enforcing unique indexes.
    /// Capped collections drop their oldest documents to stay within `size`/`max`; the dropped
    /// documents are returned (mongod does not report them as deletes to change streams).
    pub fn insert(
        &mut self,
        ns: &str,
        doc: RawDocumentBuf,
    ) -> Result<Arc<RawDocumentBuf>, CommandError> {
        self.validate(&doc, None)?;
        let id_key = id_key(&doc);
        // Time-series collections store measurements in buckets and have no unique `_id`.
        let timeseries = self.options.timeseries;
        if !timeseries && self.id_index.contains_key(&id_key) {
            return Err(Self::id_duplicate(ns, &doc));
        }
        let keys = self.index_keys(ns, &doc, None)?;
        let rid = self.next_record;
        self.next_record += 1;
        self.version += 1;
        let doc = Arc::new(doc);
        self.data_size += doc.as_bytes().len() as u64;
        if !timeseries {
            self.id_index.insert(id_key, rid);
        }
        for (index, keys) in self.indexes.iter_mut().zip(keys) {
            for key in keys {
                index.entries.insert((key, rid));
            }
        }
        self.records.insert(rid, Arc::clone(&doc));
        if let Some((size, max)) = self.options.capped {
            while self.records.len() > 1
                && (self.data_size > size || max.is_some_and(|m| self.records.len() as u64 > m))
            {
                let Some((&oldest, _)) = self.records.iter().next() else {
                    break;
                };
                self.remove(oldest);
            }
        }
        Ok(doc)
    }

    /// Replaces the document of a record, enforcing unique indexes. `_id` must not change.
    pub fn replace(
        &mut self,
        ns: &str,
        rid: RecordId,
        doc: RawDocumentBuf,
    ) -> Result<Arc<RawDocumentBuf>, CommandError> {
        if doc.as_bytes().len() > MAX_BSON_OBJECT_SIZE {
            return Err(CommandError::new(
                17419,
                format!("Resulting document after update is larger than {MAX_BSON_OBJECT_SIZE}"),
            ));
        }
        let Some(old) = self.records.get(&rid).cloned() else {
            return Err(CommandError::new(1, "record disappeared during update"));
        };
        if id_key(&old) != id_key(&doc) {
            return Err(CommandError::new(
                66,
                "After applying the update, the (immutable) field '_id' was found to have been altered",
            ));
        }
        self.validate(&doc, Some(&old))?;
        let new_keys = self.index_keys(ns, &doc, Some(rid))?;
        for (index, keys) in self.indexes.iter_mut().zip(new_keys) {
            let old_keys = index.spec.keys(&old).unwrap_or_default();
            for key in old_keys {
                index.entries.remove(&(key, rid));
            }
            for key in keys {
                index.entries.insert((key, rid));
            }
        }
        let doc = Arc::new(doc);
        self.version += 1;
        self.data_size = self.data_size - old.as_bytes().len() as u64 + doc.as_bytes().len() as u64;
        self.records.insert(rid, Arc::clone(&doc));
        Ok(doc)
    }

    /// Removes a record; returns its document.
    pub fn remove(&mut self, rid: RecordId) -> Option<Arc<RawDocumentBuf>> {
        let doc = self.records.remove(&rid)?;
        self.version += 1;
        let key = id_key(&doc);
        if self.id_index.get(&key) == Some(&rid) {
            self.id_index.remove(&key);
        }
        for index in &mut self.indexes {
            for key in index.spec.keys(&doc).unwrap_or_default() {
                index.entries.remove(&(key, rid));
            }
        }
        self.data_size -= doc.as_bytes().len() as u64;
        Some(doc)
    }

    /// Removes every document (used by `drop` bookkeeping and tests).
    pub fn clear(&mut self) {
        self.records.clear();
        self.id_index.clear();
        for index in &mut self.indexes {
            index.entries.clear();
        }
        self.data_size = 0;
    }

    /// Builds a new index over the existing documents (fails with 11000 on a unique conflict,
    /// leaving the collection unchanged).
    pub fn build_index(&mut self, ns: &str, spec: IndexSpec) -> Result<(), CommandError> {
        let mut index = Index::new(spec);
        for (rid, doc) in &self.records {
            for key in index.spec.keys(doc)? {
                if index.spec.unique && index.conflict(&key, Some(*rid)).is_some() {
                    return Err(duplicate_key_error(
                        ns,
                        &index.spec.name,
                        &index.spec.key,
                        &key_value(&index.spec.pattern, doc),
                    ));
                }
                index.entries.insert((key, *rid));
            }
        }
        self.indexes.push(index);
        self.version += 1;
        Ok(())
    }

    /// Approximate size of all index entries (for `totalIndexSize`).
    pub fn index_sizes(&self) -> Vec<(String, u64)> {
        let id_size: u64 = self.id_index.keys().map(|k| k.len() as u64 + 8).sum();
        let mut out = vec![("_id_".to_string(), id_size)];
        for index in &self.indexes {
            let size = index.entries.iter().map(|(k, _)| k.len() as u64 + 8).sum();
            out.push((index.spec.name.clone(), size));
        }
        out
    }
}
