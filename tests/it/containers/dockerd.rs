//! A Docker "host" inside a test host's network namespace: its own dockerd (data root, exec root,
//! API socket, containerd namespace) in a mount namespace of its own, where the test host's plugin
//! folder is bound onto /run/docker/plugins, so each dockerd finds exactly its own host's meshd
//! plugin socket.
//!
//! Invariants: `ip netns exec` is not used for dockerd (it remounts /sys and dockerd then fails on
//! the devices cgroup); dockerd is entered into the namespaces with `nsenter` instead. On drop the
//! containers are removed, dockerd is stopped with SIGTERM and waited for (it unmounts what it
//! mounted), killed only if it outlives [`STOP_GRACE`], and the mount namespace is released.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::netns::cmd::{self, Output};

/// The Docker client that matches Debian's dockerd (a newer one may come first in PATH).
pub const DOCKER: &str = "/usr/bin/docker";
/// Deadline of one `docker` command (a `docker run` included).
pub const DOCKER_TIMEOUT: Duration = Duration::from_secs(90);
const START: Duration = Duration::from_secs(60);
const STOP_GRACE: Duration = Duration::from_secs(30);

pub struct Dockerd {
    label: String,
    dir: PathBuf,
    socket: PathBuf,
    child: Option<Child>,
    mounted: bool,
}

fn tool_missing() -> Option<String> {
    let found = |p: &str| {
        Path::new(p).exists()
            || std::env::var_os("PATH")
                .is_some_and(|path| std::env::split_paths(&path).any(|d| d.join(p).exists()))
    };
    [
        "dockerd",
        DOCKER,
        "containerd",
        "runc",
        "busybox",
        "nsenter",
        "unshare",
        "setsid",
    ]
    .into_iter()
    .find(|t| !found(t))
    .map(|t| format!("`{t}` is not installed (apt-get install docker.io busybox-static)"))
}

fn run(program: &str, args: &[&str]) -> Result<Output, String> {
    let mut command = Command::new(program);
    command.args(args);
    let label = cmd::render(&command);
    let out = cmd::run(command, cmd::SHORT);
    if out.success() {
        Ok(out)
    } else {
        Err(format!("`{label}` failed: {}", out.describe()))
    }
}

