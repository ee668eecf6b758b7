//! Docker's network-driver and IPAM-driver plugin protocol: the JSON requests dockerd POSTs to
//! the plugin socket, parsed into checked values, and the JSON answers meshd sends back.
//!
//! Owns the protocol's layout and nothing else: no state, no I/O. [`parse_request`] takes the
//! URL path and the body of one request and returns a [`PluginRequest`] or a [`RequestError`]
//! whose message names the method and the field that is wrong. Checks run cheapest first: the
//! path against the fixed method table (an unknown path never has its body looked at), then the
//! body's length, then the JSON, then each field (IDs, addresses, prefixes).
//!
//! Invariants: every value in a `PluginRequest` has been checked (IDs are 1 to [`MAX_ID_LEN`]
//! ASCII letters and digits, so they can name links and files; pools have no host bits set;
//! addresses parse), so the handlers never re-validate. Unknown JSON fields are ignored, because
//! dockerd adds fields between versions; missing optional fields and JSON `null` (Go's nil maps
//! and slices) mean "not given". Methods that carry no payload (`Plugin.Activate`, the
//! capability queries) ignore their body, as dockerd sends none or `null`. The layout is
//! documented in docs/wire-format.md, which changes together with this module.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

use super::MacAddr;
use crate::core::ranges::{Range4, Range6};

/// Largest request body accepted. dockerd's requests are a few hundred bytes; the limit keeps a
/// misbehaving client from making the daemon buffer much.
pub const MAX_BODY: usize = 64 * 1024;
/// Longest network, endpoint or pool ID accepted (dockerd's are 64 hex digits).
pub const MAX_ID_LEN: usize = 128;
/// The IPAM option dockerd sets when it asks for a network's gateway address.
pub const REQUEST_ADDRESS_TYPE: &str = "RequestAddressType";
/// Its value for the gateway.
pub const GATEWAY_REQUEST: &str = "com.docker.network.gateway";
/// The content type dockerd's plugin client expects.
pub const CONTENT_TYPE: &str = "application/vnd.docker.plugins.v1+json";

/// Every method of the protocol meshd answers, named as in the URL path `/<Method>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    Activate,
    NetworkCapabilities,
    CreateNetwork,
    DeleteNetwork,
    CreateEndpoint,
    DeleteEndpoint,
    EndpointOperInfo,
    Join,
    Leave,
    DiscoverNew,
    DiscoverDelete,
    ProgramExternalConnectivity,
    RevokeExternalConnectivity,
    IpamCapabilities,
    DefaultAddressSpaces,
    RequestPool,
    ReleasePool,
    RequestAddress,
    ReleaseAddress,
}

/// Every method with its URL path.
pub const METHODS: [(&str, Method); 19] = [
    ("/Plugin.Activate", Method::Activate),
    (
        "/NetworkDriver.GetCapabilities",
        Method::NetworkCapabilities,
    ),
    ("/NetworkDriver.CreateNetwork", Method::CreateNetwork),
    ("/NetworkDriver.DeleteNetwork", Method::DeleteNetwork),
    ("/NetworkDriver.CreateEndpoint", Method::CreateEndpoint),
    ("/NetworkDriver.DeleteEndpoint", Method::DeleteEndpoint),
    ("/NetworkDriver.EndpointOperInfo", Method::EndpointOperInfo),
    ("/NetworkDriver.Join", Method::Join),
    ("/NetworkDriver.Leave", Method::Leave),
    ("/NetworkDriver.DiscoverNew", Method::DiscoverNew),
    ("/NetworkDriver.DiscoverDelete", Method::DiscoverDelete),
    (
        "/NetworkDriver.ProgramExternalConnectivity",
        Method::ProgramExternalConnectivity,
    ),
    (
        "/NetworkDriver.RevokeExternalConnectivity",
        Method::RevokeExternalConnectivity,
    ),
    ("/IpamDriver.GetCapabilities", Method::IpamCapabilities),
    (
        "/IpamDriver.GetDefaultAddressSpaces",
        Method::DefaultAddressSpaces,
    ),
    ("/IpamDriver.RequestPool", Method::RequestPool),
    ("/IpamDriver.ReleasePool", Method::ReleasePool),
    ("/IpamDriver.RequestAddress", Method::RequestAddress),
    ("/IpamDriver.ReleaseAddress", Method::ReleaseAddress),
];

