//! `apply`: take the lock, check the lockfile against the configuration, open the change stream
//! at T0, plan (or check a saved plan), then hand over to the [`Engine`], which copies, applies
//! changes and cuts over.
//!
//! [`Engine`]: super::engine

use std::path::PathBuf;
use std::time::Duration;

use mongodb::options::{ConnectionString, HostInfo};
use sha2::{Digest, Sha256};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::applier::ApplierError;
use super::copy::CopyError;
use super::engine::Engine;
use super::progress::{Progress, now_secs};
use super::report::MigrationReport;
use super::stream::{self, StreamError};
use crate::cluster::inflight::{FenceError, RunTag, fence};
use crate::cluster::retry::{Backoff, retry};
use crate::cluster::{Cluster, ClusterError, Side};
use crate::config::Config;
use crate::plan::{self, Plan, PlanFile, Staleness};
use crate::state::lockfile::{self, StateError};
use crate::state::{
    ClusterIdentity, LockError, MigrationState, Phase, ResumeToken, StreamState, Timestamps, lock,
};
use crate::verify::VerifyError;

/// What `apply` is asked to do.
#[derive(Debug)]
pub struct ApplyRequest {
    /// The lockfile.
    pub lockfile: PathBuf,
    /// A saved plan to apply exactly (only for a migration that has not started).
    pub plan_file: Option<PlanFile>,
    /// How long to wait for another process to release the lock.
    pub lock_timeout: Duration,
    /// `--approve-cutover` was given.
    pub approve_cutover: bool,
}

