//! `keyplane policy …`: tools for auditors who read `policies/`, not Rust.
//!
//! - [`validate`]: the server's own loader (strict schema validation, `@id`/`@description`
//!   checks, every operation's action declared); errors name file, line and policy id.
//! - [`format`]: canonical formatting of `*.cedar` files with cedar-policy's formatter.
//! - [`cases`]: policy test files (`policies/tests/*.toml`), run case by case.
//! - [`explain`]: one request (flags, a request file, or an audit record) evaluated against
//!   the policy set, with the determining policies' descriptions and evaluation errors.
//! - [`who_can`]: every principal in the database, evaluated for one action on one resource.
//!
//! Every decision goes through [`crate::authz::decide`], the function the server decides
//! with; requests built from the database go through the server's entity builder
//! ([`crate::authz::entities::build`]).

pub mod cases;
pub mod explain;
pub mod format;
pub mod validate;
pub mod who_can;

use std::path::{Path, PathBuf};

use anyhow::Context as _;

use crate::authz::{Decision, LoadedPolicies, ResourceRef};
use crate::config::{Config, FlagOverrides};
use crate::store::Db;

/// The policy directory a command uses: the one given, else `./policies` if it holds a
/// schema, else the copy embedded in the binary (as the server does).
pub fn policy_dir(arg: Option<&Path>) -> Option<PathBuf> {
    match arg {
        Some(d) => Some(d.to_path_buf()),
        None => Some(PathBuf::from("policies")).filter(|d| d.join("schema.cedarschema").exists()),
    }
}

/// Load the policy set the way the server does; a refusal is an error with every reason.
pub fn load(dir: Option<&Path>) -> anyhow::Result<LoadedPolicies> {
    Ok(crate::ops::reload_policies::load_policy_set(
        policy_dir(dir).as_deref(),
    )?)
}

/// Open a node's database read-only (`--config` / `--data-dir` as for `keyplane serve`).
pub async fn open_db(config: Option<&Path>, data_dir: Option<PathBuf>) -> anyhow::Result<Db> {
    let flags = FlagOverrides {
        data_dir,
        ..Default::default()
    };
    let config = Config::load(config, flags)?;
    Db::open_read_only(&config.database_url())
        .await
        .with_context(|| format!("cannot open the database {}", config.database_url_shown()))
}

/// A resource named by its Cedar uid, loaded from the database as the server would.
pub async fn resource_from_db(db: &Db, uid: &str) -> anyhow::Result<ResourceRef> {
    let uid = crate::authz::literal::parse_uid(uid).map_err(anyhow::Error::msg)?;
    let ty = uid.type_name().basename().to_string();
    let id = uid.id().unescaped().to_string();
    match ty.as_str() {
        "Tenant" => Ok(ResourceRef::Tenant(id)),
        "Key" => Ok(crate::ops::key_resource(db, &id).await?),
        "Plugin" => {
            let (tenant, name) = id
                .split_once('/')
                .ok_or_else(|| anyhow::anyhow!("a plugin is Plugin::\"<tenant>/<name>\""))?;
            let row = crate::store::plugins::get(db, tenant, name)
                .await?
                .ok_or_else(|| anyhow::anyhow!("plugin {id} not found"))?;
            Ok(ResourceRef::Plugin(Box::new(row)))
        }
        "User" => Ok(ResourceRef::User(Box::new(
            crate::store::principals::get(db, &id)
                .await?
                .ok_or_else(|| anyhow::anyhow!("principal {id} not found"))?,
        ))),
        other => anyhow::bail!("resources are Tenant, Key, Plugin or User entities, not {other}"),
    }
}

/// A principal by id (`p-…`) or uid (`User::"p-…"`), from the database.
pub async fn principal_from_db(
    db: &Db,
    text: &str,
) -> anyhow::Result<crate::store::principals::PrincipalRow> {
    let id = if text.contains("::\"") {
        crate::authz::literal::parse_uid(text)
            .map_err(anyhow::Error::msg)?
            .id()
            .unescaped()
            .to_string()
    } else {
        text.to_string()
    };
    crate::store::principals::get(db, &id)
        .await?
        .ok_or_else(|| anyhow::anyhow!("principal {id} not found"))
}

/// Print a decision: the verdict, the determining policies with their descriptions, and any
/// evaluation errors.
pub fn print_decision(loaded: &LoadedPolicies, d: &Decision) {
    println!("decision: {}", if d.allowed { "ALLOW" } else { "DENY" });
    println!("policy set: {} ({})", d.policy_set, loaded.source);
    if d.policies.is_empty() {
        println!("determining policies: none (no permit applies: denied by default)");
    } else {
        println!("determining policies:");
        for id in &d.policies {
            let desc = loaded.descriptions.get(id).map(String::as_str);
            println!("  {id}: {}", desc.unwrap_or("(no description)"));
        }
    }
    if d.errors.is_empty() {
        println!("evaluation errors: none");
    } else {
        println!("evaluation errors (each one denies):");
        for e in &d.errors {
            println!("  {e}");
        }
    }
}
