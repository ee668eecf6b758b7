//! Forming the mesh and running one meshd daemon per host namespace, the way an operator would (issue
//! 3): `meshd init` founds the network on h1 and its daemon starts; for every further host, `meshd
//! invite --name hN` on h1 prints a token and `meshd join ... TOKEN`, run inside hN's namespace, reaches
//! h1's daemon over the underlay and writes hN's config, key and certificate; hN's daemon starts
//! knowing only h1 and learns the others by gossip. Daemons run in the foreground and are queried with
//! `meshd status --json` over each daemon's control socket.
//!
//! Invariants: all files live in one per-run directory; the guard stops every daemon it started (SIGTERM,
//! then SIGKILL after a grace period) when dropped, and prints the daemons' logs if the test is
//! panicking; the directory is kept (and its path printed) after a failure so logs can be inspected.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;

use super::cmd::{self, exec_in, ip_in};
use super::topology::{Host, Topology, MESHD_PORT, ROAMING_HOST};

/// Path of the meshd binary cargo built for this test run.
pub const MESHD: &str = env!("CARGO_BIN_EXE_meshd");
const STOP_GRACE: Duration = Duration::from_secs(5);
const LOG_TAIL_LINES: usize = 120;
/// `meshd join` makes a UDP round trip to the inviter (with retries on loss); generous on a busy CI box.
pub const JOIN_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the mesh may take to form: every node a member of every other and every session up.
pub const FORM_TIMEOUT: Duration = Duration::from_secs(30);
/// The counters a node raises when it refuses a handshake for lack of a valid admission.
pub const ADMISSION_COUNTERS: [&str; 3] = [
    "rx_handshake_bad_certificate",
    "rx_handshake_no_certificate",
    "rx_handshake_revoked",
];

pub fn meshd(args: &[&str]) -> Command {
    let mut command = Command::new(MESHD);
    command.args(args);
    command
}

/// `meshd ARGS...` run inside namespace `ns`, as on that host.
pub fn meshd_in(ns: &str, args: &[&str]) -> Command {
    exec_in(ns, MESHD, args)
}

pub struct Node {
    /// meshd node name ("h1" for mesh hosts).
    pub name: String,
    pub ns: String,
    pub config: PathBuf,
    pub log: PathBuf,
    /// The node's static public key, as `meshd init` or `meshd pubkey` printed it.
    pub public_key: String,
    /// TAP name reported by `status`, for the clean-shutdown check.
    pub tap: String,
    /// Set once an admin revoked this node: it may then exit, and others must refuse it.
    pub revoked: bool,
    child: Option<Child>,
}

impl Node {
    /// A node whose files are `<dir>/<name>.toml` and `<dir>/<name>.log`; nothing is created yet.
    pub fn new(name: &str, ns: &str, dir: &Path) -> Node {
        Node {
            name: name.to_string(),
            ns: ns.to_string(),
            config: dir.join(format!("{name}.toml")),
            log: dir.join(format!("{name}.log")),
            public_key: String::new(),
            tap: "meshd0".to_string(),
            revoked: false,
            child: None,
        }
    }

    pub fn config_str(&self) -> &str {
        self.config.to_str().expect("temp paths are UTF-8")
    }

    /// The directory `init`/`join` put the key and state directory in (the config's).
    pub fn dir(&self) -> &Path {
        self.config.parent().expect("config paths have a parent")
    }

    /// `<dir>/<name>.state/`, where the certificate, invites and revocations live.
    pub fn state_dir(&self) -> PathBuf {
        self.dir().join(format!("{}.state", self.name))
    }

