//! The daemon's configuration: `berth daemon` flags merged with `daemon.json`.
//!
//! Flags and file keys are named as dockerd names them. As in dockerd, a directive given both as
//! a flag and in the file is an error, and so is a file key that names no option.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// Default API socket.
pub const DEFAULT_HOST: &str = "unix:///run/berth/berth.sock";
/// Default persistent state directory.
pub const DEFAULT_DATA_ROOT: &str = "/var/lib/berth";
/// Default runtime state directory.
pub const DEFAULT_EXEC_ROOT: &str = "/run/berth";
/// Default configuration file.
pub const DEFAULT_CONFIG_FILE: &str = "/etc/berth/daemon.json";

/// `berth daemon` command-line flags.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct DaemonArgs {
    /// Daemon socket(s) to connect to (unix:///path or tcp://host:port)
    #[arg(short = 'H', long = "host", value_name = "HOST")]
    pub hosts: Vec<String>,
    /// Root directory of persistent Berth state
    #[arg(long, value_name = "DIR")]
    pub data_root: Option<PathBuf>,
    /// Root directory for execution state files
    #[arg(long, value_name = "DIR")]
    pub exec_root: Option<PathBuf>,
    /// Daemon configuration file
    #[arg(long, value_name = "FILE")]
    pub config_file: Option<PathBuf>,
    /// Enable insecure registry communication
    #[arg(long = "insecure-registry", value_name = "REGISTRY")]
    pub insecure_registries: Vec<String>,
    /// Preferred registry mirror
    #[arg(long = "registry-mirror", value_name = "URL")]
    pub registry_mirrors: Vec<String>,
    /// Set the logging level ("debug"|"info"|"warn"|"error"|"fatal")
    #[arg(short = 'l', long, value_name = "LEVEL")]
    pub log_level: Option<String>,
    /// Enable debug mode
    #[arg(short = 'D', long)]
    pub debug: bool,
    /// Use TLS; implied by --tlsverify
    #[arg(long)]
    pub tls: bool,
    /// Use TLS and verify the remote
    #[arg(long)]
    pub tlsverify: bool,
    /// Trust certs signed only by this CA
    #[arg(long, value_name = "FILE")]
    pub tlscacert: Option<PathBuf>,
    /// Path to TLS certificate file
    #[arg(long, value_name = "FILE")]
    pub tlscert: Option<PathBuf>,
    /// Path to TLS key file
    #[arg(long, value_name = "FILE")]
    pub tlskey: Option<PathBuf>,
    /// Serve plain TCP without TLS (anyone who reaches the port is root on this host)
    #[arg(long)]
    pub insecure_tcp: bool,
    /// Path to use for the daemon PID file
    #[arg(short = 'p', long, value_name = "FILE")]
    pub pidfile: Option<PathBuf>,
    /// Bridge of the default network; `none` disables it.
    #[arg(short = 'b', long, value_name = "NAME")]
    pub bridge: Option<String>,
    /// Tag namespacing the host objects this daemon creates (bridges, veths, nftables
    /// table), so that several daemons can share a host.
    #[arg(long, value_name = "TAG")]
    pub network_instance: Option<String>,
    /// Remount the host's cgroup2 root with `favordynmods` (host-wide, Linux 6.0+): container
    /// starts stop waiting for an RCU grace period when joining their cgroups
    #[arg(long)]
    pub cgroup_favordynmods: bool,
}

/// A listen address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// A unix socket path.
    Unix(PathBuf),
    /// A TCP address (`host:port`).
    Tcp(String),
}

impl Host {
    /// Parses `unix:///path`, `tcp://host:port`, or a bare absolute path.
    pub fn parse(s: &str) -> Result<Self> {
        if let Some(path) = s.strip_prefix("unix://") {
            if path.is_empty() {
                return Ok(Host::Unix(PathBuf::from("/run/berth/berth.sock")));
            }
            return Ok(Host::Unix(PathBuf::from(path)));
        }
        if let Some(addr) = s.strip_prefix("tcp://") {
            let addr = addr.trim_end_matches('/');
            let addr = if addr.is_empty() {
                "127.0.0.1:2375".to_string()
            } else if addr.starts_with(':') {
                format!("127.0.0.1{addr}")
            } else if !addr.contains(':') {
                format!("{addr}:2375")
            } else {
                addr.to_string()
            };
            return Ok(Host::Tcp(addr));
        }
        if s.starts_with('/') {
            return Ok(Host::Unix(PathBuf::from(s)));
        }
        Err(Error::Config(format!(
            "invalid host {s:?}: expected unix:///path or tcp://host:port"
        )))
    }
}

