//! The build context: the request body (a tar stream, plain or compressed, or a bare
//! Dockerfile) unpacked into a private temporary directory with the image store's
//! hostile-archive-safe extraction (entries are resolved inside the directory, `../` and
//! absolute names cannot leave it), then read only through a [`ContainerFs`] rooted there, so
//! COPY sources and symlinks in the context resolve inside it too.

use std::io::{self, Read};
use std::path::{Path, PathBuf};

use berth_image::{ContainerFs, ExtractOptions};

use crate::error::{Error, Result};
use crate::ignore::Matcher;

/// Largest Dockerfile read.
const MAX_DOCKERFILE: u64 = 16 << 20;

/// An unpacked build context.
pub struct Context {
    dir: tempfile::TempDir,
    fs: ContainerFs,
}

/// Whether a 512-byte block is a tar header: `ustar` magic, or (v7 archives) a checksum
/// field that matches the block.
pub(crate) fn looks_like_tar(head: &[u8]) -> bool {
    if head.len() < 512 {
        return false;
    }
    if &head[257..262] == b"ustar" {
        return true;
    }
    let field = String::from_utf8_lossy(&head[148..156]);
    let Ok(want) = u32::from_str_radix(field.trim_matches(|c: char| c == ' ' || c == '\0'), 8)
    else {
        return false;
    };
    let sum: u32 = head[..512]
        .iter()
        .enumerate()
        .map(|(i, b)| {
            if (148..156).contains(&i) {
                32
            } else {
                u32::from(*b)
            }
        })
        .sum();
    sum == want
}

/// Walks the tar headers in `f`; when the data ends exactly where an entry's content does,
/// appends the padding and the end-of-archive blocks a tar reader expects. Leaves `f`
/// rewound. Anything else (a truncated entry) is left for the extractor to refuse.
fn complete_tar(f: &mut std::fs::File) -> io::Result<()> {
    use std::io::{Seek, SeekFrom, Write};
    let len = f.seek(SeekFrom::End(0))?;
    let mut off = 0u64;
    let mut block = [0u8; 512];
    let missing = loop {
        if off == len {
            break 1024;
        }
        if off + 512 > len {
            break 0;
        }
        f.seek(SeekFrom::Start(off))?;
        f.read_exact(&mut block)?;
        if block.iter().all(|b| *b == 0) {
            break 0;
        }
        let Ok(size) = tar::Header::from_byte_slice(&block).entry_size() else {
            break 0;
        };
        let end = off + 512 + size;
        let padded = end.div_ceil(512) * 512;
        if end == len && padded != len {
            break padded - len + 1024;
        }
        off = padded;
    };
    if missing > 0 {
        f.seek(SeekFrom::End(0))?;
        f.write_all(&vec![0u8; missing as usize])?;
    }
    f.rewind()
}

fn read_head(r: &mut dyn Read, n: usize) -> io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(n);
    r.take(n as u64).read_to_end(&mut head)?;
    Ok(head)
}

