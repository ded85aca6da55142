//! Signing schemes: every delivery is signed with the endpoint's secret so the receiver can tell
//! it came from the platform and was not altered.
//!
//! - `standard` (Standard Webhooks): `webhook-id`, `webhook-timestamp` and
//!   `webhook-signature: v1,<base64 HMAC-SHA256("id.timestamp.body")>`; the key is the base64
//!   part of a `whsec_…` secret.
//! - `timestamped`: `<Prefix>Signature: t=<unix>,v1=<hex HMAC-SHA256("t.body")>` with
//!   `<Prefix>Id` and `<Prefix>Timestamp`; the key is the secret's literal bytes (as Stripe does).
//! - `hex`: `<Prefix>Signature: sha256=<hex HMAC-SHA256(body)>`; the key is the secret's literal
//!   bytes (as GitHub does).
//!
//! During a secret rotation `standard` and `timestamped` carry one signature per live secret
//! (`timestamped` puts the newest last, where map-folding verifiers look).
//! Signatures and secrets never implement `Display` into logs: [`Secret`]'s `Debug` is redacted.

use std::fmt;
use std::str::FromStr;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

use crate::error::{Result, invalid};

type HmacSha256 = Hmac<Sha256>;

/// How deliveries to an endpoint are signed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Scheme {
    #[default]
    Standard,
    Timestamped,
    Hex,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Standard => "standard",
            Scheme::Timestamped => "timestamped",
            Scheme::Hex => "hex",
        }
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Scheme {
    type Err = crate::Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "standard" => Ok(Scheme::Standard),
            "timestamped" => Ok(Scheme::Timestamped),
            "hex" => Ok(Scheme::Hex),
            other => Err(invalid(format!(
                "unknown signing scheme {other:?} (use standard, timestamped or hex)"
            ))),
        }
    }
}

/// An endpoint signing secret. Its `Debug` never shows the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl Secret {
    /// A new `whsec_` secret of 32 random bytes; valid for every scheme.
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        Secret(format!("whsec_{}", B64.encode(bytes)))
    }

    /// Checks a caller-supplied secret against what `scheme` needs.
    pub fn parse(value: &str, scheme: Scheme) -> Result<Self> {
        let secret = Secret(value.to_owned());
        match scheme {
            Scheme::Standard => {
                let key = secret.standard_key().map_err(|_| {
                    invalid("secret must be \"whsec_\" followed by base64 (standard scheme)")
                })?;
                if !(16..=64).contains(&key.len()) {
                    return Err(invalid(
                        "secret must decode to 16 to 64 bytes (standard scheme)",
                    ));
                }
            }
            Scheme::Timestamped | Scheme::Hex => {
                if !(8..=256).contains(&value.len()) {
                    return Err(invalid("secret must be 8 to 256 characters long"));
                }
                if value.chars().any(char::is_control) {
                    return Err(invalid("secret must not contain control characters"));
                }
            }
        }
        Ok(secret)
    }

    /// Wraps a stored secret without validation.
    pub fn from_stored(value: String) -> Self {
        Secret(value)
    }

    /// The secret's text, for the one place that must show or store it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    fn standard_key(&self) -> Result<Vec<u8>> {
        let b64 = self.0.strip_prefix("whsec_").unwrap_or(&self.0);
        B64.decode(b64)
            .map_err(|_| invalid("secret is not valid base64"))
    }

    fn key_for(&self, scheme: Scheme) -> Vec<u8> {
        match scheme {
            // A stored standard secret was validated at write time; fall back to the raw bytes
            // rather than panic if it was not.
            Scheme::Standard => self
                .standard_key()
                .unwrap_or_else(|_| self.0.as_bytes().to_vec()),
            Scheme::Timestamped | Scheme::Hex => self.0.as_bytes().to_vec(),
        }
    }
}

/// What a delivery's signature covers.
pub struct SignInput<'a> {
    /// The delivery id (stable across retries).
    pub id: &'a str,
    /// Unix seconds of this attempt.
    pub timestamp: i64,
    pub body: &'a [u8],
}

fn mac(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut m = HmacSha256::new_from_slice(key).expect("hmac takes keys of any length");
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().to_vec()
}

