//! Plugin configuration: the string map attached to a tenant's storage backend or a key's
//! rotation schedule. Owns its limits and the protection of its values: every value is sealed
//! under the HSM root key before it is stored (the AAD binds tenant, plugin and key, so a
//! sealed value cannot be moved to another plugin or tenant), answers show it as
//! [`REDACTED`], and it is opened only to call the plugin, unless its key is one of the short
//! list of [`PLAIN_KEYS`](crate::plugins::PLAIN_KEYS) that name where or when, never a secret
//! (`bucket`, `region`, `period_days`...), and its value carries no URL user information or
//! parameters ([`is_sensitive`], which the plugin runtime also uses to keep the secrets out of
//! a plugin's error text). Sealing by default, rather than recognising secrets by their
//! names, is what keeps `api_key`, `private_key` or `passphrase` out of the database in the
//! clear. Opened, the values are a [`PluginConfig`], wiped from memory when dropped, and so
//! is each copy the plugin runtime makes on the way to the call.

use std::collections::BTreeMap;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use schemars::JsonSchema;
use serde::Deserialize;
use zeroize::Zeroize;

use crate::crypto::Keyring;
use crate::error::{Error, Result};
pub use crate::plugins::PluginConfig;
use crate::plugins::{is_sensitive, REDACTED};

// A configuration as a request carries it (`set-storage-backend`, `set-rotation-schedule`,
// `preview-rotation`): every key and value (some are secrets) wiped from memory when it is
// dropped, and shown redacted by `Debug`. Opened for a call as a `PluginConfig`, wiped
// likewise. (Not a doc comment: it would be the request schema's description.)
#[derive(Clone, Default, JsonSchema)]
#[serde(transparent)]
pub struct ConfigMap(BTreeMap<String, String>);

/// A map of strings, refused as a whole otherwise with a message that names the key and never
/// the value: serde's own ("invalid type: integer `987654321012`, expected a string") would
/// repeat a numeric PIN or account token to the client, its logs and every proxy between.
impl<'de> Deserialize<'de> for ConfigMap {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Strings;
        impl<'de> serde::de::Visitor<'de> for Strings {
            type Value = ConfigMap;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a map of strings")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<ConfigMap, A::Error> {
                // Collected into the wiped form as it is read, so a refusal half-way wipes
                // what came before it.
                let mut out = ConfigMap::default();
                while let Some(key) = map.next_key::<String>()? {
                    match map.next_value::<serde_json::Value>()? {
                        serde_json::Value::String(v) => {
                            // A key given twice: the last value stands, the other is wiped.
                            if let Some(mut earlier) = out.0.insert(key, v) {
                                earlier.zeroize();
                            }
                        }
                        _ => {
                            return Err(serde::de::Error::custom(format!(
                                "config value `{}` must be a string",
                                key.chars().take(128).collect::<String>()
                            )))
                        }
                    }
                }
                Ok(out)
            }
        }
        d.deserialize_map(Strings)
    }
}

impl ConfigMap {
    /// The values as a plugin call takes them.
    pub fn opened(&self) -> PluginConfig {
        self.0.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }
}

impl std::ops::Deref for ConfigMap {
    type Target = BTreeMap<String, String>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl Drop for ConfigMap {
    fn drop(&mut self) {
        // A map's keys cannot be changed in place: taken out, each is wiped as it goes.
        for (mut k, mut v) in std::mem::take(&mut self.0) {
            k.zeroize();
            v.zeroize();
        }
    }
}

impl std::fmt::Debug for ConfigMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        redacted(&self.0).fmt(f)
    }
}

impl<const N: usize> From<[(String, String); N]> for ConfigMap {
    fn from(entries: [(String, String); N]) -> Self {
        ConfigMap(BTreeMap::from(entries))
    }
}

const SEALED_PREFIX: &str = "kp-sealed:v1:";
const MAX_ENTRIES: usize = 64;

