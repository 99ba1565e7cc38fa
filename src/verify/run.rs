//! Running a verification: namespaces in parallel, each large collection in `_id` ranges in
//! parallel (the copy's partitioning), a checkpoint file so a killed verification resumes, and
//! rechecks of differences that may be changes still in flight.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bson::{Document, RawDocumentBuf, doc};
use futures_util::{StreamExt, TryStreamExt};
use mongodb::options::Hint;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::matcher::{IdKey, Matcher, RangeOutcome, describe_key, key_and_hash};
use super::metadata::{
    compare_indexes, compare_options, compare_shard_keys, without_shard_key_indexes,
};
use super::report::{NamespaceReport, VERIFY_FORMAT_VERSION, VerifyMode, VerifyReport};
use crate::cluster::retry::{Backoff, Transient, retry};
use crate::cluster::{Cluster, ClusterError, CollectionKind, InspectRequest, inspect};
use crate::config::Config;
use crate::config::model::IndexPolicy;
use crate::namespace::Namespace;
use crate::plan::mapping;
use crate::state::PartitionState;
use crate::sync::copy::{CopyJob, partition};

/// How many differing `_id`s per namespace are rechecked; beyond that they count as they are.
const MAX_RECHECKED: usize = 10_000;

/// Rechecks of a difference before it counts as persistent, and the pause between them.
const RECHECK_ROUNDS: u32 = 6;
const RECHECK_PAUSE: Duration = Duration::from_millis(750);

/// The checkpoint file's format.
const CHECKPOINT_FORMAT_VERSION: u32 = 1;

/// What to verify and how.
#[derive(Debug, Clone)]
pub struct VerifyRequest {
    /// Full or counts only.
    pub mode: VerifyMode,
    /// Recheck differences until they agree or persist (when a sync may still be applying
    /// changes).
    pub recheck: bool,
    /// The checkpoint file; `None` verifies without resuming.
    pub checkpoint: Option<PathBuf>,
}

/// Why a verification could not complete.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// A cluster failed.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// The checkpoint could not be written.
    #[error("cannot write the verification checkpoint {}: {source}", path.display())]
    Checkpoint {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Interrupted; the checkpoint holds what was verified.
    #[error("verification interrupted; run it again to continue from the checkpoint")]
    Interrupted,
}

impl Transient for VerifyError {
    fn is_transient(&self) -> bool {
        matches!(self, Self::Cluster(e) if e.is_transient())
    }
}

/// The checkpoint file: completed ranges and their results.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Checkpoint {
    format_version: u32,
    fingerprint: String,
    mode: Option<VerifyMode>,
    namespaces: Vec<NamespaceCheckpoint>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct NamespaceCheckpoint {
    destination: String,
    partitions: Vec<PartitionState>,
    /// Results of completed partitions.
    results: Vec<PartitionResult>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct PartitionResult {
    id: u32,
    compared: u64,
    missing: Vec<String>,
    extra: Vec<String>,
    different: Vec<String>,
    resolved: u64,
}

fn load_checkpoint(path: &Path, fingerprint: &str, mode: VerifyMode) -> Checkpoint {
    std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice::<Checkpoint>(&b).ok())
        .filter(|c| {
            c.format_version == CHECKPOINT_FORMAT_VERSION
                && c.fingerprint == fingerprint
                && c.mode == Some(mode)
        })
        .unwrap_or_else(|| Checkpoint {
            format_version: CHECKPOINT_FORMAT_VERSION,
            fingerprint: fingerprint.to_owned(),
            mode: Some(mode),
            namespaces: Vec::new(),
        })
}

/// Shared between the namespace tasks; held only for short, non-async sections.
struct Shared {
    checkpoint: Mutex<Checkpoint>,
    path: Option<PathBuf>,
}

