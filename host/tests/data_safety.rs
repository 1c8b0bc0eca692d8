//! Data safety: races between requests (interleaved through pause points), the key and
//! version state machine (every change a compare-and-set), two-person deletion, the scheduler
//! lease, and conflicts answered as conflicts. Each test fails on the code before its fix.
//! They need the test hooks (pause points, the service clock), so they exist only in builds
//! that have them.
#![cfg(all(feature = "test-hooks", debug_assertions))]

mod common;

use serde_json::{json, Value};

use common::{assert_error, b64, copy_of_shipped_policies, unb64, wasm, Server};

const DAY: i64 = 86_400;

async fn versions(s: &Server, token: &str, key: &str) -> Value {
    s.ok(token, "list-key-versions", json!({ "key_id": key }))
        .await
}

fn version_state(listed: &Value, v: i64) -> String {
    listed["versions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["version"] == v)
        .unwrap()["state"]
        .as_str()
        .unwrap()
        .to_string()
}

/// A compare-and-set lost to a change committed while the request ran.
fn assert_changed_meanwhile(answer: &(u16, Value)) {
    assert_error(
        answer,
        409,
        "InvalidState",
        "changed while this request ran",
    );
}

/// A node (data under `dir/data`) with the shipped policies and `policy` (Cedar) beside them.
async fn with_policy(dir: &std::path::Path, policy: &str) -> Server {
    let policies = copy_of_shipped_policies(&dir.join("policies"));
    std::fs::write(policies.join("extra.cedar"), policy).unwrap();
    Server::start_with_policies(&dir.join("data"), &policies).await
}

/// A new key of the admin's with `tags`; its id.
async fn tagged_key(s: &Server, tags: Value) -> String {
    s.ok(&s.admin, "create-key", json!({ "tags": tags })).await["key_id"]
        .as_str()
        .unwrap()
        .to_string()
}

async fn kv_blobs(s: &Server, tenant: &str, prefix: &str) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT key FROM plugin_kv WHERE tenant_id = ? AND substr(key, 1, length(?)) = ? ORDER BY key",
    )
    .bind(tenant)
    .bind(prefix)
    .bind(prefix)
    .fetch_all(&s.sql().await)
    .await
    .unwrap()
}

/// Two rotations of an envelope key whose blobs live in a storage plugin race to create
/// version 2. Each attempt writes a blob of its own name, so the winner's blob is never the
/// one the loser deletes, and the winner's version still opens once the material cache is
/// gone (here: after a restart). Before, both wrote `keys/<key>/2`: the second put failed and
/// its rollback deleted the first's blob by name.
#[tokio::test(flavor = "multi_thread")]
async fn racing_rotations_never_delete_the_winners_blob() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start_quiet(dir.path()).await;
    let (_, t) = s.tenant_with_admin("blobs").await;
    s.kv_backend(&t).await;
    let key = s.create_key(&t, "envelope").await;

    s.pause("rotate:version-made", &key, "arm").await;
    let loser = s.call(Some(&t), "rotate-key", json!({ "key_id": key }));
    let rest = async {
        let reached = s.pause("rotate:version-made", &key, "wait").await;
        assert_eq!(reached["reached"], true, "the loser wrote its blob");
        let won = s.ok(&t, "rotate-key", json!({ "key_id": key })).await;
        assert_eq!(won["primary_version"], 2);
        let ct = s.encrypt(&t, &key, b"under the winner", json!({})).await;
        s.pause("rotate:version-made", &key, "release").await;
        ct
    };
    let (lost, ct) = tokio::join!(loser, rest);
    assert_error(&lost, 409, "InvalidState", "rotated concurrently");
    let v2 = kv_blobs(&s, "blobs", &format!("tenants/blobs/keys/{key}/2/")).await;
    assert_eq!(v2.len(), 1, "only the winner's blob is left: {v2:?}");

    // The winner's material is read from its blob again.
    s.stop();
    let s = Server::start_quiet(dir.path()).await;
    let (status, v) = s.decrypt(&t, &ct, json!({})).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(unb64(&v["plaintext"]), b"under the winner");
}

/// Schedule `key`'s deletion (7 days, approved by `approver`) and move the service clock past
/// the window, so the next scheduler pass destroys it.
async fn past_its_deletion_window(s: &Server, approver: &str, key: &str) {
    let (status, v) = s
        .schedule_deletion(
            &s.admin,
            approver,
            json!({ "key_id": key, "pending_window_days": 7 }),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    s.advance_clock(8 * DAY).await;
}

/// A cancel that arrives while the scheduler shreds a key whose window has passed is refused:
/// shredding goes through a committed `destroying` state. Before, the cancel answered 200
/// `disabled` for a key whose material was gone.
#[tokio::test(flavor = "multi_thread")]
async fn a_cancel_during_shredding_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_quiet(dir.path()).await;
    let key = s.create_key(&s.admin, "hsm").await;
    let ct = s.encrypt(&s.admin, &key, b"doomed", json!({})).await;
    let approver = s.second_admin("default").await;
    past_its_deletion_window(&s, &approver, &key).await;

    s.pause("destroy:shredding", &key, "arm").await;
    let pass = s.call(Some(&s.admin), "run-scheduler", json!({}));
    let rest = async {
        let reached = s.pause("destroy:shredding", &key, "wait").await;
        assert_eq!(reached["reached"], true);
        let described = s
            .ok(&s.admin, "describe-key", json!({ "key_id": key }))
            .await;
        assert_eq!(described["state"], "destroying");
        // Worded as for a key pending deletion (which AWS clients are shown): Terraform's
        // destroy takes that as done.
        let again = s
            .schedule_deletion(&s.admin, &approver, json!({ "key_id": key }))
            .await;
        assert_error(&again, 409, "InvalidState", "is pending deletion");
        let cancel = s
            .call(
                Some(&s.admin),
                "cancel-key-deletion",
                json!({ "key_id": key }),
            )
            .await;
        s.pause("destroy:shredding", &key, "release").await;
        cancel
    };
    let ((status, report), cancel) = tokio::join!(pass, rest);
    assert_error(&cancel, 409, "InvalidState", "being destroyed");
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["destroyed"], json!([key]), "{report}");
    let described = s
        .ok(&s.admin, "describe-key", json!({ "key_id": key }))
        .await;
    assert_eq!(described["state"], "destroyed");
    assert_error(
        &s.decrypt(&s.admin, &ct, json!({})).await,
        410,
        "KeyDestroyed",
        "",
    );
    let destructions: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM audit_log WHERE action IN ('BeginDestroyKey', 'DestroyKey') AND outcome = 'ok'",
    )
    .fetch_one(&s.sql().await)
    .await
    .unwrap();
    assert_eq!(destructions, 2, "both steps are audited");
}

