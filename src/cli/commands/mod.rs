//! One file per command: each turns its arguments into library calls and renders the result.

pub mod apply;
pub mod control;
pub mod docs;
pub mod init;
pub mod plan;
pub mod schema;
pub mod status;
pub mod unlock;
pub mod validate;
pub mod verify;
