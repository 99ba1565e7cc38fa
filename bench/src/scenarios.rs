//! The measurements. Each one starts from servers that hold what it needs and leaves them as
//! it found them (what it wrote on a destination is dropped).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bson::{Bson, Document, RawArrayBuf, RawDocumentBuf, doc, rawdoc};
use futures_util::StreamExt;
use mongodb::Client;
use serde::Serialize;

use crate::BoxError;
use crate::data::document;
use crate::process;
use crate::servers::Binaries;

/// The copy's `options.copy.parallel_partitions` (mongoshift's default), written into every
/// migration the harness runs: the ceiling is measured with the same concurrency.
pub const COPY_CONCURRENCY: usize = 8;
/// The copy's `options.copy.batch_size` (mongoshift's default), likewise shared with the
/// ceiling.
pub const COPY_BATCH_BYTES: usize = 2 * 1024 * 1024;

/// A rate over a number of documents and bytes.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Rate {
    /// Documents.
    pub documents: u64,
    /// Bytes.
    pub bytes: u64,
    /// Seconds.
    pub secs: f64,
    /// Documents per second.
    pub docs_per_sec: f64,
    /// MiB per second.
    pub mib_per_sec: f64,
}

impl Rate {
    /// `documents` and `bytes` in `secs`.
    pub fn new(documents: u64, bytes: u64, secs: f64) -> Self {
        let secs = secs.max(1e-9);
        Self {
            documents,
            bytes,
            secs,
            docs_per_sec: documents as f64 / secs,
            mib_per_sec: bytes as f64 / secs / (1024.0 * 1024.0),
        }
    }

    /// Two measurements as one: their documents and bytes over their summed time.
    pub fn combined(a: &Rate, b: &Rate) -> Self {
        Self::new(
            a.documents + b.documents,
            a.bytes + b.bytes,
            a.secs + b.secs,
        )
    }
}

/// The database [`ceiling`] writes into.
const CEILING_DB: &str = "bench_ceiling";

/// The destination's raw batched-insert rate: pre-built `insert` commands, each a batch of
/// `COPY_BATCH_BYTES` of the same documents, built as mongoshift builds its own (unordered,
/// `bypassDocumentValidation`, its default write concern, the documents as one array), sent
/// by `COPY_CONCURRENCY` tasks. Building them is not timed; sending is the driver's
/// `run_raw_command`, as for mongoshift, so the two differ only in where the documents come
/// from.
pub async fn ceiling(destination: &Client, count: u64, size: usize) -> Result<Rate, BoxError> {
    let mut commands: Vec<Option<(RawDocumentBuf, u64)>> = Vec::new();
    let mut current = RawArrayBuf::new();
    let mut current_docs = 0u64;
    let mut current_bytes = 0;
    let mut total_bytes = 0u64;
    let command = |documents: RawArrayBuf| {
        let mut c = rawdoc! {
            "insert": "docs",
            "ordered": false,
            "bypassDocumentValidation": true,
            "writeConcern": {"w": "majority"},
        };
        c.append(bson::cstr!("documents"), documents);
        c
    };
    for i in 0..count {
        let d = document(i, size);
        current_bytes += d.as_bytes().len();
        total_bytes += d.as_bytes().len() as u64;
        current.push(d);
        current_docs += 1;
        if current_bytes >= COPY_BATCH_BYTES {
            commands.push(Some((command(std::mem::take(&mut current)), current_docs)));
            current_bytes = 0;
            current_docs = 0;
        }
    }
    if current_docs > 0 {
        commands.push(Some((command(current), current_docs)));
    }
    let commands = Arc::new(std::sync::Mutex::new(commands));
    let db = destination.database(CEILING_DB);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..COPY_CONCURRENCY {
        let (db, commands, next) = (db.clone(), Arc::clone(&commands), Arc::clone(&next));
        set.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let taken = {
                    let mut all = commands.lock().map_err(|_| "poisoned")?;
                    all.get_mut(i).map(Option::take)
                };
                let Some(Some((command, docs))) = taken else {
                    return Ok::<(), BoxError>(());
                };
                let reply = db
                    .run_raw_command(command)
                    .await
                    .map_err(|e| format!("the ceiling's insert failed: {e}"))?;
                let inserted = reply
                    .get_i32("n")
                    .map(i64::from)
                    .or_else(|_| reply.get_i64("n"))
                    .ok();
                if inserted.and_then(|n| u64::try_from(n).ok()) != Some(docs)
                    || reply.contains_key("writeErrors")
                    || reply.contains_key("writeConcernError")
                {
                    return Err(format!(
                        "the ceiling's insert of {docs} documents answered {reply}"
                    )
                    .into());
                }
            }
        });
    }
    while let Some(r) = set.join_next().await {
        r??;
    }
    Ok(Rate::new(
        count,
        total_bytes,
        started.elapsed().as_secs_f64(),
    ))
}