/// Limits of a configuration map.
pub fn check(config: &BTreeMap<String, String>) -> Result<()> {
    if config.len() > MAX_ENTRIES
        || config
            .iter()
            .any(|(k, v)| k.is_empty() || k.len() > 128 || v.len() > 1024)
    {
        return Err(Error::validation(format!(
            "config: at most {MAX_ENTRIES} entries, keys 1-128 bytes, values up to 1024 bytes"
        )));
    }
    if config.values().any(|v| v.starts_with(SEALED_PREFIX)) {
        return Err(Error::validation("config values cannot be pre-sealed"));
    }
    Ok(())
}

/// The configuration as answers show it: sensitive values redacted.
pub fn redacted(config: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    config
        .iter()
        .map(|(k, v)| {
            let v = if is_sensitive(k, v) {
                REDACTED.to_string()
            } else {
                v.clone()
            };
            (k.clone(), v)
        })
        .collect()
}

fn aad(tenant: &str, plugin: &str, key: &str) -> Vec<u8> {
    format!("keyplane plugin-config\0{tenant}\0{plugin}\0{key}").into_bytes()
}

/// The JSON to store: sensitive values sealed.
pub async fn seal(
    keyring: &Keyring,
    tenant: &str,
    plugin: &str,
    config: &BTreeMap<String, String>,
) -> Result<String> {
    let mut stored = BTreeMap::new();
    for (k, v) in config {
        let v = if is_sensitive(k, v) {
            let sealed = keyring
                .seal_with_root(&aad(tenant, plugin, k), v.as_bytes())
                .await?;
            format!("{SEALED_PREFIX}{}", STANDARD.encode(sealed))
        } else {
            v.clone()
        };
        stored.insert(k.clone(), v);
    }
    serde_json::to_string(&stored).map_err(|_| Error::Internal)
}

/// Seal the values that an older release stored in the clear (it sealed only values whose key
/// named a secret); run at every start, changing nothing once all is sealed. Returns how many
/// configurations it sealed.
pub async fn seal_stored(keyring: &Keyring, db: &crate::store::Db) -> Result<usize> {
    let mut sealed = 0;
    for c in crate::store::plugins::stored_configs(db).await? {
        let stored: BTreeMap<String, String> =
            serde_json::from_str(&c.config).map_err(|_| Error::Internal)?;
        if !stored
            .iter()
            .any(|(k, v)| is_sensitive(k, v) && !v.starts_with(SEALED_PREFIX))
        {
            continue;
        }
        let mut out = BTreeMap::new();
        for (k, v) in stored {
            let v = if is_sensitive(&k, &v) && !v.starts_with(SEALED_PREFIX) {
                let blob = keyring
                    .seal_with_root(&aad(&c.tenant_id, &c.plugin_name, &k), v.as_bytes())
                    .await?;
                format!("{SEALED_PREFIX}{}", STANDARD.encode(blob))
            } else {
                v
            };
            out.insert(k, v);
        }
        let new = serde_json::to_string(&out).map_err(|_| Error::Internal)?;
        let mut tx = db.begin().await?;
        if crate::store::plugins::replace_config(&mut tx, &c, &new).await? {
            sealed += 1;
        }
        tx.commit().await?;
    }
    if sealed > 0 {
        tracing::warn!(
            configurations = sealed,
            "sealed plugin configuration values stored in the clear by an older release"
        );
    }
    Ok(sealed)
}

