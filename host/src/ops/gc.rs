//! Garbage collection: HSM objects, storage-backend blobs and plugin components that no
//! committed row references.
//!
//! A request that creates key material makes it (a token object, a blob) before its
//! transaction commits, and undoes it if the transaction fails. A crash in between leaves the
//! material behind with nothing pointing at it: harmless (each creation attempt has names of
//! its own, so nothing later collides with it) but never used and never shredded. This finds
//! and removes it:
//! - token objects whose `CKA_ID` is keyplane's (`kp:` key versions, `kp-import:` import
//!   wrapping keys, `keyplane-kek:` tenant KEKs on a module whose KEKs are token objects) and
//!   that neither a key version, an import token nor a tenant names;
//! - blobs under `keys/` in every storage backend a tenant has configured that no key version
//!   of that tenant names (in any backend: two of a tenant's plugins may share a namespace,
//!   such as two built on the `kv` capability);
//! - plugin components (`plugin_components` rows) that no plugin row names. Upload and
//!   delete-plugin write and delete them in the transaction of the plugin row, so with one
//!   database writer none is ever left; this is the backstop for a database whose writers do
//!   not serialize (removal re-checks, in its statement, that nothing names the component).
//!
//! A backend's listing is a plugin's to page (its cursors are opaque), so one pass lists at
//! most [`MAX_LIST_PAGES`] pages of a backend, for at most [`MAX_BACKEND_TIME`]: a plugin that
//! answers cursor after cursor (without end, or without names) would otherwise keep the pass,
//! and with it the node's scheduler (destructions, rotations, archiving), running forever.
//! Past either bound the backend is reported as failed for the pass (what was removed stays
//! removed) and the collection goes on with the next backend. A backend with more pages than
//! that (over a million names of full pages) is never listed to its end; its blobs past the
//! bound are not collected.
//!
//! Only what is older than the grace period is removed: the creation time is read from the
//! UUID v7 at the end of the name (`kp:<key>:<v>:<uuid>`, `keys/<key>/<v>/<uuid>`,
//! `kp-import:imp-<uuid>`, `keyplane-kek:<uuid>`), so material of a request still in flight (on this node or
//! another) is never touched. Names from before those UUIDs carry no time and count as old;
//! only a crash of an older release can have left them unreferenced.
//!
//! Every removal is audited (principal `keyplane:gc`, the object id or blob name as the
//! resource): `BeginCollectGarbage` before it, `CollectGarbage` with its outcome after it, so
//! that no removal happens without a record (a crash in between leaves the begun record; the
//! next collection finds the object again) and no record claims a removal that did not
//! happen. A component's row is deleted in the transaction of its record.
//!
//! The scheduler runs a collection every `lifecycle.gc_interval_seconds`: the token part on
//! every token (each node has its own; nodes sharing a network HSM share one claim), the
//! shared part (blobs, components) once across nodes. `keyplane gc` runs one offline, as a
//! dry run unless told to apply it.

use std::collections::HashSet;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use schemars::JsonSchema;
use serde::Serialize;

use super::audit_alone;
use super::storage::version_store;
use crate::audit::AuditEvent;
use crate::error::{Error, Result};
use crate::plugins::{StorageOp, StorageReply};
use crate::state::AppState;
use crate::store::{keys, plugins, tenants};

/// Pages of one backend's listing a collection asks for (of up to 1000 names each, as many
/// as the plugin gives): past it, the backend is reported as failed for that collection.
pub const MAX_LIST_PAGES: usize = 1_000;

/// How long a collection spends on one backend (listing and removing): past it, the backend
/// is reported as failed for that collection. Each call has its own deadline
/// (`plugins.deadline_ms`); this bounds how many a plugin can make the collection wait for.
pub const MAX_BACKEND_TIME: Duration = Duration::from_secs(60);