impl Shared {
    fn save(&self) -> Result<(), VerifyError> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let bytes = {
            let guard = self
                .checkpoint
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            serde_json::to_vec(&*guard).unwrap_or_default()
        };
        crate::atomic_file::write_atomic(path, &bytes).map_err(|source| VerifyError::Checkpoint {
            path: path.clone(),
            source,
        })
    }

    fn partitions(&self, destination: &str) -> Option<(Vec<PartitionState>, Vec<PartitionResult>)> {
        let guard = self
            .checkpoint
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        guard
            .namespaces
            .iter()
            .find(|n| n.destination == destination)
            .map(|n| (n.partitions.clone(), n.results.clone()))
    }

    fn record_partitions(&self, destination: &str, partitions: Vec<PartitionState>) {
        let mut guard = self
            .checkpoint
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        guard.namespaces.retain(|n| n.destination != destination);
        guard.namespaces.push(NamespaceCheckpoint {
            destination: destination.to_owned(),
            partitions,
            results: Vec::new(),
        });
    }

    fn record_result(&self, destination: &str, result: PartitionResult) {
        let mut guard = self
            .checkpoint
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = guard
            .namespaces
            .iter_mut()
            .find(|n| n.destination == destination)
        {
            n.results.retain(|r| r.id != result.id);
            n.results.push(result);
        }
    }
}

/// Verifies every migrated namespace.
pub async fn verify(
    config: &Config,
    source: &Cluster,
    destination: &Cluster,
    request: &VerifyRequest,
    fingerprint: &str,
    cancel: &CancellationToken,
) -> Result<VerifyReport, VerifyError> {
    let source_snapshot = inspect(
        source,
        InspectRequest {
            filter: Some(&config.options.filter),
            oplog: false,
        },
    )
    .await?;
    let destination_snapshot = inspect(destination, InspectRequest::default()).await?;
    let resolved = mapping::resolve(config, &source_snapshot.catalog);

    let checkpoint = match &request.checkpoint {
        Some(path) => load_checkpoint(path, fingerprint, request.mode),
        None => Checkpoint::default(),
    };
    let shared = Arc::new(Shared {
        checkpoint: Mutex::new(checkpoint),
        path: request.checkpoint.clone(),
    });
    let copy = &config.options.copy;
    let ranges = Arc::new(Semaphore::new(copy.parallel_partitions.max(1) as usize));
    let expect_secondary = config.options.indexes != IndexPolicy::Skip;

    let mut tasks = JoinSet::new();
    let mut reports = Vec::new();
    for m in &resolved.namespaces {
        let mut report = NamespaceReport {
            source: m.source.to_string(),
            destination: m.destination.to_string(),
            kind: m.info.kind,
            ..NamespaceReport::default()
        };
        let Some(dest_info) = destination_snapshot.catalog.get(&m.destination) else {
            report
                .options
                .push("the namespace does not exist on the destination".to_owned());
            report.source_count = m.info.stats.count;
            reports.push(report);
            continue;
        };
        let view_on = (m.info.kind == CollectionKind::View).then(|| {
            let original = m.info.options.get_str("viewOn").unwrap_or_default();
            let base = Namespace::new(m.source.db(), original);
            resolved
                .namespaces
                .iter()
                .find(|n| n.source == base)
                .map_or_else(|| original.to_owned(), |n| n.destination.coll().to_owned())
        });
        report.options = compare_options(m.info, dest_info, view_on.as_deref());
        let dest_indexes = without_shard_key_indexes(m.info, dest_info);
        report.indexes = compare_indexes(&m.info.indexes, &dest_indexes, expect_secondary);
        let expected = crate::plan::sharding::expected_key(config, m);
        report.options.extend(compare_shard_keys(
            expected.as_ref().map(|(key, unique, ..)| (key, *unique)),
            dest_info,
            destination_snapshot.server.topology == crate::cluster::Topology::Sharded,
        ));
        if m.info.kind != CollectionKind::Collection {
            reports.push(report);
            continue;
        }
        let job = CopyJob {
            source: m.source.clone(),
            destination: m.destination.clone(),
            partitions: None,
            count: m.info.stats.count,
            size_bytes: m.info.stats.size_bytes,
        };
        let ctx = NamespaceTask {
            source: source.clone(),
            destination: destination.clone(),
            shared: shared.clone(),
            ranges: ranges.clone(),
            mode: request.mode,
            recheck: request.recheck,
            partition_bytes: copy.partition_size.bytes(),
            parallelism: u64::from(copy.parallel_partitions),
            backoff: Backoff::within(config.options.retry_for),
            cancel: cancel.clone(),
        };
        tasks.spawn(async move { ctx.run(job, report).await });
    }

    let mut saver = tokio::time::interval(Duration::from_secs(2));
    let mut failure = None;
    loop {
        tokio::select! {
            joined = tasks.join_next() => match joined {
                None => break,
                Some(Ok(Ok(report))) => reports.push(report),
                Some(Ok(Err(e))) => {
                    cancel.cancel();
                    failure.get_or_insert(e);
                }
                Some(Err(e)) => {
                    cancel.cancel();
                    failure.get_or_insert(VerifyError::Cluster(ClusterError::InvalidReply {
                        side: crate::cluster::Side::Source,
                        command: "verify".to_owned(),
                        detail: format!("a verification task failed: {e}"),
                    }));
                }
            },
            _ = saver.tick() => shared.save()?,
        }
    }
    shared.save()?;
    if let Some(e) = failure {
        return Err(e);
    }
    if cancel.is_cancelled() {
        return Err(VerifyError::Interrupted);
    }
    reports.sort_by(|a, b| a.destination.cmp(&b.destination));
    if let Some(path) = &request.checkpoint {
        // A finished verification is not resumed: the next one starts afresh.
        let _ = std::fs::remove_file(path);
    }
    Ok(VerifyReport {
        format_version: VERIFY_FORMAT_VERSION.to_owned(),
        mode: request.mode,
        namespaces: reports,
    })
}

