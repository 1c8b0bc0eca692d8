//! Authentication: bearer tokens (here) and AWS Signature Version 4 ([`sigv4`], checked with
//! access keys by [`access_keys`]).
//!
//! A token is `kp_` followed by 32 random bytes (base64url). The database keeps only
//! HMAC-SHA256(token-hash key, token); the token-hash key is 32 bytes from the HSM's RNG,
//! stored sealed by the root key and held in memory only while the node runs. A lookup is by
//! that keyed hash, and the stored hash is compared again in constant time.

pub mod access_keys;
pub mod sigv4;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::crypto::Keyring;
use crate::error::{AuthFailure, Error, Result};
use crate::store::cache::RowCache;
use crate::store::principals::PrincipalRow;
use crate::store::{meta, Db};

/// The `meta` row of the token-hash key, sealed by the root key (the key ceremony checks an
/// imported root key against it).
pub(crate) const KEY_NAME: &str = "token-hash-key";
pub(crate) const KEY_AAD: &[u8] = b"keyplane/token-hash-key/v1";
const PREFIX: &str = "kp_";

/// An authenticated caller.
pub type Principal = PrincipalRow;

/// Hashes and checks bearer tokens.
pub struct TokenHasher {
    key: hmac::Key,
}

impl TokenHasher {
    /// Load the token-hash key, creating it on first start.
    pub async fn load_or_create(db: &Db, keyring: &Keyring) -> Result<Self> {
        let mut tx = db.begin().await?;
        meta::serialize_first_start(&mut tx).await?;
        let raw = match meta::get(&mut tx, KEY_NAME).await? {
            Some(sealed) => keyring.open_with_root(KEY_AAD, &sealed).await?,
            None => {
                let key = keyring.random(32).await?;
                let sealed = keyring.seal_with_root(KEY_AAD, &key).await?;
                meta::insert(&mut tx, KEY_NAME, &sealed).await?;
                key
            }
        };
        tx.commit().await?;
        Ok(TokenHasher {
            key: hmac::Key::new(hmac::HMAC_SHA256, &raw),
        })
    }

    /// A new random token (returned to the caller once) and its keyed hash (to store).
    pub fn issue(&self) -> Result<(SecretString, Vec<u8>)> {
        let mut raw = Zeroizing::new([0u8; 32]);
        SystemRandom::new()
            .fill(raw.as_mut())
            .map_err(|_| Error::Internal)?;
        // Encoded straight into a buffer of the token's size: no copy of it is left unwiped.
        let mut token = String::with_capacity(PREFIX.len() + 43);
        token.push_str(PREFIX);
        URL_SAFE_NO_PAD.encode_string(raw.as_ref(), &mut token);
        debug_assert_eq!(token.capacity(), PREFIX.len() + 43);
        let token = SecretString::from(token);
        let hash = self.hash(token.expose_secret());
        Ok((token, hash))
    }

    /// Keyed hash of a token.
    pub fn hash(&self, token: &str) -> Vec<u8> {
        hmac::sign(&self.key, token.as_bytes()).as_ref().to_vec()
    }

    /// Resolve an `Authorization` header value to a principal.
    pub async fn authenticate(&self, rows: &RowCache, header: Option<&str>) -> Result<Principal> {
        let token = header
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|t| t.starts_with(PREFIX) && t.len() < 256)
            .ok_or(Error::Unauthenticated(match header {
                None => AuthFailure::Missing,
                Some(_) => AuthFailure::Unknown,
            }))?;
        let hash = self.hash(token);
        let found = rows
            .principal_by_token_hash(&hash)
            .await?
            .ok_or(Error::Unauthenticated(AuthFailure::Unknown))?;
        let (principal, stored) = &*found;
        if bool::from(stored.ct_eq(&hash)) {
            Ok(principal.clone())
        } else {
            Err(Error::Unauthenticated(AuthFailure::Unknown))
        }
    }
}
