//! Authentication and authorization, as mongod 7.0 does them.
//!
//! A server with at least one user requires authentication: SCRAM-SHA-256 and SCRAM-SHA-1
//! through `saslStart`/`saslContinue` or `speculativeAuthenticate` in the handshake, then
//! privilege checks on every command against mongod's built-in roles. A server without users
//! behaves as before (everything allowed), like a mongod started without `--auth`.
//!
//! - [`user`]: declared users, role names, lazily derived credentials;
//! - [`scram`]: the SCRAM server conversation (pure);
//! - [`privilege`]: resource patterns, action sets, mongod's matching rules;
//! - [`builtin_roles`]: the built-in roles and their privileges;
//! - [`session`]: server-wide and per-connection authentication state;
//! - [`authz`]: which command needs what, and reply filtering;
//! - [`bson_display`]: mongod's BSON rendering for "not authorized" messages.
//!
//! The commands themselves (`saslStart`, `connectionStatus`, `usersInfo`, ...) live in
//! `command::auth`.

pub mod authz;
pub mod bson_display;
pub mod builtin_roles;
pub mod privilege;
pub mod scram;
pub mod session;
pub mod user;

pub use session::{Authenticator, ConnAuth};
pub use user::{RoleName, UserError, UserSpec};