struct NamespaceTask {
    source: Cluster,
    destination: Cluster,
    shared: Arc<Shared>,
    ranges: Arc<Semaphore>,
    mode: VerifyMode,
    recheck: bool,
    partition_bytes: u64,
    parallelism: u64,
    backoff: Backoff,
    cancel: CancellationToken,
}

impl NamespaceTask {
    async fn run(
        self,
        job: CopyJob,
        mut report: NamespaceReport,
    ) -> Result<NamespaceReport, VerifyError> {
        let what = format!("count {}", job.source);
        let (source_count, destination_count) =
            retry(&what, self.backoff, || self.counts(&job)).await?;
        report.source_count = source_count;
        report.destination_count = destination_count;
        if self.mode == VerifyMode::Counts {
            return Ok(report);
        }
        let key = job.destination.to_string();
        let (partitions, mut results) = match self.shared.partitions(&key) {
            Some(p) if !p.0.is_empty() => p,
            _ => {
                let what = format!("$sample {}", job.source);
                let p = retry(&what, self.backoff, || {
                    partition(&self.source, &job, self.partition_bytes, self.parallelism)
                })
                .await?;
                self.shared.record_partitions(&key, p.clone());
                (p, Vec::new())
            }
        };
        let this = Arc::new(self);
        let mut tasks = JoinSet::new();
        for part in partitions
            .into_iter()
            .filter(|p| !results.iter().any(|r| r.id == p.id))
        {
            let this = this.clone();
            let job = job.clone();
            tasks.spawn(async move {
                let Ok(_permit) = this.ranges.clone().acquire_owned().await else {
                    return Ok(None);
                };
                if this.cancel.is_cancelled() {
                    return Ok(None);
                }
                // A range is compared again from its start after a transient failure.
                let what = format!("verify {}", job.source);
                let result = retry(&what, this.backoff, || this.compare_range(&job, &part)).await?;
                this.shared
                    .record_result(&job.destination.to_string(), result.clone());
                Ok::<_, VerifyError>(Some(result))
            });
        }
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok(Ok(Some(r))) => results.push(r),
                Ok(Ok(None)) => {}
                Ok(Err(e)) => return Err(e),
                Err(e) => {
                    return Err(VerifyError::Cluster(ClusterError::InvalidReply {
                        side: crate::cluster::Side::Source,
                        command: "verify".to_owned(),
                        detail: format!("a range comparison failed: {e}"),
                    }));
                }
            }
        }
        results.sort_by_key(|r| r.id);
        for r in results {
            report.documents_compared += r.compared;
            report.missing.add(r.missing);
            report.extra.add(r.extra);
            report.different.add(r.different);
            report.resolved_on_recheck += r.resolved;
        }
        Ok(report)
    }

    /// Exact counts; while a sync runs, repeated until they agree or the rechecks run out.
    async fn counts(&self, job: &CopyJob) -> Result<(u64, u64), VerifyError> {
        let rounds = if self.recheck && self.mode == VerifyMode::Counts {
            RECHECK_ROUNDS
        } else {
            1
        };
        let mut last = (0, 0);
        for round in 0..rounds {
            if round > 0 {
                tokio::time::sleep(RECHECK_PAUSE).await;
            }
            let (s, d) = tokio::join!(
                count(&self.source, &job.source),
                count(&self.destination, &job.destination)
            );
            last = (s?, d?);
            if last.0 == last.1 {
                break;
            }
        }
        Ok(last)
    }

    async fn compare_range(
        &self,
        job: &CopyJob,
        part: &PartitionState,
    ) -> Result<PartitionResult, VerifyError> {
        let mut source_cursor = range_cursor(&self.source, &job.source, part).await?;
        let mut dest_cursor = range_cursor(&self.destination, &job.destination, part).await?;
        let mut matcher = Matcher::default();
        let (mut source_done, mut dest_done) = (false, false);
        // Read both sides batch by batch, in step, so matching documents pair up at once.
        while !(source_done && dest_done) {
            let (s, d) = tokio::join!(
                next_batch(&self.source, &job.source, &mut source_cursor, source_done),
                next_batch(
                    &self.destination,
                    &job.destination,
                    &mut dest_cursor,
                    dest_done
                )
            );
            match s? {
                Some(docs) => docs.iter().for_each(|(k, h)| matcher.source(k.clone(), *h)),
                None => source_done = true,
            }
            match d? {
                Some(docs) => docs
                    .iter()
                    .for_each(|(k, h)| matcher.destination(k.clone(), *h)),
                None => dest_done = true,
            }
        }
        let outcome = matcher.finish();
        let compared = outcome.source_documents;
        let (outcome, resolved) = if self.recheck {
            self.recheck_range(job, outcome).await?
        } else {
            (outcome, 0)
        };
        let names = |keys: Vec<IdKey>| keys.iter().map(|k| describe_key(k)).collect::<Vec<_>>();
        Ok(PartitionResult {
            id: part.id,
            compared,
            missing: names(outcome.missing),
            extra: names(outcome.extra),
            different: names(outcome.different),
            resolved,
        })
    }

    /// Fetches the differing documents again on both sides until they agree or the rounds are
    /// spent; returns what persists and how many resolved. Only the first [`MAX_RECHECKED`]
    /// differences are rechecked; the rest count as found.
    async fn recheck_range(
        &self,
        job: &CopyJob,
        outcome: RangeOutcome,
    ) -> Result<(RangeOutcome, u64), VerifyError> {
        let RangeOutcome {
            mut missing,
            mut extra,
            mut different,
            ..
        } = outcome;
        let mut unchecked = RangeOutcome::default();
        let mut budget = MAX_RECHECKED;
        for (list, overflow) in [
            (&mut missing, &mut unchecked.missing),
            (&mut extra, &mut unchecked.extra),
            (&mut different, &mut unchecked.different),
        ] {
            let keep = list.len().min(budget);
            overflow.extend(list.drain(keep..));
            budget -= keep;
        }
        let mut pending: Vec<IdKey> = missing
            .iter()
            .chain(&extra)
            .chain(&different)
            .cloned()
            .collect();
        let checked = pending.len() as u64;
        let mut latest = RangeOutcome {
            missing,
            extra,
            different,
            ..RangeOutcome::default()
        };
        for _ in 0..RECHECK_ROUNDS {
            if pending.is_empty() {
                break;
            }
            tokio::time::sleep(RECHECK_PAUSE).await;
            let (s, d) = tokio::join!(
                fetch_by_ids(&self.source, &job.source, &pending),
                fetch_by_ids(&self.destination, &job.destination, &pending)
            );
            let mut m = Matcher::default();
            s?.into_iter().for_each(|(k, h)| m.source(k, h));
            d?.into_iter().for_each(|(k, h)| m.destination(k, h));
            latest = m.finish();
            pending = latest
                .missing
                .iter()
                .chain(&latest.extra)
                .chain(&latest.different)
                .cloned()
                .collect();
        }
        let resolved = checked - pending.len() as u64;
        latest.missing.extend(unchecked.missing);
        latest.extra.extend(unchecked.extra);
        latest.different.extend(unchecked.different);
        Ok((latest, resolved))
    }
}

