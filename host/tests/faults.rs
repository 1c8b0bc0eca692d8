//! Faults of what keyplane depends on, injected into the real parts: the SoftHSM2 token (its
//! sessions and login ended under keyplane; the token gone for a while) and the SQLite
//! database (a full filesystem; a lock held by another process). While a part is gone every
//! request that needs it fails fast with a typed `503`, none hangs or answers `500`; once it
//! is back, requests succeed without a restart; nothing acknowledged is lost, nothing half
//! made is left, and the audit log still verifies.
#![cfg(all(feature = "test-hooks", debug_assertions))]

mod common;

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use common::{b64, unb64, Server};

/// A request and its answer, timed from the client (a connection already open).
async fn timed(s: &Server, op: &str, body: Value) -> (u16, Value, Duration) {
    let started = Instant::now();
    let (status, v) = s.call(Some(&s.admin), op, body).await;
    (status, v, started.elapsed())
}

async fn readyz(s: &Server) -> (u16, Value, Duration) {
    let started = Instant::now();
    let r = s
        .client
        .get(format!("{}/readyz", s.base))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap(), started.elapsed())
}

async fn hsm_fault(s: &Server, action: &str) -> Value {
    let r = s
        .client
        .post(format!("{}/debug/hsm-fault", s.base))
        .bearer_auth(&s.admin)
        .json(&json!({ "action": action }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    r.json().await.unwrap()
}

/// Keys of each kind the HSM serves, and a ciphertext or signature made with each before
/// the fault.
struct Before {
    hsm_key: String,
    envelope_key: String,
    signing_key: String,
    hsm_ct: Vec<u8>,
    envelope_ct: Vec<u8>,
    signature: String,
}

async fn before(s: &Server) -> Before {
    let hsm_key = s.create_key(&s.admin, "hsm").await;
    let envelope_key = s.create_key(&s.admin, "envelope").await;
    let signing_key = s
        .create_key_of(&s.admin, "ECC_NIST_P256", "sign-verify")
        .await;
    let signed = s
        .ok(
            &s.admin,
            "sign",
            json!({ "key_id": signing_key, "message": b64(b"before"), "signing_algorithm": "ECDSA_SHA_256" }),
        )
        .await;
    Before {
        hsm_ct: s
            .encrypt(&s.admin, &hsm_key, b"hsm before", json!({}))
            .await,
        envelope_ct: s
            .encrypt(&s.admin, &envelope_key, b"envelope before", json!({}))
            .await,
        signature: signed["signature"].as_str().unwrap().to_string(),
        hsm_key,
        envelope_key,
        signing_key,
    }
}

/// Everything made before still works, and new material can be made.
async fn nothing_lost(s: &Server, b: &Before) {
    for (ct, pt) in [
        (&b.hsm_ct, b"hsm before".as_slice()),
        (&b.envelope_ct, b"envelope before".as_slice()),
    ] {
        let (status, v) = s.decrypt(&s.admin, ct, json!({})).await;
        assert_eq!((status, unb64(&v["plaintext"])), (200, pt.to_vec()), "{v}");
    }
    let v = s
        .ok(
            &s.admin,
            "verify",
            json!({ "key_id": b.signing_key, "message": b64(b"before"), "signature": b.signature,
                    "signing_algorithm": "ECDSA_SHA_256" }),
        )
        .await;
    assert_eq!(v["signature_valid"], true);
    for key in [&b.hsm_key, &b.envelope_key] {
        let ct = s.encrypt(&s.admin, key, b"after", json!({})).await;
        assert_eq!(s.decrypt(&s.admin, &ct, json!({})).await.0, 200);
    }
    s.create_key(&s.admin, "hsm").await;
}

/// Every session of the token is closed and its login ended by a second handle to the module
/// (as another application, or the module itself, could). keyplane notices at the next call,
/// logs in again and answers that very request: nothing fails, nothing is lost.
#[tokio::test(flavor = "multi_thread")]
async fn the_hsm_login_comes_back_after_its_sessions_are_closed() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_quiet(dir.path()).await;
    let b = before(&s).await;
    assert_eq!(hsm_fault(&s, "close-sessions").await["closed"], true);
    let (status, v, _) = timed(
        &s,
        "encrypt",
        json!({ "key_id": b.hsm_key, "plaintext": b64(b"x") }),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    nothing_lost(&s, &b).await;
    assert_eq!(readyz(&s).await.0, 200);
    // Twice more: each loss is noticed and repaired.
    for _ in 0..2 {
        hsm_fault(&s, "close-sessions").await;
        nothing_lost(&s, &b).await;
    }
    let log: Vec<String> = s.log.lock().unwrap().try_iter().collect();
    assert!(
        log.iter()
            .filter(|l| l.contains("the HSM is back: logged in again"))
            .count()
            >= 3,
        "{log:?}"
    );
    s.assert_audit_verifies();
}

/// The token goes away for a while (its directory moved away and back, which SoftHSM2 sees
/// as a removed token). Meanwhile every request that needs the HSM fails within 100 ms with
/// `503 HsmUnavailable` (none hangs, none answers 500) and `/readyz` is 503; within a second
/// of its return requests succeed again, without a restart, and nothing is lost.
#[tokio::test(flavor = "multi_thread")]
async fn requests_fail_fast_while_the_token_is_gone_and_succeed_once_it_returns() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_quiet(dir.path()).await;
    let b = before(&s).await;
    // The hsm key as a Transit key, for a batch rewrap while the token is gone.
    s.ok(
        &s.admin,
        "create-alias",
        json!({ "alias_name": "alias/faulty", "target_key_id": b.hsm_key }),
    )
    .await;
    let transit_ct = format!("vault:v1:{}", b64(&b.hsm_ct));
    // A key whose deletion window has passed, for the scheduler to destroy while the token is
    // gone.
    let doomed = s.create_key(&s.admin, "hsm").await;
    let approver = s.second_admin("default").await;
    let body = json!({ "key_id": doomed, "pending_window_days": 7 });
    let (status, v) = s.schedule_deletion(&s.admin, &approver, body).await;
    assert_eq!(status, 200, "{v}");
    s.advance_clock(8 * 86_400).await;
    let doomed_objects = || common::token_objects_of(dir.path(), &doomed);
    assert_eq!(doomed_objects(), 1);
    let token = common::token_dir(dir.path());
    let away = dir.path().join("token-away");
    std::fs::rename(&token, &away).unwrap();
    // First, before any request has found the token gone: its objects cannot be seen, so
    // nothing is taken as destroyed (SoftHSM2 answers a search with nothing then, and the key
    // used to be marked destroyed with its material still in the token once it came back).
    let pass = s.ok(&s.admin, "run-scheduler", json!({})).await;
    assert_eq!(pass["destroyed"], json!([]), "{pass}");
    let state = || async {
        s.ok(&s.admin, "describe-key", json!({ "key_id": doomed }))
            .await["state"]
            .clone()
    };
    assert_eq!(state().await, "destroying");

    let requests = || {
        vec![
            (
                "encrypt",
                json!({ "key_id": b.hsm_key, "plaintext": b64(b"x") }),
            ),
            ("decrypt", json!({ "ciphertext_blob": b64(&b.hsm_ct) })),
            (
                "sign",
                json!({ "key_id": b.signing_key, "message": b64(b"x"), "signing_algorithm": "ECDSA_SHA_256" }),
            ),
            ("create-key", json!({ "protection": "hsm" })),
            ("create-key", json!({ "protection": "envelope" })),
            ("generate-random", json!({ "number_of_bytes": 16 })),
        ]
    };
    let mut slowest = Duration::ZERO;
    for _ in 0..3 {
        let (status, v, took) = readyz(&s).await;
        assert_eq!(
            (status, v["hsm"].as_str()),
            (503, Some("unavailable")),
            "{v}"
        );
        slowest = slowest.max(took);
        for (op, body) in requests() {
            let (status, v, took) = timed(&s, op, body).await;
            assert_eq!(
                (status, v["error"]["code"].as_str()),
                (503, Some("HsmUnavailable")),
                "{op}: {v}"
            );
            slowest = slowest.max(took);
        }
    }
    // A Transit batch whose items fail on the server's side is a 500 (retry), not a 200
    // whose items say so: a job re-wrapping a column must not take it as done.
    let rewrap = s
        .client
        .post(format!("{}/v1/transit/rewrap/faulty", s.base))
        .header("X-Vault-Token", &s.admin)
        .json(&json!({ "batch_input": [{ "ciphertext": transit_ct }] }))
        .send()
        .await
        .unwrap();
    assert_eq!(rewrap.status().as_u16(), 500, "{:?}", rewrap.text().await);
    assert!(
        slowest < Duration::from_millis(100),
        "a request took {slowest:?} to fail"
    );
    let keys_while_gone: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM keys")
        .fetch_one(&s.sql().await)
        .await
        .unwrap();
    assert_eq!(keys_while_gone, 4, "no key was half made");

    std::fs::rename(&away, &token).unwrap();
    let back = Instant::now();
    loop {
        let (status, v, _) = timed(
            &s,
            "encrypt",
            json!({ "key_id": b.hsm_key, "plaintext": b64(b"x") }),
        )
        .await;
        if status == 200 {
            break;
        }
        assert_eq!(status, 503, "{v}");
        assert!(
            back.elapsed() < Duration::from_secs(1),
            "not back within a second"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!("served again {:?} after the token returned", back.elapsed());
    assert_eq!(readyz(&s).await.0, 200);
    for (op, body) in requests() {
        let (status, v, _) = timed(&s, op, body).await;
        assert_eq!(status, 200, "{op}: {v}");
    }
    nothing_lost(&s, &b).await;
    assert_eq!(
        doomed_objects(),
        1,
        "still there while it could not be destroyed"
    );
    let pass = s.ok(&s.admin, "run-scheduler", json!({})).await;
    assert_eq!(pass["destroyed"], json!([doomed]), "{pass}");
    assert_eq!(state().await, "destroyed");
    assert_eq!(doomed_objects(), 0);
    s.assert_audit_verifies();
}

/// Keys in the database, and how many `CreateKey` records say a key was created.
async fn keys_and_records(s: &Server) -> (Vec<String>, usize) {
    let pool = s.sql().await;
    let keys = sqlx::query_scalar("SELECT id FROM keys ORDER BY id")
        .fetch_all(&pool)
        .await
        .unwrap();
    let recorded: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM audit_log WHERE action = 'CreateKey' AND outcome = 'ok'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    (keys, recorded as usize)
}

/// The filesystem under the database (and the token) fills up. Writes fail with typed
/// `503`s, never `500`; a failed request leaves no key, version or audit record behind; once
/// space returns, requests succeed again without a restart; every acknowledged key is there
/// with its record and the audit log verifies.
#[tokio::test(flavor = "multi_thread")]
async fn a_full_filesystem_fails_writes_cleanly_until_space_returns() {
    let fs = common::filesystem::SmallFilesystem::mount(24);
    let data = fs.path().join("data");
    let s = Server::start_quiet(&data).await;
    let b = before(&s).await;
    let filler = fs.fill();

    let description = "x".repeat(8000);
    let mut acknowledged = Vec::new();
    let mut refused = std::collections::BTreeMap::<String, usize>::new();
    for i in 0..300 {
        let protection = if i % 4 == 0 { "hsm" } else { "envelope" };
        let (status, v) = s
            .call(
                Some(&s.admin),
                "create-key",
                json!({ "protection": protection, "description": description }),
            )
            .await;
        match status {
            200 => acknowledged.push(v["key_id"].as_str().unwrap().to_string()),
            503 => {
                *refused
                    .entry(v["error"]["code"].as_str().unwrap().to_string())
                    .or_default() += 1
            }
            other => panic!("create-key on a full filesystem answered {other}: {v}"),
        }
        if refused.get("DatabaseUnavailable").copied().unwrap_or(0) >= 5 {
            break;
        }
    }
    assert!(
        refused.contains_key("DatabaseUnavailable"),
        "the database never filled: {refused:?}"
    );
    // Other writes meanwhile: typed too.
    for (op, body) in [
        (
            "encrypt",
            json!({ "key_id": b.envelope_key, "plaintext": b64(b"x") }),
        ),
        ("rotate-key", json!({ "key_id": b.hsm_key })),
    ] {
        let (status, v) = s.call(Some(&s.admin), op, body).await;
        assert!(
            status == 200 || status == 503,
            "{op} on a full filesystem answered {status}: {v}"
        );
    }
    eprintln!(
        "full filesystem: {} create-key acknowledged, refused {refused:?}",
        acknowledged.len()
    );

    std::fs::remove_file(filler).unwrap();
    let key = s.create_key(&s.admin, "envelope").await;
    acknowledged.push(key);
    nothing_lost(&s, &b).await;
    let (keys, recorded) = keys_and_records(&s).await;
    for k in &acknowledged {
        assert!(keys.contains(k), "acknowledged key {k} is missing");
    }
    // One record per key: a refused creation left neither a key nor a record of success.
    assert_eq!(
        keys.len(),
        recorded,
        "every key has its record, and no record a missing key"
    );
    let versionless: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM keys k WHERE NOT EXISTS (SELECT 1 FROM key_versions v WHERE v.key_id = k.id)",
    )
    .fetch_one(&s.sql().await)
    .await
    .unwrap();
    assert_eq!(versionless, 0);
    let mut s = s;
    s.stop();
    s.assert_audit_verifies();
}

/// Another process holds the database's write lock. Writes wait for it up to the busy
/// timeout (`database.busy_timeout_ms`, 500 ms here) and then fail with `503
/// DatabaseUnavailable`; so do reads, whose audit record cannot be written (no request goes
/// unrecorded); once the lock is released, everything succeeds again.
#[tokio::test(flavor = "multi_thread")]
async fn a_database_locked_by_another_process_fails_writes_then_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_with_env(
        dir.path(),
        &[
            ("RUST_LOG", "warn"),
            ("KEYPLANE_LIFECYCLE__SCHEDULER_INTERVAL_SECONDS", "0"),
            ("KEYPLANE_DATABASE__BUSY_TIMEOUT_MS", "500"),
        ],
    )
    .await;
    let b = before(&s).await;
    let db = dir.path().join("keyplane.db");
    let locker = common::DatabaseLock::take(&db);
    let (keys_before, _) = keys_and_records(&s).await;
    for (op, body) in [
        ("create-key", json!({})),
        (
            "encrypt",
            json!({ "key_id": b.envelope_key, "plaintext": b64(b"x") }),
        ),
        ("disable-key", json!({ "key_id": b.envelope_key })),
        ("describe-key", json!({ "key_id": b.envelope_key })),
    ] {
        let (status, v, took) = timed(&s, op, body).await;
        assert_eq!(
            (status, v["error"]["code"].as_str()),
            (503, Some("DatabaseUnavailable")),
            "{op}: {v}"
        );
        assert!(took < Duration::from_secs(5), "{op} took {took:?}");
    }
    drop(locker);
    let described = s
        .ok(
            &s.admin,
            "describe-key",
            json!({ "key_id": b.envelope_key }),
        )
        .await;
    assert_eq!(
        described["state"], "enabled",
        "the refused disable changed nothing"
    );

    let (keys_after, _) = keys_and_records(&s).await;
    assert_eq!(keys_before, keys_after, "the refused creation left no key");
    nothing_lost(&s, &b).await;
    let mut s = s;
    s.stop();
    s.assert_audit_verifies();
}

/// The process's one HSM opened in-process, for the tests below that drive keyplane's HSM
/// layer directly (one at a time: [`in_process_turn`]). One, because the module is loaded
/// once per process and reads its configuration (`SOFTHSM2_CONF`, set here before any of
/// those tests loads it) when initialised: a second `Hsm::open` would start it over under
/// the first.
fn in_process_hsm() -> std::sync::Arc<keyplane::hsm::Hsm> {
    static HSM: std::sync::OnceLock<std::sync::Arc<keyplane::hsm::Hsm>> =
        std::sync::OnceLock::new();
    HSM.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap().keep();
        let config = keyplane::config::Config {
            data_dir: dir.clone(),
            ..Default::default()
        };
        let conf = keyplane::hsm::token::prepare_embedded_softhsm(&dir).unwrap();
        // The process's one SoftHSM2 configuration: only these tests load the module
        // in-process.
        std::env::set_var("SOFTHSM2_CONF", conf);
        std::sync::Arc::new(keyplane::hsm::Hsm::open(&config).unwrap())
    })
    .clone()
}

