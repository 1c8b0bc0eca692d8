//! `ListKeys` → `list-keys`. `Marker` is the core's page token. Destroyed keys are left out,
//! as AWS forgets deleted keys.

use serde::{Deserialize, Serialize};

use super::metadata::is_destroyed;
use super::KmsAction;
use crate::api::aws::error::KmsError;
use crate::api::aws::ids::{length, range, Cx};
use crate::error::Result;
use crate::ops::list_keys as op;
use crate::ops::Operation;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListKeys {
    limit: Option<i64>,
    marker: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct KeyListEntry {
    key_id: String,
    key_arn: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListKeysResponse {
    keys: Vec<KeyListEntry>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_marker: Option<String>,
    truncated: bool,
}

impl KmsAction for ListKeys {
    type Op = op::ListKeys;
    type Response = ListKeysResponse;

    fn into_op(self, _cx: &Cx) -> Result<Self::Op> {
        let limit = self.limit.unwrap_or(100);
        range("limit", limit, 1, 1000)?;
        if let Some(m) = &self.marker {
            length("marker", m, 1, 1024)?;
        }
        Ok(op::ListKeys {
            limit,
            next_token: self.marker,
        })
    }

    fn response(
        out: <Self::Op as Operation>::Output,
        cx: &Cx,
    ) -> std::result::Result<Self::Response, KmsError> {
        Ok(ListKeysResponse {
            keys: out
                .keys
                .iter()
                // A page may come out shorter than the limit: AWS clients follow the marker.
                .filter(|k| !is_destroyed(&k.state))
                .map(|k| KeyListEntry {
                    key_arn: cx.key_arn(&k.key_id),
                    key_id: k.key_id.clone(),
                })
                .collect(),
            truncated: out.next_token.is_some(),
            next_marker: out.next_token,
        })
    }
}
