//! Inspecting both clusters at once and planning from what was found.

use std::collections::BTreeSet;

use super::model::Plan;
use super::planner::{PlanInput, make_plan};
use crate::cluster::retry::{Backoff, Transient, retry};
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
        inspect_patiently(cluster, request, Backoff::within(config.options.retry_for)).await
    };
    let destination = async {
        let cluster = destination.map_err(Clone::clone)?;
        inspect_patiently(
            cluster,
            InspectRequest::default(),
            Backoff::within(config.options.retry_for),
        )
        .await
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

/// Inspection reads only, so a failed command (an election, a dropped connection) is retried;
/// a cluster that cannot be selected at all is reported at once, since each attempt already
/// waited the driver's server-selection timeout.
async fn inspect_patiently(
    cluster: &Cluster,
    request: InspectRequest<'_>,
    backoff: Backoff,
) -> Result<ClusterSnapshot, ClusterError> {
    struct Failure(ClusterError);
    impl Transient for Failure {
        fn is_transient(&self) -> bool {
            matches!(self.0, ClusterError::Command { .. }) && self.0.is_transient()
        }
    }
    impl std::fmt::Display for Failure {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            self.0.fmt(f)
        }
    }
    let what = format!("inspect the {}", cluster.side());
    retry(&what, backoff, || async {
        inspect(cluster, request).await.map_err(Failure)
    })
    .await
    .map_err(|f| f.0)
}
