//! `CreateKey` → `create-key`.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::metadata::{
    aws_specs, aws_usages, spec_from_aws, usage_from_aws, KeyMetadata,
    MODEL_CUSTOMER_MASTER_KEY_SPECS, MODEL_KEY_SPECS, MODEL_KEY_USAGES,
};
use super::KmsAction;
use crate::api::aws::error::KmsError;
use crate::api::aws::ids::{length, one_of, served_of, Cx};
use crate::error::{Error, Result};
use crate::ops::create_key as op;
use crate::ops::Operation;
use crate::store::imports::{ORIGIN_EXTERNAL, ORIGIN_KEYPLANE};

/// A tag as AWS sends it.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Tag {
    pub tag_key: Option<String>,
    pub tag_value: Option<String>,
}

/// Tags as the core keeps them (a map), checked as AWS checks them.
pub fn tags(list: Vec<Tag>) -> Result<BTreeMap<String, String>> {
    let mut map = BTreeMap::new();
    for t in list {
        let key = super::required("tagKey", t.tag_key)?;
        let value = super::required("tagValue", t.tag_value)?;
        length("tagKey", &key, 1, 128)?;
        length("tagValue", &value, 0, 256)?;
        if map.insert(key.clone(), value).is_some() {
            return Err(Error::InvalidTag(format!("Duplicate tag keys: {key}")));
        }
    }
    Ok(map)
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CreateKey {
    policy: Option<String>,
    description: Option<String>,
    key_usage: Option<String>,
    customer_master_key_spec: Option<String>,
    key_spec: Option<String>,
    origin: Option<String>,
    custom_key_store_id: Option<String>,
    #[serde(default)]
    tags: Vec<Tag>,
    multi_region: Option<bool>,
}

#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct CreateKeyResponse {
    key_metadata: KeyMetadata,
}

impl KmsAction for CreateKey {
    type Op = op::CreateKey;
    type Response = CreateKeyResponse;

    fn into_op(self, _cx: &Cx) -> Result<Self::Op> {
        let description = self.description.unwrap_or_default();
        length("description", &description, 0, 8192)?;
        if let Some(p) = &self.policy {
            length("policy", p, 1, 131_072)?;
        }
        if self.multi_region == Some(true) || self.custom_key_store_id.is_some() {
            return Err(Error::Unsupported(
                "multi-Region keys and custom key stores".into(),
            ));
        }
        // Each against its own enumeration of the model: a spec of the model keyplane does
        // not make is unsupported, not malformed.
        let specs = aws_specs();
        if let Some(s) = &self.customer_master_key_spec {
            served_of(
                "customerMasterKeySpec",
                "CustomerMasterKeySpec",
                s,
                MODEL_CUSTOMER_MASTER_KEY_SPECS,
                &specs,
            )?;
        }
        if let Some(s) = &self.key_spec {
            served_of("keySpec", "KeySpec", s, MODEL_KEY_SPECS, &specs)?;
        }
        let spec_name = self
            .key_spec
            .or(self.customer_master_key_spec)
            .unwrap_or_else(|| "SYMMETRIC_DEFAULT".into());
        let spec = spec_from_aws(&spec_name).ok_or(Error::Internal)?;
        // AWS's default is ENCRYPT_DECRYPT whatever the spec (an RSA key without a usage
        // encrypts; an ECC or HMAC key without one is refused), not keyplane's per-spec one.
        let usage = self.key_usage.unwrap_or_else(|| "ENCRYPT_DECRYPT".into());
        served_of(
            "keyUsage",
            "KeyUsage",
            &usage,
            MODEL_KEY_USAGES,
            &aws_usages(),
        )?;
        let usage = usage_from_aws(&usage).ok_or(Error::Internal)?;
        let origin = match self.origin.as_deref() {
            None | Some("AWS_KMS") => ORIGIN_KEYPLANE,
            Some("EXTERNAL") => ORIGIN_EXTERNAL,
            Some(o @ ("AWS_CLOUDHSM" | "EXTERNAL_KEY_STORE")) => {
                return Err(Error::Unsupported(format!("origin {o}")))
            }
            Some(o) => {
                one_of("origin", o, &["AWS_KMS", "EXTERNAL"])?;
                ORIGIN_KEYPLANE
            }
        };
        Ok(op::CreateKey {
            description,
            tags: tags(self.tags)?,
            protection: None,
            key_spec: spec.as_str().into(),
            key_usage: Some(usage.as_str().into()),
            grants: None,
            origin: origin.into(),
            exportable: false,
            policy: self.policy,
            alias: None,
            deletion_protection: false,
            require_encryption_context: false,
            rotation_period_days: None,
        })
    }

    fn response(
        out: <Self::Op as Operation>::Output,
        cx: &Cx,
    ) -> std::result::Result<Self::Response, KmsError> {
        Ok(CreateKeyResponse {
            key_metadata: KeyMetadata::new(&out, cx).map_err(|e| KmsError::from(&e))?,
        })
    }
}
