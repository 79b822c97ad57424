//! The `local` driver's options, as dockerd's local driver reads them: `type`, `device` and
//! `o` describe a filesystem (`type=tmpfs device=tmpfs o=size=10m`, `type=none o=bind
//! device=/path`, `type=nfs ...`) that is mounted on the volume's `_data` directory while
//! containers use it. A volume without them is a plain directory.

use std::collections::BTreeMap;
use std::path::Path;

use nix::mount::{mount, umount2, MntFlags, MsFlags};

use crate::error::{Error, Result};

/// Option keys the local driver accepts (`size` needs filesystem quotas, which Berth does
/// not set up, so it is refused with dockerd's message).
const VALID_OPTIONS: &[&str] = &["type", "device", "o", "size"];

/// Checks driver options as dockerd's local driver does: known keys only, and `type`,
/// `device` and `o` only together (`o` needs both, `type` and `device` each other).
pub fn validate(name: &str, opts: &BTreeMap<String, String>) -> Result<()> {
    let bad = |reason: String| Error::InvalidOption {
        name: name.to_string(),
        reason,
    };
    for key in opts.keys() {
        if !VALID_OPTIONS.contains(&key.as_str()) {
            return Err(bad(format!("invalid option: {key:?}")));
        }
    }
    if opts.contains_key("size") {
        return Err(bad("quota size requested but no quota support".into()));
    }
    let required: &[(&str, &[&str])] = &[
        ("device", &["type"]),
        ("type", &["device"]),
        ("o", &["device", "type"]),
    ];
    for (opt, needs) in required {
        if opts.contains_key(*opt) {
            if let Some(missing) = needs.iter().find(|n| !opts.contains_key(**n)) {
                return Err(bad(format!("missing required option: {missing:?}")));
            }
        }
    }
    let (flags, _) = parse_mount_options(opts.get("o").map(String::as_str).unwrap_or(""));
    if flags.contains(MsFlags::MS_BIND) {
        let device = opts.get("device").map(String::as_str).unwrap_or("");
        if !Path::new(device).is_absolute() {
            return Err(bad(format!(
                "bind device {device:?} must be an absolute path"
            )));
        }
        if !Path::new(device).exists() {
            return Err(bad(format!(
                "failed to mount local volume: mount {device}: no such file or directory"
            )));
        }
    }
    Ok(())
}

/// True when the options describe a filesystem to mount (rather than a plain directory).
pub fn needs_mount(opts: &BTreeMap<String, String>) -> bool {
    opts.contains_key("type") || opts.contains_key("device")
}

/// Splits `o` into mount flags and the filesystem-specific data string, as mount(8) does:
/// words it knows as flags (`ro`, `nosuid`, `bind`...) become flags, everything else (such
/// as `size=10m` or `addr=...`) is passed to the filesystem.
pub fn parse_mount_options(o: &str) -> (MsFlags, String) {
    let mut flags = MsFlags::empty();
    let mut data = Vec::new();
    for word in o.split(',').filter(|w| !w.is_empty()) {
        let (set, clear) = match word {
            "defaults" | "rw" => (MsFlags::empty(), MsFlags::MS_RDONLY),
            "ro" => (MsFlags::MS_RDONLY, MsFlags::empty()),
            "nosuid" => (MsFlags::MS_NOSUID, MsFlags::empty()),
            "suid" => (MsFlags::empty(), MsFlags::MS_NOSUID),
            "nodev" => (MsFlags::MS_NODEV, MsFlags::empty()),
            "dev" => (MsFlags::empty(), MsFlags::MS_NODEV),
            "noexec" => (MsFlags::MS_NOEXEC, MsFlags::empty()),
            "exec" => (MsFlags::empty(), MsFlags::MS_NOEXEC),
            "sync" => (MsFlags::MS_SYNCHRONOUS, MsFlags::empty()),
            "async" => (MsFlags::empty(), MsFlags::MS_SYNCHRONOUS),
            "dirsync" => (MsFlags::MS_DIRSYNC, MsFlags::empty()),
            "noatime" => (MsFlags::MS_NOATIME, MsFlags::empty()),
            "atime" => (MsFlags::empty(), MsFlags::MS_NOATIME),
            "nodiratime" => (MsFlags::MS_NODIRATIME, MsFlags::empty()),
            "diratime" => (MsFlags::empty(), MsFlags::MS_NODIRATIME),
            "relatime" => (MsFlags::MS_RELATIME, MsFlags::empty()),
            "norelatime" => (MsFlags::empty(), MsFlags::MS_RELATIME),
            "strictatime" => (MsFlags::MS_STRICTATIME, MsFlags::empty()),
            "nostrictatime" => (MsFlags::empty(), MsFlags::MS_STRICTATIME),
            "bind" => (MsFlags::MS_BIND, MsFlags::empty()),
            "rbind" => (MsFlags::MS_BIND | MsFlags::MS_REC, MsFlags::empty()),
            _ => {
                data.push(word);
                continue;
            }
        };
        flags = (flags | set) & !clear;
    }
    (flags, data.join(","))
}

