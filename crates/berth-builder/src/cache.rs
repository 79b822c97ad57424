//! The build cache: which image a step produced from a given parent image and step
//! description (the instruction as recorded in history, plus a digest of the copied files for
//! COPY/ADD). The index is one JSON file under the data root, rewritten atomically; entries are
//! verified against the image store on use, so images removed since are simply misses.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use sha2::{Digest as _, Sha256};

use crate::error::{Error, Result};

/// The on-disk cache index.
pub struct Cache {
    path: PathBuf,
    entries: Mutex<BTreeMap<String, String>>,
}

/// The key of a step: its parent image and what it does.
pub fn key(parent: &str, step: &str) -> String {
    let mut h = Sha256::new();
    h.update(parent.as_bytes());
    h.update([0]);
    h.update(step.as_bytes());
    hex::encode(h.finalize())
}

impl Cache {
    /// Opens (or starts) the index in `dir`.
    pub fn open(dir: &Path) -> Result<Cache> {
        std::fs::create_dir_all(dir).map_err(Error::io("create cache directory", dir))?;
        let path = dir.join("cache.json");
        let entries = match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).unwrap_or_else(|err| {
                tracing::warn!(path = %path.display(), %err, "unreadable build cache index, starting empty");
                BTreeMap::new()
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(Error::io("read", path)(e)),
        };
        Ok(Cache {
            path,
            entries: Mutex::new(entries),
        })
    }

    /// The directory the index (and the builder's other state) lives in.
    pub fn dir(&self) -> PathBuf {
        self.path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, String>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The image recorded for `key`.
    pub fn get(&self, key: &str) -> Option<String> {
        self.lock().get(key).cloned()
    }

    /// Records `image` for `key` and persists the index.
    pub fn put(&self, key: &str, image: &str) -> Result<()> {
        let mut e = self.lock();
        e.insert(key.to_string(), image.to_string());
        self.save(&e)
    }

    /// Drops entries whose image `exists` says is gone; returns how many were dropped.
    pub fn prune(&self, exists: impl Fn(&str) -> bool) -> Result<usize> {
        let mut e = self.lock();
        let before = e.len();
        e.retain(|_, img| exists(img));
        let dropped = before - e.len();
        self.save(&e)?;
        Ok(dropped)
    }

    /// Forgets everything (`POST /build/prune?all=1`); returns how many entries there were.
    pub fn clear(&self) -> Result<usize> {
        let mut e = self.lock();
        let n = e.len();
        e.clear();
        self.save(&e)?;
        Ok(n)
    }

    fn save(&self, e: &BTreeMap<String, String>) -> Result<()> {
        let bytes = serde_json::to_vec(e)
            .map_err(|err| Error::Backend(format!("encode build cache: {err}")))?;
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let mut tmp =
            tempfile::NamedTempFile::new_in(dir).map_err(Error::io("create temp file in", dir))?;
        std::io::Write::write_all(&mut tmp, &bytes)
            .map_err(Error::io("write", tmp.path().to_path_buf()))?;
        tmp.as_file()
            .sync_all()
            .map_err(Error::io("sync", tmp.path().to_path_buf()))?;
        tmp.persist(&self.path)
            .map_err(|e| Error::io("replace", self.path.clone())(e.error))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn persisted_and_pruned() {
        let d = tempfile::tempdir().unwrap();
        let c = Cache::open(d.path()).unwrap();
        let k = key("sha256:p", "RUN x");
        assert_ne!(k, key("sha256:p", "RUN y"));
        c.put(&k, "sha256:a").unwrap();
        c.put(&key("p", "s"), "sha256:b").unwrap();
        let c = Cache::open(d.path()).unwrap();
        assert_eq!(c.get(&k).as_deref(), Some("sha256:a"));
        assert_eq!(c.prune(|i| i == "sha256:a").unwrap(), 1);
        assert_eq!(c.clear().unwrap(), 1);
        assert!(Cache::open(d.path()).unwrap().get(&k).is_none());
    }
}
