//! A borrowed view over BSON values that are either raw (`RawBsonRef`, as the server stores
//! documents) or decoded (`Bson`, as expressions and updates produce them).
//!
//! Comparison, key encoding, path traversal and filter matching are written once against this
//! view, so a filter evaluates on a stored `&RawDocument` without decoding it and on a computed
//! `Document` in a pipeline alike.

use bson::oid::ObjectId;
use bson::spec::ElementType;
use bson::{
    Bson, Decimal128, Document, RawArray, RawBsonRef, RawDocument, RawDocumentBuf, Timestamp,
};

/// A borrowed BSON value of either representation.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Val<'a> {
    Raw(RawBsonRef<'a>),
    Owned(&'a Bson),
}

/// A borrowed document of either representation.
#[derive(Debug, Clone, Copy)]
pub(crate) enum DocRef<'a> {
    Raw(&'a RawDocument),
    Owned(&'a Document),
}

/// A borrowed array of either representation.
#[derive(Debug, Clone, Copy)]
pub(crate) enum ArrRef<'a> {
    Raw(&'a RawArray),
    Owned(&'a [Bson]),
}

/// A DBPointer of either representation (its parts are private in the `bson` crate).
#[derive(Debug, Clone, Copy)]
pub(crate) enum DbPtr<'a> {
    Raw(bson::RawDbPointerRef<'a>),
    Owned(&'a Bson),
}

/// The value behind a [`Val`], classified by BSON type.
#[derive(Debug, Clone, Copy)]
pub(crate) enum View<'a> {
    Double(f64),
    Str(&'a str),
    Doc(DocRef<'a>),
    Arr(ArrRef<'a>),
    Binary(u8, &'a [u8]),
    Undefined,
    ObjectId(ObjectId),
    Bool(bool),
    Date(i64),
    Null,
    Regex(&'a str, &'a str),
    DbPointer(DbPtr<'a>),
    Code(&'a str),
    Symbol(&'a str),
    CodeWScope(&'a str, DocRef<'a>),
    Int32(i32),
    Timestamp(Timestamp),
    Int64(i64),
    Decimal(Decimal128),
    MinKey,
    MaxKey,
}

impl<'a> Val<'a> {
    /// Classifies the value.
    pub(crate) fn view(self) -> View<'a> {
        match self {
            Val::Raw(r) => match r {
                RawBsonRef::Double(d) => View::Double(d),
                RawBsonRef::String(s) => View::Str(s),
                RawBsonRef::Array(a) => View::Arr(ArrRef::Raw(a)),
                RawBsonRef::Document(d) => View::Doc(DocRef::Raw(d)),
                RawBsonRef::Boolean(b) => View::Bool(b),
                RawBsonRef::Null => View::Null,
                RawBsonRef::RegularExpression(re) => {
                    View::Regex(re.pattern.as_str(), re.options.as_str())
                }
                RawBsonRef::JavaScriptCode(c) => View::Code(c),
                RawBsonRef::JavaScriptCodeWithScope(c) => {
                    View::CodeWScope(c.code, DocRef::Raw(c.scope))
                }
                RawBsonRef::Int32(i) => View::Int32(i),
                RawBsonRef::Int64(i) => View::Int64(i),
                RawBsonRef::Timestamp(t) => View::Timestamp(t),
                RawBsonRef::Binary(b) => View::Binary(u8::from(b.subtype), b.bytes),
                RawBsonRef::ObjectId(o) => View::ObjectId(o),
                RawBsonRef::DateTime(d) => View::Date(d.timestamp_millis()),
                RawBsonRef::Symbol(s) => View::Symbol(s),
                RawBsonRef::Decimal128(d) => View::Decimal(d),
                RawBsonRef::Undefined => View::Undefined,
                RawBsonRef::MaxKey => View::MaxKey,
                RawBsonRef::MinKey => View::MinKey,
                RawBsonRef::DbPointer(p) => View::DbPointer(DbPtr::Raw(p)),
            },
            Val::Owned(b) => match b {
                Bson::Double(d) => View::Double(*d),
                Bson::String(s) => View::Str(s),
                Bson::Array(a) => View::Arr(ArrRef::Owned(a)),
                Bson::Document(d) => View::Doc(DocRef::Owned(d)),
                Bson::Boolean(v) => View::Bool(*v),
                Bson::Null => View::Null,
                Bson::RegularExpression(re) => {
                    View::Regex(re.pattern.as_str(), re.options.as_str())
                }
                Bson::JavaScriptCode(c) => View::Code(c),
                Bson::JavaScriptCodeWithScope(c) => {
                    View::CodeWScope(&c.code, DocRef::Owned(&c.scope))
                }
                Bson::Int32(i) => View::Int32(*i),
                Bson::Int64(i) => View::Int64(*i),
                Bson::Timestamp(t) => View::Timestamp(*t),
                Bson::Binary(bin) => View::Binary(u8::from(bin.subtype), &bin.bytes),
                Bson::ObjectId(o) => View::ObjectId(*o),
                Bson::DateTime(d) => View::Date(d.timestamp_millis()),
                Bson::Symbol(s) => View::Symbol(s),
                Bson::Decimal128(d) => View::Decimal(*d),
                Bson::Undefined => View::Undefined,
                Bson::MaxKey => View::MaxKey,
                Bson::MinKey => View::MinKey,
                Bson::DbPointer(_) => View::DbPointer(DbPtr::Owned(b)),
            },
        }
    }

    /// The BSON element type.
    pub(crate) fn element_type(self) -> ElementType {
        match self {
            Val::Raw(r) => r.element_type(),
            Val::Owned(b) => b.element_type(),
        }
    }

    /// The value as a document, if it is one.
    pub(crate) fn as_doc(self) -> Option<DocRef<'a>> {
        match self {
            Val::Raw(RawBsonRef::Document(d)) => Some(DocRef::Raw(d)),
            Val::Owned(Bson::Document(d)) => Some(DocRef::Owned(d)),
            _ => None,
        }
    }

    /// The value as an array, if it is one.
    pub(crate) fn as_arr(self) -> Option<ArrRef<'a>> {
        match self {
            Val::Raw(RawBsonRef::Array(a)) => Some(ArrRef::Raw(a)),
            Val::Owned(Bson::Array(a)) => Some(ArrRef::Owned(a)),
            _ => None,
        }
    }

    /// The value as a string (not a symbol).
    pub(crate) fn as_str(self) -> Option<&'a str> {
        match self {
            Val::Raw(RawBsonRef::String(s)) => Some(s),
            Val::Owned(Bson::String(s)) => Some(s),
            _ => None,
        }
    }

    /// True for arrays.
    pub(crate) fn is_array(self) -> bool {
        self.as_arr().is_some()
    }

    /// True for int32, int64, double and decimal128.
    pub(crate) fn is_number(self) -> bool {
        matches!(
            self.element_type(),
            ElementType::Int32 | ElementType::Int64 | ElementType::Double | ElementType::Decimal128
        )
    }

    /// An owned copy of the value.
    pub(crate) fn to_bson(self) -> Bson {
        match self {
            Val::Owned(b) => b.clone(),
            Val::Raw(r) => raw_to_bson_at(r, 0),
        }
    }
}

/// Nesting limit of the documents this module decodes or accepts in specifications: mongod
/// refuses BSON nested deeper than 200 levels in commands (100 in stored documents).
pub(crate) const MAX_NESTING: usize = 200;

/// Decodes a raw value. Raw values the server stores are valid BSON; anything the `bson` crate
/// refuses to decode (invalid UTF-8) becomes `Null` rather than a panic, and so do values
/// nested deeper than [`MAX_NESTING`] (the server never stores those), so decoding never
/// recurses without bound.
fn raw_to_bson_at(r: RawBsonRef<'_>, depth: usize) -> Bson {
    match r {
        RawBsonRef::Double(d) => Bson::Double(d),
        RawBsonRef::String(s) => Bson::String(s.to_owned()),
        RawBsonRef::Int32(i) => Bson::Int32(i),
        RawBsonRef::Int64(i) => Bson::Int64(i),
        RawBsonRef::Boolean(b) => Bson::Boolean(b),
        RawBsonRef::Null => Bson::Null,
        RawBsonRef::Document(d) => {
            if depth >= MAX_NESTING {
                return Bson::Null;
            }
            Bson::Document(raw_doc_at(d, depth + 1))
        }
        RawBsonRef::Array(a) => {
            if depth >= MAX_NESTING {
                return Bson::Null;
            }
            let mut out = Vec::new();
            for v in a.into_iter().map_while(Result::ok) {
                out.push(raw_to_bson_at(v, depth + 1));
            }
            Bson::Array(out)
        }
        RawBsonRef::JavaScriptCodeWithScope(c) => {
            if depth >= MAX_NESTING {
                return Bson::Null;
            }
            Bson::JavaScriptCodeWithScope(bson::JavaScriptCodeWithScope {
                code: c.code.to_owned(),
                scope: raw_doc_at(c.scope, depth + 1),
            })
        }
        other => Bson::try_from(other).unwrap_or(Bson::Null),
    }
}

fn raw_doc_at(d: &RawDocument, depth: usize) -> Document {
    let mut out = Document::new();
    for elem in d.iter_elements().map_while(Result::ok) {
        if let Ok(v) = elem.value() {
            out.insert(elem.key().as_str(), raw_to_bson_at(v, depth));
        }
    }
    out
}

/// Decodes a raw document (see `raw_to_bson_at` for malformed or too deep content).
pub(crate) fn raw_doc_to_document(d: &RawDocument) -> Document {
    raw_doc_at(d, 0)
}

/// Fails with 15 `Overflow` when a specification (filter, update, projection, pipeline)
/// nests deeper than [`MAX_NESTING`]; checking first keeps every later recursion bounded.
pub(crate) fn check_nesting(d: DocRef<'_>) -> Result<(), crate::query::QueryError> {
    fn ok(v: Val<'_>, left: usize) -> bool {
        match (v.as_doc(), v.as_arr()) {
            (Some(d), _) => left > 0 && d.iter().all(|(_, x)| ok(x, left - 1)),
            (_, Some(a)) => left > 0 && a.iter().all(|x| ok(x, left - 1)),
            _ => true,
        }
    }
    if d.iter().all(|(_, v)| ok(v, MAX_NESTING)) {
        Ok(())
    } else {
        Err(crate::query::QueryError::new(
            15,
            "Overflow",
            format!("BSONObj exceeds maximum nested object depth: {MAX_NESTING}"),
        ))
    }
}

impl<'a> DocRef<'a> {
    /// Iterates `(name, value)` pairs in order. A malformed raw element ends the iteration.
    pub(crate) fn iter(self) -> DocIter<'a> {
        match self {
            DocRef::Raw(d) => DocIter::Raw(d.iter_elements()),
            DocRef::Owned(d) => DocIter::Owned(d.iter()),
        }
    }

    /// The value of a top-level field.
    pub(crate) fn get(self, key: &str) -> Option<Val<'a>> {
        match self {
            DocRef::Raw(d) => d.get(key).ok().flatten().map(Val::Raw),
            DocRef::Owned(d) => d.get(key).map(Val::Owned),
        }
    }

    /// True when the document has no fields.
    pub(crate) fn is_empty(self) -> bool {
        match self {
            DocRef::Raw(d) => d.is_empty(),
            DocRef::Owned(d) => d.is_empty(),
        }
    }

    /// An owned copy.
    pub(crate) fn to_document(self) -> Document {
        match self {
            DocRef::Raw(d) => raw_doc_to_document(d),
            DocRef::Owned(d) => d.clone(),
        }
    }
}

/// Iterator over a [`DocRef`].
pub(crate) enum DocIter<'a> {
    Raw(bson::raw::RawIter<'a>),
    Owned(bson::document::Iter<'a>),
}

impl<'a> Iterator for DocIter<'a> {
    type Item = (&'a str, Val<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            DocIter::Raw(it) => match it.next() {
                Some(Ok(elem)) => match elem.value() {
                    Ok(v) => Some((elem.key().as_str(), Val::Raw(v))),
                    Err(_) => None,
                },
                _ => None,
            },
            DocIter::Owned(it) => it.next().map(|(k, v)| (k.as_str(), Val::Owned(v))),
        }
    }
}

impl<'a> ArrRef<'a> {
    /// Iterates the elements in order. A malformed raw element ends the iteration.
    pub(crate) fn iter(self) -> ArrIter<'a> {
        match self {
            ArrRef::Raw(a) => ArrIter::Raw(a.into_iter()),
            ArrRef::Owned(a) => ArrIter::Owned(a.iter()),
        }
    }

    /// The element at `index`.
    pub(crate) fn get(self, index: usize) -> Option<Val<'a>> {
        match self {
            ArrRef::Raw(a) => a.into_iter().map_while(Result::ok).nth(index).map(Val::Raw),
            ArrRef::Owned(a) => a.get(index).map(Val::Owned),
        }
    }

    /// The number of elements.
    pub(crate) fn len(self) -> usize {
        match self {
            ArrRef::Raw(a) => a.into_iter().map_while(Result::ok).count(),
            ArrRef::Owned(a) => a.len(),
        }
    }

    /// True when the array has no elements.
    pub(crate) fn is_empty(self) -> bool {
        match self {
            ArrRef::Raw(a) => a.is_empty(),
            ArrRef::Owned(a) => a.is_empty(),
        }
    }

    /// Owned copies of the elements.
    pub(crate) fn to_vec(self) -> Vec<Bson> {
        self.iter().map(Val::to_bson).collect()
    }
}

/// Iterator over an [`ArrRef`].
pub(crate) enum ArrIter<'a> {
    Raw(bson::raw::RawArrayIter<'a>),
    Owned(std::slice::Iter<'a, Bson>),
}

impl<'a> Iterator for ArrIter<'a> {
    type Item = Val<'a>;

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            ArrIter::Raw(it) => match it.next() {
                Some(Ok(v)) => Some(Val::Raw(v)),
                _ => None,
            },
            ArrIter::Owned(it) => it.next().map(Val::Owned),
        }
    }
}

