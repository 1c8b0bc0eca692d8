//! One scenario on each PKCS#11 module keyplane is tested with: SoftHSM2 (the embedded
//! default) and a TPM 2.0 (`swtpm` through tpm2-pkcs11, see `common::tpm`). keyplane runs on
//! each with its configuration alone; what the module lacks decides the design at start
//! (`hsm::sealing`, `hsm::capabilities`), and its quirks are its own (`hsm::quirks`).
//!
//! The scenario, the selection of the suite that makes sense for both: `describe-hsm` shows
//! the module, its quirks, its sealing scheme and what each key spec can be made with; keys
//! the module can hold are created (an `envelope` AES key sealed by the tenant KEK, a P-256
//! signing key and an RSA-2048 OAEP key in the token), used, rotated; what the module cannot
//! give is refused at `create-key` with the mechanism it lacks; a CSR is signed by the P-256
//! key in the token and verifies with openssl; the node restarts with its
//! keys intact; keys are destroyed (crypto-shredding: the token objects are gone and the
//! ciphertexts answer `KeyDestroyed`); the audit log, with checkpoints signed by the module's
//! own audit key, verifies. On the TPM, whose root key can never leave it, the key ceremony
//! is refused with the reason.

#![cfg_attr(
    not(all(feature = "test-hooks", debug_assertions)),
    allow(dead_code, unused_imports)
)]

mod common;

use std::path::Path;

use common::tpm::SoftTpm;
use common::{assert_error, b64, pkcs11_tool, succeeds, unb64, Server};
use serde_json::{json, Value};

#[derive(Clone, Copy, PartialEq, Debug)]
enum Module {
    SoftHsm2,
    Tpm,
}

async fn start(dir: &Path, tpm: Option<&SoftTpm>) -> Server {
    let extra = [
        ("RUST_LOG", "warn"),
        ("KEYPLANE_LIFECYCLE__SCHEDULER_INTERVAL_SECONDS", "0"),
        ("KEYPLANE_AUDIT__CHECKPOINT_EVERY_RECORDS", "5"),
        ("KEYPLANE_AUDIT__CHECKPOINT_INTERVAL_SECONDS", "0"),
    ];
    match tpm {
        Some(tpm) => Server::start_with_env(dir, &tpm.env_with(&extra)).await,
        None => Server::start_with_env(dir, &extra).await,
    }
}

/// Replace the material of `keys` (envelope keys of tenant `default`, version 1) in the
/// database `rw` with KEM blobs sealed to the tenant KEK's public key (`kek`, its stored
/// form) as anyone who can read the public key and write the database could make them: a
/// data key of their own encapsulated with openssl (RSA-OAEP, SHA-256), material of their
/// own under the key `hsm::sealing` derives from it, with the right AAD. The first key gets
/// the unsigned format of before (1), the second the signed format (3) with a signature the
/// token never made.
async fn forge_kem_blobs(
    rw: &sqlx::SqlitePool,
    data: &Path,
    tpm: Option<&SoftTpm>,
    kek: &[u8],
    keys: &[String],
) {
    use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
    use ring::hkdf::{Salt, HKDF_SHA256};
    let id = kek.strip_prefix(b"token-object:").unwrap();
    let public = data.join("kek-public.der");
    pkcs11_tool(
        data,
        tpm,
        &[
            "--read-object",
            "--type",
            "pubkey",
            "--id",
            &hex::encode(id),
            "-o",
            public.to_str().unwrap(),
        ],
    );
    let data_key = [0x42u8; 32];
    let key_file = data.join("forged-data-key");
    std::fs::write(&key_file, data_key).unwrap();
    let encapsulation = succeeds(
        std::process::Command::new("openssl")
            .args(["pkeyutl", "-encrypt", "-pubin", "-keyform", "DER", "-inkey"])
            .arg(&public)
            .args([
                "-pkeyopt",
                "rsa_padding_mode:oaep",
                "-pkeyopt",
                "rsa_oaep_md:sha256",
                "-pkeyopt",
                "rsa_mgf1_md:sha256",
                "-in",
            ])
            .arg(&key_file),
    );
    for (key, format) in keys.iter().zip([1u8, 3]) {
        let prk = Salt::new(HKDF_SHA256, &encapsulation).extract(&data_key);
        let okm = prk
            .expand(&[b"keyplane oaep-kem seal v1"], &AES_256_GCM)
            .unwrap();
        let sealing = LessSafeKey::new(UnboundKey::from(okm));
        let mut aad = b"keyplane/envelope-material/v1\0default\0".to_vec();
        aad.extend_from_slice(key.as_bytes());
        aad.push(0);
        aad.extend_from_slice(&1u32.to_be_bytes());
        let mut body = vec![0x17u8; 32];
        sealing
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key([9; 12]),
                Aad::from(&aad),
                &mut body,
            )
            .unwrap();
        let mut blob = vec![format];
        blob.extend_from_slice(&(encapsulation.len() as u16).to_be_bytes());
        blob.extend_from_slice(&encapsulation);
        blob.extend_from_slice(&[9; 12]);
        blob.extend_from_slice(&body);
        if format == 3 {
            blob.extend_from_slice(&[0x30; 64]);
        }
        sqlx::query("UPDATE key_versions SET wrapped_material = ? WHERE key_id = ?")
            .bind(&blob)
            .bind(key)
            .execute(rw)
            .await
            .unwrap();
    }
}

