//! `mongoshift-testkit`: an in-process server that speaks the MongoDB wire protocol.
//!
//! No machine that builds or tests mongoshift can run a real `mongod`, so every test, example and
//! benchmark runs against this server instead. The official drivers (Rust, Python, Node) cannot
//! tell it apart from a small MongoDB 7.0 replica set (or, with [`Mode::Mongos`], a mongos in
//! front of several shards) for what mongoshift does. Where it deviates
//! from a real server, that is a bug or a documented limitation (see `testkit/README.md`).
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let server = mongoshift_testkit::TestServer::builder().start().await?;
//! let uri = server.uri(); // mongodb://127.0.0.1:PORT/?replicaSet=rs0
//! # let _ = uri;
//! server.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! Layout (one layer per job, in the order a request flows, after mini-redis):
//! - [`wire`]: bytes ⇄ OP_MSG / OP_QUERY / OP_REPLY frames;
//! - [`connection`]: one socket, frame at a time;
//! - [`command`]: generic arguments, failpoints, retryable writes, dispatch to one module per
//!   command family, reply finishing (`ok`, `$clusterTime`, `operationTime`);
//! - [`engine`]: catalog, documents and indexes, oplog and logical clock, cursors, sessions;
//! - [`server`]: listener, per-connection tasks, graceful shutdown, and the public API;
//! - [`auth`]: users, SCRAM, built-in roles and per-command authorization;
//! - [`tls`]: the TLS acceptor (rustls, ring provider);
//! - [`query`]: the pure query language (filters, updates, projections, sorts, aggregation).

#![forbid(unsafe_code)]

pub mod auth;
pub mod command;
pub mod connection;
pub mod engine;
pub mod error;
pub mod query;
pub mod server;
pub mod tls;
pub mod wire;

pub use auth::{RoleName, UserError, UserSpec};
pub use engine::Mode;
pub use error::CommandError;
pub use server::{ServerError, TestServer, TestServerBuilder, TestServerHandle};
pub use tls::TlsError;
