//! Payloads of the path messages, as they stand after the outer data message was decrypted: the
//! relay envelope (payload kinds Relay and Relayed) and path probes (Probe and ProbeAck).
//!
//! A relay envelope is a member's static key followed by one whole inner meshd datagram, which the
//! two end members encrypted for each other, so a relay learns who talks to whom but never what.
//! A probe is an id padded to the datagram size under test; its acknowledgement echoes the id and
//! says which address the probe arrived from (the prober's address as the other side sees it,
//! which is how a member behind NAT learns its public endpoint).
//!
//! Invariant of every view here: once `new_checked` (or `parse`) returned `Ok`, every accessor reads
//! inside the buffer. Nothing here allocates.

use std::net::SocketAddr;

use super::token::{endpoint_len, Reader};
use super::{WireError, DATA_OVERHEAD, HEADER_LEN};

/// Length of the member key in front of the inner datagram.
pub const RELAY_ENVELOPE_LEN: usize = 32;
/// What relaying adds to an inner datagram on the wire: the envelope's key, plus the outer data
/// message's header and tag.
pub const RELAY_OVERHEAD: usize = RELAY_ENVELOPE_LEN + DATA_OVERHEAD;
/// Shortest probe payload: the id.
pub const PROBE_MIN_LEN: usize = 4;
/// Longest acknowledgement payload: id, size and an IPv6 socket address.
pub const PROBE_ACK_MAX_LEN: usize = 4 + 2 + 1 + 16 + 2;
/// Family byte of an acknowledgement that carries no address (the probe came through a relay).
const NO_ADDRESS: u8 = 0;

/// A relay envelope: `[key (32)][inner datagram]`.
#[derive(Debug)]
pub struct RelayEnvelope<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> RelayEnvelope<T> {
    /// Wraps `buffer` if it holds a key and at least an inner datagram header.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        if buffer.as_ref().len() < RELAY_ENVELOPE_LEN + HEADER_LEN {
            return Err(WireError::Truncated);
        }
        Ok(RelayEnvelope { buffer })
    }

    /// The member the inner datagram goes to (kind Relay) or came from (kind Relayed).
    pub fn key(&self) -> [u8; 32] {
        let mut key = [0u8; 32];
        key.copy_from_slice(&self.buffer.as_ref()[..RELAY_ENVELOPE_LEN]);
        key
    }

    pub fn inner(&self) -> &[u8] {
        &self.buffer.as_ref()[RELAY_ENVELOPE_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> RelayEnvelope<T> {
    pub fn set_key(&mut self, key: &[u8; 32]) {
        self.buffer.as_mut()[..RELAY_ENVELOPE_LEN].copy_from_slice(key);
    }

    pub fn inner_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[RELAY_ENVELOPE_LEN..]
    }
}

/// A probe payload: `[id (u32 LE)][padding]`.
pub struct Probe;

impl Probe {
    /// The probe's id; `Truncated` if the payload is shorter than an id.
    pub fn id(payload: &[u8]) -> Result<u32, WireError> {
        let raw = payload.get(..PROBE_MIN_LEN).ok_or(WireError::Truncated)?;
        Ok(u32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]))
    }

    /// Writes a probe with `id` filling all of `payload` (zero padding), which must hold an id.
    pub fn emit(payload: &mut [u8], id: u32) {
        payload[..PROBE_MIN_LEN].copy_from_slice(&id.to_le_bytes());
        payload[PROBE_MIN_LEN..].fill(0);
    }
}

/// An acknowledgement: `[id (u32 LE)][size (u16 LE)][address]`, where the address is a socket
/// address as in the join messages (family 4 or 6, address, port LE) or the single byte 0 when the
/// probe came through a relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeAck {
    pub id: u32,
    /// The length of the probe datagram as it arrived.
    pub size: u16,
    /// Where the probe came from, as the acknowledging member saw it.
    pub observed: Option<SocketAddr>,
}

impl ProbeAck {
    pub fn parse(payload: &[u8]) -> Result<ProbeAck, WireError> {
        let mut reader = Reader::new(payload);
        let id = u32::from_le_bytes(reader.array().ok_or(WireError::Truncated)?);
        let size = reader.u16().ok_or(WireError::Truncated)?;
        let observed = if payload.get(6) == Some(&NO_ADDRESS) {
            reader.u8();
            None
        } else {
            Some(reader.endpoint().ok_or(WireError::BadLength)?)
        };
        if !reader.is_empty() {
            return Err(WireError::BadLength);
        }
        Ok(ProbeAck { id, size, observed })
    }

    /// Encoded length.
    pub fn len(&self) -> usize {
        6 + self.observed.as_ref().map_or(1, endpoint_len)
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    /// Writes the acknowledgement into `out` (at least [`PROBE_ACK_MAX_LEN`] bytes) and returns its
    /// length.
    pub fn emit(&self, out: &mut [u8]) -> usize {
        out[..4].copy_from_slice(&self.id.to_le_bytes());
        out[4..6].copy_from_slice(&self.size.to_le_bytes());
        let len = match self.observed {
            None => {
                out[6] = NO_ADDRESS;
                7
            }
            Some(SocketAddr::V4(a)) => {
                out[6] = 4;
                out[7..11].copy_from_slice(&a.ip().octets());
                out[11..13].copy_from_slice(&a.port().to_le_bytes());
                13
            }
            Some(SocketAddr::V6(a)) => {
                out[6] = 6;
                out[7..23].copy_from_slice(&a.ip().octets());
                out[23..25].copy_from_slice(&a.port().to_le_bytes());
                25
            }
        };
        debug_assert_eq!(len, self.len());
        len
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn envelope_needs_a_key_and_a_header() {
        assert_eq!(
            RelayEnvelope::new_checked(&[0u8; 35][..]).unwrap_err(),
            WireError::Truncated
        );
        let mut buf = [0u8; 40];
        let mut env = RelayEnvelope::new_checked(&mut buf[..]).unwrap();
        env.set_key(&[7; 32]);
        env.inner_mut().fill(9);
        let env = RelayEnvelope::new_checked(&buf[..]).unwrap();
        assert_eq!(env.key(), [7; 32]);
        assert_eq!(env.inner(), &[9; 8]);
    }

    #[test]
    fn probe_round_trip() {
        let mut payload = [0xffu8; 20];
        Probe::emit(&mut payload, 0xdead_beef);
        assert_eq!(Probe::id(&payload), Ok(0xdead_beef));
        assert!(payload[4..].iter().all(|&b| b == 0));
        assert_eq!(Probe::id(&payload[..3]), Err(WireError::Truncated));
    }

    #[test]
    fn ack_round_trips_for_every_address_kind() {
        for observed in [
            None,
            Some("198.51.100.7:6655".parse().unwrap()),
            Some("[2001:db8::1]:443".parse().unwrap()),
        ] {
            let ack = ProbeAck {
                id: 42,
                size: 1472,
                observed,
            };
            let mut out = [0u8; PROBE_ACK_MAX_LEN];
            let len = ack.emit(&mut out);
            assert_eq!(len, ack.len());
            assert_eq!(ProbeAck::parse(&out[..len]), Ok(ack));
            assert!(ProbeAck::parse(&out[..len - 1]).is_err());
        }
    }

    proptest! {
        #[test]
        fn arbitrary_payloads_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = ProbeAck::parse(&bytes);
            let _ = Probe::id(&bytes);
            if let Ok(env) = RelayEnvelope::new_checked(&bytes[..]) {
                prop_assert_eq!(env.inner().len(), bytes.len() - RELAY_ENVELOPE_LEN);
            }
        }
    }
}
