//! `configure-key`: several of a key's settings changed in one request, all or none —
//! automatic rotation, the minimum decryption version, deletion protection. Vault Transit's
//! `keys/<name>/config` is this operation.
//!
//! Each setting is what its own operation would do (`enable-`/`disable-key-rotation`,
//! `set-min-decryption-version`, `set-deletion-protection`), with the same checks, and Cedar
//! decides it by that operation's action as well as `ConfigureKey`: a policy that keeps a
//! caller from turning deletion protection off keeps it so here too. Only settings that
//! differ from the key's are authorized, checked and written (a client that writes every
//! setting each time, as Terraform does, must not need every permission, nor move the next
//! rotation a period on with each write). Every decision and every check comes before the
//! first write, and the writes are compare-and-sets in one transaction with the audit
//! records: a refused or failed setting leaves none of the others changed.
//!
//! **Audit.** Besides the request's `ConfigureKey` record, each setting changed has a record
//! of its own action (`SetDeletionProtection`, …) under the same request id, in the same
//! transaction; a setting Cedar refuses has a `deny` record of its own action too.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::automatic_rotation::check_rotatable;
use super::checks::changed_meanwhile;
use super::key_state::check_min_decryption_version;
use super::key_tags::refuse_if_destroyed;
use super::resolve::{key_row, resolve_key};
use super::validate::validate_key_id;
use super::views::rfc3339;
use super::{audit_alone, event, OpContext, Operation, WriteScope};
use crate::audit::AuditEvent;
use crate::authz::{Decision, ResourceRef};
use crate::crypto::context::EncryptionContext;
use crate::error::{Error, Result};
use crate::store::keys;

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfigureKey {
    pub key_id: String,
    /// Automatic rotation every this many days (1 to 2560); 0 turns it off.
    pub rotation_period_days: Option<i64>,
    /// Versions below this refuse to decrypt (1 to the primary version).
    pub min_decryption_version: Option<i64>,
    /// While on, `schedule-key-deletion` is refused.
    pub deletion_protection: Option<bool>,
}

/// The key's settings once the request is done, and which it changed.
#[derive(Debug, Serialize, JsonSchema)]
pub struct KeyConfiguration {
    pub key_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rotation_period_days: Option<i64>,
    /// RFC 3339.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_rotation_at: Option<String>,
    pub min_decryption_version: i64,
    pub deletion_protection: bool,
    /// The Cedar action of each setting changed (`EnableKeyRotation`, `DisableKeyRotation`,
    /// `SetMinDecryptionVersion`, `SetDeletionProtection`); empty when nothing differed.
    pub changed: Vec<String>,
}

/// A rotation change: on with (period, next rotation), or off.
type Rotation = Option<(i64, i64)>;

impl Operation for ConfigureKey {
    const NAME: &'static str = "configure-key";
    const ACTION: &'static str = "ConfigureKey";
    type Output = KeyConfiguration;

    fn validate(&self) -> Result<()> {
        validate_key_id(&self.key_id)?;
        if self.rotation_period_days.is_some_and(|d| d < 0) {
            return Err(Error::validation(
                "rotation_period_days must be 0 (off) or 1 to 2560",
            ));
        }
        if self.min_decryption_version.is_some_and(|v| v < 1) {
            return Err(Error::validation(
                "min_decryption_version must be 1 or more",
            ));
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
        refuse_if_destroyed(key)?;
        let mut changed: Vec<(&'static str, Decision)> = Vec::new();

        // Decided, then checked, in the order the single operations would be asked for, before
        // anything is written.
        let rotation: Option<Rotation> = match self.rotation_period_days {
            Some(0) if key.rotation_period_days.is_some() => {
                changed.push((
                    "DisableKeyRotation",
                    decide(ctx, "DisableKeyRotation", &r).await?,
                ));
                Some(None)
            }
            Some(days) if days != 0 && key.rotation_period_days != Some(days) => {
                changed.push((
                    "EnableKeyRotation",
                    decide(ctx, "EnableKeyRotation", &r).await?,
                ));
                Some(Some((days, check_rotatable(ctx, key, days).await?)))
            }
            _ => None,
        };
        let min_decryption = match self.min_decryption_version {
            Some(v) if v != key.min_decryption_version => {
                let action = "SetMinDecryptionVersion";
                changed.push((action, decide(ctx, action, &r).await?));
                check_min_decryption_version(key, v)?;
                Some(v)
            }
            _ => None,
        };
        let protection = match self.deletion_protection {
            Some(on) if on != key.deletion_protection => {
                let action = "SetDeletionProtection";
                changed.push((action, decide(ctx, action, &r).await?));
                super::key_deletion::refuse_protecting_a_doomed_key(key, on)?;
                Some(on)
            }
            _ => None,
        };

        // Each write is a compare-and-set against the key as it was checked: a change made
        // meanwhile by another request fails this one whole.
        let conn = scope.conn(ctx.state).await?;
        if let Some(period) = rotation {
            if !keys::set_rotation(conn, &key.id, key.state, period).await? {
                return Err(changed_meanwhile("key", &key.id, key.state));
            }
        }
        if let Some(v) = min_decryption {
            if !keys::set_min_decryption_version(conn, &key.id, key.state, v).await? {
                return Err(changed_meanwhile("key", &key.id, key.state));
            }
        }
        if let Some(on) = protection {
            let was = key.deletion_protection;
            if !keys::set_deletion_protection(conn, &key.id, key.state, was, on).await? {
                return Err(changed_meanwhile(
                    "key",
                    &key.id,
                    format!("deletion_protection {was}"),
                ));
            }
        }

        // One record per setting changed, under its own action, in the transaction with the
        // change (and the request's own `ConfigureKey` record): a search by the action finds
        // it whichever way it was asked for.
        for (action, decision) in &changed {
            let ev = AuditEvent {
                resource: r.display(),
                decision: "allow",
                policies: decision.policies.clone(),
                policy_hash: Some(decision.policy_set.clone()),
                ..event(ctx.meta, Some(ctx.principal), action)
            };
            crate::audit::append(conn, &ev).await?;
        }

        let period = match rotation {
            Some(p) => p,
            None => key.rotation_period_days.zip(key.next_rotation_at),
        };
        Ok(KeyConfiguration {
            key_id: key.id.clone(),
            rotation_period_days: period.map(|(days, _)| days),
            next_rotation_at: period.map(|(_, next)| rfc3339(next)),
            min_decryption_version: min_decryption.unwrap_or(key.min_decryption_version),
            deletion_protection: protection.unwrap_or(key.deletion_protection),
            changed: changed.iter().map(|(a, _)| a.to_string()).collect(),
        })
    }
}

/// Cedar's decision on one setting, by the action of the operation that changes it alone. A
/// refusal is recorded under that action too (a search for it finds the attempt), and fails
/// the request as [`OpContext::authorize`] does.
async fn decide(ctx: &OpContext<'_>, action: &'static str, r: &ResourceRef) -> Result<Decision> {
    let refused = match ctx.authorize(action, r, &EncryptionContext::new()) {
        Ok(decision) => return Ok(decision),
        Err(e) => e,
    };
    if matches!(refused, Error::AccessDenied { .. } | Error::NotFound { .. }) {
        let ev = AuditEvent {
            resource: r.display(),
            decision: "deny",
            policies: ctx.denial_policies(),
            outcome: refused.code().into(),
            ..event(ctx.meta, Some(ctx.principal), action)
        };
        audit_alone(ctx.state, &ev).await?;
    }
    Err(refused)
}
