//! Reading the source's changes: one cluster-wide change stream, opened at T0 before anything
//! is copied, written to the spool as it arrives.
//!
//! Server behaviours relied on: a cluster-wide stream (`aggregate: 1` on `admin` with
//! `allChangesForCluster`) reports every user namespace and is never invalidated by drops or
//! renames; `showExpandedEvents` adds DDL events (create, createIndexes, dropIndexes, modify,
//! rename, ...); `fullDocument: "updateLookup"` adds the document as it is when the event is
//! read; every batch carries a `postBatchResumeToken`, which advances while the source is idle
//! (periodic no-op writes), so an idle migration's resume point keeps up with the oplog; the
//! first (empty) batch's token marks the stream's start, T0. The driver resumes by itself
//! after resumable errors.

use std::time::{Duration, Instant};

use bson::{Bson, RawDocument, RawDocumentBuf, Timestamp};
use mongodb::change_stream::ChangeStream;
use mongodb::options::FullDocumentType;
use tokio::sync::{mpsc, watch};

use super::spool::SpoolWriter;
use crate::cluster::retry::{Attempts, Backoff};
use crate::cluster::{Cluster, ClusterError, codes};
use crate::config::model::UpdateMode;
use crate::namespace::NamespaceFilter;
use crate::state::{ClusterTime, ResumeToken, SpoolPosition};

/// How often the reader makes the spool durable and reports its position when it only has a
/// newer resume token to report.
const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);

/// How often it does so when events are waiting: the applier reads only what is durable, so
/// this interval is a floor of the replication lag (ten `fdatasync`s a second at most).
const BUSY_CHECKPOINT_INTERVAL: Duration = Duration::from_millis(100);

/// How long one getMore waits for new events; also how quickly the reader notices `cancel`.
const MAX_AWAIT: Duration = Duration::from_millis(500);

/// A durable point of the reader: everything before `position` is in the spool, and the
/// stream can resume after `token`.
#[derive(Debug, Clone)]
pub struct ReaderCheckpoint {
    /// Durable end of the spool.
    pub position: SpoolPosition,
    /// Resume token at that point.
    pub token: ResumeToken,
    /// Newest source cluster time seen (events and idle high-water marks).
    pub high_water: Option<ClusterTime>,
    /// Cluster time of the newest spooled event.
    pub last_event: Option<ClusterTime>,
    /// Events spooled since the previous checkpoint.
    pub events: u64,
    /// Bytes spooled since the previous checkpoint.
    pub bytes: u64,
}

/// Why reading changes stopped.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// The source no longer has the history the stream must resume from.
    #[error(
        "the source's oplog no longer holds the changes since the last checkpoint ({0}); the migration cannot continue from its state and must start over (mongoshift destroy, then apply). Enlarge the oplog first so this does not recur"
    )]
    HistoryLost(String),
    /// The source refused or failed.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// The spool could not be written.
    #[error("cannot write the change spool: {0}")]
    Spool(#[from] std::io::Error),
    /// The state owner stopped listening (it failed).
    #[error("the change reader's progress could not be recorded")]
    Disconnected,
}

impl crate::cluster::retry::Transient for StreamError {
    fn is_transient(&self) -> bool {
        matches!(self, Self::Cluster(e) if e.is_transient())
    }
}

/// Opens the cluster-wide change stream, resuming after `token` when given. Update events
/// carry the looked-up document only when updates are applied as whole documents.
pub async fn open(
    source: &Cluster,
    token: Option<&ResumeToken>,
    update_mode: UpdateMode,
) -> Result<ChangeStream<RawDocumentBuf>, StreamError> {
    let mut watch = source
        .client()
        .watch()
        .show_expanded_events(true)
        .max_await_time(MAX_AWAIT);
    if update_mode == UpdateMode::FullDocument {
        watch = watch.full_document(FullDocumentType::UpdateLookup);
    }
    if let Some(token) = token {
        let driver_token =
            bson::deserialize_from_bson(Bson::Document(token.0.clone())).map_err(|e| {
                source.invalid_reply("watch", format!("the stored resume token is unusable: {e}"))
            })?;
        watch = watch.resume_after(Some(driver_token));
    }
    match watch.await {
        Ok(stream) => Ok(stream.with_type::<RawDocumentBuf>()),
        Err(e) => Err(classify(source.error("watch", &e))),
    }
}

