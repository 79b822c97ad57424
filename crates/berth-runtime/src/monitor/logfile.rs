//! Docker's `json-file` log driver: one JSON object per line,
//! `{"log":"text\n","stream":"stdout","time":"2024-01-01T00:00:00.000000000Z"}`,
//! rotated at `max_size` bytes keeping `max_files` files (`X-json.log`, `X-json.log.1`, ...).
//!
//! Output is split into lines; a line longer than [`MAX_LINE`] is written in pieces without a
//! trailing newline, as Docker does for partial messages.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Longest chunk written as one log entry.
pub const MAX_LINE: usize = 16 * 1024;

/// Log file and rotation settings (Docker's `--log-opt max-size`, `max-file`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogConfig {
    /// The current log file (`.../<id>-json.log`).
    pub path: PathBuf,
    /// Rotate when the file would exceed this many bytes (0: never). Default 10 MB.
    #[serde(default = "default_max_size")]
    pub max_size: u64,
    /// Number of files kept, the current one included. Default 3.
    #[serde(default = "default_max_files")]
    pub max_files: u32,
}

fn default_max_size() -> u64 {
    10 * 1024 * 1024
}

fn default_max_files() -> u32 {
    3
}

#[derive(Serialize)]
struct Entry<'a> {
    log: &'a str,
    stream: &'a str,
    time: &'a str,
}

/// An open json-file log with per-stream line buffers.
pub struct JsonLog {
    config: LogConfig,
    file: File,
    size: u64,
    /// Unterminated output per stream (index 0 stdout, 1 stderr).
    pending: [Vec<u8>; 2],
}

fn open_append(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

impl JsonLog {
    /// Opens (appending to) the log file.
    pub fn open(config: LogConfig) -> std::io::Result<Self> {
        if let Some(dir) = config.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = open_append(&config.path)?;
        let size = file.metadata()?.len();
        Ok(JsonLog {
            config,
            file,
            size,
            pending: [Vec::new(), Vec::new()],
        })
    }

    /// Records output of `stream` (1 stdout, 2 stderr; anything else is treated as stdout).
    pub fn write(&mut self, stream: u8, data: &[u8]) -> std::io::Result<()> {
        let idx = usize::from(stream == 2);
        let mut buf = std::mem::take(&mut self.pending[idx]);
        buf.extend_from_slice(data);
        let mut start = 0;
        while let Some(pos) = buf[start..].iter().position(|b| *b == b'\n') {
            let end = start + pos + 1;
            self.entry(idx, &buf[start..end])?;
            start = end;
        }
        while buf.len() - start >= MAX_LINE {
            self.entry(idx, &buf[start..start + MAX_LINE])?;
            start += MAX_LINE;
        }
        buf.drain(..start);
        self.pending[idx] = buf;
        Ok(())
    }

    /// Writes out unterminated output (at end of stream).
    pub fn flush(&mut self) -> std::io::Result<()> {
        for idx in 0..2 {
            let buf = std::mem::take(&mut self.pending[idx]);
            if !buf.is_empty() {
                self.entry(idx, &buf)?;
            }
        }
        self.file.flush()
    }

    fn entry(&mut self, idx: usize, text: &[u8]) -> std::io::Result<()> {
        let time = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
        let text = String::from_utf8_lossy(text);
        let mut line = serde_json::to_vec(&Entry {
            log: &text,
            stream: if idx == 1 { "stderr" } else { "stdout" },
            time: &time,
        })
        .map_err(std::io::Error::other)?;
        line.push(b'\n');
        if self.config.max_size > 0
            && self.size > 0
            && self.size + line.len() as u64 > self.config.max_size
        {
            self.rotate()?;
        }
        self.file.write_all(&line)?;
        self.size += line.len() as u64;
        Ok(())
    }

    fn rotated(&self, n: u32) -> PathBuf {
        let mut name = self.config.path.clone().into_os_string();
        name.push(format!(".{n}"));
        PathBuf::from(name)
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        let keep = self.config.max_files.max(1);
        if keep == 1 {
            self.file.set_len(0)?;
            self.size = 0;
            return Ok(());
        }
        let _ = std::fs::remove_file(self.rotated(keep - 1));
        for n in (1..keep - 1).rev() {
            let _ = std::fs::rename(self.rotated(n), self.rotated(n + 1));
        }
        std::fs::rename(&self.config.path, self.rotated(1))?;
        self.file = open_append(&self.config.path)?;
        self.size = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(path: &Path) -> Vec<serde_json::Value> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn splits_lines_and_keeps_partials() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c-json.log");
        let mut log = JsonLog::open(LogConfig {
            path: path.clone(),
            max_size: 0,
            max_files: 3,
        })
        .unwrap();
        log.write(1, b"hello\nwor").unwrap();
        log.write(2, b"oops\n").unwrap();
        log.write(1, b"ld\ntail").unwrap();
        log.flush().unwrap();
        let l = lines(&path);
        assert_eq!(l.len(), 4);
        assert_eq!(l[0]["log"], "hello\n");
        assert_eq!(l[0]["stream"], "stdout");
        assert_eq!(l[1]["stream"], "stderr");
        assert_eq!(l[2]["log"], "world\n");
        assert_eq!(l[3]["log"], "tail");
        assert!(l[0]["time"].as_str().unwrap().ends_with('Z'));
    }

    #[test]
    fn rotates_keeping_max_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c-json.log");
        let mut log = JsonLog::open(LogConfig {
            path: path.clone(),
            max_size: 200,
            max_files: 3,
        })
        .unwrap();
        for i in 0..40 {
            log.write(1, format!("line {i}\n").as_bytes()).unwrap();
        }
        log.flush().unwrap();
        assert!(path.exists());
        assert!(dir.path().join("c-json.log.1").exists());
        assert!(dir.path().join("c-json.log.2").exists());
        assert!(!dir.path().join("c-json.log.3").exists());
        for p in [path.clone(), dir.path().join("c-json.log.1")] {
            assert!(std::fs::metadata(&p).unwrap().len() <= 200);
        }
        let last = lines(&path);
        assert_eq!(last.last().unwrap()["log"], "line 39\n");
    }
}
