//! What a message payload may contain beyond being JSON: every string in it
//! must be Unicode without NUL, whatever the backend and the receiver, and
//! no body nests deeper than [`MAX_DEPTH`].

use crate::ParseError;

/// How deeply objects and arrays may nest in any JSON body Herald accepts,
/// the body's own object counting as the first level (a message's payload
/// may so nest 63 levels). Deeper documents break recursive parsers: the
/// Python SDK fails with `RecursionError` on an answer that echoes them.
pub const MAX_DEPTH: usize = 64;

/// The deepest nesting of objects and arrays in `json`, counting the
/// outermost as 1, read without parsing (brackets inside strings do not
/// count); it stops counting once past `limit`.
pub fn depth(json: &[u8], limit: usize) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    let mut in_string = false;
    let mut i = 0;
    while i < json.len() {
        let b = json[i];
        if in_string {
            match b {
                b'\\' => i += 1,
                b'"' => in_string = false,
                _ => {}
            }
        } else {
            match b {
                b'"' => in_string = true,
                b'{' | b'[' => {
                    depth += 1;
                    if depth > deepest {
                        deepest = depth;
                        if deepest > limit {
                            return deepest;
                        }
                    }
                }
                b'}' | b']' => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
        i += 1;
    }
    deepest
}

/// Refuses a body that nests past [`MAX_DEPTH`], naming the limit.
pub fn check_depth(json: &[u8]) -> Result<(), ParseError> {
    if depth(json, MAX_DEPTH) > MAX_DEPTH {
        return Err(ParseError::new(
            "body",
            format!("nests objects and arrays more than {MAX_DEPTH} levels deep; at most {MAX_DEPTH} are accepted"),
        ));
    }
    Ok(())
}

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
    fn depth_counts_brackets_outside_strings_only() {
        let cases = [
            (r#"{}"#, 1, "an empty object"),
            (r#"{"a": [1, {"b": []}]}"#, 4, "objects within arrays"),
            (r#"{"a": "[[[{{{"}"#, 1, "brackets in a string"),
            (
                r#"{"a\"[[": "x\\", "b": [[]]}"#,
                3,
                "escaped quotes and backslashes",
            ),
            (r#"[[[]]] [[]]"#, 3, "the deepest of several values"),
        ];
        for (json, expected, why) in cases {
            assert_eq!(depth(json.as_bytes(), 100), expected, "{why}: {json}");
        }
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert_eq!(
            depth(deep.as_bytes(), MAX_DEPTH),
            MAX_DEPTH + 1,
            "stops past the limit"
        );
        let at_limit = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(
            check_depth(at_limit.as_bytes()).is_ok(),
            "the limit itself is accepted"
        );
        let past = format!("[{at_limit}]");
        assert!(
            check_depth(past.as_bytes()).is_err(),
            "one past the limit is refused"
        );
    }

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
