//! Join requests on a large node: nothing about a join request is believed, walked or stored
//! before its length and mac1 passed. A four-byte datagram of type JoinRequest once reached the
//! join handler first, was counted as a request and built the bootstrap list by walking the whole
//! member table under the node lock (20,000 of them took 7 s on a 60,000-member node). Work is
//! measured as counted work: the node's `join_table_entries_visited`, never wall-clock time.

use meshd::core::invite::{JoinClient, PendingInvite};
use meshd::wire::{InviteSecret, InviteToken, JOIN_REQUEST_MIN_LEN};

use super::*;

const MEMBERS: usize = 60_000;
const FLOOD: usize = 20_000;

/// Adds `count` members to host 0's table as gossip would, without a session. Their certificates
/// are copies of one with the key and name changed: the table does not verify what it is handed
/// (membership did), and 60,000 real signatures would only slow the test down.
fn add_members(sim: &mut Sim, count: usize) {
    let template = certificate(&StaticSecret::from_bytes([0x17; 32]), &network());
    for i in 0..count {
        let mut raw = [0x17u8; 32];
        raw[1..5].copy_from_slice(&(i as u32).to_be_bytes());
        let mut certificate = template.clone();
        certificate.static_key = PublicKey::from_bytes(raw);
        certificate.name = format!("m{i}");
        assert!(sim.hosts[0].node.add_member(&certificate, None).is_some());
    }
}

/// Every counter of host 0, node and join book alike, by name.
fn counters(sim: &Sim) -> std::collections::HashMap<&'static str, u64> {
    sim.hosts[0]
        .node
        .snapshot(sim.now)
        .counters
        .into_iter()
        .collect()
}

/// Delivers `datagrams` to host 0 straight into the node (the simulator's invariant check after
/// each one would walk the 60,000-member table itself) and returns how each counter moved.
fn flood(
    sim: &mut Sim,
    datagrams: impl Iterator<Item = Vec<u8>>,
) -> std::collections::HashMap<&'static str, u64> {
    let before = counters(sim);
    let attacker: SocketAddr = "10.9.9.9:1234".parse().unwrap();
    let now = sim.now;
    for mut bytes in datagrams {
        let received = sim.hosts[0].node.handle_datagram(now, attacker, &mut bytes);
        assert!(matches!(received, Received::Nothing));
    }
    sim.hosts[0].node.check_invariants().unwrap();
    counters(sim)
        .into_iter()
        .map(|(name, value)| (name, value - before[name]))
        .filter(|(_, moved)| *moved > 0)
        .collect()
}

#[test]
fn four_byte_join_requests_cost_no_more_than_unknown_types_on_a_large_node() {
    let mut sim = Sim::new(2, 31);
    sim.run_for(Duration::from_millis(50));
    add_members(&mut sim, MEMBERS);

    let unknown = flood(&mut sim, (0..FLOOD).map(|_| vec![1, 0x7f, 0, 0]));
    let joins = flood(&mut sim, (0..FLOOD).map(|_| vec![1, 5, 0, 0]));

    let n = FLOOD as u64;
    assert_eq!(
        unknown,
        [("rx_datagrams", n), ("rx_unknown_type", n)].into(),
        "unknown types are counted and dropped"
    );
    assert_eq!(
        joins,
        [("rx_datagrams", n), ("rx_malformed", n)].into(),
        "a truncated join request is malformed: not a join request, no table entry visited"
    );
}

#[test]
fn join_requests_that_pass_mac1_walk_no_table_until_admitted() {
    let mut sim = Sim::new(2, 32);
    sim.run_for(Duration::from_millis(50));
    add_members(&mut sim, MEMBERS);
    let victim = StaticSecret::from_bytes(secret(0)).public_key();

    // Well-formed requests with a valid mac1 but no invitation behind them: the rate limiter
    // and the book refuse them, and none may walk the table.
    let key = mac1_key(&victim);
    let mut rng = CoreRng::from_seed([9; 32]);
    let forged = flood(
        &mut sim,
        (0..FLOOD).map(|_| {
            let mut msg = vec![0u8; JOIN_REQUEST_MIN_LEN + 40];
            rng.fill_bytes(&mut msg);
            msg[..4].copy_from_slice(&[1, 5, 0, 0]);
            let covered = msg.len() - 16;
            let mac = compute_mac1(&key, &msg[..covered]);
            msg[covered..].copy_from_slice(&mac);
            msg
        }),
    );
    let handed = forged.get("join_rx_requests").copied().unwrap_or(0);
    let limited = forged.get("rx_handshake_ratelimited").copied().unwrap_or(0);
    assert_eq!(handed + limited, FLOOD as u64, "{forged:?}");
    assert!(
        handed <= 100,
        "at most the rate limit's budget reached the book ({handed})"
    );
    assert_eq!(forged.get("join_table_entries_visited"), None, "{forged:?}");

    // A genuine joiner with an invitation is admitted, and only its request costs the walk (the
    // name check and the bootstrap list).
    sim.run_for(Duration::from_secs(5));
    let invite = InviteSecret::from_bytes([0x33; 32]);
    sim.hosts[0].node.set_pending_invites(vec![PendingInvite {
        id: invite.id(),
        secret_hash: invite.hash(),
        expires_at: SIM_UNIX_SECS + 86_400,
        name: None,
        range: None,
    }]);
    let token = InviteToken::new(
        network().network_id(),
        victim,
        vec![addr(0)],
        invite,
        SIM_UNIX_SECS + 86_400,
        None,
    )
    .unwrap();
    let joiner = StaticSecret::from_bytes([0x55; 32]);
    let mut client = JoinClient::new(
        &token,
        &joiner,
        "newcomer",
        vec![addr(7)],
        &mut CoreRng::from_seed([3; 32]),
        SIM_UNIX_SECS,
    )
    .unwrap();
    let request = client.request().unwrap();
    let admitted = flood(&mut sim, std::iter::once(request));
    assert_eq!(admitted.get("join_admitted"), Some(&1), "{admitted:?}");
    let walked = admitted["join_table_entries_visited"];
    assert!(
        walked >= MEMBERS as u64,
        "the admitted request's name check walked the table ({walked})"
    );
}
