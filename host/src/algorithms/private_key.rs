//! Private keys as a caller receives them: PKCS#8 `PrivateKeyInfo` DER (RFC 5208, the
//! "v1" form without the optional public key) of a key pair the HSM generated and revealed
//! for `generate-data-key-pair`, the only place keyplane lets a private key leave the token in
//! the clear. Built with the RustCrypto crates (`pkcs1`, `sec1`, `pkcs8`), never with
//! hand-written ASN.1, and written straight into zeroized buffers.
//!
//! - RSA: `rsaEncryption` (parameters NULL) around a PKCS#1 `RSAPrivateKey` (RFC 8017, two
//!   primes, CRT values as the token computed them): what `openssl genpkey` writes, and what
//!   AWS KMS returns.
//! - EC (P-256, P-384): `id-ecPublicKey` with the named curve around a SEC1 `ECPrivateKey`
//!   (RFC 5915) carrying the curve OID again in `parameters` (RFC 5915 requires it, OpenSSL
//!   leaves it out; every parser accepts both) and the public point. The private scalar is
//!   written at the curve's full width (tokens may drop its leading zero bytes), and the point
//!   is checked to be the scalar's, so a token that answers inconsistent halves is an internal
//!   error, never a key that does not work.
//!
//! The public half is [`super::public_key::spki_der`] of the same [`PublicParts`].

use der::asn1::{AnyRef, UintRef};
use der::Encode;
use spki::AlgorithmIdentifierRef;
use zeroize::Zeroizing;

use super::public_key::{PublicParts, OID_P256, OID_P384, OID_RSA};
use super::KeySpec;
use crate::error::{Error, Result};

/// id-ecPublicKey (RFC 5480).
pub const OID_EC_PUBLIC_KEY: der::asn1::ObjectIdentifier =
    der::asn1::ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");

/// The private values of an RSA key as PKCS#11 names them (`CKA_PRIVATE_EXPONENT`,
/// `CKA_PRIME_1`, `CKA_PRIME_2`, `CKA_EXPONENT_1`, `CKA_EXPONENT_2`, `CKA_COEFFICIENT`):
/// big-endian, leading zeros allowed.
pub struct RsaPrivateParts {
    pub private_exponent: Zeroizing<Vec<u8>>,
    pub prime1: Zeroizing<Vec<u8>>,
    pub prime2: Zeroizing<Vec<u8>>,
    pub exponent1: Zeroizing<Vec<u8>>,
    pub exponent2: Zeroizing<Vec<u8>>,
    pub coefficient: Zeroizing<Vec<u8>>,
}

/// The private half of a key pair read out of a token. Deliberately not `Debug`.
pub enum PrivateParts {
    Rsa(RsaPrivateParts),
    /// `CKA_VALUE` of an EC private key: the scalar, big-endian, possibly without its
    /// leading zero bytes.
    Ec(Zeroizing<Vec<u8>>),
}

/// Both halves of a key pair read out of a token.
pub struct KeyPairParts {
    pub public: PublicParts,
    pub private: PrivateParts,
}

fn internal(what: &'static str) -> impl Fn(der::Error) -> Error {
    move |e| {
        tracing::error!(error = %e, what, "private key encoding failed");
        Error::Internal
    }
}

/// The DER of `value`, written into a zeroized buffer (no unzeroized copy is made).
fn secret_der(value: &impl Encode, what: &'static str) -> Result<Zeroizing<Vec<u8>>> {
    let len = usize::try_from(value.encoded_len().map_err(internal(what))?)
        .map_err(|_| Error::Internal)?;
    let mut out = Zeroizing::new(vec![0u8; len]);
    let written = value
        .encode_to_slice(out.as_mut_slice())
        .map_err(internal(what))?
        .len();
    if written != len {
        return Err(Error::Internal);
    }
    Ok(out)
}

/// The PKCS#8 `PrivateKeyInfo` DER of a key pair of `spec` (RSA or a NIST curve).
pub fn pkcs8_der(spec: KeySpec, parts: &KeyPairParts) -> Result<Zeroizing<Vec<u8>>> {
    match (spec, &parts.public, &parts.private) {
        (_, PublicParts::Rsa { modulus, exponent }, PrivateParts::Rsa(p))
            if spec.rsa_bits().is_some() =>
        {
            rsa_pkcs8(modulus, exponent, p)
        }
        (
            KeySpec::EccNistP256 | KeySpec::EccNistP384,
            PublicParts::Ec(point),
            PrivateParts::Ec(d),
        ) => ec_pkcs8(spec, point, d),
        _ => Err(Error::Internal),
    }
}

