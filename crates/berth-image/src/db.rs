//! The reference index (`<root>/images.json`): which images exist (by image ID, the config
//! digest), which manifest each came from, and which tags point at them.
//!
//! It is rewritten whole and atomically (temp file, fsync, rename) under an exclusive `flock`
//! on `<root>/images.lock`, so readers never see a partial file and concurrent writers —
//! threads or processes — serialise.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use crate::content::atomic_write;
use crate::digest::Digest;
use crate::error::{json_err, Error, IoContext, Result};

/// What the store knows about one image beyond its blobs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ImageRecord {
    pub manifest: Digest,
    pub manifest_media_type: String,
    /// Full `name@sha256:…` references this image was pulled or pushed as.
    #[serde(default)]
    pub repo_digests: Vec<String>,
    /// Docker's layer sizes (sum of file sizes per layer), bottom first.
    #[serde(default)]
    pub layer_sizes: Vec<u64>,
    /// RFC 3339 time of the last tag change (inspect's Metadata.LastTagTime).
    #[serde(default)]
    pub last_tag_time: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Db {
    pub images: BTreeMap<Digest, ImageRecord>,
    /// Fully-qualified tagged reference → image ID.
    pub tags: BTreeMap<String, Digest>,
}

impl Db {
    pub(crate) fn tags_of(&self, id: &Digest) -> Vec<String> {
        self.tags
            .iter()
            .filter(|(_, v)| *v == id)
            .map(|(k, _)| k.clone())
            .collect()
    }
}

/// An `flock` held on a lock file; released on drop.
pub(crate) struct FileLock(#[allow(dead_code)] Flock<File>);

pub(crate) fn lock(path: &Path, exclusive: bool) -> Result<FileLock> {
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .ctx("open lock file", path)?;
    let arg = if exclusive {
        FlockArg::LockExclusive
    } else {
        FlockArg::LockShared
    };
    let l = Flock::lock(f, arg).map_err(|(_, e)| Error::Io {
        context: "lock",
        path: path.to_path_buf(),
        source: io::Error::from(e),
    })?;
    Ok(FileLock(l))
}

pub(crate) struct DbFile {
    path: PathBuf,
    lock_path: PathBuf,
}

impl DbFile {
    pub(crate) fn new(root: &Path) -> DbFile {
        DbFile {
            path: root.join("images.json"),
            lock_path: root.join("images.lock"),
        }
    }

    pub(crate) fn read(&self) -> Result<Db> {
        match fs::read(&self.path) {
            Ok(b) => serde_json::from_slice(&b).map_err(json_err(self.path.display().to_string())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Db::default()),
            Err(e) => Err(e).ctx("read", &self.path),
        }
    }

    /// Read-modify-write under the index lock.
    pub(crate) fn update<T>(&self, f: impl FnOnce(&mut Db) -> Result<T>) -> Result<T> {
        let _l = lock(&self.lock_path, true)?;
        let mut db = self.read()?;
        let out = f(&mut db)?;
        let bytes = serde_json::to_vec_pretty(&db).map_err(json_err("image index"))?;
        atomic_write(&self.path, &bytes)?;
        Ok(out)
    }
}
