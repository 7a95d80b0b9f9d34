//! Short-lived stream tokens (`POST /v1/stream/token`) for browsers, which
//! cannot put an API key in a WebSocket's headers. A token is
//! `cpst2.<expiry unix s>.<principal>.<nonce>.<HMAC-SHA256>`: stateless, so
//! any replica holding the same `stream.token_secret` accepts it, and the key
//! it was issued for never travels in a URL. The principal (the key's id, or
//! the console session's hash) lets a connection be closed once its key is
//! revoked or its console session ends.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretSlice, SecretString};
use sha2::Sha256;

pub use crate::serving::web::auth::Principal;

const PREFIX: &str = "cpst2";

/// Shortest accepted `stream.token_secret`: 256 bits, the HMAC's own strength.
pub const MIN_SECRET_BYTES: usize = 32;

/// Clock skew between replicas tolerated on top of the token lifetime.
const SKEW_S: i64 = 60;

impl Principal {
    fn encode(&self) -> String {
        match self {
            Principal::Key(id) => format!("k-{id}"),
            Principal::Console(h) => format!("c-{h}"),
        }
    }

    fn decode(s: &str) -> Option<Principal> {
        let ok = |v: &str| !v.is_empty() && v.len() <= 64 && v.bytes().all(|b| b.is_ascii_alphanumeric());
        match s.split_once('-')? {
            ("k", id) if ok(id) => Some(Principal::Key(id.to_owned())),
            ("c", h) if ok(h) => Some(Principal::Console(h.to_owned())),
            _ => None,
        }
    }
}

/// Why a token was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("not a stream token")]
    Malformed,
    #[error("invalid stream token")]
    BadSignature,
    #[error("stream token expired")]
    Expired,
    #[error("stream token outlives the token lifetime")]
    TooLong,
}

/// A verified token: whom it speaks for and until when.
#[derive(Debug, PartialEq, Eq)]
pub struct Verified {
    pub principal: Principal,
    pub expires_at: i64,
}

/// Issues and checks tokens with one secret.
pub struct TokenSigner {
    secret: SecretSlice<u8>,
    ttl_s: i64,
}

impl TokenSigner {
    /// With the configured secret (its length is checked with the rest of the
    /// settings), or a random one for this process when none is set, which
    /// the settings allow only without Redis (one replica).
    pub fn new(secret: Option<&SecretString>, ttl: std::time::Duration) -> TokenSigner {
        let bytes = match secret {
            Some(s) => s.expose_secret().as_bytes().to_vec(),
            None => rand::random::<[u8; 32]>().to_vec(),
        };
        TokenSigner { secret: SecretSlice::from(bytes), ttl_s: ttl.as_secs().max(1) as i64 }
    }

    /// A key for another purpose (e.g. console device cookies), derived from
    /// the same secret so every replica agrees on it without more settings.
    pub fn derive_key(&self, purpose: &str) -> SecretSlice<u8> {
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(self.secret.expose_secret())
            .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
        m.update(b"cartpulse derived key|");
        m.update(purpose.as_bytes());
        SecretSlice::from(m.finalize().into_bytes().to_vec())
    }

    fn mac(&self, payload: &str) -> Hmac<Sha256> {
        // HMAC takes keys of any length; this cannot fail.
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(self.secret.expose_secret())
            .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
        m.update(payload.as_bytes());
        m
    }

    /// A new token for `principal` and its expiry (Unix seconds).
    pub fn issue(&self, principal: &Principal, now_s: i64) -> (SecretString, i64) {
        let exp = now_s + self.ttl_s;
        let payload = format!("{PREFIX}.{exp}.{}.{}", principal.encode(), hex::encode(rand::random::<[u8; 8]>()));
        let sig = URL_SAFE_NO_PAD.encode(self.mac(&payload).finalize().into_bytes());
        (SecretString::from(format!("{payload}.{sig}")), exp)
    }

