//! The IPAM driver's handlers: the mesh subnet as the only pool, container addresses from this
//! host's range through the shared address store, and the host's gateway.
//!
//! Invariants: pool IDs are [`pool_id4`]/[`pool_id6`] of the subnet, so they mean the same after
//! a restart of meshd or dockerd and a network made for another subnet is recognised and refused;
//! a pool request that leaves the choice to the driver (no `--subnet`) is refused while the pool
//! is leased: a second network on the mesh subnet, or dockerd asking again, without end, because
//! the pool it got overlaps a route of the host's main table (meshd routes the subnet in a table
//! of its own, src/io/containers.rs, but another tool may route it in main): the refusal ends
//! that loop with a message naming `--subnet`;
//! an IPv4 container address is recorded in the address store under an owner of its own before it
//! is answered, and removed only by `ReleaseAddress`; the gateway is never recorded. IPv6
//! addresses are not recorded: each is a random interface identifier in this host's /64 (2^64
//! choices), so two containers practically never draw the same one.

use std::collections::BTreeMap;
use std::net::IpAddr;

use super::{ok, Plugin, PluginError, PluginHost, Reply};
use crate::core::ranges::{HostNetwork, Range4, Range6};
use crate::wire::docker::{
    AddressSpacesResponse, IpamCapabilitiesResponse, Pool, ReleaseAddress, RequestAddress,
    RequestAddressResponse, RequestPool, RequestPoolResponse,
};

/// The pool ID of the mesh's IPv4 subnet.
pub fn pool_id4(subnet: Range4) -> String {
    format!("meshd:{subnet}")
}

/// The pool ID of the mesh's IPv6 subnet.
pub fn pool_id6(subnet6: Range6) -> String {
    format!("meshd6:{subnet6}")
}

/// The owner prefix of the addresses the Docker plugin records in the address store.
pub const OWNER_PREFIX: &str = "docker:";

pub(super) fn capabilities() -> Reply {
    Reply::json(
        200,
        &IpamCapabilitiesResponse {
            requires_mac_address: false,
            // Pools and addresses are derived from the certificate and the store, not from
            // requests dockerd would have to replay after a restart.
            requires_request_replay: false,
        },
    )
}

pub(super) fn address_spaces() -> Reply {
    Reply::json(
        200,
        &AddressSpacesResponse {
            local: "meshd",
            global: "meshd",
        },
    )
}

/// Which of the mesh's pools a pool ID names.
enum Family {
    V4,
    V6(Range6),
}

fn family_of(host: &HostNetwork, pool_id: &str) -> Result<Family, PluginError> {
    if pool_id == pool_id4(host.subnet) {
        return Ok(Family::V4);
    }
    if let Some(subnet6) = host.subnet6.filter(|s| pool_id == pool_id6(*s)) {
        return Ok(Family::V6(subnet6));
    }
    Err(format!(
        "pool {pool_id} is not the mesh's container subnet {} (was the network created for \
         another subnet? remove it and create it again)",
        host.subnet
    )
    .into())
}

impl<H: PluginHost> Plugin<H> {
    pub(super) fn request_pool(&self, request: RequestPool) -> Result<Reply, PluginError> {
        let host = self.host_network()?;
        let wants_v6 = request.v6 || matches!(request.pool, Some(Pool::V6(_)));
        let (pool_id, pool) = if wants_v6 {
            let subnet6 = host.subnet6.ok_or_else(|| {
                PluginError::from("IPv6 refused: the mesh has no IPv6 container subnet")
            })?;
            if let Some(asked) = request.pool.filter(|p| *p != Pool::V6(subnet6)) {
                return Err(format!(
                    "IPv6 pool {asked} is not the mesh's IPv6 container subnet {subnet6} (omit \
                     --subnet for it or give --subnet {subnet6})"
                )
                .into());
            }
            if let Some(sub) = request
                .sub_pool
                .filter(|p| Some(*p) != host.range6.map(Pool::V6))
            {
                return Err(format!(
                    "--ip-range {sub} refused: meshd hands out this host's IPv6 range only"
                )
                .into());
            }
            (pool_id6(subnet6), Pool::V6(subnet6))
        } else {
            if let Some(asked) = request.pool.filter(|p| *p != Pool::V4(host.subnet)) {
                return Err(format!(
                    "pool {asked} is not the mesh's container subnet {}: a meshd network spans \
                     every host, so it uses that subnet (omit --subnet or give --subnet {})",
                    host.subnet, host.subnet
                )
                .into());
            }
            if let Some(sub) = request.sub_pool.filter(|p| *p != Pool::V4(host.range)) {
                return Err(format!(
                    "--ip-range {sub} refused: meshd hands out this host's range {} only",
                    host.range
                )
                .into());
            }
            (pool_id4(host.subnet), Pool::V4(host.subnet))
        };
        let mut leases = self.pool_leases();
        let held = leases.entry(pool_id.clone()).or_insert(0);
        if request.pool.is_none() && *held > 0 {
            return Err(format!(
                "the mesh subnet {pool} is taken already: either by another meshd network on this \
                 host (one is enough: `docker network ls`), or because dockerd found the subnet \
                 in the host's main routing table and asked for another pool; create the network \
                 with --subnet {pool}"
            )
            .into());
        }
        *held += 1;
        Ok(Reply::json(
            200,
            &RequestPoolResponse {
                pool_id,
                pool: pool.to_string(),
                data: BTreeMap::new(),
            },
        ))
    }

