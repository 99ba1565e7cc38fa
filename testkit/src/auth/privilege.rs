//! Privileges: an action set on a resource pattern, and the matching rules mongod uses to decide
//! whether a set of privileges allows an action on a resource.
//!
//! Resource patterns and their BSON shapes follow mongod's `ResourcePattern` (see the server's
//! `src/mongo/db/auth/README.md`): `{db: "test", collection: ""}` for a database,
//! `{db: "", collection: "system.js"}` for a collection name in any database,
//! `{db: "", collection: ""}` for every normal resource, `{cluster: true}`, `{anyResource: true}`
//! and `{system_buckets: ""}` for every `system.buckets.*` collection.

use std::collections::BTreeSet;

use bson::{Bson, Document, doc};

/// A set of action names (`find`, `insert`, `listDatabases`, ...), kept sorted so that replies
/// are deterministic.
pub type ActionSet = BTreeSet<&'static str>;

/// What a privilege applies to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ResourcePattern {
    /// Every resource, including system collections and the cluster.
    AnyResource,
    /// Every non-system collection in every database except `local` and `config`.
    AnyNormal,
    /// Cluster-wide operations (`serverStatus`, `listDatabases`, ...).
    Cluster,
    /// Every non-system collection of one database, and the database itself.
    Database(String),
    /// The collection with this name in every database (`system.js`, `system.profile`, ...).
    CollectionName(String),
    /// Exactly one namespace.
    ExactNamespace(String, String),
    /// Every `system.buckets.*` collection of every database.
    AnySystemBuckets,
}

impl ResourcePattern {
    /// The `resource` document of a privilege, as mongod prints it.
    pub fn to_document(&self) -> Document {
        match self {
            ResourcePattern::AnyResource => doc! { "anyResource": true },
            ResourcePattern::AnyNormal => doc! { "db": "", "collection": "" },
            ResourcePattern::Cluster => doc! { "cluster": true },
            ResourcePattern::Database(db) => doc! { "db": db.clone(), "collection": "" },
            ResourcePattern::CollectionName(c) => doc! { "db": "", "collection": c.clone() },
            ResourcePattern::ExactNamespace(db, c) => {
                doc! { "db": db.clone(), "collection": c.clone() }
            }
            ResourcePattern::AnySystemBuckets => doc! { "system_buckets": "" },
        }
    }

    /// The patterns that can grant an action on `self` when `self` is a concrete target (a
    /// namespace, a database or the cluster): mongod's `buildResourceSearchList`.
    pub fn search_list(&self) -> Vec<ResourcePattern> {
        let mut list = vec![ResourcePattern::AnyResource];
        match self {
            ResourcePattern::ExactNamespace(db, coll) => {
                if is_normal_collection(db, coll) {
                    // `local` and `config` hold replication and sharding state, which roles
                    // granted on "any normal resource" must not reach.
                    if !is_local_or_config(db) {
                        list.push(ResourcePattern::AnyNormal);
                    }
                    list.push(ResourcePattern::Database(db.clone()));
                } else if coll.starts_with("system.buckets.") {
                    list.push(ResourcePattern::AnySystemBuckets);
                }
                list.push(ResourcePattern::CollectionName(coll.clone()));
            }
            ResourcePattern::Database(db) if !is_local_or_config(db) => {
                list.push(ResourcePattern::AnyNormal);
            }
            _ => {}
        }
        if !list.contains(self) {
            list.push(self.clone());
        }
        list
    }
}

/// True for collections that database-level privileges cover: not `system.*`, and not the
/// replica-set state collections of `local`.
fn is_normal_collection(db: &str, coll: &str) -> bool {
    let system = coll.starts_with("system.");
    let replication_state = db == "local" && coll.starts_with("replset.");
    !system && !replication_state
}

fn is_local_or_config(db: &str) -> bool {
    matches!(db, "local" | "config")
}

/// Some actions on a resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Privilege {
    /// What the actions apply to.
    pub resource: ResourcePattern,
    /// The allowed actions.
    pub actions: ActionSet,
}

