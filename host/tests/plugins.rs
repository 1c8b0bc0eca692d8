//! Tenant plugins against the real binary: uploads over the HTTP API, rotation decisions,
//! hostile components, and upload refusals. The components are built from `plugins/` by
//! `scripts/test` (Debian's Rust for wasm32-wasip2).

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

#[cfg(all(feature = "test-hooks", debug_assertions))]
use common::assert_attempt_name;
use common::{b64, wasm, Server};
use serde_json::{json, Value};

async fn upload(s: &Server, token: &str, name: &str, world: &str, file: &str) -> (u16, Value) {
    s.call(
        Some(token),
        "upload-plugin",
        json!({ "name": name, "world": world, "component": b64(&wasm(file)) }),
    )
    .await
}

async fn preview(
    s: &Server,
    key: &str,
    plugin: &str,
    config: Value,
    now: i64,
    info: Value,
) -> (u16, Value) {
    s.call(
        Some(&s.admin),
        "preview-rotation",
        json!({ "key_id": key, "plugin": plugin, "config": config, "now": now, "key_info": info }),
    )
    .await
}

const DAY: i64 = 86_400;

#[tokio::test(flavor = "multi_thread")]
async fn rotation_plugins_decide_including_boundaries() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start(dir.path()).await;
    for (name, file) in [
        ("fixed", "rotation-fixed-interval"),
        ("usage", "rotation-usage-limit"),
        ("window", "rotation-maintenance-window"),
    ] {
        let (status, v) = upload(&s, &s.admin, name, "rotation-schedule", file).await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["world"], "rotation-schedule");
        assert_eq!(v["sha256"].as_str().map(str::len), Some(64));
        assert!(
            v["imports"]
                .as_array()
                .unwrap()
                .iter()
                .any(|i| i == "keyplane:plugin/log@0.1.1"
                    || i.as_str().unwrap().starts_with("wasi:")),
            "{v}"
        );
    }
    let key = s.create_key(&s.admin, "envelope").await;

    // fixed-interval: due exactly `period` after creation or the last rotation.
    let created = 1_000_000;
    let cfg = json!({ "period": "30d" });
    let (st, v) = preview(
        &s,
        &key,
        "fixed",
        cfg.clone(),
        created + 30 * DAY - 1,
        json!({ "created_at": created }),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        (v["next_rotation"].as_i64(), v["due"].as_bool()),
        (Some(created + 30 * DAY), Some(false))
    );
    let (_, v) = preview(
        &s,
        &key,
        "fixed",
        cfg.clone(),
        created + 30 * DAY,
        json!({ "created_at": created }),
    )
    .await;
    assert_eq!(v["due"], true);
    let (_, v) = preview(
        &s,
        &key,
        "fixed",
        cfg.clone(),
        0,
        json!({ "created_at": created, "last_rotation": created + 5 }),
    )
    .await;
    assert_eq!(v["next_rotation"].as_i64(), Some(created + 5 + 30 * DAY));
    let (st, v) = preview(&s, &key, "fixed", json!({ "period": "soon" }), 0, json!({})).await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (502, Some("PluginFailed")),
        "{v}"
    );
    assert!(
        v["error"]["message"].as_str().unwrap().contains("period"),
        "{v}"
    );

    // usage-limit: N-1 encryptions not due, N due; default limit 2^32.
    let cfg = json!({ "max_encryptions": "10" });
    let (_, v) = preview(
        &s,
        &key,
        "usage",
        cfg.clone(),
        77,
        json!({ "encryptions_since_rotation": 9 }),
    )
    .await;
    assert_eq!(
        (v["next_rotation"].clone(), v["due"].as_bool()),
        (Value::Null, Some(false))
    );
    let (_, v) = preview(
        &s,
        &key,
        "usage",
        cfg.clone(),
        77,
        json!({ "encryptions_since_rotation": 10 }),
    )
    .await;
    assert_eq!(
        (v["next_rotation"].as_i64(), v["due"].as_bool()),
        (Some(77), Some(true))
    );
    let (_, v) = preview(
        &s,
        &key,
        "usage",
        json!({}),
        77,
        json!({ "encryptions_since_rotation": (1u64 << 32) - 1 }),
    )
    .await;
    assert_eq!(v["due"], false);
    let (_, v) = preview(
        &s,
        &key,
        "usage",
        json!({}),
        77,
        json!({ "encryptions_since_rotation": 1u64 << 32 }),
    )
    .await;
    assert_eq!(v["due"], true);

    // maintenance-window: due Friday 2026-11-27 00:00 UTC, window Saturdays 02:00-04:00.
    let thursday = 1_795_651_200; // 2026-11-26T00:00:00Z
    let saturday_2am = thursday + 2 * DAY + 2 * 3600;
    let cfg = json!({ "period": "1d", "days": "sat", "start_hour": "2", "end_hour": "4" });
    let (st, v) = preview(
        &s,
        &key,
        "window",
        cfg.clone(),
        thursday,
        json!({ "created_at": thursday }),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["next_rotation"].as_i64(), Some(saturday_2am));
    // Due inside the window: rotate at the due time itself.
    let (_, v) = preview(
        &s,
        &key,
        "window",
        cfg.clone(),
        0,
        json!({ "created_at": saturday_2am + 5400 - DAY }),
    )
    .await;
    assert_eq!(v["next_rotation"].as_i64(), Some(saturday_2am + 5400));
    // Due exactly at the window's end (exclusive): the next Saturday.
    let (_, v) = preview(
        &s,
        &key,
        "window",
        cfg.clone(),
        0,
        json!({ "created_at": saturday_2am + 7200 - DAY }),
    )
    .await;
    assert_eq!(v["next_rotation"].as_i64(), Some(saturday_2am + 7 * DAY));

    // The key's own schedule is used when no plugin is named; delete is refused while attached.
    let v = s
        .ok(
            &s.admin,
            "set-rotation-schedule",
            json!({ "key_id": key, "plugin": "usage", "config": { "max_encryptions": "1" } }),
        )
        .await;
    assert_eq!(v["plugin"], "usage");
    let v = s
        .ok(
            &s.admin,
            "preview-rotation",
            json!({ "key_id": key, "key_info": { "encryptions_since_rotation": 1 } }),
        )
        .await;
    assert_eq!(v["due"], true);
    let (st, v) = s
        .call(Some(&s.admin), "delete-plugin", json!({ "name": "usage" }))
        .await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (409, Some("InvalidState")),
        "{v}"
    );
    let (st, _) = s
        .call(Some(&s.admin), "delete-plugin", json!({ "name": "window" }))
        .await;
    assert_eq!(st, 200);
    let list = s.ok(&s.admin, "list-plugins", json!({})).await;
    let names: Vec<&str> = list["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["fixed", "usage"]);
    let d = s
        .ok(&s.admin, "describe-plugin", json!({ "name": "fixed" }))
        .await;
    assert_eq!(
        d["size"].as_u64(),
        Some(wasm("rotation-fixed-interval").len() as u64)
    );

    // Restart: the precompiled artifact is reused and decisions still come.
    s.stop();
    let s = Server::start(dir.path()).await;
    let (st, v) = preview(
        &s,
        &key,
        "fixed",
        json!({ "period": "1d" }),
        0,
        json!({ "created_at": 10 }),
    )
    .await;
    assert_eq!(
        (st, v["next_rotation"].as_i64()),
        (200, Some(10 + DAY)),
        "{v}"
    );
    let cached = std::fs::read_dir(dir.path().join("plugins/cache"))
        .unwrap()
        .count();
    // Those of `fixed` and `usage`; `window`'s went with its component (dropped at start).
    assert_eq!(cached, 2, "precompiled artifacts are cached");
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_plugins_fail_typed_within_deadline_and_hurt_nobody_else() {
    let dir = tempfile::tempdir().unwrap();
    let s = std::sync::Arc::new(Server::start(dir.path()).await);
    let (_, other_admin) = s.tenant_with_admin("bystander").await;
    let other_key = s.create_key(&other_admin, "envelope").await;
    let key = s.create_key(&s.admin, "envelope").await;
    let cases = [
        ("spin", "hostile-spin", 504, "PluginTimeout", ""),
        ("hog", "hostile-memory-hog", 502, "PluginFailed", "memory"),
        (
            "recurse",
            "hostile-deep-recursion",
            502,
            "PluginFailed",
            "trapped",
        ),
        ("panic", "hostile-panic", 502, "PluginFailed", "trapped"),
        (
            "huge",
            "hostile-huge-output",
            502,
            "PluginFailed",
            "output limit",
        ),
    ];
    for (name, file, ..) in &cases {
        let (st, v) = upload(&s, &s.admin, name, "rotation-schedule", file).await;
        assert_eq!(st, 200, "{name}: {v}");
    }
    let pid = s.pid();
    let rss_before = rss_kib(pid);
    for (name, _, status, code, needle) in &cases {
        // While the hostile plugin runs, another tenant keeps encrypting.
        let bystander = {
            let s = s.clone();
            let (token, key) = (other_admin.clone(), other_key.clone());
            tokio::spawn(async move {
                let mut n = 0;
                let until = Instant::now() + Duration::from_millis(600);
                while Instant::now() < until {
                    let ct = s.encrypt(&token, &key, b"still here", json!({})).await;
                    assert!(!ct.is_empty());
                    n += 1;
                }
                n
            })
        };
        let started = Instant::now();
        let (st, v) = preview(&s, &key, name, json!({}), 0, json!({})).await;
        let took = started.elapsed();
        assert_eq!(
            (st, v["error"]["code"].as_str()),
            (*status, Some(*code)),
            "{name}: {v}"
        );
        assert!(
            v["error"]["message"].as_str().unwrap().contains(needle),
            "{name}: {v}"
        );
        assert!(took < Duration::from_secs(5), "{name} took {took:?}");
        let encrypts = bystander.await.expect("bystander encrypts all succeeded");
        assert!(encrypts >= 3, "{name}: only {encrypts} bystander encrypts");
    }
    // Several rounds at once: memory stays bounded (instances are capped and torn down).
    let mut tasks = Vec::new();
    for i in 0..8 {
        let s = s.clone();
        let key = key.clone();
        let name = ["hog", "huge", "spin", "recurse"][i % 4];
        tasks.push(tokio::spawn(async move {
            preview(&s, &key, name, json!({}), 0, json!({})).await.0
        }));
    }
    for t in tasks {
        assert!(matches!(t.await.unwrap(), 502 | 504));
    }
    let rss_after = rss_kib(pid);
    assert!(
        rss_after < rss_before + 512 * 1024,
        "host RSS grew from {rss_before} KiB to {rss_after} KiB"
    );
    // Every failure was audited with its typed outcome.
    let pool = s.sql().await;
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit_log WHERE action = 'PreviewRotation' AND outcome IN ('PluginFailed', 'PluginTimeout')")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(n >= 13, "{n}");
}

/// A tenant whose plugins burn their fuel spends its budget of plugin CPU and is then
/// refused (429 with `Retry-After`, audited) until it refills, while another tenant's plugin
/// calls and encryptions go on.
#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_past_its_plugin_budget_is_throttled_and_others_are_not() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_with_env(
        dir.path(),
        &[
            ("RUST_LOG", "warn"),
            // A spinning call uses its whole 200M fuel: the budget holds two of them.
            ("KEYPLANE_PLUGINS__TENANT_FUEL_PER_SECOND", "50000000"),
            ("KEYPLANE_PLUGINS__TENANT_FUEL_BURST", "400000000"),
            ("KEYPLANE_QUOTAS__AUDIT_WINDOW_SECONDS", "1"),
        ],
    )
    .await;
    let (_, other_admin) = s.tenant_with_admin("bystander").await;
    let other_key = s.create_key(&other_admin, "envelope").await;
    let key = s.create_key(&s.admin, "envelope").await;
    let (st, v) = upload(&s, &s.admin, "spin", "rotation-schedule", "hostile-spin").await;
    assert_eq!(st, 200, "{v}");
    let (st, v) = upload(
        &s,
        &other_admin,
        "fixed",
        "rotation-schedule",
        "rotation-fixed-interval",
    )
    .await;
    assert_eq!(st, 200, "{v}");

    let mut answers = Vec::new();
    for _ in 0..6 {
        let (st, v) = preview(&s, &key, "spin", json!({}), 0, json!({})).await;
        answers.push((st, v["error"]["code"].as_str().unwrap_or("").to_string()));
        if st == 429 {
            assert!(
                v["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("plugin budget"),
                "{v}"
            );
            break;
        }
    }
    let spent = answers.iter().filter(|(st, _)| *st == 504).count();
    assert!(
        (2..=4).contains(&spent) && answers.last().unwrap().0 == 429,
        "the budget's calls ran, then the tenant was refused: {answers:?}"
    );
    let retry_after = s
        .client
        .post(format!("{}/v1/preview-rotation", s.base))
        .bearer_auth(&s.admin)
        .json(&json!({ "key_id": key, "plugin": "spin", "config": {}, "now": 0, "key_info": {} }))
        .send()
        .await
        .unwrap();
    assert_eq!(retry_after.status(), 429);
    let wait: u64 = retry_after.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=5).contains(&wait), "{wait}");

    // The other tenant's plugin and keys are untouched.
    let (st, v) = s
        .call(
            Some(&other_admin),
            "preview-rotation",
            json!({ "key_id": other_key, "plugin": "fixed", "config": { "period": "1d" }, "now": 0, "key_info": { "created_at": 0 } }),
        )
        .await;
    assert_eq!((st, v["next_rotation"].as_i64()), (200, Some(DAY)), "{v}");
    assert!(!s
        .encrypt(&other_admin, &other_key, b"still here", json!({}))
        .await
        .is_empty());
    // Refused calls are counted in the principal's aggregated record, as a quota's are.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let records = s.audit_records();
    assert!(!records
        .iter()
        .any(|r| r["action"] == "PreviewRotation" && r["outcome"] == "Throttled"));
    let counted: u64 = records
        .iter()
        .filter(|r| r["action"] == "Throttled")
        .map(|r| {
            let resource = r["resource"].as_str().unwrap();
            let n = resource.strip_prefix("quota:").unwrap().split(' ').next();
            n.unwrap().parse::<u64>().unwrap()
        })
        .sum();
    assert_eq!(counted, 2, "{records:#?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn uploads_are_refused_with_reasons() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_with_env(
        dir.path(),
        &[
            ("RUST_LOG", "warn"),
            ("KEYPLANE_PLUGINS__MAX_UPLOAD_BYTES", "300000"),
        ],
    )
    .await;
    let t = s.admin.clone();
    let send = |name: &str, world: &str, bytes: Vec<u8>| {
        let body = json!({ "name": name, "world": world, "component": b64(&bytes) });
        let s = &s;
        let t = t.clone();
        async move { s.call(Some(&t), "upload-plugin", body).await }
    };
    // Not a component at all, and a core module.
    let (st, v) = send("junk", "rotation-schedule", b"definitely not wasm".to_vec()).await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (400, Some("InvalidPlugin")),
        "{v}"
    );
    let core_module = b"\0asm\x01\0\0\0".to_vec();
    let (st, v) = send("core", "rotation-schedule", core_module).await;
    assert_eq!(st, 400, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("component"),
        "{v}"
    );
    // A truncated component.
    let mut cut = wasm("rotation-fixed-interval");
    cut.truncate(cut.len() / 2);
    let (st, _) = send("cut", "rotation-schedule", cut).await;
    assert_eq!(st, 400);
    // Wrong world both ways.
    let (st, v) = send("wrong1", "storage-backend", wasm("rotation-fixed-interval")).await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (400, Some("InvalidPlugin")),
        "{v}"
    );
    let (st, v) = send("wrong2", "rotation-schedule", wasm("storage-kv")).await;
    assert_eq!(st, 400, "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("kv"),
        "{v}"
    );
    // Ungranted import: a rotation schedule importing the kv capability.
    let (st, v) = send("sneaky", "rotation-schedule", wasm("hostile-sneaky-import")).await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (400, Some("InvalidPlugin")),
        "{v}"
    );
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("keyplane:plugin/kv"),
        "{v}"
    );
    // Over the size limit.
    let mut big = wasm("rotation-fixed-interval");
    big.resize(300_001, 0);
    let (st, v) = send("big", "rotation-schedule", big).await;
    assert_eq!(st, 400, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("larger than"),
        "{v}"
    );
    // Refused after it compiled (it imports wasi:http, and no destination was granted): what it
    // compiled is dropped, and no precompiled artifact of it is left in the cache.
    let (st, v) = send("http", "storage-backend", wasm("storage-http-object")).await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (400, Some("InvalidPlugin")),
        "{v}"
    );
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("wasi:http"),
        "{v}"
    );
    assert_eq!(cached_artifacts(dir.path()), Vec::<PathBuf>::new());
    // Unauthorized principal: a member may not upload; another tenant cannot see ours.
    let m = s
        .ok(&t, "create-principal", json!({ "name": "member" }))
        .await;
    let (st, _) = s
        .call(Some(m["token"].as_str().unwrap()), "upload-plugin", json!({ "name": "m", "world": "rotation-schedule", "component": b64(&wasm("rotation-fixed-interval")) }))
        .await;
    assert_eq!(st, 403);
    // Nothing refused was stored; the refusals were audited with their hashes.
    let list = s.ok(&t, "list-plugins", json!({})).await;
    assert_eq!(list["plugins"].as_array().unwrap().len(), 0);
    let pool = s.sql().await;
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit_log WHERE action = 'UploadPlugin' AND outcome = 'InvalidPlugin' AND resource LIKE '%sha256:%'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(n >= 8, "{n}");
    // A valid upload still works, and the name is then taken.
    let (st, _) = send("ok", "rotation-schedule", wasm("rotation-fixed-interval")).await;
    assert_eq!(st, 200);
    let (st, _) = send("ok", "rotation-schedule", wasm("rotation-fixed-interval")).await;
    assert_eq!(st, 409);
}

