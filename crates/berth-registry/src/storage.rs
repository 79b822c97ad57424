//! The filesystem store behind the registry.
//!
//! Layout under the root directory:
//!
//! ```text
//! blobs/<alg>/<hex>                                   content, manifests included
//! repositories/<name>/_layers/<alg>/<hex>             blob visible in <name> (empty file)
//! repositories/<name>/_manifests/revisions/<alg>/<hex> manifest in <name> (JSON metadata)
//! repositories/<name>/_manifests/tags/<tag>           tag -> digest (text)
//! repositories/<name>/_referrers/<alg>/<hex>/<alg>-<hex>  descriptor of a manifest whose
//!                                                     subject is <alg>:<hex>
//! uploads/<id>/{repo,data}                            an upload session
//! ```
//!
//! Blobs are shared, but a repository only sees the blobs it links, as the spec requires.
//! Every file is written to a temporary name, fsynced, then renamed into place, so readers
//! never see partial content. Repository components cannot start with `_` (see
//! [`crate::name`]), so the `_layers`/`_manifests`/`_referrers` folders never collide with a
//! nested repository.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::digest::{Algorithm, Digest};
use crate::name;

/// Largest manifest accepted on push.
pub const MAX_MANIFEST_SIZE: usize = 4 * 1024 * 1024;

/// Media type used when a manifest names none and the client sent no Content-Type.
const DEFAULT_MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";

/// Errors of the store; mapped onto the wire's error codes once, in [`crate::server`].
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("blob {0} is unknown to repository {1}")]
    BlobUnknown(Digest, String),
    #[error("manifest {1} is unknown to repository {0}")]
    ManifestUnknown(String, String),
    #[error("repository {0} is unknown")]
    NameUnknown(String),
    #[error("upload {0} is unknown")]
    UploadUnknown(String),
    #[error("upload {id} holds {size} bytes, chunk starts at {start}")]
    RangeInvalid { id: String, size: u64, start: u64 },
    #[error("content digest is {computed}, not the declared {declared}")]
    DigestMismatch { declared: Digest, computed: Digest },
    #[error("manifest is invalid: {0}")]
    ManifestInvalid(String),
    #[error("manifest of {0} bytes exceeds the limit of {MAX_MANIFEST_SIZE}")]
    ManifestTooLarge(usize),
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

type Result<T> = std::result::Result<T, StoreError>;

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// A manifest reference in a URL: a tag or a digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reference {
    Tag(String),
    Digest(Digest),
}

impl std::fmt::Display for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reference::Tag(t) => f.write_str(t),
            Reference::Digest(d) => d.fmt(f),
        }
    }
}

/// An OCI content descriptor, as far as the registry reads or writes one.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<serde_json::Map<String, serde_json::Value>>,
}

/// The fields of an image manifest or index the registry cares about.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ManifestDoc {
    #[serde(default)]
    pub schema_version: Option<u64>,
    #[serde(default)]
    pub media_type: Option<String>,
    #[serde(default)]
    pub artifact_type: Option<String>,
    #[serde(default)]
    pub config: Option<RefDescriptor>,
    #[serde(default)]
    pub layers: Vec<RefDescriptor>,
    #[serde(default)]
    pub manifests: Vec<RefDescriptor>,
    #[serde(default)]
    pub subject: Option<RefDescriptor>,
    #[serde(default)]
    pub annotations: Option<serde_json::Map<String, serde_json::Value>>,
}

/// A descriptor inside a manifest; only the media type and digest are needed.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RefDescriptor {
    #[serde(default)]
    pub media_type: Option<String>,
    pub digest: Digest,
}

/// What a revision link records about a manifest.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Revision {
    media_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    subject: Option<Digest>,
}

/// A manifest read back from the store.
pub struct Manifest {
    pub digest: Digest,
    pub media_type: String,
    pub body: Vec<u8>,
}

