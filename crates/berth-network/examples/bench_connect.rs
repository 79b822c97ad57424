//! Measures the container-start hot path of berth-network as root: create a netns, connect
//! it (veth, addresses, routes, nftables), disconnect, remove the netns.
//!
//! `cargo run --release -p berth-network --example bench_connect [iterations]`

use std::path::PathBuf;
use std::time::{Duration, Instant};

use berth_network::{
    netns, Config, ConnectRequest, CreateNetwork, NetworkManager, PortMapping, Proto,
};

struct Cleanup(NetworkManager, PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = self.0.remove_all();
        let _ = netns::remove(&self.1);
    }
}

fn summary(name: &str, mut v: Vec<Duration>) {
    v.sort();
    let mean = v.iter().sum::<Duration>() / v.len().max(1) as u32;
    println!(
        "{name:<12} mean {:>8.2?}  p50 {:>8.2?}  max {:>8.2?}",
        mean,
        v[v.len() / 2],
        v[v.len() - 1]
    );
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(20);
    let dir = tempfile::tempdir()?;
    let mut cfg = Config::new(dir.path());
    cfg.table = "berth_bench".into();
    cfg.veth_prefix = "bvbench".into();
    let ns_path = PathBuf::from("/run/berth-bench-netns");
    let env = Cleanup(NetworkManager::open(cfg)?, ns_path.clone());
    let t = Instant::now();
    env.0.create_network(CreateNetwork {
        name: "bench".into(),
        subnet: Some("10.77.9.0/24".into()),
        bridge_name: Some("bbbench0".into()),
        ..Default::default()
    })?;
    println!("create network {:.2?}", t.elapsed());
    for publish in [false, true] {
        println!(
            "-- {}",
            if publish {
                "with -p 127.0.0.1::80"
            } else {
                "no published ports"
            }
        );
        let (mut mk, mut conn, mut disc) = (vec![], vec![], vec![]);
        for i in 0..n {
            let t = Instant::now();
            netns::create(&ns_path)?;
            mk.push(t.elapsed());
            let t = Instant::now();
            env.0.connect(
                "bench",
                ConnectRequest {
                    container_id: format!("bench{i}"),
                    name: format!("bench{i}"),
                    netns: ns_path.clone(),
                    ports: vec![PortMapping {
                        host_ip: std::net::Ipv4Addr::LOCALHOST,
                        host_port: 0,
                        container_port: 80,
                        proto: Proto::Tcp,
                    }],
                    ..Default::default()
                },
            )?;
            conn.push(t.elapsed());
            let t = Instant::now();
            env.0.disconnect("bench", &format!("bench{i}"))?;
            disc.push(t.elapsed());
            netns::remove(&ns_path)?;
        }
        summary("netns create", mk);
        summary("connect", conn);
        summary("disconnect", disc);
    }
    Ok(())
}
