//! cgroup v1 set-up for the containers [`super`] starts: the directories libcgroups' v1
//! manager uses (`<hierarchy>/<cgroups path>` for each of its twelve controllers), so stats,
//! freeze, update, kill and removal keep working through libcgroups, and the limits it would
//! write at create time. The mount table is read once, not once per controller.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxResources};

/// The controllers libcgroups' v1 manager places a container in.
const CONTROLLERS: [&str; 12] = [
    "cpu",
    "cpuacct",
    "cpuset",
    "devices",
    "hugetlb",
    "memory",
    "pids",
    "perf_event",
    "blkio",
    "net_prio",
    "net_cls",
    "freezer",
];

/// Device rules every container gets after its own (libcgroups' defaults, as runc's): the
/// standard nodes, mknod of any node, the console, ptys and tun.
const DEFAULT_DEVICE_RULES: [&str; 12] = [
    "c 1:3 rwm",
    "c 1:5 rwm",
    "c 1:7 rwm",
    "c 5:0 rwm",
    "c 1:9 rwm",
    "c 1:8 rwm",
    "c *:* m",
    "b *:* m",
    "c 5:1 rwm",
    "c 136:* rwm",
    "c 5:2 rwm",
    "c 10:200 rwm",
];

/// A v1 hierarchy mounted on the host.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Hierarchy {
    /// Where it is mounted, e.g. `/sys/fs/cgroup/cpu,cpuacct`.
    pub mount_point: PathBuf,
    /// Its controllers, or `name=systemd` for a named hierarchy.
    pub controllers: Vec<String>,
}

/// Every cgroup v1 hierarchy mounted at its root (bind mounts of a sub-cgroup are skipped).
pub(super) fn hierarchies(mountinfo: &str) -> Vec<Hierarchy> {
    crate::cgroup_fs::cgroup_mounts(mountinfo)
        .filter(|m| m.fstype == "cgroup")
        .filter_map(|m| {
            let controllers = m
                .super_options
                .split(',')
                .filter(|o| CONTROLLERS.contains(o) || o.starts_with("name="))
                .map(str::to_owned)
                .collect::<Vec<_>>();
            (!controllers.is_empty()).then(|| Hierarchy {
                mount_point: PathBuf::from(m.mount_point),
                controllers,
            })
        })
        .collect()
}

/// A container's cgroup in every v1 hierarchy that has one of [`CONTROLLERS`].
#[derive(Debug)]
pub(super) struct Cgroup {
    /// One directory per controller (co-mounted controllers share one).
    dirs: Vec<(&'static str, PathBuf)>,
}

impl Cgroup {
    /// Creates `cgroups_path` (absolute, relative to each hierarchy's root) and writes the
    /// limits of `resources`. Removes what it made if a limit cannot be written.
    pub(super) fn create(
        hierarchies: &[Hierarchy],
        cgroups_path: &Path,
        resources: Option<&LinuxResources>,
    ) -> io::Result<Self> {
        let relative = cgroups_path.strip_prefix("/").unwrap_or(cgroups_path);
        let mut dirs = Vec::new();
        for controller in CONTROLLERS {
            let Some(h) = hierarchies
                .iter()
                .find(|h| h.controllers.iter().any(|c| c == controller))
            else {
                continue;
            };
            dirs.push((controller, h.mount_point.join(relative)));
        }
        let cgroup = Self { dirs };
        let made = cgroup.make_dirs(relative).and_then(|()| {
            cgroup.write_devices(resources.and_then(|r| r.devices().as_deref()))?;
            if let Some(r) = resources {
                cgroup.write_limits(r)?;
            }
            Ok(())
        });
        if let Err(e) = made {
            cgroup.remove();
            return Err(e);
        }
        Ok(cgroup)
    }

    fn dir(&self, controller: &str) -> Option<&Path> {
        self.dirs
            .iter()
            .find(|(c, _)| *c == controller)
            .map(|(_, d)| d.as_path())
    }

    fn make_dirs(&self, relative: &Path) -> io::Result<()> {
        for (controller, dir) in &self.dirs {
            fs::create_dir_all(dir).map_err(|e| context(e, "create", dir))?;
            if *controller == "cpuset" {
                fill_cpuset(dir, relative)?;
            }
        }
        Ok(())
    }

