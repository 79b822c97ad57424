//! The content store: an OCI image layout's `blobs/sha256/` directory.
//!
//! Every blob is written to a temporary file under `<root>/tmp` (same filesystem), hashed while
//! it is written, fsynced, checked against the expected digest, then renamed into place, so a
//! crash leaves either the whole blob or nothing. Blobs are immutable and content-addressed,
//! which makes concurrent writers of the same blob harmless: the last rename wins with identical
//! bytes.

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use crate::digest::{Digest, HashingReader, TeeHashReader};
use crate::error::{Error, IoContext, Result};

#[derive(Debug, Clone)]
pub(crate) struct ContentStore {
    blobs: PathBuf,
    tmp: PathBuf,
}

impl ContentStore {
    pub(crate) fn new(root: &Path) -> ContentStore {
        ContentStore {
            blobs: root.join("blobs/sha256"),
            tmp: root.join("tmp"),
        }
    }

    pub(crate) fn path(&self, d: &Digest) -> PathBuf {
        self.blobs.join(d.hex())
    }

    pub(crate) fn has(&self, d: &Digest) -> bool {
        self.path(d).is_file()
    }

    pub(crate) fn size(&self, d: &Digest) -> Result<u64> {
        let p = self.path(d);
        match fs::metadata(&p) {
            Ok(m) => Ok(m.len()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Err(Error::BlobNotFound(d.to_string()))
            }
            Err(e) => Err(e).ctx("stat blob", p),
        }
    }

    pub(crate) fn temp_file(&self, prefix: &str) -> Result<tempfile::NamedTempFile> {
        tempfile::Builder::new()
            .prefix(prefix)
            .tempfile_in(&self.tmp)
            .ctx("create temp file in", &self.tmp)
    }

    /// Stream `reader` into the store. If `expected` is given the content must hash to it
    /// (and have `expected_size` bytes when given); otherwise the computed digest is returned.
    pub(crate) fn put_reader(
        &self,
        reader: impl Read,
        expected: Option<&Digest>,
        expected_size: Option<u64>,
    ) -> Result<(Digest, u64)> {
        let (tmp, digest, size) = self.write_temp(reader, expected, expected_size)?;
        self.persist(tmp, &digest)?;
        Ok((digest, size))
    }

    /// Stream `reader` into a verified temp file, not yet visible in the store.
    pub(crate) fn write_temp(
        &self,
        reader: impl Read,
        expected: Option<&Digest>,
        expected_size: Option<u64>,
    ) -> Result<(tempfile::NamedTempFile, Digest, u64)> {
        let tmp = self.temp_file("blob-")?;
        let writer = BufWriter::with_capacity(1 << 20, tmp);
        let tee = TeeHashReader::new(reader, writer);
        let (digest, size, writer) = tee.finish().ctx("write blob to", &self.tmp)?;
        let tmp = writer
            .into_inner()
            .map_err(|e| e.into_error())
            .ctx("flush blob in", &self.tmp)?;
        self.check(&digest, size, expected, expected_size)?;
        Ok((tmp, digest, size))
    }

    pub(crate) fn put_bytes(&self, bytes: &[u8], expected: Option<&Digest>) -> Result<Digest> {
        let digest = Digest::of(bytes);
        self.check(&digest, bytes.len() as u64, expected, None)?;
        if self.has(&digest) {
            return Ok(digest);
        }
        let mut tmp = self.temp_file("blob-")?;
        tmp.write_all(bytes)
            .ctx("write blob to", tmp.path().to_path_buf())?;
        self.persist(tmp, &digest)?;
        Ok(digest)
    }

    pub(crate) fn check(
        &self,
        digest: &Digest,
        size: u64,
        expected: Option<&Digest>,
        expected_size: Option<u64>,
    ) -> Result<()> {
        if let Some(e) = expected {
            if e != digest {
                return Err(Error::DigestMismatch {
                    what: "blob".into(),
                    expected: e.to_string(),
                    actual: digest.to_string(),
                });
            }
        }
        if let Some(es) = expected_size {
            if es != size {
                return Err(Error::SizeMismatch {
                    what: digest.to_string(),
                    expected: es,
                    actual: size,
                });
            }
        }
        Ok(())
    }

    /// fsync the temp file and rename it to its content address.
    pub(crate) fn persist(&self, tmp: tempfile::NamedTempFile, digest: &Digest) -> Result<()> {
        tmp.as_file()
            .sync_all()
            .ctx("fsync blob", tmp.path().to_path_buf())?;
        let dest = self.path(digest);
        tmp.persist(&dest)
            .map_err(|e| e.error)
            .ctx("rename blob into", dest.clone())?;
        sync_dir(&self.blobs)
    }

    /// Rename a temp file whose data the caller already made durable (one `syncfs` for a
    /// whole batch); [`ContentStore::sync`] afterwards makes the renames durable.
    pub(crate) fn persist_synced(
        &self,
        tmp: tempfile::NamedTempFile,
        digest: &Digest,
    ) -> Result<()> {
        let dest = self.path(digest);
        tmp.persist(&dest)
            .map_err(|e| e.error)
            .ctx("rename blob into", dest.clone())?;
        Ok(())
    }

    /// fsync the blobs directory.
    pub(crate) fn sync(&self) -> Result<()> {
        sync_dir(&self.blobs)
    }

