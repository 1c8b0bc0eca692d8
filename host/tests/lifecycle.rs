//! Key lifecycle against the real binary, SoftHSM2 token and SQLite database: versions and
//! rotation, rewrap, key and version states, aliases, scheduled deletion with crypto-shredding
//! and the rotation scheduler driven by tenants' schedule plugins. Time moves through the
//! service's injectable clock (`/debug/clock`, a `test-hooks` build only), never by sleeping.

// Without the test hooks the tests that need them are left out, and some helpers with them.
#![cfg_attr(
    not(all(feature = "test-hooks", debug_assertions)),
    allow(dead_code, unused_imports)
)]

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{assert_attempt_name, assert_error, b64, token_objects, unb64, wasm, Server};
use serde_json::{json, Value};

const DAY: i64 = 86_400;

async fn encrypt_answer(s: &Server, token: &str, key: &str, pt: &[u8]) -> (u16, Value) {
    s.call(
        Some(token),
        "encrypt",
        json!({ "key_id": key, "plaintext": b64(pt) }),
    )
    .await
}

async fn versions(s: &Server, key: &str) -> Value {
    s.ok(&s.admin, "list-key-versions", json!({ "key_id": key }))
        .await
}

async fn upload(s: &Server, token: &str, name: &str, world: &str, file: &str) -> String {
    let v = s
        .ok(
            token,
            "upload-plugin",
            json!({ "name": name, "world": world, "component": b64(&wasm(file)) }),
        )
        .await;
    v["sha256"].as_str().expect("sha256").to_string()
}

async fn audit_rows(s: &Server, action: &str) -> Vec<(String, String, String, String)> {
    let pool = s.sql().await;
    sqlx::query_as(
        "SELECT principal, resource, decision, outcome FROM audit_log WHERE action = ? ORDER BY seq",
    )
    .bind(action)
    .fetch_all(&pool)
    .await
    .unwrap()
}

