//! `keyplane policy test`: policy test files, TOML, kept in `policies/tests/`.
//!
//! ```toml
//! # Entities every case of the file may name (principals, keys, tenants...).
//! [[entity]]
//! uid = 'User::"alice"'
//! parents = ['Tenant::"acme"']
//! attrs = { tenant = 'Tenant::"acme"', name = "alice", kind = "user", role = "admin", operator = false }
//!
//! [[case]]
//! name = "an admin creates keys in its own tenant"
//! principal = 'User::"alice"'          # a uid of a listed entity, or an inline entity table
//! action = "CreateKey"
//! resource = 'Tenant::"acme"'
//! context = { encryption_context = { purpose = "backup" } }   # optional; defaults filled in
//! expect = "allow"                      # or "deny"
//! policies = ["tenant-admin-manages-keys"]   # optional: the exact determining policy ids
//! ```
//!
//! Values follow [`crate::authz::literal`]. A case passes when the decision (and, if given,
//! the set of determining policies) is as expected; a case that cannot be evaluated (a bad
//! uid, an entity that does not match the schema) fails.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use cedar_policy::Authorizer;
use serde::Deserialize;

use crate::authz::literal::{self, EntitySpec};
use crate::authz::{decide, Decision, LoadedPolicies};

/// A principal or resource: the uid of an entity listed elsewhere, or the entity itself.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(untagged)]
pub enum EntityRef {
    Uid(String),
    Inline(EntitySpec),
}

impl EntityRef {
    fn uid(&self) -> &str {
        match self {
            EntityRef::Uid(u) => u,
            EntityRef::Inline(e) => &e.uid,
        }
    }
}

/// allow / deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Expect {
    Allow,
    Deny,
}

/// One request (a test case, or the request file of `policy explain`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    #[serde(default)]
    pub name: String,
    pub principal: EntityRef,
    pub action: String,
    pub resource: EntityRef,
    #[serde(default)]
    pub context: serde_json::Map<String, serde_json::Value>,
    /// More entities this request needs (e.g. the approver).
    #[serde(default)]
    pub entities: Vec<EntitySpec>,
    pub expect: Option<Expect>,
    pub policies: Option<Vec<String>>,
}

/// A test file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaseFile {
    #[serde(default, rename = "entity")]
    pub entities: Vec<EntitySpec>,
    #[serde(default, rename = "case")]
    pub cases: Vec<Case>,
}

/// Evaluate one request with the file's shared entities.
pub fn evaluate(
    loaded: &LoadedPolicies,
    case: &Case,
    shared: &[EntitySpec],
) -> Result<Decision, String> {
    let principal = literal::parse_uid(case.principal.uid())?;
    let resource = literal::parse_uid(case.resource.uid())?;
    let action = literal::action_uid(&case.action)?;
    let (context, ec) = literal::context(&case.context)?;
    let mut entities = Vec::new();
    for r in [&case.principal, &case.resource] {
        if let EntityRef::Inline(spec) = r {
            entities.push(spec.to_entity()?);
        }
    }
    for spec in case.entities.iter().chain(shared) {
        entities.push(spec.to_entity()?);
    }
    entities.push(ec);
    let (request, entities) = crate::authz::check(
        &loaded.schema,
        principal,
        action,
        resource,
        context,
        entities,
    )?;
    Ok(decide(&Authorizer::new(), loaded, &request, &entities))
}

/// The outcome of one file.
#[derive(Debug, Default)]
pub struct Tally {
    pub passed: usize,
    pub failed: usize,
}

fn check_case(loaded: &LoadedPolicies, case: &Case, shared: &[EntitySpec]) -> Result<(), String> {
    let expect = case
        .expect
        .ok_or("the case has no `expect` (allow or deny)")?;
    let d = evaluate(loaded, case, shared)?;
    let got = if d.allowed {
        Expect::Allow
    } else {
        Expect::Deny
    };
    let mut problems = Vec::new();
    if got != expect {
        problems.push(format!("expected {expect:?}, got {got:?}").to_lowercase());
    }
    if let Some(want) = &case.policies {
        let want: BTreeSet<&str> = want.iter().map(String::as_str).collect();
        let have: BTreeSet<&str> = d.policies.iter().map(String::as_str).collect();
        if want != have {
            problems.push(format!(
                "expected determining policies {want:?}, got {have:?}"
            ));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        if !d.errors.is_empty() {
            problems.push(format!("evaluation errors: {}", d.errors.join("; ")));
        }
        Err(problems.join("; "))
    }
}

/// A test file's text as its entities and cases.
pub fn parse_file(text: &str) -> Result<CaseFile, String> {
    toml::from_str(text).map_err(|e| e.to_string())
}

/// Run one file's cases, printing a line per case.
pub fn run_file(loaded: &LoadedPolicies, path: &Path) -> Tally {
    let mut tally = Tally::default();
    let name = path.display();
    let file = match std::fs::read_to_string(path)
        .map_err(|e| e.to_string())
        .and_then(|t| parse_file(&t))
    {
        Ok(f) => f,
        Err(e) => {
            println!("FAIL {name}: cannot read the test file: {e}");
            tally.failed += 1;
            return tally;
        }
    };
    if file.cases.is_empty() {
        println!("FAIL {name}: no [[case]] in the file");
        tally.failed += 1;
    }
    for (i, case) in file.cases.iter().enumerate() {
        let label = if case.name.is_empty() {
            format!("case {}", i + 1)
        } else {
            case.name.clone()
        };
        match check_case(loaded, case, &file.entities) {
            Ok(()) => {
                println!("PASS {name}: {label}");
                tally.passed += 1;
            }
            Err(why) => {
                println!("FAIL {name}: {label}: {why}");
                tally.failed += 1;
            }
        }
    }
    tally
}

/// The test files named by `paths` (a directory stands for its `*.toml` files).
pub fn files(paths: &[PathBuf]) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(p)?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.is_file() && f.extension().is_some_and(|e| e == "toml"))
                .collect();
            found.sort();
            out.extend(found);
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

/// Run every file; returns whether all cases passed.
pub fn run(loaded: &LoadedPolicies, paths: &[PathBuf]) -> std::io::Result<bool> {
    let files = files(paths)?;
    let mut total = Tally::default();
    if files.is_empty() {
        println!("no policy test files found");
        return Ok(false);
    }
    for f in &files {
        let t = run_file(loaded, f);
        total.passed += t.passed;
        total.failed += t.failed;
    }
    println!(
        "policy tests: {} passed, {} failed (policy set {})",
        total.passed, total.failed, loaded.hash
    );
    Ok(total.failed == 0)
}
