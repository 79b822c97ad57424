//! `load` and `save` of image archives: docker-archive (`manifest.json`, `repositories`, config
//! and layer tars — what `docker save` and `skopeo copy docker-archive:` write, both the legacy
//! `<id>/layer.tar` and the docker 25+ `blobs/sha256/` spelling) and OCI image layout archives
//! (`oci-layout`, `index.json`, `blobs/`). Docker 25+ archives carry both; `manifest.json` wins
//! because it has the tags.
//!
//! Loading is one streaming pass over the archive. Large members that look like layers are
//! written to a temp blob and unpacked into a temp snapshot at the same time (raw and
//! uncompressed bytes hashed on the fly); other large members go to temp blobs, small ones stay
//! in memory until the index files say what they are. One `syncfs` then makes all of it durable
//! before the blobs are renamed into the store; registration checks each layer against the
//! config's diff IDs, renames its snapshot to its chain ID (unpacking from the blob any layer
//! that was not prepared) and records the image last. A crash at any point leaves only
//! unreferenced blobs, snapshots and temp files for gc.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{self, Read, Seek, Write};
use std::path::{Path, PathBuf};

use tar::EntryType;

use crate::digest::Digest;
use crate::error::{json_err, Error, IoContext, Result};
use crate::reference::Reference;
use crate::spec::{self, ArchiveManifestEntry, Compression, Descriptor, Index, Manifest};
use crate::store::{Image, PreparedLayers, Store};
use crate::unpack::{clean_path, decompressed, for_each_entry, unpack_layer_with};

/// Files up to this size are held in memory while reading an archive...
const IN_MEMORY_MAX: u64 = 1 << 20;
/// ...up to this total; the rest goes to the content store (and gc if unused).
const IN_MEMORY_TOTAL_MAX: u64 = 64 << 20;

/// Archive format for [`Store::save`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveFormat {
    /// docker-archive: what `docker save` writes (`manifest.json` + layer tars).
    Docker,
    /// OCI image layout in a tar (`oci-layout`, `index.json`, `blobs/`).
    Oci,
}

/// One image read by [`Store::load`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedImage {
    /// `sha256:<config digest>`.
    pub id: Digest,
    /// Familiar tags (`busybox:latest`); empty for an untagged image.
    pub tags: Vec<String>,
}

enum Member {
    Bytes(Vec<u8>),
    Blob(Digest),
}

struct ArchiveFiles {
    files: HashMap<PathBuf, Member>,
    links: HashMap<PathBuf, PathBuf>,
    prepared: PreparedLayers,
    /// Verified blobs waiting for one `syncfs` before they are renamed into the store.
    pending: Vec<(tempfile::NamedTempFile, Digest)>,
}

fn digest_from_blob_path(p: &Path) -> Option<Digest> {
    let s = p.to_str()?;
    let hex = s.strip_prefix("blobs/sha256/")?;
    Digest::from_hex(hex).ok()
}

impl ArchiveFiles {
    fn resolve<'a>(&'a self, p: &Path) -> Result<(&'a Member, PathBuf)> {
        let mut cur = p.to_path_buf();
        for _ in 0..16 {
            if let Some(m) = self.files.get(&cur) {
                return Ok((m, cur));
            }
            match self.links.get(&cur) {
                Some(t) => cur = t.clone(),
                None => break,
            }
        }
        Err(Error::InvalidArchive(format!(
            "missing file {}",
            p.display()
        )))
    }

    fn bytes(&self, store: &Store, p: &str) -> Result<Vec<u8>> {
        let path = clean_path(p.as_bytes())?.unwrap_or_default();
        match self.resolve(&path)? {
            (Member::Bytes(b), real) => {
                if let Some(d) = digest_from_blob_path(&real) {
                    store
                        .content()
                        .check(&Digest::of(b), b.len() as u64, Some(&d), None)?;
                }
                Ok(b.clone())
            }
            (Member::Blob(d), _) => store.content().read(d),
        }
    }

    /// Make sure the file is in the content store; return its digest.
    fn blob(&self, store: &Store, p: &str) -> Result<Digest> {
        let path = clean_path(p.as_bytes())?.unwrap_or_default();
        match self.resolve(&path)? {
            (Member::Bytes(b), real) => store
                .content()
                .put_bytes(b, digest_from_blob_path(&real).as_ref()),
            (Member::Blob(d), _) => Ok(d.clone()),
        }
    }
}

