//! The keyring: turns stored key-version records into encryptions and decryptions.
//!
//! Owns the two protection levels and nothing about authorization or audit:
//! - `hsm`: the version is a non-extractable AES token object (found by `CKA_ID`; 32 bytes
//!   for `AES_256_GCM`, 16 for `AES_128_GCM`); sealing and opening run inside the token
//!   (`CKM_AES_GCM`).
//! - `envelope`: the spec's key length (32 bytes, 16 for `AES_128_GCM`) from the token's RNG,
//!   stored only as `IV ‖ AES-GCM(tenant KEK)` with the tenant, key id and version bound as
//!   AAD; opened in the HSM on first use, then kept in the bounded, time-limited
//!   [`EnvelopeCache`] and used through `ring` with the spec's algorithm (AES-256-GCM,
//!   AES-128-GCM or ChaCha20-Poly1305; `CHACHA20_POLY1305` keys are `envelope` only).
//!
//! Tenant KEKs are AES-256 keys wrapped by the root key (`CKM_AES_KEY_WRAP_PAD`) and live in
//! the token as non-extractable session objects while the node runs.
//!
//! `hsm` versions are usable on every node sharing the database (the security world, see
//! [`crate::hsm::world`]): each version's row keeps a world copy of its secret or private key
//! wrapped by the root key (`hsm_wrapped`), and a node whose token does not hold the version's
//! token object makes the object from that copy inside its own HSM, as a non-extractable
//! session object, at first use (`Keyring::resolve`), and caches its handle for the HSM
//! login. Those objects go with the version: [`Keyring::shred_version`] on the node that
//! shreds, [`Keyring::forget_version`] / [`Keyring::forget_key`] on the others (called by
//! cross-node invalidation), and [`Keyring::sweep_session_objects`] at every scheduler pass
//! as the backstop. Every use still reads the version's row first (the operations check its
//! state, through the row caches), so a destroyed version is refused on every node within the
//! row caches' TTL, whether or not its session objects are gone yet.
//!
//! With the embedded SoftHSM2 token, data-plane calls use a session copy of a version's token
//! object (see `Keyring::data_plane_handle`): SoftHSM2 rereads its token's files whenever a
//! token object is used.
//!
//! Other key specs (HMAC, ECC, Ed25519, RSA; see [`spec`]) are `hsm` only: their versions
//! are non-extractable token objects sharing one `CKA_ID` ([`crate::hsm::version_object_id`];
//! a key pair's private and public objects both carry it); [`asym`] signs, verifies, MACs,
//! encrypts with OAEP and derives with them, [`public_key`] encodes their public keys.
//!
//! Data-plane nonces come from the OS CSPRNG (ring's `SystemRandom`); key material and IVs of
//! wrapped material come from the token's RNG.
//!
//! Every HSM call goes through `Keyring::retrying`: when one fails with `HsmUnavailable`, the
//! HSM checks its login ([`crate::hsm::Hsm::check`]) and starts over if it was lost; the call
//! then runs once more. That is safe for calls that make material too: a first attempt that
//! made an object before the failure left one that no row will name (each attempt names its
//! objects itself), which garbage collection removes. The handles this keyring caches (tenant
//! KEKs, version objects, session copies) belong to one login (epoch) and are resolved again
//! after a recovery, never reused.

pub mod asym;
pub mod ciphertext;

/// How many messages one key version may seal with random 96-bit nonces. NIST SP 800-38D
/// (8.3) caps AES-GCM with random IVs at 2^32 invocations per key, so that the chance of two
/// messages sharing a nonce (which gives away the authentication key and the XOR of the two
/// plaintexts) stays below 2^-32; the same bound is the usual one for ChaCha20-Poly1305 with
/// random nonces. The limit here keeps 2^28 below it, because counts are approximate: each
/// node counts in memory and writes its counts about once a second (`usage`), and rows are
/// read through caches; 2^28 is far more than every node of a cluster seals in the seconds
/// those lags last.
pub const RANDOM_NONCE_SEAL_LIMIT: i64 = (1 << 32) - (1 << 28);

/// How many messages a version seals before the lifecycle scheduler rotates its key (where
/// keyplane can renew the material), long before [`RANDOM_NONCE_SEAL_LIMIT`] refuses to seal.
pub const RANDOM_NONCE_ROTATE_AT: i64 = 1 << 31;
pub mod context;
pub mod envelope_cache;
pub mod transport;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cryptoki::object::ObjectClass;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroizing;

use crate::algorithms::{KeySpec, KeyUsage};
use crate::error::{Error, Result};
use crate::hsm::{Health, Hsm, Obj, Sealer};
use crate::model::Protection;
use crate::store::keys::KeyVersionRow;
use crate::store::{tenants, Db};
use envelope_cache::EnvelopeCache;

/// What a new key version stores, and how to undo its creation.
pub struct NewVersion {
    pub hsm_object_id: Option<Vec<u8>>,
    pub wrapped_material: Option<Vec<u8>>,
    /// An `hsm` version's world copy (see [`crate::hsm::world`]).
    pub hsm_wrapped: Option<Vec<u8>>,
    /// Token objects to destroy if the surrounding transaction fails (the secret key, or
    /// both halves of a key pair).
    pub created_objects: Vec<Obj>,
}

/// Which token object of a version a cached handle is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum ObjKind {
    Secret,
    Private,
    Public,
}

