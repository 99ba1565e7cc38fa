//! Finding the documents a filter selects, using the `_id` index when the filter pins `_id`.

use std::sync::Arc;

use bson::RawDocumentBuf;

use crate::engine::collection::{CollectionData, RecordId};
use crate::error::CommandError;
use crate::query::filter::{Filter, MatchDetails};
use crate::query::keystring;

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
