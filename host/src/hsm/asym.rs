//! PKCS#11 calls for the non-AES key specs: generating HMAC keys and key pairs as
//! non-extractable token objects, signing and verifying (ECDSA, EdDSA, RSA PKCS#1 v1.5 and
//! PSS, HMAC), RSA OAEP, ECDH and reading public keys.
//!
//! Every version's objects share one `CKA_ID` ([`super::version_object_id`]) and label
//! `kp:<key>:<version>`: a pair's private and public objects carry the same id, as PKCS#11
//! convention has it, so `pkcs11-tool --list-objects` shows them together and shredding finds
//! both.
//!
//! Callers hash messages on the host: the token signs digests (`CKM_ECDSA`, `CKM_RSA_PKCS`
//! over a DigestInfo, `CKM_RSA_PKCS_PSS`), except Ed25519 which signs the message itself.

use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::elliptic_curve::{EcKdf, Ecdh1DeriveParams};
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsOaepParams, PkcsOaepSource, PkcsPssParams};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass};
use zeroize::Zeroizing;

use super::{unavailable, Hsm, Obj};
use crate::algorithms::public_key::PublicParts;
use crate::algorithms::{Hash, KeySpec, KeyUsage};
use crate::error::{Error, Result};

/// A signing or MAC mechanism as keyplane uses it (the input is a digest except for EdDSA
/// and HMAC).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignMechanism {
    /// `CKM_ECDSA` over a digest; the token answers raw `r ‖ s`.
    Ecdsa,
    /// `CKM_EDDSA` (pure Ed25519) over the message.
    Eddsa,
    /// `CKM_RSA_PKCS` over a DER DigestInfo.
    RsaPkcs,
    /// `CKM_RSA_PKCS_PSS` over a digest, MGF1 with the same hash, salt as long as the digest.
    RsaPss(Hash),
    /// `CKM_SHA*_HMAC` over the message.
    Hmac(Hash),
}

pub(crate) fn hash_mechanism(h: Hash) -> MechanismType {
    match h {
        Hash::Sha1 => MechanismType::SHA1,
        Hash::Sha256 => MechanismType::SHA256,
        Hash::Sha384 => MechanismType::SHA384,
        Hash::Sha512 => MechanismType::SHA512,
    }
}

pub(crate) fn mgf(h: Hash) -> PkcsMgfType {
    match h {
        Hash::Sha1 => PkcsMgfType::MGF1_SHA1,
        Hash::Sha256 => PkcsMgfType::MGF1_SHA256,
        Hash::Sha384 => PkcsMgfType::MGF1_SHA384,
        Hash::Sha512 => PkcsMgfType::MGF1_SHA512,
    }
}

impl SignMechanism {
    /// The PKCS#11 name, for spans and metrics.
    pub fn name(self) -> &'static str {
        match self {
            SignMechanism::Ecdsa => "CKM_ECDSA",
            SignMechanism::Eddsa => "CKM_EDDSA",
            SignMechanism::RsaPkcs => "CKM_RSA_PKCS",
            SignMechanism::RsaPss(_) => "CKM_RSA_PKCS_PSS",
            SignMechanism::Hmac(Hash::Sha1) => "CKM_SHA_1_HMAC",
            SignMechanism::Hmac(Hash::Sha256) => "CKM_SHA256_HMAC",
            SignMechanism::Hmac(Hash::Sha384) => "CKM_SHA384_HMAC",
            SignMechanism::Hmac(Hash::Sha512) => "CKM_SHA512_HMAC",
        }
    }

    fn mechanism(self) -> Mechanism<'static> {
        match self {
            SignMechanism::Ecdsa => Mechanism::Ecdsa,
            SignMechanism::Eddsa => Mechanism::Eddsa(cryptoki::mechanism::eddsa::EddsaParams::new(
                cryptoki::mechanism::eddsa::EddsaSignatureScheme::Pure,
            )),
            SignMechanism::RsaPkcs => Mechanism::RsaPkcs,
            SignMechanism::RsaPss(h) => Mechanism::RsaPkcsPss(PkcsPssParams {
                hash_alg: hash_mechanism(h),
                mgf: mgf(h),
                s_len: (h.output_len() as u64).into(),
            }),
            SignMechanism::Hmac(Hash::Sha1) => Mechanism::Sha1Hmac,
            SignMechanism::Hmac(Hash::Sha256) => Mechanism::Sha256Hmac,
            SignMechanism::Hmac(Hash::Sha384) => Mechanism::Sha384Hmac,
            SignMechanism::Hmac(Hash::Sha512) => Mechanism::Sha512Hmac,
        }
    }
}

