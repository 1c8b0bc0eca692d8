//! What Vault clients ask of a server besides the engine: `sys/health` (load balancers,
//! hvac's `sys.read_health_status`), `sys/seal-status` and `sys/leader` (`vault status`;
//! Terraform's provider reads the server's version in the seal status) and `auth/token/lookup-self` (hvac's
//! `is_authenticated`, the vault CLI's token check and `vault login`/`bao login`, which store
//! the `id` it answers), answered from keyplane's readiness and `get-caller-identity`.
//!
//! The version these answer is [`VERSION`]: the Vault API level the Transit front follows,
//! with keyplane's own version as semver build metadata. Clients that gate features on the
//! server's version (Terraform's provider sends `key_size` to Vault 1.12 and later) then see
//! what the front serves, and anyone reading it sees keyplane.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, Query, Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;

use super::{authenticate, error_response, presented_token, reply_response, Reply, TransitError};
use crate::api::gate::{BodyLimits, Gate};
use crate::ops::{self, Front, Operation};
use crate::state::AppState;

/// The version Vault clients are told (see the module doc).
pub const VERSION: &str = concat!("1.15.0+keyplane.", env!("CARGO_PKG_VERSION"));

#[derive(Serialize)]
struct Health {
    initialized: bool,
    sealed: bool,
    standby: bool,
    performance_standby: bool,
    replication_performance_mode: &'static str,
    replication_dr_mode: &'static str,
    server_time_utc: i64,
    version: &'static str,
    cluster_name: &'static str,
    cluster_id: String,
}

/// The status codes a `sys/health` caller asks for (Vault's query parameters): `activecode`
/// (default 200) and `sealedcode` (503). keyplane's nodes are all active and initialized, so
/// `standbyok`, `standbycode`, `uninitcode` and the replication ones change nothing.
#[derive(serde::Deserialize)]
pub struct HealthCodes {
    activecode: Option<String>,
    sealedcode: Option<String>,
}

/// A status code asked for in a `sys/health` parameter: Vault takes any code from 100 to
/// 599 (its Go client asks for 299, to read the body of any state).
fn asked_code(name: &str, value: Option<&str>, default: StatusCode) -> Result<StatusCode, String> {
    match value {
        None => Ok(default),
        Some(v) => v
            .trim()
            .parse::<u16>()
            .ok()
            .and_then(|c| StatusCode::from_u16(c).ok())
            .filter(|c| (100..600).contains(&c.as_u16()))
            .ok_or_else(|| format!("bad code for {name}: {v:?}")),
    }
}

/// `GET /v1/sys/health`: `200` when the database answers and the HSM's root key works;
/// `503` (Vault's "sealed") otherwise, or the codes the caller asked for (`activecode`,
/// `sealedcode`, see [`HealthCodes`]). No token needed, as in Vault.
pub async fn health(
    State(state): State<Arc<AppState>>,
    Query(codes): Query<HealthCodes>,
) -> Response {
    let active = asked_code("activecode", codes.activecode.as_deref(), StatusCode::OK);
    let sealed = asked_code(
        "sealedcode",
        codes.sealedcode.as_deref(),
        StatusCode::SERVICE_UNAVAILABLE,
    );
    let (active, sealed) = match (active, sealed) {
        (Ok(a), Ok(s)) => (a, s),
        (Err(m), _) | (_, Err(m)) => {
            return error_response(&TransitError::new(StatusCode::BAD_REQUEST, &m))
        }
    };
    let ready = crate::api::ready(&state).await;
    let body = Health {
        initialized: true,
        sealed: !ready,
        standby: false,
        performance_standby: false,
        replication_performance_mode: "disabled",
        replication_dr_mode: "disabled",
        server_time_utc: chrono::Utc::now().timestamp(),
        version: VERSION,
        cluster_name: "keyplane",
        // Not the token label: this answer needs no token.
        cluster_id: "keyplane".to_string(),
    };
    let status = if ready { active } else { sealed };
    let mut resp = super::json(
        status,
        Body::from(serde_json::to_vec(&body).unwrap_or_default()),
    );
    *resp.status_mut() = status;
    resp
}

#[derive(Serialize)]
struct SealStatus {
    #[serde(rename = "type")]
    seal_type: &'static str,
    initialized: bool,
    sealed: bool,
    t: u32,
    n: u32,
    progress: u32,
    nonce: &'static str,
    version: &'static str,
    build_date: &'static str,
    migration: bool,
    cluster_name: &'static str,
    cluster_id: &'static str,
    recovery_seal: bool,
    storage_type: &'static str,
}

