//! The embedded DNS server for user-defined networks. One server per network listens on the
//! bridge gateway address (UDP and TCP port 53) in the daemon's namespace; containers'
//! resolv.conf points at it. It answers A and AAAA queries (AAAA for containers on IPv6
//! networks) for container names, aliases, short ids and the asking container's `--link`
//! aliases, and relays everything else unchanged to the host's resolvers.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::{
    rdata::{A, AAAA},
    RData, Record, RecordType,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::JoinHandle;

use crate::error::{NetworkError, Result};

/// Answers names local to a network; implemented by [`crate::NetworkManager`].
pub trait NameResolver: Send + Sync + 'static {
    /// Addresses for `name` asked by `client` of the server at `server`, or `None` to
    /// forward the query upstream.
    fn resolve(&self, server: Ipv4Addr, client: Ipv4Addr, name: &str) -> Option<Vec<IpAddr>>;
}

impl NameResolver for crate::NetworkManager {
    fn resolve(&self, server: Ipv4Addr, client: Ipv4Addr, name: &str) -> Option<Vec<IpAddr>> {
        crate::NetworkManager::resolve(self, server, client, name)
    }
}

/// Local records answer with a short TTL: containers come and go.
const TTL: u32 = 600;
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(3);

/// Upstream resolvers from resolv.conf text (port 53).
pub fn upstreams_from_resolv_conf(text: &str) -> Vec<SocketAddr> {
    crate::files::parse_resolv_conf(text)
        .nameservers
        .iter()
        .filter_map(|n| n.parse::<std::net::IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

/// A running server; dropping it stops it.
#[derive(Debug)]
pub struct DnsServer {
    addr: SocketAddrV4,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

struct Ctx {
    server: Ipv4Addr,
    resolver: Arc<dyn NameResolver>,
    upstreams: Vec<SocketAddr>,
}

impl DnsServer {
    /// Binds UDP and TCP on `addr` and serves until dropped. Must run inside tokio.
    pub async fn start(
        addr: SocketAddrV4,
        resolver: Arc<dyn NameResolver>,
        upstreams: Vec<SocketAddr>,
    ) -> Result<Self> {
        let (udp, tcp, addr) = bind_pair(addr).await?;
        let ctx = Arc::new(Ctx {
            server: *addr.ip(),
            resolver,
            upstreams,
        });
        let udp = Arc::new(udp);
        let c = ctx.clone();
        let udp_task = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let Ok((n, peer)) = udp.recv_from(&mut buf).await else {
                    continue;
                };
                let (udp, c, q) = (udp.clone(), c.clone(), buf[..n].to_vec());
                tokio::spawn(async move {
                    if let Some(resp) = handle(&c, peer, &q).await {
                        let _ = udp.send_to(&resp, peer).await;
                    }
                });
            }
        });
        let tcp_task = tokio::spawn(async move {
            loop {
                let Ok((stream, peer)) = tcp.accept().await else {
                    continue;
                };
                let c = ctx.clone();
                tokio::spawn(async move {
                    let _ = serve_tcp(&c, stream, peer).await;
                });
            }
        });
        Ok(Self {
            addr,
            tasks: vec![udp_task, tcp_task],
        })
    }

    pub fn local_addr(&self) -> SocketAddrV4 {
        self.addr
    }
}

async fn serve_tcp(c: &Ctx, mut s: TcpStream, peer: SocketAddr) -> std::io::Result<()> {
    loop {
        let len = s.read_u16().await? as usize;
        let mut q = vec![0u8; len];
        s.read_exact(&mut q).await?;
        match tokio::time::timeout(UPSTREAM_TIMEOUT * 2, handle(c, peer, &q)).await {
            Ok(Some(resp)) => {
                s.write_u16(resp.len() as u16).await?;
                s.write_all(&resp).await?;
            }
            _ => return Ok(()),
        }
    }
}

fn reply_to(req: &Message, code: ResponseCode) -> Message {
    let mut m = Message::new();
    m.set_id(req.id())
        .set_message_type(MessageType::Response)
        .set_op_code(req.op_code())
        .set_recursion_desired(req.recursion_desired())
        .set_recursion_available(true)
        .set_response_code(code);
    for q in req.queries() {
        m.add_query(q.clone());
    }
    m
}

