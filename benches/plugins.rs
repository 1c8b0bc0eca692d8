//! Plugin invocation costs (criterion).
//!
//! - `rotation/keyplane`: what keyplane does per `next-rotation` call: a fresh instance from the
//!   cached `InstancePre` on the pooling allocator, with fuel, epoch deadline and limiter, then
//!   the call and error classification.
//! - `rotation/bare`: the same component on a default wasmtime engine (no pooling, no fuel, no
//!   deadline), `InstancePre` instantiate + call only. The target: keyplane within 2x.
//! - `storage-get/kv-plugin` vs `storage-get/host-direct`: one blob read through the `kv`
//!   storage plugin versus the same read done by the host on the kv table.
//!
//! Needs the plugins built (`scripts/build-plugins`). Run: `cargo bench --bench plugins`.

use std::path::PathBuf;

use criterion::{criterion_group, criterion_main, Criterion};
use keyplane::config::PluginsConfig;
use keyplane::plugins::bindings::v0_1::rotation::keyplane::plugin::types::KeyInfo;
use keyplane::plugins::bindings::v0_1::rotation::{RotationSchedule, RotationSchedulePre};
use keyplane::plugins::{Grants, HostState, PluginRuntime, StorageOp, World};
use keyplane::store::plugins::PluginRow;
use keyplane::store::Db;
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine, Store};

fn wasm(name: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../plugins/target/wasm32-wasip2/release")
        .join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}; run scripts/build-plugins", p.display()))
}

fn info() -> KeyInfo {
    KeyInfo {
        key_id: "k-bench".into(),
        key_spec: "AES_256_GCM".into(),
        created_at: 1_700_000_000,
        current_version: 1,
        version_count: 1,
        last_rotation: None,
        encryptions_since_rotation: 0,
        decryptions_since_rotation: 0,
    }
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = rt
        .block_on(Db::open(&format!(
            "sqlite://{}",
            dir.path().join("b.db").display()
        )))
        .unwrap();
    let runtime = rt.block_on(async {
        std::sync::Arc::new(
            PluginRuntime::new(
                PluginsConfig::default(),
                dir.path().join("plugins"),
                db.clone(),
            )
            .unwrap(),
        )
    });
    let rotation = wasm("rotation_fixed_interval.wasm");
    let sha = runtime
        .install(&rotation, World::RotationSchedule)
        .unwrap()
        .sha256;
    let config = vec![("period".to_string(), "30d".to_string())];
    let info = info();

    let mut group = c.benchmark_group("rotation");
    group.bench_function("keyplane", |b| {
        b.to_async(&rt).iter(|| async {
            runtime
                .next_rotation("bench", &sha, &config, &info, 0)
                .await
                .unwrap()
        })
    });
    // Bare wasmtime: default engine, plain InstancePre, no limits.
    let engine = Engine::new(&Config::new()).unwrap();
    let mut linker: Linker<HostState> = Linker::new(&engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).unwrap();
    RotationSchedule::add_to_linker::<_, HasSelf<HostState>>(&mut linker, |s| s).unwrap();
    let component = Component::from_binary(&engine, &rotation).unwrap();
    let pre = RotationSchedulePre::new(linker.instantiate_pre(&component).unwrap()).unwrap();
    group.bench_function("bare", |b| {
        b.to_async(&rt).iter(|| async {
            let mut store = Store::new(
                &engine,
                HostState::new("bare".into(), usize::MAX, usize::MAX, Grants::default()).unwrap(),
            );
            let bindings = pre.instantiate_async(&mut store).await.unwrap();
            bindings
                .keyplane_plugin_schedule()
                .call_next_rotation(&mut store, &config, &info, 0)
                .await
                .unwrap()
                .unwrap()
        })
    });
    group.finish();

    // Storage get: kv plugin versus the host reading its kv table directly.
    rt.block_on(async {
        let mut tx = db.begin().await.unwrap();
        let tenant = keyplane::store::tenants::TenantRow {
            id: "bench".into(),
            created_at: "now".into(),
            kek_wrapped: vec![0],
            account_id: "000000000001".into(),
        };
        keyplane::store::tenants::insert(&mut tx, &tenant)
            .await
            .unwrap();
        tx.commit().await.unwrap();
    });
    let kv_sha = runtime
        .install(&wasm("storage_kv.wasm"), World::StorageBackend)
        .unwrap()
        .sha256;
    let plugin = PluginRow {
        tenant_id: "bench".into(),
        name: "kv".into(),
        sha256: kv_sha,
        world: "storage-backend".into(),
        size: 0,
        imports: "[]".into(),
        created_at: String::new(),
        created_by: String::new(),
        capabilities: "[]".into(),
    };
    let blob = vec![7u8; 60];
    rt.block_on(runtime.storage(
        &plugin,
        &[],
        StorageOp::Put {
            name: "keys/k/1".into(),
            data: blob,
            expected_version: None,
        },
    ))
    .unwrap();
    let kv = runtime.kv("bench");
    let mut group = c.benchmark_group("storage-get");
    group.bench_function("kv-plugin", |b| {
        b.to_async(&rt).iter(|| async {
            runtime
                .storage(
                    &plugin,
                    &[],
                    StorageOp::Get {
                        name: "keys/k/1".into(),
                    },
                )
                .await
                .unwrap()
        })
    });
    group.bench_function("host-direct", |b| {
        b.to_async(&rt)
            .iter(|| async { kv.get("tenants/bench/keys/k/1").await.unwrap().unwrap() })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
