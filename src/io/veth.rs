//! Plugging a container (a network namespace) into the meshd bridge with a veth pair.
//!
//! Owns the netlink side of container networking shared by the Docker plugin, the CNI plugin and
//! `meshd attach`: naming the pair ([`VethNames`]), creating it with its host end in the bridge
//! ([`create_in_bridge`]), moving the peer into a namespace and configuring it there
//! ([`configure_peer_in_netns`]), looking at an interface inside a namespace ([`inspect_in_netns`])
//! and deleting the pair ([`delete`]).
//!
//! Invariants: host-end names are derived from the owner string alone (`VethNames::for_owner`), so
//! whoever deletes needs only the owner, never a stored name; deleting either end of a veth pair
//! removes both, so [`delete`] of the host end is the whole teardown and [`plug`] undoes a half-made
//! pair that way. Work inside another namespace runs on a dedicated thread that enters it with
//! `setns` and ends with the job (a netlink socket belongs to the namespace it was opened in, so
//! the thread opens its own); no thread that enters a namespace is ever reused.

use std::fs::File;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;

use futures::TryStreamExt;
use rtnetlink::packet_route::address::{AddressAttribute, AddressFlags};
use rtnetlink::packet_route::link::{LinkAttribute, LinkMessage};
use rtnetlink::packet_route::route::RouteMessage;
use rtnetlink::{LinkUnspec, LinkVeth, LinkVlan, RouteMessageBuilder};

use super::netlink::Netlink;

/// Longest Linux interface name (IFNAMSIZ less the NUL).
pub const MAX_IFNAME: usize = 15;

/// A netlink error as an `io::Error` that keeps the errno's kind and names what was being done.
fn nl_error(context: &str, e: rtnetlink::Error) -> io::Error {
    match e {
        rtnetlink::Error::NetlinkError(msg) if msg.raw_code() < 0 => {
            let os = io::Error::from_raw_os_error(-msg.raw_code());
            io::Error::new(os.kind(), format!("{context}: {os}"))
        }
        other => io::Error::other(format!("{context}: {other}")),
    }
}

fn errno_of(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(msg) => Some(-msg.raw_code()),
        _ => None,
    }
}

/// The names of one owner's veth pair on the host: `<prefix><12 hex>` for the host end and the
/// same with a trailing `p` for the peer until it is renamed inside the namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VethNames {
    pub host: String,
    pub peer: String,
}

impl VethNames {
    /// Names from a two-character `prefix` (`mc` for CNI, `ma` for attach, ...) and a hash of
    /// `owner`: the same owner always gives the same names, different owners practically never.
    pub fn for_owner(prefix: &str, owner: &str) -> VethNames {
        let digest = ring::digest::digest(&ring::digest::SHA256, owner.as_bytes());
        let hex: String = digest.as_ref()[..6]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let host = format!("{prefix}{hex}");
        debug_assert!(host.len() < MAX_IFNAME, "prefix too long: {prefix}");
        VethNames {
            peer: format!("{host}p"),
            host,
        }
    }
}

/// How the namespace end is set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerSetup {
    /// Its name inside the namespace (`eth0`, `CNI_IFNAME`, ...).
    pub ifname: String,
    pub address: Ipv4Addr,
    /// The subnet's prefix length: the whole container network is one L2 segment.
    pub prefix: u8,
    /// Default route via this address, if any.
    pub gateway: Option<Ipv4Addr>,
    pub mtu: u16,
    /// An 802.1Q VLAN: the veth end named `ifname` stays unaddressed and a VLAN interface
    /// [`vlan_ifname`] on it carries the address.
    pub vlan: Option<u16>,
    /// An IPv6 address as well, when the host has an IPv6 range.
    pub ipv6: Option<Ipv6Setup>,
}

/// The IPv6 side of a [`PeerSetup`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv6Setup {
    pub address: Ipv6Addr,
    /// The IPv6 subnet's prefix length (one segment, as for IPv4).
    pub prefix: u8,
    /// Default route via this address, if any.
    pub gateway: Option<Ipv6Addr>,
}

/// The name of the VLAN interface `vlan` on top of `ifname` (`eth1.42`), if it fits IFNAMSIZ.
pub fn vlan_ifname(ifname: &str, vlan: u16) -> Option<String> {
    let name = format!("{ifname}.{vlan}");
    (name.len() <= MAX_IFNAME).then_some(name)
}

