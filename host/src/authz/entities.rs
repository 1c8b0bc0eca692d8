//! Building the Cedar request for one keyplane request: principal, action, resource,
//! context and the entities they mention, from rows the operation already resolved.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::LazyLock;

use cedar_policy::{
    Context, Entities, Entity, EntityId, EntityTypeName, EntityUid, RestrictedExpression, Schema,
};

use crate::authn::Principal;
use crate::crypto::context::EncryptionContext;
use crate::error::{Error, Result};
use crate::store::keys::KeyRow;

/// What a request is about.
#[derive(Debug, Clone)]
pub enum ResourceRef {
    /// A tenant (creating things in it, listing, random bytes).
    Tenant(String),
    /// A tenant's plugin.
    Plugin(Box<crate::store::plugins::PluginRow>),
    /// A principal (its access keys).
    User(Box<Principal>),
    /// A key, with its grantees, tags and grants.
    Key {
        row: Box<KeyRow>,
        users: Vec<String>,
        tags: BTreeMap<String, String>,
        grants: std::sync::Arc<[crate::store::grants::Grant]>,
    },
}

impl ResourceRef {
    /// The same resource as if nobody held a grant on it: what Cedar decides on it is what
    /// the caller's policies alone allow.
    pub fn without_grants(&self) -> ResourceRef {
        let mut bare = self.clone();
        if let ResourceRef::Key { grants, .. } = &mut bare {
            *grants = std::sync::Arc::from(Vec::new());
        }
        bare
    }

    /// The Cedar uid as text, e.g. `Keyplane::Key::"k-…"` (for audit records).
    pub fn display(&self) -> String {
        match self {
            ResourceRef::Tenant(t) => format!("Keyplane::Tenant::{t:?}"),
            ResourceRef::Key { row, .. } => format!("Keyplane::Key::{:?}", row.id),
            ResourceRef::Plugin(p) => format!("Keyplane::Plugin::{:?}", plugin_id(p)),
            ResourceRef::User(p) => format!("Keyplane::User::{:?}", p.id),
        }
    }

    /// The actions the grants on this resource (a key's) give `principal` for a request with
    /// encryption context `ec`, each once: what Cedar sees as `context.granted`. A grant's
    /// constraint applies to the actions that take a context (`Grant::actions_for`): one that
    /// names `DescribeKey` allows it, whatever the context.
    /// `RetireGrant` is left out: a grant naming it allows the retirement of that grant only,
    /// which `retire-grant` adds itself.
    pub fn granted(&self, principal: &str, ec: &EncryptionContext) -> Vec<&str> {
        let ResourceRef::Key { grants, .. } = self else {
            return Vec::new();
        };
        let set: std::collections::BTreeSet<&str> = grants
            .iter()
            .filter(|g| g.grantee == principal)
            .flat_map(|g| g.actions_for(ec))
            .filter(|a| *a != "RetireGrant")
            .collect();
        set.into_iter().collect()
    }

    /// The tenant the resource belongs to.
    pub fn tenant(&self) -> &str {
        match self {
            ResourceRef::Tenant(t) => t,
            ResourceRef::Key { row, .. } => &row.tenant_id,
            ResourceRef::Plugin(p) => &p.tenant_id,
            ResourceRef::User(p) => &p.tenant_id,
        }
    }
}

/// The certificate a client presented in the TLS handshake, verified against
/// `tls.client_ca` (Cedar `context.client_certificate_subject` and
/// `context.client_certificate_fingerprint`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientCertificate {
    /// The subject's distinguished name as RFC 4514 writes it (`CN=alice,O=Example`).
    pub subject: String,
    /// SHA-256 of the DER certificate, colon-separated upper-case hex.
    pub fingerprint: String,
    /// The subject's common name (its first `CN`), as the certificate holds it.
    #[serde(default)]
    pub common_name: Option<String>,
}

