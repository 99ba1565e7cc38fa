//! Tests of loading and validation as a whole: every problem found, each positioned at the
//! right key, nothing reported twice, secrets never shown.

use std::path::Path;

use proptest::prelude::*;

use super::*;

const SOURCE: &str = "mongodb://src.example.net:27017/?replicaSet=rs0";
const DEST: &str = "mongodb://dst.example.net:27017/?replicaSet=rs1";

fn minimal(extra: &str) -> String {
    format!("version = 1\n[source]\nuri = \"{SOURCE}\"\n[destination]\nuri = \"{DEST}\"\n{extra}")
}

fn check(text: &str) -> Result<Loaded, Box<Report>> {
    check_env(text, &[("UNUSED", "")])
}

fn check_env<E: Environment>(text: &str, env: &E) -> Result<Loaded, Box<Report>> {
    match check_text(Path::new("migration.toml"), text.to_owned(), env) {
        Ok(l) => Ok(l),
        Err(ConfigError::Invalid(r)) => Err(r),
        Err(e) => panic!("unexpected {e}"),
    }
}

/// (code, key, line) of every diagnostic.
fn problems(report: &Report) -> Vec<(&'static str, String, usize)> {
    report
        .diagnostics
        .iter()
        .map(|d| {
            let line = d
                .span
                .as_ref()
                .map_or(0, |s| report.file.line_column(s.start).0);
            (
                d.code,
                d.key.as_ref().map(ToString::to_string).unwrap_or_default(),
                line,
            )
        })
        .collect()
}

#[test]
fn minimal_file_has_documented_defaults() {
    let loaded = check(&minimal("")).unwrap();
    let c = loaded.config;
    assert_eq!(c.name, "migration");
    assert_eq!(c.cutover.max_lag.as_secs(), 5);
    assert_eq!(c.cutover.window.as_secs(), 120 * 3600);
    assert_eq!(c.cutover.approval_file, Path::new("cutover.approved"));
    assert_eq!(c.options.copy.partition_size, ByteSize::mib(64));
    assert!(loaded.report.diagnostics.is_empty());
}

#[test]
fn unknown_key_bad_duration_and_missing_source_are_all_reported() {
    let text = "version = 1\ncolour = \"blue\"\n[destination]\nuri = \"mongodb://d:1/\"\n[cutover]\nmax_lag = \"5 parsecs\"\n";
    let report = check(text).unwrap_err();
    assert_eq!(
        problems(&report),
        vec![
            ("config.missing_key", "source".to_owned(), 1),
            ("config.unknown_key", "colour".to_owned(), 2),
            ("config.invalid_value", "cutover.max_lag".to_owned(), 6),
        ]
    );
}

#[test]
fn a_rejected_key_is_reported_once() {
    // `source` of the wrong type must not also produce "missing [source]".
    let text = format!("version = 1\nsource = \"x\"\n[destination]\nuri = \"{DEST}\"\n");
    let report = check(&text).unwrap_err();
    assert_eq!(
        problems(&report),
        vec![("config.invalid_type", "source".to_owned(), 2)]
    );
}

#[test]
fn errors_inside_arrays_of_tables_name_the_element() {
    let text = minimal(
        "[[options.sharding.collections]]\nnamespace = \"a.b\"\nkey = { x = 1 }\n[[options.sharding.collections]]\nnamespace = \"a.c\"\nkey = { y = 1 }\nextra = true\n",
    );
    let report = check(&text).unwrap_err();
    assert_eq!(
        problems(&report),
        vec![(
            "config.unknown_key",
            "options.sharding.collections[1].extra".to_owned(),
            12
        )]
    );
}

#[test]
fn semantic_problems_are_collected_together() {
    let text = minimal(
        "[options]\ninclude = [\"\", \"ok.*\"]\nrename = { \"a\" = \"b.c\", \"x.y\" = \"z.w\", \"q.r\" = \"z.w\" }\n[options.copy]\nparallel_collections = 0\nbatch_size = \"1GiB\"\n[[options.sharding.collections]]\nnamespace = \"s.t\"\nkey = { a = \"hashed\", b = \"hashed\" }\n[cutover]\nmax_lag = \"0s\"\n",
    );
    let report = check(&text).unwrap_err();
    let codes: Vec<_> = problems(&report)
        .into_iter()
        .map(|(c, k, _)| (c, k))
        .collect();
    assert_eq!(
        codes,
        vec![
            ("config.invalid_pattern", "options.include[0]".to_owned()),
            ("config.invalid_rename", "options.rename.a".to_owned()),
            ("config.rename_collision", "options.rename.x.y".to_owned()),
            (
                "config.out_of_range",
                "options.copy.parallel_collections".to_owned()
            ),
            ("config.out_of_range", "options.copy.batch_size".to_owned()),
            (
                "config.invalid_shard_key",
                "options.sharding.collections[0].key".to_owned()
            ),
            ("config.out_of_range", "cutover.max_lag".to_owned()),
        ]
    );
}

