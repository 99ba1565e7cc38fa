//! The initial copy: collections in parallel, large collections split into `_id` ranges copied in
//! parallel, documents moved as raw BSON in unordered batches: each batch the source returns
//! becomes one insert, written while the next batch is read; a partition holds at most those
//! two batches, and no document is copied or decoded on its own.
//!
//! Server behaviours relied on: `find` with `hint: {_id: 1}` and `min`/`max` on `_id` walks the
//! `_id` index in the server's total order across BSON types (a `$gt` filter would bracket by
//! type and miss `_id`s of other types); `min` is inclusive and `max` exclusive; `$sample`
//! followed by `$sort: {_id: 1}` returns sampled `_id`s in that same order, which is how
//! partition bounds are chosen without comparing BSON values here.
//!
//! Every batch reports its last `_id` only after the destination acknowledged it, so the
//! checkpointed watermark never runs ahead of the data.

use std::sync::Arc;

use bson::{Bson, Document, RawArray, doc};
use futures_util::{StreamExt, TryStreamExt};
use mongodb::options::Hint;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::writer::{InsertBatch, insert_batch};
use crate::cluster::retry::{Attempts, Backoff, Transient, retry};
use crate::cluster::{Cluster, ClusterError};
use crate::namespace::Namespace;
use crate::state::{IdBound, PartitionState, PendingDocument};

/// At most this many partitions per collection.
const MAX_PARTITIONS: u64 = 4096;

/// One collection to copy.
#[derive(Debug, Clone)]
pub struct CopyJob {
    /// Source namespace.
    pub source: Namespace,
    /// Destination namespace.
    pub destination: Namespace,
    /// Partitions decided earlier (resume), or `None` to decide now.
    pub partitions: Option<Vec<PartitionState>>,
    /// Estimated documents.
    pub count: u64,
    /// Estimated bytes.
    pub size_bytes: u64,
}

/// Copy tuning.
#[derive(Debug, Clone)]
pub struct CopySettings {
    /// Collections copied at once.
    pub parallel_collections: usize,
    /// Partitions copied at once, across collections.
    pub parallel_partitions: usize,
    /// Target partition size in bytes.
    pub partition_bytes: u64,
    /// Bytes each read of the source asks for; each batch read is one insert.
    pub batch_bytes: u64,
    /// Destination write concern, as the `writeConcern` field of a command.
    pub write_concern: bson::RawDocumentBuf,
    /// Retries of transient failures.
    pub backoff: Backoff,
}

/// What the copy reports to the state owner.
#[derive(Debug, Clone)]
pub enum CopyUpdate {
    /// A collection's partitions were decided.
    Partitioned {
        /// Destination namespace.
        destination: Namespace,
        /// The partitions.
        partitions: Vec<PartitionState>,
    },
    /// A batch was acknowledged.
    Progress {
        /// Destination namespace.
        destination: Namespace,
        /// Partition id.
        partition: u32,
        /// The last `_id` of the batch.
        last_id: IdBound,
        /// Documents copied (inserted, or found already present after a crash).
        documents: u64,
        /// Their bytes.
        bytes: u64,
        /// Of those, documents that were already present.
        duplicates: u64,
        /// Documents of the batch a unique index refused, left to change application.
        deferred: Vec<PendingDocument>,
    },
    /// A key-range partition is read again from its start (its counts start over).
    Restarted {
        /// Destination namespace.
        destination: Namespace,
        /// Partition id.
        partition: u32,
    },
    /// A partition is complete.
    PartitionDone {
        /// Destination namespace.
        destination: Namespace,
        /// Partition id.
        partition: u32,
    },
}

/// Why the copy stopped.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CopyError {
    /// Reading or writing failed.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// The state owner stopped listening (it failed).
    #[error("the copy's progress could not be recorded")]
    Disconnected,
}

impl Transient for CopyError {
    fn is_transient(&self) -> bool {
        match self {
            Self::Cluster(e) => e.is_transient(),
            _ => false,
        }
    }
}

