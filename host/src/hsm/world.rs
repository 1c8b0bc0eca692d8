//! The security world: what makes an `hsm` key version usable on every node while its
//! material never exists outside an HSM unwrapped.
//!
//! Every node's token holds the same root key (placed there by the key ceremony, see
//! [`super::ceremony`]). When a node makes the material of an `hsm` version (generated, or
//! imported into an `hsm` key), it also wraps the secret or private key with the root key
//! (`CKM_AES_KEY_WRAP_PAD`, RFC 5649, as tenant KEKs are wrapped) in the same call, and the
//! version's row keeps that *world copy* (`key_versions.hsm_wrapped`). Its own token keeps the
//! token object (found by `CKA_ID` as before). Any other node asked to use the version, whose
//! token has no object with that `CKA_ID`, unwraps the world copy inside its own token into a
//! *session* object ([`Hsm::unwrap_world_copy`]; `CKA_TOKEN` false, owned by the anchor
//! session: it lives in that process's HSM memory until destroyed or until the login ends,
//! never in the token's files), with the same `CKA_ID`, label and usage attributes as the
//! token object, and uses that. The material is never unwrapped into host memory.
//!
//! # The world copy (`key_versions.hsm_wrapped`)
//! ```text
//! "kpw1" ‖ kind (1 byte) ‖ usage (1 byte) ‖ public length (u16, big-endian) ‖ public ‖ wrapped
//! ```
//! - kind: 1 AES secret key, 2 generic secret (HMAC), 3 RSA key pair, 4 EC key pair (NIST
//!   curves), 5 finite-field DH key pair (RFC 7919 groups);
//! - usage: bit 0 encrypt/decrypt, bit 1 sign/verify, bit 2 derive (ECDH, DH), bit 7 extractable
//!   (the key was created `exportable`: its objects may be wrapped for export, on every node);
//!   the objects a node makes from the copy carry exactly these usage attributes, those the
//!   creating node gave its token objects;
//! - public: for a key pair, its public key as a DER SubjectPublicKeyInfo (not secret; the
//!   private-key object of an EC key carries no point, so the public object cannot be made
//!   without it); empty for secret keys;
//! - wrapped: `CKM_AES_KEY_WRAP_PAD` under the root key of the key's value (`CKA_VALUE`), or
//!   of the private key as the token encodes it for wrapping (PKCS#8 `PrivateKeyInfo`).
//!
//! Crypto-shredding a version destroys its token object and every session object of it on
//! the node that shreds, and sets `hsm_wrapped` to NULL in the transaction that marks the
//! version destroyed (or, for imported material deleted or expired, that clears its
//! material). The other nodes drop their session objects, and once the key is being
//! destroyed or is destroyed also the token objects of it their own tokens hold (the version
//! was made there but destroyed by another node's scheduler), when told
//! (`Keyring::forget_version`, `Keyring::forget_key`: cross-node invalidation) or, for the
//! versions they used since they started, at their next scheduler pass
//! (`Keyring::sweep_session_objects`). Until then no node uses them: every use reads the
//! version's row first, and a destroyed row names no object and holds no world copy.
//!
//! # Attributes, and why
//! A key that can be wrapped once must be extractable at that moment, and PKCS#11 lets
//! `CKA_EXTRACTABLE` go from true to false but never back. So the token object of a new
//! version is generated sensitive and *extractable*, wrapped with the root key in the same
//! call (one session, with the turn on object calls: nothing else of keyplane's can touch it
//! meanwhile), and then made non-extractable (`C_SetAttributeValue`), unless the key is
//! `exportable`. From then on the token object is what it was before this model existed:
//! sensitive, non-extractable, `CKA_LOCAL` and `CKA_ALWAYS_SENSITIVE` (it was generated in
//! the token and never revealed), only `CKA_NEVER_EXTRACTABLE` is false, truthfully: its
//! material left the token once, wrapped by the root key. If the module refuses to clear
//! `CKA_EXTRACTABLE`, the objects are destroyed and the creation fails: a non-exportable key
//! is never left extractable. Where the root key wraps nothing (the `OaepKem` scheme) there is
//! no world copy, and the key is made non-extractable all the same. A crash between generation and that step leaves an extractable
//! object that no row names, which garbage collection destroys.
//!
//! Rejected alternatives:
//! - `CKA_EXTRACTABLE` true for good, with `CKA_WRAP_WITH_TRUSTED` true so that only a key
//!   marked `CKA_TRUSTED` could wrap it. The root key cannot be made `CKA_TRUSTED`: only the
//!   security officer can set it, and SoftHSM2 (2.6.1) does not let the SO see private
//!   objects (the root key is `CKA_PRIVATE`: an SO session finds no root key), while the
//!   user setting it answers `CKR_ATTRIBUTE_READ_ONLY`; wrapping a wrap-with-trusted key with
//!   the (untrusted) root key answers `CKR_KEY_NOT_WRAPPABLE` (both checked against the real
//!   token by the `probe-extraction` test hook, tests/ceremony.rs). A separate trusted
//!   wrapping key would have to be a public object (the SO can make only those), usable
//!   without a login.
//!   And without `CKA_WRAP_WITH_TRUSTED`, an object left extractable could be wrapped by
//!   anyone holding the user PIN with a key of a value they chose, for as long as it exists.
//! - Generating a transient session key, wrapping it, and unwrapping the world copy into the
//!   token object: works, but the token object is then neither `CKA_LOCAL` nor
//!   `CKA_ALWAYS_SENSITIVE`, and SoftHSM2 does not record `CKA_VALUE_LEN` for an unwrapped
//!   key (it reads 0), so an operator listing the token can no longer tell AES-128 from
//!   AES-256.
//!
//! Imported material (`import-key-material` into an `hsm` key) is unwrapped from the
//! importer's transport into a transient, extractable session object first (see
//! [`super::wrapping`]); the world copy is wrapped from that, and the token object is made
//! from it as before. An imported key pair's private key is unwrapped extractable, wrapped
//! with the root key, then made non-extractable as a generated one is.
//!
//! Session objects made from a world copy on another node are sensitive and non-extractable
//! (extractable only for `exportable` keys, so `export-key` works on every node), private,
//! and carry the copy's usage attributes, `CKA_ID` and label.
//!
//! # What stays single-node
//! - Versions created before this model (no world copy: their token objects were made
//!   non-extractable, and can never be wrapped). They keep working on the node whose token
//!   holds them; other nodes answer `HsmUnavailable` for them (and log why).
//! - `ED25519` versions: SoftHSM2 cannot wrap an Ed25519 private key
//!   (`CKR_KEY_NOT_WRAPPABLE`), so none gets a world copy.
//! - Any version whose kind a module refuses to wrap (logged when it is made).
//!
//! Descriptions of a key's versions say which are usable on every node (`cluster_wide`).
//!
//! # Trust
//! The world copy is as safe as the root key: whoever holds a token with the root key and
//! its user PIN can unwrap it with a template of their choosing, as they can tenant KEKs. A
//! root key made (or imported) now takes only AES-GCM and AES key wrap and unwraps only into
//! sensitive objects (`hsm::key_policy`), so no copy unwraps into a readable object and none
//! is undone by hand with AES-ECB; but it cannot refuse an extractable one (exportable
//! keys' copies are unwrapped extractable), and an extractable object can be wrapped out
//! with a key of the user's own: the user PIN with the database still reaches the material
//! (docs/hsm.md). A root key made before has neither restriction. The row's key id and version are not bound to the
//! wrapped bytes (`CKM_AES_KEY_WRAP_PAD` has no associated data), so someone who can write
//! the database could move one version's copy into another's row, as they could rewrite
//! grants and key policies.

