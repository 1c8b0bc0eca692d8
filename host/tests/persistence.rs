//! Restart, audit-chain tamper detection, an independent look into the token with
//! `pkcs11-tool`, and a byte scan of the data dir for envelope key material.

mod common;

use std::path::Path;
use std::process::Command;

use common::{b64, sqlite, unb64, Server};
use serde_json::json;

fn copy_data_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for name in ["keyplane.db", "keyplane.db-wal", "keyplane.db-shm"] {
        if from.join(name).exists() {
            std::fs::copy(from.join(name), to.join(name)).unwrap();
        }
    }
}

fn verify(dir: &Path) -> (bool, String) {
    let out = Command::new(common::BIN)
        .args(["audit", "verify", "--data-dir"])
        .arg(dir)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread")]
async fn restart_keeps_keys_and_audit_detects_tampering() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut s = Server::start(&data).await;
    let admin = s.admin.clone();
    let mut saved = Vec::new();
    for protection in ["envelope", "hsm"] {
        let key = s.create_key(&admin, protection).await;
        let ctx = json!({ "p": protection });
        let ct = s
            .encrypt(&admin, &key, protection.as_bytes(), ctx.clone())
            .await;
        saved.push((key, ct, ctx, protection));
    }
    s.stop();
    let token_before = std::fs::read(data.join("softhsm/softhsm2.conf")).unwrap();

    let mut s = Server::start(&data).await;
    assert_eq!(s.admin, admin, "the admin token is kept, not re-created");
    assert_eq!(
        std::fs::read(data.join("softhsm/softhsm2.conf")).unwrap(),
        token_before
    );
    for (key, ct, ctx, protection) in &saved {
        let (status, v) = s.decrypt(&admin, ct, ctx.clone()).await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(unb64(&v["plaintext"]), protection.as_bytes());
        let again = s.encrypt(&admin, key, b"after restart", json!({})).await;
        let (status, _) = s.decrypt(&admin, &again, json!({})).await;
        assert_eq!(status, 200);
    }
    s.stop();

    let (ok, text) = verify(&data);
    assert!(ok, "{text}");
    let records: i64 = text
        .split_whitespace()
        .nth(3)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected verify output: {text}"));
    assert!(records >= 10, "{text}");

    // Edited: one field of one row changed by hand.
    let edited = dir.path().join("edited");
    copy_data_dir(&data, &edited);
    sqlite(
        &edited.join("keyplane.db"),
        "UPDATE audit_log SET outcome = 'AccessDenied' WHERE seq = 4;",
    );
    let (ok, text) = verify(&edited);
    assert!(!ok);
    assert!(
        text.contains("record 4") && text.contains("edited"),
        "{text}"
    );

    // Removed: one row deleted.
    let removed = dir.path().join("removed");
    copy_data_dir(&data, &removed);
    sqlite(
        &removed.join("keyplane.db"),
        "DELETE FROM audit_log WHERE seq = 5;",
    );
    let (ok, text) = verify(&removed);
    assert!(!ok);
    assert!(text.contains("record 6"), "{text}");

    // Reordered: two rows swap places (their sequence numbers are exchanged).
    let reordered = dir.path().join("reordered");
    copy_data_dir(&data, &reordered);
    sqlite(
        &reordered.join("keyplane.db"),
        "UPDATE audit_log SET seq = -1 WHERE seq = 6; UPDATE audit_log SET seq = 6 WHERE seq = 7; \
         UPDATE audit_log SET seq = 7 WHERE seq = -1;",
    );
    let (ok, text) = verify(&reordered);
    assert!(!ok);
    assert!(text.contains("record 6"), "{text}");

    // Re-hashed edit: the edited row's own hash recomputed is still caught at the next link.
    let rehashed = dir.path().join("rehashed");
    copy_data_dir(&data, &rehashed);
    sqlite(
        &rehashed.join("keyplane.db"),
        "UPDATE audit_log SET hash = 'ff' || substr(hash, 3) WHERE seq = 3;",
    );
    let (ok, text) = verify(&rehashed);
    assert!(!ok, "{text}");
}

