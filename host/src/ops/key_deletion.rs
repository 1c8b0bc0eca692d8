//! Deleting keys: `schedule-key-deletion` (a pending window of 7-30 days, default 30, during
//! which every use is refused), `cancel-key-deletion` (back to disabled), and [`destroy`],
//! which the scheduler runs once the window has passed: crypto-shredding of every version's
//! HSM object and every wrapped copy in the storage backend, then the key is recorded as
//! destroyed (its ciphertexts fail with `KeyDestroyed` from then on). Cedar:
//! `ScheduleKeyDeletion` / `CancelKeyDeletion` on the key.

use serde::{Deserialize, Serialize};

use super::common::{
    blob_name, key_row, resolve_key, rfc3339, validate_key_id, version_store, STATE_DESTROYED,
    STATE_DISABLED, STATE_PENDING_DELETION,
};
use super::{OpContext, Operation, WriteScope};
use crate::authz::ResourceRef;
use crate::error::{Error, Result};
use crate::plugins::{StorageOp, StorageReply};
use crate::state::AppState;
use crate::store::keys::{self, KeyRow};
use crate::store::{aliases, plugins};

/// Shortest, longest and default pending window, in days.
pub const MIN_WINDOW_DAYS: u32 = 7;
pub const MAX_WINDOW_DAYS: u32 = 30;
pub const DEFAULT_WINDOW_DAYS: u32 = 30;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleKeyDeletion {
    pub key_id: String,
    pub pending_window_days: Option<u32>,
}

#[derive(Debug, Serialize)]
pub struct DeletionOutput {
    pub key_id: String,
    pub state: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deletion_date: Option<String>,
}

impl Operation for ScheduleKeyDeletion {
    const NAME: &'static str = "schedule-key-deletion";
    const ACTION: &'static str = "ScheduleKeyDeletion";
    type Output = DeletionOutput;

    fn validate(&self) -> Result<()> {
        validate_key_id(&self.key_id)?;
        let days = self.pending_window_days.unwrap_or(DEFAULT_WINDOW_DAYS);
        if !(MIN_WINDOW_DAYS..=MAX_WINDOW_DAYS).contains(&days) {
            return Err(Error::validation(format!(
                "pending_window_days must be {MIN_WINDOW_DAYS} to {MAX_WINDOW_DAYS}"
            )));
        }
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
        match key.state.as_str() {
            STATE_DESTROYED => {
                return Err(Error::KeyDestroyed {
                    what: format!("key {}", key.id),
                })
            }
            STATE_PENDING_DELETION => {
                return Err(Error::InvalidState(format!(
                    "key {} is already pending deletion",
                    key.id
                )))
            }
            _ => {}
        }
        let days = self.pending_window_days.unwrap_or(DEFAULT_WINDOW_DAYS);
        let when = ctx.state.clock.now() + i64::from(days) * 86_400;
        let conn = scope.conn(ctx.state).await?;
        keys::set_state(conn, &key.id, STATE_PENDING_DELETION, Some(when)).await?;
        Ok(DeletionOutput {
            key_id: key.id.clone(),
            state: STATE_PENDING_DELETION.into(),
            deletion_date: Some(rfc3339(when)),
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CancelKeyDeletion {
    pub key_id: String,
}

impl Operation for CancelKeyDeletion {
    const NAME: &'static str = "cancel-key-deletion";
    const ACTION: &'static str = "CancelKeyDeletion";
    type Output = DeletionOutput;

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
        match key.state.as_str() {
            STATE_PENDING_DELETION => {}
            STATE_DESTROYED => {
                return Err(Error::KeyDestroyed {
                    what: format!("key {}", key.id),
                })
            }
            other => {
                return Err(Error::InvalidState(format!(
                    "key {} is {other}, not pending deletion",
                    key.id
                )))
            }
        }
        keys::set_state(scope.conn(ctx.state).await?, &key.id, STATE_DISABLED, None).await?;
        Ok(DeletionOutput {
            key_id: key.id.clone(),
            state: STATE_DISABLED.into(),
            deletion_date: None,
        })
    }
}

/// Crypto-shred a key whose deletion window has passed: delete every wrapped copy from its
/// storage backend, destroy every HSM object, then (in `scope`) record the key and all its
/// versions as destroyed and drop its aliases and schedule. Each step can be retried: a
/// failure leaves the key pending deletion for the next scheduler pass.
pub async fn destroy(state: &AppState, scope: &mut WriteScope, key: &KeyRow) -> Result<()> {
    if key.state != STATE_PENDING_DELETION {
        return Err(Error::InvalidState(format!(
            "key {} is {}, not pending deletion",
            key.id, key.state
        )));
    }
    shred_material(state, key).await?;
    let (now, now_text) = (state.clock.now(), state.clock.now_rfc3339());
    let conn = scope.conn(state).await?;
    keys::mark_destroyed(conn, &key.id, now, &now_text).await?;
    aliases::delete_for_key(conn, &key.id).await?;
    plugins::delete_schedule(conn, &key.id).await?;
    Ok(())
}

/// Delete every wrapped copy of a key's versions from its storage backend and destroy its HSM
/// objects (crypto-shredding). Safe to repeat: what is already gone is skipped.
pub async fn shred_material(state: &AppState, key: &KeyRow) -> Result<()> {
    let versions = keys::versions(state.db.reader(), &key.id).await?;
    for v in &versions {
        if let Some(store) = &v.blob_store {
            let (plugin, config) = version_store(state, &key.tenant_id, store).await?;
            let op = StorageOp::Delete {
                name: blob_name(&key.id, v.version),
            };
            match state.plugins.storage(&plugin, &config, op).await? {
                StorageReply::Deleted(_) => {}
                _ => return Err(Error::Internal),
            }
        }
        state.keyring.shred_version(&key.id, v).await?;
    }
    Ok(())
}
