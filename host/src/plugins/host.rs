//! What a plugin instance can reach: the per-invocation store data, its resource limits, and
//! the host capabilities (`log`, and for storage backends the tenant-scoped `kv` table).
//! WASI is provided with nothing granted: no environment, arguments or sockets; clocks and
//! randomness; a preopened directory only with the `filesystem` capability; outbound HTTP
//! (`wasi:http`, storage backends only) only to the destinations of its [`HttpGrant`].

use wasmtime::component::ResourceTable;
use wasmtime::ResourceLimiter;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use super::http_grant::HttpGrant;

use super::bindings::v0_1::rotation::keyplane::plugin::log;
use super::bindings::v0_1::rotation::keyplane::plugin::types::StorageError;
use super::bindings::v0_1::storage::keyplane::plugin::kv;
use super::kv_store::KvStore;

/// Largest kv key and value a plugin may use.
pub const MAX_KV_KEY: usize = 512;
pub const MAX_KV_VALUE: usize = 1 << 20;
const MAX_LOG_LINES: u32 = 100;
/// Longest log line a plugin may write, in bytes (of UTF-8: a line of 2048 four-byte
/// characters was 8 KiB when this counted characters).
const MAX_LOG_LINE: usize = 2048;
/// Host resources (files, streams, HTTP requests and headers, pollables) one invocation may
/// hold at once: memory and table caps bound the guest's own memory, not what it makes the
/// host hold (wasmtime allows a million entries), and each open file is a descriptor of the
/// whole process. A storage backend needs a handful.
const MAX_HOST_RESOURCES: usize = 128;
/// Bytes of headers one `fields` resource may hold (wasmtime's in-memory measure; its default
/// is 128 KiB, 16 MiB across [`MAX_HOST_RESOURCES`]).
const MAX_FIELDS_BYTES: usize = 32 * 1024;

/// Store data of one invocation.
pub struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    /// The cap on all of the instance's linear memories together (see [`ResourceLimiter`]).
    memory_cap: usize,
    /// Bytes of linear memory the instance holds now, over all its memories.
    memory_used: usize,
    table_cap: usize,
    /// Set when the plugin asked for more memory than its cap.
    pub out_of_memory: bool,
    log_lines: u32,
    plugin: String,
    kv: Option<KvStore>,
    http: WasiHttpCtx,
    http_grant: HttpGrant,
}

/// The capabilities granted to one invocation.
#[derive(Default)]
pub struct Grants<'a> {
    /// The tenant-scoped kv table (storage backends).
    pub kv: Option<KvStore>,
    /// The directory preopened at `/data` (the `filesystem` capability).
    pub fs_dir: Option<&'a std::path::Path>,
    /// Outbound HTTP destinations (none: every request is refused).
    pub http: Option<HttpGrant>,
}

impl HostState {
    /// State for one invocation of `plugin` with `grants`.
    pub fn new(
        plugin: String,
        memory_cap: usize,
        table_cap: usize,
        grants: Grants<'_>,
    ) -> crate::error::Result<Self> {
        let mut wasi = WasiCtxBuilder::new();
        if let Some(dir) = grants.fs_dir {
            wasi.preopened_dir(dir, "/data", wasmtime_wasi::FsPerms::ReadWrite)
                .map_err(|e| {
                    tracing::error!(error = %e, "cannot preopen plugin directory");
                    crate::error::Error::Internal
                })?;
        }
        let mut table = ResourceTable::new();
        table.set_max_capacity(MAX_HOST_RESOURCES);
        let mut http = WasiHttpCtx::new();
        http.set_field_size_limit(MAX_FIELDS_BYTES);
        Ok(HostState {
            wasi: wasi.build(),
            table,
            memory_cap,
            memory_used: 0,
            table_cap,
            out_of_memory: false,
            log_lines: 0,
            plugin,
            kv: grants.kv,
            http,
            http_grant: grants.http.unwrap_or_else(HttpGrant::none),
        })
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for HostState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.http_grant,
        }
    }
}

/// The memory cap is per instance, not per linear memory: wasmtime asks once per memory (at
/// instantiation from 0, then at each `memory.grow`), and a component may have several (the
/// pool allows 4), so a per-memory check would let a component hold that many times the cap.
/// The limiter adds up what each memory grows by (`desired - current`) and refuses a growth
/// that would take the total past the cap.
impl ResourceLimiter for HostState {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let total = self
            .memory_used
            .saturating_add(desired.saturating_sub(current));
        if total > self.memory_cap {
            self.out_of_memory = true;
            return Ok(false);
        }
        self.memory_used = total;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= self.table_cap)
    }
}

impl super::bindings::v0_1::rotation::keyplane::plugin::types::Host for HostState {}

impl log::Host for HostState {
    async fn log(&mut self, level: log::Level, message: String) {
        self.log_lines += 1;
        if self.log_lines > MAX_LOG_LINES {
            return;
        }
        let message = log_line(&message);
        let plugin = self.plugin.as_str();
        match level {
            log::Level::Debug => tracing::debug!(plugin, message, "plugin log"),
            log::Level::Info => tracing::info!(plugin, message, "plugin log"),
            log::Level::Warn => tracing::warn!(plugin, message, "plugin log"),
            log::Level::Error => tracing::error!(plugin, message, "plugin log"),
        }
    }
}

