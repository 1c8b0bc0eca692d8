//! Request quotas (`host/src/quotas.rs`): a tenant or principal past its token bucket is
//! refused on every front with that front's throttling answer (native and Transit `429` with
//! `Retry-After`, over HTTP/2 and HTTP/1.1; AWS `ThrottlingException` as boto3 reads it),
//! other tenants are not, the refusals are audited as one record per principal and window, and
//! SIGHUP changes the quotas of a running node.

mod common;

use std::time::Duration;

use common::{aws, Server};
use serde_json::{json, Value};

/// `curl` over `http` (`--http2` or `--http1.1`): status, `Retry-After` and body.
fn curl(
    server: &Server,
    http: &str,
    path: &str,
    headers: &[String],
    body: &str,
) -> (u16, Option<u64>, Value) {
    let out = std::process::Command::new("curl")
        .args(["-sS", http, "-D", "-", "--cacert"])
        .arg(server.data_dir.join("tls/cert.pem"))
        .args(["-X", "POST", "--data-binary", body])
        .args(headers.iter().flat_map(|h| ["-H", h.as_str()]))
        .arg(format!("{}{path}", server.base))
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("{text}"));
    let mut lines = head.lines();
    let status_line = lines.next().unwrap();
    let expected = if http == "--http2" {
        "HTTP/2 "
    } else {
        "HTTP/1.1 "
    };
    assert!(status_line.starts_with(expected), "{status_line}");
    let status = status_line.split(' ').nth(1).unwrap().parse().unwrap();
    let retry_after = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.eq_ignore_ascii_case("retry-after"))
        .map(|(_, v)| v.trim().parse().unwrap());
    let v = serde_json::from_str(body).unwrap_or_else(|_| panic!("{text}"));
    (status, retry_after, v)
}

/// POST to `path` over `conn` (HTTP/1.1) a body declared `declared` bytes long of which only
/// 1 KiB is sent before the client stalls: the answer's status line and how long it took.
async fn stalled_body<S>(
    conn: &mut S,
    path: &str,
    token: &str,
    declared: usize,
) -> (String, Duration)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let start = std::time::Instant::now();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {declared}\r\n\r\n"
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    conn.write_all(&[b' '; 1024]).await.unwrap();
    conn.flush().await.unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    let read = tokio::time::timeout(Duration::from_secs(40), async {
        while !answer.windows(2).any(|w| w == b"\r\n") {
            match conn.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "no answer in 40 s");
    let text = String::from_utf8_lossy(&answer);
    let status = text.lines().next().unwrap_or_default().to_string();
    (status, start.elapsed())
}

/// Send requests until one is refused (at most `n`): the answers.
fn until_refused(
    n: usize,
    mut send: impl FnMut() -> (u16, Option<u64>, Value),
) -> Vec<(u16, Option<u64>, Value)> {
    let mut answers = Vec::new();
    for _ in 0..n {
        let answer = send();
        let refused = answer.0 == 429;
        answers.push(answer);
        if refused {
            break;
        }
    }
    answers
}

/// Tenant `noisy` may make 2 requests a second; everyone else has no quota.
#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_past_its_quota_is_throttled_on_every_front_and_no_one_else_is() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_with_env(
        dir.path(),
        &[
            ("RUST_LOG", "warn"),
            ("KEYPLANE_QUOTAS__TENANTS__NOISY__PER_SECOND", "2"),
            ("KEYPLANE_QUOTAS__AUDIT_WINDOW_SECONDS", "1"),
        ],
    )
    .await;
    let (noisy_id, noisy) = s.tenant_with_admin("noisy").await;
    let key = aws::access_key(&s, &noisy).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut refused = 0;

    // Native, both HTTP versions: the bucket's two, then 429 with Retry-After.
    let bearer = format!("Authorization: Bearer {noisy}");
    for http in ["--http2", "--http1.1"] {
        let answers = until_refused(10, || {
            curl(
                &s,
                http,
                "/v1/generate-random",
                std::slice::from_ref(&bearer),
                r#"{"number_of_bytes": 8}"#,
            )
        });
        let (status, retry_after, body) = answers.last().unwrap();
        assert_eq!(*status, 429, "{http}: {answers:?}");
        assert!(
            answers.len() >= 2,
            "{http}: the burst was served first: {answers:?}"
        );
        assert_eq!(body["error"]["code"], "Throttled", "{http}");
        assert_eq!(*retry_after, Some(1), "{http}");
        refused += 1;
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }

    // Vault Transit, both HTTP versions.
    let vault = format!("X-Vault-Token: {noisy}");
    for http in ["--http2", "--http1.1"] {
        let answers = until_refused(10, || {
            curl(
                &s,
                http,
                "/v1/transit/random/8",
                std::slice::from_ref(&vault),
                "{}",
            )
        });
        let (status, retry_after, body) = answers.last().unwrap();
        assert_eq!(*status, 429, "{http}: {answers:?}");
        assert!(
            body["errors"][0].as_str().unwrap().contains("quota"),
            "{body}"
        );
        assert_eq!(*retry_after, Some(1), "{http}");
        refused += 1;
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }

    // Past its quota, a caller cannot make the node read and hold a large body first: a
    // batch declared 8 MB, stalled after 1 KiB, is answered 429 once the short read of a
    // refused body gives up, not after the 30 s an admitted body may take (408).
    // The connection is made first, and the quota used up over the test's client right
    // before, so that no token comes back (2 a second) before the request is sent.
    let mut conn = common::raw::tls_from(&s, [127, 0, 0, 1], b"http/1.1").await;
    let random = json!({"number_of_bytes": 8});
    let mut statuses = Vec::new();
    while statuses.len() < 10 && statuses.last() != Some(&429) {
        statuses.push(
            s.call(Some(&noisy), "generate-random", random.clone())
                .await
                .0,
        );
    }
    assert_eq!(statuses.last(), Some(&429), "{statuses:?}");
    refused += 1;
    let (status, took) = stalled_body(&mut conn, "/v1/batch", &noisy, 8_000_000).await;
    assert!(
        status.starts_with("HTTP/1.1 429"),
        "{status} after {took:?}"
    );
    assert!(took < Duration::from_secs(10), "answered after {took:?}");
    refused += 1;
    tokio::time::sleep(Duration::from_millis(1100)).await;

    // AWS KMS through boto3 (its retries off): ThrottlingException, as the SDKs name it.
    let script = r#"
