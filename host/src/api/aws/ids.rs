//! How AWS names keyplane's keys, aliases and principals. One key space: a key is the same
//! key whichever way it is named.
//!
//! - A tenant is an account (its 12-digit `account_id`).
//! - Key ARN `arn:aws:kms:<region>:<account>:key/<key id>`, alias ARN
//!   `arn:aws:kms:<region>:<account>:alias/<name>`. keyplane has one key space for all
//!   regions: an ARN's region is not checked, and answers name the region the request was
//!   signed for (what the client was configured with).
//! - A `KeyId` field takes a key id, a key ARN, `alias/<name>` or an alias ARN; an ARN of
//!   another account names no key of the caller's.
//! - A principal is `arn:aws:iam::<account>:user/<name>`.
//! - Answers name the partition of the region signed for (`aws-cn` for `cn-north-1`…).

use crate::authn::Principal;
use crate::error::{Error, Result};

/// What a request is translated with: the caller's account and the region the request was
/// signed for (its identifiers), and the RSA encryption algorithm this node's HSM offers
/// (what key metadata lists, as `get-public-key` does).
#[derive(Debug, Clone)]
pub struct Cx {
    pub account_id: String,
    pub region: String,
    /// `RSAES_OAEP_SHA_1` or `RSAES_OAEP_SHA_256`: the OAEP hash the HSM takes (None: none).
    pub rsa_encryption: Option<&'static str>,
}

impl Cx {
    /// An account in `eu-west-1`: the context of the front's unit tests.
    #[cfg(test)]
    pub fn sample() -> Cx {
        Cx {
            account_id: "111122223333".into(),
            region: "eu-west-1".into(),
            rsa_encryption: Some("RSAES_OAEP_SHA_1"),
        }
    }

