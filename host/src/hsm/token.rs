//! Opening the token: SoftHSM2 config for the embedded default, the user PIN, first-start
//! token initialisation (`C_InitToken`/`C_InitPIN`), login and the root key.
//!
//! PIN trade-off (embedded default only): when neither `KEYPLANE_HSM_PIN` nor a PIN file is
//! configured, a random PIN is generated into `<data-dir>/hsm.pin` with mode 0600, next to
//! the token it unlocks. Anyone who can read the data dir can then use the token, so this
//! protects against nothing but other unprivileged users of the machine. Production setups
//! pass the PIN through `KEYPLANE_HSM_PIN` or a PIN file on a separate secret mount.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use secrecy::{ExposeSecret, SecretString};

use super::quirks::Module;
use super::sealing::{RootKey, Scheme};
use super::{Hsm, Live, Opener, ROOT_KEY_LABEL};
use crate::config::Config;

/// Environment variable holding the user PIN.
pub const PIN_ENV: &str = "KEYPLANE_HSM_PIN";

/// Write the embedded SoftHSM2 config (token dir inside the data dir) and return its path.
/// The caller must export `SOFTHSM2_CONF` before any thread is started.
pub fn prepare_embedded_softhsm(data_dir: &Path) -> anyhow::Result<PathBuf> {
    let token_dir = data_dir.join("softhsm").join("tokens");
    fs::create_dir_all(&token_dir)?;
    fs::set_permissions(data_dir.join("softhsm"), fs::Permissions::from_mode(0o700))?;
    let conf = data_dir.join("softhsm").join("softhsm2.conf");
    let token_dir = fs::canonicalize(&token_dir)?;
    let body = format!(
        "# written by keyplane for the embedded SoftHSM2 token\n\
         directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n",
        token_dir.display()
    );
    if fs::read_to_string(&conf).ok().as_deref() != Some(body.as_str()) {
        fs::write(&conf, body)?;
    }
    Ok(conf)
}

/// Write `contents` to a new file readable only by the owner.
pub fn write_secret_file(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(contents)?;
    f.sync_all()?;
    Ok(())
}

fn random_pin() -> anyhow::Result<SecretString> {
    use ring::rand::SecureRandom;
    let mut raw = zeroize::Zeroizing::new([0u8; 24]);
    ring::rand::SystemRandom::new()
        .fill(raw.as_mut())
        .map_err(|_| anyhow::anyhow!("OS random generator failed"))?;
    Ok(SecretString::from(hex::encode(raw.as_ref())))
}

fn read_pin_file(path: &Path) -> anyhow::Result<SecretString> {
    let s = zeroize::Zeroizing::new(
        fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read PIN file {}: {e}", path.display()))?,
    );
    Ok(SecretString::from(s.trim().to_string()))
}

/// Where the user PIN comes from: env, configured file, or the generated embedded file.
/// Returns `None` when the embedded file does not exist yet (the token is new).
fn configured_pin(config: &Config) -> anyhow::Result<Option<SecretString>> {
    if let Ok(pin) = std::env::var(PIN_ENV) {
        return Ok(Some(SecretString::from(pin)));
    }
    if let Some(file) = &config.hsm.pin_file {
        return read_pin_file(file).map(Some);
    }
    let embedded = config.data_dir.join("hsm.pin");
    if embedded.exists() {
        return read_pin_file(&embedded).map(Some);
    }
    Ok(None)
}

fn find_token(pkcs11: &Pkcs11, label: &str) -> anyhow::Result<Option<Slot>> {
    for slot in pkcs11.get_slots_with_initialized_token()? {
        if pkcs11.get_token_info(slot)?.label() == label {
            return Ok(Some(slot));
        }
    }
    Ok(None)
}

