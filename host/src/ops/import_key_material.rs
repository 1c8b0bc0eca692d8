//! `import-key-material`: bring your own key. Takes raw symmetric material of the key's spec
//! (32 bytes for `AES_256_GCM` and `CHACHA20_POLY1305`, 16 for `AES_128_GCM`; RSA-OAEP, or
//! RSA-OAEP + AES key wrap with padding) or an RSA / EC private key as PKCS#8 (RSA-OAEP + AES
//! key wrap with padding), wrapped with the import token's RSA public key, unwraps it inside
//! the HSM into version 1 of an `external` key (a token object for `hsm` keys, sealed under
//! the tenant KEK for `envelope` keys) and enables the key. Optional `valid_to`:
//! the scheduler deletes the material then and the key waits for the same material again
//! (checked against the key check value kept from the first import). Each token is used once.
//!
//! A key pair's private key may come as a PKCS#12 bundle instead (`pkcs12` and its
//! `password`, in place of `encrypted_key_material`), as most tools write one. The host opens
//! it (bounded work, see [`crate::algorithms::pkcs12`]), checks the key is of the key's spec
//! and the bundle's certificate (if any) of that key, and moves the PKCS#8 into the token under
//! a key it shares with the token for that one unwrap. The key is then in host memory for the
//! request (zeroized after), which the token-wrapped form avoids; the import token is still
//! required and used up, so the one-import-per-token rule and its expiry hold for both.
//! Cedar: `ImportKeyMaterial` on the key.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use super::key_transport::{awaiting_import, transport, wrapping_key_spec};
use super::resolve::{key_row, resolve_key};
use super::validate::validate_key_id;
use super::versions::place_version;
use super::views::rfc3339;
use super::{Base64, OpContext, Operation, Password, WriteScope};
use crate::algorithms::pkcs12;
use crate::algorithms::public_key::{peer_point, PublicParts};
use crate::authz::ResourceRef;
use crate::crypto::transport::{PairMaterial, Wrapped};
use crate::error::{Error, Result};
use crate::store::{imports, keys};

