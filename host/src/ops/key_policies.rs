//! `get-key-policy`, `put-key-policy` and `list-key-policies`: the key policy document AWS
//! clients read and write (Terraform reads it back as JSON after creating a key). keyplane
//! stores it and returns it; it does not evaluate it: the Cedar policies authorize every
//! request, and `docs/aws-kms.md` says so. One name, `default`, as AWS. A key whose document
//! was never set has AWS's default one (its account may use the key), built when read.
//! Cedar: `GetKeyPolicy`, `PutKeyPolicy`, `ListKeyPolicies` on the key.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::key_tags::refuse_if_destroyed;
use super::resolve::{key_row, resolve_key};
use super::validate::validate_key_id;
use super::{OpContext, Operation, WriteScope};
use crate::authz::ResourceRef;
use crate::error::{Error, Result};
use crate::store::keys::KeyRow;
use crate::store::{key_policies, tenants};

/// The one policy name.
pub const DEFAULT_NAME: &str = "default";
/// Longest document (as AWS).
pub const MAX_DOCUMENT: usize = 32 * 1024;

/// AWS's default key policy for a key of `account`: the account (and so its IAM policies)
/// may do everything with the key.
pub fn default_document(account: &str) -> String {
    serde_json::json!({
        "Version": "2012-10-17",
        "Id": "key-default-1",
        "Statement": [{
            "Sid": "Enable IAM User Permissions",
            "Effect": "Allow",
            "Principal": { "AWS": format!("arn:aws:iam::{account}:root") },
            "Action": "kms:*",
            "Resource": "*"
        }]
    })
    .to_string()
}

/// Check a document: a JSON object of at most [`MAX_DOCUMENT`] bytes.
pub fn validate_document(document: &str) -> Result<()> {
    if document.is_empty() || document.len() > MAX_DOCUMENT {
        return Err(Error::validation(format!(
            "a key policy is 1 to {MAX_DOCUMENT} bytes"
        )));
    }
    match serde_json::from_str::<serde_json::Value>(document) {
        Ok(serde_json::Value::Object(_)) => Ok(()),
        _ => Err(Error::MalformedPolicyDocument(
            "a key policy must be a JSON object".into(),
        )),
    }
}

fn validate_name(name: &str) -> Result<()> {
    if name != DEFAULT_NAME {
        return Err(Error::NotFound {
            kind: "key policy",
            id: name.into(),
        });
    }
    Ok(())
}

/// The document of `key` (stored, or the default).
async fn document(ctx: &OpContext<'_>, key: &KeyRow) -> Result<String> {
    let pool = &ctx.state.db;
    if let Some(d) = key_policies::get(pool, &key.id, DEFAULT_NAME).await? {
        return Ok(d);
    }
    let tenant = tenants::get(pool, &key.tenant_id)
        .await?
        .ok_or(Error::Internal)?;
    Ok(default_document(&tenant.account_id))
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct KeyPolicyOutput {
    pub key_id: String,
    pub policy_name: String,
    pub policy: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GetKeyPolicy {
    pub key_id: String,
    pub policy_name: Option<String>,
}

impl Operation for GetKeyPolicy {
    const NAME: &'static str = "get-key-policy";
    const ACTION: &'static str = "GetKeyPolicy";
    type Output = KeyPolicyOutput;

    fn validate(&self) -> Result<()> {
        validate_key_id(&self.key_id)?;
        validate_name(self.policy_name.as_deref().unwrap_or(DEFAULT_NAME))
    }

    async fn resolve(&self, ctx: &OpContext<'_>) -> Result<ResourceRef> {
        resolve_key(ctx, &self.key_id).await
    }

    async fn execute(
        self,
        ctx: &OpContext<'_>,
        r: ResourceRef,
        _scope: &mut WriteScope,
    ) -> Result<Self::Output> {
        let key = key_row(&r)?;
        Ok(KeyPolicyOutput {
            key_id: key.id.clone(),
            policy_name: DEFAULT_NAME.into(),
            policy: document(ctx, key).await?,
        })
    }
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PutKeyPolicy {
    pub key_id: String,
    pub policy_name: Option<String>,
    pub policy: String,
}

impl Operation for PutKeyPolicy {
    const NAME: &'static str = "put-key-policy";
    const ACTION: &'static str = "PutKeyPolicy";
    type Output = KeyPolicyOutput;

    fn validate(&self) -> Result<()> {
        validate_key_id(&self.key_id)?;
        validate_name(self.policy_name.as_deref().unwrap_or(DEFAULT_NAME))?;
        validate_document(&self.policy)
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
        let now = ctx.state.clock.now_rfc3339();
        crate::pause::point("key-settings:resolved", &key.id).await;
        let conn = scope.conn(ctx.state).await?;
        if !crate::store::keys::hold_state(conn, &key.id, key.state).await? {
            return Err(super::checks::changed_meanwhile("key", &key.id, key.state));
        }
        key_policies::put(
            conn,
            &key.id,
            DEFAULT_NAME,
            &self.policy,
            (&now, &ctx.principal.id),
        )
        .await?;
        Ok(KeyPolicyOutput {
            key_id: key.id.clone(),
            policy_name: DEFAULT_NAME.into(),
            policy: self.policy,
        })
    }
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListKeyPolicies {
    pub key_id: String,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct ListKeyPoliciesOutput {
    pub key_id: String,
    pub policy_names: Vec<&'static str>,
}

impl Operation for ListKeyPolicies {
    const NAME: &'static str = "list-key-policies";
    const ACTION: &'static str = "ListKeyPolicies";
    type Output = ListKeyPoliciesOutput;

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
        Ok(ListKeyPoliciesOutput {
            key_id: key_row(&r)?.id.clone(),
            policy_names: vec![DEFAULT_NAME],
        })
    }
}
