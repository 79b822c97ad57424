//! Address management: IPv4 and IPv6 CIDR arithmetic, Docker's default-address-pools
//! selection of a free IPv4 subnet, a random unique-local IPv6 /64 when none is given, and
//! per-network allocation of container addresses (the allocation maps are persisted by the
//! caller together with the network, see `store`).

use std::collections::BTreeMap;
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{NetworkError, Result};

/// An IPv4 network in CIDR notation, always stored with host bits cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ipv4Net {
    addr: Ipv4Addr,
    prefix: u8,
}

impl Ipv4Net {
    /// Builds a network, clearing host bits (`10.1.2.3/16` becomes `10.1.0.0/16`).
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Result<Self> {
        if prefix > 32 {
            return Err(NetworkError::InvalidCidr(format!("{addr}/{prefix}")));
        }
        let bits = u32::from(addr) & mask(prefix);
        Ok(Self {
            addr: Ipv4Addr::from(bits),
            prefix,
        })
    }
    pub fn network(&self) -> Ipv4Addr {
        self.addr
    }
    pub fn prefix(&self) -> u8 {
        self.prefix
    }
    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) | !mask(self.prefix))
    }
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & mask(self.prefix) == u32::from(self.addr)
    }
    /// True if either network contains the other.
    pub fn overlaps(&self, other: &Ipv4Net) -> bool {
        self.contains(other.addr) || other.contains(self.addr)
    }
    /// The `n`th address of the network (0 is the network address).
    pub fn nth(&self, n: u32) -> Option<Ipv4Addr> {
        let size = 1u64 << (32 - self.prefix);
        (u64::from(n) < size).then(|| Ipv4Addr::from(u32::from(self.addr) + n))
    }
}

fn mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    }
}

impl FromStr for Ipv4Net {
    type Err = NetworkError;
    fn from_str(s: &str) -> Result<Self> {
        let bad = || NetworkError::InvalidCidr(s.to_string());
        let (a, p) = s.split_once('/').ok_or_else(bad)?;
        let addr: Ipv4Addr = a.parse().map_err(|_| bad())?;
        let prefix: u8 = p.parse().map_err(|_| bad())?;
        if prefix > 32 {
            return Err(bad());
        }
        Self::new(addr, prefix)
    }
}

impl fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl Serialize for Ipv4Net {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Ipv4Net {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
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

/// Per-network address allocation. `allocated` maps address to owner (container id, or
/// `"gateway"`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Allocations {
    pub allocated: BTreeMap<Ipv4Addr, String>,
}

impl Allocations {
    /// Reserves `ip` (static address) for `owner`.
    pub fn reserve(
        &mut self,
        network: &str,
        subnet: &Ipv4Net,
        ip: Ipv4Addr,
        owner: &str,
    ) -> Result<()> {
        if !subnet.contains(ip) || ip == subnet.network() || ip == subnet.broadcast() {
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

    /// Allocates the lowest free address of `range` (which lies within `subnet`).
    pub fn allocate(&mut self, subnet: &Ipv4Net, range: &Ipv4Net, owner: &str) -> Result<Ipv4Addr> {
        let size = 1u64 << (32 - range.prefix());
        for n in 0..size {
            let Some(ip) = range.nth(n as u32) else { break };
            if ip == subnet.network()
                || ip == subnet.broadcast()
                || self.allocated.contains_key(&ip)
            {
                continue;
            }
            self.allocated.insert(ip, owner.to_string());
            return Ok(ip);
        }
        Err(NetworkError::PoolExhausted(range.to_string()))
    }

    pub fn release(&mut self, ip: Ipv4Addr) {
        self.allocated.remove(&ip);
    }
}

/// An IPv6 network in CIDR notation, always stored with host bits cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ipv6Net {
    addr: Ipv6Addr,
    prefix: u8,
}

fn mask6(prefix: u8) -> u128 {
    if prefix == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(prefix))
    }
}

impl Ipv6Net {
    /// Builds a network, clearing host bits.
    pub fn new(addr: Ipv6Addr, prefix: u8) -> Result<Self> {
        if prefix > 128 {
            return Err(NetworkError::InvalidCidr(format!("{addr}/{prefix}")));
        }
        Ok(Self {
            addr: Ipv6Addr::from(u128::from(addr) & mask6(prefix)),
            prefix,
        })
    }
    pub fn network(&self) -> Ipv6Addr {
        self.addr
    }
    pub fn prefix(&self) -> u8 {
        self.prefix
    }
    pub fn contains(&self, ip: Ipv6Addr) -> bool {
        u128::from(ip) & mask6(self.prefix) == u128::from(self.addr)
    }
    /// True if either network contains the other.
    pub fn overlaps(&self, other: &Ipv6Net) -> bool {
        self.contains(other.addr) || other.contains(self.addr)
    }
    /// The `n`th address of the network (0 is the subnet-router anycast address).
    pub fn nth(&self, n: u128) -> Option<Ipv6Addr> {
        let last = !mask6(self.prefix);
        (n <= last).then(|| Ipv6Addr::from(u128::from(self.addr) | n))
    }
    /// A random /64 of fd00::/8 (RFC 4193: a 40-bit random global id, subnet 0), for an
    /// IPv6 network created without a subnet.
    pub fn random_ula() -> Self {
        let global: u64 = rand::random::<u64>() & 0xff_ffff_ffff;
        let bits = (0xfdu128 << 120) | (u128::from(global) << 80);
        Self {
            addr: Ipv6Addr::from(bits),
            prefix: 64,
        }
    }
}

