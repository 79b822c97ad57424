//! Address management: Docker's default-address-pools selection of a free IPv4 subnet, a
//! random unique-local IPv6 /64 when none is given, and per-network allocation of container
//! addresses (the allocation maps are persisted by the caller together with the network, see
//! `store`). CIDR arithmetic is `ipnet`'s; [`Subnet`] is what IPAM needs of either family, so
//! that one allocator and one set of checks serve IPv4 and IPv6.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub use ipnet::{Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};

use crate::error::{NetworkError, Result};

/// One address family's networks, as IPAM uses them.
pub trait Subnet: Copy + Eq + fmt::Display {
    type Addr: Copy + Ord + fmt::Display + Into<IpAddr> + std::str::FromStr;
    /// The longest prefix a bridge network may have: room for a gateway and a container.
    const MAX_BRIDGE_PREFIX: u8;
    /// Parses `a/len`, clearing host bits (`10.1.2.3/16` is `10.1.0.0/16`).
    fn parse_cidr(s: &str) -> Result<Self>;
    fn prefix(&self) -> u8;
    fn first(&self) -> Self::Addr;
    fn has(&self, ip: Self::Addr) -> bool;
    /// Addresses never handed out: the network address (IPv6's subnet-router anycast), and
    /// IPv4's broadcast.
    fn reserved(&self, ip: Self::Addr) -> bool;
    /// The `n`th address of the network (0 is the network address).
    fn nth(&self, n: u128) -> Option<Self::Addr>;
    /// True if either network contains the other.
    fn overlaps(&self, other: &Self) -> bool {
        self.has(other.first()) || other.has(self.first())
    }
}

fn parse_net<N: std::str::FromStr>(s: &str) -> Result<N> {
    // ipnet takes `a/len` only; a bare address is not a subnet.
    s.parse()
        .map_err(|_| NetworkError::InvalidCidr(s.to_string()))
}

impl Subnet for Ipv4Net {
    type Addr = Ipv4Addr;
    const MAX_BRIDGE_PREFIX: u8 = 30;
    fn parse_cidr(s: &str) -> Result<Self> {
        parse_net::<Ipv4Net>(s).map(|n| n.trunc())
    }
    fn prefix(&self) -> u8 {
        self.prefix_len()
    }
    fn first(&self) -> Ipv4Addr {
        self.network()
    }
    fn has(&self, ip: Ipv4Addr) -> bool {
        self.contains(&ip)
    }
    fn reserved(&self, ip: Ipv4Addr) -> bool {
        ip == self.network() || ip == self.broadcast()
    }
    fn nth(&self, n: u128) -> Option<Ipv4Addr> {
        let size = 1u128 << (32 - self.prefix_len());
        let n = u32::try_from(n).ok().filter(|_| n < size)?;
        Some(Ipv4Addr::from(u32::from(self.network()) + n))
    }
}

impl Subnet for Ipv6Net {
    type Addr = Ipv6Addr;
    const MAX_BRIDGE_PREFIX: u8 = 126;
    fn parse_cidr(s: &str) -> Result<Self> {
        parse_net::<Ipv6Net>(s).map(|n| n.trunc())
    }
    fn prefix(&self) -> u8 {
        self.prefix_len()
    }
    fn first(&self) -> Ipv6Addr {
        self.network()
    }
    fn has(&self, ip: Ipv6Addr) -> bool {
        self.contains(&ip)
    }
    fn reserved(&self, ip: Ipv6Addr) -> bool {
        ip == self.network()
    }
    fn nth(&self, n: u128) -> Option<Ipv6Addr> {
        let host = u128::from(self.hostmask());
        (n <= host).then(|| Ipv6Addr::from(u128::from(self.network()) | n))
    }
}

/// A random /64 of fd00::/8 (RFC 4193: a 40-bit random global id, subnet 0), for an IPv6
/// network created without a subnet.
pub fn random_ula() -> Ipv6Net {
    let global: u64 = rand::random::<u64>() & 0xff_ffff_ffff;
    let bits = (0xfdu128 << 120) | (u128::from(global) << 80);
    // A /64 is a valid prefix length: `new` cannot fail.
    Ipv6Net::new(Ipv6Addr::from(bits), 64).unwrap_or_default()
}

