//! Readable Cedar values for humans: the notation of policy test files (`policy test`) and of
//! requests given to `policy explain`, in TOML or JSON.
//!
//! - An entity is `User::"alice"`; a type without a namespace is in `Keyplane`
//!   (`Keyplane::User::"alice"` is the same). An action is its bare name (`Encrypt`).
//! - Attribute values: a string of the form `Type::"id"` is an entity reference; `ip("…")` and
//!   `decimal("…")` are extension values; other strings are strings; booleans, integers,
//!   arrays (sets) and tables (records) are what they look like.
//! - A context is a table; what a keyplane request always carries is filled in when absent
//!   (`source_ip` 127.0.0.1, `client_certificate` false, `request_time` 0, `mfa` false, an
//!   empty encryption context). `encryption_context` is a table of strings: keyplane turns
//!   it into the `EncryptionContext` entity whose tags the policies read.

use std::collections::BTreeMap;
use std::str::FromStr;

use cedar_policy::{Context, Entity, EntityId, EntityTypeName, EntityUid, RestrictedExpression};
use serde::Deserialize;
use serde_json::Value;

/// The namespace of keyplane's entity types.
pub const NAMESPACE: &str = "Keyplane";

/// An entity written out: uid, attributes, parents and tags.
#[derive(Debug, Clone, Default, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct EntitySpec {
    pub uid: String,
    #[serde(default)]
    pub attrs: BTreeMap<String, Value>,
    #[serde(default)]
    pub parents: Vec<String>,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

impl EntitySpec {
    /// The Cedar entity.
    pub fn to_entity(&self) -> Result<Entity, String> {
        let uid = parse_uid(&self.uid)?;
        let attrs = self
            .attrs
            .iter()
            .map(|(k, v)| Ok((k.clone(), value(v).map_err(|e| format!("{k}: {e}"))?)))
            .collect::<Result<Vec<_>, String>>()?;
        let parents = self
            .parents
            .iter()
            .map(|p| parse_uid(p))
            .collect::<Result<Vec<_>, String>>()?;
        let tags = self
            .tags
            .iter()
            .map(|(k, v)| (k.clone(), RestrictedExpression::new_string(v.clone())));
        Entity::new_with_tags(uid, attrs, parents, tags)
            .map_err(|e| format!("entity {}: {e}", self.uid))
    }
}

/// `User::"alice"` or `Keyplane::User::"alice"`.
pub fn parse_uid(text: &str) -> Result<EntityUid, String> {
    let text = text.trim();
    let Some(split) = text.find("::\"") else {
        return Err(format!(
            "`{text}` is not an entity (write Type::\"id\", e.g. User::\"alice\")"
        ));
    };
    let ty = &text[..split];
    let qualified = if ty.contains("::") {
        text.to_string()
    } else {
        format!("{NAMESPACE}::{text}")
    };
    EntityUid::from_str(&qualified).map_err(|e| format!("`{text}` is not an entity: {e}"))
}

/// An action by its bare name (`Encrypt`) or as `Action::"Encrypt"`.
pub fn action_uid(text: &str) -> Result<EntityUid, String> {
    if text.contains("::") {
        return parse_uid(text);
    }
    let ty = EntityTypeName::from_str(&format!("{NAMESPACE}::Action"))
        .map_err(|e| format!("action type: {e}"))?;
    Ok(EntityUid::from_type_name_and_id(ty, EntityId::new(text)))
}

fn looks_like_uid(s: &str) -> bool {
    s.contains("::\"") && s.ends_with('"') && !s.contains(char::is_whitespace)
}

