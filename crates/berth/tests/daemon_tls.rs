//! The daemon on TCP with mutual TLS (`--tlsverify`), driven by the real docker CLI: a client
//! with a certificate from the CA gets in, one without is refused, plain HTTP is refused.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod daemon_common;

const BERTH: &str = env!("CARGO_BIN_EXE_berth");
const DOCKER: &str = "/usr/local/bin/docker";

fn openssl(dir: &std::path::Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl");
    assert!(out.status.success(), "openssl {args:?}: {out:?}");
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, as PEM files.
fn certificates(dir: &std::path::Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca-key.pem",
            "-out",
            "ca.pem",
            "-days",
            "1",
            "-subj",
            "/CN=test-ca",
        ],
    );
    for (name, subject, ext) in [
        (
            "server",
            "/CN=localhost",
            "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
        ),
        ("client", "/CN=client", "extendedKeyUsage=clientAuth\n"),
    ] {
        std::fs::write(dir.join(format!("{name}.ext")), ext).unwrap();
        openssl(
            dir,
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                &format!("{name}-key.pem"),
                "-out",
                &format!("{name}.csr"),
                "-subj",
                subject,
            ],
        );
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca-key.pem",
                "-CAcreateserial",
                "-out",
                &format!("{name}-cert.pem"),
                "-days",
                "1",
                "-extfile",
                &format!("{name}.ext"),
            ],
        );
    }
}

/// Kills the daemon, then detaches what it left mounted under its directory.
struct Kill(std::process::Child, std::path::PathBuf);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        daemon_common::unmount_under(&self.1);
    }
}

#[test]
fn docker_cli_over_mutual_tls() {
    let have = |p: &str| {
        Command::new(p)
            .arg("version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok()
    };
    if !std::path::Path::new(DOCKER).exists() || !have("openssl") {
        eprintln!("skipping: docker CLI or openssl missing");
        return;
    }
    let dir = tempfile::Builder::new().prefix("bt").tempdir().unwrap();
    let d = dir.path();
    certificates(d);
    // A free port: bind, read it, release it for the daemon.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    std::fs::write(d.join("daemon.json"), "{}").unwrap();
    let log = std::fs::File::create(d.join("daemon.log")).unwrap();
    // Dropped after `_guard` kills the daemon: removes its links and table.
    let net = daemon_common::NetInstance::acquire();
    let child = Command::new(BERTH)
        .args([
            "daemon",
            "-H",
            &format!("tcp://127.0.0.1:{port}"),
            "--tlsverify",
        ])
        .arg("--tlscacert")
        .arg(d.join("ca.pem"))
        .arg("--tlscert")
        .arg(d.join("server-cert.pem"))
        .arg("--tlskey")
        .arg(d.join("server-key.pem"))
        .arg("--data-root")
        .arg(d.join("data"))
        .arg("--exec-root")
        .arg(d.join("run"))
        .arg("--config-file")
        .arg(d.join("daemon.json"))
        .arg("--network-instance")
        .arg(&net.tag)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let _guard = Kill(child, d.to_path_buf());
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "daemon did not listen: {}",
            std::fs::read_to_string(d.join("daemon.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let host = format!("tcp://127.0.0.1:{port}");
    let docker = |with_cert: bool| {
        let mut cmd = Command::new(DOCKER);
        cmd.env("DOCKER_CONFIG", d.join("docker-config"))
            .args(["--tlsverify", "-H", &host])
            .arg("--tlscacert")
            .arg(d.join("ca.pem"));
        if with_cert {
            cmd.arg("--tlscert")
                .arg(d.join("client-cert.pem"))
                .arg("--tlskey")
                .arg(d.join("client-key.pem"));
        }
        cmd.args(["version", "--format", "{{.Server.APIVersion}}"])
            .output()
            .unwrap()
    };
    let out = docker(true);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "1.47\n");
    let out = docker(false);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("certificate required"),
        "{out:?}"
    );
    // Plain HTTP gets no answer.
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    std::io::Write::write_all(&mut s, b"GET /_ping HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut buf = Vec::new();
    let _ = std::io::Read::read_to_end(&mut s, &mut buf);
    assert!(!String::from_utf8_lossy(&buf).contains("200 OK"));
}
