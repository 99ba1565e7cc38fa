//! Operations in progress: what `$currentOp` lists and `killOp` interrupts.
//!
//! Every command is registered from the moment it is parsed until its reply is built, with the
//! fields mongod reports for it (`opid`, `client`, `appName`, `ns`, `op`, `command`, ...). As on
//! mongod, a command keeps running after its client disconnects, so a killed client's write
//! stays listed until it ends. `killOp` marks an operation; it is interrupted at its next
//! interrupt point, which here is the start of its execution (after a `failCommand` block), as
//! mongod's `checkForInterrupt` would fail it before its first write. An operation already
//! executing finishes.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bson::{Bson, DateTime, Document, RawDocument, RawDocumentBuf, cstr, doc};

/// mongod truncates a listed command above this size (`$truncated`).
const MAX_COMMAND_BYTES: usize = 1024;

/// One operation in progress.
#[derive(Debug)]
pub struct ActiveOp {
    /// `opid`.
    pub opid: u32,
    /// The connection's id.
    pub connection_id: i64,
    /// The client's address.
    pub client: String,
    /// `client.application.name` of the connection's handshake.
    pub app_name: Option<String>,
    /// The authenticated user (`name@db`), when authentication is on.
    pub user: Option<(String, String)>,
    /// `ns` (`db.$cmd` for commands, `db.coll` for CRUD).
    pub ns: String,
    /// `op`: `insert`, `update`, `remove`, `query`, `getmore` or `command`.
    pub op: &'static str,
    /// The command document, without document sequences (truncated when large). Kept raw:
    /// every command is registered, and few are ever listed.
    pub command: RawDocumentBuf,
    /// When it started.
    pub started: Instant,
    /// The same, as a date.
    pub started_at: DateTime,
    /// Set by `killOp`.
    killed: AtomicBool,
}

impl ActiveOp {
    /// True once `killOp` named it.
    pub fn is_killed(&self) -> bool {
        self.killed.load(Ordering::Acquire)
    }

    /// The `$currentOp` document of an active operation.
    pub fn describe(&self, host: &str) -> Document {
        let elapsed = self.started.elapsed();
        let mut d = doc! {
            "type": "op",
            "host": host,
            "desc": format!("conn{}", self.connection_id),
            "connectionId": self.connection_id,
            "client": self.client.clone(),
        };
        if let Some(app) = &self.app_name {
            d.insert("appName", app.clone());
            d.insert(
                "clientMetadata",
                doc! { "application": { "name": app.clone() } },
            );
        }
        if let Some((name, db)) = &self.user {
            d.insert(
                "effectiveUsers",
                vec![Bson::Document(
                    doc! { "user": name.clone(), "db": db.clone() },
                )],
            );
        }
        d.insert("active", true);
        d.insert(
            "currentOpTime",
            DateTime::now().try_to_rfc3339_string().unwrap_or_default(),
        );
        d.insert("opid", i64::from(self.opid));
        d.insert("secs_running", elapsed.as_secs() as i64);
        d.insert("microsecs_running", elapsed.as_micros() as i64);
        d.insert("op", self.op);
        d.insert("ns", self.ns.clone());
        d.insert(
            "command",
            Document::try_from(self.command.as_ref()).unwrap_or_default(),
        );
        d.insert("numYields", 0);
        d.insert("locks", Document::new());
        d.insert("waitingForLock", false);
        d.insert("killPending", self.is_killed());
        d
    }
}

/// The registry.
#[derive(Debug, Default)]
pub struct Operations {
    next: AtomicU32,
    active: Mutex<BTreeMap<u32, Arc<ActiveOp>>>,
}

/// What identifies the connection an operation runs on.
#[derive(Debug, Clone)]
pub struct OpClient<'a> {
    /// Connection id.
    pub connection_id: i64,
    /// Peer address.
    pub client: &'a str,
    /// Application name.
    pub app_name: Option<&'a str>,
    /// Authenticated user.
    pub user: Option<(String, String)>,
}

/// Removes the operation from the registry when dropped.
#[derive(Debug)]
pub struct OpGuard<'a> {
    registry: &'a Operations,
    op: Arc<ActiveOp>,
}

impl OpGuard<'_> {
    /// The registered operation.
    pub fn op(&self) -> &ActiveOp {
        &self.op
    }
}

