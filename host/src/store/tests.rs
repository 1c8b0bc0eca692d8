//! The store's behaviour, checked on both backends with the same code: what one backend
//! answers, the other must answer too.

use super::plugins::{self, PluginRow};
use super::testing::{both, insert_tenant};
use super::{keys, leases, on, plugin_kv, Db};
use crate::error::Error;
use crate::model::KeyState;

fn key(id: &str) -> keys::KeyRow {
    keys::KeyRow::sample(id, "t")
}

async fn with_key(db: &Db, id: &str) {
    let mut tx = db.begin().await.unwrap();
    keys::insert_key(&mut tx, &key(id), &[]).await.unwrap();
    let mut v = keys::KeyVersionRow::new(id, 1, "now".into(), 1);
    v.wrapped_material = Some(vec![1; 40]);
    keys::insert_version(&mut tx, &v).await.unwrap();
    tx.commit().await.unwrap();
}

/// A row that exists already is refused alike on both: `AlreadyExists`, naming the kind and
/// the columns (never the values) that collided.
#[tokio::test]
async fn a_unique_violation_names_what_exists_on_both_backends() {
    for (_guard, db) in both().await {
        insert_tenant(&db, "t").await;
        let mut tx = db.begin().await.unwrap();
        let again = super::tenants::insert(
            &mut tx,
            &super::tenants::TenantRow {
                id: "t".into(),
                created_at: String::new(),
                kek_wrapped: vec![0],
                account_id: "999999999999".into(),
            },
        )
        .await;
        match again {
            Err(Error::AlreadyExists { kind, id }) => {
                assert_eq!(kind, "tenant", "{:?}", db.dialect());
                assert_eq!(id, "with the same id", "{:?}", db.dialect());
            }
            other => panic!("{:?}: {other:?}", db.dialect()),
        }
    }
}

/// Rows round-trip with their domain values (bools, optional integers, blobs) and a state
/// change is a compare-and-set against the state it was authorized for.
#[tokio::test]
async fn keys_round_trip_and_state_changes_compare_and_set() {
    for (_guard, db) in both().await {
        insert_tenant(&db, "t").await;
        with_key(&db, "k1").await;
        let row = keys::get(&db, "k1").await.unwrap().unwrap();
        assert_eq!(row.state, KeyState::Enabled);
        assert!(!row.deletion_protection);
        assert_eq!(row.next_rotation_at, None);
        assert!(keys::grantees(&db, "k1").await.unwrap().is_empty());
        let mut tx = db.begin().await.unwrap();
        assert!(
            !keys::set_deletion_protection(&mut tx, "k1", KeyState::Disabled, false, true)
                .await
                .unwrap(),
            "not in the state it was read in"
        );
        assert!(
            keys::set_deletion_protection(&mut tx, "k1", KeyState::Enabled, false, true)
                .await
                .unwrap()
        );
        assert!(
            keys::set_state(&mut tx, "k1", KeyState::Enabled, KeyState::Disabled, None)
                .await
                .unwrap()
        );
        assert!(
            !keys::set_state(&mut tx, "k1", KeyState::Enabled, KeyState::Disabled, None)
                .await
                .unwrap(),
            "a second change from the old state changes nothing"
        );
        tx.commit().await.unwrap();
        let row = keys::get(&db, "k1").await.unwrap().unwrap();
        assert_eq!(row.state, KeyState::Disabled);
        assert!(row.deletion_protection);
        let versions = keys::versions(&db, "k1").await.unwrap();
        assert_eq!(versions.len(), 1);
        assert_eq!(versions[0].created_unix, Some(1));
        let page = keys::list(&db, "t", None, 10).await.unwrap();
        assert_eq!(page.len(), 1);
    }
}

