//! End-to-end tests in network namespaces: four hosts, each with a bridge and two containers, joined into
//! one Ethernet segment by the real `meshd` binary, the mesh formed the way an operator forms it (issue
//! 3): `meshd init` founds the network on h1, every other host joins with a token from `meshd invite`
//! knowing only h1, and learns the rest by gossip.
//!
//! One `#[test]` builds the topology once and runs every scenario on it in order, because setting up
//! the namespaces and daemons dominates the runtime: first the data plane (issue 2, point 8), then
//! paths (issue 4: the underlay cut, split, readdressed and narrowed, each undone afterwards), then
//! admission (issue 3), whose last scenarios restart and revoke members. Needs root (skips with a message
//! otherwise; fails instead when `CI=true`). `MESHD_IT_CONTROL=1` joins the bridges with plain veth links
//! instead of meshd, which validates the harness's own data-plane assertions independently of meshd (the
//! paths and admission scenarios need meshd and are skipped then).
//!
//! Run: `sudo -E cargo test --test it netns -- --nocapture --test-threads=1`
//! (`MESHD_IT_KEEP=1` keeps the daemons' configs, state and logs; they are always kept after a failure.)
//! The underlay changes of the paths scenarios are checked on their own, without meshd, by the ignored
//! `underlay_changes_take_effect_and_are_undone`: add `--ignored`.

mod admission;
pub mod cmd;
pub mod mesh;
pub mod nsthread;
mod packet;
mod paths;
mod prng;
mod scenarios;
mod topology;

use std::net::Ipv4Addr;
use std::time::Instant;

use mesh::{Mesh, FORM_TIMEOUT};
use topology::{Topology, HOSTS, ROAMING_HOST};

/// Scenarios in meshd mode; control mode runs the first `DATA_PLANE` of them and the harness's own
/// half of the rogue check.
const SCENARIOS: usize = 15;
const DATA_PLANE: usize = 6;
/// Where the roaming host's underlay address moves in the paths scenarios (and back).
const ROAMED_ADDRESS: Ipv4Addr = Ipv4Addr::new(10, 201, 0, 10 + ROAMING_HOST);

const SKIP_MESSAGE: &str =
    "skipping netns tests: need root for network namespaces (run as root / sudo)";

pub fn running_as_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

pub fn env_flag(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| !v.is_empty() && v != "0" && !v.eq_ignore_ascii_case("false"))
}

/// Prints a scenario header and returns its start time.
fn scenario(number: usize, title: &str) -> Instant {
    println!("== [{number}/{SCENARIOS}] {title}");
    Instant::now()
}

/// Ends a scenario: in meshd mode every daemon must still be running, so a crash is reported as such.
fn done(started: Instant, mesh: &mut Option<Mesh>) {
    if let Some(mesh) = mesh.as_mut() {
        mesh.assert_alive();
    }
    println!("   ok ({:.1?})", started.elapsed());
}

