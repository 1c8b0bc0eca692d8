//! What a key has beside its material, on the native API: automatic rotation by period (the
//! scheduler rotates when it comes), tags (Cedar attributes: changing them changes
//! decisions), the stored key policy document (returned, never evaluated), and grants, which
//! Cedar honours through `context.granted` within their constraints until they are retired
//! or revoked.
#![cfg(all(feature = "test-hooks", debug_assertions))]

mod common;

use common::{assert_error, b64, unb64, Server};
use serde_json::{json, Value};

/// A tenant `acme` with an admin and two members: (admin, member, other member) tokens.
async fn acme(s: &Server) -> (String, String, String) {
    let (_, admin) = s.tenant_with_admin("acme").await;
    let mut members = Vec::new();
    for name in ["app", "ops"] {
        let p = s
            .ok(
                &admin,
                "create-principal",
                json!({ "tenant_id": "acme", "name": name }),
            )
            .await;
        members.push(p["token"].as_str().unwrap().to_string());
    }
    (admin, members[0].clone(), members[1].clone())
}

fn audit(s: &Server) -> Vec<Value> {
    let out = s.tool(&["audit", "export"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn automatic_rotation_rotates_when_its_period_comes_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_quiet(dir.path()).await;
    let key = s.create_key(&s.admin, "envelope").await;
    let status = s
        .ok(
            &s.admin,
            "get-key-rotation-status",
            json!({ "key_id": key }),
        )
        .await;
    assert_eq!(status["rotation_enabled"], false, "{status}");
    assert_error(
        &s.call(
            Some(&s.admin),
            "enable-key-rotation",
            json!({ "key_id": key, "rotation_period_days": 0 }),
        )
        .await,
        400,
        "ValidationError",
        "1 to 2560",
    );
    let status = s
        .ok(
            &s.admin,
            "enable-key-rotation",
            json!({ "key_id": key, "rotation_period_days": 90 }),
        )
        .await;
    assert_eq!(status["rotation_period_days"], 90);
    let ct = s.encrypt(&s.admin, &key, b"before", json!({})).await;

    // Not yet: nothing rotates.
    s.advance_clock(89 * 86_400).await;
    let pass = s.ok(&s.admin, "run-scheduler", json!({})).await;
    assert_eq!(pass["rotated"], json!([]), "{pass}");
    // Its period came: one rotation, marked automatic, and the next one period on.
    let now = s.advance_clock(2 * 86_400).await;
    let pass = s.ok(&s.admin, "run-scheduler", json!({})).await;
    assert_eq!(pass["rotated"][0]["key_id"], key.as_str(), "{pass}");
    assert_eq!(pass["rotated"][0]["period_days"], 90);
    let versions = s
        .ok(&s.admin, "list-key-versions", json!({ "key_id": key }))
        .await;
    assert_eq!(versions["primary_version"], 2, "{versions}");
    assert!(versions["versions"][0].get("rotation").is_none());
    assert_eq!(versions["versions"][1]["rotation"], "automatic");
    let status = s
        .ok(
            &s.admin,
            "get-key-rotation-status",
            json!({ "key_id": key }),
        )
        .await;
    let next = chrono::DateTime::parse_from_rfc3339(status["next_rotation_at"].as_str().unwrap())
        .unwrap()
        .timestamp();
    assert_eq!(next, now + 90 * 86_400, "{status}");
    let pass = s.ok(&s.admin, "run-scheduler", json!({})).await;
    assert_eq!(pass["rotated"], json!([]), "once per period: {pass}");
    let (st, d) = s.decrypt(&s.admin, &ct, json!({})).await;
    assert_eq!((st, unb64(&d["plaintext"])), (200, b"before".to_vec()));

    // On demand is told apart; turned off, the period no longer rotates.
    s.ok(&s.admin, "rotate-key", json!({ "key_id": key })).await;
    s.ok(&s.admin, "disable-key-rotation", json!({ "key_id": key }))
        .await;
    s.advance_clock(400 * 86_400).await;
    let pass = s.ok(&s.admin, "run-scheduler", json!({})).await;
    assert_eq!(pass["rotated"], json!([]), "{pass}");
    let versions = s
        .ok(&s.admin, "list-key-versions", json!({ "key_id": key }))
        .await;
    assert_eq!(
        versions["versions"][2]["rotation"], "on-demand",
        "{versions}"
    );
    assert_eq!(versions["versions"].as_array().unwrap().len(), 3);

    // Imported material cannot be renewed by keyplane.
    let external = s
        .ok(&s.admin, "create-key", json!({ "origin": "external" }))
        .await["key_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_error(
        &s.call(
            Some(&s.admin),
            "enable-key-rotation",
            json!({ "key_id": external }),
        )
        .await,
        409,
        "InvalidState",
        "pending import",
    );
    assert!(audit(&s)
        .iter()
        .any(|r| r["principal"] == "keyplane:scheduler"
            && r["action"] == "RotateKey"
            && r["resource"].as_str().unwrap().contains("period-days:90")));
    s.assert_audit_verifies();
}

/// Random 96-bit nonces allow one key about 2^32 messages (NIST SP 800-38D): a version that
/// has sealed that many (less keyplane's margin) seals no more, though its ciphertexts still
/// open; the scheduler rotates an encryption key whose primary version has sealed 2^31, long
/// before that, whatever its schedule. (The counts are set in the database: sealing 2^31
/// messages is not a test.)
#[tokio::test(flavor = "multi_thread")]
async fn a_version_seals_no_more_than_random_nonces_allow_and_is_rotated_before() {
    const LIMIT: i64 = (1 << 32) - (1 << 28);
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_quiet(dir.path()).await;
    let envelope = s.create_key(&s.admin, "envelope").await;
    let hsm = s.create_key(&s.admin, "hsm").await;
    let fresh = s.create_key(&s.admin, "envelope").await;
    let ct = s.encrypt(&s.admin, &envelope, b"before", json!({})).await;
    let db = s.sql_any_writable().await;
    for (key, sealed) in [(&envelope, LIMIT), (&hsm, LIMIT - 1)] {
        sqlx::query("UPDATE key_versions SET encryptions = $1 WHERE key_id = $2 AND version = 1")
            .bind(sealed)
            .bind(key.as_str())
            .execute(&db)
            .await
            .unwrap();
    }
    // The rows' caches keep a row for a second.
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;

    for op in ["encrypt", "generate-data-key"] {
        let body = if op == "encrypt" {
            json!({ "key_id": envelope, "plaintext": b64(b"after") })
        } else {
            json!({ "key_id": envelope, "key_spec": "AES_256" })
        };
        assert_error(
            &s.call(Some(&s.admin), op, body).await,
            409,
            "InvalidState",
            "random 96-bit nonces",
        );
    }
    // One below the limit still seals (this one is the last).
    s.encrypt(&s.admin, &hsm, b"last", json!({})).await;
    let (st, d) = s.decrypt(&s.admin, &ct, json!({})).await;
    assert_eq!((st, unb64(&d["plaintext"])), (200, b"before".to_vec()));

    // The scheduler rotates both, and only them.
    let pass = s.ok(&s.admin, "run-scheduler", json!({})).await;
    let mut rotated: Vec<(String, i64)> = pass["rotated"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            assert_eq!(r["version"], 2, "{pass}");
            (
                r["key_id"].as_str().unwrap().to_string(),
                r["sealed"].as_i64().unwrap(),
            )
        })
        .collect();
    rotated.sort();
    let mut expected = vec![envelope.clone(), hsm.clone()];
    expected.sort();
    assert_eq!(
        rotated.iter().map(|r| r.0.clone()).collect::<Vec<_>>(),
        expected,
        "{pass}"
    );
    // At least what was set (the first encryption's count may be written after it).
    assert!(
        rotated.iter().all(|r| (LIMIT..=LIMIT + 1).contains(&r.1)),
        "{pass}"
    );
    assert!(!pass.to_string().contains(&fresh));
    let again = s.ok(&s.admin, "run-scheduler", json!({})).await;
    assert_eq!(again["rotated"], json!([]), "{again}");

    // The new primary seals; the old version's ciphertexts open.
    let after = s.encrypt(&s.admin, &envelope, b"after", json!({})).await;
    let (st, d) = s.decrypt(&s.admin, &after, json!({})).await;
    assert_eq!((st, unb64(&d["plaintext"])), (200, b"after".to_vec()));
    let (st, d) = s.decrypt(&s.admin, &ct, json!({})).await;
    assert_eq!((st, unb64(&d["plaintext"])), (200, b"before".to_vec()));
    let versions = s
        .ok(&s.admin, "list-key-versions", json!({ "key_id": hsm }))
        .await;
    assert_eq!(
        versions["versions"][1]["rotation"], "automatic",
        "{versions}"
    );
    assert!(audit(&s)
        .iter()
        .any(|r| r["principal"] == "keyplane:scheduler"
            && r["action"] == "RotateKey"
            && r["resource"].as_str().unwrap().contains("sealed:40265318")));
    s.assert_audit_verifies();
}

#[tokio::test(flavor = "multi_thread")]
async fn tags_are_cedar_attributes_and_only_admins_change_them() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_quiet(dir.path()).await;
    let (admin, member, _) = acme(&s).await;
    let member_id = s.principal_id(&member).await;
    let key = s
        .ok(&admin, "create-key", json!({ "grants": [member_id] }))
        .await["key_id"]
        .as_str()
        .unwrap()
        .to_string();
    s.encrypt(&member, &key, b"x", json!({})).await;

    // Tagged purpose=backup, the shipped guard now wants that purpose in the context.
    s.ok(
        &admin,
        "tag-key",
        json!({ "key_id": key, "tags": { "purpose": "backup", "team": "a", "env": "x" } }),
    )
    .await;
    let plain = json!({ "key_id": key, "plaintext": b64(b"x") });
    assert_error(
        &s.call(Some(&member), "encrypt", plain.clone()).await,
        403,
        "AccessDenied",
        "",
    );
    s.encrypt(&member, &key, b"x", json!({ "purpose": "backup" }))
        .await;
    // A key user does not untag its way around it.
    assert_error(
        &s.call(
            Some(&member),
            "untag-key",
            json!({ "key_id": key, "tag_keys": ["purpose"] }),
        )
        .await,
        403,
        "AccessDenied",
        "",
    );
    let listed = s
        .ok(
            &admin,
            "list-key-tags",
            json!({ "key_id": key, "limit": 2 }),
        )
        .await;
    assert_eq!(
        listed["tags"],
        json!([{ "tag_key": "env", "tag_value": "x" }, { "tag_key": "purpose", "tag_value": "backup" }])
    );
    let rest = s
        .ok(
            &admin,
            "list-key-tags",
            json!({ "key_id": key, "next_token": listed["next_token"] }),
        )
        .await;
    assert_eq!(
        rest["tags"],
        json!([{ "tag_key": "team", "tag_value": "a" }])
    );
    assert!(rest.get("next_token").is_none());
    s.ok(
        &admin,
        "untag-key",
        json!({ "key_id": key, "tag_keys": ["purpose"] }),
    )
    .await;
    let (status, v) = s.call(Some(&member), "encrypt", plain).await;
    assert_eq!(status, 200, "untagged, the guard no longer applies: {v}");
    let described = s.ok(&admin, "describe-key", json!({ "key_id": key })).await;
    assert_eq!(described["tags"], json!({ "env": "x", "team": "a" }));

    s.ok(
        &admin,
        "update-key-description",
        json!({ "key_id": key, "description": "payments" }),
    )
    .await;
    let described = s.ok(&admin, "describe-key", json!({ "key_id": key })).await;
    assert_eq!(described["description"], "payments");
    let many: serde_json::Map<String, Value> =
        (0..51).map(|i| (format!("t{i}"), json!("v"))).collect();
    assert_error(
        &s.call(
            Some(&admin),
            "tag-key",
            json!({ "key_id": key, "tags": many }),
        )
        .await,
        400,
        "ValidationError",
        "at most 50",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_key_policy_document_is_stored_and_returned_but_cedar_decides() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_quiet(dir.path()).await;
    let (admin, _, _) = acme(&s).await;
    let key = s.create_key(&admin, "envelope").await;
    let account = s
        .ok(&s.admin, "create-tenant", json!({ "tenant_id": "probe" }))
        .await["account_id"]
        .as_str()
        .unwrap()
        .len();
    assert_eq!(account, 12);
    let policy = s
        .ok(&admin, "get-key-policy", json!({ "key_id": key }))
        .await;
    let doc: Value = serde_json::from_str(policy["policy"].as_str().unwrap()).unwrap();
    assert_eq!(doc["Statement"][0]["Action"], "kms:*", "{doc}");
    assert!(doc["Statement"][0]["Principal"]["AWS"]
        .as_str()
        .unwrap()
        .ends_with(":root"));
    assert_error(
        &s.call(
            Some(&admin),
            "put-key-policy",
            json!({ "key_id": key, "policy": "[1, 2]" }),
        )
        .await,
        400,
        "ValidationError",
        "JSON object",
    );
    assert_error(
        &s.call(
            Some(&admin),
            "get-key-policy",
            json!({ "key_id": key, "policy_name": "other" }),
        )
        .await,
        404,
        "NotFound",
        "other",
    );
    let deny_all = json!({ "Version": "2012-10-17", "Statement": [
        { "Effect": "Deny", "Principal": "*", "Action": "kms:*", "Resource": "*" } ] })
    .to_string();
    s.ok(
        &admin,
        "put-key-policy",
        json!({ "key_id": key, "policy": deny_all }),
    )
    .await;
    let back = s
        .ok(&admin, "get-key-policy", json!({ "key_id": key }))
        .await;
    assert_eq!(back["policy"], deny_all.as_str());
    // The document is not evaluated: the Cedar policies still allow the key's user.
    s.encrypt(&admin, &key, b"still allowed", json!({})).await;
    let names = s
        .ok(&admin, "list-key-policies", json!({ "key_id": key }))
        .await;
    assert_eq!(names["policy_names"], json!(["default"]));
}

#[tokio::test(flavor = "multi_thread")]
async fn grants_are_honoured_by_cedar_within_their_constraints_until_retired_or_revoked() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_quiet(dir.path()).await;
    let (admin, app, ops) = acme(&s).await;
    let (app_id, ops_id) = (s.principal_id(&app).await, s.principal_id(&ops).await);
    let key = s.create_key(&admin, "envelope").await;
    let other = s.create_key(&admin, "envelope").await;
    let enc =
        |ec: Value| json!({ "key_id": key, "plaintext": b64(b"x"), "encryption_context": ec });

    // No grant: the key is not even visible to app.
    assert_error(
        &s.call(Some(&app), "encrypt", enc(json!({}))).await,
        404,
        "NotFound",
        &key,
    );
    // A grant by name, with an exact encryption context.
    let g = s
        .ok(
            &admin,
            "create-grant",
            json!({ "key_id": key, "grantee_principal": "app", "operations": ["Encrypt", "Decrypt"],
                    "constraints": { "encryption_context_equals": { "app": "billing" } },
                    "retiring_principal": ops_id }),
        )
        .await;
    let grant_id = g["grant_id"].as_str().unwrap().to_string();
    let ct = s
        .encrypt(&app, &key, b"bill", json!({ "app": "billing" }))
        .await;
    let (st, d) = s.decrypt(&app, &ct, json!({ "app": "billing" })).await;
    assert_eq!((st, unb64(&d["plaintext"])), (200, b"bill".to_vec()));
    for ec in [json!({}), json!({ "app": "billing", "more": "x" })] {
        let (status, v) = s.call(Some(&app), "encrypt", enc(ec)).await;
        assert_eq!(status, 404, "outside the constraint: {v}");
    }
    // The decision names the policy that allowed it.
    let records = audit(&s);
    let allowed = records
        .iter()
        .find(|r| {
            r["action"] == "Encrypt"
                && r["decision"] == "allow"
                && r["principal"].as_str().unwrap().contains(&app_id)
        })
        .unwrap();
    assert_eq!(
        allowed["policies"],
        json!(["key-grants-honoured"]),
        "{allowed}"
    );
    // ...and the grant it used, as CloudTrail names a request's grant (each use: the decrypt
    // too); an allowed request owed to policies alone names none.
    for action in ["Encrypt", "Decrypt"] {
        let uses: Vec<&Value> = records
            .iter()
            .filter(|r| {
                r["action"] == action
                    && r["decision"] == "allow"
                    && r["principal"].as_str().unwrap().contains(&app_id)
            })
            .collect();
        assert!(!uses.is_empty(), "{action}");
        for r in uses {
            let resource = r["resource"].as_str().unwrap();
            assert!(resource.ends_with(&format!(" via grant:{grant_id}")), "{r}");
        }
    }
    assert!(records
        .iter()
        .filter(|r| !r["principal"].as_str().unwrap().contains(&app_id))
        .all(|r| !r["resource"].as_str().unwrap().contains("via grant:")));
    // Nothing else on this key, nothing on another.
    assert_error(
        &s.call(
            Some(&app),
            "generate-data-key",
            json!({ "key_id": key, "encryption_context": { "app": "billing" } }),
        )
        .await,
        404,
        "NotFound",
        "",
    );
    let (status, _) = s
        .call(
            Some(&app),
            "encrypt",
            json!({ "key_id": other, "plaintext": b64(b"x"), "encryption_context": { "app": "billing" } }),
        )
        .await;
    assert_eq!(status, 404);

    // ops is the retiring principal: it may retire this grant (and nothing else about it).
    let listed = s.ok(&ops, "list-retirable-grants", json!({})).await;
    assert_eq!(listed["grants"][0]["grant_id"], grant_id.as_str());
    assert_eq!(listed["grants"][0]["grantee_name"], "app");
    assert_error(
        &s.call(Some(&app), "retire-grant", json!({ "grant_id": grant_id }))
            .await,
        404,
        "NotFound",
        "",
    );
    s.ok(&ops, "retire-grant", json!({ "grant_token": grant_id }))
        .await;
    // Gone at once (the row cache sees the commit).
    let (status, _) = s
        .call(Some(&app), "encrypt", enc(json!({ "app": "billing" })))
        .await;
    assert_eq!(status, 404);

    // A grantee granted CreateGrant passes on what its grant holds and no more (AWS: the same
    // or fewer operations): not Encrypt to another, nor Decrypt to itself. A grant naming
    // RetireGrant lets its grantee retire it.
    s.ok(
        &admin,
        "create-grant",
        json!({ "key_id": key, "grantee_principal": app_id,
                "operations": ["CreateGrant", "DescribeKey", "RetireGrant"] }),
    )
    .await;
    for (grantee, operations) in [
        ("ops", json!(["Encrypt"])),
        ("app", json!(["Decrypt"])),
        ("ops", json!(["DescribeKey", "Encrypt"])),
    ] {
        assert_error(
            &s.call(
                Some(&app),
                "create-grant",
                json!({ "key_id": key, "grantee_principal": grantee, "operations": operations }),
            )
            .await,
            403,
            "AccessDenied",
            "CreateGrant",
        );
    }
    let refused = audit(&s)
        .into_iter()
        .filter(|r| {
            r["action"] == "CreateGrant"
                && r["principal"].as_str().unwrap().contains(&app_id)
                && r["outcome"] == "AccessDenied"
        })
        .collect::<Vec<_>>();
    assert_eq!(refused.len(), 3, "{refused:?}");
    assert!(
        refused.iter().all(|r| r["decision"] == "deny"),
        "{refused:?}"
    );
    let (status, _) = s
        .call(
            Some(&ops),
            "encrypt",
            json!({ "key_id": key, "plaintext": b64(b"x") }),
        )
        .await;
    assert_eq!(status, 404, "no grant was made");
    let passed = s
        .ok(
            &app,
            "create-grant",
            json!({ "key_id": key, "grantee_principal": "ops", "operations": ["DescribeKey"] }),
        )
        .await;
    s.ok(&ops, "describe-key", json!({ "key_id": key })).await;
    // Listing grants is an admin's action (app may describe the key: a plain refusal).
    assert_error(
        &s.call(Some(&app), "list-grants", json!({ "key_id": key }))
            .await,
        403,
        "AccessDenied",
        "",
    );
    let all = s
        .ok(&admin, "list-grants", json!({ "key_id": key, "limit": 1 }))
        .await;
    assert!(all["next_token"].is_string(), "{all}");
    let own = s
        .ok(
            &admin,
            "list-grants",
            json!({ "key_id": key, "grantee_principal": app_id }),
        )
        .await;
    let own_id = own["grants"][0]["grant_id"].as_str().unwrap().to_string();
    // By name too (as the AWS front's user ARN names it): the same grants.
    let by_name = s
        .ok(
            &admin,
            "list-grants",
            json!({ "key_id": key, "grantee_principal": "app" }),
        )
        .await;
    assert_eq!(by_name["grants"], own["grants"], "{by_name}");
    assert!(!own["grants"].as_array().unwrap().is_empty());
    s.ok(&app, "retire-grant", json!({ "grant_id": own_id }))
        .await;
    // An admin revokes what app passed on.
    s.ok(
        &admin,
        "revoke-grant",
        json!({ "key_id": key, "grant_id": passed["grant_id"] }),
    )
    .await;
    let (status, _) = s
        .call(Some(&ops), "describe-key", json!({ "key_id": key }))
        .await;
    assert_eq!(status, 404);

    // Grants stay in their tenant; only grantable actions; constraints only on operations
    // that take an encryption context; a name makes creation idempotent.
    let (_, globex) = s.tenant_with_admin("globex").await;
    let outsider = s.principal_id(&globex).await;
    assert_error(
        &s.call(
            Some(&admin),
            "create-grant",
            json!({ "key_id": key, "grantee_principal": outsider, "operations": ["Decrypt"] }),
        )
        .await,
        404,
        "NotFound",
        &outsider,
    );
    assert_error(
        &s.call(
            Some(&admin),
            "create-grant",
            json!({ "key_id": key, "grantee_principal": "app", "operations": ["ScheduleKeyDeletion"] }),
        )
        .await,
        400,
        "ValidationError",
        "cannot be granted",
    );
    assert_error(
        &s.call(
            Some(&admin),
            "create-grant",
            json!({ "key_id": key, "grantee_principal": "app", "operations": ["Sign"],
                    "constraints": { "encryption_context_subset": { "a": "b" } } }),
        )
        .await,
        400,
        "ValidationError",
        "Sign does not",
    );
    let named = json!({ "key_id": key, "grantee_principal": "app", "operations": ["Decrypt"], "name": "n1" });
    let first = s.ok(&admin, "create-grant", named.clone()).await;
    let second = s.ok(&admin, "create-grant", named).await;
    assert_eq!(first["grant_id"], second["grant_id"]);
    s.assert_audit_verifies();
}

