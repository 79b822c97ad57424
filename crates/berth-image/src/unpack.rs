//! Layer extraction: one pass over a (possibly compressed) layer stream that hashes the
//! compressed bytes (blob digest), hashes the uncompressed tar (diff ID) and writes the files
//! into a snapshot directory in overlayfs form.
//!
//! Safety rules, enforced for every entry:
//! - entry names must be relative and free of `..` (an error otherwise: the layer is refused);
//! - parent directories are resolved by the kernel inside the snapshot root
//!   (`openat2(RESOLVE_IN_ROOT)`), so symlinks created by earlier entries cannot lead outside;
//!   the final component is created with `*at` calls that never follow a symlink;
//! - hard links must point to an entry already extracted inside the same snapshot;
//! - GNU long names and PAX headers are limited to [`MAX_SPECIAL_HEADER`] bytes;
//! - `trusted.*` and `security.selinux` xattrs from the layer are dropped (a layer must not be
//!   able to plant overlayfs control attributes such as redirects);
//! - device nodes are created (as Docker does when running as root): the store root is mode
//!   0700, so they are reachable only through a container, whose device cgroup governs access.
//!   Setuid/setgid bits are kept as data for the same reason.
//!
//! Whiteouts are converted to overlayfs form: `.wh.NAME` becomes a 0/0 character device NAME and
//! `.wh..wh..opq` sets `trusted.overlay.opaque=y` on its directory.

use std::ffi::OsStr;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use tar::EntryType;

use crate::digest::{Digest, HashingReader, TeeHashReader};
use crate::error::{Error, IoContext, Result};
use crate::spec::Compression;
use crate::sys;

/// Upper bound for GNU long-name/long-link and PAX extended header payloads (as Go's
/// archive/tar, which Docker uses).
pub const MAX_SPECIAL_HEADER: u64 = 1 << 20;

pub(crate) const WHITEOUT_PREFIX: &str = ".wh.";
pub(crate) const OPAQUE_WHITEOUT: &str = ".wh..wh..opq";
pub(crate) const OVERLAY_OPAQUE_XATTR: &str = "trusted.overlay.opaque";

/// One tar entry with GNU/PAX extensions already applied.
#[derive(Debug, Default)]
pub(crate) struct EntryMeta {
    pub path: Vec<u8>,
    pub link: Option<Vec<u8>>,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
    pub size: u64,
    pub dev_major: u32,
    pub dev_minor: u32,
    pub xattrs: Vec<(String, Vec<u8>)>,
}

#[derive(Default)]
struct Pending {
    path: Option<Vec<u8>>,
    link: Option<Vec<u8>>,
    uid: Option<u32>,
    gid: Option<u32>,
    mtime: Option<i64>,
    xattrs: Vec<(String, Vec<u8>)>,
}

fn read_bounded(data: &mut dyn Read, size: u64, what: &str) -> Result<Vec<u8>> {
    if size > MAX_SPECIAL_HEADER {
        return Err(Error::InvalidLayer(format!(
            "{what} of {size} bytes exceeds the {MAX_SPECIAL_HEADER} byte limit"
        )));
    }
    let mut buf = Vec::with_capacity(size as usize);
    data.take(size)
        .read_to_end(&mut buf)
        .map_err(|e| Error::InvalidLayer(format!("read {what}: {e}")))?;
    Ok(buf)
}

fn parse_pax(data: &[u8], p: &mut Pending) -> Result<()> {
    let bad = || Error::InvalidLayer("malformed PAX extended header".into());
    let mut rest = data;
    while !rest.is_empty() {
        let sp = rest.iter().position(|b| *b == b' ').ok_or_else(bad)?;
        let len: usize = std::str::from_utf8(&rest[..sp])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(bad)?;
        if len <= sp + 1 || len > rest.len() || rest[len - 1] != b'\n' {
            return Err(bad());
        }
        let record = &rest[sp + 1..len - 1];
        let eq = record.iter().position(|b| *b == b'=').ok_or_else(bad)?;
        let (key, value) = (&record[..eq], &record[eq + 1..]);
        let num = || {
            std::str::from_utf8(value)
                .ok()
                .and_then(|s| s.split('.').next()?.parse::<i64>().ok())
        };
        match key {
            b"path" => p.path = Some(value.to_vec()),
            b"linkpath" => p.link = Some(value.to_vec()),
            b"uid" => p.uid = num().map(|v| v as u32),
            b"gid" => p.gid = num().map(|v| v as u32),
            b"mtime" => p.mtime = num(),
            _ => {
                let key = String::from_utf8_lossy(key);
                let name = key
                    .strip_prefix("SCHILY.xattr.")
                    .or_else(|| key.strip_prefix("LIBARCHIVE.xattr."));
                if let Some(name) = name {
                    p.xattrs.push((name.to_string(), value.to_vec()));
                }
            }
        }
        rest = &rest[len..];
    }
    Ok(())
}

