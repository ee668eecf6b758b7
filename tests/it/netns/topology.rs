//! The namespace topology: one underlay switch, four hosts with a bridge each, two containers per host.
//!
//! ```text
//!   underlay ns: bridge ulbr (10.201.0.254/24)
//!     |-- veth -- host hN: ul0 10.201.0.N/24, bridge br0
//!                      |-- vNa -- container cNa: eth0 02:77:00:00:0N:01 10.77.0.N1/24 fd77::N1/64
//!                      `-- vNb -- container cNb: eth0 02:77:00:00:0N:02 10.77.0.N2/24 fd77::N2/64
//! ```
//!
//! The hosts' br0 bridges are joined into one L2 segment either by meshd (its TAP enslaved into br0) or,
//! in control mode, by plain veth links h1-h2, h2-h3 and h3-h4 (a line, never a loop).
//!
//! An *outsider* (`add_outsider`) is one more host of the same shape on the same underlay, with one
//! container on its br0, that is not part of `hosts`/`containers`: the admission scenarios use it for
//! refused joins and for a rogue node, and the data-plane scenarios never address it.
//!
//! Invariants: every namespace name carries this topology's prefix (`meshit<pid>-<k>-`, k counting the
//! topologies of this process), so parallel tests, parallel runs or crashed runs never collide; every interface is created inside a namespace, never in the caller's; the guard
//! deletes every namespace it created when dropped, also while a test is panicking.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::cmd::{self, ip, ip_ok, sysctl_in};

/// UDP port every meshd node listens on.
pub const MESHD_PORT: u16 = 6655;
/// Address of the underlay namespace itself; the garbage flood comes from here.
pub const UNDERLAY_SELF: Ipv4Addr = Ipv4Addr::new(10, 201, 0, 254);
/// Container MTU: a plain Ethernet MTU, as containers have by default. meshd's TAP MTU is 1500 too
/// (issue 4): frames that do not fit the path are answered with ICMP or re-segmented, not left to a
/// smaller container MTU. Lowered at runtime if meshd reports a smaller TAP MTU.
pub const CONTAINER_MTU: u32 = 1500;
pub const UNDERLAY_MTU: u32 = 1500;
/// Hosts of the mesh: a founder and three members joined by invitation (issue 3).
pub const HOSTS: u8 = 4;
/// The host whose underlay address the paths scenarios change (issue 4). Its meshd listens on the
/// wildcard address: a socket bound to the old address would stop receiving once it is removed.
pub const ROAMING_HOST: u8 = 4;
const NAME_PREFIX: &str = "meshit";

pub struct Host {
    /// 1..=HOSTS, or above for an outsider
    pub n: u8,
    /// Node name as meshd knows it: "h1".
    pub name: String,
    pub ns: String,
    pub underlay_ip: Ipv4Addr,
}

pub struct Container {
    /// "c1a": host digit and slot letter of the container's original placement.
    pub name: String,
    pub ns: String,
    /// Host the container is currently plugged into (changes when it moves).
    pub host: u8,
    pub mac: String,
    pub ipv4: Ipv4Addr,
    pub ipv6: Ipv6Addr,
}

impl Container {
    /// Name of the host-side end of the container's veth; unique on any host because it names the container.
    pub fn host_port(&self) -> String {
        format!("v{}", &self.name[1..])
    }
}

pub struct Topology {
    pub prefix: String,
    pub underlay: String,
    pub hosts: Vec<Host>,
    pub containers: Vec<Container>,
    pub container_mtu: u32,
    /// Namespaces created so far, in creation order; the guard deletes them in reverse.
    created: Vec<String>,
}

impl Topology {
    /// Creates the whole topology; on a panic halfway, the partial guard tears down what exists.
    pub fn build(control: bool) -> Topology {
        remove_stale_namespaces();
        static BUILT: AtomicUsize = AtomicUsize::new(0);
        let prefix = format!(
            "{NAME_PREFIX}{}-{}",
            std::process::id(),
            BUILT.fetch_add(1, Ordering::Relaxed)
        );
        let mut topo = Topology {
            underlay: format!("{prefix}-ul"),
            prefix,
            hosts: Vec::new(),
            containers: Vec::new(),
            container_mtu: CONTAINER_MTU,
            created: Vec::new(),
        };
        let started = Instant::now();
        topo.build_underlay();
        for n in 1..=HOSTS {
            let host = topo.build_host(n);
            topo.hosts.push(host);
        }
        for n in 1..=HOSTS {
            for slot in 1..=2u8 {
                let container = topo.build_container(n, slot);
                topo.containers.push(container);
            }
        }
        if control {
            topo.link_bridges_directly();
        }
        println!(
            "topology {}: underlay + {HOSTS} hosts + {} containers ready in {:.1?}{}",
            topo.prefix,
            topo.containers.len(),
            started.elapsed(),
            if control {
                " (CONTROL mode: bridges joined by veth h1-h2-h3-h4, no meshd)"
            } else {
                ""
            }
        );
        topo
    }

