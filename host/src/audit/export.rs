//! Reading the audit log out: `keyplane audit export` (a time range) and `keyplane audit
//! search` (by principal, key, action, decision and time), both as JSON lines in one stable,
//! documented schema ([`ExportedRecord`], described in `docs/auditing.md`). Field names follow
//! CloudTrail where one exists. Archived segments are written in the same schema, and a
//! selection that reaches records pruned from the database reads them from there
//! (`archive::select_with_archive`).

use crate::store::{on, Conn, Dialect};
use serde::{Deserialize, Serialize};

use super::AuditRecord;

/// Version of the exported schema (a field is only ever added, never renamed or removed).
pub const SCHEMA_VERSION: u32 = 1;

/// One record as exported.
#[derive(Debug, Serialize, Deserialize)]
pub struct ExportedRecord {
    pub schema_version: u32,
    pub seq: i64,
    pub event_time: String,
    pub request_id: String,
    pub principal: String,
    pub tenant: String,
    pub action: String,
    pub resource: String,
    /// `allow`, `deny`, `system` (the scheduler) or `not-evaluated`.
    pub decision: String,
    /// Determining policy ids.
    pub policies: Vec<String>,
    /// `ok` or the error code.
    pub outcome: String,
    pub source_address: String,
    /// SHA-256 of the policy set that decided (absent before authorization and for system
    /// records).
    pub policy_hash: Option<String>,
    /// W3C trace id (when tracing was on).
    pub trace_id: Option<String>,
    pub user_agent: Option<String>,
    /// The front the request came through (`native`, `aws-kms`); absent for system records
    /// and records written before fronts were recorded.
    pub front: Option<String>,
    /// The access key a SigV4 request was signed with (AWS KMS and STS fronts); absent for
    /// bearer tokens, system records and records written before it was recorded.
    pub access_key_id: Option<String>,
    pub prev_hash: String,
    pub hash: String,
}

impl From<AuditRecord> for ExportedRecord {
    fn from(r: AuditRecord) -> Self {
        ExportedRecord {
            schema_version: SCHEMA_VERSION,
            policies: serde_json::from_str(&r.policies).unwrap_or_default(),
            seq: r.seq,
            event_time: r.time,
            request_id: r.request_id,
            principal: r.principal,
            tenant: r.tenant,
            action: r.action,
            resource: r.resource,
            decision: r.decision,
            outcome: r.outcome,
            source_address: r.source,
            policy_hash: r.policy_hash,
            trace_id: r.trace_id,
            user_agent: r.user_agent,
            front: r.front,
            access_key_id: r.access_key_id,
            prev_hash: r.prev_hash,
            hash: r.hash,
        }
    }
}

impl From<ExportedRecord> for AuditRecord {
    /// The stored record back, as it was hashed (`policies` is written by [`super::chain`] as
    /// compact JSON, which is what serialising the list again gives).
    fn from(r: ExportedRecord) -> Self {
        AuditRecord {
            seq: r.seq,
            time: r.event_time,
            request_id: r.request_id,
            principal: r.principal,
            tenant: r.tenant,
            action: r.action,
            resource: r.resource,
            decision: r.decision,
            policies: serde_json::to_string(&r.policies).unwrap_or_else(|_| "[]".into()),
            outcome: r.outcome,
            source: r.source_address,
            policy_hash: r.policy_hash,
            trace_id: r.trace_id,
            user_agent: r.user_agent,
            front: r.front,
            access_key_id: r.access_key_id,
            prev_hash: r.prev_hash,
            hash: r.hash,
        }
    }
}

/// What to select. Times are RFC 3339 (compared as the log stores them, UTC).
#[derive(Debug, Default, Clone)]
pub struct Filter {
    pub since: Option<String>,
    pub until: Option<String>,
    pub principal: Option<String>,
    /// A key id: records whose resource names it.
    pub key: Option<String>,
    pub action: Option<String>,
    pub decision: Option<String>,
    pub limit: Option<i64>,
}

impl Filter {
    /// Whether `r` matches, as the query of [`select`] decides.
    pub(super) fn matches(&self, r: &ExportedRecord) -> bool {
        let since = self.since.as_deref().map(normalise);
        let until = self.until.as_deref().map(normalise);
        since.is_none_or(|t| r.event_time >= t)
            && until.is_none_or(|t| r.event_time <= t)
            && self.principal.as_ref().is_none_or(|p| &r.principal == p)
            && self
                .key
                .as_ref()
                .is_none_or(|k| r.resource.contains(&format!("\"{}\"", k.replace('"', ""))))
            && self.action.as_ref().is_none_or(|a| &r.action == a)
            && self.decision.as_ref().is_none_or(|d| &r.decision == d)
    }
}

/// Records in the database matching `f`, oldest first.
pub async fn select(pool: impl Into<Conn<'_>>, f: &Filter) -> sqlx::Result<Vec<ExportedRecord>> {
    let pool: Conn<'_> = pool.into();
    // The key is found as an exact substring, as [`Filter::matches`] finds it in archived
    // records: `LIKE` would take a `_` of a key id as a wildcard and, on SQLite only, ignore
    // ASCII case, so one export would apply two rules.
    let find = match pool.dialect() {
        Dialect::Sqlite => "instr",
        Dialect::Postgres => "strpos",
    };
    on!(pool, {
        let since = f.since.as_deref().map(normalise);
        let until = f.until.as_deref().map(normalise);
        let key = f
            .key
            .as_ref()
            .map(|k| format!("\"{}\"", k.replace('"', "")));
        let rows: Vec<AuditRecord> = sqlx::query_as(&format!(
        "SELECT * FROM audit_log WHERE ($1 IS NULL OR time >= $2) AND ($3 IS NULL OR time <= $4) \
         AND ($5 IS NULL OR principal = $6) AND ($7 IS NULL OR {find}(resource, $8) > 0) \
         AND ($9 IS NULL OR action = $10) AND ($11 IS NULL OR decision = $12) ORDER BY seq LIMIT $13",
    ))
    .bind(&since)
    .bind(&since)
    .bind(&until)
    .bind(&until)
    .bind(&f.principal)
    .bind(&f.principal)
    .bind(&key)
    .bind(&key)
    .bind(&f.action)
    .bind(&f.action)
    .bind(&f.decision)
    .bind(&f.decision)
    .bind(f.limit.filter(|l| *l >= 0).unwrap_or(i64::MAX))
    .fetch_all(&mut *pool)
    .await?;
        Ok(rows.into_iter().map(ExportedRecord::from).collect())
    })
}

/// The log stores `YYYY-MM-DDTHH:MM:SS.mmmZ`; accept any RFC 3339 time and rewrite it so that
/// string comparison is time comparison.
pub(super) fn normalise(t: &str) -> String {
    chrono::DateTime::parse_from_rfc3339(t)
        .map(|d| {
            d.with_timezone(&chrono::Utc)
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        })
        .unwrap_or_else(|_| t.to_string())
}

/// Check a user-given time before querying.
pub fn parse_time(t: &str) -> Result<String, String> {
    chrono::DateTime::parse_from_rfc3339(t)
        .map(|_| normalise(t))
        .map_err(|_| format!("{t:?} is not an RFC 3339 time (e.g. 2026-11-29T10:00:00Z)"))
}
