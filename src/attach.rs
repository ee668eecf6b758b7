//! `meshd attach` / `meshd detach`: put any network namespace (a `ip netns` name or a process's)
//! on the container network by hand, as pipework does for containers of any runtime.
//!
//! Owns the two subcommands' command lines (their values parsed by src/wire/attach.rs), the checks
//! of the request against this host's network (the address must lie in this host's range, given
//! with the subnet's prefix or none, and is reserved in the address store: other members drop
//! frames whose source lies outside the sending host's range) and the messages that say what was
//! done. The plugging itself is src/io/plug.rs, shared with the CNI plugin. Invariants: the owner
//! string (`attach:<name>/<ifname>` or `attach:pid<PID>/<ifname>`) and the host veth name (`ma` +
//! 12 hex digits of its hash) depend only on the arguments, so `detach` with the same
//! `--netns`/`--pid` and `--ifname` finds what `attach` made; argument errors exit 2 before
//! anything is changed.

use std::fs::File;
use std::io;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use crate::cli::CliError;
use crate::config::Config;
use crate::core::ranges::HostNetwork;
use crate::io::addresses::{AddressError, AddressStore};
use crate::io::netlink::Netlink;
use crate::io::plug::{self, PlugError, PlugRequest};
use crate::io::veth::{self, VethNames};
use crate::wire::attach::{self as args, AddressArg, NetnsTarget};
use crate::wire::MacAddr;

/// Prefix of host veth names made by `meshd attach`.
pub const VETH_PREFIX: &str = "ma";

/// `--netns NAME | --pid PID` of attach and detach.
#[derive(clap::Args, Debug)]
#[group(required = true, multiple = false)]
pub struct NetnsArgs {
    /// A namespace `ip netns` knows (a file in /run/netns).
    #[arg(long, value_name = "NAME", value_parser = args::parse_netns_name)]
    netns: Option<String>,
    /// The network namespace of this process.
    #[arg(long, value_name = "PID", value_parser = args::parse_pid)]
    pid: Option<u32>,
}

impl NetnsArgs {
    fn target(self) -> Result<NetnsTarget, CliError> {
        match (self.netns, self.pid) {
            (Some(name), None) => Ok(NetnsTarget::Named(name)),
            (None, Some(pid)) => Ok(NetnsTarget::Pid(pid)),
            _ => Err(CliError::Usage(
                "give exactly one of --netns NAME and --pid PID".into(),
            )),
        }
    }
}

/// The command line of `meshd attach`.
#[derive(clap::Args, Debug)]
pub struct AttachArgs {
    /// This host's meshd config (its daemon must be running and hold a range).
    #[arg(long, value_name = "PATH")]
    config: PathBuf,
    #[command(flatten)]
    target: NetnsArgs,
    /// Address for the interface, of this host's range (ADDRESS or ADDRESS/PREFIX with the
    /// subnet's prefix); reserved in this host's address store.
    #[arg(long, value_name = "CIDR", value_parser = args::parse_address)]
    ip: Option<AddressArg>,
    /// MAC address for the interface (default: the kernel's random one).
    #[arg(long, value_name = "MAC", value_parser = args::parse_mac)]
    mac: Option<[u8; 6]>,
    /// Put the address on an 802.1Q VLAN interface IFNAME.ID instead (no default route).
    #[arg(long, value_name = "ID", value_parser = args::parse_vlan)]
    vlan: Option<u16>,
    /// Interface name inside the namespace.
    #[arg(long, value_name = "NAME", default_value = args::DEFAULT_ATTACH_IFNAME,
          value_parser = args::parse_ifname)]
    ifname: String,
}

/// The command line of `meshd detach`.
#[derive(clap::Args, Debug)]
pub struct DetachArgs {
    /// This host's meshd config.
    #[arg(long, value_name = "PATH")]
    config: PathBuf,
    #[command(flatten)]
    target: NetnsArgs,
    /// Interface name inside the namespace, as given to attach.
    #[arg(long, value_name = "NAME", default_value = args::DEFAULT_ATTACH_IFNAME,
          value_parser = args::parse_ifname)]
    ifname: String,
}

