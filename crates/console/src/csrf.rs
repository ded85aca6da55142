//! Cross-site request forgery protection of every POST.
//!
//! A form carries a hidden `csrf` field: base64url(HMAC-SHA256(console secret, cookie value)),
//! where the cookie is the one that authenticates the request (the portal session, the
//! operator session, or the login form's pre-session cookie). Another site can make a browser
//! post to the console with its cookies, but cannot read the page that holds the token, and
//! cannot compute it without the secret. The token is compared in constant time. A present
//! `Origin` header must also be the console's own origin (defence in depth: browsers send it
//! on every cross-origin POST). Either check failing refuses the request before anything
//! changes.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// Name of the hidden form field that carries the token.
pub const FIELD: &str = "csrf";

/// `n` bytes from the operating system's generator.
pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut bytes = vec![0; n];
    rand::rng().fill_bytes(&mut bytes);
    bytes
}

/// 32 random bytes as 43 URL-safe base64 characters (session ids, pre-session cookies).
pub fn random_token() -> String {
    URL_SAFE_NO_PAD.encode(random_bytes(32))
}

/// HMAC-SHA256 of `parts` (length-prefixed, so no two lists collide) under `key`.
pub fn mac(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("hmac takes any key length");
    for part in parts {
        m.update(&(part.len() as u64).to_be_bytes());
        m.update(part);
    }
    m.finalize().into_bytes().to_vec()
}

/// The token forms carry for a request authenticated by `cookie`.
pub fn token(key: &[u8], cookie: &str) -> String {
    URL_SAFE_NO_PAD.encode(mac(key, &[b"csrf", cookie.as_bytes()]))
}

/// Why a POST was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The `Origin` header names another site.
    Origin,
    /// The `csrf` field is missing or wrong.
    Token,
}

/// Checks a POST: `origin` is its `Origin` header (if any), `expected_origin` the console's
/// public origin, `cookie` the authenticating cookie and `sent` the form's `csrf` field.
pub fn check(
    key: &[u8],
    origin: Option<&str>,
    expected_origin: &str,
    cookie: &str,
    sent: Option<&str>,
) -> Result<(), Refusal> {
    if let Some(origin) = origin
        && origin != expected_origin
    {
        return Err(Refusal::Origin);
    }
    let expected = token(key, cookie);
    let sent = sent.unwrap_or_default();
    if cookie.is_empty() || !bool::from(expected.as_bytes().ct_eq(sent.as_bytes())) {
        return Err(Refusal::Token);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";
    const ORIGIN: &str = "https://console.example";

    #[test]
    fn the_token_of_the_cookie_is_accepted_with_or_without_origin() {
        let t = token(KEY, "hs_session");
        assert_eq!(check(KEY, None, ORIGIN, "hs_session", Some(&t)), Ok(()));
        assert_eq!(
            check(KEY, Some(ORIGIN), ORIGIN, "hs_session", Some(&t)),
            Ok(())
        );
    }

    #[test]
    fn a_missing_wrong_or_foreign_token_is_refused() {
        let t = token(KEY, "hs_session");
        assert_eq!(
            check(KEY, None, ORIGIN, "hs_session", None),
            Err(Refusal::Token)
        );
        assert_eq!(
            check(KEY, None, ORIGIN, "hs_session", Some("")),
            Err(Refusal::Token)
        );
        // Another session's token, and this session's token under another key.
        assert_eq!(
            check(KEY, None, ORIGIN, "hs_other", Some(&t)),
            Err(Refusal::Token)
        );
        let other_key = token(b"another key, another console....", "hs_session");
        assert_eq!(
            check(KEY, None, ORIGIN, "hs_session", Some(&other_key)),
            Err(Refusal::Token)
        );
        // No cookie at all: even the token of the empty string is refused.
        assert_eq!(
            check(KEY, None, ORIGIN, "", Some(&token(KEY, ""))),
            Err(Refusal::Token)
        );
    }

    #[test]
    fn a_post_from_another_origin_is_refused_even_with_the_token() {
        let t = token(KEY, "hs_session");
        for origin in ["https://evil.example", "null", "http://console.example"] {
            assert_eq!(
                check(KEY, Some(origin), ORIGIN, "hs_session", Some(&t)),
                Err(Refusal::Origin)
            );
        }
    }
}
