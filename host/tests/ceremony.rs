//! The key ceremony between two real nodes (real processes, each with its own SoftHSM2 token):
//! node A's root key reaches node B's token wrapped by B's transport key, and B, started on a
//! copy of A's database, opens what A sealed. Refusals: a tampered export, a second import, an
//! export for another transport key, B serving before the import, and a root key made before
//! the ceremony existed (non-extractable). The token's own rules the design rests on
//! (`CKA_WRAP_WITH_TRUSTED`, `CKA_TRUSTED` for the SO only) are checked against SoftHSM2, and
//! so is the joining side: with B's user PIN and the export, the root key cannot be unwrapped
//! into anything readable nor the export decrypted (`hsm::key_policy`).

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use common::{assert_absent_under, token_labels, token_objects, Server, BIN};
use serde_json::{json, Value};

const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
/// Nodes that take part in the ceremony make (and import) their root key exportable.
const EXPORTABLE: (&str, &str) = ("KEYPLANE_HSM__ROOT_KEY_EXPORTABLE", "true");

/// `keyplane hsm <args> --data-dir <dir>`.
fn hsm(dir: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("hsm")
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .env("RUST_LOG", "warn")
        .env(EXPORTABLE.0, EXPORTABLE.1)
        .env_remove("KEYPLANE_HSM_PIN")
        .env_remove("KEYPLANE_HSM_SO_PIN")
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn ok(out: Output) -> String {
    assert!(out.status.success(), "{}", text(&out));
    text(&out)
}

fn refused(out: Output, part: &str) {
    assert!(!out.status.success(), "not refused: {}", text(&out));
    assert!(text(&out).contains(part), "{}", text(&out));
}

/// The SQLite database of `from`, copied to `to` (the node is stopped).
fn copy_database(from: &Path, to: &Path) {
    for name in ["keyplane.db", "keyplane.db-wal", "keyplane.db-shm"] {
        if from.join(name).exists() {
            std::fs::copy(from.join(name), to.join(name)).unwrap();
        }
    }
}

/// The ceremony's audit records in the data dir's database: (action, outcome).
async fn ceremony_records(data: &Path) -> Vec<(String, String)> {
    let url = format!("sqlite://{}?mode=ro", data.join("keyplane.db").display());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    let rows: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT action, outcome, decision FROM audit_log WHERE principal = 'keyplane:ceremony' ORDER BY seq",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    pool.close().await;
    rows.into_iter()
        .map(|(a, o, d)| {
            assert_eq!(d, "system");
            (a, o)
        })
        .collect()
}

/// `keyplane serve` on `data`, which must exit on its own (within 30 s) with an error.
fn serve_fails(data: &Path) -> String {
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data)
        .arg("--policies-dir")
        .arg(common::policies_dir())
        .env_remove("KEYPLANE_HSM_PIN")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("keyplane serve kept running");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    text(&out)
}

/// The export with one byte of `field` (base64 or hex) changed.
fn tampered(export: &Value, field: &str) -> Value {
    let mut t = export.clone();
    let s = t[field].as_str().unwrap();
    let changed = if field == "wrapped_root_key" {
        let mut b = STANDARD.decode(s).unwrap();
        b[100] ^= 1;
        STANDARD.encode(b)
    } else {
        let mut b = hex::decode(s).unwrap();
        b[0] ^= 1;
        hex::encode(b)
    };
    t[field] = Value::String(changed);
    t
}

/// Environment of [`transport_key_attack`]'s child: the joining node's data dir, and the
/// export to attack.
const ATTACK_DATA: &str = "KEYPLANE_TEST_ATTACK_DATA";
const ATTACK_EXPORT: &str = "KEYPLANE_TEST_ATTACK_EXPORT";

/// What someone with the joining node's user PIN and the export file gets from B's token
/// while its transport key is there, trying each way the PKCS#11 API offers: (attempt,
/// answer), where `READ`, `UNWRAPPED`, `SET`, `COPIED` and `DECRYPTED` are successes. Runs
/// in a child process of this test binary ([`transport_key_attack_child`]): SoftHSM2 takes
/// its configuration (B's token directory) from the environment of the process that loads
/// it, and this process's other tests run at the same time.
fn transport_key_attack(data: &Path, export: &Path) -> Vec<(String, String)> {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "transport_key_attack_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("SOFTHSM2_CONF", data.join("softhsm/softhsm2.conf"))
        .env(ATTACK_DATA, data)
        .env(ATTACK_EXPORT, export)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        // The harness prints the test's name on the same line.
        .find_map(|l| l.split_once("ATTACK ").map(|(_, answer)| answer))
        .unwrap_or_else(|| panic!("no answer from the child: {}", text(&out)));
    let answers: serde_json::Map<String, Value> = serde_json::from_str(line).unwrap();
    answers
        .into_iter()
        .map(|(k, v)| (k, v.as_str().unwrap().to_string()))
        .collect()
}