impl ClientCertificate {
    /// Whether this certificate names `principal_id` (its common name is the principal's id):
    /// only then is it a second factor of that principal's request (Cedar `context.mfa`). A
    /// certificate from a trusted CA that names someone else, or no one, proves only that the
    /// connection came from a holder of some certificate: with
    /// `tls.require_client_certificate` every connection has one, and a stolen token beside
    /// any other principal's certificate would pass for two factors.
    pub fn names(&self, principal_id: &str) -> bool {
        self.common_name.as_deref() == Some(principal_id)
    }
}

/// Everything the authorizer needs to know about a request.
pub struct AuthzRequest<'a> {
    pub principal: &'a Principal,
    /// Cedar action name, e.g. `Encrypt`.
    pub action: &'a str,
    pub resource: &'a ResourceRef,
    pub encryption_context: &'a EncryptionContext,
    pub source_ip: IpAddr,
    pub client_certificate: Option<&'a ClientCertificate>,
    pub request_time: i64,
    /// Multi-factor authentication was established for this request (`context.mfa`).
    pub mfa: bool,
    /// A second principal who approved this request by authenticating in the same request
    /// (`context.approver`, with its attributes as an entity).
    pub approver: Option<&'a Principal>,
    /// The actions the principal's grants on the resource allow for this request
    /// (`context.granted`, a set of actions).
    pub granted: &'a [&'a str],
    /// The form key material leaves in (`context.export_format`: `export-key`'s `WRAPPED` or
    /// `PKCS12`); `None` for other requests.
    pub export_format: Option<&'a str>,
}

/// A plugin's entity id: `<tenant>/<name>`.
pub fn plugin_id(p: &crate::store::plugins::PluginRow) -> String {
    format!("{}/{}", p.tenant_id, p.name)
}

/// The entity types keyplane builds, parsed once (parsing a name runs Cedar's parser).
static TYPE_NAMES: LazyLock<HashMap<&'static str, EntityTypeName>> = LazyLock::new(|| {
    [
        "Tenant",
        "User",
        "Key",
        "Plugin",
        "EncryptionContext",
        "Action",
    ]
    .into_iter()
    .map(|ty| {
        let name = EntityTypeName::from_str(&format!("Keyplane::{ty}"))
            .expect("static entity type names parse");
        (ty, name)
    })
    .collect()
});

/// `ip("<addr>")` for a source address. Building one parses the extension's name with Cedar's
/// parser, so the expressions of recent addresses are kept.
fn ip_expression(addr: IpAddr) -> RestrictedExpression {
    static RECENT: LazyLock<quick_cache::sync::Cache<IpAddr, RestrictedExpression>> =
        LazyLock::new(|| quick_cache::sync::Cache::new(4096));
    let addr = addr.to_canonical();
    if let Some(e) = RECENT.get(&addr) {
        return e;
    }
    let e = RestrictedExpression::new_ip(addr.to_string());
    RECENT.insert(addr, e.clone());
    e
}

fn uid(ty: &str, id: &str) -> Result<EntityUid> {
    let name = TYPE_NAMES.get(ty).ok_or(Error::Internal)?.clone();
    Ok(EntityUid::from_type_name_and_id(name, EntityId::new(id)))
}

fn s(v: &str) -> RestrictedExpression {
    RestrictedExpression::new_string(v.to_string())
}

fn entity_err(e: impl std::fmt::Display) -> Error {
    tracing::error!(error = %e, "could not build a Cedar entity");
    Error::Internal
}

/// The Cedar parts of a request.
pub type Built = (EntityUid, EntityUid, EntityUid, Context, Vec<Entity>);

/// A principal as a `User` entity, and its tenant (no attributes).
pub fn principal_entities(p: &Principal) -> Result<(EntityUid, [Entity; 2])> {
    let tenant_uid = uid("Tenant", &p.tenant_id)?;
    let principal_uid = uid("User", &p.id)?;
    let user = Entity::new_with_tags(
        principal_uid.clone(),
        [
            (
                "tenant".to_string(),
                RestrictedExpression::new_entity_uid(tenant_uid.clone()),
            ),
            ("name".to_string(), s(&p.name)),
            ("kind".to_string(), s(&p.kind)),
            ("role".to_string(), s(&p.role)),
            (
                "operator".to_string(),
                RestrictedExpression::new_bool(p.operator),
            ),
        ],
        [tenant_uid.clone()],
        [],
    )
    .map_err(entity_err)?;
    Ok((
        principal_uid,
        [Entity::new_no_attrs(tenant_uid, Default::default()), user],
    ))
}

