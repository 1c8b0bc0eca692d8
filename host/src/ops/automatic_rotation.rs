//! `enable-key-rotation`, `disable-key-rotation` and `get-key-rotation-status`: rotation of a
//! key every `rotation_period_days` (1 to 2560, default 365; the AWS front keeps AWS's
//! minimum of 90), done by the lifecycle
//! scheduler (`scheduler`) when `next_rotation_at` comes; each such version is marked
//! `automatic`. Cedar: `EnableKeyRotation`, `DisableKeyRotation`, `GetKeyRotationStatus` on
//! the key.
//!
//! This is the built-in schedule AWS clients turn on; a rotation-schedule plugin
//! (`set-rotation-schedule`) may decide on top of it, and a key rotates when either is due.
//! Imported material cannot be renewed by keyplane, so keys of origin `external` have none.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::checks::{changed_meanwhile, check_key_enabled};
use super::key_tags::refuse_if_destroyed;
use super::resolve::{key_row, resolve_key};
use super::rotate_key::refuse_unless_symmetric_encryption;
use super::validate::validate_key_id;
use super::views::rfc3339;
use super::{OpContext, Operation, WriteScope};
use crate::authz::ResourceRef;
use crate::error::{Error, Result};
use crate::model::KeyState;
use crate::store::imports;
use crate::store::keys::{self, KeyRow};

pub const MIN_PERIOD_DAYS: i64 = 1;
pub const MAX_PERIOD_DAYS: i64 = 2560;
pub const DEFAULT_PERIOD_DAYS: i64 = 365;

/// A key's automatic rotation.
#[derive(Debug, Serialize, JsonSchema)]
pub struct RotationStatus {
    pub key_id: String,
    pub rotation_enabled: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rotation_period_days: Option<i64>,
    /// RFC 3339.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_rotation_at: Option<String>,
}

/// A rotation period in days, as `enable-key-rotation` and `create-key` take it.
pub fn check_period(days: i64) -> Result<()> {
    if !(MIN_PERIOD_DAYS..=MAX_PERIOD_DAYS).contains(&days) {
        return Err(Error::validation(format!(
            "rotation_period_days must be {MIN_PERIOD_DAYS} to {MAX_PERIOD_DAYS}"
        )));
    }
    Ok(())
}

/// What `enable-key-rotation` (and `configure-key`) checks before giving `key` a rotation
/// every `days` days: an enabled key, with material keyplane can renew. Returns when it next
/// rotates.
pub(super) async fn check_rotatable(ctx: &OpContext<'_>, key: &KeyRow, days: i64) -> Result<i64> {
    check_period(days)?;
    check_key_enabled(key)?;
    check_renewable(ctx, key, "automatic rotation").await?;
    Ok(ctx.state.clock.now() + days * 86_400)
}

/// Refuse `what` (a rotation of some kind) for a key holding imported material, which
/// keyplane cannot renew.
pub(super) async fn check_renewable(ctx: &OpContext<'_>, key: &KeyRow, what: &str) -> Result<()> {
    let material = imports::material(&ctx.state.db, &key.id).await?;
    if material.is_some_and(|m| m.origin == imports::ORIGIN_EXTERNAL) {
        return Err(Error::Unsupported(format!(
            "{what} of key {}: it holds imported material, which keyplane cannot renew",
            key.id
        )));
    }
    Ok(())
}

fn status(key: &KeyRow, period: Option<(i64, i64)>) -> RotationStatus {
    RotationStatus {
        key_id: key.id.clone(),
        rotation_enabled: period.is_some(),
        rotation_period_days: period.map(|(days, _)| days),
        next_rotation_at: period.map(|(_, next)| rfc3339(next)),
    }
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EnableKeyRotation {
    pub key_id: String,
    pub rotation_period_days: Option<i64>,
    /// As `rotate-key`'s (see `rotate_key::refuse_unless_symmetric_encryption`). Set by a
    /// front, not on the wire.
    #[serde(skip)]
    pub only_symmetric_encryption: bool,
}

impl Operation for EnableKeyRotation {
    const NAME: &'static str = "enable-key-rotation";
    const ACTION: &'static str = "EnableKeyRotation";
    type Output = RotationStatus;

    fn validate(&self) -> Result<()> {
        validate_key_id(&self.key_id)?;
        check_period(self.rotation_period_days.unwrap_or(DEFAULT_PERIOD_DAYS))
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
        check_key_enabled(key)?;
        refuse_unless_symmetric_encryption(key, self.only_symmetric_encryption)?;
        let days = self.rotation_period_days.unwrap_or(DEFAULT_PERIOD_DAYS);
        let next = check_rotatable(ctx, key, days).await?;
        let conn = scope.conn(ctx.state).await?;
        if !keys::set_rotation(conn, &key.id, key.state, Some((days, next))).await? {
            return Err(changed_meanwhile("key", &key.id, key.state));
        }
        Ok(status(key, Some((days, next))))
    }
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DisableKeyRotation {
    pub key_id: String,
}

impl Operation for DisableKeyRotation {
    const NAME: &'static str = "disable-key-rotation";
    const ACTION: &'static str = "DisableKeyRotation";
    type Output = RotationStatus;

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
        refuse_if_destroyed(key)?;
        let conn = scope.conn(ctx.state).await?;
        if !keys::set_rotation(conn, &key.id, key.state, None).await? {
            return Err(changed_meanwhile("key", &key.id, key.state));
        }
        Ok(status(key, None))
    }
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GetKeyRotationStatus {
    pub key_id: String,
}

impl Operation for GetKeyRotationStatus {
    const NAME: &'static str = "get-key-rotation-status";
    const ACTION: &'static str = "GetKeyRotationStatus";
    type Output = RotationStatus;

    fn validate(&self) -> Result<()> {
        validate_key_id(&self.key_id)
    }

    async fn resolve(&self, ctx: &OpContext<'_>) -> Result<ResourceRef> {
        resolve_key(ctx, &self.key_id).await
    }

    async fn execute(
        self,
        _ctx: &OpContext<'_>,
        r: ResourceRef,
        _scope: &mut WriteScope,
    ) -> Result<Self::Output> {
        let key = key_row(&r)?;
        // A key on its way out does not rotate, and says so (as AWS does: "while a KMS key is
        // pending deletion, its key rotation status is false"); its period is kept, and shown
        // again if the deletion is cancelled.
        let period = key
            .rotation_period_days
            .zip(key.next_rotation_at)
            .filter(|_| {
                !matches!(
                    key.state,
                    KeyState::PendingDeletion | KeyState::Destroying | KeyState::Destroyed
                )
            });
        Ok(status(key, period))
    }
}
