//! Packet buffers with reserved header room, and the pool that recycles them.
//!
//! A `PacketBuf` holds one packet between `start..end` inside fixed storage that keeps `HEADROOM`
//! bytes free in front (for the outer data header) and `TAILROOM` behind (for the AEAD tag), so a
//! frame read from the TAP is encrypted and framed in place, never copied. Buffers are never shrunk
//! or grown after creation; the pool hands the same storage out again, so the steady-state data path
//! allocates nothing.

use crate::core::frames::PartialChecksum;
use crate::wire::{DATA_HEADER_LEN, TAG_LEN};

/// Bytes kept free before a frame for the outer data header.
pub const HEADROOM: usize = DATA_HEADER_LEN;
/// Bytes kept free after a frame for the AEAD tag.
pub const TAILROOM: usize = TAG_LEN;

/// One packet in a reusable buffer.
pub struct PacketBuf {
    storage: Box<[u8]>,
    start: usize,
    end: usize,
    /// Set when the frame's L4 checksum was left partial (see [`PacketBuf::set_partial_checksum`]).
    partial_checksum: Option<PartialChecksum>,
}

impl PacketBuf {
    /// A buffer able to hold a frame of `max_frame` bytes plus header and tag room.
    pub fn new(max_frame: usize) -> PacketBuf {
        PacketBuf {
            storage: vec![0; HEADROOM + max_frame + TAILROOM].into_boxed_slice(),
            start: HEADROOM,
            end: HEADROOM,
            partial_checksum: None,
        }
    }

    /// The largest frame this buffer can carry.
    pub fn max_frame(&self) -> usize {
        self.storage.len() - HEADROOM - TAILROOM
    }

    /// Resets to an empty frame and returns the area a frame may be read into.
    pub fn frame_area(&mut self) -> &mut [u8] {
        self.start = HEADROOM;
        self.end = HEADROOM;
        self.partial_checksum = None;
        let cap = self.storage.len() - TAILROOM;
        &mut self.storage[HEADROOM..cap]
    }

    /// Marks the first `len` bytes of the frame area as the frame.
    pub fn set_frame_len(&mut self, len: usize) {
        assert!(len <= self.max_frame(), "frame longer than buffer");
        self.start = HEADROOM;
        self.end = HEADROOM + len;
    }

    /// Replaces the content with a copy of `frame` (which must fit).
    pub fn copy_frame_from(&mut self, frame: &[u8]) {
        self.frame_area()[..frame.len()].copy_from_slice(frame);
        self.set_frame_len(frame.len());
    }

    /// Records that the frame's L4 checksum holds only the pseudo-header sum, at `at`: the node
    /// sends it so to a peer that accepts it and completes it for any other destination.
    /// Cleared by [`PacketBuf::frame_area`].
    pub fn set_partial_checksum(&mut self, at: PartialChecksum) {
        self.partial_checksum = Some(at);
    }

    /// Where the frame's checksum is still to be completed, if it is.
    pub fn partial_checksum(&self) -> Option<PartialChecksum> {
        self.partial_checksum
    }

    /// Completes a partial L4 checksum (no-op for a complete frame), before the frame is sealed.
    pub fn complete_checksum(&mut self) {
        if let Some(at) = self.partial_checksum.take() {
            at.complete(&mut self.storage[self.start..self.end]);
        }
    }

    /// The packet as it stands: a plain frame before sealing, the whole datagram after.
    pub fn bytes(&self) -> &[u8] {
        &self.storage[self.start..self.end]
    }

    pub fn len(&self) -> usize {
        self.end - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }

    /// Frames the current frame as a datagram: `fill` gets the header room (`HEADROOM` bytes), the
    /// frame, and the tag room (`TAILROOM` bytes), and the packet then spans all three.
    pub(crate) fn seal_with<T, E>(
        &mut self,
        fill: impl FnOnce(&mut [u8], &mut [u8], &mut [u8]) -> Result<T, E>,
    ) -> Result<T, E> {
        debug_assert_eq!(self.start, HEADROOM, "sealing a buffer twice");
        let (head, rest) = self.storage.split_at_mut(HEADROOM);
        let (frame, tail) = rest.split_at_mut(self.end - HEADROOM);
        let filled = fill(head, frame, &mut tail[..TAILROOM])?;
        self.start = 0;
        self.end += TAILROOM;
        Ok(filled)
    }

    /// The header, payload and tag areas of a packet framed by `seal_with`, for sealing it later
    /// (in place, on another thread than the one that framed it).
    pub(crate) fn sealed_parts_mut(&mut self) -> (&mut [u8], &mut [u8], &mut [u8]) {
        debug_assert_eq!(self.start, 0, "only a framed datagram has its parts");
        let (head, rest) = self.storage[..self.end].split_at_mut(HEADROOM);
        let (body, tail) = rest.split_at_mut(rest.len() - TAILROOM);
        (head, body, tail)
    }
}

/// A free list of equally sized buffers.
pub struct BufferPool {
    free: Vec<PacketBuf>,
    max_frame: usize,
    max_free: usize,
}

impl BufferPool {
    /// A pool of buffers for frames up to `max_frame` bytes that keeps at most `max_free` idle ones.
    pub fn new(max_frame: usize, max_free: usize) -> BufferPool {
        BufferPool {
            free: Vec::with_capacity(max_free),
            max_frame,
            max_free,
        }
    }

    pub fn max_frame(&self) -> usize {
        self.max_frame
    }

    pub fn take(&mut self) -> PacketBuf {
        self.free
            .pop()
            .unwrap_or_else(|| PacketBuf::new(self.max_frame))
    }

    pub fn give(&mut self, buf: PacketBuf) {
        if self.free.len() < self.max_free && buf.max_frame() == self.max_frame {
            self.free.push(buf);
        }
    }

    pub fn idle(&self) -> usize {
        self.free.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_spans_header_frame_and_tag() {
        let mut b = PacketBuf::new(100);
        b.copy_frame_from(&[1, 2, 3]);
        assert_eq!(b.bytes(), &[1, 2, 3]);
        b.seal_with::<(), ()>(|h, f, t| {
            assert_eq!((h.len(), f.len(), t.len()), (HEADROOM, 3, TAILROOM));
            h.fill(9);
            t.fill(7);
            Ok(())
        })
        .unwrap();
        assert_eq!(b.len(), HEADROOM + 3 + TAILROOM);
        assert_eq!(&b.bytes()[HEADROOM..HEADROOM + 3], &[1, 2, 3]);
        b.frame_area();
        assert!(b.is_empty());
    }

    #[test]
    fn pool_reuses_storage_and_is_bounded() {
        let mut p = BufferPool::new(64, 2);
        let a = p.take();
        let ptr = a.storage.as_ptr();
        p.give(a);
        assert_eq!(p.take().storage.as_ptr(), ptr);
        for _ in 0..5 {
            p.give(PacketBuf::new(64));
        }
        assert_eq!(p.idle(), 2);
        p.give(PacketBuf::new(32));
        assert_eq!(p.idle(), 2, "foreign-sized buffers are not pooled");
    }
}