    fn write_devices(&self, rules: Option<&[LinuxDeviceCgroup]>) -> io::Result<()> {
        let Some(dir) = self.dir("devices") else {
            return Ok(());
        };
        // The kernel parses one rule per write: one descriptor per file serves them all.
        let open = |file: &str| {
            let path = dir.join(file);
            fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(|e| context(e, "open", &path))
        };
        let (mut allow, mut deny) = (open("devices.allow")?, open("devices.deny")?);
        let mut apply = |allowed: bool, rule: &str| {
            use std::io::Write;
            let (file, name) = if allowed {
                (&mut allow, "devices.allow")
            } else {
                (&mut deny, "devices.deny")
            };
            file.write_all(rule.as_bytes())
                .map_err(|e| context(e, &format!("write {rule:?} to"), &dir.join(name)))
        };
        for rule in rules.unwrap_or_default() {
            apply(rule.allow(), &rule.to_string())?;
        }
        for rule in DEFAULT_DEVICE_RULES {
            apply(true, rule)?;
        }
        Ok(())
    }

    fn write_limits(&self, r: &LinuxResources) -> io::Result<()> {
        let dir = |controller: &str| {
            self.dir(controller).ok_or_else(|| {
                io::Error::other(format!(
                    "cgroup controller {controller} is not mounted on this host"
                ))
            })
        };
        if let Some(m) = r.memory() {
            let has_any = m.limit().is_some()
                || m.reservation().is_some()
                || m.swap().is_some()
                || m.swappiness().is_some()
                || m.disable_oom_killer().is_some();
            if has_any {
                let d = dir("memory")?;
                if let Some(limit) = m.limit() {
                    write(d, "memory.limit_in_bytes", &limit.to_string())?;
                }
                if let Some(swap) = m.swap() {
                    // Without swap accounting the file is missing: Docker then ignores the
                    // swap limit (and warns at create).
                    if d.join("memory.memsw.limit_in_bytes").exists() {
                        write(d, "memory.memsw.limit_in_bytes", &swap.to_string())?;
                    }
                }
                if let Some(reservation) = m.reservation() {
                    write(d, "memory.soft_limit_in_bytes", &reservation.to_string())?;
                }
                if let Some(swappiness) = m.swappiness() {
                    write(d, "memory.swappiness", &swappiness.to_string())?;
                }
                if m.disable_oom_killer() == Some(true) {
                    write(d, "memory.oom_control", "1")?;
                }
            }
        }
        if let Some(c) = r.cpu() {
            if c.shares().is_some()
                || c.quota().is_some()
                || c.period().is_some()
                || c.realtime_period().is_some()
                || c.realtime_runtime().is_some()
            {
                let d = dir("cpu")?;
                if let Some(shares) = c.shares() {
                    write(d, "cpu.shares", &shares.to_string())?;
                }
                // The period first: a quota is checked against the current period.
                if let Some(period) = c.period() {
                    write(d, "cpu.cfs_period_us", &period.to_string())?;
                }
                if let Some(quota) = c.quota() {
                    write(d, "cpu.cfs_quota_us", &quota.to_string())?;
                }
                if let Some(period) = c.realtime_period() {
                    write(d, "cpu.rt_period_us", &period.to_string())?;
                }
                if let Some(runtime) = c.realtime_runtime() {
                    write(d, "cpu.rt_runtime_us", &runtime.to_string())?;
                }
            }
            if let Some(cpus) = c.cpus().as_deref().filter(|s| !s.is_empty()) {
                write(dir("cpuset")?, "cpuset.cpus", cpus)?;
            }
            if let Some(mems) = c.mems().as_deref().filter(|s| !s.is_empty()) {
                write(dir("cpuset")?, "cpuset.mems", mems)?;
            }
        }
        if let Some(p) = r.pids() {
            let value = if p.limit() > 0 {
                p.limit().to_string()
            } else {
                "max".to_owned()
            };
            write(dir("pids")?, "pids.max", &value)?;
        }
        Ok(())
    }

    /// Moves process `pid` into the cgroup, in every hierarchy.
    pub(super) fn add(&self, pid: i32) -> io::Result<()> {
        let pid = pid.to_string();
        for (_, dir) in &self.dirs {
            write(dir, "cgroup.procs", &pid)?;
        }
        Ok(())
    }

