//! Membership on a virtual network: real `Membership` state machines (no `Node`s) joined by a
//! network with per-message latency, optional loss, and sessions that come up the first time
//! two members talk, as the node's on-demand handshakes make them.
//!
//! A member can only send to keys it can reach: the member it was configured with, members it
//! has a session with, and members it was told about by a verified `MemberUp` (which carries
//! the endpoints). Everything is deterministic for its seed; no test asserts on wall time.
//! Printed numbers (convergence and detection times, gossip bytes) are virtual time.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use meshd::core::membership::{
    member_item, MemberRecord, MemberState, Membership, MembershipConfig, MembershipEvent,
    Revocation, PAGE_UNSOLICITED, SUBTYPE_RECORDS,
};
use meshd_crypto::{Certificate, NetworkSecret, PublicKey, StaticSecret};

pub(crate) const UNIX0: u64 = 1_800_000_000;
pub(crate) const DAY: u64 = 24 * 60 * 60;

/// xorshift64: the network's own decisions (latency, loss, bootstrap choices).
struct NetRng(u64);

impl NetRng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
}

pub(crate) fn secret(i: usize) -> StaticSecret {
    // X25519 clamps the low bits of byte 0 and the top bits of byte 31, so the index goes in
    // between.
    let mut bytes = [0x5a; 32];
    bytes[1..9].copy_from_slice(&(i as u64).to_le_bytes());
    StaticSecret::from_bytes(bytes)
}

pub(crate) fn addr(i: usize) -> SocketAddr {
    SocketAddr::from(([10, (i >> 16) as u8, (i >> 8) as u8, i as u8], 6655))
}

pub(crate) fn network() -> NetworkSecret {
    NetworkSecret::from_seed([0x99; 32])
}

pub(crate) struct Host {
    pub(crate) m: Membership,
    pub(crate) key: PublicKey,
    pub(crate) cert: Certificate,
    pub(crate) alive: bool,
    /// Keys this host can send to (configured, session, or announced with endpoints).
    pub(crate) reachable: BTreeSet<PublicKey>,
    /// Members currently reported up.
    pub(crate) up: BTreeSet<PublicKey>,
    /// When each key was last reported down.
    pub(crate) down_at: BTreeMap<PublicKey, Instant>,
    pub(crate) revoked: BTreeSet<PublicKey>,
    pub(crate) renewed: Vec<Certificate>,
    pub(crate) forgotten: BTreeSet<PublicKey>,
    /// Certificates seen in MemberUp events, by key (the newest).
    pub(crate) certs_seen: BTreeMap<PublicKey, Certificate>,
    pub(crate) next_timeout: Option<Instant>,
}

struct InFlight {
    at: Instant,
    seq: u64,
    to: usize,
    from: PublicKey,
    payload: Vec<u8>,
}

impl PartialEq for InFlight {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for InFlight {}
impl PartialOrd for InFlight {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for InFlight {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

pub(crate) struct Net {
    start: Instant,
    pub(crate) now: Instant,
    pub(crate) hosts: Vec<Host>,
    by_key: BTreeMap<PublicKey, usize>,
    flight: BinaryHeap<Reverse<InFlight>>,
    seq: u64,
    rng: NetRng,
    pub(crate) latency: (Duration, Duration),
    pub(crate) loss_percent: u64,
    sessions: BTreeSet<(usize, usize)>,
    pub(crate) bytes_sent: u64,
    /// Messages to keys the sender had no way to reach (no endpoint known).
    unreachable: u64,
    /// A test's selective loss: called with the time, the receiving host and the payload of
    /// every message; `true` drops it.
    pub(crate) drop_filter: Option<DropFilter>,
}

pub(crate) type DropFilter = Box<dyn FnMut(Instant, usize, &[u8]) -> bool>;

pub(crate) struct HostSpec {
    pub(crate) admin: bool,
    pub(crate) cert_lifetime: Duration,
}

impl Default for HostSpec {
    fn default() -> Self {
        HostSpec {
            admin: false,
            cert_lifetime: Duration::from_secs(30 * DAY),
        }
    }
}

impl Net {
    pub(crate) fn new(seed: u64) -> Net {
        let start = Instant::now();
        Net {
            start,
            now: start,
            hosts: Vec::new(),
            by_key: BTreeMap::new(),
            flight: BinaryHeap::new(),
            seq: 0,
            rng: NetRng(seed.max(1)),
            latency: (Duration::from_millis(5), Duration::from_millis(25)),
            loss_percent: 0,
            sessions: BTreeSet::new(),
            bytes_sent: 0,
            unreachable: 0,
            drop_filter: None,
        }
    }

