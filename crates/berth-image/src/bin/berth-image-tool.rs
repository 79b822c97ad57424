//! A small command-line front end to the image store, used by the crash tests (a load that can
//! be SIGKILLed in a separate process) and by `bench/image-load.sh`.
//!
//! ```text
//! berth-image-tool load   <store-root> <archive>
//! berth-image-tool save   <store-root> docker|oci <out> <image>...
//! berth-image-tool import <store-root> <rootfs.tar> <reference>
//! berth-image-tool fsck   <store-root>
//! berth-image-tool gc     <store-root>
//! berth-image-tool rootfs-cycle <store-root> <image> <n>   (create+remove n rootfs, timed)
//! ```

use std::process::ExitCode;

use berth_image::{ArchiveFormat, ImportOptions, Store};

fn run(args: &[String]) -> Result<(), String> {
    let usage = || "usage: berth-image-tool load|save|import|fsck|gc <store-root> ...".to_string();
    let (cmd, root) = match args {
        [cmd, root, ..] => (cmd.as_str(), root),
        _ => return Err(usage()),
    };
    let store = Store::open(root).map_err(|e| e.to_string())?;
    let rest = &args[2..];
    match (cmd, rest) {
        ("load", [file]) => {
            let f = std::fs::File::open(file).map_err(|e| format!("open {file}: {e}"))?;
            for img in store
                .load(std::io::BufReader::with_capacity(1 << 20, f))
                .map_err(|e| e.to_string())?
            {
                if img.tags.is_empty() {
                    println!("Loaded image ID: {}", img.id);
                }
                for t in img.tags {
                    println!("Loaded image: {t}");
                }
            }
        }
        ("save", [format, out, names @ ..]) if !names.is_empty() => {
            let format = match format.as_str() {
                "docker" => ArchiveFormat::Docker,
                "oci" => ArchiveFormat::Oci,
                other => return Err(format!("unknown format {other}")),
            };
            let f = std::fs::File::create(out).map_err(|e| format!("create {out}: {e}"))?;
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            store
                .save(&names, format, std::io::BufWriter::new(f))
                .map_err(|e| e.to_string())?;
        }
        ("import", [file, reference]) => {
            let f = std::fs::File::open(file).map_err(|e| format!("open {file}: {e}"))?;
            let opts = ImportOptions {
                reference: Some(reference.clone()),
                ..Default::default()
            };
            println!(
                "{}",
                store
                    .import(std::io::BufReader::new(f), &opts)
                    .map_err(|e| e.to_string())?
            );
        }
        ("fsck", []) => {
            let r = store.fsck().map_err(|e| e.to_string())?;
            for p in &r.problems {
                println!("{p}");
            }
            if !r.ok() {
                return Err(format!("{} problems", r.problems.len()));
            }
            println!(
                "ok: {} images, {} blobs, {} snapshots",
                r.images, r.blobs_checked, r.snapshots
            );
        }
        ("gc", []) => {
            let r = store.gc().map_err(|e| e.to_string())?;
            println!(
                "removed {} blobs, {} snapshots, {} bytes",
                r.blobs_removed, r.snapshots_removed, r.bytes_freed
            );
        }
        ("rootfs-cycle", [image, n]) => {
            let n: usize = n.parse().map_err(|e| format!("count {n}: {e}"))?;
            let mut times = Vec::with_capacity(n);
            for i in 0..n {
                let id = format!("cycle-{}-{i}", std::process::id());
                let start = std::time::Instant::now();
                let r = store.create_rootfs(image, &id).map_err(|e| e.to_string())?;
                times.push(start.elapsed());
                r.remove().map_err(|e| e.to_string())?;
            }
            times.sort();
            let mean = times.iter().sum::<std::time::Duration>() / n.max(1) as u32;
            println!(
                "create_rootfs: mean {:.2} ms, median {:.2} ms, min {:.2} ms over {n}",
                mean.as_secs_f64() * 1e3,
                times.get(n / 2).map_or(0.0, |d| d.as_secs_f64() * 1e3),
                times.first().map_or(0.0, |d| d.as_secs_f64() * 1e3)
            );
        }
        _ => return Err(usage()),
    }
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("berth-image-tool: {e}");
            ExitCode::FAILURE
        }
    }
}
