//! The cutover: approval, the source write block, notifications, and requests from other
//! commands to a running apply. The sequence itself (ready → approved → writes stop → drain →
//! verify → committed) is driven by the sync engine (`sync::apply`), which owns the state.

pub mod approval;
pub mod block;
pub mod notify;
pub mod requests;
