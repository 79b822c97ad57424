//! The daemon's container records: one crash-safe `config.v2.json` per container under
//! `<data-root>/containers/<id>/`, an in-memory index by ID and by name, and lookups by full
//! ID, name (with or without the leading `/`) or unique ID prefix.
//!
//! A record is written to a temporary file in the same directory, fsynced, renamed into place
//! and the directory fsynced, so a crash leaves either the old record or the new one.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use bollard_stubs::models::{ContainerConfig, HostConfig, NetworkingConfig};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::events::lock;
use crate::names;

/// The record file inside a container's directory.
pub const RECORD_FILE: &str = "config.v2.json";

/// A container's lifecycle status, as Docker names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Created, never started.
    #[default]
    Created,
    /// Its process is running.
    Running,
    /// Frozen.
    Paused,
    /// Being restarted by its restart policy.
    Restarting,
    /// Being removed.
    Removing,
    /// Its process exited.
    Exited,
    /// Failed to be removed.
    Dead,
}

impl Status {
    /// The lowercase name used on the wire and in filters.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Restarting => "restarting",
            Status::Removing => "removing",
            Status::Exited => "exited",
            Status::Dead => "dead",
        }
    }
}

/// A container's state, persisted with its record.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct State {
    /// Lifecycle status.
    pub status: Status,
    /// The process runs (also true while paused).
    pub running: bool,
    /// The process is frozen.
    pub paused: bool,
    /// The restart policy is restarting it.
    pub restarting: bool,
    /// The last run ended by the OOM killer.
    #[serde(rename = "OOMKilled")]
    pub oom_killed: bool,
    /// Removal failed.
    pub dead: bool,
    /// Host PID of the container's init process while running, else 0.
    pub pid: i64,
    /// Exit code of the last run.
    pub exit_code: i64,
    /// Why the last start failed, if it did.
    pub error: String,
    /// RFC 3339 time of the last start, or Docker's zero time.
    pub started_at: String,
    /// RFC 3339 time of the last exit, or Docker's zero time.
    pub finished_at: String,
    /// Health check state, for containers with a health check that have run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<crate::health::Health>,
}

impl Default for State {
    fn default() -> Self {
        State {
            status: Status::Created,
            running: false,
            paused: false,
            restarting: false,
            oom_killed: false,
            dead: false,
            pid: 0,
            exit_code: 0,
            error: String::new(),
            started_at: crate::time::ZERO.into(),
            finished_at: crate::time::ZERO.into(),
            health: None,
        }
    }
}

impl State {
    /// Marks the container as exited with `code` now.
    pub fn set_exited(&mut self, code: i64, error: &str) {
        self.status = Status::Exited;
        self.running = false;
        self.paused = false;
        self.restarting = false;
        self.pid = 0;
        self.exit_code = code;
        self.error = error.to_string();
        self.finished_at = crate::time::now_rfc3339();
    }
}

/// A container's persistent record (Docker's `config.v2.json` plus its host config).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerRecord {
    /// 64-hex-digit ID.
    #[serde(rename = "ID")]
    pub id: String,
    /// Creation time, RFC 3339 with nanoseconds.
    pub created: String,
    /// The entrypoint's executable.
    pub path: String,
    /// The remaining arguments.
    pub args: Vec<String>,
    /// The container config (image defaults merged with the create request).
    pub config: ContainerConfig,
    /// The host config from the create request.
    pub host_config: HostConfig,
    /// Networking config from the create request.
    #[serde(default)]
    pub networking_config: Option<NetworkingConfig>,
    /// Runtime state.
    pub state: State,
    /// Image ID (`sha256:...`).
    pub image: String,
    /// Name with its leading `/`.
    pub name: String,
    /// Storage driver name.
    pub driver: String,
    /// Path of the json-file log.
    pub log_path: String,
    /// How often the restart policy restarted it.
    pub restart_count: i64,
    /// Stopped by a user (`stop`/`kill`): the restart policy leaves it alone until it is
    /// started again.
    #[serde(default)]
    pub has_been_manually_stopped: bool,
}

struct Index {
    by_id: BTreeMap<String, ContainerRecord>,
    /// Name without the leading `/` → ID.
    names: HashMap<String, String>,
}

/// The daemon's container records.
pub struct ContainerStore {
    root: PathBuf,
    index: Mutex<Index>,
    remover: std::sync::OnceLock<Mutex<std::sync::mpsc::Sender<PathBuf>>>,
}