async fn signed(s: &Server, key: &str, message: &[u8], algorithm: &str) -> Vec<u8> {
    let v = s
        .ok(
            &s.admin,
            "sign",
            json!({ "key_id": key, "message": b64(message), "signing_algorithm": algorithm }),
        )
        .await;
    unb64(&v["signature"])
}

async fn verifies(s: &Server, key: &str, message: &[u8], signature: &[u8], algorithm: &str) {
    let v = s
        .ok(
            &s.admin,
            "verify",
            json!({ "key_id": key, "message": b64(message), "signature": b64(signature),
                    "signing_algorithm": algorithm }),
        )
        .await;
    assert_eq!(v["signature_valid"], true, "{v}");
}

async fn scenario(module: Module) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let tpm = (module == Module::Tpm).then(|| SoftTpm::start(&dir.path().join("tpm")));
    let mut s = start(&data, tpm.as_ref()).await;
    let admin = s.admin.clone();

    // What the module is and can do, decided from what it lists.
    let d = s.ok(&admin, "describe-hsm", json!({})).await;
    let support = |spec: &str| -> Value {
        d["support"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["key_spec"] == spec)
            .cloned()
            .unwrap_or_else(|| panic!("{spec} not in {d}"))
    };
    let quirks = d["quirks"].to_string();
    match module {
        Module::SoftHsm2 => {
            assert_eq!(d["module"], "SoftHSM2", "{d}");
            assert!(d["sealing"]
                .as_str()
                .unwrap()
                .starts_with("aes-gcm in the token"));
            assert!(quirks.contains("CKR_GENERAL_ERROR"), "{quirks}");
            assert!(quirks.contains("computes in process"), "{quirks}");
            assert_eq!(support("AES_256_GCM")["hsm"], json!(["encrypt-decrypt"]));
            assert!(support("ED25519")["hsm"]
                .to_string()
                .contains("sign-verify"));
        }
        Module::Tpm => {
            assert_eq!(d["module"], "tpm2-pkcs11", "{d}");
            assert_eq!(d["model"], "SW   TPM", "NULs trimmed: {d}");
            assert!(d["sealing"].as_str().unwrap().starts_with("rsa-oaep kem"));
            for q in [
                "no C_GenerateKey",
                "no session objects",
                "templates cannot forbid",
                "never leave the module",
                "no C_WrapKey",
                "failed decryption stays active",
            ] {
                assert!(quirks.contains(q), "{q} not in {quirks}");
            }
            // swtpm answers a bad OAEP ciphertext with TPM_RC_FAILURE, which tpm2-pkcs11
            // passes on as CKR_GENERAL_ERROR (the altered key below).
            assert!(quirks.contains("CKR_GENERAL_ERROR"), "{quirks}");
            assert_eq!(support("AES_256_GCM")["hsm"], json!([]));
            assert_eq!(support("AES_256_GCM")["envelope"], true);
            assert_eq!(
                support("RSA_4096")["hsm"],
                json!([]),
                "the TPM makes 3072 at most"
            );
            assert_eq!(support("ED25519")["hsm"], json!([]));
            let missing = d["missing_mechanisms"].to_string();
            assert!(missing.contains("CKM_AES_GCM"), "{missing}");
            // What the TPM cannot give is refused up front, naming what it lacks.
            for (body, lacks) in [
                (
                    json!({ "key_spec": "AES_256_GCM", "protection": "hsm" }),
                    "CKM_AES_GCM",
                ),
                (
                    json!({ "key_spec": "ED25519", "key_usage": "sign-verify" }),
                    "CKM_EDDSA",
                ),
                (
                    json!({ "key_spec": "RSA_4096", "key_usage": "sign-verify" }),
                    "at most 3072",
                ),
                (
                    json!({ "key_spec": "HMAC_SHA_256", "key_usage": "generate-verify-mac" }),
                    "CKM_GENERIC_SECRET_KEY_GEN",
                ),
                (
                    json!({ "key_spec": "ECC_NIST_P256", "key_usage": "sign-verify",
                            "exportable": true }),
                    "CKM_AES_KEY_WRAP_PAD",
                ),
                (
                    json!({ "key_spec": "AES_256_GCM", "origin": "external" }),
                    "cannot take imported key material",
                ),
                (
                    json!({ "key_spec": "FFDHE_2048" }),
                    "CKM_DH_PKCS_KEY_PAIR_GEN",
                ),
            ] {
                let answer = s.call(Some(&admin), "create-key", body.clone()).await;
                assert_error(&answer, 400, "ValidationError", lacks);
            }
        }
    }

    // An envelope key: material sealed by the tenant KEK, AES-GCM in ring.
    let envelope = s.create_key(&admin, "envelope").await;
    let ct1 = s
        .encrypt(
            &admin,
            &envelope,
            b"first secret",
            json!({ "app": "modules" }),
        )
        .await;
    let (status, v) = s.decrypt(&admin, &ct1, json!({ "app": "modules" })).await;
    assert_eq!(
        (status, unb64(&v["plaintext"])),
        (200, b"first secret".to_vec())
    );
    assert_eq!(
        s.decrypt(&admin, &ct1, json!({ "app": "other" })).await.0,
        400
    );
    if module == Module::Tpm {
        // Its private keys never leave it, so it cannot hand out a data key pair.
        let answer = s
            .call(
                Some(&admin),
                "generate-data-key-pair",
                json!({ "key_id": envelope, "key_pair_spec": "ECC_NIST_P256" }),
            )
            .await;
        assert_error(&answer, 400, "ValidationError", "never leave it");
    }
    let pool = s.sql().await;
    let (kek,): (Vec<u8>,) = sqlx::query_as("SELECT kek_wrapped FROM tenants WHERE id = 'default'")
        .fetch_one(&pool)
        .await
        .unwrap();
    let (sealed,): (Vec<u8>,) = sqlx::query_as(
        "SELECT wrapped_material FROM key_versions WHERE key_id = ? AND version = 1",
    )
    .bind(&envelope)
    .fetch_one(&pool)
    .await
    .unwrap();
    match module {
        // AES-KWP of a 32-byte KEK; iv ‖ GCM of 32 bytes of material.
        Module::SoftHsm2 => assert_eq!((kek.len(), sealed.len()), (40, 12 + 32 + 16)),
        // The KEK is a token object the row names; a KEM blob with a 3072-bit encapsulation.
        Module::Tpm => {
            assert!(kek.starts_with(b"token-object:keyplane-kek:"));
            // Format 3 (OAEP-SHA-256, signed), the token's P-256 signature last.
            assert_eq!((sealed[0], sealed.len()), (3, 3 + 384 + 12 + 32 + 16 + 64));
        }
    }

    // Rotation: the old ciphertext still decrypts, new ones use version 2.
    s.ok(&admin, "rotate-key", json!({ "key_id": envelope }))
        .await;
    let ct2 = s
        .encrypt(&admin, &envelope, b"second secret", json!({}))
        .await;

    // Keys in the token: a P-256 signing key and an RSA-2048 OAEP key.
    let ec = s
        .create_key_of(&admin, "ECC_NIST_P256", "sign-verify")
        .await;
    let sig = signed(&s, &ec, b"signed before restart", "ECDSA_SHA_256").await;
    // A CSR signed in the token, which openssl verifies.
    let csr = s
        .ok(
            &admin,
            "generate-csr",
            json!({ "key_id": ec, "subject": { "common_name": "modules.example" },
                    "dns_names": ["modules.example"] }),
        )
        .await["csr"]
        .as_str()
        .unwrap()
        .to_string();
    let file = dir.path().join("csr.pem");
    std::fs::write(&file, &csr).unwrap();
    let out = std::process::Command::new("openssl")
        .args(["req", "-verify", "-noout", "-in"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success(), "{module:?}: {out:?}");
    verifies(&s, &ec, b"signed before restart", &sig, "ECDSA_SHA_256").await;
    let rsa = s.create_key_of(&admin, "RSA_2048", "encrypt-decrypt").await;
    let oaep = d["rsa_encryption_algorithm"].as_str().unwrap().to_string();
    let rsa_ct = s
        .ok(
            &admin,
            "encrypt",
            json!({ "key_id": rsa, "plaintext": b64(b"for rsa"), "encryption_algorithm": oaep }),
        )
        .await["ciphertext_blob"]
        .clone();
    let ec_object = s.hsm_objects(json!({ "key_id": ec, "version": 1 })).await;
    // The pair in the token (SoftHSM2 adds session copies of the private key).
    let in_token =
        ec_object["objects"].as_u64().unwrap() - ec_object["session_objects"].as_u64().unwrap();
    assert_eq!(in_token, 2, "{ec_object}");

    // A key whose sealed material is altered in the database while the node is down (the
    // first byte of the GCM iv, of the KEM encapsulation).
    let altered = s.create_key(&admin, "envelope").await;
    // Keys whose material is replaced, while the node is down, by material of the writer's
    // choosing (see forge_kem_blobs): only the TPM's KEM blobs could be made without it.
    let forged = [
        s.create_key(&admin, "envelope").await,
        s.create_key(&admin, "envelope").await,
    ];

    // A tenant KEK's token objects that no tenant names (a tenant creation that crashed
    // before its commit), made here with pkcs11-tool: garbage collection removes them while
    // the node is down and leaves the tenant's own KEK, which the restart below needs.
    s.stop();
    let orphan = format!("keyplane-kek:{}", uuid::Uuid::new_v4().simple());
    pkcs11_tool(
        &data,
        tpm.as_ref(),
        &[
            "--keypairgen",
            "--key-type",
            "rsa:2048",
            "--label",
            "keyplane-kek",
            "--id",
            &hex::encode(&orphan),
        ],
    );
    let gc = s.tool(&[
        "gc",
        "--apply",
        "--grace-seconds",
        "0",
        "--all-nodes-stopped",
    ]);
    let out = String::from_utf8_lossy(&gc.stdout).into_owned();
    assert!(gc.status.success(), "{gc:?}");
    assert!(
        out.contains(&format!("removed HSM object {orphan}")),
        "{module:?}: {out}"
    );
    assert_eq!(
        out.matches("keyplane-kek:").count(),
        2,
        "both halves only: {out}"
    );
    let listed = pkcs11_tool(&data, tpm.as_ref(), &["--list-objects"]);
    assert!(!listed.contains(&hex::encode(&orphan)), "{listed}");

    // Restart: every key is intact.
    {
        let db = format!("sqlite://{}", data.join("keyplane.db").display());
        let rw = sqlx::SqlitePool::connect(&db).await.unwrap();
        if module == Module::Tpm {
            forge_kem_blobs(&rw, &data, tpm.as_ref(), &kek, &forged).await;
        }
        let (mut sealed,): (Vec<u8>,) =
            sqlx::query_as("SELECT wrapped_material FROM key_versions WHERE key_id = ?")
                .bind(&altered)
                .fetch_one(&rw)
                .await
                .unwrap();
        sealed[3] ^= 0x01;
        sqlx::query("UPDATE key_versions SET wrapped_material = ? WHERE key_id = ?")
            .bind(&sealed)
            .bind(&altered)
            .execute(&rw)
            .await
            .unwrap();
        rw.close().await;
    }
    s = start(&data, tpm.as_ref()).await;
    // Many requests resolve the tenant's KEK at once (nothing is cached after a restart); on
    // the TPM they all find the same token object, which must survive them all.
    let (admin_ref, ct2_ref) = (&admin, &ct2);
    // (Thirty-two: each opens its first session at once with the others, which tpm2-pkcs11
    // does not lock; see `hsm::pool`. Eight passed most runs without that serialized.)
    let firsts = (0..32).map(|_| {
        let s = &s;
        async move { s.decrypt(admin_ref, ct2_ref, json!({})).await.0 }
    });
    assert_eq!(futures::future::join_all(firsts).await, vec![200; 32]);
    // Refused the same way on both modules (the module says CKR_GENERAL_ERROR for it on
    // both: see hsm::quirks), and the module is not taken for down: the keys below work.
    let answer = s
        .call(
            Some(&admin),
            "encrypt",
            json!({ "key_id": altered, "plaintext": b64(b"x") }),
        )
        .await;
    assert_eq!(answer.0, 500, "{module:?}: {answer:?}");
    assert_eq!(answer.1["error"]["code"], "InternalError", "{answer:?}");
    // Forged material is refused too: the token signed neither blob, so neither opens (and
    // nothing is encrypted under material its writer knows).
    if module == Module::Tpm {
        for key in &forged {
            let answer = s
                .call(
                    Some(&admin),
                    "encrypt",
                    json!({ "key_id": key, "plaintext": b64(b"x") }),
                )
                .await;
            assert_eq!(answer.0, 500, "forged material was used: {answer:?}");
        }
    }
    for (ct, pt) in [(&ct1, &b"first secret"[..]), (&ct2, &b"second secret"[..])] {
        let ctx = if ct == &ct1 {
            json!({ "app": "modules" })
        } else {
            json!({})
        };
        let (status, v) = s.decrypt(&admin, ct, ctx).await;
        assert_eq!((status, unb64(&v["plaintext"])), (200, pt.to_vec()), "{v}");
    }
    verifies(&s, &ec, b"signed before restart", &sig, "ECDSA_SHA_256").await;
    let sig2 = signed(&s, &ec, b"signed after restart", "ECDSA_SHA_256").await;
    verifies(&s, &ec, b"signed after restart", &sig2, "ECDSA_SHA_256").await;
    // A signature that does not match is answered false on both modules, and verifying
    // goes on working after it.
    let mut wrong = sig2.clone();
    let last = wrong.len() - 1;
    wrong[last] ^= 0x01;
    for _ in 0..3 {
        let v = s
            .ok(
                &admin,
                "verify",
                json!({ "key_id": ec, "message": b64(b"signed after restart"),
                        "signature": b64(&wrong), "signing_algorithm": "ECDSA_SHA_256" }),
            )
            .await;
        assert_eq!(v["signature_valid"], false, "{module:?}: {v}");
        verifies(&s, &ec, b"signed after restart", &sig2, "ECDSA_SHA_256").await;
    }
    let v = s
        .ok(
            &admin,
            "decrypt",
            json!({ "key_id": rsa, "ciphertext_blob": rsa_ct, "encryption_algorithm": oaep }),
        )
        .await;
    assert_eq!(unb64(&v["plaintext"]), b"for rsa");
    // A ciphertext the key did not make is refused the same way on both modules, and the
    // decryptions after it work (the TPM's session that refused it is not reused).
    let garbage = b64(&[0x5a; 256]);
    let refused = s
        .call(
            Some(&admin),
            "decrypt",
            json!({ "key_id": rsa, "ciphertext_blob": garbage, "encryption_algorithm": oaep }),
        )
        .await;
    assert_error(&refused, 400, "InvalidCiphertext", "");
    for _ in 0..3 {
        let v = s
            .ok(
                &admin,
                "decrypt",
                json!({ "key_id": rsa, "ciphertext_blob": rsa_ct, "encryption_algorithm": oaep }),
            )
            .await;
        assert_eq!(unb64(&v["plaintext"]), b"for rsa");
    }

    // Crypto-shredding: the token objects are gone, the ciphertexts answer KeyDestroyed.
    s.destroy_keys(&[&envelope, &ec]).await;
    let gone = s
        .hsm_objects(json!({ "object_id": ec_object["object_id"] }))
        .await;
    assert_eq!(gone["objects"], 0, "{gone}");
    for ct in [&ct1, &ct2] {
        assert_error(
            &s.decrypt(&admin, ct, json!({})).await,
            410,
            "KeyDestroyed",
            "destroyed",
        );
    }

    // The audit log verifies, checkpoints signed by this module's audit key included.
    let pool = s.sql().await;
    let (checkpoints,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM audit_checkpoints")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(checkpoints >= 1, "no checkpoint signed");
    s.stop();
    s.assert_audit_verifies();

    if module == Module::Tpm {
        // Its root key can never leave it: the key ceremony is refused, saying why.
        let out = s.tool(&["hsm", "transport-key"]);
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{said}");
        assert!(
            said.contains("RSA key pair") && said.contains("never leaves"),
            "{said}"
        );
    }
    d
}

/// The module table of `docs/hsm.md`, from what `describe-hsm` answered on each module.
fn table(modules: &[(&str, &Value)]) -> String {
    let mut out = String::from("| | ");
    out += &modules
        .iter()
        .map(|(n, _)| *n)
        .collect::<Vec<_>>()
        .join(" | ");
    out += " |\n|---|";
    out += &"---|".repeat(modules.len());
    out += "\n";
    let row = |label: &str, cell: &dyn Fn(&Value) -> String| {
        let cells: Vec<String> = modules.iter().map(|(_, d)| cell(d)).collect();
        format!("| {label} | {} |\n", cells.join(" | "))
    };
    let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
    out += &row("module", &|d| text(&d["module"]));
    out += &row("manufacturer, model", &|d| {
        format!("{}, {}", text(&d["manufacturer"]), text(&d["model"]))
    });
    out += &row("sealing", &|d| text(&d["sealing"]));
    out += &row("RSA-OAEP hash", &|d| text(&d["rsa_encryption_algorithm"]));
    out += &row("quirks", &|d| {
        let q: Vec<String> = d["quirks"].as_array().unwrap().iter().map(text).collect();
        if q.is_empty() {
            "none".into()
        } else {
            q.join("; ")
        }
    });
    out += &row("mechanisms it lacks", &|d| {
        let m: Vec<String> = d["missing_mechanisms"]
            .as_array()
            .unwrap()
            .iter()
            .map(text)
            .collect();
        if m.is_empty() {
            "none".into()
        } else {
            m.join(", ")
        }
    });
    let specs = modules[0].1["support"].as_array().unwrap().clone();
    for spec in specs {
        let name = text(&spec["key_spec"]);
        out += &row(&format!("`{name}`"), &|d| {
            let e = d["support"]
                .as_array()
                .unwrap()
                .iter()
                .find(|e| e["key_spec"] == spec["key_spec"])
                .unwrap();
            let mut ways: Vec<String> = e["hsm"]
                .as_array()
                .unwrap()
                .iter()
                .map(|u| format!("hsm {}", text(u)))
                .collect();
            if e["envelope"] == true {
                ways.push("envelope".into());
            }
            if ways.is_empty() {
                "—".into()
            } else {
                ways.join(", ")
            }
        });
    }
    out
}

const BEGIN: &str = "<!-- describe-hsm table: generated by host/tests/modules.rs -->\n";
const END: &str = "<!-- end of the generated table -->";

/// Both modules at once; `docs/hsm.md` holds the table their answers make
/// (`KEYPLANE_BLESS=1` writes it). Each scenario is a task of its own on a runtime of several
/// threads: a scenario blocks its thread at times (waiting for a node to start, running
/// openssl), and on one thread shared by both, the other's clients stalled mid-handshake
/// meanwhile, until the node gave up on them (seen in CI as "tls handshake eof" or a broken
/// pipe on the requests after the TPM node's restart).
#[cfg(all(feature = "test-hooks", debug_assertions))]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_scenario_on_softhsm2_and_on_a_tpm() {
    let soft = tokio::spawn(scenario(Module::SoftHsm2));
    let tpm = tokio::spawn(scenario(Module::Tpm));
    let (soft, tpm) = (soft.await.unwrap(), tpm.await.unwrap());
    let generated = table(&[
        ("SoftHSM2 2.6", &soft),
        ("TPM 2.0 (swtpm, tpm2-pkcs11 1.9)", &tpm),
    ]);
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/hsm.md");
    let doc = std::fs::read_to_string(&path).unwrap();
    let start = doc
        .find(BEGIN)
        .expect("docs/hsm.md has the table's start marker")
        + BEGIN.len();
    let end = doc
        .find(END)
        .expect("docs/hsm.md has the table's end marker");
    if std::env::var("KEYPLANE_BLESS").is_ok() {
        let written = format!("{}{generated}{}", &doc[..start], &doc[end..]);
        std::fs::write(&path, written).unwrap();
    } else {
        assert_eq!(
            doc[start..end], generated,
            "docs/hsm.md's module table is not what describe-hsm answers: run this test with KEYPLANE_BLESS=1"
        );
    }
}

