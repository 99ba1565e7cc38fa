//! Authorization of commands, as mongod decides it.
//!
//! In mongod's order: an admin-only command on another database fails first ("X may only be
//! run against the admin database."), then a command that requires authentication fails on an
//! unauthenticated connection with 13 "Command X requires authentication", then the privileges
//! the command needs are checked against the user's; a failure there is 13 "not authorized on
//! DB to execute command { ... }" with the request body printed as mongod prints BSON.
//!
//! The privileges per command follow the server's `checkAuthFor*` functions and
//! `getPrivilegesForAggregate`. Commands this module does not know need authentication only;
//! the dispatcher answers the unknown ones with 59. When the server has no users, nothing here
//! runs.

use bson::{Bson, RawArray, RawBsonRef, RawDocument, RawDocumentBuf};

use crate::auth::bson_display;
use crate::auth::privilege::{
    Privilege, ResourcePattern, any_action_in_db, any_action_on, is_authorized,
};
use crate::auth::session::ConnAuth;
use crate::command::Request;
use crate::command::args::{Fields, array_or_sequence, as_i64, truthy};
use crate::error::{CommandError, to_document, to_raw};

/// Commands that run without authentication (mongod: `requiresAuth() == false`).
const NO_AUTH: &[&str] = &[
    "hello",
    "isMaster",
    "ping",
    "buildInfo",
    "saslStart",
    "saslContinue",
    "authenticate",
    "connectionStatus",
    "logout",
    "configureFailPoint",
];

/// Commands mongod accepts only on `admin`.
const ADMIN_ONLY: &[&str] = &[
    "listDatabases",
    "renameCollection",
    "getParameter",
    "getCmdLineOpts",
    "replSetGetStatus",
    "replSetGetConfig",
    "configureFailPoint",
    "setUserWriteBlockMode",
];

/// The name mongod uses for a command in messages (its aliases resolve to one command).
pub fn canonical_name(name: &str) -> &str {
    match name {
        "ismaster" => "isMaster",
        "buildinfo" => "buildInfo",
        "findandmodify" => "findAndModify",
        "deleteIndexes" => "dropIndexes",
        other => other,
    }
}

/// 13 "not authorized on DB to execute command { ... }".
pub fn not_authorized(request: &Request) -> CommandError {
    CommandError::new(
        13,
        format!(
            "not authorized on {} to execute command {}",
            request.db,
            bson_display::to_string(&request.body)
        ),
    )
}

/// Decides whether the connection may run `request`. Ok means go ahead.
pub fn check(auth: &ConnAuth, request: &Request) -> Result<(), CommandError> {
    if !auth.is_enabled() {
        return Ok(());
    }
    let name = canonical_name(&request.name);
    if ADMIN_ONLY.contains(&name) && request.db != "admin" {
        return Err(CommandError::new(
            13,
            format!("{name} may only be run against the admin database."),
        ));
    }
    if NO_AUTH.contains(&name) {
        return Ok(());
    }
    if auth.user().is_none() {
        return Err(CommandError::new(
            13,
            format!("Command {name} requires authentication"),
        ));
    }
    if authorized(auth, name, request)? {
        Ok(())
    } else {
        Err(not_authorized(request))
    }
}

/// True when the user may write while user writes are blocked (`bypassWriteBlockingMode` on the
/// cluster, as the `restore` role grants for cluster-to-cluster replication).
pub fn bypasses_write_block(auth: &ConnAuth) -> bool {
    auth.is_enabled()
        && is_authorized(
            auth.privileges(),
            &ResourcePattern::Cluster,
            &["bypassWriteBlockingMode"],
        )
}

/// True when the user has a cluster-wide action (`killop`, `inprog`, ...).
pub fn has_cluster_action(auth: &ConnAuth, action: &'static str) -> bool {
    is_authorized(auth.privileges(), &ResourcePattern::Cluster, &[action])
}

