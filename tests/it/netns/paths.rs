//! The paths scenarios (issue 4) on the formed mesh: the underlay between two hosts cut (relayed) and
//! healed (direct again), the underlay split into two halves and healed, a host's underlay address
//! changed while traffic flows, and MTU 1500 containers behind a narrower underlay path.
//!
//! They read the path fields of `meshd status --json`: `peers[].via` (the relay's name, or null),
//! `peers[].path_mtu` (the largest IP packet a container can send to that peer whole, null while
//! unknown), `peers[].endpoint`, `members[].state`/`direct`/`via`, and the counters `tx_too_big_icmp`,
//! `relay_forwarded`, `path_to_relay` and `path_to_direct`.
//!
//! Times are printed and asserted only against the deadlines below (the machine is shared). Each
//! underlay change is held by a guard from topology.rs, so a failing scenario does not leave it behind.
//! A failure says what was expected and what was seen, with the path fields of the nodes involved and
//! the end of their logs.

use std::net::{IpAddr, Ipv4Addr};
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::cmd::{self, exec_in};
use super::mesh::{self, counter, member_states, Mesh};
use super::scenarios::{self, pairs, ping_matrix, ping_round, until_all_reach, Family};
use super::topology::{Container, Topology, UnderlayCut, CONTAINER_MTU, MESHD_PORT, UNDERLAY_MTU};

/// From the cut until both ends of the cut pair show a relay.
const RELAY_DEADLINE: Duration = Duration::from_secs(60);
/// From removing the cut until both ends show the pair direct again ("within seconds", issue 4).
const DIRECT_DEADLINE: Duration = Duration::from_secs(30);
/// From the split until h1 no longer counts the other half alive.
const SPLIT_NOTICE_DEADLINE: Duration = Duration::from_secs(40);
/// Containers within one half must keep pinging; they never depended on the other half.
const HALF_DEADLINE: Duration = Duration::from_secs(20);
/// From healing the split until every container pair pings and every member is alive everywhere.
const MERGE_DEADLINE: Duration = Duration::from_secs(60);
/// From an underlay address change until traffic and the observer's endpoint follow it.
const ROAM_DEADLINE: Duration = Duration::from_secs(30);
/// From the end of the transfers until the narrowed path's MTU shows in status; by then meshd has
/// had to send over it for a while.
const PATH_MTU_DEADLINE: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(250);
/// One probe of the continuous ping every this often.
const PROBE_EVERY: Duration = Duration::from_millis(200);
/// Answered probes in a row that count as traffic flowing steadily.
const STEADY: usize = 10;
/// The largest IP packet through the narrowed underlay path, and what is sent through it.
const NARROW_MTU: u32 = 1400;
const NARROW_TRANSFER_BYTES: usize = 20 * 1024 * 1024;
/// Per container packet on an IPv4 underlay: outer IPv4 and UDP headers, meshd's data header and
/// tag, and the container frame's Ethernet header.
const ENCAPSULATION: u32 = 20 + 8 + 32 + 14;
const PATH_COUNTERS: [&str; 4] = [
    "tx_too_big_icmp",
    "relay_forwarded",
    "path_to_relay",
    "path_to_direct",
];
/// Log lines of each involved daemon in a failure message (the mesh guard prints longer tails of all).
const EVIDENCE_LOG_LINES: usize = 40;

/// 7: the underlay between hosts `a` and `b` is cut both ways; each must show the other relayed by a
/// third member, every container pair must ping, and the relay must count what it forwarded. The cut
/// stays in place for `heal_direct`.
pub fn cut_relayed(topo: &Topology, mesh: &mut Mesh, a: u8, b: u8) -> UnderlayCut {
    let (an, bn) = (topo.host(a).name.clone(), topo.host(b).name.clone());
    let relays: Vec<String> = topo
        .hosts
        .iter()
        .filter(|h| h.n != a && h.n != b)
        .map(|h| h.name.clone())
        .collect();
    let involved: Vec<&str> = [an.as_str(), bn.as_str()]
        .into_iter()
        .chain(relays.iter().map(String::as_str))
        .collect();
    let (ai, bi) = (mesh.index_of(&an), mesh.index_of(&bn));
    let before = all_statuses(mesh);
    println!(
        "  before: {an} -> {bn} via {}, {bn} -> {an} via {}",
        peer_field(&before[ai], &bn, "via"),
        peer_field(&before[bi], &an, "via")
    );

    let cut = topo.cut_underlay(&[(a, b)]);
    let cut_at = Instant::now();
    for relay in topo.hosts.iter().filter(|h| h.n != a && h.n != b) {
        for from in [a, b] {
            assert!(
                topo.underlay_reaches(from, relay.underlay_ip, None),
                "the cut {} should leave h{from} reaching {} ({}), it does not",
                cut.describe(),
                relay.name,
                relay.underlay_ip
            );
        }
    }
    println!(
        "  underlay cut with blackhole routes ({}): {an} and {bn} no longer reach each other, both \
         still reach {relays:?}",
        cut.describe()
    );

    let (took, (via_a, via_b)) = wait_statuses(
        mesh,
        cut_at,
        RELAY_DEADLINE,
        &format!("{an} and {bn} should each show the other as a peer `via` one of {relays:?}"),
        &involved,
        |st| {
            Ok((
                relay_of(&st[ai], &bn, &relays)?,
                relay_of(&st[bi], &an, &relays)?,
            ))
        },
    );
    println!(
        "  MEASURED {an} shows {bn} via {via_a} and {bn} shows {an} via {via_b} {took:.1?} after the cut"
    );

    with_evidence(mesh, &involved, || {
        ping_matrix(topo, &format!("with the underlay {an}-{bn} cut"))
    });

    let after = all_statuses(mesh);
    let mut forwarded = 0;
    let mut report = Vec::new();
    for (i, node) in mesh.nodes.iter().enumerate() {
        let grown = counter(&after[i], "relay_forwarded")
            .saturating_sub(counter(&before[i], "relay_forwarded"));
        if node.name == via_a || node.name == via_b {
            forwarded += grown;
        }
        report.push(format!(
            "{} relay_forwarded +{grown} path_to_relay {}",
            node.name,
            counter_field(&after[i], "path_to_relay")
        ));
    }
    println!("  {}", report.join("; "));
    assert!(
        forwarded > 0,
        "the relays named in status ({via_a}, {via_b}) should count the datagrams they forwarded for \
         {an}<->{bn} in `relay_forwarded`, which did not grow\n{}",
        evidence(mesh, &involved)
    );
    cut
}

