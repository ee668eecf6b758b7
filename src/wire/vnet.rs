//! The virtio-net header that a TAP device opened with `IFF_VNET_HDR` puts in front of every frame it
//! hands out, and expects in front of every frame written to it.
//!
//! Layout (`struct virtio_net_hdr`, 10 bytes; with `TUNSETVNETHDRSZ` = 12 the `num_buffers` field of
//! `virtio_net_hdr_mrg_rxbuf` follows):
//!
//! | offset | size | field         |
//! |-------:|-----:|---------------|
//! | 0      | 1    | flags: `NEEDS_CSUM` (1), `DATA_VALID` (2) |
//! | 1      | 1    | gso_type: `NONE` 0, `TCPV4` 1, `UDP` 3 (UFO), `TCPV6` 4, `UDP_L4` 5 (USO), plus the `ECN` bit 0x80 |
//! | 2      | 2    | hdr_len       |
//! | 4      | 2    | gso_size      |
//! | 6      | 2    | csum_start    |
//! | 8      | 2    | csum_offset   |
//! | 10     | 2    | num_buffers (12-byte form only) |
//!
//! Every offset in the header counts from the first byte of the Ethernet frame that follows it
//! (the destination MAC), VLAN tag included. `csum_start` is where the L4 checksum coverage begins
//! and `csum_offset` is the checksum field's distance from there (16 for TCP, 6 for UDP). `hdr_len`
//! is, for GSO frames, the length of all headers up to the L4 payload; Linux fills it with the
//! length of the linear part of the skb, which for frames from the TCP and UDP stacks (local or
//! bridged) is exactly the headers, but the virtio specification only promises a hint.
//!
//! Byte order: the u16 fields are in the byte order TUN was configured with, which is the host's
//! order unless `TUNSETVNETLE`/`TUNSETVNETBE` was issued. meshd targets little-endian Linux and this
//! view always reads and writes little-endian; on a big-endian host the io layer must issue
//! `TUNSETVNETLE` first.
//!
//! Invariant: a checked [`VnetHdr`] holds at least [`VnetHdrSize::header_len`] bytes; getters never panic.
//! Unknown flag bits and GSO types are values, not errors: deciding what to do with them is the
//! offload module's job. `num_buffers` is ignored on read: TUN writes only the first 10 bytes of a
//! longer header and leaves the rest of the reader's buffer as it was.

use super::WireError;

/// `sizeof(struct virtio_net_hdr)`: the size TUN uses unless told otherwise.
pub const VNET_HDR_LEN: usize = 10;
/// `sizeof(struct virtio_net_hdr_mrg_rxbuf)` (the "v1" form), set with `TUNSETVNETHDRSZ`.
pub const VNET_HDR_LEN_MRG: usize = 12;

/// The L4 checksum is partial: complete it over `[csum_start, end)` and store it at
/// `csum_start + csum_offset`.
pub const VNET_F_NEEDS_CSUM: u8 = 1;
/// The checksums were already verified (only ever set by the kernel on frames it hands out).
pub const VNET_F_DATA_VALID: u8 = 2;

pub const VNET_GSO_NONE: u8 = 0;
pub const VNET_GSO_TCPV4: u8 = 1;
/// UDP fragmentation offload; deprecated in Linux and never accepted by meshd.
pub const VNET_GSO_UDP: u8 = 3;
pub const VNET_GSO_TCPV6: u8 = 4;
/// UDP segmentation offload (one datagram per `gso_size` bytes), IPv4 or IPv6.
pub const VNET_GSO_UDP_L4: u8 = 5;
/// Not a type but a modifier of the TCP types: the sender uses ECN, so CWR belongs on the first
/// segment only.
pub const VNET_GSO_ECN: u8 = 0x80;

const FLAGS: usize = 0;
const GSO_TYPE: usize = 1;
const HDR_LEN: usize = 2;
const GSO_SIZE: usize = 4;
const CSUM_START: usize = 6;
const CSUM_OFFSET: usize = 8;
const NUM_BUFFERS: usize = 10;

