//! `meshd attach` / `meshd detach` on two hosts running meshd: a namespace attached on each host
//! reaches the other; `--ip`, `--mac` and `--pid` do what they say; bad arguments exit 2 before
//! anything is made; `--vlan` either works (a VLAN interface carries the address) or, on a kernel
//! without 802.1Q, exits 1 naming the reason and leaves nothing behind; detach releases the
//! address and is idempotent.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use meshd::config::Config;
use meshd::io::addresses::AddressStore;
use meshd::io::veth::VethNames;

use crate::netns::cmd::{self, check, ip_in};
use crate::netns::mesh::meshd_in;

use super::cni::{ping_within, ContainerNs};
use super::hosts::MeshHosts;

fn held(config: &std::path::Path, owner: &str) -> Vec<std::net::Ipv4Addr> {
    let config = Config::load(config).expect("load config");
    AddressStore::open(&config.state_dir)
        .expect("open store")
        .lookup_owner(owner)
        .expect("read store")
}

fn attach(hosts: &MeshHosts, i: usize, args: &[&str]) -> cmd::Output {
    let mut all = vec!["attach", "--config", hosts.config(i).to_str().unwrap()];
    all.extend_from_slice(args);
    cmd::run(meshd_in(hosts.ns(i), &all), Duration::from_secs(20))
}

fn detach(hosts: &MeshHosts, i: usize, args: &[&str]) -> cmd::Output {
    let mut all = vec!["detach", "--config", hosts.config(i).to_str().unwrap()];
    all.extend_from_slice(args);
    cmd::run(meshd_in(hosts.ns(i), &all), Duration::from_secs(20))
}

fn exit_code(out: &cmd::Output) -> Option<i32> {
    out.status.and_then(|s| s.code())
}

/// Whether this kernel can make 802.1Q interfaces (probed in a scratch namespace).
fn kernel_has_vlan() -> bool {
    let ns = ContainerNs::new("mcatvlanprobe");
    check(
        ip_in(
            &ns.name,
            &["link", "add", "p0", "type", "veth", "peer", "name", "p1"],
        ),
        cmd::SHORT,
    );
    cmd::run(
        ip_in(
            &ns.name,
            &[
                "link", "add", "link", "p0", "name", "p0.7", "type", "vlan", "id", "7",
            ],
        ),
        cmd::SHORT,
    )
    .success()
}

struct Sleeper(Child);

impl Drop for Sleeper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn attached_namespaces_on_two_hosts_reach_each_other() {
    let Some(hosts) = MeshHosts::start("at", "") else {
        return;
    };
    let net1 = hosts.host_network(1);
    let a = ContainerNs::new("mcatna");
    let b = ContainerNs::new("mcatnb");

    // h1: the lowest free address of its range.
    let out_a = attach(&hosts, 0, &["--netns", &a.name]);
    assert!(out_a.success(), "attach a: {}", out_a.describe());
    let addr_a = held(hosts.config(0), "attach:mcatna/eth1");
    assert_eq!(addr_a.len(), 1, "{addr_a:?}");
    assert!(
        out_a.stdout.contains(&addr_a[0].to_string()),
        "{}",
        out_a.stdout
    );
    assert!(out_a.stdout.contains("eth1"), "{}", out_a.stdout);

    // h2: a chosen address of its range (reserved there), a chosen MAC and interface name.
    let wanted = net1.range.nth(77).unwrap().to_string();
    let out_b = attach(
        &hosts,
        1,
        &[
            "--netns",
            &b.name,
            "--ip",
            &format!("{wanted}/16"),
            "--mac",
            "02:aa:bb:cc:dd:01",
            "--ifname",
            "mesh0",
        ],
    );
    assert!(out_b.success(), "attach b: {}", out_b.describe());
    assert_eq!(
        held(hosts.config(1), "attach:mcatnb/mesh0"),
        vec![wanted.parse::<std::net::Ipv4Addr>().unwrap()]
    );
    let link_b = check(
        ip_in(&b.name, &["-o", "link", "show", "dev", "mesh0"]),
        cmd::SHORT,
    );
    assert!(
        link_b.stdout.contains("02:aa:bb:cc:dd:01"),
        "{}",
        link_b.stdout
    );

    if let Err(last) = ping_within(&a.name, &wanted) {
        panic!("a cannot reach b: {last}");
    }

