//! Administrative and diagnostic commands: `buildInfo`, `getParameter`, `hostInfo`,
//! `serverStatus`, `replSetGetStatus`, `getCmdLineOpts`, `whatsmyuri`,
//! `configureFailPoint` and `setUserWriteBlockMode`.

use std::sync::atomic::Ordering;

use bson::{DateTime, Document, RawBsonRef, doc};

use crate::command::args::Fields;
use crate::command::{Ctx, Reply, Request, handshake};
use crate::error::{CommandError, to_document, to_raw};

/// The server version we claim: MongoDB 7.0 (wire version 21).
pub const VERSION: &str = "7.0.14";
/// [`VERSION`] as `versionArray`.
const VERSION_ARRAY: [i32; 4] = [7, 0, 14, 0];

fn require_admin(request: &Request) -> Result<(), CommandError> {
    if request.db != "admin" {
        return Err(CommandError::new(
            13,
            format!(
                "{} may only be run against the admin database.",
                request.name
            ),
        ));
    }
    Ok(())
}

/// `buildInfo`: the version the unified runner and the product read.
pub fn build_info(_ctx: &mut Ctx<'_>, _request: &Request) -> Reply {
    to_raw(&doc! {
        "version": VERSION,
        "gitVersion": "mongoshift-testkit",
        "modules": [],
        "allocator": "system",
        "javascriptEngine": "none",
        "sysInfo": "deprecated",
        "versionArray": VERSION_ARRAY.to_vec(),
        "bits": 64,
        "debug": false,
        "maxBsonObjectSize": crate::wire::MAX_BSON_OBJECT_SIZE as i32,
        "storageEngines": ["inMemory"],
        "buildEnvironment": { "target_os": std::env::consts::OS, "target_arch": std::env::consts::ARCH },
    })
}

/// The parameters `getParameter` knows, with their values.
fn parameters(ctx: &Ctx<'_>) -> Document {
    doc! {
        "featureCompatibilityVersion": { "version": "7.0" },
        "authenticationMechanisms": ["SCRAM-SHA-1", "SCRAM-SHA-256"],
        "cursorTimeoutMillis": 600_000i64,
        "enableTestCommands": true,
        "logicalSessionRefreshMillis": 300_000,
        "localLogicalSessionTimeoutMinutes": 30,
        "maxBSONDepth": 200,
        "periodicNoopIntervalSecs": i32::try_from(ctx.engine.config.noop_interval.as_secs()).unwrap_or(i32::MAX),
        "requireApiVersion": false,
        "transactionLifetimeLimitSeconds": 60,
        "internalQueryMaxBlockingSortMemoryUsageBytes": 104_857_600,
        "maxTransactionLockRequestTimeoutMillis": 5,
    }
}

/// `getParameter`: named parameters, or all of them with `"*"` / `{allParameters: true}`.
pub fn get_parameter(ctx: &mut Ctx<'_>, request: &Request) -> Reply {
    require_admin(request)?;
    let all = parameters(ctx);
    let want_all = match request.body.get("getParameter") {
        Ok(Some(RawBsonRef::String("*"))) => true,
        Ok(Some(RawBsonRef::Document(d))) => {
            matches!(d.get("allParameters"), Ok(Some(RawBsonRef::Boolean(true))))
        }
        _ => false,
    };
    let mut reply = Document::new();
    if want_all {
        reply = all;
    } else {
        for element in request.body.iter().skip(1) {
            let Ok((key, _)) = element else { continue };
            let key = key.as_str();
            if key.starts_with('$')
                || matches!(key, "lsid" | "comment" | "$readPreference" | "apiVersion")
            {
                continue;
            }
            if let Some(v) = all.get(key) {
                reply.insert(key, v.clone());
            }
        }
        if reply.is_empty() {
            // mongod: `uassert(ErrorCodes::InvalidOptions, "no option found to get", ...)`.
            return Err(CommandError::new(72, "no option found to get"));
        }
    }
    to_raw(&reply)
}

/// `hostInfo`: machine facts.
pub fn host_info(_ctx: &mut Ctx<'_>, _request: &Request) -> Reply {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1) as i32;
    to_raw(&doc! {
        "system": {
            "currentTime": DateTime::now(),
            "hostname": hostname(),
            "cpuAddrSize": 64,
            "numCores": cores,
            "numPhysicalCores": cores,
            "cpuArch": std::env::consts::ARCH,
            "numaEnabled": false,
        },
        "os": { "type": os_type(), "name": std::env::consts::OS },
        "extra": {},
    })
}