    pub(crate) fn unix(&self) -> u64 {
        UNIX0 + self.now.duration_since(self.start).as_secs()
    }

    pub(crate) fn elapsed(&self) -> Duration {
        self.now.duration_since(self.start)
    }

    fn membership(&self, i: usize, spec: &HostSpec, cert: Certificate) -> Membership {
        let s = secret(i);
        let mut seed = [0u8; 32];
        seed[..8].copy_from_slice(&(i as u64).to_le_bytes());
        seed[8..16].copy_from_slice(&self.unix().to_le_bytes());
        Membership::new(MembershipConfig {
            network: network().network_id(),
            certificate: cert,
            signing_key: s.signing_key(),
            network_secret: spec.admin.then(network),
            endpoints: vec![addr(i)],
            revocations: Vec::new(),
            now: self.now,
            unix_secs_at_now: self.unix(),
            rng_seed: seed,
            certificate_lifetime: spec.cert_lifetime,
        })
    }

    fn certificate(&self, i: usize, spec: &HostSpec) -> Certificate {
        let s = secret(i);
        let unix = self.unix();
        Certificate::issue(
            &network(),
            &format!("host-{i}"),
            s.public_key(),
            s.signing_key().public(),
            unix,
            unix + spec.cert_lifetime.as_secs(),
            spec.admin,
        )
        .unwrap()
    }

    /// Adds a host that knows nobody yet.
    pub(crate) fn add(&mut self, spec: HostSpec) -> usize {
        let i = self.hosts.len();
        let cert = self.certificate(i, &spec);
        let m = self.membership(i, &spec, cert.clone());
        let key = m.public_key();
        self.by_key.insert(key, i);
        self.hosts.push(Host {
            m,
            key,
            cert,
            alive: true,
            reachable: BTreeSet::new(),
            up: BTreeSet::new(),
            down_at: BTreeMap::new(),
            revoked: BTreeSet::new(),
            renewed: Vec::new(),
            forgotten: BTreeSet::new(),
            certs_seen: BTreeMap::new(),
            next_timeout: None,
        });
        self.drain(i);
        i
    }

    /// `n` hosts; host `i > 0` is configured with one random earlier host, host 0 with host 1.
    pub(crate) fn mesh(n: usize, seed: u64) -> Net {
        let mut net = Net::new(seed);
        for _ in 0..n {
            net.add(HostSpec::default());
        }
        net.bootstrap_all();
        net
    }

    pub(crate) fn bootstrap_all(&mut self) {
        for i in 0..self.hosts.len() {
            let j = if i == 0 {
                1
            } else {
                self.rng.below(i as u64) as usize
            };
            self.configure(i, j);
        }
    }

    /// Host `i` is configured with host `j`'s endpoint and handshakes with it.
    pub(crate) fn configure(&mut self, i: usize, j: usize) {
        let key = self.hosts[j].key;
        self.hosts[i].reachable.insert(key);
        self.open_session(i, j);
    }

    fn open_session(&mut self, i: usize, j: usize) {
        let pair = (i.min(j), i.max(j));
        if !self.sessions.insert(pair) {
            return;
        }
        let (ci, cj) = (self.hosts[i].cert.clone(), self.hosts[j].cert.clone());
        let now = self.now;
        let (ki, kj) = (self.hosts[i].key, self.hosts[j].key);
        self.hosts[i].reachable.insert(kj);
        self.hosts[j].reachable.insert(ki);
        self.hosts[i].m.session_established(now, &cj, addr(j));
        self.hosts[j].m.session_established(now, &ci, addr(i));
        self.drain(i);
        self.drain(j);
    }

