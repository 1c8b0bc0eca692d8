//! Aliases: tenant-scoped names (`alias/...`) for keys, accepted wherever a key id is.
//! `create-alias` is authorized on the key the alias will name (Cedar: `CreateAlias`),
//! `update-alias` on that key and on the key it names now (`UpdateAlias` on both: moving an
//! alias away from a key changes what that key's users reach through it), `delete-alias` on
//! the key it names now (`DeleteAlias`), `list-aliases` on the caller's tenant
//! (`ListAliases`). Changing or deleting an alias is a compare-and-set against the key it
//! named when the request was authorized: one moved meanwhile is refused (409). An alias
//! moves only to a key of the same kind and usage (see [`check_same_kind`]).

use crate::model::KeyState;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::checks::changed_meanwhile;
use super::resolve::{key_row, resolve_key};
use super::validate::{validate_alias, validate_key_id, ALIAS_PREFIX};
use super::{OpContext, Operation, WriteScope};
use crate::algorithms::KeyUsage;
use crate::authz::ResourceRef;
use crate::crypto::context::EncryptionContext;
use crate::error::{Error, Result};
use crate::store::aliases::{self, AliasRow};
use crate::store::keys::{self, KeyRow};

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AliasTarget {
    pub alias_name: String,
    pub target_key_id: String,
}

impl AliasTarget {
    fn validate(&self) -> Result<()> {
        validate_alias(&self.alias_name)?;
        validate_key_id(&self.target_key_id)?;
        if self.target_key_id.starts_with(ALIAS_PREFIX) {
            return Err(Error::validation(
                "target_key_id must be a key id, not an alias",
            ));
        }
        Ok(())
    }
}