/// The DER `ECParameters` (a named-curve OID) of a NIST curve or of Ed25519.
pub(crate) fn ec_params(spec: KeySpec) -> Result<Vec<u8>> {
    use der::Encode;
    let oid = match spec {
        KeySpec::EccNistP256 => crate::algorithms::public_key::OID_P256,
        KeySpec::EccNistP384 => crate::algorithms::public_key::OID_P384,
        KeySpec::Ed25519 => crate::algorithms::public_key::OID_ED25519,
        _ => return Err(Error::Internal),
    };
    oid.to_der().map_err(|_| Error::Internal)
}

impl Hsm {
    /// Generate the material of a non-AES `hsm` key version as sensitive token objects with
    /// `CKA_ID` `id`, extractable (wrappable for export, never readable) only if
    /// `exportable`. Returns every handle created (the secret key, or the public and private
    /// key of a pair). The key's usage is fixed in its attributes too.
    pub fn generate_version_objects(
        &self,
        id: &[u8],
        label: &str,
        (spec, usage): (KeySpec, KeyUsage),
        exportable: bool,
    ) -> Result<Vec<Obj>> {
        let common = |class: ObjectClass, private: bool| {
            vec![
                Attribute::Token(true),
                Attribute::Private(private),
                Attribute::Class(class),
                Attribute::Id(id.to_vec()),
                Attribute::Label(label.as_bytes().to_vec()),
            ]
        };
        if let Some(h) = spec.hmac_hash() {
            let mut t = common(ObjectClass::SECRET_KEY, true);
            t.extend([
                Attribute::KeyType(KeyType::GENERIC_SECRET),
                Attribute::ValueLen((h.output_len() as u64).into()),
                Attribute::Sensitive(true),
                Attribute::Extractable(exportable),
                Attribute::Sign(true),
                Attribute::Verify(true),
                Attribute::Encrypt(false),
                Attribute::Decrypt(false),
                Attribute::Derive(false),
                Attribute::Wrap(false),
                Attribute::Unwrap(false),
            ]);
            let handle =
                self.call_on_objects("C_GenerateKey", "CKM_GENERIC_SECRET_KEY_GEN", |s, live| {
                    s.generate_key(&Mechanism::GenericSecretKeyGen, &t)
                        .map(|h| live.obj(h))
                        .map_err(unavailable("generate hmac key"))
                })?;
            return Ok(vec![handle]);
        }
        let sign = usage == KeyUsage::SignVerify;
        let decrypt = usage == KeyUsage::EncryptDecrypt;
        let derive = usage == KeyUsage::KeyAgreement;
        let mut public = common(ObjectClass::PUBLIC_KEY, false);
        public.extend([
            Attribute::Verify(sign),
            Attribute::Encrypt(decrypt),
            Attribute::Wrap(false),
            Attribute::Derive(false),
        ]);
        let mut private = common(ObjectClass::PRIVATE_KEY, true);
        private.extend([
            Attribute::Sensitive(true),
            Attribute::Extractable(exportable),
            Attribute::Sign(sign),
            Attribute::Decrypt(decrypt),
            Attribute::Derive(derive),
            Attribute::Unwrap(false),
        ]);
        let (mechanism, name) = match spec {
            KeySpec::EccNistP256 | KeySpec::EccNistP384 => {
                public.push(Attribute::EcParams(ec_params(spec)?));
                (Mechanism::EccKeyPairGen, "CKM_EC_KEY_PAIR_GEN")
            }
            KeySpec::Ed25519 => {
                public.push(Attribute::EcParams(ec_params(spec)?));
                (
                    Mechanism::EccEdwardsKeyPairGen,
                    "CKM_EC_EDWARDS_KEY_PAIR_GEN",
                )
            }
            KeySpec::Rsa2048 | KeySpec::Rsa3072 | KeySpec::Rsa4096 => {
                let bits = spec.rsa_bits().ok_or(Error::Internal)?;
                public.push(Attribute::ModulusBits(bits.into()));
                public.push(Attribute::PublicExponent(vec![0x01, 0x00, 0x01]));
                (Mechanism::RsaPkcsKeyPairGen, "CKM_RSA_PKCS_KEY_PAIR_GEN")
            }
            _ => return Err(Error::Internal),
        };
        self.call_on_objects("C_GenerateKeyPair", name, |s, live| {
            let (pubh, privh) = s
                .generate_key_pair(&mechanism, &public, &private)
                .map_err(unavailable("generate key pair"))?;
            Ok(vec![live.obj(pubh), live.obj(privh)])
        })
    }

