//! Key material crossing the service boundary, always wrapped: import wrapping key pairs,
//! imported material turned into a key version of either protection level, export of a
//! version wrapped to a recipient's RSA public key, and key check values that tell whether
//! re-imported material is the same as before. The one exception to "always wrapped" is
//! PKCS#12: a bundle's password-based encryption happens in host memory, so an exportable
//! private key is revealed to the host for it ([`Keyring::reveal_private_key`]) and a
//! bundle's key enters the token from the host ([`PairMaterial::Pkcs8`]).

use cryptoki::object::ObjectClass;
use ring::aead::{Aad, Nonce};
use zeroize::Zeroizing;

use super::{blocking, envelope_aad, envelope_key, Keyring, NewVersion, ObjKind};
use crate::algorithms::{KeySpec, KeyUsage};
use crate::error::{Error, Result};
use crate::hsm::pair_import::{PairSource, PairTarget};
use crate::hsm::wrapping::{HostKek, Transport, UnwrapInto, Unwrapped};
use crate::hsm::{Obj, Sealer, GCM_IV_LEN};
use crate::model::Protection;
use crate::store::keys::KeyVersionRow;

/// Label bound as AAD of the key check value.
const CHECK_LABEL: &[u8] = b"keyplane key check value v1";

/// Wrapped material and how to unwrap it: the import token's wrapping key (its `CKA_ID`),
/// that key's modulus length and the transport the token was issued for.
#[derive(Clone)]
pub struct Wrapped {
    pub import_object_id: Vec<u8>,
    pub modulus_len: usize,
    pub transport: Transport,
    pub bytes: Vec<u8>,
}

/// An imported key pair's private key: under an import token, or as PKCS#8 the host read
/// from a PKCS#12 bundle.
#[derive(Clone)]
pub enum PairMaterial {
    Wrapped(Wrapped),
    Pkcs8(Zeroizing<Vec<u8>>),
}

/// Imported material, made into a version.
pub struct ImportedVersion {
    pub version: NewVersion,
    /// Key check value: the tag of an empty message under a zero nonce and [`CHECK_LABEL`]
    /// with the key's own algorithm (AES-GCM, or ChaCha20-Poly1305 for `CHACHA20_POLY1305`);
    /// identifies the material without revealing it.
    pub check_value: Vec<u8>,
}

impl Keyring {
    /// A fresh RSA wrapping key pair of `bits` for a new import token, its private half kept
    /// in the token. Returns the token's id ([`crate::hsm::import_ids`]), the private half as
    /// a [`NewVersion`] to register with the request's write scope (destroyed if the request
    /// fails), and the public modulus and exponent. Each attempt names its key afresh: one
    /// that failed may have left its key behind, which the token's row must never name.
    pub async fn new_import_key_pair(
        &self,
        bits: u64,
    ) -> Result<(String, NewVersion, Vec<u8>, Vec<u8>)> {
        let (id, object_id, handle, n, e) = self
            .retrying(|| {
                let hsm = self.hsm.clone();
                blocking(move || {
                    let (id, object_id) = crate::hsm::import_ids();
                    let (handle, n, e) = hsm.generate_import_key_pair(&object_id, bits)?;
                    Ok((id, object_id, handle, n, e))
                })
            })
            .await?;
        let created = NewVersion {
            hsm_object_id: Some(object_id),
            wrapped_material: None,
            hsm_wrapped: None,
            created_objects: vec![handle],
        };
        Ok((id, created, n, e))
    }

    /// Destroy an import wrapping key (used, expired or abandoned); gone already is fine.
    pub async fn discard_import_key(&self, object_id: Vec<u8>) -> Result<()> {
        self.retrying(|| {
            let (hsm, object_id) = (self.hsm.clone(), object_id.clone());
            blocking(move || {
                while let Some(h) = hsm.find_object(ObjectClass::PRIVATE_KEY, &object_id)? {
                    hsm.destroy(h)?;
                }
                // None found is none left only if the token's objects can be seen (see
                // `Hsm::confirm_objects_visible`); else garbage collection removes it later.
                hsm.confirm_objects_visible()
            })
        })
        .await
    }

    /// The private half of an import token's wrapping key.
    async fn import_key(&self, object_id: Vec<u8>) -> Result<Obj> {
        let hsm = self.hsm.clone();
        blocking(move || hsm.find_object(ObjectClass::PRIVATE_KEY, &object_id))
            .await?
            .ok_or_else(|| Error::ExpiredImportToken("(its wrapping key is gone)".into()))
    }

