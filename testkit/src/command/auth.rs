//! Authentication and user-information commands: `saslStart`, `saslContinue`, `authenticate`,
//! `logout`, `connectionStatus`, `usersInfo`, `rolesInfo`, and the authentication parts of the
//! handshake (`saslSupportedMechs`, `speculativeAuthenticate`).
//!
//! Replies follow mongod: `saslStart`/`saslContinue` answer
//! `{conversationId: 1, done, payload}` with the payload in the type the client used (binary,
//! or a base64 string); every authentication failure is 18 "Authentication failed."; a
//! speculative attempt that fails is silently left out of the handshake reply.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bson::{Binary, Bson, Document, RawBsonRef, RawDocument, doc, spec::BinarySubtype};

use crate::auth::authz::{not_authorized, privilege_documents, role_privileges};
use crate::auth::builtin_roles;
use crate::auth::privilege::{ResourcePattern, is_authorized};
use crate::auth::scram::Step;
use crate::auth::session::authentication_failed;
use crate::auth::user::{RoleName, User};
use crate::command::args::{Fields, as_i64};
use crate::command::{Ctx, Reply, Request};
use crate::error::{CommandError, to_raw};

/// A SASL payload as the client sent it.
enum Payload {
    /// BinData (what the drivers send).
    Binary(Vec<u8>),
    /// A base64 string (older clients); the reply uses a string too.
    Base64(Vec<u8>),
}

impl Payload {
    fn parse(command: &str, value: Option<RawBsonRef<'_>>) -> Result<Payload, CommandError> {
        match value {
            Some(RawBsonRef::Binary(b)) => Ok(Payload::Binary(b.bytes.to_vec())),
            Some(RawBsonRef::String(s)) => BASE64
                .decode(s)
                .map(Payload::Base64)
                .map_err(|_| CommandError::bad_value("Invalid base64 in SASL payload")),
            Some(other) => Err(CommandError::type_mismatch(format!(
                "BSON field '{command}.payload' is the wrong type '{}', expected types '[string, binData]'",
                crate::command::args::type_name(other)
            ))),
            None => Err(CommandError::new(
                40414,
                format!("BSON field '{command}.payload' is missing but a required field"),
            )),
        }
    }

    fn bytes(&self) -> &[u8] {
        match self {
            Payload::Binary(b) | Payload::Base64(b) => b,
        }
    }

    /// The reply payload, in the request's representation.
    fn reply(&self, bytes: Vec<u8>) -> Bson {
        match self {
            Payload::Binary(_) => Bson::Binary(Binary {
                subtype: BinarySubtype::Generic,
                bytes,
            }),
            Payload::Base64(_) => Bson::String(BASE64.encode(bytes)),
        }
    }
}

fn sasl_reply(request_payload: &Payload, step: Step) -> Document {
    doc! {
        "conversationId": 1,
        "done": step.done,
        "payload": request_payload.reply(step.payload),
    }
}

/// Runs a `saslStart` body (a command, or the `speculativeAuthenticate` document of a hello
/// with its `db`) against the connection's authentication state.
fn start(ctx: &mut Ctx<'_>, body: &RawDocument, db: &str) -> Result<Document, CommandError> {
    let fields = Fields::new("saslStart", body);
    let Some(mechanism) = fields.str("mechanism")? else {
        return Err(CommandError::new(
            40414,
            "BSON field 'saslStart.mechanism' is missing but a required field",
        ));
    };
    let payload = Payload::parse("saslStart", fields.get("payload"))?;
    let skip_empty_exchange = match fields.doc("options")? {
        Some(options) => match options.get("skipEmptyExchange") {
            Ok(Some(RawBsonRef::Boolean(b))) => b,
            Ok(None) => false,
            _ => {
                return Err(CommandError::bad_value("skipEmptyExchange must be boolean"));
            }
        },
        None => false,
    };
    let step = ctx
        .conn
        .auth
        .sasl_start(db, mechanism, payload.bytes(), skip_empty_exchange)?;
    Ok(sasl_reply(&payload, step))
}