/// Two transactions racing on the same compare-and-set: exactly one wins, on both backends
/// (SQLite serialises writers; PostgreSQL re-checks the `WHERE` once the first commits).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_compare_and_sets_have_one_winner() {
    for (_guard, db) in both().await {
        insert_tenant(&db, "t").await;
        with_key(&db, "k1").await;
        let wins = futures_util::future::join_all((0..8).map(|_| {
            let db = db.clone();
            async move {
                let mut tx = db.begin().await.unwrap();
                let won =
                    keys::set_state(&mut tx, "k1", KeyState::Enabled, KeyState::Disabled, None)
                        .await
                        .unwrap();
                tx.commit().await.unwrap();
                won
            }
        }))
        .await;
        assert_eq!(wins.iter().filter(|w| **w).count(), 1, "{:?}", db.dialect());
    }
}

/// A lease is held by one holder until it expires.
#[tokio::test]
async fn a_lease_has_one_holder_until_it_expires() {
    for (_guard, db) in both().await {
        let mut tx = db.begin().await.unwrap();
        assert!(leases::acquire(&mut tx, "pass", "a", 100, 110)
            .await
            .unwrap());
        assert!(!leases::acquire(&mut tx, "pass", "b", 105, 115)
            .await
            .unwrap());
        assert!(leases::acquire(&mut tx, "pass", "a", 105, 115)
            .await
            .unwrap());
        assert!(leases::acquire(&mut tx, "pass", "b", 116, 126)
            .await
            .unwrap());
        leases::release(&mut tx, "pass", "b").await.unwrap();
        assert!(leases::acquire(&mut tx, "pass", "a", 117, 127)
            .await
            .unwrap());
        tx.commit().await.unwrap();
    }
}

/// Of many callers creating one plugin key, or replacing the same value, exactly one wins.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn plugin_kv_conditional_writes_succeed_once() {
    use plugin_kv::Write;
    for (_guard, db) in both().await {
        insert_tenant(&db, "t").await;
        let created = futures_util::future::join_all((0u8..16).map(|i| {
            let db = db.clone();
            async move {
                let value = [i];
                plugin_kv::write(
                    &db,
                    "t",
                    "k",
                    Write::SetIf {
                        expected: None,
                        value: &value,
                    },
                )
                .await
                .unwrap()
            }
        }))
        .await;
        assert_eq!(created.iter().filter(|n| **n == 1).count(), 1);
        let listed = plugin_kv::list(&db, "t", "", None, 10).await.unwrap();
        assert_eq!(listed, ["k"]);
    }
}

/// Records appended concurrently from many transactions form one chain that verifies, on both
/// backends (PostgreSQL: the chain's advisory lock), and an edited record is found.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_audit_appends_form_one_verifiable_chain() {
    for (_guard, db) in both().await {
        futures_util::future::join_all((0..24).map(|i| {
            let db = db.clone();
            async move {
                let mut tx = db.begin().await.unwrap();
                let ev = crate::audit::AuditEvent::system("t", "test", "t", "Test", format!("{i}"));
                crate::audit::append(&mut tx, &ev).await.unwrap();
                tx.commit().await.unwrap();
            }
        }))
        .await;
        let report = crate::audit::verify(&db).await.unwrap();
        assert_eq!(report.records, 24, "{:?}", db.dialect());
        assert!(
            report.fault.is_none(),
            "{:?}: {:?}",
            db.dialect(),
            report.fault
        );
        let mut tx = db.begin().await.unwrap();
        super::testing::execute(
            &mut tx,
            "UPDATE audit_log SET outcome = 'edited' WHERE seq = 7",
        )
        .await;
        tx.commit().await.unwrap();
        let report = crate::audit::verify(&db).await.unwrap();
        assert_eq!(
            report.fault,
            Some(crate::audit::ChainFault::BadHash { seq: 7 }),
            "{:?}",
            db.dialect()
        );
    }
}

