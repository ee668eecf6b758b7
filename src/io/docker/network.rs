//! The network driver's handlers: networks on the mesh subnet, endpoints with a MAC derived from
//! their address, and a veth pair per joined container with its host end in meshd's bridge.
//!
//! Invariants: a network is accepted only on the mesh's container subnet (the whole mesh is one
//! L2 segment, so one subnet); the MAC a container gets is [`mac_for`] its address unless dockerd
//! chose one; the veth of an endpoint is named from its ID ([`veth_names`]), so deleting it needs
//! no table and is idempotent; only `CreateEndpoint` adds to the endpoints table, which is bounded.

use super::{
    mac_for, ok, veth_names, Endpoint, Plugin, PluginError, PluginHost, Reply, MAX_ENDPOINTS,
};
use crate::wire::docker::{
    ActivateResponse, CreateEndpoint, CreateEndpointResponse, CreateNetwork, EndpointInfoResponse,
    EndpointInterface, EndpointRef, InterfaceName, JoinResponse, NetworkCapabilitiesResponse,
};

/// What the plugin implements, for `/Plugin.Activate`.
pub(super) fn activate() -> Reply {
    Reply::json(
        200,
        &ActivateResponse {
            implements: vec!["NetworkDriver", "IpamDriver"],
        },
    )
}

/// Scope "local": each host's dockerd keeps its own copy of the network and meshd allocates from
/// that host's range without any cluster store, so the network is created on every host (a
/// "global" scope would need Docker swarm's store). Connectivity is "global" all the same: a
/// container reaches the containers of every host of the mesh.
pub(super) fn capabilities() -> Reply {
    Reply::json(
        200,
        &NetworkCapabilitiesResponse {
            scope: "local",
            connectivity_scope: "global",
        },
    )
}

impl<H: PluginHost> Plugin<H> {
    pub(super) fn create_network(&self, request: CreateNetwork) -> Result<Reply, PluginError> {
        let host = self.host_network()?;
        let [pool] = request.ipv4.as_slice() else {
            return Err(format!(
                "a meshd network has exactly one IPv4 pool, the mesh subnet {}; got {} (create it \
                 with --ipam-driver meshd)",
                host.subnet,
                request.ipv4.len()
            )
            .into());
        };
        if pool.pool != host.subnet {
            return Err(format!(
                "IPv4 pool {} is not the mesh's container subnet {}: a meshd network spans every \
                 host, so it uses that subnet (omit --subnet or give --subnet {})",
                pool.pool, host.subnet, host.subnet
            )
            .into());
        }
        if let Some(gateway) = pool.gateway {
            if gateway.addr != host.gateway {
                return Err(format!(
                    "gateway {} is not this host's gateway {} (omit --gateway)",
                    gateway.addr, host.gateway
                )
                .into());
            }
        }
        for pool6 in &request.ipv6 {
            if Some(pool6.pool) != host.subnet6 {
                return Err(match host.subnet6 {
                    Some(subnet6) => format!(
                        "IPv6 pool {} is not the mesh's IPv6 container subnet {subnet6}",
                        pool6.pool
                    ),
                    None => format!(
                        "IPv6 pool {} refused: the mesh has no IPv6 container subnet",
                        pool6.pool
                    ),
                }
                .into());
            }
        }
        tracing::info!(network = %request.network_id, subnet = %host.subnet, "docker network created");
        Ok(ok())
    }

