//! The security world between two real nodes (real processes), each with its own SoftHSM2
//! token, sharing one PostgreSQL database: node A makes the root key and the tenant, the key
//! ceremony puts A's root key into B's token (as tests/ceremony.rs does it, with the shared
//! database instead of a copy), and `hsm` keys made on A (AES-256-GCM, HMAC-SHA-256, ECDSA
//! P-256, RSA-2048 OAEP) then work on B from their world copies (wrapped by the root key in
//! the database) unwrapped into session objects of B's HSM, and the other way round. B's
//! token never holds a token object of them. Destroying the keys on A shreds A's token
//! objects and the world copies in the same step; both nodes refuse the versions; B's
//! session objects go as soon as A announces the shredding (PostgreSQL NOTIFY; B's sweep
//! before each scheduler pass is the backstop).
//! Material imported into an `hsm` key and exportable keys work on both nodes too; a version
//! without a world copy (made before this model) stays usable on A only.
// The test hooks (the service clock, `/debug/hsm-objects`) exist in debug builds only.
#![cfg(all(feature = "test-hooks", debug_assertions))]

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::cluster::Cluster;
use common::{assert_error, b64, token_labels, unb64, Server};
use serde_json::{json, Value};

async fn create(s: &Server, spec: &str, usage: &str) -> String {
    let v = s
        .ok(
            &s.admin,
            "create-key",
            json!({ "key_spec": spec, "key_usage": usage }),
        )
        .await;
    assert_eq!(v["protection"], "hsm", "{v}");
    v["key_id"].as_str().unwrap().to_string()
}

/// The keys under test and how each is used.
#[derive(Clone, Copy)]
enum Use {
    Aes,
    Hmac,
    Ecdsa,
    RsaOaep,
    /// Finite-field DH with the key's own public key as the peer (a valid peer of its group).
    Dh,
}

/// `from` makes what `to` must accept with `key`: a ciphertext, a MAC, a signature.
async fn across(from: &Server, to: &Server, key: &str, how: Use, note: &str) -> Vec<u8> {
    let admin = &from.admin;
    let msg = format!("{note}: made on {}", from.base);
    match how {
        Use::Aes => {
            let ctx = json!({ "purpose": "security world" });
            let ct = from.encrypt(admin, key, msg.as_bytes(), ctx.clone()).await;
            let (status, v) = to.decrypt(admin, &ct, ctx).await;
            assert_eq!(status, 200, "{note}: {v}");
            assert_eq!(unb64(&v["plaintext"]), msg.as_bytes());
            ct
        }
        Use::Hmac => {
            let body = json!({ "key_id": key, "message": b64(msg.as_bytes()), "mac_algorithm": "HMAC_SHA_256" });
            let mac = unb64(&from.ok(admin, "generate-mac", body.clone()).await["mac"]);
            let mut check = body;
            check["mac"] = json!(b64(&mac));
            let v = to.ok(admin, "verify-mac", check.clone()).await;
            assert_eq!(v["mac_valid"], true, "{note}");
            // The same key: the same MAC on both nodes.
            let again = unb64(&to.ok(admin, "generate-mac", check_body(&check)).await["mac"]);
            assert_eq!(again, mac, "{note}");
            mac
        }
        Use::Ecdsa => {
            let alg = "ECDSA_SHA_256";
            let v = from
                .ok(
                    admin,
                    "sign",
                    json!({ "key_id": key, "message": b64(msg.as_bytes()), "signing_algorithm": alg }),
                )
                .await;
            let sig = unb64(&v["signature"]);
            let v = to
                .ok(
                    admin,
                    "verify",
                    json!({ "key_id": key, "message": b64(msg.as_bytes()), "signing_algorithm": alg, "signature": b64(&sig) }),
                )
                .await;
            assert_eq!(v["signature_valid"], true, "{note}");
            sig
        }
        Use::RsaOaep => {
            let alg = "RSAES_OAEP_SHA_1";
            let e = from
                .ok(
                    admin,
                    "encrypt",
                    json!({ "key_id": key, "plaintext": b64(msg.as_bytes()), "encryption_algorithm": alg }),
                )
                .await;
            let ct = unb64(&e["ciphertext_blob"]);
            let v = to
                .ok(
                    admin,
                    "decrypt",
                    json!({ "key_id": key, "ciphertext_blob": b64(&ct), "encryption_algorithm": alg }),
                )
                .await;
            assert_eq!(unb64(&v["plaintext"]), msg.as_bytes(), "{note}");
            ct
        }
        Use::Dh => {
            let public = from
                .ok(
                    admin,
                    "get-public-key",
                    json!({ "key_id": key, "format": "PEM" }),
                )
                .await;
            let body = json!({ "key_id": key, "peer_public_key": public["pem"] });
            let here =
                unb64(&from.ok(admin, "derive-shared-secret", body.clone()).await["shared_secret"]);
            let there = unb64(&to.ok(admin, "derive-shared-secret", body).await["shared_secret"]);
            assert_eq!(here, there, "{note}");
            assert_eq!(here.len(), 256, "{note}");
            public["pem"].as_str().unwrap().as_bytes().to_vec()
        }
    }
}