import boto3, botocore.config, botocore.exceptions
kms = boto3.client("kms", config=botocore.config.Config(retries={"mode": "standard", "total_max_attempts": 1}))
for _ in range(10):
    try:
        kms.generate_random(NumberOfBytes=8)
    except botocore.exceptions.ClientError as e:
        r = e.response
        print(r["Error"]["Code"], r["ResponseMetadata"]["HTTPStatusCode"],
              r["ResponseMetadata"]["HTTPHeaders"].get("retry-after"))
        break
else:
    print("never throttled")
"#;
    let python = aws::venv_bin("python");
    let out = aws::run(aws::client(&python, &s, &key).args(["-c", script]));
    assert_eq!(out.trim(), "ThrottlingException 400 1", "{out}");
    refused += 1;
    tokio::time::sleep(Duration::from_millis(1100)).await;

    // AWS STS (the query protocol): Throttling, 400, which the SDKs retry with backoff (it
    // was a ValidationError, which they do not).
    let script = r#"
import boto3, botocore.config, botocore.exceptions
sts = boto3.client("sts", config=botocore.config.Config(retries={"mode": "standard", "total_max_attempts": 1}))
for _ in range(10):
    try:
        sts.get_caller_identity()
    except botocore.exceptions.ClientError as e:
        r = e.response
        print(r["Error"]["Code"], r["ResponseMetadata"]["HTTPStatusCode"],
              r["ResponseMetadata"]["HTTPHeaders"].get("retry-after"))
        break
else:
    print("never throttled")
"#;
    let out = aws::run(aws::client(&python, &s, &key).args(["-c", script]));
    assert_eq!(out.trim(), "Throttling 400 1", "{out}");
    refused += 1;
    tokio::time::sleep(Duration::from_millis(1100)).await;

    // A signed request for an action keyplane does not serve is charged too: it is audited,
    // and past the quota it must not add a record each (it was never throttled).
    let script = r#"
import boto3, botocore.config, botocore.exceptions
kms = boto3.client("kms", config=botocore.config.Config(retries={"mode": "standard", "total_max_attempts": 1}))
def retarget(request, **kwargs):
    request.headers.replace_header("X-Amz-Target", "TrentService.NoSuchAction")
kms.meta.events.register("before-sign.kms.GenerateRandom", retarget)
codes = []
for _ in range(10):
    try:
        kms.generate_random(NumberOfBytes=8)
        codes.append("answered")
    except botocore.exceptions.ClientError as e:
        codes.append(e.response["Error"]["Code"])
    if codes[-1] == "ThrottlingException":
        break