    /// Every object matching `template` (one `C_FindObjects` search).
    fn find(&self, template: &[Attribute]) -> Result<Vec<Obj>> {
        self.call_on_objects("C_FindObjects", "none", |s, live| {
            let found = s
                .find_objects(template)
                .map_err(unavailable("find objects"))?;
            Ok(found.into_iter().map(|h| live.obj(h)).collect())
        })
    }

    /// Find a token object of `class` by `CKA_ID` (never a session copy of it).
    pub fn find_object(&self, class: ObjectClass, id: &[u8]) -> Result<Option<Obj>> {
        let template = [
            Attribute::Token(true),
            Attribute::Class(class),
            Attribute::Id(id.to_vec()),
        ];
        Ok(self.find(&template)?.into_iter().next())
    }

    /// Every object with `CKA_ID` `id`, whatever its class (for crypto-shredding).
    pub fn find_all(&self, id: &[u8]) -> Result<Vec<Obj>> {
        self.find(&[Attribute::Id(id.to_vec())])
    }

    /// Every object labelled `label` (for crypto-shredding: every creation attempt's objects
    /// of a version carry its label).
    pub fn find_labelled(&self, label: &[u8]) -> Result<Vec<Obj>> {
        self.find(&[Attribute::Label(label.to_vec())])
    }

    /// Every session object with `CKA_ID` `id` (test hook: the data plane's copies).
    #[cfg(all(feature = "test-hooks", debug_assertions))]
    pub fn find_session_objects(&self, id: &[u8]) -> Result<Vec<Obj>> {
        self.find(&[Attribute::Token(false), Attribute::Id(id.to_vec())])
    }

    /// Whether `object` still exists (test hook: a destroyed object's handle is invalid, and
    /// SoftHSM2 never hands the same handle out again within a process).
    #[cfg(all(feature = "test-hooks", debug_assertions))]
    pub fn is_live(&self, object: Obj) -> Result<bool> {
        if object.epoch() != self.epoch() {
            // Its login ended, and every session object with it.
            return Ok(false);
        }
        self.call("C_GetAttributeValue", "none", |s, live| {
            match s.get_attributes(live.handle(object)?, &[AttributeType::Class]) {
                Ok(_) => Ok(true),
                Err(CkError::Pkcs11(RvError::ObjectHandleInvalid, _)) => Ok(false),
                Err(e) => Err(unavailable("read an attribute")(e)),
            }
        })
    }

    /// Sign `data` (a digest, a DigestInfo, or the message for EdDSA and HMAC).
    pub fn sign(&self, key: Obj, m: SignMechanism, data: &[u8]) -> Result<Vec<u8>> {
        self.call("C_Sign", m.name(), |s, live| {
            s.sign(&m.mechanism(), live.handle(key)?, data)
                .map_err(unavailable("sign"))
        })
    }

    /// Verify a signature or MAC. A signature that does not match is `Ok(false)`.
    pub fn verify(
        &self,
        key: Obj,
        m: SignMechanism,
        data: &[u8],
        signature: &[u8],
    ) -> Result<bool> {
        self.call("C_Verify", m.name(), |s, live| {
            match s.verify(&m.mechanism(), live.handle(key)?, data, signature) {
                Ok(()) => Ok(Ok(true)),
                Err(CkError::Pkcs11(RvError::SignatureInvalid | RvError::SignatureLenRange, _)) => {
                    Ok(Ok(false))
                }
                // Not an HSM failure: keep the session in the pool.
                Err(CkError::Pkcs11(RvError::DataLenRange | RvError::DataInvalid, _)) => Ok(Err(
                    Error::validation("the message or digest does not fit the key's algorithm"),
                )),
                Err(e) => Err(unavailable("verify")(e)),
            }
        })?
    }

