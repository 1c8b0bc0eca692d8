//! Deleting keys: `approve-key-deletion` (a second admin, under their own credentials,
//! approves the deletion of one key by one requesting principal, for a short window, once),
//! `schedule-key-deletion` (a pending window of 7-30 days, default 30, during which every use
//! is refused; the shipped guard policy wants MFA or a recorded approval, which Cedar sees as
//! `context.approver` and this request uses up), `cancel-key-deletion` (back to disabled),
//! and, once the
//! window has passed, [`begin_destroy`] and [`destroy`], which the scheduler runs:
//! crypto-shredding of every version's HSM object and every wrapped copy in the storage
//! backend, then the key is recorded as destroyed (its ciphertexts fail with `KeyDestroyed`
//! from then on). Cedar: `ScheduleKeyDeletion` / `CancelKeyDeletion` on the key.
//!
//! Shredding goes through a committed `destroying` state: pending-deletion → destroying is a
//! compare-and-set committed (and audited) before any material is touched, so a cancel that
//! got in first wins, one that comes later is refused (`409`), and a crash during shredding
//! leaves a key that the next pass finishes destroying, never one that claims to be usable.

use crate::model::KeyState;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::checks::changed_meanwhile;
use super::resolve::{key_row, resolve_key};
use super::storage::version_store;
use super::validate::validate_key_id;
use super::views::rfc3339;
use super::{OpContext, Operation, WriteScope};
use crate::audit::{self, AuditEvent};
use crate::authn::Principal;
use crate::authz::ResourceRef;
use crate::error::{Error, Result};
use crate::plugins::{StorageOp, StorageReply};
use crate::state::AppState;
use crate::store::keys::{self, KeyRow};
use crate::store::{aliases, approvals, grants, plugins, principals};