print(" ".join(sorted(set(codes))))
"#;
    let out = aws::run(aws::client(&python, &s, &key).args(["-c", script]));
    assert_eq!(
        out.trim(),
        "ThrottlingException UnknownOperationException",
        "{out}"
    );
    refused += 1;

    // Another tenant, meanwhile, has no quota: 30 requests at once, all served.
    let answers = futures_util::future::join_all((0..30).map(|_| {
        s.call(
            Some(&s.admin),
            "generate-random",
            json!({"number_of_bytes": 8}),
        )
    }))
    .await;
    assert!(answers.iter().all(|(status, _)| *status == 200));

    // The refusals: no record each, one record per principal and window with their count.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let records = s.audit_records();
    let throttled: Vec<&Value> = records
        .iter()
        .filter(|r| r["action"] == "Throttled")
        .collect();
    let counted: u64 = throttled
        .iter()
        .map(|r| {
            assert_eq!(r["tenant"], "noisy");
            assert!(r["principal"].as_str().unwrap().contains(&noisy_id), "{r}");
            assert_eq!(r["decision"], "deny");
            let resource = r["resource"].as_str().unwrap();
            resource
                .strip_prefix("quota:")
                .and_then(|r| r.split(' ').next())
                .unwrap()
                .parse::<u64>()
                .unwrap()
        })
        .sum();
    assert_eq!(counted, refused, "{throttled:#?}");
    assert!(
        !records
            .iter()
            .any(|r| r["outcome"] == "Throttled" && r["action"] != "Throttled"),
        "a refused request was audited on its own"
    );
    s.assert_audit_verifies();
}

/// A node where tenant `noisy` may make 2 requests a second (a bucket of two), and the token
/// of its admin.
async fn noisy_tenant(dir: &std::path::Path) -> (Server, String) {
    let s = Server::start_with_env(
        dir,
        &[
            ("RUST_LOG", "warn"),
            ("KEYPLANE_QUOTAS__TENANTS__NOISY__PER_SECOND", "2"),
        ],
    )
    .await;
    let (_, noisy) = s.tenant_with_admin("noisy").await;
    (s, noisy)
}

/// A Transit request with `token`.
fn transit_as(
    s: &Server,
    token: &str,
    method: reqwest::Method,
    path: &str,
    body: Value,
) -> impl std::future::Future<Output = reqwest::Result<reqwest::Response>> {
    s.client
        .request(method, format!("{}/v1/transit/{path}", s.base))
        .header("X-Vault-Token", token)
        .json(&body)
        .send()
}

/// A wire request costs one request of the quota (a batch one per item), however many
/// operations a front answers it with: a Transit rotate that read the key back after the
/// rotation committed was charged for every read, and answered 429 for a rotation that had
/// happened, which a client then retried (rotating again).
#[tokio::test(flavor = "multi_thread")]
async fn a_transit_write_read_back_costs_one_request() {
    let dir = tempfile::tempdir().unwrap();
    let (s, noisy) = noisy_tenant(dir.path()).await;
    let transit = |path: &str| transit_as(&s, &noisy, reqwest::Method::POST, path, json!({}));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let created = transit("keys/rotated").await.unwrap();
    assert_eq!(created.status(), 200);
    // A full bucket (two), and one request.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let rotated = transit("keys/rotated/rotate").await.unwrap();
    assert_eq!(rotated.status(), 200);
    let read: Value = rotated.json().await.unwrap();
    assert_eq!(read["data"]["latest_version"], 2, "{read}");
    // and one left for the next
    let again = transit("keys/rotated/rotate").await.unwrap();
    assert_eq!(again.status(), 200);
    let read: Value = again.json().await.unwrap();
    assert_eq!(read["data"]["latest_version"], 3, "{read}");
}

