//! The admission scenarios (issue 3) on a mesh formed by invitation: tokens that must be refused, a
//! rogue node with a self-made key, a restarted member, a revoked member.
//!
//! Each prints what it measured (times are printed, never asserted beyond generous bounds: the machine
//! is shared) and panics with the containers, nodes and statuses involved when it fails.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use meshd::wire::{InviteSecret, InviteToken};
use meshd_crypto::{NetworkId, NetworkSecret};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::cmd::{self, exec_in, ip_in};
use super::mesh::{
    self, config_peers, counter, edit_config, member, member_states, meshd, meshd_in, peer,
    read_config, table, Mesh, Node, ADMISSION_COUNTERS,
};
use super::nsthread::{self, NsJob};
use super::packet::{self, PacketSocket, ETHERTYPE_EXPERIMENTAL};
use super::prng::SplitMix64;
use super::scenarios::{pairs, peer_states, ping_round, until_all_reach, Family};
use super::topology::{Container, Host, Topology, MESHD_PORT};

/// Generous upper bound from `meshd revoke` until the revoked host is cut off and marked everywhere.
const REVOKE_BOUND: Duration = Duration::from_secs(20);
/// Generous upper bound from a daemon's restart until its containers reach every other container.
const RESTART_BOUND: Duration = Duration::from_secs(30);
/// How long the rogue's container floods the segment while every mesh container sniffs.
const ROGUE_FLOOD: Duration = Duration::from_secs(6);
/// The legitimate container that sends marked broadcasts during the rogue's flood, proving that the
/// sniffers work and the mesh carries broadcasts throughout.
const CONTROL_SENDER: &str = "c2b";
/// How long a revoked node, restarted and pointed at a restarted member, keeps trying to get through.
const REVOKED_RETRY: Duration = Duration::from_secs(6);

/// 12: a spent, a damaged, a forged, a wrong-network and an expired token are each refused by `meshd
/// join` with exit 1 and a reason, nothing is written on the joiner, and the founder's state does not
/// change.
pub fn refused_tokens(mesh: &Mesh, joiner: &Host) {
    let dir = mesh.dir.join("refused");
    fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    let listen = format!("{}:{MESHD_PORT}", joiner.underlay_ip);
    // The invitations are made first, so the founder's state compared below already holds them.
    let expiring = mesh.invite(Some(&joiner.name), "1s");
    let invited = Instant::now();
    let fresh = mesh.invite(Some("h6"), "10m");
    let before = FounderState::read(mesh);
    println!(
        "  founder before: {} members, {} files in its state directory",
        before.members,
        before.files.len()
    );

    // Each attempt joins under the name its token reserves: `join` refuses another name by itself.
    let attempt = |what: &str, token: &str, name: &str, reason: Option<&str>| {
        let config = dir.join(format!("{name}.toml"));
        let started = Instant::now();
        let out = mesh::join(&joiner.ns, &config, name, &listen, token);
        let took = started.elapsed();
        let first_line = out.stderr.lines().next().unwrap_or("").trim().to_string();
        assert!(
            !out.timed_out && out.status.and_then(|s| s.code()) == Some(1),
            "`meshd join` with {what} should exit 1, got: {}",
            out.describe()
        );
        assert!(
            out.stderr.contains("meshd: error:"),
            "`meshd join` with {what} should say `meshd: error: ...` on stderr, said {:?}",
            out.stderr
        );
        if let Some(reason) = reason {
            assert!(
                out.stderr.to_lowercase().contains(reason),
                "`meshd join` with {what} should say why (mention {reason:?}), said {:?}",
                out.stderr
            );
        }
        let written: Vec<String> = fs::read_dir(&dir)
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        assert!(
            written.is_empty(),
            "a refused `meshd join` ({what}) must write nothing, but {} now holds {written:?}",
            dir.display()
        );
        FounderState::read(mesh).assert_same(&before, what);
        println!("  {what}: refused in {took:.1?}, exit 1, nothing written: {first_line}");
    };

    let spent = mesh.used_tokens.get("h2").expect("h2 joined with a token");
    attempt("h2's spent token, again as h2", spent, "h2", Some("used"));
    let h3_token = mesh.used_tokens.get("h3").expect("h3 joined with a token");
    attempt(
        "a damaged token (h3's with one character changed)",
        &damage(h3_token),
        "h3",
        None,
    );
    let mut rng = SplitMix64::new(u64::from(std::process::id()) ^ 0x666f_7267_6564);
    let mut random = || {
        let mut bytes = [0u8; 32];
        rng.fill(&mut bytes);
        bytes
    };
    attempt(
        "a forged token (h3's, checksum valid, with a secret the inviter never issued)",
        &reissue(h3_token, |t| {
            (t.network(), InviteSecret::from_bytes(random()))
        }),
        "h3",
        None,
    );
    attempt(
        "a token naming another network (a fresh h6 invitation, network id replaced)",
        &reissue(&fresh, |t| {
            let secret = InviteSecret::from_bytes(*t.secret().expose());
            (NetworkSecret::from_seed(random()).network_id(), secret)
        }),
        "h6",
        Some("network"),
    );
    let wait = Duration::from_millis(2500).saturating_sub(invited.elapsed());
    thread::sleep(wait);
    attempt(
        &format!(
            "a token made with --expires 1s, used {:.1?} later",
            invited.elapsed()
        ),
        &expiring,
        &joiner.name,
        Some("expired"),
    );
    let _ = fs::remove_dir_all(&dir);
}

