//! Configuration: defaults, then a TOML file, then `KEYPLANE_*` environment variables, then
//! command-line flags (later wins). Owns nothing else; secrets (the HSM PIN) are not part of
//! the configuration value, only where to find them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

/// The default PKCS#11 module: Debian's SoftHSM2.
pub const SOFTHSM2_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

/// Top-level configuration keys that `KEYPLANE_*` environment variables may set.
const ENV_KEYS: &[&str] = &[
    "data_dir",
    "listen",
    "tls",
    "hsm",
    "database",
    "limits",
    "envelope_cache",
    "cache",
    "telemetry",
    "plugins",
    "policies_dir",
    "lifecycle",
    "audit",
    "transit",
    "quotas",
];

/// The whole configuration of a keyplane node.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where the database, SoftHSM2 token, PIN, TLS material and admin token live.
    pub data_dir: PathBuf,
    /// Address to listen on (`127.0.0.1:0` picks a free port).
    pub listen: SocketAddr,
    /// Serve plain HTTP instead of TLS. Local debugging only, and only from the
    /// `--insecure-http` flag: a config file or environment variable cannot turn TLS off.
    #[serde(skip)]
    pub insecure_http: bool,
    pub tls: TlsConfig,
    pub hsm: HsmConfig,
    pub database: DatabaseConfig,
    pub limits: LimitsConfig,
    pub envelope_cache: EnvelopeCacheConfig,
    pub cache: CacheConfig,
    pub telemetry: TelemetryConfig,
    pub plugins: PluginsConfig,
    pub lifecycle: LifecycleConfig,
    pub audit: AuditConfig,
    pub transit: TransitConfig,
    pub quotas: QuotasConfig,
    /// Directory with `schema.cedarschema` and `*.cedar` policies.
    pub policies_dir: Option<PathBuf>,
    /// The file this was loaded from (read again by [`Config::reload_quotas`]).
    #[serde(skip)]
    pub config_file: Option<PathBuf>,
}

/// Request quotas (see `quotas`): a token bucket per tenant (all its principals together) and
/// one per principal, refilled at `*_per_second` and holding up to `*_burst` requests (0: one
/// second's worth). A rate of 0 is no quota. SIGHUP reloads this section from the config file
/// and the environment, with full buckets.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QuotasConfig {
    pub tenant_per_second: u32,
    pub tenant_burst: u32,
    pub principal_per_second: u32,
    pub principal_burst: u32,
    /// Tenants with a rate of their own instead of `tenant_per_second`/`tenant_burst`, by
    /// tenant id (`[quotas.tenants.<id>]`).
    pub tenants: std::collections::BTreeMap<String, QuotaRate>,
    /// Requests refused by a quota are audited together: one record per principal and window
    /// of this many seconds, with their count (0: 10 s). Unauthenticated requests past
    /// `unauthenticated.audited_in_full` likewise, per source.
    pub audit_window_seconds: u64,
    pub unauthenticated: UnauthenticatedConfig,
}

/// Requests whose credentials fail, per source address (an IPv4 address or an IPv6 /64; see
/// `quotas::sources`): a bucket of `burst` failures refilled at `per_second` (a rate of 0 is
/// no limit); a source whose bucket is empty is refused (`Throttled`) before authentication
/// until it refills. The first `audited_in_full` refused requests of a source in an audit
/// window are audited one by one, the rest in one record per source and window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UnauthenticatedConfig {
    pub per_second: u32,
    pub burst: u32,
    pub audited_in_full: u32,
}

impl Default for UnauthenticatedConfig {
    /// Generous enough for a client with a stale token retrying, or a test suite; a
    /// credential-guessing or junk flood is slowed to 20 a second per source.
    fn default() -> Self {
        UnauthenticatedConfig {
            per_second: 20,
            burst: 200,
            audited_in_full: 10,
        }
    }
}

/// One bucket's rate and size.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QuotaRate {
    pub per_second: u32,
    pub burst: u32,
}

