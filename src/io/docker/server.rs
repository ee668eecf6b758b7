//! The Docker plugin's socket: HTTP/1.1 (hyper) on a Unix socket dockerd finds in
//! /run/docker/plugins, and [`SystemHost`], the plugin's hands on the real machine.
//!
//! Owns the socket file: bound private (mode 0600, root only, as dockerd runs as root) in its
//! directory, which is created if missing; a stale file is replaced, a live one refused
//! (src/io/control.rs, `bind_socket`); the file is removed when the server is dropped, i.e. when
//! the daemon stops. Invariants: a body is read only up to [`MAX_BODY`] and within
//! [`READ_TIMEOUT`], so a client cannot make the daemon buffer or wait without bound; address
//! store calls (file locks, fsync) run on tokio's blocking pool, never on the thread that also
//! runs worker 0's data path.

use std::convert::Infallible;
use std::io;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::UnixListener;

use super::{Plugin, PluginHost, Reply};
use crate::core::ranges::Range4;
use crate::io::addresses::AddressStore;
use crate::io::netlink::Netlink;
use crate::io::veth::{self, VethNames};
use crate::wire::docker::{CONTENT_TYPE, MAX_BODY};

/// Longest a client may take to send a request's head or its body.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The bound plugin socket.
pub struct PluginServer {
    listener: UnixListener,
    path: PathBuf,
}

impl PluginServer {
    /// Binds the socket at `path` (mode 0600), replacing a stale file.
    pub fn bind(path: &Path) -> io::Result<PluginServer> {
        let listener = super::super::control::bind_socket(path, None)?;
        Ok(PluginServer {
            listener,
            path: path.to_path_buf(),
        })
    }

    /// Serves dockerd until the task is dropped.
    pub async fn serve<H: PluginHost>(self, plugin: Arc<Plugin<H>>) {
        loop {
            let Ok((stream, _)) = self.listener.accept().await else {
                continue;
            };
            let plugin = plugin.clone();
            tokio::spawn(async move {
                let service = service_fn(move |request| {
                    let plugin = plugin.clone();
                    async move { Ok::<_, Infallible>(answer(&plugin, request).await) }
                });
                let served = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(READ_TIMEOUT)
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
                if let Err(e) = served {
                    tracing::debug!(error = %e, "docker plugin connection failed");
                }
            });
        }
    }
}

impl Drop for PluginServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Reads one request's body (bounded in size and time) and has the plugin answer it.
async fn answer<H: PluginHost>(
    plugin: &Plugin<H>,
    request: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let path = request.uri().path().to_string();
    let body = Limited::new(request.into_body(), MAX_BODY).collect();
    let reply = match tokio::time::timeout(READ_TIMEOUT, body).await {
        Ok(Ok(body)) => plugin.handle(&path, &body.to_bytes()).await,
        Ok(Err(e)) => plugin.refuse_unread(&path, format!("reading the request body: {e}")),
        Err(_) => plugin.refuse_unread(&path, "the request body did not arrive in time".into()),
    };
    respond(reply)
}

fn respond(reply: Reply) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(reply.body)));
    *response.status_mut() = hyper::StatusCode::from_u16(reply.status)
        .unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(CONTENT_TYPE),
    );
    response
}

/// The plugin's hands on the real machine: the state directory's address store and netlink.
pub struct SystemHost {
    store: AddressStore,
    netlink: Netlink,
}

impl SystemHost {
    /// Opens the address store of `state_dir` and a netlink connection on the current runtime.
    pub fn open(state_dir: &Path) -> io::Result<SystemHost> {
        Ok(SystemHost {
            store: AddressStore::open(state_dir)?,
            netlink: Netlink::connect()?,
        })
    }
}

/// Runs an address-store call on the blocking pool (it locks and fsyncs files).
async fn blocking<T: Send + 'static>(
    job: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    tokio::task::spawn_blocking(job)
        .await
        .map_err(|e| format!("address store task failed: {e}"))?
}

impl PluginHost for SystemHost {
    async fn allocate(
        &self,
        range: Range4,
        owner: String,
        wanted: Option<Ipv4Addr>,
    ) -> Result<Ipv4Addr, String> {
        let store = self.store.clone();
        blocking(move || {
            store
                .allocate(range, &owner, wanted)
                .map_err(|e| e.to_string())
        })
        .await
    }

    async fn release(&self, addr: Ipv4Addr) -> Result<bool, String> {
        let store = self.store.clone();
        blocking(move || store.release_address(addr).map_err(|e| e.to_string())).await
    }

    async fn create_veth(
        &self,
        names: VethNames,
        bridge: String,
        mtu: u16,
        mac: [u8; 6],
    ) -> io::Result<()> {
        veth::create_in_bridge(&self.netlink, &names, &bridge, mtu, Some(mac)).await
    }

    async fn delete_veth(&self, host_name: String) -> io::Result<bool> {
        veth::delete(&self.netlink, &host_name).await
    }

    fn random(&self) -> u64 {
        // The OS generator does not fail on Linux once booted; should it, the clock still gives
        // owners that differ from each other, which is all they need.
        getrandom::u64().unwrap_or_else(|_| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64)
        })
    }
}
