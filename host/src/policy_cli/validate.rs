//! `keyplane policy validate`: load the policy set with the server's loader
//! ([`crate::ops::reload_policies::load_policy_set`]) and report every reason it is refused,
//! each as `file:line: policy `id`: message`.

use std::path::Path;

/// Validate; prints a summary or the errors. Returns whether the set is valid.
pub fn run(dir: Option<&Path>) -> bool {
    let dir = super::policy_dir(dir);
    match crate::ops::reload_policies::load_policy_set(dir.as_deref()) {
        Ok(loaded) => {
            println!(
                "policy set OK: {} policies from {}, SHA-256 {}",
                loaded.descriptions.len(),
                loaded.source,
                loaded.hash
            );
            true
        }
        Err(e) => {
            eprintln!(
                "policy set INVALID ({}):",
                dir.as_deref()
                    .map(|d| d.display().to_string())
                    .unwrap_or_else(|| "embedded".into())
            );
            for line in &e.0 {
                eprintln!("  {line}");
            }
            false
        }
    }
}