/// `GET /v1/sys/seal-status`: Vault's answer for a server that is unsealed when the database
/// answers and the HSM's root key works (keyplane has no unseal keys: the HSM is its seal,
/// `type` `pkcs11`), sealed otherwise. Always `200`, as Vault's, and no token needed.
pub async fn seal_status(State(state): State<Arc<AppState>>) -> Response {
    let ready = crate::api::ready(&state).await;
    let body = SealStatus {
        seal_type: "pkcs11",
        initialized: true,
        sealed: !ready,
        t: 1,
        n: 1,
        progress: 0,
        nonce: "",
        version: VERSION,
        build_date: "",
        migration: false,
        cluster_name: "keyplane",
        cluster_id: "keyplane",
        recovery_seal: false,
        storage_type: "keyplane",
    };
    super::json(
        StatusCode::OK,
        Body::from(serde_json::to_vec(&body).unwrap_or_default()),
    )
}

#[derive(Serialize)]
struct Leader {
    ha_enabled: bool,
    is_self: bool,
    active_time: &'static str,
    leader_address: &'static str,
    leader_cluster_address: &'static str,
    performance_standby: bool,
    performance_standby_last_remote_wal: u64,
}

/// `GET /v1/sys/leader` (`vault status` asks it after the seal status): keyplane's nodes are
/// all active, none leads, so Vault's answer for a server without HA. No token needed.
pub async fn leader() -> Response {
    let body = Leader {
        ha_enabled: false,
        is_self: false,
        active_time: "0001-01-01T00:00:00Z",
        leader_address: "",
        leader_cluster_address: "",
        performance_standby: false,
        performance_standby_last_remote_wal: 0,
    };
    super::json(
        StatusCode::OK,
        Body::from(serde_json::to_vec(&body).unwrap_or_default()),
    )
}

#[derive(Serialize)]
struct TokenData {
    /// The token the caller presented, as Vault answers it: `vault login <token>` and
    /// `bao login <token>` store this `id` (not what they were given) as the token later
    /// commands use. Only the caller's own, which it holds already; kept wrapped until it is
    /// written into the answer (a buffer zeroized once sent), so that no log, trace or audit
    /// record can show it.
    #[serde(serialize_with = "expose")]
    id: SecretString,
    accessor: String,
    display_name: String,
    entity_id: String,
    policies: Vec<String>,
    meta: TokenMeta,
    path: &'static str,
    renewable: bool,
    orphan: bool,
    ttl: u64,
    explicit_max_ttl: u64,
    expire_time: Option<String>,
    num_uses: u64,
    #[serde(rename = "type")]
    token_type: &'static str,
}

/// The token, written into the answer (only there).
fn expose<S: serde::Serializer>(token: &SecretString, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(token.expose_secret())
}

#[derive(Serialize)]
struct TokenMeta {
    tenant: String,
    role: String,
    kind: String,
}

/// `GET`/`POST /v1/auth/token/lookup-self`: who the token is (`get-caller-identity`), and the
/// token itself in `id`, as Vault answers it.
pub async fn lookup_self(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
) -> Response {
    let (parts, body) = request.into_parts();
    let gate = Gate::new(state, Front::VaultTransit, peer, &parts);
    let auth = authenticate(&gate, &parts.headers).await;
    let _ = gate.read_body(body, BodyLimits::refused(4096)).await;
    let action = ops::get_caller_identity::GetCallerIdentity::ACTION;
    let principal = match auth {
        Ok(p) => p,
        Err(e) => {
            let e = gate.refuse(None, action, e).await;
            return error_response(&TransitError::from(&e));
        }
    };
    let op = ops::get_caller_identity::GetCallerIdentity {};
    let who = match gate.run(principal, Ok(op)).await {
        Ok(w) => w,
        Err(e) => return error_response(&TransitError::from(&e)),
    };
    // Read only now that the token authenticated: it is the caller's own.
    let Some(id) = presented_token(&parts.headers) else {
        return error_response(&TransitError::from(&crate::error::Error::Internal));
    };
    let data = TokenData {
        id,
        accessor: who.principal_id.clone(),
        display_name: format!("token-{}", who.name),
        entity_id: who.principal_id,
        policies: vec![who.role.clone()],
        meta: TokenMeta {
            tenant: who.tenant_id,
            role: who.role,
            kind: who.kind,
        },
        path: "auth/token/create",
        renewable: false,
        orphan: true,
        ttl: 0,
        explicit_max_ttl: 0,
        expire_time: None,
        num_uses: 0,
        token_type: "service",
    };
    match Reply::data(&data) {
        Ok(reply) => reply_response(&gate, reply),
        Err(_) => error_response(&TransitError::from(&crate::error::Error::Internal)),
    }
}

/// `GET /v1/sys/init` (hvac's `sys.is_initialized`): always initialized; no token needed.
pub async fn init() -> Response {
    super::json(
        StatusCode::OK,
        Body::from(
            serde_json::to_vec(&serde_json::json!({ "initialized": true })).unwrap_or_default(),
        ),
    )
}

#[derive(Serialize)]
struct MountConfig {
    default_lease_ttl: u64,
    max_lease_ttl: u64,
    force_no_cache: bool,
}

