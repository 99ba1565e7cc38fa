//! `hello` / `isMaster` / `ismaster`: the connection handshake and SDAM monitoring.
//!
//! The reply follows the wire-protocol notes §1.3 field by field: numeric `ok`, the size
//! limits the drivers require, `setName`/`hosts`/`me`/`primary` equal to the exact seed address
//! (a mongos sends `msg: "isdbgrid"` and none of those, so drivers see a sharded topology),
//! `logicalSessionTimeoutMinutes` (which turns sessions on), an integer `connectionId`, wire
//! versions 0..=21 (MongoDB 7.0), and no `topologyVersion`, so drivers stay on polling
//! monitoring (awaitable hello is not implemented), and no `compression`.

use bson::{Bson, DateTime, RawBsonRef, doc, oid::ObjectId};

use crate::command::{Ctx, Reply, Request};
use crate::error::to_raw;
use crate::wire::{MAX_BSON_OBJECT_SIZE, MAX_MESSAGE_SIZE};

/// `maxWireVersion` of MongoDB 7.0.
pub const MAX_WIRE_VERSION: i32 = 21;

/// The `electionId` of our single, never re-elected primary (term 1).
pub fn election_id() -> ObjectId {
    ObjectId::from_bytes([0x7f, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 1])
}

/// Answers `hello`, `isMaster` and `ismaster`.
pub fn hello(ctx: &mut Ctx<'_>, request: &Request) -> Reply {
    if let Ok(Some(RawBsonRef::Document(client))) = request.body.get("client") {
        ctx.conn.saw_client_metadata = true;
        if let Ok(Some(RawBsonRef::Document(app))) = client.get("application")
            && let Ok(Some(RawBsonRef::String(name))) = app.get("name")
        {
            ctx.conn.app_name = Some(name.to_string());
        }
    }
    let engine = ctx.engine;
    let mut reply = bson::Document::new();
    // A real server answers `hello` with isWritablePrimary and the legacy spellings with
    // `ismaster`.
    if request.name == "hello" {
        reply.insert("isWritablePrimary", true);
    } else {
        reply.insert("ismaster", true);
    }
    if matches!(
        request.body.get("helloOk"),
        Ok(Some(RawBsonRef::Boolean(true)))
    ) {
        reply.insert("helloOk", true);
    }
    if engine.is_mongos() {
        reply.insert("msg", "isdbgrid");
    } else if engine.is_replica_set() {
        let host = engine.config.host.clone();
        let ts = engine.oplog.cluster_time();
        let wall = DateTime::now();
        let optime = doc! { "ts": ts, "t": 1i64 };
        reply.insert("hosts", vec![Bson::String(host.clone())]);
        reply.insert("setName", engine.config.set_name.clone());
        reply.insert("setVersion", 1);
        reply.insert("secondary", false);
        reply.insert("primary", host.clone());
        reply.insert("me", host);
        reply.insert("electionId", election_id());
        reply.insert(
            "lastWrite",
            doc! {
                "opTime": optime.clone(),
                "lastWriteDate": wall,
                "majorityOpTime": optime,
                "majorityWriteDate": wall,
            },
        );
    }
    reply.insert("maxBsonObjectSize", MAX_BSON_OBJECT_SIZE as i32);
    reply.insert("maxMessageSizeBytes", MAX_MESSAGE_SIZE as i32);
    reply.insert("maxWriteBatchSize", 100_000);
    reply.insert("localTime", DateTime::now());
    reply.insert("logicalSessionTimeoutMinutes", 30);
    reply.insert("connectionId", ctx.conn.id);
    reply.insert("minWireVersion", 0);
    reply.insert("maxWireVersion", MAX_WIRE_VERSION);
    if !engine.is_mongos() {
        // A mongos' hello has no `readOnly`.
        reply.insert("readOnly", false);
    }
    crate::command::auth::extend_hello(ctx, request, &mut reply)?;
    to_raw(&reply)
}