fn classify(e: ClusterError) -> StreamError {
    if e.code() == Some(codes::CHANGE_STREAM_HISTORY_LOST) {
        StreamError::HistoryLost(e.to_string())
    } else {
        StreamError::Cluster(e)
    }
}

/// The stream's current resume token.
pub fn current_token<T: serde::de::DeserializeOwned + Unpin + Send + Sync>(
    stream: &ChangeStream<T>,
) -> Option<ResumeToken> {
    let token = stream.resume_token()?;
    match bson::serialize_to_bson(&token).ok()? {
        Bson::Document(d) => Some(ResumeToken(d)),
        _ => None,
    }
}

/// True when the event concerns a migrated namespace (rename counts on either side;
/// database-level events count when the database may hold migrated collections).
pub fn is_relevant(event: &RawDocument, filter: &NamespaceFilter) -> bool {
    // Borrowed names: this runs for every event the source sends.
    let matches = |field: &str| {
        let Ok(ns) = event.get_document(field) else {
            return false;
        };
        let Ok(db) = ns.get_str("db") else {
            return false;
        };
        match ns.get_str("coll") {
            Ok(coll) => filter.includes_names(db, coll),
            Err(_) => filter.may_include_database(db),
        }
    };
    matches("ns") || matches("to")
}

/// How the reader reopens its stream after a transient failure.
#[derive(Debug, Clone, Copy)]
pub struct Reopen {
    /// The stream's update mode, as first opened.
    pub update_mode: UpdateMode,
    /// How long and how often to try.
    pub backoff: Backoff,
}

/// When the reader should stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReaderStop {
    /// Keep reading.
    Running,
    /// Stop at once (interrupt or failure elsewhere); the resume token covers the rest.
    Now,
    /// Stop once every change up to this source cluster time is spooled.
    DrainUntil(Timestamp),
}

/// How long a drain may take before the reader stops anyway (its resume token still covers
/// whatever it did not reach, so stopping is safe, only less complete).
const MAX_DRAIN: Duration = Duration::from_secs(30);