/// Copies every job. Returns when all are done, on the first error, or soon after `cancel`
/// (then partially copied partitions resume later from their watermark).
pub async fn run_copy(
    source: Cluster,
    destination: Cluster,
    jobs: Vec<CopyJob>,
    settings: CopySettings,
    updates: mpsc::Sender<CopyUpdate>,
    cancel: CancellationToken,
) -> Result<(), CopyError> {
    let collections = Arc::new(Semaphore::new(settings.parallel_collections.max(1)));
    let partitions = Arc::new(Semaphore::new(settings.parallel_partitions.max(1)));
    let settings = Arc::new(settings);
    let mut tasks = JoinSet::new();
    for job in jobs {
        let ctx = PartitionContext {
            source: source.clone(),
            destination: destination.clone(),
            settings: settings.clone(),
            updates: updates.clone(),
            cancel: cancel.clone(),
        };
        let collections = collections.clone();
        let partitions = partitions.clone();
        tasks.spawn(async move {
            let Ok(_permit) = collections.acquire_owned().await else {
                return Ok(());
            };
            copy_collection(ctx, job, partitions).await
        });
    }
    let mut result = Ok(());
    while let Some(joined) = tasks.join_next().await {
        let outcome = joined.unwrap_or_else(|e| {
            Err(CopyError::Cluster(ClusterError::InvalidReply {
                side: crate::cluster::Side::Source,
                command: "copy".to_owned(),
                detail: format!("a copy task failed: {e}"),
            }))
        });
        if let Err(e) = outcome
            && result.is_ok()
        {
            // Stop the others; their partitions resume from their watermarks later.
            cancel.cancel();
            result = Err(e);
        }
    }
    result
}

#[derive(Clone)]
struct PartitionContext {
    source: Cluster,
    destination: Cluster,
    settings: Arc<CopySettings>,
    updates: mpsc::Sender<CopyUpdate>,
    cancel: CancellationToken,
}

async fn copy_collection(
    ctx: PartitionContext,
    job: CopyJob,
    permits: Arc<Semaphore>,
) -> Result<(), CopyError> {
    let parts = match job.partitions.clone() {
        Some(p) if !p.is_empty() => p,
        _ => {
            let what = format!("$sample {}", job.source);
            let p = retry(&what, ctx.settings.backoff, || {
                partition(
                    &ctx.source,
                    &job,
                    ctx.settings.partition_bytes,
                    ctx.settings.parallel_partitions as u64,
                )
            })
            .await?;
            ctx.updates
                .send(CopyUpdate::Partitioned {
                    destination: job.destination.clone(),
                    partitions: p.clone(),
                })
                .await
                .map_err(|_| CopyError::Disconnected)?;
            p
        }
    };
    let avg = job.size_bytes.checked_div(job.count).unwrap_or(1024).max(1);
    let mut tasks = JoinSet::new();
    for part in parts.into_iter().filter(|p| !p.done) {
        let ctx = ctx.clone();
        let job = job.clone();
        let permits = permits.clone();
        tasks.spawn(async move {
            let Ok(_permit) = permits.acquire_owned().await else {
                return Ok(());
            };
            copy_partition(&ctx, &job, part, avg).await
        });
    }
    let mut result = Ok(());
    while let Some(joined) = tasks.join_next().await {
        if let Ok(Err(e)) = joined
            && result.is_ok()
        {
            ctx.cancel.cancel();
            result = Err(e);
        }
    }
    result
}

/// A collection is split for parallelism only into partitions of at least this size: below
/// it, a partition's `$sample` share and cursor cost more than parallel reading gains.
const MIN_SPLIT_BYTES: u64 = 4 * 1024 * 1024;

