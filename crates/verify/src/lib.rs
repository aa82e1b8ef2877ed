//! Verify [Standard Webhooks](https://www.standardwebhooks.com/) signatures
//! on the receiving side: the `v1` scheme (HMAC-SHA256 with a `whsec_`
//! secret) and the `v1a` scheme (Ed25519 with a `whpk_` public key), as sent
//! by Herald, Svix and any other Standard Webhooks sender.
//!
//! ```
//! use herald_verify::{Headers, Webhook};
//!
//! let webhook = Webhook::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")?;
//! # let body = br#"{"type":"call.completed"}"#;
//! # let signature = webhook.sign("msg_1", 1_700_000_000, body)?;
//! let headers = Headers {
//!     id: "msg_1",
//!     timestamp: "1700000000",
//!     signature: &signature,
//! };
//! // Within five minutes of the sender's clock (the default tolerance).
//! webhook.verify_at(&headers, body, 1_700_000_060)?;
//! # Ok::<(), herald_verify::Error>(())
//! ```
//!
//! Signatures are compared in constant time; the timestamp must be within
//! the tolerance (default 5 minutes) either way, which stops replays of old
//! requests. A `Webhook` may hold several keys (during a secret rotation a
//! request is valid when any one of them verifies one of its signatures).
//!
//! Features: `std` (default; the clock for [`Webhook::verify`], without it
//! the crate is `no_std` + `alloc`), `ed25519` (default; `v1a`), `axum`
//! (the [`Verified`] extractor).

#![cfg_attr(not(feature = "std"), no_std)]

extern crate alloc;

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

#[cfg(feature = "axum")]
mod extract;
#[cfg(feature = "axum")]
pub use extract::{Verified, WebhookRejection};

/// Why a request is not accepted. Each failure has its own variant so a
/// receiver can log the reason; answer them all alike (401 or 400).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The secret or public key is not `whsec_`/`whpk_` followed by base64
    /// (a bare base64 HMAC secret is accepted too).
    InvalidKey,
    /// A `webhook-id`/`webhook-timestamp`/`webhook-signature` header (or its
    /// `svix-` twin) is missing or not text.
    MissingHeader(&'static str),
    /// The timestamp is not whole seconds since the Unix epoch.
    InvalidTimestamp,
    /// Older than the tolerance: possibly a replay.
    TimestampTooOld,
    /// Newer than the tolerance: the sender's clock is ahead.
    TimestampTooNew,
    /// The signature header holds no signature of a known scheme.
    NoSignature,
    /// No signature verifies with any of the keys.
    SignatureMismatch,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidKey => f.write_str("the key is not a whsec_ secret or whpk_ public key"),
            Self::MissingHeader(name) => write!(f, "the {name} header is missing"),
            Self::InvalidTimestamp => f.write_str("the timestamp is not a number of seconds"),
            Self::TimestampTooOld => f.write_str("the timestamp is too old"),
            Self::TimestampTooNew => f.write_str("the timestamp is in the future"),
            Self::NoSignature => f.write_str("no v1 or v1a signature in the signature header"),
            Self::SignatureMismatch => f.write_str("no signature matches"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for Error {}

/// The three signing headers of one request, as text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Headers<'a> {
    pub id: &'a str,
    pub timestamp: &'a str,
    pub signature: &'a str,
}

impl<'a> Headers<'a> {
    /// Picks the headers out of `(name, value)` pairs (names in any case):
    /// `webhook-*`, or else Svix's `svix-*`.
    pub fn from_pairs<I>(pairs: I) -> Result<Self, Error>
    where
        I: IntoIterator<Item = (&'a str, &'a str)> + Clone,
    {
        let find = |names: [&'static str; 2]| {
            names.iter().find_map(|wanted| {
                pairs
                    .clone()
                    .into_iter()
                    .find(|(name, _)| name.eq_ignore_ascii_case(wanted))
                    .map(|(_, value)| value)
            })
        };
        Ok(Self {
            id: find(["webhook-id", "svix-id"]).ok_or(Error::MissingHeader("webhook-id"))?,
            timestamp: find(["webhook-timestamp", "svix-timestamp"])
                .ok_or(Error::MissingHeader("webhook-timestamp"))?,
            signature: find(["webhook-signature", "svix-signature"])
                .ok_or(Error::MissingHeader("webhook-signature"))?,
        })
    }
}

/// One signature out of a signature header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signature {
    /// `v1,<base64 HMAC-SHA256>`.
    V1(Vec<u8>),
    /// `v1a,<base64 Ed25519 signature>`.
    V1a(Vec<u8>),
}

