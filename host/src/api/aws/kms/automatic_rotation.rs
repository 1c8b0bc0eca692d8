//! `EnableKeyRotation` → `enable-key-rotation`, `DisableKeyRotation` →
//! `disable-key-rotation`, `GetKeyRotationStatus` → `get-key-rotation-status`.

use serde::{Deserialize, Serialize};

use super::key_state::Empty;
use super::{epoch, required, KmsAction};
use crate::api::aws::error::KmsError;
use crate::api::aws::ids::{range, Cx};
use crate::error::Result;
use crate::ops::automatic_rotation::{self as op, MAX_PERIOD_DAYS};

/// AWS's shortest rotation period (keyplane's own is a day: Vault Transit users rotate more
/// often than AWS allows).
const AWS_MIN_PERIOD_DAYS: i64 = 90;
use crate::ops::Operation;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct EnableKeyRotation {
    key_id: Option<String>,
    rotation_period_in_days: Option<i64>,
}

impl KmsAction for EnableKeyRotation {
    type Op = op::EnableKeyRotation;
    type Response = Empty;

    fn into_op(self, cx: &Cx) -> Result<Self::Op> {
        if let Some(d) = self.rotation_period_in_days {
            range(
                "rotationPeriodInDays",
                d,
                AWS_MIN_PERIOD_DAYS,
                MAX_PERIOD_DAYS,
            )?;
        }
        Ok(op::EnableKeyRotation {
            key_id: cx.key_id("keyId", &required("keyId", self.key_id)?)?,
            rotation_period_days: self.rotation_period_in_days,
            only_symmetric_encryption: true,
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
pub struct DisableKeyRotation {
    key_id: Option<String>,
}

impl KmsAction for DisableKeyRotation {
    type Op = op::DisableKeyRotation;
    type Response = Empty;

    fn into_op(self, cx: &Cx) -> Result<Self::Op> {
        Ok(op::DisableKeyRotation {
            key_id: cx.key_id("keyId", &required("keyId", self.key_id)?)?,
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
pub struct GetKeyRotationStatus {
    key_id: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct GetKeyRotationStatusResponse {
    key_rotation_enabled: bool,
    key_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    rotation_period_in_days: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_rotation_date: Option<i64>,
}

impl KmsAction for GetKeyRotationStatus {
    type Op = op::GetKeyRotationStatus;
    type Response = GetKeyRotationStatusResponse;

    fn into_op(self, cx: &Cx) -> Result<Self::Op> {
        Ok(op::GetKeyRotationStatus {
            key_id: cx.key_id("keyId", &required("keyId", self.key_id)?)?,
        })
    }

    fn response(
        out: <Self::Op as Operation>::Output,
        cx: &Cx,
    ) -> std::result::Result<Self::Response, KmsError> {
        Ok(GetKeyRotationStatusResponse {
            key_rotation_enabled: out.rotation_enabled,
            key_id: cx.key_arn(&out.key_id),
            rotation_period_in_days: out.rotation_period_days,
            next_rotation_date: out.next_rotation_at.as_deref().and_then(epoch),
        })
    }
}
