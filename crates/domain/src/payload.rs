//! What a message payload may contain beyond being JSON: every string in it
//! must be Unicode without NUL, whatever the backend and the receiver.

use crate::ParseError;

/// Refuses `\u0000` and escaped UTF-16 surrogates that do not form a pair
/// (`"\ud800"`) in already well-formed JSON text. Both are valid JSON
/// syntax, but a lone surrogate is not a Unicode character (strict JSON
/// parsers, Rust's and Go's among them, reject or mangle it, and a
/// transformation could not read it), and NUL cannot be stored in
/// PostgreSQL's `jsonb` and truncates strings in C-based receivers. Raw
/// control characters are already refused by the JSON parser.
pub fn check_strings(json: &str) -> Result<(), ParseError> {
    const FIELD: &str = "payload";
    let bytes = json.as_bytes();
    let mut in_string = false;
    let mut i = 0;
    // A high surrogate waiting for its low half.
    let mut pending_high = false;
    while i < bytes.len() {
        let b = bytes[i];
        if !in_string {
            in_string = b == b'"';
            i += 1;
            continue;
        }
        match b {
            b'"' => {
                if pending_high {
                    return Err(lone_surrogate());
                }
                in_string = false;
                i += 1;
            }
            b'\\' if bytes.get(i + 1) == Some(&b'u') => {
                let unit = bytes
                    .get(i + 2..i + 6)
                    .and_then(|hex| std::str::from_utf8(hex).ok())
                    .and_then(|hex| u16::from_str_radix(hex, 16).ok())
                    .ok_or_else(|| ParseError::new(FIELD, "malformed \\u escape"))?;
                match unit {
                    0 => {
                        return Err(ParseError::new(
                            FIELD,
                            "contains \\u0000 (NUL), which Herald does not accept in strings",
                        ))
                    }
                    0xd800..=0xdbff if !pending_high => pending_high = true,
                    0xdc00..=0xdfff if pending_high => pending_high = false,
                    0xd800..=0xdfff => return Err(lone_surrogate()),
                    _ if pending_high => return Err(lone_surrogate()),
                    _ => {}
                }
                i += 6;
            }
            _ if pending_high => return Err(lone_surrogate()),
            b'\\' => i += 2,
            _ => i += 1,
        }
    }
    Ok(())
}

fn lone_surrogate() -> ParseError {
    ParseError::new(
        "payload",
        "contains a \\u escape of a lone UTF-16 surrogate, which is not a Unicode character",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unicode_strings_pass_and_nul_or_lone_surrogates_are_refused() {
        let cases = [
            (
                r#"{"a": "plain", "b": "caf\u00e9 \"q\" \\u0000"}"#,
                true,
                "ordinary escapes, an escaped backslash before u0000",
            ),
            (
                r#"{"emoji": "\ud83d\ude00", "raw": "😀"}"#,
                true,
                "a surrogate pair and raw UTF-8",
            ),
            (r#"{"\ud83d\ude00": 1}"#, true, "a pair in a key"),
            (r#"{"a": "\ud800"}"#, false, "a lone high surrogate"),
            (r#"{"a": "\udc00"}"#, false, "a lone low surrogate"),
            (
                r#"{"a": "\ud800x"}"#,
                false,
                "a high surrogate followed by a character",
            ),
            (
                r#"{"a": "\ud800\u0041"}"#,
                false,
                "a high surrogate followed by another escape",
            ),
            (r#"{"a": "\ud800\ud800"}"#, false, "two high surrogates"),
            (r#"{"\udfff": 1}"#, false, "a lone surrogate in a key"),
            (r#"{"a": "\u0000"}"#, false, "NUL"),
            (r#"{"a": "x\u0000y"}"#, false, "NUL inside a string"),
        ];
        for (json, accepted, why) in cases {
            assert_eq!(check_strings(json).is_ok(), accepted, "{why}: {json}");
        }
    }
}
