//! Extended JSON (canonical and relaxed) to BSON, for the spec test files.
//!
//! The workspace's `bson` is built without its `serde_json-1` feature (enabling it for tests
//! only would rebuild the driver), so the runner converts the handful of `$`-wrappers the spec
//! files use itself. Test files are parsed into [`Json`], which keeps the key order of objects
//! (`serde_json::Value` sorts keys, and command documents need their first key first).

use std::fmt;

use mongodb::bson::{
    Binary, Bson, DateTime, Decimal128, Document, JavaScriptCodeWithScope, Regex, Timestamp,
    oid::ObjectId, spec::BinarySubtype,
};
use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

/// A JSON value whose objects keep their key order.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Json {
    #[default]
    Null,
    Bool(bool),
    Number(serde_json::Number),
    String(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

/// The value of a missing key (like `serde_json::Value`'s indexing).
static NULL: Json = Json::Null;

impl Json {
    /// Parses a JSON text.
    pub fn parse(text: &str) -> Result<Json, String> {
        serde_json::from_str(text).map_err(|e| e.to_string())
    }

    /// The value of `key` in an object.
    pub fn get(&self, key: &str) -> Option<&Json> {
        match self {
            Json::Object(entries) => entries.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// A string value.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Json::String(s) => Some(s),
            _ => None,
        }
    }

    /// A boolean value.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Json::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// An integer value.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Json::Number(n) => n.as_i64(),
            _ => None,
        }
    }

    /// A non-negative integer value.
    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Json::Number(n) => n.as_u64(),
            _ => None,
        }
    }

    /// An array.
    pub fn as_array(&self) -> Option<&Vec<Json>> {
        match self {
            Json::Array(a) => Some(a),
            _ => None,
        }
    }

    /// An object's entries, in order.
    pub fn as_object(&self) -> Option<&Vec<(String, Json)>> {
        match self {
            Json::Object(o) => Some(o),
            _ => None,
        }
    }

    /// The first entry of an object (`{kind: spec}` shapes).
    pub fn first_entry(&self) -> Option<(&str, &Json)> {
        self.as_object()?.first().map(|(k, v)| (k.as_str(), v))
    }
}

impl std::ops::Index<&str> for Json {
    type Output = Json;

    fn index(&self, key: &str) -> &Json {
        self.get(key).unwrap_or(&NULL)
    }
}

