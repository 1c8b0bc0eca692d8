//! Tenant plugins: WebAssembly components run by wasmtime, sandboxed per invocation.
//!
//! Owns the one [`wasmtime::Engine`] (component model, pooling allocator, fuel and epoch
//! interruption), type-checking against a world at upload, the node's cache of precompiled
//! components, and invocation: a fresh instance from a cached, type-checked `InstancePre` per
//! call, with a fuel budget, a wall-clock deadline, a memory cap, a table cap and an output cap.
//! A trap, deadline, fuel exhaustion or OOM becomes a typed [`Error`] for that call only; the
//! host keeps serving. Invocations run on threads of their own, within each tenant's share of
//! concurrent calls and fuel ([`fairness`]), so one tenant's plugins cannot starve the others
//! or the request workers.
//!
//! Where components live: the uploaded bytes are in the database (`plugin_components`, keyed by
//! SHA-256, written in the upload's transaction by `ops::upload_plugin`), so every node sharing
//! the database can run every plugin. Each node keeps only a cache, in
//! `<data-dir>/plugins/cache/<sha256>-<compat>.cwasm`, where `<compat>` hashes the engine's
//! compatibility hash (wasmtime version and engine configuration): on first use of a plugin the
//! node takes the artifact from the cache or, if it is missing, reads the component from the
//! database, checks that it hashes to its SHA-256 (bytes altered in the database are refused
//! with [`Error::PluginComponentCorrupt`] and never compiled), compiles it and writes the
//! artifact (temporary file, then rename, so no reader sees half a file). A cached file starts
//! with a magic and the SHA-256 of the serialized artifact after it; one that is torn, damaged,
//! or built by another engine configuration (wasmtime refuses those) is removed and compiled
//! again from the database. Only a file whose digest matches is handed to wasmtime to
//! deserialize (which maps it as machine code), so a damaged file never runs. At start
//! ([`PluginRuntime::adopt_local_files`]) a node imports the components an older release kept
//! as `<data-dir>/plugins/<sha256>.wasm` into the database and drops cached artifacts of another
//! engine configuration or of components the database no longer holds.
//!
//! Compilation is CPU work outside any tenant's share ([`fairness`] meters calls, not
//! uploads), so it is bounded on its own: at most [`COMPILE_CONCURRENCY`] components compile
//! at once on a node (uploads and first uses alike; more wait their turn), and an upload of
//! bytes this node has already compiled (loaded, uploaded meanwhile, or in the cache) is not
//! compiled again, only type-checked against its world.
//!
//! An upload is compiled before its transaction commits, and may still be refused after
//! (a capability not granted, its name taken meanwhile, a failed commit), so what it compiled
//! is only held (at most [`PENDING_UPLOADS`] of them), not cached: the first call of the
//! plugin (whose row it read, so the upload committed) takes it from there, keeps it loaded
//! and writes its artifact to the cache. A refused upload's entry is dropped at once (or, after
//! a failed commit, pushed out by later uploads), so it leaves nothing on disk. Deleting a
//! plugin drops its loaded entries and artifact once its deletion has committed, unless
//! another plugin names the same component ([`PluginRuntime::after_deletion`]).
//!
//! When every slot of the pooling allocator is taken (`plugins.max_instances`, by whichever
//! tenants), a call is answered [`Error::Throttled`] with a short wait, not as a failure of
//! the plugin: the tenant did nothing wrong, and a retry soon succeeds.
//!
//! Worlds and their grants: `rotation-schedule` plugins get `log` (and WASI with nothing
//! granted); `storage-backend` plugins also get the tenant-scoped `kv` table, and, per plugin,
//! a preopened directory (`filesystem`) and outbound HTTP to granted destinations
//! (`http:<host>:<port>`, see [`http_grant`]). A component that imports anything else is
//! refused at upload.

pub mod bindings;
mod config;
mod fairness;
mod host;
pub mod http_grant;
mod kv_store;

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use ring::digest;
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, PoolConcurrencyLimitError, PoolingAllocationConfig,
    Store, Trap,
};

use crate::config::PluginsConfig;
use crate::error::{Error, Result};
use crate::store::plugins::{self as plugin_rows, PluginRow};
use crate::store::{now_rfc3339, Db};
use bindings::v0_1::rotation::{keyplane::plugin::types::KeyInfo, RotationSchedulePre};
use bindings::v0_1::storage::StorageBackendPre;
pub use config::{is_sensitive, PluginConfig, PLAIN_KEYS, REDACTED};
pub use host::{Grants, HostState};
use http_grant::HttpGrant;
pub use kv_store::KvStore;

/// The worlds a plugin can implement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum World {
    RotationSchedule,
    StorageBackend,
}

impl World {
    pub fn parse(s: &str) -> Option<World> {
        match s {
            "rotation-schedule" => Some(World::RotationSchedule),
            "storage-backend" => Some(World::StorageBackend),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            World::RotationSchedule => "rotation-schedule",
            World::StorageBackend => "storage-backend",
        }
    }
}

/// A plugin as the host keeps it loaded.
enum Loaded {
    Rotation(RotationSchedulePre<HostState>),
    Storage(StorageBackendPre<HostState>),
}

impl Loaded {
    /// The compiled component (cheap to clone: shared).
    fn component(&self) -> &Component {
        match self {
            Loaded::Rotation(p) => p.instance_pre().component(),
            Loaded::Storage(p) => p.instance_pre().component(),
        }
    }
}

/// Components compiled at once on a node. Each compilation already spreads its functions over
/// every core (wasmtime's parallel compilation), so more at once would only queue for the same
/// cores while each holds its memory and a blocking thread; two, so that one large upload
/// does not hold every other up.
pub const COMPILE_CONCURRENCY: usize = 2;

/// Uploads compiled whose commit has not been seen yet (see the module docs), newest last.
/// Past this many the oldest is dropped: a plugin whose entry went is compiled again from the
/// database at its first call.
pub const PENDING_UPLOADS: usize = 8;

