//! The volume store of the `local` driver.
//!
//! Each volume is a directory `<root>/<name>/` holding `_data` (what containers see) and
//! `opts.json` (its metadata). `opts.json` is written last, through a temporary file, fsync
//! and rename, so a volume either exists completely or not at all after a crash; removal
//! renames the directory out of the way first for the same reason. Volumes whose options name
//! a filesystem also keep `users.json`, the containers that have it mounted, so that after a
//! daemon restart [`VolumeStore::reconcile`] can unmount what nobody uses any more.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use rand::RngCore;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::local;

/// The label dockerd puts on anonymous volumes (`-v /path`, image `VOLUME`s, and `POST
/// /volumes/create` without a name); `volume prune` removes only these unless `all=true`.
pub const ANONYMOUS_LABEL: &str = "com.docker.volume.anonymous";

/// The only driver Berth has.
pub const LOCAL_DRIVER: &str = "local";

const META_FILE: &str = "opts.json";
const USERS_FILE: &str = "users.json";
const DATA_DIR: &str = "_data";

/// A volume's metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Volume {
    /// Name (64 hex digits for anonymous volumes).
    pub name: String,
    /// Always `local`.
    pub driver: String,
    /// Creation time, RFC 3339 with the local offset as dockerd prints it.
    pub created_at: String,
    /// User labels; `None` when created without any (dockerd shows `null`).
    pub labels: Option<BTreeMap<String, String>>,
    /// Driver options; `None` when created without any.
    pub options: Option<BTreeMap<String, String>>,
    /// Where the content is on the host (`<root>/<name>/_data`); not stored.
    #[serde(skip)]
    pub mountpoint: PathBuf,
}

impl Volume {
    /// True for anonymous volumes (those carrying [`ANONYMOUS_LABEL`]).
    pub fn is_anonymous(&self) -> bool {
        self.labels
            .as_ref()
            .is_some_and(|l| l.contains_key(ANONYMOUS_LABEL))
    }

    /// True when the driver options name a filesystem mounted while the volume is in use.
    pub fn needs_mount(&self) -> bool {
        self.options.as_ref().is_some_and(local::needs_mount)
    }
}

/// What `create` is asked for (Docker's `VolumeCreateRequest`).
#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    /// Name; `None` or empty creates an anonymous volume with a random name.
    pub name: Option<String>,
    /// Driver; `None` or empty means `local`.
    pub driver: Option<String>,
    /// Driver options (`type`, `device`, `o`).
    pub driver_opts: BTreeMap<String, String>,
    /// Labels.
    pub labels: Option<BTreeMap<String, String>>,
}

/// `GET /volumes` filters, already decoded by the caller.
#[derive(Debug, Clone, Default)]
pub struct ListFilters {
    /// Substrings of the name (any matches).
    pub name: Vec<String>,
    /// `key` or `key=value` (all must match).
    pub label: Vec<String>,
    /// Driver names (any matches).
    pub driver: Vec<String>,
    /// `Some(true)`: only volumes no container uses; `Some(false)`: only used ones.
    pub dangling: Option<bool>,
}

/// The volumes of one daemon.
pub struct VolumeStore {
    root: PathBuf,
    state: Mutex<State>,
    /// Serialises copy-ups, so two containers starting on one new volume copy it once.
    populate: Mutex<()>,
}

#[derive(Default)]
struct State {
    volumes: BTreeMap<String, Volume>,
    /// Containers that have a mounting volume mounted, by volume name.
    users: BTreeMap<String, BTreeSet<String>>,
}

/// True for names the local driver accepts: `[a-zA-Z0-9][a-zA-Z0-9_.-]+`.
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && name.len() >= 2
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// A random 64-hex-digit name, as dockerd gives anonymous volumes.
pub fn random_name() -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