#[cfg(all(feature = "test-hooks", debug_assertions))]
async fn kv_rows(s: &Server, tenant: &str) -> Vec<(String, Vec<u8>)> {
    let pool = s.sql().await;
    sqlx::query_as("SELECT key, value FROM plugin_kv WHERE tenant_id = ? ORDER BY key")
        .bind(tenant)
        .fetch_all(&pool)
        .await
        .unwrap()
}

#[cfg(all(feature = "test-hooks", debug_assertions))]
#[tokio::test(flavor = "multi_thread")]
async fn storage_backends_hold_only_wrapped_blobs_and_stay_in_their_tenant() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start(dir.path()).await;
    let (_, victim) = s.tenant_with_admin("victim").await;
    let (_, mallory) = s.tenant_with_admin("mallory").await;

    // The victim keeps its blobs in the kv backend.
    let (st, v) = upload(&s, &victim, "kv", "storage-backend", "storage-kv").await;
    assert_eq!(st, 200, "{v}");
    let (st, v) = s
        .call(
            Some(&victim),
            "set-storage-backend",
            json!({ "plugin": "kv" }),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    // A rotation plugin cannot be a storage backend.
    upload(
        &s,
        &victim,
        "fixed",
        "rotation-schedule",
        "rotation-fixed-interval",
    )
    .await;
    let (st, _) = s
        .call(
            Some(&victim),
            "set-storage-backend",
            json!({ "plugin": "fixed" }),
        )
        .await;
    assert_eq!(st, 400);
    let key = s.create_key(&victim, "envelope").await;
    let ctx = json!({ "app": "ledger" });
    let ct = s.encrypt(&victim, &key, b"victim data", ctx.clone()).await;
    let (st, v) = s.decrypt(&victim, &ct, ctx.clone()).await;
    assert_eq!(st, 200, "{v}");

    let pool = s.sql().await;
    let (inline, store): (Option<Vec<u8>>, Option<String>) =
        sqlx::query_as("SELECT wrapped_material, blob_store FROM key_versions WHERE key_id = ?")
            .bind(&key)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!((inline, store.as_deref()), (None, Some("kv")));
    let victim_rows = kv_rows(&s, "victim").await;
    assert_eq!(victim_rows.len(), 1);
    // The host namespaces blob names by tenant.
    assert_attempt_name(&victim_rows[0].0, &format!("tenants/victim/keys/{key}/1"));

    // The blob is wrapped: the key material is nowhere in it (nor anywhere on disk).
    let material = s.envelope_material(&key).await;
    assert!(!victim_rows[0]
        .1
        .windows(32)
        .any(|w| w == material.as_slice()));

    // Mallory's backend tries every crafted name it can think of.
    let (st, v) = upload(
        &s,
        &mallory,
        "evil",
        "storage-backend",
        "hostile-cross-tenant",
    )
    .await;
    assert_eq!(st, 200, "{v}");
    s.ok(&mallory, "set-storage-backend", json!({ "plugin": "evil" }))
        .await;
    let k1 = s.create_key(&mallory, "envelope").await;
    let k2 = s.create_key(&mallory, "envelope").await;
    // k1's blob comes back as whatever the plugin found under its crafted names (k2's
    // blob): it does not authenticate, so the request fails as a plugin failure.
    let (st, v) = s
        .call(
            Some(&mallory),
            "encrypt",
            json!({ "key_id": k1, "plaintext": b64(b"x") }),
        )
        .await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (502, Some("PluginFailed")),
        "{v}"
    );
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("does not authenticate"),
        "{v}"
    );
    let _ = s
        .call(
            Some(&mallory),
            "encrypt",
            json!({ "key_id": k2, "plaintext": b64(b"x") }),
        )
        .await;
    // The victim's rows are untouched and none of them leaked into Mallory's.
    assert_eq!(kv_rows(&s, "victim").await, victim_rows);
    let mallory_rows = kv_rows(&s, "mallory").await;
    assert!(!mallory_rows.is_empty());
    for (name, value) in &mallory_rows {
        assert!(
            name.starts_with("tenants/mallory/") || !name.contains("victim/keys"),
            "{name}"
        );
        assert_ne!(
            value, &victim_rows[0].1,
            "victim's blob reached mallory under {name}"
        );
    }

    // After a restart (cold cache) the victim's key is read back through the plugin.
    s.stop();
    let s = Server::start(dir.path()).await;
    let (st, v) = s.decrypt(&victim, &ct, ctx).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(common::unb64(&v["plaintext"]), b"victim data");
    // A storage backend holding blobs cannot be deleted.
    let (st, v) = s
        .call(Some(&victim), "delete-plugin", json!({ "name": "kv" }))
        .await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (409, Some("InvalidState")),
        "{v}"
    );
    // Scan the whole data dir for the material.
    common::assert_absent_under(dir.path(), "key material", &material);
}