/// An empty constraint map is no constraint (Terraform's `aws_kms_grant` sends both maps,
/// one empty); both given and non-empty are refused, and a constraint has at most 8 pairs, as
/// AWS. A constrained grant may also name DescribeKey, RetireGrant and CreateGrant (AWS: the
/// constraint does not apply to them), and a grant made through its CreateGrant is at least
/// as strict: a subset constraint with the same pairs or more, or an equals constraint that
/// contains them; an equals constraint passes on only itself.
#[tokio::test(flavor = "multi_thread")]
async fn constrained_grants_and_the_grants_made_through_them() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_quiet(dir.path()).await;
    let (admin, app, ops) = acme(&s).await;
    let key = s.create_key(&admin, "envelope").await;
    let constraints_of = |id: &Value| {
        let s = &s;
        let admin = admin.clone();
        let (key, id) = (key.clone(), id.clone());
        async move {
            let listed = s
                .ok(
                    &admin,
                    "list-grants",
                    json!({ "key_id": key, "grant_id": id }),
                )
                .await;
            listed["grants"][0]["constraints"].clone()
        }
    };

    // Terraform's two maps, the unused one empty; a retry of the same name is the same grant.
    let terraform = json!({ "key_id": key, "grantee_principal": "app", "name": "tf",
        "operations": ["Encrypt", "Decrypt"],
        "constraints": { "encryption_context_subset": { "app": "billing" },
                         "encryption_context_equals": {} } });
    let made = s.ok(&admin, "create-grant", terraform.clone()).await;
    let again = s.ok(&admin, "create-grant", terraform).await;
    assert_eq!(made["grant_id"], again["grant_id"]);
    assert_eq!(
        constraints_of(&made["grant_id"]).await,
        json!({ "encryption_context_subset": { "app": "billing" } })
    );
    s.encrypt(&app, &key, b"x", json!({ "app": "billing", "more": "y" }))
        .await;
    let (status, _) = s
        .call(
            Some(&app),
            "encrypt",
            json!({ "key_id": key, "plaintext": b64(b"x") }),
        )
        .await;
    assert_eq!(status, 404, "the subset constraint holds");
    // Both empty: no constraint at all.
    let open = s
        .ok(
            &admin,
            "create-grant",
            json!({ "key_id": key, "grantee_principal": "ops", "operations": ["Encrypt"],
                    "constraints": { "encryption_context_subset": {},
                                     "encryption_context_equals": {} } }),
        )
        .await;
    assert_eq!(constraints_of(&open["grant_id"]).await, Value::Null);
    s.encrypt(&ops, &key, b"x", json!({})).await;
    // Both given: refused; more than 8 pairs: refused.
    let nine: serde_json::Map<String, Value> =
        (0..9).map(|i| (format!("k{i}"), json!("v"))).collect();
    for (constraints, message) in [
        (
            json!({ "encryption_context_subset": { "a": "1" },
                    "encryption_context_equals": { "a": "1" } }),
            "encryption_context_subset or encryption_context_equals",
        ),
        (json!({ "encryption_context_subset": nine }), "at most 8"),
    ] {
        assert_error(
            &s.call(
                Some(&admin),
                "create-grant",
                json!({ "key_id": key, "grantee_principal": "app", "operations": ["Decrypt"],
                        "constraints": constraints }),
            )
            .await,
            400,
            "ValidationError",
            message,
        );
    }

    // A constrained grant naming CreateGrant, DescribeKey and RetireGrant besides Decrypt.
    let key = s.create_key(&admin, "envelope").await;
    let held = s
        .ok(
            &admin,
            "create-grant",
            json!({ "key_id": key, "grantee_principal": "app",
                    "operations": ["CreateGrant", "Decrypt", "DescribeKey", "RetireGrant"],
                    "constraints": { "encryption_context_subset": { "app": "billing" } } }),
        )
        .await;
    let pass_on = |constraints: Value| {
        json!({ "key_id": key, "grantee_principal": "ops", "operations": ["Decrypt"],
                "constraints": constraints })
    };
    for stricter in [
        json!({ "encryption_context_subset": { "app": "billing" } }),
        json!({ "encryption_context_subset": { "app": "billing", "team": "a" } }),
        json!({ "encryption_context_equals": { "app": "billing", "team": "a" } }),
    ] {
        s.ok(&app, "create-grant", pass_on(stricter)).await;
    }
    for looser in [
        Value::Null,
        json!({ "encryption_context_subset": { "team": "a" } }),
        json!({ "encryption_context_subset": { "app": "payroll" } }),
        json!({ "encryption_context_equals": { "team": "a" } }),
    ] {
        assert_error(
            &s.call(Some(&app), "create-grant", pass_on(looser)).await,
            403,
            "AccessDenied",
            "CreateGrant",
        );
    }
    // Operations beyond the grant's are refused, however strict the constraint.
    assert_error(
        &s.call(
            Some(&app),
            "create-grant",
            json!({ "key_id": key, "grantee_principal": "ops", "operations": ["Encrypt"],
                    "constraints": { "encryption_context_equals": { "app": "billing" } } }),
        )
        .await,
        403,
        "AccessDenied",
        "CreateGrant",
    );
    // DescribeKey, which takes no encryption context, is allowed whatever the constraint
    // (before, the constraint was checked against the request's empty context, and it was
    // refused as if the key did not exist).
    let described = s.ok(&app, "describe-key", json!({ "key_id": key })).await;
    assert_eq!(described["key_id"], key.as_str(), "{described}");
    // Its grantee retires it (RetireGrant, which takes no encryption context).
    s.ok(
        &app,
        "retire-grant",
        json!({ "grant_id": held["grant_id"] }),
    )
    .await;

    // An equals constraint passes on only itself.
    s.ok(
        &admin,
        "create-grant",
        json!({ "key_id": key, "grantee_principal": "app", "operations": ["CreateGrant", "Decrypt"],
                "constraints": { "encryption_context_equals": { "app": "billing" } } }),
    )
    .await;
    s.ok(
        &app,
        "create-grant",
        pass_on(json!({ "encryption_context_equals": { "app": "billing" } })),
    )
    .await;
    for looser in [
        json!({ "encryption_context_subset": { "app": "billing" } }),
        json!({ "encryption_context_equals": { "app": "billing", "team": "a" } }),
    ] {
        assert_error(
            &s.call(Some(&app), "create-grant", pass_on(looser)).await,
            403,
            "AccessDenied",
            "CreateGrant",
        );
    }
    s.assert_audit_verifies();
}

