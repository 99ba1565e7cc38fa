//! The state owner of a running `apply`: it alone changes the [`MigrationState`] and writes the
//! lockfile. Workers (the copy, the change reader, the applier, index builds) report to it over
//! channels; it persists at every phase change and every couple of seconds, so a kill at any
//! moment loses seconds of work, never correctness.
//!
//! Phases: `preparing` → `copying` → `catching_up` → `ready` → `cutting_over` → `verifying` →
//! `committed` (or `aborted`, `expired`). The reader runs from T0 to the end of the drain; the
//! applier from the end of the copy to the end of the drain.

use std::collections::BTreeSet;
use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bson::RawDocumentBuf;
use mongodb::change_stream::ChangeStream;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::applier::{ApplierContext, ApplierReport, CatalogChange, SpoolLimit, run_applier};
use super::apply::{ApplyError, ApplyOutcome};
use super::copy::{CopyJob, CopySettings, CopyUpdate, run_copy};
use super::ddl;
use super::progress::{Progress, lag_secs, now_secs};
use super::report::MigrationReport;
use super::spool::{DEFAULT_SEGMENT_BYTES, SpoolWriter, discard_before, spool_dir};
use super::stream::{self, ReaderCheckpoint, ReaderStop, StreamError};
use crate::cluster::retry::{Backoff, retry};
use crate::cluster::{Cluster, ClusterError, CollectionKind, codes};
use crate::config::Config;
use crate::config::model::{ApprovalPolicy, IndexPolicy, VerifyPolicy, WindowExpiry};
use crate::cutover::{approval, block, notify, requests};
use crate::namespace::Namespace;
use crate::plan::{Action, Change, IndexPhase};
use crate::state::lockfile::{self, StateError};
use crate::state::{
    ClusterTime, CopyStatus, MigrationState, NamespaceState, PendingDocument, Phase, ShardEstimate,
    VerificationSummary, WriteBlock,
};
use crate::verify::{self, VerifyMode, VerifyRequest};

/// How often the state is written while work goes on.
const PERSIST_INTERVAL: Duration = Duration::from_secs(2);

/// How often progress is published and the cutover controls are checked.
const TICK: Duration = Duration::from_millis(250);

/// Without the write block, the source counts as stopped after this long without a change.
pub const QUIET_PERIOD: Duration = Duration::from_secs(5);

/// How long the drain waits on documents a unique index still refuses once every change up
/// to the final time is applied.
const PENDING_GRACE: Duration = Duration::from_secs(5);

/// `window_expiring` is announced this long before the window ends.
const EXPIRY_WARNING: Duration = Duration::from_secs(3600);

/// Unique-index builds refused because of changes still in flight are retried this often.
const INDEX_RETRIES: u32 = 10;

/// How the sync phase ended.
enum SyncEnd {
    /// Every change up to the final time is applied: verify and commit.
    Drained,
    /// Interrupted.
    Interrupted,
    /// `mongoshift abort`.
    Aborted(String),
    /// The window ended (`on_window_expiry = "stop"`).
    Expired,
}

/// The state owner.
pub(super) struct Engine<'c> {
    pub config: &'c Config,
    pub lockfile: PathBuf,
    pub state: MigrationState,
    pub progress: watch::Sender<Progress>,
    pub approve_flag: bool,
    activity: String,
    last_persist: Instant,
    dirty: bool,
    last_event_seen: Instant,
    expiry_noted: bool,
    /// Since when the drain has had nothing left but refused (pending) documents.
    pending_stall: Option<Instant>,
    /// Why the approval file could not be read, once said (so it is not said at every tick).
    approval_error: Option<String>,
}

impl<'c> Engine<'c> {
    pub fn new(
        config: &'c Config,
        lockfile: PathBuf,
        state: MigrationState,
        progress: watch::Sender<Progress>,
        approve_flag: bool,
    ) -> Self {
        Self {
            config,
            lockfile,
            state,
            progress,
            approve_flag,
            activity: "preparing".to_owned(),
            last_persist: Instant::now(),
            dirty: true,
            last_event_seen: Instant::now(),
            expiry_noted: false,
            pending_stall: None,
            approval_error: None,
        }
    }

    pub fn persist(&mut self) -> Result<(), StateError> {
        lockfile::save(&self.lockfile, &mut self.state)?;
        self.last_persist = Instant::now();
        self.dirty = false;
        self.publish();
        Ok(())
    }

    fn publish(&self) {
        self.progress.send_replace(Progress::from_state(
            &self.state,
            &self.activity,
            now_secs(),
        ));
    }

    fn set_activity(&mut self, activity: &str) {
        activity.clone_into(&mut self.activity);
        self.publish();
    }

    fn set_phase(&mut self, phase: Phase) -> Result<(), StateError> {
        if self.state.phase != phase {
            tracing::info!(from = %self.state.phase, to = %phase, "phase");
            self.state.phase = phase;
        }
        self.persist()
    }

    fn snapshot(&self) -> Progress {
        Progress::from_state(&self.state, &self.activity, now_secs())
    }