    /// Unwrap imported material of a symmetric encryption spec (its key length: 32 bytes, 16
    /// for `AES_128_GCM`) and make it version `version` of `key_id`.
    pub async fn import_version(
        &self,
        tenant: &str,
        key_id: &str,
        version: u32,
        kind: (Protection, KeySpec, bool),
        wrapped: Wrapped,
    ) -> Result<ImportedVersion> {
        self.retrying(|| self.unwrap_version(tenant, key_id, version, kind, wrapped.clone()))
            .await
    }

    async fn unwrap_version(
        &self,
        tenant: &str,
        key_id: &str,
        version: u32,
        (protection, spec, exportable): (Protection, KeySpec, bool),
        wrapped: Wrapped,
    ) -> Result<ImportedVersion> {
        let len = spec.symmetric_key_len().ok_or(Error::Internal)?;
        let Wrapped {
            import_object_id,
            modulus_len,
            transport,
            bytes: wrapped,
        } = wrapped;
        let private = self.import_key(import_object_id).await?;
        let hsm = self.hsm.clone();
        match protection {
            // create-key refuses `hsm` for the specs the token cannot hold.
            Protection::Hsm if !spec.allows_hsm() => Err(Error::Internal),
            Protection::Hsm => {
                let object_id = crate::hsm::version_object_id(key_id, version);
                let id = object_id.clone();
                let (handle, hsm_wrapped) = blocking(move || {
                    let into = UnwrapInto::Token {
                        id: &id,
                        len,
                        exportable,
                    };
                    match hsm.unwrap_import(private, modulus_len, transport, &wrapped, into)? {
                        Unwrapped::Object(h, copy) => Ok((h, copy)),
                        Unwrapped::Material(_) => Err(Error::Internal),
                    }
                })
                .await?;
                let hsm = self.hsm.clone();
                let check =
                    blocking(move || hsm.gcm_encrypt(handle, &[0u8; GCM_IV_LEN], CHECK_LABEL, &[]))
                        .await;
                let check_value = match check {
                    Ok(c) => c,
                    Err(e) => {
                        let hsm = self.hsm.clone();
                        let _ = blocking(move || hsm.destroy(handle)).await;
                        return Err(e);
                    }
                };
                self.hsm_objects
                    .lock()
                    .map_err(|_| Error::Internal)?
                    .insert((ObjKind::Secret, object_id.clone()), handle);
                Ok(ImportedVersion {
                    version: NewVersion {
                        hsm_object_id: Some(object_id),
                        wrapped_material: None,
                        hsm_wrapped,
                        created_objects: vec![handle],
                    },
                    check_value,
                })
            }
            Protection::Envelope => {
                let material = blocking(move || {
                    match hsm.unwrap_import(
                        private,
                        modulus_len,
                        transport,
                        &wrapped,
                        UnwrapInto::Host { len },
                    )? {
                        Unwrapped::Material(m) => Ok(m),
                        Unwrapped::Object(..) => Err(Error::Internal),
                    }
                })
                .await?;
                let check_value = host_check_value(spec, &material)?;
                let wrapped = self
                    .seal_envelope_material(tenant, key_id, version, material)
                    .await?;
                Ok(ImportedVersion {
                    version: NewVersion {
                        hsm_object_id: None,
                        wrapped_material: Some(wrapped),
                        hsm_wrapped: None,
                        created_objects: Vec::new(),
                    },
                    check_value,
                })
            }
        }
    }

    /// Unwrap an imported key pair's private key (PKCS#8) into version 1 of `key_id` and
    /// complete the pair (see [`crate::hsm::pair_import`]). The check value is the SHA-256 of
    /// the pair's SubjectPublicKeyInfo. Each attempt names its objects afresh, as
    /// [`Keyring::new_version`] does: an attempt that failed may have left an object behind
    /// (a session lost before its clean-up), which the version's row must never name.
    pub async fn import_pair_version(
        &self,
        material: PairMaterial,
        kind: (KeySpec, KeyUsage, bool),
        key_id: &str,
        ec_point: Option<Vec<u8>>,
    ) -> Result<ImportedVersion> {
        self.retrying(|| {
            let object_id = crate::hsm::version_object_id(key_id, 1);
            self.unwrap_pair_version(material.clone(), kind, object_id, ec_point.clone())
        })
        .await
    }

