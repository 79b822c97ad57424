//! Runtime specs with Docker's defaults.
//!
//! [`build_spec`] turns an image's config ([`ImageDefaults`]) plus the run options of one
//! container ([`RunOptions`], plain serde data the daemon fills from Docker's
//! `ContainerCreate` body) into an OCI runtime [`Spec`]: process (args, env, user, cwd,
//! capabilities, rlimits, no-new-privileges), mounts (/proc, /dev tmpfs, devpts, /dev/shm,
//! mqueue, sysfs ro, cgroup ro, plus binds and tmpfs), namespaces, masked and read-only paths,
//! the default seccomp profile, resources and sysctls, user-namespace maps.
//! Privileged containers get every capability, no seccomp, no masked paths and every device.

pub mod seccomp;
pub mod user;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxDevice, LinuxDeviceBuilder,
    LinuxDeviceCgroupBuilder, LinuxDeviceType, LinuxIdMappingBuilder, LinuxNamespaceBuilder,
    LinuxNamespaceType, Mount, MountBuilder, PosixRlimit, PosixRlimitBuilder, PosixRlimitType,
    ProcessBuilder, RootBuilder, Spec, SpecBuilder, UserBuilder,
};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::resources::Limits;

/// PATH when the image sets none (Docker's default).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Docker's default capability set.
pub const DEFAULT_CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Every capability Linux defines (what "ALL" and privileged expand to).
pub const ALL_CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// Paths made unreadable in unprivileged containers.
pub const MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Paths made read-only in unprivileged containers.
pub const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Docker's default RLIMIT_NOFILE (soft and hard), clamped to what the engine may grant.
pub const DEFAULT_NOFILE: u64 = 1_048_576;

/// The parts of an image's config that shape a container (Docker's / OCI's field names).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
pub struct ImageDefaults {
    /// `User`.
    pub user: Option<String>,
    /// `Env` (`KEY=value`).
    pub env: Vec<String>,
    /// `Entrypoint`.
    pub entrypoint: Option<Vec<String>>,
    /// `Cmd`.
    pub cmd: Option<Vec<String>>,
    /// `WorkingDir`.
    pub working_dir: Option<String>,
}

impl From<&oci_spec::image::Config> for ImageDefaults {
    fn from(c: &oci_spec::image::Config) -> Self {
        ImageDefaults {
            user: c.user().clone(),
            env: c.env().clone().unwrap_or_default(),
            entrypoint: c.entrypoint().clone(),
            cmd: c.cmd().clone(),
            working_dir: c.working_dir().clone(),
        }
    }
}

/// The network namespace of a container.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "mode", content = "path")]
pub enum NetworkMode {
    /// A new network namespace with only `lo` (networking is attached later).
    #[default]
    None,
    /// The host's network namespace.
    Host,
    /// Join an existing namespace (`/proc/PID/ns/net` or a bind-mounted netns file).
    Path(PathBuf),
}

/// What kind of mount a [`MountSpec`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MountKind {
    /// A bind mount of a host path.
    Bind,
    /// A fresh tmpfs.
    Tmpfs,
}

/// A user-requested mount (`-v`, `--mount`, `--tmpfs`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountSpec {
    /// Bind or tmpfs.
    pub kind: MountKind,
    /// Host path (binds) — ignored for tmpfs.
    #[serde(default)]
    pub source: PathBuf,
    /// Path inside the container.
    pub target: PathBuf,
    /// Mount read-only.
    #[serde(default)]
    pub read_only: bool,
    /// Extra mount options (`size=64m`, `mode=1777`, `rprivate`...).
    #[serde(default)]
    pub options: Vec<String>,
}

/// A user-namespace id mapping (container id → host id, `size` ids).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdMap {
    /// First id inside the container.
    pub container_id: u32,
    /// First id on the host.
    pub host_id: u32,
    /// Number of ids.
    pub size: u32,
}

/// User-namespace remapping.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserNamespace {
    /// uid mappings.
    pub uid_maps: Vec<IdMap>,
    /// gid mappings.
    pub gid_maps: Vec<IdMap>,
}

