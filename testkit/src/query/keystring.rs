//! An order-preserving byte encoding of BSON values, in the spirit of mongod's KeyString.
//!
//! `encode_value(a).cmp(&encode_value(b)) == compare_values(a, b)` for all values, and values
//! the server considers equal encode to identical bytes (`1`, `1.0`, `NumberLong(1)` and
//! `NumberDecimal("1.00")` all encode alike; so do a string and a symbol with the same
//! content). Every encoding is prefix-free, so concatenating the encodings of several values
//! (a compound index key) orders tuples lexicographically; a descending component is stored
//! with every byte inverted, which reverses its order and stays prefix-free. The server keys
//! its `_id` index and secondary indexes with these bytes.
//!
//! Layout: one type byte per canonical type (same order as [`super::compare`]), then a
//! type-specific body:
//! - numbers: a class byte (NaN < -inf < negative < zero < positive < +inf); finite non-zero
//!   values as a biased 16-bit decimal exponent and their decimal digits two per byte,
//!   terminated by `0x00` (exact for every int64, double and decimal128); negative values with
//!   those bytes inverted;
//! - strings (and symbols, JavaScript code, regex parts, field names): the bytes with `0x00`
//!   escaped as `00 FF`, terminated by `00 01`;
//! - documents: per element the type byte, the escaped field name and the body; then `0x00`;
//! - arrays: per element the type byte and body; then `0x00`;
//! - BinData: big-endian length, subtype, bytes; ObjectId: its 12 bytes; Boolean: 0/1;
//!   Date: signed 64-bit with the sign bit flipped; Timestamp: unsigned time then increment;
//!   DBPointer: namespace length, namespace, ObjectId.
//!
//! The encoding is one-way (there is no decoder): the server keeps the documents themselves.

use bson::{Bson, RawBsonRef, RawDocument};

use super::compare::as_number;
use super::numeric::{Class, Number, exact, f64_to_i64_exact};
use super::path;
use super::value::{ArrRef, DocRef, Val, View, canonical_rank};
use super::{Direction, QueryError};

/// Nesting beyond which documents and arrays encode as empty (the comparison treats them as
/// equal at the same depth), so hostile input cannot exhaust the stack. mongod refuses
/// documents nested deeper than 100 (storage) or 200 (commands) anyway.
pub(crate) const MAX_DEPTH: usize = 200;

/// Encodes one value (ascending).
pub fn encode_value(v: RawBsonRef<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(16);
    encode_val(Val::Raw(v), &mut out, 0);
    out
}

/// Appends the ascending encoding of one value to `out` (no allocation beyond `out`'s growth
/// for integers, strings, ObjectIds and other fixed-size types).
pub fn encode_value_into(v: RawBsonRef<'_>, out: &mut Vec<u8>) {
    encode_val(Val::Raw(v), out, 0);
}

/// Encodes one decoded value (ascending); identical to [`encode_value`] of its raw form.
pub fn encode_bson(v: &Bson) -> Vec<u8> {
    let mut out = Vec::with_capacity(16);
    encode_val(Val::Owned(v), &mut out, 0);
    out
}

/// Appends one component of a compound key in the given direction.
pub fn append_component(out: &mut Vec<u8>, v: RawBsonRef<'_>, direction: Direction) {
    append_val(out, Val::Raw(v), direction);
}

/// Encodes a compound key: the concatenation of its components, descending ones inverted.
/// Byte order equals the lexicographic order of the tuples under their directions.
pub fn encode_compound<'a>(
    parts: impl IntoIterator<Item = (RawBsonRef<'a>, Direction)>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(32);
    for (v, d) in parts {
        append_val(&mut out, Val::Raw(v), d);
    }
    out
}