    /// The last lines of this daemon's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_else(|e| format!("(no log: {e})"));
        let lines: Vec<&str> = text.lines().collect();
        let start = lines.len().saturating_sub(LOG_TAIL_LINES);
        lines[start..].join("\n")
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the daemon has exited (reaping it); `Some(status)` if so.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Starts `meshd --config` in the node's namespace, appending to its log (a restart keeps the
    /// previous run's lines above a marker).
    pub fn spawn(&mut self) {
        assert!(
            self.child.is_none(),
            "meshd on {} is already running",
            self.name
        );
        let mut log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap_or_else(|e| panic!("open {}: {e}", self.log.display()));
        if log.metadata().map(|m| m.len()).unwrap_or(0) > 0 {
            use std::io::Write;
            let _ = writeln!(log, "----- harness: meshd restarted -----");
        }
        let log_err = log.try_clone().expect("dup log file descriptor");
        // `ip netns exec` execs the program in place, so the child's pid is meshd's own.
        let mut command = meshd_in(&self.ns, &["--config", self.config_str()]);
        if std::env::var_os("RUST_LOG").is_none() {
            command.env("RUST_LOG", "info");
        }
        command
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err));
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start meshd for {}: {e}", self.name));
        self.child = Some(child);
    }

    /// SIGTERM (then SIGKILL after the grace period); the exit status, `None` if it had to be killed.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        terminate(&mut child, STOP_GRACE)
    }

    /// `meshd status --json` of this node, parsed.
    pub fn status(&self) -> Result<Value, String> {
        let out = cmd::run(
            meshd(&["status", "--config", self.config_str(), "--json"]),
            Duration::from_secs(5),
        );
        if !out.success() {
            return Err(format!(
                "`meshd status` for {}: {}",
                self.name,
                out.describe()
            ));
        }
        serde_json::from_str(&out.stdout).map_err(|e| {
            format!(
                "`meshd status --json` for {} printed invalid JSON ({e}): {:?}",
                self.name, out.stdout
            )
        })
    }

    /// Waits until the control socket answers (the daemon's sockets are then bound); panics with the
    /// log if the daemon exits or does not answer in time.
    pub fn wait_ready(&mut self, timeout: Duration) -> Duration {
        self.try_ready(timeout).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Like `wait_ready`, but an exit or a timeout is returned as an error (with the log tail).
    pub fn try_ready(&mut self, timeout: Duration) -> Result<Duration, String> {
        let started = Instant::now();
        loop {
            if let Some(status) = self.exited() {
                self.child = None;
                return Err(format!(
                    "meshd on {} exited at start ({status}); log tail:\n{}",
                    self.name,
                    self.log_tail()
                ));
            }
            match self.status() {
                Ok(_) => return Ok(started.elapsed()),
                Err(e) if started.elapsed() > timeout => {
                    return Err(format!(
                    "meshd on {} does not answer `status` within {timeout:?}: {e}; log tail:\n{}",
                    self.name,
                    self.log_tail()
                ))
                }
                Err(_) => thread::sleep(Duration::from_millis(50)),
            }
        }
    }
}

pub struct Mesh {
    pub dir: PathBuf,
    /// The network id `meshd init` wrote into the founder's config (`[network] id`).
    pub network_id: String,
    /// `nodes[0]` is the founder (h1, the only admin); `nodes[i]` runs on `topo.hosts[i]`.
    pub nodes: Vec<Node>,
    /// Daemons a scenario starts that are not members (a rogue node); stopped with the mesh.
    pub outsiders: Vec<Node>,
    /// The token each joined node used, by node name (spent: any other use must be refused).
    pub used_tokens: BTreeMap<String, String>,
}

impl Mesh {
    /// Founds the network on the first host and joins every other host by invitation, starting each
    /// daemon as soon as its host is configured. Does not wait for the mesh to form (`wait_formed`).
    pub fn form(topo: &Topology) -> Mesh {
        let dir = std::env::temp_dir().join(format!("{}-meshd", topo.prefix));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        println!(
            "meshd: binary {MESHD}, configs, state and logs in {}",
            dir.display()
        );
        let started = Instant::now();
        let (founder_host, others) = topo.hosts.split_first().expect("at least one host");
        let mut founder = Node::new(&founder_host.name, &founder_host.ns, &dir);
        let network_id = found_network(&mut founder, founder_host);
        set_control_socket(&founder.config, &dir.join(format!("{}.sock", founder.name)));
        founder.spawn();
        let ready = founder.wait_ready(Duration::from_secs(15));
        println!(
            "  {}: daemon started (pid {}), control socket answers after {ready:.1?}",
            founder.name,
            founder.pid().unwrap_or(0)
        );
        let mut mesh = Mesh {
            dir,
            network_id,
            nodes: vec![founder],
            outsiders: Vec::new(),
            used_tokens: BTreeMap::new(),
        };
        for host in others {
            let token = mesh.invite(Some(&host.name), "10m");
            let mut node = Node::new(&host.name, &host.ns, &mesh.dir);
            let took = mesh.join_checked(&mut node, host, &token);
            mesh.used_tokens.insert(node.name.clone(), token);
            set_control_socket(&node.config, &mesh.dir.join(format!("{}.sock", node.name)));
            // A mixed fleet: h3 keeps a plain TAP while the others use offloads (the default),
            // and speaks ChaCha20-Poly1305 only while the others negotiate (AES-256-GCM between
            // them where the CPU has AES), so one run covers both TAP paths, both ciphers and
            // the traffic between them.
            if node.name == "h3" {
                edit_config(&node.config, |c| {
                    table(c, "interface").insert("offload".into(), toml::Value::Boolean(false));
                    c.insert("cipher".into(), "chacha20-poly1305".into());
                });
            }
            node.spawn();
            println!(
                "  {}: joined in {took:.1?} knowing only {} (bootstrap peer); daemon started (pid {}){}",
                node.name,
                mesh.nodes[0].name,
                node.pid().unwrap_or(0),
                if node.name == "h3" {
                    ", offload = false, cipher = chacha20-poly1305"
                } else {
                    ""
                }
            );
            mesh.nodes.push(node);
        }
        println!(
            "meshd: network founded and {} hosts joined by invitation in {:.1?}",
            mesh.nodes.len() - 1,
            started.elapsed()
        );
        mesh
    }

