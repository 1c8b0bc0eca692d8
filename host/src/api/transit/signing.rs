//! Transit's `sign/<name>`, `verify/<name>` and `hmac/<name>` on keyplane's `sign`, `verify`,
//! `generate-mac` and `verify-mac`, with `batch_input` as one batch of operations.
//!
//! Transit names a hash (`hash_algorithm`, default sha2-256), a padding for RSA
//! (`signature_algorithm`: pss, the default, or pkcs1v15) and an encoding
//! (`marshaling_algorithm`: asn1, the default, or jws: unpadded URL-safe base64, for ECDSA
//! of the raw r‖s); as Vault, the front hashes an RSA or ECDSA input itself and keyplane
//! signs the digest, so inputs are not limited to the 4096 bytes keyplane signs whole
//! (ed25519 signs the input itself: at most 4096 bytes);
//! keyplane names one signing algorithm per key spec and hash, so the key's spec is read
//! first (`describe-key`) and the pair is mapped, or refused where keyplane has no such
//! algorithm (P-256 signs with SHA-256, P-384 with SHA-384). RSA-PSS salts are the hash's
//! length, which `salt_length` may ask for in each way Vault reads it ([`Salt`]); as Vault,
//! `salt_length` is read for every key but used only for RSA-PSS, and an empty
//! `hash_algorithm`, `algorithm` or `signature_algorithm` is the default. Signatures and HMACs
//! are `vault:v<N>:<base64>`; verification uses the version N names.

use serde::{Deserialize, Serialize};

use super::encryption::{batch, one_or_many, BatchForm, Blank};
use super::wire::{hash_name, parse_versioned, versioned, versioned_jws, weak, ItemB64};
use super::{done, err, key_of, pinned, Call, Failure, Reply};
use crate::api::bounded::AtMost;
use crate::error::{Error, Result};
use crate::ops::MAX_BATCH_ITEMS;
use crate::ops::{self, Base64};

type Answer = std::result::Result<Reply, Failure>;

#[derive(Debug, Default, Clone, Deserialize)]
struct Item {
    input: Option<ItemB64>,
    signature: Option<String>,
    hmac: Option<String>,
    context: Option<ItemB64>,
    /// Vault Enterprise's Ed25519ctx/Ed25519ph context: refused, never dropped (a signature
    /// made without it verifies where the caller meant it not to).
    signature_context: Option<ItemB64>,
    reference: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Request {
    /// One past the limit at most (see `api::bounded`): more is refused as too many.
    batch_input: Option<AtMost<Item, { MAX_BATCH_ITEMS + 1 }>>,
    hash_algorithm: Option<String>,
    algorithm: Option<String>,
    #[serde(default, deserialize_with = "weak::bool")]
    prehashed: bool,
    signature_algorithm: Option<String>,
    marshaling_algorithm: Option<String>,
    #[serde(default, deserialize_with = "weak::opt_int")]
    key_version: Option<u32>,
    /// RSA-PSS salt length (see [`Salt`]).
    salt_length: Option<weak::Value>,
}

/// An RSA-PSS salt length as Vault's `getSaltLength` reads `salt_length`: `auto` (the
/// default) or `hash` in any case, or an integer, as a JSON number or a string (Go's weak
/// decoding, so `true` and `false` are 1 and 0); -1 is Go's `PSSSaltLengthEqualsHash` and 0
/// its `PSSSaltLengthAuto`, below -1 is refused. keyplane's (and AWS's) PSS salt is always
/// the hash's length (`hash`); `auto` asks for any salt the signer likes, so it takes that.
/// Verifying, keyplane checks for a salt of the hash's length whatever is asked (Vault's
/// `auto` takes any), so a PSS signature made elsewhere with another salt does not verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Salt {
    Auto,
    Hash,
    Bytes(i64),
}

