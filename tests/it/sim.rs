//! Simulation tests of the sans-IO core: real `Node`s on a virtual clock, joined by a virtual
//! network that can lose, delay, reorder and duplicate datagrams, and inject hostile ones.
//!
//! Nothing here sleeps or touches a socket, so every scenario is deterministic for its seed and
//! runs in milliseconds even when it covers minutes of protocol time (rekeys, timeouts).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use meshd::core::cipher::{CipherPolicy, CipherPreference};
use meshd::core::frames::PartialChecksum;
use meshd::core::node::{Inbound, NodeConfig, OpenJob, PeerSpec, Received, Transmit};
use meshd::core::switch::FdbConfig;
use meshd::core::Node;
use meshd::status::CoreStatus;
use meshd::wire::{handshake_init_len, MessageType};
use meshd_crypto::{
    compute_mac1, mac1_key, Certificate, CoreRng, NetworkSecret, PublicKey, StaticSecret,
};
use rand_core::RngCore;

const MAX_FRAME: usize = 1500 + 18;

/// A node's status as `meshd status` shows it: its typed snapshot, converted as the daemon does.
trait StatusOf {
    fn status(&self, now: Instant) -> CoreStatus;
}

impl StatusOf for Node {
    fn status(&self, now: Instant) -> CoreStatus {
        CoreStatus::from(&self.snapshot(now))
    }
}

thread_local! {
    /// The underlay link MTU nodes made on this thread are told (tests run one per thread).
    static UNDERLAY_MTU: std::cell::Cell<usize> = const { std::cell::Cell::new(1500) };
    /// The cipher policy of the node made next on this thread: (configured preference, whether
    /// the simulated CPU has AES hardware). By default ChaCha20-Poly1305 first, as on a CPU
    /// without AES instructions.
    static SIM_CIPHERS: std::cell::Cell<(CipherPreference, bool)> =
        const { std::cell::Cell::new((CipherPreference::Auto, false)) };
}

/// A small deterministic PRNG for the network's own decisions.
struct NetRng(u64);

impl NetRng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
}

#[derive(Clone, Copy, Default)]
struct Impairment {
    loss_percent: u64,
    duplicate_percent: u64,
    /// Each datagram is delayed by a uniform amount up to this, which reorders them.
    max_jitter: Duration,
}

struct InFlight {
    deliver_at: Instant,
    seq: u64,
    to: usize,
    from: SocketAddr,
    bytes: Vec<u8>,
}

/// Decides, per datagram (sender index, receiver index, bytes), whether the network drops it.
type DropFilter = Box<dyn FnMut(usize, usize, &[u8]) -> bool>;

/// Rewrites a datagram in flight (sender index, receiver index, bytes).
type Tamper = Box<dyn FnMut(usize, usize, &mut Vec<u8>)>;

/// A NAT in front of senders: per datagram (sender index, receiver index), the source address the
/// receiver sees instead of the sender's own (`None`: no translation). Replies to a translated
/// address reach the sender.
type SourceNat = Box<dyn FnMut(usize, usize) -> Option<SocketAddr>>;

struct SimHost {
    node: Node,
    addr: SocketAddr,
    secret_bytes: [u8; 32],
    peers: Vec<PeerSpec>,
    /// Frames the node handed to its TAP.
    delivered: Vec<Vec<u8>>,
}

struct Sim {
    now: Instant,
    hosts: Vec<SimHost>,
    flight: Vec<InFlight>,
    seq: u64,
    net: NetRng,
    impairment: Impairment,
    /// Datagrams dropped by a test-chosen filter (e.g. "lose the first handshake messages").
    filter: Option<DropFilter>,
    /// Rewrites datagrams in flight (sender index, receiver index, bytes), as an attacker on the
    /// path could.
    tamper: Option<Tamper>,
    /// Copies of every datagram sent, when a test wants to replay one.
    capture: Option<Vec<(usize, SocketAddr, Vec<u8>)>>,
    /// Host pairs (lower index first) whose underlay is cut both ways, like a blackhole route.
    cut: std::collections::BTreeSet<(usize, usize)>,
    /// Hosts behind a narrow link: datagrams to or from them longer than this are lost silently.
    narrow: Vec<(usize, usize)>,
    /// Drive the nodes the way the daemon's workers do: datagrams leave framed but unsealed and
    /// are sealed afterwards with a lane, and received data is begun, opened and finished in
    /// separate steps, sometimes with another datagram or a timer in between (two workers racing).
    split: bool,
    /// A received data message opened but not finished yet, as by a second worker: (host, job,
    /// datagram).
    parked: Option<(usize, OpenJob, Vec<u8>)>,
    /// Source translation of a NAT (or what a lying member claims to see), if any.
    source_nat: Option<SourceNat>,
    /// Every translated address the NAT handed out, and the host behind it.
    nat_mappings: std::collections::HashMap<SocketAddr, usize>,
}

fn addr(i: usize) -> SocketAddr {
    format!("10.0.0.{}:6655", i + 1).parse().unwrap()
}

fn secret(i: usize) -> [u8; 32] {
    // Byte 0's low bits are cleared by X25519 clamping, so vary a byte that survives it.
    let mut b = [0x42u8; 32];
    b[1] = i as u8 + 1;
    b
}

fn mac(host: usize, n: u8) -> [u8; 6] {
    [0x02, 0x77, 0, 0, host as u8 + 1, n]
}

/// An Ethernet frame carrying a sequence number so deliveries can be checked one by one.
fn frame(dst: [u8; 6], src: [u8; 6], seq: u64, len: usize) -> Vec<u8> {
    let mut f = vec![0u8; len.max(14 + 8)];
    f[..6].copy_from_slice(&dst);
    f[6..12].copy_from_slice(&src);
    f[12..14].copy_from_slice(&0x88b5u16.to_be_bytes()); // local experimental ethertype
    f[14..22].copy_from_slice(&seq.to_be_bytes());
    f
}