#[test]
fn four_hosts_joined_by_invitation_form_one_switch() {
    if !running_as_root() {
        assert!(
            !env_flag("CI"),
            "netns tests must run as root in CI (CI=true), e.g. `sudo -E cargo test --test it`"
        );
        println!("{SKIP_MESSAGE}");
        return;
    }
    let control = env_flag("MESHD_IT_CONTROL");
    let started = Instant::now();
    let mut topo = Topology::build(control);
    // Declared after `topo` so it drops first: daemons stop before their namespaces disappear.
    let mut mesh = (!control).then(|| start_mesh(&mut topo));

    let t = scenario(1, "every container pair pings over IPv4 and IPv6");
    scenarios::ping_matrix(&topo, "across the mesh");
    done(t, &mut mesh);

    let t = scenario(
        2,
        "50 MiB TCP transfers c1a -> c3b and c2a -> c1b keep their SHA-256",
    );
    // h1 -> h3 crosses from an offload TAP to a plain one; h2 -> h1 is offload on both ends.
    scenarios::tcp_transfer(&topo, "c1a", "c3b");
    scenarios::tcp_transfer(&topo, "c2a", "c1b");
    if let Some(mesh) = mesh.as_ref() {
        let counter = |host: usize, name: &str| {
            let status = mesh
                .status(host)
                .unwrap_or_else(|e| panic!("status of host {host}: {e}"));
            status["counters"][name].as_u64().unwrap_or(0)
        };
        let hosts = usize::from(HOSTS);
        let gso: Vec<u64> = (0..hosts).map(|h| counter(h, "io_tap_gso_reads")).collect();
        let gro: Vec<u64> = (0..hosts)
            .map(|h| counter(h, "io_tap_gro_writes"))
            .collect();
        println!("  TSO super-frames read per host {gso:?}, coalesced TAP writes per host {gro:?}");
        assert!(
            gso[0] + gso[1] > 0,
            "offload hosts read TSO super-frames from their bridge"
        );
        assert!(
            gro[0] + gro[1] > 0,
            "offload hosts coalesced received segments"
        );
        assert_eq!(
            gso[2] + gro[2],
            0,
            "the plain-TAP host never sees super-frames"
        );
        // Segments leave with partial checksums for peers that complete them: h3 in software
        // (plain TAP), h1 through its kernel (NEEDS_CSUM); the SHA-256s above prove them right.
        let partial_rx = |h: usize| counter(h, "rx_partial_checksum");
        let partial_tx = |h: usize| counter(h, "tx_partial_checksum");
        println!(
            "  partial checksums sent per host {:?}, received {:?}",
            [partial_tx(0), partial_tx(1), partial_tx(2)],
            [partial_rx(0), partial_rx(1), partial_rx(2)]
        );
        assert!(
            partial_tx(0) > 0 && partial_rx(2) > 0,
            "h1 -> h3 left checksums to h3"
        );
        assert!(
            partial_tx(1) > 0 && partial_rx(0) > 0,
            "h2 -> h1 left checksums to h1's kernel"
        );
        assert_eq!(partial_tx(2), 0, "a plain TAP reads complete frames");
        let offload = |host: usize| mesh.status(host).unwrap()["interface"]["offload"].as_bool();
        assert_eq!(
            (offload(0), offload(2)),
            (Some(true), Some(false)),
            "status reports each TAP's offload state"
        );
        // h3 accepts ChaCha20-Poly1305 only; h1 and h2 negotiate AES-256-GCM when this CPU has
        // AES instructions. The transfers above ran on both.
        let cipher = |host: usize, peer: &str| {
            let status = mesh.status(host).unwrap();
            status["peers"]
                .as_array()
                .and_then(|peers| peers.iter().find(|p| p["name"] == peer))
                .and_then(|p| p["cipher"].as_str().map(str::to_string))
        };
        let fast = if meshd_crypto::Cipher::aes_hardware() {
            "aes-256-gcm"
        } else {
            "chacha20-poly1305"
        };
        println!(
            "  ciphers: h1-h2 {:?}, h1-h3 {:?}",
            cipher(0, "h2"),
            cipher(0, "h3")
        );
        assert_eq!(cipher(0, "h2").as_deref(), Some(fast));
        assert_eq!(cipher(1, "h1").as_deref(), Some(fast));
        assert_eq!(cipher(0, "h3").as_deref(), Some("chacha20-poly1305"));
        assert_eq!(cipher(2, "h1").as_deref(), Some("chacha20-poly1305"));
    }
    done(t, &mut mesh);

    let t = scenario(3, "a UDP broadcast from c2b reaches every other container");
    scenarios::broadcast(&topo, "c2b");
    done(t, &mut mesh);

    let t = scenario(4, "an 802.1Q-tagged frame crosses from c1b to c3a");
    scenarios::vlan(&topo, "c1b", "c3a");
    done(t, &mut mesh);

    let t = scenario(5, "c1a moves from h1 to h3 and c2a reaches it again");
    scenarios::container_move(&mut topo, "c1a", 3, "c2a");
    done(t, &mut mesh);

    let t = scenario(6, "a garbage flood at every node leaves traffic flowing");
    scenarios::garbage_flood(&topo, mesh.as_mut());
    done(t, &mut mesh);

    // Paths come before admission: the last admission scenario revokes a member they need.
    match mesh.as_mut() {
        Some(mesh) => paths_scenarios(&mut topo, mesh),
        None => println!(
            "== [7-11/{SCENARIOS}] relaying, partitions, readdressing and narrow paths: skipped, CONTROL \
             mode has no meshd"
        ),
    }

    match mesh.as_mut() {
        Some(mesh) => admission_scenarios(&mut topo, mesh),
        None => control_admission(&mut topo),
    }

    if let Some(mesh) = mesh.as_mut() {
        mesh.stop_and_check();
    }
    println!(
        "all {} scenarios passed ({} mode) in {:.1?}",
        if control { DATA_PLANE + 1 } else { SCENARIOS },
        if control { "CONTROL" } else { "meshd" },
        started.elapsed()
    );
}

