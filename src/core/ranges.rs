//! Container address ranges: the network's container address space and each host's share of it.
//!
//! Owns the value types [`Range4`] and [`Range6`] (a prefix whose host bits are zero, checked on
//! construction), [`ContainerNetwork`] (the network's subnets and the size of a host's range, as
//! the network key signed them into every certificate), [`HostNetwork`] (what a host's container
//! tooling needs: the subnet, this host's ranges, the gateway, the MTU and the bridge) and the two
//! pure allocation rules: [`next_free_range`] (an admin picking a range for a new member) and
//! [`first_free_address`] (a host picking an address inside its own range). [`Grant`] is the
//! typed form of a certificate's address grant, and [`find_conflicts`] the collision rule: of two
//! live members whose ranges overlap, the one granted its range first keeps it (ties: the lower
//! static key), so every node that sees the same certificates names the same loser.
//!
//! Invariants: a `Range4`/`Range6` value never has host bits set, so two ranges overlap exactly
//! when one contains the other's base; a host's IPv6 /64 is the same index inside `subnet6` as its
//! IPv4 range inside `subnet4` ([`ContainerNetwork::range6_for`]), so one choice names both; the
//! first address of a range is the network address, the second the gateway (given to the bridge),
//! and the last (IPv4) the broadcast: none of them is ever handed to a container.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use meshd_crypto::{AddressGrant, PublicKey};

/// How long a range stays out of the pool after its holder was revoked or its certificate
/// expired: long enough for containers of a host that is gone to be cleaned up before a new
/// host could reuse their addresses.
pub const RANGE_GRACE_SECS: u64 = 86_400;

/// Why a range or network parameter was refused. Messages name the value and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RangeError {
    #[error("`{0}` is not ADDRESS/PREFIX (for example 10.77.0.0/16)")]
    Syntax(String),
    #[error("`{0}` has host bits set (did you mean {1}?)")]
    HostBits(String, String),
    #[error("prefix /{0} is out of range for {1}")]
    Prefix(u8, &'static str),
    #[error("{0}")]
    Mismatch(String),
}

/// An IPv4 prefix with its host bits zero, e.g. `10.77.3.0/24`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Range4 {
    base: Ipv4Addr,
    prefix: u8,
}

/// An IPv6 prefix with its host bits zero, e.g. `fd77:0:0:3::/64`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Range6 {
    base: Ipv6Addr,
    prefix: u8,
}

fn mask4(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    }
}

fn mask6(prefix: u8) -> u128 {
    if prefix == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(prefix))
    }
}

impl Range4 {
    /// A range from its base address; refuses a prefix over 32 and set host bits.
    pub fn new(base: Ipv4Addr, prefix: u8) -> Result<Range4, RangeError> {
        if prefix > 32 {
            return Err(RangeError::Prefix(prefix, "IPv4"));
        }
        let masked = Ipv4Addr::from(u32::from(base) & mask4(prefix));
        if masked != base {
            return Err(RangeError::HostBits(
                format!("{base}/{prefix}"),
                format!("{masked}/{prefix}"),
            ));
        }
        Ok(Range4 { base, prefix })
    }

    pub const fn base(&self) -> Ipv4Addr {
        self.base
    }

    pub const fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Number of addresses in the range (2^(32-prefix)), as u64 so /0 fits.
    pub fn size(&self) -> u64 {
        1u64 << (32 - u32::from(self.prefix))
    }

    pub fn contains(&self, addr: Ipv4Addr) -> bool {
        u32::from(addr) & mask4(self.prefix) == u32::from(self.base)
    }

    /// Whether the ranges share any address (one contains the other).
    pub fn overlaps(&self, other: &Range4) -> bool {
        let shorter = self.prefix.min(other.prefix);
        u32::from(self.base) & mask4(shorter) == u32::from(other.base) & mask4(shorter)
    }

    /// Whether `inner` lies wholly inside this range.
    pub fn covers(&self, inner: &Range4) -> bool {
        inner.prefix >= self.prefix && self.contains(inner.base)
    }

    /// The `n`th address of the range (0 is the base); `None` past its end.
    pub fn nth(&self, n: u64) -> Option<Ipv4Addr> {
        (n < self.size()).then(|| Ipv4Addr::from(u32::from(self.base).wrapping_add(n as u32)))
    }

