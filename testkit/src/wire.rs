//! Wire framing: bytes ⇄ MongoDB messages.
//!
//! Responsibilities:
//! - parse the 16-byte message header and the two request opcodes clients send: OP_MSG (2013)
//!   and, for the legacy handshake of Node and mongosh, OP_QUERY (2004);
//! - validate what mongod validates before it runs anything (flag bits, section kinds, sequence
//!   sizes, BSON well-formedness), so the layers above can treat documents as valid;
//! - encode replies: OP_MSG with one kind-0 section, or OP_REPLY for an OP_QUERY.
//!
//! Nothing here knows about commands. A [`WireError`] means the peer broke the protocol; the
//! connection layer answers it by closing that connection only, as mongod does.

use bson::{RawDocument, RawDocumentBuf};

/// OP_REPLY, the legacy reply to OP_QUERY.
pub const OP_REPLY: i32 = 1;
/// OP_QUERY, the legacy request opcode (only the handshake is served with it).
pub const OP_QUERY: i32 = 2004;
/// OP_COMPRESSED. We never advertise compression, so no client may send it.
pub const OP_COMPRESSED: i32 = 2012;
/// OP_MSG, the only opcode modern drivers use.
pub const OP_MSG: i32 = 2013;

/// The largest message we accept, and the `maxMessageSizeBytes` we advertise (mongod's value).
pub const MAX_MESSAGE_SIZE: usize = 48_000_000;
/// The largest user document, `maxBsonObjectSize` (16 MiB).
pub const MAX_BSON_OBJECT_SIZE: usize = 16 * 1024 * 1024;
/// The size of every message header.
pub const HEADER_LEN: usize = 16;

/// OP_MSG flag bit 0: a CRC-32C checksum follows the sections.
pub const FLAG_CHECKSUM_PRESENT: u32 = 1;
/// OP_MSG flag bit 1: the sender expects no reply (fire-and-forget).
pub const FLAG_MORE_TO_COME: u32 = 1 << 1;
/// OP_MSG flag bit 16: the client accepts several replies (awaitable hello only).
pub const FLAG_EXHAUST_ALLOWED: u32 = 1 << 16;
/// Bits 0–15 are "required": a receiver must reject unknown ones.
const REQUIRED_BITS_MASK: u32 = 0xFFFF;

/// The fixed header every message starts with (all integers little-endian).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Total message length in bytes, header included.
    pub length: i32,
    /// The sender's id for this message; a reply's `response_to` echoes it.
    pub request_id: i32,
    /// For replies, the id of the request being answered; 0 in requests.
    pub response_to: i32,
    /// Which message format follows the header.
    pub op_code: i32,
}

impl Header {
    /// Parses a header from its 16 bytes.
    pub fn parse(bytes: &[u8; HEADER_LEN]) -> Header {
        let int =
            |i: usize| i32::from_le_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
        Header {
            length: int(0),
            request_id: int(4),
            response_to: int(8),
            op_code: int(12),
        }
    }

    /// The length of the message body that follows the header, validated against our limits.
    pub fn body_len(&self) -> Result<usize, WireError> {
        let length = usize::try_from(self.length).map_err(|_| WireError::BadLength(self.length))?;
        if !(HEADER_LEN..=MAX_MESSAGE_SIZE).contains(&length) {
            return Err(WireError::BadLength(self.length));
        }
        Ok(length - HEADER_LEN)
    }
}

