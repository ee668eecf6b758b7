//! The data-plane scenarios (issue 2 point 8), each a function that runs on an already built topology, prints what
//! it did, and panics with a message naming the containers and what was observed when it fails.
//!
//! Every wait is bounded: commands have deadlines, socket jobs use socket timeouts plus a join deadline.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::cmd::{self, exec_in, ip_in};
use super::mesh::{drop_counters, Mesh};
use super::nsthread;
use super::packet::{self, PacketSocket, ETHERTYPE_EXPERIMENTAL};
use super::prng::SplitMix64;
use super::topology::{poll_until, Container, Topology, MESHD_PORT, UNDERLAY_SELF};

const PING_ATTEMPTS: usize = 3;
const TCP_PORT: u16 = 5001;
const BROADCAST_PORT: u16 = 5002;
const TRANSFER_BYTES: usize = 50 * 1024 * 1024;
const TRANSFER_SEED: u64 = 0x6d65_7368_645f_6974;
const VLAN_ID: u16 = 42;
const MOVE_DEADLINE: Duration = Duration::from_secs(10);
const FLOOD_DURATION: Duration = Duration::from_secs(3);
/// Garbage datagrams per second, summed over all nodes: enough to exercise every drop path many
/// thousand times without turning a 2-core CI machine into a CPU benchmark.
const FLOOD_RATE: u64 = 20_000;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn flag(self) -> &'static str {
        match self {
            Family::V4 => "-4",
            Family::V6 => "-6",
        }
    }

    pub fn addr(self, c: &Container) -> IpAddr {
        match self {
            Family::V4 => IpAddr::V4(c.ipv4),
            Family::V6 => IpAddr::V6(c.ipv6),
        }
    }
}

/// `ping` from namespace `from_ns`: `count` echo requests `interval` seconds apart, waiting up to 2 s
/// for the last reply.
fn ping_command(
    from_ns: &str,
    family: Family,
    to: IpAddr,
    count: u32,
    interval: &str,
) -> std::process::Command {
    ping_command_waiting(from_ns, family, to, count, interval, "2")
}

fn ping_command_waiting(
    from_ns: &str,
    family: Family,
    to: IpAddr,
    count: u32,
    interval: &str,
    wait: &str,
) -> std::process::Command {
    let (count, to) = (count.to_string(), to.to_string());
    exec_in(
        from_ns,
        "ping",
        &[
            family.flag(),
            "-n",
            "-q",
            "-c",
            &count,
            "-i",
            interval,
            "-W",
            wait,
            &to,
        ],
    )
}

