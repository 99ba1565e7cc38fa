//! Cross-driver smoke test: the Node.js driver (which opens connections with the legacy
//! OP_QUERY handshake) against a running server.
//!
//! Skipped (with a message) when `node` cannot `require('mongodb')`; point `NODE_PATH` at a
//! `node_modules` containing `mongodb` (e.g. after `npm install mongodb@7.8.0`) to run it.

use std::path::Path;
use std::process::Command;

#[test]
fn node_driver_smoke() {
    let available = Command::new("node")
        .args(["-e", "require('mongodb')"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !available {
        println!(
            "SKIP node smoke test: node cannot require('mongodb') (npm install mongodb@7.8.0 and set NODE_PATH)"
        );
        return;
    }
    let server = mongoshift_testkit::TestServer::builder()
        .start_blocking()
        .expect("server starts");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/node/smoke.js");
    let output = Command::new("node")
        .arg(&script)
        .arg(server.uri())
        .output()
        .expect("node runs");
    assert!(
        output.status.success(),
        "node smoke failed\nstdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
