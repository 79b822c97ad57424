//! A container's mounts: from Docker's `HostConfig` (`Binds`, `Mounts`, `Tmpfs`,
//! `VolumesFrom`) and the image's `Volumes` to the runtime's [`MountSpec`]s.
//!
//! At create, [`Daemon::create_mount_points`] validates every specification (dockerd's
//! messages, 400 on error), creates the named volumes that do not exist yet and an anonymous
//! volume for each image or `Config.Volumes` path nothing else covers, and returns the
//! container's [`MountPoint`]s, which the daemon persists with the record. At start,
//! [`Daemon::container_mounts`] prepares them (bind sources of `Binds` are created, volumes
//! with driver options are mounted, empty volumes are populated from the image) and turns
//! them into runtime mounts; [`Daemon::release_mounts`] undoes the volume mounts when the
//! container stops.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use berth_runtime::spec::{MountKind, MountSpec};
use berth_volume::spec::{self as vspec, BindSpec};
use berth_volume::{copyup, CreateOptions};
use bollard_stubs::models::{ContainerConfig, HostConfig, Mount, MountType};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::daemon::Daemon;
use crate::error::{Error, Result};
use crate::store::ContainerRecord;

/// One resolved mount of a container, persisted with it (dockerd's `MountPoint`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MountPoint {
    /// `bind`, `volume` or `tmpfs`.
    pub typ: String,
    /// Volume name (volumes only).
    #[serde(default)]
    pub name: String,
    /// Host path of a bind; a volume's `_data`.
    #[serde(default)]
    pub source: String,
    /// Path in the container.
    pub destination: String,
    /// Mode string as given to `-v` (`ro,Z`), or `z` for volumes.
    #[serde(default)]
    pub mode: String,
    /// Mounted read-write.
    pub rw: bool,
    /// Bind propagation (`rprivate` by default for binds, empty otherwise).
    #[serde(default)]
    pub propagation: String,
    /// Populate an empty volume from the image at start.
    #[serde(default)]
    pub copy_data: bool,
    /// Path inside the volume to mount instead of its root.
    #[serde(default)]
    pub subpath: String,
    /// A missing bind source is created (legacy `Binds`) rather than an error.
    #[serde(default)]
    pub create_source: bool,
    /// Bind without `MS_REC`.
    #[serde(default)]
    pub non_recursive: bool,
    /// tmpfs mount options (`size=...`, `mode=...`).
    #[serde(default)]
    pub tmpfs_options: Vec<String>,
    /// An anonymous volume created for this container (`rm -v` removes it).
    #[serde(default)]
    pub anonymous: bool,
}

impl MountPoint {
    /// True when this mounts volume `name`.
    pub fn is_volume(&self, name: &str) -> bool {
        self.typ == "volume" && self.name == name
    }

    /// The mount as inspect's `Mounts` array shows it.
    pub fn to_json(&self) -> Value {
        let mut v = json!({
            "Type": self.typ,
            "Source": self.source,
            "Destination": self.destination,
            "Mode": self.mode,
            "RW": self.rw,
            "Propagation": self.propagation,
        });
        if self.typ == "volume" {
            v["Name"] = json!(self.name);
            v["Driver"] = json!("local");
        }
        v
    }
}

/// `/a/b/` → `/a/b`, as Go's `filepath.Clean` leaves destinations.
fn clean(path: &str) -> String {
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() {
        "/".into()
    } else {
        trimmed.to_string()
    }
}

/// What a `Binds` entry or a `Mount` asks for, before any volume exists.
struct Planned {
    mount: Mount,
    mode: Option<String>,
}