impl ObjKind {
    fn class(self) -> ObjectClass {
        match self {
            ObjKind::Secret => ObjectClass::SECRET_KEY,
            ObjKind::Private => ObjectClass::PRIVATE_KEY,
            ObjKind::Public => ObjectClass::PUBLIC_KEY,
        }
    }
}

/// A version's object: its kind and `CKA_ID`.
type ObjectKey = (ObjKind, Vec<u8>);

/// Session objects of versions: copies of this node's token objects (see
/// `Keyring::data_plane_handle`), and objects made from the world copies of versions whose
/// token objects are in other nodes' tokens (see `Keyring::resolve`).
#[derive(Default)]
struct SessionCopies {
    /// `None` where the token refused the copy (the token object is used).
    made: HashMap<ObjectKey, Option<Obj>>,
    /// Made from world copies (no budget: without them the version cannot be used here).
    unwrapped: HashMap<ObjectKey, Obj>,
    /// Advanced whenever handles are forgotten: a copy made across that is not kept.
    generation: u64,
    /// The HSM login the copies belong to: they end with it.
    hsm_epoch: u64,
}

impl SessionCopies {
    /// Forget the objects of an earlier login (they ended with it).
    fn renew(&mut self, hsm_epoch: u64) {
        if self.hsm_epoch != hsm_epoch {
            self.made.clear();
            self.unwrapped.clear();
            self.hsm_epoch = hsm_epoch;
        }
    }
}

/// Every session copy this process made, by the `CKA_ID` of the object copied, whether it
/// was kept or not (test builds only: `/debug/hsm-objects` checks by handle that none of a
/// shredded version's copies exists any more, without relying on a search).
#[cfg(all(feature = "test-hooks", debug_assertions))]
pub static SESSION_COPIES_MADE: Mutex<std::collections::BTreeMap<Vec<u8>, Vec<Obj>>> =
    Mutex::new(std::collections::BTreeMap::new());

/// A tenant KEK one request made ([`Keyring::create_tenant_kek`]), to undo
/// ([`Keyring::discard_tenant_kek`]) if the tenant is not committed.
#[derive(Debug)]
pub struct NewKek {
    tenant: String,
    handle: Obj,
}

/// The keyring.
pub struct Keyring {
    hsm: Arc<Hsm>,
    db: Db,
    cache: EnvelopeCache,
    keks: Mutex<HashMap<String, Obj>>,
    hsm_objects: Mutex<HashMap<ObjectKey, Obj>>,
    /// Session copies of versions' token objects, for the data plane.
    session_copies: Mutex<SessionCopies>,
    /// Most session copies kept; 0 (the default): none.
    max_session_copies: usize,
    rng: SystemRandom,
    /// The PKCS#11 module computes in this process (SoftHSM2): see [`Keyring::data_plane`].
    in_process_token: bool,
}

/// Run a blocking HSM call off the async executor.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || span.in_scope(f))
        .await
        .map_err(|_| Error::Internal)?
}

fn envelope_aad(tenant: &str, key_id: &str, version: u32) -> Vec<u8> {
    let mut aad = b"keyplane/envelope-material/v1\0".to_vec();
    aad.extend_from_slice(tenant.as_bytes());
    aad.push(0);
    aad.extend_from_slice(key_id.as_bytes());
    aad.push(0);
    aad.extend_from_slice(&version.to_be_bytes());
    aad
}

/// ring's algorithm for envelope keys of `spec` (a symmetric encryption spec).
fn envelope_algorithm(spec: KeySpec) -> Result<&'static ring::aead::Algorithm> {
    match spec {
        KeySpec::Aes256Gcm => Ok(&ring::aead::AES_256_GCM),
        KeySpec::Aes128Gcm => Ok(&ring::aead::AES_128_GCM),
        KeySpec::ChaCha20Poly1305 => Ok(&ring::aead::CHACHA20_POLY1305),
        _ => Err(Error::Internal),
    }
}

/// `material` as a ring key of `spec`'s algorithm (refused if its length is not the spec's).
fn envelope_key(spec: KeySpec, material: &[u8]) -> Result<LessSafeKey> {
    let key = UnboundKey::new(envelope_algorithm(spec)?, material).map_err(|_| {
        tracing::error!(
            spec = spec.as_str(),
            "envelope material of the wrong length"
        );
        Error::Internal
    })?;
    Ok(LessSafeKey::new(key))
}

impl Keyring {
    pub fn new(hsm: Arc<Hsm>, db: Db, cache_entries: usize, cache_ttl: Duration) -> Self {
        let in_process_token = hsm.capabilities().computes_in_process();
        Keyring {
            in_process_token,
            hsm,
            db,
            cache: EnvelopeCache::new(cache_entries, cache_ttl),
            keks: Mutex::new(HashMap::new()),
            hsm_objects: Mutex::new(HashMap::new()),
            session_copies: Mutex::default(),
            max_session_copies: 0,
            rng: SystemRandom::new(),
        }
    }

    /// Let the data plane use up to `max` session copies of versions' token objects (see
    /// `data_plane_handle`), on a token that computes in this process (SoftHSM2) and that no
    /// other process uses (the embedded one). A copy in a token shared with other nodes would
    /// outlive its version on the nodes that did not shred it.
    pub fn with_session_copies(mut self, max: usize) -> Self {
        if self.in_process_token {
            self.max_session_copies = max;
        }
        self
    }

    /// The HSM this keyring uses.
    pub fn hsm(&self) -> &Arc<Hsm> {
        &self.hsm
    }

