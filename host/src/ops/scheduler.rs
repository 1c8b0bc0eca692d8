//! The lifecycle scheduler: a background pass every `lifecycle.scheduler_interval_seconds`
//! (and on demand through the operator's `run-scheduler` operation) that
//! 1. writes pending usage counters, so schedules see current counts;
//! 2. destroys keys whose deletion window has passed (see [`key_deletion::destroy`]), and
//!    finishes destructions and material expiries that a crash interrupted;
//! 3. rotates the keys whose automatic rotation period (`enable-key-rotation`) has come,
//!    then asks each enabled key's rotation-schedule plugin for its decision and rotates the
//!    keys that are due (at most once per [`MIN_SCHEDULED_ROTATION_SECS`] each), and rotates
//!    the encryption keys whose primary version has sealed as many messages as random nonces
//!    safely allow ([`crate::crypto::RANDOM_NONCE_ROTATE_AT`]);
//! 4. every `lifecycle.gc_interval_seconds` (claimed in the database: once per interval per
//!    token for HSM objects, since each node has its own token; once across nodes for blobs
//!    and plugin components), collects unreferenced material (see [`super::gc`]);
//! 5. every `audit.archive_interval_seconds` (claimed the same way), archives the sealed
//!    audit segments and prunes the archived records the retention limits let go (see
//!    [`crate::audit::archive`]).
//!
//! Before each pass, whether or not it gets the lease, a node drops the HSM session objects
//! of key versions that no row names any more (`Keyring::sweep_session_objects`: the backstop
//! of cross-node invalidation for versions shredded on another node).
//!
//! Each kind of due work is taken a page at a time, keys the scheduler never failed on first
//! and then by oldest failure (`keys::note_scheduler_failure`): keys that fail on every pass (a
//! tenant's broken storage plugin) cannot fill every page and starve every other tenant's.
//!
//! One node runs a pass at a time (a database lease, held for the pass only, so an operator's
//! `run-scheduler` waits for a background pass instead of being turned away); a rotation is
//! also a compare-and-swap on the key's primary version, so a due rotation happens once even
//! if two passes race.
//! Plugins are called a few at a time, each within its own deadline: a failing or slow plugin
//! delays only its own keys; its error is kept on the schedule, logged, counted, and audited
//! when it changes. Rotations and destructions are audited as the principal
//! `keyplane:scheduler`, with the schedule plugin's SHA-256 in the record.

use crate::model::KeyState;
use std::time::{Duration, Instant};