    async fn unwrap_pair_version(
        &self,
        material: PairMaterial,
        (spec, usage, exportable): (KeySpec, KeyUsage, bool),
        object_id: Vec<u8>,
        ec_point: Option<Vec<u8>>,
    ) -> Result<ImportedVersion> {
        let source = match material {
            PairMaterial::Wrapped(Wrapped {
                import_object_id,
                modulus_len,
                transport,
                bytes,
            }) => PairSource::Wrapped {
                import_key: self.import_key(import_object_id).await?,
                modulus_len,
                hash: transport.hash,
                bytes,
            },
            PairMaterial::Pkcs8(pkcs8) => {
                let kek = HostKek::new()?;
                let bytes = kek.wrap(&pkcs8)?;
                PairSource::Host { kek, bytes }
            }
        };
        let hsm = self.hsm.clone();
        let id = object_id.clone();
        let (public, private, hsm_wrapped) = blocking(move || {
            let target = PairTarget {
                id: &id,
                spec,
                usage,
                exportable,
            };
            hsm.import_key_pair(source, target, ec_point)
        })
        .await?;
        let version = NewVersion {
            hsm_object_id: Some(object_id),
            wrapped_material: None,
            hsm_wrapped,
            created_objects: vec![public, private],
        };
        let hsm = self.hsm.clone();
        let spki = blocking(move || {
            let parts = hsm.public_parts(public, spec)?;
            crate::algorithms::public_key::spki_der(spec, &parts)
        })
        .await;
        let spki = match spki {
            Ok(spki) => spki,
            Err(e) => {
                self.discard(version).await;
                return Err(e);
            }
        };
        let check_value = ring::digest::digest(&ring::digest::SHA256, &spki)
            .as_ref()
            .to_vec();
        Ok(ImportedVersion {
            version,
            check_value,
        })
    }

    /// Seal `material` under the tenant KEK as the wrapped form of an envelope version.
    pub(super) async fn seal_envelope_material(
        &self,
        tenant: &str,
        key_id: &str,
        version: u32,
        material: Zeroizing<Vec<u8>>,
    ) -> Result<Vec<u8>> {
        let aad = envelope_aad(tenant, key_id, version);
        self.retrying(|| async {
            let kek = self.tenant_kek(tenant).await?;
            let (hsm, aad, material) = (self.hsm.clone(), aad.clone(), material.clone());
            blocking(move || hsm.seal(Sealer::Kek(kek), &aad, &material)).await
        })
        .await
    }

    /// Version `version` (blob loaded) of a key of `spec` wrapped to the RSA public key
    /// (`modulus`, `exponent`): the secret key's bytes, or a key pair's private key as PKCS#8
    /// (which only fits with the AES key wrap step; the caller checks that).
    #[allow(clippy::too_many_arguments)]
    pub async fn export_version(
        &self,
        tenant: &str,
        protection: Protection,
        spec: KeySpec,
        version: &KeyVersionRow,
        modulus: Vec<u8>,
        exponent: Vec<u8>,
        transport: Transport,
    ) -> Result<Vec<u8>> {
        match protection {
            Protection::Hsm => {
                let kind = if spec.is_asymmetric() {
                    ObjKind::Private
                } else {
                    ObjKind::Secret
                };
                self.retrying(|| async {
                    let handle = self.hsm_handle(kind, version).await?;
                    let (hsm, modulus, exponent) =
                        (self.hsm.clone(), modulus.clone(), exponent.clone());
                    blocking(move || hsm.wrap_for_recipient(handle, &modulus, &exponent, transport))
                        .await
                })
                .await
            }
            Protection::Envelope => {
                let material = self.envelope_material(tenant, spec, version).await?;
                self.retrying(|| {
                    let (hsm, material) = (self.hsm.clone(), material.clone());
                    let (modulus, exponent) = (modulus.clone(), exponent.clone());
                    blocking(move || {
                        hsm.wrap_material_for_recipient(&material, (&modulus, &exponent), transport)
                    })
                })
                .await
            }
        }
    }

    /// The PKCS#8 of version `version` of an exportable `hsm` key pair, in zeroized host
    /// memory: for a PKCS#12 bundle only (module docs).
    pub async fn reveal_private_key(&self, version: &KeyVersionRow) -> Result<Zeroizing<Vec<u8>>> {
        self.retrying(|| async {
            let handle = self.hsm_handle(ObjKind::Private, version).await?;
            let hsm = self.hsm.clone();
            blocking(move || hsm.reveal_private(handle)).await
        })
        .await
    }
}

fn host_check_value(spec: KeySpec, material: &[u8]) -> Result<Vec<u8>> {
    let key = envelope_key(spec, material)?;
    let tag = key
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key([0u8; 12]),
            Aad::from(CHECK_LABEL),
            &mut [],
        )
        .map_err(|_| Error::Internal)?;
    Ok(tag.as_ref().to_vec())
}
