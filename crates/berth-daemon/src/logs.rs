//! Reading Docker json-file logs (`<id>-json.log`, rotated to `.1`, `.2`, ...): one JSON object
//! per line, `{"log":"...","stream":"stdout","time":"RFC3339Nano"}`, written by the
//! container's monitor. This module selects entries (streams, since/until, tail), follows the
//! live file across rotations, and frames entries for the wire.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use bytes::{BufMut, Bytes, BytesMut};
use serde::Deserialize;

use crate::error::{Error, Result};

/// Which output stream an entry came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Standard output (multiplexed stream id 1).
    Stdout,
    /// Standard error (multiplexed stream id 2).
    Stderr,
}

/// One log entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Origin stream.
    pub stream: Stream,
    /// Unix nanoseconds.
    pub time: i64,
    /// The bytes the container wrote (usually one line, newline included).
    pub line: Vec<u8>,
}

/// What to read, as `GET /containers/{id}/logs` asks for it.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Include stdout.
    pub stdout: bool,
    /// Include stderr.
    pub stderr: bool,
    /// Only entries at or after this unix-nanosecond time.
    pub since: Option<i64>,
    /// Only entries at or before this unix-nanosecond time.
    pub until: Option<i64>,
    /// Only the last N entries of the existing logs.
    pub tail: Option<usize>,
}

impl Selection {
    /// Whether `entry` passes the stream and time filters.
    pub fn wants(&self, entry: &Entry) -> bool {
        let stream_ok = match entry.stream {
            Stream::Stdout => self.stdout,
            Stream::Stderr => self.stderr,
        };
        stream_ok
            && self.since.is_none_or(|s| entry.time >= s)
            && self.until.is_none_or(|u| entry.time <= u)
    }
}

#[derive(Deserialize)]
struct RawEntry<'a> {
    #[serde(borrow)]
    log: std::borrow::Cow<'a, str>,
    stream: &'a str,
    time: &'a str,
}

/// Parses one json-file line; malformed lines (a torn final write) yield `None`.
pub fn parse_line(line: &[u8]) -> Option<Entry> {
    let raw: RawEntry<'_> = serde_json::from_slice(line).ok()?;
    let stream = match raw.stream {
        "stdout" => Stream::Stdout,
        "stderr" => Stream::Stderr,
        _ => return None,
    };
    Some(Entry {
        stream,
        time: crate::time::parse_rfc3339_nanos(raw.time)?,
        line: raw.log.into_owned().into_bytes(),
    })
}

/// The log files of `log_path`, oldest first: `.N`, ..., `.1`, then the live file.
pub fn files(log_path: &Path) -> Vec<PathBuf> {
    let mut rotated: Vec<(u32, PathBuf)> = Vec::new();
    if let (Some(dir), Some(base)) = (log_path.parent(), log_path.file_name()) {
        let prefix = format!("{}.", base.to_string_lossy());
        if let Ok(entries) = std::fs::read_dir(dir) {
            for entry in entries.flatten() {
                let name = entry.file_name();
                let name = name.to_string_lossy();
                if let Some(n) = name.strip_prefix(&prefix).and_then(|s| s.parse().ok()) {
                    rotated.push((n, entry.path()));
                }
            }
        }
    }
    rotated.sort_by_key(|(n, _)| std::cmp::Reverse(*n));
    let mut out: Vec<PathBuf> = rotated.into_iter().map(|(_, p)| p).collect();
    out.push(log_path.to_path_buf());
    out
}

/// Reads the existing logs and returns the selected entries plus a follower positioned at the
/// end of the live file.
pub fn read(log_path: &Path, sel: &Selection) -> Result<(Vec<Entry>, Follower)> {
    let mut kept: VecDeque<Entry> = VecDeque::new();
    let mut push = |entry: Entry| {
        if !sel.wants(&entry) {
            return;
        }
        if let Some(n) = sel.tail {
            if n == 0 {
                return;
            }
            if kept.len() == n {
                kept.pop_front();
            }
        }
        kept.push_back(entry);
    };
    let all = files(log_path);
    let (live, rotated) = all.split_last().unwrap_or((&all[0], &[]));
    for path in rotated {
        let file = match File::open(path) {
            Ok(f) => f,
            // Rotated away between listing and opening.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io(format!("open {}", path.display()), e)),
        };
        for line in BufReader::new(file).split(b'\n') {
            let line = line.map_err(|e| Error::io(format!("read {}", path.display()), e))?;
            if let Some(entry) = parse_line(&line) {
                push(entry);
            }
        }
    }
    let mut follower = Follower::new(live.clone());
    for entry in follower.poll()? {
        push(entry);
    }
    Ok((kept.into(), follower))
}

/// Reads what is appended to the live log file, following it when it is rotated.
pub struct Follower {
    path: PathBuf,
    file: Option<(File, u64)>,
    partial: Vec<u8>,
}

impl Follower {
    fn new(path: PathBuf) -> Self {
        Follower {
            path,
            file: None,
            partial: Vec::new(),
        }
    }

    /// Returns the complete entries written since the last call.
    pub fn poll(&mut self) -> Result<Vec<Entry>> {
        let mut out = Vec::new();
        if self.file.is_none() {
            self.reopen()?;
        }
        self.drain(&mut out)?;
        // Rotation renames the live file and creates a new one: finish the old handle (done
        // above), then continue from the start of the new file.
        let current_ino = std::fs::metadata(&self.path).ok().map(|m| m.ino());
        let open_ino = self.file.as_ref().map(|(_, ino)| *ino);
        if current_ino.is_some() && current_ino != open_ino {
            self.partial.clear();
            self.reopen()?;
            self.drain(&mut out)?;
        }
        Ok(out)
    }

