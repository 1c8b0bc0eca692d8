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
//! Worlds and their grants: `rotation-schedule` plugins get `log` (and WASI with nothing
//! granted); `storage-backend` plugins also get the tenant-scoped `kv` table, and, per plugin,
//! a preopened directory (`filesystem`) and outbound HTTP to granted destinations
//! (`http:<host>:<port>`, see [`http_grant`]). A component that imports anything else is
//! refused at upload.

pub mod bindings;
mod fairness;
mod host;
pub mod http_grant;
mod kv_store;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ring::digest;
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, Trap};

use crate::config::PluginsConfig;
use crate::error::{Error, Result};
use crate::store::plugins::{self as plugin_rows, PluginRow};
use crate::store::{now_rfc3339, Db};
use bindings::v0_1::rotation::{keyplane::plugin::types::KeyInfo, RotationSchedulePre};
use bindings::v0_1::storage::StorageBackendPre;
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
    /// Names (relative, as keyplane gave them) and the cursor of the next page.
    Page(Vec<String>, Option<String>),
}

/// Names asked for per `list-blobs` call.
const LIST_PAGE: u32 = 1000;

fn describe_storage_error(
    e: &bindings::v0_1::rotation::keyplane::plugin::types::StorageError,
) -> String {
    use bindings::v0_1::rotation::keyplane::plugin::types::StorageError as E;
    let clip = |s: &str| s.chars().take(200).collect::<String>();
    match e {
        E::Conflict(v) => format!("version conflict (current version {v})"),
        E::Invalid(m) => format!("invalid: {}", clip(m)),
        E::Unavailable(m) => format!("unavailable: {}", clip(m)),
    }
}

/// What an upload found out about a component.
#[derive(Debug, Clone)]
pub struct Inspected {
    pub sha256: String,
    pub size: usize,
    pub imports: Vec<String>,
}

/// The plugin runtime.
pub struct PluginRuntime {
    engine: Engine,
    rotation_linker: Linker<HostState>,
    storage_linker: Linker<HostState>,
    dir: PathBuf,
    compat: String,
    limits: PluginsConfig,
    loaded: Mutex<HashMap<(String, World), Arc<Loaded>>>,
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

/// Turn a failed invocation into the public error, logging the detail.
fn classify(plugin: &str, err: wasmtime::Error, out_of_memory: bool) -> Error {
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
    /// imports, then precompiled into this node's cache. Storing the bytes is the caller's,
    /// in its transaction (`plugins::insert_component`). Blocking (compiles); run it off the
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
        let component = Component::from_binary(&self.engine, bytes)
            .map_err(|e| Error::InvalidPlugin(format!("does not compile: {e:#}")))?;
        let imports: Vec<String> = component
            .component_type()
            .imports(&self.engine)
            .map(|(name, _)| name.to_string())
            .collect();
        let loaded = self.pre(&component, world)?;
        let sha256 = sha256_hex(bytes);
        cache_artifact(&component, &self.artifact_path(&sha256));
        self.loaded
            .lock()
            .map_err(|_| Error::Internal)?
            .insert((sha256.clone(), world), Arc::new(loaded));
        Ok(Inspected {
            sha256,
            size: bytes.len(),
            imports,
        })
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
                tokio::task::spawn_blocking(move || {
                    let c = Component::from_binary(&engine, &bytes)?;
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
    /// crashed writer left. Returns how many components were imported.
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
        let (sha256, config, info) = (sha256.to_string(), config.to_vec(), info.clone());
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
        config: &[(String, String)],
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
                        .call_next_rotation(&mut store, &config.to_vec(), info, now)
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
                        reason: format!("declined: {}", msg.chars().take(200).collect::<String>()),
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
        let (row, config) = (plugin.clone(), config.to_vec());
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
        config: &[(String, String)],
        op: StorageOp,
    ) -> (Result<StorageReply>, u64) {
        let mut used = 0;
        let (tenant, sha256) = (plugin.tenant_id.as_str(), plugin.sha256.as_str());
        let short = &sha256[..12.min(sha256.len())];
        let fs_dir = if plugin.granted(CAP_FILESYSTEM) {
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
            let config = config.to_vec();
            let call = self
                .bounded(async {
                    let b = pre.instantiate_async(&mut store).await?;
                    let s = b.keyplane_plugin_storage();
                    Ok::<_, wasmtime::Error>(match op {
                        StorageOp::Get { name } => {
                            let full = format!("tenants/{tenant}/{name}");
                            s.call_get(&mut store, &config, &full)
                                .await?
                                .map(|b| StorageReply::Blob(b.map(|b| b.data)))
                        }
                        StorageOp::Put {
                            name,
                            data,
                            expected_version,
                        } => {
                            let full = format!("tenants/{tenant}/{name}");
                            s.call_put(&mut store, &config, &full, &data, expected_version)
                                .await?
                                .map(StorageReply::Version)
                        }
                        StorageOp::Delete { name } => {
                            let full = format!("tenants/{tenant}/{name}");
                            s.call_delete(&mut store, &config, &full, None)
                                .await?
                                .map(StorageReply::Deleted)
                        }
                        StorageOp::List { prefix, cursor } => {
                            // Names come back without the tenant's prefix; a name outside it
                            // (a plugin listing what it was not asked for) is dropped.
                            let ns = format!("tenants/{tenant}/");
                            let full = format!("{ns}{prefix}");
                            let cursor = cursor.map(|c| format!("{ns}{c}"));
                            s.call_list_blobs(
                                &mut store,
                                &config,
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
                                    .filter(|n| n.starts_with(&full))
                                    .filter_map(strip)
                                    .collect();
                                StorageReply::Page(names, page.next_cursor.and_then(strip))
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
                    describe_storage_error(&e)
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