impl Dockerd {
    /// Starts dockerd `label` in network namespace `netns`, its files under `dir`, with `plugins`
    /// as its /run/docker/plugins. `Err` says why dockerd could not run here.
    pub fn start(label: &str, netns: &str, dir: &Path, plugins: &Path) -> Result<Dockerd, String> {
        if let Some(missing) = tool_missing() {
            return Err(missing);
        }
        let mnt = dir.join("mnt");
        for sub in [&mnt, &dir.join("data"), &dir.join("exec")] {
            fs::create_dir_all(sub).map_err(|e| format!("{}: {e}", sub.display()))?;
        }
        fs::create_dir_all(plugins).map_err(|e| format!("{}: {e}", plugins.display()))?;
        let mut dockerd = Dockerd {
            label: label.to_string(),
            dir: dir.to_path_buf(),
            socket: dir.join("docker.sock"),
            child: None,
            mounted: false,
        };
        // A persistent mount namespace needs its file on a private mount.
        let mnt_str = mnt.to_str().ok_or("non-UTF-8 path")?;
        run("mount", &["--bind", mnt_str, mnt_str])?;
        dockerd.mounted = true;
        run("mount", &["--make-private", mnt_str])?;
        let ns_file = mnt.join("ns");
        fs::write(&ns_file, b"").map_err(|e| format!("{}: {e}", ns_file.display()))?;
        let ns_arg = format!("--mount={}", ns_file.display());
        let bind = format!(
            "mkdir -p /run/docker/plugins && mount --bind '{}' /run/docker/plugins",
            plugins.display()
        );
        run(
            "unshare",
            &[&ns_arg, "--propagation", "private", "sh", "-c", &bind],
        )?;

        let log = fs::File::create(dir.join("dockerd.log")).map_err(|e| e.to_string())?;
        let log_err = log.try_clone().map_err(|e| e.to_string())?;
        let d = |p: &str| dir.join(p).to_string_lossy().into_owned();
        let containerd_ns = format!("meshd-it-{label}-{}", std::process::id());
        let child = Command::new("setsid")
            .args([
                "nsenter",
                &format!("--net=/run/netns/{netns}"),
                &ns_arg,
                "dockerd",
                "--data-root",
                &d("data"),
                "--exec-root",
                &d("exec"),
                "-H",
                &format!("unix://{}", dockerd.socket.display()),
                "--pidfile",
                &d("dockerd.pid"),
                "--iptables=false",
                "--ip-masq=false",
                "--bridge=none",
                "--shutdown-timeout",
                "2",
                "--containerd-namespace",
                &containerd_ns,
                "--containerd-plugins-namespace",
                &format!("{containerd_ns}-plugins"),
            ])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(|e| format!("starting dockerd: {e}"))?;
        dockerd.child = Some(child);
        dockerd.wait_ready()?;
        Ok(dockerd)
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let started = Instant::now();
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                return Err(format!(
                    "dockerd {} exited ({status}):\n{}",
                    self.label,
                    self.log_tail()
                ));
            }
            if cmd::run(self.docker(&["info"]), cmd::SHORT).success() {
                return Ok(());
            }
            if started.elapsed() > START {
                return Err(format!(
                    "dockerd {} did not answer within {START:?}:\n{}",
                    self.label,
                    self.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// The last lines of dockerd's log.
    pub fn log_tail(&self) -> String {
        let text = fs::read_to_string(self.dir.join("dockerd.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// `docker <args>` against this dockerd.
    pub fn docker(&self, args: &[&str]) -> Command {
        let mut command = Command::new(DOCKER);
        command
            .arg("-H")
            .arg(format!("unix://{}", self.socket.display()))
            .args(args);
        command
    }

    /// Runs `docker <args>`; its output, whether it succeeded or not.
    pub fn try_run(&self, args: &[&str]) -> Output {
        cmd::run(self.docker(args), DOCKER_TIMEOUT)
    }

    /// Runs `docker <args>`, which must succeed; its trimmed stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.try_run(args);
        assert!(
            out.success(),
            "docker {args:?} on {} failed: {}\ndockerd log:\n{}",
            self.label,
            out.describe(),
            self.log_tail()
        );
        out.stdout.trim().to_string()
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let ids = cmd::run(self.docker(&["ps", "-aq"]), cmd::SHORT).stdout;
            let ids: Vec<&str> = ids.split_whitespace().collect();
            if !ids.is_empty() {
                let mut args = vec!["rm", "-f"];
                args.extend(ids);
                let _ = cmd::run(self.docker(&args), DOCKER_TIMEOUT);
            }
            // SAFETY: signalling our own child by its pid.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
            let deadline = Instant::now() + STOP_GRACE;
            while child.try_wait().ok().flatten().is_none() {
                if Instant::now() > deadline {
                    eprintln!("dockerd {} ignored SIGTERM; killing it", self.label);
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        if self.mounted {
            let mnt = self.dir.join("mnt");
            let _ = Command::new("umount").arg(mnt.join("ns")).status();
            let _ = Command::new("umount").arg(&mnt).status();
        }
    }
}

/// Makes the `local/busybox` image tarball under `dir` from busybox-static: `bin/busybox`, a link
/// per applet, and an empty `/tmp`. Returns the tarball's path.
pub fn busybox_tarball(dir: &Path) -> PathBuf {
    let root = dir.join("rootfs");
    let _ = fs::remove_dir_all(&root);
    fs::create_dir_all(root.join("bin")).unwrap();
    fs::create_dir_all(root.join("tmp")).unwrap();
    let busybox = which("busybox").expect("busybox is installed");
    fs::copy(&busybox, root.join("bin/busybox")).unwrap();
    let list = cmd::check(
        {
            let mut c = Command::new(root.join("bin/busybox"));
            c.arg("--list");
            c
        },
        cmd::SHORT,
    );
    for applet in list.stdout.split_whitespace().filter(|a| *a != "busybox") {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    let tarball = dir.join("busybox.tar");
    let mut tar = Command::new("tar");
    tar.arg("-C").arg(&root).arg("-cf").arg(&tarball).arg(".");
    cmd::check(tar, cmd::SHORT);
    tarball
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(program))
        .find(|p| p.exists())
}
