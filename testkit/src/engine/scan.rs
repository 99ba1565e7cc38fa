//! Finding the documents a filter selects, using the `_id` index when the filter pins `_id`,
//! and the scans a `find` cursor reads a batch at a time.

use std::ops::Bound;
use std::sync::Arc;

use bson::RawDocumentBuf;

use crate::engine::collection::{CollectionData, RecordId};
use crate::error::CommandError;
use crate::query::filter::{Filter, MatchDetails};
use crate::query::keystring;
use crate::query::projection::Projection;

/// One matching document.
#[derive(Debug, Clone)]
pub struct Match {
    /// Its record.
    pub rid: RecordId,
    /// The stored document.
    pub doc: Arc<RawDocumentBuf>,
    /// Where the filter matched inside arrays (for the positional `$`).
    pub details: Option<MatchDetails>,
}

/// The documents matching `filter` in natural order, at most `limit` of them.
///
/// A filter that pins `_id` to one value is answered from the `_id` index (time-series
/// collections have no unique `_id` and are always scanned).
pub fn matching(
    data: &CollectionData,
    filter: &Filter,
    limit: Option<usize>,
) -> Result<Vec<Match>, CommandError> {
    let limit = limit.unwrap_or(usize::MAX);
    let mut out = Vec::new();
    if limit == 0 {
        return Ok(out);
    }
    if !data.options.timeseries
        && let Some(id) = filter.id_value()
    {
        let key = keystring::encode_bson(&id);
        if let Some((rid, doc)) = data.find_by_id_key(&key)
            && let Some(details) = filter.matches_details(doc)?
        {
            out.push(Match {
                rid,
                doc: Arc::clone(doc),
                details: Some(details),
            });
        }
        return Ok(out);
    }
    let match_all = filter.is_match_all();
    for (rid, doc) in data.documents() {
        let details = if match_all {
            Some(MatchDetails::default())
        } else {
            filter.matches_details(doc)?
        };
        if let Some(details) = details {
            out.push(Match {
                rid: *rid,
                doc: Arc::clone(doc),
                details: Some(details),
            });
            if out.len() >= limit {
                break;
            }
        }
    }
    Ok(out)
}

/// The order a [`Scan`] walks, and where it stands.
#[derive(Debug, Clone)]
pub enum ScanOrder {
    /// The `_id` index, ascending, between two KeyStrings (`min` inclusive, `max` exclusive,
    /// as `find` with `min`/`max` bounds them).
    Id {
        /// Lower bound.
        min: Option<Vec<u8>>,
        /// Upper bound.
        max: Option<Vec<u8>>,
        /// The last key examined; the scan goes on after it.
        after: Option<Vec<u8>>,
    },
    /// Natural (insertion) order.
    Natural {
        /// The last record examined; the scan goes on after it.
        after: Option<RecordId>,
    },
}

/// A `find` read a batch at a time, as mongod reads a collection or index scan: each batch
/// continues from the last document examined, under the collection's read lock for that batch
/// only. Like mongod's (read concern "local"), the cursor is not a snapshot: a document
/// written ahead of its position is returned, one behind it is not. In `_id` order no
/// document comes twice; in natural order a document deleted and inserted again comes again,
/// as from mongod's collection scan. A drop, a rename or an `$out` over the collection ends
/// the scan with 175 `QueryPlanKilled` (checked by the cursor's
/// [`Origin`](crate::engine::cursor::Origin)), and losing its position in a capped collection
/// with 136 `CappedPositionLost`, as on mongod.
#[derive(Debug, Clone)]
pub struct Scan {
    /// Where the scan stands.
    pub order: ScanOrder,
    /// What it returns of the documents it examines.
    pub select: Selection,
}

/// What a scan returns of the documents it examines.
#[derive(Debug, Clone)]
pub struct Selection {
    /// Documents to return.
    pub filter: Filter,
    /// Applied to each returned document.
    pub projection: Option<Projection>,
    /// Matching documents still to pass over (`skip`).
    pub skip: usize,
    /// Documents still to return (`limit`), `None` for all.
    pub remaining: Option<usize>,
}

