//! `keyplane serve`: bring the node up and serve HTTPS (or, with `--insecure-http`, plain
//! HTTP) until SIGINT/SIGTERM, then shut down gracefully. The listener admits connections
//! through `connections` (limits and timeouts) and, with TLS, `tls::ClientCertificates`.
//! SIGHUP reloads the TLS certificate and key, the request quotas and the policy set (as the
//! `reload-policies` operation does; an invalid set is logged and refused, and the set in
//! force keeps serving).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum_server::tls_rustls::{RustlsAcceptor, RustlsConfig};
use axum_server::Handle;

use crate::authz::LoadedPolicies;
use crate::config::Config;
use crate::hsm::Hsm;
use crate::{api, bootstrap, tls};

/// Serve until a shutdown signal arrives.
pub async fn serve(config: Config, hsm: Hsm, policies: LoadedPolicies) -> anyhow::Result<()> {
    let listen = config.listen;
    let insecure = config.insecure_http;
    let tls = if insecure {
        None
    } else {
        Some(tls::load(&config)?)
    };
    // Shared with the acceptor: SIGHUP puts new material in it for new connections.
    let rustls = tls
        .as_ref()
        .map(|t| RustlsConfig::from_config(t.server_config.clone()));
    let state = Arc::new(bootstrap::start(config, hsm, policies).await?);
    crate::ops::scheduler::spawn(state.clone());
    crate::audit::checkpoint::spawn(
        state.checkpointer.clone(),
        state.db.clone(),
        state.config.audit.clone(),
    );
    spawn_sighup_reload(state.clone(), rustls.clone())?;
    spawn_quota_audit(state.clone());
    spawn_notice_handler(state.clone());
    let app = api::router(state.clone()).into_make_service_with_connect_info::<SocketAddr>();

    let handle = Handle::new();
    let shutdown = handle.clone();
    // Installed here, before the listener exists: installed inside the task, a SIGTERM that
    // came before the task first ran (a node stopped as soon as it listens, on a busy
    // machine) found no handler and killed the process uncleanly.
    let signals = ShutdownSignals::install()?;
    tokio::spawn(async move {
        signals.wait().await;
        tracing::info!("shutting down");
        shutdown.graceful_shutdown(Some(Duration::from_secs(10)));
    });
    let announce = handle.clone();
    let scheme = if insecure { "http" } else { "https" };
    if let Some(t) = &tls {
        println!(
            "keyplane: TLS certificate {} SHA-256 fingerprint {}",
            t.cert_path.display(),
            t.fingerprint
        );
    } else {
        tracing::warn!("serving plain HTTP (--insecure-http): for local debugging only");
    }
    tokio::spawn(async move {
        if let Some(addr) = announce.listening().await {
            println!("keyplane: listening on {scheme}://{addr}");
        }
    });
    let limits = state.config.limits.clone();
    let connections = crate::connections::Limiter::new(&limits);
    match rustls {
        Some(rustls) => {
            let acceptor = RustlsAcceptor::new(rustls)
                .handshake_timeout(Duration::from_secs(limits.handshake_timeout_seconds.max(1)))
                .acceptor(connections);
            let acceptor = tls::ClientCertificates(acceptor);
            let mut server = axum_server::bind(listen).acceptor(acceptor).handle(handle);
            crate::connections::configure_http(server.http_builder(), &limits);
            server.serve(app).await?
        }
        None => {
            let mut server = axum_server::bind(listen)
                .acceptor(connections)
                .handle(handle);
            crate::connections::configure_http(server.http_builder(), &limits);
            server.serve(app).await?
        }
    }
    // Records first: the pools close last, so the WAL is checkpointed into the file.
    state.audit.close().await;
    // This node's own audit chains end here: sign their heads, and the shared chain's (on
    // SQLite the whole log: its last records would otherwise stay unsigned while the node is
    // down, open to being cut off).
    match state.checkpointer.seal_own_chains(&state.db).await {
        Ok(signed) => {
            for cp in signed {
                tracing::info!(seq = cp.seq, "audit chain sealed by a checkpoint");
            }
        }
        Err(e) => tracing::warn!(error = %e, "could not sign the audit chains' last checkpoints"),
    }
    state.db.close().await;
    Ok(())
}

/// Act on what other nodes sharing the database announce (see `store::Notice`): a policy set
/// reloaded there is reloaded here (from this node's own policy directory, which the operator
/// keeps the same on every node); a key's material shredded there has every copy this node
/// derived from it destroyed (`Keyring::forget_key`); after notices may have been missed, the
/// policy set is reloaded and session objects no row names any more are swept. Row changes
/// need nothing here: the store advances its generation itself.
fn spawn_notice_handler(state: Arc<crate::state::AppState>) {
    use crate::store::Notice;
    use tokio::sync::broadcast::error::RecvError;
    let mut notices = state.db.subscribe();
    // Notices that came while this node was starting (the store listens from its opening)
    // reached no one: begin as after missed notices.
    let mut first =
        (state.db.dialect() == crate::store::Dialect::Postgres).then_some(Notice::Resync);
    tokio::spawn(async move {
        loop {
            let notice = match first.take() {
                Some(notice) => notice,
                None => match notices.recv().await {
                    Ok(notice) => notice,
                    Err(RecvError::Lagged(_)) => Notice::Resync,
                    Err(RecvError::Closed) => return,
                },
            };
            match notice {
                Notice::Changed => {}
                Notice::MaterialShredded { key_id } => {
                    if let Err(e) = state.keyring.forget_key(&key_id).await {
                        tracing::error!(key = %key_id, error = %e, "could not destroy this node's copies of a key shredded on another node; the scheduler's sweep retries");
                    }
                }
                Notice::PoliciesReloaded | Notice::Resync => {
                    if let Err(e) = crate::ops::reload_policies::reload(&state).await {
                        tracing::error!(error = %e, "another node reloaded its policy set, but this node's does not load; the set in force keeps serving");
                    }
                    if notice == Notice::Resync {
                        if let Err(e) = state.keyring.sweep_session_objects().await {
                            tracing::warn!(error = %e, "could not sweep session objects after a resync");
                        }
                    }
                }
            }
        }
    });
}

