//! Key transport through the token: RSA wrapping key pairs for importing key material,
//! unwrapping imported material (RSA-OAEP, or RSA-OAEP of an ephemeral AES key followed by AES
//! key wrap with padding, the `CKM_RSA_AES_KEY_WRAP` layout), and wrapping exportable keys to a
//! recipient's RSA public key the same two ways. Private halves of wrapping keys are
//! non-extractable token objects; ephemeral keys are session objects destroyed before return
//! (a failed destroy fails the call, so the pooled session holding one is closed: see
//! `hsm::destroy_secret`).
//!
//! A private key crosses between token and host memory (PKCS#12 export and import, whose
//! password-based encryption no token does) under a [`HostKek`]: an AES-256 key the host
//! draws, hands the token as a session object for one wrap or unwrap, and uses on its side
//! with `aes-kw` (RFC 5649, the layout of `CKM_AES_KEY_WRAP_PAD`).

use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsOaepParams, PkcsOaepSource};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use zeroize::Zeroizing;

use super::quirks::Quirks;
use super::{destroy_secret, unavailable, Hsm, Obj};
use crate::error::{Error, Result};

/// The hash of RSA-OAEP (and its MGF1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OaepHash {
    Sha1,
    Sha256,
}

impl OaepHash {
    pub(super) fn mechanism(self) -> Mechanism<'static> {
        let (hash, mgf) = match self {
            OaepHash::Sha1 => (MechanismType::SHA1, PkcsMgfType::MGF1_SHA1),
            OaepHash::Sha256 => (MechanismType::SHA256, PkcsMgfType::MGF1_SHA256),
        };
        Mechanism::RsaPkcsOaep(PkcsOaepParams::new(hash, mgf, PkcsOaepSource::empty()))
    }

    pub(super) fn name(self) -> &'static str {
        match self {
            OaepHash::Sha1 => "CKM_RSA_PKCS_OAEP(SHA-1)",
            OaepHash::Sha256 => "CKM_RSA_PKCS_OAEP(SHA-256)",
        }
    }
}

/// How key material travels: RSA-OAEP alone (material up to the OAEP limit), or RSA-OAEP of
/// an ephemeral AES-256 key ‖ AES key wrap with padding (RFC 5649) of the material.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transport {
    pub hash: OaepHash,
    pub with_aes_key_wrap: bool,
}

/// Where unwrapped symmetric material goes, and its length in bytes (the key spec's: other
/// lengths are refused as [`Error::IncorrectKeyMaterial`]).
pub enum UnwrapInto<'a> {
    /// A sensitive AES token object with this `CKA_ID` (the `hsm` protection level).
    Token {
        id: &'a [u8],
        len: usize,
        exportable: bool,
    },
    /// Host memory (the `envelope` protection level seals it under the tenant KEK next).
    Host { len: usize },
}

/// Unwrapped material.
pub enum Unwrapped {
    /// A token object, with its world copy (wrapped by the root key: see [`super::world`];
    /// `None` where the module declines to wrap it).
    Object(Obj, Option<Vec<u8>>),
    Material(Zeroizing<Vec<u8>>),
}

/// What `finish_unwrap` makes (a handle of the session's epoch with its world copy, or
/// material).
enum Finished {
    Object(ObjectHandle, Option<Vec<u8>>),
    Material(Zeroizing<Vec<u8>>),
}

/// The AES template of an `hsm` key version made in, or unwrapped into, the token.
pub(super) fn aes_version_template(id: &[u8], extractable: bool) -> Vec<Attribute> {
    vec![
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::Sensitive(true),
        Attribute::Extractable(extractable),
        Attribute::Encrypt(true),
        Attribute::Decrypt(true),
        Attribute::Sign(false),
        Attribute::Verify(false),
        Attribute::Derive(false),
        Attribute::Wrap(false),
        Attribute::Unwrap(false),
        Attribute::Id(id.to_vec()),
        Attribute::Label(super::version_label(id)),
    ]
}

pub(super) fn incorrect(what: &str) -> Error {
    Error::IncorrectKeyMaterial(format!(
        "{what}: the wrapped material does not unwrap with this import token's wrapping key and algorithm, or is not a key of the key spec's length (32 bytes; 16 for AES_128_GCM)"
    ))
}