/// A request that read a version before its key began to be destroyed, and made the
/// version's object in the HSM (from the world copy in the row it read) after shredding had
/// searched the token, leaves nothing behind: shredding destroys what was cached meanwhile.
/// Before, the last step only forgot that object's handle, and the unwrapped key stayed in
/// the HSM until the login ended.
#[tokio::test(flavor = "multi_thread")]
async fn an_object_made_during_shredding_is_destroyed_too() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_quiet(dir.path()).await;
    let key = s.create_key(&s.admin, "hsm").await;
    let object_id = s.hsm_objects(json!({ "key_id": key, "version": 1 })).await["object_id"]
        .as_str()
        .unwrap()
        .to_string();
    let approver = s.second_admin("default").await;

    s.pause("version:loaded", &key, "arm").await;
    let (answered, answered_rx) = tokio::sync::oneshot::channel();
    let late = async {
        let answer = s
            .call(
                Some(&s.admin),
                "encrypt",
                json!({ "key_id": key, "plaintext": b64(b"late") }),
            )
            .await;
        answered.send(()).unwrap();
        answer
    };
    let shredding = async {
        let reached = s.pause("version:loaded", &key, "wait").await;
        assert_eq!(reached["reached"], true);
        past_its_deletion_window(&s, &approver, &key).await;
        s.pause("shred:objects-destroyed", &key, "arm").await;
        let pass = s.call(Some(&s.admin), "run-scheduler", json!({}));
        let steps = async {
            let reached = s.pause("shred:objects-destroyed", &key, "wait").await;
            assert_eq!(reached["reached"], true);
            s.pause("version:loaded", &key, "release").await;
            answered_rx.await.unwrap();
            s.pause("shred:objects-destroyed", &key, "release").await;
        };
        tokio::join!(pass, steps).0
    };
    let ((status, v), (pass_status, report)) = tokio::join!(late, shredding);
    // The request got its object from the world copy of the row it had read.
    assert_eq!(status, 200, "{v}");
    assert_eq!(pass_status, 200, "{report}");
    assert_eq!(report["destroyed"], json!([key]), "{report}");
    let v = s.hsm_objects(json!({ "object_id": object_id })).await;
    assert_eq!(
        (&v["objects"], &v["session_objects"]),
        (&json!(0), &json!(0)),
        "{v}"
    );
    assert!(v["session_copies_made"].as_u64().unwrap() >= 1, "{v}");
    assert_eq!(v["session_copies_made_live"], 0, "{v}");
}

/// Writes about a key that do not change its state (tags, a key policy, an import token) are
/// compare-and-sets against the state they were checked in: a key destroyed while they waited
/// keeps what it had, and a key whose deletion was scheduled while the wrapping key pair of
/// `get-parameters-for-import` was made gets no import token. Before, each was written (an
/// import token and its HSM key pair for a key pending deletion, audited as a success).
#[tokio::test(flavor = "multi_thread")]
async fn settings_of_a_key_that_changed_state_meanwhile_are_not_written() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_quiet(dir.path()).await;
    let approver = s.second_admin("default").await;
    let policy = json!({ "Version": "2012-10-17", "Statement": [] }).to_string();
    for (op, body) in [
        ("tag-key", json!({ "tags": { "team": "a" } })),
        ("untag-key", json!({ "tag_keys": ["team"] })),
        ("put-key-policy", json!({ "policy": policy })),
    ] {
        let key = s.create_key(&s.admin, "envelope").await;
        let mut body = body;
        body["key_id"] = json!(key);
        let write = s.call(Some(&s.admin), op, body);
        let answer = s
            .interleaved("key-settings:resolved", &key, write, async {
                past_its_deletion_window(&s, &approver, &key).await;
                let (status, report) = s.call(Some(&s.admin), "run-scheduler", json!({})).await;
                assert_eq!(status, 200, "{report}");
                assert_eq!(report["destroyed"], json!([key]), "{report}");
            })
            .await;
        assert_error(
            &answer,
            409,
            "InvalidState",
            "changed while this request ran",
        );
    }

    let key = s
        .ok(&s.admin, "create-key", json!({ "origin": "external" }))
        .await["key_id"]
        .as_str()
        .unwrap()
        .to_string();
    let params = s.call(
        Some(&s.admin),
        "get-parameters-for-import",
        json!({ "key_id": key, "wrapping_algorithm": "RSAES_OAEP_SHA_1",
                "wrapping_key_spec": "RSA_2048" }),
    );
    let answer = s
        .interleaved("key-settings:resolved", &key, params, async {
            let (status, v) = s
                .schedule_deletion(
                    &s.admin,
                    &approver,
                    json!({ "key_id": key, "pending_window_days": 7 }),
                )
                .await;
            assert_eq!(status, 200, "{v}");
        })
        .await;
    assert_error(
        &answer,
        409,
        "InvalidState",
        "changed while this request ran",
    );
    let tokens: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM import_tokens")
        .fetch_one(&s.sql().await)
        .await
        .unwrap();
    assert_eq!(tokens, 0);
}

/// `disable-key-version` that read the version before a revocation committed cannot turn the
/// compromised version back into disabled (and from there into enabled): version state
/// changes are compare-and-sets.
#[tokio::test(flavor = "multi_thread")]
async fn a_revoked_version_is_never_usable_again() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_quiet(dir.path()).await;
    let key = s.create_key(&s.admin, "envelope").await;
    let ct = s.encrypt(&s.admin, &key, b"v1", json!({})).await;
    s.ok(&s.admin, "rotate-key", json!({ "key_id": key })).await;

    let disable = s.call(
        Some(&s.admin),
        "disable-key-version",
        json!({ "key_id": key, "version": 1 }),
    );
    let revoke = async {
        let revoked = s
            .ok(
                &s.admin,
                "revoke-key-version",
                json!({ "key_id": key, "version": 1, "reason": "leaked" }),
            )
            .await;
        assert_eq!(revoked["state"], "compromised");
    };
    let disabled = s
        .interleaved("version-state:read", &key, disable, revoke)
        .await;
    assert_changed_meanwhile(&disabled);
    assert_eq!(
        version_state(&versions(&s, &s.admin, &key).await, 1),
        "compromised"
    );
    assert_error(
        &s.call(
            Some(&s.admin),
            "enable-key-version",
            json!({ "key_id": key, "version": 1 }),
        )
        .await,
        409,
        "InvalidState",
        "compromised",
    );
    assert_error(
        &s.decrypt(&s.admin, &ct, json!({})).await,
        409,
        "InvalidState",
        "compromised",
    );
}

/// `disable-key-version` of a version that a rotation makes primary while the request runs
/// is refused: the write checks the primary again, so the key never has a disabled primary
/// (every encrypt would fail until someone noticed).
#[tokio::test(flavor = "multi_thread")]
async fn a_version_made_primary_meanwhile_is_not_disabled() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_quiet(dir.path()).await;
    let key = s.create_key(&s.admin, "envelope").await;

    let disable = s.call(
        Some(&s.admin),
        "disable-key-version",
        json!({ "key_id": key, "version": 2 }),
    );
    let rotate = async {
        let rotated = s.ok(&s.admin, "rotate-key", json!({ "key_id": key })).await;
        assert_eq!(rotated["primary_version"], 2, "{rotated}");
    };
    let disabled = s
        .interleaved("version-state:resolved", &key, disable, rotate)
        .await;
    assert_changed_meanwhile(&disabled);
    assert_eq!(
        version_state(&versions(&s, &s.admin, &key).await, 2),
        "enabled"
    );
    s.encrypt(&s.admin, &key, b"still encrypts", json!({}))
        .await;
}

/// A version's state changes only while its key is in the state the request was checked
/// for: a deletion scheduled meanwhile leaves the version as it was (before, the version
/// changed on a key pending deletion, which refuses such changes).
#[tokio::test(flavor = "multi_thread")]
async fn a_version_state_change_is_a_compare_and_set_on_its_key_too() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_quiet(dir.path()).await;
    let key = s.create_key(&s.admin, "envelope").await;
    s.ok(&s.admin, "rotate-key", json!({ "key_id": key })).await;
    let approver = s.second_admin("default").await;
    let disable = s.call(
        Some(&s.admin),
        "disable-key-version",
        json!({ "key_id": key, "version": 1 }),
    );
    let schedule = async {
        let body = json!({ "key_id": key, "pending_window_days": 7 });
        let (status, v) = s.schedule_deletion(&s.admin, &approver, body).await;
        assert_eq!(status, 200, "{v}");
    };
    let disabled = s
        .interleaved("version-state:read", &key, disable, schedule)
        .await;
    assert_changed_meanwhile(&disabled);
    assert_eq!(
        version_state(&versions(&s, &s.admin, &key).await, 1),
        "enabled"
    );
}

