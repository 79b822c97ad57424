//! Offline garbage collection (`berth registry gc`): mark every blob a manifest of any
//! repository references, then sweep the blobs nobody marked and the links to them.
//!
//! With `delete_untagged`, manifests no tag reaches first lose their revision: a tag reaches
//! its manifest, the children of an index it reaches, and the referrers (signatures, SBOMs)
//! of anything it reaches.
//!
//! Run it with the server stopped: an upload finishing during the sweep could lose its
//! blob between the link and the first manifest that references it.

use std::collections::HashSet;
use std::fs;

use crate::digest::Digest;
use crate::storage::{ManifestDoc, Reference, Store, StoreError};

/// How to collect.
#[derive(Debug, Default, Clone, Copy)]
pub struct GcOptions {
    /// Report what would go without removing anything.
    pub dry_run: bool,
    /// Also delete manifests no tag reaches.
    pub delete_untagged: bool,
}

/// What a collection found or removed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct GcReport {
    pub marked: usize,
    /// Untagged manifests deleted, by repository.
    pub untagged: Vec<(String, Digest)>,
    pub swept: Vec<Digest>,
    pub bytes: u64,
}

/// Runs a collection.
pub fn collect(store: &Store, opts: GcOptions) -> Result<GcReport, StoreError> {
    let dry_run = opts.dry_run;
    let mut report = GcReport::default();
    let mut marked: HashSet<Digest> = HashSet::new();
    let repos = store.catalog()?;
    for repo in &repos {
        let revisions = store.revisions(repo)?;
        let kept = if opts.delete_untagged {
            let reached = reachable_from_tags(store, repo)?;
            for rev in revisions.iter().filter(|r| !reached.contains(r)) {
                if !dry_run {
                    store.delete_manifest(repo, &Reference::Digest(rev.clone()))?;
                }
                report.untagged.push((repo.clone(), rev.clone()));
            }
            revisions
                .into_iter()
                .filter(|r| reached.contains(r))
                .collect()
        } else {
            revisions
        };
        for manifest in kept {
            mark_manifest(store, &manifest, &mut marked)?;
        }
    }
    report.marked = marked.len();
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

/// Manifests of `repo` reached from its tags through index children and referrers.
fn reachable_from_tags(store: &Store, repo: &str) -> Result<HashSet<Digest>, StoreError> {
    let mut reached = HashSet::new();
    let mut queue = Vec::new();
    for tag in store.tags(repo)? {
        match store.resolve(repo, &Reference::Tag(tag)) {
            Ok(d) => queue.push(d),
            // A tag whose manifest is gone reaches nothing.
            Err(StoreError::ManifestUnknown(..) | StoreError::NameUnknown(_)) => {}
            Err(e) => return Err(e),
        }
    }
    while let Some(d) = queue.pop() {
        if !reached.insert(d.clone()) {
            continue;
        }
        if let Ok(body) = fs::read(store.blob_path(&d)) {
            if let Ok(doc) = serde_json::from_slice::<ManifestDoc>(&body) {
                queue.extend(doc.manifests.into_iter().map(|m| m.digest));
            }
        }
        queue.extend(store.referrers(repo, &d)?.into_iter().map(|r| r.digest));
    }
    Ok(reached)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::Algorithm;
    use crate::storage::tests::push;

    fn manifest(config: &Digest, layers: &[&Digest], subject: Option<&Digest>) -> Vec<u8> {
        let layers: Vec<_> = layers
            .iter()
            .map(
                |d| serde_json::json!({"mediaType": "application/x.layer", "digest": d, "size": 1}),
            )
            .collect();
        let mut m = serde_json::json!({
            "schemaVersion": 2,
            "config": {"mediaType": "application/x.config", "digest": config, "size": 1},
            "layers": layers,
        });
        if let Some(s) = subject {
            m["subject"] = serde_json::json!({"mediaType": "x", "digest": s, "size": 1});
        }
        serde_json::to_vec(&m).expect("json")
    }

    fn put(store: &Store, repo: &str, reference: Option<&str>, body: &[u8]) -> Digest {
        let r = match reference {
            Some(t) => Reference::Tag(t.into()),
            None => Reference::Digest(Algorithm::Sha256.digest(body)),
        };
        store
            .put_manifest(repo, &r, body, None, &[])
            .expect("put")
            .digest
    }

    #[test]
    fn keeps_referenced_and_optionally_drops_untagged() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let config = push(&store, "r", b"config");
        let tagged_layer = push(&store, "r", b"tagged");
        let untagged_layer = push(&store, "r", b"untagged");
        let sig_layer = push(&store, "r", b"signature");
        let orphan = push(&store, "r", b"orphan");
        let tagged = put(
            &store,
            "r",
            Some("v1"),
            &manifest(&config, &[&tagged_layer], None),
        );
        let untagged = put(
            &store,
            "r",
            None,
            &manifest(&config, &[&untagged_layer], None),
        );
        let sig = put(
            &store,
            "r",
            None,
            &manifest(&config, &[&sig_layer], Some(&tagged)),
        );

        let dry = collect(
            &store,
            GcOptions {
                dry_run: true,
                delete_untagged: true,
            },
        )
        .expect("gc");
        assert_eq!(dry.untagged, [("r".to_string(), untagged.clone())]);
        assert!(dry.swept.contains(&untagged_layer) && dry.swept.contains(&orphan));
        assert!(store.blob_path(&orphan).exists());

        let plain = collect(&store, GcOptions::default()).expect("gc");
        assert_eq!(plain.swept, std::slice::from_ref(&orphan));
        assert!(store.blob_size("r", &orphan).is_err());
        for kept in [
            &config,
            &tagged_layer,
            &untagged_layer,
            &sig_layer,
            &tagged,
            &untagged,
            &sig,
        ] {
            assert!(store.blob_path(kept).exists(), "{kept}");
        }

        let full = collect(
            &store,
            GcOptions {
                dry_run: false,
                delete_untagged: true,
            },
        )
        .expect("gc");
        assert_eq!(full.untagged.len(), 1);
        let mut swept = full.swept.clone();
        swept.sort();
        let mut expected = vec![untagged_layer.clone(), untagged.clone()];
        expected.sort();
        assert_eq!(swept, expected);
        for kept in [&config, &tagged_layer, &sig_layer, &tagged, &sig] {
            assert!(store.blob_path(kept).exists(), "{kept}");
        }
    }
}
