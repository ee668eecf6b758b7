//! Membership at scale: real `Membership` state machines on a virtual network (virtual clock,
//! 5-25 ms one-way latency, no loss), measuring what the lead needs to size meshes:
//!
//! * **join**: one new member, configured with one random member, joins a converged mesh: time
//!   until every member reports it up, and until it reports every member up;
//! * **death**: a member stops: time until every other member reports it down;
//! * **gossip**: membership bytes each member sends per second in steady state (60 s window
//!   after 30 s of warm-up);
//! * **memory**: bytes a member allocates per known member (counting allocator, one fresh
//!   member taking over a full verified table).
//!
//! `cargo bench --bench membership -- [N...]` (default: 100 1000 10000). Small meshes bootstrap
//! for real (every member configured with one other); larger ones start converged: one member
//! verifies every record once and the others take its verified table over
//! (`Membership::adopt_verified_state`), which skips N² signature checks but nothing else.
//! A mesh whose full simulation would not fit the memory budget (`MESHD_BENCH_MEM_MB`,
//! default 4096; every member holds every other member's record, so the state is N²) is
//! measured in part: memory per member and the newcomer's table pull are measured at full
//! size against one real member holding all N records (the rest of the mesh answering probes
//! as stubs); the mesh-wide numbers are extrapolated from the largest full simulation, linear
//! in log10(N) as SWIM's dissemination is, and marked `≈`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, Instant};

use bytes::BufMut;
use foca::{Codec as _, Header, Message};
use meshd::core::membership::{
    foca_config, member_item, MemberId, MemberRecord, Membership, MembershipConfig,
    MembershipEvent, WireCodec, MAX_PAYLOAD, PAGE_UNSOLICITED, SUBTYPE_FOCA, SUBTYPE_RECORDS,
};
use meshd_crypto::{Certificate, NetworkSecret, PublicKey, StaticSecret};

// ------------------------------------------------------------------------ counting allocator

struct Counting;

static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE_BYTES.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn live_bytes() -> isize {
    LIVE_BYTES.load(Ordering::Relaxed)
}

// -------------------------------------------------------------------------------- fixtures

const UNIX0: u64 = 1_800_000_000;
const LIFETIME: u64 = 30 * 24 * 60 * 60;
/// Meshes up to this size bootstrap for real (each member configured with one other).
const BOOTSTRAP_MAX: usize = 100;

fn secret(i: usize) -> StaticSecret {
    let mut bytes = [0x3c; 32];
    bytes[1..9].copy_from_slice(&(i as u64).to_le_bytes());
    StaticSecret::from_bytes(bytes)
}

fn addr(i: usize) -> SocketAddr {
    SocketAddr::from(([10, (i >> 16) as u8, (i >> 8) as u8, i as u8], 6655))
}

fn network() -> NetworkSecret {
    NetworkSecret::from_seed([0x77; 32])
}

fn certificate(net: &NetworkSecret, i: usize) -> Certificate {
    let s = secret(i);
    Certificate::issue(
        net,
        &format!("host-{i}"),
        s.public_key(),
        s.signing_key().public(),
        UNIX0,
        UNIX0 + LIFETIME,
        false,
    )
    .expect("valid certificate")
}

fn membership(
    net: &NetworkSecret,
    i: usize,
    cert: Certificate,
    now: Instant,
    unix: u64,
) -> Membership {
    let mut seed = [0u8; 32];
    seed[..8].copy_from_slice(&(i as u64).to_le_bytes());
    Membership::new(MembershipConfig {
        network: net.network_id(),
        certificate: cert,
        signing_key: secret(i).signing_key(),
        network_secret: None,
        endpoints: vec![addr(i)],
        revocations: Vec::new(),
        now,
        unix_secs_at_now: unix,
        rng_seed: seed,
        certificate_lifetime: Duration::from_secs(LIFETIME),
    })
}

/// xorshift64 for the network's own choices.
struct NetRng(u64);