impl ContainerStore {
    /// Opens (creating) `<data-root>/containers` and loads every readable record; records that
    /// cannot be read are skipped with a warning rather than keeping the daemon down.
    pub fn open(root: &Path) -> Result<Self> {
        fs::create_dir_all(root).map_err(|e| Error::io(format!("create {}", root.display()), e))?;
        let mut index = Index {
            by_id: BTreeMap::new(),
            names: HashMap::new(),
        };
        let entries =
            fs::read_dir(root).map_err(|e| Error::io(format!("read {}", root.display()), e))?;
        for entry in entries.flatten() {
            if entry
                .file_name()
                .to_string_lossy()
                .starts_with(REMOVED_PREFIX)
            {
                // A removal whose background deletion did not finish.
                remove_tree(&entry.path());
                continue;
            }
            let path = entry.path().join(RECORD_FILE);
            let bytes = match fs::read(&path) {
                Ok(b) => Some(b),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => {
                    let err = Error::io(format!("read {}", path.display()), e);
                    tracing::warn!(%err, "skipping unreadable container record");
                    continue;
                }
            };
            let torn = bytes.as_deref().is_none_or(|b| b.iter().all(|&c| c == 0));
            if torn {
                // A record that never reached the disk: a creation cut short, or an unflushed
                // (`--rm`) record after a power loss. Nothing can be known of its container.
                if names::is_full_id(&entry.file_name().to_string_lossy()) {
                    tracing::warn!(path = %path.display(), "removing a container directory whose record is missing or empty");
                    remove_tree(&entry.path());
                }
                continue;
            }
            let record: ContainerRecord =
                match serde_json::from_slice(bytes.as_deref().unwrap_or_default())
                    .map_err(|e| Error::json(format!("parse {}", path.display()), e))
                {
                    Ok(r) => r,
                    Err(err) => {
                        tracing::warn!(%err, "skipping unreadable container record");
                        continue;
                    }
                };
            if entry.file_name().to_str() != Some(record.id.as_str()) {
                tracing::warn!(path = %path.display(), "skipping record whose ID does not match its directory");
                continue;
            }
            index
                .names
                .insert(bare(&record.name).to_string(), record.id.clone());
            index.by_id.insert(record.id.clone(), record);
        }
        Ok(ContainerStore {
            root: root.to_path_buf(),
            index: Mutex::new(index),
            remover: std::sync::OnceLock::new(),
        })
    }

    /// The directory holding a container's record and logs.
    pub fn dir(&self, id: &str) -> PathBuf {
        self.root.join(id)
    }

    /// Resolves a full ID, a name (with or without `/`), or a unique ID prefix to a full ID.
    pub fn resolve(&self, key: &str) -> Result<String> {
        let index = lock(&self.index);
        resolve_in(&index, key)
    }

    /// A copy of the record `key` resolves to.
    pub fn get(&self, key: &str) -> Result<ContainerRecord> {
        let index = lock(&self.index);
        let id = resolve_in(&index, key)?;
        index
            .by_id
            .get(&id)
            .cloned()
            .ok_or(Error::NoSuchContainer(key.to_string()))
    }

    /// Whether a record with exactly this full ID exists (no name or prefix lookup).
    pub fn contains_id(&self, id: &str) -> bool {
        lock(&self.index).by_id.contains_key(id)
    }

    /// Copies of all records.
    pub fn list(&self) -> Vec<ContainerRecord> {
        lock(&self.index).by_id.values().cloned().collect()
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        lock(&self.index).by_id.len()
    }

    /// Whether there are no records.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Picks a random name not in use.
    pub fn unused_name(&self) -> String {
        let index = lock(&self.index);
        (0u32..)
            .map(names::random_name)
            .find(|n| !index.names.contains_key(n))
            .unwrap_or_else(|| names::random_id()[..12].to_string())
    }

    /// Persists a new record; fails with Docker's conflict error when its name is taken.
    pub fn create(&self, record: ContainerRecord) -> Result<()> {
        let mut index = lock(&self.index);
        let name = bare(&record.name).to_string();
        if let Some(owner) = index.names.get(&name) {
            return Err(name_conflict(&name, owner));
        }
        let dir = self.dir(&record.id);
        fs::create_dir_all(&dir).map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
        write_record(&dir, &record, Durability::Durable)?;
        index.names.insert(name, record.id.clone());
        index.by_id.insert(record.id.clone(), record);
        Ok(())
    }

    /// Applies `change` to the record `key` resolves to and persists it; the in-memory record
    /// changes only if `change` succeeds and the write succeeds.
    pub fn update<T>(
        &self,
        key: &str,
        change: impl FnOnce(&mut ContainerRecord) -> Result<T>,
    ) -> Result<(ContainerRecord, T)> {
        self.change(key, change, true)
    }