    /// The range's gateway: its second address (given to the bridge; containers route through
    /// it). `None` for /31 and /32, which have no room for one.
    pub fn gateway(&self) -> Option<Ipv4Addr> {
        (self.prefix <= 30).then(|| self.nth(1)).flatten()
    }

    /// The last address (the broadcast address of a /30 or larger).
    pub fn last(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.base) | !mask4(self.prefix))
    }

    /// Whether `addr` may be handed to a container: inside the range and neither its network
    /// address, its gateway nor its broadcast address.
    pub fn is_assignable(&self, addr: Ipv4Addr) -> bool {
        self.contains(addr)
            && addr != self.base
            && Some(addr) != self.gateway()
            && (self.prefix > 30 || addr != self.last())
    }
}

impl Range6 {
    /// A range from its base address; refuses a prefix over 128 and set host bits.
    pub fn new(base: Ipv6Addr, prefix: u8) -> Result<Range6, RangeError> {
        if prefix > 128 {
            return Err(RangeError::Prefix(prefix, "IPv6"));
        }
        let masked = Ipv6Addr::from(u128::from(base) & mask6(prefix));
        if masked != base {
            return Err(RangeError::HostBits(
                format!("{base}/{prefix}"),
                format!("{masked}/{prefix}"),
            ));
        }
        Ok(Range6 { base, prefix })
    }

    pub const fn base(&self) -> Ipv6Addr {
        self.base
    }

    pub const fn prefix(&self) -> u8 {
        self.prefix
    }

    pub fn contains(&self, addr: Ipv6Addr) -> bool {
        u128::from(addr) & mask6(self.prefix) == u128::from(self.base)
    }

    pub fn overlaps(&self, other: &Range6) -> bool {
        let shorter = self.prefix.min(other.prefix);
        u128::from(self.base) & mask6(shorter) == u128::from(other.base) & mask6(shorter)
    }

    /// The `n`th address of the range (0 is the base); `None` past its end.
    pub fn nth(&self, n: u128) -> Option<Ipv6Addr> {
        let host_bits = 128 - u32::from(self.prefix);
        (host_bits == 128 || n < (1u128 << host_bits))
            .then(|| Ipv6Addr::from(u128::from(self.base).wrapping_add(n)))
    }

    /// The range's gateway: its second address.
    pub fn gateway(&self) -> Option<Ipv6Addr> {
        (self.prefix <= 126).then(|| self.nth(1)).flatten()
    }

    /// Whether `addr` may be handed to a container: inside the range, not the base (the
    /// subnet-router anycast address) and not the gateway.
    pub fn is_assignable(&self, addr: Ipv6Addr) -> bool {
        self.contains(addr) && addr != self.base && Some(addr) != self.gateway()
    }
}

fn split_cidr(s: &str) -> Result<(&str, u8), RangeError> {
    let (addr, prefix) = s
        .split_once('/')
        .ok_or_else(|| RangeError::Syntax(s.to_string()))?;
    let prefix = prefix
        .parse()
        .map_err(|_| RangeError::Syntax(s.to_string()))?;
    Ok((addr, prefix))
}

impl FromStr for Range4 {
    type Err = RangeError;
    fn from_str(s: &str) -> Result<Range4, RangeError> {
        let (addr, prefix) = split_cidr(s)?;
        let addr = addr
            .parse()
            .map_err(|_| RangeError::Syntax(s.to_string()))?;
        Range4::new(addr, prefix)
    }
}

impl FromStr for Range6 {
    type Err = RangeError;
    fn from_str(s: &str) -> Result<Range6, RangeError> {
        let (addr, prefix) = split_cidr(s)?;
        let addr = addr
            .parse()
            .map_err(|_| RangeError::Syntax(s.to_string()))?;
        Range6::new(addr, prefix)
    }
}

impl fmt::Display for Range4 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.base, self.prefix)
    }
}

impl fmt::Display for Range6 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.base, self.prefix)
    }
}

