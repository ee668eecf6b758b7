//! Everything that touches the operating system: the TAP device, the UDP socket, netlink, the
//! control socket, the metrics endpoint, signals and the real clock.
//!
//! `run` sets the host up (TAP, bridge, MTU, addresses), then starts the data-path `Worker`s: one
//! per CPU by default (`workers` in the config), each with its own queue of a multi-queue TAP and
//! its own UDP socket on the shared port (SO_REUSEPORT, steered by lane), all sharing the node
//! state machine behind the data-path lock (src/io/node_lock.rs, src/io/worker.rs). Workers feed
//! batches of frames and datagrams into the sans-IO core with one clock reading per batch, and
//! carry out what the core queued. Worker 0 runs on this thread beside the `Duties`
//! (src/io/duties.rs): signals, the control socket, rescans and state-directory writes, none of
//! them under the data-path lock. On SIGINT/SIGTERM the duties stop, the process ends with every
//! worker, the TAP is closed (the kernel removes a non-persistent TAP with its last file
//! descriptor) and the control socket file is removed. `join` (src/io/join.rs) runs `meshd join`'s
//! exchange with the inviter; `host` reads the host's addresses. With `docker_plugin` set, the
//! Docker network and IPAM driver (src/io/docker/) is served on its socket beside the control
//! socket, fed this host's network by `containers`, and its socket file removed the same way.

pub mod addresses;
pub mod containers;
pub mod control;
pub mod docker;
pub mod duties;
pub mod host;
pub mod invites;
pub mod join;
pub mod metrics;
pub mod netlink;
pub mod node_lock;
pub mod plug;
pub mod state;
pub mod udp;
pub mod veth;
pub mod wait;
pub mod worker;

use crate::core::cipher::CipherPolicy;
use meshd_crypto::Cipher;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;
use tracing::info;
use tun_rs::{DeviceBuilder, Layer, SyncDevice};

use crate::config::{Config, MAX_WORKERS};
use crate::core::switch::FdbConfig;
use crate::core::{Node, NodeConfig, PeerSpec};
use control::ControlServer;
use duties::{Duties, StaticInfo};
use netlink::Netlink;
use node_lock::NodeLock;
use udp::Udp;
use worker::{IoCounters, Worker};

/// Bytes an Ethernet frame adds to the TAP MTU: header (14) plus one 802.1Q tag (4).
pub const ETHERNET_FRAME_OVERHEAD: usize = 18;

/// A failure while running the daemon; the message is what the operator reads.
#[derive(Debug)]
pub struct RunError(pub String);

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RunError {}

fn fail(context: &str) -> impl FnOnce(std::io::Error) -> RunError + '_ {
    move |e| RunError(format!("{context}: {e}"))
}

/// Nanoseconds since the Unix epoch, by the system clock.
pub fn unix_now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Seconds since the Unix epoch by the system clock (0 if the clock is before it).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Seeds the core's random generator from the OS.
pub fn os_seed() -> Result<[u8; 32], RunError> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| RunError(format!("reading OS randomness: {e}")))?;
    Ok(seed)
}

/// Runs the node in the foreground until SIGINT or SIGTERM.
pub fn run(config: Config) -> Result<(), RunError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(fail("starting the runtime"))?;
    runtime.block_on(run_async(config))
}