/// `saslStart`.
pub fn sasl_start(ctx: &mut Ctx<'_>, request: &Request) -> Reply {
    let reply = start(ctx, &request.body, &request.db)?;
    to_raw(&reply)
}

/// `saslContinue`.
pub fn sasl_continue(ctx: &mut Ctx<'_>, request: &Request) -> Reply {
    let fields = Fields::new("saslContinue", &request.body);
    let Some(id) = fields.get("conversationId") else {
        return Err(CommandError::new(
            40414,
            "BSON field 'saslContinue.conversationId' is missing but a required field",
        ));
    };
    let id = as_i64(id).ok_or_else(|| {
        CommandError::type_mismatch(
            "BSON field 'saslContinue.conversationId' is the wrong type, expected type 'int'",
        )
    })?;
    let payload = Payload::parse("saslContinue", fields.get("payload"))?;
    let step = ctx.conn.auth.sasl_continue(id, payload.bytes())?;
    to_raw(&sasl_reply(&payload, step))
}

/// `authenticate`: mongod serves only MONGODB-X509 through it, which needs client
/// certificates this server does not request, so every attempt fails like a failed login.
pub fn authenticate(_ctx: &mut Ctx<'_>, _request: &Request) -> Reply {
    Err(authentication_failed())
}

/// `logout` (deprecated in mongod, still served): forgets the user authenticated on `$db`.
pub fn logout(ctx: &mut Ctx<'_>, request: &Request) -> Reply {
    ctx.conn.auth.logout(&request.db);
    Ok(bson::RawDocumentBuf::new())
}

/// Adds `saslSupportedMechs` and `speculativeAuthenticate` to a handshake reply.
pub fn extend_hello(
    ctx: &mut Ctx<'_>,
    request: &Request,
    reply: &mut Document,
) -> Result<(), CommandError> {
    if let Ok(Some(value)) = request.body.get("saslSupportedMechs") {
        let RawBsonRef::String(full) = value else {
            return Err(CommandError::type_mismatch(
                "saslSupportedMechs must be a string",
            ));
        };
        let Some((db, name)) = full.split_once('.') else {
            return Err(CommandError::bad_value(
                "username must contain a '.' separated database.user pair",
            ));
        };
        if let Some(user) = ctx.conn.auth.find_user(name, db) {
            reply.insert("saslSupportedMechs", user.mechanisms());
        }
    }
    if let Ok(Some(RawBsonRef::Document(spec))) = request.body.get("speculativeAuthenticate") {
        // Only SASL starts with a `db` are attempted; any failure leaves the field out and the
        // client authenticates the long way (mongod swallows the error the same way).
        if matches!(spec.get("saslStart"), Ok(Some(_)))
            && let Ok(Some(RawBsonRef::String(db))) = spec.get("db")
            && let Ok(result) = start(ctx, spec, db)
        {
            reply.insert("speculativeAuthenticate", result);
        }
    }
    Ok(())
}

/// `connectionStatus`: the authenticated user, their roles and, with `showPrivileges`, their
/// privileges.
pub fn connection_status(ctx: &mut Ctx<'_>, request: &Request) -> Reply {
    let fields = Fields::new("connectionStatus", &request.body);
    let user = ctx.conn.auth.user();
    let users: Vec<Bson> = user
        .iter()
        .map(|u| Bson::Document(u.name_document()))
        .collect();
    let roles: Vec<Bson> = user
        .iter()
        .flat_map(|u| u.spec.roles.iter())
        .map(|r| Bson::Document(r.to_document()))
        .collect();
    let mut auth_info = doc! {
        "authenticatedUsers": users,
        "authenticatedUserRoles": roles,
    };
    if fields.bool("showPrivileges")?.unwrap_or(false) {
        auth_info.insert(
            "authenticatedUserPrivileges",
            privilege_documents(ctx.conn.auth.privileges()),
        );
    }
    to_raw(&doc! { "authInfo": auth_info })
}

