//! Storage backend `http-object`: blobs as objects in an S3-compatible object store, reached
//! over outbound HTTP (`wasi:http`). The host lets the plugin reach only the hosts its upload
//! was granted (`http:<host>:<port>`) and that the operator allows; every other request is
//! refused by the host before a connection is made.
//!
//! Requests are path-style (`<endpoint>/<bucket>/<key>`): PUT, GET, HEAD, DELETE, and
//! ListObjectsV2 for `list-blobs`. A delete removes every stored version of the object
//! (ListObjectVersions, then DELETE `?versionId=` each), so that a bucket with versioning on
//! keeps no earlier copy of a shredded key's wrapped material; the credentials then need
//! `s3:ListBucketVersions` and `s3:DeleteObjectVersion`. Each object carries its compare-and-swap version in the
//! `x-amz-meta-kp-version` header; a conditional write reads the current version first and
//! sends `If-None-Match: *` (create) or `If-Match: <etag>` (update), so a store that honours
//! conditional writes (S3, MinIO) turns a race into a conflict (412).
//!
//! Config: `endpoint` (`http://127.0.0.1:9000`, required; no user information: it would be
//! sent as the `host` header), `bucket` (required), `prefix`
//! (key prefix inside the bucket, optional), `region` (default `us-east-1`), and optionally
//! `access-key-id` + `secret-access-key` (and `session-token`): requests are then signed with
//! AWS Signature Version 4 (`aws-sigv4`); without them they are sent unsigned.

mod s3;
mod transport;

use keyplane_plugin_sdk::config::Settings;
use keyplane_plugin_sdk::storage::{Blob, BlobPage, Config, Storage, StorageError};

use s3::{Bucket, Head};

struct HttpObject;

/// Listings of an object's versions a delete goes through before it gives up.
const MAX_VERSION_ROUNDS: usize = 10;

fn bucket(config: &Config) -> Result<Bucket, StorageError> {
    Bucket::from_settings(&Settings(config))
}

/// The version an object has now (0 = absent) and its ETag.
fn current(b: &Bucket, name: &str) -> Result<Option<Head>, StorageError> {
    b.head(name)
}

fn check(current: Option<&Head>, expected: Option<u64>) -> Result<(), StorageError> {
    let now = current.map_or(0, |h| h.version);
    match expected {
        Some(e) if e != now => Err(StorageError::Conflict(now)),
        _ => Ok(()),
    }
}

impl Storage for HttpObject {
    fn get(config: Config, name: String) -> Result<Option<Blob>, StorageError> {
        let b = bucket(&config)?;
        Ok(b.get(&name)?.map(|(version, data)| Blob { name, version, data }))
    }

    fn put(config: Config, name: String, data: Vec<u8>, expected_version: Option<u64>) -> Result<u64, StorageError> {
        let b = bucket(&config)?;
        let head = current(&b, &name)?;
        check(head.as_ref(), expected_version)?;
        let version = head.as_ref().map_or(0, |h| h.version) + 1;
        match b.put(&name, &data, version, head.as_ref().map(|h| h.etag.as_str()))? {
            true => Ok(version),
            // The store refused the conditional write: someone else wrote in between.
            false => Err(StorageError::Conflict(current(&b, &name)?.map_or(0, |h| h.version))),
        }
    }

    fn delete(config: Config, name: String, expected_version: Option<u64>) -> Result<bool, StorageError> {
        let b = bucket(&config)?;
        let head = current(&b, &name)?;
        check(head.as_ref(), expected_version)?;
        let mut found = head.is_some();
        if found {
            b.delete(&name)?;
        }
        // On a bucket with versioning the DELETE left the earlier versions: wrapped material a
        // shredded key must not leave behind. Each is deleted by its id, listed again until
        // none is left (a listing cut short; a put racing the delete is deleted too: a blob
        // name is written once, by the creation attempt that owns it).
        for _ in 0..MAX_VERSION_ROUNDS {
            let left = b.versions(&name)?;
            if left.is_empty() {
                return Ok(found);
            }
            found = true;
            for id in left {
                b.delete_version(&name, &id)?;
            }
        }
        Err(StorageError::Unavailable(format!(
            "{name}: versions still listed after {MAX_VERSION_ROUNDS} rounds of deletes"
        )))
    }

    fn list_blobs(config: Config, prefix: String, cursor: Option<String>, limit: u32) -> Result<BlobPage, StorageError> {
        let b = bucket(&config)?;
        let (names, truncated) = b.list(&prefix, cursor.as_deref(), limit.clamp(1, 1000))?;
        let next_cursor = if truncated { names.last().cloned() } else { None };
        Ok(BlobPage { names, next_cursor })
    }
}

keyplane_plugin_sdk::storage::export_storage_backend!(HttpObject);