/// Held by each in-process test: one looks for objects another makes.
fn in_process_turn() -> std::sync::MutexGuard<'static, ()> {
    static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());
    TURN.lock().unwrap_or_else(|e| e.into_inner())
}

/// What the in-process tests use: a key-agreement key pair's private half with a peer point
/// for it, and an RSA public key to wrap to (an import wrapping key's), with its private half.
struct Fixtures {
    agreement: keyplane::hsm::Obj,
    peer_point: Vec<u8>,
    recipient: (Vec<u8>, Vec<u8>),
    import_key: keyplane::hsm::Obj,
}

fn fixtures(hsm: &keyplane::hsm::Hsm, name: &str) -> Fixtures {
    use keyplane::algorithms::public_key::PublicParts;
    use keyplane::algorithms::{KeySpec, KeyUsage};
    let pair = |n: u32| {
        let id = keyplane::hsm::version_object_id(name, n);
        let spec = (KeySpec::EccNistP256, KeyUsage::KeyAgreement);
        hsm.generate_version_objects(&id, name, spec, false)
            .unwrap()
            .0
    };
    let (ours, theirs) = (pair(1), pair(2));
    let PublicParts::Ec(peer_point) = hsm.public_parts(theirs[0], KeySpec::EccNistP256).unwrap()
    else {
        panic!("not an EC public key");
    };
    let id = format!("kp-import:{name}").into_bytes();
    let (import_key, n, e) = hsm.generate_import_key_pair(&id, 2048).unwrap();
    Fixtures {
        agreement: ours[1],
        peer_point,
        recipient: (n, e),
        import_key,
    }
}