    /// Run an HSM operation (see the module docs): if it fails with `HsmUnavailable` and the
    /// HSM had to start over, run it once more.
    async fn retrying<T, F, Fut>(&self, mut op: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let epoch = self.hsm.epoch();
        match op().await {
            Err(Error::HsmUnavailable) => {
                let hsm = self.hsm.clone();
                match blocking(move || Ok(hsm.check(epoch))).await? {
                    Health::Recovered => op().await,
                    _ => Err(Error::HsmUnavailable),
                }
            }
            other => other,
        }
    }

    /// `obj` if it belongs to the HSM's current login.
    fn current(&self, obj: Option<Obj>) -> Option<Obj> {
        obj.filter(|o| o.epoch() == self.hsm.epoch())
    }

    /// Random bytes from the token.
    pub async fn random(&self, n: usize) -> Result<Zeroizing<Vec<u8>>> {
        self.retrying(|| {
            let hsm = self.hsm.clone();
            blocking(move || hsm.random(n))
        })
        .await
    }

    /// Seal `secret` under the root key (for node secrets such as the token-hash key).
    pub async fn seal_with_root(&self, aad: &[u8], secret: &[u8]) -> Result<Vec<u8>> {
        self.retrying(|| {
            let hsm = self.hsm.clone();
            let (aad, secret) = (aad.to_vec(), Zeroizing::new(secret.to_vec()));
            blocking(move || hsm.seal(Sealer::Root, &aad, &secret))
        })
        .await
    }

    /// Open a blob sealed by [`Keyring::seal_with_root`].
    pub async fn open_with_root(&self, aad: &[u8], blob: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        self.retrying(|| {
            let hsm = self.hsm.clone();
            let (aad, blob) = (aad.to_vec(), blob.to_vec());
            blocking(move || hsm.unseal(Sealer::Root, &aad, &blob))
        })
        .await
    }

    /// Create a tenant KEK; returns its stored form and the KEK made, which the caller keeps
    /// ([`Keyring::keep_tenant_kek`]) once its tenant is committed, or undoes
    /// ([`Keyring::discard_tenant_kek`]). Not cached before: until the tenant commits, another
    /// request creating the same tenant may win, and its tenant must never be served this KEK.
    pub async fn create_tenant_kek(&self, tenant: &str) -> Result<(Vec<u8>, NewKek)> {
        let (wrapped, handle) = self
            .retrying(|| {
                let hsm = self.hsm.clone();
                blocking(move || hsm.generate_kek())
            })
            .await?;
        let made = NewKek {
            tenant: tenant.to_string(),
            handle,
        };
        Ok((wrapped, made))
    }

    /// After its tenant committed: cache the KEK made for it (unless a request unwrapped the
    /// stored one meanwhile: then that one is kept and ours released, as in `tenant_kek`).
    pub fn keep_tenant_kek(&self, made: NewKek) {
        let Ok(mut keks) = self.keks.lock() else {
            return;
        };
        match self.current(keks.get(&made.tenant).copied()) {
            Some(existing) if existing != made.handle => {
                let hsm = self.hsm.clone();
                tokio::task::spawn_blocking(move || hsm.release_kek(made.handle));
            }
            Some(_) => {}
            None => {
                keks.insert(made.tenant, made.handle);
            }
        }
    }

    /// Undo [`Keyring::create_tenant_kek`] after a failed transaction: destroy the KEK this
    /// request made (its session object, or its token objects: see [`Hsm::discard_kek`]).
    /// Only this KEK: two requests creating one tenant each make one, and the loser's undo
    /// must not destroy the winner's (with token-object KEKs, the tenant's only one).
    pub async fn discard_tenant_kek(&self, made: NewKek) {
        // One of an earlier login ended with it.
        if let Some(handle) = self.current(Some(made.handle)) {
            let hsm = self.hsm.clone();
            if let Err(e) = blocking(move || hsm.discard_kek(handle)).await {
                tracing::error!(error = %e, "could not destroy the KEK of a failed tenant creation");
            }
        }
    }

    async fn tenant_kek(&self, tenant: &str) -> Result<Obj> {
        let cached = self
            .keks
            .lock()
            .map_err(|_| Error::Internal)?
            .get(tenant)
            .copied();
        if let Some(h) = self.current(cached) {
            return Ok(h);
        }
        let row = tenants::get(&self.db, tenant)
            .await?
            .ok_or_else(|| Error::NotFound {
                kind: "tenant",
                id: tenant.to_string(),
            })?;
        let hsm = self.hsm.clone();
        let handle = blocking(move || hsm.unwrap_kek(&row.kek_wrapped)).await?;
        let mut keks = self.keks.lock().map_err(|_| Error::Internal)?;
        // Another request may have unwrapped it meanwhile; keep one handle. Only a session
        // object of our own is destroyed: a token-object KEK (`OaepKem`) found by both
        // requests is the same object, and is the tenant's only KEK.
        if let Some(existing) = self.current(keks.get(tenant).copied()) {
            let (hsm, dup) = (self.hsm.clone(), handle);
            if dup != existing {
                tokio::task::spawn_blocking(move || hsm.release_kek(dup));
            }
            return Ok(existing);
        }
        keks.insert(tenant.to_string(), handle);
        Ok(handle)
    }

