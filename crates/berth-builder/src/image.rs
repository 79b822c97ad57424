//! Making the images of build steps in the image store: a config-only step (an
//! `empty_layer` history entry over the parent's layers), a step whose changes are a
//! container's writable layer (RUN, and COPY/ADD done in a scratch container), and a step whose
//! layer is a directory tree (COPY/ADD onto `FROM scratch`). Each step's image records its
//! parent, as dockerd's classic builder does, so the cache can be verified by ancestry.

use std::io::Seek;

use berth_image::spec::{self, Descriptor, Manifest};
use berth_image::{CommitOptions, Digest, Store};
use serde_json::{json, Map, Value};

use crate::error::{Error, Result};

/// The image a stage is at: `None` for `FROM scratch` before any layer.
#[derive(Debug, Clone)]
pub struct ImageState {
    /// The image ID, `None` for scratch.
    pub id: Option<Digest>,
    /// The full image config JSON.
    pub config: Value,
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

impl ImageState {
    /// The empty image `FROM scratch` starts from.
    pub fn scratch() -> ImageState {
        let (os, arch) = spec::host_platform();
        ImageState {
            id: None,
            config: json!({
                "architecture": arch,
                "os": os,
                "config": {},
                "rootfs": {"type": "layers", "diff_ids": []},
                "history": [],
            }),
        }
    }

    /// Loads image `id` from the store.
    pub fn load(store: &Store, id: &str) -> Result<ImageState> {
        let id = store.image_id(id)?;
        let config = store.image_config(id.as_str())?;
        Ok(ImageState {
            id: Some(id),
            config,
        })
    }

    /// The container config (`Cmd`, `Env`, ...) as a map.
    pub fn container_config(&self) -> Map<String, Value> {
        self.config
            .get("config")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default()
    }