#[cfg(all(feature = "test-hooks", debug_assertions))]
#[tokio::test(flavor = "multi_thread")]
async fn fs_backend_needs_the_filesystem_grant_and_keeps_only_wrapped_blobs() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start(dir.path()).await;
    let (_, t) = s.tenant_with_admin("files").await;
    // Without the grant the plugin has no directory: it cannot be the tenant's backend (the
    // blob read first with its configuration fails), and key creation is not affected.
    let (st, v) = upload(&s, &t, "nofs", "storage-backend", "storage-fs").await;
    assert_eq!(st, 200, "{v}");
    let answer = s
        .call(Some(&t), "set-storage-backend", json!({ "plugin": "nofs" }))
        .await;
    common::assert_error(&answer, 400, "ValidationError", "Capabilities insufficient");
    let v = s.ok(&t, "create-key", json!({})).await;
    assert_eq!(v["protection"], "envelope", "{v}");
    // Capabilities are for storage backends only, and only known ones.
    let (st, _) = s
        .call(Some(&t), "upload-plugin", json!({ "name": "x", "world": "rotation-schedule", "capabilities": ["filesystem"], "component": b64(&wasm("rotation-fixed-interval")) }))
        .await;
    assert_eq!(st, 400);
    let (st, _) = s
        .call(Some(&t), "upload-plugin", json!({ "name": "y", "world": "storage-backend", "capabilities": ["network"], "component": b64(&wasm("storage-fs")) }))
        .await;
    assert_eq!(st, 400);
    // With the grant.
    let (st, v) = s
        .call(Some(&t), "upload-plugin", json!({ "name": "fs", "world": "storage-backend", "capabilities": ["filesystem"], "component": b64(&wasm("storage-fs")) }))
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["capabilities"], json!(["filesystem"]));
    s.ok(&t, "set-storage-backend", json!({ "plugin": "fs" }))
        .await;
    let key = s.create_key(&t, "envelope").await;
    let ct = s.encrypt(&t, &key, b"on disk, wrapped", json!({})).await;
    let fs_dir = dir.path().join("plugins/fs/files/fs");
    let files: Vec<PathBuf> = std::fs::read_dir(&fs_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let file_name = files[0].file_name().unwrap().to_str().unwrap();
    let name: Vec<u8> = (0..file_name.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&file_name[i..i + 2], 16).unwrap())
        .collect();
    assert_attempt_name(
        std::str::from_utf8(&name).unwrap(),
        &format!("tenants/files/keys/{key}/1"),
    );
    let material = s.envelope_material(&key).await;
    let on_disk = std::fs::read(&files[0]).unwrap();
    assert!(on_disk.len() > 40);
    assert!(
        !on_disk.windows(32).any(|w| w == material.as_slice()),
        "material on disk"
    );
    s.stop();
    let mut s = Server::start(dir.path()).await;
    let (st, v) = s.decrypt(&t, &ct, json!({})).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(common::unb64(&v["plaintext"]), b"on disk, wrapped");
    // The operator withdraws the grant (`plugins.allow_filesystem`): the plugin loses its
    // directory at the next call, saying why, and gets it back with the grant; its blobs
    // stay meanwhile. Before, the switch was read only at upload.
    s.stop();
    let mut s = Server::start_with_env(
        dir.path(),
        &[
            ("RUST_LOG", "warn"),
            ("KEYPLANE_PLUGINS__ALLOW_FILESYSTEM", "false"),
        ],
    )
    .await;
    let refused = s.decrypt(&t, &ct, json!({})).await;
    common::assert_error(&refused, 502, "PluginFailed", "allow_filesystem");
    s.stop();
    let s = Server::start(dir.path()).await;
    let (st, v) = s.decrypt(&t, &ct, json!({})).await;
    assert_eq!(st, 200, "{v}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_python_rotation_plugin_built_with_componentize_py() {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../plugins/target/weekday-rotation.wasm");
    let component = std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; run scripts/build-plugins", path.display()));
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_with_env(
        dir.path(),
        &[
            ("RUST_LOG", "warn"),
            ("KEYPLANE_PLUGINS__MAX_UPLOAD_BYTES", "33554432"),
        ],
    )
    .await;
    let (st, v) = s
        .call(Some(&s.admin), "upload-plugin", json!({ "name": "weekday", "world": "rotation-schedule", "component": b64(&component) }))
        .await;
    assert_eq!(st, 200, "{v}");
    let key = s.create_key(&s.admin, "envelope").await;
    let thursday = 1_795_651_200; // 2026-11-26T00:00:00Z
                                  // Due Saturday 2026-12-26 00:00 (30 days on): moved to Monday 09:00.
    let (st, v) = preview(
        &s,
        &key,
        "weekday",
        json!({}),
        thursday,
        json!({ "created_at": thursday }),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        v["next_rotation"].as_i64(),
        Some(thursday + 30 * DAY + 2 * DAY + 9 * 3600)
    );
    // Due Tuesday 2026-11-24 10:00, after 09:00: Wednesday at 09:00.
    let (_, v) = preview(
        &s,
        &key,
        "weekday",
        json!({ "period_days": "1", "hour": "9" }),
        0,
        json!({ "created_at": thursday - 2 * DAY + 10 * 3600 - DAY }),
    )
    .await;
    assert_eq!(v["next_rotation"].as_i64(), Some(thursday - DAY + 9 * 3600));
    // A Python exception with a message is the plugin declining, typed as such.
    let (st, v) = preview(
        &s,
        &key,
        "weekday",
        json!({ "period_days": "soon" }),
        0,
        json!({}),
    )
    .await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (502, Some("PluginFailed")),
        "{v}"
    );
    assert!(
        v["error"]["message"].as_str().unwrap().contains("integers"),
        "{v}"
    );
}