    /// Records namespaces of the plan that the state does not know yet. Only until the copy
    /// ends: after it, the namespace list follows the replicated DDL (a fresh plan would see
    /// the source's catalog ahead of the spooled events, e.g. a rename not yet applied).
    pub fn add_namespaces(&mut self, actions: &[Action]) {
        if self.state.phase > Phase::Copying {
            return;
        }
        for action in actions {
            let (source, kind, documents, bytes) = match &action.change {
                Change::Copy {
                    source,
                    documents,
                    bytes,
                    ..
                } => (source, CollectionKind::Collection, *documents, *bytes),
                Change::CreateView { source, .. } => (source, CollectionKind::View, 0, 0),
                _ => continue,
            };
            let (source_shard_key, source_shards) = match &action.change {
                Change::Copy {
                    source_shard_key,
                    shards,
                    ..
                } => (
                    source_shard_key.clone(),
                    shards
                        .iter()
                        .map(|s| ShardEstimate {
                            shard: s.shard.clone(),
                            documents: s.documents,
                            bytes: s.bytes,
                        })
                        .collect(),
                ),
                _ => (None, Vec::new()),
            };
            if self.state.namespace_mut(&action.namespace).is_some() {
                continue;
            }
            let copy = if kind == CollectionKind::View {
                CopyStatus::NotApplicable
            } else {
                CopyStatus::Pending
            };
            self.state.namespaces.push(NamespaceState {
                source: source.clone(),
                destination: action.namespace.clone(),
                kind,
                created: false,
                indexes_built: false,
                copy,
                documents_estimate: documents,
                bytes_estimate: bytes,
                partitions: Vec::new(),
                duplicates: 0,
                source_shard_key,
                source_shards,
                shard_key: None,
            });
        }
        self.dirty = true;
    }

    /// Drops, creates, shards and builds before-copy indexes, recording each step. The source
    /// is sampled for the split points of ranged shard keys.
    pub async fn prepare(
        &mut self,
        source: &Cluster,
        destination: &Cluster,
        actions: &[Action],
    ) -> Result<(), ApplyError> {
        self.set_activity("creating destination namespaces");
        for action in actions {
            let ns = &action.namespace;
            match &action.change {
                Change::Drop { .. } => {
                    apply_with_retries(destination, ns, &action.change, false, self.backoff())
                        .await?;
                    if !self.state.dropped.contains(ns) {
                        self.state.dropped.push(ns.clone());
                    }
                    self.persist()?;
                }
                Change::CreateCollection { .. } | Change::CreateView { .. } => {
                    // Recorded before the command: a crash in between still marks it ours.
                    if let Some(entry) = self.state.namespace_mut(ns) {
                        entry.created = true;
                    }
                    self.persist()?;
                    apply_with_retries(destination, ns, &action.change, true, self.backoff())
                        .await?;
                }
                Change::ShardCollection { key, presplit, .. } => {
                    // Recorded before the command, like a creation.
                    if let Some(entry) = self.state.namespace_mut(ns) {
                        entry.shard_key = Some(key.clone());
                    }
                    self.persist()?;
                    self.set_activity(&format!("sharding {ns}"));
                    apply_with_retries(destination, ns, &action.change, true, self.backoff())
                        .await?;
                    if let Some(p) = presplit {
                        self.set_activity(&format!("splitting {ns} into {} chunks", p.chunks));
                        super::sharded::presplit(source, destination, &p.source, ns, key, p.chunks)
                            .await;
                    }
                }
                Change::CreateIndex {
                    phase: IndexPhase::BeforeCopy,
                    ..
                } => {
                    self.set_activity(&format!("building indexes of {ns}"));
                    apply_with_retries(destination, ns, &action.change, true, self.backoff())
                        .await?;
                    self.state.indexes_created += 1;
                }
                Change::CreateIndex {
                    phase: IndexPhase::AfterCopy,
                    ..
                }
                | Change::Copy { .. } => {}
            }
        }
        if self.config.options.indexes != IndexPolicy::AfterCopy {
            for n in &mut self.state.namespaces {
                n.indexes_built = true;
            }
        }
        self.dirty = true;
        Ok(())
    }

    fn copy_jobs(&self) -> Vec<CopyJob> {
        self.state
            .namespaces
            .iter()
            .filter(|n| {
                n.kind == CollectionKind::Collection
                    && matches!(n.copy, CopyStatus::Pending | CopyStatus::Copying)
            })
            .map(|n| CopyJob {
                source: n.source.clone(),
                destination: n.destination.clone(),
                partitions: (n.copy == CopyStatus::Copying).then(|| n.partitions.clone()),
                count: n.documents_estimate,
                size_bytes: n.bytes_estimate,
            })
            .collect()
    }

    /// Decides the partitions of sharded source collections not started yet: runs of chunks
    /// on one shard (see [`super::shard_ranges`]), recorded before any is copied.
    async fn partition_sharded_sources(&mut self, source: &Cluster) -> Result<(), ApplyError> {
        let partition_bytes = self.config.options.copy.partition_size.bytes();
        let pending: Vec<(Namespace, Namespace, bson::Document, Vec<ShardEstimate>)> = self
            .state
            .namespaces
            .iter()
            .filter(|n| n.kind == CollectionKind::Collection && n.copy == CopyStatus::Pending)
            .filter_map(|n| {
                Some((
                    n.source.clone(),
                    n.destination.clone(),
                    n.source_shard_key.clone()?,
                    n.source_shards.clone(),
                ))
            })
            .collect();
        for (source_ns, destination_ns, key, estimates) in pending {
            let partitions = super::shard_ranges::key_range_partitions(
                source,
                &source_ns,
                &key,
                partition_bytes,
                &estimates,
            )
            .await?;
            if let Some(partitions) = partitions
                && let Some(n) = self.state.namespace_mut(&destination_ns)
            {
                n.partitions = partitions;
                n.copy = CopyStatus::Copying;
            }
        }
        self.persist()?;
        Ok(())
    }