use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;

use super::{unavailable, Hsm, Obj};
use crate::algorithms::public_key::{parts_from_spki, PublicParts};
use crate::error::{Error, Result};

/// The first bytes of a world copy (its format).
pub const FORMAT: [u8; 4] = *b"kpw1";

/// What a world copy holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyKind {
    /// An AES secret key (`AES_*_GCM`).
    Aes,
    /// A generic secret (HMAC).
    GenericSecret,
    /// An RSA key pair's private key.
    Rsa,
    /// An EC (NIST curve) key pair's private key.
    Ec,
    /// A finite-field Diffie-Hellman (RFC 7919 group) key pair's private key.
    Dh,
}

impl CopyKind {
    fn code(self) -> u8 {
        match self {
            CopyKind::Aes => 1,
            CopyKind::GenericSecret => 2,
            CopyKind::Rsa => 3,
            CopyKind::Ec => 4,
            CopyKind::Dh => 5,
        }
    }

    fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            1 => CopyKind::Aes,
            2 => CopyKind::GenericSecret,
            3 => CopyKind::Rsa,
            4 => CopyKind::Ec,
            5 => CopyKind::Dh,
            _ => return None,
        })
    }

    /// A key pair (the copy holds its private key and its public key).
    pub fn is_pair(self) -> bool {
        matches!(self, CopyKind::Rsa | CopyKind::Ec | CopyKind::Dh)
    }

    fn key_type(self) -> KeyType {
        match self {
            CopyKind::Aes => KeyType::AES,
            CopyKind::GenericSecret => KeyType::GENERIC_SECRET,
            CopyKind::Rsa => KeyType::RSA,
            CopyKind::Ec => KeyType::EC,
            CopyKind::Dh => KeyType::DH,
        }
    }
}

