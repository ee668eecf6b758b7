//! A typed snapshot of the node: peers, members, the FDB and the counters, for `meshd status`
//! and the metrics endpoint. Read-only: taking one changes nothing. It holds values, not their
//! display: `crate::status` owns the serialised form and does the formatting.

use crate::core::ranges::{Grant, Range4, RangeConflict};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use meshd_crypto::{Cipher, NetworkId, PublicKey};

use super::*;
use crate::core::membership::MemberState;
use crate::core::peer::{PeerState, Route};
use crate::core::switch::Port;
use crate::wire::MacAddr;

/// One peer as the node sees it now.
#[derive(Debug, Clone)]
pub struct PeerSnapshot {
    pub name: String,
    pub public_key: PublicKey,
    pub endpoint: Option<SocketAddr>,
    pub state: PeerState,
    /// The member this peer is reached through, when the direct path does not work.
    pub via: Option<String>,
    /// The largest IP packet that reaches this peer whole; `None` without a session.
    pub path_mtu: Option<u32>,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub since_handshake: Option<Duration>,
    /// The AEAD of the current session.
    pub cipher: Option<Cipher>,
}

/// One member of the network as gossip and the node see it now.
#[derive(Debug, Clone)]
pub struct MemberSnapshot {
    pub name: String,
    pub public_key: PublicKey,
    /// Unix seconds.
    pub certificate_expires: u64,
    pub state: MemberState,
    pub endpoints: Vec<SocketAddr>,
    /// Whether this node has a session with the member right now, not through a relay.
    pub direct: bool,
    pub via: Option<String>,
    pub admin: bool,
    pub range: Option<Range4>,
}

/// Where the switch sends frames for one MAC address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FdbPortSnapshot {
    Local,
    /// The peer, by name.
    Peer(String),
}

#[derive(Debug, Clone)]
pub struct FdbSnapshot {
    pub mac: MacAddr,
    pub port: FdbPortSnapshot,
    pub age: Duration,
}

/// Everything the node can tell about itself at one instant.
#[derive(Debug, Clone)]
pub struct NodeSnapshot {
    pub network: NetworkId,
    pub public_key: PublicKey,
    /// This node's own certificate expiry (unix seconds).
    pub certificate_expires: u64,
    pub peers: Vec<PeerSnapshot>,
    pub members: Vec<MemberSnapshot>,
    /// Sorted by MAC address.
    pub fdb: Vec<FdbSnapshot>,
    /// Every counter of the node, the join book and membership, with its stable name.
    pub counters: Vec<(&'static str, u64)>,
    /// This node's address grant (its container range), if its certificate has one.
    pub grant: Option<Grant>,
    /// Overlapping ranges of live members, each with the member that keeps the range.
    pub range_conflicts: Vec<RangeConflict>,
}

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

    /// What the node knows at `now`.
    pub fn snapshot(&self, now: Instant) -> NodeSnapshot {
        let peers = self
            .peers
            .iter()
            .enumerate()
            .map(|(id, p)| PeerSnapshot {
                name: p.name.clone(),
                public_key: p.public_key,
                endpoint: p.endpoint,
                state: p.state(now),
                via: self.via(id as PeerId),
                path_mtu: p
                    .sessions
                    .current()
                    .map(|_| (self.frame_limit(id as PeerId) - ETHERNET_HEADER_LEN) as u32),
                rx_bytes: p.rx_bytes,
                tx_bytes: p.tx_bytes,
                since_handshake: p.last_handshake.map(|t| now.saturating_duration_since(t)),
                cipher: p.sessions.current().map(|s| s.send.cipher()),
            })
            .collect();
        let mut fdb: Vec<FdbSnapshot> = self
            .fdb
            .iter(now)
            .map(|(mac, port, age)| FdbSnapshot {
                mac,
                port: match port {
                    Port::Local => FdbPortSnapshot::Local,
                    Port::Peer(id) => FdbPortSnapshot::Peer(self.peers[id as usize].name.clone()),
                },
                age,
            })
            .collect();
        fdb.sort_by_key(|e| e.mac);
        let members = self
            .membership
            .members(now)
            .into_iter()
            .filter(|m| m.key != self.public_key)
            .map(|m| {
                let id = self.by_key.get(&m.key).copied();
                let peer = id.map(|id| &self.peers[id as usize]);
                let via = id.and_then(|id| self.via(id));
                MemberSnapshot {
                    direct: peer.is_some_and(|p| p.sessions.is_up()) && via.is_none(),
                    admin: peer
                        .and_then(|p| p.certificate.as_ref())
                        .is_some_and(|c| c.admin),
                    name: m.name,
                    public_key: m.key,
                    certificate_expires: m.cert_expires_at,
                    state: m.state,
                    endpoints: m.endpoints,
                    range: m.range,
                    via,
                }
            })
            .collect();
        NodeSnapshot {
            network: self.network,
            public_key: self.public_key,
            certificate_expires: self.certificate.expires_at,
            peers,
            members,
            fdb,
            counters: self
                .counters()
                .iter()
                .chain(self.invites.counters().iter())
                .chain(self.membership.counters().iter())
                .collect(),
            grant: self.membership.grant(),
            range_conflicts: self.membership.range_conflicts(),
        }
    }
}