async fn run_async(config: Config) -> Result<(), RunError> {
    let secret = config
        .load_private_key()
        .map_err(|e| RunError(e.to_string()))?;
    let certificate = config
        .load_certificate(&secret.public_key())
        .map_err(|e| RunError(e.to_string()))?;
    let network_secret = config
        .load_network_secret()
        .map_err(|e| RunError(e.to_string()))?;
    let iface = &config.interface;
    let netlink = Netlink::connect().map_err(fail("opening netlink"))?;

    let (queues, offload) = open_tap_queues(
        &iface.name,
        iface.mtu,
        iface.offload,
        config.workers.unwrap_or_else(default_workers),
    )?;
    let workers = queues.len();
    let tap_index = netlink
        .link_index(&iface.name)
        .await
        .map_err(fail("finding the TAP device"))?
        .ok_or_else(|| RunError(format!("TAP device {} vanished", iface.name)))?;
    let bridge_index = match &iface.bridge {
        None => None,
        Some(bridge) => Some(
            match netlink
                .link_index(bridge)
                .await
                .map_err(fail("finding the bridge"))?
            {
                Some(index) => {
                    netlink
                        .set_up(index)
                        .await
                        .map_err(fail("bringing the bridge up"))?;
                    index
                }
                None => {
                    info!(%bridge, "bridge does not exist; creating it");
                    netlink
                        .create_bridge(bridge)
                        .await
                        .map_err(fail("creating the bridge"))?
                }
            },
        ),
    };
    netlink
        .configure_link(tap_index, iface.mtu, bridge_index)
        .await
        .map_err(fail("configuring the TAP device"))?;
    if let Some(cidr) = iface.address {
        netlink
            .add_address(tap_index, cidr)
            .await
            .map_err(fail("adding the interface address"))?;
    }

    let udp = Udp::bind(config.listen).map_err(fail(&format!("binding UDP {}", config.listen)))?;
    let listen = udp
        .local_addr()
        .map_err(fail("reading the bound address"))?;
    let mut queues = queues.into_iter();
    let tap = queues.next().expect("at least one TAP queue");
    let control = ControlServer::bind(&config.control_socket, config.control_group.as_deref())
        .map_err(fail(&format!(
            "opening control socket {}",
            config.control_socket.display()
        )))?;

    let now = Instant::now();
    let unix_nanos_at_now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let advertise = host::advertised_endpoints(&config.advertise, listen);
    // Configured bootstrap members first, then the members this node last had sessions with, so
    // a restart rejoins even when the configured ones are gone.
    let mut peers: Vec<PeerSpec> = config
        .peers
        .iter()
        .map(|p| PeerSpec {
            name: p.name.clone(),
            public_key: p.public_key,
            endpoint: p.endpoint,
        })
        .collect();
    for remembered in state::load_remembered_members(&config.state_dir) {
        if remembered.public_key != secret.public_key()
            && !peers.iter().any(|p| p.public_key == remembered.public_key)
        {
            peers.push(remembered);
        }
    }
    // CPU features are the machine's, so the io layer reads them; the core only gets the policy.
    let aes_hardware = Cipher::aes_hardware();
    let ciphers = CipherPolicy::new(config.cipher, aes_hardware);
    let cipher_order: Vec<&str> = ciphers.accepted().map(|c| c.as_str()).collect();
    let mut node = Node::new(NodeConfig {
        ciphers,
        secret,
        network_secret,
        certificate_lifetime: config.network.certificate_lifetime,
        advertise,
        revocations: state::load_revocations(&config.state_dir),
        network: config.network.id,
        certificate,
        peers,
        fdb: FdbConfig {
            max_entries: config.switch.fdb_max_entries,
            ageing: config.switch.fdb_ageing,
            drop_router_advertisements: config.switch.drop_router_advertisements,
        },
        max_frame: usize::from(iface.mtu) + ETHERNET_FRAME_OVERHEAD,
        underlay_mtu: underlay_mtu(&iface.name),
        rng_seed: os_seed()?,
        now,
        unix_nanos_at_now,
    });
    // The workers seal outside the node's lock, each draining its own lane (src/io/worker.rs).
    node.set_deferred_sealing(true);
    node.set_lanes(u8::try_from(workers).unwrap_or(u8::MAX));
    info!(
        name = %config.name,
        key = %node.public_key(),
        %listen,
        tap = %iface.name,
        bridge = iface.bridge.as_deref().unwrap_or("-"),
        mtu = iface.mtu,
        offload,
        workers,
        aes_hardware,
        ciphers = ?cipher_order,
        peers = config.peers.len(),
        "meshd started"
    );

    let (control_tx, control_rx) = mpsc::channel(16);
    let control_task = tokio::spawn(control.serve(control_tx.clone()));
    let metrics_task = config.metrics_listen.map(|addr| {
        let tx = control_tx.clone();
        tokio::spawn(async move {
            if let Err(e) = metrics::serve(addr, tx).await {
                tracing::error!(%addr, error = %e, "metrics endpoint failed");
            }
        })
    });
    drop(control_tx);

    let info = StaticInfo {
        name: config.name.clone(),
        listen: listen.to_string(),
        interface: crate::status::InterfaceStatus {
            name: iface.name.clone(),
            bridge: iface.bridge.clone(),
            mtu: iface.mtu,
            offload,
        },
        started: now,
        workers,
    };
    let state = Arc::new(Mutex::new(state::StateDir::new(config.state_dir.clone())));
    let auto_advertise =
        (config.advertise.is_empty() && listen.ip().is_unspecified()).then_some(listen);
    let node = Arc::new(NodeLock::new(node));
    let io_counters = Arc::new(IoCounters::default());
    let (failures_tx, failures) = mpsc::unbounded_channel();
    let shared = (node.clone(), state.clone());
    for (lane, queue) in (1..).zip(queues) {
        start_worker(
            lane,
            queue,
            WorkerSocket::Bind(listen),
            offload,
            shared.clone(),
            io_counters.clone(),
            failures_tx.clone(),
        )?;
    }
    if workers > 1 {
        // Every worker's socket has joined the port's group by now: steer datagrams by lane.
        udp.steer_by_lane(workers as u32)
            .map_err(fail("steering the UDP sockets by lane"))?;
    }
    let wake = start_worker(
        0,
        tap,
        WorkerSocket::Bound(udp),
        offload,
        shared,
        io_counters.clone(),
        failures_tx,
    )?;
    let (containers, host_network) = containers::ContainerHost::new(
        netlink,
        iface.bridge.clone().zip(bridge_index),
        iface.mtu,
        Some(config.subnet_env.clone()),
    );
    let docker_task = if config.docker.enabled {
        let socket = &config.docker.socket;
        let server = docker::server::PluginServer::bind(socket).map_err(fail(&format!(
            "opening the Docker plugin socket {}",
            socket.display()
        )))?;
        let host = docker::server::SystemHost::open(&config.state_dir)
            .map_err(fail("opening the container address store"))?;
        let plugin = docker::Plugin::new(host, host_network, io_counters.docker.clone());
        info!(socket = %socket.display(), "serving the Docker network and IPAM plugin");
        Some(tokio::spawn(server.serve(Arc::new(plugin))))
    } else {
        None
    };
    let duties = Duties {
        containers,
        node: node.clone(),
        state: state.clone(),
        io: io_counters.clone(),
        wake: wake.clone(),
        info,
        control: control_rx,
        auto_advertise,
        failures,
    };
    // The duties end the daemon: on a signal, or when a worker reports that it failed.
    let result = duties.run().await;
    control_task.abort();
    if let Some(t) = metrics_task {
        t.abort();
    }
    if let Some(t) = docker_task {
        t.abort();
    }
    // Let the aborted tasks drop (removing the control socket file) before returning.
    tokio::task::yield_now().await;
    info!("meshd stopped");
    result
}