impl Salt {
    /// Read as Vault reads it, whatever the key: Vault parses `salt_length` before it looks
    /// at the key, so a value it cannot read is refused for every key; one it can is used
    /// only for RSA-PSS (see [`Salt::check`]).
    fn parse(v: Option<&weak::Value>) -> Result<Salt> {
        let n = match v {
            None => return Ok(Salt::Auto),
            Some(weak::Value::Str(s)) => match s.to_ascii_lowercase().as_str() {
                "auto" => return Ok(Salt::Auto),
                "hash" => return Ok(Salt::Hash),
                // `strconv.Atoi`: an optional sign and decimal digits.
                other => other.parse::<i64>().ok(),
            },
            Some(weak::Value::Int(n)) => Some(*n),
            Some(weak::Value::Bool(b)) => Some(i64::from(*b)),
            Some(weak::Value::Other) => None,
        };
        match n {
            Some(-1) => Ok(Salt::Hash),
            Some(0) => Ok(Salt::Auto),
            Some(n) if n > 0 => Ok(Salt::Bytes(n)),
            _ => Err(Error::validation(format!(
                "salt_length {} is neither 'auto', 'hash', nor an integer of -1 or more",
                v.map_or_else(String::new, ToString::to_string)
            ))),
        }
    }

    /// Whether keyplane signs with this salt for a hash of `digest_len` bytes: `auto`,
    /// `hash`, or that length in bytes. Another length is refused rather than signed with
    /// the hash's (a verifier told the salt's length would refuse the signature).
    fn check(self, digest_len: usize) -> Result<()> {
        match self {
            Salt::Auto | Salt::Hash => Ok(()),
            Salt::Bytes(n) if usize::try_from(n) == Ok(digest_len) => Ok(()),
            Salt::Bytes(n) => Err(Error::Unsupported(format!(
                "salt_length {n} is not supported: keyplane's RSA-PSS salt is the hash's length \
                 ({digest_len} bytes: \"hash\", \"auto\" or {digest_len})"
            ))),
        }
    }
}

/// A body's algorithm name, where an empty one is none: as Vault reads `hash_algorithm`,
/// `algorithm` and `signature_algorithm` for signatures (an empty one falls through to the
/// next, then to the default). Not `marshaling_algorithm`, which Vault refuses empty.
fn named(v: &Option<String>) -> Option<&str> {
    v.as_deref().filter(|s| !s.is_empty())
}

/// How a request signs: keyplane's algorithm, the message type, the encoding.
struct Scheme {
    algorithm: &'static str,
    message_type: &'static str,
    /// The hash the front takes of the input (RSA and ECDSA, input not prehashed), as Vault
    /// does: keyplane then signs the digest (`DIGEST`), so the input may be of any length,
    /// as in Vault, rather than the 4096 bytes keyplane (and AWS) sign whole.
    prehash: Option<&'static ring::digest::Algorithm>,
    /// `marshaling_algorithm=jws`: the signature in unpadded URL-safe base64.
    jws: bool,
    /// The ECDSA curve, whose JWS signature is the raw r‖s rather than ASN.1 DER.
    curve: Option<&'static str>,
}

impl Scheme {
    /// The message keyplane signs or verifies for an input.
    fn message(&self, input: Base64) -> Base64 {
        match self.prehash {
            Some(alg) => Base64::new(ring::digest::digest(alg, &input.0).as_ref().to_vec()),
            None => input,
        }
    }

    /// A signature as Transit writes it.
    fn encode(&self, version: u32, signature: &[u8]) -> Result<String> {
        Ok(match (self.jws, self.curve) {
            (true, Some(curve)) => versioned_jws(version, &der_to_jws(curve, signature)?),
            (true, None) => versioned_jws(version, signature),
            (false, _) => versioned(version, signature),
        })
    }

    /// A signature Transit wrote, as keyplane verifies it: (version, signature).
    fn decode(&self, value: &str) -> Result<(u32, Vec<u8>)> {
        let (version, sig) = parse_versioned("signature", value, self.jws)?;
        Ok(match (self.jws, self.curve) {
            (true, Some(curve)) => (version, jws_to_der(curve, &sig)?),
            _ => (version, sig),
        })
    }
}