/// Outcome of a manifest push.
pub struct PutManifest {
    pub digest: Digest,
    pub subject: Option<Digest>,
}

/// The registry's storage rooted at one directory.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

impl Store {
    /// Opens (creating if needed) the store at `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        for sub in ["blobs", "repositories", "uploads"] {
            let p = root.join(sub);
            fs::create_dir_all(&p).map_err(io_err("create", &p))?;
        }
        Ok(Store { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub(crate) fn blob_path(&self, d: &Digest) -> PathBuf {
        self.root
            .join("blobs")
            .join(d.algorithm().as_str())
            .join(d.hex())
    }

    pub(crate) fn repo_dir(&self, name: &str) -> PathBuf {
        debug_assert!(name::valid_name(name));
        self.root.join("repositories").join(name)
    }

    fn layer_link(&self, name: &str, d: &Digest) -> PathBuf {
        self.repo_dir(name)
            .join("_layers")
            .join(d.algorithm().as_str())
            .join(d.hex())
    }

    fn revision_link(&self, name: &str, d: &Digest) -> PathBuf {
        self.repo_dir(name)
            .join("_manifests/revisions")
            .join(d.algorithm().as_str())
            .join(d.hex())
    }

    fn tag_link(&self, name: &str, tag: &str) -> PathBuf {
        self.repo_dir(name).join("_manifests/tags").join(tag)
    }

    fn referrers_dir(&self, name: &str, subject: &Digest) -> PathBuf {
        self.repo_dir(name)
            .join("_referrers")
            .join(subject.algorithm().as_str())
            .join(subject.hex())
    }

    fn upload_dir(&self, id: &str) -> PathBuf {
        self.root.join("uploads").join(id)
    }

    /// True if the repository has ever received content.
    pub fn repo_exists(&self, name: &str) -> bool {
        self.repo_dir(name).is_dir()
    }

    // ---- blobs ----

    /// Size of a blob visible in `name`.
    pub fn blob_size(&self, name: &str, d: &Digest) -> Result<u64> {
        let unknown = || StoreError::BlobUnknown(d.clone(), name.to_string());
        if !self.layer_link(name, d).exists() {
            return Err(unknown());
        }
        match fs::metadata(self.blob_path(d)) {
            Ok(m) => Ok(m.len()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(unknown()),
            Err(e) => Err(io_err("stat", &self.blob_path(d))(e)),
        }
    }

    /// Path of a blob visible in `name`, with its size.
    pub fn blob_file(&self, name: &str, d: &Digest) -> Result<(PathBuf, u64)> {
        let size = self.blob_size(name, d)?;
        Ok((self.blob_path(d), size))
    }

    /// Makes an existing blob visible in `name`.
    fn link_blob(&self, name: &str, d: &Digest) -> Result<()> {
        write_atomic(&self.layer_link(name, d), b"")
    }

    /// Removes `name`'s link to a blob; the content goes at the next garbage collection.
    pub fn delete_blob(&self, name: &str, d: &Digest) -> Result<()> {
        let link = self.layer_link(name, d);
        match fs::remove_file(&link) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Err(StoreError::BlobUnknown(d.clone(), name.to_string()))
            }
            Err(e) => Err(io_err("remove", &link)(e)),
        }
    }

    /// Links into `name` a blob from repository `from`, or, with no `from`, any blob the
    /// store holds. Returns false when there is nothing to mount.
    pub fn mount_blob(&self, name: &str, from: Option<&str>, d: &Digest) -> Result<bool> {
        let available = match from {
            Some(from) => self.layer_link(from, d).exists() && self.blob_path(d).exists(),
            None => self.blob_path(d).exists(),
        };
        if available {
            self.link_blob(name, d)?;
        }
        Ok(available)
    }

    // ---- uploads ----

    /// Starts an upload session for `name`; returns its id.
    pub fn upload_start(&self, name: &str) -> Result<String> {
        let id = new_upload_id();
        let dir = self.upload_dir(&id);
        fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
        write_atomic(&dir.join("repo"), name.as_bytes())?;
        let data = dir.join("data");
        File::create(&data).map_err(io_err("create", &data))?;
        Ok(id)
    }

    /// The data file of upload `id`, checked to belong to `name`.
    pub fn upload_data(&self, name: &str, id: &str) -> Result<PathBuf> {
        let unknown = || StoreError::UploadUnknown(id.to_string());
        // Ids are made here (see `new_upload_id`); anything else, `..` included, is unknown.
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-') {
            return Err(unknown());
        }
        let dir = self.upload_dir(id);
        match fs::read(dir.join("repo")) {
            Ok(owner) if owner == name.as_bytes() => Ok(dir.join("data")),
            Ok(_) => Err(unknown()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(unknown()),
            Err(e) => Err(io_err("read", &dir.join("repo"))(e)),
        }
    }

    /// Bytes received so far by upload `id`.
    pub fn upload_size(&self, name: &str, id: &str) -> Result<u64> {
        let data = self.upload_data(name, id)?;
        fs::metadata(&data)
            .map(|m| m.len())
            .map_err(io_err("stat", &data))
    }

    /// Verifies the upload against `declared` and moves it into the blob store, linked in
    /// `name`. Returns the blob's size.
    pub fn upload_finish(&self, name: &str, id: &str, declared: &Digest) -> Result<u64> {
        let data = self.upload_data(name, id)?;
        let mut f = File::open(&data).map_err(io_err("open", &data))?;
        let mut hasher = declared.algorithm().hasher();
        let mut buf = vec![0u8; 256 * 1024];
        let mut size = 0u64;
        loop {
            let n = f.read(&mut buf).map_err(io_err("read", &data))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            size += n as u64;
        }
        let computed = hasher.finish();
        if &computed != declared {
            return Err(StoreError::DigestMismatch {
                declared: declared.clone(),
                computed,
            });
        }
        let target = self.blob_path(declared);
        if !target.exists() {
            f.sync_all().map_err(io_err("fsync", &data))?;
            let parent = parent_of(&target)?;
            fs::create_dir_all(parent).map_err(io_err("create", parent))?;
            fs::rename(&data, &target).map_err(io_err("rename", &data))?;
            sync_dir(parent)?;
        }
        self.link_blob(name, declared)?;
        self.remove_upload(id)?;
        Ok(size)
    }

    /// Cancels upload `id` of `name`.
    pub fn upload_cancel(&self, name: &str, id: &str) -> Result<()> {
        self.upload_data(name, id)?;
        self.remove_upload(id)
    }

    fn remove_upload(&self, id: &str) -> Result<()> {
        let dir = self.upload_dir(id);
        match fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("remove", &dir)(e)),
        }
    }

    /// Removes upload sessions idle for longer than `max_idle`; returns how many.
    pub fn sweep_uploads(&self, max_idle: Duration) -> Result<usize> {
        let dir = self.root.join("uploads");
        let now = SystemTime::now();
        let mut removed = 0;
        for entry in fs::read_dir(&dir).map_err(io_err("read", &dir))? {
            let entry = entry.map_err(io_err("read", &dir))?;
            let data = entry.path().join("data");
            // A session without data is half-created or half-removed: judge it by the folder.
            let modified = fs::metadata(&data)
                .or_else(|_| entry.metadata())
                .and_then(|m| m.modified());
            let idle = modified
                .ok()
                .and_then(|m| now.duration_since(m).ok())
                .unwrap_or_default();
            if idle >= max_idle {
                let name = entry.file_name();
                self.remove_upload(&name.to_string_lossy())?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    // ---- manifests ----

    /// Stores a manifest pushed to `name` under `reference`, tagging it with `reference`
    /// (when a tag) and `extra_tags`.
    pub fn put_manifest(
        &self,
        name: &str,
        reference: &Reference,
        body: &[u8],
        content_type: Option<&str>,
        extra_tags: &[String],
    ) -> Result<PutManifest> {
        if body.len() > MAX_MANIFEST_SIZE {
            return Err(StoreError::ManifestTooLarge(body.len()));
        }
        let digest = match reference {
            Reference::Digest(d) => {
                let computed = d.algorithm().digest(body);
                if &computed != d {
                    return Err(StoreError::DigestMismatch {
                        declared: d.clone(),
                        computed,
                    });
                }
                computed
            }
            Reference::Tag(_) => Algorithm::Sha256.digest(body),
        };
        let doc: ManifestDoc =
            serde_json::from_slice(body).map_err(|e| StoreError::ManifestInvalid(e.to_string()))?;
        // Only schema 2 (OCI, and Docker's v2 schema 2 and manifest lists) is accepted: garbage
        // collection can read its references; Docker schema 1 is long deprecated.
        if doc.schema_version != Some(2) {
            return Err(StoreError::ManifestInvalid(format!(
                "schemaVersion {:?} is not supported, only 2",
                doc.schema_version
            )));
        }
        let content_type = content_type
            .map(|c| c.split(';').next().unwrap_or(c).trim())
            .filter(|c| !c.is_empty());
        if let (Some(ct), Some(mt)) = (content_type, doc.media_type.as_deref()) {
            if ct != mt {
                return Err(StoreError::ManifestInvalid(format!(
                    "mediaType {mt} does not match Content-Type {ct}"
                )));
            }
        }
        let media_type = content_type
            .or(doc.media_type.as_deref())
            .unwrap_or(DEFAULT_MANIFEST_TYPE)
            .to_string();
        let blob = self.blob_path(&digest);
        if !blob.exists() {
            write_atomic(&blob, body)?;
        }
        let subject = doc.subject.as_ref().map(|s| s.digest.clone());
        let revision = Revision {
            media_type: media_type.clone(),
            subject: subject.clone(),
        };
        write_atomic(
            &self.revision_link(name, &digest),
            &serde_json::to_vec(&revision)
                .map_err(|e| StoreError::ManifestInvalid(e.to_string()))?,
        )?;
        if let Some(subject) = &subject {
            let artifact_type = doc
                .artifact_type
                .clone()
                .or_else(|| doc.config.as_ref().and_then(|c| c.media_type.clone()));
            let desc = Descriptor {
                media_type,
                digest: digest.clone(),
                size: body.len() as u64,
                artifact_type,
                annotations: doc.annotations.clone(),
            };
            let path = self.referrers_dir(name, subject).join(format!(
                "{}-{}",
                digest.algorithm().as_str(),
                digest.hex()
            ));
            let json = serde_json::to_vec(&desc)
                .map_err(|e| StoreError::ManifestInvalid(e.to_string()))?;
            write_atomic(&path, &json)?;
        }
        let tags = match reference {
            Reference::Tag(t) => std::slice::from_ref(t),
            Reference::Digest(_) => &[],
        };
        for tag in tags.iter().chain(extra_tags) {
            write_atomic(&self.tag_link(name, tag), digest.to_string().as_bytes())?;
        }
        Ok(PutManifest { digest, subject })
    }

    /// Resolves a reference in `name` to a digest.
    pub fn resolve(&self, name: &str, reference: &Reference) -> Result<Digest> {
        let unknown = || {
            if self.repo_exists(name) {
                StoreError::ManifestUnknown(name.to_string(), reference.to_string())
            } else {
                StoreError::NameUnknown(name.to_string())
            }
        };
        let digest = match reference {
            Reference::Digest(d) => d.clone(),
            Reference::Tag(t) => {
                let link = self.tag_link(name, t);
                match fs::read_to_string(&link) {
                    Ok(s) => s.trim().parse().map_err(|_| {
                        StoreError::ManifestInvalid(format!("corrupt tag link {}", link.display()))
                    })?,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(unknown()),
                    Err(e) => return Err(io_err("read", &link)(e)),
                }
            }
        };
        if !self.revision_link(name, &digest).exists() {
            return Err(unknown());
        }
        Ok(digest)
    }

    /// Reads a manifest of `name`.
    pub fn get_manifest(&self, name: &str, reference: &Reference) -> Result<Manifest> {
        let digest = self.resolve(name, reference)?;
        let link = self.revision_link(name, &digest);
        let revision: Revision = read_json(&link)?;
        let path = self.blob_path(&digest);
        let body = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(StoreError::ManifestUnknown(
                    name.to_string(),
                    reference.to_string(),
                ))
            }
            Err(e) => return Err(io_err("read", &path)(e)),
        };
        Ok(Manifest {
            digest,
            media_type: revision.media_type,
            body,
        })
    }

    /// Deletes a tag, or a manifest together with the tags pointing at it.
    pub fn delete_manifest(&self, name: &str, reference: &Reference) -> Result<()> {
        let digest = self.resolve(name, reference)?;
        if let Reference::Tag(t) = reference {
            return remove_file(&self.tag_link(name, t));
        }
        let link = self.revision_link(name, &digest);
        let revision: Revision = read_json(&link)?;
        if let Some(subject) = revision.subject {
            let entry = self.referrers_dir(name, &subject).join(format!(
                "{}-{}",
                digest.algorithm().as_str(),
                digest.hex()
            ));
            remove_file(&entry)?;
        }
        for tag in self.tags(name)? {
            let tl = self.tag_link(name, &tag);
            if fs::read_to_string(&tl)
                .map(|s| s.trim() == digest.to_string())
                .unwrap_or(false)
            {
                remove_file(&tl)?;
            }
        }
        remove_file(&link)
    }

    /// Tags of `name`, sorted.
    pub fn tags(&self, name: &str) -> Result<Vec<String>> {
        if !self.repo_exists(name) {
            return Err(StoreError::NameUnknown(name.to_string()));
        }
        let dir = self.repo_dir(name).join("_manifests/tags");
        let mut tags = list_names(&dir)?;
        tags.retain(|t| name::valid_tag(t));
        tags.sort();
        Ok(tags)
    }

    /// Descriptors of the manifests in `name` whose subject is `subject`, sorted by digest.
    pub fn referrers(&self, name: &str, subject: &Digest) -> Result<Vec<Descriptor>> {
        let dir = self.referrers_dir(name, subject);
        let mut out = Vec::new();
        for entry in list_names(&dir)? {
            out.push(read_json::<Descriptor>(&dir.join(entry))?);
        }
        out.sort_by(|a, b| a.digest.cmp(&b.digest));
        Ok(out)
    }

    /// All repository names, sorted.
    pub fn catalog(&self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        walk_repos(&self.root.join("repositories"), "", &mut out)?;
        out.sort();
        Ok(out)
    }

    /// Digests of every manifest revision of `name`.
    pub fn revisions(&self, name: &str) -> Result<Vec<Digest>> {
        digests_under(&self.repo_dir(name).join("_manifests/revisions"))
    }

    /// Digests of every blob linked in `name`.
    pub fn layer_links(&self, name: &str) -> Result<Vec<Digest>> {
        digests_under(&self.repo_dir(name).join("_layers"))
    }

    /// Digests of every blob in the store.
    pub fn all_blobs(&self) -> Result<Vec<Digest>> {
        digests_under(&self.root.join("blobs"))
    }

    pub(crate) fn unlink_layer(&self, name: &str, d: &Digest) -> Result<()> {
        remove_file(&self.layer_link(name, d))
    }
}