fn uint<'a>(bytes: &'a [u8], what: &'static str) -> Result<UintRef<'a>> {
    UintRef::new(bytes).map_err(internal(what))
}

fn rsa_pkcs8(modulus: &[u8], exponent: &[u8], p: &RsaPrivateParts) -> Result<Zeroizing<Vec<u8>>> {
    let key = pkcs1::RsaPrivateKey {
        modulus: uint(modulus, "modulus")?,
        public_exponent: uint(exponent, "public exponent")?,
        private_exponent: uint(&p.private_exponent, "private exponent")?,
        prime1: uint(&p.prime1, "prime 1")?,
        prime2: uint(&p.prime2, "prime 2")?,
        exponent1: uint(&p.exponent1, "exponent 1")?,
        exponent2: uint(&p.exponent2, "exponent 2")?,
        coefficient: uint(&p.coefficient, "coefficient")?,
        other_prime_infos: None,
    };
    let pkcs1 = secret_der(&key, "rsa private key")?;
    let info = pkcs8::PrivateKeyInfo::new(
        AlgorithmIdentifierRef {
            oid: OID_RSA,
            parameters: Some(AnyRef::NULL),
        },
        &pkcs1,
    );
    secret_der(&info, "rsa pkcs8")
}

/// `d` at the curve's full width.
fn full_width(d: &[u8], width: usize) -> Result<Zeroizing<Vec<u8>>> {
    let significant = d
        .iter()
        .position(|b| *b != 0)
        .map_or(&d[d.len()..], |i| &d[i..]);
    if significant.is_empty() || significant.len() > width {
        tracing::error!("the token returned an EC private key of the wrong size");
        return Err(Error::Internal);
    }
    let mut out = Zeroizing::new(vec![0u8; width]);
    out[width - significant.len()..].copy_from_slice(significant);
    Ok(out)
}

/// Whether `point` (uncompressed SEC1) is `d`·G on `spec`'s curve.
fn point_of(spec: KeySpec, d: &[u8], point: &[u8]) -> Result<bool> {
    use p256::elliptic_curve::sec1::ToEncodedPoint;
    let bad = |_| {
        tracing::error!("the token returned an EC private key that is not a valid scalar");
        Error::Internal
    };
    Ok(match spec {
        KeySpec::EccNistP256 => {
            let sk = p256::SecretKey::from_slice(d).map_err(bad)?;
            sk.public_key().to_encoded_point(false).as_bytes() == point
        }
        KeySpec::EccNistP384 => {
            let sk = p384::SecretKey::from_slice(d).map_err(bad)?;
            sk.public_key().to_encoded_point(false).as_bytes() == point
        }
        _ => return Err(Error::Internal),
    })
}