impl Daemon {
    /// Validates a new container's mount specifications and creates the volumes they need;
    /// returns its mount points in the order they are mounted. On error nothing is left
    /// behind but named volumes, as with dockerd.
    pub fn create_mount_points(
        &self,
        config: &ContainerConfig,
        hc: &HostConfig,
    ) -> Result<Vec<MountPoint>> {
        let mut planned: Vec<Planned> = Vec::new();
        let mut seen: HashSet<String> = HashSet::new();
        let mut claim = |dst: &str| -> Result<()> {
            if seen.insert(clean(dst)) {
                Ok(())
            } else {
                Err(Error::InvalidParameter(format!(
                    "Duplicate mount point: {}",
                    clean(dst)
                )))
            }
        };
        for raw in hc.binds.iter().flatten() {
            let BindSpec { mount, mode } = vspec::parse_bind(raw)?;
            claim(mount.target.as_deref().unwrap_or(""))?;
            planned.push(Planned {
                mount,
                mode: Some(mode),
            });
        }
        for m in hc.mounts.iter().flatten() {
            vspec::validate_mount(m)?;
            vspec::check_bind_source(m)?;
            claim(m.target.as_deref().unwrap_or(""))?;
            planned.push(Planned {
                mount: m.clone(),
                mode: None,
            });
        }
        // `--volumes-from`: the other containers' mount points, for paths not taken above.
        let mut from_others: Vec<MountPoint> = Vec::new();
        for spec in hc.volumes_from.iter().flatten() {
            let (name, mode) = match spec.rsplit_once(':') {
                Some((n, m)) if matches!(m, "ro" | "rw") => (n, Some(m)),
                _ => (spec.as_str(), None),
            };
            let other = self.containers.get(name)?;
            for mut p in self.volumes.mount_points(&other.id) {
                if seen.contains(&p.destination)
                    || from_others.iter().any(|q| q.destination == p.destination)
                {
                    continue;
                }
                if let Some(m) = mode {
                    p.rw = m == "rw";
                }
                // The other container's anonymous volumes stay its own.
                p.anonymous = false;
                from_others.push(p);
            }
        }
        // Everything is valid; now volumes may be created.
        let mut points = Vec::new();
        let result = (|| -> Result<()> {
            for p in planned {
                points.push(self.mount_point(p, hc)?);
            }
            points.extend(from_others);
            let tmpfs = hc.tmpfs.clone().unwrap_or_default();
            let mut image_paths: Vec<String> =
                config.volumes.iter().flatten().map(|k| clean(k)).collect();
            image_paths.sort();
            for dst in image_paths {
                if points.iter().any(|p| p.destination == dst) || tmpfs.contains_key(&dst) {
                    continue;
                }
                let v = self.volumes.store.create(CreateOptions::default())?;
                self.volume_event("create", &v.name, &[]);
                points.push(MountPoint {
                    typ: "volume".into(),
                    name: v.name,
                    source: v.mountpoint.display().to_string(),
                    destination: dst,
                    mode: String::new(),
                    rw: true,
                    propagation: String::new(),
                    copy_data: true,
                    subpath: String::new(),
                    create_source: false,
                    non_recursive: false,
                    tmpfs_options: Vec::new(),
                    anonymous: true,
                });
            }
            Ok(())
        })();
        match result {
            Ok(()) => Ok(points),
            Err(err) => {
                self.discard_mount_points(&points);
                Err(err)
            }
        }
    }

    /// One planned mount as a mount point, creating its volume if needed.
    fn mount_point(&self, p: Planned, hc: &HostConfig) -> Result<MountPoint> {
        let m = p.mount;
        let destination = clean(m.target.as_deref().unwrap_or(""));
        let rw = !m.read_only.unwrap_or(false);
        let bind = m.bind_options.clone().unwrap_or_default();
        let mut point = MountPoint {
            typ: m.typ.unwrap_or(MountType::VOLUME).to_string(),
            name: String::new(),
            source: String::new(),
            destination,
            mode: p.mode.clone().unwrap_or_default(),
            rw,
            propagation: String::new(),
            copy_data: false,
            subpath: String::new(),
            create_source: bind.create_mountpoint.unwrap_or(false),
            non_recursive: bind.non_recursive.unwrap_or(false),
            tmpfs_options: Vec::new(),
            anonymous: false,
        };
        match m.typ {
            Some(MountType::BIND) => {
                point.source = clean(m.source.as_deref().unwrap_or(""));
                point.propagation = vspec::propagation(&m);
            }
            Some(MountType::TMPFS) => {
                point.tmpfs_options = vspec::tmpfs_options(m.tmpfs_options.as_ref())?;
            }
            _ => {
                let vo = m.volume_options.clone().unwrap_or_default();
                let driver_config = vo.driver_config.clone().unwrap_or_default();
                let name = m.source.clone().filter(|s| !s.is_empty());
                let existed = name
                    .as_deref()
                    .is_some_and(|n| self.volumes.store.get(n).is_ok());
                let v = self.volumes.store.create(CreateOptions {
                    name: name.clone(),
                    driver: driver_config
                        .name
                        .or_else(|| hc.volume_driver.clone())
                        .filter(|d| !d.is_empty()),
                    driver_opts: driver_config
                        .options
                        .unwrap_or_default()
                        .into_iter()
                        .collect(),
                    labels: vo.labels.map(|l| l.into_iter().collect()),
                })?;
                if !existed {
                    self.volume_event("create", &v.name, &[]);
                }
                point.anonymous = name.is_none();
                point.name = v.name;
                point.source = v.mountpoint.display().to_string();
                point.copy_data = !vo.no_copy.unwrap_or(false);
                point.subpath = vo.subpath.unwrap_or_default();
                if point.mode.is_empty() {
                    point.mode = "z".into();
                }
            }
        }
        Ok(point)
    }

