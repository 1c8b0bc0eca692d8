//! The HTTP server span (OTel HTTP semantic conventions), W3C `traceparent`/`tracestate`
//! extraction, the request id, and the `x-trace-id` / `x-request-id` response headers.

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::Response;
use opentelemetry::propagation::Extractor;
use opentelemetry::trace::TraceContextExt;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The id of one request, set by [`trace_request`] for handlers.
#[derive(Clone, Debug)]
pub struct RequestId(pub String);

struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// Middleware: one server span per request, continuing the caller's trace.
pub async fn trace_request(mut req: Request, next: Next) -> Response {
    let start = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let method = req.method().as_str().to_string();
    let request_id = uuid::Uuid::new_v4().to_string();
    req.extensions_mut().insert(RequestId(request_id.clone()));
    let parent =
        opentelemetry::global::get_text_map_propagator(|p| p.extract(&Headers(req.headers())));
    let user_agent = req
        .headers()
        .get(axum::http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .chars()
        .take(256)
        .collect::<String>();
    let span = tracing::info_span!(
        "http",
        otel.name = format!("{method} {route}"),
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        http.request.method = %method,
        http.route = %route,
        url.path = %req.uri().path(),
        url.scheme = "https",
        user_agent.original = %user_agent,
        http.response.status_code = tracing::field::Empty,
        keyplane.request_id = %request_id,
    );
    let _ = span.set_parent(parent);
    let trace_id = span.context().span().span_context().trace_id().to_string();
    let mut resp = next.run(req).instrument(span.clone()).await;
    let status = resp.status().as_u16();
    span.record("http.response.status_code", status);
    if status >= 500 {
        span.record("otel.status_code", "ERROR");
    }
    tracing::debug!(parent: &span, status, elapsed_ms = start.elapsed().as_millis() as u64, "request finished");
    let headers = resp.headers_mut();
    if let Ok(v) = trace_id.parse() {
        headers.insert("x-trace-id", v);
    }
    if let Ok(v) = request_id.parse() {
        headers.insert("x-request-id", v);
    }
    resp
}
