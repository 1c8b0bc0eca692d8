//! Telemetry: `tracing` spans bridged to OpenTelemetry, OTLP export of traces and metrics
//! (gRPC or HTTP/protobuf), W3C trace-context propagation, and JSON logs carrying trace and
//! span ids.
//!
//! Spans are always created (so logs and the `x-trace-id` response header carry real ids);
//! they leave the process only when an OTLP endpoint is configured. Export never blocks a
//! request: finished spans go through a bounded queue ([`processor`]) and overflow is
//! dropped and counted. Helpers in [`spans`] and [`metrics`] make instrumenting a new HSM
//! call, database call or plugin invocation one line. Nothing secret is ever recorded:
//! attributes are ids, names, mechanisms, counts and outcomes.

pub mod http;
mod logs;
pub mod metrics;
mod processor;
pub mod spans;

use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry::KeyValue;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

use crate::config::TelemetryConfig;

/// Owns the providers; flush and shut down with [`Telemetry::shutdown`].
pub struct Telemetry {
    tracer_provider: SdkTracerProvider,
    meter_provider: Option<SdkMeterProvider>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Wire {
    Grpc,
    HttpProtobuf,
}

fn endpoint(cfg: &TelemetryConfig) -> Option<String> {
    cfg.otlp_endpoint
        .clone()
        .or_else(|| std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").ok())
        .filter(|e| !e.trim().is_empty())
}

fn wire(cfg: &TelemetryConfig) -> anyhow::Result<Wire> {
    let p = cfg
        .otlp_protocol
        .clone()
        .or_else(|| std::env::var("OTEL_EXPORTER_OTLP_PROTOCOL").ok())
        .unwrap_or_else(|| "grpc".into());
    match p.as_str() {
        "grpc" => Ok(Wire::Grpc),
        "http/protobuf" => Ok(Wire::HttpProtobuf),
        other => anyhow::bail!("unsupported OTLP protocol {other:?} (use grpc or http/protobuf)"),
    }
}

fn resource() -> Resource {
    let mut b = Resource::builder();
    if std::env::var("OTEL_SERVICE_NAME").is_err() {
        b = b.with_service_name("keyplane");
    }
    b.with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build()
}

fn signal_url(base: &str, signal: &str) -> String {
    format!("{}/v1/{signal}", base.trim_end_matches('/'))
}

/// Set up tracing, metrics and logs. Call inside the Tokio runtime (the gRPC exporter's
/// channel lives there) and before any span is created.
pub fn init(cfg: &TelemetryConfig) -> anyhow::Result<Telemetry> {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let resource = resource();
    let ratio = cfg.sampling_ratio.clamp(0.0, 1.0);
    let mut tracer_builder = SdkTracerProvider::builder()
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            ratio,
        ))))
        .with_resource(resource.clone());
    let mut meter_provider = None;
    if let Some(base) = endpoint(cfg) {
        let wire = wire(cfg)?;
        let timeout = Duration::from_secs(10);
        let span_exporter = match wire {
            Wire::Grpc => opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(base.clone())
                .with_timeout(timeout)
                .build()?,
            Wire::HttpProtobuf => opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_protocol(Protocol::HttpBinary)
                .with_endpoint(signal_url(&base, "traces"))
                .with_timeout(timeout)
                .build()?,
        };
        tracer_builder = tracer_builder.with_span_processor(processor::QueueProcessor::new(
            span_exporter,
            &resource,
            cfg.max_queue_size,
            Duration::from_millis(cfg.export_interval_ms.max(10)),
        ));
        let metric_exporter = match wire {
            Wire::Grpc => opentelemetry_otlp::MetricExporter::builder()
                .with_tonic()
                .with_endpoint(base.clone())
                .with_timeout(timeout)
                .build()?,
            Wire::HttpProtobuf => opentelemetry_otlp::MetricExporter::builder()
                .with_http()
                .with_protocol(Protocol::HttpBinary)
                .with_endpoint(signal_url(&base, "metrics"))
                .with_timeout(timeout)
                .build()?,
        };
        let reader = PeriodicReader::builder(metric_exporter)
            .with_interval(Duration::from_millis(cfg.metrics_interval_ms.max(100)))
            .build();
        let mp = SdkMeterProvider::builder()
            .with_reader(reader)
            .with_resource(resource.clone())
            .build();
        opentelemetry::global::set_meter_provider(mp.clone());
        meter_provider = Some(mp);
    }
    let tracer_provider = tracer_builder.build();
    let tracer = tracer_provider.tracer("keyplane");
    let otel_layer = tracing_opentelemetry::layer().with_tracer(tracer);
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new("info,h2=warn,tonic=warn,hyper=warn,reqwest=warn,opentelemetry=warn")
    });
    let registry = tracing_subscriber::registry().with(filter).with(otel_layer);
    if cfg.log_format == "text" {
        registry
            .with(tracing_subscriber::fmt::layer().with_writer(std::io::stdout))
            .try_init()?;
    } else {
        registry
            .with(
                tracing_subscriber::fmt::layer()
                    .event_format(logs::JsonWithTrace)
                    .with_writer(std::io::stdout),
            )
            .try_init()?;
    }
    metrics::init(cfg.per_key_metrics);
    Ok(Telemetry {
        tracer_provider,
        meter_provider,
    })
}

impl Telemetry {
    /// Export what is queued and stop. Call outside async code, with the runtime still alive.
    pub fn shutdown(self) {
        if let Err(e) = self.tracer_provider.shutdown() {
            eprintln!("keyplane: trace export shutdown: {e}");
        }
        if let Some(mp) = self.meter_provider {
            if let Err(e) = mp.shutdown() {
                eprintln!("keyplane: metric export shutdown: {e}");
            }
        }
    }
}
