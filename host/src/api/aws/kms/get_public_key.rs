//! `GetPublicKey` → `get-public-key` (the DER SubjectPublicKeyInfo).

use serde::{Deserialize, Serialize};

use super::metadata::{aws_signing, aws_spec, aws_usage};
use super::{required, KmsAction};
use crate::api::aws::error::KmsError;
use crate::api::aws::ids::Cx;
use crate::error::{Error, Result};
use crate::ops::get_public_key as op;
use crate::ops::{Base64, Operation};

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct GetPublicKey {
    key_id: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct GetPublicKeyResponse {
    key_id: String,
    public_key: Base64,
    customer_master_key_spec: &'static str,
    key_spec: &'static str,
    key_usage: &'static str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    encryption_algorithms: Vec<&'static str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    signing_algorithms: Vec<&'static str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    key_agreement_algorithms: Vec<&'static str>,
}

impl KmsAction for GetPublicKey {
    type Op = op::GetPublicKey;
    type Response = GetPublicKeyResponse;

    fn into_op(self, cx: &Cx) -> Result<Self::Op> {
        Ok(op::GetPublicKey {
            key_id: cx.key_id("keyId", &required("keyId", self.key_id)?)?,
            key_version: None,
            format: Some("DER".into()),
        })
    }

    fn response(
        out: <Self::Op as Operation>::Output,
        cx: &Cx,
    ) -> std::result::Result<Self::Response, KmsError> {
        let internal = |e: Error| KmsError::from(&e);
        let spec = aws_spec(&out.key_spec).map_err(internal)?;
        Ok(GetPublicKeyResponse {
            key_id: cx.key_arn(&out.key_id),
            public_key: out.der.ok_or_else(|| internal(Error::Internal))?,
            customer_master_key_spec: spec,
            key_spec: spec,
            key_usage: aws_usage(&out.key_usage).map_err(internal)?,
            encryption_algorithms: out.encryption_algorithms,
            signing_algorithms: out
                .signing_algorithms
                .into_iter()
                .map(aws_signing)
                .collect(),
            key_agreement_algorithms: out.key_agreement_algorithms,
        })
    }
}
