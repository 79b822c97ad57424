//! The executor over a real image store and a backend that has no containers: FROM scratch
//! builds exercise stages, ARG/ENV scoping, labels, COPY into scratch, the cache and errors.

use std::collections::BTreeMap;
use std::path::PathBuf;

use berth_builder::build::{BuildBackend, Emit, RunSpec};
use berth_builder::{build, BuildOptions, Cache, Context, Error, Result};
use berth_image::Store;
use serde_json::Value;

struct NoContainers {
    store: Store,
    tmp: PathBuf,
}

impl BuildBackend for NoContainers {
    fn store(&self) -> &Store {
        &self.store
    }
    fn pull(&mut self, r: &str, _: Option<&str>, _: &mut dyn Emit) -> Result<()> {
        Err(Error::Backend(format!("pull access denied for {r}")))
    }
    fn create(&mut self, _: &str, _: &RunSpec) -> Result<String> {
        Err(Error::Backend("no containers here".into()))
    }
    fn start_and_wait(&mut self, _: &str, _: &mut dyn Emit) -> Result<i64> {
        Err(Error::Backend("no containers here".into()))
    }
    fn remove(&mut self, _: &str) -> Result<()> {
        Ok(())
    }
    fn tmp_dir(&self) -> PathBuf {
        self.tmp.clone()
    }
}

#[derive(Default)]
struct Collect(Vec<String>);

impl Emit for Collect {
    fn stream(&mut self, text: &str) -> Result<()> {
        self.0.push(text.to_string());
        Ok(())
    }
    fn aux(&mut self, v: Value) -> Result<()> {
        self.0.push(format!("aux {v}"));
        Ok(())
    }
}

impl Collect {
    fn text(&self) -> String {
        self.0.concat()
    }
}

struct Env {
    _dir: tempfile::TempDir,
    backend: NoContainers,
    cache: Cache,
    ctx_parent: PathBuf,
}

fn env() -> Env {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path().join("image")).expect("store");
    let tmp = dir.path().join("tmp");
    std::fs::create_dir_all(&tmp).expect("mkdir");
    let cache = Cache::open(&dir.path().join("builder")).expect("cache");
    Env {
        ctx_parent: tmp.clone(),
        backend: NoContainers { store, tmp },
        cache,
        _dir: dir,
    }
}

fn tar_of(files: &[(&str, &str)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_uid(1000);
        h.set_gid(1000);
        h.set_mtime(1);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, name, data.as_bytes())
            .expect("append");
    }
    b.into_inner().expect("tar")
}

fn run(e: &mut Env, files: &[(&str, &str)], opts: &BuildOptions) -> (Result<String>, String) {
    let ctx = Context::from_reader(tar_of(files).as_slice(), &e.ctx_parent).expect("context");
    let mut out = Collect::default();
    let r = build(&mut e.backend, &e.cache, &ctx, opts, &mut out).map(|d| d.to_string());
    (r, out.text())
}

const DOCKERFILE: &str = "ARG V=meta\n\
FROM scratch AS base\n\
ARG V\n\
ENV E=${V}-env\n\
LABEL l1=$E l2=\"${UNSET:-dflt} x\"\n\
ARG B\n\
LABEL b=$B\n\
COPY a.txt /dir/\n\
COPY a.txt b.txt /multi/\n\
FROM base\n\
LABEL child=yes\n";

#[test]
fn stages_args_env_labels_and_copy_into_scratch() {
    let mut e = env();
    let opts = BuildOptions {
        tags: vec!["t:1".into()],
        build_args: BTreeMap::from([
            ("B".to_string(), Some("given".to_string())),
            ("unused".to_string(), Some("x".to_string())),
        ]),
        labels: BTreeMap::from([("from".to_string(), "options".to_string())]),
        ..Default::default()
    };
    let files = [("Dockerfile", DOCKERFILE), ("a.txt", "A"), ("b.txt", "B")];
    let (r, out) = run(&mut e, &files, &opts);
    let id = r.unwrap_or_else(|err| panic!("{err}\n{out}"));
    assert!(
        out.starts_with("Step 1/12 : ARG V=meta\nStep 2/12 : FROM scratch AS base\n"),
        "{out}"
    );
    assert!(
        out.contains("Step 12/12 : LABEL \"from\"=\"options\"\n"),
        "{out}"
    );
    assert!(
        out.contains("[Warning] One or more build-args [unused] were not consumed\n"),
        "{out}"
    );
    assert!(
        out.ends_with(&format!(
            "Successfully built {}\nSuccessfully tagged t:1\n",
            &id[7..19]
        )),
        "{out}"
    );
    let store = &e.backend.store;
    assert_eq!(store.image_id("t:1").expect("tagged").to_string(), id);
    let config = store.image_config(&id).expect("config");
    let c = &config["config"];
    assert_eq!(c["Env"], serde_json::json!(["E=meta-env"]));
    assert_eq!(
        c["Labels"],
        serde_json::json!({"l1": "meta-env", "l2": "dflt x", "b": "given", "child": "yes", "from": "options"})
    );
    // Two COPY layers; the other steps are empty layers in the history.
    assert_eq!(
        config["rootfs"]["diff_ids"].as_array().map(Vec::len),
        Some(2)
    );
    let history = config["history"].as_array().expect("history");
    assert_eq!(history.len(), 9);
    assert!(history[0]["created_by"]
        .as_str()
        .is_some_and(|s| s == "/bin/sh -c #(nop)  ARG V"));
    assert_eq!(
        history.iter().filter(|h| h["empty_layer"] == true).count(),
        7
    );
    // Each step's image records its parent.
    let parent = config["parent"].as_str().expect("parent");
    assert!(store.image_config(parent).is_ok());
}

