//! Importing a key pair's private key (PKCS#8 under RSA-OAEP + AES key wrap with padding)
//! into the token, checking it is the key the key's spec says, and completing the pair with
//! its public-key object: derived from the private key's public attributes for RSA, or, for
//! EC (whose private-key object carries no point), from a public key the importer supplies and
//! the HSM proves belongs to the private key by signing and verifying a fresh challenge.
//! The PKCS#8 comes under an import token's RSA key ([`PairSource::Wrapped`]) or, read by the
//! host from a PKCS#12 bundle, under a [`HostKek`] ([`PairSource::Host`]).

use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;

use super::asym::{ec_params, read_public_parts};
use super::wrapping::{incorrect, unwrap_ephemeral, HostKek, OaepHash};
use super::{unavailable, world, Hsm, Obj};
use crate::algorithms::{public_key, KeySpec, KeyUsage};
use crate::error::{Error, Result};

/// What is imported: the spec and usage of the key, its objects' `CKA_ID`, exportability.
pub struct PairTarget<'a> {
    pub id: &'a [u8],
    pub spec: KeySpec,
    pub usage: KeyUsage,
    pub exportable: bool,
}

/// Where the PKCS#8 of an imported private key comes from.
pub enum PairSource {
    /// RSA-OAEP(ephemeral AES key) ‖ AES-KWP(PKCS#8), to import key `import_key`.
    Wrapped {
        import_key: Obj,
        modulus_len: usize,
        hash: OaepHash,
        bytes: Vec<u8>,
    },
    /// AES-KWP(PKCS#8) under `kek`, which the host holds.
    Host { kek: HostKek, bytes: Vec<u8> },
}

fn common(id: &[u8], class: ObjectClass, private: bool) -> Vec<Attribute> {
    vec![
        Attribute::Token(true),
        Attribute::Private(private),
        Attribute::Class(class),
        Attribute::Id(id.to_vec()),
        Attribute::Label(super::version_label(id)),
    ]
}

impl Hsm {
    /// Unwrap the PKCS#8 of `source` into the private key of `target`, then create its
    /// public-key object. `ec_point`: the supplied public point for EC specs. Returns
    /// (public, private) handles and the version's world copy (the private key wrapped by the
    /// root key before it is made non-extractable, see [`super::world`]; `None` where the
    /// module declines).
    pub fn import_key_pair(
        &self,
        source: PairSource,
        target: PairTarget<'_>,
        ec_point: Option<Vec<u8>>,
    ) -> Result<(Obj, Obj, Option<Vec<u8>>)> {
        let (key_type, rsa) = match target.spec {
            KeySpec::EccNistP256 | KeySpec::EccNistP384 => (KeyType::EC, false),
            KeySpec::Rsa2048 | KeySpec::Rsa3072 | KeySpec::Rsa4096 => (KeyType::RSA, true),
            _ => return Err(Error::Internal),
        };
        let sign = target.usage == KeyUsage::SignVerify;
        let decrypt = target.usage == KeyUsage::EncryptDecrypt;
        let mut private = common(target.id, ObjectClass::PRIVATE_KEY, true);
        private.extend([
            Attribute::KeyType(key_type),
            Attribute::Sensitive(true),
            // Until sealed (see `world::seal`).
            Attribute::Extractable(true),
            Attribute::Sign(sign),
            Attribute::Decrypt(decrypt),
            Attribute::Derive(false),
            Attribute::Unwrap(false),
        ]);
        self.call_on_objects(
            "C_UnwrapKey",
            "CKM_RSA_PKCS_OAEP+CKM_AES_KEY_WRAP_PAD",
            |s, live| {
                let (ephemeral, tail) = match &source {
                    PairSource::Wrapped {
                        import_key,
                        modulus_len,
                        hash,
                        bytes,
                    } => {
                        let import_key = live.handle(*import_key)?;
                        if bytes.len() <= *modulus_len {
                            return Err(incorrect("too short for RSA_AES_KEY_WRAP"));
                        }
                        let (head, tail) = bytes.split_at(*modulus_len);
                        (
                            unwrap_ephemeral(s, live.quirks, import_key, *hash, head)?,
                            tail,
                        )
                    }
                    PairSource::Host { kek, bytes } => {
                        (kek.session_object(s, Attribute::Unwrap(true))?, &bytes[..])
                    }
                };
                let unwrapped = s.unwrap_key(&Mechanism::AesKeyWrapPad, ephemeral, tail, &private);
                if let Err(e) =
                    super::destroy_secret(s, ephemeral, "destroy a pair import's ephemeral key")
                {
                    // Nor is the private key made of it left behind, a token object and
                    // extractable until sealed.
                    if let Ok(h) = unwrapped {
                        let _ = s.destroy_object(h);
                    }
                    return Err(e);
                }
                let private = match unwrapped {
                    Ok(h) => h,
                    // The host checked a bundle's key before it came here: the token refusing
                    // it is the token's doing, not the caller's.
                    Err(e) if matches!(source, PairSource::Host { .. }) => {
                        return Err(unavailable("unwrap a bundle's private key")(e))
                    }
                    Err(e) if live.quirks.rejects_private_key(&e) => {
                        return Err(incorrect("not a PKCS#8 private key of this key's type"))
                    }
                    Err(e) => return Err(unavailable("unwrap imported private key")(e)),
                };
                let public = if rsa {
                    rsa_public(s, private, &target)
                } else {
                    ec_public(s, private, &target, ec_point.as_deref())
                };
                let public = match public {
                    Ok(public) => public,
                    Err(e) => {
                        let _ = s.destroy_object(private);
                        return Err(e);
                    }
                };
                let (kind, usage) = (
                    if rsa {
                        world::CopyKind::Rsa
                    } else {
                        world::CopyKind::Ec
                    },
                    world::Usage {
                        encrypt: decrypt,
                        sign,
                        derive: false,
                        extractable: target.exportable,
                    },
                );
                let sealed = read_public_parts(s, public, target.spec)
                    .and_then(|parts| crate::algorithms::public_key::spki_der(target.spec, &parts))
                    .and_then(|spki| {
                        world::seal(s, live.root.wrapping_key(), private, (kind, usage), &spki)
                    });
                match sealed {
                    Ok(copy) => Ok((live.obj(public), live.obj(private), copy)),
                    Err(e) => {
                        let _ = s.destroy_object(private);
                        let _ = s.destroy_object(public);
                        Err(e)
                    }
                }
            },
        )
    }
}

