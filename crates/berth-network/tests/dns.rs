//! The embedded DNS server over loopback: local A and AAAA answers, TCP, and relaying
//! unknown names to an upstream (a fake one on 127.0.0.1).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use berth_network::dns::{DnsServer, NameResolver};
use hickory_proto::op::{Message, MessageType, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};

struct Fixed;

impl NameResolver for Fixed {
    fn resolve(&self, _server: Ipv4Addr, _client: Ipv4Addr, name: &str) -> Option<Vec<IpAddr>> {
        let v4 = IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3));
        match name.trim_end_matches('.') {
            "web" => Some(vec![v4]),
            "web6" => Some(vec![
                v4,
                IpAddr::V6(Ipv6Addr::new(0xfd00, 1, 0, 0, 0, 0, 0, 3)),
            ]),
            _ => None,
        }
    }
}

fn query(name: &str, rt: RecordType) -> Message {
    let mut m = Message::new();
    m.set_id(0x4242)
        .set_recursion_desired(true)
        .add_query(Query::query(Name::from_ascii(name).unwrap(), rt));
    m
}

fn ask(server: SocketAddr, m: &Message) -> Message {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.send_to(&m.to_vec().unwrap(), server).unwrap();
    let mut buf = [0u8; 4096];
    let (n, _) = s.recv_from(&mut buf).unwrap();
    Message::from_vec(&buf[..n]).unwrap()
}

#[test]
fn answers_locally_and_forwards_the_rest() {
    // Fake upstream: answers every query with NXDOMAIN, echoing the id.
    let upstream = UdpSocket::bind("127.0.0.1:0").unwrap();
    let up_addr = upstream.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok((n, peer)) = upstream.recv_from(&mut buf) {
            let Ok(req) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            let mut r = Message::new();
            r.set_id(req.id())
                .set_message_type(MessageType::Response)
                .set_response_code(ResponseCode::NXDomain);
            let _ = upstream.send_to(&r.to_vec().unwrap(), peer);
        }
    });
    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = rt
        .block_on(DnsServer::start(
            SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0),
            Arc::new(Fixed),
            vec![up_addr],
        ))
        .unwrap();
    let addr: SocketAddr = server.local_addr().into();

    let r = ask(addr, &query("web.", RecordType::A));
    assert_eq!(r.id(), 0x4242);
    assert_eq!(r.response_code(), ResponseCode::NoError);
    assert!(matches!(r.answers()[0].data(), RData::A(a) if a.0 == Ipv4Addr::new(10, 1, 2, 3)));

    let r = ask(addr, &query("web.", RecordType::AAAA));
    assert_eq!(
        (r.response_code(), r.answers().len()),
        (ResponseCode::NoError, 0)
    );

    // A dual-stack name: AAAA answers its IPv6 address only, A its IPv4 one only.
    let r = ask(addr, &query("web6.", RecordType::AAAA));
    assert_eq!(r.answers().len(), 1);
    assert!(matches!(r.answers()[0].data(),
        RData::AAAA(a) if a.0 == Ipv6Addr::new(0xfd00, 1, 0, 0, 0, 0, 0, 3)));
    let r = ask(addr, &query("web6.", RecordType::A));
    assert_eq!(r.answers().len(), 1);
    assert!(matches!(r.answers()[0].data(), RData::A(_)));

    let r = ask(addr, &query("elsewhere.example.", RecordType::A));
    assert_eq!(
        r.response_code(),
        ResponseCode::NXDomain,
        "relayed from upstream"
    );

    // TCP framing.
    use std::io::{Read, Write};
    let mut t = std::net::TcpStream::connect(addr).unwrap();
    t.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let q = query("web.", RecordType::A).to_vec().unwrap();
    t.write_all(&(q.len() as u16).to_be_bytes()).unwrap();
    t.write_all(&q).unwrap();
    let mut len = [0u8; 2];
    t.read_exact(&mut len).unwrap();
    let mut body = vec![0u8; u16::from_be_bytes(len) as usize];
    t.read_exact(&mut body).unwrap();
    assert_eq!(Message::from_vec(&body).unwrap().answers().len(), 1);
}

#[test]
fn no_upstream_means_servfail() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = rt
        .block_on(DnsServer::start(
            SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0),
            Arc::new(Fixed),
            vec![],
        ))
        .unwrap();
    let r = ask(
        server.local_addr().into(),
        &query("x.example.", RecordType::A),
    );
    assert_eq!(r.response_code(), ResponseCode::ServFail);
}
