//! Requests nobody proved who sent: a bucket of failures per source address, and their audit
//! in aggregate.
//!
//! Every request whose credentials fail (no token, an unknown one, a bad signature) takes one
//! from its source's bucket. A source whose bucket is empty is refused before its next
//! request is even authenticated (`Throttled`, whatever credentials it carries) until the
//! bucket has refilled: guessing credentials is slowed, and the work a junk request costs
//! (a keyed hash and a lookup for a token, an HSM unwrap for a signature) is bounded per
//! source. Only failures count: a source sending many good requests is never limited here.
//!
//! Such requests are audited in full only for the first few of each source in a window
//! ([`Sources::audit_in_full`]); the rest are counted and written as one record per source and
//! window ([`Sources::take_refused`]), so junk traffic cannot grow the audit log faster than
//! the number of sources sending it. The number of sources counted at once is bounded too:
//! past it, the rest are counted under one entry, `*`.
//!
//! A source is an IPv4 address or an IPv6 /64 (what one host is usually given: keying on
//! the whole IPv6 address would give a host 2^64 buckets).

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

use crate::config::UnauthenticatedConfig;

/// The most sources counted separately in one audit window.
const MAX_COUNTED_SOURCES: usize = 10_000;

/// A source as its bucket and its audit record name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Source(IpAddr);

impl Source {
    pub fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(_) => Source(ip),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Source(IpAddr::V4(v4)),
                None => Source(IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into())),
            },
        }
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            IpAddr::V4(v4) => write!(f, "{v4}"),
            IpAddr::V6(v6) => write!(f, "{v6}/64"),
        }
    }
}

/// What one source's unauthenticated requests came to in the current window.
#[derive(Debug, Default)]
struct Counted {
    audited_in_full: u32,
    /// Requests counted, not audited on their own, by error code.
    refused: BTreeMap<&'static str, u64>,
}

/// The failure buckets of one configuration.
struct Limits {
    config: UnauthenticatedConfig,
    buckets: Option<DefaultKeyedRateLimiter<Source>>,
}

impl Limits {
    fn new(config: &UnauthenticatedConfig) -> Self {
        let buckets = NonZeroU32::new(config.per_second).map(|rate| {
            let burst = NonZeroU32::new(config.burst).unwrap_or(rate);
            governor::RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst))
        });
        Limits {
            config: config.clone(),
            buckets,
        }
    }
}

/// The failure buckets, the sources refused until a time, and the counts for the audit.
pub struct Sources {
    limits: RwLock<Arc<Limits>>,
    clock: DefaultClock,
    blocked: Mutex<HashMap<Source, Instant>>,
    /// Whether `blocked` holds anyone: every authenticated request asks [`Sources::admit`], and
    /// while no source is refused (nearly always) it answers without taking the lock.
    any_blocked: AtomicBool,
    /// `None` is every source past [`MAX_COUNTED_SOURCES`].
    counted: Mutex<HashMap<Option<Source>, Counted>>,
}

/// One source's refusals in a window that were not audited on their own.
#[derive(Debug, PartialEq, Eq)]
pub struct Refused {
    /// The source, or `*` for the sources past the bound.
    pub source: String,
    /// Count by error code.
    pub by_code: BTreeMap<&'static str, u64>,
}

impl Sources {
    pub fn new(config: &UnauthenticatedConfig) -> Self {
        Sources {
            limits: RwLock::new(Arc::new(Limits::new(config))),
            clock: DefaultClock::default(),
            blocked: Mutex::default(),
            any_blocked: AtomicBool::new(false),
            counted: Mutex::default(),
        }
    }

    /// Apply `config` (SIGHUP) with full buckets and no source refused; the counts for the
    /// audit are kept. An unchanged configuration keeps its buckets.
    pub fn reload(&self, config: &UnauthenticatedConfig) {
        let mut limits = self
            .limits
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if limits.config != *config {
            *limits = Arc::new(Limits::new(config));
            let mut blocked = lock(&self.blocked);
            blocked.clear();
            self.any_blocked.store(false, Ordering::Release);
        }
    }

