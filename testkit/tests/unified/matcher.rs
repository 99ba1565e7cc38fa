//! The unified format's matching rules ("Evaluating Matches").
//!
//! Root-level documents may have extra fields; nested documents may not. Numbers compare by
//! value across int32/int64/double. Special operators: `$$exists`, `$$type`,
//! `$$unsetOrMatches`, `$$matchesEntity`, `$$matchesHexBytes`, `$$sessionLsid`, `$$lte`,
//! `$$matchAsDocument`, `$$matchAsRoot`.

use std::collections::HashMap;

use mongodb::bson::{Bson, Document};

/// Entities a match may refer to (`$$matchesEntity`, `$$sessionLsid`).
pub type EntityValues = HashMap<String, Bson>;

fn as_f64(b: &Bson) -> Option<f64> {
    match b {
        Bson::Int32(n) => Some(f64::from(*n)),
        Bson::Int64(n) => Some(*n as f64),
        Bson::Double(d) => Some(*d),
        _ => None,
    }
}

/// The unified format's type names of a value.
fn type_names(b: &Bson) -> &'static [&'static str] {
    match b {
        Bson::Double(_) => &["double", "number"],
        Bson::String(_) => &["string"],
        Bson::Document(_) => &["object"],
        Bson::Array(_) => &["array"],
        Bson::Binary(_) => &["binData"],
        Bson::Undefined => &["undefined"],
        Bson::ObjectId(_) => &["objectId"],
        Bson::Boolean(_) => &["bool"],
        Bson::DateTime(_) => &["date"],
        Bson::Null => &["null"],
        Bson::RegularExpression(_) => &["regex"],
        Bson::DbPointer(_) => &["dbPointer"],
        Bson::JavaScriptCode(_) => &["javascript"],
        Bson::Symbol(_) => &["symbol"],
        Bson::JavaScriptCodeWithScope(_) => &["javascriptWithScope"],
        Bson::Int32(_) => &["int", "number"],
        Bson::Timestamp(_) => &["timestamp"],
        Bson::Int64(_) => &["long", "number"],
        Bson::Decimal128(_) => &["decimal", "number"],
        Bson::MaxKey => &["maxKey"],
        Bson::MinKey => &["minKey"],
    }
}

/// Matches `actual` against `expected` with root-level rules.
pub fn matches_root(
    expected: &Bson,
    actual: Option<&Bson>,
    entities: &EntityValues,
) -> Result<(), String> {
    match_value(expected, actual, true, entities, "")
}

fn special(doc: &Document) -> Option<(&str, &Bson)> {
    if doc.len() == 1 {
        let (k, v) = doc.iter().next()?;
        if k.starts_with("$$") {
            return Some((k.as_str(), v));
        }
    }
    None
}

fn match_value(
    expected: &Bson,
    actual: Option<&Bson>,
    root: bool,
    entities: &EntityValues,
    path: &str,
) -> Result<(), String> {
    if let Bson::Document(e) = expected
        && let Some((op, arg)) = special(e)
    {
        return match_operator(op, arg, actual, root, entities, path);
    }
    let Some(actual) = actual else {
        return Err(format!("{path}: expected {expected}, found nothing"));
    };
    match expected {
        Bson::Document(e) => {
            let Bson::Document(a) = actual else {
                return Err(format!("{path}: expected a document {e}, got {actual}"));
            };
            for (k, v) in e {
                match_value(v, a.get(k), false, entities, &format!("{path}.{k}"))?;
            }
            if !root {
                for k in a.keys() {
                    if !e.contains_key(k) {
                        return Err(format!("{path}: unexpected field '{k}' in {a}"));
                    }
                }
            }
            Ok(())
        }
        Bson::Array(e) => {
            let Bson::Array(a) = actual else {
                return Err(format!("{path}: expected an array, got {actual}"));
            };
            if e.len() != a.len() {
                return Err(format!(
                    "{path}: expected {} elements, got {}: {actual}",
                    e.len(),
                    a.len()
                ));
            }
            for (i, (ev, av)) in e.iter().zip(a).enumerate() {
                // Documents directly inside a root-level array are root documents too.
                let elem_root = root && matches!(ev, Bson::Document(_));
                match_value(ev, Some(av), elem_root, entities, &format!("{path}[{i}]"))?;
            }
            Ok(())
        }
        _ => {
            let equal = match (as_f64(expected), as_f64(actual)) {
                (Some(x), Some(y)) => x == y || (x.is_nan() && y.is_nan()),
                _ => expected == actual,
            };
            if equal {
                Ok(())
            } else {
                Err(format!("{path}: expected {expected}, got {actual}"))
            }
        }
    }
}

