//! The key ceremony inside the token: what puts one root key into several nodes' tokens
//! without its value ever leaving an HSM unwrapped (see `keyplane::ceremony` for the commands
//! around it, and docs/deployment.md for the procedure).
//!
//! 1. A joining node makes a *transport key* ([`create_transport_key`]): an RSA key pair
//!    (3072 or 4096 bits) of token objects labelled [`TRANSPORT_KEY_LABEL`], the private half
//!    sensitive, non-extractable and able only to unwrap, and only into what `import-root`
//!    makes of the export (its `CKA_UNWRAP_TEMPLATE`: see below). Its public key leaves as PEM
//!    with a fingerprint (SHA-256 of the SubjectPublicKeyInfo) to compare out of band.
//! 2. An existing node wraps its root key to that public key ([`export_root`]) with
//!    `CKM_RSA_PKCS_OAEP` (the hash the token accepts, see `capabilities::ceremony_oaep`) and
//!    computes the root key's check value ([`check_value`]).
//! 3. The joining node unwraps it with the transport private key into a token object
//!    ([`import_root`]), first under a provisional label; only when its check value matches
//!    does it become the root key. The transport key pair is destroyed then.
//!
//! # How the root key can be wrapped at all
//! A key created `CKA_EXTRACTABLE` false can never be wrapped (the attribute cannot go back
//! to true), and a plainly extractable key can be wrapped by anyone holding the user PIN: a
//! session AES key of a value they chose would reveal it. keyplane creates root keys
//! `CKA_EXTRACTABLE` true *and* `CKA_WRAP_WITH_TRUSTED` true (and sensitive): only a wrapping
//! key with `CKA_TRUSTED` may wrap it, and only the security officer can set `CKA_TRUSTED`.
//! [`export_root`] logs in as the SO to create the recipient's public key as a trusted
//! *session* object (public, so it outlives the SO's logout; gone with the session, never in
//! the token), then as the user to wrap. So exporting the root key takes the SO PIN as well
//! as the user PIN; the user PIN alone (what a running node holds) cannot. SoftHSM2 2.6
//! enforces both rules (checked against the real token by the `probe-extraction` test hook):
//! wrapping with an untrusted key fails `CKR_KEY_NOT_WRAPPABLE`, the user cannot set
//! `CKA_TRUSTED`, and `CKA_WRAP_WITH_TRUSTED` can neither be cleared nor dropped in a copy.
//!
//! The other end needs the same care: on the joining node, the user PIN and the export file
//! would otherwise do. The transport private key unwraps only into a sensitive AES key that
//! is wrappable only by a trusted key, derives nothing and takes only the root key's
//! mechanisms (its `CKA_UNWRAP_TEMPLATE`, which SoftHSM2 enforces: anything else answers
//! `CKR_TEMPLATE_INCONSISTENT`), takes only `CKM_RSA_PKCS_OAEP`, and is neither modifiable
//! nor copyable: SoftHSM2 lets the user set `CKA_DECRYPT` on a modifiable key (or on a copy)
//! and decrypt the export with it. See `hsm::key_policy`; tests/ceremony.rs tries each way on
//! the joining node's token before the import. A module that refuses the unwrap template
//! cannot make a transport key, so cannot join: nothing would stop an unwrap into a readable
//! object there. What this protects is the root key's value: an unwrap into a second,
//! sensitive copy that lacks the root key's own unwrap template is still possible (a template
//! cannot carry another), and such a copy unwraps into extractable objects, as the user PIN
//! alone allows with any root key (`docs/hsm.md`).
//!
//! Trade-offs: with the embedded token the generated SO PIN sits in `<data-dir>/hsm-so.pin`
//! next to the user PIN, so on such a node the rule separates nothing from someone who reads
//! the data dir (who could read the token files anyway); it does where the SO PIN is held
//! apart (`KEYPLANE_HSM_SO_PIN` at ceremony time only). The alternative, a second, separately
//! wrapped copy of the root key, would need a key to wrap it that is itself stored somewhere,
//! and gives nothing the trusted-wrap rule does not. A network HSM shared by every node needs
//! no ceremony at all (one token, see docs/deployment.md).
//!
//! Root keys made before this (`CKA_EXTRACTABLE` false) stay as they are and keep working;
//! [`export_root`] refuses them with an error that says so: such a data dir cannot seed
//! another node.

