//! Semantic checks: the file model becomes a [`Config`], or every problem is reported.
//!
//! Everything here is offline: names, ranges, which keys go together, connection-string syntax,
//! whether referenced files and environment variables exist. What needs the clusters is
//! `plan`'s job.

use super::units::HumanDuration;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use mongodb::options::{ConnectionString, HostInfo};

use super::diagnostic::{Diagnostic, KeyPath};
use super::document::ParsedFile;
use super::endpoint::{ConnectionUri, Endpoint, TlsSettings, UriOrigin};
use super::interpolate::{Environment, read_secret_file};
use super::model::{
    ApprovalPolicy, CopySpec, EndpointSpec, FORMAT_VERSION, NotifyCommand, ShardKeyKind,
    WriteConcernSpec, WriteConcernW,
};
use super::resolved::{Config, Cutover, DEFAULT_RETRY_FOR, Options, ShardCollection};
use crate::cluster::driver_message;
use crate::namespace::{
    Namespace, NamespaceFilter, NamespaceMapping, NamespacePattern, RenameRule,
};
use crate::redact::Redactor;

/// The default migration name.
pub const DEFAULT_NAME: &str = "migration";

/// The largest batch: inserts are single commands, whose body the server takes up to 16 MiB
/// (`maxBsonObjectSize`, plus 16 KiB of command fields).
const MAX_BATCH_BYTES: u64 = 16 * 1024 * 1024;

/// Collects problems, staying silent about keys already reported.
struct Checker<'p, 'a> {
    parsed: &'p ParsedFile<'a>,
    diagnostics: Vec<Diagnostic>,
}

impl Checker<'_, '_> {
    fn error(&mut self, code: &'static str, path: KeyPath, message: String, help: &str) {
        if self.parsed.is_tainted(&path) {
            return;
        }
        let span = self.parsed.value_span(&path);
        self.diagnostics.push(
            Diagnostic::error(code, message)
                .at(path, Some(span))
                .help(help),
        );
    }

    fn warning(&mut self, code: &'static str, path: KeyPath, message: String, help: &str) {
        if self.parsed.is_tainted(&path) {
            return;
        }
        let span = self.parsed.value_span(&path);
        self.diagnostics.push(
            Diagnostic::warning(code, message)
                .at(path, Some(span))
                .help(help),
        );
    }

    /// A required key or table that is absent: positioned at its parent, or the file's start.
    fn missing(&mut self, path: KeyPath, message: String, help: &str) {
        if self.parsed.is_tainted(&path) {
            return;
        }
        let span = self.parsed.key_span(&path);
        let label = format!("missing `{path}`");
        self.diagnostics.push(
            Diagnostic::error("config.missing_key", message)
                .at(path, Some(span))
                .label(label)
                .help(help),
        );
    }
}

