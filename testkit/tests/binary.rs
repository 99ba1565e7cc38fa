//! The `mongoshift-testd` binary: first stdout line, serving, exit 0 on SIGTERM/SIGINT.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

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

#[test]
fn mongos_mode_serves_the_requested_shards() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mongoshift-testd"))
        .args(["--port", "0", "--mode", "mongos", "--shards", "3"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("binary starts");
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut first = String::new();
    BufReader::new(stdout)
        .read_line(&mut first)
        .expect("first line");
    let port: u16 = first
        .trim_end()
        .strip_prefix("listening on 127.0.0.1:")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("unexpected first line {first:?}"));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut options =
            mongodb::options::ClientOptions::parse(format!("mongodb://127.0.0.1:{port}/"))
                .await
                .unwrap();
        options.server_selection_timeout = Some(std::time::Duration::from_secs(5));
        let client = mongodb::Client::with_options(options).unwrap();
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