/// A key's settings (its description here; automatic rotation likewise) change only while
/// the key is in the state the request was authorized for: a key scheduled for deletion
/// meanwhile is left as it was.
#[tokio::test(flavor = "multi_thread")]
async fn key_settings_are_compare_and_sets() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_quiet(dir.path()).await;
    let key = s.create_key(&s.admin, "envelope").await;
    let approver = s.second_admin("default").await;
    let update = s.call(
        Some(&s.admin),
        "update-key-description",
        json!({ "key_id": key, "description": "changed meanwhile" }),
    );
    let schedule = async {
        let body = json!({ "key_id": key, "pending_window_days": 7 });
        let (status, v) = s.schedule_deletion(&s.admin, &approver, body).await;
        assert_eq!(status, 200, "{v}");
    };
    let updated = s
        .interleaved("key-settings:resolved", &key, update, schedule)
        .await;
    assert_changed_meanwhile(&updated);
    let d = s
        .ok(&s.admin, "describe-key", json!({ "key_id": key }))
        .await;
    assert_eq!(
        (d["state"].as_str(), d["description"].as_str()),
        (Some("pending-deletion"), Some("")),
        "{d}"
    );
}

/// The scheduler asks a key's rotation schedule outside any transaction; a tenant that
/// replaces the schedule before the rotation commits (here a one-day period becomes thirty
/// days, eight days after the key was made) did not ask for that rotation, and it is undone:
/// the key keeps its one version, no `RotateKey` is audited, and the schedule that now stands
/// decides the next pass (not due). Before, the replaced schedule's decision was carried out.
#[tokio::test(flavor = "multi_thread")]
async fn a_rotation_schedule_replaced_while_asked_does_not_rotate() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_quiet(dir.path()).await;
    let (status, v) = s
        .call(
            Some(&s.admin),
            "upload-plugin",
            json!({ "name": "fixed", "world": "rotation-schedule",
                    "component": b64(&wasm("rotation-fixed-interval")) }),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let key = s.create_key(&s.admin, "hsm").await;
    let schedule = |period: &str| {
        s.ok(
            &s.admin,
            "set-rotation-schedule",
            json!({ "key_id": key, "plugin": "fixed", "config": { "period": period } }),
        )
    };
    schedule("1d").await;
    s.advance_clock(8 * DAY).await;

    let pass = s.call(Some(&s.admin), "run-scheduler", json!({}));
    let (status, report) = s
        .interleaved("rotate:start", &key, pass, async {
            schedule("30d").await;
        })
        .await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["rotated"], json!([]), "{report}");
    assert_eq!(report["failed"], json!([]), "{report}");
    let listed = versions(&s, &s.admin, &key).await;
    assert_eq!(
        listed["versions"].as_array().map(Vec::len),
        Some(1),
        "{listed}"
    );
    let pool = s.sql_any().await;
    let rotations: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM audit_log WHERE action = 'RotateKey' AND resource LIKE $1",
    )
    .bind(format!("%{key}%"))
    .fetch_one(&pool)
    .await
    .unwrap();
    pool.close().await;
    assert_eq!(rotations, 0);

    let report = s.ok(&s.admin, "run-scheduler", json!({})).await;
    assert_eq!(report["rotated"], json!([]), "{report}");
    assert_eq!(report["failed"], json!([]), "{report}");
    s.assert_audit_verifies();
}

/// Deletion protection is never turned on for a key whose deletion is scheduled: it is
/// checked when a deletion is scheduled, not when it comes due, so a "protected" answer for a
/// pending key would be false (the key was still destroyed when its window ended). Refused
/// when the key is pending, and a compare-and-set against the state it was read in when a
/// deletion is scheduled meanwhile. A second schedule says "is pending deletion", as AWS does.
#[tokio::test(flavor = "multi_thread")]
async fn a_key_pending_deletion_is_not_protected() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_quiet(dir.path()).await;
    let approver = s.second_admin("default").await;
    let schedule = |key: String| {
        let s = &s;
        let approver = approver.clone();
        async move {
            let body = json!({ "key_id": key, "pending_window_days": 7 });
            s.schedule_deletion(&s.admin, &approver, body).await
        }
    };

    let key = s.create_key(&s.admin, "envelope").await;
    let (status, v) = schedule(key.clone()).await;
    assert_eq!(status, 200, "{v}");
    for (op, body) in [
        (
            "set-deletion-protection",
            json!({ "key_id": key, "enabled": true }),
        ),
        (
            "configure-key",
            json!({ "key_id": key, "deletion_protection": true }),
        ),
    ] {
        assert_error(
            &s.call(Some(&s.admin), op, body).await,
            409,
            "InvalidState",
            "cancel its deletion",
        );
    }
    assert_error(
        &schedule(key.clone()).await,
        409,
        "InvalidState",
        "is pending deletion",
    );

    let raced = s.create_key(&s.admin, "envelope").await;
    let protect = s.call(
        Some(&s.admin),
        "set-deletion-protection",
        json!({ "key_id": raced, "enabled": true }),
    );
    let scheduled = async {
        let (status, v) = schedule(raced.clone()).await;
        assert_eq!(status, 200, "{v}");
    };
    let protected = s
        .interleaved("key-settings:resolved", &raced, protect, scheduled)
        .await;
    assert_changed_meanwhile(&protected);

    // The window ends: both are destroyed, as their answers said they would be.
    s.advance_clock(8 * DAY).await;
    s.ok(&s.admin, "run-scheduler", json!({})).await;
    for k in [&key, &raced] {
        let d = s.ok(&s.admin, "describe-key", json!({ "key_id": k })).await;
        assert_eq!(
            (d["state"].as_str(), d["deletion_protection"].as_bool()),
            (Some("destroyed"), Some(false)),
            "{d}"
        );
    }
}

/// A request that finds a blob-backed envelope version in the cache takes the wrapped material
/// the entry keeps, not a bare "it is cached": the entry evicted before the request seals (a
/// full cache, here of one entry) leaves it able to seal (before, it was a 500 `Internal`).
#[tokio::test(flavor = "multi_thread")]
async fn a_cache_entry_evicted_mid_request_does_not_fail_it() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_with_env(
        dir.path(),
        &[
            ("RUST_LOG", "warn"),
            ("KEYPLANE_LIFECYCLE__SCHEDULER_INTERVAL_SECONDS", "0"),
            ("KEYPLANE_ENVELOPE_CACHE__MAX_ENTRIES", "1"),
        ],
    )
    .await;
    s.kv_backend(&s.admin).await;
    let a = s.create_key(&s.admin, "envelope").await;
    let b = s.create_key(&s.admin, "envelope").await;
    let ct = s.encrypt(&s.admin, &a, b"cached", json!({})).await;
    // A's version is in the cache; B's encryption, while A's request waits past finding it
    // there, takes the one slot.
    let b_evicts_a = || async {
        s.encrypt(&s.admin, &b, b"evicts a", json!({})).await;
    };
    let encrypt_a = s.call(
        Some(&s.admin),
        "encrypt",
        json!({ "key_id": a, "plaintext": b64(b"evicted meanwhile") }),
    );
    let (status, v) = s
        .interleaved("version:loaded", &a, encrypt_a, b_evicts_a())
        .await;
    assert_eq!(status, 200, "{v}");
    let decrypt_a = s.decrypt(&s.admin, &ct, json!({}));
    let (status, v) = s
        .interleaved("version:loaded", &a, decrypt_a, b_evicts_a())
        .await;
    assert_eq!(
        (status, unb64(&v["plaintext"])),
        (200, b"cached".to_vec()),
        "{v}"
    );
}