fn transport(with_aes_key_wrap: bool) -> keyplane::hsm::wrapping::Transport {
    keyplane::hsm::wrapping::Transport {
        hash: keyplane::hsm::wrapping::OaepHash::Sha1,
        with_aes_key_wrap,
    }
}

/// SoftHSM2 fails some calls that find, create or destroy objects when they run at once in
/// one process (`CKR_GENERAL_ERROR`, even `CKR_TEMPLATE_INCONSISTENT`: about 1 call in 100
/// in this pattern), which answered key creations `503` under load; keyplane makes those
/// calls take turns on SoftHSM2 (`Hsm::call_on_objects`). Driven straight through
/// keyplane's HSM layer, four threads at once: make a token key, find it, list the token, copy
/// it into a session object, destroy both; make a tenant KEK and unwrap it again; a key
/// agreement (its secret is an object for a moment); an export's wrap (a recipient key and a
/// transient key are objects for a moment). Such a race shows now and then only (a session
/// copy against a listing failed in about one run in three of this test before copies took
/// the turn); that each of those calls takes the turn is checked deterministically by
/// [`calls_that_make_or_find_objects_wait_for_the_turn`].
#[test]
fn object_calls_made_at_once_on_softhsm2_all_succeed() {
    use std::sync::Arc;
    let _turn = in_process_turn();
    let hsm = in_process_hsm();
    let fixtures = Arc::new(fixtures(&hsm, "race"));
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let (hsm, fixtures) = (hsm.clone(), fixtures.clone());
            std::thread::spawn(move || {
                let mut failures = Vec::new();
                let (n, e) = &fixtures.recipient;
                for i in 0..150 {
                    let id = keyplane::hsm::version_object_id(&format!("k-{t}"), i);
                    let round = (|| {
                        let (key, _) = hsm.generate_token_aes_key_with(&id, 32, false)?;
                        hsm.find_all(&id)?;
                        hsm.keyplane_objects()?;
                        let copy = hsm.session_copy(key)?;
                        hsm.destroy(copy)?;
                        hsm.destroy(key)?;
                        let (stored, kek) = hsm.generate_kek()?;
                        let again = hsm.unwrap_kek(&stored)?;
                        hsm.release_kek(again)?;
                        hsm.release_kek(kek)?;
                        hsm.ecdh(fixtures.agreement, &fixtures.peer_point, 32)?;
                        hsm.wrap_material_for_recipient(&[7u8; 32], (n, e), transport(i % 2 == 0))
                            .map(drop)
                    })();
                    if let Err(e) = round {
                        failures.push(format!("thread {t} round {i}: {e}"));
                    }
                }
                failures
            })
        })
        .collect();
    let failures: Vec<String> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    assert!(failures.is_empty(), "{failures:#?}");
}