/// The founder's member count and the contents of its state directory.
struct FounderState {
    members: usize,
    files: BTreeMap<String, (u64, String)>,
}

impl FounderState {
    fn read(mesh: &Mesh) -> FounderState {
        let status = mesh
            .status(0)
            .unwrap_or_else(|e| panic!("founder status: {e}"));
        let members = status["members"]
            .as_array()
            .unwrap_or_else(|| panic!("founder status has no members array: {status}"))
            .len();
        let mut files = BTreeMap::new();
        snapshot(&mesh.founder().state_dir(), "", &mut files);
        FounderState { members, files }
    }

    fn assert_same(&self, before: &FounderState, what: &str) {
        assert_eq!(
            self.members, before.members,
            "the founder's member count changed after a refused join ({what})"
        );
        let changed: Vec<&String> = self
            .files
            .keys()
            .chain(before.files.keys())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .filter(|k| self.files.get(*k) != before.files.get(*k))
            .collect();
        assert!(
            changed.is_empty(),
            "the founder's state directory changed after a refused join ({what}): {changed:?}"
        );
    }
}

/// Relative path -> (length, SHA-256) of every file under `dir`.
fn snapshot(dir: &Path, prefix: &str, out: &mut BTreeMap<String, (u64, String)>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        let name = format!("{prefix}{}", entry.file_name().to_string_lossy());
        let path = entry.path();
        if path.is_dir() {
            snapshot(&path, &format!("{name}/"), out);
        } else if let Ok(bytes) = fs::read(&path) {
            let hash: String = Sha256::digest(&bytes)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            out.insert(name, (bytes.len() as u64, hash));
        }
    }
}

/// The token with its middle character replaced by another character the token uses: same alphabet
/// and length, but the checksum no longer matches.
fn damage(token: &str) -> String {
    let mut chars: Vec<char> = token.chars().collect();
    let middle = chars.len() / 2;
    let original = chars[middle];
    let replacement = chars
        .iter()
        .copied()
        .find(|c| *c != original && c.is_ascii_alphanumeric())
        .expect("a token uses more than one character");
    chars[middle] = replacement;
    chars.into_iter().collect()
}

/// A well-formed token (valid checksum, as `meshd invite` would print it) with the same inviter,
/// addresses, expiry and name as `token`, and the network id and secret `change` picks: what someone
/// who can encode tokens, but holds no network key, can make.
fn reissue(token: &str, change: impl FnOnce(&InviteToken) -> (NetworkId, InviteSecret)) -> String {
    let original = InviteToken::parse(token).unwrap_or_else(|e| panic!("a real token parses: {e}"));
    let (network, secret) = change(&original);
    InviteToken::new(
        network,
        original.inviter(),
        original.endpoints().to_vec(),
        secret,
        original.expires_at(),
        original.name().map(str::to_string),
    )
    .unwrap_or_else(|e| panic!("re-encoding a real token: {e}"))
    .encode()
}

