//! One `apply` at a time: an exclusive OS lock on `migration.lock.holder`, which also records who
//! holds it (host, pid, start time, id).
//!
//! The OS lock (`flock` on Unix) is released by the kernel when its holder dies, so on one
//! host a crashed `apply` never blocks the next. The holder record survives a crash: when the
//! lock is free but the record names another host (a lockfile on shared storage), the other
//! process may still be running there, so the lock is refused until an operator runs
//! `mongoshift unlock ID`.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// Who holds (or last held) the lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    /// A random id, for `mongoshift unlock ID`.
    pub id: String,
    /// The host name.
    pub host: String,
    /// The process id.
    pub pid: u32,
    /// When it took the lock (RFC 3339).
    pub since: String,
    /// What it runs (`apply`, `destroy`, ...).
    pub command: String,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "`mongoshift {}` (pid {} on {}, since {}, lock id {})",
            self.command, self.pid, self.host, self.since, self.id
        )
    }
}

/// Why the lock could not be taken or cleared.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds it.
    #[error("the migration is locked by {}", describe(holder.as_ref().as_ref()))]
    Held {
        /// The holder, when its record could be read.
        holder: Box<Option<Holder>>,
        /// True when the holder runs on another host and may be gone (then `unlock` is safe).
        other_host: bool,
    },
    /// `unlock` named an id that is not the holder's.
    #[error("lock id {given} does not match the recorded holder {holder}")]
    WrongId {
        /// The id given.
        given: String,
        /// The recorded holder.
        holder: Box<Holder>,
    },
    /// `unlock` while the holder is running.
    #[error(
        "the lock is held by a running process: {holder}; stop it (Ctrl-C) instead of unlocking"
    )]
    StillRunning {
        /// The holder, when readable.
        holder: Box<Holder>,
    },
    /// `unlock` with nothing to clear.
    #[error("there is no lock to clear")]
    NotLocked,
    /// A file-system error.
    #[error("cannot use the lock file {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

fn describe(holder: Option<&Holder>) -> String {
    holder.map_or_else(
        || "another process (its record is being written)".to_owned(),
        ToString::to_string,
    )
}

/// The lock's file for a lockfile path.
pub fn holder_path(lockfile: &Path) -> PathBuf {
    let mut name = lockfile.file_name().unwrap_or_default().to_os_string();
    name.push(".holder");
    lockfile.with_file_name(name)
}

/// A held lock; dropping it clears the record and releases the lock.
#[derive(Debug)]
pub struct LockGuard {
    file: File,
    path: PathBuf,
    holder: Holder,
}

impl LockGuard {
    /// This process's holder record.
    pub fn holder(&self) -> &Holder {
        &self.holder
    }

    /// The holder file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        // A clean exit leaves no record; the OS releases the lock when the file closes.
        let _ = self.file.set_len(0);
        let _ = self.file.sync_all();
        let _ = self.file.unlock();
    }
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> LockError + '_ {
    move |source| LockError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// This machine's name.
pub fn host_name() -> String {
    gethostname::gethostname().to_string_lossy().into_owned()
}

fn open(path: &Path) -> Result<File, LockError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(io_err(path))
}

fn read_record(file: &mut File) -> Option<Holder> {
    let mut text = String::new();
    file.seek(SeekFrom::Start(0)).ok()?;
    file.read_to_string(&mut text).ok()?;
    serde_json::from_str(&text).ok()
}

/// Reads the holder record without taking the lock (for `status`).
pub fn read_holder(lockfile: &Path) -> Option<Holder> {
    let mut file = File::open(holder_path(lockfile)).ok()?;
    read_record(&mut file)
}

