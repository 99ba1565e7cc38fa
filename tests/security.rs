//! Authentication, TLS and secrets, against testkit servers that require SCRAM logins over TLS:
//! a whole migration with credentials from the environment and from a file, after which no
//! output and no file holds a password; a wrong CA, a wrong password and missing privileges are
//! clear errors; and the source is only read.

mod common;

use std::path::Path;
use std::process::Command;

use bson::{Document, doc};
use common::certs::{TestCerts, generate};
use common::{Pair, assert_same_clusters, block_on};
use mongodb::Client;
use mongoshift_testkit::{TestServer, TestServerHandle};

const SOURCE_PASSWORD: &str = "Src-pa55word-7f3k";
const DESTINATION_PASSWORD: &str = "Dst-pa55word-9q2w";
const APP_PASSWORD: &str = "App-pa55word-1x8z";

struct Secure {
    source: TestServerHandle,
    destination: TestServerHandle,
    certs: TestCerts,
    dir: tempfile::TempDir,
}

/// Two servers that require TLS and SCRAM; `source_roles` are the migration user's roles.
fn secure(source_roles: &[&str]) -> Secure {
    let certs = generate();
    let source = TestServer::builder()
        .replica_set_name("src")
        .user("migrator", SOURCE_PASSWORD, source_roles)
        .user("app", APP_PASSWORD, ["root"])
        .tls(&certs.server_cert, &certs.server_key)
        .start_blocking()
        .expect("source starts");
    let destination = TestServer::builder()
        .replica_set_name("dst")
        .user(
            "loader",
            DESTINATION_PASSWORD,
            [
                "readWriteAnyDatabase",
                "dbAdminAnyDatabase",
                "clusterMonitor",
            ],
        )
        .user("app", APP_PASSWORD, ["root"])
        .tls(&certs.server_cert, &certs.server_key)
        .start_blocking()
        .expect("destination starts");
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(&certs.ca_file, dir.path().join("ca.pem")).unwrap();
    std::fs::copy(&certs.other_ca_file, dir.path().join("other-ca.pem")).unwrap();
    Secure {
        source,
        destination,
        certs,
        dir,
    }
}

impl Secure {
    /// A driver client logged in as the all-powerful application user.
    async fn app(&self, server: &TestServerHandle) -> Client {
        let uri = format!(
            "mongodb://app:{APP_PASSWORD}@{}/?replicaSet={}&tls=true&tlsCAFile={}",
            server.addr(),
            if server.addr() == self.source.addr() {
                "src"
            } else {
                "dst"
            },
            self.certs.ca_file.display()
        );
        Client::with_uri_str(uri).await.expect("client")
    }

    /// migration.toml: the source password from the environment, the destination's whole URI
    /// from a file.
    fn write_config(&self, ca: &str, extra: &str) {
        std::fs::write(
            self.dir.path().join("destination.uri"),
            format!(
                "mongodb://loader:{DESTINATION_PASSWORD}@{}/?replicaSet=dst&authSource=admin\n",
                self.destination.addr()
            ),
        )
        .unwrap();
        std::fs::write(
            self.dir.path().join("migration.toml"),
            format!(
                "version = 1\nname = \"secure\"\n\n[source]\nuri = \"mongodb://migrator:${{env:SOURCE_PASSWORD}}@{}/?replicaSet=src&authSource=admin\"\ntls_ca_file = \"{ca}\"\n\n[destination]\nuri_file = \"destination.uri\"\ntls_ca_file = \"{ca}\"\n\n{extra}",
                self.source.addr()
            ),
        )
        .unwrap();
    }

    fn run(&self, args: &[&str]) -> (i32, String) {
        let out = Command::new(assert_cmd::cargo::cargo_bin("mongoshift"))
            .current_dir(self.dir.path())
            .env("NO_COLOR", "1")
            .env("SOURCE_PASSWORD", SOURCE_PASSWORD)
            .args(args)
            .output()
            .expect("mongoshift runs");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code().unwrap_or(-1), text)
    }
}

fn seed(s: &Secure) {
    block_on(async {
        let c = s.app(&s.source).await;
        let shop = c.database("shop");
        shop.collection::<Document>("orders")
            .insert_many((0..500).map(|i| doc! { "_id": i, "v": i, "customer": i % 7 }))
            .await
            .unwrap();
        shop.run_command(doc! { "createIndexes": "orders", "indexes": [{ "key": { "customer": 1 }, "name": "customer_1" }] })
            .await
            .unwrap();
    });
}

/// Every file under `dir`, recursively, except the ones that hold a secret by design.
fn files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files(&path, out);
        } else if path.file_name().is_some_and(|n| n != "destination.uri") {
            out.push(path);
        }
    }
}

