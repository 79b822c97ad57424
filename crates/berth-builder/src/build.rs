//! The executor: walks a parsed Dockerfile stage by stage as dockerd's classic builder does,
//! printing `Step n/m : ...`, reusing cached steps, running RUN steps through a
//! [`BuildBackend`] and making each step's image in the image store.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use berth_image::{ContainerFs, Digest, Reference, Store};
use serde_json::{json, Map, Value};

use crate::cache::{self, Cache};
use crate::context::Context;
use crate::copy::{self, CopyRequest, SourceFs};
use crate::dockerfile::{self, Args, Instruction};
use crate::error::{Error, Result};
use crate::image::{self, ImageState};
use crate::shell::Lexer;

/// Build arguments every RUN sees without an ARG declaring them (and that never reach the
/// image or the cache key), as in Docker.
pub const BUILTIN_ARGS: &[&str] = &[
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "FTP_PROXY",
    "ftp_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
];

/// What a build is asked to do (`POST /build`'s parameters).
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    /// The Dockerfile's path in the context (`Dockerfile` when empty).
    pub dockerfile: String,
    /// Tags for the result (`-t`).
    pub tags: Vec<String>,
    /// `--build-arg`s; `None` values are unset.
    pub build_args: BTreeMap<String, Option<String>>,
    /// `--label`s, applied as a final LABEL instruction.
    pub labels: BTreeMap<String, String>,
    /// `--target`.
    pub target: Option<String>,
    /// `--no-cache`.
    pub no_cache: bool,
    /// Remove intermediate containers after a step (`--rm`, default true).
    pub rm: bool,
    /// Remove them even when the step failed (`--force-rm`).
    pub force_rm: bool,
    /// Always pull base images (`--pull`).
    pub pull: bool,
    /// `--platform` (only the host's is built).
    pub platform: Option<String>,
    /// `--cache-from`: only steps of these images' ancestry are reused.
    pub cache_from: Vec<String>,
}

/// Where build output goes (the JSON message stream of `POST /build`).
pub trait Emit {
    /// A `{"stream": text}` message.
    fn stream(&mut self, text: &str) -> Result<()>;
    /// An `{"aux": value}` message.
    fn aux(&mut self, value: Value) -> Result<()>;
    /// Any other message, sent as is (pull progress of a base image).
    fn message(&mut self, value: Value) -> Result<()> {
        let _ = value;
        Ok(())
    }
}

/// Writes a RUN step's stderr as dockerd does: each chunk wrapped in bright-red escapes.
pub fn emit_stderr(out: &mut dyn Emit, chunk: &[u8]) -> Result<()> {
    out.stream(&format!(
        "\x1b[91m{}\x1b[0m",
        String::from_utf8_lossy(chunk)
    ))
}

/// A RUN step's container.
#[derive(Debug, Clone)]
pub struct RunSpec {
    /// The container config (Docker's `ContainerConfig` shape): the stage's config with the
    /// step's `Cmd`, no `Entrypoint`, and the build args added to `Env`.
    pub config: Map<String, Value>,
}

/// What the builder needs from the engine.
pub trait BuildBackend {
    /// The image store the build reads and writes.
    fn store(&self) -> &Store;
    /// Pulls `reference`, reporting progress to `out`.
    fn pull(&mut self, reference: &str, platform: Option<&str>, out: &mut dyn Emit) -> Result<()>;
    /// Creates (does not start) a container of image `image` for a RUN step; returns its ID.
    /// Its writable layer must be the image store's rootfs of that ID.
    fn create(&mut self, image: &str, run: &RunSpec) -> Result<String>;
    /// Starts the container, streams its output to `out` (stderr through
    /// [`emit_stderr`]) and waits for it; returns the exit code.
    fn start_and_wait(&mut self, container: &str, out: &mut dyn Emit) -> Result<i64>;
    /// Removes a container made by [`BuildBackend::create`].
    fn remove(&mut self, container: &str) -> Result<()>;
    /// The directory for the build's temporary files (on the data root's filesystem).
    fn tmp_dir(&self) -> PathBuf;
}

/// Validates `--platform`: only the host's platform is built.
pub fn check_platform(p: &str) -> Result<()> {
    let (os, arch) = berth_image::spec::host_platform();
    let mut parts = p.split('/');
    let want_os = parts.next().unwrap_or("").to_ascii_lowercase();
    if want_os != os {
        return Err(Error::Instruction(format!(
            "\"{p}\": unknown operating system or architecture: invalid argument"
        )));
    }
    if let Some(a) = parts.next() {
        let a = a.to_ascii_lowercase();
        let same =
            a == arch || (arch == "amd64" && a == "x86_64") || (arch == "arm64" && a == "aarch64");
        if !same {
            return Err(Error::Instruction(format!(
                "image platform {p} does not match the host's {os}/{arch}"
            )));
        }
    }
    Ok(())
}

fn short(id: &Digest) -> String {
    id.hex().chars().take(12).collect()
}

struct Stage {
    name: Option<String>,
    image: ImageState,
    config: Map<String, Value>,
    /// ARGs declared in this stage, with their values (`None`: declared, no value).
    args: Vec<(String, Option<String>)>,
    cmd_set: bool,
}

