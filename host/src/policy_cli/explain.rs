//! `keyplane policy explain`: why a request is allowed or denied.
//!
//! Three ways to name the request:
//! - `--request FILE`: a request in the notation of policy test files (JSON or TOML: the
//!   `principal`, `action`, `resource`, `context` and `entities` of one case), no database.
//! - `--principal`, `--action`, `--resource` [`--context JSON`]: with `--data-dir`, the
//!   principal and resource are loaded from that node's database and the request is built
//!   by the server's own entity builder; without it they are entities without attributes.
//! - `--audit-seq N --data-dir DIR`: the request recorded in audit record N, re-evaluated
//!   against the CURRENT policy set and the CURRENT database rows. The record holds the
//!   principal, action, resource, source address and time; it does not hold the encryption
//!   context, the client certificate flag, MFA or the approver, which are taken as absent.

use std::net::IpAddr;
use std::path::PathBuf;

use cedar_policy::Authorizer;

use super::cases::{Case, EntityRef};
use crate::authz::{self, AuthzRequest, Decision, LoadedPolicies};
use crate::crypto::context::EncryptionContext;
use crate::ops::export_key;
use crate::store::Db;

/// What to explain.
#[derive(Debug, Default)]
pub struct ExplainArgs {
    pub principal: Option<String>,
    pub action: Option<String>,
    pub resource: Option<String>,
    pub context: Option<String>,
    pub request: Option<PathBuf>,
    pub audit_seq: Option<i64>,
    pub data_dir: Option<PathBuf>,
    pub config: Option<PathBuf>,
}

/// What `--context` may say when the request is built from the database.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct DbContext {
    #[serde(default)]
    encryption_context: EncryptionContext,
    source_ip: Option<IpAddr>,
    /// `{"subject": …, "fingerprint": …}`: the request came with this client certificate.
    client_certificate: Option<crate::authz::ClientCertificate>,
    request_time: Option<i64>,
    #[serde(default)]
    mfa: bool,
    /// A principal id (or `User::"…"`) from the same database.
    approver: Option<String>,
    /// `export-key`'s form: `WRAPPED` or `PKCS12`.
    export_format: Option<String>,
}

/// Explain; returns the decision (printed already).
pub async fn run(loaded: &LoadedPolicies, args: ExplainArgs) -> anyhow::Result<Decision> {
    if let Some(seq) = args.audit_seq {
        return from_audit(loaded, seq, &args).await;
    }
    if let Some(file) = &args.request {
        let text = std::fs::read_to_string(file)?;
        let case: Case = if file.extension().is_some_and(|e| e == "toml") {
            toml::from_str(&text)?
        } else {
            serde_json::from_str(&text)?
        };
        return explain_case(loaded, &case);
    }
    let (Some(principal), Some(action), Some(resource)) =
        (&args.principal, &args.action, &args.resource)
    else {
        anyhow::bail!(
            "name the request: --principal, --action and --resource, or --request FILE, or --audit-seq N"
        );
    };
    if args.data_dir.is_some() || args.config.is_some() {
        let db = super::open_db(args.config.as_deref(), args.data_dir.clone()).await?;
        let ctx: DbContext = match &args.context {
            Some(c) => serde_json::from_str(c)?,
            None => DbContext::default(),
        };
        let d = from_db(loaded, &db, principal, action, resource, ctx).await?;
        super::print_decision(loaded, &d);
        return Ok(d);
    }
    let context = match &args.context {
        Some(c) => serde_json::from_str(c)?,
        None => Default::default(),
    };
    let case = Case {
        name: String::new(),
        principal: EntityRef::Uid(principal.clone()),
        action: action.clone(),
        resource: EntityRef::Uid(resource.clone()),
        context,
        entities: Vec::new(),
        expect: None,
        policies: None,
    };
    println!("note: without --data-dir, principal and resource are entities without attributes");
    explain_case(loaded, &case)
}

fn explain_case(loaded: &LoadedPolicies, case: &Case) -> anyhow::Result<Decision> {
    let d = super::cases::evaluate(loaded, case, &[]).map_err(anyhow::Error::msg)?;
    super::print_decision(loaded, &d);
    Ok(d)
}

/// The resource a record's request was decided on: the record's leading entity uid. A
/// record may name beside it what the request also named or made (rewrap's `-> <key>`, a
/// grant's `grant:<id>`, an access key's `access-key:<id>`).
fn recorded_resource(text: &str) -> &str {
    let Some(open) = text.find("::\"").map(|i| i + 3) else {
        return text;
    };
    let mut escaped = false;
    for (i, c) in text[open..].char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => return &text[..open + i + 1],
            _ => {}
        }
    }
    text
}

