//! `DescribeKey` → `describe-key`. A destroyed key is `NotFoundException`, as a deleted key
//! is to AWS (the core answers so for every request of this front naming one).

use serde::{Deserialize, Serialize};

use super::metadata::KeyMetadata;
use super::{required, KmsAction};
use crate::api::aws::error::KmsError;
use crate::api::aws::ids::Cx;
use crate::error::Result;
use crate::ops::describe_key as op;
use crate::ops::Operation;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DescribeKey {
    key_id: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct DescribeKeyResponse {
    key_metadata: KeyMetadata,
}

impl KmsAction for DescribeKey {
    type Op = op::DescribeKey;
    type Response = DescribeKeyResponse;

    fn into_op(self, cx: &Cx) -> Result<Self::Op> {
        Ok(op::DescribeKey {
            key_id: cx.key_id("keyId", &required("keyId", self.key_id)?)?,
        })
    }

    fn response(
        out: <Self::Op as Operation>::Output,
        cx: &Cx,
    ) -> std::result::Result<Self::Response, KmsError> {
        Ok(DescribeKeyResponse {
            key_metadata: KeyMetadata::new(&out, cx).map_err(|e| KmsError::from(&e))?,
        })
    }
}
