//! `meshd-cni`: the CNI plugin that puts containers of podman, containerd, CRI-O or kubelet on
//! the meshd container network.
//!
//! Owns the plugin's commands: `ADD` (ask the daemon for this host's range, reserve an address
//! and its IPv6 twin, plug a veth pair into the bridge, configure the container end), `DEL`
//! (unplug, release), `CHECK` (the interface is there as `ADD` left it, and the daemon still holds
//! that range) and `VERSION`. Parsing is src/wire/cni.rs; allocation and plugging are src/io/plug.rs, shared with
//! `meshd attach`. Invariants: stdout carries exactly one JSON document (a result, an error or the
//! version answer) or nothing (`DEL`, `CHECK`); a failed `ADD` leaves nothing behind that it made;
//! `DEL` succeeds whatever is already gone; `ADD` never blocks longer than the configured wait
//! plus the netlink work. The owner string is `cni:<container id>/<ifname>` and the host veth is
//! named from it (`mc` + 12 hex digits), so `DEL` finds both without any other record.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::core::ranges::HostNetwork;
use crate::io::addresses::AddressStore;
use crate::io::netlink::Netlink;
use crate::io::plug::{self, PlugError, PlugRequest};
use crate::io::veth::{self, VethNames};
use crate::wire::cni::{
    parse_request, version_json, AttachedIp, CniCall, CniCommand, CniError, CniRequest, CniResult,
    CniVersion, ErrorCode, ResultInterface, MAX_CONFIG_LEN,
};
use crate::wire::MacAddr;

/// The name the plugin binary has (and `meshd` answers to when called by it).
pub const PLUGIN_NAME: &str = "meshd-cni";
/// Prefix of host veth names made by this plugin.
pub const VETH_PREFIX: &str = "mc";
/// How often `ADD` asks the daemon again while waiting for it or its range.
const POLL_INTERVAL: Duration = Duration::from_millis(250);

/// Whether this process was started as `meshd-cni` (a link or copy of `meshd` by that name).
pub fn invoked_as_plugin() -> bool {
    std::env::args_os()
        .next()
        .as_deref()
        .map(Path::new)
        .and_then(Path::file_name)
        .is_some_and(|name| name == PLUGIN_NAME)
}

