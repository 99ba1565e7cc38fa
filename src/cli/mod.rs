//! The command line: arguments, logging, rendering and exit codes over the library.
//!
//! This module belongs to the binary, not the library, so the library never prints. Each
//! command lives in its own file under `commands/`.

mod app;
mod args;
mod commands;
mod logging;
mod output;
mod progress;
mod signals;

pub use app::run;