/// A resource limit (`--ulimit nofile=1024:2048`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ulimit {
    /// Name without the `RLIMIT_` prefix, lowercase (`nofile`, `nproc`, `core`...).
    pub name: String,
    /// Soft limit.
    pub soft: u64,
    /// Hard limit.
    pub hard: u64,
}

/// Seccomp confinement.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SeccompMode {
    /// Docker's default profile.
    #[default]
    Default,
    /// No seccomp filter (`--security-opt seccomp=unconfined`).
    Unconfined,
}

/// Options of one container, Docker's `HostConfig` and `Config` in plain data.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RunOptions {
    /// Hostname (default: the first 12 characters of the id).
    pub hostname: Option<String>,
    /// `--user`, overriding the image's `User`.
    pub user: Option<String>,
    /// `--group-add`.
    pub group_add: Vec<String>,
    /// `--env` entries (`KEY=value`), overriding the image's.
    pub env: Vec<String>,
    /// `--workdir`, overriding the image's `WorkingDir`.
    pub working_dir: Option<String>,
    /// `--entrypoint` (an empty list resets the image's entrypoint).
    pub entrypoint: Option<Vec<String>>,
    /// Command (replaces the image's `Cmd`).
    pub cmd: Option<Vec<String>>,
    /// Allocate a terminal.
    pub tty: bool,
    /// Extra mounts.
    pub mounts: Vec<MountSpec>,
    /// Resource limits.
    pub limits: Limits,
    /// `--cap-add` (`NET_ADMIN`, `CAP_NET_ADMIN` or `ALL`).
    pub cap_add: Vec<String>,
    /// `--cap-drop`.
    pub cap_drop: Vec<String>,
    /// `--privileged`.
    pub privileged: bool,
    /// `--read-only`.
    pub read_only_rootfs: bool,
    /// User-namespace remapping; `None` runs in the host's user namespace.
    pub userns: Option<UserNamespace>,
    /// `--sysctl`.
    pub sysctls: BTreeMap<String, String>,
    /// `--ulimit`.
    pub ulimits: Vec<Ulimit>,
    /// Seccomp profile.
    pub seccomp: SeccompMode,
    /// `--security-opt no-new-privileges`.
    pub no_new_privileges: bool,
    /// Network namespace.
    pub network: NetworkMode,
    /// Size of /dev/shm in bytes (default 64 MiB).
    pub shm_size: Option<u64>,
    /// `--oom-score-adj`.
    pub oom_score_adj: Option<i32>,
    /// Cgroup path (default `/berth/<id>`).
    pub cgroups_path: Option<String>,
    /// `--cgroupns=host`: the container sees the host's cgroup namespace (dockerd's default on
    /// cgroup v1 hosts) instead of a private one.
    pub host_cgroupns: bool,
    /// Annotations copied into the spec.
    pub annotations: BTreeMap<String, String>,
}

/// Normalises a capability name (`net_admin` → `CAP_NET_ADMIN`); `ALL` stays `ALL`.
fn normalize_cap(name: &str) -> Result<String> {
    let upper = name.trim().to_ascii_uppercase();
    if upper == "ALL" {
        return Ok(upper);
    }
    let full = if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    };
    if ALL_CAPABILITIES.contains(&full.as_str()) {
        Ok(full)
    } else {
        Err(Error::InvalidOption(format!("unknown capability {name:?}")))
    }
}

/// The capabilities in the engine's own bounding set (a privileged container cannot get more
/// than its creator has, e.g. when the engine itself runs in a container). All of them when
/// /proc is unreadable.
pub fn available_capabilities() -> Vec<&'static str> {
    let bounding = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("CapBnd:"))
                .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        })
        .unwrap_or(u64::MAX);
    // ALL_CAPABILITIES is in capability-number order.
    ALL_CAPABILITIES
        .iter()
        .enumerate()
        .filter(|(bit, _)| bounding & (1u64 << bit) != 0)
        .map(|(_, name)| *name)
        .collect()
}