    pub(super) fn create_endpoint(&self, request: CreateEndpoint) -> Result<Reply, PluginError> {
        let host = self.host_network()?;
        let address = request.address.ok_or_else(|| {
            PluginError::from(
                "the endpoint has no IPv4 address: create the network with --ipam-driver meshd",
            )
        })?;
        if !host.subnet.contains(address.addr) || address.prefix != host.subnet.prefix() {
            return Err(format!(
                "endpoint address {}/{} is not in the mesh's container subnet {}",
                address.addr, address.prefix, host.subnet
            )
            .into());
        }
        if let Some(address6) = request.address6 {
            if !host.subnet6.is_some_and(|s| s.contains(address6.addr)) {
                return Err(format!(
                    "endpoint address {} is not in the mesh's IPv6 container subnet",
                    address6.addr
                )
                .into());
            }
        }
        let (mac, answer) = match request.mac {
            // dockerd refuses an answer that changes what it set itself.
            Some(mac) => (mac, None),
            None => {
                let mac = mac_for(address.addr);
                let interface = EndpointInterface {
                    mac_address: Some(mac.to_string()),
                };
                (mac, Some(interface))
            }
        };
        let mut endpoints = self.endpoints();
        let id = request.endpoint.endpoint_id;
        if endpoints.len() >= MAX_ENDPOINTS && !endpoints.contains_key(&id) {
            return Err(format!(
                "meshd already tracks {MAX_ENDPOINTS} endpoints; remove stopped containers"
            )
            .into());
        }
        endpoints.insert(
            id,
            Endpoint {
                mac,
                has_ipv6: request.address6.is_some(),
            },
        );
        Ok(Reply::json(
            200,
            &CreateEndpointResponse { interface: answer },
        ))
    }

    pub(super) async fn delete_endpoint(
        &self,
        endpoint: EndpointRef,
    ) -> Result<Reply, PluginError> {
        self.endpoints().remove(&endpoint.endpoint_id);
        // Normally gone with Leave already; deleting again is harmless.
        self.remove_veth(&endpoint).await?;
        Ok(ok())
    }

    pub(super) fn endpoint_info(&self, endpoint: EndpointRef) -> Result<Reply, PluginError> {
        let known = self.endpoints().get(&endpoint.endpoint_id).cloned();
        let mut value = std::collections::BTreeMap::new();
        if let Some(known) = known {
            value.insert("MacAddress".to_string(), known.mac.to_string());
            value.insert(
                "HostInterface".to_string(),
                veth_names(&endpoint.endpoint_id).host,
            );
        }
        Ok(Reply::json(200, &EndpointInfoResponse { value }))
    }

    pub(super) async fn join(&self, endpoint: EndpointRef) -> Result<Reply, PluginError> {
        let host = self.host_network()?;
        let known = self
            .endpoints()
            .get(&endpoint.endpoint_id)
            .cloned()
            .ok_or_else(|| {
                PluginError(format!(
                    "endpoint {} is unknown to meshd (was meshd restarted after it was created? \
                     restart the container)",
                    endpoint.endpoint_id
                ))
            })?;
        let names = veth_names(&endpoint.endpoint_id);
        // A retried Join finds the pair of the first try: start from scratch.
        self.remove_veth(&endpoint).await?;
        self.host
            .create_veth(
                names.clone(),
                host.bridge.clone(),
                host.mtu,
                known.mac.octets(),
            )
            .await
            .map_err(|e| {
                PluginError(format!("plugging the container into {}: {e}", host.bridge))
            })?;
        Ok(Reply::json(
            200,
            &JoinResponse {
                interface_name: InterfaceName {
                    src_name: names.peer,
                    dst_prefix: "eth",
                },
                gateway: host.gateway.to_string(),
                gateway6: host
                    .gateway6
                    .filter(|_| known.has_ipv6)
                    .map(|g| g.to_string()),
            },
        ))
    }

    pub(super) async fn leave(&self, endpoint: EndpointRef) -> Result<Reply, PluginError> {
        self.remove_veth(&endpoint).await?;
        Ok(ok())
    }

    async fn remove_veth(&self, endpoint: &EndpointRef) -> Result<(), PluginError> {
        let names = veth_names(&endpoint.endpoint_id);
        self.host
            .delete_veth(names.host.clone())
            .await
            .map(|_| ())
            .map_err(|e| PluginError(format!("removing {}: {e}", names.host)))
    }
}