fn os_type() -> &'static str {
    match std::env::consts::OS {
        "linux" => "Linux",
        "macos" => "Darwin",
        "windows" => "Windows",
        _ => "Unknown",
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "localhost".to_string())
}

/// `serverStatus`: the basic sections (`host`, `version`, `process`, `uptime`, `localTime`,
/// `connections`, `repl`, `storageEngine`).
pub fn server_status(ctx: &mut Ctx<'_>, _request: &Request) -> Reply {
    let engine = ctx.engine;
    let uptime = engine.started.elapsed();
    let mut reply = doc! {
        "host": hostname(),
        "version": VERSION,
        "process": "mongod",
        "pid": i64::from(std::process::id()),
        "uptime": uptime.as_secs_f64().floor(),
        "uptimeMillis": i64::try_from(uptime.as_millis()).unwrap_or(i64::MAX),
        "uptimeEstimate": i64::try_from(uptime.as_secs()).unwrap_or(i64::MAX),
        "localTime": DateTime::now(),
        "connections": {
            "current": engine.open_connections(),
            "available": 1_000_000 - engine.open_connections(),
            "totalCreated": engine.connections_created(),
        },
        "storageEngine": { "name": "inMemory", "supportsCommittedReads": true, "persistent": false },
    };
    if engine.is_replica_set() {
        let host = engine.config.host.clone();
        reply.insert(
            "repl",
            doc! {
                "topologyVersion": { "processId": engine.process_id, "counter": 0i64 },
                "hosts": [host.clone()],
                "setName": engine.config.set_name.clone(),
                "setVersion": 1,
                "isWritablePrimary": true,
                "secondary": false,
                "primary": host.clone(),
                "me": host,
                "electionId": handshake::election_id(),
            },
        );
    }
    to_raw(&reply)
}

/// `replSetGetStatus`: one healthy PRIMARY member with optimes from the logical clock.
pub fn repl_set_get_status(ctx: &mut Ctx<'_>, request: &Request) -> Reply {
    require_admin(request)?;
    let engine = ctx.engine;
    if !engine.is_replica_set() {
        return Err(CommandError::new(76, "not running with --replSet"));
    }
    let ts = engine.oplog.cluster_time();
    let optime = doc! { "ts": ts, "t": 1i64 };
    let now = DateTime::now();
    let uptime = i64::try_from(engine.started.elapsed().as_secs()).unwrap_or(i64::MAX);
    to_raw(&doc! {
        "set": engine.config.set_name.clone(),
        "date": now,
        "myState": 1,
        "term": 1i64,
        "syncSourceHost": "",
        "syncSourceId": -1,
        "heartbeatIntervalMillis": 2000i64,
        "majorityVoteCount": 1,
        "writeMajorityCount": 1,
        "votingMembersCount": 1,
        "writableVotingMembersCount": 1,
        "optimes": {
            "lastCommittedOpTime": optime.clone(),
            "lastCommittedWallTime": now,
            "readConcernMajorityOpTime": optime.clone(),
            "appliedOpTime": optime.clone(),
            "durableOpTime": optime.clone(),
            "lastAppliedWallTime": now,
            "lastDurableWallTime": now,
        },
        "members": [{
            "_id": 0,
            "name": engine.config.host.clone(),
            "health": 1.0,
            "state": 1,
            "stateStr": "PRIMARY",
            "uptime": uptime,
            "optime": optime.clone(),
            "optimeDate": now,
            "optimeDurable": optime,
            "optimeDurableDate": now,
            "lastAppliedWallTime": now,
            "lastDurableWallTime": now,
            "syncSourceHost": "",
            "syncSourceId": -1,
            "infoMessage": "",
            "electionTime": bson::Timestamp { time: u32::try_from(engine.started_at.timestamp_millis() / 1000).unwrap_or(0), increment: 1 },
            "electionDate": engine.started_at,
            "configVersion": 1,
            "configTerm": 1,
            "self": true,
            "lastHeartbeatMessage": "",
        }],
    })
}

