//! The HSM: every PKCS#11 call keyplane makes goes through [`Hsm`].
//!
//! Owns the loaded module, the token (found by label), the login, the session pool and the
//! handles of the objects keyplane keeps in the token: the root key (a non-extractable token
//! object), tenant KEKs (unwrapped from their root-wrapped form into non-extractable session
//! objects owned by the anchor session) and `hsm`-protected key versions (non-extractable
//! token objects). Methods are blocking; async callers go through `tokio::task::spawn_blocking`.

pub mod asym;
pub mod audit_key;
pub mod capabilities;
pub mod pair_import;
mod pool;
pub mod token;
pub mod wrapping;

use std::sync::Mutex;

use cryptoki::context::Pkcs11;
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use cryptoki::slot::Slot;
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::telemetry::spans;
use pool::SessionPool;

/// Label of the root key inside the token.
pub const ROOT_KEY_LABEL: &str = "keyplane-root-v1";
/// GCM tag length used everywhere.
pub const GCM_TAG_BITS: u64 = 128;
/// GCM IV length used everywhere.
pub const GCM_IV_LEN: usize = 12;

/// The `CKA_ID` of a new key version's objects: `kp:<key>:<version>:<nonce>`. The nonce
/// makes each creation attempt's objects distinct: two requests that race to create the same
/// version (two rotations, two imports) each make their own objects, and the one whose
/// transaction fails destroys its own. The version's row stores the id, so lookups name the
/// objects the committed row was created with, never the loser's. The nonce is a UUID v7,
/// whose first 48 bits are the creation time: garbage collection leaves objects younger than
/// its grace period alone (see `ops::gc`). Versions created before the nonce have ids
/// `kp:<key>:<version>`.
pub fn version_object_id(key_id: &str, version: u32) -> Vec<u8> {
    format!("kp:{key_id}:{version}:{}", uuid::Uuid::now_v7().simple()).into_bytes()
}

/// The label of a version's objects: its `CKA_ID` without the creation nonce
/// (`kp:<key>:<version>`), what an operator listing the token sees.
pub fn version_label(id: &[u8]) -> Vec<u8> {
    let nonce = id.iter().rposition(|b| *b == b':').map(|i| &id[i + 1..]);
    match nonce {
        Some(n) if n.len() == 32 && n.iter().all(u8::is_ascii_hexdigit) => {
            id[..id.len() - 33].to_vec()
        }
        _ => id.to_vec(),
    }
}

/// A logged-in PKCS#11 token.
pub struct Hsm {
    // Field order matters for drop: sessions close before the module is finalized.
    pool: SessionPool,
    /// Holds the process login and owns session objects (tenant KEKs).
    anchor: Mutex<Session>,
    root_key: ObjectHandle,
    slot: Slot,
    token_label: String,
    caps: capabilities::Capabilities,
    _pkcs11: Pkcs11,
}

/// Map a PKCS#11 failure to the public error, logging the detail (never secrets).
pub(crate) fn unavailable(context: &'static str) -> impl Fn(CkError) -> Error {
    move |e| {
        tracing::error!(error = %e, context, "PKCS#11 call failed");
        Error::HsmUnavailable
    }
}

impl Hsm {
    pub(crate) fn from_parts(
        pkcs11: Pkcs11,
        slot: Slot,
        anchor: Session,
        root_key: ObjectHandle,
        token_label: String,
        max_idle: usize,
    ) -> Self {
        Hsm {
            pool: SessionPool::new(pkcs11.clone(), slot, max_idle),
            anchor: Mutex::new(anchor),
            root_key,
            slot,
            token_label,
            caps: capabilities::Capabilities::default(),
            _pkcs11: pkcs11,
        }
    }

    /// Detect the token's identity, the mechanisms keyplane uses that it lists, and the OAEP
    /// hash it accepts (see [`capabilities`]). Called once at start.
    pub(crate) fn detect_capabilities(&mut self) -> Result<()> {
        let info = self
            ._pkcs11
            .get_token_info(self.slot)
            .map_err(unavailable("token info"))?;
        // C_GetMechanismInfo per mechanism keyplane uses, rather than C_GetMechanismList:
        // cryptoki logs an error for every listed mechanism it has no name for (SoftHSM2
        // lists several), which would put false errors in the log at every start. A
        // mechanism the token does not support answers CKR_MECHANISM_INVALID.
        let mechanisms = capabilities::USED_MECHANISMS
            .iter()
            .map(|(m, _)| *m)
            .filter(|m| {
                spans::hsm("C_GetMechanismInfo", "none", || {
                    self._pkcs11.get_mechanism_info(self.slot, *m)
                })
                .is_ok()
            })
            .collect::<Vec<_>>();
        let mut caps = capabilities::Capabilities {
            manufacturer: info.manufacturer_id().trim().to_string(),
            model: info.model().trim().to_string(),
            serial_number: info.serial_number().trim().to_string(),
            firmware_version: {
                let v = info.firmware_version();
                format!("{}.{}", v.major(), v.minor())
            },
            mechanisms,
            oaep_hash: None,
        };
        if caps.has(cryptoki::mechanism::MechanismType::RSA_PKCS_OAEP)
            && caps.has(cryptoki::mechanism::MechanismType::RSA_PKCS_KEY_PAIR_GEN)
        {
            let anchor = self.anchor.lock().map_err(|_| Error::Internal)?;
            caps.oaep_hash = capabilities::probe_oaep(&anchor);
        }
        let (_, missing) = caps.mechanism_names();
        tracing::info!(
            model = %caps.model,
            oaep_hash = ?caps.oaep_hash,
            missing = ?missing,
            "detected HSM capabilities"
        );
        self.caps = caps;
        Ok(())
    }