/// The capability set after Docker's add/drop rules: start from the defaults (or everything
/// for privileged), drop then add, where `ALL` in drop empties the set and in add fills it.
pub fn capabilities(opts: &RunOptions) -> Result<Vec<String>> {
    let available = available_capabilities();
    if opts.privileged {
        return Ok(available.iter().map(|s| (*s).to_owned()).collect());
    }
    let add: Vec<String> = opts
        .cap_add
        .iter()
        .map(|c| normalize_cap(c))
        .collect::<Result<_>>()?;
    let drop: Vec<String> = opts
        .cap_drop
        .iter()
        .map(|c| normalize_cap(c))
        .collect::<Result<_>>()?;
    let mut caps: Vec<String> = if drop.iter().any(|c| c == "ALL") {
        Vec::new()
    } else {
        DEFAULT_CAPABILITIES
            .iter()
            .map(|s| (*s).to_owned())
            .filter(|c| !drop.contains(c))
            .collect()
    };
    if add.iter().any(|c| c == "ALL") {
        return Ok(available.iter().map(|s| (*s).to_owned()).collect());
    }
    for c in add {
        if !available.contains(&c.as_str()) {
            return Err(Error::InvalidOption(format!(
                "capability {c} is not in the engine's own bounding set"
            )));
        }
        if !caps.contains(&c) {
            caps.push(c);
        }
    }
    Ok(caps)
}

fn merge_env(image: &[String], extra: &[String]) -> Vec<String> {
    let mut env: Vec<String> = Vec::new();
    for kv in image.iter().chain(extra) {
        let key = kv.split('=').next().unwrap_or(kv);
        env.retain(|e| e.split('=').next() != Some(key));
        env.push(kv.clone());
    }
    env
}

fn has_key(env: &[String], key: &str) -> bool {
    env.iter().any(|e| e.split('=').next() == Some(key))
}

fn mount(dest: &str, typ: &str, source: &str, options: &[&str]) -> Result<Mount> {
    MountBuilder::default()
        .destination(dest)
        .typ(typ)
        .source(source)
        .options(options.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>())
        .build()
        .map_err(|e| Error::InvalidOption(format!("mount {dest}: {e}")))
}

fn rlimit_type(name: &str) -> Result<PosixRlimitType> {
    Ok(
        match name.to_ascii_lowercase().trim_start_matches("rlimit_") {
            "core" => PosixRlimitType::RlimitCore,
            "cpu" => PosixRlimitType::RlimitCpu,
            "data" => PosixRlimitType::RlimitData,
            "fsize" => PosixRlimitType::RlimitFsize,
            "locks" => PosixRlimitType::RlimitLocks,
            "memlock" => PosixRlimitType::RlimitMemlock,
            "msgqueue" => PosixRlimitType::RlimitMsgqueue,
            "nice" => PosixRlimitType::RlimitNice,
            "nofile" => PosixRlimitType::RlimitNofile,
            "nproc" => PosixRlimitType::RlimitNproc,
            "rss" => PosixRlimitType::RlimitRss,
            "rtprio" => PosixRlimitType::RlimitRtprio,
            "rttime" => PosixRlimitType::RlimitRttime,
            "sigpending" => PosixRlimitType::RlimitSigpending,
            "stack" => PosixRlimitType::RlimitStack,
            "as" => PosixRlimitType::RlimitAs,
            other => return Err(Error::InvalidOption(format!("unknown ulimit {other:?}"))),
        },
    )
}

fn host_hard_limit(typ: PosixRlimitType) -> Option<u64> {
    use nix::sys::resource::{getrlimit, Resource};
    let res = match typ {
        PosixRlimitType::RlimitNofile => Resource::RLIMIT_NOFILE,
        PosixRlimitType::RlimitNproc => Resource::RLIMIT_NPROC,
        PosixRlimitType::RlimitMemlock => Resource::RLIMIT_MEMLOCK,
        PosixRlimitType::RlimitCore => Resource::RLIMIT_CORE,
        PosixRlimitType::RlimitStack => Resource::RLIMIT_STACK,
        PosixRlimitType::RlimitMsgqueue => Resource::RLIMIT_MSGQUEUE,
        PosixRlimitType::RlimitSigpending => Resource::RLIMIT_SIGPENDING,
        _ => return None,
    };
    getrlimit(res).ok().map(|(_, hard)| hard)
}