impl Hsm {
    /// Generate an RSA wrapping key pair for an import: the private half a non-extractable
    /// token object with `CKA_ID = id` that can only unwrap, with `CKM_RSA_PKCS_OAEP` only,
    /// and cannot be changed (`hsm::key_policy`); returns the public modulus and
    /// exponent (the public half is not kept) and the private handle.
    pub fn generate_import_key_pair(
        &self,
        id: &[u8],
        bits: u64,
    ) -> Result<(Obj, Vec<u8>, Vec<u8>)> {
        let public = [
            Attribute::Token(false),
            Attribute::ModulusBits(bits.into()),
            Attribute::PublicExponent(vec![0x01, 0x00, 0x01]),
            Attribute::Wrap(true),
            Attribute::Encrypt(true),
        ];
        let private = [
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Unwrap(true),
            Attribute::Decrypt(false),
            Attribute::Sign(false),
            Attribute::Id(id.to_vec()),
            Attribute::Label(id.to_vec()),
        ]
        .into_iter()
        // OAEP only, and nobody sets `CKA_DECRYPT` on it (`hsm::key_policy`).
        .chain(super::key_policy::import_private())
        .collect::<Vec<_>>();
        self.call_on_objects(
            "C_GenerateKeyPair",
            "CKM_RSA_PKCS_KEY_PAIR_GEN",
            |s, live| {
                let (pub_h, priv_h) = s
                    .generate_key_pair(&Mechanism::RsaPkcsKeyPairGen, &public, &private)
                    .map_err(unavailable("generate import key pair"))?;
                let attrs = s.get_attributes(
                    pub_h,
                    &[AttributeType::Modulus, AttributeType::PublicExponent],
                );
                let _ = s.destroy_object(pub_h);
                let (mut n, mut e) = (None, None);
                for a in attrs.unwrap_or_default() {
                    match a {
                        Attribute::Modulus(v) => n = Some(v),
                        Attribute::PublicExponent(v) => e = Some(v),
                        _ => {}
                    }
                }
                match n.zip(e) {
                    Some((n, e)) => Ok((live.obj(priv_h), n, e)),
                    None => {
                        let _ = s.destroy_object(priv_h);
                        Err(Error::HsmUnavailable)
                    }
                }
            },
        )
    }

    /// Test hook: what the user PIN gets the import wrapping key `private` to do beyond
    /// unwrapping (`hsm::key_policy`): (attempt, answer), `SET`, `COPIED` and `DECRYPTED`
    /// being successes.
    #[cfg(all(feature = "test-hooks", debug_assertions))]
    pub fn probe_import_key(&self, private: Obj) -> Result<Vec<(&'static str, String)>> {
        self.call_on_objects("C_SetAttributeValue", "none", |s, live| {
            let private = live.handle(private)?;
            let answer = |r: std::result::Result<(), cryptoki::error::Error>, ok: &str| match r {
                Ok(()) => ok.to_string(),
                Err(e) => e.to_string(),
            };
            let copy = s.copy_object(
                private,
                &[Attribute::Token(false), Attribute::Decrypt(true)],
            );
            if let Ok(copy) = copy {
                let _ = s.destroy_object(copy);
            }
            Ok(vec![
                (
                    "set CKA_DECRYPT",
                    answer(
                        s.update_attributes(private, &[Attribute::Decrypt(true)]),
                        "SET",
                    ),
                ),
                (
                    "decrypt with raw RSA",
                    answer(
                        s.decrypt(&Mechanism::RsaX509, private, &[1u8; 256])
                            .map(drop),
                        "DECRYPTED",
                    ),
                ),
                ("copy able to decrypt", answer(copy.map(drop), "COPIED")),
            ])
        })
    }