fn blob_compression(store: &Store, d: &Digest) -> Result<Compression> {
    let mut f = store.content().open(d)?;
    let mut head = [0u8; 4];
    let n = read_up_to(&mut f, &mut head).ctx("read blob", store.content().path(d))?;
    Ok(Compression::detect(&head[..n]))
}

fn read_up_to(r: &mut (impl Read + ?Sized), buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

impl Store {
    /// Load a docker-archive or OCI archive (optionally gzip/zstd compressed) from a stream.
    pub fn load(&self, reader: impl Read) -> Result<Vec<LoadedImage>> {
        let _l = self.lock_shared()?;
        let mut in_memory = 0u64;
        let mut files = ArchiveFiles {
            files: HashMap::new(),
            links: HashMap::new(),
            prepared: PreparedLayers::default(),
            pending: Vec::new(),
        };
        let arch_err = |e: Error| match e {
            Error::InvalidLayer(m) => Error::InvalidArchive(m),
            other => other,
        };
        for_each_entry(decompressed(reader)?, |kind, meta, data| {
            let Some(path) = clean_path(&meta.path)? else {
                return Ok(());
            };
            match kind {
                EntryType::Regular | EntryType::Continuous => {
                    let m = if meta.size <= IN_MEMORY_MAX
                        && in_memory + meta.size <= IN_MEMORY_TOTAL_MAX
                    {
                        in_memory += meta.size;
                        let mut b = Vec::with_capacity(meta.size as usize);
                        data.read_to_end(&mut b).map_err(|e| {
                            Error::InvalidArchive(format!("read {}: {e}", path.display()))
                        })?;
                        Member::Bytes(b)
                    } else {
                        let expected = digest_from_blob_path(&path);
                        Member::Blob(self.store_member(
                            data,
                            expected.as_ref(),
                            meta.size,
                            &files.prepared,
                            &mut files.pending,
                        )?)
                    };
                    files.files.insert(path, m);
                }
                EntryType::Symlink => {
                    let target = meta.link.clone().unwrap_or_default();
                    let base = path.parent().unwrap_or(Path::new("")).to_path_buf();
                    let joined = normalize(
                        &base.join(std::ffi::OsStr::new(&*String::from_utf8_lossy(&target))),
                    );
                    files.links.insert(path, joined);
                }
                EntryType::Link => {
                    let target = meta.link.clone().unwrap_or_default();
                    if let Some(t) = clean_path(&target)? {
                        files.links.insert(path, t);
                    }
                }
                _ => {}
            }
            Ok(())
        })
        .map_err(arch_err)?;

        // One flush for everything the pass wrote (blobs and unpacked layers), then the blobs
        // become visible; snapshots are renamed into place when registered.
        if !files.pending.is_empty() {
            let tmp = self.tmp();
            let fd = std::os::fd::OwnedFd::from(std::fs::File::open(&tmp).ctx("open", &tmp)?);
            crate::sys::syncfs(&fd).ctx("syncfs", &tmp)?;
            for (t, d) in std::mem::take(&mut files.pending) {
                self.content().persist_synced(t, &d)?;
            }
            self.content().sync()?;
        }
        if files.files.contains_key(Path::new("manifest.json")) {
            self.load_docker(&files)
        } else if files.files.contains_key(Path::new("index.json")) {
            self.load_oci(&files)
        } else {
            Err(Error::InvalidArchive(
                "neither manifest.json nor index.json found".into(),
            ))
        }
    }

    /// Store a large archive member. One that looks like a layer (tar, gzip or zstd) is
    /// unpacked in the same pass — hashed raw and uncompressed on the fly — into a temp
    /// snapshot that registration later renames into place.
    fn store_member(
        &self,
        data: &mut dyn Read,
        expected: Option<&Digest>,
        size: u64,
        prepared: &PreparedLayers,
        pending: &mut Vec<(tempfile::NamedTempFile, Digest)>,
    ) -> Result<Digest> {
        let mut head = vec![0u8; 512];
        let n = read_up_to(data, &mut head)
            .map_err(|e| Error::InvalidArchive(format!("read archive: {e}")))?;
        head.truncate(n);
        let compression = Compression::detect(&head);
        let is_tar = head.len() >= 262 && &head[257..262] == b"ustar";
        let reader = io::Cursor::new(head).chain(data);
        if compression == Compression::None && !is_tar {
            let (tmp, digest, _) = self.content().write_temp(reader, expected, Some(size))?;
            pending.push((tmp, digest.clone()));
            return Ok(digest);
        }
        let blob_tmp = self.content().temp_file("blob-")?;
        let snap_tmp = self.snapshot_temp()?;
        let writer = io::BufWriter::with_capacity(1 << 20, blob_tmp);
        // An uncompressed layer's digest is its diff ID: hash it once.
        let (digests, writer) = unpack_layer_with(
            reader,
            writer,
            &snap_tmp.path().join("fs"),
            compression != Compression::None,
        )?;
        let blob_tmp = writer
            .into_inner()
            .map_err(|e| e.into_error())
            .ctx("flush blob in", self.tmp())?;
        self.content()
            .check(&digests.digest, digests.size, expected, Some(size))?;
        let digest = digests.digest.clone();
        pending.push((blob_tmp, digest.clone()));
        if let Ok(mut p) = prepared.lock() {
            p.insert(digests.diff_id.clone(), (snap_tmp, digests));
        }
        Ok(digest)
    }

    fn load_docker(&self, files: &ArchiveFiles) -> Result<Vec<LoadedImage>> {
        let entries: Vec<ArchiveManifestEntry> =
            serde_json::from_slice(&files.bytes(self, "manifest.json")?)
                .map_err(json_err("manifest.json"))?;
        let mut out = Vec::new();
        for e in entries {
            let config_bytes = files.bytes(self, &e.config)?;
            let config_digest = self.content().put_bytes(&config_bytes, None)?;
            let mut layers = Vec::new();
            for l in &e.layers {
                let d = files.blob(self, l)?;
                let size = self.content().size(&d)?;
                let media_type = match blob_compression(self, &d)? {
                    Compression::None => spec::MT_DOCKER_LAYER,
                    Compression::Gzip => spec::MT_DOCKER_LAYER_GZIP,
                    Compression::Zstd => spec::MT_OCI_LAYER_ZSTD,
                };
                layers.push(Descriptor {
                    media_type: media_type.into(),
                    digest: d,
                    size,
                    platform: None,
                    annotations: None,
                });
            }
            let manifest = Manifest {
                schema_version: 2,
                media_type: Some(spec::MT_DOCKER_MANIFEST.into()),
                config: Descriptor {
                    media_type: spec::MT_DOCKER_CONFIG.into(),
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
            let tags = e
                .repo_tags
                .unwrap_or_default()
                .iter()
                .map(|t| Reference::parse_tagged(t))
                .collect::<Result<Vec<_>>>()?;
            let id = self.register(
                &mdigest,
                spec::MT_DOCKER_MANIFEST,
                &tags,
                None,
                Some(&files.prepared),
            )?;
            out.push(LoadedImage {
                id,
                tags: tags.iter().map(Reference::familiar).collect(),
            });
        }
        Ok(out)
    }

    fn load_oci(&self, files: &ArchiveFiles) -> Result<Vec<LoadedImage>> {
        for (p, m) in &files.files {
            if let (Some(d), Member::Bytes(b)) = (digest_from_blob_path(p), m) {
                self.content().put_bytes(b, Some(&d))?;
            }
        }
        let index: Index = serde_json::from_slice(&files.bytes(self, "index.json")?)
            .map_err(json_err("index.json"))?;
        let mut out = Vec::new();
        for d in &index.manifests {
            let bytes = self.content().read(&d.digest)?;
            let (mdigest, media_type) =
                self.resolve_platform_manifest(&d.digest, &bytes, &spec::Platform::host())?;
            let annotations = d.annotations.clone().unwrap_or_default();
            let name = annotations.get(spec::ANNOTATION_IMAGE_NAME).or_else(|| {
                annotations
                    .get(spec::ANNOTATION_REF_NAME)
                    .filter(|n| n.contains(['/', ':']))
            });
            let tags: Vec<Reference> = match name.map(|n| Reference::parse_tagged(n)) {
                Some(Ok(r)) if r.tag().is_some() => vec![r.with_tag(r.tag().unwrap_or("latest"))?],
                Some(Err(e)) => return Err(e),
                _ => Vec::new(),
            };
            let id = self.register(&mdigest, &media_type, &tags, None, Some(&files.prepared))?;
            out.push(LoadedImage {
                id,
                tags: tags.iter().map(Reference::familiar).collect(),
            });
        }
        Ok(out)
    }

    /// Write the named images (references, IDs or prefixes) as one archive.
    pub fn save(&self, names: &[&str], format: ArchiveFormat, writer: impl Write) -> Result<()> {
        // Keep gc from collecting blobs while they are being written out.
        let _l = self.lock_shared()?;
        let db = self.read_db()?;
        let mut images: Vec<(Image, Vec<Reference>)> = Vec::new();
        for n in names {
            let id = self.resolve(&db, n)?;
            let tag = Reference::parse_tagged(n)
                .ok()
                .filter(|r| db.tags.get(&r.to_string()) == Some(&id));
            match images.iter_mut().find(|(i, _)| i.id == id) {
                Some((_, tags)) => tags.extend(tag),
                None => images.push((self.load_image(&db, &id)?, tag.into_iter().collect())),
            }
        }
        let mut b = tar::Builder::new(writer);
        match format {
            ArchiveFormat::Docker => self.save_docker(&mut b, &images)?,
            ArchiveFormat::Oci => self.save_oci(&mut b, &images)?,
        }
        b.into_inner()
            .and_then(|mut w| w.flush())
            .ctx("write archive", self.root())?;
        Ok(())
    }

    fn save_docker<W: Write>(
        &self,
        b: &mut tar::Builder<W>,
        images: &[(Image, Vec<Reference>)],
    ) -> Result<()> {
        let mut written = BTreeSet::new();
        let mut manifest = Vec::new();
        let mut repositories: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        for (img, tags) in images {
            let cfg_path = format!("blobs/sha256/{}", img.id.hex());
            if written.insert(cfg_path.clone()) {
                append_bytes(b, &cfg_path, &img.config_raw)?;
            }
            let mut layers = Vec::new();
            for (l, diff_id) in img.manifest.layers.iter().zip(&img.config.rootfs.diff_ids) {
                let path = format!("blobs/sha256/{}", diff_id.hex());
                if written.insert(path.clone()) {
                    self.append_uncompressed_layer(b, &path, &l.digest, diff_id)?;
                }
                layers.push(path);
            }
            for t in tags {
                repositories
                    .entry(t.familiar_name())
                    .or_default()
                    .insert(t.tag().unwrap_or("latest").into(), img.id.hex().into());
            }
            manifest.push(ArchiveManifestEntry {
                config: cfg_path,
                repo_tags: Some(tags.iter().map(Reference::familiar).collect()),
                layers,
            });
        }
        append_bytes(
            b,
            "manifest.json",
            &serde_json::to_vec(&manifest).map_err(json_err("manifest.json"))?,
        )?;
        append_bytes(
            b,
            "repositories",
            &serde_json::to_vec(&repositories).map_err(json_err("repositories"))?,
        )?;
        Ok(())
    }

    /// docker-archive layers are uncompressed tars named by diff ID.
    fn append_uncompressed_layer<W: Write>(
        &self,
        b: &mut tar::Builder<W>,
        path: &str,
        blob: &Digest,
        diff_id: &Digest,
    ) -> Result<()> {
        if blob == diff_id {
            let mut f = self.content().open(blob)?;
            return append_file(b, path, &mut f, self.content().size(blob)?);
        }
        let mut tmp = self.content().temp_file("layer-")?;
        let f = self.content().open(blob)?;
        let mut r = crate::digest::HashingReader::new(decompressed(io::BufReader::new(f))?);
        io::copy(&mut r, tmp.as_file_mut()).ctx("decompress layer to", tmp.path().to_path_buf())?;
        let (d, size, _) = r
            .finish()
            .ctx("decompress layer", self.content().path(blob))?;
        if &d != diff_id {
            return Err(Error::DigestMismatch {
                what: format!("diff id of layer {blob}"),
                expected: diff_id.to_string(),
                actual: d.to_string(),
            });
        }
        tmp.as_file_mut()
            .rewind()
            .ctx("rewind", tmp.path().to_path_buf())?;
        append_file(b, path, tmp.as_file_mut(), size)
    }

    fn save_oci<W: Write>(
        &self,
        b: &mut tar::Builder<W>,
        images: &[(Image, Vec<Reference>)],
    ) -> Result<()> {
        let mut written = BTreeSet::new();
        let mut index = Index {
            schema_version: 2,
            media_type: Some(spec::MT_OCI_INDEX.into()),
            manifests: Vec::new(),
            annotations: None,
        };
        append_bytes(b, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        for (img, tags) in images {
            let (mbytes, mt) = oci_manifest_bytes(self, img)?;
            let mdigest = Digest::of(&mbytes);
            let mut blobs: Vec<(Digest, Option<Vec<u8>>)> = vec![
                (mdigest.clone(), Some(mbytes.clone())),
                (img.id.clone(), Some(img.config_raw.clone())),
            ];
            blobs.extend(img.manifest.layers.iter().map(|l| (l.digest.clone(), None)));
            for (d, bytes) in blobs {
                let path = format!("blobs/sha256/{}", d.hex());
                if !written.insert(path.clone()) {
                    continue;
                }
                match bytes {
                    Some(bytes) => append_bytes(b, &path, &bytes)?,
                    None => append_file(
                        b,
                        &path,
                        &mut self.content().open(&d)?,
                        self.content().size(&d)?,
                    )?,
                }
            }
            let descs: Vec<Option<&Reference>> = if tags.is_empty() {
                vec![None]
            } else {
                tags.iter().map(Some).collect()
            };
            for t in descs {
                let annotations = t.map(|t| {
                    BTreeMap::from([
                        (spec::ANNOTATION_IMAGE_NAME.to_string(), t.to_string()),
                        (
                            spec::ANNOTATION_REF_NAME.to_string(),
                            t.tag().unwrap_or("latest").to_string(),
                        ),
                    ])
                });
                index.manifests.push(Descriptor {
                    media_type: mt.clone(),
                    digest: mdigest.clone(),
                    size: mbytes.len() as u64,
                    platform: None,
                    annotations,
                });
            }
        }
        let bytes = serde_json::to_vec(&index).map_err(json_err("index.json"))?;
        append_bytes(b, "index.json", &bytes)
    }
}

/// The stored manifest if it is OCI already, else the same content with OCI media types.
fn oci_manifest_bytes(store: &Store, img: &Image) -> Result<(Vec<u8>, String)> {
    if img.record.manifest_media_type == spec::MT_OCI_MANIFEST {
        return Ok((
            store.content().read(&img.record.manifest)?,
            spec::MT_OCI_MANIFEST.into(),
        ));
    }
    let mut m = img.manifest.clone();
    m.media_type = Some(spec::MT_OCI_MANIFEST.into());
    m.config.media_type = spec::MT_OCI_CONFIG.into();
    for l in &mut m.layers {
        l.media_type = match l.media_type.as_str() {
            spec::MT_DOCKER_LAYER_GZIP | spec::MT_OCI_LAYER_GZIP => spec::MT_OCI_LAYER_GZIP,
            spec::MT_OCI_LAYER_ZSTD => spec::MT_OCI_LAYER_ZSTD,
            _ => spec::MT_OCI_LAYER,
        }
        .into();
    }
    Ok((
        serde_json::to_vec(&m).map_err(json_err("manifest"))?,
        spec::MT_OCI_MANIFEST.into(),
    ))
}

fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::Normal(n) => out.push(n),
            _ => {}
        }
    }
    out
}

fn header(size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_size(size);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h.set_entry_type(EntryType::Regular);
    h
}

pub(crate) fn append_bytes<W: Write>(
    b: &mut tar::Builder<W>,
    path: &str,
    bytes: &[u8],
) -> Result<()> {
    b.append_data(&mut header(bytes.len() as u64), path, bytes)
        .ctx("write archive entry", path)
}

fn append_file<W: Write>(
    b: &mut tar::Builder<W>,
    path: &str,
    f: &mut std::fs::File,
    size: u64,
) -> Result<()> {
    b.append_data(&mut header(size), path, f.take(size))
        .ctx("write archive entry", path)
}