fn scheme(spec: &str, req: &Request, path_hash: Option<&str>) -> Result<Scheme> {
    // As Vault: the path's hash first, then `hash_algorithm`, then the deprecated `algorithm`.
    let hash = path_hash
        .or(named(&req.hash_algorithm))
        .or(named(&req.algorithm))
        .unwrap_or("sha2-256");
    let hash = hash_name(hash)?;
    let padding = named(&req.signature_algorithm).unwrap_or("pss");
    let salt = Salt::parse(req.salt_length.as_ref())?;
    let jws = match req.marshaling_algorithm.as_deref().unwrap_or("asn1") {
        "asn1" => false,
        "jws" => true,
        other => {
            return Err(Error::validation(format!(
                "marshaling_algorithm {other:?} is not supported: asn1 or jws"
            )))
        }
    };
    let unsupported = || {
        Error::Unsupported(format!(
            "keyplane does not sign with key type {} and hash {hash}{}",
            super::wire::type_of_spec(spec),
            if spec.starts_with("ECC_NIST_P384") {
                " (ecdsa-p384 keys sign with sha2-384)"
            } else if spec.starts_with("ECC_NIST_P256") {
                " (ecdsa-p256 keys sign with sha2-256)"
            } else {
                ""
            }
        ))
    };
    let algorithm = match (spec, hash) {
        ("ED25519", _) => {
            if req.prehashed {
                return Err(Error::Unsupported(
                    "ed25519 keys sign the input itself; prehashed is not supported".into(),
                ));
            }
            "ED25519"
        }
        ("ECC_NIST_P256", "SHA_256") => "ECDSA_SHA_256",
        ("ECC_NIST_P384", "SHA_384") => "ECDSA_SHA_384",
        (s, h) if s.starts_with("RSA_") => match (padding, h) {
            ("pss", "SHA_256") => salt.check(32).map(|()| "RSASSA_PSS_SHA_256")?,
            ("pss", "SHA_384") => salt.check(48).map(|()| "RSASSA_PSS_SHA_384")?,
            ("pss", "SHA_512") => salt.check(64).map(|()| "RSASSA_PSS_SHA_512")?,
            ("pkcs1v15", "SHA_256") => "RSASSA_PKCS1_V1_5_SHA_256",
            ("pkcs1v15", "SHA_384") => "RSASSA_PKCS1_V1_5_SHA_384",
            ("pkcs1v15", "SHA_512") => "RSASSA_PKCS1_V1_5_SHA_512",
            ("pss" | "pkcs1v15", _) => return Err(unsupported()),
            (p, _) => {
                return Err(Error::validation(format!(
                    "signature_algorithm {p:?} is not supported: pss or pkcs1v15"
                )))
            }
        },
        _ => return Err(unsupported()),
    };
    let curve = match spec {
        "ECC_NIST_P256" => Some("P-256"),
        "ECC_NIST_P384" => Some("P-384"),
        _ => None,
    };
    let prehash = match hash {
        _ if req.prehashed || spec == "ED25519" => None,
        "SHA_256" => Some(&ring::digest::SHA256),
        "SHA_384" => Some(&ring::digest::SHA384),
        "SHA_512" => Some(&ring::digest::SHA512),
        _ => return Err(unsupported()),
    };
    Ok(Scheme {
        algorithm,
        message_type: if req.prehashed || prehash.is_some() {
            "DIGEST"
        } else {
            "RAW"
        },
        prehash,
        jws,
        curve,
    })
}

/// ASN.1 DER ECDSA signature → JWS (raw r‖s), and back.
fn der_to_jws(curve: &str, der: &[u8]) -> Result<Vec<u8>> {
    let bad = |_| Error::Internal;
    Ok(match curve {
        "P-256" => p256::ecdsa::Signature::from_der(der).map_err(bad)?.to_vec(),
        _ => p384::ecdsa::Signature::from_der(der).map_err(bad)?.to_vec(),
    })
}

fn jws_to_der(curve: &str, raw: &[u8]) -> Result<Vec<u8>> {
    let bad = |_| Error::validation("signature is not a JWS ECDSA signature of this key's curve");
    Ok(match curve {
        "P-256" => p256::ecdsa::Signature::from_slice(raw)
            .map_err(bad)?
            .to_der()
            .as_bytes()
            .to_vec(),
        _ => p384::ecdsa::Signature::from_slice(raw)
            .map_err(bad)?
            .to_der()
            .as_bytes()
            .to_vec(),
    })
}

async fn key_spec(call: &Call<'_>, alias: &str) -> std::result::Result<String, Failure> {
    let meta = call
        .run(Ok(ops::describe_key::DescribeKey {
            key_id: alias.into(),
        }))
        .await
        .map_err(done)?;
    Ok(meta.key_spec)
}

