//! Berth's image store.
//!
//! Owns images on disk: an OCI-layout content store whose blobs are digest-verified and written
//! atomically, image references normalised as Docker normalises them, layer snapshots keyed by
//! chain ID and mounted copy-on-write as container root filesystems, and the image operations
//! (load, save, import, export, commit, tag, remove, history, prune, garbage collection).
