//! podman with its CNI backend and `meshd-cni` as the network's plugin: a container on each of two
//! hosts running meshd, one pinging the other across the mesh; removing a container releases its
//! address. Each host's podman has its own root, runroot, tmpdir, CNI config and plugin directory
//! and runs in that host's network namespace (`nsenter --net`); the image is busybox-static
//! imported from a folder, so nothing is pulled. Where podman or busybox-static is missing, or
//! podman cannot start a container here at all, the test says why and skips (under `CI=true` it
//! fails instead).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use meshd::config::Config;
use meshd::io::addresses::AddressStore;

use crate::netns::cmd;
use crate::netns::env_flag;

use super::cni::MESHD_CNI;
use super::hosts::MeshHosts;

const PODMAN_TIMEOUT: Duration = Duration::from_secs(90);
const BUSYBOX: &str = "/bin/busybox";
const IMAGE: &str = "localhost/meshd-busybox";
const ULIMITS: [&str; 4] = [
    "--ulimit",
    "nofile=1024:1024",
    "--ulimit",
    "nproc=1024:1024",
];

/// Skips with `why` (panics under CI=true, where every test must run).
fn skip(why: &str) {
    assert!(
        !env_flag("CI"),
        "podman test cannot run under CI=true: {why}"
    );
    println!("skipping the podman test: {why}");
}

/// One host's podman: its own storage, state and CNI configuration.
struct Podman {
    ns: String,
    dir: PathBuf,
}

