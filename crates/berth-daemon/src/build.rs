//! Dockerfile builds on the daemon core: the [`BuildBackend`] the builder runs its RUN steps,
//! base-image pulls (with `X-Registry-Config` credentials) and ADD downloads through. A RUN
//! step is an ordinary container (created from the step's image with the step's
//! Cmd/Env/User/WorkingDir, network per `networkmode`), started with its output attached
//! before it runs (as `docker run` attaches), waited for and then committed by the builder;
//! the builder asks for its removal. [`RunningStep`] lets the API layer kill it when the
//! client goes away. Also here: the per-data-root step cache and the recovery of what a
//! daemon that died mid-build left behind.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use berth_builder::build::{emit_stderr, BuildBackend, Emit, RunSpec};
use berth_builder::{Cache, Error as BuildError, Result as BuildResult};
use berth_image::Store;
use berth_runtime::monitor::attach as proto;
use bollard_stubs::models::ContainerCreateBody;
use serde_json::{json, Value};

use crate::daemon::Daemon;

/// The build cache of a data root, shared by concurrent builds of this process.
pub fn cache_for(daemon: &Daemon) -> BuildResult<Arc<Cache>> {
    let data_root = daemon.config.data_root.as_path();
    static CACHES: OnceLock<Mutex<HashMap<PathBuf, Arc<Cache>>>> = OnceLock::new();
    let mut map = CACHES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some(c) = map.get(data_root) {
        return Ok(Arc::clone(c));
    }
    let c = Arc::new(Cache::open(&data_root.join("builder"))?);
    // First build of this daemon: what a daemon that died mid-build left goes (scratch root
    // filesystems holding their images in use, unpacked contexts).
    let recovered = berth_builder::recover(&daemon.images, &c.dir());
    if recovered > 0 {
        tracing::info!(
            recovered,
            "removed root filesystems left by an interrupted build"
        );
    }
    clear_stale_tmp(&tmp_dir(data_root));
    map.insert(data_root.to_path_buf(), Arc::clone(&c));
    Ok(c)
}

fn clear_stale_tmp(dir: &Path) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        let removed = match e.file_type() {
            Ok(t) if t.is_dir() => std::fs::remove_dir_all(&p),
            _ => std::fs::remove_file(&p),
        };
        if let Err(err) = removed {
            tracing::warn!(path = %p.display(), %err, "cannot remove a stale build directory");
        }
    }
}

/// The directory of builds' temporary files (contexts, copy staging).
pub fn tmp_dir(data_root: &Path) -> PathBuf {
    data_root.join("builder").join("tmp")
}

/// The daemon side of a build. Runs on a blocking thread; async daemon calls go through
/// `handle`.
pub struct DaemonBackend {
    /// The daemon.
    pub daemon: Arc<Daemon>,
    /// The runtime the daemon's async operations run on.
    pub handle: tokio::runtime::Handle,
    /// The RUN containers' HostConfig (network mode, extra hosts, limits).
    pub host_config: Value,
    /// Credentials by registry from `X-Registry-Config`, for base-image pulls.
    pub registry_config: HashMap<String, berth_distribution::Credentials>,
    /// The RUN step running now, for [`RunningStep::cancel`].
    pub running: RunningStep,
}

/// The RUN container a build waits on. When the client goes away, the API layer cancels it:
/// the container is killed (a silent `RUN sleep 1000` would otherwise hold the build until
/// it ends) and no further step starts.
#[derive(Clone, Default)]
pub struct RunningStep(Arc<Mutex<(Option<String>, bool)>>);

impl RunningStep {
    fn lock(&self) -> std::sync::MutexGuard<'_, (Option<String>, bool)> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records `id` as running; `false` when the build was cancelled already.
    fn enter(&self, id: &str) -> bool {
        let mut g = self.lock();
        g.0 = Some(id.to_string());
        !g.1
    }

    fn leave(&self) {
        self.lock().0 = None;
    }

    /// Cancels the build: kills the running step's container, if any.
    pub async fn cancel(&self, daemon: &Arc<Daemon>) {
        let id = {
            let mut g = self.lock();
            g.1 = true;
            g.0.clone()
        };
        if let Some(id) = id {
            if let Err(err) = daemon
                .kill_container(&id, nix::sys::signal::Signal::SIGKILL)
                .await
            {
                tracing::debug!(%id, %err, "cannot kill a cancelled build step");
            }
        }
    }
}

