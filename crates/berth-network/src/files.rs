//! Per-container `/etc/hosts`, `/etc/hostname` and `/etc/resolv.conf` contents, following
//! Docker: user-defined networks point resolv.conf at the embedded DNS server, the default
//! bridge and host modes copy the host's resolvers (minus loopback ones, unreachable from a
//! container namespace).

use std::net::{Ipv4Addr, Ipv6Addr};

/// `/etc/hostname`.
pub fn hostname_file(hostname: &str) -> String {
    format!("{hostname}\n")
}

/// One extra `/etc/hosts` line (`--add-host`, or a legacy link on the default bridge).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostEntry {
    pub ip: Ipv4Addr,
    pub names: Vec<String>,
}

/// `/etc/hosts`: localhost entries, extra entries, then the container's own addresses
/// (IPv4, then IPv6 on an IPv6 network, as dockerd writes them).
pub fn hosts_file(
    hostname: &str,
    domain: Option<&str>,
    own_ip: Option<Ipv4Addr>,
    own_ip6: Option<Ipv6Addr>,
    extra: &[HostEntry],
) -> String {
    let mut s = String::from(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::\tip6-localnet\nff00::\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n",
    );
    for e in extra {
        s.push_str(&format!("{}\t{}\n", e.ip, e.names.join(" ")));
    }
    let own = own_ip
        .map(std::net::IpAddr::V4)
        .into_iter()
        .chain(own_ip6.map(std::net::IpAddr::V6));
    for ip in own {
        match domain {
            Some(d) if !d.is_empty() => s.push_str(&format!("{ip}\t{hostname}.{d} {hostname}\n")),
            _ => s.push_str(&format!("{ip}\t{hostname}\n")),
        }
    }
    s
}

/// Nameservers, search domains and options parsed from a resolv.conf.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResolvConf {
    pub nameservers: Vec<String>,
    pub search: Vec<String>,
    pub options: Vec<String>,
}

/// Parses resolv.conf text, ignoring comments and unknown lines.
pub fn parse_resolv_conf(text: &str) -> ResolvConf {
    let mut rc = ResolvConf::default();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") => rc.nameservers.extend(words.next().map(str::to_string)),
            Some("search") | Some("domain") => rc.search = words.map(str::to_string).collect(),
            Some("options") => rc.options.extend(words.map(str::to_string)),
            _ => {}
        }
    }
    rc
}

/// A container's resolv.conf. With `embedded_dns` (user-defined networks) the only
/// nameserver is the embedded server; otherwise the host's non-loopback ones, or Google's
/// public resolvers as Docker falls back to when none remain.
pub fn resolv_conf(
    host: &ResolvConf,
    embedded_dns: Option<Ipv4Addr>,
    dns: &[String],
    search: &[String],
    options: &[String],
) -> String {
    let mut s = String::new();
    let servers: Vec<String> = if let Some(ip) = embedded_dns {
        vec![ip.to_string()]
    } else if !dns.is_empty() {
        dns.to_vec()
    } else {
        let v: Vec<String> = host
            .nameservers
            .iter()
            .filter(|n| {
                !n.parse::<std::net::IpAddr>()
                    .map(|ip| ip.is_loopback())
                    .unwrap_or(false)
            })
            .cloned()
            .collect();
        if v.is_empty() {
            vec!["8.8.8.8".into(), "8.8.4.4".into()]
        } else {
            v
        }
    };
    for n in servers {
        s.push_str(&format!("nameserver {n}\n"));
    }
    let search = if search.is_empty() {
        &host.search
    } else {
        &search.to_vec()
    };
    if !search.is_empty() {
        s.push_str(&format!("search {}\n", search.join(" ")));
    }
    let options = if options.is_empty() {
        &host.options
    } else {
        &options.to_vec()
    };
    if !options.is_empty() {
        s.push_str(&format!("options {}\n", options.join(" ")));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_and_hosts() {
        let host = parse_resolv_conf(
            "# c\nnameserver 127.0.0.53\nnameserver 10.0.0.2\nsearch a.example\noptions ndots:2\n",
        );
        assert_eq!(host.nameservers, ["127.0.0.53", "10.0.0.2"]);
        assert_eq!(
            resolv_conf(&host, None, &[], &[], &[]),
            "nameserver 10.0.0.2\nsearch a.example\noptions ndots:2\n"
        );
        let e = resolv_conf(&host, Some(Ipv4Addr::new(10, 5, 0, 1)), &[], &[], &[]);
        assert!(e.starts_with("nameserver 10.5.0.1\n"));
        let h = hosts_file(
            "abc",
            None,
            Some(Ipv4Addr::new(10, 5, 0, 2)),
            None,
            &[HostEntry {
                ip: Ipv4Addr::new(10, 5, 0, 3),
                names: vec!["db".into()],
            }],
        );
        assert!(h.contains("10.5.0.3\tdb\n") && h.ends_with("10.5.0.2\tabc\n"));
        assert_eq!(hostname_file("abc"), "abc\n");
        let h6 = hosts_file(
            "abc",
            None,
            Some(Ipv4Addr::new(10, 5, 0, 2)),
            Some("fd00:1::2".parse().unwrap()),
            &[],
        );
        assert!(h6.ends_with("10.5.0.2\tabc\nfd00:1::2\tabc\n"), "{h6}");
    }
}
