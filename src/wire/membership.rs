//! Membership payloads, as they stand after the outer data message (payload kind Membership) was
//! decrypted: a subtype byte, then the subtype's body.
//!
//! [`MembershipPayload`] checks the envelope (not empty, at most [`MAX_PAYLOAD`] bytes) and names
//! the subtype; the body views ([`SyncRequest`], [`RecordsPage`], [`Want`], [`Digest`], [`Index`],
//! [`RenewRequest`], [`RenewResponse`], [`FocaPacket`]) each check the length their accessors rely
//! on in `new_checked`, after which every accessor is infallible and never panics. The `emit_*`
//! functions and [`PageWriter`] build the outbound payloads, subtype byte included, and never
//! exceed [`MAX_PAYLOAD`]. What a body means (is the certificate valid, is the key known) is the
//! core's business; this module owns the byte layout only. Integers are little-endian.
//! Layouts: docs/wire-format.md, *Membership*.

use meshd_crypto::PublicKey;

use super::WireError;

/// Largest membership payload sent or accepted, subtype byte included. Chosen so that payload,
/// data header and tag fit one datagram on a 1280-byte IPv6 path.
pub const MAX_PAYLOAD: usize = 1200;
/// foca's `max_packet_size`: a foca packet plus its subtype byte is one payload.
pub const FOCA_MAX_PACKET: usize = MAX_PAYLOAD - 1;

/// Subtype byte 0 of every membership payload: a foca packet follows.
pub const SUBTYPE_FOCA: u8 = 1;
/// Ask an admin for a fresh certificate (no body).
pub const SUBTYPE_RENEW_REQUEST: u8 = 2;
/// An admin's answer: one encoded certificate.
pub const SUBTYPE_RENEW_RESPONSE: u8 = 3;
/// Ask for a page run of the member table: flags, cursor key, page count.
pub const SUBTYPE_SYNC_REQUEST: u8 = 4;
/// A page of items: flags, cursor key, length-prefixed items.
pub const SUBTYPE_RECORDS: u8 = 5;
/// Ask for the items of up to [`WANT_MAX_KEYS`] keys.
pub const SUBTYPE_WANT: u8 = 6;
/// A table digest: [`DIGEST_BUCKETS`] sums, u64 LE.
pub const SUBTYPE_DIGEST: u8 = 7;
/// Index entries (key, version u64 LE) of the buckets whose digests differed.
pub const SUBTYPE_INDEX: u8 = 8;

/// Buckets of a table digest (by the top 7 bits of the key's first byte).
pub const DIGEST_BUCKETS: usize = 128;
/// Subtype and the bucket sums.
pub const DIGEST_LEN: usize = 1 + DIGEST_BUCKETS * 8;
/// One index entry: key, version (`u64::MAX` for a revocation).
pub const INDEX_ENTRY_LEN: usize = KEY_LEN + 8;
/// Index entries per page.
pub const INDEX_MAX_ENTRIES: usize = (MAX_PAYLOAD - 1) / INDEX_ENTRY_LEN;

/// Page flag: the page continues a run that starts at the beginning of the table.
pub const PAGE_FROM_START: u8 = 0x01;
/// Page flag: nothing follows this page in the table.
pub const PAGE_END: u8 = 0x02;
/// Page flag: the last page sent for one sync request.
pub const PAGE_LAST_IN_BURST: u8 = 0x04;
/// Page flag: not part of a sync run (an answer to a want, or a pushed record).
pub const PAGE_UNSOLICITED: u8 = 0x08;
/// Subtype, flags, cursor.
pub const PAGE_HEADER_LEN: usize = 1 + 1 + KEY_LEN;
/// Subtype, flags, cursor, page count.
pub const SYNC_REQUEST_LEN: usize = 1 + 1 + KEY_LEN + 1;
/// Keys per want message.
pub const WANT_MAX_KEYS: usize = 32;

const KEY_LEN: usize = 32;
/// Length prefix of an item in a records page.
const ITEM_LEN_PREFIX: usize = 2;

