//! `keyplane hsm transport-key | export-root | import-root`: the commands of the key ceremony
//! that gives a joining node's token the root key of the nodes it joins (the token side, and
//! why the root key can be wrapped at all, are in [`crate::hsm::ceremony`]; the procedure is
//! in docs/deployment.md).
//!
//! Each command works offline on one data dir (its node stopped: the data dir's lock) and
//! needs that data dir's database: every step, a refused one too, is a system record in its
//! audit log (principal `keyplane:ceremony`, decision `system`; actions
//! `CreateTransportKey`, `ExportRootKey`, `ImportRootKey`), the way `keyplane gc` records its
//! removals. A joining node's database is the shared one (with SQLite, a copy of the existing
//! node's `keyplane.db` taken while that node is stopped), so it must be in place before the
//! ceremony starts. The export file is written only once its record is committed.
//!
//! Nothing here holds key material: the root key leaves the exporting token wrapped by the
//! transport key (RSA-OAEP) and exists unwrapped only inside the importing token. The
//! export file ([`ExportFile`]) holds the wrapped root key, the fingerprint of the transport
//! key it was wrapped to and the root key's check value, no secret: only the joining token's
//! transport private key opens it, and that key is destroyed by the import.

use std::path::Path;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::audit::{self, AuditEvent};
use crate::config::Config;
use crate::hsm::ceremony::{self as token_side, RootExport, TransportPublic};
use crate::hsm::token;
use crate::hsm::wrapping::OaepHash;
use crate::store::Db;

/// The principal of the ceremony's audit records.
pub const PRINCIPAL: &str = "keyplane:ceremony";
/// The `format` of an export file.
pub const EXPORT_FORMAT: &str = "keyplane-root-key-export-v1";

/// What `export-root` writes and `import-root` reads (JSON).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportFile {
    /// [`EXPORT_FORMAT`].
    pub format: String,
    /// `CKM_RSA_PKCS_OAEP`.
    pub wrapping: String,
    /// `SHA-1` or `SHA-256` (OAEP's hash and MGF1's).
    pub oaep_hash: String,
    /// SHA-256 (hex) of the transport public key's SubjectPublicKeyInfo.
    pub transport_key_fingerprint: String,
    /// The root key's check value (hex; see `hsm::ceremony::check_value`).
    pub root_key_check_value: String,
    /// The root key wrapped to the transport key (base64).
    pub wrapped_root_key: String,
}

impl ExportFile {
    fn new(export: &RootExport, fingerprint: &str) -> Self {
        ExportFile {
            format: EXPORT_FORMAT.into(),
            wrapping: "CKM_RSA_PKCS_OAEP".into(),
            oaep_hash: match export.oaep {
                OaepHash::Sha1 => "SHA-1",
                OaepHash::Sha256 => "SHA-256",
            }
            .into(),
            transport_key_fingerprint: fingerprint.into(),
            root_key_check_value: hex::encode(&export.check_value),
            wrapped_root_key: STANDARD.encode(&export.wrapped),
        }
    }

    fn parse(&self) -> anyhow::Result<RootExport> {
        let bad = |what: &str| anyhow::anyhow!("not a keyplane root key export: {what}");
        if self.format != EXPORT_FORMAT || self.wrapping != "CKM_RSA_PKCS_OAEP" {
            return Err(bad("unknown format or wrapping"));
        }
        let oaep = match self.oaep_hash.as_str() {
            "SHA-1" => OaepHash::Sha1,
            "SHA-256" => OaepHash::Sha256,
            _ => return Err(bad("unknown oaep_hash")),
        };
        Ok(RootExport {
            oaep,
            wrapped: STANDARD
                .decode(&self.wrapped_root_key)
                .map_err(|_| bad("wrapped_root_key is not base64"))?,
            check_value: hex::decode(&self.root_key_check_value)
                .map_err(|_| bad("root_key_check_value is not hex"))?,
        })
    }
}

