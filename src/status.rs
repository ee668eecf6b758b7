//! What `meshd status` reports: the daemon's state as one serializable value, and its table form.
//!
//! The JSON field names are an interface scripts rely on: extend, never rename. The core hands
//! over typed snapshots ([`NodeSnapshot`]); the strings and serde forms are made here.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::core::node::{FdbPortSnapshot, FdbSnapshot, MemberSnapshot, NodeSnapshot, PeerSnapshot};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InterfaceStatus {
    pub name: String,
    pub bridge: Option<String>,
    pub mtu: u16,
    /// Whether the TAP runs with TSO/GRO offloads (false after a fallback on an older kernel).
    #[serde(default)]
    pub offload: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeStatus {
    pub name: String,
    pub public_key: String,
    pub listen: String,
    pub interface: InterfaceStatus,
    /// Data-path workers (threads, each with a TAP queue and a UDP socket).
    #[serde(default)]
    pub workers: usize,
    pub uptime_secs: u64,
    /// The network id.
    #[serde(default)]
    pub network: String,
    /// This node's certificate expiry (unix seconds).
    #[serde(default)]
    pub certificate_expires: u64,
    /// Every member gossip knows, this node excluded.
    #[serde(default)]
    pub members: Vec<MemberStatus>,
    pub peers: Vec<PeerStatus>,
    pub fdb: Vec<FdbEntryStatus>,
    pub counters: std::collections::BTreeMap<String, u64>,
    /// This host's share of the container network (subnet, range, gateway, MTU, bridge); `None`
    /// while the network has no container subnet or this node's certificate names no range.
    /// The Docker plugin, `meshd-cni` and `meshd attach` read it.
    #[serde(default)]
    pub host_network: Option<crate::core::ranges::HostNetwork>,
    /// Live members whose address ranges overlap, each with the member that keeps the range.
    #[serde(default)]
    pub range_conflicts: Vec<RangeConflictStatus>,
}

/// Two live members whose ranges overlap: the one granted first keeps it, the other gets a new
/// range from an admin at once.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RangeConflictStatus {
    pub keeper: String,
    pub keeper_range: crate::core::ranges::Range4,
    pub loser: String,
    pub loser_range: crate::core::ranges::Range4,
}

impl From<&crate::core::ranges::RangeConflict> for RangeConflictStatus {
    fn from(c: &crate::core::ranges::RangeConflict) -> RangeConflictStatus {
        RangeConflictStatus {
            keeper: c.keeper.name.clone(),
            keeper_range: c.keeper.range,
            loser: c.loser.name.clone(),
            loser_range: c.loser.range,
        }
    }
}

/// One peer as `meshd status` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PeerStatus {
    pub name: String,
    pub public_key: String,
    pub endpoint: Option<String>,
    pub state: String,
    /// The member this peer is reached through, when the direct path does not work.
    pub via: Option<String>,
    /// The largest IP packet that reaches this peer whole (what ICMP too-big answers advertise);
    /// `None` without a session.
    #[serde(default)]
    pub path_mtu: Option<u32>,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub last_handshake_secs_ago: Option<u64>,
    /// The data-path AEAD of the current session (`aes-256-gcm` or `chacha20-poly1305`).
    #[serde(default)]
    pub cipher: Option<String>,
}

/// One member of the network as `meshd status` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MemberStatus {
    pub name: String,
    pub public_key: String,
    /// Unix seconds.
    pub certificate_expires: u64,
    /// "alive", "suspect", "down" or "revoked", as gossip sees it.
    pub state: String,
    pub endpoints: Vec<String>,
    /// Whether this node has a session with the member right now.
    pub direct: bool,
    /// The member this one is reached through, when the direct path does not work.
    pub via: Option<String>,
    #[serde(default)]
    pub admin: bool,
    /// The container address range the member's certificate grants.
    #[serde(default)]
    pub range: Option<crate::core::ranges::Range4>,
}

/// One FDB entry as `meshd status` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FdbEntryStatus {
    pub mac: String,
    pub port: String,
    pub age_secs: u64,
}

/// The node's part of `meshd status`, converted from its [`NodeSnapshot`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CoreStatus {
    pub network: String,
    /// This node's own certificate expiry (unix seconds).
    pub certificate_expires: u64,
    pub members: Vec<MemberStatus>,
    pub public_key: String,
    pub peers: Vec<PeerStatus>,
    pub fdb: Vec<FdbEntryStatus>,
    pub counters: std::collections::BTreeMap<String, u64>,
    pub range_conflicts: Vec<RangeConflictStatus>,
}

impl From<&PeerSnapshot> for PeerStatus {
    fn from(p: &PeerSnapshot) -> PeerStatus {
        PeerStatus {
            name: p.name.clone(),
            public_key: p.public_key.to_string(),
            endpoint: p.endpoint.map(|e| e.to_string()),
            state: p.state.as_str().to_string(),
            via: p.via.clone(),
            path_mtu: p.path_mtu,
            rx_bytes: p.rx_bytes,
            tx_bytes: p.tx_bytes,
            last_handshake_secs_ago: p.since_handshake.map(|d| d.as_secs()),
            cipher: p.cipher.map(|c| c.as_str().to_string()),
        }
    }
}

