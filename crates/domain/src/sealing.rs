//! Signing secrets encrypted at rest: with a master key
//! (`HERALD_MASTER_KEY`, 32 bytes in base64) each stored secret is
//! `hsec1:` + base64(nonce ‖ XChaCha20-Poly1305 ciphertext), so the database
//! alone (a file copy, a backup, a read-only leak) reveals no secret.

use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

use crate::{ParseError, Secret};

const SEALED: &str = "hsec1:";
const NONCE_LEN: usize = 24;

/// The key secrets are sealed with. Its `Debug` never shows it.
#[derive(Clone)]
pub struct MasterKey(XChaCha20Poly1305);

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

/// Why a stored secret could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    #[error("the secret is encrypted and no master key is configured")]
    NoKey,
    #[error("the master key does not open this secret")]
    WrongKey,
    #[error("the stored secret is malformed")]
    Malformed,
}

impl MasterKey {
    /// 32 bytes, base64 (standard alphabet, padded or not).
    pub fn parse(text: &str) -> Result<Self, ParseError> {
        const FIELD: &str = "HERALD_MASTER_KEY";
        let text = text.trim().trim_end_matches('=');
        let bytes = base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(text)
            .map_err(|_| ParseError::new(FIELD, "must be base64"))?;
        if bytes.len() != 32 {
            return Err(ParseError::new(
                FIELD,
                format!(
                    "must be 32 bytes (got {}); make one with `openssl rand -base64 32`",
                    bytes.len()
                ),
            ));
        }
        let cipher = XChaCha20Poly1305::new_from_slice(&bytes)
            .map_err(|_| ParseError::new(FIELD, "not a usable key"))?;
        Ok(Self(cipher))
    }

    /// The stored form of `secret`.
    pub fn seal(&self, secret: &Secret) -> String {
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let ciphertext = self
            .0
            .encrypt(&nonce, secret.expose().as_bytes())
            .expect("encryption of a short secret cannot fail");
        let mut sealed = nonce.to_vec();
        sealed.extend_from_slice(&ciphertext);
        format!("{SEALED}{}", STANDARD.encode(sealed))
    }

    fn open(&self, sealed: &str) -> Result<Secret, OpenError> {
        let bytes = STANDARD.decode(sealed).map_err(|_| OpenError::Malformed)?;
        if bytes.len() <= NONCE_LEN {
            return Err(OpenError::Malformed);
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_LEN);
        let plain = self
            .0
            .decrypt(XNonce::from_slice(nonce), ciphertext)
            .map_err(|_| OpenError::WrongKey)?;
        let text = String::from_utf8(plain).map_err(|_| OpenError::Malformed)?;
        Secret::parse(&text).map_err(|_| OpenError::Malformed)
    }
}

/// Whether a stored value is sealed (rather than a plain `whsec_…`).
pub fn is_sealed(stored: &str) -> bool {
    stored.starts_with(SEALED)
}

/// How secrets are written and read: sealed with the current key when one
/// is set; read with the current key, or the previous one while keys are
/// being rotated.
#[derive(Debug, Clone, Default)]
pub struct Sealing {
    pub current: Option<MasterKey>,
    pub previous: Option<MasterKey>,
}

impl Sealing {
    pub fn store(&self, secret: &Secret) -> String {
        match &self.current {
            Some(key) => key.seal(secret),
            None => secret.expose(),
        }
    }

    /// The secret, and whether it should be stored again (plain while a key
    /// is set, or sealed with the previous key).
    pub fn read(&self, stored: &str) -> Result<(Secret, bool), OpenError> {
        let Some(sealed) = stored.strip_prefix(SEALED) else {
            let secret = Secret::parse(stored).map_err(|_| OpenError::Malformed)?;
            return Ok((secret, self.current.is_some()));
        };
        let current = self.current.as_ref().ok_or(OpenError::NoKey)?;
        match current.open(sealed) {
            Ok(secret) => Ok((secret, false)),
            Err(OpenError::WrongKey) => match &self.previous {
                Some(previous) => previous.open(sealed).map(|secret| (secret, true)),
                None => Err(OpenError::WrongKey),
            },
            Err(error) => Err(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> MasterKey {
        MasterKey::parse(&STANDARD.encode([byte; 32])).unwrap()
    }

    #[test]
    fn sealed_secrets_open_with_their_key_only() {
        let secret = Secret::generate();
        let sealing = Sealing {
            current: Some(key(1)),
            previous: None,
        };
        let stored = sealing.store(&secret);
        assert!(is_sealed(&stored));
        assert!(!stored.contains(&secret.expose()[6..]));
        assert_ne!(stored, sealing.store(&secret), "a fresh nonce each time");
        assert_eq!(sealing.read(&stored).unwrap(), (secret.clone(), false));

        let wrong = Sealing {
            current: Some(key(2)),
            previous: None,
        };
        assert_eq!(wrong.read(&stored).unwrap_err(), OpenError::WrongKey);
        assert_eq!(
            Sealing::default().read(&stored).unwrap_err(),
            OpenError::NoKey
        );
        let rotating = Sealing {
            current: Some(key(2)),
            previous: Some(key(1)),
        };
        assert_eq!(rotating.read(&stored).unwrap(), (secret.clone(), true));
        // Plain secrets are read, and marked for sealing once a key is set.
        assert_eq!(
            sealing.read(&secret.expose()).unwrap(),
            (secret.clone(), true)
        );
        assert_eq!(
            Sealing::default().read(&secret.expose()).unwrap(),
            (secret, false)
        );
    }

    #[test]
    fn master_keys_must_be_32_bytes_of_base64() {
        assert!(MasterKey::parse(&STANDARD.encode([0u8; 16])).is_err());
        assert!(MasterKey::parse("not base64!").is_err());
        assert!(MasterKey::parse(&STANDARD.encode([5u8; 32])).is_ok());
        assert!(!format!("{:?}", key(3)).contains('3'));
    }
}
