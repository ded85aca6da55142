//! Endpoint signing secrets encrypted at rest.
//!
//! A database dump or a replica must not hand out every customer's signing secret, so the
//! stored form is XChaCha20-Poly1305 ciphertext under a key the services get from
//! `HERALD_SECRET_KEY`. The endpoint id is the associated data: a ciphertext copied onto
//! another endpoint's row does not open. The key id is stored beside each ciphertext, so the
//! main key can be rotated: put the new key first in `HERALD_SECRET_KEY`, keep the old one after
//! it (decrypt only), run `herald-ingest secrets reencrypt`, then drop the old key.
//!
//! Random 192-bit nonces make nonce reuse a non-issue for any realistic number of writes.
//! Without a key (local development) secrets are stored as they are and the services say so
//! once at start; such rows are encrypted by the re-encrypt command once a key is set.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;

use crate::signing::Secret;

const NONCE_LEN: usize = 24;
const KEY_LEN: usize = 32;

/// Why a key specification or a stored secret could not be used. Never carries key or
/// secret material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretBoxError {
    #[error("HERALD_SECRET_KEY: {0}")]
    Spec(String),
    #[error(
        "a secret is encrypted with key {0:?}, which HERALD_SECRET_KEY does not hold (keep old keys after the current one until `herald-ingest secrets reencrypt` has run)"
    )]
    UnknownKey(String),
    #[error("a secret is encrypted but HERALD_SECRET_KEY is not set")]
    NoKey,
    #[error(
        "a stored secret encrypted with key {0:?} does not decrypt (wrong key or corrupted row)"
    )]
    Corrupt(String),
}

struct Key {
    id: String,
    cipher: XChaCha20Poly1305,
}

