//! The metric instruments, created once from the global meter (a no-op meter when export is
//! off). Labels are bounded: operation, outcome, action, mechanism, tenant — never a key id
//! unless `telemetry.per_key_metrics` is set, never anything secret.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use opentelemetry::metrics::{Counter, Histogram, ObservableCounter};
use opentelemetry::KeyValue;

/// Spans dropped because the export queue was full.
pub static DROPPED_SPANS: AtomicU64 = AtomicU64::new(0);

/// All instruments.
pub struct Metrics {
    requests: Counter<u64>,
    request_duration: Histogram<f64>,
    authz_denials: Counter<u64>,
    hsm_duration: Histogram<f64>,
    key_operations: Counter<u64>,
    plugin_duration: Histogram<f64>,
    plugin_failures: Counter<u64>,
    scheduler_actions: Counter<u64>,
    scheduler_duration: Histogram<f64>,
    audit_batch: Histogram<u64>,
    throttled: Counter<u64>,
    connections_refused: Counter<u64>,
    connections_timed_out: Counter<u64>,
    per_key: bool,
    _dropped: ObservableCounter<u64>,
}

static METRICS: OnceLock<Metrics> = OnceLock::new();

const LATENCY_BOUNDS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

fn build(per_key: bool) -> Metrics {
    let meter = opentelemetry::global::meter("keyplane");
    Metrics {
        requests: meter
            .u64_counter("keyplane.requests")
            .with_description("Requests by operation and outcome")
            .build(),
        request_duration: meter
            .f64_histogram("keyplane.request.duration")
            .with_unit("s")
            .with_boundaries(LATENCY_BOUNDS.to_vec())
            .with_description("Request latency by operation and outcome")
            .build(),
        authz_denials: meter
            .u64_counter("keyplane.authz.denials")
            .with_description("Requests denied by Cedar, by action")
            .build(),
        hsm_duration: meter
            .f64_histogram("keyplane.hsm.duration")
            .with_unit("s")
            .with_boundaries(LATENCY_BOUNDS.to_vec())
            .with_description("PKCS#11 call latency by function and mechanism")
            .build(),
        key_operations: meter
            .u64_counter("keyplane.key.operations")
            .with_description("Cryptographic key operations by tenant and operation")
            .build(),
        plugin_duration: meter
            .f64_histogram("keyplane.plugin.duration")
            .with_unit("s")
            .with_boundaries(LATENCY_BOUNDS.to_vec())
            .with_description("Plugin invocation latency by plugin, world and outcome")
            .build(),
        plugin_failures: meter
            .u64_counter("keyplane.plugin.failures")
            .with_description("Failed plugin invocations by plugin, world and outcome")
            .build(),
        scheduler_actions: meter
            .u64_counter("keyplane.scheduler.actions")
            .with_description("Scheduler checks, rotations and destructions by kind and outcome")
            .build(),
        scheduler_duration: meter
            .f64_histogram("keyplane.scheduler.pass.duration")
            .with_unit("s")
            .with_boundaries(LATENCY_BOUNDS.to_vec())
            .with_description("Duration of a lifecycle scheduler pass")
            .build(),
        audit_batch: meter
            .u64_histogram("keyplane.audit.batch_size")
            .with_boundaries(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0])
            .with_description("Audit records committed together by one group commit")
            .build(),
        throttled: meter
            .u64_counter("keyplane.quota.throttled")
            .with_description("Requests refused by a request quota, by front")
            .build(),
        connections_refused: meter
            .u64_counter("keyplane.connections.refused")
            .with_description("Connections closed on arrival, by the limit they met")
            .build(),
        connections_timed_out: meter
            .u64_counter("keyplane.connections.timed_out")
            .with_description(
                "Connections closed by a timeout: no byte moved (idle), no request (no_request)",
            )
            .build(),
        per_key,
        _dropped: meter
            .u64_observable_counter("keyplane.telemetry.dropped_spans")
            .with_description("Spans dropped because the export queue was full")
            .with_callback(|o| o.observe(DROPPED_SPANS.load(Ordering::Relaxed), &[]))
            .build(),
    }
}

/// Create the instruments (after the meter provider is installed).
pub fn init(per_key: bool) {
    let _ = METRICS.set(build(per_key));
}

/// The instruments (no-op ones if [`init`] was not called).
pub fn metrics() -> &'static Metrics {
    METRICS.get_or_init(|| build(false))
}

impl Metrics {
    /// One finished request, or one batch of `operation` requests (`batch`: labelled so, as
    /// its duration is that of all its items).
    pub fn request(&self, operation: &'static str, outcome: &str, batch: bool, seconds: f64) {
        let labels = [
            KeyValue::new("operation", operation),
            KeyValue::new("outcome", outcome.to_string()),
            KeyValue::new("batch", batch),
        ];
        self.requests.add(1, &labels);
        self.request_duration.record(seconds, &labels);
    }

    /// A Cedar denial.
    pub fn denial(&self, action: &'static str) {
        self.authz_denials
            .add(1, &[KeyValue::new("action", action)]);
    }

    /// One PKCS#11 call.
    pub fn hsm(&self, function: &'static str, mechanism: &'static str, seconds: f64) {
        self.hsm_duration.record(
            seconds,
            &[
                KeyValue::new("function", function),
                KeyValue::new("mechanism", mechanism),
            ],
        );
    }

    /// One plugin invocation (`plugin` is a short content hash).
    pub fn plugin(&self, plugin: &str, world: &'static str, outcome: &str, seconds: f64) {
        let labels = [
            KeyValue::new("plugin", plugin.to_string()),
            KeyValue::new("world", world),
            KeyValue::new("outcome", outcome.to_string()),
        ];
        self.plugin_duration.record(seconds, &labels);
        if outcome != "ok" {
            self.plugin_failures.add(1, &labels);
        }
    }

    /// One scheduler action (`check`, `rotate`, `destroy`) and its outcome.
    pub fn scheduler_action(&self, kind: &'static str, outcome: &str) {
        self.scheduler_actions.add(
            1,
            &[
                KeyValue::new("kind", kind),
                KeyValue::new("outcome", outcome.to_string()),
            ],
        );
    }

    /// One scheduler pass.
    pub fn scheduler_pass(&self, seconds: f64) {
        self.scheduler_duration.record(seconds, &[]);
    }

    /// One request refused by a quota.
    pub fn throttled(&self, front: &'static str) {
        self.throttled.add(1, &[KeyValue::new("front", front)]);
    }

    /// A connection closed on arrival by `limit` (`max_connections` or
    /// `max_connections_per_source`).
    pub fn connection_refused(&self, limit: &'static str) {
        self.connections_refused
            .add(1, &[KeyValue::new("limit", limit)]);
    }

    /// A connection closed by a timeout, for `reason` (`idle`: no byte moved for the idle
    /// timeout; `no_request`: no request in flight for the header read timeout).
    pub fn connection_timed_out(&self, reason: &'static str) {
        self.connections_timed_out
            .add(1, &[KeyValue::new("reason", reason)]);
    }

    /// One audit group commit of `records` records.
    pub fn audit_batch(&self, records: usize) {
        self.audit_batch.record(records as u64, &[]);
    }

    /// One successful cryptographic operation with a key.
    pub fn key_operation(&self, tenant: &str, operation: &'static str, key_id: &str) {
        let mut labels = vec![
            KeyValue::new("tenant", tenant.to_string()),
            KeyValue::new("operation", operation),
        ];
        if self.per_key {
            labels.push(KeyValue::new("key_id", key_id.to_string()));
        }
        self.key_operations.add(1, &labels);
    }
}
