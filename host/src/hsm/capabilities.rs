//! What the token can do, detected once at start: its identity (label, manufacturer, model),
//! which of the mechanisms keyplane uses it supports (`C_GetMechanismInfo` for each, which
//! answers `CKR_MECHANISM_INVALID` for an unsupported one; see `Hsm::detect_capabilities` for
//! why not `C_GetMechanismList`), and which OAEP hash it actually accepts.
//!
//! A mechanism list says nothing about OAEP parameters (SoftHSM2 lists `CKM_RSA_PKCS_OAEP`
//! but accepts only SHA-1 with MGF1-SHA-1), so the OAEP hash is found by a probe: a key
//! pair encrypts and decrypts a test value with SHA-256, then SHA-1 — the RSA root key where
//! the token has one (a TPM: [`probe_oaep_with`]), otherwise a 1024-bit session key pair
//! destroyed at once. The first that round-trips is the hash keyplane
//! uses for `RSAES_OAEP_*`; none means RSA encryption is unavailable.
//!
//! The key ceremony (`hsm::ceremony`) wraps the root key to a transport key with the same
//! probed hash ([`ceremony_oaep`]): SHA-256 where the token takes it, SHA-1 on SoftHSM2. The
//! root key (AES-256, 32 bytes) fits one RSA-OAEP block of a 3072-bit key with either hash, so
//! `CKM_RSA_AES_KEY_WRAP` (which SoftHSM2 2.6 does not list) is not needed. The ceremony also
//! relies on the token enforcing `CKA_WRAP_WITH_TRUSTED` and letting only the SO set
//! `CKA_TRUSTED`: SoftHSM2 2.6 does (the `keyplane hsm probe-extraction` test hook checks it
//! against the real token in tests/ceremony.rs); a module that does not would let anyone
//! with the user PIN wrap the root key out.

use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, ObjectClass, ObjectHandle};
use cryptoki::session::Session;

use super::asym::{hash_mechanism, mgf};
use super::quirks::{Module, Quirks};
use super::sealing::Scheme;
use crate::algorithms::{Hash, KeySpec, KeyUsage};
use crate::model::Protection;

/// The mechanisms keyplane uses, with their PKCS#11 names.
pub const USED_MECHANISMS: &[(MechanismType, &str)] = &[
    (MechanismType::AES_KEY_GEN, "CKM_AES_KEY_GEN"),
    (MechanismType::AES_GCM, "CKM_AES_GCM"),
    (MechanismType::AES_KEY_WRAP_PAD, "CKM_AES_KEY_WRAP_PAD"),
    (
        MechanismType::GENERIC_SECRET_KEY_GEN,
        "CKM_GENERIC_SECRET_KEY_GEN",
    ),
    (MechanismType::SHA256_HMAC, "CKM_SHA256_HMAC"),
    (MechanismType::SHA384_HMAC, "CKM_SHA384_HMAC"),
    (MechanismType::SHA512_HMAC, "CKM_SHA512_HMAC"),
    (MechanismType::ECC_KEY_PAIR_GEN, "CKM_EC_KEY_PAIR_GEN"),
    (MechanismType::ECDSA, "CKM_ECDSA"),
    (MechanismType::ECDH1_DERIVE, "CKM_ECDH1_DERIVE"),
    (
        MechanismType::ECC_EDWARDS_KEY_PAIR_GEN,
        "CKM_EC_EDWARDS_KEY_PAIR_GEN",
    ),
    (MechanismType::EDDSA, "CKM_EDDSA"),
    (
        MechanismType::RSA_PKCS_KEY_PAIR_GEN,
        "CKM_RSA_PKCS_KEY_PAIR_GEN",
    ),
    (MechanismType::RSA_PKCS, "CKM_RSA_PKCS"),
    (MechanismType::RSA_PKCS_PSS, "CKM_RSA_PKCS_PSS"),
    (MechanismType::RSA_PKCS_OAEP, "CKM_RSA_PKCS_OAEP"),
    (super::dh::KEY_PAIR_GEN, "CKM_DH_PKCS_KEY_PAIR_GEN"),
    (super::dh::DERIVE, "CKM_DH_PKCS_DERIVE"),
];

/// The token's identity and abilities.
#[derive(Debug, Clone, Default)]
pub struct Capabilities {
    pub manufacturer: String,
    pub model: String,
    pub serial_number: String,
    pub firmware_version: String,
    /// Mechanisms of [`USED_MECHANISMS`] the token lists.
    pub mechanisms: Vec<MechanismType>,
    /// The OAEP hash (also MGF1's) the token accepts; `None`: no RSA encryption.
    pub oaep_hash: Option<Hash>,
    /// The module, as `hsm::quirks` knows it.
    pub module: Module,
    /// How the node seals secrets (the kind of its root key).
    pub scheme: Scheme,
    /// The largest RSA modulus (bits) the token generates, where it says.
    pub rsa_max_bits: Option<u64>,
}