/// The material of a key destroyed where this node did not hear of it (on another node, its
/// notice missed: here its row is changed behind the node's back) leaves this node's envelope
/// cache at the next scheduler pass, as its HSM objects do (before, it stayed in memory for
/// the cache's TTL: envelope versions have no object for the sweep to find).
#[tokio::test(flavor = "multi_thread")]
async fn cached_material_of_a_key_destroyed_elsewhere_goes_at_the_next_pass() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_quiet(dir.path()).await;
    let kept = s.create_key(&s.admin, "envelope").await;
    let destroyed = s.create_key(&s.admin, "envelope").await;
    for key in [&kept, &destroyed] {
        s.encrypt(&s.admin, key, b"cached", json!({})).await;
    }
    let cached = |key: String| {
        let s = &s;
        async move {
            let r = s
                .client
                .post(format!("{}/debug/envelope-cached", s.base))
                .bearer_auth(&s.admin)
                .json(&json!({ "key_id": key, "version": 1 }))
                .send()
                .await
                .unwrap();
            r.json::<Value>().await.unwrap()["cached"]
                .as_bool()
                .unwrap()
        }
    };
    assert!(cached(destroyed.clone()).await);
    common::sqlite(
        &dir.path().join("keyplane.db"),
        &format!("UPDATE keys SET state = 'destroyed' WHERE id = '{destroyed}'"),
    );
    s.ok(&s.admin, "run-scheduler", json!({})).await;
    assert!(
        !cached(destroyed).await,
        "the destroyed key's material is still cached"
    );
    assert!(cached(kept).await, "the kept key's material was dropped");
}

/// `delete-alias` deletes the alias only while it names the key it was authorized on: one
/// moved meanwhile to a key whose aliases a policy protects stays.
#[tokio::test(flavor = "multi_thread")]
async fn delete_alias_deletes_only_what_it_was_authorized_for() {
    let dir = tempfile::tempdir().unwrap();
    let s = with_policy(
        dir.path(),
        r#"@id("locked-keys-keep-their-aliases")
@description("Aliases of keys tagged locked are not deleted.")
forbid (principal, action == Keyplane::Action::"DeleteAlias", resource)
when { resource.hasTag("locked") };
"#,
    )
    .await;
    let create = |tags: Value| tagged_key(&s, tags);
    let free = create(json!({})).await;
    let locked = create(json!({ "locked": "yes" })).await;
    s.ok(
        &s.admin,
        "create-alias",
        json!({ "alias_name": "alias/prod", "target_key_id": free }),
    )
    .await;

    let delete = s.call(
        Some(&s.admin),
        "delete-alias",
        json!({ "alias_name": "alias/prod" }),
    );
    let update = async {
        s.ok(
            &s.admin,
            "update-alias",
            json!({ "alias_name": "alias/prod", "target_key_id": locked }),
        )
        .await;
    };
    let deleted = s
        .interleaved("delete-alias:resolved", &free, delete, update)
        .await;
    assert_changed_meanwhile(&deleted);
    let described = s
        .ok(&s.admin, "describe-key", json!({ "key_id": "alias/prod" }))
        .await;
    assert_eq!(described["key_id"], locked.as_str());
    // Asked again, it is decided on the key it names now.
    assert_error(
        &s.call(
            Some(&s.admin),
            "delete-alias",
            json!({ "alias_name": "alias/prod" }),
        )
        .await,
        403,
        "AccessDenied",
        "DeleteAlias",
    );
}

/// `rewrap` opens nothing below the key's minimum decryption version, as `decrypt` (before,
/// it opened every version).
#[tokio::test(flavor = "multi_thread")]
async fn rewrap_respects_the_minimum_decryption_version() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_quiet(dir.path()).await;
    let key = s.create_key(&s.admin, "envelope").await;
    let old = s.encrypt(&s.admin, &key, b"old", json!({})).await;
    s.ok(&s.admin, "rotate-key", json!({ "key_id": key })).await;
    s.ok(
        &s.admin,
        "set-min-decryption-version",
        json!({ "key_id": key, "version": 2 }),
    )
    .await;
    assert_error(
        &s.decrypt(&s.admin, &old, json!({})).await,
        409,
        "InvalidState",
        "minimum decryption version",
    );
    assert_error(
        &s.call(
            Some(&s.admin),
            "rewrap",
            json!({ "ciphertext_blob": b64(&old) }),
        )
        .await,
        409,
        "InvalidState",
        "minimum decryption version",
    );
}

/// Two-person deletion: the second admin approves with `approve-key-deletion` under their
/// own token; the approval is bound to one key and one requester, used once, and expires.
/// No request carries another principal's token any more (the old `x-keyplane-approver`
/// header is ignored).
#[tokio::test(flavor = "multi_thread")]
async fn deletion_approvals_are_single_use_and_bound_to_key_and_requester() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_quiet(dir.path()).await;
    let (a1_id, a1) = s.tenant_with_admin("pair").await;
    let a2 = s.second_admin("pair").await;
    let a3 = s.second_admin("pair").await;
    let key = s.create_key(&a1, "envelope").await;
    let other = s.create_key(&a1, "envelope").await;
    let schedule = |token: &str, key: &str| {
        let (token, key) = (token.to_string(), key.to_string());
        let s = &s;
        async move {
            s.call(
                Some(&token),
                "schedule-key-deletion",
                json!({ "key_id": key, "pending_window_days": 7 }),
            )
            .await
        }
    };
    let approve = |key: &str, window: Option<i64>| {
        let mut body = json!({ "key_id": key, "requester": a1_id });
        if let Some(w) = window {
            body["window_seconds"] = json!(w);
        }
        let (s, a2) = (&s, a2.clone());
        async move { s.call(Some(&a2), "approve-key-deletion", body).await }
    };

    assert_error(&schedule(&a1, &key).await, 403, "AccessDenied", "");
    // A second admin's token in a header approves nothing.
    let header = format!("Bearer {a2}");
    assert_error(
        &s.call_with_headers(
            Some(&a1),
            "schedule-key-deletion",
            json!({ "key_id": key }),
            &[("x-keyplane-approver", header.as_str())],
        )
        .await,
        403,
        "AccessDenied",
        "",
    );
    // Nobody approves their own request.
    assert_error(
        &s.call(
            Some(&a1),
            "approve-key-deletion",
            json!({ "key_id": key, "requester": a1_id }),
        )
        .await,
        400,
        "ValidationError",
        "its own",
    );

    let (status, approval) = approve(&key, None).await;
    assert_eq!(status, 200, "{approval}");
    // Bound to its requester and its key.
    assert_error(&schedule(&a3, &key).await, 403, "AccessDenied", "");
    assert_error(&schedule(&a1, &other).await, 403, "AccessDenied", "");
    let (status, v) = schedule(&a1, &key).await;
    assert_eq!(
        (status, v["state"].as_str()),
        (200, Some("pending-deletion"))
    );
    // Used once.
    s.ok(&a1, "cancel-key-deletion", json!({ "key_id": key }))
        .await;
    assert_error(&schedule(&a1, &key).await, 403, "AccessDenied", "");
    // And only within its window.
    assert_eq!(approve(&key, Some(60)).await.0, 200);
    s.advance_clock(61).await;
    assert_error(&schedule(&a1, &key).await, 403, "AccessDenied", "");

    let pool = s.sql().await;
    let (principal, resource): (String, String) = sqlx::query_as(
        "SELECT principal, resource FROM audit_log WHERE action = 'ApproveKeyDeletion' AND outcome = 'ok' LIMIT 1",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(resource.contains(&key), "{resource}");
    assert!(
        !principal.contains(&a1_id),
        "the approver is audited: {principal}"
    );
    assert_eq!(approval["requester"], a1_id);
}

