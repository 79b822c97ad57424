//! Images made from filesystems: `import` of a rootfs tarball, `commit` of a container's
//! writable layer, `diff` (Docker's change list) and `export` of a container's filesystem.
//!
//! With overlayfs the container's changes are exactly its upper dir: overlay whiteouts
//! (0/0 character devices, `trusted.overlay.opaque`) become `.wh.` entries in the layer. With the
//! copy driver the changes are found by comparing the rootfs with a fresh copy of the image.
//!
//! `--change` instructions are not read here: the caller (the daemon, through berth-builder's
//! Dockerfile code) turns them into the config that [`ImportOptions`] and [`CommitOptions`]
//! carry.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::{self, Seek, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::digest::Digest;
use crate::error::{json_err, Error, IoContext, Result};
use crate::reference::Reference;
use crate::rootfs::apply_layer_copy;
use crate::spec::{self, Descriptor, Manifest};
use crate::store::{now_rfc3339, Driver, Store};
use crate::sys;
use crate::unpack::{OPAQUE_WHITEOUT, OVERLAY_OPAQUE_XATTR, WHITEOUT_PREFIX};

/// Options for [`Store::import`].
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// Tag the new image (`repo[:tag]`).
    pub reference: Option<String>,
    /// The new image's container config (`Cmd`, `Env`, ... in Docker's field names): what
    /// `--change` made of an empty one. Empty when `None`.
    pub config: Option<Map<String, Value>>,
    /// Commit message (`--message`); recorded in the history.
    pub message: Option<String>,
}

/// Options for [`Store::commit`].
#[derive(Debug, Clone, Default)]
pub struct CommitOptions {
    /// Tag the new image (`repo[:tag]`).
    pub reference: Option<String>,
    /// `--author`.
    pub author: Option<String>,
    /// `--message`: the config's comment and the new history entry's.
    pub message: Option<String>,
    /// The container config (`Cmd`, `Env`, ... in Docker's field names) to record instead of
    /// the image's: the container's, with any `--change` already applied by the caller.
    pub config: Option<Map<String, Value>>,
    /// The new history entry's `created_by`: the instruction a build step ran.
    pub created_by: Option<String>,
}

/// Kind of a filesystem change, as Docker numbers them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(into = "u8", try_from = "u8")]
pub enum ChangeKind {
    /// Changed (content or metadata).
    Modified = 0,
    /// Created.
    Added = 1,
    /// Removed.
    Deleted = 2,
}

impl From<ChangeKind> for u8 {
    fn from(k: ChangeKind) -> u8 {
        k as u8
    }
}

impl TryFrom<u8> for ChangeKind {
    type Error = String;
    fn try_from(v: u8) -> std::result::Result<ChangeKind, String> {
        match v {
            0 => Ok(ChangeKind::Modified),
            1 => Ok(ChangeKind::Added),
            2 => Ok(ChangeKind::Deleted),
            other => Err(format!("invalid change kind {other}")),
        }
    }
}

/// An element of `GET /containers/{id}/changes`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Change {
    /// Absolute path inside the container.
    pub path: String,
    /// What happened to it.
    pub kind: ChangeKind,
}

fn is_whiteout(m: &fs::Metadata) -> bool {
    m.file_type().is_char_device() && m.rdev() == 0
}

fn is_opaque(p: &Path) -> Result<bool> {
    Ok(sys::lgetxattr(p, OVERLAY_OPAQUE_XATTR)
        .ctx("read xattr", p)?
        .is_some_and(|v| v == b"y"))
}

fn sorted_entries(dir: &Path) -> Result<Vec<fs::DirEntry>> {
    let mut v: Vec<fs::DirEntry> = fs::read_dir(dir)
        .ctx("list", dir)?
        .collect::<io::Result<_>>()
        .ctx("list", dir)?;
    v.sort_by_key(|e| e.file_name());
    Ok(v)
}

/// Writes filesystem trees as tar streams.
struct TreeWriter<W: Write> {
    b: tar::Builder<W>,
    links: HashMap<(u64, u64), PathBuf>,
}

impl<W: Write> TreeWriter<W> {
    fn new(w: W) -> Self {
        TreeWriter {
            b: tar::Builder::new(w),
            links: HashMap::new(),
        }
    }

    fn empty_file(&mut self, rel: &Path) -> Result<()> {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_size(0);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        self.b
            .append_data(&mut h, rel, io::empty())
            .ctx("write tar entry", rel)
    }

