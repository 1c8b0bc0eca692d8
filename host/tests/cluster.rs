//! Three keyplane nodes on one PostgreSQL database, each with its own SoftHSM2 token holding
//! the root key the ceremony gave it (`common::cluster`): one key space served by every node
//! (envelope keys, and hsm keys through their root-wrapped copies),
//! changes honoured everywhere within the bound (PostgreSQL `LISTEN/NOTIFY`, the row TTL as
//! the backstop), due work done exactly once among the nodes, a node killed under load and
//! PostgreSQL restarted under load without an acknowledged operation lost, and the audit log
//! that every node writes verifying as one.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::cluster::Cluster;
use common::{b64, unb64, Server};
use serde_json::{json, Value};

/// The scheduler runs only when a test asks (`run-scheduler`).
const QUIET: (&str, &str) = ("KEYPLANE_LIFECYCLE__SCHEDULER_INTERVAL_SECONDS", "0");

fn assert_verifies(c: &Cluster, i: usize) {
    let out = c.audit_verify(i);
    assert!(
        out.status.success(),
        "audit verify on node {i}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn encrypt(node: &Server, token: &str, key: &str, pt: &[u8]) -> (u16, Value) {
    node.call(
        Some(token),
        "encrypt",
        json!({ "key_id": key, "plaintext": b64(pt) }),
    )
    .await
}

async fn decrypt(node: &Server, token: &str, ct: &str) -> (u16, Value) {
    node.call(Some(token), "decrypt", json!({ "ciphertext_blob": ct }))
        .await
}

/// A key made on one node is served by every node at once, and a change made on one is
/// honoured by the others within the documented bound (1 s; with notices, at once).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_serve_one_key_space_and_honour_each_others_changes() {
    // Rows stay cached for a minute: only the nodes' notices can make a change seen sooner.
    let c = Cluster::start(3, &[QUIET, ("KEYPLANE_CACHE__ROW_TTL_MS", "60000")]).await;
    let (n1, n2, n3) = (&c.nodes[0], &c.nodes[1], &c.nodes[2]);
    // The bootstrap admin (made by node 1) authenticates on every node.
    let admin = n1.admin.clone();
    let key = n1.create_key(&admin, "envelope").await;
    // Read-after-write across nodes: what Terraform-style clients poll.
    for node in [n2, n3] {
        let d = node
            .ok(&admin, "describe-key", json!({ "key_id": key }))
            .await;
        assert_eq!(d["state"], "enabled");
    }
    let (status, ct) = encrypt(n1, &admin, &key, b"one key space").await;
    assert_eq!(status, 200, "{ct}");
    let ct = ct["ciphertext_blob"].as_str().unwrap().to_string();
    for node in [n2, n3] {
        let (status, pt) = decrypt(node, &admin, &ct).await;
        assert_eq!(status, 200, "{pt}");
        assert_eq!(unb64(&pt["plaintext"]), b"one key space");
    }
    // An hsm key too: its version is a token object on node 1 only; nodes 2 and 3 unwrap its
    // root-wrapped copy into a session object of their own HSM (the security world).
    let hsm_key = n1.create_key(&admin, "hsm").await;
    let (status, hct) = encrypt(n1, &admin, &hsm_key, b"sealed in node 1's HSM").await;
    assert_eq!(status, 200, "{hct}");
    let hct = hct["ciphertext_blob"].as_str().unwrap().to_string();
    for node in [n2, n3] {
        let (status, pt) = decrypt(node, &admin, &hct).await;
        assert_eq!(status, 200, "{pt}");
        assert_eq!(unb64(&pt["plaintext"]), b"sealed in node 1's HSM");
    }
    // Every node has the key's rows cached now; disabled on node 2, node 3 refuses within 1 s.
    for node in [n1, n3] {
        assert_eq!(encrypt(node, &admin, &key, b"warm").await.0, 200);
    }
    n2.ok(&admin, "disable-key", json!({ "key_id": key })).await;
    let disabled = Instant::now();
    let refused_after = loop {
        let (status, _) = encrypt(n3, &admin, &key, b"after disable").await;
        if status != 200 {
            break disabled.elapsed();
        }
        assert!(
            disabled.elapsed() < Duration::from_secs(1),
            "node 3 still encrypts 1 s after node 2 disabled the key"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    println!("node 3 refused a key disabled on node 2 after {refused_after:?}");
    let d = n3
        .ok(&admin, "describe-key", json!({ "key_id": key }))
        .await;
    assert_eq!(d["state"], "disabled", "read-after-write of a state change");
    // Enabled again on node 3: node 1 serves it again.
    n3.ok(&admin, "enable-key", json!({ "key_id": key })).await;
    let enabled = Instant::now();
    while encrypt(n1, &admin, &key, b"again").await.0 != 200 {
        assert!(enabled.elapsed() < Duration::from_secs(1));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // A principal removed from the key's grants elsewhere, and a rotation: seen at once.
    n1.ok(&admin, "rotate-key", json!({ "key_id": key })).await;
    let (status, ct2) = encrypt(n2, &admin, &key, b"v2").await;
    assert_eq!(status, 200);
    assert_eq!(
        ct2["key_version"], 2,
        "node 2 encrypts under the new primary"
    );
    for i in 0..3 {
        assert_verifies(&c, i);
    }
}

/// 100 keys due for rotation under the test clock: the nodes run their schedulers at the
/// same time, and each key is rotated exactly once, audited once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn due_rotations_happen_exactly_once_among_the_nodes() {
    let c = Cluster::start(3, &[QUIET]).await;
    let admin = c.nodes[0].admin.clone();
    let mut keys = Vec::new();
    for i in 0..100 {
        let node = &c.nodes[i % 3];
        let key = node.create_key(&admin, "envelope").await;
        node.ok(
            &admin,
            "enable-key-rotation",
            json!({ "key_id": key, "rotation_period_days": 1 }),
        )
        .await;
        keys.push(key);
    }
    for node in &c.nodes {
        node.advance_clock(2 * 86400).await;
    }
    let passes = futures_util::future::join_all(
        c.nodes
            .iter()
            .flat_map(|node| (0..2).map(|_| node.ok(&admin, "run-scheduler", json!({})))),
    )
    .await;
    let rotated: usize = passes
        .iter()
        .map(|p| p["rotated"].as_array().map_or(0, Vec::len))
        .sum();
    assert_eq!(rotated, 100, "{passes:#?}");
    for key in &keys {
        let d = c.nodes[1]
            .ok(&admin, "describe-key", json!({ "key_id": key }))
            .await;
        assert_eq!(d["primary_version"], 2, "{key} rotated once");
    }
    let records = c.nodes[0].audit_records();
    let rotations = records
        .iter()
        .filter(|r| r["principal"] == "keyplane:scheduler" && r["action"] == "RotateKey")
        .count();
    assert_eq!(rotations, 100, "each rotation audited once");
    assert_verifies(&c, 2);
}

/// Mixed operations on every node; one node killed in the middle: the other two keep
/// serving, and every operation any node acknowledged is there afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_killed_under_load_loses_no_acknowledged_operation() {
    let mut c = Cluster::start(3, &[QUIET]).await;
    let admin = c.nodes[0].admin.clone();
    let shared = c.nodes[0].create_key(&admin, "envelope").await;
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for (i, node) in c.nodes.iter().enumerate() {
        for _ in 0..2 {
            let (client, base, admin, shared, stop) = (
                node.client.clone(),
                node.base.clone(),
                admin.clone(),
                shared.clone(),
                stop.clone(),
            );
            workers.push(tokio::spawn(async move {
                let call = |op: &str, body: Value| {
                    client
                        .post(format!("{base}/v1/{op}"))
                        .bearer_auth(&admin)
                        .body(body.to_string())
                        .send()
                };
                let (mut keys, mut cts) = (Vec::new(), Vec::new());
                let mut n = 0u32;
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let answer = if n.is_multiple_of(3) {
                        call("create-key", json!({ "protection": "envelope" })).await
                    } else {
                        let pt = format!("node {i} op {n}");
                        call(
                            "encrypt",
                            json!({ "key_id": shared, "plaintext": b64(pt.as_bytes()) }),
                        )
                        .await
                    };
                    // Refused or cut off (the node died): not acknowledged.
                    let Ok(r) = answer else { break };
                    if r.status() != 200 {
                        continue;
                    }
                    let Ok(v) = r.json::<Value>().await else {
                        break;
                    };
                    if n.is_multiple_of(3) {
                        keys.push(v["key_id"].as_str().unwrap().to_string());
                    } else {
                        cts.push((
                            v["ciphertext_blob"].as_str().unwrap().to_string(),
                            format!("node {i} op {n}"),
                        ));
                    }
                }
                (keys, cts)
            }));
        }
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    c.nodes[1].kill();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);
    let (mut keys, mut cts) = (Vec::new(), Vec::new());
    for w in workers {
        let (k, t) = w.await.unwrap();
        keys.extend(k);
        cts.extend(t);
    }
    assert!(
        keys.len() > 10 && cts.len() > 50,
        "{} keys, {} ciphertexts",
        keys.len(),
        cts.len()
    );
    println!(
        "acknowledged under load: {} keys created, {} encryptions",
        keys.len(),
        cts.len()
    );
    let (n1, n3) = (&c.nodes[0], &c.nodes[2]);
    for key in &keys {
        let d = n3
            .ok(&admin, "describe-key", json!({ "key_id": key }))
            .await;
        assert_eq!(d["state"], "enabled");
    }
    for (ct, pt) in &cts {
        let (status, v) = decrypt(n1, &admin, ct).await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(unb64(&v["plaintext"]), pt.as_bytes());
    }
    assert_verifies(&c, 0);
}

