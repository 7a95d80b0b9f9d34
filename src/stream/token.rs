//! Short-lived stream tokens (`POST /v1/stream/token`) for browsers, which
//! cannot put an API key in a WebSocket's headers. A token is
//! `cpst1.<expiry unix s>.<nonce>.<HMAC-SHA256>`: stateless, so any replica
//! holding the same `stream.token_secret` accepts it, and the key it was
//! issued for never travels in a URL.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretSlice, SecretString};
use sha2::Sha256;

const PREFIX: &str = "cpst1";

/// Why a token was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("not a stream token")]
    Malformed,
    #[error("invalid stream token")]
    BadSignature,
    #[error("stream token expired")]
    Expired,
}

/// Issues and checks tokens with one secret.
pub struct TokenSigner {
    secret: SecretSlice<u8>,
    ttl_s: i64,
}

impl TokenSigner {
    /// With the configured secret, or a random one for this process (logged
    /// as a warning: tokens then only work on the replica that issued them).
    pub fn new(secret: Option<&SecretString>, ttl_s: u64) -> TokenSigner {
        let bytes = match secret {
            Some(s) => s.expose_secret().as_bytes().to_vec(),
            None => {
                tracing::warn!(
                    "stream.token_secret is not set: stream tokens are signed with a random per-process secret; \
                     multi-replica deployments must set the same CARTPULSE_STREAM__TOKEN_SECRET on every replica"
                );
                rand::random::<[u8; 32]>().to_vec()
            }
        };
        TokenSigner { secret: SecretSlice::from(bytes), ttl_s: ttl_s.max(1) as i64 }
    }

    fn mac(&self, payload: &str) -> Hmac<Sha256> {
        // HMAC takes keys of any length; this cannot fail.
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(self.secret.expose_secret())
            .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
        m.update(payload.as_bytes());
        m
    }

    /// A new token and its expiry (Unix seconds).
    pub fn issue(&self, now_s: i64) -> (SecretString, i64) {
        let exp = now_s + self.ttl_s;
        let payload = format!("{PREFIX}.{exp}.{}", hex::encode(rand::random::<[u8; 8]>()));
        let sig = URL_SAFE_NO_PAD.encode(self.mac(&payload).finalize().into_bytes());
        (SecretString::from(format!("{payload}.{sig}")), exp)
    }

    /// True if the string has the shape of a token (as opposed to an API key).
    pub fn looks_like_token(s: &str) -> bool {
        s.starts_with("cpst1.")
    }

    /// Checks signature (in constant time) and expiry.
    pub fn verify(&self, token: &str, now_s: i64) -> Result<(), TokenError> {
        let (payload, sig) = token.rsplit_once('.').ok_or(TokenError::Malformed)?;
        let mut parts = payload.split('.');
        let (Some(PREFIX), Some(exp), Some(_nonce), None) = (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        let exp: i64 = exp.parse().map_err(|_| TokenError::Malformed)?;
        let sig = URL_SAFE_NO_PAD.decode(sig).map_err(|_| TokenError::Malformed)?;
        self.mac(payload).verify_slice(&sig).map_err(|_| TokenError::BadSignature)?;
        if now_s >= exp {
            return Err(TokenError::Expired);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_tokens_verify_until_they_expire() {
        let s = TokenSigner::new(Some(&SecretString::from("k".repeat(32))), 300);
        let (t, exp) = s.issue(1_000);
        assert_eq!(exp, 1_300);
        assert!(TokenSigner::looks_like_token(t.expose_secret()));
        assert_eq!(s.verify(t.expose_secret(), 1_299), Ok(()));
        assert_eq!(s.verify(t.expose_secret(), 1_300), Err(TokenError::Expired));
    }

    #[test]
    fn tampered_or_foreign_tokens_are_refused() {
        let s = TokenSigner::new(Some(&SecretString::from("secret-a".to_owned())), 300);
        let other = TokenSigner::new(Some(&SecretString::from("secret-b".to_owned())), 300);
        let (t, _) = s.issue(1_000);
        let t = t.expose_secret().to_owned();
        assert_eq!(other.verify(&t, 1_001), Err(TokenError::BadSignature));
        // A later expiry with the old signature.
        let forged = t.replacen("1300", "9999", 1);
        assert_eq!(s.verify(&forged, 1_001), Err(TokenError::BadSignature));
        assert_eq!(s.verify("cp_abc_def", 1_001), Err(TokenError::Malformed));
        assert_eq!(s.verify("cpst1.x.y.z", 1_001), Err(TokenError::Malformed));
    }
}