impl DbPtr<'_> {
    /// The namespace and ObjectId bytes of the pointer.
    ///
    /// The `bson` crate keeps both private, so they are read back from the value's BSON
    /// encoding: `int32 length, namespace bytes, NUL, 12 ObjectId bytes`.
    pub(crate) fn parts(self) -> (Vec<u8>, [u8; 12]) {
        let mut doc = RawDocumentBuf::new();
        match self {
            DbPtr::Raw(p) => doc.append(bson::raw::cstr!("p"), RawBsonRef::DbPointer(p)),
            DbPtr::Owned(b) => {
                if let Ok(raw) = bson::RawBson::try_from(b.clone()) {
                    doc.append(bson::raw::cstr!("p"), raw);
                }
            }
        }
        // Layout: doc length (4), type (1), "p\0" (2), string length (4), ns, NUL, oid (12), EOO.
        let bytes = doc.as_bytes();
        let body = bytes.get(7..bytes.len().saturating_sub(1)).unwrap_or(&[]);
        let ns_len = body
            .get(0..4)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map(|b| i32::from_le_bytes(b).max(1) as usize - 1)
            .unwrap_or(0);
        let ns = body.get(4..4 + ns_len).unwrap_or(&[]).to_vec();
        let mut oid = [0u8; 12];
        if let Some(src) = body.get(4 + ns_len + 1..4 + ns_len + 13) {
            oid.copy_from_slice(src);
        }
        (ns, oid)
    }
}

