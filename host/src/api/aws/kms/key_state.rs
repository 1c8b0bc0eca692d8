//! `EnableKey` → `enable-key`, `DisableKey` → `disable-key`. Both answer nothing.

use serde::{Deserialize, Serialize};

use super::{required, KmsAction};
use crate::api::aws::error::KmsError;
use crate::api::aws::ids::Cx;
use crate::error::Result;
use crate::ops::key_state::{self as op, KeyRef};
use crate::ops::Operation;

/// The empty response of actions that answer nothing.
#[derive(Debug, Serialize)]
pub struct Empty {}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct KeyIdOnly {
    key_id: Option<String>,
}

impl KeyIdOnly {
    fn key_ref(self, cx: &Cx) -> Result<KeyRef> {
        Ok(KeyRef {
            key_id: cx.key_id("keyId", &required("keyId", self.key_id)?)?,
        })
    }
}

macro_rules! key_state_action {
    ($ty:ident, $op:ident) => {
        #[derive(Debug, Deserialize)]
        #[serde(transparent)]
        pub struct $ty(KeyIdOnly);

        impl KmsAction for $ty {
            type Op = op::$op;
            type Response = Empty;

            fn into_op(self, cx: &Cx) -> Result<Self::Op> {
                Ok(op::$op(self.0.key_ref(cx)?))
            }

            fn response(
                _out: <Self::Op as Operation>::Output,
                _cx: &Cx,
            ) -> std::result::Result<Self::Response, KmsError> {
                Ok(Empty {})
            }
        }
    };
}

key_state_action!(EnableKey, EnableKey);
key_state_action!(DisableKey, DisableKey);