/// The namespace end after [`configure_peer_in_netns`]: the interface that carries the address,
/// and whether the default routes via the gateways were added (false when none was asked for, or
/// the namespace already had a default route, which is left alone).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Configured {
    pub link: LinkState,
    pub default_route: bool,
    /// Whether the IPv6 default route was added (same rules).
    pub default_route6: bool,
}

/// What an interface inside a namespace looks like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkState {
    pub index: u32,
    pub mac: Option<[u8; 6]>,
    pub mtu: Option<u32>,
    /// IPv4 addresses with their prefix lengths.
    pub addresses: Vec<(Ipv4Addr, u8)>,
    /// IPv6 addresses (link-local ones too) with their prefix lengths.
    pub addresses6: Vec<(Ipv6Addr, u8)>,
}

fn mac_of(msg: &LinkMessage) -> Option<[u8; 6]> {
    msg.attributes.iter().find_map(|a| match a {
        LinkAttribute::Address(bytes) => bytes.as_slice().try_into().ok(),
        _ => None,
    })
}

fn mtu_of(msg: &LinkMessage) -> Option<u32> {
    msg.attributes.iter().find_map(|a| match a {
        LinkAttribute::Mtu(m) => Some(*m),
        _ => None,
    })
}

/// The link called `name`, or `None` if there is none.
async fn find_link(netlink: &Netlink, name: &str) -> io::Result<Option<LinkMessage>> {
    let mut links = netlink
        .handle()
        .link()
        .get()
        .match_name(name.to_string())
        .execute();
    match links.try_next().await {
        Ok(found) => Ok(found),
        Err(e) if matches!(errno_of(&e), Some(libc::ENODEV) | Some(libc::ENOENT)) => Ok(None),
        Err(e) => Err(nl_error(&format!("looking up link {name}"), e)),
    }
}

/// Creates the veth pair `names`, the host end enslaved to `bridge` and up, the MTU on both ends,
/// and `peer_mac` on the peer if given. Nothing is left behind on failure.
pub async fn create_in_bridge(
    netlink: &Netlink,
    names: &VethNames,
    bridge: &str,
    mtu: u16,
    peer_mac: Option<[u8; 6]>,
) -> io::Result<()> {
    let bridge_index = netlink.link_index(bridge).await?.ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("bridge {bridge} does not exist (is meshd running on this host?)"),
        )
    })?;
    netlink
        .handle()
        .link()
        .add(LinkVeth::new(&names.host, &names.peer).build())
        .execute()
        .await
        .map_err(|e| {
            nl_error(
                &format!("creating veth pair {}/{}", names.host, names.peer),
                e,
            )
        })?;
    let configured = async {
        let mut peer = LinkUnspec::new_with_name(&names.peer).mtu(u32::from(mtu));
        if let Some(mac) = peer_mac {
            peer = peer.address(mac.to_vec());
        }
        netlink
            .handle()
            .link()
            .set(peer.build())
            .execute()
            .await
            .map_err(|e| nl_error(&format!("setting MTU/MAC of {}", names.peer), e))?;
        let host = LinkUnspec::new_with_name(&names.host)
            .mtu(u32::from(mtu))
            .controller(bridge_index)
            .up();
        netlink
            .handle()
            .link()
            .set(host.build())
            .execute()
            .await
            .map_err(|e| nl_error(&format!("plugging {} into bridge {bridge}", names.host), e))
    }
    .await;
    if let Err(e) = configured {
        let _ = delete(netlink, &names.host).await;
        return Err(e);
    }
    Ok(())
}

/// Deletes the link `host_name` (and so its peer, wherever it is); `false` if there was none.
pub async fn delete(netlink: &Netlink, host_name: &str) -> io::Result<bool> {
    let Some(link) = find_link(netlink, host_name).await? else {
        return Ok(false);
    };
    match netlink
        .handle()
        .link()
        .del(link.header.index)
        .execute()
        .await
    {
        Ok(()) => Ok(true),
        Err(e) if matches!(errno_of(&e), Some(libc::ENODEV) | Some(libc::ENOENT)) => Ok(false),
        Err(e) => Err(nl_error(&format!("deleting {host_name}"), e)),
    }
}