/// Two nodes on one PostgreSQL database write audit chains of their own: a node never waits
/// for another's transaction (with one cluster-wide chain, the second append below waited for
/// the first transaction to commit), the records of both nodes' transactions and group
/// commits verify as one log, and an edited, removed or inserted record of any chain is found.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nodes_write_audit_chains_of_their_own_and_never_wait_for_each_other() {
    use crate::audit::{self, chains, group_commit::GroupCommit, AuditEvent, ChainFault};
    let (_guard, url) = super::testing::postgres_database().await;
    let nodes = [Db::open(&url).await.unwrap(), Db::open(&url).await.unwrap()];
    for db in &nodes {
        chains::take_for_transactions(db).await.unwrap();
    }
    let event = |i: usize| AuditEvent::system("t", "test", "t", "Test", format!("{i}"));

    // Node 0 holds its chain's lock in an open transaction; node 1 appends meanwhile.
    let mut held = nodes[0].begin().await.unwrap();
    audit::append(&mut held, &event(0)).await.unwrap();
    let mut tx = nodes[1].begin().await.unwrap();
    tokio::time::timeout(
        std::time::Duration::from_secs(2),
        audit::append(&mut tx, &event(1)),
    )
    .await
    .expect("an append waited for another node's transaction")
    .unwrap();
    tx.commit().await.unwrap();
    held.commit().await.unwrap();

    // Both nodes' group commits and transactions, all at once.
    let groups = [
        GroupCommit::start(nodes[0].clone()).await.unwrap(),
        GroupCommit::start(nodes[1].clone()).await.unwrap(),
    ];
    let batched =
        futures_util::future::try_join_all((0..400).map(|i| groups[i % 2].append(event(100 + i))));
    let transactions = futures_util::future::join_all((0..20).map(|i| {
        let db = nodes[i % 2].clone();
        async move {
            let mut tx = db.begin().await.unwrap();
            audit::append(&mut tx, &event(1000 + i)).await.unwrap();
            tx.commit().await.unwrap();
        }
    }));
    let (seqs, _) = futures_util::future::join(batched, transactions).await;
    let seqs = seqs.unwrap();
    let used: std::collections::BTreeSet<i64> = seqs.iter().map(|s| chains::of(*s)).collect();
    assert!(used.len() >= 2, "the group commits wrote {used:?}");
    for group in &groups {
        group.close().await;
    }
    let report = audit::verify(&nodes[0]).await.unwrap();
    assert_eq!(report.fault, None);
    assert_eq!(report.records, 2 + 400 + 20);
    println!("{} records in {} chains", report.records, report.chains);
    // Each node's transactions chain and at least one group-commit chain each.
    assert!(report.chains >= 2 + 2, "{} chains", report.chains);

    // Tampering with any chain is found: here the group-commit chain with the most records.
    let mut counts = std::collections::BTreeMap::<i64, usize>::new();
    for seq in &seqs {
        *counts.entry(chains::of(*seq)).or_default() += 1;
    }
    let (&busiest, &records) = counts.iter().max_by_key(|(_, n)| **n).unwrap();
    assert!(records >= 3, "{counts:?}");
    let in_chain = |n: i64| chains::origin(busiest) + n;
    let tamper = |sql: String| {
        let db = nodes[1].clone();
        async move {
            let mut tx = db.begin().await.unwrap();
            super::testing::execute(&mut tx, &sql).await;
            tx.commit().await.unwrap();
            audit::verify(&db).await.unwrap().fault
        }
    };
    // A record copied into a chain no node took (even with its hash recomputed it would link).
    let forged = chains::origin(chains::taken(&nodes[0]).await.unwrap().last().unwrap() + 1) + 1;
    assert_eq!(
        tamper(format!(
            "INSERT INTO audit_log SELECT {forged}, time, request_id, principal, tenant, action, \
             resource, decision, policies, outcome, source, '{}', hash, policy_hash, trace_id, \
             user_agent, front, access_key_id FROM audit_log WHERE seq = {}",
            audit::GENESIS,
            in_chain(1)
        ))
        .await,
        Some(ChainFault::UnknownChain { seq: forged })
    );
    assert_eq!(
        tamper(format!("DELETE FROM audit_log WHERE seq = {forged}")).await,
        None
    );
    let edited = in_chain(3);
    assert_eq!(
        tamper(format!(
            "UPDATE audit_log SET outcome = 'x' WHERE seq = {edited}"
        ))
        .await,
        Some(ChainFault::BadHash { seq: edited })
    );
    let removed = in_chain(2);
    assert_eq!(
        tamper(format!("DELETE FROM audit_log WHERE seq = {removed}")).await,
        Some(ChainFault::Gap {
            expected: removed,
            found: removed + 1
        })
    );
}