fn assert_verified(s: &Server) {
    let out = s.audit_verify();
    assert!(
        out.status.success(),
        "audit verify: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn rotation_keeps_old_versions_and_rewrap_moves_ciphertexts_forward() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_quiet(dir.path()).await;
    for protection in ["envelope", "hsm"] {
        let key = s.create_key(&s.admin, protection).await;
        let ctx = json!({ "app": "billing" });
        let ct1 = s.encrypt(&s.admin, &key, b"first", ctx.clone()).await;

        let r = s.ok(&s.admin, "rotate-key", json!({ "key_id": key })).await;
        assert_eq!(
            (
                r["previous_version"].as_i64(),
                r["primary_version"].as_i64()
            ),
            (Some(1), Some(2))
        );
        let ct2 = s.encrypt(&s.admin, &key, b"second", ctx.clone()).await;
        let ct2b = s.encrypt(&s.admin, &key, b"third", ctx.clone()).await;

        // Old ciphertexts still decrypt, each under the version named in it.
        for (ct, pt, v) in [
            (&ct1, &b"first"[..], 1),
            (&ct2, b"second", 2),
            (&ct2b, b"third", 2),
        ] {
            let (st, d) = s.decrypt(&s.admin, ct, ctx.clone()).await;
            assert_eq!(st, 200, "{d}");
            assert_eq!(
                (unb64(&d["plaintext"]), d["key_version"].as_i64()),
                (pt.to_vec(), Some(v))
            );
        }

        // Versions and their usage counters (in-memory counts included).
        let l = versions(&s, &key).await;
        assert_eq!(l["primary_version"], 2);
        let vs = l["versions"].as_array().unwrap();
        assert_eq!(vs.len(), 2, "{l}");
        let usage = |n: usize| {
            (
                vs[n]["version"].as_i64().unwrap(),
                vs[n]["encryptions"].as_i64().unwrap(),
                vs[n]["decryptions"].as_i64().unwrap(),
            )
        };
        let mut got = vec![usage(0), usage(1)];
        got.sort();
        assert_eq!(got, vec![(1, 1, 1), (2, 2, 2)], "{l}");
        assert!(vs.iter().all(|v| v["state"] == "enabled"));
        let d = s
            .ok(&s.admin, "describe-key", json!({ "key_id": key }))
            .await;
        assert_eq!(d["primary_version"], 2);

        // Rewrap moves a version-1 ciphertext to the primary version without returning
        // plaintext; the result decrypts (under a new context if asked).
        let new_ctx = json!({ "app": "billing", "moved": "yes" });
        let r = s
            .ok(
                &s.admin,
                "rewrap",
                json!({
                    "ciphertext_blob": b64(&ct1),
                    "source_encryption_context": ctx,
                    "destination_encryption_context": new_ctx,
                }),
            )
            .await;
        assert!(r.get("plaintext").is_none(), "{r}");
        assert_eq!(
            (r["source_key_version"].as_i64(), r["key_version"].as_i64()),
            (Some(1), Some(2))
        );
        let moved = unb64(&r["ciphertext_blob"]);
        assert!(!moved.windows(5).any(|w| w == b"first"));
        let (st, d) = s.decrypt(&s.admin, &moved, new_ctx.clone()).await;
        assert_eq!(st, 200, "{d}");
        assert_eq!(
            (unb64(&d["plaintext"]), d["key_version"].as_i64()),
            (b"first".to_vec(), Some(2))
        );
        // The old context no longer opens the rewrapped ciphertext; a wrong source context
        // cannot rewrap.
        assert_error(
            &s.decrypt(&s.admin, &moved, ctx.clone()).await,
            400,
            "InvalidCiphertext",
            "",
        );
        let wrong = s
            .call(
                Some(&s.admin),
                "rewrap",
                json!({ "ciphertext_blob": b64(&ct1), "source_encryption_context": { "app": "other" } }),
            )
            .await;
        assert_error(&wrong, 400, "InvalidCiphertext", "");
    }
    assert_verified(&s);
}

#[tokio::test(flavor = "multi_thread")]
async fn rewrap_to_another_key_needs_rewrap_to_on_it() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_quiet(dir.path()).await;
    let (_, tenant_admin) = s.tenant_with_admin("acme").await;
    let member = s
        .ok(
            &tenant_admin,
            "create-principal",
            json!({ "tenant_id": "acme", "name": "app", "role": "member" }),
        )
        .await;
    let (member_id, member_token) = (
        member["principal_id"].as_str().unwrap().to_string(),
        member["token"].as_str().unwrap().to_string(),
    );
    let create = |grants: Value| {
        let (s, t) = (&s, tenant_admin.clone());
        async move {
            s.ok(&t, "create-key", json!({ "grants": grants })).await["key_id"]
                .as_str()
                .unwrap()
                .to_string()
        }
    };
    let source = create(json!([member_id])).await;
    let granted = create(json!([member_id])).await;
    let foreign = create(json!([])).await;
    let ct = s
        .encrypt(&member_token, &source, b"payload", json!({}))
        .await;

    let r = s
        .ok(
            &member_token,
            "rewrap",
            json!({ "ciphertext_blob": b64(&ct), "destination_key_id": granted }),
        )
        .await;
    assert_eq!(
        (r["key_id"].as_str(), r["source_key_id"].as_str()),
        (Some(granted.as_str()), Some(source.as_str()))
    );
    let (st, d) = s
        .decrypt(&member_token, &unb64(&r["ciphertext_blob"]), json!({}))
        .await;
    assert_eq!((st, unb64(&d["plaintext"])), (200, b"payload".to_vec()));

    let denied = s
        .call(
            Some(&member_token),
            "rewrap",
            json!({ "ciphertext_blob": b64(&ct), "destination_key_id": foreign }),
        )
        .await;
    // The member may not even describe that key: it is answered as if it did not exist,
    // and audited as a denial.
    assert_error(&denied, 404, "NotFound", &foreign);
    let rows = audit_rows(&s, "Rewrap").await;
    assert!(
        rows.iter().any(|(p, r, d, o)| p.contains(&member_id)
            && r.contains(&source)
            && d == "deny"
            && o == "NotFound"),
        "the refused rewrap is audited as a deny: {rows:?}"
    );

    // The same key under a new encryption context is a new destination too: a key tagged
    // purpose=backup encrypts only under purpose=backup, and rewrap cannot get around it.
    let tagged = s
        .ok(
            &tenant_admin,
            "create-key",
            json!({ "grants": [member_id], "tags": { "purpose": "backup" } }),
        )
        .await["key_id"]
        .as_str()
        .unwrap()
        .to_string();
    let backup = json!({ "purpose": "backup" });
    let tagged_ct = s
        .encrypt(&member_token, &tagged, b"payload", backup.clone())
        .await;
    let rewrap = |dest: Value| {
        json!({
            "ciphertext_blob": b64(&tagged_ct),
            "source_encryption_context": backup,
            "destination_encryption_context": dest,
        })
    };
    s.ok(&member_token, "rewrap", rewrap(backup.clone())).await;
    let refused = s
        .call(
            Some(&member_token),
            "rewrap",
            rewrap(json!({ "purpose": "other" })),
        )
        .await;
    assert_error(&refused, 403, "AccessDenied", "RewrapTo");
    let rows = audit_rows(&s, "Rewrap").await;
    let last = rows.last().unwrap();
    assert_eq!(
        (last.2.as_str(), last.3.as_str()),
        ("deny", "AccessDenied"),
        "{rows:?}"
    );
    // Another tenant's key is not even visible as a destination.
    let other = s.create_key(&s.admin, "envelope").await;
    let hidden = s
        .call(
            Some(&member_token),
            "rewrap",
            json!({ "ciphertext_blob": b64(&ct), "destination_key_id": other }),
        )
        .await;
    assert!(matches!(hidden.0, 403 | 404), "{:?}", hidden);
    assert_verified(&s);
}