/// Drops what [`ceiling`] wrote (outside its measurement, as the copy's drop is outside the
/// copy's).
pub async fn drop_ceiling(destination: &Client) -> Result<(), BoxError> {
    Ok(destination.database(CEILING_DB).drop().await?)
}

/// A migration directory with its `migration.toml`.
pub struct Migration {
    /// The directory.
    pub dir: PathBuf,
    /// The configuration file.
    pub config: PathBuf,
}

impl Migration {
    /// Writes a configuration that migrates the databases `include`.
    pub fn new(
        root: &Path,
        name: &str,
        source: &str,
        destination: &str,
        include: &[&str],
        approval: &str,
    ) -> Result<Self, BoxError> {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir)?;
        let include: Vec<String> = include.iter().map(|i| format!("{i:?}")).collect();
        let config = dir.join("migration.toml");
        std::fs::write(
            &config,
            format!(
                "version = 1\nname = {name:?}\n\n[source]\nuri = {source:?}\n\n[destination]\nuri = {destination:?}\n\n\
                 [options]\ninclude = [{}]\nverify = \"none\"\n\n\
                 [options.copy]\nparallel_partitions = {COPY_CONCURRENCY}\nbatch_size = \"{}KiB\"\n\n\
                 [cutover]\napproval = {approval:?}\n",
                include.join(", "),
                COPY_BATCH_BYTES / 1024
            ),
        )?;
        Ok(Self { dir, config })
    }

    /// `mongoshift -c CONFIG ARGS...`.
    pub fn command(&self, binaries: &Binaries, args: &[&str]) -> Command {
        let mut c = Command::new(&binaries.mongoshift);
        c.arg("-c").arg(&self.config).args(args);
        c.env("NO_COLOR", "1");
        c
    }

    /// The lockfile as JSON.
    pub fn state(&self) -> Result<serde_json::Value, BoxError> {
        let bytes = std::fs::read(self.dir.join("migration.lock"))?;
        Ok(serde_json::from_slice(&bytes)?)
    }
}

/// mongoshift's copy: the rate of its copy phase (from the lockfile's timestamps) and what
/// the whole `apply` process used.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct CopyRun {
    /// The copy phase.
    pub rate: Rate,
    /// CPU seconds of the `apply` process.
    pub cpu_secs: f64,
    /// Peak RSS of the `apply` process, bytes.
    pub peak_rss: u64,
}

/// Runs `mongoshift apply` (auto approval, no verification) and measures it.
pub fn copy(binaries: &Binaries, migration: &Migration) -> Result<CopyRun, BoxError> {
    let run = process::measure(&mut migration.command(binaries, &["apply"]))?.check("apply")?;
    let state = migration.state()?;
    let time = |key: &str| -> Result<jiff::Timestamp, BoxError> {
        let text = state["timestamps"][key]
            .as_str()
            .ok_or_else(|| format!("the lockfile has no timestamps.{key}"))?;
        Ok(text.parse()?)
    };
    let secs = (time("copy_finished")? - time("copy_started")?)
        .total(jiff::Unit::Second)
        .map_err(|e| e.to_string())?;
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(migration.dir.join("migration-report.json"))?)?;
    let field = |key: &str| {
        report[key]
            .as_u64()
            .ok_or_else(|| format!("migration-report.json has no number `{key}`"))
    };
    let (documents, bytes) = (field("documents_copied")?, field("bytes_copied")?);
    Ok(CopyRun {
        rate: Rate::new(documents, bytes, secs),
        cpu_secs: run.usage.cpu_secs,
        peak_rss: run.usage.peak_rss,
    })
}

/// Verification against a plain full scan.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct VerifyRun {
    /// `mongoshift verify` (counts, hashes of every document, indexes, options).
    pub verify: Rate,
    /// One cursor per side reading every document, both sides at once.
    pub scan: Rate,
    /// `verify` docs/s over scan docs/s.
    pub ratio: f64,
}

