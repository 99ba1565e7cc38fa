//! The listener, per-connection tasks, graceful shutdown, and the public [`TestServer`] API.
//!
//! The server runs on its own multi-thread tokio runtime on a dedicated thread owned by the
//! [`TestServerHandle`]. That keeps it serving when a test blocks its own runtime, uses several
//! runtimes, or is synchronous code driving a subprocess. Shutdown follows mini-redis: a
//! broadcast tells every connection task to stop after its current command, and an mpsc channel
//! whose senders live in those tasks tells the listener when all of them are gone.
//!
//! With users configured, connections must authenticate (`crate::auth`); with a TLS
//! certificate, the listener speaks only TLS (`crate::tls`). Both are off by default.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, broadcast, mpsc, oneshot};
use tokio_rustls::TlsAcceptor;

use crate::auth::user::UserDb;
use crate::auth::{Authenticator, ConnAuth, UserError, UserSpec};
use crate::command::{self, ConnState, Outcome};
use crate::connection::Connection;
use crate::engine::{Engine, EngineConfig, Mode};
use crate::error::CommandError;
use crate::wire::{self, Request};

/// How many connections may be open at once (mongod's default `maxIncomingConnections` is far
/// higher; tests never come close to this).
const MAX_CONNECTIONS: usize = 10_000;

/// How long a client may take to complete the TLS handshake before it is disconnected.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Errors starting or stopping a server.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Binding the listening socket failed.
    #[error("cannot listen on 127.0.0.1:{port}: {source}")]
    Bind {
        /// The requested port.
        port: u16,
        /// The OS error.
        source: std::io::Error,
    },
    /// Building the server's runtime or thread failed.
    #[error("cannot start the server runtime: {0}")]
    Runtime(std::io::Error),
    /// A declared user is invalid (unknown role, duplicate, ...).
    #[error(transparent)]
    User(#[from] UserError),
    /// The TLS certificate or key cannot be used.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
}

/// Entry point: `TestServer::builder()...start().await`.
#[derive(Debug)]
pub struct TestServer;

impl TestServer {
    /// A builder with the defaults: replica set `rs0`, an ephemeral port, 100 000 retained oplog
    /// entries, a 10 s idle no-op interval (and 2 shards if switched to [`Mode::Mongos`]).
    pub fn builder() -> TestServerBuilder {
        TestServerBuilder::default()
    }
}

/// Configures a server before starting it.
#[derive(Debug, Clone)]
pub struct TestServerBuilder {
    /// Replica set, standalone or mongos.
    mode: Mode,
    /// Internal shards behind a mongos.
    shards: usize,
    /// `setName` in replica-set mode.
    set_name: String,
    /// The port to listen on; 0 picks a free one.
    port: u16,
    /// Oplog retention in entries.
    oplog_max_events: usize,
    /// Idle no-op interval.
    noop_interval: Duration,
    /// argv reported by `getCmdLineOpts`.
    argv: Vec<String>,
    /// Users; when there is at least one, clients must authenticate.
    users: Vec<UserSpec>,
    /// PEM certificate chain and private key; when set, only TLS is accepted.
    tls: Option<(Vec<u8>, Vec<u8>)>,
}

impl Default for TestServerBuilder {
    fn default() -> Self {
        TestServerBuilder {
            mode: Mode::ReplicaSet,
            shards: 2,
            set_name: "rs0".to_string(),
            port: 0,
            oplog_max_events: 100_000,
            noop_interval: Duration::from_secs(10),
            argv: vec!["mongoshift-testkit".to_string()],
            users: Vec::new(),
            tls: None,
        }
    }
}

