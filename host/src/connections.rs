//! Connection hygiene for the listener: how many connections are held, from whom, and for how
//! long one may sit idle.
//!
//! A slowloris client opens many connections and keeps each alive with a byte now and then,
//! to hold every slot the server has. What stops it here, in the order a connection meets it:
//! - [`Limiter`] (an `axum_server` acceptor) admits at most `limits.max_connections` at once,
//!   and at most `limits.max_connections_per_source` from one source (an IPv4 address or an
//!   IPv6 /64, as `quotas` counts them); a connection past either is closed at once. One
//!   source cannot hold the slots every other client needs.
//! - the TLS handshake must finish within `limits.handshake_timeout_seconds` (set on the
//!   rustls acceptor by `server`);
//! - a request's head must arrive within `limits.header_read_timeout_seconds`, and its body
//!   within the body deadline of `api::gate`. For HTTP/1.1 hyper's header read timeout does
//!   it; hyper has none for HTTP/2, where a client can keep bytes moving (a header block a
//!   byte at a time, pings) without a request ever starting. So [`Guarded`] also closes a
//!   connection that has had no request in flight (none begun, or the last one answered) for
//!   that long, whatever protocol it speaks: [`Counted`], the per-connection service, tells it
//!   when requests begin and end. A connection kept alive between requests is given the same
//!   time to send the next one, as hyper gives HTTP/1.1;
//! - [`Guarded`] closes a connection on which no byte has moved either way for
//!   `limits.idle_timeout_seconds`: a client that stopped reading its answer, or one whose
//!   request is taking its time (waiting on a plugin) while nothing moves.
//!
//! A connection keeps its slot until it is closed ([`Admission`] gives it back when dropped).

use std::collections::HashMap;
use std::future::Future;
use std::future::{ready, Ready};
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum_server::accept::Accept;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

use crate::config::LimitsConfig;
use crate::quotas::Source;
use crate::telemetry::metrics::metrics;

/// The connections held, in total and by source.
struct Held {
    total: Arc<Semaphore>,
    by_source: Mutex<HashMap<Source, u32>>,
    max_per_source: u32,
    idle: Duration,
    /// How long a connection may go without a request in flight.
    quiet: Duration,
}

/// Admits connections within the limits (see the module docs). Cheap to clone: every clone
/// shares the counts.
#[derive(Clone)]
pub struct Limiter {
    held: Arc<Held>,
}

impl Limiter {
    pub fn new(limits: &LimitsConfig) -> Self {
        let max = limits.max_connections.clamp(1, Semaphore::MAX_PERMITS);
        Limiter {
            held: Arc::new(Held {
                total: Arc::new(Semaphore::new(max)),
                by_source: Mutex::default(),
                max_per_source: match limits.max_connections_per_source {
                    0 => u32::MAX,
                    n => n,
                },
                idle: Duration::from_secs(limits.idle_timeout_seconds.max(1)),
                quiet: Duration::from_secs(limits.header_read_timeout_seconds.max(1)),
            }),
        }
    }

    /// A slot for a connection from `peer`, or why there is none.
    fn admit(&self, peer: IpAddr) -> Result<Admission, &'static str> {
        let permit = self
            .held
            .total
            .clone()
            .try_acquire_owned()
            .map_err(|_| "max_connections")?;
        let source = Source::of(peer);
        let mut by_source = lock(&self.held.by_source);
        let n = by_source.entry(source).or_default();
        if *n >= self.held.max_per_source {
            if *n == 0 {
                by_source.remove(&source);
            }
            return Err("max_connections_per_source");
        }
        *n += 1;
        Ok(Admission {
            held: self.held.clone(),
            source,
            _permit: permit,
        })
    }
}

impl<S> Accept<TcpStream, S> for Limiter {
    type Stream = Guarded<TcpStream>;
    type Service = Counted<S>;
    type Future = Ready<io::Result<(Self::Stream, Self::Service)>>;

    fn accept(&self, stream: TcpStream, service: S) -> Self::Future {
        let peer = match stream.peer_addr() {
            Ok(peer) => peer,
            Err(e) => return ready(Err(e)),
        };
        ready(match self.admit(peer.ip()) {
            Ok(admission) => {
                // Answers are small and written whole: do not hold them back for Nagle.
                let _ = stream.set_nodelay(true);
                let requests = Arc::new(Requests::new());
                let service = Counted {
                    inner: service,
                    requests: requests.clone(),
                };
                let stream = Guarded::new(stream, self.held.idle, admission)
                    .quiet_for(self.held.quiet, requests);
                Ok((stream, service))
            }
            Err(limit) => {
                metrics().connection_refused(limit);
                tracing::debug!(%peer, limit, "connection refused");
                // Dropping the stream closes it.
                Err(io::Error::other(limit))
            }
        })
    }
}

