//! Address ranges on real hosts: each host holds its own range, publishes it in `subnet.env` and
//! on its bridge, the gateways reach each other through meshd, and `meshd invite --range` refuses
//! ranges that are not the network's or are held.

use std::fs;
use std::time::Duration;

use crate::netns::cmd::{self, exec_in};
use crate::netns::mesh::meshd;

use super::hosts::MeshHosts;

#[test]
fn each_host_holds_its_own_range_and_the_gateways_reach_each_other() {
    let Some(mut hosts) = MeshHosts::start("rg", "") else {
        return;
    };
    let (h1, h2) = (hosts.host_network(0), hosts.host_network(1));
    assert_eq!(
        h1.range.to_string(),
        "10.77.0.0/24",
        "the founder holds the first range"
    );
    assert_eq!(
        h2.range.to_string(),
        "10.77.1.0/24",
        "the joiner the lowest free one"
    );
    assert_eq!(h2.gateway.to_string(), "10.77.1.1");
    assert_eq!(h2.subnet.to_string(), "10.77.0.0/16");

    let env = fs::read_to_string(hosts.dir(1).join("subnet.env")).expect("subnet.env written");
    assert!(env.contains("FLANNEL_NETWORK=10.77.0.0/16\n"), "{env}");
    assert!(env.contains("FLANNEL_SUBNET=10.77.1.1/24\n"), "{env}");
    assert!(env.contains("FLANNEL_IPMASQ=false\n"), "{env}");

    // Each gateway is on its bridge with the whole subnet's prefix: one L2 segment.
    let addrs = cmd::check(
        crate::netns::cmd::ip_in(hosts.ns(1), &["-o", "addr", "show", "dev", "brm"]),
        cmd::SHORT,
    );
    assert!(addrs.stdout.contains("10.77.1.1/32"), "{}", addrs.stdout);
    let ping = cmd::run(
        exec_in(
            hosts.ns(0),
            "ping",
            &["-c", "3", "-i", "0.2", "-W", "2", "10.77.1.1"],
        ),
        Duration::from_secs(15),
    );
    assert!(
        ping.success(),
        "h1 cannot reach h2's gateway: {}",
        ping.describe()
    );

    // Members see each other's ranges.
    let status = hosts.status(0);
    let member = status["members"]
        .as_array()
        .and_then(|m| m.iter().find(|m| m["name"] == "h2"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(member["range"], "10.77.1.0/24", "{status:#}");

    // invite --range: not a host range, held by h2, then a free one.
    let config = hosts.config(0).to_str().unwrap().to_string();
    let invite = |range: &str| {
        cmd::run(
            meshd(&["invite", "--config", &config, "--range", range]),
            cmd::SHORT,
        )
    };
    let out = invite("10.77.9.0/25");
    assert_eq!(
        out.status.and_then(|s| s.code()),
        Some(2),
        "{}",
        out.describe()
    );
    assert!(
        out.stderr.contains("not one of the /24 host ranges"),
        "{}",
        out.stderr
    );
    let out = invite("10.77.1.0/24");
    assert_eq!(
        out.status.and_then(|s| s.code()),
        Some(2),
        "{}",
        out.describe()
    );
    assert!(out.stderr.contains("`h2`"), "{}", out.stderr);
    let out = invite("10.77.9.0/24");
    assert!(out.success(), "{}", out.describe());

    // The range is the certificate's: a restarted host holds the same one.
    hosts.restart(1);
    assert_eq!(hosts.host_network(1).range, h2.range);
}