async fn count(cluster: &Cluster, ns: &Namespace) -> Result<u64, ClusterError> {
    cluster
        .client()
        .database(ns.db())
        .collection::<Document>(ns.coll())
        .count_documents(doc! {})
        .await
        .map_err(|e| cluster.error(&format!("count {ns}"), &e))
}

async fn range_cursor(
    cluster: &Cluster,
    ns: &Namespace,
    part: &PartitionState,
) -> Result<mongodb::raw_batch_cursor::RawBatchCursor, ClusterError> {
    let coll = cluster
        .client()
        .database(ns.db())
        .collection::<Document>(ns.coll());
    let mut find = coll
        .find(doc! {})
        .hint(Hint::Keys(doc! { "_id": 1 }))
        .sort(doc! { "_id": 1 });
    if let Some(min) = &part.min {
        find = find.min(min.as_document().clone());
    }
    if let Some(max) = &part.max {
        find = find.max(max.as_document().clone());
    }
    find.batch()
        .await
        .map_err(|e| cluster.error(&format!("find {ns}"), &e))
}

async fn next_batch(
    cluster: &Cluster,
    ns: &Namespace,
    cursor: &mut mongodb::raw_batch_cursor::RawBatchCursor,
    done: bool,
) -> Result<Option<Vec<(IdKey, u128)>>, ClusterError> {
    if done {
        return Ok(None);
    }
    let command = format!("find {ns}");
    let Some(batch) = cursor.next().await else {
        return Ok(None);
    };
    let batch = batch.map_err(|e| cluster.error(&command, &e))?;
    let docs = batch
        .doc_slices()
        .map_err(|e| cluster.invalid_reply(&command, e.to_string()))?;
    let mut out = Vec::new();
    for item in docs {
        let item = item.map_err(|e| cluster.invalid_reply(&command, e.to_string()))?;
        let doc = item
            .as_document()
            .ok_or_else(|| cluster.invalid_reply(&command, "a batch element is not a document"))?;
        out.push(
            key_and_hash(doc)
                .ok_or_else(|| cluster.invalid_reply(&command, "a document has no _id"))?,
        );
    }
    Ok(Some(out))
}

