//! The plugin spoken to as dockerd does: HTTP over a real Unix socket in a temporary directory,
//! with a hand-made host network and a temporary address store. Veth pairs are recorded by
//! [`RecordingHost`]; the one test that creates real links runs only as root, in a network
//! namespace of its own.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::sync::watch;

use super::server::{PluginServer, SystemHost};
use super::*;
use crate::io::addresses::AddressStore;

const NET: &str = "0a1b2c3d4e5f";
const EP1: &str = "e1e1e1e1e1e1e1e1";
const EP2: &str = "e2e2e2e2e2e2e2e2";

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "meshd-docker-{tag}-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn host_network(with_v6: bool) -> HostNetwork {
    let network = crate::core::ranges::ContainerNetwork::new(
        "10.77.0.0/16".parse().unwrap(),
        24,
        with_v6.then(|| "fd77::/48".parse().unwrap()),
    )
    .unwrap();
    let range = network.range(3).unwrap();
    HostNetwork::new(
        &network,
        range,
        network.range6_for(&range),
        "meshbr0".into(),
        1400,
    )
    .unwrap()
}

/// A veth pair the plugin asked for: names, bridge, MTU and the peer's MAC.
type CreatedVeth = (VethNames, String, u16, [u8; 6]);

/// A host whose addresses are a real store and whose veth pairs are only recorded.
struct RecordingHost {
    store: AddressStore,
    veths: Mutex<BTreeSet<String>>,
    created: Mutex<Vec<CreatedVeth>>,
    next: AtomicU64,
}

impl RecordingHost {
    fn new(dir: &Path) -> RecordingHost {
        RecordingHost::with_first_random(dir, 1)
    }

    /// A host whose "random" numbers count up from `first` (a restarted daemon draws others).
    fn with_first_random(dir: &Path, first: u64) -> RecordingHost {
        RecordingHost {
            store: AddressStore::open(dir).unwrap(),
            veths: Mutex::default(),
            created: Mutex::default(),
            next: AtomicU64::new(first),
        }
    }
}

impl PluginHost for Arc<RecordingHost> {
    async fn allocate(
        &self,
        range: Range4,
        owner: String,
        wanted: Option<Ipv4Addr>,
    ) -> Result<Ipv4Addr, String> {
        self.store
            .allocate(range, &owner, wanted)
            .map_err(|e| e.to_string())
    }

    async fn release(&self, addr: Ipv4Addr) -> Result<bool, String> {
        self.store.release_address(addr).map_err(|e| e.to_string())
    }

    async fn create_veth(
        &self,
        names: VethNames,
        bridge: String,
        mtu: u16,
        mac: [u8; 6],
    ) -> io::Result<()> {
        if !self.veths.lock().unwrap().insert(names.host.clone()) {
            return Err(io::Error::new(io::ErrorKind::AlreadyExists, "exists"));
        }
        self.created.lock().unwrap().push((names, bridge, mtu, mac));
        Ok(())
    }

    async fn delete_veth(&self, host_name: String) -> io::Result<bool> {
        Ok(self.veths.lock().unwrap().remove(&host_name))
    }

    fn random(&self) -> u64 {
        self.next.fetch_add(1, Relaxed)
    }
}

/// A served plugin and a client for it.
struct Served {
    socket: PathBuf,
    counters: Arc<PluginCounters>,
    network: watch::Sender<Option<HostNetwork>>,
    task: tokio::task::JoinHandle<()>,
}

impl Served {
    fn start<H: PluginHost>(socket: &Path, host: H, network: Option<HostNetwork>) -> Served {
        let counters = Arc::new(PluginCounters::default());
        let (tx, rx) = watch::channel(network);
        let plugin = Arc::new(Plugin::new(host, rx, counters.clone()));
        let server = PluginServer::bind(socket).unwrap();
        Served {
            socket: socket.to_path_buf(),
            counters,
            network: tx,
            task: tokio::spawn(server.serve(plugin)),
        }
    }