const _: () = assert!(DIGEST_LEN <= MAX_PAYLOAD && WANT_MAX_KEYS * KEY_LEN < MAX_PAYLOAD);
const _: () = assert!(INDEX_MAX_ENTRIES == 29);

/// The key stored at `at`; callers checked that 32 bytes are there.
fn key_at(bytes: &[u8], at: usize) -> PublicKey {
    let mut raw = [0u8; KEY_LEN];
    raw.copy_from_slice(&bytes[at..at + KEY_LEN]);
    PublicKey::from_bytes(raw)
}

/// The u64 LE stored at `at`; callers checked that 8 bytes are there.
fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut raw = [0u8; 8];
    raw.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(raw)
}

/// The cursor field of pages and sync requests: a key, or zeros for "from the start".
fn cursor_bytes(cursor: Option<&PublicKey>) -> &[u8; KEY_LEN] {
    cursor.map_or(&[0u8; KEY_LEN], |key| key.as_bytes())
}

/// Byte 0 of a membership payload.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Subtype {
    Foca,
    RenewRequest,
    RenewResponse,
    SyncRequest,
    Records,
    Want,
    Digest,
    Index,
    /// Any other value; receivers count and drop it.
    Unknown(u8),
}

impl From<u8> for Subtype {
    fn from(value: u8) -> Self {
        match value {
            SUBTYPE_FOCA => Subtype::Foca,
            SUBTYPE_RENEW_REQUEST => Subtype::RenewRequest,
            SUBTYPE_RENEW_RESPONSE => Subtype::RenewResponse,
            SUBTYPE_SYNC_REQUEST => Subtype::SyncRequest,
            SUBTYPE_RECORDS => Subtype::Records,
            SUBTYPE_WANT => Subtype::Want,
            SUBTYPE_DIGEST => Subtype::Digest,
            SUBTYPE_INDEX => Subtype::Index,
            other => Subtype::Unknown(other),
        }
    }
}

/// A whole membership payload: `[subtype][body]`, 1 to [`MAX_PAYLOAD`] bytes.
#[derive(Debug, Clone, Copy)]
pub struct MembershipPayload<'a> {
    bytes: &'a [u8],
}

impl<'a> MembershipPayload<'a> {
    /// `Truncated` if empty, `BadLength` if longer than [`MAX_PAYLOAD`].
    pub fn new_checked(bytes: &'a [u8]) -> Result<Self, WireError> {
        if bytes.is_empty() {
            return Err(WireError::Truncated);
        }
        if bytes.len() > MAX_PAYLOAD {
            return Err(WireError::BadLength);
        }
        Ok(MembershipPayload { bytes })
    }

    pub fn subtype(&self) -> Subtype {
        Subtype::from(self.bytes[0])
    }

    /// Everything after the subtype byte: what the subtype's body view is built over.
    pub fn body(&self) -> &'a [u8] {
        &self.bytes[1..]
    }
}

/// The body of a foca payload: one packet in foca's codec (`core::membership::codec`).
#[derive(Debug, Clone, Copy)]
pub struct FocaPacket<'a> {
    packet: &'a [u8],
}

impl<'a> FocaPacket<'a> {
    /// `Truncated` if empty, `BadLength` if longer than [`FOCA_MAX_PACKET`].
    pub fn new_checked(body: &'a [u8]) -> Result<Self, WireError> {
        if body.is_empty() {
            return Err(WireError::Truncated);
        }
        if body.len() > FOCA_MAX_PACKET {
            return Err(WireError::BadLength);
        }
        Ok(FocaPacket { packet: body })
    }

    pub fn packet(&self) -> &'a [u8] {
        self.packet
    }
}

/// A foca payload: the subtype byte in front of foca's packet.
pub fn emit_foca(packet: &[u8]) -> Vec<u8> {
    let mut payload = Vec::with_capacity(1 + packet.len());
    payload.push(SUBTYPE_FOCA);
    payload.extend_from_slice(packet);
    payload
}

