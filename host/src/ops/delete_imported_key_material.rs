//! `delete-imported-key-material`: delete the material imported into a key of origin
//! `external` now (AWS's `DeleteImportedKeyMaterial`); the key waits in `pending-import` for
//! the same material again, and what was encrypted under it opens once it is back. Cedar:
//! `DeleteImportedKeyMaterial` on the key.
//!
//! As an expiry (see `scheduler`), the change to `expiring` is committed (and recorded) before
//! any material is deleted, so a crash in between leaves an expiring key that the scheduler
//! finishes, never a usable key whose material is gone.

use crate::model::KeyState;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::key_deletion::shred_material;
use super::resolve::{key_row, resolve_key};
use super::validate::validate_key_id;
use super::{event, OpContext, Operation, WriteScope};
use crate::authz::ResourceRef;
use crate::error::{Error, Result};
use crate::store::imports;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeleteImportedKeyMaterial {
    pub key_id: String,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct DeleteImportedKeyMaterialOutput {
    pub key_id: String,
    pub state: KeyState,
}

impl Operation for DeleteImportedKeyMaterial {
    const NAME: &'static str = "delete-imported-key-material";
    const ACTION: &'static str = "DeleteImportedKeyMaterial";
    type Output = DeleteImportedKeyMaterialOutput;

    fn validate(&self) -> Result<()> {
        validate_key_id(&self.key_id)
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
        let material = imports::material(&ctx.state.db, &key.id).await?;
        if material.is_none_or(|m| m.origin != imports::ORIGIN_EXTERNAL) {
            return Err(Error::Unsupported(format!(
                "key {} holds no imported material: its material was made by keyplane",
                key.id
            )));
        }
        {
            let mut tx = ctx.state.db.begin().await?;
            if !imports::begin_deletion(&mut tx, &key.id).await? {
                return Err(Error::InvalidState(format!(
                    "key {} is {}: only an enabled or disabled key has imported material to delete",
                    key.id, key.state
                )));
            }
            let begun = event(
                ctx.meta,
                Some(ctx.principal),
                "BeginDeleteImportedKeyMaterial",
            );
            crate::audit::append(
                &mut tx,
                &crate::audit::AuditEvent {
                    resource: r.display(),
                    decision: "allow",
                    ..begun
                },
            )
            .await?;
            tx.commit().await?;
        }
        shred_material(ctx.state, key).await?;
        let now = ctx.state.clock.now_rfc3339();
        let conn = scope.conn(ctx.state).await?;
        if !imports::clear_material(conn, &key.id, &now, "imported material deleted").await? {
            return Err(Error::InvalidState(format!(
                "key {} stopped expiring while its material was deleted",
                key.id
            )));
        }
        Ok(DeleteImportedKeyMaterialOutput {
            key_id: key.id.clone(),
            state: KeyState::PendingImport,
        })
    }
}
