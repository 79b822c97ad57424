//! Published ports: parsing Docker's `-p` syntax, `-P` expansion to random host ports and the
//! bind check that rejects a host port something already listens on.

use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, UdpSocket};

use serde::{Deserialize, Serialize};

use crate::error::{NetworkError, Result};

/// Transport protocol of a published port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    pub fn as_str(&self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

/// One published port. `host_port == 0` means "pick a free port" (resolved at connect).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PortMapping {
    pub host_ip: Ipv4Addr,
    pub host_port: u16,
    pub container_port: u16,
    pub proto: Proto,
}

/// Parses `[ip:][hostPort:]containerPort[/proto]` (Docker's `-p`). An empty host port
/// (`8080` alone or `127.0.0.1::80`) means a random host port.
pub fn parse_port_spec(spec: &str) -> Result<PortMapping> {
    let bad = |reason: &str| NetworkError::InvalidPortSpec {
        spec: spec.to_string(),
        reason: reason.to_string(),
    };
    let (body, proto) = match spec.rsplit_once('/') {
        Some((b, "tcp")) => (b, Proto::Tcp),
        Some((b, "udp")) => (b, Proto::Udp),
        Some(_) => return Err(bad("protocol must be tcp or udp")),
        None => (spec, Proto::Tcp),
    };
    let parts: Vec<&str> = body.split(':').collect();
    let (ip, host, cont) = match parts.as_slice() {
        [c] => ("", "", *c),
        [h, c] => ("", *h, *c),
        [i, h, c] => (*i, *h, *c),
        _ => return Err(bad("too many ':'")),
    };
    let host_ip = if ip.is_empty() {
        Ipv4Addr::UNSPECIFIED
    } else {
        ip.parse().map_err(|_| bad("invalid host ip"))?
    };
    let port = |s: &str| s.parse::<u16>().ok().filter(|p| *p != 0);
    let container_port = port(cont).ok_or_else(|| bad("invalid container port"))?;
    let host_port = if host.is_empty() {
        0
    } else {
        port(host).ok_or_else(|| bad("invalid host port"))?
    };
    Ok(PortMapping {
        host_ip,
        host_port,
        container_port,
        proto,
    })
}

/// Fails with `PortInUse` if `addr:port` cannot be bound right now.
pub fn check_bindable(addr: Ipv4Addr, port: u16, proto: Proto) -> Result<()> {
    let sa = SocketAddrV4::new(addr, port);
    let ok = match proto {
        Proto::Tcp => TcpListener::bind(sa).is_ok(),
        Proto::Udp => UdpSocket::bind(sa).is_ok(),
    };
    if ok {
        Ok(())
    } else {
        Err(NetworkError::PortInUse {
            addr,
            port,
            proto: proto.as_str(),
        })
    }
}

/// Resolves random host ports and bind-checks every mapping. `taken` are host ports
/// already published by Berth (DNAT leaves no listening socket to detect them).
pub fn resolve(
    mappings: &[PortMapping],
    taken: &[(Ipv4Addr, u16, Proto)],
) -> Result<Vec<PortMapping>> {
    let mut out: Vec<PortMapping> = Vec::with_capacity(mappings.len());
    let clash = |ip: Ipv4Addr, port: u16, proto: Proto, out: &[PortMapping]| {
        let same = |a: Ipv4Addr| a == ip || a.is_unspecified() || ip.is_unspecified();
        taken
            .iter()
            .any(|(a, p, pr)| *p == port && *pr == proto && same(*a))
            || out
                .iter()
                .any(|m| m.host_port == port && m.proto == proto && same(m.host_ip))
    };
    for m in mappings {
        let mut m = m.clone();
        if m.host_port == 0 {
            // Docker's ephemeral range for -P.
            let start = 49153 + (rand::random::<u16>() % 16000);
            let found = (0..16383u32)
                .map(|i| (49153 + (u32::from(start - 49153) + i) % 16383) as u16)
                .find(|p| {
                    !clash(m.host_ip, *p, m.proto, &out)
                        && check_bindable(m.host_ip, *p, m.proto).is_ok()
                });
            m.host_port = found.ok_or_else(|| {
                NetworkError::NoFreeHostPort(format!("{}/{}", m.container_port, m.proto.as_str()))
            })?;
        } else {
            if clash(m.host_ip, m.host_port, m.proto, &out) {
                return Err(NetworkError::PortInUse {
                    addr: m.host_ip,
                    port: m.host_port,
                    proto: m.proto.as_str(),
                });
            }
            check_bindable(m.host_ip, m.host_port, m.proto)?;
        }
        out.push(m);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_docker_syntax() {
        let m = parse_port_spec("8080:80").unwrap();
        assert_eq!(
            (m.host_ip, m.host_port, m.container_port, m.proto),
            (Ipv4Addr::UNSPECIFIED, 8080, 80, Proto::Tcp)
        );
        let m = parse_port_spec("127.0.0.1:5353:53/udp").unwrap();
        assert_eq!(
            (m.host_ip, m.host_port, m.container_port, m.proto),
            (Ipv4Addr::LOCALHOST, 5353, 53, Proto::Udp)
        );
        assert_eq!(parse_port_spec("127.0.0.1::80").unwrap().host_port, 0);
        assert_eq!(parse_port_spec("80").unwrap().host_port, 0);
        for bad in ["", "0", "a:80", "1:2:3:4", "80/sctp", "x.y:1:2", "70000:80"] {
            assert!(parse_port_spec(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn bind_check_detects_listener() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let m = PortMapping {
            host_ip: Ipv4Addr::LOCALHOST,
            host_port: port,
            container_port: 80,
            proto: Proto::Tcp,
        };
        assert!(matches!(
            resolve(std::slice::from_ref(&m), &[]),
            Err(NetworkError::PortInUse { .. })
        ));
        let r = resolve(&[PortMapping { host_port: 0, ..m }], &[]).unwrap();
        assert!(r[0].host_port >= 49153);
    }
}
