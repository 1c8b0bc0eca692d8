//! `CreateGrant`, `ListGrants`, `RevokeGrant`, `RetireGrant`, `ListRetirableGrants` → the
//! grant operations. AWS's grant operation names become keyplane's Cedar actions (one for
//! one: `ReEncryptFrom` is `Rewrap`, `ReEncryptTo` is `RewrapTo`); principals are ARNs of the
//! caller's account on the wire and principals of its tenant inside.

use serde::{Deserialize, Serialize};

use super::key_state::Empty;
use super::{epoch, required, KmsAction};
use crate::api::aws::error::KmsError;
use crate::api::aws::ids::{length, range, Cx};
use crate::crypto::context::EncryptionContext;
use crate::error::{Error, Result};
use crate::ops::grants::{self as op, Constraints, GrantInfo};
use crate::ops::Operation;

/// (AWS grant operation, keyplane Cedar action).
const OPERATIONS: &[(&str, &str)] = &[
    ("Decrypt", "Decrypt"),
    ("Encrypt", "Encrypt"),
    ("GenerateDataKey", "GenerateDataKey"),
    (
        "GenerateDataKeyWithoutPlaintext",
        "GenerateDataKeyWithoutPlaintext",
    ),
    ("GenerateDataKeyPair", "GenerateDataKeyPair"),
    (
        "GenerateDataKeyPairWithoutPlaintext",
        "GenerateDataKeyPairWithoutPlaintext",
    ),
    ("ReEncryptFrom", "Rewrap"),
    ("ReEncryptTo", "RewrapTo"),
    ("Sign", "Sign"),
    ("Verify", "Verify"),
    ("GetPublicKey", "GetPublicKey"),
    ("CreateGrant", "CreateGrant"),
    ("RetireGrant", "RetireGrant"),
    ("DescribeKey", "DescribeKey"),
    ("GenerateMac", "GenerateMac"),
    ("VerifyMac", "VerifyMac"),
    ("DeriveSharedSecret", "DeriveSharedSecret"),
];

/// `GrantOperation` values of AWS's model keyplane has no action for: they are ML-KEM key
/// operations, and keyplane has no ML-KEM keys (unsupported, as the actions are).
const NOT_GRANTABLE: &[&str] = &["Encapsulate", "Decapsulate"];

fn to_action(aws: &str) -> Result<String> {
    if let Some((_, action)) = OPERATIONS.iter().find(|(a, _)| *a == aws) {
        return Ok(action.to_string());
    }
    if NOT_GRANTABLE.contains(&aws) {
        return Err(Error::Unsupported(format!(
            "grant operation {aws}: keyplane has no ML-KEM keys"
        )));
    }
    let names: Vec<&str> = OPERATIONS
        .iter()
        .map(|(a, _)| *a)
        .chain(NOT_GRANTABLE.iter().copied())
        .collect();
    Err(Error::validation(format!(
        "1 validation error detected: Value '[{aws}]' at 'operations' failed to satisfy constraint: Member must satisfy constraint: [Member must satisfy enum value set: [{}]]",
        names.join(", ")
    )))
}

