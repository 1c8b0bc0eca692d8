//! Request quotas: a token bucket per tenant and one per principal (GCRA, `governor`), taken
//! by every authenticated request of every front before its operation runs (`api::gate`).
//!
//! A request refused by a quota costs no operation, no HSM call and no audit record of its
//! own: a tenant sending ten times its quota would otherwise still fill the audit log and the
//! group commit that every tenant shares. The refusals are counted instead ([`Quotas::take_refused`]),
//! and the server writes one record per principal and window with their count. A front
//! answers `Error::Throttled` with its wire's throttling answer (`429` and `Retry-After`
//! natively and on the Transit front, `ThrottlingException` on the AWS front, which the SDKs
//! retry with backoff).
//!
//! The buckets live in this node's memory: with several nodes, each enforces the quota for
//! what reaches it (a quota of `r` a second is `n × r` across `n` nodes behind a balancer that
//! spreads evenly). SIGHUP reloads the limits ([`Quotas::reload`]) with full buckets.
//!
//! Requests that fail to authenticate have a limit of their own, per source address, and are
//! audited in aggregate past the first few (`sources`).

mod sources;

pub use sources::{Refused as SourceRefused, Source};

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota};

use crate::config::{QuotaRate, QuotasConfig};

/// A bucket with the quota it was made with (its burst caps what one request may take).
struct Bucket<L> {
    limiter: L,
    burst: NonZeroU32,
}

/// The buckets of one configuration.
struct Limits {
    config: QuotasConfig,
    tenants: Option<Bucket<DefaultKeyedRateLimiter<String>>>,
    principals: Option<Bucket<DefaultKeyedRateLimiter<String>>>,
    /// Tenants with a rate of their own (`None`: no quota for that tenant).
    own: HashMap<String, Option<Bucket<DefaultDirectRateLimiter>>>,
}

/// A rate of 0 is no quota; a burst of 0 is one second's worth.
fn quota(rate: QuotaRate) -> Option<(Quota, NonZeroU32)> {
    let per_second = NonZeroU32::new(rate.per_second)?;
    let burst = NonZeroU32::new(rate.burst).unwrap_or(per_second);
    Some((Quota::per_second(per_second).allow_burst(burst), burst))
}

impl Limits {
    fn new(config: &QuotasConfig) -> Self {
        let keyed = |rate| {
            quota(rate).map(|(q, burst)| Bucket {
                limiter: governor::RateLimiter::keyed(q),
                burst,
            })
        };
        Limits {
            config: config.clone(),
            tenants: keyed(QuotaRate {
                per_second: config.tenant_per_second,
                burst: config.tenant_burst,
            }),
            principals: keyed(QuotaRate {
                per_second: config.principal_per_second,
                burst: config.principal_burst,
            }),
            own: config
                .tenants
                .iter()
                .map(|(tenant, rate)| {
                    let bucket = quota(*rate).map(|(q, burst)| Bucket {
                        limiter: governor::RateLimiter::direct(q),
                        burst,
                    });
                    (tenant.clone(), bucket)
                })
                .collect(),
        }
    }
}

/// The node's quotas and the refusals not yet audited.
pub struct Quotas {
    limits: RwLock<Arc<Limits>>,
    clock: DefaultClock,
    /// Requests refused since the last audit, by (tenant, principal as audited).
    refused: Mutex<HashMap<(String, String), u64>>,
    /// Requests that failed to authenticate, by source.
    sources: sources::Sources,
}

impl Quotas {
    pub fn new(config: &QuotasConfig) -> Self {
        Quotas {
            limits: RwLock::new(Arc::new(Limits::new(config))),
            clock: DefaultClock::default(),
            refused: Mutex::default(),
            sources: sources::Sources::new(&config.unauthenticated),
        }
    }

    /// Apply `config` (SIGHUP) with full buckets; an unchanged configuration keeps its
    /// buckets. Returns whether anything changed.
    pub fn reload(&self, config: &QuotasConfig) -> bool {
        let mut limits = self
            .limits
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if limits.config == *config {
            return false;
        }
        self.sources.reload(&config.unauthenticated);
        *limits = Arc::new(Limits::new(config));
        true
    }

    /// The limits in force.
    pub fn config(&self) -> QuotasConfig {
        self.current().config.clone()
    }