/// What a collection found and did.
#[derive(Debug, Default, Serialize, JsonSchema)]
pub struct GcReport {
    /// Whether the candidates were removed (false: a dry run).
    pub applied: bool,
    /// Unreferenced token objects older than the grace period (their `CKA_ID`s).
    pub hsm_objects: Vec<String>,
    /// Unreferenced blobs older than the grace period (`<tenant>/<plugin>/<name>`).
    pub blobs: Vec<String>,
    /// Plugin components (their SHA-256) that no plugin names.
    pub components: Vec<String>,
    /// Unreferenced material younger than the grace period, left alone.
    pub young: usize,
    /// Candidates that could not be removed (retried by the next collection).
    pub failed: Vec<String>,
}

/// Something a collection looks at (for a progress display).
pub trait Progress: Send + Sync {
    fn item(&self) {}
}

impl Progress for () {}

/// The creation time (Unix seconds) in the UUID v7 that ends `name` (after its last `:` or
/// `/`, or after `imp-`), if it has one.
pub fn created_at(name: &str) -> Option<u64> {
    let last = name.rsplit([':', '/']).next()?;
    let last = last.strip_prefix("imp-").unwrap_or(last);
    let uuid = uuid::Uuid::try_parse(last).ok()?;
    if uuid.get_version_num() != 7 {
        return None;
    }
    let (secs, _) = uuid.get_timestamp()?.to_unix();
    Some(secs)
}

/// Whether material named `name` is past the grace period at `now` (seconds since the epoch
/// on the wall clock, as the time in the name is: not the service clock, which tests move
/// forward, and against which the material of a request still committing would look old);
/// names without a time count as old.
fn is_old(name: &str, grace: Duration, now: u64) -> bool {
    created_at(name).is_none_or(|t| now.saturating_sub(t) >= grace.as_secs())
}

/// Now on the wall clock, in seconds since the epoch.
fn wall_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn event(tenant: &str, resource: String, outcome: &str) -> AuditEvent {
    AuditEvent {
        outcome: outcome.into(),
        ..AuditEvent::system("gc", "keyplane:gc", tenant, "CollectGarbage", resource)
    }
}

/// What a collection looks at.
#[derive(Debug, Clone, Copy)]
pub struct Parts {
    /// This node's token (every node has its own, so every node collects it).
    pub token: bool,
    /// What all nodes share: blobs in storage backends, plugin components.
    pub shared: bool,
}

impl Parts {
    pub const ALL: Parts = Parts {
        token: true,
        shared: true,
    };
}

/// Find (and with `apply`, remove and audit) unreferenced material older than `grace`.
pub async fn collect(
    state: &AppState,
    grace: Duration,
    apply: bool,
    parts: Parts,
    progress: &dyn Progress,
) -> Result<GcReport> {
    let mut report = GcReport {
        applied: apply,
        ..GcReport::default()
    };
    // Each part whatever became of the other (a token away must not stop the blobs being
    // collected, which no other node does in this interval); the first error is answered.
    let token = if parts.token {
        collect_objects(state, grace, &mut report, progress).await
    } else {
        Ok(())
    };
    let shared = if parts.shared {
        let blobs = collect_blobs(state, grace, &mut report, progress).await;
        let components = collect_components(state, &mut report, progress).await;
        blobs.and(components)
    } else {
        Ok(())
    };
    token.and(shared)?;
    Ok(report)
}

/// Remove one thing, between its two records: `BeginCollectGarbage` (written before anything
/// is removed; no removal without it) and `CollectGarbage` with the outcome. `remove` answers
/// whether it removed something (false: gone meanwhile, recorded as `not-found`).
async fn remove_audited<F>(
    state: &AppState,
    tenant: &str,
    resource: String,
    remove: F,
) -> Result<std::result::Result<bool, Error>>
where
    F: std::future::Future<Output = Result<bool>>,
{
    let begun = AuditEvent {
        action: "BeginCollectGarbage".into(),
        ..event(tenant, resource.clone(), "ok")
    };
    audit_alone(state, &begun).await?;
    let removed = remove.await;
    let outcome = match &removed {
        Ok(true) => "ok",
        Ok(false) => "not-found",
        Err(e) => e.code(),
    };
    audit_alone(state, &event(tenant, resource, outcome)).await?;
    Ok(removed)
}

