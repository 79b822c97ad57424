//! `docker cp`: stat, archive and extract paths inside a container's filesystem.
//!
//! A [`ContainerFs`] is a directory fd standing for a container's `/`: the daemon opens
//! `/proc/<pid>/root` for a running container (so its volumes and bind mounts are seen as the
//! container sees them) or the mounted rootfs of a stopped one. Every path a client names is
//! resolved by the kernel inside that fd with `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`:
//! `..` and absolute symlinks are clamped to the container's root, so `/x -> /etc/shadow`
//! reads the container's shadow file and `/y -> ../../..` stays at the container's `/`, never
//! the host's. Below the opened path, trees are walked one name at a time with `O_NOFOLLOW`
//! `*at` calls, so a symlink swapped in while we walk is archived as a link, never followed.
//!
//! Semantics follow dockerd (`daemon/archive*.go`, `go-archive`):
//! - paths are absolute in the container; a trailing `/` or `/.` is kept, and `/.` archives a
//!   directory's contents rather than the directory (`docker cp ctr:/dir/. here`);
//! - [`ContainerFs::stat`] does not follow a final symlink but reports where it leads, fully
//!   evaluated inside the container (`linkTarget`);
//! - [`ContainerFs::archive`] names entries after the path's last element (`/etc` gives
//!   `etc/`, `etc/passwd`, ...);
//! - [`ContainerFs::extract`] follows every symlink of the destination (it must end at a
//!   directory); entry names are relative to it (a leading `/` is dropped, `..` may not leave
//!   it), parents are created and resolved inside the root, the final component of an entry is
//!   never followed, symlinks may not point lexically above the destination and hard links
//!   may only name entries of the same archive.

use std::collections::{HashMap, HashSet, VecDeque};
use std::ffi::{OsStr, OsString};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use tar::EntryType;

use crate::error::{Error, IoContext, Result};
use crate::sys;
use crate::unpack::{self, EntryMeta};

/// Symlinks followed while resolving one path before giving up (as Linux's `MAXSYMLINKS`).
const MAX_SYMLINKS: usize = 40;

/// What `HEAD /containers/{id}/archive` reports about a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathStat {
    /// The path's last element (`.` for `/dir/.`, `/` for the root).
    pub name: String,
    /// `st_size`.
    pub size: i64,
    /// `st_mode` (type and permission bits).
    pub mode: u32,
    /// Modification time, seconds since the epoch.
    pub mtime_secs: i64,
    /// Nanoseconds of the modification time.
    pub mtime_nsecs: u32,
    /// For a symlink: where it finally leads, as an absolute path in the container.
    pub link_target: String,
}

impl PathStat {
    /// The mode as Go's `os.FileMode`, the encoding of Docker's `mode` field.
    pub fn file_mode(&self) -> u32 {
        const DIR: u32 = 1 << 31;
        const SYMLINK: u32 = 1 << 27;
        const DEVICE: u32 = 1 << 26;
        const NAMED_PIPE: u32 = 1 << 25;
        const SOCKET: u32 = 1 << 24;
        const SETUID: u32 = 1 << 23;
        const SETGID: u32 = 1 << 22;
        const CHAR_DEVICE: u32 = 1 << 21;
        const STICKY: u32 = 1 << 20;
        let mut m = self.mode & 0o777;
        m |= match self.mode & libc::S_IFMT {
            libc::S_IFDIR => DIR,
            libc::S_IFLNK => SYMLINK,
            libc::S_IFBLK => DEVICE,
            libc::S_IFCHR => DEVICE | CHAR_DEVICE,
            libc::S_IFIFO => NAMED_PIPE,
            libc::S_IFSOCK => SOCKET,
            _ => 0,
        };
        for (bit, go) in [
            (libc::S_ISUID, SETUID),
            (libc::S_ISGID, SETGID),
            (libc::S_ISVTX, STICKY),
        ] {
            if self.mode & bit != 0 {
                m |= go;
            }
        }
        m
    }

    /// Whether the path is a directory.
    pub fn is_dir(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFDIR
    }
}

/// How [`ContainerFs::extract`] treats what it writes.
#[derive(Debug, Clone, Default)]
pub struct ExtractOptions {
    /// Let an entry replace a directory with a non-directory or the reverse (dockerd's default;
    /// `noOverwriteDirNonDir=1` turns it off).
    pub allow_overwrite_dir_non_dir: bool,
    /// Own every entry by this uid/gid instead of the archive's (`copyUIDGID=1`: the
    /// container's user).
    pub owner: Option<(u32, u32)>,
    /// Rename the archive's top-level entry `.0` to `.1` while extracting (the docker CLI's
    /// rebasing: `docker cp ctr:/a/file ./other` writes `file` as `other`). A `.0` of `.`
    /// puts every entry under `.1`.
    pub rename_top: Option<(String, String)>,
}

/// Apply [`ExtractOptions::rename_top`] to an entry or hard link name.
fn rename_top(raw: &[u8], rename: Option<&(String, String)>) -> Vec<u8> {
    let Some((from, to)) = rename else {
        return raw.to_vec();
    };
    let mut name = raw;
    while name.first() == Some(&b'/') {
        name = &name[1..];
    }
    if from == "." {
        let mut out = to.as_bytes().to_vec();
        out.push(b'/');
        out.extend_from_slice(name);
        return out;
    }
    let (first, rest) = match name.iter().position(|b| *b == b'/') {
        Some(i) => name.split_at(i),
        None => (name, &b""[..]),
    };
    if first != from.as_bytes() {
        return raw.to_vec();
    }
    let mut out = to.as_bytes().to_vec();
    out.extend_from_slice(rest);
    out
}

/// A path as the API names it: absolute in the container, lexically cleaned, with its
/// trailing `/` or `/.` remembered.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ContainerPath {
    parts: Vec<OsString>,
    trailing: Trailing,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trailing {
    None,
    Slash,
    Dot,
}

impl ContainerPath {
    fn parse(raw: &str) -> ContainerPath {
        let mut parts: Vec<OsString> = Vec::new();
        for c in Path::new(raw).components() {
            match c {
                Component::Normal(n) => parts.push(n.to_os_string()),
                // `..` at the root stays at the root, as in `filepath.Join("/", p)`.
                Component::ParentDir => {
                    parts.pop();
                }
                Component::CurDir | Component::RootDir | Component::Prefix(_) => {}
            }
        }
        let trimmed = raw.trim_end_matches('/');
        let trailing = if trimmed == "." || trimmed.ends_with("/.") {
            Trailing::Dot
        } else if raw.ends_with('/') && !parts.is_empty() {
            Trailing::Slash
        } else {
            Trailing::None
        };
        ContainerPath { parts, trailing }
    }

    fn rel(&self) -> PathBuf {
        self.parts.iter().collect()
    }