impl Privilege {
    /// A privilege with the given actions.
    pub fn new(resource: ResourcePattern, actions: &[&'static str]) -> Privilege {
        Privilege {
            resource,
            actions: actions.iter().copied().collect(),
        }
    }

    /// `{resource, actions}` as in `connectionStatus` and `rolesInfo` replies.
    pub fn to_document(&self) -> Document {
        let actions: Vec<Bson> = self
            .actions
            .iter()
            .map(|a| Bson::String((*a).to_string()))
            .collect();
        doc! { "resource": self.resource.to_document(), "actions": actions }
    }
}

/// Merges `privilege` into `into`: actions on a resource already present are added to it, as
/// mongod's `Privilege::addPrivilegeToPrivilegeVector` does.
pub fn merge(into: &mut Vec<Privilege>, privilege: Privilege) {
    match into.iter_mut().find(|p| p.resource == privilege.resource) {
        Some(existing) => existing.actions.extend(privilege.actions),
        None => into.push(privilege),
    }
}

/// True when `privileges` allow every action of `actions` on the concrete `target`.
pub fn is_authorized(privileges: &[Privilege], target: &ResourcePattern, actions: &[&str]) -> bool {
    let candidates = target.search_list();
    actions.iter().all(|action| {
        privileges
            .iter()
            .any(|p| candidates.contains(&p.resource) && p.actions.contains(action))
    })
}

/// True when `privileges` allow at least one action on the concrete `target` (used to filter
/// `listCollections` with `authorizedCollections`).
pub fn any_action_on(privileges: &[Privilege], target: &ResourcePattern) -> bool {
    let candidates = target.search_list();
    privileges
        .iter()
        .any(|p| candidates.contains(&p.resource) && !p.actions.is_empty())
}

/// True when `privileges` allow any action on any resource in database `db`: mongod's
/// `isAuthorizedForAnyActionOnAnyResourceInDB`, which filters `listDatabases` with
/// `authorizedDatabases`. Collection-name patterns match a collection of every database.
pub fn any_action_in_db(privileges: &[Privilege], db: &str) -> bool {
    privileges.iter().any(|p| {
        !p.actions.is_empty()
            && match &p.resource {
                ResourcePattern::AnyResource
                | ResourcePattern::AnyNormal
                | ResourcePattern::CollectionName(_)
                | ResourcePattern::AnySystemBuckets => true,
                ResourcePattern::Database(d) | ResourcePattern::ExactNamespace(d, _) => d == db,
                ResourcePattern::Cluster => false,
            }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ns(db: &str, coll: &str) -> ResourcePattern {
        ResourcePattern::ExactNamespace(db.into(), coll.into())
    }

    #[test]
    fn database_privileges_cover_normal_collections_only() {
        let privileges = vec![Privilege::new(
            ResourcePattern::Database("test".into()),
            &["find"],
        )];
        assert!(is_authorized(&privileges, &ns("test", "c"), &["find"]));
        assert!(!is_authorized(&privileges, &ns("test", "c"), &["insert"]));
        assert!(!is_authorized(
            &privileges,
            &ns("test", "system.views"),
            &["find"]
        ));
        assert!(!is_authorized(&privileges, &ns("other", "c"), &["find"]));
    }

    #[test]
    fn any_normal_resource_excludes_local_and_config() {
        let privileges = vec![Privilege::new(ResourcePattern::AnyNormal, &["find"])];
        assert!(is_authorized(&privileges, &ns("admin", "c"), &["find"]));
        assert!(!is_authorized(
            &privileges,
            &ns("local", "oplog.rs"),
            &["find"]
        ));
        assert!(!is_authorized(&privileges, &ns("config", "x"), &["find"]));
    }

    #[test]
    fn merging_unions_actions_per_resource() {
        let mut v = Vec::new();
        merge(&mut v, Privilege::new(ResourcePattern::Cluster, &["a"]));
        merge(&mut v, Privilege::new(ResourcePattern::Cluster, &["b"]));
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].actions.len(), 2);
    }
}