impl Stage {
    fn shell(&self) -> Vec<String> {
        self.config
            .get("Shell")
            .and_then(|s| serde_json::from_value::<Vec<String>>(s.clone()).ok())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| vec!["/bin/sh".into(), "-c".into()])
    }

    fn env(&self) -> Vec<(String, String)> {
        env_pairs(&self.config)
    }

    /// Variables for substitution: ARG values, then ENV (which wins).
    fn vars(&self) -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = self
            .args
            .iter()
            .filter_map(|(k, v)| v.clone().map(|v| (k.clone(), v)))
            .collect();
        v.extend(self.env());
        v
    }

    fn nop(&self, text: &str) -> String {
        // dockerd joins `[shell..., "#(nop) ", text]` with spaces: hence the two spaces.
        format!("{} #(nop)  {text}", self.shell().join(" "))
    }
}

fn env_pairs(config: &Map<String, Value>) -> Vec<(String, String)> {
    config
        .get("Env")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(|e| match e.split_once('=') {
                    Some((k, v)) => (k.to_string(), v.to_string()),
                    None => (e.to_string(), String::new()),
                })
                .collect()
        })
        .unwrap_or_default()
}

fn set_env(config: &mut Map<String, Value>, key: &str, value: &str) {
    let mut env: Vec<Value> = config
        .get("Env")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let entry = json!(format!("{key}={value}"));
    match env.iter().position(|e| {
        e.as_str()
            .is_some_and(|s| s.split_once('=').map_or(s, |(k, _)| k) == key)
    }) {
        Some(i) => env[i] = entry,
        None => env.push(entry),
    }
    config.insert("Env".into(), Value::Array(env));
}

/// A list as Go's `%q` prints it (`["a" "b c"]`), which is how dockerd records CMD and
/// ENTRYPOINT in the history.
fn go_quoted(v: &[String]) -> String {
    let items: Vec<String> = v.iter().map(|x| quote(x)).collect();
    format!("[{}]", items.join(" "))
}

/// Parses a Go duration (`30s`, `1m30s`, `500ms`) into nanoseconds.
fn go_duration(s: &str) -> Option<i64> {
    let mut total = 0f64;
    let mut rest = s.trim();
    if rest == "0" {
        return Some(0);
    }
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let n = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let value: f64 = rest[..n].parse().ok()?;
        rest = &rest[n..];
        let u = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let mult = match &rest[..u] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        total += value * mult;
        rest = &rest[u..];
    }
    Some(total as i64)
}

/// Runs a build; returns the final image ID. Everything a client sees goes to `out`.
pub fn build(
    backend: &mut dyn BuildBackend,
    cache: &Cache,
    ctx: &Context,
    opts: &BuildOptions,
    out: &mut dyn Emit,
) -> Result<Digest> {
    if let Some(p) = opts.platform.as_deref().filter(|p| !p.is_empty()) {
        check_platform(p)?;
    }
    for t in &opts.tags {
        Reference::parse_tagged(t)?;
    }
    let dockerfile_name = if opts.dockerfile.is_empty() {
        "Dockerfile"
    } else {
        &opts.dockerfile
    };
    let text = ctx.dockerfile(dockerfile_name)?;
    ctx.remove_ignored_specials(dockerfile_name)?;
    let mut df = dockerfile::parse(&text)?;
    if !opts.labels.is_empty() {
        let pairs: Vec<String> = opts
            .labels
            .iter()
            .map(|(k, v)| format!("{}={}", quote(k), quote(v)))
            .collect();
        let line = df.instructions.last().map_or(1, |i| i.line + 1);
        if let Some(i) = dockerfile::instruction(line, &format!("LABEL {}", pairs.join(" ")))? {
            df.instructions.push(i);
        }
    }
    let mut ex = Executor {
        backend,
        cache,
        ctx,
        opts,
        out,
        lexer: Lexer::new(df.escape),
        step: 0,
        total: 0,
        stages: Vec::new(),
        consumed: BTreeSet::new(),
        meta: Vec::new(),
        cache_from: None,
    };
    let id = ex.run(df.instructions)?;
    let unused: Vec<&String> = opts
        .build_args
        .keys()
        .filter(|k| !ex.consumed.contains(*k) && !BUILTIN_ARGS.contains(&k.as_str()))
        .collect();
    if !unused.is_empty() {
        let names: Vec<&str> = unused.iter().map(|s| s.as_str()).collect();
        ex.out.stream(&format!(
            "[Warning] One or more build-args [{}] were not consumed\n",
            names.join(" ")
        ))?;
    }
    ex.out.aux(json!({"ID": id.as_str()}))?;
    ex.out
        .stream(&format!("Successfully built {}\n", short(&id)))?;
    for t in &opts.tags {
        let r = Reference::parse_tagged(t)?;
        ex.backend.store().tag(id.as_str(), &r.to_string())?;
        ex.out
            .stream(&format!("Successfully tagged {}\n", r.familiar()))?;
    }
    Ok(id)
}

fn quote(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| format!("\"{s}\""))
}

struct Executor<'a> {
    backend: &'a mut dyn BuildBackend,
    cache: &'a Cache,
    ctx: &'a Context,
    opts: &'a BuildOptions,
    out: &'a mut dyn Emit,
    lexer: Lexer,
    step: usize,
    total: usize,
    stages: Vec<Stage>,
    consumed: BTreeSet<String>,
    /// ARGs before the first FROM, with values.
    meta: Vec<(String, Option<String>)>,
    /// With `--cache-from`: the images whose steps may be reused.
    cache_from: Option<BTreeSet<String>>,
}

