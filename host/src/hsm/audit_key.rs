//! The audit signing key: an ECDSA P-256 key pair kept in the token (`CKA_ID`
//! `keyplane-audit-signing-v1`, private half non-extractable), made on first use. It signs the
//! audit log's checkpoints; its public key is published so anyone can check them.

use cryptoki::object::ObjectClass;

use super::asym::SignMechanism;
use super::{Hsm, Obj};
use crate::algorithms::public_key::{ecdsa_raw_to_der, spki_der};
use crate::algorithms::{KeySpec, KeyUsage};
use crate::error::Result;

/// `CKA_ID` and label of the audit signing key pair.
pub const AUDIT_KEY_ID: &[u8] = b"keyplane-audit-signing-v1";

impl Hsm {
    /// The audit signing key's private handle and public key (SubjectPublicKeyInfo DER),
    /// created in the token if it is not there yet.
    pub fn audit_signing_key(&self) -> Result<(Obj, Vec<u8>)> {
        let spec = KeySpec::EccNistP256;
        let private = self.find_object(ObjectClass::PRIVATE_KEY, AUDIT_KEY_ID)?;
        let public = self.find_object(ObjectClass::PUBLIC_KEY, AUDIT_KEY_ID)?;
        let (public, private) = match (public, private) {
            (Some(public), Some(private)) => (public, private),
            _ => {
                // A half-made pair (a crash between the two objects) is replaced.
                for h in self.find_all(AUDIT_KEY_ID)? {
                    self.destroy(h)?;
                }
                let label = String::from_utf8_lossy(AUDIT_KEY_ID).into_owned();
                // No world copy: each node has its own audit key, which never leaves it.
                let (made, _) = self.generate_objects(
                    AUDIT_KEY_ID,
                    &label,
                    (spec, KeyUsage::SignVerify),
                    false,
                    false,
                )?;
                tracing::info!("created the audit signing key in the HSM");
                (made[0], made[1])
            }
        };
        let parts = self.public_parts(public, spec)?;
        Ok((private, spki_der(spec, &parts)?))
    }

    /// The audit signing key's private handle, found again (after the HSM started over). It
    /// is never made here: a half that cannot be found is an error, not a reason for a new
    /// key, which would not match the public key published for verifiers.
    pub fn existing_audit_signing_key(&self) -> Result<Obj> {
        let private = self.find_object(ObjectClass::PRIVATE_KEY, AUDIT_KEY_ID)?;
        let public = self.find_object(ObjectClass::PUBLIC_KEY, AUDIT_KEY_ID)?;
        match (private, public) {
            (Some(private), Some(_)) => Ok(private),
            _ => {
                tracing::error!("the audit signing key is not in the token");
                Err(crate::error::Error::HsmUnavailable)
            }
        }
    }

    /// ECDSA P-256 signature (DER) of a SHA-256 `digest` with the audit key.
    pub fn audit_sign(&self, key: Obj, digest: &[u8]) -> Result<Vec<u8>> {
        let raw = self.sign(key, SignMechanism::Ecdsa, digest)?;
        ecdsa_raw_to_der(KeySpec::EccNistP256, &raw)
    }
}