macro_rules! serde_as_string {
    ($t:ty) => {
        impl serde::Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> serde::Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<$t, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}
serde_as_string!(Range4);
serde_as_string!(Range6);

/// Default size of a host's IPv4 range.
pub const DEFAULT_HOST_PREFIX: u8 = 24;
/// Every host's IPv6 range is a /64 (SLAAC-sized, and what the issue and operators expect).
pub const HOST_PREFIX6: u8 = 64;

/// The network's container address space, signed into every certificate by the network key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ContainerNetwork {
    pub subnet: Range4,
    /// Prefix length of each host's IPv4 range.
    pub host_prefix: u8,
    /// The IPv6 subnet; hosts get /64s of it.
    pub subnet6: Option<Range6>,
}

impl ContainerNetwork {
    /// Checks the parameters against each other: the host prefix lies between the subnet's
    /// prefix and /30 (a gateway and one container at least), and a /64 per host fits as many
    /// times in `subnet6` as host ranges fit in `subnet`, so every IPv4 range has its /64.
    pub fn new(
        subnet: Range4,
        host_prefix: u8,
        subnet6: Option<Range6>,
    ) -> Result<ContainerNetwork, RangeError> {
        if host_prefix < subnet.prefix() || host_prefix > 30 {
            return Err(RangeError::Mismatch(format!(
                "host prefix /{host_prefix} must be between the subnet's /{} and /30",
                subnet.prefix()
            )));
        }
        if let Some(six) = subnet6 {
            let ranges_bits = host_prefix - subnet.prefix();
            if u32::from(six.prefix()) + u32::from(ranges_bits) > u32::from(HOST_PREFIX6) {
                return Err(RangeError::Mismatch(format!(
                    "subnet6 {six} has too few /64s for the {} host ranges of {subnet}: use a \
                     prefix of /{} or shorter",
                    1u64 << ranges_bits,
                    HOST_PREFIX6 - ranges_bits
                )));
            }
        }
        Ok(ContainerNetwork {
            subnet,
            host_prefix,
            subnet6,
        })
    }

    /// How many host ranges the subnet holds.
    pub fn range_count(&self) -> u64 {
        1u64 << (self.host_prefix - self.subnet.prefix())
    }

    /// The `index`th host range.
    pub fn range(&self, index: u64) -> Option<Range4> {
        if index >= self.range_count() {
            return None;
        }
        let step = 1u64 << (32 - u32::from(self.host_prefix));
        let base = self.subnet.nth(index * step)?;
        Range4::new(base, self.host_prefix).ok()
    }

    /// Which host range `range` is, if it is one of this network's.
    pub fn index_of(&self, range: &Range4) -> Option<u64> {
        if range.prefix() != self.host_prefix || !self.subnet.contains(range.base()) {
            return None;
        }
        let offset = u32::from(range.base()) - u32::from(self.subnet.base());
        Some(u64::from(offset >> (32 - u32::from(self.host_prefix))))
    }

    /// The IPv6 /64 that goes with the IPv4 range `range` (same index), if there is a subnet6.
    pub fn range6_for(&self, range: &Range4) -> Option<Range6> {
        let six = self.subnet6?;
        let index = self.index_of(range)?;
        let base = u128::from(six.base()) | (u128::from(index) << (128 - u32::from(HOST_PREFIX6)));
        Range6::new(Ipv6Addr::from(base), HOST_PREFIX6).ok()
    }
}

/// The first host range of `network` that overlaps none of `taken` (lowest index first, so the
/// choice is the same on every admin that knows the same members), or `None` when all are taken.
pub fn next_free_range<'a>(
    network: &ContainerNetwork,
    taken: impl IntoIterator<Item = &'a Range4> + Clone,
) -> Option<Range4> {
    (0..network.range_count())
        .filter_map(|i| network.range(i))
        .find(|candidate| !taken.clone().into_iter().any(|t| t.overlaps(candidate)))
}

/// The lowest assignable address of `range` for which `in_use` is false.
pub fn first_free_address(range: &Range4, in_use: impl Fn(Ipv4Addr) -> bool) -> Option<Ipv4Addr> {
    (0..range.size())
        .filter_map(|n| range.nth(n))
        .find(|a| range.is_assignable(*a) && !in_use(*a))
}

/// A member's address grant in typed form, checked for consistency with its network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    pub network: ContainerNetwork,
    pub range: Range4,
    pub range6: Option<Range6>,
    /// Unix seconds when the range was first granted to the member (renewals keep it).
    pub granted_at: u64,
}

