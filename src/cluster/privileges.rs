//! What the connected user may do, as `connectionStatus` (with `showPrivileges: true`) reports
//! it, and the server's rules for which resource a privilege covers.
//!
//! Resource rules (MongoDB manual, "Resource Document"):
//! - `{cluster: true}`: cluster-wide actions;
//! - `{anyResource: true}`: everything;
//! - `{db: "A", collection: "B"}`: namespace `A.B`;
//! - `{db: "A", collection: ""}`: every non-system collection of `A`, and database-level
//!   actions on `A`;
//! - `{db: "", collection: "B"}`: collection `B` in every database;
//! - `{db: "", collection: ""}`: every non-system collection of every database.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::namespace::Namespace;

/// The connected user's identity and privileges.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Privileges {
    /// Authenticated users, `user@db`.
    pub users: Vec<String>,
    /// Their roles, `role@db`.
    pub roles: Vec<String>,
    /// Every privilege the roles grant.
    pub grants: Vec<Grant>,
}

/// One privilege: actions on a resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// What it applies to.
    pub resource: Resource,
    /// Which actions (`find`, `insert`, `changeStream`, ...).
    pub actions: BTreeSet<String>,
}

/// A privilege's resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Resource {
    /// `{cluster: true}`.
    Cluster,
    /// `{anyResource: true}`.
    AnyResource,
    /// `{db, collection}`; empty strings are wildcards as described in the module docs.
    Namespace {
        /// Database, or `""` for any.
        db: String,
        /// Collection, or `""` for any non-system collection.
        collection: String,
    },
}

/// What an action is checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target<'a> {
    /// The cluster.
    Cluster,
    /// A database (database-level actions such as `listCollections` or `createCollection`).
    Database(&'a str),
    /// A namespace.
    Collection(&'a Namespace),
    /// Every non-system collection of every database (what a cluster-wide change stream
    /// reads).
    AllCollections,
}

impl Resource {
    /// True when this resource covers the target.
    pub fn covers(&self, target: Target<'_>) -> bool {
        match (self, target) {
            (Self::AnyResource, _) => true,
            (Self::Cluster, Target::Cluster) => true,
            (Self::Cluster, _) | (Self::Namespace { .. }, Target::Cluster) => false,
            (Self::Namespace { db, collection }, Target::AllCollections) => {
                db.is_empty() && collection.is_empty()
            }
            (Self::Namespace { db, collection }, Target::Database(target_db)) => {
                collection.is_empty() && (db.is_empty() || db == target_db)
            }
            (Self::Namespace { db, collection }, Target::Collection(ns)) => {
                let db_ok = db.is_empty() || db == ns.db();
                let coll_ok = if collection.is_empty() {
                    !ns.coll().starts_with("system.")
                } else {
                    collection == ns.coll()
                };
                db_ok && coll_ok
            }
        }
    }
}

impl Privileges {
    /// True when some grant allows the action on the target.
    pub fn allows(&self, action: &str, target: Target<'_>) -> bool {
        self.grants
            .iter()
            .any(|g| g.actions.contains(action) && g.resource.covers(target))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(resource: Resource, actions: &[&str]) -> Grant {
        Grant {
            resource,
            actions: actions.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    fn ns(db: &str, coll: &str) -> Resource {
        Resource::Namespace {
            db: db.to_owned(),
            collection: coll.to_owned(),
        }
    }

    #[test]
    fn resources_cover_what_the_server_says() {
        let orders = Namespace::new("shop", "orders");
        let views = Namespace::new("shop", "system.views");
        assert!(ns("shop", "orders").covers(Target::Collection(&orders)));
        assert!(!ns("shop", "items").covers(Target::Collection(&orders)));
        assert!(ns("shop", "").covers(Target::Collection(&orders)));
        assert!(!ns("shop", "").covers(Target::Collection(&views)));
        assert!(ns("shop", "").covers(Target::Database("shop")));
        assert!(!ns("shop", "orders").covers(Target::Database("shop")));
        assert!(ns("", "orders").covers(Target::Collection(&orders)));
        assert!(ns("", "").covers(Target::Collection(&orders)));
        assert!(ns("", "").covers(Target::Database("any")));
        assert!(!ns("", "").covers(Target::Cluster));
        assert!(Resource::Cluster.covers(Target::Cluster));
        assert!(!Resource::Cluster.covers(Target::Database("shop")));
        assert!(Resource::AnyResource.covers(Target::Collection(&views)));
        assert!(ns("", "").covers(Target::AllCollections));
        assert!(!ns("shop", "").covers(Target::AllCollections));
        assert!(!ns("", "orders").covers(Target::AllCollections));
    }

    #[test]
    fn allows_needs_action_and_resource() {
        let p = Privileges {
            grants: vec![
                grant(ns("shop", ""), &["find", "listIndexes"]),
                grant(Resource::Cluster, &["listDatabases"]),
            ],
            ..Privileges::default()
        };
        let orders = Namespace::new("shop", "orders");
        let other = Namespace::new("crm", "people");
        assert!(p.allows("find", Target::Collection(&orders)));
        assert!(!p.allows("insert", Target::Collection(&orders)));
        assert!(!p.allows("find", Target::Collection(&other)));
        assert!(p.allows("listDatabases", Target::Cluster));
    }
}
