//! Authenticating a request signed with an access key (AWS Signature Version 4).
//!
//! Two steps, because the body must be read in between: [`SigV4Auth::claim`] reads the
//! `Authorization` header and finds the access key's owner (no secret yet; an unknown key is
//! refused before the body is read), and [`SigV4Auth::verify`] checks the signature over the
//! whole request. The signing key of an (access key, day, region, service) is derived once
//! and kept (zeroized when evicted); deriving it opens the sealed secret with the HSM's root
//! key, so a steady stream of requests costs no HSM call. A deleted access key stops working
//! as soon as its row is gone: the row (through the row cache) is read on every request, and
//! a kept signing key is used only for a row that still exists.

use std::sync::Arc;

use quick_cache::sync::Cache;
use zeroize::Zeroizing;

use super::sigv4::{self, Claim, KeyScope, SigV4Class, SigV4Error, SigningKey};
use super::Principal;
use crate::crypto::Keyring;
use crate::error::{AuthFailure, Error, Result};
use crate::store::access_keys::AccessKeyOwner;
use crate::store::cache::RowCache;

/// Signing keys kept at most (one per access key, day, region and service in use).
const SIGNING_KEYS: usize = 4096;

impl From<SigV4Error> for AuthFailure {
    fn from(e: SigV4Error) -> Self {
        match e.class() {
            SigV4Class::Missing => AuthFailure::Missing,
            SigV4Class::Incomplete => AuthFailure::IncompleteSignature(e.to_string()),
            SigV4Class::Invalid => AuthFailure::InvalidSignature(e.to_string()),
        }
    }
}

fn refused(e: SigV4Error) -> Error {
    Error::Unauthenticated(e.into())
}

/// A signed request whose access key exists, before its signature is checked.
pub struct Pending {
    claim: Claim,
    owner: Arc<AccessKeyOwner>,
}

impl Pending {
    /// The region the request was signed for.
    pub fn region(&self) -> &str {
        self.claim.region()
    }
}

/// The owner of the access key a request was proven to be signed with.
pub struct Verified {
    pub principal: Principal,
    /// The principal's tenant's account id.
    pub account_id: String,
}

/// The signing-key cache and the checks.
pub struct SigV4Auth {
    signing_keys: Cache<KeyScope, Arc<SigningKey>>,
}

impl Default for SigV4Auth {
    fn default() -> Self {
        SigV4Auth {
            signing_keys: Cache::new(SIGNING_KEYS),
        }
    }
}

impl SigV4Auth {
    /// Parse the signature of `req` (whose body is not needed yet) for `service`, check its
    /// time against `now` (Unix seconds), and find its access key.
    pub async fn claim(
        &self,
        rows: &RowCache,
        req: &sigv4::Request<'_>,
        service: &str,
        now: i64,
    ) -> Result<Pending> {
        let claim = sigv4::parse(req, service).map_err(refused)?;
        claim.check_clock(now).map_err(refused)?;
        if claim.security_token().is_some() {
            // Temporary credentials (STS sessions) are not issued by keyplane.
            return Err(Error::Unauthenticated(AuthFailure::Unknown));
        }
        let owner = rows
            .access_key(claim.access_key_id())
            .await?
            .ok_or(Error::Unauthenticated(AuthFailure::Unknown))?;
        Ok(Pending { claim, owner })
    }

    /// Check the signature of the whole request (`req` now with its body) and return who it
    /// proves signed it.
    pub async fn verify(
        &self,
        keyring: &Keyring,
        pending: Pending,
        req: &sigv4::Request<'_>,
        now: i64,
    ) -> Result<Verified> {
        let key = self.signing_key(keyring, &pending).await?;
        sigv4::verify(req, &pending.claim, &key, now).map_err(refused)?;
        Ok(Verified {
            principal: pending.owner.principal.clone(),
            account_id: pending.owner.account_id.clone(),
        })
    }

    async fn signing_key(&self, keyring: &Keyring, pending: &Pending) -> Result<Arc<SigningKey>> {
        let scope = pending.claim.key_scope();
        if let Some(key) = self.signing_keys.get(&scope) {
            return Ok(key);
        }
        let key_id = &pending.owner.key.id;
        let secret: Zeroizing<Vec<u8>> = keyring
            .open_with_root(
                &crate::store::access_keys::secret_aad(key_id),
                &pending.owner.key.secret_sealed,
            )
            .await?;
        let claim = &pending.claim;
        let key = Arc::new(sigv4::signing_key(
            &secret,
            claim.scope_date(),
            claim.region(),
            claim.service(),
        ));
        self.signing_keys.insert(scope, key.clone());
        Ok(key)
    }
}