impl Grant {
    /// The typed grant of a certificate's, or `None` when it does not hold together (host bits
    /// set, a host prefix out of bounds, a range that is not one of the network's host ranges,
    /// an IPv6 range that is not the /64 paired with the IPv4 one).
    pub fn from_certificate(g: &AddressGrant) -> Option<Grant> {
        let subnet = Range4::new(g.subnet.0, g.subnet.1).ok()?;
        let subnet6 = match g.subnet6 {
            Some((addr, prefix)) => Some(Range6::new(addr, prefix).ok()?),
            None => None,
        };
        let network = ContainerNetwork::new(subnet, g.host_prefix, subnet6).ok()?;
        let range = Range4::new(g.range.0, g.range.1).ok()?;
        network.index_of(&range)?;
        let range6 = match g.range6 {
            Some((addr, prefix)) => Some(Range6::new(addr, prefix).ok()?),
            None => None,
        };
        (range6 == network.range6_for(&range)).then_some(Grant {
            network,
            range,
            range6,
            granted_at: g.granted_at,
        })
    }

    /// A grant of `range` (one of `network`'s host ranges) made at `granted_at`.
    pub fn new(network: ContainerNetwork, range: Range4, granted_at: u64) -> Option<Grant> {
        network.index_of(&range)?;
        Some(Grant {
            network,
            range,
            range6: network.range6_for(&range),
            granted_at,
        })
    }

    /// What the certificate carries.
    pub fn to_certificate(&self) -> AddressGrant {
        AddressGrant {
            subnet: (self.network.subnet.base(), self.network.subnet.prefix()),
            host_prefix: self.network.host_prefix,
            range: (self.range.base(), self.range.prefix()),
            granted_at: self.granted_at,
            subnet6: self.network.subnet6.map(|s| (s.base(), s.prefix())),
            range6: self.range6.map(|r| (r.base(), r.prefix())),
        }
    }
}

/// Why an admin could not grant a range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrantError {
    #[error("{0} is not one of the /{1} host ranges of the network's subnet {2}")]
    NotAHostRange(Range4, u8, Range4),
    #[error("{0} overlaps a range held by a member (or one released less than a day ago)")]
    Taken(Range4),
    #[error("every /{0} range of {1} is held")]
    Full(u8, Range4),
}

/// An admin's choice of a range for a new member: `requested` if it is a free host range of the
/// network, else the lowest free one. `taken` are the ranges held (and in their grace period).
pub fn choose_range(
    network: &ContainerNetwork,
    requested: Option<Range4>,
    taken: &[Range4],
) -> Result<Range4, GrantError> {
    match requested {
        Some(range) if network.index_of(&range).is_none() => Err(GrantError::NotAHostRange(
            range,
            network.host_prefix,
            network.subnet,
        )),
        Some(range) if taken.iter().any(|t| t.overlaps(&range)) => Err(GrantError::Taken(range)),
        Some(range) => Ok(range),
        None => next_free_range(network, taken)
            .ok_or(GrantError::Full(network.host_prefix, network.subnet)),
    }
}

/// A free range for a member whose range lost a conflict: the first free one from a start that
/// the member's key picks. Two admins moving the same member choose the same range, and admins
/// moving different members at the same moment rarely choose the same one (lowest-free would make
/// every concurrent move collide again).
pub fn free_range_for(
    network: &ContainerNetwork,
    key: &PublicKey,
    taken: &[Range4],
) -> Result<Range4, GrantError> {
    let count = network.range_count();
    let bytes = key.as_bytes();
    let start = u64::from_le_bytes(bytes[..8].try_into().expect("8 of 32 bytes")) % count;
    (0..count)
        .filter_map(|i| network.range((start + i) % count))
        .find(|candidate| !taken.iter().any(|t| t.overlaps(candidate)))
        .ok_or(GrantError::Full(network.host_prefix, network.subnet))
}

/// A live member's range, as the collision rule sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeHolder {
    pub key: PublicKey,
    pub name: String,
    pub range: Range4,
    pub granted_at: u64,
}

impl RangeHolder {
    /// The order of precedence: granted first, then the lower key.
    fn precedence(&self) -> (u64, PublicKey) {
        (self.granted_at, self.key)
    }
}

