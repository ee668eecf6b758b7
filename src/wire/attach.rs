//! The arguments of `meshd attach` / `meshd detach`, checked: which namespace, which address,
//! MAC, VLAN and interface name.
//!
//! Owns turning the strings of the command line into values the attach code can use without
//! further checks. Invariants: a namespace name can only name a file directly in `/run/netns`
//! (no `/`, not `.` or `..`); a PID is positive; a MAC is a unicast, non-zero address; a VLAN id
//! lies in 1..=4094; an address with a prefix has a prefix of at most 32. Every error names the
//! argument and the value.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use crate::wire::MacAddr;

/// Where `ip netns add` puts named namespaces.
pub const NETNS_DIR: &str = "/run/netns";
/// The interface name `attach` gives when none is asked for (a container's eth0 is its own).
pub const DEFAULT_ATTACH_IFNAME: &str = "eth1";

/// The namespace to attach: a name from `ip netns`, or a process's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetnsTarget {
    Named(String),
    Pid(u32),
}

impl NetnsTarget {
    /// The file that is the namespace.
    pub fn path(&self) -> PathBuf {
        match self {
            NetnsTarget::Named(name) => PathBuf::from(NETNS_DIR).join(name),
            NetnsTarget::Pid(pid) => PathBuf::from(format!("/proc/{pid}/ns/net")),
        }
    }

    /// How the address store and the veth names know an attachment of `ifname` here.
    pub fn owner(&self, ifname: &str) -> String {
        match self {
            NetnsTarget::Named(name) => format!("attach:{name}/{ifname}"),
            NetnsTarget::Pid(pid) => format!("attach:pid{pid}/{ifname}"),
        }
    }
}

impl std::fmt::Display for NetnsTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NetnsTarget::Named(name) => write!(f, "namespace {name}"),
            NetnsTarget::Pid(pid) => write!(f, "the namespace of process {pid}"),
        }
    }
}

/// `--netns NAME`: a file name in `/run/netns`.
pub fn parse_netns_name(s: &str) -> Result<String, String> {
    if s.is_empty() || s.len() > 255 || s == "." || s == ".." || s.contains(['/', '\0']) {
        return Err(format!(
            "`{s}` is not a namespace name (a name `ip netns list` shows: no '/', not . or ..)"
        ));
    }
    Ok(s.to_string())
}

/// `--pid PID`: a positive process id.
pub fn parse_pid(s: &str) -> Result<u32, String> {
    match s.parse::<u32>() {
        Ok(pid) if pid > 0 && pid <= i32::MAX as u32 => Ok(pid),
        _ => Err(format!("`{s}` is not a process id")),
    }
}

/// `--ip ADDRESS[/PREFIX]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddressArg {
    pub address: Ipv4Addr,
    pub prefix: Option<u8>,
}

pub fn parse_address(s: &str) -> Result<AddressArg, String> {
    let bad = || format!("`{s}` is not an IPv4 address or ADDRESS/PREFIX (e.g. 10.77.3.9/16)");
    let (addr, prefix) = match s.split_once('/') {
        Some((addr, prefix)) => {
            let prefix: u8 = prefix.parse().map_err(|_| bad())?;
            if prefix > 32 {
                return Err(bad());
            }
            (addr, Some(prefix))
        }
        None => (s, None),
    };
    Ok(AddressArg {
        address: addr.parse().map_err(|_| bad())?,
        prefix,
    })
}

/// `--mac MAC`: a unicast, non-zero Ethernet address.
pub fn parse_mac(s: &str) -> Result<[u8; 6], String> {
    let mac: MacAddr = s
        .parse()
        .map_err(|_| format!("`{s}` is not a MAC address (xx:xx:xx:xx:xx:xx)"))?;
    if mac == MacAddr::ZERO || mac.0[0] & 1 == 1 {
        return Err(format!(
            "`{s}` is a multicast or zero MAC address; an interface needs a unicast one"
        ));
    }
    Ok(mac.0)
}

/// `--vlan ID`: an 802.1Q VLAN id.
pub fn parse_vlan(s: &str) -> Result<u16, String> {
    match s.parse::<u16>() {
        Ok(id) if (1..=4094).contains(&id) => Ok(id),
        _ => Err(format!("`{s}` is not a VLAN id (1 to 4094)")),
    }
}

/// `--ifname NAME`: a Linux interface name.
pub fn parse_ifname(s: &str) -> Result<String, String> {
    crate::config::validate_ifname(s)?;
    Ok(s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_targets_name_their_file_and_owner() {
        let named = NetnsTarget::Named(parse_netns_name("web1").unwrap());
        assert_eq!(named.path(), PathBuf::from("/run/netns/web1"));
        assert_eq!(named.owner("eth1"), "attach:web1/eth1");
        let pid = NetnsTarget::Pid(parse_pid("4242").unwrap());
        assert_eq!(pid.path(), PathBuf::from("/proc/4242/ns/net"));
        assert_eq!(pid.owner("eth1"), "attach:pid4242/eth1");
        for bad in ["", ".", "..", "a/b", "../etc"] {
            assert!(parse_netns_name(bad).is_err(), "{bad}");
        }
        for bad in ["0", "-1", "x", "4294967295"] {
            assert!(parse_pid(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn addresses_macs_vlans_and_names_are_checked() {
        assert_eq!(
            parse_address("10.77.3.9/16").unwrap(),
            AddressArg {
                address: "10.77.3.9".parse().unwrap(),
                prefix: Some(16)
            }
        );
        assert_eq!(parse_address("10.77.3.9").unwrap().prefix, None);
        for bad in ["10.77.3.9/33", "10.77.3/16", "fd00::1/64", "x", "10.0.0.1/"] {
            let err = parse_address(bad).unwrap_err();
            assert!(err.contains(bad), "{err}");
        }
        assert_eq!(
            parse_mac("02:42:AC:11:00:02").unwrap(),
            [0x02, 0x42, 0xac, 0x11, 0x00, 0x02]
        );
        assert!(parse_mac("01:00:5e:00:00:01")
            .unwrap_err()
            .contains("multicast"));
        assert!(parse_mac("00:00:00:00:00:00").is_err());
        assert!(parse_mac("02:42:ac:11:00").is_err());
        assert_eq!(parse_vlan("42").unwrap(), 42);
        for bad in ["0", "4095", "-3", "vlan"] {
            assert!(parse_vlan(bad).is_err(), "{bad}");
        }
        assert!(parse_ifname("eth1").is_ok());
        assert!(parse_ifname("way-too-long-name").is_err());
    }
}
