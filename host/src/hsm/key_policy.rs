//! What a key that unwraps others lets the user PIN do beyond its usage flags: the
//! attributes that bound what comes out of an unwrap (`CKA_UNWRAP_TEMPLATE`), which
//! mechanisms the key takes at all (`CKA_ALLOWED_MECHANISMS`) and whether its flags can be
//! changed afterwards (`CKA_MODIFIABLE`, `CKA_COPYABLE`).
//!
//! Why: whoever holds the user PIN (what a running node holds) and the database can call
//! `C_UnwrapKey` with a template of their own choosing, set a key's `CKA_DECRYPT`, or use
//! the root key with `CKM_AES_ECB`, with which AES key wrap is undone by hand. A usage flag
//! alone stops none of it. Each is checked against SoftHSM2 2.6.1 (tests/ceremony.rs,
//! tests/faults.rs); what each key gets:
//!
//! - The **transport key** of the key ceremony ([`transport_private`]): unwraps only into
//!   an object with the attributes `import-root` gives the root key
//!   ([`TRANSPORT_UNWRAP_TEMPLATE`]: an AES secret key, sensitive, wrappable only by a
//!   trusted key, no derivation, the root key's mechanisms), so the export never unwraps
//!   into anything readable; `CKM_RSA_PKCS_OAEP` only; neither modifiable nor copyable,
//!   because a user who could set `CKA_DECRYPT` on it (or on a copy) would simply decrypt
//!   the export (SoftHSM2 allows both on a modifiable key).
//! - The **root key** ([`root`]): unwraps only into sensitive objects
//!   ([`ROOT_UNWRAP_TEMPLATE`]), and takes only `CKM_AES_GCM` and `CKM_AES_KEY_WRAP_PAD`
//!   ([`ROOT_MECHANISMS`]): with `CKM_AES_ECB` decryption a world copy or a tenant KEK
//!   could be unwrapped in host memory, whatever the unwrap template says. The template
//!   cannot force `CKA_EXTRACTABLE` false: exportable keys' world copies are legitimately
//!   unwrapped extractable (see `hsm::world`), so a user who unwraps a copy sensitive but
//!   extractable can still wrap it out with a key of their own (docs/hsm.md says what that
//!   leaves open). It stays modifiable: `import-root` labels the root key once verified.
//! - **Import wrapping keys** ([`import_private`]): `CKM_RSA_PKCS_OAEP` only, neither
//!   modifiable nor copyable (so no `CKA_DECRYPT` to decrypt an importer's material with).
//!   No unwrap template: `envelope` imports are legitimately unwrapped readable (the
//!   material goes to host memory), and the transient object of an `hsm` import is
//!   extractable (it is wrapped into the world copy), so no template would hold.
//!
//! Every one of these attributes is fixed at creation: SoftHSM2 refuses to change
//! `CKA_UNWRAP_TEMPLATE` or `CKA_ALLOWED_MECHANISMS` later (`CKR_ATTRIBUTE_READ_ONLY`), so a
//! key made before them keeps none of them (docs/hsm.md: new tokens and existing ones).
//!
//! `cryptoki` (0.12) has no attribute for an array of attributes (`CKA_UNWRAP_TEMPLATE`);
//! [`unwrap_template`] passes one as the raw `CK_ATTRIBUTE` array PKCS#11 defines, through
//! the binding's "vendor defined" attribute, which carries any type number and bytes as
//! they are. A template inside the template (the root key's own `CKA_UNWRAP_TEMPLATE` in the
//! transport key's) SoftHSM2 refuses (`CKR_ATTRIBUTE_VALUE_INVALID`), so an object
//! unwrapped from the export carries the root key's mechanisms but not necessarily its
//! unwrap template.

use std::sync::LazyLock;

use cryptoki::mechanism::MechanismType;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass};
use cryptoki_sys::{CKA_UNWRAP_TEMPLATE, CK_ATTRIBUTE};

use super::quirks::Quirks;

/// The mechanisms keyplane uses the AES root key with (in this order: an unwrap template
/// compares the list as it is).
pub(crate) const ROOT_MECHANISMS: [MechanismType; 2] =
    [MechanismType::AES_GCM, MechanismType::AES_KEY_WRAP_PAD];

/// What the root key unwraps into: sensitive objects (world copies, tenant KEKs).
pub(crate) static ROOT_UNWRAP_TEMPLATE: LazyLock<Vec<Attribute>> =
    LazyLock::new(|| vec![Attribute::Sensitive(true)]);

