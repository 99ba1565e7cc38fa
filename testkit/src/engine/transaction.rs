//! Multi-document transactions and the [`Store`] every command reads and writes through.
//!
//! A transaction works on private copies of the collections it touches, taken when it first
//! touches each one (snapshot isolation per collection; documents are shared `Arc`s, so a copy
//! costs a pointer per document). Its writes are logged, not committed. `commitTransaction`
//! checks that every document the transaction wrote is still as the transaction first saw it
//! (otherwise 112 `WriteConflict` with the `TransientTransactionError` label, and the
//! transaction aborts), applies the final version of each such document to the shared
//! collections, and appends one oplog entry holding every op with the session's `lsid` and
//! `txnNumber`, so its change events share one cluster time and differ by `txnOpIndex`.
//! Concurrent writes to other documents of the same collections do not conflict.
//!
//! Outside a transaction the [`Store`] is a thin view of the catalog and the oplog.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use bson::{Document, RawDocumentBuf, Timestamp};

use crate::engine::Engine;
use crate::engine::catalog::{Entry, id_index_spec};
use crate::engine::collection::{Collection, CollectionOptions, id_key};
use crate::engine::namespace::Namespace;
use crate::engine::oplog::{DdlOp, OplogOp, TxnInfo};
use crate::error::CommandError;

/// Where a transaction is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnState {
    /// Started; commands may run in it.
    Active,
    /// Committed at the given cluster time.
    Committed(Timestamp),
    /// Aborted (explicitly or by an error).
    Aborted,
}

/// A collection copy private to a transaction.
#[derive(Debug)]
struct Staged {
    /// The private copy the transaction reads and writes.
    copy: Arc<Collection>,
    /// The collection it copies and that collection's version at copy time; `None` when the
    /// transaction created the collection.
    base: Option<(Arc<Collection>, u64)>,
}

/// One transaction of a session.
#[derive(Debug)]
pub struct Transaction {
    /// The transaction's number.
    pub txn_number: i64,
    /// The session id document (`lsid`), copied into its change events.
    pub lsid: Document,
    /// State.
    pub state: TxnState,
    /// Private collection copies, by namespace.
    staged: BTreeMap<Namespace, Staged>,
    /// Logged ops, in order.
    ops: Vec<OplogOp>,
}

impl Transaction {
    /// A new active transaction.
    pub fn new(txn_number: i64, lsid: Document) -> Transaction {
        Transaction {
            txn_number,
            lsid,
            state: TxnState::Active,
            staged: BTreeMap::new(),
            ops: Vec::new(),
        }
    }

    /// Discards the transaction's work.
    pub fn abort(&mut self) {
        self.state = TxnState::Aborted;
        self.staged.clear();
        self.ops.clear();
    }

