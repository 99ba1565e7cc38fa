//! The server side of SCRAM-SHA-1 and SCRAM-SHA-256 (RFC 5802, RFC 7677) as mongod speaks it.
//!
//! MongoDB specifics: SCRAM-SHA-1 hashes the password as `hex(md5("user:mongo:password"))`
//! before PBKDF2 and does not SASLprep it; SCRAM-SHA-256 SASLpreps the password. Like mongod,
//! the server nonce is the client nonce followed by 24 random bytes in base64, the salt is the
//! hash length minus 4 bytes (16 for SHA-1, 28 for SHA-256), and the default iteration counts
//! are mongod's `scramIterationCount` (10 000) and `scramSHA256IterationCount` (15 000).
//! Channel binding and mandatory extensions are refused, the authorization identity must match
//! the user name, and `=2C`/`=3D` in user names decode to `,`/`=`.
//!
//! This module is pure: no I/O and no knowledge of users beyond a lookup callback. Every
//! failure is a [`ScramError`]; the command layer answers all of them with mongod's single
//! `AuthenticationFailed` reply so that clients learn nothing about why.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::digest::{Digest, FixedOutput, KeyInit};
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha1::Sha1;
use sha2::Sha256;

/// A SCRAM mechanism.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mechanism {
    /// `SCRAM-SHA-1`.
    ScramSha1,
    /// `SCRAM-SHA-256`.
    ScramSha256,
}

impl Mechanism {
    /// Every mechanism, in the order mongod lists them in `saslSupportedMechs`.
    pub const ALL: [Mechanism; 2] = [Mechanism::ScramSha1, Mechanism::ScramSha256];

    /// The SASL name (`SCRAM-SHA-256`).
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::ScramSha1 => "SCRAM-SHA-1",
            Mechanism::ScramSha256 => "SCRAM-SHA-256",
        }
    }

    /// Parses a SASL mechanism name (exact, as mongod compares it).
    pub fn from_name(name: &str) -> Option<Mechanism> {
        Mechanism::ALL.into_iter().find(|m| m.name() == name)
    }

    /// mongod's default iteration count for new credentials.
    pub fn default_iterations(self) -> u32 {
        match self {
            Mechanism::ScramSha1 => 10_000,
            Mechanism::ScramSha256 => 15_000,
        }
    }

    fn salt_len(self) -> usize {
        match self {
            Mechanism::ScramSha1 => 16,
            Mechanism::ScramSha256 => 28,
        }
    }

    fn hmac(self, key: &[u8], data: &[u8]) -> Vec<u8> {
        match self {
            Mechanism::ScramSha1 => hmac::<Hmac<Sha1>>(key, data),
            Mechanism::ScramSha256 => hmac::<Hmac<Sha256>>(key, data),
        }
    }

    fn hash(self, data: &[u8]) -> Vec<u8> {
        match self {
            Mechanism::ScramSha1 => Sha1::digest(data).to_vec(),
            Mechanism::ScramSha256 => Sha256::digest(data).to_vec(),
        }
    }

    fn salted_password(self, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
        match self {
            Mechanism::ScramSha1 => pbkdf2_hmac::<Hmac<Sha1>>(password, salt, iterations, 20),
            Mechanism::ScramSha256 => pbkdf2_hmac::<Hmac<Sha256>>(password, salt, iterations, 32),
        }
    }
}

fn hmac<M: Mac + KeyInit>(key: &[u8], data: &[u8]) -> Vec<u8> {
    // HMAC accepts keys of any length, so this cannot fail; an empty MAC would only make the
    // proof check fail.
    match <M as KeyInit>::new_from_slice(key) {
        Ok(mut mac) => {
            mac.update(data);
            mac.finalize().into_bytes().to_vec()
        }
        Err(_) => Vec::new(),
    }
}

fn pbkdf2_hmac<M: Mac + KeyInit + FixedOutput + Clone + Sync>(
    password: &[u8],
    salt: &[u8],
    iterations: u32,
    len: usize,
) -> Vec<u8> {
    let mut out = vec![0u8; len];
    // Only an invalid key length can fail, and HMAC has none.
    if pbkdf2::pbkdf2::<M>(password, salt, iterations, &mut out).is_err() {
        out.clear();
    }
    out
}