    pub fn founder(&self) -> &Node {
        &self.nodes[0]
    }

    pub fn index_of(&self, name: &str) -> usize {
        self.nodes
            .iter()
            .position(|n| n.name == name)
            .unwrap_or_else(|| panic!("no meshd node {name}"))
    }

    /// `meshd invite --config FOUNDER [--name NAME] --expires EXPIRES` on the founder's host; the token.
    pub fn invite(&self, name: Option<&str>, expires: &str) -> String {
        let founder = self.founder();
        let mut args = vec!["invite", "--config", founder.config_str()];
        if let Some(name) = name {
            args.extend(["--name", name]);
        }
        args.extend(["--expires", expires]);
        let out = cmd::check(meshd_in(&founder.ns, &args), cmd::SHORT);
        let lines: Vec<&str> = out
            .stdout
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect();
        assert_eq!(
            lines.len(),
            1,
            "`meshd invite` should print exactly one line (the token), printed {:?}",
            out.stdout
        );
        let token = lines[0].trim().to_string();
        assert!(
            !token.contains(char::is_whitespace) && token.len() >= 32,
            "`meshd invite` printed {token:?}, which does not look like a token"
        );
        println!(
            "  {}$ meshd invite --config {} {}--expires {expires}   # token of {} chars",
            founder.name,
            founder.config_str(),
            name.map(|n| format!("--name {n} ")).unwrap_or_default(),
            token.len()
        );
        token
    }

    /// Runs `meshd join` for `node` inside `host`'s namespace and checks what the contract says it
    /// leaves behind: config, key, state directory, the network id, and only the inviter as a peer.
    fn join_checked(&self, node: &mut Node, host: &Host, token: &str) -> Duration {
        let listen = if host.n == ROAMING_HOST {
            format!("0.0.0.0:{MESHD_PORT}")
        } else {
            format!("{}:{MESHD_PORT}", host.underlay_ip)
        };
        println!(
            "  {}$ meshd join --config {} --name {} --listen {listen} --bridge br0 TOKEN",
            node.name,
            node.config_str(),
            node.name
        );
        let started = Instant::now();
        let out = join(&node.ns, &node.config, &node.name, &listen, token);
        let took = started.elapsed();
        assert!(
            out.success(),
            "`meshd join` on {} failed: {}\nfounder's log tail:\n{}",
            node.name,
            out.describe(),
            self.founder().log_tail()
        );
        let key_file = node.dir().join(format!("{}.key", node.name));
        assert!(
            key_file.is_file(),
            "`meshd join` on {} should write its key {}",
            node.name,
            key_file.display()
        );
        assert!(
            node.state_dir().is_dir(),
            "`meshd join` on {} should create its state directory {}",
            node.name,
            node.state_dir().display()
        );
        let config = read_config(&node.config);
        let network = config
            .get("network")
            .and_then(|n| n.get("id"))
            .and_then(toml::Value::as_str);
        assert_eq!(
            network,
            Some(self.network_id.as_str()),
            "{}'s joined config should name the founder's network in [network] id:\n{}",
            node.name,
            fs::read_to_string(&node.config).unwrap_or_default()
        );
        let founder = self.founder();
        let peers = config_peers(&config);
        let founder_endpoint =
            format!("{}:{MESHD_PORT}", founder_listen_ip(&self.founder().config));
        assert!(
            peers.first().is_some_and(|(name, key, endpoint)| {
                *name == founder.name
                    && *key == founder.public_key
                    && endpoint.as_deref() == Some(founder_endpoint.as_str())
            }),
            "{}'s joined config should name the inviter as its bootstrap peer ({} {} {founder_endpoint}), \
             has {peers:?}",
            node.name,
            founder.name,
            founder.public_key
        );
        if peers.len() > 1 {
            // The contract says the inviter only; the scenario needs hosts that know only the founder
            // (the rest must come from gossip), so the harness keeps just that one, and says so.
            println!(
                "  NOTE: `meshd join` wrote {} bootstrap peers {:?} (contract: only the inviter); the \
                 harness keeps only {} so {} must learn the others by gossip",
                peers.len(),
                peers.iter().map(|p| p.0.as_str()).collect::<Vec<_>>(),
                founder.name,
                node.name
            );
            edit_config(&node.config, |c| {
                if let Some(toml::Value::Array(entries)) = c.get_mut("peers") {
                    entries.truncate(1);
                }
            });
        }
        node.public_key = cmd::check(
            meshd(&["pubkey", "--config", node.config_str()]),
            cmd::SHORT,
        )
        .stdout
        .trim()
        .to_string();
        took
    }

