//! `GetKeyPolicy` → `get-key-policy`, `PutKeyPolicy` → `put-key-policy`,
//! `ListKeyPolicies` → `list-key-policies`. The document is stored and returned; Cedar
//! decides (docs/aws-kms.md).

use serde::{Deserialize, Serialize};

use super::key_state::Empty;
use super::{required, KmsAction};
use crate::api::aws::error::KmsError;
use crate::api::aws::ids::{length, range, Cx};
use crate::error::Result;
use crate::ops::key_policies as op;
use crate::ops::Operation;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct GetKeyPolicy {
    key_id: Option<String>,
    policy_name: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct GetKeyPolicyResponse {
    policy: String,
    policy_name: String,
}

impl KmsAction for GetKeyPolicy {
    type Op = op::GetKeyPolicy;
    type Response = GetKeyPolicyResponse;

    fn into_op(self, cx: &Cx) -> Result<Self::Op> {
        if let Some(n) = &self.policy_name {
            length("policyName", n, 1, 128)?;
        }
        Ok(op::GetKeyPolicy {
            key_id: cx.key_id("keyId", &required("keyId", self.key_id)?)?,
            policy_name: self.policy_name,
        })
    }

    fn response(
        out: <Self::Op as Operation>::Output,
        _cx: &Cx,
    ) -> std::result::Result<Self::Response, KmsError> {
        Ok(GetKeyPolicyResponse {
            policy: out.policy,
            policy_name: out.policy_name,
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PutKeyPolicy {
    key_id: Option<String>,
    policy_name: Option<String>,
    policy: Option<String>,
}

impl KmsAction for PutKeyPolicy {
    type Op = op::PutKeyPolicy;
    type Response = Empty;

    fn into_op(self, cx: &Cx) -> Result<Self::Op> {
        let policy = required("policy", self.policy)?;
        length("policy", &policy, 1, 131_072)?;
        Ok(op::PutKeyPolicy {
            key_id: cx.key_id("keyId", &required("keyId", self.key_id)?)?,
            policy_name: self.policy_name,
            policy,
        })
    }

    fn response(
        _out: <Self::Op as Operation>::Output,
        _cx: &Cx,
    ) -> std::result::Result<Self::Response, KmsError> {
        Ok(Empty {})
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListKeyPolicies {
    key_id: Option<String>,
    limit: Option<i64>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListKeyPoliciesResponse {
    policy_names: Vec<&'static str>,
    truncated: bool,
}

impl KmsAction for ListKeyPolicies {
    type Op = op::ListKeyPolicies;
    type Response = ListKeyPoliciesResponse;

    fn into_op(self, cx: &Cx) -> Result<Self::Op> {
        if let Some(l) = self.limit {
            range("limit", l, 1, 1000)?;
        }
        Ok(op::ListKeyPolicies {
            key_id: cx.key_id("keyId", &required("keyId", self.key_id)?)?,
        })
    }

    fn response(
        out: <Self::Op as Operation>::Output,
        _cx: &Cx,
    ) -> std::result::Result<Self::Response, KmsError> {
        Ok(ListKeyPoliciesResponse {
            policy_names: out.policy_names,
            truncated: false,
        })
    }
}