    fn current(&self) -> Arc<Limits> {
        self.limits
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Before authenticating a request from `ip`: `Err` with how long to wait while its
    /// source is refused.
    pub fn admit(&self, ip: IpAddr) -> Result<(), Duration> {
        if !self.any_blocked.load(Ordering::Acquire) {
            return Ok(());
        }
        let source = Source::of(ip);
        let mut blocked = lock(&self.blocked);
        match blocked.get(&source) {
            Some(until) => match until.checked_duration_since(Instant::now()) {
                Some(wait) if !wait.is_zero() => Err(wait),
                _ => {
                    blocked.remove(&source);
                    self.any_blocked
                        .store(!blocked.is_empty(), Ordering::Release);
                    Ok(())
                }
            },
            None => Ok(()),
        }
    }

    /// A request from `ip` failed to authenticate: take one from its source's bucket; an
    /// empty bucket refuses the source until it has a request again.
    pub fn failed(&self, ip: IpAddr) {
        let limits = self.current();
        let Some(buckets) = &limits.buckets else {
            return;
        };
        let source = Source::of(ip);
        if let Err(not_until) = buckets.check_key(&source) {
            let wait = not_until.wait_time_from(self.clock.now());
            let mut blocked = lock(&self.blocked);
            blocked.insert(source, Instant::now() + wait);
            self.any_blocked.store(true, Ordering::Release);
        }
    }

    /// Whether a refused request from `ip` (error `code`) is audited on its own: the first
    /// [`UnauthenticatedConfig::audited_in_full`] of a source in a window are; the rest are
    /// counted for its aggregated record.
    pub fn audit_in_full(&self, ip: IpAddr, code: &'static str) -> bool {
        let in_full = self.current().config.audited_in_full;
        let source = Source::of(ip);
        let mut counted = lock(&self.counted);
        let key = if counted.len() < MAX_COUNTED_SOURCES || counted.contains_key(&Some(source)) {
            Some(source)
        } else {
            None
        };
        let entry = counted.entry(key).or_default();
        if key.is_some() && entry.audited_in_full < in_full {
            entry.audited_in_full += 1;
            return true;
        }
        *entry.refused.entry(code).or_default() += 1;
        false
    }

    /// The refusals counted and not audited since the last call, and a new window begun.
    pub fn take_refused(&self) -> Vec<Refused> {
        let counted = std::mem::take(&mut *lock(&self.counted));
        let mut out: Vec<Refused> = counted
            .into_iter()
            .filter(|(_, c)| !c.refused.is_empty())
            .map(|(source, c)| Refused {
                source: source.map_or_else(|| "*".to_string(), |s| s.to_string()),
                by_code: c.refused,
            })
            .collect();
        out.sort_by(|a, b| a.source.cmp(&b.source));
        out
    }

    /// Forget buckets that have refilled and sources no longer refused.
    pub fn shrink(&self) {
        if let Some(b) = &self.current().buckets {
            b.retain_recent();
            b.shrink_to_fit();
        }
        let now = Instant::now();
        let mut blocked = lock(&self.blocked);
        blocked.retain(|_, until| *until > now);
        self.any_blocked
            .store(!blocked.is_empty(), Ordering::Release);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sources(per_second: u32, burst: u32, audited_in_full: u32) -> Sources {
        Sources::new(&UnauthenticatedConfig {
            per_second,
            burst,
            audited_in_full,
        })
    }

    #[test]
    fn a_source_past_its_failures_is_refused_and_others_are_not() {
        let s = sources(1, 3, 0);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        for _ in 0..3 {
            assert!(s.admit(a).is_ok());
            s.failed(a);
        }
        assert!(s.admit(a).is_ok(), "three failures are the burst");
        s.failed(a);
        let wait = s.admit(a).unwrap_err();
        assert!(wait <= Duration::from_secs(1), "{wait:?}");
        assert!(s.admit(b).is_ok());
    }

    #[test]
    fn no_limit_when_the_rate_is_zero() {
        let s = sources(0, 0, 0);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..10_000 {
            s.failed(a);
        }
        assert!(s.admit(a).is_ok());
    }

    #[test]
    fn an_ipv6_host_is_one_source_and_a_mapped_ipv4_its_address() {
        let one: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let other: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        assert_eq!(Source::of(one), Source::of(other));
        assert_eq!(Source::of(one).to_string(), "2001:db8:1:2::/64");
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(Source::of(mapped).to_string(), "192.0.2.7");
    }

    #[test]
    fn the_first_of_a_window_are_audited_in_full_and_the_rest_counted() {
        let s = sources(0, 0, 2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        assert!(s.audit_in_full(a, "Unauthenticated"));
        assert!(s.audit_in_full(a, "Unauthenticated"));
        for _ in 0..5 {
            assert!(!s.audit_in_full(a, "Unauthenticated"));
        }
        assert!(!s.audit_in_full(a, "Throttled"));
        let refused = s.take_refused();
        assert_eq!(refused.len(), 1);
        assert_eq!(refused[0].source, "192.0.2.1");
        assert_eq!(
            refused[0].by_code,
            BTreeMap::from([("Throttled", 1), ("Unauthenticated", 5)])
        );
        assert!(s.audit_in_full(a, "Unauthenticated"), "a new window");
        assert!(s.take_refused().is_empty());
    }

    #[test]
    fn sources_past_the_bound_are_counted_together() {
        let s = sources(0, 0, 0);
        for i in 0..(MAX_COUNTED_SOURCES as u32 + 5) {
            let ip = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            assert!(!s.audit_in_full(ip, "Unauthenticated"));
        }
        let refused = s.take_refused();
        assert_eq!(refused.len(), MAX_COUNTED_SOURCES + 1);
        let rest = refused.iter().find(|r| r.source == "*").unwrap();
        assert_eq!(rest.by_code["Unauthenticated"], 5);
    }
}