impl Context {
    /// Unpacks `body` (a tar, gzip/zstd-compressed tar, or a bare Dockerfile, which becomes
    /// `Dockerfile`) under a new directory in `tmp_parent`.
    pub fn from_reader(mut body: impl Read, tmp_parent: &Path) -> Result<Context> {
        let dir = tempfile::Builder::new()
            .prefix("build-")
            .tempdir_in(tmp_parent)
            .map_err(Error::io("create build context directory in", tmp_parent))?;
        let fs = ContainerFs::open(dir.path())?;
        let ctx = Context { dir, fs };
        let magic = read_head(&mut body, 2).map_err(Error::io("read build context", ctx.path()))?;
        let gz = magic == [0x1f, 0x8b];
        let rest = io::Cursor::new(magic).chain(body);
        let mut plain: Box<dyn Read> = if gz {
            Box::new(flate2::read::MultiGzDecoder::new(rest))
        } else {
            Box::new(rest)
        };
        let head =
            read_head(&mut plain, 512).map_err(Error::io("read build context", ctx.path()))?;
        if head.is_empty() {
            return Ok(ctx);
        }
        let mut stream = io::Cursor::new(head.clone()).chain(plain);
        if looks_like_tar(&head) || head.iter().all(|b| *b == 0) {
            // Spooled first: the docker CLI's tar for `-f -` ends right after the last file's
            // content (no padding, no end blocks), which Go's reader takes as the end and the
            // extractor does not, so the archive is completed before it is unpacked.
            let mut spool = tempfile::tempfile_in(tmp_parent)
                .map_err(Error::io("create temp file in", tmp_parent))?;
            io::copy(&mut stream, &mut spool)
                .map_err(|e| Error::Context(format!("read build context: {e}")))?;
            complete_tar(&mut spool)
                .map_err(Error::io("complete build context archive in", tmp_parent))?;
            ctx.fs
                .extract("/", io::BufReader::new(spool), &ExtractOptions::default())
                .map_err(|e| match e.kind() {
                    berth_image::ErrorKind::InvalidInput => {
                        Error::Context(format!("invalid build context: {e}"))
                    }
                    _ => e.into(),
                })?;
        } else {
            let mut text = Vec::new();
            stream
                .take(MAX_DOCKERFILE)
                .read_to_end(&mut text)
                .map_err(Error::io("read Dockerfile from", ctx.path()))?;
            let p = ctx.path().join("Dockerfile");
            std::fs::write(&p, text).map_err(Error::io("write", p))?;
        }
        Ok(ctx)
    }

    /// The context's directory (removed when the context is dropped).
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The context as a filesystem rooted at its directory.
    pub fn fs(&self) -> &ContainerFs {
        &self.fs
    }