/// Mounts the filesystem the options describe on `target` (the volume's `_data`).
pub fn mount_volume(name: &str, opts: &BTreeMap<String, String>, target: &Path) -> Result<()> {
    let typ = opts.get("type").map(String::as_str).unwrap_or("none");
    let device = opts.get("device").map(String::as_str).unwrap_or("none");
    let (flags, data) = parse_mount_options(opts.get("o").map(String::as_str).unwrap_or(""));
    let failed = |what: &str, e: nix::Error| Error::Mount {
        name: name.to_string(),
        reason: format!("{what} {device} on {}: {e}", target.display()),
    };
    let fstype = (typ != "none").then_some(typ);
    let data = (!data.is_empty()).then_some(data.as_str());
    if flags.contains(MsFlags::MS_BIND) {
        // A bind mount ignores MS_RDONLY and data; read-only needs a remount.
        mount(
            Some(device),
            target,
            None::<&str>,
            flags & (MsFlags::MS_BIND | MsFlags::MS_REC),
            None::<&str>,
        )
        .map_err(|e| failed("bind", e))?;
        let rest = flags & !(MsFlags::MS_BIND | MsFlags::MS_REC);
        if !rest.is_empty() {
            let remount = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | rest;
            if let Err(e) = mount(None::<&str>, target, None::<&str>, remount, None::<&str>) {
                let _ = umount2(target, MntFlags::MNT_DETACH);
                return Err(failed("remount", e));
            }
        }
        return Ok(());
    }
    mount(Some(device), target, fstype, flags, data).map_err(|e| failed("mount", e))
}

/// Unmounts a volume's filesystem; one that is not mounted is fine.
pub fn unmount_volume(name: &str, target: &Path) -> Result<()> {
    if !is_mountpoint(target) {
        return Ok(());
    }
    // Lazy: a process still holding a file open there must not make removal fail.
    umount2(target, MntFlags::MNT_DETACH).map_err(|e| Error::Mount {
        name: name.to_string(),
        reason: format!("unmount {}: {e}", target.display()),
    })
}

/// True when `path` is a mount point in this mount namespace (from `/proc/self/mountinfo`).
pub fn is_mountpoint(path: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let canonical = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    info.lines().any(|line| {
        line.split(' ')
            .nth(4)
            .is_some_and(|mp| Path::new(&unescape_octal(mp)) == canonical)
    })
}

/// Undoes mountinfo's `\040`-style escapes of spaces, tabs, newlines and backslashes.
fn unescape_octal(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() {
            if let Some(b) = std::str::from_utf8(&bytes[i + 1..i + 4])
                .ok()
                .and_then(|o| u8::from_str_radix(o, 8).ok())
            {
                out.push(b);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn option_validation() {
        assert!(validate("v", &opts(&[])).is_ok());
        assert!(validate(
            "v",
            &opts(&[("type", "tmpfs"), ("device", "tmpfs"), ("o", "size=1m")])
        )
        .is_ok());
        assert_eq!(
            validate("v", &opts(&[("foo", "bar")]))
                .unwrap_err()
                .to_string(),
            "create v: invalid option: \"foo\""
        );
        assert_eq!(
            validate("v", &opts(&[("type", "tmpfs")]))
                .unwrap_err()
                .to_string(),
            "create v: missing required option: \"device\""
        );
        assert!(validate(
            "v",
            &opts(&[
                ("type", "none"),
                ("device", "/nonexistent-x"),
                ("o", "bind")
            ])
        )
        .is_err());
        assert!(validate(
            "v",
            &opts(&[("type", "none"), ("device", "/tmp"), ("o", "bind")])
        )
        .is_ok());
    }

    #[test]
    fn mount_option_words() {
        let (f, d) = parse_mount_options("size=10m,ro,nosuid,uid=1000");
        assert_eq!(f, MsFlags::MS_RDONLY | MsFlags::MS_NOSUID);
        assert_eq!(d, "size=10m,uid=1000");
        let (f, d) = parse_mount_options("ro,rw,rbind");
        assert_eq!(f, MsFlags::MS_BIND | MsFlags::MS_REC);
        assert_eq!(d, "");
        assert_eq!(unescape_octal("/a\\040b"), "/a b");
    }
}