/// One connection's slot, given back when dropped.
pub struct Admission {
    held: Arc<Held>,
    source: Source,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Admission {
    fn drop(&mut self) {
        let mut by_source = lock(&self.held.by_source);
        if let Some(n) = by_source.get_mut(&self.source) {
            *n -= 1;
            if *n == 0 {
                by_source.remove(&self.source);
            }
        }
    }
}

/// The requests of one connection: how many are in flight, and since when the count last
/// changed (shared by the connection's [`Guarded`] stream and its [`Counted`] service).
#[derive(Debug)]
pub struct Requests(Mutex<(usize, Instant)>);

impl Requests {
    fn new() -> Self {
        Requests(Mutex::new((0, Instant::now())))
    }

    fn begin(self: &Arc<Self>) -> InFlight {
        let mut n = lock(&self.0);
        *n = (n.0 + 1, Instant::now());
        InFlight(self.clone())
    }

    /// When the connection has had no request in flight since, if it has none.
    fn quiet_since(&self) -> Option<Instant> {
        let n = lock(&self.0);
        (n.0 == 0).then_some(n.1)
    }
}

/// One request in flight; ended when dropped (answered, or abandoned by hyper).
struct InFlight(Arc<Requests>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut n = lock(&self.0 .0);
        *n = (n.0.saturating_sub(1), Instant::now());
    }
}

/// A connection's service: counts its requests in flight for the connection's [`Guarded`]
/// stream. Clones (hyper may take one per request) share the count.
#[derive(Clone)]
pub struct Counted<S> {
    inner: S,
    requests: Arc<Requests>,
}

impl<S, R> tower_service::Service<R> for Counted<S>
where
    S: tower_service::Service<R>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = CountedFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: R) -> Self::Future {
        let in_flight = self.requests.begin();
        CountedFuture {
            inner: self.inner.call(request),
            _in_flight: in_flight,
        }
    }
}

pin_project_lite::pin_project! {
    /// A request's answer being made; the request counts as in flight until it is ready.
    pub struct CountedFuture<F> {
        #[pin]
        inner: F,
        _in_flight: InFlight,
    }
}

impl<F: Future> Future for CountedFuture<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.project().inner.poll(cx)
    }
}

/// A connection that fails with `TimedOut` once no byte has moved either way for its idle
/// timeout, or once it has had no request in flight for its quiet timeout, and holds its slot
/// until dropped.
pub struct Guarded<S> {
    inner: S,
    idle: Duration,
    last_activity: Instant,
    /// The connection's requests and how long it may go without one (none: no such bound).
    quiet: Option<(Duration, Arc<Requests>)>,
    /// Armed at the earlier deadline when a read or write has to wait; re-armed rather than
    /// reset on every byte (a timer reset per read would cost more than the read).
    timer: Pin<Box<Sleep>>,
    _admission: Admission,
}

/// Why a connection timed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Timeout {
    /// No byte moved either way for the idle timeout.
    Idle,
    /// No request in flight for the quiet (header read) timeout, whatever bytes moved: a
    /// kept-alive connection that sends no next request, HTTP/2 frames that never make one.
    NoRequest,
}

impl Timeout {
    /// The `reason` of `keyplane.connections.timed_out`.
    fn label(self) -> &'static str {
        match self {
            Timeout::Idle => "idle",
            Timeout::NoRequest => "no_request",
        }
    }

    fn message(self) -> &'static str {
        match self {
            Timeout::Idle => "connection idle for too long",
            Timeout::NoRequest => "no request on the connection for too long",
        }
    }
}

impl<S> Guarded<S> {
    fn new(inner: S, idle: Duration, admission: Admission) -> Self {
        let now = Instant::now();
        Guarded {
            inner,
            idle,
            last_activity: now,
            quiet: None,
            timer: Box::pin(tokio::time::sleep_until(now + idle)),
            _admission: admission,
        }
    }

    /// Also time out once `requests` has had none in flight for `quiet`.
    fn quiet_for(mut self, quiet: Duration, requests: Arc<Requests>) -> Self {
        self.quiet = Some((quiet, requests));
        self
    }

    fn active(&mut self) {
        self.last_activity = Instant::now();
    }

    /// The earliest time the connection times out, and why.
    fn deadline(&self) -> (Instant, Timeout) {
        let idle = (self.last_activity + self.idle, Timeout::Idle);
        let quiet = self.quiet.as_ref().and_then(|(quiet, requests)| {
            let since = requests.quiet_since()?;
            Some((since + *quiet, Timeout::NoRequest))
        });
        match quiet {
            Some(q) if q.0 < idle.0 => q,
            _ => idle,
        }
    }

    /// While waiting: `Ready` with the error to fail with once the connection has timed out.
    fn poll_idle(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        loop {
            let (deadline, why) = self.deadline();
            if self.timer.deadline() != deadline {
                self.timer.as_mut().reset(deadline);
            }
            match self.timer.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(()) if deadline <= Instant::now() => {
                    metrics().connection_timed_out(why.label());
                    return Poll::Ready(io::Error::new(io::ErrorKind::TimedOut, why.message()));
                }
                Poll::Ready(()) => continue,
            }
        }
    }
}