pub(crate) fn layer_read_err(e: io::Error) -> Error {
    Error::InvalidLayer(format!("read tar stream: {e}"))
}

/// Iterate a tar stream, merging GNU and PAX extension headers into the entries they describe,
/// and hand each real entry with its data to `f`. Returns the underlying reader when done.
pub(crate) fn for_each_entry<R: Read>(
    reader: R,
    mut f: impl FnMut(EntryType, &EntryMeta, &mut dyn Read) -> Result<()>,
) -> Result<R> {
    let mut archive = tar::Archive::new(reader);
    {
        let entries = archive.entries().map_err(layer_read_err)?.raw(true);
        let mut pending = Pending::default();
        for entry in entries {
            let mut entry = entry.map_err(layer_read_err)?;
            let header = entry.header().clone();
            let kind = header.entry_type();
            let size = header.entry_size().map_err(layer_read_err)?;
            match kind {
                EntryType::GNULongName => {
                    let mut v = read_bounded(&mut entry, size, "GNU long name")?;
                    while v.last() == Some(&0) {
                        v.pop();
                    }
                    pending.path = Some(v);
                    continue;
                }
                EntryType::GNULongLink => {
                    let mut v = read_bounded(&mut entry, size, "GNU long link name")?;
                    while v.last() == Some(&0) {
                        v.pop();
                    }
                    pending.link = Some(v);
                    continue;
                }
                EntryType::XHeader => {
                    let v = read_bounded(&mut entry, size, "PAX extended header")?;
                    parse_pax(&v, &mut pending)?;
                    continue;
                }
                EntryType::XGlobalHeader => {
                    read_bounded(&mut entry, size, "PAX global header")?;
                    continue;
                }
                _ => {}
            }
            let p = std::mem::take(&mut pending);
            let meta = EntryMeta {
                path: p.path.unwrap_or_else(|| header.path_bytes().into_owned()),
                link: p
                    .link
                    .or_else(|| header.link_name_bytes().map(|l| l.into_owned())),
                mode: header.mode().map_err(layer_read_err)? & 0o7777,
                uid: p
                    .uid
                    .unwrap_or(header.uid().map_err(layer_read_err)? as u32),
                gid: p
                    .gid
                    .unwrap_or(header.gid().map_err(layer_read_err)? as u32),
                mtime: p
                    .mtime
                    .unwrap_or(header.mtime().map_err(layer_read_err)? as i64),
                size,
                dev_major: header.device_major().ok().flatten().unwrap_or(0),
                dev_minor: header.device_minor().ok().flatten().unwrap_or(0),
                xattrs: p.xattrs,
            };
            f(kind, &meta, &mut entry)?;
        }
    }
    Ok(archive.into_inner())
}

/// Turn an entry name into a clean relative path. `Ok(None)` is the root itself.
pub(crate) fn clean_path(raw: &[u8]) -> Result<Option<PathBuf>> {
    let unsafe_entry = |reason: &str| Error::UnsafeEntry {
        path: String::from_utf8_lossy(raw).into_owned(),
        reason: reason.to_string(),
    };
    if raw.first() == Some(&b'/') {
        return Err(unsafe_entry("absolute path"));
    }
    let mut out = PathBuf::new();
    for c in Path::new(OsStr::from_bytes(raw)).components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            Component::ParentDir => return Err(unsafe_entry("path contains '..'")),
            Component::RootDir | Component::Prefix(_) => return Err(unsafe_entry("absolute path")),
        }
    }
    Ok(if out.as_os_str().is_empty() {
        None
    } else {
        Some(out)
    })
}