/// A `moto_server` (PyPI `moto[server]`) on loopback, provisioned with an IAM user, its access
/// key and a bucket. With `check_signatures`, it checks SigV4 signatures (the first few
/// requests, the provisioning, are unauthenticated). moto 5.2 computes the signature of a
/// query whose values hold `/` from the decoded URL, so it refuses a listing by a key prefix
/// (`tenants/…`) however correctly signed (boto3's own too, checked by hand): tests of
/// listings run without the check.
#[cfg(all(feature = "test-hooks", debug_assertions))]
struct Moto {
    child: std::process::Child,
    port: u16,
    access_key: String,
    secret_key: String,
}

#[cfg(all(feature = "test-hooks", debug_assertions))]
#[cfg(all(feature = "test-hooks", debug_assertions))]
impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(all(feature = "test-hooks", debug_assertions))]
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[cfg(all(feature = "test-hooks", debug_assertions))]
async fn start_moto(bucket: &str, check_signatures: bool) -> Moto {
    let port = free_port();
    let mut command = std::process::Command::new("moto_server");
    if check_signatures {
        command.env("INITIAL_NO_AUTH_ACTION_COUNT", "4");
    }
    let child = command
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("moto_server (pip install 'moto[server]'; scripts/setup does)");
    let mut moto = Moto {
        child,
        port,
        access_key: String::new(),
        secret_key: String::new(),
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "moto_server did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let script = r#"
import boto3, json, sys
url, bucket = sys.argv[1], sys.argv[2]
kw = dict(endpoint_url=url, aws_access_key_id="bootstrap", aws_secret_access_key="bootstrap", region_name="us-east-1")
iam = boto3.client("iam", **kw)
iam.create_user(UserName="keyplane")
iam.put_user_policy(UserName="keyplane", PolicyName="s3", PolicyDocument=json.dumps(
    {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
k = iam.create_access_key(UserName="keyplane")["AccessKey"]
s3 = boto3.client("s3", endpoint_url=url, aws_access_key_id=k["AccessKeyId"], aws_secret_access_key=k["SecretAccessKey"], region_name="us-east-1")
s3.create_bucket(Bucket=bucket)
print(k["AccessKeyId"], k["SecretAccessKey"])
"#;
    let out = std::process::Command::new("python3")
        .args(["-c", script, &format!("http://127.0.0.1:{port}"), bucket])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let mut parts = text.split_whitespace();
    moto.access_key = parts.next().unwrap().to_string();
    moto.secret_key = parts.next().unwrap().to_string();
    moto
}

/// Run `code` in Python with `s3`, a boto3 client signed with the test user's key, and
/// `bucket` defined (the store as any S3 client sees it); its standard output.
#[cfg(all(feature = "test-hooks", debug_assertions))]
fn with_boto3(moto: &Moto, bucket: &str, code: &str) -> String {
    let script = format!(
        r#"
import boto3, sys, base64
url, bucket, ak, sk = sys.argv[1:5]
s3 = boto3.client("s3", endpoint_url=url, aws_access_key_id=ak, aws_secret_access_key=sk, region_name="us-east-1")
{code}
"#
    );
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            &script,
            &format!("http://127.0.0.1:{}", moto.port),
            bucket,
            &moto.access_key,
            &moto.secret_key,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Object keys and bodies in `bucket`, read with boto3.
#[cfg(all(feature = "test-hooks", debug_assertions))]
fn s3_objects(moto: &Moto, bucket: &str) -> Vec<(String, Vec<u8>, String)> {
    let code = r#"
for o in s3.list_objects_v2(Bucket=bucket).get("Contents", []):
    r = s3.get_object(Bucket=bucket, Key=o["Key"])
    print(o["Key"], base64.b64encode(r["Body"].read()).decode(), r["Metadata"].get("kp-version", "-"))
"#;
    with_boto3(moto, bucket, code)
        .lines()
        .map(|l| {
            let mut p = l.split(' ');
            let key = p.next().unwrap().to_string();
            let body = common::unb64(&Value::String(p.next().unwrap().into()));
            (key, body, p.next().unwrap().to_string())
        })
        .collect()
}

/// Every object version and delete marker in `bucket` (`<key> <version id>`).
#[cfg(all(feature = "test-hooks", debug_assertions))]
fn s3_versions(moto: &Moto, bucket: &str) -> Vec<String> {
    let code = r#"
r = s3.list_object_versions(Bucket=bucket)
for v in r.get("Versions", []) + r.get("DeleteMarkers", []):
    print(v["Key"], v["VersionId"])
"#;
    with_boto3(moto, bucket, code)
        .lines()
        .map(str::to_string)
        .collect()
}

#[cfg(all(feature = "test-hooks", debug_assertions))]
#[tokio::test(flavor = "multi_thread")]
async fn http_object_backend_on_s3_with_sigv4_and_a_host_allowlist() {
    let moto = start_moto("kp-blobs", true).await;
    let moto_dest = format!("127.0.0.1:{}", moto.port);
    // A server that accepts connections and never answers: the deadline must still hold.
    let stall = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let stall_dest = stall.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((c, _)) = stall.accept().await {
            held.push(c);
        }
    });
    let operator_hosts = format!("[\"{moto_dest}\", \"{stall_dest}\"]");
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("RUST_LOG", "warn"),
        ("KEYPLANE_PLUGINS__HTTP_HOSTS", operator_hosts.as_str()),
    ];
    let mut s = Server::start_with_env(dir.path(), &env).await;
    let (_, t) = s.tenant_with_admin("objects").await;
    let component = b64(&wasm("storage-http-object"));
    let up = |name: &str, caps: Value| json!({ "name": name, "world": "storage-backend", "capabilities": caps, "component": component });

    // Refusals: wasi:http imported without a grant; a destination the operator did not list;
    // a malformed destination.
    let answer = s
        .call(Some(&t), "upload-plugin", up("nohttp", json!([])))
        .await;
    common::assert_error(&answer, 400, "InvalidPlugin", "wasi:http");
    let answer = s
        .call(
            Some(&t),
            "upload-plugin",
            up("elsewhere", json!(["http:169.254.169.254:80"])),
        )
        .await;
    common::assert_error(&answer, 400, "InvalidPlugin", "169.254.169.254:80");
    let (st, _) = s
        .call(
            Some(&t),
            "upload-plugin",
            up("bad", json!(["http:no-port"])),
        )
        .await;
    assert_eq!(st, 400);

    let v = s
        .ok(
            &t,
            "upload-plugin",
            up("s3", json!([format!("http:{moto_dest}")])),
        )
        .await;
    assert!(
        v["imports"].as_array().unwrap().iter().any(|i| i
            .as_str()
            .unwrap()
            .starts_with("wasi:http/outgoing-handler")),
        "{v}"
    );
    let endpoint = format!("http://{moto_dest}");
    let config = |secret: &str| {
        json!({ "endpoint": endpoint, "bucket": "kp-blobs", "prefix": "keyplane/",
                "access-key-id": moto.access_key, "secret-access-key": secret })
    };

    // A wrong secret: moto refuses the signature of the blob the new configuration must
    // store first, and the configuration is refused, with the plugin's reason. Before, it was
    // accepted and every key creation then failed as a server error. A configuration the
    // plugin itself refuses, likewise.
    let answer = s
        .call(
            Some(&t),
            "set-storage-backend",
            json!({ "plugin": "s3", "config": config("wrong") }),
        )
        .await;
    common::assert_error(&answer, 400, "ValidationError", "HTTP 403");
    let answer = s
        .call(
            Some(&t),
            "set-storage-backend",
            json!({ "plugin": "s3", "config": { "endpoint": "ftp://x", "bucket": "b" } }),
        )
        .await;
    common::assert_error(&answer, 400, "ValidationError", "http:// or https://");
    // Credentials in the endpoint would be sent as its `host` header: refused.
    let answer = s
        .call(
            Some(&t),
            "set-storage-backend",
            json!({ "plugin": "s3", "config": {
                "endpoint": format!("http://{}:pw@{moto_dest}", moto.access_key), "bucket": "kp-blobs" } }),
        )
        .await;
    common::assert_error(
        &answer,
        400,
        "ValidationError",
        "must not carry user information",
    );
    let v = s.ok(&t, "create-key", json!({})).await;
    assert_eq!(v["protection"], "envelope", "{v}");
    assert!(s3_objects(&moto, "kp-blobs").is_empty());

    // The right secret: the blob lands in the bucket, wrapped, under the tenant's namespace.
    let v = s
        .ok(
            &t,
            "set-storage-backend",
            json!({ "plugin": "s3", "config": config(&moto.secret_key) }),
        )
        .await;
    assert_eq!(v["config"]["secret-access-key"], "<sealed>", "{v}");
    assert_eq!(v["config"]["bucket"], "kp-blobs");
    let key = s.create_key(&t, "envelope").await;
    let ct = s.encrypt(&t, &key, b"kept in a bucket", json!({})).await;
    let objects = s3_objects(&moto, "kp-blobs");
    assert_eq!(objects.len(), 1, "{objects:?}");
    assert_attempt_name(
        &objects[0].0,
        &format!("keyplane/tenants/objects/keys/{key}/1"),
    );
    assert_eq!(
        objects[0].2, "1",
        "compare-and-swap version in the object metadata"
    );
    let material = s.envelope_material(&key).await;
    assert!(objects[0].1.len() > 40);
    assert!(
        !objects[0].1.windows(32).any(|w| w == material.as_slice()),
        "key material in the bucket"
    );

    // Reaching a destination the plugin was not granted (same port, other host name) is
    // refused by the host before any connection.
    let (_, t2) = s.tenant_with_admin("sneaky").await;
    for (name, dest) in [("stall", &stall_dest), ("s3", &moto_dest)] {
        s.ok(
            &t2,
            "upload-plugin",
            up(name, json!([format!("http:{dest}")])),
        )
        .await;
    }
    let answer = s
        .call(
            Some(&t2),
            "set-storage-backend",
            json!({ "plugin": "s3", "config": {
            "endpoint": format!("http://localhost:{}", moto.port), "bucket": "kp-blobs",
            "access-key-id": moto.access_key, "secret-access-key": moto.secret_key } }),
        )
        .await;
    common::assert_error(&answer, 400, "ValidationError", "not granted");
    let answer = s
        .call(
            Some(&t2),
            "set-storage-backend",
            json!({ "plugin": "s3", "config": {
            "endpoint": format!("http://{stall_dest}"), "bucket": "kp-blobs" } }),
        )
        .await;
    common::assert_error(&answer, 400, "ValidationError", "not granted");

    // A server that never answers: the call ends at the plugin deadline with a timeout, and
    // the other tenant keeps working meanwhile (here the read of a blob the configuration is
    // tried with first).
    let started = Instant::now();
    let (stalled, other) = tokio::join!(
        s.call(
            Some(&t2),
            "set-storage-backend",
            json!({ "plugin": "stall", "config": {
            "endpoint": format!("http://{stall_dest}"), "bucket": "kp-blobs" } }),
        ),
        s.encrypt(&t, &key, b"meanwhile", json!({}))
    );
    common::assert_error(&stalled, 400, "ValidationError", "time or fuel limit");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(!other.is_empty());

    // After a restart (empty envelope cache) the blob is read back from the bucket. The S3
    // secret is nowhere in the data directory in plaintext (it is sealed by the HSM root key).
    s.stop();
    common::assert_absent_under(dir.path(), "S3 secret", moto.secret_key.as_bytes());
    let s = Server::start_with_env(dir.path(), &env).await;
    let (st, v) = s.decrypt(&t, &ct, json!({})).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(common::unb64(&v["plaintext"]), b"kept in a bucket");
    drop(moto);
}

/// A blob keeps working with the configuration of the backend it was written to after the
/// tenant moves new versions to another backend, also once the material cache is gone (a
/// restart) and when the key is shredded. A backend that holds blobs cannot be deleted, nor
/// pointed at another location; its secrets may change. Every configuration value but a short
/// list of plain ones is sealed (before, only names like `secret` were). Shredding deletes
/// every version of a blob in a bucket with versioning on.
#[cfg(all(feature = "test-hooks", debug_assertions))]
#[tokio::test(flavor = "multi_thread")]
async fn a_blob_keeps_the_backend_it_was_written_to() {
    let moto = start_moto("kp-old", false).await;
    let dest = format!("127.0.0.1:{}", moto.port);
    let hosts = format!("[\"{dest}\"]");
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("RUST_LOG", "warn"),
        ("KEYPLANE_PLUGINS__HTTP_HOSTS", hosts.as_str()),
        ("KEYPLANE_LIFECYCLE__SCHEDULER_INTERVAL_SECONDS", "0"),
    ];
    let mut s = Server::start_with_env(dir.path(), &env).await;
    let (_, t) = s.tenant_with_admin("mover").await;
    s.ok(
        &t,
        "upload-plugin",
        json!({ "name": "s3", "world": "storage-backend", "capabilities": [format!("http:{dest}")],
                "component": b64(&wasm("storage-http-object")) }),
    )
    .await;
    let s3_config = |bucket: &str| {
        json!({ "endpoint": format!("http://{dest}"), "bucket": bucket, "access-key-id": moto.access_key,
                "secret-access-key": moto.secret_key })
    };
    s.ok(
        &t,
        "set-storage-backend",
        json!({ "plugin": "s3", "config": s3_config("kp-old") }),
    )
    .await;
    // The old bucket keeps object versions: shredding must delete each.
    let code =
        r#"s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})"#;
    with_boto3(&moto, "kp-old", code);
    let old_key = s.create_key(&t, "envelope").await;
    let old_ct = s
        .encrypt(&t, &old_key, b"in the old bucket", json!({}))
        .await;
    assert_eq!(s3_objects(&moto, "kp-old").len(), 1);

    // New versions go to the kv plugin from now on.
    s.kv_backend(&t).await;
    let new_key = s.create_key(&t, "envelope").await;
    let new_ct = s.encrypt(&t, &new_key, b"in the kv table", json!({})).await;

    // The old backend holds a blob: it is neither deleted nor moved elsewhere.
    common::assert_error(
        &s.call(Some(&t), "delete-plugin", json!({ "name": "s3" }))
            .await,
        409,
        "InvalidState",
        "holds the blobs of 1 key version",
    );
    common::assert_error(
        &s.call(
            Some(&t),
            "set-storage-backend",
            json!({ "plugin": "s3", "config": s3_config("kp-elsewhere") }),
        )
        .await,
        409,
        "InvalidState",
        "does not reach the blob",
    );
    // Secrets may change (rotated credentials); they are sealed, as is any value whose name
    // is not on the plain list.
    let v = s
        .ok(
            &t,
            "set-storage-backend",
            json!({ "plugin": "kv", "config": { "api_key": "ak-7Hq2-CLEARTEXT-SHOULD-NOT-BE-STORED" } }),
        )
        .await;
    assert_eq!(v["config"]["api_key"], "<sealed>", "{v}");

    // With the material cache empty, the old blob is read from the old bucket with the old
    // backend's configuration.
    s.stop();
    common::assert_absent_under(
        dir.path(),
        "a configuration secret",
        b"ak-7Hq2-CLEARTEXT-SHOULD-NOT-BE-STORED",
    );
    let s = Server::start_with_env(dir.path(), &env).await;
    for (ct, pt) in [
        (&old_ct, b"in the old bucket".as_slice()),
        (&new_ct, b"in the kv table".as_slice()),
    ] {
        let (st, v) = s.decrypt(&t, ct, json!({})).await;
        assert_eq!(st, 200, "{v}");
        assert_eq!(common::unb64(&v["plaintext"]), pt);
    }

    // Shredding reaches the old bucket too; then the old backend can go.
    let approver = s.second_admin("mover").await;
    let (st, v) = s
        .schedule_deletion(
            &t,
            &approver,
            json!({ "key_id": old_key, "pending_window_days": 7 }),
        )
        .await;
    assert_eq!(st, 200, "{v}");
    s.advance_clock(8 * 86_400).await;
    let pass = s.ok(&s.admin, "run-scheduler", json!({})).await;
    assert_eq!(pass["destroyed"], json!([old_key]), "{pass}");
    assert!(s3_objects(&moto, "kp-old").is_empty());
    // No earlier version of the blob, nor a delete marker (a plain DELETE left the version,
    // wrapped material of a destroyed key, in the bucket).
    assert_eq!(s3_versions(&moto, "kp-old"), Vec::<String>::new());
    s.ok(&t, "delete-plugin", json!({ "name": "s3" })).await;
    drop(moto);
}

/// `(sha256, bytes)` of every component row in the database of `s`.
async fn component_rows(s: &Server) -> Vec<(String, Vec<u8>)> {
    sqlx::query_as("SELECT sha256, bytes FROM plugin_components ORDER BY sha256")
        .fetch_all(&s.sql().await)
        .await
        .unwrap()
}

/// The files of a node's plugin cache.
fn cached_artifacts(data: &std::path::Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(data.join("plugins/cache"))
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    files.sort();
    files
}

/// A second node's data directory: a copy of `from`'s database and of what its HSM needs (the
/// token, holding the same root key, and its PIN), nothing of its plugin directory.
fn second_node_dir(from: &std::path::Path, to: &std::path::Path) {
    fn copy_tree(from: &std::path::Path, to: &std::path::Path) {
        std::fs::create_dir_all(to).unwrap();
        for e in std::fs::read_dir(from).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                copy_tree(&e.path(), &to.join(e.file_name()));
            } else {
                std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
            }
        }
    }
    for e in std::fs::read_dir(from).unwrap() {
        let name = e.unwrap().file_name().into_string().unwrap();
        if name.starts_with("keyplane.db") || name == "hsm.pin" || name == "admin.token" {
            std::fs::copy(from.join(&name), to.join(&name)).unwrap();
        }
    }
    copy_tree(&from.join("softhsm"), &to.join("softhsm"));
    assert!(!to.join("plugins").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn components_live_in_the_database_and_each_node_compiles_its_own_cache() {
    let (dir1, dir2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut s1 = Server::start(dir1.path()).await;
    s1.kv_backend(&s1.admin).await;
    let (st, v) = upload(
        &s1,
        &s1.admin,
        "fixed",
        "rotation-schedule",
        "rotation-fixed-interval",
    )
    .await;
    assert_eq!(st, 200, "{v}");
    let fixed_sha = v["sha256"].as_str().unwrap().to_string();
    let kv_sha = s1
        .ok(&s1.admin, "describe-plugin", json!({ "name": "kv" }))
        .await["sha256"]
        .as_str()
        .unwrap()
        .to_string();
    let key = s1.create_key(&s1.admin, "envelope").await;
    let ctx = json!({ "app": "nodes" });
    let ct = s1
        .encrypt(&s1.admin, &key, b"written on node 1", ctx.clone())
        .await;

    // The bytes are in the database, keyed by their SHA-256; the node keeps only artifacts.
    let mut expected = vec![
        (fixed_sha.clone(), wasm("rotation-fixed-interval")),
        (kv_sha.clone(), wasm("storage-kv")),
    ];
    expected.sort();
    assert_eq!(component_rows(&s1).await, expected);
    let plugin_dir = common::files_under(&dir1.path().join("plugins"));
    assert!(
        plugin_dir
            .iter()
            .all(|p| p.extension().is_some_and(|e| e == "cwasm")),
        "{plugin_dir:?}"
    );
    // An artifact is cached at a plugin's first call (an upload may still be refused after it
    // compiled): kv's so far, then fixed's.
    assert_eq!(cached_artifacts(dir1.path()).len(), 1);
    let (st, v) = preview(
        &s1,
        &key,
        "fixed",
        json!({ "period": "1d" }),
        0,
        json!({ "created_at": 10 }),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(cached_artifacts(dir1.path()).len(), 2);

    // Plugins with the same bytes share one row, deleted with the last of them.
    let (st, _) = upload(
        &s1,
        &s1.admin,
        "fixed-too",
        "rotation-schedule",
        "rotation-fixed-interval",
    )
    .await;
    assert_eq!(st, 200);
    let (st, v) = upload(
        &s1,
        &s1.admin,
        "window",
        "rotation-schedule",
        "rotation-maintenance-window",
    )
    .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(component_rows(&s1).await.len(), 3);
    for name in ["fixed-too", "window"] {
        s1.ok(&s1.admin, "delete-plugin", json!({ "name": name }))
            .await;
    }
    assert_eq!(component_rows(&s1).await, expected);
    // An upload refused after compiling (an HTTP client granted no destination) stores nothing.
    let (st, v) = upload(
        &s1,
        &s1.admin,
        "http",
        "storage-backend",
        "storage-http-object",
    )
    .await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (400, Some("InvalidPlugin"))
    );
    assert_eq!(component_rows(&s1).await, expected);
    s1.stop();

    // A second node on a copy of the database, with no plugin directory at all: it reads the
    // components from the database, compiles them and caches its own artifacts.
    second_node_dir(dir1.path(), dir2.path());
    let mut s2 = Server::start(dir2.path()).await;
    assert!(cached_artifacts(dir2.path()).is_empty());
    let (st, v) = s2.decrypt(&s2.admin, &ct, ctx.clone()).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(common::unb64(&v["plaintext"]), b"written on node 1");
    let (st, v) = preview(
        &s2,
        &key,
        "fixed",
        json!({ "period": "1d" }),
        0,
        json!({ "created_at": 10 }),
    )
    .await;
    assert_eq!(
        (st, v["next_rotation"].as_i64()),
        (200, Some(10 + DAY)),
        "{v}"
    );
    let cached = cached_artifacts(dir2.path());
    assert_eq!(cached.len(), 2, "{cached:?}");
    for sha in [&fixed_sha, &kv_sha] {
        assert!(
            cached.iter().any(|p| p
                .file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with(sha.as_str())),
            "{sha} {cached:?}"
        );
    }
    s2.stop();

    // A damaged cached artifact is compiled again from the database; a component whose bytes
    // were altered in the database is refused with a typed error, never compiled.
    let artifact = |sha: &str| {
        cached_artifacts(dir2.path())
            .into_iter()
            .find(|p| p.file_name().unwrap().to_str().unwrap().starts_with(sha))
            .unwrap()
    };
    let fixed_art = artifact(&fixed_sha);
    let whole = std::fs::read(&fixed_art).unwrap();
    std::fs::write(&fixed_art, &whole[..whole.len() / 2]).unwrap();
    std::fs::remove_file(artifact(&kv_sha)).unwrap();
    common::sqlite(
        &dir2.path().join("keyplane.db"),
        &format!(
            "UPDATE plugin_components SET bytes = CAST(bytes || X'00' AS BLOB) \
             WHERE sha256 = '{kv_sha}'"
        ),
    );
    let s2 = Server::start(dir2.path()).await;
    let (st, v) = preview(
        &s2,
        &key,
        "fixed",
        json!({ "period": "1d" }),
        0,
        json!({ "created_at": 10 }),
    )
    .await;
    assert_eq!(
        (st, v["next_rotation"].as_i64()),
        (200, Some(10 + DAY)),
        "{v}"
    );
    assert_eq!(std::fs::read(&fixed_art).unwrap().len(), whole.len());
    for _ in 0..2 {
        let answer = s2.decrypt(&s2.admin, &ct, ctx.clone()).await;
        common::assert_error(&answer, 500, "PluginComponentCorrupt", "SHA-256 mismatch");
    }
    assert!(!cached_artifacts(dir2.path()).iter().any(|p| p
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .starts_with(kv_sha.as_str())));
    s2.ok(&s2.admin, "get-caller-identity", json!({})).await;
    // Uploading the same component again (under another name) puts the stored bytes right,
    // and the plugin that could not load works again.
    let (st, v) = upload(&s2, &s2.admin, "kv-again", "storage-backend", "storage-kv").await;
    assert_eq!(st, 200, "{v}");
    let stored: Vec<u8> =
        sqlx::query_scalar("SELECT bytes FROM plugin_components WHERE sha256 = ?")
            .bind(&kv_sha)
            .fetch_one(&s2.sql().await)
            .await
            .unwrap();
    assert!(
        stored == wasm("storage-kv"),
        "the stored bytes were not put right"
    );
    let (st, v) = s2.decrypt(&s2.admin, &ct, ctx.clone()).await;
    assert_eq!(st, 200, "{v}");

    // Node 1 never saw any of it: its own cache and database still serve.
    let s1 = Server::start(dir1.path()).await;
    let (st, v) = s1.decrypt(&s1.admin, &ct, ctx).await;
    assert_eq!(st, 200, "{v}");
}

#[tokio::test(flavor = "multi_thread")]
async fn components_of_an_older_data_dir_are_imported_and_unreferenced_ones_collected() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start_quiet(dir.path()).await;
    let key = s.create_key(&s.admin, "envelope").await;
    let (st, v) = upload(
        &s,
        &s.admin,
        "fixed",
        "rotation-schedule",
        "rotation-fixed-interval",
    )
    .await;
    assert_eq!(st, 200, "{v}");
    let sha = v["sha256"].as_str().unwrap().to_string();
    s.stop();

    // The layout of an older release: the component beside the cache, not in the database
    // (and an artifact in the old format).
    let plugins = dir.path().join("plugins");
    let db = dir.path().join("keyplane.db");
    std::fs::write(
        plugins.join(format!("{sha}.wasm")),
        wasm("rotation-fixed-interval"),
    )
    .unwrap();
    common::sqlite(&db, "DELETE FROM plugin_components");
    for art in cached_artifacts(dir.path()) {
        std::fs::write(art, b"an artifact of an older release").unwrap();
    }
    // And a component nothing names.
    let orphan = "ab".repeat(32);
    common::sqlite(
        &db,
        &format!(
            "INSERT INTO plugin_components (sha256, bytes, size, created_at) \
             VALUES ('{orphan}', X'0061736d', 4, '2026-01-01T00:00:00Z')"
        ),
    );

    let mut s = Server::start_quiet(dir.path()).await;
    let (st, v) = preview(
        &s,
        &key,
        "fixed",
        json!({ "period": "1d" }),
        0,
        json!({ "created_at": 10 }),
    )
    .await;
    assert_eq!(
        (st, v["next_rotation"].as_i64()),
        (200, Some(10 + DAY)),
        "{v}"
    );
    let rows = component_rows(&s).await;
    assert_eq!(
        rows.iter().map(|r| r.0.as_str()).collect::<Vec<_>>(),
        [orphan.as_str(), sha.as_str()]
    );
    assert_eq!(rows[1].1, wasm("rotation-fixed-interval"));
    assert!(!plugins.join(format!("{sha}.wasm")).exists());
    s.stop();

    // Garbage collection removes the component no plugin names, and audits it.
    let out = s.tool(&[
        "gc",
        "--apply",
        "--grace-seconds",
        "0",
        "--all-nodes-stopped",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains(&format!("removed plugin component {orphan}")),
        "{text}"
    );
    let s = Server::start_quiet(dir.path()).await;
    let rows = component_rows(&s).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].0, sha);
    assert!(s
        .audit_records()
        .iter()
        .any(|r| r["resource"] == format!("plugin-component:{orphan}")));
}

