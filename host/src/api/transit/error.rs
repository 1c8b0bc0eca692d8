//! keyplane's errors as Vault answers them, in one place: `{"errors": ["…"]}` with Vault's
//! status codes. hvac raises `InvalidRequest` (400), `Forbidden` (403), `InvalidPath` (404),
//! `RateLimitExceeded` (429), `InternalServerError` (500) and `VaultDown` (503) from them;
//! it parses the body only when its content type is exactly `application/json`.

use axum::http::StatusCode;

use crate::error::Error;

/// One error as the Transit front answers it.
#[derive(Debug, Clone)]
pub struct TransitError {
    pub status: StatusCode,
    pub message: String,
    /// Seconds for a `Retry-After` header (throttling).
    pub retry_after_secs: Option<u64>,
}

impl TransitError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        TransitError {
            status,
            message: message.into(),
            retry_after_secs: None,
        }
    }

    /// As an endpoint that does not read a key answers: Vault's 404 for a missing key is only
    /// where a key is read or listed; elsewhere (`encrypt` without its upsert, `decrypt`,
    /// `sign`, `rotate`, `config`...) a missing key or version is a bad request ("encryption
    /// key not found"), which hvac raises as `InvalidRequest`.
    pub fn outside_reads(mut self) -> Self {
        if self.status == StatusCode::NOT_FOUND {
            self.status = StatusCode::BAD_REQUEST;
        }
        self
    }
}

impl From<&Error> for TransitError {
    fn from(e: &Error) -> Self {
        let status = match e {
            // Vault answers a missing, unknown or expired token with 403 "permission denied".
            Error::Unauthenticated(_) | Error::AccessDenied { .. } => StatusCode::FORBIDDEN,
            Error::NotFound { .. } | Error::OtherTenant { .. } | Error::UnknownOperation(_) => {
                StatusCode::NOT_FOUND
            }
            Error::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Error::Throttled { .. } => StatusCode::TOO_MANY_REQUESTS,
            Error::HsmUnavailable | Error::DatabaseUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Error::Internal
            | Error::PluginFailed { .. }
            | Error::PluginTimeout { .. }
            | Error::PluginComponentCorrupt { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            // Vault reports every refusal of the request's content, including a key in the
            // wrong state, a destroyed version or an existing name, as a bad request.
            Error::MalformedJson(_)
            | Error::Validation(_)
            | Error::IncorrectKey(_)
            | Error::Unsupported(_)
            | Error::InvalidAliasName(_)
            | Error::InvalidTag(_)
            | Error::InvalidMarker(_)
            | Error::InvalidGrantId(_)
            | Error::InvalidGrantToken(_)
            | Error::MalformedPolicyDocument(_)
            | Error::MalformedCiphertext(_)
            | Error::DecryptionFailed
            | Error::InvalidKeyUsage(_)
            | Error::InvalidPlugin(_)
            | Error::InvalidPolicySet(_)
            | Error::IncorrectKeyMaterial(_)
            | Error::InvalidImportToken(_)
            | Error::ExpiredImportToken(_)
            | Error::AlreadyExists { .. }
            | Error::InvalidState(_)
            | Error::KeyDisabled(_)
            | Error::KeyDestroyed { .. }
            | Error::RequestTimeout => StatusCode::BAD_REQUEST,
        };
        let message = match e {
            // Which part of a credential was wrong is not told, as on every front.
            Error::Unauthenticated(_) => "permission denied".to_string(),
            Error::AccessDenied { .. } => format!("permission denied: {e}"),
            e => e.to_string(),
        };
        TransitError {
            status,
            message,
            retry_after_secs: e.retry_after_secs(),
        }
    }
}