/// 13: a rogue host that founded its own network, with a config edited to name the real network and
/// every member (keys and endpoints), cannot get one frame to any container, and members count the
/// refused handshakes.
pub fn rogue(topo: &Topology, mesh: &mut Mesh, host: &Host, container: &Container) {
    let mut rogue = Node::new("rogue", &host.ns, &mesh.dir);
    let listen = format!("{}:{MESHD_PORT}", host.underlay_ip);
    println!(
        "  rogue$ meshd init --config {} --name rogue --listen {listen} --bridge br0   # a network of its own",
        rogue.config_str()
    );
    let init = cmd::check(
        meshd_in(
            &host.ns,
            &[
                "init",
                "--config",
                rogue.config_str(),
                "--name",
                "rogue",
                "--listen",
                &listen,
                "--bridge",
                "br0",
            ],
        ),
        cmd::SHORT,
    );
    rogue.public_key = init.stdout.lines().next().unwrap_or("").trim().to_string();
    let own_network = read_config(&rogue.config)["network"]["id"]
        .as_str()
        .expect("`meshd init` writes [network] id")
        .to_string();
    assert_ne!(
        own_network, mesh.network_id,
        "two inits made the same network"
    );
    let members: Vec<toml::Value> = mesh
        .nodes
        .iter()
        .zip(&topo.hosts)
        .map(|(node, host)| {
            let mut peer = toml::Table::new();
            peer.insert("name".into(), node.name.clone().into());
            peer.insert("public_key".into(), node.public_key.clone().into());
            peer.insert(
                "endpoint".into(),
                format!("{}:{MESHD_PORT}", host.underlay_ip).into(),
            );
            toml::Value::Table(peer)
        })
        .collect();
    let socket = mesh.dir.join("rogue.sock");
    let real_network = mesh.network_id.clone();
    edit_config(&rogue.config, |c| {
        c.insert(
            "control_socket".into(),
            socket.to_string_lossy().into_owned().into(),
        );
        let network = table(c, "network");
        network.insert("id".into(), real_network.into());
        network.remove("secret_file");
        c.insert("peers".into(), toml::Value::Array(members));
    });
    println!(
        "  edited its config: [network] id = the real network, no secret_file, [[peers]] = {:?}",
        config_peers(&read_config(&rogue.config))
            .iter()
            .map(|(name, _, endpoint)| format!("{name}@{}", endpoint.as_deref().unwrap_or("?")))
            .collect::<Vec<_>>()
    );

    let sniffers = Sniffers::start(topo);
    let mut rogue_macs = link_macs(&host.ns);
    rogue_macs.extend(link_macs(&container.ns));
    let before: Vec<BTreeMap<&str, u64>> = (0..mesh.nodes.len())
        .map(|i| admission_counters(&mesh.status(i).unwrap_or(Value::Null)))
        .collect();

    let index = mesh.outsiders.len();
    mesh.outsiders.push(rogue);
    let rogue = &mut mesh.outsiders[index];
    rogue.spawn();
    let variant = match rogue.try_ready(Duration::from_secs(10)) {
        Ok(_) => "with the real network id in its config".to_string(),
        Err(e) => {
            // The daemon checks its own certificate against its config: with the real network id
            // and a self-made certificate it does not start. The closest rogue that runs keeps its
            // own network's id and still knows every member's key and endpoint.
            println!(
                "  the rogue daemon refuses to start with the real network id and its self-made \
                 certificate:\n{}\n  -> restarting it with its own network's id (still every member \
                 as a peer)",
                indent(&last_lines(&e, 3))
            );
            edit_config(&rogue.config, |c| {
                table(c, "network").insert("id".into(), own_network.clone().into());
            });
            rogue.spawn();
            rogue.wait_ready(Duration::from_secs(10));
            "with its own network's id in its config".to_string()
        }
    };
    println!(
        "  rogue daemon running (pid {}) {variant}",
        rogue.pid().unwrap_or(0)
    );
    rogue_macs.extend(link_macs(&host.ns));
    let flood = flood_window(topo, container);
    // Frames still in flight through a (hypothetical) tunnel arrive within milliseconds.
    thread::sleep(Duration::from_millis(500));
    let rogue_status = mesh.outsiders[index].status();
    rogue_macs.extend(link_macs(&host.ns));
    let report = sniffers.finish(&rogue_macs);
    println!("  {flood}");
    assert!(
        report.silent.is_empty(),
        "the sniffers in {:?} saw none of {CONTROL_SENDER}'s marked broadcasts during the rogue's \
         flood: the check below would prove nothing",
        report.silent
    );
    assert!(
        report.leaks.is_empty(),
        "frames from the rogue reached mesh containers:\n{}",
        report.leaks.join("\n")
    );

    let rogue_key = mesh.outsiders[index].public_key.clone();
    let mut refused_by = Vec::new();
    for (i, before) in before.iter().enumerate() {
        let status = mesh
            .status(i)
            .unwrap_or_else(|e| panic!("status after the rogue's flood: {e}"));
        let node = &mesh.nodes[i];
        let after = admission_counters(&status);
        let grown: Vec<String> = after
            .iter()
            .filter_map(|(k, v)| {
                let delta = v.saturating_sub(before.get(k).copied().unwrap_or(0));
                (delta > 0).then(|| format!("{k} +{delta}"))
            })
            .collect();
        println!(
            "  {}: admission counters {}; members {}",
            node.name,
            if grown.is_empty() {
                "unchanged".to_string()
            } else {
                grown.join(", ")
            },
            member_states(&status)
        );
        if !grown.is_empty() {
            refused_by.push(node.name.clone());
        }
        let listed = |list: &str| {
            status[list].as_array().is_some_and(|entries| {
                entries
                    .iter()
                    .any(|e| e["name"] == "rogue" || e["public_key"] == rogue_key.as_str())
            })
        };
        assert!(
            !listed("members") && !listed("peers"),
            "{} lists the rogue as a member or session: members {}, peers {}",
            node.name,
            status["members"],
            status["peers"]
        );
        if i == 0 {
            assert!(
                !grown.is_empty(),
                "the founder should count the rogue's handshakes as refused ({ADMISSION_COUNTERS:?}), \
                 counters: {}",
                status["counters"]
            );
        }
    }
    match rogue_status {
        Ok(status) => {
            let up = status["peers"]
                .as_array()
                .is_some_and(|p| p.iter().any(|p| p["state"] == "up"));
            println!(
                "  the rogue's own view: sessions [{}]",
                peer_states(&status)
            );
            assert!(!up, "the rogue has a session up: {}", status["peers"]);
        }
        Err(e) => println!("  the rogue's own status: {e}"),
    }
    let exit = mesh.outsiders[index].stop();
    println!(
        "  refused by {refused_by:?}; rogue daemon stopped ({})",
        exit.map_or("killed".to_string(), |s| s.to_string())
    );
}