/// Runs `job` with a netlink connection opened inside the network namespace `netns`, on a thread
/// of its own that enters the namespace and ends with the job.
pub async fn in_netns<T, F, Fut>(netns: &File, job: F) -> io::Result<T>
where
    F: FnOnce(Netlink) -> Fut + Send + 'static,
    Fut: Future<Output = io::Result<T>>,
    T: Send + 'static,
{
    let netns = netns.try_clone()?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("meshd-netns".into())
        .spawn(move || {
            let result = (|| {
                // SAFETY: setns on a descriptor we own; it changes only this thread's namespace,
                // and this thread is never reused after the job.
                if unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    let e = io::Error::last_os_error();
                    return Err(io::Error::new(
                        e.kind(),
                        format!("entering the network namespace: {e} (is it a network namespace?)"),
                    ));
                }
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                runtime.block_on(async {
                    let netlink = Netlink::connect()?;
                    job(netlink).await
                })
            })();
            let _ = tx.send(result);
        })?;
    rx.await
        .map_err(|_| io::Error::other("the namespace thread ended without an answer"))?
}

/// Moves the peer of `names` into `netns` and configures it there as `setup` says (renamed,
/// MTU, address, up, default route; a VLAN interface on it if asked). Returns the interface that
/// carries the address and whether the default route was added. On failure the caller deletes
/// the pair by its host end.
pub async fn configure_peer_in_netns(
    netlink: &Netlink,
    names: &VethNames,
    netns: &File,
    setup: &PeerSetup,
) -> io::Result<Configured> {
    netlink
        .handle()
        .link()
        .set(
            LinkUnspec::new_with_name(&names.peer)
                .setns_by_fd(netns.as_raw_fd())
                .build(),
        )
        .execute()
        .await
        .map_err(|e| nl_error(&format!("moving {} into the namespace", names.peer), e))?;
    let peer = names.peer.clone();
    let setup = setup.clone();
    in_netns(netns, move |netlink| async move {
        configure_inside(&netlink, &peer, &setup).await
    })
    .await
}

async fn configure_inside(
    netlink: &Netlink,
    peer: &str,
    setup: &PeerSetup,
) -> io::Result<Configured> {
    let link = find_link(netlink, peer).await?.ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("{peer} is not in the namespace after the move"),
        )
    })?;
    let index = link.header.index;
    if find_link(netlink, &setup.ifname).await?.is_some() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "an interface named {} already exists in the namespace",
                setup.ifname
            ),
        ));
    }
    let mut rename = LinkUnspec::new_with_index(index)
        .name(setup.ifname.clone())
        .mtu(u32::from(setup.mtu));
    if setup.vlan.is_some() {
        rename = rename.up();
    }
    netlink
        .handle()
        .link()
        .set(rename.build())
        .execute()
        .await
        .map_err(|e| nl_error(&format!("renaming {peer} to {}", setup.ifname), e))?;
    let (carrier_index, carrier_name) = match setup.vlan {
        None => (index, setup.ifname.clone()),
        Some(vid) => {
            let name = vlan_ifname(&setup.ifname, vid).ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "{}.{vid} is longer than {MAX_IFNAME} characters",
                        setup.ifname
                    ),
                )
            })?;
            // The tag adds 4 bytes to each frame; keep tagged frames inside the mesh's MTU.
            let vlan = LinkVlan::new(&name, index, vid).mtu(u32::from(setup.mtu).saturating_sub(4));
            netlink
                .handle()
                .link()
                .add(vlan.build())
                .execute()
                .await
                .map_err(|e| match errno_of(&e) {
                    Some(libc::EOPNOTSUPP) | Some(libc::EAFNOSUPPORT) => io::Error::new(
                        io::ErrorKind::Unsupported,
                        format!(
                            "this kernel cannot create VLAN interface {name}: no 802.1Q support \
                             (load the 8021q module)"
                        ),
                    ),
                    _ => nl_error(&format!("creating VLAN interface {name}"), e),
                })?;
            let vlan_link = find_link(netlink, &name).await?.ok_or_else(|| {
                io::Error::new(io::ErrorKind::NotFound, format!("{name} vanished"))
            })?;
            (vlan_link.header.index, name)
        }
    };
    netlink
        .handle()
        .address()
        .add(carrier_index, setup.address.into(), setup.prefix)
        .execute()
        .await
        .map_err(|e| {
            nl_error(
                &format!(
                    "adding {}/{} to {carrier_name}",
                    setup.address, setup.prefix
                ),
                e,
            )
        })?;
    if let Some(six) = setup.ipv6 {
        let mut add = netlink
            .handle()
            .address()
            .add(carrier_index, six.address.into(), six.prefix);
        // The address is this host's to give (unique by construction): usable at once, without
        // the second of duplicate address detection.
        add.message_mut()
            .attributes
            .push(AddressAttribute::Flags(AddressFlags::Nodad));
        add.execute().await.map_err(|e| {
            nl_error(
                &format!("adding {}/{} to {carrier_name}", six.address, six.prefix),
                e,
            )
        })?;
    }
    netlink
        .handle()
        .link()
        .set(LinkUnspec::new_with_index(carrier_index).up().build())
        .execute()
        .await
        .map_err(|e| nl_error(&format!("bringing {carrier_name} up"), e))?;
    let default_route = match setup.gateway {
        Some(gateway) => {
            let route = RouteMessageBuilder::<Ipv4Addr>::new()
                .gateway(gateway)
                .output_interface(carrier_index)
                .build();
            add_default_route(netlink, route, &gateway.to_string()).await?
        }
        None => false,
    };
    let default_route6 = match setup.ipv6.and_then(|six| six.gateway) {
        Some(gateway) => {
            let route = RouteMessageBuilder::<Ipv6Addr>::new()
                .gateway(gateway)
                .output_interface(carrier_index)
                .build();
            add_default_route(netlink, route, &gateway.to_string()).await?
        }
        None => false,
    };
    let link = inspect_link(netlink, &carrier_name).await?.ok_or_else(|| {
        io::Error::new(io::ErrorKind::NotFound, format!("{carrier_name} vanished"))
    })?;
    Ok(Configured {
        link,
        default_route,
        default_route6,
    })
}

