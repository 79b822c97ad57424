//! Hostile layers, each built in the test: every one is refused with a clear error (or, where
//! harmless, contained inside the snapshot), writes nothing outside the snapshot, and leaves no
//! partial snapshot or blob behind.

mod common;

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::PathBuf;

use berth_image::{Error, ErrorKind};
use common::*;

struct Case {
    ts: TestStore,
    outside: PathBuf,
}

impl Case {
    fn new() -> Case {
        let ts = TestStore::new();
        let outside = ts.dir.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("victim"), b"original").unwrap();
        Case { ts, outside }
    }

    fn put(&self, layer: &[u8]) -> Result<(), Error> {
        self.ts.store.put_layer(layer, None, None).map(|_| ())
    }

    /// The layer was refused and nothing is left anywhere.
    fn refused(&self, layer: &[u8], want: ErrorKind) -> String {
        let err = self.put(layer).expect_err("hostile layer accepted");
        assert_eq!(err.kind(), want, "{err}");
        self.assert_clean();
        err.to_string()
    }

    fn assert_clean(&self) {
        assert_eq!(self.ts.count("snapshots"), 0, "partial snapshot left");
        assert_eq!(self.ts.count("blobs/sha256"), 0, "blob left");
        assert_eq!(self.ts.count("tmp"), 0, "temp files left");
        self.assert_outside_untouched();
    }

    fn assert_outside_untouched(&self) {
        let names: Vec<_> = std::fs::read_dir(&self.outside)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec!["victim"], "something was written outside");
        assert_eq!(
            std::fs::read(self.outside.join("victim")).unwrap(),
            b"original"
        );
    }

    fn only_snapshot(&self) -> PathBuf {
        let e = std::fs::read_dir(self.ts.root().join("snapshots"))
            .unwrap()
            .next()
            .unwrap()
            .unwrap();
        e.path().join("fs")
    }
}

#[test]
fn dotdot_paths_are_refused() {
    let c = Case::new();
    let msg = c.refused(
        &Layer::new()
            .raw(
                b"../../outside/victim",
                tar::EntryType::Regular,
                b"",
                b"pwned",
            )
            .tar(),
        ErrorKind::InvalidInput,
    );
    assert!(msg.contains(".."), "{msg}");
    c.refused(
        &Layer::new()
            .dir("a")
            .raw(b"a/../../x", tar::EntryType::Regular, b"", b"x")
            .tar(),
        ErrorKind::InvalidInput,
    );
}

#[test]
fn absolute_paths_are_refused() {
    let c = Case::new();
    let name = format!("{}/victim", c.outside.display());
    let msg = c.refused(
        &Layer::new()
            .raw(name.as_bytes(), tar::EntryType::Regular, b"", b"pwned")
            .tar(),
        ErrorKind::InvalidInput,
    );
    assert!(msg.contains("absolute"), "{msg}");
}

#[test]
fn writes_through_symlinks_pointing_out_are_refused() {
    let c = Case::new();
    let abs = c.outside.display().to_string();
    // Absolute symlink to a host directory, then a file below it.
    c.refused(
        &Layer::new()
            .symlink("link", &abs)
            .file("link/victim", b"pwned")
            .tar(),
        ErrorKind::InvalidInput,
    );
    // Relative symlink climbing out.
    let up = format!("../../../../../../../../..{abs}");
    c.refused(
        &Layer::new()
            .symlink("up", &up)
            .file("up/new", b"pwned")
            .tar(),
        ErrorKind::InvalidInput,
    );
    // A symlink to "/" is the layer root: the write lands inside the snapshot.
    c.put(
        &Layer::new()
            .symlink("root", "/")
            .file("root/inside", b"ok")
            .tar(),
    )
    .unwrap();
    assert_eq!(
        std::fs::read(c.only_snapshot().join("inside")).unwrap(),
        b"ok"
    );
    c.assert_outside_untouched();
}

#[test]
fn symlink_then_directory_replaces_the_symlink() {
    let c = Case::new();
    let abs = c.outside.display().to_string();
    c.put(
        &Layer::new()
            .symlink("d", &abs)
            .dir("d")
            .file("d/victim", b"inside")
            .tar(),
    )
    .unwrap();
    let snap = c.only_snapshot();
    assert!(std::fs::symlink_metadata(snap.join("d")).unwrap().is_dir());
    assert_eq!(std::fs::read(snap.join("d/victim")).unwrap(), b"inside");
    c.assert_outside_untouched();
}