impl FromStr for Ipv6Net {
    type Err = NetworkError;
    fn from_str(s: &str) -> Result<Self> {
        let bad = || NetworkError::InvalidCidr(s.to_string());
        let (a, p) = s.split_once('/').ok_or_else(bad)?;
        let addr: Ipv6Addr = a.parse().map_err(|_| bad())?;
        let prefix: u8 = p.parse().map_err(|_| bad())?;
        if prefix > 128 {
            return Err(bad());
        }
        Self::new(addr, prefix)
    }
}

impl fmt::Display for Ipv6Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl Serialize for Ipv6Net {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Ipv6Net {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Per-network IPv6 address allocation, as [`Allocations`]. There is no broadcast address;
/// the subnet-router anycast address (host part 0) is never handed out.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Allocations6 {
    pub allocated: BTreeMap<Ipv6Addr, String>,
}

impl Allocations6 {
    /// Reserves `ip` (static address) for `owner`.
    pub fn reserve(
        &mut self,
        network: &str,
        subnet: &Ipv6Net,
        ip: Ipv6Addr,
        owner: &str,
    ) -> Result<()> {
        if !subnet.contains(ip) || ip == subnet.network() {
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
    /// allocated addresses are visited, so a /64 costs no more than a /120.
    pub fn allocate(&mut self, subnet: &Ipv6Net, range: &Ipv6Net, owner: &str) -> Result<Ipv6Addr> {
        let mut n: u128 = 0;
        while let Some(ip) = range.nth(n) {
            if ip != subnet.network() && !self.allocated.contains_key(&ip) {
                self.allocated.insert(ip, owner.to_string());
                return Ok(ip);
            }
            let Some(next) = n.checked_add(1) else { break };
            n = next;
        }
        Err(NetworkError::PoolExhausted(range.to_string()))
    }

    pub fn release(&mut self, ip: Ipv6Addr) {
        self.allocated.remove(&ip);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_arith() {
        let n: Ipv4Net = "10.1.2.3/16".parse().unwrap();
        assert_eq!(n.to_string(), "10.1.0.0/16");
        assert_eq!(n.broadcast(), Ipv4Addr::new(10, 1, 255, 255));
        assert!(n.contains(Ipv4Addr::new(10, 1, 9, 9)));
        assert!(!n.contains(Ipv4Addr::new(10, 2, 0, 1)));
        assert!(n.overlaps(&"10.1.4.0/24".parse().unwrap()));
        assert!(!n.overlaps(&"10.2.0.0/16".parse().unwrap()));
        for bad in ["10.0.0.0", "10.0.0.0/33", "300.0.0.0/8", "x/8", "10.0.0.0/"] {
            assert!(bad.parse::<Ipv4Net>().is_err(), "{bad}");
        }
    }

    #[test]
    fn pools_skip_taken() {
        let taken = [
            "172.17.0.0/16".parse().unwrap(),
            "172.16.0.0/12".parse().unwrap(),
        ];
        assert_eq!(
            pick_free_pool(&taken).unwrap().to_string(),
            "192.168.0.0/20"
        );
        assert_eq!(pick_free_pool(&[]).unwrap().to_string(), "172.17.0.0/16");
    }

    #[test]
    fn allocate_reserve_release() {
        let s: Ipv4Net = "10.9.0.0/30".parse().unwrap();
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
        let n: Ipv6Net = "2001:389::1/64".parse().unwrap();
        assert_eq!(n.to_string(), "2001:389::/64");
        assert!(n.contains("2001:389::ffff:1".parse().unwrap()));
        assert!(!n.contains("2001:38a::1".parse().unwrap()));
        assert!(n.overlaps(&"2001:389::/96".parse().unwrap()));
        for bad in ["2001:389::", "2001:389::/129", "10.0.0.0/8", "x::/64"] {
            assert!(bad.parse::<Ipv6Net>().is_err(), "{bad}");
        }
        let range: Ipv6Net = "2001:389::/96".parse().unwrap();
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
        let tiny: Ipv6Net = "fd00::/127".parse().unwrap();
        let mut t = Allocations6::default();
        t.allocate(&tiny, &tiny, "c1").unwrap();
        assert!(matches!(
            t.allocate(&tiny, &tiny, "c2"),
            Err(NetworkError::PoolExhausted(_))
        ));
        let ula = Ipv6Net::random_ula();
        assert_eq!((ula.prefix(), ula.network().segments()[0] >> 8), (64, 0xfd));
    }
}