/// Adds a default route; `false` if the namespace has one already (a second interface in it:
/// that route stays, this interface serves its subnet, and the caller reports it).
async fn add_default_route(
    netlink: &Netlink,
    route: RouteMessage,
    gateway: &str,
) -> io::Result<bool> {
    match netlink.handle().route().add(route).execute().await {
        Ok(()) => Ok(true),
        Err(e) if errno_of(&e) == Some(libc::EEXIST) => Ok(false),
        Err(e) => Err(nl_error(
            &format!("adding the default route via {gateway}"),
            e,
        )),
    }
}

/// The link `ifname` in the namespace of `netlink`, or `None` if there is none.
pub async fn inspect_link(netlink: &Netlink, ifname: &str) -> io::Result<Option<LinkState>> {
    let Some(link) = find_link(netlink, ifname).await? else {
        return Ok(None);
    };
    let index = link.header.index;
    let mut addresses = Vec::new();
    let mut addresses6 = Vec::new();
    let mut stream = netlink
        .handle()
        .address()
        .get()
        .set_link_index_filter(index)
        .execute();
    while let Some(msg) = stream
        .try_next()
        .await
        .map_err(|e| nl_error(&format!("listing addresses of {ifname}"), e))?
    {
        for attr in &msg.attributes {
            match attr {
                AddressAttribute::Address(IpAddr::V4(a)) => {
                    addresses.push((*a, msg.header.prefix_len))
                }
                AddressAttribute::Address(IpAddr::V6(a)) => {
                    addresses6.push((*a, msg.header.prefix_len))
                }
                _ => {}
            }
        }
    }
    Ok(Some(LinkState {
        index,
        mac: mac_of(&link),
        mtu: mtu_of(&link),
        addresses,
        addresses6,
    }))
}

/// The interface `ifname` inside `netns`, or `None` if there is none.
pub async fn inspect_in_netns(netns: &File, ifname: &str) -> io::Result<Option<LinkState>> {
    let ifname = ifname.to_string();
    in_netns(netns, move |netlink| async move {
        inspect_link(&netlink, &ifname).await
    })
    .await
}

/// Deletes the interface `ifname` inside `netns`; `false` if there was none.
pub async fn delete_in_netns(netns: &File, ifname: &str) -> io::Result<bool> {
    let ifname = ifname.to_string();
    in_netns(netns, move |netlink| async move {
        delete(&netlink, &ifname).await
    })
    .await
}

