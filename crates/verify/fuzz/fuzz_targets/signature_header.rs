//! Any bytes as the signing headers and body: parsing and verifying must
//! return, never panic, and never accept without the key.
#![no_main]

use herald_verify::{parse_signatures, Headers, Webhook};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = parse_signatures(&text);
    let mut parts = text.splitn(3, '\n');
    let (id, timestamp, signature) = (
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
    );
    let webhook = Webhook::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
    let headers = Headers { id, timestamp, signature };
    let now = timestamp.trim().parse().unwrap_or(0);
    assert!(webhook.verify_at(&headers, data, now).is_err());
});
