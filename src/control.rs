//! Acting on a migration from outside `apply`: approving the cutover, extending the window,
//! aborting, and destroying what a migration created.
//!
//! While an `apply` runs it owns the lockfile, so `extend` and `abort` leave it a request
//! (see [`crate::cutover::requests`]) and wait for it to act; when none runs they take the lock
//! and change the lockfile themselves.

use std::fs::TryLockError;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::cluster::inflight::{RunTag, fence};
use crate::cluster::{Cluster, ClusterError, Side};
use crate::config::Config;
use crate::cutover::{approval, block, requests};
use crate::namespace::Namespace;
use crate::state::lockfile::{self, StateError};
use crate::state::{LockError, MigrationState, Phase, WriteBlock, lock};
use crate::sync::{ddl, spool};

/// How long `extend` and `abort` wait for a running apply to act on their request.
const REQUEST_WAIT: Duration = Duration::from_secs(30);

/// Why a control command failed.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The lock.
    #[error(transparent)]
    Lock(#[from] LockError),
    /// The lockfile.
    #[error(transparent)]
    State(#[from] StateError),
    /// A cluster.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// A killed run's operations are still running.
    #[error(transparent)]
    EarlierRun(#[from] crate::cluster::inflight::FenceError),
    /// No migration has started.
    #[error("no migration has started here: {} does not exist", .0.display())]
    NoMigration(PathBuf),
    /// The request was not picked up in time.
    #[error("the running apply did not act on the request within 30 seconds; it is still waiting in {}", .0.display())]
    NotPickedUp(PathBuf),
    /// Not possible in this phase.
    #[error("{0}")]
    WrongPhase(String),
    /// A file could not be written or removed.
    #[error("cannot write {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> ControlError + '_ {
    move |source| ControlError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// True when an apply holds the lock right now.
pub fn apply_running(lockfile: &Path) -> bool {
    let Ok(file) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(lock::holder_path(lockfile))
    else {
        return false;
    };
    match file.try_lock() {
        Ok(()) => {
            let _ = file.unlock();
            false
        }
        Err(TryLockError::WouldBlock) => true,
        Err(TryLockError::Error(_)) => false,
    }
}

fn load(lockfile: &Path) -> Result<MigrationState, ControlError> {
    lockfile::load(lockfile)?.ok_or_else(|| ControlError::NoMigration(lockfile.to_path_buf()))
}

/// `mongoshift cutover`: writes the approval file the configuration names.
pub fn approve(config: &Config) -> Result<approval::ApprovalRecord, ControlError> {
    let path = &config.cutover.approval_file;
    approval::write_approval_file(path).map_err(io(path))
}

/// Moves the cutover deadline `by` later; returns the new deadline.
pub fn extend(lockfile: &Path, by: Duration) -> Result<String, ControlError> {
    let seconds = by.as_secs();
    if apply_running(lockfile) {
        let before = load(lockfile)?.cutover.deadline;
        let path = requests::submit(
            lockfile,
            &requests::Request::Extend {
                seconds,
                by: approval::current_user(),
            },
        )
        .map_err(io(lockfile))?;
        wait_for(&path, || Ok(load(lockfile)?.cutover.deadline != before))?;
        return load(lockfile)?
            .cutover
            .deadline
            .ok_or_else(|| ControlError::WrongPhase("the window has no deadline".to_owned()));
    }
    let _guard = lock::acquire(lockfile, "extend", Duration::ZERO)?;
    let mut state = load(lockfile)?;
    let Some(deadline) = state
        .cutover
        .deadline
        .as_deref()
        .and_then(|d| d.parse::<jiff::Timestamp>().ok())
    else {
        return Err(ControlError::WrongPhase(format!(
            "the migration is in phase {}: the cutover window starts when it is ready",
            state.phase
        )));
    };
    // An expired window is extended from now, not from its old end.
    let base = deadline.max(jiff::Timestamp::now());
    let new = base + jiff::SignedDuration::from_secs(i64::try_from(seconds).unwrap_or(i64::MAX));
    state.cutover.deadline = Some(new.to_string());
    state.cutover.extensions.push(seconds);
    state.cutover.notified.retain(|e| e != "window_expiring");
    lockfile::save(lockfile, &mut state)?;
    Ok(new.to_string())
}

/// What `abort` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AbortOutcome {
    /// The running apply stopped.
    RunningApplyStopped,
    /// The migration was marked aborted (and any write block released).
    Aborted {
        /// True when a write block was released.
        released_write_block: bool,
    },
}

/// `mongoshift abort`: stop syncing, release any write block, keep the copied data.
pub async fn abort(config: &Config, lockfile: &Path) -> Result<AbortOutcome, ControlError> {
    if apply_running(lockfile) {
        let path = requests::submit(
            lockfile,
            &requests::Request::Abort {
                by: approval::current_user(),
            },
        )
        .map_err(io(lockfile))?;
        wait_for(&path, || Ok(load(lockfile)?.phase == Phase::Aborted))?;
        return Ok(AbortOutcome::RunningApplyStopped);
    }
    let lock_path = lockfile.to_path_buf();
    let guard =
        tokio::task::spawn_blocking(move || lock::acquire(&lock_path, "abort", Duration::ZERO))
            .await
            .map_err(|e| ControlError::WrongPhase(format!("internal error: {e}")))??;
    let mut state = load(lockfile)?;
    if state.phase == Phase::Committed {
        return Err(ControlError::WrongPhase(
            "the migration is committed; there is nothing to abort".to_owned(),
        ));
    }
    let released = state.cutover.write_block != WriteBlock::Off;
    if released {
        // A killed apply's block command may still be running: it must not land after the
        // release and leave the source blocked.
        let tag = RunTag::new(&state.lineage, &guard.holder().id);
        let source = Cluster::connect(Side::Source, &config.source)
            .await?
            .tagged(tag);
        fence(&source, config.options.retry_for).await?;
        block::release(&source).await?;
        state.cutover.write_block = WriteBlock::Off;
    }
    state.phase = Phase::Aborted;
    lockfile::save(lockfile, &mut state)?;
    Ok(AbortOutcome::Aborted {
        released_write_block: released,
    })
}

fn wait_for(
    request: &Path,
    mut done: impl FnMut() -> Result<bool, ControlError>,
) -> Result<(), ControlError> {
    let start = Instant::now();
    while start.elapsed() < REQUEST_WAIT {
        if !request.exists() && done()? {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(ControlError::NotPickedUp(request.to_path_buf()))
}

/// What `destroy` would drop, or dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DestroyPlan {
    /// Destination namespaces this migration created.
    pub namespaces: Vec<Namespace>,
    /// Where the lockfile is kept after destroy.
    pub archived_lockfile: PathBuf,
}

/// The namespaces `destroy` would drop, refusing while an apply runs.
pub fn destroy_plan(lockfile: &Path) -> Result<DestroyPlan, ControlError> {
    if apply_running(lockfile) {
        return Err(ControlError::Lock(LockError::Held {
            holder: Box::new(lock::read_holder(lockfile)),
            other_host: false,
        }));
    }
    destroy_plan_locked(lockfile)
}

fn archived_path(lockfile: &Path, lineage: &str) -> PathBuf {
    let mut name = lockfile.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".destroyed-{lineage}"));
    lockfile.with_file_name(name)
}

/// `mongoshift destroy`: drops on the destination exactly what this migration created, releases
/// any write block, and moves the lockfile aside so the next `apply` starts afresh.
pub async fn destroy(config: &Config, lockfile: &Path) -> Result<DestroyPlan, ControlError> {
    let lock_path = lockfile.to_path_buf();
    let guard =
        tokio::task::spawn_blocking(move || lock::acquire(&lock_path, "destroy", Duration::ZERO))
            .await
            .map_err(|e| ControlError::WrongPhase(format!("internal error: {e}")))??;
    let plan = destroy_plan_locked(lockfile)?;
    let mut state = load(lockfile)?;
    // A killed apply's last writes must not land after the drops (an insert would recreate
    // the collection): tag this run and wait for them.
    let tag = RunTag::new(&state.lineage, &guard.holder().id);
    let limit = config.options.retry_for;
    if state.cutover.write_block != WriteBlock::Off {
        let source = Cluster::connect(Side::Source, &config.source)
            .await?
            .tagged(tag.clone());
        fence(&source, limit).await?;
        block::release(&source).await?;
        state.cutover.write_block = WriteBlock::Off;
        lockfile::save(lockfile, &mut state)?;
    }
    let destination = Cluster::connect(Side::Destination, &config.destination)
        .await?
        .tagged(tag);
    fence(&destination, limit).await?;
    for ns in &plan.namespaces {
        ddl::drop_namespace(&destination, ns).await?;
        if let Some(n) = state.namespace_mut(ns) {
            n.created = false;
        }
        // Recorded one by one: an interrupted destroy resumes where it stopped.
        lockfile::save(lockfile, &mut state)?;
    }
    std::fs::rename(lockfile, &plan.archived_lockfile).map_err(io(lockfile))?;
    let _ = std::fs::remove_file(lockfile::backup_path(lockfile));
    let spool = spool::spool_dir(lockfile);
    if spool.exists() {
        std::fs::remove_dir_all(&spool).map_err(io(&spool))?;
    }
    let _ = std::fs::remove_file(crate::verify::checkpoint_path(lockfile));
    drop(guard);
    Ok(plan)
}

fn destroy_plan_locked(lockfile: &Path) -> Result<DestroyPlan, ControlError> {
    let state = load(lockfile)?;
    // Sorted; includes what a DDL event interrupted by a crash may have created.
    let namespaces: Vec<Namespace> = state.owned().into_iter().collect();
    Ok(DestroyPlan {
        namespaces,
        archived_lockfile: archived_path(lockfile, &state.lineage),
    })
}