/// 8: the cut of `cut_relayed` is removed; both ends must show each other direct again (`via` null,
/// member `direct`) within `DIRECT_DEADLINE`, and every container pair must ping.
pub fn heal_direct(topo: &Topology, mesh: &mut Mesh, cut: UnderlayCut, a: u8, b: u8) {
    let (an, bn) = (topo.host(a).name.clone(), topo.host(b).name.clone());
    let (ai, bi) = (mesh.index_of(&an), mesh.index_of(&bn));
    let described = cut.describe();
    let healed = cut.heal();
    assert!(
        topo.underlay_reaches(a, topo.host(b).underlay_ip, None)
            && topo.underlay_reaches(b, topo.host(a).underlay_ip, None),
        "after removing the blackhole routes ({described}) {an} and {bn} should reach each other"
    );
    println!("  blackhole routes removed: {an} and {bn} reach each other over the underlay again");
    let (took, ()) = wait_statuses(
        mesh,
        healed,
        DIRECT_DEADLINE,
        &format!(
            "{an} and {bn} should each show the other as a peer with `via` null and a member with \
             `direct` true"
        ),
        &[an.as_str(), bn.as_str()],
        |st| {
            direct(&st[ai], &bn)?;
            direct(&st[bi], &an)
        },
    );
    let now = all_statuses(mesh);
    println!(
        "  MEASURED {an} and {bn} show each other direct again {took:.1?} after the cut was removed \
         (path_to_direct: {an} {}, {bn} {})",
        counter_field(&now[ai], "path_to_direct"),
        counter_field(&now[bi], "path_to_direct")
    );
    with_evidence(mesh, &[an.as_str(), bn.as_str()], || {
        ping_matrix(topo, &format!("after the underlay {an}-{bn} healed"))
    });
}

