//! Sealing: how keyplane keeps a secret under a key that never leaves the token. The root key
//! seals node secrets (the token-hash key, access-key secrets, plugin configs) and, on tokens
//! that wrap keys, the tenant KEKs; a tenant's KEK seals the material of its `envelope` key
//! versions. Which scheme a node uses is decided once, when its root key is made, from the
//! token's mechanism list ([`Scheme::for_token`]; a mechanism the module lists but cannot use,
//! a quirk, does not count); afterwards the kind of root key found in the token names the
//! scheme ([`RootKey`]).
//!
//! - [`Scheme::TokenGcm`] (SoftHSM2, most HSMs): the root key is an AES-256 token object.
//!   `CKM_AES_GCM` seals inside the token; a tenant KEK is an AES key generated in the token,
//!   stored wrapped by the root key (`CKM_AES_KEY_WRAP_PAD`) and unwrapped into a
//!   non-extractable session object. A sealed blob is `iv ‖ ciphertext ‖ tag`.
//! - [`Scheme::OaepKem`] (a TPM through tpm2-pkcs11, which has neither AES-GCM, nor AES key
//!   wrap, nor even `C_GenerateKey`): the root key and each tenant KEK are RSA-3072 key pairs
//!   (the module's largest if it makes no 3072-bit keys, down to 2048: [`rsa_bits`])
//!   generated in the token, non-extractable token objects (a KEK's stored form names its
//!   `CKA_ID`, it is never wrapped). Sealing is a KEM: a fresh 256-bit data key from the
//!   token's RNG is encrypted to the pair's public key with `CKM_RSA_PKCS_OAEP`; the AES-256-GCM
//!   key that seals the secret (in `ring`) is HKDF-SHA256 of the data key, salted with its
//!   encapsulation, so an altered encapsulation yields an unrelated key and the tag fails,
//!   and the AAD binds the blob to its owner as under `TokenGcm`. Opening decrypts the
//!   encapsulation in the token. A blob is `format ‖ len (u16 BE) ‖ encapsulation ‖ nonce ‖
//!   ciphertext ‖ tag ‖ signature`, its first byte naming the OAEP hash (3: SHA-256, 4:
//!   SHA-1). What changes: the data key and the secret are in host memory (zeroized) while a
//!   blob is sealed or opened, where `TokenGcm` keeps the KEK's work in the token; the KEK
//!   itself still never leaves the token.
//!
//!   Proof of origin: encryption to a public key proves nothing about who sealed, so whoever
//!   could write where blobs are kept (the database, a storage plugin) could otherwise put
//!   material of their own choosing in place of a version's. Every blob is therefore signed
//!   in the token by the node's *sealing signer*, a P-256 key pair made beside the root key
//!   (token objects labelled `keyplane-seal-signer`, the private half never extractable):
//!   ECDSA over SHA-256 of a label, the AAD and the blob before the signature (raw `r ‖ s`,
//!   64 bytes). Opening checks the signature before anything is decrypted, on the host with
//!   the signer's public point (read and checked against a test signature when the node
//!   opens the token: no token call, and no verify operation to leave active in a session);
//!   a blob without a valid one does not open, so, as under `TokenGcm`, only the token makes
//!   blobs that open. Blobs of the unsigned formats 1 and 2 (the first TPM builds) open no
//!   more: such a node's data directory is made again. And nothing can be
//!   wrapped by the
//!   root key, so there are no world copies and no key ceremony: such a node is a node of its
//!   own (`docs/hsm.md`).

use cryptoki::error::Error as CkError;
use cryptoki::mechanism::rsa::{PkcsOaepParams, PkcsOaepSource};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use ring::hkdf::{Salt, HKDF_SHA256};
use zeroize::Zeroizing;

use super::asym::{hash_mechanism, mgf};
use super::quirks::Quirks;
use super::unavailable;
use crate::algorithms::Hash;
use crate::error::{Error, Result};
use crate::telemetry::spans;

