//! Transit's wire values: `vault:v<N>:<base64>` ciphertexts, signatures and HMACs; base64
//! inputs; `context` and `associated_data` as keyplane encryption context; key types as
//! keyplane key specs; the response envelope; booleans and integers as Vault's request
//! framework reads them ([`weak`]).

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use serde::{Deserialize, Deserializer};
use zeroize::Zeroizing;

use crate::algorithms::KeySpec;
use crate::api::secret_buf::SecretBuf;
use crate::crypto::context::EncryptionContext;
use crate::error::{Error, Result};

/// The encryption-context entry a request's `context` (base64, as sent) becomes: Transit
/// binds it to the ciphertext (derived keys), keyplane binds the context as AAD.
pub const CONTEXT_ENTRY: &str = "vault:context";
/// The entry a request's `associated_data` (base64) becomes.
pub const ASSOCIATED_DATA_ENTRY: &str = "vault:associated_data";

/// Booleans and integers as Vault's request framework reads them: JSON's own, or a string
/// holding one, since the vault and bao CLIs send every `key=value` argument as a string
/// (`bao write transit/keys/k exportable=true`). Vault decodes a body's numbers as text and
/// its fields weakly (Go's `mapstructure`), so: a boolean is `true`/`false` or what
/// `strconv.ParseBool` reads (`"1"`, `"t"`, `"TRUE"`, …, and the numbers 1 and 0), `""` is
/// false; an integer is a whole JSON number, `true`/`false` (1, 0), or what
/// `strconv.ParseInt(s, 0, 64)` reads (`"512"`, `"-1"`, `"0x10"`, `"0o17"`, `"0b1"`, `"010"`
/// as octal), `""` is 0. Fractions, exponents, spaces and anything else are refused, naming the
/// expected type. For fields with `#[serde(default, deserialize_with = "weak::…")]`.
pub mod weak {
    use serde::de::{Error as _, IgnoredAny, MapAccess, SeqAccess, Visitor};
    use serde::{Deserialize, Deserializer};

    /// A field's JSON value, as far as these fields care. Read with a visitor rather than as
    /// an untagged enum, which would first copy the whole value (an array of millions of
    /// elements in an 8 MiB batch body) into memory to try each variant on it.
    #[derive(Debug, PartialEq, Eq)]
    pub enum Value {
        Bool(bool),
        Int(i64),
        Str(String),
        /// A fraction, an exponent, an array, an object: none of these (skipped unread).
        Other,
    }

