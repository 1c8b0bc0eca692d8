//! PKCS#12 (RFC 7292) bundles: one private key (PKCS#8) and its certificate, protected by a
//! password. Written and read by `p12-keystore`; this module decides the profile, bounds the
//! work a bundle may ask for, and ties the key to the certificate.
//!
//! Written: PBES2 (PBKDF2-HMAC-SHA-256, AES-256-CBC, RFC 8018) for the key bag and for the
//! certificate safe, an HMAC-SHA-256 MAC, [`EXPORT_ITERATIONS`] iterations each: the profile
//! OpenSSL 3 writes by default, with the PBKDF2 iteration count OWASP recommends for
//! HMAC-SHA-256. `openssl pkcs12`, Python's `cryptography`, Java's `keytool` and Windows read it.
//!
//! Read: that profile, the legacy one (`openssl pkcs12 -legacy`: 3DES / RC2 keyed by the
//! PKCS#12 KDF) and a SHA-1 MAC. A bundle without a MAC is refused (nothing else proves the
//! password holder made it). Every iteration count visible before decryption (the MAC's, each
//! encrypted safe's, each shrouded key bag's in a plain safe) is read and bounded before any
//! key derivation runs, so a bundle cannot pin a worker for minutes; a key bag nested inside an
//! encrypted safe is only seen once that safe is decrypted, and is bounded by
//! [`MAX_ITERATIONS`] only in that its parent was. scrypt and unknown schemes are refused.
//!
//! `p12-keystore` keeps its own copies of the key bytes and does not wipe them on drop: the
//! PKCS#8 this module hands out is zeroized, those copies are freed unwiped. Recorded in
//! docs/import-export.md.

use der::asn1::OctetString;
use der::{Decode, Encode};
use p12_keystore::{
    Certificate, EncryptionAlgorithm, KeyStore, KeyStoreEntry, MacAlgorithm, PrivateKeyChain,
};
use pkcs12::pbe_params::{EncryptedPrivateKeyInfo, Pbes2Params, Pbkdf2Params, Pkcs12PbeParams};
use pkcs12::pfx::Pfx;
use pkcs12::safe_bag::SafeContents;
use spki::{AlgorithmIdentifierOwned, ObjectIdentifier};
use zeroize::Zeroizing;

use super::private_key::OID_EC_PUBLIC_KEY;
use super::public_key::{spki_der, PublicParts, OID_P256, OID_P384, OID_RSA};
use super::KeySpec;
use crate::error::{Error, Result};

/// Largest bundle accepted.
pub const MAX_BUNDLE: usize = 64 * 1024;
/// PBKDF2 and MAC iterations of a bundle keyplane writes.
pub const EXPORT_ITERATIONS: u32 = 600_000;
/// Most iterations one key derivation of a bundle may ask for.
pub const MAX_ITERATIONS: u64 = 2_000_000;
/// Most iterations all key derivations of a bundle visible before decryption may ask for.
pub const MAX_TOTAL_ITERATIONS: u64 = 8_000_000;

const DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.1");
const ENCRYPTED_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.6");
const SHROUDED_KEY_BAG: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.113549.1.12.10.1.2");
const PBES2: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.5.13");
const PBKDF2: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.5.12");
/// pkcs-12PbeIds (RFC 7292 appendix C): `1.2.840.113549.1.12.1.<n>`.
const PKCS12_PBE: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.12.1");

/// What a bundle held.
pub struct Bundle {
    /// PKCS#8 `PrivateKeyInfo` DER.
    pub private_key: Zeroizing<Vec<u8>>,
    /// The key's own certificate (DER), where the bundle has one.
    pub certificate: Option<Vec<u8>>,
}

fn bad(what: impl std::fmt::Display) -> Error {
    Error::validation(format!("pkcs12 {what}"))
}

/// A bundle of `private_key` (PKCS#8 DER) and `certificate` (DER), named `name`, under
/// `password`, in the profile of the module docs.
pub fn encode(
    private_key: &[u8],
    certificate: &[u8],
    name: &str,
    password: &str,
) -> Result<Vec<u8>> {
    encode_with(private_key, certificate, name, password, EXPORT_ITERATIONS)
}