#[test]
fn hardlinks_outside_the_layer_are_refused() {
    let c = Case::new();
    let abs = format!("{}/victim", c.outside.display());
    c.refused(
        &Layer::new().hardlink("h", &abs).tar(),
        ErrorKind::InvalidInput,
    );
    c.refused(
        &Layer::new()
            .raw(b"h", tar::EntryType::Link, b"../../outside/victim", b"")
            .tar(),
        ErrorKind::InvalidInput,
    );
    // Through a symlink: the link is to the symlink itself, and rewriting it replaces it.
    c.put(
        &Layer::new()
            .symlink("s", &abs)
            .hardlink("h", "s")
            .file("h", b"pwned")
            .tar(),
    )
    .unwrap();
    c.assert_outside_untouched();
}

#[test]
fn hardlinks_inside_the_layer_work() {
    let c = Case::new();
    c.put(&Layer::new().file("a", b"data").hardlink("b", "a").tar())
        .unwrap();
    let s = c.only_snapshot();
    assert_eq!(
        std::fs::metadata(s.join("a")).unwrap().ino(),
        std::fs::metadata(s.join("b")).unwrap().ino()
    );
}

#[test]
fn device_nodes_fifos_and_setuid_are_kept_as_data() {
    let c = Case::new();
    let mut b = tar::Builder::new(Vec::new());
    for (name, kind, major, minor) in [
        ("dev/null", tar::EntryType::Char, 1, 3),
        ("dev/loop9", tar::EntryType::Block, 7, 9),
        ("p", tar::EntryType::Fifo, 0, 0),
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(0o666);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_size(0);
        h.set_device_major(major).unwrap();
        h.set_device_minor(minor).unwrap();
        b.append_data(&mut h, name, std::io::empty()).unwrap();
    }
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o4755);
    h.set_uid(1000);
    h.set_gid(1000);
    h.set_mtime(0);
    h.set_size(2);
    b.append_data(&mut h, "suid", &b"#!"[..]).unwrap();
    c.put(&b.into_inner().unwrap()).unwrap();
    let s = c.only_snapshot();
    let null = std::fs::symlink_metadata(s.join("dev/null")).unwrap();
    assert!(null.file_type().is_char_device());
    assert_eq!((libc::major(null.rdev()), libc::minor(null.rdev())), (1, 3));
    assert!(std::fs::symlink_metadata(s.join("dev/loop9"))
        .unwrap()
        .file_type()
        .is_block_device());
    assert!(std::fs::symlink_metadata(s.join("p"))
        .unwrap()
        .file_type()
        .is_fifo());
    let suid = std::fs::metadata(s.join("suid")).unwrap();
    assert_eq!(
        suid.permissions().mode() & 0o7777,
        0o4755,
        "setuid kept after chown"
    );
    assert_eq!(suid.uid(), 1000);
    // Only root can reach any of it.
    assert_eq!(
        std::fs::metadata(c.ts.root()).unwrap().permissions().mode() & 0o777,
        0o700
    );
}

#[test]
fn enormous_extension_headers_are_bounded() {
    let c = Case::new();
    let huge = vec![b'a'; (berth_image::MAX_SPECIAL_HEADER + 1) as usize];
    let msg = c.refused(
        &Layer::new()
            .raw(b"././@LongLink", tar::EntryType::GNULongName, b"", &huge)
            .file("x", b"")
            .tar(),
        ErrorKind::InvalidInput,
    );
    assert!(msg.contains("limit"), "{msg}");
    c.refused(
        &Layer::new()
            .raw(b"PaxHeader", tar::EntryType::XHeader, b"", &huge)
            .file("x", b"")
            .tar(),
        ErrorKind::InvalidInput,
    );
    // A malformed PAX record is refused as well.
    c.refused(
        &Layer::new()
            .raw(
                b"PaxHeader",
                tar::EntryType::XHeader,
                b"",
                b"99999 path=x\n",
            )
            .file("x", b"")
            .tar(),
        ErrorKind::InvalidInput,
    );
    // Within bounds, long names work.
    let long = format!("{}/f", "d".repeat(200));
    c.put(&Layer::new().file(&long, b"ok").tar()).unwrap();
    assert_eq!(std::fs::read(c.only_snapshot().join(&long)).unwrap(), b"ok");
}