/// What a `usersInfo`/`rolesInfo` argument names.
enum Selection<T> {
    /// Named users or roles.
    Named(Vec<T>),
    /// Everything defined on the command's database (`usersInfo: 1`).
    AllInDb,
    /// Every user on every database (`usersInfo: {forAllDBs: true}`).
    AllDbs,
}

/// Parses `"name"`, `{user|role: name, db}`, an array of those, or `1`.
fn parse_selection(
    command: &str,
    key: &str,
    db: &str,
    value: Option<RawBsonRef<'_>>,
) -> Result<Selection<(String, String)>, CommandError> {
    let one = |v: RawBsonRef<'_>| -> Result<(String, String), CommandError> {
        match v {
            RawBsonRef::String(name) => Ok((name.to_string(), db.to_string())),
            RawBsonRef::Document(d) => {
                let name = d.get_str(key).map_err(|_| {
                    CommandError::new(
                        40414,
                        format!("BSON field '{command}.{key}' is missing but a required field"),
                    )
                })?;
                let target_db = d.get_str("db").map_err(|_| {
                    CommandError::new(
                        40414,
                        format!("BSON field '{command}.db' is missing but a required field"),
                    )
                })?;
                Ok((name.to_string(), target_db.to_string()))
            }
            _ => Err(CommandError::bad_value(format!(
                "{command} must be a string, a document, an array of those, or 1"
            ))),
        }
    };
    match value {
        Some(RawBsonRef::Document(d))
            if command == "usersInfo" && d.get("forAllDBs").is_ok_and(|v| v.is_some()) =>
        {
            Ok(Selection::AllDbs)
        }
        Some(RawBsonRef::Array(items)) => {
            let mut named = Vec::new();
            for item in items {
                named.push(one(item.map_err(CommandError::from)?)?);
            }
            Ok(Selection::Named(named))
        }
        Some(v) if as_i64(v) == Some(1) => Ok(Selection::AllInDb),
        Some(v) => Ok(Selection::Named(vec![one(v)?])),
        None => Err(CommandError::bad_value(format!(
            "{command} requires an argument"
        ))),
    }
}

fn user_document(user: &User, show_privileges: bool) -> Document {
    let roles: Vec<Bson> = user
        .spec
        .roles
        .iter()
        .map(|r| Bson::Document(r.to_document()))
        .collect();
    let mut d = doc! {
        "_id": format!("{}.{}", user.spec.db, user.spec.name),
        "userId": user.user_id,
        "user": user.spec.name.clone(),
        "db": user.spec.db.clone(),
        "roles": roles.clone(),
        "mechanisms": user.mechanisms(),
    };
    if show_privileges {
        // Built-in roles include no other roles in mongod's role graph, so the inherited
        // roles are the granted ones.
        d.insert("inheritedRoles", roles);
        d.insert("inheritedPrivileges", privilege_documents(&user.privileges));
        d.insert("inheritedAuthenticationRestrictions", Vec::<Bson>::new());
    }
    d
}

