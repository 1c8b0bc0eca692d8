//! The shared state of a running node, handed to every request.

use std::sync::Arc;

use crate::authn::TokenHasher;
use crate::authz::Authz;
use crate::clock::Clock;
use crate::config::Config;
use crate::crypto::Keyring;
use crate::plugins::PluginRuntime;
use crate::store::Db;
use crate::usage::Usage;

/// Everything a request may use.
pub struct AppState {
    pub config: Config,
    pub db: Db,
    pub keyring: Arc<Keyring>,
    pub authz: Authz,
    pub tokens: TokenHasher,
    /// Signature Version 4 checks, with the signing keys derived so far.
    pub sigv4: crate::authn::access_keys::SigV4Auth,
    pub plugins: Arc<PluginRuntime>,
    /// The service clock (lifecycle decisions).
    pub clock: Arc<Clock>,
    /// Usage counters not yet written.
    pub usage: Arc<Usage>,
    /// Caches of the rows every cryptographic request reads.
    pub rows: crate::store::cache::RowCache,
    /// Group commit of audit records that come with no other change.
    pub audit: crate::audit::group_commit::GroupCommit,
    /// Signs the audit log's checkpoints with this token's audit key (whose fingerprint also
    /// names this token's garbage-collection claim).
    pub checkpointer: Arc<crate::audit::checkpoint::Checkpointer>,
    /// Request quotas per tenant and per principal.
    pub quotas: Arc<crate::quotas::Quotas>,
    /// PKCS#12 bundles being written or opened: their key derivations are slow on purpose,
    /// so only [`PASSWORD_WORK_SLOTS`] run at once and more are throttled.
    pub password_work: Arc<tokio::sync::Semaphore>,
    /// The last readiness probe, shared by the health endpoints.
    pub readiness: Readiness,
}

/// How many PKCS#12 bundles a node writes or opens at once.
pub const PASSWORD_WORK_SLOTS: usize = 2;

impl AppState {
    /// A slot for one PKCS#12 bundle's key derivations, held until dropped (move it into the
    /// blocking task, so that it is held for as long as the work runs); none free: throttled.
    pub fn password_slot(&self) -> crate::error::Result<tokio::sync::OwnedSemaphorePermit> {
        self.password_work
            .clone()
            .try_acquire_owned()
            .map_err(|_| crate::error::Error::Throttled {
                retry_after_secs: 1,
                what: "the PKCS#12 bundles this node writes or opens at once",
            })
    }
}

/// How long a successful readiness probe answers for every health request.
const READINESS_TTL: std::time::Duration = std::time::Duration::from_millis(500);

/// The last readiness probe: when it ended and what it found (database, HSM). Health
/// endpoints need no credential and nothing limits them, and a probe is a database round trip
/// and an HSM encryption under the token's anchor session (which key creation and unwrapping
/// also take): so one probe runs at a time; its answer, whatever it is, serves every request
/// that was waiting for it, and a success also every request for [`READINESS_TTL`]. A failure
/// is not kept longer: the next request probes again, so a node is seen ready again as soon as
/// it is.
#[derive(Default)]
pub struct Readiness {
    last: tokio::sync::Mutex<Option<(std::time::Instant, (bool, bool))>>,
}

impl Readiness {
    /// The answer of the last probe if it serves this request, else of `probe`, run now.
    pub async fn answer<F, Fut>(&self, probe: F) -> (bool, bool)
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = (bool, bool)>,
    {
        let asked = std::time::Instant::now();
        // Held across the probe: those who arrive meanwhile wait for its answer.
        let mut last = self.last.lock().await;
        if let Some((ended, answer)) = *last {
            let fresh_success = answer == (true, true) && ended.elapsed() < READINESS_TTL;
            if ended >= asked || fresh_success {
                return answer;
            }
        }
        let answer = probe().await;
        *last = Some((std::time::Instant::now(), answer));
        answer
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Requests that wait for a probe share its answer, a failure too; a later request probes
    /// again after a failure, and not within the success's time to live.
    #[tokio::test]
    async fn waiting_requests_share_one_probe() {
        let readiness = Readiness::default();
        let probes = AtomicUsize::new(0);
        let probe = |answer: (bool, bool)| {
            let probes = &probes;
            move || async move {
                probes.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                answer
            }
        };
        let waiting = (0..5).map(|_| readiness.answer(probe((false, true))));
        let answers = futures_util::future::join_all(waiting).await;
        assert!(answers.iter().all(|a| *a == (false, true)));
        assert_eq!(probes.load(Ordering::SeqCst), 1);
        // A failure is not kept for later requests.
        assert_eq!(readiness.answer(probe((true, true))).await, (true, true));
        assert_eq!(probes.load(Ordering::SeqCst), 2);
        // A success is.
        assert_eq!(readiness.answer(probe((false, false))).await, (true, true));
        assert_eq!(probes.load(Ordering::SeqCst), 2);
    }
}