/// Two requests create one tenant at once on the TPM, whose tenant KEKs are token objects
/// (the object is the tenant's only KEK): the loser's undo destroys the KEK it made, not the
/// winner's (before, it destroyed whichever the cache held, and the tenant could seal
/// nothing again).
#[cfg(all(feature = "test-hooks", debug_assertions))]
#[tokio::test(flavor = "multi_thread")]
async fn racing_tenant_creations_leave_the_winner_its_kek() {
    let dir = tempfile::tempdir().unwrap();
    let tpm = SoftTpm::start(&dir.path().join("tpm"));
    let s = start(&dir.path().join("data"), Some(&tpm)).await;
    let create = || {
        s.call(
            Some(&s.admin),
            "create-tenant",
            json!({ "tenant_id": "racing" }),
        )
    };
    let winner = async {
        let (status, v) = create().await;
        assert_eq!(status, 200, "{v}");
    };
    let lost = s
        .interleaved("create-tenant:kek-made", "racing", create(), winner)
        .await;
    assert_error(&lost, 409, "AlreadyExists", "racing");

    let admin = s
        .ok(
            &s.admin,
            "create-principal",
            json!({ "tenant_id": "racing", "name": "admin", "role": "admin" }),
        )
        .await;
    let token = admin["token"].as_str().unwrap();
    let key = s.create_key(token, "envelope").await;
    let ct = s
        .encrypt(token, &key, b"sealed by the winner's KEK", json!({}))
        .await;
    let (status, v) = s.decrypt(token, &ct, json!({})).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(unb64(&v["plaintext"]), b"sealed by the winner's KEK");
}

