//! `mongoshift plan`: what will happen to the destination, and whether it can.
//!
//! Flow: [`refresh`] connects to both clusters and inspects them → [`planner::make_plan`]
//! (pure: mapping, [`checks`], ordered actions, catalog before/after) → [`render`] (human view
//! with a unified diff, or JSON) and [`file`] (saved plans with fingerprints). [`sharding`]
//! decides which destination collections are sharded and how.

pub mod checks;
pub mod file;
pub mod mapping;
pub mod model;
pub mod planner;
pub mod refresh;
pub mod render;
pub mod sharding;

pub use file::{Fingerprints, PlanFile, PlanFileError, Staleness, fingerprints};
pub use model::{
    Action, Change, Check, CheckStatus, IndexPhase, KeyOrigin, PLAN_FORMAT_VERSION, Plan, Presplit,
    ShardShare, Summary,
};
pub use planner::{PlanInput, make_plan};
pub use refresh::{Refreshed, refresh, refresh_with};

#[cfg(test)]
mod tests;
