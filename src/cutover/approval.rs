//! Cutover approval: the approval file (written by `mongoshift cutover` or any automation), the
//! `--approve-cutover` flag, or `auto`.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::config::model::ApprovalPolicy;
use crate::state::Approval;

/// What `mongoshift cutover` writes into the approval file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalRecord {
    /// Who approved (`user@host`).
    pub approved_by: String,
    /// When (RFC 3339).
    pub approved_at: String,
}

/// The user running this process, as `user@host`.
pub fn current_user() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".to_owned());
    format!("{user}@{}", crate::state::lock::host_name())
}

/// Writes the approval file (atomically, so a running apply never reads half of it).
pub fn write_approval_file(path: &Path) -> std::io::Result<ApprovalRecord> {
    let record = ApprovalRecord {
        approved_by: current_user(),
        approved_at: jiff::Timestamp::now().to_string(),
    };
    let mut text = serde_json::to_vec_pretty(&record).map_err(std::io::Error::other)?;
    text.push(b'\n');
    crate::atomic_file::write_atomic(path, &text)?;
    Ok(record)
}

/// The approval, when it has been given. An approval file that cannot be read for any reason
/// but its absence (a directory, no permission) is an error, not "not approved": the user who wrote it would
/// otherwise wait for a cutover that never comes without being told why.
pub fn check(policy: ApprovalPolicy, file: &Path, flag: bool) -> std::io::Result<Option<Approval>> {
    let now = || jiff::Timestamp::now().to_string();
    Ok(match policy {
        ApprovalPolicy::Auto => Some(Approval {
            via: "auto".to_owned(),
            by: "approval = \"auto\"".to_owned(),
            at: now(),
        }),
        ApprovalPolicy::Flag => flag.then(|| Approval {
            via: "flag".to_owned(),
            by: current_user(),
            at: now(),
        }),
        ApprovalPolicy::File => {
            let text = match std::fs::read(file) {
                Ok(text) => text,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(e),
            };
            // Any file approves; one written by `mongoshift cutover` also says who and when.
            let record = serde_json::from_slice::<ApprovalRecord>(&text).ok();
            Some(Approval {
                via: "file".to_owned(),
                by: record.as_ref().map_or_else(
                    || format!("the approval file {}", file.display()),
                    |r| r.approved_by.clone(),
                ),
                at: record.map_or_else(now, |r| r.approved_at),
            })
        }
    })
}

/// Removes the approval file of a cutover that was called off, so that the next `apply` needs
/// a new approval. Already gone is fine.
pub fn withdraw(file: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(file) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_policy_approves_its_own_way() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("cutover.approved");
        let check = |policy, file: &Path, flag| check(policy, file, flag).unwrap();
        assert!(
            check(ApprovalPolicy::File, &file, true).is_none(),
            "the flag does not approve a file policy"
        );
        let record = write_approval_file(&file).unwrap();
        let approval = check(ApprovalPolicy::File, &file, false).unwrap();
        assert_eq!(
            (approval.via.as_str(), approval.by.as_str()),
            ("file", record.approved_by.as_str())
        );
        std::fs::write(&file, "yes").unwrap();
        assert!(
            check(ApprovalPolicy::File, &file, false)
                .unwrap()
                .by
                .contains("approval file")
        );
        assert!(check(ApprovalPolicy::Flag, &file, false).is_none());
        assert_eq!(
            check(ApprovalPolicy::Flag, &file, true).unwrap().via,
            "flag"
        );
        assert_eq!(
            check(ApprovalPolicy::Auto, &file, false).unwrap().via,
            "auto"
        );
    }

    #[test]
    fn an_unreadable_approval_file_is_an_error_and_withdrawing_a_missing_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("cutover.approved");
        withdraw(&file).unwrap();
        write_approval_file(&file).unwrap();
        withdraw(&file).unwrap();
        assert!(!file.exists());
        // A directory where the file should be can be neither read nor removed as a file.
        std::fs::create_dir(&file).unwrap();
        assert!(check(ApprovalPolicy::File, &file, false).is_err());
        assert!(withdraw(&file).is_err());
        // Other policies never look at the file.
        assert!(check(ApprovalPolicy::Auto, &file, false).unwrap().is_some());
    }
}
