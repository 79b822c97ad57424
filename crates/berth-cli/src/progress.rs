//! The one renderer of Docker's JSON message streams (pull, push, load, import): one JSON
//! object per line with `status`/`id`/`progressDetail`, `stream` text, `aux` results or a
//! final `error`.
//!
//! On a terminal it draws what the docker CLI draws: one line per layer id, rewritten in
//! place (ANSI cursor moves) with a `[===>   ] 1.2MB/3.4MB` bar. Otherwise it prints plain
//! status lines and leaves byte-count updates out, as the docker CLI does, so piped output
//! stays a readable log.

use std::io::Write;

use anyhow::{Context, Result};
use http_body_util::BodyExt;
use serde_json::Value;

/// What a stream ended with, for the caller to report.
#[derive(Debug, Default)]
pub struct Outcome {
    /// The stream's `error` message, if it failed.
    pub error: Option<String>,
    /// `aux` objects (push results: `{"Tag","Digest","Size"}`), in order.
    pub aux: Vec<Value>,
}

/// Draws messages onto `out`.
pub struct Renderer<W: Write> {
    out: W,
    tty: bool,
    width: usize,
    /// Ids drawn on the lines just above the cursor, first to last. Cleared by any line
    /// without an id: lines above it can no longer be rewritten.
    ids: Vec<String>,
}

impl Renderer<std::io::Stdout> {
    /// A renderer on stdout; bars when stdout is a terminal.
    pub fn stdout() -> Self {
        let out = std::io::stdout();
        let tty = std::io::IsTerminal::is_terminal(&out);
        let width = if tty { terminal_width() } else { 80 };
        Renderer::new(out, tty, width)
    }
}

impl<W: Write> Renderer<W> {
    /// A renderer on `out`; `tty` enables in-place updates, `width` the bar (as in Docker,
    /// only wider than 110 columns).
    pub fn new(out: W, tty: bool, width: usize) -> Self {
        Renderer {
            out,
            tty,
            width,
            ids: Vec::new(),
        }
    }

    /// Reads the whole response body, drawing each message as it arrives.
    pub async fn render(
        &mut self,
        resp: hyper::Response<hyper::body::Incoming>,
    ) -> Result<Outcome> {
        let mut body = resp.into_body();
        let mut buf = Vec::new();
        let mut outcome = Outcome::default();
        while let Some(frame) = body.frame().await {
            let Ok(data) = frame.context("read progress stream")?.into_data() else {
                continue;
            };
            buf.extend_from_slice(&data);
            while let Some(nl) = buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = buf.drain(..=nl).collect();
                self.line(&line, &mut outcome)?;
            }
        }
        self.line(&buf, &mut outcome)?;
        self.out.flush()?;
        Ok(outcome)
    }

    fn line(&mut self, line: &[u8], outcome: &mut Outcome) -> Result<()> {
        if line.iter().all(u8::is_ascii_whitespace) || outcome.error.is_some() {
            return Ok(());
        }
        let v: Value = serde_json::from_slice(line).context("decode progress message")?;
        self.message(&v, outcome)
    }

    /// Draws one message; records `error` and `aux` in `outcome`.
    pub fn message(&mut self, v: &Value, outcome: &mut Outcome) -> Result<()> {
        if let Some(e) = v.get("error").and_then(Value::as_str) {
            let detail = v["errorDetail"]["message"].as_str().unwrap_or(e);
            outcome.error = Some(detail.to_string());
            return Ok(());
        }
        if let Some(aux) = v.get("aux") {
            outcome.aux.push(aux.clone());
            return Ok(());
        }
        if let Some(s) = v.get("stream").and_then(Value::as_str) {
            self.ids.clear();
            write!(self.out, "{s}")?;
            return Ok(());
        }
        let status = v["status"].as_str().unwrap_or("");
        let bar = progress_text(&v["progressDetail"], self.width);
        let id = v["id"].as_str().filter(|i| !i.is_empty());
        let Some(id) = id else {
            self.ids.clear();
            writeln!(self.out, "{status}")?;
            return Ok(());
        };
        if !self.tty {
            // Byte counts would flood a log; Docker leaves them out too.
            if bar.is_empty() {
                writeln!(self.out, "{id}: {status}")?;
            }
            return Ok(());
        }
        let text = if bar.is_empty() {
            format!("{id}: {status}")
        } else {
            format!("{id}: {status} {bar}")
        };
        match self.ids.iter().position(|i| i == id) {
            Some(pos) => {
                // Up to the id's line, rewrite it, back down below the last line.
                let up = self.ids.len() - pos;
                write!(self.out, "\x1b[{up}A\r\x1b[2K{text}\x1b[{up}B\r")?;
            }
            None => {
                self.ids.push(id.to_string());
                writeln!(self.out, "\r\x1b[2K{text}")?;
            }
        }
        self.out.flush()?;
        Ok(())
    }
}

