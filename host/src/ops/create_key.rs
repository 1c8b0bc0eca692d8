//! `create-key`: an AES-256-GCM key of the caller's tenant, `envelope` (default) or `hsm`
//! protected, with its first version (or, for `origin: external`, waiting for imported
//! material), exportable or not for life. Cedar: `CreateKey` on the caller's tenant.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::common::{KeyMetadata, KEY_SPEC_AES_256_GCM, STATE_ENABLED, USAGE_ENCRYPT_DECRYPT};
use super::versions::make_version;
use super::{OpContext, Operation, WriteScope};
use crate::authz::ResourceRef;
use crate::crypto::Protection;
use crate::error::{Error, Result};
use crate::store::imports;
use crate::store::keys::{self, KeyRow};
use crate::store::principals;

const MAX_DESCRIPTION: usize = 8192;
const MAX_TAGS: usize = 50;
const MAX_TAG_KEY: usize = 128;
const MAX_TAG_VALUE: usize = 256;
const MAX_GRANTS: usize = 100;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// `envelope` (default) or `hsm`.
    #[serde(default = "envelope")]
    pub protection: String,
    #[serde(default = "aes")]
    pub key_spec: String,
    #[serde(default = "encrypt_decrypt")]
    pub key_usage: String,
    /// Principals (of this tenant) allowed to use the key. Default: the caller.
    pub grants: Option<Vec<String>>,
    /// `keyplane` (default: the HSM makes the material) or `external` (the key waits in
    /// `pending-import` for `import-key-material`).
    #[serde(default = "keyplane_origin")]
    pub origin: String,
    /// Whether `export-key` may ever hand out this key's material (wrapped). Fixed here.
    #[serde(default)]
    pub exportable: bool,
}

fn keyplane_origin() -> String {
    imports::ORIGIN_KEYPLANE.into()
}

fn envelope() -> String {
    "envelope".into()
}
fn aes() -> String {
    KEY_SPEC_AES_256_GCM.into()
}
fn encrypt_decrypt() -> String {
    USAGE_ENCRYPT_DECRYPT.into()
}

impl Operation for CreateKey {
    const NAME: &'static str = "create-key";
    const ACTION: &'static str = "CreateKey";
    type Output = KeyMetadata;

    fn validate(&self) -> Result<()> {
        if Protection::parse(&self.protection).is_none() {
            return Err(Error::validation(
                "protection must be \"hsm\" or \"envelope\"",
            ));
        }
        if self.key_spec != KEY_SPEC_AES_256_GCM {
            return Err(Error::validation(format!(
                "key_spec must be {KEY_SPEC_AES_256_GCM}"
            )));
        }
        if self.key_usage != USAGE_ENCRYPT_DECRYPT {
            return Err(Error::validation(format!(
                "key_usage must be {USAGE_ENCRYPT_DECRYPT}"
            )));
        }
        if self.origin != imports::ORIGIN_KEYPLANE && self.origin != imports::ORIGIN_EXTERNAL {
            return Err(Error::validation(
                "origin must be \"keyplane\" or \"external\"",
            ));
        }
        if self.description.len() > MAX_DESCRIPTION {
            return Err(Error::validation(format!(
                "description is longer than {MAX_DESCRIPTION} bytes"
            )));
        }
        if self.tags.len() > MAX_TAGS {
            return Err(Error::validation(format!("at most {MAX_TAGS} tags")));
        }
        for (k, v) in &self.tags {
            if k.is_empty() || k.len() > MAX_TAG_KEY || v.len() > MAX_TAG_VALUE {
                return Err(Error::validation(format!(
                    "tag keys must be 1-{MAX_TAG_KEY} bytes and values at most {MAX_TAG_VALUE} bytes"
                )));
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
        let tenant = ctx.principal.tenant_id.clone();
        let mut grants = self
            .grants
            .unwrap_or_else(|| vec![ctx.principal.id.clone()]);
        grants.sort();
        grants.dedup();
        let found = {
            let mut conn = ctx.state.db.reader().acquire().await?;
            principals::existing_in_tenant(&mut conn, &tenant, &grants).await?
        };
        if let Some(missing) = grants.iter().find(|g| !found.contains(g)) {
            return Err(Error::validation(format!(
                "grant names {missing}, which is not a principal of tenant {tenant}"
            )));
        }
        let protection = Protection::parse(&self.protection).ok_or(Error::Internal)?;
        let key_id = format!("k-{}", uuid::Uuid::new_v4().simple());
        let external = self.origin == imports::ORIGIN_EXTERNAL;
        let version = if external {
            None
        } else {
            Some(
                make_version(
                    ctx.state,
                    scope,
                    &tenant,
                    &key_id,
                    1,
                    protection,
                    self.exportable,
                )
                .await?,
            )
        };
        let created_at = version
            .as_ref()
            .map(|v| v.created_at.clone())
            .unwrap_or_else(|| ctx.state.clock.now_rfc3339());
        let row = KeyRow {
            id: key_id,
            tenant_id: tenant,
            spec: self.key_spec,
            usage: self.key_usage,
            protection: protection.as_str().into(),
            state: if external {
                imports::STATE_PENDING_IMPORT.into()
            } else {
                STATE_ENABLED.into()
            },
            description: self.description,
            tags: serde_json::to_string(&self.tags).map_err(|_| Error::Internal)?,
            primary_version: 1,
            created_at,
            created_by: ctx.principal.id.clone(),
            deletion_date: None,
            min_decryption_version: 1,
            destroyed_at: None,
        };
        let conn = scope.conn(ctx.state).await?;
        keys::insert_key(conn, &row, &grants).await?;
        if let Some(v) = &version {
            keys::insert_version(conn, v).await?;
        }
        imports::set_origin(conn, &row.id, &self.origin, self.exportable).await?;
        let mut meta = KeyMetadata::new(&row, grants, Some(version.as_slice()));
        meta.origin = Some(self.origin);
        meta.exportable = Some(self.exportable);
        Ok(meta)
    }
}
