//! Canonical encoding of an encryption context (a string map) for use as AAD.
//!
//! Entries are sorted by key (byte order); the encoding is a u32 entry count followed by, for
//! each entry, u32-length-prefixed key and value. Length prefixes make the encoding
//! injective: no two different maps encode to the same bytes.

use std::collections::BTreeMap;

use crate::error::{Error, Result};

/// An encryption context, ordered for canonical encoding.
pub type EncryptionContext = BTreeMap<String, String>;

/// Limits, comparable to AWS KMS.
pub const MAX_ENTRIES: usize = 64;
pub const MAX_TOTAL_BYTES: usize = 8192;

/// Check size limits and that no key is empty.
pub fn validate(ctx: &EncryptionContext) -> Result<()> {
    if ctx.len() > MAX_ENTRIES {
        return Err(Error::validation(format!(
            "encryption_context has more than {MAX_ENTRIES} entries"
        )));
    }
    let total: usize = ctx.iter().map(|(k, v)| k.len() + v.len()).sum();
    if total > MAX_TOTAL_BYTES {
        return Err(Error::validation(format!(
            "encryption_context is larger than {MAX_TOTAL_BYTES} bytes"
        )));
    }
    if ctx.keys().any(|k| k.is_empty()) {
        return Err(Error::validation(
            "encryption_context keys must not be empty",
        ));
    }
    Ok(())
}

/// Canonical bytes of `ctx`.
pub fn canonical(ctx: &EncryptionContext) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(ctx.len() as u32).to_be_bytes());
    for (k, v) in ctx {
        out.extend_from_slice(&(k.len() as u32).to_be_bytes());
        out.extend_from_slice(k.as_bytes());
        out.extend_from_slice(&(v.len() as u32).to_be_bytes());
        out.extend_from_slice(v.as_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_independent_and_injective() {
        let a: EncryptionContext = [("b".into(), "2".into()), ("a".into(), "1".into())].into();
        let b: EncryptionContext = [("a".into(), "1".into()), ("b".into(), "2".into())].into();
        assert_eq!(canonical(&a), canonical(&b));
        let c: EncryptionContext = [("a".into(), "1b".into())].into();
        let d: EncryptionContext = [("a1".into(), "b".into())].into();
        assert_ne!(canonical(&c), canonical(&d));
    }
}