    fn add_namespace(&mut self, ns: &str) {
        cmd::check(ip(&["netns", "add", ns]), cmd::SHORT);
        self.created.push(ns.to_string());
        ip_ok(ns, &["link", "set", "lo", "up"]);
    }

    fn build_underlay(&mut self) {
        let ul = self.underlay.clone();
        self.add_namespace(&ul);
        ip_ok(
            &ul,
            &[
                "link",
                "add",
                "ulbr",
                "type",
                "bridge",
                "mcast_snooping",
                "0",
            ],
        );
        ip_ok(
            &ul,
            &["addr", "add", &format!("{UNDERLAY_SELF}/24"), "dev", "ulbr"],
        );
        // A plain switch: with bridge netfilter on (the default where the kernel has it), bridged IPv4
        // packets too big for the port they leave by are fragmented or dropped by IP rules, but not on
        // the way in, which would make a narrowed port differ by direction. Absent without it: ignored.
        let _ = cmd::run(
            cmd::exec_in(
                &ul,
                "sysctl",
                &["-q", "-w", "net.bridge.bridge-nf-call-iptables=0"],
            ),
            cmd::SHORT,
        );
        ip_ok(&ul, &["link", "set", "ulbr", "up"]);
    }

    /// Creates host `n` (namespace, underlay port 10.201.0.n, empty br0) without listing it in `hosts`.
    fn build_host(&mut self, n: u8) -> Host {
        let host = Host {
            n,
            name: format!("h{n}"),
            ns: format!("{}-h{n}", self.prefix),
            underlay_ip: Ipv4Addr::new(10, 201, 0, n),
        };
        self.add_namespace(&host.ns);
        let ul = self.underlay.clone();
        let mtu = UNDERLAY_MTU.to_string();
        ip_ok(
            &ul,
            &[
                "link", "add", &host.name, "mtu", &mtu, "type", "veth", "peer", "name", "ul0",
                "netns", &host.ns,
            ],
        );
        ip_ok(&ul, &["link", "set", &host.name, "master", "ulbr", "up"]);
        ip_ok(
            &host.ns,
            &[
                "addr",
                "add",
                &format!("{}/24", host.underlay_ip),
                "dev",
                "ul0",
            ],
        );
        ip_ok(&host.ns, &["link", "set", "ul0", "mtu", &mtu, "up"]);
        // Snooping off: without an MLD querier it would only add state, and NDP must flood freely.
        ip_ok(
            &host.ns,
            &[
                "link",
                "add",
                "br0",
                "type",
                "bridge",
                "mcast_snooping",
                "0",
            ],
        );
        ip_ok(&host.ns, &["link", "set", "br0", "up"]);
        host
    }

    /// Creates container `slot` of host `n` and plugs it in, without listing it in `containers`.
    fn build_container(&mut self, n: u8, slot: u8) -> Container {
        let letter = (b'a' + slot - 1) as char;
        let index = 10 * n + slot;
        let container = Container {
            name: format!("c{n}{letter}"),
            ns: format!("{}-c{n}{letter}", self.prefix),
            host: n,
            mac: format!("02:77:00:00:{n:02x}:{slot:02x}"),
            ipv4: Ipv4Addr::new(10, 77, 0, index),
            ipv6: format!("fd77::{index}")
                .parse()
                .expect("valid IPv6 literal"),
        };
        self.add_namespace(&container.ns);
        sysctl_in(&container.ns, "net.ipv4.icmp_echo_ignore_broadcasts=0");
        self.plug_into(&container, &self.host_ns(n));
        container
    }

    /// An outsider host `n` (above `HOSTS`) with one container on its br0, on the same underlay and
    /// container subnet as the mesh but not listed in `hosts`/`containers`. Torn down with the rest.
    pub fn add_outsider(&mut self, n: u8) -> (Host, Container) {
        assert!(n > HOSTS, "outsider h{n} would collide with a mesh host");
        let host = self.build_host(n);
        let container = self.build_container(n, 1);
        (host, container)
    }

    fn host_ns(&self, n: u8) -> String {
        format!("{}-h{n}", self.prefix)
    }