    /// True if the string has the shape of a token (as opposed to an API key).
    pub fn looks_like_token(s: &str) -> bool {
        s.starts_with("cpst")
    }

    /// Checks the signature (in constant time), the expiry, and that the
    /// expiry is no further away than a token this server would issue.
    pub fn verify(&self, token: &str, now_s: i64) -> Result<Verified, TokenError> {
        let (payload, sig) = token.rsplit_once('.').ok_or(TokenError::Malformed)?;
        let mut parts = payload.split('.');
        let (Some(PREFIX), Some(exp), Some(principal), Some(_nonce), None) =
            (parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        let exp: i64 = exp.parse().map_err(|_| TokenError::Malformed)?;
        let principal = Principal::decode(principal).ok_or(TokenError::Malformed)?;
        let sig = URL_SAFE_NO_PAD.decode(sig).map_err(|_| TokenError::Malformed)?;
        self.mac(payload).verify_slice(&sig).map_err(|_| TokenError::BadSignature)?;
        if now_s >= exp {
            return Err(TokenError::Expired);
        }
        if exp > now_s + self.ttl_s + SKEW_S {
            return Err(TokenError::TooLong);
        }
        Ok(Verified { principal, expires_at: exp })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_tokens_verify_until_they_expire() {
        let s = TokenSigner::new(Some(&SecretString::from("k".repeat(32))), std::time::Duration::from_secs(300));
        let who = Principal::Key("abc123".into());
        let (t, exp) = s.issue(&who, 1_000);
        assert_eq!(exp, 1_300);
        assert!(TokenSigner::looks_like_token(t.expose_secret()));
        assert_eq!(s.verify(t.expose_secret(), 1_299), Ok(Verified { principal: who, expires_at: 1_300 }));
        assert_eq!(s.verify(t.expose_secret(), 1_300), Err(TokenError::Expired));
    }

    #[test]
    fn tampered_or_foreign_tokens_are_refused() {
        let s = TokenSigner::new(Some(&SecretString::from("secret-a".repeat(4))), std::time::Duration::from_secs(300));
        let other =
            TokenSigner::new(Some(&SecretString::from("secret-b".repeat(4))), std::time::Duration::from_secs(300));
        let (t, _) = s.issue(&Principal::Console("f00d".into()), 1_000);
        let t = t.expose_secret().to_owned();
        assert_eq!(other.verify(&t, 1_001), Err(TokenError::BadSignature));
        // A later expiry with the old signature.
        let forged = t.replacen("1300", "9999", 1);
        assert_eq!(s.verify(&forged, 1_001), Err(TokenError::BadSignature));
        assert_eq!(s.verify("cp_abc_def", 1_001), Err(TokenError::Malformed));
        assert_eq!(s.verify("cpst2.x.y.z.w", 1_001), Err(TokenError::Malformed));
        assert_eq!(s.verify("cpst1.1300.ab.sig", 1_001), Err(TokenError::Malformed));
    }

    #[test]
    fn a_validly_signed_token_that_lives_too_long_is_refused() {
        // Whoever holds the secret could sign a year-long token; the server
        // still accepts no more than the lifetime it would give (plus skew).
        let s = TokenSigner::new(Some(&SecretString::from("k".repeat(32))), std::time::Duration::from_secs(300));
        let long =
            TokenSigner::new(Some(&SecretString::from("k".repeat(32))), std::time::Duration::from_secs(365 * 86_400));
        let (t, _) = long.issue(&Principal::Key("abc".into()), 1_000);
        assert_eq!(s.verify(t.expose_secret(), 1_001), Err(TokenError::TooLong));
        let (t, _) = TokenSigner::new(Some(&SecretString::from("k".repeat(32))), std::time::Duration::from_secs(360))
            .issue(&Principal::Key("abc".into()), 1_000);
        assert!(s.verify(t.expose_secret(), 1_001).is_ok(), "within the skew");
    }
}