/// A verify-mac body without its `mac` (a generate-mac body).
fn check_body(check: &Value) -> Value {
    let mut b = check.clone();
    b.as_object_mut().unwrap().remove("mac");
    b
}

/// Using `key` (what `made` holds for it) on `s` is refused: the key is destroyed.
async fn refused(s: &Server, key: &str, how: Use, made: &[u8]) {
    let admin = Some(s.admin.as_str());
    let answer = match how {
        Use::Aes => s.decrypt(&s.admin, made, json!({ "purpose": "security world" })).await,
        Use::Hmac => {
            s.call(
                admin,
                "generate-mac",
                json!({ "key_id": key, "message": b64(b"m"), "mac_algorithm": "HMAC_SHA_256" }),
            )
            .await
        }
        Use::Ecdsa => {
            s.call(
                admin,
                "sign",
                json!({ "key_id": key, "message": b64(b"m"), "signing_algorithm": "ECDSA_SHA_256" }),
            )
            .await
        }
        Use::RsaOaep => {
            s.call(
                admin,
                "decrypt",
                json!({ "key_id": key, "ciphertext_blob": b64(made), "encryption_algorithm": "RSAES_OAEP_SHA_1" }),
            )
            .await
        }
        Use::Dh => {
            let peer = String::from_utf8(made.to_vec()).unwrap();
            s.call(
                admin,
                "derive-shared-secret",
                json!({ "key_id": key, "peer_public_key": peer }),
            )
            .await
        }
    };
    assert_error(&answer, 410, "KeyDestroyed", "");
}

/// The world copies (`hsm_wrapped`) of `key`'s versions, read from the shared database.
async fn world_copies(db: &sqlx::PgPool, key: &str) -> Vec<Option<Vec<u8>>> {
    sqlx::query_scalar("SELECT hsm_wrapped FROM key_versions WHERE key_id = $1 ORDER BY version")
        .bind(key)
        .fetch_all(db)
        .await
        .unwrap()
}

/// `openssl <args>` in `dir`; its standard output.
fn openssl(dir: &Path, args: &[&str]) -> Vec<u8> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "openssl {args:?}: {out:?}");
    out.stdout
}

fn labels_of(labels: &[String], key: &str) -> usize {
    labels
        .iter()
        .filter(|l| l.starts_with(&format!("kp:{key}:")))
        .count()
}