impl Drop for OpGuard<'_> {
    fn drop(&mut self) {
        self.registry
            .active
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.op.opid);
    }
}

/// `op` as mongod names it for a command.
fn op_kind(name: &str) -> &'static str {
    match name {
        "insert" => "insert",
        "update" => "update",
        "delete" => "remove",
        "find" => "query",
        "getMore" => "getmore",
        _ => "command",
    }
}

impl Operations {
    /// Registers a command until the guard drops.
    pub fn register(
        &self,
        client: OpClient<'_>,
        db: &str,
        name: &str,
        body: &RawDocument,
    ) -> OpGuard<'_> {
        let opid = self.next.fetch_add(1, Ordering::Relaxed).wrapping_add(1);
        let ns = match (op_kind(name), body.get_str(name)) {
            ("command", _) | (_, Err(_)) => format!("{db}.$cmd"),
            (_, Ok(coll)) => format!("{db}.{coll}"),
        };
        let command = if body.as_bytes().len() > MAX_COMMAND_BYTES {
            // mongod keeps the command's first bytes; the name and comment are what tools use.
            let mut d = RawDocumentBuf::new();
            d.append(
                cstr!("$truncated"),
                format!("{name} command of {} bytes", body.as_bytes().len()),
            );
            if let Ok(Some(comment)) = body.get("comment") {
                d.append(cstr!("comment"), comment);
            }
            d
        } else {
            body.to_owned()
        };
        let op = Arc::new(ActiveOp {
            opid,
            connection_id: client.connection_id,
            client: client.client.to_owned(),
            app_name: client.app_name.map(str::to_owned),
            user: client.user,
            ns,
            op: op_kind(name),
            command,
            started: Instant::now(),
            started_at: DateTime::now(),
            killed: AtomicBool::new(false),
        });
        self.active
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(opid, Arc::clone(&op));
        OpGuard { registry: self, op }
    }

    /// The operations in progress, oldest first.
    pub fn list(&self) -> Vec<Arc<ActiveOp>> {
        self.active
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// The operation with this id, if it is in progress.
    pub fn get(&self, opid: u32) -> Option<Arc<ActiveOp>> {
        self.active
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&opid)
            .cloned()
    }

    /// Marks an operation killed; false when it is not in progress.
    pub fn kill(&self, opid: u32) -> bool {
        match self.get(opid) {
            Some(op) => {
                op.killed.store(true, Ordering::Release);
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use bson::rawdoc;

    use super::*;

    fn client() -> OpClient<'static> {
        OpClient {
            connection_id: 7,
            client: "127.0.0.1:5000",
            app_name: Some("app"),
            user: None,
        }
    }

    #[test]
    fn an_operation_is_listed_until_its_guard_drops_and_can_be_marked_killed() {
        let ops = Operations::default();
        let body = rawdoc! { "insert": "c", "comment": "tag", "$db": "d" };
        let guard = ops.register(client(), "d", "insert", &body);
        let listed = ops.list();
        assert_eq!(listed.len(), 1);
        let d = listed[0].describe("h:1");
        assert_eq!(d.get_str("ns").unwrap(), "d.c");
        assert_eq!(d.get_str("op").unwrap(), "insert");
        assert_eq!(
            d.get_document("command")
                .unwrap()
                .get_str("comment")
                .unwrap(),
            "tag"
        );
        assert_eq!(d.get_str("appName").unwrap(), "app");
        assert!(!d.get_bool("killPending").unwrap());
        let opid = guard.op().opid;
        assert!(ops.kill(opid));
        assert!(guard.op().is_killed());
        drop(guard);
        assert!(ops.list().is_empty());
        assert!(!ops.kill(opid), "a finished operation cannot be killed");
    }

    #[test]
    fn a_large_command_is_truncated_but_keeps_its_comment() {
        let ops = Operations::default();
        let body = rawdoc! { "update": "c", "updates": [{ "q": {}, "u": { "pad": "x".repeat(4000) } }], "comment": { "run": 1 } };
        let guard = ops.register(client(), "d", "update", &body);
        let command = guard
            .op()
            .describe("h")
            .get_document("command")
            .unwrap()
            .clone();
        assert!(command.contains_key("$truncated"), "{command}");
        assert_eq!(
            command
                .get_document("comment")
                .unwrap()
                .get_i32("run")
                .unwrap(),
            1
        );
    }
}
