//! Logical sessions: retryable-write bookkeeping per `lsid`.
//!
//! mongod remembers, per session, the highest `txnNumber` it has seen and the outcome of the
//! write executed under it. A retry of the same (lsid, txnNumber) gets the stored reply
//! instead of running the write again; an older txnNumber is refused with 225
//! `TransactionTooOld`. Sessions are keyed by the 16 bytes of `lsid.id`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use bson::RawDocumentBuf;

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

    /// Stores the reply of an executed retryable write.
    pub fn store(&self, lsid: &[u8], txn_number: i64, reply: RawDocumentBuf) {
        let mut sessions = self.lock();
        if let Some(state) = sessions.get_mut(lsid)
            && state.txn_number == txn_number
        {
            state.reply = Some(reply);
        }
    }

    /// Forgets the given sessions (`endSessions`).
    pub fn end(&self, lsids: &[Vec<u8>]) {
        let mut sessions = self.lock();
        for id in lsids {
            sessions.remove(id);
        }
    }

    /// Forgets every session (`killAllSessions`).
    pub fn clear(&self) {
        self.lock().clear();
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