/// Chooses `_id` ranges of about `partition_bytes` each from a sorted sample of `_id`s; a
/// collection smaller than `parallelism` such ranges still gets up to `parallelism` ranges
/// (of at least [`MIN_SPLIT_BYTES`]), so that its copy is parallel too and memory depends on
/// the parallelism, not on the size of the data.
pub async fn partition(
    source: &Cluster,
    job: &CopyJob,
    partition_bytes: u64,
    parallelism: u64,
) -> Result<Vec<PartitionState>, ClusterError> {
    let whole = vec![PartitionState::id_range(0, None, None)];
    let by_size = job.size_bytes.div_ceil(partition_bytes.max(1));
    let for_parallelism = parallelism.min(job.size_bytes / MIN_SPLIT_BYTES);
    let wanted = by_size.max(for_parallelism).min(MAX_PARTITIONS);
    if wanted <= 1 || job.count < 2 * wanted {
        return Ok(whole);
    }
    let sample_size = (wanted * 16).clamp(100, 20_000).min(job.count);
    let coll = source
        .client()
        .database(job.source.db())
        .collection::<Document>(job.source.coll());
    let command = format!("$sample {}", job.source);
    let ids: Vec<Bson> = coll
        .aggregate([
            doc! { "$sample": { "size": sample_size as i64 } },
            doc! { "$project": { "_id": 1 } },
            doc! { "$sort": { "_id": 1 } },
        ])
        .await
        .map_err(|e| source.error(&command, &e))?
        .map_ok(|mut d| d.remove("_id"))
        .try_collect::<Vec<Option<Bson>>>()
        .await
        .map_err(|e| source.error(&command, &e))?
        .into_iter()
        .flatten()
        .collect();
    if ids.len() < 2 {
        return Ok(whole);
    }
    let mut bounds: Vec<Bson> = Vec::new();
    for i in 1..wanted {
        let pick = &ids[(i as usize * ids.len()) / wanted as usize];
        // `$sample` may return an `_id` twice; equal bounds would make empty ranges.
        if bounds.last() != Some(pick) {
            bounds.push(pick.clone());
        }
    }
    // Edges: open below, the sampled bounds, open above; each window is one partition.
    let mut edges: Vec<Option<IdBound>> = vec![None];
    edges.extend(bounds.into_iter().map(|b| Some(IdBound::new(b))));
    edges.push(None);
    let partitions = edges
        .windows(2)
        .enumerate()
        .map(|(i, w)| PartitionState::id_range(i as u32, w[0].clone(), w[1].clone()))
        .collect();
    Ok(partitions)
}

/// Copies one partition; after a transient failure (an election, a dropped connection) it
/// starts again from its last acknowledged batch, with growing pauses, until the retries are
/// spent without progress.
async fn copy_partition(
    ctx: &PartitionContext,
    job: &CopyJob,
    mut part: PartitionState,
    avg_doc_bytes: u64,
) -> Result<(), CopyError> {
    let mut attempts = Attempts::new(ctx.settings.backoff);
    loop {
        let Err(e) = copy_range(ctx, job, &mut part, avg_doc_bytes, &mut attempts).await else {
            return Ok(());
        };
        let Some(pause) = attempts.after(&format!("copy {}", job.source), &e) else {
            return Err(e);
        };
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = ctx.cancel.cancelled() => return Ok(()),
        }
    }
}

/// One attempt at a partition.
///
/// An `_id` range is read in `_id` order from its watermark (`resume_from`, advanced as batches
/// are acknowledged) to its end. A key range of a sharded source (a run of chunks on one
/// shard, see [`super::shard_ranges`]) is read through the shard key's index with `hint` and
/// `min`/`max`, in no `_id` order, so it cannot resume from a document: an interrupted one is
/// read again from its start, and its counts start over.
async fn copy_range(
    ctx: &PartitionContext,
    job: &CopyJob,
    part: &mut PartitionState,
    avg_doc_bytes: u64,
    attempts: &mut Attempts,
) -> Result<(), CopyError> {
    if ctx.cancel.is_cancelled() {
        return Ok(());
    }
    let settings = &ctx.settings;
    let source_coll = ctx
        .source
        .client()
        .database(job.source.db())
        .collection::<Document>(job.source.coll());
    let docs_per_batch = (settings.batch_bytes / avg_doc_bytes).clamp(101, 100_000) as u32;
    let mut find = source_coll.find(doc! {}).batch_size(docs_per_batch);
    let (lower, upper, command) = match &part.range {
        None => {
            find = find
                .hint(Hint::Keys(doc! { "_id": 1 }))
                .sort(doc! { "_id": 1 });
            let lower = part.resume_from.as_ref().or(part.min.as_ref());
            (
                lower.map(|b| b.as_document().clone()),
                part.max.as_ref().map(|b| b.as_document().clone()),
                format!("find {}", job.source),
            )
        }
        Some(range) => {
            if part.documents > 0 || part.resume_from.is_some() {
                ctx.updates
                    .send(CopyUpdate::Restarted {
                        destination: job.destination.clone(),
                        partition: part.id,
                    })
                    .await
                    .map_err(|_| CopyError::Disconnected)?;
                part.documents = 0;
                part.bytes = 0;
                part.resume_from = None;
            }
            find = find.hint(Hint::Keys(range.index.clone()));
            (
                range.min.clone(),
                range.max.clone(),
                format!("find {} on {}", job.source, range.shard),
            )
        }
    };
    if let Some(lower) = lower {
        find = find.min(lower);
    }
    if let Some(upper) = upper {
        find = find.max(upper);
    }
    let mut cursor = find
        .batch()
        .await
        .map_err(|e| ctx.source.error(&command, &e))?;
    // A resumed `_id` range starts at its watermark, inclusive; that document was already
    // counted. (A key range never resumes: `resume_from` was cleared above.)
    let mut skip_watermark = part.resume_from.as_ref().and_then(|b| b.id().cloned());
    // Each batch the source returns is inserted as it came, while the next one is read.
    let mut next = cursor.next().await;
    while let Some(reply) = next.take() {
        if ctx.cancel.is_cancelled() {
            return Ok(());
        }
        let reply = reply.map_err(|e| ctx.source.error(&command, &e))?;
        let docs = reply
            .doc_slices()
            .map_err(|e| ctx.source.invalid_reply(&command, e.to_string()))?;
        let (written, following) = tokio::join!(
            write_batch(ctx, job, part, &command, docs, &mut skip_watermark),
            cursor.next()
        );
        written?;
        // Only a resumable range keeps what it copied when it fails; a key range starts
        // over, so its batches do not renew the retries.
        if part.range.is_none() {
            attempts.progressed();
        }
        next = following;
    }
    ctx.updates
        .send(CopyUpdate::PartitionDone {
            destination: job.destination.clone(),
            partition: part.id,
        })
        .await
        .map_err(|_| CopyError::Disconnected)
}