use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use secrecy::{ExposeSecret, SecretString};

use super::token::{root_key_template, TRANSPORT_KEY_LABEL};
use super::wrapping::OaepHash;
use super::{GCM_IV_LEN, GCM_TAG_BITS, ROOT_KEY_LABEL};
use crate::algorithms::public_key::{spki_der, spki_pem, PublicParts};
use crate::algorithms::KeySpec;

/// Label of an imported root key until its check value is verified.
const UNVERIFIED_ROOT_LABEL: &str = "keyplane-root-v1-unverified";
/// AAD of the root key's check value.
const CHECK_LABEL: &[u8] = b"keyplane root key check value v1";
/// The transport key sizes offered.
pub const TRANSPORT_BITS: [u64; 2] = [3072, 4096];

/// A transport key's public half.
pub struct TransportPublic {
    pub spki_der: Vec<u8>,
    /// SHA-256 (hex) of the DER SubjectPublicKeyInfo.
    pub fingerprint: String,
}

impl TransportPublic {
    /// From a big-endian modulus and public exponent.
    pub fn from_parts(modulus: Vec<u8>, exponent: Vec<u8>) -> anyhow::Result<Self> {
        let spec = if modulus.len() * 8 > 3072 {
            KeySpec::Rsa4096
        } else {
            KeySpec::Rsa3072
        };
        let der = spki_der(spec, &PublicParts::Rsa { modulus, exponent })?;
        Ok(TransportPublic {
            fingerprint: fingerprint(&der),
            spki_der: der,
        })
    }

    /// `-----BEGIN PUBLIC KEY-----` PEM.
    pub fn pem(&self) -> anyhow::Result<String> {
        Ok(spki_pem(&self.spki_der)?)
    }
}

/// SHA-256 (hex) of a DER SubjectPublicKeyInfo.
pub fn fingerprint(spki_der: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, spki_der))
}

/// The root key wrapped to a transport key.
pub struct RootExport {
    pub oaep: OaepHash,
    pub wrapped: Vec<u8>,
    pub check_value: Vec<u8>,
}

fn ck(context: &'static str) -> impl Fn(CkError) -> anyhow::Error {
    move |e| anyhow::anyhow!("{context}: {e}")
}

fn find(s: &Session, class: ObjectClass, label: &str) -> anyhow::Result<Vec<ObjectHandle>> {
    s.find_objects(&[
        Attribute::Class(class),
        Attribute::Label(label.as_bytes().to_vec()),
    ])
    .map_err(ck("find objects"))
}

/// The token's AES root key. A token whose root key is an RSA key pair (a module without AES
/// key wrap: see `hsm::sealing`) has a root key that can never leave it, so it can take no
/// part in the ceremony, neither giving nor receiving.
fn root_key(s: &Session) -> anyhow::Result<Option<ObjectHandle>> {
    if !find(s, ObjectClass::PRIVATE_KEY, ROOT_KEY_LABEL)?.is_empty() {
        anyhow::bail!(
            "this token's root key is an RSA key pair (the token has no AES key wrap): it never leaves the token, so this node can neither pass it on nor join others; scale-out needs a module with CKM_AES_KEY_WRAP_PAD (docs/hsm.md)"
        );
    }
    Ok(find(s, ObjectClass::SECRET_KEY, ROOT_KEY_LABEL)?
        .into_iter()
        .next())
}

/// The key check value of `key`: the AES-GCM tag of an empty message under a zero IV with
/// [`CHECK_LABEL`] as AAD (as import-key-material's check values). It tells whether two
/// tokens hold the same root key and reveals nothing about it.
pub fn check_value(s: &Session, key: ObjectHandle) -> anyhow::Result<Vec<u8>> {
    let mut iv = [0u8; GCM_IV_LEN];
    let params = GcmParams::new(&mut iv, CHECK_LABEL, GCM_TAG_BITS.into()).map_err(ck("gcm"))?;
    s.encrypt(&Mechanism::AesGcm(params), key, &[])
        .map_err(ck("root key check value"))
}