/// 13 in CONTROL mode (no meshd): the same flood from an outsider whose br0 is wired straight into h4's
/// must be seen by every sniffer, which proves the rogue check above can fail.
pub fn rogue_wired_in(topo: &Topology, host: &Host, container: &Container) {
    topo.wire_in(host, 4);
    println!(
        "  {}'s br0 wired straight into h4's br0 (a veth): the rogue is on the segment",
        host.name
    );
    let sniffers = Sniffers::start(topo);
    let mut rogue_macs = link_macs(&host.ns);
    rogue_macs.extend(link_macs(&container.ns));
    let flood = flood_window(topo, container);
    thread::sleep(Duration::from_millis(500));
    let report = sniffers.finish(&rogue_macs);
    println!("  {flood}");
    assert!(
        report.silent.is_empty(),
        "the sniffers in {:?} saw none of {CONTROL_SENDER}'s marked broadcasts",
        report.silent
    );
    assert_eq!(
        report.leaks.len(),
        topo.containers.len(),
        "every container must see a rogue wired into the segment; the sniffers caught only:\n{}",
        report.leaks.join("\n")
    );
    println!(
        "  every sniffer caught the wired-in rogue: the check that a meshd rogue gets no frame through is \
         able to fail"
    );
}

/// The admission counters of a status.
fn admission_counters(status: &Value) -> BTreeMap<&'static str, u64> {
    ADMISSION_COUNTERS
        .iter()
        .map(|name| (*name, counter(status, name)))
        .collect()
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Every Ethernet MAC of the links in namespace `ns`.
fn link_macs(ns: &str) -> BTreeSet<[u8; 6]> {
    let out = cmd::check(ip_in(ns, &["-o", "link", "show"]), cmd::SHORT);
    out.stdout
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            words.find(|w| *w == "link/ether")?;
            Some(packet::parse_mac(words.next()?))
        })
        .filter(|mac| *mac != [0; 6])
        .collect()
}

fn control_marker() -> Vec<u8> {
    format!("meshd-it control {}", std::process::id()).into_bytes()
}

/// What one container's sniffer saw.
struct Sniffed {
    frames: u64,
    by_source: BTreeMap<[u8; 6], u64>,
    /// Frames from the control sender that carry its marker.
    control: u64,
}

/// A raw-socket sniffer on every mesh container's eth0, counting frames by source MAC.
struct Sniffers {
    stop: Arc<AtomicBool>,
    jobs: Vec<(String, NsJob<Sniffed>)>,
}