/// Checks the parsed file. Returns the config when there is no error (warnings may remain).
pub(crate) fn check(
    parsed: &ParsedFile<'_>,
    path: &Path,
    env: &dyn Environment,
) -> (Option<Config>, Vec<Diagnostic>) {
    let base_dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut c = Checker {
        parsed,
        diagnostics: Vec::new(),
    };
    let model = &parsed.model;

    match model.version {
        None => c.missing(
            KeyPath::root("version"),
            "`version` is missing".to_owned(),
            "add `version = 1` at the top of the file",
        ),
        Some(FORMAT_VERSION) => {}
        Some(v) => c.error(
            "config.unsupported_version",
            KeyPath::root("version"),
            format!("version {v} is not supported; this mongoshift reads version {FORMAT_VERSION}"),
            if v > FORMAT_VERSION {
                "upgrade mongoshift to read this file"
            } else {
                "set `version = 1`"
            },
        ),
    }

    let name = model
        .name
        .clone()
        .unwrap_or_else(|| DEFAULT_NAME.to_owned());
    if name.is_empty()
        || name.len() > 64
        || !name
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '-' | '_' | '.'))
    {
        c.error(
            "config.invalid_value",
            KeyPath::root("name"),
            format!("invalid migration name {name:?}"),
            "use 1 to 64 letters, digits, `-`, `_` or `.`",
        );
    }

    let source = check_endpoint(&mut c, "source", model.source.as_ref(), env, base_dir);
    let destination = check_endpoint(
        &mut c,
        "destination",
        model.destination.as_ref(),
        env,
        base_dir,
    );
    if let (Some(s), Some(d)) = (&source, &destination)
        && same_hosts(&s.uri, &d.uri)
    {
        c.error(
            "config.same_cluster",
            KeyPath::root("destination"),
            "the destination names the same hosts as the source".to_owned(),
            "a migration copies between two different clusters",
        );
    }

    let options = check_options(&mut c);
    let cutover = check_cutover(&mut c, base_dir);
    if let Some(cutover) = &cutover
        && cutover.approval == ApprovalPolicy::Auto
        && !cutover.block_source_writes
    {
        c.warning(
            "config.auto_cutover_without_write_block",
            KeyPath::root("cutover").key("approval"),
            "automatic cutover without `block_source_writes`: nothing stops application writes, \
             and writes made after the cutover's final position would not be migrated"
                .to_owned(),
            "set `block_source_writes = true` (MongoDB 6.0+), or make sure applications stop writing before the migration becomes ready",
        );
    }

    let has_errors = c
        .diagnostics
        .iter()
        .any(|d| d.severity == super::diagnostic::Severity::Error)
        || !parsed.tainted.is_empty();
    let config = match (source, destination, options, cutover) {
        (Some(source), Some(destination), Some(options), Some(cutover)) if !has_errors => {
            Some(Config {
                path: path.to_path_buf(),
                name,
                source,
                destination,
                options,
                cutover,
            })
        }
        _ => None,
    };
    (config, c.diagnostics)
}

