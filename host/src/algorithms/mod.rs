//! Key specs, key usages and the algorithms each allows: the fixed vocabulary of what a key
//! is (set at creation, never changed) and what it may be used for, and (in [`public_key`])
//! the encodings of public keys and signatures, (in [`private_key`]) the PKCS#8 of data key
//! pairs, (in [`pkcs12`]) password-protected bundles of a private key and its certificate.
//! Pure data, a leaf of the module graph: both `hsm` and `crypto` use it, and it uses neither.
//!
//! | spec | usages | algorithms |
//! | --- | --- | --- |
//! | `AES_256_GCM`, `AES_128_GCM`, `CHACHA20_POLY1305` | encrypt-decrypt | `SYMMETRIC_DEFAULT` |
//! | `HMAC_SHA_256/384/512` | generate-verify-mac | `HMAC_SHA_256/384/512` |
//! | `ECC_NIST_P256` | sign-verify, key-agreement | `ECDSA_SHA_256`, `ECDH` |
//! | `ECC_NIST_P384` | sign-verify, key-agreement | `ECDSA_SHA_384`, `ECDH` |
//! | `ED25519` | sign-verify | `ED25519` |
//! | `RSA_2048/3072/4096` | sign-verify, encrypt-decrypt | `RSASSA_PSS_SHA_*`, `RSASSA_PKCS1_V1_5_SHA_*`, `RSAES_OAEP_SHA_*` |
//! | `FFDHE_2048/3072` | key-agreement | `DH` (RFC 7919 groups, see [`ffdhe`]) |

pub mod ffdhe;
pub mod pkcs12;
pub mod private_key;
pub mod public_key;

use crate::error::{Error, Result};

/// What a key is. Fixed at creation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySpec {
    Aes256Gcm,
    Aes128Gcm,
    ChaCha20Poly1305,
    HmacSha256,
    HmacSha384,
    HmacSha512,
    EccNistP256,
    EccNistP384,
    Ed25519,
    Rsa2048,
    Rsa3072,
    Rsa4096,
    Ffdhe2048,
    Ffdhe3072,
}

/// What a key may be used for. Fixed at creation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyUsage {
    EncryptDecrypt,
    SignVerify,
    GenerateVerifyMac,
    KeyAgreement,
}

/// A hash function (on the host, or named in PKCS#11 parameters).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hash {
    Sha1,
    Sha256,
    Sha384,
    Sha512,
}

impl Hash {
    /// Digest length in bytes.
    pub fn output_len(self) -> usize {
        match self {
            Hash::Sha1 => 20,
            Hash::Sha256 => 32,
            Hash::Sha384 => 48,
            Hash::Sha512 => 64,
        }
    }

    /// Hash `data` on the host (ring).
    pub fn digest(self, data: &[u8]) -> Vec<u8> {
        let alg = match self {
            Hash::Sha1 => &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
            Hash::Sha256 => &ring::digest::SHA256,
            Hash::Sha384 => &ring::digest::SHA384,
            Hash::Sha512 => &ring::digest::SHA512,
        };
        ring::digest::digest(alg, data).as_ref().to_vec()
    }
}

/// A signing algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigningAlgorithm {
    EcdsaSha256,
    EcdsaSha384,
    Ed25519,
    RsaPss(Hash),
    RsaPkcs1(Hash),
}

/// An asymmetric encryption algorithm (RSA OAEP; the hash also names MGF1's hash).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OaepAlgorithm(pub Hash);

/// A MAC algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MacAlgorithm(pub Hash);

const SPECS: &[(KeySpec, &str)] = &[
    (KeySpec::Aes256Gcm, "AES_256_GCM"),
    (KeySpec::Aes128Gcm, "AES_128_GCM"),
    (KeySpec::ChaCha20Poly1305, "CHACHA20_POLY1305"),
    (KeySpec::HmacSha256, "HMAC_SHA_256"),
    (KeySpec::HmacSha384, "HMAC_SHA_384"),
    (KeySpec::HmacSha512, "HMAC_SHA_512"),
    (KeySpec::EccNistP256, "ECC_NIST_P256"),
    (KeySpec::EccNistP384, "ECC_NIST_P384"),
    (KeySpec::Ed25519, "ED25519"),
    (KeySpec::Rsa2048, "RSA_2048"),
    (KeySpec::Rsa3072, "RSA_3072"),
    (KeySpec::Rsa4096, "RSA_4096"),
    (KeySpec::Ffdhe2048, "FFDHE_2048"),
    (KeySpec::Ffdhe3072, "FFDHE_3072"),
];