/// Times `mongoshift verify` and a plain scan of both sides.
pub async fn verify(
    binaries: &Binaries,
    migration: &Migration,
    source: &Client,
    destination: &Client,
    db: &str,
) -> Result<VerifyRun, BoxError> {
    let started = Instant::now();
    let out = process::output(
        &mut migration.command(binaries, &["verify", "--json"]),
        "verify",
    )?;
    let verify_secs = started.elapsed().as_secs_f64();
    // Differences end `verify` with a non-zero exit, which `process::output` reports.
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    if report["namespaces"].as_array().is_none_or(Vec::is_empty) {
        return Err(format!("verify compared no namespace: {report}").into());
    }
    let started = Instant::now();
    let (a, b) = tokio::join!(scan(source, db), scan(destination, db));
    let (docs, bytes) = a?;
    let (docs_b, bytes_b) = b?;
    let scan_secs = started.elapsed().as_secs_f64();
    let verify = Rate::new(docs, bytes, verify_secs);
    let scan = Rate::new(docs.max(docs_b), bytes.max(bytes_b), scan_secs);
    Ok(VerifyRun {
        verify,
        scan,
        ratio: verify.docs_per_sec / scan.docs_per_sec,
    })
}

/// Reads every document of `db.docs` with raw batches; returns documents and bytes.
async fn scan(client: &Client, db: &str) -> Result<(u64, u64), BoxError> {
    let coll = client.database(db).collection::<Document>("docs");
    let mut cursor = coll.find(doc! {}).batch_size(10_000).batch().await?;
    let (mut docs, mut bytes) = (0u64, 0u64);
    while let Some(batch) = cursor.next().await {
        for d in batch?.doc_slices()? {
            let d = d?
                .as_document()
                .ok_or("a batch element is not a document")?;
            docs += 1;
            bytes += d.as_bytes().len() as u64;
        }
    }
    Ok((docs, bytes))
}

/// The copy a user writes by hand with pymongo: `find()` streamed into `insert_many` batches
/// of 1,000. `Err` with the reason when pymongo is missing.
pub fn pymongo(source: &str, destination: &str, db: &str) -> Result<Rate, String> {
    const SCRIPT: &str = r#"
import json, sys, time
import pymongo
src = pymongo.MongoClient(sys.argv[1])[sys.argv[3]]["docs"]
dst_db = pymongo.MongoClient(sys.argv[2])["bench_pymongo"]
dst = dst_db["docs"]
start = time.perf_counter()
batch, docs = [], 0
for d in src.find():
    batch.append(d)
    if len(batch) == 1000:
        dst.insert_many(batch)
        docs += len(batch)
        batch = []
if batch:
    dst.insert_many(batch)
    docs += len(batch)
secs = time.perf_counter() - start
size = dst_db.command("collStats", "docs")["size"]
dst_db.client.drop_database("bench_pymongo")
print(json.dumps({"documents": docs, "bytes": size, "secs": secs}))
"#;
    let out = Command::new("python3")
        .args(["-c", SCRIPT, source, destination, db])
        .output()
        .map_err(|e| format!("python3 cannot run: {e}"))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        if stderr.contains("No module named 'pymongo'") {
            return Err("pymongo is not installed (pip install pymongo)".to_owned());
        }
        return Err(format!("the pymongo copy failed: {stderr}"));
    }
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).map_err(|e| format!("pymongo's output: {e}"))?;
    match (
        v["documents"].as_u64(),
        v["bytes"].as_u64(),
        v["secs"].as_f64(),
    ) {
        (Some(documents), Some(bytes), Some(secs)) => Ok(Rate::new(documents, bytes, secs)),
        _ => Err(format!(
            "the pymongo copy printed {v} instead of documents, bytes and secs"
        )),
    }
}

/// Change application at one writer rate.
#[derive(Debug, Clone, Serialize)]
pub struct LagStep {
    /// Changes per second asked of the writer.
    pub target_rate: u64,
    /// Changes per second the writer made.
    pub achieved_rate: f64,
    /// Probes that arrived.
    pub samples: usize,
    /// Median lag, seconds.
    pub p50_secs: f64,
    /// 99th-percentile lag, seconds.
    pub p99_secs: f64,
}