fn input(item: &Item) -> Result<Base64> {
    if let Some(c) = &item.context {
        if !c.get("context")?.0.is_empty() {
            return Err(Error::Unsupported(
                "context is not supported for signing: keyplane has no derived signing keys".into(),
            ));
        }
    }
    if let Some(c) = &item.signature_context {
        if !c.get("signature_context")?.0.is_empty() {
            return Err(Error::Unsupported(
                "signature_context is not supported: keyplane signs with plain Ed25519 (no Ed25519ctx or Ed25519ph)".into(),
            ));
        }
    }
    let input = item
        .input
        .as_ref()
        .ok_or_else(|| Error::validation("missing input"))?;
    Ok(Base64(input.get("input")?.0.clone()))
}

fn reference(i: &Item) -> Option<String> {
    i.reference.clone()
}

#[derive(Serialize)]
struct Signed {
    signature: String,
    key_version: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    reference: Option<String>,
}

/// `POST sign/<name>(/<hash_algorithm>)`.
pub async fn sign(call: &Call<'_>, name: &str, path_hash: Option<String>) -> Answer {
    let alias = key_of(name).map_err(err)?;
    let (req, item): (Request, Item) = call.decode_split().map_err(err)?;
    let spec = key_spec(call, &alias).await?;
    let scheme = scheme(&spec, &req, path_hash.as_deref()).map_err(err)?;
    let version = pinned(req.key_version);
    let op = |item: &Item| sign_op(&alias, &scheme, version, item);
    let encode = |out: ops::sign::SignOutput, reference: Option<String>| {
        let version = u32::try_from(out.key_version).map_err(|_| Error::Internal)?;
        let signature = scheme.encode(version, &out.signature.0)?;
        Ok(Signed {
            signature,
            key_version: out.key_version,
            reference,
        })
    };
    let (single, batch) = (item, batch(req.batch_input));
    let form = &BatchForm::always_ok(&[("key_version", Blank::Zero)]);
    one_or_many(call, single, batch, form, reference, |i| op(&i), encode).await
}

#[derive(Serialize)]
struct Verified {
    valid: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    reference: Option<String>,
}

/// `POST verify/<name>(/<hash_algorithm>)`: a signature, or an HMAC (`hmac`).
pub async fn verify(call: &Call<'_>, name: &str, path_hash: Option<String>) -> Answer {
    let alias = key_of(name).map_err(err)?;
    let (req, item): (Request, Item) = call.decode_split().map_err(err)?;
    if verifies_hmac(&req, &item).map_err(err)? {
        return verify_hmac(call, &alias, req, item, path_hash).await;
    }
    let spec = key_spec(call, &alias).await?;
    let scheme = scheme(&spec, &req, path_hash.as_deref()).map_err(err)?;
    let op = |item: &Item| verify_op(&alias, &scheme, item);
    let encode = |out: ops::sign::VerifyOutput, reference| {
        Ok(Verified {
            valid: out.signature_valid,
            reference,
        })
    };
    let (single, batch) = (item, batch(req.batch_input));
    let form = &BatchForm::always_ok(&[("valid", Blank::False)]);
    one_or_many(call, single, batch, form, reference, |i| op(&i), encode).await
}

/// Which endpoint names an HMAC's hash: Vault reads the body's fields differently for each.
#[derive(Clone, Copy)]
enum MacUse {
    /// `hmac/<name>`: `algorithm` (Vault's hmac endpoint has no `hash_algorithm`).
    Generate,
    /// `verify/<name>` with `hmac`: `hash_algorithm`, else the deprecated `algorithm` (Vault
    /// PR #27211, OpenBao #3668; before them Vault read `algorithm` only).
    Verify,
}

/// Transit's HMAC algorithm (`sha2-256`) as keyplane's (`HMAC_SHA_256`); the key's spec
/// must match (keyplane's HMAC keys are made for one hash). As Vault: the path's algorithm
/// first, then the body's (a field given empty is refused, as Vault refuses it).
fn mac_algorithm(req: &Request, path: Option<&str>, used: MacUse) -> Result<String> {
    let body = match used {
        MacUse::Generate => req.algorithm.as_deref(),
        MacUse::Verify => req.hash_algorithm.as_deref().or(req.algorithm.as_deref()),
    };
    let name = path.or(body).unwrap_or("sha2-256");
    match hash_name(name)? {
        h @ ("SHA_256" | "SHA_384" | "SHA_512") => Ok(format!("HMAC_{h}")),
        _ => Err(Error::Unsupported(format!(
            "keyplane's HMAC keys use sha2-256, sha2-384 or sha2-512, not {name}"
        ))),
    }
}