/// Inserts one batch of the source as it came (its `documents` array copied whole into the
/// command), except that a resumed range's first batch leaves out the watermark document.
async fn write_batch(
    ctx: &PartitionContext,
    job: &CopyJob,
    part: &mut PartitionState,
    command: &str,
    docs: &RawArray,
    skip_watermark: &mut Option<Bson>,
) -> Result<(), CopyError> {
    let first_id = match docs.into_iter().next() {
        Some(first) => first
            .ok()
            .and_then(|f| f.as_document().and_then(super::ddl::raw_id)),
        None => return Ok(()),
    };
    match skip_watermark.take() {
        Some(watermark) if first_id.as_ref() == Some(&watermark) => {
            let mut rest = InsertBatch::new();
            for item in docs.into_iter().skip(1) {
                let item = item.map_err(|e| ctx.source.invalid_reply(command, e.to_string()))?;
                let doc = item.as_document().ok_or_else(|| {
                    ctx.source
                        .invalid_reply(command, "a batch element is not a document")
                })?;
                rest.push(doc);
            }
            flush(ctx, job, part, command, rest.documents()).await
        }
        _ => flush(ctx, job, part, command, docs).await,
    }
}

/// Inserts one batch of source documents and reports its last `_id` as the watermark.
async fn flush(
    ctx: &PartitionContext,
    job: &CopyJob,
    part: &mut PartitionState,
    command: &str,
    documents: &RawArray,
) -> Result<(), CopyError> {
    // Every element must be a document with an `_id`; the last one's is the watermark.
    let mut last = None;
    let mut bytes = 0u64;
    for item in documents {
        let item = item.map_err(|e| ctx.source.invalid_reply(command, e.to_string()))?;
        let doc = item.as_document().ok_or_else(|| {
            ctx.source
                .invalid_reply(command, "a batch element is not a document")
        })?;
        bytes += doc.as_bytes().len() as u64;
        last = Some(doc);
    }
    let Some(last) = last else {
        return Ok(());
    };
    let last_id = super::ddl::raw_id(last)
        .ok_or_else(|| ctx.source.invalid_reply(command, "a document has no _id"))?;
    let outcome = insert_batch(
        &ctx.destination,
        &job.destination,
        documents,
        &ctx.settings.write_concern,
    )
    .await?;
    let watermark = IdBound::new(last_id);
    part.resume_from = Some(watermark.clone());
    let deferred = outcome
        .deferred
        .into_iter()
        .map(|(id, reason)| PendingDocument {
            namespace: job.destination.clone(),
            source: job.source.clone(),
            id: IdBound::new(id),
            reason,
        })
        .collect();
    ctx.updates
        .send(CopyUpdate::Progress {
            destination: job.destination.clone(),
            partition: part.id,
            last_id: watermark,
            documents: outcome.inserted + outcome.duplicates,
            bytes,
            duplicates: outcome.duplicates,
            deferred,
        })
        .await
        .map_err(|_| CopyError::Disconnected)
}