/// Two live members whose ranges overlap, and which of them keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeConflict {
    pub keeper: RangeHolder,
    pub loser: RangeHolder,
}

/// Every overlapping pair among `holders`, each with its keeper by the collision rule. Sorted by
/// range so the sweep only compares neighbours that can overlap.
pub fn find_conflicts(holders: &[RangeHolder]) -> Vec<RangeConflict> {
    let mut order: Vec<&RangeHolder> = holders.iter().collect();
    order.sort_by_key(|h| (h.range.base(), h.range.prefix()));
    let mut out = Vec::new();
    for (i, a) in order.iter().enumerate() {
        for b in order[i + 1..]
            .iter()
            .take_while(|b| b.range.base() <= a.range.last())
        {
            if a.key == b.key || !a.range.overlaps(&b.range) {
                continue;
            }
            let (keeper, loser) = if a.precedence() <= b.precedence() {
                (a, b)
            } else {
                (b, a)
            };
            out.push(RangeConflict {
                keeper: (*keeper).clone(),
                loser: (*loser).clone(),
            });
        }
    }
    out
}

/// What one host's container tooling (the Docker plugin, the CNI plugin, `meshd attach`) needs
/// to know, as the daemon reports it: the network's subnets and this host's share of them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HostNetwork {
    /// The network's container subnet (containers use its prefix length: one L2 segment).
    pub subnet: Range4,
    /// This host's IPv4 range, addresses are handed out from it.
    pub range: Range4,
    /// The gateway address, on the bridge (the range's second address).
    pub gateway: Ipv4Addr,
    pub subnet6: Option<Range6>,
    pub range6: Option<Range6>,
    pub gateway6: Option<Ipv6Addr>,
    /// The MTU containers' interfaces get (the TAP's).
    pub mtu: u16,
    /// The Linux bridge containers are plugged into.
    pub bridge: String,
}

