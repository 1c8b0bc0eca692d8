//! `describe-key`: a key's metadata and versions. Cedar: `DescribeKey` on the key.

use schemars::JsonSchema;
use serde::Deserialize;

use super::resolve::{key_row, resolve_key};
use super::validate::validate_key_id;
use super::views::{rfc3339, KeyMetadata};
use super::{OpContext, Operation, WriteScope};
use crate::authz::ResourceRef;
use crate::error::{Error, Result};
use crate::store::{imports, keys};

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DescribeKey {
    pub key_id: String,
}

impl Operation for DescribeKey {
    const NAME: &'static str = "describe-key";
    const ACTION: &'static str = "DescribeKey";
    type Output = KeyMetadata;

    fn validate(&self) -> Result<()> {
        validate_key_id(&self.key_id)
    }

    async fn resolve(&self, ctx: &OpContext<'_>) -> Result<ResourceRef> {
        resolve_key(ctx, &self.key_id).await
    }

    async fn execute(
        self,
        ctx: &OpContext<'_>,
        resource: ResourceRef,
        _s: &mut WriteScope,
    ) -> Result<Self::Output> {
        let row = key_row(&resource)?;
        let versions = keys::versions(&ctx.state.db, &row.id).await?;
        let ResourceRef::Key { users, .. } = &resource else {
            return Err(Error::Internal);
        };
        let mut meta = KeyMetadata::new(row, users.clone(), Some(&versions))
            .with_pending_usage(&ctx.state.usage);
        if let Some(m) = imports::material(&ctx.state.db, &row.id).await? {
            meta.origin = Some(m.origin);
            meta.exportable = Some(m.exportable);
            meta.material_expires_at = m.material_expires_at.map(rfc3339);
        }
        Ok(meta)
    }
}
