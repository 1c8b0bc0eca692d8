//! What Vault clients ask of a server besides the engine: `sys/health` (load balancers,
//! `vault status`, hvac's `sys.read_health_status`) and `auth/token/lookup-self` (hvac's
//! `is_authenticated`, the vault CLI's token check), answered from keyplane's readiness and
//! `get-caller-identity`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Serialize;

use super::{authenticate, error_response, reply_response, Reply, TransitError};
use crate::api::gate::{BodyLimits, Gate};
use crate::ops::{self, Front, Operation};
use crate::state::AppState;

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
        version: env!("CARGO_PKG_VERSION"),
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
struct TokenData {
    /// Never the token itself: it is not kept.
    id: &'static str,
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

#[derive(Serialize)]
struct TokenMeta {
    tenant: String,
    role: String,
    kind: String,
}

/// `GET`/`POST /v1/auth/token/lookup-self`: who the token is (`get-caller-identity`).
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
    let data = TokenData {
        id: "",
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