/// Build principal, action, resource, context and entities. Entities may repeat (the same
/// tenant twice); [`super::check`] keeps each once.
pub fn build(req: &AuthzRequest<'_>) -> Result<Built> {
    let p = req.principal;
    let (principal_uid, mut entities) = principal_entities(p).map(|(u, e)| (u, e.to_vec()))?;

    let resource_uid = match req.resource {
        ResourceRef::Tenant(t) => {
            let r = uid("Tenant", t)?;
            if t != &p.tenant_id {
                entities.push(Entity::new_no_attrs(r.clone(), Default::default()));
            }
            r
        }
        ResourceRef::Key {
            row, users, tags, ..
        } => {
            let key_tenant = uid("Tenant", &row.tenant_id)?;
            if row.tenant_id != p.tenant_id {
                entities.push(Entity::new_no_attrs(key_tenant.clone(), Default::default()));
            }
            let r = uid("Key", &row.id)?;
            let users = users
                .iter()
                .map(|u| uid("User", u).map(RestrictedExpression::new_entity_uid))
                .collect::<Result<Vec<_>>>()?;
            entities.push(
                Entity::new_with_tags(
                    r.clone(),
                    [
                        (
                            "tenant".to_string(),
                            RestrictedExpression::new_entity_uid(key_tenant.clone()),
                        ),
                        ("spec".to_string(), s(row.spec.as_str())),
                        ("usage".to_string(), s(row.usage.as_str())),
                        ("protection".to_string(), s(row.protection.as_str())),
                        ("state".to_string(), s(row.state.as_str())),
                        ("users".to_string(), RestrictedExpression::new_set(users)),
                    ],
                    [key_tenant],
                    tags.iter().map(|(k, v)| (k.clone(), s(v))),
                )
                .map_err(entity_err)?,
            );
            r
        }
        ResourceRef::User(user) => {
            let (r, user_entities) = principal_entities(user)?;
            if user.id != p.id {
                entities.extend(user_entities);
            }
            r
        }
        ResourceRef::Plugin(p) => {
            let plugin_tenant = uid("Tenant", &p.tenant_id)?;
            if p.tenant_id != req.principal.tenant_id {
                entities.push(Entity::new_no_attrs(
                    plugin_tenant.clone(),
                    Default::default(),
                ));
            }
            let r = uid("Plugin", &plugin_id(p))?;
            entities.push(
                Entity::new_with_tags(
                    r.clone(),
                    [
                        (
                            "tenant".to_string(),
                            RestrictedExpression::new_entity_uid(plugin_tenant.clone()),
                        ),
                        ("world".to_string(), s(&p.world)),
                        ("sha256".to_string(), s(&p.sha256)),
                    ],
                    [plugin_tenant],
                    [],
                )
                .map_err(entity_err)?,
            );
            r
        }
    };

    let ec_uid = uid("EncryptionContext", "request")?;
    entities.push(
        Entity::new_with_tags(
            ec_uid.clone(),
            [],
            [],
            req.encryption_context
                .iter()
                .map(|(k, v)| (k.clone(), s(v))),
        )
        .map_err(entity_err)?,
    );
    let mut pairs = vec![
        (
            "encryption_context".to_string(),
            RestrictedExpression::new_entity_uid(ec_uid),
        ),
        ("source_ip".to_string(), ip_expression(req.source_ip)),
        (
            "client_certificate".to_string(),
            RestrictedExpression::new_bool(req.client_certificate.is_some()),
        ),
        (
            "request_time".to_string(),
            RestrictedExpression::new_long(req.request_time),
        ),
        ("mfa".to_string(), RestrictedExpression::new_bool(req.mfa)),
        (
            "granted".to_string(),
            RestrictedExpression::new_set(
                req.granted
                    .iter()
                    .map(|a| uid("Action", a).map(RestrictedExpression::new_entity_uid))
                    .collect::<Result<Vec<_>>>()?,
            ),
        ),
    ];
    if let Some(cert) = req.client_certificate {
        pairs.push((
            "client_certificate_subject".to_string(),
            RestrictedExpression::new_string(cert.subject.clone()),
        ));
        pairs.push((
            "client_certificate_fingerprint".to_string(),
            RestrictedExpression::new_string(cert.fingerprint.clone()),
        ));
    }
    if let Some(format) = req.export_format {
        pairs.push(("export_format".to_string(), s(format)));
    }
    if let Some(approver) = req.approver {
        let (approver_uid, approver_entities) = principal_entities(approver)?;
        if approver.id != p.id {
            entities.extend(approver_entities);
        }
        pairs.push((
            "approver".to_string(),
            RestrictedExpression::new_entity_uid(approver_uid),
        ));
    }
    let context = Context::from_pairs(pairs).map_err(entity_err)?;
    let action = uid("Action", req.action)?;
    Ok((principal_uid, action, resource_uid, context, entities))
}