    /// Unwrap imported symmetric material with the import key `private` (modulus length
    /// `modulus_len` bytes). Tampered or malformed input, or material not of `into`'s length,
    /// is [`Error::IncorrectKeyMaterial`].
    pub fn unwrap_import(
        &self,
        private: Obj,
        modulus_len: usize,
        transport: Transport,
        wrapped: &[u8],
        into: UnwrapInto<'_>,
    ) -> Result<Unwrapped> {
        // First into a transient session object: the token does not record the length of
        // an unwrapped AES key (CKA_VALUE_LEN reads 0 and may not be set), so the length is
        // checked before the material becomes a version (see `finish_unwrap`). The object is
        // CKK_AES whatever the spec: for `CHACHA20_POLY1305` material (envelope only, read
        // out at once) it is just the container the unwrap mechanism fills.
        let template = [
            Attribute::Token(false),
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::Sensitive(matches!(into, UnwrapInto::Token { .. })),
            Attribute::Extractable(true),
            Attribute::Private(true),
            Attribute::Id(super::TRANSIENT_ID.to_vec()),
            Attribute::Label(super::TRANSIENT_ID.to_vec()),
        ];
        self.call_on_objects("C_UnwrapKey", transport.name(), |s, live| {
            let private = live.handle(private)?;
            let handle = if transport.with_aes_key_wrap {
                if wrapped.len() <= modulus_len {
                    return Err(incorrect("too short for RSA_AES_KEY_WRAP"));
                }
                let (head, tail) = wrapped.split_at(modulus_len);
                let ephemeral = unwrap_ephemeral(s, live.quirks, private, transport.hash, head)?;
                let out = s.unwrap_key(&Mechanism::AesKeyWrapPad, ephemeral, tail, &template);
                destroy_secret(s, ephemeral, "destroy an import's ephemeral key")?;
                out
            } else {
                s.unwrap_key(&transport.hash.mechanism(), private, wrapped, &template)
            };
            let handle = match handle {
                Ok(h) => h,
                Err(e) if live.quirks.rejects_material(&e) => {
                    return Err(incorrect("rejected by the HSM"))
                }
                Err(e) => return Err(unavailable("unwrap imported material")(e)),
            };
            Ok(
                match finish_unwrap(s, live.quirks, live.root.wrapping_key(), handle, into)? {
                    Finished::Object(h, copy) => Unwrapped::Object(live.obj(h), copy),
                    Finished::Material(m) => Unwrapped::Material(m),
                },
            )
        })
    }

    /// Wrap the AES key `key` (extractable) to a recipient's RSA public key.
    pub fn wrap_for_recipient(
        &self,
        key: Obj,
        modulus: &[u8],
        exponent: &[u8],
        transport: Transport,
    ) -> Result<Vec<u8>> {
        // The recipient's key (and the ephemeral key) are objects: an object call.
        self.call_on_objects("C_WrapKey", transport.name(), |s, live| {
            wrap_to_recipient(s, live.handle(key)?, (modulus, exponent), transport)
        })
    }

    /// Wrap `material` (`envelope` key bytes: AES, or ChaCha20 as it is) to a recipient's RSA
    /// public key, through a transient, extractable AES session object holding it, made and
    /// destroyed in the same pooled session: a failed destroy fails the call, so the session
    /// is closed and the object with it (`destroy_secret`). The template's copy of the
    /// material is wiped as the material will be.
    pub fn wrap_material_for_recipient(
        &self,
        material: &[u8],
        (modulus, exponent): (&[u8], &[u8]),
        transport: Transport,
    ) -> Result<Vec<u8>> {
        self.call_on_objects("C_WrapKey", transport.name(), |s, _live| {
            let mut template = [
                Attribute::Token(false),
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::AES),
                Attribute::Value(material.to_vec()),
                Attribute::Sensitive(true),
                Attribute::Extractable(true),
                Attribute::Private(true),
                Attribute::Id(super::TRANSIENT_ID.to_vec()),
                Attribute::Label(super::TRANSIENT_ID.to_vec()),
            ];
            let created = s.create_object(&template);
            for a in &mut template {
                if let Attribute::Value(v) = a {
                    zeroize::Zeroize::zeroize(v);
                }
            }
            let transient = created.map_err(unavailable("transient key"))?;
            let out = wrap_to_recipient(s, transient, (modulus, exponent), transport);
            destroy_secret(s, transient, "destroy the transient key")?;
            out
        })
    }
}

impl Transport {
    /// The mechanism's name, for spans and metrics.
    fn name(self) -> &'static str {
        if self.with_aes_key_wrap {
            "CKM_RSA_PKCS_OAEP+CKM_AES_KEY_WRAP_PAD"
        } else {
            self.hash.name()
        }
    }
}

/// Wrap `key` (extractable) in session `s` to the RSA public key `(modulus, exponent)`, a
/// session object made for this call and destroyed again (a public key: nothing secret).
fn wrap_to_recipient(
    s: &Session,
    key: ObjectHandle,
    (modulus, exponent): (&[u8], &[u8]),
    transport: Transport,
) -> Result<Vec<u8>> {
    let recipient = s
        .create_object(&[
            Attribute::Token(false),
            Attribute::Class(ObjectClass::PUBLIC_KEY),
            Attribute::KeyType(KeyType::RSA),
            Attribute::Modulus(modulus.to_vec()),
            Attribute::PublicExponent(exponent.to_vec()),
            Attribute::Wrap(true),
            Attribute::Encrypt(true),
        ])
        .map_err(unavailable("recipient public key"))?;
    let out = if transport.with_aes_key_wrap {
        wrap_with_ephemeral(s, recipient, key, transport.hash)
    } else {
        s.wrap_key(&transport.hash.mechanism(), recipient, key)
            .map_err(unavailable("wrap for recipient"))
    };
    let _ = s.destroy_object(recipient);
    out
}