impl NetRng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

// ---------------------------------------------------------------------------- the network

struct Host {
    m: Membership,
    key: PublicKey,
    alive: bool,
    /// Distinct members this host reports up (tracked for all hosts only while bootstrapping,
    /// and for the newcomer).
    up: Option<HashSet<PublicKey>>,
    knows_newcomer: bool,
    saw_victim_down: bool,
    scheduled: Option<Instant>,
}

struct Msg {
    at: Instant,
    seq: u64,
    to: usize,
    from: PublicKey,
    payload: Vec<u8>,
}

impl PartialEq for Msg {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Msg {}
impl PartialOrd for Msg {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Msg {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

struct Net {
    start: Instant,
    now: Instant,
    hosts: Vec<Host>,
    certs: Vec<Certificate>,
    by_key: HashMap<PublicKey, usize>,
    flight: BinaryHeap<Reverse<Msg>>,
    timers: BinaryHeap<Reverse<(Instant, usize)>>,
    seq: u64,
    rng: NetRng,
    bytes: u64,
    /// Pairs with a session; `None` means every pair has one (a converged mesh).
    sessions: Option<HashSet<(usize, usize)>>,
    /// Pairs involving these hosts get `session_established` on first contact even when
    /// `sessions` is `None`.
    fresh: HashSet<usize>,
    fresh_sessions: HashSet<(usize, usize)>,
    newcomer: Option<PublicKey>,
    victim: Option<PublicKey>,
    /// Keys of stub members: alive, acking pings, nothing else.
    stubs: HashMap<PublicKey, MemberId>,
}

impl Net {
    fn unix(&self) -> u64 {
        UNIX0 + self.now.duration_since(self.start).as_secs()
    }

    fn schedule(&mut self, i: usize) {
        let h = &mut self.hosts[i];
        if !h.alive {
            return;
        }
        if let Some(t) = h.m.poll_timeout() {
            if h.scheduled.is_none_or(|s| t < s || s <= self.now) {
                h.scheduled = Some(t);
                self.timers.push(Reverse((t, i)));
            }
        }
    }

    fn drain(&mut self, i: usize) {
        let mut sends = Vec::new();
        let (newcomer, victim) = (self.newcomer, self.victim);
        {
            let h = &mut self.hosts[i];
            while let Some(t) = h.m.poll_transmit() {
                sends.push(t);
            }
            while let Some(event) = h.m.poll_event() {
                match event {
                    MembershipEvent::MemberUp { key, .. } => {
                        if let Some(up) = h.up.as_mut() {
                            up.insert(key);
                        }
                        if Some(key) == newcomer {
                            h.knows_newcomer = true;
                        }
                    }
                    MembershipEvent::MemberDown { key } => {
                        if let Some(up) = h.up.as_mut() {
                            up.remove(&key);
                        }
                        if Some(key) == victim {
                            h.saw_victim_down = true;
                        }
                    }
                    _ => {}
                }
            }
        }
        for (to, payload) in sends {
            self.send(i, to, payload);
        }
        self.schedule(i);
    }

    fn open_session(&mut self, i: usize, j: usize) {
        let pair = (i.min(j), i.max(j));
        let new = match self.sessions.as_mut() {
            Some(s) => s.insert(pair),
            None => {
                (self.fresh.contains(&i) || self.fresh.contains(&j))
                    && self.fresh_sessions.insert(pair)
            }
        };
        if !new {
            return;
        }
        let now = self.now;
        let (ci, cj) = (self.certs[i].clone(), self.certs[j].clone());
        self.hosts[i].m.session_established(now, &cj, addr(j));
        self.hosts[j].m.session_established(now, &ci, addr(i));
        self.drain(i);
        self.drain(j);
    }

