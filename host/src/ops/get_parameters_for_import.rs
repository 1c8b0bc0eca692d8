//! `get-parameters-for-import`: an RSA wrapping public key and a one-use import token, valid
//! for 24 hours, for importing material into an `external` key. The private half stays in
//! the HSM (non-extractable, unwrap only) and is destroyed when the token is used or expires
//! (or at once, if this request fails). A key holds at most [`MAX_TOKENS_PER_KEY`] tokens:
//! a new one replaces the oldest.
//! Cedar: `GetParametersForImport` on the key.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::key_transport::{awaiting_import, transport, wrapping_key_spec};
use super::resolve::{key_row, resolve_key};
use super::validate::validate_key_id;
use super::views::rfc3339;
use super::{Base64, OpContext, Operation, WriteScope};
use crate::algorithms::public_key::PublicParts;
use crate::algorithms::public_key::{spki_der, spki_pem};
use crate::authz::ResourceRef;
use crate::error::{Error, Result};
use crate::store::imports::{self, ImportTokenRow};

/// How long an import token (and its wrapping key) lives.
pub const IMPORT_TOKEN_SECONDS: i64 = 24 * 3600;

/// The tokens a key holds at once (each an RSA key pair in the HSM for a day).
pub const MAX_TOKENS_PER_KEY: usize = 8;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GetParametersForImport {
    pub key_id: String,
    /// `RSAES_OAEP_SHA_1` or `RSA_AES_KEY_WRAP_SHA_1`.
    pub wrapping_algorithm: String,
    /// `RSA_2048`, `RSA_3072` (default) or `RSA_4096`.
    #[serde(default = "rsa_3072")]
    pub wrapping_key_spec: String,
}

fn rsa_3072() -> String {
    "RSA_3072".into()
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct ImportParameters {
    pub key_id: String,
    pub import_token: String,
    /// SubjectPublicKeyInfo, DER (base64).
    pub public_key: Base64,
    pub public_key_pem: String,
    pub wrapping_algorithm: String,
    pub parameters_valid_to: String,
}

impl Operation for GetParametersForImport {
    const NAME: &'static str = "get-parameters-for-import";
    const ACTION: &'static str = "GetParametersForImport";
    type Output = ImportParameters;

    fn validate(&self) -> Result<()> {
        validate_key_id(&self.key_id)?;
        transport(&self.wrapping_algorithm)?;
        wrapping_key_spec(&self.wrapping_key_spec)?;
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
        let key = key_row(&r)?;
        awaiting_import(ctx.state, key).await?;
        let spec = wrapping_key_spec(&self.wrapping_key_spec)?;
        let bits = spec.rsa_bits().ok_or(Error::Internal)?;
        // The token's id is a UUID v7 (the wrapping key's secret half stays in the HSM),
        // carrying its creation time for garbage collection.
        let (id, created, n, e) = ctx.state.keyring.new_import_key_pair(bits).await?;
        let object_id = created.hsm_object_id.clone().ok_or(Error::Internal)?;
        scope.created(created);
        let now = ctx.state.clock.now();
        let row = ImportTokenRow {
            id: id.clone(),
            tenant_id: key.tenant_id.clone(),
            key_id: key.id.clone(),
            wrapping_algorithm: self.wrapping_algorithm.clone(),
            wrapping_key_spec: self.wrapping_key_spec.clone(),
            hsm_object_id: object_id.clone(),
            created_at: now,
            expires_at: now + IMPORT_TOKEN_SECONDS,
        };
        let der = spki_der(
            spec,
            &PublicParts::Rsa {
                modulus: n,
                exponent: e,
            },
        )?;
        let pem = spki_pem(&der)?;
        crate::pause::point("key-settings:resolved", &key.id).await;
        let conn = scope.conn(ctx.state).await?;
        // No token for a key that left pending-import (its deletion was scheduled) while the
        // wrapping key was made: the pair is destroyed with the request's rollback.
        if !crate::store::keys::hold_state(conn, &key.id, key.state).await? {
            return Err(super::checks::changed_meanwhile("key", &key.id, key.state));
        }
        // Each token holds an RSA key pair in the token every tenant shares, for a day: a
        // key keeps only its newest few, so asking again and again cannot fill the token.
        // The oldest go (as if expired) once this one commits; a client that asks anew uses
        // the newest, and one that lost its parameters is never locked out for a day.
        let outstanding = imports::tokens_of_key(conn, &key.id).await?;
        let evicted = outstanding.len().saturating_sub(MAX_TOKENS_PER_KEY - 1);
        for old in &outstanding[..evicted] {
            imports::delete_token(conn, &old.id).await?;
        }
        imports::insert_token(conn, &row).await?;
        for old in &outstanding[..evicted] {
            scope.discard_import_key_after_commit(old.hsm_object_id.clone());
        }
        ctx.name_in_audit(match evicted {
            0 => format!("import-token:{id}"),
            _ => format!(
                "import-token:{id} replacing {}",
                outstanding[..evicted]
                    .iter()
                    .map(|t| format!("import-token:{}", t.id))
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
        });
        Ok(ImportParameters {
            key_id: key.id.clone(),
            import_token: id,
            public_key: Base64::new(der),
            public_key_pem: pem,
            wrapping_algorithm: self.wrapping_algorithm,
            parameters_valid_to: rfc3339(row.expires_at),
        })
    }
}