    /// Generate material for a new version of a key of `spec` and `usage` (specs other than
    /// the symmetric encryption ones are `hsm` only, `CHACHA20_POLY1305` is `envelope` only;
    /// create-key refuses other combinations before this). `exportable`: an `hsm` version the
    /// token may wrap for export.
    pub async fn new_version(
        &self,
        tenant: &str,
        key_id: &str,
        version: u32,
        kind: (Protection, KeySpec, KeyUsage),
        exportable: bool,
    ) -> Result<NewVersion> {
        self.retrying(|| self.make_version(tenant, key_id, version, kind, exportable))
            .await
    }

    async fn make_version(
        &self,
        tenant: &str,
        key_id: &str,
        version: u32,
        (protection, spec, usage): (Protection, KeySpec, KeyUsage),
        exportable: bool,
    ) -> Result<NewVersion> {
        let Some(key_len) = spec.symmetric_key_len() else {
            if protection != Protection::Hsm {
                return Err(Error::Internal);
            }
            let object_id = crate::hsm::version_object_id(key_id, version);
            let (hsm, id) = (self.hsm.clone(), object_id.clone());
            let (handles, hsm_wrapped) = blocking(move || {
                hsm.generate_version_objects(
                    &id,
                    &String::from_utf8_lossy(&crate::hsm::version_label(&id)),
                    (spec, usage),
                    exportable,
                )
            })
            .await?;
            return Ok(NewVersion {
                hsm_object_id: Some(object_id),
                wrapped_material: None,
                hsm_wrapped,
                created_objects: handles,
            });
        };
        match protection {
            Protection::Hsm => {
                if !spec.allows_hsm() {
                    return Err(Error::Internal);
                }
                let object_id = crate::hsm::version_object_id(key_id, version);
                let (hsm, id) = (self.hsm.clone(), object_id.clone());
                let (handle, hsm_wrapped) =
                    blocking(move || hsm.generate_token_aes_key_with(&id, key_len, exportable))
                        .await?;
                self.hsm_objects
                    .lock()
                    .map_err(|_| Error::Internal)?
                    .insert((ObjKind::Secret, object_id.clone()), handle);
                Ok(NewVersion {
                    hsm_object_id: Some(object_id),
                    wrapped_material: None,
                    hsm_wrapped,
                    created_objects: vec![handle],
                })
            }
            Protection::Envelope => {
                let material = self.random(key_len).await?;
                let wrapped = self
                    .seal_envelope_material(tenant, key_id, version, material)
                    .await?;
                Ok(NewVersion {
                    hsm_object_id: None,
                    wrapped_material: Some(wrapped),
                    hsm_wrapped: None,
                    created_objects: Vec::new(),
                })
            }
        }
    }

    /// Undo [`Keyring::new_version`] after a failed transaction. Objects of an earlier HSM
    /// login cannot be named any more; garbage collection removes them.
    pub async fn discard(&self, created: NewVersion) {
        let id = created.hsm_object_id.clone();
        if let Some(id) = &id {
            self.destroy_copies(self.forget_handles(id)).await;
        }
        for handle in created.created_objects {
            if self.current(Some(handle)).is_none() {
                tracing::warn!("an HSM object of a failed key creation outlived its login; garbage collection will remove it");
                continue;
            }
            let hsm = self.hsm.clone();
            if let Err(e) = blocking(move || hsm.destroy(handle)).await {
                tracing::error!(error = %e, "could not destroy HSM object of a failed key creation");
            }
        }
        // Copies a request made before the objects were gone (see `data_plane_handle`).
        if let Some(id) = &id {
            self.destroy_copies(self.forget_handles(id)).await;
        }
    }

    /// Forget the cached handles of a version's objects; returns its session objects (copies
    /// and objects made from its world copy), for the caller to destroy. One being made
    /// meanwhile is not kept (see `data_plane_handle` and `resolve`).
    fn forget_handles(&self, object_id: &[u8]) -> Vec<Obj> {
        self.forget_matching(|id| id == object_id)
    }

    /// [`Keyring::forget_handles`] of every object whose `CKA_ID` `matches`.
    fn forget_matching(&self, matches: impl Fn(&[u8]) -> bool) -> Vec<Obj> {
        if let Ok(mut m) = self.hsm_objects.lock() {
            m.retain(|(_, id), _| !matches(id));
        }
        let mut forgotten = Vec::new();
        if let Ok(mut copies) = self.session_copies.lock() {
            copies.generation += 1;
            copies.made.retain(|(_, id), copy| {
                let keep = !matches(id);
                if !keep {
                    forgotten.extend(*copy);
                }
                keep
            });
            copies.unwrapped.retain(|(_, id), object| {
                let keep = !matches(id);
                if !keep {
                    forgotten.push(*object);
                }
                keep
            });
        }
        forgotten
    }

    /// Destroy session copies (a copy already gone, or gone with its login, is fine).
    async fn destroy_copies(&self, copies: Vec<Obj>) {
        for copy in copies {
            if self.current(Some(copy)).is_none() {
                continue;
            }
            let hsm = self.hsm.clone();
            if let Err(e) = blocking(move || hsm.destroy_if_present(copy)).await {
                tracing::error!(error = %e, "could not destroy the session copy of a key object");
            }
        }
    }

