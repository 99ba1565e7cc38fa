//! Users: what the builder and `mongoshift-testd --user` declare, validated against the built-in
//! roles, with their flattened privileges and (lazily derived) SCRAM credentials.
//!
//! A real mongod keeps users in `admin.system.users`; here they are fixed when the server
//! starts. Users live in `admin` unless declared as `name@db`. Every user gets credentials for
//! both SCRAM-SHA-1 and SCRAM-SHA-256, as `createUser` gives by default.

use std::sync::{Arc, OnceLock};

use bson::{Bson, Document, doc};

use crate::auth::builtin_roles;
use crate::auth::privilege::Privilege;
use crate::auth::scram::{Credentials, Mechanism};

/// A role on a database, e.g. `readWrite@app` or `root@admin`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoleName {
    /// The role name.
    pub role: String,
    /// The database the role is granted on.
    pub db: String,
}

impl RoleName {
    /// A role on a database.
    pub fn new(role: impl Into<String>, db: impl Into<String>) -> RoleName {
        RoleName {
            role: role.into(),
            db: db.into(),
        }
    }

    /// Parses `role@db`, or a bare `role` on `default_db` (the user's database, as
    /// `createUser` interprets a role given as a string).
    pub fn parse(spec: &str, default_db: &str) -> RoleName {
        match spec.split_once('@') {
            Some((role, db)) => RoleName::new(role, db),
            None => RoleName::new(spec, default_db),
        }
    }

    /// `{role, db}`.
    pub fn to_document(&self) -> Document {
        doc! { "role": self.role.clone(), "db": self.db.clone() }
    }
}

impl std::fmt::Display for RoleName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.role, self.db)
    }
}

/// A user as declared: name, authentication database, password and roles.
#[derive(Clone, PartialEq, Eq)]
pub struct UserSpec {
    /// The user name.
    pub name: String,
    /// The authentication database (`admin` unless declared otherwise).
    pub db: String,
    /// The password (kept to derive credentials on first use).
    pub password: String,
    /// The granted roles.
    pub roles: Vec<RoleName>,
}

impl std::fmt::Debug for UserSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserSpec")
            .field("name", &self.name)
            .field("db", &self.db)
            .field("password", &"<redacted>")
            .field("roles", &self.roles)
            .finish()
    }
}

impl UserSpec {
    /// A user in `admin` (or in `db` when `name` is `name@db`). Bare role names are roles on
    /// the user's database; `role@db` names another database.
    pub fn new<I, S>(name: &str, password: &str, roles: I) -> UserSpec
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let (name, db) = match name.split_once('@') {
            Some((n, d)) => (n.to_string(), d.to_string()),
            None => (name.to_string(), "admin".to_string()),
        };
        let roles = roles
            .into_iter()
            .map(|r| RoleName::parse(r.as_ref(), &db))
            .collect();
        UserSpec {
            name,
            db,
            password: password.to_string(),
            roles,
        }
    }

    /// Parses `mongoshift-testd --user NAME[@DB]:PASSWORD[:ROLE,...]`. Without a role list the
    /// user is `root` (the usual administrator of a test deployment); an empty list (`NAME:PW:`)
    /// grants nothing. The password cannot contain `:`.
    pub fn parse_cli(spec: &str) -> Result<UserSpec, UserError> {
        let mut parts = spec.splitn(3, ':');
        let name = parts.next().unwrap_or_default();
        let Some(password) = parts.next() else {
            return Err(UserError::Syntax(spec.to_string()));
        };
        let roles: Vec<&str> = match parts.next() {
            None => vec!["root@admin"],
            Some("") => Vec::new(),
            Some(list) => list.split(',').map(str::trim).collect(),
        };
        if name.is_empty() {
            return Err(UserError::Syntax(spec.to_string()));
        }
        Ok(UserSpec::new(name, password, roles))
    }
}

/// Why a declared user cannot be created; `start()` fails with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserError {
    /// A `--user` value that is not `NAME:PASSWORD[:ROLES]`.
    #[error("invalid user {0:?}: expected NAME[@DB]:PASSWORD[:ROLE[@DB],...]")]
    Syntax(String),
    /// Empty user or database name.
    #[error("invalid user {0:?}: the user and database names must not be empty")]
    EmptyName(String),
    /// Two users with the same name in the same database.
    #[error("user {0} is declared twice")]
    Duplicate(String),
    /// A role that is not built in (or an admin-only role on another database).
    #[error("user {user}: no built-in role {role} (admin-only roles exist only on admin)")]
    UnknownRole {
        /// The user.
        user: String,
        /// The role.
        role: String,
    },
    /// The password is not valid for SCRAM-SHA-256.
    #[error("user {0}: the password cannot be SASLprepped for SCRAM-SHA-256")]
    Password(String),
}