/// The effective daemon configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Addresses to listen on.
    pub hosts: Vec<Host>,
    /// Persistent state (`containers/`, `image/`).
    pub data_root: PathBuf,
    /// Runtime state (socket, pid file, monitor state).
    pub exec_root: PathBuf,
    /// Registries reached over plain HTTP or unverified TLS.
    pub insecure_registries: Vec<String>,
    /// Registry mirrors for Docker Hub.
    pub registry_mirrors: Vec<String>,
    /// `tracing` filter level.
    pub log_level: String,
    /// TLS requested (`--tls` / `--tlsverify`).
    pub tls: bool,
    /// Client certificates required and verified against `tls_ca` (`--tlsverify`).
    pub tls_verify: bool,
    /// CA bundle that client certificates must chain to.
    pub tls_ca: Option<PathBuf>,
    /// Server certificate chain (PEM).
    pub tls_cert: Option<PathBuf>,
    /// Server private key (PEM).
    pub tls_key: Option<PathBuf>,
    /// Plain TCP explicitly allowed.
    pub insecure_tcp: bool,
    /// PID file path.
    pub pidfile: PathBuf,
    /// `--bridge`: the default network's bridge (`none`: no default network).
    pub bridge: Option<String>,
    /// `--network-instance`: empty for the untagged defaults.
    pub network_instance: String,
    /// `--cgroup-favordynmods`: set the host's cgroup2 `favordynmods` option at start.
    pub cgroup_favordynmods: bool,
}

/// The daemon.json keys dockerd knows that Berth reads.
const KNOWN_KEYS: &[&str] = &[
    "hosts",
    "data-root",
    "exec-root",
    "insecure-registries",
    "registry-mirrors",
    "log-level",
    "debug",
    "tls",
    "tlsverify",
    "tlscacert",
    "tlscert",
    "tlskey",
    "pidfile",
    "bridge",
    "network-instance",
    "cgroup-favordynmods",
];

/// The daemon.json keys dockerd knows that Berth accepts but does not act on yet.
const IGNORED_KEYS: &[&str] = &[
    "bip",
    "default-address-pools",
    "dns",
    "dns-opts",
    "dns-search",
    "experimental",
    "features",
    "group",
    "ip-forward",
    "iptables",
    "ip6tables",
    "ipv6",
    "labels",
    "live-restore",
    "log-driver",
    "log-opts",
    "max-concurrent-downloads",
    "max-concurrent-uploads",
    "mtu",
    "storage-driver",
    "userland-proxy",
];

impl Config {
    /// Builds the configuration from flags and the configuration file.
    ///
    /// A missing default configuration file is fine; a missing explicit one is an error.
    pub fn load(args: &DaemonArgs) -> Result<Self> {
        let (file_path, explicit) = match &args.config_file {
            Some(p) => (p.clone(), true),
            None => (PathBuf::from(DEFAULT_CONFIG_FILE), false),
        };
        let file = match std::fs::read(&file_path) {
            Ok(bytes) => parse_file(&file_path, &bytes)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => Map::new(),
            Err(e) => {
                return Err(Error::io(
                    format!("read configuration file {}", file_path.display()),
                    e,
                ))
            }
        };
        Self::merge(args, &file)
    }

