//! Authenticating a request signed with an access key (AWS Signature Version 4).
//!
//! Two steps, because the body must be read in between: [`SigV4Auth::claim`] reads the
//! `Authorization` header and finds the access key's owner (no secret yet; an unknown key is
//! refused before the body is read), and [`SigV4Auth::verify`] checks the signature over the
//! whole request. The day key of an (access key, day) is kept from its first use, and the
//! signing key of an (access key, day, region, service) from the first request it proves (both
//! zeroized when evicted); deriving a day key opens the sealed secret with the HSM's root key,
//! so a steady stream of requests costs no HSM call. A deleted access key stops working
//! as soon as its row is gone: the row (through the row cache) is read on every request, and
//! a kept signing key is used only for a row that still exists.

use std::sync::Arc;

use quick_cache::sync::Cache;
use zeroize::Zeroizing;

use super::sigv4::{self, Claim, DateKey, KeyScope, SigV4Class, SigV4Error, SigningKey};
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

    /// The access key the request names (found; the signature not yet checked).
    pub fn access_key_id(&self) -> &str {
        self.claim.access_key_id()
    }
}

/// The owner of the access key a request was proven to be signed with.
pub struct Verified {
    pub principal: Principal,
    /// The principal's tenant's account id.
    pub account_id: String,
}

/// The key caches and the checks.
pub struct SigV4Auth {
    signing_keys: Cache<KeyScope, Arc<SigningKey>>,
    /// Day keys by (access key id, `YYYYMMDD`).
    date_keys: Cache<(String, String), Arc<DateKey>>,
}