    /// Commits: validates, installs the copies and appends the transaction's oplog entry.
    pub fn commit(&mut self, engine: &Engine) -> Result<Timestamp, CommandError> {
        match self.state {
            TxnState::Committed(ts) => return Ok(ts),
            TxnState::Aborted => {
                return Err(CommandError::new(
                    251,
                    format!("Transaction {} has been aborted.", self.txn_number),
                )
                .with_label("TransientTransactionError"));
            }
            TxnState::Active => {}
        }
        let conflict = || {
            CommandError::new(
                112,
                "Write conflict during plan execution and yielding is disabled. :: Please retry your operation or multi-document transaction.",
            )
            .with_label("TransientTransactionError")
        };
        let mut dbs = engine.catalog.write();
        // Phase 1: for every collection the transaction wrote, check under the collection's
        // write lock (taken in namespace order) that each document it touched is still as it
        // was when the transaction first read it, and build the new contents on a copy.
        let mut installs = Vec::new();
        let mut conflicted = false;
        let mut failure: Option<CommandError> = None;
        for (ns, staged) in &self.staged {
            let Some((base, _)) = &staged.base else {
                continue;
            };
            let changes = document_changes(&self.ops, ns);
            if changes.is_empty() {
                continue;
            }
            let current = dbs
                .get(&ns.db)
                .and_then(|d| d.entries.get(&ns.coll))
                .cloned();
            let same = matches!(&current, Some(Entry::Collection(now)) if Arc::ptr_eq(base, now));
            if !same {
                conflicted = true;
                break;
            }
            let guard = base.write();
            if guard.dropped {
                conflicted = true;
                break;
            }
            let mut next = guard.clone();
            for (key, (expected, last)) in &changes {
                let now = next
                    .find_by_id_key(key)
                    .map(|(rid, d)| (rid, Arc::clone(d)));
                let unchanged = match (expected, &now) {
                    (None, None) => true,
                    (Some(e), Some((_, d))) => e.as_bytes() == d.as_bytes(),
                    _ => false,
                };
                if !unchanged {
                    conflicted = true;
                    break;
                }
                let applied = match (now, last) {
                    (None, Some(doc)) => next.insert(&ns.to_string(), (**doc).clone()).map(|_| ()),
                    (Some((rid, _)), Some(doc)) => next
                        .replace(&ns.to_string(), rid, (**doc).clone())
                        .map(|_| ()),
                    (Some((rid, _)), None) => {
                        next.remove(rid);
                        Ok(())
                    }
                    (None, None) => Ok(()),
                };
                if let Err(e) = applied {
                    failure = Some(e);
                    break;
                }
            }
            if conflicted || failure.is_some() {
                break;
            }
            installs.push((guard, next));
        }
        if conflicted || failure.is_some() {
            drop(installs);
            drop(dbs);
            self.abort();
            return Err(failure.unwrap_or_else(conflict));
        }
        // Phase 2: install. Collections the transaction created are created first.
        let mut created = Vec::new();
        for (ns, staged) in &self.staged {
            if staged.base.is_none() {
                if dbs
                    .get(&ns.db)
                    .is_some_and(|d| d.entries.contains_key(&ns.coll))
                {
                    drop(installs);
                    drop(dbs);
                    self.abort();
                    return Err(conflict());
                }
                created.push(OplogOp::Ddl(DdlOp::Create {
                    ns: ns.clone(),
                    uuid: staged.copy.uuid,
                    options: Document::new(),
                    id_index: Some(id_index_spec()),
                    kind: "collection",
                }));
                dbs.entry(ns.db.clone())
                    .or_default()
                    .entries
                    .insert(ns.coll.clone(), Entry::Collection(Arc::clone(&staged.copy)));
            }
        }
        for (mut guard, next) in installs {
            *guard = next;
        }
        for op in created {
            engine.oplog.append(vec![op], None);
        }
        let ts = if self.ops.is_empty() {
            engine.oplog.cluster_time()
        } else {
            engine.oplog.append(
                std::mem::take(&mut self.ops),
                Some(TxnInfo {
                    lsid: self.lsid.clone(),
                    txn_number: self.txn_number,
                }),
            )
        };
        drop(dbs);
        self.staged.clear();
        self.state = TxnState::Committed(ts);
        Ok(ts)
    }
}

/// Per document (`_id` KeyString) a transaction changed in `ns`: the version it first saw (or
/// `None` when the document did not exist) and its final version (`None` when deleted).
type DocumentChanges =
    BTreeMap<Vec<u8>, (Option<Arc<RawDocumentBuf>>, Option<Arc<RawDocumentBuf>>)>;

