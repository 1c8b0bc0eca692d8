//! The HSM: every PKCS#11 call keyplane makes goes through [`Hsm`].
//!
//! Owns the loaded module, the token (found by label), the login, the session pool and the
//! handles of the objects keyplane keeps in the token: the root key (a sensitive token
//! object, wrappable only by a key the SO marked trusted: see [`ceremony`]; an RSA key pair on a
//! token without AES-GCM and key wrap: see [`sealing`]), tenant KEKs (unwrapped from their
//! root-wrapped form into non-extractable session objects owned by the anchor session, or
//! token-object key pairs under [`sealing`]'s KEM scheme), module quirks ([`quirks`]) and
//! `hsm`-protected key versions (non-extractable token objects, each also
//! kept wrapped by the root key in the database, and unwrapped on the other nodes into
//! session objects of their own anchor session: see [`world`]). Methods are blocking; async
//! callers go through `tokio::task::spawn_blocking`.
//!
//! # When the token goes away
//! Everything that depends on one login of one loaded module (the sessions, the anchor that
//! holds the login, the root key's handle) is a [`Live`], numbered by an *epoch*. A module
//! can lose it: a session closed or logged out under keyplane, a token removed (SoftHSM2 marks
//! a token whose directory disappeared invalid for the life of the loaded module, even after
//! the directory returns). [`Hsm::check`] tells, after a failed call, whether the login still
//! works (a session answers and the root key encrypts); if not it starts over with a new
//! `Live`: `C_Finalize`, `C_Initialize`, find the token by label, log in, find the root key
//! (never create one: a missing root key is an error, not a new beginning). While that fails
//! the HSM is *down*: every call fails at once with `HsmUnavailable`, and a new attempt is
//! made at most every [`RETRY_EVERY`], so a returning token serves again within that.
//!
//! Object handles are valid for one epoch only (a module started over hands out the same
//! numbers again for other objects), so they leave this module as [`Obj`]s, which carry the
//! epoch, and every call checks it: a handle from an older epoch is refused, never used.
//! Callers cache `Obj`s and resolve them again after a recovery (see `crypto::Keyring`).

pub mod asym;
pub mod audit_key;
pub mod capabilities;
pub mod ceremony;
pub mod dh;
mod key_policy;
pub mod pair_import;
mod pool;
pub mod quirks;
pub mod sealing;
pub mod token;
pub mod world;
pub mod wrapping;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use cryptoki::context::Pkcs11;
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
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
/// How often a down HSM is tried again (a returning token serves within this).
pub const RETRY_EVERY: Duration = Duration::from_millis(100);

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

/// A new import token's id (`imp-<UUID v7>`: garbage collection reads its creation time from
/// it) and the `CKA_ID` of its wrapping key (`kp-import:<id>`).
pub fn import_ids() -> (String, Vec<u8>) {
    let id = format!("imp-{}", uuid::Uuid::now_v7().simple());
    let object_id = format!("kp-import:{id}").into_bytes();
    (id, object_id)
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

/// A handle to an object in the token, valid in the epoch it was obtained in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Obj {
    handle: ObjectHandle,
    epoch: u64,
}

impl Obj {
    /// The epoch of the login the handle belongs to.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    fn key(&self) -> (u64, u64) {
        (self.epoch, self.handle.handle())
    }
}

impl PartialOrd for Obj {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Obj {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.key().cmp(&other.key())
    }
}

/// What [`Hsm::check`] found after a failed call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// The login works: the failure was the call's own.
    Healthy,
    /// The HSM started over (now, or since the failed call): every `Obj` from before is
    /// stale; a call that can be repeated may be, with handles resolved again.
    Recovered,
    /// The token cannot be reached; calls fail at once until it can.
    Down,
}

/// The key a blob is sealed under ([`Hsm::seal`]).
#[derive(Debug, Clone, Copy)]
pub enum Sealer {
    /// The root key: node secrets.
    Root,
    /// A tenant KEK: the material of the tenant's `envelope` key versions.
    Kek(Obj),
}

/// What opening the token again needs.
pub(crate) struct Opener {
    pub(crate) module: std::path::PathBuf,
    pub(crate) label: String,
    pub(crate) pin: secrecy::SecretString,
    pub(crate) max_idle: usize,
    /// A root key created by this opener may be passed on by the key ceremony.
    pub(crate) root_key_exportable: bool,
}

/// One login of one loaded module: its sessions and the handles that belong to it.
pub(crate) struct Live {
    // Field order matters for drop: sessions close before the module is finalized.
    pool: SessionPool,
    /// Holds the login and owns session objects (tenant KEKs, session copies).
    anchor: Mutex<Session>,
    root: sealing::RootKey,
    quirks: quirks::Quirks,
    slot: Slot,
    epoch: u64,
    pkcs11: Pkcs11,
}