fn check_endpoint(
    c: &mut Checker<'_, '_>,
    table: &str,
    spec: Option<&EndpointSpec>,
    env: &dyn Environment,
    base_dir: &Path,
) -> Option<Endpoint> {
    let at = KeyPath::root(table);
    let Some(spec) = spec else {
        c.missing(
            at,
            format!("the `[{table}]` table is missing"),
            &format!("add a `[{table}]` table with one of `uri`, `uri_env` or `uri_file`"),
        );
        return None;
    };
    let given: Vec<&str> = [
        ("uri", spec.uri.is_some()),
        ("uri_env", spec.uri_env.is_some()),
        ("uri_file", spec.uri_file.is_some()),
    ]
    .into_iter()
    .filter_map(|(k, present)| present.then_some(k))
    .collect();
    let help = "give exactly one of `uri`, `uri_env` or `uri_file`";
    let (raw, origin, key) = match given.as_slice() {
        [] => {
            // A key removed by an earlier error may have been the connection string.
            if ["uri", "uri_env", "uri_file"]
                .iter()
                .any(|k| c.parsed.is_tainted(&at.key(k)))
            {
                return None;
            }
            c.missing(
                at.clone(),
                format!("`[{table}]` has no connection string"),
                help,
            );
            return None;
        }
        [_, second, ..] => {
            c.error(
                "config.conflicting_keys",
                at.key(second),
                format!("`[{table}]` gives more than one of `uri`, `uri_env` and `uri_file`"),
                help,
            );
            return None;
        }
        [one] => {
            let key = at.key(one);
            match *one {
                "uri" => (spec.uri.clone(), UriOrigin::Inline, key),
                "uri_env" => {
                    let var = spec.uri_env.clone().unwrap_or_default();
                    let value = env.var(&var).filter(|v| !v.trim().is_empty());
                    if value.is_none() {
                        c.error(
                            "config.unset_variable",
                            key.clone(),
                            format!("environment variable `{var}` is not set or empty"),
                            "export it with the connection string before running mongoshift",
                        );
                    }
                    (value, UriOrigin::Env { variable: var }, key)
                }
                _ => {
                    let file = spec.uri_file.clone().unwrap_or_default();
                    let text = match read_secret_file(&file.to_string_lossy(), base_dir) {
                        Ok(t) => Some(t.trim().to_owned()),
                        Err(e) => {
                            c.error(
                                "config.unreadable_file",
                                key.clone(),
                                e.to_string(),
                                e.help(),
                            );
                            None
                        }
                    };
                    (
                        text,
                        UriOrigin::File {
                            path: base_dir.join(&file),
                        },
                        key,
                    )
                }
            }
        }
    };
    let raw = raw?;
    if c.parsed.is_tainted(&key) {
        return None;
    }
    if let Err(e) = ConnectionString::parse(&raw) {
        let message = Redactor::for_uris([raw.as_str()]).redact(&driver_message(&e));
        c.error(
            "config.invalid_uri",
            key,
            format!("invalid connection string: {message}"),
            "write mongodb://[user:password@]host[:port][,host...]/[?options] or mongodb+srv://...",
        );
        return None;
    }
    let uri = ConnectionUri::new(raw);
    if origin == UriOrigin::Inline && uri.has_password() && !c.parsed.interpolated.contains(&key) {
        c.warning(
            "config.literal_password",
            key,
            "the connection string has a password written in the file".to_owned(),
            "write `${env:NAME}` or `${file:PATH}` in its place, or use `uri_env` / `uri_file`",
        );
    }

    let mut tls = TlsSettings {
        allow_invalid_certificates: spec.tls_allow_invalid_certificates,
        ..TlsSettings::default()
    };
    for (name, value, slot) in [
        ("tls_ca_file", &spec.tls_ca_file, &mut tls.ca_file),
        (
            "tls_certificate_key_file",
            &spec.tls_certificate_key_file,
            &mut tls.certificate_key_file,
        ),
    ] {
        if let Some(file) = value {
            let full = base_dir.join(file);
            if full.is_file() {
                *slot = Some(full);
            } else {
                c.error(
                    "config.file_not_found",
                    at.key(name),
                    format!("`{}` does not exist or is not a file", file.display()),
                    "paths are relative to migration.toml",
                );
            }
        }
    }
    if spec.tls_allow_invalid_certificates {
        c.warning(
            "config.tls_insecure",
            at.key("tls_allow_invalid_certificates"),
            "TLS certificates of this cluster are not verified".to_owned(),
            "only use this with test clusters; give `tls_ca_file` instead",
        );
    }
    Some(Endpoint { uri, origin, tls })
}

/// True when both strings name the same host list (offline; `plan` compares cluster ids).
fn same_hosts(a: &ConnectionUri, b: &ConnectionUri) -> bool {
    let hosts = |u: &ConnectionUri| -> Option<BTreeSet<String>> {
        let cs = ConnectionString::parse(u.expose_secret()).ok()?;
        Some(match cs.host_info {
            HostInfo::HostIdentifiers(hosts) => hosts
                .iter()
                .map(|h| h.to_string().to_ascii_lowercase())
                .collect(),
            HostInfo::DnsRecord(name) => BTreeSet::from([name.to_ascii_lowercase()]),
            _ => return None,
        })
    };
    matches!((hosts(a), hosts(b)), (Some(x), Some(y)) if x == y)
}