/// The signature headers for one attempt, signed with every secret in `secrets` (newest
/// first). `prefix` is the tenant's header prefix (used by `timestamped` and `hex`).
pub fn sign(
    scheme: Scheme,
    secrets: &[&Secret],
    prefix: &str,
    input: &SignInput<'_>,
) -> Vec<(String, String)> {
    let ts = input.timestamp.to_string();
    match scheme {
        Scheme::Standard => {
            let sigs: Vec<String> = secrets
                .iter()
                .map(|s| {
                    let raw = mac(
                        &s.key_for(scheme),
                        &[input.id.as_bytes(), b".", ts.as_bytes(), b".", input.body],
                    );
                    format!("v1,{}", B64.encode(raw))
                })
                .collect();
            vec![
                ("webhook-id".to_owned(), input.id.to_owned()),
                ("webhook-timestamp".to_owned(), ts),
                ("webhook-signature".to_owned(), sigs.join(" ")),
            ]
        }
        Scheme::Timestamped => {
            // Oldest first, the newest secret's `v1` last: verifiers that fold the header into
            // a map (`t=…,v1=…` split on `,` and `=`, as several products' samples do) keep only
            // the last `v1`, and a receiver that took the new secret must verify at once.
            let mut value = format!("t={ts}");
            for s in secrets.iter().rev() {
                let raw = mac(&s.key_for(scheme), &[ts.as_bytes(), b".", input.body]);
                value.push_str(",v1=");
                value.push_str(&hex::encode(raw));
            }
            vec![
                (format!("{prefix}Id"), input.id.to_owned()),
                (format!("{prefix}Timestamp"), ts),
                (format!("{prefix}Signature"), value),
            ]
        }
        Scheme::Hex => {
            // GitHub-style receivers compare the whole header: one signature, newest secret.
            let raw = secrets
                .first()
                .map(|s| mac(&s.key_for(scheme), &[input.body]))
                .unwrap_or_default();
            vec![(
                format!("{prefix}Signature"),
                format!("sha256={}", hex::encode(raw)),
            )]
        }
    }
}

/// Why a signature did not verify.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    #[error("missing header {0}")]
    MissingHeader(String),
    #[error("malformed header {0}")]
    Malformed(String),
    #[error("timestamp is outside the tolerance")]
    Expired,
    #[error("no signature matches")]
    NoMatch,
}