/// One round of single pings (1 s wait), all pairs in parallel: whether each pair got its reply. A
/// round takes about 1 s when pings fail, much less when they all succeed.
pub fn ping_round(pairs: &[(&Container, &Container)], family: Family) -> Vec<bool> {
    let running: Vec<_> = pairs
        .iter()
        .map(|(a, b)| {
            cmd::spawn(ping_command_waiting(
                &a.ns,
                family,
                family.addr(b),
                1,
                "0.2",
                "1",
            ))
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(5);
    running
        .into_iter()
        .map(|r| r.wait_until(deadline).success())
        .collect()
}

/// Pings (over `family`) in rounds over `pairs` until one round has every reply, or `bound` passes; the time from
/// `since` to the end of that round.
pub fn until_all_reach(
    pairs: &[(&Container, &Container)],
    family: Family,
    since: Instant,
    bound: Duration,
) -> Result<Duration, String> {
    loop {
        let replies = ping_round(pairs, family);
        if replies.iter().all(|r| *r) {
            return Ok(since.elapsed());
        }
        if since.elapsed() > bound {
            let failing: Vec<String> = pairs
                .iter()
                .zip(&replies)
                .filter(|(_, ok)| !**ok)
                .map(|((a, b), _)| format!("{} -> {}", a.name, b.name))
                .collect();
            return Err(format!(
                "after {bound:?} still no {family:?} reply on {}",
                failing.join(", ")
            ));
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// Every ordered pair (a, b) with a in `from` and b in `to`.
pub fn pairs<'a>(
    from: &[&'a Container],
    to: &[&'a Container],
) -> Vec<(&'a Container, &'a Container)> {
    from.iter()
        .flat_map(|a| to.iter().map(move |b| (*a, *b)))
        .filter(|(a, b)| a.name != b.name)
        .collect()
}

/// One ping exchange (up to 2 echo requests, success when any reply arrives).
fn ping_once(from: &Container, family: Family, to: IpAddr) -> cmd::Output {
    cmd::run(
        ping_command(&from.ns, family, to, 2, "0.2"),
        Duration::from_secs(10),
    )
}

/// Every ordered container pair pings over IPv4 and IPv6; pings run in parallel, and failures are
/// retried (the first packets of a pair also resolve ARP/NDP and teach every switch on the way).
pub fn ping_matrix(topo: &Topology, when: &str) {
    for family in [Family::V4, Family::V6] {
        let started = Instant::now();
        let mut pending: Vec<(&Container, &Container)> = topo
            .containers
            .iter()
            .flat_map(|a| topo.containers.iter().map(move |b| (a, b)))
            .filter(|(a, b)| a.name != b.name)
            .collect();
        let total = pending.len();
        let mut retried = 0;
        let mut last_failures = Vec::new();
        for attempt in 1..=PING_ATTEMPTS {
            let running: Vec<_> = pending
                .iter()
                .map(|(a, b)| cmd::spawn(ping_command(&a.ns, family, family.addr(b), 2, "0.2")))
                .collect();
            let deadline = Instant::now() + Duration::from_secs(10);
            let outputs: Vec<_> = running
                .into_iter()
                .map(|r| r.wait_until(deadline))
                .collect();
            let mut still_failing = Vec::new();
            last_failures.clear();
            for ((a, b), out) in pending.iter().zip(outputs) {
                if !out.success() {
                    last_failures.push(format!(
                        "{} -> {} ({}) on attempt {attempt}: {}",
                        a.name,
                        b.name,
                        family.addr(b),
                        out.describe()
                    ));
                    still_failing.push((*a, *b));
                }
            }
            if attempt == 1 {
                retried = still_failing.len();
            }
            pending = still_failing;
            if pending.is_empty() {
                break;
            }
        }
        assert!(
            pending.is_empty(),
            "{family:?} ping {when}: {} of {total} container pairs never got a reply:\n{}",
            pending.len(),
            last_failures.join("\n")
        );
        println!(
            "  {family:?}: all {total} ordered container pairs ping ({retried} needed a retry) in {:.1?}",
            started.elapsed()
        );
    }
}

/// Sends `TRANSFER_BYTES` of seeded pseudo-random data over TCP from one container to another and
/// compares the SHA-256 both ends computed.
pub fn tcp_transfer(topo: &Topology, from: &str, to: &str) {
    tcp_transfer_of(topo, from, to, TRANSFER_BYTES);
}

/// `tcp_transfer` of `bytes` bytes.
pub fn tcp_transfer_of(topo: &Topology, from: &str, to: &str, bytes: usize) {
    let (src, dst) = (topo.container(from), topo.container(to));
    let addr = SocketAddr::new(IpAddr::V4(dst.ipv4), TCP_PORT);
    let (ready_tx, ready_rx) = mpsc::channel();
    let receiver = nsthread::spawn(&dst.ns, &format!("tcp-recv-{to}"), move || {
        let listener = TcpListener::bind(addr).map_err(|e| format!("bind {addr}: {e}"))?;
        listener.set_nonblocking(true).map_err(|e| e.to_string())?;
        let _ = ready_tx.send(());
        let accept_deadline = Instant::now() + Duration::from_secs(15);
        let (mut stream, peer) = loop {
            match listener.accept() {
                Ok(conn) => break conn,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if Instant::now() > accept_deadline {
                        return Err("no connection within 15 s".into());
                    }
                    thread::sleep(Duration::from_millis(10));
                }
                Err(e) => return Err(format!("accept: {e}")),
            }
        };
        stream.set_nonblocking(false).map_err(|e| e.to_string())?;
        stream
            .set_read_timeout(Some(Duration::from_secs(15)))
            .map_err(|e| e.to_string())?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 256 * 1024];
        let mut total = 0usize;
        loop {
            let n = stream
                .read(&mut buf)
                .map_err(|e| format!("read after {total} bytes from {peer}: {}", io_error(&e)))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            total += n;
        }
        Ok((total, hasher.finalize()))
    });
    ready_rx
        .recv_timeout(Duration::from_secs(5))
        .expect("TCP receiver did not start listening within 5 s");
    let started = Instant::now();
    let sender = nsthread::spawn(&src.ns, &format!("tcp-send-{from}"), move || {
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .map_err(|e| format!("connect {addr}: {e}"))?;
        stream
            .set_write_timeout(Some(Duration::from_secs(15)))
            .map_err(|e| e.to_string())?;
        let mut rng = SplitMix64::new(TRANSFER_SEED);
        let mut hasher = Sha256::new();
        let mut chunk = vec![0u8; 64 * 1024];
        let mut sent = 0usize;
        while sent < bytes {
            let len = chunk.len().min(bytes - sent);
            rng.fill(&mut chunk[..len]);
            hasher.update(&chunk[..len]);
            stream
                .write_all(&chunk[..len])
                .map_err(|e| format!("write after {sent} bytes: {}", io_error(&e)))?;
            sent += len;
        }
        stream
            .shutdown(std::net::Shutdown::Write)
            .map_err(|e| format!("shutdown: {e}"))?;
        Ok((sent, hasher.finalize()))
    });
    // The sender's error (e.g. connect failed) explains more than the receiver's accept timeout.
    let (sent_bytes, sent_hash) = sender
        .join(Duration::from_secs(120))
        .unwrap_or_else(|e| panic!("TCP {from} -> {to}: sender failed: {e}"));
    let (recv_bytes, recv_hash) = receiver
        .join(Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("TCP {from} -> {to}: receiver failed: {e}"));
    let elapsed = started.elapsed();
    assert_eq!(
        recv_bytes, sent_bytes,
        "TCP {from} -> {to}: receiver got {recv_bytes} bytes, sender sent {sent_bytes}"
    );
    assert_eq!(
        hex(&recv_hash),
        hex(&sent_hash),
        "TCP {from} -> {to}: SHA-256 of received data differs from what was sent"
    );
    println!(
        "  {} MiB {from} ({}) -> {to} ({}) in {elapsed:.1?} ({:.0} Mbit/s), SHA-256 {} on both ends",
        sent_bytes >> 20,
        src.ipv4,
        dst.ipv4,
        sent_bytes as f64 * 8.0 / elapsed.as_secs_f64() / 1e6,
        &hex(&sent_hash)[..16]
    );
}

/// Socket timeouts surface as EAGAIN; say what they mean.
fn io_error(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
            "timed out (no progress for 15 s)".to_string()
        }
        _ => e.to_string(),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A UDP broadcast to 10.77.0.255 from one container reaches a listener in each of the others.
pub fn broadcast(topo: &Topology, from: &str) {
    let token = format!(
        "meshd-it broadcast {} {:?}",
        std::process::id(),
        Instant::now()
    );
    let (ready_tx, ready_rx) = mpsc::channel();
    let listeners: Vec<_> = topo
        .containers
        .iter()
        .filter(|c| c.name != from)
        .map(|c| {
            let (token, ready) = (token.clone(), ready_tx.clone());
            let job = nsthread::spawn(&c.ns, &format!("bcast-listen-{}", c.name), move || {
                let sock = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, BROADCAST_PORT))
                    .map_err(|e| format!("bind 0.0.0.0:{BROADCAST_PORT}: {e}"))?;
                sock.set_read_timeout(Some(Duration::from_millis(200)))
                    .map_err(|e| e.to_string())?;
                let _ = ready.send(());
                let deadline = Instant::now() + Duration::from_secs(5);
                let mut buf = [0u8; 1500];
                while Instant::now() < deadline {
                    if let Ok((n, src)) = sock.recv_from(&mut buf) {
                        if &buf[..n] == token.as_bytes() {
                            return Ok(src);
                        }
                    }
                }
                Err("no broadcast received within 5 s".to_string())
            });
            (c.name.clone(), job)
        })
        .collect();
    drop(ready_tx);
    for _ in &listeners {
        ready_rx
            .recv_timeout(Duration::from_secs(5))
            .expect("a broadcast listener did not bind within 5 s");
    }
    let target = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 77, 0, 255)), BROADCAST_PORT);
    let payload = token.clone();
    let sender = nsthread::spawn(
        &topo.container(from).ns,
        &format!("bcast-send-{from}"),
        move || {
            let sock = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).map_err(|e| e.to_string())?;
            sock.set_broadcast(true).map_err(|e| e.to_string())?;
            // A few copies: the first may race an ARP-less path warming up; one is enough to pass.
            for _ in 0..5 {
                sock.send_to(payload.as_bytes(), target)
                    .map_err(|e| format!("send_to {target}: {e}"))?;
                thread::sleep(Duration::from_millis(200));
            }
            Ok(())
        },
    );
    sender
        .join(Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("broadcast sender failed: {e}"));
    let mut failures = Vec::new();
    for (name, job) in listeners {
        match job.join(Duration::from_secs(10)) {
            Ok(src) => println!("  {name} received the broadcast from {src}"),
            Err(e) => failures.push(format!("{name}: {e}")),
        }
    }
    assert!(
        failures.is_empty(),
        "broadcast from {from} to {target} did not reach every container:\n{}",
        failures.join("\n")
    );
}

