//! Where output goes and whether it is coloured.
//!
//! Data (plans, JSON, reports) goes to stdout; diagnostics and logs to stderr. Colour follows
//! `--no-color`, `NO_COLOR` and whether the stream is a terminal (anstream strips styles
//! otherwise).

use std::io::{IsTerminal, Write};

use anstream::ColorChoice;

/// Output settings for one run.
#[derive(Debug, Clone, Copy)]
pub struct Output {
    color: bool,
}

impl Output {
    /// Decides colour once, at startup.
    pub fn new(no_color: bool) -> Self {
        let disabled = no_color || std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        if disabled {
            ColorChoice::Never.write_global();
        }
        Self {
            color: !disabled && std::io::stderr().is_terminal(),
        }
    }

    /// True when stderr shows colours.
    pub fn color(&self) -> bool {
        self.color
    }

    /// Writes to stdout. A closed pipe (`| head`) is not an error worth reporting.
    pub fn out(&self, text: &str) {
        let mut stdout = anstream::stdout().lock();
        let _ = stdout.write_all(text.as_bytes());
        let _ = stdout.flush();
    }

    /// Writes a line to stdout.
    pub fn out_line(&self, text: &str) {
        self.out(&format!("{text}\n"));
    }

    /// Writes to stderr.
    pub fn err(&self, text: &str) {
        let mut stderr = anstream::stderr().lock();
        let _ = stderr.write_all(text.as_bytes());
        let _ = stderr.flush();
    }

    /// Writes an `error:` line to stderr.
    pub fn error(&self, message: &str) {
        let style = anstyle::Style::new()
            .bold()
            .fg_color(Some(anstyle::AnsiColor::Red.into()));
        self.err(&format!("{style}error{style:#}: {message}\n"));
    }
}
