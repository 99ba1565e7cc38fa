//! Errors talking to a cluster, with the server's code and labels kept so callers decide on
//! retries by code and label, never by message text; and every message redacted.

use std::fmt;

use mongodb::error::{Error as DriverError, ErrorKind};
use serde::{Deserialize, Serialize};

use crate::redact::Redactor;

/// Which cluster an operation talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    /// The cluster data comes from.
    Source,
    /// The cluster data goes to.
    Destination,
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Source => "source",
            Self::Destination => "destination",
        })
    }
}

/// A failed interaction with a cluster.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClusterError {
    /// The cluster could not be reached or the user could not authenticate.
    #[error("cannot connect to the {side} cluster: {message}")]
    Connect {
        /// Which cluster.
        side: Side,
        /// Why (redacted).
        message: String,
        /// The server code when authentication was refused (18).
        code: Option<i32>,
    },
    /// The server answered a command with an error.
    #[error("{side}: `{command}` failed: {message}")]
    Command {
        /// Which cluster.
        side: Side,
        /// The command (and namespace, when there is one).
        command: String,
        /// The server error code, when there is one.
        code: Option<i32>,
        /// Error labels (`RetryableWriteError`, `ResumableChangeStreamError`, ...).
        labels: Vec<String>,
        /// What the server said (redacted).
        message: String,
    },
    /// The server's reply is not what MongoDB sends (missing field, wrong type).
    #[error("{side}: unexpected reply to `{command}`: {detail}")]
    InvalidReply {
        /// Which cluster.
        side: Side,
        /// The command.
        command: String,
        /// What is wrong with the reply.
        detail: String,
    },
}

/// Server error codes mongoshift decides on.
pub mod codes {
    /// `Unauthorized`.
    pub const UNAUTHORIZED: i32 = 13;
    /// `AuthenticationFailed`.
    pub const AUTHENTICATION_FAILED: i32 = 18;
    /// `NamespaceNotFound`.
    pub const NAMESPACE_NOT_FOUND: i32 = 26;
    /// `NamespaceExists`.
    pub const NAMESPACE_EXISTS: i32 = 48;
    /// `CommandNotFound`.
    pub const COMMAND_NOT_FOUND: i32 = 59;
    /// `IndexOptionsConflict`.
    pub const INDEX_OPTIONS_CONFLICT: i32 = 85;
    /// `IndexKeySpecsConflict`.
    pub const INDEX_KEY_SPECS_CONFLICT: i32 = 86;
    /// `DuplicateKey`.
    pub const DUPLICATE_KEY: i32 = 11000;
    /// `ChangeStreamHistoryLost`.
    pub const CHANGE_STREAM_HISTORY_LOST: i32 = 286;
}

impl ClusterError {
    /// Maps a driver error, redacting any credential it quotes.
    pub fn from_driver(side: Side, command: &str, err: &DriverError, redactor: &Redactor) -> Self {
        let message = redactor.redact(&driver_message(err));
        match err.kind.as_ref() {
            ErrorKind::Command(c) if c.code == codes::AUTHENTICATION_FAILED => Self::Connect {
                side,
                message,
                code: Some(c.code),
            },
            ErrorKind::Command(c) => Self::Command {
                side,
                command: command.to_owned(),
                code: Some(c.code),
                labels: err.labels().iter().cloned().collect(),
                message,
            },
            ErrorKind::Authentication { .. } => Self::Connect {
                side,
                message,
                code: Some(codes::AUTHENTICATION_FAILED),
            },
            ErrorKind::ServerSelection { .. } | ErrorKind::DnsResolve { .. } => Self::Connect {
                side,
                message,
                code: None,
            },
            ErrorKind::InvalidResponse { .. } | ErrorKind::BsonDeserialization(_) => {
                Self::InvalidReply {
                    side,
                    command: command.to_owned(),
                    detail: message,
                }
            }
            _ => Self::Command {
                side,
                command: command.to_owned(),
                code: error_code(err),
                labels: err.labels().iter().cloned().collect(),
                message,
            },
        }
    }