    impl<'de> Deserialize<'de> for Value {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct Scalar;
            impl<'de> Visitor<'de> for Scalar {
                type Value = Value;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("a JSON value")
                }
                fn visit_bool<E>(self, b: bool) -> Result<Value, E> {
                    Ok(Value::Bool(b))
                }
                fn visit_i64<E>(self, n: i64) -> Result<Value, E> {
                    Ok(Value::Int(n))
                }
                fn visit_u64<E>(self, n: u64) -> Result<Value, E> {
                    Ok(i64::try_from(n).map_or(Value::Other, Value::Int))
                }
                fn visit_f64<E>(self, _: f64) -> Result<Value, E> {
                    Ok(Value::Other)
                }
                fn visit_str<E>(self, s: &str) -> Result<Value, E> {
                    Ok(Value::Str(s.to_string()))
                }
                fn visit_string<E>(self, s: String) -> Result<Value, E> {
                    Ok(Value::Str(s))
                }
                fn visit_unit<E>(self) -> Result<Value, E> {
                    Ok(Value::Other)
                }
                fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
                    while seq.next_element::<IgnoredAny>()?.is_some() {}
                    Ok(Value::Other)
                }
                fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
                    while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                    Ok(Value::Other)
                }
            }
            d.deserialize_any(Scalar)
        }
    }

    impl std::fmt::Display for Value {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            match self {
                Value::Bool(b) => write!(f, "{b}"),
                Value::Int(n) => write!(f, "{n}"),
                Value::Str(s) => write!(f, "{s:?}"),
                Value::Other => f.write_str("(not a string or integer)"),
            }
        }
    }

    impl Value {
        fn boolean(self) -> Option<bool> {
            match self {
                Value::Bool(b) => Some(b),
                Value::Int(1) => Some(true),
                Value::Int(0) => Some(false),
                Value::Int(_) | Value::Other => None,
                Value::Str(s) => match s.as_str() {
                    "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
                    "" | "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
                    _ => None,
                },
            }
        }

        fn integer(self) -> Option<i64> {
            match self {
                Value::Bool(b) => Some(i64::from(b)),
                Value::Int(n) => Some(n),
                Value::Str(s) => parse_int(&s),
                Value::Other => None,
            }
        }
    }

    /// `strconv.ParseInt(s, 0, 64)` (base from the prefix; no digit separators), `""` as 0.
    fn parse_int(s: &str) -> Option<i64> {
        if s.is_empty() {
            return Some(0);
        }
        let (negative, digits) = match s.as_bytes()[0] {
            b'-' => (true, &s[1..]),
            b'+' => (false, &s[1..]),
            _ => (false, s),
        };
        let lower = digits.to_ascii_lowercase();
        let (radix, body) = if let Some(b) = lower.strip_prefix("0x") {
            (16, b)
        } else if let Some(b) = lower.strip_prefix("0o") {
            (8, b)
        } else if let Some(b) = lower.strip_prefix("0b") {
            (2, b)
        } else if lower.len() > 1 && lower.starts_with('0') {
            (8, &lower[1..])
        } else {
            (10, lower.as_str())
        };
        if body.is_empty() || !body.chars().all(|c| c.is_digit(radix)) {
            return None;
        }
        let magnitude = i128::from_str_radix(body, radix).ok()?;
        i64::try_from(if negative { -magnitude } else { magnitude }).ok()
    }

    /// A boolean (absent or `null`: false).
    pub fn bool<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
        Ok(opt_bool(d)?.unwrap_or(false))
    }

    /// An optional boolean.
    pub fn opt_bool<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
        Option::<Value>::deserialize(d)?
            .map(|v| {
                v.boolean()
                    .ok_or_else(|| D::Error::custom("expected a boolean"))
            })
            .transpose()
    }

    /// An optional integer of type `T`.
    pub fn opt_int<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
    where
        D: Deserializer<'de>,
        T: TryFrom<i64>,
    {
        Option::<Value>::deserialize(d)?
            .map(|v| {
                v.integer()
                    .ok_or_else(|| D::Error::custom("expected an integer"))
                    .and_then(|n| {
                        T::try_from(n).map_err(|_| D::Error::custom("integer out of range"))
                    })
            })
            .transpose()
    }
}

/// `vault:v<N>:` then `payload` in standard base64.
pub fn versioned(version: u32, payload: &[u8]) -> String {
    format!("vault:v{version}:{}", STANDARD.encode(payload))
}

/// `vault:v<N>:` then `payload` in unpadded URL-safe base64 (JWS marshaling of signatures).
pub fn versioned_jws(version: u32, payload: &[u8]) -> String {
    format!("vault:v{version}:{}", URL_SAFE_NO_PAD.encode(payload))
}

/// The version and payload of a `vault:v<N>:<base64>` value (`jws`: the payload is unpadded
/// URL-safe base64). `field` names it in the error.
pub fn parse_versioned(field: &str, value: &str, jws: bool) -> Result<(u32, Vec<u8>)> {
    let bad = || {
        Error::validation(format!(
            "{field} is not a Transit value (vault:v<version>:<base64>)"
        ))
    };
    let rest = value.strip_prefix("vault:v").ok_or_else(bad)?;
    let (n, payload) = rest.split_once(':').ok_or_else(bad)?;
    if n.is_empty() || n.len() > 9 || !n.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let version: u32 = n.parse().map_err(|_| bad())?;
    if version == 0 {
        return Err(bad());
    }
    let bytes = if jws {
        URL_SAFE_NO_PAD.decode(payload)
    } else {
        vault_base64(payload).map(|b| b.to_vec())
    }
    .map_err(|_| bad())?;
    Ok((version, bytes))
}

