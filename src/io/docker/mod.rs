//! The Docker network driver and IPAM driver meshd serves on its plugin socket, so
//! `docker network create -d meshd --ipam-driver meshd` puts containers of every host on the mesh.
//!
//! Owns [`Plugin`]: it takes one request (URL path and body), has src/wire/docker.rs parse it,
//! runs the handler (src/io/docker/network.rs for the network driver, src/io/docker/ipam.rs for
//! IPAM) and returns the HTTP status and JSON body to send; src/io/docker/server.rs serves it over
//! HTTP on the Unix socket and implements [`PluginHost`] on the real system. Everything the
//! handlers do to the host (address store, veth pairs, randomness) goes through [`PluginHost`], so
//! the same dispatch runs in tests and under the fuzzer without touching the machine.
//!
//! Invariants: addresses come only from this host's range in its [`HostNetwork`] (as the
//! certificate names it) and are recorded in the shared address store before they are answered,
//! so no restart of meshd or dockerd hands out an address still in use; the gateway is the
//! host's, never stored; without a host network every request that needs one is refused with
//! [`NO_RANGE`]. Every request is counted, and every refusal too ([`PluginCounters`]); a refused
//! request changes nothing. The endpoints table is bounded ([`MAX_ENDPOINTS`]).

mod ipam;
mod network;
pub mod server;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio::sync::watch;

use crate::core::ranges::{HostNetwork, Range4};
use crate::io::veth::VethNames;
use crate::wire::docker::{parse_request, DockerId, ErrorResponse, PluginRequest};
use crate::wire::MacAddr;

/// The refusal of every request that needs this host's range while it has none.
pub const NO_RANGE: &str = "meshd has no address range yet: this host's certificate names no \
                            container range (is the network's container subnet set, and was this \
                            host admitted with one? `meshd status` shows host_network)";

/// Most endpoints the plugin keeps between `CreateEndpoint` and `DeleteEndpoint`; far more than
/// one host runs containers, and a bound on what a confused client can make it hold.
pub const MAX_ENDPOINTS: usize = 16_384;

/// Prefix of the host-end veth names of Docker endpoints (`VethNames::for_owner`).
pub const VETH_PREFIX: &str = "md";

/// First two bytes of every container MAC the driver picks: locally administered, unicast, and
/// unlike Docker's own 02:42, so the two are told apart in a switch table.
pub const MAC_PREFIX: [u8; 2] = [0x02, 0x6d];

/// The MAC of the container with `addr`: [`MAC_PREFIX`] and the four address bytes. Addresses of
/// the mesh are unique across hosts (disjoint ranges), so these MACs are too.
pub fn mac_for(addr: Ipv4Addr) -> MacAddr {
    let [a, b, c, d] = addr.octets();
    MacAddr([MAC_PREFIX[0], MAC_PREFIX[1], a, b, c, d])
}

/// The veth pair of one Docker endpoint, named from its ID alone so `Leave` and `DeleteEndpoint`
/// find it without a table (and after a restart).
pub fn veth_names(endpoint: &DockerId) -> VethNames {
    VethNames::for_owner(VETH_PREFIX, &format!("docker:{endpoint}"))
}

/// What the handlers need from the machine.
pub trait PluginHost: Send + Sync + 'static {
    /// Records an address of `range` for `owner` in the address store (`wanted` if given).
    fn allocate(
        &self,
        range: Range4,
        owner: String,
        wanted: Option<Ipv4Addr>,
    ) -> impl Future<Output = Result<Ipv4Addr, String>> + Send;
    /// Removes `addr` from the address store; `false` if it was not there.
    fn release(&self, addr: Ipv4Addr) -> impl Future<Output = Result<bool, String>> + Send;
    /// Creates the veth pair `names`, host end in `bridge`, `mac` on the peer.
    fn create_veth(
        &self,
        names: VethNames,
        bridge: String,
        mtu: u16,
        mac: [u8; 6],
    ) -> impl Future<Output = io::Result<()>> + Send;
    /// Deletes the veth pair by its host end; `false` if it was gone.
    fn delete_veth(&self, host_name: String) -> impl Future<Output = io::Result<bool>> + Send;
    /// 64 random bits (address-store owners, IPv6 interface identifiers).
    fn random(&self) -> u64;
}

/// Requests and refusals, reported in `meshd status` and the metrics.
#[derive(Debug, Default)]
pub struct PluginCounters {
    requests: AtomicU64,
    /// Requests that did not parse (unknown method, bad JSON or field).
    malformed: AtomicU64,
    /// Parsed requests the handler refused or failed.
    errors: AtomicU64,
}

