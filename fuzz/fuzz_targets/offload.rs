//! Offload: one TAP read (a 12-byte virtio-net header, then the Ethernet frame) is segmented into
//! fixed buffers and the segments are coalesced back. Invariants: no panic; every segment carries
//! at most gso_size payload bytes behind the super-frame's headers and has valid IPv4 and L4
//! checksums; the segments' payloads concatenate to the input's; coalescing loses, duplicates and
//! reorders nothing, and its super-frames verify once their checksum is completed as the kernel
//! would. The raw frame is also fed to the coalescer as if a peer had sent it. A GSO frame the
//! segmenter accepts is one the `IpFrame` view accepts, and the view's TCP/UDP layout ends where
//! the segmenter's copied headers do. With checksums left partial, every segment completes to
//! the full-checksum segment, and the coalescer never writes a partial frame without `NEEDS_CSUM`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use meshd::core::frames::{
    complete_checksum, Coalescer, PartialChecksum, Segmenter, COALESCE_STAGING_LEN,
    MAX_SUPER_FRAME_LEN,
};
use meshd::wire::{
    Checksum, GsoType, IpFrame, VnetHdr, VnetHdrFields, VnetHdrSize, VNET_F_NEEDS_CSUM,
};

fuzz_target!(|bytes: &[u8]| {
    let Ok(view) = VnetHdr::new_checked(bytes, VnetHdrSize::Mergeable) else {
        return;
    };
    let hdr = view.fields();
    let frame = view.frame();
    // An otherwise unused bit of num_buffers chooses checksum verification in the coalescer.
    let verify = view.num_buffers().unwrap_or(0) & 1 != 0;
    check_completion(&hdr, frame);
    check_round_trip(&hdr, frame, verify);
    check_partial(&hdr, frame);
    let mut coalescer = Coalescer::new(vec![0u8; 2048], VnetHdrSize::Legacy);
    for _ in 0..2 {
        coalescer.push(frame, |w| assert!(w.frame().len() <= frame.len()));
    }
    coalescer.flush(|_| {});
});

fn check_completion(hdr: &VnetHdrFields, frame: &[u8]) {
    let mut copy = frame.to_vec();
    if complete_checksum(hdr, &mut copy).is_ok() && hdr.needs_csum() {
        let start = usize::from(hdr.csum_start);
        let field = start + usize::from(hdr.csum_offset);
        // The partial sum that was in the field stands for data outside the range (the
        // pseudo-header), so adding it back must make the range verify.
        if hdr.csum_offset & 1 == 0 {
            let partial = u16::from_be_bytes([frame[field], frame[field + 1]]);
            assert!(Checksum::new()
                .add_bytes(&copy[start..])
                .add_u16(partial)
                .is_valid());
        }
        assert_eq!(copy[..field], frame[..field]);
        assert_eq!(copy[field + 2..], frame[field + 2..]);
    }
}

fn check_round_trip(hdr: &VnetHdrFields, frame: &[u8], verify: bool) {
    let Ok(mut segmenter) = Segmenter::new(hdr, frame) else {
        return;
    };
    let gso = hdr.gso() != GsoType::None;
    let headers = segmenter.header_len();
    let count = segmenter.segment_count();
    if gso {
        let ip = IpFrame::new_checked(frame).expect("segmented frames are IP");
        assert_eq!(ip.end(), frame.len());
        assert_eq!(ip.layout().map(|l| l.payload), Ok(headers));
    }
    let mut out = [0u8; 9216];
    let mut segments: Vec<Vec<u8>> = Vec::with_capacity(count.min(4096));
    loop {
        match segmenter.next_into(&mut out) {
            Ok(Some(len)) => segments.push(out[..len].to_vec()),
            Ok(None) => break,
            // Fixed jumbo-sized buffers: larger segments are refused without being consumed.
            Err(e) => {
                assert!(
                    matches!(e, meshd::core::frames::OffloadError::OutputTooSmall { needed } if needed > out.len())
                );
                return;
            }
        }
    }
    assert_eq!(segments.len(), count);
    if !gso {
        let mut expected = frame.to_vec();
        complete_checksum(hdr, &mut expected).unwrap();
        assert_eq!(segments, vec![expected]);
        return;
    }
    let mut payload = Vec::with_capacity(frame.len());
    for seg in &segments {
        assert!(seg.len() <= headers + usize::from(hdr.gso_size));
        assert_eq!(seg[..12], frame[..12], "MAC addresses are copied");
        check_valid(seg);
        payload.extend_from_slice(&seg[headers..]);
    }
    assert_eq!(payload, frame[headers..]);

    let mut staging = vec![0u8; COALESCE_STAGING_LEN];
    let mut coalescer =
        Coalescer::new(&mut staging[..], VnetHdrSize::Mergeable).verify_tcp_checksums(verify);
    let mut merged_payload = Vec::with_capacity(frame.len());
    let mut carried = 0;
    let mut emit = |w: meshd::core::frames::TapWrite<'_>| {
        carried += w.segments();
        assert!(w.frame().len() <= MAX_SUPER_FRAME_LEN);
        let out_hdr = VnetHdr::new_checked(w.vnet_header(), VnetHdrSize::Mergeable)
            .unwrap()
            .fields();
        let mut completed = w.frame().to_vec();
        if out_hdr.needs_csum() {
            assert!(w.segments() > 1);
            assert_eq!(usize::from(out_hdr.hdr_len), headers);
            assert_eq!(out_hdr.gso_size, hdr.gso_size);
            let plain = VnetHdrFields {
                flags: VNET_F_NEEDS_CSUM,
                csum_start: out_hdr.csum_start,
                csum_offset: out_hdr.csum_offset,
                ..VnetHdrFields::NONE
            };
            complete_checksum(&plain, &mut completed).unwrap();
        } else {
            assert_eq!(w.segments(), 1);
        }
        check_valid(&completed);
        merged_payload.extend_from_slice(&completed[headers..]);
    };
    for seg in &segments {
        coalescer.push(seg, &mut emit);
    }
    coalescer.flush(&mut emit);
    assert_eq!(carried, segments.len());
    assert_eq!(
        merged_payload, payload,
        "one flow: order and bytes survive coalescing"
    );
}

