//! Running Rust code with another network namespace, without external tools.
//!
//! `setns(CLONE_NEWNET)` switches only the calling thread, so every job gets a fresh thread that enters
//! the namespace first and then opens its sockets there; sockets keep the namespace they were created in.
//! Invariant: the test's main thread never changes namespace, and every join has a deadline.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

/// Path of the bind mount `ip netns add NAME` creates for a named namespace.
fn netns_path(ns: &str) -> String {
    format!("/var/run/netns/{ns}")
}

/// Moves the calling thread into the named network namespace.
pub fn enter(ns: &str) -> Result<(), String> {
    let path = netns_path(ns);
    let file = File::open(&path).map_err(|e| format!("open {path}: {e}"))?;
    // SAFETY: plain syscall on a descriptor we own for the duration of the call.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        return Err(format!(
            "setns({path}, CLONE_NEWNET): {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// A job running on its own thread inside a network namespace.
pub struct NsJob<T> {
    label: String,
    result: mpsc::Receiver<Result<T, String>>,
}

/// Runs `job` on a new thread that has entered namespace `ns`.
pub fn spawn<T, F>(ns: &str, label: &str, job: F) -> NsJob<T>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, String> + Send + 'static,
{
    let (tx, rx) = mpsc::channel();
    let ns = ns.to_string();
    let thread_label = label.to_string();
    thread::Builder::new()
        .name(label.to_string())
        .spawn(move || {
            let outcome = enter(&ns).and_then(|()| job());
            // The receiver may have given up after its deadline; nobody is left to tell.
            let _ = tx.send(outcome);
        })
        .unwrap_or_else(|e| panic!("cannot spawn thread {thread_label}: {e}"));
    NsJob {
        label: label.to_string(),
        result: rx,
    }
}

impl<T> NsJob<T> {
    /// The job's result, or an error if it failed, panicked or is still running after `timeout`.
    pub fn join(self, timeout: Duration) -> Result<T, String> {
        match self.result.recv_timeout(timeout) {
            Ok(outcome) => outcome.map_err(|e| format!("{}: {e}", self.label)),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                Err(format!("{}: still running after {timeout:?}", self.label))
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(format!("{}: panicked", self.label)),
        }
    }
}
