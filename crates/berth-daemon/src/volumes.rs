//! Volumes on the daemon's side: the `berth-volume` store plus what only the daemon knows,
//! which containers refer to which volume. Each container's resolved mount points are kept
//! in `<data-root>/containers/<id>/mounts.json` (written at create, crash-safe, gone with the
//! container) and indexed in memory here, which is what makes a volume "in use" for `volume
//! rm`, `volume prune` and the `dangling` filter, as with dockerd: any container, running or
//! not, that refers to a volume keeps it.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Mutex;

use berth_volume::{CreateOptions, ListFilters, Volume, VolumeStore};
use serde_json::{json, Value};

use crate::daemon::Daemon;
use crate::error::{Error, Result};
use crate::events::{lock, Event};
use crate::filters::Filters;
use crate::mounts::MountPoint;

/// The file, in a container's record directory, holding its mount points.
pub const MOUNTS_FILE: &str = "mounts.json";

/// The daemon's volumes and the containers' mount points.
pub struct Volumes {
    /// The local driver's store (`<data-root>/volumes`).
    pub store: VolumeStore,
    /// Mount points by container ID.
    mounts: Mutex<HashMap<String, Vec<MountPoint>>>,
}

impl From<berth_volume::Error> for Error {
    fn from(e: berth_volume::Error) -> Self {
        use berth_volume::ErrorKind as K;
        match e.kind() {
            K::NotFound => Error::NotFound(e.to_string()),
            K::Conflict => Error::Conflict(e.to_string()),
            K::InvalidInput => Error::InvalidParameter(e.to_string()),
            K::Internal => Error::Internal(e.to_string()),
        }
    }
}

impl Volumes {
    /// Opens the volume store and reads the mount points of every container under
    /// `containers_root`.
    pub fn open(data_root: &Path, containers_root: &Path) -> Result<Self> {
        let store = VolumeStore::open(data_root.join("volumes"))?;
        let mut mounts = HashMap::new();
        if let Ok(entries) = std::fs::read_dir(containers_root) {
            for entry in entries.flatten() {
                let file = entry.path().join(MOUNTS_FILE);
                let Ok(bytes) = std::fs::read(&file) else {
                    continue;
                };
                match serde_json::from_slice::<Vec<MountPoint>>(&bytes) {
                    Ok(list) => {
                        mounts.insert(entry.file_name().to_string_lossy().into_owned(), list);
                    }
                    Err(err) => {
                        tracing::warn!(path = %file.display(), %err, "cannot read mount points")
                    }
                }
            }
        }
        Ok(Volumes {
            store,
            mounts: Mutex::new(mounts),
        })
    }

    /// The mount points of container `id` (empty for a container without any).
    pub fn mount_points(&self, id: &str) -> Vec<MountPoint> {
        lock(&self.mounts).get(id).cloned().unwrap_or_default()
    }

    /// Records container `id`'s mount points in `dir` (its record directory) and in memory.
    pub fn set_mount_points(&self, id: &str, dir: &Path, points: Vec<MountPoint>) -> Result<()> {
        if points.is_empty() {
            // No file means no mount points: most containers have none, and their creation
            // is spared a durable write.
            let file = dir.join(MOUNTS_FILE);
            match std::fs::remove_file(&file) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(format!("remove {}", file.display()), e)),
            }
        } else {
            let bytes = serde_json::to_vec(&points)
                .map_err(|e| Error::json(format!("serialise mount points of {id}"), e))?;
            crate::store::write_atomic(dir, MOUNTS_FILE, &bytes)?;
        }
        lock(&self.mounts).insert(id.to_string(), points);
        Ok(())
    }

    /// Forgets container `id`'s mount points (its directory is being removed) and returns
    /// them.
    pub fn forget(&self, id: &str) -> Vec<MountPoint> {
        lock(&self.mounts).remove(id).unwrap_or_default()
    }

    /// IDs of the containers referring to volume `name`.
    pub fn users(&self, name: &str) -> Vec<String> {
        let mut ids: Vec<String> = lock(&self.mounts)
            .iter()
            .filter(|(_, points)| points.iter().any(|p| p.is_volume(name)))
            .map(|(id, _)| id.clone())
            .collect();
        ids.sort();
        ids
    }

    /// Number of containers referring to each volume, counting those for which `exists`.
    pub fn ref_counts(&self, exists: impl Fn(&str) -> bool) -> HashMap<String, i64> {
        let mut counts: HashMap<String, i64> = HashMap::new();
        for (id, points) in lock(&self.mounts).iter() {
            if !exists(id) {
                continue;
            }
            let mut names: Vec<&str> = points
                .iter()
                .filter(|p| p.typ == "volume")
                .map(|p| p.name.as_str())
                .collect();
            names.sort_unstable();
            names.dedup();
            for n in names {
                *counts.entry(n.to_string()).or_default() += 1;
            }
        }
        counts
    }
}