fn rlimits(opts: &RunOptions) -> Result<Vec<PosixRlimit>> {
    let mut out: Vec<PosixRlimit> = Vec::new();
    let build = |typ, soft, hard| {
        PosixRlimitBuilder::default()
            .typ(typ)
            .soft(soft)
            .hard(hard)
            .build()
            .map_err(|e| Error::InvalidOption(format!("ulimit: {e}")))
    };
    // Root here may lack CAP_SYS_RESOURCE: a hard limit above the engine's own cannot be set.
    let nofile = host_hard_limit(PosixRlimitType::RlimitNofile)
        .map_or(DEFAULT_NOFILE, |h| h.min(DEFAULT_NOFILE));
    out.push(build(PosixRlimitType::RlimitNofile, nofile, nofile)?);
    for u in &opts.ulimits {
        let typ = rlimit_type(&u.name)?;
        if u.soft > u.hard {
            return Err(Error::InvalidOption(format!(
                "ulimit {}: soft limit {} is above hard limit {}",
                u.name, u.soft, u.hard
            )));
        }
        if let Some(max) = host_hard_limit(typ) {
            if u.hard > max {
                return Err(Error::InvalidOption(format!(
                    "ulimit {}: hard limit {} is above the engine's own hard limit {max}",
                    u.name, u.hard
                )));
            }
        }
        out.retain(|r| r.typ() != typ);
        out.push(build(typ, u.soft, u.hard)?);
    }
    Ok(out)
}

/// Sysctls Docker accepts: those of namespaces the container owns.
fn check_sysctl(key: &str, network: &NetworkMode) -> Result<()> {
    const IPC: &[&str] = &[
        "kernel.msgmax",
        "kernel.msgmnb",
        "kernel.msgmni",
        "kernel.sem",
        "kernel.shmall",
        "kernel.shmmax",
        "kernel.shmmni",
        "kernel.shm_rmid_forced",
    ];
    if IPC.contains(&key) || key.starts_with("fs.mqueue.") {
        return Ok(());
    }
    if key.starts_with("net.") {
        if *network == NetworkMode::Host {
            return Err(Error::InvalidOption(format!(
                "sysctl {key} is not allowed with the host's network namespace"
            )));
        }
        return Ok(());
    }
    Err(Error::InvalidOption(format!(
        "sysctl {key} is not namespaced and cannot be set in a container"
    )))
}

/// Every character and block device under the host's /dev (for privileged containers).
fn host_devices() -> Vec<LinuxDevice> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::from("/dev")];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            let ft = meta.file_type();
            if ft.is_dir() {
                if !matches!(
                    path.to_str(),
                    Some("/dev/pts" | "/dev/shm" | "/dev/mqueue" | "/dev/fd")
                ) {
                    stack.push(path);
                }
                continue;
            }
            let typ = if ft.is_char_device() {
                LinuxDeviceType::C
            } else if ft.is_block_device() {
                LinuxDeviceType::B
            } else {
                continue;
            };
            if path == Path::new("/dev/console") {
                continue;
            }
            let rdev = meta.rdev();
            if let Ok(dev) = LinuxDeviceBuilder::default()
                .path(path)
                .typ(typ)
                .major(nix::sys::stat::major(rdev) as i64)
                .minor(nix::sys::stat::minor(rdev) as i64)
                .file_mode(meta.mode() & 0o777)
                .uid(meta.uid())
                .gid(meta.gid())
                .build()
            {
                out.push(dev);
            }
        }
    }
    out
}

