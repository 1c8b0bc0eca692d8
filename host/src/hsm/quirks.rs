//! What a PKCS#11 module does differently from what the standard says, in one place.
//!
//! Abilities are read from the token (its mechanism list, probes: see `capabilities`); a
//! quirk is what no list shows: which return code a module uses for a bad ciphertext, whether
//! its calls are CPU work in this process, whether it lists a mechanism it cannot use. Each
//! quirk is named after what it is, and the set is chosen by the module's own identity
//! (`C_GetInfo`: library manufacturer and description), matched here and nowhere else.
//! `describe-hsm` shows the names; tests check each module's set against the real module.

use cryptoki::context::Pkcs11;
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::MechanismType;
use cryptoki::object::Attribute;

/// The quirks of the loaded module.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Quirks {
    /// A ciphertext that does not authenticate or decode (a GCM tag, OAEP padding, a wrapped
    /// key) is reported as `CKR_GENERAL_ERROR` instead of `CKR_ENCRYPTED_DATA_INVALID` or
    /// `CKR_WRAPPED_KEY_INVALID` (SoftHSM2 2.6; tpm2-pkcs11 1.9 with swtpm, whose TPM answers
    /// a bad OAEP ciphertext with `TPM_RC_FAILURE` for that command alone). Elsewhere a
    /// general error is the token's. The price where it is set: a token failing in the middle
    /// of a decryption is taken for a bad ciphertext (an error either way, not a wrong answer).
    pub bad_input_as_general_error: bool,
    /// The module computes in this process with no device to wait on (SoftHSM2): its calls
    /// are CPU work, run inline on the data plane, and session copies of token objects are
    /// cheap and allowed.
    pub computes_in_process: bool,
    /// Calls that find, create or destroy objects fail now and then with
    /// `CKR_GENERAL_ERROR` when they run at once (SoftHSM2 2.6: about 1 in 100 with four
    /// threads); they take turns.
    pub object_calls_race: bool,
    /// `CKM_AES_KEY_GEN` is listed but `C_GenerateKey` answers `CKR_FUNCTION_NOT_SUPPORTED`
    /// (tpm2-pkcs11 1.9: secret keys enter only by its own import tool), so no secret key can
    /// be generated in the token.
    pub no_generate_key: bool,
    /// Objects with `CKA_TOKEN` false are refused (tpm2-pkcs11 1.9: "Expected attr 0x1 to be
    /// 0"): a scratch key (the OAEP probe's) is a token object, destroyed at once.
    pub no_session_objects: bool,
    /// A key's uses are fixed by the kind of key the module makes (a TPM RSA key both signs
    /// and decrypts), and a template that forbids one (`CKA_VERIFY` false) is refused
    /// (tpm2-pkcs11 1.9: "User specified and TPM specified attr mismatch"): templates name
    /// only the uses a key needs, and keyplane's own usage checks are what refuse the others.
    pub fixed_key_uses: bool,
    /// A private key the module generates never leaves it in the clear, whatever the
    /// template says (a TPM's keys are created inside it): `generate-data-key-pair`, which
    /// hands the caller the private key, cannot use its generator.
    pub private_keys_stay_inside: bool,
    /// `C_WrapKey` and `C_UnwrapKey` answer `CKR_FUNCTION_NOT_SUPPORTED` (tpm2-pkcs11 1.9),
    /// whatever mechanisms are listed: no import (BYOK) and no export.
    pub no_key_wrapping: bool,
    /// A `C_Decrypt` that fails leaves the decryption active in its session, so the next
    /// `C_DecryptInit` there answers `CKR_OPERATION_ACTIVE` (tpm2-pkcs11 1.9): a session whose
    /// call was refused as a bad input is closed, not reused.
    pub failed_operation_stays_active: bool,
    /// A key template with `CKA_UNWRAP_TEMPLATE` fails the generation with
    /// `CKR_GENERAL_ERROR` (tpm2-pkcs11 1.9, which has no `C_UnwrapKey` either: nothing
    /// would ever be unwrapped under such a key). Where set, keys are made without one
    /// (`hsm::key_policy`); the key ceremony's transport key is never made without it.
    pub unwrap_template_refused: bool,
    /// Material that unwraps (the wrapping is right) but does not decode as a key of the
    /// template's type (a PKCS#1 or SEC1 private key where PKCS#8 is wanted, an EC key for
    /// an RSA template, random bytes) is answered `CKR_FUNCTION_FAILED` by `C_UnwrapKey`
    /// (SoftHSM2 2.6), not `CKR_WRAPPED_KEY_INVALID`: it is the caller's material refused.
    pub undecodable_unwrap_as_function_failed: bool,
}

/// The modules keyplane knows by name.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Module {
    SoftHsm2,
    Tpm2Pkcs11,
    #[default]
    Other,
}