/// Decodes `X-Registry-Config` (base64 JSON: registry address → auth config), as the docker
/// CLI sends it with every build. Undecodable values are no credentials, not an error.
pub fn registry_config(header: &str) -> HashMap<String, berth_distribution::Credentials> {
    use base64::Engine as _;
    let v = header.trim();
    let raw = base64::engine::general_purpose::URL_SAFE
        .decode(v)
        .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(v))
        .or_else(|_| base64::engine::general_purpose::STANDARD.decode(v));
    match raw
        .map(|r| serde_json::from_slice::<HashMap<String, berth_distribution::Credentials>>(&r))
    {
        Ok(Ok(map)) => map,
        _ => {
            tracing::debug!("ignoring an undecodable X-Registry-Config header");
            HashMap::new()
        }
    }
}

/// The registry host an `X-Registry-Config` key names (`https://index.docker.io/v1/` is
/// Docker Hub, `docker.io` for references).
fn config_host(key: &str) -> String {
    let k = key
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let host = k.split('/').next().unwrap_or(k);
    match host {
        "index.docker.io" | "registry-1.docker.io" => "docker.io".into(),
        h => h.to_string(),
    }
}

fn backend_err(e: impl std::fmt::Display) -> BuildError {
    BuildError::Backend(e.to_string())
}

impl BuildBackend for DaemonBackend {
    fn store(&self) -> &Store {
        &self.daemon.images
    }

    fn tmp_dir(&self) -> PathBuf {
        tmp_dir(&self.daemon.config.data_root)
    }

    fn pull(
        &mut self,
        reference: &str,
        platform: Option<&str>,
        out: &mut dyn Emit,
    ) -> BuildResult<()> {
        let registry = self.daemon.registry().map_err(backend_err)?;
        let (tx, rx) = std::sync::mpsc::channel();
        let progress: berth_distribution::Progress = Arc::new(move |m| {
            let _ = tx.send(m);
        });
        let domain = berth_image::Reference::parse(reference)
            .map(|r| r.domain().to_string())
            .unwrap_or_default();
        let credentials = self
            .registry_config
            .iter()
            .find(|(k, _)| config_host(k) == domain)
            .map(|(_, c)| c.clone());
        let opts = berth_distribution::PullOptions {
            credentials,
            platform: platform.filter(|p| !p.is_empty()).map(str::to_string),
        };
        // The pull runs on the runtime while this thread forwards its progress as it comes;
        // the channel closes when the pull is done with its progress sink.
        let daemon = Arc::clone(&self.daemon);
        let reference = reference.to_string();
        let task = self.handle.spawn(async move {
            registry
                .pull(&daemon.images, &reference, &opts, progress)
                .await
        });
        let forward = |m: berth_distribution::ProgressMessage, out: &mut dyn Emit| {
            out.message(serde_json::to_value(&m).unwrap_or(Value::Null))
        };
        loop {
            match rx.recv_timeout(std::time::Duration::from_millis(100)) {
                Ok(m) => {
                    if let Err(err) = forward(m, out) {
                        task.abort();
                        return Err(err);
                    }
                }
                // Ended without dropping its sink (a transfer task may hold a clone).
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) if task.is_finished() => {
                    for m in rx.try_iter() {
                        forward(m, out)?;
                    }
                    break;
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        match self.handle.block_on(task) {
            Ok(result) => result.map(drop).map_err(backend_err),
            Err(e) => Err(BuildError::Backend(format!("pull task: {e}"))),
        }
    }

    fn create(&mut self, image: &str, run: &RunSpec) -> BuildResult<String> {
        let mut body = Value::Object(run.config.clone());
        body["Image"] = json!(image);
        // The step's command alone: the image's entrypoint does not wrap it.
        body["Entrypoint"] = json!([]);
        body["HostConfig"] = self.host_config.clone();
        body["AttachStdout"] = json!(true);
        body["AttachStderr"] = json!(true);
        let body: ContainerCreateBody = serde_json::from_value(body)
            .map_err(|e| BuildError::Backend(format!("build step container config: {e}")))?;
        self.daemon
            .create_container(None, body)
            .map_err(backend_err)
    }

    fn start_and_wait(&mut self, id: &str, out: &mut dyn Emit) -> BuildResult<i64> {
        if !self.running.enter(id) {
            self.running.leave();
            return Err(BuildError::Cancelled);
        }
        let result = self.start_and_wait_inner(id, out);
        self.running.leave();
        result
    }
    fn fetch(&mut self, url: &str, dest: &mut std::fs::File) -> BuildResult<Option<i64>> {
        use std::io::Write;
        let fail =
            |e: &dyn std::fmt::Display| BuildError::Backend(format!("ADD failed: GET {url}: {e}"));
        self.handle.block_on(async {
            let resp = reqwest::Client::new()
                .get(url)
                .send()
                .await
                .map_err(|e| fail(&e))?;
            let status = resp.status();
            if !status.is_success() {
                return Err(BuildError::Backend(format!(
                    "failed to GET {url} with status {status}"
                )));
            }
            let modified = resp
                .headers()
                .get(reqwest::header::LAST_MODIFIED)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| chrono::DateTime::parse_from_rfc2822(v).ok())
                .map(|t| t.timestamp());
            let mut resp = resp;
            while let Some(chunk) = resp.chunk().await.map_err(|e| fail(&e))? {
                // A local file write on this (blocking) thread.
                dest.write_all(&chunk).map_err(|e| fail(&e))?;
            }
            Ok(modified)
        })
    }

    fn remove(&mut self, id: &str) -> BuildResult<()> {
        self.handle
            .block_on(self.daemon.remove_container(id, true))
            .map_err(backend_err)
    }
}

impl DaemonBackend {
    fn start_and_wait_inner(&mut self, id: &str, out: &mut dyn Emit) -> BuildResult<i64> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        crate::events::lock(&self.daemon.pending_attach)
            .entry(id.to_string())
            .or_default()
            .push(tx);
        let (_, events) = self.daemon.events.subscribe();
        if let Err(err) = self.handle.block_on(self.daemon.start_container(id)) {
            crate::events::lock(&self.daemon.pending_attach).remove(id);
            return Err(backend_err(err));
        }
        if let Ok(stream) = self.handle.block_on(rx) {
            if let Err(err) = copy_output(stream, out) {
                // The client went away: the step is abandoned.
                let _ = self.handle.block_on(
                    self.daemon
                        .kill_container(id, nix::sys::signal::Signal::SIGKILL),
                );
                return Err(err);
            }
        }
        self.handle
            .block_on(self.daemon.wait_container(id, "not-running", events))
            .map_err(backend_err)
    }
}