    /// POSTs `body` to `path` as dockerd does; returns the status and the JSON answer.
    async fn post(&self, path: &str, body: &str) -> (u16, Value) {
        let stream = tokio::net::UnixStream::connect(&self.socket).await.unwrap();
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake::<_, Full<Bytes>>(TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(connection);
        let request = hyper::Request::post(path)
            .header("Host", "plugin")
            .header("Accept", "application/vnd.docker.plugins.v1.2+json")
            .body(Full::new(Bytes::from(body.to_string())))
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        let status = response.status().as_u16();
        assert_eq!(
            response.headers()["content-type"],
            crate::wire::docker::CONTENT_TYPE
        );
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("{path} answered non-JSON ({e}): {bytes:?}"));
        (status, value)
    }

    async fn ok(&self, path: &str, body: Value) -> Value {
        let (status, value) = self.post(path, &body.to_string()).await;
        assert_eq!(status, 200, "{path} {body}: {value}");
        value
    }

    async fn err(&self, path: &str, body: Value) -> String {
        let (status, value) = self.post(path, &body.to_string()).await;
        assert_eq!(status, 500, "{path} {body}: {value}");
        value["Err"].as_str().unwrap().to_string()
    }

    fn counter(&self, name: &str) -> u64 {
        self.counters
            .report()
            .iter()
            .find(|(n, _)| *n == name)
            .unwrap()
            .1
    }

