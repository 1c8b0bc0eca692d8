//! PKCS#11 calls for the HMAC, ECC, Ed25519 and RSA key specs: generating HMAC keys and key
//! pairs as non-extractable token objects, signing and verifying (ECDSA, EdDSA, RSA PKCS#1
//! v1.5 and PSS, HMAC), RSA OAEP, ECDH and reading public keys; and generating data key pairs,
//! the one kind of key pair whose private half is read out of the token
//! ([`Hsm::generate_data_key_pair`]).
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

use super::{derived_secret_template, take_derived_secret, unavailable, world, Hsm, Obj};
use crate::algorithms::private_key::{KeyPairParts, PrivateParts, RsaPrivateParts};
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

/// `CKA_ID` and `CKA_LABEL` of the session objects of a data key pair while it is read out
/// (test builds count the objects that carry it: none may outlive its call). Garbage
/// collection looks only at token objects.
pub const DATA_KEY_PAIR_ID: &[u8] = b"kp-data-key-pair";

/// Read both halves of a data key pair (see [`Hsm::generate_data_key_pair`]).
fn read_pair(
    s: &cryptoki::session::Session,
    spec: KeySpec,
    public: cryptoki::object::ObjectHandle,
    private: cryptoki::object::ObjectHandle,
) -> Result<KeyPairParts> {
    let missing = |what: &'static str| {
        tracing::error!(
            what,
            "the token did not reveal a part of a data key pair (is its private key sensitive?)"
        );
        Error::HsmUnavailable
    };
    if let Some(bits) = spec.rsa_bits() {
        let attrs = s
            .get_attributes(
                private,
                &[
                    AttributeType::Modulus,
                    AttributeType::PublicExponent,
                    AttributeType::PrivateExponent,
                    AttributeType::Prime1,
                    AttributeType::Prime2,
                    AttributeType::Exponent1,
                    AttributeType::Exponent2,
                    AttributeType::Coefficient,
                ],
            )
            .map_err(unavailable("read data key pair"))?;
        let (mut n, mut e) = (None, None);
        let (mut d, mut p, mut q) = (None, None, None);
        let (mut dp, mut dq, mut qinv) = (None, None, None);
        // Every value is moved (not copied) into its place: the secret ones into zeroized
        // buffers.
        for a in attrs {
            match a {
                Attribute::Modulus(v) => n = Some(v),
                Attribute::PublicExponent(v) => e = Some(v),
                Attribute::PrivateExponent(v) => d = Some(Zeroizing::new(v)),
                Attribute::Prime1(v) => p = Some(Zeroizing::new(v)),
                Attribute::Prime2(v) => q = Some(Zeroizing::new(v)),
                Attribute::Exponent1(v) => dp = Some(Zeroizing::new(v)),
                Attribute::Exponent2(v) => dq = Some(Zeroizing::new(v)),
                Attribute::Coefficient(v) => qinv = Some(Zeroizing::new(v)),
                _ => {}
            }
        }
        let modulus = n.ok_or_else(|| missing("modulus"))?;
        let size = modulus.iter().skip_while(|b| **b == 0).count() as u64 * 8;
        if size != bits {
            tracing::error!(size, bits, "the token generated an RSA key of another size");
            return Err(Error::Internal);
        }
        Ok(KeyPairParts {
            public: PublicParts::Rsa {
                modulus,
                exponent: e.ok_or_else(|| missing("public exponent"))?,
            },
            private: PrivateParts::Rsa(RsaPrivateParts {
                private_exponent: d.ok_or_else(|| missing("private exponent"))?,
                prime1: p.ok_or_else(|| missing("prime 1"))?,
                prime2: q.ok_or_else(|| missing("prime 2"))?,
                exponent1: dp.ok_or_else(|| missing("exponent 1"))?,
                exponent2: dq.ok_or_else(|| missing("exponent 2"))?,
                coefficient: qinv.ok_or_else(|| missing("coefficient"))?,
            }),
        })
    } else {
        let value = s
            .get_attributes(private, &[AttributeType::Value])
            .map_err(unavailable("read data key pair"))?
            .into_iter()
            .find_map(|a| match a {
                Attribute::Value(v) => Some(Zeroizing::new(v)),
                _ => None,
            })
            .ok_or_else(|| missing("private value"))?;
        let point = s
            .get_attributes(public, &[AttributeType::EcPoint])
            .map_err(unavailable("read data key pair"))?
            .into_iter()
            .find_map(|a| match a {
                Attribute::EcPoint(v) => Some(v),
                _ => None,
            })
            .ok_or_else(|| missing("public point"))?;
        Ok(KeyPairParts {
            public: PublicParts::Ec(ec_point_content(point)),
            private: PrivateParts::Ec(value),
        })
    }
}

