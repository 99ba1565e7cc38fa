//! `apply`: take the lock, open the change stream at T0, plan (or check a saved plan), create
//! the destination namespaces, copy while spooling changes, build indexes.
//!
//! One task owns the [`MigrationState`] (the dispatcher loop below): the copy workers and the
//! change reader report to it over channels, and it alone writes the lockfile, at every phase
//! change and every couple of seconds. A kill at any moment therefore loses seconds of work,
//! never correctness: watermarks and spool positions in the lockfile never run ahead of what
//! is durable on the destination and on disk.

use std::collections::BTreeSet;
use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use mongodb::options::{ConnectionString, HostInfo};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::copy::{CopyError, CopyJob, CopySettings, CopyUpdate, run_copy};
use super::ddl;
use super::progress::{Progress, now_secs};
use super::spool::{DEFAULT_SEGMENT_BYTES, SpoolWriter, spool_dir};
use super::stream::{self, ReaderCheckpoint, ReaderStop, StreamError};
use super::writer::write_concern;
use crate::cluster::{Cluster, ClusterError, CollectionKind, Side};
use crate::config::Config;
use crate::plan::{self, Action, Change, IndexPhase, Plan, PlanFile, Staleness};
use crate::state::lockfile::{self, StateError};
use crate::state::{
    ClusterIdentity, CopyStatus, LockError, MigrationState, NamespaceState, Phase, ResumeToken,
    StreamState, Timestamps, lock,
};

/// How often the state is written while work goes on.
const PERSIST_INTERVAL: Duration = Duration::from_secs(2);

/// How often progress is published.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(500);

/// What `apply` is asked to do.
#[derive(Debug)]
pub struct ApplyRequest {
    /// The lockfile.
    pub lockfile: PathBuf,
    /// A saved plan to apply exactly (only for a migration that has not started).
    pub plan_file: Option<PlanFile>,
    /// How long to wait for another process to release the lock.
    pub lock_timeout: Duration,
}

/// How `apply` ended.
#[derive(Debug)]
pub enum ApplyOutcome {
    /// The initial copy is complete: phase `copied`.
    Copied(Progress),
    /// The migration was already past the copy; nothing was done.
    AlreadyCopied(Progress),
    /// Stopped by an interrupt; the state is saved and `apply` resumes.
    Interrupted(Progress),
}