    fn send(&mut self, i: usize, to: PublicKey, payload: Vec<u8>) {
        assert!(payload.len() <= MAX_PAYLOAD);
        self.bytes += payload.len() as u64;
        if let Some(stub) = self.stubs.get(&to).copied() {
            self.stub_answer(i, stub, &payload);
            return;
        }
        let Some(&j) = self.by_key.get(&to) else {
            return;
        };
        if !self.hosts[j].alive {
            return;
        }
        self.open_session(i, j);
        let at = self.now + Duration::from_micros(5_000 + self.rng.below(20_001));
        self.seq += 1;
        let from = self.hosts[i].key;
        self.flight.push(Reverse(Msg {
            at,
            seq: self.seq,
            to: j,
            from,
            payload,
        }));
    }

    /// A stub member acks every ping it gets, after the same latency as a real one.
    fn stub_answer(&mut self, i: usize, stub: MemberId, payload: &[u8]) {
        if payload.first() != Some(&SUBTYPE_FOCA) {
            return;
        }
        let Ok(header) = WireCodec::peek_header(&payload[1..]) else {
            return;
        };
        let Message::Ping(n) = header.message else {
            return;
        };
        let ack = Header {
            src: stub,
            src_incarnation: 0,
            dst: header.src,
            message: Message::Ack(n),
        };
        let mut out = vec![SUBTYPE_FOCA];
        WireCodec
            .encode_header(&ack, &mut out)
            .expect("ack encodes");
        out.put_u16(0);
        let at = self.now + Duration::from_micros(10_000 + self.rng.below(40_001));
        self.seq += 1;
        self.flight.push(Reverse(Msg {
            at,
            seq: self.seq,
            to: i,
            from: stub.key,
            payload: out,
        }));
    }