/// PostgreSQL: `delete-plugin` (or gc) deletes a component while another tenant's upload of
/// the same bytes has stored it again and inserted its plugin row, uncommitted: the deletion
/// waits for the upload and keeps the component its plugin names. Before, the deletion
/// waited on the row the upload's upsert locked, then deleted it anyway (its `NOT EXISTS`
/// read a snapshot without the upload's plugin row). SQLite serialises writers.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_component_is_not_deleted_under_a_concurrent_upload_of_it() {
    let (_guard, db) = super::testing::postgres().await;
    let plugin = |tenant: &str, name: &str| PluginRow {
        tenant_id: tenant.into(),
        name: name.into(),
        sha256: "c0ffee".into(),
        world: "storage-backend".into(),
        size: 5,
        imports: "[]".into(),
        created_at: String::new(),
        created_by: String::new(),
        capabilities: "[]".into(),
    };
    for tenant in ["a", "bb"] {
        insert_tenant(&db, tenant).await;
    }
    let mut tx = db.begin().await.unwrap();
    plugins::insert_component(&mut tx, "c0ffee", b"bytes", "")
        .await
        .unwrap();
    plugins::insert(&mut tx, &plugin("a", "p")).await.unwrap();
    tx.commit().await.unwrap();

    // bb's upload of the same bytes, as `upload-plugin` writes it; not committed yet.
    let mut upload = db.begin().await.unwrap();
    plugins::insert_component(&mut upload, "c0ffee", b"bytes", "")
        .await
        .unwrap();
    plugins::insert(&mut upload, &plugin("bb", "q"))
        .await
        .unwrap();
    // a deletes its plugin, and the component with it if nothing names it, as
    // `delete-plugin` does.
    let deletion = tokio::spawn({
        let db = db.clone();
        async move {
            let mut tx = db.begin().await.unwrap();
            assert!(plugins::delete(&mut tx, "a", "p").await.unwrap());
            let removed = plugins::delete_component_if_unreferenced(&mut tx, "c0ffee")
                .await
                .unwrap();
            tx.commit().await.unwrap();
            removed
        }
    });
    // The deletion waits on the row the upload locked (with or without the fix); only then
    // does the upload commit.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while lock_waiters(&db).await == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the deletion never waited"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    upload.commit().await.unwrap();
    assert!(!deletion.await.unwrap(), "the component was deleted");
    assert!(plugins::has_component(&db, "c0ffee").await.unwrap());
    assert!(plugins::component_referenced(&db, "c0ffee").await.unwrap());
}

/// How many sessions on `db`'s database wait for a lock (PostgreSQL).
async fn lock_waiters(db: &Db) -> i64 {
    let found: crate::error::Result<i64> = async {
        on!(db, {
            Ok(sqlx::query_scalar(
                "SELECT COUNT(*) FROM pg_stat_activity \
                 WHERE datname = current_database() AND wait_event_type = 'Lock'",
            )
            .fetch_one(db)
            .await?)
        })
    }
    .await;
    found.unwrap()
}

/// A row naming one another request deleted meanwhile (a storage backend set to a plugin
/// deleted between the request's check and its write) is refused by the foreign key alike on
/// both: a conflict (`InvalidState`, 409), not an outage (it was `DatabaseUnavailable`, 503).
#[tokio::test]
async fn a_foreign_key_violation_is_a_conflict_on_both_backends() {
    for (_guard, db) in both().await {
        insert_tenant(&db, "t").await;
        let mut tx = db.begin().await.unwrap();
        let set = plugins::set_storage_backend(
            &mut tx,
            &plugins::BackendRow {
                tenant_id: "t".into(),
                plugin_name: "deleted-meanwhile".into(),
                config: "{}".into(),
                updated_at: "now".into(),
            },
        )
        .await;
        match set {
            Err(Error::InvalidState(m)) => assert!(m.contains("deleted while it ran"), "{m}"),
            other => panic!("{:?}: {other:?}", db.dialect()),
        }
    }
}