/// The public half of the token's transport key, if it has one.
pub fn transport_public(s: &Session) -> anyhow::Result<Option<TransportPublic>> {
    let Some(h) = find(s, ObjectClass::PUBLIC_KEY, TRANSPORT_KEY_LABEL)?
        .into_iter()
        .next()
    else {
        return Ok(None);
    };
    let (mut n, mut e) = (None, None);
    for a in s
        .get_attributes(h, &[AttributeType::Modulus, AttributeType::PublicExponent])
        .map_err(ck("read the transport public key"))?
    {
        match a {
            Attribute::Modulus(v) => n = Some(v),
            Attribute::PublicExponent(v) => e = Some(v),
            _ => {}
        }
    }
    let (n, e) = n
        .zip(e)
        .ok_or_else(|| anyhow::anyhow!("the transport public key has no modulus"))?;
    Ok(Some(TransportPublic::from_parts(n, e)?))
}

/// Make the transport key pair of a joining node (logged in as the user). Refused when the
/// token already has a root key (it is a node already) or a transport key.
pub fn create_transport_key(s: &Session, bits: u64) -> anyhow::Result<TransportPublic> {
    if !TRANSPORT_BITS.contains(&bits) {
        anyhow::bail!("a transport key has 3072 or 4096 bits, not {bits}");
    }
    if root_key(s)?.is_some() {
        anyhow::bail!(
            "this token already holds a root key: it belongs to a node already, and a root key imported into it would replace that node's"
        );
    }
    if let Some(existing) = transport_public(s)? {
        anyhow::bail!(
            "this token already holds a transport key (fingerprint {}): finish the ceremony with `keyplane hsm import-root`",
            existing.fingerprint
        );
    }
    let id = TRANSPORT_KEY_LABEL.as_bytes().to_vec();
    let public = [
        Attribute::Token(true),
        Attribute::Private(false),
        Attribute::ModulusBits(bits.into()),
        Attribute::PublicExponent(vec![0x01, 0x00, 0x01]),
        Attribute::Wrap(true),
        Attribute::Encrypt(false),
        Attribute::Verify(false),
        Attribute::Id(id.clone()),
        Attribute::Label(id.clone()),
    ];
    let mut private = vec![
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Unwrap(true),
        Attribute::Decrypt(false),
        Attribute::Sign(false),
        Attribute::Derive(false),
        Attribute::Id(id.clone()),
        Attribute::Label(id),
    ];
    // What it may unwrap into, and that nobody can change that (module docs).
    private.extend(super::key_policy::transport_private());
    match s.generate_key_pair(&Mechanism::RsaPkcsKeyPairGen, &public, &private) {
        Ok(_) => {}
        Err(
            e @ CkError::Pkcs11(
                RvError::AttributeTypeInvalid
                | RvError::AttributeValueInvalid
                | RvError::TemplateInconsistent
                | RvError::GeneralError,
                _,
            ),
        ) => anyhow::bail!(
            "the token refused a transport key that unwraps the root key only into a sensitive key (CKA_UNWRAP_TEMPLATE, CKA_ALLOWED_MECHANISMS, CKA_MODIFIABLE false: {e}); without them anyone with this token's user PIN and the export could read the root key, so this token cannot join by the key ceremony"
        ),
        Err(e) => return Err(ck("generate the transport key pair")(e)),
    }
    transport_public(s)?.ok_or_else(|| anyhow::anyhow!("the transport key vanished"))
}