    /// Records a copy update. Decided and completed partitions are persisted at once, so
    /// finished work is never redone after a crash; watermarks wait for the next periodic
    /// write (a crash then repeats at most a couple of seconds of batches).
    fn on_copy_update(&mut self, update: CopyUpdate) -> Result<(), StateError> {
        self.dirty = true;
        let urgent = matches!(
            update,
            CopyUpdate::Partitioned { .. } | CopyUpdate::PartitionDone { .. }
        );
        match update {
            CopyUpdate::Partitioned {
                destination,
                partitions,
            } => {
                if let Some(n) = self.state.namespace_mut(&destination) {
                    n.partitions = partitions;
                    n.copy = CopyStatus::Copying;
                }
            }
            CopyUpdate::Progress {
                destination,
                partition,
                last_id,
                documents,
                bytes,
                duplicates,
                deferred,
            } => {
                if let Some(n) = self.state.namespace_mut(&destination) {
                    n.duplicates += duplicates;
                    if let Some(p) = n.partitions.iter_mut().find(|p| p.id == partition) {
                        p.resume_from = Some(last_id);
                        p.documents += documents;
                        p.bytes += bytes;
                    }
                }
                // Saved with the watermark that passes them: the applier writes them later.
                for d in &deferred {
                    tracing::info!(
                        namespace = %d.namespace,
                        id = %d.id,
                        reason = %d.reason,
                        "a unique index refused a copied document; it is written once the document holding its key has changed"
                    );
                }
                PendingDocument::merge(&mut self.state.sync.pending, deferred);
            }
            CopyUpdate::Restarted {
                destination,
                partition,
            } => {
                if let Some(n) = self.state.namespace_mut(&destination)
                    && let Some(p) = n.partitions.iter_mut().find(|p| p.id == partition)
                {
                    p.documents = 0;
                    p.bytes = 0;
                    p.resume_from = None;
                }
            }
            CopyUpdate::PartitionDone {
                destination,
                partition,
            } => {
                if let Some(n) = self.state.namespace_mut(&destination) {
                    if let Some(p) = n.partitions.iter_mut().find(|p| p.id == partition) {
                        p.done = true;
                    }
                    if n.partitions.iter().all(|p| p.done) {
                        n.copy = CopyStatus::Done;
                    }
                }
            }
        }
        if urgent { self.persist() } else { Ok(()) }
    }

    fn on_checkpoint(&mut self, c: ReaderCheckpoint) {
        let s = &mut self.state.stream;
        if c.last_event.is_some() && c.last_event != s.last_event {
            self.last_event_seen = Instant::now();
        }
        s.spooled = c.position;
        s.resume_token = Some(c.token);
        s.high_water = c.high_water.or(s.high_water);
        s.last_event = c.last_event.or(s.last_event);
        s.events_spooled += c.events;
        s.bytes_spooled += c.bytes;
        self.dirty = true;
    }