/// Base64 input (`plaintext`, `input`, `context`, …), decoded into a zeroized buffer.
#[derive(Default, Clone)]
pub struct B64(pub Zeroizing<Vec<u8>>);

impl std::fmt::Debug for B64 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "B64(<{} bytes>)", self.0.len())
    }
}

/// Base64 as Vault reads it (Go's `base64.StdEncoding`): padded, line breaks ignored
/// wherever they are (what `base64` on a shell wraps its output with every 76 characters),
/// and bits past the last byte not required to be zero.
const VAULT_STANDARD: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    base64::engine::GeneralPurposeConfig::new().with_decode_allow_trailing_bits(true),
);

/// Decode `text` as Vault does (see [`VAULT_STANDARD`]), into a zeroized buffer (it may be a
/// plaintext).
fn vault_base64(text: &str) -> std::result::Result<Zeroizing<Vec<u8>>, base64::DecodeError> {
    let mut text = Zeroizing::new(text.trim().to_string());
    text.retain(|c| c != '\r' && c != '\n');
    VAULT_STANDARD.decode(text.as_bytes()).map(Zeroizing::new)
}

impl<'de> Deserialize<'de> for B64 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let text = Zeroizing::new(String::deserialize(d)?);
        vault_base64(&text)
            .map(B64)
            .map_err(|_| serde::de::Error::custom("a value is not valid base64"))
    }
}

/// A base64 member of an item that may be one of a batch (`plaintext`, `input`, `context`,
/// …): decoded as [`B64`] is, but a bad value fails its item when the item is run (Vault
/// answers that item's error in `batch_results`), not the decoding of the whole request.
#[derive(Clone)]
pub struct ItemB64(std::result::Result<B64, ()>);

impl ItemB64 {
    /// The bytes, or the item's error naming `field`.
    pub fn get(&self, field: &str) -> Result<&B64> {
        self.0
            .as_ref()
            .map_err(|()| Error::validation(format!("unable to decode {field} as base64")))
    }
}

impl std::fmt::Debug for ItemB64 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Ok(b) => b.fmt(f),
            Err(()) => f.write_str("ItemB64(<not base64>)"),
        }
    }
}

impl<'de> Deserialize<'de> for ItemB64 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let text = Zeroizing::new(String::deserialize(d)?);
        Ok(ItemB64(vault_base64(&text).map(B64).map_err(|_| ())))
    }
}

/// The encryption context of an item's `context` and `associated_data`.
pub fn encryption_context(
    context: Option<&ItemB64>,
    ad: Option<&ItemB64>,
) -> Result<EncryptionContext> {
    let mut ec = EncryptionContext::new();
    for (entry, field, v) in [
        (CONTEXT_ENTRY, "context", context),
        (ASSOCIATED_DATA_ENTRY, "associated_data", ad),
    ] {
        let Some(v) = v else { continue };
        let v = v.get(field)?;
        if !v.0.is_empty() {
            // Re-encoded: one spelling per value, whatever padding the client sent.
            ec.insert(entry.to_string(), STANDARD.encode(v.0.as_slice()));
        }
    }
    Ok(ec)
}

