//! A small command-line front end to the image store, used by the crash tests (a load that can
//! be SIGKILLed in a separate process) and by `bench/image-load.sh`.
//!
//! ```text
//! berth-image-tool load   <store-root> <archive>
//! berth-image-tool save   <store-root> docker|oci <out> <image>...
//! berth-image-tool import <store-root> <rootfs.tar> <reference>
//! berth-image-tool fsck   <store-root>
//! berth-image-tool gc     <store-root>
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