impl Podman {
    fn new(hosts: &MeshHosts, i: usize) -> Podman {
        let dir = hosts.dir(i).join("podman");
        let plugins = dir.join("plugins");
        let net_d = dir.join("net.d");
        std::fs::create_dir_all(&plugins).unwrap();
        std::fs::create_dir_all(&net_d).unwrap();
        std::os::unix::fs::symlink(MESHD_CNI, plugins.join("meshd-cni")).unwrap();
        let conflist = serde_json::json!({
            "cniVersion": "1.0.0",
            "name": "meshnet",
            "plugins": [{"type": "meshd-cni", "meshd_config": hosts.config(i)}],
        });
        std::fs::write(net_d.join("meshnet.conflist"), conflist.to_string()).unwrap();
        let containers_conf = format!(
            "[network]\nnetwork_backend = \"cni\"\ncni_plugin_dirs = [\"{}\"]\n\
             network_config_dir = \"{}\"\n\n[engine]\ncgroup_manager = \"cgroupfs\"\n\
             events_logger = \"file\"\n",
            plugins.display(),
            net_d.display()
        );
        std::fs::write(dir.join("containers.conf"), containers_conf).unwrap();
        Podman {
            ns: hosts.ns(i).to_string(),
            dir,
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new("nsenter");
        command
            .arg(format!("--net=/run/netns/{}", self.ns))
            .arg("podman")
            .arg("--root")
            .arg(self.dir.join("root"))
            .arg("--runroot")
            .arg(self.dir.join("runroot"))
            .arg("--tmpdir")
            .arg(self.dir.join("tmp"))
            .args(["--storage-driver", "vfs"])
            .args(args)
            .env("CONTAINERS_CONF", self.dir.join("containers.conf"));
        command
    }

    fn run(&self, args: &[&str]) -> cmd::Output {
        cmd::run(self.command(args), PODMAN_TIMEOUT)
    }

    fn check(&self, args: &[&str]) -> cmd::Output {
        let out = self.run(args);
        assert!(out.success(), "podman {args:?}: {}", out.describe());
        out
    }

    /// Imports busybox-static from a folder as the image every container runs.
    fn import_busybox(&self) -> cmd::Output {
        let rootfs = self.dir.join("rootfs");
        let bin = rootfs.join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::copy(BUSYBOX, bin.join("busybox")).unwrap();
        let list = cmd::check(
            {
                let mut c = Command::new(BUSYBOX);
                c.arg("--list");
                c
            },
            cmd::SHORT,
        );
        for applet in list.stdout.split_whitespace().filter(|a| *a != "busybox") {
            let _ = std::os::unix::fs::symlink("busybox", bin.join(applet));
        }
        let tar = self.dir.join("rootfs.tar");
        cmd::check(
            {
                let mut c = Command::new("tar");
                c.arg("-C").arg(&rootfs).arg("-cf").arg(&tar).arg(".");
                c
            },
            cmd::SHORT,
        );
        self.run(&[
            "import",
            "--change",
            "ENV PATH=/bin",
            tar.to_str().unwrap(),
            IMAGE,
        ])
    }

    /// Removes every container (and with it its network through DEL).
    fn remove_all(&self) {
        let _ = self.run(&["rm", "--all", "--force", "--time", "0"]);
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        self.remove_all();
    }
}

fn podman_usable() -> Result<(), String> {
    let version = cmd::run(
        {
            let mut c = Command::new("podman");
            c.arg("--version");
            c
        },
        cmd::SHORT,
    );
    if !version.success() {
        return Err(format!(
            "podman is not installed (apt-get install podman containernetworking-plugins): {}",
            version.describe()
        ));
    }
    if !Path::new(BUSYBOX).exists() {
        return Err(format!(
            "{BUSYBOX} is missing (apt-get install busybox-static)"
        ));
    }
    Ok(())
}

fn cni_owners(config: &Path) -> Vec<(std::net::Ipv4Addr, String)> {
    let config = Config::load(config).expect("load config");
    AddressStore::open(&config.state_dir)
        .expect("open store")
        .list()
        .expect("read store")
        .into_iter()
        .filter(|(_, owner)| owner.starts_with("cni:"))
        .collect()
}

#[test]
fn podman_containers_on_two_hosts_reach_each_other() {
    if let Err(why) = podman_usable() {
        return skip(&why);
    }
    let Some(hosts) = MeshHosts::start("pd", "") else {
        return;
    };
    let podmans = [Podman::new(&hosts, 0), Podman::new(&hosts, 1)];
    for podman in &podmans {
        let imported = podman.import_busybox();
        if !imported.success() {
            return skip(&format!(
                "podman cannot import an image here: {}",
                imported.describe()
            ));
        }
    }
    let mut trial = vec!["run", "--rm", "--network", "none"];
    trial.extend_from_slice(&ULIMITS);
    trial.extend_from_slice(&[IMAGE, "true"]);
    let tried = podmans[0].run(&trial);
    if !tried.success() {
        return skip(&format!(
            "podman cannot start a container here: {}",
            tried.describe()
        ));
    }

    let mut server = vec!["run", "-d", "--name", "meshd-c2", "--network", "meshnet"];
    server.extend_from_slice(&ULIMITS);
    server.extend_from_slice(&[IMAGE, "sleep", "300"]);
    podmans[1].check(&server);
    let shown = podmans[1].check(&["exec", "meshd-c2", "ip", "-4", "-o", "addr", "show", "eth0"]);
    let address = shown
        .stdout
        .split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .and_then(|cidr| cidr.split('/').next())
        .unwrap_or_else(|| panic!("no IPv4 address on eth0: {}", shown.stdout))
        .to_string();
    let net1 = hosts.host_network(1);
    assert!(
        net1.range.contains(address.parse().unwrap()),
        "{address} is not in h2's range {}",
        net1.range
    );
    let owners = cni_owners(hosts.config(1));
    assert_eq!(owners.len(), 1, "{owners:?}");
    assert_eq!(owners[0].0.to_string(), address);

    let mut client = vec!["run", "--rm", "--network", "meshnet"];
    client.extend_from_slice(&ULIMITS);
    client.extend_from_slice(&[IMAGE, "ping", "-c", "3", "-W", "2", &address]);
    let ping = podmans[0].run(&client);
    assert!(
        ping.success(),
        "the container on h1 cannot reach {address} on h2: {}",
        ping.describe()
    );
    // `--rm` ran DEL: h1 holds no container address any more.
    assert!(cni_owners(hosts.config(0)).is_empty());

    podmans[1].check(&["rm", "--force", "--time", "0", "meshd-c2"]);
    assert!(
        cni_owners(hosts.config(1)).is_empty(),
        "removing the container did not release its address"
    );
}