/// The AWS name of a grant's action: every grantable action has one (a test checks); one
/// that had none would keep its own name rather than be shown as another.
fn to_aws(action: &str) -> &str {
    OPERATIONS
        .iter()
        .find(|(_, k)| *k == action)
        .map_or(action, |(a, _)| *a)
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct GrantConstraints {
    #[serde(skip_serializing_if = "Option::is_none")]
    encryption_context_subset: Option<EncryptionContext>,
    #[serde(skip_serializing_if = "Option::is_none")]
    encryption_context_equals: Option<EncryptionContext>,
    /// Read only to be refused: a grant limited to requests made on behalf of an AWS
    /// resource, which keyplane has no notion of. Dropped, it would make the grant wider
    /// than asked.
    #[serde(skip_serializing)]
    source_arn: Option<String>,
}

/// Refuse a member of the model for grants to AWS services (service principals, `SourceArn`):
/// keyplane has none, and ignoring one would widen or misdirect a grant.
fn refuse_service(member: &str, given: bool) -> Result<()> {
    if given {
        return Err(Error::Unsupported(format!(
            "{member}: grants to AWS service principals"
        )));
    }
    Ok(())
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CreateGrant {
    key_id: Option<String>,
    grantee_principal: Option<String>,
    retiring_principal: Option<String>,
    grantee_service_principal: Option<String>,
    retiring_service_principal: Option<String>,
    operations: Option<Vec<String>>,
    constraints: Option<GrantConstraints>,
    name: Option<String>,
    #[serde(default)]
    dry_run: bool,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct CreateGrantResponse {
    grant_token: String,
    grant_id: String,
}

impl KmsAction for CreateGrant {
    type Op = op::CreateGrant;
    type Response = CreateGrantResponse;

    fn dry_run(&self) -> bool {
        self.dry_run
    }

    fn into_op(self, cx: &Cx) -> Result<Self::Op> {
        refuse_service(
            "GranteeServicePrincipal",
            self.grantee_service_principal.is_some(),
        )?;
        refuse_service(
            "RetiringServicePrincipal",
            self.retiring_service_principal.is_some(),
        )?;
        refuse_service(
            "Constraints.SourceArn",
            self.constraints
                .as_ref()
                .is_some_and(|c| c.source_arn.is_some()),
        )?;
        let grantee = required("granteePrincipal", self.grantee_principal)?;
        let operations = required("operations", self.operations)?;
        if let Some(n) = &self.name {
            length("name", n, 1, 256)?;
        }
        Ok(op::CreateGrant {
            key_id: cx.key_id("keyId", &required("keyId", self.key_id)?)?,
            grantee_principal: cx.principal("granteePrincipal", &grantee)?,
            operations: operations
                .iter()
                .map(|o| to_action(o))
                .collect::<Result<_>>()?,
            retiring_principal: self
                .retiring_principal
                .map(|p| cx.principal("retiringPrincipal", &p))
                .transpose()?,
            constraints: self.constraints.map(|c| Constraints {
                encryption_context_subset: c.encryption_context_subset,
                encryption_context_equals: c.encryption_context_equals,
            }),
            name: self.name,
        })
    }

    fn response(
        out: <Self::Op as Operation>::Output,
        _cx: &Cx,
    ) -> std::result::Result<Self::Response, KmsError> {
        Ok(CreateGrantResponse {
            grant_token: out.grant_token,
            grant_id: out.grant_id,
        })
    }
}

/// A grant as `ListGrants` and `ListRetirableGrants` answer it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct GrantListEntry {
    key_id: String,
    grant_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    creation_date: Option<i64>,
    grantee_principal: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    retiring_principal: Option<String>,
    issuing_account: String,
    operations: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    constraints: Option<GrantConstraints>,
}

fn entry(g: GrantInfo, cx: &Cx) -> GrantListEntry {
    GrantListEntry {
        key_id: cx.key_arn(&g.key_id),
        grant_id: g.grant_id,
        name: g.name,
        creation_date: epoch(&g.created_at),
        // A principal deleted since is named by its id, as AWS names a deleted IAM entity by
        // its unique id: an ARN of no name would not be an ARN.
        grantee_principal: if g.grantee_name.is_empty() {
            g.grantee_principal
        } else {
            cx.user_arn(&g.grantee_name)
        },
        retiring_principal: match g.retiring_name {
            Some(name) => Some(cx.user_arn(&name)),
            None => g.retiring_principal,
        },
        issuing_account: cx.account_arn(),
        operations: g.operations.iter().map(|o| to_aws(o).to_string()).collect(),
        constraints: g.constraints.map(|c| GrantConstraints {
            encryption_context_subset: c.encryption_context_subset,
            encryption_context_equals: c.encryption_context_equals,
            source_arn: None,
        }),
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListGrantsResponse {
    grants: Vec<GrantListEntry>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_marker: Option<String>,
    truncated: bool,
}

fn list_response(out: op::ListGrantsOutput, cx: &Cx) -> ListGrantsResponse {
    ListGrantsResponse {
        grants: out.grants.into_iter().map(|g| entry(g, cx)).collect(),
        truncated: out.next_token.is_some(),
        next_marker: out.next_token,
    }
}

fn page(limit: Option<i64>, marker: &Option<String>) -> Result<i64> {
    let limit = limit.unwrap_or(50);
    range("limit", limit, 1, 100)?;
    if let Some(m) = marker {
        length("marker", m, 1, 1024)?;
    }
    Ok(limit)
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListGrants {
    key_id: Option<String>,
    grant_id: Option<String>,
    grantee_principal: Option<String>,
    grantee_service_principal: Option<String>,
    limit: Option<i64>,
    marker: Option<String>,
}

impl KmsAction for ListGrants {
    type Op = op::ListGrants;
    type Response = ListGrantsResponse;

    fn into_op(self, cx: &Cx) -> Result<Self::Op> {
        refuse_service(
            "GranteeServicePrincipal",
            self.grantee_service_principal.is_some(),
        )?;
        let limit = page(self.limit, &self.marker)?;
        Ok(op::ListGrants {
            key_id: cx.key_id("keyId", &required("keyId", self.key_id)?)?,
            grant_id: self.grant_id,
            grantee_principal: self
                .grantee_principal
                .map(|p| cx.principal("granteePrincipal", &p))
                .transpose()?,
            limit: Some(limit),
            next_token: self.marker,
        })
    }

    fn response(
        out: <Self::Op as Operation>::Output,
        cx: &Cx,
    ) -> std::result::Result<Self::Response, KmsError> {
        Ok(list_response(out, cx))
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListRetirableGrants {
    retiring_principal: Option<String>,
    retiring_service_principal: Option<String>,
    limit: Option<i64>,
    marker: Option<String>,
}

impl KmsAction for ListRetirableGrants {
    type Op = op::ListRetirableGrants;
    type Response = ListGrantsResponse;

    fn into_op(self, cx: &Cx) -> Result<Self::Op> {
        refuse_service(
            "RetiringServicePrincipal",
            self.retiring_service_principal.is_some(),
        )?;
        let limit = page(self.limit, &self.marker)?;
        let retiring = required("retiringPrincipal", self.retiring_principal)?;
        Ok(op::ListRetirableGrants {
            retiring_principal: Some(cx.principal("retiringPrincipal", &retiring)?),
            limit: Some(limit),
            next_token: self.marker,
        })
    }

    fn response(
        out: <Self::Op as Operation>::Output,
        cx: &Cx,
    ) -> std::result::Result<Self::Response, KmsError> {
        Ok(list_response(out, cx))
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RevokeGrant {
    key_id: Option<String>,
    grant_id: Option<String>,
    #[serde(default)]
    dry_run: bool,
}

impl KmsAction for RevokeGrant {
    type Op = op::RevokeGrant;
    type Response = Empty;

    fn dry_run(&self) -> bool {
        self.dry_run
    }

    fn into_op(self, cx: &Cx) -> Result<Self::Op> {
        Ok(op::RevokeGrant {
            key_id: cx.key_id("keyId", &required("keyId", self.key_id)?)?,
            grant_id: required("grantId", self.grant_id)?,
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
pub struct RetireGrant {
    grant_token: Option<String>,
    key_id: Option<String>,
    grant_id: Option<String>,
    #[serde(default)]
    dry_run: bool,
}

impl KmsAction for RetireGrant {
    type Op = op::RetireGrant;
    type Response = Empty;

    fn dry_run(&self) -> bool {
        self.dry_run
    }

    fn into_op(self, cx: &Cx) -> Result<Self::Op> {
        if self.grant_token.is_none() && self.grant_id.is_none() {
            return Err(Error::validation(
                "RetireGrant takes a GrantToken, or a KeyId and a GrantId",
            ));
        }
        Ok(op::RetireGrant::new(
            self.grant_id,
            self.grant_token,
            self.key_id.map(|k| cx.key_id("keyId", &k)).transpose()?,
        ))
    }

    fn response(
        _out: <Self::Op as Operation>::Output,
        _cx: &Cx,
    ) -> std::result::Result<Self::Response, KmsError> {
        Ok(Empty {})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every action a grant may name has its AWS name, both ways (a grant made through the
    /// native API is listed as what it allows, and AWS clients may grant every operation).
    #[test]
    fn every_grantable_action_has_an_aws_name() {
        for action in crate::ops::grants::GRANTABLE {
            let aws = to_aws(action);
            assert!(
                OPERATIONS.iter().any(|(a, _)| *a == aws),
                "{action} has no AWS name"
            );
            assert_eq!(to_action(aws).unwrap(), *action);
        }
    }
}