    fn pax_xattrs(&mut self, abs: &Path, rel: &Path) -> Result<()> {
        let mut data = Vec::new();
        for name in sys::llistxattr(abs).ctx("list xattrs", abs)? {
            if name.starts_with("trusted.") || name == "security.selinux" {
                continue;
            }
            let Some(v) = sys::lgetxattr(abs, &name).ctx("read xattr", abs)? else {
                continue;
            };
            let mut rec = Vec::new();
            rec.extend_from_slice(b" SCHILY.xattr.");
            rec.extend_from_slice(name.as_bytes());
            rec.push(b'=');
            rec.extend_from_slice(&v);
            rec.push(b'\n');
            // The length prefix counts itself.
            let mut len = rec.len() + 1;
            while len.to_string().len() + rec.len() != len {
                len += 1;
            }
            data.extend_from_slice(len.to_string().as_bytes());
            data.extend_from_slice(&rec);
        }
        if data.is_empty() {
            return Ok(());
        }
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::XHeader);
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        let _ = h.set_path("PaxHeader");
        h.set_cksum();
        self.b
            .append(&h, data.as_slice())
            .ctx("write tar entry", rel)
    }

    /// Append one filesystem object (not recursing).
    fn entry(&mut self, abs: &Path, rel: &Path, m: &fs::Metadata) -> Result<()> {
        let ft = m.file_type();
        let mut h = tar::Header::new_gnu();
        h.set_mode(m.mode() & 0o7777);
        h.set_uid(m.uid() as u64);
        h.set_gid(m.gid() as u64);
        h.set_mtime(m.mtime().max(0) as u64);
        h.set_size(0);
        if ft.is_file() && m.nlink() > 1 {
            if let Some(first) = self.links.get(&(m.dev(), m.ino())) {
                h.set_entry_type(tar::EntryType::Link);
                let first = first.clone();
                return self
                    .b
                    .append_link(&mut h, rel, first)
                    .ctx("write tar entry", rel);
            }
            self.links.insert((m.dev(), m.ino()), rel.to_path_buf());
        }
        self.pax_xattrs(abs, rel)?;
        if ft.is_dir() {
            h.set_entry_type(tar::EntryType::Directory);
            self.b.append_data(&mut h, rel, io::empty())
        } else if ft.is_file() {
            h.set_entry_type(tar::EntryType::Regular);
            h.set_size(m.len());
            let f = fs::File::open(abs).ctx("open", abs)?;
            self.b.append_data(&mut h, rel, io::Read::take(f, m.len()))
        } else if ft.is_symlink() {
            h.set_entry_type(tar::EntryType::Symlink);
            let t = fs::read_link(abs).ctx("read link", abs)?;
            self.b.append_link(&mut h, rel, t)
        } else {
            h.set_entry_type(if ft.is_char_device() {
                tar::EntryType::Char
            } else if ft.is_block_device() {
                tar::EntryType::Block
            } else if ft.is_fifo() {
                tar::EntryType::Fifo
            } else {
                // Sockets are not archived (as in Docker).
                return Ok(());
            });
            let rdev = m.rdev();
            h.set_device_major(libc::major(rdev))
                .ctx("write tar entry", rel)?;
            h.set_device_minor(libc::minor(rdev))
                .ctx("write tar entry", rel)?;
            self.b.append_data(&mut h, rel, io::empty())
        }
        .ctx("write tar entry", rel)
    }

    /// Archive everything below `root`. With `layer`, overlay whiteouts become `.wh.` entries.
    fn tree(&mut self, root: &Path, rel: &Path, layer: bool) -> Result<()> {
        for e in sorted_entries(&root.join(rel))? {
            let r = rel.join(e.file_name());
            let abs = root.join(&r);
            let m = fs::symlink_metadata(&abs).ctx("stat", &abs)?;
            if layer && is_whiteout(&m) {
                let name = format!("{WHITEOUT_PREFIX}{}", e.file_name().to_string_lossy());
                self.empty_file(&rel.join(name))?;
                continue;
            }
            self.entry(&abs, &r, &m)?;
            if m.is_dir() {
                if layer && is_opaque(&abs)? {
                    self.empty_file(&r.join(OPAQUE_WHITEOUT))?;
                }
                self.tree(root, &r, layer)?;
            }
        }
        Ok(())
    }

    fn finish(self) -> Result<W> {
        self.b.into_inner().ctx("finish tar", PathBuf::new())
    }
}