impl VolumeStore {
    /// Opens (creating if needed) the store rooted at `root` (`<data-root>/volumes`) and loads
    /// every complete volume; leftovers of interrupted creations and removals are deleted.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        fs::create_dir_all(&root).map_err(|e| Error::io("create", &root, e))?;
        // As dockerd's: others may traverse (into bind-mounted content) but not list names.
        fs::set_permissions(&root, std::os::unix::fs::PermissionsExt::from_mode(0o701))
            .map_err(|e| Error::io("chmod", &root, e))?;
        let mut state = State::default();
        let entries = fs::read_dir(&root).map_err(|e| Error::io("read", &root, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| Error::io("read", &root, e))?;
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            let dir = entry.path();
            if name.starts_with(".removing-") {
                remove_tree(&dir);
                continue;
            }
            let meta = dir.join(META_FILE);
            let bytes = match fs::read(&meta) {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    // Created up to `_data` but not `opts.json`: the creation never finished.
                    if !local::is_mountpoint(&dir.join(DATA_DIR)) {
                        tracing::warn!(volume = %name, "removing incompletely created volume");
                        remove_tree(&dir);
                    }
                    continue;
                }
                Err(e) => return Err(Error::io("read", &meta, e)),
            };
            let mut volume: Volume = serde_json::from_slice(&bytes).map_err(|e| Error::Json {
                context: "parse",
                path: meta.clone(),
                source: e,
            })?;
            volume.mountpoint = dir.join(DATA_DIR);
            if let Ok(bytes) = fs::read(dir.join(USERS_FILE)) {
                if let Ok(users) = serde_json::from_slice::<BTreeSet<String>>(&bytes) {
                    if !users.is_empty() {
                        state.users.insert(name.clone(), users);
                    }
                }
            }
            state.volumes.insert(name, volume);
        }
        Ok(VolumeStore {
            root,
            state: Mutex::new(state),
            populate: Mutex::new(()),
        })
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves consistent data: every change is applied to
        // the map only after its files are written.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Creates a volume, or returns the existing one of that name (as dockerd does, as long
    /// as the driver is the same).
    pub fn create(&self, opts: CreateOptions) -> Result<Volume> {
        let driver = opts
            .driver
            .filter(|d| !d.is_empty())
            .unwrap_or_else(|| LOCAL_DRIVER.into());
        let (name, labels) = match opts.name.filter(|n| !n.is_empty()) {
            Some(n) => (n, opts.labels),
            None => {
                let mut labels = opts.labels.unwrap_or_default();
                labels.insert(ANONYMOUS_LABEL.into(), String::new());
                (random_name(), Some(labels))
            }
        };
        if !valid_name(&name) {
            return Err(Error::InvalidName(name));
        }
        if driver != LOCAL_DRIVER {
            return Err(Error::UnknownDriver(driver));
        }
        let mut state = self.lock();
        if let Some(existing) = state.volumes.get(&name) {
            return Ok(existing.clone());
        }
        local::validate(&name, &opts.driver_opts)?;
        let dir = self.root.join(&name);
        let data = dir.join(DATA_DIR);
        fs::create_dir_all(&data).map_err(|e| Error::io("create", &data, e))?;
        let volume = Volume {
            name: name.clone(),
            driver,
            created_at: chrono::Local::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, false),
            labels,
            options: (!opts.driver_opts.is_empty()).then_some(opts.driver_opts),
            mountpoint: data,
        };
        let bytes = serde_json::to_vec(&volume).map_err(|e| Error::Json {
            context: "serialise",
            path: dir.join(META_FILE),
            source: e,
        })?;
        if let Err(err) = write_atomic(&dir, META_FILE, &bytes) {
            remove_tree(&dir);
            return Err(err);
        }
        state.volumes.insert(name, volume.clone());
        Ok(volume)
    }

    /// The volume called `name`.
    pub fn get(&self, name: &str) -> Result<Volume> {
        self.lock()
            .volumes
            .get(name)
            .cloned()
            .ok_or_else(|| Error::NoSuchVolume(name.to_string()))
    }

    /// Every volume passing the filters; `in_use` tells whether a container refers to it.
    pub fn list(&self, filters: &ListFilters, in_use: impl Fn(&str) -> bool) -> Vec<Volume> {
        let volumes: Vec<Volume> = self.lock().volumes.values().cloned().collect();
        volumes
            .into_iter()
            .filter(|v| {
                (filters.name.is_empty() || filters.name.iter().any(|n| v.name.contains(n)))
                    && (filters.driver.is_empty() || filters.driver.contains(&v.driver))
                    && filters.label.iter().all(|l| label_matches(v, l))
                    && filters.dangling.is_none_or(|d| d != in_use(&v.name))
            })
            .collect()
    }

    /// Removes a volume that no container uses (`users` lists those that do). With `force`
    /// a missing volume is not an error.
    pub fn remove(&self, name: &str, force: bool, users: &[String]) -> Result<()> {
        let mut state = self.lock();
        let Some(volume) = state.volumes.get(name).cloned() else {
            return if force {
                Ok(())
            } else {
                Err(Error::NoSuchVolume(name.to_string()))
            };
        };
        if !users.is_empty() {
            return Err(Error::InUse {
                name: name.to_string(),
                containers: users.to_vec(),
            });
        }
        local::unmount_volume(name, &volume.mountpoint)?;
        let dir = self.root.join(name);
        // Out of the way first: a crash in the middle of deleting leaves no half volume.
        let trash = self
            .root
            .join(format!(".removing-{name}-{}", &random_name()[..8]));
        fs::rename(&dir, &trash).map_err(|e| Error::io("rename", &dir, e))?;
        state.volumes.remove(name);
        state.users.remove(name);
        drop(state);
        remove_tree(&trash);
        Ok(())
    }

    /// Removes every unused volume that passes the label filters: only anonymous ones
    /// unless `all` (dockerd ≥ 23). Returns the removed names and the bytes reclaimed.
    pub fn prune(
        &self,
        all: bool,
        labels: &[String],
        not_labels: &[String],
        in_use: impl Fn(&str) -> bool,
    ) -> (Vec<String>, u64) {
        let candidates: Vec<Volume> = self.lock().volumes.values().cloned().collect();
        let mut removed = Vec::new();
        let mut reclaimed = 0;
        for v in candidates {
            if (!all && !v.is_anonymous())
                || in_use(&v.name)
                || !labels.iter().all(|l| label_matches(&v, l))
                || not_labels.iter().any(|l| label_matches(&v, l))
            {
                continue;
            }
            let size = self.size(&v);
            match self.remove(&v.name, false, &[]) {
                Ok(()) => {
                    reclaimed += size;
                    removed.push(v.name);
                }
                Err(err) => tracing::warn!(volume = %v.name, %err, "prune: cannot remove volume"),
            }
        }
        (removed, reclaimed)
    }

    /// Bytes used by a volume's content (directories walked without following links).
    pub fn size(&self, volume: &Volume) -> u64 {
        tree_size(&volume.mountpoint)
    }

    /// Makes the volume ready for container `user` and returns its host path: a volume with
    /// a filesystem in its options is mounted by its first user.
    pub fn mount(&self, name: &str, user: &str) -> Result<PathBuf> {
        let mut state = self.lock();
        let volume = state
            .volumes
            .get(name)
            .cloned()
            .ok_or_else(|| Error::NoSuchVolume(name.to_string()))?;
        if let Some(opts) = volume.options.as_ref().filter(|o| local::needs_mount(o)) {
            if !local::is_mountpoint(&volume.mountpoint) {
                local::mount_volume(name, opts, &volume.mountpoint)?;
            }
            let mut users = state.users.get(name).cloned().unwrap_or_default();
            users.insert(user.to_string());
            self.save_users(name, &users)?;
            state.users.insert(name.to_string(), users);
        }
        Ok(volume.mountpoint)
    }

    /// Copies the directory `src` (already resolved inside an image root) into the volume
    /// mounted at `path` if the volume is still empty ([`crate::copyup::copy_up`]).
    pub fn populate(&self, path: &Path, src: &Path) -> Result<()> {
        let _one_at_a_time = self.populate.lock().unwrap_or_else(|p| p.into_inner());
        crate::copyup::copy_up(src, path)
    }

    /// Container `user` stopped using the volume; its last user unmounts it.
    pub fn unmount(&self, name: &str, user: &str) -> Result<()> {
        let mut state = self.lock();
        let Some(volume) = state.volumes.get(name).cloned() else {
            return Ok(());
        };
        let Some(mut users) = state.users.get(name).cloned() else {
            return Ok(());
        };
        users.remove(user);
        if users.is_empty() {
            local::unmount_volume(name, &volume.mountpoint)?;
            state.users.remove(name);
        } else {
            state.users.insert(name.to_string(), users.clone());
        }
        self.save_users(name, &users)
    }

    /// After a daemon restart: forgets users for which `alive` is false and unmounts volumes
    /// left without users.
    pub fn reconcile(&self, alive: impl Fn(&str) -> bool) {
        let names: Vec<(String, BTreeSet<String>)> = self
            .lock()
            .users
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (name, users) in names {
            for user in users.iter().filter(|u| !alive(u)) {
                if let Err(err) = self.unmount(&name, user) {
                    tracing::warn!(volume = %name, %err, "cannot unmount unused volume");
                }
            }
        }
    }

    fn save_users(&self, name: &str, users: &BTreeSet<String>) -> Result<()> {
        let dir = self.root.join(name);
        let bytes = serde_json::to_vec(users).map_err(|e| Error::Json {
            context: "serialise",
            path: dir.join(USERS_FILE),
            source: e,
        })?;
        write_atomic(&dir, USERS_FILE, &bytes)
    }
}

