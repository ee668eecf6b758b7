//! Paths on the virtual network (issue 4): relaying around a cut link and back, a partition and
//! its heal, a host that changes address, and path MTU discovery with the answers a too-big frame
//! gets. Times printed are virtual.

use super::*;

/// How host `host` reaches peer `name`: `Some(relay)` or `None` for direct.
fn via(sim: &Sim, host: usize, name: &str) -> Option<String> {
    peer(sim, host, name).via
}

fn peer(sim: &Sim, host: usize, name: &str) -> meshd::status::PeerStatus {
    sim.hosts[host]
        .node
        .status(sim.now)
        .peers
        .into_iter()
        .find(|p| p.name == name)
        .unwrap_or_else(|| panic!("host {host} has no peer {name}"))
}

/// Runs in 100 ms steps until `done` holds; returns how long that took, or panics with `what`.
fn wait_for(
    sim: &mut Sim,
    limit: Duration,
    what: &str,
    mut done: impl FnMut(&Sim) -> bool,
) -> Duration {
    let start = sim.now;
    while sim.now - start < limit {
        if done(sim) {
            return sim.now - start;
        }
        sim.run_for(Duration::from_millis(100));
    }
    panic!("not within {limit:?}: {what}");
}

fn total(sim: &Sim, name: &str) -> u64 {
    (0..sim.hosts.len()).map(|h| sim.counter(h, name)).sum()
}

#[test]
fn a_cut_pair_is_relayed_then_goes_direct_again_within_seconds() {
    let mut sim = Sim::new(4, 51);
    sim.run_for(Duration::from_secs(1));
    assert!(sim.all_up());
    exchange(&mut sim, 0, 1, 5, Duration::from_millis(20));

    sim.cut(0, 1);
    let relayed = wait_for(&mut sim, Duration::from_secs(30), "h1 and h2 relay", |s| {
        via(s, 0, "h2").is_some() && via(s, 1, "h1").is_some()
    });
    let relay = via(&sim, 0, "h2").unwrap();
    println!("cut h1-h2: relayed via {relay} after {relayed:?}");
    assert!(relay == "h3" || relay == "h4");
    assert_eq!(peer(&sim, 0, "h2").state, "up");
    exchange(&mut sim, 0, 1, 20, Duration::from_millis(20));
    assert!(total(&sim, "relay_forwarded") > 0);
    assert_eq!(sim.counter(0, "path_to_relay"), 1);
    // The relay carries end-to-end sealed datagrams: a relayed path is narrower by the envelope.
    let direct_mtu = peer(&sim, 0, "h3").path_mtu.unwrap();
    let relayed_mtu = peer(&sim, 0, "h2").path_mtu.unwrap();
    assert!(relayed_mtu < direct_mtu, "{relayed_mtu} vs {direct_mtu}");

    sim.heal(0, 1);
    let back = wait_for(
        &mut sim,
        Duration::from_secs(10),
        "h1 and h2 direct again",
        |s| via(s, 0, "h2").is_none() && via(s, 1, "h1").is_none(),
    );
    println!("healed: direct again after {back:?}");
    exchange(&mut sim, 0, 1, 10, Duration::from_millis(20));
    assert_eq!(sim.counter(0, "path_to_direct"), 1);
    let forwarded = total(&sim, "relay_forwarded");
    exchange(&mut sim, 0, 1, 10, Duration::from_millis(20));
    assert_eq!(
        total(&sim, "relay_forwarded"),
        forwarded,
        "no longer relayed"
    );
}

#[test]
fn hosts_that_never_reached_each_other_come_up_through_a_relay() {
    let mut sim = Sim::new(4, 52);
    sim.cut(0, 1);
    let up = wait_for(
        &mut sim,
        Duration::from_secs(30),
        "h1 and h2 up via a relay",
        |s| {
            peer(s, 0, "h2").state == "up" && via(s, 0, "h2").is_some() && via(s, 1, "h1").is_some()
        },
    );
    println!("blocked from the start: session through a relay after {up:?}");
    exchange(&mut sim, 0, 1, 10, Duration::from_millis(20));
    let member = sim.hosts[0]
        .node
        .status(sim.now)
        .members
        .into_iter()
        .find(|m| m.name == "h2");
    if let Some(m) = member {
        assert!(!m.direct && m.via.is_some(), "members show the relay too");
    }
}