/// `replSetGetConfig`: the one-member configuration, with a `replicaSetId` stable for the life of
/// the server (tools use it as the cluster's identity).
pub fn repl_set_get_config(ctx: &mut Ctx<'_>, request: &Request) -> Reply {
    require_admin(request)?;
    let engine = ctx.engine;
    if !engine.is_replica_set() {
        return Err(CommandError::new(76, "not running with --replSet"));
    }
    to_raw(&doc! {
        "config": {
            "_id": engine.config.set_name.clone(),
            "version": 1,
            "term": 1,
            "members": [{
                "_id": 0,
                "host": engine.config.host.clone(),
                "arbiterOnly": false,
                "buildIndexes": true,
                "hidden": false,
                "priority": 1.0,
                "tags": {},
                "secondaryDelaySecs": 0i64,
                "votes": 1,
            }],
            "protocolVersion": 1i64,
            "writeConcernMajorityJournalDefault": true,
            "settings": {
                "chainingAllowed": true,
                "heartbeatIntervalMillis": 2000,
                "heartbeatTimeoutSecs": 10,
                "electionTimeoutMillis": 10000,
                "catchUpTimeoutMillis": -1,
                "catchUpTakeoverDelayMillis": 30000,
                "getLastErrorModes": {},
                "getLastErrorDefaults": { "w": 1, "wtimeout": 0 },
                "replicaSetId": engine.process_id,
            },
        },
    })
}

/// `getCmdLineOpts`: the argv and parsed options of the server.
pub fn get_cmd_line_opts(ctx: &mut Ctx<'_>, request: &Request) -> Reply {
    require_admin(request)?;
    let engine = ctx.engine;
    let port = engine
        .config
        .host
        .rsplit(':')
        .next()
        .and_then(|p| p.parse::<i32>().ok())
        .unwrap_or(0);
    let mut parsed = doc! { "net": { "bindIp": "127.0.0.1", "port": port } };
    if engine.is_replica_set() {
        parsed.insert(
            "replication",
            doc! { "replSet": engine.config.set_name.clone() },
        );
    }
    to_raw(&doc! { "argv": engine.config.argv.clone(), "parsed": parsed })
}

/// `whatsmyuri`: the client's address as the server sees it.
pub fn whats_my_uri(ctx: &mut Ctx<'_>, _request: &Request) -> Reply {
    to_raw(&doc! { "you": ctx.conn.peer.clone() })
}

/// `killOp: 1, op: <opid>` (admin only). As on mongod, the reply is the same whether or not
/// the operation was found; killing another user's operation needs `killop` on the cluster.
pub fn kill_op(ctx: &mut Ctx<'_>, request: &Request) -> Reply {
    require_admin(request)?;
    let opid = match request.body.get("op") {
        Ok(Some(RawBsonRef::Int32(n))) => i64::from(n),
        Ok(Some(RawBsonRef::Int64(n))) => n,
        Ok(Some(RawBsonRef::Double(d))) if d.fract() == 0.0 => d as i64,
        Ok(None) => {
            return Err(CommandError::new(4, "Did not provide \"op\" field"));
        }
        _ => {
            return Err(CommandError::type_mismatch(
                "Expected field \"op\" to have numeric type",
            ));
        }
    };
    if let Some(op) = u32::try_from(opid)
        .ok()
        .and_then(|id| ctx.engine.operations.get(id))
    {
        let auth = &ctx.conn.auth;
        let own = op.user
            == auth
                .user()
                .map(|u| (u.spec.name.clone(), u.spec.db.clone()));
        if auth.is_enabled() && !own && !crate::auth::authz::has_cluster_action(auth, "killop") {
            return Err(CommandError::new(13, "Unauthorized"));
        }
        ctx.engine.operations.kill(op.opid);
    }
    to_raw(&doc! { "info": "attempting to kill op" })
}

/// `configureFailPoint` (admin only).
pub fn configure_fail_point(ctx: &mut Ctx<'_>, request: &Request) -> Reply {
    require_admin(request)?;
    let command = to_document(&request.body)?;
    let count = ctx.engine.failpoints.configure(&command)?;
    to_raw(&doc! { "count": count })
}

/// `setUserWriteBlockMode: 1, global: bool` (admin only, replica set).
pub async fn set_user_write_block_mode(ctx: &mut Ctx<'_>, request: &Request) -> Reply {
    require_admin(request)?;
    let fields = Fields::new("setUserWriteBlockMode", &request.body);
    let Some(global) = fields.bool("global")? else {
        return Err(CommandError::new(
            40414,
            "BSON field 'setUserWriteBlockMode.global' is missing but a required field",
        ));
    };
    // Writes already past their check finish first; the reply's operationTime (the clock
    // read after this) is then later than all of them.
    let engine = ctx.engine;
    let _exclusive = engine.user_write_gate.write().await;
    engine.user_writes_blocked.store(global, Ordering::Release);
    Ok(bson::RawDocumentBuf::new())
}