/// TLS material; when both are unset a self-signed certificate is generated in the data dir.
/// SIGHUP reads the files again.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// PEM certificates of the CAs whose client certificates are accepted (mutual TLS); the
    /// client certificate's subject and fingerprint are then in Cedar's context. Unset: no
    /// client certificate is asked for.
    pub client_ca: Option<PathBuf>,
    /// With `client_ca`: refuse a handshake without a client certificate (otherwise one is
    /// optional, and policies decide what its absence means).
    #[serde(default)]
    pub require_client_certificate: bool,
}

/// Which PKCS#11 module and token to use.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HsmConfig {
    pub module: PathBuf,
    /// Label of the token keyplane uses (tokens are found by label, never by slot id).
    pub token_label: String,
    /// File holding the user PIN. `KEYPLANE_HSM_PIN` wins over it. When neither is set and
    /// the token does not exist yet, a PIN is generated into `<data-dir>/hsm.pin` (0600).
    pub pin_file: Option<PathBuf>,
    /// Write a SoftHSM2 config and token directory into the data dir and point
    /// `SOFTHSM2_CONF` at it. Only meaningful for the SoftHSM2 module.
    pub embedded_softhsm: bool,
    /// Upper bound of idle PKCS#11 sessions kept in the pool.
    pub max_idle_sessions: usize,
    /// Create the root key (on first start, or by `hsm import-root`) so that the key ceremony
    /// can pass it to another node: extractable only wrapped by a key the token's security
    /// officer marked trusted. Off (the default), the root key never leaves the token, not
    /// even to the SO; a node that may have to seed others sets it before its first start.
    #[serde(default)]
    pub root_key_exportable: bool,
}

/// Where metadata lives.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// sqlx URL; default `sqlite://<data-dir>/keyplane.db`.
    pub url: Option<String>,
    /// How long a write waits for a lock another writer (or process) holds before the
    /// request fails with `503 DatabaseUnavailable`.
    pub busy_timeout_ms: u64,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            url: None,
            busy_timeout_ms: crate::store::DEFAULT_BUSY_WAIT.as_millis() as u64,
        }
    }
}

/// The Vault Transit front.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransitConfig {
    /// Its paths are `/v1/<mount>/…` (Vault's default mount name, `transit`).
    pub mount: String,
}

impl TransitConfig {
    /// The mount is one path segment that is not one of Vault's own (`sys`, `auth`).
    fn check(&self) -> anyhow::Result<()> {
        let m = self.mount.as_str();
        let segment = !m.is_empty()
            && m.len() <= 64
            && m.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !segment || m == "sys" || m == "auth" {
            anyhow::bail!(
                "transit.mount must be one path segment of letters, digits, '-' and '_', not sys or auth (got {m:?})"
            );
        }
        Ok(())
    }
}

impl Default for TransitConfig {
    fn default() -> Self {
        TransitConfig {
            mount: "transit".into(),
        }
    }
}

/// Request limits.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    pub max_body_bytes: usize,
    /// The body of a batch (`POST /v1/batch`): room for [`crate::ops::MAX_BATCH_ITEMS`] items
    /// of the largest `encrypt` (4096 bytes of plaintext, 5464 as base64, with a key id and an
    /// encryption context around it).
    pub max_batch_body_bytes: usize,
    /// Connections held at once (see `connections`); one past it is closed on arrival.
    pub max_connections: usize,
    /// Connections held at once from one source address (an IPv6 /64); 0: no limit. Behind a
    /// load balancer that connects from one address, raise it to `max_connections`.
    pub max_connections_per_source: u32,
    /// The TLS handshake must be done within this.
    pub handshake_timeout_seconds: u64,
    /// A request's head must have arrived within this, and a connection with no request in
    /// flight (kept alive, HTTP/1.1 or HTTP/2) sees its next request within this.
    pub header_read_timeout_seconds: u64,
    /// A connection on which no byte moved either way for this long is closed.
    pub idle_timeout_seconds: u64,
    /// Requests in flight at once on one HTTP/2 connection.
    pub http2_max_concurrent_streams: u32,
}