/// Verifies a delivery as a receiver would. `header` looks a header up case-insensitively;
/// `now` and `tolerance_secs` bound the timestamp (schemes that carry one).
pub fn verify(
    scheme: Scheme,
    secret: &Secret,
    prefix: &str,
    header: &dyn Fn(&str) -> Option<String>,
    body: &[u8],
    now: i64,
    tolerance_secs: i64,
) -> Result<(), VerifyError> {
    let need = |name: &str| header(name).ok_or_else(|| VerifyError::MissingHeader(name.to_owned()));
    let fresh = |ts: i64| {
        // abs_diff: a hostile timestamp (i64::MIN) must neither overflow nor pass.
        if now.abs_diff(ts) > tolerance_secs.max(0) as u64 {
            Err(VerifyError::Expired)
        } else {
            Ok(())
        }
    };
    let key = secret.key_for(scheme);
    match scheme {
        Scheme::Standard => {
            let id = need("webhook-id")?;
            let ts_text = need("webhook-timestamp")?;
            let ts: i64 = ts_text
                .parse()
                .map_err(|_| VerifyError::Malformed("webhook-timestamp".into()))?;
            fresh(ts)?;
            let expected = mac(&key, &[id.as_bytes(), b".", ts_text.as_bytes(), b".", body]);
            let sigs = need("webhook-signature")?;
            let ok = sigs
                .split(' ')
                .filter_map(|s| s.strip_prefix("v1,"))
                .any(|s| {
                    B64.decode(s)
                        .is_ok_and(|raw| constant_time_eq(&raw, &expected))
                });
            if ok {
                Ok(())
            } else {
                Err(VerifyError::NoMatch)
            }
        }
        Scheme::Timestamped => {
            let name = format!("{prefix}Signature");
            let value = need(&name)?;
            let mut ts_text = None;
            let mut sigs = Vec::new();
            for part in value.split(',') {
                match part.trim().split_once('=') {
                    Some(("t", v)) => ts_text = Some(v.to_owned()),
                    Some(("v1", v)) => sigs.push(v.to_owned()),
                    Some(_) => {}
                    None => return Err(VerifyError::Malformed(name)),
                }
            }
            let ts_text = ts_text.ok_or_else(|| VerifyError::Malformed(name.clone()))?;
            let ts: i64 = ts_text.parse().map_err(|_| VerifyError::Malformed(name))?;
            fresh(ts)?;
            let expected = mac(&key, &[ts_text.as_bytes(), b".", body]);
            let ok = sigs
                .iter()
                .any(|s| hex::decode(s).is_ok_and(|raw| constant_time_eq(&raw, &expected)));
            if ok {
                Ok(())
            } else {
                Err(VerifyError::NoMatch)
            }
        }
        Scheme::Hex => {
            let name = format!("{prefix}Signature");
            let value = need(&name)?;
            let hexsig = value
                .strip_prefix("sha256=")
                .ok_or(VerifyError::Malformed(name))?;
            let expected = mac(&key, &[body]);
            if hex::decode(hexsig).is_ok_and(|raw| constant_time_eq(&raw, &expected)) {
                Ok(())
            } else {
                Err(VerifyError::NoMatch)
            }
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(headers: &[(String, String)]) -> impl Fn(&str) -> Option<String> + '_ {
        move |name| {
            headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
        }
    }

    #[test]
    fn standard_webhooks_known_answer() {
        let secret =
            Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", Scheme::Standard).unwrap();
        let input = SignInput {
            id: "msg_p5jXN8AQM9LWM0D4loKWxJek",
            timestamp: 1614265330,
            body: br#"{"test": 2432232314}"#,
        };
        let headers = sign(Scheme::Standard, &[&secret], "", &input);
        assert_eq!(
            headers[2],
            (
                "webhook-signature".to_owned(),
                "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=".to_owned()
            )
        );
        let f = lookup(&headers);
        assert_eq!(
            verify(
                Scheme::Standard,
                &secret,
                "",
                &f,
                input.body,
                1614265330,
                300
            ),
            Ok(())
        );
        assert_eq!(
            verify(Scheme::Standard, &secret, "", &f, b"{}", 1614265330, 300),
            Err(VerifyError::NoMatch)
        );
        assert_eq!(
            verify(
                Scheme::Standard,
                &secret,
                "",
                &f,
                input.body,
                1614265330 + 301,
                300
            ),
            Err(VerifyError::Expired)
        );
    }

    #[test]
    fn hex_known_answer() {
        let secret = Secret::parse("It's a Secret to Everybody", Scheme::Hex).unwrap();
        let input = SignInput {
            id: "x",
            timestamp: 0,
            body: b"Hello, World!",
        };
        let headers = sign(Scheme::Hex, &[&secret], "X-Hub-", &input);
        assert_eq!(
            headers,
            vec![(
                "X-Hub-Signature".to_owned(),
                "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
                    .to_owned()
            )]
        );
    }

    #[test]
    fn timestamped_known_answer() {
        // HMAC-SHA256(key = "whsec_test_secret", "1700000000.{\"a\":1}"), computed independently
        // with Python's hmac module.
        let secret = Secret::parse("whsec_test_secret", Scheme::Timestamped).unwrap();
        let input = SignInput {
            id: "d1",
            timestamp: 1_700_000_000,
            body: br#"{"a":1}"#,
        };
        let headers = sign(Scheme::Timestamped, &[&secret], "Webhook-", &input);
        assert_eq!(headers[0], ("Webhook-Id".to_owned(), "d1".to_owned()));
        assert_eq!(
            headers[1],
            ("Webhook-Timestamp".to_owned(), "1700000000".to_owned())
        );
        assert_eq!(
            headers[2].1,
            "t=1700000000,v1=aecbc681fe3d2604c08ff8e880a0988d997a12367fcf9545e6a3b90c1dfc04b7"
        );
    }

    #[test]
    fn rotation_sends_both_signatures_and_each_verifies() {
        let new = Secret::generate();
        let old = Secret::generate();
        let input = SignInput {
            id: "d",
            timestamp: 100,
            body: b"{}",
        };
        for scheme in [Scheme::Standard, Scheme::Timestamped] {
            let headers = sign(scheme, &[&new, &old], "P-", &input);
            let f = lookup(&headers);
            assert_eq!(verify(scheme, &new, "P-", &f, b"{}", 100, 5), Ok(()));
            assert_eq!(verify(scheme, &old, "P-", &f, b"{}", 100, 5), Ok(()));
            let other = Secret::generate();
            assert_eq!(
                verify(scheme, &other, "P-", &f, b"{}", 100, 5),
                Err(VerifyError::NoMatch)
            );
        }
        let sig = &sign(Scheme::Standard, &[&new, &old], "", &input)[2].1;
        assert_eq!(sig.split(' ').count(), 2);
        // A verifier that keeps the last `v1` of the header (a map built from its parts)
        // verifies with the new secret.
        let header = &sign(Scheme::Timestamped, &[&new, &old], "", &input)[2].1;
        let last = header.rsplit(",v1=").next().unwrap();
        let only_new = format!("t=100,v1={last}");
        let f = |n: &str| (n == "Signature").then(|| only_new.clone());
        assert_eq!(
            verify(Scheme::Timestamped, &new, "", &f, b"{}", 100, 5),
            Ok(())
        );
    }

    #[test]
    fn secret_validation_and_redaction() {
        assert!(Secret::parse("whsec_!!!", Scheme::Standard).is_err());
        assert!(Secret::parse("whsec_AAAA", Scheme::Standard).is_err()); // 3 bytes
        assert!(Secret::parse("short", Scheme::Hex).is_err());
        let s = Secret::generate();
        assert!(Secret::parse(s.expose(), Scheme::Standard).is_ok());
        assert!(!format!("{s:?}").contains(s.expose()));
    }
}