/// A protocol violation; the connection that sent it is closed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    /// The header's length is below 16 bytes or above `maxMessageSizeBytes`.
    #[error("message length {0} is outside 16..={MAX_MESSAGE_SIZE}")]
    BadLength(i32),
    /// An opcode we do not serve (OP_COMPRESSED, the removed legacy opcodes, garbage).
    #[error("unsupported opcode {0}")]
    UnsupportedOpCode(i32),
    /// An OP_MSG with a required flag bit set that we do not know.
    #[error("unknown required OP_MSG flag bits {0:#x}")]
    UnknownRequiredFlags(u32),
    /// The message ended before a field it announced.
    #[error("message truncated while reading {0}")]
    Truncated(&'static str),
    /// A section kind other than 0 and 1.
    #[error("unknown OP_MSG section kind {0}")]
    UnknownSectionKind(u8),
    /// OP_MSG needs exactly one kind-0 section.
    #[error("OP_MSG has {0} body sections; exactly one is required")]
    BodyCount(usize),
    /// Two kind-1 sections share an identifier, or one shadows a body field.
    #[error("duplicate document sequence identifier '{0}'")]
    DuplicateSequence(String),
    /// A kind-1 section whose size field does not fit its documents.
    #[error("malformed document sequence '{0}'")]
    BadSequence(String),
    /// A cstring without its terminating NUL, or not UTF-8.
    #[error("malformed cstring in {0}")]
    BadCString(&'static str),
    /// A document that is not well-formed BSON.
    #[error("invalid BSON in {context}: {message}")]
    InvalidBson {
        /// Which part of the message held the document.
        context: &'static str,
        /// What the BSON parser reported.
        message: String,
    },
    /// The CRC-32C checksum does not match the message.
    #[error("OP_MSG checksum mismatch")]
    ChecksumMismatch,
}

/// One kind-1 section: a named sequence of documents standing for an array argument.
#[derive(Debug, Clone, PartialEq)]
pub struct DocumentSequence {
    /// The argument name the sequence stands for (`documents`, `updates`, `deletes`, ...).
    pub identifier: String,
    /// The documents, in order, each validated.
    pub documents: Vec<RawDocumentBuf>,
}

/// A parsed OP_MSG request.
#[derive(Debug, Clone, PartialEq)]
pub struct OpMsg {
    /// The flag bits as sent (checksum already verified and stripped).
    pub flags: u32,
    /// The kind-0 section: the command document (`{find: "c", ..., $db: "db"}`).
    pub body: RawDocumentBuf,
    /// The kind-1 sections, in the order they appeared.
    pub sequences: Vec<DocumentSequence>,
}

impl OpMsg {
    /// True when the client asked for no reply (w:0 writes from pymongo and Node).
    pub fn more_to_come(&self) -> bool {
        self.flags & FLAG_MORE_TO_COME != 0
    }
}

/// A parsed OP_QUERY request (only `*.$cmd` handshake commands are served).
#[derive(Debug, Clone, PartialEq)]
pub struct OpQuery {
    /// The OP_QUERY flag bits (ignored: they only matter for legacy cursors).
    pub flags: i32,
    /// `db.collection`; for commands, `db.$cmd`.
    pub full_collection_name: String,
    /// How many documents to skip (0 for commands).
    pub number_to_skip: i32,
    /// How many documents to return (1 or -1 for commands).
    pub number_to_return: i32,
    /// The query document; for commands, the command itself.
    pub query: RawDocumentBuf,
}

/// A request message, ready for the command layer.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    /// The modern command message.
    Msg(OpMsg),
    /// The legacy query message, for the Node/mongosh handshake.
    Query(OpQuery),
}

/// Parses the body (everything after the header) of a request message.
pub fn parse_request(header: &Header, body: &[u8]) -> Result<Request, WireError> {
    match header.op_code {
        OP_MSG => parse_op_msg(body).map(Request::Msg),
        OP_QUERY => parse_op_query(body).map(Request::Query),
        other => Err(WireError::UnsupportedOpCode(other)),
    }
}