/// Copies a RUN container's framed output (stdout as is, stderr in dockerd's red) until the
/// monitor closes the stream. A UTF-8 character split across frames is held back until it is
/// whole.
fn copy_output(stream: std::os::unix::net::UnixStream, out: &mut dyn Emit) -> BuildResult<()> {
    use std::io::Read;
    let _ = stream.set_nonblocking(false);
    let mut stream = stream;
    let mut dec = proto::Decoder::default();
    let mut buf = vec![0u8; 32 << 10];
    let mut pending: [Vec<u8>; 2] = [Vec::new(), Vec::new()];
    loop {
        let n = match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(BuildError::Backend(format!("read build step output: {e}"))),
        };
        dec.push(&buf[..n]);
        while let Some((kind, payload)) = dec.next_frame().map_err(backend_err)? {
            let i = usize::from(kind == proto::STDERR);
            pending[i].extend_from_slice(&payload);
            let text = take_text(&mut pending[i]);
            emit(out, i, &text)?;
        }
    }
    for (i, rest) in pending.iter().enumerate() {
        if !rest.is_empty() {
            emit(out, i, &String::from_utf8_lossy(rest))?;
        }
    }
    Ok(())
}

fn emit(out: &mut dyn Emit, stream: usize, text: &str) -> BuildResult<()> {
    match (text.is_empty(), stream) {
        (true, _) => Ok(()),
        (false, 1) => emit_stderr(out, text.as_bytes()),
        (false, _) => out.stream(text),
    }
}

/// Takes the text from `buf`, leaving an incomplete trailing UTF-8 sequence in it.
fn take_text(buf: &mut Vec<u8>) -> String {
    let keep = match std::str::from_utf8(buf) {
        Ok(_) => 0,
        Err(e) if e.error_len().is_none() => buf.len() - e.valid_up_to(),
        Err(_) => 0,
    };
    let rest = buf.split_off(buf.len() - keep);
    let text = String::from_utf8_lossy(buf).into_owned();
    *buf = rest;
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_config_by_host() {
        use base64::Engine as _;
        let json = r#"{"https://index.docker.io/v1/":{"username":"u","password":"p"},"localhost:5000":{"username":"l"}}"#;
        let h = base64::engine::general_purpose::URL_SAFE.encode(json);
        let m = registry_config(&h);
        assert_eq!(m.len(), 2);
        assert_eq!(config_host("https://index.docker.io/v1/"), "docker.io");
        assert_eq!(config_host("localhost:5000"), "localhost:5000");
        assert!(registry_config("not base64!").is_empty());
    }

    #[test]
    fn split_utf8_is_held_back() {
        let mut b = "añ".as_bytes()[..2].to_vec();
        assert_eq!(take_text(&mut b), "a");
        b.extend_from_slice(&"ñ".as_bytes()[1..]);
        b.extend_from_slice(b"b");
        assert_eq!(take_text(&mut b), "ñb");
        assert!(b.is_empty());
        let mut bad = vec![b'x', 0xff, b'y'];
        assert_eq!(take_text(&mut bad), "x\u{fffd}y");
    }
}