    /// `meshd revoke --config FOUNDER NAME` on the founder's host.
    pub fn revoke(&self, name: &str) -> cmd::Output {
        let founder = self.founder();
        println!(
            "  {}$ meshd revoke --config {} {name}",
            founder.name,
            founder.config_str()
        );
        cmd::run(
            meshd_in(
                &founder.ns,
                &["revoke", "--config", founder.config_str(), name],
            ),
            cmd::SHORT,
        )
    }

    /// `meshd status --json` of node `index`, parsed.
    pub fn status(&self, index: usize) -> Result<Value, String> {
        self.nodes[index].status()
    }

    /// Panics (with the daemon's log) if any daemon that should run has exited.
    pub fn assert_alive(&mut self) {
        for node in self.nodes.iter_mut().filter(|n| !n.revoked) {
            if let Some(status) = node.exited() {
                panic!(
                    "meshd on {} exited unexpectedly ({status}); log tail:\n{}",
                    node.name,
                    node.log_tail()
                );
            }
        }
    }

    /// Polls `status --json` until every node that is not revoked lists every other such node as an
    /// "alive" member with a session "up", all in the founder's network; returns the last statuses (in
    /// `nodes` order, revoked nodes' as `Value::Null`).
    pub fn wait_formed(&mut self, timeout: Duration) -> Vec<Value> {
        let started = Instant::now();
        let live: Vec<String> = self
            .nodes
            .iter()
            .filter(|n| !n.revoked)
            .map(|n| n.name.clone())
            .collect();
        let mut report = Vec::new();
        while started.elapsed() < timeout {
            self.assert_alive();
            report.clear();
            let mut statuses = Vec::new();
            let mut formed = true;
            for node in &self.nodes {
                if node.revoked {
                    statuses.push(Value::Null);
                    continue;
                }
                match node.status() {
                    Ok(status) => {
                        let missing = missing_from(&status, &node.name, &live, &self.network_id);
                        if !missing.is_empty() {
                            formed = false;
                            report.push(format!("{}: {}", node.name, missing.join("; ")));
                        }
                        statuses.push(status);
                    }
                    Err(e) => {
                        formed = false;
                        report.push(e);
                    }
                }
            }
            if formed {
                return statuses;
            }
            thread::sleep(Duration::from_millis(250));
        }
        panic!(
            "the mesh did not form within {timeout:?} (every node a member of every other, alive, session up):\n{}",
            report.join("\n")
        );
    }

    /// Checks each TAP is enslaved into br0 and remembers its name; returns the smallest TAP MTU.
    pub fn check_interfaces(&mut self, statuses: &[Value]) -> Option<u32> {
        let mut min_mtu: Option<u32> = None;
        for (node, status) in self.nodes.iter_mut().zip(statuses) {
            if let Some(tap) = status["interface"]["name"].as_str() {
                node.tap = tap.to_string();
            }
            let out = cmd::check(
                ip_in(&node.ns, &["-o", "link", "show", "dev", &node.tap]),
                cmd::SHORT,
            );
            assert!(
                out.stdout.contains("master br0"),
                "meshd on {} should enslave its TAP {} into br0, but `ip link` shows: {}",
                node.name,
                node.tap,
                out.stdout.trim()
            );
            if let Some(mtu) = status["interface"]["mtu"].as_u64() {
                let mtu = mtu as u32;
                min_mtu = Some(min_mtu.map_or(mtu, |m| m.min(mtu)));
            }
        }
        min_mtu
    }