/// The usage attributes of a version's objects, and whether its secret or private key may be
/// wrapped for export (`exportable` keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    /// Secret key: `CKA_ENCRYPT` and `CKA_DECRYPT`; private key: `CKA_DECRYPT`; public key:
    /// `CKA_ENCRYPT`.
    pub encrypt: bool,
    /// Secret key: `CKA_SIGN` and `CKA_VERIFY`; private key: `CKA_SIGN`; public key:
    /// `CKA_VERIFY`.
    pub sign: bool,
    /// Private key: `CKA_DERIVE` (ECDH).
    pub derive: bool,
    /// Secret or private key: `CKA_EXTRACTABLE`.
    pub extractable: bool,
}

const ENCRYPT: u8 = 0x01;
const SIGN: u8 = 0x02;
const DERIVE: u8 = 0x04;
const EXTRACTABLE: u8 = 0x80;

impl Usage {
    fn bits(self) -> u8 {
        let mut b = 0;
        for (on, bit) in [
            (self.encrypt, ENCRYPT),
            (self.sign, SIGN),
            (self.derive, DERIVE),
            (self.extractable, EXTRACTABLE),
        ] {
            if on {
                b |= bit;
            }
        }
        b
    }

    fn from_bits(b: u8) -> Option<Self> {
        if b & !(ENCRYPT | SIGN | DERIVE | EXTRACTABLE) != 0 {
            return None;
        }
        Some(Usage {
            encrypt: b & ENCRYPT != 0,
            sign: b & SIGN != 0,
            derive: b & DERIVE != 0,
            extractable: b & EXTRACTABLE != 0,
        })
    }
}

/// A world copy, as stored (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorldCopy<'a> {
    pub kind: CopyKind,
    pub usage: Usage,
    /// A key pair's public key (DER SubjectPublicKeyInfo); empty for secret keys.
    pub public: &'a [u8],
    /// The secret or private key wrapped by the root key (`CKM_AES_KEY_WRAP_PAD`).
    pub wrapped: &'a [u8],
}

fn malformed(what: &'static str) -> Error {
    tracing::error!(what, "a key version's stored world copy is malformed");
    Error::Internal
}