/// Runs a live sync of `live` and a writer at each rate of `rates` for `step` each; the lag
/// is that of probe documents written among the writer's changes (every 20 ms), from the
/// source write to their change event on the destination. Stops after the first step whose
/// p99 is 2 s or more.
pub async fn lag(
    binaries: &Binaries,
    migration: &Migration,
    source: &Client,
    destination: &Client,
    rates: &[u64],
    step: Duration,
) -> Result<Vec<LagStep>, BoxError> {
    let live = source.database("live");
    live.collection::<Document>("items")
        .insert_many((0..10_000).map(|i| doc! {"_id": i, "v": 0, "payload": "x".repeat(400)}))
        .await?;
    live.collection::<Document>("probe")
        .insert_one(doc! {"_id": -1, "t": 0_i64})
        .await?;
    let log = migration.dir.join("apply.log");
    let mut apply = process::spawn(&mut migration.command(binaries, &["apply"]), &log)?;
    // The destination's change stream on the probes: insert events carry the source's time.
    let pipeline = vec![doc! {"$match": {"operationType": "insert"}}];
    let dest_probe = destination.database("live").collection::<Document>("probe");
    let events = dest_probe.watch().pipeline(pipeline).await?;
    // Arrivals are recorded as they happen, by a task of their own: probe id → lag.
    let arrivals: Arc<std::sync::Mutex<Vec<(i64, f64)>>> = Arc::default();
    let consumer = tokio::spawn({
        let arrivals = Arc::clone(&arrivals);
        let mut events = events;
        async move {
            while let Some(e) = events.next().await {
                let Some(full) = e?.full_document else {
                    continue;
                };
                let id = full.get_i64("_id").unwrap_or(-1);
                let lag = (now_micros() - full.get_i64("t").unwrap_or(0)) as f64 / 1e6;
                if let Ok(mut a) = arrivals.lock() {
                    a.push((id, lag));
                }
            }
            Ok::<(), mongodb::error::Error>(())
        }
    });
    let arrived = |from: i64, to: i64| -> Vec<f64> {
        arrivals.lock().map_or_else(
            |_| Vec::new(),
            |a| {
                a.iter()
                    .filter(|(id, _)| (from..to).contains(id))
                    .map(|(_, l)| *l)
                    .collect()
            },
        )
    };
    let result = async {
        let next_id = Arc::new(AtomicU64::new(10_000));
        let oldest = Arc::new(AtomicU64::new(0));
        // Wait for the sync: a probe written now arrives once the copy is over.
        let mut probe_id = 0i64;
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            probe(source, probe_id).await?;
            probe_id += 1;
            tokio::time::sleep(Duration::from_millis(200)).await;
            if !arrived(0, probe_id).is_empty() {
                break;
            }
            if consumer.is_finished() {
                return Err::<Vec<LagStep>, BoxError>(
                    "the destination's change stream ended".into(),
                );
            }
            if Instant::now() > deadline {
                return Err("the live sync did not start within 5 minutes".into());
            }
        }
        let mut steps = Vec::new();
        for &rate in rates {
            // Lags of probes written during this step only.
            let first_probe = probe_id;
            let (ops, secs, last_probe) =
                write_at(source, rate, step, &next_id, &oldest, &mut probe_id).await?;
            // Wait for the step's probes, up to 10 s after its end.
            let expected = (last_probe - first_probe).max(0) as usize;
            let wait_until = Instant::now() + Duration::from_secs(10);
            let mut lags = arrived(first_probe, last_probe);
            while lags.len() < expected && Instant::now() < wait_until {
                tokio::time::sleep(Duration::from_millis(100)).await;
                lags = arrived(first_probe, last_probe);
            }
            // Probes that never arrived count as lagging by the step and the wait.
            while lags.len() < expected {
                lags.push(step.as_secs_f64() + 10.0);
            }
            lags.sort_by(f64::total_cmp);
            let s = LagStep {
                target_rate: rate,
                achieved_rate: ops as f64 / secs,
                samples: lags.len(),
                p50_secs: percentile(&lags, 0.50),
                p99_secs: percentile(&lags, 0.99),
            };
            let over = s.p99_secs >= 2.0;
            steps.push(s);
            if over {
                break;
            }
        }
        Ok(steps)
    }
    .await;
    consumer.abort();
    let _ = apply.kill();
    let _ = apply.wait();
    result
}