/// Builds the response bytes for one query, or `None` if nothing should be sent.
async fn handle(c: &Ctx, peer: SocketAddr, q: &[u8]) -> Option<Vec<u8>> {
    let req = Message::from_vec(q).ok()?;
    if req.message_type() != MessageType::Query {
        return None;
    }
    let client = match peer.ip() {
        std::net::IpAddr::V4(ip) => ip,
        std::net::IpAddr::V6(_) => Ipv4Addr::UNSPECIFIED,
    };
    if req.op_code() == OpCode::Query && req.queries().len() == 1 {
        let query = &req.queries()[0];
        let name = query.name().to_ascii();
        if matches!(
            query.query_type(),
            RecordType::A | RecordType::AAAA | RecordType::ANY
        ) {
            if let Some(ips) = c.resolver.resolve(c.server, client, &name) {
                let mut m = reply_to(&req, ResponseCode::NoError);
                m.set_authoritative(true);
                // A name without an address of the asked family gets an empty NOERROR, as
                // Docker answers AAAA on IPv4-only networks.
                let qt = query.query_type();
                for ip in ips {
                    let rdata = match ip {
                        IpAddr::V4(v4) if qt != RecordType::AAAA => RData::A(A(v4)),
                        IpAddr::V6(v6) if qt != RecordType::A => RData::AAAA(AAAA(v6)),
                        _ => continue,
                    };
                    m.add_answer(Record::from_rdata(query.name().clone(), TTL, rdata));
                }
                return m.to_vec().ok();
            }
        }
    }
    match forward(&c.upstreams, q).await {
        Some(resp) => Some(resp),
        None => reply_to(&req, ResponseCode::ServFail).to_vec().ok(),
    }
}

/// Relays the raw query to each upstream in turn over UDP until one answers.
async fn forward(upstreams: &[SocketAddr], q: &[u8]) -> Option<Vec<u8>> {
    for up in upstreams {
        let bind: SocketAddr = if up.is_ipv4() {
            "0.0.0.0:0".parse().ok()?
        } else {
            "[::]:0".parse().ok()?
        };
        let Ok(sock) = UdpSocket::bind(bind).await else {
            continue;
        };
        if sock.send_to(q, up).await.is_err() {
            continue;
        }
        let mut buf = vec![0u8; 4096];
        if let Ok(Ok((n, from))) =
            tokio::time::timeout(UPSTREAM_TIMEOUT, sock.recv_from(&mut buf)).await
        {
            if from == *up && n >= 2 && buf[..2] == q[..2] {
                return Some(buf[..n].to_vec());
            }
        }
    }
    None
}

/// Keeps one [`DnsServer`] per user-defined network of a manager: call [`DnsRegistry::sync`]
/// after creating or removing networks (and once at daemon start). The default `bridge`
/// network gets none, as in Docker.
#[derive(Debug, Default)]
pub struct DnsRegistry {
    servers: std::collections::BTreeMap<String, DnsServer>,
}

impl DnsRegistry {
    /// Starts servers for new networks and stops those of removed ones. Upstreams come from
    /// `resolv_conf` (normally the host's `/etc/resolv.conf`).
    pub async fn sync(
        &mut self,
        mgr: &Arc<crate::NetworkManager>,
        resolv_conf: &str,
    ) -> Result<()> {
        let nets = mgr.list();
        self.servers
            .retain(|id, _| nets.iter().any(|n| &n.id == id));
        let upstreams = upstreams_from_resolv_conf(resolv_conf);
        for n in nets.iter().filter(|n| !n.default_bridge) {
            if !self.servers.contains_key(&n.id) {
                let resolver: Arc<dyn NameResolver> = mgr.clone();
                let server = DnsServer::start(
                    SocketAddrV4::new(n.gateway, 53),
                    resolver,
                    upstreams.clone(),
                )
                .await?;
                self.servers.insert(n.id.clone(), server);
            }
        }
        Ok(())
    }

    /// The server address of a network, if one runs.
    pub fn server_for(&self, network_id: &str) -> Option<SocketAddrV4> {
        self.servers.get(network_id).map(DnsServer::local_addr)
    }
}

/// Binds UDP and TCP on the same address. With port 0 the UDP socket picks an ephemeral port,
/// which another process may already hold for TCP: then try another one.
async fn bind_pair(addr: SocketAddrV4) -> Result<(UdpSocket, TcpListener, SocketAddrV4)> {
    const ATTEMPTS: usize = 16;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let udp = UdpSocket::bind(addr)
            .await
            .map_err(|e| NetworkError::Dns(format!("bind udp {addr}: {e}")))?;
        let bound = match udp.local_addr() {
            Ok(SocketAddr::V4(a)) => a,
            _ => addr,
        };
        match TcpListener::bind(bound).await {
            Ok(tcp) => return Ok((udp, tcp, bound)),
            Err(e)
                if addr.port() == 0
                    && e.kind() == std::io::ErrorKind::AddrInUse
                    && attempt < ATTEMPTS => {}
            Err(e) => return Err(NetworkError::Dns(format!("bind tcp {bound}: {e}"))),
        }
    }
}
