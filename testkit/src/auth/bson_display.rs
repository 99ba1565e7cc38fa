//! mongod's `BSONObj::toString()` rendering, used in "not authorized on db to execute command
//! { insert: \"c\", ordered: true, ... }" messages.
//!
//! The shape: `{ key: value, ... }`, `{}` when empty, `[ a, b ]`, strings in double quotes,
//! `UUID("…")` for subtype-4 binaries, `BinData(subtype, HEX)`, `ObjectId('…')`,
//! `Timestamp(secs, inc)`, `new Date(ms)`, doubles with a trailing `.0` when integral, and
//! `NumberDecimal("…")`.

use std::fmt::Write as _;

use bson::{RawArray, RawBsonRef, RawDocument};

/// Renders a document as mongod prints it in messages. Malformed elements (the wire layer
/// rejects them before this point) are rendered as `<invalid>` rather than failing.
pub fn to_string(doc: &RawDocument) -> String {
    let mut out = String::new();
    write_document(&mut out, doc);
    out
}

fn write_document(out: &mut String, doc: &RawDocument) {
    let mut first = true;
    for element in doc.iter() {
        out.push_str(if first { "{ " } else { ", " });
        first = false;
        match element {
            Ok((key, value)) => {
                out.push_str(key.as_str());
                out.push_str(": ");
                write_value(out, value);
            }
            Err(_) => out.push_str("<invalid>"),
        }
    }
    out.push_str(if first { "{}" } else { " }" });
}

fn write_array(out: &mut String, array: &RawArray) {
    let mut first = true;
    for value in array {
        out.push_str(if first { "[ " } else { ", " });
        first = false;
        match value {
            Ok(v) => write_value(out, v),
            Err(_) => out.push_str("<invalid>"),
        }
    }
    out.push_str(if first { "[]" } else { " ]" });
}

fn write_value(out: &mut String, value: RawBsonRef<'_>) {
    match value {
        RawBsonRef::Double(d) => write_double(out, d),
        RawBsonRef::String(s) => {
            let _ = write!(out, "\"{s}\"");
        }
        RawBsonRef::Document(d) => write_document(out, d),
        RawBsonRef::Array(a) => write_array(out, a),
        RawBsonRef::Binary(b) => {
            if b.subtype == bson::spec::BinarySubtype::Uuid && b.bytes.len() == 16 {
                let h = hex(b.bytes, false);
                let _ = write!(
                    out,
                    "UUID(\"{}-{}-{}-{}-{}\")",
                    &h[0..8],
                    &h[8..12],
                    &h[12..16],
                    &h[16..20],
                    &h[20..32]
                );
            } else {
                let subtype: u8 = b.subtype.into();
                let _ = write!(out, "BinData({subtype}, {})", hex(b.bytes, true));
            }
        }
        RawBsonRef::Undefined => out.push_str("undefined"),
        RawBsonRef::ObjectId(oid) => {
            let _ = write!(out, "ObjectId('{}')", oid.to_hex());
        }
        RawBsonRef::Boolean(b) => out.push_str(if b { "true" } else { "false" }),
        RawBsonRef::DateTime(d) => {
            let _ = write!(out, "new Date({})", d.timestamp_millis());
        }
        RawBsonRef::Null => out.push_str("null"),
        RawBsonRef::RegularExpression(r) => {
            let _ = write!(out, "/{}/{}", r.pattern, r.options);
        }
        RawBsonRef::DbPointer(_) => out.push_str("DBRef(...)"),
        RawBsonRef::JavaScriptCode(c) => {
            let _ = write!(out, "\"{c}\"");
        }
        RawBsonRef::Symbol(s) => {
            let _ = write!(out, "\"{s}\"");
        }
        RawBsonRef::JavaScriptCodeWithScope(c) => {
            let _ = write!(out, "\"{}\"", c.code);
        }
        RawBsonRef::Int32(n) => {
            let _ = write!(out, "{n}");
        }
        RawBsonRef::Timestamp(ts) => {
            let _ = write!(out, "Timestamp({}, {})", ts.time, ts.increment);
        }
        RawBsonRef::Int64(n) => {
            let _ = write!(out, "{n}");
        }
        RawBsonRef::Decimal128(d) => {
            let _ = write!(out, "NumberDecimal(\"{d}\")");
        }
        RawBsonRef::MaxKey => out.push_str("MaxKey"),
        RawBsonRef::MinKey => out.push_str("MinKey"),
    }
}

/// Doubles print with up to 16 significant digits, and integral values keep a `.0` so they
/// read as doubles (`1.0`, not `1`).
fn write_double(out: &mut String, d: f64) {
    if d.is_nan() {
        out.push_str("nan");
    } else if d.is_infinite() {
        out.push_str(if d > 0.0 { "inf" } else { "-inf" });
    } else if d.fract() == 0.0 && d.abs() < 1e16 {
        if d == 0.0 && d.is_sign_negative() {
            out.push_str("-0.0");
        } else {
            let _ = write!(out, "{d:.1}");
        }
    } else {
        let _ = write!(out, "{d}");
    }
}

fn hex(bytes: &[u8], upper: bool) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = if upper {
            write!(s, "{b:02X}")
        } else {
            write!(s, "{b:02x}")
        };
    }
    s
}

#[cfg(test)]
mod tests {
    use bson::{Binary, Timestamp, rawdoc, spec::BinarySubtype};

    use super::*;

    #[test]
    fn renders_like_mongod() {
        let doc = rawdoc! {
            "insert": "c",
            "ordered": true,
            "lsid": { "id": Binary { subtype: BinarySubtype::Uuid, bytes: vec![0x11; 16] } },
            "txnNumber": 1i64,
            "$clusterTime": {
                "clusterTime": Timestamp { time: 1700000000, increment: 3 },
                "signature": { "hash": Binary { subtype: BinarySubtype::Generic, bytes: vec![0; 2] }, "keyId": 0i64 },
            },
            "n": 1.0,
            "a": [],
            "e": {},
            "$db": "test",
        };
        assert_eq!(
            to_string(&doc),
            "{ insert: \"c\", ordered: true, lsid: { id: UUID(\"11111111-1111-1111-1111-111111111111\") }, \
             txnNumber: 1, $clusterTime: { clusterTime: Timestamp(1700000000, 3), signature: \
             { hash: BinData(0, 0000), keyId: 0 } }, n: 1.0, a: [], e: {}, $db: \"test\" }"
        );
    }
}