    /// Ends a lease. Nothing else is held per pool (its addresses are released one by one), so
    /// an unknown ID (a network made before meshd restarted, or for another subnet) is no error.
    pub(super) fn release_pool(&self, pool_id: &str) -> Reply {
        let mut leases = self.pool_leases();
        if let Some(held) = leases.get_mut(pool_id) {
            *held = held.saturating_sub(1);
            if *held == 0 {
                leases.remove(pool_id);
            }
        }
        ok()
    }

    pub(super) async fn request_address(
        &self,
        request: RequestAddress,
    ) -> Result<Reply, PluginError> {
        let host = self.host_network()?;
        let address = match family_of(&host, &request.pool_id)? {
            Family::V4 => self.request_address4(&host, &request).await?.to_string(),
            Family::V6(subnet6) => {
                format!(
                    "{}/{}",
                    self.request_address6(&host, &request)?,
                    subnet6.prefix()
                )
            }
        };
        Ok(Reply::json(
            200,
            &RequestAddressResponse {
                address,
                data: BTreeMap::new(),
            },
        ))
    }

    /// An IPv4 address with the subnet's prefix length, `a.b.c.d/p`.
    async fn request_address4(
        &self,
        host: &HostNetwork,
        request: &RequestAddress,
    ) -> Result<String, PluginError> {
        let wanted = match request.address {
            None => None,
            Some(IpAddr::V4(addr)) => Some(addr),
            Some(IpAddr::V6(addr)) => {
                return Err(format!("{addr} is not an IPv4 address of {}", host.subnet).into())
            }
        };
        let prefix = host.subnet.prefix();
        if request.gateway {
            return match wanted {
                Some(addr) if addr != host.gateway => Err(format!(
                    "gateway {addr} refused: this host's gateway is {} (omit --gateway)",
                    host.gateway
                )
                .into()),
                _ => Ok(format!("{}/{prefix}", host.gateway)),
            };
        }
        if let Some(addr) = wanted {
            if !host.subnet.contains(addr) {
                return Err(format!(
                    "{addr} is not in the mesh's container subnet {}",
                    host.subnet
                )
                .into());
            }
            if !host.range.contains(addr) {
                return Err(format!(
                    "{addr} belongs to another host's range: this host hands out {} only",
                    host.range
                )
                .into());
            }
        }
        let owner = format!("{OWNER_PREFIX}{:016x}", self.host.random());
        let addr = self
            .host
            .allocate(host.range, owner, wanted)
            .await
            .map_err(PluginError)?;
        Ok(format!("{addr}/{prefix}"))
    }

    fn request_address6(
        &self,
        host: &HostNetwork,
        request: &RequestAddress,
    ) -> Result<std::net::Ipv6Addr, PluginError> {
        let range6 = host
            .range6
            .ok_or_else(|| PluginError::from("this host's certificate names no IPv6 range"))?;
        let wanted = match request.address {
            None => None,
            Some(IpAddr::V6(addr)) => Some(addr),
            Some(IpAddr::V4(addr)) => {
                return Err(format!("{addr} is not an IPv6 address of {range6}").into())
            }
        };
        if request.gateway {
            let gateway6 = host
                .gateway6
                .ok_or_else(|| PluginError::from("this host has no IPv6 gateway"))?;
            return match wanted {
                Some(addr) if addr != gateway6 => Err(format!(
                    "IPv6 gateway {addr} refused: this host's is {gateway6} (omit --gateway)"
                )
                .into()),
                _ => Ok(gateway6),
            };
        }
        if let Some(addr) = wanted {
            return if range6.is_assignable(addr) {
                Ok(addr)
            } else {
                Err(format!("{addr} is not an assignable address of this host's {range6}").into())
            };
        }
        let host_bits = 128 - u32::from(range6.prefix());
        let mask = if host_bits >= 128 {
            u128::MAX
        } else {
            (1u128 << host_bits) - 1
        };
        // Random identifiers are rarely the two reserved ones; a few draws always suffice.
        (0..8)
            .map(|_| range6.nth(u128::from(self.host.random()) & mask))
            .find_map(|a| a.filter(|a| range6.is_assignable(*a)))
            .ok_or_else(|| PluginError::from("no assignable IPv6 address drawn"))
    }

    pub(super) async fn release_address(
        &self,
        request: ReleaseAddress,
    ) -> Result<Reply, PluginError> {
        let host = self.host_network()?;
        match (family_of(&host, &request.pool_id)?, request.address) {
            (Family::V4, IpAddr::V4(addr)) if addr != host.gateway => {
                // An address that was not recorded (a retried release) is no error.
                self.host.release(addr).await.map_err(PluginError)?;
            }
            (Family::V4, IpAddr::V4(_)) | (Family::V6(_), IpAddr::V6(_)) => {}
            (_, addr) => {
                return Err(format!("{addr} is not of pool {}'s family", request.pool_id).into())
            }
        }
        Ok(ok())
    }
}
