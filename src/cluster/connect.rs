//! Connecting to a cluster from a checked [`Endpoint`], and running commands on it with errors
//! mapped and redacted.

use std::time::Duration;

use bson::{Document, RawDocumentBuf};
use mongodb::Client;
use mongodb::options::{ClientOptions, Tls, TlsOptions};

use super::error::{ClusterError, Side};
use super::inflight::{self, RunTag, Tagging};
use crate::config::Endpoint;
use crate::redact::Redactor;

/// How long to wait for a reachable server before giving up. Shorter than the driver's 30 s
/// default so that `plan` against a wrong address fails quickly; a URI's own
/// `serverSelectionTimeoutMS` wins.
const SERVER_SELECTION_TIMEOUT: Duration = Duration::from_secs(15);

/// A connected cluster.
#[derive(Clone)]
pub struct Cluster {
    side: Side,
    client: Client,
    redactor: Redactor,
    display: String,
    /// The run every command of this handle is tagged with (see [`super::inflight`]).
    tag: Option<std::sync::Arc<Tagging>>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("side", &self.side)
            .field("uri", &self.display)
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// Builds a client for the endpoint. The driver connects lazily; the first command reports
    /// an unreachable cluster or refused credentials as [`ClusterError::Connect`].
    pub async fn connect(side: Side, endpoint: &Endpoint) -> Result<Self, ClusterError> {
        let uri = endpoint.uri.expose_secret();
        let redactor = Redactor::for_uris([uri]);
        let connect_error = |e: &mongodb::error::Error| ClusterError::Connect {
            side,
            message: redactor.redact(&super::error::driver_message(e)),
            code: None,
        };
        let mut options = ClientOptions::parse(uri)
            .await
            .map_err(|e| connect_error(&e))?;
        options
            .app_name
            .get_or_insert_with(|| "mongoshift".to_owned());
        options
            .server_selection_timeout
            .get_or_insert(SERVER_SELECTION_TIMEOUT);
        let tls = &endpoint.tls;
        if tls.ca_file.is_some()
            || tls.certificate_key_file.is_some()
            || tls.allow_invalid_certificates
        {
            // Settings in the file add to those in the URI; verification stays on unless the
            // file says otherwise.
            let mut tls_options = match options.tls.take() {
                Some(Tls::Enabled(existing)) => existing,
                _ => TlsOptions::default(),
            };
            if let Some(ca) = &tls.ca_file {
                tls_options.ca_file_path = Some(ca.clone());
            }
            if let Some(cert) = &tls.certificate_key_file {
                tls_options.cert_key_file_path = Some(cert.clone());
            }
            if tls.allow_invalid_certificates {
                tls_options.allow_invalid_certificates = Some(true);
            }
            options.tls = Some(Tls::Enabled(tls_options));
        }
        let client = Client::with_options(options).map_err(|e| connect_error(&e))?;
        Ok(Self {
            side,
            client,
            redactor,
            display: endpoint.uri.redacted(),
            tag: None,
        })
    }

    /// The same cluster, with every command sent through [`Cluster::command`] or
    /// [`Cluster::run_raw`] tagged with the run (its `comment`; see [`super::inflight`]).
    pub fn tagged(&self, tag: RunTag) -> Self {
        Self {
            tag: Some(std::sync::Arc::new(Tagging::new(tag))),
            ..self.clone()
        }
    }

    /// The run this handle's commands are tagged with.
    pub fn tag(&self) -> Option<&RunTag> {
        self.tag.as_deref().map(Tagging::tag)
    }

    /// Which side this is.
    pub fn side(&self) -> Side {
        self.side
    }

    /// The driver client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The redacted connection string, for messages.
    pub fn display(&self) -> &str {
        &self.display
    }

    /// The redactor for messages about this cluster.
    pub fn redactor(&self) -> &Redactor {
        &self.redactor
    }

    /// Maps a driver error for this cluster.
    pub fn error(&self, command: &str, err: &mongodb::error::Error) -> ClusterError {
        ClusterError::from_driver(self.side, command, err, &self.redactor)
    }

    /// An invalid-reply error for this cluster.
    pub fn invalid_reply(&self, command: &str, detail: impl Into<String>) -> ClusterError {
        ClusterError::InvalidReply {
            side: self.side,
            command: command.to_owned(),
            detail: detail.into(),
        }
    }

    /// The cluster's current time, from the `operationTime` a replica set or mongos reports
    /// with every reply (`None` for a standalone, which has no cluster time).
    pub async fn cluster_time(&self) -> Result<Option<bson::Timestamp>, ClusterError> {
        let reply = self.command("admin", bson::doc! { "ping": 1 }).await?;
        Ok(reply.get_timestamp("operationTime").ok())
    }

    /// Runs a command on a database. A tagged handle waits, after a failure that leaves the
    /// command's fate unknown, until the server no longer runs it (see [`super::inflight`]).
    pub async fn command(&self, db: &str, mut command: Document) -> Result<Document, ClusterError> {
        let name = command.keys().next().cloned().unwrap_or_default();
        let op = match &self.tag {
            Some(tagging) if !command.contains_key("comment") => {
                let (op, comment) = tagging.next_comment();
                command.insert("comment", comment);
                Some(op)
            }
            _ => None,
        };
        self.settled(op, self.client.database(db).run_command(command))
            .await
            .map_err(|e| self.error(&name, &e))
    }

    /// Runs a raw command on a database, tagged and settled like [`Cluster::command`] (driver
    /// errors unmapped, so that callers name the command in their own words).
    pub async fn run_raw(
        &self,
        db: &str,
        mut command: RawDocumentBuf,
    ) -> Result<Document, mongodb::error::Error> {
        let op = match &self.tag {
            Some(tagging) if command.get("comment").ok().flatten().is_none() => {
                let (op, comment) = tagging.next_raw_comment();
                command.append(bson::cstr!("comment"), comment);
                Some(op)
            }
            _ => None,
        };
        self.settled(op, self.client.database(db).run_raw_command(command))
            .await
    }

    /// Awaits a sent command; when it was tagged `op` and failed without a reply, first waits
    /// until the server no longer runs it (see [`inflight::settle_if_unknown`]).
    async fn settled(
        &self,
        op: Option<i64>,
        sent: impl std::future::IntoFuture<Output = mongodb::error::Result<Document>>,
    ) -> mongodb::error::Result<Document> {
        let result = sent.await;
        if let (Err(e), Some(op)) = (&result, op) {
            inflight::settle_if_unknown(self, op, e).await;
        }
        result
    }
}
