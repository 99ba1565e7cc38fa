//! `migration.toml`: the file model, loading with positioned diagnostics, validation into a
//! checked [`Config`], the JSON Schema and the `init` template.
//!
//! Flow: text → [`document`] (syntax, `${env:..}`/`${file:..}`, serde typing with error
//! recovery) → [`validate`] (semantics) → [`Config`]. Every problem found on the way is a
//! [`Diagnostic`] in one [`Report`].

mod diagnostic;
mod document;
mod endpoint;
mod interpolate;
mod load;
pub mod model;
mod reference;
mod resolved;
mod schema;
mod template;
mod units;
mod validate;

pub use diagnostic::{
    DIAGNOSTICS_FORMAT_VERSION, Diagnostic, KeyPath, KeySegment, Report, Severity, SourceFile,
};
pub use endpoint::{ConnectionUri, Endpoint, TlsSettings, UriOrigin};
pub use interpolate::{Environment, ProcessEnvironment};
pub use load::{ConfigError, Loaded, check_text, load, load_with};
pub use reference::{REFERENCE_PATH, reference_markdown};
pub use resolved::{Config, Cutover, Options, ShardCollection};
pub use schema::{SCHEMA_PATH, schema_json};
pub use template::{PLACEHOLDER_DESTINATION, PLACEHOLDER_SOURCE, Template, template};
pub use units::{ByteSize, HumanDuration};
pub use validate::DEFAULT_NAME;

#[cfg(test)]
mod tests;
