//! First start and every start: the data directory, the database, the keyring, the
//! token-hash key, the policy set and, on an empty database, the `default` tenant with its
//! bootstrap admin (an operator) whose token is written to `<data-dir>/admin.token` (0600)
//! and printed once, to a terminal only: standard output that goes to a file, a pipe or a log
//! collector is told where the file is instead, so the token never lands in a log.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use secrecy::ExposeSecret;

use crate::audit::{self, AuditEvent};
use crate::authn::TokenHasher;
use crate::authz::{Authz, LoadedPolicies};
use crate::config::Config;
use crate::crypto::Keyring;
use crate::hsm::token::write_secret_file;
use crate::hsm::Hsm;
use crate::plugins::PluginRuntime;
use crate::state::AppState;
use crate::store::principals::PrincipalRow;
use crate::store::{now_rfc3339, principals, tenants, Db};

/// The tenant created on first start.
pub const DEFAULT_TENANT: &str = "default";

/// An exclusive lock on a data directory, held while a process uses its token and database
/// (released when dropped, or by the kernel when the process dies).
pub struct DataDirLock(#[allow(dead_code)] std::fs::File);

/// Take the data directory's lock (`<data-dir>/keyplane.lock`), or fail at once if another
/// process holds it: two processes must never share one SoftHSM2 token directory, and
/// `keyplane gc` must not run beside the node that serves the directory.
pub fn lock_data_dir(dir: &Path) -> anyhow::Result<DataDirLock> {
    use std::os::unix::io::AsRawFd;
    let path = dir.join("keyplane.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)?;
    // SAFETY: flock on a descriptor this function owns; no memory is involved.
    let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0;
    if !locked {
        anyhow::bail!(
            "another keyplane process uses {} (a running node, or keyplane gc); its token and database are used by one process at a time",
            dir.display()
        );
    }
    Ok(DataDirLock(file))
}

/// Create the data dir (0700) if missing.
pub fn prepare_data_dir(dir: &Path) -> anyhow::Result<()> {
    if !dir.exists() {
        std::fs::create_dir_all(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Bring up everything but the listener.
pub async fn start(config: Config, hsm: Hsm, loaded: LoadedPolicies) -> anyhow::Result<AppState> {
    let busy_wait = Duration::from_millis(config.database.busy_timeout_ms);
    let db = Db::open_with(&config.database_url(), busy_wait).await?;
    let copies = if config.hsm.embedded_softhsm {
        config.envelope_cache.max_entries
    } else {
        0
    };
    let keyring = Arc::new(
        Keyring::new(
            Arc::new(hsm),
            db.clone(),
            config.envelope_cache.max_entries,
            Duration::from_secs(config.envelope_cache.ttl_seconds),
        )
        .with_session_copies(copies),
    );
    let tokens = TokenHasher::load_or_create(&db, &keyring).await?;
    let plugins = Arc::new(PluginRuntime::new(
        config.plugins.clone(),
        config.data_dir.join("plugins"),
        db.clone(),
    )?);
    // On PostgreSQL this node's records go to audit chains of its own (see audit::chains).
    crate::audit::chains::take_for_transactions(&db).await?;
    let audit = crate::audit::group_commit::GroupCommit::start(db.clone()).await?;
    let rows = crate::store::cache::RowCache::new(db.clone(), &config.cache);
    let max_decisions = config.cache.max_decisions;
    let quotas = Arc::new(crate::quotas::Quotas::new(&config.quotas));
    // The audit key is found (or made, on a new token) once, here: later users take its
    // handle and fingerprint from the checkpointer, never making a key of their own.
    let checkpointer = Arc::new(crate::audit::checkpoint::Checkpointer::new(
        keyring.hsm().clone(),
        &config.data_dir,
    )?);
    let state = AppState {
        config,
        rows,
        db,
        keyring,
        authz: Authz::new(loaded, max_decisions),
        tokens,
        sigv4: Default::default(),
        plugins,
        clock: Arc::new(crate::clock::Clock::system()),
        usage: Arc::new(crate::usage::Usage::default()),
        audit,
        checkpointer,
        quotas,
        password_work: Arc::new(tokio::sync::Semaphore::new(
            crate::state::PASSWORD_WORK_SLOTS,
        )),
        readiness: Default::default(),
    };
    ensure_default_tenant(&state).await?;
    let imported = state.plugins.adopt_local_files().await?;
    if imported > 0 {
        tracing::info!(
            imported,
            "plugin components of the data directory imported into the database"
        );
    }
    crate::ops::plugin_config::seal_stored(&state.keyring, &state.db).await?;
    let keyring = state.keyring.clone();
    let every = Duration::from_secs((state.config.envelope_cache.ttl_seconds / 4).clamp(1, 60));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            keyring.sweep_cache();
        }
    });
    let (usage, db) = (state.usage.clone(), state.db.clone());
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            if let Err(e) = usage.flush(&db).await {
                tracing::warn!(error = %e, "could not write usage counters; kept for the next try");
            }
        }
    });
    Ok(state)
}

async fn ensure_default_tenant(state: &AppState) -> anyhow::Result<()> {
    let mut tx = state.db.begin().await?;
    crate::store::meta::serialize_first_start(&mut tx).await?;
    if tenants::exists(&mut tx, DEFAULT_TENANT).await? {
        return Ok(());
    }
    let (kek_wrapped, made) = state.keyring.create_tenant_kek(DEFAULT_TENANT).await?;
    let account_id = tenants::account_id_from(&state.keyring.random(8).await?);
    tenants::insert(
        &mut tx,
        &tenants::TenantRow {
            id: DEFAULT_TENANT.into(),
            created_at: now_rfc3339(),
            kek_wrapped,
            account_id,
        },
    )
    .await?;
    let (token, hash) = state.tokens.issue()?;
    let admin = PrincipalRow {
        id: format!("p-{}", uuid::Uuid::new_v4().simple()),
        tenant_id: DEFAULT_TENANT.into(),
        name: "admin".into(),
        kind: "user".into(),
        role: "admin".into(),
        operator: true,
        created_at: now_rfc3339(),
    };
    principals::insert(&mut tx, &admin, &hash).await?;
    audit::append(
        &mut tx,
        &AuditEvent {
            request_id: "bootstrap".into(),
            principal: "system".into(),
            tenant: DEFAULT_TENANT.into(),
            action: "Bootstrap".into(),
            resource: format!("Keyplane::User::{:?}", admin.id),
            decision: "not-evaluated",
            policies: vec![],
            outcome: "ok".into(),
            source: "local".into(),
            policy_hash: None,
            trace_id: None,
            user_agent: None,
            front: None,
            access_key_id: None,
        },
    )
    .await?;
    let path = state.config.data_dir.join("admin.token");
    let tmp = state.config.data_dir.join("admin.token.new");
    let _ = std::fs::remove_file(&tmp);
    write_secret_file(&tmp, token.expose_secret().as_bytes())?;
    // In place before the commit: if the commit fails, the next start bootstraps again and
    // replaces the file; the token is never valid without being on disk.
    std::fs::rename(&tmp, &path)?;
    tx.commit().await?;
    state.keyring.keep_tenant_kek(made);
    use std::io::IsTerminal;
    if std::io::stdout().is_terminal() {
        println!(
            "keyplane: bootstrap admin token (shown once; also in {}): {}",
            path.display(),
            token.expose_secret()
        );
    } else {
        println!(
            "keyplane: bootstrap admin token written to {} (printed only to a terminal)",
            path.display()
        );
    }
    Ok(())
}
