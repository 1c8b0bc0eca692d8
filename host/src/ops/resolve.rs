//! Resolving what a request names into its Cedar resource: a key id or an alias of the
//! caller's tenant (through the row cache), or a key read from the database for tools.

use std::collections::BTreeMap;

use super::validate::ALIAS_PREFIX;
use super::OpContext;
use crate::authz::ResourceRef;
use crate::error::{Error, Result};
use crate::store::keys::{self, KeyRow};

/// The key id a key_id field names: itself, or the key an alias of the caller's tenant
/// points to.
pub async fn key_id_of(ctx: &OpContext<'_>, key_id: &str) -> Result<String> {
    if !key_id.starts_with(ALIAS_PREFIX) {
        return Ok(key_id.to_string());
    }
    let target = ctx
        .state
        .rows
        .alias_target(&ctx.principal.tenant_id, key_id)
        .await?
        .ok_or_else(|| Error::NotFound {
            kind: "alias",
            id: key_id.to_string(),
        })?;
    Ok(target.to_string())
}

/// Load a key (by id or alias, through the row cache) and build its Cedar resource.
///
/// A grant token of the request that names no grant the cached row knows makes the key's
/// grants be read from the database now, and the grant it names honoured: a grant created on
/// another node counts at once for a request that carries its token, before this node hears
/// of it (PostgreSQL `NOTIFY`, or the cache's TTL), as AWS's grant tokens promise.
pub async fn resolve_key(ctx: &OpContext<'_>, key_id: &str) -> Result<ResourceRef> {
    let key_id = &key_id_of(ctx, key_id).await?;
    let key = ctx
        .state
        .rows
        .key(key_id)
        .await?
        .ok_or_else(|| not_found(key_id))?;
    // Only a token that could be a grant's id (64 hexadecimal digits) is looked for: junk
    // tokens cost no database read.
    let tokens = &ctx.meta.grant_tokens;
    let unknown_token = tokens
        .iter()
        .any(|t| super::validate::is_grant_id(t) && !key.grants.iter().any(|g| g.id == *t));
    let grants = if unknown_token {
        // The grants as they are now, of those the node knew and those the tokens name (a
        // grant revoked meanwhile is gone from both; no other grant counts sooner than its
        // bound because a request carries some token).
        crate::store::grants::of_key(&ctx.state.db, key_id)
            .await?
            .into_iter()
            .filter(|g| tokens.contains(&g.id) || key.grants.iter().any(|k| k.id == g.id))
            .collect()
    } else {
        key.grants.clone()
    };
    Ok(resource_of(key.row.clone(), key.users.clone(), grants))
}

/// A key by id as a Cedar resource (row, grantees, tags, grants), read from the database.
pub async fn key_resource(db: &crate::store::Db, key_id: &str) -> Result<ResourceRef> {
    let row = keys::get(db, key_id)
        .await?
        .ok_or_else(|| not_found(key_id))?;
    let users = keys::grantees(db, key_id).await?;
    let grants = crate::store::grants::of_key(db, key_id).await?;
    Ok(resource_of(row, users, grants.into()))
}

fn not_found(key_id: &str) -> Error {
    Error::NotFound {
        kind: "key",
        id: key_id.to_string(),
    }
}

fn resource_of(
    row: KeyRow,
    users: Vec<String>,
    grants: std::sync::Arc<[crate::store::grants::Grant]>,
) -> ResourceRef {
    let tags: BTreeMap<String, String> = serde_json::from_str(&row.tags).unwrap_or_default();
    ResourceRef::Key {
        row: Box::new(row),
        users,
        tags,
        grants,
    }
}

/// The key row of a resolved key resource.
pub fn key_row(resource: &ResourceRef) -> Result<&KeyRow> {
    match resource {
        ResourceRef::Key { row, .. } => Ok(row),
        _ => Err(Error::Internal),
    }
}