/// A background pass holds the scheduler lease only while it runs, and `run-scheduler` waits
/// for one that is running: an operator's pass is never turned away as `skipped` (before,
/// the background pass kept the lease for twice its interval).
#[tokio::test(flavor = "multi_thread")]
async fn run_scheduler_is_not_skipped_beside_the_background_pass() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_with_env(
        dir.path(),
        &[
            ("RUST_LOG", "warn"),
            ("KEYPLANE_LIFECYCLE__SCHEDULER_INTERVAL_SECONDS", "1"),
        ],
    )
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    for _ in 0..3 {
        let pass = s.ok(&s.admin, "run-scheduler", json!({})).await;
        assert_eq!(pass["skipped"], false, "{pass}");
        tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    }
}

/// Keys the scheduler fails on at every pass do not starve the others: each pass takes a page
/// of 100 due keys, those it never failed on first and then by oldest failure. Here 100 keys
/// of one tenant cannot be destroyed (their storage backend's row is gone, as a tenant's
/// broken plugin would fail), and another tenant's key, due later, is destroyed at the next
/// pass (before, the failing keys came first on every pass, for ever).
#[tokio::test(flavor = "multi_thread")]
async fn keys_the_scheduler_always_fails_on_do_not_starve_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_quiet(dir.path()).await;
    let mut broken = Vec::new();
    for _ in 0..100 {
        broken.push(s.create_key(&s.admin, "envelope").await);
    }
    let list = broken
        .iter()
        .map(|k| format!("'{k}'"))
        .collect::<Vec<_>>()
        .join(", ");
    common::sqlite(
        &dir.path().join("keyplane.db"),
        &format!(
            "UPDATE keys SET state = 'destroying', deletion_date = 0 WHERE id IN ({list}); \
             UPDATE key_versions SET blob_store = 'gone' WHERE key_id IN ({list});"
        ),
    );
    let (_, other) = s.tenant_with_admin("other").await;
    let victim = s.create_key(&other, "envelope").await;
    s.destroy_keys_of(&other, "other", &[&victim]).await;
    let described = s
        .ok(&other, "describe-key", json!({ "key_id": victim }))
        .await;
    assert_eq!(
        described["state"], "pending-deletion",
        "the first pass is the broken keys'"
    );
    let pass = s.ok(&s.admin, "run-scheduler", json!({})).await;
    assert_eq!(pass["destroyed"], json!([victim]), "{pass}");
    assert_eq!(pass["failed"].as_array().unwrap().len(), 99, "{pass}");
    let described = s
        .ok(&other, "describe-key", json!({ "key_id": victim }))
        .await;
    assert_eq!(described["state"], "destroyed", "{described}");
}

/// Two uploads of one plugin name race past the existence check; the unique constraint that
/// refuses the second is a conflict (`409 AlreadyExists`), not an outage (it was `503`).
#[tokio::test(flavor = "multi_thread")]
async fn a_unique_constraint_is_a_conflict() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_quiet(dir.path()).await;
    let upload = || {
        s.call(
            Some(&s.admin),
            "upload-plugin",
            json!({ "name": "dup", "world": "storage-backend", "component": b64(&wasm("storage-kv")) }),
        )
    };
    s.pause("upload:installed", "dup", "arm").await;
    let first = upload();
    let rest = async {
        assert_eq!(
            s.pause("upload:installed", "dup", "wait").await["reached"],
            true
        );
        let second = upload().await;
        s.pause("upload:installed", "dup", "release").await;
        second
    };
    let (first, second) = tokio::join!(first, rest);
    assert_eq!(second.0, 200, "{second:?}");
    assert_error(&first, 409, "AlreadyExists", "plugin");
}

/// `update-alias` is authorized on the key the alias names now, not only on its new target:
/// a policy that forbids moving aliases off locked keys holds.
#[tokio::test(flavor = "multi_thread")]
async fn update_alias_is_authorized_on_its_current_target() {
    let dir = tempfile::tempdir().unwrap();
    let s = with_policy(
        dir.path(),
        r#"@id("locked-keys-keep-their-aliases")
@description("Aliases of keys tagged locked are not moved or deleted.")
forbid (
  principal,
  action in [Keyplane::Action::"UpdateAlias", Keyplane::Action::"DeleteAlias"],
  resource
)
when { resource.hasTag("locked") };
"#,
    )
    .await;
    let create = |tags: Value| tagged_key(&s, tags);
    let locked = create(json!({ "locked": "yes" })).await;
    let free = create(json!({})).await;
    let other = create(json!({})).await;
    s.ok(
        &s.admin,
        "create-alias",
        json!({ "alias_name": "alias/prod", "target_key_id": locked }),
    )
    .await;
    let moved = s
        .call(
            Some(&s.admin),
            "update-alias",
            json!({ "alias_name": "alias/prod", "target_key_id": free }),
        )
        .await;
    assert_error(&moved, 403, "AccessDenied", "UpdateAlias");
    let described = s
        .ok(&s.admin, "describe-key", json!({ "key_id": "alias/prod" }))
        .await;
    assert_eq!(described["key_id"], locked.as_str());
    // Between two unlocked keys it moves.
    s.ok(
        &s.admin,
        "create-alias",
        json!({ "alias_name": "alias/dev", "target_key_id": free }),
    )
    .await;
    s.ok(
        &s.admin,
        "update-alias",
        json!({ "alias_name": "alias/dev", "target_key_id": other }),
    )
    .await;
    let (decision, policies): (String, String) = sqlx::query_as(
        "SELECT decision, policies FROM audit_log WHERE action = 'UpdateAlias' ORDER BY seq LIMIT 1",
    )
    .fetch_one(&s.sql().await)
    .await
    .unwrap();
    assert_eq!(decision, "deny");
    assert!(
        policies.contains("locked-keys-keep-their-aliases"),
        "{policies}"
    );
}

/// Rotate `keys` until each has made its new version's material, then SIGKILL the node.
async fn crash_mid_rotation(s: &mut Server, token: &str, keys: &[&str]) {
    for k in keys {
        s.pause("rotate:version-made", k, "arm").await;
    }
    let pending: Vec<_> = keys
        .iter()
        .map(|k| s.spawn_call(token, "rotate-key", json!({ "key_id": k })))
        .collect();
    for k in keys {
        let reached = s.pause("rotate:version-made", k, "wait").await;
        assert_eq!(reached["reached"], true);
    }
    s.kill();
    for p in pending {
        assert!(p.await.unwrap().is_none(), "no answer from a killed node");
    }
}

fn labelled(data: &std::path::Path, label: &str) -> usize {
    common::token_objects(data)
        .into_iter()
        .filter(|(l, _)| l == label)
        .count()
}