/// Why a SCRAM conversation failed. The reason is logged, never sent to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScramError {
    /// The payload is not UTF-8 or not `key=value` fields in the expected order.
    #[error("malformed SCRAM message: {0}")]
    Malformed(String),
    /// The client asked for channel binding (`p=`), which mongod does not support.
    #[error("Server does not support channel binding")]
    ChannelBinding,
    /// The client sent a mandatory extension (`m=`).
    #[error("SCRAM mandatory extensions are not supported")]
    MandatoryExtension,
    /// The authorization identity names another user.
    #[error("SCRAM user name {user} does not match authzid {authzid}")]
    AuthzidMismatch {
        /// The user name of the message.
        user: String,
        /// The `a=` identity.
        authzid: String,
    },
    /// No such user in the authentication database.
    #[error("Could not find user \"{0}\"")]
    UnknownUser(String),
    /// The nonce of the final message is not the one the server issued.
    #[error("Unmatched SCRAM nonce received from client in second step")]
    NonceMismatch,
    /// The proof does not match the stored key: a wrong password.
    #[error("SCRAM authentication failed, storedKey mismatch")]
    ProofMismatch,
    /// A message arrived after the conversation ended.
    #[error("Invalid SCRAM authentication step")]
    TooManySteps,
    /// The password cannot be SASLprepped (SCRAM-SHA-256 only).
    #[error("the password cannot be SASLprepped: {0}")]
    SaslPrep(String),
}

/// What mongod stores for a user and mechanism: salt, iteration count, StoredKey and ServerKey.
/// The password itself is not kept.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The random salt.
    pub salt: Vec<u8>,
    /// The PBKDF2 iteration count.
    pub iterations: u32,
    /// `H(ClientKey)`.
    stored_key: Vec<u8>,
    /// `HMAC(SaltedPassword, "Server Key")`.
    server_key: Vec<u8>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Keys are secrets: keep them out of logs and panic messages.
        f.debug_struct("Credentials")
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

impl Credentials {
    /// Derives credentials from a password with a fresh random salt.
    pub fn derive(
        mechanism: Mechanism,
        user: &str,
        password: &str,
        iterations: u32,
    ) -> Result<Credentials, ScramError> {
        let mut salt = vec![0u8; mechanism.salt_len()];
        rand::rng().fill_bytes(&mut salt);
        Credentials::derive_with_salt(mechanism, user, password, &salt, iterations)
    }

    /// Derives credentials with a given salt (tests use the RFC vectors).
    pub fn derive_with_salt(
        mechanism: Mechanism,
        user: &str,
        password: &str,
        salt: &[u8],
        iterations: u32,
    ) -> Result<Credentials, ScramError> {
        let prepared = match mechanism {
            Mechanism::ScramSha1 => {
                let digest = md5::Md5::digest(format!("{user}:mongo:{password}").as_bytes());
                digest
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<String>()
            }
            Mechanism::ScramSha256 => stringprep::saslprep(password)
                .map_err(|e| ScramError::SaslPrep(e.to_string()))?
                .into_owned(),
        };
        let salted = mechanism.salted_password(prepared.as_bytes(), salt, iterations);
        let client_key = mechanism.hmac(&salted, b"Client Key");
        Ok(Credentials {
            salt: salt.to_vec(),
            iterations,
            stored_key: mechanism.hash(&client_key),
            server_key: mechanism.hmac(&salted, b"Server Key"),
        })
    }
}

/// Where a conversation stands.
#[derive(Debug, Clone)]
enum State {
    /// The server-first message was sent; the client's proof is next.
    AwaitingProof {
        /// Client nonce + server nonce.
        nonce: String,
        /// `client-first-message-bare + "," + server-first-message`.
        auth_message: String,
        /// The user's stored keys.
        credentials: Credentials,
    },
    /// The server signature was sent without `done`; an empty message completes it.
    AwaitingEmpty,
    /// Finished (successfully).
    Done,
}

/// One SCRAM conversation on the server.
#[derive(Debug, Clone)]
pub struct Conversation {
    /// The mechanism in use.
    pub mechanism: Mechanism,
    /// The user name from the client-first message (after `=2C`/`=3D` decoding).
    pub user: String,
    /// `options.skipEmptyExchange` of `saslStart`: finish with the server signature.
    skip_empty_exchange: bool,
    state: State,
}

