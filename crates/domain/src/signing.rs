//! Standard Webhooks signatures: `v1,<base64 HMAC-SHA256 of "id.timestamp.body">`
//! with `whsec_` secrets, and `v1a,<base64 ed25519 signature>` with `whsk_`
//! secret keys (receivers verify with the `whpk_` public key).

use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

use crate::ParseError;

const PREFIX: &str = "whsec_";
/// Asymmetric (ed25519) secret and public keys, as Standard Webhooks names them.
const SECRET_KEY_PREFIX: &str = "whsk_";
const PUBLIC_KEY_PREFIX: &str = "whpk_";
/// Bytes of key material in a generated secret.
const GENERATED_LEN: usize = 32;

/// An endpoint signing secret: a symmetric `whsec_` key (signatures `v1,`,
/// HMAC-SHA256) or an asymmetric `whsk_` ed25519 key (signatures `v1a,`,
/// verified with its public `whpk_` key). Its `Debug` never shows the key.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Key);

#[derive(Clone, PartialEq, Eq)]
enum Key {
    Hmac(Vec<u8>),
    /// The 32-byte ed25519 seed.
    Ed25519([u8; 32]),
}

impl Secret {
    /// A fresh symmetric secret from the operating system's CSPRNG.
    pub fn generate() -> Self {
        let mut key = vec![0u8; GENERATED_LEN];
        rand::rngs::OsRng.fill_bytes(&mut key);
        Self(Key::Hmac(key))
    }

    /// A fresh ed25519 key pair from the operating system's CSPRNG.
    pub fn generate_ed25519() -> Self {
        let mut seed = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut seed);
        Self(Key::Ed25519(seed))
    }

    /// Parses `whsec_<base64>` (24 to 64 bytes of key) or `whsk_<base64>`
    /// (an ed25519 seed, 32 bytes, optionally followed by its public key).
    pub fn parse(input: &str) -> Result<Self, ParseError> {
        const FIELD: &str = "secret";
        if let Some(encoded) = input.strip_prefix(SECRET_KEY_PREFIX) {
            let key = STANDARD
                .decode(encoded)
                .map_err(|_| ParseError::new(FIELD, "must be `whsk_` followed by base64"))?;
            if key.len() != 32 && key.len() != 64 {
                return Err(ParseError::new(
                    FIELD,
                    "an ed25519 key must be 32 bytes (or 64 with its public key)",
                ));
            }
            let mut seed = [0u8; 32];
            seed.copy_from_slice(&key[..32]);
            return Ok(Self(Key::Ed25519(seed)));
        }
        let encoded = input
            .strip_prefix(PREFIX)
            .ok_or_else(|| ParseError::new(FIELD, "must start with `whsec_` (or `whsk_`)"))?;
        let key = STANDARD
            .decode(encoded)
            .map_err(|_| ParseError::new(FIELD, "must be `whsec_` followed by base64"))?;
        if !(24..=64).contains(&key.len()) {
            return Err(ParseError::new(FIELD, "key must be 24 to 64 bytes long"));
        }
        Ok(Self(Key::Hmac(key)))
    }

    /// The `whsec_…` or `whsk_…` text form; only the explicit secret route
    /// shows it.
    pub fn expose(&self) -> String {
        match &self.0 {
            Key::Hmac(key) => format!("{PREFIX}{}", STANDARD.encode(key)),
            Key::Ed25519(seed) => format!("{SECRET_KEY_PREFIX}{}", STANDARD.encode(seed)),
        }
    }

    /// Whether this is an ed25519 key (signatures `v1a,`).
    pub fn is_asymmetric(&self) -> bool {
        matches!(self.0, Key::Ed25519(_))
    }

    /// A fresh secret of the same kind.
    pub fn generate_like(&self) -> Self {
        if self.is_asymmetric() {
            Self::generate_ed25519()
        } else {
            Self::generate()
        }
    }

    /// `whpk_<base64>`: what receivers verify `v1a` signatures with.
    pub fn public_key(&self) -> Option<String> {
        match &self.0 {
            Key::Hmac(_) => None,
            Key::Ed25519(seed) => {
                let key = ed25519_dalek::SigningKey::from_bytes(seed).verifying_key();
                Some(format!(
                    "{PUBLIC_KEY_PREFIX}{}",
                    STANDARD.encode(key.as_bytes())
                ))
            }
        }
    }

    /// `v1,<signature>` (or `v1a,<signature>`) for one message.
    pub fn sign(&self, message_id: &str, timestamp: i64, body: &[u8]) -> String {
        match &self.0 {
            Key::Hmac(key) => {
                let mac = mac(key, message_id, timestamp, body);
                format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
            }
            Key::Ed25519(seed) => {
                use ed25519_dalek::Signer;
                let key = ed25519_dalek::SigningKey::from_bytes(seed);
                let signature = key.sign(&signed_content(message_id, timestamp, body));
                format!("v1a,{}", STANDARD.encode(signature.to_bytes()))
            }
        }
    }

    /// Whether `header` (space-separated `v1,…`/`v1a,…` entries) holds a
    /// valid signature of this message by this secret. HMAC comparison is
    /// constant-time.
    pub fn verify(&self, message_id: &str, timestamp: i64, body: &[u8], header: &str) -> bool {
        match &self.0 {
            Key::Hmac(key) => {
                let signed = mac(key, message_id, timestamp, body);
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
            Key::Ed25519(seed) => {
                let key = ed25519_dalek::SigningKey::from_bytes(seed).verifying_key();
                let content = signed_content(message_id, timestamp, body);
                header.split(' ').any(|entry| {
                    let Some(encoded) = entry.strip_prefix("v1a,") else {
                        return false;
                    };
                    let Ok(bytes) = STANDARD.decode(encoded) else {
                        return false;
                    };
                    let Ok(signature) = ed25519_dalek::Signature::from_slice(&bytes) else {
                        return false;
                    };
                    key.verify_strict(&content, &signature).is_ok()
                })
            }
        }
    }
}