fn seq_of(frame: &[u8]) -> u64 {
    u64::from_be_bytes(frame[14..22].try_into().unwrap())
}

const BROADCAST: [u8; 6] = [0xff; 6];

impl Sim {
    /// `n` hosts in a full mesh, each knowing every other's endpoint.
    fn new(n: usize, seed: u64) -> Sim {
        let now = Instant::now();
        let keys: Vec<PublicKey> = (0..n)
            .map(|i| StaticSecret::from_bytes(secret(i)).public_key())
            .collect();
        let hosts = (0..n)
            .map(|i| {
                let peers: Vec<PeerSpec> = (0..n)
                    .filter(|&j| j != i)
                    .map(|j| PeerSpec {
                        name: format!("h{}", j + 1),
                        public_key: keys[j],
                        endpoint: Some(addr(j)),
                    })
                    .collect();
                SimHost {
                    node: make_node(now, secret(i), peers.clone(), seed + i as u64),
                    addr: addr(i),
                    secret_bytes: secret(i),
                    peers,
                    delivered: Vec::new(),
                }
            })
            .collect();
        Sim {
            now,
            hosts,
            flight: Vec::new(),
            seq: 0,
            net: NetRng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1),
            impairment: Impairment::default(),
            filter: None,
            tamper: None,
            capture: None,
            cut: Default::default(),
            narrow: Vec::new(),
            split: false,
            parked: None,
            source_nat: None,
            nat_mappings: Default::default(),
        }
    }

    /// Switches every host to the workers' split path (see `split`).
    fn split_path(mut self) -> Sim {
        self.split = true;
        for h in &mut self.hosts {
            h.node.set_deferred_sealing(true);
        }
        self
    }

    /// The next datagram host `from` queued, sealed as the daemon's workers seal it.
    fn next_transmit(&mut self, from: usize) -> Option<Transmit> {
        if !self.split {
            return self.hosts[from].node.poll_transmit();
        }
        let deferred = self.hosts[from].node.poll_deferred_transmit(0)?;
        let lane = (self.seq % 4) as u8;
        Some(
            deferred
                .seal(lane)
                .unwrap_or_else(|_| panic!("sealing failed")),
        )
    }

    /// Finishes the parked half-received datagram, if any.
    fn finish_parked(&mut self) {
        if let Some((to, job, mut bytes)) = self.parked.take() {
            let now = self.now;
            let host = &mut self.hosts[to];
            let received = host.node.finish_datagram(now, job, &mut bytes);
            if let Some(range) = received.complete_frame(&mut bytes) {
                host.delivered.push(bytes[range].to_vec());
            }
            host.node.check_invariants().unwrap();
            self.collect(to);
        }
    }

    fn cut(&mut self, a: usize, b: usize) {
        self.cut.insert((a.min(b), a.max(b)));
    }

    fn heal(&mut self, a: usize, b: usize) {
        self.cut.remove(&(a.min(b), a.max(b)));
    }

    fn blocked(&self, from: usize, to: usize, len: usize) -> bool {
        self.cut.contains(&(from.min(to), from.max(to)))
            || self
                .narrow
                .iter()
                .any(|&(h, max)| (h == from || h == to) && len > max)
    }

    fn host_of(&self, a: SocketAddr) -> Option<usize> {
        self.hosts
            .iter()
            .position(|h| h.addr == a)
            .or_else(|| self.nat_mappings.get(&a).copied())
    }

    /// The source address host `to` sees a datagram from host `from` come from.
    fn source_seen(&mut self, from: usize, to: usize) -> SocketAddr {
        let own = self.hosts[from].addr;
        let Some(translated) = self.source_nat.as_mut().and_then(|nat| nat(from, to)) else {
            return own;
        };
        self.nat_mappings.insert(translated, from);
        translated
    }

    /// Moves everything the node queued into the network.
    fn collect(&mut self, from: usize) {
        while let Some(t) = self.next_transmit(from) {
            let mut bytes = t.packet.bytes().to_vec();
            let dst = t.destination;
            self.hosts[from].node.recycle(t.packet);
            let Some(to) = self.host_of(dst) else {
                continue;
            };
            if self.blocked(from, to, bytes.len()) {
                continue;
            }
            if let Some(cap) = &mut self.capture {
                cap.push((to, self.hosts[from].addr, bytes.clone()));
            }
            if let Some(filter) = &mut self.filter {
                if filter(from, to, &bytes) {
                    continue;
                }
            }
            if let Some(tamper) = &mut self.tamper {
                tamper(from, to, &mut bytes);
            }
            if self.net.chance(self.impairment.loss_percent) {
                continue;
            }
            let copies = if self.net.chance(self.impairment.duplicate_percent) {
                2
            } else {
                1
            };
            for _ in 0..copies {
                let jitter = self
                    .net
                    .below(self.impairment.max_jitter.as_micros() as u64);
                self.seq += 1;
                let source = self.source_seen(from, to);
                self.flight.push(InFlight {
                    deliver_at: self.now + Duration::from_micros(100 + jitter),
                    seq: self.seq,
                    to,
                    from: source,
                    bytes: bytes.clone(),
                });
            }
        }
    }

    fn deliver(&mut self, to: usize, from: SocketAddr, mut bytes: Vec<u8>) {
        let now = self.now;
        if self.split {
            return self.deliver_split(to, from, bytes);
        }
        let host = &mut self.hosts[to];
        let received = host.node.handle_datagram(now, from, &mut bytes);
        if let Some(range) = received.complete_frame(&mut bytes) {
            host.delivered.push(bytes[range].to_vec());
        }
        host.node.check_invariants().unwrap();

        self.collect(to);
    }

    fn deliver_split(&mut self, to: usize, from: SocketAddr, mut bytes: Vec<u8>) {
        let now = self.now;
        let mut job = match self.hosts[to].node.begin_datagram(now, from, &mut bytes) {
            Inbound::Done(received) => {
                if let Some(range) = received.complete_frame(&mut bytes) {
                    self.hosts[to].delivered.push(bytes[range].to_vec());
                }
                self.hosts[to].node.check_invariants().unwrap();
                return self.collect(to);
            }
            Inbound::Open(job) => job,
        };
        job.open(&mut bytes);
        if self.parked.is_none() && self.net.chance(30) {
            // Another worker finishes this one later, after whatever comes next.
            self.parked = Some((to, job, bytes));
            return;
        }
        let host = &mut self.hosts[to];
        if let Received::Frame(range) = host.node.finish_datagram(now, job, &mut bytes) {
            host.delivered.push(bytes[range].to_vec());
        }
        host.node.check_invariants().unwrap();
        self.collect(to);
        self.finish_parked();
    }

    /// A frame enters host `at` from its TAP.
    fn send_frame(&mut self, at: usize, frame: &[u8]) {
        let now = self.now;
        let node = &mut self.hosts[at].node;
        let mut buf = node.take_buffer();
        buf.copy_frame_from(frame);
        node.handle_tap_frame(now, buf);
        node.check_invariants().unwrap();
        self.collect(at);
    }

    /// A frame enters host `at` from its TAP with its L4 checksum left partial at `partial`, as
    /// the io layer hands over the segments of a TSO super-frame.
    fn send_partial_frame(&mut self, at: usize, frame: &[u8], partial: PartialChecksum) {
        let now = self.now;
        let node = &mut self.hosts[at].node;
        let mut buf = node.take_buffer();
        buf.copy_frame_from(frame);
        buf.set_partial_checksum(partial);
        node.handle_tap_frame(now, buf);
        node.check_invariants().unwrap();
        self.collect(at);
    }

    /// Each host's `poll_timeout`, re-read only for the hosts an event touched: a node's deadline
    /// changes only when it is handed an input, and asking every node of a large simulation after
    /// every datagram cost more than the simulation itself.
    fn refresh_timeouts(&self, timeouts: &mut [Option<Instant>], touched: usize) {
        if self.split {
            // A parked datagram may finish on another host: re-read them all.
            for (t, h) in timeouts.iter_mut().zip(&self.hosts) {
                *t = h.node.poll_timeout();
            }
        } else {
            timeouts[touched] = self.hosts[touched].node.poll_timeout();
        }
    }

    /// Advances virtual time to `until`, delivering datagrams and firing timers in order.
    fn run_until(&mut self, until: Instant) {
        let mut timeouts: Vec<Option<Instant>> =
            self.hosts.iter().map(|h| h.node.poll_timeout()).collect();
        loop {
            let next_delivery = self.flight.iter().map(|f| (f.deliver_at, f.seq)).min();
            let next_timer = timeouts.iter().flatten().min().copied();
            let next = match (next_delivery, next_timer) {
                (Some((d, _)), Some(t)) => d.min(t),
                (Some((d, _)), None) => d,
                (None, Some(t)) => t,
                (None, None) => until,
            };
            if next > until {
                self.finish_parked();
                self.now = until;
                return;
            }
            self.now = self.now.max(next);
            if let Some((d, seq)) = next_delivery.filter(|(d, _)| *d <= self.now) {
                let _ = d;
                let idx = self.flight.iter().position(|f| f.seq == seq).unwrap();
                let f = self.flight.swap_remove(idx);
                let to = f.to;
                self.deliver(to, f.from, f.bytes);
                self.refresh_timeouts(&mut timeouts, to);
                continue;
            }
            for i in 0..self.hosts.len() {
                if timeouts[i].is_some_and(|t| t <= self.now) {
                    let now = self.now;
                    // Timers run between the halves of a parked datagram too (a rekey, say).
                    self.hosts[i].node.handle_timeout(now);
                    self.hosts[i].node.check_invariants().unwrap();
                    self.collect(i);
                    self.refresh_timeouts(&mut timeouts, i);
                }
            }
        }
    }

    fn delivered_count(&self, host: usize) -> usize {
        self.hosts[host].delivered.len()
    }

    fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        self.run_until(until);
    }

    fn state(&self, host: usize, peer_name: &str) -> String {
        self.hosts[host]
            .node
            .status(self.now)
            .peers
            .iter()
            .find(|p| p.name == peer_name)
            .map(|p| p.state.clone())
            .unwrap()
    }

    fn counter(&self, host: usize, name: &str) -> u64 {
        self.hosts[host]
            .node
            .counters()
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v)
            .unwrap()
    }

    /// A counter summed over every host.
    fn total(&self, name: &str) -> u64 {
        (0..self.hosts.len()).map(|h| self.counter(h, name)).sum()
    }

    fn all_up(&self) -> bool {
        self.hosts.iter().all(|h| {
            h.node
                .status(self.now)
                .peers
                .iter()
                .all(|p| p.state == "up")
        })
    }

    /// Replaces host `i` with a freshly started node holding the same key (a daemon restart).
    fn restart(&mut self, i: usize, seed: u64) {
        let split = self.split;
        let h = &mut self.hosts[i];
        h.node = make_node(self.now, h.secret_bytes, h.peers.clone(), seed);
        h.node.set_deferred_sealing(split);
        h.delivered.clear();
        self.flight.retain(|f| f.to != i);
    }
}