async fn collect_components(
    state: &AppState,
    report: &mut GcReport,
    progress: &dyn Progress,
) -> Result<()> {
    for sha in plugins::unreferenced_components(&state.db).await? {
        progress.item();
        if report.applied {
            let resource = format!("plugin-component:{sha}");
            // The row and its record in one transaction.
            let removed = async {
                let mut tx = state.db.begin().await?;
                let removed = plugins::delete_component_if_unreferenced(&mut tx, &sha).await?;
                if removed {
                    crate::audit::append(&mut tx, &event("-", resource.clone(), "ok")).await?;
                }
                tx.commit().await?;
                Ok::<_, Error>(removed)
            }
            .await;
            match removed {
                // Named again meanwhile (an upload of the same bytes): kept.
                Ok(false) => continue,
                Ok(true) => {}
                Err(e) => {
                    audit_alone(state, &event("-", resource, e.code())).await?;
                    report.failed.push(format!("plugin-component:{sha}"));
                    continue;
                }
            }
            tracing::info!(sha256 = %sha, "garbage collection deleted an unreferenced plugin component");
        }
        report.components.push(sha);
    }
    Ok(())
}

async fn collect_objects(
    state: &AppState,
    grace: Duration,
    report: &mut GcReport,
    progress: &dyn Progress,
) -> Result<()> {
    let hsm = state.keyring.hsm().clone();
    // Objects first, references second: an object created and committed between the two
    // reads is referenced by then, and one created after the listing is not in it.
    let objects = tokio::task::spawn_blocking(move || hsm.keyplane_objects())
        .await
        .map_err(|_| Error::Internal)??;
    let mut referenced: HashSet<Vec<u8>> = keys::referenced_object_ids(&state.db).await?;
    referenced.extend(
        tenants::stored_keks(&state.db)
            .await?
            .iter()
            .filter_map(|stored| crate::hsm::sealing::kek_token_id(stored))
            .map(<[u8]>::to_vec),
    );
    for (id, handle) in objects {
        progress.item();
        if referenced.contains(&id) {
            continue;
        }
        let name = String::from_utf8_lossy(&id).into_owned();
        if !is_old(&name, grace, wall_now()) {
            report.young += 1;
            continue;
        }
        if report.applied {
            let (hsm, id) = (state.keyring.hsm().clone(), id.clone());
            let destroy = async move {
                tokio::task::spawn_blocking(move || hsm.destroy_if_id(handle, &id))
                    .await
                    .map_err(|_| Error::Internal)?
            };
            let resource = format!("hsm-object:{name}");
            match remove_audited(state, "-", resource, destroy).await? {
                Ok(true) => {}
                // Gone meanwhile: nothing removed.
                Ok(false) => continue,
                Err(_) => {
                    report.failed.push(name);
                    continue;
                }
            }
            tracing::info!(object = %name, "garbage collection destroyed an unreferenced HSM object");
        }
        report.hsm_objects.push(name);
    }
    Ok(())
}