impl Live {
    pub(crate) fn new(
        pkcs11: Pkcs11,
        slot: Slot,
        anchor: Session,
        root: sealing::RootKey,
        max_idle: usize,
        epoch: u64,
    ) -> Self {
        let quirks = quirks::Module::of(&pkcs11).quirks();
        Live {
            pool: SessionPool::new(
                pkcs11.clone(),
                slot,
                max_idle,
                quirks.failed_operation_stays_active,
            ),
            anchor: Mutex::new(anchor),
            root,
            quirks,
            slot,
            epoch,
            pkcs11,
        }
    }

    /// An [`Obj`] of this epoch.
    fn obj(&self, handle: ObjectHandle) -> Obj {
        Obj {
            handle,
            epoch: self.epoch,
        }
    }

    /// The handle of `o`, if it belongs to this epoch. One from an older epoch may name
    /// another object now: it is refused (the caller resolves it again).
    fn handle(&self, o: Obj) -> Result<ObjectHandle> {
        if o.epoch == self.epoch {
            Ok(o.handle)
        } else {
            tracing::debug!(
                epoch = self.epoch,
                stale = o.epoch,
                "refused a handle of an earlier HSM login"
            );
            Err(Error::HsmUnavailable)
        }
    }

    /// The AES key `by` names, under `TokenGcm`.
    fn sealing_key(&self, by: Sealer) -> Result<ObjectHandle> {
        match by {
            Sealer::Root => self.root.wrapping_key().ok_or(Error::HsmUnavailable),
            Sealer::Kek(kek) => self.handle(kek),
        }
    }

    fn anchor(&self) -> Result<std::sync::MutexGuard<'_, Session>> {
        self.anchor.lock().map_err(|_| Error::Internal)
    }

    /// Whether the login works: the anchor session answers and the root key encrypts (with
    /// its public half where it is a key pair: a probe must be cheap, and a session that
    /// reaches the public key reaches the private one).
    fn healthy(&self) -> bool {
        let anchor = match self.anchor() {
            Ok(a) => a,
            Err(_) => return false,
        };
        let mut iv = [0u8; GCM_IV_LEN];
        match self.root {
            sealing::RootKey::Aes(root) => spans::hsm("C_Encrypt", "CKM_AES_GCM", || {
                anchor.generate_random_slice(&mut iv)?;
                let params =
                    GcmParams::new(&mut iv, b"keyplane health probe", GCM_TAG_BITS.into())?;
                anchor.encrypt(&Mechanism::AesGcm(params), root, &[])
            })
            .is_ok(),
            sealing::RootKey::Rsa { public, hash, .. } => sealing::kem_probe(&anchor, public, hash),
        }
    }

    /// End this login without closing its sessions one by one: `C_Finalize` closes them all,
    /// and a session handle closed after the module starts over could name a new session.
    fn retire(self) {
        let Live {
            pool,
            anchor,
            pkcs11,
            ..
        } = self;
        pool.forget_all();
        if let Ok(anchor) = anchor.into_inner() {
            std::mem::forget(anchor);
        }
        if let Err(e) = pkcs11.finalize() {
            tracing::warn!(error = %e, "C_Finalize of the lost HSM login failed");
        }
    }
}

/// A read lock on the live login (never held while another one is taken on this thread:
/// a waiting recovery would block the second).
struct LiveGuard<'a>(RwLockReadGuard<'a, Option<Live>>);

impl std::ops::Deref for LiveGuard<'_> {
    type Target = Live;
    fn deref(&self) -> &Live {
        self.0.as_ref().expect("checked when the guard was made")
    }
}

/// A logged-in PKCS#11 token.
pub struct Hsm {
    /// `None` while the HSM is down.
    live: RwLock<Option<Live>>,
    /// The epoch of the current (or last) login.
    epoch: AtomicU64,
    /// Held by the recovery in progress; when the last attempt failed.
    recovery: Mutex<Option<Instant>>,
    opener: Opener,
    caps: capabilities::Capabilities,
    /// Taken by calls that find, create or destroy objects on SoftHSM2 (`call_on_objects`).
    object_calls: Mutex<()>,
}

/// `CKA_ID` and label of the session objects that hold secret material for one call only
/// (a key agreement's secret, `envelope` material on its way to an export, the ephemeral and
/// temporary keys of a wrap): each is destroyed before its call returns ([`destroy_secret`]),
/// and test builds look for any left over.
pub const TRANSIENT_ID: &[u8] = b"kp-transient";

/// The template of a key agreement's secret (`len` bytes): a readable session object, which
/// [`take_derived_secret`] reads and destroys at once.
fn derived_secret_template(len: usize) -> [Attribute; 8] {
    [
        Attribute::Token(false),
        Attribute::Class(ObjectClass::SECRET_KEY),
        Attribute::KeyType(KeyType::GENERIC_SECRET),
        Attribute::ValueLen((len as u64).into()),
        Attribute::Sensitive(false),
        Attribute::Extractable(true),
        Attribute::Id(TRANSIENT_ID.to_vec()),
        Attribute::Label(TRANSIENT_ID.to_vec()),
    ]
}