    /// Creates the container's veth into the br0 of host namespace `host_ns` and configures eth0 (MAC,
    /// MTU, addresses, up).
    fn plug_into(&self, c: &Container, host_ns: &str) {
        let port = c.host_port();
        let mtu = self.container_mtu.to_string();
        ip_ok(
            host_ns,
            &[
                "link", "add", &port, "mtu", &mtu, "type", "veth", "peer", "name", "eth0", "netns",
                &c.ns,
            ],
        );
        ip_ok(host_ns, &["link", "set", &port, "master", "br0", "up"]);
        ip_ok(
            &c.ns,
            &["link", "set", "eth0", "address", &c.mac, "mtu", &mtu],
        );
        ip_ok(
            &c.ns,
            &["addr", "add", &format!("{}/24", c.ipv4), "dev", "eth0"],
        );
        // nodad: the address is usable at once instead of after ~1 s of duplicate detection.
        ip_ok(
            &c.ns,
            &[
                "addr",
                "add",
                &format!("{}/64", c.ipv6),
                "dev",
                "eth0",
                "nodad",
            ],
        );
        ip_ok(&c.ns, &["link", "set", "eth0", "up"]);
    }

    /// Control mode: joins the hosts' bridges with veth links in a line so the segment has no loop.
    fn link_bridges_directly(&self) {
        for (a, b) in (1..HOSTS).map(|a| (a, a + 1)) {
            link_bridges(&self.host(a).ns, &self.host(b).ns, a, b);
        }
    }

    /// Control mode: plugs an outsider's br0 straight into host `to`'s br0, as if it were a member.
    pub fn wire_in(&self, outsider: &Host, to: u8) {
        link_bridges(&outsider.ns, &self.host(to).ns, outsider.n, to);
    }

    pub fn host(&self, n: u8) -> &Host {
        self.hosts
            .iter()
            .find(|h| h.n == n)
            .unwrap_or_else(|| panic!("no host h{n}"))
    }

    /// The containers currently plugged into host `n`.
    pub fn containers_on(&self, n: u8) -> Vec<&Container> {
        self.containers.iter().filter(|c| c.host == n).collect()
    }

    /// The containers currently plugged into any host but `n`.
    pub fn containers_off(&self, n: u8) -> Vec<&Container> {
        self.containers.iter().filter(|c| c.host != n).collect()
    }

