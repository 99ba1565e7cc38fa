//! The commented `migration.toml` that `mongoshift init` writes.
//!
//! Every key is present or shown commented out with its default, so the file doubles as a
//! reference. Tests check that the template validates as written and with every commented key
//! uncommented, so the comments cannot drift from the format.

use std::fmt::Write;

use crate::redact::uri_password;

/// Placeholder connection strings for a fresh file (valid, never contacted by `validate`).
pub const PLACEHOLDER_SOURCE: &str = "mongodb://source.example.net:27017/?replicaSet=rs0";
/// See [`PLACEHOLDER_SOURCE`].
pub const PLACEHOLDER_DESTINATION: &str = "mongodb://destination.example.net:27017/?replicaSet=rs1";

/// A generated file and what the user should know about it.
#[derive(Debug, Clone)]
pub struct Template {
    /// The file's text.
    pub text: String,
    /// Things to tell the user (e.g. which environment variable now holds a password).
    pub notes: Vec<String>,
}

/// Builds the file. A password in a given URI is replaced by `${env:MONGOSHIFT_<SIDE>_PASSWORD}`
/// so that it is never written to disk.
pub fn template(source: Option<&str>, destination: Option<&str>) -> Template {
    let mut notes = Vec::new();
    let mut endpoint = |side: &str, uri: Option<&str>, placeholder: &str| -> String {
        let Some(uri) = uri else {
            notes.push(format!(
                "[{side}] uses a placeholder connection string: replace it with your cluster's"
            ));
            return placeholder.to_owned();
        };
        match uri_password(uri).and_then(|_| split_password(uri)) {
            Some((before, after)) => {
                let var = format!("MONGOSHIFT_{}_PASSWORD", side.to_ascii_uppercase());
                notes.push(format!(
                    "the {side} password was replaced by ${{env:{var}}}: export {var} (percent-encoded, as in a URI) before running mongoshift"
                ));
                format!("{before}${{env:{var}}}{after}")
            }
            None => uri.to_owned(),
        }
    };
    let source = endpoint("source", source, PLACEHOLDER_SOURCE);
    let destination = endpoint("destination", destination, PLACEHOLDER_DESTINATION);
    let text = TEMPLATE
        .replace("{source}", &toml_string(&source))
        .replace("{destination}", &toml_string(&destination));
    Template { text, notes }
}

/// Splits a URI around its password: `(text before the password, text after it)`.
fn split_password(uri: &str) -> Option<(&str, &str)> {
    let scheme_end = uri.find("://")? + 3;
    let rest = &uri[scheme_end..];
    let at = rest.rfind('@')?;
    let colon = rest[..at].find(':')?;
    Some((&uri[..scheme_end + colon + 1], &uri[scheme_end + at..]))
}

/// A TOML basic string.
fn toml_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

const TEMPLATE: &str = r#"# mongoshift migration. Check it offline with `mongoshift validate`,
# review what it will do with `mongoshift plan`, run it with `mongoshift apply`.
# Reference: `mongoshift schema` (JSON Schema with a description of every key).
version = 1
name = "migration"

[source]
# Exactly one of `uri`, `uri_env` (a variable holding the URI) or `uri_file`.
# Keep passwords out of this file: `${env:NAME}` and `${file:PATH}` are substituted.
uri = {source}
# tls_ca_file = "certs/source-ca.pem"
# tls_certificate_key_file = "certs/client.pem"
# tls_allow_invalid_certificates = false

[destination]
uri = {destination}
# tls_ca_file = "certs/destination-ca.pem"

[options]
# Globs on "database.collection"; empty means every user namespace.
include = []
exclude = []
# Renames: a database ("shop" = "shop_v2") or a namespace ("shop.orders" = "sales.orders").
# rename = { "shop" = "shop_v2" }
# Drop destination namespaces that conflict with migrated ones (plan lists them).
clear_destination = false
# When to build indexes: "before_copy", "after_copy" or "skip".
indexes = "after_copy"
# What the cutover verifies: "full", "counts" or "none".
verify = "full"
# Source DDL during the migration: "replicate" or "fail".
ddl = "replicate"
# How updates are applied: "full_document" (converges) or "delta".
update_mode = "full_document"
# "majority", a number of nodes, or { w = "majority", journal = true, timeout = "30s" }.
write_concern = "majority"

[options.copy]
parallel_collections = 4
parallel_partitions = 8
partition_size = "64MiB"
batch_size = "2MiB"

# On a sharded destination, collections sharded on the source are sharded alike before
# copying; `false` leaves those without an entry below unsharded:
# [options.sharding]
# shard_like_source = true
# Shard destination collections before copying (destination names, after `rename`):
# [[options.sharding.collections]]
# namespace = "shop.orders"
# key = { customer_id = "hashed" }
# unique = false
# create_supporting_indexes = true

[cutover]
# "file" (the approval file appears; `mongoshift cutover` writes it), "flag" (apply
# --approve-cutover) or "auto".
approval = "file"
approval_file = "cutover.approved"
# Ready for cutover once the destination lags by less than this.
max_lag = "5s"
# How long to keep syncing once ready; `mongoshift extend` adds time.
window = "120h"
# At the end of the window: "stop" (exit 6) or "keep_syncing".
on_window_expiry = "stop"
# Block source writes during the cutover (MongoDB 6.0+), released on abort or failure.
block_source_writes = false
# Run on ready, window_expiring, committed and failed (env: MONGOSHIFT_EVENT, MONGOSHIFT_MIGRATION).
# notify_command = "curl -fsS -X POST https://hooks.example.net/mongoshift -d \"$MONGOSHIFT_EVENT\""
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_become_env_substitutions() {
        let t = template(
            Some("mongodb://alice:s3cr%40t@db1:27017/?replicaSet=rs0"),
            None,
        );
        assert!(!t.text.contains("s3cr"), "{}", t.text);
        assert!(
            t.text.contains("uri = \"mongodb://alice:${env:MONGOSHIFT_SOURCE_PASSWORD}@db1:27017/?replicaSet=rs0\""),
            "{}",
            t.text
        );
        assert_eq!(t.notes.len(), 2, "{:?}", t.notes);
    }

    #[test]
    fn strings_are_escaped() {
        assert_eq!(toml_string("a\"b\\c"), "\"a\\\"b\\\\c\"");
    }
}