/// At most [`COMPILE_CONCURRENCY`] compilations at once. Compiling blocks a thread, so this
/// is a counting semaphore for blocking threads (callers are on the blocking pool, never on
/// the executor), with counts the tests read.
#[derive(Default)]
struct Compiler {
    running: Mutex<usize>,
    freed: Condvar,
    /// The most that ever ran at once, and how many ran (for tests and diagnostics).
    peak: AtomicUsize,
    compiled: AtomicU64,
}

impl Compiler {
    /// Compile `bytes`, once a slot is free. Blocking.
    fn compile(&self, engine: &Engine, bytes: &[u8]) -> wasmtime::Result<Component> {
        let mut running = lock(&self.running);
        while *running >= COMPILE_CONCURRENCY {
            running = self
                .freed
                .wait(running)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        *running += 1;
        self.peak.fetch_max(*running, Ordering::SeqCst);
        drop(running);
        // Released however the compilation ends (a panic included).
        struct Slot<'a>(&'a Compiler);
        impl Drop for Slot<'_> {
            fn drop(&mut self) {
                *lock(&self.0.running) -= 1;
                self.0.freed.notify_one();
            }
        }
        let _slot = Slot(self);
        self.compiled.fetch_add(1, Ordering::SeqCst);
        Component::from_binary(engine, bytes)
    }
}

/// Remove a plugin's directory (`<fs>/<tenant>/<plugin>`), and its tenant's if that is then
/// empty. Names are validated operation names, so they stay under `fs/`. Blocking.
fn remove_fs_dir(fs: &Path, tenant: &str, plugin: &str) {
    let tenant_dir = fs.join(tenant);
    match std::fs::remove_dir_all(tenant_dir.join(plugin)) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            tracing::warn!(tenant, plugin, error = %e, "cannot remove the directory of a deleted plugin; tried again at the next start");
        }
    }
    // Fails (and is meant to) unless empty.
    let _ = std::fs::remove_dir(&tenant_dir);
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The capability that preopens a directory for a storage backend (at `/data`).
pub const CAP_FILESYSTEM: &str = "filesystem";

/// A storage-backend request (names are relative; the host adds the tenant prefix).
#[derive(Debug)]
pub enum StorageOp {
    Get {
        name: String,
    },
    Put {
        name: String,
        data: Vec<u8>,
        expected_version: Option<u64>,
    },
    Delete {
        name: String,
    },
    /// A page of the names under `prefix`, after `cursor`.
    List {
        prefix: String,
        cursor: Option<String>,
    },
}

impl StorageOp {
    fn name(&self) -> &'static str {
        match self {
            StorageOp::Get { .. } => "get",
            StorageOp::Put { .. } => "put",
            StorageOp::Delete { .. } => "delete",
            StorageOp::List { .. } => "list-blobs",
        }
    }
}

/// A storage-backend answer.
#[derive(Debug)]
pub enum StorageReply {
    Blob(Option<Vec<u8>>),
    Version(u64),
    Deleted(bool),
    /// Names (relative, as keyplane gave them) and the cursor of the next page (opaque: the
    /// plugin's, handed back to it unchanged).
    Page(Vec<String>, Option<String>),
}

/// Names asked for per `list-blobs` call; a page with more is cut to it.
const LIST_PAGE: u32 = 1000;

/// Longest name (after the tenant's prefix) a listing may return: keyplane's own are
/// `keys/<key>/<version>/<uuid>`, under 200 bytes. A longer name, or one with a control
/// character, is no blob keyplane wrote and is left out of the page, so that a plugin cannot
/// make garbage collection write names of any size (or log lines of its making) into the
/// audit log and the logs.
const MAX_LISTED_NAME: usize = 512;

/// A storage error as the host reports it: the plugin's text without the secrets of its
/// configuration, clipped (see [`plugin_text`]).
fn describe_storage_error(
    e: &bindings::v0_1::rotation::keyplane::plugin::types::StorageError,
    config: &PluginConfig,
) -> String {
    use bindings::v0_1::rotation::keyplane::plugin::types::StorageError as E;
    match e {
        E::Conflict(v) => format!("version conflict (current version {v})"),
        E::Invalid(m) => format!("invalid: {}", plugin_text(m, config)),
        E::Unavailable(m) => format!("unavailable: {}", plugin_text(m, config)),
    }
}

/// Text a plugin wrote (an error, a refusal) as the host passes it on to the caller, the
/// logs and the database (a schedule's last error): the secrets of the call's configuration
/// taken out, cut to about 200 characters.
fn plugin_text(text: &str, config: &PluginConfig) -> String {
    config.scrub(text, 200)
}

/// What an upload found out about a component.
#[derive(Debug, Clone)]
pub struct Inspected {
    pub sha256: String,
    pub size: usize,
    pub imports: Vec<String>,
}

/// An upload's compiled plugin, held for its first call: (SHA-256, world) and the plugin.
type Held = ((String, World), Arc<Loaded>);

/// The plugin runtime.
pub struct PluginRuntime {
    engine: Engine,
    rotation_linker: Linker<HostState>,
    storage_linker: Linker<HostState>,
    dir: PathBuf,
    compat: String,
    limits: PluginsConfig,
    loaded: Mutex<HashMap<(String, World), Arc<Loaded>>>,
    /// Uploads compiled whose commit has not been seen yet, oldest first (see the module docs).
    pending: Mutex<VecDeque<Held>>,
    compiler: Arc<Compiler>,
    db: Db,
    /// Where invocations run, and each tenant's share of them.
    fairness: fairness::Fairness,
}

fn engine(limits: &PluginsConfig) -> anyhow::Result<Engine> {
    let mut pool = PoolingAllocationConfig::default();
    let n = limits.max_instances.max(1);
    pool.total_component_instances(n)
        .total_core_instances(n * 16)
        .total_memories(n * 4)
        .total_tables(n * 16)
        .total_stacks(n)
        .max_core_instances_per_component(32)
        .max_memories_per_component(4)
        .max_tables_per_component(16)
        .max_memory_size(limits.memory_bytes)
        .table_elements(limits.table_elements);
    let mut config = Config::new();
    config
        .consume_fuel(true)
        .epoch_interruption(true)
        .max_wasm_stack(512 << 10)
        .async_stack_size(2 << 20)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    Ok(Engine::new(&config)?)
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(digest::digest(&digest::SHA256, bytes))
}