/// The sealing scheme of a node (see the module docs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Scheme {
    #[default]
    TokenGcm,
    OaepKem,
}

impl Scheme {
    /// The scheme a new root key is made for, from what the token lists (with its quirks:
    /// a mechanism the module lists but cannot use does not count).
    pub(crate) fn for_token(has: impl Fn(MechanismType) -> bool) -> anyhow::Result<Scheme> {
        use MechanismType as M;
        if has(M::AES_KEY_GEN) && has(M::AES_GCM) && has(M::AES_KEY_WRAP_PAD) {
            Ok(Scheme::TokenGcm)
        } else if has(M::RSA_PKCS_KEY_PAIR_GEN)
            && has(M::RSA_PKCS_OAEP)
            && has(M::ECC_KEY_PAIR_GEN)
            && has(M::ECDSA)
        {
            Ok(Scheme::OaepKem)
        } else {
            anyhow::bail!(
                "the token can seal nothing keyplane stores: it needs CKM_AES_KEY_GEN, CKM_AES_GCM and CKM_AES_KEY_WRAP_PAD, or CKM_RSA_PKCS_KEY_PAIR_GEN and CKM_RSA_PKCS_OAEP with CKM_EC_KEY_PAIR_GEN and CKM_ECDSA (to sign what it seals)"
            )
        }
    }

    /// Its name in `describe-hsm`.
    pub fn name(self) -> &'static str {
        match self {
            Scheme::TokenGcm => "aes-gcm in the token; KEKs wrapped by the root key",
            Scheme::OaepKem => "rsa-oaep kem in the token, aes-gcm in ring; KEKs token objects",
        }
    }
}

/// The root key as the token holds it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum RootKey {
    Aes(ObjectHandle),
    Rsa {
        private: ObjectHandle,
        public: ObjectHandle,
        /// The OAEP hash (and MGF1's) the token accepts.
        hash: Hash,
        /// The modulus size, which tenant KEKs share.
        bits: u64,
        /// The sealing signer (module docs).
        signer: Signer,
    },
}

/// The sealing signer (module docs): its private key in the token, which signs, and its
/// public point, with which the host verifies (no token call, no session state).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Signer {
    pub private: ObjectHandle,
    /// The uncompressed P-256 point.
    pub point: [u8; 65],
}

impl RootKey {
    pub(crate) fn scheme(&self) -> Scheme {
        match self {
            RootKey::Aes(_) => Scheme::TokenGcm,
            RootKey::Rsa { .. } => Scheme::OaepKem,
        }
    }

    /// The AES root key that wraps keys (world copies, tenant KEKs), if this scheme has one.
    pub(crate) fn wrapping_key(&self) -> Option<ObjectHandle> {
        match self {
            RootKey::Aes(h) => Some(*h),
            RootKey::Rsa { .. } => None,
        }
    }
}

/// Bits of the RSA root key and KEKs where the module makes them (see [`rsa_bits`]).
pub const RSA_BITS: u64 = 3072;
/// The smallest RSA root key accepted: what every TPM 2.0 makes (the PC Client profile asks
/// for RSA-2048 only; many TPMs stop there).
pub const RSA_MIN_BITS: u64 = 2048;

