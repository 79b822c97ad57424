//! [`Store`]: the entry point the daemon and CLI use. Owns the directory layout under the root
//! and the locking discipline:
//!
//! ```text
//! <root>/                 mode 0700 (snapshots may hold setuid files and device nodes)
//!   oci-layout            OCI image layout marker
//!   blobs/sha256/<hex>    content store (manifests, configs, layers)
//!   images.json           reference index, rewritten atomically (see `db`)
//!   snapshots/<chain>/    one unpacked layer per chain ID: fs/ + meta.json
//!   containers/<id>/      container rootfs: init/ (mountpoint stubs) upper/ work/ merged/ + meta.json
//!   tmp/                  everything in progress; emptied by gc
//!   gc.lock               flock: shared while adding content, exclusive for gc/remove/prune
//! ```
//!
//! Every public method is synchronous and may be called from several threads at once.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::content::{atomic_write, BlobReader, ContentStore};
use crate::db::{lock, Db, DbFile, FileLock, ImageRecord};
use crate::digest::{chain_ids, Digest};
use crate::error::{json_err, Error, IoContext, Result};
use crate::reference::Reference;
use crate::spec::{ImageConfig, Index, Manifest, ManifestOrIndex, Platform};
use crate::unpack::{unpack_layer, unpack_layer_with, LayerDigests};

/// How container root filesystems are materialised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Driver {
    /// overlayfs mount of the layer snapshots plus a per-container upper dir.
    Overlay,
    /// A plain copy of the layers (whiteouts applied by deleting); for filesystems where
    /// overlayfs is unavailable.
    Copy,
}

/// Options for [`Store::open_with`].
#[derive(Debug, Clone, Default)]
pub struct StoreOptions {
    /// Force a driver; `None` tries overlayfs and falls back to copying.
    pub driver: Option<Driver>,
}

pub(crate) struct Inner {
    pub root: PathBuf,
    pub content: ContentStore,
    pub db: DbFile,
    pub options: StoreOptions,
    /// An overlay mount of a container rootfs has succeeded in this process, so the driver
    /// choice needs no new probe (see [`Store::prepare_rootfs`]).
    pub overlay_works: std::sync::atomic::AtomicBool,
    /// Hands removed container trees to a background thread (see [`Store::remove_rootfs`]).
    pub reaper: std::sync::OnceLock<std::sync::Mutex<std::sync::mpsc::Sender<PathBuf>>>,
}

/// The image store. Cheap to clone; all clones share the same root.
#[derive(Clone)]
pub struct Store {
    pub(crate) inner: Arc<Inner>,
}

/// An image as read from the store.
#[derive(Debug, Clone)]
pub(crate) struct Image {
    pub id: Digest,
    pub record: ImageRecord,
    pub manifest: Manifest,
    pub config: ImageConfig,
    pub config_raw: Vec<u8>,
    pub tags: Vec<String>,
}

impl Image {
    pub(crate) fn chain_ids(&self) -> Vec<Digest> {
        chain_ids(&self.config.rootfs.diff_ids)
    }
    pub(crate) fn size(&self) -> u64 {
        self.record.layer_sizes.iter().sum()
    }
}

/// Layers unpacked (into temp dirs) while an archive was read, by diff ID, waiting for the
/// manifest to say where in a chain they go. Their data has been flushed with `syncfs`.
pub(crate) type PreparedLayers =
    std::sync::Mutex<std::collections::HashMap<Digest, (tempfile::TempDir, LayerDigests)>>;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SnapshotMeta {
    pub chain_id: Digest,
    pub parent: Option<Digest>,
    pub diff_id: Digest,
    pub size: u64,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("root", &self.inner.root)
            .finish()
    }
}

impl Store {
    /// Open (creating if needed) a store rooted at `root`, e.g. `/var/lib/berth/image`.
    pub fn open(root: impl AsRef<Path>) -> Result<Store> {
        Store::open_with(root, StoreOptions::default())
    }

