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
use crate::instructions::{self, env_pairs, quote, set_env, split_unquoted, StageConfig};
use crate::scratch::ScratchRootfs;
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

/// What a build is asked to do (`POST /build`'s parameters). The default is dockerd's:
/// `rm` on, everything else off.
#[derive(Debug, Clone)]
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

impl Default for BuildOptions {
    fn default() -> Self {
        BuildOptions {
            dockerfile: String::new(),
            tags: Vec::new(),
            build_args: BTreeMap::new(),
            labels: BTreeMap::new(),
            target: None,
            no_cache: false,
            rm: true,
            force_rm: false,
            pull: false,
            platform: None,
            cache_from: Vec::new(),
        }
    }
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
    /// Downloads `url` into `dest` (ADD of a URL); returns its `Last-Modified` time (unix
    /// seconds) if the server sent one. Without an implementation, URLs are refused.
    fn fetch(&mut self, url: &str, dest: &mut std::fs::File) -> Result<Option<i64>> {
        let _ = dest;
        Err(Error::Instruction(format!(
            "ADD failed: remote URL sources ({url}) are not supported by this engine"
        )))
    }
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
        instructions::shell(&self.config)
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
        // dockerd joins `[shell..., "#(nop) ", text]` with spaces: hence the two spaces;
        // its WORKDIR step writes the comment itself, with one.
        let gap = if text.starts_with("WORKDIR ") {
            " "
        } else {
            "  "
        };
        format!("{} #(nop){gap}{text}", self.shell().join(" "))
    }
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
    dockerfile::validate(&df)?;
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
        // dockerd prints the arrow for scratch too, with no ID.
        let shown = image.id.as_ref().map(short).unwrap_or_default();
        self.out.stream(&format!(" ---> {shown}\n"))?;
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
                let rootfs = ScratchRootfs::create(&store, id.as_str(), &self.cache.dir())?;
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
            // On scratch the directory is the layer's only content.
            (None, Some(dir)) if dir != "/" => {
                let tmp = self.backend.tmp_dir();
                let staging = tempfile::Builder::new()
                    .prefix("workdir-")
                    .tempdir_in(&tmp)
                    .map_err(Error::io("create temp dir in", tmp.clone()))?;
                let fs = ContainerFs::open(staging.path())?;
                fs.mount_target(&dir, true)?;
                image::commit_tree(self.store(), &parent, &fs, &tmp, config, &created_by)?
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
                ins.check_flags(&["from", "chown", "chmod"])?;
                self.copy_step(ins, false)
            }
            "ADD" => {
                ins.check_flags(&["chown", "chmod"])?;
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
                let shell = self.stage_ref().shell();
                let mut cmd_set = self.stage_ref().cmd_set;
                let mut author = None;
                let text = instructions::apply(
                    ins,
                    self.lexer,
                    &vars,
                    &mut StageConfig {
                        config: &mut config,
                        shell: &shell,
                        cmd_set: &mut cmd_set,
                        author: &mut author,
                    },
                )?;
                let st = self.stage();
                st.cmd_set = cmd_set;
                if let (Some(a), Some(obj)) = (author, st.image.config.as_object_mut()) {
                    obj.insert("author".into(), json!(a));
                }
                self.commit_config(config, &text)
            }
        }
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
        let mut req = req;
        let downloads = self.download_sources(&mut req, &tmp)?;
        // The source tree: the context, the downloads, or an image's root filesystem mounted
        // for the step.
        let mut source_mount: Option<ScratchRootfs> = None;
        let source_image = match from.as_deref() {
            None => None,
            Some(f) => Some(self.copy_source_image(f)?),
        };
        let store = self.backend.store().clone();
        let store = &store;
        let src_fs_owned;
        let src_root: PathBuf;
        let downloads_fs = downloads
            .as_ref()
            .map(|d| ContainerFs::open(d.path()))
            .transpose()?;
        let src = match (&source_image, &downloads, &downloads_fs) {
            // Downloaded files are never unpacked: `is_context: false`.
            (_, Some(d), Some(fs)) => SourceFs {
                fs,
                root: d.path(),
                is_context: false,
            },
            (None, _, _) => SourceFs {
                fs: self.ctx.fs(),
                root: self.ctx.path(),
                is_context: true,
            },
            (Some(id), _, _) => {
                let m = ScratchRootfs::create(store, id.as_str(), &self.cache.dir())?;
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
                let started = std::time::Instant::now();
                let target = ScratchRootfs::create(store, id.as_str(), &self.cache.dir())?;
                tracing::debug!(elapsed = ?started.elapsed(), "copy target root filesystem ready");
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

    /// ADD of URLs: downloads them (mode 0600, the server's modification time) into a new
    /// directory and points the request's sources at the files. `None` without URLs.
    fn download_sources(
        &mut self,
        req: &mut CopyRequest,
        tmp: &std::path::Path,
    ) -> Result<Option<tempfile::TempDir>> {
        let is_url = |s: &String| s.starts_with("http://") || s.starts_with("https://");
        let urls = req.srcs.iter().filter(|s| is_url(s)).count();
        if urls == 0 {
            return Ok(None);
        }
        if !req.add {
            return Err(Error::Instruction(
                "COPY failed: source can't be a URL for COPY".into(),
            ));
        }
        if urls != req.srcs.len() {
            return Err(Error::Instruction(
                "ADD with both URL and local sources is not supported".into(),
            ));
        }
        let dir = tempfile::Builder::new()
            .prefix("download-")
            .tempdir_in(tmp)
            .map_err(Error::io("create temp dir in", tmp))?;
        let mut names = Vec::new();
        for url in &req.srcs {
            let path_part = url.split(['?', '#']).next().unwrap_or(url);
            let name = path_part
                .trim_end_matches('/')
                .rsplit('/')
                .next()
                .filter(|n| !n.is_empty() && !n.contains(':') && *n != "." && *n != "..")
                .map(str::to_string);
            let name = match name {
                Some(n) => n,
                // Named by the destination then (`ADD https://host/ /file`).
                None if !req.dest.ends_with('/') => "download".to_string(),
                None => {
                    return Err(Error::Instruction(format!(
                        "cannot determine filename from url: {url}"
                    )))
                }
            };
            let path = dir.path().join(&name);
            let mut f = std::fs::File::create(&path).map_err(Error::io("create", path.clone()))?;
            let modified = self.backend.fetch(url, &mut f)?;
            f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))
                .map_err(Error::io("chmod", path.clone()))?;
            if let Some(t) = modified {
                let when = std::time::UNIX_EPOCH + std::time::Duration::from_secs(t.max(0) as u64);
                f.set_modified(when)
                    .map_err(Error::io("set time of", path.clone()))?;
            }
            names.push(name);
        }
        req.srcs = names;
        Ok(Some(dir))
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

fn stage_name(from: &Instruction) -> Option<String> {
    let raw = from.raw();
    let words: Vec<&str> = raw.split_whitespace().collect();
    match words.as_slice() {
        [_, a, n] if a.eq_ignore_ascii_case("as") => Some(n.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platforms() {
        assert!(check_platform("foobar").is_err());
        assert!(check_platform("linux").is_ok());
        let (os, arch) = berth_image::spec::host_platform();
        assert!(check_platform(&format!("{os}/{arch}")).is_ok());
        assert!(check_platform("linux/s390x").is_err() || arch == "s390x");
    }
}
