//! Secret text: shown once in an output (a bearer token, an access key's secret) or taken
//! from a request (a PKCS#12 password); zeroized when dropped, never printed by `Debug`.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use zeroize::Zeroizing;

/// A secret string of an output.
#[derive(Clone)]
pub struct SecretText(Zeroizing<String>);

impl SecretText {
    pub fn new(s: String) -> Self {
        SecretText(Zeroizing::new(s))
    }

    /// The secret itself, for the front that hands it over.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SecretText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretText(<redacted>)")
    }
}

impl Serialize for SecretText {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl schemars::JsonSchema for SecretText {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "SecretText".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({ "type": "string" })
    }
}

/// A password of a request (a PKCS#12 bundle's): 8 to 1024 bytes, no control characters,
/// none beyond U+FFFF.
pub struct Password(Zeroizing<String>);

impl Password {
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Check the password's form; `field` names it in the error (which never shows it).
    /// PKCS#12 keys its MAC with the password as a BMPString (UTF-16 without surrogates), so
    /// characters beyond U+FFFF cannot be used.
    pub fn validate(&self, field: &str) -> crate::error::Result<()> {
        if self.0.len() < 8 || self.0.len() > 1024 || self.0.chars().any(char::is_control) {
            return Err(crate::error::Error::validation(format!(
                "{field} must be 8 to 1024 bytes without control characters"
            )));
        }
        if self.0.chars().any(|c| u32::from(c) > 0xFFFF) {
            return Err(crate::error::Error::validation(format!(
                "{field} must not hold characters beyond U+FFFF (PKCS#12 encodes passwords as BMPString)"
            )));
        }
        Ok(())
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

impl<'de> Deserialize<'de> for Password {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(|s| Password(Zeroizing::new(s)))
    }
}

impl schemars::JsonSchema for Password {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Password".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({ "type": "string", "minLength": 8, "writeOnly": true })
    }
}