/// Takes the lock, waiting up to `timeout` for another holder to finish.
pub fn acquire(lockfile: &Path, command: &str, timeout: Duration) -> Result<LockGuard, LockError> {
    let path = holder_path(lockfile);
    let mut file = open(&path)?;
    let deadline = Instant::now() + timeout;
    loop {
        match file.try_lock() {
            Ok(()) => break,
            Err(TryLockError::WouldBlock) => {
                if Instant::now() >= deadline {
                    return Err(LockError::Held {
                        holder: Box::new(read_record(&mut file)),
                        other_host: false,
                    });
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(TryLockError::Error(e)) => return Err(io_err(&path)(e)),
        }
    }
    let host = host_name();
    if let Some(previous) = read_record(&mut file) {
        if previous.host != host {
            let _ = file.unlock();
            return Err(LockError::Held {
                holder: Box::new(Some(previous)),
                other_host: true,
            });
        }
        // Same host and the OS lock was free: the previous holder died without cleaning up.
        tracing::warn!(previous = %previous, "taking over a stale lock whose holder is no longer running");
    }
    let holder = Holder {
        id: bson::Uuid::new().to_string(),
        host,
        pid: std::process::id(),
        since: jiff::Timestamp::now().to_string(),
        command: command.to_owned(),
    };
    let record =
        serde_json::to_vec(&holder).map_err(|e| io_err(&path)(std::io::Error::other(e)))?;
    file.set_len(0).map_err(io_err(&path))?;
    file.seek(SeekFrom::Start(0)).map_err(io_err(&path))?;
    file.write_all(&record).map_err(io_err(&path))?;
    file.sync_all().map_err(io_err(&path))?;
    Ok(LockGuard { file, path, holder })
}

/// Clears the record of a holder that is gone (`mongoshift unlock ID`).
pub fn unlock(lockfile: &Path, id: &str) -> Result<Holder, LockError> {
    let path = holder_path(lockfile);
    if !path.exists() {
        return Err(LockError::NotLocked);
    }
    let mut file = open(&path)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            return match read_record(&mut file) {
                Some(holder) => Err(LockError::StillRunning {
                    holder: Box::new(holder),
                }),
                None => Err(LockError::Held {
                    holder: Box::new(None),
                    other_host: false,
                }),
            };
        }
        Err(TryLockError::Error(e)) => return Err(io_err(&path)(e)),
    }
    let result = match read_record(&mut file) {
        None => Err(LockError::NotLocked),
        Some(holder) if holder.id != id => Err(LockError::WrongId {
            given: id.to_owned(),
            holder: Box::new(holder),
        }),
        Some(holder) => {
            file.set_len(0).map_err(io_err(&path))?;
            file.sync_all().map_err(io_err(&path))?;
            Ok(holder)
        }
    };
    let _ = file.unlock();
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_holder_is_refused_with_the_first_named() {
        let dir = tempfile::tempdir().unwrap();
        let lockfile = dir.path().join("migration.lock");
        let first = acquire(&lockfile, "apply", Duration::ZERO).unwrap();
        match acquire(&lockfile, "apply", Duration::from_millis(300)) {
            Err(LockError::Held {
                holder,
                other_host: false,
            }) => {
                assert_eq!(holder.as_ref().as_ref(), Some(first.holder()));
            }
            other => panic!("expected Held, got {other:?}"),
        }
        assert_eq!(read_holder(&lockfile).as_ref(), Some(first.holder()));
        drop(first);
        assert_eq!(
            read_holder(&lockfile),
            None,
            "a clean release leaves no record"
        );
        acquire(&lockfile, "apply", Duration::ZERO).unwrap();
    }

    #[test]
    fn a_crashed_holder_on_this_host_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let lockfile = dir.path().join("migration.lock");
        let stale = Holder {
            id: "old".into(),
            host: host_name(),
            pid: 1,
            since: "2026-01-01T00:00:00Z".into(),
            command: "apply".into(),
        };
        std::fs::write(holder_path(&lockfile), serde_json::to_vec(&stale).unwrap()).unwrap();
        let guard = acquire(&lockfile, "apply", Duration::ZERO).unwrap();
        assert_ne!(guard.holder().id, "old");
    }

    #[test]
    fn a_holder_on_another_host_needs_unlock() {
        let dir = tempfile::tempdir().unwrap();
        let lockfile = dir.path().join("migration.lock");
        let remote = Holder {
            id: "remote-id".into(),
            host: "elsewhere.example.net".into(),
            pid: 4242,
            since: "2026-01-01T00:00:00Z".into(),
            command: "apply".into(),
        };
        std::fs::write(holder_path(&lockfile), serde_json::to_vec(&remote).unwrap()).unwrap();
        assert!(matches!(
            acquire(&lockfile, "apply", Duration::ZERO),
            Err(LockError::Held {
                other_host: true,
                ..
            })
        ));
        assert!(matches!(
            unlock(&lockfile, "wrong"),
            Err(LockError::WrongId { .. })
        ));
        assert_eq!(unlock(&lockfile, "remote-id").unwrap(), remote);
        assert!(matches!(
            unlock(&lockfile, "remote-id"),
            Err(LockError::NotLocked)
        ));
        acquire(&lockfile, "apply", Duration::ZERO).unwrap();
    }

    #[test]
    fn unlock_refuses_while_the_holder_runs() {
        let dir = tempfile::tempdir().unwrap();
        let lockfile = dir.path().join("migration.lock");
        let guard = acquire(&lockfile, "apply", Duration::ZERO).unwrap();
        let id = guard.holder().id.clone();
        assert!(matches!(
            unlock(&lockfile, &id),
            Err(LockError::StillRunning { .. })
        ));
    }
}
