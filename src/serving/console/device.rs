//! Device cookies: after a successful login the browser gets a signed cookie
//! naming the user, and a later login of that user from that browser is not
//! held to the name's lockout (OWASP's "device cookies"). An attacker
//! guessing a name from elsewhere therefore locks out only other unknown
//! browsers, never the user's own. The cookie proves nothing by itself; the
//! password is still checked, and each device has its own failure budget.
//!
//! Value: `<expiry unix s>.<device id>.<HMAC-SHA256(name, expiry, id)>`,
//! signed with a key derived from `stream.token_secret`, so every replica
//! accepts it.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretSlice};
use sha2::Sha256;

pub struct DeviceSigner {
    key: SecretSlice<u8>,
    ttl_s: i64,
}

impl DeviceSigner {
    pub fn new(key: SecretSlice<u8>, ttl: std::time::Duration) -> DeviceSigner {
        DeviceSigner { key, ttl_s: (ttl.as_secs() as i64).max(60) }
    }

    pub fn ttl_s(&self) -> i64 {
        self.ttl_s
    }

    fn mac(&self, name: &str, exp: i64, id: &str) -> Hmac<Sha256> {
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(self.key.expose_secret())
            .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
        // Lengths first, so no two (name, id) pairs sign the same bytes.
        m.update(format!("device|{}|{name}|{exp}|{id}", name.len()).as_bytes());
        m
    }

    /// A new cookie value for `name`.
    pub fn issue(&self, name: &str, now_s: i64) -> String {
        let exp = now_s + self.ttl_s;
        let id = hex::encode(rand::random::<[u8; 12]>());
        let sig = URL_SAFE_NO_PAD.encode(self.mac(name, exp, &id).finalize().into_bytes());
        format!("{exp}.{id}.{sig}")
    }

    /// The device id, if `value` is an unexpired cookie issued for `name`.
    pub fn verify(&self, value: &str, name: &str, now_s: i64) -> Option<String> {
        let mut parts = value.split('.');
        let (Some(exp), Some(id), Some(sig), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            return None;
        };
        let exp: i64 = exp.parse().ok()?;
        if now_s >= exp || id.len() != 24 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let sig = URL_SAFE_NO_PAD.decode(sig).ok()?;
        self.mac(name, exp, id).verify_slice(&sig).ok()?;
        Some(id.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cookie_is_valid_for_its_name_until_it_expires() {
        let s = DeviceSigner::new(SecretSlice::from(vec![7u8; 32]), std::time::Duration::from_secs(3_600));
        let c = s.issue("admin", 1_000);
        let id = s.verify(&c, "admin", 1_001).expect("valid");
        assert_eq!(id.len(), 24);
        assert_eq!(s.verify(&c, "admin2", 1_001), None, "bound to the name");
        assert_eq!(s.verify(&c, "admin", 4_600), None, "expired");
        let other = DeviceSigner::new(SecretSlice::from(vec![8u8; 32]), std::time::Duration::from_secs(3_600));
        assert_eq!(other.verify(&c, "admin", 1_001), None, "another key");
        assert_eq!(s.verify("garbage", "admin", 1_001), None);
    }
}