/// A Transit key type as a keyplane key spec, with the key usage it implies.
pub fn spec_of_type(key_type: &str, key_size: Option<u32>) -> Result<(KeySpec, &'static str)> {
    // As Vault: 0 is no size (Terraform's provider always sends it), and a size is for hmac
    // keys only.
    let key_size = key_size.filter(|&n| n != 0);
    if key_size.is_some() && key_type != "hmac" {
        return Err(Error::validation("key_size is only valid for HMAC keys"));
    }
    let spec = match key_type {
        "aes256-gcm96" => return Ok((KeySpec::Aes256Gcm, "encrypt-decrypt")),
        "aes128-gcm96" => "AES_128_GCM",
        "chacha20-poly1305" => "CHACHA20_POLY1305",
        "ed25519" => return Ok((KeySpec::Ed25519, "sign-verify")),
        "ecdsa-p256" => return Ok((KeySpec::EccNistP256, "sign-verify")),
        "ecdsa-p384" => return Ok((KeySpec::EccNistP384, "sign-verify")),
        "rsa-2048" => return Ok((KeySpec::Rsa2048, "sign-verify")),
        "rsa-3072" => return Ok((KeySpec::Rsa3072, "sign-verify")),
        "rsa-4096" => return Ok((KeySpec::Rsa4096, "sign-verify")),
        // Transit's key_size is the HMAC key's length in bytes; keyplane's HMAC keys are
        // sized by their hash, so the size picks the hash.
        "hmac" => {
            let n = key_size.unwrap_or(32);
            let spec = KeySpec::all()
                .find(|s| s.hmac_key_len() == Some(n as usize))
                .ok_or_else(|| {
                    Error::validation(format!(
                        "key_size {n} is not supported for hmac keys: 32 (HMAC-SHA-256), 48 (HMAC-SHA-384) or 64 (HMAC-SHA-512)"
                    ))
                })?;
            return Ok((spec, "generate-verify-mac"));
        }
        other => {
            return Err(Error::validation(format!(
                "key type {other:?} is not supported; keyplane serves aes256-gcm96, aes128-gcm96, chacha20-poly1305, ed25519, ecdsa-p256, ecdsa-p384, rsa-2048, rsa-3072, rsa-4096 and hmac"
            )))
        }
    };
    Ok((KeySpec::parse(spec)?, "encrypt-decrypt"))
}

/// The Transit key type of a keyplane key spec (as `describe-key` spells it).
pub fn type_of_spec(spec: &str) -> String {
    match spec {
        "AES_256_GCM" => "aes256-gcm96",
        "AES_128_GCM" => "aes128-gcm96",
        "CHACHA20_POLY1305" => "chacha20-poly1305",
        "ED25519" => "ed25519",
        "ECC_NIST_P256" => "ecdsa-p256",
        "ECC_NIST_P384" => "ecdsa-p384",
        "RSA_2048" => "rsa-2048",
        "RSA_3072" => "rsa-3072",
        "RSA_4096" => "rsa-4096",
        "HMAC_SHA_256" | "HMAC_SHA_384" | "HMAC_SHA_512" => "hmac",
        other => return other.to_ascii_lowercase(),
    }
    .to_string()
}

/// Transit's hash names (`sha2-256`) as keyplane's (`SHA_256`).
pub fn hash_name(transit: &str) -> Result<&'static str> {
    Ok(match transit {
        "sha2-224" => "SHA_224",
        "sha2-256" => "SHA_256",
        "sha2-384" => "SHA_384",
        "sha2-512" => "SHA_512",
        "sha3-224" => "SHA3_224",
        "sha3-256" => "SHA3_256",
        "sha3-384" => "SHA3_384",
        "sha3-512" => "SHA3_512",
        other => {
            return Err(Error::validation(format!(
                "unsupported hash algorithm {other:?}: sha2-224, sha2-256, sha2-384, sha2-512, sha3-224, sha3-256, sha3-384 or sha3-512"
            )))
        }
    })
}

/// The response envelope every Vault answer has (`request_id`, `lease_id`, `renewable`,
/// `lease_duration`, `data`, `wrap_info`, `warnings`, `auth`), around `data` (JSON already
/// encoded), written into a buffer zeroized once sent: `data` may hold plaintext or a data
/// key, so it is copied in as bytes, never through an intermediate string.
pub fn envelope(request_id: &str, data: Option<&[u8]>, warnings: &[String]) -> Zeroizing<Vec<u8>> {
    use std::io::Write;
    let mut body = SecretBuf::with_capacity(data.map_or(0, <[u8]>::len) + 256);
    // Writing strings and lists of strings as JSON into memory cannot fail.
    let _ = write!(body, "{{\"request_id\":");
    let _ = serde_json::to_writer(&mut body, request_id);
    body.extend_from_slice(
        b",\"lease_id\":\"\",\"renewable\":false,\"lease_duration\":0,\"data\":",
    );
    body.extend_from_slice(data.unwrap_or(b"null"));
    body.extend_from_slice(b",\"wrap_info\":null,\"warnings\":");
    if warnings.is_empty() {
        body.extend_from_slice(b"null");
    } else {
        let _ = serde_json::to_writer(&mut body, warnings);
    }
    body.extend_from_slice(b",\"auth\":null,\"mount_type\":\"transit\"}");
    body.into_inner()
}