/// The whole plug: the pair in the bridge, the peer configured in `netns`. On any failure the
/// pair is deleted again, so nothing is left behind.
pub async fn plug(
    netlink: &Netlink,
    names: &VethNames,
    bridge: &str,
    netns: &File,
    setup: &PeerSetup,
    peer_mac: Option<[u8; 6]>,
) -> io::Result<Configured> {
    create_in_bridge(netlink, names, bridge, setup.mtu, peer_mac).await?;
    match configure_peer_in_netns(netlink, names, netns, setup).await {
        Ok(state) => Ok(state),
        Err(e) => {
            let _ = delete(netlink, &names.host).await;
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_deterministic_distinct_and_fit_ifnamsiz() {
        let a = VethNames::for_owner("mc", "cni:abc/eth0");
        assert_eq!(a, VethNames::for_owner("mc", "cni:abc/eth0"));
        assert_ne!(a.host, VethNames::for_owner("mc", "cni:abc/eth1").host);
        assert!(a.host.starts_with("mc") && a.host.len() == 14, "{}", a.host);
        assert_eq!(a.peer, format!("{}p", a.host));
        assert!(a.peer.len() <= MAX_IFNAME);
        assert!(a.host[2..].chars().all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn vlan_names_must_fit() {
        assert_eq!(vlan_ifname("eth1", 42).as_deref(), Some("eth1.42"));
        assert_eq!(vlan_ifname("abcdefghijk", 4094), None);
    }

    fn root_with_netns() -> bool {
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() == 0 };
        root && std::path::Path::new("/proc/self/ns/net").exists()
    }

    /// The plug and teardown on real links: a bridge and a namespace made for the test (root
    /// only; skipped with a message elsewhere, failing under CI=true).
    #[test]
    fn plug_configures_the_namespace_end_and_delete_removes_both() {
        if !root_with_netns() {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI=true needs root for the veth test"
            );
            eprintln!("skipping: needs root to create links and namespaces");
            return;
        }
        let tag = format!("{:x}", std::process::id() & 0xffff);
        let ns_name = format!("mvt{tag}");
        let bridge = format!("mvtbr{tag}");
        let run = |args: &[&str]| {
            let ok = std::process::Command::new("ip")
                .args(args)
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            assert!(ok, "ip {args:?} failed");
        };
        run(&["netns", "add", &ns_name]);
        run(&["link", "add", &bridge, "type", "bridge"]);
        let result = std::panic::catch_unwind(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let netlink = Netlink::connect().unwrap();
                let names = VethNames::for_owner("mt", &ns_name);
                let netns = File::open(format!("/run/netns/{ns_name}")).unwrap();
                let setup = PeerSetup {
                    ifname: "eth7".into(),
                    address: "10.99.3.5".parse().unwrap(),
                    prefix: 16,
                    gateway: Some("10.99.3.1".parse().unwrap()),
                    mtu: 1400,
                    vlan: None,
                    ipv6: Some(Ipv6Setup {
                        address: "fd99:0:0:3::5".parse().unwrap(),
                        prefix: 48,
                        gateway: Some("fd99:0:0:3::1".parse().unwrap()),
                    }),
                };
                let mac = [0x02, 0x11, 0x22, 0x33, 0x44, 0x55];
                let configured = plug(&netlink, &names, &bridge, &netns, &setup, Some(mac))
                    .await
                    .unwrap();
                assert!(configured.default_route && configured.default_route6);
                let state = configured.link;
                assert_eq!(state.mac, Some(mac));
                assert_eq!(state.mtu, Some(1400));
                assert_eq!(state.addresses, vec![("10.99.3.5".parse().unwrap(), 16)]);
                let six = ("fd99:0:0:3::5".parse().unwrap(), 48);
                assert!(state.addresses6.contains(&six), "{:?}", state.addresses6);
                let seen = inspect_in_netns(&netns, "eth7").await.unwrap().unwrap();
                assert_eq!(
                    (seen.index, seen.mac, seen.mtu, &seen.addresses),
                    (state.index, state.mac, state.mtu, &state.addresses)
                );
                assert!(seen.addresses6.contains(&six));
                assert!(netlink.link_index(&names.peer).await.unwrap().is_none());
                // The same ifname again is refused, and the refused pair is gone.
                let again = VethNames::for_owner("mt", "other");
                let err = plug(&netlink, &again, &bridge, &netns, &setup, None)
                    .await
                    .unwrap_err();
                assert!(err.to_string().contains("already exists"), "{err}");
                assert!(netlink.link_index(&again.host).await.unwrap().is_none());
                // A missing bridge is named.
                let err = create_in_bridge(&netlink, &again, "nosuchbr0", 1400, None)
                    .await
                    .unwrap_err();
                assert!(err.to_string().contains("nosuchbr0"), "{err}");
                assert!(netlink.link_index(&again.host).await.unwrap().is_none());

                assert!(delete(&netlink, &names.host).await.unwrap());
                assert!(!delete(&netlink, &names.host).await.unwrap());
                assert!(inspect_in_netns(&netns, "eth7").await.unwrap().is_none());
            });
        });
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &bridge])
            .status();
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &ns_name])
            .status();
        if let Err(panic) = result {
            std::panic::resume_unwind(panic);
        }
    }
}