#[cfg(all(feature = "test-hooks", debug_assertions))]
#[tokio::test(flavor = "multi_thread")]
async fn hsm_keys_are_non_extractable_and_envelope_material_is_never_stored() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut s = Server::start(&data).await;
    let hsm_key = s.create_key(&s.admin, "hsm").await;
    let env_key = s.create_key(&s.admin, "envelope").await;
    let ctx = json!({ "scan": "yes" });
    let ct = s.encrypt(&s.admin, &env_key, b"scan me", ctx.clone()).await;
    let dk = s
        .ok(&s.admin, "generate-data-key", json!({ "key_id": env_key }))
        .await;

    // The debug hook's material really is the key: it opens the ciphertext outside keyplane.
    let material = s.envelope_material(&env_key).await;
    {
        use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
        let header_len = 5 + env_key.len() + 4 + 1 + 12;
        let mut aad = ct[..header_len].to_vec();
        aad.extend_from_slice(&1u32.to_be_bytes());
        for part in ["scan", "yes"] {
            aad.extend_from_slice(&(part.len() as u32).to_be_bytes());
            aad.extend_from_slice(part.as_bytes());
        }
        let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &material).unwrap());
        let nonce = Nonce::try_assume_unique_for_key(&ct[header_len - 12..header_len]).unwrap();
        let mut buf = ct[header_len..].to_vec();
        let pt = key
            .open_in_place(nonce, Aad::from(aad), &mut buf)
            .expect("material opens the ciphertext");
        assert_eq!(pt, b"scan me");
    }
    // The hook is for operators only.
    let (_, member) = {
        let p = s
            .ok(&s.admin, "create-principal", json!({ "name": "viewer" }))
            .await;
        (
            p["principal_id"].clone(),
            p["token"].as_str().unwrap().to_string(),
        )
    };
    let r = s
        .client
        .post(format!("{}/debug/envelope-material", s.base))
        .bearer_auth(&member)
        .json(&json!({ "key_id": env_key }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    s.stop();

    // Independent look into the token.
    let objects = common::token_objects(&data);
    let (_, access) = objects
        .iter()
        .find(|(l, _)| *l == format!("kp:{hsm_key}:1"))
        .unwrap_or_else(|| panic!("hsm key object not in token: {objects:?}"));
    // Generated in the token, never revealed, and not extractable. Not "never extractable":
    // it was extractable for the one wrap by the root key that made its world copy (the
    // security world, see hsm/world.rs), then made non-extractable.
    let flags: Vec<&str> = access.split(',').map(str::trim).collect();
    for flag in ["sensitive", "always sensitive", "local"] {
        assert!(
            flags.contains(&flag),
            "hsm key access lacks {flag}: {access}"
        );
    }
    assert!(!flags.contains(&"extractable"), "{access}");
    let (_, root) = objects
        .iter()
        .find(|(l, _)| l == "keyplane-root-v1")
        .expect("root key");
    assert!(root.contains("never extractable"), "{root}");
    assert!(
        !objects.iter().any(|(l, _)| l.contains(&env_key)),
        "envelope keys are not token objects"
    );

    // Byte scan of every file under the data dir: no material, in any common encoding.
    let data_key = unb64(&dk["plaintext"]);
    let needles: Vec<(String, Vec<u8>)> = vec![
        ("material".into(), material.clone()),
        ("material hex".into(), hex::encode(&material).into_bytes()),
        ("material base64".into(), b64(&material).into_bytes()),
        ("data key".into(), data_key.clone()),
        ("admin token".into(), s.admin.clone().into_bytes()),
    ];
    let mut scanned = 0;
    let mut stack = vec![data.clone()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let p = entry.unwrap().path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            if p.file_name().is_some_and(|n| n == "admin.token") {
                continue;
            }
            let bytes = std::fs::read(&p).unwrap();
            scanned += bytes.len();
            for (what, needle) in &needles {
                assert!(
                    !bytes.windows(needle.len()).any(|w| w == needle.as_slice()),
                    "{what} found in {}",
                    p.display()
                );
            }
        }
    }
    assert!(scanned > 10_000, "scan covered too little: {scanned} bytes");
}

#[tokio::test(flavor = "multi_thread")]
async fn configuration_layers_file_env_flags() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let file = dir.path().join("keyplane.toml");
    std::fs::write(
        &file,
        "listen = \"127.0.0.1:1\"\n[limits]\nmax_body_bytes = 100000\n",
    )
    .unwrap();
    // File says 100000, env says 2000 (env wins); file and env say port 1, the flag says 0.
    let mut child = Command::new(common::BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .arg("--config")
        .arg(&file)
        .arg("--policies-dir")
        .arg(common::policies_dir())
        .env("KEYPLANE_LISTEN", "127.0.0.1:2")
        .env("KEYPLANE_LIMITS__MAX_BODY_BYTES", "2000")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    use std::io::BufRead;
    let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut port = None;
    for line in stdout.lines().map_while(Result::ok) {
        if let Some(a) = line.strip_prefix("keyplane: listening on https://") {
            port = a.rsplit(':').next().map(str::to_string);
            break;
        }
    }
    let port = port.expect("server started");
    assert!(
        port != "1" && port != "2",
        "the --listen flag must win: {port}"
    );
    let cert = std::fs::read(data.join("tls/cert.pem")).unwrap();
    let client = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&cert).unwrap())
        .build()
        .unwrap();
    let token = std::fs::read_to_string(data.join("admin.token")).unwrap();
    let body = json!({ "key_id": "k-x", "plaintext": b64(&[0u8; 2000]) }).to_string();
    let r = client
        .post(format!("https://localhost:{port}/v1/encrypt"))
        .bearer_auth(token.trim())
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status().as_u16(),
        413,
        "the env limit must beat the file's"
    );
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn invalid_policy_set_refuses_to_start_and_names_the_policy() {
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    std::fs::create_dir_all(&policies).unwrap();
    for entry in std::fs::read_dir(common::policies_dir()).unwrap() {
        let p = entry.unwrap().path();
        if p.is_file() {
            std::fs::copy(&p, policies.join(p.file_name().unwrap())).unwrap();
        }
    }
    std::fs::write(
        policies.join("broken.cedar"),
        "@id(\"typo-policy\")\n@description(\"refers to an action that does not exist\")\n\
         permit (principal, action == Keyplane::Action::\"Encrypd\", resource);\n",
    )
    .unwrap();
    let out = Command::new(common::BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .arg("--policies-dir")
        .arg(&policies)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("broken.cedar:3") && err.contains("typo-policy"),
        "{err}"
    );
    assert!(
        !dir.path().join("data").exists(),
        "nothing was set up before the policies validated"
    );
}