/// The child of [`transport_key_attack`]; outside it (its environment unset) it does nothing.
#[test]
fn transport_key_attack_child() {
    use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
    use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsOaepParams, PkcsOaepSource};
    use cryptoki::mechanism::{Mechanism, MechanismType};
    use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass};
    use cryptoki::session::UserType;
    use cryptoki::types::AuthPin;

    let (Ok(data), Ok(export)) = (std::env::var(ATTACK_DATA), std::env::var(ATTACK_EXPORT)) else {
        return;
    };
    let export: Value = serde_json::from_slice(&std::fs::read(export).unwrap()).unwrap();
    let wrapped = STANDARD
        .decode(export["wrapped_root_key"].as_str().unwrap())
        .unwrap();
    let (hash, mgf) = match export["oaep_hash"].as_str().unwrap() {
        "SHA-1" => (MechanismType::SHA1, PkcsMgfType::MGF1_SHA1),
        _ => (MechanismType::SHA256, PkcsMgfType::MGF1_SHA256),
    };
    let oaep = Mechanism::RsaPkcsOaep(PkcsOaepParams::new(hash, mgf, PkcsOaepSource::empty()));
    let pin = std::fs::read_to_string(Path::new(&data).join("hsm.pin")).unwrap();

    let pkcs11 = Pkcs11::new(MODULE).unwrap();
    pkcs11
        .initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .unwrap();
    let slot = pkcs11.get_slots_with_initialized_token().unwrap()[0];
    let s = pkcs11.open_rw_session(slot).unwrap();
    s.login(UserType::User, Some(&AuthPin::from(pin.trim())))
        .unwrap();
    let transport = s
        .find_objects(&[
            Attribute::Class(ObjectClass::PRIVATE_KEY),
            Attribute::Label(b"keyplane-transport-v1".to_vec()),
        ])
        .unwrap()[0];

    let secret = |extra: &[Attribute]| {
        let mut t = vec![
            Attribute::Token(false),
            Attribute::Class(ObjectClass::SECRET_KEY),
            Attribute::KeyType(KeyType::AES),
        ];
        t.extend_from_slice(extra);
        t
    };
    let unwrapped =
        |template: Vec<Attribute>| match s.unwrap_key(&oaep, transport, &wrapped, &template) {
            Ok(h) => match s.get_attributes(h, &[AttributeType::Value]) {
                Ok(v) if v.iter().any(|a| matches!(a, Attribute::Value(_))) => "READ".to_string(),
                _ => "UNWRAPPED".to_string(),
            },
            Err(e) => e.to_string(),
        };
    let decrypted = |key| match s.decrypt(&oaep, key, &wrapped) {
        Ok(_) => "DECRYPTED".to_string(),
        Err(e) => e.to_string(),
    };
    let mut found = serde_json::Map::new();
    let mut answer = |attempt: &str, a: String| {
        found.insert(attempt.to_string(), Value::String(a));
    };
    answer(
        "unwrap the export readable",
        unwrapped(secret(&[
            Attribute::Sensitive(false),
            Attribute::Extractable(true),
        ])),
    );
    answer(
        "unwrap the export extractable by any key",
        unwrapped(secret(&[
            Attribute::Sensitive(true),
            Attribute::Extractable(true),
            Attribute::WrapWithTrusted(false),
        ])),
    );
    answer(
        "unwrap the export without the root key's mechanisms",
        unwrapped(secret(&[
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::WrapWithTrusted(true),
            Attribute::Derive(false),
        ])),
    );
    answer(
        "set CKA_DECRYPT on the transport key",
        match s.update_attributes(transport, &[Attribute::Decrypt(true)]) {
            Ok(()) => "SET".into(),
            Err(e) => e.to_string(),
        },
    );
    answer("decrypt the export", decrypted(transport));
    answer(
        "decrypt the export with a copy that may decrypt",
        match s.copy_object(
            transport,
            &[Attribute::Token(false), Attribute::Decrypt(true)],
        ) {
            Ok(copy) => match decrypted(copy).as_str() {
                "DECRYPTED" => "DECRYPTED".into(),
                _ => "COPIED".into(),
            },
            Err(e) => e.to_string(),
        },
    );
    println!("ATTACK {}", Value::Object(found));
}