impl Capabilities {
    /// The token is software computing inside this process (SoftHSM2): its calls are CPU
    /// work with no device or network to wait on (a quirk: see `hsm::quirks`).
    pub fn computes_in_process(&self) -> bool {
        self.quirks().computes_in_process
    }

    /// Whether the token lists `m`.
    pub fn has(&self, m: MechanismType) -> bool {
        self.mechanisms.contains(&m)
    }

    /// The module's quirks.
    pub fn quirks(&self) -> Quirks {
        self.module.quirks()
    }

    /// Whether the token can wrap a key for `export-key` (with `CKM_AES_KEY_WRAP_PAD`).
    pub fn wraps_for_export(&self) -> bool {
        !self.quirks().no_key_wrapping && self.has(MechanismType::AES_KEY_WRAP_PAD)
    }

    /// Whether the token can take imported material (BYOK): unwrap it with an RSA-OAEP
    /// transport key pair it makes for the import (a session pair, so session objects too).
    pub fn takes_imports(&self) -> bool {
        !self.quirks().no_key_wrapping
            && !self.quirks().no_session_objects
            && self.has(MechanismType::RSA_PKCS_OAEP)
            && self.has(MechanismType::RSA_PKCS_KEY_PAIR_GEN)
    }

    /// Names of the used mechanisms the token lists, and of those it does not.
    pub fn mechanism_names(&self) -> (Vec<&'static str>, Vec<&'static str>) {
        let (mut listed, mut missing) = (Vec::new(), Vec::new());
        for (m, n) in USED_MECHANISMS {
            if self.has(*m) {
                listed.push(*n);
            } else {
                missing.push(*n);
            }
        }
        (listed, missing)
    }

    /// What a key of `spec` with `usage` and `protection` needs that the token lacks: the
    /// mechanisms it does not list, or (for RSA) the size it does not generate. An
    /// `envelope` key needs only what every token keyplane runs on has: random bytes, and
    /// its tenant KEK's sealing scheme (`hsm::sealing`), whatever that is.
    pub fn missing_for(
        &self,
        spec: KeySpec,
        usage: KeyUsage,
        protection: Protection,
    ) -> Vec<String> {
        use MechanismType as M;
        if protection == Protection::Envelope {
            return Vec::new();
        }
        let mut need: Vec<MechanismType> = match spec {
            KeySpec::Aes256Gcm | KeySpec::Aes128Gcm => vec![M::AES_KEY_GEN, M::AES_GCM],
            // No HSM mechanism (create-key refuses `hsm` for it before this).
            KeySpec::ChaCha20Poly1305 => vec![],
            KeySpec::HmacSha256 => vec![M::GENERIC_SECRET_KEY_GEN, M::SHA256_HMAC],
            KeySpec::HmacSha384 => vec![M::GENERIC_SECRET_KEY_GEN, M::SHA384_HMAC],
            KeySpec::HmacSha512 => vec![M::GENERIC_SECRET_KEY_GEN, M::SHA512_HMAC],
            KeySpec::EccNistP256 | KeySpec::EccNistP384 => vec![M::ECC_KEY_PAIR_GEN],
            KeySpec::Ed25519 => vec![M::ECC_EDWARDS_KEY_PAIR_GEN, M::EDDSA],
            KeySpec::Rsa2048 | KeySpec::Rsa3072 | KeySpec::Rsa4096 => {
                vec![M::RSA_PKCS_KEY_PAIR_GEN]
            }
            KeySpec::Ffdhe2048 | KeySpec::Ffdhe3072 => {
                vec![super::dh::KEY_PAIR_GEN, super::dh::DERIVE]
            }
        };
        match (spec, usage) {
            (KeySpec::EccNistP256 | KeySpec::EccNistP384, KeyUsage::SignVerify) => {
                need.push(M::ECDSA)
            }
            (KeySpec::EccNistP256 | KeySpec::EccNistP384, KeyUsage::KeyAgreement) => {
                need.push(M::ECDH1_DERIVE)
            }
            (_, KeyUsage::SignVerify) if spec.rsa_bits().is_some() => {
                need.extend([M::RSA_PKCS, M::RSA_PKCS_PSS])
            }
            (_, KeyUsage::EncryptDecrypt) if spec.rsa_bits().is_some() => {
                need.push(M::RSA_PKCS_OAEP)
            }
            _ => {}
        }
        let mut missing: Vec<String> = need
            .into_iter()
            .filter(|m| !self.has(*m))
            .map(|m| {
                USED_MECHANISMS
                    .iter()
                    .find(|(u, _)| *u == m)
                    .map(|(_, n)| *n)
                    .unwrap_or("?")
                    .to_string()
            })
            .collect();
        if spec.rsa_bits().is_some()
            && usage == KeyUsage::EncryptDecrypt
            && self.oaep_hash.is_none()
            && missing.is_empty()
        {
            missing.push("CKM_RSA_PKCS_OAEP (with SHA-1 or SHA-256)".into());
        }
        if let (Some(bits), Some(max)) = (spec.rsa_bits(), self.rsa_max_bits) {
            if bits > max {
                missing.push(format!(
                    "CKM_RSA_PKCS_KEY_PAIR_GEN for {bits}-bit keys (it makes at most {max})"
                ));
            }
        }
        missing
    }