/// A session object that holds secret material for one call (a key agreement's secret, an
/// `envelope` key's material on its way to an export, the ephemeral key of an export, a new
/// tenant KEK's extractable copy) is destroyed before the call returns; where the module
/// fails that destroy, the call fails and the pool closes the session instead of lending it
/// again, which destroys the object with it. Before, the failure was ignored and the
/// material stayed in a pooled session for later requests. The failing destroy is a test
/// hook (`hsm::fail_secret_destroys`, this thread only); the objects carry
/// `hsm::TRANSIENT_ID`, so one left over is found.
#[test]
fn a_transient_secret_that_cannot_be_destroyed_fails_its_call_and_leaves_nothing() {
    use keyplane::error::Error;
    let _turn = in_process_turn();
    let hsm = in_process_hsm();
    let f = fixtures(&hsm, "transient");
    let (n, e) = (&f.recipient.0[..], &f.recipient.1[..]);
    let leftovers = || {
        hsm.find_session_objects(keyplane::hsm::TRANSIENT_ID)
            .unwrap()
            .len()
    };
    type Call<'a> = Box<dyn Fn() -> keyplane::error::Result<()> + 'a>;
    let calls: Vec<(&str, Call)> = vec![
        (
            "ecdh",
            Box::new(|| hsm.ecdh(f.agreement, &f.peer_point, 32).map(drop)),
        ),
        (
            "export of envelope material",
            Box::new(|| {
                hsm.wrap_material_for_recipient(&[7u8; 32], (n, e), transport(false))
                    .map(drop)
            }),
        ),
        (
            "export with an ephemeral key",
            Box::new(|| {
                hsm.wrap_material_for_recipient(&[7u8; 32], (n, e), transport(true))
                    .map(drop)
            }),
        ),
        (
            "tenant KEK",
            Box::new(|| {
                let (_, kek) = hsm.generate_kek()?;
                hsm.release_kek(kek)
            }),
        ),
    ];
    for (what, call) in &calls {
        call().unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(leftovers(), 0, "{what}");
    }
    keyplane::hsm::fail_secret_destroys(true);
    let answers: Vec<_> = calls.iter().map(|(what, call)| (*what, call())).collect();
    keyplane::hsm::fail_secret_destroys(false);
    assert_eq!(leftovers(), 0, "a transient secret outlived its call");
    for (what, answer) in answers {
        assert!(
            matches!(answer, Err(Error::HsmUnavailable)),
            "{what}: {answer:?}"
        );
    }
}