/// The value of the derived secret `derived`, which is destroyed; if destroying it fails,
/// the call fails (see [`destroy_secret`]) and the value read is dropped, zeroized.
fn take_derived_secret(s: &Session, derived: ObjectHandle) -> Result<Zeroizing<Vec<u8>>> {
    let value = s.get_attributes(derived, &[AttributeType::Value]);
    destroy_secret(s, derived, "destroy a derived secret")?;
    match value
        .map_err(unavailable("read derived secret"))?
        .into_iter()
        .next()
    {
        Some(Attribute::Value(v)) => Ok(Zeroizing::new(v)),
        _ => Err(Error::Internal),
    }
}

/// Destroy `object`, a session object of the pooled session `s` holding secret material
/// for this call only. A failure fails the call with `HsmUnavailable`: the pool then closes
/// `s` instead of lending it again, and closing a session destroys its session objects, so
/// the material does not outlive the call in a session that later requests share (as
/// `Hsm::generate_data_key_pair` does with its pair).
pub(crate) fn destroy_secret(s: &Session, object: ObjectHandle, what: &'static str) -> Result<()> {
    #[cfg(all(feature = "test-hooks", debug_assertions))]
    if SECRET_DESTROYS_FAIL.with(std::cell::Cell::get) {
        tracing::error!(
            what,
            "test hook: C_DestroyObject of a transient secret fails"
        );
        return Err(Error::HsmUnavailable);
    }
    s.destroy_object(object).map_err(unavailable(what))
}

