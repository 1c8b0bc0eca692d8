//! Loading `policies/`: the schema (`schema.cedarschema`) and every `*.cedar` file, each
//! policy re-identified by its `@id` annotation, then strict validation against the schema.
//! Errors name the file, the line and the policy id.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use cedar_policy::{
    ActionConstraint, Entities, Entity, EntityUid, PolicyId, PolicySet, Schema, ValidationMode,
    Validator,
};
use miette::Diagnostic;
use ring::digest;

/// The shipped policy files, used when no policy directory exists on disk.
const EMBEDDED: &[(&str, &str)] = &[
    (
        "schema.cedarschema",
        include_str!("../../../policies/schema.cedarschema"),
    ),
    (
        "key-context.cedar",
        include_str!("../../../policies/key-context.cedar"),
    ),
    (
        "key-deletion-guard.cedar",
        include_str!("../../../policies/key-deletion-guard.cedar"),
    ),
    (
        "key-grants.cedar",
        include_str!("../../../policies/key-grants.cedar"),
    ),
    (
        "operator.cedar",
        include_str!("../../../policies/operator.cedar"),
    ),
    (
        "random.cedar",
        include_str!("../../../policies/random.cedar"),
    ),
    (
        "tenant-admin.cedar",
        include_str!("../../../policies/tenant-admin.cedar"),
    ),
    (
        "tenant-isolation.cedar",
        include_str!("../../../policies/tenant-isolation.cedar"),
    ),
];

/// A validated policy set.
pub struct LoadedPolicies {
    pub schema: Schema,
    pub policies: PolicySet,
    /// SHA-256 over the schema and policy files (name and contents), hex.
    pub hash: String,
    /// Policy id → description annotation.
    pub descriptions: BTreeMap<String, String>,
    /// Where they came from ("embedded" or a directory).
    pub source: String,
    /// Action entities from the schema (with their action groups), by action name.
    pub actions: HashMap<String, Entity>,
    /// Per action, the policies whose action scope can match it (see [`by_action`]).
    pub per_action: HashMap<EntityUid, PolicySet>,
}

impl LoadedPolicies {
    /// The policies that can apply to `action`: its prepared subset, or the whole set for an
    /// action the schema does not know (such a request fails schema validation anyway).
    pub fn for_action(&self, action: Option<&EntityUid>) -> &PolicySet {
        action
            .and_then(|a| self.per_action.get(a))
            .unwrap_or(&self.policies)
    }
}

/// Split `set` by action: for each action of the schema, the policies whose action scope
/// matches it (`action` alone; `action == A`; `action in [..]` naming it or one of its action
/// groups). A policy whose scope does not match a request is not applicable to it: Cedar
/// neither evaluates its condition nor lets it decide, so evaluating only the subset gives
/// the same decision, reasons and errors as the whole set, without re-evaluating every
/// policy's scope (and its action lists) on every request.
fn by_action(set: &PolicySet, actions: &Entities) -> HashMap<EntityUid, PolicySet> {
    let mut per_action = HashMap::new();
    for action in actions.iter() {
        let uid = action.uid();
        let groups: HashSet<&EntityUid> = actions
            .ancestors(&uid)
            .map(|a| a.collect())
            .unwrap_or_default();
        let applies = |scope: &EntityUid| *scope == uid || groups.contains(scope);
        let mut subset = PolicySet::new();
        for policy in set.policies() {
            let matches = match policy.action_constraint() {
                ActionConstraint::Any => true,
                ActionConstraint::Eq(a) => applies(&a),
                ActionConstraint::In(list) => list.iter().any(applies),
            };
            if matches {
                // Ids are unique in `set`, so adding to a subset cannot clash.
                let _ = subset.add(policy.clone());
            }
        }
        per_action.insert(uid, subset);
    }
    per_action
}

/// Why a policy set was refused.
#[derive(Debug, thiserror::Error)]
#[error("invalid policy set:\n{}", .0.join("\n"))]
pub struct PolicyLoadError(pub Vec<String>);