/// An import whose transient key cannot be destroyed fails, and leaves no object of the
/// version in the token either: the private key of a key pair's import (extractable until
/// sealed) and the AES key of an import resealed into the token. Before, the call returned at
/// the failed destroy and left them there under the version's id. The failing destroy is the
/// test hook of the test above.
#[test]
fn an_import_whose_transient_key_cannot_be_destroyed_leaves_no_version_object() {
    use keyplane::algorithms::{KeySpec, KeyUsage};
    use keyplane::error::Error;
    use keyplane::hsm::pair_import::{PairSource, PairTarget};
    use keyplane::hsm::wrapping::{HostKek, UnwrapInto};
    use p256::elliptic_curve::sec1::ToEncodedPoint;
    use p256::pkcs8::EncodePrivateKey;
    let _turn = in_process_turn();
    let hsm = in_process_hsm();
    let f = fixtures(&hsm, "leftover");
    let secret = p256::SecretKey::from_slice(&[0x11; 32]).unwrap();
    let pkcs8 = secret.to_pkcs8_der().unwrap();
    let point = secret
        .public_key()
        .to_encoded_point(false)
        .as_bytes()
        .to_vec();
    let pair_id = keyplane::hsm::version_object_id("leftover-pair", 1);
    let aes_id = keyplane::hsm::version_object_id("leftover-aes", 1);
    let (n, e) = (&f.recipient.0[..], &f.recipient.1[..]);
    let wrapped = hsm
        .wrap_material_for_recipient(&[7u8; 32], (n, e), transport(false))
        .unwrap();
    let import_pair = || {
        let kek = HostKek::new()?;
        let bytes = kek.wrap(pkcs8.as_bytes())?;
        let target = PairTarget {
            id: &pair_id,
            spec: KeySpec::EccNistP256,
            usage: KeyUsage::SignVerify,
            exportable: false,
        };
        hsm.import_key_pair(PairSource::Host { kek, bytes }, target, Some(point.clone()))
            .map(drop)
    };
    let import_aes = || {
        let into = UnwrapInto::Token {
            id: &aes_id,
            len: 32,
            exportable: false,
        };
        hsm.unwrap_import(f.import_key, n.len(), transport(false), &wrapped, into)
            .map(drop)
    };
    keyplane::hsm::fail_secret_destroys(true);
    let answers = [("key pair", import_pair()), ("AES key", import_aes())];
    keyplane::hsm::fail_secret_destroys(false);
    for (what, answer) in &answers {
        assert!(
            matches!(answer, Err(Error::HsmUnavailable)),
            "{what}: {answer:?}"
        );
    }
    for (what, id) in [
        ("the pair's private key", &pair_id),
        ("the AES key", &aes_id),
    ] {
        assert!(
            hsm.find_all(id).unwrap().is_empty(),
            "{what} was left in the token"
        );
    }
    // Without the fault both import: the inputs are good.
    import_pair().unwrap();
    import_aes().unwrap();
    for id in [&pair_id, &aes_id] {
        let made = hsm.find_all(id).unwrap();
        assert!(!made.is_empty());
        for o in made {
            hsm.destroy(o).unwrap();
        }
    }
}