/// A readable value as a Cedar value.
pub fn value(v: &Value) -> Result<RestrictedExpression, String> {
    Ok(match v {
        Value::Bool(b) => RestrictedExpression::new_bool(*b),
        Value::Number(n) => RestrictedExpression::new_long(
            n.as_i64()
                .ok_or_else(|| format!("{n} is not a 64-bit integer"))?,
        ),
        Value::String(s) if looks_like_uid(s) => {
            RestrictedExpression::new_entity_uid(parse_uid(s)?)
        }
        Value::String(s) if s.starts_with("ip(\"") || s.starts_with("decimal(\"") => {
            RestrictedExpression::from_str(s).map_err(|e| format!("{s}: {e}"))?
        }
        Value::String(s) => RestrictedExpression::new_string(s.clone()),
        Value::Array(items) => {
            RestrictedExpression::new_set(items.iter().map(value).collect::<Result<Vec<_>, _>>()?)
        }
        Value::Object(fields) => RestrictedExpression::new_record(
            fields
                .iter()
                .map(|(k, v)| Ok((k.clone(), value(v)?)))
                .collect::<Result<Vec<_>, String>>()?,
        )
        .map_err(|e| e.to_string())?,
        Value::Null => return Err("null is not a Cedar value".into()),
    })
}

/// A request context from a readable table, with keyplane's defaults filled in; returns the
/// context and the `EncryptionContext` entity it refers to.
pub fn context(table: &serde_json::Map<String, Value>) -> Result<(Context, Entity), String> {
    let mut pairs: BTreeMap<String, RestrictedExpression> = BTreeMap::new();
    let mut ec_tags = Vec::new();
    for (k, v) in table {
        if k == "encryption_context" {
            let Value::Object(ec) = v else {
                return Err("encryption_context must be a table of strings".into());
            };
            for (ek, ev) in ec {
                let Value::String(ev) = ev else {
                    return Err(format!("encryption_context.{ek} must be a string"));
                };
                ec_tags.push((ek.clone(), RestrictedExpression::new_string(ev.clone())));
            }
            continue;
        }
        let parsed = if k == "granted" {
            // Action names (`["Decrypt"]`), as keyplane fills it from the caller's grants.
            let Value::Array(actions) = v else {
                return Err("granted must be a list of action names".into());
            };
            let uids = actions
                .iter()
                .map(|a| match a {
                    Value::String(a) => parse_uid(&format!("Action::{a:?}"))
                        .map(RestrictedExpression::new_entity_uid),
                    _ => Err("granted must be a list of action names".into()),
                })
                .collect::<Result<Vec<_>, String>>()?;
            RestrictedExpression::new_set(uids)
        } else if k == "source_ip" {
            match v {
                Value::String(s) if !s.starts_with("ip(") => {
                    RestrictedExpression::new_ip(s.clone())
                }
                other => value(other)?,
            }
        } else {
            value(v).map_err(|e| format!("context.{k}: {e}"))?
        };
        pairs.insert(k.clone(), parsed);
    }
    let ec_uid = parse_uid("EncryptionContext::\"request\"")?;
    let ec = Entity::new_with_tags(ec_uid.clone(), [], [], ec_tags).map_err(|e| e.to_string())?;
    pairs.insert(
        "encryption_context".into(),
        RestrictedExpression::new_entity_uid(ec_uid),
    );
    pairs
        .entry("source_ip".into())
        .or_insert_with(|| RestrictedExpression::new_ip("127.0.0.1"));
    pairs
        .entry("client_certificate".into())
        .or_insert_with(|| RestrictedExpression::new_bool(false));
    pairs
        .entry("request_time".into())
        .or_insert_with(|| RestrictedExpression::new_long(0));
    pairs
        .entry("mfa".into())
        .or_insert_with(|| RestrictedExpression::new_bool(false));
    pairs
        .entry("granted".into())
        .or_insert_with(|| RestrictedExpression::new_set([]));
    let context = Context::from_pairs(pairs).map_err(|e| e.to_string())?;
    Ok((context, ec))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uids_take_the_keyplane_namespace() {
        assert_eq!(
            parse_uid("User::\"alice\"").unwrap(),
            parse_uid("Keyplane::User::\"alice\"").unwrap()
        );
        assert!(parse_uid("alice").is_err());
        assert_eq!(
            action_uid("Encrypt").unwrap().to_string(),
            "Keyplane::Action::\"Encrypt\""
        );
    }

    #[test]
    fn values_are_typed_by_their_shape() {
        let v: Value = serde_json::json!({ "t": "Tenant::\"a\"", "s": "plain", "n": 3, "b": true, "l": ["x"] });
        assert!(value(&v).is_ok());
        assert!(value(&Value::Null).is_err());
    }
}
