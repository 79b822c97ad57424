//! `--change` end to end over a real image store: the config `apply_changes` makes is what
//! `docker import` and `docker commit` record, and a bad change is refused whole, before a caller
//! gives anything to the store.

use berth_builder::apply_changes;
use berth_image::{CommitOptions, ImportOptions, Store};
use serde_json::{json, Map, Value};

/// Removes the container rootfs it names, whatever the test did.
struct RootfsGuard<'a> {
    store: &'a Store,
    id: &'static str,
}

impl Drop for RootfsGuard<'_> {
    fn drop(&mut self) {
        let _ = self.store.remove_rootfs(self.id);
    }
}

/// A rootfs tarball with one file.
fn rootfs_tar() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(3);
    h.set_mode(0o755);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_cksum();
    b.append_data(&mut h, "bin/sh", &b"#!\n"[..])
        .expect("tar entry");
    b.into_inner().expect("tar")
}

fn changes(lines: &[&str]) -> Vec<String> {
    lines.iter().map(|l| l.to_string()).collect()
}

fn inspect_config(store: &Store, name: &str) -> Value {
    store
        .inspect(name)
        .expect("inspect")
        .config
        .expect("image has a config")
}

#[test]
fn import_and_commit_record_the_changed_config() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path().join("image")).expect("store");

    let mut config = Map::new();
    apply_changes(
        &mut config,
        &changes(&[
            r#"CMD ["/bin/sh"]"#,
            "ENV PATH=/bin GREETING=\"hello there\"",
            "HEALTHCHECK --interval=30s --retries=2 CMD test -e /bin/sh",
            "WORKDIR /srv",
        ]),
    )
    .expect("changes");
    let imported = store
        .import(
            rootfs_tar().as_slice(),
            &ImportOptions {
                reference: Some("base:1".into()),
                config: Some(config),
                message: None,
            },
        )
        .expect("import");
    let c = inspect_config(&store, "base:1");
    assert_eq!(c["Cmd"], json!(["/bin/sh"]));
    assert_eq!(c["Env"], json!(["PATH=/bin", "GREETING=hello there"]));
    assert_eq!(c["WorkingDir"], "/srv");
    assert_eq!(
        c["Healthcheck"],
        json!({"Test": ["CMD-SHELL", "test -e /bin/sh"], "Interval": 30_000_000_000i64, "Retries": 2})
    );

    // Commit: the container's config (here the image's) with the changes on top.
    let rootfs = store
        .create_rootfs(imported.as_str(), "c1")
        .expect("rootfs");
    let _guard = RootfsGuard {
        store: &store,
        id: "c1",
    };
    std::fs::write(rootfs.path.join("new"), "x").expect("write");
    let Value::Object(mut config) = c else {
        panic!("config is not an object");
    };
    apply_changes(
        &mut config,
        &changes(&[
            "ENTRYPOINT /bin/sh -c",
            "LABEL stage=committed",
            "ENV GREETING=$GREETING!",
            "HEALTHCHECK NONE",
        ]),
    )
    .expect("changes");
    store
        .commit(
            "c1",
            &CommitOptions {
                reference: Some("top:1".into()),
                config: Some(config),
                ..Default::default()
            },
        )
        .expect("commit");
    let c = inspect_config(&store, "top:1");
    assert_eq!(
        c["Entrypoint"],
        json!(["/bin/sh", "-c", "/bin/sh -c"]),
        "{c}"
    );
    // As in a Dockerfile, ENTRYPOINT without a CMD in the same changes drops the old CMD.
    assert!(c["Cmd"].is_null(), "{c}");
    assert_eq!(c["Labels"], json!({"stage": "committed"}));
    assert_eq!(c["Env"], json!(["PATH=/bin", "GREETING=hello there!"]));
    assert_eq!(c["Healthcheck"], json!({"Test": ["NONE"]}));
    assert_eq!(c["WorkingDir"], "/srv");
}

#[test]
fn a_bad_change_leaves_the_config_as_it_was() {
    let mut config = Map::new();
    config.insert("Cmd".into(), json!(["keep"]));
    let before = config.clone();
    let err = apply_changes(&mut config, &changes(&["LABEL a=b", "RUN rm -rf /"]))
        .expect_err("RUN is not a change");
    assert_eq!(err.to_string(), "RUN is not a valid change command");
    assert!(err.is_user_error());
    let err = apply_changes(&mut config, &changes(&["LABEL a=b", "EXPOSE 80/tcp x"]))
        .expect_err("x is not a port");
    assert_eq!(err.to_string(), "Invalid containerPort: x");
    assert_eq!(config, before);
}