/// The body of a sync request: `[flags][cursor (32)][pages]`.
#[derive(Debug, Clone, Copy)]
pub struct SyncRequest<'a> {
    body: &'a [u8],
}

impl<'a> SyncRequest<'a> {
    /// `Truncated` if shorter, `BadLength` if longer than [`SYNC_REQUEST_LEN`] minus the subtype.
    pub fn new_checked(body: &'a [u8]) -> Result<Self, WireError> {
        match body.len().cmp(&(SYNC_REQUEST_LEN - 1)) {
            std::cmp::Ordering::Less => Err(WireError::Truncated),
            std::cmp::Ordering::Greater => Err(WireError::BadLength),
            std::cmp::Ordering::Equal => Ok(SyncRequest { body }),
        }
    }

    /// [`PAGE_FROM_START`] is set: the run starts at the beginning of the table.
    pub fn from_start(&self) -> bool {
        self.body[0] & PAGE_FROM_START != 0
    }

    /// The key the run continues after; `None` for a run from the start.
    pub fn after(&self) -> Option<PublicKey> {
        (!self.from_start()).then(|| key_at(self.body, 1))
    }

    /// Pages asked for, as sent (the server clamps it).
    pub fn pages(&self) -> u8 {
        self.body[1 + KEY_LEN]
    }
}

/// A sync request for `pages` pages after `cursor` (from the start for `None`).
pub fn emit_sync_request(cursor: Option<&PublicKey>, pages: u8) -> Vec<u8> {
    let mut request = Vec::with_capacity(SYNC_REQUEST_LEN);
    request.push(SUBTYPE_SYNC_REQUEST);
    request.push(if cursor.is_none() { PAGE_FROM_START } else { 0 });
    request.extend_from_slice(cursor_bytes(cursor));
    request.push(pages);
    request
}

/// The body of a records page: `[flags][cursor (32)]` then items, each `[len u16][item]` with a
/// non-zero length.
///
/// `new_checked` needs only the page header. The item list is walked once there: [`items`]
/// yields the well-framed items in front, and [`is_intact`] says whether the list ended cleanly
/// (a receiver keeps the items before a framing error, and counts the page as malformed).
///
/// [`items`]: RecordsPage::items
/// [`is_intact`]: RecordsPage::is_intact
#[derive(Debug, Clone, Copy)]
pub struct RecordsPage<'a> {
    body: &'a [u8],
    /// End of the last well-framed item.
    items_end: usize,
}

impl<'a> RecordsPage<'a> {
    pub fn new_checked(body: &'a [u8]) -> Result<Self, WireError> {
        let start = PAGE_HEADER_LEN - 1;
        if body.len() < start {
            return Err(WireError::Truncated);
        }
        let mut items_end = start;
        while let Some(len) = body
            .get(items_end..items_end + ITEM_LEN_PREFIX)
            .map(|raw| usize::from(u16::from_le_bytes([raw[0], raw[1]])))
        {
            let end = items_end + ITEM_LEN_PREFIX + len;
            if len == 0 || end > body.len() {
                break;
            }
            items_end = end;
        }
        Ok(RecordsPage { body, items_end })
    }

    pub fn flags(&self) -> u8 {
        self.body[0]
    }

    /// The key the page continues after; `None` if it is flagged [`PAGE_FROM_START`].
    pub fn after(&self) -> Option<PublicKey> {
        (self.flags() & PAGE_FROM_START == 0).then(|| key_at(self.body, 1))
    }

    /// Whether the item list ended exactly at the end of the page (no broken length or item).
    pub fn is_intact(&self) -> bool {
        self.items_end == self.body.len()
    }

    /// The well-framed items, in page order.
    pub fn items(&self) -> impl Iterator<Item = &'a [u8]> {
        let mut rest = &self.body[PAGE_HEADER_LEN - 1..self.items_end];
        std::iter::from_fn(move || {
            let (prefix, after) = rest.split_first_chunk::<ITEM_LEN_PREFIX>()?;
            let (item, next) = after.split_at(usize::from(u16::from_le_bytes(*prefix)));
            rest = next;
            Some(item)
        })
    }
}