/// A storage backend whose listing never ends (a new cursor every page, no names) costs one
/// garbage collection a bounded number of pages: the pass ends, reports that backend as
/// failed, and still collects the other tenants' backends.
#[tokio::test(flavor = "multi_thread")]
async fn an_endless_listing_is_cut_short_and_the_other_backends_are_collected() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_quiet(dir.path()).await;
    // Listed first (backends go in tenant order), so the others come after it.
    let (_, endless) = s.tenant_with_admin("endless").await;
    let (_, orderly) = s.tenant_with_admin("orderly").await;
    let (st, v) = upload(
        &s,
        &endless,
        "endless",
        "storage-backend",
        "hostile-endless-listing",
    )
    .await;
    assert_eq!(st, 200, "{v}");
    s.ok(
        &endless,
        "set-storage-backend",
        json!({ "plugin": "endless" }),
    )
    .await;
    s.kv_backend(&orderly).await;
    // A blob that no key version names, as a crash leaves one (a name without a time: old).
    // And one whose name (64 KiB) keyplane never writes: listed by the plugin, it is left
    // out, not removed and written into the audit log twice (a plugin could so fill it).
    common::sqlite(
        &dir.path().join("keyplane.db"),
        &format!(
            "INSERT INTO plugin_kv (tenant_id, key, value) VALUES \
             ('orderly', 'tenants/orderly/keys/k-orphan/1', X'0000000000000001ff'), \
             ('orderly', 'tenants/orderly/keys/{}', X'0000000000000001ff')",
            "A".repeat(64 << 10)
        ),
    );

    let pass = tokio::time::timeout(
        Duration::from_secs(50),
        s.call(Some(&s.admin), "run-scheduler", json!({})),
    )
    .await
    .expect("the scheduler pass ends despite the endless listing");
    assert_eq!(pass.0, 200, "{}", pass.1);
    let gc = &pass.1["collected"];
    assert_eq!(gc["failed"], json!(["endless/endless"]), "{gc}");
    assert_eq!(gc["blobs"], json!(["orderly/kv/keys/k-orphan/1"]), "{gc}");
    let left: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM plugin_kv WHERE tenant_id = 'orderly'")
            .fetch_one(&s.sql().await)
            .await
            .unwrap();
    assert_eq!(left, 1, "the long name is left alone");
    assert!(s
        .audit_records()
        .iter()
        .all(|r| r["resource"].as_str().unwrap_or("").len() < 4096));
}