/// The size of a new RSA root key on a module that makes RSA keys of at most `max` bits
/// (`None`: it does not say): [`RSA_BITS`], or the module's maximum if smaller, down to
/// [`RSA_MIN_BITS`].
pub(crate) fn rsa_bits(max: Option<u64>) -> anyhow::Result<u64> {
    match max {
        None => Ok(RSA_BITS),
        Some(max) if max >= RSA_BITS => Ok(RSA_BITS),
        Some(max) if max >= RSA_MIN_BITS => Ok(max - max % 1024),
        Some(max) => anyhow::bail!(
            "the token makes RSA keys of at most {max} bits; an RSA root key needs {RSA_MIN_BITS}"
        ),
    }
}
/// Prefix of the stored form of a KEK that is a token object (`OaepKem`).
pub const KEK_TOKEN_PREFIX: &[u8] = b"token-object:";
/// Prefix of a KEK token object's `CKA_ID`.
const KEK_ID_PREFIX: &str = "keyplane-kek:";
/// First byte of a KEM blob: the OAEP hash of its encapsulation. The blob names it (rather
/// than the hash probed at start) so that a module that changes what it accepts still opens
/// what it sealed before.
/// Formats 1 (SHA-256) and 2 (SHA-1) were unsigned and open no more.
const KEM_OAEP_SHA256: u8 = 3;
const KEM_OAEP_SHA1: u8 = 4;
/// Bytes of a blob's signature (ECDSA P-256, raw `r ‖ s`).
const KEM_SIGNATURE_LEN: usize = 64;
/// Label and id of the sealing signer's objects.
pub const SIGNER_LABEL: &str = "keyplane-seal-signer";
/// The start of what a blob's signature covers.
const KEM_SIGNED_LABEL: &[u8] = b"keyplane oaep-kem blob v2\0";
/// HKDF info of the sealing key.
const KEM_INFO: &[u8] = b"keyplane oaep-kem seal v1";

/// Generate an RSA key pair for sealing as token objects labelled `label`, identified by `id`:
/// the private key sensitive, never extractable, for decryption. Sign and verify are left to
/// the module's default: a TPM's RSA keys carry both uses, and tpm2-pkcs11 refuses a template
/// that says otherwise; keyplane never signs with a sealing key.
pub(crate) fn generate_rsa_pair(
    s: &Session,
    label: &[u8],
    id: &[u8],
    bits: u64,
) -> std::result::Result<(ObjectHandle, ObjectHandle), CkError> {
    let public = [
        Attribute::Token(true),
        Attribute::Class(ObjectClass::PUBLIC_KEY),
        Attribute::KeyType(KeyType::RSA),
        Attribute::ModulusBits(bits.into()),
        Attribute::PublicExponent(vec![0x01, 0x00, 0x01]),
        Attribute::Encrypt(true),
        Attribute::Label(label.to_vec()),
        Attribute::Id(id.to_vec()),
    ];
    let private = [
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Class(ObjectClass::PRIVATE_KEY),
        Attribute::KeyType(KeyType::RSA),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Decrypt(true),
        Attribute::Label(label.to_vec()),
        Attribute::Id(id.to_vec()),
    ];
    spans::hsm("C_GenerateKeyPair", "CKM_RSA_PKCS_KEY_PAIR_GEN", || {
        s.generate_key_pair(&Mechanism::RsaPkcsKeyPairGen, &public, &private)
    })
    .map(|(public, private)| (private, public))
}

/// A new tenant KEK for `OaepKem`: its stored form (naming the token objects) and private key.
pub(crate) fn generate_kek_pair(s: &Session, bits: u64) -> Result<(Vec<u8>, ObjectHandle)> {
    let id = format!("{KEK_ID_PREFIX}{}", uuid::Uuid::now_v7().simple()).into_bytes();
    let (private, _) = generate_rsa_pair(s, b"keyplane-kek", &id, bits)
        .map_err(unavailable("generate a tenant kek key pair"))?;
    let mut stored = KEK_TOKEN_PREFIX.to_vec();
    stored.extend_from_slice(&id);
    Ok((stored, private))
}

/// Whether `id` is the `CKA_ID` of a tenant KEK's token objects (`OaepKem`).
pub(crate) fn is_kek_id(id: &[u8]) -> bool {
    id.starts_with(KEK_ID_PREFIX.as_bytes())
}

