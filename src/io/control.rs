//! The Unix control socket: `meshd status` asks the daemon for its state through it.
//!
//! Protocol: the client writes one request line (`status`), the daemon answers one JSON line and
//! closes. The socket file is mode 0600 (root only) or 0660 owned by `control_group`, so only the
//! operator can read peer keys, endpoints and the switch table.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};

use crate::status::NodeStatus;

/// A request from a control client to the worker that owns the node.
pub enum ControlRequest {
    Status(oneshot::Sender<NodeStatus>),
}

/// Longest a client may take to send its request line.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_REQUEST_LINE: usize = 256;

pub struct ControlServer {
    listener: UnixListener,
    path: PathBuf,
}

fn group_id(name: &str) -> io::Result<libc::gid_t> {
    let cname = std::ffi::CString::new(name)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "group name has a NUL byte"))?;
    // SAFETY: getgrnam returns a pointer to static storage or NULL; we read one field at once.
    let entry = unsafe { libc::getgrnam(cname.as_ptr()) };
    if entry.is_null() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("control_group `{name}` does not exist"),
        ));
    }
    // SAFETY: non-null pointer from getgrnam, valid until the next getgr* call on this thread.
    Ok(unsafe { (*entry).gr_gid })
}

/// Binds a socket at `path` that nobody but its owner (and `group`, if given) can connect to at
/// any moment: it is bound inside a fresh 0700 directory next to `path`, given its group and mode
/// there, and only then renamed into place. (Binding at `path` and changing the mode afterwards
/// left a window in which anyone could connect.)
fn bind_private(path: &Path, group: Option<&str>) -> io::Result<UnixListener> {
    use std::os::unix::fs::DirBuilderExt;
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let staging = parent.join(format!(".meshd-bind.{}", std::process::id()));
    let bound = staging.join("s");
    // A leftover of a daemon with our pid that died mid-bind: remove it (never follows links).
    let _ = std::fs::remove_file(&bound);
    let _ = std::fs::remove_dir(&staging);
    std::fs::DirBuilder::new().mode(0o700).create(&staging)?;
    let result = (|| {
        let listener = UnixListener::bind(&bound)?;
        let mode = match group {
            Some(g) => {
                let gid = group_id(g)?;
                std::os::unix::fs::chown(&bound, None, Some(gid))?;
                0o660
            }
            None => 0o600,
        };
        std::fs::set_permissions(&bound, std::fs::Permissions::from_mode(mode))?;
        std::fs::rename(&bound, path)?;
        Ok(listener)
    })();
    let _ = std::fs::remove_file(&bound);
    let _ = std::fs::remove_dir(&staging);
    result
}

/// Binds a private socket at `path` (see [`bind_private`]), creating its directory if missing and
/// replacing a stale file left by a daemon that died; a socket something still answers on is
/// refused, never stolen. The Docker plugin socket is bound the same way.
pub fn bind_socket(path: &Path, group: Option<&str>) -> io::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!(
                    "{} is in use: another meshd with this config is running",
                    path.display()
                ),
            ));
        }
        std::fs::remove_file(path)?;
    }
    bind_private(path, group)
}

impl ControlServer {
    /// Binds the socket, replacing a stale file left by a daemon that died.
    pub fn bind(path: &Path, group: Option<&str>) -> io::Result<ControlServer> {
        let listener = bind_socket(path, group)?;
        Ok(ControlServer {
            listener,
            path: path.to_path_buf(),
        })
    }

    /// Serves clients until the task is dropped.
    pub async fn serve(self, requests: mpsc::Sender<ControlRequest>) {
        loop {
            let Ok((stream, _)) = self.listener.accept().await else {
                continue;
            };
            let requests = requests.clone();
            tokio::spawn(async move {
                if let Err(e) = handle_client(stream, requests).await {
                    tracing::debug!(error = %e, "control client failed");
                }
            });
        }
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

async fn handle_client(
    stream: UnixStream,
    requests: mpsc::Sender<ControlRequest>,
) -> io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = BufReader::new(read).take(MAX_REQUEST_LINE as u64);
    tokio::time::timeout(REQUEST_TIMEOUT, reader.read_line(&mut line))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "request timed out"))??;
    match line.trim() {
        "status" => {
            let (tx, rx) = oneshot::channel();
            requests
                .send(ControlRequest::Status(tx))
                .await
                .map_err(|_| io::Error::other("node stopped"))?;
            let status = rx.await.map_err(|_| io::Error::other("node stopped"))?;
            let mut json = serde_json::to_vec(&status).map_err(io::Error::other)?;
            json.push(b'\n');
            write.write_all(&json).await?;
        }
        other => {
            let msg = format!("{{\"error\":\"unknown request {:?}\"}}\n", other);
            write.write_all(msg.as_bytes()).await?;
        }
    }
    write.shutdown().await
}

/// Asks the daemon behind `path` for its status (client side of `meshd status`).
pub fn query_status(path: &Path) -> io::Result<NodeStatus> {
    use std::io::{BufRead, Write};
    let mut stream = std::os::unix::net::UnixStream::connect(path).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "cannot reach the meshd daemon at {}: {e} (is it running with this config?)",
                path.display()
            ),
        )
    })?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.write_all(b"status\n")?;
    let mut line = String::new();
    io::BufReader::new(stream).read_line(&mut line)?;
    serde_json::from_str(&line).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unexpected answer from the daemon: {e}"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn socket_is_private_answers_status_and_replaces_stale_files() {
        let dir = std::env::temp_dir().join(format!("meshd-ctl-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("sub/h1.sock");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let server = ControlServer::bind(&path, None).unwrap();
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
            assert!(
                ControlServer::bind(&path, None).is_err(),
                "a live socket is not stolen"
            );
            let (tx, mut rx) = mpsc::channel(4);
            let serve = tokio::spawn(server.serve(tx));
            let answer = tokio::spawn(async move {
                if let Some(ControlRequest::Status(reply)) = rx.recv().await {
                    let _ = reply.send(NodeStatus::sample());
                }
            });
            let p = path.clone();
            let status = tokio::task::spawn_blocking(move || query_status(&p))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(status.name, "h1");
            assert_eq!(status.counters["rx_replayed"], 4);
            answer.await.unwrap();
            serve.abort();
            let _ = serve.await;
        });
        // The server was dropped with its task: the file is gone.
        assert!(!path.exists());
        // A stale file (no listener) is replaced.
        std::fs::write(&path, b"").unwrap();
        rt.block_on(async { ControlServer::bind(&path, None).unwrap() });
        let err = query_status(&dir.join("missing.sock"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("is it running"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