/// 9: the underlay is split into `left` and `right` (every cross pair cut). Each half keeps working,
/// nothing crosses, h1 marks the other half down or suspect; after healing, every container pair pings
/// and every member is alive everywhere again.
pub fn split_and_heal(topo: &Topology, mesh: &mut Mesh, left: &[u8], right: &[u8]) {
    let names = |hosts: &[u8]| -> Vec<String> {
        hosts.iter().map(|n| topo.host(*n).name.clone()).collect()
    };
    let (left_names, right_names) = (names(left), names(right));
    let live: Vec<String> = mesh.nodes.iter().map(|n| n.name.clone()).collect();
    let everyone: Vec<&str> = live.iter().map(String::as_str).collect();
    let observer = left_names[0].clone();
    let oi = mesh.index_of(&observer);
    let half = |hosts: &[u8]| -> Vec<&Container> {
        topo.containers
            .iter()
            .filter(|c| hosts.contains(&c.host))
            .collect()
    };
    let (left_c, right_c) = (half(left), half(right));
    let mut within = pairs(&left_c, &left_c);
    within.extend(pairs(&right_c, &right_c));

    let cross: Vec<(u8, u8)> = left
        .iter()
        .flat_map(|a| right.iter().map(move |b| (*a, *b)))
        .collect();
    let cut = topo.cut_underlay(&cross);
    let split_at = Instant::now();
    for (a, b) in [(left[0], left[1]), (right[0], right[1])] {
        assert!(
            topo.underlay_reaches(a, topo.host(b).underlay_ip, None),
            "the split should leave h{a} reaching h{b} within its half, it does not"
        );
    }
    println!(
        "  underlay split into {left_names:?} and {right_names:?} ({} blackhole routes)",
        2 * cross.len()
    );

    for family in [Family::V4, Family::V6] {
        let took = until_all_reach(&within, family, split_at, HALF_DEADLINE).unwrap_or_else(|e| {
            panic!(
                "containers within each half should keep pinging each other during the split: {e}\n{}",
                evidence(mesh, &everyone)
            )
        });
        println!(
            "  {family:?}: all {} ordered container pairs within the halves ping ({took:.1?} after the \
             split)",
            within.len()
        );
    }
    let across = [(left_c[0], right_c[0])];
    let leaked = ping_round(&across, Family::V4)[0];
    assert!(
        !leaked,
        "{} -> {} should get no reply across the split, it did: the split does not hold",
        left_c[0].name, right_c[0].name
    );
    println!(
        "  {} -> {} across the split: no reply, as expected",
        left_c[0].name, right_c[0].name
    );

    let (took, states) = wait_statuses(
        mesh,
        split_at,
        SPLIT_NOTICE_DEADLINE,
        &format!(
            "{observer} should show {right_names:?} as members in state \"down\" or \"suspect\""
        ),
        &[observer.as_str()],
        |st| {
            let mut states = Vec::new();
            for name in &right_names {
                let state = member_field(&st[oi], name, "state");
                if state != "\"down\"" && state != "\"suspect\"" {
                    return Err(format!("{observer}'s member {name}: state {state}"));
                }
                states.push(format!("{name}={}", state.trim_matches('"')));
            }
            Ok(states.join(","))
        },
    );
    let far = mesh.index_of(&right_names[0]);
    let far_view = mesh.status(far).map_or_else(|e| e, |s| member_states(&s));
    println!(
        "  MEASURED {observer} shows {states} {took:.1?} after the split ({} sees {far_view})",
        right_names[0]
    );

    let healed = cut.heal();
    let all = pairs(
        &topo.containers.iter().collect::<Vec<_>>(),
        &topo.containers.iter().collect::<Vec<_>>(),
    );
    let pinged = until_all_reach(&all, Family::V4, healed, MERGE_DEADLINE).unwrap_or_else(|e| {
        panic!(
            "after the split healed every container pair should ping again: {e}\n{}",
            evidence(mesh, &everyone)
        )
    });
    println!(
        "  MEASURED all {} ordered container pairs ping over IPv4 {pinged:.1?} after the heal",
        all.len()
    );
    let (merged, ()) = wait_statuses(
        mesh,
        healed,
        MERGE_DEADLINE,
        "every host should show every other as an \"alive\" member",
        &everyone,
        |st| {
            let mut missing = Vec::new();
            for (me, status) in live.iter().zip(st) {
                for other in live.iter().filter(|o| *o != me) {
                    let state = member_field(status, other, "state");
                    if state != "\"alive\"" {
                        missing.push(format!("{me} shows {other} {state}"));
                    }
                }
            }
            if missing.is_empty() {
                Ok(())
            } else {
                Err(missing.join(", "))
            }
        },
    );
    println!("  MEASURED every host shows every other member alive {merged:.1?} after the heal");
    with_evidence(mesh, &everyone, || {
        ping_matrix(topo, "after the split healed")
    });
}

/// 10: host `n`'s underlay address changes to `new` while a container on h1 pings one on host `n`;
/// traffic must resume within `ROAM_DEADLINE` and h1 must show the new endpoint. The address is then
/// changed back the same way, so later scenarios see the topology they were written for.
pub fn readdress_under_traffic(topo: &mut Topology, mesh: &mut Mesh, n: u8, new: Ipv4Addr) {
    let name = topo.host(n).name.clone();
    let old = topo.host(n).underlay_ip;
    let listen = mesh
        .status(mesh.index_of(&name))
        .unwrap_or_else(|e| panic!("{e}"))["listen"]
        .clone();
    assert_eq!(
        listen.as_str(),
        Some(format!("0.0.0.0:{MESHD_PORT}").as_str()),
        "{name} should listen on the wildcard address (joined with --listen 0.0.0.0:{MESHD_PORT}), or its \
         socket cannot follow an address change; status says listen {listen}"
    );
    roam(topo, mesh, n, new);
    ping_matrix(
        topo,
        &format!("after {name}'s underlay address changed to {new}"),
    );
    println!("  changing {name}'s address back to {old}");
    roam(topo, mesh, n, old);
}