/// The `CKA_ID` a KEK's stored form names, if it is a token object's.
pub(crate) fn kek_token_id(stored: &[u8]) -> Option<&[u8]> {
    stored
        .strip_prefix(KEK_TOKEN_PREFIX)
        .filter(|id| id.starts_with(KEK_ID_PREFIX.as_bytes()))
}

/// The object of `class` with `CKA_ID` `id`.
pub(crate) fn find_by_id(
    s: &Session,
    class: ObjectClass,
    id: &[u8],
) -> Result<Option<ObjectHandle>> {
    let found = spans::hsm("C_FindObjects", "none", || {
        s.find_objects(&[Attribute::Class(class), Attribute::Id(id.to_vec())])
    })
    .map_err(unavailable("find a key by id"))?;
    Ok(found.into_iter().next())
}

/// The public key of the pair whose private key is `private`.
pub(crate) fn public_of(s: &Session, private: ObjectHandle) -> Result<ObjectHandle> {
    let id = s
        .get_attributes(private, &[AttributeType::Id])
        .map_err(unavailable("read a kek's id"))?
        .into_iter()
        .find_map(|a| match a {
            Attribute::Id(id) => Some(id),
            _ => None,
        })
        .ok_or(Error::Internal)?;
    find_by_id(s, ObjectClass::PUBLIC_KEY, &id)?.ok_or_else(|| {
        tracing::error!("a tenant kek's public key is missing from the token");
        Error::HsmUnavailable
    })
}

fn oaep(hash: Hash) -> Mechanism<'static> {
    Mechanism::RsaPkcsOaep(PkcsOaepParams::new(
        hash_mechanism(hash),
        mgf(hash),
        PkcsOaepSource::empty(),
    ))
}

fn sealing_key(data_key: &[u8], encapsulation: &[u8]) -> Result<LessSafeKey> {
    let prk = Salt::new(HKDF_SHA256, encapsulation).extract(data_key);
    let okm = prk
        .expand(&[KEM_INFO], &AES_256_GCM)
        .map_err(|_| Error::Internal)?;
    Ok(LessSafeKey::new(UnboundKey::from(okm)))
}

/// Seal `plaintext` with AAD `aad` to the RSA `public` key (see the module docs).
pub(crate) fn kem_seal(
    s: &Session,
    public: ObjectHandle,
    hash: Hash,
    signer: &Signer,
    aad: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>> {
    let mut data_key = Zeroizing::new([0u8; 32]);
    let mut nonce = [0u8; 12];
    spans::hsm("C_GenerateRandom", "none", || {
        s.generate_random_slice(&mut data_key[..])?;
        s.generate_random_slice(&mut nonce)
    })
    .map_err(unavailable("generate random"))?;
    let encapsulation = spans::hsm("C_Encrypt", "CKM_RSA_PKCS_OAEP", || {
        s.encrypt(&oaep(hash), public, &data_key[..])
    })
    .map_err(unavailable("rsa-oaep encapsulate"))?;
    let len = u16::try_from(encapsulation.len()).map_err(|_| Error::Internal)?;
    let key = sealing_key(&data_key[..], &encapsulation)?;
    let mut body = plaintext.to_vec();
    key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(aad),
        &mut body,
    )
    .map_err(|_| Error::Internal)?;
    let mut out = Vec::with_capacity(3 + encapsulation.len() + nonce.len() + body.len());
    out.push(match hash {
        Hash::Sha1 => KEM_OAEP_SHA1,
        _ => KEM_OAEP_SHA256,
    });
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&encapsulation);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&body);
    let digest = ring::digest::digest(&ring::digest::SHA256, &signed_message(aad, &out));
    let signature = spans::hsm("C_Sign", "CKM_ECDSA", || {
        s.sign(&Mechanism::Ecdsa, signer.private, digest.as_ref())
    })
    .map_err(unavailable("sign a sealed blob"))?;
    if signature.len() != KEM_SIGNATURE_LEN {
        return Err(Error::Internal);
    }
    out.extend_from_slice(&signature);
    Ok(out)
}