    /// Docker's `filepath.Base` of the path.
    fn base(&self) -> String {
        match (self.trailing, self.parts.last()) {
            (Trailing::Dot, _) => ".".into(),
            (_, Some(last)) => last.to_string_lossy().into_owned(),
            (_, None) => "/".into(),
        }
    }

    /// A trailing `/` or `/.` makes the kernel follow a final symlink.
    fn follows_last(&self) -> bool {
        self.trailing != Trailing::None
    }
}

fn is_not_found(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR))
}

/// A container's filesystem, rooted at a directory fd.
pub struct ContainerFs {
    root: OwnedFd,
    /// Where the root came from, for error messages only.
    label: PathBuf,
}

impl ContainerFs {
    /// Open `root` (following it: `/proc/<pid>/root` is meant to be followed) as the root.
    pub fn open(root: &Path) -> Result<ContainerFs> {
        let fd = sys::open_dir_path(root).ctx("open container root", root)?;
        Ok(ContainerFs {
            root: fd,
            label: root.to_path_buf(),
        })
    }

    fn io_err(&self, what: &'static str, rel: &Path) -> impl FnOnce(io::Error) -> Error {
        let path = self.label.join(rel);
        move |source| Error::Io {
            context: what,
            path,
            source,
        }
    }

    /// Open `rel` inside the root; a missing path is [`Error::PathNotFound`] for `shown`.
    fn open_rel(&self, rel: &Path, flags: libc::c_int, shown: &str) -> Result<OwnedFd> {
        sys::open_in_root(&self.root, rel, flags).map_err(|e| {
            if is_not_found(&e) {
                Error::PathNotFound(shown.to_string())
            } else {
                self.io_err("open", rel)(e)
            }
        })
    }

    /// Every symlink of `path` evaluated inside the container, as far as the path exists
    /// (Docker's `FollowSymlinkInScope`): an absolute container path without symlinks.
    pub fn resolve(&self, path: &str) -> Result<String> {
        let parsed = ContainerPath::parse(path);
        let mut done: Vec<OsString> = Vec::new();
        let mut todo: VecDeque<OsString> = parsed.parts.into_iter().collect();
        let mut links = 0;
        while let Some(c) = todo.pop_front() {
            if c == ".." {
                done.pop();
                continue;
            }
            if c == "." || c.is_empty() {
                continue;
            }
            let parent_rel: PathBuf = done.iter().collect();
            let st = sys::open_in_root(
                &self.root,
                &parent_rel,
                libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW,
            )
            .and_then(|parent| sys::lstatat(&parent, &c).map(|st| (parent, st)));
            let (parent, st) = match st {
                Ok(v) => v,
                // The rest does not exist: keep it as written.
                Err(e) if is_not_found(&e) => {
                    done.push(c);
                    continue;
                }
                Err(e) => return Err(self.io_err("resolve", &parent_rel.join(&c))(e)),
            };
            if st.st_mode & libc::S_IFMT != libc::S_IFLNK {
                done.push(c);
                continue;
            }
            links += 1;
            if links > MAX_SYMLINKS {
                return Err(self.io_err("resolve", &parent_rel.join(&c))(
                    io::Error::from_raw_os_error(libc::ELOOP),
                ));
            }
            let target = sys::readlinkat(&parent, &c)
                .map_err(self.io_err("read link", &parent_rel.join(&c)))?;
            if target.as_bytes().first() == Some(&b'/') {
                done.clear();
            }
            for (i, part) in Path::new(&target)
                .components()
                .filter_map(|p| match p {
                    Component::Normal(n) => Some(n.to_os_string()),
                    Component::ParentDir => Some(OsString::from("..")),
                    _ => None,
                })
                .enumerate()
            {
                todo.insert(i, part);
            }
        }
        let joined: PathBuf = done.iter().collect();
        Ok(format!("/{}", joined.display()))
    }

    /// `HEAD /containers/{id}/archive?path=`: the path's metadata, a final symlink not followed.
    pub fn stat(&self, path: &str) -> Result<PathStat> {
        let p = ContainerPath::parse(path);
        let flags = libc::O_PATH
            | if p.follows_last() {
                0
            } else {
                libc::O_NOFOLLOW
            };
        let fd = self.open_rel(&p.rel(), flags, path)?;
        let st = sys::fstat(&fd).map_err(self.io_err("stat", &p.rel()))?;
        let link_target = if st.st_mode & libc::S_IFMT == libc::S_IFLNK {
            self.resolve(path)?
        } else {
            String::new()
        };
        Ok(PathStat {
            name: p.base(),
            size: st.st_size,
            mode: st.st_mode,
            mtime_secs: st.st_mtime,
            mtime_nsecs: st.st_mtime_nsec as u32,
            link_target,
        })
    }

    /// `GET /containers/{id}/archive?path=`: the path as a tar stream whose entries are named
    /// after its last element. Returns the writer when the archive is complete.
    pub fn archive<W: Write>(&self, path: &str, w: W) -> Result<W> {
        self.archive_named(path, None, w)
    }

