//! The layer-2 guard: what a member may put onto this host's bridge.
//!
//! Pure rules over one frame from a member (the node keeps the per-member learning budget in
//! [`crate::core::peer::Peer`] and calls [`check_remote`]), and one rule for frames from the local
//! bridge ([`is_reserved_group`]). Invariants, in the order they are checked (cheapest first):
//! IEEE 802.1D reserved group addresses (01:80:c2:00:00:00 to 0f: STP BPDUs, LLDP, 802.1X) never
//! cross hosts, as a Linux bridge never forwards them; router advertisements from members are
//! dropped when the operator asked for it; in a network with address ranges a member's frames
//! carry only source addresses of its own range (ARP sender, IPv4 and IPv6 source), except the
//! unspecified address (DHCP, duplicate address detection) and link-local ones; a MAC address
//! learned on another port moves to the member only with a frame that proved an address of the
//! member's range; a member teaches this host new MAC addresses at most [`LEARN_RATE`] a second
//! (burst [`LEARN_BURST`]), so no member can churn this host's FDB or its kernel bridge's.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Instant;

use crate::core::limit::TokenBucket;
use crate::core::ranges::Grant;
use crate::wire::{MacAddr, SourceClaim};

/// New MAC addresses a member may teach this host per second, and in a burst: a host with a few
/// hundred containers starting at once stays well inside it.
pub const LEARN_RATE: u64 = 100;
pub const LEARN_BURST: u64 = 1_000;

/// Why a frame from a member was not delivered. Each has its own counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuardDrop {
    /// To an IEEE 802.1D reserved group address.
    Reserved,
    /// An ICMPv6 router advertisement, and `drop_router_advertisements` is set.
    RouterAdvertisement,
    /// A source address outside the member's range.
    ForeignSource,
    /// Says ARP or IP but is not well formed.
    Malformed,
    /// Would move a MAC address learned elsewhere without proving an address of the member's range.
    UnprovenMove,
    /// A new MAC address beyond the member's learning budget.
    LearningLimited,
}

/// What the guard is told about the network and the operator's wishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GuardPolicy {
    /// The network has address ranges (this node's certificate grants one): check sources.
    pub enforce_ranges: bool,
    pub drop_router_advertisements: bool,
}

/// Whether `mac` is one of the IEEE 802.1D reserved group addresses a bridge never forwards.
pub fn is_reserved_group(mac: MacAddr) -> bool {
    mac.0[..5] == [0x01, 0x80, 0xc2, 0x00, 0x00] && mac.0[5] <= 0x0f
}

fn exempt_v4(a: Ipv4Addr) -> bool {
    a.is_unspecified() || a.is_link_local()
}

fn exempt_v6(a: Ipv6Addr) -> bool {
    a.is_unspecified() || a.segments()[0] & 0xffc0 == 0xfe80
}

/// Checks the claimed source of a frame from a member holding `grant`. `Ok(true)`: it proved an
/// address of the member's range; `Ok(false)`: it carries none to prove (or an exempt one).
pub fn check_source(claim: SourceClaim, grant: Option<&Grant>) -> Result<bool, GuardDrop> {
    match claim {
        SourceClaim::NoAddress => Ok(false),
        SourceClaim::Malformed => Err(GuardDrop::Malformed),
        SourceClaim::Arp(a) | SourceClaim::V4(a) if exempt_v4(a) => Ok(false),
        SourceClaim::Arp(a) | SourceClaim::V4(a) => match grant {
            Some(g) if g.range.contains(a) => Ok(true),
            _ => Err(GuardDrop::ForeignSource),
        },
        SourceClaim::V6 { addr, .. } if exempt_v6(addr) => Ok(false),
        SourceClaim::V6 { addr, .. } => match grant.and_then(|g| g.range6) {
            Some(r) if r.contains(addr) => Ok(true),
            _ => Err(GuardDrop::ForeignSource),
        },
    }
}

/// What the FDB says about the frame's source MAC before it is learned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceMac {
    /// Not in the table (or aged out): learning it takes from the budget.
    New,
    /// Already learned on this member.
    Here,
    /// Learned on another port (this host's bridge, or another member).
    Elsewhere,
}