/// A privilege requirement: actions on a concrete resource.
type Need = (ResourcePattern, Vec<&'static str>);

fn ns(db: &str, coll: &str) -> ResourcePattern {
    ResourcePattern::ExactNamespace(db.to_string(), coll.to_string())
}

/// The resource a collection-level command targets: its namespace, or its database when the
/// collection argument is not a string (the command itself reports that error).
fn target(request: &Request) -> ResourcePattern {
    match request.body.get(&request.name) {
        Ok(Some(RawBsonRef::String(coll))) if !coll.is_empty() => ns(&request.db, coll),
        _ => ResourcePattern::Database(request.db.clone()),
    }
}

/// Splits `db.coll` (the first dot separates them).
fn full_ns(value: Option<RawBsonRef<'_>>) -> Option<ResourcePattern> {
    match value {
        Some(RawBsonRef::String(s)) => s.split_once('.').map(|(d, c)| ns(d, c)),
        _ => None,
    }
}

fn all(privileges: &[Privilege], needs: &[Need]) -> bool {
    needs
        .iter()
        .all(|(resource, actions)| is_authorized(privileges, resource, actions))
}

fn bypass_requested(request: &Request) -> bool {
    matches!(request.body.get("bypassDocumentValidation"), Ok(Some(v)) if truthy(v))
}

fn authorized(auth: &ConnAuth, name: &str, request: &Request) -> Result<bool, CommandError> {
    let p = auth.privileges();
    let db = request.db.as_str();
    let on_target = |actions: &[&'static str]| is_authorized(p, &target(request), actions);
    let on_db = |actions: &[&'static str]| {
        is_authorized(p, &ResourcePattern::Database(db.to_string()), actions)
    };
    let on_cluster =
        |actions: &[&'static str]| is_authorized(p, &ResourcePattern::Cluster, actions);
    let with_bypass = |mut actions: Vec<&'static str>| {
        if bypass_requested(request) {
            actions.push("bypassDocumentValidation");
        }
        actions
    };
    Ok(match name {
        "find" | "count" | "distinct" => on_target(&["find"]),
        "listIndexes" => on_target(&["listIndexes"]),
        "collStats" => on_target(&["collStats"]),
        "insert" => on_target(&with_bypass(vec!["insert"])),
        "update" => {
            let upsert = array_or_sequence(request, "updates")
                .map(|updates| {
                    updates
                        .iter()
                        .any(|u| matches!(u.get("upsert"), Ok(Some(v)) if truthy(v)))
                })
                .unwrap_or(false);
            let mut actions = vec!["update"];
            if upsert {
                actions.push("insert");
            }
            on_target(&with_bypass(actions))
        }
        "delete" => on_target(&["remove"]),
        "findAndModify" => {
            let fields = Fields::new(name, &request.body);
            let remove = fields.get("remove").is_some_and(truthy);
            let upsert = fields.get("upsert").is_some_and(truthy);
            let mut actions = vec!["find", if remove { "remove" } else { "update" }];
            if upsert {
                actions.push("insert");
            }
            on_target(&with_bypass(actions))
        }
        "create" => create_allowed(p, request),
        "collMod" => coll_mod_allowed(p, request)?,
        "drop" => on_target(&["dropCollection"]),
        "dropDatabase" => on_db(&["dropDatabase"]),
        "createIndexes" => on_target(&["createIndex"]),
        "dropIndexes" => on_target(&["dropIndex"]),
        "dbStats" => on_db(&["dbStats"]),
        "renameCollection" => rename_allowed(p, request),
        "listCollections" => {
            let fields = Fields::new(name, &request.body);
            let name_only = fields.get("nameOnly").is_some_and(truthy);
            let authorized_only = fields.get("authorizedCollections").is_some_and(truthy);
            on_db(&["listCollections"]) || (authorized_only && name_only && any_action_in_db(p, db))
        }
        "listDatabases" => {
            let may_list_all = on_cluster(&["listDatabases"]);
            if let Ok(Some(v)) = request.body.get("authorizedDatabases")
                && !truthy(v)
                && !may_list_all
            {
                // Thrown while running, so mongod does not rewrite it into "not authorized".
                return Err(CommandError::new(
                    13,
                    "Insufficient permissions to list all databases",
                ));
            }
            true
        }
        "aggregate" => {
            let coll = match request.body.get("aggregate") {
                Ok(Some(RawBsonRef::String(c))) => Some(c),
                _ => None,
            };
            let pipeline = match request.body.get("pipeline") {
                Ok(Some(RawBsonRef::Array(a))) => Some(a),
                _ => None,
            };
            let mut needs = Vec::new();
            if let Some(pipeline) = pipeline {
                aggregate_needs(db, coll, pipeline, bypass_requested(request), &mut needs);
            }
            all(p, &needs)
        }
        "getMore" => {
            let id = request.body.get("getMore").ok().flatten().and_then(as_i64);
            if let (Some(id), Some(authenticator), Some(user)) =
                (id, auth.authenticator(), auth.user())
                && let Some(owner) = authenticator.cursor_owner(id)
                && owner != user.full_name()
            {
                // Raised while pinning the cursor, not by the privilege check.
                return Err(CommandError::new(
                    13,
                    format!("cursor id {id} was not created by the authenticated user"),
                ));
            }
            true
        }
        "killCursors" => {
            let owned_by_user = |id: i64| {
                let owner = auth.authenticator().and_then(|a| a.cursor_owner(id));
                owner.is_none() || owner == auth.user().map(|u| u.full_name())
            };
            let ids: Vec<i64> = match request.body.get("cursors") {
                Ok(Some(RawBsonRef::Array(a))) => {
                    a.into_iter().flatten().filter_map(as_i64).collect()
                }
                _ => Vec::new(),
            };
            ids.into_iter().all(owned_by_user)
                || on_cluster(&["killAnyCursor"])
                || on_target(&["killAnyCursor"])
        }
        "hostInfo"
        | "serverStatus"
        | "replSetGetStatus"
        | "replSetGetConfig"
        | "getParameter"
        | "getCmdLineOpts"
        | "setUserWriteBlockMode" => on_cluster(&[cluster_action(name)]),
        "killAllSessions" => {
            let own_only = match request.body.get("killAllSessions") {
                Ok(Some(RawBsonRef::Array(a))) if !a.is_empty() => {
                    let me = auth
                        .user()
                        .map(|u| (u.spec.name.clone(), u.spec.db.clone()));
                    a.into_iter().flatten().all(|v| match v {
                        RawBsonRef::Document(d) => {
                            let user = d.get_str("user").ok().map(str::to_string);
                            let udb = d.get_str("db").ok().map(str::to_string);
                            matches!((&me, user, udb), (Some((n, d)), Some(u), Some(x)) if *n == u && *d == x)
                        }
                        _ => false,
                    })
                }
                _ => false,
            };
            own_only || on_cluster(&["killAnySession"])
        }
        // Any authenticated user: session bookkeeping, transactions, `whatsmyuri`; `usersInfo`
        // and `rolesInfo` check their arguments themselves; unknown commands get 59.
        _ => true,
    })
}

/// The cluster action named like the command (`serverStatus` needs `serverStatus`).
fn cluster_action(name: &str) -> &'static str {
    match name {
        "hostInfo" => "hostInfo",
        "serverStatus" => "serverStatus",
        "replSetGetStatus" => "replSetGetStatus",
        "replSetGetConfig" => "replSetGetConfig",
        "getParameter" => "getParameter",
        "getCmdLineOpts" => "getCmdLineOpts",
        _ => "setUserWriteBlockMode",
    }
}

/// mongod's `checkAuthForCreate`.
fn create_allowed(p: &[Privilege], request: &Request) -> bool {
    let target = target(request);
    let fields = Fields::new("create", &request.body);
    if fields.get("capped").is_some_and(truthy) && !is_authorized(p, &target, &["convertToCapped"])
    {
        return false;
    }
    let can_create = is_authorized(p, &target, &["createCollection"]);
    if let Some(RawBsonRef::String(view_on)) = fields.get("viewOn") {
        // Views need createCollection itself; insert is not enough.
        if !can_create {
            return false;
        }
        let pipeline = match fields.get("pipeline") {
            Some(RawBsonRef::Array(a)) => Some(a),
            _ => None,
        };
        return view_allowed(p, request, &target, view_on, pipeline);
    }
    can_create || is_authorized(p, &target, &["insert"])
}

/// mongod's `checkAuthForCollMod`.
fn coll_mod_allowed(p: &[Privilege], request: &Request) -> Result<bool, CommandError> {
    let target = target(request);
    if !is_authorized(p, &target, &["collMod"]) {
        return Ok(false);
    }
    let fields = Fields::new("collMod", &request.body);
    let view_on = fields.get("viewOn");
    let pipeline = fields.get("pipeline");
    if view_on.is_some() != pipeline.is_some() {
        return Err(CommandError::new(
            72,
            "Must specify both 'viewOn' and 'pipeline' when modifying a view and auth is enabled",
        ));
    }
    Ok(match (view_on, pipeline) {
        (Some(RawBsonRef::String(view_on)), Some(RawBsonRef::Array(pipeline))) => {
            view_allowed(p, request, &target, view_on, Some(pipeline))
        }
        _ => true,
    })
}

/// mongod's `checkAuthForCreateOrModifyView`: a user who cannot read the view may define it
/// freely; one who can must be able to run its pipeline on the source.
fn view_allowed(
    p: &[Privilege],
    request: &Request,
    view: &ResourcePattern,
    view_on: &str,
    pipeline: Option<&RawArray>,
) -> bool {
    if !is_authorized(p, view, &["find"]) {
        return true;
    }
    let mut needs = Vec::new();
    match pipeline {
        Some(pipeline) => aggregate_needs(&request.db, Some(view_on), pipeline, false, &mut needs),
        None => needs.push((ns(&request.db, view_on), vec!["find"])),
    }
    all(p, &needs)
}

/// mongod's `checkAuthForRenameCollectionCommand`.
fn rename_allowed(p: &[Privilege], request: &Request) -> bool {
    let fields = Fields::new("renameCollection", &request.body);
    let (Some(source), Some(target)) = (
        full_ns(fields.get("renameCollection")),
        full_ns(fields.get("to")),
    ) else {
        // Malformed: the command reports it.
        return true;
    };
    let drop_target = fields.get("dropTarget").is_some_and(truthy);
    if let (
        ResourcePattern::ExactNamespace(source_db, source_coll),
        ResourcePattern::ExactNamespace(target_db, target_coll),
    ) = (&source, &target)
        && source_db == target_db
        && !source_coll.starts_with("system.")
        && !target_coll.starts_with("system.")
    {
        // Within a database, renameCollectionSameDB suffices unless the rename would expose a
        // collection the user cannot read under a name they can.
        let can_rename = is_authorized(
            p,
            &ResourcePattern::Database(source_db.clone()),
            &["renameCollectionSameDB"],
        );
        let can_drop_target = !drop_target || is_authorized(p, &target, &["dropCollection"]);
        let can_read_source = is_authorized(p, &source, &["find"]);
        let can_read_target = is_authorized(p, &target, &["find"]);
        if can_rename && can_drop_target && (can_read_target || !can_read_source) {
            return true;
        }
    }
    let mut target_actions = vec!["insert", "createIndex"];
    if drop_target {
        target_actions.push("dropCollection");
    }
    is_authorized(p, &source, &["find", "dropCollection"])
        && is_authorized(p, &target, &target_actions)
}

/// Stages that produce their own input, so the pipeline does not read the collection.
fn is_initial_source(stage: &str) -> bool {
    matches!(
        stage,
        "$changeStream"
            | "$collStats"
            | "$currentOp"
            | "$documents"
            | "$indexStats"
            | "$listCatalog"
            | "$listCachedAndActiveUsers"
            | "$listLocalSessions"
            | "$listSampledQueries"
            | "$listSearchIndexes"
            | "$listSessions"
            | "$planCacheStats"
            | "$queryStats"
            | "$shardedDataDistribution"
    )
}

/// The first (only) key and value of a stage document.
fn stage_of(value: RawBsonRef<'_>) -> Option<(&str, RawBsonRef<'_>)> {
    match value {
        RawBsonRef::Document(d) => d
            .iter()
            .next()
            .and_then(Result::ok)
            .map(|(k, v)| (k.as_str(), v)),
        _ => None,
    }
}

fn sub_doc<'a>(value: RawBsonRef<'a>) -> Option<&'a RawDocument> {
    match value {
        RawBsonRef::Document(d) => Some(d),
        _ => None,
    }
}

