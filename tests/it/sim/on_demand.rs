//! On-demand sessions above the full-mesh threshold: a session that carries no data ends, and the
//! next frame brings it back. Keepalives, path probes and rekeys are the session's own upkeep and
//! must not keep it wanted (they once did: an idle session then lived and rekeyed forever).

use meshd::core::node::{FULL_MESH_MAX, ON_DEMAND_IDLE};
use meshd::core::peer::REJECT_AFTER_TIME;
use meshd::wire::{classify, Data, MessageType, PayloadKind};

use super::*;

/// Members that exist only in the node's table (as gossip would teach a node of a large network),
/// so the node is past the full-mesh threshold.
fn add_silent_members(sim: &mut Sim, host: usize, count: usize) {
    for i in 0..count {
        let mut raw = [0x17u8; 32];
        raw[1..3].copy_from_slice(&(i as u16).to_be_bytes());
        let secret = StaticSecret::from_bytes(raw);
        let certificate = certificate(&secret, &network());
        assert!(sim.hosts[host]
            .node
            .add_member(&certificate, None)
            .is_some());
    }
}

fn payload_kind(bytes: &[u8]) -> Option<PayloadKind> {
    Data::new_checked(bytes).ok().map(|d| d.payload_kind())
}

#[test]
fn idle_on_demand_session_ends_and_the_next_frame_brings_it_back() {
    // h1 is everyone's bootstrap member; h2 and h3 know only h1 and learn of each other by gossip,
    // so neither is the other's bootstrap member (those are always kept).
    let mut sim = Sim::new(3, 77);
    let h1 = sim.hosts[0].peers.clone();
    for host in [1, 2] {
        sim.hosts[host].peers = h1.iter().filter(|p| p.name == "h1").cloned().collect();
        sim.restart(host, 77 + host as u64);
        add_silent_members(&mut sim, host, FULL_MESH_MAX + 44);
    }
    // In a large network two given members rarely gossip with each other; here gossip between
    // h2 and h3 is dropped so only data could ask for their session. Everything else flows.
    let is_pair = |a: usize, b: usize| (a == 1 && b == 2) || (a == 2 && b == 1);
    sim.filter = Some(Box::new(move |from, to, bytes| {
        is_pair(from, to) && payload_kind(bytes) == Some(PayloadKind::Membership)
    }));
    sim.capture = Some(Vec::new());
    sim.run_for(Duration::from_secs(15));
    let knows = |sim: &Sim, host: usize, name: &str| {
        sim.hosts[host]
            .node
            .status(sim.now)
            .peers
            .iter()
            .any(|p| p.name == name && p.endpoint.is_some())
    };
    assert!(
        knows(&sim, 1, "h3") && knows(&sim, 2, "h2"),
        "gossip taught h2 and h3 each other"
    );

    // One exchange of frames makes the session.
    exchange(&mut sim, 1, 2, 5, Duration::from_millis(20));
    assert_eq!(sim.state(1, "h3"), "up");
    assert_eq!(sim.state(2, "h2"), "up");
    let last_frame = sim.now;

    // Idle: the session must end within ON_DEMAND_IDLE plus at most one session lifetime (the
    // rekey that may fall inside the wanted period makes a session that then simply expires).
    let bound = ON_DEMAND_IDLE + REJECT_AFTER_TIME + Duration::from_secs(5);
    let mut ended_after = None;
    while sim.now - last_frame < bound {
        sim.run_for(Duration::from_secs(1));
        if sim.state(1, "h3") != "up" && sim.state(2, "h2") != "up" {
            ended_after = Some(sim.now - last_frame);
            break;
        }
    }
    let ended_after = ended_after.unwrap_or_else(|| {
        panic!("the idle session between h2 and h3 still up {bound:?} after the last frame")
    });
    assert!(
        ended_after >= ON_DEMAND_IDLE,
        "ended early: {ended_after:?}"
    );

    // And nothing keeps a session up without data from then on. Gossip that wants to reach the
    // other (dropped here, but asked for) still makes short sessions on demand, as it should;
    // none of them is kept: no path probes, no keepalives beyond the one an initiator sends to
    // confirm a handshake when it has nothing else to send.
    let quiet_from = sim.capture.as_ref().unwrap().len();
    sim.run_until(last_frame + Duration::from_secs(600));
    let (mut probes, mut keepalives, mut responses) = (0, 0, 0);
    for (to, from, bytes) in &sim.capture.as_ref().unwrap()[quiet_from..] {
        if !is_pair(sim.host_of(*from).unwrap(), *to) {
            continue;
        }
        match (classify(bytes), payload_kind(bytes)) {
            (Ok(MessageType::HandshakeResponse), _) => responses += 1,
            (_, Some(PayloadKind::Probe | PayloadKind::ProbeAck)) => probes += 1,
            (_, Some(PayloadKind::Keepalive)) => keepalives += 1,
            _ => {}
        }
    }
    assert_eq!(probes, 0, "an unwanted session's path was still probed");
    assert!(
        keepalives <= responses,
        "{keepalives} keepalives for {responses} handshakes: an unwanted session was kept alive"
    );

    // A new frame brings it back, and arrives.
    let before = sim.delivered_count(2);
    sim.send_frame(1, &frame(mac(2, 1), mac(1, 1), 1_000, 200));
    sim.run_for(Duration::from_secs(2));
    assert_eq!(sim.state(1, "h3"), "up");
    assert!(
        sim.hosts[2].delivered[before..]
            .iter()
            .any(|f| seq_of(f) == 1_000),
        "the frame that asked for the session was delivered"
    );
}

/// The io layer hands the node the wall clock at every tick: an admin whose clock was stepped 25
/// days ahead (certificates last 30) finds its certificate in its last third and renews it at
/// once, instead of 20 days later by the clock it started with.
#[test]
fn a_stepped_wall_clock_is_followed_at_the_next_tick() {
    let mut sim = Sim::new(2, 91);
    sim.run_for(Duration::from_secs(3));
    let renewed = |sim: &Sim| {
        sim.hosts[0]
            .node
            .status(sim.now)
            .counters
            .get("certificates_renewed")
            .copied()
            .unwrap_or(0)
    };
    assert_eq!(renewed(&sim), 0);
    let expires = sim.hosts[0].node.certificate().expires_at;
    let now = sim.now;
    sim.hosts[0]
        .node
        .set_wall_clock(now, (SIM_UNIX_SECS + 91 + 25 * 86_400) * 1_000_000_000);
    sim.run_for(Duration::from_secs(3));
    assert_eq!(renewed(&sim), 1);
    assert!(sim.hosts[0].node.certificate().expires_at > expires + 20 * 86_400);
}
