//! mongoshift: declarative live migration of MongoDB clusters.
#![deny(clippy::print_stdout, clippy::print_stderr)]