    /// The parent image ID recorded in the config, if any.
    pub fn parent(&self) -> Option<&str> {
        self.config.get("parent").and_then(Value::as_str)
    }
}

/// The layers of `state`'s manifest (none for scratch), with Docker media types mapped to OCI
/// ones because the new manifest is an OCI manifest.
fn parent_layers(store: &Store, state: &ImageState) -> Result<Vec<Descriptor>> {
    let Some(id) = &state.id else {
        return Ok(Vec::new());
    };
    let mdigest = store.manifest_digest(id.as_str())?;
    let manifest: Manifest = serde_json::from_slice(&store.read_blob(&mdigest)?)
        .map_err(|e| Error::Backend(format!("manifest {mdigest}: {e}")))?;
    Ok(manifest
        .layers
        .into_iter()
        .map(|mut l| {
            l.media_type = match l.media_type.as_str() {
                spec::MT_DOCKER_LAYER_GZIP => spec::MT_OCI_LAYER_GZIP.to_string(),
                spec::MT_DOCKER_LAYER => spec::MT_OCI_LAYER.to_string(),
                other => other.to_string(),
            };
            l
        })
        .collect())
}

/// Stores `config` with `layers` as a new (untagged) image; returns its ID.
fn store_image(store: &Store, config: &Value, layers: Vec<Descriptor>) -> Result<ImageState> {
    let bytes = serde_json::to_vec(config)
        .map_err(|e| Error::Backend(format!("encode image config: {e}")))?;
    let (digest, size) = store.put_blob(bytes.as_slice(), None, None)?;
    let manifest = Manifest {
        schema_version: 2,
        media_type: Some(spec::MT_OCI_MANIFEST.into()),
        config: Descriptor {
            media_type: spec::MT_OCI_CONFIG.into(),
            digest,
            size,
            platform: None,
            annotations: None,
        },
        layers,
        annotations: None,
    };
    let mbytes = serde_json::to_vec(&manifest)
        .map_err(|e| Error::Backend(format!("encode manifest: {e}")))?;
    let id = store.put_manifest(&mbytes, None)?;
    Ok(ImageState {
        id: Some(id),
        config: config.clone(),
    })
}

fn history_entry(created: &str, created_by: &str, empty: bool) -> Value {
    let mut h = json!({"created": created, "created_by": created_by});
    if empty {
        h["empty_layer"] = json!(true);
    }
    h
}

/// A step that changes only the config (ENV, CMD, LABEL, ...).
pub fn commit_config(
    store: &Store,
    parent: &ImageState,
    container_config: Map<String, Value>,
    created_by: &str,
) -> Result<ImageState> {
    let mut config = parent.config.clone();
    let created = now();
    let obj = config
        .as_object_mut()
        .ok_or_else(|| Error::Backend("image config is not an object".into()))?;
    obj.insert("config".into(), Value::Object(container_config));
    obj.insert("created".into(), json!(created));
    obj.remove("container");
    obj.remove("container_config");
    match &parent.id {
        Some(id) => obj.insert("parent".into(), json!(id.as_str())),
        None => obj.remove("parent"),
    };
    push_history(obj, history_entry(&created, created_by, true));
    store_image(store, &config, parent_layers(store, parent)?)
}

fn push_history(obj: &mut Map<String, Value>, h: Value) {
    match obj.get_mut("history").and_then(Value::as_array_mut) {
        Some(a) => a.push(h),
        None => {
            obj.insert("history".into(), json!([h]));
        }
    }
}

/// A step whose layer is container `container_id`'s writable layer (its image is `parent`).
pub fn commit_container(
    store: &Store,
    container_id: &str,
    container_config: Map<String, Value>,
    created_by: &str,
) -> Result<ImageState> {
    let opts = CommitOptions {
        config: Some(container_config),
        created_by: Some(created_by.to_string()),
        ..Default::default()
    };
    let started = std::time::Instant::now();
    let id = store.commit(container_id, &opts)?;
    let config = store.image_config(id.as_str())?;
    tracing::debug!(container = container_id, took = ?started.elapsed(), "build step committed");
    Ok(ImageState {
        id: Some(id),
        config,
    })
}

/// A step whose layer is the tree under `fs` (COPY/ADD onto scratch).
pub fn commit_tree(
    store: &Store,
    parent: &ImageState,
    fs: &berth_image::ContainerFs,
    tmp_dir: &std::path::Path,
    container_config: Map<String, Value>,
    created_by: &str,
) -> Result<ImageState> {
    let mut tmp =
        tempfile::tempfile_in(tmp_dir).map_err(Error::io("create temp file in", tmp_dir))?;
    fs.archive("/", &mut tmp)?;
    tmp.rewind().map_err(Error::io("rewind", tmp_dir))?;
    let diff_ids: Vec<Digest> = parent
        .config
        .pointer("/rootfs/diff_ids")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .filter_map(|d| d.strip_prefix("sha256:"))
                .filter_map(|h| Digest::from_hex(h).ok())
                .collect()
        })
        .unwrap_or_default();
    let parent_chain = berth_image::digest::chain_ids(&diff_ids).last().cloned();
    let (layer, _) = store.put_layer(std::io::BufReader::new(tmp), None, parent_chain.as_ref())?;
    let mut layers = parent_layers(store, parent)?;
    layers.push(Descriptor {
        media_type: spec::MT_OCI_LAYER.into(),
        digest: layer.digest.clone(),
        size: layer.size,
        platform: None,
        annotations: None,
    });
    let mut config = parent.config.clone();
    let created = now();
    let obj = config
        .as_object_mut()
        .ok_or_else(|| Error::Backend("image config is not an object".into()))?;
    obj.insert("config".into(), Value::Object(container_config));
    obj.insert("created".into(), json!(created));
    if let Some(id) = &parent.id {
        obj.insert("parent".into(), json!(id.as_str()));
    }
    let rootfs = obj
        .entry("rootfs")
        .or_insert_with(|| json!({"type": "layers", "diff_ids": []}));
    match rootfs.get_mut("diff_ids").and_then(Value::as_array_mut) {
        Some(ids) => ids.push(json!(layer.diff_id.as_str())),
        None => rootfs["diff_ids"] = json!([layer.diff_id.as_str()]),
    }
    push_history(obj, history_entry(&created, created_by, false));
    store_image(store, &config, layers)
}