    pub fn container(&self, name: &str) -> &Container {
        self.containers
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("no container {name}"))
    }

    /// Moves container `name` to host `to`: its veth is deleted and a new one is created into the other
    /// host's br0 with the same MAC and addresses. Returns when the new eth0 is up.
    pub fn move_container(&mut self, name: &str, to: u8) -> Instant {
        let index = self
            .containers
            .iter()
            .position(|c| c.name == name)
            .unwrap_or_else(|| panic!("no container {name}"));
        let from = self.containers[index].host;
        let port = self.containers[index].host_port();
        // Deleting one end of a veth deletes both; the container keeps its namespace and sockets.
        ip_ok(&self.host(from).ns, &["link", "del", &port]);
        self.plug_into(&self.containers[index], &self.host(to).ns);
        self.containers[index].host = to;
        Instant::now()
    }

    /// Lowers every container veth (both ends) to `mtu`, e.g. when meshd's TAP MTU is smaller.
    pub fn set_container_mtu(&mut self, mtu: u32) {
        let value = mtu.to_string();
        for c in &self.containers {
            ip_ok(&c.ns, &["link", "set", "eth0", "mtu", &value]);
            ip_ok(
                &self.host(c.host).ns,
                &["link", "set", &c.host_port(), "mtu", &value],
            );
        }
        self.container_mtu = mtu;
    }

    /// Whether host `from` reaches `to` over the underlay: two pings, any reply counts. With `size`,
    /// the pings carry that many payload bytes with DF set, so a narrower link drops them instead of
    /// fragmenting.
    pub fn underlay_reaches(&self, from: u8, to: Ipv4Addr, size: Option<u32>) -> bool {
        let size = size.map(|s| s.to_string());
        let target = to.to_string();
        let mut args = vec!["-4", "-n", "-q", "-c", "2", "-i", "0.2", "-W", "1"];
        if let Some(size) = &size {
            args.extend(["-M", "do", "-s", size]);
        }
        args.push(&target);
        cmd::run(cmd::exec_in(&self.host(from).ns, "ping", &args), cmd::SHORT).success()
    }

    /// Cuts the underlay between every pair of hosts in `pairs`, both ways, with blackhole routes (no
    /// firewall needed, and each host only loses the addresses named). Returns once every cut pair is
    /// checked to be unreachable both ways; the routes go when the guard is healed or dropped.
    pub fn cut_underlay(&self, pairs: &[(u8, u8)]) -> UnderlayCut {
        let mut cut = UnderlayCut { routes: Vec::new() };
        for &(a, b) in pairs {
            for (from, to) in [(a, b), (b, a)] {
                let (ns, dest) = (self.host(from).ns.clone(), self.host(to).underlay_ip);
                ip_ok(&ns, &["route", "add", "blackhole", &format!("{dest}/32")]);
                cut.routes.push((from, ns, dest));
            }
        }
        for (from, _, dest) in &cut.routes {
            assert!(
                !self.underlay_reaches(*from, *dest, None),
                "h{from} still reaches {dest} after `ip route add blackhole {dest}/32` in its namespace"
            );
        }
        cut
    }

    /// Narrows the underlay path of host `n` so that the largest IP packet to or from it is
    /// `path_mtu` bytes, by lowering the MTU of the underlay switch's port to it (the
    /// underlay-namespace end of its veth). Larger packets are dropped silently in both directions, so
    /// host `n` sees a path MTU black hole while its own interface still says 1500. Checked with DF
    /// pings to and from another host at exactly `path_mtu` and one byte more before returning; undone
    /// when the guard is restored or dropped.
    pub fn narrow_underlay(&self, n: u8, path_mtu: u32) -> NarrowedLink {
        let port = self.host(n).name.clone();
        // A veth and a bridge port both pass frames up to 4 bytes over the MTU (room for a VLAN tag).
        let port_mtu = path_mtu - 4;
        ip_ok(
            &self.underlay,
            &["link", "set", &port, "mtu", &port_mtu.to_string()],
        );
        let link = NarrowedLink {
            underlay: self.underlay.clone(),
            port,
            restored: false,
        };
        let other = self.hosts.iter().find(|h| h.n != n).expect("a second host");
        // The largest ICMP payload that fits (20 bytes IPv4 header, 8 ICMP), and one byte more.
        let (fits, too_big) = (path_mtu - 28, path_mtu - 28 + 1);
        for (from, to) in [(n, other.underlay_ip), (other.n, self.host(n).underlay_ip)] {
            assert!(
                !self.underlay_reaches(from, to, Some(too_big)),
                "h{from} still gets {too_big}-byte DF pings through to {to} after the underlay port of \
                 h{n} was set to MTU {port_mtu} for a {path_mtu}-byte path"
            );
            assert!(
                self.underlay_reaches(from, to, Some(fits)),
                "h{from} cannot ping {to} with {fits} bytes after the underlay port of h{n} was set to \
                 MTU {port_mtu} for a {path_mtu}-byte path"
            );
        }
        link
    }

    /// Moves host `n`'s underlay address to `new`: the new address is added before the old one goes,
    /// as when a DHCP lease or a NAT mapping changes under a running host. Keeps `underlay_ip` true.
    pub fn readdress(&mut self, n: u8, new: Ipv4Addr) -> Instant {
        let (ns, old) = (self.host(n).ns.clone(), self.host(n).underlay_ip);
        // Without promotion the kernel deletes a subnet's secondary addresses with its primary.
        sysctl_in(&ns, "net.ipv4.conf.ul0.promote_secondaries=1");
        ip_ok(&ns, &["addr", "add", &format!("{new}/24"), "dev", "ul0"]);
        ip_ok(&ns, &["addr", "del", &format!("{old}/24"), "dev", "ul0"]);
        let changed = Instant::now();
        let index = self
            .hosts
            .iter()
            .position(|h| h.n == n)
            .expect("host exists");
        self.hosts[index].underlay_ip = new;
        let shown = cmd::check(
            cmd::ip_in(&ns, &["-4", "-o", "addr", "show", "dev", "ul0"]),
            cmd::SHORT,
        )
        .stdout;
        let has = |ip: Ipv4Addr| shown.contains(&format!("inet {ip}/"));
        assert!(
            has(new) && !has(old),
            "h{n}'s ul0 should hold {new} and no longer {old} after the change, shows:\n{shown}"
        );
        changed
    }
}

/// Blackhole routes that cut the underlay between hosts; removed by `heal` or when dropped, also on a
/// panic, so nothing that runs after the guard's scope finds the underlay still cut.
pub struct UnderlayCut {
    /// (host number, host namespace, blackholed address)
    routes: Vec<(u8, String, Ipv4Addr)>,
}