/// Docker's default address pools: 172.17.0.0/16 .. 172.31.0.0/16 as /16s, then
/// 192.168.0.0/16 carved into /20s. The first candidate overlapping neither an existing
/// network nor a host route is chosen.
pub fn default_pool_candidates() -> impl Iterator<Item = Ipv4Net> {
    let b16 = (17u8..=31).filter_map(|b| Ipv4Net::new(Ipv4Addr::new(172, b, 0, 0), 16).ok());
    let c20 = (0u32..16)
        .filter_map(|i| Ipv4Net::new(Ipv4Addr::new(192, 168, (i * 16) as u8, 0), 20).ok());
    b16.chain(c20)
}

/// Picks the first default pool that overlaps none of `taken`.
pub fn pick_free_pool(taken: &[Ipv4Net]) -> Result<Ipv4Net> {
    default_pool_candidates()
        .find(|c| !taken.iter().any(|t| t.overlaps(c)))
        .ok_or(NetworkError::NoFreePool)
}

/// Per-network address allocation of one family. `allocated` maps address to owner
/// (container id, `"gateway"`, `"aux:<name>"`, or a pool's owners, see `pool`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(bound(
    serialize = "A: Ord + Serialize",
    deserialize = "A: Ord + Deserialize<'de>"
))]
pub struct Allocations<A: Ord = Ipv4Addr> {
    pub allocated: BTreeMap<A, String>,
}

/// The IPv6 allocations of a dual-stack network.
pub type Allocations6 = Allocations<Ipv6Addr>;

impl<A: Ord> Default for Allocations<A> {
    fn default() -> Self {
        Self {
            allocated: BTreeMap::new(),
        }
    }
}

impl<A: Copy + Ord + fmt::Display + Into<IpAddr>> Allocations<A> {
    /// Reserves `ip` (static address) for `owner`.
    pub fn reserve<N: Subnet<Addr = A>>(
        &mut self,
        network: &str,
        subnet: &N,
        ip: A,
        owner: &str,
    ) -> Result<()> {
        if !subnet.has(ip) || subnet.reserved(ip) {
            return Err(NetworkError::OutsideSubnet {
                what: "address",
                addr: ip.to_string(),
                subnet: subnet.to_string(),
            });
        }
        if self.allocated.contains_key(&ip) {
            return Err(NetworkError::AddressInUse {
                addr: ip.into(),
                network: network.to_string(),
            });
        }
        self.allocated.insert(ip, owner.to_string());
        Ok(())
    }

    /// Allocates the lowest free address of `range` (which lies within `subnet`). Only the
    /// addresses up to the first free one are visited, so a /64 costs no more than a /120.
    pub fn allocate<N: Subnet<Addr = A>>(
        &mut self,
        subnet: &N,
        range: &N,
        owner: &str,
    ) -> Result<A> {
        let mut n: u128 = 0;
        while let Some(ip) = range.nth(n) {
            if !subnet.reserved(ip) && !self.allocated.contains_key(&ip) {
                self.allocated.insert(ip, owner.to_string());
                return Ok(ip);
            }
            let Some(next) = n.checked_add(1) else { break };
            n = next;
        }
        Err(NetworkError::PoolExhausted(range.to_string()))
    }

    pub fn release(&mut self, ip: A) {
        self.allocated.remove(&ip);
    }
}

/// The addresses of one family of a new network, checked: the ip range within the subnet,
/// the gateway (given, or the subnet's first host) and the auxiliary addresses, the last two
/// reserved in the returned allocations.
pub struct Plan<N: Subnet> {
    pub ip_range: N,
    pub gateway: N::Addr,
    pub ipam: Allocations<N::Addr>,
    pub aux_addresses: BTreeMap<String, N::Addr>,
}