/// Computes the index keys of a document for a key pattern, as mongod's B-tree key generator
/// does: a missing field keys as `null`; an array along a path makes the index multikey (one
/// key per element; an empty array keys as `undefined`); at most one field of a compound
/// pattern may be an array, otherwise error 171 `CannotIndexParallelArrays` ("cannot index
/// parallel arrays [a] [b]"). The keys come back sorted and without duplicates.
pub fn index_keys(
    doc: &RawDocument,
    pattern: &[(String, Direction)],
) -> Result<Vec<Vec<u8>>, QueryError> {
    let mut per_field: Vec<Vec<Val<'_>>> = Vec::with_capacity(pattern.len());
    let mut array_field: Option<&str> = None;
    for (field, _) in pattern {
        let (values, multikey) = path::index_values(DocRef::Raw(doc), field);
        if multikey {
            if let Some(first) = array_field {
                let (a, b) = ordered_pair(first, field);
                return Err(QueryError::new(
                    171,
                    "CannotIndexParallelArrays",
                    format!("cannot index parallel arrays [{a}] [{b}]"),
                ));
            }
            array_field = Some(field);
        }
        per_field.push(values);
    }
    let mut keys: Vec<Vec<u8>> = vec![Vec::new()];
    for (values, (_, direction)) in per_field.iter().zip(pattern) {
        let mut next = Vec::with_capacity(keys.len() * values.len().max(1));
        for prefix in &keys {
            for v in values {
                let mut k = prefix.clone();
                append_val(&mut k, *v, *direction);
                next.push(k);
            }
        }
        keys = next;
    }
    keys.sort();
    keys.dedup();
    Ok(keys)
}

fn ordered_pair<'a>(a: &'a str, b: &'a str) -> (&'a str, &'a str) {
    // mongod names the fields in key-pattern order: the earlier array first.
    (a, b)
}

/// Appends one value in a direction (crate-internal form over either representation).
pub(crate) fn append_val(out: &mut Vec<u8>, v: Val<'_>, direction: Direction) {
    let start = out.len();
    encode_val(v, out, 0);
    if direction == Direction::Descending {
        for b in &mut out[start..] {
            *b = !*b;
        }
    }
}

/// The type byte of a canonical rank; spaced so that 0x00 (end of document/array) sorts first.
fn type_byte(rank: i8) -> u8 {
    match rank {
        -1 => 0x0a,
        0 => 0x0f,
        5 => 0x14,
        10 => 0x1e,
        15 => 0x3c,
        20 => 0x46,
        25 => 0x50,
        30 => 0x5a,
        35 => 0x64,
        40 => 0x6e,
        45 => 0x78,
        47 => 0x7d,
        50 => 0x82,
        55 => 0x8c,
        60 => 0x96,
        65 => 0xa0,
        _ => 0xf0,
    }
}

/// Appends the type byte and body of a value.
pub(crate) fn encode_val(v: Val<'_>, out: &mut Vec<u8>, depth: usize) {
    out.push(type_byte(canonical_rank(v.element_type())));
    encode_body(v.view(), out, depth);
}

fn encode_body(v: View<'_>, out: &mut Vec<u8>, depth: usize) {
    match v {
        View::MinKey | View::MaxKey | View::Null | View::Undefined => {}
        View::Str(s) | View::Symbol(s) | View::Code(s) => write_string(out, s.as_bytes()),
        View::Doc(d) => encode_doc(d, out, depth + 1),
        View::Arr(a) => encode_arr(a, out, depth + 1),
        View::Binary(subtype, bytes) => {
            out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
            out.push(subtype);
            out.extend_from_slice(bytes);
        }
        View::ObjectId(o) => out.extend_from_slice(&o.bytes()),
        View::Bool(b) => out.push(u8::from(b)),
        View::Date(ms) => out.extend_from_slice(&((ms as u64) ^ (1 << 63)).to_be_bytes()),
        View::Timestamp(t) => {
            out.extend_from_slice(&t.time.to_be_bytes());
            out.extend_from_slice(&t.increment.to_be_bytes());
        }
        View::Regex(p, f) => {
            write_string(out, p.as_bytes());
            write_string(out, f.as_bytes());
        }
        View::DbPointer(p) => {
            let (ns, oid) = p.parts();
            out.extend_from_slice(&(ns.len() as u32).to_be_bytes());
            out.extend_from_slice(&ns);
            out.extend_from_slice(&oid);
        }
        View::CodeWScope(code, scope) => {
            write_string(out, code.as_bytes());
            encode_doc(scope, out, depth + 1);
        }
        other => {
            if let Some(n) = as_number(other) {
                encode_number(n, out);
            }
        }
    }
}

fn encode_doc(d: DocRef<'_>, out: &mut Vec<u8>, depth: usize) {
    if depth < MAX_DEPTH {
        for (k, v) in d.iter() {
            out.push(type_byte(canonical_rank(v.element_type())));
            write_string(out, k.as_bytes());
            encode_body(v.view(), out, depth);
        }
    }
    out.push(0);
}

fn encode_arr(a: ArrRef<'_>, out: &mut Vec<u8>, depth: usize) {
    if depth < MAX_DEPTH {
        for v in a.iter() {
            out.push(type_byte(canonical_rank(v.element_type())));
            encode_body(v.view(), out, depth);
        }
    }
    out.push(0);
}

