//! The inner Ethernet frame carried in data messages, and the MAC address type the switch keys on.
//!
//! Invariant: a checked [`EthernetFrame`] holds at least [`ETHERNET_HEADER_LEN`] bytes. At most one
//! 802.1Q or 802.1ad tag is looked through ([`EthernetFrame::header_len`]); behind a second tag
//! (QinQ) the inner EtherType is that tag's TPID, so such a frame is not IP to [`super::IpFrame`]. Ethernet fields
//! are big-endian (network order) because they are the frame's own bytes, unlike meshd's little-endian
//! outer header. The frame has no FCS (TAP devices neither deliver nor expect one).

use std::fmt;
use std::str::FromStr;

use super::{IpError, IpVersion, WireError};

/// Destination, source and EtherType.
pub const ETHERNET_HEADER_LEN: usize = 14;
/// An 802.1Q / 802.1ad tag: TPID (the outer EtherType) is in the header, TCI and inner EtherType follow.
pub const VLAN_TAG_LEN: usize = 4;

pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_ARP: u16 = 0x0806;
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
/// 802.1Q customer VLAN tag.
pub const ETHERTYPE_VLAN: u16 = 0x8100;
/// 802.1ad service VLAN tag (QinQ outer tag).
pub const ETHERTYPE_QINQ: u16 = 0x88a8;

const DST: usize = 0;
const SRC: usize = 6;
const ETHERTYPE: usize = 12;
const TCI: usize = ETHERNET_HEADER_LEN;

/// A 48-bit IEEE MAC address. Displays and parses as lower-case `aa:bb:cc:dd:ee:ff`; serialises as that
/// string.
#[derive(Copy, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    pub const BROADCAST: MacAddr = MacAddr([0xff; 6]);
    pub const ZERO: MacAddr = MacAddr([0; 6]);

    /// The first six bytes of `bytes`, if there are six.
    pub fn from_slice(bytes: &[u8]) -> Option<MacAddr> {
        let octets: [u8; 6] = bytes.get(..6)?.try_into().ok()?;
        Some(MacAddr(octets))
    }

    pub const fn octets(self) -> [u8; 6] {
        self.0
    }

    pub fn is_broadcast(self) -> bool {
        self == Self::BROADCAST
    }

    /// The I/G (group) bit is set; broadcast is a multicast address too.
    pub const fn is_multicast(self) -> bool {
        self.0[0] & 0x01 != 0
    }

    pub const fn is_unicast(self) -> bool {
        !self.is_multicast()
    }

    pub fn is_zero(self) -> bool {
        self == Self::ZERO
    }

    /// The U/L bit is set: the address was not assigned by a vendor (e.g. random container MACs).
    pub const fn is_locally_administered(self) -> bool {
        self.0[0] & 0x02 != 0
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MacAddr({self})")
    }
}

/// A string that is not six colon-separated pairs of hex digits.
#[derive(Copy, Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid MAC address (expected six colon-separated hex pairs like aa:bb:cc:dd:ee:ff)")]
pub struct MacParseError;

impl FromStr for MacAddr {
    type Err = MacParseError;

    /// Accepts exactly `xx:xx:xx:xx:xx:xx` with hex digits of either case.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bytes = text.as_bytes();
        if bytes.len() != 17 {
            return Err(MacParseError);
        }
        let mut octets = [0u8; 6];
        for (i, octet) in octets.iter_mut().enumerate() {
            let at = i * 3;
            if i > 0 && bytes[at - 1] != b':' {
                return Err(MacParseError);
            }
            let high = hex_digit(bytes[at]).ok_or(MacParseError)?;
            let low = hex_digit(bytes[at + 1]).ok_or(MacParseError)?;
            *octet = high << 4 | low;
        }
        Ok(MacAddr(octets))
    }
}