#[tokio::test(flavor = "multi_thread")]
async fn key_and_version_states_refuse_use_with_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_quiet(dir.path()).await;
    let key = s.create_key(&s.admin, "envelope").await;
    let ct1 = s.encrypt(&s.admin, &key, b"v1 data", json!({})).await;

    // A disabled key refuses every use, and comes back when enabled.
    let r = s
        .ok(&s.admin, "disable-key", json!({ "key_id": key }))
        .await;
    assert_eq!(r["state"], "disabled");
    assert_error(
        &encrypt_answer(&s, &s.admin, &key, b"x").await,
        409,
        "InvalidState",
        "disabled",
    );
    assert_error(
        &s.decrypt(&s.admin, &ct1, json!({})).await,
        409,
        "InvalidState",
        "disabled",
    );
    assert_error(
        &s.call(Some(&s.admin), "rotate-key", json!({ "key_id": key }))
            .await,
        409,
        "InvalidState",
        "disabled",
    );
    s.ok(&s.admin, "enable-key", json!({ "key_id": key })).await;
    assert_eq!(s.decrypt(&s.admin, &ct1, json!({})).await.0, 200);

    s.ok(&s.admin, "rotate-key", json!({ "key_id": key })).await;
    let ct2 = s.encrypt(&s.admin, &key, b"v2 data", json!({})).await;
    s.ok(&s.admin, "rotate-key", json!({ "key_id": key })).await;

    // Single versions: disabling v1 refuses its ciphertexts only; the primary cannot be
    // disabled; unknown versions are not found.
    let r = s
        .ok(
            &s.admin,
            "disable-key-version",
            json!({ "key_id": key, "version": 1 }),
        )
        .await;
    assert_eq!(
        (r["state"].as_str(), r["version"].as_i64()),
        (Some("disabled"), Some(1))
    );
    assert_error(
        &s.decrypt(&s.admin, &ct1, json!({})).await,
        409,
        "InvalidState",
        "version 1",
    );
    assert_eq!(s.decrypt(&s.admin, &ct2, json!({})).await.0, 200);
    assert_error(
        &s.call(
            Some(&s.admin),
            "disable-key-version",
            json!({ "key_id": key, "version": 3 }),
        )
        .await,
        409,
        "InvalidState",
        "primary",
    );
    assert_error(
        &s.call(
            Some(&s.admin),
            "disable-key-version",
            json!({ "key_id": key, "version": 9 }),
        )
        .await,
        404,
        "NotFound",
        "",
    );
    s.ok(
        &s.admin,
        "enable-key-version",
        json!({ "key_id": key, "version": 1 }),
    )
    .await;
    assert_eq!(s.decrypt(&s.admin, &ct1, json!({})).await.0, 200);

    // The minimum decryption version retires old versions at once.
    assert_error(
        &s.call(
            Some(&s.admin),
            "set-min-decryption-version",
            json!({ "key_id": key, "version": 4 }),
        )
        .await,
        400,
        "ValidationError",
        "primary version",
    );
    s.ok(
        &s.admin,
        "set-min-decryption-version",
        json!({ "key_id": key, "version": 2 }),
    )
    .await;
    assert_error(
        &s.decrypt(&s.admin, &ct1, json!({})).await,
        409,
        "InvalidState",
        "minimum decryption version",
    );
    assert_eq!(s.decrypt(&s.admin, &ct2, json!({})).await.0, 200);
    assert_eq!(versions(&s, &key).await["min_decryption_version"], 2);
    s.ok(
        &s.admin,
        "set-min-decryption-version",
        json!({ "key_id": key, "version": 1 }),
    )
    .await;

    // Revoking a version needs a reason, is recorded with it, and leaves its ciphertexts
    // reachable only through rewrap.
    assert_error(
        &s.call(
            Some(&s.admin),
            "revoke-key-version",
            json!({ "key_id": key, "version": 2 }),
        )
        .await,
        400,
        "ValidationError",
        "reason",
    );
    let r = s
        .ok(
            &s.admin,
            "revoke-key-version",
            json!({ "key_id": key, "version": 2, "reason": "backup tape lost" }),
        )
        .await;
    assert_eq!(r["state"], "compromised");
    let l = versions(&s, &key).await;
    let v2 = l["versions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["version"] == 2)
        .unwrap()
        .clone();
    assert_eq!(
        (v2["state"].as_str(), v2["state_reason"].as_str()),
        (Some("compromised"), Some("backup tape lost"))
    );
    assert!(v2["state_changed_at"].is_string());
    assert_error(
        &s.decrypt(&s.admin, &ct2, json!({})).await,
        409,
        "InvalidState",
        "rewrap",
    );
    let r = s
        .ok(&s.admin, "rewrap", json!({ "ciphertext_blob": b64(&ct2) }))
        .await;
    assert_eq!(r["key_version"], 3);
    let (st, d) = s
        .decrypt(&s.admin, &unb64(&r["ciphertext_blob"]), json!({}))
        .await;
    assert_eq!((st, unb64(&d["plaintext"])), (200, b"v2 data".to_vec()));
    // A compromised version does not come back.
    assert_error(
        &s.call(
            Some(&s.admin),
            "enable-key-version",
            json!({ "key_id": key, "version": 2 }),
        )
        .await,
        409,
        "InvalidState",
        "compromised",
    );

    // Revoking the primary stops new encryptions until the key is rotated.
    s.ok(
        &s.admin,
        "revoke-key-version",
        json!({ "key_id": key, "version": 3, "reason": "HSM admin left" }),
    )
    .await;
    assert_error(
        &encrypt_answer(&s, &s.admin, &key, b"x").await,
        409,
        "InvalidState",
        "rotate-key first",
    );
    let r = s.ok(&s.admin, "rotate-key", json!({ "key_id": key })).await;
    assert_eq!(r["primary_version"], 4);
    let ct4 = s.encrypt(&s.admin, &key, b"v4", json!({})).await;
    assert_eq!(s.decrypt(&s.admin, &ct4, json!({})).await.0, 200);
    assert_verified(&s);
}

