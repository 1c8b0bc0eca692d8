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
    pub readiness: crate::api::Readiness,
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