const USAGES: &[(KeyUsage, &str)] = &[
    (KeyUsage::EncryptDecrypt, "encrypt-decrypt"),
    (KeyUsage::SignVerify, "sign-verify"),
    (KeyUsage::GenerateVerifyMac, "generate-verify-mac"),
    (KeyUsage::KeyAgreement, "key-agreement"),
];

const SIGNING: &[(SigningAlgorithm, &str)] = &[
    (SigningAlgorithm::EcdsaSha256, "ECDSA_SHA_256"),
    (SigningAlgorithm::EcdsaSha384, "ECDSA_SHA_384"),
    (SigningAlgorithm::Ed25519, "ED25519"),
    (SigningAlgorithm::RsaPss(Hash::Sha256), "RSASSA_PSS_SHA_256"),
    (SigningAlgorithm::RsaPss(Hash::Sha384), "RSASSA_PSS_SHA_384"),
    (SigningAlgorithm::RsaPss(Hash::Sha512), "RSASSA_PSS_SHA_512"),
    (
        SigningAlgorithm::RsaPkcs1(Hash::Sha256),
        "RSASSA_PKCS1_V1_5_SHA_256",
    ),
    (
        SigningAlgorithm::RsaPkcs1(Hash::Sha384),
        "RSASSA_PKCS1_V1_5_SHA_384",
    ),
    (
        SigningAlgorithm::RsaPkcs1(Hash::Sha512),
        "RSASSA_PKCS1_V1_5_SHA_512",
    ),
];

const OAEP: &[(OaepAlgorithm, &str)] = &[
    (OaepAlgorithm(Hash::Sha1), "RSAES_OAEP_SHA_1"),
    (OaepAlgorithm(Hash::Sha256), "RSAES_OAEP_SHA_256"),
];

const MACS: &[(MacAlgorithm, &str)] = &[
    (MacAlgorithm(Hash::Sha256), "HMAC_SHA_256"),
    (MacAlgorithm(Hash::Sha384), "HMAC_SHA_384"),
    (MacAlgorithm(Hash::Sha512), "HMAC_SHA_512"),
];

