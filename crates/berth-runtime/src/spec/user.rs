//! Resolving Docker's `--user` (`name|uid[:group|gid]`) against the image's /etc/passwd and
//! /etc/group, the way runc's `GetExecUser` does.
//!
//! The files are opened through [`scoped_path`], which resolves symlinks inside the rootfs so a
//! malicious image cannot make the engine read a host file.

use std::path::{Component, Path, PathBuf};

use crate::error::{Error, Result};

/// The numeric identity a container process runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedUser {
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Supplementary groups (from /etc/group membership and `group_add`).
    pub additional_gids: Vec<u32>,
    /// Home directory from /etc/passwd (`/` when unknown).
    pub home: String,
}

struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
    home: String,
}

struct GroupEntry {
    name: String,
    gid: u32,
    members: Vec<String>,
}

/// Maximum symlinks followed while resolving one path (as the kernel's `MAXSYMLINKS`).
const MAX_SYMLINKS: usize = 40;

/// Resolves `path` (absolute, as seen inside the container) to a host path under `rootfs`,
/// following symlinks as if `rootfs` were `/`: `..` and absolute link targets never leave it.
pub fn scoped_path(rootfs: &Path, path: &Path) -> Result<PathBuf> {
    let mut resolved = PathBuf::from("/");
    let mut pending: Vec<PathBuf> = path
        .components()
        .rev()
        .filter_map(|c| match c {
            Component::Normal(p) => Some(PathBuf::from(p)),
            Component::ParentDir => Some(PathBuf::from("..")),
            _ => None,
        })
        .collect();
    let mut links = 0;
    while let Some(part) = pending.pop() {
        if part == Path::new("..") {
            resolved.pop();
            continue;
        }
        let candidate = resolved.join(&part);
        let host = rootfs.join(candidate.strip_prefix("/").unwrap_or(&candidate));
        match std::fs::symlink_metadata(&host) {
            Ok(meta) if meta.file_type().is_symlink() => {
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(Error::InvalidOption(format!(
                        "too many symlinks resolving {} in {}",
                        path.display(),
                        rootfs.display()
                    )));
                }
                let target = std::fs::read_link(&host)
                    .map_err(|e| Error::io(format!("readlink {}", host.display()), e))?;
                if target.is_absolute() {
                    resolved = PathBuf::from("/");
                }
                for c in target.components().rev() {
                    match c {
                        Component::Normal(p) => pending.push(PathBuf::from(p)),
                        Component::ParentDir => pending.push(PathBuf::from("..")),
                        _ => {}
                    }
                }
            }
            _ => resolved = candidate,
        }
    }
    Ok(rootfs.join(resolved.strip_prefix("/").unwrap_or(&resolved)))
}

fn read_db(rootfs: &Path, file: &str) -> Result<String> {
    let host = scoped_path(rootfs, Path::new(file))?;
    match std::fs::read_to_string(&host) {
        Ok(text) => Ok(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(e) => Err(Error::io(format!("read {file} in {}", rootfs.display()), e)),
    }
}

fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() < 7 {
                return None;
            }
            Some(PasswdEntry {
                name: f[0].to_owned(),
                uid: f[2].parse().ok()?,
                gid: f[3].parse().ok()?,
                home: f[5].to_owned(),
            })
        })
        .collect()
}

fn parse_group(text: &str) -> Vec<GroupEntry> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() < 4 {
                return None;
            }
            Some(GroupEntry {
                name: f[0].to_owned(),
                gid: f[2].parse().ok()?,
                members: f[3]
                    .split(',')
                    .filter(|m| !m.is_empty())
                    .map(str::to_owned)
                    .collect(),
            })
        })
        .collect()
}

fn find_group(groups: &[GroupEntry], spec: &str) -> Result<u32> {
    if let Ok(gid) = spec.parse::<u32>() {
        return Ok(gid);
    }
    groups
        .iter()
        .find(|g| g.name == spec)
        .map(|g| g.gid)
        .ok_or_else(|| {
            Error::InvalidOption(format!(
                "unable to find group {spec}: no matching entries in group file"
            ))
        })
}

