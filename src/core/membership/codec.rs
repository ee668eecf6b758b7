//! foca's view of a member and how foca's messages are written on the wire.
//!
//! Owns [`MemberId`] (foca's identity: a static key plus a generation), [`WireCodec`] (foca's
//! header and member-update encoding, in meshd's own fixed little-endian layout) and
//! [`FocaRng`] (the seeded [`CoreRng`] behind rand 0.10's traits, which foca draws from).
//! Invariants: decoding reads only what it has checked is there, so no input panics it; an
//! encoding that does not fit the buffer writes nothing; every value foca can produce encodes,
//! and every encoding decodes back to the same value.

use core::convert::Infallible;
use core::fmt;

use bytes::{Buf, BufMut};
use foca::{Header, Identity, Member, Message, State};
use meshd_crypto::{CoreRng, PublicKey};
use rand_core::RngCore as _;

/// Encoded length of a [`MemberId`]: the 32-byte static key, then the generation (u32 LE).
pub const MEMBER_ID_LEN: usize = 32 + 4;
/// Encoded length of one member update: identity, incarnation (u16 LE), state (u8).
pub const MEMBER_UPDATE_LEN: usize = MEMBER_ID_LEN + 2 + 1;

/// How foca names a member: its static key (the *address*: one live identity per key) and a
/// generation that grows across restarts and rejoins. A newer generation of the same key
/// replaces the older one everywhere, which is how a restarted node takes its own place back.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MemberId {
    /// The node's X25519 static key.
    pub key: PublicKey,
    /// Seeded from Unix seconds when the node starts; bumped by one on every rejoin.
    pub generation: u32,
}

impl fmt::Debug for MemberId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}#{}", self.key, self.generation)
    }
}

impl Identity for MemberId {
    type Addr = PublicKey;

    fn renew(&self) -> Option<Self> {
        self.generation.checked_add(1).map(|generation| MemberId {
            key: self.key,
            generation,
        })
    }

    fn addr(&self) -> PublicKey {
        self.key
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        self.generation > adversary.generation
    }
}

/// Why bytes did not decode as a foca header or member update.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// Fewer bytes than the item needs (or, when encoding, than the item takes).
    #[error("truncated foca item")]
    Truncated,
    /// A message tag this codec does not know.
    #[error("unknown foca message tag {0}")]
    UnknownMessage(u8),
    /// A member state other than alive (0), suspect (1) or down (2).
    #[error("unknown member state {0}")]
    UnknownState(u8),
}

// Message tags (byte after the two identities and the incarnation of a header).
const PING: u8 = 1;
const ACK: u8 = 2;
const PING_REQ: u8 = 3;
const INDIRECT_PING: u8 = 4;
const INDIRECT_ACK: u8 = 5;
const FORWARDED_ACK: u8 = 6;
const ANNOUNCE: u8 = 7;
const FEED: u8 = 8;
const GOSSIP: u8 = 9;
const BROADCAST: u8 = 10;
const TURN_UNDEAD: u8 = 11;

/// Encoded length of a header carrying `message`.
pub fn header_len(message: &Message<MemberId>) -> usize {
    let body = match message {
        Message::Ping(_) | Message::Ack(_) => 1,
        Message::PingReq { .. }
        | Message::IndirectPing { .. }
        | Message::IndirectAck { .. }
        | Message::ForwardedAck { .. } => MEMBER_ID_LEN + 1,
        Message::Announce
        | Message::Feed
        | Message::Gossip
        | Message::Broadcast
        | Message::TurnUndead => 0,
    };
    2 * MEMBER_ID_LEN + 2 + 1 + body
}

/// The member updates a foca packet carries after its header: foca's own count (u16 BE), that
/// many updates of [`MEMBER_UPDATE_LEN`] bytes, then whatever the message has after them. The
/// membership layer reads the updates' keys, and may drop updates, before foca sees the packet.
pub struct MemberUpdates<'a> {
    /// The header, as it arrived.
    head: &'a [u8],
    updates: &'a [u8],
    /// Everything after the updates.
    tail: &'a [u8],
}

