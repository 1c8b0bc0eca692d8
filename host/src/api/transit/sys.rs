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
use axum::extract::{ConnectInfo, Request, State};
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

/// `GET /v1/sys/health`: `200` when the database answers and the HSM's root key works;
/// `503` (Vault's "sealed") otherwise. No token needed, as in Vault.
pub async fn health(State(state): State<Arc<AppState>>) -> Response {
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
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
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
