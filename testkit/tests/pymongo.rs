//! Cross-driver smoke tests: pymongo scripts against a running server.
//!
//! Skipped (with a message) when `python3` cannot import pymongo; CI installs it.

use std::path::Path;
use std::process::Command;

mod common;

/// True when `python3 -c "import pymongo"` succeeds.
fn pymongo_available() -> bool {
    Command::new("python3")
        .args(["-c", "import pymongo"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Runs `tests/python/<script>` with the server URI and asserts it succeeds.
fn run_script(script: &str) {
    if !pymongo_available() {
        println!("SKIP {script}: python3 cannot import pymongo (pip install pymongo==4.20.0)");
        return;
    }
    let server = mongoshift_testkit::TestServer::builder()
        .start_blocking()
        .expect("server starts");
    run_script_with(script, &[&server.uri()]);
}

/// Runs `tests/python/<script>` with these arguments and asserts it succeeds.
fn run_script_with(script: &str, args: &[&str]) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/python")
        .join(script);
    let output = Command::new("python3")
        .arg(&path)
        .args(args)
        .output()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{script} failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    println!("{stdout}");
}

#[test]
fn pymongo_smoke() {
    run_script("smoke.py");
}

#[test]
fn pymongo_cluster_wide_watch() {
    run_script("watch.py");
}

#[test]
fn pymongo_scram_logins_over_tls() {
    if !pymongo_available() {
        println!("SKIP auth.py: python3 cannot import pymongo (pip install pymongo==4.20.0)");
        return;
    }
    let certs = common::certs::generate();
    let server = mongoshift_testkit::TestServer::builder()
        .user("admin", "adminpw", ["root"])
        .user("reader", "readerpw", ["read@app"])
        .tls(&certs.server_cert, &certs.server_key)
        .start_blocking()
        .expect("server starts");
    run_script_with("auth.py", &[&server.uri(), certs.ca_file.to_str().unwrap()]);
}