/// Whether the root pair's public half still encapsulates (the readiness probe: the RSA-OAEP
/// step of [`kem_seal`] alone, without the signature, which a TPM makes slowly).
pub(crate) fn kem_probe(s: &Session, public: ObjectHandle, hash: Hash) -> bool {
    spans::hsm("C_Encrypt", "CKM_RSA_PKCS_OAEP", || {
        s.encrypt(&oaep(hash), public, &[0u8; 32])
    })
    .is_ok()
}

/// What a blob's signature covers (the token signs its SHA-256): the label, the AAD (length
/// first) and the blob before its signature.
fn signed_message(aad: &[u8], unsigned: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(KEM_SIGNED_LABEL.len() + 8 + aad.len() + unsigned.len());
    m.extend_from_slice(KEM_SIGNED_LABEL);
    m.extend_from_slice(&(aad.len() as u64).to_be_bytes());
    m.extend_from_slice(aad);
    m.extend_from_slice(unsigned);
    m
}

/// Whether `signature` (raw `r ‖ s`) is the signer's over `message` (verified on the host).
fn signed_by(signer: &Signer, message: &[u8], signature: &[u8]) -> bool {
    ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_FIXED, signer.point)
        .verify(message, signature)
        .is_ok()
}

/// The sealing signer of the halves `(private, public)`, if they belong together: its public
/// point is read, and a test value the private half signs in the token verifies with it.
pub(crate) fn signer_of(
    s: &Session,
    (private, public): (ObjectHandle, ObjectHandle),
) -> anyhow::Result<Signer> {
    let attrs = s.get_attributes(public, &[AttributeType::EcPoint])?;
    let point = attrs
        .into_iter()
        .find_map(|a| match a {
            Attribute::EcPoint(p) => Some(super::asym::ec_point_content(p)),
            _ => None,
        })
        .ok_or_else(|| anyhow::anyhow!("the sealing signer's public half has no point"))?;
    let signer = Signer {
        private,
        point: point.try_into().map_err(|_| {
            anyhow::anyhow!("the sealing signer's point is not an uncompressed P-256 point")
        })?,
    };
    let message = signed_message(b"signer check", b"");
    let digest = ring::digest::digest(&ring::digest::SHA256, &message);
    let signature = s.sign(&Mechanism::Ecdsa, private, digest.as_ref())?;
    if !signed_by(&signer, &message, &signature) {
        anyhow::bail!(
            "the halves of keyplane's sealing signer ({SIGNER_LABEL}) do not belong together"
        );
    }
    Ok(signer)
}

/// Generate the sealing signer (module docs) as token objects: (private, public).
pub(crate) fn generate_signer(
    s: &Session,
) -> std::result::Result<(ObjectHandle, ObjectHandle), CkError> {
    let label = SIGNER_LABEL.as_bytes().to_vec();
    let curve = super::asym::ec_params(crate::algorithms::KeySpec::EccNistP256)
        .map_err(|_| CkError::InvalidValue)?;
    let public = [
        Attribute::Token(true),
        Attribute::Class(ObjectClass::PUBLIC_KEY),
        Attribute::KeyType(KeyType::EC),
        Attribute::EcParams(curve),
        Attribute::Verify(true),
        Attribute::Label(label.clone()),
        Attribute::Id(label.clone()),
    ];
    let private = [
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Class(ObjectClass::PRIVATE_KEY),
        Attribute::KeyType(KeyType::EC),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Sign(true),
        Attribute::Label(label.clone()),
        Attribute::Id(label),
    ];
    spans::hsm("C_GenerateKeyPair", "CKM_EC_KEY_PAIR_GEN", || {
        s.generate_key_pair(&Mechanism::EccKeyPairGen, &public, &private)
    })
    .map(|(public, private)| (private, public))
}

