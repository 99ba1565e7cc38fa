//! Inspecting both clusters at once and planning from what was found.

use std::collections::BTreeSet;

use super::model::Plan;
use super::planner::{PlanInput, make_plan};
use crate::cluster::{Cluster, ClusterError, ClusterSnapshot, InspectRequest, Side, inspect};
use crate::config::Config;
use crate::namespace::Namespace;

/// The snapshots a plan was made from, and the plan.
#[derive(Debug)]
pub struct Refreshed {
    /// The source, or why it could not be inspected.
    pub source: Result<ClusterSnapshot, ClusterError>,
    /// The destination, or why it could not be inspected.
    pub destination: Result<ClusterSnapshot, ClusterError>,
    /// The plan.
    pub plan: Plan,
}

impl Refreshed {
    /// Fingerprints of the inputs, when both clusters were inspected.
    pub fn fingerprints(&self, config: &Config) -> Option<super::Fingerprints> {
        match (&self.source, &self.destination) {
            (Ok(s), Ok(d)) => Some(super::fingerprints(config, s, d, &self.plan)),
            _ => None,
        }
    }
}

/// Connects to both clusters concurrently, inspects them and plans. Connection problems are
/// not errors here: they become failed checks, reported with everything else.
pub async fn refresh(config: &Config, owned: &BTreeSet<Namespace>) -> Refreshed {
    let (source, destination) = tokio::join!(
        Cluster::connect(Side::Source, &config.source),
        Cluster::connect(Side::Destination, &config.destination)
    );
    refresh_with(config, source.as_ref(), destination.as_ref(), owned).await
}

/// Like [`refresh`], with clusters already connected (or failed to).
pub async fn refresh_with(
    config: &Config,
    source: Result<&Cluster, &ClusterError>,
    destination: Result<&Cluster, &ClusterError>,
    owned: &BTreeSet<Namespace>,
) -> Refreshed {
    let source = async {
        let cluster = source.map_err(Clone::clone)?;
        let request = InspectRequest {
            filter: Some(&config.options.filter),
            oplog: true,
        };
        inspect(cluster, request).await
    };
    let destination = async {
        let cluster = destination.map_err(Clone::clone)?;
        inspect(cluster, InspectRequest::default()).await
    };
    let (source, destination) = tokio::join!(source, destination);
    let plan = make_plan(&PlanInput {
        config,
        source: source.as_ref(),
        destination: destination.as_ref(),
        owned,
    });
    Refreshed {
        source,
        destination,
        plan,
    }
}