/// The result of one conversation step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// The payload to send back.
    pub payload: Vec<u8>,
    /// Whether authentication is complete and successful.
    pub done: bool,
}

impl Conversation {
    /// Handles the client-first message and produces the server-first message.
    /// `lookup` returns the credentials of a user name for this mechanism.
    pub fn start(
        mechanism: Mechanism,
        payload: &[u8],
        skip_empty_exchange: bool,
        lookup: impl FnOnce(&str) -> Option<Credentials>,
    ) -> Result<(Conversation, Step), ScramError> {
        let text = std::str::from_utf8(payload)
            .map_err(|_| ScramError::Malformed("client-first message is not UTF-8".into()))?;
        let (cbind, rest) = text
            .split_once(',')
            .ok_or_else(|| ScramError::Malformed("missing gs2 header".into()))?;
        if cbind.starts_with("p=") {
            return Err(ScramError::ChannelBinding);
        }
        if cbind != "n" && cbind != "y" {
            return Err(ScramError::Malformed(format!(
                "Incorrect SCRAM client message prefix: {cbind}"
            )));
        }
        let (authzid, bare) = rest
            .split_once(',')
            .ok_or_else(|| ScramError::Malformed("missing authzid separator".into()))?;
        let authzid =
            match authzid {
                "" => None,
                a => Some(a.strip_prefix("a=").ok_or_else(|| {
                    ScramError::Malformed(format!("Incorrect SCRAM authzid: {a}"))
                })?),
            };
        if bare.starts_with("m=") {
            return Err(ScramError::MandatoryExtension);
        }
        // mongod skips empty fields when splitting, so "n=u,,r=x" is accepted; the auth message
        // still uses the raw text.
        let mut fields = bare.split(',').filter(|f| !f.is_empty());
        let user = fields
            .next()
            .and_then(|f| f.strip_prefix("n="))
            .filter(|u| !u.is_empty())
            .ok_or_else(|| ScramError::Malformed("Invalid SCRAM user name".into()))?
            .replace("=2C", ",")
            .replace("=3D", "=");
        if let Some(authzid) = authzid
            && authzid != user
        {
            return Err(ScramError::AuthzidMismatch {
                user,
                authzid: authzid.to_string(),
            });
        }
        let client_nonce = fields
            .next()
            .and_then(|f| f.strip_prefix("r="))
            .filter(|n| n.len() >= 4)
            .ok_or_else(|| ScramError::Malformed("Invalid SCRAM client nonce".into()))?;
        let credentials = lookup(&user).ok_or_else(|| ScramError::UnknownUser(user.clone()))?;

        let mut server_nonce = [0u8; 24];
        rand::rng().fill_bytes(&mut server_nonce);
        let nonce = format!("{client_nonce}{}", BASE64.encode(server_nonce));
        let server_first = format!(
            "r={nonce},s={},i={}",
            BASE64.encode(&credentials.salt),
            credentials.iterations
        );
        let auth_message = format!("{bare},{server_first}");
        Ok((
            Conversation {
                mechanism,
                user,
                skip_empty_exchange,
                state: State::AwaitingProof {
                    nonce,
                    auth_message,
                    credentials,
                },
            },
            Step {
                payload: server_first.into_bytes(),
                done: false,
            },
        ))
    }

    /// Handles the next client message (`saslContinue`).
    pub fn step(&mut self, payload: &[u8]) -> Result<Step, ScramError> {
        match std::mem::replace(&mut self.state, State::Done) {
            State::AwaitingProof {
                nonce,
                auth_message,
                credentials,
            } => {
                let signature = self.verify_proof(payload, &nonce, &auth_message, &credentials)?;
                let payload = format!("v={}", BASE64.encode(signature)).into_bytes();
                if self.skip_empty_exchange {
                    Ok(Step {
                        payload,
                        done: true,
                    })
                } else {
                    self.state = State::AwaitingEmpty;
                    Ok(Step {
                        payload,
                        done: false,
                    })
                }
            }
            // mongod's third step ignores its input and completes.
            State::AwaitingEmpty => Ok(Step {
                payload: Vec::new(),
                done: true,
            }),
            State::Done => Err(ScramError::TooManySteps),
        }
    }

