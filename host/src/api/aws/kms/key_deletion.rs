//! `ScheduleKeyDeletion` → `schedule-key-deletion`, `CancelKeyDeletion` →
//! `cancel-key-deletion`. The shipped policies guard deletion as for every front: it needs a
//! second admin's `approve-key-deletion` (native API) or MFA.

use serde::{Deserialize, Serialize};

use super::{epoch, required, KmsAction};
use crate::api::aws::error::KmsError;
use crate::api::aws::ids::{range, Cx};
use crate::error::Result;
use crate::ops::key_deletion::{self as op, DEFAULT_WINDOW_DAYS, MAX_WINDOW_DAYS, MIN_WINDOW_DAYS};
use crate::ops::Operation;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ScheduleKeyDeletion {
    key_id: Option<String>,
    pending_window_in_days: Option<i64>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ScheduleKeyDeletionResponse {
    key_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    deletion_date: Option<i64>,
    key_state: &'static str,
    pending_window_in_days: i64,
}

impl KmsAction for ScheduleKeyDeletion {
    type Op = op::ScheduleKeyDeletion;
    type Response = ScheduleKeyDeletionResponse;

    fn into_op(self, cx: &Cx) -> Result<Self::Op> {
        let key_id = cx.key_id("keyId", &required("keyId", self.key_id)?)?;
        let days = self
            .pending_window_in_days
            .unwrap_or(i64::from(DEFAULT_WINDOW_DAYS));
        range(
            "pendingWindowInDays",
            days,
            i64::from(MIN_WINDOW_DAYS),
            i64::from(MAX_WINDOW_DAYS),
        )?;
        Ok(op::ScheduleKeyDeletion::new(key_id, Some(days as u32)))
    }

    fn response(
        out: <Self::Op as Operation>::Output,
        cx: &Cx,
    ) -> std::result::Result<Self::Response, KmsError> {
        Ok(ScheduleKeyDeletionResponse {
            key_id: cx.key_arn(&out.key_id),
            deletion_date: out.deletion_date.as_deref().and_then(epoch),
            key_state: "PendingDeletion",
            pending_window_in_days: i64::from(
                out.pending_window_days.unwrap_or(DEFAULT_WINDOW_DAYS),
            ),
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CancelKeyDeletion {
    key_id: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct CancelKeyDeletionResponse {
    key_id: String,
}

impl KmsAction for CancelKeyDeletion {
    type Op = op::CancelKeyDeletion;
    type Response = CancelKeyDeletionResponse;

    fn into_op(self, cx: &Cx) -> Result<Self::Op> {
        Ok(op::CancelKeyDeletion {
            key_id: cx.key_id("keyId", &required("keyId", self.key_id)?)?,
        })
    }

    fn response(
        out: <Self::Op as Operation>::Output,
        cx: &Cx,
    ) -> std::result::Result<Self::Response, KmsError> {
        Ok(CancelKeyDeletionResponse {
            key_id: cx.key_arn(&out.key_id),
        })
    }
}