    /// What the token can do (detected at start).
    pub fn capabilities(&self) -> &capabilities::Capabilities {
        &self.caps
    }

    /// The token's label.
    pub fn token_label(&self) -> &str {
        &self.token_label
    }

    /// The slot the token currently sits in (informational; may change across restarts).
    pub fn slot(&self) -> Slot {
        self.slot
    }

    /// A liveness probe: the token answers a trivial call.
    pub fn ping(&self) -> Result<()> {
        self.pool.with("C_GetSessionInfo", "none", |s| {
            s.get_session_info()
                .map(|_| ())
                .map_err(unavailable("ping"))
        })
    }

    /// `n` random bytes from the token's RNG.
    pub fn random(&self, n: usize) -> Result<Zeroizing<Vec<u8>>> {
        let mut buf = Zeroizing::new(vec![0u8; n]);
        self.pool.with("C_GenerateRandom", "none", |s| {
            s.generate_random_slice(&mut buf)
                .map_err(unavailable("generate-random"))
        })?;
        Ok(buf)
    }

    /// AES-GCM encrypt `plaintext` under `key` inside the token. Returns ciphertext‖tag.
    pub fn gcm_encrypt(
        &self,
        key: ObjectHandle,
        iv: &[u8; GCM_IV_LEN],
        aad: &[u8],
        plaintext: &[u8],
    ) -> Result<Vec<u8>> {
        let mut iv = *iv;
        self.pool.with("C_Encrypt", "CKM_AES_GCM", |s| {
            let params = GcmParams::new(&mut iv, aad, GCM_TAG_BITS.into())
                .map_err(unavailable("gcm-params"))?;
            s.encrypt(&Mechanism::AesGcm(params), key, plaintext)
                .map_err(unavailable("aes-gcm encrypt"))
        })
    }

