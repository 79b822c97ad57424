//! Dockerfile builds through a real daemon: `berth build`, `POST /build` and the real docker
//! CLI's legacy builder (`DOCKER_BUILDKIT=0 docker build`), over a busybox base image.

mod daemon_common;

use std::path::Path;
use std::process::{Command, Output, Stdio};

use daemon_common::{import_busybox, ok, Daemon, DOCKER};
use serde_json::Value;

fn prerequisites() -> bool {
    let ok = Path::new(DOCKER).exists() && Path::new("/bin/busybox").exists();
    if !ok {
        eprintln!("skipping: docker CLI or busybox-static missing");
    }
    ok
}

/// Writes `files` (path, content) under a new context directory.
fn context(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("context dir");
    for (p, c) in files {
        let path = dir.path().join(p);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, c).expect("write");
    }
    dir
}

/// `berth build`; RUN steps get no network (faster, and nothing here needs one; the docker
/// CLI test covers the default bridge).
fn build(d: &Daemon, args: &[&str], ctx: &Path) -> Output {
    let mut all = vec!["build", "--network", "none"];
    all.extend_from_slice(args);
    all.push(ctx.to_str().expect("utf-8 path"));
    d.berth(&all)
}

fn run_output(d: &Daemon, image: &str, cmd: &[&str]) -> String {
    let mut args = vec!["run", "--rm", "--network", "none", image];
    args.extend_from_slice(cmd);
    ok(d.docker(&args))
}

/// The JSON messages of a `POST /build` response.
fn messages(body: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(body)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("JSON message"))
        .collect()
}

fn container_count(d: &Daemon) -> usize {
    d.http("GET", "/containers/json?all=1", None)
        .json()
        .as_array()
        .map_or(0, Vec::len)
}