/// `id.timestamp.body`, the signed content of the spec.
fn signed_content(message_id: &str, timestamp: i64, body: &[u8]) -> Vec<u8> {
    let timestamp = timestamp.to_string();
    let mut content = Vec::with_capacity(message_id.len() + timestamp.len() + body.len() + 2);
    content.extend_from_slice(message_id.as_bytes());
    content.push(b'.');
    content.extend_from_slice(timestamp.as_bytes());
    content.push(b'.');
    content.extend_from_slice(body);
    content
}

/// HMAC-SHA256 over `id.timestamp.body`.
fn mac(key: &[u8], message_id: &str, timestamp: i64, body: &[u8]) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(message_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
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
    fn ed25519_keys_sign_v1a_that_their_public_key_verifies() {
        let secret = Secret::generate_ed25519();
        assert!(secret.is_asymmetric());
        let text = secret.expose();
        assert!(text.starts_with("whsk_"));
        assert_eq!(Secret::parse(&text).unwrap(), secret);
        let header = secret.sign("msg_1", 10, b"{}");
        assert!(header.starts_with("v1a,"));
        assert!(secret.verify("msg_1", 10, b"{}", &header));
        assert!(!secret.verify("msg_1", 11, b"{}", &header));
        assert!(!Secret::generate_ed25519().verify("msg_1", 10, b"{}", &header));
        // Checked against the public key alone, as a receiver would.
        use base64::Engine;
        let public = secret.public_key().unwrap();
        let public = STANDARD
            .decode(public.strip_prefix("whpk_").unwrap())
            .unwrap();
        let public = ed25519_dalek::VerifyingKey::from_bytes(&public.try_into().unwrap()).unwrap();
        let signature = STANDARD
            .decode(header.strip_prefix("v1a,").unwrap())
            .unwrap();
        let signature = ed25519_dalek::Signature::from_slice(&signature).unwrap();
        assert!(public.verify_strict(b"msg_1.10.{}", &signature).is_ok());
        assert!(!format!("{secret:?}").contains(&text[5..]));
        assert_eq!(Secret::generate().public_key(), None);
        assert!(!secret.generate_like().verify("msg_1", 10, b"{}", &header));
        assert!(secret.generate_like().is_asymmetric());
    }

    #[test]
    fn malformed_secrets_are_rejected() {
        for bad in [
            "",
            "whsec_",
            "sk_abc",
            "whsec_!!!",
            "whsec_c2hvcnQ=",
            "whsk_c2hvcnQ=",
            "whsk_",
        ] {
            assert!(Secret::parse(bad).is_err(), "{bad:?} must fail");
        }
    }
}