    fn on_applier_report(&mut self, report: ApplierReport) {
        self.dirty = true;
        let sync = &mut self.state.sync;
        match report {
            ApplierReport::DdlTargets { targets, recorded } => {
                for t in targets {
                    if !sync.ddl_targets.contains(&t) {
                        sync.ddl_targets.push(t);
                    }
                }
                // Unanswered, the applier stops with an error, which ends the run.
                match self.persist() {
                    Ok(()) => {
                        let _ = recorded.send(());
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "the lockfile could not record a DDL event's targets")
                    }
                }
            }
            ApplierReport::Applied {
                position,
                time,
                counts,
                pending,
                catalog,
            } => {
                sync.applied = position;
                if time.is_some() && time > sync.applied_time {
                    sync.applied_time = time;
                }
                sync.counts.add(&counts);
                sync.pending = pending;
                if !catalog.is_empty() {
                    // The DDL event's effect is recorded below; its write-ahead is done.
                    sync.ddl_targets.clear();
                }
                for change in catalog {
                    self.record_catalog_change(change);
                }
            }
            ApplierReport::CaughtUp { limit, pending } => {
                sync.applied = limit.position;
                if limit.high_water > sync.applied_time {
                    sync.applied_time = limit.high_water;
                }
                sync.pending = pending;
            }
        }
    }

    /// Keeps the namespace list true to what DDL replication did on the destination.
    fn record_catalog_change(&mut self, change: CatalogChange) {
        match change {
            CatalogChange::Created(source, destination) => {
                if let Some(n) = self.state.namespace_mut(&destination) {
                    n.created = true;
                } else {
                    self.state.namespaces.push(NamespaceState {
                        source,
                        destination,
                        kind: CollectionKind::Collection,
                        created: true,
                        indexes_built: true,
                        copy: CopyStatus::NotApplicable,
                        documents_estimate: 0,
                        bytes_estimate: 0,
                        partitions: Vec::new(),
                        duplicates: 0,
                        source_shard_key: None,
                        source_shards: Vec::new(),
                        shard_key: None,
                    });
                }
            }
            CatalogChange::Dropped(ns) => {
                // Gone from the destination; `destroy` has nothing to drop for it.
                if let Some(n) = self.state.namespace_mut(&ns) {
                    n.created = false;
                }
            }
            CatalogChange::Renamed(from, to) => {
                if let Some(n) = self.state.namespace_mut(&from) {
                    n.destination = to;
                }
            }
        }
    }

    fn tick(&mut self) -> Result<(), StateError> {
        if self.dirty && self.last_persist.elapsed() >= PERSIST_INTERVAL {
            self.persist()
        } else {
            self.publish();
            Ok(())
        }
    }

    /// Runs `work` while recording the reader's checkpoints (and copy updates, when given) and
    /// persisting periodically.
    async fn drive<T>(
        &mut self,
        work: impl Future<Output = T>,
        checkpoints: &mut mpsc::Receiver<ReaderCheckpoint>,
        mut updates: Option<&mut mpsc::Receiver<CopyUpdate>>,
    ) -> Result<T, StateError> {
        tokio::pin!(work);
        let mut ticker = tokio::time::interval(TICK);
        let mut result = None;
        loop {
            // The work is done once it returned and every update it sent is recorded.
            let updates_open = updates
                .as_ref()
                .is_some_and(|u| !u.is_closed() || !u.is_empty());
            if !updates_open && let Some(output) = result.take() {
                return Ok(output);
            }
            tokio::select! {
                r = &mut work, if result.is_none() => result = Some(r),
                Some(u) = async { updates.as_mut()?.recv().await }, if updates_open => self.on_copy_update(u)?,
                Some(c) = checkpoints.recv() => self.on_checkpoint(c),
                _ = ticker.tick() => self.tick()?,
            }
        }
    }

    /// Everything after preparation: copy, sync, cutover, verification, commit.
    pub async fn run(
        mut self,
        source: Cluster,
        destination: Cluster,
        change_stream: ChangeStream<RawDocumentBuf>,
        actions: &[Action],
        cancel: CancellationToken,
    ) -> Result<ApplyOutcome, ApplyError> {
        let dir = spool_dir(&self.lockfile);
        let spool = SpoolWriter::open(&dir, self.state.stream.spooled, DEFAULT_SEGMENT_BYTES)
            .map_err(|source| ApplyError::Spool {
                path: dir.clone(),
                source,
            })?;
        let (checkpoint_tx, mut checkpoints) = mpsc::channel(64);
        let (stop_tx, stop_rx) = watch::channel(ReaderStop::Running);
        let mut reader = tokio::spawn(stream::run_reader(
            source.clone(),
            change_stream,
            stream::Reopen {
                update_mode: self.config.options.update_mode,
                backoff: self.backoff(),
            },
            spool,
            self.config.options.filter.clone(),
            checkpoint_tx,
            stop_rx,
        ));

        let result = self
            .phases(
                &source,
                &destination,
                actions,
                &mut checkpoints,
                &mut reader,
                &cancel,
            )
            .await;

        // Stop the reader and record its last checkpoint, whatever happened.
        let _ = stop_tx.send(ReaderStop::Now);
        let reader_result = self.drive(&mut reader, &mut checkpoints, None).await?;
        while let Ok(c) = checkpoints.try_recv() {
            self.on_checkpoint(c);
        }
        // The write block never outlives the run (a resumed cutover blocks again).
        let release = if self.state.cutover.write_block == WriteBlock::Off {
            None
        } else {
            Some(self.release_block(&source).await)
        };
        self.persist()?;
        let outcome = match (result, reader_result) {
            (Err(e), _) => Err(e),
            (Ok(_), Ok(Err(e))) => Err(ApplyError::Stream(e)),
            (Ok(_), Err(e)) => Err(ApplyError::Internal(format!(
                "the change reader failed: {e}"
            ))),
            (Ok(o), Ok(Ok(()))) => Ok(o),
        };
        if let Some(Err(e)) = release {
            return Err(ApplyError::Cluster(e));
        }
        if let Err(e) = &outcome {
            self.state.cutover.failure = Some(e.to_string());
            let _ = self.persist();
            self.notify("failed", &[("MONGOSHIFT_ERROR", e.to_string())])
                .await;
        }
        outcome
    }

    async fn release_block(&mut self, source: &Cluster) -> Result<(), ClusterError> {
        retry("release the source write block", self.backoff(), || {
            block::release(source)
        })
        .await?;
        self.state.cutover.write_block = WriteBlock::Off;
        tracing::info!("source writes unblocked");
        Ok(())
    }

    async fn phases(
        &mut self,
        source: &Cluster,
        destination: &Cluster,
        actions: &[Action],
        checkpoints: &mut mpsc::Receiver<ReaderCheckpoint>,
        reader: &mut JoinHandle<Result<(), StreamError>>,
        cancel: &CancellationToken,
    ) -> Result<ApplyOutcome, ApplyError> {
        if self.state.phase <= Phase::Copying {
            if !self.copy(source, destination, checkpoints, cancel).await? {
                self.activity = "interrupted".to_owned();
                return Ok(ApplyOutcome::Interrupted(self.snapshot()));
            }
            self.state.timestamps.copy_finished = Some(jiff::Timestamp::now().to_string());
            self.set_phase(Phase::CatchingUp)?;
        }
        if self.state.phase == Phase::Copied {
            // Lockfiles from before change application existed.
            self.set_phase(Phase::CatchingUp)?;
        }
        let end = self
            .sync(source, destination, actions, checkpoints, reader, cancel)
            .await?;
        match end {
            SyncEnd::Interrupted => {
                self.activity = "interrupted".to_owned();
                Ok(ApplyOutcome::Interrupted(self.snapshot()))
            }
            SyncEnd::Aborted(by) => {
                self.activity = format!("aborted by {by}");
                self.set_phase(Phase::Aborted)?;
                Ok(ApplyOutcome::Aborted(self.snapshot()))
            }
            SyncEnd::Expired => {
                self.activity = "the cutover window expired".to_owned();
                self.set_phase(Phase::Expired)?;
                Ok(ApplyOutcome::Expired(self.snapshot()))
            }
            SyncEnd::Drained => self.verify_and_commit(source, destination, cancel).await,
        }
    }

    /// The initial copy. `Ok(false)` when interrupted.
    async fn copy(
        &mut self,
        source: &Cluster,
        destination: &Cluster,
        checkpoints: &mut mpsc::Receiver<ReaderCheckpoint>,
        cancel: &CancellationToken,
    ) -> Result<bool, ApplyError> {
        if self.state.phase < Phase::Copying {
            self.state.timestamps.copy_started = Some(jiff::Timestamp::now().to_string());
            self.set_phase(Phase::Copying)?;
        }
        let copy = &self.config.options.copy;
        let settings = CopySettings {
            parallel_collections: copy.parallel_collections as usize,
            parallel_partitions: copy.parallel_partitions as usize,
            partition_bytes: copy.partition_size.bytes(),
            batch_bytes: copy.batch_size.bytes(),
            write_concern: super::writer::write_concern_document(
                &self.config.options.write_concern,
            ),
            backoff: self.backoff(),
        };
        self.partition_sharded_sources(source).await?;
        let jobs = self.copy_jobs();
        if !jobs.is_empty() {
            self.set_activity("copying");
            let (update_tx, mut updates) = mpsc::channel(1024);
            let work = run_copy(
                source.clone(),
                destination.clone(),
                jobs,
                settings,
                update_tx,
                cancel.child_token(),
            );
            self.drive(work, checkpoints, Some(&mut updates)).await??;
        }
        Ok(!cancel.is_cancelled()
            && !self
                .state
                .namespaces
                .iter()
                .any(|n| matches!(n.copy, CopyStatus::Pending | CopyStatus::Copying)))
    }

    /// Applies changes until the cutover is drained, or the run ends another way.
    async fn sync(
        &mut self,
        source: &Cluster,
        destination: &Cluster,
        actions: &[Action],
        checkpoints: &mut mpsc::Receiver<ReaderCheckpoint>,
        reader: &mut JoinHandle<Result<(), StreamError>>,
        cancel: &CancellationToken,
    ) -> Result<SyncEnd, ApplyError> {
        let limit = |s: &MigrationState| SpoolLimit {
            position: s.stream.spooled,
            high_water: s.stream.high_water,
        };
        let (limit_tx, limit_rx) = watch::channel(limit(&self.state));
        let (report_tx, mut reports) = mpsc::channel(64);
        let applier_stop = CancellationToken::new();
        let ctx = ApplierContext {
            source: source.clone(),
            destination: destination.clone(),
            filter: self.config.options.filter.clone(),
            mapping: self.config.options.mapping.clone(),
            update_mode: self.config.options.update_mode,
            ddl: self.config.options.ddl,
            write_concern: super::writer::write_concern_document(
                &self.config.options.write_concern,
            ),
            spool_dir: spool_dir(&self.lockfile),
            shard_keys: super::sharded::destination_shard_keys(destination, self.backoff()).await?,
            backoff: self.backoff(),
        };
        let mut applier = tokio::spawn(run_applier(
            ctx,
            self.state.sync.applied,
            self.state.sync.pending.clone(),
            limit_rx,
            report_tx,
            applier_stop.clone(),
        ));
        let index_actions: Vec<Action> = actions
            .iter()
            .filter(|a| {
                matches!(
                    a.change,
                    Change::CreateIndex {
                        phase: IndexPhase::AfterCopy,
                        ..
                    }
                )
            })
            .cloned()
            .collect();
        let mut index_task: Option<JoinHandle<Result<u64, ClusterError>>> = None;
        let mut ticker = tokio::time::interval(TICK);
        self.set_activity("applying changes");
        let end = loop {
            tokio::select! {
                Some(c) = checkpoints.recv() => {
                    self.on_checkpoint(c);
                    limit_tx.send_replace(limit(&self.state));
                }
                Some(r) = reports.recv() => self.on_applier_report(r),
                r = &mut applier => {
                    return Err(match r {
                        Ok(Err(e)) => ApplyError::Changes(e),
                        Ok(Ok(())) => ApplyError::Internal("the applier stopped early".to_owned()),
                        Err(e) => ApplyError::Internal(format!("the applier failed: {e}")),
                    });
                }
                r = &mut *reader => {
                    applier_stop.cancel();
                    return Err(match r {
                        Ok(Err(e)) => ApplyError::Stream(e),
                        Ok(Ok(())) => ApplyError::Internal("the change reader stopped early".to_owned()),
                        Err(e) => ApplyError::Internal(format!("the change reader failed: {e}")),
                    });
                }
                r = async { index_task.as_mut()?.await.ok() }, if index_task.is_some() => {
                    index_task = None;
                    match r {
                        Some(Ok(built)) => {
                            self.state.indexes_created += built;
                            for n in &mut self.state.namespaces {
                                n.indexes_built = true;
                            }
                            self.persist()?;
                        }
                        Some(Err(e)) => return Err(e.into()),
                        None => return Err(ApplyError::Internal("an index build task failed".to_owned())),
                    }
                }
                _ = ticker.tick() => {
                    if cancel.is_cancelled() {
                        break SyncEnd::Interrupted;
                    }
                    if let Some(end) = self.control(source, destination, &index_actions, &mut index_task).await? {
                        break end;
                    }
                }
            }
        };
        // Stop applying; record what was applied.
        applier_stop.cancel();
        while let Some(r) = reports.recv().await {
            self.on_applier_report(r);
        }
        match applier.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(ApplyError::Changes(e)),
            Err(e) => return Err(ApplyError::Internal(format!("the applier failed: {e}"))),
        }
        if let Some(task) = index_task {
            task.abort();
        }
        let _ = discard_before(&spool_dir(&self.lockfile), self.state.sync.applied);
        self.persist()?;
        Ok(end)
    }

    /// How transient failures are retried (`options.retry_for`).
    fn backoff(&self) -> Backoff {
        Backoff::within(self.config.options.retry_for)
    }

    /// The cutover's control logic, run on every tick: persistence, requests, approval,
    /// readiness, window, and the steps of the cutover itself.
    async fn control(
        &mut self,
        source: &Cluster,
        destination: &Cluster,
        index_actions: &[Action],
        index_task: &mut Option<JoinHandle<Result<u64, ClusterError>>>,
    ) -> Result<Option<SyncEnd>, ApplyError> {
        self.tick()?;
        for request in requests::take(&self.lockfile) {
            match request {
                requests::Request::Abort { by } => return Ok(Some(SyncEnd::Aborted(by))),
                requests::Request::Extend { seconds, by } => self.extend(seconds, &by)?,
            }
        }
        let cutover = &self.config.cutover;
        if self.state.cutover.approval.is_none() {
            match approval::check(cutover.approval, &cutover.approval_file, self.approve_flag) {
                Ok(Some(approval)) => {
                    tracing::info!(by = %approval.by, via = %approval.via, "cutover approved");
                    self.approval_error = None;
                    self.state.cutover.approval = Some(approval);
                    self.persist()?;
                }
                Ok(None) => self.approval_error = None,
                Err(e) => {
                    // Said once per distinct failure, not at every tick.
                    let error = e.to_string();
                    if self.approval_error.as_ref() != Some(&error) {
                        tracing::warn!(
                            file = %cutover.approval_file.display(),
                            %error,
                            "the approval file cannot be read, so it approves nothing"
                        );
                        self.approval_error = Some(error);
                    }
                }
            }
        }
        let lag = lag_secs(&self.state).map(Duration::from_secs);
        // Caught up: the destination is less than max_lag behind the source. The time lag
        // already counts any backlog of spooled events (it runs from the last applied event);
        // the applier need not be at the spool's end, which a steady writer moves with every
        // checkpoint.
        let caught_up = lag.is_some_and(|l| l < cutover.max_lag);
        // Indexes are built once the destination has caught up (documents then match the
        // source closely enough for unique indexes); a resumed cutover may still need them.
        let indexes_built = self.state.namespaces.iter().all(|n| n.indexes_built);
        if caught_up && !indexes_built && index_task.is_none() {
            self.set_activity("building indexes");
            *index_task = Some(tokio::spawn(build_indexes(
                destination.clone(),
                index_actions.to_vec(),
                self.backoff(),
            )));
        }
        match self.state.phase {
            Phase::CatchingUp if caught_up && indexes_built => self.become_ready().await?,
            Phase::Ready => {
                if self.state.cutover.approval.is_some() && caught_up {
                    self.start_cutover(source).await?;
                } else if let Some(end) = self.check_window().await? {
                    return Ok(Some(end));
                }
            }
            Phase::CuttingOver => return self.drain_step(source).await,
            Phase::Verifying => return Ok(Some(SyncEnd::Drained)),
            _ => {}
        }
        Ok(None)
    }

    fn extend(&mut self, seconds: u64, by: &str) -> Result<(), StateError> {
        let base = self
            .state
            .cutover
            .deadline
            .as_deref()
            .and_then(|d| d.parse::<jiff::Timestamp>().ok())
            .unwrap_or_else(jiff::Timestamp::now);
        let deadline =
            base + jiff::SignedDuration::from_secs(i64::try_from(seconds).unwrap_or(i64::MAX));
        self.state.cutover.deadline = Some(deadline.to_string());
        self.state.cutover.extensions.push(seconds);
        self.state
            .cutover
            .notified
            .retain(|e| e != "window_expiring");
        self.expiry_noted = false;
        tracing::info!(by, seconds, deadline = %deadline, "cutover window extended");
        self.persist()
    }

    async fn become_ready(&mut self) -> Result<(), ApplyError> {
        let now = jiff::Timestamp::now();
        if self.state.cutover.ready_at.is_none() {
            self.state.cutover.ready_at = Some(now.to_string());
        }
        if self.state.cutover.deadline.is_none() {
            let window = jiff::SignedDuration::try_from(self.config.cutover.window)
                .unwrap_or(jiff::SignedDuration::MAX);
            self.state.cutover.deadline = Some(
                now.saturating_add(window)
                    .map_or_else(|_| now.to_string(), |d| d.to_string()),
            );
        }
        self.set_activity("ready for cutover");
        self.set_phase(Phase::Ready)?;
        self.notify_once("ready").await;
        Ok(())
    }

    /// Window bookkeeping while ready and not approved.
    async fn check_window(&mut self) -> Result<Option<SyncEnd>, ApplyError> {
        let Some(deadline) = self
            .state
            .cutover
            .deadline
            .as_deref()
            .and_then(|d| d.parse::<jiff::Timestamp>().ok())
        else {
            return Ok(None);
        };
        let now = jiff::Timestamp::now();
        let warning = jiff::SignedDuration::try_from(EXPIRY_WARNING).unwrap_or_default();
        if now >= deadline.saturating_sub(warning).unwrap_or(deadline) {
            self.notify_once("window_expiring").await;
        }
        if now < deadline {
            return Ok(None);
        }
        match self.config.cutover.on_window_expiry {
            WindowExpiry::Stop => Ok(Some(SyncEnd::Expired)),
            WindowExpiry::KeepSyncing => {
                if !self.expiry_noted {
                    tracing::warn!(
                        "the cutover window has ended; syncing continues (on_window_expiry = \"keep_syncing\")"
                    );
                    self.expiry_noted = true;
                }
                Ok(None)
            }
        }
    }

    /// Writes stop: the source write block, or the operator's word plus a quiet source.
    async fn start_cutover(&mut self, source: &Cluster) -> Result<(), ApplyError> {
        self.set_activity("stopping writes");
        self.state.cutover.writes_stopped_at = Some(jiff::Timestamp::now().to_string());
        self.state.cutover.final_time = None;
        self.set_phase(Phase::CuttingOver)?;
        if self.config.cutover.block_source_writes {
            self.block_source(source).await?;
        }
        self.set_activity("draining the last changes");
        Ok(())
    }

    async fn block_source(&mut self, source: &Cluster) -> Result<(), ApplyError> {
        // Recorded before the command: a crash in between still releases it.
        self.state.cutover.write_block = WriteBlock::Requested;
        self.persist()?;
        let stopped_at = retry("block source writes", self.backoff(), || {
            block::block(source)
        })
        .await?;
        self.state.cutover.write_block = WriteBlock::On;
        self.state.cutover.final_time = stopped_at.map(ClusterTime);
        tracing::info!(final_time = ?stopped_at, "source writes blocked");
        self.persist()?;
        Ok(())
    }

    /// One step of the drain: decide the final time if still open, then check whether every
    /// change up to it is applied.
    async fn drain_step(&mut self, source: &Cluster) -> Result<Option<SyncEnd>, ApplyError> {
        if self.config.cutover.block_source_writes
            && self.state.cutover.write_block != WriteBlock::On
        {
            // A resumed cutover blocks again (the block is released whenever a run ends).
            self.block_source(source).await?;
        }
        if self.state.cutover.final_time.is_none() {
            if self.last_event_seen.elapsed() < QUIET_PERIOD {
                self.set_activity("waiting for the source to be quiet");
                return Ok(None);
            }
            self.state.cutover.final_time = self.state.stream.high_water;
            tracing::info!(final_time = ?self.state.cutover.final_time, "no source change for the quiet period");
            self.persist()?;
        }
        let final_time = self.state.cutover.final_time;
        let applied = self.state.sync.applied_time;
        let caught_up = final_time.is_some() && applied >= final_time;
        let pending = self.state.sync.pending.len();
        if caught_up && pending > 0 {
            // Said, not waited on silently: these wait for the change that frees their key.
            self.set_activity(&format!(
                "draining: {pending} document(s) still refused by a unique index on the destination"
            ));
            // The source is blocked, so no change can free these keys any more: past a few
            // retries (the applier retries while idle) the conflict is the destination's own.
            let since = *self.pending_stall.get_or_insert_with(Instant::now);
            if since.elapsed() >= PENDING_GRACE
                && let Some(first) = self.state.sync.pending.first().cloned()
            {
                self.call_off_cutover("unique-index conflicts outlived the drain")?;
                return Err(ApplyError::UnresolvedConflicts {
                    count: pending,
                    namespace: first.namespace,
                    id: first.id.to_string(),
                    reason: first.reason,
                });
            }
        } else {
            self.pending_stall = None;
        }
        let drained = caught_up && pending == 0;
        if drained && self.state.namespaces.iter().all(|n| n.indexes_built) {
            self.set_phase(Phase::Verifying)?;
            return Ok(Some(SyncEnd::Drained));
        }
        Ok(None)
    }

    /// Back to ready without committing: syncing resumes on the next apply, which needs a new
    /// approval. (The write block is released when the run ends.)
    fn call_off_cutover(&mut self, why: &str) -> Result<(), StateError> {
        self.state.cutover.approval = None;
        self.state.cutover.writes_stopped_at = None;
        self.state.cutover.final_time = None;
        if self.config.cutover.approval == ApprovalPolicy::File {
            let file = &self.config.cutover.approval_file;
            if let Err(e) = approval::withdraw(file) {
                tracing::error!(
                    file = %file.display(),
                    error = %e,
                    "the approval file of the called-off cutover could not be removed: remove it \
                     before the next apply, which would otherwise take it as a new approval"
                );
            }
        }
        why.clone_into(&mut self.activity);
        self.set_phase(Phase::Ready)
    }

    async fn verify_and_commit(
        &mut self,
        source: &Cluster,
        destination: &Cluster,
        cancel: &CancellationToken,
    ) -> Result<ApplyOutcome, ApplyError> {
        let mode = match self.config.options.verify {
            VerifyPolicy::Full => Some(VerifyMode::Full),
            VerifyPolicy::Counts => Some(VerifyMode::Counts),
            VerifyPolicy::None => None,
        };
        let report = match mode {
            Some(mode) => {
                self.set_activity("verifying");
                let request = VerifyRequest {
                    mode,
                    // Writes stopped: a difference is a difference.
                    recheck: false,
                    checkpoint: Some(verify::checkpoint_path(&self.lockfile)),
                };
                let fingerprint = super::apply::defining_fingerprint(self.config);
                // An abort (or an interrupt) stops the verification; nothing is committed.
                let stop = cancel.child_token();
                let verification = verify::verify(
                    self.config,
                    source,
                    destination,
                    &request,
                    &fingerprint,
                    &stop,
                );
                tokio::pin!(verification);
                let mut poll = tokio::time::interval(Duration::from_millis(500));
                let outcome = loop {
                    tokio::select! {
                        r = &mut verification => break r,
                        _ = poll.tick() => {
                            let aborted = requests::take(&self.lockfile).into_iter().find_map(|r| match r {
                                requests::Request::Abort { by } => Some(by),
                                requests::Request::Extend { .. } => None,
                            });
                            if let Some(by) = aborted {
                                stop.cancel();
                                let _ = (&mut verification).await;
                                self.activity = format!("aborted by {by}");
                                self.set_phase(Phase::Aborted)?;
                                return Ok(ApplyOutcome::Aborted(self.snapshot()));
                            }
                        }
                    }
                };
                let report = match outcome {
                    Err(verify::VerifyError::Interrupted) => {
                        return Ok(ApplyOutcome::Interrupted(self.snapshot()));
                    }
                    other => other?,
                };
                self.state.cutover.verification = Some(VerificationSummary {
                    mode: format!("{mode:?}").to_lowercase(),
                    passed: report.passed(),
                    differences: report.differences(),
                    at: jiff::Timestamp::now().to_string(),
                });
                if !report.passed() {
                    self.call_off_cutover("verification found differences")?;
                    return Ok(ApplyOutcome::VerificationFailed(Box::new(
                        MigrationReport::new(&self.state, Some(report)),
                    )));
                }
                Some(report)
            }
            None => None,
        };
        if self.state.cutover.write_block != WriteBlock::Off {
            self.release_block(source).await?;
        }
        self.state.cutover.committed_at = Some(jiff::Timestamp::now().to_string());
        self.state.cutover.failure = None;
        self.activity = "committed".to_owned();
        self.set_phase(Phase::Committed)?;
        let report = MigrationReport::new(&self.state, report);
        if let Err(e) = report.save(&MigrationReport::path_for(&self.lockfile)) {
            tracing::warn!(error = %e, "the report could not be saved");
        }
        self.notify_once("committed").await;
        Ok(ApplyOutcome::Committed(Box::new(report)))
    }

    async fn notify_once(&mut self, event: &str) {
        if self.state.cutover.notified.iter().any(|e| e == event) {
            return;
        }
        self.notify(event, &[]).await;
        self.state.cutover.notified.push(event.to_owned());
        let _ = self.persist();
    }

    async fn notify(&self, event: &str, extra: &[(&str, String)]) {
        let Some(command) = &self.config.cutover.notify_command else {
            return;
        };
        let mut env: Vec<(&str, String)> = vec![
            ("MONGOSHIFT_PHASE", self.state.phase.to_string()),
            ("MONGOSHIFT_LINEAGE", self.state.lineage.clone()),
        ];
        if let Some(d) = &self.state.cutover.deadline {
            env.push(("MONGOSHIFT_DEADLINE", d.clone()));
        }
        env.extend(extra.iter().cloned());
        notify::notify(command, event, &self.state.migration, &env).await;
    }
}

