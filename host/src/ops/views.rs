//! Keys and versions as outputs show them (the native front writes them as JSON as they
//! are).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Serialize;

use crate::store::keys::{KeyRow, KeyVersionRow};

/// A key version as answers show it.
#[derive(Debug, Serialize, JsonSchema)]
pub struct VersionInfo {
    pub version: i64,
    pub state: String,
    pub created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state_reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state_changed_at: Option<String>,
    pub encryptions: i64,
    pub decryptions: i64,
    pub signatures: i64,
    /// How the version came to be: `automatic` or `on-demand` rotation (absent for the
    /// key's first version).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rotation: Option<String>,
    /// Whether every node sharing the database can use the version (see
    /// [`KeyVersionRow::cluster_wide`]); absent for a version without material.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_wide: Option<bool>,
}

impl VersionInfo {
    /// A version with its stored usage plus what is counted but not yet written.
    pub fn new(v: &KeyVersionRow, pending: [i64; 3]) -> Self {
        VersionInfo {
            version: v.version,
            state: v.state.to_string(),
            created_at: v.created_at.clone(),
            state_reason: v.state_reason.clone(),
            state_changed_at: v.state_changed_at.clone(),
            encryptions: v.encryptions + pending[0],
            decryptions: v.decryptions + pending[1],
            signatures: v.signatures + pending[2],
            rotation: v.rotation.clone(),
            cluster_wide: v.cluster_wide(),
        }
    }
}

/// Key metadata as answers show it.
#[derive(Debug, Serialize, JsonSchema)]
pub struct KeyMetadata {
    pub key_id: String,
    pub tenant_id: String,
    pub key_spec: String,
    pub key_usage: String,
    pub protection: String,
    pub state: String,
    pub description: String,
    pub tags: BTreeMap<String, String>,
    pub primary_version: i64,
    pub created_at: String,
    pub created_by: String,
    pub grants: Vec<String>,
    pub min_decryption_version: i64,
    /// `schedule-key-deletion` is refused while set (`set-deletion-protection`).
    pub deletion_protection: bool,
    /// Every encryption and decryption under the key must carry an encryption context.
    pub require_encryption_context: bool,
    /// Automatic rotation every this many days (absent: off).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rotation_period_days: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deletion_date: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub destroyed_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub versions: Option<Vec<VersionInfo>>,
    /// `keyplane` or `external` (imported material).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exportable: Option<bool>,
    /// When imported material expires (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub material_expires_at: Option<String>,
}

/// Unix seconds as RFC 3339.
pub fn rfc3339(t: i64) -> String {
    chrono::DateTime::from_timestamp(t, 0)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

impl KeyMetadata {
    /// Add the usage counted in memory but not yet written.
    pub fn with_pending_usage(mut self, usage: &crate::usage::Usage) -> Self {
        for v in self.versions.iter_mut().flatten() {
            let p = usage.pending(&self.key_id, v.version);
            v.encryptions += p[0];
            v.decryptions += p[1];
            v.signatures += p[2];
        }
        self
    }

    pub fn new(row: &KeyRow, grants: Vec<String>, versions: Option<&[KeyVersionRow]>) -> Self {
        KeyMetadata {
            key_id: row.id.clone(),
            tenant_id: row.tenant_id.clone(),
            key_spec: row.spec.to_string(),
            key_usage: row.usage.to_string(),
            protection: row.protection.to_string(),
            state: row.state.to_string(),
            description: row.description.clone(),
            tags: serde_json::from_str(&row.tags).unwrap_or_default(),
            primary_version: row.primary_version,
            created_at: row.created_at.clone(),
            created_by: row.created_by.clone(),
            grants,
            min_decryption_version: row.min_decryption_version,
            deletion_protection: row.deletion_protection,
            require_encryption_context: row.require_encryption_context,
            rotation_period_days: row.rotation_period_days,
            deletion_date: row.deletion_date.map(rfc3339),
            destroyed_at: row.destroyed_at.map(rfc3339),
            versions: versions.map(|vs| vs.iter().map(|v| VersionInfo::new(v, [0; 3])).collect()),
            origin: None,
            exportable: None,
            material_expires_at: None,
        }
    }
}