#[tokio::test(flavor = "multi_thread")]
async fn hsm_keys_made_on_one_node_are_used_on_another_and_shredded_on_both() {
    let started = Instant::now();
    // Node A first, on the empty database: it makes the root key (exportable, for the
    // ceremony), the token-hash key and the default tenant; the ceremony gives B's token the
    // same root key (`common::cluster`). Scheduler passes only on demand; B also collects
    // garbage at every pass (its grace period the shortest a node takes, a minute).
    let mut cluster = Cluster::start_each(
        2,
        &[("KEYPLANE_LIFECYCLE__SCHEDULER_INTERVAL_SECONDS", "0")],
        &[
            &[],
            &[
                ("KEYPLANE_LIFECYCLE__GC_INTERVAL_SECONDS", "1"),
                ("KEYPLANE_LIFECYCLE__GC_GRACE_SECONDS", "60"),
            ],
        ],
    )
    .await;
    let (node_a, node_b) = (&cluster.nodes[0], &cluster.nodes[1]);
    let (a, b, url) = (&cluster.dirs[0], &cluster.dirs[1], &cluster.url);
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let db = sqlx::PgPool::connect(url).await.unwrap();

    // Keys made on A, each used on A and accepted on B, and the other way round.
    let keys = [
        (node_a.create_key(&node_a.admin, "hsm").await, Use::Aes),
        (
            create(node_a, "HMAC_SHA_256", "generate-verify-mac").await,
            Use::Hmac,
        ),
        (
            create(node_a, "ECC_NIST_P256", "sign-verify").await,
            Use::Ecdsa,
        ),
        (
            create(node_a, "RSA_2048", "encrypt-decrypt").await,
            Use::RsaOaep,
        ),
        (create(node_a, "FFDHE_2048", "key-agreement").await, Use::Dh),
    ];
    let mut made = Vec::new();
    for (key, how) in &keys {
        let on_a = across(node_a, node_b, key, *how, "A to B").await;
        across(node_b, node_a, key, *how, "B to A").await;
        made.push(on_a);
        // The world copy is in the version's row, and the version says so.
        let copies = world_copies(&db, key).await;
        assert_eq!(copies.len(), 1);
        let copy = copies[0].as_ref().expect("a world copy");
        assert_eq!(&copy[..4], b"kpw1");
        let listed = node_b
            .ok(&node_b.admin, "list-key-versions", json!({ "key_id": key }))
            .await;
        assert_eq!(listed["versions"][0]["cluster_wide"], true, "{listed}");
    }
    // A public key read on B is the one A's token holds.
    for key in [&keys[2].0, &keys[3].0, &keys[4].0] {
        let body = json!({ "key_id": key });
        let on_a = node_a
            .ok(&node_a.admin, "get-public-key", body.clone())
            .await;
        let on_b = node_b.ok(&node_b.admin, "get-public-key", body).await;
        assert_eq!(on_a["pem"], on_b["pem"]);
    }

    // B's token holds no token object of them, only its session objects (every object B's
    // HSM has of a version is a session object); A's holds the token objects.
    let labels_b = token_labels(b, None);
    let labels_a = token_labels(a, None);
    let mut object_ids = Vec::new();
    for (key, how) in &keys {
        assert_eq!(
            labels_of(&labels_b, key),
            0,
            "{key} in B's token: {labels_b:?}"
        );
        let pair = matches!(how, Use::Ecdsa | Use::RsaOaep | Use::Dh);
        assert_eq!(
            labels_of(&labels_a, key),
            if pair { 2 } else { 1 },
            "{labels_a:?}"
        );
        let on_b = node_b
            .hsm_objects(json!({ "key_id": key, "version": 1 }))
            .await;
        assert!(on_b["objects"].as_u64().unwrap() >= 1, "{on_b}");
        assert_eq!(on_b["objects"], on_b["session_objects"], "{key}: {on_b}");
        assert_eq!(
            on_b["session_copies_made_live"], on_b["session_objects"],
            "{on_b}"
        );
        object_ids.push(on_b["object_id"].as_str().unwrap().to_string());
    }

    // An exportable key made on A is exported by B too (its session object on B is
    // extractable, as A's token object is): the same material reaches the recipient.
    let recipient = work.join("recipient.pem");
    openssl(
        &work,
        &[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
            "recipient.pem",
        ],
    );
    let public_pem = openssl(&work, &["pkey", "-in", "recipient.pem", "-pubout"]);
    let exportable = node_a
        .ok(
            &node_a.admin,
            "create-key",
            json!({ "protection": "hsm", "exportable": true }),
        )
        .await["key_id"]
        .as_str()
        .unwrap()
        .to_string();
    let mut exported = Vec::new();
    for s in [&node_a, &node_b] {
        let r = s
            .ok(
                &s.admin,
                "export-key",
                json!({ "key_id": exportable, "wrapping_algorithm": "RSAES_OAEP_SHA_1",
                        "public_key": String::from_utf8(public_pem.clone()).unwrap() }),
            )
            .await;
        std::fs::write(work.join("exported"), unb64(&r["encrypted_key_material"])).unwrap();
        exported.push(openssl(
            &work,
            &[
                "pkeyutl",
                "-decrypt",
                "-inkey",
                recipient.to_str().unwrap(),
                "-pkeyopt",
                "rsa_padding_mode:oaep",
                "-pkeyopt",
                "rsa_oaep_md:sha1",
                "-in",
                "exported",
            ],
        ));
    }
    assert_eq!(exported[0].len(), 32);
    assert_eq!(exported[0], exported[1]);

    // Material imported into an hsm key on A works on B too (its world copy is wrapped from
    // the imported material inside A's token).
    let imported = node_a
        .ok(
            &node_a.admin,
            "create-key",
            json!({ "protection": "hsm", "origin": "external" }),
        )
        .await["key_id"]
        .as_str()
        .unwrap()
        .to_string();
    let p = node_a
        .ok(
            &node_a.admin,
            "get-parameters-for-import",
            json!({ "key_id": imported, "wrapping_algorithm": "RSAES_OAEP_SHA_1",
                    "wrapping_key_spec": "RSA_2048" }),
        )
        .await;
    std::fs::write(
        work.join("import.pem"),
        p["public_key_pem"].as_str().unwrap(),
    )
    .unwrap();
    openssl(&work, &["rand", "-out", "material", "32"]);
    let wrapped = openssl(
        &work,
        &[
            "pkeyutl",
            "-encrypt",
            "-pubin",
            "-inkey",
            "import.pem",
            "-pkeyopt",
            "rsa_padding_mode:oaep",
            "-pkeyopt",
            "rsa_oaep_md:sha1",
            "-in",
            "material",
        ],
    );
    node_a
        .ok(
            &node_a.admin,
            "import-key-material",
            json!({ "key_id": imported, "import_token": p["import_token"],
                    "encrypted_key_material": b64(&wrapped) }),
        )
        .await;
    across(node_a, node_b, &imported, Use::Aes, "imported, A to B").await;
    across(node_b, node_a, &imported, Use::Aes, "imported, B to A").await;
    assert!(world_copies(&db, &imported).await[0].is_some());

    // A version without a world copy (as one made before this model) stays on A's node.
    let legacy = node_a.create_key(&node_a.admin, "hsm").await;
    let ct = node_a
        .encrypt(&node_a.admin, &legacy, b"single node", json!({}))
        .await;
    sqlx::query("UPDATE key_versions SET hsm_wrapped = NULL WHERE key_id = $1")
        .bind(&legacy)
        .execute(&db)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await; // the row caches' TTL
    assert_error(
        &node_b.decrypt(&node_b.admin, &ct, json!({})).await,
        503,
        "HsmUnavailable",
        "",
    );
    assert_eq!(node_a.decrypt(&node_a.admin, &ct, json!({})).await.0, 200);
    let listed = node_a
        .ok(
            &node_a.admin,
            "list-key-versions",
            json!({ "key_id": legacy }),
        )
        .await;
    assert_eq!(listed["versions"][0]["cluster_wide"], false, "{listed}");

    // Garbage collection on B (its token) leaves B's session objects alone, and they work.
    let pass = node_b.ok(&node_b.admin, "run-scheduler", json!({})).await;
    assert_eq!(pass["collected"]["hsm_objects"], json!([]), "{pass}");
    across(node_a, node_b, &keys[0].0, Use::Aes, "after gc").await;

    // Destroyed on A (its clock passes the deletion window; its scheduler destroys them).
    let ids: Vec<&str> = keys.iter().map(|(k, _)| k.as_str()).collect();
    node_a.destroy_keys(&ids).await;
    let labels_a = token_labels(a, None);
    for ((key, how), made) in keys.iter().zip(&made) {
        assert_eq!(
            labels_of(&labels_a, key),
            0,
            "{key} left in A's token: {labels_a:?}"
        );
        assert_eq!(world_copies(&db, key).await, vec![None], "{key}");
        refused(node_a, key, *how, made).await;
    }
    // A announces the shredding (PostgreSQL NOTIFY): B destroys the session objects it
    // unwrapped at once, with no scheduler pass of its own, and refuses every version.
    let notified = std::time::Instant::now();
    for id in &object_ids {
        loop {
            let v = node_b.hsm_objects(json!({ "object_id": id })).await;
            if (&v["objects"], &v["session_objects"]) == (&json!(0), &json!(0)) {
                assert!(v["session_copies_made"].as_u64().unwrap() >= 1, "{v}");
                assert_eq!(v["session_copies_made_live"], 0, "{v}");
                break;
            }
            assert!(
                notified.elapsed() < Duration::from_secs(1),
                "B still holds copies of a shredded key 1 s after A shredded it: {v}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    eprintln!(
        "B destroyed its copies of the shredded keys {:?} after A's destruction",
        notified.elapsed()
    );
    for ((key, how), made) in keys.iter().zip(&made) {
        refused(node_b, key, *how, made).await;
    }
    // Nothing else broke on either node.
    let k = node_b.create_key(&node_b.admin, "hsm").await;
    let made = Instant::now();
    across(node_b, node_a, &k, Use::Aes, "a new key").await;

    // A node down while another shreds a key it made: the token object in its token outlives
    // the destruction (it missed the notice), and its own garbage collection removes it when
    // it is back, although A's collection holds the shared interval (A's is an hour): every
    // token is collected on its own claim.
    assert_eq!(labels_of(&token_labels(b, None), &k), 1);
    cluster.nodes[1].kill();
    cluster.nodes[0].destroy_keys(&[&k]).await;
    assert_eq!(
        labels_of(&token_labels(b, None), &k),
        1,
        "B was down: its object is still there"
    );
    cluster.nodes[1] = cluster.start_node(1).await;
    let node_b = &cluster.nodes[1];
    // Past the grace period: a minute of real time since the object was made (a test cannot
    // move the age of material; a node measures it on the wall clock).
    tokio::time::sleep(Duration::from_secs(61).saturating_sub(made.elapsed())).await;
    // B's own interval (1 s) since its last collection. A pass that finds it not yet due
    // (a loaded machine: the claim's clock and the test's sleep differ) collects nothing;
    // the next one does.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut collected = Vec::new();
    let mut passes = Vec::new();
    for _ in 0..20 {
        let pass = node_b.ok(&node_b.admin, "run-scheduler", json!({})).await;
        collected.extend(
            pass["collected"]["hsm_objects"]
                .as_array()
                .cloned()
                .unwrap_or_default(),
        );
        passes.push(pass);
        if !collected.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(collected.len(), 1, "{passes:?}");
    assert!(
        collected[0]
            .as_str()
            .unwrap()
            .starts_with(&format!("kp:{k}:1")),
        "{passes:?}"
    );
    assert_eq!(labels_of(&token_labels(b, None), &k), 0);
    // A node writes two chains (transactions, group commit), each its own range of seq, so
    // seq does not order records across them: the pair is found, and ordered by time.
    let mut records: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT action, outcome, time FROM audit_log WHERE resource LIKE $1 ORDER BY action",
    )
    .bind(format!("hsm-object:kp:{k}:%"))
    .fetch_all(&db)
    .await
    .unwrap();
    assert!(
        records.len() == 2 && records[0].2 <= records[1].2,
        "the removal is audited before and after: {records:?}"
    );
    let records: Vec<(String, String)> = records.drain(..).map(|(a, o, _)| (a, o)).collect();
    assert_eq!(
        records,
        [
            ("BeginCollectGarbage".to_string(), "ok".to_string()),
            ("CollectGarbage".to_string(), "ok".to_string())
        ],
        "the removal is audited before and after"
    );
    db.close().await;
    eprintln!("security world test took {:?}", started.elapsed());
}
