//! Server-side cursors: the documents a `find`/`aggregate`/`listCollections` still owes its
//! client, addressed by a 64-bit id.
//!
//! A getMore *checks out* its cursor (so two getMores cannot interleave on one cursor, as in
//! mongod), works without holding the table lock, and checks it back in unless it is
//! exhausted. Ids are random positive Int64 values, like mongod's. Idle cursors expire after
//! `cursorTimeoutMillis` (10 minutes) unless opened with `noCursorTimeout`.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bson::RawDocumentBuf;
use rand::Rng;

use crate::error::CommandError;

/// mongod's default `cursorTimeoutMillis`.
pub const CURSOR_TIMEOUT: Duration = Duration::from_secs(600);

/// Where a cursor's next documents come from.
#[derive(Debug)]
pub enum CursorSource {
    /// A precomputed result (find, aggregate, listCollections, listIndexes, ...). The
    /// documents are shared with storage where no projection applied, so a cursor over a
    /// large collection costs a pointer per document, not a copy.
    Documents(VecDeque<Arc<RawDocumentBuf>>),
    /// A `find` reading its collection a batch at a time (the collection is the cursor's
    /// `origin`).
    Scan(Box<crate::engine::scan::Scan>),
    /// A change stream reading the oplog.
    ChangeStream(Box<crate::engine::change_stream::ChangeStreamCursor>),
}

/// One open cursor.
#[derive(Debug)]
pub struct Cursor {
    /// The cursor id (never 0).
    pub id: i64,
    /// The database the cursor belongs to.
    pub db: String,
    /// The collection part of the namespace getMore must name (`c`, `$cmd.aggregate`, ...).
    pub coll: String,
    /// The documents still owed.
    pub source: CursorSource,
    /// The session that opened the cursor (killed with it by `endSessions`).
    pub lsid: Option<Vec<u8>>,
    /// Whether a getMore may wait for new data (`awaitData`, change streams).
    pub await_data: bool,
    /// Whether the cursor stays open when it runs out of data (`tailable`).
    pub tailable: bool,
    /// Exempt from idle expiry (`noCursorTimeout`).
    pub no_timeout: bool,
    /// Last time a command used the cursor.
    pub last_used: Instant,
    /// The collection a find reads, to end the cursor as mongod does when it goes away.
    pub origin: Option<Origin>,
}

/// The collection a find cursor reads, as it was when the find ran.
#[derive(Debug, Clone)]
pub struct Origin {
    /// The collection.
    pub collection: Arc<crate::engine::collection::Collection>,
    /// Its [`CollectionData::epoch`](crate::engine::collection::CollectionData::epoch) then.
    pub epoch: u64,
}

impl Origin {
    /// 175 `QueryPlanKilled`, as from mongod, once the collection was dropped, renamed or
    /// replaced by `$out` since the find ran. `data` is the collection's, under its lock.
    pub fn check(
        &self,
        data: &crate::engine::collection::CollectionData,
    ) -> Result<(), CommandError> {
        if data.dropped || data.epoch != self.epoch {
            return Err(CommandError::new(
                175,
                "collection dropped or renamed while the cursor was open",
            ));
        }
        Ok(())
    }
}

impl Cursor {
    /// The full namespace string replies report (`db.coll`).
    pub fn ns(&self) -> String {
        format!("{}.{}", self.db, self.coll)
    }
}

/// A table slot: a cursor at rest, or a marker while a command works on it.
#[derive(Debug)]
enum Slot {
    Idle(Cursor),
    CheckedOut {
        db: String,
        coll: String,
        killed: bool,
    },
}

/// All open cursors of a server.
#[derive(Debug, Default)]
pub struct CursorTable {
    /// std mutex: held only for map operations, never across an await.
    slots: Mutex<HashMap<i64, Slot>>,
}

impl CursorTable {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i64, Slot>> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A fresh unused cursor id.
    pub fn new_id(&self) -> i64 {
        let slots = self.lock();
        let mut rng = rand::rng();
        loop {
            let id = rng.random_range(1..i64::MAX);
            if !slots.contains_key(&id) {
                return id;
            }
        }
    }