/// Check that the entities [`build`] makes conform to `schema`: every kind of resource, with
/// tags, grantees, an encryption context and an approver. Run when a policy set loads,
/// because requests skip per-request entity validation (their entities come from this same
/// code, so one check of each shape covers them all).
pub fn check_shapes(schema: &Schema) -> std::result::Result<(), String> {
    let principal = Principal {
        id: "p-probe".into(),
        tenant_id: "t-probe".into(),
        name: "probe".into(),
        kind: "user".into(),
        role: "admin".into(),
        operator: false,
        created_at: String::new(),
    };
    let approver = Principal {
        id: "p-approver".into(),
        ..principal.clone()
    };
    let key = KeyRow::sample("k-probe", "t-other");
    let plugin = crate::store::plugins::PluginRow {
        tenant_id: "t-other".into(),
        name: "probe".into(),
        sha256: "0".repeat(64),
        world: "storage-backend".into(),
        size: 0,
        imports: String::new(),
        created_at: String::new(),
        created_by: String::new(),
        capabilities: String::new(),
    };
    let resources = [
        ResourceRef::Tenant("t-other".into()),
        ResourceRef::Key {
            row: Box::new(key),
            users: vec!["p-probe".into()],
            tags: [("team".to_string(), "probe".to_string())].into(),
            grants: Default::default(),
        },
        ResourceRef::Plugin(Box::new(plugin)),
        ResourceRef::User(Box::new(Principal {
            id: "p-other".into(),
            tenant_id: "t-other".into(),
            ..principal.clone()
        })),
    ];
    let ec: EncryptionContext = [("purpose".to_string(), "probe".to_string())].into();
    for resource in &resources {
        let req = AuthzRequest {
            principal: &principal,
            action: "Encrypt",
            resource,
            encryption_context: &ec,
            source_ip: IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
            client_certificate: None,
            request_time: 0,
            mfa: false,
            approver: Some(&approver),
            granted: &["Decrypt"],
            export_format: Some("PKCS12"),
        };
        let (.., entities) = build(&req).map_err(|e| e.to_string())?;
        let mut seen = std::collections::HashSet::new();
        let entities: Vec<Entity> = entities
            .into_iter()
            .filter(|e| seen.insert(e.uid()))
            .collect();
        Entities::from_entities(entities, Some(schema)).map_err(|e| {
            let mut why = e.to_string();
            let mut cause = std::error::Error::source(&e);
            while let Some(c) = cause {
                why = format!("{why}: {c}");
                cause = c.source();
            }
            format!(
                "the schema does not describe the entities keyplane builds for {}: {why}",
                resource.display()
            )
        })?;
    }
    Ok(())
}