impl Executor<'_> {
    fn store(&self) -> &Store {
        self.backend.store()
    }

    fn run(&mut self, instructions: Vec<Instruction>) -> Result<Digest> {
        // Split into meta ARGs and stages.
        let mut meta = Vec::new();
        let mut stages: Vec<(Instruction, Vec<Instruction>)> = Vec::new();
        for i in instructions {
            if i.keyword == "FROM" {
                stages.push((i, Vec::new()));
            } else if let Some((_, body)) = stages.last_mut() {
                body.push(i);
            } else if i.keyword == "ARG" {
                meta.push(i);
            } else {
                return Err(Error::Instruction(
                    "no build stage in current context".into(),
                ));
            }
        }
        if stages.is_empty() {
            return Err(Error::Instruction(
                "the Dockerfile (or its stdin) holds no instructions: file with no instructions"
                    .into(),
            ));
        }
        if let Some(t) = self.opts.target.as_deref().filter(|t| !t.is_empty()) {
            let idx = stages
                .iter()
                .position(|(from, _)| stage_name(from).is_some_and(|n| n.eq_ignore_ascii_case(t)))
                .ok_or_else(|| {
                    Error::Instruction(format!("failed to reach build target {t} in Dockerfile"))
                })?;
            stages.truncate(idx + 1);
        }
        self.total = meta.len() + stages.iter().map(|(_, b)| b.len() + 1).sum::<usize>();
        if !self.opts.cache_from.is_empty() {
            self.cache_from = Some(self.ancestry(&self.opts.cache_from));
        }
        for a in &meta {
            self.announce(a)?;
            a.check_flags(&[])?;
            for (name, default) in self.arg_words(a, &self.meta_vars())? {
                let value = self.arg_value(&name, default);
                self.meta.retain(|(k, _)| k != &name);
                self.meta.push((name, value));
            }
        }
        for (from, body) in stages {
            self.from(&from)?;
            for ins in &body {
                self.announce(ins)?;
                self.dispatch(ins)?;
            }
        }
        let last = self
            .stages
            .last()
            .ok_or_else(|| Error::Instruction("no build stage in current context".into()))?;
        last.image.id.clone().ok_or_else(|| {
            Error::Instruction("No image was generated. Is your Dockerfile empty?".into())
        })
    }

    /// Every image ID reachable from `names` through `parent` links.
    fn ancestry(&self, names: &[String]) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for n in names {
            let mut cur = self.store().image_id(n).ok().map(|d| d.to_string());
            while let Some(id) = cur.take() {
                if !out.insert(id.clone()) {
                    break;
                }
                cur = self
                    .store()
                    .image_config(&id)
                    .ok()
                    .and_then(|c| c.get("parent").and_then(Value::as_str).map(str::to_string));
            }
        }
        out
    }

    fn meta_vars(&self) -> Vec<(String, String)> {
        self.meta
            .iter()
            .filter_map(|(k, v)| v.clone().map(|v| (k.clone(), v)))
            .collect()
    }

    fn announce(&mut self, ins: &Instruction) -> Result<()> {
        self.step += 1;
        let text = format!("Step {}/{} : {}\n", self.step, self.total, ins.original);
        self.out.stream(&text)
    }

    /// `ARG a=1 b` → `[(a, Some(1)), (b, None)]`, defaults substituted.
    fn arg_words(
        &self,
        ins: &Instruction,
        vars: &[(String, String)],
    ) -> Result<Vec<(String, Option<String>)>> {
        let raw = ins.raw();
        if raw.trim().is_empty() {
            return Err(Error::Instruction(
                "ARG requires exactly one argument".into(),
            ));
        }
        let mut out = Vec::new();
        for w in split_unquoted(&raw, self.lexer) {
            match w.split_once('=') {
                Some((k, v)) => out.push((k.to_string(), Some(self.lexer.process_word(v, vars)?))),
                None => out.push((w.to_string(), None)),
            }
        }
        Ok(out)
    }

    /// A declared ARG's value: the build arg if given, else the default.
    fn arg_value(&mut self, name: &str, default: Option<String>) -> Option<String> {
        if let Some(v) = self.opts.build_args.get(name) {
            self.consumed.insert(name.to_string());
            if v.is_some() {
                return v.clone();
            }
        }
        default
    }

    fn from(&mut self, ins: &Instruction) -> Result<()> {
        self.announce(ins)?;
        ins.check_flags(&["platform"])?;
        if let Some(p) = ins.flag("platform") {
            let p = self.lexer.process_word(p, &self.meta_vars())?;
            if !p.is_empty() {
                check_platform(&p)?;
            }
        }
        let words: Vec<String> = ins.raw().split_whitespace().map(str::to_string).collect();
        let (name_raw, alias) = match words.as_slice() {
            [n] => (n.clone(), None),
            [n, as_kw, a] if as_kw.eq_ignore_ascii_case("as") => (n.clone(), Some(a.clone())),
            _ => {
                return Err(Error::Instruction(
                    "FROM requires either one or three arguments".into(),
                ))
            }
        };
        let name = self.lexer.process_word(&name_raw, &self.meta_vars())?;
        if name.is_empty() {
            return Err(Error::Instruction(format!(
                "base name ({name_raw}) should not be blank"
            )));
        }
        let image = if let Some(prev) = self.stages.iter().rev().find(|s| {
            s.name
                .as_deref()
                .is_some_and(|n| n.eq_ignore_ascii_case(&name))
        }) {
            prev.image.clone()
        } else if name.eq_ignore_ascii_case("scratch") {
            ImageState::scratch()
        } else {
            self.base_image(&name)?
        };
        if let Some(id) = &image.id {
            self.out.stream(&format!(" ---> {}\n", short(id)))?;
        }
        let mut config = image.container_config();
        let triggers: Vec<String> = config
            .get("OnBuild")
            .and_then(|o| serde_json::from_value(o.clone()).ok())
            .unwrap_or_default();
        config.remove("OnBuild");
        let stage = Stage {
            name: alias.map(|a| a.to_ascii_lowercase()),
            image,
            config,
            args: Vec::new(),
            cmd_set: false,
        };
        self.stages.push(stage);
        if !triggers.is_empty() {
            let n = triggers.len();
            self.out.stream(&format!(
                "# Executing {n} build trigger{}\n",
                if n == 1 { "" } else { "s" }
            ))?;
            for t in triggers {
                if let Some(ti) = dockerfile::instruction(ins.line, &t)? {
                    self.dispatch(&ti)?;
                }
            }
        }
        Ok(())
    }

    fn base_image(&mut self, name: &str) -> Result<ImageState> {
        let present = self.store().image_id(name).is_ok();
        if self.opts.pull || !present {
            let platform = self.opts.platform.clone();
            let pulled = self.backend.pull(name, platform.as_deref(), &mut *self.out);
            if let Err(err) = pulled {
                if !present {
                    return Err(err);
                }
                tracing::warn!(image = name, %err, "pull failed, using the local image");
            }
        }
        ImageState::load(self.store(), name)
    }

    fn stage(&mut self) -> &mut Stage {
        // `run` pushes a stage before any instruction is dispatched.
        let last = self.stages.len() - 1;
        &mut self.stages[last]
    }

    fn stage_ref(&self) -> &Stage {
        &self.stages[self.stages.len() - 1]
    }

    /// Reuses a cached step if allowed; `Some(())` when the stage moved to the cached image.
    fn try_cache(&mut self, key: &str) -> Result<bool> {
        if self.opts.no_cache {
            return Ok(false);
        }
        let Some(img) = self.cache.get(key) else {
            return Ok(false);
        };
        if let Some(allowed) = &self.cache_from {
            if !allowed.contains(&img) {
                return Ok(false);
            }
        }
        let Ok(state) = ImageState::load(self.store(), &img) else {
            return Ok(false);
        };
        self.out.stream(" ---> Using cache\n")?;
        self.finish_step(state)?;
        Ok(true)
    }

    fn finish_step(&mut self, state: ImageState) -> Result<()> {
        if let Some(id) = &state.id {
            self.out.stream(&format!(" ---> {}\n", short(id)))?;
        }
        let st = self.stage();
        st.config = state.container_config();
        st.image = state;
        Ok(())
    }

    fn parent_key(&self) -> String {
        self.stage_ref()
            .image
            .id
            .as_ref()
            .map(|d| d.to_string())
            .unwrap_or_else(|| "scratch".into())
    }

    /// A step that only changes the config.
    fn commit_config(&mut self, config: Map<String, Value>, text: &str) -> Result<()> {
        let created_by = self.stage_ref().nop(text);
        let key = cache::key(
            &self.parent_key(),
            &format!("{created_by}\n{}", Value::Object(config.clone())),
        );
        if self.try_cache(&key)? {
            return Ok(());
        }
        let parent = self.stage_ref().image.clone();
        let workdir = (text.starts_with("WORKDIR "))
            .then(|| {
                config
                    .get("WorkingDir")
                    .and_then(Value::as_str)
                    .map(str::to_string)
            })
            .flatten();
        let state = match (&parent.id, workdir) {
            // As dockerd: WORKDIR makes its directory (root-owned, 0755) when the image lacks
            // it, so the next RUN can start there.
            (Some(id), Some(dir)) => {
                let store = self.store().clone();
                let rootfs = ScratchRootfs::create(&store, id.as_str())?;
                let fs = ContainerFs::open(&rootfs.path)?;
                let resolved = fs.resolve(&dir)?;
                if fs.stat(&resolved).is_ok() {
                    drop(fs);
                    drop(rootfs);
                    image::commit_config(&store, &parent, config, &created_by)?
                } else {
                    fs.mount_target(&resolved, true)?;
                    drop(fs);
                    image::commit_container(&store, &rootfs.id, config, &created_by)?
                }
            }
            _ => image::commit_config(self.store(), &parent, config, &created_by)?,
        };
        self.record(&key, &state)?;
        self.finish_step(state)
    }

    fn record(&self, key: &str, state: &ImageState) -> Result<()> {
        if let Some(id) = &state.id {
            self.cache.put(key, id.as_str())?;
        }
        Ok(())
    }

    fn dispatch(&mut self, ins: &Instruction) -> Result<()> {
        let vars = self.stage_ref().vars();
        let kw = ins.keyword.as_str();
        match kw {
            "RUN" => {
                ins.check_flags(&[])?;
                self.run_step(ins)
            }
            "COPY" => {
                ins.check_flags(&["from", "chown", "chmod", "link"])?;
                self.copy_step(ins, false)
            }
            "ADD" => {
                ins.check_flags(&["chown", "chmod", "link"])?;
                self.copy_step(ins, true)
            }
            "ARG" => {
                ins.check_flags(&[])?;
                let words = self.arg_words(ins, &vars)?;
                for (name, default) in &words {
                    let meta = self
                        .meta
                        .iter()
                        .find(|(k, _)| k == name)
                        .and_then(|(_, v)| v.clone());
                    let value = self.arg_value(name, default.clone().or(meta));
                    let st = self.stage();
                    st.args.retain(|(k, _)| k != name);
                    st.args.push((name.clone(), value));
                }
                let config = self.stage_ref().config.clone();
                self.commit_config(config, &format!("ARG {}", ins.raw()))
            }
            _ => {
                ins.check_flags(if kw == "HEALTHCHECK" {
                    &[
                        "interval",
                        "timeout",
                        "start-period",
                        "start-interval",
                        "retries",
                    ]
                } else {
                    &[]
                })?;
                let mut config = self.stage_ref().config.clone();
                let text = self.apply_meta(ins, &vars, &mut config)?;
                self.commit_config(config, &text)
            }
        }
    }

    /// Applies a config-only instruction to `config`; returns its history text.
    fn apply_meta(
        &mut self,
        ins: &Instruction,
        vars: &[(String, String)],
        config: &mut Map<String, Value>,
    ) -> Result<String> {
        let kw = ins.keyword.as_str();
        let raw = ins.raw();
        let need = |ok: bool, msg: &str| -> Result<()> {
            if ok {
                Ok(())
            } else {
                Err(Error::Instruction(msg.to_string()))
            }
        };
        match kw {
            "ENV" | "LABEL" => {
                let pairs = self.pairs(kw, &raw, vars)?;
                let mut shown = Vec::new();
                for (k, v) in pairs {
                    shown.push(format!("{k}={v}"));
                    if kw == "ENV" {
                        set_env(config, &k, &v);
                    } else {
                        let labels = config.entry("Labels").or_insert_with(|| json!({}));
                        if !labels.is_object() {
                            *labels = json!({});
                        }
                        labels[k] = json!(v);
                    }
                }
                Ok(format!("{kw} {}", shown.join(" ")))
            }
            "CMD" | "ENTRYPOINT" => {
                let cmd = match &ins.args {
                    Args::Json(v) => v.clone(),
                    Args::Raw(r) => {
                        let mut s = self.stage_ref().shell();
                        s.push(r.clone());
                        s
                    }
                };
                if kw == "CMD" {
                    config.insert("Cmd".into(), json!(cmd));
                    self.stage().cmd_set = true;
                } else {
                    config.insert("Entrypoint".into(), json!(cmd));
                    if !self.stage_ref().cmd_set {
                        config.insert("Cmd".into(), Value::Null);
                    }
                }
                Ok(format!("{kw} {}", go_quoted(&cmd)))
            }
            "EXPOSE" => {
                let ports = self.lexer.process_words(&raw, vars)?;
                need(!ports.is_empty(), "EXPOSE requires at least one argument")?;
                let map = config.entry("ExposedPorts").or_insert_with(|| json!({}));
                if !map.is_object() {
                    *map = json!({});
                }
                let mut shown = Vec::new();
                for p in ports {
                    for port in expand_port(&p)? {
                        shown.push(port.clone());
                        map[port] = json!({});
                    }
                }
                Ok(format!("EXPOSE {}", shown.join(" ")))
            }
            "WORKDIR" => {
                let w = self.lexer.process_word(&raw, vars)?;
                need(!w.is_empty(), "WORKDIR requires exactly one argument")?;
                let cur = config
                    .get("WorkingDir")
                    .and_then(Value::as_str)
                    .unwrap_or("/");
                let joined = if w.starts_with('/') {
                    w
                } else {
                    format!("{}/{w}", cur.trim_end_matches('/'))
                };
                let clean = format!("/{}", crate::ignore::clean(&joined)).replace("/.", "/");
                let clean = if clean == "/" || clean.is_empty() {
                    "/".to_string()
                } else {
                    clean
                };
                config.insert("WorkingDir".into(), json!(clean));
                Ok(format!("WORKDIR {clean}"))
            }
            "USER" => {
                let u = self.lexer.process_word(&raw, vars)?;
                need(!u.is_empty(), "USER requires exactly one argument")?;
                config.insert("User".into(), json!(u));
                Ok(format!("USER {u}"))
            }
            "VOLUME" => {
                let vols = match &ins.args {
                    Args::Json(v) => v
                        .iter()
                        .map(|x| self.lexer.process_word(x, vars))
                        .collect::<Result<Vec<_>>>()?,
                    Args::Raw(r) => self.lexer.process_words(r, vars)?,
                };
                need(!vols.is_empty(), "VOLUME requires at least one argument")?;
                let map = config.entry("Volumes").or_insert_with(|| json!({}));
                if !map.is_object() {
                    *map = json!({});
                }
                for v in &vols {
                    need(
                        !v.trim().is_empty(),
                        "VOLUME specified can not be an empty string",
                    )?;
                    map[v.as_str()] = json!({});
                }
                Ok(format!("VOLUME [{}]", vols.join(" ")))
            }
            "STOPSIGNAL" => {
                let s = self.lexer.process_word(&raw, vars)?;
                need(!s.is_empty(), "STOPSIGNAL requires exactly one argument")?;
                config.insert("StopSignal".into(), json!(s));
                Ok(format!("STOPSIGNAL {s}"))
            }
            "SHELL" => {
                let Args::Json(v) = &ins.args else {
                    return Err(Error::Instruction(
                        "SHELL requires the arguments to be in JSON form".into(),
                    ));
                };
                need(!v.is_empty(), "SHELL requires at least one argument")?;
                config.insert("Shell".into(), json!(v));
                Ok(format!("SHELL [{}]", v.join(" ")))
            }
            "MAINTAINER" => {
                // The author lives outside the container config.
                if let Some(obj) = self.stage().image.config.as_object_mut() {
                    obj.insert("author".into(), json!(raw));
                }
                Ok(format!("MAINTAINER {raw}"))
            }
            "ONBUILD" => {
                let trigger = dockerfile::instruction(ins.line, &raw)?.ok_or_else(|| {
                    Error::Instruction("ONBUILD requires at least one argument".into())
                })?;
                if matches!(trigger.keyword.as_str(), "ONBUILD" | "FROM" | "MAINTAINER") {
                    return Err(Error::Instruction(format!(
                        "{} isn't allowed as an ONBUILD trigger",
                        trigger.keyword
                    )));
                }
                let text = match raw.split_once(char::is_whitespace) {
                    Some((k, rest)) => format!("{} {}", k.to_ascii_uppercase(), rest.trim_start()),
                    None => raw.to_ascii_uppercase(),
                };
                let list = config.entry("OnBuild").or_insert_with(|| json!([]));
                if !list.is_array() {
                    *list = json!([]);
                }
                if let Some(a) = list.as_array_mut() {
                    a.push(json!(text));
                }
                Ok(format!("ONBUILD {text}"))
            }
            "HEALTHCHECK" => {
                let words: Vec<&str> = raw.split_whitespace().collect();
                let first = words
                    .first()
                    .map(|w| w.to_ascii_uppercase())
                    .unwrap_or_default();
                let hc = match first.as_str() {
                    "NONE" => {
                        need(
                            words.len() == 1 && ins.flags.is_empty(),
                            "HEALTHCHECK NONE takes no arguments",
                        )?;
                        json!({"Test": ["NONE"]})
                    }
                    "CMD" => {
                        let rest = raw.trim_start()[3..].trim_start().to_string();
                        need(!rest.is_empty(), "Missing command after HEALTHCHECK CMD")?;
                        let test = match serde_json::from_str::<Vec<String>>(&rest) {
                            Ok(v) if rest.starts_with('[') => {
                                let mut t = vec!["CMD".to_string()];
                                t.extend(v);
                                t
                            }
                            _ => vec!["CMD-SHELL".to_string(), rest],
                        };
                        let mut hc = json!({"Test": test});
                        for (flag, field) in [
                            ("interval", "Interval"),
                            ("timeout", "Timeout"),
                            ("start-period", "StartPeriod"),
                            ("start-interval", "StartInterval"),
                        ] {
                            if let Some(v) = ins.flag(flag) {
                                let ns = go_duration(v).ok_or_else(|| {
                                    Error::Instruction(format!(
                                        "invalid duration for --{flag}: {v}"
                                    ))
                                })?;
                                hc[field] = json!(ns);
                            }
                        }
                        if let Some(r) = ins.flag("retries") {
                            let n: i64 = r.parse().map_err(|_| {
                                Error::Instruction(format!("invalid --retries value {r}"))
                            })?;
                            hc["Retries"] = json!(n);
                        }
                        hc
                    }
                    _ => {
                        return Err(Error::Instruction(
                            "Unknown type in HEALTHCHECK (try CMD)".into(),
                        ))
                    }
                };
                config.insert("Healthcheck".into(), hc.clone());
                Ok(format!("HEALTHCHECK &{hc}"))
            }
            other => Err(Error::Instruction(format!("unknown instruction: {other}"))),
        }
    }

    /// ENV/LABEL arguments: `k=v k2="v 2"` or the old `k value with spaces`.
    fn pairs(
        &self,
        kw: &str,
        raw: &str,
        vars: &[(String, String)],
    ) -> Result<Vec<(String, String)>> {
        let words = split_unquoted(raw, self.lexer);
        if words.is_empty() {
            return Err(Error::Instruction(format!(
                "{kw} requires at least one argument"
            )));
        }
        if !words[0].contains('=') {
            let key = words[0].to_string();
            let rest = raw.trim_start()[words[0].len()..].trim_start();
            if rest.is_empty() && kw == "ENV" {
                return Err(Error::Instruction(format!("{kw} names can not be blank")));
            }
            return Ok(vec![(key, self.lexer.process_word(rest, vars)?)]);
        }
        let mut out = Vec::new();
        for w in words {
            let Some((k, v)) = w.split_once('=') else {
                return Err(Error::Instruction(format!(
                    "Syntax error - can't find = in \"{w}\". Must be of the form: name=value"
                )));
            };
            if k.is_empty() {
                return Err(Error::Instruction(format!("{kw} names can not be blank")));
            }
            let k = self.lexer.process_word(k, vars)?;
            out.push((k, self.lexer.process_word(v, vars)?));
        }
        Ok(out)
    }

    fn run_step(&mut self, ins: &Instruction) -> Result<()> {
        let st = self.stage_ref();
        let cmd = match &ins.args {
            Args::Json(v) => v.clone(),
            Args::Raw(r) => {
                let mut s = st.shell();
                s.push(r.clone());
                s
            }
        };
        // Build args reach the command's environment (and its cache key), not the image.
        let env_keys: BTreeSet<String> = st.env().into_iter().map(|(k, _)| k).collect();
        let mut arg_env: Vec<(String, String)> = st
            .args
            .iter()
            .filter_map(|(k, v)| v.clone().map(|v| (k.clone(), v)))
            .filter(|(k, _)| !env_keys.contains(k))
            .collect();
        let mut proxies = Vec::new();
        for b in BUILTIN_ARGS {
            if let Some(Some(v)) = self.opts.build_args.get(*b) {
                if !env_keys.contains(*b) && !arg_env.iter().any(|(k, _)| k == b) {
                    proxies.push((b.to_string(), v.clone()));
                }
            }
        }
        arg_env.sort();
        let created_by = if arg_env.is_empty() {
            cmd.join(" ")
        } else {
            let a: Vec<String> = arg_env.iter().map(|(k, v)| format!("{k}={v}")).collect();
            format!("|{} {} {}", a.len(), a.join(" "), cmd.join(" "))
        };
        let config = st.config.clone();
        let image_id = st.image.id.clone();
        let key = cache::key(
            &self.parent_key(),
            &format!("{created_by}\n{}", Value::Object(config.clone())),
        );
        if self.try_cache(&key)? {
            return Ok(());
        }
        let Some(image_id) = image_id else {
            return Err(Error::Instruction(
                "RUN needs a base image with a shell: the stage starts FROM scratch".into(),
            ));
        };
        let mut run_config = config.clone();
        for (k, v) in arg_env.iter().chain(proxies.iter()) {
            set_env(&mut run_config, k, v);
        }
        run_config.insert("Cmd".into(), json!(cmd));
        run_config.insert("Entrypoint".into(), Value::Null);
        let cid = self
            .backend
            .create(image_id.as_str(), &RunSpec { config: run_config })?;
        let short_c: String = cid.chars().take(12).collect();
        let outcome = self
            .out
            .stream(&format!(" ---> Running in {short_c}\n"))
            .and_then(|()| self.backend.start_and_wait(&cid, &mut *self.out));
        let code = match outcome {
            Ok(c) => c,
            Err(err) => {
                self.remove_container(&cid);
                return Err(err);
            }
        };
        if code != 0 {
            if self.opts.rm || self.opts.force_rm {
                self.remove_container(&cid);
            }
            return Err(Error::NonZero {
                command: cmd.join(" "),
                code,
            });
        }
        let committed = image::commit_container(self.store(), &cid, config, &created_by);
        if self.opts.rm || self.opts.force_rm || committed.is_err() {
            self.out
                .stream(&format!("Removing intermediate container {short_c}\n"))?;
            self.remove_container(&cid);
        }
        let state = committed?;
        self.record(&key, &state)?;
        self.finish_step(state)
    }

    fn remove_container(&mut self, id: &str) {
        if let Err(err) = self.backend.remove(id) {
            tracing::warn!(container = id, %err, "cannot remove intermediate container");
        }
    }

    fn copy_step(&mut self, ins: &Instruction, add: bool) -> Result<()> {
        let kw = ins.keyword.clone();
        let st = self.stage_ref();
        let vars = st.vars();
        let words = match &ins.args {
            Args::Json(v) => v
                .iter()
                .map(|w| self.lexer.process_word(w, &vars))
                .collect::<Result<Vec<_>>>()?,
            Args::Raw(r) => self.lexer.process_words(r, &vars)?,
        };
        if words.len() < 2 {
            return Err(Error::Instruction(format!(
                "{kw} requires at least two arguments"
            )));
        }
        let (dest_raw, srcs) = words
            .split_last()
            .map(|(d, s)| (d.clone(), s.to_vec()))
            .unwrap_or_default();
        let workdir = st
            .config
            .get("WorkingDir")
            .and_then(Value::as_str)
            .unwrap_or("/");
        let mut dest = if dest_raw.starts_with('/') {
            dest_raw.clone()
        } else {
            format!("{}/{}", workdir.trim_end_matches('/'), dest_raw)
        };
        if (dest_raw == "." || dest_raw.ends_with("/.")) && !dest.ends_with('/') {
            dest.push('/');
        }
        let chown = ins
            .flag("chown")
            .map(|c| self.lexer.process_word(c, &vars))
            .transpose()?;
        let chmod = ins.flag("chmod").map(copy::parse_chmod).transpose()?;
        let req = CopyRequest {
            srcs,
            dest,
            chown: chown.filter(|c| !c.is_empty()),
            chmod,
            add,
        };
        let from = ins
            .flag("from")
            .map(|f| self.lexer.process_word(f, &vars))
            .transpose()?;
        let tmp = self.backend.tmp_dir();
        // The source tree: the context, or an image's root filesystem mounted for the step.
        let mut source_mount: Option<ScratchRootfs> = None;
        let source_image = match from.as_deref() {
            None => None,
            Some(f) => Some(self.copy_source_image(f)?),
        };
        let store = self.backend.store().clone();
        let store = &store;
        let src_fs_owned;
        let src_root: PathBuf;
        let src = match &source_image {
            None => SourceFs {
                fs: self.ctx.fs(),
                root: self.ctx.path(),
                is_context: true,
            },
            Some(id) => {
                let m = ScratchRootfs::create(store, id.as_str())?;
                src_root = m.path.clone();
                src_fs_owned = ContainerFs::open(&src_root)?;
                source_mount = Some(m);
                SourceFs {
                    fs: &src_fs_owned,
                    root: &src_root,
                    is_context: false,
                }
            }
        };
        let sources = copy::expand_sources(&src, &req)?;
        let digest = copy::sources_digest(&src, &sources)?;
        let kind = if sources.len() > 1 { "multi" } else { "file" };
        let created_by = self
            .stage_ref()
            .nop(&format!("{kw} {kind}:{digest} in {} ", req.dest));
        let config = self.stage_ref().config.clone();
        let key = cache::key(
            &self.parent_key(),
            &format!(
                "{created_by}\n{:?} {:?}\n{}",
                req.chown,
                req.chmod,
                Value::Object(config.clone())
            ),
        );
        if self.try_cache(&key)? {
            drop(source_mount);
            return Ok(());
        }
        let parent = self.stage_ref().image.clone();
        let state = match &parent.id {
            Some(id) => {
                let target = ScratchRootfs::create(store, id.as_str())?;
                let tfs = ContainerFs::open(&target.path)?;
                let owner = match &req.chown {
                    Some(c) => copy::resolve_chown(&tfs, c)?,
                    None => (0, 0),
                };
                copy::apply(&src, &tfs, &sources, &req, owner, &tmp)?;
                drop(tfs);
                image::commit_container(store, &target.id, config, &created_by)?
            }
            None => {
                let staging = tempfile::Builder::new()
                    .prefix("copy-")
                    .tempdir_in(&tmp)
                    .map_err(Error::io("create temp dir in", tmp.clone()))?;
                let tfs = ContainerFs::open(staging.path())?;
                let owner = match &req.chown {
                    Some(c) => copy::resolve_chown(&tfs, c)?,
                    None => (0, 0),
                };
                copy::apply(&src, &tfs, &sources, &req, owner, &tmp)?;
                image::commit_tree(store, &parent, &tfs, &tmp, config, &created_by)?
            }
        };
        drop(source_mount);
        self.record(&key, &state)?;
        self.finish_step(state)
    }

    /// `--from=`: a previous stage (by name or index) or an image (pulled if missing).
    fn copy_source_image(&mut self, from: &str) -> Result<Digest> {
        let lower = from.to_ascii_lowercase();
        let current = self.stages.len() - 1;
        let by_name = self.stages[..current]
            .iter()
            .find(|s| s.name.as_deref() == Some(lower.as_str()));
        let by_index = from
            .parse::<usize>()
            .ok()
            .and_then(|i| (i < current).then(|| &self.stages[i]));
        if let Some(s) = by_name.or(by_index) {
            return s.image.id.clone().ok_or_else(|| {
                Error::Instruction(format!(
                    "stage {from} is empty (FROM scratch with no files)"
                ))
            });
        }
        if from.parse::<usize>().is_ok() {
            return Err(Error::Instruction(format!(
                "index out of bounds: stage {from} is not before this one"
            )));
        }
        self.base_image(from)?
            .id
            .ok_or_else(|| Error::Instruction(format!("image {from} has no content to copy from")))
    }
}

