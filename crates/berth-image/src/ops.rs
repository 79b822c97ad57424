//! Image queries and housekeeping in Docker's JSON shapes: list (`/images/json`), inspect,
//! history, remove (`[{"Untagged":…},{"Deleted":…}]`), prune, disk usage (`/system/df`),
//! garbage collection and the consistency check.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;

use serde::{Deserialize, Serialize};

use crate::db::Db;
use crate::digest::Digest;
use crate::error::{Error, IoContext, Result};
use crate::reference::Reference;
use crate::store::{Image, Store};

/// An element of `GET /images/json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct ImageSummary {
    pub id: String,
    pub parent_id: String,
    pub repo_tags: Vec<String>,
    pub repo_digests: Vec<String>,
    pub created: i64,
    pub size: i64,
    pub shared_size: i64,
    pub labels: BTreeMap<String, String>,
    pub containers: i64,
}

/// `GET /images/{name}/json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct ImageInspect {
    pub id: String,
    pub repo_tags: Vec<String>,
    pub repo_digests: Vec<String>,
    pub parent: String,
    pub comment: String,
    pub created: String,
    pub docker_version: String,
    pub author: String,
    pub config: Option<serde_json::Value>,
    pub architecture: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    pub os: String,
    pub size: i64,
    pub graph_driver: GraphDriver,
    #[serde(rename = "RootFS")]
    pub root_fs: RootFsInfo,
    pub metadata: Metadata,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct GraphDriver {
    pub name: String,
    pub data: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct RootFsInfo {
    #[serde(rename = "Type")]
    pub kind: String,
    pub layers: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct Metadata {
    pub last_tag_time: Option<String>,
}

/// An element of `GET /images/{name}/history`, newest first.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct HistoryItem {
    pub id: String,
    pub created: i64,
    pub created_by: String,
    pub tags: Option<Vec<String>>,
    pub size: i64,
    pub comment: String,
}

/// An element of `DELETE /images/{name}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub enum DeleteItem {
    Untagged(String),
    Deleted(String),
}

/// `POST /images/prune`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "PascalCase")]
pub struct PruneReport {
    pub images_deleted: Vec<DeleteItem>,
    pub space_reclaimed: u64,
}

/// The image part of `GET /system/df`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct DiskUsage {
    pub layers_size: i64,
    pub images: Vec<ImageSummary>,
    /// Container ID → bytes in its writable layer.
    pub containers_size_rw: BTreeMap<String, i64>,
}

/// What gc removed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GcReport {
    pub blobs_removed: usize,
    pub snapshots_removed: usize,
    pub bytes_freed: u64,
}

/// Result of [`Store::fsck`]; empty `problems` means consistent.
#[derive(Debug, Clone, Default)]
pub struct FsckReport {
    pub images: usize,
    pub blobs_checked: usize,
    pub snapshots: usize,
    /// Snapshots no image or container uses (left by an interrupted load; gc removes them).
    pub unreferenced_snapshots: usize,
    pub problems: Vec<String>,
}

impl FsckReport {
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

fn unix_time(rfc3339: Option<&str>) -> i64 {
    rfc3339
        .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.timestamp())
        .unwrap_or(0)
}

fn familiar_tags(tags: &[String]) -> Vec<String> {
    tags.iter()
        .filter_map(|t| Reference::parse(t).ok())
        .map(|r| r.familiar())
        .collect()
}

fn familiar_digests(rds: &[String]) -> Vec<String> {
    rds.iter()
        .filter_map(|t| Reference::parse(t).ok())
        .map(|r| r.familiar())
        .collect()
}

pub(crate) fn dir_size(p: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    let mut seen = BTreeSet::new();
    let mut stack = vec![p.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let Ok(m) = e.path().symlink_metadata() else {
                continue;
            };
            if m.is_dir() {
                stack.push(e.path());
            } else if m.is_file() && (m.nlink() == 1 || seen.insert((m.dev(), m.ino()))) {
                total += m.len();
            }
        }
    }
    total
}

impl Store {
    fn summary(&self, img: &Image, containers: &BTreeMap<Digest, i64>) -> ImageSummary {
        let labels = img
            .config
            .config
            .as_ref()
            .and_then(|c| c.get("Labels"))
            .and_then(|l| serde_json::from_value::<BTreeMap<String, String>>(l.clone()).ok())
            .unwrap_or_default();
        ImageSummary {
            id: img.id.to_string(),
            parent_id: img.config.parent.clone().unwrap_or_default(),
            repo_tags: familiar_tags(&img.tags),
            repo_digests: familiar_digests(&img.record.repo_digests),
            created: unix_time(img.config.created.as_deref()),
            size: img.size() as i64,
            shared_size: -1,
            labels,
            containers: containers.get(&img.id).copied().unwrap_or(0),
        }
    }

