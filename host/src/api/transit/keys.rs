//! Transit's key endpoints: `keys/<name>` (create with POST/PUT, read with GET, delete with
//! DELETE), `keys` (LIST), `keys/<name>/config`, `keys/<name>/rotate`, `keys/<name>/trim`.
//! A Transit key is the keyplane key named by the alias `alias/<name>`; creating one creates
//! the key and its alias in one transaction (`create-key` with `alias`).
//!
//! Settings map onto keyplane's: `derived` onto `require_encryption_context` (the context is
//! bound to each ciphertext as AAD rather than used to derive a key: the same guarantee, a
//! ciphertext opens only with its context), `deletion_allowed` onto the negation of
//! `deletion_protection` (Transit keys are created protected, as in Vault),
//! `auto_rotate_period` onto automatic rotation (whole days); `keys/<name>/config` changes them
//! with `configure-key`, all or none. Deleting schedules keyplane's deletion (the shortest pending
//! window, 7 days, during which `cancel-key-deletion` restores the key) and frees the name.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use super::error::TransitError;
use super::wire::{spec_of_type, type_of_spec, weak};
use super::{done, err, key_of, Call, Failure, Reply};
use crate::algorithms::KeySpec;
use crate::error::{Error, Result};
use crate::ops::automatic_rotation::MAX_PERIOD_DAYS;
use crate::ops::{self, KeyMetadata};

type Answer = std::result::Result<Reply, Failure>;

#[derive(Debug, Deserialize)]
struct CreateRequest {
    #[serde(rename = "type", default = "default_type")]
    key_type: String,
    #[serde(default, deserialize_with = "weak::bool")]
    exportable: bool,
    #[serde(default, deserialize_with = "weak::bool")]
    derived: bool,
    #[serde(default, deserialize_with = "weak::bool")]
    convergent_encryption: bool,
    #[serde(default, deserialize_with = "weak::bool")]
    allow_plaintext_backup: bool,
    auto_rotate_period: Option<weak::Value>,
    #[serde(default, deserialize_with = "weak::opt_int")]
    key_size: Option<u32>,
    /// keyplane's own: `envelope` (default for symmetric types) or `hsm`.
    protection: Option<String>,
}

fn default_type() -> String {
    "aes256-gcm96".into()
}

/// `POST keys/<name>`: create the key (with its alias), or answer the existing one.
pub async fn create(call: &Call<'_>, name: &str) -> Answer {
    let alias = key_of(name).map_err(err)?;
    let req: CreateRequest = call.decode().map_err(err)?;
    // The schedule is made with the key, in its transaction: a bad or refused period
    // leaves no key behind.
    let days = match &req.auto_rotate_period {
        Some(period) => period_days(period).map_err(err)?,
        None => 0,
    };
    let op = create_op(&req, alias.clone()).map(|mut op| {
        op.rotation_period_days = (days > 0).then_some(days);
        op
    });
    let created = call.run(op).await;
    let mut warnings = Vec::new();
    match created {
        Ok(_) => {}
        // Vault answers a create of an existing key with the key as it is.
        Err(Error::AlreadyExists { kind: "alias", .. }) => {
            warnings.push(format!("key {name} already exists; nothing was changed"))
        }
        Err(e) => return Err(done(e)),
    }
    let mut reply = read_after_write(call, name).await?;
    reply.warnings.extend(warnings);
    Ok(reply)
}

fn create_op(req: &CreateRequest, alias: String) -> Result<ops::create_key::CreateKey> {
    let (spec, usage) = spec_of_type(&req.key_type, req.key_size)?;
    if req.convergent_encryption {
        return Err(Error::Unsupported(
            "convergent_encryption is not supported: keyplane never reuses a nonce".into(),
        ));
    }
    if req.allow_plaintext_backup {
        return Err(Error::Unsupported(
            "allow_plaintext_backup is not supported: keyplane never hands out key material in plaintext".into(),
        ));
    }
    Ok(ops::create_key::CreateKey {
        description: String::new(),
        tags: BTreeMap::new(),
        protection: req.protection.clone(),
        key_spec: spec.as_str().into(),
        key_usage: Some(usage.into()),
        grants: None,
        origin: "keyplane".into(),
        exportable: req.exportable,
        policy: None,
        alias: Some(alias),
        deletion_protection: true,
        require_encryption_context: req.derived,
        rotation_period_days: None,
    })
}