#[tokio::test]
async fn a_joining_node_gets_the_root_key_by_ceremony_and_opens_what_the_first_sealed() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b, work) = (
        tmp.path().join("a"),
        tmp.path().join("b"),
        tmp.path().join("ceremony"),
    );
    std::fs::create_dir_all(&work).unwrap();

    // Node A: a key, a ciphertext, then stopped.
    let mut node_a = Server::start_with_env(&a, &[EXPORTABLE]).await;
    let admin = node_a.admin.clone();
    let key = node_a.create_key(&admin, "envelope").await;
    let ctx = json!({ "purpose": "ceremony" });
    let ct = node_a
        .encrypt(&admin, &key, b"sealed on node A", ctx.clone())
        .await;
    let material = node_a.envelope_material(&key).await;
    node_a.stop();

    // Node B joins: A's database (copied while A is stopped), then its token and transport key.
    std::fs::create_dir_all(&b).unwrap();
    copy_database(&a, &b);
    let pem = work.join("transport.pem");
    let printed = ok(hsm(&b, &["transport-key", "--out", pem.to_str().unwrap()]));
    assert!(printed.contains("-----BEGIN PUBLIC KEY-----"), "{printed}");
    assert!(token_labels(&b, None)
        .iter()
        .any(|l| l == "keyplane-transport-v1"));
    refused(hsm(&b, &["transport-key"]), "already holds a transport key");
    // A token waiting for its root key never makes one of its own.
    assert!(serve_fails(&b).contains("keyplane hsm import-root"));
    assert!(!token_labels(&b, None)
        .iter()
        .any(|l| l == "keyplane-root-v1"));

    // A wraps its root key to B's transport key.
    let export_path = work.join("root.json");
    ok(hsm(
        &a,
        &[
            "export-root",
            "--to",
            pem.to_str().unwrap(),
            "--out",
            export_path.to_str().unwrap(),
        ],
    ));
    // The export holds the wrapped root key (one 3072-bit RSA-OAEP block), the transport
    // key's fingerprint and a check value: nothing else.
    let export: Value = serde_json::from_slice(&std::fs::read(&export_path).unwrap()).unwrap();
    let fields: Vec<&str> = export
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    assert_eq!(
        fields.len(),
        6,
        "{fields:?} (format, wrapping, oaep_hash, transport_key_fingerprint, root_key_check_value, wrapped_root_key)"
    );
    let wrapped = STANDARD
        .decode(export["wrapped_root_key"].as_str().unwrap())
        .unwrap();
    assert_eq!(wrapped.len(), 384);
    assert!(printed.contains(export["transport_key_fingerprint"].as_str().unwrap()));

    // With B's user PIN and the export, nothing of the root key comes out of B's token: the
    // transport key unwraps only into what import-root makes, and cannot be made to decrypt.
    let attack = transport_key_attack(&b, &export_path);
    assert_eq!(attack.len(), 6, "{attack:?}");
    for (attempt, answer) in &attack {
        assert!(
            !matches!(
                answer.as_str(),
                "READ" | "UNWRAPPED" | "SET" | "COPIED" | "DECRYPTED"
            ),
            "{attempt}: {answer}"
        );
    }

    // Tampered exports are refused, and leave nothing in B's token.
    for (field, part) in [
        (
            "wrapped_root_key",
            "does not unwrap with this node's transport key",
        ),
        ("root_key_check_value", "check value differs"),
        (
            "transport_key_fingerprint",
            "made for another transport key",
        ),
    ] {
        let path = work.join(format!("tampered-{field}.json"));
        std::fs::write(&path, tampered(&export, field).to_string()).unwrap();
        refused(
            hsm(&b, &["import-root", "--from", path.to_str().unwrap()]),
            part,
        );
    }
    // A forged export: a key of the sender's choosing, wrapped to B's (public) transport key
    // with a check value of its own. It unwraps and its check value matches, but it does not
    // open what A's database holds sealed by A's root key: refused.
    let chosen = [7u8; 32];
    let chosen_path = work.join("chosen.key");
    std::fs::write(&chosen_path, chosen).unwrap();
    assert_eq!(export["oaep_hash"], "SHA-1", "{export}");
    let forged_wrap = Command::new("openssl")
        .args(["pkeyutl", "-encrypt", "-pubin", "-inkey"])
        .arg(&pem)
        .args([
            "-pkeyopt",
            "rsa_padding_mode:oaep",
            "-pkeyopt",
            "rsa_oaep_md:sha1",
        ])
        .arg("-in")
        .arg(&chosen_path)
        .output()
        .unwrap();
    assert!(forged_wrap.status.success(), "{forged_wrap:?}");
    let check = {
        use aes_gcm::aead::{Aead, KeyInit, Payload};
        let cipher = aes_gcm::Aes256Gcm::new_from_slice(&chosen).unwrap();
        let tag = cipher
            .encrypt(
                &[0u8; 12].into(),
                Payload {
                    msg: b"",
                    aad: b"keyplane root key check value v1",
                },
            )
            .unwrap();
        hex::encode(tag)
    };
    let mut forged = export.clone();
    forged["wrapped_root_key"] = json!(STANDARD.encode(&forged_wrap.stdout));
    forged["root_key_check_value"] = json!(check);
    let path = work.join("forged.json");
    std::fs::write(&path, forged.to_string()).unwrap();
    refused(
        hsm(&b, &["import-root", "--from", path.to_str().unwrap()]),
        "not of this cluster's root key",
    );
    let labels = token_labels(&b, None);
    assert!(
        labels.iter().all(|l| !l.starts_with("keyplane-root")),
        "{labels:?}"
    );

    // The import, then a second one refused; the transport key pair is gone.
    ok(hsm(
        &b,
        &["import-root", "--from", export_path.to_str().unwrap()],
    ));
    refused(
        hsm(
            &b,
            &["import-root", "--from", export_path.to_str().unwrap()],
        ),
        "already holds this root key",
    );
    let labels = token_labels(&b, None);
    assert!(
        !labels.iter().any(|l| l.starts_with("keyplane-transport")),
        "{labels:?}"
    );
    assert!(labels.iter().any(|l| l == "keyplane-root-v1"), "{labels:?}");

    // The imported root key is sensitive, and the user PIN alone cannot get it out.
    let root = token_objects(&b)
        .into_iter()
        .find(|(l, _)| l == "keyplane-root-v1")
        .unwrap();
    assert!(root.1.contains("sensitive"), "{root:?}");
    for dir in [&a, &b] {
        let probe: Value =
            serde_json::from_str(ok(hsm(dir, &["probe-extraction"])).lines().next().unwrap())
                .unwrap();
        let answers = probe.as_object().unwrap();
        assert_eq!(answers.len(), 11, "{probe}");
        for (attempt, answer) in answers {
            let answer = answer.as_str().unwrap();
            assert!(
                !matches!(
                    answer,
                    "WRAPPED" | "SET" | "COPIED" | "READ" | "UNWRAPPED" | "DECRYPTED"
                ),
                "{attempt}: {answer}"
            );
        }
        for attempt in [
            "wrap with an untrusted RSA key",
            // Why hsm key versions' world copies do not rest on CKA_WRAP_WITH_TRUSTED.
            "wrap a wrap-with-trusted key with the root key",
        ] {
            assert!(
                answers[attempt]
                    .as_str()
                    .unwrap()
                    .contains("unable to wrap"),
                "{attempt}: {probe}"
            );
        }
    }

    // Every step is in the audit log of the database it ran against.
    assert_eq!(
        ceremony_records(&a).await,
        vec![("ExportRootKey".to_string(), "ok".to_string())]
    );
    let b_records = ceremony_records(&b).await;
    let expected: Vec<(&str, &str)> = vec![
        ("CreateTransportKey", "ok"),
        ("CreateTransportKey", "Refused"),
        ("ImportRootKey", "Refused"),
        ("ImportRootKey", "Refused"),
        ("ImportRootKey", "Refused"),
        ("ImportRootKey", "Refused"), // the forged export
        ("ImportRootKey", "ok"),
        ("ImportRootKey", "Refused"),
    ];
    assert_eq!(
        b_records,
        expected
            .into_iter()
            .map(|(a, o)| (a.to_string(), o.to_string()))
            .collect::<Vec<_>>()
    );

    // No key material in any file: not the envelope key's, and no file outside the tokens
    // holds anything but the wrapped root key.
    for dir in [&a, &b, &work] {
        assert_absent_under(dir, "envelope key material", &material);
    }

    // B serves on A's database with the imported root key: A's admin token authenticates
    // (the token-hash key is sealed by the root key in the database), and A's ciphertext
    // decrypts (the tenant KEK is wrapped by the root key).
    std::fs::copy(a.join("admin.token"), b.join("admin.token")).unwrap(); // the harness reads it
    let mut node_b = Server::start(&b).await;
    let (status, answer) = node_b.decrypt(&admin, &ct, ctx.clone()).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        common::unb64(&answer["plaintext"]),
        b"sealed on node A".to_vec()
    );
    let k2 = node_b.create_key(&admin, "envelope").await;
    let ct2 = node_b.encrypt(&admin, &k2, b"on B", ctx.clone()).await;
    assert_eq!(node_b.decrypt(&admin, &ct2, ctx).await.0, 200);
    node_b.stop();
}

