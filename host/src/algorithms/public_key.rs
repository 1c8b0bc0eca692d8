//! Public keys and signature encodings, with the RustCrypto crates rather than hand-written
//! ASN.1: SubjectPublicKeyInfo (`spki`, `pkcs1`, `p256`/`p384`) as DER, PEM and JWK; peer
//! public keys for ECDH parsed and checked to lie on the key's curve; ECDSA signatures
//! converted between PKCS#11's raw `r ‖ s` and the DER `ECDSA-Sig-Value` that openssl and
//! X.509 expect; the PKCS#1 v1.5 DigestInfo prefixes.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use der::asn1::{AnyRef, BitStringRef, ObjectIdentifier, UintRef};
use der::Encode;
use p256::pkcs8::{DecodePublicKey, EncodePublicKey};
use serde_json::json;
use spki::{AlgorithmIdentifierRef, SubjectPublicKeyInfoRef};

use super::{Hash, KeySpec};
use crate::error::{Error, Result};

/// The public half of a key pair, as a PKCS#11 token holds it (`CKA_EC_POINT`,
/// `CKA_MODULUS` and `CKA_PUBLIC_EXPONENT`).
pub enum PublicParts {
    /// `CKA_EC_POINT` content: an uncompressed SEC1 point (NIST curves) or the 32-byte
    /// Ed25519 key.
    Ec(Vec<u8>),
    /// Big-endian modulus and public exponent.
    Rsa { modulus: Vec<u8>, exponent: Vec<u8> },
    /// The public value `y` of a finite-field Diffie-Hellman key (`CKA_VALUE`), big-endian;
    /// its group is the spec's.
    Dh(Vec<u8>),
}

/// secp256r1 (P-256).
pub const OID_P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
/// secp384r1 (P-384).
pub const OID_P384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
/// id-Ed25519 (RFC 8410).
pub const OID_ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");
/// rsaEncryption (RFC 8017).
pub const OID_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");

fn internal(what: &'static str) -> impl Fn(der::Error) -> Error {
    move |e| {
        tracing::error!(error = %e, what, "public key encoding failed");
        Error::Internal
    }
}

fn bad_token_key<E: std::fmt::Display>(e: E) -> Error {
    tracing::error!(error = %e, "the token returned a public key that does not parse");
    Error::Internal
}

/// The DER SubjectPublicKeyInfo of a key pair's public half.
pub fn spki_der(spec: KeySpec, parts: &PublicParts) -> Result<Vec<u8>> {
    match (spec, parts) {
        (KeySpec::EccNistP256, PublicParts::Ec(point)) => {
            Ok(p256::PublicKey::from_sec1_bytes(point)
                .map_err(bad_token_key)?
                .to_public_key_der()
                .map_err(bad_token_key)?
                .into_vec())
        }
        (KeySpec::EccNistP384, PublicParts::Ec(point)) => {
            Ok(p384::PublicKey::from_sec1_bytes(point)
                .map_err(bad_token_key)?
                .to_public_key_der()
                .map_err(bad_token_key)?
                .into_vec())
        }
        (KeySpec::Ed25519, PublicParts::Ec(point)) => {
            if point.len() != 32 {
                return Err(bad_token_key("Ed25519 public key is not 32 bytes"));
            }
            SubjectPublicKeyInfoRef {
                algorithm: AlgorithmIdentifierRef {
                    oid: OID_ED25519,
                    parameters: None,
                },
                subject_public_key: BitStringRef::from_bytes(point)
                    .map_err(internal("bit string"))?,
            }
            .to_der()
            .map_err(internal("ed25519 spki"))
        }
        (_, PublicParts::Rsa { modulus, exponent }) if spec.rsa_bits().is_some() => {
            let key = pkcs1::RsaPublicKey {
                modulus: UintRef::new(modulus).map_err(internal("modulus"))?,
                public_exponent: UintRef::new(exponent).map_err(internal("exponent"))?,
            }
            .to_der()
            .map_err(internal("rsa public key"))?;
            SubjectPublicKeyInfoRef {
                algorithm: AlgorithmIdentifierRef {
                    oid: OID_RSA,
                    parameters: Some(AnyRef::NULL),
                },
                subject_public_key: BitStringRef::from_bytes(&key)
                    .map_err(internal("bit string"))?,
            }
            .to_der()
            .map_err(internal("rsa spki"))
        }
        (_, PublicParts::Dh(y)) => {
            super::ffdhe::spki_der(spec.dh_group().ok_or(Error::Internal)?, y)
        }
        _ => Err(Error::Internal),
    }
}