/// Seconds of a duration as Vault reads one: a number of seconds, or numbers each with a
/// unit (`s`, `m`, `h`, `d`) one after another (`30d`, `1h30m`, `720h0m0s`). None: not one.
fn duration_seconds(s: &str) -> Option<i64> {
    if s.is_empty() {
        return None;
    }
    if s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse().ok();
    }
    let (mut total, mut rest) = (0i64, s);
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit())?;
        let unit_end = rest[digits..]
            .find(|c: char| c.is_ascii_digit())
            .map_or(rest.len(), |n| digits + n);
        let n: i64 = rest[..digits].parse().ok()?;
        let unit = match &rest[digits..unit_end] {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86_400,
            _ => return None,
        };
        total = total.checked_add(n.checked_mul(unit)?)?;
        rest = &rest[unit_end..];
    }
    Some(total)
}

/// A Transit duration (`auto_rotate_period`): seconds as a number, or a number followed by
/// `s`, `m`, `h` or `d`, or several as Go writes a duration (`720h0m0s`, Vault's own
/// answer); keyplane rotates by whole days (0 turns rotation off).
fn period_days(v: &weak::Value) -> Result<i64> {
    let bad = || {
        Error::validation(
            "auto_rotate_period must be 0 (off) or a whole number of days, e.g. 720h, 30d or 2592000",
        )
    };
    let seconds = match v {
        weak::Value::Int(n) => *n,
        weak::Value::Str(s) => duration_seconds(s.trim()).ok_or_else(bad)?,
        _ => return Err(bad()),
    };
    if seconds < 0 || seconds % 86_400 != 0 {
        return Err(bad());
    }
    // Checked here, before a key is created with it: a period `enable-key-rotation` then
    // refused would leave the key made and the request failed.
    let days = seconds / 86_400;
    if days > MAX_PERIOD_DAYS {
        return Err(Error::validation(format!(
            "auto_rotate_period is at most {MAX_PERIOD_DAYS} days"
        )));
    }
    Ok(days)
}

/// One version in `keys`: its creation time (symmetric keys: Unix seconds, as Vault), and
/// for asymmetric keys the public key.
#[derive(Serialize)]
#[serde(untagged)]
enum VersionEntry {
    Symmetric(i64),
    Asymmetric {
        creation_time: String,
        name: String,
        public_key: String,
        /// Vault's (1.15 and later) for every version of a signing key, `""` when none was
        /// set: keyplane keeps no certificate chain with a version.
        certificate_chain: &'static str,
    },
}

/// A key as Vault's `formatKeyPolicy` writes it, field for field (with keyplane's own view
/// added): what Vault writes only for some keys is left out for the others.
#[derive(Serialize)]
struct KeyData {
    name: String,
    #[serde(rename = "type")]
    key_type: String,
    /// Encryption and signing keys; none for HMAC keys, as Vault writes none for them.
    #[serde(skip_serializing_if = "Option::is_none")]
    keys: Option<BTreeMap<String, VersionEntry>>,
    latest_version: i64,
    min_available_version: i64,
    min_decryption_version: i64,
    min_encryption_version: i64,
    deletion_allowed: bool,
    derived: bool,
    exportable: bool,
    allow_plaintext_backup: bool,
    /// Derived keys only (always false: keyplane has no convergent keys). Vault also writes
    /// `kdf` for them, which keyplane does not: its derived keys derive nothing (the context
    /// is bound as AAD), and naming a KDF would misstate how they work.
    #[serde(skip_serializing_if = "Option::is_none")]
    convergent_encryption: Option<bool>,
    imported_key: bool,
    supports_encryption: bool,
    supports_decryption: bool,
    /// Whether a key of this type may be derived: Vault says so of ed25519 keys too, but
    /// keyplane has no derived signing keys (it refuses `derived` for them), so it says what
    /// it serves.
    supports_derivation: bool,
    supports_signing: bool,
    auto_rotate_period: i64,
    /// HMAC keys: the key's length in bytes (Vault writes it for them; Terraform reads it).
    #[serde(skip_serializing_if = "Option::is_none")]
    key_size: Option<u32>,
    /// keyplane's view of the same key (usable through the native API and the AWS front).
    keyplane: Keyplane,
}

