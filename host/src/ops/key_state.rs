//! Key and version states: `enable-key`, `disable-key` (every use refused while disabled),
//! `enable-key-version`, `disable-key-version`, `revoke-key-version` (marks a version
//! compromised, with a reason: no new ciphertexts under it, decryption only through
//! `rewrap`) and `set-min-decryption-version`. Cedar: the action of the same name on the key.
//!
//! Every change is a compare-and-set against the state the request was authorized and
//! checked for: if another request changed the key or version meanwhile (a revocation racing
//! a disable, a deletion scheduled while a key is enabled), nothing is written and the answer
//! is `409 InvalidState`. So a compromised version never goes back to disabled or enabled.

use crate::model::KeyState;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::checks::changed_meanwhile;
use super::resolve::{key_row, resolve_key};
use super::validate::validate_key_id;
use super::{OpContext, Operation, WriteScope};
use crate::authz::ResourceRef;
use crate::error::{Error, Result};
use crate::store::keys::{self, KeyRow, KeyVersionRow};

/// The answer of every state change.
#[derive(Debug, Serialize, JsonSchema)]
pub struct StateOutput {
    pub key_id: String,
    pub state: KeyState,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<i64>,
}

/// A request about a whole key.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyRef {
    pub key_id: String,
}

fn refuse_if_gone(key: &KeyRow) -> Result<()> {
    match key.state {
        KeyState::Destroyed => Err(Error::KeyDestroyed {
            what: format!("key {}", key.id),
        }),
        KeyState::PendingDeletion => Err(Error::InvalidState(format!(
            "key {} is pending deletion; cancel-key-deletion first",
            key.id
        ))),
        KeyState::Destroying => Err(Error::InvalidState(format!(
            "key {} is being destroyed (its deletion window has passed)",
            key.id
        ))),
        KeyState::Expiring => Err(Error::InvalidState(format!(
            "key {} is expiring: its imported material is being deleted",
            key.id
        ))),
        KeyState::PendingImport => Err(Error::InvalidState(format!(
            "key {} is pending import: it has no key material; import-key-material first",
            key.id
        ))),
        _ => Ok(()),
    }
}

/// What `set-min-decryption-version` (and `configure-key`) checks of `version` on `key`
/// before writing it.
pub(super) fn check_min_decryption_version(key: &KeyRow, version: i64) -> Result<()> {
    refuse_if_gone(key)?;
    if version < 1 {
        return Err(Error::validation("version must be 1 or more"));
    }
    if version > key.primary_version {
        return Err(Error::validation(format!(
            "version must be at most the primary version {}",
            key.primary_version
        )));
    }
    Ok(())
}

async fn set_key_state(
    ctx: &OpContext<'_>,
    r: &ResourceRef,
    scope: &mut WriteScope,
    state: KeyState,
) -> Result<StateOutput> {
    let key = key_row(r)?;
    refuse_if_gone(key)?;
    if key.state != state {
        let conn = scope.conn(ctx.state).await?;
        if !keys::set_state(conn, &key.id, key.state, state, None).await? {
            return Err(changed_meanwhile("key", &key.id, key.state));
        }
    }
    Ok(StateOutput {
        key_id: key.id.clone(),
        state,
        version: None,
    })
}

macro_rules! key_state_op {
    ($ty:ident, $name:literal, $action:literal, $state:expr) => {
        #[derive(Debug, Deserialize, JsonSchema)]
        #[serde(transparent)]
        pub struct $ty(pub KeyRef);

        impl Operation for $ty {
            const NAME: &'static str = $name;
            const ACTION: &'static str = $action;
            type Output = StateOutput;

            fn validate(&self) -> Result<()> {
                validate_key_id(&self.0.key_id)
            }

            async fn resolve(&self, ctx: &OpContext<'_>) -> Result<ResourceRef> {
                resolve_key(ctx, &self.0.key_id).await
            }

            async fn execute(
                self,
                ctx: &OpContext<'_>,
                r: ResourceRef,
                scope: &mut WriteScope,
            ) -> Result<Self::Output> {
                set_key_state(ctx, &r, scope, $state).await
            }
        }
    };
}

key_state_op!(EnableKey, "enable-key", "EnableKey", KeyState::Enabled);
key_state_op!(DisableKey, "disable-key", "DisableKey", KeyState::Disabled);

/// A request about one version of a key.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VersionRef {
    pub key_id: String,
    pub version: i64,
    /// Why (required by `revoke-key-version`).
    #[serde(default)]
    pub reason: Option<String>,
}

impl VersionRef {
    fn validate(&self) -> Result<()> {
        validate_key_id(&self.key_id)?;
        if self.version < 1 {
            return Err(Error::validation("version must be 1 or more"));
        }
        if let Some(reason) = &self.reason {
            super::validate::refuse_nul("reason", reason)?;
        }
        if self.reason.as_ref().is_some_and(|r| r.len() > 512) {
            return Err(Error::validation("reason is longer than 512 bytes"));
        }
        Ok(())
    }
}