impl Module {
    /// The module from its `C_GetInfo` library manufacturer and description.
    pub fn identify(manufacturer: &str, description: &str) -> Module {
        let (m, d) = (manufacturer.trim(), description.trim());
        if m == "SoftHSM" {
            Module::SoftHsm2
        } else if m == "tpm2-software.github.io" || d.starts_with("TPM2.0 Cryptoki") {
            Module::Tpm2Pkcs11
        } else {
            Module::Other
        }
    }

    /// The module that `pkcs11` is.
    pub fn of(pkcs11: &Pkcs11) -> Module {
        match pkcs11.get_library_info() {
            Ok(info) => Module::identify(info.manufacturer_id(), info.library_description()),
            Err(_) => Module::Other,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Module::SoftHsm2 => "SoftHSM2",
            Module::Tpm2Pkcs11 => "tpm2-pkcs11",
            Module::Other => "other",
        }
    }

    pub fn quirks(self) -> Quirks {
        match self {
            Module::SoftHsm2 => Quirks {
                bad_input_as_general_error: true,
                computes_in_process: true,
                object_calls_race: true,
                no_generate_key: false,
                no_session_objects: false,
                fixed_key_uses: false,
                private_keys_stay_inside: false,
                no_key_wrapping: false,
                failed_operation_stays_active: false,
                unwrap_template_refused: false,
                undecodable_unwrap_as_function_failed: true,
            },
            Module::Tpm2Pkcs11 => Quirks {
                bad_input_as_general_error: true,
                no_generate_key: true,
                no_session_objects: true,
                fixed_key_uses: true,
                private_keys_stay_inside: true,
                no_key_wrapping: true,
                failed_operation_stays_active: true,
                unwrap_template_refused: true,
                ..Quirks::default()
            },
            Module::Other => Quirks::default(),
        }
    }
}

impl Quirks {
    /// Whether `e` is the token rejecting its input (a ciphertext or wrapped key that does
    /// not decrypt), as opposed to the token failing.
    pub fn rejects_input(self, e: &CkError) -> bool {
        match e {
            CkError::Pkcs11(rv, _) => match rv {
                RvError::EncryptedDataInvalid
                | RvError::EncryptedDataLenRange
                | RvError::WrappedKeyInvalid
                | RvError::WrappedKeyLenRange => true,
                RvError::GeneralError => self.bad_input_as_general_error,
                _ => false,
            },
            _ => false,
        }
    }

    /// Whether `e` is the token refusing material it was given to unwrap (bytes that do not
    /// unwrap, or that unwrap to a key its template does not fit: an import's material, an
    /// export of the root key, a world copy), as opposed to the token failing:
    /// [`Quirks::rejects_input`] and the data, template and size answers.
    pub fn rejects_material(self, e: &CkError) -> bool {
        self.rejects_input(e)
            || matches!(
                e,
                CkError::Pkcs11(
                    RvError::DataInvalid
                        | RvError::DataLenRange
                        | RvError::TemplateInconsistent
                        | RvError::TemplateIncomplete
                        | RvError::AttributeValueInvalid
                        | RvError::KeySizeRange,
                    _
                )
            )
    }

    /// Whether `e`, from a `C_UnwrapKey` of a caller's private key (PKCS#8 under a key only
    /// this request holds), is the module refusing what the bytes unwrapped to: as
    /// [`Quirks::rejects_material`], and `CKR_FUNCTION_FAILED` where the module answers so
    /// for material that is no key of the template's type. Only there: elsewhere (the root
    /// key's import, world copies) the same code is also how SoftHSM2 reports a failed write
    /// of its token, which must not read as bad material.
    pub fn rejects_private_key(self, e: &CkError) -> bool {
        let function_failed = matches!(
            e,
            CkError::Pkcs11(
                RvError::FunctionFailed,
                cryptoki::context::Function::UnwrapKey
            )
        );
        self.rejects_material(e) || (function_failed && self.undecodable_unwrap_as_function_failed)
    }

    /// Whether the module can use `m` although it lists it.
    pub fn usable(self, m: MechanismType) -> bool {
        !(self.no_generate_key
            && (m == MechanismType::AES_KEY_GEN || m == MechanismType::GENERIC_SECRET_KEY_GEN))
    }

    /// `template` as the module takes it: without the uses it forbids, where it refuses those
    /// (see [`Quirks::fixed_key_uses`]).
    pub fn template(self, mut template: Vec<Attribute>) -> Vec<Attribute> {
        if self.fixed_key_uses {
            template.retain(|a| {
                !matches!(
                    a,
                    Attribute::Sign(false)
                        | Attribute::Verify(false)
                        | Attribute::Encrypt(false)
                        | Attribute::Decrypt(false)
                        | Attribute::Wrap(false)
                        | Attribute::Unwrap(false)
                        | Attribute::Derive(false)
                )
            });
        }
        template
    }