#[derive(Serialize)]
struct Keyplane {
    key_id: String,
    alias: String,
    key_spec: String,
    protection: String,
    state: String,
}

/// `GET keys/<name>`.
pub async fn read(call: &Call<'_>, name: &str) -> Answer {
    let alias = key_of(name).map_err(err)?;
    let meta = describe(call, &alias).await?;
    let spec = KeySpec::parse(&meta.key_spec).ok();
    let asymmetric = spec.is_some_and(KeySpec::is_asymmetric);
    // What the Transit endpoints serve for the key, whatever its keyplane usage: an RSA key
    // made natively to encrypt (RSA-OAEP) has no Transit encryption.
    let encrypts = spec.is_some_and(KeySpec::is_symmetric_encryption);
    let signs = meta.key_usage == "sign-verify";
    let mut warnings = Vec::new();
    // Versions are listed (and so read) only for the keys Vault lists them for.
    let keys = if asymmetric || encrypts {
        Some(version_entries(call, &alias, &meta, asymmetric, &mut warnings).await?)
    } else {
        None
    };
    let data = KeyData {
        name: name.to_string(),
        key_type: type_of_spec(&meta.key_spec),
        keys,
        latest_version: meta.primary_version,
        min_available_version: 0,
        min_decryption_version: meta.min_decryption_version,
        min_encryption_version: 0,
        deletion_allowed: !meta.deletion_protection,
        derived: meta.require_encryption_context,
        exportable: meta.exportable.unwrap_or(false),
        allow_plaintext_backup: false,
        convergent_encryption: meta.require_encryption_context.then_some(false),
        imported_key: meta.origin.as_deref() == Some("external"),
        supports_encryption: encrypts,
        supports_decryption: encrypts,
        supports_derivation: encrypts,
        supports_signing: signs,
        auto_rotate_period: meta.rotation_period_days.unwrap_or(0) * 86_400,
        key_size: spec.and_then(KeySpec::hmac_key_len).map(|n| n as u32),
        keyplane: Keyplane {
            key_id: meta.key_id.clone(),
            alias,
            key_spec: meta.key_spec.clone(),
            protection: meta.protection.clone(),
            state: meta.state.clone(),
        },
    };
    let reply = Reply::data(&data)?;
    Ok(warnings.into_iter().fold(reply, Reply::warn))
}

/// `keys`: every version from `min_decryption_version` on that is not destroyed, page after
/// page, as Vault shows them (see [`VersionEntry`]): Vault moves the versions below its
/// minimum decryption version out of `keys` (`handleArchiving`), and back when it is lowered.
async fn version_entries(
    call: &Call<'_>,
    alias: &str,
    meta: &KeyMetadata,
    asymmetric: bool,
    warnings: &mut Vec<String>,
) -> std::result::Result<BTreeMap<String, VersionEntry>, Failure> {
    let mut versions = Vec::new();
    let below = (meta.min_decryption_version - 1).max(0);
    loop {
        let page = call
            .run(Ok(ops::rotate_key::ListKeyVersions {
                key_id: alias.to_string(),
                after_version: Some(
                    versions
                        .last()
                        .map_or(below, |v: &ops::VersionInfo| v.version),
                ),
                limit: Some(1000),
            }))
            .await
            .map_err(done)?;
        versions.extend(page.versions);
        if !page.truncated {
            break;
        }
    }
    let mut keys = BTreeMap::new();
    // The caller may not read public keys: not asked again for each version.
    let mut denied = false;
    for v in versions.iter().filter(|v| v.state != "destroyed") {
        let entry = if asymmetric {
            VersionEntry::Asymmetric {
                creation_time: v.created_at.clone(),
                name: curve_name(&meta.key_spec),
                public_key: public_key(call, meta, v, warnings, &mut denied).await?,
                certificate_chain: "",
            }
        } else {
            let t = chrono::DateTime::parse_from_rfc3339(&v.created_at)
                .map(|t| t.timestamp())
                .unwrap_or_default();
            VersionEntry::Symmetric(t)
        };
        keys.insert(v.version.to_string(), entry);
    }
    Ok(keys)
}

