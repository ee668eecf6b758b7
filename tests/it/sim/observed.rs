//! Observed addresses: what members' probe answers say our probes came from. One member's word
//! used to be published at the front of our signed record at once, so a member answering every
//! probe with a new address made us re-sign and re-gossip our record each time and steered new
//! sessions to an address of its choice. An address is now published only when two distinct
//! members report it, and re-signing is rate-limited.
//!
//! The simulated network translates host 0's source address (`Sim::source_nat`): towards the
//! lying member every datagram seems to come from a new address, which that member honestly
//! reports (to host 0 that is the same as a member that lies); towards the others a genuine NAT
//! maps host 0 to one public address.

use std::collections::HashSet;

use meshd::core::node::{CONFIRMATIONS, PUBLISH_BURST};
use meshd::core::peer::PROBE_INTERVAL;

use super::*;

const LIAR: usize = 1;
const FAKES: u64 = 100;

/// What host `viewer` believes host 0's record says its endpoints are.
fn endpoints_of_host0(sim: &Sim, viewer: usize) -> Vec<SocketAddr> {
    sim.hosts[viewer]
        .node
        .snapshot(sim.now)
        .members
        .into_iter()
        .find(|m| m.name == "h1")
        .map(|m| m.endpoints)
        .unwrap_or_default()
}

#[test]
fn one_member_reporting_fake_addresses_publishes_none_and_a_nat_seen_by_two_is_published() {
    let mut sim = Sim::new(4, 41);
    sim.run_for(Duration::from_secs(2));
    assert_eq!(sim.counter(0, "endpoint_records_published"), 0);

    let nat_public: SocketAddr = "192.0.2.100:40000".parse().unwrap();
    // The liar names a new address for every probe interval: each liveness probe's answer
    // carries a fresh one (a new one per datagram would only make it roam faster).
    let epoch = std::rc::Rc::new(std::cell::Cell::new(0u32));
    let liar_epoch = epoch.clone();
    sim.source_nat = Some(Box::new(move |from, to| match (from, to) {
        (0, LIAR) => {
            let ip = std::net::Ipv4Addr::from(0x6440_0000 + liar_epoch.get());
            Some(SocketAddr::from((ip, 9_999)))
        }
        (0, _) => Some(nat_public),
        _ => None,
    }));
    for n in 1..=FAKES as u32 + 2 {
        epoch.set(n);
        sim.run_for(PROBE_INTERVAL + Duration::from_secs(1));
    }
    assert!(
        sim.counter(0, "observed_reports") >= FAKES,
        "the liar answered at least {FAKES} probes ({})",
        sim.counter(0, "observed_reports")
    );
    let fakes: HashSet<SocketAddr> = sim
        .nat_mappings
        .keys()
        .copied()
        .filter(|a| *a != nat_public)
        .collect();
    assert!(
        fakes.len() as u64 >= FAKES,
        "{} fake addresses",
        fakes.len()
    );

    // Two members (hosts 2 and 3) saw the one NAT mapping: it is confirmed and published, in
    // one re-signed record. The liar's reports, however many, confirm nothing.
    let published = sim.counter(0, "endpoint_records_published");
    let confirmed = sim.counter(0, "observed_confirmed");
    assert_eq!(confirmed, 1, "only the NAT mapping was confirmed");
    assert_eq!(
        published, 1,
        "one record version for the one confirmed address (bound: confirmed addresses, \
         and never more than {PUBLISH_BURST} at once)"
    );
    for viewer in 1..4 {
        let seen = endpoints_of_host0(&sim, viewer);
        assert_eq!(
            seen.first(),
            Some(&nat_public),
            "host {viewer} learned the NAT mapping first: {seen:?}"
        );
        assert!(
            seen.iter().all(|a| !fakes.contains(a)),
            "host {viewer} was told a fake address: {seen:?}"
        );
    }
    const {
        assert!(
            CONFIRMATIONS >= 2,
            "one member alone never confirms an address"
        )
    };
    // Traffic still flows both ways through the translations.
    exchange(&mut sim, 0, 2, 5, Duration::from_millis(20));
}