/// The host-side cache of unwrapped envelope key material.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvelopeCacheConfig {
    pub max_entries: usize,
    pub ttl_seconds: u64,
}

/// Caches on the request path.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    /// Hot database rows (see `store::cache`: principals by token, keys, key versions,
    /// aliases), entries per cache; 0 turns them off. A change committed on this node is seen
    /// at once.
    pub max_rows: usize,
    /// How long a change made by another node sharing the database (or by hand) can go unseen.
    pub row_ttl_ms: u64,
    /// Cedar decisions of the current second, keyed by a digest of everything the decision
    /// depends on, the request time included (see `authz::memo`); 0 turns it off.
    pub max_decisions: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./keyplane-data"),
            listen: "127.0.0.1:8443".parse().expect("static address"),
            insecure_http: false,
            tls: TlsConfig::default(),
            hsm: HsmConfig {
                module: PathBuf::from(SOFTHSM2_MODULE),
                token_label: "keyplane".into(),
                pin_file: None,
                embedded_softhsm: true,
                max_idle_sessions: 16,
                root_key_exportable: false,
            },
            database: DatabaseConfig::default(),
            limits: LimitsConfig {
                max_body_bytes: 64 * 1024,
                max_batch_body_bytes: 8 << 20,
                max_connections: 8192,
                max_connections_per_source: 512,
                handshake_timeout_seconds: 10,
                header_read_timeout_seconds: 20,
                idle_timeout_seconds: 60,
                http2_max_concurrent_streams: 128,
            },
            envelope_cache: EnvelopeCacheConfig {
                max_entries: 10_000,
                ttl_seconds: 300,
            },
            cache: CacheConfig {
                max_rows: 100_000,
                row_ttl_ms: 1_000,
                max_decisions: 65_536,
            },
            telemetry: TelemetryConfig::default(),
            plugins: PluginsConfig::default(),
            lifecycle: LifecycleConfig::default(),
            audit: AuditConfig::default(),
            transit: TransitConfig::default(),
            quotas: QuotasConfig::default(),
            policies_dir: None,
            config_file: None,
        }
    }
}

/// Traces, metrics and logs. OTLP export is off unless an endpoint is configured here or in
/// the standard `OTEL_EXPORTER_OTLP_ENDPOINT` environment variable.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryConfig {
    /// OTLP endpoint, e.g. `http://collector:4317` (gRPC) or `http://collector:4318` (HTTP).
    pub otlp_endpoint: Option<String>,
    /// `grpc` or `http/protobuf`; default from `OTEL_EXPORTER_OTLP_PROTOCOL`, else `grpc`.
    pub otlp_protocol: Option<String>,
    /// Fraction of new traces sampled (parent-based: a sampled caller is always followed).
    pub sampling_ratio: f64,
    /// Spans waiting for export beyond this are dropped (and counted), never blocking.
    pub max_queue_size: usize,
    /// How often queued spans are exported.
    pub export_interval_ms: u64,
    /// How often metrics are exported.
    pub metrics_interval_ms: u64,
    /// `json` (default) or `text` logs on stdout.
    pub log_format: String,
    /// Record encryption-context *keys* (never values) on operation spans.
    pub record_context_keys: bool,
    /// Label key-operation metrics with the key id (unbounded cardinality; off by default).
    pub per_key_metrics: bool,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            otlp_endpoint: None,
            otlp_protocol: None,
            sampling_ratio: 1.0,
            max_queue_size: 4096,
            export_interval_ms: 1000,
            metrics_interval_ms: 10_000,
            log_format: "json".into(),
            record_context_keys: false,
            per_key_metrics: false,
        }
    }
}