/// Wrap the root key to the transport public key (`modulus`, `exponent`): as the user,
/// check that the root key can be exported at all; as the SO (`so_pin` is asked for only
/// then), make that public key a trusted session object; as the user again, wrap (see the
/// module docs). `s` is not logged in, and is logged out again on return.
pub fn export_root(
    s: &Session,
    so_pin: impl FnOnce() -> anyhow::Result<SecretString>,
    user_pin: &SecretString,
    (modulus, exponent): (&[u8], &[u8]),
) -> anyhow::Result<RootExport> {
    super::token::user_login(s, user_pin)?;
    let checked = exportable_root(s).and_then(|root| {
        let oaep = super::capabilities::ceremony_oaep(s).ok_or_else(|| {
            anyhow::anyhow!(
                "the token does not do RSA-OAEP: it cannot wrap the root key to a transport key"
            )
        })?;
        Ok((root, oaep))
    });
    let _ = s.logout();
    // The root key's handle ends with the logout (a private object): found again below.
    let (_, oaep) = checked?;
    let so_pin = so_pin()?;
    match s.login(UserType::So, Some(&AuthPin::from(so_pin.expose_secret()))) {
        Ok(()) => {}
        Err(CkError::Pkcs11(RvError::PinIncorrect, _)) => {
            anyhow::bail!("HSM SO login failed: the SO PIN is incorrect")
        }
        Err(e) => anyhow::bail!("HSM SO login failed: {e}"),
    }
    // Public (CKA_PRIVATE false): a session object the SO made outlives the SO's logout only
    // if it is public. A session object: it is gone with the session, whatever happens.
    let recipient = s.create_object(&[
        Attribute::Token(false),
        Attribute::Private(false),
        Attribute::Class(ObjectClass::PUBLIC_KEY),
        Attribute::KeyType(KeyType::RSA),
        Attribute::Modulus(modulus.to_vec()),
        Attribute::PublicExponent(exponent.to_vec()),
        Attribute::Wrap(true),
        Attribute::Encrypt(false),
        Attribute::Trusted(true),
    ]);
    let _ = s.logout();
    let recipient = recipient.map_err(ck("create the trusted transport public key (as SO)"))?;
    let out = super::token::user_login(s, user_pin).and_then(|()| {
        let root = exportable_root(s)?;
        let wrapped = s
            .wrap_key(&oaep.mechanism(), recipient, root)
            .map_err(ck("wrap the root key to the transport key"))?;
        Ok(RootExport {
            oaep,
            wrapped,
            check_value: check_value(s, root)?,
        })
    });
    let _ = s.destroy_object(recipient);
    let _ = s.logout();
    out
}

/// The root key, if it is one the ceremony can export (logged in as the user).
fn exportable_root(s: &Session) -> anyhow::Result<ObjectHandle> {
    let root = root_key(s)?.ok_or_else(|| {
        anyhow::anyhow!("this token holds no root key {ROOT_KEY_LABEL:?}: nothing to export")
    })?;
    let attrs = s
        .get_attributes(
            root,
            &[AttributeType::Extractable, AttributeType::WrapWithTrusted],
        )
        .map_err(ck("read the root key's attributes"))?;
    let extractable = attrs
        .iter()
        .any(|a| matches!(a, Attribute::Extractable(true)));
    let trusted_only = attrs
        .iter()
        .any(|a| matches!(a, Attribute::WrapWithTrusted(true)));
    if !extractable {
        anyhow::bail!(
            "this data dir's root key was created non-extractable (hsm.root_key_exportable was off when it was made, the default, or by a keyplane from before the key ceremony): it can never leave this token, so this node cannot give its root key to another. It keeps working as it is; for several nodes, seed them from a node first started with hsm.root_key_exportable = true, or use one network HSM for every node (docs/deployment.md)"
        );
    }
    if !trusted_only {
        anyhow::bail!(
            "the root key is extractable without CKA_WRAP_WITH_TRUSTED (keyplane never makes it so): refusing to export it"
        );
    }
    Ok(root)
}