/// A backend that pages its listing with opaque tokens (as object stores do), not names, is
/// listed to its end: the host hands each cursor back as the plugin gave it. Before, a cursor
/// that was not a name under the tenant's prefix ended the listing after its first page,
/// silently, and what was listed after it was never collected.
#[tokio::test(flavor = "multi_thread")]
async fn a_listing_paged_by_opaque_tokens_is_collected_to_its_end() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_quiet(dir.path()).await;
    let (_, t) = s.tenant_with_admin("paged").await;
    let (st, v) = upload(&s, &t, "paged", "storage-backend", "testing-opaque-cursor").await;
    assert_eq!(st, 200, "{v}");
    s.ok(&t, "set-storage-backend", json!({ "plugin": "paged" }))
        .await;
    // Blobs that no key version names, as crashes leave them (names without a time: old).
    common::sqlite(
        &dir.path().join("keyplane.db"),
        "INSERT INTO plugin_kv (tenant_id, key, value) VALUES \
         ('paged', 'tenants/paged/keys/k-orphan/1', X'01'), \
         ('paged', 'tenants/paged/keys/k-orphan/2', X'02'), \
         ('paged', 'tenants/paged/keys/k-orphan/3', X'03')",
    );

    let (status, pass) = s.call(Some(&s.admin), "run-scheduler", json!({})).await;
    assert_eq!(status, 200, "{pass}");
    let gc = &pass["collected"];
    assert_eq!(gc["failed"], json!([]), "{gc}");
    assert_eq!(
        gc["blobs"],
        json!([
            "paged/paged/keys/k-orphan/1",
            "paged/paged/keys/k-orphan/2",
            "paged/paged/keys/k-orphan/3"
        ]),
        "{gc}"
    );
    let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM plugin_kv WHERE tenant_id = 'paged'")
        .fetch_one(&s.sql().await)
        .await
        .unwrap();
    assert_eq!(left, 0);
}