/// The header size configured on the TAP (`TUNSETVNETHDRSZ`). Only the two sizes meshd uses exist.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Default)]
pub enum VnetHdrSize {
    /// 10 bytes, the kernel's default.
    #[default]
    Legacy,
    /// 12 bytes: `num_buffers` follows (always 0 when meshd writes it).
    Mergeable,
}

impl VnetHdrSize {
    /// The size for `len` bytes, if meshd supports it.
    pub const fn from_len(len: usize) -> Option<VnetHdrSize> {
        match len {
            VNET_HDR_LEN => Some(VnetHdrSize::Legacy),
            VNET_HDR_LEN_MRG => Some(VnetHdrSize::Mergeable),
            _ => None,
        }
    }

    pub const fn header_len(self) -> usize {
        match self {
            VnetHdrSize::Legacy => VNET_HDR_LEN,
            VnetHdrSize::Mergeable => VNET_HDR_LEN_MRG,
        }
    }
}

/// The base GSO type, with the ECN modifier bit masked off.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum GsoType {
    None,
    TcpV4,
    /// UFO: accepted by this view, refused by segmentation.
    Udp,
    TcpV6,
    UdpL4,
    Unknown(u8),
}

impl From<u8> for GsoType {
    /// Classifies a raw `gso_type` byte; the ECN bit is ignored here (see [`VnetHdrFields::ecn`]).
    fn from(raw: u8) -> GsoType {
        match raw & !VNET_GSO_ECN {
            VNET_GSO_NONE => GsoType::None,
            VNET_GSO_TCPV4 => GsoType::TcpV4,
            VNET_GSO_UDP => GsoType::Udp,
            VNET_GSO_TCPV6 => GsoType::TcpV6,
            VNET_GSO_UDP_L4 => GsoType::UdpL4,
            other => GsoType::Unknown(other),
        }
    }
}

/// The header's values, decoded: what the offload code consumes and produces.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct VnetHdrFields {
    pub flags: u8,
    /// Raw byte, ECN bit included; [`VnetHdrFields::gso`] classifies it.
    pub gso_type: u8,
    pub hdr_len: u16,
    pub gso_size: u16,
    pub csum_start: u16,
    pub csum_offset: u16,
}

impl VnetHdrFields {
    /// A plain frame with complete checksums: what meshd writes in front of a frame it did not merge.
    pub const NONE: VnetHdrFields = VnetHdrFields {
        flags: 0,
        gso_type: VNET_GSO_NONE,
        hdr_len: 0,
        gso_size: 0,
        csum_start: 0,
        csum_offset: 0,
    };

    pub const fn needs_csum(&self) -> bool {
        self.flags & VNET_F_NEEDS_CSUM != 0
    }

    pub const fn data_valid(&self) -> bool {
        self.flags & VNET_F_DATA_VALID != 0
    }

    pub fn gso(&self) -> GsoType {
        GsoType::from(self.gso_type)
    }

    pub const fn ecn(&self) -> bool {
        self.gso_type & VNET_GSO_ECN != 0
    }
}

/// A virtio-net header at the start of `buffer`, followed by the Ethernet frame.
#[derive(Debug, Clone)]
pub struct VnetHdr<T: AsRef<[u8]>> {
    buffer: T,
    size: VnetHdrSize,
}

impl<T: AsRef<[u8]>> VnetHdr<T> {
    /// Wraps `buffer` without checking it; accessors panic if it is shorter than `size`.
    pub const fn new_unchecked(buffer: T, size: VnetHdrSize) -> Self {
        VnetHdr { buffer, size }
    }

    /// Wraps `buffer` (typically one whole TAP read) if it holds at least the header.
    pub fn new_checked(buffer: T, size: VnetHdrSize) -> Result<Self, WireError> {
        if buffer.as_ref().len() < size.header_len() {
            return Err(WireError::Truncated);
        }
        Ok(VnetHdr { buffer, size })
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    pub fn size(&self) -> VnetHdrSize {
        self.size
    }

    /// The header's own bytes.
    pub fn header_bytes(&self) -> &[u8] {
        &self.buffer.as_ref()[..self.size.header_len()]
    }

    /// The Ethernet frame behind the header (possibly empty: that is for the frame parser to refuse).
    pub fn frame(&self) -> &[u8] {
        &self.buffer.as_ref()[self.size.header_len()..]
    }

    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[FLAGS]
    }

