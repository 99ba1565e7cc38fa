//! TLS with the official driver: a server certificate signed by a test CA, clients with
//! `tls=true&tlsCAFile=...`, a client trusting another CA, a plain-text client, bad PEM input.

mod common;

use std::time::Duration;

use mongodb::Client;
use mongodb::bson::{Document, doc};
use mongodb::error::ErrorKind;
use mongodb::options::ClientOptions;
use mongoshift_testkit::{ServerError, TestServer};

async fn connect(uri: &str, timeout: Duration) -> Client {
    let mut options = ClientOptions::parse(uri).await.expect("valid uri");
    options.server_selection_timeout = Some(timeout);
    Client::with_options(options).expect("client options are valid")
}

#[tokio::test]
async fn clients_trusting_the_ca_connect_and_authenticate() {
    let certs = common::certs::generate();
    let server = TestServer::builder()
        .tls(&certs.server_cert, &certs.server_key)
        .user("app", "secret", ["readWrite@shop"])
        .start()
        .await
        .unwrap();
    let uri = server.uri();
    assert!(uri.ends_with("?replicaSet=rs0&tls=true"), "{uri}");
    let with_ca = format!("{uri}&tlsCAFile={}", certs.ca_file.display());
    let authenticated = with_ca.replacen("mongodb://", "mongodb://app:secret@", 1);
    let client = connect(&authenticated, Duration::from_secs(5)).await;
    let coll = client.database("shop").collection::<Document>("orders");
    coll.insert_one(doc! {"_id": 1}).await.unwrap();
    assert_eq!(coll.count_documents(doc! {}).await.unwrap(), 1);

    // The certificate also names localhost.
    let by_name = with_ca.replace("127.0.0.1", "localhost") + "&directConnection=true";
    let anonymous = connect(&by_name, Duration::from_secs(5)).await;
    anonymous
        .database("admin")
        .run_command(doc! {"ping": 1})
        .await
        .unwrap();
}

#[tokio::test]
async fn a_client_trusting_another_ca_fails_with_a_certificate_error() {
    let certs = common::certs::generate();
    let server = TestServer::builder()
        .tls(&certs.server_cert, &certs.server_key)
        .start()
        .await
        .unwrap();
    let uri = format!(
        "{}&tlsCAFile={}",
        server.uri(),
        certs.other_ca_file.display()
    );
    // Long enough for the monitor's first handshake, whose failure the selection error names,
    // even on a loaded machine.
    let client = connect(&uri, Duration::from_secs(10)).await;
    let err = client
        .database("admin")
        .run_command(doc! {"ping": 1})
        .await
        .unwrap_err();
    let ErrorKind::ServerSelection { message, .. } = err.kind.as_ref() else {
        panic!("expected a server selection error, got {err:?}");
    };
    assert!(
        message.contains("invalid peer certificate") && message.contains("UnknownIssuer"),
        "{message}"
    );
}

#[tokio::test]
async fn plain_text_clients_are_disconnected() {
    let certs = common::certs::generate();
    let server = TestServer::builder()
        .tls(&certs.server_cert, &certs.server_key)
        .start()
        .await
        .unwrap();
    let plain = server.uri().replace("&tls=true", "");
    let client = connect(&plain, Duration::from_millis(1000)).await;
    let err = client
        .database("admin")
        .run_command(doc! {"ping": 1})
        .await
        .unwrap_err();
    assert!(
        matches!(err.kind.as_ref(), ErrorKind::ServerSelection { .. }),
        "{err:?}"
    );
    // The server keeps serving TLS clients.
    let uri = format!("{}&tlsCAFile={}", server.uri(), certs.ca_file.display());
    let tls_client = connect(&uri, Duration::from_secs(5)).await;
    tls_client
        .database("admin")
        .run_command(doc! {"ping": 1})
        .await
        .unwrap();
}

#[test]
fn unusable_pem_makes_start_fail() {
    let certs = common::certs::generate();
    let err = TestServer::builder()
        .tls("not a certificate", &certs.server_key)
        .start_blocking()
        .unwrap_err();
    assert!(matches!(err, ServerError::Tls(_)), "{err}");
    let err = TestServer::builder()
        .tls(&certs.server_cert, "not a key")
        .start_blocking()
        .unwrap_err();
    assert!(matches!(err, ServerError::Tls(_)), "{err}");
    // A key that does not belong to the certificate.
    let other = common::certs::generate();
    let err = TestServer::builder()
        .tls(&certs.server_cert, &other.server_key)
        .start_blocking()
        .unwrap_err();
    assert!(matches!(err, ServerError::Tls(_)), "{err}");
}