fn make_node(now: Instant, secret: [u8; 32], peers: Vec<PeerSpec>, seed: u64) -> Node {
    make_node_with_max_frame(now, secret, peers, seed, MAX_FRAME)
}

/// The network every simulated host belongs to.
fn network() -> NetworkSecret {
    NetworkSecret::from_seed([0xA5; 32])
}

/// Wall-clock seconds the simulated nodes start at; certificates are valid around it.
const SIM_UNIX_SECS: u64 = 1_800_000_000;

/// A certificate from `issuer` for the host whose secret is `secret`, named after its index.
fn certificate(secret: &StaticSecret, issuer: &NetworkSecret) -> Certificate {
    let raw = secret.as_bytes();
    let name = if raw[0] == 0x42 {
        format!("h{}", raw[1])
    } else {
        "outsider".to_string()
    };
    Certificate::issue(
        issuer,
        &name,
        secret.public_key(),
        secret.signing_key().public(),
        SIM_UNIX_SECS - 60,
        SIM_UNIX_SECS + 30 * 86_400,
        false,
    )
    .unwrap()
}

fn make_node_with_max_frame(
    now: Instant,
    secret: [u8; 32],
    peers: Vec<PeerSpec>,
    seed: u64,
    max_frame: usize,
) -> Node {
    make_node_issued_by(now, secret, peers, seed, max_frame, &network())
}