async fn verify_hmac(
    call: &Call<'_>,
    alias: &str,
    req: Request,
    item: Item,
    path: Option<String>,
) -> Answer {
    let algorithm = mac_algorithm(&req, path.as_deref(), MacUse::Verify).map_err(err)?;
    let op = |item: &Item| verify_mac_op(alias, &algorithm, item);
    let encode = |out: ops::mac::VerifyMacOutput, reference| {
        Ok(Verified {
            valid: out.mac_valid,
            reference,
        })
    };
    let (single, batch) = (item, batch(req.batch_input));
    let form = &BatchForm::always_ok(&[("valid", Blank::False)]);
    one_or_many(call, single, batch, form, reference, |i| op(&i), encode).await
}

#[derive(Serialize)]
struct Mac {
    hmac: String,
    key_version: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    reference: Option<String>,
}

/// `POST hmac/<name>(/<algorithm>)`.
pub async fn hmac(call: &Call<'_>, name: &str, path_algorithm: Option<String>) -> Answer {
    let alias = key_of(name).map_err(err)?;
    let (req, item): (Request, Item) = call.decode_split().map_err(err)?;
    let algorithm =
        mac_algorithm(&req, path_algorithm.as_deref(), MacUse::Generate).map_err(err)?;
    let version = pinned(req.key_version);
    let op = |item: &Item| mac_op(&alias, &algorithm, version, item);
    let encode = |out: ops::mac::GenerateMacOutput, reference| {
        let version = u32::try_from(out.key_version).map_err(|_| Error::Internal)?;
        Ok(Mac {
            hmac: versioned(version, &out.mac.0),
            key_version: out.key_version,
            reference,
        })
    };
    let (single, batch) = (item, batch(req.batch_input));
    let form = &BatchForm::always_ok(&[]);
    one_or_many(call, single, batch, form, reference, |i| op(&i), encode).await
}

/// Whether a `verify` request verifies HMACs rather than signatures, as Vault's
/// `pathVerifyWrite` decides it: an item with a `signature` verifies it (whatever else it
/// has), one with only an `hmac` verifies that; a batch is all one kind, and a request with
/// neither is refused. Before, the first item decided, and items of the other kind came back
/// `valid: false` in a batch answered 200.
fn verifies_hmac(req: &Request, item: &Item) -> Result<bool> {
    let items = match &req.batch_input {
        Some(b) => b.items.as_slice(),
        None => std::slice::from_ref(item),
    };
    let (mut signature, mut hmac, mut missing) = (false, false, false);
    for i in items {
        if i.signature.is_some() {
            signature = true;
        } else if i.hmac.is_some() {
            hmac = true;
        } else {
            missing = true;
        }
    }
    let refused = |m: &str| Err(Error::validation(m));
    match (req.batch_input.is_some(), signature, hmac, missing) {
        (false, false, false, _) => {
            refused("neither a 'signature' nor an 'hmac' were given to verify")
        }
        (_, true, true, _) => {
            refused("elements of batch_input must all provide 'signature' or all provide 'hmac'")
        }
        (_, true, _, true) => refused("some elements of batch_input are missing 'signature'"),
        (_, _, true, true) => refused("some elements of batch_input are missing 'hmac'"),
        (_, _, _, true) => refused("no batch_input elements have 'signature' or 'hmac'"),
        (_, _, hmac, _) => Ok(hmac),
    }
}

fn sign_op(
    alias: &str,
    scheme: &Scheme,
    pinned_version: Option<u32>,
    item: &Item,
) -> Result<ops::sign::Sign> {
    Ok(ops::sign::Sign {
        key_id: alias.to_string(),
        message: scheme.message(input(item)?),
        message_type: scheme.message_type.into(),
        signing_algorithm: scheme.algorithm.into(),
        pinned_version,
    })
}

fn verify_op(alias: &str, scheme: &Scheme, item: &Item) -> Result<ops::sign::Verify> {
    let value = item
        .signature
        .as_deref()
        .ok_or_else(|| Error::validation("missing signature (or hmac) to verify"))?;
    let (version, signature) = scheme.decode(value)?;
    Ok(ops::sign::Verify {
        key_id: alias.to_string(),
        message: scheme.message(input(item)?),
        message_type: scheme.message_type.into(),
        signing_algorithm: scheme.algorithm.into(),
        signature: Base64::new(signature),
        key_version: Some(version),
    })
}

