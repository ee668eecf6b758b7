//! The layer-2 guard across hosts (issue 14, part 5): in a network with address ranges a member's
//! frames carry only its own range's source addresses, cannot move a MAC learned elsewhere
//! without proving one, cannot teach a host MACs faster than the learning budget, and reserved
//! 802.1D group frames stay on their host. Each refusal is counted, and nothing refused reaches a
//! bridge.

use meshd::core::guard::LEARN_BURST;
use meshd::wire::MacAddr;

use super::ranges::{admin_node, spec};
use super::*;

/// Three hosts holding the network's ranges 0, 1 and 2 (10.77.0.0/24, .1.0/24, .2.0/24).
fn granted_mesh(seed: u64) -> Sim {
    let mut sim = Sim::new(3, seed);
    for i in 0..3 {
        let peers: Vec<PeerSpec> = (0..3).filter(|&j| j != i).map(spec).collect();
        sim.hosts[i].peers = peers.clone();
        sim.hosts[i].node = admin_node(sim.now, i, peers, seed + i as u64);
    }
    sim.run_for(Duration::from_secs(3));
    assert!(sim.all_up());
    sim
}

/// An IPv4/UDP frame from `src_mac`/`src_ip`.
fn ipv4(dst: [u8; 6], src_mac: [u8; 6], src_ip: [u8; 4]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + 28);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&0x0800u16.to_be_bytes());
    f.extend_from_slice(&[0x45, 0, 0, 28, 0, 0, 0x40, 0, 64, 17, 0, 0]);
    f.extend_from_slice(&src_ip);
    f.extend_from_slice(&[10, 77, 0, 9]);
    f.extend_from_slice(&[0x30, 0x39, 0x30, 0x39, 0, 8, 0, 0]);
    f
}

fn counter_of(sim: &Sim, host: usize, name: &str) -> u64 {
    sim.hosts[host]
        .node
        .status(sim.now)
        .counters
        .get(name)
        .copied()
        .unwrap_or(0)
}

#[test]
fn members_frames_carry_their_own_sources_and_cannot_steal_or_churn_macs() {
    let mut sim = granted_mesh(81);
    let h1_mac = mac(0, 1);

    // h2 speaks from its own range: delivered.
    let before = sim.hosts[0].delivered.len();
    sim.send_frame(1, &ipv4(h1_mac, mac(1, 1), [10, 77, 1, 5]));
    sim.run_for(Duration::from_millis(50));
    assert_eq!(sim.hosts[0].delivered.len(), before + 1);

    // h2 claims an address of h3's range, then one outside the subnet: delivered nowhere.
    let h3_before = sim.hosts[2].delivered.len();
    for src_ip in [[10, 77, 2, 5], [192, 0, 2, 1]] {
        sim.send_frame(1, &ipv4(BROADCAST, mac(1, 2), src_ip));
    }
    sim.run_for(Duration::from_millis(50));
    assert_eq!(sim.hosts[0].delivered.len(), before + 1);
    assert_eq!(sim.hosts[2].delivered.len(), h3_before);
    assert_eq!(counter_of(&sim, 0, "rx_l2_foreign_source"), 2);
    assert_eq!(counter_of(&sim, 2, "rx_l2_foreign_source"), 2);

    // h3's container MAC is learned at h3; h2 cannot take it over with a frame that proves no
    // address of its own range, so frames for that MAC still go to h3.
    let victim = mac(2, 7);
    sim.send_frame(2, &ipv4(BROADCAST, victim, [10, 77, 2, 7]));
    sim.run_for(Duration::from_millis(50));
    sim.send_frame(1, &frame(BROADCAST, victim, 1, 64));
    sim.run_for(Duration::from_millis(50));
    assert_eq!(counter_of(&sim, 0, "rx_l2_unproven_move"), 1);
    let port = sim.hosts[0]
        .node
        .status(sim.now)
        .fdb
        .iter()
        .find(|e| e.mac == MacAddr(victim).to_string())
        .map(|e| e.port.clone());
    assert_eq!(port.as_deref(), Some("h3"));

    // Reserved group frames stay on their host, both ways.
    let bpdu = [0x01, 0x80, 0xc2, 0, 0, 0];
    let delivered = sim.hosts[0].delivered.len();
    sim.send_frame(1, &frame(bpdu, mac(1, 1), 2, 64));
    sim.run_for(Duration::from_millis(50));
    assert_eq!(
        counter_of(&sim, 1, "tx_l2_reserved"),
        1,
        "h2 keeps its own BPDU"
    );
    assert_eq!(sim.hosts[0].delivered.len(), delivered);

    // A member inventing source MACs teaches h1 at most the learning budget; the rest is dropped
    // before any bridge sees it.
    let delivered = sim.hosts[0].delivered.len();
    let flood = 3 * LEARN_BURST;
    for n in 0..flood {
        let mut src = [0x02, 0x99, 0, 0, 0, 0];
        src[2..6].copy_from_slice(&(n as u32).to_be_bytes());
        sim.send_frame(1, &ipv4(h1_mac, src, [10, 77, 1, 9]));
    }
    sim.run_for(Duration::from_millis(100));
    let learned = (sim.hosts[0].delivered.len() - delivered) as u64;
    let limited = counter_of(&sim, 0, "rx_l2_learning_limited");
    assert_eq!(learned + limited, flood, "every frame delivered or counted");
    assert!(
        learned <= LEARN_BURST + 50,
        "{learned} new MACs reached h1's bridge in a moment"
    );
    // The sessions and h2's own traffic are unharmed.
    assert!(sim.all_up());
    let delivered = sim.hosts[0].delivered.len();
    sim.send_frame(1, &ipv4(h1_mac, mac(1, 1), [10, 77, 1, 5]));
    sim.run_for(Duration::from_millis(50));
    assert_eq!(sim.hosts[0].delivered.len(), delivered + 1);
}