#[test]
fn broadcast_reaches_every_host_once_when_a_pair_is_relayed() {
    let mut sim = Sim::new(4, 53);
    sim.cut(0, 1);
    sim.cut(2, 3);
    wait_for(
        &mut sim,
        Duration::from_secs(30),
        "both cut pairs relayed",
        |s| {
            via(s, 0, "h2").is_some()
                && via(s, 1, "h1").is_some()
                && via(s, 2, "h4").is_some()
                && via(s, 3, "h3").is_some()
        },
    );
    for sender in 0..4 {
        let before: Vec<usize> = sim.hosts.iter().map(|h| h.delivered.len()).collect();
        sim.send_frame(
            sender,
            &frame(BROADCAST, mac(sender, 7), 100 + sender as u64, 80),
        );
        sim.run_for(Duration::from_millis(200));
        for (h, host) in sim.hosts.iter().enumerate() {
            let got = host.delivered.len() - before[h];
            let want = usize::from(h != sender);
            assert_eq!(
                got,
                want,
                "broadcast from h{} reached h{} {got} times",
                sender + 1,
                h + 1
            );
        }
    }
}

#[test]
fn a_partition_keeps_each_half_working_and_heals_without_restarts() {
    let mut sim = Sim::new(4, 54);
    sim.run_for(Duration::from_secs(1));
    assert!(sim.all_up());
    for a in [0, 1] {
        for b in [2, 3] {
            sim.cut(a, b);
        }
    }
    // Long enough for sessions across the split to die and gossip to mark the other half down.
    sim.run_for(Duration::from_secs(60));
    exchange(&mut sim, 0, 1, 10, Duration::from_millis(20));
    exchange(&mut sim, 2, 3, 10, Duration::from_millis(20));
    assert_ne!(sim.state(0, "h3"), "up");
    let down = |s: &Sim, host: usize, name: &str| {
        s.hosts[host]
            .node
            .status(s.now)
            .members
            .iter()
            .any(|m| m.name == name && (m.state == "down" || m.state == "suspect"))
    };
    assert!(
        down(&sim, 0, "h3") && down(&sim, 3, "h2"),
        "gossip saw the split"
    );

    for a in [0, 1] {
        for b in [2, 3] {
            sim.heal(a, b);
        }
    }
    let merged = wait_for(
        &mut sim,
        Duration::from_secs(40),
        "all up and direct",
        |s| {
            s.all_up()
                && (0..4).all(|h| {
                    s.hosts[h]
                        .node
                        .status(s.now)
                        .peers
                        .iter()
                        .all(|p| p.via.is_none())
                })
        },
    );
    let alive = wait_for(
        &mut sim,
        Duration::from_secs(30),
        "all members alive",
        |s| (0..4).all(|h| members_alive(s, h) == 3),
    );
    println!("partition healed: sessions after {merged:?}, membership after {alive:?} more");
    exchange(&mut sim, 0, 3, 10, Duration::from_millis(20));
    exchange(&mut sim, 1, 2, 10, Duration::from_millis(20));
}

#[test]
fn a_host_that_changes_address_is_followed_by_its_peers() {
    let mut sim = Sim::new(3, 55);
    sim.run_for(Duration::from_secs(1));
    exchange(&mut sim, 0, 2, 5, Duration::from_millis(20));
    let new_addr: SocketAddr = "10.0.0.99:6655".parse().unwrap();
    sim.hosts[2].addr = new_addr;
    // What the io layer does when it sees the host's addresses change.
    sim.hosts[2].node.set_advertise(vec![new_addr]);
    // Only h1 sends: h3 must be found from its own packets alone.
    let start = sim.delivered_count(2);
    let changed = sim.now;
    let mut resumed = None;
    for seq in 0..300u64 {
        sim.send_frame(0, &frame(mac(2, 1), mac(0, 1), 1000 + seq, 200));
        sim.run_for(Duration::from_millis(50));
        if sim.delivered_count(2) > start {
            resumed = Some(sim.now - changed);
            break;
        }
    }
    let resumed = resumed.expect("traffic to the readdressed host resumed");
    println!("readdressed host reached again after {resumed:?}");
    for host in [0, 1] {
        assert_eq!(
            peer(&sim, host, "h3").endpoint.as_deref(),
            Some("10.0.0.99:6655")
        );
    }
    exchange(&mut sim, 0, 2, 10, Duration::from_millis(20));
    exchange(&mut sim, 1, 2, 10, Duration::from_millis(20));
}