/// The signatures of a `webhook-signature` header: space-separated
/// `version,base64` entries. Entries of unknown versions or with bad base64
/// are skipped (a sender may add schemes); never panics on any input.
pub fn parse_signatures(header: &str) -> Vec<Signature> {
    header
        .split(' ')
        .filter_map(|entry| {
            let (version, encoded) = entry.split_once(',')?;
            let bytes = STANDARD.decode(encoded.trim()).ok()?;
            match version {
                "v1" if bytes.len() == 32 => Some(Signature::V1(bytes)),
                "v1a" if bytes.len() == 64 => Some(Signature::V1a(bytes)),
                _ => None,
            }
        })
        .collect()
}

#[derive(Clone)]
enum Key {
    Hmac(Vec<u8>),
    #[cfg(feature = "ed25519")]
    Ed25519(ed25519_dalek::VerifyingKey),
}

impl Key {
    fn parse(text: &str) -> Result<Self, Error> {
        let text = text.trim();
        #[cfg(feature = "ed25519")]
        if let Some(encoded) = text.strip_prefix("whpk_") {
            let bytes: [u8; 32] = STANDARD
                .decode(encoded)
                .ok()
                .and_then(|b| b.try_into().ok())
                .ok_or(Error::InvalidKey)?;
            return ed25519_dalek::VerifyingKey::from_bytes(&bytes)
                .map(Self::Ed25519)
                .map_err(|_| Error::InvalidKey);
        }
        let encoded = text.strip_prefix("whsec_").unwrap_or(text);
        match STANDARD.decode(encoded) {
            Ok(key) if !key.is_empty() => Ok(Self::Hmac(key)),
            _ => Err(Error::InvalidKey),
        }
    }

    fn verifies(&self, content: &[u8], signature: &Signature) -> bool {
        match (self, signature) {
            (Self::Hmac(key), Signature::V1(expected)) => {
                let mut mac =
                    Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
                mac.update(content);
                bool::from(mac.finalize().into_bytes().as_slice().ct_eq(expected))
            }
            #[cfg(feature = "ed25519")]
            (Self::Ed25519(key), Signature::V1a(bytes)) => {
                let Ok(bytes) = <[u8; 64]>::try_from(bytes.as_slice()) else {
                    return false;
                };
                key.verify_strict(content, &ed25519_dalek::Signature::from_bytes(&bytes))
                    .is_ok()
            }
            _ => false,
        }
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Hmac(_) => f.write_str("Hmac(<redacted>)"),
            #[cfg(feature = "ed25519")]
            Self::Ed25519(key) => write!(f, "Ed25519({key:?})"),
        }
    }
}

/// The keys a receiver accepts signatures from, and the timestamp tolerance.
#[derive(Debug, Clone)]
pub struct Webhook {
    keys: Vec<Key>,
    tolerance_seconds: u64,
}

/// Five minutes, as the Standard Webhooks libraries use.
pub const DEFAULT_TOLERANCE_SECONDS: u64 = 300;

impl Webhook {
    /// One key: a `whsec_` secret (or its bare base64) for `v1`, or a
    /// `whpk_` public key for `v1a`.
    pub fn new(key: &str) -> Result<Self, Error> {
        Ok(Self {
            keys: alloc::vec![Key::parse(key)?],
            tolerance_seconds: DEFAULT_TOLERANCE_SECONDS,
        })
    }

    /// Also accepts signatures made with `key` (a rotation in progress).
    pub fn with_key(mut self, key: &str) -> Result<Self, Error> {
        self.keys.push(Key::parse(key)?);
        Ok(self)
    }

    /// How far the timestamp may be from now, either way.
    pub fn with_tolerance_seconds(mut self, seconds: u64) -> Self {
        self.tolerance_seconds = seconds;
        self
    }