fn hex_digit(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

impl serde::Serialize for MacAddr {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for MacAddr {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = MacAddr;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a MAC address like aa:bb:cc:dd:ee:ff")
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<MacAddr, E> {
                text.parse().map_err(E::custom)
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

/// An Ethernet II frame (destination, source, EtherType, payload), possibly VLAN-tagged.
#[derive(Debug, Clone)]
pub struct EthernetFrame<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> EthernetFrame<T> {
    /// Wraps `buffer` without checking it; accessors panic if it is shorter than [`ETHERNET_HEADER_LEN`].
    pub const fn new_unchecked(buffer: T) -> Self {
        EthernetFrame { buffer }
    }

    /// Wraps `buffer` if it holds at least [`ETHERNET_HEADER_LEN`] bytes.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        if buffer.as_ref().len() < ETHERNET_HEADER_LEN {
            return Err(WireError::Truncated);
        }
        Ok(EthernetFrame { buffer })
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The whole frame.
    pub fn as_bytes(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    pub fn dst(&self) -> MacAddr {
        self.mac_at(DST)
    }

    pub fn src(&self) -> MacAddr {
        self.mac_at(SRC)
    }

    /// The outer EtherType (the TPID of a tagged frame), big-endian as on the wire.
    pub fn ethertype(&self) -> u16 {
        let bytes = self.buffer.as_ref();
        u16::from_be_bytes([bytes[ETHERTYPE], bytes[ETHERTYPE + 1]])
    }

    /// The 12-bit VLAN ID of the outermost tag, if the frame is 802.1Q/802.1ad-tagged and long enough
    /// to hold the tag.
    pub fn vlan_id(&self) -> Option<u16> {
        if !matches!(self.ethertype(), ETHERTYPE_VLAN | ETHERTYPE_QINQ) {
            return None;
        }
        let tag = self.buffer.as_ref().get(TCI..TCI + VLAN_TAG_LEN)?;
        Some(u16::from_be_bytes([tag[0], tag[1]]) & 0x0fff)
    }

    /// Bytes in front of the payload proper: 18 when the outer EtherType is a VLAN TPID (802.1Q
    /// or 802.1ad, one tag), else 14. Only the EtherType is read, so a tagged frame that ends
    /// inside its tag still says 18.
    pub fn header_len(&self) -> usize {
        if matches!(self.ethertype(), ETHERTYPE_VLAN | ETHERTYPE_QINQ) {
            ETHERNET_HEADER_LEN + VLAN_TAG_LEN
        } else {
            ETHERNET_HEADER_LEN
        }
    }

    /// The EtherType of the payload: the one behind the tag of a tagged frame (`None` if the frame
    /// ends inside the tag), else the outer one.
    pub fn inner_ethertype(&self) -> Option<u16> {
        let at = self.header_len() - 2;
        let bytes = self.buffer.as_ref().get(at..at + 2)?;
        Some(u16::from_be_bytes([bytes[0], bytes[1]]))
    }

    /// Where the IP header starts (14, or 18 behind a tag) and its version, read from the
    /// EtherType alone: the IP header itself is not looked at (that is [`super::IpFrame`]'s job).
    /// [`IpError::Truncated`] if the frame ends inside its tag, [`IpError::NotIp`] for any
    /// EtherType but IPv4 and IPv6.
    pub fn ip_offset(&self) -> Result<(usize, IpVersion), IpError> {
        match self.inner_ethertype() {
            None => Err(IpError::Truncated),
            Some(ETHERTYPE_IPV4) => Ok((self.header_len(), IpVersion::V4)),
            Some(ETHERTYPE_IPV6) => Ok((self.header_len(), IpVersion::V6)),
            Some(_) => Err(IpError::NotIp),
        }
    }

    /// Everything after the 14-byte header (for a tagged frame this starts with the tag's TCI).
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[ETHERNET_HEADER_LEN..]
    }

    fn mac_at(&self, at: usize) -> MacAddr {
        let mut octets = [0u8; 6];
        octets.copy_from_slice(&self.buffer.as_ref()[at..at + 6]);
        MacAddr(octets)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> EthernetFrame<T> {
    pub fn set_dst(&mut self, mac: MacAddr) {
        self.buffer.as_mut()[DST..SRC].copy_from_slice(&mac.0);
    }

    pub fn set_src(&mut self, mac: MacAddr) {
        self.buffer.as_mut()[SRC..ETHERTYPE].copy_from_slice(&mac.0);
    }

    pub fn set_ethertype(&mut self, ethertype: u16) {
        self.buffer.as_mut()[ETHERTYPE..ETHERNET_HEADER_LEN]
            .copy_from_slice(&ethertype.to_be_bytes());
    }

    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[ETHERNET_HEADER_LEN..]
    }
}