pub(crate) fn keep_xattr(name: &str) -> bool {
    !(name.starts_with("trusted.") || name == "security.selinux")
}

/// Writes entries into one snapshot directory.
pub(crate) struct Extractor {
    root: OwnedFd,
    root_path: PathBuf,
    dir_times: Vec<(Option<PathBuf>, i64)>,
    /// Sum of regular file sizes (Docker's layer "Size").
    pub(crate) content_size: u64,
    /// Copy buffer: large writes cut the syscall count for big files by two orders of magnitude.
    buf: Vec<u8>,
}

pub(crate) fn copy_buffered(
    r: &mut impl Read,
    w: &mut impl Write,
    buf: &mut [u8],
) -> io::Result<u64> {
    let mut total = 0;
    loop {
        // Fill as much of the buffer as the stream gives before writing.
        let mut filled = 0;
        while filled < buf.len() {
            match r.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if filled == 0 {
            return Ok(total);
        }
        w.write_all(&buf[..filled])?;
        total += filled as u64;
    }
}

impl Extractor {
    pub(crate) fn new(root_path: &Path) -> Result<Extractor> {
        let root = sys::open_dir_path(root_path).ctx("open snapshot directory", root_path)?;
        Ok(Extractor {
            root,
            root_path: root_path.to_path_buf(),
            dir_times: Vec::new(),
            content_size: 0,
            buf: vec![0; 1 << 20],
        })
    }

    fn io_err(&self, what: &'static str, rel: &Path) -> impl FnOnce(io::Error) -> Error {
        let path = self.root_path.join(rel);
        move |source| Error::Io {
            context: what,
            path,
            source,
        }
    }

    /// Open (creating as needed, mode 0755) the directory `rel` inside the root.
    fn dir(&self, rel: &Path, flags: libc::c_int) -> Result<OwnedFd> {
        match sys::open_in_root(&self.root, rel, flags | libc::O_DIRECTORY) {
            Ok(fd) => return Ok(fd),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return Err(self.io_err("resolve directory", rel)(e)),
        }
        let mut prefix = PathBuf::new();
        let mut cur =
            sys::open_in_root(&self.root, Path::new(""), libc::O_PATH | libc::O_DIRECTORY)
                .map_err(self.io_err("open snapshot root", rel))?;
        for c in rel.components() {
            prefix.push(c);
            cur = match sys::open_in_root(&self.root, &prefix, libc::O_PATH | libc::O_DIRECTORY) {
                Ok(fd) => fd,
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                    match sys::mkdirat(&cur, c.as_os_str(), 0o755) {
                        Ok(()) => {}
                        // A dangling symlink is in the way: following it would leave the layer.
                        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                            return Err(Error::UnsafeEntry {
                                path: rel.display().to_string(),
                                reason: format!(
                                    "parent {} is a symlink to a missing directory",
                                    prefix.display()
                                ),
                            })
                        }
                        Err(e) => return Err(self.io_err("create directory", &prefix)(e)),
                    }
                    sys::open_in_root(&self.root, &prefix, libc::O_PATH | libc::O_DIRECTORY)
                        .map_err(self.io_err("resolve directory", &prefix))?
                }
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::ENOTDIR) | Some(libc::ELOOP) | Some(libc::EXDEV)
                    ) =>
                {
                    return Err(Error::UnsafeEntry {
                        path: rel.display().to_string(),
                        reason: format!(
                            "parent {} is not a directory inside the layer",
                            prefix.display()
                        ),
                    })
                }
                Err(e) => return Err(self.io_err("resolve directory", &prefix)(e)),
            };
        }
        sys::open_in_root(&self.root, rel, flags | libc::O_DIRECTORY)
            .map_err(self.io_err("resolve directory", rel))
    }

    /// Remove whatever is at `parent/name`; keep an existing directory when `keep_dir`.
    /// Returns whether a directory was kept.
    fn clear(&self, parent: &OwnedFd, name: &OsStr, rel: &Path, keep_dir: bool) -> Result<bool> {
        let st = match sys::lstatat(parent, name) {
            Ok(st) => st,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(false),
            Err(e) => return Err(self.io_err("stat", rel)(e)),
        };
        if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
            if keep_dir {
                return Ok(true);
            }
            sys::remove_tree_at(parent, name).map_err(self.io_err("remove directory", rel))?;
        } else {
            sys::unlinkat(parent, name, false).map_err(self.io_err("remove", rel))?;
        }
        Ok(false)
    }

    /// Extract one entry.
    pub(crate) fn entry(
        &mut self,
        kind: EntryType,
        meta: &EntryMeta,
        data: &mut dyn Read,
    ) -> Result<()> {
        let Some(rel) = clean_path(&meta.path)? else {
            if kind == EntryType::Directory {
                let fd = self.dir(Path::new(""), libc::O_RDONLY)?;
                self.set_fd_meta(&fd, meta, Path::new(""))?;
                self.dir_times.push((None, meta.mtime));
            }
            return Ok(());
        };
        let name = rel.file_name().map(OsStr::to_os_string).unwrap_or_default();
        let parent_rel = rel.parent().unwrap_or(Path::new("")).to_path_buf();
        let name_str = name.to_string_lossy();

        // Whiteouts.
        if name_str == OPAQUE_WHITEOUT {
            let dir = self.dir(&parent_rel, libc::O_RDONLY)?;
            sys::fsetxattr(&dir, OVERLAY_OPAQUE_XATTR, b"y")
                .map_err(self.io_err("mark opaque", &parent_rel))?;
            return Ok(());
        }
        if let Some(target) = name_str.strip_prefix(WHITEOUT_PREFIX) {
            if target.starts_with(WHITEOUT_PREFIX) {
                // aufs metadata (.wh..wh.plnk and friends): not part of the filesystem.
                return Ok(());
            }
            let parent = self.dir(&parent_rel, libc::O_PATH)?;
            let target = OsStr::new(target);
            let trel = parent_rel.join(target);
            self.clear(&parent, target, &trel, false)?;
            sys::mknodat(&parent, target, libc::S_IFCHR, 0, 0)
                .map_err(self.io_err("create whiteout", &trel))?;
            return Ok(());
        }

        let parent = self.dir(&parent_rel, libc::O_PATH)?;
        match kind {
            EntryType::Directory => {
                let kept = self.clear(&parent, &name, &rel, true)?;
                if !kept {
                    sys::mkdirat(&parent, &name, 0o700)
                        .map_err(self.io_err("create directory", &rel))?;
                }
                let fd = self.dir(&rel, libc::O_RDONLY)?;
                self.set_fd_meta(&fd, meta, &rel)?;
                self.dir_times.push((Some(rel), meta.mtime));
            }
            EntryType::Regular | EntryType::Continuous => {
                self.clear(&parent, &name, &rel, false)?;
                let fd = sys::openat(
                    &parent,
                    &name,
                    libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY,
                    0o600,
                )
                .map_err(self.io_err("create file", &rel))?;
                let mut file = std::fs::File::from(fd);
                let n = copy_buffered(&mut data.take(meta.size), &mut file, &mut self.buf)
                    .map_err(|e| {
                        if e.kind() == io::ErrorKind::UnexpectedEof
                            || e.kind() == io::ErrorKind::InvalidData
                            || e.kind() == io::ErrorKind::InvalidInput
                        {
                            layer_read_err(e)
                        } else {
                            self.io_err("write file", &rel)(e)
                        }
                    })?;
                if n != meta.size {
                    return Err(Error::InvalidLayer(format!(
                        "entry {} truncated: {n} of {} bytes",
                        rel.display(),
                        meta.size
                    )));
                }
                self.content_size += n;
                let fd = OwnedFd::from(file);
                self.set_fd_meta(&fd, meta, &rel)?;
                sys::futimes(&fd, meta.mtime).map_err(self.io_err("set times", &rel))?;
            }
            EntryType::Symlink => {
                let target = meta.link.as_deref().ok_or_else(|| {
                    Error::InvalidLayer(format!("symlink {} has no target", rel.display()))
                })?;
                self.clear(&parent, &name, &rel, false)?;
                sys::symlinkat(OsStr::from_bytes(target), &parent, &name)
                    .map_err(self.io_err("create symlink", &rel))?;
                sys::lchownat(&parent, &name, meta.uid, meta.gid)
                    .map_err(self.io_err("chown", &rel))?;
                sys::lutimesat(&parent, &name, meta.mtime)
                    .map_err(self.io_err("set times", &rel))?;
            }
            EntryType::Link => {
                let raw = meta.link.as_deref().unwrap_or_default();
                // A leading slash means the layer root, as in Docker's extraction.
                let trimmed: &[u8] = {
                    let mut t = raw;
                    while t.first() == Some(&b'/') {
                        t = &t[1..];
                    }
                    t
                };
                let target = clean_path(trimmed)?.ok_or_else(|| Error::UnsafeEntry {
                    path: rel.display().to_string(),
                    reason: "hard link to the layer root".into(),
                })?;
                let tname = target
                    .file_name()
                    .map(OsStr::to_os_string)
                    .unwrap_or_default();
                let tparent_rel = target.parent().unwrap_or(Path::new(""));
                let tparent =
                    sys::open_in_root(&self.root, tparent_rel, libc::O_PATH | libc::O_DIRECTORY)
                        .map_err(|_| Error::UnsafeEntry {
                            path: rel.display().to_string(),
                            reason: format!(
                                "hard link target {} is not in this layer",
                                target.display()
                            ),
                        })?;
                match sys::lstatat(&tparent, &tname) {
                    Ok(st) if st.st_mode & libc::S_IFMT != libc::S_IFDIR => {}
                    _ => {
                        return Err(Error::UnsafeEntry {
                            path: rel.display().to_string(),
                            reason: format!(
                                "hard link target {} is not a file in this layer",
                                target.display()
                            ),
                        })
                    }
                }
                if target == rel {
                    return Ok(());
                }
                self.clear(&parent, &name, &rel, false)?;
                sys::linkat(&tparent, &tname, &parent, &name)
                    .map_err(self.io_err("create hard link", &rel))?;
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                let fmt = match kind {
                    EntryType::Char => libc::S_IFCHR,
                    EntryType::Block => libc::S_IFBLK,
                    _ => libc::S_IFIFO,
                };
                self.clear(&parent, &name, &rel, false)?;
                sys::mknodat(
                    &parent,
                    &name,
                    fmt | (meta.mode & 0o777),
                    meta.dev_major,
                    meta.dev_minor,
                )
                .map_err(self.io_err("create device node", &rel))?;
                sys::lchownat(&parent, &name, meta.uid, meta.gid)
                    .map_err(self.io_err("chown", &rel))?;
                sys::chmod_nofollow(&parent, &name, meta.mode)
                    .map_err(self.io_err("chmod", &rel))?;
                sys::lutimesat(&parent, &name, meta.mtime)
                    .map_err(self.io_err("set times", &rel))?;
            }
            other => {
                return Err(Error::InvalidLayer(format!(
                    "unsupported tar entry type {:?} for {}",
                    other,
                    rel.display()
                )))
            }
        }
        Ok(())
    }

    fn set_fd_meta(&self, fd: &OwnedFd, meta: &EntryMeta, rel: &Path) -> Result<()> {
        sys::fchown(fd, meta.uid, meta.gid).map_err(self.io_err("chown", rel))?;
        // After chown: chown clears setuid/setgid.
        sys::fchmod(fd, meta.mode).map_err(self.io_err("chmod", rel))?;
        for (k, v) in &meta.xattrs {
            if keep_xattr(k) {
                sys::fsetxattr(fd, k, v).map_err(self.io_err("set xattr", rel))?;
            } else {
                tracing::debug!(path = %rel.display(), xattr = %k, "dropping xattr from layer");
            }
        }
        Ok(())
    }

    /// Apply directory times last (writing entries changes them).
    pub(crate) fn finish(self) -> Result<()> {
        let mut done = std::collections::HashSet::new();
        for (rel, mtime) in self.dir_times.iter().rev() {
            let rel = rel.as_deref().unwrap_or(Path::new(""));
            // The last entry for a path wins.
            if !done.insert(rel) {
                continue;
            }
            let fd = match sys::open_in_root(&self.root, rel, libc::O_RDONLY | libc::O_DIRECTORY) {
                Ok(fd) => fd,
                // A later entry replaced the directory.
                Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR)) => {
                    continue
                }
                Err(e) => return Err(self.io_err("open directory", rel)(e)),
            };
            sys::futimes(&fd, *mtime).map_err(self.io_err("set times", rel))?;
        }
        Ok(())
    }
}

