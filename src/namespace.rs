//! Namespaces (`db.collection`), the glob patterns that select them and the renames that map
//! them from the source to the destination.
//!
//! These are the domain types shared by the config (which parses and validates them), the planner
//! (which resolves them against a catalog snapshot) and the sync engine (which maps change events
//! through the same mapping).

use std::fmt;

use serde::{Deserialize, Serialize};

/// Databases that belong to the server and are never copied.
pub const SYSTEM_DATABASES: [&str; 3] = ["admin", "local", "config"];

/// The largest namespace (`db.collection`) the server accepts, in bytes (MongoDB 4.4+).
pub const MAX_NAMESPACE_BYTES: usize = 255;

/// The largest database name the server accepts, in bytes (the server requires fewer than 64).
pub const MAX_DATABASE_NAME_BYTES: usize = 63;

/// Characters the server forbids in database names on any platform. Linux alone forbids
/// `/\. "$`; the Windows set is included so a plan made on one host stays valid on any other.
const FORBIDDEN_DATABASE_CHARS: &[char] = &[
    '/', '\\', '.', ' ', '"', '$', '*', '<', '>', ':', '|', '?', '\0',
];

/// A fully qualified collection name, `db.collection`.
///
/// The database part never contains a dot; the collection part may (`db.a.b` is database `db`,
/// collection `a.b`), which is why parsing splits at the first dot.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Namespace {
    db: String,
    coll: String,
}

impl Namespace {
    /// Builds a namespace from its parts without validating them (names read from a server).
    pub fn new(db: impl Into<String>, coll: impl Into<String>) -> Self {
        Self {
            db: db.into(),
            coll: coll.into(),
        }
    }

    /// Parses `db.collection`, checking only the shape (both parts non-empty).
    pub fn parse(text: &str) -> Result<Self, NameError> {
        match text.split_once('.') {
            Some((db, coll)) if !db.is_empty() && !coll.is_empty() => Ok(Self::new(db, coll)),
            _ => Err(NameError::new(
                text,
                "a namespace is written `database.collection`",
            )),
        }
    }

    /// The database part.
    pub fn db(&self) -> &str {
        &self.db
    }

    /// The collection part.
    pub fn coll(&self) -> &str {
        &self.coll
    }

    /// Checks the server's naming rules for a namespace that mongoshift will create.
    pub fn validate_for_creation(&self) -> Result<(), NameError> {
        validate_database_name(&self.db)?;
        validate_collection_name(&self.coll)
            .map_err(|e| NameError::new(self.to_string(), e.reason))?;
        let len = self.db.len() + 1 + self.coll.len();
        if len > MAX_NAMESPACE_BYTES {
            return Err(NameError::new(
                self.to_string(),
                format!(
                    "namespace is {len} bytes; the server allows at most {MAX_NAMESPACE_BYTES}"
                ),
            ));
        }
        Ok(())
    }

    /// True for namespaces that are never migrated: system databases and `system.*` collections.
    pub fn is_system(&self) -> bool {
        is_system(&self.db, &self.coll)
    }
}

fn is_system(db: &str, coll: &str) -> bool {
    SYSTEM_DATABASES.contains(&db) || coll.starts_with("system.")
}

impl fmt::Display for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.db, self.coll)
    }
}

impl TryFrom<String> for Namespace {
    type Error = NameError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<Namespace> for String {
    fn from(ns: Namespace) -> Self {
        ns.to_string()
    }
}

/// A name that breaks the server's naming rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid name `{name}`: {reason}")]
pub struct NameError {
    /// The offending name.
    pub name: String,
    /// Which rule it breaks.
    pub reason: String,
}

impl NameError {
    fn new(name: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            reason: reason.into(),
        }
    }
}

/// Checks a database name against the server's rules.
pub fn validate_database_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::new(name, "a database name cannot be empty"));
    }
    if let Some(c) = name.chars().find(|c| FORBIDDEN_DATABASE_CHARS.contains(c)) {
        return Err(NameError::new(
            name,
            format!("database names cannot contain {c:?}"),
        ));
    }
    if name.len() > MAX_DATABASE_NAME_BYTES {
        return Err(NameError::new(
            name,
            format!(
                "database names must be shorter than 64 bytes (this one is {})",
                name.len()
            ),
        ));
    }
    Ok(())
}