/// A token with AES key generation whose root key wraps nothing (an RSA key pair: the
/// `OaepKem` scheme, as on a module without AES key wrap) makes no world copies, and still
/// leaves no key that is not exportable extractable: the step that clears `CKA_EXTRACTABLE`
/// after the world copy (`hsm::world::seal`) ran only when there was a copy to make, so such
/// an `hsm` AES key stayed wrappable by anyone with the user PIN. SoftHSM2 stands in for such
/// a module: its token is made by hand with an RSA root key pair, which keyplane finds and
/// seals with as it would on a TPM.
#[cfg(all(feature = "test-hooks", debug_assertions))]
#[tokio::test]
async fn without_world_copies_hsm_keys_are_still_made_non_extractable() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let conf = keyplane::hsm::token::prepare_embedded_softhsm(&data).unwrap();
    common::hand_made_token(
        &data,
        &conf,
        &[
            "--keypairgen",
            "--key-type",
            "rsa:3072",
            "--label",
            "keyplane-root-v1",
            "--id",
            "6b65",
            "--usage-decrypt",
        ],
    );
    let mut s = start(&data, None).await;
    let (status, described) = s.call(Some(&s.admin), "describe-hsm", json!({})).await;
    assert_eq!(status, 200, "{described}");
    assert!(
        described["sealing"]
            .as_str()
            .unwrap()
            .starts_with("rsa-oaep kem"),
        "{described}"
    );
    let admin = s.admin.clone();
    let key = s.create_key(&admin, "hsm").await;
    let ct = s.encrypt(&admin, &key, b"kem node", json!({})).await;
    assert_eq!(s.decrypt(&admin, &ct, json!({})).await.0, 200);
    s.stop();

    let objects = common::token_objects(&data);
    let (_, access) = objects
        .iter()
        .find(|(l, _)| *l == format!("kp:{key}:1"))
        .unwrap_or_else(|| panic!("the hsm key is not in the token: {objects:?}"));
    let flags: Vec<&str> = access.split(',').map(str::trim).collect();
    assert!(flags.contains(&"sensitive"), "{access}");
    assert!(!flags.contains(&"extractable"), "{access}");
}
