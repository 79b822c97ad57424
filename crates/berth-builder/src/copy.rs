//! COPY and ADD: sources resolved inside their root (the context or another stage's image,
//! never outside it, whatever `..` or symlinks say), wildcards expanded, the destination
//! decided as Docker decides it (a directory when it ends in `/`, when there are several
//! sources, or when it already is one), ownership 0:0 unless `--chown`, modes rewritten by
//! `--chmod`, and local tar archives (plain, gzip, zstd) unpacked by ADD. Content is written
//! into the target filesystem by the image store's extractor, so a destination symlink
//! cannot lead the copy out of the image either.

use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use berth_image::{ContainerFs, ExtractOptions};
use sha2::{Digest as _, Sha256};

use crate::context::walk_dir;
use crate::error::{Error, Result};
use crate::ignore::{clean, glob_match, is_glob};

/// Where COPY reads from.
pub struct SourceFs<'a> {
    /// The tree, opened as a root.
    pub fs: &'a ContainerFs,
    /// Its directory on the host (for walking and hashing; only ever read below it).
    pub root: &'a Path,
    /// The build context (its error texts differ from a `--from` image's).
    pub is_context: bool,
}

/// One COPY/ADD, arguments already substituted.
#[derive(Debug, Clone)]
pub struct CopyRequest {
    /// Sources as written (relative to the source root).
    pub srcs: Vec<String>,
    /// Absolute destination in the image, a trailing `/` kept.
    pub dest: String,
    /// `--chown`, unresolved (`user[:group]`).
    pub chown: Option<String>,
    /// `--chmod` as octal bits.
    pub chmod: Option<u32>,
    /// ADD (unpacks local archives).
    pub add: bool,
}

impl CopyRequest {
    fn keyword(&self) -> &'static str {
        if self.add {
            "ADD"
        } else {
            "COPY"
        }
    }
}

/// Expands wildcards and checks every source exists; returns container-style absolute paths
/// (symlinks of the final element are resolved by the copy itself).
pub fn expand_sources(src: &SourceFs<'_>, req: &CopyRequest) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut all: Option<Vec<String>> = None;
    for s in &req.srcs {
        let c = clean(s.trim_start_matches('/'));
        if is_glob(&c) {
            let paths = match &all {
                Some(p) => p,
                None => all.insert(walk_dir(src.root)?),
            };
            let hits: Vec<&String> = paths.iter().filter(|p| glob_match(&c, p)).collect();
            if hits.is_empty() {
                return Err(not_found(src, req, s));
            }
            out.extend(hits.into_iter().map(|h| format!("/{h}")));
            continue;
        }
        let path = if c == "." {
            "/".to_string()
        } else {
            format!("/{c}")
        };
        let resolved = src.fs.resolve(&path)?;
        if src.fs.stat(&resolved).is_err() {
            return Err(not_found(src, req, s));
        }
        out.push(path);
    }
    Ok(out)
}

fn not_found(src: &SourceFs<'_>, req: &CopyRequest, s: &str) -> Error {
    if src.is_context {
        Error::NotFound(format!(
            "{} failed: file not found in build context or excluded by .dockerignore: stat {s}: file does not exist",
            req.keyword()
        ))
    } else {
        Error::NotFound(format!(
            "{} failed: stat {s}: file does not exist",
            req.keyword()
        ))
    }
}

/// A digest of the sources' names, metadata and content (not their times), for the cache.
pub fn sources_digest(src: &SourceFs<'_>, sources: &[String]) -> Result<String> {
    let mut h = Sha256::new();
    for s in sources {
        let resolved = src.fs.resolve(s)?;
        h.update(s.as_bytes());
        h.update([0]);
        let top = src.root.join(resolved.trim_start_matches('/'));
        let mut paths = vec![PathBuf::new()];
        if std::fs::symlink_metadata(&top)
            .map(|m| m.is_dir())
            .unwrap_or(false)
        {
            paths.extend(walk_dir(&top)?.into_iter().map(PathBuf::from));
        }
        for rel in paths {
            let abs = if rel.as_os_str().is_empty() {
                top.clone()
            } else {
                top.join(&rel)
            };
            let m = std::fs::symlink_metadata(&abs).map_err(Error::io("stat", abs.clone()))?;
            h.update(rel.as_os_str().as_encoded_bytes());
            h.update(format!(
                "\0{:o} {} {} {}\0",
                m.mode(),
                m.uid(),
                m.gid(),
                m.len()
            ));
            if m.file_type().is_symlink() {
                let t = std::fs::read_link(&abs).map_err(Error::io("read link", abs.clone()))?;
                h.update(t.as_os_str().as_encoded_bytes());
            } else if m.is_file() {
                let mut f = File::open(&abs).map_err(Error::io("open", abs.clone()))?;
                io::copy(&mut f, &mut HashWriter(&mut h)).map_err(Error::io("read", abs))?;
            }
        }
    }
    Ok(hex::encode(h.finalize()))
}

