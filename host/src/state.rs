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
    /// Request quotas per tenant and per principal.
    pub quotas: Arc<crate::quotas::Quotas>,
}