/// Initialise a fresh token labelled `label` in the first free slot and set its user PIN.
/// `keep_so_pin`: write the SO PIN next to the generated user PIN (embedded mode only; with a
/// PIN supplied from outside, the SO PIN is not kept anywhere keyplane writes).
fn init_token(
    pkcs11: &Pkcs11,
    config: &Config,
    user_pin: &SecretString,
    keep_so_pin: bool,
) -> anyhow::Result<()> {
    let label = &config.hsm.token_label;
    let free = pkcs11
        .get_slots_with_token()?
        .into_iter()
        .find(|s| {
            pkcs11
                .get_token_info(*s)
                .map(|i| !i.token_initialized())
                .unwrap_or(false)
        })
        .ok_or_else(|| anyhow::anyhow!("no uninitialised token slot to create token {label:?}"))?;
    let so_pin = random_pin()?;
    pkcs11.init_token(free, &AuthPin::from(so_pin.expose_secret()), label)?;
    // SoftHSM2 renumbers the slot after C_InitToken: look it up again by label.
    let slot = find_token(pkcs11, label)?
        .ok_or_else(|| anyhow::anyhow!("token {label:?} vanished after initialisation"))?;
    let session = pkcs11.open_rw_session(slot)?;
    session.login(UserType::So, Some(&AuthPin::from(so_pin.expose_secret())))?;
    session.init_pin(&AuthPin::from(user_pin.expose_secret()))?;
    session.logout()?;
    drop(session);
    if keep_so_pin {
        let so_file = config.data_dir.join("hsm-so.pin");
        let _ = std::fs::remove_file(&so_file);
        write_secret_file(&so_file, so_pin.expose_secret().as_bytes())?;
    } else {
        tracing::warn!(token = %label, "the token's SO PIN was not kept: the user PIN was supplied from outside, so the token is managed outside keyplane");
    }
    tracing::info!(token = %label, "initialised new HSM token");
    Ok(())
}

impl Hsm {
    /// Load the module, find (or on first start create) the token, log in, and find (or
    /// create) the root key.
    pub fn open(config: &Config) -> anyhow::Result<Hsm> {
        let module = &config.hsm.module;
        let pkcs11 = load(module)?;
        let (pin, _) = token_and_pin(&pkcs11, config, true)?;
        let opener = Opener {
            module: module.clone(),
            label: config.hsm.token_label.clone(),
            pin,
            max_idle: config.hsm.max_idle_sessions,
            root_key_exportable: config.hsm.root_key_exportable,
        };
        let live = log_in(pkcs11, &opener, 1, true)?;
        let mut hsm = Hsm::from_parts(live, opener);
        hsm.detect_capabilities()?;
        Ok(hsm)
    }
}

/// The user PIN of the configured token; with `create`, a token that does not exist yet is
/// initialised first (see [`init_token`]). Returns whether it was created.
fn token_and_pin(
    pkcs11: &Pkcs11,
    config: &Config,
    create: bool,
) -> anyhow::Result<(SecretString, bool)> {
    let label = &config.hsm.token_label;
    if find_token(pkcs11, label)?.is_some() {
        let pin = configured_pin(config)?.ok_or_else(|| {
            anyhow::anyhow!(
                "token {label:?} exists but no PIN is configured (set {PIN_ENV} or hsm.pin_file)"
            )
        })?;
        return Ok((pin, false));
    }
    if !create {
        anyhow::bail!("no token labelled {label:?} (is the data directory or hsm.module right?)");
    }
    let (pin, generated) = match configured_pin(config)? {
        Some(p) => (p, false),
        None => {
            let pin = random_pin()?;
            write_secret_file(
                &config.data_dir.join("hsm.pin"),
                pin.expose_secret().as_bytes(),
            )?;
            (pin, true)
        }
    };
    init_token(pkcs11, config, &pin, generated)?;
    Ok((pin, true))
}

/// A read-write session on the configured token for the offline key ceremony
/// (`hsm::ceremony`), not logged in. With `create`, a missing token is initialised as a
/// new node's would be, but no root key is made (the ceremony brings it). Returns the module,
/// the session, the user PIN and whether the token was created.
pub(crate) fn ceremony_session(
    config: &Config,
    create: bool,
) -> anyhow::Result<(Pkcs11, cryptoki::session::Session, SecretString, bool)> {
    let pkcs11 = load(&config.hsm.module)?;
    let (pin, created) = token_and_pin(&pkcs11, config, create)?;
    let label = &config.hsm.token_label;
    let slot = find_token(&pkcs11, label)?
        .ok_or_else(|| anyhow::anyhow!("no token labelled {label:?}"))?;
    let session = pkcs11.open_rw_session(slot)?;
    Ok((pkcs11, session, pin, created))
}

