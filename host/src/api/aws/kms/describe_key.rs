//! `DescribeKey` → `describe-key`. A destroyed key is `NotFoundException`, as a deleted key
//! is to AWS.

use serde::{Deserialize, Serialize};

use super::metadata::{is_destroyed, KeyMetadata};
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
        // AWS forgets a key once it is deleted; keyplane keeps its record for the audit
        // trail, but to AWS clients (Terraform's read after a deletion) it is gone.
        if is_destroyed(&out.state) {
            let arn = cx.key_arn(&out.key_id);
            return Err(KmsError::new(
                "NotFoundException",
                format!("Key '{arn}' does not exist"),
            ));
        }
        Ok(DescribeKeyResponse {
            key_metadata: KeyMetadata::new(&out, cx).map_err(|e| KmsError::from(&e))?,
        })
    }
}