/// A grant is made only on the key as it was when the request was authorized: a key
/// scheduled for deletion and destroyed meanwhile (its grants deleted with it) gets none
/// after. Before, the creation inserted its grant once the destruction had deleted the key's
/// grants, and it lived on. (A key already pending deletion gets no grant at all.)
#[tokio::test(flavor = "multi_thread")]
async fn no_grant_is_made_on_a_key_destroyed_meanwhile() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_quiet(dir.path()).await;
    let (admin, _, _) = acme(&s).await;
    let key = s.create_key(&admin, "envelope").await;
    let approver = s.second_admin("acme").await;
    let grant = s.call(
        Some(&admin),
        "create-grant",
        json!({ "key_id": key, "grantee_principal": "app", "operations": ["Decrypt"] }),
    );
    let destroyed = async {
        let (status, v) = s
            .schedule_deletion(
                &admin,
                &approver,
                json!({ "key_id": key, "pending_window_days": 7 }),
            )
            .await;
        assert_eq!(status, 200, "{v}");
        s.advance_clock(8 * 86400).await;
        s.ok(&s.admin, "run-scheduler", json!({})).await;
    };
    let answer = s
        .interleaved("create-grant:resolved", &key, grant, destroyed)
        .await;
    assert_error(
        &answer,
        409,
        "InvalidState",
        "changed while this request ran",
    );
    let described = s.ok(&admin, "describe-key", json!({ "key_id": key })).await;
    assert_eq!(described["state"], "destroyed", "{described}");
    let pool = s.sql_any().await;
    let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM grants WHERE key_id = $1")
        .bind(&key)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(left, 0);
    // As AWS: none on a key pending deletion or disabled, either.
    let other = s.create_key(&admin, "envelope").await;
    s.ok(&admin, "disable-key", json!({ "key_id": other }))
        .await;
    let answer = s
        .call(
            Some(&admin),
            "create-grant",
            json!({ "key_id": other, "grantee_principal": "app", "operations": ["Decrypt"] }),
        )
        .await;
    assert_error(&answer, 409, "InvalidState", "disabled");
}

