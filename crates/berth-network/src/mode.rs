//! `--network` modes and what each means for the container's network namespace.

use std::path::{Path, PathBuf};

/// A parsed `--network` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetworkMode {
    /// The default `bridge` network.
    Default,
    /// A user-defined (or the default, by name) bridge network.
    Bridge(String),
    /// Loopback only.
    None,
    /// The host's namespace.
    Host,
    /// Another container's namespace.
    Container(String),
}

impl NetworkMode {
    pub fn parse(s: &str) -> Self {
        match s {
            "" | "default" | "bridge" => NetworkMode::Default,
            "none" => NetworkMode::None,
            "host" => NetworkMode::Host,
            _ => match s.strip_prefix("container:") {
                Some(id) => NetworkMode::Container(id.to_string()),
                None => NetworkMode::Bridge(s.to_string()),
            },
        }
    }

    /// The network to connect to, for bridge modes.
    pub fn network(&self) -> Option<&str> {
        match self {
            NetworkMode::Default => Some(crate::manager::DEFAULT_NETWORK),
            NetworkMode::Bridge(n) => Some(n),
            _ => None,
        }
    }
}

/// How the OCI spec's network namespace entry should look.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamespaceSpec {
    /// Keep no network namespace entry: share the host's.
    Host,
    /// A fresh, empty namespace (the runtime creates it; only `lo` exists).
    New,
    /// Join the namespace at this path.
    Join(PathBuf),
}

/// Where a container's network namespace lives under the daemon's exec root.
pub fn netns_path(exec_root: &Path, container_id: &str) -> PathBuf {
    exec_root.join("netns").join(container_id)
}

/// The namespace entry for `mode`. Bridge modes join the pre-created file at
/// [`netns_path`]; `container:<id>` joins the other container's (from its pid, passed as
/// `other_pid`, or its netns file when it has one).
pub fn namespace_spec(
    mode: &NetworkMode,
    exec_root: &Path,
    container_id: &str,
    other: Option<(&str, Option<u32>)>,
) -> NamespaceSpec {
    match mode {
        NetworkMode::Host => NamespaceSpec::Host,
        NetworkMode::None => NamespaceSpec::New,
        NetworkMode::Default | NetworkMode::Bridge(_) => {
            NamespaceSpec::Join(netns_path(exec_root, container_id))
        }
        NetworkMode::Container(_) => match other {
            Some((other_id, _)) if netns_path(exec_root, other_id).exists() => {
                NamespaceSpec::Join(netns_path(exec_root, other_id))
            }
            Some((_, Some(pid))) => {
                NamespaceSpec::Join(PathBuf::from(format!("/proc/{pid}/ns/net")))
            }
            _ => NamespaceSpec::New,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes() {
        assert_eq!(NetworkMode::parse("bridge"), NetworkMode::Default);
        assert_eq!(
            NetworkMode::parse("container:abc"),
            NetworkMode::Container("abc".into())
        );
        assert_eq!(NetworkMode::parse("mynet").network(), Some("mynet"));
        assert_eq!(NetworkMode::parse("host").network(), None);
        let root = Path::new("/run/berth");
        assert_eq!(
            namespace_spec(&NetworkMode::Host, root, "c1", None),
            NamespaceSpec::Host
        );
        assert_eq!(
            namespace_spec(&NetworkMode::Default, root, "c1", None),
            NamespaceSpec::Join("/run/berth/netns/c1".into())
        );
        assert_eq!(
            namespace_spec(
                &NetworkMode::Container("c0".into()),
                root,
                "c1",
                Some(("c0", Some(42)))
            ),
            NamespaceSpec::Join("/proc/42/ns/net".into())
        );
    }
}
