//! The hash of hashed indexes and hashed shard keys: mongod's `BSONElementHasher::hash64`.
//!
//! The value is the first 8 bytes (little-endian `i64`) of an md5 digest over: the seed (an
//! `i32`, 0 for shard keys), then the element, recursively:
//! - its canonical type as a little-endian `i32` (the type order of comparisons: numbers share
//!   10, strings and symbols 15, `MinKey` is -1, `MaxKey` 127, ...);
//! - inside documents and arrays, the field name with its NUL terminator;
//! - numbers: the value as a little-endian `i64` (`safeNumberLongForHash`: doubles truncate,
//!   NaN is 0, out-of-range values clamp, and the double 2^63 becomes `i64::MIN` as it always
//!   did; decimals round half to even), so `1`, `1.0` and `NumberLong(1)` hash alike;
//! - documents, arrays and code-with-scope: every element, then the terminating EOO element
//!   (canonical type 0, no name, no value); code-with-scope hashes its code string first;
//! - everything else: the raw BSON value bytes (a string's length prefix and NUL included).
//!
//! mongod checks the function at startup with `hash64({check: 42}) == -944302157085130861`;
//! so do the tests below.

use bson::{RawBsonRef, RawDocument};
use md5::{Digest, Md5};

use super::numeric::{DecParts, decimal_parts};
use super::value::DbPtr;

/// The seed of hashed shard keys (`BSONElementHasher::DEFAULT_HASH_SEED`).
pub const DEFAULT_SEED: i32 = 0;

/// `BSONElementHasher::hash64(element, seed)` for one value (the field name of the top-level
/// element is not hashed).
pub fn hash64(value: RawBsonRef<'_>, seed: i32) -> i64 {
    let mut md5 = Md5::new();
    md5.update(seed.to_le_bytes());
    hash_value(&mut md5, value, 0);
    let digest = md5.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    i64::from_le_bytes(first)
}

/// Nesting beyond which containers hash as empty, so hostile input cannot exhaust the stack
/// (mongod refuses documents nested deeper than 200 anyway).
const MAX_DEPTH: usize = 200;

fn hash_value(md5: &mut Md5, value: RawBsonRef<'_>, depth: usize) {
    md5.update(canonical_type(value).to_le_bytes());
    hash_body(md5, value, depth);
}

/// Hashes each element of a document with its name, then the EOO terminator.
fn hash_elements(md5: &mut Md5, doc: &RawDocument, depth: usize) {
    if depth < MAX_DEPTH {
        for element in doc.iter().flatten() {
            let (key, value) = element;
            md5.update(canonical_type(value).to_le_bytes());
            md5.update(key.as_str().as_bytes());
            md5.update([0u8]);
            hash_body(md5, value, depth + 1);
        }
    }
    // EOO: canonical type 0, no field name, no value.
    md5.update(0i32.to_le_bytes());
}

/// The part of [`hash_value`] after the type (for nested elements, whose name comes between).
fn hash_body(md5: &mut Md5, value: RawBsonRef<'_>, depth: usize) {
    match value {
        RawBsonRef::Int32(n) => md5.update(i64::from(n).to_le_bytes()),
        RawBsonRef::Int64(n) => md5.update(n.to_le_bytes()),
        RawBsonRef::Double(d) => md5.update(double_for_hash(d).to_le_bytes()),
        RawBsonRef::Decimal128(d) => md5.update(decimal_for_hash(d).to_le_bytes()),
        RawBsonRef::Document(d) => hash_elements(md5, d, depth),
        RawBsonRef::Array(a) => match RawDocument::from_bytes(a.as_bytes()) {
            // An array is a document keyed "0", "1", ...; its keys are hashed as stored.
            Ok(d) => hash_elements(md5, d, depth),
            Err(_) => md5.update(0i32.to_le_bytes()),
        },
        RawBsonRef::JavaScriptCodeWithScope(cws) => {
            // The code string's bytes and NUL (without its length), then the scope.
            md5.update(cws.code.as_bytes());
            md5.update([0u8]);
            hash_elements(md5, cws.scope, depth);
        }
        other => md5.update(value_bytes(other)),
    }
}

