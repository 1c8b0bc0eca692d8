//! The crash test: randomized lifecycle operations (hsm, envelope, plugin-backed and imported
//! keys; encrypt, decrypt, rotate, revoke, approve and schedule deletion, cancel it, destroy
//! through the clock) run on a real node while a killer sends it SIGKILL at random moments.
//! After every kill the data directory is checked with the node down, and again once it has
//! restarted:
//! - `keyplane audit verify` passes, and every acknowledged operation has its record;
//! - after `keyplane gc --apply`, no token object or blob is left that no row references
//!   (checked independently: `pkcs11-tool` and the kv table against the rows);
//! - no version of a live key points at material that is missing;
//! - every ciphertext whose encrypt was acknowledged decrypts to its plaintext (or, under a
//!   revoked version, rewraps), unless a deletion of its key was asked for; a destroyed key
//!   says so (`410`), and only keys whose deletion was asked for are pending deletion,
//!   destroying or destroyed.
//!
//! `KEYPLANE_CRASH_OPS` (default 300), `KEYPLANE_CRASH_KILLS` (default 20) and
//! `KEYPLANE_CRASH_SEED` (default: the time) set the run; the seed is printed, and replays the
//! same choices (the kill moments depend on timing too). `scripts/crash-test --ops 5000` runs a
//! long one with a progress bar on a terminal.
#![cfg(all(feature = "test-hooks", debug_assertions))]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use common::{b64, unb64, wasm, Server};

/// splitmix64: small, seedable, good enough to choose operations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Whose key it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Owner {
    /// The operator's tenant (`default`): hsm, envelope and imported keys.
    Operator,
    /// A tenant whose envelope blobs live in the `kv` storage plugin.
    Plugin,
}

#[derive(Debug, Clone)]
struct KeyModel {
    owner: Owner,
    external: bool,
    /// A deletion was asked for (answered or not): only then may the key be pending deletion,
    /// destroying or destroyed.
    deletion_asked: bool,
    /// Highest primary version an answer reported.
    max_version: i64,
}

struct Ciphertext {
    key: String,
    blob: Vec<u8>,
    plaintext: Vec<u8>,
}

#[derive(Default)]
struct Model {
    keys: BTreeMap<String, KeyModel>,
    ciphertexts: Vec<Ciphertext>,
    /// Request ids of answered (2xx) requests.
    acknowledged: Vec<String>,
    /// Per operation: answered, refused (4xx), lost (no answer: the node died).
    counts: BTreeMap<&'static str, [usize; 3]>,
}

/// Credentials that survive restarts.
#[derive(Clone)]
struct Who {
    operator: String,
    operator_id: String,
    operator_approver: String,
    tenant: String,
    tenant_id: String,
    tenant_approver: String,
}

impl Who {
    fn token(&self, owner: Owner) -> &str {
        match owner {
            Owner::Operator => &self.operator,
            Owner::Plugin => &self.tenant,
        }
    }
    fn approver(&self, owner: Owner) -> (&str, &str) {
        match owner {
            Owner::Operator => (&self.operator_approver, &self.operator_id),
            Owner::Plugin => (&self.tenant_approver, &self.tenant_id),
        }
    }
}

/// One request to a node that may die under it.
#[derive(Clone)]
struct Client {
    http: reqwest::Client,
    base: String,
}

enum Outcome {
    Answer(u16, Value, String),
    Lost,
}

impl Client {
    async fn call(&self, token: &str, op: &str, body: Value) -> Outcome {
        let resp = self
            .http
            .post(format!("{}/v1/{op}", self.base))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await;
        let Ok(resp) = resp else {
            return Outcome::Lost;
        };
        let status = resp.status().as_u16();
        let rid = resp
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        match resp.json().await {
            Ok(v) => Outcome::Answer(status, v, rid),
            Err(_) => Outcome::Lost,
        }
    }

    async fn debug(&self, token: &str, hook: &str, body: Value) -> Option<Value> {
        let r = self
            .http
            .post(format!("{}/debug/{hook}", self.base))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .ok()?;
        r.json().await.ok()
    }
}