    pub fn open_with(root: impl AsRef<Path>, options: StoreOptions) -> Result<Store> {
        let root = root.as_ref().to_path_buf();
        for d in ["blobs/sha256", "snapshots", "containers", "tmp"] {
            let p = root.join(d);
            fs::create_dir_all(&p).ctx("create directory", &p)?;
        }
        fs::set_permissions(&root, fs::Permissions::from_mode(0o700)).ctx("chmod", &root)?;
        let layout = root.join("oci-layout");
        if !layout.exists() {
            atomic_write(&layout, br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        }
        Ok(Store {
            inner: Arc::new(Inner {
                content: ContentStore::new(&root),
                db: DbFile::new(&root),
                root,
                options,
                overlay_works: std::sync::atomic::AtomicBool::new(false),
                reaper: std::sync::OnceLock::new(),
            }),
        })
    }

    /// The store root.
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    pub(crate) fn content(&self) -> &ContentStore {
        &self.inner.content
    }

    pub(crate) fn tmp(&self) -> PathBuf {
        self.inner.root.join("tmp")
    }

    /// Shared lock: held while adding content so gc cannot delete it half-way.
    pub(crate) fn lock_shared(&self) -> Result<FileLock> {
        lock(&self.inner.root.join("gc.lock"), false)
    }

    /// Exclusive lock: gc, remove, prune.
    pub(crate) fn lock_exclusive(&self) -> Result<FileLock> {
        lock(&self.inner.root.join("gc.lock"), true)
    }

    pub(crate) fn read_db(&self) -> Result<Db> {
        self.inner.db.read()
    }

    // ---------------------------------------------------------------- content API

    /// Store a blob from a stream. With `expected`, the content must hash to it (and have
    /// `expected_size` bytes if given) or nothing is stored. Returns digest and size.
    pub fn put_blob(
        &self,
        reader: impl Read,
        expected: Option<&Digest>,
        expected_size: Option<u64>,
    ) -> Result<(Digest, u64)> {
        let _l = self.lock_shared()?;
        self.content().put_reader(reader, expected, expected_size)
    }

    /// Whether a blob is present.
    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.content().has(digest)
    }

    /// Read a whole blob, verifying its digest (meant for manifests and configs).
    pub fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>> {
        self.content().read(digest)
    }

    /// Verify and unpack a layer from a stream in one pass: the raw bytes are stored as a blob
    /// (checked against `expected` when given) while the uncompressed tar is hashed (diff ID)
    /// and unpacked into the snapshot of chain `parent_chain` + this layer.
    pub fn put_layer(
        &self,
        reader: impl Read,
        expected: Option<&Digest>,
        parent_chain: Option<&Digest>,
    ) -> Result<(LayerDigests, Digest)> {
        let _l = self.lock_shared()?;
        self.put_layer_locked(reader, expected, parent_chain)
    }

    pub(crate) fn put_layer_locked(
        &self,
        reader: impl Read,
        expected: Option<&Digest>,
        parent_chain: Option<&Digest>,
    ) -> Result<(LayerDigests, Digest)> {
        let blob_tmp = self.content().temp_file("blob-")?;
        let snap_tmp = self.snapshot_temp()?;
        let writer = io::BufWriter::with_capacity(1 << 20, blob_tmp);
        let (digests, writer) = unpack_layer(reader, writer, &snap_tmp.path().join("fs"))?;
        let blob_tmp = writer
            .into_inner()
            .map_err(|e| e.into_error())
            .ctx("flush blob in", self.tmp())?;
        self.content()
            .check(&digests.digest, digests.size, expected, None)?;
        let chain = match parent_chain {
            None => digests.diff_id.clone(),
            Some(p) => Digest::of(format!("{p} {}", digests.diff_id).as_bytes()),
        };
        self.content().persist(blob_tmp, &digests.digest)?;
        self.commit_snapshot(snap_tmp, &chain, parent_chain, &digests, false)?;
        Ok((digests, chain))
    }

    /// Store a manifest (or index) and record the image it describes under `reference`
    /// (a tag and/or digest reference). For an index the host platform's manifest is used; its
    /// blobs must already be stored. Layers without a snapshot are unpacked from their blobs.
    /// Returns the image ID.
    pub fn put_manifest(&self, bytes: &[u8], reference: Option<&Reference>) -> Result<Digest> {
        self.put_manifest_for(bytes, reference, &Platform::host())
    }

    /// [`Store::put_manifest`] for `platform`: when `bytes` is an index, the image recorded is
    /// the index entry matching `platform` (which must already be stored) while the RepoDigest
    /// is the index's digest, as Docker records it for `docker pull --platform`.
    pub fn put_manifest_for(
        &self,
        bytes: &[u8],
        reference: Option<&Reference>,
        platform: &Platform,
    ) -> Result<Digest> {
        let _l = self.lock_shared()?;
        let digest = self.content().put_bytes(bytes, None)?;
        let (mdigest, media_type) = self.resolve_platform_manifest(&digest, bytes, platform)?;
        let mut tags = Vec::new();
        let mut repo_digest = None;
        if let Some(r) = reference {
            if let Some(t) = r.tag() {
                tags.push(r.with_tag(t)?);
            }
            repo_digest = Some(r.with_digest(digest.clone()));
        }
        self.register(&mdigest, &media_type, &tags, repo_digest.as_ref(), None)
    }

