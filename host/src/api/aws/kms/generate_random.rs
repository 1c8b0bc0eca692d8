//! `GenerateRandom` → `generate-random`.

use serde::{Deserialize, Serialize};

use super::{no_recipient, required, KmsAction};
use crate::api::aws::error::KmsError;
use crate::api::aws::ids::{range, Cx};
use crate::error::{Error, Result};
use crate::ops::generate_random as op;
use crate::ops::{Base64, Operation};

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct GenerateRandom {
    number_of_bytes: Option<i64>,
    custom_key_store_id: Option<String>,
    recipient: Option<serde_json::Value>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct GenerateRandomResponse {
    plaintext: Base64,
}

impl KmsAction for GenerateRandom {
    type Op = op::GenerateRandom;
    type Response = GenerateRandomResponse;

    fn into_op(self, _cx: &Cx) -> Result<Self::Op> {
        if self.custom_key_store_id.is_some() {
            return Err(Error::Unsupported("custom key stores".into()));
        }
        no_recipient(self.recipient.as_ref())?;
        let n = required("numberOfBytes", self.number_of_bytes)?;
        range("numberOfBytes", n, 1, 1024)?;
        Ok(op::GenerateRandom {
            number_of_bytes: n as usize,
        })
    }

    fn response(
        out: <Self::Op as Operation>::Output,
        _cx: &Cx,
    ) -> std::result::Result<Self::Response, KmsError> {
        Ok(GenerateRandomResponse {
            plaintext: out.random,
        })
    }
}