fn stdout(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{} {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A crash between making a version's material and committing its row leaves an HSM object
/// and a blob that nothing names. They block nothing (the next rotation makes its own), and
/// garbage collection removes them once older than the grace period, never before: offline
/// with `keyplane gc` and from the scheduler, auditing each removal.
#[tokio::test(flavor = "multi_thread")]
async fn material_left_by_a_crash_is_collected() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start_quiet(dir.path()).await;
    let (_, t) = s.tenant_with_admin("gc").await;
    s.kv_backend(&t).await;
    let env_key = s.create_key(&t, "envelope").await;
    let hsm_key = s.create_key(&t, "hsm").await;
    let env_ct = s.encrypt(&t, &env_key, b"envelope", json!({})).await;
    let hsm_ct = s.encrypt(&t, &hsm_key, b"hsm", json!({})).await;

    // Both rotations stop after making their version-2 material; then the node crashes.
    crash_mid_rotation(&mut s, &t, &[&env_key, &hsm_key]).await;
    let v2_blobs = format!("tenants/gc/keys/{env_key}/2/");
    let orphan_blobs = || kv_blobs(&s, "gc", &v2_blobs);
    let version_2 = format!("kp:{hsm_key}:2");
    assert_eq!(orphan_blobs().await.len(), 1);
    assert_eq!(labelled(dir.path(), &version_2), 1);

    // Young: left alone. Past the grace period: listed by a dry run, removed by --apply.
    let out = stdout(&s.tool(&["gc"]));
    assert!(
        out.contains("would remove 0 HSM object(s) and 0 blob(s); 2 younger"),
        "{out}"
    );
    // A grace period below a minute: never from the configuration (a node would collect the
    // material of its own requests in flight), from the flag only with every node stopped.
    let refused = common::keyplane(dir.path())
        .envs(s.env.iter().map(|(k, v)| (k, v)))
        .env("KEYPLANE_LIFECYCLE__GC_GRACE_SECONDS", "0")
        .args(["gc", "--apply", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr)
            .contains("lifecycle.gc_grace_seconds must be at least 60"),
        "{refused:?}"
    );
    let refused = common::keyplane(dir.path())
        .envs(s.env.iter().map(|(k, v)| (k, v)))
        .args(["gc", "--apply", "--grace-seconds", "59", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("needs --all-nodes-stopped"),
        "{refused:?}"
    );
    assert_eq!(labelled(dir.path(), &version_2), 1);
    let out = stdout(&s.tool(&["gc", "--grace-seconds", "0", "--all-nodes-stopped"]));
    assert!(
        out.contains(&format!("would remove HSM object {version_2}:")),
        "{out}"
    );
    assert!(
        out.contains(&format!("would remove blob gc/kv/keys/{env_key}/2/")),
        "{out}"
    );
    assert_eq!(labelled(dir.path(), &version_2), 1);
    let out = stdout(&s.tool(&[
        "gc",
        "--apply",
        "--grace-seconds",
        "0",
        "--all-nodes-stopped",
    ]));
    assert!(
        out.contains("removed 1 HSM object(s) and 1 blob(s)"),
        "{out}"
    );
    assert_eq!(labelled(dir.path(), &version_2), 0);
    assert!(orphan_blobs().await.is_empty());

    // Nothing that a row names went, and the keys rotate again.
    let mut s = Server::start_quiet(dir.path()).await;
    for (key, ct, pt) in [
        (&env_key, &env_ct, b"envelope".as_slice()),
        (&hsm_key, &hsm_ct, b"hsm".as_slice()),
    ] {
        let (status, v) = s.decrypt(&t, ct, json!({})).await;
        assert_eq!((status, unb64(&v["plaintext"])), (200, pt.to_vec()), "{v}");
        let r = s.ok(&t, "rotate-key", json!({ "key_id": key })).await;
        assert_eq!(r["primary_version"], 2);
    }
    let removals: Vec<(String, String)> = sqlx::query_as(
        "SELECT resource, outcome FROM audit_log WHERE action = 'CollectGarbage' ORDER BY seq",
    )
    .fetch_all(&s.sql().await)
    .await
    .unwrap();
    assert_eq!(removals.len(), 2, "{removals:?}");
    assert!(removals.iter().all(|(_, o)| o == "ok"), "{removals:?}");
    // Each announced before it happened.
    let begun: Vec<String> = sqlx::query_scalar(
        "SELECT resource FROM audit_log WHERE action = 'BeginCollectGarbage' ORDER BY seq",
    )
    .fetch_all(&s.sql().await)
    .await
    .unwrap();
    let removed: Vec<String> = removals.into_iter().map(|(r, _)| r).collect();
    assert_eq!(begun, removed);

    // The scheduler collects too, once its interval is due and the grace period has passed.
    crash_mid_rotation(&mut s, &t, &[&env_key, &hsm_key]).await;
    let made = std::time::Instant::now();
    let s = Server::start_with_env(
        dir.path(),
        &[
            ("RUST_LOG", "warn"),
            ("KEYPLANE_LIFECYCLE__SCHEDULER_INTERVAL_SECONDS", "0"),
            ("KEYPLANE_LIFECYCLE__GC_INTERVAL_SECONDS", "3600"),
            ("KEYPLANE_LIFECYCLE__GC_GRACE_SECONDS", "60"),
        ],
    )
    .await;
    // Younger than the grace period (the shortest a node takes): left alone.
    let pass = s.ok(&s.admin, "run-scheduler", json!({})).await;
    let collected = &pass["collected"];
    assert!(
        collected["hsm_objects"].as_array().unwrap().is_empty(),
        "{pass}"
    );
    assert_eq!(collected["young"], 2, "{pass}");
    // A minute on (the material's age is real time: a test cannot move it), once the
    // interval (on the node's clock) is due again.
    let minute = std::time::Duration::from_secs(61);
    tokio::time::sleep(minute.saturating_sub(made.elapsed())).await;
    s.advance_clock(3661).await;
    let pass = s.ok(&s.admin, "run-scheduler", json!({})).await;
    let collected = &pass["collected"];
    assert_eq!(
        collected["hsm_objects"].as_array().unwrap().len(),
        1,
        "{pass}"
    );
    assert_eq!(collected["blobs"].as_array().unwrap().len(), 1, "{pass}");
    let version_3 = format!("kp:{hsm_key}:3");
    assert_eq!(labelled(dir.path(), &version_3), 0);
    assert!(kv_blobs(&s, "gc", &format!("tenants/gc/keys/{env_key}/3/"))
        .await
        .is_empty());
    // Not again within the interval.
    let pass = s.ok(&s.admin, "run-scheduler", json!({})).await;
    assert!(pass.get("collected").is_none(), "{pass}");
    let out = s.audit_verify();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A rotation that checked its key enabled before a `disable-key` committed does not rotate
/// the disabled key: the primary-version swap is also a compare-and-set on the key's state.
#[tokio::test(flavor = "multi_thread")]
async fn a_key_disabled_during_a_rotation_is_not_rotated() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_quiet(dir.path()).await;
    let key = s.create_key(&s.admin, "hsm").await;
    s.pause("rotate:version-made", &key, "arm").await;
    let rotation = s.call(Some(&s.admin), "rotate-key", json!({ "key_id": key }));
    let rest = async {
        let reached = s.pause("rotate:version-made", &key, "wait").await;
        assert_eq!(reached["reached"], true);
        s.ok(&s.admin, "disable-key", json!({ "key_id": key }))
            .await;
        s.pause("rotate:version-made", &key, "release").await;
    };
    let (rotated, ()) = tokio::join!(rotation, rest);
    assert_error(&rotated, 409, "InvalidState", "changed state");
    let listed = versions(&s, &s.admin, &key).await;
    assert_eq!(listed["primary_version"], 1, "{listed}");
    assert_eq!(listed["versions"].as_array().unwrap().len(), 1, "{listed}");
}

/// Two storage plugins of one tenant built on the `kv` capability share one namespace, so
/// each lists the other's blobs: garbage collection keeps every blob any version of the tenant
/// names, whichever plugin it lives in (it deleted the other plugin's blobs). And a plugin
/// whose configuration was never kept (a database from before configurations were kept per
/// plugin) is still reached, with an empty one.
#[tokio::test(flavor = "multi_thread")]
async fn blobs_of_two_backends_sharing_a_namespace_survive_collection() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start_quiet(dir.path()).await;
    let (_, t) = s.tenant_with_admin("twokv").await;
    s.kv_backend(&t).await;
    let first = s.create_key(&t, "envelope").await;
    let first_ct = s.encrypt(&t, &first, b"in kv", json!({})).await;
    s.ok(
        &t,
        "upload-plugin",
        json!({ "name": "kv2", "world": "storage-backend", "component": b64(&wasm("storage-kv")) }),
    )
    .await;
    s.ok(&t, "set-storage-backend", json!({ "plugin": "kv2" }))
        .await;
    let second = s.create_key(&t, "envelope").await;
    let second_ct = s.encrypt(&t, &second, b"in kv2", json!({})).await;
    s.stop();

    let out = stdout(&s.tool(&[
        "gc",
        "--apply",
        "--grace-seconds",
        "0",
        "--all-nodes-stopped",
    ]));
    assert!(
        out.contains("removed 0 HSM object(s) and 0 blob(s)"),
        "{out}"
    );
    // As a database from before this release would be: no configuration kept for `kv`.
    common::sqlite(
        &dir.path().join("keyplane.db"),
        "DELETE FROM storage_backend_configs WHERE plugin_name = 'kv'",
    );
    let s = Server::start_quiet(dir.path()).await;
    for (ct, pt) in [
        (&first_ct, b"in kv".as_slice()),
        (&second_ct, b"in kv2".as_slice()),
    ] {
        let (status, v) = s.decrypt(&t, ct, json!({})).await;
        assert_eq!((status, unb64(&v["plaintext"])), (200, pt.to_vec()), "{v}");
    }
}

/// After the HSM started over, audit checkpoints are signed with the same audit key, found
/// again (never a new one, which would not match the published public key), so the log's
/// checkpoints still verify.
#[tokio::test(flavor = "multi_thread")]
async fn checkpoints_after_a_recovery_use_the_same_audit_key() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start_with_env(
        dir.path(),
        &[
            ("RUST_LOG", "warn"),
            ("KEYPLANE_LIFECYCLE__SCHEDULER_INTERVAL_SECONDS", "0"),
            ("KEYPLANE_AUDIT__CHECKPOINT_EVERY_RECORDS", "1"),
            ("KEYPLANE_AUDIT__CHECKPOINT_INTERVAL_SECONDS", "1"),
        ],
    )
    .await;
    let public_key = std::fs::read(dir.path().join("audit-signing-key.pem")).unwrap();
    let r = s
        .client
        .post(format!("{}/debug/hsm-fault", s.base))
        .bearer_auth(&s.admin)
        .json(&json!({ "action": "close-sessions" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let key = s.create_key(&s.admin, "hsm").await;
    let count = || async {
        sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM audit_checkpoints")
            .fetch_one(&s.sql().await)
            .await
            .unwrap()
    };
    let before = count().await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while count().await <= before + 1 {
        s.encrypt(&s.admin, &key, b"x", json!({})).await;
        assert!(
            std::time::Instant::now() < deadline,
            "no checkpoint signed after the recovery"
        );
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
    s.stop();
    assert_eq!(
        std::fs::read(dir.path().join("audit-signing-key.pem")).unwrap(),
        public_key
    );
    s.assert_audit_verifies();
}

/// Keys created while others are shredded and the token's objects are listed and looked up:
/// SoftHSM2 fails some of those calls with `CKR_GENERAL_ERROR` (even
/// `CKR_TEMPLATE_INCONSISTENT`) when they run at once in one process, so keyplane makes them
/// take turns (`Hsm::call_on_objects`). Every request must succeed.
#[tokio::test(flavor = "multi_thread")]
async fn keys_are_created_while_others_are_shredded_and_looked_up() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start_quiet(dir.path()).await;
    let approver = s.second_admin("default").await;
    let me = s.principal_id(&s.admin).await;
    let (mut doomed, mut kept) = (Vec::new(), Vec::new());
    for i in 0..48 {
        let key = s.create_key(&s.admin, "hsm").await;
        if i % 2 == 0 {
            s.ok(
                &approver,
                "approve-key-deletion",
                json!({ "key_id": key, "requester": me }),
            )
            .await;
            s.ok(
                &s.admin,
                "schedule-key-deletion",
                json!({ "key_id": key, "pending_window_days": 7 }),
            )
            .await;
            doomed.push(key);
        } else {
            kept.push(key);
        }
    }
    // A fresh node: every first use of a kept key looks its object up.
    s.stop();
    let s = Server::start_with_env(
        dir.path(),
        &[
            ("RUST_LOG", "warn"),
            ("KEYPLANE_LIFECYCLE__SCHEDULER_INTERVAL_SECONDS", "0"),
            ("KEYPLANE_LIFECYCLE__GC_INTERVAL_SECONDS", "1"),
        ],
    )
    .await;
    s.advance_clock(8 * DAY).await;
    let mut calls = Vec::new();
    calls.push(s.call(Some(&s.admin), "run-scheduler", json!({})));
    for (i, key) in kept.iter().enumerate() {
        calls.push(s.call(
            Some(&s.admin),
            "encrypt",
            json!({ "key_id": key, "plaintext": b64(b"x") }),
        ));
        let spec = ["AES_256_GCM", "ECC_NIST_P256", "HMAC_SHA_256"][i % 3];
        for _ in 0..3 {
            calls.push(s.call(
                Some(&s.admin),
                "create-key",
                json!({ "protection": "hsm", "key_spec": spec }),
            ));
        }
    }
    let answers = futures::future::join_all(calls).await;
    let failed: Vec<_> = answers.iter().filter(|(st, _)| *st != 200).collect();
    assert!(
        failed.is_empty(),
        "{} of {} failed: {failed:?}",
        failed.len(),
        answers.len()
    );
    assert_eq!(
        answers[0].1["destroyed"].as_array().unwrap().len(),
        doomed.len()
    );
}

/// An older release sealed only configuration values whose name said "secret", "password",
/// "token" or "credential"; an `api_key` it stored stays in the clear until the node starts
/// with this release, which seals it (the value still reaches the plugin).
#[tokio::test(flavor = "multi_thread")]
async fn configuration_values_stored_in_the_clear_are_sealed_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start_quiet(dir.path()).await;
    let (_, t) = s.tenant_with_admin("legacy").await;
    s.kv_backend(&t).await;
    let key = s.create_key(&t, "envelope").await;
    let ct = s.encrypt(&t, &key, b"kept", json!({})).await;
    s.stop();
    // What the older release left: the value in the clear, in both places it is kept.
    let secret = "ak-LEGACY-PLAINTEXT-4f2b9e";
    for table in ["storage_backends", "storage_backend_configs"] {
        common::sqlite(
            &dir.path().join("keyplane.db"),
            &format!("UPDATE {table} SET config = '{{\"api_key\":\"{secret}\"}}' WHERE tenant_id = 'legacy'"),
        );
    }
    let mut s = Server::start_quiet(dir.path()).await;
    let (status, v) = s.decrypt(&t, &ct, json!({})).await;
    assert_eq!(status, 200, "{v}");
    s.stop();
    common::assert_absent_under(dir.path(), "a configuration secret", secret.as_bytes());
}

/// A storage plugin deleted while a request that wrote a blob to it was still running: the
/// request fails instead of committing a version whose blob nobody could read again.
#[tokio::test(flavor = "multi_thread")]
async fn a_version_is_not_committed_into_a_deleted_plugin() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_quiet(dir.path()).await;
    let (_, t) = s.tenant_with_admin("moving").await;
    // Version 1 inline; version 2's blob goes to `old`, then the tenant moves on.
    let key = s.create_key(&t, "envelope").await;
    s.ok(
        &t,
        "upload-plugin",
        json!({ "name": "old", "world": "storage-backend", "component": b64(&wasm("storage-kv")) }),
    )
    .await;
    s.ok(&t, "set-storage-backend", json!({ "plugin": "old" }))
        .await;
    s.pause("rotate:version-made", &key, "arm").await;
    let rotation = s.call(Some(&t), "rotate-key", json!({ "key_id": key }));
    let rest = async {
        assert_eq!(
            s.pause("rotate:version-made", &key, "wait").await["reached"],
            true
        );
        s.kv_backend(&t).await;
        // No committed version keeps a blob in `old`, and it is no longer the backend.
        s.ok(&t, "delete-plugin", json!({ "name": "old" })).await;
        s.pause("rotate:version-made", &key, "release").await;
    };
    let (rotated, ()) = tokio::join!(rotation, rest);
    assert_error(
        &rotated,
        409,
        "InvalidState",
        "was deleted while this request ran",
    );
    let listed = versions(&s, &t, &key).await;
    assert_eq!(listed["primary_version"], 1, "{listed}");
}

/// A tenant whose `fs` storage plugin (granted its directory) puts blobs in `/data/a`, and a
/// key with version 1 inline (so the plugin holds no blob yet, and `set-storage-backend` may
/// point it anywhere); the key, and a count of the files in a subdirectory of the plugin's.
async fn fs_backend_in_a(
    s: &Server,
    dir: &std::path::Path,
    t: &str,
) -> (String, impl Fn(&str) -> usize) {
    let key = s.create_key(t, "envelope").await;
    s.ok(
        t,
        "upload-plugin",
        json!({ "name": "fs", "world": "storage-backend", "capabilities": ["filesystem"],
                "component": b64(&wasm("storage-fs")) }),
    )
    .await;
    let root = dir.join("plugins/fs/moving/fs");
    for sub in ["a", "b"] {
        std::fs::create_dir_all(root.join(sub)).unwrap();
    }
    s.ok(
        t,
        "set-storage-backend",
        json!({ "plugin": "fs", "config": { "dir": "/data/a" } }),
    )
    .await;
    let files = move |sub: &str| std::fs::read_dir(root.join(sub)).unwrap().count();
    (key, files)
}

/// A rotation that put its blob with a storage plugin's configuration, which
/// `set-storage-backend` replaced before the rotation committed: the rotation is refused and
/// its blob deleted from where it put it; a retry puts it where the plugin looks now, and it
/// is read from there once the material cache is gone. Before, the version committed and its
/// blob was looked for (and shredded) in the new place: after a restart the key's new version
/// could not decrypt.
#[tokio::test(flavor = "multi_thread")]
async fn a_rotation_is_refused_when_its_backend_is_reconfigured_meanwhile() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start_quiet(dir.path()).await;
    let (_, t) = s.tenant_with_admin("moving").await;
    let (key, files) = fs_backend_in_a(&s, dir.path(), &t).await;

    s.pause("rotate:version-made", &key, "arm").await;
    let rotation = s.call(Some(&t), "rotate-key", json!({ "key_id": key }));
    let rest = async {
        let reached = s.pause("rotate:version-made", &key, "wait").await;
        assert_eq!(reached["reached"], true);
        assert_eq!(files("a"), 1, "the rotation put its blob in a");
        s.ok(
            &t,
            "set-storage-backend",
            json!({ "plugin": "fs", "config": { "dir": "/data/b" } }),
        )
        .await;
        s.pause("rotate:version-made", &key, "release").await;
    };
    let (refused, ()) = tokio::join!(rotation, rest);
    assert_changed_meanwhile(&refused);
    assert_eq!((files("a"), files("b")), (0, 0), "no blob is left behind");
    assert_eq!(versions(&s, &t, &key).await["primary_version"], 1);

    let ct1 = s.encrypt(&t, &key, b"under version 1", json!({})).await;
    let rotated = s.ok(&t, "rotate-key", json!({ "key_id": key })).await;
    assert_eq!(rotated["primary_version"], 2);
    assert_eq!((files("a"), files("b")), (0, 1));
    let ct2 = s.encrypt(&t, &key, b"under version 2", json!({})).await;
    s.stop();
    let s = Server::start_quiet(dir.path()).await;
    for (ct, pt) in [
        (&ct1, b"under version 1".as_slice()),
        (&ct2, b"under version 2".as_slice()),
    ] {
        let (status, v) = s.decrypt(&t, ct, json!({})).await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(unb64(&v["plaintext"]), pt);
    }
}