    /// Crypto-shred a version's material held by this node's HSM or cache: destroy its token
    /// objects and their session copies, every object carrying its `CKA_ID` (both halves of
    /// a key pair, objects made from its world copy; an object already gone is fine, so this
    /// can be retried) and forget cached envelope material. Wrapped copies in storage are the
    /// caller's to delete (the world copy in the version's row too: set to NULL with the
    /// row's change); other nodes drop theirs in [`Keyring::forget_version`].
    pub async fn shred_version(&self, key_id: &str, version: &KeyVersionRow) -> Result<()> {
        self.cache.forget(key_id);
        let Some(object_id) = version.hsm_object_id.clone() else {
            return Ok(());
        };
        self.destroy_copies(self.forget_handles(&object_id)).await;
        // Copies carry the same `CKA_ID`: this finds any made since. The label finds objects
        // of the same version that no row names: another creation attempt's, left by a crash
        // between creating them and undoing that attempt.
        let label = crate::hsm::version_label(&object_id);
        self.destroy_labelled(Some(object_id.clone()), label)
            .await?;
        crate::pause::point("shred:objects-destroyed", key_id).await;
        // A request that read the handles after the first forget and made its object (a copy,
        // or one from the world copy in a row it read before the shredding began) after the
        // search above, cached it: destroy that one too. One not yet cached finds the cache
        // changed by this forget and destroys its object itself.
        self.destroy_copies(self.forget_handles(&object_id)).await;
        Ok(())
    }

    /// Destroy every object of this node's HSM carrying `CKA_ID` `id` or label `label`,
    /// until none is found.
    async fn destroy_labelled(&self, id: Option<Vec<u8>>, label: Vec<u8>) -> Result<()> {
        self.retrying(|| {
            let (hsm, id, label) = (self.hsm.clone(), id.clone(), label.clone());
            blocking(move || loop {
                let mut found = match &id {
                    Some(id) => hsm.find_all(id)?,
                    None => Vec::new(),
                };
                found.extend(hsm.find_labelled(&label)?);
                found.sort_unstable();
                found.dedup();
                if found.is_empty() {
                    // None found is none left only if the token's objects can be seen.
                    return hsm.confirm_objects_visible();
                }
                for handle in found {
                    hsm.destroy_if_present(handle)?;
                }
            })
        })
        .await
    }

    /// Forget version `version` of key `key_id` on this node: destroy the session objects
    /// this node holds of it (data-plane copies, objects made from its world copy), drop its
    /// cached handles and the key's cached envelope material. Then, if the key is being
    /// destroyed or is destroyed (read from the database now), also destroy every object of
    /// the version in this node's token: the node that crypto-shredded it reached only its
    /// own token. Safe to call at any time, for any version (what is cached is made again
    /// from the row at the next use); for cross-node cache invalidation, when another node
    /// changed the version or its key, and by [`Keyring::sweep_session_objects`].
    pub async fn forget_version(&self, key_id: &str, version: u32) -> Result<()> {
        self.forget(key_id, Some(version)).await
    }

    /// [`Keyring::forget_version`] for every version of key `key_id`.
    pub async fn forget_key(&self, key_id: &str) -> Result<()> {
        self.forget(key_id, None).await
    }

    async fn forget(&self, key_id: &str, only: Option<u32>) -> Result<()> {
        self.cache.forget(key_id);
        let matches = |id: &[u8]| {
            version_of(id).is_some_and(|(k, v)| k == key_id && only.is_none_or(|o| o == v))
        };
        self.destroy_copies(self.forget_matching(matches)).await;
        let Some(key) = crate::store::keys::get(&self.db, key_id).await? else {
            // No such key (or not yet committed: its objects may be in the making).
            return Ok(());
        };
        use crate::model::KeyState;
        if key.state != KeyState::Destroying && key.state != KeyState::Destroyed {
            return Ok(());
        }
        // Nothing can make objects for a key being destroyed: every one left is shredded.
        let numbers: Vec<u32> = match only {
            Some(v) => vec![v],
            None => crate::store::keys::versions(&self.db, key_id)
                .await?
                .iter()
                .map(|v| v.version as u32)
                .collect(),
        };
        for v in numbers {
            let label = format!("kp:{key_id}:{v}").into_bytes();
            self.destroy_labelled(None, label).await?;
        }
        // Objects cached since the first forget (see `shred_version`).
        self.destroy_copies(self.forget_matching(matches)).await;
        Ok(())
    }

    /// Drop the session objects (and cached handles) of versions that no committed row names
    /// any more, as [`Keyring::forget_version`] does: the backstop of cross-node
    /// invalidation, run by every node at each scheduler pass. A version destroyed, or whose
    /// imported material was deleted, on another node leaves its session objects here until
    /// then at the latest. Returns how many versions it forgot.
    pub async fn sweep_session_objects(&self) -> Result<usize> {
        self.sweep_envelope_material().await?;
        let mut ids: Vec<Vec<u8>> = {
            let mut ids: Vec<Vec<u8>> = self
                .hsm_objects
                .lock()
                .map_err(|_| Error::Internal)?
                .keys()
                .map(|(_, id)| id.clone())
                .collect();
            let copies = self.session_copies.lock().map_err(|_| Error::Internal)?;
            ids.extend(copies.made.keys().map(|(_, id)| id.clone()));
            ids.extend(copies.unwrapped.keys().map(|(_, id)| id.clone()));
            ids
        };
        ids.sort_unstable();
        ids.dedup();
        if ids.is_empty() {
            return Ok(0);
        }
        let named = crate::store::keys::named_object_ids(&self.db, &ids).await?;
        let mut gone: Vec<(String, u32)> = ids
            .iter()
            .filter(|id| !named.contains(*id))
            .filter_map(|id| version_of(id))
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        gone.sort_unstable();
        gone.dedup();
        for (key_id, version) in &gone {
            tracing::info!(key = %key_id, version, "forgetting the HSM objects of a key version no row names any more");
            self.forget_version(key_id, *version).await?;
        }
        Ok(gone.len())
    }

