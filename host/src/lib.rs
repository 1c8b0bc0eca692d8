//! keyplane: a key management service. Every request is authenticated, authorized by Cedar
//! policies (deny by default), executed against a PKCS#11 HSM, and recorded in a
//! hash-chained audit log in the same transaction as the change it describes.
//!
//! # Layout
//! - [`config`]: layered configuration (defaults < TOML < `KEYPLANE_*` env < flags).
//! - [`server`]: `keyplane serve`; [`bootstrap`]: first-start set-up and the data
//!   directory's lock; [`tls`]: certificates; [`connections`]: how many connections the
//!   listener holds, from whom, for how long.
//! - [`api`]: HTTP fronts (native `POST /v1/<operation>` and `POST /v1/batch`; AWS KMS JSON
//!   1.1 and STS `GetCallerIdentity` on `POST /`; Vault Transit under `/v1/transit/`; health;
//!   the native API's OpenAPI document, generated from the operation types, at
//!   `GET /v1/openapi.json`); they only translate, around one shared gate (authentication,
//!   body limits, audit of refused requests, telemetry).
//! - [`authn`]: bearer tokens and AWS Signature Version 4 (access keys) → principal;
//!   [`authz`]: Cedar policy set, entities, decisions (and the memo of recent decisions).
//! - [`ops`]: the typed operation core (no wire format), one file per operation, the pipeline
//!   `ops::execute` (and `ops::execute_many`: a batch, each item through it), the
//!   lifecycle scheduler (rotations by schedule plugins, destruction after deletion windows)
//!   and garbage collection of material no row references (`ops::gc`).
//! - [`quotas`]: request quotas per tenant and per principal (token buckets), taken in the
//!   gate before an operation runs, and a limit per source on failed authentication.
//! - [`clock`]: the service clock; [`usage`]: per-version usage counters; [`pause`]: pause
//!   points for tests that interleave requests (test builds only).
//! - [`crypto`]: the keyring (`hsm` and `envelope` protection), ciphertext format, encryption
//!   context encoding, envelope material cache.
//! - [`algorithms`]: key specs, usages, algorithm names, public-key and signature encodings
//!   (a leaf: `hsm` and `crypto` both use it); [`model`]: key protection and key/version
//!   state (a leaf too: the store's rows carry them).
//! - [`plugins`]: the WebAssembly plugin runtime (storage backends, rotation schedules).
//! - [`hsm`]: every PKCS#11 call, the session pool, token set-up, and starting over when the
//!   module loses the login or the token (object handles carry the login's epoch).
//! - [`ceremony`]: `keyplane hsm transport-key | export-root | import-root`, the audited key
//!   ceremony that gives a joining node's token the same root key (docs/deployment.md).
//! - [`store`]: keyplane's one interface to its database (SQLite embedded, or PostgreSQL for
//!   several nodes, chosen by `database.url`), the hot-row caches and the notices nodes send
//!   each other; [`audit`]: the hash-chained log (one chain per writer) and its group commit.
//! - [`policy_cli`]: `keyplane policy …` (validate, fmt, test, explain, who-can) for auditors.
//! - [`error`]: the one typed error enum, with a stable code; each front maps it to its wire.
//! - [`telemetry`]: OpenTelemetry traces and metrics (OTLP), JSON logs, span helpers.

pub mod algorithms;
pub mod api;
pub mod audit;
pub mod authn;
pub mod authz;
pub mod bootstrap;
pub mod ceremony;
pub mod clock;
pub mod config;
pub mod connections;
pub mod crypto;
pub mod error;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod hsm;
pub mod model;
pub mod ops;
pub mod pause;
pub mod plugins;
pub mod policy_cli;
pub mod quotas;
pub mod server;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod usage;
