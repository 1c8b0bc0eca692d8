//! `RotateKeyOnDemand` → `rotate-key`, `ListKeyRotations` → `list-key-versions` (every
//! version after the first is a rotation; `Marker` is the version to start after).

use serde::{Deserialize, Serialize};

use super::{epoch, required, KmsAction};
use crate::api::aws::error::KmsError;
use crate::api::aws::ids::{range, Cx};
use crate::error::{Error, Result};
use crate::ops::rotate_key as op;
use crate::ops::Operation;
use crate::store::keys::ROTATION_AUTOMATIC;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RotateKeyOnDemand {
    key_id: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct RotateKeyOnDemandResponse {
    key_id: String,
}

impl KmsAction for RotateKeyOnDemand {
    type Op = op::RotateKey;
    type Response = RotateKeyOnDemandResponse;

    fn into_op(self, cx: &Cx) -> Result<Self::Op> {
        Ok(op::RotateKey {
            key_id: cx.key_id("keyId", &required("keyId", self.key_id)?)?,
            only_symmetric_encryption: true,
        })
    }

    fn response(
        out: <Self::Op as Operation>::Output,
        cx: &Cx,
    ) -> std::result::Result<Self::Response, KmsError> {
        Ok(RotateKeyOnDemandResponse {
            key_id: cx.key_arn(&out.key_id),
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListKeyRotations {
    key_id: Option<String>,
    limit: Option<i64>,
    marker: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Rotation {
    key_id: String,
    rotation_date: Option<i64>,
    rotation_type: &'static str,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListKeyRotationsResponse {
    rotations: Vec<Rotation>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_marker: Option<String>,
    truncated: bool,
}

impl KmsAction for ListKeyRotations {
    type Op = op::ListKeyVersions;
    type Response = ListKeyRotationsResponse;

    fn into_op(self, cx: &Cx) -> Result<Self::Op> {
        let limit = self.limit.unwrap_or(100);
        range("limit", limit, 1, 1000)?;
        // The first version is the key's creation, not a rotation: listing starts after it.
        let after_version = match &self.marker {
            None => 1,
            Some(m) => m
                .parse::<i64>()
                .ok()
                .filter(|v| *v >= 1)
                .ok_or_else(|| Error::InvalidMarker(format!("Invalid marker: {m}")))?,
        };
        Ok(op::ListKeyVersions {
            key_id: cx.key_id("keyId", &required("keyId", self.key_id)?)?,
            after_version: Some(after_version),
            limit: Some(limit),
        })
    }

    fn response(
        out: <Self::Op as Operation>::Output,
        cx: &Cx,
    ) -> std::result::Result<Self::Response, KmsError> {
        let arn = cx.key_arn(&out.key_id);
        Ok(ListKeyRotationsResponse {
            next_marker: out
                .truncated
                .then(|| out.versions.last().map(|v| v.version.to_string()))
                .flatten(),
            truncated: out.truncated,
            rotations: out
                .versions
                .iter()
                .map(|v| Rotation {
                    key_id: arn.clone(),
                    rotation_date: epoch(&v.created_at),
                    rotation_type: match v.rotation.as_deref() {
                        Some(ROTATION_AUTOMATIC) => "AUTOMATIC",
                        _ => "ON_DEMAND",
                    },
                })
                .collect(),
        })
    }
}