    /// Verifies against the system clock.
    #[cfg(feature = "std")]
    pub fn verify(&self, headers: &Headers<'_>, body: &[u8]) -> Result<(), Error> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or_default();
        self.verify_at(headers, body, now)
    }

    /// Verifies as of `now` (seconds since the Unix epoch).
    pub fn verify_at(&self, headers: &Headers<'_>, body: &[u8], now: i64) -> Result<(), Error> {
        let timestamp: i64 = headers
            .timestamp
            .trim()
            .parse()
            .map_err(|_| Error::InvalidTimestamp)?;
        let tolerance = i64::try_from(self.tolerance_seconds).unwrap_or(i64::MAX);
        if timestamp < now.saturating_sub(tolerance) {
            return Err(Error::TimestampTooOld);
        }
        if timestamp > now.saturating_add(tolerance) {
            return Err(Error::TimestampTooNew);
        }
        let signatures = parse_signatures(headers.signature);
        if signatures.is_empty() {
            return Err(Error::NoSignature);
        }
        let content = signed_content(headers.id, timestamp, body);
        // Every pair is tried, so the time taken does not tell which matched.
        let mut matched = false;
        for key in &self.keys {
            for signature in &signatures {
                matched |= key.verifies(&content, signature);
            }
        }
        if matched {
            Ok(())
        } else {
            Err(Error::SignatureMismatch)
        }
    }

    /// Signs like a sender does with the first key (`v1` only): for tests
    /// of a receiver. An Ed25519 public key cannot sign.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> Result<String, Error> {
        match self.keys.first() {
            Some(Key::Hmac(key)) => {
                let mut mac =
                    Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
                mac.update(&signed_content(id, timestamp, body));
                let mut out = String::from("v1,");
                out.push_str(&STANDARD.encode(mac.finalize().into_bytes()));
                Ok(out)
            }
            _ => Err(Error::InvalidKey),
        }
    }
}