/// The database URL of `config`, if its database is there (the ceremony never makes one).
fn existing_database(config: &Config) -> anyhow::Result<String> {
    let file = config.data_dir.join("keyplane.db");
    if config.database.url.is_none() && !file.exists() {
        anyhow::bail!(
            "no keyplane database in {}: the key ceremony records each step in the node's database; a joining node uses the shared one (with SQLite, a copy of the existing node's keyplane.db taken while it is stopped)",
            config.data_dir.display()
        );
    }
    Ok(config.database_url())
}

/// The database's token-hash key, sealed by the cluster's root key (IV then ciphertext): what
/// an imported root key must open. Without it an export could carry any key its sender chose
/// (the transport key is public, and the check value travels in the same file), and the new
/// node would seal everything to that key.
fn sealed_by_root(config: &Config) -> anyhow::Result<Vec<u8>> {
    let (runtime, db) = open_database(config)?;
    let sealed = runtime.block_on(async {
        let sealed = crate::store::meta::get(&db, crate::authn::KEY_NAME).await;
        db.close().await;
        sealed
    })?;
    sealed.ok_or_else(|| {
        anyhow::anyhow!(
            "the database holds no token-hash key sealed by the root key, so an imported root key cannot be checked against it: import into a node that has the cluster's database"
        )
    })
}

/// The node's (existing) database, and a runtime to use it from these offline commands.
fn open_database(config: &Config) -> anyhow::Result<(tokio::runtime::Runtime, Db)> {
    let url = existing_database(config)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let busy = std::time::Duration::from_millis(config.database.busy_timeout_ms);
    let db = runtime.block_on(Db::open_with(&url, busy))?;
    Ok((runtime, db))
}

/// Append one ceremony record and commit it.
fn record(config: &Config, action: &str, resource: String, outcome: &str) -> anyhow::Result<()> {
    let ev = AuditEvent {
        outcome: outcome.into(),
        ..AuditEvent::system("ceremony", PRINCIPAL, "-", action, resource)
    };
    let (runtime, db) = open_database(config)?;
    runtime.block_on(async {
        let mut tx = db.begin_bookkeeping().await?;
        audit::append(&mut tx, &ev).await?;
        tx.commit().await?;
        db.close().await;
        Ok(())
    })
}

/// Record a step's result (`ok`, or `Refused` for an error, whose message is returned as it
/// is). A step whose record cannot be written fails.
fn recorded<T>(
    config: &Config,
    action: &str,
    resource: impl Fn(Option<&T>) -> String,
    result: anyhow::Result<T>,
) -> anyhow::Result<T> {
    let outcome = if result.is_ok() { "ok" } else { "Refused" };
    let written = record(config, action, resource(result.as_ref().ok()), outcome);
    match (result, written) {
        (Ok(v), Ok(())) => Ok(v),
        (Err(e), _) => Err(e),
        (Ok(_), Err(e)) => Err(e.context(format!(
            "{action} happened in the token but its audit record could not be written"
        ))),
    }
}

fn transport_uid(fingerprint: &str) -> String {
    format!("Keyplane::TransportKey::{fingerprint:?}")
}

/// Step 1, on the joining node: make its token if the data dir has none (without a root
/// key), and a transport key pair in it. Returns its public half.
pub fn transport_key(config: &Config, bits: u64) -> anyhow::Result<TransportPublic> {
    existing_database(config)?;
    let result = (|| {
        let (_pkcs11, s, pin, _) = token::ceremony_session(config, true)?;
        token::user_login(&s, &pin)?;
        let made = token_side::create_transport_key(&s, bits);
        let _ = s.logout();
        made
    })();
    recorded(
        config,
        "CreateTransportKey",
        |t: Option<&TransportPublic>| transport_uid(t.map_or("?", |t| &t.fingerprint)),
        result,
    )
}

