//! Command dispatch: from a parsed request to a reply document.
//!
//! Responsibilities: pull the generic arguments out of the command body (`$db`, `lsid`,
//! `txnNumber`, `maxTimeMS`, ...), apply failpoints, the user-write block and retryable-write
//! replay, route to the command family modules, and finish every reply with `ok`,
//! `$clusterTime` and `operationTime` from the one logical clock.
//!
//! One module per command family, like mini-redis' `cmd/`: [`handshake`], [`auth`], [`admin`],
//! [`catalog`], [`write`], [`read`], [`session`]; a mongos routes through [`mongos`] first.
//! When the server has users, every command is authorized (`crate::auth::authz`) before
//! failpoints and execution, as mongod checks authorization before running anything.

pub mod admin;
pub mod args;
pub mod auth;
pub mod catalog;
pub mod change_stream;
pub mod handshake;
pub mod merge;
pub mod mongos;
pub mod read;
pub mod session;
pub mod write;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bson::{Binary, RawDocumentBuf, Timestamp, cstr, rawdoc};

use crate::engine::Engine;
use crate::engine::current_op::OpClient;
use crate::engine::transaction::{Store, Transaction, TxnState};
use crate::error::{CommandError, to_raw};
use crate::wire::{DocumentSequence, OpMsg, OpQuery};

/// Per-connection state the commands can see and change.
#[derive(Debug, Clone, Default)]
pub struct ConnState {
    /// `connectionId` reported by hello.
    pub id: i64,
    /// The peer address (`whatsmyuri`).
    pub peer: String,
    /// `client.application.name` from the handshake (`failCommand` can target it).
    pub app_name: Option<String>,
    /// Whether the handshake's client metadata was received.
    pub saw_client_metadata: bool,
    /// Who is authenticated on this connection (inert when the server has no users).
    pub auth: crate::auth::ConnAuth,
}

/// A command ready to run: its body and generic arguments.
#[derive(Debug)]
pub struct Request {
    /// The command name: the first key of the body.
    pub name: String,
    /// The target database (`$db`).
    pub db: String,
    /// The command document.
    pub body: RawDocumentBuf,
    /// kind-1 document sequences, by identifier.
    pub sequences: Vec<DocumentSequence>,
    /// The session id document, if any.
    pub lsid: Option<bson::Document>,
    /// The 16 bytes of `lsid.id`.
    pub lsid_bytes: Option<Vec<u8>>,
    /// `txnNumber`, for retryable writes and transactions.
    pub txn_number: Option<i64>,
    /// `maxTimeMS`, if given.
    pub max_time_ms: Option<u64>,
    /// `autocommit` (only `false` is legal, inside transactions).
    pub autocommit: Option<bool>,
}

/// What running a command produced.
#[derive(Debug)]
pub enum Outcome {
    /// Send this reply body (already finished with `ok` and cluster time).
    Reply(RawDocumentBuf),
    /// Send nothing (a `moreToCome` request).
    NoReply,
    /// Close the connection without replying (`closeConnection` failpoint).
    Close,
}

/// Everything a command handler needs.
pub struct Ctx<'a> {
    /// The server state.
    pub engine: &'a Arc<Engine>,
    /// The connection the command arrived on.
    pub conn: &'a mut ConnState,
    /// The cluster time of this command's last write, reported as `operationTime`.
    pub op_time: Option<Timestamp>,
    /// Set by a handler to drop the connection without replying (failpoints).
    pub close_connection: bool,
    /// The multi-document transaction the command runs in, if any.
    pub txn: Option<Arc<Mutex<Transaction>>>,
}

impl Ctx<'_> {
    /// What the command reads and writes through (its transaction's copies, if any).
    pub fn store(&self) -> Store<'_> {
        Store {
            engine: self.engine,
            txn: self.txn.as_deref(),
        }
    }
}

/// The reply type of handlers: a body without `ok` or cluster-time fields.
pub type Reply = Result<RawDocumentBuf, CommandError>;

/// Commands that change user data or the catalog; blocked by `setUserWriteBlockMode`.
const WRITE_COMMANDS: &[&str] = &[
    "insert",
    "update",
    "delete",
    "findAndModify",
    "findandmodify",
    "create",
    "drop",
    "dropDatabase",
    "renameCollection",
    "createIndexes",
    "dropIndexes",
    "collMod",
];

/// Commands that are retryable writes when they carry a `txnNumber`.
const RETRYABLE_WRITES: &[&str] = &[
    "insert",
    "update",
    "delete",
    "findAndModify",
    "findandmodify",
];