    pub fn gso_type(&self) -> u8 {
        self.buffer.as_ref()[GSO_TYPE]
    }

    pub fn hdr_len(&self) -> u16 {
        self.u16_at(HDR_LEN)
    }

    pub fn gso_size(&self) -> u16 {
        self.u16_at(GSO_SIZE)
    }

    pub fn csum_start(&self) -> u16 {
        self.u16_at(CSUM_START)
    }

    pub fn csum_offset(&self) -> u16 {
        self.u16_at(CSUM_OFFSET)
    }

    /// Only the 12-byte form has it, and only a host's virtio device fills it in; TUN leaves it alone.
    pub fn num_buffers(&self) -> Option<u16> {
        match self.size {
            VnetHdrSize::Legacy => None,
            VnetHdrSize::Mergeable => Some(self.u16_at(NUM_BUFFERS)),
        }
    }

    pub fn fields(&self) -> VnetHdrFields {
        VnetHdrFields {
            flags: self.flags(),
            gso_type: self.gso_type(),
            hdr_len: self.hdr_len(),
            gso_size: self.gso_size(),
            csum_start: self.csum_start(),
            csum_offset: self.csum_offset(),
        }
    }

    fn u16_at(&self, at: usize) -> u16 {
        let bytes = self.buffer.as_ref();
        u16::from_le_bytes([bytes[at], bytes[at + 1]])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> VnetHdr<T> {
    pub fn set_flags(&mut self, flags: u8) {
        self.buffer.as_mut()[FLAGS] = flags;
    }

    pub fn set_gso_type(&mut self, gso_type: u8) {
        self.buffer.as_mut()[GSO_TYPE] = gso_type;
    }

    pub fn set_hdr_len(&mut self, value: u16) {
        self.set_u16_at(HDR_LEN, value);
    }

    pub fn set_gso_size(&mut self, value: u16) {
        self.set_u16_at(GSO_SIZE, value);
    }

    pub fn set_csum_start(&mut self, value: u16) {
        self.set_u16_at(CSUM_START, value);
    }

    pub fn set_csum_offset(&mut self, value: u16) {
        self.set_u16_at(CSUM_OFFSET, value);
    }

    /// Writes every field; `num_buffers`, where present, becomes 0.
    pub fn emit(&mut self, fields: &VnetHdrFields) {
        self.set_flags(fields.flags);
        self.set_gso_type(fields.gso_type);
        self.set_hdr_len(fields.hdr_len);
        self.set_gso_size(fields.gso_size);
        self.set_csum_start(fields.csum_start);
        self.set_csum_offset(fields.csum_offset);
        if self.size == VnetHdrSize::Mergeable {
            self.set_u16_at(NUM_BUFFERS, 0);
        }
    }

    /// The all-zero header of a plain frame whose checksums are complete.
    pub fn emit_none(&mut self) {
        let len = self.size.header_len();
        self.buffer.as_mut()[..len].fill(0);
    }

    pub fn frame_mut(&mut self) -> &mut [u8] {
        let len = self.size.header_len();
        &mut self.buffer.as_mut()[len..]
    }

    fn set_u16_at(&mut self, at: usize, value: u16) {
        self.buffer.as_mut()[at..at + 2].copy_from_slice(&value.to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn reads_a_header_as_linux_wrote_it() {
        // A TCPv4 super-frame header captured from a 6.18 TAP (TUNSETVNETHDRSZ 12): NEEDS_CSUM,
        // TCPV4, hdr_len 66, gso_size 1448, csum_start 34, csum_offset 16.
        let mut read = vec![1, 1, 66, 0, 0xa8, 0x05, 34, 0, 16, 0, 0xaa, 0xbb];
        read.extend_from_slice(&[0xff; 20]);
        let hdr = VnetHdr::new_checked(&read[..], VnetHdrSize::Mergeable).unwrap();
        let fields = hdr.fields();
        assert!(fields.needs_csum() && !fields.data_valid() && !fields.ecn());
        assert_eq!(fields.gso(), GsoType::TcpV4);
        assert_eq!(
            (
                fields.hdr_len,
                fields.gso_size,
                fields.csum_start,
                fields.csum_offset
            ),
            (66, 1448, 34, 16)
        );
        assert_eq!(hdr.num_buffers(), Some(0xbbaa));
        assert_eq!(hdr.frame(), &[0xff; 20]);
        let legacy = VnetHdr::new_checked(&read[..], VnetHdrSize::Legacy).unwrap();
        assert_eq!(legacy.fields(), fields);
        assert_eq!(legacy.num_buffers(), None);
        assert_eq!(legacy.frame().len(), 22);
    }

    #[test]
    fn short_buffers_are_truncated_and_sizes_are_only_ten_or_twelve() {
        assert_eq!(
            VnetHdr::new_checked(&[0u8; 11][..], VnetHdrSize::Mergeable).unwrap_err(),
            WireError::Truncated
        );
        assert!(VnetHdr::new_checked(&[0u8; 10][..], VnetHdrSize::Legacy).is_ok());
        assert_eq!(VnetHdrSize::from_len(10), Some(VnetHdrSize::Legacy));
        assert_eq!(VnetHdrSize::from_len(12), Some(VnetHdrSize::Mergeable));
        assert_eq!(VnetHdrSize::from_len(20), None);
    }

    #[test]
    fn gso_types_mask_the_ecn_bit() {
        assert_eq!(GsoType::from(0x81), GsoType::TcpV4);
        assert_eq!(GsoType::from(0x84), GsoType::TcpV6);
        assert_eq!(GsoType::from(3), GsoType::Udp);
        assert_eq!(GsoType::from(5), GsoType::UdpL4);
        assert_eq!(GsoType::from(0x86), GsoType::Unknown(6));
        let fields = VnetHdrFields {
            gso_type: 0x81,
            ..VnetHdrFields::NONE
        };
        assert!(fields.ecn());
    }

    #[test]
    fn emit_none_zeroes_only_the_header() {
        let mut buf = [0xffu8; 16];
        let mut hdr = VnetHdr::new_checked(&mut buf[..], VnetHdrSize::Mergeable).unwrap();
        hdr.emit_none();
        assert_eq!(hdr.fields(), VnetHdrFields::NONE);
        assert_eq!(hdr.num_buffers(), Some(0));
        assert_eq!(buf[12..], [0xff; 4]);
    }

    proptest! {
        #[test]
        fn emit_then_read_round_trips(
            flags: u8, gso_type: u8, hdr_len: u16, gso_size: u16, csum_start: u16, csum_offset: u16,
            mergeable: bool,
        ) {
            let size = if mergeable { VnetHdrSize::Mergeable } else { VnetHdrSize::Legacy };
            let fields = VnetHdrFields { flags, gso_type, hdr_len, gso_size, csum_start, csum_offset };
            let mut buf = [0x5au8; 14];
            let mut hdr = VnetHdr::new_checked(&mut buf[..], size).unwrap();
            hdr.emit(&fields);
            prop_assert_eq!(hdr.fields(), fields);
            prop_assert_eq!(hdr.frame_mut().len(), 14 - size.header_len());
            // Little-endian on the wire regardless of the host.
            prop_assert_eq!(&buf[2..4], &hdr_len.to_le_bytes());
            prop_assert_eq!(&buf[8..10], &csum_offset.to_le_bytes());
        }

        #[test]
        fn any_bytes_view_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..32)) {
            for size in [VnetHdrSize::Legacy, VnetHdrSize::Mergeable] {
                match VnetHdr::new_checked(&bytes[..], size) {
                    Ok(hdr) => {
                        let _ = (hdr.fields(), hdr.num_buffers(), hdr.fields().gso());
                        prop_assert_eq!(hdr.header_bytes().len() + hdr.frame().len(), bytes.len());
                    }
                    Err(e) => prop_assert!(e == WireError::Truncated && bytes.len() < size.header_len()),
                }
            }
        }
    }
}