/// Changes host `n`'s address to `to` under a continuous ping from a container on h1 to one on `n`,
/// prints the gap, and waits until h1 shows `n`'s new endpoint.
fn roam(topo: &mut Topology, mesh: &mut Mesh, n: u8, to: Ipv4Addr) {
    let name = topo.host(n).name.clone();
    let observer = topo.hosts[0].name.clone();
    let from_address = topo.host(n).underlay_ip;
    let (src, dst) = (
        topo.containers_on(topo.hosts[0].n)[0],
        topo.containers_on(n)[0],
    );
    let (src_name, src_ns, dst_name, dst_ip) =
        (src.name.clone(), src.ns.clone(), dst.name.clone(), dst.ipv4);
    let involved = [observer.as_str(), name.as_str()];
    let pinger = Pinger::start(&src_ns, dst_ip);
    if let Err(e) = pinger.wait_steady(Duration::from_secs(10)) {
        pinger.stop();
        panic!(
            "before the change {src_name} -> {dst_name} ({dst_ip}) should get steady replies: {e}\n{}",
            evidence(mesh, &involved)
        );
    }
    let changed = topo.readdress(n, to);
    assert!(
        topo.underlay_reaches(topo.hosts[0].n, to, None),
        "{observer} should reach {name}'s new address {to} over the underlay, it does not"
    );
    println!(
        "  {name}$ ip addr add {to}/24 dev ul0; ip addr del {from_address}/24 dev ul0   # while \
         {src_name} pings {dst_name} ({dst_ip}) every {PROBE_EVERY:?}"
    );
    // The observer's view is polled during the ping, so the time it shows the new endpoint is measured
    // from the change, not from the end of the ping.
    let oi = mesh.index_of(&observer);
    let endpoint = format!("\"{to}:{MESHD_PORT}\"");
    let (mut endpoint_at, mut endpoint_seen) = (None, String::from("(not polled)"));
    while changed.elapsed() < ROAM_DEADLINE {
        mesh.assert_alive();
        if endpoint_at.is_none() {
            let at = changed.elapsed();
            endpoint_seen = match mesh.status(oi) {
                Ok(status) => peer_field(&status, &name, "endpoint"),
                Err(e) => e,
            };
            if endpoint_seen == endpoint {
                endpoint_at = Some(at);
            }
        }
        let settled =
            changed.elapsed() >= Duration::from_secs(5) && steady_since(&pinger.probes(), changed);
        if settled && endpoint_at.is_some() {
            break;
        }
        thread::sleep(Duration::from_millis(100));
    }
    let probes = pinger.stop();
    let gap = Gap::of(&probes, changed);
    match (gap.first_lost, gap.resumed) {
        (Some(lost), Some(resumed)) => println!(
            "  MEASURED {src_name} -> {dst_name}: gap {:.2?} (first probe lost {lost:.2?} after the \
             change, first answered again {resumed:.2?} after it); {} of {} probes after the change \
             lost, {} of them after traffic resumed",
            resumed - lost,
            gap.lost,
            gap.sent,
            gap.lost_after_resume
        ),
        (None, _) => println!(
            "  MEASURED {src_name} -> {dst_name}: no probe lost ({} sent after the change)",
            gap.sent
        ),
        (Some(lost), None) => panic!(
            "{src_name} -> {dst_name} ({dst_ip}) should get replies again within {ROAM_DEADLINE:?} of \
             {name}'s address change {from_address} -> {to}; the probes are lost from {lost:.2?} after the \
             change on ({} of {} lost)\n{}",
            gap.lost,
            gap.sent,
            evidence(mesh, &involved)
        ),
    }
    let Some(endpoint_at) = endpoint_at else {
        panic!(
            "{observer} should show peer {name} at endpoint {endpoint} within {ROAM_DEADLINE:?} of the \
             address change; it shows {endpoint_seen}\n{}",
            evidence(mesh, &involved)
        )
    };
    let views: Vec<String> = all_statuses(mesh)
        .iter()
        .zip(&mesh.nodes)
        .filter(|(_, node)| node.name != name)
        .map(|(status, node)| {
            format!(
                "{} sees {}",
                node.name,
                peer_field(status, &name, "endpoint")
            )
        })
        .collect();
    println!(
        "  MEASURED {observer} shows {name} at {endpoint} {endpoint_at:.1?} after the change (now {})",
        views.join(", ")
    );
}