/// A catalog change, retried after transient failures (each change tolerates having been
/// applied by an attempt whose reply was lost).
async fn apply_with_retries(
    destination: &Cluster,
    ns: &Namespace,
    change: &Change,
    ours: bool,
    backoff: Backoff,
) -> Result<(), ClusterError> {
    let what = format!("{} {ns}", change.verb());
    retry(&what, backoff, || {
        ddl::apply_change(destination, ns, change, ours)
    })
    .await
}

/// Builds the after-copy indexes; unique ones refused by documents still converging are
/// retried. Returns how many were built.
async fn build_indexes(
    destination: Cluster,
    actions: Vec<Action>,
    backoff: Backoff,
) -> Result<u64, ClusterError> {
    let namespaces: BTreeSet<&Namespace> = actions.iter().map(|a| &a.namespace).collect();
    let mut built = 0;
    for ns in namespaces {
        for action in actions.iter().filter(|a| &a.namespace == ns) {
            let mut attempt = 0;
            loop {
                let what = format!("createIndexes {ns}");
                let built_now = retry(&what, backoff, || {
                    ddl::apply_change(&destination, ns, &action.change, true)
                })
                .await;
                match built_now {
                    Ok(()) => break,
                    Err(e) if e.code() == Some(codes::DUPLICATE_KEY) && attempt < INDEX_RETRIES => {
                        tracing::info!(namespace = %ns, error = %e, "a unique index waits for changes in flight");
                        tokio::time::sleep(Duration::from_secs(2)).await;
                        attempt += 1;
                    }
                    Err(e) => return Err(e),
                }
            }
            built += 1;
        }
    }
    Ok(built)
}
