//! The Internet checksum (RFC 1071): a one's-complement sum of big-endian 16-bit words.
//!
//! [`Checksum`] is an unfolded running sum, so a checksum can be built from pieces (pseudo-header,
//! L4 header, payload) without copying them together. Invariant: every piece except the last must
//! have even length, because an odd trailing byte is summed as the high byte of a zero-padded word.
//! The internal accumulator is reduced after every piece, so any number of pieces can be added.
//! Byte order only matters at the end of each piece: the bulk loop sums native-endian 64-bit words.

/// A running one's-complement sum, not yet folded to 16 bits.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Checksum(u64);

impl Checksum {
    pub const fn new() -> Checksum {
        Checksum(0)
    }

    /// Adds `bytes` as big-endian 16-bit words (see the module note on odd lengths).
    #[inline]
    pub fn add_bytes(self, bytes: &[u8]) -> Checksum {
        Checksum(reduce(self.0 + sum_be_words(bytes)))
    }

    /// Adds one 16-bit word.
    #[inline]
    pub const fn add_u16(self, word: u16) -> Checksum {
        Checksum(reduce(self.0 + word as u64))
    }

    /// Adds a 32-bit value as its two 16-bit halves.
    #[inline]
    pub const fn add_u32(self, value: u32) -> Checksum {
        Checksum(reduce(
            self.0 + (value >> 16) as u64 + (value & 0xffff) as u64,
        ))
    }

    /// Adds another unfolded sum (one's-complement addition is associative).
    #[inline]
    pub const fn combine(self, other: Checksum) -> Checksum {
        Checksum(reduce(self.0 + other.0))
    }

    /// The 16-bit one's-complement sum. It is 0 only if every word added was 0, which is why a
    /// folded pseudo-header sum (the partial value virtio-net expects) is never 0.
    #[inline]
    pub const fn fold(self) -> u16 {
        let mut sum = self.0;
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        sum as u16
    }

    /// The value to store in a checksum field: the complement of the sum, except that 0 is sent as
    /// 0xffff (both mean zero in one's complement). Linux does the same for every protocol when it
    /// completes a partial checksum, and UDP needs it because 0 there means "no checksum".
    #[inline]
    pub const fn finish(self) -> u16 {
        match !self.fold() {
            0 => 0xffff,
            value => value,
        }
    }

    /// True if this is the sum over a range that includes a correct checksum field.
    #[inline]
    pub const fn is_valid(self) -> bool {
        self.fold() == 0xffff
    }
}

/// The checksum to store for `bytes` (e.g. an IPv4 header with its checksum field zeroed).
pub fn checksum(bytes: &[u8]) -> u16 {
    Checksum::new().add_bytes(bytes).finish()
}

/// The TCP/UDP pseudo-header sum: source and destination address (4 bytes each for IPv4, 16 for
/// IPv6), the protocol number and the L4 length (header and payload).
#[inline]
pub fn pseudo_header_sum(src: &[u8], dst: &[u8], protocol: u8, l4_len: u32) -> Checksum {
    Checksum::new()
        .add_bytes(src)
        .add_bytes(dst)
        .add_u16(u16::from(protocol))
        .add_u32(l4_len)
}

const fn reduce(sum: u64) -> u64 {
    (sum & 0xffff_ffff) + (sum >> 32)
}

/// Sums `bytes` as 16-bit big-endian words and returns the folded 16-bit sum.
///
/// The loop adds native-endian 64-bit words with end-around carry: a one's-complement sum does not
/// depend on byte order except for a final byte swap (RFC 1071 section 2), and wide words with
/// two independent carry chains run at several bytes per cycle without per-word byte swaps.
#[inline]
fn sum_be_words(bytes: &[u8]) -> u64 {
    let mut chunks = bytes.chunks_exact(16);
    let (mut a, mut b) = (0u64, 0u64);
    for chunk in &mut chunks {
        let (x, y) = chunk.split_at(8);
        let (sum, carry) = a.overflowing_add(u64::from_ne_bytes(x.try_into().unwrap()));
        a = sum + u64::from(carry);
        let (sum, carry) = b.overflowing_add(u64::from_ne_bytes(y.try_into().unwrap()));
        b = sum + u64::from(carry);
    }
    let mut rest = [0u8; 16];
    let tail = chunks.remainder();
    rest[..tail.len()].copy_from_slice(tail);
    let (x, y) = rest.split_at(8);
    let mut total = 0u128;
    for word in [
        a,
        b,
        u64::from_ne_bytes(x.try_into().unwrap()),
        u64::from_ne_bytes(y.try_into().unwrap()),
    ] {
        total += u128::from(word);
    }
    // Fold to 16 bits in native order, then swap into network order if the host is little-endian.
    let mut folded = (total & u128::from(u64::MAX)) + (total >> 64);
    while folded > 0xffff {
        folded = (folded & 0xffff) + (folded >> 16);
    }
    u64::from(u16::from_be(folded as u16))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The textbook definition, word by word, as the reference for the fast path.
    fn reference(bytes: &[u8]) -> u16 {
        let mut sum: u32 = 0;
        for pair in bytes.chunks(2) {
            let word = u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]);
            sum += u32::from(word);
            sum = (sum & 0xffff) + (sum >> 16);
        }
        sum as u16
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 section 3: the sum of 00 01 f2 03 f4 f5 f6 f7 is ddf2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(Checksum::new().add_bytes(&data).fold(), 0xddf2);
        assert_eq!(checksum(&data), !0xddf2);
    }

    #[test]
    fn ipv4_header_checksum_of_a_known_header() {
        // 192.168.0.1 -> 192.168.0.199, TTL 64, UDP, with its well-known checksum b861.
        let mut header = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(checksum(&header), 0xb861);
        header[10..12].copy_from_slice(&0xb861u16.to_be_bytes());
        assert!(Checksum::new().add_bytes(&header).is_valid());
    }

    #[test]
    fn zero_is_sent_as_all_ones() {
        // Words summing to 0xffff complement to 0.
        assert_eq!(checksum(&[0xff, 0x00, 0x00, 0xff]), 0xffff);
        assert_eq!(Checksum::new().fold(), 0);
    }

    proptest! {
        #[test]
        fn matches_the_reference(bytes in proptest::collection::vec(any::<u8>(), 0..2000)) {
            prop_assert_eq!(Checksum::new().add_bytes(&bytes).fold(), reference(&bytes));
        }

        #[test]
        fn pieces_of_even_length_add_up(
            bytes in proptest::collection::vec(any::<u8>(), 0..600),
            cut in any::<prop::sample::Index>(),
        ) {
            let at = cut.index(bytes.len() + 1) & !1;
            let whole = Checksum::new().add_bytes(&bytes).fold();
            let pieces = Checksum::new().add_bytes(&bytes[..at]).add_bytes(&bytes[at..]).fold();
            prop_assert_eq!(whole, pieces);
            let combined = Checksum::new()
                .add_bytes(&bytes[..at])
                .combine(Checksum::new().add_bytes(&bytes[at..]))
                .fold();
            prop_assert_eq!(whole, combined);
        }

        #[test]
        fn a_stored_checksum_verifies(mut bytes in proptest::collection::vec(any::<u8>(), 2..300)) {
            bytes[0] = 0;
            bytes[1] = 0;
            let value = checksum(&bytes);
            bytes[..2].copy_from_slice(&value.to_be_bytes());
            prop_assert!(Checksum::new().add_bytes(&bytes).is_valid());
        }
    }
}