/// Unwrap an exported root key with the transport private key into this token's root key
/// (logged in as the user; exportable again only with `exportable`), verify its check value
/// and that it opens `anchor` (AAD, then IV and ciphertext: a secret of the shared database
/// sealed by the cluster's root key; the check value alone proves nothing, as it travels in
/// the export), destroy the transport key pair. Refused when the token already has a root
/// key (the same one: imported before; another: this token belongs to other nodes).
pub fn import_root(
    s: &Session,
    quirks: super::quirks::Quirks,
    export: &RootExport,
    exportable: bool,
    anchor: (&[u8], &[u8]),
) -> anyhow::Result<()> {
    if let Some(existing) = root_key(s)? {
        if check_value(s, existing)? == export.check_value {
            anyhow::bail!(
                "this token already holds this root key (imported before): nothing to do"
            );
        }
        anyhow::bail!(
            "this token already holds a different root key: refusing to replace it (everything it wraps would be lost)"
        );
    }
    // Left by an import that stopped half-way.
    for h in find(s, ObjectClass::SECRET_KEY, UNVERIFIED_ROOT_LABEL)? {
        let _ = s.destroy_object(h);
    }
    let private = find(s, ObjectClass::PRIVATE_KEY, TRANSPORT_KEY_LABEL)?
        .into_iter()
        .next()
        .ok_or_else(|| {
            anyhow::anyhow!("this token holds no transport key: run `keyplane hsm transport-key` first (an import uses it up)")
        })?;
    let template = root_key_template(UNVERIFIED_ROOT_LABEL, exportable, quirks);
    let root = match s.unwrap_key(&export.oaep.mechanism(), private, &export.wrapped, &template) {
        Ok(h) => h,
        Err(e) if quirks.rejects_material(&e) => anyhow::bail!(
            "the export does not unwrap with this node's transport key: it was altered, or made for another transport key"
        ),
        Err(e) => return Err(ck("unwrap the root key")(e)),
    };
    let verified = check_value(s, root).map(|c| c == export.check_value);
    if !matches!(verified, Ok(true)) {
        let _ = s.destroy_object(root);
        verified?;
        anyhow::bail!(
            "the unwrapped key's check value differs from the export's: the export was altered; nothing imported"
        );
    }
    if !opens(s, root, anchor) {
        let _ = s.destroy_object(root);
        anyhow::bail!(
            "the unwrapped key does not open what the database holds sealed by the cluster's root key: the export is not of this cluster's root key; nothing imported"
        );
    }
    s.update_attributes(
        root,
        &[
            Attribute::Label(ROOT_KEY_LABEL.as_bytes().to_vec()),
            Attribute::Id(ROOT_KEY_LABEL.as_bytes().to_vec()),
        ],
    )
    .map_err(ck("label the imported root key"))?;
    for class in [ObjectClass::PRIVATE_KEY, ObjectClass::PUBLIC_KEY] {
        for h in find(s, class, TRANSPORT_KEY_LABEL)? {
            s.destroy_object(h)
                .map_err(ck("destroy the transport key pair"))?;
        }
    }
    Ok(())
}

/// Whether `key` opens `(aad, iv ‖ AES-GCM ciphertext)`.
fn opens(s: &Session, key: ObjectHandle, (aad, blob): (&[u8], &[u8])) -> bool {
    let Some((iv, sealed)) = blob.split_at_checked(GCM_IV_LEN) else {
        return false;
    };
    let mut iv = iv.to_vec();
    let Ok(params) = GcmParams::new(&mut iv, aad, GCM_TAG_BITS.into()) else {
        return false;
    };
    // The plaintext (the token-hash key) is dropped at once, zeroized.
    s.decrypt(&Mechanism::AesGcm(params), key, sealed)
        .map(zeroize::Zeroizing::new)
        .is_ok()
}