fn encode_with(
    private_key: &[u8],
    certificate: &[u8],
    name: &str,
    password: &str,
    iterations: u32,
) -> Result<Vec<u8>> {
    let certificate = Certificate::from_der(certificate).map_err(|e| {
        tracing::error!(error = %e, "certificate for PKCS#12 unreadable");
        Error::Internal
    })?;
    // The local key id ties the key bag to its certificate bag: the SHA-1 of the
    // certificate, as OpenSSL writes it.
    let local_id = ring::digest::digest(
        &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
        certificate.as_der(),
    );
    let mut store = KeyStore::new();
    store.add_entry(
        name,
        KeyStoreEntry::PrivateKeyChain(PrivateKeyChain::new(
            private_key,
            local_id.as_ref(),
            [certificate],
        )),
    );
    store
        .writer(password)
        .encryption_algorithm(EncryptionAlgorithm::PbeWithHmacSha256AndAes256)
        .encryption_iterations(iterations.into())
        .mac_algorithm(MacAlgorithm::HmacSha256)
        .mac_iterations(iterations.into())
        .write()
        .map_err(|e| {
            tracing::error!(error = %e, "PKCS#12 encoding failed");
            Error::Internal
        })
}

/// The private key and certificate of bundle `der`, opened with `password`. Exactly one
/// private key; its certificate is the one the bundle ties to it (local key id), if any.
pub fn decode(der: &[u8], password: &str) -> Result<Bundle> {
    if der.len() > MAX_BUNDLE {
        return Err(bad(format!("is larger than {} KiB", MAX_BUNDLE / 1024)));
    }
    check_work(der, MAX_ITERATIONS, MAX_TOTAL_ITERATIONS)?;
    let store = KeyStore::from_pkcs12(der, password).map_err(|e| match e {
        p12_keystore::error::Error::MacError(_) => {
            bad("could not be opened: its MAC does not match (wrong password?)")
        }
        e => bad(format!("could not be read: {e}")),
    })?;
    let mut keys = store.entries().filter_map(|(_, e)| match e {
        KeyStoreEntry::PrivateKeyChain(chain) => Some(chain),
        _ => None,
    });
    let chain = keys
        .next()
        .ok_or_else(|| bad("holds no private key (a shrouded key bag)"))?;
    if keys.next().is_some() {
        return Err(bad("holds more than one private key"));
    }
    Ok(Bundle {
        private_key: Zeroizing::new(chain.key().to_vec()),
        certificate: chain.chain().first().map(|c| c.as_der().to_vec()),
    })
}

/// Refuse a bundle whose key derivations, as far as they can be read before any runs, would
/// take more than `max` iterations each or `max_total` together (module docs).
fn check_work(der: &[u8], max: u64, max_total: u64) -> Result<()> {
    let unreadable = |e: der::Error| bad(format!("is not a PKCS#12 PFX: {e}"));
    let pfx = Pfx::from_der(der).map_err(unreadable)?;
    let mac = pfx
        .mac_data
        .as_ref()
        .ok_or_else(|| bad("has no MAC: a bundle without integrity protection is refused"))?;
    let mut total = 0u64;
    let mut count = |n: u64| -> Result<()> {
        total = total.saturating_add(n);
        if n == 0 || n > max || total > max_total {
            return Err(bad(format!(
                "asks for {n} key-derivation iterations; at most {max} each and {max_total} in all are accepted"
            )));
        }
        Ok(())
    };
    count(u64::try_from(mac.iterations).unwrap_or(0))?;
    if pfx.auth_safe.content_type != DATA {
        return Err(bad(
            "is not password-integrity protected (its content is not data)",
        ));
    }
    let octets = |any: &der::Any| -> Result<Vec<u8>> {
        Ok(OctetString::from_der(&any.to_der().map_err(unreadable)?)
            .map_err(unreadable)?
            .into_bytes())
    };
    let safes = Vec::<cms::content_info::ContentInfo>::from_der(&octets(&pfx.auth_safe.content)?)
        .map_err(unreadable)?;
    for safe in &safes {
        if safe.content_type == DATA {
            let bags = SafeContents::from_der(&octets(&safe.content)?).map_err(unreadable)?;
            for bag in bags.iter().filter(|b| b.bag_id == SHROUDED_KEY_BAG) {
                let value =
                    der::asn1::ContextSpecific::<EncryptedPrivateKeyInfo>::from_der(&bag.bag_value)
                        .map_err(unreadable)?
                        .value;
                count(iterations(&value.encryption_algorithm)?)?;
            }
        } else if safe.content_type == ENCRYPTED_DATA {
            let data = cms::encrypted_data::EncryptedData::from_der(
                &safe.content.to_der().map_err(unreadable)?,
            )
            .map_err(unreadable)?;
            count(iterations(&data.enc_content_info.content_enc_alg)?)?;
        } else {
            return Err(bad(
                "holds a safe that is neither data nor password-encrypted",
            ));
        }
    }
    Ok(())
}

