//! Offline garbage collection (`berth registry gc`): mark every blob a manifest of any
//! repository references, then sweep the blobs nobody marked and the links to them.
//!
//! Run it with the server stopped: an upload finishing during the sweep could lose its
//! blob between the link and the first manifest that references it.

use std::collections::HashSet;
use std::fs;

use crate::digest::Digest;
use crate::storage::{ManifestDoc, Store, StoreError};

/// What a collection found or removed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct GcReport {
    pub marked: usize,
    pub swept: Vec<Digest>,
    pub bytes: u64,
}

/// Runs a collection; with `dry_run`, reports what would go without removing it.
pub fn collect(store: &Store, dry_run: bool) -> Result<GcReport, StoreError> {
    let mut marked: HashSet<Digest> = HashSet::new();
    let repos = store.catalog()?;
    for repo in &repos {
        for manifest in store.revisions(repo)? {
            mark_manifest(store, &manifest, &mut marked)?;
        }
    }
    let mut report = GcReport {
        marked: marked.len(),
        ..GcReport::default()
    };
    for blob in store.all_blobs()? {
        if marked.contains(&blob) {
            continue;
        }
        let path = store.blob_path(&blob);
        report.bytes += fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        if !dry_run {
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(StoreError::Io {
                        op: "remove",
                        path,
                        source,
                    })
                }
            }
        }
        report.swept.push(blob);
    }
    if !dry_run {
        let swept: HashSet<&Digest> = report.swept.iter().collect();
        for repo in &repos {
            for link in store.layer_links(repo)? {
                if swept.contains(&link) {
                    store.unlink_layer(repo, &link)?;
                }
            }
        }
    }
    Ok(report)
}

/// Marks a manifest and everything it references. Children of an index are marked through
/// their own revisions too, but marking them here also keeps them if only the index is left.
fn mark_manifest(
    store: &Store,
    digest: &Digest,
    marked: &mut HashSet<Digest>,
) -> Result<(), StoreError> {
    if !marked.insert(digest.clone()) {
        return Ok(());
    }
    let path = store.blob_path(digest);
    let body = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(StoreError::Io {
                op: "read",
                path,
                source,
            })
        }
    };
    // Anything unparsable was rejected at push; if it is here anyway, keep it and move on.
    let Ok(doc) = serde_json::from_slice::<ManifestDoc>(&body) else {
        return Ok(());
    };
    if let Some(config) = &doc.config {
        marked.insert(config.digest.clone());
    }
    for layer in &doc.layers {
        marked.insert(layer.digest.clone());
    }
    for child in &doc.manifests {
        mark_manifest(store, &child.digest, marked)?;
    }
    Ok(())
}