/// `{id}.{timestamp}.{body}`: what both schemes sign.
fn signed_content(id: &str, timestamp: i64, body: &[u8]) -> Vec<u8> {
    let mut content = Vec::with_capacity(id.len() + body.len() + 24);
    content.extend_from_slice(id.as_bytes());
    content.push(b'.');
    content.extend_from_slice(alloc::format!("{timestamp}").as_bytes());
    content.push(b'.');
    content.extend_from_slice(body);
    content
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const NOW: i64 = 1_700_000_000;

    fn headers<'a>(signature: &'a str, timestamp: &'a str) -> Headers<'a> {
        Headers {
            id: "msg_p5jXN8AQM9LWM0D4loKWxJek",
            timestamp,
            signature,
        }
    }

    /// The Standard Webhooks specification's own example (its test vector).
    #[test]
    fn the_specifications_example_verifies() {
        let webhook = Webhook::new(SECRET).unwrap();
        let body = br#"{"test": 2432232314}"#;
        let signature = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";
        webhook
            .verify_at(&headers(signature, "1614265330"), body, 1_614_265_330)
            .unwrap();
    }

    #[test]
    fn a_changed_body_id_or_key_does_not_verify() {
        let webhook = Webhook::new(SECRET).unwrap();
        let signature = webhook
            .sign("msg_p5jXN8AQM9LWM0D4loKWxJek", NOW, b"{}")
            .unwrap();
        let good = headers(&signature, "1700000000");
        webhook.verify_at(&good, b"{}", NOW).unwrap();
        assert_eq!(
            webhook.verify_at(&good, b"{ }", NOW),
            Err(Error::SignatureMismatch)
        );
        let other_id = Headers {
            id: "msg_other",
            ..good
        };
        assert_eq!(
            webhook.verify_at(&other_id, b"{}", NOW),
            Err(Error::SignatureMismatch)
        );
        let other_key = Webhook::new("whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA").unwrap();
        assert_eq!(
            other_key.verify_at(&good, b"{}", NOW),
            Err(Error::SignatureMismatch)
        );
        // During a rotation either key verifies.
        let both = other_key.with_key(SECRET).unwrap();
        both.verify_at(&good, b"{}", NOW).unwrap();
    }

    #[test]
    fn the_timestamp_must_be_within_the_tolerance() {
        let webhook = Webhook::new(SECRET).unwrap().with_tolerance_seconds(60);
        let signature = webhook
            .sign("msg_p5jXN8AQM9LWM0D4loKWxJek", NOW, b"{}")
            .unwrap();
        let h = headers(&signature, "1700000000");
        webhook.verify_at(&h, b"{}", NOW + 60).unwrap();
        assert_eq!(
            webhook.verify_at(&h, b"{}", NOW + 61),
            Err(Error::TimestampTooOld)
        );
        assert_eq!(
            webhook.verify_at(&h, b"{}", NOW - 61),
            Err(Error::TimestampTooNew)
        );
        let bad = headers(&signature, "soon");
        assert_eq!(
            webhook.verify_at(&bad, b"{}", NOW),
            Err(Error::InvalidTimestamp)
        );
    }

    #[test]
    fn signature_headers_skip_unknown_and_malformed_entries() {
        let webhook = Webhook::new(SECRET).unwrap();
        let good = webhook
            .sign("msg_p5jXN8AQM9LWM0D4loKWxJek", NOW, b"{}")
            .unwrap();
        let header = alloc::format!("v2,abc v1,!!notbase64 v1,AAAA {good}");
        assert_eq!(parse_signatures(&header).len(), 1);
        webhook
            .verify_at(&headers(&header, "1700000000"), b"{}", NOW)
            .unwrap();
        assert_eq!(
            webhook.verify_at(&headers("v2,abc", "1700000000"), b"{}", NOW),
            Err(Error::NoSignature)
        );
        assert_eq!(Webhook::new("whsec_***").unwrap_err(), Error::InvalidKey);
    }

    /// Whatever the header holds, parsing returns: a cheap stand-in for the
    /// fuzz target (`fuzz/`), run on every test run.
    #[test]
    fn parsing_arbitrary_headers_never_panics() {
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let alphabet = b"v1a, =+/ABCxyz019\xff";
        for _ in 0..20_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let len = (state % 64) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|i| alphabet[((state >> (i % 56)) as usize + i) % alphabet.len()])
                .collect();
            let text = String::from_utf8_lossy(&bytes);
            let _ = parse_signatures(&text);
            let _ = Webhook::new(SECRET).unwrap().verify_at(
                &headers(&text, &text),
                text.as_bytes(),
                NOW,
            );
        }
    }

    #[test]
    fn headers_are_found_in_either_spelling() {
        let pairs = [
            ("Svix-Id", "msg_1"),
            ("svix-timestamp", "1"),
            ("webhook-signature", "v1,x"),
        ];
        let found = Headers::from_pairs(pairs.iter().copied()).unwrap();
        assert_eq!(
            (found.id, found.timestamp, found.signature),
            ("msg_1", "1", "v1,x")
        );
        assert_eq!(
            Headers::from_pairs(pairs[..2].iter().copied()),
            Err(Error::MissingHeader("webhook-signature"))
        );
    }

    #[cfg(feature = "ed25519")]
    #[test]
    fn ed25519_signatures_verify_with_the_public_key() {
        use ed25519_dalek::Signer;
        let signing = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
        let public = alloc::format!(
            "whpk_{}",
            STANDARD.encode(signing.verifying_key().to_bytes())
        );
        let content = signed_content("msg_p5jXN8AQM9LWM0D4loKWxJek", NOW, b"{}");
        let signature =
            alloc::format!("v1a,{}", STANDARD.encode(signing.sign(&content).to_bytes()));
        let webhook = Webhook::new(&public).unwrap();
        webhook
            .verify_at(&headers(&signature, "1700000000"), b"{}", NOW)
            .unwrap();
        assert_eq!(
            webhook.verify_at(&headers(&signature, "1700000000"), b"{ }", NOW),
            Err(Error::SignatureMismatch)
        );
        // An HMAC signature does not pass for an Ed25519 key.
        let hmac = Webhook::new(SECRET)
            .unwrap()
            .sign("msg_p5jXN8AQM9LWM0D4loKWxJek", NOW, b"{}")
            .unwrap();
        assert_eq!(
            webhook.verify_at(&headers(&hmac, "1700000000"), b"{}", NOW),
            Err(Error::SignatureMismatch)
        );
    }
}
