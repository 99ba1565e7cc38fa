//! Authentication state: the server-wide [`Authenticator`] (users, cursor owners) and the
//! per-connection [`ConnAuth`] (who is logged in, which SASL conversation is under way).
//!
//! The conversation rules follow mongod's `AuthenticationSession`: `saslStart` (or a
//! `speculativeAuthenticate` in the handshake) replaces any conversation in progress, a
//! `saslContinue` without one is a 17 `ProtocolError` ("No SASL session state found"), a failed
//! step ends the conversation, and a connection authenticates as one user only (re-authenticating
//! as the same user is allowed).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::auth::privilege::Privilege;
use crate::auth::scram::{Conversation, Mechanism, Step};
use crate::auth::user::{User, UserDb};
use crate::error::CommandError;

/// Server-wide authentication state.
#[derive(Debug, Default)]
pub struct Authenticator {
    /// The declared users.
    pub users: UserDb,
    /// Who opened each live cursor (`user@db`): mongod lets only the owner `getMore` it.
    cursor_owners: Mutex<HashMap<i64, String>>,
}

impl Authenticator {
    /// Authentication state for these users.
    pub fn new(users: UserDb) -> Authenticator {
        Authenticator {
            users,
            cursor_owners: Mutex::default(),
        }
    }

    fn owners(&self) -> std::sync::MutexGuard<'_, HashMap<i64, String>> {
        // A panic elsewhere cannot leave the map half-updated: every update is one call.
        self.cursor_owners
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records the owner of a newly opened cursor.
    pub fn record_cursor(&self, id: i64, owner: String) {
        self.owners().insert(id, owner);
    }

    /// The owner of a cursor, if it was opened by an authenticated user.
    pub fn cursor_owner(&self, id: i64) -> Option<String> {
        self.owners().get(&id).cloned()
    }

    /// Forgets a cursor that was exhausted or killed.
    pub fn forget_cursor(&self, id: i64) {
        self.owners().remove(&id);
    }
}

/// A SASL conversation in progress on a connection.
#[derive(Debug, Clone)]
struct Pending {
    /// The authentication database (`$db` of `saslStart`).
    db: String,
    /// The SCRAM state.
    conversation: Conversation,
}

/// The authentication state of one connection.
#[derive(Debug, Clone, Default)]
pub struct ConnAuth {
    /// `None` when the server has no users (authentication off, everything allowed).
    authenticator: Option<Arc<Authenticator>>,
    /// The authenticated user.
    user: Option<Arc<User>>,
    /// The SASL conversation under way.
    pending: Option<Pending>,
}

/// mongod's reply to every failed authentication, whatever the reason.
pub fn authentication_failed() -> CommandError {
    CommandError::new(18, "Authentication failed.")
}

impl ConnAuth {
    /// The state of a new connection.
    pub fn new(authenticator: Option<Arc<Authenticator>>) -> ConnAuth {
        ConnAuth {
            authenticator,
            user: None,
            pending: None,
        }
    }

    /// True when the server requires authentication.
    pub fn is_enabled(&self) -> bool {
        self.authenticator.is_some()
    }

    /// The server-wide state, when authentication is on.
    pub fn authenticator(&self) -> Option<&Arc<Authenticator>> {
        self.authenticator.as_ref()
    }

    /// The authenticated user.
    pub fn user(&self) -> Option<&Arc<User>> {
        self.user.as_ref()
    }

    /// The privileges of the authenticated user (none before authentication).
    pub fn privileges(&self) -> &[Privilege] {
        self.user.as_ref().map_or(&[], |u| u.privileges.as_slice())
    }

    /// Looks up a user for `saslSupportedMechs` and `usersInfo`.
    pub fn find_user(&self, name: &str, db: &str) -> Option<Arc<User>> {
        self.authenticator
            .as_ref()
            .and_then(|a| a.users.get(name, db).cloned())
    }

    /// `saslStart`: begins a conversation (replacing any other) and runs its first step.
    pub fn sasl_start(
        &mut self,
        db: &str,
        mechanism: &str,
        payload: &[u8],
        skip_empty_exchange: bool,
    ) -> Result<Step, CommandError> {
        self.pending = None;
        let Some(mechanism) = Mechanism::from_name(mechanism) else {
            return Err(CommandError::new(
                334,
                format!(
                    "Received authentication for mechanism {mechanism} which is unknown or not enabled"
                ),
            )
            .with_code_name("MechanismUnavailable"));
        };
        let users = self.authenticator.clone();
        let started = Conversation::start(mechanism, payload, skip_empty_exchange, |name| {
            users
                .as_ref()
                .and_then(|a| a.users.get(name, db))
                .and_then(|u| u.credentials(mechanism))
        });
        match started {
            Ok((conversation, step)) => {
                self.pending = Some(Pending {
                    db: db.to_string(),
                    conversation,
                });
                Ok(step)
            }
            Err(e) => {
                tracing::debug!(error = %e, db, "authentication failed");
                Err(authentication_failed())
            }
        }
    }

    /// `saslContinue`: runs the next step of the conversation under way.
    pub fn sasl_continue(
        &mut self,
        conversation_id: i64,
        payload: &[u8],
    ) -> Result<Step, CommandError> {
        let Some(mut pending) = self.pending.take() else {
            return Err(CommandError::new(17, "No SASL session state found"));
        };
        if conversation_id != 1 {
            return Err(CommandError::new(17, "sasl: Mismatched conversation id"));
        }
        let step = match pending.conversation.step(payload) {
            Ok(step) => step,
            Err(e) => {
                tracing::debug!(error = %e, db = %pending.db, "authentication failed");
                return Err(authentication_failed());
            }
        };
        if step.done {
            self.authorize(&pending.db, &pending.conversation.user)?;
        } else {
            self.pending = Some(pending);
        }
        Ok(step)
    }

    /// Marks the connection as authenticated: mongod's `addAndAuthorizeUser`.
    fn authorize(&mut self, db: &str, name: &str) -> Result<(), CommandError> {
        let Some(user) = self.find_user(name, db) else {
            return Err(authentication_failed());
        };
        if let Some(previous) = &self.user {
            if Arc::ptr_eq(previous, &user) {
                return Ok(());
            }
            if previous.spec.db == db {
                return Err(CommandError::new(
                    5626701,
                    format!(
                        "Each client connection may only be authenticated once. Previously authenticated as: {}",
                        previous.full_name()
                    ),
                )
                .with_code_name("Location5626701"));
            }
            return Err(CommandError::new(
                5626702,
                format!(
                    "Client has attempted to authenticate on multiple databases.Already authenticated as: {}",
                    previous.full_name()
                ),
            )
            .with_code_name("Location5626702"));
        }
        self.user = Some(user);
        Ok(())
    }

    /// `logout` on `db`: forgets the user if they authenticated there.
    pub fn logout(&mut self, db: &str) {
        if self.user.as_ref().is_some_and(|u| u.spec.db == db) {
            self.user = None;
        }
        self.pending = None;
    }
}
