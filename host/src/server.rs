//! `keyplane serve`: bring the node up and serve HTTPS (or, with `--insecure-http`, plain
//! HTTP) until SIGINT/SIGTERM, then shut down gracefully.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum_server::tls_rustls::RustlsConfig;
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
    let state = Arc::new(bootstrap::start(config, hsm, policies).await?);
    crate::ops::scheduler::spawn(state.clone());
    let checkpointer = Arc::new(crate::audit::checkpoint::Checkpointer::new(
        state.keyring.hsm().clone(),
        &state.config.data_dir,
    )?);
    crate::audit::checkpoint::spawn(checkpointer, state.db.clone(), state.config.audit.clone());
    let app = api::router(state.clone()).into_make_service_with_connect_info::<SocketAddr>();

    let handle = Handle::new();
    let shutdown = handle.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
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
    match tls {
        Some(t) => {
            axum_server::bind_rustls(listen, RustlsConfig::from_config(t.server_config))
                .handle(handle)
                .serve(app)
                .await?
        }
        None => axum_server::bind(listen).handle(handle).serve(app).await?,
    }
    state.db.close().await;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = ctrl_c.await;
            return;
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term.recv() => {},
    }
}
