//! `list-keys`: the caller's tenant's keys, a page at a time (ordered by key id; `next_token`
//! continues after the last id returned). Cedar: `ListKeys` on the caller's tenant.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::validate::validate_key_id;
use super::views::KeyMetadata;
use super::{OpContext, Operation, WriteScope};
use crate::authz::ResourceRef;
use crate::error::{Error, Result};
use crate::store::keys;

const MAX_LIMIT: i64 = 1000;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListKeys {
    #[serde(default = "default_limit")]
    pub limit: i64,
    pub next_token: Option<String>,
}

fn default_limit() -> i64 {
    100
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct ListKeysOutput {
    pub keys: Vec<KeyMetadata>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_token: Option<String>,
}

fn decode_token(t: &str) -> Result<String> {
    let bad = || Error::InvalidMarker("next_token is not a token this operation returned".into());
    let raw = URL_SAFE_NO_PAD.decode(t).map_err(|_| bad())?;
    let id = String::from_utf8(raw).map_err(|_| bad())?;
    validate_key_id(&id).map_err(|_| bad())?;
    Ok(id)
}

impl Operation for ListKeys {
    const NAME: &'static str = "list-keys";
    const ACTION: &'static str = "ListKeys";
    type Output = ListKeysOutput;

    fn validate(&self) -> Result<()> {
        if !(1..=MAX_LIMIT).contains(&self.limit) {
            return Err(Error::validation(format!(
                "limit must be between 1 and {MAX_LIMIT}"
            )));
        }
        if let Some(t) = &self.next_token {
            decode_token(t)?;
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
        let after = self.next_token.as_deref().map(decode_token).transpose()?;
        let pool = &ctx.state.db;
        let rows = keys::list(
            pool,
            &ctx.principal.tenant_id,
            after.as_deref(),
            self.limit + 1,
        )
        .await?;
        let more = rows.len() as i64 > self.limit;
        let mut out = Vec::new();
        for row in rows.iter().take(self.limit as usize) {
            let grants = keys::grantees(pool, &row.id).await?;
            out.push(KeyMetadata::new(row, grants, None));
        }
        let next_token = if more {
            out.last()
                .map(|k| URL_SAFE_NO_PAD.encode(k.key_id.as_bytes()))
        } else {
            None
        };
        Ok(ListKeysOutput {
            keys: out,
            next_token,
        })
    }
}