/// Checks a user collection name against the server's rules.
pub fn validate_collection_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::new(name, "a collection name cannot be empty"));
    }
    if name.contains('$') || name.contains('\0') {
        return Err(NameError::new(
            name,
            "collection names cannot contain `$` or NUL",
        ));
    }
    if name.starts_with("system.") {
        return Err(NameError::new(
            name,
            "`system.` collections belong to the server",
        ));
    }
    if name.starts_with('.') || name.ends_with('.') {
        return Err(NameError::new(
            name,
            "collection names cannot start or end with `.`",
        ));
    }
    Ok(())
}

/// A glob over namespaces, as written in `options.include` / `options.exclude`.
///
/// `db.coll` forms: the part before the first dot matches the database, the rest the collection.
/// `*` matches any run of characters (in the collection part, dots too), `?` one character. A
/// pattern without a dot selects whole databases (`shop` = `shop.*`); `*` alone selects
/// everything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespacePattern {
    text: String,
    db: String,
    coll: String,
}

impl NamespacePattern {
    /// Parses a pattern, rejecting shapes that can never match a namespace.
    pub fn parse(text: &str) -> Result<Self, NameError> {
        let (db, coll) = match text.split_once('.') {
            Some((db, coll)) => (db, coll),
            None => (text, "*"),
        };
        if db.is_empty() || coll.is_empty() {
            return Err(NameError::new(
                text,
                "a pattern is `database`, `database.collection` or a glob of them such as `shop.*`",
            ));
        }
        if let Some(c) = db
            .chars()
            .find(|c| *c != '*' && *c != '?' && FORBIDDEN_DATABASE_CHARS.contains(c))
        {
            return Err(NameError::new(
                text,
                format!("the database part cannot contain {c:?}"),
            ));
        }
        Ok(Self {
            text: text.to_owned(),
            db: db.to_owned(),
            coll: coll.to_owned(),
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// True when the namespace matches.
    pub fn matches(&self, ns: &Namespace) -> bool {
        self.matches_names(ns.db(), ns.coll())
    }

    fn matches_names(&self, db: &str, coll: &str) -> bool {
        glob_match(&self.db, db) && glob_match(&self.coll, coll)
    }

    /// True when the pattern can match some collection of the named database.
    pub fn may_match_database(&self, db: &str) -> bool {
        glob_match(&self.db, db)
    }
}

impl fmt::Display for NamespacePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Wildcard matching with `*` (any run) and `?` (one character), by characters. It runs for
/// every change event, so it walks both strings in place instead of collecting their chars.
fn glob_match(pattern: &str, text: &str) -> bool {
    // Greedy two-pointer matching (byte offsets at char boundaries) with backtracking to the
    // last star: linear in practice and never recursive, so hostile patterns cannot blow the
    // stack. A star in the pattern is always a wildcard, even where the text has a `*` too.
    let (mut pi, mut ti) = (0, 0);
    // The pattern offset after the last star, and the text offset it is tried from.
    let mut star: Option<(usize, usize)> = None;
    while let Some(tc) = text[ti..].chars().next() {
        match pattern[pi..].chars().next() {
            Some('*') => {
                pi += 1;
                star = Some((pi, ti));
            }
            Some(pc) if pc == '?' || pc == tc => {
                pi += pc.len_utf8();
                ti += tc.len_utf8();
            }
            _ => match star {
                // The star takes one more character and the rest is tried again. `st` is an
                // earlier `ti`, so it is a char boundary before `ti < text.len()`: there is a
                // character to take.
                Some((sp, st)) => {
                    let st = st + text[st..].chars().next().map_or(1, char::len_utf8);
                    pi = sp;
                    ti = st;
                    star = Some((sp, st));
                }
                None => return false,
            },
        }
    }
    pattern[pi..].chars().all(|c| c == '*')
}

/// Which source namespaces take part in a migration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NamespaceFilter {
    include: Vec<NamespacePattern>,
    exclude: Vec<NamespacePattern>,
}

impl NamespaceFilter {
    /// Builds a filter; an empty include list means every user namespace.
    pub fn new(include: Vec<NamespacePattern>, exclude: Vec<NamespacePattern>) -> Self {
        Self { include, exclude }
    }

    /// True when the namespace is migrated. System namespaces never are.
    pub fn includes(&self, ns: &Namespace) -> bool {
        self.includes_names(ns.db(), ns.coll())
    }

    /// [`Self::includes`] for a namespace given by its parts (a change event's, without
    /// building a [`Namespace`] for every event).
    pub fn includes_names(&self, db: &str, coll: &str) -> bool {
        !is_system(db, coll)
            && (self.include.is_empty() || self.include.iter().any(|p| p.matches_names(db, coll)))
            && !self.exclude.iter().any(|p| p.matches_names(db, coll))
    }

    /// True when some collection of the database may be migrated (used to skip whole databases
    /// when listing a catalog).
    pub fn may_include_database(&self, db: &str) -> bool {
        !SYSTEM_DATABASES.contains(&db)
            && (self.include.is_empty() || self.include.iter().any(|p| p.may_match_database(db)))
    }

    /// The include patterns.
    pub fn include(&self) -> &[NamespacePattern] {
        &self.include
    }

    /// The exclude patterns.
    pub fn exclude(&self) -> &[NamespacePattern] {
        &self.exclude
    }
}

/// One rename rule: a whole database or a single namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RenameRule {
    /// `"shop" = "shop_v2"`: every collection of `from` moves to database `to`.
    Database {
        /// The source database.
        from: String,
        /// The destination database.
        to: String,
    },
    /// `"shop.orders" = "sales.orders"`: one namespace moves.
    Namespace {
        /// The source namespace.
        from: Namespace,
        /// The destination namespace.
        to: Namespace,
    },
}

impl RenameRule {
    /// Parses a rule from its TOML key and value. Both sides must be of the same kind.
    pub fn parse(from: &str, to: &str) -> Result<Self, NameError> {
        match (from.contains('.'), to.contains('.')) {
            (false, false) => {
                validate_database_name(from)?;
                validate_database_name(to)?;
                for db in [from, to] {
                    if SYSTEM_DATABASES.contains(&db) {
                        return Err(NameError::new(
                            db,
                            "system databases cannot be renamed or renamed into",
                        ));
                    }
                }
                Ok(Self::Database {
                    from: from.to_owned(),
                    to: to.to_owned(),
                })
            }
            (true, true) => {
                let from_ns = Namespace::parse(from)?;
                let to_ns = Namespace::parse(to)?;
                to_ns.validate_for_creation()?;
                if SYSTEM_DATABASES.contains(&to_ns.db()) {
                    return Err(NameError::new(to, "cannot rename into a system database"));
                }
                Ok(Self::Namespace {
                    from: from_ns,
                    to: to_ns,
                })
            }
            (false, true) => Err(NameError::new(
                to,
                format!("`{from}` is a database, so it must be renamed to a database (no `.`)"),
            )),
            (true, false) => Err(NameError::new(
                to,
                format!(
                    "`{from}` is a namespace, so it must be renamed to a namespace `db.collection`"
                ),
            )),
        }
    }
}

/// The source → destination name mapping of a migration.
///
/// A namespace rule wins over a database rule; names without a rule keep their name. Rules apply
/// once (not transitively), to catalog entries and change events alike.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NamespaceMapping {
    rules: Vec<RenameRule>,
}