impl From<&MemberSnapshot> for MemberStatus {
    fn from(m: &MemberSnapshot) -> MemberStatus {
        MemberStatus {
            name: m.name.clone(),
            public_key: m.public_key.to_string(),
            certificate_expires: m.certificate_expires,
            state: m.state.as_str().to_string(),
            endpoints: m.endpoints.iter().map(|e| e.to_string()).collect(),
            direct: m.direct,
            via: m.via.clone(),
            admin: m.admin,
            range: m.range,
        }
    }
}

impl From<&FdbSnapshot> for FdbEntryStatus {
    fn from(e: &FdbSnapshot) -> FdbEntryStatus {
        FdbEntryStatus {
            mac: e.mac.to_string(),
            port: match &e.port {
                FdbPortSnapshot::Local => "local".to_string(),
                FdbPortSnapshot::Peer(name) => name.clone(),
            },
            age_secs: e.age.as_secs(),
        }
    }
}

impl From<&NodeSnapshot> for CoreStatus {
    fn from(s: &NodeSnapshot) -> CoreStatus {
        CoreStatus {
            network: s.network.to_string(),
            certificate_expires: s.certificate_expires,
            members: s.members.iter().map(MemberStatus::from).collect(),
            public_key: s.public_key.to_string(),
            peers: s.peers.iter().map(PeerStatus::from).collect(),
            fdb: s.fdb.iter().map(FdbEntryStatus::from).collect(),
            counters: s
                .counters
                .iter()
                .map(|&(name, value)| (name.to_string(), value))
                .collect(),
            range_conflicts: s
                .range_conflicts
                .iter()
                .map(RangeConflictStatus::from)
                .collect(),
        }
    }
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

impl NodeStatus {
    /// The human-readable form printed by `meshd status`.
    pub fn render_table(&self) -> String {
        let mut out = String::new();
        let iface = match &self.interface.bridge {
            Some(br) => format!("{} in bridge {}", self.interface.name, br),
            None => self.interface.name.clone(),
        };
        let _ = writeln!(out, "node       {}  (key {})", self.name, self.public_key);
        let _ = writeln!(out, "listening  {}", self.listen);
        let offload = if self.interface.offload { "on" } else { "off" };
        let _ = writeln!(
            out,
            "interface  {iface}, mtu {}, offloads {offload}, {} worker{}",
            self.interface.mtu,
            self.workers,
            if self.workers == 1 { "" } else { "s" }
        );
        let _ = writeln!(out, "uptime     {}s", self.uptime_secs);
        let _ = writeln!(out, "network    {}", self.network);
        let _ = writeln!(
            out,
            "cert       expires {}",
            crate::core::invite::format_unix(self.certificate_expires)
        );
        match &self.host_network {
            Some(h) => {
                let _ = writeln!(
                    out,
                    "containers subnet {}, this host's range {} (gateway {} on {}){}",
                    h.subnet,
                    h.range,
                    h.gateway,
                    h.bridge,
                    match (h.subnet6, h.range6) {
                        (Some(s6), Some(r6)) => format!("; IPv6 {s6}, range {r6}"),
                        _ => String::new(),
                    }
                );
            }
            None => {
                let _ = writeln!(
                    out,
                    "containers no address range (network founded without --subnet, or no bridge)"
                );
            }
        }
        for c in &self.range_conflicts {
            let _ = writeln!(
                out,
                "CONFLICT   {} holds {} which overlaps {} of {} (granted first: {} keeps it)",
                c.loser, c.loser_range, c.keeper_range, c.keeper, c.keeper
            );
        }
        let alive = self.members.iter().filter(|m| m.state == "alive").count();
        let _ = writeln!(out, "\nmembers ({alive} of {} alive)", self.members.len());
        let _ = writeln!(
            out,
            "  {:<16} {:<8} {:<7} {:<24} {:<18} {:<20}  KEY",
            "NAME", "STATE", "PATH", "ENDPOINT", "RANGE", "CERT EXPIRES"
        );
        for m in &self.members {
            let path = if m.direct {
                "direct".to_string()
            } else {
                m.via
                    .as_deref()
                    .map_or("-".to_string(), |v| format!("via {v}"))
            };
            let _ = writeln!(
                out,
                "  {:<16} {:<8} {:<7} {:<24} {:<18} {:<20}  {}",
                if m.admin {
                    format!("{} (admin)", m.name)
                } else {
                    m.name.clone()
                },
                m.state,
                path,
                m.endpoints.first().map_or("-", String::as_str),
                m.range.map_or("-".to_string(), |r| r.to_string()),
                crate::core::invite::format_unix(m.certificate_expires),
                m.public_key,
            );
        }
        let up = self.peers.iter().filter(|p| p.state == "up").count();
        let _ = writeln!(out, "\npeers ({up} of {} up)", self.peers.len());
        let _ = writeln!(
            out,
            "  {:<16} {:<11} {:<24} {:>10} {:>10} {:>10} {:>6}  {:<17}  via",
            "NAME", "STATE", "ENDPOINT", "RX", "TX", "HANDSHAKE", "MTU", "CIPHER"
        );
        for p in &self.peers {
            let hs = p
                .last_handshake_secs_ago
                .map_or("never".to_string(), |s| format!("{s}s ago"));
            let _ = writeln!(
                out,
                "  {:<16} {:<11} {:<24} {:>10} {:>10} {:>10} {:>6}  {:<17}  {}",
                p.name,
                p.state,
                p.endpoint.as_deref().unwrap_or("-"),
                human_bytes(p.rx_bytes),
                human_bytes(p.tx_bytes),
                hs,
                p.path_mtu.map_or("-".to_string(), |m| m.to_string()),
                p.cipher.as_deref().unwrap_or("-"),
                p.via.as_deref().unwrap_or("direct"),
            );
        }
        let _ = writeln!(out, "\nswitch table ({} entries)", self.fdb.len());
        for e in &self.fdb {
            let _ = writeln!(out, "  {}  {:<16} {}s", e.mac, e.port, e.age_secs);
        }
        let nonzero: Vec<_> = self.counters.iter().filter(|(_, v)| **v > 0).collect();
        let _ = writeln!(out, "\ncounters (non-zero)");
        for (k, v) in nonzero {
            let _ = writeln!(out, "  {k:<28} {v}");
        }
        out
    }
}

/// A small, fully populated status for tests of everything that renders one.
#[cfg(test)]
impl NodeStatus {
    pub(crate) fn sample() -> NodeStatus {
        NodeStatus {
            name: "h1".into(),
            public_key: "KEY".into(),
            listen: "0.0.0.0:6655".into(),
            interface: InterfaceStatus {
                name: "meshd0".into(),
                bridge: Some("br0".into()),
                mtu: 1402,
                offload: true,
            },
            workers: 2,
            uptime_secs: 5,
            network: "NET".into(),
            certificate_expires: 1_800_000_000,
            members: vec![MemberStatus {
                name: "h2".into(),
                public_key: "K2".into(),
                certificate_expires: 1_800_000_000,
                state: "alive".into(),
                endpoints: vec!["10.0.0.2:6655".into()],
                direct: true,
                via: None,
                admin: false,
                range: "10.77.1.0/24".parse().ok(),
            }],
            peers: vec![PeerStatus {
                name: "h2".into(),
                public_key: "K2".into(),
                endpoint: Some("10.0.0.2:6655".into()),
                state: "up".into(),
                via: None,
                path_mtu: Some(1426),
                rx_bytes: 2048,
                tx_bytes: 10,
                last_handshake_secs_ago: Some(3),
                cipher: Some("aes-256-gcm".into()),
            }],
            fdb: vec![FdbEntryStatus {
                mac: "02:00:00:00:00:01".into(),
                port: "h2".into(),
                age_secs: 1,
            }],
            counters: [
                ("rx_replayed".to_string(), 4),
                ("rx_bad_mac1".to_string(), 0),
            ]
            .into_iter()
            .collect(),
            host_network: Some(crate::core::ranges::HostNetwork {
                subnet: "10.77.0.0/16".parse().unwrap(),
                range: "10.77.0.0/24".parse().unwrap(),
                gateway: "10.77.0.1".parse().unwrap(),
                subnet6: None,
                range6: None,
                gateway6: None,
                mtu: 1402,
                bridge: "br0".into(),
            }),
            range_conflicts: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_shows_peers_fdb_and_counters() {
        let s = NodeStatus::sample();
        let t = s.render_table();
        assert!(t.contains("1 of 1 up"), "{t}");
        assert!(t.contains("1 of 1 alive"), "{t}");
        assert!(t.contains("network    NET"), "{t}");
        assert!(
            t.contains(
                "subnet 10.77.0.0/16, this host's range 10.77.0.0/24 (gateway 10.77.0.1 on br0)"
            ),
            "{t}"
        );
        assert!(t.contains("10.0.0.2:6655            10.77.1.0/24"), "{t}");
        assert!(t.contains("mtu 1402, offloads on, 2 workers"), "{t}");
        assert!(t.contains("2.0 KiB"), "{t}");
        assert!(t.contains("1426  aes-256-gcm"), "{t}");
        assert!(t.contains("02:00:00:00:00:01  h2"), "{t}");
        assert!(
            t.contains("rx_replayed") && !t.contains("rx_bad_mac1"),
            "{t}"
        );
        let json = serde_json::to_string(&s).unwrap();
        let back: NodeStatus = serde_json::from_str(&json).unwrap();
        assert_eq!(back.peers[0].state, "up");
    }
}