fn label_matches(v: &Volume, filter: &str) -> bool {
    let labels = v.labels.as_ref();
    match filter.split_once('=') {
        Some((k, want)) => labels.and_then(|l| l.get(k)).is_some_and(|x| x == want),
        None => labels.is_some_and(|l| l.contains_key(filter)),
    }
}

/// Replaces `dir/name` with `bytes` so that a crash leaves the old or the new content.
fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let target = dir.join(name);
    let mut f = fs::File::create(&tmp).map_err(|e| Error::io("create", &tmp, e))?;
    f.write_all(bytes)
        .map_err(|e| Error::io("write", &tmp, e))?;
    f.sync_all().map_err(|e| Error::io("fsync", &tmp, e))?;
    drop(f);
    fs::rename(&tmp, &target).map_err(|e| Error::io("rename into", &target, e))?;
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("fsync", dir, e))
}

/// Deletes a directory tree, unmounting its `_data` first if a filesystem is still there.
fn remove_tree(dir: &Path) {
    let data = dir.join(DATA_DIR);
    if local::is_mountpoint(&data) {
        let _ = nix::mount::umount2(&data, nix::mount::MntFlags::MNT_DETACH);
    }
    if let Err(err) = fs::remove_dir_all(dir) {
        if err.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(path = %dir.display(), %err, "cannot remove volume directory");
        }
    }
}