    /// Stops every daemon with SIGTERM and checks the contract: exit status 0 and the TAP removed. A
    /// revoked node may have exited on its own before; that is reported, not failed.
    pub fn stop_and_check(&mut self) {
        for node in self.nodes.iter_mut().chain(self.outsiders.iter_mut()) {
            if node.child.is_none() {
                continue;
            }
            if node.revoked {
                if let Some(status) = node.exited() {
                    println!(
                        "meshd on {} (revoked) had exited by itself ({status})",
                        node.name
                    );
                    node.child = None;
                    continue;
                }
            }
            let status = node.stop();
            assert!(
                status.is_some_and(|s| s.success()),
                "meshd on {} should exit 0 on SIGTERM, got {status:?}; log tail:\n{}",
                node.name,
                node.log_tail()
            );
            let out = cmd::run(
                ip_in(&node.ns, &["link", "show", "dev", &node.tap]),
                cmd::SHORT,
            );
            assert!(
                !out.success(),
                "meshd on {} should remove its TAP {} on SIGTERM, but it still exists",
                node.name,
                node.tap
            );
        }
        println!("meshd: all daemons exited 0 on SIGTERM and removed their TAP devices");
    }

    pub fn dump_logs(&self) {
        for node in self.nodes.iter().chain(&self.outsiders) {
            eprintln!(
                "----- meshd log {} ({}) -----\n{}",
                node.name,
                node.log.display(),
                node.log_tail()
            );
        }
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        let failed = thread::panicking();
        if failed {
            self.dump_logs();
            for node in self.nodes.iter_mut().chain(self.outsiders.iter_mut()) {
                let state = match node.child.as_mut().map(Child::try_wait) {
                    Some(Ok(Some(status))) => format!("had exited ({status})"),
                    Some(Ok(None)) => "was still running".to_string(),
                    _ => "was not running".to_string(),
                };
                eprintln!("meshd on {} {state} when the test failed", node.name);
            }
        }
        for node in self.nodes.iter_mut().chain(self.outsiders.iter_mut()) {
            node.stop();
        }
        if failed || std::env::var_os("MESHD_IT_KEEP").is_some() {
            eprintln!(
                "meshd: kept configs, state and logs in {}",
                self.dir.display()
            );
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// `meshd init` for the founder inside its host's namespace; checks the contract's outputs (public key
/// first on stdout, network id on stderr, network secret and state directory written) and returns the
/// network id.
fn found_network(founder: &mut Node, host: &Host) -> String {
    let listen = format!("{}:{MESHD_PORT}", host.underlay_ip);
    println!(
        "  {}$ meshd init --config {} --name {} --listen {listen} --bridge br0",
        founder.name,
        founder.config_str(),
        founder.name
    );
    let init = cmd::check(
        meshd_in(
            &founder.ns,
            &[
                "init",
                "--config",
                founder.config_str(),
                "--name",
                &founder.name,
                "--listen",
                &listen,
                "--bridge",
                "br0",
            ],
        ),
        cmd::SHORT,
    );
    let key = cmd::check(
        meshd(&["pubkey", "--config", founder.config_str()]),
        cmd::SHORT,
    )
    .stdout
    .trim()
    .to_string();
    assert_eq!(
        key.len(),
        44,
        "`meshd pubkey` should print a 44-char base64 key, got {key:?}"
    );
    assert_eq!(
        init.stdout.lines().next().map(str::trim),
        Some(key.as_str()),
        "`meshd init` should print the node's public key as its first stdout line"
    );
    founder.public_key = key;
    let config = read_config(&founder.config);
    let network = config.get("network").and_then(toml::Value::as_table);
    let id = network
        .and_then(|n| n.get("id"))
        .and_then(toml::Value::as_str)
        .unwrap_or_else(|| {
            panic!(
                "`meshd init` should write [network] id into {}:\n{}",
                founder.config.display(),
                fs::read_to_string(&founder.config).unwrap_or_default()
            )
        })
        .to_string();
    assert!(
        init.stderr.contains(&id),
        "`meshd init` should name the network id {id} on stderr, said {:?}",
        init.stderr
    );
    let secret = founder.dir().join(format!("{}.network.key", founder.name));
    assert!(
        secret.is_file(),
        "`meshd init` should write the network secret {}",
        secret.display()
    );
    assert!(
        network
            .and_then(|n| n.get("secret_file"))
            .and_then(toml::Value::as_str)
            .is_some(),
        "the founder's config should name its network secret ([network] secret_file)"
    );
    assert!(
        founder.state_dir().is_dir(),
        "`meshd init` should create the state directory {}",
        founder.state_dir().display()
    );
    println!("  network id {id}");
    id
}

/// `meshd join --config CONFIG --name NAME --listen LISTEN --bridge br0 TOKEN` inside `ns`; not checked.
pub fn join(ns: &str, config: &Path, name: &str, listen: &str, token: &str) -> cmd::Output {
    cmd::run(
        meshd_in(
            ns,
            &[
                "join",
                "--config",
                config.to_str().expect("temp paths are UTF-8"),
                "--name",
                name,
                "--listen",
                listen,
                "--bridge",
                "br0",
                token,
            ],
        ),
        JOIN_TIMEOUT,
    )
}

/// What `status` (of node `me`) lacks for a formed mesh: the network id, and for each of `expected`
/// other than `me` an "alive" member entry and an "up" session.
fn missing_from(status: &Value, me: &str, expected: &[String], network: &str) -> Vec<String> {
    let mut missing = Vec::new();
    if status["network"].as_str() != Some(network) {
        missing.push(format!(
            "network {} (expected {network})",
            status["network"]
        ));
    }
    for name in expected.iter().filter(|n| *n != me) {
        let member = member(status, name).map(|m| m["state"].clone());
        if member.as_ref().and_then(Value::as_str) != Some("alive") {
            missing.push(format!(
                "member {name} {}",
                member.map_or("absent".to_string(), |s| format!("state {s}"))
            ));
        }
        let session = peer(status, name).map(|p| p["state"].clone());
        if session.as_ref().and_then(Value::as_str) != Some("up") {
            missing.push(format!(
                "session {name} {}",
                session.map_or("absent".to_string(), |s| format!("state {s}"))
            ));
        }
    }
    missing
}

/// The `members` entry named `name` in a status.
pub fn member<'a>(status: &'a Value, name: &str) -> Option<&'a Value> {
    status["members"]
        .as_array()?
        .iter()
        .find(|m| m["name"] == name)
}

/// The `peers` (session) entry named `name` in a status.
pub fn peer<'a>(status: &'a Value, name: &str) -> Option<&'a Value> {
    status["peers"]
        .as_array()?
        .iter()
        .find(|p| p["name"] == name)
}