    fn container_counts(&self) -> Result<BTreeMap<Digest, i64>> {
        let mut m = BTreeMap::new();
        for c in self.container_images()?.values() {
            *m.entry(c.image_id.clone()).or_insert(0) += 1;
        }
        Ok(m)
    }

    /// `docker images`: every image (untagged ones too), newest first.
    pub fn list(&self) -> Result<Vec<ImageSummary>> {
        let db = self.read_db()?;
        let counts = self.container_counts()?;
        let mut out = Vec::new();
        for id in db.images.keys() {
            out.push(self.summary(&self.load_image(&db, id)?, &counts));
        }
        out.sort_by(|a, b| b.created.cmp(&a.created).then(a.id.cmp(&b.id)));
        Ok(out)
    }

    /// `docker image inspect`.
    pub fn inspect(&self, name: &str) -> Result<ImageInspect> {
        let img = self.get(name)?;
        let chains = img.chain_ids();
        let dirs: Vec<String> = chains
            .iter()
            .rev()
            .map(|c| self.snapshot_dir(c).join("fs").display().to_string())
            .collect();
        let mut data = BTreeMap::new();
        if let Some((top, rest)) = dirs.split_first() {
            data.insert("UpperDir".to_string(), top.clone());
            if !rest.is_empty() {
                data.insert("LowerDir".to_string(), rest.join(":"));
            }
        }
        Ok(ImageInspect {
            id: img.id.to_string(),
            repo_tags: familiar_tags(&img.tags),
            repo_digests: familiar_digests(&img.record.repo_digests),
            parent: img.config.parent.clone().unwrap_or_default(),
            comment: img.config.comment.clone().unwrap_or_default(),
            created: img.config.created.clone().unwrap_or_default(),
            docker_version: img.config.docker_version.clone().unwrap_or_default(),
            author: img.config.author.clone().unwrap_or_default(),
            config: img.config.config.clone(),
            architecture: img.config.architecture.clone(),
            variant: img.config.variant.clone(),
            os: img.config.os.clone(),
            size: img.size() as i64,
            graph_driver: GraphDriver {
                name: "overlay2".into(),
                data,
            },
            root_fs: RootFsInfo {
                kind: "layers".into(),
                layers: img
                    .config
                    .rootfs
                    .diff_ids
                    .iter()
                    .map(Digest::to_string)
                    .collect(),
            },
            metadata: Metadata {
                last_tag_time: img.record.last_tag_time.clone(),
            },
        })
    }

    /// `docker history`: newest first; entries that made no layer have size 0; only the top
    /// entry carries the image ID, the rest are `<missing>` (as for pulled images).
    pub fn history(&self, name: &str) -> Result<Vec<HistoryItem>> {
        let img = self.get(name)?;
        let mut sizes = img.record.layer_sizes.iter();
        let mut out = Vec::new();
        let hist = if img.config.history.is_empty() {
            // No history: one synthetic entry per layer, as Docker shows.
            img.config
                .rootfs
                .diff_ids
                .iter()
                .map(|_| crate::spec::History::default())
                .collect()
        } else {
            img.config.history.clone()
        };
        for h in &hist {
            let size = if h.empty_layer {
                0
            } else {
                sizes.next().copied().unwrap_or(0)
            };
            out.push(HistoryItem {
                id: "<missing>".into(),
                created: unix_time(h.created.as_deref()),
                created_by: h.created_by.clone().unwrap_or_default(),
                tags: None,
                size: size as i64,
                comment: h.comment.clone().unwrap_or_default(),
            });
        }
        out.reverse();
        // As dockerd: the newest entry is this image's, the next its parent's (one history
        // entry per build step or commit), and so on while the parents are still here.
        let mut image = Some(img);
        for entry in &mut out {
            let Some(current) = image.take() else { break };
            entry.id = current.id.to_string();
            let tags = familiar_tags(&current.tags);
            entry.tags = if tags.is_empty() { None } else { Some(tags) };
            image = current
                .config
                .parent
                .as_deref()
                .and_then(|parent| self.get(parent).ok());
        }
        Ok(out)
    }

