//! One file per command: each turns its arguments into library calls and renders the result.

pub mod init;
pub mod plan;
pub mod schema;
pub mod validate;