/// Walk `new` against `old` (copy driver): the naive diff.
fn naive_changes(old: &Path, new: &Path, rel: &Path, out: &mut Vec<Change>) -> Result<()> {
    let show = |r: &Path| format!("/{}", r.display());
    let new_entries = sorted_entries(&new.join(rel))?;
    let mut seen = std::collections::BTreeSet::new();
    for e in &new_entries {
        let r = rel.join(e.file_name());
        seen.insert(e.file_name());
        let nm = fs::symlink_metadata(new.join(&r)).ctx("stat", new.join(&r))?;
        match fs::symlink_metadata(old.join(&r)) {
            Err(_) => {
                out.push(Change {
                    path: show(&r),
                    kind: ChangeKind::Added,
                });
                if nm.is_dir() {
                    naive_added(new, &r, out)?;
                }
            }
            Ok(om) => {
                let same_type = om.file_type() == nm.file_type();
                let differs = !same_type
                    || om.mode() != nm.mode()
                    || om.uid() != nm.uid()
                    || om.gid() != nm.gid()
                    || (!nm.is_dir()
                        && (om.len() != nm.len()
                            || om.mtime() != nm.mtime()
                            || om.mtime_nsec() != nm.mtime_nsec()))
                    || (nm.file_type().is_symlink()
                        && fs::read_link(old.join(&r)).ok() != fs::read_link(new.join(&r)).ok());
                let before = out.len();
                if nm.is_dir() && om.is_dir() {
                    naive_changes(old, new, &r, out)?;
                } else if nm.is_dir() {
                    naive_added(new, &r, out)?;
                }
                if differs || out.len() > before {
                    out.insert(
                        before,
                        Change {
                            path: show(&r),
                            kind: ChangeKind::Modified,
                        },
                    );
                }
            }
        }
    }
    for e in sorted_entries(&old.join(rel))? {
        if !seen.contains(&e.file_name()) {
            out.push(Change {
                path: show(&rel.join(e.file_name())),
                kind: ChangeKind::Deleted,
            });
        }
    }
    Ok(())
}

fn naive_added(new: &Path, rel: &Path, out: &mut Vec<Change>) -> Result<()> {
    for e in sorted_entries(&new.join(rel))? {
        let r = rel.join(e.file_name());
        out.push(Change {
            path: format!("/{}", r.display()),
            kind: ChangeKind::Added,
        });
        if e.file_type().ctx("stat", new.join(&r))?.is_dir() {
            naive_added(new, &r, out)?;
        }
    }
    Ok(())
}

impl Store {
    fn tag_refs(reference: Option<&str>) -> Result<Vec<Reference>> {
        reference
            .map(Reference::parse_tagged)
            .transpose()
            .map(|r| r.into_iter().collect())
    }

    /// Store config + manifest for layers already in the store and record the image.
    fn finish_image(
        &self,
        config: &Value,
        layers: Vec<Descriptor>,
        reference: Option<&str>,
    ) -> Result<Digest> {
        let tags = Self::tag_refs(reference)?;
        let config_bytes = serde_json::to_vec(config).map_err(json_err("image config"))?;
        let config_digest = self.content().put_bytes(&config_bytes, None)?;
        let manifest = Manifest {
            schema_version: 2,
            media_type: Some(spec::MT_OCI_MANIFEST.into()),
            config: Descriptor {
                media_type: spec::MT_OCI_CONFIG.into(),
                digest: config_digest,
                size: config_bytes.len() as u64,
                platform: None,
                annotations: None,
            },
            layers,
            annotations: None,
        };
        let mbytes = serde_json::to_vec(&manifest).map_err(json_err("manifest"))?;
        let mdigest = self.content().put_bytes(&mbytes, None)?;
        self.register(&mdigest, spec::MT_OCI_MANIFEST, &tags, None, None)
    }

    /// `docker import`: make a one-layer image from a rootfs tarball (plain, gzip or zstd).
    pub fn import(&self, reader: impl io::Read, opts: &ImportOptions) -> Result<Digest> {
        // Validate the reference before consuming the stream.
        Self::tag_refs(opts.reference.as_deref())?;
        let cfg = opts.config.clone().unwrap_or_default();
        let _l = self.lock_shared()?;
        let (layer, _chain) = self.put_layer_locked(reader, None, None)?;
        let now = now_rfc3339();
        let (os, arch) = spec::host_platform();
        let comment = opts
            .message
            .clone()
            .unwrap_or_else(|| "Imported from -".to_string());
        let config = json!({
            "architecture": arch,
            "config": Value::Object(cfg),
            "created": now,
            "history": [{"created": now, "comment": comment}],
            "os": os,
            "rootfs": {"type": "layers", "diff_ids": [layer.diff_id]},
        });
        let desc = Descriptor {
            media_type: layer.compression.oci_media_type().into(),
            digest: layer.digest,
            size: layer.size,
            platform: None,
            annotations: None,
        };
        self.finish_image(&config, vec![desc], opts.reference.as_deref())
    }