/// A plugin deleted and uploaded again under its name (here as another world) while
/// `set-storage-backend` checked and tried it: the request is refused, not committed naming
/// a component it never checked (which would then have been every envelope key creation's
/// backend, and received the configuration's secrets).
#[tokio::test(flavor = "multi_thread")]
async fn a_plugin_uploaded_again_meanwhile_is_not_made_the_backend() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_quiet(dir.path()).await;
    let (_, t) = s.tenant_with_admin("swapped").await;
    let upload = |world: &str, file: &str| {
        s.call(
            Some(&t),
            "upload-plugin",
            json!({ "name": "store", "world": world, "component": b64(&wasm(file)) }),
        )
    };
    let (status, v) = upload("storage-backend", "storage-kv").await;
    assert_eq!(status, 200, "{v}");

    let change = s.call(
        Some(&t),
        "set-storage-backend",
        json!({ "plugin": "store", "config": { "api-token": "s3cr3t" } }),
    );
    let refused = s
        .interleaved("set-storage-backend:sampled", "store", change, async {
            s.ok(&t, "delete-plugin", json!({ "name": "store" })).await;
            let (status, v) = upload("rotation-schedule", "rotation-fixed-interval").await;
            assert_eq!(status, 200, "{v}");
        })
        .await;
    assert_error(&refused, 409, "InvalidState", "uploaded again");
    // Keys keep being created, their material inline, as before the request.
    let key = s.create_key(&t, "envelope").await;
    let ct = s.encrypt(&t, &key, b"still inline", json!({})).await;
    let (status, v) = s.decrypt(&t, &ct, json!({})).await;
    assert_eq!(status, 200, "{v}");
}