/// Builds the runtime spec of container `id` whose root filesystem is `rootfs`.
pub fn build_spec(
    id: &str,
    rootfs: &Path,
    image: &ImageDefaults,
    opts: &RunOptions,
) -> Result<Spec> {
    crate::container::validate_id(id)?;
    let bad = |what: &str, e: oci_spec::OciSpecError| Error::InvalidOption(format!("{what}: {e}"));

    // Process.
    let entrypoint = opts.entrypoint.clone().or_else(|| image.entrypoint.clone());
    let cmd = match (&opts.cmd, &opts.entrypoint) {
        (Some(cmd), _) => cmd.clone(),
        // Docker: a new entrypoint discards the image's Cmd.
        (None, Some(_)) => Vec::new(),
        (None, None) => image.cmd.clone().unwrap_or_default(),
    };
    let args: Vec<String> = entrypoint
        .unwrap_or_default()
        .into_iter()
        .chain(cmd)
        .collect();
    if args.is_empty() {
        return Err(Error::InvalidOption("no command specified".into()));
    }
    let hostname = opts
        .hostname
        .clone()
        .unwrap_or_else(|| id.chars().take(12).collect());
    let user_spec = opts
        .user
        .clone()
        .or_else(|| image.user.clone())
        .unwrap_or_default();
    let user = user::resolve_user(rootfs, &user_spec, &opts.group_add)?;

    let mut env = merge_env(&image.env, &opts.env);
    if !has_key(&env, "PATH") {
        env.insert(0, format!("PATH={DEFAULT_PATH}"));
    }
    env.retain(|e| !e.starts_with("HOSTNAME="));
    env.insert(1.min(env.len()), format!("HOSTNAME={hostname}"));
    if opts.tty && !has_key(&env, "TERM") {
        env.push("TERM=xterm".into());
    }
    if !has_key(&env, "HOME") {
        env.push(format!("HOME={}", user.home));
    }
    let cwd = opts
        .working_dir
        .clone()
        .or_else(|| image.working_dir.clone())
        .filter(|w| !w.is_empty())
        .unwrap_or_else(|| "/".to_owned());
    if !cwd.starts_with('/') {
        return Err(Error::InvalidOption(format!(
            "working directory {cwd:?} is not absolute"
        )));
    }

    let caps = capabilities(opts)?;
    let cap_set: std::collections::HashSet<Capability> = caps
        .iter()
        .filter_map(|c| c.trim_start_matches("CAP_").parse::<Capability>().ok())
        .collect();
    let capabilities = LinuxCapabilitiesBuilder::default()
        .bounding(cap_set.clone())
        .effective(cap_set.clone())
        .permitted(cap_set)
        .inheritable(std::collections::HashSet::new())
        .ambient(std::collections::HashSet::new())
        .build()
        .map_err(|e| bad("capabilities", e))?;

    let mut process = ProcessBuilder::default()
        .terminal(opts.tty)
        .args(args)
        .env(env)
        .cwd(cwd)
        .user(
            UserBuilder::default()
                .uid(user.uid)
                .gid(user.gid)
                .additional_gids(user.additional_gids.clone())
                .build()
                .map_err(|e| bad("user", e))?,
        )
        .capabilities(capabilities)
        .rlimits(rlimits(opts)?);
    if let Some(adj) = opts.oom_score_adj {
        process = process.oom_score_adj(adj);
    }
    let mut process = process.build().map_err(|e| bad("process", e))?;
    // Docker leaves no_new_privs off unless asked: setuid programs in the image work. The
    // field is absent rather than false (oci-spec's builder defaults it to true), because
    // libcontainer treats any present value as "load seccomp after dropping capabilities".
    process.set_no_new_privileges(opts.no_new_privileges.then_some(true));

    // Mounts.
    let userns = opts.userns.is_some();
    let shm_size = opts.shm_size.unwrap_or(64 * 1024 * 1024);
    let shm_opt = format!("size={shm_size}");
    let mut mounts = vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"])?,
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        )?,
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        )?,
    ];
    if opts.network == NetworkMode::Host && userns {
        // sysfs cannot be mounted from a user namespace that does not own the network one.
        mounts.push(mount(
            "/sys",
            "none",
            "/sys",
            &["rbind", "nosuid", "noexec", "nodev", "ro"],
        )?);
    } else {
        mounts.push(mount(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", "ro"],
        )?);
    }
    mounts.push(mount(
        "/sys/fs/cgroup",
        "cgroup",
        "cgroup",
        &[
            "nosuid",
            "noexec",
            "nodev",
            "relatime",
            if opts.privileged { "rw" } else { "ro" },
        ],
    )?);
    mounts.push(mount(
        "/dev/mqueue",
        "mqueue",
        "mqueue",
        &["nosuid", "noexec", "nodev"],
    )?);
    mounts.push(mount(
        "/dev/shm",
        "tmpfs",
        "shm",
        &["nosuid", "noexec", "nodev", "mode=1777", &shm_opt],
    )?);
    for m in &opts.mounts {
        if !m.target.is_absolute() {
            return Err(Error::InvalidOption(format!(
                "mount target {} is not absolute",
                m.target.display()
            )));
        }
        let mut options: Vec<String> = m.options.clone();
        let built = match m.kind {
            MountKind::Bind => {
                if !m.source.is_absolute() {
                    return Err(Error::InvalidOption(format!(
                        "bind source {} is not absolute",
                        m.source.display()
                    )));
                }
                if !m.source.exists() {
                    return Err(Error::InvalidOption(format!(
                        "bind source {} does not exist",
                        m.source.display()
                    )));
                }
                if !options.iter().any(|o| o == "bind" || o == "rbind") {
                    options.insert(0, "rbind".into());
                }
                if !options.iter().any(|o| {
                    o.ends_with("private") || o.ends_with("shared") || o.ends_with("slave")
                }) {
                    options.push("rprivate".into());
                }
                options.push(if m.read_only { "ro" } else { "rw" }.into());
                MountBuilder::default()
                    .destination(&m.target)
                    .typ("bind")
                    .source(&m.source)
                    .options(options)
                    .build()
            }
            MountKind::Tmpfs => {
                for o in ["nosuid", "nodev", "noexec"] {
                    if !options
                        .iter()
                        .any(|x| x == o || x == &o.replacen("no", "", 1))
                    {
                        options.push(o.into());
                    }
                }
                if m.read_only {
                    options.push("ro".into());
                }
                MountBuilder::default()
                    .destination(&m.target)
                    .typ("tmpfs")
                    .source("tmpfs")
                    .options(options)
                    .build()
            }
        }
        .map_err(|e| bad("mount", e))?;
        // A user mount over a default one replaces it (e.g. a bigger /dev/shm).
        mounts.retain(|x| x.destination() != built.destination());
        mounts.push(built);
    }

    // Namespaces.
    let ns = |typ, path: Option<PathBuf>| {
        let mut b = LinuxNamespaceBuilder::default().typ(typ);
        if let Some(p) = path {
            b = b.path(p);
        }
        b.build().map_err(|e| bad("namespace", e))
    };
    let mut namespaces = vec![
        ns(LinuxNamespaceType::Pid, None)?,
        ns(LinuxNamespaceType::Mount, None)?,
        ns(LinuxNamespaceType::Uts, None)?,
        ns(LinuxNamespaceType::Ipc, None)?,
    ];
    if !opts.host_cgroupns {
        namespaces.push(ns(LinuxNamespaceType::Cgroup, None)?);
    }
    match &opts.network {
        NetworkMode::None => namespaces.push(ns(LinuxNamespaceType::Network, None)?),
        NetworkMode::Host => {}
        NetworkMode::Path(p) => namespaces.push(ns(LinuxNamespaceType::Network, Some(p.clone()))?),
    }
    if userns {
        namespaces.push(ns(LinuxNamespaceType::User, None)?);
    }
    if opts.network == NetworkMode::Host {
        // The host's UTS name belongs to the host: Docker keeps it with --network host.
        namespaces.retain(|n| n.typ() != LinuxNamespaceType::Uts);
    }

    for key in opts.sysctls.keys() {
        check_sysctl(key, &opts.network)?;
    }

    // Resources: Docker denies all devices, then libcgroups adds the standard allow-list.
    let mut resources = opts.limits.to_oci()?;
    let device_rule = LinuxDeviceCgroupBuilder::default()
        .allow(opts.privileged)
        .access("rwm")
        .build()
        .map_err(|e| bad("device rule", e))?;
    resources.set_devices(Some(vec![device_rule]));

    let cgroups_path = opts
        .cgroups_path
        .clone()
        .unwrap_or_else(|| format!("{}/{id}", crate::container::DEFAULT_CGROUP_PARENT));
    let mut linux = LinuxBuilder::default()
        .namespaces(namespaces)
        .cgroups_path(PathBuf::from(cgroups_path))
        .resources(resources)
        .sysctl(
            opts.sysctls
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect::<std::collections::HashMap<_, _>>(),
        );
    if !opts.privileged {
        linux = linux
            .masked_paths(
                MASKED_PATHS
                    .iter()
                    .map(|s| (*s).to_owned())
                    .collect::<Vec<_>>(),
            )
            .readonly_paths(
                READONLY_PATHS
                    .iter()
                    .map(|s| (*s).to_owned())
                    .collect::<Vec<_>>(),
            );
        if opts.seccomp == SeccompMode::Default {
            linux = linux.seccomp(seccomp::default_profile(&caps)?);
        }
    } else {
        linux = linux
            .masked_paths(Vec::<String>::new())
            .readonly_paths(Vec::<String>::new())
            .devices(host_devices());
    }
    if let Some(u) = &opts.userns {
        let map = |m: &IdMap| {
            LinuxIdMappingBuilder::default()
                .container_id(m.container_id)
                .host_id(m.host_id)
                .size(m.size)
                .build()
                .map_err(|e| bad("id mapping", e))
        };
        if u.uid_maps.is_empty() || u.gid_maps.is_empty() {
            return Err(Error::InvalidOption(
                "user namespace needs uid and gid mappings".into(),
            ));
        }
        linux = linux
            .uid_mappings(u.uid_maps.iter().map(map).collect::<Result<Vec<_>>>()?)
            .gid_mappings(u.gid_maps.iter().map(map).collect::<Result<Vec<_>>>()?);
    }
    let linux = linux.build().map_err(|e| bad("linux", e))?;

    let mut spec = SpecBuilder::default()
        .version(oci_spec::runtime::VERSION)
        .root(
            RootBuilder::default()
                .path(rootfs)
                .readonly(opts.read_only_rootfs)
                .build()
                .map_err(|e| bad("root", e))?,
        )
        .process(process)
        .mounts(mounts)
        .linux(linux)
        .build()
        .map_err(|e| bad("spec", e))?;
    if opts.network != NetworkMode::Host {
        spec.set_hostname(Some(hostname));
    }
    if !opts.annotations.is_empty() {
        spec.set_annotations(Some(
            opts.annotations
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        ));
    }
    Ok(spec)
}

