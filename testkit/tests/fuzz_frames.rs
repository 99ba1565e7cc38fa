//! Property test of the framing layer over real sockets: random bytes, truncated frames and
//! corrupted headers must close (at most) the offending connection, never crash the server or
//! disturb other connections.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use mongodb::bson::{RawDocumentBuf, rawdoc};
use mongoshift_testkit::wire::{self, HEADER_LEN, Header};
use proptest::prelude::*;

/// Set by the panic hook if any thread of the process panics (the server's connection tasks
/// run in this process, so a panic there would be caught by tokio and otherwise go unnoticed).
static PANICKED: AtomicBool = AtomicBool::new(false);

fn server() -> &'static (mongoshift_testkit::TestServerHandle, SocketAddr) {
    static SERVER: OnceLock<(mongoshift_testkit::TestServerHandle, SocketAddr)> = OnceLock::new();
    SERVER.get_or_init(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICKED.store(true, Ordering::SeqCst);
            previous(info);
        }));
        let handle = mongoshift_testkit::TestServer::builder()
            .start_blocking()
            .expect("server starts");
        let addr = handle.addr();
        (handle, addr)
    })
}

/// Sends a ping on a fresh connection and checks the reply is `ok: 1`.
fn ping(addr: SocketAddr) -> Result<(), String> {
    let mut stream = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    let body = rawdoc! {"ping": 1, "$db": "admin"};
    stream
        .write_all(&wire::encode_op_msg_request(42, 0, &body, &[]))
        .map_err(|e| e.to_string())?;
    let mut header = [0u8; HEADER_LEN];
    stream.read_exact(&mut header).map_err(|e| e.to_string())?;
    let header = Header::parse(&header);
    if header.response_to != 42 || header.op_code != wire::OP_MSG {
        return Err(format!("bad reply header {header:?}"));
    }
    let mut rest = vec![0u8; header.length as usize - HEADER_LEN];
    stream.read_exact(&mut rest).map_err(|e| e.to_string())?;
    // flags (4) + kind byte (1) + document.
    let doc = RawDocumentBuf::from_bytes(rest[5..].to_vec()).map_err(|e| e.to_string())?;
    match doc.get_f64("ok") {
        Ok(1.0) => Ok(()),
        other => Err(format!("ping failed: {other:?}")),
    }
}

/// Writes `bytes`, half-closes, and drains whatever the server answers until it closes.
fn send_garbage(addr: SocketAddr, bytes: &[u8]) {
    let Ok(mut stream) = TcpStream::connect(addr) else {
        return;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = stream.write_all(bytes);
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let mut sink = Vec::new();
    let _ = stream.read_to_end(&mut sink);
}

/// A valid request frame to mutate.
fn valid_frame() -> Vec<u8> {
    let body = rawdoc! {"insert": "c", "ordered": true, "$db": "fuzz"};
    let docs = vec![
        rawdoc! {"_id": 1, "a": "x"},
        rawdoc! {"_id": 2, "b": [1, 2]},
    ];
    wire::encode_op_msg_request(7, 0, &body, &[("documents", &docs)])
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, .. ProptestConfig::default() })]

    #[test]
    fn random_bytes_do_not_disturb_the_server(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let (_, addr) = server();
        // Keep a healthy connection open across the garbage.
        let healthy = TcpStream::connect(*addr).unwrap();
        send_garbage(*addr, &bytes);
        prop_assert!(ping(*addr).is_ok());
        drop(healthy);
        prop_assert!(!PANICKED.load(Ordering::SeqCst));
    }

    #[test]
    fn truncated_and_corrupted_frames_close_only_their_connection(
        cut in 0usize..200,
        flip_at in 0usize..200,
        flip in any::<u8>(),
        bogus_length in any::<i32>(),
        use_bogus_length in any::<bool>(),
    ) {
        let (_, addr) = server();
        let mut frame = valid_frame();
        if use_bogus_length {
            frame[..4].copy_from_slice(&bogus_length.to_le_bytes());
        }
        let at = flip_at % frame.len();
        frame[at] ^= flip;
        let cut = cut % (frame.len() + 1);
        send_garbage(*addr, &frame[..cut]);
        prop_assert!(ping(*addr).is_ok());
        prop_assert!(!PANICKED.load(Ordering::SeqCst));
    }
}

#[test]
fn a_valid_frame_round_trips() {
    let (_, addr) = server();
    ping(*addr).unwrap();
    // Sanity check of the fixture: the unmodified frame is accepted.
    let frame = valid_frame();
    let mut stream = TcpStream::connect(*addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream.write_all(&frame).unwrap();
    let mut header = [0u8; HEADER_LEN];
    stream.read_exact(&mut header).unwrap();
    assert_eq!(Header::parse(&header).response_to, 7);
}
