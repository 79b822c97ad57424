//! Progress events in the shape of Docker's JSON progress stream, which the daemon writes to
//! the docker CLI one JSON object per line.

use serde::Serialize;

/// `{"current":N,"total":M}`; zero counts are left out, so a layer's state change carries
/// `{}` as dockerd's does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ProgressDetail {
    #[serde(skip_serializing_if = "is_zero")]
    pub current: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub total: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// One line of a pull or push progress stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProgressMessage {
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub progress_detail: Option<ProgressDetail>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

impl ProgressMessage {
    /// A status line without an id (`Digest: …`, `Status: …`).
    pub fn status(status: impl Into<String>) -> Self {
        ProgressMessage {
            status: status.into(),
            progress_detail: None,
            id: None,
        }
    }

    /// A layer's state change (`Preparing`, `Pushed`, `Pull complete`). It carries an empty
    /// `progressDetail`, as dockerd's do: the docker CLI only redraws a layer's line in place
    /// for messages that have one.
    pub fn with_id(status: impl Into<String>, id: impl Into<String>) -> Self {
        ProgressMessage {
            status: status.into(),
            progress_detail: Some(ProgressDetail::default()),
            id: Some(id.into()),
        }
    }

    /// A one-off line about an id (`latest: Pulling from library/busybox`), printed by the
    /// docker CLI on its own line.
    pub fn message(status: impl Into<String>, id: impl Into<String>) -> Self {
        ProgressMessage {
            status: status.into(),
            progress_detail: None,
            id: Some(id.into()),
        }
    }

    /// A byte-count line (`Downloading`, `Pushing`).
    pub fn bytes(status: &str, id: &str, current: u64, total: u64) -> Self {
        ProgressMessage {
            status: status.to_string(),
            progress_detail: Some(ProgressDetail { current, total }),
            id: Some(id.to_string()),
        }
    }
}

impl ProgressMessage {
    /// One line of the response body: the JSON object and a newline.
    pub fn to_json_line(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec(self).unwrap_or_default();
        v.push(b'\n');
        v
    }
}

/// The line Docker ends a failed pull or push stream with:
/// `{"errorDetail":{"message":"…"},"error":"…"}`.
pub fn error_json_line(message: &str) -> Vec<u8> {
    let mut v = serde_json::to_vec(&serde_json::json!({
        "errorDetail": {"message": message},
        "error": message,
    }))
    .unwrap_or_default();
    v.push(b'\n');
    v
}

/// Where progress goes; the daemon passes a closure that forwards into its response stream.
/// It is called from async tasks, so it must not block (use an unbounded channel or
/// `try_send`).
pub type Progress = std::sync::Arc<dyn Fn(ProgressMessage) + Send + Sync>;

/// A progress sink that drops everything.
pub fn no_progress() -> Progress {
    std::sync::Arc::new(|_| {})
}

/// Docker's short layer id: the first 12 hex digits.
pub fn short_id(digest: &berth_image::Digest) -> String {
    digest.hex()[..12].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_shapes() {
        let m = ProgressMessage::bytes("Downloading", "0123456789ab", 5, 10);
        assert_eq!(
            String::from_utf8(m.to_json_line()).unwrap(),
            "{\"status\":\"Downloading\",\"progressDetail\":{\"current\":5,\"total\":10},\"id\":\"0123456789ab\"}\n"
        );
        assert_eq!(
            String::from_utf8(ProgressMessage::status("Digest: x").to_json_line()).unwrap(),
            "{\"status\":\"Digest: x\"}\n"
        );
        assert_eq!(
            String::from_utf8(ProgressMessage::with_id("Pushed", "ab").to_json_line()).unwrap(),
            "{\"status\":\"Pushed\",\"progressDetail\":{},\"id\":\"ab\"}\n"
        );
        assert_eq!(
            String::from_utf8(ProgressMessage::message("Pulling from a", "v1").to_json_line())
                .unwrap(),
            "{\"status\":\"Pulling from a\",\"id\":\"v1\"}\n"
        );
        let e: serde_json::Value = serde_json::from_slice(&error_json_line("boom")).unwrap();
        assert_eq!(e["errorDetail"]["message"], "boom");
    }
}