/// 11: MTU 1500 containers behind a narrower underlay path: host `n`'s underlay path carries IP
/// packets of at most `NARROW_MTU` bytes and drops larger ones silently. TCP transfers across it
/// complete, DF pings too big for the path are answered with ICMP "fragmentation needed"/"packet too
/// big" naming an MTU that then works, and `n` shows the path MTU to its peer `to` and counts the ICMP
/// answers.
pub fn narrow_path(topo: &Topology, mesh: &mut Mesh, n: u8, to: u8) {
    let (name, peer_name) = (topo.host(n).name.clone(), topo.host(to).name.clone());
    assert_eq!(
        topo.container_mtu, CONTAINER_MTU,
        "containers should have MTU {CONTAINER_MTU} here, but have {}: meshd reported a smaller TAP MTU \
         at the start, and the harness lowered them to fit",
        topo.container_mtu
    );
    let involved = [name.as_str(), peer_name.as_str()];
    let (ni, pi) = (mesh.index_of(&name), mesh.index_of(&peer_name));
    let near = topo.containers_on(n);
    let far = topo.containers_on(to)[0];
    let before = all_statuses(mesh);

    let link = topo.narrow_underlay(n, NARROW_MTU);
    println!(
        "  underlay path of {name} narrowed to {NARROW_MTU} bytes: {}-byte DF pings between {name} and \
         the others are dropped silently, {}-byte ones pass",
        NARROW_MTU - 28 + 1,
        NARROW_MTU - 28
    );

    // Nothing tells meshd that the path narrowed but the loss of its full-size probes: it must
    // notice and measure again (on a path narrow from the start, the first search finds it).
    let largest = NARROW_MTU - ENCAPSULATION;
    let (noticed, _) = wait_path_mtu(
        mesh,
        (ni, &name, &peer_name),
        largest,
        &involved,
        "notice the narrower path to",
    );
    println!("  MEASURED {name} measured the narrower path to {peer_name} {noticed:.1?} after it narrowed");

    // (a) TCP has to adapt to the path, or its full-size segments vanish.
    for (from, dst) in [
        (near[0].name.as_str(), far.name.as_str()),
        (far.name.as_str(), near[1 % near.len()].name.as_str()),
    ] {
        with_evidence(mesh, &involved, || {
            scenarios::tcp_transfer_of(topo, from, dst, NARROW_TRANSFER_BYTES)
        });
    }

    // (b) The sender learns the path MTU from meshd's ICMP answer, and that size then gets through.
    for family in [Family::V4, Family::V6] {
        let (header, signs): (u32, &[&str]) = match family {
            Family::V4 => (28, &["frag needed", "message too long"]),
            Family::V6 => (48, &["packet too big", "message too long"]),
        };
        // Each too-big answer lowers the sender's MTU for the destination; a sender may hold an
        // older, larger one from earlier traffic (kept 10 minutes), so follow answers as a kernel
        // does, until a ping gets through.
        let size = topo.container_mtu - header;
        let mut attempt = size;
        let mut answers: Vec<u32> = Vec::new();
        let mut text = String::new();
        let mtu = loop {
            let out = df_ping(near[0], family, far, attempt);
            if out.success() {
                break attempt + header;
            }
            text = format!("{}\n{}", out.stdout, out.stderr);
            let reported = signs
                .iter()
                .any(|s| text.to_lowercase().contains(s))
                .then(|| reported_mtu(&text))
                .flatten()
                .filter(|m| *m < attempt + header);
            match reported {
                Some(m) if answers.len() < 3 => {
                    answers.push(m);
                    attempt = m - header;
                }
                _ => panic!(
                    "a {family:?} ping of {attempt} bytes with DF from {} to {} ({}) should get through or be \
                     answered with ICMP {:?} naming a smaller MTU (answers so far {answers:?}); ping said:\n{}\n{}",
                    near[0].name,
                    far.name,
                    family.addr(far),
                    signs[0],
                    text.trim(),
                    evidence(mesh, &involved)
                ),
            }
        };
        assert!(
            !answers.is_empty() && mtu <= NARROW_MTU - ENCAPSULATION,
            "a {family:?} DF ping of {size} bytes from {} to {} should be answered with the narrow path's MTU \
             (at most {}), then fit; answers {answers:?}, fitting size {mtu}\n{}",
            near[0].name,
            far.name,
            NARROW_MTU - ENCAPSULATION,
            evidence(mesh, &involved)
        );
        println!(
            "  {family:?}: {size}-byte DF ping {} -> {} answered with MTUs {answers:?} (last: \"{}\"); \
             {}-byte pings then get through",
            near[0].name,
            far.name,
            text.lines()
                .find(|l| l.to_lowercase().contains("mtu"))
                .unwrap_or("")
                .trim(),
            mtu - header
        );
    }

    // (c) status shows the narrowed path's MTU and the ICMP answers.
    let (took, path_mtu) = wait_path_mtu(
        mesh,
        (ni, &name, &peer_name),
        largest,
        &involved,
        "show `path_mtu` for",
    );
    let after = all_statuses(mesh);
    println!(
        "  MEASURED {name} shows path_mtu {path_mtu} to {peer_name} ({took:.1?} after the pings); {name}'s \
         path MTUs {}, {peer_name}'s {}",
        scenarios::peer_fields(&after[ni], "path_mtu"),
        scenarios::peer_fields(&after[pi], "path_mtu")
    );
    let too_big: Vec<(u64, u64)> = [ni, pi]
        .iter()
        .map(|i| {
            (
                counter(&after[*i], "tx_too_big_icmp"),
                counter(&after[*i], "tx_too_big_icmp")
                    .saturating_sub(counter(&before[*i], "tx_too_big_icmp")),
            )
        })
        .collect();
    println!(
        "  tx_too_big_icmp: {name} {} (+{}), {peer_name} {} (+{})",
        too_big[0].0, too_big[0].1, too_big[1].0, too_big[1].1
    );
    assert!(
        too_big[0].0 + too_big[1].0 > 0,
        "{name} or {peer_name} should count the ICMP too-big answers it sent its containers in \
         `tx_too_big_icmp`; {name} reports {}, {peer_name} {}\n{}",
        counter_field(&after[ni], "tx_too_big_icmp"),
        counter_field(&after[pi], "tx_too_big_icmp"),
        evidence(mesh, &involved)
    );

    link.restore();
    assert!(
        topo.underlay_reaches(n, topo.host(to).underlay_ip, Some(UNDERLAY_MTU - 28)),
        "after restoring the underlay MTU {UNDERLAY_MTU} full-size DF pings from {name} to {peer_name} \
         should pass again"
    );
    println!("  underlay path of {name} back to {UNDERLAY_MTU} bytes");
}

