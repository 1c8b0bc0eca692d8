//! `update-key-description`: replace a key's description. Cedar: `UpdateKeyDescription` on the
//! key.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::resolve::{key_row, resolve_key};
use super::validate::{validate_description, validate_key_id};
use super::{OpContext, Operation, WriteScope};
use crate::authz::ResourceRef;
use crate::error::Result;
use crate::store::keys;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateKeyDescription {
    pub key_id: String,
    pub description: String,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct UpdateKeyDescriptionOutput {
    pub key_id: String,
    pub description: String,
}

impl Operation for UpdateKeyDescription {
    const NAME: &'static str = "update-key-description";
    const ACTION: &'static str = "UpdateKeyDescription";
    type Output = UpdateKeyDescriptionOutput;

    fn validate(&self) -> Result<()> {
        validate_key_id(&self.key_id)?;
        validate_description(&self.description)
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
        super::key_tags::refuse_if_destroyed(key)?;
        crate::pause::point("key-settings:resolved", &key.id).await;
        let conn = scope.conn(ctx.state).await?;
        if !keys::set_description(conn, &key.id, key.state, &self.description).await? {
            return Err(super::checks::changed_meanwhile("key", &key.id, key.state));
        }
        Ok(UpdateKeyDescriptionOutput {
            key_id: key.id.clone(),
            description: self.description,
        })
    }
}
