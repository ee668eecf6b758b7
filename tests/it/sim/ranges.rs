//! Address ranges without a consensus store (issue 13): 50 hosts join through 3 admins, the
//! middle 30 while the admins are split in two partitions, so both sides hand out the same free
//! ranges. After the heal every node sees the overlaps, the member granted its range first keeps
//! it, every other gets a new range at once through renewal, and no two live members share a
//! range.

use std::collections::BTreeMap;

use meshd::core::invite::{JoinClient, PendingInvite};
use meshd::core::node::NodeEvent;
use meshd::core::ranges::{ContainerNetwork, Grant, Range4};
use meshd::wire::{InviteSecret, InviteToken};

use super::*;

const ADMINS: usize = 3;
const JOINERS: usize = 50;
/// Joins before the partition; the next 30 happen during it.
const BEFORE_PARTITION: usize = 20;

fn container_network() -> ContainerNetwork {
    ContainerNetwork::new(
        "10.77.0.0/16".parse().unwrap(),
        24,
        Some("fd77::/48".parse().unwrap()),
    )
    .unwrap()
}

/// Admin `i`'s node: an admin certificate granting the network's `i`th range.
pub(super) fn admin_node(now: Instant, i: usize, peers: Vec<PeerSpec>, seed: u64) -> Node {
    let secret = StaticSecret::from_bytes(secret(i));
    let net = container_network();
    let grant = Grant::new(net, net.range(i as u64).unwrap(), SIM_UNIX_SECS - 600).unwrap();
    let certificate = Certificate::issue(
        &network(),
        &format!("h{}", i + 1),
        secret.public_key(),
        secret.signing_key().public(),
        SIM_UNIX_SECS - 60,
        SIM_UNIX_SECS + 30 * 86_400,
        true,
    )
    .and_then(|c| c.with_grant(&network(), Some(grant.to_certificate())))
    .unwrap();
    Node::new(NodeConfig {
        network_secret: Some(network()),
        advertise: vec![addr(i)],
        peers,
        ..node_config(now, secret, certificate, seed)
    })
}

pub(super) fn spec(i: usize) -> PeerSpec {
    PeerSpec {
        name: format!("h{}", i + 1),
        public_key: StaticSecret::from_bytes(secret(i)).public_key(),
        endpoint: Some(addr(i)),
    }
}

/// Which side of the partition host `i` is on: admin 1 (index 0) and the hosts it admitted
/// during the partition on one, everyone else on the other.
fn on_side_a(i: usize, admitted_by: &BTreeMap<usize, usize>) -> bool {
    i == 0 || admitted_by.get(&i) == Some(&0)
}

/// Host `idx` joins through admin `admin` with the real join exchange (invitation, request,
/// admission, reply) and starts as a new simulated host knowing only that admin.
fn join(sim: &mut Sim, idx: usize, admin: usize) -> Certificate {
    let invite = InviteSecret::from_bytes([idx as u8; 32]);
    sim.hosts[admin]
        .node
        .set_pending_invites(vec![PendingInvite {
            id: invite.id(),
            secret_hash: invite.hash(),
            expires_at: SIM_UNIX_SECS + 86_400,
            name: None,
            range: None,
        }]);
    let admin_key = StaticSecret::from_bytes(secret(admin)).public_key();
    let token = InviteToken::new(
        network().network_id(),
        admin_key,
        vec![addr(admin)],
        invite,
        SIM_UNIX_SECS + 86_400,
        None,
    )
    .unwrap();
    let joiner = StaticSecret::from_bytes(secret(idx));
    let mut client = JoinClient::new(
        &token,
        &joiner,
        &format!("h{}", idx + 1),
        vec![addr(idx)],
        &mut CoreRng::from_seed([idx as u8; 32]),
        SIM_UNIX_SECS,
    )
    .unwrap();
    let mut request = client.request().unwrap();
    let now = sim.now;
    let received = sim.hosts[admin]
        .node
        .handle_datagram(now, addr(idx), &mut request);
    assert!(matches!(received, Received::Nothing));
    let reply = std::iter::from_fn(|| sim.hosts[admin].node.poll_event())
        .find_map(|event| match event {
            NodeEvent::JoinAdmitted { reply, .. } => Some(reply),
            _ => None,
        })
        .unwrap_or_else(|| panic!("h{} was not admitted by h{}", idx + 1, admin + 1));
    let result = client.handle_reply(&reply).unwrap().expect("a certificate");
    let certificate = result.certificate;
    let peers = vec![spec(admin)];
    let node = Node::new(NodeConfig {
        advertise: vec![addr(idx)],
        peers: peers.clone(),
        ..node_config(now, joiner, certificate.clone(), 1_000 + idx as u64)
    });
    sim.hosts.push(SimHost {
        node,
        addr: addr(idx),
        secret_bytes: secret(idx),
        peers,
        delivered: Vec::new(),
    });
    certificate
}

fn range_of(certificate: &Certificate) -> (Range4, u64) {
    let grant = Grant::from_certificate(certificate.grant.as_ref().expect("a grant")).unwrap();
    (grant.range, grant.granted_at)
}