#[tokio::test(flavor = "multi_thread")]
async fn aliases_name_keys_in_every_operation_and_stay_in_their_tenant() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_quiet(dir.path()).await;
    let (_, other) = s.tenant_with_admin("other").await;
    let k1 = s.create_key(&s.admin, "envelope").await;
    let k2 = s.create_key(&s.admin, "hsm").await;

    let r = s
        .ok(
            &s.admin,
            "create-alias",
            json!({ "alias_name": "alias/payments", "target_key_id": k1 }),
        )
        .await;
    assert_eq!(r["target_key_id"], k1.as_str());
    let ct = s
        .encrypt(&s.admin, "alias/payments", b"via alias", json!({}))
        .await;
    let (st, d) = s.decrypt(&s.admin, &ct, json!({})).await;
    assert_eq!((st, d["key_id"].as_str()), (200, Some(k1.as_str())));
    let d = s
        .ok(
            &s.admin,
            "describe-key",
            json!({ "key_id": "alias/payments" }),
        )
        .await;
    assert_eq!(d["key_id"], k1.as_str());
    let r = s
        .ok(
            &s.admin,
            "rotate-key",
            json!({ "key_id": "alias/payments" }),
        )
        .await;
    assert_eq!(r["key_id"], k1.as_str());

    // Refusals: a taken name, a malformed name, an unknown target, a reserved prefix.
    assert_error(
        &s.call(
            Some(&s.admin),
            "create-alias",
            json!({ "alias_name": "alias/payments", "target_key_id": k2 }),
        )
        .await,
        409,
        "AlreadyExists",
        "",
    );
    for bad in ["payments", "alias/", "alias/has space", "alias/é"] {
        let (st, v) = s
            .call(
                Some(&s.admin),
                "create-alias",
                json!({ "alias_name": bad, "target_key_id": k2 }),
            )
            .await;
        assert_eq!(st, 400, "{bad}: {v}");
    }
    assert_error(
        &s.call(
            Some(&s.admin),
            "create-alias",
            json!({ "alias_name": "alias/ghost", "target_key_id": "k-nope" }),
        )
        .await,
        404,
        "NotFound",
        "",
    );

    // Re-pointing the alias moves new encryptions; old ciphertexts name their key.
    s.ok(
        &s.admin,
        "update-alias",
        json!({ "alias_name": "alias/payments", "target_key_id": k2 }),
    )
    .await;
    // Never to another kind of key (as AWS's UpdateAlias): code encrypting under the alias
    // must not find it naming a signing key.
    let signing = s
        .create_key_of(&s.admin, "ECC_NIST_P256", "sign-verify")
        .await;
    assert_error(
        &s.call(
            Some(&s.admin),
            "update-alias",
            json!({ "alias_name": "alias/payments", "target_key_id": signing }),
        )
        .await,
        400,
        "ValidationError",
        "same kind and usage",
    );
    let ct2 = s
        .encrypt(&s.admin, "alias/payments", b"now k2", json!({}))
        .await;
    assert_eq!(
        s.decrypt(&s.admin, &ct2, json!({})).await.1["key_id"],
        k2.as_str()
    );
    assert_eq!(
        s.decrypt(&s.admin, &ct, json!({})).await.1["key_id"],
        k1.as_str()
    );
    s.ok(
        &s.admin,
        "create-alias",
        json!({ "alias_name": "alias/second", "target_key_id": k2 }),
    )
    .await;
    let all = s.ok(&s.admin, "list-aliases", json!({})).await;
    let names: Vec<&str> = all["aliases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["alias_name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["alias/payments", "alias/second"], "{all}");
    let of_k1 = s
        .ok(&s.admin, "list-aliases", json!({ "key_id": k1 }))
        .await;
    assert!(of_k1["aliases"].as_array().unwrap().is_empty(), "{of_k1}");

    // Another tenant: the same name is its own, our alias does not resolve there, and it
    // cannot point an alias at our key.
    assert_eq!(
        s.call(
            Some(&other),
            "encrypt",
            json!({ "key_id": "alias/payments", "plaintext": b64(b"x") })
        )
        .await
        .0,
        404
    );
    let theirs = s.create_key(&other, "envelope").await;
    s.ok(
        &other,
        "create-alias",
        json!({ "alias_name": "alias/payments", "target_key_id": theirs }),
    )
    .await;
    let ct3 = s
        .encrypt(&other, "alias/payments", b"theirs", json!({}))
        .await;
    assert_eq!(
        s.decrypt(&other, &ct3, json!({})).await.1["key_id"],
        theirs.as_str()
    );
    let (st, _) = s
        .call(
            Some(&other),
            "update-alias",
            json!({ "alias_name": "alias/payments", "target_key_id": k1 }),
        )
        .await;
    assert!(matches!(st, 403 | 404), "{st}");
    assert!(
        s.ok(&other, "list-aliases", json!({})).await["aliases"]
            .as_array()
            .unwrap()
            .len()
            == 1
    );

    let r = s
        .ok(
            &s.admin,
            "delete-alias",
            json!({ "alias_name": "alias/payments" }),
        )
        .await;
    assert_eq!(r["deleted"], true);
    assert_error(
        &encrypt_answer(&s, &s.admin, "alias/payments", b"x").await,
        404,
        "NotFound",
        "alias/payments",
    );
    // The other tenant's alias of the same name is untouched.
    assert_eq!(
        encrypt_answer(&s, &other, "alias/payments", b"x").await.0,
        200
    );
    assert_verified(&s);
}