/// On SoftHSM2 every call that makes, finds or destroys an object takes the turn on object
/// calls (`Hsm::call_on_objects`), those that make one only for a moment too: a session copy,
/// a tenant KEK's generation and unwrap, a key agreement, an export's wrap (the recipient's
/// key, a transient key). Each is started while the test holds the turn and must wait for it;
/// a call that only uses existing objects (AES-GCM) goes on meanwhile. Before, those calls ran
/// beside the others and failed now and then (the race test above).
#[test]
fn calls_that_make_or_find_objects_wait_for_the_turn() {
    use keyplane::algorithms::public_key::PublicParts;
    use keyplane::algorithms::{KeySpec, KeyUsage};
    use keyplane::hsm::Hsm;
    use std::sync::Arc;
    use std::time::Duration;

    // Each makes one call (a result to clean up after is handed back): a call made of two
    // would wait for the second's turn even if the first took none.
    type Call = Box<dyn Fn(&Hsm) -> keyplane::error::Result<Option<keyplane::hsm::Obj>> + Send>;
    let _turn = in_process_turn();
    let hsm = in_process_hsm();
    let f = Arc::new(fixtures(&hsm, "turn"));
    let id = |n| keyplane::hsm::version_object_id("turn", n);
    let (key, _) = hsm.generate_token_aes_key_with(&id(10), 32, true).unwrap();
    let (stored, kek) = hsm.generate_kek().unwrap();
    let dh_pair = |n| {
        let spec = (KeySpec::Ffdhe2048, KeyUsage::KeyAgreement);
        hsm.generate_version_objects(&id(n), "turn", spec, false)
            .unwrap()
            .0
    };
    let (dh_ours, dh_theirs) = (dh_pair(11), dh_pair(12));
    let PublicParts::Dh(y) = hsm.public_parts(dh_theirs[0], KeySpec::Ffdhe2048).unwrap() else {
        panic!("not a DH public key");
    };
    let group = KeySpec::Ffdhe2048.dh_group().unwrap();

    let waits: Vec<(&str, Call)> = vec![
        (
            "session copy",
            Box::new(move |h| h.session_copy(key).map(Some)),
        ),
        (
            "tenant KEK",
            Box::new(|h| h.generate_kek().map(|(_, k)| Some(k))),
        ),
        (
            "tenant KEK unwrap",
            Box::new(move |h| h.unwrap_kek(&stored).map(Some)),
        ),
        ("ecdh", {
            let f = f.clone();
            Box::new(move |h| h.ecdh(f.agreement, &f.peer_point, 32).map(|_| None))
        }),
        (
            "dh",
            Box::new(move |h| h.dh(dh_ours[1], group, &y).map(|_| None)),
        ),
        ("export of an hsm key", {
            let f = f.clone();
            Box::new(move |h| {
                let (n, e) = &f.recipient;
                h.wrap_for_recipient(key, n, e, transport(true))
                    .map(|_| None)
            })
        }),
        ("export of envelope material", {
            let f = f.clone();
            Box::new(move |h| {
                let (n, e) = &f.recipient;
                h.wrap_material_for_recipient(&[7u8; 32], (n, e), transport(false))
                    .map(|_| None)
            })
        }),
    ];
    let run = |call: Call| {
        let (tx, rx) = std::sync::mpsc::channel();
        let hsm = hsm.clone();
        std::thread::spawn(move || tx.send(call(&hsm)).unwrap());
        rx
    };
    let mut went_on = Vec::new();
    for (what, call) in waits {
        let held = hsm.hold_object_turn();
        let done = run(call);
        let waited = done.recv_timeout(Duration::from_millis(300)).is_err();
        drop(held);
        if !waited {
            went_on.push(what);
            continue;
        }
        match done.recv_timeout(Duration::from_secs(30)) {
            Ok(Ok(made)) => {
                if let Some(made) = made {
                    hsm.destroy_if_present(made).unwrap();
                }
            }
            answer => panic!("{what}: {answer:?}"),
        }
    }
    assert!(
        went_on.is_empty(),
        "did not wait for the turn on object calls: {went_on:?}"
    );
    // A cryptographic call with existing objects goes on while the turn is held.
    let held = hsm.hold_object_turn();
    let done = run(Box::new(move |h| {
        h.gcm_encrypt(key, &[0u8; 12], b"", b"goes on")
            .map(|_| None)
    }));
    let answer = done.recv_timeout(Duration::from_secs(30));
    drop(held);
    assert!(matches!(answer, Ok(Ok(None))), "aes-gcm: {answer:?}");
    hsm.release_kek(kek).unwrap();
}

/// An import wrapping key does nothing but unwrap with RSA-OAEP, and nobody can change that:
/// otherwise the user PIN could set `CKA_DECRYPT` on it (or on a copy) and decrypt an
/// importer's wrapped material, as SoftHSM2 allows on a modifiable key (`hsm::key_policy`).
#[test]
fn an_import_wrapping_key_cannot_be_made_to_decrypt() {
    let _turn = in_process_turn();
    let hsm = in_process_hsm();
    let (key, _, _) = hsm
        .generate_import_key_pair(b"kp-import:probe", 2048)
        .unwrap();
    let answers = hsm.probe_import_key(key).unwrap();
    assert_eq!(answers.len(), 3, "{answers:?}");
    for (attempt, answer) in &answers {
        assert!(
            !matches!(answer.as_str(), "SET" | "COPIED" | "DECRYPTED"),
            "{attempt}: {answer}"
        );
    }
    hsm.destroy(key).unwrap();
}