    /// [`ContainerStore::update`] in memory only, for a state that the record's removal
    /// follows at once (the exit of a `--rm` container): a crash in between leaves the
    /// previous record on disk, from which the next `open` and restore derive the same state
    /// (they read the run's exit file), and the removal saves a disk flush.
    pub fn update_unpersisted<T>(
        &self,
        key: &str,
        change: impl FnOnce(&mut ContainerRecord) -> Result<T>,
    ) -> Result<(ContainerRecord, T)> {
        self.change(key, change, false)
    }

    /// Writes the in-memory record of `key` to disk (after [`Self::update_unpersisted`]).
    pub fn persist(&self, key: &str) -> Result<()> {
        self.change(key, |_| Ok(()), true).map(drop)
    }

    fn change<T>(
        &self,
        key: &str,
        change: impl FnOnce(&mut ContainerRecord) -> Result<T>,
        persist: bool,
    ) -> Result<(ContainerRecord, T)> {
        let mut index = lock(&self.index);
        let id = resolve_in(&index, key)?;
        let mut record = index
            .by_id
            .get(&id)
            .cloned()
            .ok_or_else(|| Error::NoSuchContainer(key.to_string()))?;
        let out = change(&mut record)?;
        if persist {
            write_record(&self.dir(&id), &record, Durability::OldOrNew)?;
        }
        index.by_id.insert(id, record.clone());
        Ok((record, out))
    }

    /// Renames a container; returns the record with its new name and the old name.
    pub fn rename(&self, key: &str, new_name: &str) -> Result<(ContainerRecord, String)> {
        if !names::valid_name(new_name) {
            return Err(Error::InvalidParameter(format!(
                "Invalid container name ({new_name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
            )));
        }
        let new_bare = bare(new_name).to_string();
        let mut index = lock(&self.index);
        let id = resolve_in(&index, key)?;
        let Some(mut record) = index.by_id.get(&id).cloned() else {
            return Err(Error::NoSuchContainer(key.to_string()));
        };
        let old_name = record.name.clone();
        if bare(&old_name) == new_bare {
            return Err(Error::InvalidParameter(
                "Renaming a container with the same name as its current name".into(),
            ));
        }
        if let Some(owner) = index.names.get(&new_bare) {
            return Err(name_conflict(&new_bare, owner));
        }
        record.name = format!("/{new_bare}");
        write_record(&self.dir(&id), &record, Durability::Durable)?;
        index.names.remove(bare(&old_name));
        index.names.insert(new_bare, id.clone());
        index.by_id.insert(id, record.clone());
        Ok((record, old_name))
    }

    /// Deletes a container's record and directory.
    pub fn remove(&self, id: &str) -> Result<ContainerRecord> {
        let mut index = lock(&self.index);
        let Some(record) = index.by_id.get(id).cloned() else {
            return Err(Error::NoSuchContainer(id.to_string()));
        };
        let dir = self.dir(id);
        // Out of the way at once (a rename), deleted in the background: the directory holds
        // the container's log, which can be large. A leftover is deleted by the next `open`.
        let doomed = self.root.join(format!("{REMOVED_PREFIX}{id}"));
        match fs::rename(&dir, &doomed) {
            Ok(()) => self.remove_later(doomed),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(format!("remove {}", dir.display()), e)),
        }
        index.names.remove(bare(&record.name));
        index.by_id.remove(id);
        Ok(record)
    }
}

impl ContainerStore {
    /// Deletes `tree` on the store's remover thread, started on first use and then kept:
    /// a thread per removal cost `run --rm` ~0.1 ms of `clone3` before its answer.
    fn remove_later(&self, tree: PathBuf) {
        let sender = self.remover.get_or_init(|| {
            let (tx, rx) = std::sync::mpsc::channel::<PathBuf>();
            let spawned = std::thread::Builder::new()
                .name("berth-remove".into())
                .spawn(move || rx.into_iter().for_each(|t| remove_tree(&t)));
            if let Err(err) = spawned {
                tracing::warn!(%err, "cannot start the remover thread; removing inline");
            }
            Mutex::new(tx)
        });
        // Without a thread the receiver is gone and the tree comes back: delete it here.
        if let Err(std::sync::mpsc::SendError(tree)) = lock(sender).send(tree) {
            remove_tree(&tree);
        }
    }
}

/// Name prefix of a removed container's directory until its deletion ends.
const REMOVED_PREFIX: &str = ".removed-";

fn remove_tree(path: &Path) {
    if let Err(err) = fs::remove_dir_all(path) {
        if err.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(path = %path.display(), %err, "cannot remove a removed container's directory");
        }
    }
}