#[test]
fn unacknowledged_writes_are_refused_in_both_forms() {
    for (options, key) in [
        ("write_concern = 0", "options.write_concern"),
        ("write_concern = { w = 0 }", "options.write_concern.w"),
    ] {
        let report = check(&minimal(&format!("[options]\n{options}\n"))).unwrap_err();
        let found: Vec<_> = problems(&report)
            .into_iter()
            .map(|(c, k, _)| (c, k))
            .collect();
        assert_eq!(
            found,
            vec![("config.out_of_range", key.to_owned())],
            "{options}"
        );
    }
    for options in [
        "write_concern = 1",
        "write_concern = { w = 2, journal = true }",
    ] {
        assert!(
            check(&minimal(&format!("[options]\n{options}\n"))).is_ok(),
            "{options}"
        );
    }
}

#[test]
fn endpoints_need_exactly_one_connection_string() {
    let none = "version = 1\n[source]\ntls_allow_invalid_certificates = false\n[destination]\nuri = \"mongodb://d:1/\"\n";
    let report = check(none).unwrap_err();
    assert_eq!(
        problems(&report),
        vec![("config.missing_key", "source".to_owned(), 2)]
    );

    let two = format!(
        "version = 1\n[source]\nuri = \"{SOURCE}\"\nuri_env = \"X\"\n[destination]\nuri = \"{DEST}\"\n"
    );
    let report = check(&two).unwrap_err();
    assert_eq!(
        problems(&report),
        vec![("config.conflicting_keys", "source.uri_env".to_owned(), 4)]
    );
}

#[test]
fn connection_strings_come_from_env_and_files() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("dest-uri"), format!("{DEST}\n")).unwrap();
    let path = dir.path().join("migration.toml");
    let text = "version = 1\n[source]\nuri_env = \"SRC\"\n[destination]\nuri_file = \"dest-uri\"\n";
    let env = [("SRC", SOURCE)];
    let loaded = check_text(&path, text.to_owned(), &env).unwrap();
    assert_eq!(loaded.config.source.uri.expose_secret(), SOURCE);
    assert_eq!(loaded.config.destination.uri.expose_secret(), DEST);
    assert_eq!(
        loaded.config.cutover.approval_file,
        dir.path().join("cutover.approved")
    );

    let missing = check_text(&path, text.to_owned(), &[("OTHER", "")]).unwrap_err();
    let ConfigError::Invalid(report) = missing else {
        panic!()
    };
    assert_eq!(
        problems(&report),
        vec![("config.unset_variable", "source.uri_env".to_owned(), 3)]
    );
}

#[test]
fn interpolation_failures_name_the_key_and_are_not_repeated() {
    let text = "version = 1\n[source]\nuri = \"mongodb://u:${env:NOPE}@s:1/\"\n[destination]\nuri = \"${file:missing.txt}\"\n";
    let report = check(text).unwrap_err();
    assert_eq!(
        problems(&report),
        vec![
            ("config.interpolation", "source.uri".to_owned(), 3),
            ("config.interpolation", "destination.uri".to_owned(), 5),
        ]
    );
    assert!(report.diagnostics[0].message.contains("`NOPE` is not set"));
}

#[test]
fn invalid_connection_strings_are_reported_without_their_password() {
    let text = "version = 1\n[source]\nuri = \"mongodb://u:hunter2@s:1/?replicaSet=rs0&bogusOption=x&w=banana\"\n[destination]\nuri = \"http://d\"\n";
    let report = check(text).unwrap_err();
    let codes: Vec<_> = problems(&report)
        .into_iter()
        .map(|(c, k, _)| (c, k))
        .collect();
    assert!(
        codes.contains(&("config.invalid_uri", "destination.uri".to_owned())),
        "{codes:?}"
    );
    let rendered = report.render(false) + &report.to_json().to_string();
    assert!(!rendered.contains("hunter2"), "{rendered}");
}

#[test]
fn warnings_do_not_block_and_literal_passwords_are_flagged() {
    let text = "version = 1\n[source]\nuri = \"mongodb://u:hunter2@s:1/\"\n[destination]\nuri = \"mongodb://u:${env:P}@d:1/\"\ntls_allow_invalid_certificates = true\n[cutover]\napproval = \"auto\"\n";
    let loaded = check_env(text, &[("P", "pw")]).unwrap();
    let codes: Vec<_> = problems(&loaded.report)
        .into_iter()
        .map(|(c, k, _)| (c, k))
        .collect();
    assert_eq!(
        codes,
        vec![
            ("config.literal_password", "source.uri".to_owned()),
            (
                "config.tls_insecure",
                "destination.tls_allow_invalid_certificates".to_owned()
            ),
            (
                "config.auto_cutover_without_write_block",
                "cutover.approval".to_owned()
            ),
        ]
    );
    assert!(!loaded.report.render(false).contains("hunter2"));
}

#[test]
fn same_cluster_is_refused() {
    let text = format!(
        "version = 1\n[source]\nuri = \"{SOURCE}\"\n[destination]\nuri = \"{SOURCE}&appName=x\"\n"
    );
    let report = check(&text).unwrap_err();
    assert_eq!(problems(&report)[0].0, "config.same_cluster");
}