/// PostgreSQL stopped under load: typed 503s and `/readyz` 503 while it is away, the nodes
/// recover on their own once it is back, and nothing acknowledged is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_restarted_under_load_the_nodes_recover_on_their_own() {
    let mut c = Cluster::start(2, &[QUIET]).await;
    let admin = c.nodes[0].admin.clone();
    let key = c.nodes[0].create_key(&admin, "envelope").await;
    let mut acknowledged = Vec::new();
    for i in 0..20 {
        let (status, v) = encrypt(&c.nodes[i % 2], &admin, &key, b"before").await;
        assert_eq!(status, 200, "{v}");
        acknowledged.push(v["ciphertext_blob"].as_str().unwrap().to_string());
    }
    c.pg.stop().unwrap();
    for node in &c.nodes {
        let (status, v) = encrypt(node, &admin, &key, b"while away").await;
        assert_eq!(status, 503, "{v}");
        assert_eq!(v["error"]["code"], "DatabaseUnavailable", "{v}");
        let ready = node
            .client
            .get(format!("{}/readyz", node.base))
            .send()
            .await
            .unwrap();
        assert_eq!(ready.status().as_u16(), 503);
    }
    c.pg.start_again().unwrap();
    let back = Instant::now();
    for node in &c.nodes {
        loop {
            let (status, v) = encrypt(node, &admin, &key, b"after").await;
            if status == 200 {
                acknowledged.push(v["ciphertext_blob"].as_str().unwrap().to_string());
                break;
            }
            assert!(
                back.elapsed() < Duration::from_secs(5),
                "not recovered 5 s after PostgreSQL came back: {v}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    println!(
        "both nodes served again {:?} after PostgreSQL was back",
        back.elapsed()
    );
    for (i, ct) in acknowledged.iter().enumerate() {
        let (status, v) = decrypt(&c.nodes[(i + 1) % 2], &admin, ct).await;
        assert_eq!(status, 200, "{v}");
    }
    assert_verifies(&c, 1);
}

/// A load on three nodes with a short retention: sealed segments are archived (to the one
/// archive directory every node is pointed at) and pruned from the database by whichever node
/// holds the archive lease, while `audit verify` over archive and live records passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_short_retention_archives_and_prunes_under_load_and_verify_passes() {
    let archive = tempfile::tempdir().unwrap();
    let dir = archive.path().to_str().unwrap().to_string();
    let c = Cluster::start(
        3,
        &[
            QUIET,
            ("KEYPLANE_AUDIT__ARCHIVE_DIR", &dir),
            ("KEYPLANE_AUDIT__CHECKPOINT_EVERY_RECORDS", "10"),
            ("KEYPLANE_AUDIT__ARCHIVE_INTERVAL_SECONDS", "1"),
            ("KEYPLANE_AUDIT__ARCHIVE_SEGMENT_RECORDS", "10"),
            ("KEYPLANE_AUDIT__RETENTION_RECORDS", "20"),
        ],
    )
    .await;
    let admin = c.nodes[0].admin.clone();
    let key = c.nodes[0].create_key(&admin, "envelope").await;
    for round in 0..6 {
        let answers = futures_util::future::join_all(
            (0..60).map(|i| encrypt(&c.nodes[i % 3], &admin, &key, b"retained")),
        )
        .await;
        assert!(answers.iter().all(|(status, _)| *status == 200));
        // Checkpoints are signed on a 1 s tick; the archive interval is 1 s.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        c.nodes[round % 3]
            .ok(&admin, "run-scheduler", json!({}))
            .await;
    }
    let pool = sqlx::PgPool::connect(&c.url).await.unwrap();
    let (segments, pruned): (i64, i64) =
        sqlx::query_as("SELECT COUNT(*), COUNT(pruned_at) FROM audit_segments")
            .fetch_one(&pool)
            .await
            .unwrap();
    // Records of pruned segments left the database (each node writes chains of its own).
    let (left, chains): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT COUNT(*) FROM audit_log a JOIN audit_segments s \
         ON a.seq >= s.first_seq AND a.seq <= s.last_seq WHERE s.pruned_at IS NOT NULL), \
         (SELECT COUNT(DISTINCT first_seq >> 40) FROM audit_segments)",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    pool.close().await;
    println!("{segments} segments of {chains} chains archived, {pruned} pruned");
    assert!(
        segments >= 2 && pruned >= 1,
        "{segments} archived, {pruned} pruned"
    );
    assert_eq!(
        left, 0,
        "records of pruned segments are still in the database"
    );
    assert!(std::fs::read_dir(&dir).unwrap().count() as i64 >= segments);
    for i in 0..3 {
        assert_verifies(&c, i);
    }
}