/// A namespace argument of `$out`/`$merge`/`$lookup`: a collection name in `db`, or
/// `{db, coll}`.
fn stage_ns(db: &str, value: Option<RawBsonRef<'_>>) -> Option<ResourcePattern> {
    match value? {
        RawBsonRef::String(coll) => Some(ns(db, coll)),
        RawBsonRef::Document(d) => {
            let coll = d.get_str("coll").ok()?;
            let target_db = d.get_str("db").unwrap_or(db);
            Some(ns(target_db, coll))
        }
        _ => None,
    }
}

/// mongod's `getPrivilegesForAggregate`: `find` on the collection unless the first stage is an
/// initial source, plus what each stage needs (`$changeStream`, `$collStats`, `$lookup`,
/// `$unionWith`, `$out`, `$merge`, ... recursively through sub-pipelines).
fn aggregate_needs(
    db: &str,
    coll: Option<&str>,
    pipeline: &RawArray,
    bypass: bool,
    needs: &mut Vec<Need>,
) {
    let stages: Vec<(&str, RawBsonRef<'_>)> = pipeline
        .into_iter()
        .flatten()
        .filter_map(stage_of)
        .collect();
    let reads_collection = stages
        .first()
        .is_none_or(|(name, _)| !is_initial_source(name));
    if reads_collection && let Some(coll) = coll {
        needs.push((ns(db, coll), vec!["find"]));
    }
    for (name, spec) in stages {
        match name {
            "$changeStream" => {
                let cluster_wide = sub_doc(spec)
                    .and_then(|d| d.get("allChangesForCluster").ok().flatten())
                    .is_some_and(truthy);
                let resource = match coll {
                    Some(coll) => ns(db, coll),
                    None if cluster_wide && db == "admin" => ResourcePattern::AnyNormal,
                    None => ResourcePattern::Database(db.to_string()),
                };
                needs.push((resource, vec!["changeStream", "find"]));
            }
            "$collStats" => {
                if let Some(coll) = coll {
                    needs.push((ns(db, coll), vec!["collStats"]));
                }
            }
            "$indexStats" => {
                if let Some(coll) = coll {
                    needs.push((ns(db, coll), vec!["indexStats"]));
                }
            }
            "$currentOp" => {
                let all_users = sub_doc(spec)
                    .and_then(|d| d.get("allUsers").ok().flatten())
                    .is_some_and(truthy);
                if all_users {
                    needs.push((ResourcePattern::Cluster, vec!["inprog"]));
                }
            }
            "$listLocalSessions" | "$listSessions" => {
                let others = sub_doc(spec).is_some_and(|d| {
                    d.get("allUsers").ok().flatten().is_some_and(truthy)
                        || matches!(d.get("users"), Ok(Some(RawBsonRef::Array(a))) if !a.is_empty())
                });
                if others {
                    needs.push((ResourcePattern::Cluster, vec!["listSessions"]));
                }
            }
            "$lookup" | "$graphLookup" => {
                let Some(d) = sub_doc(spec) else { continue };
                let from = stage_ns(db, d.get("from").ok().flatten());
                if let Some(from) = &from {
                    needs.push((from.clone(), vec!["find"]));
                }
                if let Ok(Some(RawBsonRef::Array(sub))) = d.get("pipeline") {
                    match &from {
                        Some(ResourcePattern::ExactNamespace(from_db, from_coll)) => {
                            aggregate_needs(from_db, Some(from_coll), sub, bypass, needs);
                        }
                        _ => aggregate_needs(db, None, sub, bypass, needs),
                    }
                }
            }
            "$unionWith" => {
                let (coll_value, sub) = match spec {
                    RawBsonRef::String(_) => (Some(spec), None),
                    RawBsonRef::Document(d) => (
                        d.get("coll").ok().flatten(),
                        match d.get("pipeline") {
                            Ok(Some(RawBsonRef::Array(a))) => Some(a),
                            _ => None,
                        },
                    ),
                    _ => (None, None),
                };
                let union_coll = match coll_value {
                    Some(RawBsonRef::String(c)) => Some(c),
                    _ => None,
                };
                match sub {
                    Some(sub) => aggregate_needs(db, union_coll, sub, bypass, needs),
                    None => {
                        if let Some(c) = union_coll {
                            needs.push((ns(db, c), vec!["find"]));
                        }
                    }
                }
            }
            "$facet" => {
                if let Some(d) = sub_doc(spec) {
                    for facet in d.iter().flatten() {
                        if let (_, RawBsonRef::Array(sub)) = facet {
                            aggregate_needs(db, None, sub, bypass, needs);
                        }
                    }
                }
            }
            "$out" => {
                if let Some(target) = stage_ns(db, Some(spec)) {
                    let mut actions = vec!["insert", "remove"];
                    if bypass {
                        actions.push("bypassDocumentValidation");
                    }
                    needs.push((target, actions));
                }
            }
            "$merge" => {
                let (into, when_matched, when_not_matched) = match spec {
                    RawBsonRef::String(_) => (Some(spec), "merge", "insert"),
                    RawBsonRef::Document(d) => (
                        d.get("into").ok().flatten(),
                        match d.get("whenMatched") {
                            Ok(Some(RawBsonRef::String(s))) => s,
                            Ok(Some(RawBsonRef::Array(_))) => "pipeline",
                            _ => "merge",
                        },
                        d.get_str("whenNotMatched").unwrap_or("insert"),
                    ),
                    _ => (None, "merge", "insert"),
                };
                if let Some(target) = stage_ns(db, into) {
                    let mut actions = Vec::new();
                    if when_not_matched == "insert" {
                        actions.push("insert");
                    }
                    if when_matched != "fail" {
                        actions.push("update");
                    }
                    if bypass {
                        actions.push("bypassDocumentValidation");
                    }
                    needs.push((target, actions));
                }
            }
            _ => {}
        }
    }
}

/// Adjusts a successful reply for the user, as mongod builds it: `listDatabases` and
/// `listCollections` list only what the user may see when asked (or, for `listDatabases`, when
/// the user lacks the `listDatabases` action), and cursor owners are recorded so that only
/// their creator can continue them.
pub fn filter_reply(
    auth: &ConnAuth,
    request: &Request,
    body: RawDocumentBuf,
) -> Result<RawDocumentBuf, CommandError> {
    let (Some(authenticator), Some(user)) = (auth.authenticator(), auth.user()) else {
        return Ok(body);
    };
    let p = auth.privileges();
    match canonical_name(&request.name) {
        "listDatabases" => {
            let requested = request
                .body
                .get("authorizedDatabases")
                .ok()
                .flatten()
                .map(truthy);
            let filter = requested.unwrap_or_else(|| {
                !is_authorized(p, &ResourcePattern::Cluster, &["listDatabases"])
            });
            if filter {
                return filter_databases(p, &body);
            }
        }
        "listCollections" => {
            let fields = Fields::new("listCollections", &request.body);
            if fields.get("authorizedCollections").is_some_and(truthy)
                && fields.get("nameOnly").is_some_and(truthy)
            {
                let db = request.db.clone();
                return filter_first_batch(&body, |entry| {
                    entry
                        .get_str("name")
                        .is_ok_and(|name| any_action_on(p, &ns(&db, name)))
                });
            }
        }
        "find" | "aggregate" | "listIndexes" => {
            if let Some(id) = cursor_id(&body)
                && id != 0
            {
                authenticator.record_cursor(id, user.full_name());
            }
        }
        "getMore" => {
            if cursor_id(&body) == Some(0)
                && let Some(id) = request.body.get("getMore").ok().flatten().and_then(as_i64)
            {
                authenticator.forget_cursor(id);
            }
        }
        "killCursors" => {
            if let Ok(Some(RawBsonRef::Array(ids))) = request.body.get("cursors") {
                for id in ids.into_iter().flatten().filter_map(as_i64) {
                    authenticator.forget_cursor(id);
                }
            }
        }
        _ => {}
    }
    Ok(body)
}

fn cursor_id(body: &RawDocument) -> Option<i64> {
    match body.get("cursor") {
        Ok(Some(RawBsonRef::Document(c))) => c.get("id").ok().flatten().and_then(as_i64),
        _ => None,
    }
}

/// Keeps the databases the user has any privilege in, with `totalSize` recomputed over them.
fn filter_databases(p: &[Privilege], body: &RawDocument) -> Result<RawDocumentBuf, CommandError> {
    let mut reply = to_document(body)?;
    let databases = match reply.get_array("databases") {
        Ok(list) => list.clone(),
        Err(_) => return Ok(body.to_owned()),
    };
    let mut kept = Vec::new();
    let mut total = 0i64;
    for entry in databases {
        let Bson::Document(d) = &entry else { continue };
        let Ok(name) = d.get_str("name") else {
            continue;
        };
        if any_action_in_db(p, name) {
            total += d.get_i64("sizeOnDisk").unwrap_or(0);
            kept.push(entry);
        }
    }
    reply.insert("databases", kept);
    if reply.contains_key("totalSize") {
        reply.insert("totalSize", total);
        reply.insert("totalSizeMb", total / (1024 * 1024));
    }
    to_raw(&reply)
}

/// Keeps the entries of `cursor.firstBatch` that `keep` accepts.
fn filter_first_batch(
    body: &RawDocument,
    keep: impl Fn(&bson::Document) -> bool,
) -> Result<RawDocumentBuf, CommandError> {
    let mut reply = to_document(body)?;
    let Ok(cursor) = reply.get_document_mut("cursor") else {
        return Ok(body.to_owned());
    };
    if let Ok(batch) = cursor.get_array("firstBatch") {
        let kept: Vec<Bson> = batch
            .iter()
            .filter(|b| matches!(b, Bson::Document(d) if keep(d)))
            .cloned()
            .collect();
        cursor.insert("firstBatch", kept);
    }
    to_raw(&reply)
}

/// The privileges of a built-in role, for `rolesInfo`.
pub fn role_privileges(role: &str, db: &str) -> Vec<Privilege> {
    let mut out = Vec::new();
    crate::auth::builtin_roles::add_privileges(role, db, &mut out);
    out
}

/// `{resource, actions}` documents.
pub fn privilege_documents(privileges: &[Privilege]) -> Vec<Bson> {
    privileges
        .iter()
        .map(|p| Bson::Document(p.to_document()))
        .collect()
}
