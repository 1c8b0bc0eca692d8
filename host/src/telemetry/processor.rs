//! A span processor with a bounded queue: `on_end` never blocks; when the queue is full the
//! span is dropped and counted ([`super::metrics::DROPPED_SPANS`], exported as the
//! `keyplane.telemetry.dropped_spans` metric). A dedicated thread batches and exports.

use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Mutex;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use opentelemetry::Context;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{Span, SpanData, SpanExporter, SpanProcessor};
use opentelemetry_sdk::Resource;

use super::metrics::DROPPED_SPANS;

const MAX_BATCH: usize = 512;

enum Msg {
    Span(Box<SpanData>),
    Flush(mpsc::Sender<()>),
    Shutdown(mpsc::Sender<()>),
}

/// Bounded-queue batch processor.
#[derive(Debug)]
pub struct QueueProcessor {
    tx: SyncSender<Msg>,
    worker: Mutex<Option<JoinHandle<()>>>,
}

impl QueueProcessor {
    pub fn new<E: SpanExporter + 'static>(
        mut exporter: E,
        resource: &Resource,
        capacity: usize,
        interval: Duration,
    ) -> Self {
        exporter.set_resource(resource);
        let (tx, rx) = mpsc::sync_channel(capacity.max(1));
        let worker = std::thread::Builder::new()
            .name("keyplane-span-export".into())
            .spawn(move || run(exporter, rx, interval))
            .ok();
        QueueProcessor {
            tx,
            worker: Mutex::new(worker),
        }
    }

    fn control(
        &self,
        make: impl FnOnce(mpsc::Sender<()>) -> Msg,
        timeout: Duration,
    ) -> OTelSdkResult {
        let (done_tx, done_rx) = mpsc::channel();
        self.tx
            .send(make(done_tx))
            .map_err(|_| OTelSdkError::AlreadyShutdown)?;
        done_rx
            .recv_timeout(timeout)
            .map_err(|_| OTelSdkError::Timeout(timeout))
    }
}

fn export<E: SpanExporter>(exporter: &E, batch: &mut Vec<SpanData>) {
    if batch.is_empty() {
        return;
    }
    let spans = std::mem::take(batch);
    if let Err(e) = futures_executor::block_on(exporter.export(spans)) {
        eprintln!("keyplane: span export failed: {e}");
    }
}

fn run<E: SpanExporter>(mut exporter: E, rx: Receiver<Msg>, interval: Duration) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut next = Instant::now() + interval;
    loop {
        let wait = next.saturating_duration_since(Instant::now());
        match rx.recv_timeout(wait) {
            Ok(Msg::Span(s)) => {
                batch.push(*s);
                if batch.len() >= MAX_BATCH {
                    export(&exporter, &mut batch);
                }
            }
            Ok(Msg::Flush(done)) => {
                export(&exporter, &mut batch);
                let _ = done.send(());
            }
            Ok(Msg::Shutdown(done)) => {
                export(&exporter, &mut batch);
                let _ = exporter.shutdown();
                let _ = done.send(());
                return;
            }
            Err(RecvTimeoutError::Timeout) => {
                export(&exporter, &mut batch);
                next = Instant::now() + interval;
            }
            Err(RecvTimeoutError::Disconnected) => {
                export(&exporter, &mut batch);
                return;
            }
        }
    }
}

impl SpanProcessor for QueueProcessor {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        match self.tx.try_send(Msg::Span(Box::new(span))) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                DROPPED_SPANS.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.control(Msg::Flush, Duration::from_secs(10))
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        let r = self.control(Msg::Shutdown, timeout);
        if let Ok(mut w) = self.worker.lock() {
            if let Some(h) = w.take() {
                let _ = h.join();
            }
        }
        r
    }
}