impl Default for SigV4Auth {
    fn default() -> Self {
        SigV4Auth {
            signing_keys: Cache::new(SIGNING_KEYS),
            date_keys: Cache::new(SIGNING_KEYS),
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
        let key = &pending.owner.key;
        self.check(&pending.claim, req, now, || async {
            keyring
                .open_with_root(
                    &crate::store::access_keys::secret_aad(&key.id),
                    &key.secret_sealed,
                )
                .await
        })
        .await?;
        Ok(Verified {
            principal: pending.owner.principal.clone(),
            account_id: pending.owner.account_id.clone(),
        })
    }

    /// Check `claim`'s signature over `req` with the kept signing key of its scope, else one
    /// derived from the kept day key of its access key, else from the secret that `open`
    /// yields. A signing key is kept only once it has proved a signature: the region is the
    /// client's to choose, so keeping keys for unproven requests would let anyone who knows an
    /// access key id (it is not a secret) push the keys in use out of the cache with requests
    /// signed for made-up regions, and turn every genuine request into an HSM call. The day
    /// key is kept however the check ends: it depends only on the secret and the date, which
    /// must be today's (give or take the clock window), so a client can make at most two per
    /// access key; keeping it makes a forged request cost three HMACs, not an HSM call.
    async fn check<F, Fut>(
        &self,
        claim: &Claim,
        req: &sigv4::Request<'_>,
        now: i64,
        open: F,
    ) -> Result<()>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Zeroizing<Vec<u8>>>>,
    {
        let scope = claim.key_scope();
        if let Some(key) = self.signing_keys.get(&scope) {
            return sigv4::verify(req, claim, &key, now).map_err(refused);
        }
        let day = (scope.access_key_id.clone(), scope.date.clone());
        let (date_key, fresh) = match self.date_keys.get(&day) {
            Some(k) => (k, false),
            None => {
                let secret = open().await?;
                (Arc::new(DateKey::derive(&secret, claim.scope_date())), true)
            }
        };
        if fresh {
            self.date_keys.insert(day, date_key.clone());
        }
        let key = Arc::new(date_key.signing_key(claim.region(), claim.service()));
        sigv4::verify(req, claim, &key, now).map_err(refused)?;
        self.signing_keys.insert(scope, key);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_credential_types::Credentials;
    use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
    use aws_sigv4::sign::v4 as aws_v4;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, UNIX_EPOCH};

    const AKID: &str = "AKIAKEYPLANETEST0001";
    const SECRET: &[u8] = b"the-real-secret-of-this-access-key";
    const NOW: i64 = 1_765_000_000;

    /// A KMS request signed for `region` with `secret` by the aws-sigv4 crate.
    fn signed(region: &str, secret: &str) -> http::Request<Vec<u8>> {
        let identity = Credentials::new(AKID, secret, None, None, "test").into();
        let params = aws_v4::SigningParams::builder()
            .identity(&identity)
            .region(region)
            .name("kms")
            .time(UNIX_EPOCH + Duration::from_secs(NOW as u64))
            .settings(SigningSettings::default())
            .build()
            .expect("signing params")
            .into();
        let uri = "https://kms.example.test/";
        let headers = [
            ("content-type", "application/x-amz-json-1.1"),
            ("x-amz-target", "TrentService.ListKeys"),
        ];
        let body = b"{}".to_vec();
        let signable = SignableRequest::new(
            "POST",
            uri,
            headers.iter().copied(),
            SignableBody::Bytes(&body),
        )
        .expect("signable");
        let (instructions, _) = sign(signable, &params).expect("sign").into_parts();
        let mut builder = http::Request::builder().method("POST").uri(uri);
        for (name, value) in headers {
            builder = builder.header(name, value);
        }
        let mut req = builder.body(body).expect("request");
        instructions.apply_to_request_http1x(&mut req);
        req
    }

    /// Checks `req` as the server does, counting how often the secret had to be opened.
    async fn check(
        auth: &SigV4Auth,
        req: &http::Request<Vec<u8>>,
        opened: &AtomicUsize,
    ) -> Result<()> {
        let view = sigv4::Request::from_http(req);
        let claim = sigv4::parse(&view, "kms").expect("well-formed claim");
        auth.check(&claim, &view, NOW, || async {
            opened.fetch_add(1, Ordering::SeqCst);
            Ok(Zeroizing::new(SECRET.to_vec()))
        })
        .await
    }

    #[tokio::test]
    async fn only_a_proven_signing_key_is_kept() {
        let auth = SigV4Auth::default();
        let opened = AtomicUsize::new(0);
        let real = std::str::from_utf8(SECRET).unwrap();

        // Someone who knows the access key id but not its secret: refused every time, one
        // HSM call in all (the day key, the secret's and the date's alone, is kept), and no
        // signing key kept for the regions they made up.
        for i in 0..3 {
            let forged = signed(&format!("made-up-{i}"), "a-guess");
            let err = check(&auth, &forged, &opened).await.unwrap_err();
            assert!(
                matches!(
                    err,
                    Error::Unauthenticated(AuthFailure::InvalidSignature(_))
                ),
                "{err:?}"
            );
        }
        assert_eq!(opened.load(Ordering::SeqCst), 1);
        assert_eq!(
            auth.signing_keys.len(),
            0,
            "unproven signing keys were kept"
        );
        assert_eq!(auth.date_keys.len(), 1);

        // The owner: served from the day key, its signing key kept from then on.
        check(&auth, &signed("eu-west-1", real), &opened)
            .await
            .unwrap();
        check(&auth, &signed("eu-west-1", real), &opened)
            .await
            .unwrap();
        assert_eq!(opened.load(Ordering::SeqCst), 1);
        assert_eq!(auth.signing_keys.len(), 1);

        // A forged request in a kept region or a made-up one: refused, nothing kept.
        for region in ["eu-west-1", "made-up-9"] {
            let forged = signed(region, "a-guess");
            assert!(check(&auth, &forged, &opened).await.is_err());
        }
        assert_eq!(opened.load(Ordering::SeqCst), 1);
        assert_eq!(auth.signing_keys.len(), 1);

        // Another region of the owner's: derived from the day key, no HSM call.
        check(&auth, &signed("us-east-2", real), &opened)
            .await
            .unwrap();
        assert_eq!(opened.load(Ordering::SeqCst), 1);
        assert_eq!(auth.signing_keys.len(), 2);
    }
}