fn make_node_issued_by(
    now: Instant,
    secret: [u8; 32],
    peers: Vec<PeerSpec>,
    seed: u64,
    max_frame: usize,
    issuer: &NetworkSecret,
) -> Node {
    let raw = secret;
    let secret = StaticSecret::from_bytes(secret);
    // Simulated hosts advertise their own address; host 1 (index 0) is the admin.
    let index = (raw[0] == 0x42).then(|| usize::from(raw[1]) - 1);
    let certificate = certificate(&secret, issuer);
    Node::new(NodeConfig {
        network_secret: (index == Some(0)).then(network),
        advertise: index.map(addr).into_iter().collect(),
        peers,
        max_frame,
        ..node_config(now, secret, certificate, seed)
    })
}

/// A simulated node's config with `certificate`: no network key, nothing advertised, no
/// bootstrap peers, the simulator's frame size, MTU and ciphers; callers set what differs.
fn node_config(
    now: Instant,
    secret: StaticSecret,
    certificate: Certificate,
    seed: u64,
) -> NodeConfig {
    let mut rng_seed = [0u8; 32];
    rng_seed[..8].copy_from_slice(&seed.to_le_bytes());
    NodeConfig {
        network_secret: None,
        certificate_lifetime: std::time::Duration::from_secs(30 * 86_400),
        advertise: Vec::new(),
        revocations: Vec::new(),
        network: network().network_id(),
        certificate,
        secret,
        peers: Vec::new(),
        fdb: FdbConfig::default(),
        max_frame: MAX_FRAME,
        underlay_mtu: UNDERLAY_MTU.with(|m| m.get()),
        rng_seed,
        ciphers: SIM_CIPHERS.with(|c| {
            let (preference, aes_hardware) = c.get();
            CipherPolicy::new(preference, aes_hardware)
        }),
        now,
        // Wall clock advances with the virtual clock; a restart happens "later" in wall time too.
        unix_nanos_at_now: (SIM_UNIX_SECS + seed) * 1_000_000_000,
    }
}

/// Sends `count` numbered frames a→b and b→a every `interval`, running the network between them,
/// then checks each side received every sequence number exactly once.
fn exchange(sim: &mut Sim, a: usize, b: usize, count: u64, interval: Duration) {
    let start_a = sim.hosts[b].delivered.len();
    let start_b = sim.hosts[a].delivered.len();
    for seq in 0..count {
        sim.send_frame(a, &frame(mac(b, 1), mac(a, 1), seq, 200));
        sim.send_frame(b, &frame(mac(a, 1), mac(b, 1), seq, 200));
        sim.run_for(interval);
    }
    sim.run_for(Duration::from_millis(500));
    for (receiver, start) in [(b, start_a), (a, start_b)] {
        let mut seen: Vec<u64> = sim.hosts[receiver].delivered[start..]
            .iter()
            .map(|f| seq_of(f))
            .collect();
        let n = seen.len();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), n, "host {receiver} received duplicates");
        assert_eq!(
            seen,
            (0..count).collect::<Vec<_>>(),
            "host {receiver} lost frames"
        );
    }
}

#[test]
fn handshake_brings_peers_up_within_one_round_trip() {
    let mut sim = Sim::new(2, 1);
    sim.run_for(Duration::from_millis(50));
    assert!(sim.all_up(), "both sides up after a round trip");
    assert_eq!(sim.state(0, "h2"), "up");
    exchange(&mut sim, 0, 1, 50, Duration::from_millis(10));
}

#[test]
fn rekey_under_continuous_traffic_loses_nothing() {
    let mut sim = Sim::new(2, 2);
    sim.run_for(Duration::from_millis(50));
    // 400 s of protocol time with a frame each way every 20 ms spans three rekeys.
    exchange(&mut sim, 0, 1, 20_000, Duration::from_millis(20));
    let handshakes = sim.total("handshakes_completed");
    assert!(
        handshakes >= 6,
        "expected at least three rekeys, saw {handshakes} handshake completions"
    );
    assert_eq!(sim.total("rx_replayed"), 0);
    assert_eq!(sim.total("tx_no_session"), 0);
    assert!(sim.all_up());
}

/// The daemon's workers seal after the node and open between two halves of receiving, with other
/// datagrams and timers (rekeys among them) in between: nothing is lost, duplicated or replayed.
#[test]
fn split_path_of_the_workers_keeps_every_frame_through_rekeys_and_reordering() {
    let mut sim = Sim::new(2, 12).split_path();
    sim.run_for(Duration::from_millis(50));
    assert!(sim.all_up());
    exchange(&mut sim, 0, 1, 20_000, Duration::from_millis(20));
    let handshakes = sim.total("handshakes_completed");
    assert!(
        handshakes >= 6,
        "three rekeys, saw {handshakes} completions"
    );
    assert_eq!(sim.total("rx_replayed"), 0);
    assert_eq!(sim.total("tx_seal_failed"), 0);
    reordered_and_duplicated(&mut sim);
}