    fn merge(args: &DaemonArgs, file: &Map<String, Value>) -> Result<Self> {
        let mut conflicts = Vec::new();
        let mut check = |key: &str, flag_set: bool, flag: String| {
            if flag_set {
                if let Some(v) = file.get(key) {
                    conflicts.push(format!("{key}: (from flag: {flag}, from file: {v})"));
                }
            }
        };
        check("hosts", !args.hosts.is_empty(), format!("{:?}", args.hosts));
        check(
            "data-root",
            args.data_root.is_some(),
            format!("{:?}", args.data_root),
        );
        check(
            "exec-root",
            args.exec_root.is_some(),
            format!("{:?}", args.exec_root),
        );
        check(
            "log-level",
            args.log_level.is_some(),
            format!("{:?}", args.log_level),
        );
        check(
            "insecure-registries",
            !args.insecure_registries.is_empty(),
            format!("{:?}", args.insecure_registries),
        );
        check(
            "registry-mirrors",
            !args.registry_mirrors.is_empty(),
            format!("{:?}", args.registry_mirrors),
        );
        check(
            "pidfile",
            args.pidfile.is_some(),
            format!("{:?}", args.pidfile),
        );
        check(
            "bridge",
            args.bridge.is_some(),
            format!("{:?}", args.bridge),
        );
        check(
            "cgroup-favordynmods",
            args.cgroup_favordynmods,
            "true".into(),
        );
        check(
            "network-instance",
            args.network_instance.is_some(),
            format!("{:?}", args.network_instance),
        );
        if !conflicts.is_empty() {
            return Err(Error::Config(format!(
                "the following directives are specified both as a flag and in the configuration file: {}",
                conflicts.join(", ")
            )));
        }

        let hosts: Vec<String> = if !args.hosts.is_empty() {
            args.hosts.clone()
        } else if let Some(v) = file.get("hosts") {
            string_list(v, "hosts")?
        } else {
            vec![DEFAULT_HOST.to_string()]
        };
        let hosts = hosts
            .iter()
            .map(|h| Host::parse(h))
            .collect::<Result<Vec<_>>>()?;
        let data_root = pick_path(&args.data_root, file, "data-root", DEFAULT_DATA_ROOT)?;
        let exec_root = pick_path(&args.exec_root, file, "exec-root", DEFAULT_EXEC_ROOT)?;
        let pidfile_default = exec_root.join("berth.pid");
        let pidfile = match (&args.pidfile, file.get("pidfile")) {
            (Some(p), _) => p.clone(),
            (None, Some(v)) => PathBuf::from(string(v, "pidfile")?),
            (None, None) => pidfile_default,
        };
        let mut insecure_registries = args.insecure_registries.clone();
        if let Some(v) = file.get("insecure-registries") {
            insecure_registries = string_list(v, "insecure-registries")?;
        }
        let mut registry_mirrors = args.registry_mirrors.clone();
        if let Some(v) = file.get("registry-mirrors") {
            registry_mirrors = string_list(v, "registry-mirrors")?;
        }
        let debug = args.debug || file.get("debug").and_then(Value::as_bool).unwrap_or(false);
        let log_level = match (&args.log_level, file.get("log-level")) {
            (Some(l), _) => l.clone(),
            (None, Some(v)) => string(v, "log-level")?,
            (None, None) if debug => "debug".to_string(),
            (None, None) => "info".to_string(),
        };
        if !["debug", "info", "warn", "error", "fatal", "trace"].contains(&log_level.as_str()) {
            return Err(Error::Config(format!(
                "unable to parse logging level: {log_level}"
            )));
        }
        let file_bool = |k: &str| file.get(k).and_then(Value::as_bool).unwrap_or(false);
        let tls_verify = args.tlsverify || file_bool("tlsverify");
        let tls = args.tls || tls_verify || file_bool("tls");
        let file_path = |flag: &Option<PathBuf>, key: &str| -> Result<Option<PathBuf>> {
            match (flag, file.get(key)) {
                (Some(p), _) => Ok(Some(p.clone())),
                (None, Some(v)) => Ok(Some(PathBuf::from(string(v, key)?))),
                (None, None) => Ok(None),
            }
        };
        let tls_ca = file_path(&args.tlscacert, "tlscacert")?;
        let tls_cert = file_path(&args.tlscert, "tlscert")?;
        let tls_key = file_path(&args.tlskey, "tlskey")?;
        let bridge = match (&args.bridge, file.get("bridge")) {
            (Some(b), _) => Some(b.clone()),
            (None, Some(v)) => Some(string(v, "bridge")?),
            (None, None) => None,
        };
        if let Some(b) = &bridge {
            if b.is_empty()
                || b.len() > 15
                || b.contains(['/', ':'])
                || b.contains(char::is_whitespace)
            {
                return Err(Error::Config(format!("invalid bridge name: {b:?}")));
            }
        }
        let network_instance = match (&args.network_instance, file.get("network-instance")) {
            (Some(t), _) => t.clone(),
            (None, Some(v)) => string(v, "network-instance")?,
            (None, None) => String::new(),
        };
        // Short enough that tagged interface names keep room for their hex part.
        if network_instance.len() > 3
            || !network_instance
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        {
            return Err(Error::Config(format!(
                "invalid network instance {network_instance:?}: at most 3 characters of [a-z0-9]"
            )));
        }
        Ok(Config {
            hosts,
            data_root,
            exec_root,
            insecure_registries,
            registry_mirrors,
            log_level,
            tls,
            tls_verify,
            tls_ca,
            tls_cert,
            tls_key,
            insecure_tcp: args.insecure_tcp,
            pidfile,
            bridge,
            network_instance,
            cgroup_favordynmods: args.cgroup_favordynmods || file_bool("cgroup-favordynmods"),
        })
    }
}

