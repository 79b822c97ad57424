//! Direct operations on the mounted cgroup hierarchies, for the few paths where building a
//! libcgroups manager (one mount-table read per controller) costs more than the work itself.

use std::io;
use std::path::{Path, PathBuf};

/// A cgroup filesystem mounted at its hierarchy's root (bind mounts of a sub-cgroup, whose
/// root is not `/`, are left out: a container's path is not under them).
pub(crate) struct CgroupMount<'a> {
    pub mount_point: &'a str,
    /// `cgroup` (v1) or `cgroup2`.
    pub fstype: &'a str,
    /// The superblock options: a v1 hierarchy's controllers, `name=...` for a named one.
    pub super_options: &'a str,
}

/// The cgroup mounts of a `/proc/self/mountinfo` text.
pub(crate) fn cgroup_mounts(mountinfo: &str) -> impl Iterator<Item = CgroupMount<'_>> {
    mountinfo.lines().filter_map(|line| {
        let (before, after) = line.split_once(" - ")?;
        let mut after = after.split(' ');
        let fstype = after.next()?;
        if fstype != "cgroup" && fstype != "cgroup2" {
            return None;
        }
        let super_options = after.nth(1)?;
        let mut fields = before.split(' ');
        let root = fields.nth(3)?;
        let mount_point = fields.next()?;
        (root == "/").then_some(CgroupMount {
            mount_point,
            fstype,
            super_options,
        })
    })
}

/// Mount points of every cgroup v1 hierarchy and cgroup2 mount of its root.
fn hierarchy_roots(mountinfo: &str) -> Vec<PathBuf> {
    cgroup_mounts(mountinfo)
        .map(|m| PathBuf::from(m.mount_point))
        .collect()
}

/// Removes the empty cgroup `cgroup_path` (relative to each hierarchy's root) from every
/// hierarchy. Returns `false` if any directory could not be removed (processes or child cgroups
/// left in it), so the caller can fall back to a manager that kills and recurses.
pub(crate) fn remove_cgroup(cgroup_path: &Path) -> bool {
    let relative = cgroup_path.strip_prefix("/").unwrap_or(cgroup_path);
    if relative.as_os_str().is_empty() {
        // Never the hierarchy root itself.
        return false;
    }
    // Read once per process: the mount table grows with every running container's rootfs
    // (6 ms a read with 500 of them), while cgroup hierarchies are mounted at boot. (A
    // hierarchy mounted while the daemon runs would keep its containers' empty cgroups.)
    static ROOTS: std::sync::OnceLock<Vec<PathBuf>> = std::sync::OnceLock::new();
    let roots = ROOTS.get_or_init(|| {
        std::fs::read_to_string("/proc/self/mountinfo")
            .map(|m| hierarchy_roots(&m))
            .unwrap_or_default()
    });
    if roots.is_empty() {
        return false;
    }
    // Every hierarchy is tried (no short-circuit), so a retry only has the busy ones left.
    let mut all_removed = true;
    for root in roots {
        match std::fs::remove_dir(root.join(relative)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(_) => all_removed = false,
        }
    }
    all_removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hierarchy_roots_are_cgroup_mounts_of_the_root() {
        let info = "\
25 1 0:22 / / rw,relatime - ext4 /dev/vda rw
31 25 0:26 / /sys/fs/cgroup rw - tmpfs tmpfs rw,mode=755
32 31 0:27 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
50 25 0:36 /berth/abc /var/lib/x/pids rw - cgroup cgroup rw,pids
";
        assert_eq!(
            hierarchy_roots(info),
            [
                "/sys/fs/cgroup/cpu",
                "/sys/fs/cgroup/pids",
                "/sys/fs/cgroup/unified"
            ]
            .map(PathBuf::from)
        );
    }

    #[test]
    fn the_hierarchy_root_itself_is_never_removed() {
        assert!(!remove_cgroup(Path::new("/")));
        assert!(!remove_cgroup(Path::new("")));
    }
}