impl<'a> WorldCopy<'a> {
    /// The stored form.
    pub fn encode(&self) -> Result<Vec<u8>> {
        let public_len = u16::try_from(self.public.len()).map_err(|_| Error::Internal)?;
        let mut out = Vec::with_capacity(8 + self.public.len() + self.wrapped.len());
        out.extend_from_slice(&FORMAT);
        out.push(self.kind.code());
        out.push(self.usage.bits());
        out.extend_from_slice(&public_len.to_be_bytes());
        out.extend_from_slice(self.public);
        out.extend_from_slice(self.wrapped);
        Ok(out)
    }

    /// Parse a stored world copy (total: anything malformed is an error, never a panic).
    pub fn parse(bytes: &'a [u8]) -> Result<Self> {
        let rest = bytes
            .strip_prefix(&FORMAT)
            .ok_or_else(|| malformed("unknown format"))?;
        let [kind, usage, len_hi, len_lo, rest @ ..] = rest else {
            return Err(malformed("too short"));
        };
        let kind = CopyKind::from_code(*kind).ok_or_else(|| malformed("unknown kind"))?;
        let usage = Usage::from_bits(*usage).ok_or_else(|| malformed("unknown usage bits"))?;
        let public_len = u16::from_be_bytes([*len_hi, *len_lo]) as usize;
        let (public, wrapped) = rest
            .split_at_checked(public_len)
            .ok_or_else(|| malformed("public key cut short"))?;
        if kind.is_pair() == public.is_empty() {
            return Err(malformed(
                "a public key where none belongs, or none where one does",
            ));
        }
        // RFC 5649: at least two 64-bit blocks, whole blocks.
        if wrapped.len() < 16 || wrapped.len() % 8 != 0 {
            return Err(malformed("wrapped key of an impossible length"));
        }
        Ok(WorldCopy {
            kind,
            usage,
            public,
            wrapped,
        })
    }
}

/// The template of a secret or private key unwrapped from a world copy into a session
/// object: sensitive, private, extractable only for exportable keys, the copy's usage.
fn unwrap_template(copy: &WorldCopy<'_>, id: &[u8]) -> Vec<Attribute> {
    let u = copy.usage;
    let class = if copy.kind.is_pair() {
        ObjectClass::PRIVATE_KEY
    } else {
        ObjectClass::SECRET_KEY
    };
    let mut t = vec![
        Attribute::Token(false),
        Attribute::Private(true),
        Attribute::Class(class),
        Attribute::KeyType(copy.kind.key_type()),
        Attribute::Sensitive(true),
        Attribute::Extractable(u.extractable),
        Attribute::Id(id.to_vec()),
        Attribute::Label(super::version_label(id)),
    ];
    if copy.kind.is_pair() {
        t.extend([
            Attribute::Sign(u.sign),
            Attribute::Decrypt(u.encrypt),
            Attribute::Derive(u.derive),
            Attribute::Unwrap(false),
        ]);
    } else {
        t.extend([
            Attribute::Encrypt(u.encrypt),
            Attribute::Decrypt(u.encrypt),
            Attribute::Sign(u.sign),
            Attribute::Verify(u.sign),
            Attribute::Derive(false),
            Attribute::Wrap(false),
            Attribute::Unwrap(false),
        ]);
    }
    t
}

