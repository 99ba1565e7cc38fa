//! The configuration commands as a user runs them: `init`, `validate`, `schema`.

use std::path::Path;
use std::process::Output;

use assert_cmd::Command;

fn mongoshift(dir: &Path) -> Command {
    let mut cmd = Command::cargo_bin("mongoshift").expect("binary built");
    cmd.current_dir(dir)
        .env("NO_COLOR", "1")
        .env_remove("MONGOSHIFT_LOG");
    cmd
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn run(cmd: &mut Command) -> (i32, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = cmd.output().expect("runs");
    (status.code().unwrap_or(-1), text(&stdout), text(&stderr))
}

#[test]
fn init_then_validate_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out, _) = run(mongoshift(dir.path()).arg("init"));
    assert_eq!(code, 0);
    assert!(out.contains("wrote migration.toml"), "{out}");
    let (code, out, err) = run(mongoshift(dir.path()).arg("validate"));
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "migration.toml is valid\n");
}

#[test]
fn init_refuses_to_overwrite_without_force() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("migration.toml");
    std::fs::write(&file, "# mine\n").unwrap();
    let (code, _, err) = run(mongoshift(dir.path()).arg("init"));
    assert_eq!(code, 1);
    assert!(err.contains("already exists; pass --force"), "{err}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "# mine\n");
    let (code, _, _) = run(mongoshift(dir.path()).args(["init", "--force"]));
    assert_eq!(code, 0);
    assert!(
        std::fs::read_to_string(&file)
            .unwrap()
            .starts_with("# mongoshift migration")
    );
}

#[test]
fn init_never_writes_a_password() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out, _) = run(mongoshift(dir.path()).args([
        "-c",
        "m.toml",
        "init",
        "--source",
        "mongodb://alice:hunter2@src:27017/?replicaSet=rs0",
        "--destination",
        "mongodb://dst:27017/?replicaSet=rs1",
    ]));
    assert_eq!(code, 0);
    assert!(out.contains("MONGOSHIFT_SOURCE_PASSWORD"), "{out}");
    let written = std::fs::read_to_string(dir.path().join("m.toml")).unwrap();
    assert!(!written.contains("hunter2"));
    let (code, _, err) = run(mongoshift(dir.path())
        .args(["-c", "m.toml", "validate"])
        .env("MONGOSHIFT_SOURCE_PASSWORD", "hunter2"));
    assert_eq!(code, 0, "{err}");

    let (code, _, err) = run(mongoshift(dir.path()).args([
        "-c",
        "bad.toml",
        "init",
        "--source",
        "mongodb://alice:hunter2@src:27017/?bogus=1",
    ]));
    assert_eq!(code, 1);
    assert!(
        err.contains("--source is not a valid connection string"),
        "{err}"
    );
    assert!(!err.contains("hunter2"), "{err}");
    assert!(!dir.path().join("bad.toml").exists());
}

const THREE_ERRORS: &str = r#"version = 1
colour = "blue"

[destination]
uri = "mongodb://dest.example.net:27017/?replicaSet=rs1"

[cutover]
max_lag = "5 parsecs"
"#;

#[test]
fn validate_positions_every_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("migration.toml"), THREE_ERRORS).unwrap();
    let (code, out, err) = run(mongoshift(dir.path()).arg("validate"));
    assert_eq!(code, 1);
    assert_eq!(out, "");
    insta::assert_snapshot!(err);
}

#[test]
fn validate_json_lists_positions() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("migration.toml"), THREE_ERRORS).unwrap();
    let (code, out, _) = run(mongoshift(dir.path()).args(["validate", "--json"]));
    assert_eq!(code, 1);
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["format_version"], "1");
    assert_eq!(json["valid"], false);
    let positions: Vec<(String, u64, u64)> = json["diagnostics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["key"].as_str().unwrap().to_owned(),
                d["line"].as_u64().unwrap(),
                d["column"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        positions,
        vec![
            ("source".to_owned(), 1, 1),
            ("colour".to_owned(), 2, 1),
            ("cutover.max_lag".to_owned(), 8, 11),
        ]
    );
}

#[test]
fn validate_reports_a_missing_file() {
    let dir = tempfile::tempdir().unwrap();
    let (code, _, err) = run(mongoshift(dir.path()).arg("validate"));
    assert_eq!(code, 1);
    assert!(err.contains("cannot read migration.toml"), "{err}");
    assert!(err.contains("mongoshift init"), "{err}");
}

#[test]
fn schema_command_prints_the_committed_schema() {
    let committed = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join(mongoshift::config::SCHEMA_PATH),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (code, out, _) = run(mongoshift(dir.path()).arg("schema"));
    assert_eq!(code, 0);
    assert!(
        out == committed,
        "schemas/migration.schema.json is stale: regenerate it with `cargo run -- schema > schemas/migration.schema.json`"
    );
}

#[test]
fn the_committed_configuration_reference_is_current() {
    let committed = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join(mongoshift::config::REFERENCE_PATH),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (code, out, _) = run(mongoshift(dir.path()).args(["schema", "--markdown"]));
    assert_eq!(code, 0);
    assert!(
        out == committed,
        "docs/configuration.md is stale: regenerate it with `cargo run -- schema --markdown > docs/configuration.md`"
    );
    // Every key of every table is documented.
    for key in [
        "`approval`",
        "`partition_size`",
        "`[[options.sharding.collections]]`",
        "`uri_file`",
    ] {
        assert!(committed.contains(key), "{key} is missing");
    }
}

#[test]
fn completions_and_man_pages_come_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out, _) = run(mongoshift(dir.path()).args(["completions", "bash"]));
    assert_eq!(code, 0);
    assert!(
        out.contains("_mongoshift()") && out.contains("cutover"),
        "{out}"
    );
    let (code, out, _) = run(mongoshift(dir.path()).arg("man"));
    assert_eq!(code, 0);
    assert!(
        out.starts_with(".ie") || out.contains(".TH mongoshift"),
        "{out}"
    );
    let pages = dir.path().join("man");
    let (code, _, err) = run(mongoshift(dir.path()).args(["man", "--dir", "man"]));
    assert_eq!(code, 0, "{err}");
    for page in ["mongoshift.1", "mongoshift-apply.1", "mongoshift-cutover.1"] {
        assert!(pages.join(page).exists(), "{page}");
    }
}

#[test]
fn logs_never_show_credentials() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("migration.toml"),
        "version = 1\n[source]\nuri = \"mongodb://alice:hunter2@src:1/?replicaSet=rs0\"\n[destination]\nuri_env = \"DEST\"\n",
    )
    .unwrap();
    for format in ["text", "json"] {
        let (code, out, err) = run(mongoshift(dir.path())
            .args(["-vv", "--log-format", format, "validate"])
            .env("DEST", "mongodb://bob:s3cr3t@dst:1/"));
        assert_eq!(code, 0, "{err}");
        assert!(
            err.contains("configuration loaded"),
            "the config is logged at debug: {err}"
        );
        for secret in ["hunter2", "s3cr3t"] {
            assert!(
                !err.contains(secret) && !out.contains(secret),
                "{secret} leaked: {err}"
            );
        }
        // The literal password is flagged, and the excerpt shows it masked.
        assert!(err.contains("alice:****@src"), "{err}");
    }
}