    /// Drop the cached envelope material of keys whose material is gone (destroyed, or their
    /// imported material deleted), on another node too: envelope versions have no HSM object
    /// for [`Keyring::sweep_session_objects`] to find, and the notice that drops them
    /// (`MaterialShredded`) may be missed. Without this, such material stayed in memory for
    /// the cache's TTL, though requests are refused by their rows.
    async fn sweep_envelope_material(&self) -> Result<()> {
        let cached = self.cache.key_ids();
        if cached.is_empty() {
            return Ok(());
        }
        for key_id in crate::store::keys::without_material(&self.db, &cached).await? {
            tracing::info!(key = %key_id, "dropping the cached material of a key that holds none any more");
            self.cache.forget(&key_id);
        }
        Ok(())
    }

    /// The handle the data plane uses for a version's object of `kind`.
    ///
    /// With [`Keyring::with_session_copies`] (an embedded SoftHSM2 token) that is a session
    /// copy of the token object ([`Hsm::session_copy`]: sensitive and non-extractable like
    /// the original, unless the version was created exportable; export always wraps the
    /// token object), made at first use. SoftHSM2 checks whether its token changed on disk
    /// each time a token object's attribute is read (it opens, locks, reads and closes the
    /// token's generation file), several times per `C_EncryptInit`; a session object lives in
    /// memory only. Measured with `benches/hsm_rate.rs`: 110k AES-GCM calls a second with the
    /// copy against 66k with the token object. The copy holds nothing the process did not
    /// hold already (SoftHSM2 keeps token objects in memory too) and dies with the process
    /// (or with the HSM login, when the HSM starts over).
    /// It is destroyed with its version ([`Keyring::shred_version`]) or with a failed
    /// creation ([`Keyring::discard`]). Both forget the version's handles, which advances
    /// `generation`, so a copy made while its object was being destroyed is destroyed, not
    /// cached. At most `max_session_copies` are kept; versions past that use the token object.
    /// A copy the token refuses is remembered as `None`, and that version uses the token
    /// object too. A version whose object this node made from its world copy (see
    /// [`Keyring::resolve`]) uses that session object as it is.
    async fn data_plane_handle(&self, kind: ObjKind, version: &KeyVersionRow) -> Result<Obj> {
        if self.max_session_copies == 0 {
            return Ok(self.resolve(kind, version).await?.0);
        }
        let object_id = hsm_id(version)?;
        let cache_key = (kind, object_id.to_vec());
        let hsm_epoch = self.hsm.epoch();
        let generation = {
            let mut copies = self.session_copies.lock().map_err(|_| Error::Internal)?;
            copies.renew(hsm_epoch);
            match copies.made.get(&cache_key) {
                Some(Some(copy)) => return Ok(*copy),
                Some(None) => None,
                None if copies.made.len() >= self.max_session_copies => None,
                None => Some(copies.generation),
            }
        };
        let (object, session) = self.resolve(kind, version).await?;
        let Some(generation) = generation.filter(|_| !session) else {
            return Ok(object);
        };
        let hsm = self.hsm.clone();
        let copy = blocking(move || hsm.session_copy(object)).await.ok();
        #[cfg(all(feature = "test-hooks", debug_assertions))]
        if let (Some(copy), Ok(mut made)) = (copy, SESSION_COPIES_MADE.lock()) {
            made.entry(object_id.to_vec()).or_default().push(copy);
        }
        let existing = {
            let mut copies = self.session_copies.lock().map_err(|_| Error::Internal)?;
            let existing = copies.made.get(&cache_key).copied();
            if existing.is_none()
                && copies.generation == generation
                && copies.hsm_epoch == hsm_epoch
                && copies.made.len() < self.max_session_copies
            {
                copies.made.insert(cache_key, copy);
                return Ok(copy.unwrap_or(object));
            }
            existing
        };
        // Another request copied it first, handles were forgotten meanwhile, or the budget
        // ran out: this copy is not kept.
        if let Some(copy) = copy {
            self.destroy_copies(vec![copy]).await;
        }
        Ok(existing.flatten().unwrap_or(object))
    }

    /// The handle of a version's object of `kind` in this node's HSM.
    pub(crate) async fn hsm_handle(&self, kind: ObjKind, version: &KeyVersionRow) -> Result<Obj> {
        Ok(self.resolve(kind, version).await?.0)
    }

