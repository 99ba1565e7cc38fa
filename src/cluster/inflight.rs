//! Writes of an earlier run that may still be running on the destination.
//!
//! A killed `apply` leaves its last commands running on the server: mongod finishes a command
//! whose client went away. If a resumed run wrote the same documents first, such a late write
//! would put an older version of a document back (or recreate one that was deleted). So every
//! destination command of a run carries `comment: {mongoshift: <lineage>, run: <lock id>}`,
//! and a run that resumes a migration first waits until no operation of another run of the
//! same migration is in progress, asking the server to end them (`killOp`) to shorten the wait.
//!
//! The same can happen within a run: a command whose connection fails may still run on the
//! server, and the retry that follows could be overtaken by it. So the comment also numbers
//! the command (`op`), and a tagged command that fails without a reply waits until the server
//! no longer lists it before it reports the failure (and is retried).
//!
//! Server behaviours relied on: every command accepts `comment` and `$currentOp` shows it in
//! the operation's `command`, also when `truncateOps` shortens a large command to `$truncated`
//! (SERVER-27439); a mongos
//! lists its shards' operations by default and passes a write's `comment` on to them (4.4+);
//! a user sees their own operations without `inprog` (`allUsers: false`) and may kill them
//! without `killop`; an operation that is no longer listed has ended.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use bson::{Bson, Document, RawDocumentBuf, doc, rawdoc};
use futures_util::TryStreamExt;
use mongodb::error::ErrorKind;
use mongodb::options::{ReadPreference, SelectionCriteria};

use super::{Cluster, ClusterError, codes};

/// How often the wait looks again.
const POLL: Duration = Duration::from_millis(200);

/// How long after an empty first look the fence looks once more.
const ARRIVAL_GRACE: Duration = Duration::from_millis(500);

/// How long one listing may take (it runs while a retry waits).
const LIST_TIMEOUT: Duration = Duration::from_secs(5);

/// What a run's commands are tagged with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunTag {
    /// The migration's lineage (fixed at its first apply).
    pub lineage: String,
    /// This run's lock id.
    pub run: String,
}

impl RunTag {
    /// The tag of run `run` (a lock id) of the migration `lineage`.
    pub fn new(lineage: &str, run: &str) -> Self {
        Self {
            lineage: lineage.to_owned(),
            run: run.to_owned(),
        }
    }

    /// The tag as a command's `comment`.
    pub fn document(&self) -> Document {
        doc! { "mongoshift": &self.lineage, "run": &self.run }
    }

    /// The same, raw.
    pub fn raw(&self) -> RawDocumentBuf {
        rawdoc! { "mongoshift": self.lineage.as_str(), "run": self.run.as_str() }
    }
}

/// A run's tag with its command counter (what a tagged [`Cluster`] holds).
#[derive(Debug)]
pub struct Tagging {
    tag: RunTag,
    next: AtomicI64,
}

impl Tagging {
    /// Starts numbering commands at 1.
    pub fn new(tag: RunTag) -> Self {
        Self {
            tag,
            next: AtomicI64::new(1),
        }
    }

    /// The tag.
    pub fn tag(&self) -> &RunTag {
        &self.tag
    }

    /// The next command's number and `comment`.
    pub fn next_comment(&self) -> (i64, Document) {
        let op = self.next.fetch_add(1, Ordering::Relaxed);
        let mut d = self.tag.document();
        d.insert("op", op);
        (op, d)
    }

    /// The same, raw.
    pub fn next_raw_comment(&self) -> (i64, RawDocumentBuf) {
        let op = self.next.fetch_add(1, Ordering::Relaxed);
        let mut d = self.tag.raw();
        d.append(bson::cstr!("op"), op);
        (op, d)
    }
}

/// How long a command whose fate is unknown is waited for before its failure is reported
/// anyway (a server that lists nothing for that long has lost or ended it).
const SETTLE_LIMIT: Duration = Duration::from_secs(30);

/// After `error` on the tagged command `op`: when the error leaves open whether the server
/// still runs the command (the connection failed), waits until `$currentOp` no longer lists
/// it, so that a retry cannot be overtaken by it.
pub async fn settle_if_unknown(cluster: &Cluster, op: i64, error: &mongodb::error::Error) {
    if outcome_unknown(error) {
        settle(cluster, op, SETTLE_LIMIT).await;
    }
}