    /// Checks the client-final message and returns the server signature.
    fn verify_proof(
        &self,
        payload: &[u8],
        expected_nonce: &str,
        auth_message: &str,
        credentials: &Credentials,
    ) -> Result<Vec<u8>, ScramError> {
        let text = std::str::from_utf8(payload)
            .map_err(|_| ScramError::Malformed("client-final message is not UTF-8".into()))?;
        let (without_proof, proof) = text
            .rsplit_once(',')
            .ok_or_else(|| ScramError::Malformed("missing proof".into()))?;
        let proof = proof
            .strip_prefix("p=")
            .filter(|p| !p.is_empty())
            .ok_or_else(|| ScramError::Malformed("Incorrect SCRAM ClientProof".into()))?;
        let mut fields = without_proof.split(',').filter(|f| !f.is_empty());
        fields
            .next()
            .filter(|f| f.starts_with("c=") && f.len() > 2)
            .ok_or_else(|| ScramError::Malformed("Incorrect SCRAM channel binding".into()))?;
        let nonce = fields
            .next()
            .and_then(|f| f.strip_prefix("r="))
            .ok_or_else(|| ScramError::Malformed("Incorrect SCRAM client|server nonce".into()))?;
        if nonce != expected_nonce {
            return Err(ScramError::NonceMismatch);
        }
        let proof = BASE64
            .decode(proof)
            .map_err(|_| ScramError::Malformed("ClientProof is not base64".into()))?;
        let auth_message = format!("{auth_message},{without_proof}");
        let mechanism = self.mechanism;
        let client_signature = mechanism.hmac(&credentials.stored_key, auth_message.as_bytes());
        if proof.len() != client_signature.len() {
            return Err(ScramError::ProofMismatch);
        }
        let client_key: Vec<u8> = proof
            .iter()
            .zip(&client_signature)
            .map(|(a, b)| a ^ b)
            .collect();
        // A plain comparison: timing side channels are out of scope for a test server.
        if mechanism.hash(&client_key) != credentials.stored_key {
            return Err(ScramError::ProofMismatch);
        }
        Ok(mechanism.hmac(&credentials.server_key, auth_message.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client side written from the RFC, to drive the server in tests.
    fn client_final(
        mechanism: Mechanism,
        prepared_password: &str,
        client_first_bare: &str,
        server_first: &str,
    ) -> (String, Vec<u8>) {
        let mut salt = None;
        let mut iterations = None;
        let mut nonce = None;
        for field in server_first.split(',') {
            match field.split_at(2) {
                ("r=", v) => nonce = Some(v.to_string()),
                ("s=", v) => salt = Some(BASE64.decode(v).unwrap()),
                ("i=", v) => iterations = Some(v.parse::<u32>().unwrap()),
                _ => {}
            }
        }
        let salted = mechanism.salted_password(
            prepared_password.as_bytes(),
            &salt.unwrap(),
            iterations.unwrap(),
        );
        let client_key = mechanism.hmac(&salted, b"Client Key");
        let stored_key = mechanism.hash(&client_key);
        let without_proof = format!("c=biws,r={}", nonce.unwrap());
        let auth_message = format!("{client_first_bare},{server_first},{without_proof}");
        let signature = mechanism.hmac(&stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(&signature)
            .map(|(a, b)| a ^ b)
            .collect();
        let server_key = mechanism.hmac(&salted, b"Server Key");
        let server_signature = mechanism.hmac(&server_key, auth_message.as_bytes());
        (
            format!("{without_proof},p={}", BASE64.encode(proof)),
            server_signature,
        )
    }

    #[test]
    fn rfc7677_vector_gives_the_published_stored_and_server_keys() {
        // RFC 7677 §3: user "user", password "pencil", salt "W22ZaJ0SNY7soEsUEjb6gQ==", 4096.
        let salt = BASE64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let creds =
            Credentials::derive_with_salt(Mechanism::ScramSha256, "user", "pencil", &salt, 4096)
                .unwrap();
        let bare = "n=user,r=rOprNGfwEbeRWgbNEkqO";
        let server_first = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
        let without_proof = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
        let auth_message = format!("{bare},{server_first},{without_proof}");
        let server_signature =
            Mechanism::ScramSha256.hmac(&creds.server_key, auth_message.as_bytes());
        assert_eq!(
            BASE64.encode(server_signature),
            "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );
    }

    fn run(
        mechanism: Mechanism,
        password_for_client: &str,
        skip: bool,
    ) -> Result<Step, ScramError> {
        let creds = Credentials::derive(mechanism, "alice", "secret", 4096).unwrap();
        let bare = "n=alice,r=fyko+d2lbbFgONRv9qkxdawL";
        let (mut conv, first) =
            Conversation::start(mechanism, format!("n,,{bare}").as_bytes(), skip, |u| {
                (u == "alice").then(|| creds.clone())
            })?;
        assert!(!first.done);
        let server_first = String::from_utf8(first.payload).unwrap();
        let prepared = match mechanism {
            Mechanism::ScramSha1 => {
                let d = md5::Md5::digest(format!("alice:mongo:{password_for_client}").as_bytes());
                d.iter().map(|b| format!("{b:02x}")).collect()
            }
            Mechanism::ScramSha256 => password_for_client.to_string(),
        };
        let (final_msg, expected_sig) = client_final(mechanism, &prepared, bare, &server_first);
        let step = conv.step(final_msg.as_bytes())?;
        assert_eq!(
            step.payload,
            format!("v={}", BASE64.encode(expected_sig)).into_bytes()
        );
        if skip {
            return Ok(step);
        }
        assert!(!step.done);
        let last = conv.step(b"")?;
        assert!(conv.step(b"").is_err(), "nothing follows the end");
        Ok(last)
    }

    #[test]
    fn both_mechanisms_authenticate_with_and_without_the_empty_exchange() {
        for mechanism in Mechanism::ALL {
            for skip in [true, false] {
                let step = run(mechanism, "secret", skip).unwrap();
                assert!(step.done, "{mechanism:?} skip={skip}");
            }
        }
    }

    #[test]
    fn a_wrong_password_is_a_proof_mismatch() {
        for mechanism in Mechanism::ALL {
            assert_eq!(
                run(mechanism, "wrong", true).unwrap_err(),
                ScramError::ProofMismatch
            );
        }
    }

    #[test]
    fn malformed_client_first_messages_are_errors() {
        for payload in [
            &b""[..],
            b"n",
            b"x,,n=a,r=abcdef",
            b"p=tls-unique,,n=a,r=abcdef",
            b"n,,m=ext,n=a,r=abcdef",
            b"n,a=bob,n=alice,r=abcdef",
            b"n,,r=abcdef",
            b"n,,n=alice",
            b"n,,n=alice,r=ab",
            b"\xff\xfe",
        ] {
            let result = Conversation::start(Mechanism::ScramSha256, payload, true, |_| None);
            assert!(result.is_err(), "{payload:?}");
        }
        let unknown =
            Conversation::start(Mechanism::ScramSha256, b"n,,n=bob,r=abcdef", true, |_| None);
        assert_eq!(unknown.unwrap_err(), ScramError::UnknownUser("bob".into()));
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_payloads_are_errors_not_panics(
            first in proptest::collection::vec(proptest::arbitrary::any::<u8>(), 0..48),
            second in proptest::collection::vec(proptest::arbitrary::any::<u8>(), 0..96),
        ) {
            let creds = Credentials::derive_with_salt(Mechanism::ScramSha1, "u", "p", b"salt", 1).unwrap();
            for head in [first.clone(), b"n,,n=u,r=abcdefgh".to_vec()] {
                if let Ok((mut conv, _)) =
                    Conversation::start(Mechanism::ScramSha1, &head, true, |_| Some(creds.clone()))
                {
                    let _ = conv.step(&second);
                    let _ = conv.step(&first);
                }
            }
        }
    }

    #[test]
    fn encoded_user_names_are_decoded() {
        let (conv, _) = Conversation::start(
            Mechanism::ScramSha256,
            b"n,,n=a=2Cb=3Dc,r=abcdef",
            true,
            |u| {
                assert_eq!(u, "a,b=c");
                Credentials::derive(Mechanism::ScramSha256, u, "x", 4096).ok()
            },
        )
        .unwrap();
        assert_eq!(conv.user, "a,b=c");
    }
}