#[cfg(all(feature = "test-hooks", debug_assertions))]
thread_local! {
    static SECRET_DESTROYS_FAIL: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Test hook: on this thread, every [`destroy_secret`] fails without destroying anything,
/// as a module failing `C_DestroyObject` would.
#[cfg(all(feature = "test-hooks", debug_assertions))]
pub fn fail_secret_destroys(on: bool) {
    SECRET_DESTROYS_FAIL.with(|f| f.set(on));
}

/// Map a PKCS#11 failure to the public error, logging the detail (never secrets).
pub(crate) fn unavailable(context: &'static str) -> impl Fn(CkError) -> Error {
    move |e| {
        tracing::error!(error = %e, context, "PKCS#11 call failed");
        Error::HsmUnavailable
    }
}

impl Hsm {
    pub(crate) fn from_parts(live: Live, opener: Opener) -> Self {
        Hsm {
            epoch: AtomicU64::new(live.epoch),
            live: RwLock::new(Some(live)),
            recovery: Mutex::new(None),
            opener,
            caps: capabilities::Capabilities::default(),
            object_calls: Mutex::new(()),
        }
    }

    /// The epoch of the current login (see the module docs).
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    /// The live login, if there is one; while down, a recovery is tried if one is due.
    fn live(&self) -> Result<LiveGuard<'_>> {
        {
            let guard = self.live.read().map_err(|_| Error::Internal)?;
            if guard.is_some() {
                return Ok(LiveGuard(guard));
            }
        }
        self.recover(self.epoch())?;
        let guard = self.live.read().map_err(|_| Error::Internal)?;
        if guard.is_some() {
            Ok(LiveGuard(guard))
        } else {
            Err(Error::HsmUnavailable)
        }
    }

    /// How many PKCS#11 sessions the live login has open (0 while the HSM is away).
    pub fn open_sessions(&self) -> usize {
        self.live().map_or(0, |live| live.pool.open())
    }

    /// Run `f` with a pooled session of the live login. `function` and `mechanism` name the
    /// PKCS#11 call for its span and latency metric.
    fn call<T>(
        &self,
        function: &'static str,
        mechanism: &'static str,
        f: impl FnOnce(&Session, &Live) -> Result<T>,
    ) -> Result<T> {
        let live = self.live()?;
        live.pool.with(function, mechanism, |s| f(s, &live))
    }

    /// [`Hsm::call`] for a call that finds, creates or destroys objects. SoftHSM2 (2.6) fails
    /// some of those with `CKR_GENERAL_ERROR` (even `CKR_TEMPLATE_INCONSISTENT`) when they run
    /// at once in one process: a stress of four threads each generating a token key, listing
    /// the token's objects and destroying the key failed about 1 call in 100, and never with
    /// the three serialised. So on a module with that quirk (`object_calls_race`) they take
    /// turns; other modules run them in parallel. An object is created by more than
    /// `C_CreateObject` and `C_GenerateKey`: `C_UnwrapKey`, `C_DeriveKey` and `C_CopyObject`
    /// make one too, so every call that makes, finds or destroys one, even for a moment (a
    /// tenant KEK's unwrap, a session copy, a key agreement's secret, the recipient key and
    /// transient keys of an export), takes the turn for the whole call. Calls that only
    /// encrypt, decrypt, sign, verify or wrap with existing objects never wait for this
    /// (tests/faults.rs drives both kinds at once).
    fn call_on_objects<T>(
        &self,
        function: &'static str,
        mechanism: &'static str,
        f: impl FnOnce(&Session, &Live) -> Result<T>,
    ) -> Result<T> {
        self.in_turn_on_objects(|| self.call(function, mechanism, f))
    }

    /// [`Hsm::call_anchor`] for a call that creates objects, taking the turn on object calls
    /// as [`Hsm::call_on_objects`] does.
    fn call_anchor_on_objects<T>(
        &self,
        function: &'static str,
        mechanism: &'static str,
        f: impl FnOnce(&Session, &Live) -> Result<T>,
    ) -> Result<T> {
        self.in_turn_on_objects(|| self.call_anchor(function, mechanism, f))
    }

    /// Run `call` holding the turn on object calls, on a module whose object calls race (see
    /// [`Hsm::call_on_objects`]); at once on any other.
    fn in_turn_on_objects<T>(&self, call: impl FnOnce() -> Result<T>) -> Result<T> {
        if !self.caps.quirks().object_calls_race {
            return call();
        }
        let _turn = self.object_calls.lock().map_err(|_| Error::Internal)?;
        call()
    }

    /// Test hook: hold the turn on object calls (see [`Hsm::call_on_objects`]) until the
    /// guard is dropped: a call that takes it waits meanwhile, any other goes on.
    #[cfg(all(feature = "test-hooks", debug_assertions))]
    pub fn hold_object_turn(&self) -> std::sync::MutexGuard<'_, ()> {
        self.object_calls
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Run `f` with the anchor session (session objects live there).
    fn call_anchor<T>(
        &self,
        function: &'static str,
        mechanism: &'static str,
        f: impl FnOnce(&Session, &Live) -> Result<T>,
    ) -> Result<T> {
        let live = self.live()?;
        let anchor = live.anchor()?;
        spans::hsm(function, mechanism, || f(&anchor, &live))
    }

    /// After a call failed with `HsmUnavailable` in epoch `seen`: whether the login still
    /// works, and if it does not, start over (see the module docs).
    pub fn check(&self, seen: u64) -> Health {
        if self.epoch() != seen {
            return Health::Recovered;
        }
        if let Ok(guard) = self.live.read() {
            if guard.as_ref().is_some_and(Live::healthy) {
                return Health::Healthy;
            }
        }
        match self.recover(seen) {
            Ok(()) => Health::Recovered,
            Err(_) => Health::Down,
        }
    }

    /// Whether the HSM is up and its root key works (readiness).
    pub fn ready(&self) -> bool {
        let seen = self.epoch();
        let healthy = self
            .live
            .read()
            .is_ok_and(|g| g.as_ref().is_some_and(Live::healthy));
        healthy || self.check(seen) == Health::Recovered
    }

    /// Start over from epoch `seen`: retire its login (if any is left) and open the token
    /// again. Serialised; a recovery that another caller finished meanwhile counts; after a
    /// failed attempt the next waits [`RETRY_EVERY`] (callers fail at once meanwhile).
    fn recover(&self, seen: u64) -> Result<()> {
        let mut last_failed = self.recovery.lock().map_err(|_| Error::Internal)?;
        if self.epoch() != seen {
            return Ok(());
        }
        if last_failed.is_some_and(|t| t.elapsed() < RETRY_EVERY) {
            return Err(Error::HsmUnavailable);
        }
        let mut live = self.live.write().map_err(|_| Error::Internal)?;
        if let Some(old) = live.take() {
            tracing::warn!(epoch = old.epoch, "the HSM login was lost; starting over");
            old.retire();
        }
        let epoch = seen + 1;
        match token::reopen(&self.opener, epoch) {
            Ok(new) => {
                *live = Some(new);
                self.epoch.store(epoch, Ordering::SeqCst);
                *last_failed = None;
                tracing::warn!(epoch, "the HSM is back: logged in again");
                Ok(())
            }
            Err(e) => {
                if last_failed.is_none() {
                    tracing::error!(error = %format!("{e:#}"), "the HSM cannot be reached; requests that need it fail until it can");
                }
                *last_failed = Some(Instant::now());
                Err(Error::HsmUnavailable)
            }
        }
    }

    /// Detect the token's identity, the mechanisms keyplane uses that it lists, and the OAEP
    /// hash it accepts (see [`capabilities`]). Called once at start.
    pub(crate) fn detect_capabilities(&mut self) -> Result<()> {
        let caps = {
            let live = self.live()?;
            let info = live
                .pkcs11
                .get_token_info(live.slot)
                .map_err(unavailable("token info"))?;
            // C_GetMechanismInfo per mechanism keyplane uses, rather than C_GetMechanismList:
            // cryptoki logs an error for every listed mechanism it has no name for (SoftHSM2
            // lists several), which would put false errors in the log at every start. A
            // mechanism the token does not support answers CKR_MECHANISM_INVALID.
            let module = quirks::Module::of(&live.pkcs11);
            let mechanisms = capabilities::USED_MECHANISMS
                .iter()
                .map(|(m, _)| *m)
                .filter(|m| {
                    live.quirks.usable(*m)
                        && spans::hsm("C_GetMechanismInfo", "none", || {
                            live.pkcs11.get_mechanism_info(live.slot, *m)
                        })
                        .is_ok()
                })
                .collect::<Vec<_>>();
            let rsa_max_bits = live
                .pkcs11
                .get_mechanism_info(
                    live.slot,
                    cryptoki::mechanism::MechanismType::RSA_PKCS_KEY_PAIR_GEN,
                )
                .ok()
                .map(|i| i.max_key_size() as u64)
                .filter(|bits| *bits >= 1024);
            let mut caps = capabilities::Capabilities {
                manufacturer: info.manufacturer_id().trim().to_string(),
                // A TPM pads its model with NULs.
                model: info
                    .model()
                    .trim_matches(|c: char| c.is_whitespace() || c == '\0')
                    .to_string(),
                serial_number: info.serial_number().trim().to_string(),
                firmware_version: {
                    let v = info.firmware_version();
                    format!("{}.{}", v.major(), v.minor())
                },
                mechanisms,
                oaep_hash: None,
                module,
                scheme: live.root.scheme(),
                rsa_max_bits,
            };
            if let sealing::RootKey::Rsa { hash, .. } = live.root {
                // Probed when the root key was found.
                caps.oaep_hash = Some(hash);
            } else if caps.has(cryptoki::mechanism::MechanismType::RSA_PKCS_OAEP)
                && caps.has(cryptoki::mechanism::MechanismType::RSA_PKCS_KEY_PAIR_GEN)
            {
                let anchor = live.anchor()?;
                caps.oaep_hash = capabilities::probe_oaep(&anchor, live.quirks);
            }
            caps
        };
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
        &self.opener.label
    }

    /// The PKCS#11 module's path.
    pub fn module(&self) -> &std::path::Path {
        &self.opener.module
    }

    /// The slot the token sits in now (informational; may change when the HSM starts over).
    pub fn slot(&self) -> Result<Slot> {
        Ok(self.live()?.slot)
    }

    /// `n` random bytes from the token's RNG.
    pub fn random(&self, n: usize) -> Result<Zeroizing<Vec<u8>>> {
        let mut buf = Zeroizing::new(vec![0u8; n]);
        self.call("C_GenerateRandom", "none", |s, _| {
            s.generate_random_slice(&mut buf)
                .map_err(unavailable("generate-random"))
        })?;
        Ok(buf)
    }

    /// AES-GCM encrypt `plaintext` under `key` inside the token. Returns ciphertext‖tag.
    pub fn gcm_encrypt(
        &self,
        key: Obj,
        iv: &[u8; GCM_IV_LEN],
        aad: &[u8],
        plaintext: &[u8],
    ) -> Result<Vec<u8>> {
        self.call("C_Encrypt", "CKM_AES_GCM", |s, live| {
            gcm_encrypt(s, live.handle(key)?, iv, aad, plaintext)
        })
    }

    /// AES-GCM decrypt ciphertext‖tag under `key` inside the token. An authentication failure
    /// is [`Error::DecryptionFailed`] (however the module reports it: see [`quirks`]).
    pub fn gcm_decrypt(
        &self,
        key: Obj,
        iv: &[u8; GCM_IV_LEN],
        aad: &[u8],
        sealed: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>> {
        self.call("C_Decrypt", "CKM_AES_GCM", |s, live| {
            gcm_decrypt(s, live.handle(key)?, iv, aad, sealed, live.quirks)
        })
    }

    /// Seal `plaintext` with AAD `aad` under the root key or a tenant KEK, by the node's
    /// sealing scheme (see [`sealing`]). The blob carries everything opening it needs.
    pub fn seal(&self, by: Sealer, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>> {
        match self.scheme()? {
            sealing::Scheme::TokenGcm => {
                let mut iv = [0u8; GCM_IV_LEN];
                iv.copy_from_slice(&self.random(GCM_IV_LEN)?);
                let sealed = self.call("C_Encrypt", "CKM_AES_GCM", |s, live| {
                    gcm_encrypt(s, live.sealing_key(by)?, &iv, aad, plaintext)
                })?;
                let mut out = iv.to_vec();
                out.extend_from_slice(&sealed);
                Ok(out)
            }
            sealing::Scheme::OaepKem => {
                let seal = || {
                    self.call("C_Encrypt", "CKM_RSA_PKCS_OAEP", |s, live| {
                        let sealing::RootKey::Rsa {
                            public: root_public,
                            hash,
                            signer,
                            ..
                        } = live.root
                        else {
                            return Err(Error::HsmUnavailable);
                        };
                        let public = match by {
                            Sealer::Root => root_public,
                            Sealer::Kek(kek) => sealing::public_of(s, live.handle(kek)?)?,
                        };
                        sealing::kem_seal(s, public, hash, &signer, aad, plaintext)
                    })
                };
                // A KEK's public key is found first: an object call (`call_on_objects`).
                match by {
                    Sealer::Root => seal(),
                    Sealer::Kek(_) => self.in_turn_on_objects(seal),
                }
            }
        }
    }

    /// Open a blob of [`Hsm::seal`]. One that does not authenticate (altered, another
    /// owner's, another key's) is [`Error::DecryptionFailed`].
    pub fn unseal(&self, by: Sealer, aad: &[u8], blob: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        match self.scheme()? {
            sealing::Scheme::TokenGcm => {
                if blob.len() < GCM_IV_LEN {
                    return Err(Error::DecryptionFailed);
                }
                let (iv, sealed) = blob.split_at(GCM_IV_LEN);
                let iv: [u8; GCM_IV_LEN] = iv.try_into().map_err(|_| Error::Internal)?;
                self.call("C_Decrypt", "CKM_AES_GCM", |s, live| {
                    gcm_decrypt(s, live.sealing_key(by)?, &iv, aad, sealed, live.quirks)
                })
            }
            sealing::Scheme::OaepKem => self.call("C_Decrypt", "CKM_RSA_PKCS_OAEP", |s, live| {
                let sealing::RootKey::Rsa {
                    private: root_private,
                    signer,
                    ..
                } = live.root
                else {
                    return Err(Error::HsmUnavailable);
                };
                let private = match by {
                    Sealer::Root => root_private,
                    Sealer::Kek(kek) => live.handle(kek)?,
                };
                sealing::kem_open(s, private, &signer, live.quirks, aad, blob)
            }),
        }
    }

    /// Whether the root key wraps key versions into world copies (see [`world`]): not where
    /// it is an RSA key pair ([`sealing::Scheme::OaepKem`]).
    pub(crate) fn makes_world_copies(&self) -> Result<bool> {
        Ok(self.live()?.root.wrapping_key().is_some())
    }

    /// The node's sealing scheme (the kind of its root key).
    pub fn scheme(&self) -> Result<sealing::Scheme> {
        Ok(self.live()?.root.scheme())
    }

    /// Generate a tenant KEK: returns its stored form and a handle to use now. Under
    /// `TokenGcm` the stored form is the KEK wrapped by the root key and the handle a
    /// non-extractable session object (the extractable copy used for wrapping is destroyed
    /// before return); under `OaepKem` the KEK is a key pair of token objects and the stored
    /// form names it.
    pub fn generate_kek(&self) -> Result<(Vec<u8>, Obj)> {
        if self.scheme()? == sealing::Scheme::OaepKem {
            return self.call_on_objects(
                "C_GenerateKeyPair",
                "CKM_RSA_PKCS_KEY_PAIR_GEN",
                |s, live| {
                    let sealing::RootKey::Rsa { bits, .. } = live.root else {
                        return Err(Error::Internal);
                    };
                    let (stored, private) = sealing::generate_kek_pair(s, bits)?;
                    Ok((stored, live.obj(private)))
                },
            );
        }
        // The extractable key is made, wrapped and destroyed in a pooled session, so that a
        // failed destroy closes that session and the key with it (`destroy_secret`); the
        // anchor session, which lives as long as the login, only ever holds the
        // non-extractable copy.
        let wrapped = self.call_on_objects("C_GenerateKey", "CKM_AES_KEY_GEN", |s, live| {
            let root = live.root.wrapping_key().ok_or(Error::HsmUnavailable)?;
            let template = [
                Attribute::Token(false),
                Attribute::Class(ObjectClass::SECRET_KEY),
                Attribute::KeyType(KeyType::AES),
                Attribute::ValueLen(32.into()),
                Attribute::Sensitive(true),
                Attribute::Extractable(true),
                Attribute::Private(true),
                Attribute::Id(TRANSIENT_ID.to_vec()),
                Attribute::Label(TRANSIENT_ID.to_vec()),
            ];
            let temp = s
                .generate_key(&Mechanism::AesKeyGen, &template)
                .map_err(unavailable("generate kek"))?;
            let wrapped = spans::hsm("C_WrapKey", "CKM_AES_KEY_WRAP_PAD", || {
                s.wrap_key(&Mechanism::AesKeyWrapPad, root, temp)
            });
            destroy_secret(s, temp, "destroy the kek's extractable copy")?;
            wrapped.map_err(unavailable("wrap kek"))
        })?;
        let kek =
            self.call_anchor_on_objects("C_UnwrapKey", "CKM_AES_KEY_WRAP_PAD", |anchor, live| {
                let root = live.root.wrapping_key().ok_or(Error::HsmUnavailable)?;
                Ok(live.obj(unwrap_kek(anchor, root, &wrapped)?))
            })?;
        Ok((wrapped, kek))
    }

    /// The handle of a tenant KEK from its stored form ([`Hsm::generate_kek`]): unwrapped by
    /// the root key into a non-extractable session object, or the token object it names.
    pub fn unwrap_kek(&self, stored: &[u8]) -> Result<Obj> {
        if let Some(id) = sealing::kek_token_id(stored) {
            return self.call_on_objects("C_FindObjects", "none", |s, live| {
                match sealing::find_by_id(s, ObjectClass::PRIVATE_KEY, id)? {
                    Some(h) => Ok(live.obj(h)),
                    None => {
                        tracing::error!(
                            "a tenant's KEK is not in the token (another token, or destroyed)"
                        );
                        Err(Error::HsmUnavailable)
                    }
                }
            });
        }
        self.call_anchor_on_objects("C_UnwrapKey", "CKM_AES_KEY_WRAP_PAD", |anchor, live| {
            let root = live.root.wrapping_key().ok_or_else(|| {
                tracing::error!("a tenant's KEK is wrapped, but this token's root key wraps nothing (another token's database?)");
                Error::HsmUnavailable
            })?;
            Ok(live.obj(unwrap_kek(anchor, root, stored)?))
        })
    }

    /// Let go of a second handle to a tenant's KEK (two requests resolved it at once): a
    /// session object of its own under `TokenGcm` is destroyed; under `OaepKem` the handle
    /// names the tenant's one token object, which stays.
    pub fn release_kek(&self, kek: Obj) -> Result<()> {
        match self.scheme()? {
            sealing::Scheme::TokenGcm => self.destroy_if_present(kek),
            sealing::Scheme::OaepKem => Ok(()),
        }
    }

    /// Destroy a tenant KEK made by a creation that did not commit: its session object, or
    /// both of its token objects.
    pub fn discard_kek(&self, kek: Obj) -> Result<()> {
        if self.scheme()? == sealing::Scheme::OaepKem {
            let public = self.call_on_objects("C_FindObjects", "none", |s, live| {
                sealing::public_of(s, live.handle(kek)?).map(|h| live.obj(h))
            });
            if let Ok(public) = public {
                self.destroy_if_present(public)?;
            }
        }
        self.destroy_if_present(kek)
    }

    /// Create an AES token object of `len` bytes (32 or 16) identified (and labelled) by
    /// `id`: sensitive, for encrypt/decrypt; extractable only for keys created `exportable`
    /// (the token then wraps it for export, never reveals it). Returns it with its world copy
    /// (wrapped by the root key in the same call before the object is made non-extractable:
    /// see [`world`]), or `None` where the module declines to wrap it.
    pub fn generate_token_aes_key_with(
        &self,
        id: &[u8],
        len: usize,
        exportable: bool,
    ) -> Result<(Obj, Option<Vec<u8>>)> {
        // Extractable only where it must be: for its world copy (cleared after it, see
        // [`world`]) or to be exported. A module that makes no world copies never sees a
        // non-exportable key extractable, even for a moment.
        let extractable = exportable || self.makes_world_copies()?;
        let mut template = wrapping::aes_version_template(id, extractable);
        template.push(Attribute::ValueLen((len as u64).into()));
        let usage = world::Usage {
            encrypt: true,
            extractable: exportable,
            ..world::Usage::default()
        };
        self.call_on_objects("C_GenerateKey", "CKM_AES_KEY_GEN", |s, live| {
            let h = s
                .generate_key(&Mechanism::AesKeyGen, &template)
                .map_err(unavailable("generate token key"))?;
            match world::seal(
                s,
                live.root.wrapping_key(),
                h,
                (world::CopyKind::Aes, usage),
                &[],
            ) {
                Ok(copy) => Ok((live.obj(h), copy)),
                Err(e) => {
                    let _ = s.destroy_object(h);
                    Err(e)
                }
            }
        })
    }

    /// Copy a token object into a session object of the anchor session (`C_CopyObject` with
    /// `CKA_TOKEN` false). The copy keeps every other attribute: sensitive, and extractable
    /// only where the original is (SoftHSM2 refused `CKA_EXTRACTABLE` false, and `CKA_COPYABLE`
    /// false, both in the copy's template and set on the copy afterwards). It lives until
    /// destroyed or until the anchor session ends (this process, or the HSM starting over).
    pub fn session_copy(&self, object: Obj) -> Result<Obj> {
        self.call_anchor_on_objects("C_CopyObject", "none", |anchor, live| {
            let copy = anchor
                .copy_object(live.handle(object)?, &[Attribute::Token(false)])
                .map_err(|e| {
                    tracing::warn!(error = %e, "the token refused a session copy of a key object; using the token object");
                    Error::HsmUnavailable
                })?;
            Ok(live.obj(copy))
        })
    }

    /// Every token object keyplane made for a key version, an import token or a tenant KEK
    /// (`CKA_ID` starting `kp:`, `kp-import:` or `keyplane-kek:`), with its `CKA_ID`: what
    /// garbage collection compares with the database. Never the root key, the audit key or
    /// session objects.
    pub fn keyplane_objects(&self) -> Result<Vec<(Vec<u8>, Obj)>> {
        self.call_on_objects("C_FindObjects", "none", |s, live| {
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
                        if id.starts_with(b"kp:")
                            || id.starts_with(b"kp-import:")
                            || sealing::is_kek_id(&id)
                        {
                            found.push((id, live.obj(h)));
                        }
                    }
                }
            }
            Ok(found)
        })
    }

    /// Destroy an object; one already gone (destroyed meanwhile by another request) is fine.
    pub fn destroy_if_present(&self, object: Obj) -> Result<()> {
        self.call_on_objects("C_DestroyObject", "none", |s, live| {
            match s.destroy_object(live.handle(object)?) {
                Ok(()) | Err(CkError::Pkcs11(RvError::ObjectHandleInvalid, _)) => Ok(()),
                Err(e) => Err(unavailable("destroy object")(e)),
            }
        })
    }

    /// Destroy an object if its `CKA_ID` is still `id`, read in the same call (garbage
    /// collection destroys by a handle from an earlier listing, and a module may hand a
    /// destroyed object's handle to a new object). Returns whether it destroyed it.
    pub fn destroy_if_id(&self, object: Obj, id: &[u8]) -> Result<bool> {
        self.call_on_objects("C_DestroyObject", "none", |s, live| {
            let h = live.handle(object)?;
            let attrs = match s.get_attributes(h, &[cryptoki::object::AttributeType::Id]) {
                Ok(attrs) => attrs,
                Err(CkError::Pkcs11(RvError::ObjectHandleInvalid, _)) => return Ok(false),
                Err(e) => return Err(unavailable("read an object's id")(e)),
            };
            let same = attrs
                .iter()
                .any(|a| matches!(a, Attribute::Id(current) if current.as_slice() == id));
            if !same {
                return Ok(false);
            }
            match s.destroy_object(h) {
                Ok(()) => Ok(true),
                Err(CkError::Pkcs11(RvError::ObjectHandleInvalid, _)) => Ok(false),
                Err(e) => Err(unavailable("destroy object")(e)),
            }
        })
    }

    /// Destroy an object (used to undo a failed creation).
    pub fn destroy(&self, object: Obj) -> Result<()> {
        self.call_on_objects("C_DestroyObject", "none", |s, live| {
            s.destroy_object(live.handle(object)?)
                .map_err(unavailable("destroy object"))
        })
    }

    /// Test hook: end every session of the token and its login through a second handle to
    /// the module, as another application or the module itself could (`C_Logout`, then
    /// `C_CloseAllSessions`). The next call finds its session gone.
    #[cfg(all(feature = "test-hooks", debug_assertions))]
    pub fn close_all_sessions_elsewhere(&self) -> Result<()> {
        let slot = self.slot()?;
        // SAFETY: loads the module this process already loaded (the same library instance)
        // and calls three of its functions with a slot id it reported and a session it opens.
        unsafe {
            let raw = cryptoki_sys::Pkcs11::new(self.module()).map_err(|_| Error::Internal)?;
            let (open, logout, close_all) = (
                raw.C_OpenSession.as_ref().map_err(|_| Error::Internal)?,
                raw.C_Logout.as_ref().map_err(|_| Error::Internal)?,
                raw.C_CloseAllSessions
                    .as_ref()
                    .map_err(|_| Error::Internal)?,
            );
            let mut session = 0;
            let flags = cryptoki_sys::CKF_SERIAL_SESSION | cryptoki_sys::CKF_RW_SESSION;
            if open(slot.id(), flags, std::ptr::null_mut(), None, &mut session) == 0 {
                logout(session);
            }
            close_all(slot.id());
        }
        Ok(())
    }
}