/// A ping of `size` payload bytes with DF set (IPv6 never fragments on the way either): 3 probes.
fn df_ping(from: &Container, family: Family, to: &Container, size: u32) -> cmd::Output {
    let (size, target) = (size.to_string(), family.addr(to).to_string());
    cmd::run(
        exec_in(
            &from.ns,
            "ping",
            &[
                family.flag(),
                "-n",
                "-M",
                "do",
                "-s",
                &size,
                "-c",
                "3",
                "-i",
                "0.2",
                "-W",
                "1",
                &target,
            ],
        ),
        Duration::from_secs(10),
    )
}

/// The MTU in iputils ping's report of a too-big answer: "Frag needed and DF set (mtu = 1326)",
/// "Packet too big: mtu=1326", or, once the kernel caches the path MTU, "local error: message too long,
/// mtu=1326" / "mtu: 1326".
fn reported_mtu(text: &str) -> Option<u32> {
    let lower = text.to_lowercase();
    lower.match_indices("mtu").find_map(|(at, _)| {
        let rest = lower[at + 3..].trim_start();
        let rest = rest.strip_prefix(['=', ':'])?.trim_start();
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().ok()
    })
}

/// A status field as JSON text, "absent" when the daemon does not report it, so a failure tells a
/// missing field from a wrong value.
fn field(v: &Value, key: &str) -> String {
    v.get(key)
        .map_or_else(|| "absent".to_string(), Value::to_string)
}

fn peer_field(status: &Value, name: &str, key: &str) -> String {
    mesh::peer(status, name).map_or_else(|| format!("(no peer {name})"), |p| field(p, key))
}

fn member_field(status: &Value, name: &str, key: &str) -> String {
    mesh::member(status, name).map_or_else(|| format!("(no member {name})"), |m| field(m, key))
}

fn counter_field(status: &Value, name: &str) -> String {
    field(&status["counters"], name)
}

/// The relay `status` names for peer `name`, if it is one of `relays`.
fn relay_of(status: &Value, name: &str, relays: &[String]) -> Result<String, String> {
    let me = status["name"].as_str().unwrap_or("?");
    let via = mesh::peer(status, name).and_then(|p| p.get("via"));
    match via.and_then(Value::as_str) {
        Some(relay) if relays.iter().any(|r| r == relay) => Ok(relay.to_string()),
        _ => Err(format!(
            "{me}'s peer {name}: via {}, state {}",
            peer_field(status, name, "via"),
            peer_field(status, name, "state")
        )),
    }
}

/// Whether `status` shows `name` direct: the peer's `via` present and null, the member's `direct` true.
fn direct(status: &Value, name: &str) -> Result<(), String> {
    let me = status["name"].as_str().unwrap_or("?");
    let via_null = mesh::peer(status, name)
        .and_then(|p| p.get("via"))
        .is_some_and(Value::is_null);
    let member_direct = mesh::member(status, name).is_some_and(|m| m["direct"] == true);
    if via_null && member_direct {
        Ok(())
    } else {
        Err(format!(
            "{me}'s peer {name}: via {}; member {name}: direct {}, via {}",
            peer_field(status, name, "via"),
            member_field(status, name, "direct"),
            member_field(status, name, "via")
        ))
    }
}

/// The path fields of one status: sessions, members and the path counters.
fn path_view(status: &Value) -> String {
    let list = |key: &str, line: &dyn Fn(&Value) -> String| -> String {
        status[key].as_array().map_or_else(
            || format!("(no {key} array)"),
            |entries| entries.iter().map(line).collect::<Vec<_>>().join("; "),
        )
    };
    let peers = list("peers", &|p| {
        format!(
            "{} state {} endpoint {} via {} path_mtu {}",
            p["name"].as_str().unwrap_or("?"),
            field(p, "state"),
            field(p, "endpoint"),
            field(p, "via"),
            field(p, "path_mtu")
        )
    });
    let members = list("members", &|m| {
        format!(
            "{} state {} direct {} via {}",
            m["name"].as_str().unwrap_or("?"),
            field(m, "state"),
            field(m, "direct"),
            field(m, "via")
        )
    });
    let counters: Vec<String> = PATH_COUNTERS
        .iter()
        .map(|c| format!("{c} {}", counter_field(status, c)))
        .collect();
    format!(
        "peers: {peers}\n    members: {members}\n    counters: {}",
        counters.join(", ")
    )
}