/// With several workers sharing a node, what one worker feeds in leaves through that worker
/// alone: if another worker could take the datagrams of a flow it did not read, the two would
/// send them at once and reorder the flow on the wire (measured: 130,000 TCP retransmits in 6 s
/// of 4 flows before lanes had queues of their own).
#[test]
fn datagrams_leave_on_the_lane_of_the_worker_whose_input_made_them() {
    let mut sim = Sim::new(2, 14).split_path();
    sim.run_for(Duration::from_millis(50));
    assert!(sim.all_up());
    let now = sim.now;
    let node = &mut sim.hosts[0].node;
    node.set_lanes(2);
    node.set_lane(1);
    for seq in 0..50 {
        let mut buf = node.take_buffer();
        buf.copy_frame_from(&frame(mac(1, 1), mac(0, 1), seq, 600));
        node.handle_tap_frame(now, buf);
    }
    node.set_lane(0);
    assert!(
        node.poll_deferred_transmit(0).is_none(),
        "lane 0 must not carry what lane 1 read"
    );
    let mut sent = Vec::new();
    while let Some(deferred) = node.poll_deferred_transmit(1) {
        let transmit = deferred
            .seal(1)
            .unwrap_or_else(|_| panic!("sealing failed"));
        assert_eq!(transmit.destination, addr(1));
        sent.push(transmit.packet.bytes().to_vec());
        node.recycle(transmit.packet);
    }
    assert_eq!(sent.len(), 50);
    assert!(sent.iter().all(|d| d[3] == 1), "each carries lane 1");
    let delivered = sim.hosts[1].delivered.len();
    for bytes in sent {
        sim.deliver(1, addr(0), bytes);
    }
    sim.finish_parked();
    let got: Vec<u64> = sim.hosts[1].delivered[delivered..]
        .iter()
        .map(|f| seq_of(f))
        .collect();
    assert_eq!(got.len(), 50);
    let mut sorted = got.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..50).collect::<Vec<_>>());
}

/// The lane byte is inside the authenticated header: a datagram whose lane was changed on the
/// way is refused, so steering hints cannot be used to slip anything past the AEAD.
#[test]
fn lane_byte_is_authenticated() {
    let mut sim = Sim::new(2, 13).split_path();
    sim.run_for(Duration::from_millis(50));
    sim.capture = Some(Vec::new());
    // Held back from host 2, so the copies below are its first sight of the datagram.
    let data = u8::from(MessageType::Data);
    sim.filter = Some(Box::new(move |from, _, bytes| {
        from == 0 && bytes[1] == data
    }));
    let delivered = sim.hosts[1].delivered.len();
    sim.send_frame(0, &frame(mac(1, 1), mac(0, 1), 1, 100));
    sim.run_for(Duration::from_millis(10));
    sim.filter = None;
    let captured = sim.capture.take().unwrap();
    let (to, from, bytes) = captured
        .into_iter()
        .find(|(to, _, b)| *to == 1 && b[1] == data && b.len() > 100)
        .unwrap();
    let mut tampered = bytes.clone();
    tampered[3] ^= 0x40;
    let before = sim.counter(1, "rx_decrypt_failed");
    sim.deliver(to, from, tampered);
    sim.finish_parked();
    assert_eq!(sim.counter(1, "rx_decrypt_failed"), before + 1);
    assert_eq!(sim.hosts[1].delivered.len(), delivered);
    sim.deliver(to, from, bytes);
    sim.finish_parked();
    assert_eq!(
        sim.hosts[1].delivered.len(),
        delivered + 1,
        "the genuine one passes"
    );
}

#[test]
fn replayed_datagrams_are_rejected_and_counted() {
    let mut sim = Sim::new(2, 3);
    sim.run_for(Duration::from_millis(50));
    sim.capture = Some(Vec::new());
    sim.send_frame(0, &frame(mac(1, 1), mac(0, 1), 7, 100));
    sim.run_for(Duration::from_millis(10));
    let captured = sim.capture.take().unwrap();
    assert_eq!(sim.hosts[1].delivered.len(), 1);
    let before = sim.counter(1, "rx_replayed");
    for (to, from, bytes) in captured.into_iter().filter(|(to, _, _)| *to == 1) {
        for _ in 0..3 {
            sim.deliver(to, from, bytes.clone());
        }
    }
    assert_eq!(
        sim.hosts[1].delivered.len(),
        1,
        "a replay must not deliver again"
    );
    assert_eq!(sim.counter(1, "rx_replayed"), before + 3);
}

#[test]
fn reordering_and_duplication_inside_the_window_deliver_each_frame_once() {
    let mut sim = Sim::new(2, 4);
    sim.run_for(Duration::from_millis(50));
    reordered_and_duplicated(&mut sim);
}

/// Frames both ways under 10% duplication and 30 ms of jitter: each arrives exactly once (checked
/// by `exchange`) and the duplicates are counted as replays.
fn reordered_and_duplicated(sim: &mut Sim) {
    sim.impairment = Impairment {
        loss_percent: 0,
        duplicate_percent: 10,
        max_jitter: Duration::from_millis(30),
    };
    // A frame every 100 µs against 30 ms of jitter reorders by up to ~300 packets.
    exchange(sim, 0, 1, 3000, Duration::from_micros(100));
    assert!(
        sim.counter(1, "rx_replayed") > 0,
        "duplicates were counted as replays"
    );
}

#[test]
fn lost_handshake_messages_are_retransmitted() {
    let mut sim = Sim::new(2, 5);
    let mut dropped = 0;
    sim.filter = Some(Box::new(move |_, _, bytes| {
        let is_handshake = bytes.len() > 1
            && matches!(
                MessageType::from(bytes[1]),
                MessageType::HandshakeInit | MessageType::HandshakeResponse
            );
        if is_handshake && dropped < 4 {
            dropped += 1;
            return true;
        }
        false
    }));
    sim.run_for(Duration::from_millis(500));
    assert!(!sim.all_up(), "first messages were lost");
    sim.run_for(Duration::from_secs(10));
    assert!(sim.all_up(), "retransmission completed the handshake");
    sim.filter = None;
    exchange(&mut sim, 0, 1, 20, Duration::from_millis(10));
}