    fn oaep(h: Hash) -> Mechanism<'static> {
        Mechanism::RsaPkcsOaep(PkcsOaepParams::new(
            hash_mechanism(h),
            mgf(h),
            PkcsOaepSource::empty(),
        ))
    }

    /// RSA OAEP encryption with `hash` (also MGF1's hash), no label.
    pub fn oaep_encrypt(&self, key: Obj, hash: Hash, plaintext: &[u8]) -> Result<Vec<u8>> {
        self.call("C_Encrypt", "CKM_RSA_PKCS_OAEP", |s, live| {
            s.encrypt(&Self::oaep(hash), live.handle(key)?, plaintext)
                .map_err(unavailable("rsa-oaep encrypt"))
        })
    }

    /// RSA OAEP decryption. A ciphertext that does not decrypt is [`Error::DecryptionFailed`].
    pub fn oaep_decrypt(
        &self,
        key: Obj,
        hash: Hash,
        ciphertext: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>> {
        self.call("C_Decrypt", "CKM_RSA_PKCS_OAEP", |s, live| {
            match s.decrypt(&Self::oaep(hash), live.handle(key)?, ciphertext) {
                Ok(pt) => Ok(Ok(Zeroizing::new(pt))),
                Err(CkError::Pkcs11(
                    RvError::GeneralError
                    | RvError::EncryptedDataInvalid
                    | RvError::EncryptedDataLenRange,
                    _,
                )) => Ok(Err(Error::DecryptionFailed)),
                Err(e) => Err(unavailable("rsa-oaep decrypt")(e)),
            }
        })?
    }

    /// ECDH (`CKM_ECDH1_DERIVE`, null KDF) of the private key with an uncompressed peer
    /// point: the shared secret (x coordinate), `len` bytes. The derived value exists in the
    /// token only as a short-lived session object, destroyed before return.
    pub fn ecdh(&self, private: Obj, peer_point: &[u8], len: usize) -> Result<Zeroizing<Vec<u8>>> {
        let template = [
            Attribute::Token(false),
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::GENERIC_SECRET),
            Attribute::ValueLen((len as u64).into()),
            Attribute::Sensitive(false),
            Attribute::Extractable(true),
        ];
        self.call("C_DeriveKey", "CKM_ECDH1_DERIVE", |s, live| {
            let params = Ecdh1DeriveParams::new(EcKdf::null(), peer_point);
            let derived = s
                .derive_key(
                    &Mechanism::Ecdh1Derive(params),
                    live.handle(private)?,
                    &template,
                )
                .map_err(unavailable("ecdh derive"))?;
            let value = s.get_attributes(derived, &[AttributeType::Value]);
            let _ = s.destroy_object(derived);
            let value = value.map_err(unavailable("read derived secret"))?;
            match value.into_iter().next() {
                Some(Attribute::Value(v)) => Ok(Zeroizing::new(v)),
                _ => Err(Error::Internal),
            }
        })
    }

    /// The public half of a key pair, from its public-key object.
    pub fn public_parts(&self, public: Obj, spec: KeySpec) -> Result<PublicParts> {
        let rsa = spec.rsa_bits().is_some();
        let wanted: &[AttributeType] = if rsa {
            &[AttributeType::Modulus, AttributeType::PublicExponent]
        } else {
            &[AttributeType::EcPoint]
        };
        let attrs = self.call("C_GetAttributeValue", "none", |s, live| {
            s.get_attributes(live.handle(public)?, wanted)
                .map_err(unavailable("read public key"))
        })?;
        let (mut modulus, mut exponent, mut point) = (None, None, None);
        for a in attrs {
            match a {
                Attribute::Modulus(v) => modulus = Some(v),
                Attribute::PublicExponent(v) => exponent = Some(v),
                Attribute::EcPoint(v) => point = Some(v),
                _ => {}
            }
        }
        if rsa {
            match (modulus, exponent) {
                (Some(modulus), Some(exponent)) => Ok(PublicParts::Rsa { modulus, exponent }),
                _ => Err(Error::Internal),
            }
        } else {
            let point = point.ok_or(Error::Internal)?;
            // CKA_EC_POINT is a DER OCTET STRING (PKCS#11 2.40); some tokens give it bare.
            use der::Decode;
            let inner = der::asn1::OctetString::from_der(&point)
                .map(|o| o.into_bytes())
                .unwrap_or(point);
            Ok(PublicParts::Ec(inner))
        }
    }
}