/// The template of a key pair's public-key session object, from the copy's public key.
fn public_template(copy: &WorldCopy<'_>, id: &[u8]) -> Result<Vec<Attribute>> {
    let (params, parts) = parts_from_spki(copy.public).map_err(|_| malformed("public key"))?;
    let mut t = vec![
        Attribute::Token(false),
        Attribute::Private(false),
        Attribute::Class(ObjectClass::PUBLIC_KEY),
        Attribute::KeyType(copy.kind.key_type()),
        Attribute::Verify(copy.usage.sign),
        Attribute::Encrypt(copy.usage.encrypt),
        Attribute::Derive(false),
        Attribute::Wrap(false),
        Attribute::Id(id.to_vec()),
        Attribute::Label(super::version_label(id)),
    ];
    match (copy.kind, parts, params) {
        (CopyKind::Rsa, PublicParts::Rsa { modulus, exponent }, None) => {
            t.push(Attribute::Modulus(modulus));
            t.push(Attribute::PublicExponent(exponent));
        }
        (CopyKind::Ec, PublicParts::Ec(point), Some(params)) => {
            use der::Encode;
            let encoded = der::asn1::OctetString::new(point)
                .and_then(|o| o.to_der())
                .map_err(|_| Error::Internal)?;
            t.push(Attribute::EcParams(params));
            t.push(Attribute::EcPoint(encoded));
        }
        (CopyKind::Dh, PublicParts::Dh(y), Some(params)) => {
            use der::Decode;
            let params = Vec::<der::asn1::UintRef<'_>>::from_der(&params)
                .map_err(|_| malformed("group parameters"))?;
            let [prime, base] = params.as_slice() else {
                return Err(malformed("group parameters"));
            };
            t.push(Attribute::Prime(prime.as_bytes().to_vec()));
            t.push(Attribute::Base(base.as_bytes().to_vec()));
            t.push(Attribute::Value(y));
        }
        _ => return Err(malformed("public key of another kind")),
    }
    Ok(t)
}

/// Whether `e` is the module declining an operation (this kind of key cannot be wrapped, an
/// attribute cannot be changed), rather than the session or token failing.
fn declined(e: &CkError) -> bool {
    matches!(
        e,
        CkError::Pkcs11(
            RvError::KeyNotWrappable
                | RvError::KeyUnextractable
                | RvError::KeyFunctionNotPermitted
                | RvError::KeyTypeInconsistent
                | RvError::KeySizeRange
                | RvError::MechanismInvalid
                | RvError::MechanismParamInvalid
                | RvError::FunctionNotSupported
                | RvError::WrappingKeyTypeInconsistent
                | RvError::WrappingKeySizeRange
                | RvError::AttributeReadOnly
                | RvError::AttributeValueInvalid
                | RvError::TemplateInconsistent
                | RvError::ActionProhibited,
            _
        )
    )
}

/// Seal a version's secret or private key `target`, just made extractable in session `s`:
/// wrap it with the root key into a world copy of `kind` (with the pair's `public` key), then
/// make it non-extractable unless `usage.extractable` (see the module docs). Returns the
/// stored form of the copy, or `None` where the module declines to wrap this kind of key (the
/// version is then usable on this node only), or where the root key wraps nothing (`root`
/// `None`: the `OaepKem` scheme of `hsm::sealing`). Either way a key that is not exportable
/// leaves here non-extractable: its callers make it extractable for the wrap whatever the
/// scheme (an AES version, an imported private key). An error leaves `target` to the caller
/// to destroy.
pub(super) fn seal(
    s: &Session,
    root: Option<ObjectHandle>,
    target: ObjectHandle,
    (kind, usage): (CopyKind, Usage),
    public: &[u8],
) -> Result<Option<Vec<u8>>> {
    let copy = match root {
        Some(root) => wrap_with_root(s, root, target, kind, usage, public)?,
        None => None,
    };
    // Cleared only where set: a module refuses to set `CKA_EXTRACTABLE` on a key that is not
    // (SoftHSM2: `CKR_ATTRIBUTE_READ_ONLY`), and a key made for a module without world copies
    // is made non-extractable from the start.
    if !usage.extractable && is_extractable(s, target) {
        s.update_attributes(target, &[Attribute::Extractable(false)])
            .map_err(|e| {
                tracing::error!(error = %e, "the HSM refused to make a new key version non-extractable; the version is not created");
                Error::HsmUnavailable
            })?;
    }
    Ok(copy)
}

/// Whether `key` is extractable (taken as so when the module does not say: the clearing that
/// follows then fails loudly rather than leave it unknown).
fn is_extractable(s: &Session, key: ObjectHandle) -> bool {
    match s.get_attributes(key, &[cryptoki::object::AttributeType::Extractable]) {
        Ok(attributes) => !attributes
            .iter()
            .any(|a| matches!(a, Attribute::Extractable(false))),
        Err(_) => true,
    }
}

