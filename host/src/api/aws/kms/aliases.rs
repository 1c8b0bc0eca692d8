//! `CreateAlias`, `UpdateAlias`, `DeleteAlias` and `ListAliases` → the alias operations.

use serde::{Deserialize, Serialize};

use super::key_state::Empty;
use super::{epoch, required, KmsAction};
use crate::api::aws::error::KmsError;
use crate::api::aws::ids::{length, range, Cx};
use crate::error::{Error, Result};
use crate::ops::aliases::{self as op, AliasTarget};
use crate::ops::Operation;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AliasRequest {
    alias_name: Option<String>,
    target_key_id: Option<String>,
}

impl AliasRequest {
    /// The alias and its target; `new`: the alias is being created (AWS's rules for a new
    /// name), else it names one that exists (which keyplane's other fronts may have named
    /// more freely).
    fn target(self, cx: &Cx, new: bool) -> Result<AliasTarget> {
        let alias_name = required("aliasName", self.alias_name)?;
        let alias_name = if new {
            cx.new_alias_name(&alias_name)?
        } else {
            cx.alias_name(&alias_name)?
        };
        let target = cx.key_id("targetKeyId", &required("targetKeyId", self.target_key_id)?)?;
        if target.starts_with("alias/") {
            return Err(Error::validation(
                "TargetKeyId must be a key id or key ARN, not an alias",
            ));
        }
        Ok(AliasTarget {
            alias_name,
            target_key_id: target,
        })
    }
}

macro_rules! alias_action {
    ($ty:ident, $new:expr) => {
        #[derive(Debug, Deserialize)]
        #[serde(transparent)]
        pub struct $ty(AliasRequest);

        impl KmsAction for $ty {
            type Op = op::$ty;
            type Response = Empty;

            fn into_op(self, cx: &Cx) -> Result<Self::Op> {
                Ok(op::$ty(self.0.target(cx, $new)?))
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

alias_action!(CreateAlias, true);
alias_action!(UpdateAlias, false);

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DeleteAlias {
    alias_name: Option<String>,
}

impl KmsAction for DeleteAlias {
    type Op = op::DeleteAlias;
    type Response = Empty;

    fn into_op(self, cx: &Cx) -> Result<Self::Op> {
        Ok(op::DeleteAlias {
            alias_name: cx.alias_name(&required("aliasName", self.alias_name)?)?,
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
pub struct ListAliases {
    key_id: Option<String>,
    limit: Option<i64>,
    marker: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct AliasListEntry {
    alias_name: String,
    alias_arn: String,
    target_key_id: String,
    creation_date: Option<i64>,
    last_updated_date: Option<i64>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListAliasesResponse {
    aliases: Vec<AliasListEntry>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_marker: Option<String>,
    truncated: bool,
}

impl KmsAction for ListAliases {
    type Op = op::ListAliases;
    type Response = ListAliasesResponse;

    fn into_op(self, cx: &Cx) -> Result<Self::Op> {
        let limit = self.limit.unwrap_or(50);
        range("limit", limit, 1, 100)?;
        if let Some(m) = &self.marker {
            length("marker", m, 1, 1024)?;
        }
        Ok(op::ListAliases {
            key_id: self.key_id.map(|k| cx.key_id("keyId", &k)).transpose()?,
            limit: Some(limit),
            next_token: self.marker,
        })
    }

    fn response(
        out: <Self::Op as Operation>::Output,
        cx: &Cx,
    ) -> std::result::Result<Self::Response, KmsError> {
        Ok(ListAliasesResponse {
            aliases: out
                .aliases
                .into_iter()
                .map(|a| AliasListEntry {
                    alias_arn: cx.alias_arn(&a.name),
                    creation_date: epoch(&a.created_at),
                    last_updated_date: epoch(&a.updated_at),
                    alias_name: a.name,
                    target_key_id: a.key_id,
                })
                .collect(),
            truncated: out.next_token.is_some(),
            next_marker: out.next_token,
        })
    }
}