/// Limits of the WebAssembly plugin runtime. Every invocation gets a fresh instance with
/// these caps; exceeding one fails that call only.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginsConfig {
    /// Largest component accepted by `upload-plugin`.
    pub max_upload_bytes: usize,
    /// Fuel (roughly: WebAssembly instructions) per invocation.
    pub fuel: u64,
    /// Wall-clock deadline per invocation.
    pub deadline_ms: u64,
    /// Linear memory cap per instance.
    pub memory_bytes: usize,
    /// Table elements cap per table.
    pub table_elements: usize,
    /// Largest string or list a plugin may return.
    pub max_output_bytes: usize,
    /// Concurrent plugin instances (pooling allocator slots).
    pub max_instances: u32,
    /// Threads that run plugin invocations, apart from the request workers (`plugins::fairness`).
    pub workers: usize,
    /// Invocations one tenant runs at once; one more waits `tenant_queue_ms` for a slot, then
    /// is refused (`Throttled`).
    pub tenant_concurrency: usize,
    pub tenant_queue_ms: u64,
    /// Each tenant's budget of fuel (CPU work; a call may use `fuel`): refilled at this rate and
    /// holding up to `tenant_fuel_burst`; spent, the tenant's plugin work is refused until it
    /// refills. A rate of 0 is no budget.
    pub tenant_fuel_per_second: u64,
    pub tenant_fuel_burst: u64,
    /// Whether tenants may grant storage backends the `filesystem` capability (a directory of
    /// their own under `<data-dir>/plugins/fs/<tenant>/<plugin>`). Checked at upload and
    /// again at every call: turned off, plugins granted it before lose the directory (their
    /// calls fail, saying so) until it is turned on again; what they wrote stays.
    pub allow_filesystem: bool,
    /// Destinations (`host:port`) that tenants may grant storage backends outbound HTTP to
    /// (`http:<host>:<port>` capabilities). Empty: no plugin may make HTTP requests. Checked
    /// at upload and again on every request.
    pub http_hosts: Vec<String>,
}

impl Default for PluginsConfig {
    fn default() -> Self {
        PluginsConfig {
            max_upload_bytes: 8 << 20,
            fuel: 200_000_000,
            deadline_ms: 1000,
            memory_bytes: 64 << 20,
            table_elements: 100_000,
            max_output_bytes: 1 << 20,
            max_instances: 64,
            workers: 1,
            tenant_concurrency: 4,
            tenant_queue_ms: 1000,
            // A spinning call (all its 200M fuel) takes about 40 ms: a tenant gets about a fifth
            // of a core on average, and a second's worth at once.
            tenant_fuel_per_second: 1_000_000_000,
            tenant_fuel_burst: 5_000_000_000,
            allow_filesystem: true,
            http_hosts: Vec::new(),
        }
    }
}

/// The lifecycle scheduler: rotations decided by schedule plugins, destruction of keys whose
/// deletion window has passed.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LifecycleConfig {
    /// Seconds between scheduler passes (0: no background passes; `run-scheduler` still works).
    pub scheduler_interval_seconds: u64,
    /// Schedule plugins called at once during a pass.
    pub scheduler_concurrency: usize,
    /// Seconds between garbage collections, run by the scheduler pass that finds one due
    /// (0: never in the background; `keyplane gc` still works). See `ops::gc`.
    pub gc_interval_seconds: u64,
    /// How old an unreferenced HSM object or blob must be before garbage collection removes
    /// it: longer than any request that creates material takes. At least
    /// [`MIN_GC_GRACE_SECONDS`].
    pub gc_grace_seconds: u64,
}

/// The shortest grace period a running node (or `keyplane gc` while nodes may run) accepts.
/// Material is made before the row naming it commits: a request slower than the grace period
/// (a storage plugin's HTTP backend at its timeout, a busy database) would see the collector
/// remove its fresh blob or HSM object, then commit a version whose material is gone, and
/// every ciphertext later sealed under it with it. A minute is above every deadline a
/// creating request has (plugin calls, database waits); only `keyplane gc --all-nodes-stopped`
/// goes below it.
pub const MIN_GC_GRACE_SECONDS: u64 = 60;

impl LifecycleConfig {
    fn check(&self) -> anyhow::Result<()> {
        if self.gc_grace_seconds < MIN_GC_GRACE_SECONDS {
            anyhow::bail!(
                "lifecycle.gc_grace_seconds must be at least {MIN_GC_GRACE_SECONDS} (got {}): garbage collection would remove the material of a request still being committed; `keyplane gc --grace-seconds N --all-nodes-stopped` collects younger material when no node runs",
                self.gc_grace_seconds
            );
        }
        Ok(())
    }
}