/// A plugin's log message as logged: at most [`MAX_LOG_LINE`] bytes, cut at a character.
fn log_line(message: &str) -> &str {
    &message[..message.floor_char_boundary(MAX_LOG_LINE)]
}

fn check_key(key: &str) -> Result<(), StorageError> {
    if key.is_empty() || key.len() > MAX_KV_KEY {
        return Err(StorageError::Invalid(format!(
            "kv keys must be 1-{MAX_KV_KEY} bytes"
        )));
    }
    Ok(())
}

impl kv::Host for HostState {
    async fn get(&mut self, key: String) -> Result<Option<Vec<u8>>, StorageError> {
        check_key(&key)?;
        let kv = self
            .kv
            .as_ref()
            .ok_or_else(|| StorageError::Unavailable("kv not granted".into()))?;
        kv.get(&key).await
    }

    async fn set(&mut self, key: String, value: Vec<u8>) -> Result<(), StorageError> {
        check_key(&key)?;
        if value.len() > MAX_KV_VALUE {
            return Err(StorageError::Invalid(format!(
                "kv values are at most {MAX_KV_VALUE} bytes"
            )));
        }
        let kv = self
            .kv
            .as_ref()
            .ok_or_else(|| StorageError::Unavailable("kv not granted".into()))?;
        kv.set(&key, &value).await
    }

    async fn set_if(
        &mut self,
        key: String,
        expected: Option<Vec<u8>>,
        value: Vec<u8>,
    ) -> Result<bool, StorageError> {
        check_key(&key)?;
        if value.len() > MAX_KV_VALUE {
            return Err(StorageError::Invalid(format!(
                "kv values are at most {MAX_KV_VALUE} bytes"
            )));
        }
        let kv = self
            .kv
            .as_ref()
            .ok_or_else(|| StorageError::Unavailable("kv not granted".into()))?;
        kv.set_if(&key, expected.as_deref(), &value).await
    }

    async fn delete_if(&mut self, key: String, expected: Vec<u8>) -> Result<bool, StorageError> {
        check_key(&key)?;
        let kv = self
            .kv
            .as_ref()
            .ok_or_else(|| StorageError::Unavailable("kv not granted".into()))?;
        kv.delete_if(&key, &expected).await
    }

    async fn delete(&mut self, key: String) -> Result<bool, StorageError> {
        check_key(&key)?;
        let kv = self
            .kv
            .as_ref()
            .ok_or_else(|| StorageError::Unavailable("kv not granted".into()))?;
        kv.delete(&key).await
    }

    async fn list_keys(
        &mut self,
        prefix: String,
        start_after: Option<String>,
        limit: u32,
    ) -> Result<Vec<String>, StorageError> {
        let kv = self
            .kv
            .as_ref()
            .ok_or_else(|| StorageError::Unavailable("kv not granted".into()))?;
        kv.list(&prefix, start_after.as_deref(), limit.clamp(1, 1000))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1 << 20;

    /// A log line is cut by bytes, at a character: 2048 four-byte characters were logged
    /// whole (8 KiB) when the cut counted characters.
    #[test]
    fn a_log_line_is_cut_by_bytes_at_a_character() {
        let wide = "😀".repeat(MAX_LOG_LINE);
        let line = log_line(&wide);
        assert_eq!(line.len(), MAX_LOG_LINE);
        assert!(line.chars().all(|c| c == '😀'));
        let odd = format!("a{wide}");
        assert_eq!(log_line(&odd).len(), MAX_LOG_LINE - 3);
        assert_eq!(log_line("short"), "short");
    }

    /// What an invocation may make the host hold is bounded, not wasmtime's defaults (a
    /// million table entries, 128 KiB of headers each).
    #[test]
    fn an_invocation_holds_a_bounded_number_of_host_resources() {
        let mut s = HostState::new("p".into(), MIB, 10, Grants::default()).unwrap();
        // Held until the table refuses one more: at the cap, not wasmtime's million.
        let mut held = 0;
        while s.table.push(held).is_ok() {
            held += 1;
            assert!(held <= MAX_HOST_RESOURCES, "more than the cap held");
        }
        assert_eq!(held, MAX_HOST_RESOURCES);
    }

    #[test]
    fn the_memory_cap_holds_across_all_of_an_instances_memories() {
        let mut s = HostState::new("p".into(), 4 * MIB, 10, Grants::default()).unwrap();
        // Two memories made at instantiation (wasmtime asks from 0 for each).
        assert!(s.memory_growing(0, 3 * MIB, None).unwrap());
        assert!(!s.out_of_memory);
        assert!(
            !s.memory_growing(0, 2 * MIB, None).unwrap(),
            "a second memory may not take the instance past its cap"
        );
        assert!(s.out_of_memory);
        assert!(s.memory_growing(0, MIB, None).unwrap());
        // Growing either now is past the cap; the growth is what counts, not the size.
        assert!(!s
            .memory_growing(3 * MIB, 3 * MIB + 64 * 1024, None)
            .unwrap());
        assert!(!s.memory_growing(MIB, MIB + 64 * 1024, None).unwrap());
        // A fresh instance: one memory may use the whole cap.
        let mut s = HostState::new("p".into(), 4 * MIB, 10, Grants::default()).unwrap();
        assert!(s.memory_growing(0, MIB, None).unwrap());
        assert!(s.memory_growing(MIB, 4 * MIB, None).unwrap());
        assert!(!s.memory_growing(4 * MIB, 4 * MIB + 1, None).unwrap());
    }
}
