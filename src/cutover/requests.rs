//! Requests to a running `apply` from other commands: `extend` and `abort` drop a small file
//! next to the lockfile; the running apply picks it up within a second, acts, and removes it.
//! (The lockfile itself belongs to the running apply, which rewrites it constantly.)

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// A request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "snake_case")]
pub enum Request {
    /// Move the cutover deadline later.
    Extend {
        /// By how many seconds.
        seconds: u64,
        /// Who asked.
        by: String,
    },
    /// Stop syncing, release the write block, keep the copied data.
    Abort {
        /// Who asked.
        by: String,
    },
}

/// The request file for a lockfile.
pub fn request_path(lockfile: &Path, kind: &str) -> PathBuf {
    let mut name = lockfile.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{kind}"));
    lockfile.with_file_name(name)
}

/// Leaves a request for the running apply.
pub fn submit(lockfile: &Path, request: &Request) -> std::io::Result<PathBuf> {
    let kind = match request {
        Request::Extend { .. } => "extend",
        Request::Abort { .. } => "abort",
    };
    let path = request_path(lockfile, kind);
    let text = serde_json::to_vec(request).map_err(std::io::Error::other)?;
    crate::atomic_file::write_atomic(&path, &text)?;
    Ok(path)
}

/// Takes the pending requests (removing their files), aborts first.
pub fn take(lockfile: &Path) -> Vec<Request> {
    let mut out = Vec::new();
    for kind in ["abort", "extend"] {
        let path = request_path(lockfile, kind);
        if let Ok(bytes) = std::fs::read(&path) {
            let _ = std::fs::remove_file(&path);
            match serde_json::from_slice::<Request>(&bytes) {
                Ok(r) => out.push(r),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "ignoring an unreadable request file")
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_taken_once() {
        let dir = tempfile::tempdir().unwrap();
        let lockfile = dir.path().join("migration.lock");
        submit(
            &lockfile,
            &Request::Extend {
                seconds: 60,
                by: "a".into(),
            },
        )
        .unwrap();
        submit(&lockfile, &Request::Abort { by: "b".into() }).unwrap();
        let taken = take(&lockfile);
        assert_eq!(
            taken,
            vec![
                Request::Abort { by: "b".into() },
                Request::Extend {
                    seconds: 60,
                    by: "a".into()
                }
            ]
        );
        assert!(take(&lockfile).is_empty());
    }
}