/// A counter of a status (0 when absent).
pub fn counter(status: &Value, name: &str) -> u64 {
    status["counters"][name].as_u64().unwrap_or(0)
}

/// `name=state` of every member, for messages.
pub fn member_states(status: &Value) -> String {
    status["members"]
        .as_array()
        .map(|members| {
            members
                .iter()
                .map(|m| {
                    format!(
                        "{}={}",
                        m["name"].as_str().unwrap_or("?"),
                        m["state"].as_str().unwrap_or("?")
                    )
                })
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_else(|| "(no members array)".to_string())
}

/// Seconds since the Unix epoch, for certificate expiry checks.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// SIGTERM, then SIGKILL if the child is still running after `grace`; returns its exit status.
fn terminate(child: &mut Child, grace: Duration) -> Option<ExitStatus> {
    if let Ok(Some(status)) = child.try_wait() {
        return Some(status);
    }
    if let Ok(pid) = i32::try_from(child.id()) {
        // SAFETY: signalling our own, not yet reaped child: its pid cannot have been reused.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        thread::sleep(Duration::from_millis(20));
    }
    eprintln!(
        "meshd pid {} ignored SIGTERM for {grace:?}; killing it",
        child.id()
    );
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// A config file as a TOML table.
pub fn read_config(path: &Path) -> toml::Table {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    text.parse()
        .unwrap_or_else(|e| panic!("{} is not valid TOML: {e}", path.display()))
}

/// Rewrites a config written by `meshd init`/`join` through `edit` (comments are not kept).
pub fn edit_config(path: &Path, edit: impl FnOnce(&mut toml::Table)) {
    let mut config = read_config(path);
    edit(&mut config);
    fs::write(path, config.to_string()).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// The sub-table `key` of a config, created when missing.
pub fn table<'a>(config: &'a mut toml::Table, key: &str) -> &'a mut toml::Table {
    config
        .entry(key)
        .or_insert_with(|| toml::Value::Table(toml::Table::new()))
        .as_table_mut()
        .unwrap_or_else(|| panic!("config key {key} is not a table"))
}

/// Sets the top-level `control_socket`: sockets under /run/meshd would be shared machine-wide.
pub fn set_control_socket(config: &Path, socket: &Path) {
    let socket = socket.to_str().expect("temp paths are UTF-8").to_string();
    edit_config(config, |c| {
        c.insert("control_socket".into(), toml::Value::String(socket));
    });
}

/// `(name, public_key, endpoint)` of every `[[peers]]` entry of a config.
pub fn config_peers(config: &toml::Table) -> Vec<(String, String, Option<String>)> {
    let field =
        |p: &toml::Value, key: &str| p.get(key).and_then(toml::Value::as_str).map(str::to_string);
    config
        .get("peers")
        .and_then(toml::Value::as_array)
        .map(|peers| {
            peers
                .iter()
                .map(|p| {
                    (
                        field(p, "name").unwrap_or_default(),
                        field(p, "public_key").unwrap_or_default(),
                        field(p, "endpoint"),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The IP part of a config's `listen`.
fn founder_listen_ip(config: &Path) -> String {
    let listen = read_config(config)
        .get("listen")
        .and_then(toml::Value::as_str)
        .unwrap_or_default()
        .to_string();
    listen
        .rsplit_once(':')
        .map_or(listen.clone(), |(ip, _)| ip.to_string())
}

/// Totals that may sit beside the drop reasons under `counters`; they grow with any traffic
/// (`rx_messages`: membership payloads received, which gossip sends all the time).
const TOTALS: [&str; 5] = [
    "rx_datagrams",
    "rx_bytes",
    "rx_packets",
    "rx_frames",
    "rx_messages",
];

/// The receive-side drop counters of a status object: numeric `rx_*` entries of `counters` other than
/// totals. The contract calls `counters` "drops by reason"; filtering keeps the check meaningful when
/// traffic statistics are reported there too.
pub fn drop_counters(status: &Value) -> BTreeMap<String, u64> {
    status["counters"]
        .as_object()
        .map(|counters| {
            counters
                .iter()
                .filter(|(key, _)| key.starts_with("rx_") && !TOTALS.contains(&key.as_str()))
                .filter_map(|(key, value)| Some((key.clone(), value.as_u64()?)))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_edits_keep_every_other_key() {
        let dir = std::env::temp_dir().join(format!("meshit-cfg-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let config = dir.join("h2.toml");
        fs::write(
            &config,
            "# comment\nname = \"h2\"\ncontrol_socket = \"/run/meshd/h2.sock\"\nstate_dir = \"h2.state\"\n\n\
             [network]\nid = \"NET\"\n\n[interface]\nbridge = \"br0\"\n\n[[peers]]\nname = \"h1\"\n\
             public_key = \"K\"\nendpoint = \"10.201.0.1:6655\"\n",
        )
        .unwrap();
        set_control_socket(&config, Path::new("/tmp/x/h2.sock"));
        edit_config(&config, |c| {
            table(c, "interface").insert("offload".into(), toml::Value::Boolean(false));
        });
        let c = read_config(&config);
        assert_eq!(c["control_socket"].as_str(), Some("/tmp/x/h2.sock"));
        assert_eq!(c["name"].as_str(), Some("h2"));
        assert_eq!(c["state_dir"].as_str(), Some("h2.state"));
        assert_eq!(c["network"]["id"].as_str(), Some("NET"));
        assert_eq!(c["interface"]["bridge"].as_str(), Some("br0"));
        assert_eq!(c["interface"]["offload"].as_bool(), Some(false));
        assert_eq!(
            config_peers(&c),
            vec![(
                "h1".to_string(),
                "K".to_string(),
                Some("10.201.0.1:6655".to_string())
            )]
        );
        // Top-level keys must stay above the tables, or TOML would file them under the last table.
        let text = fs::read_to_string(&config).unwrap();
        let first_table = text.find('[').unwrap();
        assert!(text.find("control_socket").unwrap() < first_table, "{text}");
        fs::remove_dir_all(&dir).unwrap();
    }
}