/// Builds the [`Plan`] of network `name` over `subnet`.
pub fn plan<N: Subnet>(
    name: &str,
    subnet: N,
    ip_range: Option<&str>,
    gateway: Option<&str>,
    aux: &BTreeMap<String, String>,
) -> Result<Plan<N>>
where
    N::Addr: Serialize,
{
    if subnet.prefix() > N::MAX_BRIDGE_PREFIX {
        return Err(NetworkError::InvalidCidr(format!(
            "{subnet}: prefix too long for a bridge network"
        )));
    }
    let ip_range = match ip_range {
        Some(r) => {
            let r = N::parse_cidr(r)?;
            if !subnet.has(r.first()) || r.prefix() < subnet.prefix() {
                return Err(NetworkError::OutsideSubnet {
                    what: "ip range",
                    addr: r.to_string(),
                    subnet: subnet.to_string(),
                });
            }
            r
        }
        None => subnet,
    };
    let addr = |s: &str| {
        s.parse::<N::Addr>()
            .map_err(|_| NetworkError::InvalidAddress(s.to_string()))
    };
    let gateway = match gateway {
        Some(g) => addr(g)?,
        None => subnet
            .nth(1)
            .ok_or_else(|| NetworkError::PoolExhausted(subnet.to_string()))?,
    };
    let mut ipam = Allocations::default();
    ipam.reserve(name, &subnet, gateway, "gateway")
        .map_err(renamed("gateway"))?;
    let mut aux_addresses = BTreeMap::new();
    for (host, a) in aux {
        let ip = addr(a)?;
        ipam.reserve(name, &subnet, ip, &format!("aux:{host}"))
            .map_err(renamed("auxiliary address"))?;
        aux_addresses.insert(host.clone(), ip);
    }
    Ok(Plan {
        ip_range,
        gateway,
        ipam,
        aux_addresses,
    })
}

/// The subnet of a new network: `given` (checked against the `taken` ones), or else what
/// `pick` chooses.
pub fn choose_subnet<N: Subnet>(
    given: Option<&str>,
    taken: &[N],
    pick: impl FnOnce() -> Result<N>,
) -> Result<N> {
    let Some(s) = given else { return pick() };
    let s = N::parse_cidr(s)?;
    if let Some(o) = taken.iter().find(|t| t.overlaps(&s)) {
        return Err(NetworkError::SubnetOverlap {
            subnet: s.to_string(),
            other: o.to_string(),
        });
    }
    Ok(s)
}