/// The plugin's entry point: reads the call, answers on stdout, exits 0 or 1.
pub fn main() -> ExitCode {
    let mut stdin = Vec::new();
    let read = io::stdin()
        .lock()
        .take(MAX_CONFIG_LEN as u64 + 1)
        .read_to_end(&mut stdin);
    let (output, ok) = match read {
        Err(e) => (
            Some(
                CniError::new(ErrorCode::IoFailure, format!("reading stdin: {e}"))
                    .to_json(CniVersion::LATEST),
            ),
            false,
        ),
        Ok(_) => match parse_request(&|key| std::env::var_os(key), &stdin) {
            Err(failure) => (Some(failure.error.to_json(failure.version)), false),
            Ok(request) => {
                let version = match &request {
                    CniRequest::Version(v) => *v,
                    CniRequest::Call(call) => call.conf.version,
                };
                match handle(request) {
                    Ok(output) => (output, true),
                    Err(e) => (Some(e.to_json(version)), false),
                }
            }
        },
    };
    if let Some(text) = output {
        let mut out = io::stdout().lock();
        let _ = writeln!(out, "{text}");
        let _ = out.flush();
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Carries out one parsed request; `Ok(Some(json))` is printed, `Ok(None)` prints nothing.
pub fn handle(request: CniRequest) -> Result<Option<String>, CniError> {
    let call = match request {
        CniRequest::Version(version) => return Ok(Some(version_json(version))),
        CniRequest::Call(call) => call,
    };
    let config = Config::load(&call.conf.meshd_config).map_err(|e| {
        CniError::new(
            ErrorCode::InvalidNetworkConfig,
            format!("meshd_config {}: {e}", call.conf.meshd_config.display()),
        )
    })?;
    match call.command {
        CniCommand::Add => add(&call, &config).map(Some),
        CniCommand::Del => del(&call, &config).map(|()| None),
        CniCommand::Check => check(&call, &config).map(|()| None),
    }
}

/// Asks the daemon behind `socket` for this host's network until it has one or `wait` passed.
pub fn wait_for_host_network(socket: &Path, wait: Duration) -> Result<HostNetwork, CniError> {
    let deadline = Instant::now() + wait;
    loop {
        let failure = match crate::io::control::query_status(socket) {
            Ok(status) => match status.host_network {
                Some(host) => return Ok(host),
                None => format!(
                    "meshd at {} has no container address range yet (waited {} s): this host \
                     needs a range in its certificate (meshd status shows it) and a bridge in \
                     [interface]",
                    socket.display(),
                    wait.as_secs()
                ),
            },
            Err(e) => format!(
                "meshd daemon not reachable at {} (waited {} s): {e}",
                socket.display(),
                wait.as_secs()
            ),
        };
        let now = Instant::now();
        if now >= deadline {
            return Err(CniError::new(ErrorCode::TryAgainLater, failure));
        }
        std::thread::sleep(POLL_INTERVAL.min(deadline - now));
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, CniError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CniError::new(ErrorCode::IoFailure, format!("starting the runtime: {e}")))
}

fn open_store(config: &Config) -> Result<AddressStore, CniError> {
    AddressStore::open(&config.state_dir).map_err(|e| {
        CniError::new(
            ErrorCode::IoFailure,
            format!(
                "opening the address store in {}: {e}",
                config.state_dir.display()
            ),
        )
    })
}

fn open_netns(path: &Path) -> Result<File, CniError> {
    File::open(path).map_err(|e| {
        let code = if e.kind() == io::ErrorKind::NotFound {
            ErrorCode::UnknownContainer
        } else {
            ErrorCode::IoFailure
        };
        CniError::new(
            code,
            format!("cannot open network namespace {}: {e}", path.display()),
        )
    })
}

fn link_error(e: io::Error) -> CniError {
    CniError::new(ErrorCode::InterfaceFailure, e.to_string())
}

fn netns_of(call: &CniCall) -> Result<&Path, CniError> {
    call.netns
        .as_deref()
        .ok_or_else(|| CniError::new(ErrorCode::InvalidEnvironment, "CNI_NETNS is not set"))
}

fn add(call: &CniCall, config: &Config) -> Result<String, CniError> {
    let host = wait_for_host_network(&config.control_socket, call.conf.wait)?;
    let netns_path = netns_of(call)?;
    let netns = open_netns(netns_path)?;
    let store = open_store(config)?;
    let owner = call.owner();
    let names = VethNames::for_owner(VETH_PREFIX, &owner);
    let plugged = runtime()?.block_on(async {
        let netlink = Netlink::connect().map_err(link_error)?;
        let request = PlugRequest {
            store: &store,
            host: &host,
            owner: &owner,
            names: &names,
            netns: &netns,
            ifname: &call.ifname,
            wanted: None,
            mac: None,
            vlan: None,
        };
        plug::plug(&netlink, &request).await.map_err(|e| match e {
            PlugError::Address(e) => CniError::new(ErrorCode::AddressFailure, e.to_string()),
            PlugError::Link(e) => link_error(e),
        })
    })?;
    let mac = |m: Option<[u8; 6]>| m.map(|m| MacAddr(m).to_string()).unwrap_or_default();
    let result = CniResult::attachment(
        call.conf.version,
        ResultInterface {
            name: names.host.clone(),
            mac: mac(plugged.host_mac),
            sandbox: None,
        },
        ResultInterface {
            name: call.ifname.clone(),
            mac: mac(plugged.inside.mac),
            sandbox: Some(netns_path.display().to_string()),
        },
        &attached_ips(&host, &plugged),
    );
    serde_json::to_string(&result)
        .map_err(|e| CniError::new(ErrorCode::IoFailure, format!("encoding the result: {e}")))
}

/// The addresses of an attachment as the result lists them: IPv4, and IPv6 when the host has a /64.
fn attached_ips(host: &HostNetwork, plugged: &plug::Plugged) -> Vec<AttachedIp> {
    let mut ips = vec![AttachedIp {
        address: plugged.address.into(),
        prefix: plugged.prefix,
        gateway: host.gateway.into(),
        default_route: plugged.default_route.is_some(),
    }];
    if let (Some((address, prefix)), Some(gateway)) = (plugged.address6, host.gateway6) {
        ips.push(AttachedIp {
            address: address.into(),
            prefix,
            gateway: gateway.into(),
            default_route: plugged.default_route6.is_some(),
        });
    }
    ips
}

fn del(call: &CniCall, config: &Config) -> Result<(), CniError> {
    let store = open_store(config)?;
    let owner = call.owner();
    let names = VethNames::for_owner(VETH_PREFIX, &owner);
    runtime()?.block_on(async {
        let netlink = Netlink::connect().map_err(link_error)?;
        plug::unplug(&netlink, &store, &owner, &names)
            .await
            .map_err(|e| match e {
                PlugError::Address(e) => CniError::new(ErrorCode::IoFailure, e.to_string()),
                PlugError::Link(e) => link_error(e),
            })
    })?;
    Ok(())
}

fn check_failed(msg: String) -> CniError {
    CniError::new(ErrorCode::CheckFailed, msg)
}

fn check(call: &CniCall, config: &Config) -> Result<(), CniError> {
    let owner = call.owner();
    let store = open_store(config)?;
    let held = store
        .lookup_owner(&owner)
        .map_err(|e| CniError::new(ErrorCode::IoFailure, e.to_string()))?;
    let host = wait_for_host_network(&config.control_socket, Duration::ZERO)?;
    let Some(&address) = held.iter().find(|a| host.range.contains(**a)) else {
        return Err(check_failed(if held.is_empty() {
            format!("no address is reserved for {owner}")
        } else {
            format!(
                "{owner} holds {held:?}, outside this host's range {} now",
                host.range
            )
        }));
    };
    if let Some(prev) = &call.conf.prev_ips {
        if !prev.iter().any(|(a, _)| *a == address) {
            return Err(check_failed(format!(
                "prevResult does not list {address}, the address reserved for {owner}"
            )));
        }
    }
    let netns = open_netns(netns_of(call)?)?;
    let names = VethNames::for_owner(VETH_PREFIX, &owner);
    let (inside, host_end) = runtime()?.block_on(async {
        let netlink = Netlink::connect().map_err(link_error)?;
        let inside = veth::inspect_in_netns(&netns, &call.ifname)
            .await
            .map_err(link_error)?;
        let host_end = veth::inspect_link(&netlink, &names.host)
            .await
            .map_err(link_error)?;
        Ok::<_, CniError>((inside, host_end))
    })?;
    let Some(inside) = inside else {
        return Err(check_failed(format!(
            "{} is missing from the container's namespace",
            call.ifname
        )));
    };
    let wanted = (address, host.subnet.prefix());
    if !inside.addresses.contains(&wanted) {
        return Err(check_failed(format!(
            "{} has {:?}, not {}/{}",
            call.ifname, inside.addresses, wanted.0, wanted.1
        )));
    }
    if let Some(wanted6) = plug::ipv6_for(&host, address) {
        if !inside.addresses6.contains(&wanted6) {
            return Err(check_failed(format!(
                "{} lacks its IPv6 address {}/{}",
                call.ifname, wanted6.0, wanted6.1
            )));
        }
    }
    if inside.mtu != Some(u32::from(host.mtu)) {
        return Err(check_failed(format!(
            "{} has MTU {:?}, not the mesh's {}",
            call.ifname, inside.mtu, host.mtu
        )));
    }
    if host_end.is_none() {
        return Err(check_failed(format!(
            "the host end {} of {}'s veth pair is missing",
            names.host, call.ifname
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::ranges::ContainerNetwork;
    use crate::io::control::{ControlRequest, ControlServer};
    use crate::status::NodeStatus;

    fn host_network() -> HostNetwork {
        let net = ContainerNetwork::new("10.77.0.0/16".parse().unwrap(), 24, None).unwrap();
        HostNetwork::new(
            &net,
            "10.77.3.0/24".parse().unwrap(),
            None,
            "brm".into(),
            1400,
        )
        .unwrap()
    }

    /// A daemon that has no range for its first `without` answers, then has one (and stops).
    fn serve_status(socket: &Path, without: usize) -> std::thread::JoinHandle<()> {
        let socket = socket.to_path_buf();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let handle = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let server = ControlServer::bind(&socket, None).unwrap();
                let (tx, mut rx) = tokio::sync::mpsc::channel(4);
                let serve = tokio::spawn(server.serve(tx));
                ready_tx.send(()).unwrap();
                let mut answered = 0;
                // Ends once the range was given, or when no client asked for a second.
                while let Ok(Some(ControlRequest::Status(reply))) =
                    tokio::time::timeout(Duration::from_secs(1), rx.recv()).await
                {
                    let mut status = NodeStatus::sample();
                    status.host_network = (answered >= without).then(host_network);
                    answered += 1;
                    let done = status.host_network.is_some();
                    let _ = reply.send(status);
                    if done {
                        break;
                    }
                }
                // Let the last answer leave before the server is dropped.
                tokio::time::sleep(Duration::from_millis(100)).await;
                serve.abort();
            });
        });
        ready_rx.recv().unwrap();
        handle
    }

    #[test]
    fn add_waits_for_the_range_and_says_which_wait_ran_out() {
        let dir = std::env::temp_dir().join(format!("meshd-cni-wait-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("meshd.sock");

        let unreachable = wait_for_host_network(&socket, Duration::ZERO).unwrap_err();
        assert_eq!(unreachable.code, ErrorCode::TryAgainLater);
        assert!(
            unreachable.msg.contains("not reachable"),
            "{}",
            unreachable.msg
        );

        // No range for the first two answers: a long enough wait sees it arrive.
        let server = serve_status(&socket, 2);
        let started = Instant::now();
        let host = wait_for_host_network(&socket, Duration::from_secs(10)).unwrap();
        assert_eq!(host, host_network());
        assert!(
            started.elapsed() >= 2 * POLL_INTERVAL,
            "{:?}",
            started.elapsed()
        );
        server.join().unwrap();

        // A daemon that never gets a range: the wait ends in "no range yet", not "unreachable".
        let server = serve_status(&socket, usize::MAX);
        let no_range = wait_for_host_network(&socket, Duration::from_millis(600)).unwrap_err();
        assert_eq!(no_range.code, ErrorCode::TryAgainLater);
        assert!(
            no_range.msg.contains("no container address range"),
            "{}",
            no_range.msg
        );
        server.join().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