/// The whole check of one frame from a member, in order. `claim` is only computed when needed.
pub fn check_remote(
    policy: GuardPolicy,
    dst: MacAddr,
    claim: impl FnOnce() -> SourceClaim,
    grant: Option<&Grant>,
    source_mac: SourceMac,
    budget: &mut TokenBucket,
    now: Instant,
) -> Result<(), GuardDrop> {
    if is_reserved_group(dst) {
        return Err(GuardDrop::Reserved);
    }
    let needs_claim = policy.enforce_ranges
        || policy.drop_router_advertisements
        || source_mac == SourceMac::Elsewhere;
    let proven = if needs_claim {
        let claim = claim();
        if policy.drop_router_advertisements
            && matches!(
                claim,
                SourceClaim::V6 {
                    router_advertisement: true,
                    ..
                }
            )
        {
            return Err(GuardDrop::RouterAdvertisement);
        }
        if policy.enforce_ranges {
            check_source(claim, grant)?
        } else {
            false
        }
    } else {
        false
    };
    match source_mac {
        SourceMac::Elsewhere if policy.enforce_ranges && !proven => Err(GuardDrop::UnprovenMove),
        SourceMac::New if !budget.try_take(now) => Err(GuardDrop::LearningLimited),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::ranges::{ContainerNetwork, Grant};

    fn grant() -> Grant {
        let net = ContainerNetwork::new(
            "10.77.0.0/16".parse().unwrap(),
            24,
            Some("fd77::/48".parse().unwrap()),
        )
        .unwrap();
        Grant::new(net, "10.77.2.0/24".parse().unwrap(), 1).unwrap()
    }

    const ENFORCE: GuardPolicy = GuardPolicy {
        enforce_ranges: true,
        drop_router_advertisements: false,
    };
    const UNICAST: MacAddr = MacAddr([2, 0, 0, 0, 0, 9]);

    fn check(
        policy: GuardPolicy,
        claim: SourceClaim,
        mac: SourceMac,
        budget: &mut TokenBucket,
        now: Instant,
    ) -> Result<(), GuardDrop> {
        check_remote(policy, UNICAST, || claim, Some(&grant()), mac, budget, now)
    }

    #[test]
    fn sources_must_be_the_members_own_except_unspecified_and_link_local() {
        let g = grant();
        let v4 = |s: &str| SourceClaim::V4(s.parse().unwrap());
        let v6 = |s: &str| SourceClaim::V6 {
            addr: s.parse().unwrap(),
            router_advertisement: false,
        };
        assert_eq!(check_source(v4("10.77.2.9"), Some(&g)), Ok(true));
        assert_eq!(
            check_source(SourceClaim::Arp("10.77.2.9".parse().unwrap()), Some(&g)),
            Ok(true)
        );
        assert_eq!(
            check_source(v4("10.77.3.9"), Some(&g)),
            Err(GuardDrop::ForeignSource)
        );
        assert_eq!(
            check_source(v4("192.0.2.1"), Some(&g)),
            Err(GuardDrop::ForeignSource)
        );
        assert_eq!(
            check_source(v4("10.77.2.9"), None),
            Err(GuardDrop::ForeignSource)
        );
        assert_eq!(
            check_source(v4("0.0.0.0"), Some(&g)),
            Ok(false),
            "DHCP discover"
        );
        assert_eq!(check_source(v4("169.254.1.1"), Some(&g)), Ok(false));
        assert_eq!(check_source(v6("fd77:0:0:2::5"), Some(&g)), Ok(true));
        assert_eq!(
            check_source(v6("fd77:0:0:3::5"), Some(&g)),
            Err(GuardDrop::ForeignSource)
        );
        assert_eq!(check_source(v6("fe80::1"), Some(&g)), Ok(false));
        assert_eq!(
            check_source(v6("::"), Some(&g)),
            Ok(false),
            "duplicate address detection"
        );
        assert_eq!(check_source(SourceClaim::NoAddress, Some(&g)), Ok(false));
        assert_eq!(
            check_source(SourceClaim::Malformed, Some(&g)),
            Err(GuardDrop::Malformed)
        );
    }

    #[test]
    fn reserved_groups_moves_and_learning_are_refused_in_order() {
        let now = Instant::now();
        let mut budget = TokenBucket::new(now, LEARN_RATE, LEARN_BURST);
        let bpdu = MacAddr([0x01, 0x80, 0xc2, 0, 0, 0]);
        let lldp = MacAddr([0x01, 0x80, 0xc2, 0, 0, 0x0e]);
        for dst in [bpdu, lldp] {
            assert_eq!(
                check_remote(
                    GuardPolicy::default(),
                    dst,
                    || SourceClaim::NoAddress,
                    None,
                    SourceMac::Here,
                    &mut budget,
                    now
                ),
                Err(GuardDrop::Reserved)
            );
        }
        assert!(!is_reserved_group(MacAddr([0x01, 0x80, 0xc2, 0, 0, 0x10])));
        let own = SourceClaim::V4("10.77.2.9".parse().unwrap());
        // A MAC known elsewhere moves only with a proven address; a non-IP frame cannot move it.
        assert_eq!(
            check(ENFORCE, own, SourceMac::Elsewhere, &mut budget, now),
            Ok(())
        );
        assert_eq!(
            check(
                ENFORCE,
                SourceClaim::NoAddress,
                SourceMac::Elsewhere,
                &mut budget,
                now
            ),
            Err(GuardDrop::UnprovenMove)
        );
        assert_eq!(
            check(
                ENFORCE,
                SourceClaim::NoAddress,
                SourceMac::Here,
                &mut budget,
                now
            ),
            Ok(())
        );
        // Router advertisements only when asked.
        let ra = SourceClaim::V6 {
            addr: "fe80::1".parse().unwrap(),
            router_advertisement: true,
        };
        assert_eq!(
            check(ENFORCE, ra, SourceMac::Here, &mut budget, now),
            Ok(())
        );
        let no_ra = GuardPolicy {
            drop_router_advertisements: true,
            ..ENFORCE
        };
        assert_eq!(
            check(no_ra, ra, SourceMac::Here, &mut budget, now),
            Err(GuardDrop::RouterAdvertisement)
        );
        // The learning budget: a burst, then refusals, while known MACs still pass.
        let mut learned = 0;
        while check(ENFORCE, own, SourceMac::New, &mut budget, now).is_ok() {
            learned += 1;
        }
        assert_eq!(learned, LEARN_BURST);
        assert_eq!(
            check(ENFORCE, own, SourceMac::New, &mut budget, now),
            Err(GuardDrop::LearningLimited)
        );
        assert_eq!(
            check(ENFORCE, own, SourceMac::Here, &mut budget, now),
            Ok(())
        );
    }
}
