//! Matching two streams of documents that arrive in the same `_id` order, without comparing
//! `_id` values across BSON types here.
//!
//! Both sides are read with the same `_id` range, sorted by `_id` on each server, so equal
//! documents arrive at the same moment and cancel out at once. A document present on one side
//! only waits in that side's pending map until the range ends; so memory holds only
//! disagreements, at most one partition's worth, whatever the collection's size.
//!
//! Keys are the exact bytes of `{_id: value}` (type and value), and documents are compared by
//! a 128-bit xxh3 hash of their raw bytes: a changed value, a changed type (int32 vs int64) or
//! a changed field order all count as a difference, as they would for any application that
//! reads the bytes.

use std::collections::HashMap;

use bson::{RawDocument, RawDocumentBuf};
use twox_hash::XxHash3_128;

/// The identity of a document: the bytes of `{_id: value}`.
pub type IdKey = Vec<u8>;

/// The key and hash of a raw document, or `None` when it has no `_id`.
pub fn key_and_hash(doc: &RawDocument) -> Option<(IdKey, u128)> {
    let id = doc.get("_id").ok().flatten()?;
    let mut key = RawDocumentBuf::new();
    key.append(bson::cstr!("_id"), id);
    Some((key.into_bytes(), XxHash3_128::oneshot(doc.as_bytes())))
}

/// The `_id` of a key, as relaxed Extended JSON (for reports).
pub fn describe_key(key: &[u8]) -> String {
    RawDocument::from_bytes(key)
        .ok()
        .and_then(|d| d.get("_id").ok().flatten())
        .and_then(|v| bson::Bson::try_from(v).ok())
        .map_or_else(
            || "<unreadable _id>".to_owned(),
            |b| b.into_relaxed_extjson().to_string(),
        )
}

/// What one compared range found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RangeOutcome {
    /// Documents seen on the source.
    pub source_documents: u64,
    /// Documents seen on the destination.
    pub destination_documents: u64,
    /// On the source only.
    pub missing: Vec<IdKey>,
    /// On the destination only.
    pub extra: Vec<IdKey>,
    /// On both, with different bytes.
    pub different: Vec<IdKey>,
}

/// Pairs documents of the two sides as they arrive.
#[derive(Debug, Default)]
pub struct Matcher {
    source: HashMap<IdKey, u128>,
    destination: HashMap<IdKey, u128>,
    outcome: RangeOutcome,
}

impl Matcher {
    /// A document read from the source.
    pub fn source(&mut self, key: IdKey, hash: u128) {
        self.outcome.source_documents += 1;
        match self.destination.remove(&key) {
            Some(other) => self.pair(key, hash, other),
            None => {
                self.source.insert(key, hash);
            }
        }
    }

    /// A document read from the destination.
    pub fn destination(&mut self, key: IdKey, hash: u128) {
        self.outcome.destination_documents += 1;
        match self.source.remove(&key) {
            Some(other) => self.pair(key, other, hash),
            None => {
                self.destination.insert(key, hash);
            }
        }
    }

    fn pair(&mut self, key: IdKey, source: u128, destination: u128) {
        if source != destination {
            self.outcome.different.push(key);
        }
    }

    /// Documents waiting for their counterpart (the memory in use).
    pub fn pending(&self) -> usize {
        self.source.len() + self.destination.len()
    }

    /// Ends the range: whatever is still unpaired exists on one side only.
    pub fn finish(mut self) -> RangeOutcome {
        let mut missing: Vec<IdKey> = self.source.into_keys().collect();
        let mut extra: Vec<IdKey> = self.destination.into_keys().collect();
        missing.sort();
        extra.sort();
        self.outcome.missing = missing;
        self.outcome.extra = extra;
        self.outcome.different.sort();
        self.outcome
    }
}

#[cfg(test)]
mod tests {
    use bson::rawdoc;

    use super::*;

    fn kh(doc: RawDocumentBuf) -> (IdKey, u128) {
        key_and_hash(&doc).unwrap()
    }

    #[test]
    fn equal_streams_leave_nothing_pending() {
        let mut m = Matcher::default();
        for i in 0..1000 {
            let (k, h) = kh(rawdoc! { "_id": i, "v": "x" });
            m.source(k.clone(), h);
            m.destination(k, h);
            assert_eq!(m.pending(), 0);
        }
        let out = m.finish();
        assert_eq!(
            (out.source_documents, out.destination_documents),
            (1000, 1000)
        );
        assert!(out.missing.is_empty() && out.extra.is_empty() && out.different.is_empty());
    }

    #[test]
    fn missing_extra_and_different_are_told_apart() {
        let mut m = Matcher::default();
        let a = kh(rawdoc! { "_id": 1, "v": 1 });
        let b = kh(rawdoc! { "_id": 2, "v": 1 });
        let b_changed = kh(rawdoc! { "_id": 2, "v": 2 });
        let c = kh(rawdoc! { "_id": 3 });
        let d = kh(rawdoc! { "_id": 4 });
        // Arrival order differs between the sides; pairing does not depend on it.
        m.source(a.0.clone(), a.1);
        m.destination(b_changed.0.clone(), b_changed.1);
        m.source(b.0.clone(), b.1);
        m.source(c.0.clone(), c.1);
        m.destination(d.0.clone(), d.1);
        let out = m.finish();
        assert_eq!(
            out.missing
                .iter()
                .map(|k| describe_key(k))
                .collect::<Vec<_>>(),
            ["1", "3"]
        );
        assert_eq!(
            out.extra
                .iter()
                .map(|k| describe_key(k))
                .collect::<Vec<_>>(),
            ["4"]
        );
        assert_eq!(
            out.different
                .iter()
                .map(|k| describe_key(k))
                .collect::<Vec<_>>(),
            ["2"]
        );
    }

    #[test]
    fn types_and_field_order_matter() {
        let int32 = kh(rawdoc! { "_id": 1, "a": 1, "b": 2 });
        let int64 = kh(rawdoc! { "_id": 1_i64, "a": 1, "b": 2 });
        let reordered = kh(rawdoc! { "_id": 1, "b": 2, "a": 1 });
        assert_ne!(
            int32.0, int64.0,
            "an int64 _id is another key than an int32 one"
        );
        assert_eq!(int32.0, reordered.0);
        assert_ne!(int32.1, reordered.1, "field order changes the bytes");
        assert!(key_and_hash(&rawdoc! { "x": 1 }).is_none());
    }
}