async fn kv_blob_names(s: &Server, tenant: &str) -> Vec<String> {
    let pool = s.sql().await;
    sqlx::query_scalar("SELECT key FROM plugin_kv WHERE tenant_id = ? ORDER BY key")
        .bind(tenant)
        .fetch_all(&pool)
        .await
        .unwrap()
}

#[cfg(all(feature = "test-hooks", debug_assertions))]
#[tokio::test(flavor = "multi_thread")]
async fn deletion_waits_for_its_window_then_shreds_every_copy() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_quiet(dir.path()).await;
    // One tenant keeps envelope blobs in the kv plugin; the operator's tenant uses hsm keys.
    let (_, t) = s.tenant_with_admin("shred").await;
    // The deletion guard wants a second admin's approval (or MFA).
    let t2 = s.second_admin("shred").await;
    let op2 = s.second_admin("default").await;
    upload(&s, &t, "kv", "storage-backend", "storage-kv").await;
    s.ok(&t, "set-storage-backend", json!({ "plugin": "kv" }))
        .await;
    let env_key = s.create_key(&t, "envelope").await;
    s.ok(&t, "rotate-key", json!({ "key_id": env_key })).await;
    let hsm_key = s.create_key(&s.admin, "hsm").await;
    s.ok(&s.admin, "rotate-key", json!({ "key_id": hsm_key }))
        .await;
    s.ok(
        &t,
        "create-alias",
        json!({ "alias_name": "alias/doomed", "target_key_id": env_key }),
    )
    .await;
    let env_ct = s.encrypt(&t, &env_key, b"env secret", json!({})).await;
    let hsm_ct = s
        .encrypt(&s.admin, &hsm_key, b"hsm secret", json!({}))
        .await;
    // Each version's blob has a name of its own creation attempt: keys/<key>/<version>/<uuid>.
    let names = kv_blob_names(&s, "shred").await;
    assert_eq!(names.len(), 2, "{names:?}");
    for (v, name) in (1..=2).zip(&names) {
        assert_attempt_name(name, &format!("tenants/shred/keys/{env_key}/{v}"));
    }
    let labels = |data: &Path| {
        token_objects(data)
            .into_iter()
            .map(|(l, _)| l)
            .collect::<Vec<_>>()
    };
    let before = labels(dir.path());
    for v in 1..=2 {
        assert!(before.contains(&format!("kp:{hsm_key}:{v}")), "{before:?}");
    }

    // The window is 7 to 30 days, 30 by default.
    for days in [0, 6, 31] {
        let answer = s
            .call(
                Some(&t),
                "schedule-key-deletion",
                json!({ "key_id": env_key, "pending_window_days": days }),
            )
            .await;
        assert_error(&answer, 400, "ValidationError", "7");
    }
    let now = s.advance_clock(0).await;
    assert_error(
        &s.call(
            Some(&t),
            "schedule-key-deletion",
            json!({ "key_id": env_key }),
        )
        .await,
        403,
        "AccessDenied",
        "",
    );
    let (status, r) = s
        .schedule_deletion(&t, &t2, json!({ "key_id": env_key }))
        .await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["state"], "pending-deletion");
    let date = chrono::DateTime::parse_from_rfc3339(r["deletion_date"].as_str().unwrap()).unwrap();
    assert!((date.timestamp() - (now + 30 * DAY)).abs() < 60, "{r}");
    // Pending deletion: no use at all, and no second schedule.
    assert_error(
        &encrypt_answer(&s, &t, &env_key, b"x").await,
        409,
        "InvalidState",
        "pending deletion",
    );
    assert_error(
        &s.decrypt(&t, &env_ct, json!({})).await,
        409,
        "InvalidState",
        "pending deletion",
    );
    assert_error(
        &s.schedule_deletion(&t, &t2, json!({ "key_id": env_key }))
            .await,
        409,
        "InvalidState",
        "",
    );
    // Cancelling leaves the key disabled, as AWS KMS does; enabling it restores use.
    let r = s
        .ok(&t, "cancel-key-deletion", json!({ "key_id": env_key }))
        .await;
    assert_eq!(r["state"], "disabled");
    assert_error(
        &s.call(
            Some(&t),
            "cancel-key-deletion",
            json!({ "key_id": env_key }),
        )
        .await,
        409,
        "InvalidState",
        "",
    );
    s.ok(&t, "enable-key", json!({ "key_id": env_key })).await;
    assert_eq!(s.decrypt(&t, &env_ct, json!({})).await.0, 200);

    // Schedule both for the shortest window; a day early nothing happens.
    for (token, approver, key) in [(&t, &t2, &env_key), (&s.admin, &op2, &hsm_key)] {
        let (status, v) = s
            .schedule_deletion(
                token,
                approver,
                json!({ "key_id": key, "pending_window_days": 7 }),
            )
            .await;
        assert_eq!(status, 200, "{v}");
    }
    s.advance_clock(6 * DAY).await;
    let pass = s.ok(&s.admin, "run-scheduler", json!({})).await;
    assert_eq!(pass["destroyed"], json!([]), "{pass}");
    assert_eq!(kv_blob_names(&s, "shred").await.len(), 2);

    s.advance_clock(DAY + 1).await;
    let pass = s.ok(&s.admin, "run-scheduler", json!({})).await;
    let mut destroyed: Vec<String> = serde_json::from_value(pass["destroyed"].clone()).unwrap();
    destroyed.sort();
    let mut expected = vec![env_key.clone(), hsm_key.clone()];
    expected.sort();
    assert_eq!(destroyed, expected, "{pass}");
    assert_eq!(pass["failed"], json!([]), "{pass}");

    // Every copy is gone: the HSM objects, the blobs in the storage backend, the inline
    // wrapped material, the alias.
    let after = labels(dir.path());
    assert!(!after.iter().any(|l| l.contains(&hsm_key)), "{after:?}");
    assert!(after.iter().any(|l| l == "keyplane-root-v1"), "{after:?}");
    assert!(kv_blob_names(&s, "shred").await.is_empty());
    let pool = s.sql().await;
    let (held, states): (i64, String) = sqlx::query_as(
        "SELECT COUNT(wrapped_material) + COUNT(hsm_object_id) + COUNT(blob_store), group_concat(state) FROM key_versions WHERE key_id IN (?, ?)",
    )
    .bind(&env_key)
    .bind(&hsm_key)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(held, 0, "version rows keep no material or pointer to it");
    assert!(states.split(',').all(|s| s == "destroyed"), "{states}");
    assert_eq!(
        s.call(Some(&t), "list-aliases", json!({})).await.1["aliases"],
        json!([])
    );

    // Ciphertexts fail with a clear "destroyed" error; nothing brings the key back.
    assert_error(
        &s.decrypt(&t, &env_ct, json!({})).await,
        410,
        "KeyDestroyed",
        "destroyed",
    );
    assert_error(
        &s.decrypt(&s.admin, &hsm_ct, json!({})).await,
        410,
        "KeyDestroyed",
        "destroyed",
    );
    assert_error(
        &encrypt_answer(&s, &t, &env_key, b"x").await,
        410,
        "KeyDestroyed",
        "",
    );
    assert_error(
        &s.call(
            Some(&t),
            "cancel-key-deletion",
            json!({ "key_id": env_key }),
        )
        .await,
        410,
        "KeyDestroyed",
        "",
    );
    let d = s.ok(&t, "describe-key", json!({ "key_id": env_key })).await;
    assert_eq!(d["state"], "destroyed");
    assert!(d["destroyed_at"].is_string(), "{d}");

    // Audited as the scheduler, in the chain.
    let rows = audit_rows(&s, "DestroyKey").await;
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert!(rows
        .iter()
        .all(|(p, _, d, o)| p == "keyplane:scheduler" && d == "system" && o == "ok"));
    assert_verified(&s);
}

