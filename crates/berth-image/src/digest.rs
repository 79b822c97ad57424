//! Content digests (`sha256:<hex>`) and readers that hash what flows through them.

use std::fmt;
use std::io::{self, Read, Write};
use std::str::FromStr;

use sha2::{Digest as _, Sha256};

use crate::error::{Error, Result};

/// A validated `sha256:<64 lowercase hex>` digest.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(String);

impl Digest {
    /// Digest of a byte slice.
    pub fn of(bytes: &[u8]) -> Digest {
        Digest(format!("sha256:{}", hex::encode(Sha256::digest(bytes))))
    }

    /// Build from the 64-character hex part.
    pub fn from_hex(hex: &str) -> Result<Digest> {
        format!("sha256:{hex}").parse()
    }

    /// The hex part, used as a file name.
    pub fn hex(&self) -> &str {
        &self.0["sha256:".len()..]
    }

    /// The full `sha256:<hex>` form.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub(crate) fn from_hasher(h: Sha256) -> Digest {
        Digest(format!("sha256:{}", hex::encode(h.finalize())))
    }
}

impl FromStr for Digest {
    type Err = Error;

    fn from_str(s: &str) -> Result<Digest> {
        let bad = |reason| Error::InvalidDigest {
            digest: s.to_string(),
            reason,
        };
        let (algo, hex) = s.split_once(':').ok_or_else(|| bad("missing algorithm"))?;
        if algo != "sha256" {
            return Err(bad("unsupported algorithm (only sha256)"));
        }
        if hex.len() != 64
            || !hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(bad("expected 64 lowercase hex characters"));
        }
        Ok(Digest(s.to_string()))
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Digest, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Chain ID of a layer stack, as the OCI image spec defines it:
/// `chain(0) = diff_id(0)`, `chain(n) = sha256(chain(n-1) + " " + diff_id(n))`.
pub fn chain_ids(diff_ids: &[Digest]) -> Vec<Digest> {
    let mut out: Vec<Digest> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(parent) => Digest::of(format!("{parent} {d}").as_bytes()),
        };
        out.push(next);
    }
    out
}

/// A reader that hashes and counts every byte read through it.
pub struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
}

impl<R: Read> HashingReader<R> {
    /// Wrap `inner`.
    pub fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    /// Read the rest of the stream (so the digest covers all of it) and return digest and size.
    pub fn finish(mut self) -> io::Result<(Digest, u64, R)> {
        io::copy(&mut self, &mut io::sink())?;
        Ok((Digest::from_hasher(self.hasher), self.count, self.inner))
    }

    /// Digest and size of what has been read so far (the stream is left where it is).
    pub fn digest_so_far(&self) -> (Digest, u64) {
        (Digest::from_hasher(self.hasher.clone()), self.count)
    }

    /// The wrapped reader.
    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

/// A reader that copies everything it reads into a writer (the blob temp file) and hashes it.
pub struct TeeHashReader<R, W> {
    inner: R,
    sink: W,
    hasher: Option<Sha256>,
    count: u64,
}

impl<R: Read, W: Write> TeeHashReader<R, W> {
    /// Copy everything read from `inner` into `sink`, hashing it.
    pub fn new(inner: R, sink: W) -> Self {
        TeeHashReader {
            inner,
            sink,
            hasher: Some(Sha256::new()),
            count: 0,
        }
    }

    /// Copy and count without hashing (when another hash already covers the same bytes).
    pub fn without_hash(inner: R, sink: W) -> Self {
        TeeHashReader {
            inner,
            sink,
            hasher: None,
            count: 0,
        }
    }

    /// Drain the source and return digest (if hashing), size and the sink.
    pub fn finish_opt(mut self) -> io::Result<(Option<Digest>, u64, W)> {
        io::copy(&mut self, &mut io::sink())?;
        Ok((self.hasher.map(Digest::from_hasher), self.count, self.sink))
    }

    /// Drain the source and return digest, size and the sink.
    pub fn finish(self) -> io::Result<(Digest, u64, W)> {
        let (d, n, w) = self.finish_opt()?;
        let d = d.ok_or_else(|| io::Error::other("tee reader was created without a hash"))?;
        Ok((d, n, w))
    }
}

impl<R: Read, W: Write> Read for TeeHashReader<R, W> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.sink.write_all(&buf[..n])?;
        if let Some(h) = &mut self.hasher {
            h.update(&buf[..n]);
        }
        self.count += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_reject() {
        let d = Digest::of(b"");
        assert_eq!(
            d.hex(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(d.as_str().parse::<Digest>().unwrap(), d);
        assert!("sha256:abc".parse::<Digest>().is_err());
        assert!("md5:e3b0c44298fc1c149afbf4c8996fb924"
            .parse::<Digest>()
            .is_err());
        assert!(format!("sha256:{}", d.hex().to_uppercase())
            .parse::<Digest>()
            .is_err());
    }

    #[test]
    fn chain_id_matches_spec() {
        let a = Digest::of(b"a");
        let b = Digest::of(b"b");
        let c = chain_ids(&[a.clone(), b.clone()]);
        assert_eq!(c[0], a);
        assert_eq!(c[1], Digest::of(format!("{a} {b}").as_bytes()));
    }
}
