//! The server's total order over BSON values.
//!
//! Follows mongod's `BSONElement::woCompare` / `compareElementValues` with the simple
//! collation: values of different canonical types order by type (MinKey < Undefined < Null <
//! numbers < String/Symbol < Object < Array < BinData < ObjectId < Boolean < Date < Timestamp <
//! Regex < DBPointer < JavaScript < JavaScriptWithScope < MaxKey); numbers compare by exact
//! value across int32/int64/double/decimal128 (NaN equal to NaN and below every other number,
//! -0.0 equal to 0); strings and symbols by bytes; documents element by element (canonical
//! type, then field name, then value; a prefix sorts first); arrays element-wise; BinData by
//! length, then subtype, then bytes; Timestamps unsigned; Dates signed.

use std::cmp::Ordering;

use bson::{Bson, Document, RawBsonRef, RawDocument};

use super::keystring::MAX_DEPTH;
use super::numeric::{Number, cmp_numbers};
use super::value::{ArrRef, DocRef, Val, View, canonical_rank};

/// Compares two raw BSON values in the server's total order (simple collation).
pub fn compare_values(a: RawBsonRef<'_>, b: RawBsonRef<'_>) -> Ordering {
    cmp_val(Val::Raw(a), Val::Raw(b))
}

/// Compares two raw documents as mongod's `BSONObj::woCompare` with field names considered.
pub fn compare_documents(a: &RawDocument, b: &RawDocument) -> Ordering {
    cmp_doc(DocRef::Raw(a), DocRef::Raw(b))
}

/// Compares two decoded BSON values; the same order as [`compare_values`].
pub fn compare_bson(a: &Bson, b: &Bson) -> Ordering {
    cmp_val(Val::Owned(a), Val::Owned(b))
}

/// Compares two decoded documents; the same order as [`compare_documents`].
pub fn compare_bson_documents(a: &Document, b: &Document) -> Ordering {
    cmp_doc(DocRef::Owned(a), DocRef::Owned(b))
}

/// Compares a raw value with a decoded one; the same order as [`compare_values`].
pub fn compare_raw_bson(a: RawBsonRef<'_>, b: &Bson) -> Ordering {
    cmp_val(Val::Raw(a), Val::Owned(b))
}

/// True when the two values are equal in the total order (`1 == 1.0 == NumberLong(1)`).
pub fn values_equal(a: RawBsonRef<'_>, b: RawBsonRef<'_>) -> bool {
    compare_values(a, b) == Ordering::Equal
}

/// The number view of a value, if it is numeric.
pub(crate) fn as_number(v: View<'_>) -> Option<Number> {
    match v {
        View::Int32(i) => Some(Number::Int(i64::from(i))),
        View::Int64(i) => Some(Number::Int(i)),
        View::Double(d) => Some(Number::Double(d)),
        View::Decimal(d) => Some(Number::Decimal(d)),
        _ => None,
    }
}

/// The total order over [`Val`]s (either representation).
pub(crate) fn cmp_val(a: Val<'_>, b: Val<'_>) -> Ordering {
    cmp_val_at(a, b, 0)
}

fn cmp_val_at(a: Val<'_>, b: Val<'_>, depth: usize) -> Ordering {
    let ra = canonical_rank(a.element_type());
    let rb = canonical_rank(b.element_type());
    if ra != rb {
        return ra.cmp(&rb);
    }
    cmp_same_rank(a.view(), b.view(), depth)
}