/// id-ecPublicKey (RFC 5480).
const OID_EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");

/// The public parts of a SubjectPublicKeyInfo [`spki_der`] wrote (RSA, a NIST curve,
/// Ed25519 or an FFDHE group), and for EC keys the DER `ECParameters` (the curve's OID, as
/// `CKA_EC_PARAMS` holds it), for DH keys the DER `DHParameter` (`{ prime, base }`). Anything else is [`Error::Internal`]: only keyplane's own stored public keys
/// come here.
pub fn parts_from_spki(der: &[u8]) -> Result<(Option<Vec<u8>>, PublicParts)> {
    use der::Decode;
    let spki = SubjectPublicKeyInfoRef::from_der(der).map_err(bad_token_key)?;
    let key = spki
        .subject_public_key
        .as_bytes()
        .ok_or_else(|| bad_token_key("public key with unused bits"))?;
    let oid = spki.algorithm.oid;
    if oid == OID_RSA {
        let rsa = pkcs1::RsaPublicKey::from_der(key).map_err(bad_token_key)?;
        return Ok((
            None,
            PublicParts::Rsa {
                modulus: strip_zeros(rsa.modulus.as_bytes()).to_vec(),
                exponent: rsa.public_exponent.as_bytes().to_vec(),
            },
        ));
    }
    if oid == super::ffdhe::OID_DH {
        let y = der::asn1::UintRef::from_der(key).map_err(bad_token_key)?;
        let params = spki
            .algorithm
            .parameters
            .ok_or_else(|| bad_token_key("DH key without its group"))?
            .to_der()
            .map_err(internal("dh parameters"))?;
        return Ok((Some(params), PublicParts::Dh(y.as_bytes().to_vec())));
    }
    let curve = if oid == OID_ED25519 {
        OID_ED25519
    } else if oid == OID_EC_PUBLIC_KEY {
        let curve = spki
            .algorithm
            .parameters_oid()
            .map_err(|e| bad_token_key(e.to_string()))?;
        if curve != OID_P256 && curve != OID_P384 {
            return Err(bad_token_key("a curve keyplane does not use"));
        }
        curve
    } else {
        return Err(bad_token_key("an algorithm keyplane does not use"));
    };
    Ok((
        Some(curve.to_der().map_err(internal("curve"))?),
        PublicParts::Ec(key.to_vec()),
    ))
}

/// PEM (`-----BEGIN PUBLIC KEY-----`) of a DER SubjectPublicKeyInfo.
pub fn spki_pem(der: &[u8]) -> Result<String> {
    der::pem::encode_string("PUBLIC KEY", der::pem::LineEnding::LF, der)
        .map_err(|e| internal("pem")(e.into()))
}

fn strip_zeros(b: &[u8]) -> &[u8] {
    let i = b
        .iter()
        .position(|x| *x != 0)
        .unwrap_or(b.len().saturating_sub(1));
    &b[i..]
}

/// The public key as a JWK (RFC 7517/7518; RFC 8037 for Ed25519); `None` for a finite-field
/// Diffie-Hellman key, which JOSE has no key type for.
pub fn jwk(spec: KeySpec, parts: &PublicParts) -> Result<Option<serde_json::Value>> {
    let from_str =
        |s: String| serde_json::from_str::<serde_json::Value>(&s).map_err(|_| Error::Internal);
    let jwk = match (spec, parts) {
        (KeySpec::EccNistP256, PublicParts::Ec(point)) => from_str(
            p256::PublicKey::from_sec1_bytes(point)
                .map_err(bad_token_key)?
                .to_jwk_string(),
        ),
        (KeySpec::EccNistP384, PublicParts::Ec(point)) => from_str(
            p384::PublicKey::from_sec1_bytes(point)
                .map_err(bad_token_key)?
                .to_jwk_string(),
        ),
        (KeySpec::Ed25519, PublicParts::Ec(point)) => Ok(json!({
            "kty": "OKP",
            "crv": "Ed25519",
            "x": URL_SAFE_NO_PAD.encode(point),
        })),
        (_, PublicParts::Rsa { modulus, exponent }) => Ok(json!({
            "kty": "RSA",
            "n": URL_SAFE_NO_PAD.encode(strip_zeros(modulus)),
            "e": URL_SAFE_NO_PAD.encode(strip_zeros(exponent)),
        })),
        (_, PublicParts::Dh(_)) => return Ok(None),
        _ => Err(Error::Internal),
    };
    jwk.map(Some)
}