/// Default and longest time an approval waits to be used, in seconds.
pub const DEFAULT_APPROVAL_SECONDS: i64 = 3600;
pub const MAX_APPROVAL_SECONDS: i64 = 86_400;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApproveKeyDeletion {
    pub key_id: String,
    /// The principal id that will ask for the deletion.
    pub requester: String,
    /// How long the approval waits to be used (60 to 86400 seconds, default 3600).
    pub window_seconds: Option<i64>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct ApprovalOutput {
    pub approval_id: String,
    pub key_id: String,
    pub requester: String,
    pub approver: String,
    pub expires_at: String,
}

impl Operation for ApproveKeyDeletion {
    const NAME: &'static str = "approve-key-deletion";
    const ACTION: &'static str = "ApproveKeyDeletion";
    type Output = ApprovalOutput;

    fn validate(&self) -> Result<()> {
        validate_key_id(&self.key_id)?;
        validate_principal_id(&self.requester)?;
        let window = self.window_seconds.unwrap_or(DEFAULT_APPROVAL_SECONDS);
        if !(60..=MAX_APPROVAL_SECONDS).contains(&window) {
            return Err(Error::validation(format!(
                "window_seconds must be 60 to {MAX_APPROVAL_SECONDS}"
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
        if self.requester == ctx.principal.id {
            return Err(Error::validation(
                "a principal cannot approve its own deletion request; another admin approves it",
            ));
        }
        let requester = principals::get(&ctx.state.db, &self.requester)
            .await?
            .filter(|p| p.tenant_id == key.tenant_id)
            .ok_or_else(|| Error::NotFound {
                kind: "principal",
                id: self.requester.clone(),
            })?;
        refuse_if_deleted(key)?;
        let now = ctx.state.clock.now();
        let row = approvals::ApprovalRow {
            id: format!("apr-{}", uuid::Uuid::new_v4().simple()),
            tenant_id: key.tenant_id.clone(),
            key_id: key.id.clone(),
            requester_id: requester.id,
            approver_id: ctx.principal.id.clone(),
            created_at: now,
            expires_at: now + self.window_seconds.unwrap_or(DEFAULT_APPROVAL_SECONDS),
            used_at: None,
        };
        approvals::insert(scope.conn(ctx.state).await?, &row).await?;
        Ok(ApprovalOutput {
            approval_id: row.id,
            key_id: row.key_id,
            requester: row.requester_id,
            approver: row.approver_id,
            expires_at: rfc3339(row.expires_at),
        })
    }
}

/// Principal ids: `p-` and hex.
fn validate_principal_id(id: &str) -> Result<()> {
    let ok = id.len() <= 64
        && id
            .strip_prefix("p-")
            .is_some_and(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_alphanumeric()));
    if ok {
        Ok(())
    } else {
        Err(Error::validation(
            "requester must be a principal id (p-...)",
        ))
    }
}

/// Shortest, longest and default pending window, in days.
pub const MIN_WINDOW_DAYS: u32 = 7;
pub const MAX_WINDOW_DAYS: u32 = 30;
pub const DEFAULT_WINDOW_DAYS: u32 = 30;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleKeyDeletion {
    pub key_id: String,
    pub pending_window_days: Option<u32>,
    /// The approval Cedar was shown as `context.approver` (see [`Operation::approver`]),
    /// used up if the deletion is scheduled.
    #[serde(skip)]
    approval: std::sync::OnceLock<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct DeletionOutput {
    pub key_id: String,
    pub state: KeyState,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deletion_date: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pending_window_days: Option<u32>,
}

impl ScheduleKeyDeletion {
    pub fn new(key_id: String, pending_window_days: Option<u32>) -> Self {
        ScheduleKeyDeletion {
            key_id,
            pending_window_days,
            approval: Default::default(),
        }
    }
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

    /// The admin who approved this deletion for this caller, if an approval waits unused.
    async fn approver(&self, ctx: &OpContext<'_>, r: &ResourceRef) -> Result<Option<Principal>> {
        let key = key_row(r)?;
        let pool = &ctx.state.db;
        let now = ctx.state.clock.now();
        let Some(a) = approvals::valid(pool, &key.id, &ctx.principal.id, now).await? else {
            return Ok(None);
        };
        let approver = principals::get(pool, &a.approver_id).await?;
        if approver.is_some() {
            let _ = self.approval.set(a.id);
        }
        Ok(approver)
    }

    async fn execute(
        self,
        ctx: &OpContext<'_>,
        r: ResourceRef,
        scope: &mut WriteScope,
    ) -> Result<Self::Output> {
        let key = key_row(&r)?;
        refuse_if_deleted(key)?;
        if key.state == KeyState::Expiring {
            return Err(Error::InvalidState(format!(
                "key {} is expiring: its imported material is being deleted; schedule its deletion once it is pending import",
                key.id
            )));
        }
        if key.deletion_protection {
            return Err(Error::InvalidState(format!(
                "key {} has deletion protection on; set-deletion-protection with enabled false first",
                key.id
            )));
        }
        let days = self.pending_window_days.unwrap_or(DEFAULT_WINDOW_DAYS);
        let now = ctx.state.clock.now();
        let when = now + i64::from(days) * 86_400;
        let conn = scope.conn(ctx.state).await?;
        if let Some(id) = self.approval.get() {
            if !approvals::consume(conn, id, now).await? {
                return Err(Error::InvalidState(format!(
                    "the approval {id} was used or expired while this request ran; ask for another"
                )));
            }
        }
        if !keys::set_state(
            conn,
            &key.id,
            key.state,
            KeyState::PendingDeletion,
            Some(when),
        )
        .await?
        {
            return Err(changed_meanwhile("key", &key.id, key.state));
        }
        // Protection turned on after this request read the key: the write lock this
        // transaction now holds makes the re-read final.
        if keys::deletion_protected(conn, &key.id).await? {
            return Err(changed_meanwhile(
                "key",
                &key.id,
                "deletion_protection false",
            ));
        }
        Ok(DeletionOutput {
            key_id: key.id.clone(),
            state: KeyState::PendingDeletion,
            deletion_date: Some(rfc3339(when)),
            pending_window_days: Some(days),
        })
    }
}

#[derive(Debug, Deserialize, JsonSchema)]
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
        match key.state {
            KeyState::PendingDeletion => {}
            KeyState::Destroyed => {
                return Err(Error::KeyDestroyed {
                    what: format!("key {}", key.id),
                })
            }
            KeyState::Destroying => {
                return Err(Error::InvalidState(format!(
                    "key {} is being destroyed: its deletion window has passed and its material is being shredded; it can no longer be cancelled",
                    key.id
                )))
            }
            other => {
                return Err(Error::InvalidState(format!(
                    "key {} is {other}, not pending deletion",
                    key.id
                )))
            }
        }
        // A key comes back disabled, as AWS's does; one whose material was never imported (no
        // version yet) or was deleted (its version has none, whatever its state: a revoked
        // one stays compromised) comes back awaiting import: disabled, it could be enabled
        // with no material, and import takes only a key pending import.
        let primary = keys::version(&ctx.state.db, &key.id, key.primary_version).await?;
        let back_to = if primary.is_none_or(|v| v.cluster_wide().is_none()) {
            KeyState::PendingImport
        } else {
            KeyState::Disabled
        };
        let conn = scope.conn(ctx.state).await?;
        if !keys::set_state(conn, &key.id, KeyState::PendingDeletion, back_to, None).await? {
            // Most likely the scheduler began destroying it meanwhile.
            let now = keys::get(&ctx.state.db, &key.id).await?;
            return Err(match now.as_ref().map(|k| k.state) {
                Some(KeyState::Destroying) | Some(KeyState::Destroyed) => Error::InvalidState(format!(
                    "key {} is being destroyed: its deletion window passed while this request ran; it can no longer be cancelled",
                    key.id
                )),
                _ => changed_meanwhile("key", &key.id, KeyState::PendingDeletion),
            });
        }
        Ok(DeletionOutput {
            key_id: key.id.clone(),
            state: back_to,
            deletion_date: None,
            pending_window_days: None,
        })
    }
}

/// Begin destroying a key whose deletion window has passed: pending-deletion → destroying,
/// committed with `ev` (its audit record) before anything is shredded. Fails with a conflict
/// if the key left pending-deletion meanwhile (a cancel got in first).
pub async fn begin_destroy(state: &AppState, key: &KeyRow, ev: &AuditEvent) -> Result<()> {
    let mut tx = state.db.begin().await?;
    if !keys::begin_destroying(&mut tx, &key.id, state.clock.now()).await? {
        return Err(changed_meanwhile("key", &key.id, key.state));
    }
    audit::append(&mut tx, ev).await?;
    tx.commit().await?;
    Ok(())
}

/// Crypto-shred a key that is being destroyed (see [`begin_destroy`]): delete every wrapped
/// copy from its storage backend, destroy every HSM object, then (in `scope`) record the key
/// and all its versions as destroyed and drop its aliases, grants and schedule. Each step can be
/// retried: a failure (or a crash) leaves the key destroying, and the next scheduler pass
/// runs this again.
pub async fn destroy(state: &AppState, scope: &mut WriteScope, key: &KeyRow) -> Result<()> {
    if key.state != KeyState::Destroying {
        return Err(Error::InvalidState(format!(
            "key {} is {}, not being destroyed",
            key.id, key.state
        )));
    }
    crate::pause::point("destroy:shredding", &key.id).await;
    shred_material(state, key).await?;
    let (now, now_text) = (state.clock.now(), state.clock.now_rfc3339());
    let conn = scope.conn(state).await?;
    if !keys::mark_destroyed(conn, &key.id, now, &now_text).await? {
        return Err(changed_meanwhile("key", &key.id, KeyState::Destroying));
    }
    aliases::delete_for_key(conn, &key.id).await?;
    grants::delete_for_key(conn, &key.id).await?;
    plugins::delete_schedule(conn, &key.id).await?;
    Ok(())
}

/// Delete every wrapped copy of a key's versions from its storage backend and destroy its HSM
/// objects (crypto-shredding). Safe to repeat: what is already gone is skipped.
pub async fn shred_material(state: &AppState, key: &KeyRow) -> Result<()> {
    let versions = keys::versions(&state.db, &key.id).await?;
    for v in &versions {
        if let Some(store) = &v.blob_store {
            let (plugin, config) = version_store(state, &key.tenant_id, store).await?;
            let op = StorageOp::Delete { name: v.blob() };
            match state.plugins.storage(&plugin, &config, op).await? {
                StorageReply::Deleted(_) => {}
                _ => return Err(Error::Internal),
            }
        }
        state.keyring.shred_version(&key.id, v).await?;
    }
    // The other nodes destroy the HSM copies they unwrapped (their sweep before each scheduler
    // pass is the backstop should this notice be lost).
    let notice = crate::store::Notice::MaterialShredded {
        key_id: key.id.clone(),
    };
    if let Err(e) = state.db.announce(&notice).await {
        tracing::warn!(key = %key.id, error = %e, "could not tell the other nodes a key's material was shredded");
    }
    Ok(())
}

/// Refuse to approve or schedule the deletion of a key that is destroyed, or whose deletion
/// is scheduled or under way. "is pending deletion", as AWS words it: Terraform's destroy
/// takes an error containing it as success.
fn refuse_if_deleted(key: &KeyRow) -> Result<()> {
    match key.state {
        KeyState::Destroyed => Err(Error::KeyDestroyed {
            what: format!("key {}", key.id),
        }),
        KeyState::PendingDeletion => Err(Error::InvalidState(format!(
            "key {} is pending deletion",
            key.id
        ))),
        // Shown to AWS clients as PendingDeletion, and worded so: Terraform's destroy takes
        // "is pending deletion" as done, also while the shredding is retried.
        KeyState::Destroying => Err(Error::InvalidState(format!(
            "key {} is pending deletion: its material is being destroyed",
            key.id
        ))),
        _ => Ok(()),
    }
}

/// Refuse to turn deletion protection on for a key whose deletion is scheduled or under way:
/// protection is checked when a deletion is scheduled, not when it comes due, so accepting it
/// here would answer "protected" for a key that is still destroyed when its window ends.
pub(super) fn refuse_protecting_a_doomed_key(key: &KeyRow, on: bool) -> Result<()> {
    if on && matches!(key.state, KeyState::PendingDeletion | KeyState::Destroying) {
        return Err(Error::InvalidState(format!(
            "key {} is pending deletion: cancel its deletion (cancel-key-deletion) before protecting it",
            key.id
        )));
    }
    Ok(())
}

/// `set-deletion-protection`: turn a key's deletion protection on or off (while on,
/// `schedule-key-deletion` is refused). Vault Transit's `deletion_allowed` is its negation.
/// A compare-and-set against the setting read when the request was authorized.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SetDeletionProtection {
    pub key_id: String,
    pub enabled: bool,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct DeletionProtectionOutput {
    pub key_id: String,
    pub deletion_protection: bool,
}

impl Operation for SetDeletionProtection {
    const NAME: &'static str = "set-deletion-protection";
    const ACTION: &'static str = "SetDeletionProtection";
    type Output = DeletionProtectionOutput;

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
        super::key_tags::refuse_if_destroyed(key)?;
        refuse_protecting_a_doomed_key(key, self.enabled)?;
        crate::pause::point("key-settings:resolved", &key.id).await;
        let conn = scope.conn(ctx.state).await?;
        let was = key.deletion_protection;
        if !keys::set_deletion_protection(conn, &key.id, key.state, was, self.enabled).await? {
            return Err(changed_meanwhile(
                "key",
                &key.id,
                format!("deletion_protection {was}"),
            ));
        }
        Ok(DeletionProtectionOutput {
            key_id: key.id.clone(),
            deletion_protection: self.enabled,
        })
    }
}