/// A schedule that is always due (here a period of one second) rotates its key at most once
/// an hour, not on every pass: each version is a new object in the token all tenants share.
#[cfg(all(feature = "test-hooks", debug_assertions))]
#[tokio::test(flavor = "multi_thread")]
async fn a_schedule_always_due_rotates_its_key_at_most_hourly() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_quiet(dir.path()).await;
    let a = &s.admin;
    upload(
        &s,
        a,
        "fixed",
        "rotation-schedule",
        "rotation-fixed-interval",
    )
    .await;
    let key = s.create_key(a, "hsm").await;
    s.ok(
        a,
        "set-rotation-schedule",
        json!({ "key_id": key, "plugin": "fixed", "config": { "period": "1s" } }),
    )
    .await;
    let primary = || async {
        s.ok(a, "describe-key", json!({ "key_id": key })).await["primary_version"]
            .as_i64()
            .unwrap()
    };
    // The key is new: not within the first hour either.
    s.advance_clock(2).await;
    s.ok(a, "run-scheduler", json!({})).await;
    assert_eq!(primary().await, 1);
    s.advance_clock(3600).await;
    let pass = s.ok(a, "run-scheduler", json!({})).await;
    assert_eq!(pass["rotated"].as_array().unwrap().len(), 1, "{pass}");
    for _ in 0..3 {
        s.advance_clock(60).await;
        let pass = s.ok(a, "run-scheduler", json!({})).await;
        assert_eq!(pass["rotated"], json!([]), "{pass}");
    }
    assert_eq!(primary().await, 2);
    s.advance_clock(3600).await;
    s.ok(a, "run-scheduler", json!({})).await;
    assert_eq!(primary().await, 3);
}