fn document_changes(ops: &[OplogOp], ns: &Namespace) -> DocumentChanges {
    let mut changes = DocumentChanges::new();
    for op in ops {
        let (key, before, after) = match op {
            OplogOp::Insert { ns: n, doc, .. } if n == ns => {
                (id_key(doc), None, Some(Arc::clone(doc)))
            }
            OplogOp::Update {
                ns: n,
                before,
                after,
                ..
            } if n == ns => (
                id_key(after),
                Some(Arc::clone(before)),
                Some(Arc::clone(after)),
            ),
            OplogOp::Delete { ns: n, before, .. } if n == ns => {
                (id_key(before), Some(Arc::clone(before)), None)
            }
            _ => continue,
        };
        changes
            .entry(key)
            .and_modify(|(_, last)| *last = after.clone())
            .or_insert((before, after));
    }
    changes
}

/// What commands read and write through: the catalog and oplog directly, or a transaction's
/// private copies and op log.
#[derive(Debug, Clone, Copy)]
pub struct Store<'a> {
    /// The server.
    pub engine: &'a Engine,
    /// The transaction the command runs in, if any.
    pub txn: Option<&'a Mutex<Transaction>>,
}

impl<'a> Store<'a> {
    fn txn(&self) -> Option<MutexGuard<'a, Transaction>> {
        self.txn
            .map(|t| t.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// The entry named `ns` as this command sees it.
    pub fn get(&self, ns: &Namespace) -> Option<Entry> {
        let Some(mut txn) = self.txn() else {
            return self.engine.catalog.get(ns);
        };
        if let Some(staged) = txn.staged.get(ns) {
            return Some(Entry::Collection(Arc::clone(&staged.copy)));
        }
        match self.engine.catalog.get(ns)? {
            Entry::View(v) => Some(Entry::View(v)),
            Entry::Collection(base) => {
                let copy = {
                    let data = base.read();
                    let copy = Collection::with_uuid(base.uuid, CollectionOptions::default());
                    *copy.write() = data.clone();
                    (Arc::new(copy), data.version())
                };
                txn.staged.insert(
                    ns.clone(),
                    Staged {
                        copy: Arc::clone(&copy.0),
                        base: Some((base, copy.1)),
                    },
                );
                Some(Entry::Collection(copy.0))
            }
        }
    }

    /// The collection named `ns`, created when missing (an insert or upsert into a new
    /// namespace).
    pub fn get_or_create(&self, ns: &Namespace) -> Result<Arc<Collection>, CommandError> {
        if self.txn.is_none() {
            return self
                .engine
                .catalog
                .collection_or_create(ns, &self.engine.oplog);
        }
        match self.get(ns) {
            Some(Entry::Collection(c)) => Ok(c),
            Some(Entry::View(_)) => Err(CommandError::new(
                166,
                format!("Namespace {ns} is a view, not a collection"),
            )),
            None => {
                crate::engine::namespace::validate_db_name(&ns.db)?;
                crate::engine::namespace::validate_coll_name(&ns.db, &ns.coll)?;
                let copy = Arc::new(Collection::new(CollectionOptions::default()));
                if let Some(mut txn) = self.txn() {
                    txn.staged.insert(
                        ns.clone(),
                        Staged {
                            copy: Arc::clone(&copy),
                            base: None,
                        },
                    );
                }
                Ok(copy)
            }
        }
    }

    /// Commits several ops as one entry, at one cluster time (outside a transaction), or logs
    /// them in the transaction; returns the cluster time to report.
    pub fn log_all(&self, ops: Vec<OplogOp>) -> Timestamp {
        match self.txn() {
            Some(mut txn) => {
                txn.ops.extend(ops);
                self.engine.oplog.cluster_time()
            }
            None => self.engine.oplog.append(ops, None),
        }
    }

    /// Commits one op (outside a transaction) or logs it in the transaction; returns the
    /// cluster time to report.
    pub fn log(&self, op: OplogOp) -> Timestamp {
        match self.txn() {
            Some(mut txn) => {
                txn.ops.push(op);
                self.engine.oplog.cluster_time()
            }
            None => self.engine.oplog.append(vec![op], None),
        }
    }

    /// True when the command runs inside a transaction.
    pub fn in_transaction(&self) -> bool {
        self.txn.is_some()
    }
}