/// The canonical sort rank of a BSON type, as mongod's `canonicalizeBSONType`: MinKey (-1) <
/// Undefined (0) < Null (5) < numbers (10) < String/Symbol (15) < Object (20) < Array (25) <
/// BinData (30) < ObjectId (35) < Boolean (40) < Date (45) < Timestamp (47) < Regex (50) <
/// DBPointer (55) < JavaScript (60) < JavaScriptWithScope (65) < MaxKey (127).
pub(crate) fn canonical_rank(t: ElementType) -> i8 {
    match t {
        ElementType::MinKey => -1,
        ElementType::Undefined => 0,
        ElementType::Null => 5,
        ElementType::Double | ElementType::Int32 | ElementType::Int64 | ElementType::Decimal128 => {
            10
        }
        ElementType::String | ElementType::Symbol => 15,
        ElementType::EmbeddedDocument => 20,
        ElementType::Array => 25,
        ElementType::Binary => 30,
        ElementType::ObjectId => 35,
        ElementType::Boolean => 40,
        ElementType::DateTime => 45,
        ElementType::Timestamp => 47,
        ElementType::RegularExpression => 50,
        ElementType::DbPointer => 55,
        ElementType::JavaScriptCode => 60,
        ElementType::JavaScriptCodeWithScope => 65,
        ElementType::MaxKey => 127,
    }
}