impl PluginCounters {
    /// Every counter with the name status reports it under.
    pub fn report(&self) -> [(&'static str, u64); 3] {
        [
            ("docker_plugin_requests", &self.requests),
            ("docker_plugin_malformed", &self.malformed),
            ("docker_plugin_errors", &self.errors),
        ]
        .map(|(name, counter)| (name, counter.load(Relaxed)))
    }
}

/// A refusal; the message is what `docker` prints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginError(pub String);

impl From<String> for PluginError {
    fn from(message: String) -> PluginError {
        PluginError(message)
    }
}

impl From<&str> for PluginError {
    fn from(message: &str) -> PluginError {
        PluginError(message.to_string())
    }
}

/// What to send back: an HTTP status and a JSON body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Reply {
    fn json<T: Serialize>(status: u16, value: &T) -> Reply {
        Reply {
            status,
            // Serializing these plain structs cannot fail; an empty object is the safe fallback.
            body: serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec()),
        }
    }

    fn error(status: u16, message: String) -> Reply {
        Reply::json(status, &ErrorResponse { err: message })
    }
}

/// An endpoint between `CreateEndpoint` and `DeleteEndpoint`: what `Join` needs.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Endpoint {
    mac: MacAddr,
    /// Whether dockerd gave it an IPv6 address (then `Join` names the IPv6 gateway too).
    has_ipv6: bool,
}

/// The plugin: the host's network as the daemon last computed it, and the endpoints it made.
pub struct Plugin<H> {
    host: H,
    network: watch::Receiver<Option<HostNetwork>>,
    endpoints: Mutex<BTreeMap<DockerId, Endpoint>>,
    /// Pools handed out and not yet released, by pool ID (src/io/docker/ipam.rs says why).
    pool_leases: Mutex<BTreeMap<String, usize>>,
    counters: Arc<PluginCounters>,
}

impl<H: PluginHost> Plugin<H> {
    pub fn new(
        host: H,
        network: watch::Receiver<Option<HostNetwork>>,
        counters: Arc<PluginCounters>,
    ) -> Plugin<H> {
        Plugin {
            host,
            network,
            endpoints: Mutex::new(BTreeMap::new()),
            pool_leases: Mutex::new(BTreeMap::new()),
            counters,
        }
    }

    /// Answers one request. Never panics on any input; a refusal is `{"Err": ...}` with status
    /// 404 (no such method), 400 (request did not parse) or 500 (refused or failed).
    pub async fn handle(&self, path: &str, body: &[u8]) -> Reply {
        self.counters.requests.fetch_add(1, Relaxed);
        let request = match parse_request(path, body) {
            Ok(request) => request,
            Err(e) => {
                self.counters.malformed.fetch_add(1, Relaxed);
                tracing::debug!(error = %e, "docker plugin request refused");
                let status = if e.is_unknown_path() { 404 } else { 400 };
                return Reply::error(status, e.to_string());
            }
        };
        match self.dispatch(request).await {
            Ok(reply) => reply,
            Err(PluginError(message)) => {
                self.counters.errors.fetch_add(1, Relaxed);
                tracing::warn!(%path, error = %message, "docker plugin request failed");
                Reply::error(500, message)
            }
        }
    }

    /// Refuses a request whose body could not be read (too large, too slow), counted as
    /// malformed like a body that did not parse.
    pub fn refuse_unread(&self, path: &str, message: String) -> Reply {
        self.counters.requests.fetch_add(1, Relaxed);
        self.counters.malformed.fetch_add(1, Relaxed);
        tracing::debug!(%path, error = %message, "docker plugin request refused");
        Reply::error(400, format!("{path}: {message}"))
    }

    async fn dispatch(&self, request: PluginRequest) -> Result<Reply, PluginError> {
        use PluginRequest as R;
        match request {
            R::Activate => Ok(network::activate()),
            R::NetworkCapabilities => Ok(network::capabilities()),
            R::CreateNetwork(c) => self.create_network(c),
            R::DeleteNetwork(_) => Ok(ok()),
            R::CreateEndpoint(c) => self.create_endpoint(c),
            R::DeleteEndpoint(e) => self.delete_endpoint(e).await,
            R::EndpointOperInfo(e) => self.endpoint_info(e),
            R::Join(e) => self.join(e).await,
            R::Leave(e) => self.leave(e).await,
            R::DiscoverNew
            | R::DiscoverDelete
            | R::ProgramExternalConnectivity(_)
            | R::RevokeExternalConnectivity(_) => Ok(ok()),
            R::IpamCapabilities => Ok(ipam::capabilities()),
            R::DefaultAddressSpaces => Ok(ipam::address_spaces()),
            R::RequestPool(r) => self.request_pool(r),
            R::ReleasePool(pool_id) => Ok(self.release_pool(&pool_id)),
            R::RequestAddress(r) => self.request_address(r).await,
            R::ReleaseAddress(r) => self.release_address(r).await,
        }
    }

    /// This host's network, or the refusal every handler that needs it gives.
    fn host_network(&self) -> Result<HostNetwork, PluginError> {
        self.network
            .borrow()
            .clone()
            .ok_or_else(|| PluginError(NO_RANGE.to_string()))
    }

    fn endpoints(&self) -> std::sync::MutexGuard<'_, BTreeMap<DockerId, Endpoint>> {
        self.endpoints.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn pool_leases(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, usize>> {
        self.pool_leases.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// `{}`: the answer of every request that only needs acknowledging.
fn ok() -> Reply {
    Reply::json(200, &crate::wire::docker::EmptyResponse {})
}