    /// The AWS partition of the request's region, as the SDKs' partition table has it: an
    /// ARN answered names the partition the client asked in (the AWS Encryption SDK checks
    /// that `Decrypt`'s `KeyId` is the very ARN it asked for).
    pub fn partition(&self) -> &'static str {
        const PARTITIONS: &[(&str, &str)] = &[
            ("cn-", "aws-cn"),
            ("us-gov-", "aws-us-gov"),
            ("us-isob-", "aws-iso-b"),
            ("us-isof-", "aws-iso-f"),
            ("us-iso-", "aws-iso"),
            ("eu-isoe-", "aws-iso-e"),
        ];
        PARTITIONS
            .iter()
            .find(|(prefix, _)| self.region.starts_with(prefix))
            .map_or("aws", |(_, partition)| partition)
    }

    pub fn key_arn(&self, key_id: &str) -> String {
        format!(
            "arn:{}:kms:{}:{}:key/{key_id}",
            self.partition(),
            self.region,
            self.account_id
        )
    }

    /// `alias` is `alias/<name>`.
    pub fn alias_arn(&self, alias: &str) -> String {
        format!(
            "arn:{}:kms:{}:{}:{alias}",
            self.partition(),
            self.region,
            self.account_id
        )
    }

    /// The ARN of the caller's account itself (a grant's `IssuingAccount`).
    pub fn account_arn(&self) -> String {
        format!("arn:{}:iam::{}:root", self.partition(), self.account_id)
    }

    /// The ARN of a principal of the caller's account.
    pub fn principal_arn(&self, p: &Principal) -> String {
        self.user_arn(&p.name)
    }

    /// The ARN of the principal named `name` of the caller's account.
    pub fn user_arn(&self, name: &str) -> String {
        format!(
            "arn:{}:iam::{}:user/{name}",
            self.partition(),
            self.account_id
        )
    }

    /// A principal member (`GranteePrincipal`, `RetiringPrincipal`): a user ARN of the
    /// caller's account, or a principal's id or name, as the core names a principal (id or
    /// name of the caller's tenant). keyplane's principals are users without an IAM path:
    /// a role, an assumed role or a user with a path names something keyplane does not
    /// have, and is refused rather than taken for the user of the same last name (a grant
    /// meant for a role must not go to a user).
    pub fn principal(&self, field: &str, v: &str) -> Result<String> {
        length(field, v, 1, 256)?;
        let Some(rest) = v.strip_prefix("arn:") else {
            return Ok(v.to_string());
        };
        let parts: Vec<&str> = rest.splitn(5, ':').collect();
        let [_partition, "iam", "", account, resource] = parts[..] else {
            return Err(Error::validation(format!(
                "{v} is not a principal: use arn:aws:iam::<account>:user/<name>"
            )));
        };
        if account != self.account_id {
            return Err(Error::OtherTenant {
                kind: "principal",
                id: v.to_string(),
            });
        }
        match resource.strip_prefix("user/") {
            Some(name) if !name.is_empty() && !name.contains('/') => Ok(name.to_string()),
            _ => Err(Error::Unsupported(format!(
                "{v} as a principal: keyplane grants to its own principals, users without \
                 a path (arn:aws:iam::<account>:user/<name>), not to roles or paths"
            ))),
        }
    }

    /// A `KeyId` field (`field` names it in errors) as the core names a key: its id or
    /// `alias/<name>`.
    pub fn key_id(&self, field: &str, v: &str) -> Result<String> {
        length(field, v, 1, 2048)?;
        let Some(rest) = v.strip_prefix("arn:") else {
            return Ok(v.to_string());
        };
        // arn:<partition>:kms:<region>:<account>:<resource>
        let parts: Vec<&str> = rest.splitn(5, ':').collect();
        let [partition, service, _region, account, resource] = parts[..] else {
            return Err(invalid_arn(v));
        };
        if partition.is_empty() || service != "kms" {
            return Err(invalid_arn(v));
        }
        let named = if let Some(id) = resource.strip_prefix("key/") {
            id.to_string()
        } else if resource.starts_with("alias/") {
            resource.to_string()
        } else {
            return Err(invalid_arn(v));
        };
        if account != self.account_id {
            return Err(Error::OtherTenant {
                kind: "key",
                id: v.to_string(),
            });
        }
        Ok(named)
    }

    /// An `AliasName` field naming an alias that exists: `alias/<name>` (an alias ARN is
    /// accepted too). Its characters are checked by the operation, as keyplane's other fronts
    /// name aliases (a Transit key's `.`, an alias made with a `:` before the AWS front
    /// refused it): such an alias can still be updated and deleted here.
    pub fn alias_name(&self, v: &str) -> Result<String> {
        length("aliasName", v, 1, 256)?;
        let name = if v.starts_with("arn:") {
            self.key_id("aliasName", v)?
        } else {
            v.to_string()
        };
        // As AWS answers: `ValidationException`, in its words.
        match name.strip_prefix("alias/") {
            None => Err(Error::validation(format!(
                "Alias must start with the prefix \"alias/\". Please see https://docs.aws.amazon.com/kms/latest/developerguide/kms-alias.html (got {v})"
            ))),
            Some("") => Err(constraint(
                "aliasName",
                "Member must satisfy regular expression pattern: ^[a-zA-Z0-9:/_-]+$",
            )),
            Some(_) => Ok(name),
        }
    }

    /// An `AliasName` field of `CreateAlias`: [`Cx::alias_name`], of letters, digits, '/',
    /// '_' and '-' only (AWS's model pattern also has ':', which AWS refuses: "contains
    /// invalid characters for an alias"; keyplane's own aliases also take '.', for Vault's key
    /// names), and not under the reserved `alias/aws/`.
    pub fn new_alias_name(&self, v: &str) -> Result<String> {
        let name = self.alias_name(v)?;
        let rest = name.strip_prefix("alias/").unwrap_or_default();
        if !rest
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/_-".contains(&b))
        {
            return Err(Error::validation(format!(
                "{name} contains invalid characters for an alias"
            )));
        }
        if name.starts_with("alias/aws/") {
            return Err(Error::InvalidAliasName(
                "alias/aws/ is reserved for AWS managed keys".into(),
            ));
        }
        Ok(name)
    }
}

