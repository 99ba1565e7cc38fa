//! `notify_command`: tells people and systems about a migration's milestones (`ready`,
//! `window_expiring`, `committed`, `failed`). A failing command is logged, never fatal.

use std::process::Stdio;
use std::time::Duration;

use crate::config::model::NotifyCommand;

/// A command that takes longer is stopped (a hanging webhook must not hold up a cutover).
const TIMEOUT: Duration = Duration::from_secs(60);

/// Runs the command with `MONGOSHIFT_EVENT`, `MONGOSHIFT_MIGRATION` and the given extra
/// variables in its environment. Returns whether it succeeded.
pub async fn notify(
    command: &NotifyCommand,
    event: &str,
    migration: &str,
    extra: &[(&str, String)],
) -> bool {
    let mut cmd = match command {
        NotifyCommand::Shell(script) => {
            let mut c = tokio::process::Command::new("sh");
            c.arg("-c").arg(script);
            c
        }
        NotifyCommand::Argv(argv) => {
            let Some((program, args)) = argv.split_first() else {
                return false;
            };
            let mut c = tokio::process::Command::new(program);
            c.args(args);
            c
        }
    };
    cmd.env("MONGOSHIFT_EVENT", event)
        .env("MONGOSHIFT_MIGRATION", migration)
        .envs(extra.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let outcome = match cmd.spawn() {
        Ok(child) => tokio::time::timeout(TIMEOUT, child.wait_with_output()).await,
        Err(e) => {
            tracing::warn!(event, error = %e, "the notify command could not start");
            return false;
        }
    };
    match outcome {
        Ok(Ok(out)) if out.status.success() => {
            tracing::info!(event, "notify command ran");
            true
        }
        Ok(Ok(out)) => {
            tracing::warn!(event, status = %out.status, stderr = %String::from_utf8_lossy(&out.stderr), "the notify command failed");
            false
        }
        Ok(Err(e)) => {
            tracing::warn!(event, error = %e, "the notify command failed");
            false
        }
        Err(_) => {
            tracing::warn!(
                event,
                "the notify command took more than 60s and was stopped"
            );
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_command_sees_the_event_and_migration() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let script = format!(
            "echo \"$MONGOSHIFT_EVENT $MONGOSHIFT_MIGRATION $EXTRA\" > {}",
            out.display()
        );
        assert!(
            notify(
                &NotifyCommand::Shell(script),
                "ready",
                "m1",
                &[("EXTRA", "x".to_owned())]
            )
            .await
        );
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "ready m1 x\n");
        assert!(!notify(&NotifyCommand::Shell("exit 3".into()), "ready", "m1", &[]).await);
        assert!(
            !notify(
                &NotifyCommand::Argv(vec!["/nonexistent/program".into()]),
                "ready",
                "m1",
                &[]
            )
            .await
        );
    }
}