/// Builds one records page of at most [`MAX_PAYLOAD`] bytes.
pub struct PageWriter {
    page: Vec<u8>,
}

impl PageWriter {
    /// Whether an item of `len` bytes fits even an empty page.
    pub const fn fits_a_page(len: usize) -> bool {
        PAGE_HEADER_LEN + ITEM_LEN_PREFIX + len <= MAX_PAYLOAD
    }

    /// A page with `flags` continuing after `cursor` (zeros for `None`).
    pub fn new(flags: u8, cursor: Option<&PublicKey>) -> PageWriter {
        let mut page = Vec::with_capacity(MAX_PAYLOAD);
        page.push(SUBTYPE_RECORDS);
        page.push(flags);
        page.extend_from_slice(cursor_bytes(cursor));
        PageWriter { page }
    }

    /// Appends `item` if it fits; `false` (and nothing appended) if it does not.
    pub fn push(&mut self, item: &[u8]) -> bool {
        if self.page.len() + ITEM_LEN_PREFIX + item.len() > MAX_PAYLOAD {
            return false;
        }
        // Bounded by MAX_PAYLOAD just above, so the length fits the u16 prefix.
        self.page
            .extend_from_slice(&(item.len() as u16).to_le_bytes());
        self.page.extend_from_slice(item);
        true
    }

    /// Sets `flags` in the page's flag byte.
    pub fn add_flags(&mut self, flags: u8) {
        self.page[1] |= flags;
    }

    pub fn finish(self) -> Vec<u8> {
        self.page
    }
}

/// The body of a want: 1 to [`WANT_MAX_KEYS`] keys.
#[derive(Debug, Clone, Copy)]
pub struct Want<'a> {
    body: &'a [u8],
}

impl<'a> Want<'a> {
    pub fn new_checked(body: &'a [u8]) -> Result<Self, WireError> {
        if body.is_empty() {
            return Err(WireError::Truncated);
        }
        if body.len() % KEY_LEN != 0 || body.len() / KEY_LEN > WANT_MAX_KEYS {
            return Err(WireError::BadLength);
        }
        Ok(Want { body })
    }

    pub fn keys(&self) -> impl Iterator<Item = PublicKey> + 'a {
        self.body.chunks_exact(KEY_LEN).map(|raw| key_at(raw, 0))
    }
}

/// A want for `keys` (at most [`WANT_MAX_KEYS`]; the caller chunks).
pub fn emit_want(keys: &[PublicKey]) -> Vec<u8> {
    debug_assert!(keys.len() <= WANT_MAX_KEYS);
    let mut payload = Vec::with_capacity(1 + KEY_LEN * keys.len());
    payload.push(SUBTYPE_WANT);
    for key in keys {
        payload.extend_from_slice(key.as_bytes());
    }
    payload
}

/// The body of a digest: exactly [`DIGEST_BUCKETS`] sums.
#[derive(Debug, Clone, Copy)]
pub struct Digest<'a> {
    body: &'a [u8],
}

impl<'a> Digest<'a> {
    pub fn new_checked(body: &'a [u8]) -> Result<Self, WireError> {
        match body.len().cmp(&(DIGEST_LEN - 1)) {
            std::cmp::Ordering::Less => Err(WireError::Truncated),
            std::cmp::Ordering::Greater => Err(WireError::BadLength),
            std::cmp::Ordering::Equal => Ok(Digest { body }),
        }
    }

    /// The bucket sums, bucket 0 first.
    pub fn sums(&self) -> impl Iterator<Item = u64> + 'a {
        self.body.chunks_exact(8).map(|raw| u64_at(raw, 0))
    }
}

pub fn emit_digest(sums: &[u64; DIGEST_BUCKETS]) -> Vec<u8> {
    let mut payload = Vec::with_capacity(DIGEST_LEN);
    payload.push(SUBTYPE_DIGEST);
    for sum in sums {
        payload.extend_from_slice(&sum.to_le_bytes());
    }
    payload
}