/// A version's public key as Transit shows it: base64 of the raw 32 bytes for ed25519, PEM
/// (SubjectPublicKeyInfo) otherwise. A version listed that keyplane will not open now
/// (compromised, a disabled key) is listed without its public key and a warning says why, so
/// that reading the key still works.
async fn public_key(
    call: &Call<'_>,
    meta: &KeyMetadata,
    v: &ops::VersionInfo,
    warnings: &mut Vec<String>,
    denied: &mut bool,
) -> std::result::Result<String, Failure> {
    let version = v.version;
    if *denied {
        return Ok(String::new());
    }
    // Known from what was read already: not asked for (and not audited as a refusal).
    let unopenable = if meta.state != "enabled" {
        Some(format!("key {} is {}", meta.key_id, meta.state))
    } else if v.state != "enabled" {
        Some(format!("the version is {}", v.state))
    } else {
        None
    };
    if let Some(why) = unopenable {
        warnings.push(format!(
            "version {version}: {why}; listed without its public key"
        ));
        return Ok(String::new());
    }
    let ed25519 = meta.key_spec == "ED25519";
    let public = call
        .run(Ok(ops::get_public_key::GetPublicKey {
            key_id: meta.key_id.clone(),
            key_version: u32::try_from(version).ok(),
            format: Some(if ed25519 { "JWK" } else { "PEM" }.into()),
        }))
        .await;
    let public = match public {
        Ok(public) => public,
        // Also a caller who may read the key but not its public keys (GetPublicKey): the
        // versions are listed all the same.
        Err(e @ Error::AccessDenied { .. }) => {
            *denied = true;
            warnings.push(format!(
                "{e}; versions from {version} on are listed without their public keys"
            ));
            return Ok(String::new());
        }
        Err(e @ (Error::InvalidState(_) | Error::KeyDisabled(_) | Error::KeyDestroyed { .. })) => {
            warnings.push(format!(
                "version {version}: {e}; listed without its public key"
            ));
            return Ok(String::new());
        }
        Err(e) => return Err(done(e)),
    };
    if !ed25519 {
        return Ok(public.pem.unwrap_or_default());
    }
    use base64::Engine as _;
    let raw = public
        .jwk
        .as_ref()
        .and_then(|jwk| jwk["x"].as_str())
        .and_then(|x| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(x)
                .ok()
        })
        .ok_or_else(|| done(Error::Internal))?;
    Ok(base64::engine::general_purpose::STANDARD.encode(raw))
}

fn curve_name(spec: &str) -> String {
    match spec {
        "ECC_NIST_P256" => "P-256",
        "ECC_NIST_P384" => "P-384",
        "ED25519" => "ed25519",
        "RSA_2048" => "rsa-2048",
        "RSA_3072" => "rsa-3072",
        "RSA_4096" => "rsa-4096",
        other => other,
    }
    .to_string()
}

async fn describe(call: &Call<'_>, alias: &str) -> Result<KeyMetadata, Failure> {
    call.run(Ok(ops::describe_key::DescribeKey {
        key_id: alias.into(),
    }))
    .await
    .map_err(done)
}

#[derive(Serialize)]
struct ListData {
    keys: Vec<String>,
}

