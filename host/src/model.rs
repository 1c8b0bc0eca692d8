//! The domain values every layer shares about a key beside its algorithm (whose spec and usage
//! are in [`crate::algorithms`]): how it is protected and what state it, or one of its
//! versions, is in. The store reads and writes them as these types (as text columns, see
//! `store`), so no layer re-parses strings.

use std::fmt;

/// How a key's versions are protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protection {
    /// A non-extractable object in the HSM; every operation runs there.
    Hsm,
    /// Wrapped by the tenant's KEK, unwrapped into zeroized host memory for `ring`.
    Envelope,
}

impl Protection {
    pub fn as_str(self) -> &'static str {
        match self {
            Protection::Hsm => "hsm",
            Protection::Envelope => "envelope",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "hsm" => Some(Protection::Hsm),
            "envelope" => Some(Protection::Envelope),
            _ => None,
        }
    }
}

/// The state of a key or of one of its versions (the two share the names; which states each
/// can take is said per variant).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyState {
    /// Usable (key and version).
    Enabled,
    /// Not usable until enabled again (key and version).
    Disabled,
    /// Scheduled for destruction at the end of its deletion window (key).
    PendingDeletion,
    /// The deletion window has passed and its material is being shredded: committed before
    /// shredding starts, so nothing can cancel it or use the key meanwhile, and a pass
    /// interrupted by a crash is finished by the next one (key).
    Destroying,
    /// Shredded: what it sealed can never be opened again (key and version).
    Destroyed,
    /// A revoked version: no new use; decryption only through `rewrap` (version).
    Compromised,
    /// An external key (or version) waiting for its imported material.
    PendingImport,
    /// An external key whose imported material is past its `valid_to` and being deleted
    /// (committed before deletion starts; the scheduler finishes it, then the key is
    /// pending-import).
    Expiring,
}

impl KeyState {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyState::Enabled => "enabled",
            KeyState::Disabled => "disabled",
            KeyState::PendingDeletion => "pending-deletion",
            KeyState::Destroying => "destroying",
            KeyState::Destroyed => "destroyed",
            KeyState::Compromised => "compromised",
            KeyState::PendingImport => "pending-import",
            KeyState::Expiring => "expiring",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "enabled" => KeyState::Enabled,
            "disabled" => KeyState::Disabled,
            "pending-deletion" => KeyState::PendingDeletion,
            "destroying" => KeyState::Destroying,
            "destroyed" => KeyState::Destroyed,
            "compromised" => KeyState::Compromised,
            "pending-import" => KeyState::PendingImport,
            "expiring" => KeyState::Expiring,
            _ => return None,
        })
    }
}

impl fmt::Display for KeyState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for KeyState {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl KeyState {
    const ALL: [KeyState; 8] = [
        KeyState::Enabled,
        KeyState::Disabled,
        KeyState::PendingDeletion,
        KeyState::Destroying,
        KeyState::Destroyed,
        KeyState::Compromised,
        KeyState::PendingImport,
        KeyState::Expiring,
    ];
}

/// Its names, as it serializes (the OpenAPI document, `api::openapi`).
impl schemars::JsonSchema for KeyState {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "KeyState".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let names: Vec<&str> = KeyState::ALL.iter().map(|s| s.as_str()).collect();
        schemars::json_schema!({ "type": "string", "enum": names })
    }
}

impl fmt::Display for Protection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for Protection {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl schemars::JsonSchema for Protection {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Protection".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({ "type": "string", "enum": ["hsm", "envelope"] })
    }
}
