//! Two hosts in network namespaces joined by meshd the way an operator joins them: `meshd init
//! --subnet` founds the network on h1, `meshd invite` and `meshd join` admit h2. Each host's daemon
//! runs with its bridge `brm`, its control socket and `subnet.env` in the host's own directory, and
//! the test's extra top-level config lines. [`MeshHosts::start`] returns once both hold a range and
//! their session is up.
//!
//! Invariants: namespaces are named `mc<tag><n>` and removed (with everything in them) on drop, with
//! the daemons stopped first; the per-run directory is kept after a failure (its path printed) and
//! removed otherwise, unless `MESHD_IT_KEEP=1`.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use meshd::core::ranges::HostNetwork;
use serde_json::Value;

use crate::netns::cmd::{self, check, ip, ip_ok};
use crate::netns::mesh::{meshd, meshd_in, Node, JOIN_TIMEOUT};
use crate::netns::{env_flag, running_as_root};

/// The network's container subnet in every test.
pub const SUBNET: &str = "10.77.0.0/16";
/// The bridge each host's containers plug into.
pub const BRIDGE: &str = "brm";
const READY: Duration = Duration::from_secs(30);
const FORM: Duration = Duration::from_secs(45);

pub struct MeshHosts {
    pub nodes: Vec<Node>,
    base: PathBuf,
    tag: String,
}

/// Whether the test may run; prints why not, and panics instead under CI.
pub fn root_or_skip(what: &str) -> bool {
    if running_as_root() {
        return true;
    }
    assert!(
        !env_flag("CI"),
        "{what} must run as root in CI (CI=true), e.g. `sudo -E cargo test --test it`"
    );
    println!("skipping {what}: needs root for network namespaces (run as root / sudo)");
    false
}

