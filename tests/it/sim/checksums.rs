//! Partial L4 checksums across the tunnel: a segment whose checksum the sender left partial
//! travels so (payload kind 7) only on a session whose peer announced it accepts that, arrives
//! completing to the exact frame the full-checksum path delivers, and is completed by the sender
//! for a peer that did not announce it (an older node), for a flood, and for nothing else. A
//! frame marked partial that is not a TCP or UDP segment is dropped by the receiver and counted.

use meshd::wire::Checksum;

use super::*;

/// An Ethernet + IPv4 + TCP frame from host `a` to host `b` carrying `payload`, with a valid IPv4
/// header and the TCP checksum either complete or partial (the folded pseudo-header sum).
fn tcp_frame(a: usize, b: usize, payload: &[u8], partial: bool) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&mac(b, 1));
    f.extend_from_slice(&mac(a, 1));
    f.extend_from_slice(&[0x08, 0x00]);
    let ip_len = (20 + 20 + payload.len()) as u16;
    let (src, dst) = ([10, 9, 0, a as u8 + 1], [10, 9, 0, b as u8 + 1]);
    f.extend_from_slice(&[0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, 6, 0, 0]);
    f[16..18].copy_from_slice(&ip_len.to_be_bytes());
    f.extend_from_slice(&src);
    f.extend_from_slice(&dst);
    let ip_sum = Checksum::new().add_bytes(&f[14..34]).finish();
    f[24..26].copy_from_slice(&ip_sum.to_be_bytes());
    // Ports 40000 -> 5201, seq 1, ack 1, data offset 5, ACK|PSH, window 512.
    f.extend_from_slice(&[
        0x9c, 0x40, 0x14, 0x51, 0, 0, 0, 1, 0, 0, 0, 1, 0x50, 0x18, 2, 0,
    ]);
    f.extend_from_slice(&[0, 0, 0, 0]);
    f.extend_from_slice(payload);
    let pseudo = Checksum::new()
        .add_bytes(&src)
        .add_bytes(&dst)
        .add_u16(6)
        .add_u16((20 + payload.len()) as u16);
    let field = if partial {
        pseudo.fold()
    } else {
        pseudo.add_bytes(&f[34..]).finish()
    };
    f[50..52].copy_from_slice(&field.to_be_bytes());
    f
}

const AT: PartialChecksum = PartialChecksum {
    start: 34,
    offset: 16,
};

/// Sends `frame` partial from host 0 and returns what host 1 delivered (completed as a TAP
/// without offloads would).
fn send_partial(sim: &mut Sim, frame: &[u8]) -> Vec<Vec<u8>> {
    let before = sim.hosts[1].delivered.len();
    sim.send_partial_frame(0, frame, AT);
    sim.run_for(Duration::from_millis(100));
    sim.hosts[1].delivered[before..].to_vec()
}

#[test]
fn a_partial_checksum_crosses_only_to_a_peer_that_accepts_it() {
    let mut sim = Sim::new(2, 71);
    sim.run_for(Duration::from_secs(2));
    assert!(sim.all_up());
    // Both MACs learned, so the frame is unicast.
    exchange(&mut sim, 0, 1, 2, Duration::from_millis(10));
    let payload: Vec<u8> = (0..1200u32).map(|i| (i * 7) as u8).collect();
    let full = tcp_frame(0, 1, &payload, false);
    let partial = tcp_frame(0, 1, &payload, true);
    assert_ne!(full, partial);

    assert_eq!(send_partial(&mut sim, &partial), vec![full.clone()]);
    assert_eq!(sim.counter(0, "tx_partial_checksum"), 1);
    assert_eq!(sim.counter(1, "rx_partial_checksum"), 1);

    // A flood (destination not learned) is completed by the sender.
    let mut flooded = partial.clone();
    flooded[..6].copy_from_slice(&mac(1, 9));
    let mut flooded_full = full.clone();
    flooded_full[..6].copy_from_slice(&mac(1, 9));
    assert_eq!(send_partial(&mut sim, &flooded), vec![flooded_full]);
    assert_eq!(sim.counter(0, "tx_partial_checksum"), 1);

    // Host 1 becomes a node that does not announce the feature; after the next handshake,
    // host 0 completes checksums for it.
    sim.hosts[1].node.set_accept_partial_checksums(false);
    sim.run_for(Duration::from_secs(400));
    exchange(&mut sim, 0, 1, 2, Duration::from_millis(10));
    assert!(sim.all_up());
    assert_eq!(send_partial(&mut sim, &partial), vec![full]);
    assert_eq!(
        sim.counter(0, "tx_partial_checksum"),
        1,
        "completed by the sender"
    );
    assert_eq!(sim.counter(1, "rx_partial_checksum"), 1);
}

#[test]
fn a_frame_sent_partial_that_is_not_a_tcp_or_udp_segment_is_dropped_and_counted() {
    let mut sim = Sim::new(2, 72);
    sim.run_for(Duration::from_secs(2));
    exchange(&mut sim, 0, 1, 2, Duration::from_millis(10));
    // A sender that marks a non-IP frame partial (a bug, or a hostile member): nothing could
    // complete its checksum, so the receiver must not hand it on.
    let odd = frame(mac(1, 1), mac(0, 1), 77, 200);
    assert!(send_partial(&mut sim, &odd).is_empty());
    assert_eq!(sim.counter(1, "rx_partial_checksum_malformed"), 1);
    // The session is unharmed.
    exchange(&mut sim, 0, 1, 5, Duration::from_millis(10));
}
