//! Custom headers that carry credentials: their values are masked wherever
//! Herald shows a request it made (activity log, portal).

/// What a masked value is shown as.
pub const MASKED: &str = "<redacted>";

/// Whether a header's value is likely a credential, from its name:
/// `Authorization`, cookies, and anything naming a token, secret, key,
/// password or signature.
pub fn is_sensitive(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    matches!(
        name.as_str(),
        "authorization" | "proxy-authorization" | "cookie" | "set-cookie"
    ) || [
        "token",
        "secret",
        "key",
        "password",
        "passwd",
        "signature",
        "auth",
        "credential",
        "session",
    ]
    .iter()
    .any(|word| name.contains(word))
}

/// The value to show for a header.
pub fn shown<'a>(name: &str, value: &'a str) -> &'a str {
    if is_sensitive(name) {
        MASKED
    } else {
        value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_recognised_by_name() {
        for name in [
            "Authorization",
            "X-Api-Key",
            "x-auth-token",
            "X-Client-Secret",
            "Cookie",
            "x-hub-signature",
            "X-Password",
            "x-session-id",
        ] {
            assert!(is_sensitive(name), "{name}");
            assert_eq!(shown(name, "hunter2"), MASKED, "{name}");
        }
        for name in ["X-Tenant", "x-request-id", "content-type", "X-Environment"] {
            assert!(!is_sensitive(name), "{name}");
            assert_eq!(shown(name, "prod"), "prod", "{name}");
        }
    }
}