/// An AES-256 key shared by host and token for one transfer of a private key (module docs).
/// Wiped on drop.
#[derive(Clone)]
pub struct HostKek(Zeroizing<[u8; 32]>);

impl HostKek {
    /// A fresh key from the OS random generator.
    pub fn new() -> Result<Self> {
        use ring::rand::SecureRandom;
        let mut key = Zeroizing::new([0u8; 32]);
        ring::rand::SystemRandom::new()
            .fill(key.as_mut())
            .map_err(|_| Error::Internal)?;
        Ok(HostKek(key))
    }

    /// `plain` under this key, AES key wrap with padding.
    pub fn wrap(&self, plain: &[u8]) -> Result<Vec<u8>> {
        aes_kw::KekAes256::from(*self.0)
            .wrap_with_padding_vec(plain)
            .map_err(|_| Error::Internal)
    }

    fn unwrap(&self, wrapped: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        aes_kw::KekAes256::from(*self.0)
            .unwrap_with_padding_vec(wrapped)
            .map(Zeroizing::new)
            .map_err(|_| Error::Internal)
    }

    /// This key as a session object of `s` that may do `usage` (`Wrap` or `Unwrap`) only.
    pub(super) fn session_object(&self, s: &Session, usage: Attribute) -> Result<ObjectHandle> {
        let mut template = [
            Attribute::Token(false),
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::Value(self.0.to_vec()),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Private(true),
            usage,
        ];
        let created = s.create_object(&template);
        // The template's copy of the key is wiped as the key itself will be.
        for a in &mut template {
            if let Attribute::Value(v) = a {
                zeroize::Zeroize::zeroize(v);
            }
        }
        created.map_err(unavailable("host-shared transfer key"))
    }
}

impl Hsm {
    /// The PKCS#8 `PrivateKeyInfo` of `key`, an extractable private key, in zeroized host
    /// memory (module docs: for PKCS#12 export only).
    pub fn reveal_private(&self, key: Obj) -> Result<Zeroizing<Vec<u8>>> {
        let kek = HostKek::new()?;
        let wrapped = self.call_on_objects("C_WrapKey", "CKM_AES_KEY_WRAP_PAD", |s, live| {
            let key = live.handle(key)?;
            let ephemeral = kek.session_object(s, Attribute::Wrap(true))?;
            let out = s
                .wrap_key(&Mechanism::AesKeyWrapPad, ephemeral, key)
                .map_err(unavailable("wrap private key for the host"));
            destroy_secret(s, ephemeral, "destroy the host KEK's session copy")?;
            out
        })?;
        kek.unwrap(&wrapped)
    }
}

pub(super) fn unwrap_ephemeral(
    s: &Session,
    quirks: Quirks,
    private: ObjectHandle,
    hash: OaepHash,
    wrapped: &[u8],
) -> Result<ObjectHandle> {
    let template = [
        Attribute::Token(false),
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Unwrap(true),
    ];
    match s.unwrap_key(&hash.mechanism(), private, wrapped, &template) {
        Ok(h) => Ok(h),
        Err(e) if quirks.rejects_material(&e) => Err(incorrect("the RSA-OAEP part")),
        Err(e) => Err(unavailable("unwrap ephemeral key")(e)),
    }
}

