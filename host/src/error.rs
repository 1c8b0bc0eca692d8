//! The one error type every operation returns.
//!
//! Each variant has a stable machine-readable `code` (recorded as the audit outcome) and no
//! transport in it: each front maps a variant to its own wire shape and status in one place
//! (`api::native`), and nothing else decides what a failure looks like. Messages never
//! contain key bytes, plaintext, tokens or PINs.

/// A failure of a request, typed so callers (and fronts) can match on it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request body is not well-formed JSON.
    #[error("request body is not valid JSON: {0}")]
    MalformedJson(String),
    /// A field is missing, has the wrong type, or a value is out of range.
    #[error("{0}")]
    Validation(String),
    /// The ciphertext blob does not parse as a keyplane ciphertext.
    #[error("ciphertext is malformed: {0}")]
    MalformedCiphertext(&'static str),
    /// The ciphertext (or its encryption context) did not authenticate under its key.
    #[error("ciphertext does not authenticate: it was altered, or the encryption context differs")]
    DecryptionFailed,
    /// No credential, or one keyplane does not accept.
    #[error("{0}")]
    Unauthenticated(AuthFailure),
    /// Cedar denied the request.
    #[error("access denied: not authorized to perform {action} on {resource}")]
    AccessDenied { action: String, resource: String },
    /// The named key, tenant or principal does not exist.
    #[error("{kind} not found: {id}")]
    NotFound { kind: &'static str, id: String },
    /// The request names another tenant's object in a form a front checks itself (an ARN of
    /// another AWS account). Recorded as a deny and answered exactly as [`Error::NotFound`]
    /// (`ops` turns it into one before any front sees it), so that other tenants' objects
    /// cannot be probed.
    #[error("{kind} not found: {id}")]
    OtherTenant { kind: &'static str, id: String },
    /// `POST /v1/<operation>` with an operation keyplane does not have.
    #[error("unknown operation: {0}")]
    UnknownOperation(String),
    /// A feature keyplane does not offer (for this key, or at all: multi-Region keys,
    /// custom key stores, enclave attestation).
    #[error("not supported: {0}")]
    Unsupported(String),
    /// The resource already exists.
    #[error("{kind} already exists: {id}")]
    AlreadyExists { kind: &'static str, id: String },
    /// The key's usage or spec (fixed at creation) does not allow this operation.
    #[error("{0}")]
    InvalidKeyUsage(String),
    /// The key (or version) is in a state that does not allow this operation.
    #[error("{0}")]
    InvalidState(String),
    /// The key is disabled (a state of its own: clients tell it apart from the others).
    #[error("{0}")]
    KeyDisabled(String),
    /// The request names a key that is not the one the ciphertext was made under.
    #[error("{0}")]
    IncorrectKey(String),
    /// An alias name that is not `alias/<name>` of the allowed characters, or is reserved.
    #[error("{0}")]
    InvalidAliasName(String),
    /// Tags that cannot be a key's: too many, a key given twice, a reserved `aws:` key.
    #[error("{0}")]
    InvalidTag(String),
    /// A pagination token that is not one this operation returned.
    #[error("{0}")]
    InvalidMarker(String),
    /// A grant id that cannot be one keyplane issued (not 64 hexadecimal digits).
    #[error("{0}")]
    InvalidGrantId(String),
    /// A grant token (keyplane's is the grant's id) that cannot be one keyplane issued.
    #[error("{0}")]
    InvalidGrantToken(String),
    /// A key policy document that is not a JSON object.
    #[error("{0}")]
    MalformedPolicyDocument(String),

    #[error("{what} was destroyed: its key material no longer exists and what was encrypted under it cannot be decrypted")]
    KeyDestroyed { what: String },
    /// Imported key material did not unwrap, or is not what the key expects.
    #[error("incorrect key material: {0}")]
    IncorrectKeyMaterial(String),
    /// The import token is not one keyplane issued, or was issued for another key.
    #[error("invalid import token: {0}")]
    InvalidImportToken(String),
    /// The import token is past its expiry (or was already used).
    #[error("the import token {0} has expired or was already used; call get-parameters-for-import again")]
    ExpiredImportToken(String),
    /// The request body is larger than the configured limit.
    #[error("request body exceeds {limit} bytes")]
    PayloadTooLarge { limit: usize },
    /// The request body did not arrive in time.
    #[error("the request body did not arrive in time")]
    RequestTimeout,
    /// An uploaded plugin was refused (not a component, wrong world, ungranted import...).
    #[error("plugin refused: {0}")]
    InvalidPlugin(String),
    /// A plugin trapped, ran out of memory or returned something unacceptable.
    #[error("plugin {plugin} failed: {reason}")]
    PluginFailed { plugin: String, reason: String },
    /// A plugin ran past its deadline or fuel.
    #[error("plugin {plugin} exceeded its time or fuel limit")]
    PluginTimeout { plugin: String },
    /// A plugin's component in the database cannot be used: its bytes do not hash to the
    /// SHA-256 the plugin names (altered or damaged in the database), or they are missing. The
    /// node compiles nothing from such bytes; uploading the plugin again repairs it.
    #[error("the component of plugin {plugin} is unusable: {reason}; upload the same component again (under any name) to repair it")]
    PluginComponentCorrupt { plugin: String, reason: String },
    /// A policy set that does not load (syntax, schema validation, missing annotations) was
    /// refused; the set in force keeps serving.
    #[error("{0}")]
    InvalidPolicySet(String),
    /// The HSM did not answer or failed.
    #[error("the HSM is unavailable")]
    HsmUnavailable,
    /// The database did not answer or failed.
    #[error("the database is unavailable")]
    DatabaseUnavailable,
    /// A request quota (the principal's, its tenant's, its source's) or the tenant's plugin
    /// budget is used up: retry after the wait.
    #[error("{what} exceeded; retry in {retry_after_secs} s")]
    Throttled {
        retry_after_secs: u64,
        /// Which limit (`request quota`, `plugin budget`).
        what: &'static str,
    },
    /// A bug in keyplane: logged with details server-side, reported without them.
    #[error("internal error")]
    Internal,
}

impl Error {
    /// Stable error code put on the wire.
    pub fn code(&self) -> &'static str {
        match self {
            Error::MalformedJson(_) => "MalformedJson",
            Error::Validation(_) => "ValidationError",
            Error::MalformedCiphertext(_) => "InvalidCiphertext",
            Error::DecryptionFailed => "InvalidCiphertext",
            Error::Unauthenticated(_) => "Unauthenticated",
            Error::AccessDenied { .. } => "AccessDenied",
            Error::NotFound { .. } | Error::OtherTenant { .. } => "NotFound",
            Error::UnknownOperation(_) => "UnknownOperation",
            Error::Unsupported(_) => "Unsupported",
            Error::AlreadyExists { .. } => "AlreadyExists",
            Error::InvalidState(_) | Error::KeyDisabled(_) => "InvalidState",
            Error::IncorrectKey(_)
            | Error::InvalidAliasName(_)
            | Error::InvalidTag(_)
            | Error::InvalidMarker(_)
            | Error::InvalidGrantId(_)
            | Error::InvalidGrantToken(_)
            | Error::MalformedPolicyDocument(_) => "ValidationError",
            Error::InvalidKeyUsage(_) => "InvalidKeyUsage",
            Error::KeyDestroyed { .. } => "KeyDestroyed",
            Error::IncorrectKeyMaterial(_) => "IncorrectKeyMaterial",
            Error::InvalidImportToken(_) => "InvalidImportToken",
            Error::ExpiredImportToken(_) => "ExpiredImportToken",
            Error::PayloadTooLarge { .. } => "PayloadTooLarge",
            Error::RequestTimeout => "RequestTimeout",
            Error::InvalidPlugin(_) => "InvalidPlugin",
            Error::PluginFailed { .. } => "PluginFailed",
            Error::PluginTimeout { .. } => "PluginTimeout",
            Error::PluginComponentCorrupt { .. } => "PluginComponentCorrupt",
            Error::InvalidPolicySet(_) => "InvalidPolicySet",
            Error::HsmUnavailable => "HsmUnavailable",
            Error::DatabaseUnavailable => "DatabaseUnavailable",
            Error::Throttled { .. } => "Throttled",
            Error::Internal => "InternalError",
        }
    }

    /// A failure of keyplane or what it depends on (the HSM, the database, a plugin), not of
    /// the request: a retry may succeed, and traces mark it as an error.
    pub fn is_server_fault(&self) -> bool {
        matches!(
            self,
            Error::HsmUnavailable
                | Error::DatabaseUnavailable
                | Error::Internal
                | Error::PluginFailed { .. }
                | Error::PluginTimeout { .. }
                | Error::PluginComponentCorrupt { .. }
        )
    }

    /// The error for a quota that frees up after `wait` (whole seconds, at least 1, as
    /// `Retry-After` carries them).
    pub fn throttled(wait: std::time::Duration) -> Self {
        Error::Throttled {
            retry_after_secs: wait.as_secs_f64().ceil().max(1.0) as u64,
            what: "request quota",
        }
    }

    /// The error for a tenant's plugin work past its share (`plugins::fairness`), free again
    /// after `wait`.
    pub fn plugin_throttled(wait: std::time::Duration) -> Self {
        Error::Throttled {
            retry_after_secs: wait.as_secs_f64().ceil().max(1.0) as u64,
            what: "the tenant's plugin budget (concurrent calls or CPU time)",
        }
    }

    /// How long a client should wait before trying again, for the errors that say.
    pub fn retry_after_secs(&self) -> Option<u64> {
        match self {
            Error::Throttled {
                retry_after_secs, ..
            } => Some(*retry_after_secs),
            _ => None,
        }
    }

    /// Shorthand for a validation error.
    pub fn validation(msg: impl Into<String>) -> Self {
        Error::Validation(msg.into())
    }
}

impl From<sqlx::Error> for Error {
    /// A unique constraint that refuses a row is a conflict with what exists (two requests
    /// creating the same alias, plugin or principal, the second after the first committed),
    /// and a foreign key that refuses one a conflict with a deletion made meanwhile, never an
    /// outage; anything else the database reports is.
    fn from(e: sqlx::Error) -> Self {
        if let sqlx::Error::Database(db) = &e {
            if db.is_unique_violation() {
                let (kind, id) = unique_violation(db.as_ref());
                tracing::info!(kind, "refused by a unique constraint");
                return Error::AlreadyExists { kind, id };
            }
            // A row this request names was deleted by another request between the check and
            // the write (a plugin deleted while it was being set as a storage backend or a
            // rotation schedule): a conflict with what another request did, never an outage.
            if db.is_foreign_key_violation() {
                tracing::info!(
                    "refused by a foreign key: what the request names was deleted meanwhile"
                );
                return Error::InvalidState(
                    "something this request names was deleted while it ran; read it again and retry"
                        .into(),
                );
            }
            // PostgreSQL refuses text it cannot hold (a NUL: 22021, or a character its
            // encoding lacks: 22P05). That is the request's text, not an outage; the fields
            // keyplane stores are checked before (`ops::validate::refuse_nul`), this is the
            // backstop for any other.
            let what = match db.code().as_deref() {
                Some("22021") => Some("a NUL character"),
                Some("22P05") => Some("a character the database's encoding lacks"),
                _ => None,
            };
            if let Some(what) = what {
                tracing::warn!(what, "refused by the database: text it cannot store");
                return Error::validation(format!(
                    "a text value holds {what}, which the database cannot store"
                ));
            }
        }
        tracing::error!(error = %e, "database error");
        Error::DatabaseUnavailable
    }
}

/// What a refused unique constraint says already exists, as a kind and the columns that
/// collided: from SQLite's message (`UNIQUE constraint failed: plugins.tenant_id,
/// plugins.name`), or from PostgreSQL's table and detail (`Key (tenant_id, name)=(…) already
/// exists.`; only the column names are taken, never the values, which may be secret).
fn unique_violation(db: &dyn sqlx::error::DatabaseError) -> (&'static str, String) {
    let (table, columns): (String, Vec<String>) =
        match db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
            Some(pg) => (
                pg.table().unwrap_or_default().to_string(),
                pg.detail()
                    .and_then(|d| d.strip_prefix("Key ("))
                    .and_then(|d| d.split_once(")="))
                    .map(|(cols, _)| cols.split(", ").map(str::to_string).collect())
                    .unwrap_or_default(),
            ),
            None => {
                let columns = db.message().rsplit(": ").next().unwrap_or_default();
                (
                    columns.split('.').next().unwrap_or_default().to_string(),
                    columns
                        .split(", ")
                        .filter_map(|c| c.split('.').nth(1))
                        .map(str::to_string)
                        .collect(),
                )
            }
        };
    let kind = match table.as_str() {
        "tenants" => "tenant",
        "principals" => "principal",
        "keys" => "key",
        "key_versions" => "key version",
        "aliases" => "alias",
        "plugins" => "plugin",
        "import_tokens" => "import token",
        "deletion_approvals" => "deletion approval",
        _ => "resource",
    };
    (kind, format!("with the same {}", columns.join(", ")))
}

/// Why a request was not authenticated. The native front answers all of them alike (`401`,
/// one message); the AWS fronts name each as AWS does.
#[derive(Debug, thiserror::Error)]
pub enum AuthFailure {
    /// No credential at all.
    #[error("missing credentials")]
    Missing,
    /// A credential keyplane does not know: a bearer token, or an access key id.
    #[error("invalid credentials")]
    Unknown,
    /// A signature that does not follow the signing scheme (its header is malformed).
    #[error("{0}")]
    IncompleteSignature(String),
    /// A signature that does not verify, is outside its time window, or is scoped to another
    /// service or day.
    #[error("{0}")]
    InvalidSignature(String),
}

/// Result alias used throughout keyplane.
pub type Result<T, E = Error> = std::result::Result<T, E>;