    /// The digest of the manifest image `name` (reference, ID or ID prefix) was recorded with:
    /// the platform manifest, never an index. This is what `docker push` uploads.
    pub fn manifest_digest(&self, name: &str) -> Result<Digest> {
        let db = self.read_db()?;
        let id = self.resolve(&db, name)?;
        db.images
            .get(&id)
            .map(|r| r.manifest.clone())
            .ok_or_else(|| Error::ImageNotFound(name.to_string()))
    }

    /// Open a stored blob for streaming. The reader hashes what it returns and fails at end of
    /// file if the content does not match `digest`, so a corrupted blob is never passed on as
    /// good; [`BlobReader::size`] is known up front.
    pub fn open_blob(&self, digest: &Digest) -> Result<BlobReader> {
        let file = self.content().open(digest)?;
        let path = self.content().path(digest);
        let size = file.metadata().ctx("stat blob", &path)?.len();
        Ok(BlobReader::new(file, digest.clone(), size, path))
    }

    /// Given a manifest-or-index blob, return the manifest for `platform`.
    pub(crate) fn resolve_platform_manifest(
        &self,
        digest: &Digest,
        bytes: &[u8],
        platform: &Platform,
    ) -> Result<(Digest, String)> {
        match ManifestOrIndex::parse(bytes).map_err(json_err(format!("manifest {digest}")))? {
            ManifestOrIndex::Manifest(m) => Ok((
                digest.clone(),
                m.media_type
                    .clone()
                    .unwrap_or_else(|| crate::spec::MT_OCI_MANIFEST.to_string()),
            )),
            ManifestOrIndex::Index(idx) => {
                let d = pick_platform(&idx, platform)?;
                let inner = self.content().read(&d.digest)?;
                self.resolve_platform_manifest(&d.digest, &inner, platform)
            }
        }
    }

    /// Record an image whose manifest and blobs are stored: make sure its snapshots exist,
    /// then write the index entry and move `tags` to it. Returns the image ID.
    pub(crate) fn register(
        &self,
        manifest_digest: &Digest,
        media_type: &str,
        tags: &[Reference],
        repo_digest: Option<&Reference>,
        prepared: Option<&PreparedLayers>,
    ) -> Result<Digest> {
        let manifest: Manifest = serde_json::from_slice(&self.content().read(manifest_digest)?)
            .map_err(json_err(format!("manifest {manifest_digest}")))?;
        let config_raw = self.content().read(&manifest.config.digest)?;
        let config: ImageConfig = serde_json::from_slice(&config_raw)
            .map_err(json_err(format!("image config {}", manifest.config.digest)))?;
        if config.rootfs.diff_ids.len() != manifest.layers.len() {
            return Err(Error::InvalidManifest(format!(
                "manifest {manifest_digest} has {} layers but its config lists {} diff ids",
                manifest.layers.len(),
                config.rootfs.diff_ids.len()
            )));
        }
        let id = manifest.config.digest.clone();
        let chains = chain_ids(&config.rootfs.diff_ids);
        let sizes = self.ensure_snapshots(&manifest, &config.rootfs.diff_ids, &chains, prepared)?;
        let now = now_rfc3339();
        self.inner.db.update(|db| {
            let rec = db.images.entry(id.clone()).or_insert_with(|| ImageRecord {
                manifest: manifest_digest.clone(),
                manifest_media_type: media_type.to_string(),
                repo_digests: Vec::new(),
                layer_sizes: sizes.clone(),
                last_tag_time: None,
            });
            rec.layer_sizes = sizes;
            if let Some(rd) = repo_digest {
                let s = rd.to_string();
                if !rec.repo_digests.contains(&s) {
                    rec.repo_digests.push(s);
                }
            }
            if !tags.is_empty() {
                rec.last_tag_time = Some(now.clone());
            }
            for t in tags {
                db.tags.insert(t.to_string(), id.clone());
            }
            Ok(())
        })?;
        Ok(id)
    }

    // ---------------------------------------------------------------- snapshots

