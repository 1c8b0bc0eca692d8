//! The auditor's `keyplane audit …` tools against a real server's data directory: signed
//! checkpoints (verified here with the `openssl` CLI too), and every way of altering the log
//! that `verify` must catch; `export` and `search` in their documented JSON schema.

mod common;

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{b64, Server, BIN};
use serde_json::{json, Value};

fn audit(args: &[&str], data: &Path) -> Output {
    Command::new(BIN)
        .arg("audit")
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn sql(data: &Path, statement: &str) {
    common::sqlite(&data.join("keyplane.db"), statement);
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.path().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

/// A stopped node's data dir with some history and at least two signed checkpoints while it
/// ran, the last of them before the final records, which the stop (SIGTERM) sealed with one
/// more. Returns the key used, the last record and the last checkpoint before the stop.
async fn history(dir: &Path) -> Value {
    let mut s = Server::start_with_env(
        dir,
        &[
            // info: request spans exist, so records carry the request's trace id.
            ("RUST_LOG", "info"),
            ("KEYPLANE_AUDIT__CHECKPOINT_EVERY_RECORDS", "5"),
            ("KEYPLANE_AUDIT__CHECKPOINT_INTERVAL_SECONDS", "0"),
        ],
    )
    .await;
    let pool = s.sql().await;
    let wait_for = |want: i64| {
        let pool = pool.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit_checkpoints")
                    .fetch_one(&pool)
                    .await
                    .unwrap();
                if n >= want {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "{n} checkpoints signed, not {want}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    let key = s.create_key(&s.admin, "envelope").await;
    for i in 0..6 {
        s.encrypt(&s.admin, &key, format!("record {i}").as_bytes(), json!({}))
            .await;
    }
    wait_for(1).await;
    for i in 6..12 {
        s.encrypt(&s.admin, &key, format!("record {i}").as_bytes(), json!({}))
            .await;
    }
    let denied = s
        .call(
            Some("kp_not_a_token"),
            "encrypt",
            json!({ "key_id": key, "plaintext": b64(b"x") }),
        )
        .await;
    assert_eq!(denied.0, 401);
    let (_, other) = s.tenant_with_admin("other").await;
    assert_eq!(
        s.call(Some(&other), "describe-key", json!({ "key_id": key }))
            .await
            .0,
        404
    );
    // A client that names itself and continues a trace.
    let r = s
        .client
        .post(format!("{}/v1/describe-key", s.base))
        .bearer_auth(&s.admin)
        .header("user-agent", "audit-test/1.0")
        .header("traceparent", format!("00-{TRACE_ID}-00f067aa0ba902b7-01"))
        .json(&json!({ "key_id": key }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    wait_for(2).await;
    // A few records after the last checkpoint.
    s.create_key(&s.admin, "hsm").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (head, signed): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT MAX(seq) FROM audit_log), (SELECT MAX(seq) FROM audit_checkpoints)",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(head > signed, "no record after the last checkpoint");
    s.stop();
    json!({ "key": key, "head": head, "signed_while_running": signed })
}

#[tokio::test(flavor = "multi_thread")]
async fn verify_catches_edits_removals_reorders_truncation_and_rehashing() {
    let base = tempfile::tempdir().unwrap();
    let data = base.path().join("node");
    history(&data).await;

    let ok = audit(&["verify"], &data);
    assert!(ok.status.success(), "{}", text(&ok));
    assert!(text(&ok).contains("signed checkpoints"), "{}", text(&ok));

    // The checkpoint signature verifies with openssl against the published key.
    let pk = audit(&["public-key"], &data);
    assert!(pk.status.success());
    let pem = String::from_utf8_lossy(&pk.stdout).to_string();
    assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----"));
    let line = std::fs::read_to_string(data.join("audit-checkpoints.jsonl")).unwrap();
    let cp: Value = serde_json::from_str(line.lines().next().unwrap()).unwrap();
    let work = tempfile::tempdir().unwrap();
    let w = |name: &str, bytes: &[u8]| {
        let p = work.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        p.to_string_lossy().into_owned()
    };
    let msg = format!(
        "keyplane-audit-checkpoint-v1\n{}\n{}\n{}\n",
        cp["seq"],
        cp["head_hash"].as_str().unwrap(),
        cp["time"].as_str().unwrap()
    );
    let sig = common::unb64(&cp["signature"]);
    let out = Command::new("openssl")
        .args([
            "dgst",
            "-sha256",
            "-verify",
            &w("pub.pem", pem.as_bytes()),
            "-signature",
            &w("sig.der", &sig),
            &w("msg", msg.as_bytes()),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let (first_cp, last_cp): (i64, i64) = {
        let cps: Vec<Value> = line
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        (
            cps[0]["seq"].as_i64().unwrap(),
            cps[cps.len() - 1]["seq"].as_i64().unwrap(),
        )
    };
    let case = |name: &str| {
        let d = base.path().join(name);
        copy_dir(&data, &d);
        d
    };
    let expect_fail = |d: &Path, needle: &str| {
        let out = audit(&["verify"], d);
        assert!(
            !out.status.success(),
            "verify passed on {}: {}",
            d.display(),
            text(&out)
        );
        assert!(
            text(&out).contains(needle),
            "{}: {}",
            d.display(),
            text(&out)
        );
    };

    // A hand-edited record.
    let d = case("edited");
    sql(&d, "UPDATE audit_log SET outcome = 'ok' WHERE seq = 3");
    sql(
        &d,
        "UPDATE audit_log SET principal = 'someone-else' WHERE seq = 4",
    );
    expect_fail(&d, "record 4");
    // A deleted record.
    let d = case("deleted");
    sql(&d, "DELETE FROM audit_log WHERE seq = 6");
    expect_fail(&d, "removed");
    // Two records swapped.
    let d = case("reordered");
    sql(&d, "UPDATE audit_log SET seq = -1 WHERE seq = 7; UPDATE audit_log SET seq = 7 WHERE seq = 8; UPDATE audit_log SET seq = 8 WHERE seq = -1");
    expect_fail(&d, "record 7");
    // The tail cut off behind a checkpoint: the chain alone is fine, the checkpoint is not.
    let d = case("truncated");
    sql(&d, &format!("DELETE FROM audit_log WHERE seq >= {last_cp}"));
    expect_fail(&d, "truncated");
    // ... also when the checkpoint rows are deleted with it (the file still has them).
    let d = case("truncated-and-hidden");
    sql(&d, &format!("DELETE FROM audit_log WHERE seq >= {first_cp}; DELETE FROM audit_checkpoints WHERE seq >= {first_cp}"));
    expect_fail(&d, "missing from the database");
    // A record edited and every later hash recomputed by someone with database access.
    let d = case("rehashed");
    rehash_from(&d, 2).await;
    let chain_only = audit(&["verify"], &d);
    assert!(
        text(&chain_only).contains("audit chain OK"),
        "{}",
        text(&chain_only)
    );
    expect_fail(&d, "rewritten");
    // A forged checkpoint.
    let d = case("forged");
    sql(
        &d,
        &format!(
            "UPDATE audit_checkpoints SET time = '2030-01-01T00:00:00.000Z' WHERE seq = {first_cp}"
        ),
    );
    expect_fail(&d, &format!("checkpoint at record {first_cp}"));
}

/// What an auditor holds `verify` to beyond the chain: the stop signs the records written
/// since the last checkpoint; every checkpoint file given (a copy kept elsewhere) must be in
/// the database; a checkpoint must verify under the key it names; the key in the data dir is
/// trusted only with a warning; `--require-signed` fails on records protected by the chain
/// only.
#[tokio::test(flavor = "multi_thread")]
async fn verify_holds_the_log_to_its_seal_the_kept_checkpoints_and_the_named_keys() {
    let base = tempfile::tempdir().unwrap();
    let data = base.path().join("node");
    let h = history(&data).await;
    let head = h["head"].as_i64().unwrap();
    let case = |name: &str| {
        let d = base.path().join(name);
        copy_dir(&data, &d);
        d
    };
    let verify = |d: &Path, args: &[&str]| {
        let mut all = vec!["verify"];
        all.extend_from_slice(args);
        audit(&all, d)
    };
    let expect = |out: &Output, ok: bool, needle: &str| {
        assert_eq!(out.status.success(), ok, "{}", text(out));
        assert!(text(out).contains(needle), "{needle}: {}", text(out));
    };
    let file_of = |d: &Path| d.join("audit-checkpoints.jsonl");
    let checkpoints = |d: &Path| -> Vec<Value> {
        std::fs::read_to_string(file_of(d))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let write_checkpoints = |d: &Path, cps: &[Value]| {
        let lines: String = cps.iter().map(|cp| format!("{cp}\n")).collect();
        std::fs::write(file_of(d), lines).unwrap();
    };
    let cps = checkpoints(&data);
    let first_cp = cps[0]["seq"].as_i64().unwrap();

    // The stop signed the records written since the last checkpoint: none is left to the
    // chain alone, and the last record cannot go unnoticed.
    let out = verify(&data, &[]);
    expect(
        &out,
        true,
        "; 0 records after their chain's last checkpoint are protected by the chain only",
    );
    let d = case("last-record-cut");
    sql(
        &d,
        "DELETE FROM audit_log WHERE seq = (SELECT MAX(seq) FROM audit_log)",
    );
    expect(&verify(&d, &[]), false, "truncated");
    assert_eq!(cps.last().unwrap()["seq"].as_i64(), Some(head), "{cps:?}");

    // Without --public-key, the data dir's key is used with a warning; with it, silently.
    let warning = "no --public-key given";
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(warning),
        "{}",
        text(&out)
    );
    let trusted = base.path().join("trusted.pem");
    std::fs::copy(data.join("audit-signing-key.pem"), &trusted).unwrap();
    let trusted = trusted.to_str().unwrap();
    let out = verify(&data, &["--public-key", trusted]);
    expect(&out, true, "audit checkpoints OK");
    assert!(!text(&out).contains(warning), "{}", text(&out));

    // The log's tail and every checkpoint of it deleted, and the node's file cut to match:
    // the data dir agrees with itself, and only the auditor's own copy of the file (kept on
    // write-once storage) shows what is gone.
    let kept = base.path().join("kept-checkpoints.jsonl");
    std::fs::copy(file_of(&data), &kept).unwrap();
    let kept = kept.to_str().unwrap();
    expect(
        &verify(&data, &["--checkpoints", kept]),
        true,
        "audit checkpoints OK",
    );
    let d = case("hidden-everywhere");
    sql(&d, &format!("DELETE FROM audit_log WHERE seq >= {first_cp}; DELETE FROM audit_checkpoints WHERE seq >= {first_cp}"));
    write_checkpoints(&d, &[]);
    expect(&verify(&d, &[]), true, "audit chain OK");
    let missing = format!("checkpoint at record {first_cp}: in the checkpoint file but missing from the database (deleted) (checkpoint file {kept})");
    expect(&verify(&d, &["--checkpoints", kept]), false, &missing);
    // Each file given is checked, whichever comes first.
    let own = file_of(&d);
    let own = own.to_str().unwrap();
    expect(
        &verify(&d, &["--checkpoints", own, "--checkpoints", kept]),
        false,
        &missing,
    );
    // A file given that is not there is an error, not a file with nothing in it.
    let nowhere = base.path().join("nowhere.jsonl");
    expect(
        &verify(&data, &["--checkpoints", nowhere.to_str().unwrap()]),
        false,
        "nowhere.jsonl",
    );

    // A checkpoint naming another key than the one it verifies under (in the table and the
    // file alike): the signature alone does not cover the name.
    let d = case("other-fingerprint");
    let other = "ab".repeat(32);
    sql(
        &d,
        &format!("UPDATE audit_checkpoints SET key_fingerprint = '{other}' WHERE seq = {first_cp}"),
    );
    let mut edited = checkpoints(&d);
    edited[0]["key_fingerprint"] = json!(other);
    write_checkpoints(&d, &edited);
    expect(
        &verify(&d, &[]),
        false,
        &format!("checkpoint at record {first_cp}: its key_fingerprint names key {other}"),
    );

    // --require-signed: every record of a stopped node is signed; with the stop's checkpoint
    // gone (a node killed, or the seal deleted everywhere), the records after the previous
    // one are counted per chain, and fail the flag.
    expect(
        &verify(&data, &["--require-signed"]),
        true,
        "audit checkpoints OK",
    );
    let d = case("unsealed");
    let mut unsealed = checkpoints(&d);
    let seal = unsealed.pop().unwrap()["seq"].as_i64().unwrap();
    let previous = unsealed.last().unwrap()["seq"].as_i64().unwrap();
    sql(
        &d,
        &format!("DELETE FROM audit_checkpoints WHERE seq = {seal}"),
    );
    write_checkpoints(&d, &unsealed);
    let per_chain = format!(
        "chain 0: {} records after its last checkpoint (record {previous})",
        seal - previous
    );
    expect(&verify(&d, &[]), true, &per_chain);
    let out = verify(&d, &["--require-signed"]);
    expect(&out, false, "FAILED (--require-signed)");
    expect(&out, false, &per_chain);
}

/// Change record `from` and recompute the chain from there, as an attacker with the
/// database (but not the HSM) could.
async fn rehash_from(data: &Path, from: i64) {
    let url = format!("sqlite://{}", data.join("keyplane.db").display());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    let mut rows: Vec<keyplane::audit::AuditRecord> =
        sqlx::query_as("SELECT * FROM audit_log ORDER BY seq")
            .fetch_all(&pool)
            .await
            .unwrap();
    let mut prev = rows[(from - 2) as usize].hash.clone();
    for r in rows.iter_mut().skip((from - 1) as usize) {
        if r.seq == from {
            r.outcome = "ok".into();
            r.principal = "nobody".into();
        }
        r.prev_hash = prev.clone();
        r.hash = r.compute_hash();
        prev = r.hash.clone();
        sqlx::query("UPDATE audit_log SET principal = ?, outcome = ?, prev_hash = ?, hash = ? WHERE seq = ?")
            .bind(&r.principal)
            .bind(&r.outcome)
            .bind(&r.prev_hash)
            .bind(&r.hash)
            .bind(r.seq)
            .execute(&pool)
            .await
            .unwrap();
    }
    pool.close().await;
}

fn jsonl(o: &Output) -> Vec<Value> {
    assert!(o.status.success(), "{}", text(o));
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn export_and_search_in_the_documented_schema() {
    let base = tempfile::tempdir().unwrap();
    let data = base.path().join("node");
    let h = history(&data).await;
    let key = h["key"].as_str().unwrap();

    let all = jsonl(&audit(&["export", "--format", "jsonl"], &data));
    assert!(all.len() > 15);
    for (i, r) in all.iter().enumerate() {
        assert_eq!(r["seq"].as_i64(), Some(i as i64 + 1));
        for field in [
            "schema_version",
            "event_time",
            "request_id",
            "principal",
            "tenant",
            "action",
            "resource",
            "decision",
            "policies",
            "outcome",
            "source_address",
            "policy_hash",
            "trace_id",
            "user_agent",
            "front",
            "prev_hash",
            "hash",
        ] {
            assert!(r.get(field).is_some(), "{field} missing in {r}");
        }
    }
    // A time range: everything up to the 5th record's time.
    let t5 = all[4]["event_time"].as_str().unwrap();
    let early = jsonl(&audit(&["export", "--until", t5], &data));
    assert!(early.len() >= 5 && early.len() < all.len());
    assert!(early
        .iter()
        .all(|r| r["event_time"].as_str().unwrap() <= t5));
    let late = jsonl(&audit(&["export", "--since", t5], &data));
    assert!(late.iter().all(|r| r["event_time"].as_str().unwrap() >= t5));
    assert_eq!(
        early.len() + late.len() - early.iter().filter(|r| r["event_time"] == t5).count(),
        all.len()
    );
    // A reader that stops early (`| head`) ends the tools quietly, as it does other Unix
    // tools: no panic in a print, no error message.
    for tool in ["verify", "export"] {
        let mut child = Command::new(BIN)
            .args(["audit", tool, "--data-dir"])
            .arg(&data)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !err.contains("panicked") && !err.contains("Broken pipe"),
            "{tool}: {err}"
        );
    }

    let bad = audit(&["export", "--since", "yesterday"], &data);
    assert!(!bad.status.success());
    assert!(text(&bad).contains("RFC 3339"), "{}", text(&bad));

    // Who asked: user agent and trace id of the request that gave them.
    let described: Vec<&Value> = all
        .iter()
        .filter(|r| r["user_agent"] == "audit-test/1.0")
        .collect();
    assert_eq!(described.len(), 1, "{all:?}");
    assert_eq!(described[0]["action"], "DescribeKey");
    assert_eq!(described[0]["trace_id"], TRACE_ID);
    assert!(all
        .iter()
        .filter(|r| r["action"] == "Encrypt")
        .all(|r| r["trace_id"].is_string()));
    // Through which front: every request here came through the native API (denied and
    // failed ones too); records of the node's own doings (first start) name none.
    for r in &all {
        let request = r["source_address"] != "local" && r["decision"] != "system";
        let front = if request {
            "native".into()
        } else {
            Value::Null
        };
        assert_eq!(r["front"], front, "{r}");
    }
    assert!(all
        .iter()
        .any(|r| r["decision"] == "deny" || r["outcome"] != "ok"));

    // Search by key and action; by decision; by principal.
    let encrypts = jsonl(&audit(
        &["search", "--key", key, "--action", "Encrypt"],
        &data,
    ));
    assert_eq!(encrypts.len(), 12);
    assert!(encrypts
        .iter()
        .all(|r| r["decision"] == "allow" && r["outcome"] == "ok"));
    let denied = jsonl(&audit(&["search", "--decision", "deny"], &data));
    assert!(
        denied
            .iter()
            .any(|r| r["action"] == "DescribeKey" && r["outcome"] == "NotFound"),
        "{denied:?}"
    );
    let principal = encrypts[0]["principal"].as_str().unwrap();
    let by_principal = jsonl(&audit(
        &["search", "--principal", principal, "--limit", "3"],
        &data,
    ));
    assert_eq!(by_principal.len(), 3);
    assert!(by_principal.iter().all(|r| r["principal"] == principal));
    let none = jsonl(&audit(&["search", "--key", "k-does-not-exist"], &data));
    assert!(none.is_empty());
}

/// `n` encrypt requests, a few dozen at a time (one audit record each).
async fn encrypts(s: &Server, key: &str, n: usize) {
    for chunk in (0..n).collect::<Vec<_>>().chunks(50) {
        let calls = chunk.iter().map(|i| {
            s.call(
                Some(&s.admin),
                "encrypt",
                json!({ "key_id": key, "plaintext": b64(format!("r{i}").as_bytes()) }),
            )
        });
        for (status, v) in futures::future::join_all(calls).await {
            assert_eq!(status, 200, "{v}");
        }
    }
}

/// `n` encrypts, then wait for the checkpoint that covers them (one segment boundary).
async fn round(s: &Server, pool: &sqlx::SqlitePool, key: &str, n: usize) {
    encrypts(s, key, n).await;
    let head: i64 = sqlx::query_scalar("SELECT MAX(seq) FROM audit_log")
        .fetch_one(pool)
        .await
        .unwrap();
    checkpointed(pool, head).await;
}

/// Wait until a signed checkpoint covers record `seq` or later.
async fn checkpointed(pool: &sqlx::SqlitePool, seq: i64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let last: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM audit_checkpoints")
            .fetch_one(pool)
            .await
            .unwrap();
        if last >= seq {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no checkpoint at {seq} (last {last})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// (live records, lowest live seq, archived segments) of a data dir's database.
async fn live_and_segments(pool: &sqlx::SqlitePool) -> (i64, i64, i64) {
    sqlx::query_as(
        "SELECT (SELECT COUNT(*) FROM audit_log), (SELECT MIN(seq) FROM audit_log), \
         (SELECT COUNT(*) FROM audit_segments)",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

/// The node's archive settings (the archive command reads the same configuration).
const RETENTION: &[(&str, &str)] = &[
    ("KEYPLANE_AUDIT__CHECKPOINT_EVERY_RECORDS", "200"),
    ("KEYPLANE_AUDIT__CHECKPOINT_INTERVAL_SECONDS", "0"),
    ("KEYPLANE_AUDIT__ARCHIVE_SEGMENT_RECORDS", "500"),
    ("KEYPLANE_AUDIT__ARCHIVE_INTERVAL_SECONDS", "1"),
    ("KEYPLANE_AUDIT__RETENTION_RECORDS", "300"),
];

/// `keyplane audit archive <args>` with [`RETENTION`].
fn archive_cmd(args: &[&str], data: &Path) -> Output {
    Command::new(BIN)
        .args(["audit", "archive"])
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .envs(RETENTION.iter().copied())
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn archive_and_retention_keep_the_chain_verifiable() {
    let base = tempfile::tempdir().unwrap();
    let data = base.path().join("node");
    let mut env = vec![
        ("RUST_LOG", "warn"),
        // Passes only on demand (run-scheduler).
        ("KEYPLANE_LIFECYCLE__SCHEDULER_INTERVAL_SECONDS", "0"),
    ];
    env.extend_from_slice(RETENTION);
    let mut s = Server::start_with_env(&data, &env).await;
    let pool = s.sql().await;
    let key = s.create_key(&s.admin, "envelope").await;
    // Checkpoints at about 300, 600, 900 and 1200: segments of one checkpoint each (two
    // would exceed 500 records).
    for _ in 0..4 {
        round(&s, &pool, &key, 300).await;
    }

    // The command, beside the running node: a dry run changes nothing.
    let dry = archive_cmd(&["--dry-run"], &data);
    assert!(dry.status.success(), "{}", text(&dry));
    assert!(text(&dry).contains("would archive"), "{}", text(&dry));
    assert_eq!(live_and_segments(&pool).await.2, 0);
    assert!(!data.join("audit-archive").exists());

    let (live_before, _, _) = live_and_segments(&pool).await;
    let out = archive_cmd(&[], &data);
    assert!(out.status.success(), "{}", text(&out));
    let (live, first_live, segments) = live_and_segments(&pool).await;
    assert_eq!(segments, 4, "{}", text(&out));
    // The last three segments are within 300 records of the head: only the first leaves.
    assert!(
        live < live_before - 800,
        "{live} of {live_before} left: {}",
        text(&out)
    );
    assert!(first_live > 900, "first live record {first_live}");
    let mut files: Vec<String> = std::fs::read_dir(data.join("audit-archive"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(files.len() as i64, segments, "{files:?}");
    let (first_file, first_end): (String, i64) =
        sqlx::query_as("SELECT file_name, last_seq FROM audit_segments WHERE first_seq = 1")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(first_file, format!("segment-1-{first_end}.jsonl.gz"));
    assert!(files.contains(&first_file), "{files:?}");
    // Checkpoints stay in the database.
    let cps: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit_checkpoints")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(cps, 4);

    // The scheduler pass does the same for what came since.
    round(&s, &pool, &key, 300).await;
    round(&s, &pool, &key, 300).await;
    let head: i64 = sqlx::query_scalar("SELECT MAX(seq) FROM audit_log")
        .fetch_one(&pool)
        .await
        .unwrap();
    let pass = s.ok(&s.admin, "run-scheduler", json!({})).await;
    let archived = &pass["audit_archive"];
    assert!(
        !archived["archived"].as_array().unwrap().is_empty(),
        "{pass}"
    );
    assert!(archived["pruned_records"].as_u64().unwrap() > 0, "{pass}");
    let (_, first_after, segments_after) = live_and_segments(&pool).await;
    assert!(first_after > first_live && segments_after > segments);
    s.stop();

    let ok = audit(&["verify"], &data);
    assert!(ok.status.success(), "{}", text(&ok));
    assert!(text(&ok).contains("archived segments"), "{}", text(&ok));
    // Export reads the archived records, then the live ones: the whole log, in order.
    let exported = jsonl(&audit(&["export"], &data));
    let seqs: Vec<i64> = exported
        .iter()
        .map(|r| r["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(seqs, (1..=seqs.len() as i64).collect::<Vec<_>>());
    assert!(seqs.len() as i64 > head);
    let pruned = &exported[..first_after as usize - 1];
    assert!(pruned.iter().any(|r| r["action"] == "Encrypt"));
    assert!(pruned.iter().all(|r| r["schema_version"] == 1));
    let searched = jsonl(&audit(&["search", "--key", &key, "--limit", "5"], &data));
    assert_eq!(searched.len(), 5);
    assert!(searched[0]["seq"].as_i64().unwrap() < first_live);

    let case = |name: &str| {
        let d = base.path().join(name);
        copy_dir(&data, &d);
        d
    };
    let expect_fail = |d: &Path, needle: &str| {
        let out = audit(&["verify"], d);
        assert!(!out.status.success(), "verify passed: {}", text(&out));
        assert!(text(&out).contains(needle), "{needle}: {}", text(&out));
    };
    // A byte of an archive file changed.
    let d = case("altered");
    let file = d.join("audit-archive").join(&first_file);
    let mut bytes = std::fs::read(&file).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    std::fs::write(&file, bytes).unwrap();
    expect_fail(&d, &format!("archive file {first_file}: SHA-256 differs"));
    // An archive file edited (a record's action changed, gzipped again): export and search
    // refuse to read it, naming it, rather than show the edited record.
    let d = case("segment-edited");
    let file = d.join("audit-archive").join(&first_file);
    let mut plain = String::new();
    flate2::read::GzDecoder::new(std::fs::File::open(&file).unwrap())
        .read_to_string(&mut plain)
        .unwrap();
    let forged = plain.replacen("\"action\":\"Encrypt\"", "\"action\":\"Forged\"", 1);
    assert_ne!(forged, plain);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(forged.as_bytes()).unwrap();
    std::fs::write(&file, gz.finish().unwrap()).unwrap();
    for args in [&["search", "--action", "Forged"][..], &["export"]] {
        let out = audit(args, &d);
        assert!(!out.status.success(), "{args:?}: {}", text(&out));
        assert!(
            text(&out).contains(&format!("{first_file}: SHA-256 differs")),
            "{args:?}: {}",
            text(&out)
        );
    }
    // An archive file deleted.
    let d = case("deleted");
    std::fs::remove_file(d.join("audit-archive").join(&first_file)).unwrap();
    expect_fail(&d, &format!("archive file {first_file} is missing"));
    // The first live record (where the archive ends) removed.
    let d = case("boundary");
    sql(
        &d,
        &format!("DELETE FROM audit_log WHERE seq = {first_after}"),
    );
    expect_fail(&d, &format!("record {first_after}: archived but missing"));
    // A checkpoint over an archived record is still checked: one removed from the database is
    // found in the checkpoint file.
    let d = case("checkpoint");
    sql(
        &d,
        &format!("DELETE FROM audit_checkpoints WHERE seq = {first_end}"),
    );
    expect_fail(&d, &format!("checkpoint at record {first_end}"));
    // Prune lets a segment go only with its file there and whole: with every segment due
    // (a retention of one record), the first segment still in the database without its file,
    // its records and every later segment's stay.
    let d = case("prune-missing-file");
    let query = |d: &Path, q: &str| {
        let out = Command::new("sqlite3")
            .arg(d.join("keyplane.db"))
            .arg(q)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let kept = query(
        &d,
        "SELECT first_seq || ' ' || file_name FROM audit_segments WHERE pruned_at IS NULL ORDER BY first_seq LIMIT 1",
    );
    let (kept_first, kept_file) = kept.split_once(' ').unwrap();
    std::fs::remove_file(d.join("audit-archive").join(kept_file)).unwrap();
    let out = Command::new(BIN)
        .args(["audit", "archive", "--data-dir"])
        .arg(&d)
        .envs(RETENTION.iter().copied())
        .env("KEYPLANE_AUDIT__RETENTION_RECORDS", "1")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let first_live: i64 = query(&d, "SELECT MIN(seq) FROM audit_log").parse().unwrap();
    assert_eq!(
        first_live,
        kept_first.parse::<i64>().unwrap(),
        "{}",
        text(&out)
    );
    // The segment without its file is not marked pruned (later ones may be: their records
    // stay all the same, behind it).
    assert_eq!(
        query(
            &d,
            &format!("SELECT pruned_at IS NULL FROM audit_segments WHERE first_seq = {kept_first}")
        ),
        "1"
    );
}