/// What the sniffers saw, judged against the rogue's MACs.
struct SniffReport {
    /// "container: N frames from MAC" for every container that saw a rogue MAC.
    leaks: Vec<String>,
    /// Containers (other than the control sender) that saw none of its marked broadcasts.
    silent: Vec<String>,
}

impl Sniffers {
    /// Opens every sniffer and returns once all of them are capturing.
    fn start(topo: &Topology) -> Sniffers {
        let control_mac = packet::parse_mac(&topo.container(CONTROL_SENDER).mac);
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = mpsc::channel();
        let jobs: Vec<(String, NsJob<Sniffed>)> = topo
            .containers
            .iter()
            .map(|c| {
                let (stop, ready, marker) = (Arc::clone(&stop), ready_tx.clone(), control_marker());
                let job = nsthread::spawn(&c.ns, &format!("sniff-{}", c.name), move || {
                    let sock = PacketSocket::open("eth0", true)?;
                    let _ = ready.send(());
                    let deadline = Instant::now() + Duration::from_secs(60);
                    let mut sniffed = Sniffed {
                        frames: 0,
                        by_source: BTreeMap::new(),
                        control: 0,
                    };
                    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                        let Some(frame) = sock.recv()? else { continue };
                        sniffed.frames += 1;
                        if let Some(source) = packet::source_mac(&frame.data) {
                            *sniffed.by_source.entry(source).or_default() += 1;
                            if source == control_mac
                                && frame.data.windows(marker.len()).any(|w| w == marker)
                            {
                                sniffed.control += 1;
                            }
                        }
                    }
                    Ok(sniffed)
                });
                (c.name.clone(), job)
            })
            .collect();
        drop(ready_tx);
        for _ in &jobs {
            ready_rx
                .recv_timeout(Duration::from_secs(5))
                .expect("a sniffer did not open its packet socket within 5 s");
        }
        Sniffers { stop, jobs }
    }

    /// Stops every sniffer, prints what each saw and judges it against `rogue_macs`.
    fn finish(self, rogue_macs: &BTreeSet<[u8; 6]>) -> SniffReport {
        self.stop.store(true, Ordering::Relaxed);
        println!(
            "  rogue MACs watched for: {}",
            rogue_macs
                .iter()
                .map(packet::format_mac)
                .collect::<Vec<_>>()
                .join(", ")
        );
        let mut report = SniffReport {
            leaks: Vec::new(),
            silent: Vec::new(),
        };
        for (name, job) in self.jobs {
            let sniffed = job
                .join(Duration::from_secs(10))
                .unwrap_or_else(|e| panic!("sniffer in {name} failed: {e}"));
            let from_rogue: Vec<String> = sniffed
                .by_source
                .iter()
                .filter(|(mac, _)| rogue_macs.contains(*mac))
                .map(|(mac, n)| format!("{n} frames from {}", packet::format_mac(mac)))
                .collect();
            println!(
                "  {name}: sniffed {} frames from {} MACs, {} marked broadcasts from {CONTROL_SENDER}, {} \
                 from the rogue",
                sniffed.frames,
                sniffed.by_source.len(),
                sniffed.control,
                if from_rogue.is_empty() {
                    "none".to_string()
                } else {
                    from_rogue.join(", ")
                }
            );
            if !from_rogue.is_empty() {
                report
                    .leaks
                    .push(format!("{name}: {}", from_rogue.join(", ")));
            }
            if name != CONTROL_SENDER && sniffed.control == 0 {
                report.silent.push(name);
            }
        }
        report
    }
}