fn ec_pkcs8(spec: KeySpec, point: &[u8], d: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
    let (curve, width) = match spec {
        KeySpec::EccNistP256 => (OID_P256, 32),
        KeySpec::EccNistP384 => (OID_P384, 48),
        _ => return Err(Error::Internal),
    };
    let d = full_width(d, width)?;
    if !point_of(spec, &d, point)? {
        tracing::error!("the token returned an EC public point that is not its private key's");
        return Err(Error::Internal);
    }
    let key = sec1::EcPrivateKey {
        private_key: &d,
        parameters: Some(sec1::EcParameters::NamedCurve(curve)),
        public_key: Some(point),
    };
    let sec1 = secret_der(&key, "ec private key")?;
    let info = pkcs8::PrivateKeyInfo::new(
        AlgorithmIdentifierRef {
            oid: OID_EC_PUBLIC_KEY,
            parameters: Some(AnyRef::from(&curve)),
        },
        &sec1,
    );
    secret_der(&info, "ec pkcs8")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::algorithms::public_key::{digest_info, spki_der};
    use crate::algorithms::Hash;
    use der::Decode;
    use p256::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePublicKey};

    fn z(v: Vec<u8>) -> Zeroizing<Vec<u8>> {
        Zeroizing::new(v)
    }

    /// The parts of an RSA key of the `rsa` crate, as a token would give them (with a
    /// leading zero byte on each private value when `padded`).
    fn rsa_parts(key: &rsa::RsaPrivateKey, padded: bool) -> KeyPairParts {
        use rsa::traits::{PrivateKeyParts, PublicKeyParts};
        let be = |n: &rsa::BigUint| {
            let mut v = if padded { vec![0u8] } else { Vec::new() };
            v.extend(n.to_bytes_be());
            z(v)
        };
        let primes = key.primes();
        KeyPairParts {
            public: PublicParts::Rsa {
                modulus: key.n().to_bytes_be(),
                exponent: key.e().to_bytes_be(),
            },
            private: PrivateParts::Rsa(RsaPrivateParts {
                private_exponent: be(key.d()),
                prime1: be(&primes[0]),
                prime2: be(&primes[1]),
                exponent1: be(key.dp().unwrap()),
                exponent2: be(key.dq().unwrap()),
                coefficient: be(&key.crt_coefficient().unwrap()),
            }),
        }
    }

    /// RSA: the same bytes the `rsa` crate writes for the key (so openssl's layout), parsed
    /// back and validated; the public key in it is the SPKI's; it signs what the SPKI verifies.
    #[test]
    fn rsa_pkcs8_is_the_standard_encoding_and_matches_its_spki() {
        use rsa::pkcs8::EncodePublicKey as _;
        use rsa::traits::PublicKeyParts;
        // 1024 bits: the encoding does not depend on the size, and a debug build of the
        // `rsa` crate takes seconds for 2048.
        let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 1024).unwrap();
        let expected = rsa::pkcs8::EncodePrivateKey::to_pkcs8_der(&key).unwrap();
        for padded in [false, true] {
            let parts = rsa_parts(&key, padded);
            let der = pkcs8_der(KeySpec::Rsa2048, &parts).unwrap();
            assert_eq!(der.as_slice(), expected.as_bytes(), "padded: {padded}");

            let parsed = rsa::RsaPrivateKey::from_pkcs8_der(&der).unwrap();
            parsed.validate().unwrap();
            let spki = spki_der(KeySpec::Rsa2048, &parts.public).unwrap();
            let public = rsa::RsaPublicKey::from_public_key_der(&spki).unwrap();
            assert_eq!(public.n(), parsed.n());
            assert_eq!(
                parsed
                    .to_public_key()
                    .to_public_key_der()
                    .unwrap()
                    .as_bytes(),
                spki.as_slice()
            );

            let di = digest_info(Hash::Sha256, &Hash::Sha256.digest(b"a data key pair"));
            let scheme = rsa::Pkcs1v15Sign::new_unprefixed();
            let signature = parsed.sign(scheme.clone(), &di).unwrap();
            public.verify(scheme.clone(), &di, &signature).unwrap();
            let other = digest_info(Hash::Sha256, &Hash::Sha256.digest(b"another message"));
            assert!(public.verify(scheme, &other, &signature).is_err());
        }
    }

    fn scalar(width: usize, first: u8) -> Vec<u8> {
        let mut d: Vec<u8> = (1..=width as u8).collect();
        d[0] = first;
        d
    }

    fn ec_parts(spec: KeySpec, d: &[u8]) -> (KeyPairParts, Vec<u8>) {
        use p256::elliptic_curve::sec1::ToEncodedPoint;
        let (point, spki) = match spec {
            KeySpec::EccNistP256 => {
                let pk = p256::SecretKey::from_slice(d).unwrap().public_key();
                let point = pk.to_encoded_point(false).as_bytes().to_vec();
                (point, pk.to_public_key_der().unwrap().into_vec())
            }
            _ => {
                let pk = p384::SecretKey::from_slice(d).unwrap().public_key();
                let point = pk.to_encoded_point(false).as_bytes().to_vec();
                (point, pk.to_public_key_der().unwrap().into_vec())
            }
        };
        // As a token may give it: without leading zero bytes.
        let stripped = d.iter().skip_while(|b| **b == 0).copied().collect();
        let parts = KeyPairParts {
            public: PublicParts::Ec(point),
            private: PrivateParts::Ec(z(stripped)),
        };
        (parts, spki)
    }

    /// EC: PKCS#8 that p256/p384 parse back to the same scalar, whose SEC1 key names the
    /// curve and carries the point, whose public key is the SPKI's; a short scalar is
    /// widened; a point that is not the scalar's is refused.
    #[test]
    fn ec_pkcs8_carries_the_curve_and_point_and_matches_its_spki() {
        for (spec, width, curve) in [
            (KeySpec::EccNistP256, 32, OID_P256),
            (KeySpec::EccNistP384, 48, OID_P384),
        ] {
            for first in [0x5a, 0x00] {
                let d = scalar(width, first);
                let (parts, expected_spki) = ec_parts(spec, &d);
                let der = pkcs8_der(spec, &parts).unwrap();
                assert_eq!(spki_der(spec, &parts.public).unwrap(), expected_spki);

                let info = pkcs8::PrivateKeyInfo::from_der(&der).unwrap();
                assert_eq!(info.algorithm.oid, OID_EC_PUBLIC_KEY);
                assert_eq!(info.algorithm.parameters_oid().unwrap(), curve, "{spec:?}");
                let ec = sec1::EcPrivateKey::from_der(info.private_key).unwrap();
                assert_eq!(ec.private_key, d.as_slice());
                assert_eq!(ec.parameters.and_then(|p| p.named_curve()), Some(curve));
                let PublicParts::Ec(point) = &parts.public else {
                    unreachable!()
                };
                assert_eq!(ec.public_key, Some(point.as_slice()));

                let reencoded = match spec {
                    KeySpec::EccNistP256 => {
                        let sk = p256::SecretKey::from_pkcs8_der(&der).unwrap();
                        assert_eq!(sk.to_bytes().as_slice(), d.as_slice());
                        sk.public_key().to_public_key_der().unwrap().into_vec()
                    }
                    _ => {
                        let sk = p384::SecretKey::from_pkcs8_der(&der).unwrap();
                        assert_eq!(sk.to_bytes().as_slice(), d.as_slice());
                        sk.public_key().to_public_key_der().unwrap().into_vec()
                    }
                };
                assert_eq!(reencoded, expected_spki);
            }
            // Another key's point: refused.
            let (mut parts, _) = ec_parts(spec, &scalar(width, 0x11));
            let (other, _) = ec_parts(spec, &scalar(width, 0x22));
            parts.public = other.public;
            assert!(matches!(pkcs8_der(spec, &parts), Err(Error::Internal)));
            // A scalar wider than the curve: refused.
            let (mut parts, _) = ec_parts(spec, &scalar(width, 0x11));
            parts.private = PrivateParts::Ec(z(vec![1u8; width + 1]));
            assert!(matches!(pkcs8_der(spec, &parts), Err(Error::Internal)));
        }
        // ECDH with the parsed key agrees with ECDH with the original scalar.
        let (parts, spki) = ec_parts(KeySpec::EccNistP256, &scalar(32, 0x42));
        let der = pkcs8_der(KeySpec::EccNistP256, &parts).unwrap();
        let mine = p256::SecretKey::from_pkcs8_der(&der).unwrap();
        let peer = p256::SecretKey::from_slice(&scalar(32, 0x07)).unwrap();
        let shared = |sk: &p256::SecretKey, pk: &p256::PublicKey| {
            use p256::elliptic_curve::point::AffineCoordinates;
            (pk.to_projective() * *sk.to_nonzero_scalar())
                .to_affine()
                .x()
        };
        let theirs = p256::PublicKey::from_public_key_der(&spki).unwrap();
        assert_eq!(shared(&mine, &peer.public_key()), shared(&peer, &theirs));
    }

    /// Mismatched halves and specs are internal errors, not keys.
    #[test]
    fn mismatched_parts_are_refused() {
        let (ec, _) = ec_parts(KeySpec::EccNistP256, &scalar(32, 0x42));
        assert!(matches!(
            pkcs8_der(KeySpec::Rsa2048, &ec),
            Err(Error::Internal)
        ));
        assert!(matches!(
            pkcs8_der(KeySpec::Ed25519, &ec),
            Err(Error::Internal)
        ));
        assert!(matches!(
            pkcs8_der(KeySpec::EccNistP384, &ec),
            Err(Error::Internal)
        ));
    }
}