    /// Removes the (empty) directories, leaf first as there are no children.
    pub(super) fn remove(&self) {
        for (_, dir) in &self.dirs {
            let _ = fs::remove_dir(dir);
        }
    }
}

/// Whether `resources` only has limits [`Cgroup`] writes (memory, cpu, cpuset, pids, device
/// rules): anything else is left to libcgroups.
pub(super) fn supported(resources: &LinuxResources) -> Result<(), &'static str> {
    if resources.block_io().is_some() {
        return Err("block I/O limits");
    }
    if resources
        .hugepage_limits()
        .as_ref()
        .is_some_and(|l| !l.is_empty())
    {
        return Err("hugepage limits");
    }
    if resources.network().is_some() {
        return Err("network class or priority");
    }
    if resources.rdma().as_ref().is_some_and(|r| !r.is_empty()) {
        return Err("rdma limits");
    }
    if resources.unified().as_ref().is_some_and(|u| !u.is_empty()) {
        return Err("cgroup v2 unified settings");
    }
    if let Some(m) = resources.memory() {
        if m.kernel().is_some() || m.kernel_tcp().is_some() || m.use_hierarchy().is_some() {
            return Err("kernel memory limits");
        }
        if m.check_before_update().is_some() {
            return Err("memory check before update");
        }
    }
    if let Some(c) = resources.cpu() {
        if c.idle().is_some() || c.burst().is_some() {
            return Err("cpu idle or burst");
        }
    }
    Ok(())
}

/// A new cpuset cgroup starts with no cpus and no memory nodes, and no task can join it
/// until both are set: copy them down from the nearest ancestor that has them. The parent is
/// then told to give its next children its own values (`cgroup.clone_children`), so the
/// common case is one read per file.
fn fill_cpuset(dir: &Path, relative: &Path) -> io::Result<()> {
    let filled =
        |d: &Path, file: &str| fs::read_to_string(d.join(file)).is_ok_and(|v| !v.trim().is_empty());
    if filled(dir, "cpuset.cpus") && filled(dir, "cpuset.mems") {
        return Ok(());
    }
    let mut chain: Vec<&Path> = relative.ancestors().collect();
    chain.pop(); // the hierarchy root itself
    let root = relative.components().fold(dir.to_path_buf(), |d, _| {
        d.parent().unwrap_or(&d).to_path_buf()
    });
    for file in ["cpuset.cpus", "cpuset.mems"] {
        let mut parent_value = fs::read_to_string(root.join(file))
            .map_err(|e| context(e, "read", &root.join(file)))?;
        for step in chain.iter().rev() {
            let at = root.join(step);
            let value = fs::read_to_string(at.join(file)).unwrap_or_default();
            if value.trim().is_empty() {
                write(&at, file, parent_value.trim())?;
            } else {
                parent_value = value;
            }
        }
    }
    if let Some(parent) = dir.parent() {
        let _ = fs::write(parent.join("cgroup.clone_children"), "1");
    }
    Ok(())
}

fn write(dir: &Path, file: &str, value: &str) -> io::Result<()> {
    let path = dir.join(file);
    fs::write(&path, value).map_err(|e| context(e, &format!("write {value:?} to"), &path))
}

fn context(e: io::Error, what: &str, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hierarchies_are_v1_mounts_of_the_root_with_known_controllers() {
        let info = "\
25 1 0:22 / / rw,relatime - ext4 /dev/vda rw
31 25 0:26 / /sys/fs/cgroup rw - tmpfs tmpfs rw,mode=755
32 31 0:27 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
50 25 0:36 /berth/abc /var/lib/x/pids rw - cgroup cgroup rw,pids
";
        let found = hierarchies(info);
        assert_eq!(
            found,
            [
                ("/sys/fs/cgroup/cpu,cpuacct", vec!["cpu", "cpuacct"]),
                ("/sys/fs/cgroup/pids", vec!["pids"]),
                ("/sys/fs/cgroup/systemd", vec!["name=systemd"]),
            ]
            .map(|(m, c)| Hierarchy {
                mount_point: m.into(),
                controllers: c.into_iter().map(str::to_owned).collect(),
            })
        );
    }

    #[test]
    fn a_cpuset_is_filled_from_its_nearest_set_ancestor() {
        let root = tempfile::tempdir().unwrap();
        fs::write(root.path().join("cpuset.cpus"), "0-1\n").unwrap();
        fs::write(root.path().join("cpuset.mems"), "0\n").unwrap();
        let leaf = root.path().join("berth/abc");
        fs::create_dir_all(&leaf).unwrap();
        for d in [root.path().join("berth"), leaf.clone()] {
            fs::write(d.join("cpuset.cpus"), "\n").unwrap();
            fs::write(d.join("cpuset.mems"), "").unwrap();
        }
        fill_cpuset(&leaf, Path::new("berth/abc")).unwrap();
        assert_eq!(fs::read_to_string(leaf.join("cpuset.cpus")).unwrap(), "0-1");
        assert_eq!(
            fs::read_to_string(root.path().join("berth/cpuset.mems")).unwrap(),
            "0"
        );
        // The next sibling inherits at creation.
        assert_eq!(
            fs::read_to_string(root.path().join("berth/cgroup.clone_children")).unwrap(),
            "1"
        );
    }
}