async fn fetch_by_ids(
    cluster: &Cluster,
    ns: &Namespace,
    keys: &[IdKey],
) -> Result<Vec<(IdKey, u128)>, ClusterError> {
    let ids: Vec<bson::Bson> = keys
        .iter()
        .filter_map(|k| {
            let doc = bson::RawDocument::from_bytes(k).ok()?;
            bson::Bson::try_from(doc.get("_id").ok().flatten()?).ok()
        })
        .collect();
    let command = format!("find {ns}");
    let docs: Vec<RawDocumentBuf> = cluster
        .client()
        .database(ns.db())
        .collection::<RawDocumentBuf>(ns.coll())
        .find(doc! { "_id": { "$in": ids } })
        .await
        .map_err(|e| cluster.error(&command, &e))?
        .try_collect()
        .await
        .map_err(|e| cluster.error(&command, &e))?;
    Ok(docs.iter().filter_map(|d| key_and_hash(d)).collect())
}

/// Used by resumable verifications to name the checkpoint file next to the lockfile.
pub fn checkpoint_path(lockfile: &Path) -> PathBuf {
    let stem = lockfile.file_stem().map_or_else(
        || "migration".to_owned(),
        |s| s.to_string_lossy().into_owned(),
    );
    lockfile.with_file_name(format!("{stem}.verify.json"))
}