/// Bytes in regular files under `path`, without following symlinks or crossing into
/// directories it cannot read.
fn tree_size(path: &Path) -> u64 {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return 0;
    };
    if !meta.is_dir() {
        return if meta.is_file() { meta.len() } else { 0 };
    }
    fs::read_dir(path)
        .map(|entries| entries.flatten().map(|e| tree_size(&e.path())).sum::<u64>())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["ab", "a.b-c_d", "0x", &random_name()] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", "a", "-ab", ".ab", "a/b", "a b", "/abs"] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn create_list_remove_prune_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let store = VolumeStore::open(dir.path()).unwrap();
        let named = store
            .create(CreateOptions {
                name: Some("data".into()),
                labels: Some([("tier".to_string(), "db".to_string())].into()),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(named.driver, "local");
        assert!(named.mountpoint.ends_with("data/_data"));
        assert!(named.mountpoint.is_dir());
        // Creating again returns the same volume.
        assert_eq!(
            store
                .create(CreateOptions {
                    name: Some("data".into()),
                    ..Default::default()
                })
                .unwrap(),
            named
        );
        let anon = store.create(CreateOptions::default()).unwrap();
        assert_eq!(anon.name.len(), 64);
        assert!(anon.is_anonymous());
        assert!(matches!(
            store.create(CreateOptions {
                name: Some("x y".into()),
                ..Default::default()
            }),
            Err(Error::InvalidName(_))
        ));
        let err = store
            .create(CreateOptions {
                name: Some("p".repeat(3)),
                driver: Some("nope".into()),
                ..Default::default()
            })
            .unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::NotFound);

        let all = ListFilters::default();
        assert_eq!(store.list(&all, |_| false).len(), 2);
        let by_label = ListFilters {
            label: vec!["tier=db".into()],
            ..Default::default()
        };
        assert_eq!(store.list(&by_label, |_| false), vec![named.clone()]);
        let dangling = ListFilters {
            dangling: Some(true),
            ..Default::default()
        };
        assert_eq!(store.list(&dangling, |n| n == "data"), vec![anon.clone()]);
        let by_name = ListFilters {
            name: vec!["at".into()],
            ..Default::default()
        };
        assert_eq!(store.list(&by_name, |_| false).len(), 1);

        let err = store.remove("data", false, &["c1".into()]).unwrap_err();
        assert_eq!(err.to_string(), "remove data: volume is in use - [c1]");
        assert!(store.remove("missing", true, &[]).is_ok());
        assert_eq!(
            store.remove("missing", false, &[]).unwrap_err().to_string(),
            "get missing: no such volume"
        );

        std::fs::write(anon.mountpoint.join("f"), b"12345").unwrap();
        let reopened = VolumeStore::open(dir.path()).unwrap();
        assert_eq!(reopened.get("data").unwrap(), named);
        let (removed, bytes) = reopened.prune(false, &[], &[], |_| false);
        assert_eq!(removed, vec![anon.name.clone()]);
        assert_eq!(bytes, 5);
        let (removed, _) = reopened.prune(true, &[], &["tier".into()], |_| false);
        assert!(removed.is_empty());
        let (removed, _) = reopened.prune(true, &[], &[], |_| false);
        assert_eq!(removed, vec!["data".to_string()]);
        assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none());
    }

    #[test]
    fn half_created_volume_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("half/_data")).unwrap();
        let store = VolumeStore::open(dir.path()).unwrap();
        assert!(store.get("half").is_err());
        assert!(!dir.path().join("half").exists());
    }

    #[test]
    fn tmpfs_volume_mounts_for_its_users() {
        let dir = tempfile::tempdir().unwrap();
        let store = VolumeStore::open(dir.path()).unwrap();
        let v = store
            .create(CreateOptions {
                name: Some("scratch".into()),
                driver_opts: [
                    ("type".to_string(), "tmpfs".to_string()),
                    ("device".to_string(), "tmpfs".to_string()),
                    ("o".to_string(), "size=1m".to_string()),
                ]
                .into(),
                ..Default::default()
            })
            .unwrap();
        // Unmounts whatever the test left behind, even when an assertion fails.
        struct Guard(PathBuf);
        impl Drop for Guard {
            fn drop(&mut self) {
                let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
            }
        }
        let _guard = Guard(v.mountpoint.clone());
        assert!(!local::is_mountpoint(&v.mountpoint));
        store.mount("scratch", "c1").unwrap();
        store.mount("scratch", "c2").unwrap();
        assert!(local::is_mountpoint(&v.mountpoint));
        store.unmount("scratch", "c1").unwrap();
        assert!(local::is_mountpoint(&v.mountpoint));
        // A restart remembers c2; c2 is gone by then, so reconcile unmounts.
        let reopened = VolumeStore::open(dir.path()).unwrap();
        reopened.reconcile(|id| id == "c1");
        assert!(!local::is_mountpoint(&v.mountpoint));
        reopened.remove("scratch", false, &[]).unwrap();
    }
}
