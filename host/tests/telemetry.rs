//! Telemetry end to end: the real binary exports to an OTLP receiver running in this test
//! process (gRPC via tonic from `opentelemetry-proto`, and HTTP/protobuf via axum). Checks the
//! span tree of an allowed and a denied request, `traceparent` continuation, metrics, and that
//! no secret used by the test appears in anything received or logged.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{b64, unb64, Server};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use serde_json::json;

/// Everything a receiver got: decoded requests and their raw bytes.
#[derive(Default, Clone)]
struct Received {
    traces: Arc<Mutex<Vec<ExportTraceServiceRequest>>>,
    metrics: Arc<Mutex<Vec<ExportMetricsServiceRequest>>>,
    raw: Arc<Mutex<Vec<u8>>>,
}

#[tonic::async_trait]
impl TraceService for Received {
    async fn export(
        &self,
        req: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let req = req.into_inner();
        self.raw.lock().unwrap().extend(req.encode_to_vec());
        self.traces.lock().unwrap().push(req);
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

#[tonic::async_trait]
impl MetricsService for Received {
    async fn export(
        &self,
        req: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        let req = req.into_inner();
        self.raw.lock().unwrap().extend(req.encode_to_vec());
        self.metrics.lock().unwrap().push(req);
        Ok(tonic::Response::new(ExportMetricsServiceResponse {
            partial_success: None,
        }))
    }
}

async fn grpc_receiver() -> (Received, String) {
    let received = Received::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let r = received.clone();
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(r.clone()))
            .add_service(MetricsServiceServer::new(r))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
            .await
            .unwrap();
    });
    (received, format!("http://{addr}"))
}

async fn http_receiver() -> (Received, String) {
    use axum::body::Bytes;
    use axum::extract::State;
    let received = Received::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new()
        .route(
            "/v1/traces",
            axum::routing::post(|State(r): State<Received>, body: Bytes| async move {
                r.raw.lock().unwrap().extend_from_slice(&body);
                r.traces
                    .lock()
                    .unwrap()
                    .push(ExportTraceServiceRequest::decode(body).unwrap());
                ExportTraceServiceResponse {
                    partial_success: None,
                }
                .encode_to_vec()
            }),
        )
        .route(
            "/v1/metrics",
            axum::routing::post(|State(r): State<Received>, body: Bytes| async move {
                r.raw.lock().unwrap().extend_from_slice(&body);
                r.metrics
                    .lock()
                    .unwrap()
                    .push(ExportMetricsServiceRequest::decode(body).unwrap());
                ExportMetricsServiceResponse {
                    partial_success: None,
                }
                .encode_to_vec()
            }),
        )
        .with_state(received.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (received, format!("http://{addr}"))
}

fn spans(r: &Received) -> Vec<Span> {
    r.traces
        .lock()
        .unwrap()
        .iter()
        .flat_map(|t| t.resource_spans.iter())
        .flat_map(|rs| rs.scope_spans.iter())
        .flat_map(|ss| ss.spans.iter().cloned())
        .collect()
}

fn attr(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| {
            kv.value
                .as_ref()
                .and_then(|v| v.value.as_ref())
                .map(|v| match v {
                    AnyValue::StringValue(s) => s.clone(),
                    AnyValue::IntValue(i) => i.to_string(),
                    AnyValue::BoolValue(b) => b.to_string(),
                    AnyValue::DoubleValue(d) => d.to_string(),
                    other => format!("{other:?}"),
                })
        })
}

fn child<'a>(all: &'a [Span], parent: &Span, name: &str) -> &'a Span {
    all.iter()
        .find(|s| s.parent_span_id == parent.span_id && s.name == name)
        .unwrap_or_else(|| {
            let names: Vec<_> = all
                .iter()
                .filter(|s| s.parent_span_id == parent.span_id)
                .map(|s| &s.name)
                .collect();
            panic!("no `{name}` under `{}`; children: {names:?}", parent.name)
        })
}

fn descendants<'a>(all: &'a [Span], root: &Span) -> Vec<&'a Span> {
    let mut out = Vec::new();
    let mut frontier = vec![root.span_id.clone()];
    while let Some(id) = frontier.pop() {
        for s in all.iter().filter(|s| s.parent_span_id == id) {
            frontier.push(s.span_id.clone());
            out.push(s);
        }
    }
    out
}

