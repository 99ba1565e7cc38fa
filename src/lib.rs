//! mongoshift: declarative live migration of MongoDB clusters.
//!
//! The library holds all behaviour; the `mongoshift` binary only parses arguments, renders and
//! maps outcomes to exit codes. Modules follow the data flow:
//!
//! - [`config`]: `migration.toml` → a checked [`config::Config`], with positioned diagnostics.
//! - [`cluster`]: connecting to clusters and reading snapshots of them.
//! - [`plan`]: preflight checks, the planner (pure), plan views and plan files.
//! - [`namespace`]: namespaces, include/exclude globs and renames, shared by every stage.
//! - [`shard_key`]: shard keys and the server's rules about them (supporting and unique
//!   indexes, key values of documents), shared by the planner, the copy, the applier and
//!   verification.
//! - [`sync`]: the copy, the change stream and its spool, destination writes.
//! - [`control`]: acting on a migration from outside apply (approve, extend, abort, destroy).
//! - [`cutover`]: approval, the source write block, notifications, requests to a running apply.
//! - [`verify`]: counts, document hashes, indexes and options of both sides compared.
//! - [`state`]: the lockfile `migration.lock` and the lock that guards it.
//! - [`redact`]: keeps credentials out of every output.
//! - [`atomic_file`]: crash-safe file replacement (plan files, the lockfile).
//! - [`exit`]: the documented process exit codes.
//!
//! The library never prints: it returns values and reports that the caller renders.
#![forbid(unsafe_code)]
#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod atomic_file;
pub mod cluster;
pub mod config;
pub mod control;
pub mod cutover;
pub mod exit;
pub mod namespace;
pub mod plan;
pub mod redact;
pub mod shard_key;
pub mod state;
pub mod sync;
pub mod verify;