impl HostNetwork {
    /// The host network of a member holding `range` in `network`, on `bridge` with `mtu`.
    pub fn new(
        network: &ContainerNetwork,
        range: Range4,
        range6: Option<Range6>,
        bridge: String,
        mtu: u16,
    ) -> Option<HostNetwork> {
        Some(HostNetwork {
            subnet: network.subnet,
            range,
            gateway: range.gateway()?,
            subnet6: network.subnet6,
            range6,
            gateway6: range6.and_then(|r| r.gateway()),
            mtu,
            bridge,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r4(s: &str) -> Range4 {
        s.parse().unwrap()
    }

    #[test]
    fn ranges_refuse_host_bits_and_bad_prefixes() {
        assert_eq!(
            "10.77.0.1/16".parse::<Range4>().unwrap_err().to_string(),
            "`10.77.0.1/16` has host bits set (did you mean 10.77.0.0/16?)"
        );
        assert!("10.0.0.0/33".parse::<Range4>().is_err());
        assert!("10.0.0.0".parse::<Range4>().is_err());
        assert!("fd77::1/48".parse::<Range6>().is_err());
        assert_eq!(r4("10.77.3.0/24").to_string(), "10.77.3.0/24");
    }

    #[test]
    fn overlap_is_containment_either_way() {
        assert!(r4("10.77.0.0/16").overlaps(&r4("10.77.3.0/24")));
        assert!(r4("10.77.3.0/24").overlaps(&r4("10.77.0.0/16")));
        assert!(!r4("10.77.3.0/24").overlaps(&r4("10.77.4.0/24")));
        assert!(r4("10.77.0.0/16").covers(&r4("10.77.3.0/24")));
        assert!(!r4("10.77.3.0/24").covers(&r4("10.77.0.0/16")));
    }

    #[test]
    fn network_ranges_pair_v4_and_v6_by_index() {
        let net = ContainerNetwork::new(r4("10.77.0.0/16"), 24, Some("fd77::/48".parse().unwrap()))
            .unwrap();
        assert_eq!(net.range_count(), 256);
        assert_eq!(net.range(3), Some(r4("10.77.3.0/24")));
        assert_eq!(net.range(256), None);
        assert_eq!(net.index_of(&r4("10.77.3.0/24")), Some(3));
        assert_eq!(net.index_of(&r4("10.78.3.0/24")), None);
        assert_eq!(
            net.range6_for(&r4("10.77.3.0/24")).unwrap().to_string(),
            "fd77:0:0:3::/64"
        );
        // 256 /24s need 8 bits between /48 and /64: a /57 subnet6 is too small.
        assert!(
            ContainerNetwork::new(r4("10.77.0.0/16"), 24, Some("fd77::/57".parse().unwrap()))
                .is_err()
        );
        assert!(ContainerNetwork::new(r4("10.77.0.0/16"), 15, None).is_err());
    }

    fn holder(key: u8, range: &str, granted_at: u64) -> RangeHolder {
        RangeHolder {
            key: PublicKey::from_bytes([key; 32]),
            name: format!("h{key}"),
            range: r4(range),
            granted_at,
        }
    }

    #[test]
    fn the_member_granted_first_keeps_an_overlapping_range() {
        let holders = [
            holder(1, "10.77.1.0/24", 50),
            holder(2, "10.77.2.0/24", 10),
            holder(3, "10.77.1.0/24", 40),
            holder(4, "10.77.3.0/24", 5),
            holder(5, "10.77.3.0/24", 5),
        ];
        let conflicts = find_conflicts(&holders);
        assert_eq!(conflicts.len(), 2, "{conflicts:?}");
        assert_eq!(conflicts[0].keeper.name, "h3", "granted at 40, before 50");
        assert_eq!(conflicts[0].loser.name, "h1");
        assert_eq!(conflicts[1].keeper.name, "h4", "same time: the lower key");
        assert_eq!(conflicts[1].loser.name, "h5");
        // The rule does not depend on the order the holders are listed in.
        let mut reversed = holders.to_vec();
        reversed.reverse();
        let again = find_conflicts(&reversed);
        let names = |c: &[RangeConflict]| {
            let mut v: Vec<_> = c
                .iter()
                .map(|c| (c.keeper.name.clone(), c.loser.name.clone()))
                .collect();
            v.sort();
            v
        };
        assert_eq!(names(&again), names(&conflicts));
    }

    #[test]
    fn grants_round_trip_and_refuse_inconsistent_certificate_fields() {
        let net = ContainerNetwork::new(r4("10.77.0.0/16"), 24, Some("fd77::/48".parse().unwrap()))
            .unwrap();
        let grant = Grant::new(net, r4("10.77.9.0/24"), 77).unwrap();
        assert_eq!(grant.range6.unwrap().to_string(), "fd77:0:0:9::/64");
        assert_eq!(
            Grant::from_certificate(&grant.to_certificate()),
            Some(grant)
        );
        let mut wrong6 = grant.to_certificate();
        wrong6.range6 = Some(("fd77:0:0:8::".parse().unwrap(), 64));
        assert_eq!(Grant::from_certificate(&wrong6), None);
        assert_eq!(
            choose_range(&net, Some(r4("10.77.9.0/25")), &[])
                .unwrap_err()
                .to_string(),
            "10.77.9.0/25 is not one of the /24 host ranges of the network's subnet 10.77.0.0/16"
        );
        assert!(matches!(
            choose_range(&net, Some(r4("10.77.9.0/24")), &[r4("10.77.9.0/24")]),
            Err(GrantError::Taken(_))
        ));
        assert_eq!(
            choose_range(&net, None, &[r4("10.77.0.0/24")]),
            Ok(r4("10.77.1.0/24"))
        );
    }

    #[test]
    fn allocation_skips_taken_ranges_and_reserved_addresses() {
        let net = ContainerNetwork::new(r4("10.77.0.0/22"), 24, None).unwrap();
        let taken = [r4("10.77.0.0/24"), r4("10.77.2.0/24")];
        assert_eq!(next_free_range(&net, &taken), Some(r4("10.77.1.0/24")));
        let all = [r4("10.77.0.0/22")];
        assert_eq!(next_free_range(&net, &all), None);

        let range = r4("10.77.1.0/30");
        assert_eq!(range.gateway(), Some("10.77.1.1".parse().unwrap()));
        assert_eq!(
            first_free_address(&range, |_| false),
            Some("10.77.1.2".parse().unwrap())
        );
        assert_eq!(
            first_free_address(&range, |a| a == "10.77.1.2".parse::<Ipv4Addr>().unwrap()),
            None,
            "10.77.1.3 is the broadcast address"
        );
    }
}