/// One worker per CPU this process may run on, up to [`MAX_WORKERS`].
fn default_workers() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(MAX_WORKERS)
}

/// Opens the TAP with `workers` queues (multi-queue when more than one), with offloads when
/// asked. Both are optimisations: a kernel without them still gets a working node, with one
/// queue or a plain TAP, and a warning. Returns the queues and whether offloads are on.
fn open_tap_queues(
    name: &str,
    mtu: u16,
    offload: bool,
    workers: usize,
) -> Result<(Vec<SyncDevice>, bool), RunError> {
    let build = |offload: bool, multi_queue: bool| {
        DeviceBuilder::new()
            .name(name)
            .layer(Layer::L2)
            .mtu(mtu)
            .offload(offload)
            .with(|b| {
                b.multi_queue(multi_queue);
            })
            .build_sync()
    };
    let mut attempts = vec![(offload, workers > 1)];
    if workers > 1 {
        attempts.push((offload, false));
    }
    if offload {
        attempts.push((false, false));
    }
    let mut last_error = None;
    for (with_offload, multi_queue) in attempts {
        match build(with_offload, multi_queue) {
            Ok(first) => {
                if with_offload != offload {
                    tracing::warn!(error = ?last_error, "TAP offloads unavailable; using a plain TAP (slower)");
                } else if workers > 1 && !multi_queue {
                    tracing::warn!(error = ?last_error, "multi-queue TAP unavailable; running one worker");
                }
                let mut queues = Vec::with_capacity(workers);
                let wanted = if multi_queue { workers } else { 1 };
                while queues.len() + 1 < wanted {
                    match first.try_clone() {
                        Ok(queue) => queues.push(queue),
                        Err(e) => {
                            tracing::warn!(error = %e, queues = queues.len() + 1, "cannot open more TAP queues; running fewer workers");
                            break;
                        }
                    }
                }
                queues.insert(0, first);
                return Ok((queues, with_offload));
            }
            Err(e) => last_error = Some(e),
        }
    }
    Err(RunError(format!(
        "creating TAP device {name} (needs CAP_NET_ADMIN and /dev/net/tun): {}",
        last_error.map_or_else(|| "unknown error".to_string(), |e| e.to_string())
    )))
}