#[test]
fn a_migration_over_tls_with_scram_leaves_no_password_anywhere() {
    let s = secure(&["readAnyDatabase", "clusterMonitor", "backup"]);
    seed(&s);
    s.write_config(
        "ca.pem",
        "[cutover]\napproval = \"flag\"\nblock_source_writes = true\nmax_lag = \"2s\"\n",
    );
    let mut transcript = String::new();
    let mut step = |args: &[&str], expected: i32| {
        let (code, text) = s.run(args);
        assert_eq!(code, expected, "mongoshift {}:\n{text}", args.join(" "));
        transcript.push_str(&text);
    };
    step(&["validate"], 0);
    step(&["validate", "--json"], 0);
    step(&["-vv", "plan"], 0);
    step(&["plan", "--json"], 0);
    step(&["plan", "--out", "reviewed.plan"], 0);
    step(
        &[
            "-vv",
            "--log-format",
            "json",
            "apply",
            "reviewed.plan",
            "--approve-cutover",
            "--json",
        ],
        0,
    );
    step(&["status"], 0);
    step(&["status", "--json"], 0);
    step(&["-vv", "verify"], 0);
    step(&["verify", "--json"], 0);
    // The flag policy refuses the approval file, and says how to approve instead.
    step(&["cutover"], 1);
    step(&["apply"], 0);

    assert!(transcript.contains("committed"), "{transcript}");
    assert!(
        transcript.contains("****"),
        "credentials are shown redacted: {transcript}"
    );
    for secret in [SOURCE_PASSWORD, DESTINATION_PASSWORD] {
        assert!(
            !transcript.contains(secret),
            "a password in the output:\n{transcript}"
        );
    }
    let mut scanned = Vec::new();
    files(s.dir.path(), &mut scanned);
    let names: Vec<String> = scanned
        .iter()
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    for expected in ["migration.lock", "reviewed.plan", "migration-report.json"] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} was written: {names:?}"
        );
    }
    assert!(
        scanned
            .iter()
            .any(|p| p.to_string_lossy().contains("spool")),
        "the spool was scanned: {names:?}"
    );
    for path in &scanned {
        let bytes = std::fs::read(path).unwrap();
        for secret in [SOURCE_PASSWORD, DESTINATION_PASSWORD] {
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{} holds a password",
                path.display()
            );
        }
    }
    eprintln!(
        "secrets: {} commands, {} files scanned, 0 passwords found",
        12,
        scanned.len()
    );
    // The same data arrived, read back over TLS with a login.
    let (source, destination) = block_on(async {
        let count = |c: Client| async move {
            c.database("shop")
                .collection::<Document>("orders")
                .count_documents(doc! {})
                .await
                .unwrap()
        };
        (
            count(s.app(&s.source).await).await,
            count(s.app(&s.destination).await).await,
        )
    });
    assert_eq!((source, destination), (500, 500));
}

#[test]
fn a_wrong_ca_a_wrong_password_and_missing_privileges_are_named() {
    let s = secure(&["read@shop"]);
    seed(&s);

    s.write_config("other-ca.pem", "");
    let (code, text) = s.run(&["plan"]);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("source.reachable") && text.contains("certificate"),
        "a TLS verification failure says so: {text}"
    );
    assert!(
        text.contains("UnknownIssuer") || text.contains("unknown issuer"),
        "{text}"
    );

    s.write_config("ca.pem", "");
    let out = Command::new(assert_cmd::cargo::cargo_bin("mongoshift"))
        .current_dir(s.dir.path())
        .env("NO_COLOR", "1")
        .env("SOURCE_PASSWORD", "not-the-password")
        .arg("plan")
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.to_lowercase().contains("authentication failed"),
        "{text}"
    );
    assert!(!text.contains("not-the-password"), "{text}");

    let (code, text) = s.run(&["plan"]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("source.privileges"), "{text}");
    for missing in ["changeStream", "listDatabases", "local.oplog.rs"] {
        assert!(text.contains(missing), "{missing} is named: {text}");
    }
    assert!(
        text.contains("readAnyDatabase and clusterMonitor"),
        "the roles to grant: {text}"
    );
    assert!(
        text.contains("destination.privileges") && !text.contains("error destination.privileges"),
        "{text}"
    );
}

#[test]
fn the_source_is_only_read() {
    let pair = Pair::new();
    block_on(async {
        let c = common::client(&pair.source).await;
        c.database("shop")
            .collection::<Document>("orders")
            .insert_many((0..1000).map(|i| doc! { "_id": i, "v": i }))
            .await
            .unwrap();
    });
    let before = pair.source.cluster_time();
    pair.write_config(
        "[cutover]\napproval = \"auto\"\nblock_source_writes = true\nmax_lag = \"2s\"\n",
    );
    for args in [&["plan"][..], &["apply"], &["verify"], &["status"]] {
        let run = pair.run(args);
        assert_eq!(run.code, 0, "{args:?}: {}", run.stderr);
    }
    assert_same_clusters(&pair.source, &pair.destination);
    // One write of ours, so the check below is seen to see writes.
    block_on(async {
        common::client(&pair.source)
            .await
            .database("probe")
            .collection::<Document>("marker")
            .insert_one(doc! { "x": 1 })
            .await
            .unwrap();
    });
    // Every oplog entry after the seeding: only no-ops, the write block's own record, or the
    // marker.
    let entries: Vec<Document> = block_on(async {
        use futures_util::TryStreamExt;
        common::client(&pair.source)
            .await
            .database("local")
            .collection::<Document>("oplog.rs")
            .find(doc! { "ts": { "$gt": before } })
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap()
    });
    let writes: Vec<&Document> = entries
        .iter()
        .filter(|e| e.get_str("op").unwrap_or_default() != "n")
        .filter(|e| {
            let ns = e.get_str("ns").unwrap_or_default();
            !ns.starts_with("config.user_write_blocking") && !ns.starts_with("admin.system.")
        })
        .collect();
    let (marker, others): (Vec<&Document>, Vec<&Document>) = writes
        .into_iter()
        .partition(|e| e.get_str("ns").unwrap_or_default().starts_with("probe."));
    assert!(!marker.is_empty(), "the marker write is seen: {entries:?}");
    assert!(
        others.is_empty(),
        "mongoshift wrote to the source: {others:?}"
    );
    eprintln!(
        "source writes: {} oplog entries after the seeding besides the marker, 0 by mongoshift",
        entries.len() - marker.len()
    );
}