/// The first bytes of a cached artifact (then the SHA-256 of the serialized artifact, then it).
const ARTIFACT_MAGIC: &[u8; 8] = b"kpcwasm1";
const ARTIFACT_HEADER: usize = ARTIFACT_MAGIC.len() + 32;

/// Whether `name` is a lowercase hex SHA-256.
fn is_digest(name: &str) -> bool {
    name.len() == 64 && name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Write a serialized artifact to `path` with its header, atomically: a temporary file of this
/// writer's own in the same directory, then a rename over `path` (two nodes or two requests
/// compiling the same component at once each rename a whole file).
fn write_artifact(path: &Path, serialized: &[u8]) -> std::io::Result<()> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("artifact");
    let tmp = path.with_file_name(format!(
        ".{name}.{}.{}.tmp",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    ));
    let mut out = Vec::with_capacity(ARTIFACT_HEADER + serialized.len());
    out.extend_from_slice(ARTIFACT_MAGIC);
    out.extend_from_slice(digest::digest(&digest::SHA256, serialized).as_ref());
    out.extend_from_slice(serialized);
    let written = std::fs::write(&tmp, &out).and_then(|()| std::fs::rename(&tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// Write the precompiled artifact of `component` to the cache at `path`. A failure costs only a
/// compilation at the next start, so it is logged, not returned.
fn cache_artifact(component: &Component, path: &Path) {
    let written = component
        .serialize()
        .map_err(|e| format!("{e:#}"))
        .and_then(|a| write_artifact(path, &a).map_err(|e| e.to_string()));
    if let Err(e) = written {
        tracing::warn!(path = %path.display(), error = %e, "cannot cache a precompiled plugin; it is compiled again at the next start");
    }
}

/// The component cached at `path`, if there is a usable one. A file that is not whole (wrong
/// magic, digest mismatch) or that wasmtime refuses (another engine configuration or version)
/// is removed, so the caller compiles it again; neither is an error.
fn read_artifact(engine: &Engine, path: &Path) -> Option<Component> {
    let file = match std::fs::read(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot read a cached plugin artifact; compiling again");
            return None;
        }
    };
    let whole = file.len() >= ARTIFACT_HEADER
        && &file[..ARTIFACT_MAGIC.len()] == ARTIFACT_MAGIC
        && digest::digest(&digest::SHA256, &file[ARTIFACT_HEADER..]).as_ref()
            == &file[ARTIFACT_MAGIC.len()..ARTIFACT_HEADER];
    let refuse = |why: &str| {
        tracing::warn!(path = %path.display(), reason = why, "discarding a cached plugin artifact; compiling again");
        let _ = std::fs::remove_file(path);
        None
    };
    if !whole {
        return refuse("damaged or not written by keyplane (digest mismatch)");
    }
    // SAFETY: wasmtime runs a deserialized artifact as machine code, so it must be what
    // `Component::serialize` produced. The bytes hash to the digest written before them by
    // `write_artifact` (so no torn write or damaged file gets here), in a directory only
    // keyplane writes to; wasmtime itself refuses an artifact of another engine configuration
    // or version.
    match unsafe { Component::deserialize(engine, &file[ARTIFACT_HEADER..]) } {
        Ok(c) => Some(c),
        Err(e) => refuse(&format!("{e:#}")),
    }
}

/// How long a call refused for want of a free instance slot is told to wait: slots free up
/// as calls end, each within its deadline (1 s by default).
const POOL_RETRY_AFTER_SECS: u64 = 1;

/// Turn a failed invocation into the public error, logging the detail.
fn classify(plugin: &str, err: wasmtime::Error, out_of_memory: bool) -> Error {
    // Every instance slot of the node is taken (by any tenant's calls): not this plugin's
    // failure, nor this tenant's; a retry shortly succeeds.
    if err.chain().any(|e| e.is::<PoolConcurrencyLimitError>()) {
        tracing::info!(plugin, error = %err, "no free plugin instance slot; the call is throttled");
        return Error::Throttled {
            retry_after_secs: POOL_RETRY_AFTER_SECS,
            what: "the node's plugin instances (all in use)",
        };
    }
    let plugin = plugin.to_string();
    if let Some(trap) = err.downcast_ref::<Trap>() {
        match trap {
            Trap::OutOfFuel | Trap::Interrupt => return Error::PluginTimeout { plugin },
            Trap::StackOverflow => {
                return Error::PluginFailed {
                    plugin,
                    reason: "stack overflow".into(),
                }
            }
            _ => {}
        }
    }
    if out_of_memory {
        return Error::PluginFailed {
            plugin,
            reason: "memory limit exceeded".into(),
        };
    }
    let detail = format!("{err:#}");
    tracing::warn!(plugin = %plugin, error = %detail.chars().take(500).collect::<String>(), "plugin call failed");
    let reason = match err.downcast_ref::<Trap>() {
        Some(Trap::UnreachableCodeReached) => "trapped (panic or abort)".to_string(),
        Some(t) => format!("trapped: {t}"),
        None => "failed".to_string(),
    };
    Error::PluginFailed { plugin, reason }
}

impl PluginRuntime {
    /// Build the engine and linkers; `dir` holds the cache of precompiled artifacts (and the
    /// directories of storage backends granted `filesystem`).
    pub fn new(limits: PluginsConfig, dir: PathBuf, db: Db) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir.join("cache"))?;
        let engine = engine(&limits)?;
        let ticker = engine.clone();
        std::thread::Builder::new()
            .name("keyplane-wasm-epoch".into())
            .spawn(move || loop {
                std::thread::sleep(Duration::from_millis(10));
                ticker.increment_epoch();
            })?;
        let mut rotation_linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut rotation_linker)?;
        bindings::v0_1::rotation::RotationSchedule::add_to_linker::<_, HasSelf<HostState>>(
            &mut rotation_linker,
            |s| s,
        )?;
        let mut storage_linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut storage_linker)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut storage_linker)?;
        bindings::v0_1::storage::StorageBackend::add_to_linker::<_, HasSelf<HostState>>(
            &mut storage_linker,
            |s| s,
        )?;
        let compat = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            engine.precompile_compatibility_hash().hash(&mut h);
            format!("{:016x}", h.finish())
        };
        Ok(PluginRuntime {
            engine,
            rotation_linker,
            storage_linker,
            dir,
            compat,
            loaded: Mutex::new(HashMap::new()),
            pending: Mutex::new(VecDeque::new()),
            compiler: Arc::default(),
            db,
            fairness: fairness::Fairness::new(&limits)?,
            limits,
        })
    }

    /// Limits in force.
    pub fn limits(&self) -> &PluginsConfig {
        &self.limits
    }

    fn artifact_path(&self, sha: &str) -> PathBuf {
        self.dir
            .join("cache")
            .join(format!("{sha}-{}.cwasm", self.compat))
    }

    fn pre(&self, component: &Component, world: World) -> Result<Loaded> {
        let refuse = |e: wasmtime::Error| Error::InvalidPlugin(format!("{e:#}"));
        Ok(match world {
            World::RotationSchedule => {
                let ip = self
                    .rotation_linker
                    .instantiate_pre(component)
                    .map_err(refuse)?;
                Loaded::Rotation(RotationSchedulePre::new(ip).map_err(refuse)?)
            }
            World::StorageBackend => {
                let ip = self
                    .storage_linker
                    .instantiate_pre(component)
                    .map_err(refuse)?;
                Loaded::Storage(StorageBackendPre::new(ip).map_err(refuse)?)
            }
        })
    }

    /// Validate an upload: a component, type-checked against `world` with only the granted
    /// imports. Storing the bytes is the caller's, in its transaction
    /// (`plugins::insert_component`); what this compiled is held for the plugin's first call
    /// (see the module docs), and the caller drops it with [`PluginRuntime::discard_upload`]
    /// if it refuses the upload after all. Bytes this node has compiled already are not
    /// compiled again. Blocking (compiles, within [`COMPILE_CONCURRENCY`]); run it off the
    /// executor.
    pub fn install(&self, bytes: &[u8], world: World) -> Result<Inspected> {
        if bytes.len() > self.limits.max_upload_bytes {
            return Err(Error::InvalidPlugin(format!(
                "component is larger than {} bytes",
                self.limits.max_upload_bytes
            )));
        }
        if bytes.len() < 8 || &bytes[..4] != b"\0asm" || bytes[4..8] != [0x0d, 0x00, 0x01, 0x00] {
            return Err(Error::InvalidPlugin(
                "not a WebAssembly component (core modules are not accepted)".into(),
            ));
        }
        let sha256 = sha256_hex(bytes);
        let inspected = |component: &Component| Inspected {
            sha256: sha256.clone(),
            size: bytes.len(),
            imports: component
                .component_type()
                .imports(&self.engine)
                .map(|(name, _)| name.to_string())
                .collect(),
        };
        // The same bytes for the same world, loaded or uploaded already: checked then.
        if let Some(known) = self.known(&sha256, Some(world))? {
            return Ok(inspected(known.component()));
        }
        // The same bytes compiled (for the other world, or cached on disk): only type-checked.
        let component = match self.known(&sha256, None)? {
            Some(known) => known.component().clone(),
            None => match read_artifact(&self.engine, &self.artifact_path(&sha256)) {
                Some(cached) => cached,
                None => self
                    .compiler
                    .compile(&self.engine, bytes)
                    .map_err(|e| Error::InvalidPlugin(format!("does not compile: {e:#}")))?,
            },
        };
        let loaded = Arc::new(self.pre(&component, world)?);
        let mut pending = self.pending.lock().map_err(|_| Error::Internal)?;
        pending.push_back(((sha256.clone(), world), loaded));
        while pending.len() > PENDING_UPLOADS {
            pending.pop_front();
        }
        drop(pending);
        Ok(inspected(&component))
    }

    /// What this node holds compiled of `sha256`: loaded or uploaded, for `world` (any, if
    /// `None`).
    fn known(&self, sha256: &str, world: Option<World>) -> Result<Option<Arc<Loaded>>> {
        let matches = |(s, w): &(String, World)| s == sha256 && world.is_none_or(|x| x == *w);
        let loaded = self.loaded.lock().map_err(|_| Error::Internal)?;
        if let Some((_, l)) = loaded.iter().find(|(k, _)| matches(k)) {
            return Ok(Some(l.clone()));
        }
        drop(loaded);
        let pending = self.pending.lock().map_err(|_| Error::Internal)?;
        Ok(pending
            .iter()
            .rev()
            .find(|(k, _)| matches(k))
            .map(|(_, l)| l.clone()))
    }

    /// Drop what [`PluginRuntime::install`] held for an upload that was then refused. Only
    /// the upload's own entry goes: one loaded for a plugin that names the same component
    /// stays (as does its artifact, which an upload never writes).
    pub fn discard_upload(&self, sha256: &str, world: World) {
        let mut pending = lock(&self.pending);
        if let Some(i) = pending
            .iter()
            .rposition(|((s, w), _)| s == sha256 && *w == world)
        {
            pending.remove(i);
        }
    }

    /// Forget the component `sha256` on this node (no plugin names it any more): its loaded
    /// and held entries, and its cached artifact.
    fn forget(&self, sha256: &str) {
        lock(&self.loaded).retain(|(s, _), _| s != sha256);
        lock(&self.pending).retain(|((s, _), _)| s != sha256);
        match std::fs::remove_file(self.artifact_path(sha256)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(sha256, error = %e, "cannot remove the cached artifact of a deleted plugin; it goes at the next start");
            }
        }
    }

    /// After `deleted`'s deletion committed: remove its directory, and this node's loaded
    /// entries and cached artifact of its component unless another plugin names it (other
    /// nodes drop theirs at their next start). A failure is logged: the next start cleans up.
    pub async fn after_deletion(&self, deleted: &PluginRow) {
        // Off the executor: a filesystem backend's directory may hold many blobs.
        let (fs, tenant, name) = (
            self.dir.join("fs"),
            deleted.tenant_id.clone(),
            deleted.name.clone(),
        );
        let _ = tokio::task::spawn_blocking(move || remove_fs_dir(&fs, &tenant, &name)).await;
        match plugin_rows::component_referenced(&self.db, &deleted.sha256).await {
            Ok(false) => self.forget(&deleted.sha256),
            Ok(true) => {}
            Err(e) => {
                tracing::warn!(tenant = %deleted.tenant_id, plugin = %deleted.name, error = %e, "cannot clean up after a deleted plugin; done at the next start");
            }
        }
    }

    /// The number of compilations so far and the most that ran at once (tests).
    pub fn compilations(&self) -> (u64, usize) {
        (
            self.compiler.compiled.load(Ordering::SeqCst),
            self.compiler.peak.load(Ordering::SeqCst),
        )
    }

    /// The loaded plugin: from memory, else from this node's cache of precompiled artifacts,
    /// else compiled from the component in the database (checked against its SHA-256) and
    /// cached. Deserializing and compiling run off the executor.
    async fn load(&self, sha256: &str, world: World) -> Result<Arc<Loaded>> {
        if let Some(l) = self
            .loaded
            .lock()
            .map_err(|_| Error::Internal)?
            .get(&(sha256.to_string(), world))
        {
            return Ok(l.clone());
        }
        // An upload's first call: its row was read, so the upload committed. Kept loaded, and
        // its artifact cached, with no second compilation.
        // Moved to `loaded` in one step (both locks held: `pending`, then `loaded`, the only
        // place that holds two), so a concurrent call finds it in one or the other and never
        // compiles it again, and a `forget` sees it in one or the other.
        let taken = {
            let mut pending = lock(&self.pending);
            let found = pending
                .iter()
                .rposition(|((s, w), _)| s == sha256 && *w == world);
            found.and_then(|i| pending.remove(i)).map(|(key, loaded)| {
                lock(&self.loaded).insert(key, loaded.clone());
                loaded
            })
        };
        if let Some(loaded) = taken {
            let (component, art) = (loaded.component().clone(), self.artifact_path(sha256));
            tokio::task::spawn_blocking(move || cache_artifact(&component, &art))
                .await
                .map_err(|_| Error::Internal)?;
            return Ok(loaded);
        }
        let short = &sha256[..12.min(sha256.len())];
        let (engine, art) = (self.engine.clone(), self.artifact_path(sha256));
        let cached = tokio::task::spawn_blocking(move || read_artifact(&engine, &art))
            .await
            .map_err(|_| Error::Internal)?;
        let component = match cached {
            Some(c) => c,
            None => {
                let corrupt = |reason: String| Error::PluginComponentCorrupt {
                    plugin: short.to_string(),
                    reason,
                };
                let bytes = plugin_rows::component(&self.db, sha256)
                    .await?
                    .ok_or_else(|| corrupt("its component is not in the database".into()))?;
                let found = sha256_hex(&bytes);
                if found != sha256 {
                    tracing::error!(sha256, found = %found, "a plugin component in the database does not match its SHA-256; refusing it");
                    return Err(corrupt(format!(
                        "SHA-256 mismatch: the stored component hashes to {found}"
                    )));
                }
                let (engine, art) = (self.engine.clone(), self.artifact_path(sha256));
                let compiler = self.compiler.clone();
                tokio::task::spawn_blocking(move || {
                    let c = compiler.compile(&engine, &bytes)?;
                    cache_artifact(&c, &art);
                    Ok::<_, wasmtime::Error>(c)
                })
                .await
                .map_err(|_| Error::Internal)?
                .map_err(|e| {
                    tracing::error!(sha256, error = %format!("{e:#}"), "a stored plugin component does not compile");
                    Error::PluginFailed {
                        plugin: short.to_string(),
                        reason: "its component does not compile with this keyplane".into(),
                    }
                })?
            }
        };
        let loaded = Arc::new(self.pre(&component, world)?);
        self.loaded
            .lock()
            .map_err(|_| Error::Internal)?
            .insert((sha256.to_string(), world), loaded.clone());
        Ok(loaded)
    }

    /// Bring the data directory in line with the database, at start: import the components an
    /// older release kept as `<dir>/<sha256>.wasm` (those a plugin row names and the database
    /// lacks; checked against their name's digest), then remove those files once the database
    /// holds them or nothing names them; and drop cached artifacts of another engine
    /// configuration, of components the database no longer holds, and temporary files a
    /// crashed writer left; and remove the directories (`fs/<tenant>/<plugin>`) of plugins
    /// that no longer exist (deleted while this node was down, or whose clean-up after
    /// `delete-plugin` failed). Returns how many components were imported.
    pub async fn adopt_local_files(&self) -> Result<usize> {
        let io = |e: std::io::Error| {
            tracing::error!(error = %e, "cannot read the plugin directory");
            Error::Internal
        };
        let mut imported = 0;
        for entry in std::fs::read_dir(&self.dir).map_err(io)? {
            let path = entry.map_err(io)?.path();
            let Some(sha) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".wasm"))
                .filter(|n| is_digest(n))
                .map(str::to_string)
            else {
                continue;
            };
            let reader = &self.db;
            let referenced = plugin_rows::component_referenced(reader, &sha).await?;
            if referenced && !plugin_rows::has_component(reader, &sha).await? {
                let bytes = std::fs::read(&path).map_err(io)?;
                if sha256_hex(&bytes) != sha {
                    tracing::warn!(path = %path.display(), "a stored plugin component does not match its name's SHA-256; left in place, not imported");
                    continue;
                }
                let mut tx = self.db.begin().await?;
                plugin_rows::insert_component(&mut tx, &sha, &bytes, &now_rfc3339()).await?;
                tx.commit().await?;
                imported += 1;
                tracing::info!(sha256 = %sha, "imported a plugin component from the data directory into the database");
            }
            if let Err(e) = std::fs::remove_file(&path) {
                tracing::warn!(path = %path.display(), error = %e, "cannot remove an imported plugin component");
            }
        }
        let held: HashSet<String> = plugin_rows::component_digests(&self.db)
            .await?
            .into_iter()
            .collect();
        let suffix = format!("-{}.cwasm", self.compat);
        for entry in std::fs::read_dir(self.dir.join("cache")).map_err(io)? {
            let path = entry.map_err(io)?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            let current = name
                .strip_suffix(&suffix)
                .is_some_and(|sha| held.contains(sha));
            if !current {
                let _ = std::fs::remove_file(&path);
            }
        }
        let fs = self.dir.join("fs");
        let tenants = match std::fs::read_dir(&fs) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(imported),
            Err(e) => return Err(io(e)),
        };
        for tenant in tenants {
            let tenant = tenant.map_err(io)?;
            let Some(tenant_id) = tenant.file_name().to_str().map(str::to_string) else {
                continue;
            };
            if !tenant.path().is_dir() {
                continue;
            }
            for plugin in std::fs::read_dir(tenant.path()).map_err(io)? {
                let plugin = plugin.map_err(io)?;
                let Some(name) = plugin.file_name().to_str().map(str::to_string) else {
                    continue;
                };
                if plugin_rows::get(&self.db, &tenant_id, &name)
                    .await?
                    .is_none()
                {
                    tracing::info!(tenant = %tenant_id, plugin = %name, "removing the directory of a deleted plugin");
                    remove_fs_dir(&self.dir.join("fs"), &tenant_id, &name);
                }
            }
        }
        Ok(imported)
    }

    /// The directory preopened for a plugin granted `filesystem`: one per tenant and plugin.
    fn fs_dir(&self, tenant: &str, plugin: &str) -> Result<PathBuf> {
        let dir = self.dir.join("fs").join(tenant).join(plugin);
        std::fs::create_dir_all(&dir).map_err(|e| {
            tracing::error!(error = %e, "cannot create plugin directory");
            Error::Internal
        })?;
        Ok(dir)
    }

    fn store(&self, plugin: &str, grants: Grants<'_>) -> Result<Store<HostState>> {
        let mut store = Store::new(
            &self.engine,
            HostState::new(
                plugin.to_string(),
                self.limits.memory_bytes,
                self.limits.table_elements,
                grants,
            )?,
        );
        store.limiter(|s| s);
        let setup = |store: &mut Store<HostState>| -> wasmtime::Result<()> {
            store.set_fuel(self.limits.fuel)?;
            store.fuel_async_yield_interval(Some(100_000))?;
            store.set_epoch_deadline(self.limits.deadline_ms.div_ceil(10).max(1));
            store.epoch_deadline_trap();
            Ok(())
        };
        setup(&mut store).map_err(|_| Error::Internal)?;
        Ok(store)
    }

    /// The wall-clock budget of one invocation.
    fn deadline(&self) -> Duration {
        Duration::from_millis(self.limits.deadline_ms)
    }

    /// Run an invocation under the wall-clock deadline. The epoch deadline stops a plugin
    /// that computes; this also stops one that waits on the host (an HTTP request, a kv read).
    async fn bounded<T>(
        &self,
        call: impl std::future::Future<Output = wasmtime::Result<T>>,
    ) -> wasmtime::Result<T> {
        let grace = Duration::from_millis(50);
        match tokio::time::timeout(self.deadline() + grace, call).await {
            Ok(r) => r,
            Err(_) => Err(Trap::Interrupt.into()),
        }
    }

    /// Ask a rotation-schedule plugin of `tenant` for its decision: on the plugin workers,
    /// within the tenant's share of them (see [`fairness`]).
    pub async fn next_rotation(
        self: &Arc<Self>,
        tenant: &str,
        sha256: &str,
        config: &[(String, String)],
        info: &KeyInfo,
        now: i64,
    ) -> Result<Option<i64>> {
        let this = self.clone();
        // The task's own copy of the configuration, wiped when the call is done.
        let (sha256, config, info) = (sha256.to_string(), PluginConfig::from(config), info.clone());
        self.fairness
            .run(tenant, async move {
                this.invoke_next_rotation(&sha256, &config, &info, now)
                    .await
            })
            .await
    }

    /// One rotation-schedule call, here: its result and the fuel it used.
    async fn invoke_next_rotation(
        &self,
        sha256: &str,
        config: &PluginConfig,
        info: &KeyInfo,
        now: i64,
    ) -> (Result<Option<i64>>, u64) {
        let mut used = 0;
        let short = &sha256[..12.min(sha256.len())];
        let span = tracing::info_span!(
            "plugin",
            otel.name = "plugin next-rotation",
            keyplane.plugin.sha256 = sha256,
            keyplane.plugin.world = "rotation-schedule",
            keyplane.plugin.fuel_used = tracing::field::Empty,
            keyplane.plugin.outcome = tracing::field::Empty,
        );
        let start = Instant::now();
        let result = async {
            let Loaded::Rotation(pre) = &*self.load(sha256, World::RotationSchedule).await? else {
                return Err(Error::validation("plugin is not a rotation schedule"));
            };
            let mut store = self.store(short, Grants::default())?;
            let call = self
                .bounded(async {
                    let bindings = pre.instantiate_async(&mut store).await?;
                    bindings
                        .keyplane_plugin_schedule()
                        .call_next_rotation(&mut store, &config.0, info, now)
                        .await
                })
                .await;
            let fuel_used = self
                .limits
                .fuel
                .saturating_sub(store.get_fuel().unwrap_or(0));
            tracing::Span::current().record("keyplane.plugin.fuel_used", fuel_used);
            used = fuel_used;
            match call {
                Ok(Ok(decision)) => Ok(decision),
                Ok(Err(msg)) => {
                    if msg.len() > self.limits.max_output_bytes {
                        return Err(Error::PluginFailed {
                            plugin: short.into(),
                            reason: format!(
                                "returned {} bytes, over the {}-byte output limit",
                                msg.len(),
                                self.limits.max_output_bytes
                            ),
                        });
                    }
                    Err(Error::PluginFailed {
                        plugin: short.into(),
                        reason: format!("declined: {}", plugin_text(&msg, config)),
                    })
                }
                Err(e) => Err(classify(short, e, store.data().out_of_memory)),
            }
        }
        .instrument(span.clone())
        .await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(e) => e.code(),
        };
        span.record("keyplane.plugin.outcome", outcome);
        crate::telemetry::metrics::metrics().plugin(
            short,
            "rotation-schedule",
            outcome,
            start.elapsed().as_secs_f64(),
        );
        (result, used)
    }

    /// One storage-backend call for the plugin's tenant. The host prefixes every blob name
    /// with the tenant (`tenants/<tenant>/...`) and scopes the plugin's `kv` capability to the
    /// tenant, so no name a plugin is given or crafts reaches another tenant's data. It runs on
    /// the plugin workers, within the tenant's share of them (see [`fairness`]).
    pub async fn storage(
        self: &Arc<Self>,
        plugin: &PluginRow,
        config: &[(String, String)],
        op: StorageOp,
    ) -> Result<StorageReply> {
        let this = self.clone();
        // The task's own copy of the configuration, wiped when the call is done.
        let (row, config) = (plugin.clone(), PluginConfig::from(config));
        self.fairness
            .run(&plugin.tenant_id, async move {
                this.invoke_storage(&row, &config, op).await
            })
            .await
    }

    /// One storage-backend call, here: its result and the fuel it used.
    async fn invoke_storage(
        &self,
        plugin: &PluginRow,
        config: &PluginConfig,
        op: StorageOp,
    ) -> (Result<StorageReply>, u64) {
        let mut used = 0;
        let (tenant, sha256) = (plugin.tenant_id.as_str(), plugin.sha256.as_str());
        let short = &sha256[..12.min(sha256.len())];
        // The operator's switch is read at every call, as `http_hosts` is: turned off, it
        // takes the directory from plugins granted it before (their blobs stay on disk).
        let fs_dir = if plugin.granted(CAP_FILESYSTEM) {
            if !self.limits.allow_filesystem {
                let reason = "its filesystem grant is withdrawn: plugins.allow_filesystem is false";
                return (
                    Err(Error::PluginFailed {
                        plugin: plugin.name.clone(),
                        reason: reason.into(),
                    }),
                    0,
                );
            }
            match self.fs_dir(tenant, &plugin.name) {
                Ok(dir) => Some(dir),
                Err(e) => return (Err(e), 0),
            }
        } else {
            None
        };
        let op_name = op.name();
        let span = tracing::info_span!(
            "plugin",
            otel.name = format!("plugin {op_name}"),
            keyplane.plugin.sha256 = sha256,
            keyplane.plugin.world = "storage-backend",
            keyplane.plugin.fuel_used = tracing::field::Empty,
            keyplane.plugin.outcome = tracing::field::Empty,
        );
        let start = Instant::now();
        let max_out = self.limits.max_output_bytes;
        let failed = |reason: String| Error::PluginFailed {
            plugin: short.into(),
            reason,
        };
        let result = async {
            let Loaded::Storage(pre) = &*self.load(sha256, World::StorageBackend).await? else {
                return Err(Error::validation("plugin is not a storage backend"));
            };
            let http = HttpGrant::new(
                &http_grant::granted_destinations(&plugin.capabilities()),
                &self.limits.http_hosts,
                // A backstop: the invocation's own deadline ends the call first (as a
                // timeout); this only bounds what the connection task may hold afterwards.
                self.deadline() + Duration::from_secs(1),
            );
            let grants = Grants {
                kv: Some(self.kv(tenant)),
                fs_dir: fs_dir.as_deref(),
                http: Some(http),
            };
            let mut store = self.store(short, grants)?;
            let call = self
                .bounded(async {
                    let b = pre.instantiate_async(&mut store).await?;
                    let s = b.keyplane_plugin_storage();
                    Ok::<_, wasmtime::Error>(match op {
                        StorageOp::Get { name } => {
                            let full = format!("tenants/{tenant}/{name}");
                            s.call_get(&mut store, &config.0, &full)
                                .await?
                                .map(|b| StorageReply::Blob(b.map(|b| b.data)))
                        }
                        StorageOp::Put {
                            name,
                            data,
                            expected_version,
                        } => {
                            let full = format!("tenants/{tenant}/{name}");
                            s.call_put(&mut store, &config.0, &full, &data, expected_version)
                                .await?
                                .map(StorageReply::Version)
                        }
                        StorageOp::Delete { name } => {
                            let full = format!("tenants/{tenant}/{name}");
                            s.call_delete(&mut store, &config.0, &full, None)
                                .await?
                                .map(StorageReply::Deleted)
                        }
                        StorageOp::List { prefix, cursor } => {
                            // Names come back without the tenant's prefix; a name outside it
                            // (a plugin listing what it was not asked for) is dropped. The
                            // cursor is the plugin's own (a name, or a token as object stores
                            // page) and goes back to it as it came: it names nothing the
                            // plugin is not given anyway.
                            let ns = format!("tenants/{tenant}/");
                            let full = format!("{ns}{prefix}");
                            s.call_list_blobs(
                                &mut store,
                                &config.0,
                                &full,
                                cursor.as_deref(),
                                LIST_PAGE,
                            )
                            .await?
                            .map(|page| {
                                let strip = |n: String| n.strip_prefix(&ns).map(str::to_string);
                                let names = page
                                    .names
                                    .into_iter()
                                    .take(LIST_PAGE as usize)
                                    .filter(|n| n.starts_with(&full))
                                    .filter_map(strip)
                                    .filter(|n| {
                                        n.len() <= MAX_LISTED_NAME
                                            && !n.chars().any(char::is_control)
                                    })
                                    .collect();
                                StorageReply::Page(names, page.next_cursor)
                            })
                        }
                    })
                })
                .await;
            let fuel_used = self
                .limits
                .fuel
                .saturating_sub(store.get_fuel().unwrap_or(0));
            tracing::Span::current().record("keyplane.plugin.fuel_used", fuel_used);
            used = fuel_used;
            match call {
                Ok(Ok(StorageReply::Blob(Some(data)))) if data.len() > max_out => {
                    Err(failed(format!(
                        "returned {} bytes, over the {max_out}-byte output limit",
                        data.len()
                    )))
                }
                Ok(Ok(reply)) => Ok(reply),
                Ok(Err(e)) => Err(failed(format!(
                    "storage error: {}",
                    describe_storage_error(&e, config)
                ))),
                Err(e) => Err(classify(short, e, store.data().out_of_memory)),
            }
        }
        .instrument(span.clone())
        .await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(e) => e.code(),
        };
        span.record("keyplane.plugin.outcome", outcome);
        crate::telemetry::metrics::metrics().plugin(
            short,
            "storage-backend",
            outcome,
            start.elapsed().as_secs_f64(),
        );
        (result, used)
    }

    /// The kv store of a tenant (for storage backends).
    pub fn kv(&self, tenant: &str) -> KvStore {
        KvStore::new(self.db.clone(), tenant.to_string())
    }
}

