//! Checks of request values that need no database or HSM: the shapes of key ids, alias
//! names, tenant and principal names, and message sizes.

use crate::crypto::ciphertext::MAX_KEY_ID_LEN;
use crate::error::{Error, Result};

pub const KEY_SPEC_AES_256_GCM: &str = "AES_256_GCM";

/// Prefix of alias names.
pub const ALIAS_PREFIX: &str = "alias/";

const MAX_ALIAS_LEN: usize = 256;

/// Check an alias name's shape (`alias/` then letters, digits, `/`, `_`, `-`, `:`, `.`; a
/// `.` not first or last in a segment):
/// what AWS allows (`^[a-zA-Z0-9:/_-]+$`) and what Vault allows in a Transit key's name
/// (`.` too), since an alias is how both name a key. The AWS front refuses `.` itself, as AWS
/// does (`api::aws::ids`).
pub fn validate_alias(name: &str) -> Result<()> {
    let ok = name.len() <= MAX_ALIAS_LEN
        && name.strip_prefix(ALIAS_PREFIX).is_some_and(|rest| {
            !rest.is_empty()
                && rest
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"/_-:.".contains(&b))
                // A '.' within a name, as Vault's (`app.prod`), never at either end of a
                // segment: `.` and `..` are what URL clients rewrite away, so a Transit key
                // so named could never be reached.
                && rest
                    .split('/')
                    .all(|seg| !seg.starts_with('.') && !seg.ends_with('.'))
        });
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidAliasName(format!(
            "alias names are {ALIAS_PREFIX}<name> (letters, digits, '/', '_', '-', ':', '.' (not at either end of a name); at most {MAX_ALIAS_LEN} characters)"
        )))
    }
}

/// Check a key id's shape (or an alias name, which every key_id field accepts) before
/// touching the database.
pub fn validate_key_id(id: &str) -> Result<()> {
    if id.starts_with(ALIAS_PREFIX) {
        return validate_alias(id);
    }
    if id.is_empty()
        || id.len() > MAX_KEY_ID_LEN
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(Error::validation("key_id is not a valid key id or alias"));
    }
    Ok(())
}

/// Tenant and principal ids: lowercase letters, digits and dashes, 1–63 characters.
pub fn validate_name(field: &str, v: &str) -> Result<()> {
    let ok = !v.is_empty()
        && v.len() <= 63
        && v.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !v.starts_with('-');
    if ok {
        Ok(())
    } else {
        Err(Error::validation(format!(
            "{field} must be 1-63 characters of a-z, 0-9 and '-', not starting with '-'"
        )))
    }
}

/// Largest message `sign`, `verify`, `generate-mac` and `verify-mac` accept (as AWS KMS).
pub const MAX_MESSAGE: usize = 4096;

/// Check a message field: at most [`MAX_MESSAGE`] bytes. An empty message is a message (its
/// MAC and signature are well defined; Vault Transit takes `""`, for a blind index of an
/// empty field); the AWS front keeps its model's minimum of 1 (`api::aws`).
pub fn validate_message(field: &str, len: usize) -> Result<()> {
    if len > MAX_MESSAGE {
        return Err(Error::validation(format!(
            "{field} must be at most {MAX_MESSAGE} bytes (got {len})"
        )));
    }
    Ok(())
}

/// An access key id's shape (as AWS: 16 to 128 letters and digits).
pub fn validate_access_key_id(id: &str) -> Result<()> {
    if (16..=128).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        Ok(())
    } else {
        Err(Error::validation(
            "access_key_id must be 16 to 128 letters and digits",
        ))
    }
}

/// Longest key description (as AWS).
pub const MAX_DESCRIPTION: usize = 8192;
/// Most tags on one key (as AWS).
pub const MAX_TAGS: usize = 50;
const MAX_TAG_KEY: usize = 128;
const MAX_TAG_VALUE: usize = 256;

/// A key description: at most [`MAX_DESCRIPTION`] characters (as AWS counts them: a
/// description in another script is not cut to a third), no NUL.
pub fn validate_description(d: &str) -> Result<()> {
    if d.chars().count() > MAX_DESCRIPTION {
        return Err(Error::validation(format!(
            "description is longer than {MAX_DESCRIPTION} characters"
        )));
    }
    refuse_nul("description", d)
}

/// Refuse a NUL character in free text keyplane stores: PostgreSQL's text cannot hold one,
/// so it is refused on every database alike rather than stored by SQLite alone.
pub fn refuse_nul(field: &str, v: &str) -> Result<()> {
    if v.contains('\0') {
        return Err(Error::validation(format!(
            "{field} must not contain a NUL character"
        )));
    }
    Ok(())
}

/// A key's tags: at most [`MAX_TAGS`], keys of 1 to 128 characters (not beginning with
/// `aws:`, which AWS reserves for its own tags), values of at most 256.
pub fn validate_tags(tags: &std::collections::BTreeMap<String, String>) -> Result<()> {
    if tags.len() > MAX_TAGS {
        return Err(too_many_tags());
    }
    for (k, v) in tags {
        let (k_len, v_len) = (k.chars().count(), v.chars().count());
        if k.is_empty() || k_len > MAX_TAG_KEY || v_len > MAX_TAG_VALUE {
            return Err(Error::validation(format!(
                "tag keys must be 1-{MAX_TAG_KEY} characters and values at most {MAX_TAG_VALUE} characters"
            )));
        }
        if k.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("aws:")) {
            return Err(Error::InvalidTag(format!(
                "Tags beginning with aws: are reserved (tag key {k})"
            )));
        }
    }
    Ok(())
}

/// The refusal of more than [`MAX_TAGS`] tags on a key.
pub fn too_many_tags() -> Error {
    Error::InvalidTag(format!("Too many tags: a key has at most {MAX_TAGS}"))
}

/// Whether `id` has the form of a grant id (and of a grant token: the same).
pub fn is_grant_id(id: &str) -> bool {
    id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A grant id: 64 hexadecimal characters.
pub fn validate_grant_id(id: &str) -> Result<()> {
    if is_grant_id(id) {
        Ok(())
    } else {
        Err(Error::InvalidGrantId(
            "a grant id is 64 hexadecimal characters".into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alias_names_take_what_aws_and_vault_take() {
        for ok in [
            "alias/a",
            "alias/app/prod",
            "alias/a_b-c",
            "alias/a:b",
            "alias/app.prod",
        ] {
            assert!(validate_alias(ok).is_ok(), "{ok}");
        }
        for bad in [
            "alias/",
            "a",
            "alias/a b",
            "alias/a*",
            "alias/é",
            "alias/.",
            "alias/..",
            "alias/a.",
            "alias/.a",
            "alias/x/../y",
        ] {
            assert!(validate_alias(bad).is_err(), "{bad}");
        }
        assert!(validate_alias(&format!("alias/{}", "a".repeat(MAX_ALIAS_LEN))).is_err());
    }
}