/// Docker's `JSONProgress.String()`: `[=====>     ]  1.2MB/3.4MB`, the bar only on terminals
/// wider than 110 columns; empty when there is nothing to count.
pub fn progress_text(detail: &Value, width: usize) -> String {
    let current = detail["current"].as_u64().unwrap_or(0);
    let total = detail["total"].as_u64().unwrap_or(0);
    if current == 0 && total == 0 {
        return String::new();
    }
    if total == 0 {
        return format!("{:>8}", human_size(current));
    }
    let half_percent = ((current as f64 / total as f64 * 100.0) as usize / 2).min(50);
    let bar = if width > 110 {
        format!(
            "[{}>{}] ",
            "=".repeat(half_percent),
            " ".repeat(50 - half_percent)
        )
    } else {
        String::new()
    };
    format!("{bar}{:>8}/{}", human_size(current), human_size(total))
}

/// go-units' `HumanSize`: decimal units, four significant digits (`1.024kB`, `25MB`).
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    let mut size = bytes as f64;
    let mut unit = 0;
    while size >= 1000.0 && unit < UNITS.len() - 1 {
        size /= 1000.0;
        unit += 1;
    }
    let int_digits = if size >= 100.0 {
        3
    } else if size >= 10.0 {
        2
    } else {
        1
    };
    let decimals = 4usize.saturating_sub(int_digits);
    let s = format!("{size:.decimals$}");
    let s = if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        &s
    };
    format!("{s}{}", UNITS[unit])
}

/// Columns of the terminal on stdout; 80 when it cannot be asked.
fn terminal_width() -> usize {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one `winsize` into the valid, exclusively borrowed `ws`;
    // fd 1 is merely queried.
    let rc = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut ws) };
    if rc == 0 && ws.ws_col > 0 {
        usize::from(ws.ws_col)
    } else {
        80
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn draw(tty: bool, messages: &[Value]) -> (String, Outcome) {
        let mut out = Vec::new();
        let mut outcome = Outcome::default();
        {
            let mut r = Renderer::new(&mut out, tty, 120);
            for m in messages {
                r.message(m, &mut outcome).unwrap();
            }
        }
        (String::from_utf8(out).unwrap(), outcome)
    }

    fn push_stream() -> Vec<Value> {
        vec![
            json!({"status": "The push refers to repository [127.0.0.1:5000/a]"}),
            json!({"status": "Preparing", "id": "aaa"}),
            json!({"status": "Preparing", "id": "bbb"}),
            json!({"status": "Pushing", "id": "aaa", "progressDetail": {"current": 500, "total": 1000}}),
            json!({"status": "Pushed", "id": "aaa"}),
            json!({"status": "Layer already exists", "id": "bbb"}),
            json!({"status": "latest: digest: sha256:x size: 5"}),
            json!({"progressDetail": {}, "aux": {"Tag": "latest", "Digest": "sha256:x", "Size": 5}}),
        ]
    }

    #[test]
    fn plain_output_is_docker_log_lines() {
        let (text, outcome) = draw(false, &push_stream());
        assert_eq!(
            text,
            "The push refers to repository [127.0.0.1:5000/a]\naaa: Preparing\nbbb: Preparing\n\
             aaa: Pushed\nbbb: Layer already exists\nlatest: digest: sha256:x size: 5\n"
        );
        assert_eq!(
            outcome.aux,
            vec![json!({"Tag": "latest", "Digest": "sha256:x", "Size": 5})]
        );
        assert!(outcome.error.is_none());
    }

    #[test]
    fn terminal_output_rewrites_layer_lines_in_place() {
        let (text, _) = draw(true, &push_stream());
        // aaa is two lines up when it is updated; bbb one line up.
        assert!(text.contains("\x1b[2A\r\x1b[2Kaaa: Pushing [=========================>"));
        assert!(text.contains("\x1b[2A\r\x1b[2Kaaa: Pushed\x1b[2B\r"));
        assert!(text.contains("\x1b[1A\r\x1b[2Kbbb: Layer already exists\x1b[1B\r"));
        assert!(text.ends_with("latest: digest: sha256:x size: 5\n"));
    }

    #[test]
    fn errors_end_the_stream() {
        let (text, outcome) = draw(
            false,
            &[
                json!({"status": "Pulling fs layer", "id": "a"}),
                json!({"errorDetail": {"message": "boom"}, "error": "boom"}),
            ],
        );
        assert_eq!(text, "a: Pulling fs layer\n");
        assert_eq!(outcome.error.as_deref(), Some("boom"));
    }

    #[test]
    fn sizes_and_bars() {
        assert_eq!(human_size(0), "0B");
        assert_eq!(human_size(512), "512B");
        assert_eq!(human_size(1024), "1.024kB");
        assert_eq!(human_size(25_000_000), "25MB");
        assert_eq!(human_size(12_345_678), "12.35MB");
        let d = json!({"current": 1_000_000, "total": 4_000_000});
        assert_eq!(progress_text(&d, 80), "     1MB/4MB");
        assert_eq!(
            progress_text(&d, 120),
            format!("[{}>{}]      1MB/4MB", "=".repeat(12), " ".repeat(38))
        );
        assert_eq!(progress_text(&json!({}), 120), "");
    }
}