/// A rotation schedule is set only on a key that lives: one set on a key pending deletion or
/// destroyed would be dropped by its destruction, or outlive it and keep its plugin in use
/// for ever (delete-plugin refuses a plugin a schedule names).
#[cfg(all(feature = "test-hooks", debug_assertions))]
#[tokio::test(flavor = "multi_thread")]
async fn a_rotation_schedule_is_set_only_on_a_living_key() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_quiet(dir.path()).await;
    let a = &s.admin;
    upload(
        &s,
        a,
        "fixed",
        "rotation-schedule",
        "rotation-fixed-interval",
    )
    .await;
    let schedule =
        |key: &str| json!({ "key_id": key, "plugin": "fixed", "config": { "period": "30d" } });
    let key = s.create_key(a, "hsm").await;
    s.ok(a, "disable-key", json!({ "key_id": key })).await;
    s.ok(a, "set-rotation-schedule", schedule(&key)).await;
    s.ok(a, "enable-key", json!({ "key_id": key })).await;
    let approver = s.second_admin("default").await;
    let (st, v) = s
        .schedule_deletion(
            a,
            &approver,
            json!({ "key_id": key, "pending_window_days": 7 }),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    let (st, v) = s
        .call(Some(a), "set-rotation-schedule", schedule(&key))
        .await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (409, Some("InvalidState")),
        "{v}"
    );
    s.advance_clock(8 * 86_400).await;
    let pass = s.ok(a, "run-scheduler", json!({})).await;
    assert_eq!(pass["destroyed"], json!([key]), "{pass}");
    let (st, v) = s
        .call(Some(a), "set-rotation-schedule", schedule(&key))
        .await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (410, Some("KeyDestroyed")),
        "{v}"
    );
    // Its destruction took the schedule with it: the plugin is free to go.
    s.ok(a, "delete-plugin", json!({ "name": "fixed" })).await;
}

#[cfg(all(feature = "test-hooks", debug_assertions))]
#[tokio::test(flavor = "multi_thread")]
async fn scheduler_rotates_due_keys_once_and_a_hostile_schedule_hurts_only_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_quiet(dir.path()).await;
    let a = &s.admin;
    let fixed_sha = upload(
        &s,
        a,
        "fixed",
        "rotation-schedule",
        "rotation-fixed-interval",
    )
    .await;
    let usage_sha = upload(&s, a, "usage", "rotation-schedule", "rotation-usage-limit").await;
    upload(&s, a, "spin", "rotation-schedule", "hostile-spin").await;
    let fixed = s.create_key(a, "envelope").await;
    let usage = s.create_key(a, "hsm").await;
    let spin = s.create_key(a, "envelope").await;
    let _unscheduled = s.create_key(a, "envelope").await;
    for (key, plugin, config) in [
        (&fixed, "fixed", json!({ "period": "30d" })),
        (&usage, "usage", json!({ "max_encryptions": "3" })),
        (&spin, "spin", json!({})),
    ] {
        s.ok(
            a,
            "set-rotation-schedule",
            json!({ "key_id": key, "plugin": plugin, "config": config }),
        )
        .await;
    }
    let primary = |key: String| {
        let s = &s;
        async move {
            s.ok(&s.admin, "describe-key", json!({ "key_id": key }))
                .await["primary_version"]
                .as_i64()
                .unwrap()
        }
    };

    // Nothing is due yet; the hostile schedule fails alone and typed.
    let started = Instant::now();
    let pass = s.ok(a, "run-scheduler", json!({})).await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "a spinning plugin is cut off at its deadline"
    );
    assert_eq!(
        (pass["checked"].as_i64(), pass["rotated"].clone()),
        (Some(3), json!([])),
        "{pass}"
    );
    let failed = pass["failed"].as_array().unwrap();
    assert_eq!(failed.len(), 1, "{pass}");
    assert_eq!(
        (failed[0]["key_id"].as_str(), failed[0]["code"].as_str()),
        (Some(spin.as_str()), Some("PluginTimeout"))
    );

    // Three encryptions make the usage-limited key due, within the same pass as the
    // still-spinning plugin.
    for _ in 0..3 {
        s.encrypt(a, &usage, b"count me", json!({})).await;
    }
    s.advance_clock(29 * DAY).await;
    let pass = s.ok(a, "run-scheduler", json!({})).await;
    let rotated = pass["rotated"].as_array().unwrap();
    assert_eq!(rotated.len(), 1, "{pass}");
    assert_eq!(
        (
            rotated[0]["key_id"].as_str(),
            rotated[0]["version"].as_i64()
        ),
        (Some(usage.as_str()), Some(2))
    );
    assert_eq!(rotated[0]["plugin_sha256"], usage_sha.as_str());
    assert_eq!(pass["failed"].as_array().unwrap().len(), 1, "{pass}");
    assert_eq!(primary(usage.clone()).await, 2);
    assert_eq!(primary(fixed.clone()).await, 1, "29 days is not 30");

    // The fixed-interval key becomes due at 30 days, rotates once, and not again on the next
    // pass (the new version restarts its period); the usage key's counter restarted too.
    s.advance_clock(DAY + 1).await;
    let pass = s.ok(a, "run-scheduler", json!({})).await;
    let rotated = pass["rotated"].as_array().unwrap();
    assert_eq!(rotated.len(), 1, "{pass}");
    assert_eq!(
        (
            rotated[0]["key_id"].as_str(),
            rotated[0]["plugin_sha256"].as_str()
        ),
        (Some(fixed.as_str()), Some(fixed_sha.as_str()))
    );
    let pass = s.ok(a, "run-scheduler", json!({})).await;
    assert_eq!(pass["rotated"], json!([]), "{pass}");
    assert_eq!(
        (
            primary(fixed.clone()).await,
            primary(usage.clone()).await,
            primary(spin.clone()).await
        ),
        (2, 2, 1)
    );
    assert_eq!(
        versions(&s, &fixed).await["versions"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    // Another 30 days: due again, exactly once.
    s.advance_clock(30 * DAY).await;
    let pass = s.ok(a, "run-scheduler", json!({})).await;
    assert_eq!(pass["rotated"].as_array().unwrap().len(), 1, "{pass}");
    assert_eq!(primary(fixed.clone()).await, 3);

    // Scheduler rotations are audited as the scheduler with the deciding plugin's hash; the
    // hostile plugin's repeated failure is audited once, not every pass.
    let rows = audit_rows(&s, "RotateKey").await;
    let by_scheduler: Vec<_> = rows
        .iter()
        .filter(|(p, ..)| p == "keyplane:scheduler")
        .collect();
    assert_eq!(by_scheduler.len(), 3, "{rows:?}");
    assert!(by_scheduler
        .iter()
        .any(|(_, r, ..)| r.contains(&usage) && r.contains(&format!("plugin-sha256:{usage_sha}"))));
    assert_eq!(
        by_scheduler
            .iter()
            .filter(|(_, r, ..)| r.contains(&format!("plugin-sha256:{fixed_sha}")))
            .count(),
        2
    );
    let failures: Vec<_> = audit_rows(&s, "PreviewRotation")
        .await
        .into_iter()
        .filter(|(p, r, _, o)| {
            p == "keyplane:scheduler" && r.contains(&spin) && o == "PluginTimeout"
        })
        .collect();
    assert_eq!(failures.len(), 1, "{failures:?}");

    // The old versions still decrypt after scheduled rotations.
    let ct = s.encrypt(a, &usage, b"after", json!({})).await;
    assert_eq!(s.decrypt(a, &ct, json!({})).await.1["key_version"], 2);
    assert_verified(&s);
}

#[cfg(all(feature = "test-hooks", debug_assertions))]
#[tokio::test(flavor = "multi_thread")]
async fn the_background_scheduler_runs_on_its_interval() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_with_env(
        dir.path(),
        &[
            ("RUST_LOG", "warn"),
            ("KEYPLANE_LIFECYCLE__SCHEDULER_INTERVAL_SECONDS", "1"),
        ],
    )
    .await;
    upload(
        &s,
        &s.admin,
        "fixed",
        "rotation-schedule",
        "rotation-fixed-interval",
    )
    .await;
    let key = s.create_key(&s.admin, "envelope").await;
    s.ok(
        &s.admin,
        "set-rotation-schedule",
        json!({ "key_id": key, "plugin": "fixed", "config": { "period": "1d" } }),
    )
    .await;
    s.advance_clock(DAY + 1).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let d = s
            .ok(&s.admin, "describe-key", json!({ "key_id": key }))
            .await;
        if d["primary_version"] == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "no background rotation: {d}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Several more passes run; the key is not rotated again.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let d = s
        .ok(&s.admin, "describe-key", json!({ "key_id": key }))
        .await;
    assert_eq!(d["primary_version"], 2, "{d}");
}