enum Decoder<B: BufRead> {
    Plain(B),
    Gzip(flate2::bufread::MultiGzDecoder<B>),
    Zstd(zstd::stream::read::Decoder<'static, B>),
}

impl<B: BufRead> Decoder<B> {
    fn new(mut b: B) -> Result<(Decoder<B>, Compression)> {
        let c = Compression::detect(b.fill_buf().map_err(layer_read_err)?);
        let d = match c {
            Compression::None => Decoder::Plain(b),
            Compression::Gzip => Decoder::Gzip(flate2::bufread::MultiGzDecoder::new(b)),
            Compression::Zstd => Decoder::Zstd(
                zstd::stream::read::Decoder::with_buffer(b)
                    .map_err(|e| Error::InvalidLayer(format!("zstd: {e}")))?,
            ),
        };
        Ok((d, c))
    }

    fn into_inner(self) -> B {
        match self {
            Decoder::Plain(b) => b,
            Decoder::Gzip(d) => d.into_inner(),
            Decoder::Zstd(d) => d.finish(),
        }
    }
}

impl<B: BufRead> Read for Decoder<B> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Decoder::Plain(b) => b.read(buf),
            Decoder::Gzip(d) => d.read(buf),
            Decoder::Zstd(d) => d.read(buf),
        }
    }
}