/// The DER SubjectPublicKeyInfo given in request field `field` as PEM ("PUBLIC KEY") or
/// base64 DER.
fn spki_input(field: &str, public_key: &str) -> Result<Vec<u8>> {
    der_input(field, public_key, "PUBLIC KEY", "SubjectPublicKeyInfo")
}

/// The DER given in request field `field` as PEM with label `label` or as base64; `what`
/// names the structure in errors.
pub fn der_input(field: &str, text: &str, label: &str, what: &str) -> Result<Vec<u8>> {
    let text = text.trim();
    if text.starts_with("-----BEGIN") {
        let (found, der) = der::pem::decode_vec(text.as_bytes())
            .map_err(|_| Error::validation(format!("{field} is not valid PEM")))?;
        if found != label {
            return Err(Error::validation(format!(
                "{field} must be a PEM \"{label}\" ({what})"
            )));
        }
        Ok(der)
    } else {
        use base64::engine::general_purpose::STANDARD;
        STANDARD.decode(text).map_err(|_| {
            Error::validation(format!("{field} must be PEM or base64 of a DER {what}"))
        })
    }
}

/// An RSA public key given in request field `field` (SubjectPublicKeyInfo, PEM or base64
/// DER): its modulus and public exponent, big-endian. At least `min_bits`, at most
/// [`MAX_RSA_BITS`]; an even modulus or an exponent a module would refuse is a validation
/// error here, not a module failure later.
pub fn rsa_public_key(field: &str, public_key: &str, min_bits: u64) -> Result<(Vec<u8>, Vec<u8>)> {
    use der::Decode;
    let der = spki_input(field, public_key)?;
    let bad = || Error::validation(format!("{field} is not an RSA SubjectPublicKeyInfo"));
    let spki = SubjectPublicKeyInfoRef::from_der(&der).map_err(|_| bad())?;
    if spki.algorithm.oid != OID_RSA {
        return Err(bad());
    }
    let bits = spki.subject_public_key.as_bytes().ok_or_else(bad)?;
    let key = pkcs1::RsaPublicKey::from_der(bits).map_err(|_| bad())?;
    let modulus = strip_zeros(key.modulus.as_bytes()).to_vec();
    let size = rsa_bits(&modulus);
    if size < min_bits {
        return Err(Error::validation(format!(
            "{field} is an RSA key of {size} bits; at least {min_bits} are required"
        )));
    }
    if size > MAX_RSA_BITS {
        return Err(Error::validation(format!(
            "{field} is an RSA key of {size} bits; at most {MAX_RSA_BITS} are accepted"
        )));
    }
    if modulus.last().is_some_and(|b| b & 1 == 0) {
        return Err(Error::validation(format!(
            "{field} has an even RSA modulus: not an RSA key"
        )));
    }
    let exponent = strip_zeros(key.public_exponent.as_bytes()).to_vec();
    if !rsa_exponent_fits(&exponent) {
        return Err(Error::validation(format!(
            "{field} has an RSA public exponent that is not an odd number from 3 to 2^64-1"
        )));
    }
    Ok((modulus, exponent))
}

/// The size in bits of an RSA modulus (big-endian), counted to its leading one bit: a
/// 2047-bit modulus is not a 2048-bit key, though both take 256 bytes.
pub fn rsa_bits(modulus: &[u8]) -> u64 {
    let m = strip_zeros(modulus);
    match m.first() {
        Some(&top) if top != 0 => (m.len() as u64 - 1) * 8 + u64::from(8 - top.leading_zeros()),
        _ => 0,
    }
}

/// Whether an RSA public exponent (big-endian) is one HSMs (OpenSSL within SoftHSM2, for
/// one) accept: odd, at least 3, at most 64 bits. Anything else would reach the module and
/// come back as a failure of the module rather than of the key.
pub fn rsa_exponent_fits(exponent: &[u8]) -> bool {
    let e = strip_zeros(exponent);
    let odd = e.last().is_some_and(|b| b & 1 == 1);
    e.len() <= 8 && odd && e != [1]
}

/// The largest RSA modulus accepted from a caller (as OpenSSL's `OPENSSL_RSA_MAX_MODULUS_BITS`).
const MAX_RSA_BITS: u64 = 16384;