/// Names the address an `OutsideSubnet` error is about (`reserve` only knows "address").
fn renamed(what: &'static str) -> impl Fn(NetworkError) -> NetworkError {
    move |e| match e {
        NetworkError::OutsideSubnet { addr, subnet, .. } => {
            NetworkError::OutsideSubnet { what, addr, subnet }
        }
        e => e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(s: &str) -> Ipv4Net {
        Ipv4Net::parse_cidr(s).unwrap()
    }

    fn v6(s: &str) -> Ipv6Net {
        Ipv6Net::parse_cidr(s).unwrap()
    }

    #[test]
    fn parse_and_arith() {
        let n = v4("10.1.2.3/16");
        assert_eq!(n.to_string(), "10.1.0.0/16");
        assert_eq!(n.broadcast(), Ipv4Addr::new(10, 1, 255, 255));
        assert!(n.has(Ipv4Addr::new(10, 1, 9, 9)));
        assert!(!n.has(Ipv4Addr::new(10, 2, 0, 1)));
        assert!(n.overlaps(&v4("10.1.4.0/24")));
        assert!(!n.overlaps(&v4("10.2.0.0/16")));
        assert_eq!(n.nth(1), Some(Ipv4Addr::new(10, 1, 0, 1)));
        assert_eq!(v4("10.0.0.0/30").nth(4), None);
        for bad in ["10.0.0.0", "10.0.0.0/33", "300.0.0.0/8", "x/8", "10.0.0.0/"] {
            assert!(
                matches!(Ipv4Net::parse_cidr(bad), Err(NetworkError::InvalidCidr(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn pools_skip_taken() {
        let taken = [v4("172.17.0.0/16"), v4("172.16.0.0/12")];
        assert_eq!(
            pick_free_pool(&taken).unwrap().to_string(),
            "192.168.0.0/20"
        );
        assert_eq!(pick_free_pool(&[]).unwrap().to_string(), "172.17.0.0/16");
    }

    #[test]
    fn allocate_reserve_release() {
        let s = v4("10.9.0.0/30");
        let mut a = Allocations::default();
        a.reserve("n", &s, Ipv4Addr::new(10, 9, 0, 1), "gateway")
            .unwrap();
        assert_eq!(
            a.allocate(&s, &s, "c1").unwrap(),
            Ipv4Addr::new(10, 9, 0, 2)
        );
        assert!(matches!(
            a.allocate(&s, &s, "c2"),
            Err(NetworkError::PoolExhausted(_))
        ));
        assert!(matches!(
            a.reserve("n", &s, Ipv4Addr::new(10, 9, 0, 2), "c3"),
            Err(NetworkError::AddressInUse { .. })
        ));
        assert!(
            a.reserve("n", &s, Ipv4Addr::new(10, 9, 0, 3), "c3")
                .is_err(),
            "broadcast"
        );
        a.release(Ipv4Addr::new(10, 9, 0, 2));
        assert_eq!(
            a.allocate(&s, &s, "c2").unwrap(),
            Ipv4Addr::new(10, 9, 0, 2)
        );
    }

    #[test]
    fn ipv6_parse_allocate_reserve() {
        let n = v6("2001:389::1/64");
        assert_eq!(n.to_string(), "2001:389::/64");
        assert!(n.has("2001:389::ffff:1".parse().unwrap()));
        assert!(!n.has("2001:38a::1".parse().unwrap()));
        assert!(n.overlaps(&v6("2001:389::/96")));
        for bad in ["2001:389::", "2001:389::/129", "10.0.0.0/8", "x::/64"] {
            assert!(Ipv6Net::parse_cidr(bad).is_err(), "{bad}");
        }
        let range = v6("2001:389::/96");
        let mut a = Allocations6::default();
        a.reserve("n", &n, "2001:389::1".parse().unwrap(), "gateway")
            .unwrap();
        assert_eq!(
            a.allocate(&n, &range, "c1").unwrap().to_string(),
            "2001:389::2",
            "the anycast address and the gateway are skipped"
        );
        assert!(a.reserve("n", &n, n.network(), "c2").is_err());
        assert!(matches!(
            a.reserve("n", &n, "2001:389::2".parse().unwrap(), "c2"),
            Err(NetworkError::AddressInUse { .. })
        ));
        let tiny = v6("fd00::/127");
        let mut t = Allocations6::default();
        t.allocate(&tiny, &tiny, "c1").unwrap();
        assert!(matches!(
            t.allocate(&tiny, &tiny, "c2"),
            Err(NetworkError::PoolExhausted(_))
        ));
        let ula = random_ula();
        assert_eq!((ula.prefix(), ula.network().segments()[0] >> 8), (64, 0xfd));
    }

    #[test]
    fn plans_check_both_families_alike() {
        let aux = BTreeMap::from([("r".to_string(), "10.9.0.200".to_string())]);
        let p = plan("n", v4("10.9.0.0/24"), Some("10.9.0.128/25"), None, &aux).unwrap();
        assert_eq!(p.gateway, Ipv4Addr::new(10, 9, 0, 1));
        assert_eq!(p.ip_range, v4("10.9.0.128/25"));
        assert_eq!(p.ipam.allocated.len(), 2);
        let err = plan::<Ipv6Net>(
            "n",
            v6("fd00::/64"),
            Some("fd01::/80"),
            None,
            &BTreeMap::new(),
        );
        assert!(matches!(
            err,
            Err(NetworkError::OutsideSubnet {
                what: "ip range",
                ..
            })
        ));
        let err = plan::<Ipv4Net>(
            "n",
            v4("10.9.0.0/24"),
            None,
            Some("10.8.0.1"),
            &BTreeMap::new(),
        );
        assert!(matches!(
            err,
            Err(NetworkError::OutsideSubnet {
                what: "gateway",
                ..
            })
        ));
        assert!(matches!(
            plan::<Ipv4Net>("n", v4("10.9.0.0/31"), None, None, &BTreeMap::new()),
            Err(NetworkError::InvalidCidr(_))
        ));
        let taken = [v6("fd00::/64")];
        assert!(matches!(
            choose_subnet(Some("fd00::/80"), &taken, || Ok(random_ula())),
            Err(NetworkError::SubnetOverlap { .. })
        ));
    }
}