    pub(crate) fn drain(&mut self, i: usize) {
        let mut sends = Vec::new();
        {
            let h = &mut self.hosts[i];
            while let Some(t) = h.m.poll_transmit() {
                sends.push(t);
            }
            while let Some(event) = h.m.poll_event() {
                match event {
                    MembershipEvent::MemberUp {
                        key, certificate, ..
                    } => {
                        h.up.insert(key);
                        h.reachable.insert(key);
                        h.certs_seen.insert(key, certificate);
                    }
                    MembershipEvent::MemberDown { key } => {
                        h.up.remove(&key);
                        h.down_at.insert(key, self.now);
                    }
                    MembershipEvent::MemberForgotten { key } => {
                        h.forgotten.insert(key);
                    }
                    MembershipEvent::Revoked { revocation } => {
                        h.revoked.insert(revocation.static_key);
                    }
                    MembershipEvent::CertificateRenewed { certificate } => {
                        h.cert = certificate.clone();
                        h.renewed.push(certificate);
                    }
                }
            }
            h.next_timeout = if h.alive { h.m.poll_timeout() } else { None };
        }
        for (to, payload) in sends {
            self.send(i, to, payload);
        }
    }

    fn send(&mut self, i: usize, to: PublicKey, payload: Vec<u8>) {
        assert!(payload.len() <= meshd::core::membership::MAX_PAYLOAD);
        self.bytes_sent += payload.len() as u64;
        let Some(&j) = self.by_key.get(&to) else {
            self.unreachable += 1;
            return;
        };
        if !self.hosts[i].reachable.contains(&to) {
            self.unreachable += 1;
            return;
        }
        if !self.hosts[j].alive || self.rng.below(100) < self.loss_percent {
            return;
        }
        let now = self.now;
        if let Some(filter) = self.drop_filter.as_mut() {
            if filter(now, j, &payload) {
                return;
            }
        }
        self.open_session(i, j);
        let (lo, hi) = self.latency;
        let spread = (hi - lo).as_micros() as u64;
        let at = self.now + lo + Duration::from_micros(self.rng.below(spread + 1));
        self.seq += 1;
        let from = self.hosts[i].key;
        self.flight.push(Reverse(InFlight {
            at,
            seq: self.seq,
            to: j,
            from,
            payload,
        }));
    }

    /// Runs one event no later than `limit`; false when there is none.
    fn step(&mut self, limit: Instant) -> bool {
        let next_host = self
            .hosts
            .iter()
            .enumerate()
            .filter_map(|(i, h)| h.next_timeout.map(|t| (t, i)))
            .min();
        let next_flight = self.flight.peek().map(|Reverse(f)| f.at);
        match (next_flight, next_host) {
            (Some(f), host) if f <= limit && host.is_none_or(|(t, _)| f <= t) => {
                let Some(Reverse(msg)) = self.flight.pop() else {
                    return false;
                };
                self.now = self.now.max(msg.at);
                if self.hosts[msg.to].alive {
                    let now = self.now;
                    self.hosts[msg.to]
                        .m
                        .handle_message(now, msg.from, &msg.payload);
                    self.drain(msg.to);
                }
                true
            }
            (_, Some((t, i))) if t <= limit => {
                self.now = self.now.max(t);
                let now = self.now;
                self.hosts[i].m.handle_timeout(now);
                self.drain(i);
                true
            }
            _ => {
                self.now = self.now.max(limit);
                false
            }
        }
    }

    pub(crate) fn run_for(&mut self, d: Duration) {
        let limit = self.now + d;
        while self.step(limit) {}
    }

    /// Runs until `done` holds (checked every 50 ms of virtual time) or `limit` passes;
    /// returns how long it took.
    pub(crate) fn run_until(
        &mut self,
        limit: Duration,
        mut done: impl FnMut(&Net) -> bool,
    ) -> Option<Duration> {
        let began = self.now;
        let deadline = began + limit;
        while self.now < deadline {
            if done(self) {
                return Some(self.now - began);
            }
            let slice = (self.now + Duration::from_millis(50)).min(deadline);
            while self.step(slice) {}
        }
        done(self).then(|| self.now - began)
    }

    pub(crate) fn alive(&self) -> impl Iterator<Item = (usize, &Host)> {
        self.hosts.iter().enumerate().filter(|(_, h)| h.alive)
    }

    /// Every alive host reports every other alive host up.
    pub(crate) fn converged(&self) -> bool {
        let keys: BTreeSet<PublicKey> = self.alive().map(|(_, h)| h.key).collect();
        self.alive()
            .all(|(_, h)| h.up.len() + 1 == keys.len() && h.up.iter().all(|k| keys.contains(k)))
    }

    pub(crate) fn kill(&mut self, i: usize) {
        self.hosts[i].alive = false;
        self.hosts[i].next_timeout = None;
        self.sessions.retain(|&(a, b)| a != i && b != i);
    }