    /// [`ContainerFs::archive`] with the top-level entry called `name` instead.
    pub fn archive_named<W: Write>(&self, path: &str, name: Option<&str>, w: W) -> Result<W> {
        let p = ContainerPath::parse(path);
        let rel = p.rel();
        let nofollow = if p.follows_last() {
            0
        } else {
            libc::O_NOFOLLOW
        };
        let fd = self.open_rel(&rel, libc::O_PATH | nofollow, path)?;
        let st = sys::fstat(&fd).map_err(self.io_err("stat", &rel))?;
        let mut tw = TarWriter::new(w, &self.label);
        if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
            let dir = self.open_rel(&rel, libc::O_RDONLY | libc::O_DIRECTORY | nofollow, path)?;
            // The root itself is archived without a leading name (`bin/`, `etc/`, ...).
            let top = match (name, p.base().as_str()) {
                (Some(n), _) => PathBuf::from(n),
                (None, "/") => PathBuf::new(),
                (None, b) => PathBuf::from(b),
            };
            tw.dir(&dir, &top)?;
        } else {
            let parent = self.open_rel(
                &rel.parent().map(Path::to_path_buf).unwrap_or_default(),
                libc::O_PATH | libc::O_DIRECTORY,
                path,
            )?;
            let base = rel.file_name().unwrap_or_default();
            let top = PathBuf::from(name.map_or_else(|| p.base(), str::to_string));
            tw.child(&parent, base, &top)?;
        }
        tw.finish()
    }

    /// `PUT /containers/{id}/archive?path=`: unpack a (possibly gzip- or zstd-compressed) tar
    /// stream into the directory `path` leads to.
    pub fn extract<R: Read>(&self, path: &str, r: R, opts: &ExtractOptions) -> Result<()> {
        let dest = self.extract_point(path)?;
        let reader = unpack::decompressed(r)?;
        let mut ex = CopyExtractor {
            fs: self,
            dest,
            opts,
            extracted: HashSet::new(),
            dir_times: Vec::new(),
            buf: vec![0; 1 << 20],
        };
        unpack::for_each_entry(reader, |kind, meta, data| ex.entry(kind, meta, data))?;
        ex.finish()
    }

    /// Read a small regular file of the container (`/etc/passwd`), at most `limit` bytes.
    pub fn read_file(&self, path: &str, limit: u64) -> Result<Vec<u8>> {
        let rel = ContainerPath::parse(path).rel();
        let fd = self.open_rel(&rel, libc::O_RDONLY, path)?;
        let st = sys::fstat(&fd).map_err(self.io_err("stat", &rel))?;
        if st.st_mode & libc::S_IFMT != libc::S_IFREG {
            return Err(Error::PathNotFound(path.to_string()));
        }
        let mut out = Vec::new();
        std::fs::File::from(fd)
            .take(limit)
            .read_to_end(&mut out)
            .map_err(self.io_err("read", &rel))?;
        Ok(out)
    }

    /// An `O_PATH` fd of `path` inside the container, created (a directory, or an empty file
    /// when `dir` is false, parents 0755) if missing: a place to bind-mount a volume onto.
    pub fn mount_target(&self, path: &str, dir: bool) -> Result<OwnedFd> {
        let rel = ContainerPath::parse(path).rel();
        let flags = libc::O_PATH | libc::O_NOFOLLOW;
        match sys::open_in_root(&self.root, &rel, flags) {
            Ok(fd) => return Ok(fd),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return Err(self.io_err("open", &rel)(e)),
        }
        let Some(name) = rel.file_name() else {
            return Err(self.io_err("open", &rel)(io::Error::from_raw_os_error(
                libc::ENOENT,
            )));
        };
        let mut cur = sys::open_in_root(&self.root, Path::new(""), libc::O_PATH)
            .map_err(self.io_err("open", Path::new("")))?;
        let mut prefix = PathBuf::new();
        for c in rel.parent().unwrap_or(Path::new("")).components() {
            prefix.push(c);
            match sys::mkdirat(&cur, c.as_os_str(), 0o755) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
                Err(e) => return Err(self.io_err("create directory", &prefix)(e)),
            }
            cur = sys::open_in_root(&self.root, &prefix, libc::O_PATH | libc::O_DIRECTORY)
                .map_err(self.io_err("open", &prefix))?;
        }
        if dir {
            match sys::mkdirat(&cur, name, 0o755) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
                Err(e) => return Err(self.io_err("create directory", &rel)(e)),
            }
        } else {
            sys::openat(&cur, name, libc::O_CREAT | libc::O_WRONLY, 0o755)
                .map_err(self.io_err("create file", &rel))?;
        }
        sys::openat(&cur, name, libc::O_PATH, 0).map_err(self.io_err("open", &rel))
    }

    /// The destination of an extraction: every symlink followed, and it must be a directory.
    /// Returned relative to the root.
    pub fn extract_point(&self, path: &str) -> Result<PathBuf> {
        let resolved = self.resolve(path)?;
        let rel = ContainerPath::parse(&resolved).rel();
        let fd = self.open_rel(&rel, libc::O_PATH | libc::O_NOFOLLOW, path)?;
        let st = sys::fstat(&fd).map_err(self.io_err("stat", &rel))?;
        if st.st_mode & libc::S_IFMT != libc::S_IFDIR {
            return Err(Error::NotADirectory(path.to_string()));
        }
        Ok(rel)
    }
}

/// Writes a tree reached through directory fds as a tar stream.
struct TarWriter<'a, W: Write> {
    b: tar::Builder<W>,
    links: HashMap<(u64, u64), PathBuf>,
    label: &'a Path,
}

impl<'a, W: Write> TarWriter<'a, W> {
    fn new(w: W, label: &'a Path) -> Self {
        let mut b = tar::Builder::new(w);
        b.mode(tar::HeaderMode::Complete);
        TarWriter {
            b,
            links: HashMap::new(),
            label,
        }
    }

    fn err(&self, what: &'static str, name: &Path) -> impl FnOnce(io::Error) -> Error {
        let path = self.label.join(name);
        move |source| Error::Io {
            context: what,
            path,
            source,
        }
    }