impl<'a> MemberUpdates<'a> {
    /// Splits `packet`, whose header decoded to `message`. `None` for messages without an update
    /// list (announce, turn-undead, broadcast) and for a list cut short (foca refuses it).
    pub fn split(packet: &'a [u8], message: &Message<MemberId>) -> Option<MemberUpdates<'a>> {
        if matches!(
            message,
            Message::Announce | Message::TurnUndead | Message::Broadcast
        ) {
            return None;
        }
        let (head, rest) = packet.split_at_checked(header_len(message))?;
        let (count, rest) = rest.split_first_chunk::<2>()?;
        let (updates, tail) =
            rest.split_at_checked(usize::from(u16::from_be_bytes(*count)) * MEMBER_UPDATE_LEN)?;
        Some(MemberUpdates {
            head,
            updates,
            tail,
        })
    }

    /// How many updates the packet carries.
    pub fn count(&self) -> usize {
        self.updates.len() / MEMBER_UPDATE_LEN
    }

    /// Each update's encoding with the identity (key and generation) it is about.
    pub fn iter(&self) -> impl Iterator<Item = (MemberId, &'a [u8])> + 'a {
        // `chunks_exact` hands out MEMBER_UPDATE_LEN bytes, more than the identity in front.
        self.updates.chunks_exact(MEMBER_UPDATE_LEN).map(|update| {
            let mut key = [0u8; 32];
            key.copy_from_slice(&update[..32]);
            let generation = u32::from_le_bytes([update[32], update[33], update[34], update[35]]);
            let id = MemberId {
                key: PublicKey::from_bytes(key),
                generation,
            };
            (id, update)
        })
    }

    /// The packet again with only the updates in `keep` (taken from [`MemberUpdates::iter`]).
    pub fn rebuild(&self, keep: &[&[u8]]) -> Vec<u8> {
        let mut out =
            Vec::with_capacity(self.head.len() + 2 + self.updates.len() + self.tail.len());
        out.extend_from_slice(self.head);
        // `keep` is a subset of the updates, whose count fitted a u16.
        out.extend_from_slice(&(keep.len() as u16).to_be_bytes());
        for update in keep {
            out.extend_from_slice(update);
        }
        out.extend_from_slice(self.tail);
        out
    }
}

fn put_id(buf: &mut impl BufMut, id: &MemberId) {
    buf.put_slice(id.key.as_bytes());
    buf.put_u32_le(id.generation);
}

fn get_id(buf: &mut impl Buf) -> Result<MemberId, CodecError> {
    if buf.remaining() < MEMBER_ID_LEN {
        return Err(CodecError::Truncated);
    }
    let mut key = [0u8; 32];
    buf.copy_to_slice(&mut key);
    Ok(MemberId {
        key: PublicKey::from_bytes(key),
        generation: buf.get_u32_le(),
    })
}

fn get_u8(buf: &mut impl Buf) -> Result<u8, CodecError> {
    if buf.remaining() < 1 {
        return Err(CodecError::Truncated);
    }
    Ok(buf.get_u8())
}

fn get_u16(buf: &mut impl Buf) -> Result<u16, CodecError> {
    if buf.remaining() < 2 {
        return Err(CodecError::Truncated);
    }
    Ok(buf.get_u16_le())
}

/// foca's [`foca::Codec`] in meshd's layout (see docs/wire-format.md, *Membership*).
#[derive(Debug, Default, Clone, Copy)]
pub struct WireCodec;

impl WireCodec {
    /// Decodes a header from the front of `bytes` without consuming anything: the membership
    /// layer reads the sender before foca sees the packet.
    pub fn peek_header(bytes: &[u8]) -> Result<Header<MemberId>, CodecError> {
        let mut cursor = bytes;
        decode_header(&mut cursor)
    }
}

fn decode_header(buf: &mut impl Buf) -> Result<Header<MemberId>, CodecError> {
    let src = get_id(buf)?;
    let src_incarnation = get_u16(buf)?;
    let dst = get_id(buf)?;
    let tag = get_u8(buf)?;
    let message = match tag {
        PING => Message::Ping(get_u8(buf)?),
        ACK => Message::Ack(get_u8(buf)?),
        PING_REQ => Message::PingReq {
            target: get_id(buf)?,
            probe_number: get_u8(buf)?,
        },
        INDIRECT_PING => Message::IndirectPing {
            origin: get_id(buf)?,
            probe_number: get_u8(buf)?,
        },
        INDIRECT_ACK => Message::IndirectAck {
            target: get_id(buf)?,
            probe_number: get_u8(buf)?,
        },
        FORWARDED_ACK => Message::ForwardedAck {
            origin: get_id(buf)?,
            probe_number: get_u8(buf)?,
        },
        ANNOUNCE => Message::Announce,
        FEED => Message::Feed,
        GOSSIP => Message::Gossip,
        BROADCAST => Message::Broadcast,
        TURN_UNDEAD => Message::TurnUndead,
        other => return Err(CodecError::UnknownMessage(other)),
    };
    Ok(Header {
        src,
        src_incarnation,
        dst,
        message,
    })
}

impl foca::Codec<MemberId> for WireCodec {
    type Error = CodecError;

    fn encode_header(
        &mut self,
        header: &Header<MemberId>,
        mut buf: impl BufMut,
    ) -> Result<(), CodecError> {
        if buf.remaining_mut() < header_len(&header.message) {
            return Err(CodecError::Truncated);
        }
        put_id(&mut buf, &header.src);
        buf.put_u16_le(header.src_incarnation);
        put_id(&mut buf, &header.dst);
        let (tag, extra) = match &header.message {
            Message::Ping(n) => (PING, (None, Some(*n))),
            Message::Ack(n) => (ACK, (None, Some(*n))),
            Message::PingReq {
                target,
                probe_number,
            } => (PING_REQ, (Some(target), Some(*probe_number))),
            Message::IndirectPing {
                origin,
                probe_number,
            } => (INDIRECT_PING, (Some(origin), Some(*probe_number))),
            Message::IndirectAck {
                target,
                probe_number,
            } => (INDIRECT_ACK, (Some(target), Some(*probe_number))),
            Message::ForwardedAck {
                origin,
                probe_number,
            } => (FORWARDED_ACK, (Some(origin), Some(*probe_number))),
            Message::Announce => (ANNOUNCE, (None, None)),
            Message::Feed => (FEED, (None, None)),
            Message::Gossip => (GOSSIP, (None, None)),
            Message::Broadcast => (BROADCAST, (None, None)),
            Message::TurnUndead => (TURN_UNDEAD, (None, None)),
        };
        buf.put_u8(tag);
        if let Some(id) = extra.0 {
            put_id(&mut buf, id);
        }
        if let Some(n) = extra.1 {
            buf.put_u8(n);
        }
        Ok(())
    }

    fn decode_header(&mut self, mut buf: impl Buf) -> Result<Header<MemberId>, CodecError> {
        decode_header(&mut buf)
    }

    fn encode_member(
        &mut self,
        member: &Member<MemberId>,
        mut buf: impl BufMut,
    ) -> Result<(), CodecError> {
        if buf.remaining_mut() < MEMBER_UPDATE_LEN {
            return Err(CodecError::Truncated);
        }
        put_id(&mut buf, member.id());
        buf.put_u16_le(member.incarnation());
        buf.put_u8(match member.state() {
            State::Alive => 0,
            State::Suspect => 1,
            State::Down => 2,
        });
        Ok(())
    }

    fn decode_member(&mut self, mut buf: impl Buf) -> Result<Member<MemberId>, CodecError> {
        let id = get_id(&mut buf)?;
        let incarnation = get_u16(&mut buf)?;
        let state = match get_u8(&mut buf)? {
            0 => State::Alive,
            1 => State::Suspect,
            2 => State::Down,
            other => return Err(CodecError::UnknownState(other)),
        };
        Ok(Member::new(id, incarnation, state))
    }
}

/// The membership layer's [`CoreRng`] behind rand 0.10's infallible generator traits, which
/// is what foca 2 asks for. Same stream, same determinism for a given seed.
pub struct FocaRng(pub CoreRng);

impl rand_core_010::TryRng for FocaRng {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        Ok(self.0.next_u32())
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        Ok(self.0.next_u64())
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        self.0.fill_bytes(dst);
        Ok(())
    }
}

impl rand_core_010::TryCryptoRng for FocaRng {}

impl fmt::Debug for FocaRng {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FocaRng(..)")
    }
}
