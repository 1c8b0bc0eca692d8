//! Plugin work shared fairly: where invocations run, and how much of it each tenant gets.
//!
//! A plugin computes on the CPU the node also serves requests with. Left on the request
//! workers, a tenant calling a plugin that burns its whole fuel (`plugins/hostile/spin`, about
//! 40 ms a call) four at a time cut another tenant's `encrypt` rate by 85% on two cores. So:
//! - invocations run on a runtime of their own, `plugins.workers` threads (1 by default):
//!   however many plugins compute at once, they hold at most that many cores, and the request
//!   workers keep the rest;
//! - a tenant runs at most `plugins.tenant_concurrency` invocations at once; one more waits up
//!   to `plugins.tenant_queue_ms` for a slot, then is refused;
//! - a tenant's invocations draw on a budget of fuel (CPU work) refilled at
//!   `plugins.tenant_fuel_per_second` and holding up to `plugins.tenant_fuel_burst`; each call
//!   is charged the fuel it used once it ends, and a tenant whose budget is spent is refused
//!   until it has refilled.
//!
//! A refusal is `Error::Throttled` (429, or `ThrottlingException`), for that tenant's plugin
//! work only. The budget is a bucket that can go into debt, charged after the fact, which is
//! why it is not `governor`'s: GCRA decides before the cost is known, and a call's fuel is
//! known only when it has run.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::Instrument;

use crate::config::PluginsConfig;
use crate::error::{Error, Result};

/// One tenant's slots and fuel.
struct Share {
    slots: Arc<Semaphore>,
    /// Fuel left (negative: owed), as of `at`.
    fuel: f64,
    at: Instant,
}

/// What every tenant has, and the budget's rules.
struct Shares {
    tenants: Mutex<HashMap<String, Share>>,
    concurrency: usize,
    fuel_per_second: f64,
    fuel_burst: f64,
}

impl Shares {
    /// The tenant's slots if its budget is not spent; otherwise how long until it is not.
    fn slots(&self, tenant: &str) -> std::result::Result<Arc<Semaphore>, Duration> {
        let mut tenants = lock(&self.tenants);
        let share = tenants.entry(tenant.to_string()).or_insert_with(|| Share {
            slots: Arc::new(Semaphore::new(self.concurrency)),
            fuel: self.fuel_burst,
            at: Instant::now(),
        });
        if self.fuel_per_second > 0.0 {
            let now = Instant::now();
            let refill = now.duration_since(share.at).as_secs_f64() * self.fuel_per_second;
            share.fuel = (share.fuel + refill).min(self.fuel_burst);
            share.at = now;
            if share.fuel <= 0.0 {
                // Until the debt is paid and a little more, so the next call can run.
                let wait = (-share.fuel + 1.0) / self.fuel_per_second;
                return Err(Duration::from_secs_f64(wait));
            }
        }
        Ok(share.slots.clone())
    }

    /// Charge `fuel` to the tenant.
    fn charge(&self, tenant: &str, fuel: u64) {
        if self.fuel_per_second > 0.0 {
            if let Some(share) = lock(&self.tenants).get_mut(tenant) {
                share.fuel -= fuel as f64;
            }
        }
    }
}

/// The plugin runtime's workers and every tenant's share of them.
pub struct Fairness {
    /// `None` only while dropping (a runtime must not be dropped where it may block).
    runtime: Option<tokio::runtime::Runtime>,
    shares: Arc<Shares>,
    queue: Duration,
}