/// A random (version 4) UUID naming an upload session.
fn new_upload_id() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// Finds repositories: folders holding `_layers` or `_manifests`.
fn walk_repos(dir: &Path, prefix: &str, out: &mut Vec<String>) -> Result<()> {
    for entry in list_names(dir)? {
        if entry.starts_with('_') {
            continue;
        }
        let path = dir.join(&entry);
        if !path.is_dir() {
            continue;
        }
        let name = if prefix.is_empty() {
            entry.clone()
        } else {
            format!("{prefix}/{entry}")
        };
        if path.join("_layers").is_dir() || path.join("_manifests").is_dir() {
            out.push(name.clone());
        }
        walk_repos(&path, &name, out)?;
    }
    Ok(())
}

/// Reads `<dir>/<alg>/<hex>` entries as digests, skipping anything else.
fn digests_under(dir: &Path) -> Result<Vec<Digest>> {
    let mut out = Vec::new();
    for alg in list_names(dir)? {
        for hex in list_names(&dir.join(&alg))? {
            if let Ok(d) = format!("{alg}:{hex}").parse() {
                out.push(d);
            }
        }
    }
    Ok(out)
}

/// File names in `dir` (empty if it does not exist), temporary files excluded.
fn list_names(dir: &Path) -> Result<Vec<String>> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err("read", dir)(e)),
    };
    let mut out = Vec::new();
    for entry in rd {
        let entry = entry.map_err(io_err("read", dir))?;
        if let Ok(s) = entry.file_name().into_string() {
            if !s.starts_with(".tmp-") {
                out.push(s);
            }
        }
    }
    Ok(out)
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let data = fs::read(path).map_err(io_err("read", path))?;
    serde_json::from_slice(&data).map_err(|e| StoreError::Io {
        op: "parse",
        path: path.to_path_buf(),
        source: io::Error::new(io::ErrorKind::InvalidData, e),
    })
}