/// `usersInfo`: the declared users. Users may always see themselves; others need `viewUser`
/// on the user's database (or on the cluster for `forAllDBs`).
pub fn users_info(ctx: &mut Ctx<'_>, request: &Request) -> Reply {
    let fields = Fields::new("usersInfo", &request.body);
    let show_privileges = fields.bool("showPrivileges")?.unwrap_or(false);
    let selection = parse_selection("usersInfo", "user", &request.db, fields.get("usersInfo"))?;
    let auth = &ctx.conn.auth;
    let p = auth.privileges();
    let me = auth
        .user()
        .map(|u| (u.spec.name.clone(), u.spec.db.clone()));
    let view_user =
        |db: &str| is_authorized(p, &ResourcePattern::Database(db.to_string()), &["viewUser"]);
    let enforce = auth.is_enabled();
    let all = auth
        .authenticator()
        .map(|a| a.users.all().to_vec())
        .unwrap_or_default();
    let selected: Vec<&std::sync::Arc<User>> = match &selection {
        Selection::AllDbs => {
            if enforce && !is_authorized(p, &ResourcePattern::Cluster, &["viewUser"]) {
                return Err(not_authorized(request));
            }
            all.iter().collect()
        }
        Selection::AllInDb => {
            if enforce && !view_user(&request.db) {
                return Err(not_authorized(request));
            }
            all.iter().filter(|u| u.spec.db == request.db).collect()
        }
        Selection::Named(names) => {
            for (name, db) in names {
                let myself = me.as_ref().is_some_and(|(n, d)| n == name && d == db);
                if enforce && !myself && !view_user(db) {
                    return Err(not_authorized(request));
                }
            }
            all.iter()
                .filter(|u| {
                    names
                        .iter()
                        .any(|(n, d)| *n == u.spec.name && *d == u.spec.db)
                })
                .collect()
        }
    };
    let users: Vec<Bson> = selected
        .into_iter()
        .map(|u| Bson::Document(user_document(u, show_privileges)))
        .collect();
    to_raw(&doc! { "users": users })
}

fn role_document(role: &RoleName, show_privileges: bool) -> Document {
    let mut d = doc! {
        "role": role.role.clone(),
        "db": role.db.clone(),
        "isBuiltin": true,
        "roles": Vec::<Bson>::new(),
        "inheritedRoles": Vec::<Bson>::new(),
    };
    if show_privileges {
        let privileges = privilege_documents(&role_privileges(&role.role, &role.db));
        d.insert("privileges", privileges.clone());
        d.insert("inheritedPrivileges", privileges);
    }
    d
}

/// `rolesInfo` for the built-in roles (there are no user-defined roles here). Users may see
/// the roles they hold; others need `viewRole` on the role's database. Unknown roles are left
/// out, as mongod leaves them out.
pub fn roles_info(ctx: &mut Ctx<'_>, request: &Request) -> Reply {
    let fields = Fields::new("rolesInfo", &request.body);
    let show_privileges = match fields.get("showPrivileges") {
        Some(RawBsonRef::String("asUserFragment")) => {
            return Err(CommandError::bad_value(
                "rolesInfo: showPrivileges \"asUserFragment\" is not supported by this test server",
            ));
        }
        _ => fields.bool("showPrivileges")?.unwrap_or(false),
    };
    let show_builtin = fields.bool("showBuiltinRoles")?.unwrap_or(false);
    let selection = parse_selection("rolesInfo", "role", &request.db, fields.get("rolesInfo"))?;
    let auth = &ctx.conn.auth;
    let p = auth.privileges();
    let held: Vec<RoleName> = auth
        .user()
        .map(|u| u.spec.roles.clone())
        .unwrap_or_default();
    let view_role =
        |db: &str| is_authorized(p, &ResourcePattern::Database(db.to_string()), &["viewRole"]);
    let enforce = auth.is_enabled();
    let roles: Vec<RoleName> = match selection {
        Selection::AllInDb | Selection::AllDbs => {
            if enforce && !view_role(&request.db) {
                return Err(not_authorized(request));
            }
            if show_builtin {
                builtin_roles::names_for_db(&request.db)
                    .into_iter()
                    .map(|r| RoleName::new(r, request.db.clone()))
                    .collect()
            } else {
                Vec::new()
            }
        }
        Selection::Named(names) => {
            let mut out = Vec::new();
            for (role, db) in names {
                let name = RoleName::new(role, db);
                if enforce && !held.contains(&name) && !view_role(&name.db) {
                    return Err(not_authorized(request));
                }
                if builtin_roles::exists(&name.role, &name.db) {
                    out.push(name);
                }
            }
            out
        }
    };
    let roles: Vec<Bson> = roles
        .iter()
        .map(|r| Bson::Document(role_document(r, show_privileges)))
        .collect();
    to_raw(&doc! { "roles": roles })
}