fn match_operator(
    op: &str,
    arg: &Bson,
    actual: Option<&Bson>,
    root: bool,
    entities: &EntityValues,
    path: &str,
) -> Result<(), String> {
    match op {
        "$$exists" => {
            let want = arg.as_bool().ok_or("$$exists takes a bool")?;
            if want == actual.is_some() {
                Ok(())
            } else {
                Err(format!("{path}: $$exists {want} but found {actual:?}"))
            }
        }
        "$$type" => {
            let Some(actual) = actual else {
                return Err(format!("{path}: $$type {arg} but nothing"));
            };
            let wanted: Vec<&str> = match arg {
                Bson::String(s) => vec![s.as_str()],
                Bson::Array(a) => a.iter().filter_map(Bson::as_str).collect(),
                _ => return Err("$$type takes a string or array".into()),
            };
            if type_names(actual).iter().any(|t| wanted.contains(t)) {
                Ok(())
            } else {
                Err(format!("{path}: expected type {wanted:?}, got {actual}"))
            }
        }
        "$$unsetOrMatches" => match actual {
            None => Ok(()),
            Some(a) => match_value(arg, Some(a), root, entities, path),
        },
        "$$matchesEntity" => {
            let name = arg.as_str().ok_or("$$matchesEntity takes a name")?;
            let entity = entities
                .get(name)
                .ok_or_else(|| format!("unknown entity {name}"))?;
            match_value(entity, actual, root, entities, path)
        }
        "$$sessionLsid" => {
            let name = arg.as_str().ok_or("$$sessionLsid takes a name")?;
            let lsid = entities
                .get(&format!("{name}#lsid"))
                .ok_or_else(|| format!("unknown session {name}"))?;
            if Some(lsid) == actual {
                Ok(())
            } else {
                Err(format!("{path}: lsid mismatch"))
            }
        }
        "$$lte" => match (as_f64(arg), actual.and_then(as_f64)) {
            (Some(e), Some(a)) if a <= e => Ok(()),
            _ => Err(format!("{path}: expected <= {arg}, got {actual:?}")),
        },
        "$$matchesHexBytes" => {
            let hex = arg
                .as_str()
                .ok_or("$$matchesHexBytes takes a string")?
                .to_lowercase();
            match actual {
                Some(Bson::Binary(b)) => {
                    let got: String = b.bytes.iter().map(|x| format!("{x:02x}")).collect();
                    if got == hex {
                        Ok(())
                    } else {
                        Err(format!("{path}: bytes differ"))
                    }
                }
                _ => Err(format!("{path}: expected binary")),
            }
        }
        "$$matchAsRoot" => match_value(arg, actual, true, entities, path),
        "$$matchAsDocument" => {
            let Some(Bson::String(json)) = actual else {
                return Err(format!("{path}: $$matchAsDocument needs a JSON string"));
            };
            let value = super::ejson::Json::parse(json)?;
            let parsed = super::ejson::to_bson(&value)?;
            match_value(arg, Some(&parsed), false, entities, path)
        }
        other => Err(format!("unsupported match operator {other}")),
    }
}

/// Exact equality for `outcome` checks: no extra fields anywhere, numbers by value.
pub fn equal_exact(expected: &Bson, actual: &Bson) -> bool {
    match (expected, actual) {
        (Bson::Document(e), Bson::Document(a)) => {
            e.len() == a.len()
                && e.iter()
                    .all(|(k, v)| a.get(k).is_some_and(|av| equal_exact(v, av)))
        }
        (Bson::Array(e), Bson::Array(a)) => {
            e.len() == a.len() && e.iter().zip(a).all(|(x, y)| equal_exact(x, y))
        }
        _ => match (as_f64(expected), as_f64(actual)) {
            (Some(x), Some(y)) => x == y,
            _ => expected == actual,
        },
    }
}