    fn step(&mut self, limit: Instant) -> bool {
        let next_msg = self.flight.peek().map(|Reverse(m)| m.at);
        let next_timer = self.timers.peek().map(|Reverse((t, _))| *t);
        match (next_msg, next_timer) {
            (Some(m), t) if m <= limit && t.is_none_or(|t| m <= t) => {
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
            (_, Some(t)) if t <= limit => {
                let Some(Reverse((t, i))) = self.timers.pop() else {
                    return false;
                };
                self.now = self.now.max(t);
                if self.hosts[i].scheduled == Some(t) {
                    self.hosts[i].scheduled = None;
                }
                if self.hosts[i].alive {
                    let now = self.now;
                    self.hosts[i].m.handle_timeout(now);
                    self.drain(i);
                }
                true
            }
            _ => {
                self.now = self.now.max(limit);
                false
            }
        }
    }

    fn run_for(&mut self, d: Duration) {
        let limit = self.now + d;
        while self.step(limit) {}
    }

    fn run_until(&mut self, limit: Duration, done: impl Fn(&Net) -> bool) -> Option<Duration> {
        let began = self.now;
        let deadline = began + limit;
        while self.now < deadline {
            if done(self) {
                return Some(self.now - began);
            }
            let slice = (self.now + Duration::from_millis(100)).min(deadline);
            while self.step(slice) {}
        }
        done(self).then(|| self.now - began)
    }
}

/// Every host's own record, as it signs it (records are deterministic: same bytes).
fn own_item(net: &NetworkSecret, m: &Membership, i: usize, cert: &Certificate) -> Vec<u8> {
    let record = MemberRecord::sign(
        &secret(i).signing_key(),
        &net.network_id(),
        m.public_key(),
        m.identity().generation,
        m.record_version(),
        cert.issued_at,
        &[addr(i)],
    )
    .expect("record signs");
    member_item(cert, &record)
}

/// Feeds `items` to `m` as unsolicited record pages from `from`.
fn feed(m: &mut Membership, now: Instant, from: PublicKey, items: &[Vec<u8>]) {
    let mut page = Vec::new();
    let flush = |m: &mut Membership, page: &mut Vec<u8>| {
        if page.len() > 34 {
            m.handle_message(now, from, page);
        }
        page.clear();
    };
    for item in items {
        if page.is_empty() {
            page.extend_from_slice(&[SUBTYPE_RECORDS, PAGE_UNSOLICITED]);
            page.extend_from_slice(&[0; 32]);
        }
        if page.len() + 2 + item.len() > MAX_PAYLOAD {
            flush(m, &mut page);
            page.extend_from_slice(&[SUBTYPE_RECORDS, PAGE_UNSOLICITED]);
            page.extend_from_slice(&[0; 32]);
        }
        page.extend_from_slice(&(item.len() as u16).to_le_bytes());
        page.extend_from_slice(item);
    }
    flush(m, &mut page);
    while m.poll_transmit().is_some() {}
    while m.poll_event().is_some() {}
}

// ---------------------------------------------------------------------------- measurement

#[derive(Default, Clone)]
struct Row {
    n: usize,
    mode: &'static str,
    bootstrap: Option<Duration>,
    bootstrap_bytes_per_sec: Option<f64>,
    join_all_know: Option<Duration>,
    join_knows_all: Option<Duration>,
    death: Option<Duration>,
    bytes_per_sec: Option<f64>,
    bytes_per_member: f64,
    extrapolated: bool,
    wall: Duration,
}

fn build(n: usize, seed: u64) -> Net {
    let start = Instant::now();
    let net_key = network();
    let certs: Vec<Certificate> = (0..=n).map(|i| certificate(&net_key, i)).collect();
    let hosts: Vec<Host> = (0..n)
        .map(|i| Host {
            m: membership(&net_key, i, certs[i].clone(), start, UNIX0),
            key: secret(i).public_key(),
            alive: true,
            up: None,
            knows_newcomer: false,
            saw_victim_down: false,
            scheduled: None,
        })
        .collect();
    let by_key = hosts.iter().enumerate().map(|(i, h)| (h.key, i)).collect();
    Net {
        start,
        now: start,
        hosts,
        certs,
        by_key,
        flight: BinaryHeap::new(),
        timers: BinaryHeap::new(),
        seq: 0,
        rng: NetRng(seed),
        bytes: 0,
        sessions: None,
        fresh: HashSet::new(),
        fresh_sessions: HashSet::new(),
        newcomer: None,
        victim: None,
        stubs: HashMap::new(),
    }
}

/// Host 0 verifies every other host's record once.
fn verify_all_at_host0(net: &mut Net) {
    let net_key = network();
    let items: Vec<Vec<u8>> = (1..net.hosts.len())
        .map(|i| own_item(&net_key, &net.hosts[i].m, i, &net.certs[i]))
        .collect();
    let (now, from) = (net.now, net.hosts[1].key);
    feed(&mut net.hosts[0].m, now, from, &items);
}

/// Bytes one fresh member allocates to take over `donor`'s table, per member.
fn memory_per_member(donor: &Membership, n: usize, now: Instant) -> f64 {
    let net_key = network();
    let cert = certificate(&net_key, n + 7);
    let before = live_bytes();
    let mut m = membership(&net_key, n + 7, cert, now, UNIX0);
    m.adopt_verified_state(now, donor);
    while m.poll_transmit().is_some() {}
    while m.poll_event().is_some() {}
    let after = live_bytes();
    let per = (after - before) as f64 / n as f64;
    drop(m);
    per
}

/// Adds the newcomer (host `n`), configured with one random member.
fn add_newcomer(net: &mut Net, n: usize, peer: usize) -> usize {
    let j = n;
    let net_key = network();
    let unix = net.unix();
    let m = membership(&net_key, j, net.certs[j].clone(), net.now, unix);
    let key = m.public_key();
    net.hosts.push(Host {
        m,
        key,
        alive: true,
        up: Some(HashSet::new()),
        knows_newcomer: false,
        saw_victim_down: false,
        scheduled: None,
    });
    net.by_key.insert(key, j);
    net.newcomer = Some(key);
    net.fresh.insert(j);
    net.drain(j);
    net.open_session(j, peer);
    j
}

fn knows_all(net: &Net, j: usize, n: usize) -> bool {
    net.hosts[j].up.as_ref().is_some_and(|u| u.len() == n)
}

/// A converged mesh of `n` members, every one of them simulated.
fn full(n: usize) -> Row {
    let wall = Instant::now();
    let mut row = Row {
        n,
        ..Row::default()
    };
    let mut net = build(n, 0x5eed ^ n as u64);
    if n <= BOOTSTRAP_MAX {
        row.mode = "full, bootstrapped";
        for h in &mut net.hosts {
            h.up = Some(HashSet::new());
        }
        net.sessions = Some(HashSet::new());
        for i in 0..n {
            net.drain(i);
        }
        for i in 0..n {
            let j = if i == 0 {
                1
            } else {
                net.rng.below(i as u64) as usize
            };
            net.open_session(i, j);
        }
        let before = net.bytes;
        row.bootstrap = net.run_until(Duration::from_secs(600), |net| {
            net.hosts.iter().all(|h| {
                h.up.as_ref()
                    .is_some_and(|u| u.len() + 1 == net.hosts.len())
            })
        });
        if let Some(took) = row.bootstrap {
            row.bootstrap_bytes_per_sec =
                Some((net.bytes - before) as f64 / n as f64 / took.as_secs_f64());
        }
        for h in &mut net.hosts {
            h.up = None;
        }
        net.sessions = None;
    } else {
        row.mode = "full, seeded";
        verify_all_at_host0(&mut net);
        let now = net.now;
        let (donor, rest) = net.hosts.split_at_mut(1);
        for h in rest {
            h.m.adopt_verified_state(now, &donor[0].m);
            while h.m.poll_event().is_some() {}
        }
        for i in 0..n {
            net.drain(i);
        }
    }
    row.bytes_per_member = memory_per_member(&net.hosts[0].m, n, net.now);

    // Steady state.
    net.run_for(Duration::from_secs(30));
    let before = net.bytes;
    let window = Duration::from_secs(60);
    net.run_for(window);
    row.bytes_per_sec = Some((net.bytes - before) as f64 / n as f64 / window.as_secs_f64());

    // Join.
    let peer = net.rng.below(n as u64) as usize;
    let j = add_newcomer(&mut net, n, peer);
    let began = net.now;
    let deadline = began + Duration::from_secs(300);
    while net.now < deadline && (row.join_all_know.is_none() || row.join_knows_all.is_none()) {
        let slice = net.now + Duration::from_millis(50);
        while net.step(slice) {}
        if row.join_all_know.is_none() && net.hosts[..n].iter().all(|h| h.knows_newcomer) {
            row.join_all_know = Some(net.now - began);
        }
        if row.join_knows_all.is_none() && knows_all(&net, j, n) {
            row.join_knows_all = Some(net.now - began);
        }
    }

    // Death.
    net.run_for(Duration::from_secs(10));
    let victim = net.rng.below(n as u64) as usize;
    net.victim = Some(net.hosts[victim].key);
    net.hosts[victim].alive = false;
    row.death = net.run_until(Duration::from_secs(300), |net| {
        net.hosts
            .iter()
            .enumerate()
            .all(|(i, h)| i == victim || !h.alive || h.saw_victim_down)
    });
    row.wall = wall.elapsed();
    row
}

/// A mesh too large to simulate whole: memory per member and the newcomer's pull of the full
/// table are measured at size `n` against one real member holding every record (the others
/// answer probes as stubs); the rest is extrapolated from `fit`.
fn partial(n: usize, fit: &[Row]) -> Row {
    let wall = Instant::now();
    let mut row = Row {
        n,
        mode: "partial",
        extrapolated: true,
        ..Row::default()
    };
    let mut net = build(n, 0x5eed ^ n as u64);
    verify_all_at_host0(&mut net);
    row.bytes_per_member = memory_per_member(&net.hosts[0].m, n, net.now);
    for i in 1..n {
        let id = net.hosts[i].m.identity();
        net.stubs.insert(id.key, id);
        net.hosts[i].alive = false;
    }
    net.drain(0);
    net.run_for(Duration::from_secs(5));
    let j = add_newcomer(&mut net, n, 0);
    row.join_knows_all = net.run_until(Duration::from_secs(600), |net| knows_all(net, j, n));
    let extrapolate = |value: &dyn Fn(&Row) -> Option<f64>| -> Option<f64> {
        let points: Vec<(f64, f64)> = fit
            .iter()
            .filter_map(|r| value(r).map(|v| ((r.n as f64).log10(), v)))
            .collect();
        let [.., (x0, y0), (x1, y1)] = points[..] else {
            return None;
        };
        let slope = (y1 - y0) / (x1 - x0);
        Some(y1 + slope * ((n as f64).log10() - x1))
    };
    row.join_all_know =
        extrapolate(&|r| r.join_all_know.map(|d| d.as_secs_f64())).map(Duration::from_secs_f64);
    // Detection is the suspicion timeout (a step function of log10 N, known exactly) plus
    // probing and dissemination, which is what gets extrapolated.
    let suspicion = |n: usize| foca_config(n).suspect_to_down_after.as_secs_f64();
    row.death = extrapolate(&|r| r.death.map(|d| d.as_secs_f64() - suspicion(r.n)))
        .map(|rest| Duration::from_secs_f64(rest + suspicion(n)));
    row.bytes_per_sec = extrapolate(&|r| r.bytes_per_sec);
    row.wall = wall.elapsed();
    row
}

fn fmt_secs(d: Option<Duration>, approx: bool) -> String {
    match d {
        Some(d) => format!("{}{:.1} s", if approx { "≈" } else { "" }, d.as_secs_f64()),
        None => "not reached".to_string(),
    }
}

fn main() {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sizes = if sizes.is_empty() {
        vec![100, 1_000, 10_000]
    } else {
        sizes
    };
    let budget_mb: f64 = std::env::var("MESHD_BENCH_MEM_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4096.0);
    let config = foca_config(1);
    println!(
        "membership at scale: probe {:?}, probe rtt {:?}, latency 5-25 ms one way, no loss",
        config.probe_period, config.probe_rtt
    );
    let mut rows: Vec<Row> = Vec::new();
    for n in sizes {
        // Every member holds every other member's record: about n² × (bytes per member).
        let estimate_mb = (n * n) as f64 * 1_000.0 / 1e6;
        let row = if estimate_mb <= budget_mb {
            full(n)
        } else {
            let fit: Vec<Row> = rows.iter().filter(|r| !r.extrapolated).cloned().collect();
            partial(n, &fit)
        };
        eprintln!(
            "n={} done in {:.1} s of wall time ({})",
            row.n,
            row.wall.as_secs_f64(),
            row.mode
        );
        rows.push(row);
    }
    println!();
    println!("| members | simulation | bootstrap (each knows one) | join: all know it | join: it knows all | death seen by all | gossip B/s per member | memory per member |");
    println!("|---:|---|---:|---:|---:|---:|---:|---:|");
    for r in &rows {
        let bootstrap = match (r.bootstrap, r.bootstrap_bytes_per_sec) {
            (Some(d), Some(b)) => format!("{:.1} s ({:.0} B/s)", d.as_secs_f64(), b),
            _ => "—".to_string(),
        };
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {:.0} B |",
            r.n,
            r.mode,
            bootstrap,
            fmt_secs(r.join_all_know, r.extrapolated),
            fmt_secs(r.join_knows_all, false),
            fmt_secs(r.death, r.extrapolated),
            r.bytes_per_sec
                .map(|b| format!("{}{b:.0}", if r.extrapolated { "≈" } else { "" }))
                .unwrap_or_else(|| "—".into()),
            r.bytes_per_member
        );
    }
}