/// Writes mixed changes to `live.items` at `rate` per second for `duration` (half inserts,
/// 40 % updates, 10 % deletes of the oldest documents), in 20 ms ticks of bulk commands, with
/// one probe per tick. Returns changes made, seconds and the next probe id.
async fn write_at(
    source: &Client,
    rate: u64,
    duration: Duration,
    next_id: &AtomicU64,
    oldest: &AtomicU64,
    probe_id: &mut i64,
) -> Result<(u64, f64, i64), BoxError> {
    let db = source.database("live");
    let tick = Duration::from_millis(20);
    let per_tick = (rate as f64 * tick.as_secs_f64()).max(1.0);
    let started = Instant::now();
    let mut owed = 0.0f64;
    let mut ops = 0u64;
    let mut ticker = tokio::time::interval(tick);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    while started.elapsed() < duration {
        ticker.tick().await;
        probe(source, *probe_id).await?;
        *probe_id += 1;
        owed += per_tick;
        let n = owed.floor() as u64;
        owed -= n as f64;
        let inserts = n / 2;
        let deletes = n / 10;
        let updates = n - inserts - deletes;
        let first = next_id.fetch_add(inserts, Ordering::Relaxed);
        let t = now_micros();
        if inserts > 0 {
            let documents: Vec<Bson> = (first..first + inserts)
                .map(|i| {
                    Bson::Document(
                        doc! {"_id": i as i64, "v": 0, "t": t, "payload": "x".repeat(400)},
                    )
                })
                .collect();
            db.run_command(doc! {"insert": "items", "documents": documents, "ordered": false})
                .await?;
        }
        let low = oldest.load(Ordering::Relaxed);
        let high = next_id.load(Ordering::Relaxed);
        if updates > 0 && high > low {
            let span = high - low;
            let updates: Vec<Bson> = (0..updates)
                .map(|k| {
                    let id = low + (k.wrapping_mul(2_654_435_761) + t as u64) % span;
                    Bson::Document(
                        doc! {"q": {"_id": id as i64}, "u": {"$inc": {"v": 1}, "$set": {"t": t}}},
                    )
                })
                .collect();
            db.run_command(doc! {"update": "items", "updates": updates, "ordered": false})
                .await?;
        }
        if deletes > 0 {
            let first = oldest.fetch_add(deletes, Ordering::Relaxed);
            let deletes: Vec<Bson> = (first..first + deletes)
                .map(|id| Bson::Document(doc! {"q": {"_id": id as i64}, "limit": 1}))
                .collect();
            db.run_command(doc! {"delete": "items", "deletes": deletes, "ordered": false})
                .await?;
        }
        ops += n;
    }
    Ok((ops, started.elapsed().as_secs_f64(), *probe_id))
}

async fn probe(source: &Client, id: i64) -> Result<(), BoxError> {
    source
        .database("live")
        .collection::<Document>("probe")
        .insert_one(doc! {"_id": id, "t": now_micros()})
        .await?;
    Ok(())
}

fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// The `q` quantile of sorted values (nearest rank); 0 when empty.
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// `plan` over a source with this many collections.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct PlanRun {
    /// Collections on the source.
    pub collections: usize,
    /// Seconds `mongoshift plan` took.
    pub secs: f64,
}

/// Creates collections (one document each, ten databases) until the source holds `total`,
/// then times `mongoshift plan`.
pub async fn plan(
    binaries: &Binaries,
    migration: &Migration,
    source: &Client,
    existing: usize,
    total: usize,
) -> Result<PlanRun, BoxError> {
    let next = Arc::new(AtomicUsize::new(existing));
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let (source, next) = (source.clone(), Arc::clone(&next));
        set.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    return Ok::<(), BoxError>(());
                }
                source
                    .database(&format!("plan{}", i % 10))
                    .collection::<Document>(&format!("c{i:05}"))
                    .insert_one(doc! {"_id": 1, "i": i as i64})
                    .await?;
            }
        });
    }
    while let Some(r) = set.join_next().await {
        r??;
    }
    let started = Instant::now();
    let run = process::measure(&mut migration.command(binaries, &["plan", "--json"]))?;
    let secs = started.elapsed().as_secs_f64();
    let run = run.check("plan")?;
    let plan: serde_json::Value = serde_json::from_str(&run.stdout)?;
    let copies = plan["actions"]
        .as_array()
        .map_or(0, |a| a.iter().filter(|x| x["action"] == "copy").count());
    if copies != total {
        return Err(format!("plan covers {copies} collections, not {total}").into());
    }
    Ok(PlanRun {
        collections: total,
        secs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 50.0);
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert_eq!(percentile(&v, 1.0), 100.0);
        assert_eq!(percentile(&[3.0], 0.99), 3.0);
        assert_eq!(percentile(&[], 0.5), 0.0);
    }

    #[test]
    fn rates_divide_by_time() {
        let r = Rate::new(1000, 2 * 1024 * 1024, 2.0);
        assert_eq!(r.docs_per_sec, 500.0);
        assert_eq!(r.mib_per_sec, 1.0);
    }
}
