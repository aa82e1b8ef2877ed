//! Standard Webhooks signatures: `v1,<base64 HMAC-SHA256 of "id.timestamp.body">`
//! with `whsec_` secrets.

use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

use crate::ParseError;

const PREFIX: &str = "whsec_";
/// Bytes of key material in a generated secret.
const GENERATED_LEN: usize = 32;

/// An endpoint signing secret. Its `Debug` never shows the key.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl Secret {
    /// A fresh secret from the operating system's CSPRNG.
    pub fn generate() -> Self {
        let mut key = vec![0u8; GENERATED_LEN];
        rand::rngs::OsRng.fill_bytes(&mut key);
        Self(key)
    }

    /// Parses `whsec_<base64>` (24 to 64 bytes of key).
    pub fn parse(input: &str) -> Result<Self, ParseError> {
        const FIELD: &str = "secret";
        let encoded = input
            .strip_prefix(PREFIX)
            .ok_or_else(|| ParseError::new(FIELD, "must start with `whsec_`"))?;
        let key = STANDARD
            .decode(encoded)
            .map_err(|_| ParseError::new(FIELD, "must be `whsec_` followed by base64"))?;
        if !(24..=64).contains(&key.len()) {
            return Err(ParseError::new(FIELD, "key must be 24 to 64 bytes long"));
        }
        Ok(Self(key))
    }

    /// The `whsec_…` text form; only the explicit secret route shows it.
    pub fn expose(&self) -> String {
        format!("{PREFIX}{}", STANDARD.encode(&self.0))
    }

    /// `v1,<signature>` for one message.
    pub fn sign(&self, message_id: &str, timestamp: i64, body: &[u8]) -> String {
        let mac = self.mac(message_id, timestamp, body);
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }

    /// Whether `header` (space-separated `v1,…` entries) holds a valid
    /// signature of this message by this secret. Comparison is constant-time.
    pub fn verify(&self, message_id: &str, timestamp: i64, body: &[u8], header: &str) -> bool {
        let signed = self.mac(message_id, timestamp, body);
        header.split(' ').any(|entry| {
            let Some(encoded) = entry.strip_prefix("v1,") else {
                return false;
            };
            let Ok(signature) = STANDARD.decode(encoded) else {
                return false;
            };
            signed.clone().verify_slice(&signature).is_ok()
        })
    }

    /// HMAC-SHA256 over `id.timestamp.body`, the signed content of the spec.
    fn mac(&self, message_id: &str, timestamp: i64, body: &[u8]) -> Hmac<Sha256> {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes keys of any length");
        mac.update(message_id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Every secret that currently signs an endpoint's deliveries: the current one
/// and any previous ones still inside their grace period.
#[derive(Debug, Clone, Copy)]
pub struct SigningKeys<'a>(pub &'a [Secret]);

impl SigningKeys<'_> {
    /// The `webhook-signature` header value: one `v1,` entry per secret.
    pub fn signature_header(&self, message_id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut header = String::with_capacity(self.0.len() * 48);
        for secret in self.0 {
            if !header.is_empty() {
                header.push(' ');
            }
            header.push_str(&secret.sign(message_id, timestamp, body));
        }
        header
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_standard_webhooks_test_vector_is_reproduced() {
        let secret = Secret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let signature = secret.sign(
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn a_signature_verifies_only_for_the_same_message() {
        let secret = Secret::generate();
        let header = secret.sign("msg_1", 10, b"{}");
        assert!(secret.verify("msg_1", 10, b"{}", &header));
        assert!(!secret.verify("msg_1", 11, b"{}", &header));
        assert!(!secret.verify("msg_2", 10, b"{}", &header));
        assert!(!secret.verify("msg_1", 10, b"{ }", &header));
        assert!(!Secret::generate().verify("msg_1", 10, b"{}", &header));
    }

    #[test]
    fn several_secrets_give_several_valid_signatures() {
        let old = Secret::generate();
        let new = Secret::generate();
        let header = SigningKeys(&[new.clone(), old.clone()]).signature_header("m", 1, b"x");
        assert_eq!(header.split(' ').count(), 2);
        assert!(old.verify("m", 1, b"x", &header));
        assert!(new.verify("m", 1, b"x", &header));
    }

    #[test]
    fn secrets_round_trip_and_never_show_in_debug() {
        let secret = Secret::generate();
        let text = secret.expose();
        assert!(text.starts_with("whsec_"));
        assert_eq!(Secret::parse(&text).unwrap(), secret);
        assert!(!format!("{secret:?}").contains(&text[6..]));
    }

    #[test]
    fn malformed_secrets_are_rejected() {
        for bad in ["", "whsec_", "sk_abc", "whsec_!!!", "whsec_c2hvcnQ="] {
            assert!(Secret::parse(bad).is_err(), "{bad:?} must fail");
        }
    }
}