/// `LIST keys`: the tenant's aliases, as Transit names. No keys: `404`, as Vault answers.
pub async fn list(call: &Call<'_>) -> Answer {
    let mut names = Vec::new();
    let mut next_token = None;
    loop {
        let page = call
            .run(Ok(ops::aliases::ListAliases {
                key_id: None,
                limit: Some(1000),
                next_token: next_token.take(),
            }))
            .await
            .map_err(done)?;
        // Aliases with a `/` are not Transit names (see `key_of`): not listed.
        names.extend(page.aliases.into_iter().filter_map(|a| {
            a.name
                .strip_prefix(crate::ops::ALIAS_PREFIX)
                .filter(|n| super::is_transit_name(n))
                .map(str::to_string)
        }));
        match page.next_token {
            Some(t) => next_token = Some(t),
            None => break,
        }
    }
    if names.is_empty() {
        return Err(Failure::Done(TransitError::new(
            axum::http::StatusCode::NOT_FOUND,
            "",
        )));
    }
    Reply::data(&ListData { keys: names })
}

/// `DELETE keys/<name>`: keyplane's deletion (a pending window, then crypto-shredding), only
/// when `deletion_allowed`; the name is freed at once. Answers `204` with no body, as Vault.
pub async fn delete(call: &Call<'_>, name: &str) -> Answer {
    let alias = key_of(name).map_err(err)?;
    let meta = describe(call, &alias).await?;
    if meta.deletion_protection {
        return Err(err(Error::InvalidState(
            "deletion is not allowed for this key: set deletion_allowed with keys/<name>/config first"
                .into(),
        )));
    }
    // The key goes with every name it has: refused while another name still reaches it.
    let names = call
        .run(Ok(ops::aliases::ListAliases {
            key_id: Some(meta.key_id.clone()),
            limit: Some(100),
            next_token: None,
        }))
        .await
        .map_err(done)?;
    let others: Vec<String> = names
        .aliases
        .into_iter()
        .map(|a| a.name)
        .filter(|n| *n != alias)
        .collect();
    if !others.is_empty() {
        return Err(err(Error::InvalidState(format!(
            "key {} is also named {}: delete those aliases first (deleting a Transit key deletes the keyplane key under every name)",
            meta.key_id,
            others.join(", ")
        ))));
    }
    // Two operations. The second is decided first (a dry run), so that a caller who may
    // schedule the deletion but not free the name is refused with nothing done, not left
    // with a key on its way to crypto-shredding behind a refusal (Vault's delete is whole).
    // Between them it can still fail if the alias changes meanwhile: a key already pending
    // deletion is not scheduled again, so the delete can be repeated and then frees the name.
    let delete_alias = || ops::aliases::DeleteAlias {
        alias_name: alias.clone(),
    };
    let deletion_date = if meta.state == crate::model::KeyState::PendingDeletion.as_str() {
        meta.deletion_date.clone()
    } else {
        call.gate
            .dry_run(call.principal.clone(), Ok(delete_alias()))
            .await
            .map_err(done)?;
        let op = ops::key_deletion::ScheduleKeyDeletion::new(
            meta.key_id.clone(),
            Some(ops::key_deletion::MIN_WINDOW_DAYS),
        );
        let scheduled = call.run(Ok(op)).await.map_err(|e| {
            let mut t = TransitError::from(&e);
            if t.status == axum::http::StatusCode::FORBIDDEN {
                t.message.push_str(
                    " (under the shipped policies, deleting a key needs multi-factor authentication or a second admin's approve-key-deletion for this caller)",
                );
            }
            Failure::Done(t)
        })?;
        scheduled.deletion_date
    };
    call.run(Ok(delete_alias())).await.map_err(done)?;
    // As Vault: 204, no body. The key is pending deletion (its date is in the audit log and
    // `describe-key`); until then `cancel-key-deletion` restores it.
    tracing::info!(key = %meta.key_id, deletion_date = ?deletion_date, name, "Transit key deleted: pending deletion, name freed");
    Ok(Reply::no_content())
}