/// Two `create-grant`s of the same name at once make one grant, and a key's 500-grant limit
/// holds for creations at once: both are decided inside the write transaction, the second
/// creation seeing the first's grant (here it reaches the decision after the other committed,
/// from a resolution made before).
#[tokio::test(flavor = "multi_thread")]
async fn concurrent_creations_keep_a_name_once_and_the_grant_limit() {
    use futures::StreamExt as _;
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_quiet(dir.path()).await;
    let (admin, _, _) = acme(&s).await;
    let key = s.create_key(&admin, "envelope").await;
    let count = |key: String| {
        let s = &s;
        let admin = admin.clone();
        async move {
            let mut n = 0;
            let mut next: Option<String> = None;
            loop {
                let page = s
                    .ok(
                        &admin,
                        "list-grants",
                        json!({ "key_id": key, "limit": 100, "next_token": next }),
                    )
                    .await;
                n += page["grants"].as_array().unwrap().len();
                match page["next_token"].as_str() {
                    Some(t) => next = Some(t.to_string()),
                    None => return n,
                }
            }
        }
    };

    let named = json!({ "key_id": key, "grantee_principal": "app", "operations": ["Decrypt"],
                        "name": "once" });
    let first = s.call(Some(&admin), "create-grant", named.clone());
    let meanwhile = async {
        s.ok(&admin, "create-grant", named.clone()).await;
    };
    let (status, first) = s
        .interleaved("create-grant:resolved", &key, first, meanwhile)
        .await;
    assert_eq!(status, 200, "{first}");
    let listed = s.ok(&admin, "list-grants", json!({ "key_id": key })).await;
    assert_eq!(listed["grants"].as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed["grants"][0]["grant_id"], first["grant_id"]);
    // Both inside their transactions at once: the second reads the grants only once the first
    // has committed (PostgreSQL: the key's row is held; SQLite: one writer).
    let other = s.create_key(&admin, "envelope").await;
    let named = json!({ "key_id": other, "grantee_principal": "app", "operations": ["Decrypt"],
                        "name": "once" });
    s.pause("create-grant:read", &other, "arm").await;
    let first = s.call(Some(&admin), "create-grant", named.clone());
    let rest = async {
        let reached = s.pause("create-grant:read", &other, "wait").await;
        assert_eq!(reached["reached"], true);
        let second = s.call(Some(&admin), "create-grant", named.clone());
        let release = async {
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            s.pause("create-grant:read", &other, "release").await;
        };
        tokio::join!(second, release).0
    };
    let ((status, first), (again, second)) = tokio::join!(first, rest);
    assert_eq!((status, again), (200, 200), "{first} {second}");
    assert_eq!(first["grant_id"], second["grant_id"]);
    let listed = s
        .ok(&admin, "list-grants", json!({ "key_id": other }))
        .await;
    assert_eq!(listed["grants"].as_array().unwrap().len(), 1, "{listed}");

    // 499 grants, then two creations at once: one is the 500th, the other is refused.
    let (server, admin_ref, key_ref) = (&s, &admin, &key);
    futures::stream::iter(1..499)
        .map(|i| async move {
            server
                .ok(
                    admin_ref,
                    "create-grant",
                    json!({ "key_id": key_ref, "grantee_principal": "app",
                        "operations": ["Decrypt"], "name": format!("g{i}") }),
                )
                .await;
        })
        .buffer_unordered(8)
        .collect::<Vec<()>>()
        .await;
    assert_eq!(count(key.clone()).await, 499);
    let grant = |name: &str| {
        json!({ "key_id": key, "grantee_principal": "app", "operations": ["Decrypt"],
                "name": name })
    };
    let late = s.call(Some(&admin), "create-grant", grant("late"));
    let meanwhile = async {
        s.ok(&admin, "create-grant", grant("last")).await;
    };
    let late = s
        .interleaved("create-grant:resolved", &key, late, meanwhile)
        .await;
    assert_error(&late, 409, "InvalidState", "500 grants");
    assert_eq!(count(key.clone()).await, 500);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rewrap_to_grant_allows_re_encryption_to_a_key_but_not_encryption_under_it() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_quiet(dir.path()).await;
    let (admin, app, _) = acme(&s).await;
    let app_id = s.principal_id(&app).await;
    let source = s
        .ok(&admin, "create-key", json!({ "grants": [app_id] }))
        .await["key_id"]
        .as_str()
        .unwrap()
        .to_string();
    let dest = s.create_key(&admin, "envelope").await;
    let ct = s.encrypt(&app, &source, b"moved", json!({})).await;
    let rewrap = json!({ "ciphertext_blob": b64(&ct), "destination_key_id": dest });
    assert_eq!(s.call(Some(&app), "rewrap", rewrap.clone()).await.0, 404);
    s.ok(
        &admin,
        "create-grant",
        json!({ "key_id": dest, "grantee_principal": app_id, "operations": ["RewrapTo", "DescribeKey"] }),
    )
    .await;
    let moved = s.ok(&app, "rewrap", rewrap).await;
    assert_eq!(moved["key_id"], dest.as_str());
    assert_error(
        &s.call(
            Some(&app),
            "encrypt",
            json!({ "key_id": dest, "plaintext": b64(b"x") }),
        )
        .await,
        403,
        "AccessDenied",
        "",
    );
}