/// Largest wrapped material accepted (RSA-4096 block + wrapped AES key, with room).
const MAX_WRAPPED: usize = 8192;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ImportKeyMaterial {
    pub key_id: String,
    pub import_token: String,
    /// The material wrapped with the import token's public key. Or, for a key pair, `pkcs12`.
    #[serde(default)]
    pub encrypted_key_material: Option<Base64>,
    /// A key pair's private key as a PKCS#12 bundle (DER, base64), opened with `password`.
    #[serde(default)]
    pub pkcs12: Option<Base64>,
    /// The password of `pkcs12`.
    #[serde(default)]
    pub password: Option<Password>,
    /// RFC 3339; absent: the material does not expire.
    #[serde(default)]
    pub valid_to: Option<String>,
    /// EC keys only: the pair's public key (SubjectPublicKeyInfo, PEM or base64 DER); the
    /// HSM proves it belongs to the imported private key before accepting it.
    #[serde(default)]
    pub public_key: Option<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct ImportOutput {
    pub key_id: String,
    pub key_version: i64,
    pub state: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub material_expires_at: Option<String>,
}

/// The furthest `valid_to` may be from the import (AWS's `ValidTo` bound).
const MAX_VALID_FOR_SECONDS: i64 = 365 * 86_400;

impl ImportKeyMaterial {
    fn valid_to(&self) -> Result<Option<i64>> {
        self.valid_to
            .as_deref()
            .map(|t| {
                chrono::DateTime::parse_from_rfc3339(t)
                    .map(|t| t.timestamp())
                    .map_err(|_| Error::validation("valid_to must be an RFC 3339 timestamp"))
            })
            .transpose()
    }
}

impl Operation for ImportKeyMaterial {
    const NAME: &'static str = "import-key-material";
    const ACTION: &'static str = "ImportKeyMaterial";
    type Output = ImportOutput;

    fn validate(&self) -> Result<()> {
        validate_key_id(&self.key_id)?;
        let token_ok = self.import_token.len() == 36
            && self.import_token.starts_with("imp-")
            && self.import_token[4..]
                .bytes()
                .all(|b| b.is_ascii_hexdigit());
        if !token_ok {
            return Err(Error::InvalidImportToken(
                "import_token is not a token from get-parameters-for-import".into(),
            ));
        }
        if self
            .public_key
            .as_ref()
            .is_some_and(|k| k.len() > 16 * 1024)
        {
            return Err(Error::validation("public_key is longer than 16 KiB"));
        }
        match (&self.encrypted_key_material, &self.pkcs12, &self.password) {
            (Some(m), None, None) => {
                if m.is_empty() || m.len() > MAX_WRAPPED {
                    return Err(Error::validation(format!(
                        "encrypted_key_material must be 1 to {MAX_WRAPPED} bytes"
                    )));
                }
            }
            (None, Some(bundle), Some(password)) => {
                if bundle.is_empty() || bundle.len() > pkcs12::MAX_BUNDLE {
                    return Err(Error::validation(format!(
                        "pkcs12 must be 1 to {} bytes",
                        pkcs12::MAX_BUNDLE
                    )));
                }
                password.validate("password")?;
                if self.public_key.is_some() {
                    return Err(Error::validation(
                        "public_key does not apply to pkcs12: the bundle's key gives it",
                    ));
                }
            }
            (None, Some(_), None) => {
                return Err(Error::validation("pkcs12 needs its password"));
            }
            (None, None, _) => {
                return Err(Error::validation(
                    "encrypted_key_material (or, for a key pair, pkcs12 and password) is required",
                ));
            }
            _ => {
                return Err(Error::validation(
                    "give either encrypted_key_material or pkcs12 with its password, not both",
                ));
            }
        }
        self.valid_to()?;
        Ok(())
    }

    async fn resolve(&self, ctx: &OpContext<'_>) -> Result<ResourceRef> {
        resolve_key(ctx, &self.key_id).await
    }

    async fn execute(
        self,
        ctx: &OpContext<'_>,
        r: ResourceRef,
        scope: &mut WriteScope,
    ) -> Result<Self::Output> {
        let state = ctx.state;
        let key = key_row(&r)?;
        let material = awaiting_import(state, key).await?;
        // A token is forgotten once spent or expired (the scheduler sweeps expired ones), so
        // one not held is most likely one of those; a token never issued cannot be told
        // from them, and is answered the same.
        let token = imports::token(&state.db, &self.import_token)
            .await?
            .filter(|t| t.tenant_id == key.tenant_id)
            .ok_or_else(|| Error::ExpiredImportToken(self.import_token.clone()))?;
        if token.key_id != key.id {
            return Err(Error::InvalidImportToken(format!(
                "import token {} was issued for another key",
                token.id
            )));
        }
        let now = state.clock.now();
        if now >= token.expires_at {
            return Err(Error::ExpiredImportToken(token.id));
        }
        let valid_to = self.valid_to()?;
        if valid_to.is_some_and(|t| t <= now) {
            return Err(Error::validation("valid_to must be in the future"));
        }
        // As AWS bounds it: material meant to outlive a year is imported without expiry.
        if valid_to.is_some_and(|t| t > now + MAX_VALID_FOR_SECONDS) {
            return Err(Error::validation(
                "valid_to must be at most 365 days from now (or absent: the material does not expire)",
            ));
        }
        let transport = transport(&token.wrapping_algorithm)?;
        let modulus_len = wrapping_key_spec(&token.wrapping_key_spec)?
            .rsa_bits()
            .ok_or(Error::Internal)? as usize
            / 8;
        let protection = key.protection;
        let previous = keys::version(&state.db, &key.id, 1).await?;
        let wrapped = || -> Result<Wrapped> {
            Ok(Wrapped {
                import_object_id: token.hsm_object_id.clone(),
                modulus_len,
                transport,
                bytes: self
                    .encrypted_key_material
                    .as_ref()
                    .ok_or(Error::Internal)?
                    .0
                    .to_vec(),
            })
        };

        let spec = key.spec;
        let imported = if let (Some(bundle), Some(password)) = (&self.pkcs12, &self.password) {
            if !spec.is_asymmetric() {
                return Err(Error::validation(format!(
                    "a {} key is not a key pair: pkcs12 imports key pairs; use encrypted_key_material",
                    spec.as_str()
                )));
            }
            let slot = state.password_slot()?;
            let (pkcs8, ec_point) = open_bundle(bundle, password, spec, slot).await?;
            let usage = key.usage;
            state
                .keyring
                .import_pair_version(
                    PairMaterial::Pkcs8(pkcs8),
                    (spec, usage, material.exportable),
                    &key.id,
                    ec_point,
                )
                .await?
        } else if spec.is_asymmetric() {
            if !transport.with_aes_key_wrap {
                return Err(Error::validation(format!(
                    "a {} private key is imported as PKCS#8, which RSA-OAEP alone cannot carry; use RSA_AES_KEY_WRAP_SHA_1",
                    spec.as_str()
                )));
            }
            let ec_point = match (spec.rsa_bits(), &self.public_key) {
                (Some(_), _) => None,
                (None, Some(pk)) => Some(peer_point(spec, pk).map_err(|_| {
                    Error::validation(format!(
                        "public_key must be the SubjectPublicKeyInfo (PEM or base64 DER) of a {} point",
                        spec.as_str()
                    ))
                })?),
                (None, None) => {
                    return Err(Error::validation(format!(
                        "importing a {} key needs its public_key too (the token cannot derive it)",
                        spec.as_str()
                    )))
                }
            };
            let usage = key.usage;
            state
                .keyring
                .import_pair_version(
                    PairMaterial::Wrapped(wrapped()?),
                    (spec, usage, material.exportable),
                    &key.id,
                    ec_point,
                )
                .await?
        } else {
            state
                .keyring
                .import_version(
                    &key.tenant_id,
                    &key.id,
                    1,
                    (protection, spec, material.exportable),
                    wrapped()?,
                )
                .await?
        };
        let check = imported.check_value.clone();
        let version =
            place_version(state, scope, &key.tenant_id, &key.id, 1, imported.version).await?;
        crate::pause::point("import:material-made", &key.id).await;
        if let Some(before) = &material.material_check {
            if !bool::from(before.as_slice().ct_eq(check.as_slice())) {
                return Err(Error::IncorrectKeyMaterial(format!(
                    "this is not the material key {} held before; a key's imported material cannot change",
                    key.id
                )));
            }
        }
        let conn = scope.conn(state).await?;
        if !imports::delete_token(conn, &token.id).await? {
            return Err(Error::ExpiredImportToken(token.id));
        }
        if previous.is_some() {
            // Two imports of the same material may both get here; the second must fail (and
            // its objects be destroyed), or its objects would replace the first's in the row
            // and the first's would outlive crypto-shredding.
            if !keys::restore_version(conn, &version).await? {
                return Err(Error::InvalidState(format!(
                    "key {} received its material from another import meanwhile",
                    key.id
                )));
            }
        } else {
            keys::insert_version(conn, &version).await?;
        }
        let Some(state_now) = imports::set_imported(conn, &key.id, valid_to, &check).await? else {
            return Err(Error::InvalidState(format!(
                "key {} left pending-import while this request ran",
                key.id
            )));
        };
        // The wrapping key has served its one use (destroyed once this commits: a failure
        // restores the token, which must still work for a retry).
        scope.discard_import_key_after_commit(token.hsm_object_id);
        Ok(ImportOutput {
            key_id: key.id.clone(),
            key_version: 1,
            state: state_now,
            material_expires_at: valid_to.map(rfc3339),
        })
    }
}

/// The PKCS#8 of bundle `bundle` if it is a private key of `spec` and the bundle's
/// certificate (if any) is of it; for EC keys also the public point (computed from the
/// private key). Opened off the request workers: the key derivations are deliberately slow.
async fn open_bundle(
    bundle: &Base64,
    password: &Password,
    spec: crate::algorithms::KeySpec,
    slot: tokio::sync::OwnedSemaphorePermit,
) -> Result<(zeroize::Zeroizing<Vec<u8>>, Option<Vec<u8>>)> {
    let der = bundle.0.clone();
    let password = zeroize::Zeroizing::new(password.expose().to_owned());
    tokio::task::spawn_blocking(move || {
        let _slot = slot;
        let opened = pkcs12::decode(&der, &password)?;
        let (found, parts) = pkcs12::private_key_public(&opened.private_key)?;
        if found != spec {
            return Err(Error::IncorrectKeyMaterial(format!(
                "the bundle holds a {} key; this key is {}",
                found.as_str(),
                spec.as_str()
            )));
        }
        if let Some(cert) = &opened.certificate {
            if !pkcs12::certificate_matches("pkcs12 certificate", cert, spec, &parts)? {
                return Err(Error::IncorrectKeyMaterial(
                    "the bundle's certificate is not of its private key".into(),
                ));
            }
        }
        let point = match parts {
            PublicParts::Ec(point) => Some(point),
            PublicParts::Rsa { .. } | PublicParts::Dh(_) => None,
        };
        Ok((opened.private_key, point))
    })
    .await
    .map_err(|_| Error::Internal)?
}