    /// Read a (small) blob fully, verifying its digest.
    pub(crate) fn read(&self, d: &Digest) -> Result<Vec<u8>> {
        let p = self.path(d);
        let bytes = match fs::read(&p) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(Error::BlobNotFound(d.to_string()))
            }
            Err(e) => return Err(e).ctx("read blob", p),
        };
        let actual = Digest::of(&bytes);
        if &actual != d {
            return Err(Error::DigestMismatch {
                what: format!("stored blob {}", p.display()),
                expected: d.to_string(),
                actual: actual.to_string(),
            });
        }
        Ok(bytes)
    }

    pub(crate) fn open(&self, d: &Digest) -> Result<File> {
        let p = self.path(d);
        match File::open(&p) {
            Ok(f) => Ok(f),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Err(Error::BlobNotFound(d.to_string()))
            }
            Err(e) => Err(e).ctx("open blob", p),
        }
    }

    /// Re-hash a stored blob (fsck).
    pub(crate) fn verify(&self, d: &Digest) -> Result<()> {
        let f = self.open(d)?;
        let (actual, _, _) = HashingReader::new(f)
            .finish()
            .ctx("read blob", self.path(d))?;
        if &actual != d {
            return Err(Error::DigestMismatch {
                what: format!("stored blob {}", self.path(d).display()),
                expected: d.to_string(),
                actual: actual.to_string(),
            });
        }
        Ok(())
    }

    pub(crate) fn list(&self) -> Result<Vec<Digest>> {
        let mut out = Vec::new();
        for e in fs::read_dir(&self.blobs).ctx("list blobs in", &self.blobs)? {
            let e = e.ctx("list blobs in", &self.blobs)?;
            if let Some(name) = e.file_name().to_str() {
                if let Ok(d) = Digest::from_hex(name) {
                    out.push(d);
                }
            }
        }
        Ok(out)
    }

    pub(crate) fn remove(&self, d: &Digest) -> Result<()> {
        let p = self.path(d);
        match fs::remove_file(&p) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).ctx("remove blob", p),
        }
    }
}

/// A stored blob opened for streaming (see [`crate::Store::open_blob`]). Reads hash the
/// content; the read that reaches end of file fails with `InvalidData` if the bytes do not hash
/// to the blob's digest or their count differs from the size seen at open, so a consumer that
/// reads to the end never passes on a corrupted blob as good.
pub struct BlobReader {
    inner: HashingReader<File>,
    digest: Digest,
    size: u64,
    path: PathBuf,
    verified: bool,
}

impl BlobReader {
    pub(crate) fn new(file: File, digest: Digest, size: u64, path: PathBuf) -> BlobReader {
        BlobReader {
            inner: HashingReader::new(file),
            digest,
            size,
            path,
            verified: false,
        }
    }

    /// The digest the content is checked against.
    pub fn digest(&self) -> &Digest {
        &self.digest
    }

    /// The blob's size in bytes when it was opened.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Read whatever is left and check the digest, for consumers that stop after exactly
    /// [`BlobReader::size`] bytes (and so never see end of file).
    pub fn verify_rest(mut self) -> Result<()> {
        io::copy(&mut self, &mut io::sink()).ctx("read blob", self.path.clone())?;
        Ok(())
    }

    fn check_end(&mut self) -> io::Result<()> {
        let (digest, n) = self.inner.digest_so_far();
        if n != self.size || digest != self.digest {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "stored blob {} is corrupt: {n} bytes hashing to {digest}, expected {} bytes hashing to {}",
                    self.path.display(),
                    self.size,
                    self.digest
                ),
            ));
        }
        self.verified = true;
        Ok(())
    }
}

impl Read for BlobReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let n = self.inner.read(buf)?;
        if n == 0 && !self.verified {
            self.check_end()?;
        }
        Ok(n)
    }
}

impl std::fmt::Debug for BlobReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobReader")
            .field("digest", &self.digest)
            .field("size", &self.size)
            .finish()
    }
}

/// fsync a directory so a rename inside it is durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|f| f.sync_all())
        .ctx("fsync directory", dir)
}

/// Replace `path` with `bytes` through a sibling temp file and a rename, without any fsync:
/// a crash of the process leaves the old or the new content (the page cache has both), a
/// power loss may leave the file missing, empty or zero-filled.
pub(crate) fn replace_unsynced(path: &Path, bytes: &[u8]) -> Result<()> {
    replace(path, bytes, false)
}

/// Replace `path` atomically with `bytes`: write a sibling temp file, fsync, rename.
pub(crate) fn atomic_write(path: &Path, bytes: &[u8]) -> Result<()> {
    replace(path, bytes, true)
}

fn replace(path: &Path, bytes: &[u8], durable: bool) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .tempfile_in(dir)
        .ctx("create temp file in", dir)?;
    tmp.write_all(bytes)
        .ctx("write", tmp.path().to_path_buf())?;
    if durable {
        tmp.as_file()
            .sync_all()
            .ctx("fsync", tmp.path().to_path_buf())?;
    }
    tmp.persist(path)
        .map_err(|e| e.error)
        .ctx("rename into", path)?;
    if durable {
        sync_dir(dir)?;
    }
    Ok(())
}