/// The other order: `set-storage-backend` sampled the plugin's blobs (none yet), then a
/// rotation committed a version whose blob it put with the old configuration, then the new
/// configuration would have been stored without anything showing that it reaches that blob.
/// It is refused; the version stays readable. Before, it was stored and the version's blob
/// was looked for in the new place.
#[tokio::test(flavor = "multi_thread")]
async fn a_backend_change_is_refused_when_a_blob_is_committed_meanwhile() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start_quiet(dir.path()).await;
    let (_, t) = s.tenant_with_admin("moving").await;
    let (key, files) = fs_backend_in_a(&s, dir.path(), &t).await;

    s.pause("set-storage-backend:sampled", "fs", "arm").await;
    let change = s.call(
        Some(&t),
        "set-storage-backend",
        json!({ "plugin": "fs", "config": { "dir": "/data/b" } }),
    );
    let rest = async {
        let reached = s.pause("set-storage-backend:sampled", "fs", "wait").await;
        assert_eq!(reached["reached"], true);
        let rotated = s.ok(&t, "rotate-key", json!({ "key_id": key })).await;
        assert_eq!(rotated["primary_version"], 2);
        let ct = s.encrypt(&t, &key, b"under version 2", json!({})).await;
        s.pause("set-storage-backend:sampled", "fs", "release")
            .await;
        ct
    };
    let (refused, ct) = tokio::join!(change, rest);
    assert_error(&refused, 409, "InvalidState", "while this request ran");
    assert_eq!((files("a"), files("b")), (1, 0));
    s.stop();
    let s = Server::start_quiet(dir.path()).await;
    let (status, v) = s.decrypt(&t, &ct, json!({})).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(unb64(&v["plaintext"]), b"under version 2");
}