/// Scenarios 7-11 (issue 4): relaying around a cut, direct again after it heals, a partition and its
/// heal, a host's underlay address changed under traffic, MTU 1500 containers behind a narrower path.
fn paths_scenarios(topo: &mut Topology, mesh: &mut Mesh) {
    let finish = |t: Instant, mesh: &mut Mesh| {
        mesh.assert_alive();
        println!("   ok ({:.1?})", t.elapsed());
    };

    let t = scenario(
        7,
        "the underlay between h1 and h2 is cut: both show the other via a relay, all pairs ping",
    );
    let cut = paths::cut_relayed(topo, mesh, 1, 2);
    finish(t, mesh);

    let t = scenario(8, "the cut is removed: h1 and h2 go direct again");
    paths::heal_direct(topo, mesh, cut, 1, 2);
    finish(t, mesh);

    let t = scenario(
        9,
        "the underlay splits into {h1,h2} and {h3,h4}: each half works; healed, all pairs ping",
    );
    paths::split_and_heal(topo, mesh, &[1, 2], &[3, 4]);
    finish(t, mesh);

    let t = scenario(
        10,
        "h4's underlay address changes while traffic flows: the traffic resumes",
    );
    paths::readdress_under_traffic(topo, mesh, ROAMING_HOST, ROAMED_ADDRESS);
    finish(t, mesh);

    let t = scenario(
        11,
        "MTU 1500 containers behind a 1400-byte underlay path: TCP completes, ICMP says the MTU",
    );
    paths::narrow_path(topo, mesh, 2, 1);
    finish(t, mesh);
}

/// Scenarios 12-15 (issue 3). An outsider host h5 with one container, on the same underlay and subnet but
/// never invited, first tries refused tokens and then runs a rogue node.
fn admission_scenarios(topo: &mut Topology, mesh: &mut Mesh) {
    let (outsider, outsider_container) = topo.add_outsider(HOSTS + 1);
    let finish = |t: Instant, mesh: &mut Mesh| {
        mesh.assert_alive();
        println!("   ok ({:.1?})", t.elapsed());
    };

    let t = scenario(
        12,
        "spent, damaged, forged, wrong-network and expired tokens are refused; nothing written, founder unchanged",
    );
    admission::refused_tokens(mesh, &outsider);
    finish(t, mesh);

    let t = scenario(
        13,
        "a rogue node with a self-made key and the real network in its config gets no frame through",
    );
    admission::rogue(topo, mesh, &outsider, &outsider_container);
    finish(t, mesh);

    let t = scenario(14, "h3 restarted with SIGTERM and the same config is back");
    admission::restart(topo, mesh, "h3");
    finish(t, mesh);

    let t = scenario(
        15,
        "h4 revoked on the founder is cut off everywhere, also after h2 restarts",
    );
    admission::revoke(topo, mesh, "h4", "h2");
    finish(t, mesh);
}

/// CONTROL mode's part of the admission scenarios: only the harness's own rogue check, shown to catch a
/// rogue that is wired into the segment (12, 14 and 15 need meshd).
fn control_admission(topo: &mut Topology) {
    let (outsider, outsider_container) = topo.add_outsider(HOSTS + 1);
    println!("== [12/{SCENARIOS}] refused tokens: skipped, CONTROL mode has no meshd");
    let t = scenario(
        13,
        "CONTROL: the sniffers catch a rogue wired straight into the segment",
    );
    admission::rogue_wired_in(topo, &outsider, &outsider_container);
    println!("   ok ({:.1?})", t.elapsed());
    println!("== [14-15/{SCENARIOS}] restart and revocation: skipped, CONTROL mode has no meshd");
}

/// Forms the mesh by invitation, waits until every node sees every other as an alive member with a
/// session up, and fits the containers' MTU to the TAP's.
fn start_mesh(topo: &mut Topology) -> Mesh {
    let mut mesh = Mesh::form(topo);
    let started = Instant::now();
    let statuses = mesh.wait_formed(FORM_TIMEOUT);
    println!(
        "meshd: MEASURED all {} nodes list each other as alive members with sessions up {:.1?} after the \
         last daemon started",
        mesh.nodes.len(),
        started.elapsed()
    );
    check_members(&mesh, &statuses);
    if let Some(tap_mtu) = mesh.check_interfaces(&statuses) {
        println!("meshd: TAP MTU {tap_mtu}");
        if tap_mtu < topo.container_mtu {
            println!(
                "meshd: lowering container MTU {} -> {tap_mtu} so full-size frames fit the tunnel",
                topo.container_mtu
            );
            topo.set_container_mtu(tap_mtu);
        }
    }
    mesh
}

/// The member entries carry the contract's fields: each node's key, a certificate expiry in the future,
/// endpoints, and a direct path.
fn check_members(mesh: &Mesh, statuses: &[serde_json::Value]) {
    let now = mesh::unix_now();
    for (node, status) in mesh.nodes.iter().zip(statuses) {
        for other in mesh.nodes.iter().filter(|o| o.name != node.name) {
            let m = mesh::member(status, &other.name).expect("checked by wait_formed");
            assert_eq!(
                m["public_key"].as_str(),
                Some(other.public_key.as_str()),
                "{} lists member {} with another key: {m}",
                node.name,
                other.name
            );
            assert!(
                m["certificate_expires"].as_u64().is_some_and(|t| t > now),
                "{} lists member {} without a future certificate_expires (unix seconds): {m}",
                node.name,
                other.name
            );
            assert!(
                m["endpoints"].as_array().is_some_and(|e| !e.is_empty()) && m["direct"] == true,
                "{} lists member {} without endpoints or not direct: {m}",
                node.name,
                other.name
            );
        }
    }
    let founder = &statuses[0];
    println!(
        "meshd: network {}; h1's members: {}",
        founder["network"],
        mesh::member_states(founder)
    );
}