/// A user of a running server.
#[derive(Debug)]
pub struct User {
    /// Name, database, password and roles as declared.
    pub spec: UserSpec,
    /// The `userId` `usersInfo` reports.
    pub user_id: bson::Uuid,
    /// The union of the privileges of the user's roles.
    pub privileges: Vec<Privilege>,
    /// SCRAM credentials per mechanism, derived on first use: PBKDF2 with mongod's iteration
    /// counts takes a noticeable time in debug builds, and most users never log in with both.
    credentials: [OnceLock<Option<Credentials>>; 2],
}

impl User {
    /// `user@db`, as mongod prints user names.
    pub fn full_name(&self) -> String {
        format!("{}@{}", self.spec.name, self.spec.db)
    }

    /// The credentials for a mechanism.
    pub fn credentials(&self, mechanism: Mechanism) -> Option<Credentials> {
        let slot = match mechanism {
            Mechanism::ScramSha1 => &self.credentials[0],
            Mechanism::ScramSha256 => &self.credentials[1],
        };
        slot.get_or_init(|| {
            Credentials::derive(
                mechanism,
                &self.spec.name,
                &self.spec.password,
                mechanism.default_iterations(),
            )
            .ok()
        })
        .clone()
    }

    /// The mechanisms the user can authenticate with (`saslSupportedMechs`, `usersInfo`).
    pub fn mechanisms(&self) -> Vec<Bson> {
        Mechanism::ALL
            .iter()
            .map(|m| Bson::String(m.name().to_string()))
            .collect()
    }

    /// `{user, db}`.
    pub fn name_document(&self) -> Document {
        doc! { "user": self.spec.name.clone(), "db": self.spec.db.clone() }
    }
}

/// The users of one server.
#[derive(Debug, Default)]
pub struct UserDb {
    users: Vec<Arc<User>>,
}

impl UserDb {
    /// Validates the declared users and computes their privileges.
    pub fn new(specs: Vec<UserSpec>) -> Result<UserDb, UserError> {
        let mut users: Vec<Arc<User>> = Vec::new();
        for spec in specs {
            if spec.name.is_empty() || spec.db.is_empty() {
                return Err(UserError::EmptyName(format!("{}@{}", spec.name, spec.db)));
            }
            if users
                .iter()
                .any(|u| u.spec.name == spec.name && u.spec.db == spec.db)
            {
                return Err(UserError::Duplicate(format!("{}@{}", spec.name, spec.db)));
            }
            if stringprep::saslprep(&spec.password).is_err() {
                return Err(UserError::Password(spec.name.clone()));
            }
            let mut privileges = Vec::new();
            for role in &spec.roles {
                if !builtin_roles::add_privileges(&role.role, &role.db, &mut privileges) {
                    return Err(UserError::UnknownRole {
                        user: format!("{}@{}", spec.name, spec.db),
                        role: role.to_string(),
                    });
                }
            }
            users.push(Arc::new(User {
                spec,
                user_id: bson::Uuid::new(),
                privileges,
                credentials: [OnceLock::new(), OnceLock::new()],
            }));
        }
        Ok(UserDb { users })
    }

    /// True when no user is declared (authentication is then off).
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// The user `name` of database `db`.
    pub fn get(&self, name: &str, db: &str) -> Option<&Arc<User>> {
        self.users
            .iter()
            .find(|u| u.spec.name == name && u.spec.db == db)
    }

    /// Every user, in declaration order.
    pub fn all(&self) -> &[Arc<User>] {
        &self.users
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_specs_parse_like_the_help_says() {
        let u = UserSpec::parse_cli("alice:pw").unwrap();
        assert_eq!((u.name.as_str(), u.db.as_str()), ("alice", "admin"));
        assert_eq!(u.roles, vec![RoleName::new("root", "admin")]);
        let u = UserSpec::parse_cli("bob@app:pw:readWrite,read@other").unwrap();
        assert_eq!(u.db, "app");
        assert_eq!(
            u.roles,
            vec![
                RoleName::new("readWrite", "app"),
                RoleName::new("read", "other")
            ]
        );
        assert!(UserSpec::parse_cli("carol:pw:").unwrap().roles.is_empty());
        assert!(UserSpec::parse_cli("nopassword").is_err());
        assert!(UserSpec::parse_cli(":pw").is_err());
    }

    #[test]
    fn unknown_and_misplaced_roles_are_refused() {
        let err = UserDb::new(vec![UserSpec::new("a", "pw", ["root@test"])]).unwrap_err();
        assert!(matches!(err, UserError::UnknownRole { .. }));
        let err = UserDb::new(vec![UserSpec::new("a", "pw", ["nope"])]).unwrap_err();
        assert!(matches!(err, UserError::UnknownRole { .. }));
        let err = UserDb::new(vec![
            UserSpec::new("a", "pw", ["root"]),
            UserSpec::new("a", "pw2", ["read@x"]),
        ])
        .unwrap_err();
        assert!(matches!(err, UserError::Duplicate(_)));
    }
}