/// Why `apply` failed. The state is saved whenever it existed.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The lock.
    #[error(transparent)]
    Lock(#[from] LockError),
    /// The lockfile.
    #[error(transparent)]
    State(#[from] StateError),
    /// The plan has failed checks.
    #[error("the plan has {} failed check(s); run `mongoshift plan` to see them", .0.summary.errors)]
    PlanRefused(Box<Plan>),
    /// The saved plan no longer matches.
    #[error("the saved plan is stale: {}; run `mongoshift plan --out FILE` again", join(.0))]
    StalePlan(Vec<Staleness>),
    /// A saved plan was given for a migration that already started.
    #[error(
        "a migration (lineage {lineage}) is already in progress from this lockfile; run `mongoshift apply` without a plan file to resume it"
    )]
    PlanForStartedMigration {
        /// The running migration's lineage.
        lineage: String,
    },
    /// The config now describes another migration than the lockfile.
    #[error(
        "migration.toml now selects, renames or shards namespaces differently, or names other clusters, than when this migration (lineage {lineage}) started; restore it, or start over (`mongoshift destroy`, then remove {lockfile})"
    )]
    ConfigChanged {
        /// The lineage.
        lineage: String,
        /// The lockfile.
        lockfile: String,
    },
    /// A cluster failed.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// Reading changes failed.
    #[error(transparent)]
    Stream(#[from] StreamError),
    /// The copy failed.
    #[error(transparent)]
    Copy(#[from] CopyError),
    /// The spool could not be opened.
    #[error("cannot open the change spool {}: {source}", path.display())]
    Spool {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// An internal task failed unexpectedly.
    #[error("internal error: {0}")]
    Internal(String),
}

fn join(items: &[Staleness]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Fingerprint of what defines a migration: the clusters (hosts and set names, never
/// credentials or options) and which namespaces go where. Tuning, verification and cutover
/// settings may change between runs; these may not.
pub fn defining_fingerprint(config: &Config) -> String {
    let hosts = |uri: &str| -> serde_json::Value {
        match ConnectionString::parse(uri) {
            Ok(cs) => {
                let mut hosts: Vec<String> = match cs.host_info {
                    HostInfo::HostIdentifiers(h) => h
                        .iter()
                        .map(|a| a.to_string().to_ascii_lowercase())
                        .collect(),
                    HostInfo::DnsRecord(name) => vec![name.to_ascii_lowercase()],
                    _ => Vec::new(),
                };
                hosts.sort();
                serde_json::json!({ "hosts": hosts, "replica_set": cs.replica_set })
            }
            Err(_) => serde_json::Value::Null,
        }
    };
    let options = serde_json::to_value(&config.options).unwrap_or_default();
    let defining = serde_json::json!({
        "source": hosts(config.source.uri.expose_secret()),
        "destination": hosts(config.destination.uri.expose_secret()),
        "filter": options.get("filter"),
        "mapping": options.get("mapping"),
        "sharding": options.get("sharding"),
    });
    Sha256::digest(defining.to_string().as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Runs `apply` until the copy is complete, it is interrupted through `cancel`, or it fails.
pub async fn apply(
    config: &Config,
    request: ApplyRequest,
    progress: watch::Sender<Progress>,
    cancel: CancellationToken,
) -> Result<ApplyOutcome, ApplyError> {
    let lock_path = request.lockfile.clone();
    let timeout = request.lock_timeout;
    let _guard = tokio::task::spawn_blocking(move || lock::acquire(&lock_path, "apply", timeout))
        .await
        .map_err(|e| ApplyError::Internal(e.to_string()))??;

    let existing = lockfile::load(&request.lockfile)?;
    if let Some(state) = &existing {
        if state.config_fingerprint != defining_fingerprint(config) {
            return Err(ApplyError::ConfigChanged {
                lineage: state.lineage.clone(),
                lockfile: request.lockfile.display().to_string(),
            });
        }
        if request.plan_file.is_some() {
            return Err(ApplyError::PlanForStartedMigration {
                lineage: state.lineage.clone(),
            });
        }
        if state.phase >= Phase::Copied {
            return Ok(ApplyOutcome::AlreadyCopied(Progress::from_state(
                state,
                "copy complete",
                now_secs(),
            )));
        }
    }

    let source = Cluster::connect(Side::Source, &config.source).await?;
    let destination = Cluster::connect(Side::Destination, &config.destination).await?;

    // T0 comes first: the stream is open before the source catalog is read, so every change
    // after the snapshot below is in the stream.
    let resume = existing
        .as_ref()
        .and_then(|s| s.stream.resume_token.clone());
    let change_stream = stream::open(&source, resume.as_ref()).await?;
    let start_token = stream::current_token(&change_stream).ok_or_else(|| {
        ApplyError::Cluster(source.invalid_reply(
            "aggregate $changeStream",
            "the change stream returned no resume token",
        ))
    })?;

    let owned = existing
        .as_ref()
        .map(MigrationState::owned)
        .unwrap_or_default();
    let refreshed = plan::refresh_with(config, Ok(&source), Ok(&destination), &owned).await;
    if !refreshed.plan.is_valid() {
        return Err(ApplyError::PlanRefused(Box::new(refreshed.plan)));
    }
    let actions = match &request.plan_file {
        Some(file) => {
            let current = refreshed.fingerprints(config).ok_or_else(|| {
                ApplyError::Internal("a cluster could not be inspected".to_owned())
            })?;
            let stale = file.staleness(&current);
            if !stale.is_empty() {
                return Err(ApplyError::StalePlan(stale));
            }
            file.plan.actions.clone()
        }
        None => refreshed.plan.actions.clone(),
    };

    let state = match existing {
        Some(state) => state,
        None => new_state(config, &refreshed.plan, start_token),
    };
    let mut engine = Engine {
        config,
        lockfile: request.lockfile.clone(),
        state,
        progress,
        activity: "preparing".to_owned(),
        last_persist: Instant::now(),
        dirty: true,
    };
    engine.add_namespaces(&actions);
    engine.persist()?;

    engine.prepare(&destination, &actions).await?;
    if engine.state.phase < Phase::Copying {
        engine.state.phase = Phase::Copying;
        engine.state.timestamps.copy_started = Some(jiff::Timestamp::now().to_string());
        engine.persist()?;
    }
    engine
        .copy_phase(source, destination, change_stream, &actions, cancel)
        .await
}

fn new_state(config: &Config, plan: &Plan, start_token: ResumeToken) -> MigrationState {
    let identity = |summary: &Option<plan::model::ClusterSummary>| {
        summary.as_ref().map_or_else(
            || ClusterIdentity {
                uri: String::new(),
                topology: String::new(),
                version: String::new(),
            },
            |s| ClusterIdentity {
                uri: s.uri.clone(),
                topology: s.topology.clone(),
                version: s.version.clone(),
            },
        )
    };
    let t0 = start_token.cluster_time();
    MigrationState {
        format_version: crate::state::LOCKFILE_FORMAT_VERSION,
        tool_version: String::new(),
        lineage: bson::Uuid::new().to_string(),
        serial: 0,
        migration: config.name.clone(),
        config_fingerprint: defining_fingerprint(config),
        source: identity(&plan.source),
        destination: identity(&plan.destination),
        phase: Phase::Preparing,
        start_time: t0,
        stream: StreamState {
            resume_token: Some(start_token),
            high_water: t0,
            ..StreamState::default()
        },
        dropped: Vec::new(),
        namespaces: Vec::new(),
        timestamps: Timestamps {
            started: Some(jiff::Timestamp::now().to_string()),
            ..Timestamps::default()
        },
    }
}

/// The state owner.
struct Engine<'c> {
    config: &'c Config,
    lockfile: PathBuf,
    state: MigrationState,
    progress: watch::Sender<Progress>,
    activity: String,
    last_persist: Instant,
    dirty: bool,
}

impl Engine<'_> {
    fn persist(&mut self) -> Result<(), StateError> {
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

    /// Records namespaces of the plan that the state does not know yet.
    fn add_namespaces(&mut self, actions: &[Action]) {
        for action in actions {
            let (source, kind, documents, bytes) = match &action.change {
                Change::Copy {
                    source,
                    documents,
                    bytes,
                } => (source, CollectionKind::Collection, *documents, *bytes),
                Change::CreateView { source, .. } => (source, CollectionKind::View, 0, 0),
                _ => continue,
            };
            if self.state.namespace_mut(&action.namespace).is_some() {
                continue;
            }
            self.state.namespaces.push(NamespaceState {
                source: source.clone(),
                destination: action.namespace.clone(),
                kind,
                created: false,
                indexes_built: false,
                copy: if kind == CollectionKind::View {
                    CopyStatus::NotApplicable
                } else {
                    CopyStatus::Pending
                },
                documents_estimate: documents,
                bytes_estimate: bytes,
                partitions: Vec::new(),
                duplicates: 0,
            });
        }
        self.dirty = true;
    }

    /// Drops, creates, shards and builds before-copy indexes, recording each step.
    async fn prepare(
        &mut self,
        destination: &Cluster,
        actions: &[Action],
    ) -> Result<(), ApplyError> {
        self.set_activity("creating destination namespaces");
        for action in actions {
            let ns = &action.namespace;
            match &action.change {
                Change::Drop { .. } => {
                    ddl::apply_change(destination, ns, &action.change, false).await?;
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
                    ddl::apply_change(destination, ns, &action.change, true).await?;
                }
                Change::ShardCollection { .. } => {
                    ddl::apply_change(destination, ns, &action.change, true).await?;
                }
                Change::CreateIndex {
                    phase: IndexPhase::BeforeCopy,
                    ..
                } => {
                    self.set_activity(&format!("building indexes of {ns}"));
                    ddl::apply_change(destination, ns, &action.change, true).await?;
                }
                Change::CreateIndex {
                    phase: IndexPhase::AfterCopy,
                    ..
                }
                | Change::Copy { .. } => {}
            }
        }
        if self.config.options.indexes == crate::config::model::IndexPolicy::BeforeCopy {
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
            .filter(|n| n.kind == CollectionKind::Collection && n.copy != CopyStatus::Done)
            .map(|n| CopyJob {
                source: n.source.clone(),
                destination: n.destination.clone(),
                partitions: (n.copy == CopyStatus::Copying).then(|| n.partitions.clone()),
                count: n.documents_estimate,
                size_bytes: n.bytes_estimate,
            })
            .collect()
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
            } => {
                if let Some(n) = self.state.namespace_mut(&destination) {
                    n.duplicates += duplicates;
                    if let Some(p) = n.partitions.iter_mut().find(|p| p.id == partition) {
                        p.resume_from = Some(last_id);
                        p.documents += documents;
                        p.bytes += bytes;
                    }
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
        s.spooled = c.position;
        s.resume_token = Some(c.token);
        s.high_water = c.high_water.or(s.high_water);
        s.last_event = c.last_event.or(s.last_event);
        s.events_spooled += c.events;
        s.bytes_spooled += c.bytes;
        self.dirty = true;
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
    /// persisting the state periodically.
    async fn drive<T>(
        &mut self,
        work: impl Future<Output = T>,
        checkpoints: &mut mpsc::Receiver<ReaderCheckpoint>,
        mut updates: Option<&mut mpsc::Receiver<CopyUpdate>>,
    ) -> Result<T, StateError> {
        tokio::pin!(work);
        let mut ticker = tokio::time::interval(PROGRESS_INTERVAL);
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

    async fn copy_phase(
        mut self,
        source: Cluster,
        destination: Cluster,
        change_stream: mongodb::change_stream::ChangeStream<bson::RawDocumentBuf>,
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
        let reader = tokio::spawn(stream::run_reader(
            source.clone(),
            change_stream,
            spool,
            self.config.options.filter.clone(),
            checkpoint_tx,
            stop_rx,
        ));

        let result = self
            .copy_and_index(&source, &destination, actions, &mut checkpoints, &cancel)
            .await;

        // Stop the reader and record its last checkpoint whatever happened. After a complete
        // copy it first drains every change made up to now, so the spool ends at the copy's end.
        let stop = match (&result, cancel.is_cancelled()) {
            (Ok(true), false) => match source.cluster_time().await {
                Ok(Some(now)) => ReaderStop::DrainUntil(now),
                _ => ReaderStop::Now,
            },
            _ => ReaderStop::Now,
        };
        if stop != ReaderStop::Now {
            self.set_activity("spooling the last changes");
        }
        let _ = stop_tx.send(stop);
        let reader_result = self.drive(reader, &mut checkpoints, None).await?;
        while let Ok(c) = checkpoints.try_recv() {
            self.on_checkpoint(c);
        }
        self.activity = if matches!(result, Ok(true)) {
            "copy complete"
        } else {
            "interrupted"
        }
        .to_owned();
        self.persist()?;
        match reader_result {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e.into()),
            Err(e) => {
                return Err(ApplyError::Internal(format!(
                    "the change reader failed: {e}"
                )));
            }
        }
        let finished = result?;
        let snapshot = Progress::from_state(&self.state, &self.activity, now_secs());
        Ok(if finished {
            ApplyOutcome::Copied(snapshot)
        } else {
            ApplyOutcome::Interrupted(snapshot)
        })
    }

    /// Copies and builds the after-copy indexes. `Ok(false)` when interrupted.
    async fn copy_and_index(
        &mut self,
        source: &Cluster,
        destination: &Cluster,
        actions: &[Action],
        checkpoints: &mut mpsc::Receiver<ReaderCheckpoint>,
        cancel: &CancellationToken,
    ) -> Result<bool, ApplyError> {
        let copy = &self.config.options.copy;
        let settings = CopySettings {
            parallel_collections: copy.parallel_collections as usize,
            parallel_partitions: copy.parallel_partitions as usize,
            partition_bytes: copy.partition_size.bytes(),
            batch_bytes: copy.batch_size.bytes(),
            write_concern: write_concern(&self.config.options.write_concern),
        };
        let jobs = self.copy_jobs();
        if !jobs.is_empty() {
            self.set_activity("copying");
            let (update_tx, mut updates) = mpsc::channel(1024);
            let copy_cancel = cancel.child_token();
            let work = run_copy(
                source.clone(),
                destination.clone(),
                jobs,
                settings,
                update_tx,
                copy_cancel,
            );
            let outcome = self.drive(work, checkpoints, Some(&mut updates)).await?;
            outcome?;
        }
        if cancel.is_cancelled()
            || self
                .state
                .namespaces
                .iter()
                .any(|n| n.copy == CopyStatus::Pending || n.copy == CopyStatus::Copying)
        {
            self.activity = "interrupted".to_owned();
            return Ok(false);
        }

        let pending: Vec<&Action> = actions
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
            .collect();
        let namespaces: BTreeSet<_> = pending.iter().map(|a| a.namespace.clone()).collect();
        for ns in namespaces {
            if cancel.is_cancelled() {
                self.activity = "interrupted".to_owned();
                return Ok(false);
            }
            self.set_activity(&format!("building indexes of {ns}"));
            let work = async {
                for action in pending.iter().filter(|a| a.namespace == ns) {
                    ddl::apply_change(destination, &ns, &action.change, true).await?;
                }
                Ok::<(), ClusterError>(())
            };
            self.drive(work, checkpoints, None).await??;
            if let Some(n) = self.state.namespace_mut(&ns) {
                n.indexes_built = true;
            }
            self.persist()?;
        }
        for n in &mut self.state.namespaces {
            n.indexes_built = true;
        }
        self.state.phase = Phase::Copied;
        self.state.timestamps.copy_finished = Some(jiff::Timestamp::now().to_string());
        self.activity = "copy complete".to_owned();
        self.persist()?;
        Ok(true)
    }
}