    fn current(&self) -> Arc<Limits> {
        self.limits
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Whether a request of `cost` operations (a batch's items) can be taken whole from the
    /// buckets of a principal of `tenant`: `Err` with the smallest burst among them when it
    /// is larger. A bucket never holds more than its burst, so such a request could never be
    /// taken; it is refused outright rather than charged a bucket's size (a batch of 1,000
    /// items against a quota of 10 a second would otherwise cost 11 requests, and so
    /// multiply the quota).
    pub fn fits(&self, tenant: &str, cost: u32) -> Result<(), u32> {
        let limits = self.current();
        let tenant_burst = match limits.own.get(tenant) {
            Some(own) => own.as_ref().map(|b| b.burst),
            None => limits.tenants.as_ref().map(|b| b.burst),
        };
        let burst = [limits.principals.as_ref().map(|b| b.burst), tenant_burst]
            .into_iter()
            .flatten()
            .map(NonZeroU32::get)
            .min();
        match burst {
            Some(burst) if cost > burst => Err(burst),
            _ => Ok(()),
        }
    }

    /// Take `cost` requests (a batch's items; at most a bucket's burst, see
    /// [`Quotas::fits`]) from `principal`'s bucket and then its tenant's. `Err` with how long
    /// to wait when either is empty; the refusal is counted for the audit under
    /// `audited_as()` (the principal as audit records name it; made only for a refusal).
    pub fn check(
        &self,
        tenant: &str,
        principal: &str,
        audited_as: impl FnOnce() -> String,
        cost: u32,
    ) -> Result<(), Duration> {
        let limits = self.current();
        let now = self.clock.now();
        let cost = |burst: NonZeroU32| NonZeroU32::new(cost.clamp(1, burst.get())).unwrap_or(burst);
        let mut refused = None;
        if let Some(b) = &limits.principals {
            if let Ok(Err(not_until)) = b.limiter.check_key_n(&principal.to_string(), cost(b.burst))
            {
                refused = Some(not_until.wait_time_from(now));
            }
        }
        if refused.is_none() {
            let taken = match limits.own.get(tenant) {
                Some(Some(b)) => b.limiter.check_n(cost(b.burst)),
                Some(None) => Ok(Ok(())),
                None => match &limits.tenants {
                    Some(b) => b.limiter.check_key_n(&tenant.to_string(), cost(b.burst)),
                    None => Ok(Ok(())),
                },
            };
            if let Ok(Err(not_until)) = taken {
                refused = Some(not_until.wait_time_from(now));
            }
        }
        match refused {
            None => Ok(()),
            Some(wait) => {
                self.count_refused(tenant, audited_as);
                Err(wait)
            }
        }
    }

    /// Count a request of `tenant`'s principal (as audit records name it: `audited_as()`)
    /// refused by a quota, for the aggregated audit record of the window (a quota here, or the
    /// tenant's plugin budget, see `plugins`).
    pub fn count_refused(&self, tenant: &str, audited_as: impl FnOnce() -> String) {
        *self
            .refused
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry((tenant.to_string(), audited_as()))
            .or_default() += 1;
    }

    /// Before authenticating a request from `ip`: `Err` with how long to wait while that
    /// source has failed too often.
    pub fn admit_source(&self, ip: std::net::IpAddr) -> Result<(), Duration> {
        self.sources.admit(ip)
    }

    /// A request from `ip` failed to authenticate.
    pub fn source_failed(&self, ip: std::net::IpAddr) {
        self.sources.failed(ip)
    }

    /// Whether a request from `ip` refused before anyone was proven (error `code`) is audited
    /// on its own; if not, it is counted for its source's aggregated record.
    pub fn audit_unauthenticated(&self, ip: std::net::IpAddr, code: &'static str) -> bool {
        self.sources.audit_in_full(ip, code)
    }

    /// The unauthenticated refusals counted, not audited, since the last call, by source.
    pub fn take_refused_sources(&self) -> Vec<SourceRefused> {
        self.sources.take_refused()
    }

    /// The refusals counted since the last call: (tenant, principal, count).
    pub fn take_refused(&self) -> Vec<(String, String, u64)> {
        std::mem::take(
            &mut *self
                .refused
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
        .into_iter()
        .map(|((tenant, principal), n)| (tenant, principal, n))
        .collect()
    }

    /// How often refusals are audited.
    pub fn audit_window(&self) -> Duration {
        match self.current().config.audit_window_seconds {
            0 => Duration::from_secs(10),
            s => Duration::from_secs(s),
        }
    }

    /// Forget buckets idle long enough to be full again (their keys would otherwise stay for
    /// every principal ever seen).
    pub fn shrink(&self) {
        let limits = self.current();
        for b in [&limits.tenants, &limits.principals].into_iter().flatten() {
            b.limiter.retain_recent();
            b.limiter.shrink_to_fit();
        }
        self.sources.shrink();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(tenant: u32, principal: u32) -> QuotasConfig {
        QuotasConfig {
            tenant_per_second: tenant,
            principal_per_second: principal,
            ..QuotasConfig::default()
        }
    }

    /// `c` with tenant `big` at 100 a second of its own and tenant `free` without a quota.
    fn with_own_rates(mut c: QuotasConfig) -> QuotasConfig {
        c.tenants.insert(
            "big".into(),
            QuotaRate {
                per_second: 100,
                burst: 0,
            },
        );
        c.tenants.insert("free".into(), QuotaRate::default());
        c
    }

    #[test]
    fn no_quota_by_default() {
        let q = Quotas::new(&QuotasConfig::default());
        for _ in 0..10_000 {
            assert!(q.check("t", "p", || "p".into(), 1).is_ok());
        }
        assert!(q.take_refused().is_empty());
    }

    #[test]
    fn a_principal_past_its_burst_waits_and_others_do_not() {
        let q = Quotas::new(&config(0, 5));
        for _ in 0..5 {
            assert!(q.check("t", "a", || "a".into(), 1).is_ok());
        }
        let wait = q.check("t", "a", || "a".into(), 1).unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_millis(200),
            "{wait:?}"
        );
        assert!(
            q.check("t", "b", || "b".into(), 1).is_ok(),
            "another principal"
        );
        assert_eq!(q.take_refused(), [("t".into(), "a".into(), 1)]);
        assert!(q.take_refused().is_empty());
    }

    #[test]
    fn a_tenant_quota_covers_all_its_principals_and_an_own_rate_replaces_it() {
        let c = with_own_rates(config(3, 0));
        let q = Quotas::new(&c);
        for p in ["a", "b", "c"] {
            assert!(q.check("t", p, || p.to_string(), 1).is_ok());
        }
        assert!(
            q.check("t", "d", || "d".into(), 1).is_err(),
            "the tenant's bucket is empty"
        );
        for _ in 0..100 {
            assert!(q.check("big", "a", || "a".into(), 1).is_ok());
        }
        assert!(q.check("big", "a", || "a".into(), 1).is_err());
        for _ in 0..1000 {
            assert!(q.check("free", "a", || "a".into(), 1).is_ok());
        }
    }

    #[test]
    fn a_batch_fits_only_within_every_burst_it_would_take_from() {
        let c = with_own_rates(config(3, 10));
        let q = Quotas::new(&c);
        assert_eq!(q.fits("t", 3), Ok(()));
        assert_eq!(q.fits("t", 4), Err(3), "the tenant's bucket is smaller");
        assert_eq!(q.fits("big", 10), Ok(()));
        assert_eq!(q.fits("big", 11), Err(10), "the principal's is");
        assert_eq!(q.fits("free", 10), Ok(()));
        assert_eq!(Quotas::new(&config(0, 0)).fits("t", 1000), Ok(()));
    }

    #[test]
    fn a_batch_takes_its_items_up_to_the_burst() {
        let q = Quotas::new(&config(0, 10));
        assert!(
            q.check("t", "a", || "a".into(), 1000).is_ok(),
            "capped at the burst"
        );
        assert!(q.check("t", "a", || "a".into(), 1).is_err());
    }

    #[test]
    fn reload_applies_new_limits_with_full_buckets() {
        let q = Quotas::new(&config(0, 1));
        assert!(q.check("t", "a", || "a".into(), 1).is_ok());
        assert!(q.check("t", "a", || "a".into(), 1).is_err());
        assert!(!q.reload(&config(0, 1)), "unchanged");
        assert!(q.check("t", "a", || "a".into(), 1).is_err());
        assert!(q.reload(&config(0, 0)));
        for _ in 0..100 {
            assert!(q.check("t", "a", || "a".into(), 1).is_ok());
        }
    }
}