    async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn pool_id() -> String {
    "meshd:10.77.0.0/16".into()
}

async fn request_address(served: &Served, address: &str) -> Result<String, String> {
    let body = json!({"PoolID": pool_id(), "Address": address, "Options": null}).to_string();
    let (status, value) = served.post("/IpamDriver.RequestAddress", &body).await;
    match status {
        200 => Ok(value["Address"].as_str().unwrap().to_string()),
        _ => Err(value["Err"].as_str().unwrap().to_string()),
    }
}

#[test]
fn handshake_and_capabilities_answer_what_dockerd_expects() {
    let dir = temp_dir("caps");
    runtime().block_on(async {
        let host = Arc::new(RecordingHost::new(&dir.join("state")));
        let served = Served::start(&dir.join("plugins/meshd.sock"), host, None);
        let mode = std::fs::metadata(&served.socket)
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "root only");
        let v = served.ok("/Plugin.Activate", Value::Null).await;
        assert_eq!(v, json!({"Implements": ["NetworkDriver", "IpamDriver"]}));
        let v = served
            .ok("/NetworkDriver.GetCapabilities", Value::Null)
            .await;
        assert_eq!(v["Scope"], "local");
        let v = served.ok("/IpamDriver.GetCapabilities", Value::Null).await;
        assert_eq!(v["RequiresMACAddress"], false);
        let v = served
            .ok("/IpamDriver.GetDefaultAddressSpaces", Value::Null)
            .await;
        assert_eq!(v["LocalDefaultAddressSpace"], "meshd");
        // Notifications dockerd 20.10 sends are acknowledged.
        let ep = json!({"NetworkID": NET, "EndpointID": EP1, "Options": {}});
        for path in [
            "/NetworkDriver.ProgramExternalConnectivity",
            "/NetworkDriver.RevokeExternalConnectivity",
        ] {
            assert_eq!(served.ok(path, ep.clone()).await, json!({}));
        }
        let discovery =
            json!({"DiscoveryType": 1, "DiscoveryData": {"Address": "10.0.0.1", "self": true}});
        assert_eq!(
            served
                .ok("/NetworkDriver.DiscoverNew", discovery.clone())
                .await,
            json!({})
        );
        assert_eq!(
            served.ok("/NetworkDriver.DiscoverDelete", discovery).await,
            json!({})
        );
        assert_eq!(served.counter("docker_plugin_requests"), 8);
        assert_eq!(served.counter("docker_plugin_errors"), 0);
        served.stop().await;
    });
    assert!(
        !dir.join("plugins/meshd.sock").exists(),
        "the socket is removed with the server"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_requests_are_refused_with_a_clear_err_and_counted() {
    let dir = temp_dir("bad");
    runtime().block_on(async {
        let host = Arc::new(RecordingHost::new(&dir.join("state")));
        let served = Served::start(&dir.join("p.sock"), host.clone(), Some(host_network(false)));
        let (status, v) = served.post("/NetworkDriver.Teleport", "{}").await;
        assert_eq!(status, 404);
        assert!(v["Err"].as_str().unwrap().contains("Teleport"), "{v}");
        let (status, v) = served
            .post("/IpamDriver.RequestAddress", "{\"PoolID\": ")
            .await;
        assert_eq!(status, 400);
        assert!(v["Err"].as_str().unwrap().contains("RequestAddress"), "{v}");
        let big = format!("{{\"PoolID\": \"{}\"}}", "x".repeat(MAX_BODY_TEST));
        let (status, v) = served.post("/IpamDriver.ReleasePool", &big).await;
        assert_eq!(status, 400);
        assert!(v["Err"].as_str().unwrap().contains("body"), "{v}");
        assert_eq!(served.counter("docker_plugin_malformed"), 3);
        // Nothing was allocated by any of them.
        assert!(host.store.list().unwrap().is_empty());
        served.stop().await;
    });
    std::fs::remove_dir_all(&dir).unwrap();
}

const MAX_BODY_TEST: usize = crate::wire::docker::MAX_BODY + 1;

#[test]
fn without_a_range_every_allocation_is_refused_until_one_arrives() {
    let dir = temp_dir("norange");
    runtime().block_on(async {
        let host = Arc::new(RecordingHost::new(&dir.join("state")));
        let served = Served::start(&dir.join("p.sock"), host.clone(), None);
        let e = served
            .err(
                "/IpamDriver.RequestPool",
                json!({"AddressSpace": "meshd", "Pool": "", "V6": false}),
            )
            .await;
        assert!(e.starts_with("meshd has no address range yet"), "{e}");
        let e = request_address(&served, "").await.unwrap_err();
        assert!(e.contains("no address range yet"), "{e}");
        assert_eq!(served.counter("docker_plugin_errors"), 2);
        // The daemon learns its range (certificate renewed): the same request now succeeds.
        served.network.send_replace(Some(host_network(false)));
        assert_eq!(request_address(&served, "").await.unwrap(), "10.77.3.2/16");
        served.stop().await;
    });
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn ipam_hands_out_the_subnet_the_gateway_and_addresses_of_this_hosts_range() {
    let dir = temp_dir("ipam");
    runtime().block_on(async {
        let host = Arc::new(RecordingHost::new(&dir.join("state")));
        let served = Served::start(&dir.join("p.sock"), host.clone(), Some(host_network(false)));
        let v = served
            .ok(
                "/IpamDriver.RequestPool",
                json!({"AddressSpace": "meshd", "Pool": "", "SubPool": "", "Options": {}, "V6": false}),
            )
            .await;
        assert_eq!(v["Pool"], "10.77.0.0/16");
        assert_eq!(v["PoolID"], pool_id());
        // The same pool asked for explicitly (`--subnet 10.77.0.0/16`) is the same answer.
        let again = served
            .ok("/IpamDriver.RequestPool", json!({"Pool": "10.77.0.0/16"}))
            .await;
        assert_eq!(again, v);
        // dockerd asks again while holding the pool when the subnet is routed on the host (it
        // is: meshd's bridge). The second driver-chosen request ends that loop with advice.
        let e = served
            .err("/IpamDriver.RequestPool", json!({"Pool": ""}))
            .await;
        assert!(e.contains("--subnet 10.77.0.0/16"), "{e}");
        for _ in 0..2 {
            served
                .ok("/IpamDriver.ReleasePool", json!({"PoolID": pool_id()}))
                .await;
        }
        let chosen = served
            .ok("/IpamDriver.RequestPool", json!({"Pool": ""}))
            .await;
        assert_eq!(chosen, v, "released, the pool can be chosen again");
        let e = served
            .err("/IpamDriver.RequestPool", json!({"Pool": "172.20.0.0/16"}))
            .await;
        assert!(e.contains("172.20.0.0/16") && e.contains("10.77.0.0/16"), "{e}");
        let e = served
            .err(
                "/IpamDriver.RequestPool",
                json!({"Pool": "10.77.0.0/16", "SubPool": "10.77.9.0/24"}),
            )
            .await;
        assert!(e.contains("--ip-range"), "{e}");
        let e = served
            .err("/IpamDriver.RequestPool", json!({"V6": true}))
            .await;
        assert!(e.contains("no IPv6 container subnet"), "{e}");

        // The gateway: the host's, with the subnet's prefix, and never stored.
        let v = served
            .ok(
                "/IpamDriver.RequestAddress",
                json!({"PoolID": pool_id(), "Address": "", "Options": {"RequestAddressType": "com.docker.network.gateway"}}),
            )
            .await;
        assert_eq!(v["Address"], "10.77.3.1/16");
        let e = served
            .err(
                "/IpamDriver.RequestAddress",
                json!({"PoolID": pool_id(), "Address": "10.77.0.1", "Options": {"RequestAddressType": "com.docker.network.gateway"}}),
            )
            .await;
        assert!(e.contains("10.77.3.1"), "{e}");
        assert!(host.store.list().unwrap().is_empty());

        // Containers: lowest free first, a wanted one if free and in this host's range.
        assert_eq!(request_address(&served, "").await.unwrap(), "10.77.3.2/16");
        assert_eq!(request_address(&served, "").await.unwrap(), "10.77.3.3/16");
        assert_eq!(
            request_address(&served, "10.77.3.40").await.unwrap(),
            "10.77.3.40/16"
        );
        let e = request_address(&served, "10.77.3.40").await.unwrap_err();
        assert!(e.contains("already in use"), "{e}");
        let e = request_address(&served, "10.77.4.9").await.unwrap_err();
        assert!(e.contains("another host's range"), "{e}");
        let e = request_address(&served, "192.168.1.9").await.unwrap_err();
        assert!(e.contains("not in the mesh's container subnet"), "{e}");
        let e = served
            .err(
                "/IpamDriver.RequestAddress",
                json!({"PoolID": "meshd:10.99.0.0/16", "Address": ""}),
            )
            .await;
        assert!(e.contains("meshd:10.99.0.0/16") && e.contains("create it again"), "{e}");
        let held: Vec<Ipv4Addr> = host.store.list().unwrap().into_iter().map(|(a, _)| a).collect();
        assert_eq!(
            held,
            ["10.77.3.2", "10.77.3.3", "10.77.3.40"].map(|a| a.parse::<Ipv4Addr>().unwrap())
        );

        // Releases: the address leaves the store; the gateway and a retried release are fine.
        for address in ["10.77.3.3", "10.77.3.3", "10.77.3.1"] {
            served
                .ok(
                    "/IpamDriver.ReleaseAddress",
                    json!({"PoolID": pool_id(), "Address": address}),
                )
                .await;
        }
        assert_eq!(host.store.list().unwrap().len(), 2);
        assert_eq!(request_address(&served, "").await.unwrap(), "10.77.3.3/16");
        served
            .ok("/IpamDriver.ReleasePool", json!({"PoolID": pool_id()}))
            .await;
        served.stop().await;
    });
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_restarted_plugin_never_hands_out_an_address_still_in_use() {
    let dir = temp_dir("restart");
    let state = dir.join("state");
    let rt = runtime();
    let first: Vec<String> = rt.block_on(async {
        let served = Served::start(
            &dir.join("p.sock"),
            Arc::new(RecordingHost::new(&state)),
            Some(host_network(false)),
        );
        let mut got = Vec::new();
        for _ in 0..3 {
            got.push(request_address(&served, "").await.unwrap());
        }
        served.stop().await;
        got
    });
    rt.block_on(async {
        // A new plugin (meshd restarted) on the same state directory, with fresh owners.
        let served = Served::start(
            &dir.join("p.sock"),
            Arc::new(RecordingHost::with_first_random(&state, 1 << 40)),
            Some(host_network(false)),
        );
        let next = request_address(&served, "").await.unwrap();
        assert!(!first.contains(&next), "{next} was still in use: {first:?}");
        assert_eq!(next, "10.77.3.5/16");
        served.stop().await;
    });
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn network_driver_accepts_only_the_mesh_subnet_and_plugs_endpoints_into_the_bridge() {
    let dir = temp_dir("net");
    runtime().block_on(async {
        let host = Arc::new(RecordingHost::new(&dir.join("state")));
        let served = Served::start(&dir.join("p.sock"), host.clone(), Some(host_network(false)));
        let create = |pool: &str, gateway: &str| {
            json!({"NetworkID": NET, "Options": {}, "IPv4Data": [{"AddressSpace": "meshd", "Pool": pool, "Gateway": gateway, "AuxAddresses": null}], "IPv6Data": null})
        };
        served
            .ok(
                "/NetworkDriver.CreateNetwork",
                create("10.77.0.0/16", "10.77.3.1/16"),
            )
            .await;
        let e = served
            .err(
                "/NetworkDriver.CreateNetwork",
                create("172.18.0.0/16", "172.18.0.1/16"),
            )
            .await;
        assert!(e.contains("172.18.0.0/16 is not the mesh's container subnet 10.77.0.0/16"), "{e}");
        let e = served
            .err(
                "/NetworkDriver.CreateNetwork",
                json!({"NetworkID": NET, "IPv4Data": [], "IPv6Data": [{"Pool": "fd00::/64"}]}),
            )
            .await;
        assert!(e.contains("exactly one IPv4 pool"), "{e}");

        // Docker 20.10: the address filled in, the MAC empty; the driver picks the MAC.
        let v = served
            .ok(
                "/NetworkDriver.CreateEndpoint",
                json!({"NetworkID": NET, "EndpointID": EP1, "Options": {}, "Interface": {"Address": "10.77.3.2/16", "AddressIPv6": "", "MacAddress": ""}}),
            )
            .await;
        assert_eq!(v, json!({"Interface": {"MacAddress": "02:6d:0a:4d:03:02"}}));
        // A MAC dockerd chose (`--mac-address`) is kept, and the answer leaves it alone.
        let v = served
            .ok(
                "/NetworkDriver.CreateEndpoint",
                json!({"NetworkID": NET, "EndpointID": EP2, "Interface": {"Address": "10.77.3.3/16", "MacAddress": "02:42:0a:4d:03:03"}}),
            )
            .await;
        assert_eq!(v, json!({}));
        let e = served
            .err(
                "/NetworkDriver.CreateEndpoint",
                json!({"NetworkID": NET, "EndpointID": "e3", "Interface": {"Address": "172.18.0.2/16"}}),
            )
            .await;
        assert!(e.contains("not in the mesh's container subnet"), "{e}");

        let ep1 = json!({"NetworkID": NET, "EndpointID": EP1});
        let v = served
            .ok(
                "/NetworkDriver.Join",
                json!({"NetworkID": NET, "EndpointID": EP1, "SandboxKey": "/var/run/docker/netns/abc", "Options": {}}),
            )
            .await;
        let names = veth_names(&DockerId::parse(EP1).unwrap());
        assert_eq!(
            v,
            json!({"InterfaceName": {"SrcName": names.peer, "DstPrefix": "eth"}, "Gateway": "10.77.3.1"})
        );
        {
            let created = host.created.lock().unwrap();
            let (made, bridge, mtu, mac) = created.last().unwrap();
            assert_eq!((made, bridge.as_str(), *mtu), (&names, "meshbr0", 1400));
            assert_eq!(*mac, [0x02, 0x6d, 10, 77, 3, 2]);
        }
        // A retried Join replaces the pair of the first try.
        served.ok("/NetworkDriver.Join", ep1.clone()).await;
        assert_eq!(host.veths.lock().unwrap().len(), 1);
        let v = served
            .ok("/NetworkDriver.EndpointOperInfo", ep1.clone())
            .await;
        assert_eq!(v["Value"]["MacAddress"], "02:6d:0a:4d:03:02");
        assert_eq!(v["Value"]["HostInterface"], names.host.as_str());
        let v = served
            .ok("/NetworkDriver.Join", json!({"NetworkID": NET, "EndpointID": EP2}))
            .await;
        assert_eq!(v["Gateway"], "10.77.3.1");
        assert_eq!(host.created.lock().unwrap().last().unwrap().3, [0x02, 0x42, 10, 77, 3, 3]);

        served.ok("/NetworkDriver.Leave", ep1.clone()).await;
        assert!(!host.veths.lock().unwrap().contains(&names.host));
        served.ok("/NetworkDriver.DeleteEndpoint", ep1.clone()).await;
        let e = served.err("/NetworkDriver.Join", ep1).await;
        assert!(e.contains("unknown to meshd"), "{e}");
        served
            .ok("/NetworkDriver.DeleteNetwork", json!({"NetworkID": NET}))
            .await;
        served.stop().await;
    });
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn ipv6_comes_from_this_hosts_64_when_the_mesh_has_a_subnet6() {
    let dir = temp_dir("v6");
    runtime().block_on(async {
        let host = Arc::new(RecordingHost::new(&dir.join("state")));
        let served = Served::start(&dir.join("p.sock"), host.clone(), Some(host_network(true)));
        let v = served
            .ok("/IpamDriver.RequestPool", json!({"Pool": "", "V6": true}))
            .await;
        assert_eq!(v["Pool"], "fd77::/48");
        let pool6 = v["PoolID"].as_str().unwrap().to_string();
        let e = served
            .err("/IpamDriver.RequestPool", json!({"Pool": "fd99::/48", "V6": true}))
            .await;
        assert!(e.contains("fd99::/48"), "{e}");
        let v = served
            .ok(
                "/IpamDriver.RequestAddress",
                json!({"PoolID": pool6, "Options": {"RequestAddressType": "com.docker.network.gateway"}}),
            )
            .await;
        assert_eq!(v["Address"], "fd77:0:0:3::1/48");
        let v = served
            .ok("/IpamDriver.RequestAddress", json!({"PoolID": pool6}))
            .await;
        let address = v["Address"].as_str().unwrap();
        let (addr, prefix) = address.split_once('/').unwrap();
        assert_eq!(prefix, "48");
        let range6: crate::core::ranges::Range6 = "fd77:0:0:3::/64".parse().unwrap();
        assert!(range6.is_assignable(addr.parse().unwrap()), "{address}");
        assert!(host.store.list().unwrap().is_empty(), "IPv6 is not stored");

        // An endpoint with both families joins with both gateways.
        served
            .ok(
                "/NetworkDriver.CreateEndpoint",
                json!({"NetworkID": NET, "EndpointID": EP1, "Interface": {"Address": "10.77.3.2/16", "AddressIPv6": address}}),
            )
            .await;
        let v = served
            .ok("/NetworkDriver.Join", json!({"NetworkID": NET, "EndpointID": EP1}))
            .await;
        assert_eq!(v["GatewayIPv6"], "fd77:0:0:3::1");
        served
            .ok(
                "/IpamDriver.ReleaseAddress",
                json!({"PoolID": pool6, "Address": addr}),
            )
            .await;
        let e = served
            .err(
                "/IpamDriver.ReleaseAddress",
                json!({"PoolID": pool6, "Address": "10.77.3.2"}),
            )
            .await;
        assert!(e.contains("family"), "{e}");
        served.stop().await;
    });
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Real links: `SystemHost` creates the pair in a bridge with the derived MAC, and `Leave`
/// deletes it. Root only, inside a network namespace of the test's own thread.
#[test]
fn system_host_plugs_a_real_veth_into_the_bridge_as_root() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true needs root for the veth test"
        );
        eprintln!("skipping: needs root to create links");
        return;
    }
    let dir = temp_dir("system");
    let worker_dir = dir.clone();
    std::thread::spawn(move || {
        // SAFETY: unshare affects only this thread, which ends with the test.
        assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0);
        let ip = |args: &[&str]| -> String {
            let out = std::process::Command::new("ip")
                .args(args)
                .output()
                .unwrap();
            assert!(out.status.success(), "ip {args:?}: {out:?}");
            String::from_utf8(out.stdout).unwrap()
        };
        ip(&["link", "add", "meshbr0", "type", "bridge"]);
        runtime().block_on(async {
            let host = SystemHost::open(&worker_dir.join("state")).unwrap();
            let served = Served::start(&worker_dir.join("p.sock"), host, Some(host_network(false)));
            let address = request_address(&served, "").await.unwrap();
            served
                .ok(
                    "/NetworkDriver.CreateEndpoint",
                    json!({"NetworkID": NET, "EndpointID": EP1, "Interface": {"Address": address}}),
                )
                .await;
            let ep = json!({"NetworkID": NET, "EndpointID": EP1});
            let v = served.ok("/NetworkDriver.Join", ep.clone()).await;
            let names = veth_names(&DockerId::parse(EP1).unwrap());
            assert_eq!(v["InterfaceName"]["SrcName"], names.peer.as_str());
            let peer = ip(&["-o", "link", "show", &names.peer]);
            assert!(
                peer.contains("02:6d:0a:4d:03:02") && peer.contains("mtu 1400"),
                "{peer}"
            );
            let host_end = ip(&["-o", "link", "show", &names.host]);
            assert!(host_end.contains("master meshbr0"), "{host_end}");
            served.ok("/NetworkDriver.Leave", ep.clone()).await;
            assert!(ip(&["-o", "link", "show"]).find(&names.host).is_none());
            served.ok("/NetworkDriver.DeleteEndpoint", ep).await;
            served.stop().await;
        });
    })
    .join()
    .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}