fn invalid_arn(v: &str) -> Error {
    Error::validation(format!(
        "Invalid arn {v}: a KeyId is a key id, a key ARN (arn:aws:kms:<region>:<account>:key/<id>), alias/<name> or an alias ARN"
    ))
}

/// AWS's wording for a length constraint of the model (`field` in lowerCamelCase, as AWS
/// writes it). A string's length is its count of characters, as the model's (Smithy's)
/// constraints count it, not of UTF-8 bytes.
pub fn length(field: &str, v: &str, min: usize, max: usize) -> Result<()> {
    length_of(field, v.chars().count(), min, max)
}

/// [`length`] of a value already measured (bytes of a blob, entries of a list).
pub fn length_of(field: &str, len: usize, min: usize, max: usize) -> Result<()> {
    if len < min {
        return Err(constraint(
            field,
            &format!("Member must have length greater than or equal to {min}"),
        ));
    }
    if len > max {
        return Err(constraint(
            field,
            &format!("Member must have length less than or equal to {max}"),
        ));
    }
    Ok(())
}

/// A value outside a range of the model.
pub fn range(field: &str, v: i64, min: i64, max: i64) -> Result<()> {
    if v < min {
        return Err(constraint(
            field,
            &format!("Member must have value greater than or equal to {min}"),
        ));
    }
    if v > max {
        return Err(constraint(
            field,
            &format!("Member must have value less than or equal to {max}"),
        ));
    }
    Ok(())
}

/// A value outside the enumeration of the model.
pub fn one_of(field: &str, v: &str, allowed: &[&str]) -> Result<()> {
    if allowed.contains(&v) {
        return Ok(());
    }
    Err(constraint(
        field,
        &format!(
            "Member must satisfy enum value set: [{}]",
            allowed.join(", ")
        ),
    ))
}

/// A value of an enumeration of AWS's model of which keyplane serves `served`: one outside
/// the model is AWS's `ValidationException` (listing the model's values); one of the model
/// keyplane does not have is `UnsupportedOperationException` naming it (`member` as clients
/// spell it) and what keyplane has: the request is well formed, and asks for something
/// keyplane does not do, as for the actions it does not serve.
pub fn served_of(
    field: &str,
    member: &str,
    v: &str,
    model: &[&str],
    served: &[&str],
) -> Result<()> {
    one_of(field, v, model)?;
    if served.contains(&v) {
        return Ok(());
    }
    Err(Error::Unsupported(format!(
        "{member} {v}: keyplane has {}",
        served.join(", ")
    )))
}