/// Escaped, terminated byte string: `00` becomes `00 FF`, the end is `00 01`.
fn write_string(out: &mut Vec<u8>, bytes: &[u8]) {
    let mut rest = bytes;
    while let Some(pos) = rest.iter().position(|b| *b == 0) {
        out.extend_from_slice(&rest[..pos]);
        out.extend_from_slice(&[0, 0xff]);
        rest = &rest[pos + 1..];
    }
    out.extend_from_slice(rest);
    out.extend_from_slice(&[0, 1]);
}

const CLASS_NAN: u8 = 0x01;
const CLASS_NEG_INF: u8 = 0x02;
const CLASS_NEG: u8 = 0x03;
const CLASS_ZERO: u8 = 0x04;
const CLASS_POS: u8 = 0x05;
const CLASS_POS_INF: u8 = 0x06;

fn encode_number(n: Number, out: &mut Vec<u8>) {
    // Integers (and integral doubles in int64 range) take an allocation-free path.
    let int = match n {
        Number::Int(i) => Some(i),
        Number::Double(d) => f64_to_i64_exact(d),
        Number::Decimal(_) => None,
    };
    if let Some(i) = int {
        if i == 0 {
            out.push(CLASS_ZERO);
            return;
        }
        let mut buf = [0u8; 20];
        let mut len = 0;
        let mut m = i.unsigned_abs();
        while m > 0 {
            buf[len] = (m % 10) as u8;
            m /= 10;
            len += 1;
        }
        buf[..len].reverse();
        let digits = &buf[..len];
        let significant = digits.iter().rposition(|d| *d != 0).map_or(0, |p| p + 1);
        write_magnitude(out, i < 0, len as i32, &digits[..significant]);
        return;
    }
    let e = exact(n);
    match e.class {
        Class::NaN => out.push(CLASS_NAN),
        Class::NegInf => out.push(CLASS_NEG_INF),
        Class::Zero => out.push(CLASS_ZERO),
        Class::PosInf => out.push(CLASS_POS_INF),
        Class::Negative => write_magnitude(out, true, e.exponent, &e.digits),
        Class::Positive => write_magnitude(out, false, e.exponent, &e.digits),
    }
}