/// Reads changes into the spool until told to stop or failed, reporting a checkpoint every
/// 100 ms while events arrive, about once a second otherwise (and a final one on the way out).
/// A transient failure (the driver resumes once by itself; an election can take longer)
/// reopens the stream after the last event read, whose events are already in the spool, with
/// growing pauses until the retries are spent.
pub async fn run_reader(
    source: Cluster,
    mut stream: ChangeStream<RawDocumentBuf>,
    reopen: Reopen,
    mut spool: SpoolWriter,
    filter: NamespaceFilter,
    checkpoints: mpsc::Sender<ReaderCheckpoint>,
    stop: watch::Receiver<ReaderStop>,
) -> Result<(), StreamError> {
    let mut last_report = Instant::now();
    let mut pending_events = 0u64;
    let mut pending_bytes = 0u64;
    let mut last_event: Option<ClusterTime> = None;
    let mut reported_token: Option<ResumeToken> = None;
    let mut drain_started: Option<Instant> = None;
    let mut attempts = Attempts::new(reopen.backoff);
    loop {
        // No `select!` around `next_if_any`: dropping it mid-batch could leave the stream's
        // token ahead of events not yet spooled. The short await time bounds the wait instead.
        let stopping = match *stop.borrow() {
            ReaderStop::Running => false,
            ReaderStop::Now => true,
            ReaderStop::DrainUntil(until) => {
                let started = *drain_started.get_or_insert_with(Instant::now);
                let reached = current_token(&stream)
                    .and_then(|t| t.cluster_time())
                    .is_some_and(|t| t.0 >= until);
                reached || started.elapsed() >= MAX_DRAIN
            }
        };
        if !stopping {
            match stream.next_if_any().await {
                Ok(Some(event)) => {
                    attempts.progressed();
                    if is_relevant(&event, &filter) {
                        spool.append(&event)?;
                        pending_events += 1;
                        pending_bytes += event.as_bytes().len() as u64;
                        if let Ok(ts) = event.get_timestamp("clusterTime") {
                            last_event = Some(ClusterTime(ts));
                        }
                    }
                }
                Ok(None) => attempts.progressed(),
                Err(e) => {
                    let e = source.error("getMore (change stream)", &e);
                    let Some(pause) = attempts.after("change stream", &e) else {
                        return Err(classify(e));
                    };
                    tokio::time::sleep(pause).await;
                    let token = current_token(&stream);
                    match open(&source, token.as_ref(), reopen.update_mode).await {
                        Ok(reopened) => stream = reopened,
                        // The next getMore fails on the old stream and counts another attempt.
                        Err(StreamError::Cluster(e)) if e.is_transient() => {
                            tracing::warn!(error = %e, "the change stream could not be reopened yet");
                        }
                        Err(e) => return Err(e),
                    }
                    continue;
                }
            }
        }
        let due = last_report.elapsed() >= CHECKPOINT_INTERVAL
            || (pending_events > 0 && last_report.elapsed() >= BUSY_CHECKPOINT_INTERVAL)
            || pending_events >= 10_000
            || stopping;
        if due && let Some(token) = current_token(&stream) {
            if pending_events > 0 || reported_token.as_ref() != Some(&token) {
                let position = spool.checkpoint().await?;
                checkpoints
                    .send(ReaderCheckpoint {
                        position,
                        high_water: token.cluster_time(),
                        token: token.clone(),
                        last_event,
                        events: pending_events,
                        bytes: pending_bytes,
                    })
                    .await
                    .map_err(|_| StreamError::Disconnected)?;
                pending_events = 0;
                pending_bytes = 0;
                reported_token = Some(token);
            }
            last_report = Instant::now();
        }
        if stopping {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use bson::rawdoc;

    use super::*;
    use crate::namespace::NamespacePattern;

    #[test]
    fn relevance_follows_the_filter_on_either_side_of_a_rename_and_for_databases() {
        let p = |s| NamespacePattern::parse(s).unwrap();
        let filter = NamespaceFilter::new(vec![p("shop.*")], vec![p("shop.tmp_*")]);
        let on = |ns: bson::RawDocumentBuf| rawdoc! { "operationType": "insert", "ns": ns };
        assert!(is_relevant(
            &on(rawdoc! { "db": "shop", "coll": "orders" }),
            &filter
        ));
        assert!(!is_relevant(
            &on(rawdoc! { "db": "shop", "coll": "tmp_1" }),
            &filter
        ));
        assert!(!is_relevant(
            &on(rawdoc! { "db": "other", "coll": "orders" }),
            &filter
        ));
        assert!(!is_relevant(
            &on(rawdoc! { "db": "shop", "coll": "system.views" }),
            &filter
        ));
        // A database-level event (no `coll`) counts for a database that may hold migrated
        // collections.
        assert!(is_relevant(&on(rawdoc! { "db": "shop" }), &filter));
        assert!(!is_relevant(&on(rawdoc! { "db": "other" }), &filter));
        // A rename counts when either side is migrated.
        let rename = |from: &str, to: &str| {
            rawdoc! {
                "operationType": "rename",
                "ns": { "db": "shop", "coll": from },
                "to": { "db": "shop", "coll": to },
            }
        };
        assert!(is_relevant(&rename("tmp_1", "orders"), &filter));
        assert!(is_relevant(&rename("orders", "tmp_1"), &filter));
        assert!(!is_relevant(&rename("tmp_1", "tmp_2"), &filter));
        // A `coll` that is not a string leaves the database to match.
        assert!(is_relevant(
            &on(rawdoc! { "db": "shop", "coll": 1 }),
            &filter
        ));
        assert!(!is_relevant(
            &on(rawdoc! { "db": "other", "coll": 1 }),
            &filter
        ));
        // An unreadable `ns` leaves `to` to match.
        let to_only = rawdoc! { "operationType": "rename", "ns": 1, "to": { "db": "shop", "coll": "orders" } };
        assert!(is_relevant(&to_only, &filter));
        // No readable namespace: nothing to match.
        assert!(!is_relevant(
            &rawdoc! { "operationType": "invalidate" },
            &filter
        ));
        assert!(!is_relevant(
            &on(rawdoc! { "db": 1, "coll": "orders" }),
            &filter
        ));
    }
}