/// Error codes mongod labels `RetryableWriteError` on a retryable write
/// (`ErrorCodes::isRetriableError` plus the not-primary and shutdown families).
const RETRYABLE_CODES: &[i32] = &[
    6, 7, 89, 91, 189, 262, 9001, 10107, 11600, 11602, 13435, 13436,
];

/// Runs an OP_MSG request.
pub async fn handle_msg(engine: &Arc<Engine>, conn: &mut ConnState, msg: OpMsg) -> Outcome {
    let more_to_come = msg.more_to_come();
    let outcome = run(engine, conn, msg.body, msg.sequences).await;
    match outcome {
        Outcome::Reply(_) if more_to_come => Outcome::NoReply,
        other => other,
    }
}

/// Runs an OP_QUERY request. Like mongod 5.1+, only the handshake is served this way.
pub async fn handle_query(engine: &Arc<Engine>, conn: &mut ConnState, query: OpQuery) -> Outcome {
    let name = query
        .query
        .iter()
        .next()
        .and_then(Result::ok)
        .map(|(k, _)| k.as_str().to_string())
        .unwrap_or_default();
    let Some(db) = query.full_collection_name.strip_suffix(".$cmd") else {
        return Outcome::Reply(op_query_error(&format!(
            "Unsupported OP_QUERY command: {name}. The client driver may require an upgrade."
        )));
    };
    // mongod's `checkAllowedOpQueryCommand`: the handshake, plus the authentication commands
    // old drivers still send this way.
    if !matches!(
        name.as_str(),
        "hello"
            | "isMaster"
            | "ismaster"
            | "saslStart"
            | "saslContinue"
            | "authenticate"
            | "buildInfo"
            | "buildinfo"
    ) {
        return Outcome::Reply(op_query_error(&format!(
            "Unsupported OP_QUERY command: {name}. The client driver may require an upgrade. For more details see https://dochub.mongodb.org/core/legacy-opcode-removal"
        )));
    }
    // OP_QUERY commands carry no `$db`: the namespace names the database.
    let mut body = query.query.clone();
    body.append(cstr!("$db"), db);
    run(engine, conn, body, Vec::new()).await
}

fn op_query_error(message: &str) -> RawDocumentBuf {
    rawdoc! { "$err": message, "code": 352, "codeName": "UnsupportedOpQueryCommand", "ok": 0.0 }
}