/// Writes class, exponent and digit pairs of a finite non-zero number; negative numbers have
/// the magnitude bytes inverted so larger magnitudes sort first.
fn write_magnitude(out: &mut Vec<u8>, negative: bool, exponent: i32, digits: &[u8]) {
    out.push(if negative { CLASS_NEG } else { CLASS_POS });
    let start = out.len();
    let biased = (exponent.clamp(-0x7fff, 0x7fff) + 0x8000) as u16;
    out.extend_from_slice(&biased.to_be_bytes());
    for pair in digits.chunks(2) {
        let hi = pair.first().copied().unwrap_or(0);
        let lo = pair.get(1).copied().unwrap_or(0);
        // 1..=100: never 0, the terminator; a lone last digit d reads as the pair "d0", which
        // is unambiguous because canonical digit strings have no trailing zero.
        out.push(1 + hi * 10 + lo);
    }
    out.push(0);
    if negative {
        for b in &mut out[start..] {
            *b = !*b;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::compare::compare_bson;
    use bson::oid::ObjectId;
    use bson::spec::BinarySubtype;
    use bson::{Binary, Decimal128, Timestamp, bson, doc, rawdoc};
    use proptest::prelude::*;
    use std::cmp::Ordering;

    fn dec(s: &str) -> Bson {
        Bson::Decimal128(s.parse::<Decimal128>().expect("valid decimal literal"))
    }

    #[test]
    fn equal_numbers_encode_identically() {
        let one = encode_bson(&Bson::Int32(1));
        assert_eq!(one, encode_bson(&Bson::Int64(1)));
        assert_eq!(one, encode_bson(&Bson::Double(1.0)));
        assert_eq!(one, encode_bson(&dec("1.00")));
        assert_eq!(
            encode_bson(&Bson::Double(-0.0)),
            encode_bson(&Bson::Int32(0))
        );
        assert_eq!(encode_bson(&Bson::Double(2.5)), encode_bson(&dec("2.50")));
        assert_eq!(
            encode_bson(&Bson::Double(f64::NAN)),
            encode_bson(&dec("NaN"))
        );
    }

    #[test]
    fn numbers_order_exactly() {
        let ordered = [
            Bson::Double(f64::NAN),
            Bson::Double(f64::NEG_INFINITY),
            dec("-1E+400"),
            Bson::Int64(i64::MIN),
            Bson::Double(-1.5),
            Bson::Int32(-1),
            Bson::Double(-0.1),
            dec("-0.1"),
            Bson::Int32(0),
            Bson::Double(1e-300),
            dec("0.1"),
            Bson::Double(0.1),
            Bson::Int32(1),
            dec("1.0000000000000000000000000000001"),
            Bson::Double(9_007_199_254_740_992.0),
            Bson::Int64(9_007_199_254_740_993),
            Bson::Int64(i64::MAX),
            Bson::Double(1e300),
            dec("1E+400"),
            Bson::Double(f64::INFINITY),
        ];
        for w in ordered.windows(2) {
            assert!(
                encode_bson(&w[0]) < encode_bson(&w[1]),
                "{:?} < {:?}",
                w[0],
                w[1]
            );
            assert_eq!(compare_bson(&w[0], &w[1]), Ordering::Less);
        }
    }

    #[test]
    fn compound_keys_respect_direction() {
        let a = rawdoc! {"x": 1, "y": "b"};
        let b = rawdoc! {"x": 1, "y": "a"};
        let key = |d: &RawDocument| {
            encode_compound([
                (
                    d.get("x").ok().flatten().unwrap_or(RawBsonRef::Null),
                    Direction::Ascending,
                ),
                (
                    d.get("y").ok().flatten().unwrap_or(RawBsonRef::Null),
                    Direction::Descending,
                ),
            ])
        };
        assert!(key(&a) < key(&b));
    }

    #[test]
    fn index_keys_are_multikey_and_reject_parallel_arrays() {
        let d = rawdoc! {"a": [3, 1, 3], "b": 2};
        let keys = index_keys(&d, &[("a".into(), Direction::Ascending)]).expect("keys");
        assert_eq!(
            keys,
            vec![encode_bson(&Bson::Int32(1)), encode_bson(&Bson::Int32(3))]
        );
        let missing = index_keys(&d, &[("zz".into(), Direction::Ascending)]).expect("keys");
        assert_eq!(missing, vec![encode_bson(&Bson::Null)]);
        let empty = rawdoc! {"a": []};
        let keys = index_keys(&empty, &[("a".into(), Direction::Ascending)]).expect("keys");
        assert_eq!(keys, vec![encode_bson(&Bson::Undefined)]);
        let parallel = rawdoc! {"a": [1], "b": [2]};
        let err = index_keys(
            &parallel,
            &[
                ("a".into(), Direction::Ascending),
                ("b".into(), Direction::Ascending),
            ],
        )
        .expect_err("parallel arrays");
        assert_eq!(err.code, 171);
        assert_eq!(err.message, "cannot index parallel arrays [a] [b]");
    }

    #[test]
    fn deep_nesting_does_not_overflow() {
        let mut v = Bson::Int32(1);
        for _ in 0..100_000 {
            v = Bson::Document(doc! {"a": v});
        }
        let mut w = Bson::Int32(2);
        for _ in 0..100_000 {
            w = Bson::Document(doc! {"a": w});
        }
        // Beyond the depth limit both compare (and encode) equal.
        assert_eq!(compare_bson(&v, &w), Ordering::Equal);
        assert_eq!(encode_bson(&v), encode_bson(&w));
        // Dropping the nested values iteratively keeps the test itself from overflowing.
        for x in [v, w] {
            let mut cur = x;
            while let Bson::Document(mut d) = cur {
                cur = d.remove("a").unwrap_or(Bson::Null);
            }
        }
    }

    /// Values of every BSON type, nested, with numbers drawn so that cross-type ties happen.
    fn arb_bson() -> impl Strategy<Value = Bson> {
        let number = prop_oneof![
            (-5i32..5).prop_map(Bson::Int32),
            (-5i64..5).prop_map(Bson::Int64),
            any::<i64>().prop_map(Bson::Int64),
            (-10i32..10).prop_map(|i| Bson::Double(f64::from(i) / 4.0)),
            any::<f64>().prop_map(Bson::Double),
            prop_oneof![
                Just(f64::NAN),
                Just(-0.0),
                Just(f64::INFINITY),
                Just(f64::NEG_INFINITY),
                Just(9_007_199_254_740_993f64),
                Just(1e-320)
            ]
            .prop_map(Bson::Double),
            (-20i64..20, -3i32..3).prop_map(|(c, e)| dec(&format!("{c}E{e}"))),
            prop_oneof![
                Just("NaN"),
                Just("-Infinity"),
                Just("Infinity"),
                Just("1E+6000"),
                Just("-0")
            ]
            .prop_map(dec),
        ];
        let leaf = prop_oneof![
            number,
            Just(Bson::Null),
            Just(Bson::Undefined),
            Just(Bson::MinKey),
            Just(Bson::MaxKey),
            "[a-c\u{0}]{0,3}".prop_map(Bson::String),
            "[a-c]{0,2}".prop_map(Bson::Symbol),
            "[a-c]{0,2}".prop_map(Bson::JavaScriptCode),
            any::<bool>().prop_map(Bson::Boolean),
            any::<i64>().prop_map(|m| Bson::DateTime(bson::DateTime::from_millis(m))),
            (0u32..3, 0u32..3)
                .prop_map(|(time, increment)| Bson::Timestamp(Timestamp { time, increment })),
            (0u8..3, prop::collection::vec(0u8..3, 0..3)).prop_map(|(s, bytes)| {
                Bson::Binary(Binary {
                    subtype: BinarySubtype::from(s),
                    bytes,
                })
            }),
            prop::array::uniform12(0u8..2).prop_map(|b| Bson::ObjectId(ObjectId::from_bytes(b))),
            ("[ab]{0,2}", "[im]{0,1}").prop_map(|(p, o)| {
                crate::query::value::make_regex(&p, &o)
                    .map(Bson::RegularExpression)
                    .unwrap_or(Bson::Null)
            }),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Bson::Array),
                prop::collection::vec(("[ab]{1}", inner), 0..4).prop_map(|fields| {
                    let mut d = bson::Document::new();
                    for (k, v) in fields {
                        d.insert(k, v);
                    }
                    Bson::Document(d)
                }),
            ]
        })
    }

    fn raw_of(v: &Bson) -> bson::RawDocumentBuf {
        bson::RawDocumentBuf::try_from(&doc! {"v": v.clone()}).expect("encodable value")
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn encoding_order_matches_comparison(a in arb_bson(), b in arb_bson()) {
            prop_assert_eq!(encode_bson(&a).cmp(&encode_bson(&b)), compare_bson(&a, &b));
        }

        #[test]
        fn raw_and_decoded_agree(a in arb_bson(), b in arb_bson()) {
            let ra = raw_of(&a);
            let rb = raw_of(&b);
            let va = ra.get("v").ok().flatten().unwrap_or(RawBsonRef::Null);
            let vb = rb.get("v").ok().flatten().unwrap_or(RawBsonRef::Null);
            prop_assert_eq!(encode_value(va), encode_bson(&a));
            prop_assert_eq!(
                crate::query::compare::compare_values(va, vb),
                compare_bson(&a, &b)
            );
        }

        #[test]
        fn comparison_is_antisymmetric(a in arb_bson(), b in arb_bson()) {
            prop_assert_eq!(compare_bson(&a, &b), compare_bson(&b, &a).reverse());
        }

        #[test]
        fn comparison_is_transitive(a in arb_bson(), b in arb_bson(), c in arb_bson()) {
            let mut v = [a, b, c];
            v.sort_by(compare_bson);
            prop_assert_ne!(compare_bson(&v[0], &v[1]), Ordering::Greater);
            prop_assert_ne!(compare_bson(&v[1], &v[2]), Ordering::Greater);
            prop_assert_ne!(compare_bson(&v[0], &v[2]), Ordering::Greater);
        }

        #[test]
        fn compound_order_is_lexicographic(
            a in arb_bson(), b in arb_bson(), c in arb_bson(), d in arb_bson(), desc in any::<bool>()
        ) {
            let dir = if desc { Direction::Descending } else { Direction::Ascending };
            let key = |x: &Bson, y: &Bson| {
                let mut out = Vec::new();
                append_val(&mut out, Val::Owned(x), Direction::Ascending);
                append_val(&mut out, Val::Owned(y), dir);
                out
            };
            let expected = compare_bson(&a, &c).then_with(|| dir.apply(compare_bson(&b, &d)));
            prop_assert_eq!(key(&a, &b).cmp(&key(&c, &d)), expected);
        }
    }

    #[test]
    fn strings_with_nul_bytes_order_correctly() {
        let s = |x: &str| encode_bson(&Bson::String(x.into()));
        assert!(s("a") < s("a\u{0}"));
        assert!(s("a\u{0}") < s("a\u{1}"));
        assert!(s("a\u{0}b") < s("ab"));
        let _ = bson!(1);
    }
}