use futures_util::stream::{self, StreamExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tracing::Instrument;

use super::delete_imported_key_material as material_claim;
use super::rotation_ops::key_info;
use super::{audit_alone, key_deletion, plugin_config, versions, OpContext, Operation, WriteScope};
use crate::audit::AuditEvent;
use crate::authz::ResourceRef;
use crate::error::{Error, Result};
use crate::state::AppState;
use crate::store::{imports, keys, leases, plugins};
use crate::telemetry::metrics::metrics;

const LEASE: &str = "lifecycle-scheduler";
/// Claimed for `lifecycle.gc_interval_seconds` by the pass that collects blobs and plugin
/// components (what every node shares).
const GC_LEASE: &str = "garbage-collection";
/// Followed by the token's identity: claimed for `lifecycle.gc_interval_seconds` by the pass
/// that collects that token's objects. Per token, not per cluster: a node sees only its own
/// token, and an object left in it (a destruction's notice missed while the node was down, an
/// import token expired by another node) is found by no other node's collection. The identity
/// is the fingerprint of the token's audit signing key, made in each token and never copied
/// (a token's serial number is no identity: tpm2-pkcs11 reports zeros for every token), so
/// nodes that share one network HSM share its claim, and no two tokens do.
const GC_TOKEN_LEASE: &str = "garbage-collection:token:";
/// Claimed for `audit.archive_interval_seconds` by the pass that archives the audit log.
const ARCHIVE_LEASE: &str = "audit-archive";
const SYSTEM_PRINCIPAL: &str = "keyplane:scheduler";

/// One key's check: its id, the rotation (if any) or the error, and the failing stage.
type CheckOutcome = (
    String,
    std::result::Result<Option<Rotated>, Error>,
    &'static str,
);

/// What a pass did.
#[derive(Debug, Default, Serialize, JsonSchema)]
pub struct PassReport {
    /// Another node holds the lease: this pass did nothing.
    pub skipped: bool,
    pub now: i64,
    pub checked: usize,
    pub rotated: Vec<Rotated>,
    pub destroyed: Vec<String>,
    /// External keys whose imported material this pass deleted: it expired, or a
    /// `delete-imported-key-material` was interrupted.
    pub expired: Vec<String>,
    pub failed: Vec<Failed>,
    /// The garbage collection this pass ran, if one was due.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub collected: Option<super::gc::GcReport>,
    /// The audit archiving (and pruning) this pass ran, if one was due.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audit_archive: Option<crate::audit::archive::ArchiveReport>,
    /// Key versions whose HSM objects this node dropped because no row names them any more
    /// (destroyed, or imported material deleted, on another node; see
    /// `Keyring::sweep_session_objects`). Run on every node, whoever holds the lease.
    #[serde(skip_serializing_if = "is_zero")]
    pub forgotten_versions: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct Rotated {
    pub key_id: String,
    pub version: i64,
    /// The schedule plugin that decided (a plugin schedule).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plugin_sha256: Option<String>,
    /// The period that came (automatic rotation by period).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub period_days: Option<i64>,
    /// The messages the previous primary version had sealed (a rotation before random nonces
    /// run out, see `crypto::RANDOM_NONCE_ROTATE_AT`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sealed: Option<i64>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct Failed {
    pub key_id: String,
    pub stage: &'static str,
    pub code: &'static str,
    pub message: String,
}

fn system_event(tenant: &str, action: &str, resource: String) -> AuditEvent {
    AuditEvent::system("sched", SYSTEM_PRINCIPAL, tenant, action, resource)
}

fn key_uid(key_id: &str) -> String {
    format!("Keyplane::Key::{key_id:?}")
}

/// Commit what `scope` holds with `ev` if `result` is a success, else roll it back; either
/// way the outcome is audited. Returns the outcome.
async fn settle<T>(
    state: &AppState,
    scope: WriteScope,
    mut ev: AuditEvent,
    result: Result<T>,
) -> Result<T> {
    match result {
        Ok(v) => match scope.commit_with(state, &ev).await {
            Ok(()) => Ok(v),
            Err(e) => {
                ev.outcome = e.code().into();
                let _ = audit_alone(state, &ev).await;
                Err(e)
            }
        },
        Err(e) => {
            scope.rollback(state).await;
            ev.outcome = e.code().into();
            let _ = audit_alone(state, &ev).await;
            Err(e)
        }
    }
}

/// One pass. `holder` identifies this node for the lease.
pub async fn run_pass(state: &AppState, holder: &str) -> Result<PassReport> {
    let span = tracing::info_span!(
        "scheduler.pass",
        keyplane.scheduler.checked = tracing::field::Empty,
        keyplane.scheduler.rotated = tracing::field::Empty,
        keyplane.scheduler.destroyed = tracing::field::Empty,
        keyplane.scheduler.failed = tracing::field::Empty,
    );
    let start = Instant::now();
    // This node's own HSM, so not under the lease: every node sweeps its session objects.
    let forgotten = state.keyring.sweep_session_objects().await.unwrap_or_else(|e| {
        tracing::warn!(error = %e, "scheduler: session objects of key versions not swept; next pass");
        0
    });
    let mut report = pass(state, holder).instrument(span.clone()).await;
    if !matches!(&report, Ok(r) if r.skipped) {
        release_lease(state, holder).await;
    }
    if let Ok(r) = &mut report {
        r.forgotten_versions = forgotten;
    }
    if let Ok(r) = &report {
        span.record("keyplane.scheduler.checked", r.checked as u64);
        span.record("keyplane.scheduler.rotated", r.rotated.len() as u64);
        span.record("keyplane.scheduler.destroyed", r.destroyed.len() as u64);
        span.record("keyplane.scheduler.failed", r.failed.len() as u64);
    }
    metrics().scheduler_pass(start.elapsed().as_secs_f64());
    report
}

async fn pass(state: &AppState, holder: &str) -> Result<PassReport> {
    let now = state.clock.now();
    let mut report = PassReport {
        now,
        ..PassReport::default()
    };
    let lease_secs = (state.config.lifecycle.scheduler_interval_seconds as i64).max(60) * 2;
    {
        let mut tx = state.db.begin().await?;
        if !leases::acquire(&mut tx, LEASE, holder, now, now + lease_secs).await? {
            report.skipped = true;
            return Ok(report);
        }
        tx.commit().await?;
    }
    if let Err(e) = state.usage.flush(&state.db).await {
        tracing::warn!(error = %e, "scheduler: usage counters not written; decisions use stored counts");
    }

    for mut key in keys::due_for_deletion(&state.db, now, 100).await? {
        if key.state == KeyState::PendingDeletion {
            let begin = system_event(&key.tenant_id, "BeginDestroyKey", key_uid(&key.id));
            if let Err(e) = key_deletion::begin_destroy(state, &key, &begin).await {
                // Cancelled meanwhile, or the database failed: nothing was shredded.
                tracing::info!(key = %key.id, error = %e, "key destruction not begun");
                note_failure(state, &key.id, now).await;
                continue;
            }
            key.state = KeyState::Destroying;
        }
        let ev = system_event(&key.tenant_id, "DestroyKey", key_uid(&key.id));
        let mut scope = WriteScope::new();
        let result = key_deletion::destroy(state, &mut scope, &key).await;
        let result = settle(state, scope, ev, result).await;
        match result {
            Ok(()) => {
                metrics().scheduler_action("destroy", "ok");
                tracing::info!(key = %key.id, "key destroyed after its deletion window");
                report.destroyed.push(key.id.clone());
            }
            Err(e) => {
                metrics().scheduler_action("destroy", e.code());
                tracing::warn!(key = %key.id, error = %e, "key destruction failed; retried next pass");
                note_failure(state, &key.id, now).await;
                report.failed.push(Failed {
                    key_id: key.id.clone(),
                    stage: "destroy",
                    code: e.code(),
                    message: e.to_string(),
                });
            }
        }
    }

    expire_imports(state, now, &mut report).await?;
    rotate_by_period(state, now, &mut report).await?;
    rotate_worn_out(state, now, &mut report).await?;

    let schedules = plugins::schedules_of_enabled_keys(&state.db).await?;
    report.checked = schedules.len();
    let concurrency = state.config.lifecycle.scheduler_concurrency.max(1);
    let outcomes: Vec<CheckOutcome> = stream::iter(schedules)
        .map(|s| async move {
            let key_id = s.key_id.clone();
            let (result, stage) = check_one(state, &s, now).await;
            (key_id, result, stage)
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    for (key_id, result, stage) in outcomes {
        match result {
            Ok(Some(r)) => report.rotated.push(r),
            Ok(None) => {}
            Err(e) => report.failed.push(Failed {
                key_id,
                stage,
                code: e.code(),
                message: e.to_string(),
            }),
        }
    }
    report.rotated.sort_by(|a, b| a.key_id.cmp(&b.key_id));
    report.failed.sort_by(|a, b| a.key_id.cmp(&b.key_id));
    report.collected = collect_if_due(state).await;
    report.audit_archive = archive_if_due(state, now).await;
    Ok(report)
}

/// Rotate the keys whose automatic rotation period has come, each with its next rotation moved
/// one period on in the same transaction (a compare-and-set: a pass that raced with another,
/// or a rotation turned off meanwhile, rotates nothing).
async fn rotate_by_period(state: &AppState, now: i64, report: &mut PassReport) -> Result<()> {
    for key in keys::due_for_rotation(&state.db, now, 100).await? {
        let (Some(days), Some(due)) = (key.rotation_period_days, key.next_rotation_at) else {
            continue;
        };
        let ev = system_event(
            &key.tenant_id,
            "RotateKey",
            format!("{} period-days:{days}", key_uid(&key.id)),
        );
        let mut scope = WriteScope::new();
        let rotated = async {
            let version =
                versions::rotate(state, &mut scope, &key, keys::ROTATION_AUTOMATIC).await?;
            let conn = scope.conn(state).await?;
            if !keys::advance_rotation(conn, &key.id, due, now + days * 86_400).await? {
                return Err(Error::InvalidState(format!(
                    "the automatic rotation of key {} changed while it was rotated",
                    key.id
                )));
            }
            Ok(version)
        }
        .await;
        let rotated = settle(state, scope, ev, rotated).await;
        if let Some(version) =
            report_rotation(state, now, report, &key.id, rotated, Some(days), None).await
        {
            tracing::info!(key = %key.id, version, days, "key rotated by its period");
        }
    }
    Ok(())
}

/// Remember that this pass failed on a key (`keys::note_scheduler_failure`), so the next
/// passes take the keys they never failed on first.
async fn note_failure(state: &AppState, key_id: &str, now: i64) {
    let noted = async {
        let mut tx = state.db.begin_bookkeeping().await?;
        keys::note_scheduler_failure(&mut tx, key_id, now).await?;
        tx.commit().await
    }
    .await;
    if let Err(e) = noted {
        tracing::warn!(key = %key_id, error = %e, "scheduler: failure not noted");
    }
}

/// Count a built-in rotation's outcome and list it in the report (noting a failure); the
/// version it made, if it did.
async fn report_rotation(
    state: &AppState,
    now: i64,
    report: &mut PassReport,
    key_id: &str,
    rotated: Result<i64>,
    period_days: Option<i64>,
    sealed: Option<i64>,
) -> Option<i64> {
    metrics().scheduler_action(
        "rotate",
        rotated.as_ref().map_or_else(|e| e.code(), |_| "ok"),
    );
    match rotated {
        Ok(version) => {
            report.rotated.push(Rotated {
                key_id: key_id.to_string(),
                version,
                plugin_sha256: None,
                period_days,
                sealed,
            });
            Some(version)
        }
        Err(e) => {
            note_failure(state, key_id, now).await;
            report.failed.push(Failed {
                key_id: key_id.to_string(),
                stage: "rotate",
                code: e.code(),
                message: e.to_string(),
            });
            None
        }
    }
}

/// Rotate the encryption keys whose primary version has sealed
/// [`crate::crypto::RANDOM_NONCE_ROTATE_AT`] messages, whatever their schedule: past
/// [`crate::crypto::RANDOM_NONCE_SEAL_LIMIT`] the version would seal no more, and the key's
/// users would see their encryptions refused. Keys of imported material cannot be renewed
/// here; they reach the limit and are refused there, with a message that says to rotate.
/// Each rotation is the compare-and-swap on the primary version that every rotation is, so a
/// rotation made meanwhile (by hand or another pass) makes this one fail, not repeat.
async fn rotate_worn_out(state: &AppState, now: i64, report: &mut PassReport) -> Result<()> {
    const _: () = assert!(crate::crypto::RANDOM_NONCE_ROTATE_AT == keys::WORN_OUT_SEALS);
    for key in keys::worn_out(&state.db, 100).await? {
        let Some(sealed) = keys::version(&state.db, &key.id, key.primary_version)
            .await?
            .map(|v| v.encryptions)
        else {
            continue;
        };
        let ev = system_event(
            &key.tenant_id,
            "RotateKey",
            format!("{} sealed:{sealed}", key_uid(&key.id)),
        );
        let mut scope = WriteScope::new();
        let rotated = versions::rotate(state, &mut scope, &key, keys::ROTATION_AUTOMATIC).await;
        let rotated = settle(state, scope, ev, rotated).await;
        if let Some(version) =
            report_rotation(state, now, report, &key.id, rotated, None, Some(sealed)).await
        {
            tracing::warn!(key = %key.id, version, sealed, "key rotated: its primary version sealed as many messages as random nonces safely allow");
        }
    }
    Ok(())
}

/// Run the parts of a garbage collection that did not run in the last
/// `lifecycle.gc_interval_seconds`: this token's objects (per token) and the shared blobs and
/// components (on any node). Each interval is claimed as a lease nobody renews, so it is free
/// again only once it has passed.
async fn collect_if_due(state: &AppState) -> Option<super::gc::GcReport> {
    let lifecycle = &state.config.lifecycle;
    if lifecycle.gc_interval_seconds == 0 {
        return None;
    }
    let claim = |lease: String| async move {
        // From now, not the pass's start: a pass longer than the interval would take an
        // interval already over, which another node would take again at once.
        let now = state.clock.now();
        let until = now + lifecycle.gc_interval_seconds as i64;
        let mut tx = state.db.begin().await?;
        let holder = format!("gc-{}", uuid::Uuid::new_v4().simple());
        let claimed = leases::acquire(&mut tx, &lease, &holder, now, until).await?;
        tx.commit().await?;
        Ok::<_, Error>(claimed)
    };
    // Named by the audit key the checkpointer found at start: finding it again here could
    // make a new one, if the token lost it, which nobody published.
    let token_lease = format!("{GC_TOKEN_LEASE}{}", state.checkpointer.fingerprint());
    let token = matches!(claim(token_lease).await, Ok(true));
    let parts = super::gc::Parts {
        token,
        shared: matches!(claim(GC_LEASE.to_string()).await, Ok(true)),
    };
    if !parts.token && !parts.shared {
        return None;
    }
    let grace = Duration::from_secs(lifecycle.gc_grace_seconds);
    match super::gc::collect(state, grace, true, parts, &()).await {
        Ok(r) => {
            metrics().scheduler_action("gc", "ok");
            Some(r)
        }
        Err(e) => {
            metrics().scheduler_action("gc", e.code());
            tracing::warn!(error = %e, "garbage collection failed; retried next interval");
            None
        }
    }
}

/// Archive the sealed audit segments and prune under retention if no node did in the last
/// `audit.archive_interval_seconds` (a lease nobody renews, as for garbage collection).
async fn archive_if_due(
    state: &AppState,
    now: i64,
) -> Option<crate::audit::archive::ArchiveReport> {
    let every = state.config.audit.archive_interval_seconds;
    if every == 0 {
        return None;
    }
    let claimed = async {
        let mut tx = state.db.begin().await?;
        let holder = format!("archive-{}", uuid::Uuid::new_v4().simple());
        // From now, not the pass's start (as for garbage collection).
        let from = state.clock.now();
        let claimed =
            leases::acquire(&mut tx, ARCHIVE_LEASE, &holder, from, from + every as i64).await?;
        tx.commit().await?;
        Ok::<_, Error>(claimed)
    }
    .await;
    if !matches!(claimed, Ok(true)) {
        return None;
    }
    let dir = state.config.audit_archive_dir();
    match crate::audit::archive::run(&state.db, &state.config.audit, &dir, now, false).await {
        Ok(r) => {
            metrics().scheduler_action("audit-archive", "ok");
            Some(r)
        }
        Err(e) => {
            metrics().scheduler_action("audit-archive", e.code());
            tracing::warn!(error = %e, "audit archiving failed; retried next interval");
            None
        }
    }
}

/// Destroy the wrapping keys of import tokens past their expiry, and delete imported material
/// past its `valid_to` (the key returns to pending-import until the same material comes back).
async fn expire_imports(state: &AppState, now: i64, report: &mut PassReport) -> Result<()> {
    for t in imports::expired_tokens(&state.db, now, 100).await? {
        // The row goes first, with its record: the wrapping key then names nothing, and if it
        // cannot be destroyed here (an error, or it lives in the token of the node that issued
        // the token), garbage collection of that token removes it.
        let removed = async {
            let mut tx = state.db.begin().await?;
            if !imports::delete_token(&mut tx, &t.id).await? {
                return Ok(false);
            }
            let resource = format!("import-token:{}", t.id);
            let ev = system_event(&t.tenant_id, "ExpireImportToken", resource);
            crate::audit::append(&mut tx, &ev).await?;
            tx.commit().await?;
            Ok::<_, Error>(true)
        }
        .await;
        match removed {
            Ok(true) => {}
            // Used or expired by another pass meanwhile.
            Ok(false) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "expired import token not removed; retried next pass");
                continue;
            }
        }
        if let Err(e) = state.keyring.discard_import_key(t.hsm_object_id).await {
            tracing::warn!(error = %e, "expired import wrapping key not destroyed; garbage collection removes it");
        }
    }
    for key_id in imports::expired_material(&state.db, now, 100).await? {
        let Some(key) = keys::get(&state.db, &key_id).await? else {
            continue;
        };
        // Committed (and audited) before the material is deleted, as a destruction is: a crash
        // in between leaves an expiring key, finished by the next pass, never a usable key
        // whose material is gone.
        // One deletion of a key's material at a time (`delete_imported_key_material::claim`):
        // one a request is running is left to it.
        let holder = format!("expiry-{}", uuid::Uuid::new_v4().simple());
        let begun = async {
            let mut tx = state.db.begin().await?;
            // Claimed from the time it is taken, not the pass's start: a pass slowed past a
            // claim's length would otherwise take one that had already expired, and a
            // deletion request could join an expiry still shredding.
            let claimed_at = state.clock.now();
            if !material_claim::claim(&mut tx, &key.id, &holder, claimed_at).await? {
                return Ok(false);
            }
            if !imports::begin_expiry(&mut tx, &key.id, now).await? {
                return Ok(false);
            }
            if key.state != KeyState::Expiring {
                let ev = system_event(&key.tenant_id, "BeginExpireKeyMaterial", key_uid(&key.id));
                crate::audit::append(&mut tx, &ev).await?;
            }
            tx.commit().await?;
            Ok::<_, Error>(true)
        }
        .await;
        match begun {
            Ok(true) => {}
            Ok(false) => continue,
            Err(e) => {
                tracing::warn!(key = %key.id, error = %e, "expiry of imported material not begun");
                note_failure(state, &key.id, now).await;
                continue;
            }
        }
        // An expiring key whose material has not expired is a `delete-imported-key-material`
        // that the HSM or a crash interrupted: finished and recorded as that deletion, not as
        // an expiry nobody asked for.
        let expires = match imports::material(&state.db, &key.id).await {
            Ok(m) => m.and_then(|m| m.material_expires_at),
            Err(e) => {
                tracing::warn!(key = %key.id, error = %e, "imported material not deleted; retried next pass");
                note_failure(state, &key.id, now).await;
                continue;
            }
        };
        let requested = key.state == KeyState::Expiring && expires.is_none_or(|t| t > now);
        let (action, reason) = if requested {
            ("DeleteImportedKeyMaterial", "imported material deleted")
        } else {
            ("ExpireKeyMaterial", "imported material expired")
        };
        let ev = system_event(&key.tenant_id, action, key_uid(&key.id));
        let mut scope = WriteScope::new();
        let result = async {
            if let Err(e) = key_deletion::shred_material(state, &key).await {
                // Before the transaction opens (see `delete_imported_key_material::release_now`).
                material_claim::release_now(state, &key.id, &holder).await;
                return Err(e);
            }
            let conn = scope.conn(state).await?;
            if !imports::clear_material(conn, &key.id, &state.clock.now_rfc3339(), reason).await? {
                return Err(Error::InvalidState(format!(
                    "key {} stopped expiring while its material was deleted",
                    key.id
                )));
            }
            material_claim::release(conn, &key.id, &holder).await
        }
        .await;
        match settle(state, scope, ev, result).await {
            Ok(()) => {
                metrics().scheduler_action("expire", "ok");
                tracing::info!(key = %key.id, reason, "imported key material deleted");
                report.expired.push(key.id.clone());
            }
            Err(e) => {
                metrics().scheduler_action("expire", e.code());
                note_failure(state, &key.id, now).await;
                report.failed.push(Failed {
                    key_id: key.id.clone(),
                    stage: "expire",
                    code: e.code(),
                    message: e.to_string(),
                });
            }
        }
    }
    Ok(())
}

/// The shortest time between two rotations a rotation-schedule plugin can cause (Vault
/// Transit's shortest `auto_rotate_period` too).
pub const MIN_SCHEDULED_ROTATION_SECS: i64 = 3600;

/// Ask one key's schedule and rotate it if due. Returns the rotation, if any, and on error
/// the stage that failed.
async fn check_one(
    state: &AppState,
    s: &plugins::ScheduleRow,
    now: i64,
) -> (std::result::Result<Option<Rotated>, Error>, &'static str) {
    let decided = async {
        let key = keys::get(&state.db, &s.key_id)
            .await?
            .ok_or(Error::Internal)?;
        let plugin = plugins::get(&state.db, &s.tenant_id, &s.plugin_name)
            .await?
            .ok_or(Error::Internal)?;
        let config =
            plugin_config::open(&state.keyring, &s.tenant_id, &s.plugin_name, &s.config).await?;
        let info = key_info(state, &key).await?;
        let next = state
            .plugins
            .next_rotation(&plugin.tenant_id, &plugin.sha256, &config, &info, now)
            .await?;
        let primary_made = info.last_rotation.unwrap_or(info.created_at);
        Ok::<_, Error>((key, plugin, next, primary_made))
    }
    .await;
    let error = decided.as_ref().err().map(|e| e.to_string());
    let next = decided.as_ref().ok().and_then(|(_, _, n, _)| *n);
    let outcome = decided.as_ref().map_or_else(|e| e.code(), |_| "ok");
    metrics().scheduler_action("check", outcome);
    let recorded = async {
        let mut tx = state.db.begin().await?;
        plugins::record_schedule_check(&mut tx, s, now, next, error.as_deref()).await?;
        tx.commit().await?;
        Ok::<_, Error>(())
    }
    .await;
    if let Err(e) = recorded {
        tracing::warn!(key = %s.key_id, error = %e, "could not record the schedule check");
    }
    let (key, plugin, next, primary_made) = match decided {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(key = %s.key_id, plugin = %s.plugin_name, error = %e, "rotation schedule failed; this key is not rotated this pass");
            if s.last_error.as_deref() != error.as_deref() {
                let mut ev = system_event(
                    &s.tenant_id,
                    "PreviewRotation",
                    format!("{} plugin:{}", key_uid(&s.key_id), s.plugin_name),
                );
                ev.outcome = e.code().into();
                let _ = audit_alone(state, &ev).await;
            }
            return (Err(e), "schedule");
        }
    };
    if next.is_none_or(|t| t > now) {
        return (Ok(None), "schedule");
    }
    // A schedule is the tenant's code: one that is always due (a bug, or a period of a
    // second) would otherwise rotate the key every pass, each version a new object in the
    // HSM token every tenant shares. Its key rotates at most once per this interval.
    if now.saturating_sub(primary_made) < MIN_SCHEDULED_ROTATION_SECS {
        return (Ok(None), "schedule");
    }
    let ev = system_event(
        &key.tenant_id,
        "RotateKey",
        format!("{} plugin-sha256:{}", key_uid(&key.id), plugin.sha256),
    );
    let mut scope = WriteScope::new();
    let rotated = versions::rotate(state, &mut scope, &key, keys::ROTATION_AUTOMATIC).await;
    // The decision was made outside any transaction, by the schedule and plugin read when
    // this pass began. A tenant that replaced either meanwhile (a longer period, another
    // plugin) did not ask for this rotation: it is undone, unaudited (nothing changed), and
    // the schedule that now stands decides on the next pass.
    let rotated = match rotated {
        Ok(version) => match still_decides(state, &mut scope, s, &plugin).await {
            Ok(true) => Ok(version),
            Ok(false) => {
                scope.rollback(state).await;
                tracing::info!(key = %key.id, "rotation schedule replaced while it was asked; the new one decides on the next pass");
                return (Ok(None), "schedule");
            }
            Err(e) => Err(e),
        },
        Err(e) => Err(e),
    };
    let rotated = settle(state, scope, ev, rotated).await;
    metrics().scheduler_action(
        "rotate",
        rotated.as_ref().map_or_else(|e| e.code(), |_| "ok"),
    );
    match rotated {
        Ok(version) => {
            tracing::info!(key = %key.id, version, plugin = %plugin.sha256, "key rotated by its schedule");
            (
                Ok(Some(Rotated {
                    key_id: key.id.clone(),
                    version,
                    plugin_sha256: Some(plugin.sha256),
                    period_days: None,
                    sealed: None,
                })),
                "rotate",
            )
        }
        Err(e) => (Err(e), "rotate"),
    }
}

/// Whether the schedule `s` and its plugin still stand in `scope`'s transaction, held there
/// until it commits.
async fn still_decides(
    state: &AppState,
    scope: &mut WriteScope,
    s: &plugins::ScheduleRow,
    plugin: &plugins::PluginRow,
) -> Result<bool> {
    let conn = scope.conn(state).await?;
    Ok(plugins::hold_schedule(conn, s).await? && plugins::hold(conn, plugin).await?)
}

/// Give the pass lease up (a pass holds it only while it runs).
async fn release_lease(state: &AppState, holder: &str) {
    let released = async {
        let mut tx = state.db.begin().await?;
        leases::release(&mut tx, LEASE, holder).await?;
        tx.commit().await?;
        Ok::<_, Error>(())
    }
    .await;
    if let Err(e) = released {
        tracing::warn!(error = %e, "could not release the scheduler lease; it expires on its own");
    }
}

/// How long `run-scheduler` waits for a pass that holds the lease (another node's, or this
/// node's background pass) before it answers `skipped`.
const RUN_WAIT: Duration = Duration::from_secs(30);

/// Start the background passes (unless the interval is 0).
pub fn spawn(state: std::sync::Arc<AppState>) {
    let every = state.config.lifecycle.scheduler_interval_seconds;
    if every == 0 {
        return;
    }
    let holder = format!("node-{}", uuid::Uuid::new_v4().simple());
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(every));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match run_pass(&state, &holder).await {
                Ok(r) if !r.failed.is_empty() => {
                    tracing::warn!(
                        failed = r.failed.len(),
                        rotated = r.rotated.len(),
                        "scheduler pass had failures"
                    )
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "scheduler pass failed"),
            }
        }
    });
}

/// `run-scheduler`: run a pass now and return its report (operator only). Cedar:
/// `RunScheduler` on the caller's tenant.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunScheduler {}

impl Operation for RunScheduler {
    const NAME: &'static str = "run-scheduler";
    const ACTION: &'static str = "RunScheduler";
    type Output = PassReport;

    async fn resolve(&self, ctx: &OpContext<'_>) -> Result<ResourceRef> {
        Ok(ResourceRef::Tenant(ctx.principal.tenant_id.clone()))
    }

    async fn execute(
        self,
        ctx: &OpContext<'_>,
        _r: ResourceRef,
        _s: &mut WriteScope,
    ) -> Result<Self::Output> {
        // The same lease as background passes, held by this request only for its pass; a
        // pass running elsewhere is waited for, then this one runs.
        let holder = format!("request-{}", ctx.meta.request_id);
        let deadline = Instant::now() + RUN_WAIT;
        loop {
            let report = run_pass(ctx.state, &holder).await?;
            if !report.skipped || Instant::now() >= deadline {
                return Ok(report);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