fn parse_file(path: &Path, bytes: &[u8]) -> Result<Map<String, Value>> {
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|e| Error::json(format!("parse configuration file {}", path.display()), e))?;
    let Value::Object(map) = value else {
        return Err(Error::Config(format!(
            "{}: configuration file must hold a JSON object",
            path.display()
        )));
    };
    let unknown: Vec<&str> = map
        .keys()
        .map(String::as_str)
        .filter(|k| !KNOWN_KEYS.contains(k) && !IGNORED_KEYS.contains(k))
        .collect();
    if !unknown.is_empty() {
        return Err(Error::Config(format!(
            "the following directives don't match any configuration option: {}",
            unknown.join(", ")
        )));
    }
    for key in map.keys().filter(|k| IGNORED_KEYS.contains(&k.as_str())) {
        tracing::warn!(
            key,
            "configuration directive is not supported yet and is ignored"
        );
    }
    Ok(map)
}

fn string(v: &Value, key: &str) -> Result<String> {
    v.as_str()
        .map(str::to_string)
        .ok_or_else(|| Error::Config(format!("{key} must be a string")))
}

fn string_list(v: &Value, key: &str) -> Result<Vec<String>> {
    v.as_array()
        .and_then(|a| {
            a.iter()
                .map(|s| s.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
        })
        .ok_or_else(|| Error::Config(format!("{key} must be a list of strings")))
}

fn pick_path(
    flag: &Option<PathBuf>,
    file: &Map<String, Value>,
    key: &str,
    default: &str,
) -> Result<PathBuf> {
    match (flag, file.get(key)) {
        (Some(p), _) => Ok(p.clone()),
        (None, Some(v)) => Ok(PathBuf::from(string(v, key)?)),
        (None, None) => Ok(PathBuf::from(default)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(json: &str) -> Map<String, Value> {
        parse_file(Path::new("daemon.json"), json.as_bytes()).unwrap()
    }

    #[test]
    fn host_forms() {
        assert_eq!(
            Host::parse("unix:///tmp/s.sock").unwrap(),
            Host::Unix("/tmp/s.sock".into())
        );
        assert_eq!(
            Host::parse("tcp://0.0.0.0:2376").unwrap(),
            Host::Tcp("0.0.0.0:2376".into())
        );
        assert_eq!(
            Host::parse("tcp://:2375").unwrap(),
            Host::Tcp("127.0.0.1:2375".into())
        );
        assert!(Host::parse("ftp://x").is_err());
    }

    #[test]
    fn bridge_and_network_instance() {
        let cfg = Config::merge(&DaemonArgs::default(), &Map::new()).unwrap();
        assert_eq!((cfg.bridge, cfg.network_instance.as_str()), (None, ""));
        let f = file(r#"{"bridge": "none", "network-instance": "t7"}"#);
        let cfg = Config::merge(&DaemonArgs::default(), &f).unwrap();
        assert_eq!(cfg.bridge.as_deref(), Some("none"));
        assert_eq!(cfg.network_instance, "t7");
        let args = DaemonArgs {
            network_instance: Some("t7".into()),
            ..Default::default()
        };
        assert!(Config::merge(&args, &f).is_err(), "flag and file both set");
        for bad in ["abcd", "A", "a-b"] {
            let args = DaemonArgs {
                network_instance: Some(bad.into()),
                ..Default::default()
            };
            assert!(Config::merge(&args, &Map::new()).is_err(), "{bad}");
        }
        let args = DaemonArgs {
            bridge: Some("a-name-too-long-x".into()),
            ..Default::default()
        };
        assert!(Config::merge(&args, &Map::new()).is_err());
    }

    #[test]
    fn file_values_apply_and_flags_conflict() {
        let f = file(r#"{"data-root":"/d","hosts":["unix:///x.sock"],"log-level":"warn"}"#);
        let cfg = Config::merge(&DaemonArgs::default(), &f).unwrap();
        assert_eq!(cfg.data_root, PathBuf::from("/d"));
        assert_eq!(cfg.hosts, vec![Host::Unix("/x.sock".into())]);
        assert_eq!(cfg.log_level, "warn");
        let args = DaemonArgs {
            data_root: Some("/e".into()),
            ..Default::default()
        };
        let err = Config::merge(&args, &f).unwrap_err().to_string();
        assert!(
            err.contains("both as a flag and in the configuration file"),
            "{err}"
        );
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let err = parse_file(Path::new("d.json"), br#"{"nope":1}"#)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("don't match any configuration option: nope"),
            "{err}"
        );
    }
}