/// What Vault Transit keys rely on, as native features: an alias made with the key in one
/// transaction (authorized as `CreateAlias` too; a taken name makes no key), deletion
/// protection refusing `schedule-key-deletion` until turned off, a key that requires an
/// encryption context, and `hash`.
#[tokio::test(flavor = "multi_thread")]
async fn alias_at_creation_deletion_protection_required_context_and_hash() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_quiet(dir.path()).await;
    let (admin, member, _) = acme(&s).await;
    let created = s
        .ok(
            &admin,
            "create-key",
            json!({ "alias": "alias/orders", "deletion_protection": true,
                    "require_encryption_context": true }),
        )
        .await;
    let key = created["key_id"].as_str().unwrap().to_string();
    assert_eq!(created["deletion_protection"], true, "{created}");
    assert_eq!(created["require_encryption_context"], true, "{created}");
    let described = s
        .ok(&admin, "describe-key", json!({ "key_id": "alias/orders" }))
        .await;
    assert_eq!(described["key_id"], key.as_str());

    // The name is taken: no second key is made.
    let before = s.ok(&admin, "list-keys", json!({})).await["keys"]
        .as_array()
        .unwrap()
        .len();
    assert_error(
        &s.call(
            Some(&admin),
            "create-key",
            json!({ "alias": "alias/orders" }),
        )
        .await,
        409,
        "AlreadyExists",
        "alias/orders",
    );
    assert_error(
        &s.call(Some(&admin), "create-key", json!({ "alias": "orders" }))
            .await,
        400,
        "ValidationError",
        "alias names are alias/<name>",
    );
    let after = s.ok(&admin, "list-keys", json!({})).await["keys"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(before, after);
    // A member may not create keys, with or without an alias.
    assert_error(
        &s.call(
            Some(&member),
            "create-key",
            json!({ "alias": "alias/mine" }),
        )
        .await,
        403,
        "AccessDenied",
        "CreateKey",
    );

    // An encryption context is required on every use.
    let pt = b64(b"line item");
    assert_error(
        &s.call(
            Some(&admin),
            "encrypt",
            json!({ "key_id": key, "plaintext": pt }),
        )
        .await,
        400,
        "ValidationError",
        "requires an encryption context",
    );
    let ct = s
        .ok(
            &admin,
            "encrypt",
            json!({ "key_id": key, "plaintext": pt, "encryption_context": { "order": "7" } }),
        )
        .await["ciphertext_blob"]
        .clone();
    assert_error(
        &s.call(Some(&admin), "decrypt", json!({ "ciphertext_blob": ct }))
            .await,
        400,
        "ValidationError",
        "requires an encryption context",
    );
    let opened = s
        .ok(
            &admin,
            "decrypt",
            json!({ "ciphertext_blob": ct, "encryption_context": { "order": "7" } }),
        )
        .await;
    assert_eq!(unb64(&opened["plaintext"]), b"line item");
    assert_error(
        &s.call(
            Some(&admin),
            "create-key",
            json!({ "key_spec": "ECC_NIST_P256", "require_encryption_context": true }),
        )
        .await,
        400,
        "ValidationError",
        "symmetric encrypt-decrypt keys only",
    );

    // Deletion protection: refused until turned off, then the usual rules.
    let approver = s.second_admin("acme").await;
    let body = json!({ "key_id": key, "pending_window_days": 7 });
    assert_error(
        &s.schedule_deletion(&admin, &approver, body.clone()).await,
        409,
        "InvalidState",
        "deletion protection",
    );
    assert_error(
        &s.call(
            Some(&member),
            "set-deletion-protection",
            json!({ "key_id": key, "enabled": false }),
        )
        .await,
        404,
        "NotFound",
        &key,
    );
    let off = s
        .ok(
            &admin,
            "set-deletion-protection",
            json!({ "key_id": "alias/orders", "enabled": false }),
        )
        .await;
    assert_eq!(off["deletion_protection"], false, "{off}");
    let scheduled = s.schedule_deletion(&admin, &approver, body).await;
    assert_eq!(scheduled.0, 200, "{scheduled:?}");

    // hash: known answers, any member, audited.
    let digest = s.ok(&member, "hash", json!({ "input": b64(b"abc") })).await;
    assert_eq!(
        hex::encode(unb64(&digest["digest"])),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    let digest = s
        .ok(
            &member,
            "hash",
            json!({ "input": b64(b"abc"), "algorithm": "SHA3_512" }),
        )
        .await;
    assert_eq!(digest["algorithm"], "SHA3_512");
    assert_eq!(unb64(&digest["digest"]).len(), 64);
    // The 1 MiB the operation takes, whatever the body limit of other operations (64 KiB: it
    // cut hash inputs from about 48 KiB).
    let large = vec![7u8; 1 << 20];
    let digest = s.ok(&member, "hash", json!({ "input": b64(&large) })).await;
    assert_eq!(
        unb64(&digest["digest"]),
        ring::digest::digest(&ring::digest::SHA256, &large).as_ref()
    );
    assert_error(
        &s.call(
            Some(&member),
            "hash",
            json!({ "input": b64(b"abc"), "algorithm": "MD5" }),
        )
        .await,
        400,
        "ValidationError",
        "SHA_256",
    );
    let records = audit(&s);
    assert!(records
        .iter()
        .any(|r| r["action"] == "Hash" && r["outcome"] == "ok"));
    assert!(records
        .iter()
        .any(|r| r["action"] == "SetDeletionProtection" && r["decision"] == "deny"));
    s.assert_audit_verifies();
}

/// Text with a NUL character is the request's fault on every database: refused (400) where
/// keyplane would store it, not found where it names a principal. (PostgreSQL's text cannot
/// hold a NUL: it failed there as a database outage, 503, which AWS clients retry.)
#[tokio::test(flavor = "multi_thread")]
async fn text_with_a_nul_character_is_refused_on_every_database() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path()).await;
    let (admin, _, _) = acme(&s).await;
    let key = s.create_key(&admin, "envelope").await;
    for (op, body) in [
        (
            "update-key-description",
            json!({ "key_id": key, "description": "a\u{0}b" }),
        ),
        ("create-key", json!({ "description": "a\u{0}b" })),
        (
            "revoke-key-version",
            json!({ "key_id": key, "version": 1, "reason": "leaked\u{0}" }),
        ),
        ("create-key", json!({ "grants": ["app\u{0}"] })),
    ] {
        assert_error(
            &s.call(Some(&admin), op, body).await,
            400,
            "ValidationError",
            "NUL",
        );
    }
    assert_error(
        &s.call(
            Some(&admin),
            "create-grant",
            json!({ "key_id": key, "grantee_principal": "app\u{0}", "operations": ["Encrypt"] }),
        )
        .await,
        404,
        "NotFound",
        "principal",
    );
    let d = s.ok(&admin, "describe-key", json!({ "key_id": key })).await;
    assert_eq!(d["versions"][0]["state"], "enabled", "{d}");
}