    /// Reads the Dockerfile named `name` (relative to the context; `Dockerfile` falls back
    /// to `dockerfile` as dockerd does).
    pub fn dockerfile(&self, name: &str) -> Result<String> {
        let name = if name.is_empty() { "Dockerfile" } else { name };
        let mut candidates = vec![name.to_string()];
        if name == "Dockerfile" {
            candidates.push("dockerfile".into());
        }
        for c in &candidates {
            match self.fs.read_file(c, MAX_DOCKERFILE) {
                Ok(b) => return Ok(String::from_utf8_lossy(&b).into_owned()),
                Err(berth_image::Error::PathNotFound(_)) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::NotFound(format!(
            "Cannot locate specified Dockerfile: {name}"
        )))
    }

    /// The context's `.dockerignore`, if any.
    pub fn dockerignore(&self) -> Result<Option<Matcher>> {
        match self.fs.read_file(".dockerignore", MAX_DOCKERFILE) {
            Ok(b) => Ok(Some(Matcher::parse(&String::from_utf8_lossy(&b)))),
            Err(berth_image::Error::PathNotFound(_)) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// As dockerd: when `.dockerignore` names itself or the Dockerfile, they are removed from
    /// the context after the Dockerfile was read, so `COPY . /x` does not copy them.
    pub fn remove_ignored_specials(&self, dockerfile: &str) -> Result<()> {
        let Some(m) = self.dockerignore()? else {
            return Ok(());
        };
        for name in [".dockerignore", dockerfile] {
            let clean = crate::ignore::clean(name);
            if clean == "." || !m.excludes(&clean) {
                continue;
            }
            // Resolved inside the context: a symlinked name can only remove context files.
            let resolved = self.fs.resolve(&clean)?;
            let p = self.path().join(resolved.trim_start_matches('/'));
            if p == self.path() {
                continue;
            }
            match std::fs::symlink_metadata(&p) {
                Ok(m) if m.is_dir() => {
                    std::fs::remove_dir_all(&p).map_err(Error::io("remove", p))?
                }
                Ok(_) => std::fs::remove_file(&p).map_err(Error::io("remove", p))?,
                Err(_) => {}
            }
        }
        Ok(())
    }

    /// Every path of the context (relative, `/`-separated, sorted), for wildcard sources.
    pub fn walk(&self) -> Result<Vec<String>> {
        walk_dir(self.path())
    }
}

/// Every path under `root`, relative, sorted; symlinks are not followed.
pub(crate) fn walk_dir(root: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut stack: Vec<PathBuf> = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let abs = root.join(&rel);
        let rd = match std::fs::read_dir(&abs) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io("list", abs)(e)),
        };
        for e in rd {
            let e = e.map_err(Error::io("list", abs.clone()))?;
            let r = rel.join(e.file_name());
            let is_dir = e.file_type().map(|t| t.is_dir()).unwrap_or(false);
            out.push(r.to_string_lossy().into_owned());
            if is_dir {
                stack.push(r);
            }
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            h.set_entry_type(tar::EntryType::Regular);
            // Written raw so hostile names reach the extractor unchanged.
            let bytes = name.as_bytes();
            h.as_gnu_mut().unwrap().name[..bytes.len()].copy_from_slice(bytes);
            h.set_cksum();
            b.append(&h, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn tar_context_and_dockerfile_lookup() {
        let tmp = tempfile::tempdir().unwrap();
        let t = tar_of(&[("dockerfile", b"FROM x\n"), ("a/b.txt", b"hi")]);
        let ctx = Context::from_reader(t.as_slice(), tmp.path()).unwrap();
        assert_eq!(ctx.dockerfile("Dockerfile").unwrap(), "FROM x\n");
        assert!(ctx.dockerfile("nope").is_err());
        assert_eq!(ctx.walk().unwrap(), vec!["a", "a/b.txt", "dockerfile"]);
    }

    #[test]
    fn unpadded_last_entry_is_completed() {
        let tmp = tempfile::tempdir().unwrap();
        let mut t = tar_of(&[("Dockerfile", b"FROM x\n"), ("last", b"abc")]);
        // What the docker CLI sends for `-f -`: no padding after `last`, no end blocks.
        t.truncate(512 * 3 + 3);
        let ctx = Context::from_reader(t.as_slice(), tmp.path()).unwrap();
        assert_eq!(std::fs::read(ctx.path().join("last")).unwrap(), b"abc");
        // A cut inside an entry stays an error.
        let mut t = tar_of(&[("Dockerfile", b"FROM x\n"), ("big", &[7u8; 2000])]);
        t.truncate(512 * 3 + 100);
        assert!(Context::from_reader(t.as_slice(), tmp.path()).is_err());
    }

    #[test]
    fn gzip_and_bare_dockerfile() {
        let tmp = tempfile::tempdir().unwrap();
        let t = tar_of(&[("Dockerfile", b"FROM y\n")]);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &t).unwrap();
        let ctx = Context::from_reader(gz.finish().unwrap().as_slice(), tmp.path()).unwrap();
        assert_eq!(ctx.dockerfile("").unwrap(), "FROM y\n");
        let ctx = Context::from_reader(&b"FROM z\nRUN true\n"[..], tmp.path()).unwrap();
        assert_eq!(ctx.dockerfile("Dockerfile").unwrap(), "FROM z\nRUN true\n");
    }

    #[test]
    fn hostile_names_stay_inside() {
        let outer = tempfile::tempdir().unwrap();
        let t = tar_of(&[("../escape.txt", b"x"), ("/abs.txt", b"y")]);
        let ctx = Context::from_reader(t.as_slice(), outer.path());
        // Either refused or kept inside; never written next to the context.
        assert!(!outer.path().join("escape.txt").exists());
        assert!(!Path::new("/abs.txt").exists() || std::fs::read("/abs.txt").unwrap() != b"y");
        if let Ok(ctx) = ctx {
            assert!(ctx.path().starts_with(outer.path()));
        }
    }

    #[test]
    fn ignored_dockerfile_is_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let t = tar_of(&[
            ("Dockerfile", b"FROM x\n"),
            (".dockerignore", b"Dockerfile\n.dockerignore\n"),
            ("keep", b"k"),
        ]);
        let ctx = Context::from_reader(t.as_slice(), tmp.path()).unwrap();
        ctx.remove_ignored_specials("Dockerfile").unwrap();
        assert_eq!(ctx.walk().unwrap(), vec!["keep"]);
    }
}
