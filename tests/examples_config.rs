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

/// `examples/automation/notify.sh` posts one JSON line per event to the webhook it is given.
#[test]
fn the_notify_script_posts_each_event() {
    if std::process::Command::new("curl")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipped: curl is not installed");
        return;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/automation/notify.sh");
    for (event, expected) in [
        ("ready", "is ready for cutover"),
        ("window_expiring", "window ends in one hour"),
        ("committed", "is committed"),
        ("failed", "failed: disk \\\"full\\\""),
    ] {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let server = std::thread::spawn(move || {
            use std::io::{Read, Write};
            let (mut conn, _) = listener.accept().unwrap();
            let mut request = Vec::new();
            let mut buf = [0u8; 4096];
            // Headers and a small body arrive together; read until the JSON closes.
            while !request.ends_with(b"}") {
                let n = conn.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                request.extend_from_slice(&buf[..n]);
            }
            conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                .unwrap();
            String::from_utf8_lossy(&request).into_owned()
        });
        let status = std::process::Command::new("sh")
            .arg(&script)
            .env("MONGOSHIFT_EVENT", event)
            .env("MONGOSHIFT_MIGRATION", "orders")
            .env("MONGOSHIFT_ERROR", "disk \"full\"")
            .env("SLACK_WEBHOOK_URL", &url)
            .status()
            .unwrap();
        assert!(status.success(), "{event}");
        let request = server.join().unwrap();
        assert!(request.contains("Migration orders"), "{request}");
        assert!(request.contains(expected), "{event}: {request}");
    }
}