/// The audit trail names the grant or access key a request made or removed, not only the
/// key or principal it belongs to: after a leak, which of a principal's two access keys was
/// deleted, or which grant of a key was revoked, is read from the records. Before, the
/// records of two grants' creations and one's revocation differed only by request id.
#[tokio::test(flavor = "multi_thread")]
async fn audit_records_name_the_grant_or_access_key() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path()).await;
    let key = s.create_key(&s.admin, "envelope").await;
    s.ok(
        &s.admin,
        "create-principal",
        json!({ "tenant_id": "default", "name": "app", "role": "member" }),
    )
    .await;
    let mut made = Vec::new();
    for operations in [json!(["Encrypt"]), json!(["Decrypt"])] {
        let body = json!({ "key_id": key, "grantee_principal": "app", "operations": operations });
        let g = s.ok(&s.admin, "create-grant", body).await;
        made.push(g["grant_id"].as_str().unwrap().to_string());
    }
    let (first, second) = (made[0].clone(), made[1].clone());
    s.ok(
        &s.admin,
        "revoke-grant",
        json!({ "key_id": key, "grant_id": second }),
    )
    .await;
    let access_key = || async {
        s.ok(&s.admin, "create-access-key", json!({})).await["access_key_id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (kept, deleted) = (access_key().await, access_key().await);
    s.ok(
        &s.admin,
        "delete-access-key",
        json!({ "access_key_id": deleted }),
    )
    .await;

    let pool = s.sql_any().await;
    let records: Vec<(String, String)> = sqlx::query_as(
        "SELECT action, resource FROM audit_log WHERE action IN \
         ('CreateGrant', 'RevokeGrant', 'CreateAccessKey', 'DeleteAccessKey') ORDER BY seq",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    pool.close().await;
    for (action, what) in [
        ("CreateGrant", format!("grant:{first}")),
        ("CreateGrant", format!("grant:{second}")),
        ("RevokeGrant", format!("grant:{second}")),
        ("CreateAccessKey", format!("access-key:{kept}")),
        ("CreateAccessKey", format!("access-key:{deleted}")),
        ("DeleteAccessKey", format!("access-key:{deleted}")),
    ] {
        let named = records
            .iter()
            .filter(|(a, r)| a == action && r.ends_with(&format!(" {what}")))
            .count();
        assert_eq!(named, 1, "{action} {what}: {records:?}");
    }
    assert!(
        records
            .iter()
            .all(|(a, r)| !a.contains("Grant") || r.starts_with(&format!("Keyplane::Key::{key:?}"))),
        "{records:?}"
    );
    s.assert_audit_verifies();
}
