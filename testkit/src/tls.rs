//! TLS for the listener, like a mongod started with `--tlsMode requireTLS`.
//!
//! Built on rustls with the ring provider that the `mongodb` driver's `rustls-tls` feature
//! already compiles, chosen explicitly (`builder_with_provider`) so the process-wide default
//! provider never matters. The certificate chain and key come as PEM; clients are not asked
//! for certificates. Plain-text clients fail the handshake and are disconnected, as mongod
//! disconnects them.

use std::sync::Arc;

use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

/// Why the TLS configuration cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate PEM does not parse.
    #[error("invalid TLS certificate PEM: {0}")]
    Certificate(#[source] rustls::pki_types::pem::Error),
    /// The certificate PEM holds no `CERTIFICATE` block.
    #[error("the TLS certificate PEM contains no certificate")]
    NoCertificate,
    /// The key PEM does not parse or holds no private key.
    #[error("invalid TLS private key PEM: {0}")]
    Key(#[source] rustls::pki_types::pem::Error),
    /// rustls refused the certificate and key (e.g. they do not match).
    #[error("cannot use the TLS certificate and key: {0}")]
    Config(#[source] rustls::Error),
}

/// Builds the acceptor from a PEM certificate chain (server certificate first) and a PEM
/// private key (PKCS#8, PKCS#1 or SEC1).
pub fn acceptor(cert_pem: &[u8], key_pem: &[u8]) -> Result<TlsAcceptor, TlsError> {
    let certs = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(TlsError::Certificate)?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate);
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(TlsError::Key)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(TlsError::Config)?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}