impl Default for LifecycleConfig {
    fn default() -> Self {
        LifecycleConfig {
            scheduler_interval_seconds: 60,
            scheduler_concurrency: 4,
            gc_interval_seconds: 3600,
            gc_grace_seconds: 3600,
        }
    }
}

/// Signed checkpoints of the audit log: the chain head is signed by the HSM's audit key after
/// `checkpoint_every_records` new records or `checkpoint_interval_seconds` (whichever first).
/// The records up to a checkpoint are archived to files and, under a retention limit, pruned
/// from the database (see `audit::archive`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    pub checkpoint_every_records: u64,
    /// 0: no time-based checkpoints.
    pub checkpoint_interval_seconds: u64,
    /// Where archived segments are written; default `<data-dir>/audit-archive`.
    pub archive_dir: Option<PathBuf>,
    /// How often the scheduler archives sealed segments and prunes (claimed in the database,
    /// so once per interval across nodes). 0: only `keyplane audit archive` does.
    pub archive_interval_seconds: u64,
    /// Most records in one archive file (a segment ends at a checkpoint, so one checkpoint's
    /// worth of records may exceed it).
    pub archive_segment_records: u64,
    /// Archived records whose segment ended longer ago than this are deleted from the
    /// database. 0 (with `retention_records` 0): keep everything.
    pub retention_seconds: u64,
    /// Archived records more than this many records behind the newest are deleted from the
    /// database. When both limits are set, a segment is pruned only once both allow it.
    pub retention_records: u64,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            checkpoint_every_records: 1000,
            checkpoint_interval_seconds: 60,
            archive_dir: None,
            archive_interval_seconds: 3600,
            archive_segment_records: 1_000_000,
            retention_seconds: 0,
            retention_records: 0,
        }
    }
}

impl Config {
    /// The directory of archived audit segments.
    pub fn audit_archive_dir(&self) -> PathBuf {
        self.audit
            .archive_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("audit-archive"))
    }
}

/// Values given on the command line; `None` means "not given".
#[derive(Debug, Default, Serialize)]
pub struct FlagOverrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    #[serde(skip)]
    pub insecure_http: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policies_dir: Option<PathBuf>,
}

impl Config {
    /// Layers defaults < TOML file < `KEYPLANE_*` env < flags.
    pub fn load(file: Option<&Path>, flags: FlagOverrides) -> anyhow::Result<Self> {
        let mut fig = Self::file_and_env(file)?;
        let insecure_http = flags.insecure_http.unwrap_or(false);
        fig = fig.merge(Serialized::defaults(flags));
        let mut config: Config = fig.extract()?;
        config.insecure_http = insecure_http;
        config.config_file = file.map(Path::to_path_buf);
        config.transit.check()?;
        config.lifecycle.check()?;
        Ok(config)
    }

    /// Defaults < TOML file < `KEYPLANE_*` env.
    fn file_and_env(file: Option<&Path>) -> anyhow::Result<Figment> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = file {
            if !file.exists() {
                anyhow::bail!("config file {} does not exist", file.display());
            }
            fig = fig.merge(Toml::file(file));
        }
        // `KEYPLANE_HSM__MODULE` sets hsm.module; the PIN and the config path are not settings.
        // Only variables naming a configuration key are read, so an unrelated `KEYPLANE_*`
        // variable in the environment does not stop the service from starting.
        Ok(fig.merge(
            Env::prefixed("KEYPLANE_")
                .ignore(&["HSM_PIN", "CONFIG"])
                .filter(|k| {
                    let k = k.as_str().to_ascii_lowercase();
                    ENV_KEYS.iter().any(|p| {
                        k == *p
                            || k.starts_with(&format!("{p}."))
                            || k.starts_with(&format!("{p}__"))
                    })
                })
                .split("__"),
        ))
    }

    /// The `quotas` section as the config file and the environment say now (SIGHUP).
    pub fn reload_quotas(&self) -> anyhow::Result<QuotasConfig> {
        Ok(Self::file_and_env(self.config_file.as_deref())?.extract_inner("quotas")?)
    }

    /// The database URL, defaulting to SQLite inside the data dir.
    pub fn database_url(&self) -> String {
        match &self.database.url {
            Some(url) => url.clone(),
            None => format!("sqlite://{}", self.data_dir.join("keyplane.db").display()),
        }
    }

    /// [`Config::database_url`] as it may be shown (in an error, a log): with no password,
    /// neither the user's in the authority nor a `password=` parameter.
    pub fn database_url_shown(&self) -> String {
        shown_url(&self.database_url())
    }

    /// The policy directory, defaulting to `policies/` next to the working directory.
    pub fn policies_dir(&self) -> PathBuf {
        self.policies_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("policies"))
    }
}