/// An 802.1Q-tagged frame (VLAN 42) crosses between containers on different hosts with its tag intact;
/// where the kernel has 8021q, a VLAN subinterface pair also pings.
pub fn vlan(topo: &Topology, from: &str, to: &str) {
    let (src, dst) = (topo.container(from), topo.container(to));
    let (src_mac, dst_mac) = (packet::parse_mac(&src.mac), packet::parse_mac(&dst.mac));
    let mut payload = format!("meshd-it vlan {VLAN_ID} {}", std::process::id()).into_bytes();
    let mut rng = SplitMix64::new(u64::from(VLAN_ID));
    let mut filler = vec![0u8; 1200 - payload.len()];
    rng.fill(&mut filler);
    payload.extend_from_slice(&filler);
    let frame = packet::tagged_frame(dst_mac, src_mac, VLAN_ID, ETHERTYPE_EXPERIMENTAL, &payload);

    let (ready_tx, ready_rx) = mpsc::channel();
    let expected = payload.clone();
    let receiver = nsthread::spawn(&dst.ns, &format!("vlan-recv-{to}"), move || {
        let sock = PacketSocket::open("eth0", true)?;
        let _ = ready_tx.send(());
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut untagged_copies = 0;
        while Instant::now() < deadline {
            let Some(frame) = sock.recv()? else { continue };
            if frame.data.len() >= 6 && frame.data[..6] != dst_mac {
                continue;
            }
            match frame.vlan_view() {
                Some((vid, ethertype, body))
                    if ethertype == ETHERTYPE_EXPERIMENTAL && body.starts_with(&expected) =>
                {
                    let how = if frame.aux_vlan_tci.is_some() {
                        "tag reported by the kernel as aux data"
                    } else {
                        "tag inline"
                    };
                    return Ok((vid, how));
                }
                _ if frame.data.windows(16).any(|w| w == &expected[..16]) => untagged_copies += 1,
                _ => {}
            }
        }
        Err(format!(
            "no tagged frame arrived within 5 s ({untagged_copies} copies of the payload arrived without a VLAN tag)"
        ))
    });
    ready_rx
        .recv_timeout(Duration::from_secs(5))
        .expect("VLAN receiver did not open its packet socket within 5 s");
    let sender = nsthread::spawn(&src.ns, &format!("vlan-send-{from}"), move || {
        let sock = PacketSocket::open("eth0", false)?;
        for _ in 0..10 {
            sock.send(&frame)?;
            thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    });
    let received = receiver.join(Duration::from_secs(10));
    sender
        .join(Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("VLAN sender in {from} failed: {e}"));
    let (vid, how) = received.unwrap_or_else(|e| {
        panic!(
            "802.1Q frame (VLAN {VLAN_ID}, {} bytes) {from} -> {to}: {e}",
            frame_len(&payload)
        )
    });
    assert_eq!(
        vid, VLAN_ID,
        "frame {from} -> {to} arrived with VLAN id {vid}, expected {VLAN_ID}"
    );
    println!(
        "  tagged frame VLAN {VLAN_ID} ({} bytes) {from} -> {to} arrived intact, VLAN id {vid} ({how})",
        frame_len(&payload)
    );
    vlan_subinterface_ping(src, dst);
}

fn frame_len(payload: &[u8]) -> usize {
    18 + payload.len()
}

fn vlan_subinterface_ping(src: &Container, dst: &Container) {
    let sub = format!("eth0.{VLAN_ID}");
    let vid = VLAN_ID.to_string();
    let probe = cmd::run(
        ip_in(
            &src.ns,
            &[
                "link", "add", "link", "eth0", "name", &sub, "type", "vlan", "id", &vid,
            ],
        ),
        cmd::SHORT,
    );
    if !probe.success() {
        println!(
            "  (no VLAN subinterfaces on this kernel, `ip link add ... type vlan` said {:?}; the tagged-frame \
             check above covers VLAN crossing)",
            probe.stderr.trim()
        );
        return;
    }
    let address = |c: &Container| format!("10.78.{VLAN_ID}.{}", c.ipv4.octets()[3]);
    for (c, created) in [(src, true), (dst, false)] {
        if !created {
            cmd::check(
                ip_in(
                    &c.ns,
                    &[
                        "link", "add", "link", "eth0", "name", &sub, "type", "vlan", "id", &vid,
                    ],
                ),
                cmd::SHORT,
            );
        }
        cmd::check(
            ip_in(
                &c.ns,
                &["addr", "add", &format!("{}/24", address(c)), "dev", &sub],
            ),
            cmd::SHORT,
        );
        cmd::check(ip_in(&c.ns, &["link", "set", &sub, "up"]), cmd::SHORT);
    }
    let target: IpAddr = address(dst).parse().expect("valid address");
    let mut last = None;
    for _ in 0..PING_ATTEMPTS {
        let out = ping_once(src, Family::V4, target);
        if out.success() {
            println!(
                "  {} {sub} ({}) pings {} {sub} ({target})",
                src.name,
                address(src),
                dst.name
            );
            return;
        }
        last = Some(out);
    }
    panic!(
        "ping over VLAN {VLAN_ID} subinterfaces {} -> {} ({target}) failed: {}",
        src.name,
        dst.name,
        last.map(|o| o.describe()).unwrap_or_default()
    );
}

/// Moves a container to another host (same MAC and addresses) and measures how long until another
/// container reaches it again.
pub fn container_move(topo: &mut Topology, name: &str, to: u8, observer: &str) {
    let from = topo.container(name).host;
    let plugged = topo.move_container(name, to);
    let (moved, watcher) = (topo.container(name), topo.container(observer));
    println!(
        "  {name} ({}, {}) unplugged from h{from} and plugged into h{to} with the same MAC and addresses",
        moved.mac, moved.ipv4
    );
    // Like a hypervisor or container runtime after a migration: announce the MAC at its new port.
    let (mac, ipv4) = (packet::parse_mac(&moved.mac), moved.ipv4);
    let announcer = nsthread::spawn(&moved.ns, &format!("garp-{name}"), move || {
        let sock = PacketSocket::open("eth0", false)?;
        for _ in 0..3 {
            sock.send(&packet::gratuitous_arp(mac, ipv4))?;
            thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    });
    for family in [Family::V4, Family::V6] {
        let target = family.addr(moved);
        let remaining = MOVE_DEADLINE.saturating_sub(plugged.elapsed());
        let mut attempts = 0;
        let reached = poll_until(remaining, Duration::from_millis(50), || {
            attempts += 1;
            cmd::run(
                exec_in(
                    &watcher.ns,
                    "ping",
                    &[
                        family.flag(),
                        "-n",
                        "-q",
                        "-c",
                        "1",
                        "-W",
                        "0.3",
                        &target.to_string(),
                    ],
                ),
                Duration::from_secs(5),
            )
            .success()
        });
        assert!(
            reached.is_some(),
            "{observer} cannot reach {name} ({target}) within {MOVE_DEADLINE:?} after it moved from h{from} to h{to} \
             ({attempts} ping attempts)"
        );
        println!(
            "  {observer} reaches {name} over {family:?} ({target}) {:.2?} after the move ({attempts} ping attempt(s))",
            plugged.elapsed()
        );
    }
    announcer
        .join(Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("gratuitous ARP from {name} failed: {e}"));
}

/// Floods every node's UDP port with garbage while pings run, then checks the daemons survived, counted
/// the drops, and all container pairs still ping.
pub fn garbage_flood(topo: &Topology, mesh: Option<&mut Mesh>) {
    let before: Vec<BTreeMap<String, u64>> = match mesh.as_deref() {
        Some(mesh) => (0..mesh.nodes.len())
            .map(|i| {
                mesh.status(i)
                    .map(|s| drop_counters(&s))
                    .unwrap_or_default()
            })
            .collect(),
        None => Vec::new(),
    };
    let targets: Vec<SocketAddr> = topo
        .hosts
        .iter()
        .map(|h| SocketAddr::new(IpAddr::V4(h.underlay_ip), MESHD_PORT))
        .collect();
    let flood = nsthread::spawn(&topo.underlay, "garbage-flood", move || flood(&targets));
    // Pings across hosts while the flood runs: reported, not asserted (the assertion is afterwards).
    let probes: Vec<(&str, &str)> = vec![("c1b", "c2a"), ("c2b", "c3b"), ("c3a", "c1b")];
    let running: Vec<_> = probes
        .iter()
        .map(|(a, b)| {
            let dst = topo.container(b).ipv4;
            cmd::spawn(ping_command(
                &topo.container(a).ns,
                Family::V4,
                IpAddr::V4(dst),
                12,
                "0.25",
            ))
        })
        .collect();
    let stats = flood
        .join(FLOOD_DURATION + Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("garbage flood failed: {e}"));
    let total: u64 = stats.sent.iter().sum();
    println!(
        "  sent {total} garbage datagrams ({:.0}/s, {} send errors) to {} nodes over {:.1?}",
        total as f64 / stats.took.as_secs_f64(),
        stats.errors,
        topo.hosts.len(),
        stats.took
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    for ((a, b), run) in probes.iter().zip(running) {
        let out = run.wait_until(deadline);
        let summary = out
            .stdout
            .lines()
            .find(|l| l.contains("packets transmitted"))
            .unwrap_or("no summary")
            .trim()
            .to_string();
        println!("  during the flood {a} -> {b}: {summary}");
    }
    match mesh {
        Some(mesh) => {
            mesh.assert_alive();
            println!("  all {} meshd daemons are still running", mesh.nodes.len());
            for (i, before) in before.iter().enumerate() {
                let name = mesh.nodes[i].name.clone();
                let status = mesh
                    .status(i)
                    .unwrap_or_else(|e| panic!("status after the flood failed: {e}"));
                let after = drop_counters(&status);
                let grown: Vec<String> = after
                    .iter()
                    .filter_map(|(key, value)| {
                        let delta = value.saturating_sub(before.get(key).copied().unwrap_or(0));
                        (delta > 0).then(|| format!("{key} +{delta}"))
                    })
                    .collect();
                let counted: u64 = after
                    .iter()
                    .map(|(key, value)| value.saturating_sub(before.get(key).copied().unwrap_or(0)))
                    .sum();
                let (sent, empty) = (stats.sent[i], stats.empty[i]);
                println!(
                    "  {name}: got {sent} garbage datagrams ({empty} empty); drop counters grew by {counted} \
                     ({:.1}%): {}; peers {}",
                    100.0 * counted as f64 / sent.max(1) as f64,
                    grown.join(", "),
                    peer_states(&status)
                );
                // Half leaves room for datagrams a node may legitimately not see as separate drops
                // (e.g. lost in the socket buffer under load) while catching drops that go uncounted.
                assert!(
                    counted > 0 && counted * 2 >= sent,
                    "meshd on {name} received {sent} garbage datagrams but its drop counters grew by only \
                     {counted}: {}",
                    status["counters"]
                );
            }
        }
        None => println!("  (control mode: no daemons; the garbage hit closed ports)"),
    }
    ping_matrix(topo, "after the garbage flood");
}

struct FloodStats {
    /// Datagrams sent per target, in `targets` order.
    sent: Vec<u64>,
    /// Of those, zero-length datagrams per target.
    empty: Vec<u64>,
    errors: u64,
    took: Duration,
}

/// Sends paced random datagrams round-robin to `targets` for `FLOOD_DURATION`: random lengths (half of
/// them short, to hit header checks), a quarter wholly random and the rest starting like real messages
/// (version 1, types 1/2/4) so parsing goes deeper.
fn flood(targets: &[SocketAddr]) -> Result<FloodStats, String> {
    let sock = UdpSocket::bind((UNDERLAY_SELF, 0)).map_err(|e| e.to_string())?;
    let mut rng = SplitMix64::new(0x6761_7262_6167_6521);
    let mut buf = [0u8; 1600];
    let mut stats = FloodStats {
        sent: vec![0; targets.len()],
        empty: vec![0; targets.len()],
        errors: 0,
        took: Duration::ZERO,
    };
    let started = Instant::now();
    let mut attempts = 0u64;
    while started.elapsed() < FLOOD_DURATION {
        for _ in 0..64 {
            let kind = rng.below(4);
            let max_len = if rng.below(2) == 0 { 64 } else { 1600 };
            let len = rng.below(max_len + 1) as usize;
            rng.fill(&mut buf[..len]);
            if kind > 0 && len >= 2 {
                buf[0] = 0x01;
                buf[1] = [0x01, 0x02, 0x04][kind as usize - 1];
            }
            let index = (attempts % targets.len() as u64) as usize;
            attempts += 1;
            match sock.send_to(&buf[..len], targets[index]) {
                Ok(_) => {
                    stats.sent[index] += 1;
                    stats.empty[index] += u64::from(len == 0);
                }
                Err(_) => stats.errors += 1,
            }
        }
        // Pace to FLOOD_RATE: sleep until the datagrams sent so far are due.
        let due_at = Duration::from_secs_f64(attempts as f64 / FLOOD_RATE as f64);
        if let Some(ahead) = due_at.checked_sub(started.elapsed()) {
            thread::sleep(ahead);
        }
    }
    stats.took = started.elapsed();
    Ok(stats)
}

/// `name=state` of every session in a status, for messages.
pub fn peer_states(status: &serde_json::Value) -> String {
    peer_fields(status, "state")
}

/// `name=VALUE` of one field of every peer in a status (`?` when absent), for messages.
pub fn peer_fields(status: &serde_json::Value, key: &str) -> String {
    status["peers"]
        .as_array()
        .map(|peers| {
            peers
                .iter()
                .map(|p| {
                    let value = match &p[key] {
                        serde_json::Value::String(text) => text.clone(),
                        serde_json::Value::Null => "?".to_string(),
                        other => other.to_string(),
                    };
                    format!("{}={value}", p["name"].as_str().unwrap_or("?"))
                })
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}
