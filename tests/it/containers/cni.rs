//! `meshd-cni` driven the way a runtime drives it: the real binary, the `CNI_*` environment and
//! the network configuration on stdin. First what needs no daemon (protocol errors, a daemon that
//! is not running: a bounded wait, error 11 and nothing left behind), then ADD/CHECK/DEL on two
//! hosts with meshd running (containers on both reach each other; a second ADD, a missing
//! namespace and a stopped daemon leave nothing behind that they made; concurrent ADDs from
//! separate processes get distinct addresses; DEL twice succeeds).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use meshd::config::Config;
use meshd::io::addresses::AddressStore;
use meshd::io::veth::VethNames;
use serde_json::Value;

use crate::netns::cmd::{self, check, exec_in, ip, ip_in};
use crate::netns::mesh::{meshd, meshd_in, Node};

use super::hosts::MeshHosts;

pub const MESHD_CNI: &str = env!("CARGO_BIN_EXE_meshd-cni");
/// Longest a plugin call may take in these tests (ADD waits at most its configured seconds).
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// What one plugin run left.
#[derive(Debug)]
pub struct CniRun {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl CniRun {
    pub fn json(&self) -> Value {
        serde_json::from_str(self.stdout.trim()).unwrap_or_else(|e| {
            panic!(
                "plugin printed no JSON ({e}): stdout {:?}, stderr {:?}",
                self.stdout, self.stderr
            )
        })
    }

    /// The CNI error code of a failed run (which must print the spec's error object).
    pub fn error_code(&self) -> u64 {
        assert!(!self.success, "expected a failure: {self:?}");
        let json = self.json();
        assert!(json["msg"].is_string(), "error without msg: {json}");
        json["code"]
            .as_u64()
            .unwrap_or_else(|| panic!("error without code: {json}"))
    }
}

/// One call of the plugin: `env` are the `CNI_*` variables, run inside host namespace `ns` if
/// given (where that host's bridge is).
pub fn cni_call(ns: Option<&str>, env: &[(&str, &str)], stdin: &str) -> CniRun {
    let mut command = match ns {
        Some(ns) => exec_in(ns, MESHD_CNI, &[]),
        None => Command::new(MESHD_CNI),
    };
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("CNI_") {
            command.env_remove(key);
        }
    }
    command
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = command.spawn().expect("start meshd-cni");
    let pid = child.id();
    child
        .stdin
        .take()
        .expect("stdin piped")
        .write_all(stdin.as_bytes())
        .expect("write the network configuration");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let output = match rx.recv_timeout(CALL_TIMEOUT) {
        Ok(output) => output.expect("wait for meshd-cni"),
        Err(_) => {
            // SAFETY: kill on the pid of our own child that has not been reaped.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            panic!("meshd-cni did not finish within {CALL_TIMEOUT:?}");
        }
    };
    CniRun {
        success: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        elapsed: started.elapsed(),
    }
}

/// A network configuration for the meshd whose config is `meshd_config`.
pub fn net_conf(meshd_config: &Path, wait_seconds: u64) -> String {
    serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "meshnet",
        "type": "meshd-cni",
        "meshd_config": meshd_config,
        "meshd_wait_seconds": wait_seconds,
    })
    .to_string()
}

/// The `CNI_*` variables of a call about `container`/`eth0` in namespace file `netns`.
fn call_env<'a>(command: &'a str, container: &'a str, netns: &'a str) -> Vec<(&'a str, &'a str)> {
    let mut env = vec![
        ("CNI_COMMAND", command),
        ("CNI_CONTAINERID", container),
        ("CNI_IFNAME", "eth0"),
        ("CNI_PATH", "/opt/cni/bin"),
    ];
    if !netns.is_empty() {
        env.push(("CNI_NETNS", netns));
    }
    env
}

fn host_veth(container: &str) -> String {
    VethNames::for_owner("mc", &format!("cni:{container}/eth0")).host
}

fn link_exists(ns: Option<&str>, name: &str) -> bool {
    let command = match ns {
        Some(ns) => ip_in(ns, &["link", "show", "dev", name]),
        None => ip(&["link", "show", "dev", name]),
    };
    cmd::run(command, cmd::SHORT).success()
}

