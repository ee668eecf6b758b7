//! Attaching a network namespace to this host's share of the container network, all or nothing:
//! an address of this host's range from the store (and the matching address of its IPv6 /64), a
//! veth pair into the bridge, the namespace end configured.
//!
//! Owns the order of those steps and their undoing, shared by the CNI plugin and `meshd attach`.
//! Invariants: on failure only what this call made is undone (an address the owner already held
//! before the call stays reserved, a link that already existed is not deleted), so a repeated or
//! racing request can never tear down a working attachment; teardown ([`unplug`]) deletes the host
//! end first and releases the address last, so an address is never free while an interface still
//! carries it; both are idempotent.

use std::fs::File;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr};

use crate::core::ranges::HostNetwork;
use crate::io::addresses::{AddressError, AddressStore};
use crate::io::netlink::Netlink;
use crate::io::veth::{self, Ipv6Setup, LinkState, PeerSetup, VethNames};

/// What to attach, and how.
pub struct PlugRequest<'a> {
    pub store: &'a AddressStore,
    pub host: &'a HostNetwork,
    pub owner: &'a str,
    pub names: &'a VethNames,
    pub netns: &'a File,
    pub ifname: &'a str,
    /// This address of the host's range (it must be assignable and free), else the lowest free.
    pub wanted: Option<Ipv4Addr>,
    pub mac: Option<[u8; 6]>,
    pub vlan: Option<u16>,
}

/// A finished attachment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plugged {
    pub address: Ipv4Addr,
    pub prefix: u8,
    /// The default route's next hop, if this call added the route (not on a VLAN: the gateway is
    /// on the untagged bridge; not where the namespace had a default route already).
    pub default_route: Option<Ipv4Addr>,
    pub host_mac: Option<[u8; 6]>,
    /// The IPv6 address (with the IPv6 subnet's prefix) when the host has an IPv6 range.
    pub address6: Option<(Ipv6Addr, u8)>,
    /// The IPv6 default route's next hop, if this call added it.
    pub default_route6: Option<Ipv6Addr>,
    /// The interface inside the namespace that carries the address.
    pub inside: LinkState,
    /// Its name (`ifname`, or `ifname.VLAN`).
    pub inside_name: String,
}

/// Why an attachment failed: the address, or the links.
#[derive(Debug, thiserror::Error)]
pub enum PlugError {
    #[error("{0}")]
    Address(#[from] AddressError),
    #[error("{0}")]
    Link(#[from] io::Error),
}

/// The IPv6 address that goes with `address`: the same offset in this host's /64 as `address` has
/// in its IPv4 range (the gateways are both the second address, so `.7` is `::7`), with the IPv6
/// subnet's prefix. Unique wherever the IPv4 address is, so it needs no store of its own. `None`
/// when the host has no IPv6 range.
pub fn ipv6_for(host: &HostNetwork, address: Ipv4Addr) -> Option<(Ipv6Addr, u8)> {
    let (range6, subnet6) = (host.range6?, host.subnet6?);
    let offset = u32::from(address).checked_sub(u32::from(host.range.base()))?;
    Some((range6.nth(u128::from(offset))?, subnet6.prefix()))
}

/// Attaches `req.netns`: reserves the address, plugs the veth pair, configures the inside end.
pub async fn plug(netlink: &Netlink, req: &PlugRequest<'_>) -> Result<Plugged, PlugError> {
    let held_before = req.store.lookup_owner(req.owner)?;
    let address = req.store.allocate(req.host.range, req.owner, req.wanted)?;
    let reserved_here = !held_before.contains(&address);
    let gateway = req.vlan.is_none().then_some(req.host.gateway);
    let gateway6 = req.host.gateway6.filter(|_| req.vlan.is_none());
    let setup = PeerSetup {
        ifname: req.ifname.to_string(),
        address,
        prefix: req.host.subnet.prefix(),
        gateway,
        mtu: req.host.mtu,
        vlan: req.vlan,
        ipv6: ipv6_for(req.host, address).map(|(address, prefix)| Ipv6Setup {
            address,
            prefix,
            gateway: gateway6,
        }),
    };
    let linked = async {
        let inside = veth::plug(
            netlink,
            req.names,
            &req.host.bridge,
            req.netns,
            &setup,
            req.mac,
        )
        .await?;
        let host_mac = veth::inspect_link(netlink, &req.names.host)
            .await?
            .and_then(|l| l.mac);
        Ok::<_, io::Error>((inside, host_mac))
    }
    .await;
    match linked {
        Ok((inside, host_mac)) => Ok(Plugged {
            address,
            prefix: setup.prefix,
            default_route: gateway.filter(|_| inside.default_route),
            address6: setup.ipv6.map(|six| (six.address, six.prefix)),
            default_route6: gateway6.filter(|_| inside.default_route6),
            host_mac,
            inside: inside.link,
            inside_name: match req.vlan {
                Some(vid) => veth::vlan_ifname(req.ifname, vid).unwrap_or_default(),
                None => req.ifname.to_string(),
            },
        }),
        Err(e) => {
            if reserved_here {
                // The link error is what the caller must see; a failed release leaves an
                // address reserved for an owner that a later DEL/detach releases.
                let _ = req.store.release_address(address);
            }
            Err(PlugError::Link(e))
        }
    }
}

/// What [`unplug`] removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unplugged {
    pub link_deleted: bool,
    pub released: Vec<Ipv4Addr>,
}

/// Detaches `owner`: deletes its host veth end (and with it the namespace end), then releases its
/// addresses. Nothing to remove is no error.
pub async fn unplug(
    netlink: &Netlink,
    store: &AddressStore,
    owner: &str,
    names: &VethNames,
) -> Result<Unplugged, PlugError> {
    let link_deleted = veth::delete(netlink, &names.host).await?;
    let released = store.release_owner(owner)?;
    Ok(Unplugged {
        link_deleted,
        released,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::ranges::ContainerNetwork;

    #[test]
    fn ipv6_addresses_mirror_the_ipv4_offset_in_the_hosts_64() {
        let net = ContainerNetwork::new(
            "10.77.0.0/16".parse().unwrap(),
            24,
            Some("fd77::/48".parse().unwrap()),
        )
        .unwrap();
        let range = "10.77.3.0/24".parse().unwrap();
        let host =
            HostNetwork::new(&net, range, net.range6_for(&range), "brm".into(), 1400).unwrap();
        assert_eq!(
            ipv6_for(&host, "10.77.3.7".parse().unwrap()),
            Some(("fd77:0:0:3::7".parse().unwrap(), 48))
        );
        assert_eq!(host.gateway6, Some("fd77:0:0:3::1".parse().unwrap()));
        let v4_only = ContainerNetwork::new("10.77.0.0/16".parse().unwrap(), 24, None).unwrap();
        let host = HostNetwork::new(&v4_only, range, None, "brm".into(), 1400).unwrap();
        assert_eq!(ipv6_for(&host, "10.77.3.7".parse().unwrap()), None);
    }
}
