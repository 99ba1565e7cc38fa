//! The JSON Schema of `migration.toml`, generated from the file model's types and doc comments.
//!
//! It is committed as `schemas/migration.schema.json` so editors (taplo, Even Better TOML) can
//! complete and document keys; a test fails when the committed copy is stale.

use schemars::Schema;
use schemars::transform::RecursiveTransform;
use serde_json::Value;

use super::model::MigrationFile;

/// Where the schema is committed, relative to the repository root.
pub const SCHEMA_PATH: &str = "schemas/migration.schema.json";

/// The schema as pretty-printed JSON, ending with a newline.
pub fn schema_json() -> String {
    // TOML has no null, so optional keys are simply optional, never nullable.
    let generator = schemars::generate::SchemaSettings::draft2020_12()
        .with_transform(RecursiveTransform(remove_null))
        .into_generator();
    let schema = generator.into_root_schema_for::<MigrationFile>();
    let mut text = serde_json::to_string_pretty(&schema)
        .unwrap_or_else(|e| format!("{{\"error\": \"cannot serialize the schema: {e}\"}}"));
    text.push('\n');
    text
}

/// Drops `null` from `type` lists and `{"type": "null"}` alternatives.
fn remove_null(schema: &mut Schema) {
    let Some(obj) = schema.as_object_mut() else {
        return;
    };
    if let Some(Value::Array(types)) = obj.get_mut("type") {
        types.retain(|t| t != "null");
        if let [single] = types.as_slice() {
            let single = single.clone();
            obj.insert("type".to_owned(), single);
        }
    }
    for key in ["anyOf", "oneOf"] {
        if let Some(Value::Array(alternatives)) = obj.get_mut(key) {
            alternatives.retain(|a| a.get("type").and_then(Value::as_str) != Some("null"));
            if let [single] = alternatives.as_slice() {
                let single = single.clone();
                obj.remove(key);
                if let Value::Object(fields) = single {
                    for (k, v) in fields {
                        obj.entry(k).or_insert(v);
                    }
                }
            }
        }
    }
}