/// `meshd attach`: attaches and prints what was done.
pub fn run_attach(args: AttachArgs) -> Result<(), CliError> {
    let request = AttachRequest {
        target: args.target.target()?,
        ifname: args.ifname,
        ip: args.ip,
        mac: args.mac,
        vlan: args.vlan,
    };
    println!("{}", attach(&args.config, &request)?);
    Ok(())
}

/// `meshd detach`: detaches and prints what was done.
pub fn run_detach(args: DetachArgs) -> Result<(), CliError> {
    let target = args.target.target()?;
    println!("{}", detach(&args.config, &target, &args.ifname)?);
    Ok(())
}

/// What `meshd attach` was asked to do.
#[derive(Debug, Clone)]
pub struct AttachRequest {
    pub target: NetnsTarget,
    pub ifname: String,
    pub ip: Option<AddressArg>,
    pub mac: Option<[u8; 6]>,
    pub vlan: Option<u16>,
}

fn runtime_error(e: impl std::fmt::Display) -> CliError {
    CliError::Runtime(e.to_string())
}

fn host_network(config: &Config) -> Result<HostNetwork, CliError> {
    let status = crate::io::control::query_status(&config.control_socket).map_err(runtime_error)?;
    status.host_network.ok_or_else(|| {
        CliError::Runtime(format!(
            "meshd at {} has no container address range yet: this host needs a range in its \
             certificate (meshd status shows it) and a bridge in [interface]",
            config.control_socket.display()
        ))
    })
}

/// The address asked for, checked against this host's network: inside this host's range (other
/// members drop frames whose source address lies outside the sending host's range, the layer-2
/// guard), with the subnet's prefix or none. `None`: the lowest free address.
fn wanted_address(
    host: &HostNetwork,
    ip: Option<AddressArg>,
) -> Result<Option<Ipv4Addr>, CliError> {
    let Some(ip) = ip else {
        return Ok(None);
    };
    if !host.subnet.contains(ip.address) {
        return Err(CliError::Usage(format!(
            "--ip {} is outside the container subnet {}",
            ip.address, host.subnet
        )));
    }
    if let Some(prefix) = ip.prefix {
        if prefix != host.subnet.prefix() {
            return Err(CliError::Usage(format!(
                "--ip {}/{prefix}: the container network is one segment, {}; use /{} or no \
                 prefix",
                ip.address,
                host.subnet,
                host.subnet.prefix()
            )));
        }
    }
    if !host.range.contains(ip.address) {
        return Err(CliError::Usage(format!(
            "--ip {} is not in this host's range {}: other members drop frames from addresses \
             outside the sending host's range, so attach it on the host that holds {0}'s range",
            ip.address, host.range
        )));
    }
    Ok(Some(ip.address))
}

fn open_netns(target: &NetnsTarget) -> Result<File, CliError> {
    let path = target.path();
    File::open(&path).map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            CliError::Usage(format!(
                "{target} does not exist ({} is missing)",
                path.display()
            ))
        } else {
            CliError::Runtime(format!("cannot open {}: {e}", path.display()))
        }
    })
}

fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(runtime_error)
}

fn open_store(config: &Config) -> Result<AddressStore, CliError> {
    AddressStore::open(&config.state_dir).map_err(|e| {
        CliError::Runtime(format!(
            "opening the address store in {}: {e}",
            config.state_dir.display()
        ))
    })
}