/// Step 2, on an existing node: wrap its root key to the transport public key in `to` (PEM)
/// and write the export to `out` (a new file).
pub fn export_root(config: &Config, to: &Path, out: &Path) -> anyhow::Result<ExportFile> {
    existing_database(config)?;
    if out.exists() {
        anyhow::bail!("{} exists already", out.display());
    }
    let pem = std::fs::read_to_string(to)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", to.display()))?;
    let (modulus, exponent) = crate::algorithms::public_key::rsa_public_key(
        "the transport public key",
        &pem,
        token_side::TRANSPORT_BITS[0],
    )?;
    let recipient = TransportPublic::from_parts(modulus.clone(), exponent.clone())?;
    let result = (|| {
        let (_pkcs11, s, pin, _) = token::ceremony_session(config, false)?;
        token_side::export_root(&s, || token::so_pin(config), &pin, (&modulus, &exponent))
    })();
    let file = recorded(
        config,
        "ExportRootKey",
        |e: Option<&RootExport>| {
            format!(
                "Keyplane::RootKey::{:?} to {}",
                e.map_or("?".into(), |e| hex::encode(&e.check_value)),
                transport_uid(&recipient.fingerprint)
            )
        },
        result,
    )
    .map(|e| ExportFile::new(&e, &recipient.fingerprint))?;
    let mut body = serde_json::to_string_pretty(&file)?;
    body.push('\n');
    // The record above says the token wrapped the key; a file that could not be written is
    // recorded too, so the log never claims an export that nobody received.
    if let Err(e) = token::write_secret_file(out, body.as_bytes()) {
        let resource = format!("Keyplane::ExportFile::{:?}", out.display().to_string());
        record(config, "ExportRootKey", resource, "WriteFailed")?;
        return Err(e);
    }
    Ok(file)
}

/// Step 3, on the joining node: import the root key from the export in `from`. Returns the
/// root key's check value (hex).
pub fn import_root(config: &Config, from: &Path) -> anyhow::Result<String> {
    existing_database(config)?;
    let text = std::fs::read_to_string(from)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", from.display()))?;
    let file: ExportFile = serde_json::from_str(&text)
        .map_err(|e| anyhow::anyhow!("not a keyplane root key export: {e}"))?;
    let result = (|| {
        let export = file.parse()?;
        let (pkcs11, s, pin, _) = token::ceremony_session(config, false)?;
        let quirks = crate::hsm::quirks::Module::of(&pkcs11).quirks();
        token::user_login(&s, &pin)?;
        let imported = (|| {
            match token_side::transport_public(&s)? {
                Some(t) if t.fingerprint == file.transport_key_fingerprint => {}
                Some(_) => anyhow::bail!(
                    "the export was made for another transport key (fingerprint {}), not this token's",
                    file.transport_key_fingerprint
                ),
                // No transport key: import_root says why.
                None => {}
            }
            let anchor = sealed_by_root(config)?;
            let exportable = config.hsm.root_key_exportable;
            let anchor = (crate::authn::KEY_AAD, &anchor[..]);
            token_side::import_root(&s, quirks, &export, exportable, anchor)
        })();
        let _ = s.logout();
        imported.map(|()| file.root_key_check_value.clone())
    })();
    recorded(
        config,
        "ImportRootKey",
        |_: Option<&String>| {
            format!(
                "Keyplane::RootKey::{:?} from {}",
                file.root_key_check_value,
                transport_uid(&file.transport_key_fingerprint)
            )
        },
        result,
    )
}

/// Test hook: `hsm::ceremony::probe_extraction` on the data dir's token.
#[cfg(all(feature = "test-hooks", debug_assertions))]
pub fn probe_extraction(config: &Config) -> anyhow::Result<Vec<(&'static str, String)>> {
    let (_pkcs11, s, pin, _) = token::ceremony_session(config, false)?;
    token::user_login(&s, &pin)?;
    let found = token_side::probe_extraction(&s);
    let _ = s.logout();
    found
}