#[derive(Debug, Deserialize)]
struct ConfigRequest {
    #[serde(default, deserialize_with = "weak::opt_int")]
    min_decryption_version: Option<i64>,
    #[serde(default, deserialize_with = "weak::opt_int")]
    min_encryption_version: Option<i64>,
    #[serde(default, deserialize_with = "weak::opt_bool")]
    deletion_allowed: Option<bool>,
    #[serde(default, deserialize_with = "weak::opt_bool")]
    exportable: Option<bool>,
    #[serde(default, deserialize_with = "weak::opt_bool")]
    allow_plaintext_backup: Option<bool>,
    auto_rotate_period: Option<weak::Value>,
}

/// `POST keys/<name>/config`: keyplane's `configure-key`, every setting given changed
/// together or not at all; what keyplane does not have is refused before anything is written.
pub async fn config(call: &Call<'_>, name: &str) -> Answer {
    let alias = key_of(name).map_err(err)?;
    let req: ConfigRequest = call.decode().map_err(err)?;
    let period = match &req.auto_rotate_period {
        Some(p) => Some(period_days(p).map_err(err)?),
        None => None,
    };
    let refuse = |m: &str| Err(err(Error::Unsupported(m.to_string())));
    if req.min_encryption_version.is_some_and(|v| v != 0) {
        return refuse("min_encryption_version is not supported: keyplane always encrypts with the latest version (0)");
    }
    if req.allow_plaintext_backup == Some(true) {
        return refuse("allow_plaintext_backup is not supported: keyplane never hands out key material in plaintext");
    }
    // Described first: the answer is the key's read, so a caller who may not read it is
    // refused before anything is written.
    let meta = describe(call, &alias).await?;
    if req
        .exportable
        .is_some_and(|e| e != meta.exportable.unwrap_or(false))
    {
        return refuse("exportable is fixed when a keyplane key is created");
    }
    let mut warnings = Vec::new();
    let min_decryption_version = match req.min_decryption_version {
        // As Vault: negative is refused, 0 means 1 (and says so).
        Some(v) if v < 0 => {
            return Err(err(Error::validation(
                "min decryption version cannot be negative",
            )))
        }
        Some(0) => {
            warnings.push("transit key numbering starts at 1; forcing minimum to 1");
            Some(1)
        }
        v => v,
    };
    let op = ops::configure_key::ConfigureKey {
        key_id: meta.key_id,
        rotation_period_days: period,
        min_decryption_version,
        deletion_protection: req.deletion_allowed.map(|allowed| !allowed),
    };
    call.run(Ok(op)).await.map_err(done)?;
    Ok(warnings
        .into_iter()
        .fold(read_after_write(call, name).await?, Reply::warn))
}

/// `POST keys/<name>/rotate`: a new primary version; answers the key.
pub async fn rotate(call: &Call<'_>, name: &str) -> Answer {
    let alias = key_of(name).map_err(err)?;
    let op = ops::rotate_key::RotateKey {
        key_id: alias,
        only_symmetric_encryption: false,
    };
    call.run(Ok(op)).await.map_err(done)?;
    read_after_write(call, name).await
}

/// The key as a write that succeeded answers it (Vault 1.12 and later), or `204` with no
/// body (as Vault before 1.12) if reading it failed: the caller may change the key but not
/// read it (refused, or, not allowed to describe it, told there is none), reading it was
/// throttled (a key with more versions than one request's operations cover, past the
/// caller's quota), or the database or HSM failed the read. A write that took effect is
/// never answered as failed: Vault's Go client retries a 5xx, and a retried rotation
/// rotates again.
async fn read_after_write(call: &Call<'_>, name: &str) -> Answer {
    after_write(read(call, name).await)
}