/// The Transit mount, as Vault describes a mount.
#[derive(Serialize)]
struct Mount {
    #[serde(rename = "type")]
    mount_type: &'static str,
    description: &'static str,
    accessor: String,
    uuid: String,
    config: MountConfig,
    options: Option<()>,
    local: bool,
    seal_wrap: bool,
    external_entropy_access: bool,
    plugin_version: &'static str,
    running_plugin_version: &'static str,
}

impl Mount {
    fn of(mount: &str) -> Self {
        Mount {
            mount_type: "transit",
            description: "keyplane keys, through the Transit front",
            accessor: format!("transit_{mount}"),
            uuid: format!("keyplane-{mount}"),
            config: MountConfig {
                default_lease_ttl: 0,
                max_lease_ttl: 0,
                force_no_cache: false,
            },
            options: None,
            local: false,
            seal_wrap: false,
            external_entropy_access: false,
            plugin_version: "",
            running_plugin_version: VERSION,
        }
    }
}

#[derive(serde::Deserialize, Default)]
struct EnableMount {
    #[serde(rename = "type")]
    mount_type: Option<String>,
}

/// `/v1/sys/mounts` and `/v1/sys/mounts/<path>`: what setup scripts, `vault secrets
/// enable|list|disable` and Terraform's `vault_mount` ask before using Transit. keyplane has one
/// Transit mount, fixed by its configuration (`transit.mount`), so: listing answers it, reading
/// it answers it; enabling it (type `transit`) answers `204` as Vault does for a new mount, the
/// mount being there as asked (a script's "enable if missing" and Terraform's create then
/// succeed); enabling anything else, and disabling it (which would delete every key under it),
/// are refused with why; disabling a path where nothing is mounted answers `204`, as Vault
/// does. A token is needed, as in Vault; the caller's identity is looked up
/// (`get-caller-identity`), so each call is authorized and audited.
pub async fn mounts(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
) -> Response {
    let (parts, body) = request.into_parts();
    let mount = state.config.transit.mount.clone();
    let gate = Gate::new(state, Front::VaultTransit, peer, &parts);
    let auth = authenticate(&gate, &parts.headers).await;
    let action = ops::get_caller_identity::GetCallerIdentity::ACTION;
    let principal = match auth {
        Ok(p) => p,
        Err(e) => {
            let _ = gate.read_body(body, BodyLimits::refused(4096)).await;
            let e = gate.refuse(None, action, e).await;
            return error_response(&TransitError::from(&e));
        }
    };
    // A mount's settings are small: a larger body is refused as too large.
    let body = gate
        .read_body(body, BodyLimits::authenticated(16 * 1024))
        .await;
    if let Err(e) = gate
        .run(
            principal,
            Ok(ops::get_caller_identity::GetCallerIdentity {}),
        )
        .await
    {
        return error_response(&TransitError::from(&e));
    }
    let path = parts
        .uri
        .path()
        .strip_prefix("/v1/sys/mounts")
        .unwrap_or_default()
        .trim_matches('/')
        .to_string();
    let ours = path == mount;
    let bad = |m: String| error_response(&TransitError::new(StatusCode::BAD_REQUEST, &m));
    let answer = match (parts.method.as_str(), path.as_str()) {
        ("GET", "") => Reply::data(&std::collections::BTreeMap::from([(
            format!("{mount}/"),
            Mount::of(&mount),
        )])),
        ("GET", _) if ours => Reply::data(&Mount::of(&mount)),
        ("GET", _) => return bad(format!("cannot fetch mount config for path {path:?}: keyplane has one Transit mount, {mount}/")),
        ("POST" | "PUT", _) if !path.is_empty() => {
            let asked: EnableMount = match body {
                Ok(b) if b.iter().all(u8::is_ascii_whitespace) => EnableMount::default(),
                Ok(b) => match serde_json::from_slice(&b) {
                    Ok(m) => m,
                    Err(e) => return bad(format!("the request body is not a mount: {e}")),
                },
                Err(e) => return error_response(&TransitError::from(&e)),
            };
            match asked.mount_type.as_deref() {
                Some("transit") if ours => Ok(Reply::no_content()),
                Some(t) if ours => {
                    return bad(format!("path is already in use at {mount}/ (keyplane's Transit mount), not a {t} engine"))
                }
                Some(t) => return bad(format!("keyplane serves one secrets engine, Transit, mounted at {mount}/ (transit.mount in its configuration); it cannot mount {t} at {path}/")),
                None => return bad("missing type".into()),
            }
        }
        ("DELETE", _) if ours => return bad(format!(
            "keyplane's Transit mount {mount}/ cannot be disabled: its keys are keyplane keys; delete them one by one (keys/<name> with deletion_allowed)"
        )),
        ("DELETE", _) if !path.is_empty() => Ok(Reply::no_content()),
        _ => {
            return error_response(&TransitError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "unsupported operation",
            ))
        }
    };
    match answer {
        Ok(reply) => reply_response(&gate, reply),
        Err(_) => error_response(&TransitError::from(&crate::error::Error::Internal)),
    }
}