/// Sum of a counter's data points with the given labels.
fn counter(r: &Received, name: &str, labels: &[(&str, &str)]) -> u64 {
    let metrics = r.metrics.lock().unwrap();
    // Cumulative temporality: the latest export holds the totals.
    let mut latest = 0;
    for req in metrics.iter() {
        for m in req
            .resource_metrics
            .iter()
            .flat_map(|rm| rm.scope_metrics.iter())
            .flat_map(|sm| sm.metrics.iter())
        {
            if m.name != name {
                continue;
            }
            let points: Vec<(HashMap<String, String>, u64)> = match &m.data {
                Some(Data::Sum(s)) => s
                    .data_points
                    .iter()
                    .map(|p| {
                        let v = match p.value {
                            Some(opentelemetry_proto::tonic::metrics::v1::number_data_point::Value::AsInt(i)) => i as u64,
                            Some(opentelemetry_proto::tonic::metrics::v1::number_data_point::Value::AsDouble(d)) => d as u64,
                            None => 0,
                        };
                        (labels_of(&p.attributes), v)
                    })
                    .collect(),
                Some(Data::Histogram(h)) => h.data_points.iter().map(|p| (labels_of(&p.attributes), p.count)).collect(),
                _ => vec![],
            };
            let total: u64 = points
                .iter()
                .filter(|(l, _)| {
                    labels
                        .iter()
                        .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
                })
                .map(|(_, v)| v)
                .sum();
            latest = latest.max(total);
        }
    }
    latest
}

fn labels_of(
    attrs: &[opentelemetry_proto::tonic::common::v1::KeyValue],
) -> HashMap<String, String> {
    attrs
        .iter()
        .filter_map(
            |kv| match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(AnyValue::StringValue(s)) => Some((kv.key.clone(), s.clone())),
                _ => None,
            },
        )
        .collect()
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..200 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_SPAN: &str = "00f067aa0ba902b7";
/// The trace of the test's `verify-mac`.
const MAC_TRACE_ID: &str = "5ce0e9a56015fec5aadfa328ae398115";