/// A data dir whose root key was made non-extractable (before the ceremony existed) keeps
/// serving, export-root says why it cannot seed another node, and import-root never
/// replaces a root key.
#[tokio::test]
async fn a_non_extractable_root_key_keeps_working_and_export_says_why_not() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("old");
    let tokens = data.join("softhsm/tokens");
    std::fs::create_dir_all(&tokens).unwrap();
    let conf = data.join("softhsm/softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n",
            std::fs::canonicalize(&tokens).unwrap().display()
        ),
    )
    .unwrap();
    common::hand_made_token(
        &data,
        &conf,
        &[
            "--keygen",
            "--key-type",
            "AES:32",
            "--label",
            "keyplane-root-v1",
            "--id",
            "6b65",
            "--sensitive",
            "--private",
            "--usage-wrap",
            "--usage-decrypt",
        ],
    );
    std::fs::write(data.join("hsm-so.pin"), "1111").unwrap();
    let mut node = Server::start(&data).await;
    let key = node.create_key(&node.admin.clone(), "envelope").await;
    let admin = node.admin.clone();
    let ct = node.encrypt(&admin, &key, b"old", json!({})).await;
    assert_eq!(node.decrypt(&admin, &ct, json!({})).await.0, 200);
    node.stop();
    // Any RSA public key will do: the export stops at the root key.
    let (private, pem) = (tmp.path().join("t.key"), tmp.path().join("t.pem"));
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl").args(args).output().unwrap();
        assert!(out.status.success(), "openssl: {}", text(&out));
    };
    openssl(&[
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:3072",
        "-out",
        private.to_str().unwrap(),
    ]);
    openssl(&[
        "pkey",
        "-in",
        private.to_str().unwrap(),
        "-pubout",
        "-out",
        pem.to_str().unwrap(),
    ]);
    refused(
        hsm(
            &data,
            &[
                "export-root",
                "--to",
                pem.to_str().unwrap(),
                "--out",
                tmp.path().join("x.json").to_str().unwrap(),
            ],
        ),
        "non-extractable",
    );
    // An import into a token that has a root key of its own is refused before anything else.
    let other = json!({
        "format": "keyplane-root-key-export-v1",
        "wrapping": "CKM_RSA_PKCS_OAEP",
        "oaep_hash": "SHA-1",
        "transport_key_fingerprint": "00".repeat(32),
        "root_key_check_value": "00".repeat(16),
        "wrapped_root_key": STANDARD.encode([0u8; 384]),
    });
    let other_path = tmp.path().join("other.json");
    std::fs::write(&other_path, other.to_string()).unwrap();
    refused(
        hsm(
            &data,
            &["import-root", "--from", other_path.to_str().unwrap()],
        ),
        "already holds a different root key",
    );
    assert_eq!(
        ceremony_records(&data).await,
        vec![
            ("ExportRootKey".to_string(), "Refused".to_string()),
            ("ImportRootKey".to_string(), "Refused".to_string())
        ]
    );
    let node = Server::start(&data).await;
    assert_eq!(node.decrypt(&admin, &ct, json!({})).await.0, 200);
}
