//! Shared helpers for the integration tests: start a server, connect the official driver.

#![allow(dead_code)]

pub mod certs;

use mongodb::Client;
use mongodb::options::ClientOptions;
use mongoshift_testkit::{TestServer, TestServerHandle};

/// Starts a replica-set server on a free port.
pub async fn start() -> TestServerHandle {
    TestServer::builder()
        .start()
        .await
        .expect("the test server starts")
}

/// Starts a replica-set server whose periodic no-op oplog entry comes every `interval`: short
/// to see the high-water mark move while idle, long to keep counts of the oplog still.
pub async fn start_with_noop_interval(interval: std::time::Duration) -> TestServerHandle {
    TestServer::builder()
        .noop_interval(interval)
        .start()
        .await
        .expect("the test server starts")
}

/// A driver client for `server`, with a short server-selection timeout so that a broken
/// handshake fails the test quickly instead of hanging for 30 s.
pub async fn client(server: &TestServerHandle) -> Client {
    client_for_uri(&server.uri()).await
}

/// A driver client for a URI.
pub async fn client_for_uri(uri: &str) -> Client {
    let mut options = ClientOptions::parse(uri).await.expect("valid uri");
    options.server_selection_timeout = Some(std::time::Duration::from_secs(5));
    Client::with_options(options).expect("client options are valid")
}

/// The server error code of a driver error, if it is a command or write error.
pub fn error_code(e: &mongodb::error::Error) -> Option<i32> {
    use mongodb::error::{ErrorKind, WriteFailure};
    match e.kind.as_ref() {
        ErrorKind::Command(c) => Some(c.code),
        ErrorKind::Write(WriteFailure::WriteError(w)) => Some(w.code),
        ErrorKind::InsertMany(i) => i
            .write_errors
            .as_ref()
            .and_then(|errs| errs.first().map(|w| w.code)),
        ErrorKind::BulkWrite(b) => b.write_errors.values().next().map(|w| w.code),
        _ => None,
    }
}