/// The iteration count of a password-based encryption scheme.
fn iterations(alg: &AlgorithmIdentifierOwned) -> Result<u64> {
    let params = || -> Result<Vec<u8>> {
        alg.parameters
            .as_ref()
            .ok_or_else(|| bad("names an encryption scheme without parameters"))?
            .to_der()
            .map_err(bad)
    };
    if alg.oid == PBES2 {
        let pbes2 = Pbes2Params::from_der(&params()?).map_err(bad)?;
        if pbes2.kdf.oid != PBKDF2 {
            return Err(bad(format!(
                "uses key derivation {} (only PBKDF2 is accepted)",
                pbes2.kdf.oid
            )));
        }
        let kdf = pbes2
            .kdf
            .parameters
            .as_ref()
            .ok_or_else(|| bad("names PBKDF2 without parameters"))?;
        let kdf = Pbkdf2Params::from_der(&kdf.to_der().map_err(bad)?).map_err(bad)?;
        return Ok(kdf.iteration_count.into());
    }
    if alg.oid.parent() == Some(PKCS12_PBE) {
        let pbe = Pkcs12PbeParams::from_der(&params()?).map_err(bad)?;
        return Ok(u64::try_from(pbe.iterations).unwrap_or(0));
    }
    Err(bad(format!(
        "uses encryption scheme {} (PBES2 or PKCS#12 PBE expected)",
        alg.oid
    )))
}

/// The spec family and public key of a PKCS#8 private key: an RSA key (its size decides
/// among `RSA_2048/3072/4096`) or a P-256 / P-384 key. The public key comes from the private
/// key itself (for EC keys, computed from the scalar), so it cannot disagree with it.
pub fn private_key_public(pkcs8: &[u8]) -> Result<(KeySpec, PublicParts)> {
    let info = pkcs8::PrivateKeyInfo::from_der(pkcs8)
        .map_err(|_| bad("key bag does not hold a PKCS#8 private key"))?;
    let oid = info.algorithm.oid;
    if oid == OID_RSA {
        let key = pkcs1::RsaPrivateKey::from_der(info.private_key)
            .map_err(|_| bad("holds an RSA key that is not a valid RSAPrivateKey"))?;
        let modulus = key.modulus.as_bytes();
        let spec = match modulus.len() * 8 {
            2048 => KeySpec::Rsa2048,
            3072 => KeySpec::Rsa3072,
            4096 => KeySpec::Rsa4096,
            bits => return Err(bad(format!("holds an RSA key of {bits} bits"))),
        };
        return Ok((
            spec,
            PublicParts::Rsa {
                modulus: modulus.to_vec(),
                exponent: key.public_exponent.as_bytes().to_vec(),
            },
        ));
    }
    if oid == OID_EC_PUBLIC_KEY {
        use p256::elliptic_curve::sec1::ToEncodedPoint;
        use p256::pkcs8::DecodePrivateKey;
        let curve = info
            .algorithm
            .parameters_oid()
            .map_err(|_| bad("holds an EC key without a named curve"))?;
        let invalid = |_| bad("holds an EC private key that is not valid on its curve");
        return if curve == OID_P256 {
            let key = p256::SecretKey::from_pkcs8_der(pkcs8).map_err(invalid)?;
            let point = key.public_key().to_encoded_point(false);
            Ok((
                KeySpec::EccNistP256,
                PublicParts::Ec(point.as_bytes().to_vec()),
            ))
        } else if curve == OID_P384 {
            let key = p384::SecretKey::from_pkcs8_der(pkcs8).map_err(invalid)?;
            let point = key.public_key().to_encoded_point(false);
            Ok((
                KeySpec::EccNistP384,
                PublicParts::Ec(point.as_bytes().to_vec()),
            ))
        } else {
            Err(bad(format!(
                "holds an EC key on curve {curve} (P-256 or P-384 expected)"
            )))
        };
    }
    Err(bad(format!(
        "holds a private key of algorithm {oid} (RSA or EC expected)"
    )))
}