    /// Removes the anonymous volumes of mount points whose container was never created.
    pub fn discard_mount_points(&self, points: &[MountPoint]) {
        for p in points.iter().filter(|p| p.anonymous) {
            if self.volumes.store.remove(&p.name, true, &[]).is_ok() {
                self.volume_event("destroy", &p.name, &[]);
            }
        }
    }

    /// The runtime mounts of a container about to start, in mount order (parents first):
    /// its mount points, prepared, and its `HostConfig.Tmpfs` entries. Volumes mounted here
    /// are released again if a later one fails.
    pub fn container_mounts(&self, r: &ContainerRecord, rootfs: &Path) -> Result<Vec<MountSpec>> {
        let mut specs = Vec::new();
        let mut points = self.ensure_mount_points(r)?;
        points.sort_by_key(|p| Path::new(&p.destination).components().count());
        for p in &points {
            match self.prepare_mount(r, p, rootfs) {
                Ok(spec) => specs.push(spec),
                Err(err) => {
                    self.release_mounts(&r.id);
                    return Err(err);
                }
            }
        }
        for (target, options) in r.host_config.tmpfs.iter().flatten() {
            specs.push(MountSpec {
                kind: MountKind::Tmpfs,
                source: PathBuf::new(),
                target: target.into(),
                read_only: false,
                options: options
                    .split(',')
                    .filter(|o| !o.is_empty())
                    .map(str::to_string)
                    .collect(),
            });
        }
        specs.sort_by_key(|s| s.target.components().count());
        Ok(specs)
    }

    /// The container's mount points; a container recorded before mount points were (no
    /// `mounts.json`) gets them resolved from its configuration now, once.
    fn ensure_mount_points(&self, r: &ContainerRecord) -> Result<Vec<MountPoint>> {
        let dir = self.containers.dir(&r.id);
        if dir.join(crate::volumes::MOUNTS_FILE).exists() {
            return Ok(self.volumes.mount_points(&r.id));
        }
        let points = self.create_mount_points(&r.config, &r.host_config)?;
        self.volumes.set_mount_points(&r.id, &dir, points.clone())?;
        Ok(points)
    }

