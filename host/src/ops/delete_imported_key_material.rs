//! `delete-imported-key-material`: delete the material imported into a key of origin
//! `external` now (AWS's `DeleteImportedKeyMaterial`); the key waits in `pending-import` for
//! the same material again, and what was encrypted under it opens once it is back. Cedar:
//! `DeleteImportedKeyMaterial` on the key.
//!
//! As an expiry (see `scheduler`), the change to `expiring` is committed (and recorded) before
//! any material is deleted, so a crash in between leaves an expiring key that the scheduler
//! finishes, never a usable key whose material is gone.
//!
//! One deletion of a key's material at a time, cluster-wide: whoever begins it (this
//! operation, or the scheduler's expiry) first claims the key's material ([`claim`], a lease
//! in the database), and another request finds it claimed (409). Without the claim a second
//! deletion that began while the first ran could still be shredding when the first had
//! finished and new material had been imported, and destroy that (shredding names a
//! version's HSM objects by label, which a re-import reuses). A claim left by a crash, or by
//! a failure after the deletion's last transaction opened, expires after [`CLAIM_SECS`]; the
//! scheduler then finishes the deletion. The claim is not renewed: a deletion is one pass
//! over the key's versions (for imported material, one), far shorter than that.

use crate::model::KeyState;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::key_deletion::shred_material;
use super::resolve::{key_row, resolve_key};
use super::validate::validate_key_id;
use super::{event, OpContext, Operation, WriteScope};
use crate::authz::ResourceRef;
use crate::error::{Error, Result};
use crate::state::AppState;
use crate::store::{imports, leases, Tx};

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
        let holder = format!("request-{}", ctx.meta.request_id);
        {
            let mut tx = ctx.state.db.begin().await?;
            if !claim(&mut tx, &key.id, &holder, ctx.state.clock.now()).await? {
                return Err(Error::InvalidState(format!(
                    "the imported material of key {} is being deleted by another request; try again later",
                    key.id
                )));
            }
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
        crate::pause::point("delete-material:begun", &key.id).await;
        if let Err(e) = shred_material(ctx.state, key).await {
            // The key stays expiring (the scheduler finishes it); the claim is given up now
            // rather than when it expires, so that a retry need not wait. (Only here, before
            // this request's transaction opens: on SQLite, with it open, another transaction
            // would wait for it. A failure after, or of the commit, leaves the claim to expire.)
            release_now(ctx.state, &key.id, &holder).await;
            // Past its first commit the deletion has begun: a plugin call refused for the
            // tenant's plugin budget is not answered as a refusal that did nothing (`Throttled`
            // is answered 429 and not audited on its own), which a client would retry only to
            // be told the key is expiring.
            return Err(match e {
                Error::Throttled { .. } => Error::InvalidState(format!(
                    "the deletion of key {}'s imported material has begun, but its storage backend is too busy to finish it now; the scheduler finishes it",
                    key.id
                )),
                e => e,
            });
        }
        let now = ctx.state.clock.now_rfc3339();
        let conn = scope.conn(ctx.state).await?;
        if !imports::clear_material(conn, &key.id, &now, "imported material deleted").await? {
            return Err(Error::InvalidState(format!(
                "key {} stopped expiring while its material was deleted",
                key.id
            )));
        }
        // Given up with the change it guarded.
        release(conn, &key.id, &holder).await?;
        Ok(DeleteImportedKeyMaterialOutput {
            key_id: key.id.clone(),
            state: KeyState::PendingImport,
        })
    }
}

/// How long a claim on a key's material holds if its holder never gives it up (a crash).
pub const CLAIM_SECS: i64 = 600;

fn claim_name(key_id: &str) -> String {
    format!("material:{key_id}")
}

/// Claim the deletion of `key_id`'s material for `holder` (see the module doc): false if
/// another holder has it.
pub async fn claim(tx: &mut Tx, key_id: &str, holder: &str, now: i64) -> Result<bool> {
    leases::acquire(tx, &claim_name(key_id), holder, now, now + CLAIM_SECS).await
}

/// Give up a claim, in the transaction that finishes the deletion.
pub async fn release(tx: &mut Tx, key_id: &str, holder: &str) -> Result<()> {
    leases::release(tx, &claim_name(key_id), holder).await
}

/// Give up a claim after a failure (in a transaction of its own, so never while the caller
/// holds one open: on SQLite it would wait for it; if this fails too, the claim expires).
pub async fn release_now(state: &AppState, key_id: &str, holder: &str) {
    let released = async {
        let mut tx = state.db.begin().await?;
        release(&mut tx, key_id, holder).await?;
        tx.commit().await
    }
    .await;
    if let Err(e) = released {
        tracing::warn!(key = %key_id, error = %e, "claim on imported material not given up; it expires");
    }
}
