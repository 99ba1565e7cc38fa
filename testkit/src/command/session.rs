//! Session commands: `endSessions`, `killAllSessions`, `refreshSessions`.

use bson::{RawBsonRef, RawDocumentBuf};

use crate::command::{Ctx, Reply, Request};
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
