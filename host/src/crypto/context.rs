//! Canonical encoding of an encryption context (a string map) for use as AAD.
//!
//! Entries are sorted by key (byte order); the encoding is a u32 entry count followed by, for
//! each entry, u32-length-prefixed key and value. Length prefixes make the encoding
//! injective: no two different maps encode to the same bytes.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::error::{Error, Result};

/// An encryption context, ordered for canonical encoding.
pub type EncryptionContext = BTreeMap<String, String>;

/// Limits, comparable to AWS KMS.
pub const MAX_ENTRIES: usize = 64;
pub const MAX_TOTAL_BYTES: usize = 8192;

/// Decode an encryption context, refusing it as soon as it passes [`MAX_ENTRIES`] entries or
/// [`MAX_TOTAL_BYTES`] bytes: decoded whole before [`validate`] refused it, the context of a
/// batch item (the body up to 8 MiB) took ten times its size in memory. (`deserialize_with`
/// for a context field; [`bounded_opt`] for an optional one.)
pub fn bounded<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<EncryptionContext, D::Error> {
    struct Bounded;
    impl<'de> serde::de::Visitor<'de> for Bounded {
        type Value = EncryptionContext;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "an object of at most {MAX_ENTRIES} string entries")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut map: A,
        ) -> std::result::Result<EncryptionContext, A::Error> {
            use serde::de::Error as _;
            let mut ctx = EncryptionContext::new();
            let mut total = 0usize;
            while let Some((k, v)) = map.next_entry::<String, String>()? {
                total += k.len() + v.len();
                ctx.insert(k, v);
                if ctx.len() > MAX_ENTRIES {
                    return Err(A::Error::custom(format!(
                        "encryption_context has more than {MAX_ENTRIES} entries"
                    )));
                }
                if total > MAX_TOTAL_BYTES {
                    return Err(A::Error::custom(format!(
                        "encryption_context is larger than {MAX_TOTAL_BYTES} bytes"
                    )));
                }
            }
            Ok(ctx)
        }
    }
    d.deserialize_map(Bounded)
}

/// [`bounded`] for an optional context (`null` or absent: `None`).
pub fn bounded_opt<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<EncryptionContext>, D::Error> {
    #[derive(serde::Deserialize)]
    struct Wrapped(#[serde(deserialize_with = "bounded")] EncryptionContext);
    Ok(Option::<Wrapped>::deserialize(d)?.map(|Wrapped(ctx)| ctx))
}

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
    fn bounded_contexts_stop_at_the_limits() {
        #[derive(serde::Deserialize)]
        struct Op {
            #[serde(default, deserialize_with = "bounded")]
            ec: EncryptionContext,
            #[serde(default, deserialize_with = "bounded_opt")]
            dest: Option<EncryptionContext>,
        }
        let op: Op = serde_json::from_str(r#"{"ec":{"a":"1"},"dest":null}"#).unwrap();
        assert_eq!(op.ec.len(), 1);
        assert!(op.dest.is_none());
        let op: Op = serde_json::from_str(r#"{"dest":{"b":"2"}}"#).unwrap();
        assert!(op.ec.is_empty());
        assert_eq!(op.dest.unwrap().len(), 1);
        let many: Vec<String> = (0..65).map(|i| format!("\"k{i}\":\"v\"")).collect();
        let e = serde_json::from_str::<Op>(&format!("{{\"ec\":{{{}}}}}", many.join(",")));
        assert!(e.is_err_and(|e| e.to_string().contains("more than 64")));
        let big = "x".repeat(MAX_TOTAL_BYTES);
        let e = serde_json::from_str::<Op>(&format!("{{\"dest\":{{\"k\":\"{big}\"}}}}"));
        assert!(e.is_err_and(|e| e.to_string().contains("larger than")));
    }

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
