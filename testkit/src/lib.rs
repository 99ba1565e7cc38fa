//! `mongoshift-testkit`: an in-process server that speaks the MongoDB wire protocol.
//!
//! No machine that builds or tests mongoshift can run a real `mongod`, so every test, example and
//! benchmark runs against this server instead. It is held to the same standard as the product:
//! where it deviates from a real server, that is a bug or a documented limitation
//! (see `testkit/README.md`).
//!
//! Layout (one layer per job, in the order a request flows):
//! - [`query`]: the pure query language: BSON total order, filters, updates, projections, sorts,
//!   aggregation stages and expressions, update descriptions. No I/O, no server state.

pub mod query;