/// How `apply` ended.
#[derive(Debug)]
pub enum ApplyOutcome {
    /// The migration is committed.
    Committed(Box<MigrationReport>),
    /// It was committed before; nothing was done.
    AlreadyCommitted(Box<MigrationReport>),
    /// Stopped by an interrupt; the state is saved and `apply` resumes.
    Interrupted(Progress),
    /// Stopped by `mongoshift abort`.
    Aborted(Progress),
    /// The cutover window ended without a cutover (`on_window_expiry = "stop"`).
    Expired(Progress),
    /// The cutover's verification found differences; nothing was committed.
    VerificationFailed(Box<MigrationReport>),
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
        "a migration (lineage {lineage}, phase {phase}) already exists in this lockfile; a plan file only starts a new one: run `mongoshift apply` without it to resume or inspect that migration"
    )]
    PlanForStartedMigration {
        /// The existing migration's lineage.
        lineage: String,
        /// Its phase.
        phase: Phase,
    },
    /// The config now describes another migration than the lockfile.
    #[error(
        "migration.toml now selects, renames or shards namespaces differently, or names other clusters, than when this migration (lineage {lineage}) started; restore it, or start over (`mongoshift destroy`, then apply)"
    )]
    ConfigChanged {
        /// The lineage.
        lineage: String,
    },
    /// The migration was aborted.
    #[error(
        "this migration (lineage {lineage}) was aborted; `mongoshift destroy` removes what it created so that `apply` can start over"
    )]
    Aborted {
        /// The lineage.
        lineage: String,
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
    /// Applying changes failed.
    #[error(transparent)]
    Changes(#[from] ApplierError),
    /// The cutover's verification could not run.
    #[error(transparent)]
    Verify(#[from] VerifyError),
    /// The spool could not be opened.
    #[error("cannot open the change spool {}: {source}", path.display())]
    Spool {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Documents a unique index refuses although every source change is applied.
    #[error(
        "{count} document(s) are still refused by a unique index on the destination after every source change up to the cutover was applied, e.g. {namespace} _id {id}: {reason}. The destination has a unique index or data that the source does not. The cutover is called off (source writes are unblocked; syncing resumes on the next apply): fix the destination, then approve the cutover again"
    )]
    UnresolvedConflicts {
        /// How many.
        count: usize,
        /// The first one's namespace.
        namespace: crate::namespace::Namespace,
        /// Its `_id` (relaxed Extended JSON).
        id: String,
        /// The server's message.
        reason: String,
    },
    /// A killed run's operations are still running.
    #[error(transparent)]
    EarlierRun(#[from] FenceError),
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
        "shard_like_source": options.get("shard_like_source"),
    });
    Sha256::digest(defining.to_string().as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Runs `apply` until the migration commits, is interrupted through `cancel`, stops, or fails.
pub async fn apply(
    config: &Config,
    request: ApplyRequest,
    progress: watch::Sender<Progress>,
    cancel: CancellationToken,
) -> Result<ApplyOutcome, ApplyError> {
    let lock_path = request.lockfile.clone();
    let timeout = request.lock_timeout;
    let guard = tokio::task::spawn_blocking(move || lock::acquire(&lock_path, "apply", timeout))
        .await
        .map_err(|e| ApplyError::Internal(e.to_string()))??;

    let existing = lockfile::load(&request.lockfile)?;
    if let Some(state) = &existing {
        if state.config_fingerprint != defining_fingerprint(config) {
            return Err(ApplyError::ConfigChanged {
                lineage: state.lineage.clone(),
            });
        }
        if request.plan_file.is_some() {
            return Err(ApplyError::PlanForStartedMigration {
                lineage: state.lineage.clone(),
                phase: state.phase,
            });
        }
        match state.phase {
            Phase::Committed => {
                let report = MigrationReport::new(state, None);
                return Ok(ApplyOutcome::AlreadyCommitted(Box::new(report)));
            }
            Phase::Aborted => {
                return Err(ApplyError::Aborted {
                    lineage: state.lineage.clone(),
                });
            }
            Phase::Expired if !deadline_ahead(state) => {
                return Ok(ApplyOutcome::Expired(Progress::from_state(
                    state,
                    "the cutover window expired",
                    now_secs(),
                )));
            }
            _ => {}
        }
        // Said, not refused: a fix often comes as an upgrade in the middle of a migration,
        // but which namespaces match and how changes apply may differ between versions.
        let running = crate::plan::file::TOOL_VERSION;
        if !state.tool_version.is_empty() && state.tool_version != running {
            tracing::warn!(
                saved_by = %state.tool_version,
                running,
                "this migration was last saved by another mongoshift version; it resumes, but \
                 namespace matching and change handling may differ between the two"
            );
        }
    }

    let source = Cluster::connect(Side::Source, &config.source).await?;
    let destination = Cluster::connect(Side::Destination, &config.destination).await?;

    // T0 comes first: the stream is open before the source catalog is read, so every change
    // after the snapshot below is in the stream.
    let resume = existing
        .as_ref()
        .and_then(|s| s.stream.resume_token.clone());
    let change_stream = retry(
        "open the change stream",
        Backoff::within(config.options.retry_for),
        || stream::open(&source, resume.as_ref(), config.options.update_mode),
    )
    .await?;
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

    let resumed = existing.is_some();
    let mut state = existing.unwrap_or_else(|| new_state(config, &refreshed.plan, start_token));
    // From here on every command names this run, and a resumed migration first lets the
    // writes of a killed run end (see `cluster::inflight`).
    let tag = RunTag::new(&state.lineage, &guard.holder().id);
    let source = source.tagged(tag.clone());
    let destination = destination.tagged(tag);
    if resumed {
        for cluster in [&source, &destination] {
            fence(cluster, config.options.retry_for).await?;
        }
    }
    if state.phase == Phase::Expired {
        // Extended after it expired: back to waiting for approval.
        state.phase = Phase::Ready;
    }
    if matches!(state.phase, Phase::CuttingOver | Phase::Verifying) {
        // The last run ended inside the cutover: its block was released, or (killed) may still
        // be on. Either way writes are stopped again, and the drain starts afresh.
        state.phase = Phase::CuttingOver;
        state.cutover.final_time = None;
        if state.cutover.write_block != crate::state::WriteBlock::Off {
            state.cutover.write_block = crate::state::WriteBlock::Requested;
        }
    }
    let mut engine = Engine::new(
        config,
        request.lockfile.clone(),
        state,
        progress,
        request.approve_cutover,
    );
    engine.add_namespaces(&actions);
    engine.persist()?;
    if engine.state.phase < Phase::Copying {
        engine.prepare(&source, &destination, &actions).await?;
    }
    engine
        .run(source, destination, change_stream, &actions, cancel)
        .await
}

fn deadline_ahead(state: &MigrationState) -> bool {
    state
        .cutover
        .deadline
        .as_deref()
        .and_then(|d| d.parse::<jiff::Timestamp>().ok())
        .is_some_and(|d| d > jiff::Timestamp::now())
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
        sync: Default::default(),
        cutover: Default::default(),
        indexes_created: 0,
    }
}