    /// `docker diff`: what the container changed relative to its image, sorted by path.
    pub fn diff(&self, container_id: &str) -> Result<Vec<Change>> {
        let meta = self.container_meta(container_id)?;
        let dir = self.containers_dir().join(container_id);
        let mut out = Vec::new();
        match meta.driver {
            Driver::Overlay => {
                // The init layer is part of the base, so its mountpoint stubs are no change.
                let lowers = self.container_lowers(&dir, &meta.chain_ids);
                self.overlay_changes(&dir.join("upper"), Path::new(""), &lowers, &mut out)?;
            }
            Driver::Copy => {
                let base = self.materialize(&meta.chain_ids)?;
                let init = dir.join(crate::rootfs::INIT_DIR);
                if init.is_dir() {
                    apply_layer_copy(&init, base.path())?;
                }
                naive_changes(base.path(), &dir.join("merged"), Path::new(""), &mut out)?;
            }
        }
        out.sort();
        Ok(out)
    }

    fn overlay_changes(
        &self,
        upper: &Path,
        rel: &Path,
        lowers: &[PathBuf],
        out: &mut Vec<Change>,
    ) -> Result<()> {
        for e in sorted_entries(&upper.join(rel))? {
            let r = rel.join(e.file_name());
            let abs = upper.join(&r);
            let m = fs::symlink_metadata(&abs).ctx("stat", &abs)?;
            let path = format!("/{}", r.display());
            if is_whiteout(&m) {
                out.push(Change {
                    path,
                    kind: ChangeKind::Deleted,
                });
                continue;
            }
            let lower = lowers
                .iter()
                .find_map(|l| fs::symlink_metadata(l.join(&r)).ok())
                .filter(|lm| !is_whiteout(lm));
            let kind = match &lower {
                // An opaque directory hides the lower one: Docker reports it deleted (its
                // entries in the upper dir follow as additions or modifications).
                Some(_) if m.is_dir() && is_opaque(&abs)? => Some(ChangeKind::Deleted),
                None => Some(ChangeKind::Added),
                // A directory only copied up (same mode, size and mtime) is not a change.
                Some(lm)
                    if lm.is_dir()
                        && m.is_dir()
                        && lm.mode() == m.mode()
                        && lm.len() == m.len()
                        && lm.mtime() == m.mtime()
                        && lm.mtime_nsec() == m.mtime_nsec() =>
                {
                    None
                }
                Some(_) => Some(ChangeKind::Modified),
            };
            if let Some(kind) = kind {
                out.push(Change { path, kind });
            }
            if m.is_dir() {
                self.overlay_changes(upper, &r, lowers, out)?;
            }
        }
        Ok(())
    }

    /// A temp dir holding the merged image layers (copy driver helpers).
    fn materialize(&self, chains: &[Digest]) -> Result<tempfile::TempDir> {
        let t = tempfile::Builder::new()
            .prefix("base-")
            .tempdir_in(self.tmp())
            .ctx("create temp dir in", self.tmp())?;
        for c in chains {
            apply_layer_copy(&self.snapshot_dir(c).join("fs"), t.path())?;
        }
        Ok(t)
    }

    /// Write the container's changes as a layer tar into `w`.
    fn write_changes_layer<W: Write>(&self, container_id: &str, w: W) -> Result<W> {
        let meta = self.container_meta(container_id)?;
        let dir = self.containers_dir().join(container_id);
        let mut tw = TreeWriter::new(w);
        match meta.driver {
            Driver::Overlay => tw.tree(&dir.join("upper"), Path::new(""), true)?,
            Driver::Copy => {
                let merged = dir.join("merged");
                for c in self.diff(container_id)? {
                    let rel = PathBuf::from(c.path.trim_start_matches('/'));
                    if c.kind == ChangeKind::Deleted {
                        let name = format!(
                            "{WHITEOUT_PREFIX}{}",
                            rel.file_name()
                                .map(|n| n.to_string_lossy())
                                .unwrap_or_default()
                        );
                        tw.empty_file(&rel.parent().unwrap_or(Path::new("")).join(name))?;
                    } else {
                        let abs = merged.join(&rel);
                        let m = fs::symlink_metadata(&abs).ctx("stat", &abs)?;
                        tw.entry(&abs, &rel, &m)?;
                    }
                }
            }
        }
        tw.finish()
    }