/// True when the command may still be running: no reply came back.
fn outcome_unknown(error: &mongodb::error::Error) -> bool {
    matches!(
        *error.kind,
        ErrorKind::Io(_) | ErrorKind::ConnectionPoolCleared { .. }
    )
}

/// Waits (up to `limit`) until the tagged command `op` of this run is no longer in progress.
/// An unreachable server is asked again until the limit; the caller's retry then goes ahead.
pub async fn settle(cluster: &Cluster, op: i64, limit: Duration) {
    let Some(tag) = cluster.tag() else {
        return;
    };
    let started = Instant::now();
    let filter = doc! {
        "command.comment.mongoshift": &tag.lineage,
        "command.comment.run": &tag.run,
        "command.comment.op": op,
    };
    loop {
        match operations(cluster, filter.clone()).await {
            Ok(running) if running.is_empty() => return,
            Ok(_) => tracing::debug!(op, "a failed command still runs on the server; waiting"),
            Err(e) if !e.is_transient() => {
                // This server will not say (privileges, a restricted tier): waiting cannot help.
                tracing::debug!(op, error = %e, "cannot list the server's operations");
                return;
            }
            Err(e) => tracing::debug!(op, error = %e, "cannot list the server's operations yet"),
        }
        if started.elapsed() >= limit {
            tracing::warn!(
                side = %cluster.side(),
                op,
                "a command whose connection failed could not be seen to end; retrying it anyway"
            );
            return;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// An operation of an earlier run, as `$currentOp` lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct InProgress {
    /// `opid` (a number on a replica set, `"shard:number"` through a mongos).
    pub opid: Bson,
    /// `op` (`insert`, `update`, `remove`, `command`, ...).
    pub op: String,
    /// `ns`.
    pub ns: String,
}

impl std::fmt::Display for InProgress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "opid {} ({} on {})", self.opid, self.op, self.ns)
    }
}

/// How the wait for earlier runs ended.
#[derive(Debug, PartialEq)]
pub enum Fence {
    /// No operation of another run is in progress; `waited_for` were found and have ended.
    Clear {
        /// Operations that were running when the wait began.
        waited_for: usize,
    },
    /// The destination would not list its operations (the reason); nothing is known.
    Unchecked(String),
}

/// Why the wait failed.
#[derive(Debug, thiserror::Error)]
pub enum FenceError {
    /// Operations of an earlier run outlived the wait.
    #[error(
        "{} operation(s) of an earlier, killed run of this migration are still running on the destination after {}s: {}. Run the command again once they have ended (or end them with db.killOp)",
        operations.len(),
        waited.as_secs(),
        operations.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
    )]
    StillRunning {
        /// How long it waited.
        waited: Duration,
        /// What still runs.
        operations: Vec<InProgress>,
    },
}

/// Waits for a killed run's operations on `cluster` to end; a cluster that will not list its
/// operations is reported and passed.
pub async fn fence(cluster: &Cluster, limit: Duration) -> Result<(), FenceError> {
    match await_earlier_runs(cluster, limit).await? {
        Fence::Clear { waited_for: 0 } => {}
        Fence::Clear { waited_for } => {
            tracing::info!(side = %cluster.side(), operations = waited_for, "the earlier run's operations have ended");
        }
        Fence::Unchecked(reason) => tracing::warn!(
            side = %cluster.side(),
            reason = %reason,
            "cannot list the operations in progress, so a write of an earlier, killed run may still be under way; if one was killed moments ago, verify after the cutover"
        ),
    }
    Ok(())
}