impl NamespaceMapping {
    /// Builds a mapping from rules.
    pub fn new(rules: Vec<RenameRule>) -> Self {
        Self { rules }
    }

    /// The rules, in configuration order.
    pub fn rules(&self) -> &[RenameRule] {
        &self.rules
    }

    /// Maps a source namespace to its destination namespace.
    pub fn map(&self, ns: &Namespace) -> Namespace {
        for rule in &self.rules {
            if let RenameRule::Namespace { from, to } = rule
                && from == ns
            {
                return to.clone();
            }
        }
        Namespace::new(self.map_database(ns.db()), ns.coll())
    }

    /// Maps a source database name to its destination name (database rules only).
    pub fn map_database<'a>(&'a self, db: &'a str) -> &'a str {
        for rule in &self.rules {
            if let RenameRule::Database { from, to } = rule
                && from == db
            {
                return to;
            }
        }
        db
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ns(s: &str) -> Namespace {
        Namespace::parse(s).unwrap()
    }

    #[test]
    fn namespace_splits_at_first_dot() {
        let n = ns("db.a.b");
        assert_eq!((n.db(), n.coll()), ("db", "a.b"));
        assert!(Namespace::parse("nodot").is_err());
        assert!(Namespace::parse(".c").is_err());
        assert!(Namespace::parse("d.").is_err());
    }

    #[test]
    fn globs_follow_the_documented_rules() {
        let p = |s| NamespacePattern::parse(s).unwrap();
        // (pattern, namespace, matches)
        let cases = [
            ("shop.*", "shop.orders", true),
            ("shop", "shop.a.b", true),
            ("shop", "shopping.a", false),
            ("shop*", "shopping.a", true),
            ("*.orders", "x.orders", true),
            ("*.orders", "x.orders_old", false),
            ("shop.tmp_*", "shop.tmp_1", true),
            ("shop.tmp_*", "shop.tmp", false),
            ("s?op.o*s", "shop.orders", true),
            ("*", "a.b.c", true),
            ("a.*.c", "a.b.x.c", true),
            // Backtracking: the first star must give back what it took.
            ("a.*b*c", "a.xbybzc", true),
            ("a.*b*c", "a.xbybz", false),
            ("a.**", "a.x", true),
            // A star is a wildcard even where the name has a `*` of its own (these two failed
            // when a pattern's star was first compared with the name's character).
            ("a.x*", "a.x*y", true),
            ("a.*x", "a.*yx", true),
            // `?` is one character, not one byte, and a star gives back whole characters.
            ("caf?.x", "café.x", true),
            ("caf??.x", "café.x", false),
            ("*é.?", "café.ü", true),
            ("a.*ü", "a.éü", true),
            ("a.*ü", "a.éé", false),
            ("a.*?x", "a.😀😀x", true),
        ];
        for (pattern, name, expected) in cases {
            assert_eq!(
                p(pattern).matches(&ns(name)),
                expected,
                "{pattern} on {name}"
            );
        }
        let f = NamespaceFilter::new(vec![], vec![p("shop.tmp*")]);
        assert!(!f.includes(&ns("shop.tmp*x")));
        assert!(NamespacePattern::parse("").is_err());
        assert!(NamespacePattern::parse(".x").is_err());
        assert!(NamespacePattern::parse("sh/op.x").is_err());
    }

    #[test]
    fn filter_excludes_system_namespaces_and_applies_exclude_last() {
        let p = |s| NamespacePattern::parse(s).unwrap();
        let all = NamespaceFilter::default();
        assert!(all.includes(&ns("shop.orders")));
        assert!(!all.includes(&ns("admin.users")));
        assert!(!all.includes(&ns("shop.system.views")));
        let f = NamespaceFilter::new(vec![p("shop.*")], vec![p("shop.tmp_*")]);
        assert!(f.includes(&ns("shop.orders")));
        assert!(!f.includes(&ns("shop.tmp_x")));
        assert!(!f.includes(&ns("other.orders")));
        assert!(f.may_include_database("shop"));
        assert!(!f.may_include_database("other"));
        assert!(!all.may_include_database("local"));
    }

    #[test]
    fn mapping_prefers_namespace_rules_and_is_not_transitive() {
        let m = NamespaceMapping::new(vec![
            RenameRule::parse("shop", "shop_v2").unwrap(),
            RenameRule::parse("shop.orders", "sales.orders").unwrap(),
            RenameRule::parse("shop_v2", "never").unwrap(),
        ]);
        assert_eq!(m.map(&ns("shop.orders")), ns("sales.orders"));
        assert_eq!(m.map(&ns("shop.items")), ns("shop_v2.items"));
        assert_eq!(m.map(&ns("other.x")), ns("other.x"));
    }

    #[test]
    fn rename_rules_must_pair_kinds_and_avoid_system_databases() {
        assert!(RenameRule::parse("shop", "shop.orders").is_err());
        assert!(RenameRule::parse("shop.orders", "shop").is_err());
        assert!(RenameRule::parse("shop", "admin").is_err());
        assert!(RenameRule::parse("a.b", "local.b").is_err());
        assert!(RenameRule::parse("a.b", "c.$x").is_err());
        assert!(RenameRule::parse("a", "b c").is_err());
    }

    #[test]
    fn creation_rules_match_the_server() {
        assert!(ns("db.ok").validate_for_creation().is_ok());
        assert!(ns("db.system.x").validate_for_creation().is_err());
        let long = format!("db.{}", "c".repeat(253));
        assert!(ns(&long).validate_for_creation().is_err());
        assert!(validate_database_name(&"d".repeat(64)).is_err());
        assert!(validate_database_name(&"d".repeat(63)).is_ok());
    }
}