async fn from_db(
    loaded: &LoadedPolicies,
    db: &Db,
    principal: &str,
    action: &str,
    resource: &str,
    ctx: DbContext,
) -> anyhow::Result<Decision> {
    let principal = super::principal_from_db(db, principal).await?;
    let approver = match &ctx.approver {
        Some(a) => Some(super::principal_from_db(db, a).await?),
        None => None,
    };
    let resource = super::resource_from_db(db, resource).await?;
    let action = action
        .rsplit_once("::")
        .map(|(_, a)| a.trim_matches('"'))
        .unwrap_or(action);
    if let Some(f) = ctx.export_format.as_deref() {
        anyhow::ensure!(
            [export_key::WRAPPED, export_key::PKCS12].contains(&f),
            "export_format is WRAPPED or PKCS12, not {f:?}"
        );
    }
    let req = AuthzRequest {
        principal: &principal,
        action,
        resource: &resource,
        encryption_context: &ctx.encryption_context,
        source_ip: ctx
            .source_ip
            .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)),
        client_certificate: ctx.client_certificate.as_ref(),
        request_time: ctx
            .request_time
            .unwrap_or_else(|| chrono::Utc::now().timestamp()),
        mfa: ctx.mfa,
        approver: approver.as_ref(),
        granted: &resource.granted(&principal.id, &ctx.encryption_context),
        export_format: ctx.export_format.as_deref(),
    };
    decide_db(loaded, &req)
}

/// Decide a request built by the server's entity builder.
pub fn decide_db(loaded: &LoadedPolicies, req: &AuthzRequest<'_>) -> anyhow::Result<Decision> {
    let (p, a, r, c, entities) = authz::entities::build(req)?;
    let (request, entities) =
        authz::check(&loaded.schema, p, a, r, c, entities).map_err(anyhow::Error::msg)?;
    Ok(authz::decide(
        &Authorizer::new(),
        loaded,
        &request,
        &entities,
    ))
}

async fn from_audit(
    loaded: &LoadedPolicies,
    seq: i64,
    args: &ExplainArgs,
) -> anyhow::Result<Decision> {
    let db = super::open_db(args.config.as_deref(), args.data_dir.clone()).await?;
    let rec = crate::audit::get(&db, seq)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no audit record {seq}"))?;
    println!(
        "RE-EVALUATION of audit record {seq} against the CURRENT policy set and the CURRENT database rows"
    );
    println!(
        "recorded: {} by {} on {} at {}: decision {}, determining policies {}, outcome {}, policy set {}",
        rec.action,
        rec.principal,
        rec.resource,
        rec.time,
        rec.decision,
        rec.policies,
        rec.outcome,
        rec.policy_hash.as_deref().unwrap_or("(not recorded)")
    );
    println!(
        "not in the record, taken as absent: encryption context, TLS client certificate, MFA, approver"
    );
    if !rec.principal.starts_with("Keyplane::User::") {
        anyhow::bail!(
            "record {seq} was not made by a principal ({}): nothing to re-evaluate",
            rec.principal
        );
    }
    if rec.decision == "not-evaluated" {
        println!("note: the request failed before authorization when it was made");
    }
    let ctx = DbContext {
        source_ip: rec.source.parse().ok(),
        request_time: chrono::DateTime::parse_from_rfc3339(&rec.time)
            .ok()
            .map(|t| t.timestamp()),
        ..Default::default()
    };
    let resource = recorded_resource(&rec.resource);
    let d = from_db(loaded, &db, &rec.principal, &rec.action, resource, ctx).await?;
    super::print_decision(loaded, &d);
    if rec.policy_hash.as_deref() == Some(loaded.hash.as_str()) {
        println!("the policy set is the one that decided the record");
    } else {
        println!("the policy set differs from the one that decided the record");
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::recorded_resource;

    /// `policy explain --audit-seq` re-decides a record on its leading uid: before, a record
    /// that names more beside it (a rewrap's destination, a grant, an access key) did not
    /// parse as an entity.
    #[test]
    fn a_record_is_re_decided_on_its_leading_uid() {
        for (recorded, uid) in [
            (r#"Keyplane::Key::"k-1""#, r#"Keyplane::Key::"k-1""#),
            (
                r#"Keyplane::Key::"k-1" grant:ab12"#,
                r#"Keyplane::Key::"k-1""#,
            ),
            (r#"Keyplane::Key::"k-1" -> k-2"#, r#"Keyplane::Key::"k-1""#),
            (
                r#"Keyplane::User::"p-1" access-key:AKIA"#,
                r#"Keyplane::User::"p-1""#,
            ),
            (
                r#"Keyplane::Plugin::"t/a \" b" x"#,
                r#"Keyplane::Plugin::"t/a \" b""#,
            ),
            ("-", "-"),
        ] {
            assert_eq!(recorded_resource(recorded), uid);
            if uid != "-" {
                assert!(crate::authz::literal::parse_uid(recorded_resource(recorded)).is_ok());
            }
        }
    }
}
