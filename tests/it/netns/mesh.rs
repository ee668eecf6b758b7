//! Configuring and running one meshd daemon per host namespace, the way an operator would: `meshd init`,
//! `meshd pubkey`, `meshd add-peer`, then `meshd --config ...` in the foreground, queried with
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
use std::time::{Duration, Instant};

use serde_json::Value;

use super::cmd::{self, ip_in};
use super::topology::{Topology, MESHD_PORT};

/// Path of the meshd binary cargo built for this test run.
pub const MESHD: &str = env!("CARGO_BIN_EXE_meshd");
const STOP_GRACE: Duration = Duration::from_secs(5);
const LOG_TAIL_LINES: usize = 120;

pub fn meshd(args: &[&str]) -> Command {
    let mut command = Command::new(MESHD);
    command.args(args);
    command
}

pub struct Node {
    /// meshd node name, equal to the host name ("h1").
    pub name: String,
    pub ns: String,
    pub config: PathBuf,
    pub log: PathBuf,
    /// TAP name reported by `status`, for the clean-shutdown check.
    pub tap: String,
    child: Option<Child>,
}

impl Node {
    fn config_str(&self) -> &str {
        self.config.to_str().expect("temp paths are UTF-8")
    }

    /// The last lines of this daemon's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_else(|e| format!("(no log: {e})"));
        let lines: Vec<&str> = text.lines().collect();
        let start = lines.len().saturating_sub(LOG_TAIL_LINES);
        lines[start..].join("\n")
    }
}

pub struct Mesh {
    dir: PathBuf,
    pub nodes: Vec<Node>,
}

impl Mesh {
    /// Writes a config per host, exchanges keys, and starts every daemon (it does not wait for "up").
    pub fn start(topo: &Topology) -> Mesh {
        let dir = std::env::temp_dir().join(format!("{}-meshd", topo.prefix));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        println!(
            "meshd: binary {MESHD}, configs and logs in {}",
            dir.display()
        );
        let mut mesh = Mesh {
            dir,
            nodes: Vec::new(),
        };
        let mut keys = Vec::new();
        for host in &topo.hosts {
            let node = Node {
                name: host.name.clone(),
                ns: host.ns.clone(),
                config: mesh.dir.join(format!("{}.toml", host.name)),
                log: mesh.dir.join(format!("{}.log", host.name)),
                tap: "meshd0".to_string(),
                child: None,
            };
            let listen = format!("{}:{MESHD_PORT}", host.underlay_ip);
            let init = cmd::check(
                meshd(&[
                    "init",
                    "--config",
                    node.config_str(),
                    "--name",
                    &node.name,
                    "--listen",
                    &listen,
                    "--bridge",
                    "br0",
                ]),
                cmd::SHORT,
            );
            let pubkey = cmd::check(
                meshd(&["pubkey", "--config", node.config_str()]),
                cmd::SHORT,
            );
            let key = pubkey.stdout.trim().to_string();
            assert_eq!(
                key.len(),
                44,
                "`meshd pubkey` for {} should print a 44-char base64 key, got {key:?}",
                node.name
            );
            assert!(
                init.stdout.contains(&key),
                "`meshd init` for {} printed {:?}, which does not contain the key `meshd pubkey` prints ({key})",
                node.name,
                init.stdout.trim()
            );
            keys.push((
                host.name.clone(),
                key,
                format!("{}:{MESHD_PORT}", host.underlay_ip),
            ));
            mesh.nodes.push(node);
        }
        for node in &mesh.nodes {
            for (peer, key, endpoint) in keys.iter().filter(|(name, _, _)| *name != node.name) {
                cmd::check(
                    meshd(&[
                        "add-peer",
                        "--config",
                        node.config_str(),
                        "--name",
                        peer,
                        "--public-key",
                        key,
                        "--endpoint",
                        endpoint,
                    ]),
                    cmd::SHORT,
                );
            }
            let socket = mesh.dir.join(format!("{}.sock", node.name));
            set_control_socket(&node.config, &socket);
            // A mixed fleet: h3 keeps a plain TAP while the others use offloads (the default), so
            // one run covers both TAP paths and the traffic between them.
            if node.name == "h3" {
                set_offload(&node.config, false);
            }
        }
        for index in 0..mesh.nodes.len() {
            mesh.spawn_daemon(index);
        }
        println!(
            "meshd: started {} daemons ({})",
            mesh.nodes.len(),
            mesh.nodes
                .iter()
                .map(|n| format!("{} pid {}", n.name, n.child.as_ref().map_or(0, Child::id)))
                .collect::<Vec<_>>()
                .join(", ")
        );
        mesh
    }