impl<S> Guarded<S> {
    /// What a write of the inner stream came to: bytes written are activity; a write that
    /// has to wait fails once the connection has been idle too long.
    fn written(
        &mut self,
        cx: &mut Context<'_>,
        written: Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        match written {
            Poll::Ready(Ok(n)) => {
                if n > 0 {
                    self.active();
                }
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => self.poll_idle(cx).map(Err),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Guarded<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    self.active();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => self.poll_idle(cx).map(Err),
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Guarded<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.inner).poll_write(cx, data);
        self.written(cx, written)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let written = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.written(cx, written)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Settings of the HTTP/1.1 and HTTP/2 connections: the header read timeout (hyper needs a
/// timer for it) and a bound on concurrent HTTP/2 streams per connection.
pub fn configure_http(
    builder: &mut hyper_util::server::conn::auto::Builder<hyper_util::rt::TokioExecutor>,
    limits: &LimitsConfig,
) {
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(Duration::from_secs(
            limits.header_read_timeout_seconds.max(1),
        ));
    builder
        .http2()
        .timer(hyper_util::rt::TokioTimer::new())
        .max_concurrent_streams(limits.http2_max_concurrent_streams.max(1));
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(total: usize, per_source: u32) -> LimitsConfig {
        LimitsConfig {
            max_connections: total,
            max_connections_per_source: per_source,
            ..crate::config::Config::default().limits
        }
    }

    #[test]
    fn a_source_at_its_limit_is_refused_and_its_slots_come_back() {
        let l = Limiter::new(&limits(10, 2));
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let first = l.admit(a).unwrap();
        let _second = l.admit(a).unwrap();
        assert_eq!(l.admit(a).err(), Some("max_connections_per_source"));
        let _other = l.admit(b).unwrap();
        drop(first);
        assert!(l.admit(a).is_ok(), "a closed connection's slot is free");
    }

    #[test]
    fn the_total_bounds_every_source() {
        let l = Limiter::new(&limits(2, 0));
        let _a = l.admit("192.0.2.1".parse().unwrap()).unwrap();
        let _b = l.admit("192.0.2.2".parse().unwrap()).unwrap();
        assert_eq!(
            l.admit("192.0.2.3".parse().unwrap()).err(),
            Some("max_connections")
        );
        assert!(
            lock(&l.held.by_source).len() == 2,
            "a refused source is not left counted"
        );
    }

    #[tokio::test]
    async fn an_idle_connection_times_out_and_a_busy_one_does_not() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = Limiter::new(&limits(10, 0));
        let (ours, mut theirs) = tokio::io::duplex(64);
        let admission = l.admit("192.0.2.1".parse().unwrap()).unwrap();
        let idle = Duration::from_millis(400);
        let mut conn = Guarded::new(ours, idle, admission);
        let mut buf = [0u8; 8];
        let start = std::time::Instant::now();
        let writer = tokio::spawn(async move {
            for _ in 0..4 {
                tokio::time::sleep(idle / 2).await;
                theirs.write_all(b"x").await.unwrap();
            }
            theirs
        });
        for _ in 0..4 {
            assert_eq!(conn.read(&mut buf).await.unwrap(), 1, "busy: still open");
        }
        let _theirs = writer.await.unwrap();
        assert!(start.elapsed() > idle, "open for longer than the timeout");
        let err = conn.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(err.to_string(), Timeout::Idle.message());
        drop(conn);
        assert!(lock(&l.held.by_source).is_empty(), "the slot is given back");
    }

    /// Bytes moving do not keep a connection with no request in flight open past its quiet
    /// timeout; a request in flight does, however long it takes.
    #[tokio::test]
    async fn a_connection_without_a_request_times_out_while_bytes_move() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = Limiter::new(&limits(10, 0));
        let (ours, mut theirs) = tokio::io::duplex(64);
        let admission = l.admit("192.0.2.1".parse().unwrap()).unwrap();
        let quiet = Duration::from_millis(400);
        let requests = Arc::new(Requests::new());
        let mut conn = Guarded::new(ours, Duration::from_secs(60), admission)
            .quiet_for(quiet, requests.clone());
        let writer = tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(50)).await;
                if theirs.write_all(b"x").await.is_err() {
                    return;
                }
            }
        });
        let mut buf = [0u8; 8];
        let in_flight = requests.begin();
        let start = std::time::Instant::now();
        while start.elapsed() < quiet * 2 {
            assert!(conn.read(&mut buf).await.is_ok(), "a request is in flight");
        }
        drop(in_flight);
        let ended = std::time::Instant::now();
        let err = loop {
            match conn.read(&mut buf).await {
                Ok(_) => continue,
                Err(e) => break e,
            }
        };
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(err.to_string(), Timeout::NoRequest.message());
        assert!(ended.elapsed() >= quiet, "{:?}", ended.elapsed());
        writer.abort();
    }
}