/// The paths scenarios' underlay changes on a topology without meshd: a cut blocks exactly the pairs it
/// names and its guard undoes it also on a panic; a split leaves each half whole; a narrowed port drops
/// what does not fit in both directions and only on that port; a readdressed host is reachable at its
/// new address only. Ignored by default: the scenarios check the same effects as they go, and this only
/// runs them without depending on meshd.
///
/// Run: `sudo -E cargo test --test it underlay_changes -- --ignored --nocapture`
#[test]
#[ignore = "harness self-check of the paths scenarios' underlay changes; needs root"]
fn underlay_changes_take_effect_and_are_undone() {
    if !running_as_root() {
        println!("{SKIP_MESSAGE}");
        return;
    }
    let started = Instant::now();
    let mut topo = Topology::build(false);
    let reaches = |topo: &Topology, from: u8, to: u8| {
        topo.underlay_reaches(from, topo.host(to).underlay_ip, None)
    };
    let all_reach = |topo: &Topology| {
        for a in 1..=HOSTS {
            for b in (1..=HOSTS).filter(|b| *b != a) {
                assert!(reaches(topo, a, b), "h{a} should reach h{b}");
            }
        }
    };
    all_reach(&topo);

    let t = Instant::now();
    let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _cut = topo.cut_underlay(&[(1, 2)]);
        assert!(reaches(&topo, 1, 3) && reaches(&topo, 2, 4));
        panic!("deliberate panic while h1-h2 is cut");
    }));
    assert!(unwound.is_err());
    assert!(
        reaches(&topo, 1, 2) && reaches(&topo, 2, 1),
        "the cut's guard should remove its routes while unwinding"
    );
    println!(
        "cut h1-h2: h1 and h2 apart, both reach h3/h4; undone on a panic ({:.1?})",
        t.elapsed()
    );

    let t = Instant::now();
    let split = topo.cut_underlay(&[(1, 3), (1, 4), (2, 3), (2, 4)]);
    for (a, b) in [(1, 2), (2, 1), (3, 4), (4, 3)] {
        assert!(
            reaches(&topo, a, b),
            "h{a} should reach h{b} within its half"
        );
    }
    split.heal();
    all_reach(&topo);
    println!(
        "split {{h1,h2}} | {{h3,h4}}: halves whole, healed ({:.1?})",
        t.elapsed()
    );

    let t = Instant::now();
    let (h1, h2, h3) = (
        topo.host(1).underlay_ip,
        topo.host(2).underlay_ip,
        topo.host(3).underlay_ip,
    );
    let narrowed = topo.narrow_underlay(2, 1400);
    assert!(!topo.underlay_reaches(2, h1, Some(1400)));
    assert!(topo.underlay_reaches(2, h1, Some(1300)));
    assert!(!topo.underlay_reaches(1, h2, Some(1400)));
    assert!(
        topo.underlay_reaches(1, h3, Some(1472)),
        "only h2's port should be narrowed"
    );
    narrowed.restore();
    assert!(topo.underlay_reaches(2, h1, Some(1472)));
    drop(topo.narrow_underlay(2, 1400));
    assert!(
        topo.underlay_reaches(2, h1, Some(1472)) && topo.underlay_reaches(1, h2, Some(1472)),
        "dropping the narrowed link's guard should restore the MTU"
    );
    println!(
        "narrowed h2's path to 1400 bytes: 1372-byte DF pings pass, 1373 do not, both ways; restored \
         ({:.1?})",
        t.elapsed()
    );

    let t = Instant::now();
    let old = topo.host(ROAMING_HOST).underlay_ip;
    topo.readdress(ROAMING_HOST, ROAMED_ADDRESS);
    assert_eq!(topo.host(ROAMING_HOST).underlay_ip, ROAMED_ADDRESS);
    assert!(topo.underlay_reaches(1, ROAMED_ADDRESS, None));
    assert!(!topo.underlay_reaches(1, old, None));
    assert!(reaches(&topo, ROAMING_HOST, 1));
    topo.readdress(ROAMING_HOST, old);
    all_reach(&topo);
    println!(
        "h{ROAMING_HOST} readdressed {old} -> {ROAMED_ADDRESS} -> {old}, reachable at each ({:.1?})",
        t.elapsed()
    );
    println!("underlay changes checked in {:.1?}", started.elapsed());
}