/// The world copy of `target` (see [`seal`]), or `None` where the module declines.
fn wrap_with_root(
    s: &Session,
    root: ObjectHandle,
    target: ObjectHandle,
    kind: CopyKind,
    usage: Usage,
    public: &[u8],
) -> Result<Option<Vec<u8>>> {
    let wrapped = crate::telemetry::spans::hsm("C_WrapKey", "CKM_AES_KEY_WRAP_PAD", || {
        s.wrap_key(&Mechanism::AesKeyWrapPad, root, target)
    });
    match wrapped {
        Ok(wrapped) => Ok(Some(
            WorldCopy {
                kind,
                usage,
                public,
                wrapped: &wrapped,
            }
            .encode()?,
        )),
        Err(e) if declined(&e) => {
            tracing::warn!(error = %e, ?kind, "the HSM does not wrap this kind of key with the root key: the key version is usable only on this node");
            Ok(None)
        }
        Err(e) => Err(unavailable("wrap a key version with the root key")(e)),
    }
}

/// Wrap `transient` (an extractable session object holding imported material) with the root
/// key into a world copy of `kind`; `None` where the module declines.
pub(super) fn wrap_transient(
    s: &Session,
    root: ObjectHandle,
    transient: ObjectHandle,
    (kind, usage): (CopyKind, Usage),
) -> Result<Option<Vec<u8>>> {
    match s.wrap_key(&Mechanism::AesKeyWrapPad, root, transient) {
        Ok(wrapped) => Ok(Some(
            WorldCopy {
                kind,
                usage,
                public: &[],
                wrapped: &wrapped,
            }
            .encode()?,
        )),
        Err(e) if declined(&e) => {
            tracing::warn!(error = %e, ?kind, "the HSM does not wrap imported material with the root key: the key version is usable only on this node");
            Ok(None)
        }
        Err(e) => Err(unavailable("wrap imported material with the root key")(e)),
    }
}

