//! Resolving `include`, `exclude` and `rename` against the source catalog: which source
//! namespaces are migrated, and under which destination names.

use std::collections::BTreeMap;

use crate::cluster::{Catalog, CollectionInfo};
use crate::config::Config;
use crate::namespace::{Namespace, RenameRule};

/// One migrated namespace.
#[derive(Debug, Clone, PartialEq)]
pub struct MappedNamespace<'a> {
    /// Its name on the source.
    pub source: Namespace,
    /// Its name on the destination.
    pub destination: Namespace,
    /// What the source holds there.
    pub info: &'a CollectionInfo,
}

/// The outcome of resolving the mapping.
#[derive(Debug, Clone, Default)]
pub struct Mapping<'a> {
    /// Migrated namespaces, in source-namespace order.
    pub namespaces: Vec<MappedNamespace<'a>>,
    /// Destination namespaces that two or more source namespaces map to.
    pub collisions: BTreeMap<Namespace, Vec<Namespace>>,
    /// Include patterns that match no source namespace.
    pub unmatched_includes: Vec<String>,
    /// Rename rules whose source does not exist (or is not included).
    pub unused_renames: Vec<String>,
}

/// Resolves the mapping. The source catalog passed in is already limited to included
/// namespaces (the inspection applies the filter).
pub fn resolve<'a>(config: &Config, source: &'a Catalog) -> Mapping<'a> {
    let mapping = &config.options.mapping;
    let mut result = Mapping::default();
    let mut targets: BTreeMap<Namespace, Vec<Namespace>> = BTreeMap::new();
    for (ns, info) in source.namespaces() {
        let destination = mapping.map(&ns);
        targets
            .entry(destination.clone())
            .or_default()
            .push(ns.clone());
        result.namespaces.push(MappedNamespace {
            source: ns,
            destination,
            info,
        });
    }
    result.collisions = targets
        .into_iter()
        .filter(|(_, from)| from.len() > 1)
        .collect();
    result.unmatched_includes = config
        .options
        .filter
        .include()
        .iter()
        .filter(|p| !result.namespaces.iter().any(|m| p.matches(&m.source)))
        .map(ToString::to_string)
        .collect();
    result.unused_renames = mapping
        .rules()
        .iter()
        .filter(|rule| match rule {
            RenameRule::Database { from, .. } => {
                !result.namespaces.iter().any(|m| m.source.db() == from)
            }
            RenameRule::Namespace { from, .. } => {
                !result.namespaces.iter().any(|m| &m.source == from)
            }
        })
        .map(|rule| match rule {
            RenameRule::Database { from, to } => format!("{from} → {to}"),
            RenameRule::Namespace { from, to } => format!("{from} → {to}"),
        })
        .collect();
    result
}