/// For failure messages: the path view of each named node's status now and the end of its log.
fn evidence(mesh: &Mesh, names: &[&str]) -> String {
    names
        .iter()
        .map(|name| {
            let node = &mesh.nodes[mesh.index_of(name)];
            let view = node.status().map_or_else(|e| e, |s| path_view(&s));
            let log = node.log_tail();
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines[lines.len().saturating_sub(EVIDENCE_LOG_LINES)..].join("\n");
            format!("--- {name} status:\n    {view}\n--- {name} log tail:\n{tail}")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Runs a check that panics with its own message (the ping matrix, a transfer) and, if it does, adds
/// the path view and log tails of `involved` before the panic goes on.
fn with_evidence<T>(mesh: &Mesh, involved: &[&str], check: impl FnOnce() -> T) -> T {
    match panic::catch_unwind(AssertUnwindSafe(check)) {
        Ok(value) => value,
        Err(payload) => {
            eprintln!(
                "path state when the check above failed:\n{}",
                evidence(mesh, involved)
            );
            panic::resume_unwind(payload)
        }
    }
}

/// Every node's status now, in `mesh.nodes` order (`Null` where it cannot be read).
fn all_statuses(mesh: &Mesh) -> Vec<Value> {
    (0..mesh.nodes.len())
        .map(|i| mesh.status(i).unwrap_or(Value::Null))
        .collect()
}

/// Polls every node's status until `check` accepts them (in `mesh.nodes` order) or `deadline` after
/// `since` passes; a daemon that exits fails at once. Returns the time from `since` and what `check`
/// returned; on timeout panics with `expected`, the last thing `check` saw and the evidence of
/// `involved`.
fn wait_statuses<T>(
    mesh: &mut Mesh,
    since: Instant,
    deadline: Duration,
    expected: &str,
    involved: &[&str],
    mut check: impl FnMut(&[Value]) -> Result<T, String>,
) -> (Duration, T) {
    loop {
        mesh.assert_alive();
        let statuses: Result<Vec<Value>, String> =
            (0..mesh.nodes.len()).map(|i| mesh.status(i)).collect();
        let seen = match statuses.and_then(|st| check(&st)) {
            Ok(value) => return (since.elapsed(), value),
            Err(e) => e,
        };
        if since.elapsed() >= deadline {
            panic!(
                "{expected} within {deadline:?}; after {:.1?} saw: {seen}\n{}",
                since.elapsed(),
                evidence(mesh, involved)
            );
        }
        thread::sleep(POLL);
    }
}

/// One probe of a continuous ping: when it was sent and whether it was answered.
#[derive(Clone, Copy, Debug)]
struct Probe {
    sent: Instant,
    answered: bool,
}

/// A continuous ping: a single-probe `ping` starts every `PROBE_EVERY` whether or not the previous one
/// was answered (each waits up to 0.5 s), and the harness times each, so loss is located in time to
/// one interval without parsing ping's output.
struct Pinger {
    stop: Arc<AtomicBool>,
    probes: Arc<Mutex<Vec<Probe>>>,
    thread: JoinHandle<()>,
}

impl Pinger {
    fn start(ns: &str, to: Ipv4Addr) -> Pinger {
        let stop = Arc::new(AtomicBool::new(false));
        let probes = Arc::new(Mutex::new(Vec::new()));
        let (ns, target) = (ns.to_string(), IpAddr::V4(to).to_string());
        let thread = {
            let (stop, probes) = (Arc::clone(&stop), Arc::clone(&probes));
            thread::spawn(move || {
                let mut running = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let sent = Instant::now();
                    let (ns, target, probes) = (ns.clone(), target.clone(), Arc::clone(&probes));
                    running.push(thread::spawn(move || {
                        let answered = cmd::run(
                            exec_in(
                                &ns,
                                "ping",
                                &["-4", "-n", "-q", "-c", "1", "-W", "0.5", &target],
                            ),
                            Duration::from_secs(5),
                        )
                        .success();
                        probes
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push(Probe { sent, answered });
                    }));
                    running.retain(|probe: &JoinHandle<()>| !probe.is_finished());
                    if let Some(rest) = PROBE_EVERY.checked_sub(sent.elapsed()) {
                        thread::sleep(rest);
                    }
                }
                for probe in running {
                    let _ = probe.join();
                }
            })
        };
        Pinger {
            stop,
            probes,
            thread,
        }
    }

    /// The probes answered or given up on so far, in the order they were sent.
    fn probes(&self) -> Vec<Probe> {
        sorted(&self.probes)
    }

    /// Waits until the last `STEADY` probes were all answered.
    fn wait_steady(&self, timeout: Duration) -> Result<(), String> {
        let started = Instant::now();
        loop {
            let probes = self.probes();
            if steady_since(&probes, started) {
                return Ok(());
            }
            if started.elapsed() > timeout {
                let answered = probes.iter().filter(|p| p.answered).count();
                return Err(format!(
                    "{answered} of {} probes answered in {timeout:?}",
                    probes.len()
                ));
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    fn stop(self) -> Vec<Probe> {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
        sorted(&self.probes)
    }
}

fn sorted(probes: &Mutex<Vec<Probe>>) -> Vec<Probe> {
    let mut probes = probes.lock().unwrap_or_else(|e| e.into_inner()).clone();
    probes.sort_by_key(|p| p.sent);
    probes
}

/// Whether the last `STEADY` probes sent after `since` were all answered.
fn steady_since(probes: &[Probe], since: Instant) -> bool {
    let after: Vec<&Probe> = probes.iter().filter(|p| p.sent >= since).collect();
    after.len() >= STEADY && after[after.len() - STEADY..].iter().all(|p| p.answered)
}

/// The outage in a continuous ping after a change.
#[derive(Debug, PartialEq)]
struct Gap {
    /// Probes sent after the change, and how many of them were lost.
    sent: usize,
    lost: usize,
    /// The first probe lost after the change, and the first answered after that one (times from the
    /// change).
    first_lost: Option<Duration>,
    resumed: Option<Duration>,
    /// Probes lost after `resumed`: traffic that comes back but does not stay.
    lost_after_resume: usize,
}

impl Gap {
    fn of(probes: &[Probe], change: Instant) -> Gap {
        let after: Vec<&Probe> = probes.iter().filter(|p| p.sent >= change).collect();
        let at = |p: &Probe| p.sent.duration_since(change);
        let lost_index = after.iter().position(|p| !p.answered);
        let resumed_index =
            lost_index.and_then(|l| after[l..].iter().position(|p| p.answered).map(|r| l + r));
        Gap {
            sent: after.len(),
            lost: after.iter().filter(|p| !p.answered).count(),
            first_lost: lost_index.map(|i| at(after[i])),
            resumed: resumed_index.map(|i| at(after[i])),
            lost_after_resume: resumed_index
                .map_or(0, |i| after[i..].iter().filter(|p| !p.answered).count()),
        }
    }
}

/// Waits until host `ni` (`name`) shows peer `peer_name` with a `path_mtu` of at most `largest`;
/// returns how long that took and the value. `what` completes "NAME should ... PEER".
fn wait_path_mtu(
    mesh: &mut Mesh,
    (ni, name, peer_name): (usize, &str, &str),
    largest: u32,
    involved: &[&str],
    what: &str,
) -> (Duration, u64) {
    wait_statuses(
        mesh,
        Instant::now(),
        PATH_MTU_DEADLINE,
        &format!("{name} should {what} {peer_name} (`path_mtu` at most {largest})"),
        involved,
        |st| {
            let seen =
                &mesh::peer(&st[ni], peer_name).map_or(Value::Null, |p| p["path_mtu"].clone());
            match seen.as_u64() {
                Some(m) if m <= u64::from(largest) => Ok(m),
                _ => Err(format!(
                    "{name}'s peer {peer_name}: path_mtu {}",
                    peer_field(&st[ni], peer_name, "path_mtu")
                )),
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_mtu_from_every_too_big_report_of_ping() {
        for (line, mtu) in [
            (
                "From 10.9.1.254 icmp_seq=1 Frag needed and DF set (mtu = 1300)",
                1300,
            ),
            ("From fd09:1::254 icmp_seq=1 Packet too big: mtu=1326", 1326),
            ("ping: local error: message too long, mtu=1326", 1326),
            ("ping: local error: message too long, mtu: 1280", 1280),
        ] {
            assert_eq!(reported_mtu(line), Some(mtu), "{line}");
        }
        assert_eq!(
            reported_mtu("3 packets transmitted, 0 received, +3 errors"),
            None
        );
    }

    #[test]
    fn a_gap_runs_from_the_first_lost_probe_to_the_next_answered_one() {
        let change = Instant::now();
        let ms = |m: u64| change + Duration::from_millis(m);
        let probe = |m: u64, answered: bool| Probe {
            sent: ms(m),
            answered,
        };
        let before = Probe {
            sent: change - Duration::from_millis(200),
            answered: false,
        };
        let probes = [
            before,
            probe(0, true),
            probe(200, false),
            probe(900, false),
            probe(1600, true),
            probe(1800, false),
            probe(2000, true),
        ];
        assert_eq!(
            Gap::of(&probes, change),
            Gap {
                sent: 6,
                lost: 3,
                first_lost: Some(Duration::from_millis(200)),
                resumed: Some(Duration::from_millis(1600)),
                lost_after_resume: 1,
            }
        );
        let clean = [probe(0, true), probe(200, true)];
        assert_eq!(Gap::of(&clean, change).first_lost, None);
        let dead = [probe(0, true), probe(200, false)];
        let gap = Gap::of(&dead, change);
        assert_eq!((gap.first_lost.is_some(), gap.resumed), (true, None));
    }
}
