//! `create-access-key`, `list-access-keys`, `delete-access-key`: AWS-style access keys, with
//! which a principal signs requests to the AWS fronts (Signature Version 4). Cedar:
//! `CreateAccessKey`, `ListAccessKeys` and `DeleteAccessKey` on the `User` whose keys they
//! are (the caller's own, unless another principal is named).
//!
//! The secret is shown once, in `create-access-key`'s output. Unlike a bearer token it cannot
//! be kept as a hash (checking a signature needs the secret itself), so it is stored sealed by
//! the HSM's root key with the access key id as AAD, and opened only to derive a signing key.
//! A principal has at most [`MAX_PER_PRINCIPAL`] (as AWS IAM users), so one can be rotated
//! while the other still works.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::validate::validate_access_key_id;
use super::{OpContext, Operation, SecretText, WriteScope};
use crate::authn::Principal;
use crate::authz::ResourceRef;
use crate::error::{Error, Result};
use crate::store::access_keys::{self, secret_aad, AccessKeyRow};
use crate::store::principals;

/// Most access keys one principal has at a time.
pub const MAX_PER_PRINCIPAL: i64 = 2;

/// The principal named by `principal_id`, or the caller.
async fn principal_named(ctx: &OpContext<'_>, principal_id: Option<&str>) -> Result<ResourceRef> {
    let p = match principal_id {
        None => ctx.principal.clone(),
        Some(id) => principals::get(&ctx.state.db, id)
            .await?
            .ok_or_else(|| Error::NotFound {
                kind: "principal",
                id: id.to_string(),
            })?,
    };
    Ok(ResourceRef::User(Box::new(p)))
}

