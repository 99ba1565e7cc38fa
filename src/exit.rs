//! Process exit codes: a documented contract that is never renumbered (ARCHITECTURE §2).
//!
//! Automation branches on these, so every user-visible outcome maps to exactly one of them.

/// Success (for `plan --detailed-exitcode`: success and nothing to change).
pub const SUCCESS: u8 = 0;
/// An error: bad configuration, unreachable cluster, failed operation.
pub const ERROR: u8 = 1;
/// `plan --detailed-exitcode` found changes to make.
pub const CHANGES_PENDING: u8 = 2;
/// Verification found differences between source and destination.
pub const VERIFICATION_FAILED: u8 = 3;
/// Another process holds the migration's lock.
pub const LOCKED: u8 = 4;
/// A saved plan no longer matches the configuration or the clusters.
pub const STALE_PLAN: u8 = 5;
/// The cutover window expired (with `on_window_expiry = "stop"`).
pub const WINDOW_EXPIRED: u8 = 6;
/// Interrupted by a signal; state was saved and `apply` resumes.
pub const INTERRUPTED: u8 = 130;