use tracing::Instrument;

#[cfg(test)]
mod tests {
    use super::*;

    /// A guest built from `plugins/` by `scripts/build-plugins`.
    fn guest(name: &str) -> Vec<u8> {
        let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../plugins/target/wasm32-wasip2/release")
            .join(format!("{name}.wasm"));
        std::fs::read(&p).unwrap_or_else(|e| {
            panic!(
                "{}: {e}; build the plugins first: scripts/build-plugins",
                p.display()
            )
        })
    }

    /// `component` with a custom section of its own appended: the same code under another
    /// SHA-256.
    fn variant(component: &[u8], n: u8) -> Vec<u8> {
        let name = b"keyplane-test";
        let mut out = component.to_vec();
        out.extend_from_slice(&[0, (1 + name.len() + 1) as u8, name.len() as u8]);
        out.extend_from_slice(name);
        out.push(n);
        out
    }

    #[test]
    fn an_exhausted_instance_pool_is_throttling_not_a_plugin_failure() {
        let mut pool = PoolingAllocationConfig::default();
        pool.total_core_instances(1);
        let mut config = Config::new();
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config).unwrap();
        let module = wasmtime::Module::new(&engine, b"\0asm\x01\0\0\0").unwrap();
        let mut first = Store::new(&engine, ());
        wasmtime::Instance::new(&mut first, &module, &[]).unwrap();
        let mut second = Store::new(&engine, ());
        let exhausted = wasmtime::Instance::new(&mut second, &module, &[]).unwrap_err();
        match classify("p", exhausted, false) {
            Error::Throttled {
                retry_after_secs, ..
            } => assert_eq!(retry_after_secs, POOL_RETRY_AFTER_SECS),
            e => panic!("{e:?}"),
        }
        // Wrapped in context on the way up, still.
        let mut third = Store::new(&engine, ());
        let wrapped = wasmtime::Instance::new(&mut third, &module, &[])
            .unwrap_err()
            .context("instantiating");
        assert!(matches!(
            classify("p", wrapped, false),
            Error::Throttled { .. }
        ));
        // A plugin's own failure is still its failure.
        assert!(matches!(
            classify("p", Trap::UnreachableCodeReached.into(), false),
            Error::PluginFailed { .. }
        ));
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn compilations_are_bounded_and_the_same_bytes_are_not_compiled_again() {
        let (_guard, db) = crate::store::testing::sqlite().await;
        let dir = tempfile::tempdir().unwrap();
        let runtime = Arc::new(
            PluginRuntime::new(PluginsConfig::default(), dir.path().join("plugins"), db).unwrap(),
        );
        let base = guest("rotation_fixed_interval");
        let uploads: Vec<Vec<u8>> = (0..6).map(|n| variant(&base, n)).collect();
        let mut tasks = Vec::new();
        for bytes in uploads.clone() {
            let runtime = runtime.clone();
            tasks.push(tokio::task::spawn_blocking(move || {
                runtime.install(&bytes, World::RotationSchedule)
            }));
        }
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        let (compiled, peak) = runtime.compilations();
        assert_eq!(compiled, 6);
        assert!(
            (1..=COMPILE_CONCURRENCY).contains(&peak),
            "{peak} compilations ran at once"
        );
        // The same bytes again (the same world, then the other): type-checked, not compiled.
        let again = runtime
            .install(&uploads[0], World::RotationSchedule)
            .unwrap();
        assert_eq!(again.sha256, sha256_hex(&uploads[0]));
        assert!(matches!(
            runtime.install(&uploads[1], World::StorageBackend),
            Err(Error::InvalidPlugin(_))
        ));
        assert_eq!(runtime.compilations().0, 6);
        // Nothing is cached on disk before a first call: an upload may still be refused.
        let cache = dir.path().join("plugins/cache");
        assert_eq!(std::fs::read_dir(&cache).unwrap().count(), 0);
        // A first call takes the compiled upload (no compilation) and caches its artifact.
        let info = KeyInfo {
            key_id: "k".into(),
            key_spec: "SYMMETRIC_DEFAULT".into(),
            created_at: 0,
            current_version: 1,
            version_count: 1,
            last_rotation: None,
            encryptions_since_rotation: 0,
            decryptions_since_rotation: 0,
        };
        let config = [("period".to_string(), "1d".to_string())];
        let next = runtime
            .next_rotation("t", &again.sha256, &config, &info, 0)
            .await
            .unwrap();
        assert_eq!(next, Some(86_400));
        assert_eq!(runtime.compilations().0, 6);
        assert_eq!(std::fs::read_dir(&cache).unwrap().count(), 1);
        // A refused upload's compiled entry goes; forgetting a component drops its artifact.
        runtime.discard_upload(&sha256_hex(&uploads[1]), World::RotationSchedule);
        assert!(runtime
            .known(&sha256_hex(&uploads[1]), None)
            .unwrap()
            .is_none());
        runtime.forget(&again.sha256);
        assert!(runtime.known(&again.sha256, None).unwrap().is_none());
        assert_eq!(std::fs::read_dir(&cache).unwrap().count(), 0);
    }
}