/// The body of an index page: one or more entries `[key (32)][version u64]`.
#[derive(Debug, Clone, Copy)]
pub struct Index<'a> {
    body: &'a [u8],
}

impl<'a> Index<'a> {
    pub fn new_checked(body: &'a [u8]) -> Result<Self, WireError> {
        if body.is_empty() {
            return Err(WireError::Truncated);
        }
        if body.len() % INDEX_ENTRY_LEN != 0 {
            return Err(WireError::BadLength);
        }
        Ok(Index { body })
    }

    /// Every entry: the key and the version the sender holds (`u64::MAX`: revoked).
    pub fn entries(&self) -> impl Iterator<Item = (PublicKey, u64)> + 'a {
        self.body
            .chunks_exact(INDEX_ENTRY_LEN)
            .map(|entry| (key_at(entry, 0), u64_at(entry, KEY_LEN)))
    }
}

/// An index page of `entries` (at most [`INDEX_MAX_ENTRIES`]; the caller chunks).
pub fn emit_index(entries: &[(PublicKey, u64)]) -> Vec<u8> {
    debug_assert!(entries.len() <= INDEX_MAX_ENTRIES);
    let mut page = Vec::with_capacity(1 + entries.len() * INDEX_ENTRY_LEN);
    page.push(SUBTYPE_INDEX);
    for (key, version) in entries {
        page.extend_from_slice(key.as_bytes());
        page.extend_from_slice(&version.to_le_bytes());
    }
    page
}

/// The body of a renewal request: empty.
#[derive(Debug, Clone, Copy)]
pub struct RenewRequest;

impl RenewRequest {
    pub fn new_checked(body: &[u8]) -> Result<Self, WireError> {
        if body.is_empty() {
            Ok(RenewRequest)
        } else {
            Err(WireError::BadLength)
        }
    }
}

pub fn emit_renew_request() -> Vec<u8> {
    vec![SUBTYPE_RENEW_REQUEST]
}

/// The body of a renewal response: one encoded certificate, nothing after it (the core decodes
/// and checks it).
#[derive(Debug, Clone, Copy)]
pub struct RenewResponse<'a> {
    body: &'a [u8],
}

impl<'a> RenewResponse<'a> {
    /// `Truncated` if empty; the certificate's own layout is checked when it is decoded.
    pub fn new_checked(body: &'a [u8]) -> Result<Self, WireError> {
        if body.is_empty() {
            return Err(WireError::Truncated);
        }
        Ok(RenewResponse { body })
    }

    pub fn certificate_bytes(&self) -> &'a [u8] {
        self.body
    }
}