    fn prepare_mount(
        &self,
        r: &ContainerRecord,
        p: &MountPoint,
        rootfs: &Path,
    ) -> Result<MountSpec> {
        let target = PathBuf::from(&p.destination);
        match p.typ.as_str() {
            "bind" => {
                let source = PathBuf::from(&p.source);
                if !source.exists() {
                    if !p.create_source {
                        return Err(Error::InvalidParameter(format!(
                            "invalid mount config for type \"bind\": bind source path does not exist: {}",
                            p.source
                        )));
                    }
                    std::fs::create_dir_all(&source).map_err(|e| {
                        Error::io(
                            format!("error while creating mount source path '{}'", p.source),
                            e,
                        )
                    })?;
                }
                let mut options = vec![p.propagation.clone()];
                if p.non_recursive {
                    options.push("bind".into());
                }
                Ok(MountSpec {
                    kind: MountKind::Bind,
                    source,
                    target,
                    read_only: !p.rw,
                    options,
                })
            }
            "tmpfs" => Ok(MountSpec {
                kind: MountKind::Tmpfs,
                source: PathBuf::new(),
                target,
                read_only: !p.rw,
                options: p.tmpfs_options.clone(),
            }),
            _ => {
                let path = self.volumes.store.mount(&p.name, &r.id)?;
                self.volume_event(
                    "mount",
                    &p.name,
                    &[
                        ("container", r.id.clone()),
                        ("destination", p.destination.clone()),
                        ("propagation", p.propagation.clone()),
                        ("read/write", p.rw.to_string()),
                    ],
                );
                if p.copy_data && p.subpath.is_empty() && copyup::is_empty_dir(&path) {
                    let src = copyup::resolve_in_root(rootfs, &target)?;
                    self.volumes.store.populate(&path, &src)?;
                }
                let source = if p.subpath.is_empty() {
                    path
                } else {
                    let sub = copyup::resolve_in_root(&path, Path::new(&p.subpath))?;
                    if !sub.exists() {
                        return Err(Error::InvalidParameter(format!(
                            "cannot access path {}: no such file or directory",
                            sub.display()
                        )));
                    }
                    sub
                };
                Ok(MountSpec {
                    kind: MountKind::Bind,
                    source,
                    target,
                    read_only: !p.rw,
                    options: Vec::new(),
                })
            }
        }
    }

    /// A container stopped: volumes mounted for it are released (the last user of a volume
    /// with driver options unmounts it).
    pub fn release_mounts(&self, id: &str) {
        for p in self
            .volumes
            .mount_points(id)
            .iter()
            .filter(|p| p.typ == "volume")
        {
            match self.volumes.store.unmount(&p.name, id) {
                Ok(()) => self.volume_event("unmount", &p.name, &[("container", id.to_string())]),
                Err(err) => tracing::warn!(%id, volume = %p.name, %err, "cannot unmount volume"),
            }
        }
    }

    /// A container was removed: forgets its mount points and, when `remove_anonymous`
    /// (`rm -v`, `--rm`), removes its anonymous volumes that no other container uses.
    pub fn drop_mounts(&self, id: &str, remove_anonymous: bool) {
        self.release_mounts(id);
        let points = self.volumes.forget(id);
        if !remove_anonymous {
            return;
        }
        let anonymous: Vec<String> = points
            .into_iter()
            .filter(|p| p.anonymous)
            .map(|p| p.name)
            .collect();
        self.remove_unused_volumes(&anonymous);
    }

    /// After a daemon restart: volumes still mounted for containers that no longer run are
    /// unmounted.
    pub fn reconcile_volumes(&self) {
        self.volumes
            .store
            .reconcile(|id| self.containers.get(id).is_ok_and(|r| r.state.running));
    }

    /// Anonymous volumes of container `key` (for `rm -v`, read before it is removed).
    pub fn anonymous_volumes(&self, key: &str) -> Vec<String> {
        let Ok(r) = self.containers.get(key) else {
            return Vec::new();
        };
        self.volumes
            .mount_points(&r.id)
            .into_iter()
            .filter(|p| p.anonymous)
            .map(|p| p.name)
            .collect()
    }

    /// Removes the named volumes that no container refers to any more; those still in use
    /// are kept, as `rm -v` does.
    pub fn remove_unused_volumes(&self, names: &[String]) {
        for name in names {
            let users = self.volume_users(name);
            match self.volumes.store.remove(name, false, &users) {
                Ok(()) => self.volume_event("destroy", name, &[]),
                Err(err) => tracing::info!(volume = %name, %err, "volume kept"),
            }
        }
    }

    /// IDs of the existing containers that refer to volume `name`.
    pub fn volume_users(&self, name: &str) -> Vec<String> {
        self.volumes
            .users(name)
            .into_iter()
            .filter(|id| self.containers.get(id).is_ok())
            .collect()
    }

    /// Inspect's `Mounts` array of container `id`.
    pub fn mounts_json(&self, id: &str) -> Value {
        Value::Array(
            self.volumes
                .mount_points(id)
                .iter()
                .map(MountPoint::to_json)
                .collect(),
        )
    }
}