impl TestServerBuilder {
    /// Replica set (default), standalone or mongos.
    pub fn mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }

    /// How many internal shards (`shard0`..) a [`Mode::Mongos`] server fronts (2 by default,
    /// at least 1). Ignored in the other modes.
    pub fn shards(mut self, n: usize) -> Self {
        self.shards = n.max(1);
        self
    }

    /// The replica-set name (`rs0` by default).
    pub fn replica_set_name(mut self, name: impl Into<String>) -> Self {
        self.set_name = name.into();
        self
    }

    /// The port to listen on (0, the default, picks a free port).
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// How many oplog entries to keep; older history is lost (change streams resuming before
    /// it get `ChangeStreamHistoryLost`).
    pub fn oplog_max_events(mut self, n: usize) -> Self {
        self.oplog_max_events = n.max(1);
        self
    }

    /// How often an idle server writes a no-op so change-stream high-water marks advance.
    pub fn noop_interval(mut self, interval: Duration) -> Self {
        self.noop_interval = interval.max(Duration::from_millis(10));
        self
    }

    /// The argv `getCmdLineOpts` reports.
    pub fn argv(mut self, argv: Vec<String>) -> Self {
        self.argv = argv;
        self
    }

    /// Adds a user and turns authentication on. The user lives in `admin`, or in `db` when
    /// `name` is `name@db`; roles are built-in role names, `role` meaning the role on the
    /// user's database and `role@db` on another, e.g.
    /// `.user("app", "secret", ["readWrite@shop", "clusterMonitor"])`. The user can log in with
    /// SCRAM-SHA-256 and SCRAM-SHA-1. Unknown roles make [`start`](Self::start) fail.
    pub fn user<I, S>(mut self, name: &str, password: &str, roles: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.users.push(UserSpec::new(name, password, roles));
        self
    }

    /// Adds an already built user specification (see [`UserSpec::parse_cli`]).
    pub fn user_spec(mut self, spec: UserSpec) -> Self {
        self.users.push(spec);
        self
    }

    /// Serves TLS only, with this PEM certificate chain (server certificate first) and PEM
    /// private key. Clients connect with `tls=true` and a CA that signed the certificate.
    pub fn tls(mut self, cert_pem: impl AsRef<[u8]>, key_pem: impl AsRef<[u8]>) -> Self {
        self.tls = Some((cert_pem.as_ref().to_vec(), key_pem.as_ref().to_vec()));
        self
    }

    /// Starts the server on its own thread and runtime and returns once it is listening.
    pub async fn start(self) -> Result<TestServerHandle, ServerError> {
        self.start_blocking()
    }

    /// Like [`start`](Self::start), for synchronous callers.
    pub fn start_blocking(self) -> Result<TestServerHandle, ServerError> {
        let users = UserDb::new(self.users)?;
        let security = Security {
            auth: (!users.is_empty()).then(|| Arc::new(Authenticator::new(users))),
            tls: match &self.tls {
                Some((cert, key)) => Some(crate::tls::acceptor(cert, key)?),
                None => None,
            },
        };
        let tls = security.tls.is_some();
        let std_listener =
            std::net::TcpListener::bind(("127.0.0.1", self.port)).map_err(|source| {
                ServerError::Bind {
                    port: self.port,
                    source,
                }
            })?;
        std_listener
            .set_nonblocking(true)
            .map_err(ServerError::Runtime)?;
        let addr = std_listener.local_addr().map_err(ServerError::Runtime)?;
        let config = EngineConfig {
            mode: self.mode,
            set_name: self.set_name,
            host: format!("127.0.0.1:{}", addr.port()),
            oplog_max_events: self.oplog_max_events,
            noop_interval: self.noop_interval,
            argv: self.argv,
            shards: self.shards,
        };
        let engine = Arc::new(Engine::new(config));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("testkit-server")
            .enable_all()
            .build()
            .map_err(ServerError::Runtime)?;
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let (done_tx, done_rx) = oneshot::channel::<()>();
        let thread_engine = Arc::clone(&engine);
        let thread = std::thread::Builder::new()
            .name(format!("testkit-{}", addr.port()))
            .spawn(move || {
                runtime.block_on(async move {
                    match TcpListener::from_std(std_listener) {
                        Ok(listener) => serve(listener, thread_engine, security, stop_rx).await,
                        Err(e) => tracing::error!(error = %e, "cannot register the listener"),
                    }
                });
                // Connection tasks that did not finish within the grace period are cancelled.
                runtime.shutdown_timeout(Duration::from_secs(1));
                let _ = done_tx.send(());
            })
            .map_err(ServerError::Runtime)?;
        Ok(TestServerHandle {
            addr,
            tls,
            engine,
            stop: Some(stop_tx),
            done: Some(done_rx),
            thread: Some(thread),
        })
    }
}