/// `canonicalizeBSONType`: the comparison order of types.
fn canonical_type(value: RawBsonRef<'_>) -> i32 {
    match value {
        RawBsonRef::MinKey => -1,
        RawBsonRef::Undefined => 0,
        RawBsonRef::Null => 5,
        RawBsonRef::Double(_)
        | RawBsonRef::Int32(_)
        | RawBsonRef::Int64(_)
        | RawBsonRef::Decimal128(_) => 10,
        RawBsonRef::String(_) | RawBsonRef::Symbol(_) => 15,
        RawBsonRef::Document(_) => 20,
        RawBsonRef::Array(_) => 25,
        RawBsonRef::Binary(_) => 30,
        RawBsonRef::ObjectId(_) => 35,
        RawBsonRef::Boolean(_) => 40,
        RawBsonRef::DateTime(_) => 45,
        RawBsonRef::Timestamp(_) => 47,
        RawBsonRef::RegularExpression(_) => 50,
        RawBsonRef::DbPointer(_) => 55,
        RawBsonRef::JavaScriptCode(_) => 60,
        RawBsonRef::JavaScriptCodeWithScope(_) => 65,
        RawBsonRef::MaxKey => 127,
    }
}

/// A string as BSON stores it: `i32` length (including the NUL), bytes, NUL.
fn string_bytes(s: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len() + 5);
    out.extend_from_slice(&(s.len() as i32 + 1).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
    out.push(0);
    out
}

/// The raw BSON bytes of a non-numeric, non-container value.
fn value_bytes(value: RawBsonRef<'_>) -> Vec<u8> {
    match value {
        RawBsonRef::String(s) | RawBsonRef::Symbol(s) | RawBsonRef::JavaScriptCode(s) => {
            string_bytes(s)
        }
        RawBsonRef::Binary(b) => {
            let mut out = Vec::with_capacity(b.bytes.len() + 5);
            out.extend_from_slice(&(b.bytes.len() as i32).to_le_bytes());
            out.push(u8::from(b.subtype));
            out.extend_from_slice(b.bytes);
            out
        }
        RawBsonRef::ObjectId(o) => o.bytes().to_vec(),
        RawBsonRef::Boolean(b) => vec![u8::from(b)],
        RawBsonRef::DateTime(d) => d.timestamp_millis().to_le_bytes().to_vec(),
        RawBsonRef::Timestamp(t) => {
            // BSON stores the increment in the low 4 bytes, then the seconds.
            let mut out = t.increment.to_le_bytes().to_vec();
            out.extend_from_slice(&t.time.to_le_bytes());
            out
        }
        RawBsonRef::RegularExpression(r) => {
            let mut out = r.pattern.as_str().as_bytes().to_vec();
            out.push(0);
            out.extend_from_slice(r.options.as_str().as_bytes());
            out.push(0);
            out
        }
        RawBsonRef::DbPointer(p) => {
            let (ns, oid) = DbPtr::Raw(p).parts();
            let mut out = Vec::with_capacity(ns.len() + 17);
            out.extend_from_slice(&(ns.len() as i32 + 1).to_le_bytes());
            out.extend_from_slice(&ns);
            out.push(0);
            out.extend_from_slice(&oid);
            out
        }
        // MinKey, MaxKey, null and undefined have no value bytes.
        _ => Vec::new(),
    }
}

/// `safeNumberLongForHash` of a double.
fn double_for_hash(d: f64) -> i64 {
    // 2^63 is the one value whose historical (overflowing) conversion is kept.
    const TWO_POW_63: f64 = 9_223_372_036_854_775_808.0;
    if d == TWO_POW_63 {
        return i64::MIN;
    }
    if d.is_nan() {
        return 0;
    }
    if d >= TWO_POW_63 {
        return i64::MAX;
    }
    if d < -TWO_POW_63 {
        return i64::MIN;
    }
    // Truncation towards zero, exact for every double in range.
    d.trunc() as i64
}