/// Reload the TLS material, the request quotas and the policy set on every SIGHUP. New TLS
/// material serves new connections (open ones keep theirs) and is audited (action
/// `ReloadTls`, the certificate's fingerprint in the resource); material that does not load
/// is logged and the old stays. Quotas that changed are audited (action `ReloadQuotas`); each
/// policy reload attempt is audited (principal `keyplane:sighup`, action `ReloadPolicies`,
/// outcome `ok` or `InvalidPolicySet`) with the hash of the set in force afterwards.
fn spawn_sighup_reload(
    state: Arc<crate::state::AppState>,
    rustls: Option<RustlsConfig>,
) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            if let Some(rustls) = &rustls {
                let (resource, outcome) = match tls::load(&state.config) {
                    Ok(material) => {
                        rustls.reload_from_config(material.server_config);
                        tracing::info!(fingerprint = %material.fingerprint, "SIGHUP: TLS material reloaded");
                        (format!("tls:{}", material.fingerprint), "ok")
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "SIGHUP: TLS material not reloaded; the previous stays in force");
                        ("tls".to_string(), "InvalidTlsMaterial")
                    }
                };
                let mut ev = crate::audit::AuditEvent::system(
                    "sighup",
                    "keyplane:sighup",
                    "-",
                    "ReloadTls",
                    resource,
                );
                ev.outcome = outcome.into();
                let _ = crate::ops::audit_alone(&state, &ev).await;
            }
            match state.config.reload_quotas() {
                Ok(quotas) => {
                    if state.quotas.reload(&quotas) {
                        tracing::info!(?quotas, "SIGHUP: request quotas reloaded");
                        let ev = crate::audit::AuditEvent::system(
                            "sighup",
                            "keyplane:sighup",
                            "-",
                            "ReloadQuotas",
                            "quotas".into(),
                        );
                        let _ = crate::ops::audit_alone(&state, &ev).await;
                    }
                }
                Err(e) => tracing::error!(
                    error = %e,
                    "SIGHUP: request quotas not reloaded; the previous ones stay in force"
                ),
            }
            crate::ops::reload_policies::reload_on_signal(&state).await;
        }
    });
    Ok(())
}

/// Every audit window of the quotas: one audit record per principal whose requests a quota
/// refused (action `Throttled`, outcome `Throttled`, the count in the resource), one per
/// source whose unauthenticated requests were counted rather than audited one by one (action
/// `UnauthenticatedRequests`, outcome the most frequent refusal, the counts by refusal in the
/// resource), and idle buckets forgotten.
fn spawn_quota_audit(state: Arc<crate::state::AppState>) {
    let throttled = crate::error::Error::throttled(Duration::ZERO).code();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(state.quotas.audit_window()).await;
            state.quotas.shrink();
            let mut events = Vec::new();
            for (tenant, principal, count) in state.quotas.take_refused() {
                let resource = format!("quota:{count} requests refused");
                events.push(refusals(
                    (principal, tenant),
                    "Throttled",
                    resource,
                    throttled,
                    "-".into(),
                ));
            }
            for refused in state.quotas.take_refused_sources() {
                let total: u64 = refused.by_code.values().sum();
                let by_code = refused
                    .by_code
                    .iter()
                    .map(|(code, n)| format!("{code}={n}"))
                    .collect::<Vec<_>>()
                    .join(" ");
                let most = refused
                    .by_code
                    .iter()
                    .max_by_key(|(_, n)| **n)
                    .map_or("Unauthenticated", |(code, _)| code);
                let resource = format!(
                    "source:{} {total} requests refused: {by_code}",
                    refused.source
                );
                events.push(refusals(
                    ("-".into(), "-".into()),
                    "UnauthenticatedRequests",
                    resource,
                    most,
                    refused.source,
                ));
            }
            for ev in events {
                if crate::ops::audit_alone(&state, &ev).await.is_err() {
                    tracing::warn!(resource = %ev.resource, "could not audit refused requests");
                }
            }
        }
    });
}

/// The record of requests refused together in an audit window, by (principal, tenant).
fn refusals(
    (principal, tenant): (String, String),
    action: &str,
    resource: String,
    outcome: &str,
    source: String,
) -> crate::audit::AuditEvent {
    crate::audit::AuditEvent {
        request_id: format!("quota-{}", uuid::Uuid::new_v4().simple()),
        principal,
        tenant,
        action: action.into(),
        resource,
        decision: "deny",
        policies: Vec::new(),
        outcome: outcome.into(),
        source,
        policy_hash: None,
        trace_id: None,
        user_agent: None,
        front: None,
        access_key_id: None,
    }
}

/// The signals that stop the server (SIGINT, SIGTERM), installed as soon as this exists.
struct ShutdownSignals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl ShutdownSignals {
    fn install() -> std::io::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(ShutdownSignals {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
        })
    }

    /// Until either signal arrives.
    async fn wait(mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {},
            _ = self.terminate.recv() => {},
        }
    }
}