    fn reopen(&mut self) -> Result<()> {
        self.file = match File::open(&self.path) {
            Ok(f) => {
                let ino = f
                    .metadata()
                    .map_err(|e| Error::io(format!("stat {}", self.path.display()), e))?
                    .ino();
                Some((f, ino))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(Error::io(format!("open {}", self.path.display()), e)),
        };
        Ok(())
    }

    fn drain(&mut self, out: &mut Vec<Entry>) -> Result<()> {
        let Some((file, _)) = self.file.as_mut() else {
            return Ok(());
        };
        let mut buf = Vec::new();
        file.read_to_end(&mut buf)
            .map_err(|e| Error::io(format!("read {}", self.path.display()), e))?;
        if buf.is_empty() {
            return Ok(());
        }
        self.partial.extend_from_slice(&buf);
        let complete = match self.partial.iter().rposition(|&b| b == b'\n') {
            Some(i) => i + 1,
            None => return Ok(()),
        };
        let rest = self.partial.split_off(complete);
        for line in self.partial.split(|&b| b == b'\n') {
            if let Some(entry) = parse_line(line) {
                out.push(entry);
            }
        }
        self.partial = rest;
        Ok(())
    }
}

/// Frames an entry for the wire: raw for TTY containers, otherwise Docker's multiplexed
/// stream (`[stream, 0, 0, 0, len as u32 BE]` then the payload).
pub fn frame(entry: &Entry, tty: bool, timestamps: bool) -> Bytes {
    let stamp = timestamps.then(|| crate::time::format_nanos_fixed(entry.time) + " ");
    let stamp_len = stamp.as_ref().map_or(0, String::len);
    let len = stamp_len + entry.line.len();
    let mut buf = BytesMut::with_capacity(len + 8);
    if !tty {
        buf.put_u8(match entry.stream {
            Stream::Stdout => 1,
            Stream::Stderr => 2,
        });
        buf.put_bytes(0, 3);
        buf.put_u32(u32::try_from(len).unwrap_or(u32::MAX));
    }
    if let Some(s) = stamp {
        buf.put_slice(s.as_bytes());
    }
    buf.put_slice(&entry.line);
    buf.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn line(stream: &str, sec: u32, text: &str) -> String {
        format!(
            "{{\"log\":{},\"stream\":\"{stream}\",\"time\":\"2024-01-01T00:00:{sec:02}.5Z\"}}\n",
            serde_json::to_string(text).unwrap()
        )
    }

    #[test]
    fn rotation_tail_since_and_follow() {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("c-json.log");
        std::fs::write(dir.path().join("c-json.log.2"), line("stdout", 1, "one\n")).unwrap();
        std::fs::write(
            dir.path().join("c-json.log.1"),
            line("stderr", 2, "two\n") + &line("stdout", 3, "three\n"),
        )
        .unwrap();
        std::fs::write(&live, line("stdout", 4, "four\n") + "{\"torn").unwrap();

        let all = Selection {
            stdout: true,
            stderr: true,
            ..Default::default()
        };
        let (entries, mut follower) = read(&live, &all).unwrap();
        let texts: Vec<_> = entries.iter().map(|e| e.line.clone()).collect();
        assert_eq!(texts, [&b"one\n"[..], b"two\n", b"three\n", b"four\n"]);

        let sel = Selection {
            stdout: true,
            tail: Some(2),
            ..Default::default()
        };
        let (entries, _) = read(&live, &sel).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].line, b"three\n");

        let sel = Selection {
            stdout: true,
            stderr: true,
            since: crate::time::parse_timestamp("2024-01-01T00:00:02.5Z"),
            until: crate::time::parse_timestamp("2024-01-01T00:00:03.5Z"),
            ..Default::default()
        };
        assert_eq!(read(&live, &sel).unwrap().0.len(), 2);

        // The torn line completes, then the file rotates and a new one starts.
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&live)
            .unwrap();
        f.write_all(b"\n").unwrap();
        f.write_all(line("stdout", 5, "five\n").as_bytes()).unwrap();
        assert_eq!(follower.poll().unwrap().len(), 1);
        f.write_all(line("stdout", 6, "six\n").as_bytes()).unwrap();
        std::fs::rename(&live, dir.path().join("c-json.log.1")).unwrap();
        std::fs::write(&live, line("stderr", 7, "seven\n")).unwrap();
        let got: Vec<_> = follower
            .poll()
            .unwrap()
            .into_iter()
            .map(|e| e.line)
            .collect();
        assert_eq!(got, [&b"six\n"[..], b"seven\n"]);

        let framed = frame(&entries_of("hi\n"), false, false);
        assert_eq!(&framed[..], b"\x01\x00\x00\x00\x00\x00\x00\x03hi\n");
        let framed = frame(&entries_of("hi\n"), true, true);
        assert_eq!(&framed[..], b"1970-01-01T00:00:00.000000000Z hi\n");
    }

    fn entries_of(text: &str) -> Entry {
        Entry {
            stream: Stream::Stdout,
            time: 0,
            line: text.as_bytes().to_vec(),
        }
    }
}