    /// Each image's parent (the image it was built or committed from), for those that name one.
    fn parent_map(&self, db: &Db) -> Result<BTreeMap<Digest, Digest>> {
        #[derive(Deserialize)]
        struct Parent {
            parent: Option<String>,
        }
        let mut out = BTreeMap::new();
        for id in db.images.keys() {
            let config: Parent = serde_json::from_slice(&self.content().read(id)?)
                .map_err(crate::error::json_err(format!("image config {id}")))?;
            if let Some(parent) = config.parent.and_then(|p| p.parse::<Digest>().ok()) {
                out.insert(id.clone(), parent);
            }
        }
        Ok(out)
    }

    /// `docker rmi`, with every container taken as stopped; see [`Store::remove_with`].
    pub fn remove(&self, name: &str, force: bool) -> Result<Vec<DeleteItem>> {
        self.remove_with(name, force, &[])
    }

    /// `docker rmi` as dockerd decides it, given the IDs of the containers now `running`:
    /// - a tag of an image with other tags is only untagged;
    /// - the last tag of an image a container uses needs `force`; forced, it is untagged and
    ///   the image deleted, unless a running container uses it (then it is only untagged);
    /// - by ID, an image tagged in several repositories needs `force`, one a stopped container
    ///   uses needs `force`, and one a running container uses cannot be deleted at all.
    ///
    /// As dockerd, an image other images name as their parent (a build's earlier step) only
    /// loses its last tag, and cannot be deleted by ID; deleting an image also deletes its
    /// untagged parents that nothing else uses (dockerd's default, `noprune=false`).
    ///
    /// Unreferenced layers and blobs are then collected.
    pub fn remove_with(
        &self,
        name: &str,
        force: bool,
        running: &[String],
    ) -> Result<Vec<DeleteItem>> {
        let _l = self.lock_exclusive()?;
        let users = self.container_images()?;
        let used: BTreeSet<Digest> = users.values().map(|m| m.image_id.clone()).collect();
        let mut result = Vec::new();
        let (by_tag, parents) = {
            let db = self.read_db()?;
            let parents = self.parent_map(&db)?;
            let id = self.resolve(&db, name)?;
            let by_tag = Reference::parse_tagged(name)
                .ok()
                .map(|r| r.to_string())
                .filter(|t| db.tags.get(t) == Some(&id));
            (by_tag, parents)
        };
        self.inner.db.update(|db| {
            result.clear();
            let id = self.resolve(db, name)?;
            let image = short_id(id.hex());
            let has_children = |db: &Db, id: &Digest| {
                parents
                    .iter()
                    .any(|(child, parent)| parent == id && db.images.contains_key(child))
            };
            let using: Vec<&String> = users
                .iter()
                .filter(|(_, m)| m.image_id == id)
                .map(|(c, _)| c)
                .collect();
            let running_user = using.iter().find(|c| running.contains(c));
            let tags = db.tags_of(&id);
            if let Some(t) = &by_tag {
                let untag_only =
                    tags.len() > 1 || (force && running_user.is_some()) || has_children(db, &id);
                if !untag_only && !force {
                    if let Some(c) = using.first() {
                        return Err(Error::ReferenceInUse {
                            reference: name.to_string(),
                            container: short_id(c),
                            image,
                        });
                    }
                }
                if untag_only {
                    db.tags.remove(t);
                    result.push(DeleteItem::Untagged(Reference::parse(t)?.familiar()));
                    return Ok(());
                }
            } else {
                if !force {
                    let repos: BTreeSet<String> = tags
                        .iter()
                        .filter_map(|t| Reference::parse(t).ok())
                        .map(|r| r.name())
                        .collect();
                    if repos.len() > 1 {
                        return Err(Error::MultipleRepositories { image });
                    }
                }
                if let Some(c) = running_user {
                    return Err(Error::ImageInUseRunning {
                        image,
                        container: short_id(c),
                    });
                }
                if let (Some(c), false) = (using.first(), force) {
                    return Err(Error::ImageInUse {
                        image,
                        container: short_id(c),
                    });
                }
                if has_children(db, &id) {
                    return Err(Error::HasChildren { image });
                }
            }
            for t in &tags {
                db.tags.remove(t);
                result.push(DeleteItem::Untagged(Reference::parse(t)?.familiar()));
            }
            if let Some(rec) = db.images.remove(&id) {
                for rd in &rec.repo_digests {
                    result.push(DeleteItem::Untagged(Reference::parse(rd)?.familiar()));
                }
            }
            result.push(DeleteItem::Deleted(id.to_string()));
            // Then the untagged parents this deletion left without a purpose.
            let mut child = id;
            while let Some(parent) = parents.get(&child) {
                let unused = db
                    .images
                    .get(parent)
                    .is_some_and(|r| r.repo_digests.is_empty())
                    && db.tags_of(parent).is_empty()
                    && !used.contains(parent)
                    && !has_children(db, parent);
                if !unused {
                    break;
                }
                db.images.remove(parent);
                result.push(DeleteItem::Deleted(parent.to_string()));
                child = parent.clone();
            }
            Ok(())
        })?;
        if result.iter().any(|r| matches!(r, DeleteItem::Deleted(_))) {
            let gc = self.gc_locked()?;
            tracing::debug!(?gc, "collected after remove");
        }
        Ok(result)
    }