/// Log `session` in as the user with `pin`.
pub(crate) fn user_login(
    session: &cryptoki::session::Session,
    pin: &SecretString,
) -> anyhow::Result<()> {
    match session.login(UserType::User, Some(&AuthPin::from(pin.expose_secret()))) {
        Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(()),
        Err(CkError::Pkcs11(RvError::PinIncorrect, _)) => {
            anyhow::bail!("HSM login failed: the user PIN is incorrect")
        }
        Err(e) => anyhow::bail!("HSM login failed: {e}"),
    }
}

/// Environment variable holding the security officer's PIN (for the key ceremony).
pub const SO_PIN_ENV: &str = "KEYPLANE_HSM_SO_PIN";

/// The token's SO PIN: `KEYPLANE_HSM_SO_PIN`, else `<data-dir>/hsm-so.pin` (kept there only
/// for a token keyplane initialised with a generated PIN).
pub(crate) fn so_pin(config: &Config) -> anyhow::Result<SecretString> {
    if let Ok(pin) = std::env::var(SO_PIN_ENV) {
        return Ok(SecretString::from(pin));
    }
    let file = config.data_dir.join("hsm-so.pin");
    if file.exists() {
        return read_pin_file(&file);
    }
    anyhow::bail!(
        "the token's SO PIN is needed to mark the transport key trusted: set {SO_PIN_ENV} (no {} here)",
        file.display()
    )
}

/// Load and initialise the module. One this process left initialised (an attempt to open it
/// that failed half-way) is finalised and initialised again: nothing of it is in use.
fn load(module: &Path) -> anyhow::Result<Pkcs11> {
    let args = || CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK);
    let new = || {
        Pkcs11::new(module)
            .map_err(|e| anyhow::anyhow!("cannot load PKCS#11 module {}: {e}", module.display()))
    };
    let pkcs11 = new()?;
    match pkcs11.initialize(args()) {
        Ok(()) => Ok(pkcs11),
        Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {
            let _ = pkcs11.finalize();
            let pkcs11 = new()?;
            pkcs11.initialize(args())?;
            Ok(pkcs11)
        }
        Err(e) => Err(anyhow::anyhow!(
            "C_Initialize failed (is the token directory there?): {e}"
        )),
    }
}

/// Open the token again after its login was lost (see `Hsm::check`): load the module, find
/// the token by label, log in, find the root key. The root key is never created here. A
/// failed attempt finalises the module again, so the next starts from nothing.
pub(crate) fn reopen(opener: &Opener, epoch: u64) -> anyhow::Result<Live> {
    let pkcs11 = load(&opener.module)?;
    log_in(pkcs11.clone(), opener, epoch, false).inspect_err(|_| {
        let _ = pkcs11.finalize();
    })
}

/// Log in to the token labelled `opener.label` and find (or, on first start, create) the
/// root key.
fn log_in(pkcs11: Pkcs11, opener: &Opener, epoch: u64, create_root: bool) -> anyhow::Result<Live> {
    let label = &opener.label;
    let slot = find_token(&pkcs11, label)?
        .ok_or_else(|| anyhow::anyhow!("no token labelled {label:?}"))?;
    let anchor = pkcs11.open_rw_session(slot)?;
    match anchor.login(
        UserType::User,
        Some(&AuthPin::from(opener.pin.expose_secret())),
    ) {
        Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
        Err(CkError::Pkcs11(RvError::PinIncorrect, _)) => {
            anyhow::bail!("HSM login failed: the PIN for token {label:?} is incorrect")
        }
        Err(e) => anyhow::bail!("HSM login failed: {e}"),
    }
    let root = match find_root(&anchor)? {
        Some(root) => root,
        None if create_root => {
            // A token prepared to join (it holds a transport key) waits for the root key of
            // the nodes it joins: a new one here would make it a node of its own.
            if has_transport_key(&anchor)? {
                anyhow::bail!(
                    "token {label:?} is waiting for the root key of the nodes it joins (a transport key is in it): finish the key ceremony with `keyplane hsm import-root`"
                );
            }
            let root = make_root(&pkcs11, slot, &anchor, opener.root_key_exportable)?;
            tracing::info!(scheme = root.scheme().name(), "created root key in the HSM");
            root
        }
        // Everything keyplane stores is sealed by the root key: a token without it is not
        // this node's token, and a new root key would strand every sealed secret.
        None => anyhow::bail!("token {label:?} has no root key {ROOT_KEY_LABEL:?}"),
    };
    Ok(Live::new(
        pkcs11,
        slot,
        anchor,
        root,
        opener.max_idle,
        epoch,
    ))
}

