//! The costs inside one request (criterion), measured in one run so they can be compared:
//!
//! - `cedar/authorize-encrypt`: Cedar authorization of a typical `Encrypt` on a granted key;
//! - `ciphertext/encode`, `ciphertext/parse`: the envelope format;
//! - `ring-aes-gcm/{seal,open}/{32,4096}`: the data plane of `envelope` keys;
//! - `hsm/aes-gcm-encrypt-32`, `hsm/ecdsa-p256-sign`, `hsm/unwrap-kek`: SoftHSM2 through
//!   PKCS#11, the data plane of `hsm` keys and the cost of opening a tenant KEK;
//! - `audit/append`: one hash-chained audit record in its own transaction (how a state
//!   change records itself); `audit/group-commit/{1,16}`: records of cryptographic uses through
//!   the group commit, one at a time and 16 at once (the time is per call of 1 or 16);
//! - `encrypt/in-process/{envelope,hsm}`: the whole `encrypt` operation (authentication,
//!   Cedar, key lookup, crypto, usage counting, audit append, commit) without HTTP.
//!
//! Starts an embedded SoftHSM2 token in a temporary data dir. Run:
//! `cargo bench --bench core` (add `-- --quick` for a fast pass).

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use keyplane::algorithms::{KeySpec, KeyUsage};
use keyplane::audit::{self, AuditEvent};
use keyplane::config::{Config, FlagOverrides};
use keyplane::crypto::ciphertext::{self, Algorithm, Ciphertext};
use keyplane::hsm::{token, Hsm, GCM_IV_LEN};
use keyplane::ops::{self, RequestMeta};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use serde_json::json;

fn ring_gcm(c: &mut Criterion) {
    let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &[7u8; 32]).unwrap());
    let mut g = c.benchmark_group("ring-aes-gcm");
    for size in [32usize, 4096] {
        g.throughput(Throughput::Bytes(size as u64));
        let data = vec![0x5a; size];
        g.bench_with_input(BenchmarkId::new("seal", size), &data, |b, data| {
            b.iter(|| {
                let mut buf = data.clone();
                key.seal_in_place_append_tag(
                    Nonce::assume_unique_for_key([1; 12]),
                    Aad::from(b"aad"),
                    &mut buf,
                )
                .unwrap();
                buf
            })
        });
        let mut sealed = data.clone();
        key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key([1; 12]),
            Aad::from(b"aad"),
            &mut sealed,
        )
        .unwrap();
        g.bench_with_input(BenchmarkId::new("open", size), &sealed, |b, sealed| {
            b.iter(|| {
                let mut buf = sealed.clone();
                key.open_in_place(
                    Nonce::assume_unique_for_key([1; 12]),
                    Aad::from(b"aad"),
                    &mut buf,
                )
                .unwrap()
                .len()
            })
        });
    }
    g.finish();
}

fn ciphertext_format(c: &mut Criterion) {
    let mut blob = ciphertext::header(
        Algorithm::Aes256Gcm,
        "k-0123456789abcdef0123456789abcdef",
        3,
        &[9u8; 12],
    );
    blob.extend_from_slice(&[0xab; 48]);
    let parsed = Ciphertext::parse(&blob).unwrap();
    let mut g = c.benchmark_group("ciphertext");
    g.bench_function("parse", |b| b.iter(|| Ciphertext::parse(&blob).unwrap()));
    g.bench_function("encode", |b| b.iter(|| parsed.encode()));
    g.finish();
}

/// A node on a fresh data dir: config, token and the admin token.
struct Node {
    _dir: tempfile::TempDir,
    config: Config,
}

