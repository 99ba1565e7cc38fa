//! A checked cluster endpoint: its connection string (kept secret) and TLS settings.

use std::fmt;
use std::path::PathBuf;

use serde::{Serialize, Serializer};

use crate::redact::{redact_uri, uri_password};

/// A connection string whose credentials never leave the process except to the driver.
///
/// `Display`, `Debug` and `Serialize` all print the redacted form (`mongodb://user:****@host`);
/// [`ConnectionUri::expose_secret`] is the only way to the raw string, and is called only when
/// connecting.
#[derive(Clone, PartialEq, Eq)]
pub struct ConnectionUri(String);

impl ConnectionUri {
    /// Wraps a connection string (already checked by validation).
    pub fn new(uri: impl Into<String>) -> Self {
        Self(uri.into())
    }

    /// The raw connection string, credentials included. Only for handing to the driver.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }

    /// The connection string with credentials masked.
    pub fn redacted(&self) -> String {
        redact_uri(&self.0)
    }

    /// True when the string carries a password.
    pub fn has_password(&self) -> bool {
        uri_password(&self.0).is_some()
    }
}

impl fmt::Display for ConnectionUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl fmt::Debug for ConnectionUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ConnectionUri({:?})", self.redacted())
    }
}

impl Serialize for ConnectionUri {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.redacted())
    }
}

/// Where an endpoint's connection string came from (shown in plans instead of the string's
/// secret parts).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum UriOrigin {
    /// Written in `uri` (possibly with substitutions).
    Inline,
    /// Read from the environment variable named by `uri_env`.
    Env {
        /// The variable.
        variable: String,
    },
    /// Read from the file named by `uri_file`.
    File {
        /// The file.
        path: PathBuf,
    },
}

/// TLS settings of an endpoint; file paths are resolved against the config's directory.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TlsSettings {
    /// CA certificates (PEM).
    pub ca_file: Option<PathBuf>,
    /// Client certificate and key (PEM).
    pub certificate_key_file: Option<PathBuf>,
    /// Accept certificates that do not verify (explicit opt-in only).
    pub allow_invalid_certificates: bool,
}

/// A checked cluster endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Endpoint {
    /// The connection string.
    pub uri: ConnectionUri,
    /// Where it came from.
    pub origin: UriOrigin,
    /// TLS settings added to what the connection string says.
    pub tls: TlsSettings,
}