/// The socket a worker is started with: worker 0's was bound first (it fixes the port), the
/// others bind to the same address and port in their own thread (SO_REUSEPORT).
enum WorkerSocket {
    Bound(Udp),
    Bind(std::net::SocketAddr),
}

/// Starts data-path worker `lane` on a thread of its own, with its TAP queue and a UDP socket on
/// the port (SO_REUSEPORT). Returns once the socket is bound and the worker built, with the
/// worker's waker, so the caller can steer the port's group and wake the worker; a worker that
/// fails later reports on `failures`, which stops the daemon.
fn start_worker(
    lane: u8,
    queue: SyncDevice,
    socket: WorkerSocket,
    offload: bool,
    (node, state): (Arc<NodeLock>, Arc<Mutex<state::StateDir>>),
    io_counters: Arc<IoCounters>,
    failures: mpsc::UnboundedSender<RunError>,
) -> Result<Arc<wait::Waker>, RunError> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name(format!("meshd-worker-{lane}"))
        .spawn(move || {
            let udp = match socket {
                WorkerSocket::Bound(udp) => Ok(udp),
                WorkerSocket::Bind(listen) => Udp::bind(listen)
                    .map_err(fail(&format!("binding UDP {listen} for worker {lane}"))),
            };
            let worker = udp.and_then(|udp| {
                Worker::new(lane, node, state, io_counters, queue, udp, offload)
                    .map_err(fail(&format!("setting up worker {lane}")))
            });
            let worker = match worker {
                Ok(worker) => {
                    let _ = ready_tx.send(Ok(worker.waker()));
                    worker
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            if let Err(e) = worker.run() {
                let _ = failures.send(RunError(format!("worker {lane}: {e}")));
            }
        })
        .map_err(fail("starting a worker thread"))?;
    ready_rx
        .recv()
        .map_err(|_| RunError(format!("worker {lane} stopped while starting")))?
}

/// The largest MTU among the host's links other than loopback and meshd's own TAP: the ceiling of
/// every path MTU search (probes find the real value per peer; a jumbo underlay is used when the
/// path carries it). Falls back to Ethernet's 1500 when sysfs cannot be read.
fn underlay_mtu(tap: &str) -> usize {
    let Ok(links) = std::fs::read_dir("/sys/class/net") else {
        return crate::core::node::DEFAULT_UNDERLAY_MTU;
    };
    links
        .flatten()
        .filter(|link| {
            let name = link.file_name();
            name != "lo" && name.to_str() != Some(tap)
        })
        .filter_map(|link| std::fs::read_to_string(link.path().join("mtu")).ok())
        .filter_map(|mtu| mtu.trim().parse::<usize>().ok())
        .max()
        .unwrap_or(crate::core::node::DEFAULT_UNDERLAY_MTU)
}