/// A peer's public key for ECDH on `spec`'s curve, given as PEM or base64 DER
/// SubjectPublicKeyInfo: its uncompressed SEC1 point. A key of another curve or algorithm, a
/// point not on the curve (or the identity) is a validation error.
pub fn peer_point(spec: KeySpec, public_key: &str) -> Result<Vec<u8>> {
    let der = spki_input("peer_public_key", public_key)?;
    let bad = |curve: &str| {
        Error::validation(format!(
            "peer_public_key is not a valid {curve} public key: it must be a SubjectPublicKeyInfo of an {curve} point on the curve"
        ))
    };
    match spec {
        KeySpec::EccNistP256 => {
            use p256::elliptic_curve::sec1::ToEncodedPoint;
            let k = p256::PublicKey::from_public_key_der(&der).map_err(|_| bad("P-256"))?;
            Ok(k.to_encoded_point(false).as_bytes().to_vec())
        }
        KeySpec::EccNistP384 => {
            use p384::elliptic_curve::sec1::ToEncodedPoint;
            let k = p384::PublicKey::from_public_key_der(&der).map_err(|_| bad("P-384"))?;
            Ok(k.to_encoded_point(false).as_bytes().to_vec())
        }
        _ => Err(Error::Internal),
    }
}

/// Convert PKCS#11's raw ECDSA signature (`r ‖ s`) to DER.
pub fn ecdsa_raw_to_der(spec: KeySpec, raw: &[u8]) -> Result<Vec<u8>> {
    let bad = |_| {
        tracing::error!("the token returned a malformed ECDSA signature");
        Error::Internal
    };
    match spec {
        KeySpec::EccNistP256 => Ok(p256::ecdsa::Signature::from_slice(raw)
            .map_err(bad)?
            .to_der()
            .as_bytes()
            .to_vec()),
        KeySpec::EccNistP384 => Ok(p384::ecdsa::Signature::from_slice(raw)
            .map_err(bad)?
            .to_der()
            .as_bytes()
            .to_vec()),
        _ => Err(Error::Internal),
    }
}

/// Convert a DER ECDSA signature to raw `r ‖ s`; `None` if it does not parse (such a
/// signature simply does not verify).
pub fn ecdsa_der_to_raw(spec: KeySpec, der: &[u8]) -> Option<Vec<u8>> {
    match spec {
        KeySpec::EccNistP256 => p256::ecdsa::Signature::from_der(der)
            .ok()
            .map(|s| s.to_bytes().to_vec()),
        KeySpec::EccNistP384 => p384::ecdsa::Signature::from_der(der)
            .ok()
            .map(|s| s.to_bytes().to_vec()),
        _ => None,
    }
}