#[test]
fn truncated_and_corrupted_streams_are_refused() {
    let c = Case::new();
    let big: Vec<u8> = (0..200_000u32).flat_map(|i| i.to_le_bytes()).collect();
    let gz = Layer::new().file("big", &big).file("after", b"x").gzip();
    c.refused(&gz[..gz.len() / 2], ErrorKind::InvalidInput);
    let mut bad = gz.clone();
    let n = bad.len();
    for b in &mut bad[n / 3..n / 3 + 64] {
        *b ^= 0x5a;
    }
    c.refused(&bad, ErrorKind::InvalidInput);
    let mut bad_crc = gz.clone();
    bad_crc[n - 6] ^= 0xff;
    c.refused(&bad_crc, ErrorKind::InvalidInput);
    let zs = Layer::new().file("big", &big).zstd();
    c.refused(&zs[..zs.len() - 10], ErrorKind::InvalidInput);
    let tar = Layer::new().file("big", &big).tar();
    c.refused(&tar[..tar.len() / 2], ErrorKind::InvalidInput);
}

#[test]
fn digest_mismatches_are_refused() {
    let c = Case::new();
    let layer = Layer::new().file("a", b"a").gzip();
    let wrong: berth_image::Digest = berth_image::Digest::of(b"something else");
    let err =
        c.ts.store
            .put_layer(layer.as_slice(), Some(&wrong), None)
            .unwrap_err();
    assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");
    c.assert_clean();
    let err =
        c.ts.store
            .put_blob(&b"abc"[..], Some(&wrong), None)
            .unwrap_err();
    assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");
    c.assert_clean();
    // An archive whose config names other diff IDs than its layers have.
    let dir = c.ts.dir.path().join("layout");
    let mut layers = multi_layer_image();
    layers[1].2 = b"not the real tar".to_vec();
    write_oci_layout(&dir, &layers, "latest");
    let err = c.ts.store.load(tar_dir(&dir).as_slice()).unwrap_err();
    assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");
    assert!(c.ts.store.list().unwrap().is_empty());
    // A blob whose content does not match its name in an archive.
    let blob = std::fs::read_dir(dir.join("blobs/sha256"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    std::fs::write(&blob, b"tampered").unwrap();
    assert!(c.ts.store.load(tar_dir(&dir).as_slice()).is_err());
}

#[test]
fn overlay_control_xattrs_from_layers_are_dropped() {
    let c = Case::new();
    let mut pax = Vec::new();
    for (k, v) in [
        ("SCHILY.xattr.trusted.overlay.redirect", "/etc"),
        ("SCHILY.xattr.user.keep", "yes"),
    ] {
        let rec = format!(" {k}={v}\n");
        let mut len = rec.len() + 1;
        while len.to_string().len() + rec.len() != len {
            len += 1;
        }
        pax.extend_from_slice(format!("{len}{rec}").as_bytes());
    }
    c.put(
        &Layer::new()
            .raw(b"PaxHeader", tar::EntryType::XHeader, b"", &pax)
            .file("f", b"x")
            .tar(),
    )
    .unwrap();
    let f = c.only_snapshot().join("f");
    assert_eq!(xattr(&f, "user.keep").as_deref(), Some(&b"yes"[..]));
    assert_eq!(xattr(&f, "trusted.overlay.redirect"), None);
}

fn xattr(p: &std::path::Path, name: &str) -> Option<Vec<u8>> {
    let path = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    let name = std::ffi::CString::new(name).unwrap();
    let mut buf = vec![0u8; 256];
    // SAFETY: valid C strings and a writable buffer of the given length.
    let n = unsafe {
        libc::lgetxattr(
            path.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n < 0 {
        return None;
    }
    buf.truncate(n as usize);
    Some(buf)
}

#[test]
fn later_entries_replace_earlier_ones_of_another_type() {
    let c = Case::new();
    let layer = Layer::new()
        .dir("a")
        .dir("a/sub")
        .file("a/sub/f", b"1")
        .symlink("a/sub/l", "/etc")
        .file("a", b"now a file")
        .file("b", b"file")
        .dir("b")
        .file("b/x", b"x")
        .tar();
    c.put(&layer).unwrap();
    let s = c.only_snapshot();
    assert_eq!(std::fs::read(s.join("a")).unwrap(), b"now a file");
    assert!(std::fs::metadata(s.join("b")).unwrap().is_dir());
    assert_eq!(std::fs::read(s.join("b/x")).unwrap(), b"x");
    c.assert_outside_untouched();
}