/// For `ROGUE_FLOOD`: the rogue container floods raw frames (every 100 ms a marked broadcast, an ARP
/// request for each mesh container and a unicast frame to each mesh container's MAC) and pings
/// (broadcast, all-nodes multicast, a unicast needing ARP), while the control sender sends marked
/// broadcasts every 250 ms. Returns a summary of what the rogue sent.
fn flood_window(topo: &Topology, container: &Container) -> String {
    let (mac, ip) = (packet::parse_mac(&container.mac), container.ipv4);
    let targets: Vec<([u8; 6], Ipv4Addr)> = topo
        .containers
        .iter()
        .map(|c| (packet::parse_mac(&c.mac), c.ipv4))
        .collect();
    let marker = format!("meshd-it rogue {}", std::process::id()).into_bytes();
    let flood = nsthread::spawn(
        &container.ns,
        &format!("rogue-flood-{}", container.name),
        move || {
            let sock = PacketSocket::open("eth0", false)?;
            let started = Instant::now();
            let mut sent = 0u64;
            while started.elapsed() < ROGUE_FLOOD {
                let broadcast = packet::frame([0xff; 6], mac, ETHERTYPE_EXPERIMENTAL, &marker);
                sock.send(&broadcast)?;
                sent += 1;
                for (target_mac, target_ip) in &targets {
                    sock.send(&packet::arp_request(mac, ip, *target_ip))?;
                    sock.send(&packet::frame(
                        *target_mac,
                        mac,
                        ETHERTYPE_EXPERIMENTAL,
                        &marker,
                    ))?;
                    sent += 2;
                }
                thread::sleep(Duration::from_millis(100));
            }
            Ok(sent)
        },
    );
    let pings: Vec<(&str, cmd::Running)> = [
        (
            "broadcast ping 10.77.0.255",
            vec!["-4", "-b", "10.77.0.255"],
        ),
        ("ping ff02::1 (all nodes)", vec!["-6", "ff02::1%eth0"]),
        ("ping 10.77.0.11 (needs ARP)", vec!["-4", "10.77.0.11"]),
    ]
    .into_iter()
    .map(|(what, target)| {
        let mut args = vec!["-n", "-q", "-c", "25", "-i", "0.2", "-W", "1"];
        args.extend(target);
        (what, cmd::spawn(exec_in(&container.ns, "ping", &args)))
    })
    .collect();
    let control = topo.container(CONTROL_SENDER);
    let frame = packet::frame(
        [0xff; 6],
        packet::parse_mac(&control.mac),
        ETHERTYPE_EXPERIMENTAL,
        &control_marker(),
    );
    let control_job = nsthread::spawn(
        &control.ns,
        &format!("control-{}", control.name),
        move || {
            let sock = PacketSocket::open("eth0", false)?;
            let started = Instant::now();
            while started.elapsed() < ROGUE_FLOOD {
                sock.send(&frame)?;
                thread::sleep(Duration::from_millis(250));
            }
            Ok(())
        },
    );
    let sent = flood
        .join(ROGUE_FLOOD + Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("rogue flood failed: {e}"));
    control_job
        .join(ROGUE_FLOOD + Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("marked broadcasts from {CONTROL_SENDER} failed: {e}"));
    let deadline = Instant::now() + Duration::from_secs(10);
    let pings: Vec<String> = pings
        .into_iter()
        .map(|(what, run)| {
            let out = run.wait_until(deadline);
            let summary = out
                .stdout
                .lines()
                .find(|l| l.contains("packets transmitted"))
                .unwrap_or("no summary")
                .trim()
                .to_string();
            format!("{what}: {summary}")
        })
        .collect();
    format!(
        "rogue container {} ({}, {}) sent {sent} raw frames (broadcasts, ARP for every container, unicast \
         to every container MAC) over {ROGUE_FLOOD:?}; {}",
        container.name,
        container.mac,
        container.ipv4,
        pings.join("; ")
    )
}

/// 14: a member's daemon stopped with SIGTERM and started again with the same config is back: its
/// containers ping every other container again within `RESTART_BOUND`.
pub fn restart(topo: &Topology, mesh: &mut Mesh, name: &str) {
    let index = mesh.index_of(name);
    let n = topo.hosts[index].n;
    let (on, off) = (topo.containers_on(n), topo.containers_off(n));
    let pairs = pairs(&on, &off);
    let node = &mut mesh.nodes[index];
    let pid = node.pid().unwrap_or(0);
    let exit = node.stop();
    assert!(
        exit.is_some_and(|s| s.success()),
        "meshd on {name} should exit 0 on SIGTERM, got {exit:?}"
    );
    println!("  {name}$ kill -TERM {pid}   # exit 0");
    let down: usize = ping_round(&pairs, Family::V4)
        .iter()
        .filter(|r| **r)
        .count();
    println!(
        "  while it is down: {down} of {} pairs from its containers get a reply",
        pairs.len()
    );
    println!(
        "  {name}$ meshd --config {}   # same config",
        node.config_str()
    );
    node.spawn();
    let started = Instant::now();
    let back = until_all_reach(&pairs, Family::V4, started, RESTART_BOUND).unwrap_or_else(|e| {
        panic!(
            "{name} is not back: {e}; its log tail:\n{}",
            mesh.nodes[index].log_tail()
        )
    });
    mesh.wait_formed(RESTART_BOUND);
    let formed = started.elapsed();
    println!(
        "  MEASURED restart of {name}: its {} containers ping all {} others {back:.2?} after the start \
         (every status agrees again at {formed:.2?})",
        on.len(),
        off.len()
    );
}