fn check_partial(hdr: &VnetHdrFields, frame: &[u8]) {
    let (Ok(mut full), Ok(partial)) = (Segmenter::new(hdr, frame), Segmenter::new(hdr, frame))
    else {
        return;
    };
    let mut partial = partial.leave_checksums_partial();
    let at = partial.partial_checksum();
    let (mut a, mut b) = ([0u8; 9216], [0u8; 9216]);
    let mut coalescer = Coalescer::new(vec![0u8; COALESCE_STAGING_LEN], VnetHdrSize::Mergeable);
    let mut emit = |w: meshd::core::frames::TapWrite<'_>| {
        if at.is_some() {
            let out = VnetHdr::new_checked(w.vnet_header(), VnetHdrSize::Mergeable)
                .unwrap()
                .fields();
            assert!(out.needs_csum(), "a partial frame reaches the TAP with NEEDS_CSUM");
        }
    };
    loop {
        match (full.next_into(&mut a), partial.next_into(&mut b)) {
            (Ok(Some(n)), Ok(Some(m))) => {
                assert_eq!(n, m);
                if let Some(at) = at {
                    assert_eq!(PartialChecksum::of(&b[..m]), Some(at));
                    coalescer.push_with(&b[..m], Some(at), &mut emit);
                    at.complete(&mut b[..m]);
                }
                assert_eq!(a[..n], b[..m], "partial completes to full");
            }
            (Ok(None), Ok(None)) => break,
            (Err(_), Err(_)) => return,
            other => panic!("the two modes disagree: {other:?}"),
        }
    }
    coalescer.flush(&mut emit);
}

/// An independent check of a frame the segmenter produced: IP length, IPv4 header checksum, L4
/// checksum over the pseudo-header.
fn check_valid(frame: &[u8]) {
    let tagged = matches!(frame[12..14], [0x81, 0x00] | [0x88, 0xa8]);
    let l3 = if tagged { 18 } else { 14 };
    let ethertype = u16::from_be_bytes([frame[l3 - 2], frame[l3 - 1]]);
    let (l4, protocol, addresses) = if ethertype == 0x86dd {
        assert_eq!(
            usize::from(u16::from_be_bytes([frame[l3 + 4], frame[l3 + 5]])),
            frame.len() - l3 - 40
        );
        (l3 + 40, frame[l3 + 6], &frame[l3 + 8..l3 + 40])
    } else {
        let ihl = usize::from(frame[l3] & 15) * 4;
        assert_eq!(
            usize::from(u16::from_be_bytes([frame[l3 + 2], frame[l3 + 3]])),
            frame.len() - l3
        );
        assert!(Checksum::new().add_bytes(&frame[l3..l3 + ihl]).is_valid());
        (l3 + ihl, frame[l3 + 9], &frame[l3 + 12..l3 + 20])
    };
    let sum = Checksum::new()
        .add_bytes(addresses)
        .add_u16(u16::from(protocol))
        .add_u32((frame.len() - l4) as u32)
        .add_bytes(&frame[l4..]);
    assert!(sum.is_valid(), "L4 checksum");
}