/// The DER DigestInfo for PKCS#1 v1.5 signatures: the fixed prefixes of RFC 8017 §9.2,
/// note 1, followed by the digest.
pub fn digest_info(hash: Hash, digest: &[u8]) -> Vec<u8> {
    const SHA1: &[u8] = &[
        0x30, 0x21, 0x30, 0x09, 0x06, 0x05, 0x2b, 0x0e, 0x03, 0x02, 0x1a, 0x05, 0x00, 0x04, 0x14,
    ];
    const SHA256: &[u8] = &[
        0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01,
        0x05, 0x00, 0x04, 0x20,
    ];
    const SHA384: &[u8] = &[
        0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02,
        0x05, 0x00, 0x04, 0x30,
    ];
    const SHA512: &[u8] = &[
        0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03,
        0x05, 0x00, 0x04, 0x40,
    ];
    let prefix = match hash {
        Hash::Sha1 => SHA1,
        Hash::Sha256 => SHA256,
        Hash::Sha384 => SHA384,
        Hash::Sha512 => SHA512,
    };
    let mut out = prefix.to_vec();
    out.extend_from_slice(digest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ecdsa_der_round_trip() {
        let mut raw = vec![0u8; 64];
        raw[0] = 0x80; // high bit: DER needs a leading zero
        raw[31] = 1;
        raw[63] = 7;
        let der = ecdsa_raw_to_der(KeySpec::EccNistP256, &raw).unwrap();
        assert_eq!(der[0], 0x30);
        assert_eq!(ecdsa_der_to_raw(KeySpec::EccNistP256, &der).unwrap(), raw);
        assert!(ecdsa_der_to_raw(KeySpec::EccNistP256, b"junk").is_none());
    }

    #[test]
    fn digest_info_lengths_match_the_prefix() {
        for h in [Hash::Sha1, Hash::Sha256, Hash::Sha384, Hash::Sha512] {
            let di = digest_info(h, &vec![0; h.output_len()]);
            assert_eq!(di[1] as usize + 2, di.len());
        }
    }

    #[test]
    fn recipient_rsa_keys_outside_what_modules_take_are_refused() {
        use base64::engine::general_purpose::STANDARD;
        use base64::Engine;
        let key = |bytes: usize, exponent: &[u8]| {
            let rsa = PublicParts::Rsa {
                modulus: vec![0xc3u8; bytes],
                exponent: exponent.to_vec(),
            };
            STANDARD.encode(spki_der(KeySpec::Rsa2048, &rsa).unwrap())
        };
        let (modulus, exponent) = rsa_public_key("k", &key(512, &[0, 1, 0, 1]), 2048).unwrap();
        assert_eq!((modulus.len(), exponent), (512, vec![1, 0, 1]));
        assert!(rsa_public_key("k", &key(2048, &[1, 0, 1]), 2048).is_ok());
        let refused = |k: String, why: &str| {
            let e = rsa_public_key("k", &k, 2048).unwrap_err().to_string();
            assert!(e.contains(why), "{e}");
        };
        refused(key(2049, &[1, 0, 1]), "at most 16384");
        refused(key(255, &[1, 0, 1]), "at least 2048");
        let mut even = STANDARD.decode(key(256, &[1, 0, 1])).unwrap();
        let at = even.windows(256).position(|w| w == [0xc3; 256]).unwrap();
        even[at + 255] = 0xc2;
        refused(STANDARD.encode(even), "even RSA modulus");
        for exponent in [&[1u8][..], &[0], &[2], &[1, 0, 0], &[0xff; 9], &[0xc3; 256]] {
            refused(key(256, exponent), "public exponent");
        }
    }

    #[test]
    fn stored_public_keys_parse_back_into_their_parts() {
        use p256::elliptic_curve::sec1::ToEncodedPoint;
        let secret = p256::SecretKey::from_slice(&[7u8; 32]).unwrap();
        let point = secret
            .public_key()
            .to_encoded_point(false)
            .as_bytes()
            .to_vec();
        let der = spki_der(KeySpec::EccNistP256, &PublicParts::Ec(point.clone())).unwrap();
        let (params, parts) = parts_from_spki(&der).unwrap();
        assert_eq!(params.unwrap(), OID_P256.to_der().unwrap());
        assert!(matches!(parts, PublicParts::Ec(p) if p == point));

        let modulus = [0xc3u8; 256].to_vec();
        let rsa = PublicParts::Rsa {
            modulus: modulus.clone(),
            exponent: vec![1, 0, 1],
        };
        let der = spki_der(KeySpec::Rsa2048, &rsa).unwrap();
        let (params, parts) = parts_from_spki(&der).unwrap();
        assert!(params.is_none());
        assert!(
            matches!(parts, PublicParts::Rsa { modulus: m, exponent: e } if m == modulus && e == [1, 0, 1])
        );

        let ed = spki_der(KeySpec::Ed25519, &PublicParts::Ec(vec![5u8; 32])).unwrap();
        let (params, _) = parts_from_spki(&ed).unwrap();
        assert_eq!(params.unwrap(), OID_ED25519.to_der().unwrap());
        assert!(parts_from_spki(&ed[..ed.len() - 1]).is_err());
        assert!(parts_from_spki(b"not der").is_err());
    }

    #[test]
    fn peer_keys_off_curve_are_refused() {
        // An uncompressed point with coordinates (1, 1) is not on P-256.
        let mut point = vec![4u8];
        point.extend([0u8; 31]);
        point.push(1);
        point.extend([0u8; 31]);
        point.push(1);
        let spki = SubjectPublicKeyInfoRef {
            algorithm: AlgorithmIdentifierRef {
                oid: ObjectIdentifier::new_unwrap("1.2.840.10045.2.1"),
                parameters: Some(AnyRef::from(&OID_P256)),
            },
            subject_public_key: BitStringRef::from_bytes(&point).unwrap(),
        }
        .to_der()
        .unwrap();
        use base64::engine::general_purpose::STANDARD;
        let e = peer_point(KeySpec::EccNistP256, &STANDARD.encode(spki)).unwrap_err();
        assert!(matches!(e, Error::Validation(_)));
    }
}