struct HashWriter<'a>(&'a mut Sha256);

impl Write for HashWriter<'_> {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.0.update(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Resolves `--chown` (`user[:group]`, names looked up in the target's `/etc/passwd` and
/// `/etc/group`). Without a group, the user part names the group too, as in Docker.
pub fn resolve_chown(target: &ContainerFs, chown: &str) -> Result<(u32, u32)> {
    let (user, group) = match chown.split_once(':') {
        Some((u, g)) => (u, g),
        None => (chown, chown),
    };
    let uid = lookup(target, "/etc/passwd", user, "user")?;
    let gid = if group == user && !chown.contains(':') {
        // `--chown=name`: the group of that name, else the user's primary group.
        match lookup(target, "/etc/group", group, "group") {
            Ok(g) => g,
            Err(_) => primary_gid(target, user).unwrap_or(uid),
        }
    } else {
        lookup(target, "/etc/group", group, "group")?
    };
    Ok((uid, gid))
}

fn lookup(target: &ContainerFs, file: &str, name: &str, what: &str) -> Result<u32> {
    if let Ok(n) = name.parse::<u32>() {
        return Ok(n);
    }
    let text = target.read_file(file, 4 << 20).unwrap_or_default();
    String::from_utf8_lossy(&text)
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() > 2 && f[0] == name)
        .and_then(|f| f[2].parse().ok())
        .ok_or_else(|| {
            Error::Instruction(format!(
                "unable to convert uid/gid chown string to host mapping: can't find {what} {name}: no matching entries in {} file",
                file.trim_start_matches("/etc/")
            ))
        })
}

fn primary_gid(target: &ContainerFs, user: &str) -> Option<u32> {
    let text = target.read_file("/etc/passwd", 4 << 20).ok()?;
    String::from_utf8_lossy(&text)
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() > 3 && f[0] == user)
        .and_then(|f| f[3].parse().ok())
}

/// Whether the first bytes of a file are a tar archive, possibly gzip- or zstd-compressed.
fn is_archive(head: &[u8], file: &mut File) -> bool {
    let decompressed: Option<Box<dyn Read + '_>> = if head.starts_with(&[0x1f, 0x8b]) {
        Some(Box::new(flate2::read::GzDecoder::new(&mut *file)))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        // zstd: checked by the extractor; a header block is enough here.
        return true;
    } else {
        None
    };
    let block = match decompressed {
        Some(mut r) => {
            let mut b = vec![0u8; 512];
            match r.read_exact(&mut b) {
                Ok(()) => b,
                Err(_) => return false,
            }
        }
        None => head.to_vec(),
    };
    block.len() >= 512 && crate::context::looks_like_tar(&block)
}