/// The SubjectPublicKeyInfo DER of an X.509 certificate, named `field` in errors.
pub fn certificate_spki(field: &str, certificate: &[u8]) -> Result<Vec<u8>> {
    let cert = x509_cert::Certificate::from_der(certificate)
        .map_err(|_| Error::validation(format!("{field} is not a DER X.509 certificate")))?;
    cert.tbs_certificate
        .subject_public_key_info
        .to_der()
        .map_err(|_| Error::validation(format!("{field} has an unreadable public key")))
}

/// Whether certificate `certificate` (DER) is of the public key `spec`/`parts`: the same
/// SubjectPublicKeyInfo once both are in keyplane's canonical form.
pub fn certificate_matches(
    field: &str,
    certificate: &[u8],
    spec: KeySpec,
    parts: &PublicParts,
) -> Result<bool> {
    let theirs = certificate_spki(field, certificate)?;
    let ours = spki_der(spec, parts)?;
    if theirs == ours {
        return Ok(true);
    }
    // The same key may be written differently (an EC point compressed, an RSA modulus with
    // a redundant zero byte): compare the parts.
    Ok(
        match super::public_key::parts_from_spki(&theirs).map(|(_, p)| p) {
            Ok(PublicParts::Rsa { modulus, exponent }) => matches!(
                parts,
                PublicParts::Rsa { modulus: m, exponent: e }
                    if trim(&modulus) == trim(m) && trim(&exponent) == trim(e)
            ),
            Ok(PublicParts::Ec(point)) => matches!(parts, PublicParts::Ec(p) if *p == point),
            Ok(PublicParts::Dh(_)) | Err(_) => false,
        },
    )
}

fn trim(b: &[u8]) -> &[u8] {
    let i = b.iter().position(|x| *x != 0).unwrap_or(b.len());
    &b[i..]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A P-256 key and a certificate of it (rcgen, self-signed).
    fn p256_pair() -> (Zeroizing<Vec<u8>>, Vec<u8>) {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = rcgen::CertificateParams::new(vec!["test".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        (Zeroizing::new(key.serialize_der()), cert.der().to_vec())
    }

    #[test]
    fn a_bundle_round_trips_and_names_its_key() {
        let (key, cert) = p256_pair();
        let der = encode_with(&key, &cert, "k", "correct horse", 1000).unwrap();
        let bundle = decode(&der, "correct horse").unwrap();
        assert_eq!(*bundle.private_key, *key);
        assert_eq!(bundle.certificate.as_deref(), Some(&cert[..]));
        let (spec, parts) = private_key_public(&bundle.private_key).unwrap();
        assert_eq!(spec, KeySpec::EccNistP256);
        assert!(certificate_matches("c", &cert, spec, &parts).unwrap());
        let (_, other) = p256_pair();
        assert!(!certificate_matches("c", &other, spec, &parts).unwrap());
    }

    #[test]
    fn a_wrong_password_is_a_clear_refusal() {
        let (key, cert) = p256_pair();
        let der = encode_with(&key, &cert, "k", "correct horse", 1000).unwrap();
        let e = decode(&der, "battery staple").err().unwrap().to_string();
        assert!(e.contains("wrong password"), "{e}");
    }

    #[test]
    fn work_is_bounded_before_any_derivation() {
        let (key, cert) = p256_pair();
        let der = encode_with(&key, &cert, "k", "pw", 1000).unwrap();
        check_work(&der, 1000, 3000).unwrap();
        // The MAC, the key bag and the certificate safe each ask for 1000.
        let e = check_work(&der, 999, 10_000).err().unwrap().to_string();
        assert!(e.contains("1000 key-derivation iterations"), "{e}");
        let e = check_work(&der, 1000, 2999).err().unwrap().to_string();
        assert!(e.contains("in all"), "{e}");
    }

    #[test]
    fn garbage_is_refused_without_panicking() {
        for input in [&b""[..], b"\x30\x03\x02\x01\x03", &[0x30; 200]] {
            assert!(decode(input, "pw").is_err());
        }
        let (key, cert) = p256_pair();
        let der = encode_with(&key, &cert, "k", "pw", 1000).unwrap();
        for cut in [1, der.len() / 2, der.len() - 1] {
            assert!(decode(&der[..cut], "pw").is_err());
        }
    }
}
