//! The kernel's `favordynmods` cgroup mode: task migrations without an RCU grace period.
//!
//! Every write to a `cgroup.procs` file takes the global `cgroup_threadgroup_rwsem` for
//! writing. That lock is a per-CPU rwsem whose writers, after a quiet spell, wait for a full RCU
//! grace period (7–20 ms on a small VM) so that `fork` and `exit` can keep a cheap read side. A
//! container start migrates its init into its cgroups once, so each start pays one grace period
//! unless another migration happened just before. The cgroup2 mount option `favordynmods`
//! (Linux 6.0+; since 6.18 it also switches `cgroup.procs` writes to a per-thread-group lock)
//! makes the opposite trade: forks and exits take a slightly slower read side and migrations
//! never wait for a grace period.
//!
//! It is a property of the whole host (there is one cgroup2 root), and since Linux 6.18 turning
//! it off again leaves the per-thread-group locking in place until reboot, so Berth only sets it
//! when the administrator asks (`berth daemon --cgroup-favordynmods`). The option is set by
//! remounting the cgroup2 mount (`/sys/fs/cgroup` on a unified host, `/sys/fs/cgroup/unified` on
//! a hybrid one) with its current options plus `favordynmods`; cgroup v1 hierarchies refuse
//! option changes on remount, so a v1-only host needs the `cgroup_favordynmods=1` boot
//! parameter instead.

use std::path::{Path, PathBuf};

use nix::mount::MsFlags;

use crate::error::{Error, Result};

/// The cgroup2 mount option this module sets.
const FAVORDYNMODS: &str = "favordynmods";

/// What [`favor_dynamic_modifications`] found or did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Favordynmods {
    /// The cgroup2 mount at this path already had the option.
    AlreadyEnabled(PathBuf),
    /// The cgroup2 mount at this path was remounted with the option.
    Enabled(PathBuf),
}

/// A cgroup2 mount as `/proc/self/mountinfo` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Cgroup2Mount {
    mount_point: PathBuf,
    /// Per-mount options (field 6: `rw,nosuid,relatime`...), kept as they are on remount.
    mount_options: String,
    /// Superblock options (the last field: `rw,nsdelegate,memory_recursiveprot`...).
    super_options: String,
}

/// Makes the host's cgroup2 root favour dynamic modifications (see the module docs).
pub fn favor_dynamic_modifications() -> Result<Favordynmods> {
    let mountinfo = Path::new("/proc/self/mountinfo");
    let text = std::fs::read_to_string(mountinfo)
        .map_err(|e| Error::io(format!("read {}", mountinfo.display()), e))?;
    let mount = find_cgroup2(&text).ok_or_else(|| Error::Cgroup {
        path: PathBuf::from("/sys/fs/cgroup"),
        message: "no cgroup2 mount to set favordynmods on (on a cgroup-v1-only host use the \
                  cgroup_favordynmods=1 boot parameter)"
            .into(),
    })?;
    if has_option(&mount.super_options, FAVORDYNMODS) {
        return Ok(Favordynmods::AlreadyEnabled(mount.mount_point));
    }
    let (flags, data) = remount_arguments(&mount);
    nix::mount::mount(
        None::<&str>,
        &mount.mount_point,
        Some("cgroup2"),
        flags,
        Some(data.as_str()),
    )
    .map_err(|errno| Error::Cgroup {
        path: mount.mount_point.clone(),
        message: match errno {
            nix::errno::Errno::EINVAL => {
                format!("remount with {data:?}: the kernel does not know favordynmods (Linux 6.0+)")
            }
            other => format!("remount with {data:?}: {other}"),
        },
    })?;
    Ok(Favordynmods::Enabled(mount.mount_point))
}

