//! Finite-field Diffie-Hellman (PKCS #3) in the token: `CKM_DH_PKCS_KEY_PAIR_GEN` key pairs
//! over an RFC 7919 group and `CKM_DH_PKCS_DERIVE` agreement.
//!
//! The `cryptoki` binding (0.12) knows these mechanisms' numbers but has neither a
//! [`Mechanism`] variant nor a public constructor of their [`MechanismType`] (it offers one
//! only for vendor-defined numbers). Both mechanisms are passed as a "vendor defined"
//! mechanism, which carries any type and a parameter as they are: none for key generation,
//! the peer's public value (big-endian bytes, the prime's length) for derivation, exactly as
//! PKCS#11 2.40 section 2.5 defines them.

use cryptoki::mechanism::vendor_defined::VendorDefinedMechanism;
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::Attribute;

use super::{derived_secret_template, take_derived_secret};
use super::{unavailable, Hsm, Obj};
use crate::algorithms::ffdhe::Group;
use crate::error::{Error, Result};
use zeroize::Zeroizing;

/// `CKM_DH_PKCS_KEY_PAIR_GEN`.
pub const KEY_PAIR_GEN: MechanismType = mechanism_type(cryptoki_sys::CKM_DH_PKCS_KEY_PAIR_GEN);
/// `CKM_DH_PKCS_DERIVE`.
pub const DERIVE: MechanismType = mechanism_type(cryptoki_sys::CKM_DH_PKCS_DERIVE);

const fn mechanism_type(code: cryptoki_sys::CK_MECHANISM_TYPE) -> MechanismType {
    // SAFETY: `MechanismType` is `#[repr(transparent)]` over `CK_MECHANISM_TYPE` (cryptoki
    // 0.12, src/mechanism/mod.rs), so every value of the one is a value of the other; the
    // binding only lacks a constructor for these standard numbers (module docs).
    unsafe { std::mem::transmute::<cryptoki_sys::CK_MECHANISM_TYPE, MechanismType>(code) }
}

/// The mechanism generating a key pair (its templates: [`public_template`]).
pub fn key_pair_gen() -> Mechanism<'static> {
    Mechanism::VendorDefined(VendorDefinedMechanism::new::<()>(KEY_PAIR_GEN, None))
}

/// What a DH public-key template adds: the group.
pub fn public_template(group: &Group) -> [Attribute; 2] {
    [
        Attribute::Prime(group.prime.to_vec()),
        Attribute::Base(vec![group.generator]),
    ]
}

impl Hsm {
    /// `g^xy mod p` of private key `private` (of `group`) and the peer's public value `y`
    /// (already checked in range, the prime's length), at the prime's length. The secret is a
    /// session object for a moment, as [`Hsm::ecdh`]'s (an object call).
    pub fn dh(&self, private: Obj, group: &Group, y: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        let len = group.bytes();
        let template = derived_secret_template(len);
        let value = self.call_on_objects("C_DeriveKey", "CKM_DH_PKCS_DERIVE", |s, live| {
            // The parameter is the public value itself: a byte array of the prime's length
            // (the two group sizes keyplane has, so a fixed-size array the binding can point
            // at).
            let derived = match len {
                256 => derive::<256>(s, live.handle(private)?, y, &template),
                384 => derive::<384>(s, live.handle(private)?, y, &template),
                _ => return Err(Error::Internal),
            }?;
            take_derived_secret(s, derived)
        })?;
        // A module may drop the secret's leading zero bytes; the secret is defined at the
        // prime's length.
        if value.len() > len {
            return Err(Error::Internal);
        }
        let mut padded = Zeroizing::new(vec![0u8; len - value.len()]);
        padded.extend_from_slice(&value);
        Ok(padded)
    }
}

fn derive<const N: usize>(
    s: &cryptoki::session::Session,
    private: cryptoki::object::ObjectHandle,
    y: &[u8],
    template: &[Attribute],
) -> Result<cryptoki::object::ObjectHandle> {
    let y: [u8; N] = y.try_into().map_err(|_| Error::Internal)?;
    let mechanism = Mechanism::VendorDefined(VendorDefinedMechanism::new(DERIVE, Some(&y)));
    s.derive_key(&mechanism, private, template)
        .map_err(unavailable("dh derive"))
}
