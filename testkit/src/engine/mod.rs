//! The engine: all server state behind the commands.
//!
//! Responsibilities: the catalog (databases, collections, views, indexes) and the documents,
//! the oplog with its logical clock (the single commit path of every write), cursors, sessions,
//! failpoints and the user-write block. Commands call into it; it knows nothing about sockets.
//!
//! Locking (all std locks, none held across an `.await`): the catalog lock is taken before a
//! collection lock, and a collection lock before the oplog mutex, never the other way round.

pub mod catalog;
pub mod change_stream;
pub mod collection;
pub mod current_op;
pub mod cursor;
pub mod failpoint;
pub mod index;
pub mod namespace;
pub mod oplog;
pub mod oplog_view;
pub mod scan;
pub mod session;
pub mod sharding;
pub mod transaction;

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, Instant};

use bson::{DateTime, Timestamp};

pub use self::catalog::Catalog;
use self::cursor::CursorTable;
use self::failpoint::FailPoints;
use self::oplog::{Oplog, OplogOp};
use self::session::SessionTable;
use self::sharding::Sharding;

/// What kind of deployment the server impersonates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Mode {
    /// A single-member replica set primary (the default): sessions, retryable writes,
    /// transactions and change streams are available.
    #[default]
    ReplicaSet,
    /// A standalone mongod: no `setName`, no change streams, no transactions.
    Standalone,
    /// A mongos in front of `EngineConfig::shards` internal replica-set shards (one process,
    /// one store; see [`sharding`]): `msg: "isdbgrid"`, sharding commands, `config.*` views.
    Mongos,
}

/// Static configuration of one server.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Replica set or standalone.
    pub mode: Mode,
    /// The replica-set name (`setName`), `rs0` by default.
    pub set_name: String,
    /// The address advertised in `hosts`, `me` and `primary` (`127.0.0.1:PORT`).
    pub host: String,
    /// How many oplog entries to retain.
    pub oplog_max_events: usize,
    /// How often an idle server writes a no-op so change-stream high-water marks advance
    /// (mongod: `periodicNoopIntervalSecs`, 10 s).
    pub noop_interval: Duration,
    /// The command line to report from `getCmdLineOpts`.
    pub argv: Vec<String>,
    /// How many internal shards a mongos fronts (ignored in the other modes).
    pub shards: usize,
}

/// The whole server state.
#[derive(Debug)]
pub struct Engine {
    /// Static configuration.
    pub config: EngineConfig,
    /// Databases, collections, views and their documents.
    pub catalog: Catalog,
    /// The logical clock and the oplog.
    pub oplog: Oplog,
    /// Open cursors.
    pub cursors: CursorTable,
    /// Logical sessions (retryable writes).
    pub sessions: SessionTable,
    /// Configured failpoints.
    pub failpoints: FailPoints,
    /// `setUserWriteBlockMode`: while true, user writes fail with 371 `UserWritesBlocked`.
    pub user_writes_blocked: AtomicBool,
    /// Held shared by every write command from its write-block check to its reply, and
    /// exclusively by `setUserWriteBlockMode`: as on mongod (which takes the global lock in
    /// exclusive mode), enabling the block waits for writes already past the check, so no
    /// write commits after the block's operationTime.
    pub user_write_gate: tokio::sync::RwLock<()>,
    /// Operations in progress (`$currentOp`, `killOp`).
    pub operations: current_op::Operations,
    /// Connection ids handed out (`connectionId` in hello).
    next_connection_id: AtomicI64,
    /// Connections open now.
    open_connections: AtomicI64,
    /// Connections accepted since start.
    connections_created: AtomicI64,
    /// Process start, for `uptime`.
    pub started: Instant,
    /// Process start as a date, for `serverStatus`/`replSetGetStatus`.
    pub started_at: DateTime,
    /// The UUID of `local.oplog.rs`.
    pub oplog_uuid: bson::Uuid,
    /// A per-process id (`serverStatus.pid`-like identity and `topologyVersion` material).
    pub process_id: bson::oid::ObjectId,
    /// Shards, databases, chunks and the balancer of a mongos; `None` in the other modes.
    pub sharding: Option<Sharding>,
}

impl Engine {
    /// Builds an empty server state.
    pub fn new(config: EngineConfig) -> Engine {
        let oplog = Oplog::new(config.oplog_max_events);
        let sharding = (config.mode == Mode::Mongos)
            .then(|| Sharding::new(config.shards, &config.host, oplog.cluster_time()));
        Engine {
            sharding,
            catalog: Catalog::default(),
            oplog,
            cursors: CursorTable::default(),
            sessions: SessionTable::default(),
            failpoints: FailPoints::default(),
            user_writes_blocked: AtomicBool::new(false),
            user_write_gate: tokio::sync::RwLock::new(()),
            operations: current_op::Operations::default(),
            next_connection_id: AtomicI64::new(1),
            open_connections: AtomicI64::new(0),
            connections_created: AtomicI64::new(0),
            started: Instant::now(),
            started_at: DateTime::now(),
            process_id: bson::oid::ObjectId::new(),
            oplog_uuid: bson::Uuid::new(),
            config,
        }
    }

    /// True when the deployment has replica-set semantics: a logical clock gossiped in
    /// `$clusterTime`, sessions with retryable writes and transactions, change streams. That
    /// is a replica-set member, and also a mongos, whose shards are replica sets.
    pub fn is_replica_set(&self) -> bool {
        matches!(self.config.mode, Mode::ReplicaSet | Mode::Mongos)
    }

    /// True when impersonating a mongos.
    pub fn is_mongos(&self) -> bool {
        self.config.mode == Mode::Mongos
    }

    /// Allocates the id of a new connection.
    pub fn next_connection_id(&self) -> i64 {
        self.next_connection_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Counts a newly accepted connection.
    pub fn connection_opened(&self) {
        self.open_connections.fetch_add(1, Ordering::Relaxed);
        self.connections_created.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a closed connection.
    pub fn connection_closed(&self) {
        self.open_connections.fetch_sub(1, Ordering::Relaxed);
    }

    /// Connections open now (`serverStatus.connections.current`).
    pub fn open_connections(&self) -> i64 {
        self.open_connections.load(Ordering::Relaxed)
    }

    /// Connections accepted since start (`serverStatus.connections.totalCreated`).
    pub fn connections_created(&self) -> i64 {
        self.connections_created.load(Ordering::Relaxed)
    }

    /// mongod's periodic no-op writer: if the clock has not moved since `last_seen` (no write
    /// during the interval), commit a no-op so that change-stream high-water marks advance on an
    /// idle server. Returns the clock value to compare against next time.
    pub fn noop_if_idle(&self, last_seen: Timestamp) -> Timestamp {
        if self.is_replica_set() && self.oplog.cluster_time() == last_seen {
            self.oplog.append(vec![OplogOp::Noop], None)
        } else {
            self.oplog.cluster_time()
        }
    }

    /// Expires idle cursors (10 min) and sessions (30 min), as mongod's reapers do.
    pub fn expire_idle(&self) {
        self.cursors.expire();
        self.sessions.expire(Duration::from_secs(30 * 60));
    }
}
