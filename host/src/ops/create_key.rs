//! `create-key`: a key of the caller's tenant with its first version. `key_spec` (default
//! `AES_256_GCM`) and `key_usage` (default: the spec's first usage) are fixed for the key's
//! life; an invalid combination is a validation error. AES keys are `envelope` (default) or
//! `hsm` protected, `CHACHA20_POLY1305` keys `envelope` only (see [`KeySpec::allows_hsm`]);
//! every other spec is `hsm` only (its private or secret key is a
//! non-extractable token object). A spec whose mechanisms the token does not list is refused.
//! Symmetric keys may instead wait for imported material (`origin: external`) and may be created
//! exportable (fixed for life). Cedar: `CreateKey` on the caller's tenant.

use crate::model::KeyState;
use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;

use super::aliases::CreateAlias;
use super::automatic_rotation::{check_period, EnableKeyRotation};
use super::key_policies::{validate_document, DEFAULT_NAME};
use super::validate::{validate_alias, validate_description, validate_tags, KEY_SPEC_AES_256_GCM};
use super::versions::make_version;
use super::views::KeyMetadata;
use super::{OpContext, Operation, WriteScope};
use crate::algorithms::{check_spec_usage, KeySpec, KeyUsage};
use crate::authz::ResourceRef;
use crate::crypto::context::EncryptionContext;
use crate::error::{Error, Result};
use crate::model::Protection;
use crate::store::aliases::{self, AliasRow};
use crate::store::keys::{self, KeyRow};
use crate::store::principals;
use crate::store::{imports, key_policies};

const MAX_GRANTS: usize = 100;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// `envelope` (default for symmetric specs) or `hsm` (default and only choice for others).
    pub protection: Option<String>,
    #[serde(default = "aes")]
    pub key_spec: String,
    /// Default: the spec's first usage (see [`KeySpec::usages`]).
    pub key_usage: Option<String>,
    /// Principals (of this tenant) allowed to use the key. Default: the caller.
    pub grants: Option<Vec<String>>,
    /// `keyplane` (default: the HSM makes the material) or `external` (the key waits in
    /// `pending-import` for `import-key-material`).
    #[serde(default = "keyplane_origin")]
    pub origin: String,
    /// Whether `export-key` may ever hand out this key's material (wrapped). Fixed here.
    #[serde(default)]
    pub exportable: bool,
    /// The key policy document (stored, not evaluated; see `key_policies`). Default: AWS's
    /// default for the tenant's account.
    pub policy: Option<String>,
    /// An alias created with the key, in the same transaction (also authorized as
    /// `CreateAlias` on the new key): a key named at birth is never left without its name.
    pub alias: Option<String>,
    /// Refuse `schedule-key-deletion` until `set-deletion-protection` turns this off.
    #[serde(default)]
    pub deletion_protection: bool,
    /// Every encryption and decryption under the key must carry an encryption context
    /// (symmetric encrypt-decrypt keys only; fixed for life).
    #[serde(default)]
    pub require_encryption_context: bool,
    /// Automatic rotation from birth, every this many days (as `enable-key-rotation`'s),
    /// set in the same transaction and also authorized as `EnableKeyRotation` on the new
    /// key: a refused schedule leaves no key behind. Not for keys of origin `external`.
    pub rotation_period_days: Option<i64>,
}

fn keyplane_origin() -> String {
    imports::ORIGIN_KEYPLANE.into()
}

fn aes() -> String {
    KEY_SPEC_AES_256_GCM.into()
}

impl CreateKey {
    /// The spec, usage and protection asked for, checked against each other.
    fn choices(&self) -> Result<(KeySpec, KeyUsage, Protection)> {
        let spec = KeySpec::parse(&self.key_spec)?;
        let usage = match &self.key_usage {
            Some(u) => KeyUsage::parse(u)?,
            None => spec.default_usage(),
        };
        check_spec_usage(spec, usage)?;
        let protection = match self.protection.as_deref() {
            None if spec.allows_envelope() => Protection::Envelope,
            None => Protection::Hsm,
            Some(p) => Protection::parse(p)
                .ok_or_else(|| Error::validation("protection must be \"hsm\" or \"envelope\""))?,
        };
        if protection == Protection::Envelope && !spec.allows_envelope() {
            return Err(Error::validation(format!(
                "key_spec {} is available with protection \"hsm\" only",
                spec.as_str()
            )));
        }
        if protection == Protection::Hsm && !spec.allows_hsm() {
            return Err(Error::validation(format!(
                "key_spec {} is available with protection \"envelope\" only: keyplane has no HSM mechanism for it (PKCS#11's CKM_CHACHA20_POLY1305 is in neither SoftHSM2 nor the PKCS#11 binding keyplane uses)",
                spec.as_str()
            )));
        }
        Ok((spec, usage, protection))
    }
}