fn mac_op(
    alias: &str,
    algorithm: &str,
    pinned_version: Option<u32>,
    item: &Item,
) -> Result<ops::mac::GenerateMac> {
    Ok(ops::mac::GenerateMac {
        key_id: alias.to_string(),
        message: input(item)?,
        mac_algorithm: algorithm.to_string(),
        pinned_version,
    })
}

fn verify_mac_op(alias: &str, algorithm: &str, item: &Item) -> Result<ops::mac::VerifyMac> {
    let value = item
        .hmac
        .as_deref()
        .ok_or_else(|| Error::validation("missing hmac to verify"))?;
    let (version, mac) = parse_versioned("hmac", value, false)?;
    Ok(ops::mac::VerifyMac {
        key_id: alias.to_string(),
        message: input(item)?,
        mac_algorithm: algorithm.to_string(),
        mac: Base64::new(mac),
        key_version: Some(version),
    })
}

/// Which endpoint of this file a fuzzed body is for.
#[cfg(feature = "fuzzing")]
pub(super) enum Kind {
    Sign,
    Verify,
    Hmac,
}

/// A body of `kind` decoded and translated, item by item, into its operations (validated),
/// by the functions the endpoints use; signatures for a key of each kind that signs (every
/// RSA size takes the same path) and a symmetric one.
#[cfg(feature = "fuzzing")]
pub(super) fn fuzz(name: &str, body: &[u8], path: Option<String>, kind: Kind) {
    use super::fuzz_validate as check;
    const SPECS: [&str; 6] = [
        "ED25519",
        "ECC_NIST_P256",
        "ECC_NIST_P384",
        "RSA_2048",
        "RSA_4096",
        "SYMMETRIC_DEFAULT",
    ];
    let (Ok(alias), Ok(req), Ok(item)) = (
        key_of(name),
        super::decode::<Request>(body),
        super::decode::<Item>(body),
    ) else {
        return;
    };
    let version = pinned(req.key_version);
    let path = path.as_deref();
    let mac = mac_algorithm(
        &req,
        path,
        match kind {
            Kind::Verify => MacUse::Verify,
            Kind::Sign | Kind::Hmac => MacUse::Generate,
        },
    );
    let schemes: Vec<Scheme> = SPECS
        .iter()
        .filter_map(|spec| scheme(spec, &req, path).ok())
        .collect();
    // A verify the front refuses (a batch mixing signatures and HMACs) translates to none.
    let hmac = verifies_hmac(&req, &item).ok();
    let items = std::iter::once(&item).chain(req.batch_input.iter().flat_map(|b| &b.items));
    for item in items.take(MAX_BATCH_ITEMS + 1) {
        match (&kind, &mac) {
            (Kind::Hmac, Ok(algorithm)) => check(mac_op(&alias, algorithm, version, item)),
            (Kind::Verify, Ok(algorithm)) if hmac == Some(true) => {
                check(verify_mac_op(&alias, algorithm, item))
            }
            _ => {}
        }
        for scheme in &schemes {
            match kind {
                Kind::Sign => check(sign_op(&alias, scheme, version, item)),
                Kind::Verify if hmac == Some(false) => check(verify_op(&alias, scheme, item)),
                Kind::Verify | Kind::Hmac => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(body: serde_json::Value) -> Request {
        serde_json::from_value(body).unwrap()
    }

    /// As Vault: the path's hash first, then `hash_algorithm`, then `algorithm`.
    #[test]
    fn the_path_names_the_hash_before_the_body() {
        let both = request(serde_json::json!({ "hash_algorithm": "sha2-256" }));
        let s = scheme("RSA_2048", &both, Some("sha2-512")).unwrap();
        assert_eq!(s.algorithm, "RSASSA_PSS_SHA_512");
        let s = scheme("RSA_2048", &both, None).unwrap();
        assert_eq!(s.algorithm, "RSASSA_PSS_SHA_256");
        let old = request(serde_json::json!({ "algorithm": "sha2-384" }));
        let s = scheme("RSA_2048", &old, None).unwrap();
        assert_eq!(s.algorithm, "RSASSA_PSS_SHA_384");

        let mac = request(serde_json::json!({ "algorithm": "sha2-256" }));
        for used in [MacUse::Generate, MacUse::Verify] {
            assert_eq!(
                mac_algorithm(&mac, Some("sha2-512"), used).unwrap(),
                "HMAC_SHA_512"
            );
            assert_eq!(mac_algorithm(&mac, None, used).unwrap(), "HMAC_SHA_256");
        }
    }

    /// An HMAC verify reads `hash_algorithm` before `algorithm`; generating reads
    /// `algorithm` only, as Vault's hmac endpoint has no `hash_algorithm`.
    #[test]
    fn hmac_verify_takes_hash_algorithm_first() {
        let both =
            request(serde_json::json!({ "hash_algorithm": "sha2-512", "algorithm": "sha2-256" }));
        assert_eq!(
            mac_algorithm(&both, None, MacUse::Verify).unwrap(),
            "HMAC_SHA_512"
        );
        assert_eq!(
            mac_algorithm(&both, None, MacUse::Generate).unwrap(),
            "HMAC_SHA_256"
        );
        let only = request(serde_json::json!({ "hash_algorithm": "sha2-512" }));
        assert_eq!(
            mac_algorithm(&only, None, MacUse::Generate).unwrap(),
            "HMAC_SHA_256"
        );
        let empty = request(serde_json::json!({ "hash_algorithm": "" }));
        assert!(mac_algorithm(&empty, None, MacUse::Verify).is_err());
    }

    /// `salt_length` as Vault reads it; used for RSA-PSS only, where keyplane signs with
    /// the hash's length.
    #[test]
    fn salt_lengths_are_read_as_vault_reads_them() {
        let with = |salt: serde_json::Value, padding: &str, spec: &str| {
            let req = request(serde_json::json!({
                "salt_length": salt, "signature_algorithm": padding, "hash_algorithm": "sha2-384"
            }));
            scheme(spec, &req, None).map(|s| s.algorithm)
        };
        for ok in [
            serde_json::json!("auto"),
            serde_json::json!("AUTO"),
            serde_json::json!("Hash"),
            serde_json::json!(48),
            serde_json::json!("48"),
            serde_json::json!("+48"),
            serde_json::json!(-1),
            serde_json::json!("0"),
        ] {
            assert_eq!(
                with(ok.clone(), "pss", "RSA_3072").unwrap(),
                "RSASSA_PSS_SHA_384",
                "{ok}"
            );
        }
        for unmade in [
            serde_json::json!(32),
            serde_json::json!("20"),
            serde_json::json!(true),
        ] {
            let e = with(unmade.clone(), "pss", "RSA_3072").unwrap_err();
            assert!(e.to_string().contains("48 bytes"), "{unmade}: {e}");
            // Ignored where there is no PSS salt.
            assert!(
                with(unmade.clone(), "pkcs1v15", "RSA_3072").is_ok(),
                "{unmade}"
            );
            assert!(with(unmade, "", "ECC_NIST_P384").is_ok());
        }
        for bad in [
            serde_json::json!(""),
            serde_json::json!("-2"),
            serde_json::json!(" 48"),
            serde_json::json!("lots"),
            serde_json::json!(48.0),
            serde_json::json!([48]),
        ] {
            assert!(with(bad.clone(), "pkcs1v15", "RSA_3072").is_err(), "{bad}");
            assert!(with(bad.clone(), "", "ECC_NIST_P384").is_err(), "{bad}");
        }
    }

    /// An empty `hash_algorithm`, `algorithm` or `signature_algorithm` is none, as Vault
    /// reads them; an empty `marshaling_algorithm` is refused, as Vault refuses it.
    #[test]
    fn empty_algorithms_are_the_defaults() {
        let req = request(serde_json::json!({
            "hash_algorithm": "", "algorithm": "", "signature_algorithm": ""
        }));
        assert_eq!(
            scheme("RSA_2048", &req, None).unwrap().algorithm,
            "RSASSA_PSS_SHA_256"
        );
        let req = request(serde_json::json!({ "hash_algorithm": "", "algorithm": "sha2-512" }));
        assert_eq!(
            scheme("RSA_2048", &req, None).unwrap().algorithm,
            "RSASSA_PSS_SHA_512"
        );
        let req = request(serde_json::json!({ "marshaling_algorithm": "" }));
        assert!(scheme("ECC_NIST_P256", &req, None).is_err());
    }
}