    /// AES-GCM decrypt ciphertext‖tag under `key` inside the token. An authentication failure
    /// is [`Error::DecryptionFailed`] (SoftHSM2 reports it as `CKR_GENERAL_ERROR`).
    pub fn gcm_decrypt(
        &self,
        key: ObjectHandle,
        iv: &[u8; GCM_IV_LEN],
        aad: &[u8],
        sealed: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>> {
        let mut iv = *iv;
        self.pool.with("C_Decrypt", "CKM_AES_GCM", |s| {
            let params = GcmParams::new(&mut iv, aad, GCM_TAG_BITS.into())
                .map_err(unavailable("gcm-params"))?;
            match s.decrypt(&Mechanism::AesGcm(params), key, sealed) {
                Ok(pt) => Ok(Zeroizing::new(pt)),
                Err(CkError::Pkcs11(
                    RvError::GeneralError
                    | RvError::EncryptedDataInvalid
                    | RvError::EncryptedDataLenRange,
                    _,
                )) => Err(Error::DecryptionFailed),
                Err(e) => Err(unavailable("aes-gcm decrypt")(e)),
            }
        })
    }

    /// The root key handle (wraps tenant KEKs and host secrets).
    pub fn root_key(&self) -> ObjectHandle {
        self.root_key
    }

    /// Generate a tenant KEK: returns its root-wrapped form and a non-extractable session
    /// handle to use now. The extractable copy used for wrapping is destroyed before return.
    pub fn generate_kek(&self) -> Result<(Vec<u8>, ObjectHandle)> {
        let anchor = self.anchor.lock().map_err(|_| Error::Internal)?;
        let template = [
            Attribute::Token(false),
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::ValueLen(32.into()),
            Attribute::Sensitive(true),
            Attribute::Extractable(true),
            Attribute::Private(true),
        ];
        let temp = spans::hsm("C_GenerateKey", "CKM_AES_KEY_GEN", || {
            anchor.generate_key(&Mechanism::AesKeyGen, &template)
        })
        .map_err(unavailable("generate kek"))?;
        let wrapped = spans::hsm("C_WrapKey", "CKM_AES_KEY_WRAP_PAD", || {
            anchor.wrap_key(&Mechanism::AesKeyWrapPad, self.root_key, temp)
        });
        let _ = anchor.destroy_object(temp);
        let wrapped = wrapped.map_err(unavailable("wrap kek"))?;
        drop(anchor);
        let handle = self.unwrap_kek(&wrapped)?;
        Ok((wrapped, handle))
    }

    /// Unwrap a root-wrapped tenant KEK into a non-extractable session object.
    pub fn unwrap_kek(&self, wrapped: &[u8]) -> Result<ObjectHandle> {
        let anchor = self.anchor.lock().map_err(|_| Error::Internal)?;
        let template = [
            Attribute::Token(false),
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Private(true),
            Attribute::Encrypt(true),
            Attribute::Decrypt(true),
        ];
        spans::hsm("C_UnwrapKey", "CKM_AES_KEY_WRAP_PAD", || {
            anchor.unwrap_key(&Mechanism::AesKeyWrapPad, self.root_key, wrapped, &template)
        })
        .map_err(unavailable("unwrap kek"))
    }

    /// Create an AES-256 token object identified (and labelled) by `id`: sensitive, for
    /// encrypt/decrypt; `extractable` only for keys created exportable (the token then wraps
    /// it for export, never reveals it).
    pub fn generate_token_aes_key_with(
        &self,
        id: &[u8],
        extractable: bool,
    ) -> Result<ObjectHandle> {
        let mut template = wrapping::aes_version_template(id, extractable);
        template.push(Attribute::ValueLen(32.into()));
        self.pool.with("C_GenerateKey", "CKM_AES_KEY_GEN", |s| {
            s.generate_key(&Mechanism::AesKeyGen, &template)
                .map_err(unavailable("generate token key"))
        })
    }

    /// Copy a token object into a session object of the anchor session (`C_CopyObject` with
    /// `CKA_TOKEN` false). The copy keeps every other attribute: sensitive, and extractable
    /// only where the original is (SoftHSM2 refused `CKA_EXTRACTABLE` false, and `CKA_COPYABLE`
    /// false, both in the copy's template and set on the copy afterwards). It lives until
    /// destroyed or until this process closes the anchor session.
    pub fn session_copy(&self, object: ObjectHandle) -> Result<ObjectHandle> {
        let anchor = self.anchor.lock().map_err(|_| Error::Internal)?;
        spans::hsm("C_CopyObject", "none", || {
            anchor.copy_object(object, &[Attribute::Token(false)])
        })
        .map_err(|e| {
            tracing::warn!(error = %e, "the token refused a session copy of a key object; using the token object");
            Error::HsmUnavailable
        })
    }

    /// Every token object keyplane made for a key version or an import token (`CKA_ID`
    /// starting `kp:` or `kp-import:`), with its `CKA_ID`: what garbage collection compares
    /// with the database. Never the root key, the audit key or session objects.
    pub fn keyplane_objects(&self) -> Result<Vec<(Vec<u8>, ObjectHandle)>> {
        self.pool.with("C_FindObjects", "none", |s| {
            let handles = s
                .find_objects(&[Attribute::Token(true)])
                .map_err(unavailable("find objects"))?;
            let mut found = Vec::new();
            for h in handles {
                let attrs = match s.get_attributes(h, &[cryptoki::object::AttributeType::Id]) {
                    Ok(attrs) => attrs,
                    // Destroyed meanwhile.
                    Err(CkError::Pkcs11(RvError::ObjectHandleInvalid, _)) => continue,
                    Err(e) => return Err(unavailable("read an object's id")(e)),
                };
                for a in attrs {
                    if let Attribute::Id(id) = a {
                        if id.starts_with(b"kp:") || id.starts_with(b"kp-import:") {
                            found.push((id, h));
                        }
                    }
                }
            }
            Ok(found)
        })
    }

    /// Destroy an object; one already gone (destroyed meanwhile by another request) is fine.
    pub fn destroy_if_present(&self, object: ObjectHandle) -> Result<()> {
        self.pool.with("C_DestroyObject", "none", |s| {
            match s.destroy_object(object) {
                Ok(()) | Err(CkError::Pkcs11(RvError::ObjectHandleInvalid, _)) => Ok(()),
                Err(e) => Err(unavailable("destroy object")(e)),
            }
        })
    }

    /// Destroy an object (used to undo a failed creation and, later, for crypto-shredding).
    pub fn destroy(&self, handle: ObjectHandle) -> Result<()> {
        self.pool.with("C_DestroyObject", "none", |s| {
            s.destroy_object(handle)
                .map_err(unavailable("destroy object"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each creation attempt of a version gets its own id; all share the label.
    #[test]
    fn version_ids_differ_per_attempt_and_share_the_label() {
        let (a, b) = (version_object_id("k-1", 2), version_object_id("k-1", 2));
        assert_ne!(a, b);
        assert!(a.starts_with(b"kp:k-1:2:"));
        assert_eq!(version_label(&a), b"kp:k-1:2");
        assert_eq!(version_label(&b), b"kp:k-1:2");
        // Ids from before the nonce are their own labels.
        assert_eq!(version_label(b"kp:k-1:2"), b"kp:k-1:2");
        assert_eq!(version_label(b"kp:k-1:22"), b"kp:k-1:22");
    }
}