fn name_of<T: PartialEq + Copy>(table: &[(T, &'static str)], v: T) -> &'static str {
    table
        .iter()
        .find(|(t, _)| *t == v)
        .map(|(_, n)| *n)
        .unwrap_or("?")
}

fn parse_in<T: Copy>(table: &[(T, &'static str)], s: &str) -> Option<T> {
    table.iter().find(|(_, n)| *n == s).map(|(t, _)| *t)
}

fn names<T>(table: &[(T, &'static str)]) -> String {
    table.iter().map(|(_, n)| *n).collect::<Vec<_>>().join(", ")
}

impl KeySpec {
    pub fn parse(s: &str) -> Result<Self> {
        parse_in(SPECS, s)
            .ok_or_else(|| Error::validation(format!("key_spec must be one of {}", names(SPECS))))
    }

    pub fn as_str(self) -> &'static str {
        name_of(SPECS, self)
    }

    /// Every spec, in the order of [`KeySpec::parse`]'s list.
    pub fn all() -> impl Iterator<Item = KeySpec> {
        SPECS.iter().map(|(s, _)| *s)
    }

    /// Bytes of the key of a symmetric encryption spec (the specs whose keys make keyplane
    /// ciphertexts); `None` for every other spec.
    pub fn symmetric_key_len(self) -> Option<usize> {
        match self {
            KeySpec::Aes256Gcm | KeySpec::ChaCha20Poly1305 => Some(32),
            KeySpec::Aes128Gcm => Some(16),
            _ => None,
        }
    }

    /// Whether keys of this spec make and open keyplane ciphertexts (`SYMMETRIC_DEFAULT`).
    pub fn is_symmetric_encryption(self) -> bool {
        self.symmetric_key_len().is_some()
    }

    /// Whether keys of this spec may be `envelope` protected (material on the host, sealed by
    /// the tenant KEK): the symmetric encryption specs, whose algorithms `ring` runs.
    pub fn allows_envelope(self) -> bool {
        self.is_symmetric_encryption()
    }

    /// Whether keys of this spec may be `hsm` protected (the key a token object, used in the
    /// token): every spec but `CHACHA20_POLY1305`. PKCS#11 3.0 has `CKM_CHACHA20_POLY1305`,
    /// but SoftHSM2 (2.6) does not list it and the `cryptoki` binding keyplane uses has no
    /// such mechanism or its parameters, so keyplane could not use such a token object.
    pub fn allows_hsm(self) -> bool {
        self != KeySpec::ChaCha20Poly1305
    }

    /// The usages a key of this spec may be created with.
    pub fn usages(self) -> &'static [KeyUsage] {
        use KeyUsage::*;
        match self {
            KeySpec::Aes256Gcm | KeySpec::Aes128Gcm | KeySpec::ChaCha20Poly1305 => {
                &[EncryptDecrypt]
            }
            KeySpec::HmacSha256 | KeySpec::HmacSha384 | KeySpec::HmacSha512 => &[GenerateVerifyMac],
            KeySpec::EccNistP256 | KeySpec::EccNistP384 => &[SignVerify, KeyAgreement],
            KeySpec::Ed25519 => &[SignVerify],
            KeySpec::Rsa2048 | KeySpec::Rsa3072 | KeySpec::Rsa4096 => &[SignVerify, EncryptDecrypt],
            KeySpec::Ffdhe2048 | KeySpec::Ffdhe3072 => &[KeyAgreement],
        }
    }

    /// The usage a key of this spec gets when the request names none.
    pub fn default_usage(self) -> KeyUsage {
        self.usages()[0]
    }

    /// Whether the key is an asymmetric key pair (has a public key).
    pub fn is_asymmetric(self) -> bool {
        matches!(
            self,
            KeySpec::EccNistP256
                | KeySpec::EccNistP384
                | KeySpec::Ed25519
                | KeySpec::Rsa2048
                | KeySpec::Rsa3072
                | KeySpec::Rsa4096
                | KeySpec::Ffdhe2048
                | KeySpec::Ffdhe3072
        )
    }

    /// RSA modulus size in bits.
    pub fn rsa_bits(self) -> Option<u64> {
        match self {
            KeySpec::Rsa2048 => Some(2048),
            KeySpec::Rsa3072 => Some(3072),
            KeySpec::Rsa4096 => Some(4096),
            _ => None,
        }
    }

    /// The hash of an HMAC key.
    pub fn hmac_hash(self) -> Option<Hash> {
        match self {
            KeySpec::HmacSha256 => Some(Hash::Sha256),
            KeySpec::HmacSha384 => Some(Hash::Sha384),
            KeySpec::HmacSha512 => Some(Hash::Sha512),
            _ => None,
        }
    }

    /// Bytes of an HMAC key of this spec: its hash's output, as AWS sizes them.
    pub fn hmac_key_len(self) -> Option<usize> {
        self.hmac_hash().map(Hash::output_len)
    }

    /// Signing algorithms a key of this spec supports.
    pub fn signing_algorithms(self) -> Vec<SigningAlgorithm> {
        match self {
            KeySpec::EccNistP256 => vec![SigningAlgorithm::EcdsaSha256],
            KeySpec::EccNistP384 => vec![SigningAlgorithm::EcdsaSha384],
            KeySpec::Ed25519 => vec![SigningAlgorithm::Ed25519],
            KeySpec::Rsa2048 | KeySpec::Rsa3072 | KeySpec::Rsa4096 => SIGNING
                .iter()
                .map(|(a, _)| *a)
                .filter(|a| {
                    matches!(
                        a,
                        SigningAlgorithm::RsaPss(_) | SigningAlgorithm::RsaPkcs1(_)
                    )
                })
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Bytes of an ECDH shared secret (the curve's field size).
    pub fn ecdh_secret_len(self) -> Option<usize> {
        match self {
            KeySpec::EccNistP256 => Some(32),
            KeySpec::EccNistP384 => Some(48),
            _ => None,
        }
    }

    /// The RFC 7919 group of a finite-field Diffie-Hellman spec.
    pub fn dh_group(self) -> Option<&'static ffdhe::Group> {
        match self {
            KeySpec::Ffdhe2048 => Some(&ffdhe::FFDHE2048),
            KeySpec::Ffdhe3072 => Some(&ffdhe::FFDHE3072),
            _ => None,
        }
    }

    /// The key agreement algorithm of a `key-agreement` spec: `ECDH` (NIST curves) or `DH`
    /// (RFC 7919 groups).
    pub fn key_agreement_algorithm(self) -> Option<&'static str> {
        match self {
            KeySpec::EccNistP256 | KeySpec::EccNistP384 => Some("ECDH"),
            KeySpec::Ffdhe2048 | KeySpec::Ffdhe3072 => Some("DH"),
            _ => None,
        }
    }
}

impl std::fmt::Display for KeySpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Display for KeyUsage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl KeyUsage {
    pub fn parse(s: &str) -> Result<Self> {
        parse_in(USAGES, s)
            .ok_or_else(|| Error::validation(format!("key_usage must be one of {}", names(USAGES))))
    }

    pub fn as_str(self) -> &'static str {
        name_of(USAGES, self)
    }
}

impl SigningAlgorithm {
    pub fn parse(s: &str) -> Result<Self> {
        parse_in(SIGNING, s).ok_or_else(|| {
            Error::validation(format!(
                "signing_algorithm must be one of {}",
                names(SIGNING)
            ))
        })
    }

    pub fn as_str(self) -> &'static str {
        name_of(SIGNING, self)
    }

    /// The hash applied to a raw message (none for Ed25519, which signs the message itself).
    pub fn hash(self) -> Option<Hash> {
        match self {
            SigningAlgorithm::EcdsaSha256 => Some(Hash::Sha256),
            SigningAlgorithm::EcdsaSha384 => Some(Hash::Sha384),
            SigningAlgorithm::Ed25519 => None,
            SigningAlgorithm::RsaPss(h) | SigningAlgorithm::RsaPkcs1(h) => Some(h),
        }
    }
}

impl OaepAlgorithm {
    pub fn parse(s: &str) -> Option<Self> {
        parse_in(OAEP, s)
    }

    pub fn as_str(self) -> &'static str {
        name_of(OAEP, self)
    }

    /// Largest plaintext for a modulus of `bits` (RFC 8017 §7.1.1: k − 2·hLen − 2).
    pub fn max_plaintext(self, bits: u64) -> usize {
        (bits as usize / 8).saturating_sub(2 * self.0.output_len() + 2)
    }
}

impl MacAlgorithm {
    pub fn parse(s: &str) -> Result<Self> {
        parse_in(MACS, s).ok_or_else(|| {
            Error::validation(format!("mac_algorithm must be one of {}", names(MACS)))
        })
    }

    pub fn as_str(self) -> &'static str {
        name_of(MACS, self)
    }
}

/// Check that a key of `spec` may be created with `usage`.
pub fn check_spec_usage(spec: KeySpec, usage: KeyUsage) -> Result<()> {
    if spec.usages().contains(&usage) {
        return Ok(());
    }
    let allowed: Vec<&str> = spec.usages().iter().map(|u| u.as_str()).collect();
    Err(Error::validation(format!(
        "key_usage {} is not available for key_spec {}; allowed: {}",
        usage.as_str(),
        spec.as_str(),
        allowed.join(", ")
    )))
}

/// Refuse `algorithm` for a key of `spec`, naming what the key supports. A well-formed
/// request for a key that cannot do it: the key's usage is wrong for it (AWS's
/// `InvalidKeyUsageException`), not the request's form.
pub fn check_signing(spec: KeySpec, algorithm: SigningAlgorithm) -> Result<()> {
    let allowed = spec.signing_algorithms();
    if allowed.contains(&algorithm) {
        return Ok(());
    }
    let names: Vec<&str> = allowed.iter().map(|a| a.as_str()).collect();
    Err(Error::InvalidKeyUsage(format!(
        "signing_algorithm {} is not available for key_spec {}; allowed: {}",
        algorithm.as_str(),
        spec.as_str(),
        names.join(", ")
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for (s, n) in SPECS {
            assert_eq!(KeySpec::parse(n).unwrap(), *s);
        }
        for (a, n) in SIGNING {
            assert_eq!(SigningAlgorithm::parse(n).unwrap(), *a);
        }
    }

    #[test]
    fn symmetric_specs() {
        let lens: Vec<_> = KeySpec::all()
            .filter_map(|s| Some((s.as_str(), s.symmetric_key_len()?)))
            .collect();
        assert_eq!(
            lens,
            [
                ("AES_256_GCM", 32),
                ("AES_128_GCM", 16),
                ("CHACHA20_POLY1305", 32)
            ]
        );
        assert!(KeySpec::all().all(|s| s.allows_hsm() || s.allows_envelope()));
        assert!(!KeySpec::ChaCha20Poly1305.allows_hsm());
        assert!(!KeySpec::HmacSha256.allows_envelope());
    }

    #[test]
    fn usages_by_spec() {
        assert!(check_spec_usage(KeySpec::Ed25519, KeyUsage::KeyAgreement).is_err());
        assert!(check_spec_usage(KeySpec::Rsa2048, KeyUsage::EncryptDecrypt).is_ok());
        assert!(check_spec_usage(KeySpec::HmacSha256, KeyUsage::SignVerify).is_err());
        assert!(check_signing(KeySpec::EccNistP256, SigningAlgorithm::EcdsaSha384).is_err());
    }

    #[test]
    fn oaep_limits() {
        assert_eq!(OaepAlgorithm(Hash::Sha1).max_plaintext(2048), 214);
        assert_eq!(OaepAlgorithm(Hash::Sha256).max_plaintext(2048), 190);
    }
}