async fn run(
    engine: &Arc<Engine>,
    conn: &mut ConnState,
    body: RawDocumentBuf,
    sequences: Vec<DocumentSequence>,
) -> Outcome {
    let request = match args::parse_request(body, sequences) {
        Ok(r) => r,
        Err(e) => return Outcome::Reply(finish_error(engine, &e, None)),
    };
    if let Err(e) = crate::auth::authz::check(&conn.auth, &request) {
        return Outcome::Reply(finish_error(engine, &e, None));
    }
    // Listed by `$currentOp` until the reply is built (also after the client went away).
    let operation = engine.operations.register(
        OpClient {
            connection_id: conn.id,
            client: &conn.peer,
            app_name: conn.app_name.as_deref(),
            user: conn
                .auth
                .user()
                .map(|u| (u.spec.name.clone(), u.spec.db.clone())),
        },
        &request.db,
        &request.name,
        &request.body,
    );
    let mut ctx = Ctx {
        engine,
        conn,
        op_time: None,
        close_connection: false,
        txn: None,
    };

    // failCommand is evaluated before the command runs, as mongod does.
    let action = if request.name == "configureFailPoint" {
        None
    } else {
        engine
            .failpoints
            .check_fail_command(&request.name, ctx.conn.app_name.as_deref())
    };
    let mut write_concern_error = None;
    if let Some(action) = action {
        if let Some(ms) = action.block_ms {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        if action.close_connection {
            return Outcome::Close;
        }
        if let Some(code) = action.error_code {
            let mut err = CommandError::new(code, "Failing command via 'failCommand' failpoint");
            match action.error_labels {
                Some(labels) => {
                    for l in labels {
                        err = err.with_label(&l);
                    }
                }
                None => {
                    if is_retryable_write(&request) && RETRYABLE_CODES.contains(&code) {
                        err = err.with_label("RetryableWriteError");
                    }
                }
            }
            if let Some(extra) = action.extra_info {
                err.extra.insert("errInfo", extra);
            }
            return Outcome::Reply(finish_error(engine, &err, None));
        }
        write_concern_error = action.write_concern_error;
    }
    // The interrupt point of `killOp`: before the command starts executing.
    if operation.op().is_killed() {
        return Outcome::Reply(finish_error(
            engine,
            &CommandError::new(11601, "operation was interrupted"),
            None,
        ));
    }

    if let Some(lsid) = &request.lsid_bytes {
        engine.sessions.touch(lsid);
    }
    let retry = match prepare_retry(&ctx, &request) {
        Ok(r) => r,
        Err(e) => return Outcome::Reply(finish_error(engine, &e, None)),
    };
    match prepare_transaction(&ctx, &request) {
        Ok(txn) => ctx.txn = txn,
        Err(e) => return Outcome::Reply(finish_error(engine, &e, None)),
    }
    if let Some(reply) = retry.replay {
        return Outcome::Reply(finish(engine, reply, None));
    }

    // A write holds the gate from its check to its end (see `Engine::user_write_gate`).
    let gate = if WRITE_COMMANDS.contains(&request.name.as_str()) {
        Some(engine.user_write_gate.read().await)
    } else {
        None
    };
    let result = match check_write_allowed(&ctx, &request) {
        Ok(()) => execute(&mut ctx, &request).await,
        Err(e) => Err(e),
    };
    drop(gate);
    let result =
        result.and_then(|body| crate::auth::authz::filter_reply(&ctx.conn.auth, &request, body));
    let op_time = ctx.op_time;
    if ctx.close_connection {
        return Outcome::Close;
    }
    // mongod aborts a transaction when one of its statements fails.
    if let Some(txn) = &ctx.txn
        && !matches!(
            request.name.as_str(),
            "commitTransaction" | "abortTransaction"
        )
    {
        let failed = match &result {
            Err(_) => true,
            Ok(body) => matches!(body.get("writeErrors"), Ok(Some(_))),
        };
        if failed {
            txn.lock().unwrap_or_else(|p| p.into_inner()).abort();
        }
    }
    match result {
        Ok(mut body) => {
            if let Some(wce) = write_concern_error {
                match to_raw(&wce) {
                    Ok(raw) => body.append(cstr!("writeConcernError"), raw),
                    Err(e) => return Outcome::Reply(finish_error(engine, &e, op_time)),
                }
            }
            if let (Some(lsid), Some(txn)) = (&retry.lsid, retry.txn_number) {
                engine.sessions.store(lsid, txn, body.clone());
            }
            Outcome::Reply(finish(engine, body, op_time))
        }
        Err(mut e) => {
            if is_retryable_write(&request) && RETRYABLE_CODES.contains(&e.code) {
                e = e.with_label("RetryableWriteError");
            }
            Outcome::Reply(finish_error(engine, &e, op_time))
        }
    }
}

/// What retryable-write bookkeeping decided for a request.
struct RetryPlan {
    /// Set when the stored reply of an earlier execution must be replayed.
    replay: Option<RawDocumentBuf>,
    /// The session to store the reply under after executing.
    lsid: Option<Vec<u8>>,
    /// The txnNumber to store the reply under.
    txn_number: Option<i64>,
}

fn is_retryable_write(request: &Request) -> bool {
    request.txn_number.is_some()
        && request.autocommit.is_none()
        && RETRYABLE_WRITES.contains(&request.name.as_str())
}

fn prepare_retry(ctx: &Ctx<'_>, request: &Request) -> Result<RetryPlan, CommandError> {
    let none = RetryPlan {
        replay: None,
        lsid: None,
        txn_number: None,
    };
    let Some(txn_number) = request.txn_number else {
        return Ok(none);
    };
    if !ctx.engine.is_replica_set() {
        // What a standalone mongod answers; the driver rewrites it into its
        // "does not support retryable writes" message.
        return Err(CommandError::new(
            20,
            "Transaction numbers are only allowed on a replica set member or mongos",
        ));
    }
    let Some(lsid) = request.lsid_bytes.clone() else {
        return Err(CommandError::new(
            50768,
            "txnNumber may only be provided for multi-document transactions and retryable write commands. txnNumber requires a session id",
        ));
    };
    if request.autocommit.is_some() {
        // Part of a multi-document transaction, not a retryable write.
        return Ok(none);
    }
    if !RETRYABLE_WRITES.contains(&request.name.as_str()) {
        return Err(CommandError::new(
            50768,
            format!(
                "txnNumber may only be provided for multi-document transactions and retryable write commands. Command: {}",
                request.name
            ),
        ));
    }
    match ctx
        .engine
        .sessions
        .begin_retryable(&lsid, txn_number, &request.name)?
    {
        crate::engine::session::RetryCheck::Replay(reply) => Ok(RetryPlan {
            replay: Some(reply),
            lsid: None,
            txn_number: None,
        }),
        crate::engine::session::RetryCheck::Execute => Ok(RetryPlan {
            replay: None,
            lsid: Some(lsid),
            txn_number: Some(txn_number),
        }),
    }
}

/// Commands a multi-document transaction may run (mongod 7.0).
const TRANSACTION_COMMANDS: &[&str] = &[
    "find",
    "getMore",
    "killCursors",
    "aggregate",
    "distinct",
    "insert",
    "update",
    "delete",
    "findAndModify",
    "findandmodify",
    "commitTransaction",
    "abortTransaction",
];

/// Finds or starts the transaction a request with `autocommit: false` belongs to.
fn prepare_transaction(
    ctx: &Ctx<'_>,
    request: &Request,
) -> Result<Option<Arc<Mutex<Transaction>>>, CommandError> {
    let transactional = request.autocommit.is_some()
        || matches!(
            request.name.as_str(),
            "commitTransaction" | "abortTransaction"
        );
    if !transactional {
        return Ok(None);
    }
    if request.autocommit != Some(false) {
        return Err(CommandError::new(
            50768,
            "'autocommit' field can only be specified as false",
        ));
    }
    let (Some(lsid), Some(lsid_doc), Some(txn_number)) =
        (&request.lsid_bytes, &request.lsid, request.txn_number)
    else {
        return Err(CommandError::new(
            50768,
            "'autocommit' field requires a transaction number and a session id",
        ));
    };
    if !ctx.engine.is_replica_set() {
        return Err(CommandError::new(
            20,
            "Transaction numbers are only allowed on a replica set member or mongos",
        ));
    }
    if !TRANSACTION_COMMANDS.contains(&request.name.as_str()) {
        return Err(CommandError::new(
            263,
            format!(
                "Cannot run '{}' in a multi-document transaction.",
                request.name
            ),
        ));
    }
    let starting = matches!(
        request.body.get("startTransaction"),
        Ok(Some(bson::RawBsonRef::Boolean(true)))
    );
    let txn = if starting {
        ctx.engine
            .sessions
            .begin_transaction(lsid, lsid_doc, txn_number)?
    } else {
        ctx.engine.sessions.transaction(lsid, txn_number)?
    };
    {
        let t = txn.lock().unwrap_or_else(|p| p.into_inner());
        let finished = !matches!(t.state, TxnState::Active);
        let ending = matches!(
            request.name.as_str(),
            "commitTransaction" | "abortTransaction"
        );
        if finished && !ending {
            return Err(CommandError::new(
                251,
                format!("Transaction {txn_number} has been aborted."),
            )
            .with_label("TransientTransactionError"));
        }
    }
    Ok(Some(txn))
}

fn check_write_allowed(ctx: &Ctx<'_>, request: &Request) -> Result<(), CommandError> {
    use std::sync::atomic::Ordering;
    if WRITE_COMMANDS.contains(&request.name.as_str())
        && ctx.engine.user_writes_blocked.load(Ordering::Acquire)
        && !crate::engine::namespace::is_internal_db(&request.db)
        && !crate::auth::authz::bypasses_write_block(&ctx.conn.auth)
    {
        // mongod 7.0: GlobalUserWriteBlockState::checkUserWritesAllowed.
        return Err(CommandError::new(371, "User writes blocked"));
    }
    Ok(())
}

async fn execute(ctx: &mut Ctx<'_>, request: &Request) -> Reply {
    if ctx.engine.is_mongos() {
        return mongos::execute(ctx, request).await;
    }
    dispatch(ctx, request).await
}

/// Runs a command as a mongod does (a mongos' own commands are in [`mongos`]).
pub async fn dispatch(ctx: &mut Ctx<'_>, request: &Request) -> Reply {
    match request.name.as_str() {
        "hello" | "isMaster" | "ismaster" => handshake::hello(ctx, request),
        "ping" => Ok(RawDocumentBuf::new()),
        "buildInfo" | "buildinfo" => admin::build_info(ctx, request),
        "getParameter" => admin::get_parameter(ctx, request),
        "hostInfo" => admin::host_info(ctx, request),
        "serverStatus" => admin::server_status(ctx, request),
        "replSetGetStatus" => admin::repl_set_get_status(ctx, request),
        "replSetGetConfig" => admin::repl_set_get_config(ctx, request),
        "connectionStatus" => auth::connection_status(ctx, request),
        "saslStart" => auth::sasl_start(ctx, request),
        "saslContinue" => auth::sasl_continue(ctx, request),
        "authenticate" => auth::authenticate(ctx, request),
        "logout" => auth::logout(ctx, request),
        "usersInfo" => auth::users_info(ctx, request),
        "rolesInfo" => auth::roles_info(ctx, request),
        "getCmdLineOpts" => admin::get_cmd_line_opts(ctx, request),
        "whatsmyuri" => admin::whats_my_uri(ctx, request),
        "killOp" => admin::kill_op(ctx, request),
        "configureFailPoint" => admin::configure_fail_point(ctx, request),
        "setUserWriteBlockMode" => admin::set_user_write_block_mode(ctx, request).await,
        "endSessions" => session::end_sessions(ctx, request),
        "killAllSessions" => session::kill_all_sessions(ctx, request),
        "refreshSessions" => session::refresh_sessions(ctx, request),
        "commitTransaction" => session::commit_transaction(ctx, request),
        "abortTransaction" => session::abort_transaction(ctx, request),
        "listDatabases" => catalog::list_databases(ctx, request),
        "listCollections" => catalog::list_collections(ctx, request),
        "listIndexes" => catalog::list_indexes(ctx, request),
        "create" => catalog::create(ctx, request),
        "drop" => catalog::drop(ctx, request),
        "dropDatabase" => catalog::drop_database(ctx, request),
        "renameCollection" => catalog::rename_collection(ctx, request),
        "createIndexes" => catalog::create_indexes(ctx, request),
        "dropIndexes" | "deleteIndexes" => catalog::drop_indexes(ctx, request),
        "collMod" => catalog::coll_mod(ctx, request),
        "collStats" => catalog::coll_stats(ctx, request),
        "dbStats" => catalog::db_stats(ctx, request),
        "insert" => write::insert(ctx, request),
        "update" => write::update(ctx, request),
        "delete" => write::delete(ctx, request),
        "findAndModify" | "findandmodify" => write::find_and_modify(ctx, request),
        "find" => read::find(ctx, request),
        "getMore" => read::get_more(ctx, request).await,
        "killCursors" => read::kill_cursors(ctx, request),
        "count" => read::count(ctx, request),
        "distinct" => read::distinct(ctx, request),
        "aggregate" => read::aggregate(ctx, request).await,
        other => Err(CommandError::new(59, format!("no such command: '{other}'"))),
    }
}

/// The `$clusterTime` document: the current cluster time with a zero signature, as a mongod
/// without keys signs it. The Rust driver requires `signature` to be present.
fn cluster_time_doc(ts: Timestamp) -> RawDocumentBuf {
    rawdoc! {
        "clusterTime": ts,
        "signature": {
            "hash": Binary { subtype: bson::spec::BinarySubtype::Generic, bytes: vec![0u8; 20] },
            "keyId": 0i64,
        },
    }
}

/// Appends `ok: 1.0`, `$clusterTime` and `operationTime`.
pub fn finish(
    engine: &Engine,
    mut body: RawDocumentBuf,
    op_time: Option<Timestamp>,
) -> RawDocumentBuf {
    body.append(cstr!("ok"), 1.0);
    append_cluster_time(engine, &mut body, op_time);
    body
}

/// An error reply with cluster-time fields.
pub fn finish_error(
    engine: &Engine,
    err: &CommandError,
    op_time: Option<Timestamp>,
) -> RawDocumentBuf {
    let mut body = to_raw(&err.to_reply()).unwrap_or_else(|_| {
        rawdoc! { "ok": 0.0, "errmsg": "error reply could not be encoded", "code": 1, "codeName": "InternalError" }
    });
    append_cluster_time(engine, &mut body, op_time);
    body
}

fn append_cluster_time(engine: &Engine, body: &mut RawDocumentBuf, op_time: Option<Timestamp>) {
    // A standalone mongod has no logical clock to gossip and sends neither field.
    if !engine.is_replica_set() {
        return;
    }
    let now = engine.oplog.cluster_time();
    body.append(cstr!("$clusterTime"), cluster_time_doc(now));
    body.append(cstr!("operationTime"), op_time.unwrap_or(now));
}