/// Waits (up to `limit`) until no operation tagged with the cluster's lineage but another run
/// is in progress on it, killing those it finds. A cluster handle without a tag has nothing to
/// wait for.
pub async fn await_earlier_runs(cluster: &Cluster, limit: Duration) -> Result<Fence, FenceError> {
    let Some(tag) = cluster.tag() else {
        return Ok(Fence::Clear { waited_for: 0 });
    };
    let started = Instant::now();
    // Twice, a moment apart: a dead client's last command can still be on its way in.
    let mut first = Vec::new();
    for look in 0..2 {
        if look > 0 {
            tokio::time::sleep(ARRIVAL_GRACE).await;
        }
        match earlier_operations(cluster, tag).await {
            Ok(ops) if !ops.is_empty() => {
                first = ops;
                break;
            }
            Ok(_) => {}
            Err(e) => return Ok(Fence::Unchecked(e.to_string())),
        }
    }
    if first.is_empty() {
        return Ok(Fence::Clear { waited_for: 0 });
    }
    tracing::warn!(
        operations = %first.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "),
        "operations of an earlier, killed run are still running on the destination; ending them and waiting before writing"
    );
    for op in &first {
        // Best effort: without `killop` (another user's operation) the wait still holds.
        if let Err(e) = cluster
            .command("admin", doc! { "killOp": 1, "op": op.opid.clone() })
            .await
        {
            tracing::debug!(opid = %op.opid, error = %e, "killOp refused");
        }
    }
    let mut running = first.clone();
    loop {
        // Known to be running: a failed listing (an election, say) proves nothing, so it is
        // asked again until the limit.
        match earlier_operations(cluster, tag).await {
            Ok(ops) if ops.is_empty() => {
                return Ok(Fence::Clear {
                    waited_for: first.len(),
                });
            }
            Ok(ops) => running = ops,
            Err(e) => tracing::debug!(error = %e, "cannot list the operations in progress yet"),
        }
        if started.elapsed() >= limit {
            return Err(FenceError::StillRunning {
                waited: started.elapsed(),
                operations: running,
            });
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The operations in progress that carry this lineage and another run's id.
async fn earlier_operations(
    cluster: &Cluster,
    tag: &RunTag,
) -> Result<Vec<InProgress>, ClusterError> {
    operations(
        cluster,
        doc! {
            "command.comment.mongoshift": &tag.lineage,
            "command.comment.run": { "$ne": &tag.run },
        },
    )
    .await
}

/// The operations in progress that match `filter`: all users' when the user may see them
/// (`inprog`), else the user's own.
async fn operations(cluster: &Cluster, filter: Document) -> Result<Vec<InProgress>, ClusterError> {
    match list(cluster, filter.clone(), true).await {
        Err(e) if e.code() == Some(codes::UNAUTHORIZED) => {
            tracing::debug!(
                "without the inprog privilege only this user's operations can be listed; an earlier run under another user is not seen"
            );
            list(cluster, filter, false).await
        }
        other => other,
    }
}

async fn list(
    cluster: &Cluster,
    filter: Document,
    all_users: bool,
) -> Result<Vec<InProgress>, ClusterError> {
    let pipeline = [
        // Truncated: a listed insert can be as large as a batch; the comment is kept.
        doc! { "$currentOp": { "allUsers": all_users, "truncateOps": true } },
        doc! { "$match": filter },
        doc! { "$project": { "opid": 1, "op": 1, "ns": 1 } },
    ];
    let command = "aggregate $currentOp";
    // The primary's operations (a URI may prefer secondaries), within a bounded time.
    let listing = async {
        cluster
            .client()
            .database("admin")
            .aggregate(pipeline)
            .selection_criteria(SelectionCriteria::ReadPreference(ReadPreference::Primary))
            .max_time(LIST_TIMEOUT)
            .await
            .map_err(|e| cluster.error(command, &e))?
            .try_collect::<Vec<Document>>()
            .await
            .map_err(|e| cluster.error(command, &e))
    };
    let docs = tokio::time::timeout(LIST_TIMEOUT, listing)
        .await
        .map_err(|_| ClusterError::Command {
            side: cluster.side(),
            command: command.to_owned(),
            // MaxTimeMSExpired: a timeout, transient like the server's own.
            code: Some(50),
            labels: Vec::new(),
            message: format!("no answer within {}s", LIST_TIMEOUT.as_secs()),
        })??;
    docs.into_iter()
        .map(|d| {
            let opid = d
                .get("opid")
                .cloned()
                .ok_or_else(|| cluster.invalid_reply(command, "an operation without opid"))?;
            Ok(InProgress {
                opid,
                op: d.get_str("op").unwrap_or("?").to_owned(),
                ns: d.get_str("ns").unwrap_or("?").to_owned(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use bson::doc;
    use mongoshift_testkit::{TestServer, TestServerHandle};

    use super::*;
    use crate::cluster::Side;
    use crate::config::{ConnectionUri, Endpoint, TlsSettings, UriOrigin};

    async fn cluster(server: &TestServerHandle, run: &str) -> Cluster {
        let endpoint = Endpoint {
            uri: ConnectionUri::new(server.uri()),
            origin: UriOrigin::Inline,
            tls: TlsSettings::default(),
        };
        Cluster::connect(Side::Destination, &endpoint)
            .await
            .unwrap()
            .tagged(RunTag {
                lineage: "L".to_owned(),
                run: run.to_owned(),
            })
    }

    /// How long the server holds an orphaned insert: long enough for the checks that must
    /// see it still running, however loaded the machine.
    const HELD: i32 = 5_000;

    /// Sends an insert tagged `comment` from a client that the server holds for `millis`, and
    /// drops the client before the reply: the server still runs the insert afterwards.
    async fn orphaned_insert(server: &TestServerHandle, comment: Document, millis: i32) {
        let admin = mongodb::Client::with_uri_str(server.uri()).await.unwrap();
        admin
            .database("admin")
            .run_command(doc! {
                "configureFailPoint": "failCommand", "mode": { "times": 1 },
                "data": { "failCommands": ["insert"], "blockConnection": true, "blockTimeMS": millis, "appName": "orphan" },
            })
            .await
            .unwrap();
        let orphan = mongodb::Client::with_uri_str(format!("{}&appName=orphan", server.uri()))
            .await
            .unwrap();
        let sent = tokio::spawn(async move {
            orphan
                .database("db")
                .run_command(
                    doc! { "insert": "c", "documents": [{ "_id": 1 }], "comment": comment },
                )
                .await
        });
        let probe = cluster(server, "probe").await;
        let deadline = Instant::now() + Duration::from_secs(10);
        while operations(&probe, doc! { "op": "insert" })
            .await
            .unwrap()
            .is_empty()
        {
            assert!(Instant::now() < deadline, "the insert reaches the server");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        sent.abort();
    }

    /// A server running an orphaned insert of run `old` for `millis`, and a handle of run
    /// `new` of the same migration.
    async fn while_an_old_run_writes(millis: i32) -> (TestServerHandle, Cluster) {
        let server = TestServer::builder().start().await.unwrap();
        let comment = doc! { "mongoshift": "L", "run": "old", "op": 1_i64 };
        orphaned_insert(&server, comment, millis).await;
        let new = cluster(&server, "new").await;
        (server, new)
    }

    async fn inserted(server: &TestServerHandle) -> bool {
        let client = mongodb::Client::with_uri_str(server.uri()).await.unwrap();
        client
            .database("db")
            .collection::<Document>("c")
            .find_one(doc! { "_id": 1 })
            .await
            .unwrap()
            .is_some()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn settle_returns_once_the_failed_command_has_run() {
        let server = TestServer::builder().start().await.unwrap();
        orphaned_insert(
            &server,
            doc! { "mongoshift": "L", "run": "R", "op": 5_i64 },
            HELD,
        )
        .await;
        let own = cluster(&server, "R").await;
        // Another number of the same run is not waited for.
        settle(&own, 6, Duration::from_secs(10)).await;
        assert!(!inserted(&server).await);
        settle(&own, 5, Duration::from_secs(10)).await;
        assert!(
            inserted(&server).await,
            "settle returned before the insert ran"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_new_run_ends_and_waits_for_an_earlier_runs_operations() {
        let (server, new) = while_an_old_run_writes(HELD).await;
        let fence = await_earlier_runs(&new, Duration::from_secs(10))
            .await
            .unwrap();
        assert_eq!(fence, Fence::Clear { waited_for: 1 });
        assert!(
            operations(&new, doc! { "command.comment.run": "old" })
                .await
                .unwrap()
                .is_empty()
        );
        assert!(!inserted(&server).await, "the killed insert never ran");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_earlier_run_that_outlives_the_wait_is_an_error_naming_it() {
        let (_server, new) = while_an_old_run_writes(HELD).await;
        let err = await_earlier_runs(&new, Duration::from_millis(300))
            .await
            .unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains("1 operation(s)") && message.contains("insert on db.c"),
            "{message}"
        );
    }

    #[tokio::test]
    async fn a_server_that_will_not_list_its_operations_is_reported_unchecked() {
        let server = TestServer::builder().start().await.unwrap();
        let new = cluster(&server, "new").await;
        new.command(
            "admin",
            doc! {
                "configureFailPoint": "failCommand", "mode": "alwaysOn",
                "data": { "failCommands": ["aggregate"], "errorCode": 59 },
            },
        )
        .await
        .unwrap();
        match await_earlier_runs(&new, Duration::from_secs(1))
            .await
            .unwrap()
        {
            Fence::Unchecked(reason) => assert!(
                reason.contains("59") || reason.contains("CommandNotFound"),
                "{reason}"
            ),
            other => panic!("{other:?}"),
        }
    }
}