/// [`read_after_write`]'s answer from the read's.
fn after_write(read: Answer) -> Answer {
    match read {
        Ok(reply) => Ok(reply),
        Err(Failure::Done(e)) => {
            if e.status.is_server_error() {
                tracing::warn!(status = %e.status, error = %e.message, "a key written was not read back; answered 204");
            }
            Ok(Reply::no_content())
        }
        Err(Failure::Refused(e)) => {
            tracing::warn!(error = %e, "a key written was not read back; answered 204");
            Ok(Reply::no_content())
        }
    }
}

/// `POST keys/<name>/trim`: refused; keyplane destroys versions only by crypto-shredding the
/// whole key, and `min_decryption_version` already stops old versions decrypting.
pub fn trim(name: &str) -> Answer {
    key_of(name).map_err(err)?;
    Err(err(Error::Unsupported(
        "trim is not supported: keyplane destroys key material only through key deletion (crypto-shredding); set min_decryption_version to stop old versions decrypting".into(),
    )))
}

/// A `keys/<name>` body decoded and translated into the `create-key` it becomes (validated).
#[cfg(feature = "fuzzing")]
pub(super) fn fuzz_create(name: &str, body: &[u8]) {
    let (Ok(alias), Ok(req)) = (key_of(name), super::decode::<CreateRequest>(body)) else {
        return;
    };
    if let Some(period) = &req.auto_rotate_period {
        let _ = period_days(period);
    }
    super::fuzz_validate(create_op(&req, alias));
}

/// A `keys/<name>/config` body decoded, its period read.
#[cfg(feature = "fuzzing")]
pub(super) fn fuzz_config(name: &str, body: &[u8]) {
    if key_of(name).is_err() {
        return;
    }
    if let Ok(req) = super::decode::<ConfigRequest>(body) {
        if let Some(period) = &req.auto_rotate_period {
            let _ = period_days(period);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;

    /// Whatever the read after a write that took effect ran into, the write is answered as
    /// done: before, a database or HSM failure of the read (5xx) was answered, and Vault's
    /// Go client retried the rotation.
    #[test]
    fn a_write_that_took_effect_is_answered_done_whatever_its_read_met() {
        for status in [
            StatusCode::FORBIDDEN,
            StatusCode::NOT_FOUND,
            StatusCode::TOO_MANY_REQUESTS,
            StatusCode::INTERNAL_SERVER_ERROR,
            StatusCode::SERVICE_UNAVAILABLE,
        ] {
            let read = Err(Failure::Done(super::super::error::TransitError::new(
                status,
                "read failed",
            )));
            let answer = after_write(read).ok().unwrap();
            assert_eq!(answer.status, StatusCode::NO_CONTENT, "{status}");
        }
        let read = Err(Failure::Refused(Error::DatabaseUnavailable));
        assert_eq!(
            after_write(read).ok().unwrap().status,
            StatusCode::NO_CONTENT
        );
    }

    #[test]
    fn rotation_periods_are_whole_days() {
        use serde_json::json;
        let period_days =
            |v: &serde_json::Value| period_days(&serde_json::from_value(v.clone()).unwrap());
        assert_eq!(period_days(&json!("720h")).unwrap(), 30);
        assert_eq!(period_days(&json!("30d")).unwrap(), 30);
        assert_eq!(period_days(&json!(86400)).unwrap(), 1);
        assert_eq!(period_days(&json!("0")).unwrap(), 0);
        // As Go writes a duration (Vault's own answers, `Duration.String()`).
        assert_eq!(period_days(&json!("720h0m0s")).unwrap(), 30);
        assert_eq!(period_days(&json!("0s")).unwrap(), 0);
        assert_eq!(period_days(&json!("1d23h60m")).unwrap(), 2);
        for bad in [
            json!(""),
            json!("h"),
            json!("720h0m1s"),
            json!("1h30"),
            json!("99999999999999999999d"),
            json!("1h"),
            json!("1.5d"),
            json!("-1d"),
            json!(true),
            json!("5w"),
            // Longer than rotation allows: refused before the key is made.
            json!("2561d"),
        ] {
            assert!(period_days(&bad).is_err(), "{bad}");
        }
    }
}