/// Splits on unquoted whitespace, keeping quotes (they are removed per value later).
fn split_unquoted(raw: &str, lexer: Lexer) -> Vec<String> {
    let escape = lexer.escape();
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (None, c) if c.is_whitespace() => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            (None, '"') | (None, '\'') => {
                quote = Some(c);
                cur.push(c);
            }
            (Some(q), c) if c == q => {
                quote = None;
                cur.push(c);
            }
            (_, c) if c == escape => {
                cur.push(c);
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            _ => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// `80`, `80/udp`, `8000-8002/tcp` → `80/tcp`, ...
fn expand_port(p: &str) -> Result<Vec<String>> {
    let (range, proto) = match p.split_once('/') {
        Some((r, pr)) => (r, pr.to_ascii_lowercase()),
        None => (p, "tcp".to_string()),
    };
    let bad = || Error::Instruction(format!("invalid containerPort: {p}"));
    let (lo, hi) = match range.split_once('-') {
        Some((a, b)) => (
            a.parse::<u16>().map_err(|_| bad())?,
            b.parse::<u16>().map_err(|_| bad())?,
        ),
        None => {
            let n = range.parse::<u16>().map_err(|_| bad())?;
            (n, n)
        }
    };
    if hi < lo {
        return Err(bad());
    }
    Ok((lo..=hi).map(|n| format!("{n}/{proto}")).collect())
}

fn stage_name(from: &Instruction) -> Option<String> {
    let raw = from.raw();
    let words: Vec<&str> = raw.split_whitespace().collect();
    match words.as_slice() {
        [_, a, n] if a.eq_ignore_ascii_case("as") => Some(n.to_string()),
        _ => None,
    }
}

/// A writable root filesystem of an image, made for one COPY step and removed afterwards.
struct ScratchRootfs {
    store: Store,
    id: String,
    path: PathBuf,
}

impl ScratchRootfs {
    fn create(store: &Store, image: &str) -> Result<ScratchRootfs> {
        let id = hex::encode(rand::random::<[u8; 32]>());
        let rootfs = store.create_rootfs(image, &id)?;
        Ok(ScratchRootfs {
            store: store.clone(),
            id,
            path: rootfs.path,
        })
    }
}

impl Drop for ScratchRootfs {
    fn drop(&mut self) {
        if let Err(err) = self.store.remove_rootfs(&self.id) {
            tracing::warn!(id = %self.id, %err, "cannot remove a build step's root filesystem");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_ports_words() {
        assert_eq!(go_duration("30s"), Some(30_000_000_000));
        assert_eq!(go_duration("1m30s"), Some(90_000_000_000));
        assert_eq!(go_duration("500ms"), Some(500_000_000));
        assert_eq!(go_duration("x"), None);
        assert_eq!(expand_port("80").unwrap(), vec!["80/tcp"]);
        assert_eq!(expand_port("53/UDP").unwrap(), vec!["53/udp"]);
        assert_eq!(expand_port("1-2").unwrap(), vec!["1/tcp", "2/tcp"]);
        assert!(expand_port("x").is_err());
        assert_eq!(
            split_unquoted(r#"a=1 b="x y" c='p q' d=e\ f"#, Lexer::default()),
            vec!["a=1", "b=\"x y\"", "c='p q'", "d=e\\ f"]
        );
        assert!(check_platform("foobar").is_err());
        assert!(check_platform("linux").is_ok());
    }
}