/// A cursor over a byte slice that reports truncation instead of panicking.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Reader { bytes, pos: 0 }
    }

    fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], WireError> {
        let end = self.pos.checked_add(n).ok_or(WireError::Truncated(what))?;
        let slice = self
            .bytes
            .get(self.pos..end)
            .ok_or(WireError::Truncated(what))?;
        self.pos = end;
        Ok(slice)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, WireError> {
        Ok(self.take(1, what)?[0])
    }

    fn i32(&mut self, what: &'static str) -> Result<i32, WireError> {
        let b = self.take(4, what)?;
        Ok(i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn cstring(&mut self, what: &'static str) -> Result<&'a str, WireError> {
        let rest = &self.bytes[self.pos..];
        let nul = rest
            .iter()
            .position(|&b| b == 0)
            .ok_or(WireError::BadCString(what))?;
        let s = std::str::from_utf8(&rest[..nul]).map_err(|_| WireError::BadCString(what))?;
        self.pos += nul + 1;
        Ok(s)
    }

    /// Reads one BSON document, validating it completely.
    fn document(&mut self, what: &'static str) -> Result<RawDocumentBuf, WireError> {
        let len_bytes = self
            .bytes
            .get(self.pos..self.pos + 4)
            .ok_or(WireError::Truncated(what))?;
        let len = i32::from_le_bytes([len_bytes[0], len_bytes[1], len_bytes[2], len_bytes[3]]);
        let len = usize::try_from(len).map_err(|_| WireError::InvalidBson {
            context: what,
            message: format!("negative document length {len}"),
        })?;
        let bytes = self.take(len, what)?;
        let doc =
            RawDocumentBuf::from_bytes(bytes.to_vec()).map_err(|e| WireError::InvalidBson {
                context: what,
                message: e.to_string(),
            })?;
        validate_document(&doc, 0).map_err(|message| WireError::InvalidBson {
            context: what,
            message,
        })?;
        Ok(doc)
    }
}

/// mongod refuses documents nested deeper than this (`BSONDepth::kDefaultMaxAllowableDepth`
/// plus slack for the command envelope); we cap recursion so hostile input cannot overflow
/// the stack.
const MAX_NESTING: usize = 200;

/// Walks every element of a document so that later layers can iterate it without meeting
/// malformed bytes. mongod validates incoming BSON the same way before running a command.
pub fn validate_document(doc: &RawDocument, depth: usize) -> Result<(), String> {
    if depth > MAX_NESTING {
        return Err("document nesting is too deep".to_string());
    }
    for element in doc.iter() {
        let (_, value) = element.map_err(|e| e.to_string())?;
        validate_value(value, depth)?;
    }
    Ok(())
}

fn validate_value(value: bson::RawBsonRef<'_>, depth: usize) -> Result<(), String> {
    use bson::RawBsonRef;
    match value {
        RawBsonRef::Document(d) => validate_document(d, depth + 1),
        RawBsonRef::Array(a) => {
            for item in a.into_iter() {
                validate_value(item.map_err(|e| e.to_string())?, depth + 1)?;
            }
            Ok(())
        }
        RawBsonRef::JavaScriptCodeWithScope(c) => validate_document(c.scope, depth + 1),
        _ => Ok(()),
    }
}

fn parse_op_msg(body: &[u8]) -> Result<OpMsg, WireError> {
    let mut reader = Reader::new(body);
    let flags = reader.i32("flagBits")? as u32;
    let unknown_required =
        flags & REQUIRED_BITS_MASK & !(FLAG_CHECKSUM_PRESENT | FLAG_MORE_TO_COME);
    if unknown_required != 0 {
        return Err(WireError::UnknownRequiredFlags(unknown_required));
    }
    let mut end = body.len();
    if flags & FLAG_CHECKSUM_PRESENT != 0 {
        // The connection verifies the CRC with `verify_checksum` (it needs the header bytes);
        // here we only strip it before reading sections.
        if end < 8 {
            return Err(WireError::Truncated("checksum"));
        }
        end -= 4;
    }
    let mut reader = Reader::new(&body[..end]);
    reader.pos = 4;

    let mut bodies = Vec::new();
    let mut sequences: Vec<DocumentSequence> = Vec::new();
    while reader.remaining() > 0 {
        match reader.u8("section kind")? {
            0 => bodies.push(reader.document("OP_MSG body")?),
            1 => {
                let size = reader.i32("sequence size")?;
                let size = usize::try_from(size)
                    .ok()
                    .filter(|s| *s >= 4)
                    .ok_or(WireError::Truncated("document sequence"))?;
                let section = reader.take(size - 4, "document sequence")?;
                let mut inner = Reader::new(section);
                let identifier = inner.cstring("sequence identifier")?.to_string();
                let mut documents = Vec::new();
                while inner.remaining() > 0 {
                    documents.push(
                        inner
                            .document("document sequence")
                            .map_err(|_| WireError::BadSequence(identifier.clone()))?,
                    );
                }
                if sequences.iter().any(|s| s.identifier == identifier) {
                    return Err(WireError::DuplicateSequence(identifier));
                }
                sequences.push(DocumentSequence {
                    identifier,
                    documents,
                });
            }
            other => return Err(WireError::UnknownSectionKind(other)),
        }
    }
    if bodies.len() != 1 {
        return Err(WireError::BodyCount(bodies.len()));
    }
    let body = bodies.remove(0);
    for seq in &sequences {
        if matches!(body.get(&seq.identifier), Ok(Some(_))) {
            return Err(WireError::DuplicateSequence(seq.identifier.clone()));
        }
    }
    Ok(OpMsg {
        flags,
        body,
        sequences,
    })
}

fn parse_op_query(body: &[u8]) -> Result<OpQuery, WireError> {
    let mut reader = Reader::new(body);
    let flags = reader.i32("OP_QUERY flags")?;
    let full_collection_name = reader.cstring("fullCollectionName")?.to_string();
    let number_to_skip = reader.i32("numberToSkip")?;
    let number_to_return = reader.i32("numberToReturn")?;
    let query = reader.document("OP_QUERY query")?;
    // An optional returnFieldsSelector may follow; commands never use it, but validate it.
    if reader.remaining() > 0 {
        reader.document("returnFieldsSelector")?;
    }
    if reader.remaining() > 0 {
        return Err(WireError::Truncated("OP_QUERY trailing bytes"));
    }
    Ok(OpQuery {
        flags,
        full_collection_name,
        number_to_skip,
        number_to_return,
        query,
    })
}

/// Checks the CRC-32C of a whole message (header + body) whose OP_MSG has `checksumPresent`.
pub fn verify_checksum(header_bytes: &[u8; HEADER_LEN], body: &[u8]) -> Result<(), WireError> {
    if body.len() < 8 {
        return Err(WireError::Truncated("checksum"));
    }
    let (payload, sum) = body.split_at(body.len() - 4);
    let expected = u32::from_le_bytes([sum[0], sum[1], sum[2], sum[3]]);
    let mut crc = crc32c_update(!0, header_bytes);
    crc = crc32c_update(crc, payload);
    if !crc == expected {
        Ok(())
    } else {
        Err(WireError::ChecksumMismatch)
    }
}

/// CRC-32C (Castagnoli), bitwise. Checksummed requests are rare (no driver we serve sends
/// them), so a table-free loop is fast enough and saves a dependency.
fn crc32c_update(mut crc: u32, bytes: &[u8]) -> u32 {
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0x82F6_3B78 & mask);
        }
    }
    crc
}