/// The first cgroup2 mount in a mountinfo text.
fn find_cgroup2(mountinfo: &str) -> Option<Cgroup2Mount> {
    mountinfo.lines().find_map(|line| {
        // `ID PARENT MAJ:MIN ROOT MOUNT_POINT MOUNT_OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER_OPTIONS`
        let (before, after) = line.split_once(" - ")?;
        let mut tail = after.split(' ');
        if tail.next()? != "cgroup2" {
            return None;
        }
        let super_options = tail.nth(1)?.to_string();
        let mut head = before.split(' ');
        let mount_point = unescape_octal(head.nth(4)?);
        let mount_options = head.next()?.to_string();
        Some(Cgroup2Mount {
            mount_point: PathBuf::from(mount_point),
            mount_options,
            super_options,
        })
    })
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_octal(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|d| {
            std::str::from_utf8(d)
                .ok()
                .and_then(|d| u8::from_str_radix(d, 8).ok())
        });
        match (bytes[i], octal) {
            (b'\\', Some(byte)) => {
                out.push(byte);
                i += 4;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn has_option(options: &str, name: &str) -> bool {
    options.split(',').any(|o| o == name)
}

/// `mount(2)` flags and data for remounting `mount` with favordynmods added.
///
/// A remount replaces both the per-mount flags and cgroup2's root flags with what it is given,
/// so both are carried over: dropping `nosuid,nodev,noexec` or `nsdelegate` on the way would
/// loosen the host.
fn remount_arguments(mount: &Cgroup2Mount) -> (MsFlags, String) {
    let mut flags = MsFlags::MS_REMOUNT;
    for option in mount.mount_options.split(',') {
        flags |= match option {
            "ro" => MsFlags::MS_RDONLY,
            "nosuid" => MsFlags::MS_NOSUID,
            "nodev" => MsFlags::MS_NODEV,
            "noexec" => MsFlags::MS_NOEXEC,
            "noatime" => MsFlags::MS_NOATIME,
            "nodiratime" => MsFlags::MS_NODIRATIME,
            "relatime" => MsFlags::MS_RELATIME,
            "strictatime" => MsFlags::MS_STRICTATIME,
            _ => MsFlags::empty(),
        };
    }
    let mut data: Vec<&str> = mount
        .super_options
        .split(',')
        .filter(|o| !o.is_empty() && *o != "rw" && *o != "ro")
        .collect();
    data.push(FAVORDYNMODS);
    (flags, data.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
25 1 0:22 / / rw,relatime shared:1 - ext4 /dev/vda rw
31 25 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec - tmpfs tmpfs rw,mode=755
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
41 31 0:38 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";

    #[test]
    fn finds_the_cgroup2_mount_and_keeps_its_options_on_remount() {
        let mount = find_cgroup2(HYBRID).expect("a cgroup2 mount");
        assert_eq!(mount.mount_point, Path::new("/sys/fs/cgroup/unified"));
        assert!(!has_option(&mount.super_options, FAVORDYNMODS));
        let (flags, data) = remount_arguments(&mount);
        assert_eq!(
            flags,
            MsFlags::MS_REMOUNT
                | MsFlags::MS_NOSUID
                | MsFlags::MS_NODEV
                | MsFlags::MS_NOEXEC
                | MsFlags::MS_RELATIME
        );
        assert_eq!(data, "nsdelegate,memory_recursiveprot,favordynmods");
    }

    #[test]
    fn a_v1_only_host_has_no_cgroup2_mount() {
        let v1_only: String = HYBRID
            .lines()
            .filter(|l| !l.contains("cgroup2"))
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(find_cgroup2(&v1_only), None);
    }

    #[test]
    fn mount_points_are_unescaped() {
        let line = "41 31 0:38 / /sys/fs/cg\\040v2 rw - cgroup2 cgroup2 rw,favordynmods\n";
        let mount = find_cgroup2(line).expect("a cgroup2 mount");
        assert_eq!(mount.mount_point, Path::new("/sys/fs/cg v2"));
        assert!(has_option(&mount.super_options, FAVORDYNMODS));
    }
}