    /// The mechanism generating a data key pair of `spec` needs, if the token does not list
    /// it (the pair is generated and read out, never used in the token).
    pub fn missing_for_data_key_pair(&self, spec: KeySpec) -> Option<&'static str> {
        if self.quirks().private_keys_stay_inside {
            return Some("a way to read out a private key it generates (its keys never leave it)");
        }
        let (m, name) = match spec {
            KeySpec::EccNistP256 | KeySpec::EccNistP384 => {
                (MechanismType::ECC_KEY_PAIR_GEN, "CKM_EC_KEY_PAIR_GEN")
            }
            _ => (
                MechanismType::RSA_PKCS_KEY_PAIR_GEN,
                "CKM_RSA_PKCS_KEY_PAIR_GEN",
            ),
        };
        (!self.has(m)).then_some(name)
    }
}

/// The RSA-OAEP hash the key ceremony wraps the root key with (see the module docs).
pub(super) fn ceremony_oaep(session: &Session) -> Option<super::wrapping::OaepHash> {
    match probe_oaep(session, Quirks::default())? {
        Hash::Sha256 => Some(super::wrapping::OaepHash::Sha256),
        Hash::Sha1 => Some(super::wrapping::OaepHash::Sha1),
        _ => None,
    }
}

/// Probe the OAEP hash the token accepts (see the module docs) with a scratch key pair.
/// Failures mean "not this hash"; nothing here is fatal.
pub(super) fn probe_oaep(session: &Session, quirks: Quirks) -> Option<Hash> {
    let public = [
        Attribute::Token(quirks.no_session_objects),
        Attribute::Class(ObjectClass::PUBLIC_KEY),
        Attribute::ModulusBits(1024u64.into()),
        Attribute::PublicExponent(vec![0x01, 0x00, 0x01]),
        Attribute::Encrypt(true),
    ];
    let private = [
        Attribute::Token(quirks.no_session_objects),
        Attribute::Class(ObjectClass::PRIVATE_KEY),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Decrypt(true),
    ];
    let (pubh, privh) =
        crate::telemetry::spans::hsm("C_GenerateKeyPair", "CKM_RSA_PKCS_KEY_PAIR_GEN", || {
            session.generate_key_pair(&Mechanism::RsaPkcsKeyPairGen, &public, &private)
        })
        .map_err(|e| tracing::warn!(error = %e, "OAEP probe: cannot generate an RSA key pair"))
        .ok()?;
    let found = probe_oaep_with(session, pubh, privh);
    let _ = session.destroy_object(pubh);
    let _ = session.destroy_object(privh);
    found
}

/// The OAEP hash that round-trips a test value through the key pair `pubh`/`privh` (an RSA
/// root key: probing with it makes no scratch pair, which on a module without session
/// objects would be a token object at every start).
pub(super) fn probe_oaep_with(
    session: &Session,
    pubh: ObjectHandle,
    privh: ObjectHandle,
) -> Option<Hash> {
    let probe = b"keyplane oaep probe";
    [Hash::Sha256, Hash::Sha1].into_iter().find(|h| {
        let mech = Mechanism::RsaPkcsOaep(cryptoki::mechanism::rsa::PkcsOaepParams::new(
            hash_mechanism(*h),
            mgf(*h),
            cryptoki::mechanism::rsa::PkcsOaepSource::empty(),
        ));
        let round_trip = crate::telemetry::spans::hsm("C_Encrypt", "CKM_RSA_PKCS_OAEP", || {
            session.encrypt(&mech, pubh, probe)
        })
        .and_then(|ct| {
            crate::telemetry::spans::hsm("C_Decrypt", "CKM_RSA_PKCS_OAEP", || {
                session.decrypt(&mech, privh, &ct)
            })
        });
        matches!(round_trip, Ok(pt) if pt == probe)
    })
}