/// The stored JSON as the plugin gets it: sealed values opened, wiped when it is dropped.
pub async fn open(
    keyring: &Keyring,
    tenant: &str,
    plugin: &str,
    stored: &str,
) -> Result<PluginConfig> {
    let stored: BTreeMap<String, String> = serde_json::from_str(stored).map_err(|e| {
        tracing::error!(error = %e, "stored plugin configuration is not a string map");
        Error::Internal
    })?;
    // Collected into the wiped form as it is opened, so a failure half-way wipes what was
    // opened before it.
    let mut out = PluginConfig::default();
    for (k, v) in stored {
        let v = match v.strip_prefix(SEALED_PREFIX) {
            Some(b64) => {
                let blob = STANDARD.decode(b64).map_err(|_| Error::Internal)?;
                let plain = keyring
                    .open_with_root(&aad(tenant, plugin, &k), &blob)
                    .await
                    .map_err(|_| {
                        tracing::error!(tenant, plugin, key = %k, "sealed plugin configuration does not open");
                        Error::Internal
                    })?;
                // Copied once, from the opened bytes (wiped as they drop) into the string
                // that the configuration wipes.
                std::str::from_utf8(&plain)
                    .map_err(|_| Error::Internal)?
                    .to_owned()
            }
            None => v,
        };
        out.push(k, v);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Compile-level: opened values come out in the wiped form, not as plain strings.
    #[allow(dead_code)]
    async fn opened_values_are_wiped_when_dropped(keyring: &Keyring) -> Result<PluginConfig> {
        open(keyring, "t", "p", "{}").await
    }

    #[test]
    fn a_value_that_is_no_string_is_refused_without_being_repeated() {
        let e = serde_json::from_str::<ConfigMap>(r#"{"bucket": "b", "pin": 987654321012}"#)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("config value `pin` must be a string"), "{e}");
        assert!(!e.contains("987654321012"), "{e}");
        let e = serde_json::from_str::<ConfigMap>(r#"{"token": ["s3cr3t-token"]}"#)
            .err()
            .unwrap()
            .to_string();
        assert!(!e.contains("s3cr3t-token"), "{e}");
        let c: ConfigMap = serde_json::from_str(r#"{"bucket": "b", "pin": "1234"}"#).unwrap();
        assert_eq!(c["pin"], "1234");
        assert!(serde_json::from_str::<ConfigMap>(r#"["a"]"#).is_err());
    }

    #[test]
    fn values_are_sealed_unless_plain_and_presealed_values_refused() {
        let c: BTreeMap<String, String> = [
            ("secret-access-key", "s"),
            ("Session-Token", "t"),
            ("api_key", "k"),
            ("private_key", "p"),
            ("passphrase", "x"),
            ("bucket", "b"),
            ("Period-Days", "30"),
            ("endpoint", "https://minio.example:9000"),
            ("url", "https://user:hunter2@minio.example:9000"),
            ("host", "store.example/b?sig=abc"),
            ("webhook-url", "https://hooks.example/services/T0/B0/s3cr3t"),
            ("Url", "https://hooks.example/services/T0/B0/s3cr3t"),
            ("Host", "hooks.example/s3cr3t"),
            ("region", "eu-west-1;token=abc"),
            ("dir", "blobs/keyplane"),
            ("prefix", "keyplane/"),
            ("Endpoint", "http://127.0.0.1:9000/"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let r = redacted(&c);
        for secret in [
            "secret-access-key",
            "Session-Token",
            "api_key",
            "private_key",
            "passphrase",
            // Plain keys whose values carry credentials (user information, parameters).
            "url",
            "host",
            // A webhook-like address, whose secret is its path.
            "webhook-url",
            "Url",
            "Host",
            "region",
        ] {
            assert_eq!(r[secret], REDACTED, "{secret}");
        }
        assert_eq!(r["endpoint"], "https://minio.example:9000");
        assert_eq!(r["Endpoint"], "http://127.0.0.1:9000/");
        assert_eq!(r["dir"], "blobs/keyplane");
        assert_eq!(r["prefix"], "keyplane/");
        assert_eq!(r["bucket"], "b");
        assert_eq!(r["Period-Days"], "30");
        let mut bad = c.clone();
        bad.insert("x".into(), format!("{SEALED_PREFIX}AAAA"));
        assert!(check(&bad).is_err());
        assert!(check(&c).is_ok());
    }
}