/// A batch is charged one request per item, and one of more items than the quota's bucket
/// can hold is refused whole, natively and on the Transit front: it could never be taken.
/// Before, it was charged the bucket's size, so a batch of 1,000 items against a quota of 10
/// a second cost 11 requests.
#[tokio::test(flavor = "multi_thread")]
async fn a_batch_larger_than_the_bucket_is_refused_not_discounted() {
    let dir = tempfile::tempdir().unwrap();
    let (s, noisy) = noisy_tenant(dir.path()).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let created = transit_as(&s, &noisy, reqwest::Method::POST, "keys/rows", json!({}))
        .await
        .unwrap();
    assert_eq!(created.status(), 200);
    let item = json!({ "key_id": "alias/rows", "plaintext": "cm93" });
    let batch = |n: usize| json!({ "operation": "encrypt", "items": vec![item.clone(); n] });
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, body) = s.call(Some(&noisy), "batch", batch(3)).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "ValidationError", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("at most 2 items"), "{message}");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, body) = s.call(Some(&noisy), "batch", batch(2)).await;
    assert_eq!((status, &body["failed"]), (200, &json!(0)), "{body}");

    // A Transit batch of three items to key `name`, once the bucket is full again.
    let three_to = |name: &'static str| {
        let (s, noisy) = (&s, &noisy);
        async move {
            tokio::time::sleep(Duration::from_millis(1100)).await;
            let items = vec![json!({ "plaintext": "cm93" }); 3];
            let path = format!("encrypt/{name}");
            let body = json!({ "batch_input": items });
            transit_as(s, noisy, reqwest::Method::POST, &path, body)
                .await
                .unwrap()
        }
    };
    let refused = three_to("rows").await;
    assert_eq!(refused.status(), 400);
    let body: Value = refused.json().await.unwrap();
    assert!(
        body["errors"][0]
            .as_str()
            .unwrap()
            .contains("at most 2 items"),
        "{body}"
    );
    // Each refused as a whole batch is: one record each (not counted as throttled).
    let refused = s
        .audit_records()
        .into_iter()
        .filter(|r| r["action"] == "Encrypt" && r["outcome"] == "ValidationError")
        .count();
    assert_eq!(refused, 2);

    // One to a key that does not exist yet creates none: the batch is measured before the
    // key it would be encrypted under is made (before, the key was made, then the batch
    // refused).
    assert_eq!(three_to("fresh").await.status(), 400);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let read = transit_as(&s, &noisy, reqwest::Method::GET, "keys/fresh", json!({}))
        .await
        .unwrap();
    assert_eq!(read.status(), 404);
}

/// The operations one wire request runs free are bounded (`gate::FREE_OPERATIONS`): a read of
/// a signing key with many versions (one public key read per version) pays for those past
/// the bound, and is throttled past the quota; a rotate whose read-back is throttled so
/// answers 204, the rotation having happened, as Vault before 1.12 answered it.
#[tokio::test(flavor = "multi_thread")]
async fn a_request_of_many_operations_pays_for_those_past_the_first_few() {
    let dir = tempfile::tempdir().unwrap();
    let (s, noisy) = noisy_tenant(dir.path()).await;
    let transit =
        |method, path: &str| transit_as(&s, &noisy, method, path, json!({ "type": "ed25519" }));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let created = transit(reqwest::Method::POST, "keys/signer").await.unwrap();
    assert_eq!(created.status(), 200);
    for _ in 0..9 {
        tokio::time::sleep(Duration::from_millis(600)).await;
        s.ok(&noisy, "rotate-key", json!({ "key_id": "alias/signer" }))
            .await;
    }
    // Ten versions: describe, list, ten public keys; four past the bound, two in the bucket.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let read = transit(reqwest::Method::GET, "keys/signer").await.unwrap();
    assert_eq!(read.status(), 429);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let rotated = transit(reqwest::Method::POST, "keys/signer/rotate")
        .await
        .unwrap();
    assert_eq!(rotated.status(), 204);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let described = s
        .ok(&noisy, "describe-key", json!({ "key_id": "alias/signer" }))
        .await;
    assert_eq!(described["primary_version"], 11, "{described}");
}

/// SIGHUP applies the config file's quotas to a running node (and audits the change).
#[tokio::test(flavor = "multi_thread")]
async fn sighup_changes_the_quotas_of_a_running_node() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("keyplane.toml");
    std::fs::write(&config, "[quotas]\n").unwrap();
    let data = dir.path().join("data");
    let s = Server::start_with_env(
        &data,
        &[
            ("RUST_LOG", "warn"),
            ("KEYPLANE_CONFIG", config.to_str().unwrap()),
        ],
    )
    .await;
    let burst = |n: usize| {
        futures_util::future::join_all((0..n).map(|_| {
            s.call(
                Some(&s.admin),
                "generate-random",
                json!({"number_of_bytes": 8}),
            )
        }))
    };
    let statuses = |answers: Vec<(u16, Value)>| answers.iter().map(|a| a.0).collect::<Vec<_>>();
    assert!(statuses(burst(20).await).iter().all(|s| *s == 200));

    let hup = |s: &Server| {
        let ok = std::process::Command::new("kill")
            .args(["-HUP", &s.pid().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok);
    };
    std::fs::write(
        &config,
        "[quotas]\nprincipal_per_second = 2\nprincipal_burst = 5\n",
    )
    .unwrap();
    hup(&s);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = statuses(burst(20).await);
    let served = after.iter().filter(|s| **s == 200).count();
    assert!((5..=7).contains(&served), "{after:?}");
    assert!(after.iter().all(|s| *s == 200 || *s == 429), "{after:?}");

    std::fs::write(&config, "[quotas]\n").unwrap();
    hup(&s);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(statuses(burst(20).await).iter().all(|s| *s == 200));
    let reloads = s
        .audit_records()
        .iter()
        .filter(|r| r["action"] == "ReloadQuotas")
        .count();
    assert_eq!(reloads, 2);
}

