//! Logical sessions: retryable-write bookkeeping per `lsid`.
//!
//! mongod remembers, per session, the highest `txnNumber` it has seen and the outcome of the
//! write executed under it. A retry of the same (lsid, txnNumber) gets the stored reply
//! instead of running the write again; an older txnNumber is refused with 225
//! `TransactionTooOld`. Sessions are keyed by the 16 bytes of `lsid.id`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bson::{Document, RawDocumentBuf};

use crate::engine::transaction::{Transaction, TxnState};
use crate::error::CommandError;

/// What one session remembers.
#[derive(Debug)]
struct SessionState {
    /// The highest txnNumber started on this session.
    txn_number: i64,
    /// The reply of the write executed under `txn_number`, if it completed.
    reply: Option<RawDocumentBuf>,
    /// The command name that produced `reply` (a retry must be the same command).
    command: String,
    /// Last use, for expiry.
    last_used: Instant,
    /// The session's current (or last) multi-document transaction.
    txn: Option<Arc<Mutex<Transaction>>>,
}

/// The outcome of registering a retryable write.
#[derive(Debug, PartialEq)]
pub enum RetryCheck {
    /// First execution of this txnNumber: run the write, then [`SessionTable::store`].
    Execute,
    /// A retry of a completed write: answer with this reply.
    Replay(RawDocumentBuf),
}

/// All sessions a server knows.
#[derive(Debug, Default)]
pub struct SessionTable {
    /// Keyed by the lsid's UUID bytes; std mutex, never held across an await.
    sessions: Mutex<HashMap<Vec<u8>, SessionState>>,
}

impl SessionTable {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Vec<u8>, SessionState>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a retryable write (lsid, txnNumber) for `command`.
    pub fn begin_retryable(
        &self,
        lsid: &[u8],
        txn_number: i64,
        command: &str,
    ) -> Result<RetryCheck, CommandError> {
        let mut sessions = self.lock();
        let state = sessions
            .entry(lsid.to_vec())
            .or_insert_with(|| SessionState {
                txn_number: i64::MIN,
                reply: None,
                command: String::new(),
                last_used: Instant::now(),
                txn: None,
            });
        state.last_used = Instant::now();
        if txn_number < state.txn_number {
            return Err(CommandError::new(
                225,
                format!(
                    "Retryable write with txnNumber {txn_number} is prohibited on session {} because a newer retryable write with txnNumber {} has already started on this session.",
                    hex(lsid),
                    state.txn_number
                ),
            ));
        }
        if txn_number == state.txn_number
            && let Some(reply) = &state.reply
        {
            if state.command != command {
                return Err(CommandError::new(
                    217,
                    format!(
                        "Cannot retry a {command} with txnNumber {txn_number}: the session ran a {} under it",
                        state.command
                    ),
                ));
            }
            return Ok(RetryCheck::Replay(reply.clone()));
        }
        state.txn_number = txn_number;
        state.reply = None;
        state.command = command.to_string();
        Ok(RetryCheck::Execute)
    }

    /// Records that a session was used (every command with an `lsid`).
    pub fn touch(&self, lsid: &[u8]) {
        let mut sessions = self.lock();
        match sessions.get_mut(lsid) {
            Some(state) => state.last_used = Instant::now(),
            None => {
                sessions.insert(
                    lsid.to_vec(),
                    SessionState {
                        txn_number: i64::MIN,
                        reply: None,
                        command: String::new(),
                        last_used: Instant::now(),
                        txn: None,
                    },
                );
            }
        }
    }

    /// The known sessions with their last use, for `$listLocalSessions`.
    pub fn list(&self) -> Vec<(Vec<u8>, bson::DateTime)> {
        let now = Instant::now();
        let wall = bson::DateTime::now().timestamp_millis();
        self.lock()
            .iter()
            .map(|(id, s)| {
                let ago = now.duration_since(s.last_used).as_millis() as i64;
                (id.clone(), bson::DateTime::from_millis(wall - ago))
            })
            .collect()
    }