/// The bytes of an OP_MSG reply before its body of `body_len` bytes: the header, flag bits 0
/// and a kind-0 section's kind byte. The body follows as it is: copying a cursor batch of
/// megabytes into one frame would cost a copy and fresh pages per reply.
pub fn op_msg_prefix(request_id: i32, response_to: i32, body_len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + 4 + 1);
    let length = HEADER_LEN + 4 + 1 + body_len;
    push_header(&mut out, length, request_id, response_to, OP_MSG);
    out.extend_from_slice(&0u32.to_le_bytes());
    out.push(0);
    out
}

/// The bytes of an OP_REPLY carrying one document of `body_len` bytes, before the document, as
/// mongod answers an OP_QUERY command.
pub fn op_reply_prefix(request_id: i32, response_to: i32, body_len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + 4 + 8 + 4 + 4);
    let length = HEADER_LEN + 4 + 8 + 4 + 4 + body_len;
    push_header(&mut out, length, request_id, response_to, OP_REPLY);
    // responseFlags: mongod sets AwaitCapable (8) on every OP_REPLY.
    out.extend_from_slice(&8i32.to_le_bytes());
    out.extend_from_slice(&0i64.to_le_bytes()); // cursorID
    out.extend_from_slice(&0i32.to_le_bytes()); // startingFrom
    out.extend_from_slice(&1i32.to_le_bytes()); // numberReturned
    out
}