/// Compares two values of the same canonical rank.
fn cmp_same_rank(a: View<'_>, b: View<'_>, depth: usize) -> Ordering {
    match (a, b) {
        (View::Str(x) | View::Symbol(x), View::Str(y) | View::Symbol(y)) => {
            x.as_bytes().cmp(y.as_bytes())
        }
        (View::Doc(x), View::Doc(y)) => cmp_doc_at(x, y, depth + 1),
        (View::Arr(x), View::Arr(y)) => cmp_arr_at(x, y, depth + 1),
        (View::Binary(sx, bx), View::Binary(sy, by)) => bx
            .len()
            .cmp(&by.len())
            .then(sx.cmp(&sy))
            .then_with(|| bx.cmp(by)),
        (View::ObjectId(x), View::ObjectId(y)) => x.bytes().cmp(&y.bytes()),
        (View::Bool(x), View::Bool(y)) => x.cmp(&y),
        (View::Date(x), View::Date(y)) => x.cmp(&y),
        (View::Timestamp(x), View::Timestamp(y)) => {
            (x.time, x.increment).cmp(&(y.time, y.increment))
        }
        (View::Regex(px, fx), View::Regex(py, fy)) => px
            .as_bytes()
            .cmp(py.as_bytes())
            .then_with(|| fx.as_bytes().cmp(fy.as_bytes())),
        (View::DbPointer(x), View::DbPointer(y)) => {
            // mongod: value size first, then the value bytes (namespace, then ObjectId).
            let (nx, ox) = x.parts();
            let (ny, oy) = y.parts();
            nx.len()
                .cmp(&ny.len())
                .then_with(|| nx.cmp(&ny))
                .then_with(|| ox.cmp(&oy))
        }
        (View::Code(x), View::Code(y)) => x.as_bytes().cmp(y.as_bytes()),
        (View::CodeWScope(cx, sx), View::CodeWScope(cy, sy)) => cx
            .as_bytes()
            .cmp(cy.as_bytes())
            .then_with(|| cmp_doc_at(sx, sy, depth + 1)),
        (x, y) => match (as_number(x), as_number(y)) {
            (Some(nx), Some(ny)) => cmp_numbers(nx, ny),
            // Valueless types of one rank (MinKey, MaxKey, Null, Undefined) are equal.
            _ => Ordering::Equal,
        },
    }
}

/// Compares documents element by element: canonical type, field name, value; the shorter
/// document sorts first when one is a prefix of the other.
pub(crate) fn cmp_doc(a: DocRef<'_>, b: DocRef<'_>) -> Ordering {
    cmp_doc_at(a, b, 1)
}

/// Documents and arrays nested deeper than [`MAX_DEPTH`] compare equal (as they encode alike
/// in the key encoding), so hostile nesting cannot exhaust the stack.
fn cmp_doc_at(a: DocRef<'_>, b: DocRef<'_>, depth: usize) -> Ordering {
    if depth >= MAX_DEPTH {
        return Ordering::Equal;
    }
    let mut ia = a.iter();
    let mut ib = b.iter();
    loop {
        match (ia.next(), ib.next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some((ka, va)), Some((kb, vb))) => {
                let o = canonical_rank(va.element_type())
                    .cmp(&canonical_rank(vb.element_type()))
                    .then_with(|| ka.as_bytes().cmp(kb.as_bytes()))
                    .then_with(|| cmp_same_rank(va.view(), vb.view(), depth));
                if o != Ordering::Equal {
                    return o;
                }
            }
        }
    }
}