    /// `docker image prune`: remove dangling (untagged) images no container uses, or with `all`
    /// every image no container uses. As dockerd, an image is kept while an image that stays
    /// names it as its parent: a build's intermediate steps go with the image they lead to.
    pub fn prune(&self, all: bool) -> Result<PruneReport> {
        let _l = self.lock_exclusive()?;
        let users: BTreeSet<Digest> = self
            .container_images()?
            .values()
            .map(|m| m.image_id.clone())
            .collect();
        let parents = self.parent_map(&self.read_db()?)?;
        let mut report = PruneReport::default();
        self.inner.db.update(|db| {
            report.images_deleted.clear();
            // Children before their parents: grow the set until no image is added.
            let mut victims: Vec<Digest> = Vec::new();
            loop {
                let prunable: Vec<Digest> = db
                    .images
                    .keys()
                    .filter(|id| {
                        !victims.contains(id)
                            && !users.contains(*id)
                            && (all || db.tags_of(id).is_empty())
                            && !parents.iter().any(|(child, parent)| {
                                parent == *id
                                    && db.images.contains_key(child)
                                    && !victims.contains(child)
                            })
                    })
                    .cloned()
                    .collect();
                if prunable.is_empty() {
                    break;
                }
                victims.extend(prunable);
            }
            for id in victims {
                for t in db.tags_of(&id) {
                    db.tags.remove(&t);
                    report
                        .images_deleted
                        .push(DeleteItem::Untagged(Reference::parse(&t)?.familiar()));
                }
                db.images.remove(&id);
                report
                    .images_deleted
                    .push(DeleteItem::Deleted(id.to_string()));
            }
            Ok(())
        })?;
        report.space_reclaimed = self.gc_locked()?.bytes_freed;
        Ok(report)
    }

    /// Image part of `docker system df`.
    pub fn disk_usage(&self) -> Result<DiskUsage> {
        let db = self.read_db()?;
        let counts = self.container_counts()?;
        let mut images = Vec::new();
        for id in db.images.keys() {
            images.push(self.summary(&self.load_image(&db, id)?, &counts));
        }
        let mut layers_size = 0i64;
        let snaps = self.inner.root.join("snapshots");
        for e in fs::read_dir(&snaps).ctx("list", &snaps)?.flatten() {
            if let Some(Ok(d)) = e.file_name().to_str().map(Digest::from_hex) {
                if let Some(m) = self.snapshot_meta(&d)? {
                    layers_size += m.size as i64;
                }
            }
        }
        let mut containers_size_rw = BTreeMap::new();
        for (id, _) in self.container_images()? {
            let upper = self.containers_dir().join(&id).join("upper");
            containers_size_rw.insert(id, dir_size(&upper) as i64);
        }
        Ok(DiskUsage {
            layers_size,
            images,
            containers_size_rw,
        })
    }

    /// Remove blobs and snapshots no image or container references, and leftovers in tmp/.
    pub fn gc(&self) -> Result<GcReport> {
        let _l = self.lock_exclusive()?;
        self.gc_locked()
    }