#[tokio::test(flavor = "multi_thread")]
async fn grpc_export_span_tree_metrics_and_no_secrets() {
    let (received, endpoint) = grpc_receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start_with_env(
        dir.path(),
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_SERVICE_NAME", "keyplane-under-test"),
            ("KEYPLANE_TELEMETRY__EXPORT_INTERVAL_MS", "100"),
            ("KEYPLANE_TELEMETRY__METRICS_INTERVAL_MS", "300"),
            ("RUST_LOG", "info"),
        ],
    )
    .await;
    let plaintext = b"TOP-SECRET-PLAINTEXT-9f3a7c";
    let ctx_value = "CONTEXT-VALUE-SECRET-51d2";
    let key = s.create_key(&s.admin, "hsm").await;

    // An allowed encrypt that continues the caller's trace.
    let resp = s
        .client
        .post(format!("{}/v1/encrypt", s.base))
        .bearer_auth(&s.admin)
        .header("traceparent", format!("00-{TRACE_ID}-{PARENT_SPAN}-01"))
        .json(&json!({ "key_id": key, "plaintext": b64(plaintext), "encryption_context": { "department": ctx_value } }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.headers()["x-trace-id"].to_str().unwrap(), TRACE_ID);
    let ct = unb64(&resp.json::<serde_json::Value>().await.unwrap()["ciphertext_blob"]);
    let (status, _) = s
        .decrypt(&s.admin, &ct, json!({ "department": ctx_value }))
        .await;
    assert_eq!(status, 200);
    let dk = s
        .ok(&s.admin, "generate-data-key", json!({ "key_id": key }))
        .await;
    let data_key = unb64(&dk["plaintext"]);

    // A denied request from another tenant.
    let (_, intruder) = s.tenant_with_admin("intruder").await;
    let resp = s
        .client
        .post(format!("{}/v1/encrypt", s.base))
        .bearer_auth(&intruder)
        .json(&json!({ "key_id": key, "plaintext": b64(plaintext) }))
        .send()
        .await
        .unwrap();
    // Another tenant's key is answered as if it did not exist.
    assert_eq!(resp.status().as_u16(), 404);
    let denied_trace = resp.headers()["x-trace-id"].to_str().unwrap().to_string();
    assert_eq!(denied_trace.len(), 32);

    wait_for("metrics of the encrypt", || {
        counter(
            &received,
            "keyplane.requests",
            &[("operation", "encrypt"), ("outcome", "ok")],
        ) >= 1
    })
    .await;
    // A MAC checked: computed in the token and compared in the host (constant time), never
    // compared by the module (`C_Verify`; SoftHSM2's comparison is `memcmp`).
    let mac_key = s
        .create_key_with(
            &s.admin,
            json!({ "key_spec": "HMAC_SHA_256", "key_usage": "generate-verify-mac" }),
        )
        .await;
    let message = b64(b"a message");
    let mac = s
        .ok(
            &s.admin,
            "generate-mac",
            json!({ "key_id": mac_key, "message": message, "mac_algorithm": "HMAC_SHA_256" }),
        )
        .await;
    let verified = s
        .client
        .post(format!("{}/v1/verify-mac", s.base))
        .bearer_auth(&s.admin)
        .header("traceparent", format!("00-{MAC_TRACE_ID}-{PARENT_SPAN}-01"))
        .json(&json!({ "key_id": mac_key, "message": message, "mac_algorithm": "HMAC_SHA_256", "mac": mac["mac"] }))
        .send()
        .await
        .unwrap();
    assert_eq!(
        verified.json::<serde_json::Value>().await.unwrap()["mac_valid"],
        true
    );
    let admin_token = s.admin.clone();
    s.stop();
    // Shutdown flushed everything queued.
    wait_for("the denied request's spans", || {
        spans(&received)
            .iter()
            .any(|sp| hex(&sp.trace_id) == denied_trace && sp.name == "encrypt")
    })
    .await;

    let all = spans(&received);
    let verify_mac = all
        .iter()
        .find(|sp| hex(&sp.trace_id) == MAC_TRACE_ID && sp.name == "verify-mac")
        .expect("the verify-mac span");
    let calls: Vec<&str> = descendants(&all, verify_mac)
        .iter()
        .map(|sp| sp.name.as_str())
        .collect();
    assert!(calls.contains(&"C_Sign"), "{calls:?}");
    assert!(
        !calls.contains(&"C_Verify"),
        "verify-mac compared in the module: {calls:?}"
    );
    // The encrypt: server span continues the caller's trace and parent.
    let http = all
        .iter()
        .find(|sp| hex(&sp.trace_id) == TRACE_ID && sp.name == "POST /v1/{operation}")
        .expect("server span in the caller's trace");
    assert_eq!(hex(&http.parent_span_id), PARENT_SPAN);
    assert_eq!(http.kind, 2, "SPAN_KIND_SERVER");
    assert_eq!(attr(http, "http.route").as_deref(), Some("/v1/{operation}"));
    assert_eq!(attr(http, "http.request.method").as_deref(), Some("POST"));
    assert_eq!(
        attr(http, "http.response.status_code").as_deref(),
        Some("200")
    );
    let authn = child(&all, http, "authenticate");
    assert_eq!(attr(authn, "keyplane.outcome").as_deref(), Some("ok"));
    let op = child(&all, http, "encrypt");
    assert_eq!(attr(op, "keyplane.outcome").as_deref(), Some("ok"));
    assert_eq!(attr(op, "keyplane.key_id").as_deref(), Some(key.as_str()));
    assert_eq!(attr(op, "keyplane.tenant").as_deref(), Some("default"));
    let authz = child(&all, op, "authorize");
    assert_eq!(
        attr(authz, "keyplane.authz.decision").as_deref(),
        Some("allow")
    );
    assert_eq!(
        attr(authz, "keyplane.authz.policy_count").as_deref(),
        Some("1")
    );
    assert_eq!(
        attr(authz, "keyplane.authz.policy_set").map(|h| h.len()),
        Some(64)
    );
    let hsm = child(&all, op, "C_Encrypt");
    assert_eq!(attr(hsm, "hsm.mechanism").as_deref(), Some("CKM_AES_GCM"));
    assert_eq!(hsm.kind, 3, "SPAN_KIND_CLIENT");
    let db = child(&all, op, "SELECT keys");
    assert_eq!(attr(db, "db.system.name").as_deref(), Some("sqlite"));
    // encrypt changes nothing but the log: its record goes through the group commit, whose
    // `audit.group_commit` span (its own trace) links to the request's `audit.append` span
    // and holds the batch's one INSERT (atomic on its own, no separate COMMIT).
    let audit = child(&all, op, "audit.append");
    assert!(attr(audit, "keyplane.audit.seq").is_some());
    let batch = all
        .iter()
        .find(|s| {
            s.name == "audit.group_commit" && s.links.iter().any(|l| l.span_id == audit.span_id)
        })
        .expect("the group commit span links to the request's audit.append");
    assert!(attr(batch, "keyplane.audit.batch").is_some());
    child(&all, batch, "INSERT audit_log");
    let in_trace = descendants(&all, http);
    assert!(in_trace.iter().all(|sp| hex(&sp.trace_id) == TRACE_ID));

    // The denial: decision deny, determining policy recorded by count, outcome on the op span.
    let denied_op = all
        .iter()
        .find(|sp| hex(&sp.trace_id) == denied_trace && sp.name == "encrypt")
        .unwrap();
    assert_eq!(
        attr(denied_op, "keyplane.outcome").as_deref(),
        Some("NotFound")
    );
    let denied_authz = child(&all, denied_op, "authorize");
    assert_eq!(
        attr(denied_authz, "keyplane.authz.decision").as_deref(),
        Some("deny")
    );
    assert!(
        !descendants(&all, denied_op)
            .iter()
            .any(|sp| sp.name == "C_Encrypt"),
        "a denied request never reaches the HSM"
    );
    let denied_http = all
        .iter()
        .find(|sp| sp.span_id == denied_op.parent_span_id)
        .unwrap();
    assert_eq!(
        attr(denied_http, "http.response.status_code").as_deref(),
        Some("404")
    );

    // Resource attributes.
    let traces = received.traces.lock().unwrap().clone();
    let service = traces[0].resource_spans[0]
        .resource
        .as_ref()
        .unwrap()
        .attributes
        .iter()
        .find(|kv| kv.key == "service.name")
        .cloned();
    assert!(format!("{service:?}").contains("keyplane-under-test"));

    // Metrics.
    assert!(
        counter(
            &received,
            "keyplane.requests",
            &[("operation", "encrypt"), ("outcome", "ok")]
        ) >= 1
    );
    assert!(
        counter(
            &received,
            "keyplane.requests",
            &[("operation", "encrypt"), ("outcome", "NotFound")]
        ) >= 1
    );
    assert!(
        counter(
            &received,
            "keyplane.request.duration",
            &[("operation", "decrypt"), ("outcome", "ok")]
        ) >= 1
    );
    assert!(
        counter(
            &received,
            "keyplane.authz.denials",
            &[("action", "Encrypt")]
        ) >= 1
    );
    assert!(
        counter(
            &received,
            "keyplane.hsm.duration",
            &[("function", "C_Encrypt"), ("mechanism", "CKM_AES_GCM")]
        ) >= 2
    );
    assert!(
        counter(
            &received,
            "keyplane.key.operations",
            &[("tenant", "default"), ("operation", "encrypt")]
        ) >= 1
    );
    assert!(
        counter(
            &received,
            "keyplane.key.operations",
            &[("tenant", "default"), ("operation", "generate-data-key")]
        ) >= 1
    );
    // The encrypt, decrypt and the denial change nothing else: their records went through
    // the group commit, which counts its batches.
    assert!(counter(&received, "keyplane.audit.batch_size", &[]) >= 1);

    // No secret anywhere in what was exported, nor in the logs.
    let raw = received.raw.lock().unwrap().clone();
    let mut logs: Vec<String> = s.startup.clone();
    logs.extend(s.log.lock().unwrap().try_iter());
    // The bootstrap token line included: standard output here is a pipe, so it never holds
    // the token.
    let log_bytes: Vec<u8> = logs
        .iter()
        .flat_map(|l| l.bytes().chain(std::iter::once(b'\n')))
        .collect();
    assert!(logs.iter().any(|l| l.contains("\"trace_id\"")) || !logs.is_empty());
    let pin = std::fs::read_to_string(dir.path().join("hsm.pin")).unwrap();
    let secrets: Vec<(&str, Vec<u8>)> = vec![
        ("plaintext", plaintext.to_vec()),
        ("plaintext base64", b64(plaintext).into_bytes()),
        ("context value", ctx_value.as_bytes().to_vec()),
        ("admin token", admin_token.as_bytes().to_vec()),
        ("intruder token", intruder.as_bytes().to_vec()),
        ("data key", data_key.clone()),
        ("data key base64", b64(&data_key).into_bytes()),
        ("HSM PIN", pin.trim().as_bytes().to_vec()),
    ];
    assert!(
        raw.len() > 1000,
        "received too little to scan: {}",
        raw.len()
    );
    for (what, needle) in &secrets {
        assert!(
            !raw.windows(needle.len()).any(|w| w == needle.as_slice()),
            "{what} found in exported telemetry"
        );
        assert!(
            !log_bytes
                .windows(needle.len())
                .any(|w| w == needle.as_slice()),
            "{what} found in logs"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn http_protobuf_export_and_json_logs_with_trace_ids() {
    let (received, endpoint) = http_receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start_with_env(
        dir.path(),
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("KEYPLANE_TELEMETRY__EXPORT_INTERVAL_MS", "100"),
            ("KEYPLANE_TELEMETRY__METRICS_INTERVAL_MS", "300"),
            ("KEYPLANE_LIMITS__HEADER_READ_TIMEOUT_SECONDS", "1"),
            ("RUST_LOG", "info,keyplane=debug"),
        ],
    )
    .await;
    let key = s.create_key(&s.admin, "envelope").await;
    let resp = s
        .client
        .post(format!("{}/v1/encrypt", s.base))
        .bearer_auth(&s.admin)
        .header("traceparent", format!("00-{TRACE_ID}-{PARENT_SPAN}-01"))
        .json(&json!({ "key_id": key, "plaintext": b64(b"hello") }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    wait_for("metrics over HTTP", || {
        counter(&received, "keyplane.requests", &[("operation", "encrypt")]) >= 1
    })
    .await;
    // A connection that never sends a request is closed by the header read timeout and
    // counted by why (before, every timeout counted as "idle", without a reason).
    let silent = tokio::net::TcpStream::connect(s.base.trim_start_matches("https://"))
        .await
        .unwrap();
    wait_for(
        "a silent connection counted as closed for want of a request",
        || {
            counter(
                &received,
                "keyplane.connections.timed_out",
                &[("reason", "no_request")],
            ) >= 1
        },
    )
    .await;
    drop(silent);
    // Health requests need no credential: however many arrive at once, they share a few
    // readiness probes (each an HSM encryption under the root key), not one each.
    let probes = || {
        counter(
            &received,
            "keyplane.hsm.duration",
            &[("function", "C_Encrypt"), ("mechanism", "CKM_AES_GCM")],
        )
    };
    let before = probes();
    let health = (0..120).map(|i| {
        let url = if i % 2 == 0 {
            format!("{}/readyz", s.base)
        } else {
            format!("{}/v1/sys/health", s.base)
        };
        let client = s.client.clone();
        async move { client.get(url).send().await.unwrap().status().as_u16() }
    });
    let statuses = futures_util::future::join_all(health).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    // Two metric exports later, the counts include every probe made.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let made = probes() - before;
    assert!(
        made <= 10,
        "{made} readiness probes for 120 health requests"
    );
    s.stop();
    wait_for("spans over HTTP", || {
        spans(&received)
            .iter()
            .any(|sp| hex(&sp.trace_id) == TRACE_ID && sp.name == "encrypt")
    })
    .await;
    let all = spans(&received);
    let op = all
        .iter()
        .find(|sp| hex(&sp.trace_id) == TRACE_ID && sp.name == "encrypt")
        .unwrap();
    // First use of an envelope key opens its wrapped material in the HSM.
    let hsm = child(&all, op, "C_Decrypt");
    assert_eq!(attr(hsm, "hsm.mechanism").as_deref(), Some("CKM_AES_GCM"));
    // JSON logs on stdout carry the ids of the request's trace.
    let logs: Vec<String> = s.log.lock().unwrap().try_iter().collect();
    let traced = logs
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["trace_id"] == TRACE_ID)
        .unwrap_or_else(|| panic!("no JSON log line in trace {TRACE_ID}: {logs:?}"));
    assert_eq!(traced["span_id"].as_str().map(str::len), Some(16));
    assert!(traced["level"].is_string() && traced["timestamp"].is_string());
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