#[cfg(test)]
mod tests {
    use super::weak;

    #[test]
    fn hmac_key_sizes_pick_the_hash_and_round_trip() {
        use crate::algorithms::KeySpec;
        for (size, spec) in [
            (None, KeySpec::HmacSha256),
            (Some(0), KeySpec::HmacSha256),
            (Some(32), KeySpec::HmacSha256),
            (Some(48), KeySpec::HmacSha384),
            (Some(64), KeySpec::HmacSha512),
        ] {
            let (got, usage) = super::spec_of_type("hmac", size).unwrap();
            assert_eq!((got, usage), (spec, "generate-verify-mac"), "{size:?}");
            // What a key read says is what made it.
            if let Some(n) = size.filter(|&n| n != 0) {
                assert_eq!(got.hmac_key_len(), Some(n as usize));
            }
        }
        for (key_type, size) in [("hmac", 16), ("hmac", 20), ("aes256-gcm96", 32)] {
            assert!(
                super::spec_of_type(key_type, Some(size)).is_err(),
                "{key_type} {size}"
            );
        }
    }

    #[derive(Debug, serde::Deserialize)]
    struct Fields {
        #[serde(default, deserialize_with = "weak::bool")]
        flag: bool,
        #[serde(default, deserialize_with = "weak::opt_bool")]
        maybe: Option<bool>,
        #[serde(default, deserialize_with = "weak::opt_int")]
        n: Option<u16>,
    }