/// Two rotations of one `hsm` key race. The loser read the key row before the winner
/// committed, so it makes an HSM object for the same version number and only then finds the
/// key rotated. Its object must never serve the winner's version: a ciphertext made while the
/// loser is paused between the two steps decrypts after the loser has failed and been undone,
/// and only the winner's object is left for that version.
#[cfg(all(feature = "test-hooks", debug_assertions))]
#[tokio::test(flavor = "multi_thread")]
async fn a_rotation_that_loses_a_race_leaves_the_winners_version_intact() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path()).await;
    let key = s.create_key(&s.admin, "hsm").await;
    s.pause("rotate:start", &key, "arm").await;

    let loser = s.call(Some(&s.admin), "rotate-key", json!({ "key_id": key }));
    let rest = async {
        assert_eq!(s.pause("rotate:start", &key, "wait").await["reached"], true);
        let won = s.ok(&s.admin, "rotate-key", json!({ "key_id": key })).await;
        assert_eq!(won["primary_version"], 2);
        s.pause("rotate:version-made", &key, "arm").await;
        assert_eq!(
            s.pause("rotate:start", &key, "release").await["released"],
            true
        );
        let reached = s.pause("rotate:version-made", &key, "wait").await;
        assert_eq!(
            reached["reached"], true,
            "the loser made its version 2 object"
        );
        let ct = s
            .encrypt(&s.admin, &key, b"written during the race", json!({}))
            .await;
        s.pause("rotate:version-made", &key, "release").await;
        ct
    };
    let (lost, ct) = tokio::join!(loser, rest);
    assert_error(&lost, 409, "InvalidState", "rotated concurrently");

    let (status, v) = s.decrypt(&s.admin, &ct, json!({})).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(unb64(&v["plaintext"]), b"written during the race");
    let ct2 = s.encrypt(&s.admin, &key, b"after", json!({})).await;
    let (status, v) = s.decrypt(&s.admin, &ct2, json!({})).await;
    assert_eq!(
        (status, unb64(&v["plaintext"])),
        (200, b"after".to_vec()),
        "{v}"
    );
    let listed = versions(&s, &key).await;
    assert_eq!(listed["primary_version"], 2);
    assert_eq!(listed["versions"].as_array().unwrap().len(), 2, "{listed}");
    let version_2 = format!("kp:{key}:2");
    let objects = token_objects(dir.path());
    assert_eq!(
        objects
            .iter()
            .filter(|(label, _)| *label == version_2)
            .count(),
        1,
        "only the winner's object is left: {objects:?}"
    );
}
