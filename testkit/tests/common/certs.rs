//! Test certificates: a CA and a server certificate for `localhost` and `127.0.0.1`, written
//! as PEM files into a temporary directory (the driver takes `tlsCAFile` as a path).

use std::path::PathBuf;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

/// PEM material for one test deployment.
pub struct TestCerts {
    /// Keeps the files alive.
    pub dir: tempfile::TempDir,
    /// The server certificate (PEM).
    pub server_cert: String,
    /// The server private key (PEM).
    pub server_key: String,
    /// Path of the CA certificate that signed the server certificate.
    pub ca_file: PathBuf,
    /// Path of an unrelated CA certificate (for wrong-CA tests).
    pub other_ca_file: PathBuf,
    /// Path of the server certificate file.
    pub server_cert_file: PathBuf,
    /// Path of the server key file.
    pub server_key_file: PathBuf,
}

fn ca(name: &str) -> (String, Issuer<'static, KeyPair>) {
    let key = KeyPair::generate().expect("CA key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    let cert = params.self_signed(&key).expect("self-signed CA");
    (cert.pem(), Issuer::new(params, key))
}

/// Generates a CA, a server certificate signed by it, and a second unrelated CA.
pub fn generate() -> TestCerts {
    let (ca_pem, issuer) = ca("mongoshift testkit CA");
    let (other_ca_pem, _) = ca("someone else's CA");
    let server_key = KeyPair::generate().expect("server key");
    let mut params = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
        .expect("server params");
    params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    let server_cert = params
        .signed_by(&server_key, &issuer)
        .expect("server certificate");
    let dir = tempfile::tempdir().expect("temp dir");
    let write = |name: &str, contents: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, contents).expect("write PEM");
        path
    };
    let ca_file = write("ca.pem", &ca_pem);
    let other_ca_file = write("other-ca.pem", &other_ca_pem);
    let server_cert_file = write("server.pem", &server_cert.pem());
    let server_key_file = write("server.key", &server_key.serialize_pem());
    TestCerts {
        server_cert: server_cert.pem(),
        server_key: server_key.serialize_pem(),
        ca_file,
        other_ca_file,
        server_cert_file,
        server_key_file,
        dir,
    }
}
