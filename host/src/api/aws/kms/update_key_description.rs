//! `UpdateKeyDescription` → `update-key-description`.

use serde::Deserialize;

use super::key_state::Empty;
use super::{required, KmsAction};
use crate::api::aws::error::KmsError;
use crate::api::aws::ids::{length, Cx};
use crate::error::Result;
use crate::ops::update_key_description as op;
use crate::ops::Operation;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct UpdateKeyDescription {
    key_id: Option<String>,
    description: Option<String>,
}

impl KmsAction for UpdateKeyDescription {
    type Op = op::UpdateKeyDescription;
    type Response = Empty;

    fn into_op(self, cx: &Cx) -> Result<Self::Op> {
        let description = required("description", self.description)?;
        length("description", &description, 0, 8192)?;
        Ok(op::UpdateKeyDescription {
            key_id: cx.key_id("keyId", &required("keyId", self.key_id)?)?,
            description,
        })
    }

    fn response(
        _out: <Self::Op as Operation>::Output,
        _cx: &Cx,
    ) -> std::result::Result<Self::Response, KmsError> {
        Ok(Empty {})
    }
}