fn bare(name: &str) -> &str {
    name.strip_prefix('/').unwrap_or(name)
}

fn name_conflict(name: &str, owner: &str) -> Error {
    Error::Conflict(format!(
        "Conflict. The container name \"/{name}\" is already in use by container \"{owner}\". You have to remove (or rename) that container to be able to reuse that name."
    ))
}

fn resolve_in(index: &Index, key: &str) -> Result<String> {
    if key.is_empty() {
        return Err(Error::NoSuchContainer(key.to_string()));
    }
    if index.by_id.contains_key(key) {
        return Ok(key.to_string());
    }
    if let Some(id) = index.names.get(bare(key)) {
        return Ok(id.clone());
    }
    if !key.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::NoSuchContainer(key.to_string()));
    }
    let mut hits = index
        .by_id
        .range(key.to_string()..)
        .take_while(|(id, _)| id.starts_with(key));
    match (hits.next(), hits.next()) {
        (Some((id, _)), None) => Ok(id.clone()),
        (Some(_), Some(_)) => Err(Error::AmbiguousPrefix(key.to_string())),
        (None, _) => Err(Error::NoSuchContainer(key.to_string())),
    }
}

/// How far a record write must have reached the disk before it returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Durability {
    /// The new content survives a power loss (the rename is made durable with a directory
    /// fsync): a container's creation and its name, which clients were told about.
    Durable,
    /// A crash, even a power loss, leaves the old or the new content whole, never a mix; the
    /// new one may be lost to a power loss. For run-state changes (running, exited, restart
    /// counts, health): after a reboot no container runs anyway and the state is re-derived,
    /// and skipping the directory fsync takes a disk flush off every start and exit.
    OldOrNew,
    /// Only a crash of the daemon is survived (the page cache is), not a power loss, which
    /// may leave the record missing, empty or zero-filled ([`ContainerStore::open`] removes
    /// those). For every write of an auto-remove (`--rm`) container's record: a power loss
    /// ends every container, and one that ended is to be removed anyway, so losing its
    /// record is the right outcome; it saves the creation two disk flushes and the start one.
    Volatile,
}

/// Writes `config.v2.json` atomically: temporary file, fsync, rename (and a directory fsync
/// when `durability` asks for it). A `--rm` container's record is never flushed (see
/// [`Durability::Volatile`]).
fn write_record(dir: &Path, record: &ContainerRecord, durability: Durability) -> Result<()> {
    let bytes = serde_json::to_vec(record)
        .map_err(|e| Error::json(format!("serialise record of {}", record.id), e))?;
    let durability = if record.host_config.auto_remove == Some(true) {
        Durability::Volatile
    } else {
        durability
    };
    match durability {
        Durability::Durable => write_atomic(dir, RECORD_FILE, &bytes),
        Durability::OldOrNew => replace_file(dir, RECORD_FILE, &bytes, true),
        Durability::Volatile => replace_file(dir, RECORD_FILE, &bytes, false),
    }
}

/// Replaces `dir/name` with `bytes` so that a crash leaves the old or the new content, and
/// the new content survives a power loss once this returns.
pub fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    replace_file(dir, name, bytes, true)?;
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(format!("fsync {}", dir.display()), e))
}

