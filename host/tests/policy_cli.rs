//! `keyplane policy …` run as the real binary: validate, fmt, test, explain, who-can; and the
//! server side of policies: hot reload (operation and SIGHUP), the deletion guard, and the
//! policy set hash in audit records.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use common::{assert_error, copy_of_shipped_policies, policies_dir, Server, BIN};
use serde_json::json;

fn keyplane(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A copy of the shipped policies (schema and *.cedar, not the tests).
#[test]
fn validate_accepts_the_shipped_set_and_names_file_line_and_id() {
    let ok = keyplane(&["policy", "validate", "--policies", s(&policies_dir())]);
    assert!(ok.status.success(), "{}", text(&ok));
    assert!(text(&ok).contains("policy set OK"), "{}", text(&ok));

    let dir = tempfile::tempdir().unwrap();
    let copy = copy_of_shipped_policies(&dir.path().join("p"));
    std::fs::write(
        copy.join("bad.cedar"),
        "@id(\"uses-colour\")\n@description(\"an attribute keys do not have\")\npermit (principal, action == Keyplane::Action::\"Encrypt\", resource)\nwhen { resource.colour == \"red\" };\n",
    )
    .unwrap();
    let bad = keyplane(&["policy", "validate", "--policies", s(&copy)]);
    assert!(!bad.status.success());
    let out = text(&bad);
    assert!(
        out.contains("bad.cedar:4") && out.contains("uses-colour"),
        "{out}"
    );

    // A syntax error names the file and line too.
    std::fs::write(
        copy.join("bad.cedar"),
        "@id(\"x\")\n@description(\"d\")\npermit (principal, action, resource)\nwhen { principal.role == };\n",
    )
    .unwrap();
    let out = text(&keyplane(&["policy", "validate", "--policies", s(&copy)]));
    assert!(out.contains("bad.cedar:4"), "{out}");
}

#[test]
fn fmt_check_passes_on_the_shipped_set_and_lists_unformatted_files() {
    let ok = keyplane(&["policy", "fmt", "--check", "--policies", s(&policies_dir())]);
    assert!(ok.status.success(), "{}", text(&ok));

    let dir = tempfile::tempdir().unwrap();
    let copy = copy_of_shipped_policies(&dir.path().join("p"));
    let f = copy.join("random.cedar");
    let ugly = std::fs::read_to_string(&f)
        .unwrap()
        .replace("\n", "\n\n   ");
    std::fs::write(&f, &ugly).unwrap();
    let bad = keyplane(&["policy", "fmt", "--check", "--policies", s(&copy)]);
    assert!(!bad.status.success());
    assert!(text(&bad).contains("random.cedar"), "{}", text(&bad));
    assert_eq!(
        std::fs::read_to_string(&f).unwrap(),
        ugly,
        "--check changes nothing"
    );

    let fix = keyplane(&["policy", "fmt", "--policies", s(&copy)]);
    assert!(fix.status.success(), "{}", text(&fix));
    let again = keyplane(&["policy", "fmt", "--check", "--policies", s(&copy)]);
    assert!(again.status.success(), "{}", text(&again));
    assert_eq!(
        std::fs::read_to_string(&f).unwrap(),
        std::fs::read_to_string(policies_dir().join("random.cedar")).unwrap()
    );
}

#[test]
fn test_runs_the_shipped_cases_and_fails_on_a_wrong_expectation() {
    let tests = policies_dir().join("tests");
    let ok = keyplane(&[
        "policy",
        "test",
        "--policies",
        s(&policies_dir()),
        s(&tests),
    ]);
    assert!(ok.status.success(), "{}", text(&ok));
    assert!(text(&ok).contains(" 0 failed"), "{}", text(&ok));

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("wrong.toml");
    std::fs::write(
        &file,
        r#"
[[case]]
name = "a member creates keys (wrong)"
principal = { uid = 'User::"m"', parents = ['Tenant::"t"'], attrs = { tenant = 'Tenant::"t"', name = "m", kind = "user", role = "member", operator = false } }
action = "CreateKey"
resource = 'Tenant::"t"'
expect = "allow"

[[case]]
name = "right"
principal = { uid = 'User::"m"', parents = ['Tenant::"t"'], attrs = { tenant = 'Tenant::"t"', name = "m", kind = "user", role = "member", operator = false } }
action = "GenerateRandom"
resource = 'Tenant::"t"'
expect = "allow"
policies = ["tenant-members-generate-random"]
"#,
    )
    .unwrap();
    let bad = keyplane(&["policy", "test", "--policies", s(&policies_dir()), s(&file)]);
    assert!(!bad.status.success());
    let out = text(&bad);
    assert!(
        out.contains("FAIL") && out.contains("a member creates keys (wrong)"),
        "{out}"
    );
    assert!(
        out.contains("PASS") && out.contains("1 passed, 1 failed"),
        "{out}"
    );
}

#[test]
fn explain_a_request_file_shows_decision_ids_and_descriptions() {
    let dir = tempfile::tempdir().unwrap();
    let alice = json!({ "uid": "User::\"alice\"", "parents": ["Tenant::\"acme\""],
        "attrs": { "tenant": "Tenant::\"acme\"", "name": "alice", "kind": "user", "role": "admin", "operator": false } });
    let key = json!({ "uid": "Key::\"k\"", "parents": ["Tenant::\"acme\""],
        "attrs": { "tenant": "Tenant::\"acme\"", "spec": "AES_256_GCM", "usage": "encrypt-decrypt",
                   "protection": "hsm", "state": "enabled", "users": [] } });
    let allowed = dir.path().join("allowed.json");
    std::fs::write(
        &allowed,
        json!({ "principal": alice, "action": "DescribeKey", "resource": key }).to_string(),
    )
    .unwrap();
    let o = keyplane(&[
        "policy",
        "explain",
        "--policies",
        s(&policies_dir()),
        "--request",
        s(&allowed),
    ]);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(out.contains("decision: ALLOW"), "{out}");
    assert!(
        out.contains("tenant-admin-manages-keys: A tenant admin manages"),
        "{out}"
    );

    let denied = dir.path().join("denied.json");
    std::fs::write(
        &denied,
        json!({ "principal": alice, "action": "ScheduleKeyDeletion", "resource": key }).to_string(),
    )
    .unwrap();
    let out = text(&keyplane(&[
        "policy",
        "explain",
        "--policies",
        s(&policies_dir()),
        "--request",
        s(&denied),
    ]));
    assert!(out.contains("decision: DENY"), "{out}");
    assert!(
        out.contains("key-deletion-needs-mfa-or-approver: Guard:"),
        "{out}"
    );
}

/// Ids in `who-can` output.
fn who_can(data: &Path, action: &str, resource: &str) -> Vec<String> {
    let o = keyplane(&[
        "policy",
        "who-can",
        "--data-dir",
        s(data),
        "--policies",
        s(&policies_dir()),
        "--action",
        action,
        "--resource",
        resource,
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let mut ids: Vec<String> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split('\t').next().unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

#[tokio::test(flavor = "multi_thread")]
async fn who_can_matches_direct_calls_and_explain_reevaluates_audit_records() {
    let dir = tempfile::tempdir().unwrap();
    let s_ = Server::start(dir.path()).await;
    let srv = &s_;

    // Two tenants, an admin and four members each; the operator makes eleven principals.
    let mut principals: Vec<(String, String)> = Vec::new(); // (id, token)
    let operator_id: String = sqlx::query_scalar("SELECT id FROM principals WHERE operator = 1")
        .fetch_one(&srv.sql().await)
        .await
        .unwrap();
    principals.push((operator_id, srv.admin.clone()));
    let mut admins = Vec::new();
    let mut members = Vec::new();
    for tenant in ["acme", "globex"] {
        let (id, token) = srv.tenant_with_admin(tenant).await;
        principals.push((id, token.clone()));
        admins.push(token);
        for i in 0..4 {
            let p = srv
                .ok(
                    &srv.admin,
                    "create-principal",
                    json!({ "tenant_id": tenant, "name": format!("m{i}") }),
                )
                .await;
            let pair = (
                p["principal_id"].as_str().unwrap().to_string(),
                p["token"].as_str().unwrap().to_string(),
            );
            principals.push(pair.clone());
            members.push((tenant, pair));
        }
    }
    assert_eq!(principals.len(), 11);
    // An acme key granted to two acme members (not to its admin).
    let granted: Vec<String> = members[..2].iter().map(|(_, (id, _))| id.clone()).collect();
    let key = srv
        .ok(&admins[0], "create-key", json!({ "grants": granted }))
        .await["key_id"]
        .as_str()
        .unwrap()
        .to_string();
    let key_uid = format!("Key::\"{key}\"");

    for (action, op) in [("Encrypt", "encrypt"), ("DescribeKey", "describe-key")] {
        let listed = who_can(dir.path(), action, &key_uid);
        let mut direct = Vec::new();
        for (id, token) in &principals {
            let body = if op == "encrypt" {
                json!({ "key_id": key, "plaintext": common::b64(b"x") })
            } else {
                json!({ "key_id": key })
            };
            let (status, v) = srv.call(Some(token), op, body).await;
            match status {
                200 => direct.push(id.clone()),
                403 => assert_eq!(v["error"]["code"], "AccessDenied"),
                // A caller who may not describe the key is told it does not exist.
                404 => assert_eq!(v["error"]["code"], "NotFound"),
                other => panic!("{op} as {id}: {other} {v}"),
            }
        }
        direct.sort();
        assert_eq!(listed, direct, "who-can {action} differs from the API");
        assert!(!listed.is_empty());
    }
    assert_eq!(who_can(dir.path(), "Encrypt", &key_uid), {
        let mut g = granted.clone();
        g.sort();
        g
    });

    // Every decided record carries the hash of the set that decided it.
    let hash = text(&keyplane(&[
        "policy",
        "validate",
        "--policies",
        s(&policies_dir()),
    ]))
    .split("SHA-256 ")
    .nth(1)
    .unwrap()
    .trim()
    .to_string();
    let pool = srv.sql().await;
    let undecided: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM audit_log WHERE decision IN ('allow', 'deny') AND (policy_hash IS NULL OR policy_hash != ?)",
    )
    .bind(&hash)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(undecided, 0);
    let allowed_seq: i64 = sqlx::query_scalar(
        "SELECT seq FROM audit_log WHERE action = 'Encrypt' AND decision = 'allow' LIMIT 1",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    let denied_seq: i64 = sqlx::query_scalar(
        "SELECT seq FROM audit_log WHERE action = 'Encrypt' AND decision = 'deny' AND principal LIKE '%' || ? || '%' LIMIT 1",
    )
    .bind(&members[2].1 .0)
    .fetch_one(&pool)
    .await
    .unwrap();
    let explain = |seq: i64| {
        text(&keyplane(&[
            "policy",
            "explain",
            "--data-dir",
            s(dir.path()),
            "--policies",
            s(&policies_dir()),
            "--audit-seq",
            &seq.to_string(),
        ]))
    };
    let out = explain(allowed_seq);
    assert!(out.contains("RE-EVALUATION"), "{out}");
    assert!(out.contains("decision: ALLOW"), "{out}");
    assert!(
        out.contains("key-grantees-use-key: The principals a key is granted to"),
        "{out}"
    );
    assert!(out.contains("is the one that decided the record"), "{out}");
    let out = explain(denied_seq);
    assert!(
        out.contains("RE-EVALUATION") && out.contains("decision: DENY"),
        "{out}"
    );
    assert!(out.contains("no permit applies"), "{out}");

    // The same request by flags against the database.
    let out = text(&keyplane(&[
        "policy",
        "explain",
        "--data-dir",
        s(dir.path()),
        "--policies",
        s(&policies_dir()),
        "--principal",
        &granted[0],
        "--action",
        "Decrypt",
        "--resource",
        &key_uid,
    ]));
    assert!(out.contains("decision: ALLOW"), "{out}");

    // The deletion guard: an approver is a different admin of the tenant, who approved under
    // their own credentials (approve-key-deletion).
    let acme_admin = &admins[0];
    let body = json!({ "key_id": key });
    assert_error(
        &srv.call(Some(acme_admin), "schedule-key-deletion", body.clone())
            .await,
        403,
        "AccessDenied",
        "",
    );
    assert_error(
        &srv.schedule_deletion(acme_admin, acme_admin, body.clone())
            .await,
        400,
        "ValidationError",
        "its own",
    );
    // A member granted the key sees it, but may not approve.
    assert_error(
        &srv.schedule_deletion(acme_admin, &members[0].1 .1, body.clone())
            .await,
        403,
        "AccessDenied",
        "ApproveKeyDeletion",
    );
    // Another tenant's admin does not even see it.
    assert_error(
        &srv.schedule_deletion(acme_admin, &admins[1], body.clone())
            .await,
        404,
        "NotFound",
        "",
    );
    assert_error(
        &srv.schedule_deletion(acme_admin, "kp_not-a-token", body.clone())
            .await,
        401,
        "Unauthenticated",
        "",
    );
    let approver = srv.second_admin("acme").await;
    let (status, v) = srv.schedule_deletion(acme_admin, &approver, body).await;
    assert_eq!(status, 200, "{v}");
    let denied: String = sqlx::query_scalar(
        "SELECT policies FROM audit_log WHERE action = 'ScheduleKeyDeletion' AND decision = 'deny' LIMIT 1",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(
        denied.contains("key-deletion-needs-mfa-or-approver"),
        "{denied}"
    );

    let verify = srv.audit_verify();
    assert!(verify.status.success(), "{}", text(&verify));
}

async fn encrypt_status(srv: &Server, token: &str, key: &str) -> u16 {
    srv.call(
        Some(token),
        "encrypt",
        json!({ "key_id": key, "plaintext": common::b64(b"x") }),
    )
    .await
    .0
}

async fn policy_set(srv: &Server) -> String {
    let r = srv
        .client
        .get(format!("{}/readyz", srv.base))
        .send()
        .await
        .unwrap();
    r.json::<serde_json::Value>().await.unwrap()["policy_set"]
        .as_str()
        .unwrap()
        .to_string()
}

/// A reload whose audit record cannot be written changes nothing: the set is put in force
/// only once the record of its change is durable (here the database is locked by another
/// process, so the record cannot be written).
#[tokio::test(flavor = "multi_thread")]
async fn a_reload_that_cannot_be_recorded_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let policies = copy_of_shipped_policies(&dir.path().join("policies"));
    let data = dir.path().join("data");
    let srv = Server::start_with(
        &data,
        &policies,
        &[
            ("RUST_LOG", "warn"),
            ("KEYPLANE_LIFECYCLE__SCHEDULER_INTERVAL_SECONDS", "0"),
            ("KEYPLANE_DATABASE__BUSY_TIMEOUT_MS", "300"),
        ],
    )
    .await;
    let key = srv.create_key(&srv.admin, "envelope").await;
    let original = policy_set(&srv).await;
    std::fs::write(
        policies.join("freeze.cedar"),
        "@id(\"freeze-encrypt\")\n@description(\"test: nobody encrypts\")\nforbid (principal, action == Keyplane::Action::\"Encrypt\", resource);\n",
    )
    .unwrap();
    let locker = common::DatabaseLock::take(&data.join("keyplane.db"));
    assert_error(
        &srv.call(Some(&srv.admin), "reload-policies", json!({}))
            .await,
        503,
        "DatabaseUnavailable",
        "",
    );
    assert_eq!(
        policy_set(&srv).await,
        original,
        "an unrecorded reload took effect"
    );
    drop(locker);
    assert_eq!(encrypt_status(&srv, &srv.admin, &key).await, 200);
    // Recorded, it takes effect.
    let r = srv.ok(&srv.admin, "reload-policies", json!({})).await;
    assert_eq!(policy_set(&srv).await, r["policy_set"].as_str().unwrap());
    assert_ne!(policy_set(&srv).await, original);
    assert_eq!(encrypt_status(&srv, &srv.admin, &key).await, 403);
}

#[tokio::test(flavor = "multi_thread")]
async fn reload_refuses_an_invalid_set_and_installs_a_valid_one() {
    let dir = tempfile::tempdir().unwrap();
    let policies = copy_of_shipped_policies(&dir.path().join("policies"));
    let data = dir.path().join("data");
    let srv = Server::start_with_policies(&data, &policies).await;
    let (_, admin) = srv.tenant_with_admin("acme").await;
    let user = srv
        .ok(&admin, "create-principal", json!({ "name": "user" }))
        .await;
    let (user_id, user) = (
        user["principal_id"].as_str().unwrap().to_string(),
        user["token"].as_str().unwrap().to_string(),
    );
    let key = srv
        .ok(&admin, "create-key", json!({ "grants": [user_id] }))
        .await["key_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(encrypt_status(&srv, &user, &key).await, 200);
    let original = policy_set(&srv).await;

    // Only the operator reloads.
    assert_error(
        &srv.call(Some(&admin), "reload-policies", json!({})).await,
        403,
        "AccessDenied",
        "",
    );

    // An invalid set is refused with the reason; the old one keeps serving.
    std::fs::write(
        policies.join("broken.cedar"),
        "@id(\"broken-policy\")\n@description(\"refers to an attribute keys do not have\")\nforbid (principal, action == Keyplane::Action::\"Encrypt\", resource)\nwhen { resource.colour == \"red\" };\n",
    )
    .unwrap();
    let answer = srv
        .call(Some(&srv.admin), "reload-policies", json!({}))
        .await;
    assert_error(&answer, 400, "InvalidPolicySet", "broken.cedar:4");
    assert!(
        answer.1["error"]["message"]
            .as_str()
            .unwrap()
            .contains("broken-policy"),
        "{}",
        answer.1
    );
    assert_eq!(policy_set(&srv).await, original);
    assert_eq!(encrypt_status(&srv, &user, &key).await, 200);

    // A valid change is installed: encryption is frozen.
    std::fs::remove_file(policies.join("broken.cedar")).unwrap();
    std::fs::write(
        policies.join("freeze.cedar"),
        "@id(\"freeze-encrypt\")\n@description(\"test: nobody encrypts\")\nforbid (principal, action == Keyplane::Action::\"Encrypt\", resource);\n",
    )
    .unwrap();
    let r = srv.ok(&srv.admin, "reload-policies", json!({})).await;
    assert_eq!(r["previous_policy_set"], original.as_str());
    let frozen = r["policy_set"].as_str().unwrap().to_string();
    assert_ne!(frozen, original);
    assert!(r["policies"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p == "freeze-encrypt"));
    assert_eq!(policy_set(&srv).await, frozen);
    assert_eq!(encrypt_status(&srv, &user, &key).await, 403);
    let pool = srv.sql().await;
    let (policies_json, hash): (String, Option<String>) = sqlx::query_as(
        "SELECT policies, policy_hash FROM audit_log WHERE action = 'Encrypt' ORDER BY seq DESC LIMIT 1",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(policies_json.contains("freeze-encrypt"), "{policies_json}");
    assert_eq!(hash.as_deref(), Some(frozen.as_str()));

    // SIGHUP with an invalid set: refused, audited, the frozen set keeps serving.
    std::fs::write(policies.join("broken.cedar"), "permit (principal,").unwrap();
    let hup = || {
        let st = Command::new("kill")
            .arg("-HUP")
            .arg(srv.pid().to_string())
            .status()
            .unwrap();
        assert!(st.success());
    };
    hup();
    let mut refused = 0i64;
    for _ in 0..100 {
        refused = sqlx::query_scalar(
            "SELECT COUNT(*) FROM audit_log WHERE principal = 'keyplane:sighup' AND outcome = 'InvalidPolicySet'",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        if refused > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(refused, 1, "the refused SIGHUP reload is audited");
    assert_eq!(policy_set(&srv).await, frozen);
    assert_eq!(encrypt_status(&srv, &user, &key).await, 403);

    // SIGHUP with the original set back: encryption works again.
    std::fs::remove_file(policies.join("broken.cedar")).unwrap();
    std::fs::remove_file(policies.join("freeze.cedar")).unwrap();
    hup();
    let mut back = false;
    for _ in 0..100 {
        if policy_set(&srv).await == original {
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(back, "SIGHUP reloaded the original set");
    assert_eq!(encrypt_status(&srv, &user, &key).await, 200);

    let verify = srv.audit_verify();
    assert!(verify.status.success(), "{}", text(&verify));
}