/// The keys secrets are sealed and opened with: the first is current (used to seal), the
/// others only open. Its `Debug` shows key ids, never key material.
#[derive(Default)]
pub struct Keyring {
    keys: Vec<Key>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field(
                "key_ids",
                &self.keys.iter().map(|k| &k.id).collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// A secret as stored: the key id (`None`: not encrypted) and the text of the column.
#[derive(Clone, PartialEq, Eq)]
pub struct Sealed {
    pub key_id: Option<String>,
    pub text: String,
}

impl fmt::Debug for Sealed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sealed")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

fn valid_id(id: &str) -> bool {
    (1..=32).contains(&id.len())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

impl Keyring {
    /// No key: secrets are stored in clear (development only).
    pub fn none() -> Self {
        Self::default()
    }

    /// Parses `id:base64key[,id:base64key...]`; the first key seals, all of them open.
    /// Each key is 32 random bytes in standard base64 (`herald-ingest secrets generate-key`).
    pub fn parse(spec: &str) -> Result<Self, SecretBoxError> {
        let mut keys: Vec<Key> = Vec::new();
        for (n, part) in spec.split(',').map(str::trim).enumerate() {
            let position = n + 1;
            let (id, material) = part.split_once(':').ok_or_else(|| {
                SecretBoxError::Spec(format!(
                    "key {position} must be written id:base64 (for example k1:...)"
                ))
            })?;
            if !valid_id(id) {
                return Err(SecretBoxError::Spec(format!(
                    "key {position}: id must be 1 to 32 letters, digits, '-' or '_'"
                )));
            }
            if keys.iter().any(|k| k.id == id) {
                return Err(SecretBoxError::Spec(format!("key id {id:?} appears twice")));
            }
            let bytes = B64.decode(material.trim()).map_err(|_| {
                SecretBoxError::Spec(format!("key {id:?} is not valid standard base64"))
            })?;
            if bytes.len() != KEY_LEN {
                return Err(SecretBoxError::Spec(format!(
                    "key {id:?} must decode to {KEY_LEN} bytes, not {}",
                    bytes.len()
                )));
            }
            let cipher = XChaCha20Poly1305::new_from_slice(&bytes)
                .map_err(|_| SecretBoxError::Spec(format!("key {id:?} has the wrong length")))?;
            keys.push(Key {
                id: id.to_owned(),
                cipher,
            });
        }
        Ok(Self { keys })
    }

    /// A fresh key specification (`id:base64`) for `HERALD_SECRET_KEY`.
    pub fn generate_spec(id: &str) -> Result<String, SecretBoxError> {
        if !valid_id(id) {
            return Err(SecretBoxError::Spec(
                "key id must be 1 to 32 letters, digits, '-' or '_'".into(),
            ));
        }
        let mut key = [0u8; KEY_LEN];
        rand::rng().fill_bytes(&mut key);
        Ok(format!("{id}:{}", B64.encode(key)))
    }

    /// The id of the key new secrets are sealed with; `None` when secrets are stored in clear.
    pub fn current_id(&self) -> Option<&str> {
        self.keys.first().map(|k| k.id.as_str())
    }

    /// Seals `secret` for the row identified by `row_id` (the associated data).
    pub fn seal(&self, secret: &Secret, row_id: &[u8]) -> Sealed {
        let Some(key) = self.keys.first() else {
            return Sealed {
                key_id: None,
                text: secret.expose().to_owned(),
            };
        };
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let payload = Payload {
            msg: secret.expose().as_bytes(),
            aad: row_id,
        };
        // Encryption of an in-memory buffer with a valid key cannot fail.
        let ciphertext = key
            .cipher
            .encrypt(XNonce::from_slice(&nonce), payload)
            .unwrap_or_default();
        let mut blob = Vec::with_capacity(NONCE_LEN + ciphertext.len());
        blob.extend_from_slice(&nonce);
        blob.extend_from_slice(&ciphertext);
        Sealed {
            key_id: Some(key.id.clone()),
            text: B64.encode(blob),
        }
    }

    /// Opens a stored secret of the row `row_id`.
    pub fn open(&self, sealed: &Sealed, row_id: &[u8]) -> Result<Secret, SecretBoxError> {
        let Some(id) = &sealed.key_id else {
            return Ok(Secret::from_stored(sealed.text.clone()));
        };
        if self.keys.is_empty() {
            return Err(SecretBoxError::NoKey);
        }
        let key = self
            .keys
            .iter()
            .find(|k| &k.id == id)
            .ok_or_else(|| SecretBoxError::UnknownKey(id.clone()))?;
        let corrupt = || SecretBoxError::Corrupt(id.clone());
        let blob = B64.decode(&sealed.text).map_err(|_| corrupt())?;
        if blob.len() < NONCE_LEN {
            return Err(corrupt());
        }
        let (nonce, ciphertext) = blob.split_at(NONCE_LEN);
        let plain = key
            .cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: row_id,
                },
            )
            .map_err(|_| corrupt())?;
        String::from_utf8(plain)
            .map(Secret::from_stored)
            .map_err(|_| corrupt())
    }

    /// Whether `sealed` is already under the current key (nothing for re-encryption to do).
    pub fn is_current(&self, sealed: &Sealed) -> bool {
        sealed.key_id.as_deref() == self.current_id()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(spec: &str) -> Keyring {
        Keyring::parse(spec).unwrap()
    }

    #[test]
    fn seal_then_open_round_trips_and_hides_the_secret() {
        let spec = Keyring::generate_spec("k1").unwrap();
        let r = ring(&spec);
        let secret = Secret::generate();
        let sealed = r.seal(&secret, b"row-1");
        assert_eq!(sealed.key_id.as_deref(), Some("k1"));
        assert!(!sealed.text.contains(secret.expose()));
        assert_eq!(r.open(&sealed, b"row-1").unwrap(), secret);
        // Two seals of one secret differ (random nonce).
        assert_ne!(r.seal(&secret, b"row-1").text, sealed.text);
    }

    #[test]
    fn a_ciphertext_moved_to_another_row_or_altered_does_not_open() {
        let r = ring(&Keyring::generate_spec("k1").unwrap());
        let sealed = r.seal(&Secret::generate(), b"row-1");
        assert_eq!(
            r.open(&sealed, b"row-2"),
            Err(SecretBoxError::Corrupt("k1".into()))
        );
        let mut bytes = B64.decode(&sealed.text).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        let altered = Sealed {
            key_id: sealed.key_id.clone(),
            text: B64.encode(bytes),
        };
        assert!(matches!(
            r.open(&altered, b"row-1"),
            Err(SecretBoxError::Corrupt(_))
        ));
    }

    #[test]
    fn rotation_keeps_old_ciphertexts_readable_until_dropped() {
        let old = Keyring::generate_spec("old").unwrap();
        let new = Keyring::generate_spec("new").unwrap();
        let secret = Secret::generate();
        let sealed = ring(&old).seal(&secret, b"r");
        let both = ring(&format!("{new},{old}"));
        assert_eq!(both.current_id(), Some("new"));
        assert!(!both.is_current(&sealed));
        assert_eq!(both.open(&sealed, b"r").unwrap(), secret);
        let resealed = both.seal(&secret, b"r");
        assert!(both.is_current(&resealed));
        assert_eq!(
            ring(&new).open(&sealed, b"r"),
            Err(SecretBoxError::UnknownKey("old".into()))
        );
        assert_eq!(
            Keyring::none().open(&sealed, b"r"),
            Err(SecretBoxError::NoKey)
        );
    }

    #[test]
    fn without_a_key_secrets_stay_in_clear() {
        let secret = Secret::generate();
        let sealed = Keyring::none().seal(&secret, b"r");
        assert_eq!(sealed.key_id, None);
        assert_eq!(Keyring::none().open(&sealed, b"r").unwrap(), secret);
    }

    #[test]
    fn bad_specifications_are_named_precisely_without_the_key() {
        let cases = [
            ("nocolon", "key 1 must be written id:base64"),
            ("bad id!:AAAA", "key 1: id must be"),
            ("k1:!!!", "not valid standard base64"),
            ("k1:AAAA", "must decode to 32 bytes, not 3"),
        ];
        for (spec, expected) in cases {
            let e = Keyring::parse(spec).unwrap_err().to_string();
            assert!(e.contains(expected), "{spec}: {e}");
        }
        let k = Keyring::generate_spec("k1").unwrap();
        let e = Keyring::parse(&format!("{k},{k}")).unwrap_err().to_string();
        assert!(e.contains("appears twice"), "{e}");
        assert!(!e.contains(k.split_once(':').unwrap().1));
        let debug = format!("{:?}", ring(&k));
        assert!(!debug.contains(k.split_once(':').unwrap().1), "{debug}");
    }
}
