//! The SSRF guard: which addresses Herald may POST to.
//!
//! Endpoint URLs come from customers, so a URL pointing at Herald's own network (loopback,
//! private ranges, link-local and the cloud metadata address, CGNAT, unique-local, reserved and
//! documentation ranges, the local-use NAT64 prefix and deprecated site-local IPv6, and IPv6
//! forms that embed such an IPv4 address) would let a customer probe the operator's
//! infrastructure. Such addresses are refused unless the operator allows
//! their network explicitly (`HERALD_ALLOW_NETWORKS`, e.g. `127.0.0.0/8` in tests).
//!
//! Ingest checks an endpoint's URL against it when the endpoint is saved; the client
//! ([`crate::Client`]) checks every address it connects to, since DNS answers change.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use crate::error::{Error, Result};

/// A network in CIDR form.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    len: u8,
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => prefix_eq(&net.octets(), &ip.octets(), self.len),
            (IpAddr::V6(net), IpAddr::V6(ip)) => prefix_eq(&net.octets(), &ip.octets(), self.len),
            _ => false,
        }
    }
}

fn prefix_eq(a: &[u8], b: &[u8], len: u8) -> bool {
    let full = usize::from(len / 8);
    let rest = len % 8;
    if a[..full] != b[..full] {
        return false;
    }
    if rest == 0 {
        return true;
    }
    let mask = 0xffu8 << (8 - rest);
    (a[full] & mask) == (b[full] & mask)
}

impl FromStr for Cidr {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let s = s.trim();
        let (addr, len) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let bad = |why: &str| Error::InvalidNetwork(format!("{s:?} {why}"));
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| bad("is not an IP network (use e.g. 10.0.0.0/8)"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = match len {
            Some(l) => l
                .parse::<u8>()
                .ok()
                .filter(|l| *l <= max)
                .ok_or_else(|| bad("has a bad prefix length"))?,
            None => max,
        };
        Ok(Cidr { addr, len })
    }
}

/// Parses a comma-separated list of networks.
pub fn parse_networks(s: &str) -> Result<Vec<Cidr>> {
    s.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(str::parse)
        .collect()
}

/// Why an address is refused, or `None` when it is a public address.
pub fn forbidden_reason(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => forbidden_v6(v6),
    }
}

fn forbidden_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let o = ip.octets();
    Some(match o {
        [0, ..] => "unspecified or 'this network' address",
        [10, ..] => "private address",
        [100, b, ..] if (64..128).contains(&b) => "shared (CGNAT) address",
        [127, ..] => "loopback address",
        [169, 254, ..] => "link-local or metadata address",
        [172, b, ..] if (16..32).contains(&b) => "private address",
        [192, 0, 0, _] => "IETF protocol address",
        [192, 0, 2, _] | [198, 51, 100, _] | [203, 0, 113, _] => "documentation address",
        [192, 88, 99, _] => "6to4 relay address",
        [192, 168, ..] => "private address",
        [198, b, ..] if b == 18 || b == 19 => "benchmarking address",
        [a, ..] if a >= 224 => "multicast or reserved address",
        _ => return None,
    })
}

