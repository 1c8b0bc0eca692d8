//! keyplane's errors as AWS names them, in one place: the `__type` and status of the KMS JSON
//! protocol, and the `<Code>` of the STS query protocol.
//!
//! AWS KMS answers every client error with `400` and its service errors with `500` (`503` for
//! a dependency that timed out); botocore and the other SDKs retry `5xx` and the throttling
//! names only. Nothing a retry cannot fix is given a retried name: keyplane has no
//! `LimitExceededException` (botocore reads it as throttling and retries).

use axum::http::StatusCode;

use crate::error::{AuthFailure, Error};

/// An error of the AWS KMS front, as it goes on the wire.
#[derive(Debug)]
pub struct KmsError {
    /// The `__type`, e.g. `NotFoundException`.
    pub name: &'static str,
    pub message: String,
    pub status: StatusCode,
    /// Seconds for a `Retry-After` header (throttling).
    pub retry_after_secs: Option<u64>,
}

impl KmsError {
    /// A client error (`400`) of the front's own (not one of the core's).
    pub fn new(name: &'static str, message: impl Into<String>) -> Self {
        KmsError {
            name,
            message: message.into(),
            status: StatusCode::BAD_REQUEST,
            retry_after_secs: None,
        }
    }
}

impl From<&Error> for KmsError {
    fn from(e: &Error) -> Self {
        use StatusCode as S;
        let (name, status) = match e {
            Error::MalformedJson(_) => ("SerializationException", S::BAD_REQUEST),
            Error::Validation(_) | Error::InvalidPlugin(_) | Error::InvalidPolicySet(_) => {
                ("ValidationException", S::BAD_REQUEST)
            }
            Error::PayloadTooLarge { .. } => ("ValidationException", S::BAD_REQUEST),
            Error::RequestTimeout => ("RequestTimeoutException", S::REQUEST_TIMEOUT),
            Error::MalformedCiphertext(_) | Error::DecryptionFailed => {
                ("InvalidCiphertextException", S::BAD_REQUEST)
            }
            Error::Unauthenticated(why) => match why {
                AuthFailure::Missing => ("MissingAuthenticationTokenException", S::BAD_REQUEST),
                AuthFailure::Unknown => ("UnrecognizedClientException", S::BAD_REQUEST),
                AuthFailure::IncompleteSignature(_) => {
                    ("IncompleteSignatureException", S::BAD_REQUEST)
                }
                AuthFailure::InvalidSignature(_) => ("InvalidSignatureException", S::BAD_REQUEST),
            },
            Error::AccessDenied { .. } => ("AccessDeniedException", S::BAD_REQUEST),
            Error::NotFound { .. } | Error::OtherTenant { .. } => {
                ("NotFoundException", S::BAD_REQUEST)
            }
            Error::UnknownOperation(_) => ("UnknownOperationException", S::BAD_REQUEST),
            Error::Unsupported(_) => ("UnsupportedOperationException", S::BAD_REQUEST),
            Error::AlreadyExists { .. } => ("AlreadyExistsException", S::BAD_REQUEST),
            Error::InvalidKeyUsage(_) => ("InvalidKeyUsageException", S::BAD_REQUEST),
            Error::KeyDisabled(_) => ("DisabledException", S::BAD_REQUEST),
            // AWS forgets a deleted key: every action on it is `NotFoundException` (the
            // message says what was destroyed).
            Error::KeyDestroyed { .. } => ("NotFoundException", S::BAD_REQUEST),
            Error::InvalidState(_) => ("KMSInvalidStateException", S::BAD_REQUEST),
            Error::IncorrectKey(_) => ("IncorrectKeyException", S::BAD_REQUEST),
            Error::InvalidAliasName(_) => ("InvalidAliasNameException", S::BAD_REQUEST),
            Error::InvalidTag(_) => ("TagException", S::BAD_REQUEST),
            Error::InvalidMarker(_) => ("InvalidMarkerException", S::BAD_REQUEST),
            Error::InvalidGrantId(_) => ("InvalidGrantIdException", S::BAD_REQUEST),
            Error::InvalidGrantToken(_) => ("InvalidGrantTokenException", S::BAD_REQUEST),
            Error::MalformedPolicyDocument(_) => {
                ("MalformedPolicyDocumentException", S::BAD_REQUEST)
            }
            Error::IncorrectKeyMaterial(_) => ("IncorrectKeyMaterialException", S::BAD_REQUEST),
            Error::InvalidImportToken(_) => ("InvalidImportTokenException", S::BAD_REQUEST),
            Error::ExpiredImportToken(_) => ("ExpiredImportTokenException", S::BAD_REQUEST),
            // AWS KMS's throttling answer, which the SDKs retry with backoff.
            Error::Throttled { .. } => ("ThrottlingException", S::BAD_REQUEST),
            Error::PluginTimeout { .. } | Error::DatabaseUnavailable => {
                ("DependencyTimeoutException", S::SERVICE_UNAVAILABLE)
            }
            Error::HsmUnavailable => ("KeyUnavailableException", S::INTERNAL_SERVER_ERROR),
            Error::PluginFailed { .. } | Error::PluginComponentCorrupt { .. } | Error::Internal => {
                ("KMSInternalException", S::INTERNAL_SERVER_ERROR)
            }
        };
        KmsError {
            name,
            message: message(e),
            status,
            retry_after_secs: e.retry_after_secs(),
        }
    }
}

/// The message AWS clients show. Authentication failures get AWS's wording (tools and people
/// search for it); the rest keep keyplane's, which says what to do.
fn message(e: &Error) -> String {
    match e {
        Error::Unauthenticated(AuthFailure::Missing) => {
            crate::authn::sigv4::MSG_MISSING.to_string()
        }
        Error::Unauthenticated(AuthFailure::Unknown) => {
            "The security token included in the request is invalid.".to_string()
        }
        Error::AccessDenied { action, resource } => format!(
            "The caller is not authorized to perform: kms:{action} on resource: {resource} \
             (denied by keyplane's Cedar policies)"
        ),
        e => e.to_string(),
    }
}

/// The `<Code>` and status of an STS (query protocol) error.
pub fn sts_code(e: &Error) -> (&'static str, StatusCode) {
    use StatusCode as S;
    match e {
        Error::Unauthenticated(why) => match why {
            AuthFailure::Missing => ("MissingAuthenticationToken", S::FORBIDDEN),
            AuthFailure::Unknown => ("InvalidClientTokenId", S::FORBIDDEN),
            AuthFailure::IncompleteSignature(_) => ("IncompleteSignature", S::BAD_REQUEST),
            AuthFailure::InvalidSignature(_) => ("SignatureDoesNotMatch", S::FORBIDDEN),
        },
        Error::AccessDenied { .. } => ("AccessDenied", S::FORBIDDEN),
        Error::UnknownOperation(_) => ("InvalidAction", S::BAD_REQUEST),
        Error::Unsupported(_) => ("UnsupportedOperation", S::BAD_REQUEST),
        // STS's throttling code, which the SDKs retry with backoff.
        Error::Throttled { .. } => ("Throttling", S::BAD_REQUEST),
        e if e.is_server_fault() => ("ServiceUnavailable", S::SERVICE_UNAVAILABLE),
        _ => ("ValidationError", S::BAD_REQUEST),
    }
}

/// The message of an STS error (as [`KmsError`]'s).
pub fn sts_message(e: &Error) -> String {
    message(e)
}