fn wrap_with_ephemeral(
    s: &Session,
    recipient: ObjectHandle,
    key: ObjectHandle,
    hash: OaepHash,
) -> Result<Vec<u8>> {
    let ephemeral = s
        .generate_key(
            &Mechanism::AesKeyGen,
            &[
                Attribute::Token(false),
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::AES),
                Attribute::ValueLen(32.into()),
                Attribute::Sensitive(true),
                Attribute::Extractable(true),
                Attribute::Wrap(true),
                Attribute::Id(super::TRANSIENT_ID.to_vec()),
                Attribute::Label(super::TRANSIENT_ID.to_vec()),
            ],
        )
        .map_err(unavailable("ephemeral key"))?;
    let out = (|| {
        let mut head = s
            .wrap_key(&hash.mechanism(), recipient, ephemeral)
            .map_err(unavailable("wrap ephemeral key"))?;
        let tail = s
            .wrap_key(&Mechanism::AesKeyWrapPad, ephemeral, key)
            .map_err(unavailable("wrap key under ephemeral"))?;
        head.extend_from_slice(&tail);
        Ok(head)
    })();
    // Extractable, and with the recipient's part it opens the wrapped key: see
    // `destroy_secret`.
    destroy_secret(s, ephemeral, "destroy the ephemeral key")?;
    out
}

/// Turn the transient unwrapped object into what was asked for, if it has the length asked
/// for: for host delivery read its value; for the token, wrap it under an ephemeral AES key
/// with `CKM_AES_KEY_WRAP` (RFC 3394: `len + 8` bytes out exactly when `len` went in) and
/// unwrap that into the version's token object, so the material never leaves the HSM, and
/// wrap it with the root key (`root`) into the version's world copy. The transient object is
/// destroyed either way.
fn finish_unwrap(
    s: &Session,
    quirks: Quirks,
    root: Option<ObjectHandle>,
    transient: ObjectHandle,
    into: UnwrapInto<'_>,
) -> Result<Finished> {
    let out = match into {
        UnwrapInto::Host { len } => {
            let value = s
                .get_attributes(transient, &[AttributeType::Value])
                .map_err(unavailable("read unwrapped material"))?
                .into_iter()
                .find_map(|a| match a {
                    Attribute::Value(v) => Some(Zeroizing::new(v)),
                    _ => None,
                });
            match value {
                Some(v) if v.len() == len => Ok(Finished::Material(v)),
                _ => Err(incorrect("wrong length")),
            }
        }
        UnwrapInto::Token {
            id,
            len,
            exportable,
        } => reseal_into_token(s, quirks, transient, id, len, exportable).and_then(|h| {
            let usage = super::world::Usage {
                encrypt: true,
                extractable: exportable,
                ..super::world::Usage::default()
            };
            let kind = (super::world::CopyKind::Aes, usage);
            let copy = match root {
                Some(root) => super::world::wrap_transient(s, root, transient, kind),
                None => Ok(None),
            };
            match copy {
                Ok(copy) => Ok(Finished::Object(h, copy)),
                Err(e) => {
                    let _ = s.destroy_object(h);
                    Err(e)
                }
            }
        }),
    };
    // It holds the imported material (readable where it goes to host memory): see
    // `destroy_secret`. A token object already made of it is not left behind.
    if let Err(e) = destroy_secret(s, transient, "destroy imported material's transient key") {
        if let Ok(Finished::Object(h, _)) = &out {
            let _ = s.destroy_object(*h);
        }
        return Err(e);
    }
    out
}

fn reseal_into_token(
    s: &Session,
    quirks: Quirks,
    transient: ObjectHandle,
    id: &[u8],
    len: usize,
    exportable: bool,
) -> Result<ObjectHandle> {
    let ephemeral = s
        .generate_key(
            &Mechanism::AesKeyGen,
            &[
                Attribute::Token(false),
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::AES),
                Attribute::ValueLen(32.into()),
                Attribute::Sensitive(true),
                Attribute::Extractable(false),
                Attribute::Wrap(true),
                Attribute::Unwrap(true),
            ],
        )
        .map_err(unavailable("ephemeral key"))?;
    let out = (|| {
        let wrapped = match s.wrap_key(&Mechanism::AesKeyWrap, ephemeral, transient) {
            Ok(w) if w.len() == len + 8 => Zeroizing::new(w),
            Ok(_) => return Err(incorrect("wrong length")),
            Err(e) if quirks.rejects_material(&e) => return Err(incorrect("wrong length")),
            Err(e) => return Err(unavailable("measure unwrapped key")(e)),
        };
        let template = aes_version_template(id, exportable);
        s.unwrap_key(&Mechanism::AesKeyWrap, ephemeral, &wrapped, &template)
            .map_err(unavailable("store imported key"))
    })();
    if let Err(e) = destroy_secret(s, ephemeral, "destroy an import's ephemeral key") {
        // Nor is the token object just made of it left behind.
        if let Ok(h) = out {
            let _ = s.destroy_object(h);
        }
        return Err(e);
    }
    out
}