/// Two nodes' first starts on one empty database: the second waits for the first to commit
/// what it created, then finds it (on PostgreSQL it found nothing, and its insert of the
/// same row failed its start).
#[tokio::test]
async fn first_starts_are_serialized_on_both_backends() {
    for (_guard, db) in both().await {
        let mut first = db.begin().await.unwrap();
        super::meta::serialize_first_start(&mut first)
            .await
            .unwrap();
        assert!(super::meta::get(&mut first, "made-once")
            .await
            .unwrap()
            .is_none());
        let other = db.clone();
        let second = tokio::spawn(async move {
            let mut tx = other.begin().await.unwrap();
            super::meta::serialize_first_start(&mut tx).await.unwrap();
            let found = super::meta::get(&mut tx, "made-once").await.unwrap();
            tx.commit().await.unwrap();
            found
        });
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        super::meta::insert(&mut first, "made-once", b"first")
            .await
            .unwrap();
        first.commit().await.unwrap();
        assert_eq!(
            second.await.unwrap(),
            Some(b"first".to_vec()),
            "{:?}",
            db.dialect()
        );
    }
}

/// An audit export by key finds the key id as it is, alike on both backends: a `_` in it is
/// not a wildcard, and case counts (it was `LIKE`: `k_ab` found `k-ab`'s records too, and on
/// SQLite `K-AB`'s).
#[tokio::test]
async fn an_export_by_key_matches_the_key_exactly_on_both_backends() {
    for (_guard, db) in both().await {
        let mut tx = db.begin().await.unwrap();
        for key in ["k-ab", "k_ab", "K_AB"] {
            let ev = crate::audit::AuditEvent::system(
                "t",
                "test",
                "t",
                "Test",
                format!("Keyplane::Key::\"{key}\""),
            );
            crate::audit::append(&mut tx, &ev).await.unwrap();
        }
        tx.commit().await.unwrap();
        let filter = crate::audit::export::Filter {
            key: Some("k_ab".into()),
            ..Default::default()
        };
        let found = crate::audit::export::select(&db, &filter).await.unwrap();
        let resources: Vec<&str> = found.iter().map(|r| r.resource.as_str()).collect();
        assert_eq!(resources, ["Keyplane::Key::\"k_ab\""], "{:?}", db.dialect());
    }
}

/// At the tenant's row cap a write that adds a row is refused as full, but a conditional write
/// whose condition cannot hold (a create of a row there is, an update of one there is not)
/// is the conflict it is, not "full": a backend racing another at the cap must see it lost.
#[tokio::test(flavor = "multi_thread")]
async fn plugin_kv_conflicts_at_the_cap_are_conflicts() {
    use plugin_kv::{Write, Written};
    for (_guard, db) in both().await {
        insert_tenant(&db, "t").await;
        let byte = match db.dialect() {
            super::Dialect::Postgres => "'\\x00'::bytea",
            _ => "X'00'",
        };
        let mut tx = db.begin().await.unwrap();
        super::testing::execute(
            &mut tx,
            &format!(
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {}) \
                 INSERT INTO plugin_kv (tenant_id, key, value) SELECT 't', 'filler/' || i, {byte} FROM n",
                plugin_kv::MAX_ROWS_PER_TENANT
            ),
        )
        .await;
        tx.commit().await.unwrap();
        let write = |key: &'static str, write: Write<'static>| {
            let db = db.clone();
            async move {
                plugin_kv::write_within_cap(&db, "t", key, write)
                    .await
                    .unwrap()
            }
        };
        let one: &'static [u8] = &[1];
        let zero: &'static [u8] = &[0];
        assert_eq!(write("new", Write::Set { value: one }).await, Written::Full);
        let create_existing = Write::SetIf {
            expected: None,
            value: one,
        };
        assert_eq!(write("filler/1", create_existing).await, Written::Rows(0));
        let update_missing = Write::SetIf {
            expected: Some(zero),
            value: one,
        };
        assert_eq!(write("missing", update_missing).await, Written::Rows(0));
        let update = Write::SetIf {
            expected: Some(zero),
            value: one,
        };
        assert_eq!(write("filler/2", update).await, Written::Rows(1));
    }
}