impl fmt::Display for Json {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Json::Null => write!(f, "null"),
            Json::Bool(b) => write!(f, "{b}"),
            Json::Number(n) => write!(f, "{n}"),
            Json::String(s) => write!(f, "{s:?}"),
            Json::Array(a) => {
                write!(f, "[")?;
                for (i, v) in a.iter().enumerate() {
                    if i > 0 {
                        write!(f, ",")?;
                    }
                    write!(f, "{v}")?;
                }
                write!(f, "]")
            }
            Json::Object(o) => {
                write!(f, "{{")?;
                for (i, (k, v)) in o.iter().enumerate() {
                    if i > 0 {
                        write!(f, ",")?;
                    }
                    write!(f, "{k:?}:{v}")?;
                }
                write!(f, "}}")
            }
        }
    }
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Json, D::Error> {
        struct JsonVisitor;

        impl<'de> Visitor<'de> for JsonVisitor {
            type Value = Json;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "any JSON value")
            }
            fn visit_unit<E>(self) -> Result<Json, E> {
                Ok(Json::Null)
            }
            fn visit_bool<E>(self, v: bool) -> Result<Json, E> {
                Ok(Json::Bool(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Json, E> {
                Ok(Json::Number(v.into()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Json, E> {
                Ok(Json::Number(v.into()))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Json, E> {
                serde_json::Number::from_f64(v)
                    .map(Json::Number)
                    .ok_or_else(|| E::custom("non-finite number"))
            }
            fn visit_str<E>(self, v: &str) -> Result<Json, E> {
                Ok(Json::String(v.to_string()))
            }
            fn visit_string<E>(self, v: String) -> Result<Json, E> {
                Ok(Json::String(v))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
                let mut out = Vec::new();
                while let Some(v) = seq.next_element()? {
                    out.push(v);
                }
                Ok(Json::Array(out))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, Json>()? {
                    out.push((k, v));
                }
                Ok(Json::Object(out))
            }
        }

        deserializer.deserialize_any(JsonVisitor)
    }
}

/// Old name kept for the call sites.
pub type Value = Json;

/// Converts a JSON value to BSON, interpreting extended-JSON wrappers.
pub fn to_bson(value: &Json) -> Result<Bson, String> {
    Ok(match value {
        Json::Null => Bson::Null,
        Json::Bool(b) => Bson::Boolean(*b),
        Json::Number(n) => {
            if let Some(i) = n.as_i64() {
                match i32::try_from(i) {
                    Ok(i) => Bson::Int32(i),
                    Err(_) => Bson::Int64(i),
                }
            } else {
                Bson::Double(n.as_f64().ok_or("bad number")?)
            }
        }
        Json::String(s) => Bson::String(s.clone()),
        Json::Array(items) => Bson::Array(items.iter().map(to_bson).collect::<Result<_, _>>()?),
        Json::Object(map) => {
            if let Some(wrapped) = wrapper(map)? {
                return Ok(wrapped);
            }
            let mut doc = Document::new();
            for (k, v) in map {
                doc.insert(k.clone(), to_bson(v)?);
            }
            Bson::Document(doc)
        }
    })
}

/// Converts a JSON object to a document.
pub fn to_document(value: &Json) -> Result<Document, String> {
    match to_bson(value)? {
        Bson::Document(d) => Ok(d),
        other => Err(format!("expected a document, got {other}")),
    }
}

fn str_of<'a>(v: &'a Json, what: &str) -> Result<&'a str, String> {
    v.as_str().ok_or_else(|| format!("{what} must be a string"))
}

fn wrapper(map: &[(String, Json)]) -> Result<Option<Bson>, String> {
    let (key, v) = match map.first() {
        Some((k, v)) if k.starts_with('$') => (k.as_str(), v),
        _ => return Ok(None),
    };
    let single = map.len() == 1;
    Ok(Some(match key {
        "$oid" if single => {
            Bson::ObjectId(ObjectId::parse_str(str_of(v, "$oid")?).map_err(|e| e.to_string())?)
        }
        "$numberInt" if single => Bson::Int32(
            str_of(v, "$numberInt")?
                .parse()
                .map_err(|e| format!("{e}"))?,
        ),
        "$numberLong" if single => Bson::Int64(
            str_of(v, "$numberLong")?
                .parse()
                .map_err(|e| format!("{e}"))?,
        ),
        "$numberDouble" if single => Bson::Double(match str_of(v, "$numberDouble")? {
            "Infinity" => f64::INFINITY,
            "-Infinity" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            s => s.parse().map_err(|e| format!("{e}"))?,
        }),
        "$numberDecimal" if single => Bson::Decimal128(
            str_of(v, "$numberDecimal")?
                .parse::<Decimal128>()
                .map_err(|e| format!("{e}"))?,
        ),
        "$date" if single => match v {
            Json::Object(_) => match v.get("$numberLong") {
                Some(n) => Bson::DateTime(DateTime::from_millis(
                    str_of(n, "$date.$numberLong")?
                        .parse()
                        .map_err(|e| format!("{e}"))?,
                )),
                None => return Err("bad $date".into()),
            },
            Value::String(s) => {
                Bson::DateTime(DateTime::parse_rfc3339_str(s).map_err(|e| e.to_string())?)
            }
            Value::Number(n) => {
                Bson::DateTime(DateTime::from_millis(n.as_i64().ok_or("bad $date")?))
            }
            _ => return Err("bad $date".into()),
        },
        "$binary" if single => {
            let base64 = str_of(&v["base64"], "$binary.base64")?;
            let subtype = u8::from_str_radix(str_of(&v["subType"], "$binary.subType")?, 16)
                .map_err(|e| e.to_string())?;
            Bson::Binary(Binary {
                subtype: BinarySubtype::from(subtype),
                bytes: decode_base64(base64)?,
            })
        }
        "$uuid" if single => {
            let hex: String = str_of(v, "$uuid")?.chars().filter(|c| *c != '-').collect();
            Bson::Binary(Binary {
                subtype: BinarySubtype::Uuid,
                bytes: decode_hex(&hex)?,
            })
        }
        "$timestamp" if single => Bson::Timestamp(Timestamp {
            time: v["t"].as_u64().ok_or("bad $timestamp.t")? as u32,
            increment: v["i"].as_u64().ok_or("bad $timestamp.i")? as u32,
        }),
        "$regularExpression" if single => Bson::RegularExpression(Regex {
            pattern: str_of(&v["pattern"], "pattern")?
                .try_into()
                .map_err(|e| format!("{e}"))?,
            options: str_of(&v["options"], "options")?
                .try_into()
                .map_err(|e| format!("{e}"))?,
        }),
        "$minKey" if single => Bson::MinKey,
        "$maxKey" if single => Bson::MaxKey,
        "$undefined" if single => Bson::Undefined,
        "$symbol" if single => Bson::Symbol(str_of(v, "$symbol")?.to_string()),
        "$code" if single => Bson::JavaScriptCode(str_of(v, "$code")?.to_string()),
        "$code" if map.len() == 2 && map.iter().any(|(k, _)| k == "$scope") => {
            let scope = map
                .iter()
                .find(|(k, _)| k == "$scope")
                .map(|(_, v)| v)
                .ok_or("$scope")?;
            Bson::JavaScriptCodeWithScope(JavaScriptCodeWithScope {
                code: str_of(v, "$code")?.to_string(),
                scope: to_document(scope)?,
            })
        }
        _ => return Ok(None),
    }))
}

fn decode_hex(s: &str) -> Result<Vec<u8>, String> {
    (0..s.len())
        .step_by(2)
        .map(|i| {
            u8::from_str_radix(s.get(i..i + 2).ok_or("odd hex")?, 16).map_err(|e| e.to_string())
        })
        .collect()
}

fn decode_base64(s: &str) -> Result<Vec<u8>, String> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let mut buffer = 0u32;
    let mut bits = 0;
    for c in s.bytes() {
        if c == b'=' {
            break;
        }
        let v = ALPHABET.iter().position(|&a| a == c).ok_or("bad base64")? as u32;
        buffer = (buffer << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
            buffer &= (1 << bits) - 1;
        }
    }
    Ok(out)
}