/// Copies the request's sources from `src` into `target`; `tmp` holds the intermediate tars.
pub fn apply(
    src: &SourceFs<'_>,
    target: &ContainerFs,
    sources: &[String],
    req: &CopyRequest,
    owner: (u32, u32),
    tmp: &Path,
) -> Result<()> {
    let many = sources.len() > 1;
    if many && !req.dest.ends_with('/') {
        return Err(Error::Instruction(format!(
            "When using {} with more than one source file, the destination must be a directory and end with a /",
            req.keyword()
        )));
    }
    let opts = ExtractOptions {
        allow_overwrite_dir_non_dir: true,
        owner: Some(owner),
        rename_top: None,
    };
    for s in sources {
        let resolved = src.fs.resolve(s)?;
        let st = src.fs.stat(&resolved)?;
        let mut tar = tempfile::tempfile_in(tmp).map_err(Error::io("create temp file in", tmp))?;
        if st.is_dir() {
            let dest = make_dir(target, &req.dest)?;
            src.fs.archive_named(&resolved, Some("."), &mut tar)?;
            extract(target, &dest, tar, &opts, req.chmod, tmp)?;
            continue;
        }
        if req.add && src.is_context {
            let host = src.root.join(resolved.trim_start_matches('/'));
            let mut f = File::open(&host).map_err(Error::io("open", host.clone()))?;
            let mut head = vec![0u8; 512];
            let n = read_full(&mut f, &mut head).map_err(Error::io("read", host.clone()))?;
            head.truncate(n);
            if is_archive(&head, &mut f) {
                f.rewind().map_err(Error::io("rewind", host.clone()))?;
                let dest = make_dir(target, &req.dest)?;
                // Archive entries keep their own owners unless --chown was given.
                let archive_opts = ExtractOptions {
                    owner: req.chown.as_ref().map(|_| owner),
                    ..opts.clone()
                };
                target.extract(&dest, f, &archive_opts)?;
                continue;
            }
        }
        let base = Path::new(&resolved)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let dest_is_dir = req.dest.ends_with('/')
            || many
            || target
                .resolve(&req.dest)
                .and_then(|r| target.stat(&r))
                .map(|st| st.is_dir())
                .unwrap_or(false);
        let (dir, name) = if dest_is_dir {
            (req.dest.trim_end_matches('/').to_string(), base)
        } else {
            let p = Path::new(&req.dest);
            (
                p.parent()
                    .map(|d| d.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "/".into()),
                p.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or(base),
            )
        };
        let dir = if dir.is_empty() { "/".to_string() } else { dir };
        let dir = make_dir(target, &dir)?;
        src.fs.archive_named(&resolved, Some(&name), &mut tar)?;
        extract(target, &dir, tar, &opts, req.chmod, tmp)?;
    }
    Ok(())
}

/// Creates directory `path` in the target (parents too, 0755), symlinks on the way followed
/// inside the target as Docker follows them; returns the resolved path.
fn make_dir(target: &ContainerFs, path: &str) -> Result<String> {
    let resolved = target.resolve(path)?;
    target.mount_target(&resolved, true)?;
    Ok(resolved)
}

fn read_full(f: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Extracts the tar in `tar` at `dir`, with every mode set to `chmod` when given.
fn extract(
    target: &ContainerFs,
    dir: &str,
    mut tar: File,
    opts: &ExtractOptions,
    chmod: Option<u32>,
    tmp: &Path,
) -> Result<()> {
    tar.rewind().map_err(Error::io("rewind", tmp))?;
    let tar = match chmod {
        None => tar,
        Some(mode) => with_mode(tar, mode, tmp)?,
    };
    target.extract(dir, io::BufReader::new(tar), opts)?;
    Ok(())
}

/// Rewrites a tar with `mode` on every file and directory (`--chmod`).
fn with_mode(tar: File, mode: u32, tmp: &Path) -> Result<File> {
    let out = tempfile::tempfile_in(tmp).map_err(Error::io("create temp file in", tmp))?;
    let mut archive = tar::Archive::new(io::BufReader::new(tar));
    let mut b = tar::Builder::new(out);
    let err = Error::io("rewrite archive in", tmp);
    let result: io::Result<()> = (|| {
        for e in archive.entries()? {
            let e = e?;
            let mut h = e.header().clone();
            let path = e.path()?.into_owned();
            let kind = h.entry_type();
            if kind.is_file() || kind.is_dir() {
                h.set_mode(mode & 0o7777);
            }
            if kind.is_symlink() || kind.is_hard_link() {
                let target = e.link_name()?.map(|l| l.into_owned()).unwrap_or_default();
                b.append_link(&mut h, &path, target)?;
            } else {
                b.append_data(&mut h, &path, e)?;
            }
        }
        b.finish()
    })();
    result.map_err(err)?;
    let mut out = b
        .into_inner()
        .map_err(Error::io("rewrite archive in", tmp))?;
    out.rewind().map_err(Error::io("rewind", tmp))?;
    Ok(out)
}

/// Parses `--chmod` (octal).
pub fn parse_chmod(s: &str) -> Result<u32> {
    u32::from_str_radix(s, 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .ok_or_else(|| {
            Error::Instruction(format!(
                "invalid chmod parameter {s}: expected octal permission bits"
            ))
        })
}