/// Why a batch ended.
enum BatchEnd {
    /// It holds what was asked for; the scan may go on.
    Full,
    /// Nothing is left.
    Exhausted,
}

impl Scan {
    /// The next batch: at most `count` documents and `max_bytes` bytes (at least one document
    /// when any is left), and whether the scan is over.
    pub fn next_batch(
        &mut self,
        data: &CollectionData,
        count: usize,
        max_bytes: usize,
    ) -> Result<(Vec<Arc<RawDocumentBuf>>, bool), CommandError> {
        let mut out = Vec::new();
        let end = match &mut self.order {
            ScanOrder::Id { min, max, after } => {
                let lower = match (after.as_deref(), min.as_deref()) {
                    (Some(a), _) => Bound::Excluded(a),
                    (None, Some(m)) => Bound::Included(m),
                    (None, None) => Bound::Unbounded,
                };
                let (end, last) = fill(
                    data.id_entries(lower, max.as_deref()),
                    &mut self.select,
                    (count, max_bytes),
                    &mut out,
                )?;
                if let Some(key) = last {
                    *after = Some(key.to_vec());
                }
                end
            }
            ScanOrder::Natural { after } => {
                if let Some(rid) = after
                    && data.options.capped.is_some()
                    && data.get(*rid).is_none()
                {
                    return Err(CommandError::new(
                        136,
                        format!(
                            "CollectionScan died due to position in capped collection being deleted. Last seen record id: RecordId({rid})"
                        ),
                    ));
                }
                let lower = after.map_or(Bound::Unbounded, Bound::Excluded);
                let (end, last) = fill(
                    data.records_from(lower).map(|(rid, doc)| (*rid, doc)),
                    &mut self.select,
                    (count, max_bytes),
                    &mut out,
                )?;
                if last.is_some() {
                    *after = last;
                }
                end
            }
        };
        Ok((out, matches!(end, BatchEnd::Exhausted)))
    }
}

/// Fills `out` from `entries` (position, document); returns why it stopped and the position of
/// the last document examined (returned or passed over).
fn fill<'a, P: Copy>(
    mut entries: impl Iterator<Item = (P, &'a Arc<RawDocumentBuf>)>,
    select: &mut Selection,
    (count, max_bytes): (usize, usize),
    out: &mut Vec<Arc<RawDocumentBuf>>,
) -> Result<(BatchEnd, Option<P>), CommandError> {
    let Selection {
        filter,
        projection,
        skip,
        remaining,
    } = select;
    let match_all = filter.is_match_all();
    let mut bytes = 0usize;
    let mut last = None;
    loop {
        if *remaining == Some(0) {
            return Ok((BatchEnd::Exhausted, last));
        }
        if out.len() >= count {
            // Over when no document is left to examine.
            let end = if entries.next().is_none() {
                BatchEnd::Exhausted
            } else {
                BatchEnd::Full
            };
            return Ok((end, last));
        }
        let Some((position, doc)) = entries.next() else {
            return Ok((BatchEnd::Exhausted, last));
        };
        let details = if match_all {
            None
        } else {
            match filter.matches_details(doc)? {
                Some(details) => Some(details),
                None => {
                    last = Some(position);
                    continue;
                }
            }
        };
        if *skip > 0 {
            *skip -= 1;
            last = Some(position);
            continue;
        }
        let doc = match projection {
            Some(p) => Arc::new(p.apply(doc, details.as_ref())?),
            None => Arc::clone(doc),
        };
        let size = doc.as_bytes().len();
        if !out.is_empty() && bytes + size > max_bytes {
            // Left for the next batch: the position stays before it.
            return Ok((BatchEnd::Full, last));
        }
        bytes += size;
        out.push(doc);
        last = Some(position);
        if let Some(n) = remaining.as_mut() {
            *n -= 1;
        }
    }
}
