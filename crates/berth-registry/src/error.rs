//! The distribution spec's error codes and the one place store errors become HTTP answers.

use hyper::StatusCode;
use serde::Serialize;

use crate::storage::StoreError;

/// Error codes from the distribution spec's table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    BlobUnknown,
    BlobUploadInvalid,
    BlobUploadUnknown,
    DigestInvalid,
    ManifestBlobUnknown,
    ManifestInvalid,
    ManifestUnknown,
    NameInvalid,
    NameUnknown,
    SizeInvalid,
    Unauthorized,
    Denied,
    Unsupported,
    /// Not in the spec's table: distribution's catch-all for server-side failures and
    /// paths outside the API.
    Unknown,
}

impl Code {
    pub fn as_str(self) -> &'static str {
        match self {
            Code::BlobUnknown => "BLOB_UNKNOWN",
            Code::BlobUploadInvalid => "BLOB_UPLOAD_INVALID",
            Code::BlobUploadUnknown => "BLOB_UPLOAD_UNKNOWN",
            Code::DigestInvalid => "DIGEST_INVALID",
            Code::ManifestBlobUnknown => "MANIFEST_BLOB_UNKNOWN",
            Code::ManifestInvalid => "MANIFEST_INVALID",
            Code::ManifestUnknown => "MANIFEST_UNKNOWN",
            Code::NameInvalid => "NAME_INVALID",
            Code::NameUnknown => "NAME_UNKNOWN",
            Code::SizeInvalid => "SIZE_INVALID",
            Code::Unauthorized => "UNAUTHORIZED",
            Code::Denied => "DENIED",
            Code::Unsupported => "UNSUPPORTED",
            Code::Unknown => "UNKNOWN",
        }
    }

    /// The status the spec pairs with the code.
    pub fn status(self) -> StatusCode {
        match self {
            Code::BlobUnknown
            | Code::BlobUploadUnknown
            | Code::ManifestUnknown
            | Code::NameUnknown
            | Code::ManifestBlobUnknown => StatusCode::NOT_FOUND,
            Code::BlobUploadInvalid
            | Code::DigestInvalid
            | Code::ManifestInvalid
            | Code::NameInvalid
            | Code::SizeInvalid => StatusCode::BAD_REQUEST,
            Code::Unauthorized => StatusCode::UNAUTHORIZED,
            Code::Denied => StatusCode::FORBIDDEN,
            Code::Unsupported => StatusCode::METHOD_NOT_ALLOWED,
            Code::Unknown => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// An error answer: status plus one entry of the `errors` array.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: Code,
    pub message: String,
    /// Extra headers, such as `Range` on a 416 or `WWW-Authenticate` on a 401.
    pub headers: Vec<(&'static str, String)>,
}

impl ApiError {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        ApiError {
            status: code.status(),
            code,
            message: message.into(),
            headers: Vec::new(),
        }
    }

    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    pub fn with_header(mut self, name: &'static str, value: String) -> Self {
        self.headers.push((name, value));
        self
    }

    /// The JSON body `{"errors":[{"code","message","detail"}]}`.
    pub fn body(&self) -> Vec<u8> {
        #[derive(Serialize)]
        struct Entry<'a> {
            code: &'a str,
            message: &'a str,
            detail: serde_json::Value,
        }
        #[derive(Serialize)]
        struct Body<'a> {
            errors: [Entry<'a>; 1],
        }
        let body = Body {
            errors: [Entry {
                code: self.code.as_str(),
                message: &self.message,
                detail: serde_json::Value::Null,
            }],
        };
        serde_json::to_vec(&body).unwrap_or_default()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        let message = e.to_string();
        match e {
            StoreError::BlobUnknown(..) => ApiError::new(Code::BlobUnknown, message),
            StoreError::ManifestUnknown(..) => ApiError::new(Code::ManifestUnknown, message),
            StoreError::NameUnknown(_) => ApiError::new(Code::NameUnknown, message),
            StoreError::UploadUnknown(_) => ApiError::new(Code::BlobUploadUnknown, message),
            StoreError::RangeInvalid { size, .. } => {
                let range = if size == 0 {
                    "0-0".to_string()
                } else {
                    format!("0-{}", size - 1)
                };
                ApiError::new(Code::BlobUploadInvalid, message)
                    .with_status(StatusCode::RANGE_NOT_SATISFIABLE)
                    .with_header("Range", range)
            }
            StoreError::DigestMismatch { .. } => ApiError::new(Code::DigestInvalid, message),
            StoreError::ManifestInvalid(_) => ApiError::new(Code::ManifestInvalid, message),
            StoreError::ManifestTooLarge(_) => {
                ApiError::new(Code::SizeInvalid, message).with_status(StatusCode::PAYLOAD_TOO_LARGE)
            }
            StoreError::Io { .. } => {
                tracing::error!("{message}");
                ApiError::new(Code::Unknown, "internal storage error")
            }
        }
    }
}
