//! Session commands: `endSessions`, `killAllSessions`, `refreshSessions`.

use bson::{RawBsonRef, RawDocumentBuf};

use crate::command::{Ctx, Reply, Request};
use crate::engine::transaction::TxnState;
use crate::error::CommandError;

/// Collects the `id` bytes of an array of `{id: UUID}` session documents.
fn session_ids(request: &Request) -> Result<Vec<Vec<u8>>, CommandError> {
    let mut out = Vec::new();
    let Ok(Some(RawBsonRef::Array(list))) = request.body.get(&request.name) else {
        return Err(CommandError::type_mismatch(format!(
            "BSON field '{}' must be an array of session ids",
            request.name
        )));
    };
    for item in list {
        match item {
            Ok(RawBsonRef::Document(d)) => {
                if let Ok(Some(RawBsonRef::Binary(b))) = d.get("id") {
                    out.push(b.bytes.to_vec());
                }
            }
            _ => {
                return Err(CommandError::type_mismatch(format!(
                    "BSON field '{}' must be an array of session ids",
                    request.name
                )));
            }
        }
    }
    Ok(out)
}

/// `endSessions`: forget the sessions and kill their cursors. The driver ignores the reply.
pub fn end_sessions(ctx: &mut Ctx<'_>, request: &Request) -> Reply {
    let ids = session_ids(request)?;
    ctx.engine.sessions.end(&ids);
    ctx.engine.cursors.kill_sessions(Some(&ids));
    Ok(RawDocumentBuf::new())
}

/// `killAllSessions: []`: forget every session and kill every cursor opened in one. The
/// unified runner sends it before each test.
pub fn kill_all_sessions(ctx: &mut Ctx<'_>, _request: &Request) -> Reply {
    ctx.engine.sessions.clear();
    ctx.engine.cursors.kill_sessions(None);
    Ok(RawDocumentBuf::new())
}

/// `refreshSessions`: sessions never expire while in use here, so there is nothing to do.
pub fn refresh_sessions(_ctx: &mut Ctx<'_>, request: &Request) -> Reply {
    session_ids(request)?;
    Ok(RawDocumentBuf::new())
}

fn require_admin(request: &Request) -> Result<(), CommandError> {
    if request.db != "admin" {
        return Err(CommandError::new(
            13,
            format!(
                "{} may only be run against the admin database.",
                request.name
            ),
        ));
    }
    Ok(())
}

/// `commitTransaction` (admin): installs the transaction's writes and commits its oplog entry.
/// A retried commit of a committed transaction succeeds again.
pub fn commit_transaction(ctx: &mut Ctx<'_>, request: &Request) -> Reply {
    require_admin(request)?;
    let Some(txn) = ctx.txn.clone() else {
        return Err(CommandError::new(251, "no transaction to commit"));
    };
    let ts = txn
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .commit(ctx.engine)?;
    ctx.op_time = Some(ts);
    Ok(RawDocumentBuf::new())
}

/// `abortTransaction` (admin).
pub fn abort_transaction(ctx: &mut Ctx<'_>, request: &Request) -> Reply {
    require_admin(request)?;
    let Some(txn) = ctx.txn.clone() else {
        return Err(CommandError::new(251, "no transaction to abort"));
    };
    let mut txn = txn.lock().unwrap_or_else(|p| p.into_inner());
    match txn.state {
        TxnState::Committed(_) => Err(CommandError::new(256, "Transaction has been committed.")),
        TxnState::Aborted => Err(CommandError::new(
            251,
            format!("Transaction {} has been aborted.", txn.txn_number),
        )),
        TxnState::Active => {
            txn.abort();
            Ok(RawDocumentBuf::new())
        }
    }
}