/// Writes `spec` as `<bundle>/config.json`.
pub fn write_bundle(bundle: &Path, spec: &Spec) -> Result<()> {
    std::fs::create_dir_all(bundle)
        .map_err(|e| Error::io(format!("create bundle {}", bundle.display()), e))?;
    let text = serde_json::to_vec_pretty(spec).map_err(|e| Error::json("encode config.json", e))?;
    std::fs::write(bundle.join("config.json"), text)
        .map_err(|e| Error::io(format!("write {}/config.json", bundle.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rootfs() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("etc")).unwrap();
        std::fs::write(
            dir.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n",
        )
        .unwrap();
        dir
    }

    fn image() -> ImageDefaults {
        ImageDefaults {
            env: vec!["FOO=1".into()],
            entrypoint: Some(vec!["/entry".into()]),
            cmd: Some(vec!["serve".into()]),
            ..Default::default()
        }
    }

    #[test]
    fn docker_defaults() {
        let r = rootfs();
        let spec = build_spec(
            "0123456789abcdef",
            r.path(),
            &image(),
            &RunOptions::default(),
        )
        .unwrap();
        assert_eq!(spec.hostname().as_deref(), Some("0123456789ab"));
        let p = spec.process().as_ref().unwrap();
        assert_eq!(p.args().as_ref().unwrap(), &["/entry", "serve"]);
        let env = p.env().as_ref().unwrap();
        assert_eq!(env[0], format!("PATH={DEFAULT_PATH}"));
        assert!(env.contains(&"HOSTNAME=0123456789ab".to_owned()));
        assert!(env.contains(&"HOME=/root".to_owned()));
        assert_eq!(p.cwd(), Path::new("/"));
        let caps = p
            .capabilities()
            .as_ref()
            .unwrap()
            .bounding()
            .as_ref()
            .unwrap();
        assert_eq!(caps.len(), 14);
        let linux = spec.linux().as_ref().unwrap();
        assert_eq!(
            linux.masked_paths().as_ref().unwrap().len(),
            MASKED_PATHS.len()
        );
        assert!(linux.seccomp().is_some());
        assert_eq!(
            linux.cgroups_path().as_deref(),
            Some(Path::new("/berth/0123456789abcdef"))
        );
        let types: Vec<_> = linux
            .namespaces()
            .as_ref()
            .unwrap()
            .iter()
            .map(|n| n.typ())
            .collect();
        assert!(types.contains(&LinuxNamespaceType::Network));
        assert!(!types.contains(&LinuxNamespaceType::User));
        let shm = spec
            .mounts()
            .as_ref()
            .unwrap()
            .iter()
            .find(|m| m.destination() == Path::new("/dev/shm"))
            .unwrap();
        assert!(shm
            .options()
            .as_ref()
            .unwrap()
            .contains(&"size=67108864".to_owned()));
    }

    #[test]
    fn entrypoint_override_discards_image_cmd() {
        let r = rootfs();
        let opts = RunOptions {
            entrypoint: Some(vec!["sh".into()]),
            user: Some("app".into()),
            ..Default::default()
        };
        let spec = build_spec("c1", r.path(), &image(), &opts).unwrap();
        let p = spec.process().as_ref().unwrap();
        assert_eq!(p.args().as_ref().unwrap(), &["sh"]);
        assert_eq!(p.user().uid(), 1000);
    }

    #[test]
    fn cap_add_drop_all_and_privileged() {
        let opts = RunOptions {
            cap_drop: vec!["ALL".into()],
            cap_add: vec!["net_admin".into()],
            ..Default::default()
        };
        assert_eq!(
            capabilities(&opts).unwrap(),
            vec!["CAP_NET_ADMIN".to_owned()]
        );
        let opts = RunOptions {
            cap_drop: vec!["chown".into()],
            ..Default::default()
        };
        assert_eq!(capabilities(&opts).unwrap().len(), 13);
        let opts = RunOptions {
            cap_add: vec!["bogus".into()],
            ..Default::default()
        };
        assert!(capabilities(&opts).is_err());
        let r = rootfs();
        let opts = RunOptions {
            privileged: true,
            ..Default::default()
        };
        let spec = build_spec("c1", r.path(), &image(), &opts).unwrap();
        let linux = spec.linux().as_ref().unwrap();
        assert!(linux.seccomp().is_none());
        assert!(linux.masked_paths().as_ref().unwrap().is_empty());
        let caps = spec
            .process()
            .as_ref()
            .unwrap()
            .capabilities()
            .as_ref()
            .unwrap();
        assert_eq!(
            caps.bounding().as_ref().unwrap().len(),
            available_capabilities().len()
        );
    }

    #[test]
    fn sysctls_and_ulimits_are_checked() {
        let r = rootfs();
        let mut opts = RunOptions::default();
        opts.sysctls.insert("kernel.hostname".into(), "x".into());
        assert!(build_spec("c1", r.path(), &image(), &opts).is_err());
        let mut opts = RunOptions::default();
        opts.sysctls
            .insert("net.ipv4.ip_forward".into(), "1".into());
        assert!(build_spec("c1", r.path(), &image(), &opts).is_ok());
        opts.network = NetworkMode::Host;
        assert!(build_spec("c1", r.path(), &image(), &opts).is_err());
        let opts = RunOptions {
            ulimits: vec![Ulimit {
                name: "nofile".into(),
                soft: 10,
                hard: u64::MAX - 1,
            }],
            ..Default::default()
        };
        let err = build_spec("c1", r.path(), &image(), &opts).unwrap_err();
        assert!(err.to_string().contains("hard limit"), "{err}");
    }

    #[test]
    fn options_roundtrip_through_json() {
        let opts = RunOptions {
            network: NetworkMode::Path("/proc/1/ns/net".into()),
            userns: Some(UserNamespace {
                uid_maps: vec![IdMap {
                    container_id: 0,
                    host_id: 100000,
                    size: 65536,
                }],
                gid_maps: vec![],
            }),
            ..Default::default()
        };
        let text = serde_json::to_string(&opts).unwrap();
        let back: RunOptions = serde_json::from_str(&text).unwrap();
        assert_eq!(back, opts);
    }
}
