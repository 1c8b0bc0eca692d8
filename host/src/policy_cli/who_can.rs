//! `keyplane policy who-can --action A --resource R`: every principal stored in the
//! database, evaluated for A on R (loaded from the database) with the server's entity
//! builder and the given policy set; lists those allowed.
//!
//! The request context is what a plain request carries: an empty encryption context (or
//! `--encryption-context`), no TLS client certificate, no MFA, no approver, source
//! 127.0.0.1, the current time. Conditions on more than that (e.g. the deletion guard) are
//! evaluated as for such a request. `ExportKey` is evaluated once for each form of export
//! (`context.export_format` `WRAPPED` and `PKCS12`), since every real request names one.

use std::net::{IpAddr, Ipv4Addr};

use crate::authz::{AuthzRequest, LoadedPolicies, ResourceRef};
use crate::crypto::context::EncryptionContext;
use crate::ops::export_key::{self, ExportKey};
use crate::ops::Operation;
use crate::store::principals::PrincipalRow;
use crate::store::Db;

/// A principal allowed, with the policies that allowed it.
#[derive(Debug)]
pub struct Allowed {
    pub principal: PrincipalRow,
    pub policies: Vec<String>,
}

/// Evaluate every principal; returns those allowed.
pub async fn evaluate(
    loaded: &LoadedPolicies,
    db: &Db,
    action: &str,
    resource: &ResourceRef,
    ec: &EncryptionContext,
    export_format: Option<&str>,
) -> anyhow::Result<Vec<Allowed>> {
    let now = chrono::Utc::now().timestamp();
    let mut allowed = Vec::new();
    for p in crate::store::principals::all(db).await? {
        let req = AuthzRequest {
            principal: &p,
            action,
            resource,
            encryption_context: ec,
            source_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            client_certificate: None,
            request_time: now,
            mfa: false,
            approver: None,
            granted: &resource.granted(&p.id, ec),
            export_format,
        };
        let d = super::explain::decide_db(loaded, &req)?;
        if d.allowed {
            allowed.push(Allowed {
                principal: p,
                policies: d.policies,
            });
        }
    }
    Ok(allowed)
}

/// The forms an action is asked in: each `export_format` for `ExportKey`, else one.
pub fn forms(action: &str) -> &'static [Option<&'static str>] {
    if action == ExportKey::ACTION {
        &[Some(export_key::WRAPPED), Some(export_key::PKCS12)]
    } else {
        &[None]
    }
}

/// Print the allowed principals as `id<TAB>tenant<TAB>role<TAB>policies`.
pub fn print(
    action: &str,
    export_format: Option<&str>,
    resource: &ResourceRef,
    allowed: &[Allowed],
) {
    let form = export_format
        .map(|f| format!(" (export_format {f})"))
        .unwrap_or_default();
    println!(
        "# principals allowed {action}{form} on {} ({}):",
        resource.display(),
        allowed.len()
    );
    println!("# id\ttenant\trole\tdetermining policies");
    for a in allowed {
        println!(
            "{}\t{}\t{}\t{}",
            a.principal.id,
            a.principal.tenant_id,
            a.principal.role,
            a.policies.join(",")
        );
    }
}