fn store_of(config: &Path) -> AddressStore {
    let config = Config::load(config).expect("load the host's config");
    AddressStore::open(&config.state_dir).expect("open the address store")
}

/// Asserts that a call about `container` left neither a veth nor an address.
fn assert_nothing_left(ns: Option<&str>, config: &Path, container: &str) {
    let veth = host_veth(container);
    assert!(!link_exists(ns, &veth), "veth {veth} was left behind");
    let held = store_of(config)
        .lookup_owner(&format!("cni:{container}/eth0"))
        .unwrap();
    assert!(held.is_empty(), "addresses left reserved: {held:?}");
}

/// Pings `address` from namespace `ns` until one echo comes back or 15 s passed (a new port's
/// first ARP and the peers' learning may take a moment on a loaded machine); the last attempt's
/// output if none did.
pub fn ping_within(ns: &str, address: &str) -> Result<(), String> {
    let started = Instant::now();
    loop {
        let ping = cmd::run(
            exec_in(ns, "ping", &["-c", "1", "-W", "1", address]),
            Duration::from_secs(5),
        );
        if ping.success() {
            return Ok(());
        }
        if started.elapsed() > Duration::from_secs(15) {
            return Err(ping.describe());
        }
    }
}

/// A network namespace for one container, removed on drop.
pub struct ContainerNs {
    pub name: String,
}

impl ContainerNs {
    pub fn new(name: &str) -> ContainerNs {
        let _ = cmd::run(ip(&["netns", "del", name]), cmd::SHORT);
        check(ip(&["netns", "add", name]), cmd::SHORT);
        ContainerNs {
            name: name.to_string(),
        }
    }

    pub fn path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }
}

impl Drop for ContainerNs {
    fn drop(&mut self) {
        let _ = cmd::run(ip(&["netns", "del", &self.name]), cmd::SHORT);
    }
}

/// A meshd config whose daemon is not running (never started), in a directory of its own.
struct IdleHost {
    dir: PathBuf,
    config: PathBuf,
}