/// Test hook: what the token answers to the ways of getting the root key out with only the
/// user PIN (logged in as the user). Each entry names an attempt and its result; every
/// result must be a refusal for the ceremony's design to hold (see the module docs).
#[cfg(all(feature = "test-hooks", debug_assertions))]
pub fn probe_extraction(s: &Session) -> anyhow::Result<Vec<(&'static str, String)>> {
    let root = root_key(s)?.ok_or_else(|| anyhow::anyhow!("no root key"))?;
    let answer = |r: Result<Vec<u8>, CkError>| match r {
        Ok(_) => "WRAPPED".to_string(),
        Err(e) => e.to_string(),
    };
    let mut found = Vec::new();
    // An RSA public key of the user's own, untrusted.
    let pair = s.generate_key_pair(
        &Mechanism::RsaPkcsKeyPairGen,
        &[
            Attribute::Token(false),
            Attribute::ModulusBits(2048u64.into()),
            Attribute::PublicExponent(vec![0x01, 0x00, 0x01]),
            Attribute::Wrap(true),
        ],
        &[Attribute::Token(false), Attribute::Unwrap(true)],
    );
    if let Ok((public, _)) = pair {
        found.push((
            "wrap with an untrusted RSA key",
            answer(s.wrap_key(&OaepHash::Sha1.mechanism(), public, root)),
        ));
        found.push((
            "mark a key trusted as the user",
            match s.update_attributes(public, &[Attribute::Trusted(true)]) {
                Ok(()) => "SET".into(),
                Err(e) => e.to_string(),
            },
        ));
    }
    // An AES key of a value the user knows.
    let known = s.create_object(&[
        Attribute::Token(false),
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::Value(vec![7u8; 32]),
        Attribute::Wrap(true),
    ]);
    if let Ok(known) = known {
        found.push((
            "wrap with an AES key of a known value",
            answer(s.wrap_key(&Mechanism::AesKeyWrapPad, known, root)),
        ));
    }
    // Why key versions' world copies cannot rest on CKA_WRAP_WITH_TRUSTED (see `hsm::world`):
    // the root key is not trusted, and the user cannot make it so.
    // A sensitive, extractable AES-256 session key, with `extra` attributes.
    let session_aes = |extra: &[Attribute]| {
        let mut template = vec![
            Attribute::Token(false),
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
            Attribute::ValueLen(32u64.into()),
            Attribute::Sensitive(true),
            Attribute::Extractable(true),
        ];
        template.extend_from_slice(extra);
        s.generate_key(&Mechanism::AesKeyGen, &template)
    };
    let trusted_only = session_aes(&[Attribute::WrapWithTrusted(true)]);
    if let Ok(key) = trusted_only {
        found.push((
            "wrap a wrap-with-trusted key with the root key",
            answer(s.wrap_key(&Mechanism::AesKeyWrapPad, root, key)),
        ));
        let _ = s.destroy_object(key);
    }
    found.push((
        "mark the root key trusted as the user",
        match s.update_attributes(root, &[Attribute::Trusted(true)]) {
            Ok(()) => "SET".into(),
            Err(e) => e.to_string(),
        },
    ));
    found.push((
        "clear CKA_WRAP_WITH_TRUSTED",
        match s.update_attributes(root, &[Attribute::WrapWithTrusted(false)]) {
            Ok(()) => "SET".into(),
            Err(e) => e.to_string(),
        },
    ));
    found.push((
        "clear CKA_SENSITIVE",
        match s.update_attributes(root, &[Attribute::Sensitive(false)]) {
            Ok(()) => "SET".into(),
            Err(e) => e.to_string(),
        },
    ));
    found.push((
        "copy without CKA_WRAP_WITH_TRUSTED",
        match s.copy_object(
            root,
            &[Attribute::Token(false), Attribute::WrapWithTrusted(false)],
        ) {
            Ok(copy) => {
                let flag = s
                    .get_attributes(copy, &[AttributeType::WrapWithTrusted])
                    .ok()
                    .into_iter()
                    .flatten()
                    .any(|a| matches!(a, Attribute::WrapWithTrusted(true)));
                let _ = s.destroy_object(copy);
                if flag {
                    "COPIED (still wrap-with-trusted)".into()
                } else {
                    "COPIED".into()
                }
            }
            Err(e) => e.to_string(),
        },
    ));
    // A key wrapped by the root key (as world copies and tenant KEKs are) unwrapped into a
    // readable object, and the root key used with a mechanism with which AES key wrap is
    // undone by hand: what `hsm::key_policy` forbids a root key made or imported now.
    let wrappable = session_aes(&[]);
    if let Ok(key) = wrappable {
        if let Ok(wrapped) = s.wrap_key(&Mechanism::AesKeyWrapPad, root, key) {
            let readable = [
                Attribute::Token(false),
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::AES),
                Attribute::Sensitive(false),
                Attribute::Extractable(true),
            ];
            found.push((
                "unwrap a root-wrapped key readable",
                match s.unwrap_key(&Mechanism::AesKeyWrapPad, root, &wrapped, &readable) {
                    Ok(h) => {
                        let _ = s.destroy_object(h);
                        "UNWRAPPED".into()
                    }
                    Err(e) => e.to_string(),
                },
            ));
        }
        let _ = s.destroy_object(key);
    }
    found.push((
        "decrypt with the root key in AES-ECB",
        match s.decrypt(&Mechanism::AesEcb, root, &[0u8; 16]) {
            Ok(_) => "DECRYPTED".into(),
            Err(e) => e.to_string(),
        },
    ));
    found.push((
        "read CKA_VALUE",
        match s.get_attributes(root, &[AttributeType::Value]) {
            Ok(v) if v.iter().any(|a| matches!(a, Attribute::Value(_))) => "READ".into(),
            Ok(_) => "unavailable".into(),
            Err(e) => e.to_string(),
        },
    ));
    Ok(found)
}