    /// The server error code, when there is one.
    pub fn code(&self) -> Option<i32> {
        match self {
            Self::Connect { code, .. } | Self::Command { code, .. } => *code,
            Self::InvalidReply { .. } => None,
        }
    }

    /// True for errors worth retrying after a pause: network trouble, elections, time limits,
    /// write conflicts and anything the server labels retryable (decided by code and label,
    /// as the drivers do; never by message).
    pub fn is_transient(&self) -> bool {
        const TRANSIENT_CODES: &[i32] = &[
            6, 7, 50, 89, 91, 112, 189, 262, 9001, 10107, 11600, 11602, 13435, 13436,
        ];
        match self {
            Self::Connect { code, .. } => *code != Some(codes::AUTHENTICATION_FAILED),
            Self::Command { code: None, .. } => true,
            Self::Command {
                code: Some(code),
                labels,
                ..
            } => {
                TRANSIENT_CODES.contains(code)
                    || labels.iter().any(|l| {
                        matches!(
                            l.as_str(),
                            "RetryableWriteError"
                                | "TransientTransactionError"
                                | "ResumableChangeStreamError"
                        )
                    })
            }
            Self::InvalidReply { .. } => false,
        }
    }

    /// Which cluster failed.
    pub fn side(&self) -> Side {
        match self {
            Self::Connect { side, .. }
            | Self::Command { side, .. }
            | Self::InvalidReply { side, .. } => *side,
        }
    }
}

/// The useful part of a driver error: its `Display` adds labels and sources meant for logs.
pub fn driver_message(err: &DriverError) -> String {
    match err.kind.as_ref() {
        ErrorKind::InvalidArgument { message, .. } => message.clone(),
        ErrorKind::Command(c) => {
            if c.code_name.is_empty() {
                format!("{} (code {})", c.message, c.code)
            } else {
                format!("{} ({}, code {})", c.message, c.code_name, c.code)
            }
        }
        ErrorKind::Authentication { message, .. } => format!("authentication failed: {message}"),
        ErrorKind::ServerSelection { message, .. } => {
            format!(
                "no server available: {}",
                distill_selection_message(message)
            )
        }
        ErrorKind::Io(e) => format!("connection error: {e}"),
        ErrorKind::ConnectionPoolCleared { message, .. } => {
            format!("connection pool cleared: {message}")
        }
        _ => err.to_string(),
    }
}

/// The server error code of a driver error, when it carries one.
pub fn error_code(err: &DriverError) -> Option<i32> {
    use mongodb::error::WriteFailure;
    match err.kind.as_ref() {
        ErrorKind::Command(c) => Some(c.code),
        ErrorKind::Write(WriteFailure::WriteError(w)) => Some(w.code),
        ErrorKind::Write(WriteFailure::WriteConcernError(w)) => Some(w.code),
        _ => None,
    }
}

/// The driver's server-selection message describes the whole topology; keep what a user acts
/// on: each server's address and why it could not be used.
fn distill_selection_message(message: &str) -> String {
    let mut causes = Vec::new();
    for part in message.split("Address: ").skip(1) {
        let address = part.split(',').next().unwrap_or_default().trim();
        let cause = part
            .split_once("Error: ")
            .map(|(_, rest)| {
                let rest = rest.strip_prefix("Kind: ").unwrap_or(rest);
                rest.split(", labels:").next().unwrap_or(rest).trim()
            })
            .unwrap_or("not reachable");
        causes.push(format!("{address}: {cause}"));
    }
    if causes.is_empty() {
        message.to_owned()
    } else {
        causes.join("; ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selection_messages_keep_addresses_and_causes() {
        let raw = "Server selection timeout: No available servers. Topology: { Type: Unknown, Servers: [ { Address: 127.0.0.1:2, Type: Unknown, Error: Kind: I/O error: Connection refused (os error 111), labels: {}, source: None, server response: None } ] }";
        assert_eq!(
            distill_selection_message(raw),
            "127.0.0.1:2: I/O error: Connection refused (os error 111)"
        );
        assert_eq!(distill_selection_message("odd"), "odd");
    }
}
