//! Running external tools (`ip`, `ping`, `meshd`) from the harness with a deadline on every call.
//!
//! Invariant: no helper here can block forever. A child that outlives its deadline is killed and the
//! call reports a timeout; output is drained by reader threads so a chatty child cannot fill a pipe
//! and stall.

use std::io::Read;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Default deadline for short configuration commands (`ip link add ...`).
pub const SHORT: Duration = Duration::from_secs(10);

/// What a finished (or killed) command left behind.
#[derive(Debug)]
pub struct Output {
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
    pub timed_out: bool,
}

impl Output {
    pub fn success(&self) -> bool {
        !self.timed_out && self.status.is_some_and(|s| s.success())
    }

    /// One line describing how the command ended, for assertion messages.
    pub fn describe(&self) -> String {
        let end = if self.timed_out {
            "timed out (killed)".to_string()
        } else {
            match self.status {
                Some(s) => s.to_string(),
                None => "no exit status".to_string(),
            }
        };
        format!(
            "{end}; stdout: {:?}; stderr: {:?}",
            self.stdout.trim(),
            self.stderr.trim()
        )
    }
}

/// A child started with captured output that has not been waited for yet.
pub struct Running {
    child: Child,
    stdout: Option<JoinHandle<String>>,
    stderr: Option<JoinHandle<String>>,
}

fn drain<R: Read + Send + 'static>(mut pipe: R) -> JoinHandle<String> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        // A read error only truncates what we show in messages; the exit status still decides.
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// Human-readable form of a command line, used in every failure message.
pub fn render(cmd: &Command) -> String {
    let mut parts = vec![cmd.get_program().to_string_lossy().into_owned()];
    parts.extend(cmd.get_args().map(|a| a.to_string_lossy().into_owned()));
    parts.join(" ")
}

/// Starts `cmd` with stdin closed and stdout/stderr captured.
pub fn spawn(mut cmd: Command) -> Running {
    let label = render(&cmd);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start `{label}`: {e}"));
    let stdout = child.stdout.take().map(drain);
    let stderr = child.stderr.take().map(drain);
    Running {
        child,
        stdout,
        stderr,
    }
}

impl Running {
    /// Waits until the child exits or `deadline` passes (then kills it).
    pub fn wait_until(mut self, deadline: Instant) -> Output {
        let mut timed_out = false;
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(status)) => break Some(status),
                Ok(None) if Instant::now() >= deadline => {
                    timed_out = true;
                    let _ = self.child.kill();
                    break self.child.wait().ok();
                }
                Ok(None) => thread::sleep(Duration::from_millis(5)),
                Err(_) => break None,
            }
        };
        let join = |h: Option<JoinHandle<String>>| {
            h.map(|h| h.join().unwrap_or_default()).unwrap_or_default()
        };
        Output {
            status,
            stdout: join(self.stdout.take()),
            stderr: join(self.stderr.take()),
            timed_out,
        }
    }
}

/// Runs `cmd` to completion within `timeout`.
pub fn run(cmd: Command, timeout: Duration) -> Output {
    spawn(cmd).wait_until(Instant::now() + timeout)
}

/// Runs `cmd` and panics with the command line and its output unless it succeeds.
pub fn check(cmd: Command, timeout: Duration) -> Output {
    let label = render(&cmd);
    let out = run(cmd, timeout);
    assert!(out.success(), "`{label}` failed: {}", out.describe());
    out
}

/// `ip ARGS...` in the namespace of the test process.
pub fn ip(args: &[&str]) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(args);
    cmd
}

/// `ip -n NS ARGS...`: an `ip` command acting on namespace `ns`.
pub fn ip_in(ns: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new("ip");
    cmd.arg("-n").arg(ns).args(args);
    cmd
}

/// Runs `ip -n NS ARGS...` and panics on failure.
pub fn ip_ok(ns: &str, args: &[&str]) {
    check(ip_in(ns, args), SHORT);
}

/// `ip netns exec NS PROGRAM ARGS...`: any program with namespace `ns` as its network.
pub fn exec_in(ns: &str, program: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns, program]).args(args);
    cmd
}

/// Sets a sysctl inside namespace `ns` and panics on failure.
pub fn sysctl_in(ns: &str, key_value: &str) {
    check(exec_in(ns, "sysctl", &["-q", "-w", key_value]), SHORT);
}