#[test]
fn lossy_network_still_converges_and_carries_traffic() {
    let mut sim = Sim::new(3, 6);
    sim.impairment = Impairment {
        loss_percent: 20,
        duplicate_percent: 5,
        max_jitter: Duration::from_millis(5),
    };
    sim.run_for(Duration::from_secs(30));
    assert!(sim.all_up(), "all peers up despite 20% loss");
}

#[test]
fn restarted_peer_reestablishes_at_once() {
    let mut sim = Sim::new(2, 7);
    sim.run_for(Duration::from_millis(50));
    exchange(&mut sim, 0, 1, 10, Duration::from_millis(10));
    sim.run_for(Duration::from_secs(30));
    sim.restart(1, 99);
    sim.run_for(Duration::from_millis(100));
    assert!(sim.all_up(), "restarted node handshakes on start");
    exchange(&mut sim, 0, 1, 10, Duration::from_millis(10));
}

#[test]
fn peer_that_cannot_reach_us_is_found_again_after_its_restart() {
    // Host 1 does not know host 0's endpoint; only host 0 initiates. After host 1 restarts, host 0
    // notices the silence and handshakes again.
    let mut sim = Sim::new(2, 8);
    for p in &mut sim.hosts[1].peers {
        p.endpoint = None;
    }
    sim.restart(1, 8);
    sim.run_for(Duration::from_millis(100));
    assert!(sim.all_up());
    sim.restart(1, 80);
    sim.run_for(Duration::from_secs(60));
    assert!(sim.all_up(), "host 0 re-handshook after the silent restart");
    exchange(&mut sim, 0, 1, 10, Duration::from_millis(10));
}

#[test]
fn simultaneous_initiation_settles_without_loss() {
    let mut sim = Sim::new(2, 9);
    // Both nodes initiate at the same instant (both know each other's endpoint).
    sim.run_for(Duration::from_millis(100));
    assert!(sim.all_up());
    assert!(
        sim.counter(0, "handshakes_initiated") >= 1 && sim.counter(1, "handshakes_initiated") >= 1
    );
    exchange(&mut sim, 0, 1, 200, Duration::from_millis(5));
}

#[test]
fn dead_peer_goes_down_and_comes_back() {
    let mut sim = Sim::new(2, 10);
    sim.run_for(Duration::from_millis(100));
    sim.filter = Some(Box::new(|_, _, _| true)); // the underlay is cut
    sim.run_for(Duration::from_secs(70));
    assert_eq!(sim.state(0, "h2"), "down");
    sim.filter = None;
    sim.run_for(Duration::from_secs(20));
    assert!(sim.all_up(), "back after the cut heals");
    exchange(&mut sim, 0, 1, 10, Duration::from_millis(10));
}

#[test]
fn broadcast_reaches_every_peer_once_and_split_horizon_holds() {
    let mut sim = Sim::new(3, 11);
    sim.run_for(Duration::from_millis(100));
    assert!(sim.all_up());
    sim.send_frame(0, &frame(BROADCAST, mac(0, 1), 1, 60));
    sim.run_for(Duration::from_millis(50));
    assert_eq!(sim.hosts[1].delivered.len(), 1);
    assert_eq!(sim.hosts[2].delivered.len(), 1);
    assert_eq!(sim.hosts[0].delivered.len(), 0, "never echoed back");
    // Host 1 learned the MAC behind host 0, so unicast to it goes only there.
    sim.send_frame(1, &frame(mac(0, 1), mac(1, 1), 2, 60));
    sim.run_for(Duration::from_millis(50));
    assert_eq!(sim.hosts[0].delivered.len(), 1);
    assert_eq!(
        sim.hosts[2].delivered.len(),
        1,
        "unicast did not flood to host 2"
    );
    assert_eq!(sim.counter(1, "frames_flooded"), 0);
}

#[test]
fn mac_move_between_hosts_is_followed() {
    let mut sim = Sim::new(3, 12);
    sim.run_for(Duration::from_millis(100));
    let roaming = mac(9, 9);
    sim.send_frame(0, &frame(BROADCAST, roaming, 1, 60));
    sim.run_for(Duration::from_millis(50));
    // The container moves to host 2 and announces itself (gratuitous ARP-like broadcast).
    sim.send_frame(2, &frame(BROADCAST, roaming, 2, 60));
    sim.run_for(Duration::from_millis(50));
    let before = sim.hosts[2].delivered.len();
    sim.send_frame(1, &frame(roaming, mac(1, 1), 3, 60));
    sim.run_for(Duration::from_millis(50));
    assert_eq!(
        sim.hosts[2].delivered.len(),
        before + 1,
        "unicast follows the move"
    );
    assert!(sim.counter(1, "fdb_moves") >= 1);
}

#[test]
fn garbage_datagrams_are_counted_and_traffic_keeps_flowing() {
    let mut sim = Sim::new(2, 13);
    sim.run_for(Duration::from_millis(50));
    let mut rng = NetRng(77);
    let attacker: SocketAddr = "10.9.9.9:1234".parse().unwrap();
    for i in 0..20_000 {
        let len = rng.below(1600) as usize;
        let mut bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        // A third of them carry a valid-looking header to reach deeper parsers.
        if i % 3 == 0 && len >= 4 {
            bytes[0] = 1;
            bytes[1] = [1, 2, 4][i % 9 / 3];
        }
        sim.deliver(0, attacker, bytes);
    }
    let c = sim.hosts[0].node.counters();
    let dropped: u64 = c
        .iter()
        .filter(|(n, _)| n.starts_with("rx_") && *n != "rx_datagrams")
        .map(|(_, v)| v)
        .sum();
    assert!(
        dropped >= 20_000,
        "every garbage datagram was counted as a drop ({dropped})"
    );
    assert!(sim.hosts[0].delivered.is_empty());
    exchange(&mut sim, 0, 1, 20, Duration::from_millis(10));
}