    pub(crate) fn snapshot_dir(&self, chain: &Digest) -> PathBuf {
        self.inner.root.join("snapshots").join(chain.hex())
    }

    pub(crate) fn snapshot_temp(&self) -> Result<tempfile::TempDir> {
        let t = tempfile::Builder::new()
            .prefix("snap-")
            .tempdir_in(self.tmp())
            .ctx("create temp dir in", self.tmp())?;
        let fs_dir = t.path().join("fs");
        fs::create_dir(&fs_dir).ctx("create directory", &fs_dir)?;
        fs::set_permissions(&fs_dir, fs::Permissions::from_mode(0o755)).ctx("chmod", &fs_dir)?;
        Ok(t)
    }

    pub(crate) fn snapshot_meta(&self, chain: &Digest) -> Result<Option<SnapshotMeta>> {
        let p = self.snapshot_dir(chain).join("meta.json");
        match fs::read(&p) {
            Ok(b) => Ok(Some(
                serde_json::from_slice(&b).map_err(json_err(p.display().to_string()))?,
            )),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).ctx("read", p),
        }
    }

    /// Make a finished temp snapshot visible: meta.json, syncfs, rename. If another writer got
    /// there first, ours is discarded (both have identical content by construction).
    pub(crate) fn commit_snapshot(
        &self,
        tmp: tempfile::TempDir,
        chain: &Digest,
        parent: Option<&Digest>,
        digests: &LayerDigests,
        data_synced: bool,
    ) -> Result<SnapshotMeta> {
        let meta = SnapshotMeta {
            chain_id: chain.clone(),
            parent: parent.cloned(),
            diff_id: digests.diff_id.clone(),
            size: digests.content_size,
        };
        let bytes = serde_json::to_vec(&meta).map_err(json_err("snapshot meta"))?;
        let mp = tmp.path().join("meta.json");
        if data_synced {
            // The files were flushed by the caller's syncfs; only meta.json is new.
            let mut f = fs::File::create(&mp).ctx("create", &mp)?;
            io::Write::write_all(&mut f, &bytes).ctx("write", &mp)?;
            f.sync_all().ctx("fsync", &mp)?;
        } else {
            fs::write(&mp, bytes).ctx("write", &mp)?;
            let fd =
                std::os::fd::OwnedFd::from(fs::File::open(tmp.path()).ctx("open", tmp.path())?);
            crate::sys::syncfs(&fd).ctx("syncfs", tmp.path())?;
        }
        let dest = self.snapshot_dir(chain);
        let tmp_path = tmp.keep();
        match fs::rename(&tmp_path, &dest) {
            Ok(()) => {}
            Err(e) if dest.exists() => {
                tracing::debug!(chain = %chain, error = %e, "snapshot already present");
                fs::remove_dir_all(&tmp_path).ctx("remove", &tmp_path)?;
            }
            Err(e) => {
                let _ = fs::remove_dir_all(&tmp_path);
                return Err(e).ctx("rename snapshot into", dest);
            }
        }
        crate::content::sync_dir(&self.inner.root.join("snapshots"))?;
        Ok(meta)
    }

    /// Make sure every layer of an image has its snapshot; layers are independent directories,
    /// so missing ones are unpacked in parallel. Returns each layer's size, bottom first.
    pub(crate) fn ensure_snapshots(
        &self,
        manifest: &Manifest,
        diff_ids: &[Digest],
        chains: &[Digest],
        prepared: Option<&PreparedLayers>,
    ) -> Result<Vec<u64>> {
        let n = manifest.layers.len();
        // Snapshots that exist are only read (every container create comes here): no threads.
        let mut results: Vec<Option<Result<SnapshotMeta>>> = Vec::with_capacity(n);
        for chain in &chains[..n] {
            results.push(self.snapshot_meta(chain)?.map(Ok));
        }
        let missing: Vec<usize> = (0..n).filter(|&i| results[i].is_none()).collect();
        let workers = std::thread::available_parallelism()
            .map_or(1, |p| p.get())
            .min(missing.len());
        let next = std::sync::atomic::AtomicUsize::new(0);
        let results = std::sync::Mutex::new(results);
        std::thread::scope(|s| {
            for _ in 0..workers {
                s.spawn(|| loop {
                    let k = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(&i) = missing.get(k) else {
                        break;
                    };
                    let parent = if i == 0 { None } else { Some(&chains[i - 1]) };
                    let r = self.ensure_snapshot(
                        &chains[i],
                        parent,
                        &manifest.layers[i].digest,
                        &diff_ids[i],
                        prepared,
                    );
                    let failed = r.is_err();
                    if let Ok(mut v) = results.lock() {
                        v[i] = Some(r);
                    }
                    if failed {
                        // Stop handing out work; the first error is reported.
                        next.store(missing.len(), std::sync::atomic::Ordering::Relaxed);
                    }
                });
            }
        });
        let results = results.into_inner().unwrap_or_else(|p| p.into_inner());
        let mut sizes = Vec::with_capacity(n);
        for (i, r) in results.into_iter().enumerate() {
            match r {
                Some(r) => sizes.push(r?.size),
                None => {
                    return Err(Error::InvalidLayer(format!(
                        "layer {} was not unpacked because an earlier one failed",
                        manifest.layers[i].digest
                    )))
                }
            }
        }
        Ok(sizes)
    }

    /// Return the snapshot for `chain`, unpacking `blob` if it does not exist yet.
    pub(crate) fn ensure_snapshot(
        &self,
        chain: &Digest,
        parent: Option<&Digest>,
        blob: &Digest,
        diff_id: &Digest,
        prepared: Option<&PreparedLayers>,
    ) -> Result<SnapshotMeta> {
        if let Some(m) = self.snapshot_meta(chain)? {
            return Ok(m);
        }
        // Unpacked already while the archive streamed in: just give it its chain ID.
        let ready = prepared.and_then(|p| p.lock().ok()?.remove(diff_id));
        if let Some((tmp, digests)) = ready {
            if &digests.digest == blob {
                return self.commit_snapshot(tmp, chain, parent, &digests, true);
            }
        }
        let file = self.content().open(blob)?;
        let tmp = self.snapshot_temp()?;
        // For an uncompressed blob the diff ID check below covers the blob digest too.
        let (digests, _) = unpack_layer_with(
            io::BufReader::with_capacity(1 << 20, file),
            io::sink(),
            &tmp.path().join("fs"),
            blob != diff_id,
        )?;
        if &digests.digest != blob {
            return Err(Error::DigestMismatch {
                what: "stored layer blob".into(),
                expected: blob.to_string(),
                actual: digests.digest.to_string(),
            });
        }
        if &digests.diff_id != diff_id {
            return Err(Error::DigestMismatch {
                what: format!("diff id of layer {blob}"),
                expected: diff_id.to_string(),
                actual: digests.diff_id.to_string(),
            });
        }
        self.commit_snapshot(tmp, chain, parent, &digests, false)
    }

    // ---------------------------------------------------------------- lookup

    /// Resolve a reference, full image ID, or ID prefix as Docker does.
    pub(crate) fn resolve(&self, db: &Db, s: &str) -> Result<Digest> {
        if let Ok(d) = s.parse::<Digest>() {
            if db.images.contains_key(&d) {
                return Ok(d);
            }
            return Err(Error::ImageNotFound(s.to_string()));
        }
        if let Ok(r) = Reference::parse(s) {
            if let Some(d) = r.digest() {
                let full = r.with_digest(d.clone()).to_string();
                for (id, rec) in &db.images {
                    if rec.repo_digests.contains(&full) {
                        return Ok(id.clone());
                    }
                }
                return Err(Error::ImageNotFound(s.to_string()));
            }
            let tagged = Reference::parse_tagged(s)?;
            if let Some(id) = db.tags.get(&tagged.to_string()) {
                return Ok(id.clone());
            }
        }
        let prefix = s.strip_prefix("sha256:").unwrap_or(s);
        if !prefix.is_empty() && prefix.len() <= 64 && prefix.bytes().all(|b| b.is_ascii_hexdigit())
        {
            let matches: Vec<&Digest> = db
                .images
                .keys()
                .filter(|d| d.hex().starts_with(prefix))
                .collect();
            match matches.len() {
                1 => return Ok(matches[0].clone()),
                0 => {}
                _ => return Err(Error::Ambiguous(s.to_string())),
            }
        }
        Err(Error::ImageNotFound(s.to_string()))
    }

    pub(crate) fn load_image(&self, db: &Db, id: &Digest) -> Result<Image> {
        let record = db
            .images
            .get(id)
            .cloned()
            .ok_or_else(|| Error::ImageNotFound(id.to_string()))?;
        let manifest: Manifest = serde_json::from_slice(&self.content().read(&record.manifest)?)
            .map_err(json_err(format!("manifest {}", record.manifest)))?;
        let config_raw = self.content().read(id)?;
        let config: ImageConfig =
            serde_json::from_slice(&config_raw).map_err(json_err(format!("image config {id}")))?;
        Ok(Image {
            id: id.clone(),
            record,
            manifest,
            config,
            config_raw,
            tags: db.tags_of(id),
        })
    }

    pub(crate) fn get(&self, name: &str) -> Result<Image> {
        let db = self.read_db()?;
        let id = self.resolve(&db, name)?;
        self.load_image(&db, &id)
    }

    /// Resolve a reference, ID or ID prefix to the full image ID.
    pub fn image_id(&self, name: &str) -> Result<Digest> {
        let db = self.read_db()?;
        self.resolve(&db, name)
    }

    /// The image's raw config JSON (what the runtime reads Cmd/Env/… from).
    pub fn image_config(&self, name: &str) -> Result<serde_json::Value> {
        let img = self.get(name)?;
        serde_json::from_slice(&img.config_raw)
            .map_err(json_err(format!("image config {}", img.id)))
    }

    /// Point `target` (e.g. `myapp:1`) at the image `source` resolves to.
    pub fn tag(&self, source: &str, target: &str) -> Result<()> {
        let r = Reference::parse_tagged(target)?;
        if r.digest().is_some() {
            return Err(Error::InvalidReference {
                reference: target.into(),
                reason: "cannot tag with a digest".into(),
            });
        }
        let now = now_rfc3339();
        self.inner.db.update(|db| {
            let id = self.resolve(db, source)?;
            db.tags.insert(r.to_string(), id.clone());
            if let Some(rec) = db.images.get_mut(&id) {
                rec.last_tag_time = Some(now);
            }
            Ok(())
        })
    }

    // ---------------------------------------------------------------- containers in use

    pub(crate) fn containers_dir(&self) -> PathBuf {
        self.inner.root.join("containers")
    }

    /// container id → image id, from the per-container records.
    pub(crate) fn container_images(
        &self,
    ) -> Result<BTreeMap<String, crate::rootfs::ContainerMeta>> {
        let mut out = BTreeMap::new();
        let dir = self.containers_dir();
        for e in fs::read_dir(&dir).ctx("list", &dir)? {
            let e = e.ctx("list", &dir)?;
            let p = e.path().join("meta.json");
            if let Ok(b) = fs::read(&p) {
                if let Ok(m) = serde_json::from_slice::<crate::rootfs::ContainerMeta>(&b) {
                    out.insert(e.file_name().to_string_lossy().into_owned(), m);
                }
            }
        }
        Ok(out)
    }

    pub(crate) fn live_sets(&self, db: &Db) -> Result<(BTreeSet<Digest>, BTreeSet<Digest>)> {
        let mut blobs = BTreeSet::new();
        let mut snaps = BTreeSet::new();
        for (id, rec) in &db.images {
            blobs.insert(id.clone());
            blobs.insert(rec.manifest.clone());
            if let Ok(img) = self.load_image(db, id) {
                for l in &img.manifest.layers {
                    blobs.insert(l.digest.clone());
                }
                snaps.extend(img.chain_ids());
            }
            for rd in &rec.repo_digests {
                // Keep the index a repo digest names (it may be a manifest list).
                if let Some(d) = rd
                    .rsplit_once('@')
                    .and_then(|(_, d)| d.parse::<Digest>().ok())
                {
                    blobs.insert(d);
                }
            }
        }
        for m in self.container_images()?.values() {
            snaps.extend(m.chain_ids.iter().cloned());
        }
        Ok((blobs, snaps))
    }
}

/// Choose `platform`'s manifest from an index; a lone entry without a platform is taken too.
pub(crate) fn pick_platform<'a>(
    idx: &'a Index,
    platform: &Platform,
) -> Result<&'a crate::spec::Descriptor> {
    idx.manifests
        .iter()
        .find(|d| d.platform.as_ref().is_some_and(|p| platform.matches(p)))
        .or_else(|| {
            if idx.manifests.len() == 1 && idx.manifests[0].platform.is_none() {
                idx.manifests.first()
            } else {
                None
            }
        })
        .ok_or_else(|| {
            let mut s = format!("{}/{}", platform.os, platform.architecture);
            if let Some(v) = &platform.variant {
                s.push('/');
                s.push_str(v);
            }
            Error::NoMatchingPlatform(s)
        })
}

pub(crate) fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}