/// A volume as the API shows it (`GET /volumes/{name}`).
pub fn volume_json(v: &Volume) -> Value {
    json!({
        "CreatedAt": v.created_at,
        "Driver": v.driver,
        "Labels": v.labels,
        "Mountpoint": v.mountpoint,
        "Name": v.name,
        "Options": v.options,
        "Scope": "local",
    })
}

fn parse_bool_filter(name: &str, v: &str) -> Result<bool> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "true" => Ok(true),
        "0" | "false" => Ok(false),
        _ => Err(Error::InvalidParameter(format!(
            "invalid filter '{name}={v}'"
        ))),
    }
}

impl Daemon {
    /// Publishes a volume event (`create`, `mount`, `unmount`, `destroy`).
    pub(crate) fn volume_event(&self, action: &str, name: &str, extra: &[(&str, String)]) {
        let mut attrs: BTreeMap<String, String> =
            [("driver".to_string(), "local".to_string())].into();
        for (k, v) in extra {
            attrs.insert((*k).to_string(), v.clone());
        }
        self.events
            .publish(Event::new("volume", action, name, attrs));
    }

    /// [`Volumes::ref_counts`] over the containers that exist.
    fn volume_ref_counts(&self) -> HashMap<String, i64> {
        self.volumes
            .ref_counts(|id| self.containers.get(id).is_ok())
    }

    /// `POST /volumes/create`.
    pub fn create_volume(&self, opts: CreateOptions) -> Result<Value> {
        let existed = opts
            .name
            .as_deref()
            .is_some_and(|n| self.volumes.store.get(n).is_ok());
        let v = self.volumes.store.create(opts)?;
        if !existed {
            self.volume_event("create", &v.name, &[]);
        }
        Ok(volume_json(&v))
    }

    /// `GET /volumes/{name}`.
    pub fn inspect_volume(&self, name: &str) -> Result<Value> {
        Ok(volume_json(&self.volumes.store.get(name)?))
    }

    /// `GET /volumes?filters=`: the volumes and (always empty) warnings.
    pub fn list_volumes(&self, filters: &Filters) -> Result<Value> {
        filters.validate(&["name", "label", "driver", "dangling"])?;
        let dangling = match filters.get("dangling") {
            [] => None,
            [v] => Some(parse_bool_filter("dangling", v)?),
            _ => {
                return Err(Error::InvalidParameter(
                    "invalid filter 'dangling': only one value is allowed".into(),
                ))
            }
        };
        let f = ListFilters {
            name: filters.get("name").to_vec(),
            label: filters.get("label").to_vec(),
            driver: filters.get("driver").to_vec(),
            dangling,
        };
        let counts = self.volume_ref_counts();
        let list: Vec<Value> = self
            .volumes
            .store
            .list(&f, |n| counts.contains_key(n))
            .iter()
            .map(volume_json)
            .collect();
        Ok(json!({"Volumes": list, "Warnings": []}))
    }

    /// `DELETE /volumes/{name}?force=`: refused while any container refers to it.
    pub fn remove_volume(&self, name: &str, force: bool) -> Result<()> {
        let exists = self.volumes.store.get(name).is_ok();
        self.volumes
            .store
            .remove(name, force, &self.volume_users(name))?;
        if exists {
            self.volume_event("destroy", name, &[]);
        }
        Ok(())
    }

    /// `POST /volumes/prune?filters=`: unused volumes, only anonymous ones unless
    /// `all=true` (API ≥ 1.42; older clients always prune every unused volume).
    pub fn prune_volumes(&self, filters: &Filters, all_by_default: bool) -> Result<Value> {
        filters.validate(&["label", "label!", "all"])?;
        let all = match filters.get("all") {
            [] => all_by_default,
            [v] => parse_bool_filter("all", v)?,
            _ => {
                return Err(Error::InvalidParameter(
                    "invalid filter 'all': only one value is allowed".into(),
                ))
            }
        };
        let counts = self.volume_ref_counts();
        let (removed, reclaimed) =
            self.volumes
                .store
                .prune(all, filters.get("label"), filters.get("label!"), |n| {
                    counts.contains_key(n)
                });
        for name in &removed {
            self.volume_event("destroy", name, &[]);
        }
        self.events.publish(Event::new(
            "volume",
            "prune",
            "",
            [("reclaimed".to_string(), reclaimed.to_string())].into(),
        ));
        Ok(json!({"VolumesDeleted": removed, "SpaceReclaimed": reclaimed}))
    }

    /// The `Volumes` section of `GET /system/df`, with each volume's size and users.
    pub fn volumes_disk_usage(&self) -> Vec<Value> {
        let counts = self.volume_ref_counts();
        self.volumes
            .store
            .list(&ListFilters::default(), |_| true)
            .iter()
            .map(|v| {
                let mut j = volume_json(v);
                j["UsageData"] = json!({
                    "Size": self.volumes.store.size(v),
                    "RefCount": counts.get(&v.name).copied().unwrap_or(0),
                });
                j
            })
            .collect()
    }
}
