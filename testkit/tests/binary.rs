//! The `mongoshift-testd` binary: first stdout line, serving, exit 0 on SIGTERM/SIGINT, and the
//! `--user` / `--tls-cert` / `--tls-key` flags.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

mod common;

fn run_until_signal(signal: &str, extra: &[&str]) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mongoshift-testd"))
        .args([
            "--port",
            "0",
            "--mode",
            "replset",
            "--replset",
            "rs9",
            "--noop-interval-ms",
            "100",
        ])
        .args(extra)
        .stdout(Stdio::piped())
        .spawn()
        .expect("binary starts");
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut first = String::new();
    BufReader::new(stdout)
        .read_line(&mut first)
        .expect("first line");
    let addr = first
        .trim_end()
        .strip_prefix("listening on 127.0.0.1:")
        .unwrap_or_else(|| panic!("unexpected first line {first:?}"));
    let port: u16 = addr.parse().expect("a port number");

    // It serves the driver, with the requested replica-set name.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut options = mongodb::options::ClientOptions::parse(format!(
            "mongodb://127.0.0.1:{port}/?replicaSet=rs9"
        ))
        .await
        .unwrap();
        options.server_selection_timeout = Some(std::time::Duration::from_secs(5));
        let client = mongodb::Client::with_options(options).unwrap();
        let hello = client
            .database("admin")
            .run_command(mongodb::bson::doc! {"hello": 1})
            .await
            .unwrap();
        assert_eq!(hello.get_str("setName").unwrap(), "rs9");
    });

    let status = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    let exit = child.wait().expect("binary exits");
    assert_eq!(exit.code(), Some(0), "exit status {exit:?}");
}

#[test]
fn prints_its_address_and_exits_zero_on_sigterm() {
    run_until_signal("-TERM", &["--oplog-max-events", "1000"]);
}

#[test]
fn exits_zero_on_sigint() {
    run_until_signal("-INT", &[]);
}

/// Starts the binary with `args`, returns the child and its port.
fn spawn(args: &[&str]) -> (std::process::Child, u16) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mongoshift-testd"))
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .expect("binary starts");
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut first = String::new();
    BufReader::new(stdout)
        .read_line(&mut first)
        .expect("first line");
    let port = first
        .trim_end()
        .strip_prefix("listening on 127.0.0.1:")
        .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
        .parse()
        .expect("a port number");
    (child, port)
}

#[test]
fn users_and_tls_flags_are_served() {
    let certs = common::certs::generate();
    let cert = certs.server_cert_file.to_str().unwrap().to_string();
    let key = certs.server_key_file.to_str().unwrap().to_string();
    let (mut child, port) = spawn(&[
        "--port",
        "0",
        "--user",
        "alice:pw:readWrite@app",
        "--user",
        "bob:pw2",
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
    ]);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let uri = |creds: &str| {
            format!(
                "mongodb://{creds}127.0.0.1:{port}/?replicaSet=rs0&tls=true&tlsCAFile={}",
                certs.ca_file.display()
            )
        };
        let anonymous = common::client_for_uri(&uri("")).await;
        let err = anonymous
            .database("app")
            .run_command(mongodb::bson::doc! {"find": "c"})
            .await
            .unwrap_err();
        assert_eq!(common::error_code(&err), Some(13));
        let alice = common::client_for_uri(&uri("alice:pw@")).await;
        alice
            .database("app")
            .run_command(mongodb::bson::doc! {"insert": "c", "documents": [{"x": 1}]})
            .await
            .unwrap();
        let err = alice
            .database("admin")
            .run_command(mongodb::bson::doc! {"serverStatus": 1})
            .await
            .unwrap_err();
        assert_eq!(common::error_code(&err), Some(13));
        // Without a role list the user is root.
        let bob = common::client_for_uri(&uri("bob:pw2@")).await;
        bob.database("admin")
            .run_command(mongodb::bson::doc! {"serverStatus": 1})
            .await
            .unwrap();
    });
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    assert_eq!(child.wait().expect("binary exits").code(), Some(0));
}

#[test]
fn bad_security_flags_are_refused() {
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_mongoshift-testd"))
            .args(args)
            .output()
            .expect("binary runs")
    };
    // Usage errors (clap): exit 2.
    let out = run(&["--user", "nopassword"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("NAME[@DB]:PASSWORD"));
    let out = run(&["--tls-cert", "/nonexistent.pem"]);
    assert_eq!(out.status.code(), Some(2));
    // Semantic errors: exit 1 with the reason.
    let out = run(&["--user", "a:pw:root@app"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no built-in role root@app"));
    let out = run(&[
        "--tls-cert",
        "/nonexistent.pem",
        "--tls-key",
        "/nonexistent.key",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read /nonexistent.pem"));
}

#[test]
fn mongos_mode_serves_the_requested_shards() {
    let (mut child, port) = spawn(&["--port", "0", "--mode", "mongos", "--shards", "3"]);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let client = common::client_for_uri(&format!("mongodb://127.0.0.1:{port}/")).await;
        let admin = client.database("admin");
        let hello = admin
            .run_command(mongodb::bson::doc! {"hello": 1})
            .await
            .unwrap();
        assert_eq!(hello.get_str("msg").unwrap(), "isdbgrid");
        let shards = admin
            .run_command(mongodb::bson::doc! {"listShards": 1})
            .await
            .unwrap();
        assert_eq!(shards.get_array("shards").unwrap().len(), 3);
    });
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    assert_eq!(child.wait().expect("binary exits").code(), Some(0));
}