    fn spawn_daemon(&mut self, index: usize) {
        let node = &mut self.nodes[index];
        let log = fs::File::create(&node.log)
            .unwrap_or_else(|e| panic!("create {}: {e}", node.log.display()));
        let log_err = log.try_clone().expect("dup log file descriptor");
        // `ip netns exec` execs the program in place, so the child's pid is meshd's own.
        let mut command = cmd::exec_in(&node.ns, MESHD, &["--config", node.config_str()]);
        if std::env::var_os("RUST_LOG").is_none() {
            command.env("RUST_LOG", "info");
        }
        command
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err));
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start meshd for {}: {e}", node.name));
        node.child = Some(child);
    }

    /// `meshd status --json` of node `index`, parsed.
    pub fn status(&self, index: usize) -> Result<Value, String> {
        let node = &self.nodes[index];
        let out = cmd::run(
            meshd(&["status", "--config", node.config_str(), "--json"]),
            Duration::from_secs(5),
        );
        if !out.success() {
            return Err(format!(
                "`meshd status` for {}: {}",
                node.name,
                out.describe()
            ));
        }
        serde_json::from_str(&out.stdout).map_err(|e| {
            format!(
                "`meshd status --json` for {} printed invalid JSON ({e}): {:?}",
                node.name, out.stdout
            )
        })
    }

    /// Panics (with the daemon's log) if any daemon has exited.
    pub fn assert_alive(&mut self) {
        for node in &mut self.nodes {
            let exited = node
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if let Some(status) = exited {
                panic!(
                    "meshd on {} exited unexpectedly ({status}); log tail:\n{}",
                    node.name,
                    node.log_tail()
                );
            }
        }
    }

    /// Polls `status --json` until every node reports every other node "up"; returns the last statuses.
    pub fn wait_all_up(&mut self, timeout: Duration) -> Vec<Value> {
        let started = Instant::now();
        let expected_peers = self.nodes.len() - 1;
        let mut last: Vec<Result<Value, String>> = Vec::new();
        while started.elapsed() < timeout {
            self.assert_alive();
            last = (0..self.nodes.len()).map(|i| self.status(i)).collect();
            let all_up = last.iter().all(|s| match s {
                Ok(v) => {
                    let peers = v["peers"].as_array();
                    peers.is_some_and(|p| {
                        p.len() == expected_peers && p.iter().all(|peer| peer["state"] == "up")
                    })
                }
                Err(_) => false,
            });
            if all_up {
                println!(
                    "meshd: all {} nodes see all peers up after {:.1?}",
                    self.nodes.len(),
                    started.elapsed()
                );
                return last
                    .into_iter()
                    .map(|s| s.expect("checked above"))
                    .collect();
            }
            thread::sleep(Duration::from_millis(250));
        }
        let report: Vec<String> = last
            .iter()
            .zip(&self.nodes)
            .map(|(s, n)| match s {
                Ok(v) => format!("{}: peers {}", n.name, v["peers"]),
                Err(e) => format!("{}: {e}", n.name),
            })
            .collect();
        panic!(
            "meshd peers not all \"up\" within {timeout:?}:\n{}",
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

    /// Stops every daemon with SIGTERM and checks the contract: exit status 0 and the TAP removed.
    pub fn stop_and_check(&mut self) {
        for node in &mut self.nodes {
            let Some(mut child) = node.child.take() else {
                continue;
            };
            let status = terminate(&mut child, STOP_GRACE);
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
        for node in &self.nodes {
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
            for node in &mut self.nodes {
                let state = match node.child.as_mut().map(Child::try_wait) {
                    Some(Ok(Some(status))) => format!("had exited ({status})"),
                    Some(Ok(None)) => "was still running".to_string(),
                    _ => "was not running".to_string(),
                };
                eprintln!("meshd on {} {state} when the test failed", node.name);
            }
        }
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                terminate(&mut child, STOP_GRACE);
            }
        }
        if failed || std::env::var_os("MESHD_IT_KEEP").is_some() {
            eprintln!("meshd: kept configs and logs in {}", self.dir.display());
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
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

/// Sets the top-level `control_socket` key in a config written by `meshd init`: replaces an existing
/// top-level line, or inserts one before the first table header.
fn set_control_socket(config: &Path, socket: &Path) {
    let text =
        fs::read_to_string(config).unwrap_or_else(|e| panic!("read {}: {e}", config.display()));
    let line = format!(
        "control_socket = {}",
        toml_string(socket.to_str().expect("temp paths are UTF-8"))
    );
    let mut out: Vec<String> = Vec::new();
    let mut in_top_level = true;
    let mut placed = false;
    for existing in text.lines() {
        let trimmed = existing.trim_start();
        if in_top_level && trimmed.starts_with('[') {
            in_top_level = false;
            if !placed {
                out.push(line.clone());
                placed = true;
            }
        }
        let is_key = trimmed
            .strip_prefix("control_socket")
            .is_some_and(|rest| rest.trim_start().starts_with('='));
        if in_top_level && is_key {
            if !placed {
                out.push(line.clone());
                placed = true;
            }
            continue;
        }
        out.push(existing.to_string());
    }
    if !placed {
        out.push(line);
    }
    let mut new_text = out.join("\n");
    new_text.push('\n');
    fs::write(config, new_text).unwrap_or_else(|e| panic!("write {}: {e}", config.display()));
}

/// Sets `[interface] offload` in a config written by `meshd init`.
fn set_offload(config: &Path, on: bool) {
    let text = std::fs::read_to_string(config).expect("config readable");
    let text = text.replacen(
        "[interface]\n",
        &format!("[interface]\noffload = {on}\n"),
        1,
    );
    std::fs::write(config, text).expect("config writable");
}

fn toml_string(value: &str) -> String {
    let mut quoted = String::from("\"");
    for ch in value.chars() {
        match ch {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}

/// Totals that may sit beside the drop reasons under `counters`; they grow with any traffic.
const TOTALS: [&str; 4] = ["rx_datagrams", "rx_bytes", "rx_packets", "rx_frames"];

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
    fn control_socket_goes_before_the_first_table_or_replaces_the_default() {
        let dir = std::env::temp_dir().join(format!("meshit-cfg-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let config = dir.join("h1.toml");
        fs::write(
            &config,
            "name = \"h1\"\ncontrol_socket = \"/run/meshd/h1.sock\"\n\n[interface]\nbridge = \"br0\"\n\n[[peers]]\nname = \"h2\"\n",
        )
        .unwrap();
        set_control_socket(&config, Path::new("/tmp/x/h1.sock"));
        let text = fs::read_to_string(&config).unwrap();
        assert_eq!(
            text,
            "name = \"h1\"\ncontrol_socket = \"/tmp/x/h1.sock\"\n\n[interface]\nbridge = \"br0\"\n\n[[peers]]\nname = \"h2\"\n"
        );
        fs::write(&config, "name = \"h1\"\n[interface]\nbridge = \"br0\"\n").unwrap();
        set_control_socket(&config, Path::new("/tmp/x/h1.sock"));
        let text = fs::read_to_string(&config).unwrap();
        assert_eq!(
            text,
            "name = \"h1\"\ncontrol_socket = \"/tmp/x/h1.sock\"\n[interface]\nbridge = \"br0\"\n"
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