#[test]
fn handshake_flood_is_rate_limited_before_diffie_hellman() {
    let mut sim = Sim::new(2, 14);
    sim.run_for(Duration::from_millis(50));
    // The attacker knows host 0's public key, so its initiations pass mac1, but its own static key
    // is not a peer. Only the rate limiter's budget of them may cost DH work.
    let victim = StaticSecret::from_bytes(secret(0)).public_key();
    let key = mac1_key(&victim);
    let mut rng = CoreRng::from_seed([5; 32]);
    let attacker: SocketAddr = "10.9.9.9:1234".parse().unwrap();
    for _ in 0..5000 {
        let len = handshake_init_len(8 + 300);
        let mut msg = vec![0u8; len];
        rng.fill_bytes(&mut msg);
        msg[0] = 1;
        msg[1] = 1;
        msg[2] = 0;
        msg[3] = 0;
        let covered = len - 32;
        let mac = compute_mac1(&key, &msg[..covered]);
        msg[covered..covered + 16].copy_from_slice(&mac);
        sim.deliver(0, attacker, msg);
    }
    // Past the first few dozen the node is under load: the rest are answered with a cookie (no
    // DH), and of the few before, the source's bucket lets 20 through.
    let limited = sim.counter(0, "rx_handshake_ratelimited");
    let challenged = sim.counter(0, "tx_cookie_replies");
    let processed = sim.counter(0, "rx_handshake_failed")
        + sim.counter(0, "rx_handshake_no_certificate")
        + sim.counter(0, "rx_handshake_bad_certificate");
    assert!(
        limited + challenged >= 4900,
        "flood was rate limited or challenged ({limited} + {challenged})"
    );
    assert!(
        processed <= 100,
        "at most the budget reached DH ({processed})"
    );
    // Every DH the node did was for the flood's processed few or for host 1's real initiations.
    assert!(
        sim.counter(0, "rx_handshake_dh") <= processed + sim.counter(0, "handshakes_completed")
    );
    exchange(&mut sim, 0, 1, 20, Duration::from_millis(10));
}

#[test]
fn self_made_certificate_cannot_get_a_frame_through() {
    // A node with its own key and a certificate from a network key of its own making, configured
    // with the right network id and host 0 as its peer: its initiations pass mac1 and Noise, and
    // are refused on the certificate.
    let mut sim = Sim::new(2, 15);
    let outsider = StaticSecret::from_bytes([0xEE; 32]);
    let outsider_peers = vec![PeerSpec {
        name: "h1".into(),
        public_key: StaticSecret::from_bytes(secret(0)).public_key(),
        endpoint: Some(addr(0)),
    }];
    sim.hosts[1].secret_bytes = *outsider.as_bytes();
    sim.hosts[1].peers = outsider_peers.clone();
    sim.hosts[1].node = make_node_issued_by(
        sim.now,
        *outsider.as_bytes(),
        outsider_peers,
        15,
        MAX_FRAME,
        &NetworkSecret::from_seed([0x66; 32]),
    );
    sim.run_for(Duration::from_secs(5));
    sim.send_frame(1, &frame(BROADCAST, mac(1, 1), 1, 60));
    sim.run_for(Duration::from_secs(1));
    assert!(sim.hosts[0].delivered.is_empty());
    assert!(sim.counter(0, "rx_handshake_bad_certificate") >= 1);
    assert_eq!(sim.counter(0, "handshakes_completed"), 0);
    // Host 0 also refuses to use any session the outsider could offer as responder.
    let status = sim.hosts[0].node.status(sim.now);
    assert!(status.peers.iter().all(|p| p.state != "up"));
}

#[test]
fn frames_larger_than_our_tap_are_dropped_and_counted() {
    let mut sim = Sim::new(2, 19);
    // Host 1 carries smaller frames than host 0 sends (mismatched MTU settings).
    let (secret, peers) = (sim.hosts[1].secret_bytes, sim.hosts[1].peers.clone());
    sim.hosts[1].node = make_node_with_max_frame(sim.now, secret, peers, 19, 1000);
    sim.run_for(Duration::from_millis(100));
    assert!(sim.all_up());
    sim.send_frame(0, &frame(BROADCAST, mac(0, 1), 1, 1400));
    sim.send_frame(0, &frame(BROADCAST, mac(0, 1), 2, 900));
    sim.run_for(Duration::from_millis(10));
    assert_eq!(
        sim.hosts[1].delivered.len(),
        1,
        "only the frame that fits is delivered"
    );
    assert_eq!(sim.counter(1, "rx_oversize"), 1);
}

#[test]
fn status_reports_peers_fdb_and_counters() {
    let mut sim = Sim::new(2, 16);
    sim.run_for(Duration::from_millis(50));
    exchange(&mut sim, 0, 1, 5, Duration::from_millis(10));
    let s = sim.hosts[0].node.status(sim.now);
    let p = &s.peers[0];
    assert_eq!(p.name, "h2");
    assert_eq!(p.state, "up");
    assert_eq!(p.endpoint.as_deref(), Some("10.0.0.2:6655"));
    assert!(p.rx_bytes >= 5 * 200 && p.tx_bytes >= 5 * 200);
    assert!(p.last_handshake_secs_ago.is_some());
    assert!(s
        .fdb
        .iter()
        .any(|e| e.mac == "02:77:00:00:02:01" && e.port == "h2"));
    assert!(s
        .fdb
        .iter()
        .any(|e| e.mac == "02:77:00:00:01:01" && e.port == "local"));
}

mod checksums;
mod ciphers;
pub(crate) mod floods;
mod join_flood;
mod l2_guard;
mod observed;
mod on_demand;
mod paths;
mod ranges;