async fn version_of(ctx: &OpContext<'_>, key: &KeyRow, v: i64) -> Result<KeyVersionRow> {
    keys::version(&ctx.state.db, &key.id, v)
        .await?
        .ok_or_else(|| Error::NotFound {
            kind: "key version",
            id: format!("{}/{v}", key.id),
        })
}

/// Change a version's state from one of `from` to `to`.
async fn set_version_state(
    ctx: &OpContext<'_>,
    r: &ResourceRef,
    scope: &mut WriteScope,
    req: &VersionRef,
    from: &[KeyState],
    to: KeyState,
) -> Result<StateOutput> {
    let key = key_row(r)?;
    refuse_if_gone(key)?;
    crate::pause::point("version-state:resolved", &key.id).await;
    let v = version_of(ctx, key, req.version).await?;
    crate::pause::point("version-state:read", &key.id).await;
    if v.state == KeyState::Destroyed {
        return Err(Error::KeyDestroyed {
            what: format!("version {} of key {}", v.version, key.id),
        });
    }
    if to == KeyState::Disabled && v.version == key.primary_version {
        return Err(Error::InvalidState(format!(
            "version {} is the primary version of key {}; rotate-key first",
            v.version, key.id
        )));
    }
    if v.state != to {
        if !from.contains(&v.state) {
            return Err(Error::InvalidState(format!(
                "version {} of key {} is {} and cannot become {to}",
                v.version, key.id, v.state
            )));
        }
        let now = ctx.state.clock.now_rfc3339();
        let conn = scope.conn(ctx.state).await?;
        // The key's state too was checked when the request was resolved: a deletion scheduled
        // meanwhile leaves the version as it was.
        if !keys::hold_state(conn, &key.id, key.state).await? {
            return Err(changed_meanwhile("key", &key.id, key.state));
        }
        let (from, reason) = ((v.state, to), req.reason.as_deref());
        // The primary check above read the key when the request was resolved; the write
        // checks it again, so a rotation meanwhile cannot leave a disabled primary.
        let unless_primary = to == KeyState::Disabled;
        if !keys::set_version_state(conn, &key.id, v.version, from, reason, &now, unless_primary)
            .await?
        {
            let what = format!("version {} of key", v.version);
            return Err(changed_meanwhile(&what, &key.id, v.state));
        }
    }
    Ok(StateOutput {
        key_id: key.id.clone(),
        state: to,
        version: Some(v.version),
    })
}

macro_rules! version_state_op {
    ($ty:ident, $name:literal, $action:literal, $from:expr, $to:expr, $needs_reason:expr) => {
        #[derive(Debug, Deserialize, JsonSchema)]
        #[serde(transparent)]
        pub struct $ty(VersionRef);

        impl Operation for $ty {
            const NAME: &'static str = $name;
            const ACTION: &'static str = $action;
            type Output = StateOutput;

            fn validate(&self) -> Result<()> {
                self.0.validate()?;
                if $needs_reason && self.0.reason.as_deref().unwrap_or("").trim().is_empty() {
                    return Err(Error::validation(concat!($name, " needs a reason")));
                }
                Ok(())
            }

            async fn resolve(&self, ctx: &OpContext<'_>) -> Result<ResourceRef> {
                resolve_key(ctx, &self.0.key_id).await
            }

            async fn execute(
                self,
                ctx: &OpContext<'_>,
                r: ResourceRef,
                scope: &mut WriteScope,
            ) -> Result<Self::Output> {
                set_version_state(ctx, &r, scope, &self.0, $from, $to).await
            }
        }
    };
}

version_state_op!(
    EnableKeyVersion,
    "enable-key-version",
    "EnableKeyVersion",
    &[KeyState::Disabled],
    KeyState::Enabled,
    false
);
version_state_op!(
    DisableKeyVersion,
    "disable-key-version",
    "DisableKeyVersion",
    &[KeyState::Enabled],
    KeyState::Disabled,
    false
);
version_state_op!(
    RevokeKeyVersion,
    "revoke-key-version",
    "RevokeKeyVersion",
    &[KeyState::Enabled, KeyState::Disabled],
    KeyState::Compromised,
    true
);

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SetMinDecryptionVersion {
    pub key_id: String,
    pub version: i64,
}

impl Operation for SetMinDecryptionVersion {
    const NAME: &'static str = "set-min-decryption-version";
    const ACTION: &'static str = "SetMinDecryptionVersion";
    type Output = StateOutput;

    fn validate(&self) -> Result<()> {
        validate_key_id(&self.key_id)?;
        if self.version < 1 {
            return Err(Error::validation("version must be 1 or more"));
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
        check_min_decryption_version(key, self.version)?;
        let conn = scope.conn(ctx.state).await?;
        if !keys::set_min_decryption_version(conn, &key.id, key.state, self.version).await? {
            return Err(changed_meanwhile("key", &key.id, key.state));
        }
        Ok(StateOutput {
            key_id: key.id.clone(),
            state: key.state,
            version: Some(self.version),
        })
    }
}