impl Fairness {
    pub fn new(limits: &PluginsConfig) -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(limits.workers.max(1))
            .thread_name("keyplane-plugin")
            .enable_all()
            .build()?;
        let fuel_per_second = limits.tenant_fuel_per_second as f64;
        Ok(Fairness {
            runtime: Some(runtime),
            shares: Arc::new(Shares {
                tenants: Mutex::default(),
                concurrency: limits.tenant_concurrency.max(1),
                fuel_per_second,
                fuel_burst: (limits.tenant_fuel_burst as f64).max(fuel_per_second),
            }),
            queue: Duration::from_millis(limits.tenant_queue_ms),
        })
    }

    /// Run `work` (an invocation, answering its result and the fuel it used) for `tenant` on
    /// the plugin workers, within the tenant's share (see the module docs). The tenant's slot
    /// is held, and its fuel charged, by the task itself: a caller that goes away does not
    /// free either early.
    pub async fn run<T: Send + 'static>(
        &self,
        tenant: &str,
        work: impl Future<Output = (Result<T>, u64)> + Send + 'static,
    ) -> Result<T> {
        let permit = self.admit(tenant).await.map_err(Error::plugin_throttled)?;
        // Holding the tenant's slot: a test makes another call meet a tenant that is busy.
        crate::pause::point("plugin:admitted", tenant).await;
        let Some(runtime) = &self.runtime else {
            return Err(Error::Internal);
        };
        let (shares, tenant) = (self.shares.clone(), tenant.to_string());
        let task = async move {
            let (result, fuel) = work.await;
            shares.charge(&tenant, fuel);
            drop(permit);
            result
        };
        runtime
            .spawn(task.instrument(tracing::Span::current()))
            .await
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, "plugin task failed");
                Err(Error::Internal)
            })
    }

    /// A slot of the tenant's, or how long to wait before asking again.
    async fn admit(&self, tenant: &str) -> std::result::Result<OwnedSemaphorePermit, Duration> {
        let slots = self.shares.slots(tenant)?;
        match tokio::time::timeout(self.queue, slots.acquire_owned()).await {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(Duration::from_secs(1)),
        }
    }
}

impl Drop for Fairness {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fairness(concurrency: usize, fuel_per_second: u64, burst: u64) -> Fairness {
        Fairness::new(&PluginsConfig {
            workers: 1,
            tenant_concurrency: concurrency,
            tenant_fuel_per_second: fuel_per_second,
            tenant_fuel_burst: burst,
            tenant_queue_ms: 50,
            ..PluginsConfig::default()
        })
        .unwrap()
    }

    #[tokio::test]
    async fn a_tenant_past_its_fuel_is_refused_until_it_refills_and_others_are_not() {
        let f = fairness(4, 1_000, 1_000);
        assert_eq!(f.run("a", async { (Ok(1), 1_500) }).await.unwrap(), 1);
        let refused = f.run("a", async { (Ok(2), 0) }).await.unwrap_err();
        match refused {
            Error::Throttled {
                retry_after_secs, ..
            } => assert_eq!(retry_after_secs, 1),
            e => panic!("{e:?}"),
        }
        assert_eq!(f.run("b", async { (Ok(3), 0) }).await.unwrap(), 3);
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(f.run("a", async { (Ok(4), 0) }).await.unwrap(), 4);
    }

    #[tokio::test]
    async fn a_tenant_runs_at_most_its_concurrency_and_others_are_not_held_up() {
        let f = Arc::new(fairness(1, 0, 0));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let held = {
            let f = f.clone();
            tokio::spawn(async move {
                f.run("a", async move {
                    let _ = rx.await;
                    (Ok(()), 0)
                })
                .await
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(matches!(
            f.run("a", async { (Ok(()), 0) }).await,
            Err(Error::Throttled { .. })
        ));
        assert!(f.run("b", async { (Ok(()), 0) }).await.is_ok());
        tx.send(()).unwrap();
        held.await.unwrap().unwrap();
        assert!(f.run("a", async { (Ok(()), 0) }).await.is_ok());
    }

    #[tokio::test]
    async fn invocations_run_on_the_plugin_workers() {
        let f = fairness(1, 0, 0);
        let name = f
            .run("a", async {
                (Ok(std::thread::current().name().map(str::to_string)), 0)
            })
            .await
            .unwrap();
        assert_eq!(name.as_deref(), Some("keyplane-plugin"));
    }
}
