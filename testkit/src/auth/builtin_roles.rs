//! mongod's built-in roles and the privileges they grant.
//!
//! The table follows the server's own definition (`src/mongo/db/auth/builtin_roles.yml` of the
//! 7.0 line): each role lists the roles it includes and its privileges; a privilege names a
//! match type (`database`, `exact_namespace`, `collection`, `any_normal`, `cluster`, `any`,
//! `any_system_buckets`) and an action list. Database-scoped patterns without an explicit
//! database apply to the database the role is granted on. Like mongod, the privileges of
//! included roles come first and privileges on the same resource are merged.
//!
//! Roles marked admin-only exist only on `admin`. `__system` (every action on every resource,
//! for cluster members) is deliberately absent.

use crate::auth::privilege::{Privilege, ResourcePattern, merge};

/// Where a privilege of a role applies.
#[derive(Debug, Clone, Copy)]
enum Match {
    /// A database: the role's own (`None`) or a named one.
    Database(Option<&'static str>),
    /// One collection of the role's database (`None`) or of a named one.
    ExactNamespace(Option<&'static str>, &'static str),
    /// The collection with this name in every database.
    Collection(&'static str),
    /// Every normal resource.
    AnyNormal,
    /// The cluster.
    Cluster,
    /// Every resource.
    Any,
    /// Every `system.buckets.*` collection.
    AnySystemBuckets,
}

/// One privilege of a role definition: a match and the concatenation of action groups.
struct PrivilegeDef {
    on: Match,
    actions: &'static [&'static [&'static str]],
}

/// A built-in role.
struct RoleDef {
    name: &'static str,
    /// Defined only on `admin`.
    admin_only: bool,
    /// Included roles: name and database (`None`: the role's own database).
    roles: &'static [(&'static str, Option<&'static str>)],
    privileges: &'static [PrivilegeDef],
}

const READ: &[&str] = &[
    "changeStream",
    "collStats",
    "dbHash",
    "dbStats",
    "find",
    "killCursors",
    "listCollections",
    "listIndexes",
    "listSearchIndexes",
    "planCacheRead",
];

/// What `readWrite` adds to [`READ`].
const WRITE: &[&str] = &[
    "compactStructuredEncryptionData",
    "convertToCapped",
    "createCollection",
    "createIndex",
    "createSearchIndexes",
    "dropCollection",
    "dropIndex",
    "dropSearchIndex",
    "insert",
    "remove",
    "renameCollectionSameDB",
    "update",
];

const USER_ADMIN: &[&str] = &[
    "changeCustomData",
    "changePassword",
    "createUser",
    "createRole",
    "dropUser",
    "dropRole",
    "grantRole",
    "revokeRole",
    "setAuthenticationRestriction",
    "viewUser",
    "viewRole",
];

const DB_ADMIN: &[&str] = &[
    "analyze",
    "bypassDocumentValidation",
    "collMod",
    "collStats",
    "compact",
    "configureQueryAnalyzer",
    "convertToCapped",
    "createCollection",
    "dbStats",
    "dropCollection",
    "dropDatabase",
    "dropIndex",
    "dropSearchIndex",
    "createIndex",
    "createSearchIndexes",
    "enableProfiler",
    "listCollections",
    "listIndexes",
    "listSearchIndexes",
    "updateSearchIndex",
    "planCacheIndexFilter",
    "planCacheRead",
    "planCacheWrite",
    "reIndex",
    "renameCollectionSameDB",
    "storageDetails",
    "validate",
];

/// What `dbAdmin` grants on `system.profile` besides [`READ`].
const PROFILE_ADMIN: &[&str] = &["convertToCapped", "createCollection", "dropCollection"];

/// What `userAdminAnyDatabase` grants on `admin.system.users`/`roles` besides [`READ`].
const INDEX_ADMIN: &[&str] = &[
    "createIndex",
    "createSearchIndexes",
    "dropIndex",
    "dropSearchIndex",
];

const CLUSTER_MONITOR_CLUSTER: &[&str] = &[
    "checkFreeMonitoringStatus",
    "connPoolStats",
    "getCmdLineOpts",
    "getDefaultRWConcern",
    "getLog",
    "getParameter",
    "getShardMap",
    "hostInfo",
    "listDatabases",
    "listSampledQueries",
    "listSessions",
    "listShards",
    "netstat",
    "operationMetrics",
    "replSetGetConfig",
    "replSetGetStatus",
    "serverStatus",
    "top",
    "useUUID",
    "inprog",
    "shardingState",
    "allCollectionStats",
    "shardedDataDistribution",
];

const CLUSTER_MONITOR_DB: &[&str] = &[
    "collStats",
    "dbStats",
    "getDatabaseVersion",
    "getShardVersion",
    "indexStats",
];

const HOST_MANAGER_CLUSTER: &[&str] = &[
    "applicationMessage",
    "auditConfigure",
    "connPoolSync",
    "dropConnections",
    "logRotate",
    "oidReset",
    "setParameter",
    "shutdown",
    "touch",
    "unlock",
    "flushRouterConfig",
    "fsync",
    "invalidateUserCache",
    "killAnyCursor",
    "killAnySession",
    "killop",
    "replSetResizeOplog",
    "resync",
    "trafficRecord",
    "rotateCertificates",
    "oidcListKeys",
    "oidcRefreshKeys",
];

const CLUSTER_MANAGER_CLUSTER: &[&str] = &[
    "appendOplogNote",
    "applicationMessage",
    "replSetConfigure",
    "replSetGetConfig",
    "replSetGetStatus",
    "replSetStateChange",
    "resync",
    "addShard",
    "removeShard",
    "listSessions",
    "listShards",
    "flushRouterConfig",
    "cleanupOrphaned",
    "getDefaultRWConcern",
    "runTenantMigration",
    "setDefaultRWConcern",
    "setFeatureCompatibilityVersion",
    "setFreeMonitoring",
    "setClusterParameter",
    "getClusterParameter",
    "setChangeStreamState",
    "getChangeStreamState",
    "telemetryRead",
    "checkMetadataConsistency",
    "transitionToCatalogShard",
    "transitionToDedicatedConfigServer",
];

const CLUSTER_MANAGER_DB: &[&str] = &[
    "analyzeShardKey",
    "configureQueryAnalyzer",
    "clearJumboFlag",
    "splitChunk",
    "moveChunk",
    "enableSharding",
    "splitVector",
    "refineCollectionShardKey",
    "reshardCollection",
];

const CLUSTER_MANAGER_WRITE: &[&str] = &["insert", "update", "remove"];

const RESTORE_WRITE: &[&str] = &[
    "bypassDocumentValidation",
    "collMod",
    "convertToCapped",
    "createCollection",
    "createIndex",
    "createSearchIndexes",
    "dropCollection",
    "insert",
    "updateSearchIndex",
];

const FIND: &[&str] = &["find"];

/// Shorthand for a privilege definition.
const fn p(on: Match, actions: &'static [&'static [&'static str]]) -> PrivilegeDef {
    PrivilegeDef { on, actions }
}

use Match::{
    Any, AnyNormal, AnySystemBuckets, Cluster, Collection, Database as Db, ExactNamespace as Ns,
};

const ROLES: &[RoleDef] = &[
    RoleDef {
        name: "read",
        admin_only: false,
        roles: &[],
        privileges: &[p(Db(None), &[READ]), p(Ns(None, "system.js"), &[READ])],
    },
    RoleDef {
        name: "readWrite",
        admin_only: false,
        roles: &[],
        privileges: &[
            p(Db(None), &[READ, WRITE]),
            p(Ns(None, "system.js"), &[READ, WRITE]),
        ],
    },
    RoleDef {
        name: "userAdmin",
        admin_only: false,
        roles: &[],
        privileges: &[p(Db(None), &[USER_ADMIN])],
    },
    RoleDef {
        name: "dbAdmin",
        admin_only: false,
        roles: &[],
        privileges: &[
            p(Db(None), &[DB_ADMIN]),
            p(Ns(None, "system.profile"), &[READ, PROFILE_ADMIN]),
        ],
    },
    RoleDef {
        name: "dbOwner",
        admin_only: false,
        roles: &[("readWrite", None), ("dbAdmin", None), ("userAdmin", None)],
        privileges: &[],
    },
    RoleDef {
        name: "enableSharding",
        admin_only: false,
        roles: &[],
        privileges: &[p(
            AnyNormal,
            &[&[
                "analyzeShardKey",
                "enableSharding",
                "refineCollectionShardKey",
                "reshardCollection",
            ]],
        )],
    },
    RoleDef {
        name: "readAnyDatabase",
        admin_only: true,
        roles: &[],
        privileges: &[
            p(AnyNormal, &[READ]),
            p(Cluster, &[&["listDatabases"]]),
            p(Collection("system.js"), &[READ]),
            p(AnySystemBuckets, &[READ]),
        ],
    },
    RoleDef {
        name: "readWriteAnyDatabase",
        admin_only: true,
        roles: &[("readAnyDatabase", None)],
        privileges: &[
            p(AnyNormal, &[READ, WRITE]),
            p(Collection("system.js"), &[READ, WRITE]),
            p(AnySystemBuckets, &[READ, WRITE]),
        ],
    },
    RoleDef {
        name: "userAdminAnyDatabase",
        admin_only: true,
        roles: &[],
        privileges: &[
            p(AnyNormal, &[USER_ADMIN, &["listCachedAndActiveUsers"]]),
            p(Db(Some("local")), &[USER_ADMIN]),
            p(Db(Some("config")), &[USER_ADMIN]),
            p(
                Cluster,
                &[&[
                    "listDatabases",
                    "authSchemaUpgrade",
                    "invalidateUserCache",
                    "viewUser",
                ]],
            ),
            p(Ns(Some("admin"), "system.users"), &[READ, INDEX_ADMIN]),
            p(Ns(Some("admin"), "system.roles"), &[READ, INDEX_ADMIN]),
            p(Collection("system.users"), &[READ]),
            p(Ns(Some("admin"), "system.version"), &[READ]),
            p(Ns(Some("admin"), "system.backup_users"), &[READ]),
        ],
    },
    RoleDef {
        name: "dbAdminAnyDatabase",
        admin_only: true,
        roles: &[],
        privileges: &[
            p(Cluster, &[&["listDatabases", "applyOps"]]),
            p(AnyNormal, &[DB_ADMIN]),
            p(Collection("system.profile"), &[READ, PROFILE_ADMIN]),
            p(AnySystemBuckets, &[DB_ADMIN]),
        ],
    },
    RoleDef {
        name: "clusterMonitor",
        admin_only: true,
        roles: &[("read", Some("config")), ("read", Some("local"))],
        privileges: &[
            p(Cluster, &[CLUSTER_MONITOR_CLUSTER]),
            p(AnyNormal, &[CLUSTER_MONITOR_DB]),
            p(Db(Some("config")), &[CLUSTER_MONITOR_DB]),
            p(Ns(Some("config"), "system.sessions"), &[CLUSTER_MONITOR_DB]),
            p(Db(Some("local")), &[CLUSTER_MONITOR_DB]),
            p(Ns(Some("local"), "system.replset"), &[FIND]),
            p(Ns(Some("local"), "replset.election"), &[FIND]),
            p(Ns(Some("local"), "replset.minvalid"), &[FIND]),
            p(Collection("system.profile"), &[FIND]),
        ],
    },
    RoleDef {
        name: "hostManager",
        admin_only: true,
        roles: &[],
        privileges: &[
            p(Cluster, &[HOST_MANAGER_CLUSTER]),
            p(AnyNormal, &[&["killCursors"]]),
        ],
    },
    RoleDef {
        name: "clusterManager",
        admin_only: true,
        roles: &[("read", Some("config"))],
        privileges: &[
            p(Cluster, &[CLUSTER_MANAGER_CLUSTER]),
            p(AnyNormal, &[CLUSTER_MANAGER_DB]),
            p(AnySystemBuckets, &[CLUSTER_MANAGER_DB]),
            p(Db(Some("config")), &[CLUSTER_MANAGER_DB]),
            p(Db(Some("local")), &[CLUSTER_MANAGER_DB]),
            p(Ns(Some("local"), "system.replset"), &[READ]),
            p(Any, &[&["dbCheck"]]),
            p(Ns(Some("local"), "system.healthlog"), &[READ]),
            p(Db(Some("config")), &[CLUSTER_MANAGER_WRITE]),
            p(Db(Some("local")), &[CLUSTER_MANAGER_WRITE]),
            p(
                Ns(Some("local"), "replset.election"),
                &[CLUSTER_MANAGER_WRITE],
            ),
            p(
                Ns(Some("local"), "replset.minvalid"),
                &[CLUSTER_MANAGER_WRITE],
            ),
        ],
    },
    RoleDef {
        name: "clusterAdmin",
        admin_only: true,
        roles: &[
            ("clusterMonitor", None),
            ("hostManager", None),
            ("clusterManager", None),
        ],
        privileges: &[
            p(AnyNormal, &[&["dropDatabase"]]),
            p(Any, &[&["importCollection", "exportCollection"]]),
        ],
    },
    RoleDef {
        name: "__queryableBackup",
        admin_only: true,
        roles: &[],
        privileges: &[
            p(
                Any,
                &[&[
                    "collStats",
                    "listCollections",
                    "listIndexes",
                    "listSearchIndexes",
                ]],
            ),
            p(AnyNormal, &[FIND]),
            p(AnySystemBuckets, &[FIND]),
            p(Cluster, &[&["getParameter", "listDatabases", "useUUID"]]),
            p(Db(Some("config")), &[FIND]),
            p(Db(Some("local")), &[FIND]),
            p(Ns(Some("local"), "replset.election"), &[FIND]),
            p(Ns(Some("local"), "replset.minvalid"), &[FIND]),
            p(Collection("system.js"), &[FIND]),
            p(Collection("system.users"), &[FIND]),
            p(Collection("system.profile"), &[FIND]),
            p(Ns(Some("admin"), "system.backup_users"), &[FIND]),
            p(Ns(Some("admin"), "system.roles"), &[FIND]),
            p(Ns(Some("admin"), "system.version"), &[FIND]),
            p(Ns(Some("config"), "settings"), &[FIND]),
        ],
    },
    RoleDef {
        name: "backup",
        admin_only: true,
        roles: &[("__queryableBackup", None)],
        privileges: &[
            p(
                Cluster,
                &[&["appendOplogNote", "serverStatus", "setUserWriteBlockMode"]],
            ),
            p(Ns(Some("config"), "settings"), &[&["insert", "update"]]),
        ],
    },
    RoleDef {
        name: "restore",
        admin_only: true,
        roles: &[],
        privileges: &[
            p(
                Cluster,
                &[&[
                    "getParameter",
                    "forceUUID",
                    "useUUID",
                    "bypassWriteBlockingMode",
                    "setUserWriteBlockMode",
                    "applyOps",
                ]],
            ),
            p(Db(Some("local")), &[RESTORE_WRITE]),
            p(Db(Some("config")), &[RESTORE_WRITE]),
            p(AnySystemBuckets, &[RESTORE_WRITE]),
            p(Ns(Some("local"), "system.replset"), &[RESTORE_WRITE]),
            p(Ns(Some("local"), "replset.election"), &[RESTORE_WRITE]),
            p(Ns(Some("local"), "replset.minvalid"), &[RESTORE_WRITE]),
            p(Any, &[&["listCollections"]]),
            p(AnyNormal, &[RESTORE_WRITE, USER_ADMIN]),
            p(Collection("system.js"), &[RESTORE_WRITE]),
            p(Ns(Some("admin"), "tempusers"), &[FIND]),
            p(Ns(Some("admin"), "temproles"), &[FIND]),
            p(Ns(Some("admin"), "system.backup_users"), &[RESTORE_WRITE]),
            p(Ns(Some("admin"), "system.version"), &[RESTORE_WRITE, FIND]),
            p(
                Collection("system.users"),
                &[RESTORE_WRITE, &["find", "update", "remove"]],
            ),
            p(Ns(Some("admin"), "system.roles"), &[&["createIndex"]]),
        ],
    },
    RoleDef {
        name: "root",
        admin_only: true,
        roles: &[
            ("clusterAdmin", None),
            ("userAdminAnyDatabase", None),
            ("dbAdminAnyDatabase", None),
            ("readWriteAnyDatabase", None),
            ("backup", None),
            ("restore", None),
            ("directShardOperations", None),
        ],
        privileges: &[
            p(Any, &[&["validate"]]),
            p(Cluster, &[&["useTenant"]]),
            p(
                Ns(Some("config"), "system.preimages"),
                &[&["find", "remove"]],
            ),
            p(
                Ns(Some("config"), "system.change_collection"),
                &[&["find", "insert", "remove", "update"]],
            ),
        ],
    },
    RoleDef {
        name: "directShardOperations",
        admin_only: true,
        roles: &[],
        privileges: &[p(Cluster, &[&["issueDirectShardOperations"]])],
    },
];

fn find(name: &str) -> Option<&'static RoleDef> {
    ROLES.iter().find(|r| r.name == name)
}

/// True when `name` is a built-in role that exists on database `db` (admin-only roles exist
/// only on `admin`).
pub fn exists(name: &str, db: &str) -> bool {
    find(name).is_some_and(|r| !r.admin_only || db == "admin")
}

/// The names of the built-in roles defined on `db`, in definition order.
pub fn names_for_db(db: &str) -> Vec<&'static str> {
    ROLES
        .iter()
        .filter(|r| !r.admin_only || db == "admin")
        .map(|r| r.name)
        .collect()
}

/// Adds the privileges of role `name` on database `db` (and of the roles it includes) to `out`.
/// Returns false when no such built-in role exists there.
pub fn add_privileges(name: &str, db: &str, out: &mut Vec<Privilege>) -> bool {
    let Some(role) = find(name) else {
        return false;
    };
    if role.admin_only && db != "admin" {
        return false;
    }
    for (sub, sub_db) in role.roles {
        add_privileges(sub, sub_db.unwrap_or(db), out);
    }
    for def in role.privileges {
        let resource = match def.on {
            Match::Database(d) => ResourcePattern::Database(d.unwrap_or(db).to_string()),
            Match::ExactNamespace(d, c) => {
                ResourcePattern::ExactNamespace(d.unwrap_or(db).to_string(), c.to_string())
            }
            Match::Collection(c) => ResourcePattern::CollectionName(c.to_string()),
            Match::AnyNormal => ResourcePattern::AnyNormal,
            Match::Cluster => ResourcePattern::Cluster,
            Match::Any => ResourcePattern::AnyResource,
            Match::AnySystemBuckets => ResourcePattern::AnySystemBuckets,
        };
        let actions: Vec<&'static str> =
            def.actions.iter().flat_map(|g| g.iter()).copied().collect();
        merge(out, Privilege::new(resource, &actions));
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::privilege::is_authorized;

    fn privileges(role: &str, db: &str) -> Vec<Privilege> {
        let mut out = Vec::new();
        assert!(add_privileges(role, db, &mut out), "{role}@{db} exists");
        out
    }

    fn ns(db: &str, coll: &str) -> ResourcePattern {
        ResourcePattern::ExactNamespace(db.into(), coll.into())
    }

    #[test]
    fn read_allows_reads_on_its_database_only() {
        let p = privileges("read", "test");
        assert!(is_authorized(
            &p,
            &ns("test", "c"),
            &["find", "changeStream"]
        ));
        assert!(!is_authorized(&p, &ns("test", "c"), &["insert"]));
        assert!(!is_authorized(&p, &ns("other", "c"), &["find"]));
    }

    #[test]
    fn admin_only_roles_do_not_exist_elsewhere() {
        assert!(exists("root", "admin"));
        assert!(!exists("root", "test"));
        assert!(exists("readWrite", "test"));
        assert!(!exists("nope", "admin"));
    }

    #[test]
    fn root_reaches_the_oplog_and_the_cluster() {
        let p = privileges("root", "admin");
        assert!(is_authorized(&p, &ns("local", "oplog.rs"), &["find"]));
        assert!(is_authorized(
            &p,
            &ResourcePattern::Cluster,
            &[
                "serverStatus",
                "setUserWriteBlockMode",
                "bypassWriteBlockingMode"
            ]
        ));
        assert!(is_authorized(
            &p,
            &ns("app", "c"),
            &["insert", "dropCollection"]
        ));
    }

    #[test]
    fn read_any_database_does_not_reach_local() {
        let p = privileges("readAnyDatabase", "admin");
        assert!(is_authorized(&p, &ns("app", "c"), &["find"]));
        assert!(!is_authorized(&p, &ns("local", "oplog.rs"), &["find"]));
        let monitor = privileges("clusterMonitor", "admin");
        assert!(is_authorized(&monitor, &ns("local", "oplog.rs"), &["find"]));
    }

    #[test]
    fn db_owner_combines_its_roles() {
        let p = privileges("dbOwner", "test");
        assert!(is_authorized(
            &p,
            &ResourcePattern::Database("test".into()),
            &["dropDatabase", "createUser", "insert"]
        ));
    }
}
