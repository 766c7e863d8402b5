//! Which destination addresses may be dialled. Customer-supplied URLs must not reach the
//! processor's own network: loopback, private, link-local, CGNAT, multicast, unspecified,
//! documentation and other reserved ranges are refused, for IPv4 and IPv6, including IPv6
//! forms that embed an IPv4 address (mapped, compatible, 6to4, NAT64). An operator allowlist
//! of CIDRs opens ranges.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

/// Why an address is refused, for the attempt's error text.
pub fn refused_range(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => refused_v4(v4),
        IpAddr::V6(v6) => refused_v6(v6),
    }
}

fn in_v4(ip: Ipv4Addr, net: [u8; 4], prefix: u32) -> bool {
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix)
    };
    (u32::from(ip) & mask) == (u32::from(Ipv4Addr::from(net)) & mask)
}

fn refused_v4(ip: Ipv4Addr) -> Option<&'static str> {
    const RANGES: [([u8; 4], u32, &str); 16] = [
        ([0, 0, 0, 0], 8, "unspecified (0.0.0.0/8)"),
        ([10, 0, 0, 0], 8, "private (10.0.0.0/8)"),
        ([100, 64, 0, 0], 10, "carrier-grade NAT (100.64.0.0/10)"),
        ([127, 0, 0, 0], 8, "loopback (127.0.0.0/8)"),
        ([169, 254, 0, 0], 16, "link-local (169.254.0.0/16)"),
        ([172, 16, 0, 0], 12, "private (172.16.0.0/12)"),
        ([192, 0, 0, 0], 24, "reserved (192.0.0.0/24)"),
        ([192, 0, 2, 0], 24, "documentation (192.0.2.0/24)"),
        ([192, 88, 99, 0], 24, "reserved (192.88.99.0/24)"),
        ([192, 168, 0, 0], 16, "private (192.168.0.0/16)"),
        ([198, 18, 0, 0], 15, "benchmarking (198.18.0.0/15)"),
        ([198, 51, 100, 0], 24, "documentation (198.51.100.0/24)"),
        ([203, 0, 113, 0], 24, "documentation (203.0.113.0/24)"),
        ([224, 0, 0, 0], 4, "multicast (224.0.0.0/4)"),
        ([240, 0, 0, 0], 4, "reserved (240.0.0.0/4)"),
        ([255, 255, 255, 255], 32, "broadcast"),
    ];
    RANGES
        .iter()
        .find(|(net, prefix, _)| in_v4(ip, *net, *prefix))
        .map(|(_, _, why)| *why)
}

fn refused_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let s = ip.segments();
    if ip.is_unspecified() {
        return Some("unspecified (::)");
    }
    if ip.is_loopback() {
        return Some("loopback (::1)");
    }
    // Forms that carry an IPv4 address: judged by that address.
    if let Some(v4) = ip.to_ipv4_mapped() {
        return refused_v4(v4);
    }
    if s[..6] == [0, 0, 0, 0, 0, 0] {
        return Some("IPv4-compatible (::/96)");
    }
    if s[..6] == [0, 0, 0, 0, 0xffff, 0] {
        return Some("IPv4-translated (::ffff:0:0/96)");
    }
    if s[0] == 0x64 && s[1] == 0xff9b {
        return Some("NAT64 (64:ff9b::/96, 64:ff9b:1::/48)");
    }
    if s[0] == 0x2002 {
        return Some("6to4 (2002::/16)");
    }
    match s[0] {
        0x0100 if s[1..4] == [0, 0, 0] => Some("discard (100::/64)"),
        0x2001 if s[1] < 0x0200 => Some("IETF protocol assignments, Teredo (2001::/23)"),
        0x2001 if s[1] == 0x0db8 => Some("documentation (2001:db8::/32)"),
        0x3fff if s[1] < 0x1000 => Some("documentation (3fff::/20)"),
        x if x & 0xfe00 == 0xfc00 => Some("unique local (fc00::/7)"),
        x if x & 0xffc0 == 0xfe80 => Some("link-local (fe80::/10)"),
        x if x & 0xffc0 == 0xfec0 => Some("site-local (fec0::/10)"),
        x if x & 0xff00 == 0xff00 => Some("multicast (ff00::/8)"),
        _ => None,
    }
}

/// The address policy: refused ranges, opened by the allowlist.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddressPolicy {
    pub allow: Vec<IpNet>,
}

impl AddressPolicy {
    /// `None` when `ip` may be dialled, else why not.
    pub fn check(&self, ip: IpAddr) -> Option<&'static str> {
        if self.allow.iter().any(|net| net.contains(&ip)) {
            return None;
        }
        refused_range(ip)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(text: &str) -> bool {
        refused_range(text.parse().unwrap()).is_some()
    }

    #[test]
    fn ipv4_translated_ipv6_is_refused() {
        assert!(refused("::ffff:0:a00:1"));
        assert!(refused("::ffff:0:8.8.8.8"));
        assert!(refused("::ffff:0:127.0.0.1"));
    }

    #[test]
    fn refuses_the_internal_and_reserved_ranges() {
        for ip in [
            "127.0.0.1",
            "127.1.2.3",
            "10.0.0.1",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "192.0.2.1",
            "198.51.100.7",
            "203.0.113.9",
            "198.18.0.1",
            "240.0.0.1",
            "::",
            "::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::127.0.0.1",
            "64:ff9b::7f00:1",
            "2002:7f00:1::",
            "fe80::1",
            "fc00::1",
            "fd12:3456::1",
            "ff02::1",
            "2001:db8::1",
            "2001::1",
            "100::1",
        ] {
            assert!(refused(ip), "{ip} should be refused");
        }
    }

    #[test]
    fn allows_public_addresses() {
        for ip in [
            "8.8.8.8",
            "1.1.1.1",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            assert!(!refused(ip), "{ip} should be allowed");
        }
    }

    #[test]
    fn the_allowlist_opens_exactly_what_it_lists() {
        let policy = AddressPolicy {
            allow: vec![
                "127.0.0.1/32".parse().unwrap(),
                "10.1.0.0/16".parse().unwrap(),
            ],
        };
        assert_eq!(policy.check("127.0.0.1".parse().unwrap()), None);
        assert!(policy.check("127.0.0.2".parse().unwrap()).is_some());
        assert_eq!(policy.check("10.1.2.3".parse().unwrap()), None);
        assert!(policy.check("10.2.0.1".parse().unwrap()).is_some());
        assert!(policy.check("::1".parse().unwrap()).is_some());
    }
}
