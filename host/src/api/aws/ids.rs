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

use crate::authn::Principal;
use crate::error::{Error, Result};

/// What a request's identifiers are translated with: the caller's account and the region the
/// request was signed for.
#[derive(Debug, Clone)]
pub struct Cx {
    pub account_id: String,
    pub region: String,
}

impl Cx {
    pub fn key_arn(&self, key_id: &str) -> String {
        format!(
            "arn:aws:kms:{}:{}:key/{key_id}",
            self.region, self.account_id
        )
    }

    /// `alias` is `alias/<name>`.
    pub fn alias_arn(&self, alias: &str) -> String {
        format!("arn:aws:kms:{}:{}:{alias}", self.region, self.account_id)
    }

    /// The ARN of a principal of the caller's account.
    pub fn principal_arn(&self, p: &Principal) -> String {
        self.user_arn(&p.name)
    }

    /// The ARN of the principal named `name` of the caller's account.
    pub fn user_arn(&self, name: &str) -> String {
        format!("arn:aws:iam::{}:user/{name}", self.account_id)
    }

    /// A principal member (`GranteePrincipal`, `RetiringPrincipal`): a user or role ARN of
    /// the caller's account, or a principal's id or name, as the core names a principal (id
    /// or name of the caller's tenant).
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
        match resource
            .strip_prefix("user/")
            .or_else(|| resource.strip_prefix("role/"))
        {
            Some(name) if !name.is_empty() => {
                Ok(name.rsplit('/').next().unwrap_or(name).to_string())
            }
            _ => Err(Error::Unsupported(format!(
                "{v} as a principal: keyplane grants to its own principals (user/<name>)"
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

    /// An `AliasName` field: `alias/<name>` (an alias ARN is accepted too).
    pub fn alias_name(&self, v: &str) -> Result<String> {
        length("aliasName", v, 1, 256)?;
        let name = if v.starts_with("arn:") {
            self.key_id("aliasName", v)?
        } else {
            v.to_string()
        };
        if !name.starts_with("alias/") {
            return Err(Error::InvalidAliasName(format!(
                "Alias must start with the prefix \"alias/\". Please see https://docs.aws.amazon.com/kms/latest/developerguide/kms-alias.html (got {v})"
            )));
        }
        // keyplane's aliases also take '.', for Vault's key names; AWS's do not.
        if name.contains('.') {
            return Err(constraint(
                "aliasName",
                "Member must satisfy regular expression pattern: ^[a-zA-Z0-9:/_-]+$",
            ));
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
/// writes it).
pub fn length(field: &str, v: &str, min: usize, max: usize) -> Result<()> {
    length_of(field, v.len(), min, max)
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

fn constraint(field: &str, what: &str) -> Error {
    Error::validation(format!(
        "1 validation error detected: Value at '{field}' failed to satisfy constraint: {what}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cx() -> Cx {
        Cx {
            account_id: "111122223333".into(),
            region: "eu-west-1".into(),
        }
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
    fn alias_names_are_aws_alias_names() {
        let cx = Cx {
            account_id: "111122223333".into(),
            region: "eu-west-1".into(),
        };
        assert_eq!(cx.alias_name("alias/a:b").unwrap(), "alias/a:b");
        assert!(matches!(
            cx.alias_name("alias/app.prod"),
            Err(Error::Validation(_))
        ));
        assert!(matches!(
            cx.alias_name("alias/aws/x"),
            Err(Error::InvalidAliasName(_))
        ));
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
