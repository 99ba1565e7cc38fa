//! mongoshift: declarative live migration of MongoDB clusters.
//!
//! The library holds all behaviour; the `mongoshift` binary only parses arguments, renders and
//! maps outcomes to exit codes. Modules follow the data flow:
//!
//! - [`config`]: `migration.toml` → a checked [`config::Config`], with positioned diagnostics.
//! - [`namespace`]: namespaces, include/exclude globs and renames, shared by every stage.
//! - [`redact`]: keeps credentials out of every output.
//! - [`exit`]: the documented process exit codes.
//!
//! The library never prints: it returns values and reports that the caller renders.
#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod config;
pub mod exit;
pub mod namespace;
pub mod redact;