fn owner(resource: &ResourceRef) -> Result<&Principal> {
    match resource {
        ResourceRef::User(p) => Ok(p),
        _ => Err(Error::Internal),
    }
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAccessKey {
    /// Whose key (default: the caller).
    pub principal_id: Option<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct CreateAccessKeyOutput {
    pub access_key_id: String,
    /// Shown only in this answer.
    pub secret_access_key: SecretText,
    pub principal_id: String,
    pub created_at: String,
}

/// AWS's shape for access key ids: `AKIA` and 16 characters of base32 (upper case).
fn access_key_id(random: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut id = String::from("AKIA");
    id.extend(
        random
            .iter()
            .take(16)
            .map(|b| ALPHABET[(b & 31) as usize] as char),
    );
    id
}

impl Operation for CreateAccessKey {
    const NAME: &'static str = "create-access-key";
    const ACTION: &'static str = "CreateAccessKey";
    type Output = CreateAccessKeyOutput;

    async fn resolve(&self, ctx: &OpContext<'_>) -> Result<ResourceRef> {
        principal_named(ctx, self.principal_id.as_deref()).await
    }

    async fn execute(
        self,
        ctx: &OpContext<'_>,
        resource: ResourceRef,
        scope: &mut WriteScope,
    ) -> Result<Self::Output> {
        let principal = owner(&resource)?;
        let random = ctx.state.keyring.random(16 + 30).await?;
        let id = access_key_id(&random[..16]);
        // 40 characters of base64, as AWS secrets are.
        let secret = Zeroizing::new(STANDARD.encode(&random[16..]));
        let sealed = ctx
            .state
            .keyring
            .seal_with_root(&secret_aad(&id), secret.as_bytes())
            .await?;
        let row = AccessKeyRow {
            id,
            principal_id: principal.id.clone(),
            secret_sealed: sealed,
            created_at: ctx.state.clock.now_rfc3339(),
            created_by: ctx.principal.id.clone(),
        };
        let conn = scope.conn(ctx.state).await?;
        if access_keys::count(conn, &principal.id).await? >= MAX_PER_PRINCIPAL {
            return Err(Error::InvalidState(format!(
                "principal {} already has {MAX_PER_PRINCIPAL} access keys; delete one first",
                principal.id
            )));
        }
        access_keys::insert(conn, &row).await?;
        ctx.name_in_audit(format!("access-key:{}", row.id));
        Ok(CreateAccessKeyOutput {
            access_key_id: row.id,
            secret_access_key: SecretText::new(secret.to_string()),
            principal_id: row.principal_id,
            created_at: row.created_at,
        })
    }
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListAccessKeys {
    /// Whose keys (default: the caller's).
    pub principal_id: Option<String>,
}

/// An access key as outputs show it (never its secret).
#[derive(Debug, Serialize, JsonSchema)]
pub struct AccessKeyInfo {
    pub access_key_id: String,
    pub principal_id: String,
    pub created_at: String,
    pub created_by: String,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct ListAccessKeysOutput {
    pub access_keys: Vec<AccessKeyInfo>,
}

impl Operation for ListAccessKeys {
    const NAME: &'static str = "list-access-keys";
    const ACTION: &'static str = "ListAccessKeys";
    type Output = ListAccessKeysOutput;

    async fn resolve(&self, ctx: &OpContext<'_>) -> Result<ResourceRef> {
        principal_named(ctx, self.principal_id.as_deref()).await
    }

    async fn execute(
        self,
        ctx: &OpContext<'_>,
        resource: ResourceRef,
        _scope: &mut WriteScope,
    ) -> Result<Self::Output> {
        let principal = owner(&resource)?;
        let rows = access_keys::of_principal(&ctx.state.db, &principal.id).await?;
        Ok(ListAccessKeysOutput {
            access_keys: rows
                .into_iter()
                .map(|r| AccessKeyInfo {
                    access_key_id: r.id,
                    principal_id: r.principal_id,
                    created_at: r.created_at,
                    created_by: r.created_by,
                })
                .collect(),
        })
    }
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeleteAccessKey {
    pub access_key_id: String,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct DeleteAccessKeyOutput {
    pub access_key_id: String,
    pub deleted: bool,
}

impl Operation for DeleteAccessKey {
    const NAME: &'static str = "delete-access-key";
    const ACTION: &'static str = "DeleteAccessKey";
    type Output = DeleteAccessKeyOutput;

    fn validate(&self) -> Result<()> {
        validate_access_key_id(&self.access_key_id)
    }

    fn unseen(&self) -> Option<Error> {
        Some(Error::NotFound {
            kind: "access key",
            id: self.access_key_id.clone(),
        })
    }

    /// The owner and the access key, so that the trail says which of its keys went.
    fn audit_resource(&self, resource: &ResourceRef) -> String {
        format!("{} access-key:{}", resource.display(), self.access_key_id)
    }

    async fn resolve(&self, ctx: &OpContext<'_>) -> Result<ResourceRef> {
        let not_found = || Error::NotFound {
            kind: "access key",
            id: self.access_key_id.clone(),
        };
        let pool = &ctx.state.db;
        let key = access_keys::get(pool, &self.access_key_id)
            .await?
            .ok_or_else(not_found)?;
        principal_named(ctx, Some(&key.principal_id)).await
    }

    async fn execute(
        self,
        ctx: &OpContext<'_>,
        _resource: ResourceRef,
        scope: &mut WriteScope,
    ) -> Result<Self::Output> {
        let conn = scope.conn(ctx.state).await?;
        if !access_keys::delete(conn, &self.access_key_id).await? {
            return Err(Error::NotFound {
                kind: "access key",
                id: self.access_key_id,
            });
        }
        Ok(DeleteAccessKeyOutput {
            access_key_id: self.access_key_id,
            deleted: true,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_key_ids_look_like_aws_ones() {
        let id = access_key_id(&[0xff; 16]);
        assert_eq!(id.len(), 20);
        assert!(id.starts_with("AKIA"));
        assert!(validate_access_key_id(&id).is_ok());
    }
}