fn forbidden_v6(ip: Ipv6Addr) -> Option<&'static str> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return forbidden_v4(v4);
    }
    let s = ip.segments();
    if ip.is_unspecified() {
        return Some("unspecified address");
    }
    if ip.is_loopback() {
        return Some("loopback address");
    }
    // NAT64 (64:ff9b::/96) and 6to4 (2002::/16) embed an IPv4 address.
    if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0] {
        let v4 = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
        return forbidden_v4(v4);
    }
    if s[0] == 0x2002 {
        let v4 = Ipv4Addr::new((s[1] >> 8) as u8, s[1] as u8, (s[2] >> 8) as u8, s[2] as u8);
        return forbidden_v4(v4);
    }
    // The local-use NAT64 prefix (RFC 8215) translates into the operator's own IPv4 network,
    // wherever in it the IPv4 address sits: all of it is refused.
    if s[0] == 0x64 && s[1] == 0xff9b && s[2] == 1 {
        return Some("local-use NAT64 address");
    }
    Some(match s[0] {
        x if x & 0xfe00 == 0xfc00 => "unique-local address",
        x if x & 0xffc0 == 0xfe80 => "link-local address",
        // Deprecated (RFC 3879) but still routed inside some networks.
        x if x & 0xffc0 == 0xfec0 => "site-local address",
        x if x & 0xff00 == 0xff00 => "multicast address",
        0x2001 if s[1] == 0x0db8 => "documentation address",
        0x2001 if s[1] < 0x0200 => "IETF protocol address",
        0x0100 if s[1..4] == [0, 0, 0] => "discard-only address",
        0 => "reserved address",
        _ => return None,
    })
}

/// Decides per address, with the operator's allowlist taking precedence.
#[derive(Clone, Debug, Default)]
pub struct AddressPolicy {
    allow: Vec<Cidr>,
}

impl AddressPolicy {
    pub fn new(allow: Vec<Cidr>) -> Self {
        Self { allow }
    }

    /// `Err(reason)` when deliveries must not go to `ip`.
    pub fn check(&self, ip: IpAddr) -> Result<(), &'static str> {
        if self.allow.iter().any(|c| c.contains(ip)) {
            return Ok(());
        }
        forbidden_reason(ip).map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn refuses_internal_ranges() {
        for s in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:1::",
            "ff02::1",
            "64:ff9b:1::a9fe:a9fe",
            "64:ff9b:1::",
            "64:ff9b:1:ffff:ffff:ffff:ffff:ffff",
            "64:ff9b:1:7f00:1::",
            "fec0::1",
            "feff:ffff::1",
        ] {
            assert!(forbidden_reason(ip(s)).is_some(), "{s} should be refused");
        }
    }

    #[test]
    fn allows_public_addresses() {
        for s in [
            "8.8.8.8",
            "1.1.1.1",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
            // Next to the new prefixes, outside them.
            "64:ff9b::808:808",
            "64:ff9b:2::1",
            "64:ff9a:1::1",
        ] {
            assert!(forbidden_reason(ip(s)).is_none(), "{s} should be allowed");
        }
    }

    #[test]
    fn local_use_nat64_and_site_local_are_refused_by_name() {
        // Whatever IPv4 address a local-use NAT64 address carries, public ones included.
        for s in ["64:ff9b:1::808:808", "64:ff9b:1:0808:0800::"] {
            assert_eq!(
                forbidden_reason(ip(s)),
                Some("local-use NAT64 address"),
                "{s}"
            );
        }
        for s in ["fec0::1", "fed0::", "feff:ffff::1"] {
            assert_eq!(forbidden_reason(ip(s)), Some("site-local address"), "{s}");
        }
        // The operator may still allow them.
        let p = AddressPolicy::new(parse_networks("64:ff9b:1::/48,fec0::/10").unwrap());
        assert!(p.check(ip("64:ff9b:1::a9fe:a9fe")).is_ok());
        assert!(p.check(ip("fec0::1")).is_ok());
    }

    #[test]
    fn allowlist_wins() {
        let p = AddressPolicy::new(parse_networks("127.0.0.0/8, ::1").unwrap());
        assert!(p.check(ip("127.0.0.1")).is_ok());
        assert!(p.check(ip("::1")).is_ok());
        assert!(p.check(ip("10.0.0.1")).is_err());
        assert!(parse_networks("10.0.0.0/33").is_err());
        assert!(parse_networks("nonsense").is_err());
        assert!(
            "10.0.0.0/8"
                .parse::<Cidr>()
                .unwrap()
                .contains(ip("10.255.0.1"))
        );
        assert!(
            !"10.0.0.0/9"
                .parse::<Cidr>()
                .unwrap()
                .contains(ip("10.128.0.1"))
        );
    }
}
