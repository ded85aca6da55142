//! Fuzzing of the address policy's input surfaces with `proptest` (cargo-fuzz needs nightly).
//!
//! Network lists come from operators (`HERALD_ALLOW_NETWORKS`) and addresses from whatever a
//! customer's endpoint name resolves to: neither may panic the guard, a list it refuses must say
//! what is wrong, and an address must be refused or allowed alike in every form that embeds it.
//! The test first runs every seed of `tests/fuzz/corpus/networks/` through its property check,
//! then the same check over mutated seeds and over generated inputs. `HERALD_FUZZ_CASES` sets the
//! cases per strategy (default 256; `make fuzz` runs 50,000). See `tests/fuzz/README.md`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use herald_outbound::address_policy::{AddressPolicy, Cidr, forbidden_reason, parse_networks};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::{Index, select};
use proptest::test_runner::TestCaseResult;

// The harness serves several targets; this one uses part of it.
#[allow(dead_code)]
#[path = "../../core/tests/fuzz/harness.rs"]
mod harness;

use harness::{Fuzz, mutated};

fn mapped(v4: Ipv4Addr) -> [IpAddr; 3] {
    let [a, b, c, d] = v4.octets();
    let w = |x: u8, y: u8| (u16::from(x) << 8) | u16::from(y);
    [
        // IPv4-mapped, NAT64 (64:ff9b::/96) and 6to4 (2002::/16) embed the IPv4 address.
        IpAddr::V6(v4.to_ipv6_mapped()),
        IpAddr::V6(Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, w(a, b), w(c, d))),
        IpAddr::V6(Ipv6Addr::new(0x2002, w(a, b), w(c, d), 0, 0, 0, 0, 1)),
    ]
}

/// An address refused or allowed consistently in all its forms and by the default policy.
fn check_ip(ip: IpAddr) -> TestCaseResult {
    let reason = forbidden_reason(ip);
    if let Some(r) = reason {
        prop_assert!(!r.is_empty());
    }
    prop_assert_eq!(
        AddressPolicy::default().check(ip).is_err(),
        reason.is_some()
    );
    // The local-use NAT64 prefix (64:ff9b:1::/48) and site-local fec0::/10, whole.
    if let IpAddr::V6(v6) = ip {
        let bits = u128::from(v6);
        if bits >> 80 == 0x0064_ff9b_0001 || bits >> 118 == 0xfec0 >> 6 {
            prop_assert!(reason.is_some(), "{} should be refused", v6);
        }
    }
    let v4 = match ip {
        IpAddr::V4(v4) => Some(v4),
        IpAddr::V6(v6) => v6.to_ipv4_mapped(),
    };
    if let Some(v4) = v4 {
        let forbidden = forbidden_reason(IpAddr::V4(v4)).is_some();
        for form in mapped(v4) {
            prop_assert_eq!(
                forbidden_reason(form).is_some(),
                forbidden,
                "{} vs {}",
                form,
                v4
            );
        }
    }
    Ok(())
}

fn check_networks_text(text: &str) -> TestCaseResult {
    match parse_networks(text) {
        Err(e) => prop_assert!(!e.to_string().is_empty()),
        Ok(list) => {
            let pieces = text.split(',').filter(|p| !p.trim().is_empty()).count();
            prop_assert_eq!(list.len(), pieces);
            let policy = AddressPolicy::new(list.clone());
            for piece in text.split(',') {
                let addr = piece.split('/').next().unwrap_or_default().trim();
                if let Ok(ip) = addr.parse::<IpAddr>() {
                    prop_assert!(list.iter().any(|c| c.contains(ip)), "{ip} not in {text:?}");
                    prop_assert!(policy.check(ip).is_ok());
                }
            }
        }
    }
    for piece in text.split([',', '/', ' ']) {
        if let Ok(ip) = piece.trim().parse::<IpAddr>() {
            check_ip(ip)?;
        }
    }
    Ok(())
}

fn ipv4() -> BoxedStrategy<Ipv4Addr> {
    let special = select(&[0u8, 10, 100, 127, 169, 172, 192, 198, 203, 224, 240, 255][..]);
    prop_oneof![
        any::<u32>().prop_map(Ipv4Addr::from),
        (special, any::<u8>(), any::<u8>(), any::<u8>())
            .prop_map(|(a, b, c, d)| Ipv4Addr::new(a, b, c, d)),
    ]
    .boxed()
}

