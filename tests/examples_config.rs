//! Every `examples/*.toml` validates, with the secrets it references supplied the way a user
//! would (environment variables and files next to it).

use std::path::{Path, PathBuf};

use mongoshift::config::{ConfigError, Environment, check_text};

/// Supplies every variable: `*_URI` variables get a distinct connection string per name,
/// others (passwords, user names) a plain value.
struct ExampleEnvironment;

impl Environment for ExampleEnvironment {
    fn var(&self, name: &str) -> Option<String> {
        Some(if name.ends_with("_URI") {
            format!(
                "mongodb://{}.example.net:27017/?replicaSet=rs",
                name.to_ascii_lowercase()
            )
        } else {
            "value".to_owned()
        })
    }
}

fn example_files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_example_validates_without_warnings() {
    let files = example_files();
    assert!(
        files.len() >= 4,
        "the four documented examples exist: {files:?}"
    );
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        // Files the example references (uri_file, TLS) exist next to it in a real setup.
        let dir = tempfile::tempdir().unwrap();
        for line in text.lines() {
            for key in ["uri_file", "tls_ca_file", "tls_certificate_key_file"] {
                if let Some(value) = line.strip_prefix(&format!("{key} = \"")) {
                    let rel = value.split('"').next().unwrap();
                    let path = dir.path().join(rel);
                    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                    std::fs::write(&path, "mongodb://from-file.example.net:27017/").unwrap();
                }
            }
        }
        let path = dir.path().join(file.file_name().unwrap());
        match check_text(&path, text, &ExampleEnvironment) {
            Ok(loaded) => assert!(
                loaded.report.diagnostics.is_empty(),
                "{}: {}",
                file.display(),
                loaded.report.render(false)
            ),
            Err(ConfigError::Invalid(report)) => {
                panic!(
                    "{} does not validate:\n{}",
                    file.display(),
                    report.render(false)
                )
            }
            Err(e) => panic!("{}: {e}", file.display()),
        }
    }
}