fn node() -> Node {
    let dir = tempfile::tempdir().unwrap();
    let flags = FlagOverrides {
        data_dir: Some(dir.path().to_path_buf()),
        policies_dir: Some(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies")),
        ..Default::default()
    };
    let config = Config::load(None, flags).unwrap();
    keyplane::bootstrap::prepare_data_dir(&config.data_dir).unwrap();
    let conf = token::prepare_embedded_softhsm(&config.data_dir).unwrap();
    // Sound: set before any thread of this benchmark touches the environment.
    std::env::set_var("SOFTHSM2_CONF", conf);
    Node { _dir: dir, config }
}

fn hsm_calls(c: &mut Criterion, hsm: &Hsm) {
    let (aes, _) = hsm
        .generate_token_aes_key_with(b"bench-aes", 32, false)
        .unwrap();
    let (pair, _) = hsm
        .generate_version_objects(
            b"bench-ec",
            "bench-ec",
            (KeySpec::EccNistP256, KeyUsage::SignVerify),
            false,
        )
        .unwrap();
    let (wrapped_kek, _) = hsm.generate_kek().unwrap();
    let digest = [3u8; 32];
    let mut g = c.benchmark_group("hsm");
    g.bench_function("aes-gcm-encrypt-32", |b| {
        b.iter(|| {
            hsm.gcm_encrypt(aes, &[1u8; GCM_IV_LEN], b"aad", &[0u8; 32])
                .unwrap()
        })
    });
    g.bench_function("ecdsa-p256-sign", |b| {
        b.iter(|| {
            hsm.sign(pair[1], keyplane::hsm::asym::SignMechanism::Ecdsa, &digest)
                .unwrap()
        })
    });
    g.bench_function("unwrap-kek", |b| {
        b.iter(|| {
            let h = hsm.unwrap_kek(&wrapped_kek).unwrap();
            hsm.destroy(h).unwrap();
        })
    });
    g.finish();
}

fn in_process(c: &mut Criterion) {
    let node = node();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let policies = keyplane::ops::reload_policies::load_at_start(&node.config).unwrap();
    let hsm = Hsm::open(&node.config).unwrap();
    hsm_calls(c, &hsm);
    let state = rt
        .block_on(keyplane::bootstrap::start(
            node.config.clone(),
            hsm,
            policies,
        ))
        .unwrap();
    let admin = std::fs::read_to_string(node.config.data_dir.join("admin.token")).unwrap();
    let header = format!("Bearer {}", admin.trim());
    let meta = RequestMeta::in_process("bench");
    let principal = || {
        rt.block_on(state.tokens.authenticate(&state.rows, Some(&header)))
            .unwrap()
    };

    // Cedar alone, on a resolved key.
    let key = |protection: &str| {
        let op: ops::create_key::CreateKey =
            serde_json::from_value(json!({ "protection": protection })).unwrap();
        let v = rt
            .block_on(ops::execute(&state, &principal(), &meta, op))
            .unwrap();
        serde_json::to_value(&v).unwrap()["key_id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let envelope_key = key("envelope");
    let hsm_key = key("hsm");

    let mut g = c.benchmark_group("audit");
    let ev = AuditEvent {
        request_id: "bench".into(),
        principal: "Keyplane::User::\"bench\"".into(),
        tenant: "default".into(),
        action: "Encrypt".into(),
        resource: "Keyplane::Key::\"k-bench\"".into(),
        decision: "allow",
        policies: vec!["key-grantees-use-key".into()],
        outcome: "ok".into(),
        source: "127.0.0.1".into(),
        policy_hash: Some("0".repeat(64)),
        trace_id: None,
        user_agent: None,
        front: None,
        access_key_id: None,
    };
    g.bench_function("append", |b| {
        b.iter(|| {
            rt.block_on(async {
                let mut tx = state.db.begin().await.unwrap();
                audit::append(&mut tx, &ev).await.unwrap();
                tx.commit().await.unwrap();
            })
        })
    });
    for together in [1usize, 16] {
        g.throughput(Throughput::Elements(together as u64));
        g.bench_function(BenchmarkId::new("group-commit", together), |b| {
            b.iter(|| {
                let appends = (0..together).map(|_| state.audit.append(ev.clone()));
                rt.block_on(futures_util::future::try_join_all(appends))
                    .unwrap()
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("encrypt");
    g.measurement_time(Duration::from_secs(8));
    for (name, key) in [("envelope", &envelope_key), ("hsm", &hsm_key)] {
        let body =
            json!({ "key_id": key, "plaintext": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=" })
                .to_string();
        g.bench_function(BenchmarkId::new("in-process", name), |b| {
            b.iter(|| {
                rt.block_on(async {
                    let p = state
                        .tokens
                        .authenticate(&state.rows, Some(&header))
                        .await
                        .unwrap();
                    // decode, execute and encode, as the native front does
                    let op: ops::encrypt::Encrypt = serde_json::from_str(&body).unwrap();
                    let out = ops::execute(&state, &p, &meta, op).await.unwrap();
                    serde_json::to_vec(&out).unwrap()
                })
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("cedar");
    let p = principal();
    let resource = rt
        .block_on(ops::resolve_key_for(&state, &p, &envelope_key))
        .unwrap();
    // Evaluated every time (memo off) against the node's own, memoised, authorizer.
    let evaluate = keyplane::authz::Authz::new(
        keyplane::ops::reload_policies::load_at_start(&node.config).unwrap(),
        0,
    );
    let request = keyplane::authz::AuthzRequest {
        principal: &p,
        action: "Encrypt",
        resource: &resource,
        encryption_context: &Default::default(),
        source_ip: meta.source_ip,
        client_certificate: None,
        request_time: 1_800_000_000,
        mfa: false,
        approver: None,
        granted: &[],
        export_format: None,
    };
    for (name, authz) in [
        ("authorize-encrypt", &evaluate),
        ("authorize-encrypt-memoised", &state.authz),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| authz.authorize(&request).unwrap().allowed)
        });
    }
    g.finish();
}

criterion_group!(benches, ring_gcm, ciphertext_format, in_process);
criterion_main!(benches);