/// A running server. Dropping it shuts the server down.
#[derive(Debug)]
pub struct TestServerHandle {
    /// The bound address (always 127.0.0.1).
    addr: SocketAddr,
    /// Whether the listener speaks only TLS (the URI then says `tls=true`).
    tls: bool,
    /// The shared state, for failpoint control from Rust.
    engine: Arc<Engine>,
    /// Fires the shutdown.
    stop: Option<oneshot::Sender<()>>,
    /// Completes when the server thread has finished.
    done: Option<oneshot::Receiver<()>>,
    /// The server thread.
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TestServerHandle {
    /// The connection string: `mongodb://127.0.0.1:PORT/?replicaSet=rs0` for a replica set,
    /// `mongodb://127.0.0.1:PORT/` for a standalone or a mongos, with `tls=true` added when
    /// the server speaks TLS (clients still need `tlsCAFile`). Credentials are not included.
    pub fn uri(&self) -> String {
        let mut uri = if self.engine.is_replica_set() && !self.engine.is_mongos() {
            format!(
                "mongodb://{}/?replicaSet={}",
                self.addr, self.engine.config.set_name
            )
        } else {
            format!("mongodb://{}/", self.addr)
        };
        if self.tls {
            uri.push_str(if uri.contains('?') {
                "&tls=true"
            } else {
                "?tls=true"
            });
        }
        uri
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Configures a failpoint with the same document `configureFailPoint` takes, e.g.
    /// `doc! {"configureFailPoint": "failCommand", "mode": {"times": 1}, "data": {...}}`.
    pub fn configure_fail_point(&self, command: &bson::Document) -> Result<(), CommandError> {
        self.engine.failpoints.configure(command).map(|_| ())
    }

    /// Disables every failpoint.
    pub fn clear_fail_points(&self) {
        self.engine.failpoints.clear();
    }

    /// The current cluster time (the time of the last write).
    pub fn cluster_time(&self) -> bson::Timestamp {
        self.engine.oplog.cluster_time()
    }

    /// Stops accepting connections, lets every connection finish its current command, and
    /// waits for the server thread to exit.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(done) = self.done.take() {
            let _ = done.await;
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for TestServerHandle {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            // The server has its own runtime, so joining cannot deadlock on the caller's.
            let _ = thread.join();
        }
    }
}

/// What every connection needs besides the engine: authentication and TLS settings.
#[derive(Clone)]
struct Security {
    /// Users and cursor owners; `None` when the server has no users.
    auth: Option<Arc<Authenticator>>,
    /// The TLS acceptor; `None` for plain TCP.
    tls: Option<TlsAcceptor>,
}

/// Accepts connections until `stop` fires, then shuts down gracefully.
async fn serve(
    listener: TcpListener,
    engine: Arc<Engine>,
    security: Security,
    mut stop: oneshot::Receiver<()>,
) {
    let (notify_shutdown, _) = broadcast::channel::<()>(1);
    let (shutdown_complete_tx, mut shutdown_complete_rx) = mpsc::channel::<()>(1);
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));

    let housekeeping = tokio::spawn(housekeeping(
        Arc::clone(&engine),
        notify_shutdown.subscribe(),
    ));

    loop {
        let permit = tokio::select! {
            _ = &mut stop => break,
            permit = Arc::clone(&limit).acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let accepted = tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => accepted,
        };
        let (socket, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // Transient accept errors (EMFILE, ECONNABORTED) must not stop the server.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let engine = Arc::clone(&engine);
        let security = security.clone();
        let mut shutdown = notify_shutdown.subscribe();
        let complete = shutdown_complete_tx.clone();
        tokio::spawn(async move {
            engine.connection_opened();
            handle_connection(&engine, &security, socket, peer, &mut shutdown).await;
            engine.connection_closed();
            drop(permit);
            drop(complete);
        });
    }

    drop(listener);
    let _ = notify_shutdown.send(());
    drop(notify_shutdown);
    drop(shutdown_complete_tx);
    // Every connection task holds a sender; recv returns None once all have finished.
    let _ = tokio::time::timeout(Duration::from_secs(5), shutdown_complete_rx.recv()).await;
    let _ = housekeeping.await;
}

/// Expires idle cursors and sessions, and writes mongod's periodic no-op while idle.
async fn housekeeping(engine: Arc<Engine>, mut shutdown: broadcast::Receiver<()>) {
    let interval = engine.config.noop_interval;
    let mut last_seen = engine.oplog.cluster_time();
    loop {
        tokio::select! {
            _ = shutdown.recv() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        last_seen = engine.noop_if_idle(last_seen);
        engine.expire_idle();
    }
}

/// Serves one connection until the peer leaves, breaks the protocol, or the server stops.
async fn handle_connection(
    engine: &Arc<Engine>,
    security: &Security,
    socket: TcpStream,
    peer: SocketAddr,
    shutdown: &mut broadcast::Receiver<()>,
) {
    let mut connection = match &security.tls {
        None => Connection::new(socket),
        Some(acceptor) => {
            let _ = socket.set_nodelay(true);
            // The handshake runs in the connection's task so a slow client never blocks
            // accepting others; a plain-text client fails it and is disconnected.
            let handshake = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(socket));
            let stream = tokio::select! {
                _ = shutdown.recv() => return,
                result = handshake => match result {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "TLS handshake timed out");
                        return;
                    }
                },
            };
            Connection::from_stream(stream)
        }
    };
    let mut state = ConnState {
        id: engine.next_connection_id(),
        peer: peer.to_string(),
        auth: ConnAuth::new(security.auth.clone()),
        ..ConnState::default()
    };
    loop {
        let read = tokio::select! {
            _ = shutdown.recv() => break,
            read = connection.read_request() => read,
        };
        let (header, request) = match read {
            Ok(Some(pair)) => pair,
            Ok(None) => break,
            Err(e) => {
                // mongod closes a connection that breaks the protocol; other connections are
                // unaffected.
                tracing::debug!(connection = state.id, error = %e, "closing connection");
                break;
            }
        };
        let (outcome, legacy) = match request {
            Request::Msg(msg) => (command::handle_msg(engine, &mut state, msg).await, false),
            Request::Query(query) => (command::handle_query(engine, &mut state, query).await, true),
        };
        match outcome {
            Outcome::Reply(body) => {
                let id = connection.next_request_id();
                let body = body.as_bytes();
                let prefix = if legacy {
                    wire::op_reply_prefix(id, header.request_id, body.len())
                } else {
                    wire::op_msg_prefix(id, header.request_id, body.len())
                };
                if connection.write_message(&prefix, body).await.is_err() {
                    break;
                }
            }
            Outcome::NoReply => {}
            Outcome::Close => break,
        }
    }
    connection.shutdown().await;
}
