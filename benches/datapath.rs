//! Microbenchmarks of the per-packet work on meshd's data path, each in isolation:
//! AEAD seal and open by packet size, the switch table, the outer-datagram parse, TSO
//! segmentation of a super-frame captured from a real kernel, and a node's whole per-frame path
//! (switch, seal, queue on one side; parse, replay check, open, learn on the other).
//!
//! Run with `cargo bench --bench datapath`. These are CPU costs without system calls; the
//! end-to-end comparison with tinc and the bare network is `scripts/bench.sh`.

use std::net::SocketAddr;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use meshd::core::cipher::{CipherPolicy, CipherPreference};
use meshd::core::frames::Segmenter;
use meshd::core::node::{NodeConfig, PeerSpec, Received};
use meshd::core::peer::PeerState;
use meshd::core::switch::{Fdb, FdbConfig, Port};
use meshd::core::{Node, PacketBuf};
use meshd::wire::{classify, Data, MacAddr, VnetHdr, VnetHdrSize};
use meshd_crypto::{Cipher, RecvKey, SendKey, StaticSecret, TAG_LEN};

fn seal_open(c: &mut Criterion) {
    for cipher in Cipher::ALL {
        seal_open_with(c, cipher);
    }
}

/// Seal and open per size with one AEAD (`aead/chacha20-poly1305`, `aead/aes-256-gcm`), so the
/// two compare side by side in one run.
fn seal_open_with(c: &mut Criterion, cipher: Cipher) {
    let mut group = c.benchmark_group(format!("aead/{cipher}"));
    for size in [64usize, 512, 1420, 8192] {
        group.throughput(Throughput::Bytes(size as u64));
        let mut send = SendKey::new([7; 32], cipher);
        let recv = RecvKey::new([7; 32], cipher);
        let aad = [1u8; 16];
        let mut buf = vec![0u8; size + TAG_LEN];
        group.bench_with_input(BenchmarkId::new("seal", size), &size, |b, &size| {
            b.iter(|| {
                let counter = send.next_counter().unwrap();
                send.sealer()
                    .seal_in_place(counter, &aad, &mut buf[..size])
                    .unwrap()
            })
        });
        let mut sealed = vec![0u8; size + TAG_LEN];
        let tag = send
            .sealer()
            .seal_in_place(0, &aad, &mut sealed[..size])
            .unwrap();
        sealed[size..].copy_from_slice(&tag);
        group.bench_with_input(BenchmarkId::new("open", size), &size, |b, _| {
            b.iter_batched_ref(
                || sealed.clone(),
                |packet| recv.opener().open_in_place(0, &aad, packet).unwrap().len(),
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

fn switch_table(c: &mut Criterion) {
    let now = Instant::now();
    let mut fdb = Fdb::new(FdbConfig::default());
    let macs: Vec<MacAddr> = (0..8192u32)
        .map(|i| {
            let b = i.to_be_bytes();
            MacAddr([0x02, 0, b[0], b[1], b[2], b[3]])
        })
        .collect();
    for (i, mac) in macs.iter().enumerate() {
        fdb.learn(now, *mac, Port::Peer(i as u32 % 16));
    }
    let mut i = 0usize;
    c.bench_function("fdb/learn+forward (8192 entries)", |b| {
        b.iter(|| {
            i = (i + 1) % macs.len();
            fdb.learn(now, macs[i], Port::Local);
            fdb.forward_from_local(now, macs[(i * 7919) % macs.len()])
        })
    });
}

/// The layer-2 guard's per-frame work on a 1400-byte IPv4 frame from a member: with ranges
/// enforced (the frame's source parsed and checked against the member's range) and without
/// (a network founded without --subnet: only the reserved-group test and the budget).
fn layer2_guard(c: &mut Criterion) {
    use meshd::core::guard::{check_remote, GuardPolicy, SourceMac, LEARN_BURST, LEARN_RATE};
    use meshd::core::limit::TokenBucket;
    use meshd::core::ranges::{ContainerNetwork, Grant};
    use meshd::wire::source_claim;

    let net = ContainerNetwork::new("10.77.0.0/16".parse().unwrap(), 24, None).unwrap();
    let grant = Grant::new(net, "10.77.3.0/24".parse().unwrap(), 1).unwrap();
    let mut frame = vec![0u8; 1400];
    frame[..6].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
    frame[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
    frame[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    frame[14..34].copy_from_slice(&[
        0x45, 0, 0x05, 0x6a, 0, 0, 0x40, 0, 64, 6, 0, 0, 10, 77, 3, 9, 10, 77, 5, 9,
    ]);
    let dst = MacAddr([2, 0, 0, 0, 0, 1]);
    let now = Instant::now();
    let mut budget = TokenBucket::new(now, LEARN_RATE, LEARN_BURST);
    let mut group = c.benchmark_group("guard");
    for (label, enforce_ranges) in [("ranges enforced", true), ("no ranges", false)] {
        let policy = GuardPolicy {
            enforce_ranges,
            drop_router_advertisements: false,
        };
        group.bench_function(format!("check 1400 B IPv4 frame ({label})"), |b| {
            b.iter(|| {
                check_remote(
                    policy,
                    dst,
                    || source_claim(&frame),
                    Some(&grant),
                    SourceMac::Here,
                    &mut budget,
                    now,
                )
            })
        });
    }
    group.finish();
}

fn wire_parse(c: &mut Criterion) {
    let mut datagram = vec![0u8; 1452];
    meshd::wire::emit_data_header(
        &mut datagram,
        meshd::wire::PayloadKind::Ethernet,
        0x1234,
        99,
    );
    c.bench_function("wire/classify+data view", |b| {
        b.iter(|| {
            let _ = classify(&datagram).unwrap();
            let d = Data::new_checked(&datagram[..]).unwrap();
            (d.receiver_index(), d.counter())
        })
    });
}

fn segmentation(c: &mut Criterion) {
    // A TSO super-frame read from a Linux TAP (12-byte virtio-net header, then the frame).
    let read: &[u8] = include_bytes!("../fuzz/corpus/offload/seed-kernel-tcp4");
    let header = VnetHdr::new_checked(read, VnetHdrSize::Mergeable).unwrap();
    let fields = header.fields();
    let frame = header.frame();
    let segments = Segmenter::new(&fields, frame).unwrap().segment_count();
    let mut out = vec![0u8; 9216];
    let mut group = c.benchmark_group("offload");
    group.throughput(Throughput::Bytes(frame.len() as u64));
    group.bench_function(
        format!(
            "segment kernel TCPv4 super-frame ({} B, {segments} segments)",
            frame.len()
        ),
        |b| {
            b.iter(|| {
                let mut s = Segmenter::new(&fields, frame).unwrap();
                let mut total = 0;
                while let Some(n) = s.next_into(&mut out).unwrap() {
                    total += n;
                }
                total
            })
        },
    );
    group.finish();
}

/// Two nodes with an established session, so the per-frame cost of each direction can be timed.
fn connected_pair() -> (Node, Node, Instant) {
    let now = Instant::now();
    let a_secret = [0x11u8; 32];
    let b_secret = [0x22u8; 32];
    let a_addr: SocketAddr = "10.0.0.1:6655".parse().unwrap();
    let b_addr: SocketAddr = "10.0.0.2:6655".parse().unwrap();
    let network = meshd_crypto::NetworkSecret::from_seed([0x33; 32]);
    let make = |secret: [u8; 32], peer: [u8; 32], endpoint: SocketAddr, seed: u8| {
        let secret = StaticSecret::from_bytes(secret);
        let certificate = meshd_crypto::Certificate::issue(
            &network,
            &format!("node-{seed}"),
            secret.public_key(),
            secret.signing_key().public(),
            1_799_999_000,
            1_800_999_000,
            false,
        )
        .expect("valid test certificate");
        Node::new(NodeConfig {
            network_secret: None,
            certificate_lifetime: std::time::Duration::from_secs(30 * 86_400),
            advertise: Vec::new(),
            revocations: Vec::new(),
            network: network.network_id(),
            certificate,
            secret,
            peers: vec![PeerSpec {
                name: "peer".into(),
                public_key: StaticSecret::from_bytes(peer).public_key(),
                endpoint: Some(endpoint),
            }],
            fdb: FdbConfig::default(),
            max_frame: 1420,
            underlay_mtu: 1500,
            rng_seed: [seed; 32],
            // ChaCha20-Poly1305, so the node benchmarks compare with runs before negotiation.
            ciphers: CipherPolicy::new(CipherPreference::Only(Cipher::ChaCha20Poly1305), false),
            now,
            unix_nanos_at_now: 1_800_000_000_000_000_000,
        })
    };
    let mut a = make(a_secret, b_secret, b_addr, 1);
    let mut b = make(b_secret, a_secret, a_addr, 2);
    // Only A initiates; shuttle datagrams until both sides are up.
    b.handle_timeout(now);
    while b.poll_transmit().is_some() {}
    a.handle_timeout(now);
    for _ in 0..4 {
        while let Some(t) = a.poll_transmit() {
            let mut bytes = t.packet.bytes().to_vec();
            b.handle_datagram(now, a_addr, &mut bytes);
        }
        while let Some(t) = b.poll_transmit() {
            let mut bytes = t.packet.bytes().to_vec();
            a.handle_datagram(now, b_addr, &mut bytes);
        }
    }
    assert_eq!(a.snapshot(now).peers[0].state, PeerState::Up);
    assert_eq!(b.snapshot(now).peers[0].state, PeerState::Up);
    (a, b, now)
}

fn frame_into(buf: &mut PacketBuf, len: usize) {
    let area = buf.frame_area();
    area[..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 2]);
    area[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 1]);
    area[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    buf.set_frame_len(len);
}

fn node_per_frame(c: &mut Criterion) {
    let (mut a, mut b, now) = connected_pair();
    let a_addr: SocketAddr = "10.0.0.1:6655".parse().unwrap();
    // Teach A where the destination MAC lives so frames are unicast, not flooded.
    let mut learn = b.take_buffer();
    frame_into(&mut learn, 60);
    learn.frame_area()[..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2]);
    learn.set_frame_len(60);
    b.handle_tap_frame(now, learn);
    while let Some(t) = b.poll_transmit() {
        let mut bytes = t.packet.bytes().to_vec();
        a.handle_datagram(now, "10.0.0.2:6655".parse().unwrap(), &mut bytes);
    }

    let mut group = c.benchmark_group("node");
    group.throughput(Throughput::Bytes(1400));
    group.bench_function("encapsulate 1400 B frame (switch + seal)", |bench| {
        bench.iter(|| {
            let mut buf = a.take_buffer();
            frame_into(&mut buf, 1400);
            a.handle_tap_frame(now, buf);
            let t = a.poll_transmit().expect("unicast transmit");
            let len = t.packet.len();
            a.recycle(t.packet);
            len
        })
    });
    // Each iteration gets a freshly sealed datagram (sealing is setup, not timed), so B's full
    // receive path runs every time instead of the replay check rejecting repeats.
    group.bench_function(
        "decapsulate 1400 B frame (replay + open + learn)",
        |bench| {
            bench.iter_batched_ref(
                || {
                    let mut buf = a.take_buffer();
                    frame_into(&mut buf, 1400);
                    a.handle_tap_frame(now, buf);
                    let t = a.poll_transmit().expect("unicast transmit");
                    let bytes = t.packet.bytes().to_vec();
                    a.recycle(t.packet);
                    bytes
                },
                |datagram| match b.handle_datagram(now, a_addr, datagram) {
                    Received::Frame(r) | Received::FramePartialChecksum(r, _) => r.len(),
                    Received::Nothing => panic!("a fresh datagram must be delivered"),
                },
                BatchSize::SmallInput,
            )
        },
    );
    group.finish();
}

criterion_group!(
    benches,
    seal_open,
    switch_table,
    layer2_guard,
    wire_parse,
    segmentation,
    node_per_frame
);
criterion_main!(benches);
