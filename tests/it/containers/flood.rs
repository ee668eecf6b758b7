//! A handshake flood on real hosts (issue 14): a flooder namespace with 256 addresses sends 3,000
//! initiations a second with a valid mac1 to each of two meshd hosts for 240 s (past the 180 s
//! session lifetime, so every session has to rekey under the flood) while a container on each host
//! pings the other. No session may go down, the pings must keep getting through, and afterwards
//! every container pair pings. `MESHD_FLOOD_SECS` shortens the flood for a local run.

use std::fs;
use std::net::{SocketAddr, UdpSocket};
use std::str::FromStr;
use std::time::{Duration, Instant};

use meshd_crypto::{mac1_key, CoreRng, PublicKey};

use crate::netns::cmd::{self, check, exec_in, ip, ip_in, ip_ok};
use crate::netns::mesh::meshd;
use crate::netns::nsthread;

use super::hosts::{MeshHosts, BRIDGE};

const FLOODER: &str = "mcflf";
const SOURCES_PER_HOST: usize = 128;
const RATE_PER_HOST: u64 = 3_000;
/// Distinct initiations per victim (each a mac1 the flooder computed once).
const MESSAGES: usize = 64;

fn flood_secs() -> u64 {
    std::env::var("MESHD_FLOOD_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(240)
}

/// A namespace with one interface in host `i`'s bridge, holding the 10th address of its range.
fn container(hosts: &MeshHosts, i: usize) -> (String, String) {
    let h = hosts.host_network(i);
    let ns = format!("mcflc{i}");
    let _ = cmd::run(ip(&["netns", "del", &ns]), cmd::SHORT);
    check(ip(&["netns", "add", &ns]), cmd::SHORT);
    let outside = format!("cfl{i}");
    check(
        ip(&[
            "link",
            "add",
            &outside,
            "netns",
            hosts.ns(i),
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &ns,
        ]),
        cmd::SHORT,
    );
    ip_ok(
        hosts.ns(i),
        &["link", "set", &outside, "master", BRIDGE, "up"],
    );
    let addr = h.range.nth(10).unwrap();
    ip_ok(
        &ns,
        &[
            "addr",
            "add",
            &format!("{addr}/{}", h.subnet.prefix()),
            "dev",
            "eth0",
        ],
    );
    ip_ok(&ns, &["link", "set", "eth0", "up"]);
    ip_ok(&ns, &["link", "set", "lo", "up"]);
    (ns, addr.to_string())
}

/// The flooder: a namespace linked to each host by its own veth, with `SOURCES_PER_HOST`
/// addresses on each link and a route to the host's meshd address through it.
fn flooder(hosts: &MeshHosts) -> Vec<(Vec<String>, SocketAddr)> {
    let _ = cmd::run(ip(&["netns", "del", FLOODER]), cmd::SHORT);
    check(ip(&["netns", "add", FLOODER]), cmd::SHORT);
    ip_ok(FLOODER, &["link", "set", "lo", "up"]);
    let mut targets = Vec::new();
    for i in 0..2 {
        let (ours, theirs) = (format!("ffl{i}a"), format!("ffl{i}b"));
        check(
            ip(&[
                "link",
                "add",
                &ours,
                "netns",
                FLOODER,
                "type",
                "veth",
                "peer",
                "name",
                &theirs,
                "netns",
                hosts.ns(i),
            ]),
            cmd::SHORT,
        );
        ip_ok(
            hosts.ns(i),
            &["addr", "add", &format!("10.214.{i}.1/24"), "dev", &theirs],
        );
        ip_ok(hosts.ns(i), &["link", "set", &theirs, "up"]);
        let sources: Vec<String> = (0..SOURCES_PER_HOST)
            .map(|n| format!("10.214.{i}.{}", n + 2))
            .collect();
        let batch = hosts.dir(i).join("flooder.ip");
        let lines: String = sources
            .iter()
            .map(|a| format!("addr add {a}/24 dev {ours}\n"))
            .collect();
        fs::write(&batch, lines).unwrap();
        check(
            ip_in(FLOODER, &["-batch", batch.to_str().unwrap()]),
            cmd::SHORT,
        );
        ip_ok(FLOODER, &["link", "set", &ours, "up"]);
        let victim = hosts.underlay(i);
        ip_ok(
            FLOODER,
            &[
                "route",
                "add",
                &format!("{victim}/32"),
                "via",
                &format!("10.214.{i}.1"),
            ],
        );
        targets.push((sources, format!("{victim}:6655").parse().unwrap()));
    }
    targets
}

/// Initiations with a valid mac1 for `victim` and random contents (they fail Noise, as an
/// attacker's must: it holds no member key).
fn initiations(victim: &PublicKey, seed: u8) -> Vec<Vec<u8>> {
    let mut rng = CoreRng::from_seed([seed; 32]);
    let key = mac1_key(victim);
    (0..MESSAGES)
        .map(|_| crate::sim::floods::forged_initiation(&key, &mut rng, true))
        .collect()
}

fn peer_up(hosts: &MeshHosts, i: usize) -> Result<Option<u64>, String> {
    let status = hosts.status(i);
    let peer = status["peers"]
        .as_array()
        .and_then(|p| p.first())
        .cloned()
        .unwrap_or_default();
    if peer["state"] != "up" {
        return Err(format!("h{}'s session is {}: {peer}", i + 1, peer["state"]));
    }
    Ok(peer["last_handshake_secs_ago"].as_u64())
}

fn ping(from_ns: &str, to: &str, count: &str) -> cmd::Output {
    cmd::run(
        exec_in(from_ns, "ping", &["-c", count, "-i", "0.2", "-W", "2", to]),
        Duration::from_secs(30),
    )
}

/// Starts the flooder (namespace, addresses, routes) sending for `secs` seconds; the job returns
/// how many initiations it sent.
fn start_flood(hosts: &MeshHosts, secs: u64) -> nsthread::NsJob<u64> {
    let targets = flooder(hosts);
    let keys: Vec<PublicKey> = (0..2)
        .map(|i| {
            let out = check(
                meshd(&["pubkey", "--config", hosts.config(i).to_str().unwrap()]),
                cmd::SHORT,
            );
            PublicKey::from_str(out.stdout.trim()).expect("a public key")
        })
        .collect();
    nsthread::spawn(FLOODER, "flooder", move || {
        let mut per_victim = Vec::new();
        for (i, (sources, victim)) in targets.iter().enumerate() {
            let sockets: Vec<UdpSocket> = sources
                .iter()
                .map(|a| UdpSocket::bind(format!("{a}:0")).map_err(|e| format!("bind {a}: {e}")))
                .collect::<Result<_, _>>()?;
            per_victim.push((sockets, *victim, initiations(&keys[i], i as u8 + 1)));
        }
        let started = Instant::now();
        let tick = Duration::from_millis(10);
        let per_tick = (RATE_PER_HOST / 100) as usize;
        let mut sent = 0u64;
        let mut n = 0usize;
        while started.elapsed() < Duration::from_secs(secs) {
            let next = started + tick * (1 + (sent / (2 * per_tick as u64)) as u32);
            for (sockets, victim, messages) in &per_victim {
                for _ in 0..per_tick {
                    let _ =
                        sockets[n % sockets.len()].send_to(&messages[n % messages.len()], victim);
                    n += 1;
                }
            }
            sent += 2 * per_tick as u64;
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
        }
        Ok(sent)
    })
}

/// One `iperf3` run from container `c0` to the server at `a1`, in Gbit/s.
fn iperf(c0: &str, a1: &str, secs: u64) -> f64 {
    let out = check(
        exec_in(c0, "iperf3", &["-c", a1, "-t", &secs.to_string(), "-J"]),
        Duration::from_secs(secs + 30),
    );
    let v: serde_json::Value = serde_json::from_str(&out.stdout).expect("iperf3 JSON");
    v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap_or(0.0)
        / 1e9
}

/// The benchmark (`scripts/flood-bench.sh`): TCP throughput between containers on the two hosts
/// with and without the flood, alternating, as a ratio. It measures, it asserts nothing about
/// speed (machines are shared); it fails only if traffic stops.
#[test]
#[ignore = "a benchmark: run by scripts/flood-bench.sh (needs iperf3)"]
fn throughput_under_a_handshake_flood() {
    let Some(hosts) = MeshHosts::start("fb", "") else {
        return;
    };
    let (c0, _) = container(&hosts, 0);
    let (c1, a1) = container(&hosts, 1);
    let server = cmd::spawn(exec_in(&c1, "iperf3", &["-s"]));
    std::thread::sleep(Duration::from_millis(500));
    let rounds: usize = std::env::var("FLOOD_BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let secs = 10;
    let (mut quiet, mut flooded) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        quiet.push(iperf(&c0, &a1, secs));
        let job = start_flood(&hosts, secs + 4);
        std::thread::sleep(Duration::from_secs(2));
        flooded.push(iperf(&c0, &a1, secs));
        job.join(Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("flooder: {e}"));
        let _ = cmd::run(ip(&["netns", "del", FLOODER]), cmd::SHORT);
        for i in 0..2 {
            let _ = cmd::run(
                ip_in(hosts.ns(i), &["link", "del", &format!("ffl{i}b")]),
                cmd::SHORT,
            );
        }
        println!(
            "round {}: quiet {:.2} Gbit/s, under the flood {:.2} Gbit/s",
            round + 1,
            quiet[round],
            flooded[round]
        );
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (q, f) = (median(&mut quiet), median(&mut flooded));
    println!(
        "median over {rounds} rounds: quiet {q:.2} Gbit/s, under 3,000 initiations/s per host from \
         256 addresses {f:.2} Gbit/s: ratio {:.2} (goal at least 0.80)",
        f / q
    );
    assert!(f > 0.0, "no traffic under the flood");
    server.wait_until(Instant::now());
    for ns in [&c0, &c1] {
        let _ = cmd::run(ip(&["netns", "del", ns]), cmd::SHORT);
    }
}

#[test]
fn a_handshake_flood_on_two_hosts_takes_no_session_down() {
    let Some(hosts) = MeshHosts::start("fl", "") else {
        return;
    };
    let (c0, a0) = container(&hosts, 0);
    let (c1, a1) = container(&hosts, 1);
    let before = ping(&c0, &a1, "3");
    assert!(
        before.success(),
        "containers do not ping before the flood: {}",
        before.describe()
    );

    let secs = flood_secs();
    let job = start_flood(&hosts, secs);

    // While it floods: both sessions stay up, and the containers keep reaching each other.
    let started = Instant::now();
    let mut pings_ok = 0;
    let mut pings = 0;
    while started.elapsed() < Duration::from_secs(secs) {
        for i in 0..2 {
            if let Err(e) = peer_up(&hosts, i) {
                panic!("{:?} into the flood: {e}", started.elapsed());
            }
        }
        pings += 1;
        if ping(&c0, &a1, "2").success() {
            pings_ok += 1;
        }
        std::thread::sleep(Duration::from_secs(5));
    }
    let sent = job
        .join(Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("flooder: {e}"));

    let counters = |i: usize, name: &str| hosts.status(i)["counters"][name].as_u64().unwrap_or(0);
    let refused: Vec<u64> = (0..2)
        .map(|i| {
            counters(i, "rx_handshake_ratelimited")
                + counters(i, "rx_handshake_failed")
                + counters(i, "tx_cookie_replies")
        })
        .collect();
    println!(
        "flood: {sent} initiations in {secs} s from {} addresses; refused or answered with a cookie: \
         h1 {}, h2 {}; container pings that got through during it: {pings_ok} of {pings}",
        2 * SOURCES_PER_HOST,
        refused[0],
        refused[1]
    );
    assert!(
        refused.iter().all(|&r| r > sent / 4),
        "the flood did not reach the hosts ({refused:?} of {sent})"
    );
    assert_eq!(pings_ok, pings, "container pings failed during the flood");
    for i in 0..2 {
        let since = peer_up(&hosts, i).unwrap_or_else(|e| panic!("after the flood: {e}"));
        if secs > 180 {
            assert!(
                since.is_some_and(|s| s < secs),
                "h{}'s session was not renewed during the flood (last handshake {since:?} s ago)",
                i + 1
            );
        }
    }
    for (from, to) in [(&c0, &a1), (&c1, &a0)] {
        let out = ping(from, to, "3");
        assert!(
            out.success(),
            "{from} -> {to} after the flood: {}",
            out.describe()
        );
    }
    for ns in [FLOODER, &c0, &c1] {
        let _ = cmd::run(ip(&["netns", "del", ns]), cmd::SHORT);
    }
}
