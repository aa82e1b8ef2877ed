//! API tokens handed to programs and portal sessions: 32 bytes from the OS
//! CSPRNG, shown once, kept only as their SHA-256.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};

const PREFIX: &str = "htk_";

/// A freshly generated token. Its `Debug` never shows it.
pub struct ApiToken(String);

impl ApiToken {
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        Self(format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes)))
    }

    /// The token itself, to hand to its holder once.
    pub fn reveal(&self) -> &str {
        &self.0
    }

    pub fn hash(&self) -> [u8; 32] {
        hash(&self.0)
    }
}

impl fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiToken(<redacted>)")
    }
}

/// The SHA-256 a presented token is looked up by.
pub fn hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_long_random_and_hidden_from_debug() {
        let (a, b) = (ApiToken::generate(), ApiToken::generate());
        assert_ne!(a.reveal(), b.reveal());
        assert!(a.reveal().starts_with(PREFIX));
        assert_eq!(a.reveal().len(), PREFIX.len() + 43);
        assert_eq!(a.hash(), hash(a.reveal()));
        assert!(!format!("{a:?}").contains(&a.reveal()[PREFIX.len()..]));
    }
}