#[test]
fn ranges_granted_in_a_partition_are_told_apart_after_the_heal_by_who_was_granted_first() {
    let mut sim = Sim::new(ADMINS, 71);
    for i in 0..ADMINS {
        let peers: Vec<PeerSpec> = (0..ADMINS).filter(|&j| j != i).map(spec).collect();
        sim.hosts[i].peers = peers.clone();
        sim.hosts[i].node = admin_node(sim.now, i, peers, 71 + i as u64);
    }
    sim.run_for(Duration::from_secs(10));

    let mut admitted_by = BTreeMap::new();
    let mut granted = BTreeMap::new();
    for j in 0..JOINERS {
        let idx = ADMINS + j;
        let partitioned = j >= BEFORE_PARTITION;
        if j == BEFORE_PARTITION {
            // Admin h1 alone on one side, h2 and h3 on the other.
            for a in 0..sim.hosts.len() {
                for b in a + 1..sim.hosts.len() {
                    if on_side_a(a, &admitted_by) != on_side_a(b, &admitted_by) {
                        sim.cut(a, b);
                    }
                }
            }
        }
        // During the partition every other join goes through h1, the rest through h2 or h3.
        let admin = match (partitioned, j % 2) {
            (true, 0) => 0,
            (true, _) => 1 + (j / 2) % 2,
            (false, _) => j % ADMINS,
        };
        admitted_by.insert(idx, admin);
        let certificate = join(&mut sim, idx, admin);
        granted.insert(idx, range_of(&certificate));
        if partitioned {
            for other in 0..idx {
                if on_side_a(other, &admitted_by) != on_side_a(idx, &admitted_by) {
                    sim.cut(other, idx);
                }
            }
        }
        sim.run_for(Duration::from_secs(1));
    }
    for i in 0..ADMINS {
        granted.insert(i, range_of(sim.hosts[i].node.certificate()));
    }
    let mut by_range: BTreeMap<Range4, Vec<usize>> = BTreeMap::new();
    for (&host, &(range, _)) in &granted {
        by_range.entry(range).or_default().push(host);
    }
    let collisions = by_range
        .values()
        .filter(|holders| holders.len() > 1)
        .count();
    assert!(
        collisions >= 5,
        "the partition made both sides grant the same ranges ({collisions} shared)"
    );

    for a in 0..sim.hosts.len() {
        for b in a + 1..sim.hosts.len() {
            sim.heal(a, b);
        }
    }
    // After the heal gossip carries the records across, every node sees the overlaps, the
    // losers ask and get new ranges, and their new records spread: until no node sees a conflict.
    let healed = sim.now;
    let settled = |sim: &Sim| {
        let mut ranges: Vec<Range4> = sim
            .hosts
            .iter()
            .filter_map(|h| h.node.grant())
            .map(|g| g.range)
            .collect();
        ranges.sort();
        ranges.dedup();
        ranges.len() == sim.hosts.len()
            && sim
                .hosts
                .iter()
                .all(|h| h.node.status(sim.now).range_conflicts.is_empty())
    };
    sim.run_for(Duration::from_secs(10));
    while !settled(&sim) {
        assert!(
            sim.now - healed < Duration::from_secs(300),
            "conflicts still seen 300 s after the heal: {:?}",
            sim.hosts[0].node.status(sim.now).range_conflicts
        );
        sim.run_for(Duration::from_secs(5));
    }
    eprintln!(
        "{collisions} ranges shared after the partition; settled {:?} after the heal; \
         conflicts detected {} (summed over nodes), ranges reassigned {}",
        sim.now - healed,
        total(&sim, "range_conflicts_detected"),
        total(&sim, "ranges_reassigned")
    );

    // No two live members share a range, as each holds it and as every node sees it.
    let mut finals: BTreeMap<usize, Range4> = BTreeMap::new();
    for (i, host) in sim.hosts.iter().enumerate() {
        let grant = host.node.grant().expect("every member holds a range");
        finals.insert(i, grant.range);
    }
    let mut seen: BTreeMap<Range4, usize> = BTreeMap::new();
    for (&host, range) in &finals {
        if let Some(other) = seen.insert(*range, host) {
            panic!(
                "h{} and h{} both hold {range} after the heal",
                other + 1,
                host + 1
            );
        }
    }
    for i in 0..sim.hosts.len() {
        let status = sim.hosts[i].node.status(sim.now);
        assert!(
            status.range_conflicts.is_empty(),
            "h{} still sees conflicts: {:?}",
            i + 1,
            status.range_conflicts
        );
        for member in &status.members {
            let index: usize = member.name[1..].parse::<usize>().unwrap() - 1;
            assert_eq!(
                member.range,
                Some(finals[&index]),
                "h{} sees {}'s range",
                i + 1,
                member.name
            );
        }
    }

    // The rule: in each shared range the member granted first kept it; the others moved.
    for holders in by_range.values().filter(|holders| holders.len() > 1) {
        let keeper = *holders
            .iter()
            .min_by_key(|&&h| {
                (
                    granted[&h].1,
                    StaticSecret::from_bytes(secret(h)).public_key(),
                )
            })
            .unwrap();
        for &h in holders {
            if h == keeper {
                assert_eq!(finals[&h], granted[&h].0, "h{} was granted first", h + 1);
            } else {
                assert_ne!(finals[&h], granted[&h].0, "h{} had to move", h + 1);
            }
        }
    }
    assert!(total(&sim, "range_conflicts_detected") >= collisions as u64);
    assert!(total(&sim, "range_conflicts_resolved") >= collisions as u64);
    // Each loser got a new range at least once (twice if two admins moved two losers to the
    // same free range at the same moment, which the rule then settles the same way).
    let losers: usize = by_range.values().map(|h| h.len() - 1).sum();
    assert!(total(&sim, "ranges_reassigned") >= losers as u64);
}

/// A counter of any layer (node, join book, membership) summed over every host.
fn total(sim: &Sim, name: &str) -> u64 {
    sim.hosts
        .iter()
        .map(|h| {
            h.node
                .status(sim.now)
                .counters
                .get(name)
                .copied()
                .unwrap_or(0)
        })
        .sum()
}