fn attribute(s: &Session, h: ObjectHandle, t: AttributeType) -> Option<Vec<u8>> {
    s.get_attributes(h, &[t])
        .ok()?
        .into_iter()
        .find_map(|a| match a {
            Attribute::Modulus(v) | Attribute::PublicExponent(v) | Attribute::EcParams(v) => {
                Some(v)
            }
            _ => None,
        })
}

fn rsa_public(s: &Session, private: ObjectHandle, t: &PairTarget<'_>) -> Result<ObjectHandle> {
    let n = attribute(s, private, AttributeType::Modulus).ok_or(Error::HsmUnavailable)?;
    let e = attribute(s, private, AttributeType::PublicExponent).ok_or(Error::HsmUnavailable)?;
    let bits = public_key::rsa_bits(&n);
    if Some(bits) != t.spec.rsa_bits() {
        return Err(incorrect(&format!(
            "an RSA key of {bits} bits is not {}",
            t.spec.as_str()
        )));
    }
    if !public_key::rsa_exponent_fits(&e) {
        return Err(incorrect(
            "the RSA public exponent is not an odd number from 3 to 2^64-1",
        ));
    }
    let mut public = common(t.id, ObjectClass::PUBLIC_KEY, false);
    public.extend([
        Attribute::KeyType(KeyType::RSA),
        Attribute::Modulus(n),
        Attribute::PublicExponent(e),
        Attribute::Verify(t.usage == KeyUsage::SignVerify),
        Attribute::Encrypt(t.usage == KeyUsage::EncryptDecrypt),
        Attribute::Wrap(false),
    ]);
    let public = s
        .create_object(&public)
        .map_err(unavailable("create public key"))?;
    // Proof of possession, as for EC keys: the modulus and exponent are read from the
    // PKCS#8 beside the private values, and neither the token nor the parser checks that they
    // belong together. A key whose private values are another key's would publish one public
    // key and sign (or decrypt) with another; re-imported, it would pass the check that the
    // material is the same, which compares public keys.
    let proved = if t.usage == KeyUsage::SignVerify {
        let mut challenge = [0u8; 32];
        s.generate_random_slice(&mut challenge)
            .and_then(|_| s.sign(&Mechanism::RsaPkcs, private, &challenge))
            .and_then(|sig| s.verify(&Mechanism::RsaPkcs, public, &challenge, &sig))
            .is_ok()
    } else {
        super::capabilities::probe_oaep_with(s, public, private).is_some()
    };
    if !proved {
        let _ = s.destroy_object(public);
        return Err(incorrect(
            "the RSA private key does not belong to its public key (modulus and exponent)",
        ));
    }
    Ok(public)
}

fn ec_public(
    s: &Session,
    private: ObjectHandle,
    t: &PairTarget<'_>,
    point: Option<&[u8]>,
) -> Result<ObjectHandle> {
    let params = ec_params(t.spec)?;
    if attribute(s, private, AttributeType::EcParams).as_deref() != Some(params.as_slice()) {
        return Err(incorrect(&format!(
            "the private key is not on the curve of {}",
            t.spec.as_str()
        )));
    }
    let point = point.ok_or(Error::Internal)?;
    let encoded = {
        use der::Encode;
        der::asn1::OctetString::new(point)
            .and_then(|o| o.to_der())
            .map_err(|_| Error::Internal)?
    };
    let mut public = common(t.id, ObjectClass::PUBLIC_KEY, false);
    public.extend([
        Attribute::KeyType(KeyType::EC),
        Attribute::EcParams(params),
        Attribute::EcPoint(encoded),
        Attribute::Verify(true),
        Attribute::Derive(false),
        Attribute::Wrap(false),
    ]);
    let public = s
        .create_object(&public)
        .map_err(unavailable("create public key"))?;
    // Proof of possession: the private key signs a fresh challenge the public key verifies.
    let mut challenge = [0u8; 32];
    let proved = s
        .generate_random_slice(&mut challenge)
        .and_then(|_| s.sign(&Mechanism::Ecdsa, private, &challenge))
        .and_then(|sig| s.verify(&Mechanism::Ecdsa, public, &challenge, &sig));
    if proved.is_err() {
        let _ = s.destroy_object(public);
        return Err(incorrect(
            "public_key does not belong to the imported private key",
        ));
    }
    Ok(public)
}
