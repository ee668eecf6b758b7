//! This host's share of the container network, applied to the host: the gateway address on the
//! bridge, the route to the container subnet (in its own table, see [`gateway_addresses`]),
//! `subnet.env` for tools built for flannel, and the [`HostNetwork`] the Docker plugin,
//! `meshd-cni` and `meshd attach` read.
//!
//! Owns [`ContainerHost`]: the grant last applied and the channel that publishes the host
//! network. Invariants: it acts only when the node's grant changed (a renewal that moved the
//! range, or the first grant), never under the node lock (it is handed the grant after the lock
//! was released); the old gateway address leaves the bridge before the new one is added; the
//! file is replaced atomically (temporary file, fsync, rename), so a reader never sees half of
//! it; without a bridge there is no host network (containers need a bridge to plug into).

use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::PathBuf;

use tokio::sync::watch;
use tracing::{info, warn};

use super::netlink::Netlink;
use crate::config::Cidr;
use crate::core::ranges::{Grant, HostNetwork};

/// Where the host network is published, and what it is built from.
pub struct ContainerHost {
    netlink: Netlink,
    /// The bridge containers plug into, and its link index.
    bridge: Option<(String, u32)>,
    mtu: u16,
    subnet_env: Option<PathBuf>,
    applied: Option<Grant>,
    publish: watch::Sender<Option<HostNetwork>>,
}

/// The routing table the container subnet's route lives in, and the priority of the rule that
/// sends the subnet's traffic there (before the main table's 32766).
pub const SUBNET_ROUTE_TABLE: u32 = 6655;
pub const SUBNET_RULE_PRIORITY: u32 = 31_000;

/// The gateway addresses a host network puts on the bridge: the range's IPv4 gateway as a /32
/// (its route to the whole subnet goes in [`SUBNET_ROUTE_TABLE`]), and the IPv6 gateway with the
/// IPv6 subnet's prefix.
///
/// Why the IPv4 route is not the address's own prefix route in the main table: dockerd refuses an
/// IPAM pool that overlaps a route of the main table, and asks the driver for another pool without
/// end, so `docker network create -d meshd --ipam-driver meshd meshnet` hung. A route in its own
/// table, reached by a rule, serves the host the same and is not in dockerd's way.
fn gateway_addresses(h: &HostNetwork) -> Vec<Cidr> {
    let mut out = vec![Cidr {
        addr: IpAddr::V4(h.gateway),
        prefix: 32,
    }];
    if let (Some(gateway6), Some(subnet6)) = (h.gateway6, h.subnet6) {
        out.push(Cidr {
            addr: IpAddr::V6(gateway6),
            prefix: subnet6.prefix(),
        });
    }
    out
}

/// The file flannel's consumers read (`dockerd --bip`, flannel's CNI meta-plugin), plus meshd's
/// IPv6 lines.
pub fn subnet_env(h: &HostNetwork) -> String {
    let mut text = String::new();
    let _ = writeln!(text, "FLANNEL_NETWORK={}", h.subnet);
    let _ = writeln!(text, "FLANNEL_SUBNET={}/{}", h.gateway, h.range.prefix());
    let _ = writeln!(text, "FLANNEL_MTU={}", h.mtu);
    let _ = writeln!(text, "FLANNEL_IPMASQ=false");
    if let (Some(subnet6), Some(range6)) = (h.subnet6, h.range6) {
        let _ = writeln!(text, "MESHD_SUBNET6={subnet6}");
        let _ = writeln!(text, "MESHD_RANGE6={range6}");
    }
    text
}

impl ContainerHost {
    /// A host whose containers plug into `bridge` (with its index) at `mtu`; `subnet_env` is
    /// where the flannel-format file goes (`None`: not written). Returns the receiving end of
    /// the host network's channel.
    pub fn new(
        netlink: Netlink,
        bridge: Option<(String, u32)>,
        mtu: u16,
        subnet_env: Option<PathBuf>,
    ) -> (ContainerHost, watch::Receiver<Option<HostNetwork>>) {
        let (publish, receiver) = watch::channel(None);
        let host = ContainerHost {
            netlink,
            bridge,
            mtu,
            subnet_env,
            applied: None,
            publish,
        };
        (host, receiver)
    }