fn check_options(c: &mut Checker<'_, '_>) -> Option<Options> {
    let spec = c.parsed.model.options.clone();
    let at = KeyPath::root("options");
    let mut ok = true;

    let mut patterns = |c: &mut Checker<'_, '_>, key: &str, list: &[String]| {
        let mut out = Vec::new();
        for (i, text) in list.iter().enumerate() {
            match NamespacePattern::parse(text) {
                Ok(p) => out.push(p),
                Err(e) => {
                    ok = false;
                    c.error(
                        "config.invalid_pattern",
                        at.key(key).index(i),
                        e.to_string(),
                        "write `db`, `db.collection` or a glob such as `shop.*` or `*.orders`",
                    );
                }
            }
        }
        out
    };
    let include = patterns(c, "include", &spec.include);
    let exclude = patterns(c, "exclude", &spec.exclude);

    let mut rules = Vec::new();
    let mut targets: BTreeMap<String, String> = BTreeMap::new();
    for (from, to) in &spec.rename {
        let key = at.key("rename").key(from);
        match RenameRule::parse(from, to) {
            Ok(rule) => {
                if let RenameRule::Namespace { to: target, .. } = &rule
                    && let Some(other) = targets.insert(target.to_string(), from.clone())
                {
                    ok = false;
                    c.error(
                        "config.rename_collision",
                        key.clone(),
                        format!("`{from}` and `{other}` are both renamed to `{target}`"),
                        "every destination namespace must come from one source namespace",
                    );
                }
                rules.push(rule);
            }
            Err(e) => {
                ok = false;
                c.error(
                    "config.invalid_rename",
                    key,
                    e.to_string(),
                    "rename a database to a database (`\"shop\" = \"shop_v2\"`) or a namespace to a namespace (`\"shop.orders\" = \"sales.orders\"`)",
                );
            }
        }
    }

    ok &= check_copy(c, &spec.copy);

    // `w: 0` is an unacknowledged write: the server replies before (or without) writing, so
    // neither a refused document nor a lost write could be seen, and a checkpoint could run
    // ahead of the data.
    let unacknowledged = match &spec.write_concern {
        WriteConcernSpec::Nodes(0) => Some(at.key("write_concern")),
        WriteConcernSpec::Full(t) if t.w == WriteConcernW::Nodes(0) => {
            Some(at.key("write_concern").key("w"))
        }
        _ => None,
    };
    if let Some(key) = unacknowledged {
        ok = false;
        c.error(
            "config.out_of_range",
            key,
            "write_concern w is 0 (unacknowledged writes)".to_owned(),
            "use \"majority\" or a number of nodes of at least 1: every destination write must be acknowledged",
        );
    }

    let mut sharding = Vec::new();
    let mut seen = BTreeSet::new();
    for (i, entry) in spec.sharding.collections.iter().enumerate() {
        let entry_at = at.key("sharding").key("collections").index(i);
        let namespace = match Namespace::parse(&entry.namespace)
            .and_then(|ns| ns.validate_for_creation().map(|()| ns))
        {
            Ok(ns) => ns,
            Err(e) => {
                ok = false;
                c.error(
                    "config.invalid_namespace",
                    entry_at.key("namespace"),
                    e.to_string(),
                    "write the destination namespace as `database.collection`",
                );
                continue;
            }
        };
        if !seen.insert(namespace.clone()) {
            ok = false;
            c.error(
                "config.duplicate_sharding_entry",
                entry_at.key("namespace"),
                format!("`{namespace}` is listed more than once"),
                "keep one entry per collection",
            );
        }
        let hashed = entry
            .key
            .0
            .iter()
            .filter(|(_, k)| *k == ShardKeyKind::Hashed)
            .count();
        let key_problem = if entry.key.0.is_empty() {
            Some("the shard key has no fields")
        } else if hashed > 1 {
            Some("a shard key can have at most one hashed field")
        } else if hashed == 1 && entry.unique {
            Some("a hashed shard key cannot be unique")
        } else if entry
            .key
            .0
            .iter()
            .any(|(f, _)| f.is_empty() || f.starts_with('$'))
        {
            Some("shard key field names cannot be empty or start with `$`")
        } else {
            None
        };
        if let Some(problem) = key_problem {
            ok = false;
            c.error(
                "config.invalid_shard_key",
                entry_at.key("key"),
                problem.to_owned(),
                "write the key as a table, e.g. `{ customer_id = \"hashed\" }` or `{ region = 1, _id = 1 }`",
            );
            continue;
        }
        sharding.push(ShardCollection {
            namespace,
            key: entry.key.clone(),
            unique: entry.unique,
            create_supporting_indexes: entry.create_supporting_indexes,
        });
    }

    ok.then(|| Options {
        filter: NamespaceFilter::new(include, exclude),
        mapping: NamespaceMapping::new(rules),
        clear_destination: spec.clear_destination,
        indexes: spec.indexes,
        verify: spec.verify,
        ddl: spec.ddl,
        update_mode: spec.update_mode,
        write_concern: spec.write_concern.clone(),
        copy: spec.copy.clone(),
        retry_for: spec.retry_for.map_or(DEFAULT_RETRY_FOR, HumanDuration::get),
        sharding,
        shard_like_source: spec.sharding.shard_like_source,
    })
}

