//! Key material crossing the service boundary, always wrapped: import wrapping key pairs,
//! imported material turned into a key version of either protection level, export of a
//! version wrapped to a recipient's RSA public key, and key check values that tell whether
//! re-imported material is the same as before.

use cryptoki::object::ObjectClass;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use zeroize::Zeroizing;

use super::{blocking, envelope_aad, Keyring, NewVersion, Protection};
use crate::error::{Error, Result};
use crate::hsm::wrapping::{Transport, UnwrapInto, Unwrapped};
use crate::hsm::GCM_IV_LEN;
use crate::store::keys::KeyVersionRow;

/// Label bound as AAD of the key check value.
const CHECK_LABEL: &[u8] = b"keyplane key check value v1";

/// Imported material, made into a version.
pub struct ImportedVersion {
    pub version: NewVersion,
    /// Key check value: the AES-GCM tag of an empty message under a zero nonce and
    /// [`CHECK_LABEL`]; identifies the material without revealing it.
    pub check_value: Vec<u8>,
}

impl Keyring {
    /// A fresh RSA wrapping key pair of `bits` for an import, its private half kept in the
    /// token under `object_id`. Returns the public modulus and exponent, and the private half
    /// as a [`NewVersion`] to register with the request's write scope (destroyed if the
    /// request fails).
    pub async fn new_import_key_pair(
        &self,
        object_id: Vec<u8>,
        bits: u64,
    ) -> Result<(NewVersion, Vec<u8>, Vec<u8>)> {
        let (hsm, id) = (self.hsm.clone(), object_id.clone());
        let (handle, n, e) = blocking(move || hsm.generate_import_key_pair(&id, bits)).await?;
        let created = NewVersion {
            hsm_object_id: Some(object_id),
            wrapped_material: None,
            created_objects: vec![handle],
        };
        Ok((created, n, e))
    }

    /// Destroy an import wrapping key (used, expired or abandoned); gone already is fine.
    pub async fn discard_import_key(&self, object_id: Vec<u8>) -> Result<()> {
        let hsm = self.hsm.clone();
        blocking(move || {
            while let Some(h) = hsm.find_object(ObjectClass::PRIVATE_KEY, &object_id)? {
                hsm.destroy(h)?;
            }
            Ok(())
        })
        .await
    }

    /// Unwrap imported AES-256 material with the import key `import_object_id` and make it
    /// version `version` of `key_id`.
    #[allow(clippy::too_many_arguments)]
    pub async fn import_version(
        &self,
        tenant: &str,
        key_id: &str,
        version: u32,
        protection: Protection,
        exportable: bool,
        import_object_id: Vec<u8>,
        modulus_len: usize,
        transport: Transport,
        wrapped: Vec<u8>,
    ) -> Result<ImportedVersion> {
        let hsm = self.hsm.clone();
        let private = {
            let hsm = hsm.clone();
            blocking(move || hsm.find_object(ObjectClass::PRIVATE_KEY, &import_object_id)).await?
        }
        .ok_or_else(|| Error::ExpiredImportToken("(its wrapping key is gone)".into()))?;
        match protection {
            Protection::Hsm => {
                let object_id = format!("kp:{key_id}:{version}").into_bytes();
                let id = object_id.clone();
                let handle = blocking(move || {
                    let into = UnwrapInto::Token {
                        id: &id,
                        exportable,
                    };
                    match hsm.unwrap_import(private, modulus_len, transport, &wrapped, into)? {
                        Unwrapped::Object(h) => Ok(h),
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
                    .insert((super::ObjKind::Secret, object_id.clone()), handle);
                Ok(ImportedVersion {
                    version: NewVersion {
                        hsm_object_id: Some(object_id),
                        wrapped_material: None,
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
                        UnwrapInto::Host,
                    )? {
                        Unwrapped::Material(m) => Ok(m),
                        Unwrapped::Object(_) => Err(Error::Internal),
                    }
                })
                .await?;
                let check_value = host_check_value(&material)?;
                let wrapped = self
                    .seal_envelope_material(tenant, key_id, version, material)
                    .await?;
                Ok(ImportedVersion {
                    version: NewVersion {
                        hsm_object_id: None,
                        wrapped_material: Some(wrapped),
                        created_objects: Vec::new(),
                    },
                    check_value,
                })
            }
        }
    }

    /// Seal `material` under the tenant KEK as the wrapped form of an envelope version.
    pub(super) async fn seal_envelope_material(
        &self,
        tenant: &str,
        key_id: &str,
        version: u32,
        material: Zeroizing<Vec<u8>>,
    ) -> Result<Vec<u8>> {
        let kek = self.tenant_kek(tenant).await?;
        let hsm = self.hsm.clone();
        let aad = envelope_aad(tenant, key_id, version);
        blocking(move || {
            let iv_bytes = hsm.random(GCM_IV_LEN)?;
            let mut iv = [0u8; GCM_IV_LEN];
            iv.copy_from_slice(&iv_bytes);
            let sealed = hsm.gcm_encrypt(kek, &iv, &aad, &material)?;
            let mut out = iv.to_vec();
            out.extend_from_slice(&sealed);
            Ok(out)
        })
        .await
    }

    /// Version `version` (blob loaded) wrapped to the RSA public key (`modulus`, `exponent`).
    pub async fn export_version(
        &self,
        tenant: &str,
        protection: Protection,
        version: &KeyVersionRow,
        modulus: Vec<u8>,
        exponent: Vec<u8>,
        transport: Transport,
    ) -> Result<Vec<u8>> {
        match protection {
            Protection::Hsm => {
                let handle = self.hsm_object(super::hsm_id(version)?).await?;
                let hsm = self.hsm.clone();
                blocking(move || hsm.wrap_for_recipient(handle, &modulus, &exponent, transport))
                    .await
            }
            Protection::Envelope => {
                let material = self.envelope_material(tenant, version).await?;
                let hsm = self.hsm.clone();
                blocking(move || {
                    hsm.with_transient_aes(material.as_ref().as_ref(), |hsm, handle| {
                        hsm.wrap_for_recipient(handle, &modulus, &exponent, transport)
                    })
                })
                .await
            }
        }
    }
}

fn host_check_value(material: &[u8]) -> Result<Vec<u8>> {
    let key =
        LessSafeKey::new(UnboundKey::new(&AES_256_GCM, material).map_err(|_| Error::Internal)?);
    let tag = key
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key([0u8; 12]),
            Aad::from(CHECK_LABEL),
            &mut [],
        )
        .map_err(|_| Error::Internal)?;
    Ok(tag.as_ref().to_vec())
}