    /// What the vault and bao CLIs send (strings), read as Vault reads it.
    #[test]
    fn booleans_and_integers_are_read_weakly_as_vault_reads_them() {
        let f = |body: &str| serde_json::from_str::<Fields>(body);
        let v = f(r#"{"flag":"true","maybe":"0","n":"207"}"#).unwrap();
        assert_eq!((v.flag, v.maybe, v.n), (true, Some(false), Some(207)));
        let v = f(r#"{"flag":true,"maybe":false,"n":207}"#).unwrap();
        assert_eq!((v.flag, v.maybe, v.n), (true, Some(false), Some(207)));
        let v = f(r#"{"flag":1,"maybe":"","n":""}"#).unwrap();
        assert_eq!((v.flag, v.maybe, v.n), (true, Some(false), Some(0)));
        let v = f(r#"{"flag":null,"maybe":null,"n":null}"#).unwrap();
        assert_eq!((v.flag, v.maybe, v.n), (false, None, None));
        let v = f("{}").unwrap();
        assert_eq!((v.flag, v.maybe, v.n), (false, None, None));
        // strconv.ParseInt with base 0.
        for (text, n) in [
            ("0x10", 16),
            ("0o17", 15),
            ("010", 8),
            ("0b101", 5),
            ("+7", 7),
        ] {
            let v = f(&format!(r#"{{"n":"{text}"}}"#)).unwrap();
            assert_eq!(v.n, Some(n), "{text}");
        }
        for (body, expected) in [
            (r#"{"flag":"yes"}"#, "expected a boolean"),
            (r#"{"flag":2}"#, "expected a boolean"),
            (r#"{"flag":1.0}"#, "expected a boolean"),
            (r#"{"n":"twelve"}"#, "expected an integer"),
            (r#"{"n":" 5"}"#, "expected an integer"),
            (r#"{"n":"1_000"}"#, "expected an integer"),
            (r#"{"n":"09"}"#, "expected an integer"),
            (r#"{"n":512.0}"#, "expected an integer"),
            (r#"{"n":"70000"}"#, "out of range"),
            (r#"{"n":"-1"}"#, "out of range"),
            (r#"{"n":[1]}"#, "expected an integer"),
        ] {
            let e = f(body).unwrap_err().to_string();
            assert!(e.contains(expected), "{body}: {e}");
        }
    }

    use super::*;

    #[test]
    fn versioned_values_round_trip_and_bad_ones_are_refused() {
        let v = versioned(12, b"\x00\x01binary");
        assert!(v.starts_with("vault:v12:"));
        assert_eq!(
            parse_versioned("ciphertext", &v, false).unwrap(),
            (12, b"\x00\x01binary".to_vec())
        );
        let j = versioned_jws(3, &[0xfb, 0xff]);
        assert_eq!(j, "vault:v3:-_8");
        assert_eq!(
            parse_versioned("signature", &j, true).unwrap(),
            (3, vec![0xfb, 0xff])
        );
        for bad in [
            "",
            "vault:",
            "vault:v:AAAA",
            "vault:v0:AAAA",
            "vault:v-1:AAAA",
            "vault:v1AAAA",
            "vault:v1:!!",
            "vault:v99999999999:AAAA",
            "VAULT:v1:AAAA",
        ] {
            assert!(parse_versioned("ciphertext", bad, false).is_err(), "{bad}");
        }
    }

    #[test]
    fn context_and_associated_data_become_one_canonical_context() {
        let item = |v: &str| serde_json::from_value::<ItemB64>(serde_json::json!(v)).unwrap();
        let ec = encryption_context(Some(&item("dGVuYW50LTc=")), None).unwrap();
        assert_eq!(ec.get(CONTEXT_ENTRY).unwrap(), "dGVuYW50LTc=");
        assert!(encryption_context(None, Some(&item("")))
            .unwrap()
            .is_empty());
        // Not base64: the item's error, naming the member.
        let e = encryption_context(None, Some(&item("!!"))).unwrap_err();
        assert!(e.to_string().contains("associated_data"), "{e}");
    }

    /// Base64 as Go decodes it: a shell's `base64` wraps every 76 characters, and Vault takes
    /// that; non-zero bits past the last byte too. Still padded, still the standard alphabet.
    #[test]
    fn base64_is_read_as_vault_reads_it() {
        let text = "x".repeat(100);
        let wrapped = {
            let b = STANDARD.encode(&text);
            format!("{}\n{}\r\n", &b[..76], &b[76..])
        };
        let decoded: B64 = serde_json::from_value(serde_json::json!(wrapped)).unwrap();
        assert_eq!(decoded.0.as_slice(), text.as_bytes());
        let loose: B64 = serde_json::from_value(serde_json::json!("QR==")).unwrap();
        assert_eq!(loose.0.as_slice(), b"A");
        for bad in ["QQ", "QQ-_", "!!!!"] {
            assert!(
                serde_json::from_value::<B64>(serde_json::json!(bad)).is_err(),
                "{bad}"
            );
        }
    }
}

#[cfg(test)]
mod envelope_tests {
    use super::*;

    #[test]
    fn the_envelope_is_json_with_every_member() {
        let body = envelope(
            "r-1",
            Some(br#"{"ciphertext":"vault:v1:AA=="}"#),
            &["w \"x\"".into()],
        );
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["request_id"], "r-1");
        assert_eq!(v["data"]["ciphertext"], "vault:v1:AA==");
        assert_eq!(v["warnings"][0], "w \"x\"");
        for k in [
            "lease_id",
            "renewable",
            "lease_duration",
            "wrap_info",
            "auth",
        ] {
            assert!(v.get(k).is_some(), "{k}");
        }
        let v: serde_json::Value = serde_json::from_slice(&envelope("r", None, &[])).unwrap();
        assert!(v["data"].is_null() && v["warnings"].is_null());
    }
}
