//! One client connection: reads request frames from the socket and writes reply frames.
//!
//! Responsibilities: enforce the message size limit before allocating, read exactly one
//! message at a time (clients never pipeline except with `moreToCome`), verify checksums, and
//! write replies with increasing request ids. It knows frames, not commands, and not whether
//! the bytes travel over plain TCP or TLS.

use std::io;

use bytes::Buf;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::TcpStream;

use crate::wire::{self, HEADER_LEN, Header, Request, WireError};

/// Why a connection stopped reading.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    /// The socket failed or the peer went away mid-message.
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
    /// The peer broke the protocol; we close the connection, as mongod does.
    #[error("protocol error: {0}")]
    Protocol(#[from] WireError),
}

/// The read side of a socket or TLS stream. Boxed so one `Connection` type serves both; the
/// buffers below make the dynamic call a per-syscall cost, not a per-byte one.
type ReadSide = Box<dyn AsyncRead + Send + Unpin>;
/// The write side of a socket or TLS stream.
type WriteSide = Box<dyn AsyncWrite + Send + Unpin>;

/// A framed MongoDB connection over TCP or TLS.
pub struct Connection {
    /// Buffered read side: most requests are small, so buffering saves syscalls.
    reader: BufReader<ReadSide>,
    /// Buffered write side, flushed after every reply so a client never waits on our buffer.
    writer: BufWriter<WriteSide>,
    /// Our own request-id counter for replies (clients that check `responseTo` ignore it,
    /// but pymongo and Node expect it to be set).
    next_request_id: i32,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("next_request_id", &self.next_request_id)
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// Wraps an accepted socket.
    pub fn new(socket: TcpStream) -> Connection {
        // Small replies (hello, acks) must not wait for Nagle's algorithm.
        let _ = socket.set_nodelay(true);
        let (read, write) = socket.into_split();
        Connection::from_halves(Box::new(read), Box::new(write))
    }

    /// Wraps any byte stream, e.g. a TLS stream over an accepted socket.
    pub fn from_stream<S>(stream: S) -> Connection
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let (read, write) = tokio::io::split(stream);
        Connection::from_halves(Box::new(read), Box::new(write))
    }

    fn from_halves(read: ReadSide, write: WriteSide) -> Connection {
        Connection {
            reader: BufReader::with_capacity(64 * 1024, read),
            writer: BufWriter::with_capacity(64 * 1024, write),
            next_request_id: 1,
        }
    }

    /// Reads the next request. `Ok(None)` means the peer closed the connection cleanly between
    /// messages.
    pub async fn read_request(&mut self) -> Result<Option<(Header, Request)>, ConnectionError> {
        let mut header_bytes = [0u8; HEADER_LEN];
        // Distinguish a clean close (EOF before any header byte) from a truncated message.
        let n = self.reader.read(&mut header_bytes).await?;
        if n == 0 {
            return Ok(None);
        }
        if n < HEADER_LEN {
            self.reader.read_exact(&mut header_bytes[n..]).await?;
        }
        let header = Header::parse(&header_bytes);
        // Validate the length before allocating: a hostile length must not make us reserve
        // gigabytes.
        let body_len = header.body_len()?;
        // Read into spare capacity, not a zeroed buffer: jemalloc zeroes a reused allocation of
        // megabytes (an insert batch) by handing its pages back to the kernel, so each page of
        // each request would fault in again. `take` stops at the end of this message.
        let mut body = Vec::with_capacity(body_len);
        let mut rest = (&mut self.reader).take(body_len as u64);
        while body.len() < body_len {
            if rest.read_buf(&mut body).await? == 0 {
                return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into());
            }
        }
        if header.op_code == wire::OP_MSG && body.len() >= 4 {
            let flags = u32::from_le_bytes([body[0], body[1], body[2], body[3]]);
            if flags & wire::FLAG_CHECKSUM_PRESENT != 0 {
                wire::verify_checksum(&header_bytes, &body)?;
            }
        }
        let request = wire::parse_request(&header, &body)?;
        Ok(Some((header, request)))
    }

    /// Writes a message, its prefix (header and op fields) and its body, and flushes it. A
    /// small message goes out whole from the buffer; a larger one is written from where its
    /// parts are, in one vectored write, never copied.
    pub async fn write_message(&mut self, prefix: &[u8], body: &[u8]) -> io::Result<()> {
        self.writer
            .write_all_buf(&mut Buf::chain(prefix, body))
            .await?;
        self.writer.flush().await
    }

    /// Allocates the request id for our next reply.
    pub fn next_request_id(&mut self) -> i32 {
        let id = self.next_request_id;
        self.next_request_id = self.next_request_id.wrapping_add(1).max(1);
        id
    }

    /// Closes the write side so the peer sees EOF promptly.
    pub async fn shutdown(&mut self) {
        let _ = self.writer.shutdown().await;
    }
}