fn line_of(diag: &dyn Diagnostic, src: &str) -> Option<usize> {
    let offset = diag.labels()?.next()?.offset();
    Some(src.get(..offset)?.matches('\n').count() + 1)
}

fn read_dir(dir: &Path) -> Result<Vec<(String, String)>, PolicyLoadError> {
    let mut files = Vec::new();
    let entries = std::fs::read_dir(dir)
        .map_err(|e| PolicyLoadError(vec![format!("{}: {e}", dir.display())]))?;
    for entry in entries {
        let path: PathBuf = entry
            .map_err(|e| PolicyLoadError(vec![format!("{}: {e}", dir.display())]))?
            .path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        if name.ends_with(".cedar") || name == "schema.cedarschema" {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| PolicyLoadError(vec![format!("{}: {e}", path.display())]))?;
            files.push((name, text));
        }
    }
    files.sort();
    Ok(files)
}

/// Load from `dir`, or the embedded copy of the shipped policies when `dir` is `None`.
pub fn load_policies(dir: Option<&Path>) -> Result<LoadedPolicies, PolicyLoadError> {
    let (mut files, source) = match dir {
        Some(d) => (read_dir(d)?, d.display().to_string()),
        None => (
            EMBEDDED
                .iter()
                .map(|(n, t)| (n.to_string(), t.to_string()))
                .collect(),
            "embedded".to_string(),
        ),
    };
    files.sort();
    let mut errors = Vec::new();
    let mut hasher = digest::Context::new(&digest::SHA256);
    for (name, text) in &files {
        hasher.update(&(name.len() as u64).to_be_bytes());
        hasher.update(name.as_bytes());
        hasher.update(&(text.len() as u64).to_be_bytes());
        hasher.update(text.as_bytes());
    }
    let hash = hex::encode(hasher.finish());

    let schema_text = files
        .iter()
        .find(|(n, _)| n == "schema.cedarschema")
        .map(|(_, t)| t.clone())
        .ok_or_else(|| PolicyLoadError(vec![format!("{source}: schema.cedarschema is missing")]))?;
    let schema = match Schema::from_cedarschema_str(&schema_text) {
        Ok((schema, _warnings)) => schema,
        Err(e) => {
            let line = line_of(&e, &schema_text)
                .map(|l| format!(":{l}"))
                .unwrap_or_default();
            return Err(PolicyLoadError(vec![format!(
                "schema.cedarschema{line}: {e}"
            )]));
        }
    };

    let mut set = PolicySet::new();
    let mut descriptions = BTreeMap::new();
    // Policy id → (file, file text) for locating validation errors.
    let mut origin: BTreeMap<String, (String, String)> = BTreeMap::new();
    for (name, text) in files.iter().filter(|(n, _)| n.ends_with(".cedar")) {
        let parsed = match PolicySet::from_str(text) {
            Ok(p) => p,
            Err(e) => {
                for err in e.iter() {
                    let line = line_of(err, text)
                        .map(|l| format!(":{l}"))
                        .unwrap_or_default();
                    errors.push(format!("{name}{line}: {err}"));
                }
                continue;
            }
        };
        if parsed.templates().next().is_some() {
            errors.push(format!("{name}: templates are not supported"));
        }
        for policy in parsed.policies() {
            let Some(id) = policy.annotation("id") else {
                errors.push(format!(
                    "{name}: a policy has no @id annotation: {}",
                    first_line(&policy.to_string())
                ));
                continue;
            };
            if policy.annotation("description").is_none() {
                errors.push(format!(
                    "{name}: policy `{id}` has no @description annotation"
                ));
            }
            if origin.contains_key(id) {
                errors.push(format!("{name}: policy id `{id}` is used twice"));
                continue;
            }
            descriptions.insert(
                id.to_string(),
                policy
                    .annotation("description")
                    .unwrap_or_default()
                    .to_string(),
            );
            origin.insert(id.to_string(), (name.clone(), text.clone()));
            if let Err(e) = set.add(policy.new_id(PolicyId::new(id))) {
                errors.push(format!("{name}: policy `{id}`: {e}"));
            }
        }
    }
    if !errors.is_empty() {
        return Err(PolicyLoadError(errors));
    }
    let result = Validator::new(schema.clone()).validate(&set, ValidationMode::Strict);
    for e in result.validation_errors() {
        let id = e.policy_id().to_string();
        let (file, line) = match origin.get(&id) {
            Some((file, text)) => (
                file.clone(),
                line_of(e, text)
                    .map(|l| format!(":{l}"))
                    .unwrap_or_default(),
            ),
            None => ("?".into(), String::new()),
        };
        errors.push(format!("{file}{line}: policy `{id}`: {e}"));
    }
    if !errors.is_empty() {
        return Err(PolicyLoadError(errors));
    }
    super::entities::check_shapes(&schema).map_err(|e| PolicyLoadError(vec![e]))?;
    let action_entities = schema
        .action_entities()
        .map_err(|e| PolicyLoadError(vec![format!("schema actions: {e}")]))?;
    let actions = action_entities
        .iter()
        .map(|e| (e.uid().id().unescaped().to_string(), e.clone()))
        .collect();
    let per_action = by_action(&set, &action_entities);
    Ok(LoadedPolicies {
        schema,
        policies: set,
        hash,
        descriptions,
        source,
        actions,
        per_action,
    })
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or_default().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies")
    }

    /// A temporary directory holding a copy of the shipped policy files, to alter in a test.
    fn copy_of_shipped() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for entry in std::fs::read_dir(shipped_dir()).unwrap() {
            let p = entry.unwrap().path();
            if p.is_file() {
                std::fs::copy(&p, dir.path().join(p.file_name().unwrap())).unwrap();
            }
        }
        dir
    }

    #[test]
    fn shipped_policies_validate_and_match_embedded() {
        let disk = load_policies(Some(&shipped_dir())).unwrap();
        let embedded = load_policies(None).unwrap();
        assert_eq!(disk.hash, embedded.hash, "embedded copy is stale");
        assert!(disk.descriptions.contains_key("tenant-isolation"));
    }

    #[test]
    fn invalid_policy_is_refused_with_file_line_and_id() {
        let dir = copy_of_shipped();
        std::fs::write(
            dir.path().join("bad.cedar"),
            "@id(\"bad-attr\")\n@description(\"uses an attribute that does not exist\")\npermit (principal, action == Keyplane::Action::\"Encrypt\", resource)\nwhen { resource.colour == \"red\" };\n",
        )
        .unwrap();
        let err = load_policies(Some(dir.path()))
            .err()
            .expect("must be refused");
        let msg = err.to_string();
        assert!(msg.contains("bad.cedar:4"), "{msg}");
        assert!(msg.contains("bad-attr"), "{msg}");
    }

    #[test]
    fn a_schema_that_does_not_describe_keyplane_entities_is_refused() {
        let dir = copy_of_shipped();
        // `spec` is an attribute keyplane sets on keys and no shipped policy reads.
        let schema = dir.path().join("schema.cedarschema");
        let text = std::fs::read_to_string(&schema).unwrap();
        let edited = text.replace("    spec: String,        // e.g. \"AES_256_GCM\"\n", "");
        assert_ne!(text, edited);
        std::fs::write(&schema, edited).unwrap();
        let msg = load_policies(Some(dir.path())).err().unwrap().to_string();
        assert!(msg.contains("does not describe the entities"), "{msg}");
        assert!(msg.contains("spec"), "{msg}");
    }

    #[test]
    fn missing_id_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(
            shipped_dir().join("schema.cedarschema"),
            dir.path().join("schema.cedarschema"),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("x.cedar"),
            "permit (principal, action, resource);",
        )
        .unwrap();
        let msg = load_policies(Some(dir.path())).err().unwrap().to_string();
        assert!(msg.contains("no @id"), "{msg}");
    }
}