impl UnderlayCut {
    /// `from -> to` for every blackholed direction, for messages.
    pub fn describe(&self) -> String {
        self.routes
            .iter()
            .map(|(from, _, to)| format!("h{from}-/->{to}"))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Removes every route, panicking if one cannot be removed; returns when they are gone.
    pub fn heal(mut self) -> Instant {
        for (_, ns, dest) in std::mem::take(&mut self.routes) {
            ip_ok(&ns, &["route", "del", "blackhole", &format!("{dest}/32")]);
        }
        Instant::now()
    }
}

impl Drop for UnderlayCut {
    fn drop(&mut self) {
        for (_, ns, dest) in self.routes.drain(..) {
            let out = cmd::run(
                cmd::ip_in(&ns, &["route", "del", "blackhole", &format!("{dest}/32")]),
                cmd::SHORT,
            );
            if !out.success() {
                eprintln!(
                    "cleanup: removing blackhole {dest}/32 in {ns}: {}",
                    out.describe()
                );
            }
        }
    }
}

/// An underlay port with a lowered MTU; back to `UNDERLAY_MTU` by `restore` or when dropped.
pub struct NarrowedLink {
    underlay: String,
    port: String,
    restored: bool,
}

impl NarrowedLink {
    fn set_full_mtu(&self) -> cmd::Output {
        cmd::run(
            cmd::ip_in(
                &self.underlay,
                &["link", "set", &self.port, "mtu", &UNDERLAY_MTU.to_string()],
            ),
            cmd::SHORT,
        )
    }

    /// Puts the port back to `UNDERLAY_MTU`, panicking if that fails.
    pub fn restore(mut self) {
        let out = self.set_full_mtu();
        assert!(
            out.success(),
            "restoring MTU {UNDERLAY_MTU} on underlay port {}: {}",
            self.port,
            out.describe()
        );
        self.restored = true;
    }
}

impl Drop for NarrowedLink {
    fn drop(&mut self) {
        if !self.restored {
            let out = self.set_full_mtu();
            if !out.success() {
                eprintln!(
                    "cleanup: restoring MTU {UNDERLAY_MTU} on underlay port {}: {}",
                    self.port,
                    out.describe()
                );
            }
        }
    }
}

/// A veth `t<a><b>` / `t<b><a>` between the br0 bridges of namespaces `a_ns` and `b_ns`.
fn link_bridges(a_ns: &str, b_ns: &str, a: u8, b: u8) {
    let a_end = format!("t{a}{b}");
    let b_end = format!("t{b}{a}");
    ip_ok(
        a_ns,
        &[
            "link", "add", &a_end, "type", "veth", "peer", "name", &b_end, "netns", b_ns,
        ],
    );
    ip_ok(a_ns, &["link", "set", &a_end, "master", "br0", "up"]);
    ip_ok(b_ns, &["link", "set", &b_end, "master", "br0", "up"]);
}

impl Drop for Topology {
    fn drop(&mut self) {
        let started = Instant::now();
        for ns in self.created.iter().rev() {
            let out = cmd::run(ip(&["netns", "del", ns]), cmd::SHORT);
            if !out.success() {
                eprintln!("teardown: ip netns del {ns}: {}", out.describe());
            }
        }
        if !self.created.is_empty() {
            println!(
                "teardown: deleted {} namespaces in {:.1?}",
                self.created.len(),
                started.elapsed()
            );
        }
    }
}

/// Deletes namespaces left by earlier runs of this harness whose process is gone (killed by SIGKILL or
/// Ctrl-C, so their guard never ran). Namespaces of a still-running process are left alone.
fn remove_stale_namespaces() {
    let out = cmd::run(ip(&["netns", "list"]), cmd::SHORT);
    for line in out.stdout.lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(rest) = name.strip_prefix(NAME_PREFIX) else {
            continue;
        };
        let Some((pid, _)) = rest.split_once('-') else {
            continue;
        };
        if pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        if std::path::Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let pids = cmd::run(ip(&["netns", "pids", name]), cmd::SHORT);
        if !pids.stdout.trim().is_empty() {
            eprintln!(
                "stale namespace {name} still has processes {:?}; deleting the name only",
                pids.stdout.split_whitespace().collect::<Vec<_>>()
            );
        }
        let del = cmd::run(ip(&["netns", "del", name]), cmd::SHORT);
        println!("removed stale namespace {name} from an earlier run ({})", {
            if del.success() {
                "ok".to_string()
            } else {
                del.describe()
            }
        });
    }
}

/// Polls `probe` every `every` until it returns true or `timeout` passes; returns the time it took.
pub fn poll_until(
    timeout: Duration,
    every: Duration,
    mut probe: impl FnMut() -> bool,
) -> Option<Duration> {
    let started = Instant::now();
    loop {
        if probe() {
            return Some(started.elapsed());
        }
        if started.elapsed() >= timeout {
            return None;
        }
        std::thread::sleep(every);
    }
}