fn check_copy(c: &mut Checker<'_, '_>, copy: &CopySpec) -> bool {
    let at = KeyPath::root("options").key("copy");
    let before = c.diagnostics.len();
    if !(1..=256).contains(&copy.parallel_collections) {
        c.error(
            "config.out_of_range",
            at.key("parallel_collections"),
            format!("parallel_collections is {}", copy.parallel_collections),
            "use a value from 1 to 256",
        );
    }
    if !(1..=1024).contains(&copy.parallel_partitions) {
        c.error(
            "config.out_of_range",
            at.key("parallel_partitions"),
            format!("parallel_partitions is {}", copy.parallel_partitions),
            "use a value from 1 to 1024",
        );
    }
    if copy.partition_size.bytes() < 1024 * 1024 {
        c.error(
            "config.out_of_range",
            at.key("partition_size"),
            format!("partition_size is {}", copy.partition_size),
            "use at least 1MiB",
        );
    }
    if !(16 * 1024..=MAX_BATCH_BYTES).contains(&copy.batch_size.bytes()) {
        c.error(
            "config.out_of_range",
            at.key("batch_size"),
            format!("batch_size is {}", copy.batch_size),
            "use a size from 16KiB to 16MiB (the server's command limit)",
        );
    }
    c.diagnostics.len() == before
}

fn check_cutover(c: &mut Checker<'_, '_>, base_dir: &Path) -> Option<Cutover> {
    let spec = c.parsed.model.cutover.clone();
    let at = KeyPath::root("cutover");
    let before = c.diagnostics.len();
    if spec.max_lag.get().is_zero() {
        c.error(
            "config.out_of_range",
            at.key("max_lag"),
            "max_lag is zero: the destination could never be ready".to_owned(),
            "use a few seconds, e.g. \"5s\"",
        );
    }
    if spec.window.get().is_zero() {
        c.error(
            "config.out_of_range",
            at.key("window"),
            "window is zero: the cutover window would end as it starts".to_owned(),
            "use a duration such as \"120h\"",
        );
    }
    if spec.approval_file.as_os_str().is_empty() {
        c.error(
            "config.invalid_value",
            at.key("approval_file"),
            "approval_file is empty".to_owned(),
            "name a file, e.g. \"cutover.approved\"",
        );
    }
    match &spec.notify_command {
        Some(NotifyCommand::Shell(s)) if s.trim().is_empty() => c.error(
            "config.invalid_value",
            at.key("notify_command"),
            "notify_command is empty".to_owned(),
            "give a command, or remove the key",
        ),
        Some(NotifyCommand::Argv(v)) if v.first().is_none_or(|p| p.trim().is_empty()) => c.error(
            "config.invalid_value",
            at.key("notify_command"),
            "notify_command has no program".to_owned(),
            "write [\"program\", \"arg\", ...]",
        ),
        _ => {}
    }
    (c.diagnostics.len() == before).then(|| Cutover {
        approval: spec.approval,
        approval_file: resolve(base_dir, &spec.approval_file),
        max_lag: spec.max_lag.get(),
        window: spec.window.get(),
        on_window_expiry: spec.on_window_expiry,
        block_source_writes: spec.block_source_writes,
        notify_command: spec.notify_command,
    })
}

fn resolve(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() || base == Path::new(".") {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}