#[cfg(all(feature = "test-hooks", debug_assertions))]
#[tokio::test(flavor = "multi_thread")]
async fn a_deleted_plugin_leaves_no_directory_kv_rows_or_cached_component() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path()).await;
    let db = dir.path().join("keyplane.db");
    let (_, t) = s.tenant_with_admin("leaving").await;
    let (_, other) = s.tenant_with_admin("staying").await;
    for (token, name, file, caps) in [
        (&t, "kv", "storage-kv", json!([])),
        (&t, "fs", "storage-fs", json!(["filesystem"])),
        (&other, "kv", "storage-kv", json!([])),
    ] {
        let (st, v) = s
            .call(
                Some(token),
                "upload-plugin",
                json!({ "name": name, "world": "storage-backend", "capabilities": caps,
                        "component": b64(&wasm(file)) }),
            )
            .await;
        assert_eq!(st, 200, "{v}");
    }
    // What the plugins left: files in fs's directory, rows in the tenants' kv tables.
    let fs_dir = dir.path().join("plugins/fs/leaving/fs");
    std::fs::create_dir_all(&fs_dir).unwrap();
    std::fs::write(fs_dir.join("state"), b"left by the plugin").unwrap();
    common::sqlite(
        &db,
        "INSERT INTO plugin_kv (tenant_id, key, value) VALUES \
         ('leaving', 'state/a', X'01'), ('leaving', 'state/b', X'02'), ('staying', 'state/a', X'03')",
    );

    // fs goes, and its directory after it; the tenant's other backend still reaches the rows.
    s.ok(&t, "delete-plugin", json!({ "name": "fs" })).await;
    // Removed once the deletion committed, before it was answered.
    assert!(!fs_dir.exists(), "the deleted plugin's directory is left");
    assert_eq!(kv_rows(&s, "leaving").await.len(), 2);
    // The tenant's last backend goes with the rows no plugin can reach any more.
    s.ok(&t, "delete-plugin", json!({ "name": "kv" })).await;
    assert_eq!(kv_rows(&s, "leaving").await, vec![]);
    assert_eq!(kv_rows(&s, "staying").await.len(), 1);

    // A component's cached artifact goes with the last plugin that names it.
    let key = s.create_key(&s.admin, "envelope").await;
    for name in ["fixed", "fixed-too"] {
        let (st, v) = upload(
            &s,
            &s.admin,
            name,
            "rotation-schedule",
            "rotation-fixed-interval",
        )
        .await;
        assert_eq!(st, 200, "{v}");
    }
    let (st, v) = preview(&s, &key, "fixed", json!({ "period": "1d" }), 0, json!({})).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(cached_artifacts(dir.path()).len(), 1);
    s.ok(&s.admin, "delete-plugin", json!({ "name": "fixed" }))
        .await;
    let (st, v) = preview(
        &s,
        &key,
        "fixed-too",
        json!({ "period": "1d" }),
        0,
        json!({}),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(cached_artifacts(dir.path()).len(), 1);
    s.ok(&s.admin, "delete-plugin", json!({ "name": "fixed-too" }))
        .await;
    assert_eq!(cached_artifacts(dir.path()), Vec::<PathBuf>::new());
}