    /// `docker commit`: the container's changes become a new layer on top of its image.
    pub fn commit(&self, container_id: &str, opts: &CommitOptions) -> Result<Digest> {
        let _l = self.lock_shared()?;
        Self::tag_refs(opts.reference.as_deref())?;
        let meta = self.container_meta(container_id)?;
        let db = self.read_db()?;
        let base = self.load_image(&db, &meta.image_id)?;
        let mut tmp = self.content().temp_file("commit-")?;
        self.write_changes_layer(container_id, tmp.as_file_mut())?;
        tmp.as_file_mut()
            .rewind()
            .ctx("rewind", tmp.path().to_path_buf())?;
        let parent = base.chain_ids().last().cloned();
        let (layer, _) =
            self.put_layer_locked(io::BufReader::new(tmp.as_file_mut()), None, parent.as_ref())?;

        let mut config: Value =
            serde_json::from_slice(&base.config_raw).map_err(json_err("image config"))?;
        let obj = config
            .as_object_mut()
            .ok_or_else(|| Error::InvalidManifest("image config is not an object".into()))?;
        let now = now_rfc3339();
        let cc = match &opts.config {
            Some(c) => c.clone(),
            None => obj
                .get("config")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default(),
        };
        obj.insert("config".into(), Value::Object(cc));
        obj.insert("created".into(), json!(now));
        obj.insert("container".into(), json!(container_id));
        // dockerd records the container's image as the new image's parent (`Parent` in
        // inspect, what `docker history` walks for local images).
        obj.insert("parent".into(), json!(meta.image_id.to_string()));
        match &opts.author {
            Some(a) => obj.insert("author".into(), json!(a)),
            None => obj.remove("author"),
        };
        match &opts.message {
            Some(m) => obj.insert("comment".into(), json!(m)),
            None => obj.remove("comment"),
        };
        let rootfs = obj
            .entry("rootfs")
            .or_insert_with(|| json!({"type": "layers", "diff_ids": []}));
        if let Some(ids) = rootfs.get_mut("diff_ids").and_then(Value::as_array_mut) {
            ids.push(json!(layer.diff_id));
        }
        let mut h = Map::new();
        h.insert("created".into(), json!(now));
        if let Some(a) = &opts.author {
            h.insert("author".into(), json!(a));
        }
        if let Some(m) = &opts.message {
            h.insert("comment".into(), json!(m));
        }
        if let Some(c) = &opts.created_by {
            h.insert("created_by".into(), json!(c));
        }
        if let Some(hist) = obj
            .entry("history")
            .or_insert_with(|| json!([]))
            .as_array_mut()
        {
            hist.push(Value::Object(h));
        }
        let mut layers: Vec<Descriptor> = base.manifest.layers.clone();
        for l in &mut layers {
            l.media_type = match l.media_type.as_str() {
                spec::MT_DOCKER_LAYER_GZIP => spec::MT_OCI_LAYER_GZIP.to_string(),
                spec::MT_DOCKER_LAYER => spec::MT_OCI_LAYER.to_string(),
                other => other.to_string(),
            };
        }
        layers.push(Descriptor {
            media_type: spec::MT_OCI_LAYER.into(),
            digest: layer.digest,
            size: layer.size,
            platform: None,
            annotations: None,
        });
        self.finish_image(&config, layers, opts.reference.as_deref())
    }

    /// `docker export`: the container's whole filesystem as a tar stream.
    pub fn export(&self, container_id: &str, w: impl Write) -> Result<()> {
        let rootfs = self.mount_rootfs(container_id)?;
        let mut tw = TreeWriter::new(w);
        tw.tree(&rootfs.path, Path::new(""), false)?;
        tw.finish()?
            .flush()
            .ctx("flush export", rootfs.path.clone())
    }

    /// Sizes of the containers' writable layers, for `docker ps -s`.
    pub fn container_size_rw(&self, container_id: &str) -> Result<u64> {
        let meta = self.container_meta(container_id)?;
        let dir = self.containers_dir().join(container_id);
        Ok(match meta.driver {
            Driver::Overlay => crate::ops::dir_size(&dir.join("upper")),
            Driver::Copy => {
                let mut total = 0;
                let mut sizes = BTreeMap::new();
                for c in self.diff(container_id)? {
                    if c.kind != ChangeKind::Deleted {
                        if let Ok(m) = fs::symlink_metadata(
                            dir.join("merged").join(c.path.trim_start_matches('/')),
                        ) {
                            if m.is_file() {
                                sizes.insert(c.path, m.len());
                            }
                        }
                    }
                }
                total += sizes.values().sum::<u64>();
                total
            }
        })
    }
}
