//! Namespaces (`db.collection`) and the naming rules mongod enforces on them.

use std::fmt;

use crate::error::CommandError;

/// A database name plus a collection name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Namespace {
    /// The database name.
    pub db: String,
    /// The collection name (may contain dots, e.g. `system.views`).
    pub coll: String,
}

impl Namespace {
    /// Builds a namespace from its parts.
    pub fn new(db: impl Into<String>, coll: impl Into<String>) -> Namespace {
        Namespace {
            db: db.into(),
            coll: coll.into(),
        }
    }

    /// Parses `db.coll` (the first dot separates the parts).
    pub fn parse(full: &str) -> Result<Namespace, CommandError> {
        match full.split_once('.') {
            Some((db, coll)) if !db.is_empty() && !coll.is_empty() => Ok(Namespace::new(db, coll)),
            _ => Err(CommandError::invalid_namespace(format!(
                "Invalid namespace specified '{full}'"
            ))),
        }
    }

    /// True for the internal databases that cluster-wide change streams skip.
    pub fn is_internal_db(&self) -> bool {
        is_internal_db(&self.db)
    }

    /// True for `system.*` collections.
    pub fn is_system(&self) -> bool {
        self.coll.starts_with("system.")
    }
}

impl fmt::Display for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.db, self.coll)
    }
}

/// True for `admin`, `config` and `local`.
pub fn is_internal_db(db: &str) -> bool {
    matches!(db, "admin" | "config" | "local")
}

/// Checks a database name as mongod does (`DatabaseName::validDBName`).
pub fn validate_db_name(db: &str) -> Result<(), CommandError> {
    if db.is_empty() || db.len() >= 64 || db.contains(['/', '\\', '.', ' ', '"', '$', '\0']) {
        return Err(CommandError::invalid_namespace(format!(
            "Invalid database name: '{db}'"
        )));
    }
    Ok(())
}

/// Checks a collection name as mongod does for user collections.
pub fn validate_coll_name(db: &str, coll: &str) -> Result<(), CommandError> {
    if coll.is_empty() || coll.contains('\0') || coll.starts_with('.') || coll.contains('$') {
        return Err(CommandError::invalid_namespace(format!(
            "Invalid collection name: {coll}"
        )));
    }
    if db.len() + 1 + coll.len() > 255 {
        return Err(CommandError::invalid_namespace(format!(
            "Fully qualified namespace is too long. Namespace: {db}.{coll} Max: 255"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_validate() {
        let ns = Namespace::parse("db.a.b").unwrap();
        assert_eq!((ns.db.as_str(), ns.coll.as_str()), ("db", "a.b"));
        assert_eq!(ns.to_string(), "db.a.b");
        assert_eq!(Namespace::parse("nodot").unwrap_err().code, 73);
        assert!(validate_db_name("ok_db").is_ok());
        assert_eq!(validate_db_name("a.b").unwrap_err().code, 73);
        assert_eq!(validate_coll_name("db", "").unwrap_err().code, 73);
        assert_eq!(validate_coll_name("db", "a$b").unwrap_err().code, 73);
    }
}