/// `url` without the password of its authority's user information (`user:***@host`) or of a
/// `password=` parameter (every parameter is then hidden).
fn shown_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let authority = match authority.rsplit_once('@') {
        Some((user, host)) if user.contains(':') => {
            let name = user.split(':').next().unwrap_or_default();
            format!("{name}:***@{host}")
        }
        _ => authority.to_string(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) if query.to_ascii_lowercase().contains("password") => {
            format!("{path}?***")
        }
        _ => tail.to_string(),
    };
    format!("{scheme}://{authority}{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_url_is_shown_without_its_password() {
        for (url, shown) in [
            (
                "postgres://kp:S3cret@db.example:5432/kp",
                "postgres://kp:***@db.example:5432/kp",
            ),
            (
                "postgres://kp@db/kp?password=S3cret&sslmode=require",
                "postgres://kp@db/kp?***",
            ),
            (
                "postgres://db/kp?sslmode=require",
                "postgres://db/kp?sslmode=require",
            ),
            ("sqlite://./data/keyplane.db", "sqlite://./data/keyplane.db"),
        ] {
            assert_eq!(shown_url(url), shown, "{url}");
        }
    }

    #[test]
    fn every_setting_can_come_from_the_environment() {
        let defaults = serde_json::to_value(Config::default()).unwrap();
        for key in defaults.as_object().unwrap().keys() {
            assert!(
                ENV_KEYS.contains(&key.as_str()) || key == "insecure_http",
                "{key} is missing from ENV_KEYS"
            );
        }
    }

    #[test]
    fn a_grace_period_below_a_minute_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("k.toml");
        std::fs::write(&file, "[lifecycle]\ngc_grace_seconds = 59\n").unwrap();
        let e = Config::load(Some(&file), FlagOverrides::default()).unwrap_err();
        assert!(
            e.to_string()
                .contains("lifecycle.gc_grace_seconds must be at least 60 (got 59)"),
            "{e}"
        );
        std::fs::write(&file, "[lifecycle]\ngc_grace_seconds = 60\n").unwrap();
        let c = Config::load(Some(&file), FlagOverrides::default()).unwrap();
        assert_eq!(c.lifecycle.gc_grace_seconds, 60);
    }

    #[test]
    fn flags_override_file_and_env() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("k.toml");
        std::fs::write(&file, "listen = \"127.0.0.1:9000\"\ndata_dir = \"/from-file\"\n[limits]\nmax_body_bytes = 10\n").unwrap();
        let c = Config::load(Some(&file), FlagOverrides::default()).unwrap();
        assert_eq!(c.listen.port(), 9000);
        assert_eq!(c.limits.max_body_bytes, 10);
        let c = Config::load(
            Some(&file),
            FlagOverrides {
                listen: Some("127.0.0.1:9001".parse().unwrap()),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(c.listen.port(), 9001);
        assert_eq!(c.data_dir, PathBuf::from("/from-file"));
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("k.toml");
        std::fs::write(&file, "lisen = \"127.0.0.1:9000\"\n").unwrap();
        assert!(Config::load(Some(&file), FlagOverrides::default()).is_err());
    }
}