    fn header(st: &libc::stat, kind: EntryType) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(st.st_mode & 0o7777);
        h.set_uid(u64::from(st.st_uid));
        h.set_gid(u64::from(st.st_gid));
        h.set_mtime(st.st_mtime.max(0) as u64);
        h.set_size(0);
        h
    }

    /// Archive the open directory `dir` as `name` (empty: the root, not itself an entry),
    /// then everything below it.
    fn dir(&mut self, dir: &OwnedFd, name: &Path) -> Result<()> {
        if !name.as_os_str().is_empty() {
            let st = sys::fstat(dir).map_err(self.err("stat", name))?;
            let mut h = Self::header(&st, EntryType::Directory);
            // Directory names end in `/`, as dockerd writes them.
            let mut raw = name.as_os_str().as_bytes().to_vec();
            raw.push(b'/');
            self.put(&mut h, &raw, None, io::empty(), name)?;
        }
        // Listing through the fd's /proc link reads exactly the directory we opened.
        let listing = format!("/proc/self/fd/{}", dir.as_raw_fd());
        let mut children: Vec<OsString> = std::fs::read_dir(&listing)
            .map_err(self.err("list", name))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<io::Result<_>>()
            .map_err(self.err("list", name))?;
        children.sort();
        for child in children {
            self.child(dir, &child, &name.join(&child))?;
        }
        Ok(())
    }

    /// Archive `parent/child` as `name`, recursing into directories.
    fn child(&mut self, parent: &OwnedFd, child: &OsStr, name: &Path) -> Result<()> {
        let st = match sys::lstatat(parent, child) {
            Ok(st) => st,
            // Removed while we walk: as if it had never been there.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(()),
            Err(e) => return Err(self.err("stat", name)(e)),
        };
        match st.st_mode & libc::S_IFMT {
            libc::S_IFDIR => {
                let fd = sys::openat(parent, child, libc::O_RDONLY | libc::O_DIRECTORY, 0)
                    .map_err(self.err("open", name))?;
                self.dir(&fd, name)
            }
            libc::S_IFREG => {
                let fd = sys::openat(parent, child, libc::O_RDONLY, 0)
                    .map_err(self.err("open", name))?;
                // Stat what we opened: the name may have been replaced since.
                let st = sys::fstat(&fd).map_err(self.err("stat", name))?;
                if st.st_mode & libc::S_IFMT != libc::S_IFREG {
                    return Ok(());
                }
                let mut h = Self::header(&st, EntryType::Regular);
                if st.st_nlink > 1 {
                    let key = (st.st_dev, st.st_ino);
                    if let Some(first) = self.links.get(&key).cloned() {
                        h.set_entry_type(EntryType::Link);
                        let link = first.as_os_str().as_bytes().to_vec();
                        return self.put(&mut h, raw(name), Some(&link), io::empty(), name);
                    }
                    self.links.insert(key, name.to_path_buf());
                }
                let size = st.st_size.max(0) as u64;
                h.set_size(size);
                // A file that shrinks while we read it is padded, so the stream stays valid.
                let data = std::fs::File::from(fd)
                    .take(size)
                    .chain(io::repeat(0))
                    .take(size);
                self.put(&mut h, raw(name), None, data, name)
            }
            libc::S_IFLNK => {
                let target = sys::readlinkat(parent, child).map_err(self.err("read link", name))?;
                let mut h = Self::header(&st, EntryType::Symlink);
                self.put(
                    &mut h,
                    raw(name),
                    Some(target.as_bytes()),
                    io::empty(),
                    name,
                )
            }
            fmt @ (libc::S_IFCHR | libc::S_IFBLK | libc::S_IFIFO) => {
                let kind = match fmt {
                    libc::S_IFCHR => EntryType::Char,
                    libc::S_IFBLK => EntryType::Block,
                    _ => EntryType::Fifo,
                };
                let mut h = Self::header(&st, kind);
                if fmt != libc::S_IFIFO {
                    h.set_device_major(libc::major(st.st_rdev))
                        .map_err(self.err("write tar entry", name))?;
                    h.set_device_minor(libc::minor(st.st_rdev))
                        .map_err(self.err("write tar entry", name))?;
                }
                self.put(&mut h, raw(name), None, io::empty(), name)
            }
            // Sockets are not archived (as in Docker).
            _ => Ok(()),
        }
    }

    /// Append an entry named exactly `name` (the tar crate's own path setters normalise
    /// `./x` to `x`, but the docker CLI rebases `./` names from `/dir/.` archives by their
    /// leading `.`). Names and link targets over 100 bytes go in GNU long-name entries.
    fn put(
        &mut self,
        h: &mut tar::Header,
        name: &[u8],
        link: Option<&[u8]>,
        data: impl Read,
        shown: &Path,
    ) -> Result<()> {
        const FIELD: usize = 100;
        let long = |kind: EntryType, value: &[u8], b: &mut tar::Builder<W>| {
            let mut lh = tar::Header::new_gnu();
            lh.set_entry_type(kind);
            lh.as_old_mut().name[..13].copy_from_slice(b"././@LongLink");
            lh.set_mode(0o644);
            lh.set_uid(0);
            lh.set_gid(0);
            lh.set_mtime(0);
            lh.set_size(value.len() as u64 + 1);
            lh.set_cksum();
            b.append(&lh, value.chain(&b"\0"[..]))
        };
        let res = (|| {
            if name.len() > FIELD {
                long(EntryType::GNULongName, name, &mut self.b)?;
            }
            let n = name.len().min(FIELD);
            h.as_old_mut().name = [0; FIELD];
            h.as_old_mut().name[..n].copy_from_slice(&name[..n]);
            if let Some(link) = link {
                if link.len() > FIELD {
                    long(EntryType::GNULongLink, link, &mut self.b)?;
                }
                let n = link.len().min(FIELD);
                h.as_old_mut().linkname = [0; FIELD];
                h.as_old_mut().linkname[..n].copy_from_slice(&link[..n]);
            }
            h.set_cksum();
            self.b.append(h, data)
        })();
        res.map_err(self.err("write tar entry", shown))
    }

    fn finish(self) -> Result<W> {
        let label = self.label.to_path_buf();
        self.b.into_inner().ctx("finish tar", label)
    }
}

fn raw(p: &Path) -> &[u8] {
    p.as_os_str().as_bytes()
}

/// Normalise an entry name relative to the extraction directory: a leading `/` is dropped
/// (as dockerd joins names onto the destination), `..` may not climb above it. `None` is the
/// destination itself.
fn entry_rel(raw: &[u8]) -> Result<Option<PathBuf>> {
    let mut parts: Vec<&OsStr> = Vec::new();
    for c in Path::new(OsStr::from_bytes(raw)).components() {
        match c {
            Component::Normal(n) => parts.push(n),
            Component::ParentDir => {
                if parts.pop().is_none() {
                    return Err(Error::UnsafeEntry {
                        path: String::from_utf8_lossy(raw).into_owned(),
                        reason: "path is outside of the extraction directory".into(),
                    });
                }
            }
            Component::CurDir | Component::RootDir | Component::Prefix(_) => {}
        }
    }
    Ok(if parts.is_empty() {
        None
    } else {
        Some(parts.iter().collect())
    })
}

/// Whether a symlink at `rel` (relative to the extraction directory) with `target` stays
/// lexically inside that directory, dockerd's rule for archive symlinks. Absolute targets
/// are joined onto the link's directory by that rule, so they always pass.
fn symlink_stays_inside(rel: &Path, target: &[u8]) -> bool {
    if target.first() == Some(&b'/') {
        return true;
    }
    let mut depth = rel.components().count().saturating_sub(1);
    for c in Path::new(OsStr::from_bytes(target)).components() {
        match c {
            Component::ParentDir => {
                if depth == 0 {
                    return false;
                }
                depth -= 1;
            }
            Component::Normal(_) => depth += 1,
            _ => {}
        }
    }
    true
}

struct CopyExtractor<'a> {
    fs: &'a ContainerFs,
    /// The extraction directory, relative to the root, without symlinks.
    dest: PathBuf,
    opts: &'a ExtractOptions,
    /// Non-directories written by this extraction (relative to `dest`): hard link targets.
    extracted: HashSet<PathBuf>,
    dir_times: Vec<(PathBuf, i64)>,
    buf: Vec<u8>,
}