#[test]
fn versions_other_than_one_are_refused() {
    let report = check(&minimal("").replace("version = 1", "version = 2")).unwrap_err();
    assert_eq!(
        problems(&report),
        vec![("config.unsupported_version", "version".to_owned(), 1)]
    );
    let report = check(&minimal("").replace("version = 1\n", "")).unwrap_err();
    assert_eq!(problems(&report)[0].0, "config.missing_key");
}

#[test]
fn shard_key_order_is_kept() {
    let loaded = check(&minimal(
        "[[options.sharding.collections]]\nnamespace = \"a.b\"\nkey = { z = 1, a = 1, m = \"hashed\" }\n",
    ))
    .unwrap();
    let names: Vec<_> = loaded.config.options.sharding[0]
        .key
        .0
        .iter()
        .map(|(n, _)| n.as_str())
        .collect();
    assert_eq!(names, ["z", "a", "m"]);
}

#[test]
fn syntax_errors_are_positioned() {
    let report = check("version = 1\n[source\nuri = \"x\"\n").unwrap_err();
    assert!(report.has_errors());
    assert!(
        report
            .diagnostics
            .iter()
            .all(|d| d.code == "config.syntax" && d.span.is_some())
    );
}

#[test]
fn secrets_never_appear_in_debug_display_or_serialized_config() {
    let text = "version = 1\n[source]\nuri = \"mongodb://alice:${env:SRC_PW}@s:1/?replicaSet=rs0&authMechanismProperties=AWS_SESSION_TOKEN:tok3n\"\n[destination]\nuri_env = \"DEST\"\n";
    let env = [
        ("SRC_PW", "s3cr%40t"),
        ("DEST", "mongodb://bob:hunter2@d:1/"),
    ];
    let config = check_env(text, &env).unwrap().config;
    let outputs = [
        format!("{config:?}"),
        format!("{} {}", config.source.uri, config.destination.uri),
        serde_json::to_string(&config).unwrap(),
    ];
    for out in outputs {
        for secret in ["s3cr%40t", "s3cr@t", "hunter2", "tok3n"] {
            assert!(!out.contains(secret), "{secret} leaked in {out}");
        }
        assert!(out.contains("alice:****@"), "{out}");
    }
    assert!(config.source.uri.expose_secret().contains("s3cr%40t"));
}

#[test]
fn the_init_template_validates_as_written_and_fully_uncommented() {
    let t = template(None, None);
    check(&t.text).unwrap();
    // Uncomment every commented `key = value` line: the documentation in comments must stay a
    // valid part of the format.
    let uncommented: String = t
        .text
        .lines()
        .map(|l| match l.strip_prefix("# ") {
            Some(rest) if is_toml_line(rest) => rest.to_owned(),
            _ => l.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    assert!(uncommented.contains("\nrename = "), "{uncommented}");
    // The commented TLS files must exist to validate.
    let dir = tempfile::tempdir().unwrap();
    for f in [
        "certs/source-ca.pem",
        "certs/client.pem",
        "certs/destination-ca.pem",
    ] {
        let p = dir.path().join(f);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, "placeholder").unwrap();
    }
    let env = [("UNUSED", "")];
    if let Err(ConfigError::Invalid(r)) = check_text(&dir.path().join("m.toml"), uncommented, &env)
    {
        panic!("{}", r.render(false));
    }
}

fn is_toml_line(line: &str) -> bool {
    line.starts_with('[')
        || line.split_once(" = ").is_some_and(|(k, _)| {
            !k.is_empty() && k.chars().all(|c| c.is_ascii_lowercase() || c == '_')
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Arbitrary text never panics the loader, and every error it reports is positioned
    /// inside the file.
    #[test]
    fn arbitrary_text_gives_positioned_errors(text in "\\PC{0,200}") {
        if let Err(r) = check(&text) {
            for d in &r.diagnostics {
                let span = d.span.clone().expect("every error is positioned");
                prop_assert!(span.end <= text.len() && span.start <= span.end, "{span:?} in {text:?}");
            }
        }
    }

    /// Mutations of a valid file (lines dropped, duplicated or edited) never panic, and each
    /// error is positioned.
    #[test]
    fn mutated_valid_files_give_positioned_errors(
        ops in proptest::collection::vec((0usize..60, 0u8..4, "[a-z_=\"\\[\\]{}. 0-9]{0,12}"), 1..6)
    ) {
        let base = template(None, None).text;
        let mut lines: Vec<String> = base.lines().map(str::to_owned).collect();
        for (at, op, junk) in ops {
            if lines.is_empty() { break; }
            let i = at % lines.len();
            match op {
                0 => { lines.remove(i); }
                1 => { let l = lines[i].clone(); lines.insert(i, l); }
                2 => lines[i].push_str(&junk),
                _ => lines[i] = junk,
            }
        }
        let text = lines.join("\n");
        if let Err(r) = check(&text) {
            for d in &r.diagnostics {
                let span = d.span.clone().expect("every error is positioned");
                prop_assert!(span.end <= text.len());
            }
        }
    }
}
