//! Cluster-wide mongos commands: `listShards` and the balancer (`balancerStatus`,
//! `balancerStart`, `balancerStop`).
//!
//! The balancer's switch lives where MongoDB keeps it, in the `{_id: "balancer"}` document of
//! `config.settings` (`balancerStart`/`balancerStop` upsert `{stopped, mode}` there, and
//! `balancerStatus` reads it, so tools that read or write that document directly agree). Its
//! rounds are counted while it is enabled, one per 10 s as mongod schedules them; no round ever
//! moves a chunk (the metadata changes only through `moveChunk`/`moveRange`).

use bson::{Bson, RawBsonRef, rawdoc};

use crate::command::args::check_fields;
use crate::command::mongos::{require_admin, sharding};
use crate::command::{Ctx, Reply, Request};
use crate::engine::namespace::Namespace;
use crate::error::{to_bson, to_raw};

/// `listShards`: `{shards: [{_id, host, state: 1, topologyTime}]}`.
pub fn list_shards(ctx: &mut Ctx<'_>, request: &Request) -> Reply {
    require_admin(request)?;
    check_fields(request, &[])?;
    let shards: Vec<Bson> = sharding(ctx.engine)?
        .shards
        .iter()
        .map(|s| {
            Bson::Document(bson::doc! {
                "_id": s.id.clone(),
                "host": s.host.clone(),
                "state": 1,
                "topologyTime": s.topology_time,
            })
        })
        .collect();
    to_raw(&bson::doc! { "shards": shards })
}

/// The balancer mode in `config.settings`: `mode` when set, else `off` when `stopped: true`,
/// else the default `full`.
pub fn balancer_mode(ctx: &Ctx<'_>) -> String {
    let ns = Namespace::new("config", "settings");
    let Some(coll) = ctx.engine.catalog.collection(&ns) else {
        return "full".to_string();
    };
    let data = coll.read();
    let key = crate::query::keystring::encode_value(RawBsonRef::String("balancer"));
    let Some((_, settings)) = data.find_by_id_key(&key) else {
        return "full".to_string();
    };
    match settings.get("mode") {
        Ok(Some(RawBsonRef::String(mode))) => mode.to_string(),
        _ => match settings.get("stopped").ok().flatten().map(to_bson) {
            Some(Ok(Bson::Boolean(true))) => "off".to_string(),
            _ => "full".to_string(),
        },
    }
}

/// `balancerStatus`: `{mode, inBalancerRound: false, numBalancerRounds}`.
pub fn balancer_status(ctx: &mut Ctx<'_>, request: &Request) -> Reply {
    require_admin(request)?;
    check_fields(request, &[])?;
    let mode = balancer_mode(ctx);
    let rounds = sharding(ctx.engine)?.balancer_rounds();
    to_raw(&bson::doc! {
        "mode": mode,
        "inBalancerRound": false,
        "numBalancerRounds": rounds,
    })
}

/// `balancerStart`.
pub fn balancer_start(ctx: &mut Ctx<'_>, request: &Request) -> Reply {
    set_balancer(ctx, request, true)
}

/// `balancerStop`.
pub fn balancer_stop(ctx: &mut Ctx<'_>, request: &Request) -> Reply {
    set_balancer(ctx, request, false)
}

/// Upserts `{_id: "balancer", stopped, mode}` in `config.settings`, as the config server's
/// `setBalancerMode` does, through the ordinary write path.
fn set_balancer(ctx: &mut Ctx<'_>, request: &Request, enabled: bool) -> Reply {
    require_admin(request)?;
    check_fields(request, &[])?;
    let mode = if enabled { "full" } else { "off" };
    let update = Request {
        name: "update".to_string(),
        db: "config".to_string(),
        body: rawdoc! {
            "update": "settings",
            "updates": [{
                "q": { "_id": "balancer" },
                "u": { "$set": { "stopped": !enabled, "mode": mode } },
                "upsert": true,
            }],
            "$db": "config",
        },
        sequences: Vec::new(),
        lsid: None,
        lsid_bytes: None,
        txn_number: None,
        max_time_ms: None,
        autocommit: None,
    };
    let reply = crate::command::write::update(ctx, &update)?;
    if let Ok(Some(RawBsonRef::Array(errors))) = reply.get("writeErrors")
        && let Some(Ok(RawBsonRef::Document(first))) = errors.into_iter().next()
    {
        let code = first.get_i32("code").unwrap_or(1);
        let message = first.get_str("errmsg").unwrap_or_default().to_string();
        return Err(crate::error::CommandError::new(code, message));
    }
    sharding(ctx.engine)?.set_balancer_enabled(enabled);
    Ok(bson::RawDocumentBuf::new())
}
