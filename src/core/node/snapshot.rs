//! The node's status: peers, members, the FDB and the counters, as `meshd status` and the
//! metrics endpoint show them. Read-only: taking a snapshot changes nothing.

use std::collections::BTreeMap;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::*;
use crate::core::peer::Route;
use crate::core::switch::Port;

impl Node {
    /// The name of the relay peer `id` is reached through, if it has a session and is relayed.
    pub(super) fn via(&self, id: PeerId) -> Option<String> {
        let peer = &self.peers[id as usize];
        peer.sessions.current()?;
        match self.route(id)? {
            Route::Relay(relay) => Some(self.peers[relay as usize].name.clone()),
            Route::Direct(_) => None,
        }
    }

    pub fn status(&self, now: Instant) -> CoreStatus {
        let peers = self
            .peers
            .iter()
            .enumerate()
            .map(|(id, p)| PeerStatus {
                name: p.name.clone(),
                public_key: p.public_key.to_string(),
                endpoint: p.endpoint.map(|e| e.to_string()),
                state: p.state(now).as_str().to_string(),
                via: self.via(id as PeerId),
                path_mtu: p
                    .sessions
                    .current()
                    .map(|_| (self.frame_limit(id as PeerId) - ETHERNET_HEADER_LEN) as u32),
                rx_bytes: p.rx_bytes,
                tx_bytes: p.tx_bytes,
                last_handshake_secs_ago: p
                    .last_handshake
                    .map(|t| now.saturating_duration_since(t).as_secs()),
            })
            .collect();
        let mut fdb: Vec<FdbEntryStatus> = self
            .fdb
            .iter(now)
            .map(|(mac, port, age)| FdbEntryStatus {
                mac: mac.to_string(),
                port: match port {
                    Port::Local => "local".to_string(),
                    Port::Peer(id) => self.peers[id as usize].name.clone(),
                },
                age_secs: age.as_secs(),
            })
            .collect();
        fdb.sort_by(|a, b| a.mac.cmp(&b.mac));
        let members = self
            .membership
            .members(now)
            .into_iter()
            .filter(|m| m.key != self.public_key)
            .map(|m| {
                let id = self.by_key.get(&m.key).copied();
                let peer = id.map(|id| &self.peers[id as usize]);
                let via = id.and_then(|id| self.via(id));
                MemberStatus {
                    direct: peer.is_some_and(|p| p.sessions.is_up()) && via.is_none(),
                    admin: peer
                        .and_then(|p| p.certificate.as_ref())
                        .is_some_and(|c| c.admin),
                    name: m.name,
                    public_key: m.key.to_string(),
                    certificate_expires: m.cert_expires_at,
                    state: m.state.as_str().to_string(),
                    endpoints: m.endpoints.iter().map(|e| e.to_string()).collect(),
                    via,
                }
            })
            .collect();
        CoreStatus {
            network: self.network.to_string(),
            certificate_expires: self.certificate.expires_at,
            members,
            public_key: self.public_key.to_string(),
            peers,
            fdb,
            counters: self
                .counters()
                .iter()
                .chain(self.invites.counters().iter())
                .chain(self.membership.counters().iter())
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
        }
    }
}

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
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FdbEntryStatus {
    pub mac: String,
    pub port: String,
    pub age_secs: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CoreStatus {
    pub network: String,
    /// This node's own certificate expiry (unix seconds).
    pub certificate_expires: u64,
    pub members: Vec<MemberStatus>,
    pub public_key: String,
    pub peers: Vec<PeerStatus>,
    pub fdb: Vec<FdbEntryStatus>,
    pub counters: BTreeMap<String, u64>,
}