/// Count an outcome; a server error is a failure of the test. Returns the answer if 2xx.
fn record(model: &Mutex<Model>, op: &'static str, outcome: Outcome) -> Option<Value> {
    let mut m = model.lock().unwrap();
    let slot = m.counts.entry(op).or_default();
    match outcome {
        Outcome::Answer(status, v, rid) if (200..300).contains(&status) => {
            slot[0] += 1;
            m.acknowledged.push(rid);
            Some(v)
        }
        Outcome::Answer(status, v, _) => {
            assert!(status < 500, "{op} answered {status}: {v}");
            slot[1] += 1;
            None
        }
        Outcome::Lost => {
            slot[2] += 1;
            None
        }
    }
}

/// RSA-OAEP (SHA-1) of `data` to `public_pem`, by openssl (as a BYOK tool would).
fn oaep_wrap(dir: &Path, public_pem: &str, data: &[u8]) -> Vec<u8> {
    let n = uuid_like();
    let pk = dir.join(format!("pub-{n}.pem"));
    let input = dir.join(format!("in-{n}.bin"));
    std::fs::write(&pk, public_pem).unwrap();
    std::fs::write(&input, data).unwrap();
    let out = std::process::Command::new("openssl")
        .args(["pkeyutl", "-encrypt", "-pubin", "-inkey"])
        .arg(&pk)
        .args([
            "-pkeyopt",
            "rsa_padding_mode:oaep",
            "-pkeyopt",
            "rsa_oaep_md:sha1",
            "-in",
        ])
        .arg(&input)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn uuid_like() -> String {
    common::uuid_like()
}

/// A key of the model to act on (`None` if there is none yet).
fn pick(
    model: &Mutex<Model>,
    rng: &mut Rng,
    filter: impl Fn(&KeyModel) -> bool,
) -> Option<(String, KeyModel)> {
    let m = model.lock().unwrap();
    let keys: Vec<_> = m.keys.iter().filter(|(_, k)| filter(k)).collect();
    if keys.is_empty() {
        return None;
    }
    let (id, k) = keys[rng.below(keys.len() as u64) as usize];
    Some((id.clone(), k.clone()))
}

/// One randomized operation.
async fn one_op(c: &Client, who: &Who, model: &Mutex<Model>, rng: &mut Rng, work: &Path) {
    let roll = rng.below(100);
    match roll {
        0..=34 => {
            let Some((key, k)) = pick(model, rng, |k| !k.deletion_asked) else {
                return;
            };
            let len = 1 + rng.below(64) as usize;
            let plaintext = rng.bytes(len);
            let body = json!({ "key_id": key, "plaintext": b64(&plaintext) });
            if let Some(v) = record(
                model,
                "encrypt",
                c.call(who.token(k.owner), "encrypt", body).await,
            ) {
                model.lock().unwrap().ciphertexts.push(Ciphertext {
                    key,
                    blob: unb64(&v["ciphertext_blob"]),
                    plaintext,
                });
            }
        }
        35..=44 => {
            let found = {
                let m = model.lock().unwrap();
                if m.ciphertexts.is_empty() {
                    None
                } else {
                    let ct = &m.ciphertexts[rng.below(m.ciphertexts.len() as u64) as usize];
                    m.keys
                        .get(&ct.key)
                        .filter(|k| !k.deletion_asked)
                        .map(|k| (k.owner, ct.blob.clone(), ct.plaintext.clone()))
                }
            };
            if let Some((owner, blob, plaintext)) = found {
                let body = json!({ "ciphertext_blob": b64(&blob) });
                if let Some(v) = record(
                    model,
                    "decrypt",
                    c.call(who.token(owner), "decrypt", body).await,
                ) {
                    assert_eq!(
                        unb64(&v["plaintext"]),
                        plaintext,
                        "a decrypt answered another plaintext"
                    );
                }
            }
        }
        45..=59 => create_key(c, who, model, rng, work).await,
        60..=71 => {
            let Some((key, k)) = pick(model, rng, |k| !k.external && !k.deletion_asked) else {
                return;
            };
            let out = c
                .call(who.token(k.owner), "rotate-key", json!({ "key_id": key }))
                .await;
            if let Some(v) = record(model, "rotate-key", out) {
                if let Some(k) = model.lock().unwrap().keys.get_mut(&key) {
                    k.max_version = k
                        .max_version
                        .max(v["primary_version"].as_i64().unwrap_or(1));
                }
            }
        }
        72..=77 => {
            let Some((key, k)) = pick(model, rng, |k| k.max_version >= 2 && !k.deletion_asked)
            else {
                return;
            };
            let version = 1 + rng.below((k.max_version - 1) as u64) as i64;
            let body = json!({ "key_id": key, "version": version, "reason": "crash test" });
            record(
                model,
                "revoke-key-version",
                c.call(who.token(k.owner), "revoke-key-version", body).await,
            );
        }
        78..=85 => {
            let Some((key, k)) = pick(model, rng, |k| !k.deletion_asked) else {
                return;
            };
            let (approver, requester) = who.approver(k.owner);
            let body = json!({ "key_id": key, "requester": requester });
            let approved = c.call(approver, "approve-key-deletion", body).await;
            if record(model, "approve-key-deletion", approved).is_none() {
                return;
            }
            if let Some(k) = model.lock().unwrap().keys.get_mut(&key) {
                k.deletion_asked = true;
            }
            let body = json!({ "key_id": key, "pending_window_days": 7 });
            record(
                model,
                "schedule-key-deletion",
                c.call(who.token(k.owner), "schedule-key-deletion", body)
                    .await,
            );
        }
        86..=94 => {
            let Some((key, k)) = pick(model, rng, |k| k.deletion_asked) else {
                return;
            };
            let body = json!({ "key_id": key });
            let out = c
                .call(who.token(k.owner), "cancel-key-deletion", body.clone())
                .await;
            if record(model, "cancel-key-deletion", out).is_some() {
                record(
                    model,
                    "enable-key",
                    c.call(who.token(k.owner), "enable-key", body).await,
                );
            }
        }
        95..=97 => destroy_through_the_clock(c, who, model).await,
        _ => {
            let Some((key, k)) = pick(model, rng, |_| true) else {
                return;
            };
            let out = c
                .call(
                    who.token(k.owner),
                    "list-key-versions",
                    json!({ "key_id": key }),
                )
                .await;
            record(model, "list-key-versions", out);
        }
    }
}

async fn create_key(c: &Client, who: &Who, model: &Mutex<Model>, rng: &mut Rng, work: &Path) {
    let (owner, body, external) = match rng.below(10) {
        0..=2 => (Owner::Operator, json!({ "protection": "hsm" }), false),
        3..=5 => (Owner::Operator, json!({ "protection": "envelope" }), false),
        6..=8 => (Owner::Plugin, json!({ "protection": "envelope" }), false),
        _ => {
            let protection = if rng.below(2) == 0 { "hsm" } else { "envelope" };
            (
                Owner::Operator,
                json!({ "protection": protection, "origin": "external" }),
                true,
            )
        }
    };
    let token = who.token(owner).to_string();
    let Some(v) = record(
        model,
        "create-key",
        c.call(&token, "create-key", body).await,
    ) else {
        return;
    };
    let key = v["key_id"].as_str().unwrap().to_string();
    model.lock().unwrap().keys.insert(
        key.clone(),
        KeyModel {
            owner,
            external,
            deletion_asked: false,
            max_version: 1,
        },
    );
    if external {
        let body = json!({ "key_id": key, "wrapping_algorithm": "RSAES_OAEP_SHA_1", "wrapping_key_spec": "RSA_2048" });
        let out = c.call(&token, "get-parameters-for-import", body).await;
        let Some(p) = record(model, "get-parameters-for-import", out) else {
            return;
        };
        let wrapped = oaep_wrap(work, p["public_key_pem"].as_str().unwrap(), &rng.bytes(32));
        let body = json!({ "key_id": key, "import_token": p["import_token"], "encrypted_key_material": b64(&wrapped) });
        record(
            model,
            "import-key-material",
            c.call(&token, "import-key-material", body).await,
        );
    }
}

/// Move the service clock past every pending deletion and run the scheduler, which destroys
/// those keys.
async fn destroy_through_the_clock(c: &Client, who: &Who, model: &Mutex<Model>) {
    let Some(now) = c
        .debug(&who.operator, "clock", json!({ "advance_seconds": 0 }))
        .await
        .and_then(|v| v["now"].as_i64())
    else {
        return;
    };
    let latest = max_pending_deletion(c).await;
    if let Some(latest) = latest {
        if latest >= now {
            c.debug(
                &who.operator,
                "clock",
                json!({ "advance_seconds": latest - now + 1 }),
            )
            .await;
        }
    }
    record(
        model,
        "run-scheduler",
        c.call(&who.operator, "run-scheduler", json!({})).await,
    );
}

/// The latest deletion date of a key pending deletion, read from the database.
async fn max_pending_deletion(_c: &Client) -> Option<i64> {
    let db = DB.lock().unwrap().clone()?;
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}?mode=ro", db.display()))
        .await
        .ok()?;
    let latest: Option<i64> =
        sqlx::query_scalar("SELECT MAX(deletion_date) FROM keys WHERE state = 'pending-deletion'")
            .fetch_one(&pool)
            .await
            .ok()?;
    pool.close().await;
    latest
}