/// mongod's `$type` alias of an element type ("double", "string", "object", ...).
pub(crate) fn type_alias(t: ElementType) -> &'static str {
    match t {
        ElementType::Double => "double",
        ElementType::String => "string",
        ElementType::EmbeddedDocument => "object",
        ElementType::Array => "array",
        ElementType::Binary => "binData",
        ElementType::Undefined => "undefined",
        ElementType::ObjectId => "objectId",
        ElementType::Boolean => "bool",
        ElementType::DateTime => "date",
        ElementType::Null => "null",
        ElementType::RegularExpression => "regex",
        ElementType::DbPointer => "dbPointer",
        ElementType::JavaScriptCode => "javascript",
        ElementType::Symbol => "symbol",
        ElementType::JavaScriptCodeWithScope => "javascriptWithScope",
        ElementType::Int32 => "int",
        ElementType::Timestamp => "timestamp",
        ElementType::Int64 => "long",
        ElementType::Decimal128 => "decimal",
        ElementType::MaxKey => "maxKey",
        ElementType::MinKey => "minKey",
    }
}

/// Builds a regex value; `None` when the pattern or options contain a NUL byte (not
/// representable as BSON cstrings).
#[cfg(test)]
pub(crate) fn make_regex(pattern: &str, options: &str) -> Option<bson::Regex> {
    Some(bson::Regex {
        pattern: bson::raw::CString::try_from(pattern).ok()?,
        options: bson::raw::CString::try_from(options).ok()?,
    })
}