/// Open a blob of [`kem_seal`] with the RSA `private` key. A blob that is not one, or does not
/// authenticate with `aad`, is [`Error::DecryptionFailed`].
pub(crate) fn kem_open(
    s: &Session,
    private: ObjectHandle,
    signer: &Signer,
    quirks: Quirks,
    aad: &[u8],
    blob: &[u8],
) -> Result<Zeroizing<Vec<u8>>> {
    let KemBlob {
        hash,
        encapsulation,
        nonce,
        sealed,
        unsigned,
        signature,
    } = split_kem(blob).ok_or(Error::DecryptionFailed)?;
    // Proof of origin first: nothing of a blob the token did not sign is decrypted.
    if !signed_by(signer, &signed_message(aad, unsigned), signature) {
        return Err(Error::DecryptionFailed);
    }
    let data_key = match spans::hsm("C_Decrypt", "CKM_RSA_PKCS_OAEP", || {
        s.decrypt(&oaep(hash), private, encapsulation)
    }) {
        Ok(k) => Zeroizing::new(k),
        Err(e) if quirks.rejects_input(&e) => return Err(Error::DecryptionFailed),
        Err(e) => return Err(unavailable("rsa-oaep decapsulate")(e)),
    };
    let key = sealing_key(&data_key, encapsulation)?;
    let mut body = Zeroizing::new(sealed.to_vec());
    let n = key
        .open_in_place(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad),
            &mut body,
        )
        .map_err(|_| Error::DecryptionFailed)?
        .len();
    body.truncate(n);
    Ok(body)
}

/// The parts of a KEM blob.
struct KemBlob<'a> {
    hash: Hash,
    encapsulation: &'a [u8],
    nonce: [u8; 12],
    sealed: &'a [u8],
    /// Everything before the signature.
    unsigned: &'a [u8],
    signature: &'a [u8],
}