    /// Starts transaction `txn_number` on a session (`startTransaction: true`).
    pub fn begin_transaction(
        &self,
        lsid: &[u8],
        lsid_doc: &Document,
        txn_number: i64,
    ) -> Result<Arc<Mutex<Transaction>>, CommandError> {
        let mut sessions = self.lock();
        let state = sessions
            .entry(lsid.to_vec())
            .or_insert_with(|| SessionState {
                txn_number: i64::MIN,
                reply: None,
                command: String::new(),
                last_used: Instant::now(),
                txn: None,
            });
        state.last_used = Instant::now();
        if txn_number < state.txn_number {
            return Err(CommandError::new(
                225,
                format!(
                    "Cannot start transaction {txn_number} on session {} because a newer transaction {} has already started.",
                    hex(lsid),
                    state.txn_number
                ),
            ));
        }
        if txn_number == state.txn_number && state.txn.is_some() {
            return Err(CommandError::new(
                117,
                format!(
                    "Cannot start a transaction at given transaction number {txn_number} on session {} using txnRetryCounter 0 because it is already in use",
                    hex(lsid)
                ),
            ));
        }
        // A newer transaction implicitly aborts an unfinished older one.
        if let Some(old) = &state.txn {
            let mut old = old.lock().unwrap_or_else(|p| p.into_inner());
            if old.state == TxnState::Active {
                old.abort();
            }
        }
        let txn = Arc::new(Mutex::new(Transaction::new(txn_number, lsid_doc.clone())));
        state.txn_number = txn_number;
        state.reply = None;
        state.txn = Some(Arc::clone(&txn));
        Ok(txn)
    }

    /// The session's transaction `txn_number` (for commands after the first one).
    pub fn transaction(
        &self,
        lsid: &[u8],
        txn_number: i64,
    ) -> Result<Arc<Mutex<Transaction>>, CommandError> {
        let sessions = self.lock();
        match sessions.get(lsid).and_then(|s| s.txn.clone()) {
            Some(txn) if txn.lock().unwrap_or_else(|p| p.into_inner()).txn_number == txn_number => {
                Ok(txn)
            }
            _ => Err(CommandError::new(
                251,
                format!(
                    "Given transaction number {txn_number} does not match any in-progress transactions."
                ),
            )
            .with_label("TransientTransactionError")),
        }
    }

    /// Stores the reply of an executed retryable write.
    pub fn store(&self, lsid: &[u8], txn_number: i64, reply: RawDocumentBuf) {
        let mut sessions = self.lock();
        if let Some(state) = sessions.get_mut(lsid)
            && state.txn_number == txn_number
        {
            state.reply = Some(reply);
        }
    }

    /// Forgets the given sessions (`endSessions`), aborting their open transactions.
    pub fn end(&self, lsids: &[Vec<u8>]) {
        let mut sessions = self.lock();
        for id in lsids {
            if let Some(state) = sessions.remove(id) {
                abort_open(&state);
            }
        }
    }

    /// Forgets every session (`killAllSessions`), aborting their open transactions.
    pub fn clear(&self) {
        let mut sessions = self.lock();
        for state in sessions.values() {
            abort_open(state);
        }
        sessions.clear();
    }

    /// Drops sessions idle for longer than `logicalSessionTimeoutMinutes`.
    pub fn expire(&self, idle: std::time::Duration) {
        let now = Instant::now();
        self.lock()
            .retain(|_, s| now.duration_since(s.last_used) < idle);
    }

    /// How many sessions are remembered.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when no session is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn abort_open(state: &SessionState) {
    if let Some(txn) = &state.txn {
        let mut txn = txn.lock().unwrap_or_else(|p| p.into_inner());
        if txn.state == TxnState::Active {
            txn.abort();
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::rawdoc;

    #[test]
    fn retries_replay_and_old_numbers_are_refused() {
        let t = SessionTable::default();
        let lsid = [1u8; 16];
        assert_eq!(
            t.begin_retryable(&lsid, 1, "insert").unwrap(),
            RetryCheck::Execute
        );
        t.store(&lsid, 1, rawdoc! {"n": 1});
        assert_eq!(
            t.begin_retryable(&lsid, 1, "insert").unwrap(),
            RetryCheck::Replay(rawdoc! {"n": 1})
        );
        assert_eq!(
            t.begin_retryable(&lsid, 2, "update").unwrap(),
            RetryCheck::Execute
        );
        assert_eq!(t.begin_retryable(&lsid, 1, "insert").unwrap_err().code, 225);
        t.end(&[lsid.to_vec()]);
        assert!(t.is_empty());
    }
}