/// The point in a `CKA_EC_POINT`: a DER OCTET STRING (PKCS#11 2.40); some tokens give it bare.
/// A bare point can read as DER too (`04 ‖ X ‖ Y` is an OCTET STRING whenever X's first byte
/// is the point's length less 2: one P-256 key in 256), so the DER reading is taken only when
/// what it holds has a point's length (32 bytes for Ed25519 and X25519, an uncompressed P-256
/// or P-384 point); a bare point read that way never does.
pub(super) fn ec_point_content(point: Vec<u8>) -> Vec<u8> {
    use der::Decode;
    let is_point = |p: &[u8]| match p.len() {
        32 => true,
        65 | 97 => p[0] == 0x04,
        _ => false,
    };
    match der::asn1::OctetString::from_der(&point) {
        Ok(o) if is_point(o.as_bytes()) => o.into_bytes(),
        _ => point,
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
    /// Generate the material of an HMAC, ECC, Ed25519 or RSA `hsm` key version as sensitive
    /// token objects with `CKA_ID` `id`, extractable (wrappable for export, never readable)
    /// only if `exportable`. Returns every handle created (the secret key, or the public and
    /// private key of a pair), and the version's world copy: the secret or private key
    /// wrapped by the root key in the same call, before it is made non-extractable, with a
    /// pair's public key (see [`super::world`]); `None` for `ED25519` (SoftHSM2 cannot wrap
    /// an Ed25519 private key) and where the module declines. The key's usage is fixed in its
    /// attributes too.
    pub fn generate_version_objects(
        &self,
        id: &[u8],
        label: &str,
        kind: (KeySpec, KeyUsage),
        exportable: bool,
    ) -> Result<(Vec<Obj>, Option<Vec<u8>>)> {
        self.generate_objects(id, label, kind, exportable, true)
    }

    /// [`Hsm::generate_version_objects`]; with `world_copy` false, no world copy is made and
    /// the secret or private key is never extractable unless `exportable` (the audit signing
    /// key: one per node, never leaves its token).
    pub(super) fn generate_objects(
        &self,
        id: &[u8],
        label: &str,
        (spec, usage): (KeySpec, KeyUsage),
        exportable: bool,
        world_copy: bool,
    ) -> Result<(Vec<Obj>, Option<Vec<u8>>)> {
        // A root key that wraps nothing (`hsm::sealing`) makes no world copies, and a key
        // that needs none is never extractable.
        let world_copy = world_copy && self.makes_world_copies()?;
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
                Attribute::Extractable(world_copy || exportable),
                Attribute::Sign(true),
                Attribute::Verify(true),
                Attribute::Encrypt(false),
                Attribute::Decrypt(false),
                Attribute::Derive(false),
                Attribute::Wrap(false),
                Attribute::Unwrap(false),
            ]);
            let usage = world::Usage {
                sign: true,
                extractable: exportable,
                ..world::Usage::default()
            };
            return self.call_on_objects(
                "C_GenerateKey",
                "CKM_GENERIC_SECRET_KEY_GEN",
                |s, live| {
                    let h = s
                        .generate_key(&Mechanism::GenericSecretKeyGen, &t)
                        .map_err(unavailable("generate hmac key"))?;
                    if !world_copy {
                        return Ok((vec![live.obj(h)], None));
                    }
                    let kind = (world::CopyKind::GenericSecret, usage);
                    match world::seal(s, live.root.wrapping_key(), h, kind, &[]) {
                        Ok(copy) => Ok((vec![live.obj(h)], copy)),
                        Err(e) => {
                            let _ = s.destroy_object(h);
                            Err(e)
                        }
                    }
                },
            );
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
        // Ed25519 private keys cannot be wrapped (no world copy): never extractable (nor the
        // audit key's). Others are extractable until sealed (see `world::seal`).
        let copy_kind = match spec {
            _ if !world_copy => None,
            KeySpec::EccNistP256 | KeySpec::EccNistP384 => Some(world::CopyKind::Ec),
            KeySpec::Rsa2048 | KeySpec::Rsa3072 | KeySpec::Rsa4096 => Some(world::CopyKind::Rsa),
            KeySpec::Ffdhe2048 | KeySpec::Ffdhe3072 => Some(world::CopyKind::Dh),
            _ => None,
        };
        let mut private = common(ObjectClass::PRIVATE_KEY, true);
        private.extend([
            Attribute::Sensitive(true),
            Attribute::Extractable(copy_kind.is_some() || exportable),
            Attribute::Sign(sign),
            Attribute::Decrypt(decrypt),
            Attribute::Derive(derive),
            Attribute::Unwrap(false),
        ]);
        let copy_usage = world::Usage {
            encrypt: decrypt,
            sign,
            derive,
            extractable: exportable,
        };
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
            KeySpec::Ffdhe2048 | KeySpec::Ffdhe3072 => {
                let group = spec.dh_group().ok_or(Error::Internal)?;
                public.extend(super::dh::public_template(group));
                (super::dh::key_pair_gen(), "CKM_DH_PKCS_KEY_PAIR_GEN")
            }
            _ => return Err(Error::Internal),
        };
        self.call_on_objects("C_GenerateKeyPair", name, |s, live| {
            let (public, private) = (live.quirks.template(public), live.quirks.template(private));
            let (pubh, privh) = s
                .generate_key_pair(&mechanism, &public, &private)
                .map_err(unavailable("generate key pair"))?;
            let handles = vec![live.obj(pubh), live.obj(privh)];
            let Some(kind) = copy_kind else {
                return Ok((handles, None));
            };
            let sealed = read_public_parts(s, pubh, spec)
                .and_then(|parts| crate::algorithms::public_key::spki_der(spec, &parts))
                .and_then(|spki| {
                    world::seal(
                        s,
                        live.root.wrapping_key(),
                        privh,
                        (kind, copy_usage),
                        &spki,
                    )
                });
            match sealed {
                Ok(copy) => Ok((handles, copy)),
                Err(e) => {
                    let _ = s.destroy_object(privh);
                    let _ = s.destroy_object(pubh);
                    Err(e)
                }
            }
        })
    }

    /// Generate a data key pair of `spec` (RSA or a NIST curve) for `generate-data-key-pair`
    /// and read both halves out: the caller gets the key pair, keyplane keeps nothing.
    ///
    /// The pair is made by the token's generator, as every key keyplane makes, as two
    /// *session* objects (`CKA_TOKEN` false) of the pooled session running the call, with no
    /// use allowed (they sign, decrypt or derive nothing) and the private half made readable
    /// for this purpose only: `CKA_SENSITIVE` false and `CKA_EXTRACTABLE` true. SoftHSM2
    /// (2.6.1) accepts that template for a generated private key and reveals its values
    /// (`C_GetAttributeValue` of `CKA_PRIVATE_EXPONENT`, `CKA_PRIME_1`..., `CKA_VALUE`) only when
    /// both hold: with `CKA_SENSITIVE` true, or with `CKA_EXTRACTABLE` false, each private value
    /// answers `CKR_ATTRIBUTE_SENSITIVE` (which `cryptoki` turns into a missing attribute, so a
    /// missing one is an error here, never an empty value). Both objects are destroyed in the
    /// same call, before it returns, whether reading worked or not; if destroying fails, the
    /// call fails with `HsmUnavailable`, the pool closes the session, and closing a session
    /// destroys its session objects. No handle leaves this function, so no epoch is involved.
    ///
    /// Creating and destroying objects takes turns on SoftHSM2 (see `call_on_objects`), for
    /// the whole call, as `generate_version_objects` does: an RSA-4096 generation holds the
    /// turn for as long as it takes (seconds on SoftHSM2).
    ///
    /// The private values come back in zeroized buffers. `cryptoki` reads attributes through
    /// buffers of its own that it frees without zeroizing them; nothing here can reach those.
    pub fn generate_data_key_pair(&self, spec: KeySpec) -> Result<KeyPairParts> {
        let common = |class: ObjectClass, private: bool| {
            vec![
                Attribute::Token(false),
                Attribute::Private(private),
                Attribute::Class(class),
                Attribute::Id(DATA_KEY_PAIR_ID.to_vec()),
                Attribute::Label(DATA_KEY_PAIR_ID.to_vec()),
            ]
        };
        let mut public = common(ObjectClass::PUBLIC_KEY, false);
        public.extend([
            Attribute::Verify(false),
            Attribute::Encrypt(false),
            Attribute::Wrap(false),
            Attribute::Derive(false),
        ]);
        let mut private = common(ObjectClass::PRIVATE_KEY, true);
        private.extend([
            Attribute::Sensitive(false),
            Attribute::Extractable(true),
            Attribute::Sign(false),
            Attribute::Decrypt(false),
            Attribute::Derive(false),
            Attribute::Unwrap(false),
        ]);
        let (mechanism, name) = match spec {
            KeySpec::EccNistP256 | KeySpec::EccNistP384 => {
                public.push(Attribute::EcParams(ec_params(spec)?));
                (Mechanism::EccKeyPairGen, "CKM_EC_KEY_PAIR_GEN")
            }
            KeySpec::Rsa2048 | KeySpec::Rsa3072 | KeySpec::Rsa4096 => {
                let bits = spec.rsa_bits().ok_or(Error::Internal)?;
                public.push(Attribute::ModulusBits(bits.into()));
                public.push(Attribute::PublicExponent(vec![0x01, 0x00, 0x01]));
                (Mechanism::RsaPkcsKeyPairGen, "CKM_RSA_PKCS_KEY_PAIR_GEN")
            }
            _ => return Err(Error::Internal),
        };
        self.call_on_objects("C_GenerateKeyPair", name, |s, _live| {
            let (pubh, privh) = s
                .generate_key_pair(&mechanism, &public, &private)
                .map_err(unavailable("generate data key pair"))?;
            let read = read_pair(s, spec, pubh, privh);
            // Both destroyed, whatever the first answers; the parts read (zeroized on drop)
            // are not returned unless both are gone.
            let destroyed = [privh, pubh].map(|h| s.destroy_object(h));
            for done in destroyed {
                done.map_err(unavailable("destroy data key pair"))?;
            }
            read
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

    /// `Ok` if this token's objects can be seen at all: its root key is found. A search that
    /// finds nothing proves an object destroyed only then: SoftHSM2 whose token directory has
    /// gone answers every search with nothing (and a destroy by a handle it no longer knows
    /// with `CKR_OBJECT_HANDLE_INVALID`), as if the objects had been destroyed.
    pub fn confirm_objects_visible(&self) -> Result<()> {
        let root = [
            Attribute::Token(true),
            Attribute::Label(super::ROOT_KEY_LABEL.as_bytes().to_vec()),
        ];
        if self.find(&root)?.is_empty() {
            tracing::error!("the token's objects cannot be seen (its root key is not found): nothing is taken as destroyed");
            return Err(Error::HsmUnavailable);
        }
        Ok(())
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
        // A refused ciphertext is an error of the call (not a value), so the pool closes the
        // session where the module leaves the failed decryption active (`hsm::quirks`).
        self.call("C_Decrypt", "CKM_RSA_PKCS_OAEP", |s, live| {
            match s.decrypt(&Self::oaep(hash), live.handle(key)?, ciphertext) {
                Ok(pt) => Ok(Zeroizing::new(pt)),
                Err(e) if live.quirks.rejects_input(&e) => Err(Error::DecryptionFailed),
                Err(e) => Err(unavailable("rsa-oaep decrypt")(e)),
            }
        })
    }

    /// ECDH (`CKM_ECDH1_DERIVE`, null KDF) of the private key with an uncompressed peer
    /// point: the shared secret (x coordinate), `len` bytes. The derived value exists in the
    /// token only as a short-lived session object, destroyed before return (an object call:
    /// see `Hsm::call_on_objects`; a failed destroy fails the call, see `destroy_secret`).
    pub fn ecdh(&self, private: Obj, peer_point: &[u8], len: usize) -> Result<Zeroizing<Vec<u8>>> {
        self.call_on_objects("C_DeriveKey", "CKM_ECDH1_DERIVE", |s, live| {
            let params = Ecdh1DeriveParams::new(EcKdf::null(), peer_point);
            let derived = s
                .derive_key(
                    &Mechanism::Ecdh1Derive(params),
                    live.handle(private)?,
                    &derived_secret_template(len),
                )
                .map_err(unavailable("ecdh derive"))?;
            take_derived_secret(s, derived)
        })
    }

    /// The public half of a key pair, from its public-key object.
    pub fn public_parts(&self, public: Obj, spec: KeySpec) -> Result<PublicParts> {
        self.call("C_GetAttributeValue", "none", |s, live| {
            read_public_parts(s, live.handle(public)?, spec)
        })
    }
}

/// The public half of a key pair of `spec`, read from its public-key object in `s`.
pub(super) fn read_public_parts(
    s: &cryptoki::session::Session,
    public: cryptoki::object::ObjectHandle,
    spec: KeySpec,
) -> Result<PublicParts> {
    let rsa = spec.rsa_bits().is_some();
    if spec.dh_group().is_some() {
        let value = s
            .get_attributes(public, &[AttributeType::Value])
            .map_err(unavailable("read public key"))?;
        return match value.into_iter().next() {
            Some(Attribute::Value(y)) => Ok(PublicParts::Dh(y)),
            _ => Err(Error::Internal),
        };
    }
    let wanted: &[AttributeType] = if rsa {
        &[AttributeType::Modulus, AttributeType::PublicExponent]
    } else {
        &[AttributeType::EcPoint]
    };
    let attrs = s
        .get_attributes(public, wanted)
        .map_err(unavailable("read public key"))?;
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
        Ok(PublicParts::Ec(ec_point_content(point)))
    }
}

#[cfg(test)]
mod tests {
    use super::ec_point_content;

    /// A bare point that also reads as DER stays whole (it was cut to the DER reading's 63
    /// bytes, and its SubjectPublicKeyInfo then failed); a DER point is unwrapped.
    #[test]
    fn a_bare_point_that_reads_as_der_is_still_bare() {
        for len in [65usize, 97] {
            let mut bare = vec![0x04, (len - 2) as u8];
            bare.resize(len, 0xab);
            assert_eq!(ec_point_content(bare.clone()), bare, "{len}");
            let mut der = vec![0x04];
            if len > 127 {
                der.push(0x81);
            }
            der.push(len as u8);
            der.extend_from_slice(&bare);
            assert_eq!(ec_point_content(der), bare, "{len}");
        }
        let mut ed25519 = vec![0x04, 30];
        ed25519.resize(32, 0x11);
        assert_eq!(ec_point_content(ed25519.clone()), ed25519);
        let mut der = vec![0x04, 32];
        der.extend_from_slice(&ed25519);
        assert_eq!(ec_point_content(der), ed25519);
    }
}
