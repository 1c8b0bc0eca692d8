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
//! - an HTTP/1.1 request's head must arrive within `limits.header_read_timeout_seconds`
//!   (hyper's header read timeout, which also bounds the wait for the next request on a
//!   kept-alive connection), and its body within the body deadline of `api::gate`;
//! - [`Guarded`] closes a connection on which no byte has moved either way for
//!   `limits.idle_timeout_seconds`: an idle keep-alive or HTTP/2 connection, or a client that
//!   stopped reading its answer.
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
    type Service = S;
    type Future = Ready<io::Result<(Self::Stream, S)>>;

    fn accept(&self, stream: TcpStream, service: S) -> Self::Future {
        let peer = match stream.peer_addr() {
            Ok(peer) => peer,
            Err(e) => return ready(Err(e)),
        };
        ready(match self.admit(peer.ip()) {
            Ok(admission) => {
                // Answers are small and written whole: do not hold them back for Nagle.
                let _ = stream.set_nodelay(true);
                Ok((Guarded::new(stream, self.held.idle, admission), service))
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

/// A connection that fails with `TimedOut` once no byte has moved either way for its idle
/// timeout, and holds its slot until dropped.
pub struct Guarded<S> {
    inner: S,
    idle: Duration,
    last_activity: Instant,
    /// Armed at `last_activity + idle` when a read or write has to wait; re-armed rather than
    /// reset on every byte (a timer reset per read would cost more than the read).
    timer: Pin<Box<Sleep>>,
    _admission: Admission,
}

impl<S> Guarded<S> {
    fn new(inner: S, idle: Duration, admission: Admission) -> Self {
        let now = Instant::now();
        Guarded {
            inner,
            idle,
            last_activity: now,
            timer: Box::pin(tokio::time::sleep_until(now + idle)),
            _admission: admission,
        }
    }

    fn active(&mut self) {
        self.last_activity = Instant::now();
    }

    /// While waiting: `Ready` with the error to fail with once the connection has been idle
    /// for its timeout.
    fn poll_idle(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        loop {
            let deadline = self.last_activity + self.idle;
            if self.timer.deadline() != deadline {
                self.timer.as_mut().reset(deadline);
            }
            match self.timer.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(()) if self.last_activity + self.idle <= Instant::now() => {
                    metrics().connection_idle_closed();
                    return Poll::Ready(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "connection idle for too long",
                    ));
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
        drop(conn);
        assert!(lock(&l.held.by_source).is_empty(), "the slot is given back");
    }
}