#[test]
fn multi_stage_with_args_env_and_copy_from() {
    if !prerequisites() {
        return;
    }
    let d = Daemon::start();
    import_busybox(&d);
    let ctx = context(&[
        (
            "Dockerfile",
            "ARG BASE=busybox\n\
             FROM ${BASE} AS first\n\
             ARG WHO=nobody\n\
             ENV GREETING=\"hello there\" DIR=/out\n\
             RUN mkdir -p $DIR && echo \"$GREETING $WHO\" > $DIR/msg\n\
             COPY data/ /data/\n\
             FROM busybox\n\
             COPY --from=first /out/msg /data/file.txt /final/\n\
             LABEL stage=${BASE:-none}\n\
             WORKDIR /final\n\
             CMD [\"cat\", \"msg\", \"file.txt\"]\n",
        ),
        ("data/file.txt", "from the context\n"),
    ]);
    let out = ok(build(
        &d,
        &["-t", "ms:1", "--build-arg", "WHO=world"],
        ctx.path(),
    ));
    assert!(out.contains("Step 1/11 : ARG BASE=busybox"), "{out}");
    assert!(out.contains("Successfully tagged ms:1"), "{out}");
    assert_eq!(
        run_output(&d, "ms:1", &[]),
        "hello there world\nfrom the context\n"
    );
    let labels = ok(d.docker(&["image", "inspect", "-f", "{{json .Config.Labels}}", "ms:1"]));
    // ${BASE} is a meta ARG: not visible in a stage unless declared there.
    assert_eq!(labels.trim(), r#"{"stage":"none"}"#);
    let wd = ok(d.docker(&["image", "inspect", "-f", "{{.Config.WorkingDir}}", "ms:1"]));
    assert_eq!(wd.trim(), "/final");
}

#[test]
fn dockerignore_leaves_files_out_of_the_image() {
    if !prerequisites() {
        return;
    }
    let d = Daemon::start();
    import_busybox(&d);
    let ctx = context(&[
        ("Dockerfile", "FROM busybox\nCOPY . /ctx\n"),
        (
            ".dockerignore",
            "# comment\nsecret*\nlogs\n!logs/keep.log\n**/*.tmp\nDockerfile\n.dockerignore\n",
        ),
        ("secret.key", "s"),
        ("app.txt", "a"),
        ("logs/a.log", "x"),
        ("logs/keep.log", "k"),
        ("sub/deep/x.tmp", "t"),
        ("sub/deep/y.txt", "y"),
    ]);
    ok(build(&d, &["-t", "ign"], ctx.path()));
    let mut files: Vec<String> = run_output(&d, "ign", &["find", "/ctx", "-type", "f"])
        .lines()
        .map(str::to_string)
        .collect();
    files.sort();
    assert_eq!(
        files,
        ["/ctx/app.txt", "/ctx/logs/keep.log", "/ctx/sub/deep/y.txt"]
    );
}

#[test]
fn cache_hits_on_rebuild_and_misses_after_a_change() {
    if !prerequisites() {
        return;
    }
    let d = Daemon::start();
    import_busybox(&d);
    let ctx = context(&[
        (
            "Dockerfile",
            "FROM busybox\nENV A=1\nRUN echo built > /built\nCOPY f.txt /f.txt\nRUN cat /f.txt\n",
        ),
        ("f.txt", "one\n"),
    ]);
    let first = ok(build(&d, &["-t", "c:1"], ctx.path()));
    assert!(!first.contains("Using cache"), "{first}");
    let second = ok(build(&d, &["-t", "c:2"], ctx.path()));
    assert_eq!(second.matches(" ---> Using cache").count(), 4, "{second}");
    let id = |t: &str| ok(d.docker(&["image", "inspect", "-f", "{{.Id}}", t]));
    assert_eq!(id("c:1"), id("c:2"));

    std::fs::write(ctx.path().join("f.txt"), "two\n").expect("write");
    let third = ok(build(&d, &["-t", "c:3"], ctx.path()));
    // ENV and the first RUN are reused; the COPY and what follows are not.
    assert_eq!(third.matches(" ---> Using cache").count(), 2, "{third}");
    assert!(third.contains("two"), "{third}");
    assert_eq!(run_output(&d, "c:3", &["cat", "/f.txt"]), "two\n");

    let iid = ctx.path().join("iid");
    let nocache = ok(build(
        &d,
        &[
            "--no-cache",
            "-q",
            "-m",
            "256m",
            "--shm-size",
            "32m",
            "--iidfile",
            iid.to_str().expect("utf-8"),
        ],
        ctx.path(),
    ));
    assert!(nocache.trim().starts_with("sha256:"), "{nocache}");
    assert_eq!(
        std::fs::read_to_string(&iid).expect("iidfile"),
        nocache.trim()
    );
}

#[test]
fn failing_run_reports_dockerds_error_and_leaves_no_container() {
    if !prerequisites() {
        return;
    }
    let d = Daemon::start();
    import_busybox(&d);
    let ctx = context(&[(
        "Dockerfile",
        "FROM busybox\nRUN echo before; exit 3\nRUN true\n",
    )]);
    let out = build(&d, &["-t", "bad"], ctx.path());
    // As the docker CLI: the failed RUN's exit code.
    assert_eq!(out.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("The command '/bin/sh -c echo before; exit 3' returned a non-zero code: 3"),
        "{stderr}"
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("before"));
    assert_eq!(container_count(&d), 0);
    assert_eq!(d.http("GET", "/images/bad/json", None).status, 404);

    // The API's message stream: the error as dockerd sends it, with the exit code.
    let tar = tar_of(&[("Dockerfile", b"FROM busybox\nRUN exit 5\n".as_slice())]);
    let r = d.http("POST", "/build?t=bad2&networkmode=none", Some(&tar));
    assert_eq!(r.status, 200);
    let last = messages(&r.body).pop().expect("messages");
    assert_eq!(last["errorDetail"]["code"], 5, "{last}");
    assert_eq!(
        last["error"],
        "The command '/bin/sh -c exit 5' returned a non-zero code: 5"
    );
    assert_eq!(container_count(&d), 0);

    // Errors before any output (here a parse error, with dockerd's text) are HTTP errors.
    let tar = tar_of(&[("Dockerfile", b"FROM busybox\nFROB x\n".as_slice())]);
    let r = d.http("POST", "/build?networkmode=none", Some(&tar));
    assert_eq!(r.status, 400);
    assert_eq!(
        r.message(),
        "dockerfile parse error line 2: unknown instruction: FROB"
    );
}

#[test]
fn docker_cli_legacy_builder_works() {
    if !prerequisites() {
        return;
    }
    let d = Daemon::start();
    import_busybox(&d);
    let ctx = context(&[
        (
            "Dockerfile",
            "FROM busybox\nCOPY hello.txt /\nRUN echo run >> /hello.txt\nCMD cat /hello.txt\n",
        ),
        ("hello.txt", "hello\n"),
    ]);
    let out = Command::new(DOCKER)
        .args(["build", "-t", "cli:1", "."])
        .current_dir(ctx.path())
        .env("DOCKER_HOST", d.host())
        .env("DOCKER_BUILDKIT", "0")
        .env("DOCKER_CONFIG", d.dir.path().join("docker-config"))
        .stdin(Stdio::null())
        .output()
        .expect("run docker build");
    let stdout = ok(out);
    assert!(stdout.contains("Successfully built"), "{stdout}");
    assert!(stdout.contains("Successfully tagged cli:1"), "{stdout}");
    assert_eq!(run_output(&d, "cli:1", &[]), "hello\nrun\n");

    // `-f -`: the Dockerfile from stdin, the context from the directory.
    let mut child = Command::new(DOCKER)
        .args(["build", "-f", "-", "-t", "cli:2", "."])
        .current_dir(ctx.path())
        .env("DOCKER_HOST", d.host())
        .env("DOCKER_BUILDKIT", "0")
        .env("DOCKER_CONFIG", d.dir.path().join("docker-config"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run docker build -f -");
    std::io::Write::write_all(
        &mut child.stdin.take().expect("stdin"),
        b"FROM busybox\nCOPY hello.txt /from-stdin\n",
    )
    .expect("write Dockerfile");
    ok(child.wait_with_output().expect("docker build -f -"));
    assert_eq!(run_output(&d, "cli:2", &["cat", "/from-stdin"]), "hello\n");
}

/// A tar with raw names (hostile ones included), regular files unless the content starts
/// with `->`, which makes a symlink to the rest.
fn tar_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        let bytes = name.as_bytes();
        h.as_gnu_mut().expect("gnu header").name[..bytes.len()].copy_from_slice(bytes);
        if let Some(target) = data.strip_prefix(b"->") {
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
            let t = target;
            h.as_gnu_mut().expect("gnu header").linkname[..t.len()].copy_from_slice(t);
            h.set_cksum();
            b.append(&h, std::io::empty()).expect("append");
        } else {
            h.set_entry_type(tar::EntryType::Regular);
            h.set_size(data.len() as u64);
            h.set_cksum();
            b.append(&h, *data).expect("append");
        }
    }
    b.into_inner().expect("tar")
}

#[test]
fn hostile_contexts_stay_inside_the_context_and_the_image() {
    if !prerequisites() {
        return;
    }
    let d = Daemon::start();
    import_busybox(&d);
    let before = std::fs::read("/etc/hostname").unwrap_or_default();
    let builder_dir = d.data().join("builder");

    // `../` names in the context tar never land outside the context directory.
    let tar = tar_of(&[
        ("Dockerfile", b"FROM busybox\nCOPY . /ctx\n".as_slice()),
        ("../escaped", b"x".as_slice()),
        ("../../escaped2", b"y".as_slice()),
    ]);
    let r = d.http("POST", "/build?t=h1&networkmode=none", Some(&tar));
    assert_eq!(r.status, 400);
    assert!(
        r.message().contains("outside of the extraction directory"),
        "{}",
        r.message()
    );
    assert!(!builder_dir.join("escaped").exists());
    assert!(!builder_dir.join("tmp").join("escaped").exists());
    assert!(!d.data().join("escaped2").exists());

    // A COPY source climbing out of the context finds nothing there.
    let tar = tar_of(&[(
        "Dockerfile",
        b"FROM busybox\nCOPY ../../../../etc/hostname /stolen\n".as_slice(),
    )]);
    let r = d.http("POST", "/build?t=h2&networkmode=none", Some(&tar));
    let last = messages(&r.body).pop().expect("messages");
    assert!(
        last["error"]
            .as_str()
            .is_some_and(|e| e.contains("file not found in build context")),
        "{last}"
    );

    // A symlink in the context pointing outside resolves inside the context: the host's
    // file is never read; the link itself is copied as a link.
    let tar = tar_of(&[
        (
            "Dockerfile",
            b"FROM busybox\nCOPY link /viaLink\nCOPY dirlink/hostname /viaDir\n".as_slice(),
        ),
        ("link", b"->/etc/hostname".as_slice()),
        ("dirlink", b"->/etc".as_slice()),
    ]);
    let r = d.http("POST", "/build?t=h3&networkmode=none", Some(&tar));
    let last = messages(&r.body).pop().expect("messages");
    assert!(
        last.get("error").is_some(),
        "a host file was copied: {last}"
    );

    // A destination symlink in the image cannot send the copy to the host either.
    let tar = tar_of(&[
        (
            "Dockerfile",
            b"FROM busybox\nRUN ln -s /../../../../tmp/berth-build-escape /esc\nCOPY f /esc/f\n"
                .as_slice(),
        ),
        ("f", b"payload".as_slice()),
    ]);
    let r = d.http("POST", "/build?t=h4&networkmode=none", Some(&tar));
    let msgs = messages(&r.body);
    assert!(
        msgs.last().is_some_and(|m| m.get("error").is_none()),
        "{msgs:?}"
    );
    assert!(!Path::new("/tmp/berth-build-escape/f").exists());
    assert_eq!(
        run_output(&d, "h4", &["cat", "/tmp/berth-build-escape/f"]),
        "payload"
    );
    assert_eq!(std::fs::read("/etc/hostname").unwrap_or_default(), before);
    assert_eq!(container_count(&d), 0);
}

#[test]
fn instructions_shape_the_config_and_onbuild_triggers_run() {
    if !prerequisites() {
        return;
    }
    let d = Daemon::start();
    import_busybox(&d);
    let tar_dir = tempfile::tempdir().expect("tempdir");
    let inner = std::fs::read(daemon_common::busybox_tar(tar_dir.path())).expect("read tar");
    let ctx = context(&[(
        "Dockerfile",
        "FROM busybox\n\
         WORKDIR /new/dir\n\
         RUN pwd > /pwd && mkdir -m 1777 /tmp\n\
         ADD inner.tar /unpacked/\n\
         COPY --chown=12:34 --chmod=640 Dockerfile /owned\n\
         SHELL [\"/bin/sh\", \"-ec\"]\n\
         USER 1000:1000\n\
         RUN id -u > /tmp/uid; ls -ln /owned > /tmp/owned\n\
         ONBUILD RUN echo triggered > /tmp/trig\n\
         EXPOSE 80 53/udp\n\
         VOLUME /data\n\
         STOPSIGNAL SIGKILL\n\
         HEALTHCHECK --interval=5s --retries=2 CMD true\n\
         ENTRYPOINT [\"sh\", \"-c\"]\n",
    )]);
    std::fs::write(ctx.path().join("inner.tar"), inner).expect("write");
    ok(build(&d, &["-t", "cfg"], ctx.path()));
    let config: Value = serde_json::from_str(&ok(d.docker(&[
        "image",
        "inspect",
        "-f",
        "{{json .Config}}",
        "cfg",
    ])))
    .expect("config JSON");
    assert_eq!(config["WorkingDir"], "/new/dir");
    assert_eq!(config["User"], "1000:1000");
    assert_eq!(config["Shell"], serde_json::json!(["/bin/sh", "-ec"]));
    assert_eq!(config["Entrypoint"], serde_json::json!(["sh", "-c"]));
    // ENTRYPOINT drops the CMD inherited from the base image.
    assert!(config["Cmd"].is_null(), "{config}");
    assert_eq!(
        config["ExposedPorts"],
        serde_json::json!({"80/tcp": {}, "53/udp": {}})
    );
    assert_eq!(config["Volumes"], serde_json::json!({"/data": {}}));
    assert_eq!(config["StopSignal"], "SIGKILL");
    assert_eq!(
        config["Healthcheck"],
        serde_json::json!({"Test": ["CMD-SHELL", "true"], "Interval": 5_000_000_000i64, "Retries": 2})
    );
    assert_eq!(
        config["OnBuild"],
        serde_json::json!(["RUN echo triggered > /tmp/trig"])
    );
    let cat = |image: &str, file: &str| {
        ok(d.docker(&[
            "run",
            "--rm",
            "--network",
            "none",
            "-u",
            "0",
            "--entrypoint",
            "cat",
            image,
            file,
        ]))
    };
    assert_eq!(cat("cfg", "/pwd"), "/new/dir\n");
    assert_eq!(cat("cfg", "/tmp/uid"), "1000\n");
    assert!(cat("cfg", "/tmp/owned").starts_with("-rw-r-----    1 12       34"));
    // ADD unpacked the local archive.
    assert!(cat("cfg", "/unpacked/bin/busybox").len() > 100_000);

    // A child image runs the trigger and does not inherit it.
    let child = context(&[("Dockerfile", "FROM cfg\nRUN cat /tmp/trig\n")]);
    let out = ok(build(&d, &["-t", "child"], child.path()));
    assert!(out.contains("# Executing 1 build trigger"), "{out}");
    assert!(out.contains("triggered"), "{out}");
    let onbuild = ok(d.docker(&[
        "image",
        "inspect",
        "-f",
        "{{json .Config.OnBuild}}",
        "child",
    ]));
    assert!(matches!(onbuild.trim(), "null" | "[]"), "{onbuild}");
}

#[test]
fn dockerfile_from_stdin_outside_the_context_and_targets() {
    if !prerequisites() {
        return;
    }
    let d = Daemon::start();
    import_busybox(&d);
    let ctx = context(&[("file.txt", "in context\n")]);
    let elsewhere = context(&[(
        "build.Dockerfile",
        "FROM busybox AS one\nRUN echo one > /which\n\
         FROM busybox AS two\nCOPY . /src\nRUN echo two > /which\n",
    )]);
    // A Dockerfile outside the context travels in the tar under a generated name, which
    // the image does not get.
    let df = elsewhere.path().join("build.Dockerfile");
    ok(build(
        &d,
        &["-t", "out", "-f", df.to_str().expect("utf-8")],
        ctx.path(),
    ));
    let mut ls: Vec<String> = run_output(&d, "out", &["ls", "-a", "/src"])
        .lines()
        .map(str::to_string)
        .collect();
    ls.sort();
    assert_eq!(ls, [".", "..", "file.txt"]);
    assert_eq!(run_output(&d, "out", &["cat", "/which"]), "two\n");
    // --target stops at the named stage.
    ok(build(
        &d,
        &[
            "-t",
            "one",
            "--target",
            "one",
            "-f",
            df.to_str().expect("utf-8"),
        ],
        ctx.path(),
    ));
    assert_eq!(run_output(&d, "one", &["cat", "/which"]), "one\n");

    // A bare Dockerfile as the request body (`docker build - < Dockerfile`).
    let r = d.http(
        "POST",
        "/build?t=bare&q=1&networkmode=none",
        Some(b"FROM busybox\nRUN echo bare > /b\n"),
    );
    let msgs = messages(&r.body);
    assert!(
        msgs.iter().any(|m| m["stream"]
            .as_str()
            .is_some_and(|s| s.starts_with("sha256:"))),
        "{msgs:?}"
    );
    assert_eq!(run_output(&d, "bare", &["cat", "/b"]), "bare\n");

    // Remote contexts are refused up front.
    let r = d.http(
        "POST",
        "/build?remote=https%3A%2F%2Fexample.com%2Fctx.tar",
        None,
    );
    assert_eq!(r.status, 400);

    // The cache can be pruned through the API.
    let r = d.http("POST", "/build/prune?all=1", None);
    assert_eq!(r.status, 200);
    let again = ok(build(&d, &["-f", df.to_str().expect("utf-8")], ctx.path()));
    assert!(!again.contains("Using cache"), "{again}");
}

/// `berth registry serve` on a free loopback port, killed on drop.
struct LocalRegistry {
    child: std::process::Child,
    addr: String,
    _dir: tempfile::TempDir,
}

impl Drop for LocalRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl LocalRegistry {
    fn start() -> LocalRegistry {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
        let addr = format!("127.0.0.1:{port}");
        let child = Command::new(daemon_common::BERTH)
            .args(["registry", "serve", "--addr", &addr, "--root"])
            .arg(dir.path().join("root"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn berth registry serve");
        let r = LocalRegistry {
            child,
            addr,
            _dir: dir,
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while std::net::TcpStream::connect(&r.addr).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "registry did not listen"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        r
    }
}

#[test]
fn missing_base_image_is_pulled() {
    if !prerequisites() {
        return;
    }
    let registry = LocalRegistry::start();
    let d = Daemon::start();
    import_busybox(&d);
    let remote = format!("{}/base/bb:1", registry.addr);
    ok(d.docker(&["tag", "busybox", &remote]));
    ok(d.docker(&["push", &remote]));
    ok(d.docker(&["rmi", &remote]));
    let ctx = context(&[(
        "Dockerfile",
        &format!("FROM {remote}\nRUN echo pulled > /p\n"),
    )]);
    let out = ok(build(&d, &["-t", "frompull"], ctx.path()));
    assert!(out.contains("Pulling from base/bb"), "{out}");
    assert_eq!(run_output(&d, "frompull", &["cat", "/p"]), "pulled\n");
    // The base is now local.
    ok(d.docker(&["image", "inspect", &remote]));
}

/// `python3 -m http.server` on a free loopback port over `dir`, killed on drop.
struct HttpServer {
    child: std::process::Child,
    addr: String,
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl HttpServer {
    fn start(dir: &Path) -> Option<HttpServer> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
        let child = Command::new("python3")
            .args([
                "-m",
                "http.server",
                "--bind",
                "127.0.0.1",
                &port.to_string(),
            ])
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let s = HttpServer {
            child,
            addr: format!("127.0.0.1:{port}"),
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while std::net::TcpStream::connect(&s.addr).is_err() {
            if std::time::Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        Some(s)
    }
}

#[test]
fn add_downloads_urls_without_unpacking_them() {
    if !prerequisites() {
        return;
    }
    let served = context(&[("data.txt", "served\n")]);
    let tar_dir = tempfile::tempdir().expect("tempdir");
    std::fs::copy(
        daemon_common::busybox_tar(tar_dir.path()),
        served.path().join("root.tar"),
    )
    .expect("copy tar");
    let Some(server) = HttpServer::start(served.path()) else {
        eprintln!("skipping: python3 http.server unavailable");
        return;
    };
    let d = Daemon::start();
    import_busybox(&d);
    let a = &server.addr;
    let ctx = context(&[(
        "Dockerfile",
        &format!(
            "FROM busybox\n\
             ADD http://{a}/data.txt /dl/\n\
             ADD http://{a}/data.txt /renamed.txt\n\
             ADD http://{a}/root.tar /tars/\n"
        ),
    )]);
    ok(build(&d, &["-t", "urls"], ctx.path()));
    assert_eq!(run_output(&d, "urls", &["cat", "/dl/data.txt"]), "served\n");
    assert_eq!(run_output(&d, "urls", &["cat", "/renamed.txt"]), "served\n");
    let ls = run_output(&d, "urls", &["ls", "-ln", "/dl/data.txt", "/tars"]);
    assert!(ls.contains("-rw-------    1 0        0"), "{ls}");
    // A downloaded archive stays a file.
    assert!(ls.contains("root.tar"), "{ls}");
    // Same content: the steps are reused.
    let again = ok(build(&d, &["-t", "urls2"], ctx.path()));
    assert_eq!(again.matches(" ---> Using cache").count(), 3, "{again}");
    // A missing file is dockerd's error.
    let bad = context(&[(
        "Dockerfile",
        &format!("FROM busybox\nADD http://{a}/missing /m\n"),
    )]);
    let out = build(&d, &[], bad.path());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("with status 404"),
        "{out:?}"
    );
}

#[test]
fn a_client_going_away_cancels_the_running_step() {
    use std::io::{Read, Write};
    if !prerequisites() {
        return;
    }
    let d = Daemon::start();
    import_busybox(&d);
    let tar = tar_of(&[(
        "Dockerfile",
        b"FROM busybox\nRUN echo go$((1+1)); sleep 1000\n".as_slice(),
    )]);
    let mut s = std::os::unix::net::UnixStream::connect(&d.sock).expect("connect");
    write!(
        s,
        "POST /build?networkmode=none HTTP/1.1\r\nHost: berth\r\nContent-Type: application/x-tar\r\nContent-Length: {}\r\n\r\n",
        tar.len()
    )
    .expect("write head");
    s.write_all(&tar).expect("write body");
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    // `go2` is the step's output, not its `Step` line.
    while !String::from_utf8_lossy(&seen).contains("go2") {
        let n = s.read(&mut buf).expect("read build output");
        assert!(n > 0, "stream ended: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buf[..n]);
    }
    assert_eq!(container_count(&d), 1);
    drop(s);
    // The step's container is killed and removed; bounded wait, not a timing assertion.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while container_count(&d) != 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the cancelled step's container is still there"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