fn live_target(r: &ResourceRef) -> Result<&crate::store::keys::KeyRow> {
    let key = key_row(r)?;
    if key.state == KeyState::Destroyed {
        return Err(Error::KeyDestroyed {
            what: format!("key {}", key.id),
        });
    }
    Ok(key)
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct CreateAlias(pub AliasTarget);

impl Operation for CreateAlias {
    const NAME: &'static str = "create-alias";
    const ACTION: &'static str = "CreateAlias";
    type Output = AliasRow;

    fn validate(&self) -> Result<()> {
        self.0.validate()
    }

    async fn resolve(&self, ctx: &OpContext<'_>) -> Result<ResourceRef> {
        resolve_key(ctx, &self.0.target_key_id).await
    }

    async fn execute(
        self,
        ctx: &OpContext<'_>,
        r: ResourceRef,
        scope: &mut WriteScope,
    ) -> Result<Self::Output> {
        let key = live_target(&r)?;
        let now = ctx.state.clock.now_rfc3339();
        let row = AliasRow {
            tenant_id: key.tenant_id.clone(),
            name: self.0.alias_name,
            key_id: key.id.clone(),
            created_at: now.clone(),
            updated_at: now,
        };
        let conn = scope.conn(ctx.state).await?;
        if !keys::hold_state(conn, &key.id, key.state).await? {
            return Err(changed_meanwhile("key", &key.id, key.state));
        }
        aliases::insert(conn, &row).await?;
        Ok(row)
    }
}

/// An alias moves only to a key of the same kind (symmetric encryption, HMAC or asymmetric)
/// and usage, as AWS's `UpdateAlias`: code that encrypts under an alias must not find it
/// naming a signing key one day. Naming another kind of key is a delete and a create.
fn check_same_kind(alias: &str, from: &KeyRow, to: &KeyRow) -> Result<()> {
    let kind = |k: &KeyRow| {
        if k.spec.is_symmetric_encryption() {
            "symmetric"
        } else if k.usage == KeyUsage::GenerateVerifyMac {
            "HMAC"
        } else {
            "asymmetric"
        }
    };
    if (kind(from), from.usage) == (kind(to), to.usage) {
        return Ok(());
    }
    Err(Error::validation(format!(
        "alias {alias} names a {} {} key and can move only to a key of the same kind and usage, not a {} {} key: delete the alias and create it again to name another kind of key",
        kind(from),
        from.usage.as_str(),
        kind(to),
        to.usage.as_str()
    )))
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct UpdateAlias(pub AliasTarget);

impl Operation for UpdateAlias {
    const NAME: &'static str = "update-alias";
    const ACTION: &'static str = "UpdateAlias";
    type Output = AliasRow;

    fn validate(&self) -> Result<()> {
        self.0.validate()
    }

    async fn resolve(&self, ctx: &OpContext<'_>) -> Result<ResourceRef> {
        resolve_key(ctx, &self.0.target_key_id).await
    }

    async fn execute(
        self,
        ctx: &OpContext<'_>,
        r: ResourceRef,
        scope: &mut WriteScope,
    ) -> Result<Self::Output> {
        let key = live_target(&r)?;
        let existing = aliases::get(&ctx.state.db, &key.tenant_id, &self.0.alias_name)
            .await?
            .ok_or_else(|| Error::NotFound {
                kind: "alias",
                id: self.0.alias_name.clone(),
            })?;
        if existing.key_id != key.id {
            let current = resolve_key(ctx, &existing.key_id).await?;
            ctx.authorize(Self::ACTION, &current, &EncryptionContext::new())?;
            check_same_kind(&existing.name, key_row(&current)?, key)?;
        }
        let now = ctx.state.clock.now_rfc3339();
        let conn = scope.conn(ctx.state).await?;
        if !keys::hold_state(conn, &key.id, key.state).await? {
            return Err(changed_meanwhile("key", &key.id, key.state));
        }
        // Only if it still names the key authorized above.
        if !aliases::retarget(
            conn,
            &key.tenant_id,
            &existing.name,
            &existing.key_id,
            &key.id,
            &now,
        )
        .await?
        {
            return Err(Error::InvalidState(format!(
                "alias {} changed while this request ran; read it again and retry",
                existing.name
            )));
        }
        Ok(AliasRow {
            key_id: key.id.clone(),
            updated_at: now,
            ..existing
        })
    }
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeleteAlias {
    pub alias_name: String,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct DeleteAliasOutput {
    pub alias_name: String,
    pub deleted: bool,
}

impl Operation for DeleteAlias {
    const NAME: &'static str = "delete-alias";
    const ACTION: &'static str = "DeleteAlias";
    type Output = DeleteAliasOutput;

    fn validate(&self) -> Result<()> {
        validate_alias(&self.alias_name)
    }

    async fn resolve(&self, ctx: &OpContext<'_>) -> Result<ResourceRef> {
        resolve_key(ctx, &self.alias_name).await
    }

    async fn execute(
        self,
        ctx: &OpContext<'_>,
        r: ResourceRef,
        scope: &mut WriteScope,
    ) -> Result<Self::Output> {
        let key = key_row(&r)?;
        crate::pause::point("delete-alias:resolved", &key.id).await;
        let conn = scope.conn(ctx.state).await?;
        // Only if it still names the key authorized above: an alias moved meanwhile to a key
        // the caller may not touch is not theirs to delete.
        if !aliases::delete(conn, &key.tenant_id, &self.alias_name, &key.id).await? {
            // Deleted meanwhile: as if it had not been there; moved: a conflict.
            if aliases::get(&mut *conn, &key.tenant_id, &self.alias_name)
                .await?
                .is_none()
            {
                return Err(Error::NotFound {
                    kind: "alias",
                    id: self.alias_name,
                });
            }
            return Err(Error::InvalidState(format!(
                "alias {} changed while this request ran; read it again and retry",
                self.alias_name
            )));
        }
        Ok(DeleteAliasOutput {
            alias_name: self.alias_name,
            deleted: true,
        })
    }
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListAliases {
    /// Only the aliases of this key.
    pub key_id: Option<String>,
    pub limit: Option<i64>,
    pub next_token: Option<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct ListAliasesOutput {
    pub aliases: Vec<AliasRow>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_token: Option<String>,
}

impl Operation for ListAliases {
    const NAME: &'static str = "list-aliases";
    const ACTION: &'static str = "ListAliases";
    type Output = ListAliasesOutput;

    fn validate(&self) -> Result<()> {
        if let Some(k) = &self.key_id {
            validate_key_id(k)?;
        }
        if self.limit.is_some_and(|l| !(1..=1000).contains(&l)) {
            return Err(Error::validation("limit must be 1 to 1000"));
        }
        if let Some(t) = &self.next_token {
            validate_alias(t).map_err(|_| {
                Error::InvalidMarker("next_token is not a token this operation returned".into())
            })?;
        }
        Ok(())
    }

    async fn resolve(&self, ctx: &OpContext<'_>) -> Result<ResourceRef> {
        Ok(ResourceRef::Tenant(ctx.principal.tenant_id.clone()))
    }

    async fn execute(
        self,
        ctx: &OpContext<'_>,
        _r: ResourceRef,
        _s: &mut WriteScope,
    ) -> Result<Self::Output> {
        let limit = self.limit.unwrap_or(100);
        // A key the caller may not see is a key that does not exist (AWS answers
        // NotFoundException for a KeyId that names nothing), not an empty list.
        let key_id = match &self.key_id {
            Some(k) => {
                let key = resolve_key(ctx, k).await?;
                ctx.authorize("DescribeKey", &key, &EncryptionContext::new())?;
                Some(key_row(&key)?.id.clone())
            }
            None => None,
        };
        let mut rows = aliases::list(
            &ctx.state.db,
            &ctx.principal.tenant_id,
            key_id.as_deref(),
            self.next_token.as_deref(),
            limit + 1,
        )
        .await?;
        let next_token = if rows.len() as i64 > limit {
            rows.truncate(limit as usize);
            rows.last().map(|a| a.name.clone())
        } else {
            None
        };
        Ok(ListAliasesOutput {
            aliases: rows,
            next_token,
        })
    }
}