/// Open a possibly-compressed stream for reading its tar content (used for archives).
pub(crate) fn decompressed(r: impl Read) -> Result<impl Read> {
    let (d, _) = Decoder::new(BufReader::with_capacity(1 << 17, r))?;
    Ok(d)
}

/// What one pass over a layer stream produced.
#[derive(Debug, Clone)]
pub struct LayerDigests {
    /// Digest of the bytes as given (the blob).
    pub digest: Digest,
    /// Size of the bytes as given.
    pub size: u64,
    /// Digest of the uncompressed tar.
    pub diff_id: Digest,
    pub compression: Compression,
    /// Sum of regular file sizes in the layer.
    pub content_size: u64,
}

/// Verify and unpack a layer stream into `dest` in one pass, copying the raw bytes into `sink`.
pub(crate) fn unpack_layer<R: Read, W: Write>(
    source: R,
    sink: W,
    dest: &Path,
) -> Result<(LayerDigests, W)> {
    unpack_layer_with(source, sink, dest, true)
}

/// As [`unpack_layer`]; with `hash_raw` false the raw bytes are not hashed separately, which
/// is only valid for an uncompressed layer (its digest is its diff ID): a compressed one is
/// refused.
pub(crate) fn unpack_layer_with<R: Read, W: Write>(
    source: R,
    sink: W,
    dest: &Path,
    hash_raw: bool,
) -> Result<(LayerDigests, W)> {
    let tee = if hash_raw {
        TeeHashReader::new(source, sink)
    } else {
        TeeHashReader::without_hash(source, sink)
    };
    let (dec, compression) = Decoder::new(BufReader::with_capacity(1 << 18, tee))?;
    if !hash_raw && compression != Compression::None {
        return Err(Error::InvalidLayer(
            "a layer named by its diff id must not be compressed".into(),
        ));
    }
    let hashing = HashingReader::new(dec);
    let mut ex = Extractor::new(dest)?;
    let hashing = for_each_entry(hashing, |kind, meta, data| ex.entry(kind, meta, data))?;
    let content_size = ex.content_size;
    ex.finish()?;
    let (diff_id, _, dec) = hashing.finish().map_err(layer_read_err)?;
    let tee = dec.into_inner().into_inner();
    let (digest, size, sink) = tee.finish_opt().map_err(layer_read_err)?;
    Ok((
        LayerDigests {
            digest: digest.unwrap_or_else(|| diff_id.clone()),
            size,
            diff_id,
            compression,
            content_size,
        },
        sink,
    ))
}