/// Replaces `dir/name` with `bytes` (temporary file, fsync unless `!sync`, rename): a crash,
/// even a power loss when `sync`, leaves the old or the new content whole, never an empty or
/// partial file.
fn replace_file(dir: &Path, name: &str, bytes: &[u8], sync: bool) -> Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let target = dir.join(name);
    let io = |what: &str, p: &Path, e| Error::io(format!("{what} {}", p.display()), e);
    let mut f = fs::File::create(&tmp).map_err(|e| io("create", &tmp, e))?;
    f.write_all(bytes).map_err(|e| io("write", &tmp, e))?;
    if sync {
        f.sync_all().map_err(|e| io("fsync", &tmp, e))?;
    }
    drop(f);
    fs::rename(&tmp, &target).map_err(|e| io("rename into", &target, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn record(id: &str, name: &str) -> ContainerRecord {
        ContainerRecord {
            id: id.into(),
            created: crate::time::now_rfc3339(),
            path: "sh".into(),
            args: vec![],
            config: ContainerConfig::default(),
            host_config: HostConfig::default(),
            networking_config: None,
            state: State::default(),
            image: "sha256:00".into(),
            name: format!("/{name}"),
            driver: "overlay2".into(),
            log_path: String::new(),
            restart_count: 0,
            has_been_manually_stopped: false,
        }
    }

    #[test]
    fn lookups_conflicts_and_reload() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContainerStore::open(dir.path()).unwrap();
        let a = "abc1".repeat(16);
        let b = "abd2".repeat(16);
        store.create(record(&a, "web")).unwrap();
        store.create(record(&b, "db")).unwrap();
        assert_eq!(store.resolve("web").unwrap(), a);
        assert_eq!(store.resolve("/db").unwrap(), b);
        assert_eq!(store.resolve("abc").unwrap(), a);
        assert!(matches!(
            store.resolve("ab"),
            Err(Error::AmbiguousPrefix(_))
        ));
        assert_eq!(
            store.resolve("nope").unwrap_err().to_string(),
            "No such container: nope"
        );
        let err = store.create(record(&"f".repeat(64), "web")).unwrap_err();
        assert_eq!(err.status(), hyper::StatusCode::CONFLICT);
        assert!(err.to_string().contains(&a));
        store.rename("web", "front").unwrap();
        assert!(store.resolve("web").is_err());
        assert!(matches!(
            store.rename("db", "front"),
            Err(Error::Conflict(_))
        ));
        store
            .update("db", |r| {
                r.state.set_exited(3, "");
                Ok(())
            })
            .unwrap();

        let reopened = ContainerStore::open(dir.path()).unwrap();
        assert_eq!(reopened.len(), 2);
        assert_eq!(reopened.get("front").unwrap().id, a);
        assert_eq!(reopened.get("db").unwrap().state.exit_code, 3);
        reopened.remove(&a).unwrap();
        assert!(!dir.path().join(&a).exists());
        assert_eq!(ContainerStore::open(dir.path()).unwrap().len(), 1);
    }

    #[test]
    fn torn_and_garbled_records_do_not_stop_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContainerStore::open(dir.path()).unwrap();
        let good = "a1".repeat(32);
        let mut rm = record(&"b2".repeat(32), "auto-removed");
        rm.host_config.auto_remove = Some(true);
        store.create(record(&good, "kept")).unwrap();
        store.create(rm.clone()).unwrap();
        store
            .update(&rm.id, |r| {
                r.state.status = Status::Running;
                Ok(())
            })
            .unwrap();
        // What a power loss may leave of unflushed records: empty, zero-filled or no file.
        let empty = "c3".repeat(32);
        let zeroed = "d4".repeat(32);
        let missing = "e5".repeat(32);
        let garbled = "f6".repeat(32);
        for (id, content) in [
            (&empty, Some(vec![])),
            (&zeroed, Some(vec![0u8; 4096])),
            (&missing, None),
            (&garbled, Some(b"{\"ID\": \"f6".to_vec())),
        ] {
            let d = dir.path().join(id);
            fs::create_dir(&d).unwrap();
            fs::write(d.join(format!("{id}-json.log")), b"log").unwrap();
            if let Some(c) = content {
                fs::write(d.join(RECORD_FILE), c).unwrap();
            }
        }
        let reopened = ContainerStore::open(dir.path()).unwrap();
        assert_eq!(reopened.len(), 2);
        assert_eq!(reopened.get("kept").unwrap().id, good);
        let back = reopened.get("auto-removed").unwrap();
        assert_eq!(back.state.status, Status::Running);
        assert_eq!(back.host_config.auto_remove, Some(true));
        for id in [&empty, &zeroed, &missing] {
            assert!(
                !dir.path().join(id).exists(),
                "torn record's directory removed"
            );
        }
        // Not a torn write: kept on disk for a human to look at, but not loaded.
        assert!(dir.path().join(&garbled).join(RECORD_FILE).exists());
        assert!(reopened.resolve(&garbled).is_err());
    }

    #[test]
    fn unpersisted_changes_reach_disk_only_when_persisted() {
        let dir = tempfile::tempdir().unwrap();
        let store = ContainerStore::open(dir.path()).unwrap();
        let id = "e5".repeat(32);
        store.create(record(&id, "short-lived")).unwrap();
        let (changed, ()) = store
            .update_unpersisted(&id, |r| {
                r.state.set_exited(7, "");
                Ok(())
            })
            .unwrap();
        assert_eq!(changed.state.exit_code, 7);
        assert_eq!(store.get(&id).unwrap().state.exit_code, 7);
        let on_disk = || ContainerStore::open(dir.path()).unwrap().get(&id).unwrap();
        assert_eq!(on_disk().state.exit_code, 0, "written before persist");
        store.persist(&id).unwrap();
        assert_eq!(on_disk().state.exit_code, 7);
    }
}