fn push_header(out: &mut Vec<u8>, length: usize, request_id: i32, response_to: i32, op: i32) {
    // Replies are bounded by the batch-size limits of the command layer, far below i32::MAX.
    let length = i32::try_from(length).unwrap_or(i32::MAX);
    out.extend_from_slice(&length.to_le_bytes());
    out.extend_from_slice(&request_id.to_le_bytes());
    out.extend_from_slice(&response_to.to_le_bytes());
    out.extend_from_slice(&op.to_le_bytes());
}

/// Builds a complete OP_MSG request; used by tests and the fuzz harness to speak to the server.
pub fn encode_op_msg_request(
    request_id: i32,
    flags: u32,
    body: &RawDocument,
    sequences: &[(&str, &[RawDocumentBuf])],
) -> Vec<u8> {
    let mut payload = Vec::new();
    payload.extend_from_slice(&flags.to_le_bytes());
    payload.push(0);
    payload.extend_from_slice(body.as_bytes());
    for (identifier, docs) in sequences {
        payload.push(1);
        let size =
            4 + identifier.len() + 1 + docs.iter().map(|d| d.as_bytes().len()).sum::<usize>();
        payload.extend_from_slice(&(size as i32).to_le_bytes());
        payload.extend_from_slice(identifier.as_bytes());
        payload.push(0);
        for d in *docs {
            payload.extend_from_slice(d.as_bytes());
        }
    }
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len() + 4);
    let checksum = flags & FLAG_CHECKSUM_PRESENT != 0;
    let length = HEADER_LEN + payload.len() + if checksum { 4 } else { 0 };
    push_header(&mut out, length, request_id, 0, OP_MSG);
    out.extend_from_slice(&payload);
    if checksum {
        let crc = !crc32c_update(!0, &out);
        out.extend_from_slice(&crc.to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use bson::rawdoc;

    fn split(msg: &[u8]) -> (Header, [u8; HEADER_LEN], &[u8]) {
        let mut h = [0u8; HEADER_LEN];
        h.copy_from_slice(&msg[..HEADER_LEN]);
        (Header::parse(&h), h, &msg[HEADER_LEN..])
    }

    #[test]
    fn sections_in_any_order() {
        let body = rawdoc! { "insert": "c", "$db": "db" };
        let docs = vec![rawdoc! { "_id": 1 }, rawdoc! { "_id": 2 }];
        let msg = encode_op_msg_request(7, 0, &body, &[("documents", &docs)]);
        let (header, _, rest) = split(&msg);
        assert_eq!(header.length as usize, msg.len());
        // Move the kind-1 section in front of the kind-0 one.
        let flags = &rest[..4];
        let body_len = body.as_bytes().len();
        let kind0 = &rest[4..5 + body_len];
        let kind1 = &rest[5 + body_len..];
        let reordered = [flags, kind1, kind0].concat();
        let Request::Msg(parsed) = parse_request(&header, &reordered).unwrap() else {
            panic!("expected OP_MSG");
        };
        assert_eq!(parsed.body, body);
        assert_eq!(parsed.sequences[0].identifier, "documents");
        assert_eq!(parsed.sequences[0].documents, docs);
    }

    #[test]
    fn checksum_is_verified_and_stripped() {
        let body = rawdoc! { "ping": 1, "$db": "admin" };
        let mut msg = encode_op_msg_request(1, FLAG_CHECKSUM_PRESENT, &body, &[]);
        let (header, hbytes, rest) = split(&msg);
        verify_checksum(&hbytes, rest).unwrap();
        let Request::Msg(parsed) = parse_request(&header, rest).unwrap() else {
            panic!("expected OP_MSG");
        };
        assert_eq!(parsed.body, body);
        let last = msg.len() - 1;
        msg[last] ^= 0xFF;
        let (_, hbytes, rest) = split(&msg);
        assert_eq!(
            verify_checksum(&hbytes, rest),
            Err(WireError::ChecksumMismatch)
        );
    }

    #[test]
    fn protocol_violations_are_errors() {
        let body = rawdoc! { "ping": 1, "$db": "admin" };
        let msg = encode_op_msg_request(1, 1 << 5, &body, &[]);
        let (header, _, rest) = split(&msg);
        assert!(matches!(
            parse_request(&header, rest),
            Err(WireError::UnknownRequiredFlags(_))
        ));
        // Optional bits (16–31) are ignored.
        let msg = encode_op_msg_request(1, FLAG_EXHAUST_ALLOWED, &body, &[]);
        let (header, _, rest) = split(&msg);
        assert!(parse_request(&header, rest).is_ok());
        // Two bodies.
        let mut twice = rest.to_vec();
        twice.push(0);
        twice.extend_from_slice(body.as_bytes());
        assert_eq!(parse_request(&header, &twice), Err(WireError::BodyCount(2)));
        // A sequence that shadows a body field.
        let shadow = rawdoc! { "insert": "c", "documents": [], "$db": "db" };
        let msg = encode_op_msg_request(1, 0, &shadow, &[("documents", &[])]);
        let (header, _, rest) = split(&msg);
        assert!(matches!(
            parse_request(&header, rest),
            Err(WireError::DuplicateSequence(_))
        ));
        // Every truncation of a valid message is an error, never a panic (except the one cut at
        // the section boundary, which leaves a valid message without the sequence).
        let msg = encode_op_msg_request(1, 0, &body, &[("documents", &[rawdoc! {"a": 1}])]);
        let (header, _, rest) = split(&msg);
        let boundary = 4 + 1 + body.as_bytes().len();
        for cut in (0..rest.len()).filter(|c| *c != boundary) {
            assert!(
                parse_request(&header, &rest[..cut]).is_err(),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn op_query_handshake_parses_and_reply_encodes() {
        let query = rawdoc! { "ismaster": 1, "helloOk": true };
        let mut body = Vec::new();
        body.extend_from_slice(&0i32.to_le_bytes());
        body.extend_from_slice(b"admin.$cmd\0");
        body.extend_from_slice(&0i32.to_le_bytes());
        body.extend_from_slice(&(-1i32).to_le_bytes());
        body.extend_from_slice(query.as_bytes());
        let header = Header {
            length: (HEADER_LEN + body.len()) as i32,
            request_id: 3,
            response_to: 0,
            op_code: OP_QUERY,
        };
        let Request::Query(q) = parse_request(&header, &body).unwrap() else {
            panic!("expected OP_QUERY");
        };
        assert_eq!(q.full_collection_name, "admin.$cmd");
        assert_eq!(q.number_to_return, -1);
        assert_eq!(q.query, query);
        let mut reply = op_reply_prefix(9, 3, query.as_bytes().len());
        reply.extend_from_slice(query.as_bytes());
        let (h, _, rest) = split(&reply);
        assert_eq!((h.request_id, h.response_to, h.op_code), (9, 3, OP_REPLY));
        assert_eq!(&rest[20..], query.as_bytes());
    }
}
