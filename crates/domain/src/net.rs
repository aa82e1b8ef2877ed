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

/// True when `ip` is a globally routable unicast address: not in any range
/// of the IANA IPv4 and IPv6 special-purpose address registries that is
/// not globally reachable, and not an IPv6 address that embeds an IPv4
/// address (mapped, compatible, translated, NAT64, 6to4, Teredo, ISATAP)
/// unless that IPv4 address is itself public (NAT64 only). SECURITY.md
/// lists the ranges.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    let refused = ip.is_unspecified()
        || a == 0 // "this network" 0/8
        || ip.is_loopback() // 127/8
        || ip.is_private() // 10/8, 172.16/12, 192.168/16
        || (a == 100 && (64..128).contains(&b)) // shared address space (CGN) 100.64/10
        || ip.is_link_local() // 169.254/16, includes 169.254.169.254 (cloud metadata)
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments 192.0.0/24
        || (a == 192 && b == 0 && c == 2) // documentation TEST-NET-1
        || (a == 192 && b == 88 && c == 99) // deprecated 6to4 relay anycast
        || (a == 198 && (b == 18 || b == 19)) // benchmarking 198.18/15
        || (a == 198 && b == 51 && c == 100) // documentation TEST-NET-2
        || (a == 203 && b == 0 && c == 113) // documentation TEST-NET-3
        || ip.is_multicast() // 224/4
        || a >= 240; // reserved 240/4 and broadcast
    !refused
}

/// The IPv4 address in the last 32 bits of `ip`.
fn low_v4(ip: Ipv6Addr) -> Ipv4Addr {
    let o = ip.octets();
    Ipv4Addr::new(o[12], o[13], o[14], o[15])
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    // IPv4-mapped ::ffff:a.b.c.d is the IPv4 address itself.
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_public_v4(v4);
    }
    // The NAT64 well-known prefix 64:ff9b::/96 reaches the embedded IPv4
    // address through a translator (DNS64 hands these out on IPv6-only
    // networks): as public as that address.
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return is_public_v4(low_v4(ip));
    }
    // ISATAP interface identifiers (…:0:5efe:a.b.c.d, …:200:5efe:a.b.c.d)
    // tunnel to the embedded IPv4 address, whatever the prefix.
    if (s[4] | 0x0200) == 0x0200 && s[5] == 0x5efe && !is_public_v4(low_v4(ip)) {
        return false;
    }
    // Only the global unicast block 2000::/3 is routable. Outside it lie
    // ::/128, ::1, IPv4-compatible ::/96 and IPv4-translated ::ffff:0:0:0/96,
    // local-use translation 64:ff9b:1::/48, discard-only 100::/64, dummy
    // 100:0:0:1::/64, SRv6 SIDs 5f00::/16, unique local fc00::/7,
    // link-local fe80::/10, site-local fec0::/10 and multicast ff00::/8.
    if s[0] & 0xe000 != 0x2000 {
        return false;
    }
    // In 2001::/16: IETF protocol assignments 2001::/23 (Teredo 2001::/32,
    // benchmarking, ORCHID) and documentation 2001:db8::/32.
    let refused = (s[0] == 0x2001 && (s[1] < 0x0200 || s[1] == 0x0db8))
        || s[0] == 0x2002 // 6to4 2002::/16 (embeds an IPv4 address)
        || (s[0] & 0xfff0) == 0x3ff0; // documentation 3fff::/20
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

    /// A URL saved earlier, read back: its form is checked, not the
    /// current network policy, which applies when a URL is set (`parse`)
    /// and at every send (the resolver) — not when another field of its
    /// endpoint changes, so an endpoint whose URL a tightened policy now
    /// refuses can still be disabled or edited.
    pub fn stored(input: &str) -> Result<Self, ParseError> {
        Url::parse(input)
            .map(Self)
            .map_err(|e| ParseError::new("url", e.to_string()))
    }

    /// The URL of an update: the endpoint's `current` URL kept as it is,
    /// a new one checked against `policy`.
    /// (Compared once normalised: `https://a.test` is `https://a.test/`.)
    pub fn update(new: &str, current: &Self, policy: &AddressPolicy) -> Result<Self, ParseError> {
        if Self::stored(new).is_ok_and(|new| new == *current) {
            Ok(current.clone())
        } else {
            Self::parse(new, policy)
        }
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
            "64:ff9b::7f00:1",
            "64:ff9b:1::a00:1",
            "2001:db8::1",
            "3fff::1",
            "100::1",
            "5f00::1",
            "fec0::1",
            "::ffff:0:a00:1",
            // 6to4 embedding 127.0.0.1, 169.254.169.254, 10.0.0.1, and any 6to4
            "2002:7f00:1::",
            "2002:a9fe:a9fe::",
            "2002:a00:1::1",
            "2002:c000:201::1",
            // Teredo (2001::/32), with any server and client
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
            "2001::1",
            // the rest of 2001::/23: benchmarking, ORCHIDv2
            "2001:2::1",
            "2001:20::1",
            // ISATAP identifiers embedding private addresses, in any prefix
            "2400:cb00::5efe:a00:1",
            "2400:cb00::200:5efe:c0a8:101",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert!(!strict().permits(ip), "{ip} must be refused");
        }
    }

    #[test]
    fn public_addresses_are_permitted() {
        for ip in [
            "93.184.216.34",
            "1.1.1.1",
            "2606:4700::1111",
            "2400:cb00::1",
            // NAT64 of a public address, and an ISATAP id of a public one
            "64:ff9b::5db8:d822",
            "2400:cb00::5efe:5db8:d822",
        ] {
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
            "https://[2002:7f00:1::]/",
            "https://[2002:a9fe:a9fe::]/",
            "https://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/",
            "https://[64:ff9b::a9fe:a9fe]/",
        ] {
            assert!(
                EndpointUrl::parse(url, &strict()).is_err(),
                "{url} must fail"
            );
        }
    }

    #[test]
    fn an_update_checks_a_new_url_against_the_policy_and_keeps_the_current_one() {
        let lax = AddressPolicy {
            allow_http: true,
            allow_private_networks: true,
            ..strict()
        };
        let current = EndpointUrl::parse("http://10.0.0.1/hook", &lax).unwrap();
        for (new, kept) in [
            ("http://10.0.0.1/hook", true),
            ("HTTP://10.0.0.1/hook", true),
            ("http://10.0.0.2/hook", false),
        ] {
            let result = EndpointUrl::update(new, &current, &strict());
            assert_eq!(result.is_ok(), kept, "{new}");
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