/// On PostgreSQL (READ COMMITTED), `delete-plugin` counted a storage plugin's versions
/// without one a rotation had written but not yet committed, deleted the plugin, and the
/// rotation committed a version whose blob nobody could read again. Now the deletion waits
/// for the rotation (the plugin's row is locked by both) and counts its version.
#[cfg(all(feature = "test-hooks", debug_assertions))]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_plugin_is_not_deleted_under_a_version_being_committed_into_it() {
    let c = Cluster::start(1, &[QUIET]).await;
    let s = &c.nodes[0];
    let (_, t) = s.tenant_with_admin("moving").await;
    let key = s.create_key(&t, "envelope").await;
    let component = b64(&common::wasm("storage-kv"));
    s.ok(
        &t,
        "upload-plugin",
        json!({ "name": "old", "world": "storage-backend", "component": component }),
    )
    .await;
    s.ok(&t, "set-storage-backend", json!({ "plugin": "old" }))
        .await;

    s.pause("rotate:version-inserted", &key, "arm").await;
    let rotation = s.call(Some(&t), "rotate-key", json!({ "key_id": key }));
    let rest = async {
        let reached = s.pause("rotate:version-inserted", &key, "wait").await;
        assert_eq!(reached["reached"], true);
        // The tenant moves on; `old` is no longer its backend and no committed version is
        // in it, but the rotation's is about to be.
        s.kv_backend(&t).await;
        let deletion = s.call(Some(&t), "delete-plugin", json!({ "name": "old" }));
        let release = async {
            tokio::time::sleep(Duration::from_millis(500)).await;
            s.pause("rotate:version-inserted", &key, "release").await;
        };
        tokio::join!(deletion, release).0
    };
    let (rotated, deleted) = tokio::join!(rotation, rest);
    assert_eq!(rotated.0, 200, "{}", rotated.1);
    assert_eq!(deleted.0, 409, "{}", deleted.1);
    assert!(
        deleted.1.to_string().contains("still holds the blobs"),
        "{}",
        deleted.1
    );
    // The version rotated into `old` opens.
    let (status, ct) = encrypt(s, &t, &key, b"in old").await;
    assert_eq!(status, 200, "{ct}");
    let (status, pt) = decrypt(s, &t, ct["ciphertext_blob"].as_str().unwrap()).await;
    assert_eq!((status, unb64(&pt["plaintext"])), (200, b"in old".to_vec()));
}