/// Resolves `user` (`""`, `name`, `uid`, `name:group`, `uid:gid`...) plus `group_add` entries
/// against the rootfs's /etc/passwd and /etc/group.
pub fn resolve_user(rootfs: &Path, user: &str, group_add: &[String]) -> Result<ResolvedUser> {
    let passwd = parse_passwd(&read_db(rootfs, "/etc/passwd")?);
    let groups = parse_group(&read_db(rootfs, "/etc/group")?);
    let (user_part, group_part) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let user_part = if user_part.is_empty() { "0" } else { user_part };

    let entry = match user_part.parse::<u32>() {
        Ok(uid) => passwd.iter().find(|p| p.uid == uid),
        Err(_) => Some(passwd.iter().find(|p| p.name == user_part).ok_or_else(|| {
            Error::InvalidOption(format!(
                "unable to find user {user_part}: no matching entries in passwd file"
            ))
        })?),
    };
    let (uid, mut gid, home, name) = match (entry, user_part.parse::<u32>()) {
        (Some(p), _) => (p.uid, p.gid, p.home.clone(), Some(p.name.clone())),
        (None, Ok(uid)) => (uid, 0, "/".to_owned(), None),
        (None, Err(_)) => unreachable!("a named user was either found or reported"),
    };
    if let Some(g) = group_part.filter(|g| !g.is_empty()) {
        gid = find_group(&groups, g)?;
    }
    let mut additional_gids = Vec::new();
    // Like runc: an explicit group replaces the supplementary groups of /etc/group.
    if group_part.is_none() {
        if let Some(name) = &name {
            for g in &groups {
                if g.members.iter().any(|m| m == name) && g.gid != gid {
                    additional_gids.push(g.gid);
                }
            }
        }
    }
    for g in group_add {
        let gid = find_group(&groups, g)?;
        if !additional_gids.contains(&gid) {
            additional_gids.push(gid);
        }
    }
    Ok(ResolvedUser {
        uid,
        gid,
        additional_gids,
        home: if home.is_empty() {
            "/".to_owned()
        } else {
            home
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rootfs() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("etc")).unwrap();
        std::fs::write(
            dir.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\napp:x:1000:1000::/home/app:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("etc/group"),
            "root:x:0:\nwheel:x:10:app\napp:x:1000:\nnogroup:x:65534:\n",
        )
        .unwrap();
        dir
    }

    #[test]
    fn resolves_names_numbers_and_groups() {
        let r = rootfs();
        let u = resolve_user(r.path(), "", &[]).unwrap();
        assert_eq!((u.uid, u.gid, u.home.as_str()), (0, 0, "/root"));
        let u = resolve_user(r.path(), "app", &[]).unwrap();
        assert_eq!((u.uid, u.gid), (1000, 1000));
        assert_eq!(u.additional_gids, vec![10]);
        let u = resolve_user(r.path(), "app:nogroup", &["wheel".into()]).unwrap();
        assert_eq!(
            (u.uid, u.gid, u.additional_gids.clone()),
            (1000, 65534, vec![10])
        );
        let u = resolve_user(r.path(), "4242:4343", &[]).unwrap();
        assert_eq!((u.uid, u.gid, u.home.as_str()), (4242, 4343, "/"));
        let u = resolve_user(r.path(), "4242", &[]).unwrap();
        assert_eq!((u.uid, u.gid), (4242, 0));
        assert!(resolve_user(r.path(), "ghost", &[]).is_err());
        assert!(resolve_user(r.path(), "app:ghosts", &[]).is_err());
    }

    #[test]
    fn symlinks_stay_inside_the_rootfs() {
        let r = rootfs();
        std::fs::remove_file(r.path().join("etc/passwd")).unwrap();
        std::os::unix::fs::symlink("/../../../../etc/passwd-real", r.path().join("etc/passwd"))
            .unwrap();
        std::fs::write(
            r.path().join("etc/passwd-real"),
            "bob:x:77:88::/b:/bin/sh\n",
        )
        .unwrap();
        let p = scoped_path(r.path(), Path::new("/etc/passwd")).unwrap();
        assert_eq!(p, r.path().join("etc/passwd-real"));
        let u = resolve_user(r.path(), "bob", &[]).unwrap();
        assert_eq!((u.uid, u.gid), (77, 88));
    }
}