/// An IPv4 frame of `ip_len` bytes of IP packet with DF set (or not), UDP inside.
fn ipv4_frame(dst: [u8; 6], src: [u8; 6], ip_len: usize, df: bool) -> Vec<u8> {
    let mut f = vec![0u8; 14 + ip_len];
    f[..6].copy_from_slice(&dst);
    f[6..12].copy_from_slice(&src);
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    let ip = &mut f[14..];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&(ip_len as u16).to_be_bytes());
    ip[6] = if df { 0x40 } else { 0 };
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&[10, 77, 0, 11]);
    ip[16..20].copy_from_slice(&[10, 77, 0, 21]);
    let mut sum = 0u32;
    for pair in ip[..20].chunks(2) {
        sum += u32::from(u16::from_be_bytes([pair[0], pair[1]]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    ip[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    ip[20..22].copy_from_slice(&4000u16.to_be_bytes());
    ip[22..24].copy_from_slice(&5000u16.to_be_bytes());
    ip[24..26].copy_from_slice(&((ip_len - 20) as u16).to_be_bytes());
    f
}

#[test]
fn a_narrow_path_is_measured_and_too_big_frames_are_answered() {
    let mut sim = Sim::new(2, 56);
    // h2 sits behind a 1400-byte link: datagrams over 1400 - 28 bytes vanish without a trace.
    sim.narrow.push((1, 1400 - 28));
    sim.run_for(Duration::from_secs(5));
    let mtu = peer(&sim, 0, "h2").path_mtu.expect("a session");
    println!("path MTU to a host behind a 1400-byte link: {mtu} (IP bytes inside the tunnel)");
    let exact = 1400 - 28 - 32 - 14;
    assert!(mtu <= exact && mtu + 8 >= exact, "{mtu} vs {exact}");
    // Learn where h2's container is, then send it a packet that does not fit.
    sim.send_frame(1, &frame(BROADCAST, mac(1, 1), 1, 60));
    sim.run_for(Duration::from_millis(50));
    sim.send_frame(0, &ipv4_frame(mac(1, 1), mac(0, 1), 1500, true));
    let icmp = sim.hosts[0]
        .node
        .poll_tap_frame()
        .expect("an ICMP answer for the TAP");
    let answer = icmp.bytes();
    assert_eq!(&answer[..6], &mac(0, 1), "back to the sender");
    assert_eq!(&answer[6..12], &mac(1, 1));
    assert_eq!(
        (answer[14 + 20], answer[14 + 21]),
        (3, 4),
        "fragmentation needed"
    );
    let advertised = u16::from_be_bytes([answer[14 + 26], answer[14 + 27]]);
    assert_eq!(u32::from(advertised), mtu);
    sim.hosts[0].node.recycle(icmp);
    assert_eq!(sim.counter(0, "tx_too_big_icmp"), 1);
    // A packet of exactly the advertised size gets through whole.
    let before = sim.delivered_count(1);
    sim.send_frame(0, &ipv4_frame(mac(1, 1), mac(0, 1), mtu as usize, true));
    sim.run_for(Duration::from_millis(50));
    assert_eq!(sim.delivered_count(1), before + 1);
    // Without DF the packet is fragmented instead, and every fragment arrives.
    sim.send_frame(0, &ipv4_frame(mac(1, 1), mac(0, 1), 1500, false));
    sim.run_for(Duration::from_millis(50));
    assert_eq!(sim.delivered_count(1), before + 3, "two fragments");
    assert_eq!(sim.counter(0, "tx_too_big_fragmented"), 1);
    // Anything else that does not fit is dropped and counted.
    sim.send_frame(0, &frame(mac(1, 1), mac(0, 1), 9, 1514));
    assert_eq!(sim.counter(0, "tx_too_big_not_ip"), 1);
}

#[test]
fn a_jumbo_underlay_is_used_when_the_path_carries_it() {
    UNDERLAY_MTU.with(|m| m.set(9000));
    let mut sim = Sim::new(3, 57);
    for i in 0..3 {
        let peers = sim.hosts[i].peers.clone();
        sim.hosts[i].node =
            make_node_with_max_frame(sim.now, secret(i), peers, 57 + i as u64, 9018);
    }
    // h3's link is a standard 1500-byte one.
    sim.narrow.push((2, 1500 - 28));
    sim.run_for(Duration::from_secs(5));
    UNDERLAY_MTU.with(|m| m.set(1500));
    let jumbo = peer(&sim, 0, "h2").path_mtu.unwrap();
    let standard = peer(&sim, 0, "h3").path_mtu.unwrap();
    println!("path MTU over a jumbo path {jumbo}, over a 1500-byte one {standard}");
    assert_eq!(jumbo as usize, 9000 - 28 - 32 - 14);
    assert!(standard <= 1426 && standard + 8 >= 1426, "{standard}");
    sim.send_frame(1, &frame(BROADCAST, mac(1, 1), 1, 60));
    sim.run_for(Duration::from_millis(50));
    let before = sim.delivered_count(1);
    sim.send_frame(0, &frame(mac(1, 1), mac(0, 1), 2, 14 + jumbo as usize));
    sim.run_for(Duration::from_millis(50));
    assert_eq!(
        sim.delivered_count(1),
        before + 1,
        "a jumbo frame crossed whole"
    );
}

#[test]
fn a_path_that_narrows_under_traffic_is_measured_again() {
    let mut sim = Sim::new(2, 58);
    sim.run_for(Duration::from_secs(5));
    assert_eq!(
        peer(&sim, 0, "h2").path_mtu,
        Some(1426),
        "a plain 1500-byte path"
    );
    // A narrower link appears on the way: nothing tells meshd but the loss of full-size probes.
    sim.narrow.push((1, 1400 - 28));
    let found = wait_for(
        &mut sim,
        Duration::from_secs(20),
        "the narrower path measured",
        |s| {
            peer(s, 0, "h2").path_mtu.is_some_and(|m| m <= 1326)
                && peer(s, 1, "h1").path_mtu.is_some_and(|m| m <= 1326)
        },
    );
    println!("path narrowed to 1400: measured again after {found:?}");
    assert!(sim.counter(0, "pmtu_black_holes") >= 1);
    assert_eq!(
        peer(&sim, 0, "h2").via,
        None,
        "a narrower path is not a broken one"
    );
}

#[test]
fn a_partition_heals_into_one_membership_whatever_its_length() {
    // Splits of different lengths hit different moments of SWIM: before suspicion, while
    // suspect, and after each half declared the other down but before sessions time out.
    for (seed, split_secs) in [(61, 2), (62, 4), (63, 6), (64, 9), (65, 15), (66, 25)] {
        let mut sim = Sim::new(4, seed);
        sim.run_for(Duration::from_secs(10));
        assert!((0..4).all(|h| members_alive(&sim, h) == 3), "formed");
        for a in [0, 1] {
            for b in [2, 3] {
                sim.cut(a, b);
            }
        }
        sim.run_for(Duration::from_secs(split_secs));
        for a in [0, 1] {
            for b in [2, 3] {
                sim.heal(a, b);
            }
        }
        let healed = wait_for(
            &mut sim,
            Duration::from_secs(30),
            &format!("one membership again after a {split_secs} s split"),
            |s| (0..4).all(|h| members_alive(s, h) == 3),
        );
        println!("split {split_secs} s: every member alive everywhere {healed:?} after the heal");
    }
}