impl Method {
    /// The method a URL path names, if meshd answers it.
    pub fn from_path(path: &str) -> Option<Method> {
        METHODS.iter().find(|(p, _)| *p == path).map(|(_, m)| *m)
    }

    /// The URL path of the method (also its name in logs and errors).
    pub fn path(self) -> &'static str {
        METHODS
            .iter()
            .find(|(_, m)| *m == self)
            .map_or("/", |(p, _)| p)
    }
}

/// A network or endpoint ID from dockerd: 1 to [`MAX_ID_LEN`] ASCII letters and digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DockerId(String);

impl DockerId {
    pub fn parse(text: &str) -> Result<DockerId, String> {
        if text.is_empty() {
            return Err("is empty".into());
        }
        if text.len() > MAX_ID_LEN {
            return Err(format!("is longer than {MAX_ID_LEN} characters"));
        }
        if !text.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(format!(
                "`{text}` has characters other than letters and digits"
            ));
        }
        Ok(DockerId(text.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for DockerId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// An interface address with its prefix length, as dockerd writes them (`10.77.3.2/16`); unlike a
/// pool, host bits are expected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddressWithPrefix<A> {
    pub addr: A,
    pub prefix: u8,
}

/// An address pool in either family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pool {
    V4(Range4),
    V6(Range6),
}

impl std::fmt::Display for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Pool::V4(r) => r.fmt(f),
            Pool::V6(r) => r.fmt(f),
        }
    }
}

/// One IPv4 entry of `CreateNetwork`'s `IPv4Data`: the pool the IPAM driver gave and its gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkPool4 {
    pub pool: Range4,
    pub gateway: Option<AddressWithPrefix<Ipv4Addr>>,
}

/// One IPv6 entry of `CreateNetwork`'s `IPv6Data`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkPool6 {
    pub pool: Range6,
    pub gateway: Option<AddressWithPrefix<Ipv6Addr>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateNetwork {
    pub network_id: DockerId,
    pub ipv4: Vec<NetworkPool4>,
    pub ipv6: Vec<NetworkPool6>,
}