/// A tenant's kv table holds at most `plugin_kv::MAX_ROWS_PER_TENANT` rows: a write that would
/// add one more is refused (the key creation whose blob it was fails, typed), and succeeds
/// again once a row is deleted. And at most `plugin_kv::MAX_BYTES_PER_TENANT` bytes of values
/// (before, 100,000 values of 1 MiB each: 100 GB of the shared database per tenant).
#[cfg(all(feature = "test-hooks", debug_assertions))]
#[tokio::test(flavor = "multi_thread")]
async fn a_tenants_kv_rows_are_capped() {
    const MAX_ROWS_PER_TENANT: u32 = 100_000;
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path()).await;
    let db = dir.path().join("keyplane.db");
    let (_, t) = s.tenant_with_admin("capped").await;
    s.kv_backend(&t).await;
    common::sqlite(
        &db,
        &format!(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n \
             WHERE i < {MAX_ROWS_PER_TENANT}) \
             INSERT INTO plugin_kv (tenant_id, key, value) SELECT 'capped', 'filler/' || i, X'00' FROM n"
        ),
    );
    let (st, v) = s.call(Some(&t), "create-key", json!({})).await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (502, Some("PluginFailed")),
        "{v}"
    );
    assert!(
        v["error"]["message"].as_str().unwrap().contains("full"),
        "{v}"
    );
    assert_eq!(
        kv_rows(&s, "capped").await.len(),
        MAX_ROWS_PER_TENANT as usize
    );
    let keys = s.ok(&t, "list-keys", json!({})).await;
    assert_eq!(keys["keys"], json!([]), "a failed creation leaves no key");
    // Another tenant is not held to this one's rows.
    let (_, other) = s.tenant_with_admin("roomy").await;
    s.kv_backend(&other).await;
    s.create_key(&other, "envelope").await;
    common::sqlite(&db, "DELETE FROM plugin_kv WHERE key = 'filler/1'");
    s.create_key(&t, "envelope").await;

    // 256 values of 1 MiB: the bytes are all taken, in few rows.
    const MAX_BYTES_PER_TENANT_MIB: u32 = 256;
    let (_, heavy) = s.tenant_with_admin("heavy").await;
    s.kv_backend(&heavy).await;
    common::sqlite(
        &db,
        &format!(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n \
             WHERE i < {MAX_BYTES_PER_TENANT_MIB}) \
             INSERT INTO plugin_kv (tenant_id, key, value) SELECT 'heavy', 'big/' || i, zeroblob(1048576) FROM n"
        ),
    );
    let (st, v) = s.call(Some(&heavy), "create-key", json!({})).await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (502, Some("PluginFailed")),
        "{v}"
    );
    assert!(
        v["error"]["message"].as_str().unwrap().contains("bytes"),
        "{v}"
    );
    common::sqlite(&db, "DELETE FROM plugin_kv WHERE key = 'big/1'");
    s.create_key(&heavy, "envelope").await;
    common::sqlite(&db, "DELETE FROM plugin_kv WHERE tenant_id = 'heavy'");
}

/// A backend that repeats its configuration in its errors (as one repeats its endpoint, and
/// the credentials in it, in a transport error) has the secrets taken out before its text
/// reaches the caller or the logs (the suite's secrets scan reads this node's log). Before, a
/// caller whose request touched a blob was shown the password of the endpoint's user
/// information.
#[tokio::test(flavor = "multi_thread")]
async fn a_plugins_error_text_reaches_nobody_with_its_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_quiet(dir.path()).await;
    let (_, t) = s.tenant_with_admin("echo").await;
    s.ok(
        &t,
        "upload-plugin",
        json!({ "name": "echo", "world": "storage-backend", "capabilities": [],
                "component": b64(&wasm("hostile-config-echo")) }),
    )
    .await;
    let (password, token) = ("s3cr3t-password-42", "tok-0123456789abcdef");
    common::secrets::record(password.as_bytes());
    common::secrets::record(token.as_bytes());
    let answer = s
        .call(
            Some(&t),
            "set-storage-backend",
            json!({ "plugin": "echo", "config": {
                "endpoint": format!("http://AKIAEXAMPLE:{password}@store.example:9000"),
                "api-token": token, "bucket": "kp-blobs" } }),
        )
        .await;
    common::assert_error(&answer, 400, "ValidationError", "cannot reach the store");
    let said = answer.1.to_string();
    for secret in [password, token, "AKIAEXAMPLE"] {
        assert!(!said.contains(secret), "{secret} in {said}");
    }
    // What is no secret stays, to say where the backend was looking.
    assert!(said.contains("<sealed>@store.example:9000"), "{said}");
    assert!(said.contains("bucket=kp-blobs"), "{said}");
}