/// The root key in the token: an AES key (`TokenGcm`) or an RSA key pair (`OaepKem`), found
/// by label (see `hsm::sealing`).
fn find_root(anchor: &Session) -> anyhow::Result<Option<RootKey>> {
    let labelled = |class| {
        anchor
            .find_objects(&[
                Attribute::Class(class),
                Attribute::Label(ROOT_KEY_LABEL.as_bytes().to_vec()),
            ])
            .map(|found| found.into_iter().next())
    };
    if let Some(h) = labelled(ObjectClass::SECRET_KEY)? {
        return Ok(Some(RootKey::Aes(h)));
    }
    let Some(private) = labelled(ObjectClass::PRIVATE_KEY)? else {
        return Ok(None);
    };
    let public = labelled(ObjectClass::PUBLIC_KEY)?
        .ok_or_else(|| anyhow::anyhow!("the root key's public half is missing from the token"))?;
    let hash = super::capabilities::probe_oaep_with(anchor, public, private).ok_or_else(|| {
        anyhow::anyhow!("the token no longer decrypts RSA-OAEP, which its root key needs")
    })?;
    let modulus = anchor.get_attributes(public, &[AttributeType::Modulus])?;
    let bits = match modulus.first() {
        Some(Attribute::Modulus(n)) => n.iter().skip_while(|b| **b == 0).count() as u64 * 8,
        _ => anyhow::bail!("the root key's public half has no modulus"),
    };
    // The sealing signer: both halves, or neither (a root key made before there was one gets
    // it now; what it sealed then was unsigned and opens no more). One half alone is refused:
    // a new pair would silently disown every blob the old one signed.
    let signer = match (
        labelled_signer(anchor, ObjectClass::PRIVATE_KEY)?,
        labelled_signer(anchor, ObjectClass::PUBLIC_KEY)?,
    ) {
        (Some(private), Some(public)) => super::sealing::signer_of(anchor, (private, public))?,
        (None, None) => super::sealing::signer_of(anchor, super::sealing::generate_signer(anchor)?)?,
        _ => anyhow::bail!(
            "the token holds one half of keyplane's sealing signer ({}) but not the other: sealed secrets could not be checked; restore the missing object",
            super::sealing::SIGNER_LABEL
        ),
    };

    Ok(Some(RootKey::Rsa {
        private,
        public,
        hash,
        bits,
        signer,
    }))
}

/// The sealing signer's object of `class` (see `hsm::sealing`), if the token has it (one:
/// two are refused, the token then holds signers of two origins).
fn labelled_signer(anchor: &Session, class: ObjectClass) -> anyhow::Result<Option<ObjectHandle>> {
    let found = anchor.find_objects(&[
        Attribute::Class(class),
        Attribute::Label(super::sealing::SIGNER_LABEL.as_bytes().to_vec()),
    ])?;
    if found.len() > 1 {
        anyhow::bail!(
            "the token holds {} objects labelled {} of one class: keyplane cannot tell which signs its sealed secrets",
            found.len(),
            super::sealing::SIGNER_LABEL
        );
    }
    Ok(found.into_iter().next())
}