impl Hsm {
    /// Make the object of `class` of the version whose objects carry `CKA_ID` `id` from its
    /// world copy `copy`, as a session object of the anchor session (see the module docs): a
    /// secret or private key is unwrapped with the root key inside the token, a public key
    /// is created from the copy's public key. A copy that does not unwrap (altered, or a
    /// token with another root key) is [`Error::Internal`].
    pub fn unwrap_world_copy(&self, id: &[u8], class: ObjectClass, copy: &[u8]) -> Result<Obj> {
        let copy = WorldCopy::parse(copy)?;
        let expected = matches!(
            (copy.kind.is_pair(), class),
            (false, ObjectClass::SECRET_KEY)
                | (true, ObjectClass::PRIVATE_KEY | ObjectClass::PUBLIC_KEY)
        );
        if !expected {
            tracing::error!(?class, kind = ?copy.kind, "asked for an object a key version does not have");
            return Err(Error::Internal);
        }
        if class == ObjectClass::PUBLIC_KEY {
            let template = public_template(&copy, id)?;
            return self.call_anchor_on_objects("C_CreateObject", "none", |anchor, live| {
                anchor
                    .create_object(&template)
                    .map(|h| live.obj(h))
                    .map_err(unavailable("public key of a world copy"))
            });
        }
        let template = unwrap_template(&copy, id);
        self.call_anchor_on_objects("C_UnwrapKey", "CKM_AES_KEY_WRAP_PAD", |anchor, live| {
            let root = live.root.wrapping_key().ok_or_else(|| {
                tracing::error!("a key version's world copy cannot be unwrapped: this token's root key wraps nothing");
                Error::HsmUnavailable
            })?;
            match anchor.unwrap_key(
                &Mechanism::AesKeyWrapPad,
                root,
                copy.wrapped,
                &template,
            ) {
                Ok(h) => Ok(live.obj(h)),
                Err(e) if live.quirks.rejects_material(&e) => {
                    tracing::error!(error = %e, "a key version's world copy does not unwrap with this node's root key (altered, or this token holds another cluster's root key)");
                    Err(Error::Internal)
                }
                Err(e) => Err(unavailable("unwrap a world copy")(e)),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(kind: CopyKind, public: &[u8]) -> Vec<u8> {
        WorldCopy {
            kind,
            usage: Usage {
                encrypt: true,
                sign: false,
                derive: false,
                extractable: true,
            },
            public,
            wrapped: &[9u8; 40],
        }
        .encode()
        .unwrap()
    }

    #[test]
    fn a_world_copy_round_trips() {
        let bytes = sample(CopyKind::Aes, &[]);
        assert_eq!(&bytes[..4], b"kpw1");
        assert_eq!(bytes.len(), 8 + 40);
        let parsed = WorldCopy::parse(&bytes).unwrap();
        assert_eq!(parsed.kind, CopyKind::Aes);
        assert!(parsed.usage.encrypt && parsed.usage.extractable && !parsed.usage.sign);
        assert!(parsed.public.is_empty());
        assert_eq!(parsed.wrapped, &[9u8; 40]);

        let public = [1u8, 2, 3];
        let bytes = sample(CopyKind::Rsa, &public);
        let parsed = WorldCopy::parse(&bytes).unwrap();
        assert_eq!((parsed.kind, parsed.public), (CopyKind::Rsa, &public[..]));
        assert_eq!(parsed.wrapped.len(), 40);
        for bits in 0..=u8::MAX {
            match Usage::from_bits(bits) {
                Some(u) => assert_eq!(u.bits(), bits),
                None => assert_ne!(bits & 0x78, 0),
            }
        }
    }

    #[test]
    fn malformed_world_copies_are_refused_never_a_panic() {
        let good = sample(CopyKind::Ec, &[7u8; 91]);
        // Every truncation, and every single-byte change of the header.
        for n in 0..good.len() {
            let _ = WorldCopy::parse(&good[..n]);
        }
        assert!(WorldCopy::parse(&good[..good.len() - 8]).is_ok());
        assert!(WorldCopy::parse(&good[..good.len() - 1]).is_err());
        assert!(WorldCopy::parse(&good[..8 + 91 + 8]).is_err());
        for i in 0..8 {
            for b in 0..=u8::MAX {
                let mut t = good.clone();
                t[i] = b;
                let _ = WorldCopy::parse(&t);
            }
        }
        let mut t = good.clone();
        t[0] = b'x';
        assert!(WorldCopy::parse(&t).is_err(), "format");
        let mut t = good.clone();
        t[4] = 9;
        assert!(WorldCopy::parse(&t).is_err(), "kind");
        let mut t = good.clone();
        t[5] = 0x10;
        assert!(WorldCopy::parse(&t).is_err(), "usage");
        // A pair without a public key, a secret with one.
        assert!(WorldCopy::parse(&sample(CopyKind::Ec, &[])).is_err());
        assert!(WorldCopy::parse(&sample(CopyKind::GenericSecret, &[1])).is_err());
        // A public key longer than what follows.
        let mut t = good.clone();
        t[6] = 0xff;
        assert!(WorldCopy::parse(&t).is_err());
    }

    #[test]
    fn templates_carry_the_copys_usage_and_identity() {
        let bytes = sample(CopyKind::GenericSecret, &[]);
        let mut copy = WorldCopy::parse(&bytes).unwrap();
        copy.usage = Usage {
            sign: true,
            ..Usage::default()
        };
        let t = unwrap_template(&copy, b"kp:k:1:abc");
        for a in [
            Attribute::Token(false),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Sign(true),
            Attribute::Verify(true),
            Attribute::Encrypt(false),
            Attribute::KeyType(KeyType::GENERIC_SECRET),
            Attribute::Id(b"kp:k:1:abc".to_vec()),
        ] {
            assert!(t.contains(&a), "{a:?} missing from {t:?}");
        }
    }
}