impl Operation for CreateKey {
    const NAME: &'static str = "create-key";
    const ACTION: &'static str = "CreateKey";
    type Output = KeyMetadata;

    fn validate(&self) -> Result<()> {
        let (spec, usage, _) = self.choices()?;
        if self.origin != imports::ORIGIN_KEYPLANE && self.origin != imports::ORIGIN_EXTERNAL {
            return Err(Error::validation(
                "origin must be \"keyplane\" or \"external\"",
            ));
        }
        let importable = spec.is_symmetric_encryption()
            || spec.rsa_bits().is_some()
            || (matches!(spec, KeySpec::EccNistP256 | KeySpec::EccNistP384)
                && usage == KeyUsage::SignVerify);
        // A well-formed request for what keyplane does not do (AWS imports HMAC keys):
        // unsupported, not malformed.
        if self.origin == imports::ORIGIN_EXTERNAL && !importable {
            return Err(Error::Unsupported(format!(
                "origin \"external\" is available for AES_256_GCM, AES_128_GCM, CHACHA20_POLY1305, RSA and sign-verify ECC_NIST keys, not {} {}",
                spec.as_str(),
                usage.as_str()
            )));
        }
        if spec == KeySpec::Ed25519 && self.exportable {
            return Err(Error::validation(
                "ED25519 keys cannot be exportable: the PKCS#11 module cannot wrap them",
            ));
        }
        if spec.dh_group().is_some() && self.exportable {
            return Err(Error::validation(format!(
                "{spec} keys cannot be exportable: keyplane offers no export form for a DH private key",
            )));
        }
        validate_description(&self.description)?;
        validate_tags(&self.tags)?;
        if let Some(p) = &self.policy {
            validate_document(p)?;
        }
        if let Some(alias) = &self.alias {
            validate_alias(alias)?;
        }
        let symmetric = usage == KeyUsage::EncryptDecrypt && spec.rsa_bits().is_none();
        if self.require_encryption_context && !symmetric {
            return Err(Error::validation(
                "require_encryption_context is for symmetric encrypt-decrypt keys only",
            ));
        }
        if let Some(days) = self.rotation_period_days {
            check_period(days)?;
            if self.origin == imports::ORIGIN_EXTERNAL {
                return Err(Error::Unsupported(
                    "automatic rotation of a key of origin external: keyplane cannot renew imported material".into(),
                ));
            }
        }
        if self.grants.as_ref().is_some_and(|g| g.len() > MAX_GRANTS) {
            return Err(Error::validation(format!("at most {MAX_GRANTS} grants")));
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
        scope: &mut WriteScope,
    ) -> Result<Self::Output> {
        let (spec, usage, protection) = self.choices()?;
        let tenant = ctx.principal.tenant_id.clone();
        let mut grants = self
            .grants
            .unwrap_or_else(|| vec![ctx.principal.id.clone()]);
        grants.sort();
        grants.dedup();
        for g in &grants {
            super::validate::refuse_nul("grants", g)?;
        }
        let found = principals::existing_in_tenant(&ctx.state.db, &tenant, &grants).await?;
        if let Some(missing) = grants.iter().find(|g| !found.contains(g)) {
            return Err(Error::validation(format!(
                "grant names {missing}, which is not a principal of tenant {tenant}"
            )));
        }
        let missing = ctx
            .state
            .keyring
            .hsm()
            .capabilities()
            .missing_for(spec, usage, protection);
        let caps = ctx.state.keyring.hsm().capabilities();
        if self.origin == imports::ORIGIN_EXTERNAL && !caps.takes_imports() {
            return Err(Error::validation(
                "the HSM cannot take imported key material: it does not unwrap keys (C_UnwrapKey with CKM_RSA_PKCS_OAEP), which import needs",
            ));
        }
        if self.exportable && !caps.wraps_for_export() {
            return Err(Error::validation(
                "the HSM cannot make exportable keys: it lacks CKM_AES_KEY_WRAP_PAD, which export wraps a key with",
            ));
        }
        if !missing.is_empty() {
            return Err(Error::validation(format!(
                "the HSM does not support key_spec {} with key_usage {}: it lacks {}",
                spec.as_str(),
                usage.as_str(),
                missing.join(", ")
            )));
        }
        if let Some(alias) = &self.alias {
            // A name already taken is answered before any material is made (the insert
            // below still decides a race).
            if aliases::get(&ctx.state.db, &tenant, alias).await?.is_some() {
                return Err(Error::AlreadyExists {
                    kind: "alias",
                    id: alias.clone(),
                });
            }
        }
        let key_id = format!("k-{}", uuid::Uuid::new_v4().simple());
        let external = self.origin == imports::ORIGIN_EXTERNAL;
        let rotation = self
            .rotation_period_days
            .map(|days| (days, ctx.state.clock.now() + days * 86_400));
        let mut row = KeyRow {
            id: key_id,
            tenant_id: tenant,
            spec,
            usage,
            protection,
            state: if external {
                KeyState::PendingImport
            } else {
                KeyState::Enabled
            },
            description: self.description,
            tags: serde_json::to_string(&self.tags).map_err(|_| Error::Internal)?,
            primary_version: 1,
            created_at: ctx.state.clock.now_rfc3339(),
            created_by: ctx.principal.id.clone(),
            deletion_date: None,
            min_decryption_version: 1,
            destroyed_at: None,
            rotation_period_days: rotation.map(|(days, _)| days),
            next_rotation_at: rotation.map(|(_, next)| next),
            deletion_protection: self.deletion_protection,
            require_encryption_context: self.require_encryption_context,
            material_expires_at: None,
        };
        // What comes with the key is authorized on it, as its own request would be, before
        // anything is made (no material is made for a refused request).
        let resource = ResourceRef::Key {
            row: Box::new(row.clone()),
            users: grants.clone(),
            tags: self.tags.clone(),
            grants: Default::default(),
        };
        if self.alias.is_some() {
            ctx.authorize(CreateAlias::ACTION, &resource, &EncryptionContext::new())?;
        }
        if rotation.is_some() {
            ctx.authorize(
                EnableKeyRotation::ACTION,
                &resource,
                &EncryptionContext::new(),
            )?;
        }
        let version = if external {
            None
        } else {
            let kind = (protection, spec, usage);
            let v = make_version(
                ctx.state,
                scope,
                &row.tenant_id,
                &row.id,
                1,
                kind,
                self.exportable,
            );
            Some(v.await?)
        };
        if let Some(v) = &version {
            row.created_at = v.created_at.clone();
        }
        let conn = scope.conn(ctx.state).await?;
        keys::insert_key(conn, &row, &grants).await?;
        if let Some(alias) = &self.alias {
            let now = ctx.state.clock.now_rfc3339();
            aliases::insert(
                conn,
                &AliasRow {
                    tenant_id: row.tenant_id.clone(),
                    name: alias.clone(),
                    key_id: row.id.clone(),
                    created_at: now.clone(),
                    updated_at: now,
                },
            )
            .await?;
        }
        if let Some(v) = &version {
            keys::insert_version(conn, v).await?;
        }
        imports::set_origin(conn, &row.id, &self.origin, self.exportable).await?;
        if let Some(policy) = &self.policy {
            let now = ctx.state.clock.now_rfc3339();
            key_policies::put(
                conn,
                &row.id,
                DEFAULT_NAME,
                policy,
                (&now, &ctx.principal.id),
            )
            .await?;
        }
        let mut meta = KeyMetadata::new(&row, grants, Some(version.as_slice()));
        meta.origin = Some(self.origin);
        meta.exportable = Some(self.exportable);
        Ok(meta)
    }
}