impl IdleHost {
    fn new() -> IdleHost {
        let dir = std::env::temp_dir().join(format!("meshd-it-cni-idle-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("h.toml");
        check(
            meshd(&[
                "init",
                "--config",
                config.to_str().unwrap(),
                "--name",
                "idle",
                "--bridge",
                "brmidle",
                "--subnet",
                "10.79.0.0/16",
            ]),
            cmd::SHORT,
        );
        let text = std::fs::read_to_string(&config).unwrap();
        let socket = dir.join("meshd.sock");
        std::fs::write(
            &config,
            format!("control_socket = \"{}\"\n{text}", socket.display()),
        )
        .unwrap();
        IdleHost { dir, config }
    }
}

impl Drop for IdleHost {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

#[test]
fn cni_protocol_errors_and_an_absent_daemon_leave_nothing_behind() {
    let version = cni_call(
        None,
        &[("CNI_COMMAND", "VERSION")],
        r#"{"cniVersion":"1.0.0"}"#,
    );
    assert!(version.success, "{version:?}");
    assert_eq!(
        version.json(),
        serde_json::json!({"cniVersion":"1.0.0","supportedVersions":["0.4.0","1.0.0"]})
    );

    let host = IdleHost::new();
    let conf = net_conf(&host.config, 1);
    let add = call_env("ADD", "ctr1", "/run/netns/meshd-it-no-such-ns");
    // Malformed stdin: decoding failure.
    assert_eq!(cni_call(None, &add, "{\"cniVersion\":").error_code(), 6);
    // Unknown command and a missing variable: invalid environment variables.
    let mut unknown = add.clone();
    unknown[0] = ("CNI_COMMAND", "GC");
    assert_eq!(cni_call(None, &unknown, &conf).error_code(), 4);
    let no_container: Vec<_> = add
        .iter()
        .copied()
        .filter(|(k, _)| *k != "CNI_CONTAINERID")
        .collect();
    let missing = cni_call(None, &no_container, &conf);
    assert_eq!(missing.error_code(), 4);
    assert!(missing.stdout.contains("CNI_CONTAINERID"), "{missing:?}");
    // A version we do not honour, and an ipam section.
    let old = conf.replace("\"1.0.0\"", "\"0.3.1\"");
    assert_eq!(cni_call(None, &add, &old).error_code(), 1);
    let ipam = conf.replace("\"name\"", "\"ipam\":{\"type\":\"host-local\"},\"name\"");
    assert_eq!(cni_call(None, &add, &ipam).error_code(), 2);

    // The daemon is not running: ADD waits the configured second, then says so (try again).
    let absent = cni_call(None, &add, &conf);
    assert_eq!(absent.error_code(), 11, "{absent:?}");
    let msg = absent.json()["msg"].as_str().unwrap().to_string();
    assert!(
        msg.contains("not reachable") && msg.contains("meshd.sock"),
        "{msg}"
    );
    assert!(
        absent.elapsed >= Duration::from_secs(1) && absent.elapsed < Duration::from_secs(10),
        "waited {:?}",
        absent.elapsed
    );
    assert_nothing_left(None, &host.config, "ctr1");

    // DEL of something never added, twice, succeeds and prints nothing.
    for _ in 0..2 {
        let del = cni_call(None, &call_env("DEL", "ctr1", ""), &conf);
        assert!(del.success && del.stdout.trim().is_empty(), "{del:?}");
    }
}

fn added_address(run: &CniRun) -> (String, Value) {
    assert!(run.success, "ADD failed: {run:?}");
    let result = run.json();
    let address = result["ips"][0]["address"]
        .as_str()
        .unwrap_or_else(|| panic!("no address in {result}"))
        .to_string();
    (address, result)
}

#[test]
fn cni_add_check_del_on_two_hosts_running_meshd() {
    let Some(mut hosts) = MeshHosts::start("cn", "") else {
        return;
    };
    let (net0, net1) = (hosts.host_network(0), hosts.host_network(1));
    let conf0 = net_conf(hosts.config(0), 5);
    let conf1 = net_conf(hosts.config(1), 5);
    let (h0, h1) = (hosts.ns(0).to_string(), hosts.ns(1).to_string());

    let a = ContainerNs::new("mccnca");
    let b = ContainerNs::new("mccncb");
    let (address_a, result_a) = added_address(&cni_call(
        Some(&h0),
        &call_env("ADD", "ctra", &a.path()),
        &conf0,
    ));
    let (address_b, _) = added_address(&cni_call(
        Some(&h1),
        &call_env("ADD", "ctrb", &b.path()),
        &conf1,
    ));

    // The result: an address of this host's range with the subnet's prefix, the gateway, the
    // container interface in its sandbox.
    let (ip_a, prefix_a) = address_a.split_once('/').unwrap();
    assert!(net0.range.contains(ip_a.parse().unwrap()), "{address_a}");
    assert_eq!(prefix_a, net0.subnet.prefix().to_string());
    assert_eq!(result_a["ips"][0]["gateway"], net0.gateway.to_string());
    assert_eq!(result_a["ips"][0]["interface"], 1);
    assert_eq!(result_a["interfaces"][1]["name"], "eth0");
    assert_eq!(result_a["interfaces"][1]["sandbox"], a.path());
    assert_eq!(result_a["interfaces"][0]["name"], host_veth("ctra"));
    assert_eq!(result_a["routes"][0]["gw"], net0.gateway.to_string());
    assert_eq!(result_a["dns"], serde_json::json!({}));
    let ip_b = address_b.split_once('/').unwrap().0.to_string();
    assert!(net1.range.contains(ip_b.parse().unwrap()), "{address_b}");
    let inside = check(
        ip_in(&a.name, &["-o", "addr", "show", "dev", "eth0"]),
        cmd::SHORT,
    );
    assert!(inside.stdout.contains(&address_a), "{}", inside.stdout);

    // The containers on the two hosts reach each other through meshd.
    if let Err(last) = ping_within(&a.name, &ip_b) {
        panic!("container a cannot reach b: {last}");
    }

    // CHECK: silent success; a prevResult that lists another address fails.
    let checked = cni_call(Some(&h0), &call_env("CHECK", "ctra", &a.path()), &conf0);
    assert!(
        checked.success && checked.stdout.trim().is_empty(),
        "{checked:?}"
    );
    let mut with_prev: Value = serde_json::from_str(&conf0).unwrap();
    with_prev["prevResult"] =
        serde_json::json!({"cniVersion":"1.0.0","ips":[{"address":"10.77.200.9/16"}]});
    let wrong = cni_call(
        Some(&h0),
        &call_env("CHECK", "ctra", &a.path()),
        &with_prev.to_string(),
    );
    assert_eq!(wrong.error_code(), 102);

    // A second ADD for the same container fails without tearing down the first.
    let again = cni_call(Some(&h0), &call_env("ADD", "ctra", &a.path()), &conf0);
    assert_eq!(again.error_code(), 101, "{again:?}");
    let still = cni_call(Some(&h0), &call_env("CHECK", "ctra", &a.path()), &conf0);
    assert!(still.success, "the first attachment was damaged: {still:?}");

    // A namespace that does not exist: container unknown, nothing made.
    let missing = cni_call(
        Some(&h0),
        &call_env("ADD", "ctrgone", "/run/netns/mccn-no-such-ns"),
        &conf0,
    );
    assert_eq!(missing.error_code(), 3, "{missing:?}");
    assert_nothing_left(Some(&h0), hosts.config(0), "ctrgone");

    // ADDs from separate processes at once get distinct addresses (the store's lock).
    let parallel: Vec<ContainerNs> = (0..4)
        .map(|i| ContainerNs::new(&format!("mccnp{i}")))
        .collect();
    let runs: Vec<CniRun> = std::thread::scope(|scope| {
        let handles: Vec<_> = parallel
            .iter()
            .enumerate()
            .map(|(i, ns)| {
                let (h0, conf0) = (&h0, &conf0);
                scope.spawn(move || {
                    let id = format!("ctrp{i}");
                    cni_call(Some(h0), &call_env("ADD", &id, &ns.path()), conf0)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut addresses: Vec<String> = runs.iter().map(|r| added_address(r).0).collect();
    addresses.push(address_a.clone());
    addresses.sort();
    addresses.dedup();
    assert_eq!(
        addresses.len(),
        5,
        "an address was handed out twice: {addresses:?}"
    );
    for (i, ns) in parallel.iter().enumerate() {
        let id = format!("ctrp{i}");
        assert!(cni_call(Some(&h0), &call_env("DEL", &id, &ns.path()), &conf0).success);
        assert_nothing_left(Some(&h0), hosts.config(0), &id);
    }

    // DEL twice: both succeed; the veth and the address are gone; CHECK now fails.
    for _ in 0..2 {
        let del = cni_call(Some(&h0), &call_env("DEL", "ctra", &a.path()), &conf0);
        assert!(del.success && del.stdout.trim().is_empty(), "{del:?}");
    }
    assert_nothing_left(Some(&h0), hosts.config(0), "ctra");
    assert!(!link_exists(Some(&a.name), "eth0"));
    let after = cni_call(Some(&h0), &call_env("CHECK", "ctra", &a.path()), &conf0);
    assert_eq!(after.error_code(), 102);
    assert!(cni_call(Some(&h1), &call_env("DEL", "ctrb", ""), &conf1).success);
    assert_nothing_left(Some(&h1), hosts.config(1), "ctrb");

    // The daemon stops: ADD waits its bounded time, answers "try again later", makes nothing.
    hosts.nodes[0].stop();
    let c = ContainerNs::new("mccncc");
    let stopped_conf = net_conf(hosts.config(0), 2);
    let stopped = cni_call(
        Some(&h0),
        &call_env("ADD", "ctrc", &c.path()),
        &stopped_conf,
    );
    assert_eq!(stopped.error_code(), 11, "{stopped:?}");
    assert!(
        stopped.elapsed >= Duration::from_secs(2) && stopped.elapsed < Duration::from_secs(15),
        "waited {:?}",
        stopped.elapsed
    );
    assert_nothing_left(Some(&h0), hosts.config(0), "ctrc");
    assert!(!link_exists(Some(&c.name), "eth0"));
}

/// One host with an IPv6 subnet as well, its daemon running in namespace `ns`; stopped and removed
/// on drop.
struct DualStackHost {
    node: Node,
    dir: PathBuf,
}

impl DualStackHost {
    fn start(ns: &str) -> DualStackHost {
        let dir = std::env::temp_dir().join(format!("meshd-it-cni6-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let _ = cmd::run(ip(&["netns", "del", ns]), cmd::SHORT);
        check(ip(&["netns", "add", ns]), cmd::SHORT);
        check(ip_in(ns, &["link", "set", "lo", "up"]), cmd::SHORT);
        let mut node = Node::new("h6", ns, &dir);
        check(
            meshd_in(
                ns,
                &[
                    "init",
                    "--config",
                    node.config_str(),
                    "--name",
                    "h6",
                    "--listen",
                    "127.0.0.1:6655",
                    "--bridge",
                    "brm6",
                    "--subnet",
                    "10.78.0.0/16",
                    "--subnet6",
                    "fd78::/48",
                ],
            ),
            cmd::SHORT,
        );
        let text = std::fs::read_to_string(&node.config).unwrap();
        std::fs::write(
            &node.config,
            format!(
                "control_socket = \"{}\"\n{text}",
                dir.join("meshd.sock").display()
            ),
        )
        .unwrap();
        node.spawn();
        node.wait_ready(Duration::from_secs(30));
        let started = Instant::now();
        while node
            .status()
            .map(|s| s["host_network"].is_null())
            .unwrap_or(true)
        {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "no host network: {}",
                node.log_tail()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        DualStackHost { node, dir }
    }
}

impl Drop for DualStackHost {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- h6 log ---\n{}", self.node.log_tail());
        }
        self.node.stop();
        let _ = cmd::run(ip(&["netns", "del", &self.node.ns]), cmd::SHORT);
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

#[test]
fn cni_gives_the_matching_ipv6_address_of_the_hosts_64() {
    if !super::hosts::root_or_skip("the dual-stack CNI test") {
        return;
    }
    let host = DualStackHost::start("mccn6h");
    let conf = net_conf(&host.node.config, 5);
    let c = ContainerNs::new("mccn6c");
    let run = cni_call(
        Some(&host.node.ns),
        &call_env("ADD", "ctr6", &c.path()),
        &conf,
    );
    let (address, result) = added_address(&run);
    // The founder holds 10.78.0.0/24 and fd78::/64: the first container is .2 and ::2.
    assert_eq!(address, "10.78.0.2/16");
    assert_eq!(result["ips"][1]["address"], "fd78::2/48");
    assert_eq!(result["ips"][1]["gateway"], "fd78::1");
    assert_eq!(
        result["routes"][1],
        serde_json::json!({"dst": "::/0", "gw": "fd78::1"})
    );
    let inside = check(
        ip_in(&c.name, &["-6", "-o", "addr", "show", "dev", "eth0"]),
        cmd::SHORT,
    );
    assert!(inside.stdout.contains("fd78::2/48"), "{}", inside.stdout);
    // The container reaches the host's IPv6 gateway on the bridge.
    let ping = cmd::run(
        exec_in(
            &c.name,
            "ping",
            &["-6", "-c", "5", "-i", "0.5", "-W", "2", "fd78::1"],
        ),
        Duration::from_secs(20),
    );
    assert!(
        ping.success(),
        "no IPv6 to the gateway: {}",
        ping.describe()
    );
    let checked = cni_call(
        Some(&host.node.ns),
        &call_env("CHECK", "ctr6", &c.path()),
        &conf,
    );
    assert!(checked.success, "{checked:?}");
    let del = cni_call(
        Some(&host.node.ns),
        &call_env("DEL", "ctr6", &c.path()),
        &conf,
    );
    assert!(del.success, "{del:?}");
    assert_nothing_left(Some(&host.node.ns), &host.node.config, "ctr6");
}