/// Attaches the namespace and returns what to print.
pub fn attach(config_path: &Path, request: &AttachRequest) -> Result<String, CliError> {
    let config = Config::load(config_path)?;
    if let Some(vid) = request.vlan {
        if veth::vlan_ifname(&request.ifname, vid).is_none() {
            return Err(CliError::Usage(format!(
                "--ifname {} with --vlan {vid}: the VLAN interface {}.{vid} would be longer \
                 than {} characters",
                request.ifname,
                request.ifname,
                veth::MAX_IFNAME
            )));
        }
    }
    let netns = open_netns(&request.target)?;
    let host = host_network(&config)?;
    let wanted = wanted_address(&host, request.ip)?;
    let store = open_store(&config)?;
    let owner = request.target.owner(&request.ifname);
    let names = VethNames::for_owner(VETH_PREFIX, &owner);
    let plugged = runtime()?.block_on(async {
        let netlink = Netlink::connect().map_err(runtime_error)?;
        let plug_request = PlugRequest {
            store: &store,
            host: &host,
            owner: &owner,
            names: &names,
            netns: &netns,
            ifname: &request.ifname,
            wanted,
            mac: request.mac,
            vlan: request.vlan,
        };
        plug::plug(&netlink, &plug_request)
            .await
            .map_err(|e| match e {
                PlugError::Address(e @ AddressError::NotAssignable { .. }) => {
                    CliError::Usage(format!("--ip: {e}"))
                }
                other => runtime_error(other),
            })
    })?;
    let mac = plugged
        .inside
        .mac
        .map(|m| MacAddr(m).to_string())
        .unwrap_or_else(|| "none".into());
    let mut addresses = format!("{}/{}", plugged.address, plugged.prefix);
    if let Some((address6, prefix6)) = plugged.address6 {
        addresses.push_str(&format!(" {address6}/{prefix6}"));
    }
    let mut report = format!(
        "attached {}: {} {addresses} mac {mac}, host end {} in bridge {}",
        request.target, plugged.inside_name, names.host, host.bridge
    );
    match (plugged.default_route, request.vlan) {
        (Some(gw), _) => report.push_str(&format!(", default route via {gw}")),
        (None, Some(_)) => report.push_str(", no default route (the gateway is not on the VLAN)"),
        (None, None) => report.push_str(", the namespace's existing default route was kept"),
    }
    Ok(report)
}

/// Detaches what `attach` made for this namespace and interface name; returns what to print.
pub fn detach(config_path: &Path, target: &NetnsTarget, ifname: &str) -> Result<String, CliError> {
    let config = Config::load(config_path)?;
    let store = open_store(&config)?;
    let owner = target.owner(ifname);
    let names = VethNames::for_owner(VETH_PREFIX, &owner);
    let done = runtime()?.block_on(async {
        let netlink = Netlink::connect().map_err(runtime_error)?;
        plug::unplug(&netlink, &store, &owner, &names)
            .await
            .map_err(runtime_error)
    })?;
    if !done.link_deleted && done.released.is_empty() {
        return Ok(format!("nothing was attached as {ifname} in {target}"));
    }
    let released: Vec<String> = done.released.iter().map(|a| a.to_string()).collect();
    Ok(format!(
        "detached {ifname} from {target}: {}, {}",
        if done.link_deleted {
            format!("deleted veth {}", names.host)
        } else {
            format!("veth {} was already gone", names.host)
        },
        if released.is_empty() {
            "no address was reserved".to_string()
        } else {
            format!("released {}", released.join(", "))
        }
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::ranges::{ContainerNetwork, Range4};

    fn host() -> HostNetwork {
        let net = ContainerNetwork::new("10.77.0.0/16".parse().unwrap(), 24, None).unwrap();
        let range: Range4 = "10.77.3.0/24".parse().unwrap();
        HostNetwork::new(&net, range, None, "meshbr0".into(), 1400).unwrap()
    }

    fn arg(s: &str) -> Option<AddressArg> {
        Some(crate::wire::attach::parse_address(s).unwrap())
    }

    fn usage(r: Result<Option<Ipv4Addr>, CliError>) -> String {
        match r {
            Err(CliError::Usage(m)) => m,
            other => panic!("expected a usage error, got {other:?}"),
        }
    }

    #[test]
    fn addresses_are_checked_against_the_hosts_network() {
        let h = host();
        assert_eq!(wanted_address(&h, None).unwrap(), None);
        assert_eq!(
            wanted_address(&h, arg("10.77.3.9/16")).unwrap(),
            Some("10.77.3.9".parse().unwrap())
        );
        assert_eq!(
            wanted_address(&h, arg("10.77.3.9")).unwrap(),
            Some("10.77.3.9".parse().unwrap())
        );
        assert!(
            usage(wanted_address(&h, arg("10.78.3.9"))).contains("outside the container subnet")
        );
        assert!(usage(wanted_address(&h, arg("10.77.3.9/24"))).contains("use /16"));
        assert!(usage(wanted_address(&h, arg("10.77.8.9")))
            .contains("not in this host's range 10.77.3.0/24"));
    }
}