/// Compares arrays element-wise (their implicit field names "0", "1", ... are equal position
/// by position).
fn cmp_arr_at(a: ArrRef<'_>, b: ArrRef<'_>, depth: usize) -> Ordering {
    if depth >= MAX_DEPTH {
        return Ordering::Equal;
    }
    let mut ia = a.iter();
    let mut ib = b.iter();
    loop {
        match (ia.next(), ib.next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) => {
                let o = cmp_val_at(x, y, depth);
                if o != Ordering::Equal {
                    return o;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::oid::ObjectId;
    use bson::spec::BinarySubtype;
    use bson::{Binary, Decimal128, Timestamp, bson, doc};

    fn dec(s: &str) -> Bson {
        Bson::Decimal128(s.parse::<Decimal128>().expect("valid decimal literal"))
    }

    #[test]
    fn canonical_type_order() {
        // One value of each type, in the server's order.
        let ordered = vec![
            Bson::MinKey,
            Bson::Undefined,
            Bson::Null,
            Bson::Int32(5),
            Bson::String("a".into()),
            bson!({"a": 1}),
            bson!([1]),
            Bson::Binary(Binary {
                subtype: BinarySubtype::Generic,
                bytes: vec![1],
            }),
            Bson::ObjectId(ObjectId::from_bytes([0; 12])),
            Bson::Boolean(false),
            Bson::DateTime(bson::DateTime::from_millis(0)),
            Bson::Timestamp(Timestamp {
                time: 0,
                increment: 0,
            }),
            Bson::RegularExpression(crate::query::value::make_regex("a", "").expect("valid regex")),
            Bson::JavaScriptCode("x".into()),
            Bson::MaxKey,
        ];
        for (i, a) in ordered.iter().enumerate() {
            for (j, b) in ordered.iter().enumerate() {
                assert_eq!(compare_bson(a, b), i.cmp(&j), "{a:?} vs {b:?}");
            }
        }
    }

    #[test]
    fn numbers_compare_by_exact_value() {
        assert_eq!(
            compare_bson(&Bson::Int32(1), &Bson::Double(1.0)),
            Ordering::Equal
        );
        assert_eq!(compare_bson(&Bson::Int64(1), &dec("1.00")), Ordering::Equal);
        assert_eq!(
            compare_bson(&Bson::Double(-0.0), &Bson::Int32(0)),
            Ordering::Equal
        );
        assert_eq!(
            compare_bson(&Bson::Double(f64::NAN), &Bson::Double(f64::NEG_INFINITY)),
            Ordering::Less
        );
        assert_eq!(
            compare_bson(&Bson::Double(f64::NAN), &dec("NaN")),
            Ordering::Equal
        );
        assert_eq!(
            compare_bson(
                &Bson::Int64(9_007_199_254_740_993),
                &Bson::Double(9_007_199_254_740_992.0)
            ),
            Ordering::Greater
        );
    }

    #[test]
    fn strings_and_symbols_compare_as_strings() {
        assert_eq!(
            compare_bson(&Bson::Symbol("abc".into()), &Bson::String("abc".into())),
            Ordering::Equal
        );
        assert_eq!(
            compare_bson(&Bson::String("B".into()), &Bson::String("a".into())),
            Ordering::Less
        );
        assert_eq!(
            compare_bson(&Bson::String("ab".into()), &Bson::String("abc".into())),
            Ordering::Less
        );
    }

    #[test]
    fn documents_compare_type_then_name_then_value() {
        // A number-typed field sorts before a string-typed one regardless of names.
        assert_eq!(
            compare_bson_documents(&doc! {"b": 1}, &doc! {"a": "x"}),
            Ordering::Less
        );
        assert_eq!(
            compare_bson_documents(&doc! {"a": 2}, &doc! {"b": 1}),
            Ordering::Less
        );
        assert_eq!(
            compare_bson_documents(&doc! {"a": 1}, &doc! {"a": 1, "b": 1}),
            Ordering::Less
        );
        assert_eq!(
            compare_bson_documents(&doc! {"a": 1}, &doc! {"a": 1.0}),
            Ordering::Equal
        );
    }

    #[test]
    fn bindata_orders_by_length_then_subtype_then_bytes() {
        let bin = |subtype: u8, bytes: Vec<u8>| {
            Bson::Binary(Binary {
                subtype: BinarySubtype::from(subtype),
                bytes,
            })
        };
        assert_eq!(
            compare_bson(&bin(5, vec![9]), &bin(0, vec![1, 1])),
            Ordering::Less
        );
        assert_eq!(
            compare_bson(&bin(0, vec![9]), &bin(4, vec![1])),
            Ordering::Less
        );
        assert_eq!(
            compare_bson(&bin(0, vec![1]), &bin(0, vec![2])),
            Ordering::Less
        );
    }

    #[test]
    fn undefined_sorts_below_null() {
        assert_eq!(compare_bson(&Bson::Undefined, &Bson::Null), Ordering::Less);
    }

    #[test]
    fn timestamps_are_unsigned_dates_signed() {
        let ts = |time| Bson::Timestamp(Timestamp { time, increment: 0 });
        assert_eq!(compare_bson(&ts(1), &ts(u32::MAX)), Ordering::Less);
        let dt = |ms| Bson::DateTime(bson::DateTime::from_millis(ms));
        assert_eq!(compare_bson(&dt(-1), &dt(1)), Ordering::Less);
    }
}