#[test]
fn workdir_on_scratch_is_a_layer() {
    let mut e = env();
    let files = [("Dockerfile", "FROM scratch\nWORKDIR /app/sub\nWORKDIR /\n")];
    let (r, out) = run(&mut e, &files, &BuildOptions::default());
    let id = r.unwrap_or_else(|err| panic!("{err}\n{out}"));
    let config = e.backend.store.image_config(&id).expect("config");
    assert_eq!(config["config"]["WorkingDir"], "/");
    assert_eq!(
        config["rootfs"]["diff_ids"].as_array().map(Vec::len),
        Some(1)
    );
    let history = config["history"].as_array().expect("history");
    assert_eq!(history.len(), 2);
    assert!(history[0].get("empty_layer").is_none());
    assert_eq!(history[1]["empty_layer"], true);
}

#[test]
fn cache_reuse_invalidation_and_no_cache() {
    let mut e = env();
    let opts = BuildOptions::default();
    let files = [("Dockerfile", DOCKERFILE), ("a.txt", "A"), ("b.txt", "B")];
    let (first, _) = run(&mut e, &files, &opts);
    let (second, out) = run(&mut e, &files, &opts);
    assert_eq!(first.expect("first"), second.expect("second"));
    assert_eq!(out.matches(" ---> Using cache\n").count(), 8, "{out}");

    let changed = [("Dockerfile", DOCKERFILE), ("a.txt", "A2"), ("b.txt", "B")];
    let (_, out) = run(&mut e, &changed, &opts);
    // ARG, ENV, LABEL, ARG, LABEL are reused; both COPYs (a.txt changed) and what follows not.
    assert_eq!(out.matches(" ---> Using cache\n").count(), 5, "{out}");

    let args = BuildOptions {
        build_args: BTreeMap::from([("V".to_string(), Some("other".to_string()))]),
        ..Default::default()
    };
    let (_, out) = run(&mut e, &files, &args);
    // A different ARG value changes the ENV step and everything after it.
    assert_eq!(out.matches(" ---> Using cache\n").count(), 1, "{out}");

    let no_cache = BuildOptions {
        no_cache: true,
        ..Default::default()
    };
    let (_, out) = run(&mut e, &files, &no_cache);
    assert!(!out.contains("Using cache"), "{out}");

    // Cached images that were removed are misses, not errors. Removing the result removes
    // its untagged parents too (the steps), as dockerd's rmi does: nothing is cached then.
    let (id, _) = run(&mut e, &files, &opts);
    let deleted = e
        .backend
        .store
        .remove(&id.expect("id"), true)
        .expect("remove");
    assert_eq!(deleted.len(), 8, "{deleted:?}");
    let (again, out) = run(&mut e, &files, &opts);
    assert!(again.is_ok(), "{out}");
    assert!(!out.contains("Using cache"), "{out}");
}

#[test]
fn errors_carry_dockerds_texts() {
    let mut e = env();
    let opts = BuildOptions::default();
    let err = |e: &mut Env, df: &str, opts: &BuildOptions| {
        let (r, _) = run(e, &[("Dockerfile", df), ("a.txt", "A")], opts);
        r.expect_err("build should fail").to_string()
    };
    assert_eq!(
        err(&mut e, "FROM scratch\nCOPY missing /x\n", &opts),
        "COPY failed: file not found in build context or excluded by .dockerignore: stat missing: file does not exist"
    );
    assert_eq!(
        err(&mut e, "FROM scratch\nCOPY a.txt a.txt /x\n", &opts),
        "When using COPY with more than one source file, the destination must be a directory and end with a /"
    );
    assert_eq!(
        err(&mut e, "FROM scratch\nCOPY a.txt\n", &opts),
        "dockerfile parse error line 2: COPY requires at least two arguments, but only one was provided. Destination could not be determined"
    );
    assert_eq!(
        err(&mut e, "FROM scratch\nRUN --mount=type=cache true\n", &opts),
        "dockerfile parse error line 2: the --mount option requires BuildKit. Refer to https://docs.docker.com/go/buildkit/ to learn how to build images with BuildKit enabled"
    );
    assert!(err(&mut e, "FROM scratch\nCOPY --link a.txt /x\n", &opts)
        .contains("the --link option requires BuildKit"));
    assert_eq!(
        err(&mut e, "FROM scratch\nRUN true\n", &opts),
        "RUN needs a base image with a shell: the stage starts FROM scratch"
    );
    assert_eq!(
        err(&mut e, "FROM scratch\nADD http://example.com/x /x\n", &opts),
        "ADD failed: remote URL sources (http://example.com/x) are not supported by this engine"
    );
    assert_eq!(
        err(
            &mut e,
            "FROM scratch\nCOPY http://example.com/x /x\n",
            &opts
        ),
        "COPY failed: source can't be a URL for COPY"
    );
    assert_eq!(
        err(&mut e, "FROM nosuchimage\n", &opts),
        "pull access denied for nosuchimage"
    );
    let target = BuildOptions {
        target: Some("nope".into()),
        ..Default::default()
    };
    assert_eq!(
        err(&mut e, "FROM scratch AS a\nLABEL x=1\n", &target),
        "failed to reach build target nope in Dockerfile"
    );
    assert_eq!(
        err(&mut e, "FROM scratch\n", &opts),
        "No image was generated. Is your Dockerfile empty?"
    );
    assert_eq!(
        err(&mut e, "LABEL x=1\nFROM scratch\n", &opts),
        "no build stage in current context"
    );
    let (r, _) = run(&mut e, &[("a.txt", "A")], &opts);
    assert_eq!(
        r.expect_err("no Dockerfile").to_string(),
        "Cannot locate specified Dockerfile: Dockerfile"
    );
}