    /// The handle of a version's object of `kind` in this node's HSM, and whether it is a
    /// session object made from the version's world copy: its token object if this node's
    /// token holds it (found by `CKA_ID`, then cached), else an object made from the world
    /// copy in the row ([`Hsm::unwrap_world_copy`]: a session object of the anchor session,
    /// sensitive, non-extractable unless the key is exportable, with the same `CKA_ID`, label
    /// and usage), made at first use and cached for the HSM login. One made while the
    /// version's handles were forgotten (it is being shredded, or changed on another node)
    /// is destroyed at once and the call fails with `HsmUnavailable`; the request can be
    /// repeated (and reads the rows again). A version without a world copy whose token object
    /// is in another node's token cannot be used here (`HsmUnavailable`, and a log line that
    /// says why).
    async fn resolve(&self, kind: ObjKind, version: &KeyVersionRow) -> Result<(Obj, bool)> {
        let object_id = hsm_id(version)?;
        let cache_key = (kind, object_id.to_vec());
        let cached = self
            .hsm_objects
            .lock()
            .map_err(|_| Error::Internal)?
            .get(&cache_key)
            .copied();
        if let Some(h) = self.current(cached) {
            return Ok((h, false));
        }
        let hsm_epoch = self.hsm.epoch();
        let generation = {
            let mut copies = self.session_copies.lock().map_err(|_| Error::Internal)?;
            copies.renew(hsm_epoch);
            if let Some(made) = copies.unwrapped.get(&cache_key) {
                return Ok((*made, true));
            }
            copies.generation
        };
        let (hsm, id) = (self.hsm.clone(), object_id.to_vec());
        if let Some(handle) = blocking(move || hsm.find_object(kind.class(), &id)).await? {
            self.hsm_objects
                .lock()
                .map_err(|_| Error::Internal)?
                .insert(cache_key, handle);
            return Ok((handle, false));
        }
        let Some(copy) = version.hsm_wrapped.clone() else {
            tracing::error!(
                key = %version.key_id,
                version = version.version,
                "the HSM object of this key version is not in this node's token, and the version has no world copy (made before key versions were usable on every node, or of a kind the HSM cannot wrap): only the node whose token holds it can use it"
            );
            return Err(Error::HsmUnavailable);
        };
        let (hsm, id) = (self.hsm.clone(), object_id.to_vec());
        let made = blocking(move || hsm.unwrap_world_copy(&id, kind.class(), &copy)).await?;
        #[cfg(all(feature = "test-hooks", debug_assertions))]
        if let Ok(mut all) = SESSION_COPIES_MADE.lock() {
            all.entry(object_id.to_vec()).or_default().push(made);
        }
        enum Kept {
            Ours,
            Theirs(Obj),
            Forgotten,
        }
        let kept = {
            let mut copies = self.session_copies.lock().map_err(|_| Error::Internal)?;
            if copies.generation != generation || copies.hsm_epoch != hsm_epoch {
                Kept::Forgotten
            } else if let Some(existing) = copies.unwrapped.get(&cache_key) {
                Kept::Theirs(*existing)
            } else {
                copies.unwrapped.insert(cache_key, made);
                Kept::Ours
            }
        };
        match kept {
            Kept::Ours => Ok((made, true)),
            // Another request made it first: use that one.
            Kept::Theirs(existing) => {
                self.destroy_copies(vec![made]).await;
                Ok((existing, true))
            }
            Kept::Forgotten => {
                self.destroy_copies(vec![made]).await;
                tracing::info!(key = %version.key_id, version = version.version, "a key version was forgotten while this node made its object from the world copy; not used");
                Err(Error::HsmUnavailable)
            }
        }
    }

    /// The material of an envelope version of a key of `spec` (cached, or opened with the
    /// tenant KEK).
    async fn envelope_material(
        &self,
        tenant: &str,
        spec: KeySpec,
        version: &KeyVersionRow,
    ) -> Result<envelope_cache::Material> {
        let v = version.version as u32;
        if let Some(m) = self.cache.get(&version.key_id, v) {
            return Ok(m);
        }
        let wrapped = version.wrapped_material.clone().ok_or_else(|| {
            tracing::error!(key = %version.key_id, "envelope version without wrapped material");
            Error::Internal
        })?;
        let aad = envelope_aad(tenant, &version.key_id, v);
        let opened = self
            .retrying(|| async {
                let kek = self.tenant_kek(tenant).await?;
                let (hsm, wrapped, aad) = (self.hsm.clone(), wrapped.clone(), aad.clone());
                blocking(move || hsm.unseal(Sealer::Kek(kek), &aad, &wrapped)).await
            })
            .await
            .map_err(|e| match (e, &version.blob_store) {
                (Error::DecryptionFailed, Some(plugin)) => {
                    tracing::error!(key = %version.key_id, plugin = %plugin, "stored blob does not authenticate");
                    Error::PluginFailed {
                        plugin: plugin.clone(),
                        reason: "returned a key blob that does not authenticate (altered or swapped)".into(),
                    }
                }
                (Error::DecryptionFailed, None) => {
                    tracing::error!(key = %version.key_id, "wrapped material does not authenticate");
                    Error::Internal
                }
                (e, _) => e,
            })?;
        if Some(opened.len()) != spec.symmetric_key_len() {
            tracing::error!(key = %version.key_id, "envelope material of a wrong length");
            return Err(Error::Internal);
        }
        let material = Arc::new(opened);
        self.cache
            .insert(&version.key_id, v, material.clone(), &wrapped);
        Ok(material)
    }

    /// Drop expired cached material.
    pub fn sweep_cache(&self) {
        self.cache.sweep();
    }

    /// A version's wrapped material, if its material is in the cache: a request takes it
    /// instead of fetching the version's blob (see [`EnvelopeCache::wrapped`]).
    pub fn cached_wrapped(&self, key_id: &str, version: u32) -> Option<Vec<u8>> {
        self.cache.wrapped(key_id, version)
    }