    /// The host network now published.
    pub fn current(&self) -> Option<HostNetwork> {
        self.publish.borrow().clone()
    }

    fn host_network(&self, grant: Option<Grant>) -> Option<HostNetwork> {
        let grant = grant?;
        let (bridge, _) = self.bridge.as_ref()?;
        HostNetwork::new(
            &grant.network,
            grant.range,
            grant.range6,
            bridge.clone(),
            self.mtu,
        )
    }

    /// Applies the node's current grant if it differs from the one last applied. Failures are
    /// logged and retried at the next call (the grant is remembered only once applied).
    pub async fn apply(&mut self, grant: Option<Grant>) {
        if grant == self.applied {
            return;
        }
        let old = self.current();
        let new = self.host_network(grant);
        if let Some((bridge, index)) = &self.bridge {
            for cidr in old.iter().flat_map(gateway_addresses) {
                if new
                    .as_ref()
                    .is_some_and(|n| gateway_addresses(n).contains(&cidr))
                {
                    continue;
                }
                if let Err(e) = self.netlink.del_address(*index, cidr).await {
                    warn!(%bridge, error = %e, "could not remove the old gateway address");
                }
            }
            for cidr in new.iter().flat_map(gateway_addresses) {
                if let Err(e) = self.netlink.add_address(*index, cidr).await {
                    warn!(%bridge, error = %e, "could not put the gateway address on the bridge; retrying");
                    return;
                }
            }
            if let Some(h) = &new {
                let subnet = (h.subnet.base(), h.subnet.prefix());
                let routed = self
                    .netlink
                    .route_subnet_via_table(
                        subnet,
                        *index,
                        SUBNET_ROUTE_TABLE,
                        SUBNET_RULE_PRIORITY,
                    )
                    .await;
                if let Err(e) = routed {
                    warn!(%bridge, error = %e, "could not route the container subnet to the bridge; retrying");
                    return;
                }
            }
        }
        if let Some(path) = &self.subnet_env {
            let written = match &new {
                Some(h) => write_env(path, &subnet_env(h)),
                None => match std::fs::remove_file(path) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                    _ => Ok(()),
                },
            };
            if let Err(e) = written {
                warn!(path = %path.display(), error = %e, "could not write subnet.env; retrying");
                return;
            }
        }
        match &new {
            Some(h) => info!(range = %h.range, gateway = %h.gateway, bridge = %h.bridge, "container address range in use"),
            None if grant.is_some() => warn!("this node holds an address range but has no bridge to give containers; set [interface] bridge"),
            None => {}
        }
        self.applied = grant;
        self.publish.send_replace(new);
    }
}

fn write_env(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    crate::enroll::write_atomically(path, text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnet_env_is_flannels_format_with_the_gateway_as_subnet() {
        let net = crate::core::ranges::ContainerNetwork::new(
            "10.77.0.0/16".parse().unwrap(),
            24,
            Some("fd77::/48".parse().unwrap()),
        )
        .unwrap();
        let grant = Grant::new(net, "10.77.3.0/24".parse().unwrap(), 1).unwrap();
        let h = HostNetwork::new(&net, grant.range, grant.range6, "br0".into(), 1400).unwrap();
        assert_eq!(
            subnet_env(&h),
            "FLANNEL_NETWORK=10.77.0.0/16\nFLANNEL_SUBNET=10.77.3.1/24\nFLANNEL_MTU=1400\n\
             FLANNEL_IPMASQ=false\nMESHD_SUBNET6=fd77::/48\nMESHD_RANGE6=fd77:0:0:3::/64\n"
        );
        let cidrs = gateway_addresses(&h);
        assert_eq!(cidrs[0].to_string(), "10.77.3.1/32");
        assert_eq!(cidrs[1].to_string(), "fd77:0:0:3::1/48");
    }
}