fn remove_file(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("remove", path)(e)),
    }
}

fn parent_of(path: &Path) -> Result<&Path> {
    path.parent().ok_or_else(|| StoreError::Io {
        op: "resolve parent of",
        path: path.to_path_buf(),
        source: io::Error::from(io::ErrorKind::InvalidInput),
    })
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("fsync", dir))
}

/// Writes `data` to `path` through a temporary file in the same folder: write, fsync,
/// rename, fsync the folder.
pub(crate) fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let parent = parent_of(path)?;
    fs::create_dir_all(parent).map_err(io_err("create", parent))?;
    let tmp = parent.join(format!(".tmp-{}", hex::encode(rand::random::<[u8; 8]>())));
    let written = File::create(&tmp)
        .and_then(|mut f| {
            f.write_all(data)?;
            f.sync_all()
        })
        .and_then(|()| fs::rename(&tmp, path));
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(io_err("write", path)(e));
    }
    sync_dir(parent)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open store");
        (dir, store)
    }

    /// Uploads `data` into `repo` through a session, as the server does.
    pub(crate) fn push(store: &Store, repo: &str, data: &[u8]) -> Digest {
        let id = store.upload_start(repo).expect("start");
        fs::write(store.upload_data(repo, &id).expect("data"), data).expect("write");
        let d = Algorithm::Sha256.digest(data);
        store.upload_finish(repo, &id, &d).expect("finish");
        d
    }

    #[test]
    fn uploads_verify_digest_and_link_per_repository() {
        let (_dir, store) = store();
        let id = store.upload_start("a").expect("start");
        assert!(matches!(
            store.upload_data("b", &id),
            Err(StoreError::UploadUnknown(_))
        ));
        assert!(matches!(
            store.upload_data("a", "../../etc"),
            Err(StoreError::UploadUnknown(_))
        ));
        fs::write(store.upload_data("a", &id).expect("data"), b"hello").expect("write");
        let wrong = Algorithm::Sha256.digest(b"other");
        assert!(matches!(
            store.upload_finish("a", &id, &wrong),
            Err(StoreError::DigestMismatch { .. })
        ));
        let d = Algorithm::Sha512.digest(b"hello");
        assert_eq!(store.upload_finish("a", &id, &d).expect("finish"), 5);
        assert_eq!(store.blob_size("a", &d).expect("size"), 5);
        assert!(matches!(
            store.blob_size("b", &d),
            Err(StoreError::BlobUnknown(..))
        ));
        assert!(store.mount_blob("b", Some("a"), &d).expect("mount"));
        assert_eq!(store.blob_size("b", &d).expect("size"), 5);
        assert!(!store
            .mount_blob("c", Some("a"), &Algorithm::Sha256.digest(b"x"))
            .expect("mount"));
    }

    #[test]
    fn expired_uploads_are_swept() {
        let (_dir, store) = store();
        let id = store.upload_start("a").expect("start");
        assert_eq!(
            store.sweep_uploads(Duration::from_secs(60)).expect("sweep"),
            0
        );
        assert_eq!(store.sweep_uploads(Duration::ZERO).expect("sweep"), 1);
        assert!(store.upload_data("a", &id).is_err());
    }

    #[test]
    fn manifests_tags_and_referrers() {
        let (_dir, store) = store();
        let body = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","layers":[]}"#;
        let tag = Reference::Tag("v1".into());
        let put = store
            .put_manifest("r", &tag, body, None, &["also".into()])
            .expect("put");
        assert_eq!(store.tags("r").expect("tags"), ["also", "v1"]);
        let m = store.get_manifest("r", &tag).expect("get");
        assert_eq!(m.digest, put.digest);
        assert_eq!(m.media_type, DEFAULT_MANIFEST_TYPE);
        assert!(matches!(
            store.put_manifest(
                "r",
                &tag,
                body,
                Some("application/vnd.oci.image.index.v1+json"),
                &[]
            ),
            Err(StoreError::ManifestInvalid(_))
        ));
        for bad in [&b"not json"[..], br#"{"schemaVersion":1,"fsLayers":[]}"#] {
            assert!(matches!(
                store.put_manifest("r", &tag, bad, None, &[]),
                Err(StoreError::ManifestInvalid(_))
            ));
        }

        let referrer = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"application/x.sig","digest":"{}","size":0}},"subject":{{"mediaType":"x","digest":"{}","size":1}}}}"#,
            Algorithm::Sha256.digest(b""),
            put.digest
        );
        let rd = Algorithm::Sha256.digest(referrer.as_bytes());
        let rput = store
            .put_manifest(
                "r",
                &Reference::Digest(rd.clone()),
                referrer.as_bytes(),
                None,
                &[],
            )
            .expect("put referrer");
        assert_eq!(rput.subject.as_ref(), Some(&put.digest));
        let refs = store.referrers("r", &put.digest).expect("referrers");
        assert_eq!(refs.len(), 1);
        assert_eq!(refs[0].digest, rd);
        assert_eq!(refs[0].artifact_type.as_deref(), Some("application/x.sig"));

        store
            .delete_manifest("r", &Reference::Digest(put.digest.clone()))
            .expect("delete");
        assert!(store.tags("r").expect("tags").is_empty());
        assert!(matches!(
            store.get_manifest("r", &tag),
            Err(StoreError::ManifestUnknown(..))
        ));
        assert!(matches!(
            store.get_manifest("nope", &tag),
            Err(StoreError::NameUnknown(_))
        ));
        store
            .delete_manifest("r", &Reference::Digest(rd))
            .expect("delete referrer");
        assert!(store
            .referrers("r", &put.digest)
            .expect("referrers")
            .is_empty());
    }

    #[test]
    fn oversized_manifests_are_refused() {
        let (_dir, store) = store();
        let big = vec![b' '; MAX_MANIFEST_SIZE + 1];
        assert!(matches!(
            store.put_manifest("r", &Reference::Tag("t".into()), &big, None, &[]),
            Err(StoreError::ManifestTooLarge(_))
        ));
    }
}