    /// A fresh 96-bit nonce from the OS CSPRNG. Random nonces bound how often one key may
    /// seal: see [`RANDOM_NONCE_SEAL_LIMIT`].
    pub fn nonce(&self) -> Result<[u8; 12]> {
        let mut n = [0u8; 12];
        self.rng.fill(&mut n).map_err(|_| Error::Internal)?;
        Ok(n)
    }

    /// Run one data-plane HSM call (AES-GCM on a small message): on the calling worker when
    /// the token computes in this process (SoftHSM2, tens of microseconds of CPU, no I/O), so
    /// a request costs no hand-off to the blocking pool; through the pool for any other module,
    /// whose calls may wait on a device or the network.
    async fn data_plane<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> Result<T> + Send + 'static,
    ) -> Result<T> {
        if self.in_process_token {
            f()
        } else {
            blocking(f).await
        }
    }

    /// Seal under `version` of a key of `spec` with the spec's algorithm. Returns
    /// ciphertext ‖ tag.
    pub async fn seal(
        &self,
        tenant: &str,
        (protection, spec): (Protection, KeySpec),
        version: &KeyVersionRow,
        nonce: [u8; 12],
        aad: Vec<u8>,
        plaintext: Zeroizing<Vec<u8>>,
    ) -> Result<Vec<u8>> {
        match protection {
            Protection::Hsm => {
                self.retrying(|| async {
                    let handle = self.data_plane_handle(ObjKind::Secret, version).await?;
                    let (hsm, aad, plaintext) = (self.hsm.clone(), aad.clone(), plaintext.clone());
                    self.data_plane(move || hsm.gcm_encrypt(handle, &nonce, &aad, &plaintext))
                        .await
                })
                .await
            }
            Protection::Envelope => {
                let key =
                    envelope_key(spec, &self.envelope_material(tenant, spec, version).await?)?;
                let mut buf = plaintext.to_vec();
                key.seal_in_place_append_tag(
                    Nonce::assume_unique_for_key(nonce),
                    Aad::from(aad),
                    &mut buf,
                )
                .map_err(|_| Error::Internal)?;
                Ok(buf)
            }
        }
    }

    /// Open under `version` of a key of `spec` with the spec's algorithm.
    pub async fn open(
        &self,
        tenant: &str,
        (protection, spec): (Protection, KeySpec),
        version: &KeyVersionRow,
        nonce: [u8; 12],
        aad: Vec<u8>,
        sealed: Vec<u8>,
    ) -> Result<Zeroizing<Vec<u8>>> {
        match protection {
            Protection::Hsm => {
                self.retrying(|| async {
                    let handle = self.data_plane_handle(ObjKind::Secret, version).await?;
                    let (hsm, aad, sealed) = (self.hsm.clone(), aad.clone(), sealed.clone());
                    self.data_plane(move || hsm.gcm_decrypt(handle, &nonce, &aad, &sealed))
                        .await
                })
                .await
            }
            Protection::Envelope => {
                let key =
                    envelope_key(spec, &self.envelope_material(tenant, spec, version).await?)?;
                let mut buf = Zeroizing::new(sealed);
                let n = key
                    .open_in_place(
                        Nonce::assume_unique_for_key(nonce),
                        Aad::from(aad),
                        &mut buf,
                    )
                    .map_err(|_| Error::DecryptionFailed)?
                    .len();
                buf.truncate(n);
                Ok(buf)
            }
        }
    }

    /// Test hook: the plaintext material of an envelope version (debug builds with the
    /// `test-hooks` feature only; used to prove the material is nowhere in storage).
    #[cfg(all(feature = "test-hooks", debug_assertions))]
    pub async fn debug_envelope_material(
        &self,
        tenant: &str,
        spec: KeySpec,
        version: &KeyVersionRow,
    ) -> Result<Vec<u8>> {
        Ok(self
            .envelope_material(tenant, spec, version)
            .await?
            .to_vec())
    }
}

/// The key id and version number in a version object's `CKA_ID` (`kp:<key>:<version>`, with
/// or without its creation nonce), if it is one.
fn version_of(id: &[u8]) -> Option<(&str, u32)> {
    let label = id.get(..crate::hsm::version_label(id).len())?;
    let label = std::str::from_utf8(label).ok()?.strip_prefix("kp:")?;
    let (key, version) = label.rsplit_once(':')?;
    if key.is_empty() || version.is_empty() || !version.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((key, version.parse().ok()?))
}

fn hsm_id(version: &KeyVersionRow) -> Result<&[u8]> {
    version.hsm_object_id.as_deref().ok_or_else(|| {
        tracing::error!(key = %version.key_id, "hsm version without object id");
        Error::Internal
    })
}

#[cfg(test)]
mod tests {
    use super::version_of;

    #[test]
    fn version_objects_name_their_key_and_version() {
        let id = crate::hsm::version_object_id("k-1", 12);
        assert_eq!(version_of(&id), Some(("k-1", 12)));
        // Ids from before the creation nonce, and keys whose ids hold a colon.
        assert_eq!(version_of(b"kp:k-1:3"), Some(("k-1", 3)));
        assert_eq!(version_of(b"kp:a:b:4"), Some(("a:b", 4)));
        for other in [
            &b"kp-import:imp-1"[..],
            b"keyplane-audit-signing-v1",
            b"kp::1",
            b"kp:k-1:",
            b"kp:k-1:x",
            b"kp:k-1:99999999999",
            b"",
        ] {
            assert_eq!(
                version_of(other),
                None,
                "{}",
                String::from_utf8_lossy(other)
            );
        }
    }
}