/// A renewal response carrying `certificate` (its encoding).
pub fn emit_renew_response(certificate: &[u8]) -> Vec<u8> {
    let mut payload = Vec::with_capacity(1 + certificate.len());
    payload.push(SUBTYPE_RENEW_RESPONSE);
    payload.extend_from_slice(certificate);
    payload
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> PublicKey {
        PublicKey::from_bytes([byte; 32])
    }

    #[test]
    fn payload_envelope_bounds() {
        assert_eq!(
            MembershipPayload::new_checked(&[]).err(),
            Some(WireError::Truncated)
        );
        assert_eq!(
            MembershipPayload::new_checked(&[0; MAX_PAYLOAD + 1]).err(),
            Some(WireError::BadLength)
        );
        let payload = MembershipPayload::new_checked(&[SUBTYPE_DIGEST, 9]).unwrap();
        assert_eq!(payload.subtype(), Subtype::Digest);
        assert_eq!(payload.body(), &[9]);
        assert_eq!(
            MembershipPayload::new_checked(&[99]).unwrap().subtype(),
            Subtype::Unknown(99)
        );
    }

    #[test]
    fn sync_request_round_trips() {
        let request = emit_sync_request(Some(&key(7)), 16);
        assert_eq!(request.len(), SYNC_REQUEST_LEN);
        let view = SyncRequest::new_checked(&request[1..]).unwrap();
        assert!(!view.from_start());
        assert_eq!(view.after(), Some(key(7)));
        assert_eq!(view.pages(), 16);
        let first = emit_sync_request(None, 3);
        let view = SyncRequest::new_checked(&first[1..]).unwrap();
        assert_eq!(view.after(), None);
        assert!(SyncRequest::new_checked(&first[1..first.len() - 1]).is_err());
        assert!(SyncRequest::new_checked(&[0; SYNC_REQUEST_LEN]).is_err());
    }

    #[test]
    fn records_page_keeps_items_before_a_framing_error() {
        let mut writer = PageWriter::new(0, Some(&key(1)));
        assert!(writer.push(b"abc"));
        assert!(writer.push(b"de"));
        writer.add_flags(PAGE_END);
        let mut page = writer.finish();
        let view = RecordsPage::new_checked(&page[1..]).unwrap();
        assert!(view.is_intact());
        assert_eq!(view.flags(), PAGE_END);
        assert_eq!(view.after(), Some(key(1)));
        assert_eq!(
            view.items().collect::<Vec<_>>(),
            vec![&b"abc"[..], &b"de"[..]]
        );

        page.extend_from_slice(&[5, 0, 1]);
        let view = RecordsPage::new_checked(&page[1..]).unwrap();
        assert!(!view.is_intact());
        assert_eq!(view.items().count(), 2);
        page.truncate(page.len() - 3);
        page.extend_from_slice(&[0, 0]);
        assert!(!RecordsPage::new_checked(&page[1..]).unwrap().is_intact());
        assert!(RecordsPage::new_checked(&[0; PAGE_HEADER_LEN - 2]).is_err());
    }

    #[test]
    fn page_writer_stays_within_a_payload() {
        let mut writer = PageWriter::new(PAGE_UNSOLICITED, None);
        let item = [0xaa; 300];
        while writer.push(&item) {}
        assert!(writer.finish().len() <= MAX_PAYLOAD);
        assert!(PageWriter::fits_a_page(MAX_PAYLOAD - PAGE_HEADER_LEN - 2));
        assert!(!PageWriter::fits_a_page(MAX_PAYLOAD - PAGE_HEADER_LEN - 1));
    }

    #[test]
    fn want_digest_index_round_trip() {
        let want = emit_want(&[key(1), key(2)]);
        let keys: Vec<_> = Want::new_checked(&want[1..]).unwrap().keys().collect();
        assert_eq!(keys, vec![key(1), key(2)]);
        assert!(Want::new_checked(&[]).is_err());
        assert!(Want::new_checked(&[0; 33]).is_err());
        assert!(Want::new_checked(&[0; 32 * (WANT_MAX_KEYS + 1)]).is_err());

        let mut sums = [0u64; DIGEST_BUCKETS];
        sums[3] = 0x0102_0304_0506_0708;
        let digest = emit_digest(&sums);
        assert_eq!(digest.len(), DIGEST_LEN);
        let read: Vec<_> = Digest::new_checked(&digest[1..]).unwrap().sums().collect();
        assert_eq!(read, sums.to_vec());
        assert!(Digest::new_checked(&digest[2..]).is_err());

        let index = emit_index(&[(key(4), 9), (key(5), u64::MAX)]);
        let entries: Vec<_> = Index::new_checked(&index[1..]).unwrap().entries().collect();
        assert_eq!(entries, vec![(key(4), 9), (key(5), u64::MAX)]);
        assert!(Index::new_checked(&index[2..]).is_err());
    }

    #[test]
    fn renewal_bodies() {
        assert!(RenewRequest::new_checked(&emit_renew_request()[1..]).is_ok());
        assert!(RenewRequest::new_checked(&[0]).is_err());
        let response = emit_renew_response(b"cert");
        let view = RenewResponse::new_checked(&response[1..]).unwrap();
        assert_eq!(view.certificate_bytes(), b"cert");
        assert!(RenewResponse::new_checked(&[]).is_err());
        assert_eq!(emit_foca(b"xy"), vec![SUBTYPE_FOCA, b'x', b'y']);
        assert!(FocaPacket::new_checked(&[]).is_err());
    }
}
