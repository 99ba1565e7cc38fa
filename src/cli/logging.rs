//! Logging to stderr with tracing: text or JSON, filtered by `MONGOSHIFT_LOG` or -v/-q.

use tracing_subscriber::EnvFilter;

use super::args::LogFormat;

/// The environment variable holding a tracing filter (e.g. `mongoshift=debug,mongodb=info`).
pub const LOG_ENV: &str = "MONGOSHIFT_LOG";

/// Installs the global subscriber. Logs never go to stdout, which carries data and JSON.
pub fn init(format: LogFormat, verbose: u8, quiet: u8, color: bool) {
    let default = match (quiet, verbose) {
        (0, 0) => "mongoshift=info,warn",
        (0, 1) => "mongoshift=debug,info",
        (0, _) => "trace",
        (1, _) => "error",
        _ => "off",
    };
    let filter = std::env::var(LOG_ENV)
        .ok()
        .and_then(|f| EnvFilter::try_new(f).ok())
        .unwrap_or_else(|| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| LogWriter)
        .with_target(false);
    // A second initialisation (never in the binary) is not an error worth failing over.
    let _ = match format {
        LogFormat::Text => builder.with_ansi(color).try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// Log lines go to stderr, above the progress bars when they are shown.
struct LogWriter;

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        super::progress::write_log(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}