impl CopyExtractor<'_> {
    fn io_err(&self, what: &'static str, rel: &Path) -> impl FnOnce(io::Error) -> Error {
        self.fs.io_err(what, &self.dest.join(rel))
    }

    fn unsafe_entry(rel: &Path, reason: impl Into<String>) -> Error {
        Error::UnsafeEntry {
            path: rel.display().to_string(),
            reason: reason.into(),
        }
    }

    /// Open (creating as needed, mode 0755, owned by root) the parent of `rel`, resolved inside
    /// the container's root.
    fn parent(&self, rel: &Path) -> Result<OwnedFd> {
        let parent = rel.parent().unwrap_or(Path::new(""));
        let flags = libc::O_PATH | libc::O_DIRECTORY;
        let full = self.dest.join(parent);
        match sys::open_in_root(&self.fs.root, &full, flags) {
            Ok(fd) => return Ok(fd),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => {
                return Err(Self::unsafe_entry(rel, "a parent is not a directory"))
            }
            Err(e) => return Err(self.io_err("resolve directory", parent)(e)),
        }
        let mut prefix = self.dest.clone();
        let mut cur = sys::open_in_root(&self.fs.root, &prefix, flags)
            .map_err(self.io_err("open extraction directory", Path::new("")))?;
        for c in parent.components() {
            prefix.push(c);
            cur = match sys::open_in_root(&self.fs.root, &prefix, flags) {
                Ok(fd) => fd,
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                    match sys::mkdirat(&cur, c.as_os_str(), 0o755) {
                        Ok(()) => {}
                        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                            return Err(Self::unsafe_entry(
                                rel,
                                "a parent is a symlink to a missing directory",
                            ))
                        }
                        Err(e) => return Err(self.io_err("create directory", parent)(e)),
                    }
                    sys::open_in_root(&self.fs.root, &prefix, flags)
                        .map_err(self.io_err("resolve directory", parent))?
                }
                Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => {
                    return Err(Self::unsafe_entry(rel, "a parent is not a directory"))
                }
                Err(e) => return Err(self.io_err("resolve directory", parent)(e)),
            };
        }
        Ok(cur)
    }

    fn owner(&self, meta: &EntryMeta) -> (u32, u32) {
        self.opts.owner.unwrap_or((meta.uid, meta.gid))
    }

    /// Ownership, permissions and xattrs of an opened directory or regular file.
    fn set_fd_meta(&self, fd: &OwnedFd, meta: &EntryMeta, rel: &Path) -> Result<()> {
        let (uid, gid) = self.owner(meta);
        sys::fchown(fd, uid, gid).map_err(self.io_err("chown", rel))?;
        // After chown: chown clears setuid/setgid.
        sys::fchmod(fd, meta.mode).map_err(self.io_err("chmod", rel))?;
        for (k, v) in &meta.xattrs {
            if !unpack::keep_xattr(k) {
                continue;
            }
            match sys::fsetxattr(fd, k, v) {
                Ok(()) => {}
                // The target filesystem (a tmpfs volume, say) may not take it.
                Err(e) if e.raw_os_error() == Some(libc::ENOTSUP) => {
                    tracing::debug!(path = %rel.display(), xattr = %k, "xattr not supported")
                }
                Err(e) => return Err(self.io_err("set xattr", rel)(e)),
            }
        }
        Ok(())
    }

    fn entry(&mut self, kind: EntryType, meta: &EntryMeta, data: &mut dyn Read) -> Result<()> {
        let renamed;
        let meta = if self.opts.rename_top.is_some() {
            let rename = self.opts.rename_top.as_ref();
            renamed = EntryMeta {
                path: rename_top(&meta.path, rename),
                link: match kind {
                    EntryType::Link => meta.link.as_deref().map(|l| rename_top(l, rename)),
                    _ => meta.link.clone(),
                },
                xattrs: meta.xattrs.clone(),
                ..*meta
            };
            &renamed
        } else {
            meta
        };
        let Some(rel) = entry_rel(&meta.path)? else {
            // `./` describes the destination itself (dockerd applies its metadata).
            if kind == EntryType::Directory {
                let fd = sys::open_in_root(
                    &self.fs.root,
                    &self.dest,
                    libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
                )
                .map_err(self.io_err("open", Path::new("")))?;
                self.set_fd_meta(&fd, meta, Path::new(""))?;
                self.dir_times.push((PathBuf::new(), meta.mtime));
            }
            return Ok(());
        };
        let name = rel.file_name().map(OsStr::to_os_string).unwrap_or_default();
        // aufs metadata (.wh..wh.plnk and friends) is never part of a filesystem.
        if name.as_bytes().starts_with(b".wh..wh.") {
            return Ok(());
        }
        let parent = self.parent(&rel)?;
        let is_dir = kind == EntryType::Directory;

        // What is there already: replace it, unless both are directories.
        match sys::lstatat(&parent, &name) {
            Ok(st) => {
                let was_dir = st.st_mode & libc::S_IFMT == libc::S_IFDIR;
                let shown = || format!("/{}", self.dest.join(&rel).display());
                if !self.opts.allow_overwrite_dir_non_dir && was_dir && !is_dir {
                    return Err(Error::Overwrite {
                        path: shown(),
                        existing: "directory",
                        new: "non-directory",
                    });
                }
                if !self.opts.allow_overwrite_dir_non_dir && !was_dir && is_dir {
                    return Err(Error::Overwrite {
                        path: shown(),
                        existing: "non-directory",
                        new: "directory",
                    });
                }
                if kind == EntryType::Link
                    && meta
                        .link
                        .as_deref()
                        .map(entry_rel)
                        .transpose()?
                        .flatten()
                        .as_deref()
                        == Some(rel.as_path())
                {
                    // A hard link to itself: nothing to do.
                    return Ok(());
                }
                if was_dir && !is_dir {
                    sys::remove_tree_at(&parent, &name)
                        .map_err(self.io_err("remove directory", &rel))?;
                } else if !was_dir {
                    sys::unlinkat(&parent, &name, false).map_err(self.io_err("remove", &rel))?;
                }
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return Err(self.io_err("stat", &rel)(e)),
        }

        let (uid, gid) = self.owner(meta);
        match kind {
            EntryType::Directory => {
                match sys::mkdirat(&parent, &name, 0o700) {
                    Ok(()) => {}
                    Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
                    Err(e) => return Err(self.io_err("create directory", &rel)(e)),
                }
                let fd = sys::openat(&parent, &name, libc::O_RDONLY | libc::O_DIRECTORY, 0)
                    .map_err(self.io_err("open directory", &rel))?;
                self.set_fd_meta(&fd, meta, &rel)?;
                self.dir_times.push((rel, meta.mtime));
                return Ok(());
            }
            EntryType::Regular | EntryType::Continuous => {
                let fd = sys::openat(
                    &parent,
                    &name,
                    libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY,
                    0o600,
                )
                .map_err(self.io_err("create file", &rel))?;
                let mut file = std::fs::File::from(fd);
                let n = unpack::copy_buffered(&mut data.take(meta.size), &mut file, &mut self.buf)
                    .map_err(|e| match e.kind() {
                        io::ErrorKind::UnexpectedEof
                        | io::ErrorKind::InvalidData
                        | io::ErrorKind::InvalidInput => unpack::layer_read_err(e),
                        _ => self.io_err("write file", &rel)(e),
                    })?;
                if n != meta.size {
                    return Err(Error::InvalidLayer(format!(
                        "entry {} truncated: {n} of {} bytes",
                        rel.display(),
                        meta.size
                    )));
                }
                let fd = OwnedFd::from(file);
                self.set_fd_meta(&fd, meta, &rel)?;
                sys::futimes(&fd, meta.mtime).map_err(self.io_err("set times", &rel))?;
            }
            EntryType::Symlink => {
                let target = meta
                    .link
                    .as_deref()
                    .ok_or_else(|| Self::unsafe_entry(&rel, "symlink without a target"))?;
                if !symlink_stays_inside(&rel, target) {
                    return Err(Self::unsafe_entry(
                        &rel,
                        format!(
                            "invalid symlink to {:?}: it leads outside of the extraction directory",
                            String::from_utf8_lossy(target)
                        ),
                    ));
                }
                sys::symlinkat(OsStr::from_bytes(target), &parent, &name)
                    .map_err(self.io_err("create symlink", &rel))?;
                sys::lchownat(&parent, &name, uid, gid).map_err(self.io_err("chown", &rel))?;
                sys::lutimesat(&parent, &name, meta.mtime)
                    .map_err(self.io_err("set times", &rel))?;
            }
            EntryType::Link => {
                let raw = meta.link.as_deref().unwrap_or_default();
                let target = entry_rel(raw)?
                    .filter(|t| self.extracted.contains(t))
                    .ok_or_else(|| {
                        Self::unsafe_entry(
                            &rel,
                            format!(
                                "hard link target {:?} is not a file of this archive",
                                String::from_utf8_lossy(raw)
                            ),
                        )
                    })?;
                let tparent = self.parent(&target)?;
                let tname = target.file_name().unwrap_or_default();
                sys::linkat(&tparent, tname, &parent, &name)
                    .map_err(self.io_err("create hard link", &rel))?;
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                let fmt = match kind {
                    EntryType::Char => libc::S_IFCHR,
                    EntryType::Block => libc::S_IFBLK,
                    _ => libc::S_IFIFO,
                };
                sys::mknodat(
                    &parent,
                    &name,
                    fmt | (meta.mode & 0o777),
                    meta.dev_major,
                    meta.dev_minor,
                )
                .map_err(self.io_err("create device node", &rel))?;
                sys::lchownat(&parent, &name, uid, gid).map_err(self.io_err("chown", &rel))?;
                sys::chmod_nofollow(&parent, &name, meta.mode)
                    .map_err(self.io_err("chmod", &rel))?;
                sys::lutimesat(&parent, &name, meta.mtime)
                    .map_err(self.io_err("set times", &rel))?;
            }
            other => {
                return Err(Error::InvalidLayer(format!(
                    "unhandled tar entry type {other:?} for {}",
                    rel.display()
                )))
            }
        }
        self.extracted.insert(rel);
        Ok(())
    }

    /// Directory times last: writing entries changes them.
    fn finish(self) -> Result<()> {
        let mut done = HashSet::new();
        for (rel, mtime) in self.dir_times.iter().rev() {
            if !done.insert(rel) {
                continue;
            }
            let fd = match sys::open_in_root(
                &self.fs.root,
                &self.dest.join(rel),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
            ) {
                Ok(fd) => fd,
                // A later entry replaced the directory.
                Err(e) if is_not_found(&e) || e.raw_os_error() == Some(libc::ELOOP) => continue,
                Err(e) => return Err(self.io_err("open directory", rel)(e)),
            };
            sys::futimes(&fd, *mtime).map_err(self.io_err("set times", rel))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};

    /// A fake container root next to a host canary that nothing may read or write.
    struct Fixture {
        _tmp: tempfile::TempDir,
        root: PathBuf,
        canary: PathBuf,
    }

    const CANARY: &[u8] = b"host secret";

    fn fixture() -> Fixture {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().join("root");
        let canary = tmp.path().join("canary");
        fs::write(&canary, CANARY).expect("write canary");
        fs::create_dir_all(root.join("etc")).expect("mkdir");
        fs::write(root.join("etc/shadow"), b"container shadow").expect("write");
        fs::create_dir_all(root.join("data/sub")).expect("mkdir");
        fs::write(root.join("data/a.txt"), b"hello").expect("write");
        fs::write(root.join("data/sub/b.txt"), b"world").expect("write");
        // Escapes: absolute and relative links that point above the root, a link to the host
        // canary by its absolute host path, and a directory link in the middle of a path.
        symlink("/etc/shadow", root.join("x")).expect("symlink");
        symlink("../../../../etc", root.join("y")).expect("symlink");
        symlink(&canary, root.join("hostcanary")).expect("symlink");
        symlink("../..", root.join("data/up")).expect("symlink");
        symlink("/data", root.join("datalink")).expect("symlink");
        Fixture {
            _tmp: tmp,
            root,
            canary,
        }
    }

    impl Fixture {
        fn fs(&self) -> ContainerFs {
            ContainerFs::open(&self.root).expect("open root")
        }

        fn assert_canary(&self) {
            assert_eq!(fs::read(&self.canary).expect("read canary"), CANARY);
        }
    }

    fn names(tar_bytes: &[u8]) -> Vec<(String, Vec<u8>)> {
        let mut a = tar::Archive::new(tar_bytes);
        let mut out = Vec::new();
        for e in a.entries().expect("entries") {
            let mut e = e.expect("entry");
            let name = String::from_utf8_lossy(&e.path_bytes()).into_owned();
            let mut data = Vec::new();
            e.read_to_end(&mut data).expect("read entry");
            out.push((name, data));
        }
        out
    }

    fn tar_of(entries: &[(&str, EntryType, &[u8], Option<&str>)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, kind, data, link) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_mode(if *kind == EntryType::Directory {
                0o755
            } else {
                0o644
            });
            h.set_size(data.len() as u64);
            h.set_mtime(1_600_000_000);
            h.set_uid(0);
            h.set_gid(0);
            // Write raw names: the tar crate refuses `..` and absolute paths when building.
            let raw = &mut h.as_old_mut().name;
            raw[..name.len()].copy_from_slice(name.as_bytes());
            if let Some(l) = link {
                h.as_old_mut().linkname[..l.len()].copy_from_slice(l.as_bytes());
            }
            h.set_cksum();
            b.append(&h, *data).expect("append");
        }
        b.into_inner().expect("finish")
    }

    #[test]
    fn container_paths_keep_docker_trailing_forms() {
        let p = ContainerPath::parse("/etc/.");
        assert_eq!(
            (p.rel(), p.base(), p.follows_last()),
            ("etc".into(), ".".into(), true)
        );
        let p = ContainerPath::parse("etc/");
        assert_eq!(
            (p.rel(), p.base(), p.follows_last()),
            ("etc".into(), "etc".into(), true)
        );
        let p = ContainerPath::parse("/../a/../../b");
        assert_eq!(
            (p.rel(), p.base(), p.follows_last()),
            ("b".into(), "b".into(), false)
        );
        let p = ContainerPath::parse("/");
        assert_eq!((p.rel(), p.base()), (PathBuf::new(), "/".into()));
    }

    #[test]
    fn go_file_modes() {
        let st = |mode| PathStat {
            name: String::new(),
            size: 0,
            mode,
            mtime_secs: 0,
            mtime_nsecs: 0,
            link_target: String::new(),
        };
        assert_eq!(st(libc::S_IFDIR | 0o755).file_mode(), 2147484141);
        assert_eq!(st(libc::S_IFLNK | 0o777).file_mode(), 134218239);
        assert_eq!(st(libc::S_IFREG | 0o644).file_mode(), 0o644);
        assert_eq!(
            st(libc::S_IFCHR | 0o666).file_mode(),
            (1 << 26) | (1 << 21) | 0o666
        );
        assert_eq!(
            st(libc::S_IFREG | libc::S_ISUID | 0o755).file_mode(),
            (1 << 23) | 0o755
        );
    }

    #[test]
    fn symlinks_resolve_inside_the_root() {
        let f = fixture();
        let c = f.fs();
        assert_eq!(c.resolve("/x").expect("resolve"), "/etc/shadow");
        assert_eq!(c.resolve("/y").expect("resolve"), "/etc");
        assert_eq!(c.resolve("/y/shadow").expect("resolve"), "/etc/shadow");
        assert_eq!(c.resolve("/data/up/etc").expect("resolve"), "/etc");
        assert_eq!(
            c.resolve("/datalink/missing/z").expect("resolve"),
            "/data/missing/z"
        );
        let host = c.resolve("/hostcanary").expect("resolve");
        assert!(host.ends_with("/canary"), "{host}");
        // The host path of the canary does not exist inside the root.
        assert!(matches!(c.stat(&host), Err(Error::PathNotFound(_))));

        let st = c.stat("/x").expect("stat");
        assert_eq!(st.mode & libc::S_IFMT, libc::S_IFLNK);
        assert_eq!(
            (st.name.as_str(), st.link_target.as_str()),
            ("x", "/etc/shadow")
        );
        let st = c.stat("/y/").expect("stat");
        assert!(st.is_dir());
        assert_eq!(st.name, "y");
        let st = c.stat("/datalink/a.txt").expect("stat");
        assert_eq!((st.name.as_str(), st.size), ("a.txt", 5));
        assert!(matches!(c.stat("/nope"), Err(Error::PathNotFound(p)) if p == "/nope"));
        // A loop is an error, not a hang.
        symlink("/loop", f.root.join("loop")).expect("symlink");
        assert!(c.resolve("/loop").is_err());
    }

    #[test]
    fn archive_reads_only_the_container() {
        let f = fixture();
        let c = f.fs();
        // A final symlink is archived as a link, never followed.
        let t = names(&c.archive("/x", Vec::new()).expect("archive"));
        assert_eq!(t, vec![("x".to_string(), Vec::new())]);
        // Through `y -> ../../../../etc`: the container's /etc.
        let t = names(&c.archive("/y/shadow", Vec::new()).expect("archive"));
        assert_eq!(
            t,
            vec![("shadow".to_string(), b"container shadow".to_vec())]
        );
        // A link to the host canary's absolute path resolves inside the root: not found.
        let target = fs::read_link(f.root.join("hostcanary")).expect("readlink");
        let r = c.archive(&format!("/hostcanary/{}", target.display()), Vec::new());
        assert!(r.is_err());
        let r = c.archive("/hostcanary/", Vec::new());
        assert!(matches!(r, Err(Error::PathNotFound(_))), "{r:?}");

        let t = names(&c.archive("/datalink/", Vec::new()).expect("archive"));
        let n: Vec<&str> = t.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            n,
            [
                "datalink/",
                "datalink/a.txt",
                "datalink/sub/",
                "datalink/sub/b.txt",
                "datalink/up"
            ]
        );
        let t = names(&c.archive("/data/.", Vec::new()).expect("archive"));
        assert_eq!(t[0].0, "./");
        assert_eq!(t[1], ("./a.txt".to_string(), b"hello".to_vec()));
        f.assert_canary();
    }

    #[test]
    fn long_names_and_links_survive() {
        let f = fixture();
        let long = "n".repeat(150);
        fs::create_dir_all(f.root.join("data").join(&long)).expect("mkdir");
        fs::write(f.root.join("data").join(&long).join("f"), b"long").expect("write");
        symlink(format!("/{long}/{long}"), f.root.join("data/ln")).expect("symlink");
        let t = names(&f.fs().archive("/data", Vec::new()).expect("archive"));
        assert!(t
            .iter()
            .any(|(n, d)| *n == format!("data/{long}/f") && d == b"long"));
        let bytes = f.fs().archive("/data/ln", Vec::new()).expect("archive");
        let mut a = tar::Archive::new(bytes.as_slice());
        let e = a
            .entries()
            .expect("entries")
            .next()
            .expect("one")
            .expect("entry");
        assert_eq!(
            e.link_name_bytes().expect("link").as_ref(),
            format!("/{long}/{long}").as_bytes()
        );
    }

    #[test]
    fn hard_links_are_archived_once() {
        let f = fixture();
        fs::hard_link(f.root.join("data/a.txt"), f.root.join("data/z.txt")).expect("link");
        let bytes = f.fs().archive("/data", Vec::new()).expect("archive");
        let mut a = tar::Archive::new(bytes.as_slice());
        let link = a
            .entries()
            .expect("entries")
            .map(|e| e.expect("entry"))
            .find(|e| e.path_bytes().as_ref() == b"data/z.txt")
            .expect("z.txt");
        assert_eq!(link.header().entry_type(), EntryType::Link);
        assert_eq!(
            link.link_name_bytes().expect("link name").as_ref(),
            b"data/a.txt"
        );
    }

    #[test]
    fn extract_writes_inside_the_destination() {
        let f = fixture();
        let c = f.fs();
        let t = tar_of(&[
            ("new/", EntryType::Directory, b"", None),
            ("new/f.txt", EntryType::Regular, b"one", None),
            ("/abs.txt", EntryType::Regular, b"two", None),
            ("deep/er/g.txt", EntryType::Regular, b"three", None),
            ("new/h.txt", EntryType::Link, b"", Some("new/f.txt")),
            ("new/rel", EntryType::Symlink, b"", Some("../abs.txt")),
            ("new/abs", EntryType::Symlink, b"", Some("/etc/shadow")),
        ]);
        let opts = ExtractOptions {
            allow_overwrite_dir_non_dir: true,
            owner: Some((1234, 4321)),
            rename_top: None,
        };
        // Through a symlinked destination: `datalink -> /data`.
        c.extract("/datalink", t.as_slice(), &opts)
            .expect("extract");
        let d = f.root.join("data");
        assert_eq!(fs::read(d.join("new/f.txt")).expect("read"), b"one");
        assert_eq!(fs::read(d.join("abs.txt")).expect("read"), b"two");
        assert_eq!(fs::read(d.join("deep/er/g.txt")).expect("read"), b"three");
        let m = fs::metadata(d.join("new/h.txt")).expect("stat");
        assert_eq!((m.nlink(), m.uid(), m.gid()), (2, 1234, 4321));
        assert_eq!(m.mtime(), 1_600_000_000);
        assert_eq!(
            fs::metadata(d.join("new"))
                .expect("stat")
                .permissions()
                .mode()
                & 0o777,
            0o755
        );
        assert_eq!(
            fs::read_link(d.join("new/abs")).expect("readlink"),
            Path::new("/etc/shadow")
        );
        f.assert_canary();
    }

    #[test]
    fn extract_refuses_escapes() {
        let f = fixture();
        let c = f.fs();
        let opts = ExtractOptions {
            allow_overwrite_dir_non_dir: true,
            ..Default::default()
        };
        let canary_name = f.canary.display().to_string();
        let cases: Vec<Vec<u8>> = vec![
            tar_of(&[("../escape.txt", EntryType::Regular, b"x", None)]),
            tar_of(&[("a/../../escape.txt", EntryType::Regular, b"x", None)]),
            tar_of(&[("up", EntryType::Symlink, b"", Some("../../.."))]),
            // A hard link to something the archive did not create.
            tar_of(&[("hl", EntryType::Link, b"", Some(&canary_name))]),
            tar_of(&[("hl", EntryType::Link, b"", Some("../etc/shadow"))]),
        ];
        for t in cases {
            let r = c.extract("/data", t.as_slice(), &opts);
            assert!(matches!(r, Err(Error::UnsafeEntry { .. })), "{r:?}");
        }
        assert!(!f.root.join("escape.txt").exists());
        assert!(!f.root.join("data/hl").exists());

        // A symlink then a file through it: the link leads nowhere inside the root...
        let hostdir = f.canary.parent().expect("parent").display().to_string();
        let t = tar_of(&[
            ("esc", EntryType::Symlink, b"", Some(&hostdir)),
            ("esc/canary", EntryType::Regular, b"overwritten", None),
        ]);
        let r = c.extract("/", t.as_slice(), &opts);
        assert!(matches!(r, Err(Error::UnsafeEntry { .. })), "{r:?}");
        f.assert_canary();
        // ... and once that directory exists in the container, the file is written there.
        let inside = f.root.join(hostdir.trim_start_matches('/'));
        fs::create_dir_all(&inside).expect("mkdir");
        c.extract("/", t.as_slice(), &opts).expect("extract");
        f.assert_canary();
        let inside = inside.join("canary");
        assert_eq!(fs::read(inside).expect("read"), b"overwritten");

        // Into a destination whose path climbs out with `..` and absolute links.
        let t = tar_of(&[("canary", EntryType::Regular, b"overwritten", None)]);
        c.extract("/data/up/y/../../..", t.as_slice(), &opts)
            .expect("extract");
        assert_eq!(
            fs::read(f.root.join("canary")).expect("read"),
            b"overwritten"
        );
        f.assert_canary();
        // The link to the host canary is replaced, not written through.
        let t = tar_of(&[("hostcanary", EntryType::Regular, b"overwritten", None)]);
        c.extract("/", t.as_slice(), &opts).expect("extract");
        f.assert_canary();
    }

    #[test]
    fn extract_point_and_overwrite_rules() {
        let f = fixture();
        let c = f.fs();
        let t = tar_of(&[("a.txt", EntryType::Regular, b"x", None)]);
        let opts = ExtractOptions::default();
        assert!(matches!(
            c.extract("/data/a.txt", t.as_slice(), &opts),
            Err(Error::NotADirectory(_))
        ));
        assert!(matches!(
            c.extract("/missing", t.as_slice(), &opts),
            Err(Error::PathNotFound(_))
        ));
        let t = tar_of(&[("sub", EntryType::Regular, b"x", None)]);
        assert!(matches!(
            c.extract("/data", t.as_slice(), &opts),
            Err(Error::Overwrite { .. })
        ));
        let t = tar_of(&[("a.txt/", EntryType::Directory, b"", None)]);
        assert!(matches!(
            c.extract("/data", t.as_slice(), &opts),
            Err(Error::Overwrite { .. })
        ));
        let allow = ExtractOptions {
            allow_overwrite_dir_non_dir: true,
            ..Default::default()
        };
        c.extract("/data", t.as_slice(), &allow).expect("extract");
        assert!(f.root.join("data/a.txt").is_dir());
        // gzip-compressed archives are accepted.
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar_of(&[("z.txt", EntryType::Regular, b"zz", None)]))
            .expect("gzip");
        let gz = gz.finish().expect("gzip");
        c.extract("/data", gz.as_slice(), &allow).expect("extract");
        assert_eq!(fs::read(f.root.join("data/z.txt")).expect("read"), b"zz");
    }

    #[test]
    fn renames_follow_the_docker_cli() {
        let r = ("a".to_string(), "b".to_string());
        assert_eq!(rename_top(b"a/x", Some(&r)), b"b/x");
        assert_eq!(rename_top(b"/a", Some(&r)), b"b");
        assert_eq!(rename_top(b"ab/x", Some(&r)), b"ab/x");
        let dot = (".".to_string(), "d".to_string());
        assert_eq!(rename_top(b"./x", Some(&dot)), b"d/./x");
        assert_eq!(rename_top(b"x", None), b"x");

        let f = fixture();
        let c = f.fs();
        // (`/data` itself holds `up -> ../..`, which extraction refuses as dockerd does.)
        let t = c
            .archive_named("/data/sub", Some("copy"), Vec::new())
            .expect("archive");
        assert_eq!(names(&t)[1].0, "copy/b.txt");
        let opts = ExtractOptions {
            rename_top: Some(("copy".into(), "again".into())),
            ..Default::default()
        };
        c.extract("/", t.as_slice(), &opts).expect("extract");
        assert_eq!(
            fs::read(f.root.join("again/b.txt")).expect("read"),
            b"world"
        );
    }

    #[test]
    fn mount_targets_and_reads_stay_inside() {
        let f = fixture();
        let c = f.fs();
        // `y -> ../../../../etc`: the target is created under the container's /etc.
        c.mount_target("/y/vol/inner", true).expect("mount target");
        assert!(f.root.join("etc/vol/inner").is_dir());
        c.mount_target("/y/file", false).expect("mount target");
        assert!(f.root.join("etc/file").is_file());
        assert_eq!(
            c.read_file("/x", 1 << 10).expect("read"),
            b"container shadow"
        );
        assert!(c.read_file("/hostcanary", 1 << 10).is_err());
        f.assert_canary();
    }
}