fn gcm_encrypt(
    s: &Session,
    key: ObjectHandle,
    iv: &[u8; GCM_IV_LEN],
    aad: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>> {
    let mut iv = *iv;
    let params =
        GcmParams::new(&mut iv, aad, GCM_TAG_BITS.into()).map_err(unavailable("gcm-params"))?;
    s.encrypt(&Mechanism::AesGcm(params), key, plaintext)
        .map_err(unavailable("aes-gcm encrypt"))
}

fn gcm_decrypt(
    s: &Session,
    key: ObjectHandle,
    iv: &[u8; GCM_IV_LEN],
    aad: &[u8],
    sealed: &[u8],
    quirks: quirks::Quirks,
) -> Result<Zeroizing<Vec<u8>>> {
    let mut iv = *iv;
    let params =
        GcmParams::new(&mut iv, aad, GCM_TAG_BITS.into()).map_err(unavailable("gcm-params"))?;
    match s.decrypt(&Mechanism::AesGcm(params), key, sealed) {
        Ok(pt) => Ok(Zeroizing::new(pt)),
        Err(e) if quirks.rejects_input(&e) => Err(Error::DecryptionFailed),
        Err(e) => Err(unavailable("aes-gcm decrypt")(e)),
    }
}

fn unwrap_kek(anchor: &Session, root_key: ObjectHandle, wrapped: &[u8]) -> Result<ObjectHandle> {
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
    anchor
        .unwrap_key(&Mechanism::AesKeyWrapPad, root_key, wrapped, &template)
        .map_err(unavailable("unwrap kek"))
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