    // --pid: the namespace of a process.
    let sleeper = Sleeper(
        Command::new("ip")
            .args(["netns", "exec", &a.name, "sleep", "120"])
            .stdin(Stdio::null())
            .spawn()
            .expect("start sleep"),
    );
    let pid = sleeper.0.id().to_string();
    let by_pid = attach(&hosts, 0, &["--pid", &pid, "--ifname", "eth2"]);
    assert!(by_pid.success(), "attach --pid: {}", by_pid.describe());
    let eth2 = check(
        ip_in(&a.name, &["-o", "addr", "show", "dev", "eth2"]),
        cmd::SHORT,
    );
    let owner_pid = format!("attach:pid{pid}/eth2");
    let addr_pid = held(hosts.config(0), &owner_pid);
    assert!(
        eth2.stdout.contains(&addr_pid[0].to_string()),
        "{}",
        eth2.stdout
    );
    assert!(detach(&hosts, 0, &["--pid", &pid, "--ifname", "eth2"]).success());
    assert!(held(hosts.config(0), &owner_pid).is_empty());
    drop(sleeper);

    // Bad arguments: exit 2, nothing made.
    let c = ContainerNs::new("mcatnc");
    for (args, says) in [
        (vec!["--netns", "mcat-no-such-ns"], "does not exist"),
        (
            vec!["--netns", &c.name, "--ip", "10.99.0.5"],
            "outside the container subnet",
        ),
        (vec!["--netns", &c.name, "--ip", "10.77.0.5/24"], "use /16"),
        (
            vec!["--netns", &c.name, "--ip", "10.77.1.5"],
            "not in this host's range",
        ),
        (vec!["--netns", &c.name, "--vlan", "0"], "VLAN id"),
        (
            vec!["--netns", &c.name, "--pid", "1"],
            "cannot be used with",
        ),
        (
            vec!["--netns", &c.name, "--mac", "01:00:5e:00:00:01"],
            "multicast",
        ),
    ] {
        let out = attach(&hosts, 0, &args);
        assert_eq!(exit_code(&out), Some(2), "{args:?}: {}", out.describe());
        assert!(out.stderr.contains(says), "{args:?}: {}", out.stderr);
    }
    assert!(held(hosts.config(0), "attach:mcatnc/eth1").is_empty());

    // --vlan: carried where the kernel can, a clear failure (exit 1) and nothing left where not.
    let vlan = attach(&hosts, 0, &["--netns", &c.name, "--vlan", "42"]);
    let host_end = VethNames::for_owner("ma", "attach:mcatnc/eth1").host;
    if kernel_has_vlan() {
        assert!(vlan.success(), "attach --vlan: {}", vlan.describe());
        let inside = check(
            ip_in(&c.name, &["-o", "addr", "show", "dev", "eth1.42"]),
            cmd::SHORT,
        );
        assert!(inside.stdout.contains("10.77."), "{}", inside.stdout);
        assert!(detach(&hosts, 0, &["--netns", &c.name]).success());
    } else {
        assert_eq!(exit_code(&vlan), Some(1), "{}", vlan.describe());
        assert!(vlan.stderr.contains("802.1Q"), "{}", vlan.stderr);
    }
    assert!(held(hosts.config(0), "attach:mcatnc/eth1").is_empty());
    assert!(!cmd::run(
        ip_in(hosts.ns(0), &["link", "show", "dev", &host_end]),
        cmd::SHORT
    )
    .success());
    assert!(!cmd::run(ip_in(&c.name, &["link", "show", "dev", "eth1"]), cmd::SHORT).success());

    // Detach releases; a second detach is no error.
    let out = detach(&hosts, 0, &["--netns", &a.name]);
    assert!(out.success(), "{}", out.describe());
    assert!(
        out.stdout.contains(&format!("released {}", addr_a[0])),
        "{}",
        out.stdout
    );
    assert!(held(hosts.config(0), "attach:mcatna/eth1").is_empty());
    let again = detach(&hosts, 0, &["--netns", &a.name]);
    assert!(again.success(), "{}", again.describe());
    assert!(
        again.stdout.contains("nothing was attached"),
        "{}",
        again.stdout
    );
    assert!(!cmd::run(ip_in(&a.name, &["link", "show", "dev", "eth1"]), cmd::SHORT).success());
    assert!(detach(&hosts, 1, &["--netns", &b.name, "--ifname", "mesh0"]).success());
    assert!(held(hosts.config(1), "attach:mcatnb/mesh0").is_empty());
}