    /// Starts host `i` again with the same key and certificate, configured with host `j`.
    pub(crate) fn restart(&mut self, i: usize, j: usize) {
        let spec = HostSpec::default();
        let cert = self.hosts[i].cert.clone();
        let m = self.membership(i, &spec, cert);
        let h = &mut self.hosts[i];
        h.m = m;
        h.alive = true;
        h.reachable.clear();
        h.up.clear();
        h.down_at.clear();
        self.drain(i);
        self.configure(i, j);
    }

    pub(crate) fn counter(&self, i: usize, name: &str) -> u64 {
        self.hosts[i]
            .m
            .counters()
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(0, |(_, v)| v)
    }

    pub(crate) fn total(&self, name: &str) -> u64 {
        (0..self.hosts.len()).map(|i| self.counter(i, name)).sum()
    }
}

pub(crate) fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

// ------------------------------------------------------------------------------------ tests

#[test]
fn hundred_members_each_knowing_one_converge_and_detect_a_death() {
    let n = 100;
    let mut net = Net::mesh(n, 0x1234);
    let took = net
        .run_until(Duration::from_secs(120), Net::converged)
        .expect("100 members converge to full membership");
    let per_node_per_sec = net.bytes_sent as f64 / n as f64 / secs(took);
    println!(
        "gossip: 100 members, each configured with one: full membership after {:.1} s, {:.0} B/s per member while converging",
        secs(took),
        per_node_per_sec
    );
    assert_eq!(net.total("rx_impersonation"), 0);
    for (_, h) in net.alive() {
        assert_eq!(h.m.members(net.now).len(), n);
    }

    // Steady state, once every pair that talks has its session (a first session announces).
    net.run_for(Duration::from_secs(120));
    let before = net.bytes_sent;
    let window = Duration::from_secs(60);
    net.run_for(window);
    assert!(
        net.converged(),
        "no false positives in a minute of steady state"
    );
    let steady = (net.bytes_sent - before) as f64 / n as f64 / secs(window);
    println!("gossip: 100 members, steady state: {steady:.0} B/s per member");

    // A death.
    let victim = 37;
    let victim_key = net.hosts[victim].key;
    let killed_at = net.now;
    net.kill(victim);
    let detected = net
        .run_until(Duration::from_secs(120), |net| {
            net.alive().all(|(_, h)| !h.up.contains(&victim_key))
        })
        .expect("every member marks the dead one down");
    let first = net
        .alive()
        .filter_map(|(_, h)| h.down_at.get(&victim_key))
        .min()
        .map(|t| *t - killed_at)
        .unwrap_or_default();
    println!(
        "gossip: 100 members: killed member down at the first member after {:.1} s, at all after {:.1} s",
        secs(first),
        secs(detected)
    );
    for (_, h) in net.alive() {
        let row = h.m.members(net.now);
        let state = row.iter().find(|s| s.key == victim_key).map(|s| s.state);
        assert_eq!(state, Some(MemberState::Down));
    }
}

#[test]
fn four_members_detect_a_death_in_seconds_and_forget_it_after_the_tombstone() {
    let mut net = Net::mesh(4, 7);
    net.run_until(Duration::from_secs(30), Net::converged)
        .expect("4 members converge");
    net.run_for(Duration::from_secs(10));
    let victim_key = net.hosts[2].key;
    net.kill(2);
    let detected = net
        .run_until(Duration::from_secs(60), |net| {
            net.alive().all(|(_, h)| !h.up.contains(&victim_key))
        })
        .expect("the dead member is detected");
    println!(
        "gossip: 4 members: killed member down at all after {:.1} s",
        secs(detected)
    );
    assert!(detected < Duration::from_secs(15), "took {detected:?}");
    assert!(net.alive().all(|(_, h)| h.forgotten.is_empty()));
    net.run_for(meshd::core::membership::REMOVE_DOWN_AFTER + Duration::from_secs(30));
    for (_, h) in net.alive() {
        assert!(h.forgotten.contains(&victim_key));
        assert!(h.m.members(net.now).iter().all(|s| s.key != victim_key));
    }
    assert!(net.converged(), "the survivors stay up");
}

#[test]
fn lossy_jittery_network_still_converges() {
    let mut net = Net::new(99);
    net.latency = (Duration::from_millis(5), Duration::from_millis(80));
    net.loss_percent = 5;
    for _ in 0..30 {
        net.add(HostSpec::default());
    }
    net.bootstrap_all();
    let took = net
        .run_until(Duration::from_secs(300), Net::converged)
        .expect("30 members converge despite 5% loss");
    println!(
        "gossip: 30 members, 5% loss, 5-80 ms latency: full membership after {:.1} s",
        secs(took)
    );
}

#[test]
fn revocation_spreads_to_all_and_the_key_is_refused_forever() {
    let mut net = Net::new(5);
    net.add(HostSpec {
        admin: true,
        ..HostSpec::default()
    });
    for _ in 1..20 {
        net.add(HostSpec::default());
    }
    net.bootstrap_all();
    net.run_until(Duration::from_secs(60), Net::converged)
        .expect("converged");
    let bad = 7;
    let bad_key = net.hosts[bad].key;
    let unix = net.unix();
    let revocation =
        Revocation::issue(&network(), bad_key, "host-7", unix, unix + 30 * DAY).unwrap();
    let now = net.now;
    net.hosts[0].m.revoke(now, revocation).unwrap();
    net.drain(0);
    let took = net
        .run_until(Duration::from_secs(60), |net| {
            net.alive()
                .filter(|(i, _)| *i != bad)
                .all(|(_, h)| h.revoked.contains(&bad_key) && !h.up.contains(&bad_key))
        })
        .expect("the revocation reaches every member");
    println!(
        "gossip: 20 members: revocation at all after {:.1} s",
        secs(took)
    );
    // The revoked node keeps running and talking; nobody takes it back.
    net.run_for(Duration::from_secs(60));
    for (i, h) in net.alive().filter(|(i, _)| *i != bad) {
        assert!(h.m.is_revoked(&bad_key), "host {i}");
        assert!(!h.up.contains(&bad_key), "host {i}");
    }
    assert!(net.total("rx_from_revoked") > 0, "its messages are ignored");
    // A record it signs later, with a fresh version, is refused too.
    let record = MemberRecord::sign(
        &secret(bad).signing_key(),
        &network().network_id(),
        bad_key,
        1,
        u64::MAX / 2,
        net.hosts[bad].cert.issued_at,
        &[addr(bad)],
    )
    .unwrap();
    let item = member_item(&net.hosts[bad].cert, &record);
    let mut page = vec![SUBTYPE_RECORDS, PAGE_UNSOLICITED];
    page.extend_from_slice(&[0; 32]);
    page.extend_from_slice(&(item.len() as u16).to_le_bytes());
    page.extend_from_slice(&item);
    let (from, now) = (net.hosts[1].key, net.now);
    net.hosts[2].m.handle_message(now, from, &page);
    assert!(net.counter(2, "record_revoked") > 0);
    assert!(net.converged_except(bad));
}

impl Net {
    pub(crate) fn converged_except(&self, gone: usize) -> bool {
        let keys: BTreeSet<PublicKey> = self
            .alive()
            .filter(|(i, _)| *i != gone)
            .map(|(_, h)| h.key)
            .collect();
        self.alive()
            .filter(|(i, _)| *i != gone)
            .all(|(_, h)| h.up.iter().filter(|k| keys.contains(k)).count() + 1 == keys.len())
    }
}

#[test]
fn forged_gossip_from_a_member_is_refused_by_everyone() {
    let mut net = Net::mesh(10, 11);
    net.run_until(Duration::from_secs(60), Net::converged)
        .expect("converged");
    // Host 3 (a valid member) pushes a record about host 5 signed with its own key, and a
    // record for an outsider under a certificate of another network.
    let victim_key = net.hosts[5].key;
    let cert3 = net.hosts[3].cert.clone();
    let forged = MemberRecord::sign(
        &secret(3).signing_key(),
        &network().network_id(),
        victim_key,
        u32::MAX,
        u64::MAX,
        cert3.issued_at,
        &["203.0.113.66:1".parse().unwrap()],
    )
    .unwrap();
    let outsider = StaticSecret::from_bytes([0xee; 32]);
    let rogue = NetworkSecret::from_seed([0xef; 32]);
    let unix = net.unix();
    let rogue_cert = Certificate::issue(
        &rogue,
        "outsider",
        outsider.public_key(),
        outsider.signing_key().public(),
        unix,
        unix + DAY,
        true,
    )
    .unwrap();
    let outsider_record = MemberRecord::sign(
        &outsider.signing_key(),
        &rogue.network_id(),
        outsider.public_key(),
        1,
        1,
        unix,
        &[],
    )
    .unwrap();
    let items = [
        member_item(&cert3, &forged),
        member_item(&rogue_cert, &outsider_record),
    ];
    let from = net.hosts[3].key;
    for j in 0..net.hosts.len() {
        if j == 3 {
            continue;
        }
        let mut page = vec![SUBTYPE_RECORDS, PAGE_UNSOLICITED];
        page.extend_from_slice(&[0; 32]);
        for item in &items {
            page.extend_from_slice(&(item.len() as u16).to_le_bytes());
            page.extend_from_slice(item);
        }
        let now = net.now;
        net.hosts[j].m.handle_message(now, from, &page);
        net.drain(j);
    }
    net.run_for(Duration::from_secs(10));
    assert_eq!(net.total("record_key_mismatch"), 9);
    assert_eq!(net.total("record_wrong_network"), 9);
    assert!(net.converged());
    for (i, h) in net.alive() {
        if i == 5 {
            continue;
        }
        let endpoints =
            h.m.members(net.now)
                .into_iter()
                .find(|s| s.key == victim_key)
                .map(|s| s.endpoints);
        assert_eq!(
            endpoints,
            Some(vec![addr(5)]),
            "host {i} kept the genuine record"
        );
        assert!(!h.up.contains(&outsider.public_key()));
    }
}

#[test]
fn restarted_member_rejoins_with_a_higher_generation() {
    let mut net = Net::mesh(10, 21);
    net.run_until(Duration::from_secs(60), Net::converged)
        .expect("converged");
    let i = 4;
    let key = net.hosts[i].key;
    let old_generation = net.hosts[i].m.identity().generation;
    net.kill(i);
    net.run_until(Duration::from_secs(60), |net| {
        net.alive().all(|(_, h)| !h.up.contains(&key))
    })
    .expect("its death is noticed");
    net.run_for(Duration::from_secs(20));
    // Same key, later clock: a higher generation and record version. It knows only host 0.
    net.restart(i, 0);
    assert!(net.hosts[i].m.identity().generation > old_generation);
    let took = net
        .run_until(Duration::from_secs(60), Net::converged)
        .expect("the restarted member is back everywhere, and knows everyone");
    println!(
        "gossip: 10 members: restarted member back at all after {:.1} s",
        secs(took)
    );
}

#[test]
fn certificates_are_renewed_by_an_admin_before_they_expire() {
    let lifetime = Duration::from_secs(30 * 60);
    let mut net = Net::new(31);
    net.add(HostSpec {
        admin: true,
        cert_lifetime: lifetime,
    });
    for _ in 1..5 {
        net.add(HostSpec {
            admin: false,
            cert_lifetime: lifetime,
        });
    }
    net.bootstrap_all();
    net.run_until(Duration::from_secs(60), Net::converged)
        .expect("converged");
    let first_expiry: Vec<u64> = net.hosts.iter().map(|h| h.cert.expires_at).collect();
    // Renewal starts when a third of the life is left (at 20 minutes); run to 25.
    net.run_for(Duration::from_secs(25 * 60) - net.elapsed());
    let now_unix = net.unix();
    for (i, h) in net.alive() {
        assert_eq!(h.renewed.len(), 1, "host {i} renewed once");
        assert!(h.cert.expires_at > first_expiry[i]);
        assert!(
            now_unix < first_expiry[i],
            "renewed before the old one expired"
        );
        assert_eq!(h.m.certificate().expires_at, h.cert.expires_at);
    }
    assert_eq!(
        net.counter(0, "renewals_issued"),
        4,
        "the admin renewed the others"
    );
    assert_eq!(
        net.counter(0, "renew_requests_sent"),
        0,
        "and itself, locally"
    );
    // Everyone learned everyone's new certificate through the re-signed records, and nobody
    // dropped anyone when the old certificates expired.
    net.run_for(Duration::from_secs(10 * 60));
    assert!(net.converged());
    for (i, h) in net.alive() {
        for (j, other) in net.alive() {
            if i != j {
                assert_eq!(
                    h.certs_seen.get(&other.key).map(|c| c.expires_at),
                    Some(other.cert.expires_at),
                    "host {i} knows host {j}'s renewed certificate"
                );
            }
        }
    }
}