/// Make a root key for the scheme the token's mechanisms allow (see `hsm::sealing`).
fn make_root(
    pkcs11: &Pkcs11,
    slot: Slot,
    anchor: &Session,
    exportable: bool,
) -> anyhow::Result<RootKey> {
    let quirks = Module::of(pkcs11).quirks();
    let has = |m| quirks.usable(m) && pkcs11.get_mechanism_info(slot, m).is_ok();
    match Scheme::for_token(has)? {
        Scheme::TokenGcm => {
            let mut template = root_key_template(ROOT_KEY_LABEL, exportable, quirks);
            template.push(Attribute::ValueLen(32.into()));
            Ok(RootKey::Aes(
                anchor.generate_key(&Mechanism::AesKeyGen, &template)?,
            ))
        }
        Scheme::OaepKem => {
            if exportable {
                anyhow::bail!("hsm.root_key_exportable needs a token with AES key wrap (CKM_AES_KEY_WRAP_PAD): this one's root key can never leave it");
            }
            let max = pkcs11
                .get_mechanism_info(slot, MechanismType::RSA_PKCS_KEY_PAIR_GEN)
                .ok()
                .map(|i| i.max_key_size() as u64)
                .filter(|bits| *bits > 0);
            let bits = super::sealing::rsa_bits(max)?;
            let label = ROOT_KEY_LABEL.as_bytes();
            let (private, public) = super::sealing::generate_rsa_pair(anchor, label, label, bits)?;
            // The hash is probed with the new pair itself; a pair that round-trips with
            // neither is no root key.
            let Some(hash) = super::capabilities::probe_oaep_with(anchor, public, private) else {
                let _ = anchor.destroy_object(private);
                let _ = anchor.destroy_object(public);
                anyhow::bail!(
                    "the token lists CKM_RSA_PKCS_OAEP but decrypts with neither SHA-256 nor SHA-1"
                );
            };
            let signer =
                super::sealing::signer_of(anchor, super::sealing::generate_signer(anchor)?)?;
            Ok(RootKey::Rsa {
                private,
                public,
                hash,
                bits,
                signer,
            })
        }
    }
}

/// Label (and `CKA_ID`) of the transport key pair of a joining node (see `hsm::ceremony`).
pub const TRANSPORT_KEY_LABEL: &str = "keyplane-transport-v1";

/// The template of a root key labelled (and identified by) `label`, for AES-GCM and AES key
/// wrap, always sensitive. `exportable` (`hsm.root_key_exportable`): extractable only by a
/// trusted wrapping key (see `hsm::ceremony`), so the key ceremony can pass it to another
/// node; otherwise it never leaves the token. A new root key is made with it (plus its
/// length), an imported one unwrapped into it. `CKA_WRAP_WITH_TRUSTED` is set either way (it
/// changes nothing for a key that is not extractable): the transport key's unwrap template
/// insists on it, as on every other attribute of `hsm::key_policy::TRANSPORT_UNWRAP_TEMPLATE`,
/// which this template carries as they are. What the root key may unwrap into and the
/// mechanisms it takes: `hsm::key_policy::root` (`quirks`: where the module takes them).
pub(crate) fn root_key_template(
    label: &str,
    exportable: bool,
    quirks: super::quirks::Quirks,
) -> Vec<Attribute> {
    let mut template = vec![
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::AES),
        Attribute::Sensitive(true),
        Attribute::Extractable(exportable),
        Attribute::WrapWithTrusted(true),
        Attribute::Wrap(true),
        Attribute::Unwrap(true),
        Attribute::Encrypt(true),
        Attribute::Decrypt(true),
        Attribute::Sign(false),
        Attribute::Verify(false),
        Attribute::Derive(false),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Id(label.as_bytes().to_vec()),
    ];
    template.extend(super::key_policy::root(quirks));
    template
}

/// Whether the token holds a transport key (a node waiting to join).
pub(crate) fn has_transport_key(s: &Session) -> anyhow::Result<bool> {
    let found = s
        .find_objects(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Label(TRANSPORT_KEY_LABEL.as_bytes().to_vec()),
        ])
        .map_err(|e| anyhow::anyhow!("find the transport key: {e}"))?;
    Ok(!found.is_empty())
}