mod random_input {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        #[test]
        fn arbitrary_datagrams_never_panic(data in proptest::collection::vec(any::<u8>(), 0..2000), kind in 0u8..6) {
            let mut sim = Sim::new(2, 17);
            sim.run_for(Duration::from_millis(50));
            let mut d = data;
            if d.len() >= 2 { d[0] = 1; d[1] = kind; }
            sim.deliver(0, addr(1), d);
            prop_assert!(sim.all_up());
        }

        #[test]
        fn arbitrary_tap_frames_never_panic(data in proptest::collection::vec(any::<u8>(), 0..MAX_FRAME)) {
            let mut sim = Sim::new(2, 18);
            sim.run_for(Duration::from_millis(50));
            sim.send_frame(0, &data);
            sim.run_for(Duration::from_millis(10));
            prop_assert!(sim.hosts[0].delivered.is_empty());
        }
    }
}

/// A network of `n` hosts where host 0 knows nobody and every other host knows only host 0 (as
/// after `meshd join`): everything else must come from gossip.
fn star(n: usize, seed: u64) -> Sim {
    let mut sim = Sim::new(n, seed);
    let hub = PeerSpec {
        name: "h1".into(),
        public_key: StaticSecret::from_bytes(secret(0)).public_key(),
        endpoint: Some(addr(0)),
    };
    for i in 0..n {
        let peers = if i == 0 {
            Vec::new()
        } else {
            vec![hub.clone()]
        };
        sim.hosts[i].peers = peers.clone();
        sim.hosts[i].node = make_node(sim.now, secret(i), peers, seed + i as u64);
    }
    sim
}

fn members_alive(sim: &Sim, host: usize) -> usize {
    sim.hosts[host]
        .node
        .status(sim.now)
        .members
        .iter()
        .filter(|m| m.state == "alive")
        .count()
}

#[test]
fn hosts_knowing_only_the_founder_learn_every_member_by_gossip_and_obey_a_revocation() {
    const N: usize = 24;
    let mut sim = star(N, 31);
    let started = sim.now;
    let mut converged = None;
    for _ in 0..300 {
        sim.run_for(Duration::from_millis(100));
        let done = (0..N).all(|i| {
            members_alive(&sim, i) == N - 1
                && sim.hosts[i]
                    .node
                    .status(sim.now)
                    .peers
                    .iter()
                    .filter(|p| p.state == "up")
                    .count()
                    == N - 1
        });
        if done {
            converged = Some(sim.now - started);
            break;
        }
    }
    let converged = converged.expect("every host lists every other as alive with a session");
    println!(
        "{N} hosts knowing one member: full membership and sessions after {converged:?} (virtual)"
    );
    // Frames cross between two hosts that never had each other in their config.
    exchange(&mut sim, 5, 17, 10, Duration::from_millis(20));

    // The admin (host 0) revokes host 7; every other host drops it and refuses it.
    let revoked = StaticSecret::from_bytes(secret(7)).public_key();
    let revocation = meshd::core::membership::Revocation::issue(
        &network(),
        revoked,
        "h8",
        SIM_UNIX_SECS,
        SIM_UNIX_SECS + 30 * 86_400,
    )
    .unwrap();
    let at = sim.now;
    sim.hosts[0].node.apply_revocation(at, revocation).unwrap();
    let mut spread = None;
    for _ in 0..100 {
        sim.run_for(Duration::from_millis(100));
        let everywhere = (0..N).filter(|&i| i != 7).all(|i| {
            let status = sim.hosts[i].node.status(sim.now);
            sim.hosts[i].node.is_revoked(&revoked)
                && status
                    .peers
                    .iter()
                    .all(|p| p.name != "h8" || p.state != "up")
        });
        if everywhere {
            spread = Some(sim.now - at);
            break;
        }
    }
    let spread = spread.expect("the revocation reached every host");
    println!(
        "revocation applied by all {} other hosts after {spread:?} (virtual)",
        N - 2
    );
    let before = sim.hosts[3].delivered.len();
    sim.send_frame(7, &frame(BROADCAST, mac(7, 1), 1, 60));
    sim.run_for(Duration::from_secs(12));
    assert_eq!(
        sim.hosts[3].delivered.len(),
        before,
        "the revoked host got a frame through"
    );
    assert!((0..N)
        .filter(|&i| i != 7)
        .all(|i| members_alive(&sim, i) == N - 2));
}

#[test]
fn a_restarted_host_rejoins_through_remembered_members_when_its_bootstrap_is_gone() {
    const N: usize = 6;
    let mut sim = star(N, 41);
    sim.run_for(Duration::from_secs(15));
    assert_eq!(members_alive(&sim, 3), N - 1, "the mesh formed");
    // What the io layer writes to STATE_DIR/members while host 3 runs.
    let hub = StaticSecret::from_bytes(secret(0)).public_key();
    let remembered = sim.hosts[3].node.reachable_members(8);
    assert_eq!(remembered.len(), N - 1);
    // The founder, host 3's only configured member, goes silent; host 3 restarts.
    sim.filter = Some(Box::new(|from, _, _| from == 0));
    let mut peers = sim.hosts[3].peers.clone();
    peers.extend(remembered.into_iter().filter(|p| p.public_key != hub));
    sim.hosts[3].peers = peers;
    sim.restart(3, 99);
    sim.run_for(Duration::from_secs(15));
    let status = sim.hosts[3].node.status(sim.now);
    let up: Vec<&str> = status
        .peers
        .iter()
        .filter(|p| p.state == "up")
        .map(|p| p.name.as_str())
        .collect();
    for name in ["h2", "h3", "h5", "h6"] {
        assert!(
            up.contains(&name),
            "{name} is back in session with h4: {up:?}"
        );
    }
    exchange(&mut sim, 3, 5, 10, Duration::from_millis(20));
}
