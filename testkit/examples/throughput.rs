//! Measures the testkit's batched-insert and full-scan rates through the official driver.
//!
//! ```sh
//! cargo run --release -p mongoshift-testkit --example throughput -- [DOCS] [DOC_BYTES]
//! ```
//!
//! Defaults: 200 000 documents of about 1 KiB, inserted with `insert_many` in batches of
//! 1 000 (the driver sends each batch as one OP_MSG with a kind-1 document sequence), then
//! read back with one `find({})` cursor over raw documents (`RawDocumentBuf`, no decoding on
//! either side). Then the two reads that start a copy partition: a `$sample` of 128 `_id`s
//! sorted, and the first batch of a `find` over an eighth of the `_id`s (`hint: {_id: 1}` with
//! `min`/`max`, as mongoshift's copy reads a partition).

use std::time::Instant;

use futures_util::TryStreamExt;
use mongodb::Client;
use mongodb::bson::{RawDocumentBuf, rawdoc};
use mongoshift_testkit::TestServer;

const BATCH: usize = 1_000;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let docs: usize = args
        .next()
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(200_000);
    let doc_bytes: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(1024);

    let server = TestServer::builder().start().await?;
    let client = Client::with_uri_str(server.uri()).await?;
    let coll = client
        .database("bench")
        .collection::<RawDocumentBuf>("docs");
    let pad = "x".repeat(doc_bytes.saturating_sub(40));

    let batches: Vec<Vec<RawDocumentBuf>> = (0..docs)
        .collect::<Vec<_>>()
        .chunks(BATCH)
        .map(|chunk| {
            chunk
                .iter()
                .map(|i| rawdoc! {"_id": *i as i64, "n": *i as i32, "pad": pad.as_str()})
                .collect()
        })
        .collect();
    let total_bytes: usize = batches.iter().flatten().map(|d| d.as_bytes().len()).sum();

    let start = Instant::now();
    for batch in &batches {
        coll.insert_many(batch).await?;
    }
    let insert = start.elapsed();

    let start = Instant::now();
    let mut cursor = coll.find(mongodb::bson::doc! {}).batch_size(10_000).await?;
    let mut seen = 0usize;
    let mut seen_bytes = 0usize;
    while let Some(doc) = cursor.try_next().await? {
        seen += 1;
        seen_bytes += doc.as_bytes().len();
    }
    let scan = start.elapsed();
    assert_eq!(seen, docs, "the scan returns every document");
    assert_eq!(seen_bytes, total_bytes);

    let db = client.database("bench");
    let start = Instant::now();
    db.run_command(mongodb::bson::doc! {
        "aggregate": "docs",
        "pipeline": [{"$sample": {"size": 128}}, {"$project": {"_id": 1}}, {"$sort": {"_id": 1}}],
        "cursor": {},
    })
    .await?;
    let sample = start.elapsed();
    let eighth = (docs / 8) as i64;
    let start = Instant::now();
    let reply = db
        .run_command(mongodb::bson::doc! {
            "find": "docs", "hint": {"_id": 1}, "min": {"_id": eighth}, "max": {"_id": 2 * eighth},
            "batchSize": 1,
        })
        .await?;
    let first_batch = start.elapsed();
    let cursor = reply.get_document("cursor")?;
    let got = cursor.get_array("firstBatch")?.len();
    assert_eq!(got, usize::from(eighth > 0), "one document of the range");
    let id = cursor.get_i64("id")?;
    if id != 0 {
        db.run_command(mongodb::bson::doc! {"killCursors": "docs", "cursors": [id]})
            .await?;
    }

    let mib = total_bytes as f64 / (1024.0 * 1024.0);
    println!(
        "documents: {docs} x ~{} bytes ({mib:.1} MiB), insert_many batches of {BATCH}",
        total_bytes / docs.max(1)
    );
    println!(
        "insert: {:.2} s, {:.0} docs/s, {:.1} MiB/s",
        insert.as_secs_f64(),
        docs as f64 / insert.as_secs_f64(),
        mib / insert.as_secs_f64()
    );
    println!(
        "scan:   {:.2} s, {:.0} docs/s, {:.1} MiB/s",
        scan.as_secs_f64(),
        docs as f64 / scan.as_secs_f64(),
        mib / scan.as_secs_f64()
    );
    println!(
        "$sample of 128: {:.1} ms; first batch of a find over {eighth} _ids: {:.1} ms",
        sample.as_secs_f64() * 1e3,
        first_batch.as_secs_f64() * 1e3
    );
    server.shutdown().await;
    Ok(())
}
