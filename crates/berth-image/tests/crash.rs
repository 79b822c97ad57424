//! Kill -9 during loads: a child process loads a multi-layer image and is SIGKILLed after a
//! random delay; the store must then pass the consistency check and a retry must succeed.

mod common;

use std::time::{Duration, Instant};

use common::*;
use rand::Rng;

const TRIALS: usize = 24;

fn archive(dir: &std::path::Path) -> Vec<u8> {
    let mut rng = rand::thread_rng();
    let mut layers = Vec::new();
    layers.push((
        gzip(&busybox_rootfs()),
        "application/vnd.oci.image.layer.v1.tar+gzip",
        busybox_rootfs(),
    ));
    for i in 0..3 {
        let mut data = vec![0u8; 256 << 10];
        rng.fill(&mut data[..]);
        let tar = Layer::new()
            .dir("data")
            .file(&format!("data/f{i}"), &data)
            .file(&format!("data/g{i}"), &data[..4096])
            .tar();
        layers.push((
            gzip(&tar),
            "application/vnd.oci.image.layer.v1.tar+gzip",
            tar,
        ));
    }
    write_oci_layout(dir, &layers, "crash.example/img:v1");
    tar_dir(dir)
}

#[test]
fn sigkill_during_load_leaves_a_consistent_store() {
    let tool = env!("CARGO_BIN_EXE_berth-image-tool");
    let ts = TestStore::new();
    let file = ts.dir.path().join("image.tar");
    std::fs::write(&file, archive(&ts.dir.path().join("layout"))).unwrap();

    // One undisturbed load tells how long the window is.
    let probe = ts.dir.path().join("probe");
    let start = Instant::now();
    run(
        tool,
        &["load", probe.to_str().unwrap(), file.to_str().unwrap()],
    );
    let full = start.elapsed().max(Duration::from_millis(5));

    let mut rng = rand::thread_rng();
    let mut killed_mid_way = 0;
    for trial in 0..TRIALS {
        let root = ts.dir.path().join(format!("store-{trial}"));
        let mut child = std::process::Command::new(tool)
            .args(["load", root.to_str().unwrap(), file.to_str().unwrap()])
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let delay = full.mul_f64(rng.gen_range(0.0..1.2));
        std::thread::sleep(delay);
        // SAFETY-free: Child::kill sends SIGKILL.
        let _ = child.kill();
        let status = child.wait().unwrap();
        if !status.success() {
            killed_mid_way += 1;
        }
        let store = berth_image::Store::open(&root).unwrap();
        let f = store.fsck().unwrap();
        assert!(f.ok(), "trial {trial} after {delay:?}: {:?}", f.problems);
        // Either the image is fully there or not at all.
        match store.image_id("crash.example/img:v1") {
            Ok(id) => {
                let r = store.create_rootfs(&id.to_string(), "c").unwrap();
                assert!(r.path.join("data/f2").exists());
                r.remove().unwrap();
            }
            Err(e) => assert_eq!(e.kind(), berth_image::ErrorKind::NotFound),
        }
        // Retry succeeds (leftover temp files or blobs do not get in the way) and gc tidies.
        let loaded = store.load(std::fs::File::open(&file).unwrap()).unwrap();
        assert_eq!(loaded[0].tags, vec!["crash.example/img:v1"]);
        store.gc().unwrap();
        let f = store.fsck().unwrap();
        assert!(f.ok(), "trial {trial} after retry: {:?}", f.problems);
        assert_eq!(std::fs::read_dir(root.join("tmp")).unwrap().count(), 0);
    }
    eprintln!("{killed_mid_way}/{TRIALS} loads killed before finishing (full load {full:?})");
}