impl MeshHosts {
    /// Two hosts with meshd running and a range each. `tag` (1 to 4 characters) keeps
    /// namespaces and links of concurrent tests apart; `extra_top_level` is added at the top of
    /// each host's config, with `{dir}` replaced by the host's directory. `None`: not root
    /// (skipped, with the reason printed).
    pub fn start(tag: &str, extra_top_level: &str) -> Option<MeshHosts> {
        if !root_or_skip(&format!("container tests ({tag})")) {
            return None;
        }
        assert!((1..=4).contains(&tag.len()), "tags are 1 to 4 characters");
        let base = std::env::temp_dir().join(format!("meshd-it-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&base);
        let mut hosts = MeshHosts {
            nodes: Vec::new(),
            base,
            tag: tag.to_string(),
        };
        for n in 1..=2 {
            let ns = hosts.ns_name(n);
            let _ = cmd::run(ip(&["netns", "del", &ns]), cmd::SHORT);
            check(ip(&["netns", "add", &ns]), cmd::SHORT);
            ip_ok(&ns, &["link", "set", "lo", "up"]);
            let dir = hosts.base.join(format!("h{n}"));
            fs::create_dir_all(&dir).expect("create host dir");
            hosts.nodes.push(Node::new(&format!("h{n}"), &ns, &dir));
        }
        let (a, b) = (format!("u{tag}1"), format!("u{tag}2"));
        check(
            ip(&[
                "link",
                "add",
                &a,
                "netns",
                &hosts.nodes[0].ns,
                "type",
                "veth",
                "peer",
                "name",
                &b,
                "netns",
                &hosts.nodes[1].ns,
            ]),
            cmd::SHORT,
        );
        for (i, link) in [(0, &a), (1, &b)] {
            let ns = hosts.nodes[i].ns.clone();
            ip_ok(
                &ns,
                &[
                    "addr",
                    "add",
                    &format!("{}/24", hosts.underlay(i)),
                    "dev",
                    link,
                ],
            );
            ip_ok(&ns, &["link", "set", link, "up"]);
        }

        let listen = |i: usize, h: &MeshHosts| format!("{}:6655", h.underlay(i));
        let founder = &hosts.nodes[0];
        check(
            meshd_in(
                &founder.ns,
                &[
                    "init",
                    "--config",
                    founder.config_str(),
                    "--name",
                    "h1",
                    "--listen",
                    &listen(0, &hosts),
                    "--bridge",
                    BRIDGE,
                    "--subnet",
                    SUBNET,
                ],
            ),
            cmd::SHORT,
        );
        hosts.add_top_level(0, extra_top_level);
        hosts.nodes[0].spawn();
        hosts.nodes[0].wait_ready(READY);
        let token = check(
            meshd(&[
                "invite",
                "--config",
                hosts.nodes[0].config_str(),
                "--name",
                "h2",
            ]),
            cmd::SHORT,
        )
        .stdout
        .trim()
        .to_string();
        let joiner = &hosts.nodes[1];
        check(
            meshd_in(
                &joiner.ns,
                &[
                    "join",
                    "--config",
                    joiner.config_str(),
                    "--listen",
                    &listen(1, &hosts),
                    "--bridge",
                    BRIDGE,
                    &token,
                ],
            ),
            JOIN_TIMEOUT,
        );
        hosts.add_top_level(1, extra_top_level);
        hosts.nodes[1].spawn();
        hosts.nodes[1].wait_ready(READY);
        hosts.wait_formed();
        Some(hosts)
    }

    fn ns_name(&self, n: usize) -> String {
        format!("mc{}{n}", self.tag)
    }

    /// The underlay address of host `i` (0-based).
    pub fn underlay(&self, i: usize) -> String {
        format!("10.213.{}.{}", self.tag_byte(), i + 1)
    }

    fn tag_byte(&self) -> u8 {
        self.tag
            .bytes()
            .fold(0u8, |acc, b| acc.wrapping_mul(31).wrapping_add(b))
    }

    /// Puts `extra` (with `{dir}`) and the per-host control socket and subnet.env paths at the
    /// top of host `i`'s config, where top-level keys must be.
    fn add_top_level(&self, i: usize, extra: &str) {
        let node = &self.nodes[i];
        let dir = node.dir().to_str().expect("UTF-8 temp path");
        let text = fs::read_to_string(&node.config).expect("read config");
        let head = format!(
            "control_socket = \"{dir}/meshd.sock\"\nsubnet_env = \"{dir}/subnet.env\"\n{}\n",
            extra.replace("{dir}", dir)
        );
        fs::write(&node.config, head + &text).expect("write config");
    }

    /// Host `i`'s network namespace.
    pub fn ns(&self, i: usize) -> &str {
        &self.nodes[i].ns
    }

    /// Host `i`'s meshd config.
    pub fn config(&self, i: usize) -> &Path {
        &self.nodes[i].config
    }

    /// Host `i`'s own directory (config, key, state, control socket, subnet.env).
    pub fn dir(&self, i: usize) -> &Path {
        self.nodes[i].dir()
    }

    /// `meshd status --json` of host `i`.
    pub fn status(&self, i: usize) -> Value {
        self.nodes[i].status().unwrap_or_else(|e| panic!("{e}"))
    }

    /// Host `i`'s share of the container network, as its daemon reports it.
    pub fn host_network(&self, i: usize) -> HostNetwork {
        let status = self.status(i);
        serde_json::from_value(status["host_network"].clone())
            .unwrap_or_else(|e| panic!("h{} reports no host network ({e}): {status:#}", i + 1))
    }

    /// Restarts host `i`'s daemon and waits until its session is up again.
    pub fn restart(&mut self, i: usize) {
        self.nodes[i].stop();
        self.nodes[i].spawn();
        self.nodes[i].wait_ready(READY);
        self.wait_formed();
    }

    /// Waits until both hosts hold a range and have a session with each other.
    pub fn wait_formed(&self) {
        let started = Instant::now();
        loop {
            let ready = (0..2).all(|i| match self.nodes[i].status() {
                Ok(s) => {
                    !s["host_network"].is_null()
                        && s["peers"]
                            .as_array()
                            .is_some_and(|p| p.iter().any(|p| p["state"] == "up"))
                }
                Err(_) => false,
            });
            if ready {
                return;
            }
            assert!(
                started.elapsed() < FORM,
                "the two hosts did not get ranges and a session within {FORM:?}:\nh1: {:?}\nh1 log:\n{}\nh2: {:?}\nh2 log:\n{}",
                self.nodes[0].status(),
                self.nodes[0].log_tail(),
                self.nodes[1].status(),
                self.nodes[1].log_tail()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for MeshHosts {
    fn drop(&mut self) {
        let failed = std::thread::panicking();
        for node in &mut self.nodes {
            if failed {
                eprintln!("--- {} log ---\n{}", node.name, node.log_tail());
            }
            node.stop();
        }
        for n in 1..=self.nodes.len() {
            let _ = cmd::run(ip(&["netns", "del", &self.ns_name(n)]), cmd::SHORT);
        }
        if failed || env_flag("MESHD_IT_KEEP") {
            eprintln!("kept {}", self.base.display());
        } else {
            let _ = fs::remove_dir_all(&self.base);
        }
    }
}