/// A grant made on one node is honoured at once on another by an AWS request that carries its
/// grant token, even by a node that has not heard of the grant (its notices lost, its rows
/// cached for a minute); without the token, that node goes on refusing until its cache
/// expires. Grant tokens are checked against AWS's model.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_grant_token_makes_a_grant_count_at_once_on_every_node() {
    use common::aws::{access_key, client, run, venv_bin};
    let c = Cluster::start_each(
        2,
        &[QUIET, ("KEYPLANE_CACHE__ROW_TTL_MS", "60000")],
        &[&[], &[("KEYPLANE_TEST_IGNORE_CHANGE_NOTICES", "1")]],
    )
    .await;
    let (n1, n2) = (&c.nodes[0], &c.nodes[1]);
    let tokens = n1
        .tenant_with(
            "acme",
            "123456789012",
            &[("alice", "admin"), ("svc", "member")],
        )
        .await;
    let (admin, svc) = (&tokens[0], &tokens[1]);
    let key = n1.create_key(admin, "envelope").await;
    let svc_key = access_key(n1, svc).await;
    // Run on node 2 as svc: Encrypt with these grant tokens; prints the outcome.
    let encrypt = |grant_tokens: Vec<String>| {
        let script = r#"
import boto3, botocore, json, os, sys
kms = boto3.client("kms")
try:
    kms.encrypt(KeyId=sys.argv[1], Plaintext=b"granted", GrantTokens=json.loads(sys.argv[2]))
    print("ok")
except botocore.exceptions.ClientError as e:
    print(e.response["Error"]["Code"])
"#;
        let tokens = serde_json::to_string(&grant_tokens).unwrap();
        let mut cmd = client(&venv_bin("python"), n2, &svc_key);
        cmd.args(["-c", script, &key, &tokens]);
        run(&mut cmd).trim().to_string()
    };
    // Node 2 caches the key, grantless.
    assert_eq!(encrypt(vec![]), "NotFoundException");
    let grant = n1
        .ok(
            admin,
            "create-grant",
            json!({ "key_id": key, "grantee_principal": "svc", "operations": ["Encrypt", "DescribeKey"] }),
        )
        .await;
    let token = grant["grant_token"].as_str().unwrap().to_string();
    // Node 2 has not heard of the grant: refused without its token, allowed with it.
    assert_eq!(encrypt(vec![]), "NotFoundException");
    assert_eq!(encrypt(vec![token.clone()]), "ok");
    // A token naming no grant changes nothing; tokens outside AWS's model are refused.
    assert_eq!(encrypt(vec!["no-such-grant".into()]), "NotFoundException");
    assert_eq!(encrypt(vec![token.clone(); 11]), "ValidationException");
}