fn constraint(field: &str, what: &str) -> Error {
    Error::validation(format!(
        "1 validation error detected: Value at '{field}' failed to satisfy constraint: {what}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cx() -> Cx {
        Cx::sample()
    }

    #[test]
    fn every_way_of_naming_a_key_names_the_same_key() {
        let cx = cx();
        for v in [
            "k-1",
            "arn:aws:kms:eu-west-1:111122223333:key/k-1",
            "arn:aws:kms:us-east-1:111122223333:key/k-1",
        ] {
            assert_eq!(cx.key_id("keyId", v).unwrap(), "k-1", "{v}");
        }
        for v in ["alias/a", "arn:aws:kms:eu-west-1:111122223333:alias/a"] {
            assert_eq!(cx.key_id("keyId", v).unwrap(), "alias/a", "{v}");
        }
        assert!(matches!(
            cx.key_id("keyId", "arn:aws:kms:eu-west-1:999988887777:key/k-1"),
            Err(Error::OtherTenant { .. })
        ));
        for bad in [
            "arn:aws:s3:eu-west-1:111122223333:key/k-1",
            "arn:aws:kms:eu-west-1:111122223333:grant/g",
            "arn:aws:kms",
        ] {
            assert!(
                matches!(cx.key_id("keyId", bad), Err(Error::Validation(_))),
                "{bad}"
            );
        }
        assert_eq!(
            cx.key_arn("k-1"),
            "arn:aws:kms:eu-west-1:111122223333:key/k-1"
        );
    }

    #[test]
    fn a_principal_is_a_user_of_the_account_and_nothing_else() {
        let cx = cx();
        for (v, name) in [
            ("deploy", "deploy"),
            ("arn:aws:iam::111122223333:user/deploy", "deploy"),
            ("arn:aws-cn:iam::111122223333:user/deploy", "deploy"),
        ] {
            assert_eq!(cx.principal("granteePrincipal", v).unwrap(), name, "{v}");
        }
        for other in [
            "arn:aws:iam::111122223333:role/deploy",
            "arn:aws:sts::111122223333:assumed-role/deploy/session",
            "arn:aws:iam::111122223333:user/team/deploy",
            "arn:aws:iam::111122223333:user/",
        ] {
            assert!(
                matches!(
                    cx.principal("granteePrincipal", other),
                    Err(Error::Unsupported(_) | Error::Validation(_))
                ),
                "{other}"
            );
        }
        assert!(matches!(
            cx.principal("granteePrincipal", "arn:aws:iam::999988887777:user/deploy"),
            Err(Error::OtherTenant { .. })
        ));
    }

    #[test]
    fn answers_name_the_partition_of_the_region() {
        for (region, arn) in [
            ("eu-west-1", "arn:aws:kms:eu-west-1:111122223333:key/k"),
            ("cn-north-1", "arn:aws-cn:kms:cn-north-1:111122223333:key/k"),
            (
                "us-gov-west-1",
                "arn:aws-us-gov:kms:us-gov-west-1:111122223333:key/k",
            ),
        ] {
            let cx = Cx {
                region: region.into(),
                ..Cx::sample()
            };
            assert_eq!(cx.key_arn("k"), arn);
            assert_eq!(cx.key_id("keyId", arn).unwrap(), "k");
        }
    }

    #[test]
    fn alias_names_are_aws_alias_names() {
        let cx = Cx::sample();
        assert_eq!(
            cx.new_alias_name("alias/a/b_c-D9").unwrap(),
            "alias/a/b_c-D9"
        );
        for bad in [
            "alias/app.prod",
            "alias/a:b",
            "alias/a b",
            "alias/",
            "app",
            "aliasx/a",
        ] {
            assert!(
                matches!(cx.new_alias_name(bad), Err(Error::Validation(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            cx.new_alias_name("alias/aws/x"),
            Err(Error::InvalidAliasName(_))
        ));
        // An alias that exists may have been named by another front.
        for existing in ["alias/app.prod", "alias/a:b"] {
            assert_eq!(cx.alias_name(existing).unwrap(), existing);
        }
        for bad in ["alias/", "app"] {
            assert!(matches!(cx.alias_name(bad), Err(Error::Validation(_))));
        }
    }

    /// Outside the model, AWS's validation error; in it but not keyplane's, unsupported,
    /// naming the value and what keyplane has.
    #[test]
    fn a_value_of_the_model_keyplane_lacks_is_unsupported() {
        let model = ["A", "B", "C"];
        assert!(served_of("f", "F", "A", &model, &["A", "B"]).is_ok());
        let Err(Error::Unsupported(m)) = served_of("f", "F", "C", &model, &["A", "B"]) else {
            panic!("C is the model's, not keyplane's")
        };
        assert_eq!(m, "F C: keyplane has A, B");
        let Err(Error::Validation(m)) = served_of("f", "F", "D", &model, &["A", "B"]) else {
            panic!("D is outside the model")
        };
        assert!(
            m.ends_with("Member must satisfy enum value set: [A, B, C]"),
            "{m}"
        );
    }

    #[test]
    fn constraints_are_worded_as_aws_words_them() {
        let e = length_of("plaintext", 4097, 1, 4096).unwrap_err();
        assert_eq!(
            e.to_string(),
            "1 validation error detected: Value at 'plaintext' failed to satisfy constraint: Member must have length less than or equal to 4096"
        );
    }
}