    /// Stores a cursor (new or checked back in). A cursor killed while checked out is dropped.
    pub fn check_in(&self, mut cursor: Cursor) {
        cursor.last_used = Instant::now();
        let mut slots = self.lock();
        if let Some(Slot::CheckedOut { killed: true, .. }) = slots.get(&cursor.id) {
            slots.remove(&cursor.id);
            return;
        }
        slots.insert(cursor.id, Slot::Idle(cursor));
    }

    /// Takes a cursor out for a getMore on `db.coll`.
    pub fn check_out(&self, id: i64, db: &str, coll: &str) -> Result<Cursor, CommandError> {
        let mut slots = self.lock();
        match slots.get(&id) {
            None => Err(CommandError::new(43, format!("cursor id {id} not found"))),
            Some(Slot::CheckedOut { .. }) => Err(CommandError::new(
                143,
                format!("cursor id {id} is already in use"),
            )),
            Some(Slot::Idle(c)) if c.db != db || c.coll != coll => Err(CommandError::new(
                13,
                format!(
                    "Requested getMore on namespace '{db}.{coll}', but cursor belongs to a different namespace {}",
                    c.ns()
                ),
            )),
            Some(Slot::Idle(_)) => {
                let marker = Slot::CheckedOut {
                    db: db.to_string(),
                    coll: coll.to_string(),
                    killed: false,
                };
                match slots.insert(id, marker) {
                    Some(Slot::Idle(c)) => Ok(c),
                    _ => Err(CommandError::new(43, format!("cursor id {id} not found"))),
                }
            }
        }
    }

    /// Forgets a checked-out cursor that is exhausted or failed.
    pub fn release(&self, id: i64) {
        self.lock().remove(&id);
    }

    /// Kills a cursor of namespace `db.coll`; true if it existed.
    pub fn kill(&self, id: i64, db: &str, coll: &str) -> bool {
        let mut slots = self.lock();
        match slots.get_mut(&id) {
            Some(Slot::Idle(c)) if c.db == db && c.coll == coll => {
                slots.remove(&id);
                true
            }
            Some(Slot::CheckedOut {
                db: d,
                coll: c,
                killed,
            }) if d == db && c == coll => {
                *killed = true;
                true
            }
            _ => false,
        }
    }

    /// Kills every cursor opened by one of the given sessions (`endSessions`), or all cursors
    /// that have a session when `lsids` is `None` (`killAllSessions`).
    pub fn kill_sessions(&self, lsids: Option<&[Vec<u8>]>) {
        let mut slots = self.lock();
        slots.retain(|_, slot| match slot {
            Slot::Idle(c) => match (&c.lsid, lsids) {
                (Some(_), None) => false,
                (Some(id), Some(list)) => !list.contains(id),
                (None, _) => true,
            },
            Slot::CheckedOut { .. } => true,
        });
    }

    /// Drops cursors idle for longer than [`CURSOR_TIMEOUT`].
    pub fn expire(&self) {
        let now = Instant::now();
        self.lock().retain(|_, slot| match slot {
            Slot::Idle(c) => c.no_timeout || now.duration_since(c.last_used) < CURSOR_TIMEOUT,
            Slot::CheckedOut { .. } => true,
        });
    }

    /// How many cursors are open.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when no cursor is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cursor(table: &CursorTable) -> Cursor {
        Cursor {
            id: table.new_id(),
            db: "db".into(),
            coll: "c".into(),
            source: CursorSource::Documents(VecDeque::new()),
            lsid: None,
            await_data: false,
            tailable: false,
            no_timeout: false,
            last_used: Instant::now(),
            origin: None,
        }
    }

    #[test]
    fn check_out_enforces_namespace_and_exclusivity() {
        let t = CursorTable::default();
        let c = cursor(&t);
        let id = c.id;
        assert!(id > 0);
        t.check_in(c);
        assert_eq!(t.check_out(id, "db", "other").unwrap_err().code, 13);
        let c = t.check_out(id, "db", "c").unwrap();
        assert_eq!(t.check_out(id, "db", "c").unwrap_err().code, 143);
        // Killed while checked out: dropped at check-in.
        assert!(t.kill(id, "db", "c"));
        t.check_in(c);
        assert_eq!(t.check_out(id, "db", "c").unwrap_err().code, 43);
        assert!(t.is_empty());
    }
}
