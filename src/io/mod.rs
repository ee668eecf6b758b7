//! Everything that touches the operating system: the TAP device, the UDP socket, netlink, the
//! control socket, the metrics endpoint, signals and the real clock.
//!
//! `run` sets the host up (TAP, bridge, MTU, addresses), then drives one `Worker`: the single
//! owner of the node state machine, its TAP queue and its UDP socket. The worker feeds batches of
//! frames and datagrams into the sans-IO core with one clock reading per batch, and carries out
//! what the core queued. On SIGINT/SIGTERM the worker stops, the TAP is closed (the kernel removes
//! a non-persistent TAP with its last file descriptor) and the control socket file is removed.

pub mod control;
pub mod invites;
pub mod metrics;
pub mod netlink;
pub mod state;
pub mod udp;
pub mod worker;

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;
use tracing::info;
use tun_rs::{DeviceBuilder, Layer};

use crate::config::Config;
use crate::core::switch::FdbConfig;
use crate::core::{Node, NodeConfig, PeerSpec};
use control::ControlServer;
use netlink::Netlink;
use udp::Udp;
use worker::{StaticInfo, Worker};

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

    let build_tap = |offload: bool| {
        DeviceBuilder::new()
            .name(&iface.name)
            .layer(Layer::L2)
            .mtu(iface.mtu)
            .offload(offload)
            .build_async()
    };
    let (tap, offload) = match build_tap(iface.offload) {
        Ok(tap) => (tap, iface.offload),
        Err(e) if iface.offload => {
            // Offloads are an optimisation: a kernel without them still gets a working node.
            tracing::warn!(error = %e, "TAP offloads unavailable; using a plain TAP (slower)");
            let tap = build_tap(false).map_err(fail(&format!(
                "creating TAP device {} (needs CAP_NET_ADMIN and /dev/net/tun)",
                iface.name
            )))?;
            (tap, false)
        }
        Err(e) => {
            return Err(RunError(format!(
                "creating TAP device {} (needs CAP_NET_ADMIN and /dev/net/tun): {e}",
                iface.name
            )))
        }
    };
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
    let advertise = crate::enroll::advertised_endpoints(&config.advertise, listen);
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
    let node = Node::new(NodeConfig {
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
        },
        max_frame: usize::from(iface.mtu) + ETHERNET_FRAME_OVERHEAD,
        underlay_mtu: underlay_mtu(&iface.name),
        rng_seed: os_seed()?,
        now,
        unix_nanos_at_now,
    });
    info!(
        name = %config.name,
        key = %node.public_key(),
        %listen,
        tap = %iface.name,
        bridge = iface.bridge.as_deref().unwrap_or("-"),
        mtu = iface.mtu,
        offload,
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
    };
    let state = state::StateDir::new(config.state_dir.clone());
    let auto_advertise =
        (config.advertise.is_empty() && listen.ip().is_unspecified()).then_some(listen);
    let result = Worker::new(node, tap, udp, info, offload, state, auto_advertise)
        .run(control_rx)
        .await;
    control_task.abort();
    if let Some(t) = metrics_task {
        t.abort();
    }
    // Let the aborted tasks drop (removing the control socket file) before returning.
    tokio::task::yield_now().await;
    info!("meshd stopped");
    result
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