/// `safeNumberLong` of a decimal: NaN is 0, out-of-range values clamp, the rest rounds half
/// to even (`Decimal128::toLong`'s default rounding).
fn decimal_for_hash(d: bson::Decimal128) -> i64 {
    match decimal_parts(d) {
        DecParts::NaN => 0,
        DecParts::Inf { negative } => {
            if negative {
                i64::MIN
            } else {
                i64::MAX
            }
        }
        DecParts::Finite {
            negative,
            coefficient,
            exponent,
        } => {
            let magnitude: u128 = if exponent >= 0 {
                let mut m = coefficient;
                for _ in 0..exponent {
                    if m == 0 {
                        break;
                    }
                    m = match m.checked_mul(10) {
                        Some(v) if v <= u128::from(u64::MAX) => v,
                        _ => return if negative { i64::MIN } else { i64::MAX },
                    };
                }
                m
            } else {
                let shift = exponent.unsigned_abs();
                if shift > 38 {
                    0
                } else {
                    let divisor = 10u128.pow(shift);
                    let quotient = coefficient / divisor;
                    let remainder = coefficient % divisor;
                    let twice = remainder * 2;
                    if twice > divisor || (twice == divisor && quotient % 2 == 1) {
                        quotient + 1
                    } else {
                        quotient
                    }
                }
            };
            if negative {
                if magnitude > i64::MAX as u128 + 1 {
                    i64::MIN
                } else {
                    (magnitude as i128).wrapping_neg() as i64
                }
            } else if magnitude > i64::MAX as u128 {
                i64::MAX
            } else {
                magnitude as i64
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::{Bson, doc, rawdoc};

    fn h(value: Bson) -> i64 {
        let raw = bson::RawDocumentBuf::try_from(&doc! { "v": value }).unwrap();
        hash64(raw.get("v").unwrap().unwrap(), DEFAULT_SEED)
    }

    #[test]
    fn matches_mongods_startup_self_check() {
        // hasher.cpp: BSONElementHasher::hash64(BSON("check" << 42).firstElement(), 0)
        let raw = rawdoc! { "check": 42 };
        assert_eq!(
            hash64(raw.get("check").unwrap().unwrap(), 0),
            -944_302_157_085_130_861
        );
    }

    #[test]
    fn numbers_of_equal_value_hash_alike() {
        let one = h(Bson::Int32(1));
        assert_eq!(h(Bson::Int64(1)), one);
        assert_eq!(h(Bson::Double(1.0)), one);
        assert_eq!(h(Bson::Double(1.9)), one, "doubles truncate");
        assert_eq!(
            h(Bson::Decimal128("1".parse().unwrap())),
            one,
            "decimals convert to the same long"
        );
        assert_ne!(h(Bson::Int32(2)), one);
        assert_eq!(h(Bson::Double(f64::NAN)), h(Bson::Int32(0)));
    }

    #[test]
    fn decimals_round_half_to_even() {
        assert_eq!(decimal_for_hash("2.5".parse().unwrap()), 2);
        assert_eq!(decimal_for_hash("3.5".parse().unwrap()), 4);
        assert_eq!(decimal_for_hash("-2.5".parse().unwrap()), -2);
        assert_eq!(decimal_for_hash("1E+30".parse().unwrap()), i64::MAX);
        assert_eq!(decimal_for_hash("-1E+30".parse().unwrap()), i64::MIN);
        assert_eq!(decimal_for_hash("NaN".parse().unwrap()), 0);
    }

    #[test]
    fn types_and_nesting_matter() {
        assert_ne!(h(Bson::String("1".into())), h(Bson::Int32(1)));
        assert_ne!(
            h(Bson::Document(doc! {"a": 1})),
            h(Bson::Document(doc! {"b": 1}))
        );
        assert_ne!(
            h(Bson::Array(vec![Bson::Int32(1)])),
            h(Bson::Document(doc! {"0": 1}))
        );
        assert_eq!(h(Bson::Null), h(Bson::Null));
        assert_eq!(double_for_hash(9_223_372_036_854_775_808.0), i64::MIN);
        assert_eq!(double_for_hash(1e300), i64::MAX);
        assert_eq!(double_for_hash(-1e300), i64::MIN);
    }
}