/// A source whose credentials keep failing is refused before authentication (429 with
/// `Retry-After`, on every front, even with a good token) while another source is served, and
/// its refused requests are audited in full only for the first few of a window, the rest as
/// one record per source and window that counts them.
#[tokio::test(flavor = "multi_thread")]
async fn a_source_failing_to_authenticate_is_slowed_and_audited_in_aggregate() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_with_env(
        dir.path(),
        &[
            ("RUST_LOG", "warn"),
            ("KEYPLANE_QUOTAS__UNAUTHENTICATED__PER_SECOND", "1"),
            ("KEYPLANE_QUOTAS__UNAUTHENTICATED__BURST", "5"),
            ("KEYPLANE_QUOTAS__UNAUTHENTICATED__AUDITED_IN_FULL", "3"),
            ("KEYPLANE_QUOTAS__AUDIT_WINDOW_SECONDS", "2"),
        ],
    )
    .await;
    let random = json!({"number_of_bytes": 8});
    // From 127.0.0.1: 40 requests with a token nobody was given.
    let mut statuses = Vec::new();
    let started = std::time::Instant::now();
    for _ in 0..40 {
        let (status, v) = s
            .call(Some("kp_guessed-token"), "generate-random", random.clone())
            .await;
        if status == 429 {
            assert_eq!(v["error"]["code"], "Throttled", "{v}");
        }
        statuses.push(status);
    }
    // The bucket's five failures and the one that emptied it are answered, then the source
    // is refused; it earns one more try a second (a slow machine's run lasts longer).
    let took = started.elapsed().as_secs() as usize;
    let unauthenticated = statuses.iter().filter(|s| **s == 401).count();
    assert!(
        statuses[..6].iter().all(|s| *s == 401)
            && statuses.contains(&429)
            && unauthenticated <= 6 + took + 1,
        "in {took} s: {statuses:?}"
    );

    // The source is refused whatever it sends, on every front: a good token, Transit.
    let (status, v) = s
        .call(Some(&s.admin), "generate-random", random.clone())
        .await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (429, Some("Throttled"))
    );
    let (status, retry_after, v) = curl(
        &s,
        "--http2",
        "/v1/transit/random/8",
        &[format!("X-Vault-Token: {}", s.admin)],
        "{}",
    );
    assert_eq!(status, 429, "{v}");
    assert!(retry_after.is_some());

    // Another source is served at once.
    let cert = std::fs::read(s.data_dir.join("tls/cert.pem")).unwrap();
    let other = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&cert).unwrap())
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .build()
        .unwrap();
    let answer = other
        .post(format!("{}/v1/generate-random", s.base))
        .bearer_auth(&s.admin)
        .json(&random)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);

    // 42 refused requests: a few records in full, the rest counted in aggregated records.
    let windows_spanned = started.elapsed().as_secs();
    tokio::time::sleep(Duration::from_millis(4500)).await;
    let records = s.audit_records();
    let in_full = records
        .iter()
        .filter(|r| r["principal"] == "-" && r["action"] != "UnauthenticatedRequests")
        .count();
    let aggregated: Vec<&Value> = records
        .iter()
        .filter(|r| r["action"] == "UnauthenticatedRequests")
        .collect();
    let counted: u64 = aggregated
        .iter()
        .map(|r| {
            assert_eq!(r["source_address"], "127.0.0.1", "{r}");
            assert_eq!(r["decision"], "deny");
            let resource = r["resource"].as_str().unwrap();
            let rest = resource.strip_prefix("source:127.0.0.1 ").unwrap();
            rest.split(' ').next().unwrap().parse::<u64>().unwrap()
        })
        .sum();
    // At most three in full and one aggregated record per audit window (2 s) the requests
    // spanned.
    let windows = windows_spanned as usize / 2 + 2;
    assert!(
        in_full >= 3 && in_full <= 3 * windows && (1..=windows).contains(&aggregated.len()),
        "{in_full} in full, {aggregated:#?}"
    );
    assert_eq!(in_full as u64 + counted, 42, "{aggregated:#?}");
    assert!(aggregated
        .iter()
        .any(|r| r["resource"].as_str().unwrap().contains("Throttled=")));
    s.assert_audit_verifies();
}