/// 15: `meshd revoke` on the founder cuts a member off within `REVOKE_BOUND` (its containers reach no
/// other container, every member's status says "revoked"); a restarted member still refuses it, also
/// when the revoked node restarts and tries that member directly.
pub fn revoke(topo: &Topology, mesh: &mut Mesh, name: &str, restarted_member: &str) {
    let index = mesh.index_of(name);
    let n = topo.hosts[index].n;
    let (on, off) = (topo.containers_on(n), topo.containers_off(n));
    let out_pairs = pairs(&on, &off);
    until_all_reach(
        &out_pairs,
        Family::V4,
        Instant::now(),
        Duration::from_secs(10),
    )
    .unwrap_or_else(|e| panic!("before the revocation, {name}'s containers should reach all: {e}"));
    let members: Vec<usize> = (0..mesh.nodes.len())
        .filter(|i| *i != index && !mesh.nodes[*i].revoked)
        .collect();
    let before: Vec<u64> = members
        .iter()
        .map(|i| {
            counter(
                &mesh.status(*i).unwrap_or(Value::Null),
                "rx_handshake_revoked",
            )
        })
        .collect();

    let started = Instant::now();
    let out = mesh.revoke(name);
    let revoke_took = started.elapsed();
    assert!(
        out.success(),
        "`meshd revoke {name}` failed: {}",
        out.describe()
    );
    mesh.nodes[index].revoked = true;
    // Each event is bracketed: the last poll that did not see it, the first that did.
    let (mut marked_at, mut unmarked_at) = (None, Duration::ZERO);
    let (mut cut_at, mut reply_at) = (None, Duration::ZERO);
    let mut last_views = String::new();
    let mut last_reachable = Vec::new();
    while started.elapsed() < REVOKE_BOUND && (marked_at.is_none() || cut_at.is_none()) {
        if marked_at.is_none() {
            let at = started.elapsed();
            let views: Vec<(String, Option<String>, Option<String>)> = members
                .iter()
                .map(|i| {
                    let status = mesh.status(*i).unwrap_or(Value::Null);
                    let state =
                        |v: Option<&Value>| v.and_then(|v| v["state"].as_str()).map(str::to_string);
                    (
                        mesh.nodes[*i].name.clone(),
                        state(member(&status, name)),
                        state(peer(&status, name)),
                    )
                })
                .collect();
            if views
                .iter()
                .all(|(_, m, p)| m.as_deref() == Some("revoked") && p.as_deref() != Some("up"))
            {
                marked_at = Some(at);
            } else {
                unmarked_at = at;
            }
            last_views = format!("{views:?}");
        }
        if cut_at.is_none() {
            let at = started.elapsed();
            let replies = ping_round(&out_pairs, Family::V4);
            if replies.iter().all(|r| !*r) {
                cut_at = Some(at);
            } else {
                reply_at = started.elapsed();
                last_reachable = out_pairs
                    .iter()
                    .zip(&replies)
                    .filter(|(_, ok)| **ok)
                    .map(|((a, b), _)| format!("{} -> {}", a.name, b.name))
                    .collect();
            }
        }
        thread::sleep(Duration::from_millis(100));
    }
    let cut_at = cut_at.unwrap_or_else(|| {
        panic!(
            "{name}'s containers still reach others {REVOKE_BOUND:?} after `meshd revoke {name}`: {}",
            last_reachable.join(", ")
        )
    });
    let marked_at = marked_at.unwrap_or_else(|| {
        panic!(
            "not every member shows {name} revoked (and its session down) {REVOKE_BOUND:?} after \
             `meshd revoke {name}`: (member, member state, session state) {last_views}"
        )
    });
    let both = pairs(&off, &on);
    for _ in 0..2 {
        let replies = ping_round(&out_pairs, Family::V4)
            .into_iter()
            .chain(ping_round(&both, Family::V4));
        assert!(
            replies.into_iter().all(|r| !r),
            "{name}'s containers were cut off at {cut_at:.2?} but reach others again"
        );
    }
    println!(
        "  MEASURED revocation of {name}: `meshd revoke` took {revoke_took:.2?}; its {} containers reach none \
         of the {} others from {cut_at:.2?} (last reply at {reply_at:.2?}); every member shows it revoked \
         from {marked_at:.2?} (last poll without at {unmarked_at:.2?}); times from the start of `meshd revoke`",
        on.len(),
        off.len()
    );
    for (i, before) in members.iter().zip(&before) {
        let status = mesh.status(*i).unwrap_or(Value::Null);
        println!(
            "  {}: rx_handshake_revoked +{}, members {}",
            mesh.nodes[*i].name,
            counter(&status, "rx_handshake_revoked").saturating_sub(*before),
            member_states(&status)
        );
    }
    let exited = mesh.nodes[index].exited();
    println!(
        "  {name}'s own daemon: {}",
        exited.map_or("still running".to_string(), |s| format!("exited ({s})"))
    );

    // A member that learned the revocation by gossip keeps refusing after a restart.
    let m = mesh.index_of(restarted_member);
    let pid = mesh.nodes[m].pid().unwrap_or(0);
    let exit = mesh.nodes[m].stop();
    assert!(
        exit.is_some_and(|s| s.success()),
        "meshd on {restarted_member} should exit 0 on SIGTERM, got {exit:?}"
    );
    mesh.nodes[m].spawn();
    let restarted = Instant::now();
    mesh.wait_formed(RESTART_BOUND);
    println!(
        "  {restarted_member}$ kill -TERM {pid}; meshd --config {}   # back with the others in {:.2?}",
        mesh.nodes[m].config_str(),
        restarted.elapsed()
    );
    let revocations = mesh.nodes[m].state_dir().join("revocations");
    println!(
        "  {restarted_member}'s {}: {:?}",
        revocations.display(),
        fs::read_dir(&revocations)
            .map(|e| e
                .filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect::<Vec<_>>())
            .unwrap_or_default()
    );
    // The revoked node restarts knowing the restarted member directly, so it tries that member.
    let (target_name, target_key) = (mesh.nodes[m].name.clone(), mesh.nodes[m].public_key.clone());
    let endpoint = format!("{}:{MESHD_PORT}", topo.hosts[m].underlay_ip);
    let revoked = &mut mesh.nodes[index];
    let add_peer = cmd::run(
        meshd(&[
            "add-peer",
            "--config",
            revoked.config_str(),
            "--name",
            &target_name,
            "--public-key",
            &target_key,
            "--endpoint",
            &endpoint,
        ]),
        cmd::SHORT,
    );
    println!(
        "  {name}$ meshd add-peer --config {} --name {target_name} --public-key ... --endpoint {endpoint}   # {}",
        revoked.config_str(),
        if add_peer.success() {
            "ok".to_string()
        } else {
            add_peer.describe()
        }
    );
    revoked.stop();
    revoked.spawn();
    let revoked_running = match revoked.try_ready(Duration::from_secs(10)) {
        Ok(_) => true,
        Err(e) => {
            println!(
                "  {name}'s daemon does not start again after its revocation:\n{}",
                indent(&last_lines(&e, 4))
            );
            false
        }
    };
    let target_containers = topo.containers_on(topo.hosts[m].n);
    let to_target = pairs(&on, &target_containers);
    let retry = Instant::now();
    let mut rounds = 0;
    while retry.elapsed() < REVOKED_RETRY {
        rounds += 1;
        let replies = ping_round(&to_target, Family::V4);
        assert!(
            replies.iter().all(|r| !*r),
            "revoked {name} reaches {restarted_member}'s containers after {restarted_member} restarted"
        );
    }
    let status = mesh.status(m).unwrap_or(Value::Null);
    let state = member(&status, name).and_then(|v| v["state"].as_str().map(str::to_string));
    assert!(
        state.as_deref() != Some("alive") && peer(&status, name).is_none_or(|p| p["state"] != "up"),
        "{restarted_member} lists revoked {name} as {state:?} after its restart: peers {}",
        status["peers"]
    );
    // Counters start at zero with the daemon: these are all refusals since the restart.
    let refused: Vec<String> = admission_counters(&status)
        .into_iter()
        .filter(|(_, v)| *v > 0)
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    println!(
        "  after its restart {restarted_member} shows {name} as {}; {name}'s containers failed {rounds} ping \
         rounds to {restarted_member}'s over {:.1?}{}; {restarted_member}'s admission refusals since its \
         restart: {}",
        state.as_deref().unwrap_or("(not listed)"),
        retry.elapsed(),
        if revoked_running {
            ""
        } else {
            " (its daemon was not running)"
        },
        if refused.is_empty() {
            "none".to_string()
        } else {
            refused.join(", ")
        }
    );
}