fn ipv6() -> BoxedStrategy<Ipv6Addr> {
    let prefixes: &[(u128, u32)] = &[
        (0, 96),
        (0xffff << 32, 96),
        (0x0064_ff9b << 96, 96),
        (0x0064_ff9b_0001 << 80, 48),
        (0x2002 << 112, 16),
        (0xfec0 << 112, 10),
        (0xfc00 << 112, 7),
        (0xfe80 << 112, 10),
        (0xff00 << 112, 8),
        (0x2001_0db8 << 96, 32),
        (0x2001 << 112, 23),
        (0x0100 << 112, 64),
        (0x2606_4700 << 96, 32),
    ];
    prop_oneof![
        any::<u128>().prop_map(Ipv6Addr::from),
        (select(prefixes), any::<u128>())
            .prop_map(|((net, len), rest)| { Ipv6Addr::from(net | (rest & (u128::MAX >> len))) }),
    ]
    .boxed()
}

fn ip() -> BoxedStrategy<IpAddr> {
    prop_oneof![ipv4().prop_map(IpAddr::V4), ipv6().prop_map(IpAddr::V6)].boxed()
}

/// `a.b.c.d/len` contains exactly the addresses that share its first `len` bits.
fn check_cidr(ip: IpAddr, len: u8, rest: u128, flip: Index) -> TestCaseResult {
    let (bits, max) = match ip {
        IpAddr::V4(v4) => (u128::from(u32::from(v4)), 32u8),
        IpAddr::V6(v6) => (u128::from(v6), 128u8),
    };
    let len = len % (max + 1);
    let from_bits = |b: u128| match ip {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::from(b as u32)),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::from(b)),
    };
    let host_mask = if len == max {
        0
    } else {
        (u128::MAX >> (128 - u32::from(max))) >> len
    };
    let text = format!("{ip}/{len}");
    let cidr: Result<Cidr, _> = text.parse();
    prop_assert!(cidr.is_ok(), "{text}: {cidr:?}");
    let Ok(cidr) = cidr else { return Ok(()) };
    prop_assert_eq!(
        parse_networks(&format!(" {text} ,, ")).ok(),
        Some(vec![cidr])
    );
    prop_assert!(cidr.contains(ip));
    let same = from_bits((bits & !host_mask) | (rest & host_mask));
    prop_assert!(cidr.contains(same), "{text} should contain {same}");
    prop_assert!(AddressPolicy::new(vec![cidr]).check(same).is_ok());
    if len > 0 {
        let bit = flip.index(usize::from(len)) as u32;
        let other = from_bits(
            ((bits & !host_mask) | (rest & host_mask)) ^ (1 << (u32::from(max) - 1 - bit)),
        );
        prop_assert!(!cidr.contains(other), "{text} should not contain {other}");
    }
    let too_long = format!("{ip}/{}", u16::from(max) + 1);
    prop_assert!(too_long.parse::<Cidr>().is_err(), "{} parsed", too_long);
    Ok(())
}

#[test]
fn fuzz_networks() {
    let mut fuzz = Fuzz::new("networks");
    fuzz.corpus(|bytes| check_networks_text(&String::from_utf8_lossy(bytes)));
    fuzz.run("mutated seeds", mutated(fuzz.seeds()), |text| {
        check_networks_text(&text)
    });
    fuzz.run("strings", any::<String>(), |text| {
        check_networks_text(&text)
    });
    fuzz.run(
        "network lists",
        vec(
            prop_oneof![
                (ip(), proptest::option::of(any::<u8>())).prop_map(|(ip, len)| match len {
                    Some(l) => format!(" {ip}/{l}"),
                    None => ip.to_string(),
                }),
                "[0-9a-fA-F:.%/ ]{0,24}",
            ],
            0..5,
        ),
        |parts| check_networks_text(&parts.join(",")),
    );
    fuzz.run("addresses", ip(), check_ip);
    fuzz.run(
        "cidr",
        (ip(), any::<u8>(), any::<u128>(), any::<Index>()),
        |(ip, len, rest, flip)| check_cidr(ip, len, rest, flip),
    );
    fuzz.finish();
}
