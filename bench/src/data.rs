//! The benchmark's documents: deterministic, of a configurable size, with an ObjectId `_id`,
//! shaped like an application's order (strings, numbers, a date, an array, a subdocument).

use bson::oid::ObjectId;
use bson::{RawDocumentBuf, rawdoc};
use mongodb::Client;

use crate::BoxError;

/// Document `i` of a data set: the same `i` gives the same bytes.
pub fn document(i: u64, size: usize) -> RawDocumentBuf {
    let mut id = [0u8; 12];
    // A fixed creation second and `i`: unique, increasing, like ObjectIds made in one process.
    id[..4].copy_from_slice(&1_790_000_000u32.to_be_bytes());
    id[4..].copy_from_slice(&i.to_be_bytes());
    let status = ["new", "paid", "shipped", "delivered"][(i % 4) as usize];
    let mut doc = rawdoc! {
        "_id": ObjectId::from_bytes(id),
        "i": i as i64,
        "customer": format!("customer-{:05}", i % 10_000),
        "status": status,
        "amount": (i % 100_000) as f64 / 100.0,
        "created": bson::DateTime::from_millis(1_790_000_000_000 + i as i64),
        "tags": ["alpha", "beta", format!("t{}", i % 97)],
        "address": { "street": format!("{} Main Street", i % 1000), "city": "Springfield", "zip": format!("{:05}", i % 99_999) },
    };
    // `padding` brings the document to `size` bytes; the element adds a type byte, its name
    // and NUL, the string's length and its NUL to the padding itself.
    let room = size.saturating_sub(doc.as_bytes().len() + 1 + "padding".len() + 1 + 4 + 1);
    doc.append(bson::cstr!("padding"), "x".repeat(room));
    doc
}

/// Inserts documents `range` into `db.coll` in batches, with `tasks` concurrent inserters.
pub async fn seed(
    client: &Client,
    db: &str,
    coll: &str,
    count: u64,
    size: usize,
    tasks: u64,
) -> Result<(), BoxError> {
    let coll = client.database(db).collection::<RawDocumentBuf>(coll);
    let per_task = count.div_ceil(tasks);
    let mut set = tokio::task::JoinSet::new();
    for t in 0..tasks {
        let coll = coll.clone();
        let start = t * per_task;
        let end = ((t + 1) * per_task).min(count);
        set.spawn(async move {
            let mut i = start;
            while i < end {
                let upto = (i + 10_000).min(end);
                let batch: Vec<RawDocumentBuf> = (i..upto).map(|j| document(j, size)).collect();
                coll.insert_many(batch).ordered(false).await?;
                i = upto;
            }
            Ok::<(), mongodb::error::Error>(())
        });
    }
    while let Some(r) = set.join_next().await {
        r??;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_have_the_requested_size_and_are_deterministic() {
        for size in [300, 500, 2048] {
            let d = document(12_345, size);
            assert_eq!(d.as_bytes().len(), size);
            assert_eq!(d, document(12_345, size));
        }
        assert_ne!(
            document(1, 500).get_object_id("_id").unwrap(),
            document(2, 500).get_object_id("_id").unwrap()
        );
        // Smaller than the fixed fields: no padding, never a panic.
        assert!(document(7, 10).as_bytes().len() > 10);
    }
}