fn split_kem(blob: &[u8]) -> Option<KemBlob<'_>> {
    let (unsigned, signature) =
        blob.split_at_checked(blob.len().checked_sub(KEM_SIGNATURE_LEN)?)?;
    let (&format, rest) = unsigned.split_first()?;
    let hash = match format {
        KEM_OAEP_SHA256 => Hash::Sha256,
        KEM_OAEP_SHA1 => Hash::Sha1,
        _ => return None,
    };
    if rest.len() < 2 {
        return None;
    }
    let (len, rest) = rest.split_at(2);
    let len = u16::from_be_bytes([len[0], len[1]]) as usize;
    if rest.len() < len + 12 + 16 {
        return None;
    }
    let (encapsulation, rest) = rest.split_at(len);
    let (nonce, sealed) = rest.split_at(12);
    Some(KemBlob {
        hash,
        encapsulation,
        nonce: nonce.try_into().ok()?,
        sealed,
        unsigned,
        signature,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_rsa_root_key_is_as_large_as_the_module_makes_up_to_3072_bits() {
        assert_eq!(rsa_bits(None).unwrap(), 3072);
        assert_eq!(rsa_bits(Some(4096)).unwrap(), 3072);
        assert_eq!(rsa_bits(Some(3072)).unwrap(), 3072);
        // A TPM of the PC Client profile's minimum.
        assert_eq!(rsa_bits(Some(2048)).unwrap(), 2048);
        assert_eq!(rsa_bits(Some(2560)).unwrap(), 2048);
        let e = rsa_bits(Some(1024)).unwrap_err().to_string();
        assert!(e.contains("at most 1024 bits"), "{e}");
    }

    #[test]
    fn kem_blobs_parse_totally() {
        assert!(split_kem(&[]).is_none());
        assert!(split_kem(&[3, 0, 0]).is_none());
        assert!(split_kem(&[3; 63]).is_none());
        let mut short = vec![3, 0xff, 0xff, 1, 2, 3];
        short.extend_from_slice(&[0; 64]);
        assert!(split_kem(&short).is_none());
        let mut blob = vec![3, 0, 3, 9, 9, 9];
        blob.extend_from_slice(&[7; 12]);
        blob.extend_from_slice(&[5; 16]);
        blob.extend_from_slice(&[6; 64]);
        let parts = split_kem(&blob).unwrap();
        assert_eq!(
            (
                parts.hash,
                parts.encapsulation,
                parts.nonce,
                parts.sealed.len(),
                parts.signature,
                parts.unsigned.len()
            ),
            (
                Hash::Sha256,
                &[9u8, 9, 9][..],
                [7; 12],
                16,
                &[6u8; 64][..],
                blob.len() - 64
            )
        );
        blob[0] = 4;
        assert_eq!(split_kem(&blob).unwrap().hash, Hash::Sha1);
        // The unsigned formats of before open no more.
        for old in [1, 2] {
            blob[0] = old;
            assert!(split_kem(&blob).is_none());
        }
    }

    #[test]
    fn a_signature_covers_the_aad_and_every_byte_before_it() {
        let message = signed_message(b"aad", b"blob");
        assert_ne!(message, signed_message(b"aae", b"blob"));
        assert_ne!(message, signed_message(b"aad", b"blob!"));
        // The AAD's length is bound: bytes cannot move between the AAD and the blob.
        assert_ne!(signed_message(b"aa", b"dblob"), message);
    }

    #[test]
    fn an_altered_encapsulation_gives_an_unrelated_sealing_key() {
        let data_key = [3u8; 32];
        let a = sealing_key(&data_key, b"encapsulation one").unwrap();
        let b = sealing_key(&data_key, b"encapsulation two").unwrap();
        let mut sealed = b"secret".to_vec();
        a.seal_in_place_append_tag(
            Nonce::assume_unique_for_key([0; 12]),
            Aad::from(b"aad"),
            &mut sealed,
        )
        .unwrap();
        let mut copy = sealed.clone();
        assert!(b
            .open_in_place(
                Nonce::assume_unique_for_key([0; 12]),
                Aad::from(b"aad"),
                &mut copy
            )
            .is_err());
        assert!(a
            .open_in_place(
                Nonce::assume_unique_for_key([0; 12]),
                Aad::from(b"other"),
                &mut sealed
            )
            .is_err());
    }

    #[test]
    fn kek_stored_forms_name_token_objects_only_with_both_prefixes() {
        assert_eq!(
            kek_token_id(b"token-object:keyplane-kek:abc"),
            Some(&b"keyplane-kek:abc"[..])
        );
        assert_eq!(kek_token_id(b"token-object:kp:key:1"), None);
        assert_eq!(kek_token_id(b"\x00\x01wrapped"), None);
    }

    #[test]
    fn the_scheme_follows_the_mechanism_list() {
        use MechanismType as M;
        let softhsm = [
            M::AES_KEY_GEN,
            M::AES_GCM,
            M::AES_KEY_WRAP_PAD,
            M::RSA_PKCS_OAEP,
            M::RSA_PKCS_KEY_PAIR_GEN,
        ];
        let tpm = [
            M::RSA_PKCS_KEY_PAIR_GEN,
            M::RSA_PKCS_OAEP,
            M::AES_GCM,
            M::ECC_KEY_PAIR_GEN,
            M::ECDSA,
        ];
        assert_eq!(
            Scheme::for_token(|m| softhsm.contains(&m)).unwrap(),
            Scheme::TokenGcm
        );
        assert_eq!(
            Scheme::for_token(|m| tpm.contains(&m)).unwrap(),
            Scheme::OaepKem
        );
        assert!(Scheme::for_token(|m| m == M::ECDSA).is_err());
        // Without ECDSA nothing it seals could be signed: no scheme.
        let e = Scheme::for_token(|m| tpm[..3].contains(&m))
            .unwrap_err()
            .to_string();
        assert!(e.contains("CKM_ECDSA"), "{e}");
    }
}
