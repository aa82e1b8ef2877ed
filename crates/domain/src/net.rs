//! Endpoint URLs and the address policy that keeps deliveries away from
//! loopback, private and other internal networks (SSRF protection).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use url::{Host, Url};

use crate::ParseError;

/// Which destinations the operator allows. The check is applied twice: to IP
/// literals when an endpoint is saved, and to every resolved address at
/// connect time (so DNS cannot be used to reach a refused address).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddressPolicy {
    pub allow_http: bool,
    pub allow_private_networks: bool,
    /// Ranges allowed although they are not public (`HERALD_ALLOWED_CIDRS`).
    pub allowed: Arc<[Cidr]>,
}

impl AddressPolicy {
    /// Whether a delivery may connect to `ip`.
    pub fn permits(&self, ip: IpAddr) -> bool {
        self.allow_private_networks
            || is_public(ip)
            || self.allowed.iter().any(|cidr| cidr.contains(ip))
    }
}

/// An address range, `10.0.0.0/8` or `fd00::/8` (a bare address is a
/// range of one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn parse(input: &str) -> Result<Self, ParseError> {
        const FIELD: &str = "cidr";
        let input = input.trim();
        let (address, prefix) = match input.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (input, None),
        };
        let network: IpAddr = address
            .parse()
            .map_err(|_| ParseError::new(FIELD, format!("`{input}` is not an address range")))?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(text) => text
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| ParseError::new(FIELD, format!("`{input}`: bad prefix length")))?,
            None => max,
        };
        Ok(Self { network, prefix })
    }

    /// Whether `ip` is in the range; an IPv4-mapped IPv6 address counts as
    /// its IPv4 address.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip.to_canonical()) {
            (IpAddr::V4(network), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(network) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(network), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(network) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// True when `ip` is a globally routable unicast address.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    let refused = ip.is_unspecified()
        || a == 0 // "this network"
        || ip.is_loopback()
        || ip.is_private()
        || (a == 100 && (64..128).contains(&b)) // carrier-grade NAT 100.64/10
        || ip.is_link_local() // includes 169.254.169.254 (cloud metadata)
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 192 && b == 0 && c == 2) // documentation
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || (a == 198 && b == 51 && c == 100) // documentation
        || (a == 203 && b == 0 && c == 113) // documentation
        || ip.is_multicast()
        || a >= 240; // reserved and broadcast
    !refused
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_public_v4(v4);
    }
    let segments = ip.segments();
    // IPv4-compatible (::a.b.c.d, deprecated) embeds an IPv4 address too.
    if segments[..6].iter().all(|s| *s == 0) {
        return false;
    }
    let refused = ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || (segments[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
        || (segments[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
        || (segments[0] & 0xffc0) == 0xfec0 // site-local (deprecated)
        || (segments[0] == 0x64 && segments[1] == 0xff9b) // NAT64
        || (segments[0] == 0x2001 && segments[1] == 0x0db8) // documentation
        || (segments[0] == 0x0100 && segments[1..4].iter().all(|s| *s == 0)); // discard
    !refused
}

/// A validated endpoint URL: http(s), with a host, within policy for literals.
#[derive(Clone, PartialEq, Eq)]
pub struct EndpointUrl(Url);

impl EndpointUrl {
    pub fn parse(input: &str, policy: &AddressPolicy) -> Result<Self, ParseError> {
        const FIELD: &str = "url";
        if input.len() > 2048 {
            return Err(ParseError::new(FIELD, "must be at most 2048 characters"));
        }
        let url = Url::parse(input).map_err(|e| ParseError::new(FIELD, e.to_string()))?;
        match url.scheme() {
            "https" => {}
            "http" if policy.allow_http => {}
            "http" => {
                return Err(ParseError::new(
                    FIELD,
                    "must use https:// (http is disabled on this server)",
                ))
            }
            other => {
                return Err(ParseError::new(
                    FIELD,
                    format!("scheme `{other}` is not allowed; use https://"),
                ))
            }
        }
        // The WHATWG parser has already normalised odd IPv4 spellings such as
        // `2130706433` or `0x7f.1` into dotted form, so a literal check here
        // sees the real address.
        let literal = match url.host() {
            None => return Err(ParseError::new(FIELD, "must have a host")),
            Some(Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
            Some(Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
            Some(Host::Domain(domain)) => {
                let domain = domain.trim_end_matches('.').to_ascii_lowercase();
                if !policy.allow_private_networks
                    && (domain == "localhost" || domain.ends_with(".localhost"))
                {
                    return Err(ParseError::new(
                        FIELD,
                        "points to a loopback host, which this server refuses",
                    ));
                }
                None
            }
        };
        if let Some(ip) = literal {
            if !policy.permits(ip) {
                return Err(ParseError::new(
                    FIELD,
                    format!(
                        "address {ip} is private, loopback or reserved, which this server refuses"
                    ),
                ));
            }
        }
        Ok(Self(url))
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    pub fn as_url(&self) -> &Url {
        &self.0
    }
}

impl fmt::Display for EndpointUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.as_str())
    }
}

impl fmt::Debug for EndpointUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strict() -> AddressPolicy {
        AddressPolicy::default()
    }

    #[test]
    fn internal_addresses_are_refused() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "100.64.0.1",
            "169.254.169.254",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fc00::1",
            "fd12::1",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::127.0.0.1",
            "64:ff9b::a00:1",
            "2001:db8::1",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert!(!strict().permits(ip), "{ip} must be refused");
        }
    }

    #[test]
    fn public_addresses_are_permitted() {
        for ip in ["93.184.216.34", "1.1.1.1", "2606:4700::1111"] {
            let ip: IpAddr = ip.parse().unwrap();
            assert!(strict().permits(ip), "{ip} must be permitted");
        }
    }

    #[test]
    fn urls_must_be_https_unless_http_is_allowed() {
        assert!(EndpointUrl::parse("https://example.com/hook", &strict()).is_ok());
        assert!(EndpointUrl::parse("http://example.com/hook", &strict()).is_err());
        assert!(EndpointUrl::parse("ftp://example.com/hook", &strict()).is_err());
        let lax = AddressPolicy {
            allow_http: true,
            ..strict()
        };
        assert!(EndpointUrl::parse("http://example.com/hook", &lax).is_ok());
        assert!(EndpointUrl::parse("ftp://example.com/hook", &lax).is_err());
    }

    #[test]
    fn unusual_spellings_of_loopback_are_refused() {
        for url in [
            "https://2130706433/",
            "https://0x7f.1/",
            "https://0177.0.0.1/",
            "https://127.1/",
            "https://[::ffff:7f00:1]/",
            "https://localhost/",
            "https://api.localhost./",
        ] {
            assert!(
                EndpointUrl::parse(url, &strict()).is_err(),
                "{url} must fail"
            );
        }
    }

    #[test]
    fn private_literals_are_allowed_when_the_operator_allows_them() {
        let lax = AddressPolicy {
            allow_http: true,
            allow_private_networks: true,
            ..strict()
        };
        assert!(EndpointUrl::parse("http://127.0.0.1:8080/hook", &lax).is_ok());
    }

    #[test]
    fn allowed_ranges_reopen_exactly_their_addresses() {
        let policy = AddressPolicy {
            allowed: vec![
                Cidr::parse("10.1.0.0/16").unwrap(),
                Cidr::parse("fd00::/8").unwrap(),
                Cidr::parse("127.0.0.1").unwrap(),
            ]
            .into(),
            ..strict()
        };
        for (ip, permitted) in [
            ("10.1.2.3", true),
            ("10.2.0.1", false),
            ("fd12::1", true),
            ("fe80::1", false),
            ("127.0.0.1", true),
            ("127.0.0.2", false),
            ("::ffff:10.1.0.9", true),
            ("93.184.216.34", true),
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(policy.permits(ip), permitted, "{ip}");
        }
        assert!(Cidr::parse("0.0.0.0/0")
            .unwrap()
            .contains("8.8.8.8".parse().unwrap()));
        for bad in ["10.0.0.0/33", "fd00::/129", "nonsense", "10.0.0.0/x"] {
            assert!(Cidr::parse(bad).is_err(), "{bad}");
        }
    }
}