async fn collect_blobs(
    state: &AppState,
    grace: Duration,
    report: &mut GcReport,
    progress: &dyn Progress,
) -> Result<()> {
    for backend in plugins::backend_configs(&state.db).await? {
        let (tenant, plugin_name) = (backend.tenant_id.as_str(), backend.plugin_name.as_str());
        let (plugin, config) = match version_store(state, tenant, plugin_name).await {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(tenant, plugin = plugin_name, error = %e, "garbage collection skipped a storage backend");
                report.failed.push(format!("{tenant}/{plugin_name}"));
                continue;
            }
        };
        let mut cursor = None;
        let (started, mut pages) = (Instant::now(), 0);
        'listing: loop {
            if pages >= MAX_LIST_PAGES || started.elapsed() >= MAX_BACKEND_TIME {
                tracing::warn!(
                    tenant,
                    plugin = plugin_name,
                    pages,
                    seconds = started.elapsed().as_secs(),
                    "garbage collection stopped listing a storage backend that did not finish within its bounds"
                );
                report.failed.push(format!("{tenant}/{plugin_name}"));
                break;
            }
            pages += 1;
            let op = StorageOp::List {
                prefix: "keys/".into(),
                cursor: cursor.clone(),
            };
            let (names, next) = match state.plugins.storage(&plugin, &config, op).await {
                Ok(StorageReply::Page(names, next)) => (names, next),
                Ok(_) => return Err(Error::Internal),
                Err(e) => {
                    tracing::warn!(tenant, plugin = plugin_name, error = %e, "garbage collection could not list a storage backend");
                    report.failed.push(format!("{tenant}/{plugin_name}"));
                    break;
                }
            };
            // Read after the page: a blob committed meanwhile is referenced by now.
            let referenced = keys::referenced_blobs(&state.db, tenant).await?;
            for name in names {
                progress.item();
                // A page of many old names makes as many removals, each a plugin call.
                if started.elapsed() >= MAX_BACKEND_TIME {
                    tracing::warn!(
                        tenant,
                        plugin = plugin_name,
                        pages,
                        "garbage collection stopped removing from a storage backend that did not finish within its time"
                    );
                    report.failed.push(format!("{tenant}/{plugin_name}"));
                    break 'listing;
                }
                if referenced.contains(&name) {
                    continue;
                }
                if !is_old(&name, grace, wall_now()) {
                    report.young += 1;
                    continue;
                }
                let shown = format!("{tenant}/{plugin_name}/{name}");
                if report.applied {
                    let op = StorageOp::Delete { name: name.clone() };
                    let delete = async {
                        match state.plugins.storage(&plugin, &config, op).await? {
                            StorageReply::Deleted(deleted) => Ok(deleted),
                            _ => Err(Error::Internal),
                        }
                    };
                    let resource = format!("blob:{plugin_name}:{name}");
                    match remove_audited(state, tenant, resource, delete).await? {
                        Ok(true) => {}
                        Ok(false) => continue,
                        Err(_) => {
                            report.failed.push(shown);
                            continue;
                        }
                    }
                    tracing::info!(tenant, plugin = plugin_name, blob = %name, "garbage collection deleted an unreferenced blob");
                }
                report.blobs.push(shown);
            }
            match next {
                Some(c) if Some(&c) != cursor.as_ref() => cursor = Some(c),
                _ => break,
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creation_times_come_from_uuid_v7_names() {
        let id = String::from_utf8(crate::hsm::version_object_id("k-1", 3)).unwrap();
        let blob = super::super::storage::new_blob_name("k-1", 3);
        let import = format!("kp-import:imp-{}", uuid::Uuid::now_v7().simple());
        let kek = format!("keyplane-kek:{}", uuid::Uuid::now_v7().simple());
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        for name in [&id, &blob, &import, &kek] {
            let t = created_at(name).unwrap_or_else(|| panic!("{name}"));
            assert!(now.abs_diff(t) <= 2, "{name}");
            assert!(!is_old(name, Duration::from_secs(3600), now), "{name}");
            assert!(is_old(name, Duration::ZERO, now), "{name}");
            // An hour on.
            assert!(
                is_old(name, Duration::from_secs(3600), now + 3601),
                "{name}"
            );
        }
        // Older names and v4 nonces carry no time: they count as old.
        for name in [
            "kp:k-1:3".to_string(),
            "keys/k-1/3".to_string(),
            format!("kp:k-1:3:{}", uuid::Uuid::new_v4().simple()),
        ] {
            assert_eq!(created_at(&name), None, "{name}");
            assert!(is_old(&name, Duration::from_secs(3600), now), "{name}");
        }
    }
}