    pub(crate) fn gc_locked(&self) -> Result<GcReport> {
        let db = self.read_db()?;
        let (live_blobs, live_snaps) = self.live_sets(&db)?;
        let mut report = GcReport::default();
        for d in self.content().list()? {
            if !live_blobs.contains(&d) {
                report.bytes_freed += self.content().size(&d).unwrap_or(0);
                self.content().remove(&d)?;
                report.blobs_removed += 1;
            }
        }
        let snaps = self.inner.root.join("snapshots");
        for e in fs::read_dir(&snaps).ctx("list", &snaps)? {
            let e = e.ctx("list", &snaps)?;
            let live = e
                .file_name()
                .to_str()
                .and_then(|n| Digest::from_hex(n).ok())
                .is_some_and(|d| live_snaps.contains(&d));
            if !live {
                report.bytes_freed += dir_size(&e.path());
                fs::remove_dir_all(e.path()).ctx("remove", e.path())?;
                report.snapshots_removed += 1;
            }
        }
        // Container dirs without a readable record are leftovers of a crashed create/remove,
        // or of an unflushed record a power loss emptied (`prepare_rootfs_with`).
        let cdir = self.containers_dir();
        for e in fs::read_dir(&cdir).ctx("list", &cdir)?.flatten() {
            let readable = fs::read(e.path().join("meta.json"))
                .is_ok_and(|b| serde_json::from_slice::<crate::rootfs::ContainerMeta>(&b).is_ok());
            if !readable && !crate::rootfs::is_mountpoint(&e.path().join("merged")) {
                fs::remove_dir_all(e.path()).ctx("remove", e.path())?;
            }
        }
        let tmp = self.tmp();
        for e in fs::read_dir(&tmp).ctx("list", &tmp)?.flatten() {
            let p = e.path();
            let r = if p.is_dir() {
                crate::rootfs::delete_removed_tree(&p)
            } else {
                fs::remove_file(&p)
            };
            match r {
                // The reaper thread was deleting it too (see `Store::remove_rootfs`).
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                r => r.ctx("remove", p)?,
            }
        }
        // Temp files of an interrupted index rewrite (atomic_write) sit next to the index;
        // the index lock keeps a rewrite in progress from losing its file.
        let _db = crate::db::lock(&self.inner.root.join("images.lock"), true)?;
        for e in fs::read_dir(&self.inner.root)
            .ctx("list", &self.inner.root)?
            .flatten()
        {
            if e.file_name().to_string_lossy().starts_with(".tmp-") {
                fs::remove_file(e.path()).ctx("remove", e.path())?;
            }
        }
        Ok(report)
    }

    /// Consistency check: every tag resolves to an image, every image's manifest, config and
    /// layer blobs exist and match their digests, every image and container has its snapshot
    /// chain, and every snapshot's metadata matches its name.
    pub fn fsck(&self) -> Result<FsckReport> {
        let _l = self.lock_shared()?;
        let db: Db = self.read_db()?;
        let mut r = FsckReport {
            images: db.images.len(),
            ..Default::default()
        };
        for (tag, id) in &db.tags {
            if !db.images.contains_key(id) {
                r.problems
                    .push(format!("tag {tag} points to missing image {id}"));
            }
        }
        let mut checked = BTreeSet::new();
        let mut verify = |d: &Digest, r: &mut FsckReport| {
            if checked.insert(d.clone()) {
                r.blobs_checked += 1;
                if let Err(e) = self.content().verify(d) {
                    r.problems.push(e.to_string());
                }
            }
        };
        for (id, rec) in &db.images {
            verify(&rec.manifest, &mut r);
            verify(id, &mut r);
            let img = match self.load_image(&db, id) {
                Ok(i) => i,
                Err(e) => {
                    r.problems.push(format!("image {id}: {e}"));
                    continue;
                }
            };
            if img.manifest.config.digest != *id {
                r.problems.push(format!(
                    "image {id}: manifest {} names config {}",
                    rec.manifest, img.manifest.config.digest
                ));
            }
            for l in &img.manifest.layers {
                verify(&l.digest, &mut r);
            }
            for c in img.chain_ids() {
                if self.snapshot_meta(&c)?.is_none() {
                    r.problems.push(format!("image {id}: snapshot {c} missing"));
                }
            }
        }
        for (cid, m) in self.container_images()? {
            if !db.images.contains_key(&m.image_id) {
                tracing::debug!(container = %cid, "container's image was force-removed");
            }
            for c in &m.chain_ids {
                if self.snapshot_meta(c)?.is_none() {
                    r.problems
                        .push(format!("container {cid}: snapshot {c} missing"));
                }
            }
        }
        let (_, live_snaps) = self.live_sets(&db)?;
        let snaps = self.inner.root.join("snapshots");
        for e in fs::read_dir(&snaps).ctx("list", &snaps)?.flatten() {
            r.snapshots += 1;
            let name = e.file_name().to_string_lossy().into_owned();
            match Digest::from_hex(&name)
                .ok()
                .map(|d| (self.snapshot_meta(&d), d))
            {
                Some((Ok(Some(m)), d)) if m.chain_id == d => {
                    // Layers unpack in parallel, so a crash can leave a snapshot whose parent
                    // was never finished: garbage for gc, not an inconsistency.
                    if !live_snaps.contains(&d) {
                        r.unreferenced_snapshots += 1;
                    }
                }
                _ => r
                    .problems
                    .push(format!("snapshot directory {name} is not a valid snapshot")),
            }
        }
        Ok(r)
    }
}

/// The 12-character form dockerd prints IDs in.
fn short_id(id: &str) -> String {
    id.chars().take(12).collect()
}