/// What the transport key unwraps into: the root key as `import-root` makes it
/// (`hsm::token::root_key_template`, which must carry each of these as they are).
pub(crate) static TRANSPORT_UNWRAP_TEMPLATE: LazyLock<Vec<Attribute>> = LazyLock::new(|| {
    vec![
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::Sensitive(true),
        Attribute::WrapWithTrusted(true),
        Attribute::Derive(false),
        Attribute::AllowedMechanisms(ROOT_MECHANISMS.to_vec()),
    ]
});

/// `CKA_UNWRAP_TEMPLATE` holding `inner` (module docs). `inner` is `'static` because the
/// attribute's bytes point into it (the `CK_ATTRIBUTE` array's values): they stay valid for
/// as long as any copy of the attribute exists.
pub(crate) fn unwrap_template(inner: &'static [Attribute]) -> Attribute {
    let raw: Vec<CK_ATTRIBUTE> = inner.iter().map(CK_ATTRIBUTE::from).collect();
    // SAFETY: `raw` is an initialised array of plain C structs (two integers and a pointer
    // each, no padding on any platform keyplane builds for), read here as its bytes.
    let bytes = unsafe {
        std::slice::from_raw_parts(
            raw.as_ptr().cast::<u8>(),
            std::mem::size_of_val(raw.as_slice()),
        )
    };
    // The module reads these bytes as a `CK_ATTRIBUTE` array, so they must be aligned as one.
    // A `Vec<u8>` is only promised byte alignment; every allocator keyplane runs on (mimalloc,
    // glibc's malloc) gives at least 8 bytes to a block this size, which this checks in debug
    // builds (the tests run on them).
    let bytes = bytes.to_vec();
    debug_assert_eq!(
        bytes.as_ptr() as usize % std::mem::align_of::<CK_ATTRIBUTE>(),
        0,
        "an unwrap template's bytes are not aligned as CK_ATTRIBUTEs"
    );
    Attribute::VendorDefined((AttributeType::VendorDefined(CKA_UNWRAP_TEMPLATE), bytes))
}

/// What the AES root key's template adds (module docs), on a module that takes it.
pub(crate) fn root(quirks: Quirks) -> Vec<Attribute> {
    let mut t = vec![Attribute::AllowedMechanisms(ROOT_MECHANISMS.to_vec())];
    if !quirks.unwrap_template_refused {
        t.push(unwrap_template(&ROOT_UNWRAP_TEMPLATE));
    }
    t
}

/// What the transport private key's template adds (module docs). The unwrap template is
/// not left out on any module: one that refuses it cannot take part in the ceremony.
pub(crate) fn transport_private() -> Vec<Attribute> {
    vec![
        Attribute::AllowedMechanisms(vec![MechanismType::RSA_PKCS_OAEP]),
        Attribute::Modifiable(false),
        Attribute::Copyable(false),
        unwrap_template(&TRANSPORT_UNWRAP_TEMPLATE),
    ]
}

/// What an import wrapping key's private template adds (module docs).
pub(crate) fn import_private() -> Vec<Attribute> {
    vec![
        Attribute::AllowedMechanisms(vec![MechanismType::RSA_PKCS_OAEP]),
        Attribute::Modifiable(false),
        Attribute::Copyable(false),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The raw array is what PKCS#11 defines: one `CK_ATTRIBUTE` per attribute, each
    /// pointing at that attribute's value.
    #[test]
    fn an_unwrap_template_is_the_raw_attribute_array() {
        let Attribute::VendorDefined((AttributeType::VendorDefined(t), bytes)) =
            unwrap_template(&TRANSPORT_UNWRAP_TEMPLATE)
        else {
            panic!("not a raw attribute");
        };
        assert_eq!(t, CKA_UNWRAP_TEMPLATE);
        let n = TRANSPORT_UNWRAP_TEMPLATE.len();
        assert_eq!(bytes.len(), n * std::mem::size_of::<CK_ATTRIBUTE>());
        let raw: Vec<CK_ATTRIBUTE> = bytes
            .chunks_exact(std::mem::size_of::<CK_ATTRIBUTE>())
            // SAFETY: each chunk is the bytes of one `CK_ATTRIBUTE` (read unaligned).
            .map(|c| unsafe { std::ptr::read_unaligned(c.as_ptr().cast::<CK_ATTRIBUTE>()) })
            .collect();
        for (raw, attribute) in raw.iter().zip(TRANSPORT_UNWRAP_TEMPLATE.iter()) {
            let expected = CK_ATTRIBUTE::from(attribute);
            assert_eq!(raw.type_, expected.type_);
            assert_eq!(raw.pValue, expected.pValue);
            assert_eq!(raw.ulValueLen, expected.ulValueLen);
        }
    }
}