/// The endpoint a request is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointRef {
    pub network_id: DockerId,
    pub endpoint_id: DockerId,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateEndpoint {
    pub endpoint: EndpointRef,
    pub address: Option<AddressWithPrefix<Ipv4Addr>>,
    pub address6: Option<AddressWithPrefix<Ipv6Addr>>,
    pub mac: Option<MacAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestPool {
    pub address_space: String,
    /// The pool the user asked for (`--subnet`); `None` lets the driver choose.
    pub pool: Option<Pool>,
    /// The sub-range the user asked addresses to come from (`--ip-range`).
    pub sub_pool: Option<Pool>,
    /// Whether the driver-chosen pool is to be IPv6.
    pub v6: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestAddress {
    pub pool_id: String,
    /// The address asked for (`--ip`, `--gateway`); `None` lets the driver choose.
    pub address: Option<IpAddr>,
    /// Whether this is the network's gateway address rather than a container's.
    pub gateway: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseAddress {
    pub pool_id: String,
    pub address: IpAddr,
}

/// One checked request from dockerd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PluginRequest {
    Activate,
    NetworkCapabilities,
    CreateNetwork(CreateNetwork),
    DeleteNetwork(DockerId),
    CreateEndpoint(CreateEndpoint),
    DeleteEndpoint(EndpointRef),
    EndpointOperInfo(EndpointRef),
    Join(EndpointRef),
    Leave(EndpointRef),
    DiscoverNew,
    DiscoverDelete,
    ProgramExternalConnectivity(EndpointRef),
    RevokeExternalConnectivity(EndpointRef),
    IpamCapabilities,
    DefaultAddressSpaces,
    RequestPool(RequestPool),
    ReleasePool(String),
    RequestAddress(RequestAddress),
    ReleaseAddress(ReleaseAddress),
}

/// Why a request was refused before any handler saw it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("meshd's Docker plugin has no method {0:?}")]
    UnknownPath(String),
    #[error("{path}: body of {1} bytes is larger than {MAX_BODY}", path = .0.path())]
    TooLarge(Method, usize),
    #[error("{path}: body is not the expected JSON: {1}", path = .0.path())]
    Json(Method, String),
    #[error("{path}: field {1}: {2}", path = .0.path())]
    Field(Method, &'static str, String),
}

impl RequestError {
    /// Whether the path named no method (HTTP 404) rather than a bad request to a known one.
    pub fn is_unknown_path(&self) -> bool {
        matches!(self, RequestError::UnknownPath(_))
    }
}

// The raw shapes dockerd sends. Go writes nil maps and slices as `null`, so every field is
// optional; unknown fields are ignored on purpose (see the module comment).

#[derive(Deserialize)]
struct RawIpamData {
    #[serde(rename = "Pool", default)]
    pool: Option<String>,
    #[serde(rename = "Gateway", default)]
    gateway: Option<String>,
}

#[derive(Deserialize)]
struct RawCreateNetwork {
    #[serde(rename = "NetworkID", default)]
    network_id: Option<String>,
    #[serde(rename = "IPv4Data", default)]
    ipv4_data: Option<Vec<RawIpamData>>,
    #[serde(rename = "IPv6Data", default)]
    ipv6_data: Option<Vec<RawIpamData>>,
}

#[derive(Deserialize)]
struct RawNetworkRef {
    #[serde(rename = "NetworkID", default)]
    network_id: Option<String>,
}

#[derive(Deserialize)]
struct RawEndpointRef {
    #[serde(rename = "NetworkID", default)]
    network_id: Option<String>,
    #[serde(rename = "EndpointID", default)]
    endpoint_id: Option<String>,
}

#[derive(Deserialize, Default)]
struct RawInterface {
    #[serde(rename = "Address", default)]
    address: Option<String>,
    #[serde(rename = "AddressIPv6", default)]
    address_ipv6: Option<String>,
    #[serde(rename = "MacAddress", default)]
    mac_address: Option<String>,
}

#[derive(Deserialize)]
struct RawCreateEndpoint {
    #[serde(rename = "NetworkID", default)]
    network_id: Option<String>,
    #[serde(rename = "EndpointID", default)]
    endpoint_id: Option<String>,
    #[serde(rename = "Interface", default)]
    interface: Option<RawInterface>,
}

#[derive(Deserialize)]
struct RawDiscovery {
    #[serde(rename = "DiscoveryType", default)]
    _discovery_type: Option<u64>,
}

#[derive(Deserialize)]
struct RawRequestPool {
    #[serde(rename = "AddressSpace", default)]
    address_space: Option<String>,
    #[serde(rename = "Pool", default)]
    pool: Option<String>,
    #[serde(rename = "SubPool", default)]
    sub_pool: Option<String>,
    #[serde(rename = "V6", default)]
    v6: Option<bool>,
}

#[derive(Deserialize)]
struct RawPoolRef {
    #[serde(rename = "PoolID", default)]
    pool_id: Option<String>,
}

#[derive(Deserialize)]
struct RawRequestAddress {
    #[serde(rename = "PoolID", default)]
    pool_id: Option<String>,
    #[serde(rename = "Address", default)]
    address: Option<String>,
    #[serde(rename = "Options", default)]
    options: Option<BTreeMap<String, String>>,
}

/// Parses one request: `path` is the URL path, `body` the request body.
pub fn parse_request(path: &str, body: &[u8]) -> Result<PluginRequest, RequestError> {
    let method = Method::from_path(path).ok_or_else(|| {
        RequestError::UnknownPath(path.chars().take(MAX_ID_LEN).collect::<String>())
    })?;
    if body.len() > MAX_BODY {
        return Err(RequestError::TooLarge(method, body.len()));
    }
    let p = Parser { method };
    Ok(match method {
        Method::Activate => PluginRequest::Activate,
        Method::NetworkCapabilities => PluginRequest::NetworkCapabilities,
        Method::IpamCapabilities => PluginRequest::IpamCapabilities,
        Method::DefaultAddressSpaces => PluginRequest::DefaultAddressSpaces,
        Method::CreateNetwork => PluginRequest::CreateNetwork(p.create_network(body)?),
        Method::DeleteNetwork => {
            let raw: RawNetworkRef = p.json(body)?;
            PluginRequest::DeleteNetwork(p.id("NetworkID", raw.network_id)?)
        }
        Method::CreateEndpoint => PluginRequest::CreateEndpoint(p.create_endpoint(body)?),
        Method::DeleteEndpoint => PluginRequest::DeleteEndpoint(p.endpoint(body)?),
        Method::EndpointOperInfo => PluginRequest::EndpointOperInfo(p.endpoint(body)?),
        Method::Join => PluginRequest::Join(p.endpoint(body)?),
        Method::Leave => PluginRequest::Leave(p.endpoint(body)?),
        Method::DiscoverNew => {
            let _: RawDiscovery = p.json(body)?;
            PluginRequest::DiscoverNew
        }
        Method::DiscoverDelete => {
            let _: RawDiscovery = p.json(body)?;
            PluginRequest::DiscoverDelete
        }
        Method::ProgramExternalConnectivity => {
            PluginRequest::ProgramExternalConnectivity(p.endpoint(body)?)
        }
        Method::RevokeExternalConnectivity => {
            PluginRequest::RevokeExternalConnectivity(p.endpoint(body)?)
        }
        Method::RequestPool => PluginRequest::RequestPool(p.request_pool(body)?),
        Method::ReleasePool => {
            let raw: RawPoolRef = p.json(body)?;
            PluginRequest::ReleasePool(p.pool_id(raw.pool_id)?)
        }
        Method::RequestAddress => PluginRequest::RequestAddress(p.request_address(body)?),
        Method::ReleaseAddress => {
            let raw: RawRequestAddress = p.json(body)?;
            let address = p
                .ip("Address", raw.address)?
                .ok_or_else(|| p.field("Address", "is missing".into()))?;
            PluginRequest::ReleaseAddress(ReleaseAddress {
                pool_id: p.pool_id(raw.pool_id)?,
                address,
            })
        }
    })
}

/// Field checks that name the method they are parsing for.
struct Parser {
    method: Method,
}

/// A missing string and an empty one mean the same to dockerd: not given.
fn given(value: Option<String>) -> Option<String> {
    value.filter(|s| !s.is_empty())
}

impl Parser {
    fn field(&self, name: &'static str, message: String) -> RequestError {
        RequestError::Field(self.method, name, message)
    }

    fn json<'a, T: Deserialize<'a>>(&self, body: &'a [u8]) -> Result<T, RequestError> {
        serde_json::from_slice(body).map_err(|e| RequestError::Json(self.method, e.to_string()))
    }

    fn id(&self, name: &'static str, value: Option<String>) -> Result<DockerId, RequestError> {
        let value = given(value).ok_or_else(|| self.field(name, "is missing".into()))?;
        DockerId::parse(&value).map_err(|e| self.field(name, e))
    }

    fn endpoint(&self, body: &[u8]) -> Result<EndpointRef, RequestError> {
        let raw: RawEndpointRef = self.json(body)?;
        Ok(EndpointRef {
            network_id: self.id("NetworkID", raw.network_id)?,
            endpoint_id: self.id("EndpointID", raw.endpoint_id)?,
        })
    }

    fn pool_id(&self, value: Option<String>) -> Result<String, RequestError> {
        let value = given(value).ok_or_else(|| self.field("PoolID", "is missing".into()))?;
        if value.len() > MAX_ID_LEN || value.chars().any(char::is_control) {
            return Err(self.field(
                "PoolID",
                format!("is longer than {MAX_ID_LEN} characters or has control characters"),
            ));
        }
        Ok(value)
    }

    fn pool(
        &self,
        name: &'static str,
        value: Option<String>,
    ) -> Result<Option<Pool>, RequestError> {
        let Some(text) = given(value) else {
            return Ok(None);
        };
        let pool = if text.contains(':') {
            text.parse().map(Pool::V6)
        } else {
            text.parse().map(Pool::V4)
        };
        pool.map(Some).map_err(|e| self.field(name, e.to_string()))
    }

    fn ip(
        &self,
        name: &'static str,
        value: Option<String>,
    ) -> Result<Option<IpAddr>, RequestError> {
        let Some(text) = given(value) else {
            return Ok(None);
        };
        // dockerd sends plain addresses here; accept a prefix too and ignore it, as its own
        // IPAM does.
        let bare = text.split_once('/').map_or(text.as_str(), |(a, _)| a);
        bare.parse()
            .map(Some)
            .map_err(|_| self.field(name, format!("`{text}` is not an IP address")))
    }

    fn with_prefix<A: std::str::FromStr>(
        &self,
        name: &'static str,
        value: Option<String>,
        max_prefix: u8,
    ) -> Result<Option<AddressWithPrefix<A>>, RequestError> {
        let Some(text) = given(value) else {
            return Ok(None);
        };
        let bad = || {
            self.field(
                name,
                format!("`{text}` is not ADDRESS/PREFIX of the expected family"),
            )
        };
        let (addr, prefix) = text.split_once('/').ok_or_else(bad)?;
        let addr = addr.parse().map_err(|_| bad())?;
        let prefix = prefix
            .parse::<u8>()
            .ok()
            .filter(|p| *p <= max_prefix)
            .ok_or_else(bad)?;
        Ok(Some(AddressWithPrefix { addr, prefix }))
    }

    fn create_network(&self, body: &[u8]) -> Result<CreateNetwork, RequestError> {
        let raw: RawCreateNetwork = self.json(body)?;
        let network_id = self.id("NetworkID", raw.network_id)?;
        let mut ipv4 = Vec::new();
        for data in raw.ipv4_data.unwrap_or_default() {
            let pool = match self.pool("IPv4Data.Pool", data.pool)? {
                Some(Pool::V4(pool)) => pool,
                Some(Pool::V6(pool)) => {
                    return Err(self.field("IPv4Data.Pool", format!("{pool} is not IPv4")))
                }
                None => return Err(self.field("IPv4Data.Pool", "is missing".into())),
            };
            let gateway = self.with_prefix("IPv4Data.Gateway", data.gateway, 32)?;
            ipv4.push(NetworkPool4 { pool, gateway });
        }
        let mut ipv6 = Vec::new();
        for data in raw.ipv6_data.unwrap_or_default() {
            let pool = match self.pool("IPv6Data.Pool", data.pool)? {
                Some(Pool::V6(pool)) => pool,
                Some(Pool::V4(pool)) => {
                    return Err(self.field("IPv6Data.Pool", format!("{pool} is not IPv6")))
                }
                None => return Err(self.field("IPv6Data.Pool", "is missing".into())),
            };
            let gateway = self.with_prefix("IPv6Data.Gateway", data.gateway, 128)?;
            ipv6.push(NetworkPool6 { pool, gateway });
        }
        Ok(CreateNetwork {
            network_id,
            ipv4,
            ipv6,
        })
    }

    fn create_endpoint(&self, body: &[u8]) -> Result<CreateEndpoint, RequestError> {
        let raw: RawCreateEndpoint = self.json(body)?;
        let endpoint = EndpointRef {
            network_id: self.id("NetworkID", raw.network_id)?,
            endpoint_id: self.id("EndpointID", raw.endpoint_id)?,
        };
        let interface = raw.interface.unwrap_or_default();
        let mac = match given(interface.mac_address) {
            None => None,
            Some(text) => Some(
                text.parse::<MacAddr>()
                    .map_err(|e| self.field("Interface.MacAddress", format!("`{text}`: {e}")))?,
            ),
        };
        Ok(CreateEndpoint {
            endpoint,
            address: self.with_prefix("Interface.Address", interface.address, 32)?,
            address6: self.with_prefix("Interface.AddressIPv6", interface.address_ipv6, 128)?,
            mac,
        })
    }

    fn request_pool(&self, body: &[u8]) -> Result<RequestPool, RequestError> {
        let raw: RawRequestPool = self.json(body)?;
        let pool = self.pool("Pool", raw.pool)?;
        let sub_pool = self.pool("SubPool", raw.sub_pool)?;
        if pool.is_none() && sub_pool.is_some() {
            return Err(self.field("SubPool", "is given without a Pool".into()));
        }
        Ok(RequestPool {
            address_space: given(raw.address_space).unwrap_or_default(),
            pool,
            sub_pool,
            v6: raw.v6.unwrap_or(false),
        })
    }

    fn request_address(&self, body: &[u8]) -> Result<RequestAddress, RequestError> {
        let raw: RawRequestAddress = self.json(body)?;
        let gateway = raw
            .options
            .as_ref()
            .and_then(|o| o.get(REQUEST_ADDRESS_TYPE))
            .is_some_and(|t| t == GATEWAY_REQUEST);
        Ok(RequestAddress {
            pool_id: self.pool_id(raw.pool_id)?,
            address: self.ip("Address", raw.address)?,
            gateway,
        })
    }
}

// Answers. Field names are dockerd's; `None` fields are left out, as dockerd treats a missing
// field and an empty one alike.

/// `/Plugin.Activate`'s answer.
#[derive(Debug, Serialize)]
pub struct ActivateResponse {
    #[serde(rename = "Implements")]
    pub implements: Vec<&'static str>,
}

/// `/NetworkDriver.GetCapabilities`'s answer.
#[derive(Debug, Serialize)]
pub struct NetworkCapabilitiesResponse {
    #[serde(rename = "Scope")]
    pub scope: &'static str,
    #[serde(rename = "ConnectivityScope")]
    pub connectivity_scope: &'static str,
}

/// `/IpamDriver.GetCapabilities`'s answer.
#[derive(Debug, Serialize)]
pub struct IpamCapabilitiesResponse {
    #[serde(rename = "RequiresMACAddress")]
    pub requires_mac_address: bool,
    #[serde(rename = "RequiresRequestReplay")]
    pub requires_request_replay: bool,
}

/// `/IpamDriver.GetDefaultAddressSpaces`'s answer.
#[derive(Debug, Serialize)]
pub struct AddressSpacesResponse {
    #[serde(rename = "LocalDefaultAddressSpace")]
    pub local: &'static str,
    #[serde(rename = "GlobalDefaultAddressSpace")]
    pub global: &'static str,
}

/// `/IpamDriver.RequestPool`'s answer.
#[derive(Debug, Serialize)]
pub struct RequestPoolResponse {
    #[serde(rename = "PoolID")]
    pub pool_id: String,
    #[serde(rename = "Pool")]
    pub pool: String,
    #[serde(rename = "Data")]
    pub data: BTreeMap<String, String>,
}

/// `/IpamDriver.RequestAddress`'s answer: the address with the pool's prefix length.
#[derive(Debug, Serialize)]
pub struct RequestAddressResponse {
    #[serde(rename = "Address")]
    pub address: String,
    #[serde(rename = "Data")]
    pub data: BTreeMap<String, String>,
}

/// The interface fields `/NetworkDriver.CreateEndpoint` may fill in. dockerd refuses an answer
/// that sets a field it gave itself, so only the fields it left empty are ever set.
#[derive(Debug, Default, Serialize)]
pub struct EndpointInterface {
    #[serde(rename = "MacAddress", skip_serializing_if = "Option::is_none")]
    pub mac_address: Option<String>,
}

/// `/NetworkDriver.CreateEndpoint`'s answer.
#[derive(Debug, Serialize)]
pub struct CreateEndpointResponse {
    #[serde(rename = "Interface", skip_serializing_if = "Option::is_none")]
    pub interface: Option<EndpointInterface>,
}

/// The link dockerd is to move into the container, and the name prefix it gets there.
#[derive(Debug, Serialize)]
pub struct InterfaceName {
    #[serde(rename = "SrcName")]
    pub src_name: String,
    #[serde(rename = "DstPrefix")]
    pub dst_prefix: &'static str,
}

/// `/NetworkDriver.Join`'s answer.
#[derive(Debug, Serialize)]
pub struct JoinResponse {
    #[serde(rename = "InterfaceName")]
    pub interface_name: InterfaceName,
    #[serde(rename = "Gateway")]
    pub gateway: String,
    #[serde(rename = "GatewayIPv6", skip_serializing_if = "Option::is_none")]
    pub gateway6: Option<String>,
}

/// `/NetworkDriver.EndpointOperInfo`'s answer.
#[derive(Debug, Serialize)]
pub struct EndpointInfoResponse {
    #[serde(rename = "Value")]
    pub value: BTreeMap<String, String>,
}

/// The answer of every method that only acknowledges: `{}`.
#[derive(Debug, Serialize)]
pub struct EmptyResponse {}

/// Every refusal: `{"Err": "..."}`; dockerd shows the message to the user.
#[derive(Debug, Serialize)]
pub struct ErrorResponse {
    #[serde(rename = "Err")]
    pub err: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(path: &str, body: &str) -> Result<PluginRequest, RequestError> {
        parse_request(path, body.as_bytes())
    }

    const NET: &str = "4c8a2d1e0f";
    const EP: &str = "9b7e3f00aa";

    #[test]
    fn unknown_path_is_refused_without_reading_the_body() {
        let e = parse("/NetworkDriver.Explode", "{{{").unwrap_err();
        assert!(e.is_unknown_path());
        assert!(e.to_string().contains("Explode"), "{e}");
        // Payload-less methods ignore whatever body dockerd sends.
        assert_eq!(
            parse("/Plugin.Activate", "").unwrap(),
            PluginRequest::Activate
        );
        assert_eq!(
            parse("/IpamDriver.GetCapabilities", "null").unwrap(),
            PluginRequest::IpamCapabilities
        );
    }

    #[test]
    fn oversized_and_malformed_bodies_name_the_method() {
        let big = "x".repeat(MAX_BODY + 1);
        let e = parse("/NetworkDriver.Join", &big).unwrap_err();
        assert!(matches!(e, RequestError::TooLarge(Method::Join, _)), "{e}");
        let e = parse("/NetworkDriver.Join", "{\"NetworkID\":").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("/NetworkDriver.Join: body is not"),
            "{e}"
        );
        let e = parse("/NetworkDriver.Join", "[1,2]").unwrap_err();
        assert!(matches!(e, RequestError::Json(..)), "{e}");
    }

    #[test]
    fn create_network_parses_pools_and_gateways() {
        let body = format!(
            r#"{{"NetworkID":"{NET}","Options":{{"com.docker.network.generic":{{}}}},
            "IPv4Data":[{{"AddressSpace":"meshd","Pool":"10.77.0.0/16","Gateway":"10.77.3.1/16","AuxAddresses":null}}],
            "IPv6Data":null}}"#
        );
        let PluginRequest::CreateNetwork(c) = parse("/NetworkDriver.CreateNetwork", &body).unwrap()
        else {
            panic!("not CreateNetwork")
        };
        assert_eq!(c.network_id.as_str(), NET);
        assert_eq!(c.ipv4[0].pool, "10.77.0.0/16".parse().unwrap());
        assert_eq!(
            c.ipv4[0].gateway,
            Some(AddressWithPrefix {
                addr: Ipv4Addr::new(10, 77, 3, 1),
                prefix: 16
            })
        );
        assert!(c.ipv6.is_empty());
        let e = parse(
            "/NetworkDriver.CreateNetwork",
            &format!(r#"{{"NetworkID":"{NET}","IPv4Data":[{{"Pool":"10.77.0.1/16"}}]}}"#),
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("IPv4Data.Pool") && e.to_string().contains("host bits"),
            "{e}"
        );
        let e = parse(
            "/NetworkDriver.CreateNetwork",
            &format!(r#"{{"NetworkID":"{NET}","IPv4Data":[{{"Pool":"fd77::/48"}}]}}"#),
        )
        .unwrap_err();
        assert!(e.to_string().contains("is not IPv4"), "{e}");
    }

    #[test]
    fn ids_are_checked() {
        let e = parse("/NetworkDriver.DeleteNetwork", r#"{"NetworkID":""}"#).unwrap_err();
        assert_eq!(
            e.to_string(),
            "/NetworkDriver.DeleteNetwork: field NetworkID: is missing"
        );
        let e = parse(
            "/NetworkDriver.Leave",
            &format!(r#"{{"NetworkID":"{NET}","EndpointID":"../../etc"}}"#),
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("EndpointID") && e.to_string().contains("letters"),
            "{e}"
        );
        let long = "a".repeat(MAX_ID_LEN + 1);
        let e = parse(
            "/NetworkDriver.DeleteNetwork",
            &format!(r#"{{"NetworkID":"{long}"}}"#),
        )
        .unwrap_err();
        assert!(e.to_string().contains("longer than"), "{e}");
        assert_eq!(
            parse(
                "/NetworkDriver.Join",
                &format!(r#"{{"NetworkID":"{NET}","EndpointID":"{EP}","SandboxKey":"/var/run/docker/netns/x","Options":null}}"#)
            )
            .unwrap(),
            PluginRequest::Join(EndpointRef {
                network_id: DockerId::parse(NET).unwrap(),
                endpoint_id: DockerId::parse(EP).unwrap(),
            })
        );
    }

    #[test]
    fn create_endpoint_reads_the_interface_dockerd_filled_in() {
        let body = format!(
            r#"{{"NetworkID":"{NET}","EndpointID":"{EP}","Interface":{{"Address":"10.77.3.2/16","AddressIPv6":"","MacAddress":""}},"Options":{{}}}}"#
        );
        let PluginRequest::CreateEndpoint(c) =
            parse("/NetworkDriver.CreateEndpoint", &body).unwrap()
        else {
            panic!("not CreateEndpoint")
        };
        assert_eq!(c.address.unwrap().addr, Ipv4Addr::new(10, 77, 3, 2));
        assert_eq!(c.address.unwrap().prefix, 16);
        assert_eq!(c.address6, None);
        assert_eq!(c.mac, None);
        let body = format!(
            r#"{{"NetworkID":"{NET}","EndpointID":"{EP}","Interface":{{"MacAddress":"zz:00:00:00:00:00"}}}}"#
        );
        let e = parse("/NetworkDriver.CreateEndpoint", &body).unwrap_err();
        assert!(e.to_string().contains("Interface.MacAddress"), "{e}");
        let body = format!(
            r#"{{"NetworkID":"{NET}","EndpointID":"{EP}","Interface":{{"Address":"10.77.3.2/40"}}}}"#
        );
        let e = parse("/NetworkDriver.CreateEndpoint", &body).unwrap_err();
        assert!(e.to_string().contains("Interface.Address"), "{e}");
    }

    #[test]
    fn ipam_requests_parse() {
        let r = parse(
            "/IpamDriver.RequestPool",
            r#"{"AddressSpace":"meshd","Pool":"","SubPool":"","Options":null,"V6":false}"#,
        )
        .unwrap();
        assert_eq!(
            r,
            PluginRequest::RequestPool(RequestPool {
                address_space: "meshd".into(),
                pool: None,
                sub_pool: None,
                v6: false
            })
        );
        let e = parse("/IpamDriver.RequestPool", r#"{"SubPool":"10.77.3.0/24"}"#).unwrap_err();
        assert!(e.to_string().contains("without a Pool"), "{e}");
        let r = parse(
            "/IpamDriver.RequestAddress",
            r#"{"PoolID":"meshd:10.77.0.0/16","Address":"","Options":{"RequestAddressType":"com.docker.network.gateway"}}"#,
        )
        .unwrap();
        assert_eq!(
            r,
            PluginRequest::RequestAddress(RequestAddress {
                pool_id: "meshd:10.77.0.0/16".into(),
                address: None,
                gateway: true
            })
        );
        let e = parse(
            "/IpamDriver.RequestAddress",
            r#"{"PoolID":"p","Address":"10.77.3.300"}"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("field Address"), "{e}");
        let e = parse("/IpamDriver.ReleaseAddress", r#"{"PoolID":"p"}"#).unwrap_err();
        assert!(e.to_string().contains("Address: is missing"), "{e}");
        let e = parse("/IpamDriver.ReleasePool", r#"{"PoolID":null}"#).unwrap_err();
        assert!(e.to_string().contains("PoolID: is missing"), "{e}");
    }

    #[test]
    fn answers_use_dockers_field_names() {
        let join = JoinResponse {
            interface_name: InterfaceName {
                src_name: "mdc0123".into(),
                dst_prefix: "eth",
            },
            gateway: "10.77.3.1".into(),
            gateway6: None,
        };
        assert_eq!(
            serde_json::to_string(&join).unwrap(),
            r#"{"InterfaceName":{"SrcName":"mdc0123","DstPrefix":"eth"},"Gateway":"10.77.3.1"}"#
        );
        let created = CreateEndpointResponse { interface: None };
        assert_eq!(serde_json::to_string(&created).unwrap(), "{}");
        assert_eq!(serde_json::to_string(&EmptyResponse {}).unwrap(), "{}");
        for (path, method) in METHODS {
            assert_eq!(Method::from_path(path), Some(method));
            assert_eq!(method.path(), path);
        }
    }
}
