//! One-line span helpers for the layers below the operation: HSM calls, database calls and
//! audit appends (plugin invocations will get theirs here too).

use std::future::Future;
use std::time::Instant;

use tracing::Instrument;

use super::metrics::metrics;

/// Run a blocking PKCS#11 call in an `hsm <function>` span and record its latency.
pub fn hsm<T>(function: &'static str, mechanism: &'static str, f: impl FnOnce() -> T) -> T {
    let span = tracing::info_span!(
        "hsm",
        otel.name = function,
        otel.kind = "client",
        hsm.function = function,
        hsm.mechanism = mechanism,
    );
    let start = Instant::now();
    let out = span.in_scope(f);
    metrics().hsm(function, mechanism, start.elapsed().as_secs_f64());
    out
}

/// Run a database call in a `db <operation> <table>` span.
pub async fn db<F: Future>(operation: &'static str, table: &'static str, f: F) -> F::Output {
    let span = tracing::info_span!(
        "db",
        otel.name = format!("{operation} {table}"),
        otel.kind = "client",
        db.system.name = "sqlite",
        db.operation.name = operation,
        db.collection.name = table,
    );
    f.instrument(span).await
}