/// A policy set another node reloaded comes into force here only with a record of its own
/// (principal `keyplane:peer`, the set's hash), written where it comes into force: the
/// announcing node's record names the set that node read, and every change of the set a node
/// serves is in the log. (Before, a node put its own directory's set in force on another's
/// notice, or on a resync, with no record.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_policy_set_reloaded_on_another_node_is_recorded_where_it_comes_into_force() {
    let c = Cluster::start_with_own_policies(2, &[QUIET]).await;
    let (n1, n2) = (&c.nodes[0], &c.nodes[1]);
    std::fs::write(
        c.policies().join("extra.cedar"),
        r#"@id("extra")
@description("A forbid that never applies, so that the set changes")
forbid (principal, action == Keyplane::Action::"GenerateRandom", resource)
when { false };
"#,
    )
    .unwrap();
    let reloaded = n1.ok(&n1.admin, "reload-policies", json!({})).await;
    let hash = reloaded["policy_set"].as_str().unwrap().to_string();
    let in_force = || async {
        n2.client
            .get(format!("{}/readyz", n2.base))
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()["policy_set"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while in_force().await != hash {
        assert!(
            std::time::Instant::now() < deadline,
            "node 2 did not follow"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let records = n2.audit_records();
    let peer: Vec<&Value> = records
        .iter()
        .filter(|r| r["principal"] == "keyplane:peer" && r["action"] == "ReloadPolicies")
        .collect();
    assert_eq!(peer.len(), 1, "{peer:?}");
    assert_eq!(peer[0]["policy_hash"], hash.as_str(), "{peer:?}");
}