/// The database file of the run (read by `max_pending_deletion`).
static DB: Mutex<Option<std::path::PathBuf>> = Mutex::new(None);

fn run(cmd: &mut std::process::Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{:?}: {} {}",
        cmd,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The `CKA_ID`s (hex) of the token's objects whose label is keyplane's (`kp:`, `kp-import:`),
/// listed by OpenSC's pkcs11-tool (the node is down).
fn token_object_ids(data: &Path) -> BTreeSet<String> {
    let pin = std::fs::read_to_string(data.join("hsm.pin")).unwrap();
    let listing = run(std::process::Command::new("pkcs11-tool")
        .env("SOFTHSM2_CONF", data.join("softhsm/softhsm2.conf"))
        .args([
            "--module",
            "/usr/lib/softhsm/libsofthsm2.so",
            "--token-label",
            "keyplane",
        ])
        .args(["--login", "--pin", pin.trim(), "--list-objects"]));
    let mut ids = BTreeSet::new();
    let mut label = String::new();
    for line in listing.lines().map(str::trim) {
        if let Some(l) = line.strip_prefix("label:") {
            label = l.trim().to_string();
        } else if let Some(id) = line.strip_prefix("ID:") {
            if label.starts_with("kp:") || label.starts_with("kp-import:") {
                ids.insert(id.trim().to_lowercase());
            }
        }
    }
    ids
}

/// A version of a key in use, and where its material is: (key, version, key state, object
/// id in hex, blob name, inline wrapped material).
type VersionMaterial = (String, i64, String, Option<String>, Option<String>, bool);

/// With the node down: the audit log verifies and holds every acknowledged request; garbage
/// collection leaves nothing unreferenced; no live version points at missing material.
async fn check_offline(data: &Path, model: &Mutex<Model>) -> (usize, usize) {
    let bin = common::BIN;
    run(std::process::Command::new(bin)
        .args(["audit", "verify", "--data-dir"])
        .arg(data));
    let url = format!("sqlite://{}?mode=ro", data.join("keyplane.db").display());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    let recorded: BTreeSet<String> =
        sqlx::query_scalar("SELECT request_id FROM audit_log WHERE outcome = 'ok'")
            .fetch_all(&pool)
            .await
            .unwrap()
            .into_iter()
            .collect();
    {
        let m = model.lock().unwrap();
        for rid in &m.acknowledged {
            assert!(
                recorded.contains(rid),
                "acknowledged request {rid} has no record"
            );
        }
    }
    pool.close().await;

    let gc = run(std::process::Command::new(bin)
        .args([
            "gc",
            "--apply",
            "--grace-seconds",
            "0",
            "--all-nodes-stopped",
            "--data-dir",
        ])
        .arg(data)
        .env("RUST_LOG", "warn"));
    let removed = gc
        .lines()
        .filter(|l| l.starts_with("removed HSM object") || l.starts_with("removed blob"))
        .count();

    let ids = token_object_ids(data);
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    let referenced: BTreeSet<String> = sqlx::query_scalar(
        "SELECT lower(hex(hsm_object_id)) FROM key_versions WHERE hsm_object_id IS NOT NULL \
         UNION SELECT lower(hex(hsm_object_id)) FROM import_tokens",
    )
    .fetch_all(&pool)
    .await
    .unwrap()
    .into_iter()
    .collect();
    let unreferenced: Vec<_> = ids.difference(&referenced).collect();
    assert!(
        unreferenced.is_empty(),
        "token objects no row references: {unreferenced:?}"
    );
    let blobs: BTreeSet<String> =
        sqlx::query_scalar("SELECT key FROM plugin_kv WHERE key LIKE 'tenants/%/keys/%'")
            .fetch_all(&pool)
            .await
            .unwrap()
            .into_iter()
            .collect();
    let named: BTreeSet<String> = sqlx::query_scalar(
        "SELECT 'tenants/' || k.tenant_id || '/' || coalesce(v.blob_name, 'keys/' || v.key_id || '/' || v.version) \
         FROM key_versions v JOIN keys k ON k.id = v.key_id WHERE v.blob_store IS NOT NULL",
    )
    .fetch_all(&pool)
    .await
    .unwrap()
    .into_iter()
    .collect();
    let orphans: Vec<_> = blobs.difference(&named).collect();
    assert!(orphans.is_empty(), "blobs no row references: {orphans:?}");

    // Every version of a key in use points at material that is there.
    let versions: Vec<VersionMaterial> = sqlx::query_as(
        "SELECT v.key_id, v.version, k.state, \
         CASE WHEN v.hsm_object_id IS NULL THEN NULL ELSE lower(hex(v.hsm_object_id)) END, \
         CASE WHEN v.blob_store IS NULL THEN NULL ELSE 'tenants/' || k.tenant_id || '/' || \
         coalesce(v.blob_name, 'keys/' || v.key_id || '/' || v.version) END, \
         v.wrapped_material IS NOT NULL \
         FROM key_versions v JOIN keys k ON k.id = v.key_id \
         WHERE k.state IN ('enabled', 'disabled', 'pending-deletion') AND v.state != 'pending-import'",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    for (key, v, state, object, blob, inline) in &versions {
        let present = match (object, blob) {
            (Some(id), _) => ids.contains(id),
            (None, Some(name)) => blobs.contains(name),
            (None, None) => *inline,
        };
        assert!(
            present,
            "version {v} of {state} key {key} points at missing material (object {object:?}, \
             blob {blob:?}, inline {inline}); objects {ids:?}"
        );
    }
    pool.close().await;
    (removed, versions.len())
}

/// With the node up: the states of the model's keys, and every acknowledged ciphertext.
/// Ciphertexts checked after a restart: all of them up to this many, else a sample this large
/// (a long run would otherwise spend its time re-reading old ones); the last check reads all.
const CIPHERTEXTS_PER_CHECK: usize = 400;

async fn check_online(
    s: &Server,
    c: &Client,
    who: &Who,
    model: &Mutex<Model>,
    sample: Option<&mut Rng>,
) -> usize {
    // Keys whose creation was never answered are there or not; the listing brings them in.
    for owner in [Owner::Operator, Owner::Plugin] {
        let mut next: Option<String> = None;
        loop {
            let mut body = json!({ "limit": 1000 });
            if let Some(t) = &next {
                body["next_token"] = json!(t);
            }
            let page = s.ok(who.token(owner), "list-keys", body).await;
            for k in page["keys"].as_array().unwrap() {
                let id = k["key_id"].as_str().unwrap().to_string();
                model.lock().unwrap().keys.entry(id).or_insert(KeyModel {
                    owner,
                    external: k["origin"] == "external",
                    // Unanswered: a deletion may have been asked for in the same life.
                    deletion_asked: false,
                    max_version: 1,
                });
            }
            match page["next_token"].as_str() {
                Some(t) => next = Some(t.to_string()),
                None => break,
            }
        }
    }
    let keys: Vec<(String, KeyModel)> = model
        .lock()
        .unwrap()
        .keys
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut states = BTreeMap::new();
    for (key, k) in &keys {
        let d = s
            .ok(who.token(k.owner), "describe-key", json!({ "key_id": key }))
            .await;
        let state = d["state"].as_str().unwrap().to_string();
        if matches!(
            state.as_str(),
            "pending-deletion" | "destroying" | "destroyed"
        ) {
            assert!(
                k.deletion_asked,
                "key {key} is {state}, but its deletion was never asked for"
            );
        }
        if state == "disabled" {
            // Left disabled by a cancel whose enable did not come (the node died).
            s.ok(who.token(k.owner), "enable-key", json!({ "key_id": key }))
                .await;
        }
        states.insert(key.clone(), state);
    }
    let mut cts: Vec<(String, Vec<u8>, Vec<u8>)> = model
        .lock()
        .unwrap()
        .ciphertexts
        .iter()
        .map(|c| (c.key.clone(), c.blob.clone(), c.plaintext.clone()))
        .collect();
    if let Some(rng) = sample {
        while cts.len() > CIPHERTEXTS_PER_CHECK {
            let i = rng.below(cts.len() as u64) as usize;
            cts.swap_remove(i);
        }
    }
    let mut verified = 0;
    for (key, blob, plaintext) in cts {
        let k = keys.iter().find(|(id, _)| *id == key).unwrap().1.clone();
        let token = who.token(k.owner);
        match states[&key].as_str() {
            "destroyed" => {
                let (status, v) = s
                    .call(
                        Some(token),
                        "decrypt",
                        json!({ "ciphertext_blob": b64(&blob) }),
                    )
                    .await;
                assert_eq!(status, 410, "{v}");
            }
            "enabled" | "disabled" => {
                let (status, v) = s
                    .call(
                        Some(token),
                        "decrypt",
                        json!({ "ciphertext_blob": b64(&blob) }),
                    )
                    .await;
                if status == 409
                    && v["error"]["message"]
                        .as_str()
                        .unwrap_or("")
                        .contains("compromised")
                {
                    let (status, v) = s
                        .call(
                            Some(token),
                            "rewrap",
                            json!({ "ciphertext_blob": b64(&blob) }),
                        )
                        .await;
                    assert_eq!(
                        status, 200,
                        "a ciphertext under a revoked version of {key} no longer rewraps: {v}"
                    );
                } else {
                    assert_eq!(
                        status, 200,
                        "an acknowledged ciphertext of {key} no longer decrypts: {v}"
                    );
                    assert_eq!(unb64(&v["plaintext"]), plaintext);
                }
                verified += 1;
            }
            // Pending deletion or destroying: its deletion was asked for (checked above).
            _ => {}
        }
    }
    let _ = c;
    verified
}

#[tokio::test(flavor = "multi_thread")]
async fn acknowledged_work_survives_random_kills() {
    let target_ops = env_or("KEYPLANE_CRASH_OPS", 300) as usize;
    let min_kills = env_or("KEYPLANE_CRASH_KILLS", 20) as usize;
    let seed = env_or(
        "KEYPLANE_CRASH_SEED",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
    );
    eprintln!("crash test: seed {seed} (KEYPLANE_CRASH_SEED={seed} replays its choices), {target_ops} operations, at least {min_kills} kills");
    let started = Instant::now();
    let mut master = Rng(seed);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    *DB.lock().unwrap() = Some(data.join("keyplane.db"));
    let env = [
        ("RUST_LOG", "error"),
        ("KEYPLANE_LIFECYCLE__SCHEDULER_INTERVAL_SECONDS", "0"),
        ("KEYPLANE_LIFECYCLE__GC_INTERVAL_SECONDS", "0"),
    ];
    let model = Arc::new(Mutex::new(Model::default()));
    let ops_done = Arc::new(AtomicUsize::new(0));
    let bar = indicatif::ProgressBar::new(target_ops as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} operations, {msg}")
            .expect("static template"),
    );
    let mut who: Option<Who> = None;
    let (mut kills, mut collected, mut verified, mut checked_versions) =
        (0usize, 0usize, 0usize, 0usize);
    loop {
        if kills > 0 {
            let (removed, versions) = check_offline(&data, &model).await;
            collected += removed;
            checked_versions += versions;
        }
        let s = Arc::new(Server::start_with_env(&data, &env).await);
        let c = Client {
            http: s.client.clone(),
            base: s.base.clone(),
        };
        let who = match &who {
            Some(w) => w.clone(),
            None => {
                let w = set_up(&s).await;
                who = Some(w.clone());
                w
            }
        };
        // The service clock starts again from the system's: move it past leases and deletion
        // dates a killed run left in its future.
        let pool = s.sql().await;
        let ahead: Option<i64> = sqlx::query_scalar("SELECT MAX(expires_at) FROM leases")
            .fetch_one(&pool)
            .await
            .unwrap();
        if let Some(t) = ahead {
            let now = s.advance_clock(0).await;
            if t >= now {
                s.advance_clock(t - now + 1).await;
            }
        }
        verified += check_online(&s, &c, &who, &model, Some(&mut master)).await;

        if ops_done.load(Ordering::SeqCst) >= target_ops && kills >= min_kills {
            // A last pass destroys what is due, and a clean stop leaves a verifiable log.
            destroy_through_the_clock(&c, &who, &model).await;
            verified += check_online(&s, &c, &who, &model, None).await;
            let mut s = Arc::into_inner(s).expect("no worker holds the node");
            s.stop();
            let (removed, versions) = check_offline(&data, &model).await;
            collected += removed;
            checked_versions += versions;
            break;
        }

        // Workers run operations until the node dies under them.
        let stop = Arc::new(AtomicBool::new(false));
        let mut workers = Vec::new();
        for _ in 0..3 {
            let (c, who, model, stop, ops_done, work, bar) = (
                c.clone(),
                who.clone(),
                model.clone(),
                stop.clone(),
                ops_done.clone(),
                work.clone(),
                bar.clone(),
            );
            let mut rng = Rng(master.next());
            workers.push(tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    one_op(&c, &who, &model, &mut rng, &work).await;
                    ops_done.fetch_add(1, Ordering::SeqCst);
                    bar.inc(1);
                }
            }));
        }
        let delay = Duration::from_millis(30 + master.below(470));
        tokio::time::sleep(delay).await;
        // SAFETY: a signal to the child process this test started.
        unsafe {
            libc::kill(s.pid() as i32, libc::SIGKILL);
        }
        stop.store(true, Ordering::SeqCst);
        for w in workers {
            w.await.unwrap();
        }
        kills += 1;
        bar.set_message(format!("{kills} kills"));
        let mut s = Arc::into_inner(s).expect("workers are done");
        s.kill();
    }
    bar.finish_and_clear();
    let m = model.lock().unwrap();
    eprintln!(
        "crash test: seed {seed}: {} operations, {kills} kills in {:?}; {} keys, {} ciphertexts \
         verified {verified} times, {checked_versions} version checks, {collected} orphans collected",
        ops_done.load(Ordering::SeqCst),
        started.elapsed(),
        m.keys.len(),
        m.ciphertexts.len(),
    );
    for (op, [answered, refused, lost]) in &m.counts {
        eprintln!("  {op:28} answered {answered:5}  refused {refused:5}  lost {lost:5}");
    }
    assert!(kills >= min_kills);
    assert!(ops_done.load(Ordering::SeqCst) >= target_ops);
}

/// A second tenant whose blobs go to the kv plugin, and a second admin in each tenant for
/// deletion approvals.
async fn set_up(s: &Server) -> Who {
    let (tenant_id, tenant) = s.tenant_with_admin("crash").await;
    let component = b64(&wasm("storage-kv"));
    s.ok(
        &tenant,
        "upload-plugin",
        json!({ "name": "kv", "world": "storage-backend", "component": component }),
    )
    .await;
    s.ok(&tenant, "set-storage-backend", json!({ "plugin": "kv" }))
        .await;
    Who {
        operator: s.admin.clone(),
        operator_id: s.principal_id(&s.admin).await,
        operator_approver: s.second_admin("default").await,
        tenant,
        tenant_id,
        tenant_approver: s.second_admin("crash").await,
    }
}