    /// The names of the quirks set, for `describe-hsm`.
    pub fn names(self) -> Vec<&'static str> {
        let mut names = Vec::new();
        if self.bad_input_as_general_error {
            names.push("a ciphertext that does not decrypt is reported as CKR_GENERAL_ERROR");
        }
        if self.computes_in_process {
            names.push("computes in process, so session copies of token objects are allowed");
        }
        if self.object_calls_race {
            names.push("object calls race with CKR_GENERAL_ERROR, so they take turns");
        }
        if self.no_generate_key {
            names.push("lists CKM_AES_KEY_GEN but has no C_GenerateKey");
        }
        if self.no_session_objects {
            names.push("no session objects: every key is a token object");
        }
        if self.fixed_key_uses {
            names.push("key uses fixed by the module: templates cannot forbid one");
        }
        if self.private_keys_stay_inside {
            names.push("generated private keys never leave the module");
        }
        if self.no_key_wrapping {
            names.push("no C_WrapKey or C_UnwrapKey");
        }
        if self.failed_operation_stays_active {
            names.push("a failed decryption stays active in its session, which is closed");
        }
        if self.unwrap_template_refused {
            names.push("refuses CKA_UNWRAP_TEMPLATE in a key template");
        }
        if self.undecodable_unwrap_as_function_failed {
            names.push(
                "unwrapped material that is no key of its type is reported as CKR_FUNCTION_FAILED",
            );
        }
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modules_are_known_by_their_library_info() {
        assert_eq!(
            Module::identify(
                "SoftHSM                         ",
                "Implementation of PKCS11"
            ),
            Module::SoftHsm2
        );
        assert_eq!(
            Module::identify("tpm2-software.github.io", "TPM2.0 Cryptoki"),
            Module::Tpm2Pkcs11
        );
        assert_eq!(Module::identify("Thales", "Luna"), Module::Other);
    }

    #[test]
    fn a_general_error_is_a_rejected_input_only_where_the_module_says_so() {
        let general = CkError::Pkcs11(RvError::GeneralError, cryptoki::context::Function::Decrypt);
        let invalid = CkError::Pkcs11(
            RvError::EncryptedDataInvalid,
            cryptoki::context::Function::Decrypt,
        );
        let soft = Module::SoftHsm2.quirks();
        let tpm = Module::Tpm2Pkcs11.quirks();
        assert!(soft.rejects_input(&general) && soft.rejects_input(&invalid));
        assert!(tpm.rejects_input(&general) && tpm.rejects_input(&invalid));
        let other = Module::Other.quirks();
        assert!(!other.rejects_input(&general) && other.rejects_input(&invalid));
        // The same holds for material to unwrap (imports, the root key's export, world
        // copies): a general error is the module failing, unless its quirk says otherwise.
        let unwrap = |rv| CkError::Pkcs11(rv, cryptoki::context::Function::UnwrapKey);
        assert!(soft.rejects_material(&unwrap(RvError::GeneralError)));
        assert!(!other.rejects_material(&unwrap(RvError::GeneralError)));
        for rv in [
            RvError::WrappedKeyInvalid,
            RvError::TemplateInconsistent,
            RvError::KeySizeRange,
        ] {
            assert!(other.rejects_material(&unwrap(rv)), "{rv:?}");
        }
        assert!(!soft.rejects_material(&unwrap(RvError::DeviceError)));
        // SoftHSM2's answer to material that unwraps but is no key of the template's type, for
        // an imported private key only.
        assert!(soft.rejects_private_key(&unwrap(RvError::FunctionFailed)));
        assert!(!soft.rejects_material(&unwrap(RvError::FunctionFailed)));
        assert!(!other.rejects_private_key(&unwrap(RvError::FunctionFailed)));
        let decrypt = CkError::Pkcs11(
            RvError::FunctionFailed,
            cryptoki::context::Function::Decrypt,
        );
        assert!(!soft.rejects_private_key(&decrypt), "only of C_UnwrapKey");
    }

    #[test]
    fn a_listed_mechanism_without_its_function_is_not_usable() {
        let tpm = Module::Tpm2Pkcs11.quirks();
        assert!(!tpm.usable(MechanismType::AES_KEY_GEN));
        assert!(tpm.usable(MechanismType::RSA_PKCS_OAEP));
        assert!(Module::SoftHsm2.quirks().usable(MechanismType::AES_KEY_GEN));
        assert_eq!(Module::SoftHsm2.quirks().names().len(), 4);
    }

    #[test]
    fn fixed_key_uses_drop_only_forbidden_uses() {
        let template = vec![
            Attribute::Sign(true),
            Attribute::Verify(false),
            Attribute::Derive(false),
            Attribute::Token(false),
        ];
        let tpm = Module::Tpm2Pkcs11.quirks().template(template.clone());
        assert_eq!(tpm, vec![Attribute::Sign(true), Attribute::Token(false)]);
        assert_eq!(
            Module::SoftHsm2.quirks().template(template.clone()),
            template
        );
    }
}
