//! The source address an Ethernet frame claims for itself at layer 3: the sender address of an
//! ARP packet (Ethernet/IPv4 ARP only) or the source of an IPv4 or IPv6 packet, behind at most one
//! VLAN tag. The layer-2 guard (src/core/guard.rs) compares it with the sending member's range.
//!
//! Invariants: reads only inside the frame; a frame that says ARP, IPv4 or IPv6 but is too short or
//! not well formed for it is [`SourceClaim::Malformed`] (never an addressless frame, so it cannot slip
//! past the check); every other EtherType is [`SourceClaim::NoAddress`].

use std::net::{Ipv4Addr, Ipv6Addr};

use super::ethernet::{EthernetFrame, ETHERTYPE_ARP};
use super::ip::{IpFrame, IpVersion};

/// Ethernet/IPv4 ARP packet length.
const ARP_LEN: usize = 28;
/// ICMPv6 as an IPv6 next header.
const NEXT_HEADER_ICMPV6: u8 = 58;
/// ICMPv6 Router Advertisement.
const ICMPV6_ROUTER_ADVERTISEMENT: u8 = 134;

/// What a frame says its layer-3 sender is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceClaim {
    /// Not ARP, IPv4 or IPv6: no address to check.
    NoAddress,
    /// An ARP packet's sender protocol address.
    Arp(Ipv4Addr),
    V4(Ipv4Addr),
    V6 {
        addr: Ipv6Addr,
        /// An ICMPv6 Router Advertisement directly behind the IPv6 header.
        router_advertisement: bool,
    },
    /// Claims ARP or IP but does not hold together.
    Malformed,
}

/// The source `frame` claims; see the module docs.
pub fn source_claim(frame: &[u8]) -> SourceClaim {
    let Ok(eth) = EthernetFrame::new_checked(frame) else {
        return SourceClaim::Malformed;
    };
    if eth.inner_ethertype() == Some(ETHERTYPE_ARP) {
        let at = eth.header_len();
        return match frame.get(at..at + ARP_LEN) {
            Some(arp)
                if arp[0..2] == [0, 1]
                    && arp[2..4] == [0x08, 0x00]
                    && arp[4] == 6
                    && arp[5] == 4 =>
            {
                SourceClaim::Arp(Ipv4Addr::new(arp[14], arp[15], arp[16], arp[17]))
            }
            _ => SourceClaim::Malformed,
        };
    }
    if eth.ip_offset().is_err() {
        return match eth.inner_ethertype() {
            None => SourceClaim::Malformed,
            Some(_) => SourceClaim::NoAddress,
        };
    }
    let Ok(ip) = IpFrame::new_checked(frame) else {
        return SourceClaim::Malformed;
    };
    let src = ip.src_addr();
    match ip.version() {
        IpVersion::V4 => SourceClaim::V4(Ipv4Addr::new(src[0], src[1], src[2], src[3])),
        IpVersion::V6 => {
            let mut octets = [0u8; 16];
            octets.copy_from_slice(src);
            SourceClaim::V6 {
                addr: Ipv6Addr::from(octets),
                router_advertisement: ip.protocol() == NEXT_HEADER_ICMPV6
                    && ip.payload().first() == Some(&ICMPV6_ROUTER_ADVERTISEMENT),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eth(ethertype: u16, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&[2, 0, 0, 0, 0, 1]);
        f.extend_from_slice(&ethertype.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    fn arp(sender: [u8; 4]) -> Vec<u8> {
        let mut p = vec![0, 1, 8, 0, 6, 4, 0, 1];
        p.extend_from_slice(&[2, 0, 0, 0, 0, 1]);
        p.extend_from_slice(&sender);
        p.extend_from_slice(&[0; 6]);
        p.extend_from_slice(&[10, 77, 0, 9]);
        p
    }

    #[test]
    fn arp_ipv4_ipv6_and_other_frames_are_told_apart() {
        assert_eq!(
            source_claim(&eth(0x0806, &arp([10, 77, 1, 5]))),
            SourceClaim::Arp(Ipv4Addr::new(10, 77, 1, 5))
        );
        assert_eq!(
            source_claim(&eth(0x0806, &arp([1, 2, 3, 4])[..20])),
            SourceClaim::Malformed
        );
        let mut v4 = vec![
            0x45, 0, 0, 20, 0, 0, 0, 0, 64, 17, 0, 0, 10, 77, 2, 3, 10, 77, 0, 1,
        ];
        assert_eq!(
            source_claim(&eth(0x0800, &v4)),
            SourceClaim::V4(Ipv4Addr::new(10, 77, 2, 3))
        );
        v4[0] = 0x65;
        assert_eq!(source_claim(&eth(0x0800, &v4)), SourceClaim::Malformed);
        let mut v6 = vec![0x60, 0, 0, 0, 0, 8, 58, 255];
        v6.extend_from_slice(&"fe80::1".parse::<Ipv6Addr>().unwrap().octets());
        v6.extend_from_slice(&"ff02::1".parse::<Ipv6Addr>().unwrap().octets());
        v6.extend_from_slice(&[134, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(
            source_claim(&eth(0x86dd, &v6)),
            SourceClaim::V6 {
                addr: "fe80::1".parse().unwrap(),
                router_advertisement: true
            }
        );
        assert_eq!(source_claim(&eth(0x88b5, &[0; 30])), SourceClaim::NoAddress);
        // Behind a VLAN tag too.
        let mut tagged = vec![0, 5, 0x08, 0x06];
        tagged.extend_from_slice(&arp([10, 77, 3, 3]));
        assert_eq!(
            source_claim(&eth(0x8100, &tagged)),
            SourceClaim::Arp(Ipv4Addr::new(10, 77, 3, 3))
        );
    }
}
